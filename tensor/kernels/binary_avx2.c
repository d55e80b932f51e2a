/* AVX2+FMA binary kernels, where and axpy; f32 (8 lanes) and f64 (4 lanes) from one body.
   An operand with stride 0 is a scalar broadcast once into a register; with stride 1 it is
   loaded unaligned. Tails use masked loads and stores. pow calls SLEEF's u10 pow (1 ulp).
   maximum/minimum: _mm256_max_ps(a, b) is `a > b ? a : b` (b when either is NaN), so a
   blend restores a NaN of a, matching the scalar reference bit for bit. */
#include "kernels.h"
#include "simd_avx2.h"

#include <sleef.h>

#define POW_f32 Sleef_powf8_u10avx2
#define POW_f64 Sleef_powd4_u10avx2

/* Lanes i.. of an operand with stride s: loaded when s = 1, the broadcast scalar when s = 0.
   The stride test is loop-invariant and perfectly predicted. */
#define BILO_OPERAND_LOADS_(T, S)                                                            \
    static inline VEC_##S operand_##S(const T *p, int64_t s, int64_t i, VEC_##S scalar)      \
    {                                                                                        \
        return s ? LOADU_##S(p + i) : scalar;                                                \
    }                                                                                        \
    static inline VEC_##S operand_tail_##S(const T *p, int64_t s, int64_t i, VEC_##S scalar, \
                                           __m256i m)                                        \
    {                                                                                        \
        return s ? MASKLOAD_##S(p + i, m) : scalar;                                          \
    }
BILO_OPERAND_LOADS_(float, f32)
BILO_OPERAND_LOADS_(double, f64)

#define BILO_BINARY_VOPS_(S)                                                               \
    static inline VEC_##S v_ADD_##S(VEC_##S a, VEC_##S b) { return ADD_##S(a, b); }        \
    static inline VEC_##S v_SUB_##S(VEC_##S a, VEC_##S b) { return SUB_##S(a, b); }        \
    static inline VEC_##S v_MUL_##S(VEC_##S a, VEC_##S b) { return MUL_##S(a, b); }        \
    static inline VEC_##S v_DIV_##S(VEC_##S a, VEC_##S b) { return DIV_##S(a, b); }        \
    static inline VEC_##S v_POW_##S(VEC_##S a, VEC_##S b) { return POW_##S(a, b); }        \
    static inline VEC_##S v_MAXIMUM_##S(VEC_##S a, VEC_##S b)                              \
    {                                                                                      \
        return BLENDV_##S(MAX_##S(a, b), a, CMP_##S(a, a, _CMP_UNORD_Q));                  \
    }                                                                                      \
    static inline VEC_##S v_MINIMUM_##S(VEC_##S a, VEC_##S b)                              \
    {                                                                                      \
        return BLENDV_##S(MIN_##S(a, b), a, CMP_##S(a, a, _CMP_UNORD_Q));                  \
    }                                                                                      \
    static inline VEC_##S mask_to_one_##S(VEC_##S m) { return AND_##S(m, SET1_##S(1.0)); } \
    static inline VEC_##S v_GT_##S(VEC_##S a, VEC_##S b)                                   \
    {                                                                                      \
        return mask_to_one_##S(CMP_##S(a, b, _CMP_GT_OQ));                                 \
    }                                                                                      \
    static inline VEC_##S v_GE_##S(VEC_##S a, VEC_##S b)                                   \
    {                                                                                      \
        return mask_to_one_##S(CMP_##S(a, b, _CMP_GE_OQ));                                 \
    }                                                                                      \
    static inline VEC_##S v_LT_##S(VEC_##S a, VEC_##S b)                                   \
    {                                                                                      \
        return mask_to_one_##S(CMP_##S(a, b, _CMP_LT_OQ));                                 \
    }                                                                                      \
    static inline VEC_##S v_LE_##S(VEC_##S a, VEC_##S b)                                   \
    {                                                                                      \
        return mask_to_one_##S(CMP_##S(a, b, _CMP_LE_OQ));                                 \
    }                                                                                      \
    static inline VEC_##S v_EQ_##S(VEC_##S a, VEC_##S b)                                   \
    {                                                                                      \
        return mask_to_one_##S(CMP_##S(a, b, _CMP_EQ_OQ));                                 \
    }
BILO_BINARY_VOPS_(f32)
BILO_BINARY_VOPS_(f64)

/* The activation-gradient kernels in double, as the scalar reference evaluates them; f32
   lanes are widened, evaluated and rounded once, so both sets agree bit for bit. */
