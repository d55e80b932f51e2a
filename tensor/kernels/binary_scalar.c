/* Scalar reference for the binary kernels, where and axpy, f32 and f64 from one body each.
   Binary elements are evaluated in double and rounded once: for + - * / that is exactly the
   f32 operation (a double holds more than 2·24+2 bits), for pow it is nearly correctly
   rounded. Operand strides are 1 (an array) or 0 (a broadcast scalar). */
#include "kernels.h"

#include <math.h>

static double k_ADD(double a, double b) { return a + b; }
static double k_SUB(double a, double b) { return a - b; }
static double k_MUL(double a, double b) { return a * b; }
static double k_DIV(double a, double b) { return a / b; }
static double k_POW(double a, double b) { return pow(a, b); }
/* A NaN in either operand wins (a > NaN is false, so b's NaN is picked up too). */
static double k_MAXIMUM(double a, double b) { return isnan(a) ? a : a > b ? a : b; }
static double k_MINIMUM(double a, double b) { return isnan(a) ? a : a < b ? a : b; }
static double k_GT(double a, double b) { return a > b; }
static double k_GE(double a, double b) { return a >= b; }
static double k_LT(double a, double b) { return a < b; }
static double k_LE(double a, double b) { return a <= b; }
static double k_EQ(double a, double b) { return a == b; }
static double k_TANH_GRAD(double y, double g) { return g * fma(-y, y, 1.0); }
static double k_SIGMOID_GRAD(double y, double g) { return g * fma(-y, y, y); }

#define BILO_BINARY_LOOP_(NAME, T, S)                                                     \
    static void kernel_##NAME##_##S(const T *a, int64_t sa, const T *b, int64_t sb, T *y, \
                           int64_t n)                                                     \
    {                                                                                     \
        for (int64_t i = 0; i < n; i++)                                                   \
            y[i] = (T)k_##NAME((double)a[i * sa], (double)b[i * sb]);                     \
    }
#define BILO_BINARY_DEFINE_(NAME) \
    BILO_BINARY_LOOP_(NAME, float, f32) BILO_BINARY_LOOP_(NAME, double, f64)
BILO_BINARY_KERNELS(BILO_BINARY_DEFINE_)

#define BILO_WHERE_AXPY_(T, S)                                                         \
    static void where_##S(const T *m, int64_t sm, const T *a, int64_t sa, const T *b,  \
                          int64_t sb, T *y, int64_t n)                                 \
    {                                                                                  \
        for (int64_t i = 0; i < n; i++) y[i] = m[i * sm] != 0 ? a[i * sa] : b[i * sb]; \
    }                                                                                  \
    static void axpy_##S(int64_t n, T alpha, const T *x, T *y)                         \
    {                                                                                  \
        for (int64_t i = 0; i < n; i++) y[i] += alpha * x[i];                          \
    }
BILO_WHERE_AXPY_(float, f32)
BILO_WHERE_AXPY_(double, f64)

void bilo__fill_binary_scalar(bilo_kernels *k)
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
