/* Scalar reference for the unary kernels, f32 and f64 from one body per function.
   Every element is evaluated in double and rounded once to the output type, so the f32
   reference is (nearly) correctly rounded and the vector versions can be held to a few ulp.
   The scalar p is first rounded to the kernel's dtype (an f32 kernel uses (float)p); for
   + - * that makes the f32 result exactly the float operation, since a double holds more
   than 2·24+2 bits and so rounding the exact double result twice is harmless. */
#include "kernels.h"

#include <math.h>

static double k_NEG(double x, double p) { return -x; }
static double k_ABS(double x, double p) { return fabs(x); }
static double k_EXP(double x, double p) { return exp(x); }
static double k_LOG(double x, double p) { return log(x); }
static double k_LOG1P(double x, double p) { return log1p(x); }
static double k_EXPM1(double x, double p) { return expm1(x); }
static double k_SQRT(double x, double p) { return sqrt(x); }
static double k_RSQRT(double x, double p) { return 1.0 / sqrt(x); }
static double k_SQUARE(double x, double p) { return x * x; }
static double k_RECIPROCAL(double x, double p) { return 1.0 / x; }
static double k_SIN(double x, double p) { return sin(x); }
static double k_COS(double x, double p) { return cos(x); }
static double k_TANH(double x, double p) { return tanh(x); }
static double k_ERF(double x, double p) { return erf(x); }
static double k_RELU(double x, double p) { return x > 0 ? x : 0.0; }
static double k_SIGN(double x, double p) { return (double)((x > 0) - (x < 0)); }
static double k_POW_SCALAR(double x, double p) { return pow(x, p); }
static double k_ADD_SCALAR(double x, double p) { return x + p; }
static double k_MUL_SCALAR(double x, double p) { return x * p; }
static double k_RSUB_SCALAR(double x, double p) { return p - x; }

/* exp of a non-positive number only, so nothing overflows. */
static double k_SIGMOID(double x, double p)
{
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    const double e = exp(x);
    return e / (1.0 + e);
}

/* log(1 + e^x) = log1p(e^-|x|) + max(x, 0): no overflow, and tiny positive for x << 0. */
static double k_SOFTPLUS(double x, double p) { return log1p(exp(-fabs(x))) + (x > 0 ? x : 0.0); }

#define BILO_UNARY_LOOP_(NAME, T, S)                                          \
    static void kernel_##NAME##_##S(const T *x, T *y, int64_t n, double p)    \
    {                                                                         \
        const double pt = (T)p;                                               \
        for (int64_t i = 0; i < n; i++) y[i] = (T)k_##NAME((double)x[i], pt); \
    }
#define BILO_UNARY_DEFINE_(NAME) \
    BILO_UNARY_LOOP_(NAME, float, f32) BILO_UNARY_LOOP_(NAME, double, f64)
BILO_UNARY_KERNELS(BILO_UNARY_DEFINE_)

/* y = act(x + b): the sum rounded to T (as the add kernel does), then act as above. */
#define BILO_BIAS_ACT_LOOP_(NAME, T, S)                                                 \
    static void bias_##NAME##_##S(const T *x, const T *b, T *y, int64_t n)             \
    {                                                                                   \
        for (int64_t i = 0; i < n; i++) {                                               \
            const T z = x[i] + b[i];                                                    \
            y[i] = (T)k_##NAME((double)z, 0.0);                                         \
        }                                                                               \
    }
#define BILO_BIAS_ACT_DEFINE_(NAME) \
    BILO_BIAS_ACT_LOOP_(NAME, float, f32) BILO_BIAS_ACT_LOOP_(NAME, double, f64)
BILO_BIAS_ACT_KERNELS(BILO_BIAS_ACT_DEFINE_)

void bilo__fill_unary_scalar(bilo_kernels *k)
{
#define BILO_UNARY_SET_(NAME)                           \
    k->unary_f32[BILO_KU_##NAME] = kernel_##NAME##_f32; \
    k->unary_f64[BILO_KU_##NAME] = kernel_##NAME##_f64;
    BILO_UNARY_KERNELS(BILO_UNARY_SET_)
#undef BILO_UNARY_SET_
    BILO_FILL_BIAS_ACT_(k);
}
