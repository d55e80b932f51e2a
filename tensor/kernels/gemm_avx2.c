/* AVX2+FMA GEMM: the body of gemm_body.h on 256-bit vectors (6×16 f32 and 6×8 f64 tiles). */
#include "simd_avx2.h"

/* The vocabulary gemm_body.h needs beyond simd_avx2.h: the tail masks' type and a lane sum
   (pairwise). */
#define MASK_f32 __m256i
#define MASK_f64 __m256i

static inline float hsum_f32(__m256 v)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}
static inline double hsum_f64(__m256d v)
{
    __m128d x = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(x, _mm_unpackhi_pd(x, x)));
}

#include "gemm_body.h"

void bilo__fill_gemm_avx2(bilo_kernels *k)
{
    k->gemm_f32 = gemm_f32;
    k->gemm_f64 = gemm_f64;
}
