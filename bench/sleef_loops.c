/* The limit for bilo's elementwise kernels: plain loops over SLEEF's AVX2 functions (the same
   u10 accuracy bilo uses) and AVX2 adds, f32, on `threads` OpenMP threads with a static
   split. Compiled with -mavx2 -mfma for bench_kernels only; the caller checks the CPU. */
#include "sleef_loops.h"

#include <immintrin.h>
#include <sleef.h>

void sleef_loop_f32(sleef_loop_op op, const float *a, const float *b, float *y, int64_t n,
                    int threads)
{
    const int64_t vecs = n / 8;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t v = 0; v < vecs; v++) {
        const __m256 x = _mm256_loadu_ps(a + 8 * v);
        __m256 r;
        switch (op) {
        case SLEEF_LOOP_EXP: r = Sleef_expf8_u10avx2(x); break;
        case SLEEF_LOOP_TANH: r = Sleef_tanhf8_u10avx2(x); break;
        default: r = _mm256_add_ps(x, _mm256_loadu_ps(b + 8 * v)); break;
        }
        _mm256_storeu_ps(y + 8 * v, r);
    }
    for (int64_t i = 8 * vecs; i < n; i++) /* n is a multiple of 8 in the benchmark */
        y[i] = op == SLEEF_LOOP_ADD ? a[i] + b[i] : a[i];
}
