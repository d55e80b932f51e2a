/* Private kernel table. Every kernel works on contiguous memory and is single-threaded
   except gemm, which splits its own macro-loop; the op layer (tensor/ops_*.c) does shapes,
   broadcasting and the OpenMP split. One table per ISA: the scalar reference fills every
   entry, a vector set overrides the entries it implements (avx2 all of them; avx512 is the
   avx2 table with its own gemm_f32 and gemm_f64). */
#ifndef BILO_KERNELS_H
#define BILO_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

/* Unary kernels y[i] = f(x[i]; p); p is the scalar of pow/add/mul/rsub, unused otherwise. */
#define BILO_UNARY_KERNELS(X)                                                                 \
    X(NEG) X(ABS) X(EXP) X(LOG) X(LOG1P) X(EXPM1) X(SQRT) X(RSQRT) X(SQUARE) X(RECIPROCAL)   \
    X(SIN) X(COS) X(TANH) X(SIGMOID) X(RELU) X(SOFTPLUS) X(ERF) X(SIGN) X(POW_SCALAR)        \
    X(ADD_SCALAR) X(MUL_SCALAR) X(RSUB_SCALAR)

/* Binary kernels y[i] = a[i*sa] (op) b[i*sb] with strides sa, sb in {0, 1}. Comparisons
   write 1 or 0. TANH_GRAD and SIGMOID_GRAD take the activation's output a and a gradient b:
   b·(1 - a²) and b·(a - a²), each square-and-subtract one fused multiply-add. */
#define BILO_BINARY_KERNELS(X)                                                                \
    X(ADD) X(SUB) X(MUL) X(DIV) X(POW) X(MAXIMUM) X(MINIMUM) X(GT) X(GE) X(LT) X(LE) X(EQ)   \
    X(TANH_GRAD) X(SIGMOID_GRAD)

/* Fused bias + activation kernels y[j] = act(x[j] + b[j]) over one row of n elements; the
   sum is rounded to the dtype first, exactly as the add kernel does, and act is evaluated as
   by the unary kernel of the same name. unary_scalar.c and unary_avx2.c fill them. */
#define BILO_BIAS_ACT_KERNELS(X) X(RELU) X(TANH) X(SIGMOID)

typedef enum {
#define BILO_K_ENUM_(name) BILO_KBA_##name,
    BILO_BIAS_ACT_KERNELS(BILO_K_ENUM_)
#undef BILO_K_ENUM_
    BILO_KBA_COUNT
} bilo_bias_act_kernel;
/* In a kernel source that defines bias_NAME_f32 and bias_NAME_f64 for every NAME above: point
   table k's entries at them. */
