/* AVX-512 GEMM: the tile path of gemm_body.h on 512-bit vectors, 8×32 f32 and 8×16 f64
   tiles (16 accumulators, 2 B vectors and a broadcast in 19 of the 32 zmm registers). On
   Zen 4, 8 rows ran 0-3% faster than 6, and 12 rows 4-7% slower than 8 from 256 cubed up.
   The thin and vector shapes go to the AVX2 GEMM, which ran them as fast or faster: their
   loops are bound by memory or by short lane reductions, not by the FMA rate (one thread,
   AVX-512 / AVX2: logistic-regression Cᵀ = Xᵀ·R f32 0.29x, X·W f32 0.92x, Xᵀr f32 0.77x,
   X·w f32 0.94x, a 1×300×200 row 0.91x). Only the GEMM has an AVX-512 version; the avx512
   table takes every other kernel from the AVX2 set. */
#include "simd_avx512.h"

#define MR 8
#define BILO_GEMM_ONLY_TILES 1
/* Paths chosen as the AVX2 GEMM chooses them (for its 8 f32 and 4 f64 lanes): this GEMM runs
   as tiles exactly the products the AVX2 one runs as tiles, and the tile path adds the same
   KC slices in the same order for every element at any vector width, so the avx512 and
   avx2 tables compute bit-identical products. */
#define PATH_LANES_f32 8
#define PATH_LANES_f64 4

#include "gemm_body.h"

/* The table this file's fill function starts from (the AVX2 one): its GEMM takes the
   shapes that are not tiles. */
static bilo_kernels avx2_kernels;

#define BILO_GEMM_AVX512_(T, S)                                                               \
    static void gemm_avx512_##S(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,  \
                                const T *A, int64_t lda, const T *B, int64_t ldb, T *C,       \
                                int64_t ldc, bool accumulate, int threads)                    \
    {                                                                                         \
        if (gemm_path_##S(trans_a, m, n, k) == PATH_TILES)                                    \
            gemm_##S(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc, accumulate, threads); \
        else                                                                                  \
            avx2_kernels.gemm_##S(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc,          \
                                  accumulate, threads);                                       \
    }
BILO_GEMM_AVX512_(float, f32)
BILO_GEMM_AVX512_(double, f64)
#undef BILO_GEMM_AVX512_

void bilo__fill_gemm_avx512(bilo_kernels *k)
{
    avx2_kernels = *k;
    k->gemm_f32 = gemm_avx512_f32;
    k->gemm_f64 = gemm_avx512_f64;
}
