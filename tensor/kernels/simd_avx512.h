/* Private to gemm_avx512.c: the SIMD vocabulary of gemm_body.h on 512-bit vectors (f32: 16
   float lanes, f64: 8 double lanes), with AVX-512 lane masks (__mmask16, __mmask8) for the
   tails. Every intrinsic here is AVX-512F: the objects are built with -mavx512f and run only
   where dispatch.c finds avx512f. */
#ifndef BILO_SIMD_AVX512_H
#define BILO_SIMD_AVX512_H

#if !defined(__AVX512F__) || !defined(__FMA__)
#error "simd_avx512.h is only for the kernels compiled with -mavx512f -mavx2 -mfma"
#endif

#include <immintrin.h>
#include <stdint.h>

#define VEC_f32 __m512
#define VEC_f64 __m512d
#define LANES_f32 16
#define LANES_f64 8
#define MASK_f32 __mmask16
#define MASK_f64 __mmask8
#define ZERO_f32 _mm512_setzero_ps
#define ZERO_f64 _mm512_setzero_pd
#define LOADU_f32 _mm512_loadu_ps
#define LOADU_f64 _mm512_loadu_pd
#define STOREU_f32 _mm512_storeu_ps
#define STOREU_f64 _mm512_storeu_pd
#define ADD_f32 _mm512_add_ps
#define ADD_f64 _mm512_add_pd
#define FMADD_f32 _mm512_fmadd_ps
#define FMADD_f64 _mm512_fmadd_pd
#define SET1_f32 _mm512_set1_ps
#define SET1_f64 _mm512_set1_pd
/* *p in every lane (the compiler folds it into the FMA as an embedded broadcast). */
#define BROADCAST_f32(p) _mm512_set1_ps(*(p))
#define BROADCAST_f64(p) _mm512_set1_pd(*(p))
/* Lanes off read as zero, and their memory is not touched (no fault past an array's end). */
#define MASKLOAD_f32(p, mask) _mm512_maskz_loadu_ps(mask, p)
#define MASKLOAD_f64(p, mask) _mm512_maskz_loadu_pd(mask, p)
#define MASKSTORE_f32(p, mask, v) _mm512_mask_storeu_ps(p, mask, v)
#define MASKSTORE_f64(p, mask, v) _mm512_mask_storeu_pd(p, mask, v)

/* Lanes below r are on (none for r <= 0, all for r >= the lane count). */
static inline __mmask16 tail_mask_f32(int64_t r)
{
    return r <= 0 ? 0 : r >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << r) - 1);
}
static inline __mmask8 tail_mask_f64(int64_t r)
{
    return r <= 0 ? 0 : r >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << r) - 1);
}

static inline float hsum_f32(__m512 v) { return _mm512_reduce_add_ps(v); }
static inline double hsum_f64(__m512d v) { return _mm512_reduce_add_pd(v); }

/* y[0..n) += alpha * x[0..n), fused; the tail through lane masks. */
#define BILO_AXPY_AVX512_(T, S)                                                               \
    static inline void axpy_##S(int64_t n, T alpha, const T *x, T *y)                         \
    {                                                                                         \
        const VEC_##S va = SET1_##S(alpha);                                                   \
        for (int64_t i = 0; i < n; i += LANES_##S) {                                          \
            const MASK_##S t = tail_mask_##S(n - i);                                          \
            const VEC_##S xi = MASKLOAD_##S(x + i, t), yi = MASKLOAD_##S(y + i, t);          \
            MASKSTORE_##S(y + i, t, FMADD_##S(va, xi, yi));                                   \
        }                                                                                     \
    }
BILO_AXPY_AVX512_(float, f32)
BILO_AXPY_AVX512_(double, f64)
#undef BILO_AXPY_AVX512_

#endif
