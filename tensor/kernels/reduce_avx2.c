/* AVX2+FMA block reductions, f32 and f64 from one body each.
   sum and dot accumulate in double for both dtypes (an f32 block is widened four lanes at a
   time), over four independent vector accumulators; the products of two floats are exact in
   double, so the f32 dot is as accurate as the f64 one. max and min keep a running NaN mask
   and return NaN when any element is NaN. Tails use masked loads. */
#include "kernels.h"
#include "simd_avx2.h"

#include <math.h>

/* Four elements widened to double: a full load and a masked one (lanes below r). */
static inline __m256d load4_f32(const float *p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
static inline __m256d load4_f64(const double *p) { return _mm256_loadu_pd(p); }
static inline __m256d load4_part_f32(const float *p, int64_t r)
{
    const __m128i m = _mm_cmpgt_epi32(_mm_set1_epi32((int)r), _mm_setr_epi32(0, 1, 2, 3));
    return _mm256_cvtps_pd(_mm_maskload_ps(p, m));
}
static inline __m256d load4_part_f64(const double *p, int64_t r)
{
    return _mm256_maskload_pd(p, tail_mask_f64(r));
}

/* ((l0 + l1) + (l2 + l3)) of (a0 + a1) + (a2 + a3). */
static inline double hsum4(__m256d a0, __m256d a1, __m256d a2, __m256d a3)
{
    const __m256d v = _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3));
    double l[4];
    _mm256_storeu_pd(l, v);
    return (l[0] + l[1]) + (l[2] + l[3]);
}

#define BILO_SUM_DOT_(T, S)                                                                       \
    static double sum_##S(const T *x, int64_t n)                                                  \
    {                                                                                             \
        __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;                              \
        int64_t i = 0;                                                                            \
        for (; i + 16 <= n; i += 16) {                                                            \
            s0 = _mm256_add_pd(s0, load4_##S(x + i));                                             \
            s1 = _mm256_add_pd(s1, load4_##S(x + i + 4));                                         \
            s2 = _mm256_add_pd(s2, load4_##S(x + i + 8));                                         \
            s3 = _mm256_add_pd(s3, load4_##S(x + i + 12));                                        \
        }                                                                                         \
        for (; i + 4 <= n; i += 4) s0 = _mm256_add_pd(s0, load4_##S(x + i));                      \
        if (i < n) s1 = _mm256_add_pd(s1, load4_part_##S(x + i, n - i));                          \
        return hsum4(s0, s1, s2, s3);                                                             \
    }                                                                                             \
    static double dot_##S(const T *a, const T *b, int64_t n)                                      \
    {                                                                                             \
        __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;                              \
        int64_t i = 0;                                                                            \
        for (; i + 16 <= n; i += 16) {                                                            \
            s0 = _mm256_fmadd_pd(load4_##S(a + i), load4_##S(b + i), s0);                         \
            s1 = _mm256_fmadd_pd(load4_##S(a + i + 4), load4_##S(b + i + 4), s1);                 \
            s2 = _mm256_fmadd_pd(load4_##S(a + i + 8), load4_##S(b + i + 8), s2);                 \
            s3 = _mm256_fmadd_pd(load4_##S(a + i + 12), load4_##S(b + i + 12), s3);               \
        }                                                                                         \
        for (; i + 4 <= n; i += 4) s0 = _mm256_fmadd_pd(load4_##S(a + i), load4_##S(b + i), s0);  \
        if (i < n)                                                                                \
            s1 = _mm256_fmadd_pd(load4_part_##S(a + i, n - i), load4_part_##S(b + i, n - i), s1); \
        return hsum4(s0, s1, s2, s3);                                                             \
    }
BILO_SUM_DOT_(float, f32)
BILO_SUM_DOT_(double, f64)

/* max/min in the native width. Masked-off tail lanes hold x[0], which changes neither. */
static inline __m256 tail_fill_f32(const float *p, int64_t r, __m256 fill)
{
    const __m256i m = tail_mask_f32(r);
    return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
static inline __m256d tail_fill_f64(const double *p, int64_t r, __m256d fill)
{
    const __m256i m = tail_mask_f64(r);
    return _mm256_blendv_pd(fill, _mm256_maskload_pd(p, m), _mm256_castsi256_pd(m));
}

#define BILO_EXTREME_(name, OP, better, T, S)                            \
    static T name##_##S(const T *x, int64_t n)                           \
    {                                                                    \
        const VEC_##S first = SET1_##S(x[0]);                            \
        VEC_##S best = first, nan = CMP_##S(first, first, _CMP_UNORD_Q); \
        int64_t i = 0;                                                   \
        for (; i + LANES_##S <= n; i += LANES_##S) {                     \
            const VEC_##S v = LOADU_##S(x + i);                          \
            nan = OR_##S(nan, CMP_##S(v, v, _CMP_UNORD_Q));              \
            best = OP##_##S(best, v);                                    \
        }                                                                \
        if (i < n) {                                                     \
            const VEC_##S v = tail_fill_##S(x + i, n - i, first);        \
            nan = OR_##S(nan, CMP_##S(v, v, _CMP_UNORD_Q));              \
            best = OP##_##S(best, v);                                    \
        }                                                                \
        if (MOVEMASK_##S(nan)) return (T)NAN;                            \
        T lane[LANES_##S];                                               \
        STOREU_##S(lane, best);                                          \
        T result = lane[0];                                              \
        for (int j = 1; j < LANES_##S; j++)                              \
            if (lane[j] better result) result = lane[j];                 \
        return result;                                                   \
    }
BILO_EXTREME_(max, MAX, >, float, f32)
BILO_EXTREME_(max, MAX, >, double, f64)
BILO_EXTREME_(min, MIN, <, float, f32)
BILO_EXTREME_(min, MIN, <, double, f64)

void bilo__fill_reduce_avx2(bilo_kernels *k)
{
    k->sum_f32 = sum_f32;
    k->sum_f64 = sum_f64;
    k->dot_f32 = dot_f32;
    k->dot_f64 = dot_f64;
    k->max_f32 = max_f32;
    k->max_f64 = max_f64;
    k->min_f32 = min_f32;
    k->min_f64 = min_f64;
}