static inline __m256d v_TANH_GRAD_f64(__m256d y, __m256d g)
{
    return _mm256_mul_pd(g, _mm256_fnmadd_pd(y, y, _mm256_set1_pd(1.0)));
}
static inline __m256d v_SIGMOID_GRAD_f64(__m256d y, __m256d g)
{
    return _mm256_mul_pd(g, _mm256_fnmadd_pd(y, y, y));
}
#define IN_DOUBLE_f32(F, a, b)                                                                 \
    _mm256_set_m128(_mm256_cvtpd_ps(F(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)),           \
                                      _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)))),         \
                    _mm256_cvtpd_ps(F(_mm256_cvtps_pd(_mm256_castps256_ps128(a)),             \
                                      _mm256_cvtps_pd(_mm256_castps256_ps128(b)))))
static inline __m256 v_TANH_GRAD_f32(__m256 y, __m256 g)
{
    return IN_DOUBLE_f32(v_TANH_GRAD_f64, y, g);
}
static inline __m256 v_SIGMOID_GRAD_f32(__m256 y, __m256 g)
{
    return IN_DOUBLE_f32(v_SIGMOID_GRAD_f64, y, g);
}

#define BILO_BINARY_LOOP_(NAME, T, S)                                                     \
    static void kernel_##NAME##_##S(const T *a, int64_t sa, const T *b, int64_t sb, T *y, \
                                    int64_t n)                                            \
    {                                                                                     \
        if (n <= 0) return;                                                               \
        const VEC_##S a0 = SET1_##S(a[0]), b0 = SET1_##S(b[0]);                           \
        int64_t i = 0;                                                                    \
        for (; i + LANES_##S <= n; i += LANES_##S)                                        \
            STOREU_##S(y + i, v_##NAME##_##S(operand_##S(a, sa, i, a0),                   \
                                             operand_##S(b, sb, i, b0)));                 \
        if (i < n) {                                                                      \
            const __m256i m = tail_mask_##S(n - i);                                       \
            MASKSTORE_##S(y + i, m, v_##NAME##_##S(operand_tail_##S(a, sa, i, a0, m),     \
                                                   operand_tail_##S(b, sb, i, b0, m)));   \
        }                                                                                 \
    }
#define BILO_BINARY_DEFINE_(NAME) \
    BILO_BINARY_LOOP_(NAME, float, f32) BILO_BINARY_LOOP_(NAME, double, f64)
BILO_BINARY_KERNELS(BILO_BINARY_DEFINE_)

/* where: a nonzero mask (NaN included, as in `m != 0`) selects a. (axpy is in simd_avx2.h.) */
#define BILO_WHERE_(T, S)                                                          \
    static inline VEC_##S where_pick_##S(VEC_##S m, VEC_##S a, VEC_##S b)               \
    {                                                                                   \
        return BLENDV_##S(b, a, CMP_##S(m, SET1_##S(0.0), _CMP_NEQ_UQ));                \
    }                                                                                   \
    static void where_##S(const T *m, int64_t sm, const T *a, int64_t sa, const T *b,   \
                          int64_t sb, T *y, int64_t n)                                  \
    {                                                                                   \
        if (n <= 0) return;                                                             \
        const VEC_##S m0 = SET1_##S(m[0]), a0 = SET1_##S(a[0]), b0 = SET1_##S(b[0]);    \
        int64_t i = 0;                                                                  \
        for (; i + LANES_##S <= n; i += LANES_##S)                                      \
            STOREU_##S(y + i, where_pick_##S(operand_##S(m, sm, i, m0),                 \
                                             operand_##S(a, sa, i, a0),                 \
                                             operand_##S(b, sb, i, b0)));               \
        if (i < n) {                                                                    \
            const __m256i t = tail_mask_##S(n - i);                                     \
            MASKSTORE_##S(y + i, t, where_pick_##S(operand_tail_##S(m, sm, i, m0, t),   \
                                                   operand_tail_##S(a, sa, i, a0, t),   \
                                                   operand_tail_##S(b, sb, i, b0, t))); \
        }                                                                               \
    }
BILO_WHERE_(float, f32)
BILO_WHERE_(double, f64)

void bilo__fill_binary_avx2(bilo_kernels *k)
{
#define BILO_BINARY_SET_(NAME)                           \
    k->binary_f32[BILO_KB_##NAME] = kernel_##NAME##_f32; \
    k->binary_f64[BILO_KB_##NAME] = kernel_##NAME##_f64;
    BILO_BINARY_KERNELS(BILO_BINARY_SET_)
#undef BILO_BINARY_SET_
    k->where_f32 = where_f32;
    k->where_f64 = where_f64;
    k->axpy_f32 = axpy_f32;
    k->axpy_f64 = axpy_f64;
}
