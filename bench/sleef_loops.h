/* Raw SLEEF loops for bench_kernels (sleef_loops.c, compiled with -mavx2 -mfma). */
#ifndef BILO_BENCH_SLEEF_LOOPS_H
#define BILO_BENCH_SLEEF_LOOPS_H

#include <stdint.h>

typedef enum { SLEEF_LOOP_EXP, SLEEF_LOOP_TANH, SLEEF_LOOP_ADD } sleef_loop_op;

/* y[i] = expf(a[i]), tanhf(a[i]) or a[i] + b[i] for i < n (n a multiple of 8). */
void sleef_loop_f32(sleef_loop_op op, const float *a, const float *b, float *y, int64_t n,
                    int threads);

#endif
