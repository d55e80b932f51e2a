/* Private to the *_avx2.c kernels: AVX2+FMA vocabulary with a dtype suffix (f32: 8 float
   lanes, f64: 4 double lanes), so that each kernel is written once for both dtypes, the tail
   masks of their masked loads and stores, and the axpy shared by the table and the GEMM. */
#ifndef BILO_SIMD_AVX2_H
#define BILO_SIMD_AVX2_H

#if !defined(__AVX2__) || !defined(__FMA__)
#error "simd_avx2.h is only for the kernels compiled with -mavx2 -mfma"
#endif

#include <immintrin.h>
#include <stdint.h>

#define VEC_f32 __m256
#define VEC_f64 __m256d
#define LANES_f32 8
#define LANES_f64 4
#define ZERO_f32 _mm256_setzero_ps
#define ZERO_f64 _mm256_setzero_pd
#define LOAD_f32 _mm256_load_ps
#define LOAD_f64 _mm256_load_pd
#define LOADU_f32 _mm256_loadu_ps
#define LOADU_f64 _mm256_loadu_pd
#define STOREU_f32 _mm256_storeu_ps
#define STOREU_f64 _mm256_storeu_pd
#define MASKLOAD_f32 _mm256_maskload_ps
#define MASKLOAD_f64 _mm256_maskload_pd
#define MASKSTORE_f32 _mm256_maskstore_ps
#define MASKSTORE_f64 _mm256_maskstore_pd
#define SET1_f32 _mm256_set1_ps
#define SET1_f64 _mm256_set1_pd
#define BROADCAST_f32 _mm256_broadcast_ss
#define BROADCAST_f64 _mm256_broadcast_sd
#define ADD_f32 _mm256_add_ps
#define ADD_f64 _mm256_add_pd
#define SUB_f32 _mm256_sub_ps
#define SUB_f64 _mm256_sub_pd
#define MUL_f32 _mm256_mul_ps
#define MUL_f64 _mm256_mul_pd
#define DIV_f32 _mm256_div_ps
#define DIV_f64 _mm256_div_pd
#define FMADD_f32 _mm256_fmadd_ps
#define FMADD_f64 _mm256_fmadd_pd
#define MAX_f32 _mm256_max_ps
#define MAX_f64 _mm256_max_pd
#define MIN_f32 _mm256_min_ps
#define MIN_f64 _mm256_min_pd
#define AND_f32 _mm256_and_ps
#define AND_f64 _mm256_and_pd
#define OR_f32 _mm256_or_ps
#define OR_f64 _mm256_or_pd
#define ANDNOT_f32 _mm256_andnot_ps
#define ANDNOT_f64 _mm256_andnot_pd
#define XOR_f32 _mm256_xor_ps
#define XOR_f64 _mm256_xor_pd
#define SQRT_f32 _mm256_sqrt_ps
#define SQRT_f64 _mm256_sqrt_pd
#define CMP_f32 _mm256_cmp_ps
#define CMP_f64 _mm256_cmp_pd
#define BLENDV_f32 _mm256_blendv_ps
#define BLENDV_f64 _mm256_blendv_pd
#define MOVEMASK_f32 _mm256_movemask_ps
#define MOVEMASK_f64 _mm256_movemask_pd

/* Lanes below r are on. */
static inline __m256i tail_mask_f32(int64_t r)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline __m256i tail_mask_f64(int64_t r)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(r), _mm256_setr_epi64x(0, 1, 2, 3));
}

/* y[0..n) += alpha * x[0..n), fused, masked tail. */
#define BILO_AXPY_AVX2_(T, S)                                                     \
    static inline void axpy_##S(int64_t n, T alpha, const T *x, T *y)             \
    {                                                                             \
        const VEC_##S va = SET1_##S(alpha);                                       \
        int64_t i = 0;                                                            \
        for (; i + LANES_##S <= n; i += LANES_##S)                                \
            STOREU_##S(y + i, FMADD_##S(va, LOADU_##S(x + i), LOADU_##S(y + i))); \
        if (i < n) {                                                              \
            const __m256i t = tail_mask_##S(n - i);                               \
            MASKSTORE_##S(y + i, t, FMADD_##S(va, MASKLOAD_##S(x + i, t),         \
                                              MASKLOAD_##S(y + i, t)));           \
        }                                                                         \
    }
BILO_AXPY_AVX2_(float, f32)
BILO_AXPY_AVX2_(double, f64)
#undef BILO_AXPY_AVX2_

#endif
