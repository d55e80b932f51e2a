/* AVX2+FMA unary kernels, f32 (8 lanes) and f64 (4 lanes) from one body per function.
   Transcendentals call SLEEF's AVX2-named functions directly (this file is compiled with
   -mavx2 -mfma and only reached through the kernel table on CPUs that have both).

   Accuracy choices, measured on this project's 2-core AMD EPYC (1e5 f32, ns/element):
   - f32 tanh uses Sleef_tanhf8_u35avx2 (max 3.5 ulp): 0.63 ns against 2.03 ns for u10.
     tanh is the hot activation of f32 models, and 3.5 ulp (~4e-7 relative) is far below
     f32 training noise.
   - every other f32 function uses u10 (max 1 ulp): exp and erf are u10-only; log, sin and
     cos are about 2x faster at u35 but are not hot in f32 models, so they keep the default
     accuracy.
   - f64 uses u10 everywhere: f64 is what gradcheck and exact hypergradients rely on.
   sigmoid and softplus are composed from exp and log1p of -|x|, as in the scalar reference,
   so neither overflows and sigmoid keeps full relative accuracy for x << 0.
   Tails (n not a multiple of the lane count) use masked loads and stores, so every element
   goes through the same vector code. */
#include "kernels.h"
#include "simd_avx2.h"

#include <sleef.h>

/* SLEEF functions with the accuracy chosen above, in the dtype-suffixed vocabulary. */
#define EXP_f32 Sleef_expf8_u10avx2
#define EXP_f64 Sleef_expd4_u10avx2
#define LOG_f32 Sleef_logf8_u10avx2
#define LOG_f64 Sleef_logd4_u10avx2
#define LOG1P_f32 Sleef_log1pf8_u10avx2
#define LOG1P_f64 Sleef_log1pd4_u10avx2
#define EXPM1_f32 Sleef_expm1f8_u10avx2
#define EXPM1_f64 Sleef_expm1d4_u10avx2
#define SIN_f32 Sleef_sinf8_u10avx2
#define SIN_f64 Sleef_sind4_u10avx2
#define COS_f32 Sleef_cosf8_u10avx2
#define COS_f64 Sleef_cosd4_u10avx2
#define TANH_f32 Sleef_tanhf8_u35avx2
#define TANH_f64 Sleef_tanhd4_u10avx2
#define ERF_f32 Sleef_erff8_u10avx2
#define ERF_f64 Sleef_erfd4_u10avx2
#define POW_f32 Sleef_powf8_u10avx2
#define POW_f64 Sleef_powd4_u10avx2

