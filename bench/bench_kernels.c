/* Kernel throughput through the public ops, next to plain C loops over libm measured in the
   same run, then GEMM through bilo_matmul.

   Elementwise lines: `op dtype n threads bilo_Gelem/s libm_Gelem/s ratio` for exp, tanh,
   add, mul and sum (all axes), f32 and f64, n = 1e3 .. 1e7, 1 and 2 threads. The libm loop
   (expf/exp, tanhf/tanh, +, *, a double accumulator) runs with the same thread count and the
   same parallel threshold as bilo, so the ratio isolates the kernels; bilo's figure includes
   the op's own cost (output allocation from the cache, dispatch). Each figure is the median
   of SAMPLES timed batches of about BATCH_ELEMS elements.
   GEMM lines: `gemm dtype n threads GFLOP/s` for square n = 256, 512, 1024. */
#include "bilo_tensor.h"
#include "tensor_impl.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define SAMPLES 7
#define BATCH_ELEMS 2000000.0
#define BATCH_FLOPS 1e9

typedef enum { OP_EXP, OP_TANH, OP_ADD, OP_MUL, OP_SUM, OP_COUNT } bench_op;
static const char *const op_names[OP_COUNT] = {"exp", "tanh", "add", "mul", "sum"};

static volatile double sink; /* keeps the libm sum alive */


static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static void die(const char *what)
{
    fprintf(stderr, "bench_kernels: %s: %s\n", what, bilo_last_error());
    exit(1);
}

/* ---- bilo side ----------------------------------------------------------------------- */

static void bilo_once(bench_op op, bilo_tensor *a, bilo_tensor *b)
{
    bilo_tensor *y = NULL;
    switch (op) {
    case OP_EXP: y = bilo_exp(a); break;
    case OP_TANH: y = bilo_tanh(a); break;
    case OP_ADD: y = bilo_add(a, b); break;
    case OP_MUL: y = bilo_mul(a, b); break;
    case OP_SUM: y = bilo_sum(a, BILO_ALL_AXES, false); break;
    case OP_COUNT: break;
    }
    if (!y) die(op_names[op]);
    bilo_release(y);
}

/* ---- libm side: f32 and f64 from one body -------------------------------------------- */

#define BILO_LIBM_LOOP_(T, S, EXP, TANH)                                                    \
    static void libm_##S(bench_op op, const T *a, const T *b, T *y, int64_t n, int threads) \
    {                                                                                       \
        const int nt = n >= BILO_PAR_MIN_WORK ? threads : 1;                                \
        double s = 0;                                                                       \
        switch (op) {                                                                       \
        case OP_EXP:                                                                        \
            _Pragma("omp parallel for num_threads(nt) schedule(static)")                    \
            for (int64_t i = 0; i < n; i++) y[i] = EXP(a[i]);                               \
            break;                                                                          \
        case OP_TANH:                                                                       \
            _Pragma("omp parallel for num_threads(nt) schedule(static)")                    \
            for (int64_t i = 0; i < n; i++) y[i] = TANH(a[i]);                              \
            break;                                                                          \
        case OP_ADD:                                                                        \
            _Pragma("omp parallel for num_threads(nt) schedule(static)")                    \
            for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];                             \
            break;                                                                          \
        case OP_MUL:                                                                        \
            _Pragma("omp parallel for num_threads(nt) schedule(static)")                    \
            for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i];                             \
            break;                                                                          \
        case OP_SUM:                                                                        \
            _Pragma("omp parallel for num_threads(nt) schedule(static) reduction(+ : s)")   \
            for (int64_t i = 0; i < n; i++) s += a[i];                                      \
            sink = s;                                                                       \
            break;                                                                          \
        case OP_COUNT: break;                                                               \
        }                                                                                   \
    }
BILO_LIBM_LOOP_(float, f32, expf, tanhf)
BILO_LIBM_LOOP_(double, f64, exp, tanh)

static void libm_once(bench_op op, bilo_tensor *a, bilo_tensor *b, void *y, int threads)
{
    if (bilo_dtype_of(a) == BILO_F32)
        libm_f32(op, bilo_data(a), bilo_data(b), y, bilo_numel(a), threads);
    else
        libm_f64(op, bilo_data(a), bilo_data(b), y, bilo_numel(a), threads);
}

/* ---- measurement --------------------------------------------------------------------- */

