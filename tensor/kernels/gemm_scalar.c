/* Scalar reference GEMM, f32 and f64 from one body: C = op(A)·op(B) (+ C), one row of C at a
   time. Rows are independent and each is computed the same way whoever computes it, so the
   result does not depend on the thread count. */
#include "kernels.h"

/* op(A)[i][p] */
#define BILO_OPA_(A, lda, trans_a, i, p) \
    ((trans_a) ? (A)[(p) * (lda) + (i)] : (A)[(i) * (lda) + (p)])

#define BILO_GEMM_SCALAR_(T, S)                                                            \
    /* Row i of C. With B stored k×n the row is a sum of scaled rows of B (contiguous);    \
       with B stored n×k (trans_b) each entry is a dot product along a row of B. */        \
    static void gemm_row_##S(bool trans_a, bool trans_b, int64_t i, int64_t n, int64_t k,  \
                             const T *A, int64_t lda, const T *B, int64_t ldb, T *c,       \
                             bool accumulate)                                              \
    {                                                                                      \
        if (trans_b) {                                                                     \
            for (int64_t j = 0; j < n; j++) {                                              \
                T s = 0;                                                                   \
                for (int64_t p = 0; p < k; p++)                                            \
                    s += BILO_OPA_(A, lda, trans_a, i, p) * B[j * ldb + p];                \
                c[j] = accumulate ? c[j] + s : s;                                          \
            }                                                                              \
            return;                                                                        \
        }                                                                                  \
        if (!accumulate)                                                                   \
            for (int64_t j = 0; j < n; j++) c[j] = 0;                                      \
        for (int64_t p = 0; p < k; p++) {                                                  \
            const T a = BILO_OPA_(A, lda, trans_a, i, p);                                  \
            const T *b = B + p * ldb;                                                      \
            for (int64_t j = 0; j < n; j++) c[j] += a * b[j];                              \
        }                                                                                  \
    }                                                                                      \
    static void gemm_##S(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,      \
                         const T *A, int64_t lda, const T *B, int64_t ldb, T *C,           \
                         int64_t ldc, bool accumulate, int threads)                        \
    {                                                                                      \
        _Pragma("omp parallel for num_threads(threads) if (threads > 1) schedule(static)") \
        for (int64_t i = 0; i < m; i++)                                                    \
            gemm_row_##S(trans_a, trans_b, i, n, k, A, lda, B, ldb, C + i * ldc,           \
                         accumulate);                                                      \
    }
BILO_GEMM_SCALAR_(float, f32)
BILO_GEMM_SCALAR_(double, f64)

void bilo__fill_gemm_scalar(bilo_kernels *k)
{
    k->gemm_f32 = gemm_f32;
    k->gemm_f64 = gemm_f64;
}