/* Per-vector element functions v_NAME_S(x, p); p is the kernel's scalar broadcast. */
#define VOP_(S, NAME) static inline VEC_##S v_##NAME##_##S(VEC_##S x, VEC_##S p)
#define BILO_UNARY_VOPS_(S)                                                            \
    static inline VEC_##S one_##S(void) { return SET1_##S(1.0); }                      \
    static inline VEC_##S zero_##S(void) { return SET1_##S(0.0); }                     \
    static inline VEC_##S sign_bit_##S(void) { return SET1_##S(-0.0); }                \
    static inline VEC_##S neg_abs_##S(VEC_##S x) { return OR_##S(x, sign_bit_##S()); } \
    VOP_(S, NEG) { return XOR_##S(x, sign_bit_##S()); }                                \
    VOP_(S, ABS) { return ANDNOT_##S(sign_bit_##S(), x); }                             \
    VOP_(S, EXP) { return EXP_##S(x); }                                                \
    VOP_(S, LOG) { return LOG_##S(x); }                                                \
    VOP_(S, LOG1P) { return LOG1P_##S(x); }                                            \
    VOP_(S, EXPM1) { return EXPM1_##S(x); }                                            \
    VOP_(S, SQRT) { return SQRT_##S(x); }                                              \
    VOP_(S, RSQRT) { return DIV_##S(one_##S(), SQRT_##S(x)); }                         \
    VOP_(S, SQUARE) { return MUL_##S(x, x); }                                          \
    VOP_(S, RECIPROCAL) { return DIV_##S(one_##S(), x); }                              \
    VOP_(S, SIN) { return SIN_##S(x); }                                                \
    VOP_(S, COS) { return COS_##S(x); }                                                \
    VOP_(S, TANH) { return TANH_##S(x); }                                              \
    /* 1/(1+e^-|x|) for x >= 0, e^-|x|/(1+e^-|x|) otherwise. */                        \
    VOP_(S, SIGMOID)                                                                   \
    {                                                                                  \
        const VEC_##S e = EXP_##S(neg_abs_##S(x));                                     \
        const VEC_##S s = DIV_##S(one_##S(), ADD_##S(one_##S(), e));                   \
        return BLENDV_##S(MUL_##S(e, s), s, CMP_##S(x, zero_##S(), _CMP_GE_OQ));       \
    }                                                                                  \
    /* max(x, 0) gives 0 for NaN and +0 for -0, like x > 0 ? x : 0. */                 \
    VOP_(S, RELU) { return MAX_##S(x, zero_##S()); }                                   \
    VOP_(S, SOFTPLUS)                                                                  \
    {                                                                                  \
        const VEC_##S soft = LOG1P_##S(EXP_##S(neg_abs_##S(x)));                       \
        return ADD_##S(soft, MAX_##S(x, zero_##S()));                                  \
    }                                                                                  \
    VOP_(S, ERF) { return ERF_##S(x); }                                                \
    VOP_(S, SIGN)                                                                      \
    {                                                                                  \
        const VEC_##S pos = AND_##S(CMP_##S(x, zero_##S(), _CMP_GT_OQ), one_##S());    \
        const VEC_##S neg = AND_##S(CMP_##S(x, zero_##S(), _CMP_LT_OQ), one_##S());    \
        return SUB_##S(pos, neg);                                                      \
    }                                                                                  \
    VOP_(S, POW_SCALAR) { return POW_##S(x, p); }                                      \
    VOP_(S, ADD_SCALAR) { return ADD_##S(x, p); }                                      \
    VOP_(S, MUL_SCALAR) { return MUL_##S(x, p); }                                      \
    VOP_(S, RSUB_SCALAR) { return SUB_##S(p, x); }
BILO_UNARY_VOPS_(f32)
BILO_UNARY_VOPS_(f64)

#define BILO_UNARY_LOOP_(NAME, T, S)                                             \
    static void kernel_##NAME##_##S(const T *x, T *y, int64_t n, double p)       \
    {                                                                            \
        const VEC_##S vp = SET1_##S((T)p);                                       \
        int64_t i = 0;                                                           \
        for (; i + LANES_##S <= n; i += LANES_##S)                               \
            STOREU_##S(y + i, v_##NAME##_##S(LOADU_##S(x + i), vp));             \
        if (i < n) {                                                             \
            const __m256i m = tail_mask_##S(n - i);                              \
            MASKSTORE_##S(y + i, m, v_##NAME##_##S(MASKLOAD_##S(x + i, m), vp)); \
        }                                                                        \
    }
#define BILO_UNARY_DEFINE_(NAME) \
    BILO_UNARY_LOOP_(NAME, float, f32) BILO_UNARY_LOOP_(NAME, double, f64)
BILO_UNARY_KERNELS(BILO_UNARY_DEFINE_)

/* x^2 is exactly the correctly rounded pow(x, 2); squaring skips SLEEF's pow. */
#define BILO_POW_SCALAR_(T, S)                                        \
    static void pow_scalar_##S(const T *x, T *y, int64_t n, double p) \
    {                                                                 \
        if ((T)p == 2) kernel_SQUARE_##S(x, y, n, p);                 \
        else kernel_POW_SCALAR_##S(x, y, n, p);                       \
    }
BILO_POW_SCALAR_(float, f32)
BILO_POW_SCALAR_(double, f64)

/* y = act(x + b) with the activations above: one load of each operand, one store. */
#define BILO_BIAS_ACT_LOOP_(NAME, T, S)                                                     \
    static void bias_##NAME##_##S(const T *x, const T *b, T *y, int64_t n)                 \
    {                                                                                       \
        const VEC_##S unused = zero_##S();                                                  \
        int64_t i = 0;                                                                      \
        for (; i + LANES_##S <= n; i += LANES_##S) {                                        \
            const VEC_##S z = ADD_##S(LOADU_##S(x + i), LOADU_##S(b + i));                  \
            STOREU_##S(y + i, v_##NAME##_##S(z, unused));                                   \
        }                                                                                   \
        if (i < n) {                                                                        \
            const __m256i m = tail_mask_##S(n - i);                                         \
            const VEC_##S z = ADD_##S(MASKLOAD_##S(x + i, m), MASKLOAD_##S(b + i, m));      \
            MASKSTORE_##S(y + i, m, v_##NAME##_##S(z, unused));                             \
        }                                                                                   \
    }
#define BILO_BIAS_ACT_DEFINE_(NAME) \
    BILO_BIAS_ACT_LOOP_(NAME, float, f32) BILO_BIAS_ACT_LOOP_(NAME, double, f64)
BILO_BIAS_ACT_KERNELS(BILO_BIAS_ACT_DEFINE_)

void bilo__fill_unary_avx2(bilo_kernels *k)
{
#define BILO_UNARY_SET_(NAME)                           \
    k->unary_f32[BILO_KU_##NAME] = kernel_##NAME##_f32; \
    k->unary_f64[BILO_KU_##NAME] = kernel_##NAME##_f64;
    BILO_UNARY_KERNELS(BILO_UNARY_SET_)
#undef BILO_UNARY_SET_
    k->unary_f32[BILO_KU_POW_SCALAR] = pow_scalar_f32;
    k->unary_f64[BILO_KU_POW_SCALAR] = pow_scalar_f64;
    BILO_FILL_BIAS_ACT_(k);
}