/* Median elements per second of SAMPLES batches of `reps` calls (after one warm-up). */
static double elementwise_rate(bench_op op, bilo_tensor *a, bilo_tensor *b, void *libm_out,
                               int threads, bool use_libm)
{
    const int64_t n = bilo_numel(a);
    const int64_t reps = n >= BATCH_ELEMS ? 1 : (int64_t)(BATCH_ELEMS / (double)n);
    double rate[SAMPLES];
    for (int s = -1; s < SAMPLES; s++) {
        const double t0 = now();
        for (int64_t r = 0; r < reps; r++) {
            if (use_libm) libm_once(op, a, b, libm_out, threads);
            else bilo_once(op, a, b);
        }
        if (s >= 0) rate[s] = (double)(n * reps) / (now() - t0);
    }
    return median(rate, SAMPLES);
}

/* Values in [-5, 5): inside exp's and tanh's interesting range, no overflow. */
static bilo_tensor *input(bilo_dtype dt, int ndim, const int64_t *shape, double phase)
{
    bilo_tensor *t = bilo_empty(dt, ndim, shape);
    if (!t) die("bilo_empty");
    const int64_t n = bilo_numel(t);
    for (int64_t i = 0; i < n; i++) {
        const double v = 10 * fmod((double)i * 0.6180339887 + phase, 1.0) - 5;
        if (dt == BILO_F32) ((float *)bilo_data(t))[i] = (float)v;
        else ((double *)bilo_data(t))[i] = v;
    }
    return t;
}

static void bench_elementwise(void)
{
    printf("# op dtype n threads bilo_Gelem/s libm_Gelem/s ratio\n");
    for (int d = 0; d < 2; d++)
        for (int64_t n = 1000; n <= 10000000; n *= 10) {
            const bilo_dtype dt = d ? BILO_F64 : BILO_F32;
            bilo_tensor *a = input(dt, 1, &n, 0.1), *b = input(dt, 1, &n, 0.7);
            void *y = malloc((size_t)n * bilo_dtype_size(dt));
            if (!y) die("malloc");
            for (int op = 0; op < OP_COUNT; op++)
                for (int threads = 1; threads <= 2; threads++) {
                    bilo_set_num_threads(threads);
                    const double ours = elementwise_rate(op, a, b, y, threads, false);
                    const double libm = elementwise_rate(op, a, b, y, threads, true);
                    printf("%-4s %s %8lld %d %8.3f %8.3f %6.2f\n", op_names[op],
                           bilo_dtype_name(dt), (long long)n, threads, ours * 1e-9, libm * 1e-9,
                           ours / libm);
                    fflush(stdout);
                }
            free(y);
            bilo_release(a);
            bilo_release(b);
        }
}

static void bench_gemm(void)
{
    printf("# gemm dtype n threads GFLOP/s (bilo_matmul, square)\n");
    for (int d = 0; d < 2; d++)
        for (int64_t n = 256; n <= 1024; n *= 2) {
            const bilo_dtype dt = d ? BILO_F64 : BILO_F32;
            const int64_t shape[2] = {n, n};
            bilo_tensor *a = input(dt, 2, shape, 0.1), *b = input(dt, 2, shape, 0.7);
            const double flops = 2.0 * (double)n * (double)n * (double)n;
            const int64_t reps = flops >= BATCH_FLOPS ? 1 : (int64_t)(BATCH_FLOPS / flops);
            for (int threads = 1; threads <= 2; threads++) {
                bilo_set_num_threads(threads);
                double rate[SAMPLES];
                for (int s = -1; s < SAMPLES; s++) {
                    const double t0 = now();
                    for (int64_t r = 0; r < reps; r++) {
                        bilo_tensor *c = bilo_matmul(a, b);
                        if (!c) die("bilo_matmul");
                        bilo_release(c);
                    }
                    if (s >= 0) rate[s] = flops * (double)reps / (now() - t0);
                }
                printf("gemm %s %5lld %d %8.1f\n", bilo_dtype_name(dt), (long long)n, threads,
                       median(rate, SAMPLES) * 1e-9);
                fflush(stdout);
            }
            bilo_release(a);
            bilo_release(b);
        }
}

int main(void)
{
    printf("# bilo kernels: %s\n", bilo_kernel_isa());
    const double t0 = now();
    bench_elementwise();
    bench_gemm();
    bilo_set_num_threads(0);
    printf("# total %.1f s\n", now() - t0);
    return 0;
}