#define BILO_BIAS_ACT_SET_(NAME)                          \
    k_->bias_act_f32[BILO_KBA_##NAME] = bias_##NAME##_f32; \
    k_->bias_act_f64[BILO_KBA_##NAME] = bias_##NAME##_f64;
#define BILO_FILL_BIAS_ACT_(k)                   \
    do {                                         \
        bilo_kernels *k_ = (k);                  \
        BILO_BIAS_ACT_KERNELS(BILO_BIAS_ACT_SET_) \
    } while (0)

typedef enum {
#define BILO_K_ENUM_(name) BILO_KU_##name,
    BILO_UNARY_KERNELS(BILO_K_ENUM_)
#undef BILO_K_ENUM_
    BILO_KU_COUNT
} bilo_unary_kernel;

typedef enum {
#define BILO_K_ENUM_(name) BILO_KB_##name,
    BILO_BINARY_KERNELS(BILO_K_ENUM_)
#undef BILO_K_ENUM_
    BILO_KB_COUNT
} bilo_binary_kernel;

/* Unary, binary, where and axpy kernels may run in place: y may equal x (or a, or b). */
typedef void (*bilo_unary_f32)(const float *x, float *y, int64_t n, double p);
typedef void (*bilo_unary_f64)(const double *x, double *y, int64_t n, double p);
typedef void (*bilo_binary_f32)(const float *a, int64_t sa, const float *b, int64_t sb, float *y,
                                int64_t n);
typedef void (*bilo_binary_f64)(const double *a, int64_t sa, const double *b, int64_t sb,
                                double *y, int64_t n);

/* x and y may be the same buffer. */
typedef void (*bilo_bias_act_f32)(const float *x, const float *b, float *y, int64_t n);
typedef void (*bilo_bias_act_f64)(const double *x, const double *b, double *y, int64_t n);

typedef struct {
    const char *isa;
    bilo_unary_f32 unary_f32[BILO_KU_COUNT];
    bilo_unary_f64 unary_f64[BILO_KU_COUNT];
    bilo_binary_f32 binary_f32[BILO_KB_COUNT];
    bilo_binary_f64 binary_f64[BILO_KB_COUNT];
    /* y[i] = m[i*sm] != 0 ? a[i*sa] : b[i*sb] */
    void (*where_f32)(const float *m, int64_t sm, const float *a, int64_t sa, const float *b,
                      int64_t sb, float *y, int64_t n);
    void (*where_f64)(const double *m, int64_t sm, const double *a, int64_t sa, const double *b,
                      int64_t sb, double *y, int64_t n);
    /* Reductions of one contiguous block (the op layer combines fixed-size blocks in order,
       so results do not depend on the thread count). NaN propagates through max/min. */
    double (*sum_f32)(const float *x, int64_t n);
    double (*sum_f64)(const double *x, int64_t n);
    double (*dot_f32)(const float *a, const float *b, int64_t n);
    double (*dot_f64)(const double *a, const double *b, int64_t n);
    float (*max_f32)(const float *x, int64_t n); /* n >= 1 */
    double (*max_f64)(const double *x, int64_t n);
    float (*min_f32)(const float *x, int64_t n);
    double (*min_f64)(const double *x, int64_t n);
    /* y += alpha * x */
    void (*axpy_f32)(int64_t n, float alpha, const float *x, float *y);
    void (*axpy_f64)(int64_t n, double alpha, const double *x, double *y);
    /* C (m×n, row stride ldc) = op(A)·op(B) (+ C when accumulate). op(A) is m×k: A is m×k with
       row stride lda, or k×m when trans_a. op(B) is k×n: B is k×n (ldb), or n×k when trans_b.
       beta = 0 never reads C. May use `threads` OpenMP threads. */
    void (*gemm_f32)(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                     bool accumulate, int threads);
    void (*gemm_f64)(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                     const double *A, int64_t lda, const double *B, int64_t ldb, double *C,
                     int64_t ldc, bool accumulate, int threads);
    bilo_bias_act_f32 bias_act_f32[BILO_KBA_COUNT];
    bilo_bias_act_f64 bias_act_f64[BILO_KBA_COUNT];
} bilo_kernels;

/* The table chosen at start-up (CPU detection, BILO_DISABLE). */
const bilo_kernels *bilo__kernels(void);
/* A specific table for tests and benchmarks: "scalar", "avx2" or "avx512"; NULL if this CPU
   or build lacks it (or BILO_DISABLE hides it). */
const bilo_kernels *bilo__kernels_for(const char *isa);

/* Fillers, one per kernel family and ISA source file (dispatch.c calls them). */
void bilo__fill_unary_scalar(bilo_kernels *k);   /* unary_scalar.c */
void bilo__fill_binary_scalar(bilo_kernels *k);  /* binary_scalar.c (binary + where + axpy) */
void bilo__fill_reduce_scalar(bilo_kernels *k);  /* reduce_scalar.c */
void bilo__fill_gemm_scalar(bilo_kernels *k);    /* gemm_scalar.c */
void bilo__fill_unary_avx2(bilo_kernels *k);     /* unary_avx2.c (-mavx2 -mfma, SLEEF) */
void bilo__fill_binary_avx2(bilo_kernels *k);    /* binary_avx2.c */
void bilo__fill_reduce_avx2(bilo_kernels *k);    /* reduce_avx2.c */
void bilo__fill_gemm_avx2(bilo_kernels *k);      /* gemm_avx2.c */
void bilo__fill_gemm_avx512(bilo_kernels *k);    /* gemm_avx512.c (on top of the avx2 table) */

#endif
