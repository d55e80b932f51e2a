/* Autograd: gradcheck and gradgradcheck (f64, central differences) for every differentiable
   op of the op table, a coverage check of that table, graph semantics (fan-in, intermediate
   inputs, grad mode, bilo_backward accumulation), every error path of bilo_grad, a 1e5-step
   chain, and a memory check over 1e4 double-backprop iterations. */
#include "autograd_impl.h"
#include "bilo.h"
#include "checks.h"
#include "tap.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static bilo_rng rng;

static double uniform(double lo, double hi) { return lo + (hi - lo) * bilo_rng_uniform(&rng); }

static int contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

/* ---- inputs ------------------------------------------------------------------------------ */

/* kind: 'r' uniform [-1, 1]; 'p' positive [0.5, 2]; 'a' away from zero, |x| in [0.2, 1];
   's' / 'S' shuffled grids k*0.2 - 1 and k*0.2 - 0.9 (distinct, never within 0.1 of each
   other, for max/min); 'm' constant 0/1 mask; 'i' constant i64 indices in [0, range). Float
   kinds other than 'm' require grad. */
typedef struct {
    char kind;
    int ndim;
    int64_t shape[4];
    int64_t range;
} input_spec;

#define NDIM_(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define T(kind, ...) {kind, NDIM_(__VA_ARGS__), {__VA_ARGS__}, 0}
#define T0(kind) {kind, 0, {0}, 0}
#define IDX(range, ...) {'i', NDIM_(__VA_ARGS__), {__VA_ARGS__}, range}

static void shuffle(double *v, int64_t n)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(bilo_rng_uniform(&rng) * (double)(i + 1));
        double t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

static bilo_tensor *make_input(const input_spec *s)
{
    if (s->kind == 'i') {
        bilo_tensor *t = bilo_zeros(BILO_I64, s->ndim, s->shape);
        int64_t *p = bilo_data(t);
        for (int64_t k = 0; k < bilo_numel(t); k++)
            p[k] = (int64_t)(bilo_rng_uniform(&rng) * (double)s->range);
        return t;
    }
    bilo_tensor *t = bilo_zeros(BILO_F64, s->ndim, s->shape);
    double *p = bilo_data(t);
    int64_t n = bilo_numel(t);
    for (int64_t k = 0; k < n; k++) {
        switch (s->kind) {
        case 'r': p[k] = uniform(-1, 1); break;
        case 'p': p[k] = uniform(0.5, 2); break;
        case 'a': p[k] = (uniform(0, 1) < 0.5 ? -1 : 1) * uniform(0.2, 1); break;
        case 's': p[k] = 0.2 * (double)k - 1; break;
        case 'S': p[k] = 0.2 * (double)k - 0.9; break;
        case 'm': p[k] = uniform(0, 1) < 0.5 ? 0 : 1; break;
        }
    }
    if (s->kind == 's' || s->kind == 'S') shuffle(p, n);
    if (s->kind != 'm') bilo_set_requires_grad(t, true);
    return t;
}

/* ---- one case per op (several for ops with variants) ----------------------------------- */

typedef struct op_case {
    bilo_op_id op;
    const char *label;
    bilo_fnN fn;
    int n;
    input_spec in[4];
    int axis;
    bool keepdim;
    double p;
    int nto;
    int64_t to[4];
    int64_t start, stop, step;
    int perm[4];
    bool ta, tb;
    int conv[8]; /* im2col/col2im: kh, kw, sh, sw, ph, pw, dh, dw (col2im's C, H, W in to) */
    double eps;  /* 0: the default */
} op_case;

#define C ((const op_case *)user)

#define UNARY_FN(name) \
    static bilo_tensor *f_##name(bilo_tensor *const *x, void *user) { (void)user; return bilo_##name(x[0]); }
#define SCALAR_FN(name) \
    static bilo_tensor *f_##name(bilo_tensor *const *x, void *user) { return bilo_##name(x[0], C->p); }
#define BINARY_FN(name) \
    static bilo_tensor *f_##name(bilo_tensor *const *x, void *user) { (void)user; return bilo_##name(x[0], x[1]); }
#define REDUCE_FN(name) \
    static bilo_tensor *f_##name(bilo_tensor *const *x, void *user) { return bilo_##name(x[0], C->axis, C->keepdim); }
#define AXIS_FN(name) \
    static bilo_tensor *f_##name(bilo_tensor *const *x, void *user) { return bilo_##name(x[0], C->axis); }

UNARY_FN(neg) UNARY_FN(abs) UNARY_FN(exp) UNARY_FN(log) UNARY_FN(log1p) UNARY_FN(expm1)
UNARY_FN(sqrt) UNARY_FN(rsqrt) UNARY_FN(square) UNARY_FN(reciprocal) UNARY_FN(sin) UNARY_FN(cos)
UNARY_FN(tanh) UNARY_FN(erf) UNARY_FN(sigmoid) UNARY_FN(relu) UNARY_FN(softplus) UNARY_FN(clone)
SCALAR_FN(pow_scalar) SCALAR_FN(add_scalar) SCALAR_FN(mul_scalar) SCALAR_FN(rsub_scalar)
BINARY_FN(add) BINARY_FN(sub) BINARY_FN(mul) BINARY_FN(div) BINARY_FN(pow) BINARY_FN(maximum)
BINARY_FN(minimum) BINARY_FN(dot) BINARY_FN(outer)
REDUCE_FN(sum) REDUCE_FN(mean) REDUCE_FN(max) REDUCE_FN(min) REDUCE_FN(logsumexp) REDUCE_FN(norm)
AXIS_FN(softmax) AXIS_FN(log_softmax)

static bilo_tensor *f_tanh_backward(bilo_tensor *const *x, void *user)
{
    (void)user;
    return bilo_tanh_backward(x[0], x[1]);
}
static bilo_tensor *f_sigmoid_backward(bilo_tensor *const *x, void *user)
{
    (void)user;
    return bilo_sigmoid_backward(x[0], x[1]);
}
static bilo_tensor *f_where(bilo_tensor *const *x, void *user)
{
    (void)user;
    return bilo_where(x[0], x[1], x[2]);
}
static bilo_tensor *f_matmul(bilo_tensor *const *x, void *user)
{
    return bilo_matmul_t(x[0], x[1], C->ta, C->tb);
}
static bilo_tensor *f_matmul_batch_sum(bilo_tensor *const *x, void *user)
{
    return bilo_matmul_batch_sum(x[0], x[1], C->ta, C->tb);
}
/* The 4 x 5 sparse matrix with entries (0,1) (0,4) (2,0) (2,2) (2,3) (3,1) (3,4), row 1
   empty; x[0] its 7 values, x[1] the dense operand. The index arrays belong to the scope of
   the case. */
static bilo_tensor *f_spmm(bilo_tensor *const *x, void *user)
{
    static const int64_t ptr[] = {0, 2, 2, 5, 7}, idx[] = {1, 4, 0, 2, 3, 1, 4};
    bilo_tensor *indptr = bilo_from_data(BILO_I64, BILO_SHAPE(5), ptr);
    bilo_tensor *indices = bilo_from_data(BILO_I64, BILO_SHAPE(7), idx);
    return bilo_spmm(indptr, indices, x[0], 4, 5, x[1], C->ta);
}
/* inputs logits, labels (and g for the backward op) */
static bilo_tensor *f_softmax_cross_entropy(bilo_tensor *const *x, void *user)
{
    (void)user;
    return bilo_softmax_cross_entropy(x[0], x[1]);
}
static bilo_tensor *f_softmax_jvp(bilo_tensor *const *x, void *user)
{
    (void)user;
    return bilo_softmax_jvp(x[0], x[1], x[2]);
}
static bilo_tensor *f_softmax_cross_entropy_backward(bilo_tensor *const *x, void *user)
{
    (void)user;
    return bilo_softmax_cross_entropy_backward(x[0], x[1], x[2]);
}
static bilo_tensor *f_reshape(bilo_tensor *const *x, void *user) { return bilo_reshape(x[0], C->nto, C->to); }
static bilo_tensor *f_expand(bilo_tensor *const *x, void *user) { return bilo_expand(x[0], C->nto, C->to); }
static bilo_tensor *f_sum_to(bilo_tensor *const *x, void *user) { return bilo_sum_to(x[0], C->nto, C->to); }
static bilo_tensor *f_permute(bilo_tensor *const *x, void *user) { return bilo_permute(x[0], C->perm); }
static bilo_tensor *f_transpose(bilo_tensor *const *x, void *user)
{
    return bilo_transpose(x[0], C->perm[0], C->perm[1]);
}
static bilo_tensor *f_slice(bilo_tensor *const *x, void *user)
{
    return bilo_slice(x[0], C->axis, C->start, C->stop, C->step);
}
static bilo_tensor *f_slice_scatter(bilo_tensor *const *x, void *user)
{
    return bilo_slice_scatter(x[0], x[1], C->axis, C->start, C->stop, C->step);
}
static bilo_tensor *f_concat(bilo_tensor *const *x, void *user) { return bilo_concat(x, C->n, C->axis); }
static bilo_tensor *f_stack(bilo_tensor *const *x, void *user) { return bilo_stack(x, C->n, C->axis); }
static bilo_tensor *f_index_select(bilo_tensor *const *x, void *user)
{
    return bilo_index_select(x[0], C->axis, x[1]);
}
static bilo_tensor *f_index_add(bilo_tensor *const *x, void *user)
{
    return bilo_index_add(x[0], C->axis, x[1], x[2]);
}
static bilo_tensor *f_gather(bilo_tensor *const *x, void *user) { return bilo_gather(x[0], C->axis, x[1]); }
static bilo_tensor *f_scatter_add(bilo_tensor *const *x, void *user)
{
    return bilo_scatter_add(x[0], C->axis, x[1], x[2]);
}
#define CONV_ARGS(k) (k)[0], (k)[1], (k)[2], (k)[3], (k)[4], (k)[5], (k)[6], (k)[7]
static bilo_tensor *f_im2col(bilo_tensor *const *x, void *user) { return bilo_im2col(x[0], CONV_ARGS(C->conv)); }
static bilo_tensor *f_col2im(bilo_tensor *const *x, void *user)
{
    return bilo_col2im(x[0], C->to[0], C->to[1], C->to[2], CONV_ARGS(C->conv));
}
/* Through f32 and back: the case uses a large eps, the function being linear. */
static bilo_tensor *f_cast(bilo_tensor *const *x, void *user)
{
    (void)user;
    return bilo_cast(bilo_cast(x[0], BILO_F32), BILO_F64);
}

#define BIAS_ACT_FN(name, ACT) \
    static bilo_tensor *f_bias_##name(bilo_tensor *const *x, void *user) { (void)user; return bilo_bias_act(x[0], x[1], BILO_ACT_##ACT); }
BIAS_ACT_FN(relu, RELU) BIAS_ACT_FN(tanh, TANH) BIAS_ACT_FN(sigmoid, SIGMOID)

#define U(OP, name, kind) {.op = BILO_OP_##OP, .label = #name, .fn = f_##name, .n = 1, .in = {T(kind, 3, 4)}}
#define B(OP, name, label_, ka, kb, A, Bs) \
    {.op = BILO_OP_##OP, .label = label_, .fn = f_##name, .n = 2, .in = {T(ka, A), T(kb, Bs)}}
#define SH(...) __VA_ARGS__
#define RED(OP, name, kind, ax, keep) \
    {.op = BILO_OP_##OP, .label = #name " axis " #ax " keepdim " #keep, .fn = f_##name, .n = 1, \
     .in = {T(kind, 2, 3, 4)}, .axis = ax, .keepdim = keep}

static const op_case cases[] = {
    U(NEG, neg, 'r'), U(ABS, abs, 'a'), U(EXP, exp, 'r'), U(LOG, log, 'p'), U(LOG1P, log1p, 'p'),
    U(EXPM1, expm1, 'r'), U(SQRT, sqrt, 'p'), U(RSQRT, rsqrt, 'p'), U(SQUARE, square, 'r'),
    U(RECIPROCAL, reciprocal, 'a'), U(SIN, sin, 'r'), U(COS, cos, 'r'), U(TANH, tanh, 'r'),
    U(ERF, erf, 'r'), U(SIGMOID, sigmoid, 'r'), U(RELU, relu, 'a'), U(SOFTPLUS, softplus, 'r'),
    U(CLONE, clone, 'r'),
    {.op = BILO_OP_POW_SCALAR, .label = "pow_scalar 2.5", .fn = f_pow_scalar, .n = 1, .in = {T('p', 3, 4)}, .p = 2.5},
    {.op = BILO_OP_POW_SCALAR, .label = "pow_scalar -1.5", .fn = f_pow_scalar, .n = 1, .in = {T('p', 3, 4)}, .p = -1.5},
    {.op = BILO_OP_POW_SCALAR, .label = "pow_scalar 3 (negative x)", .fn = f_pow_scalar, .n = 1, .in = {T('r', 3, 4)}, .p = 3},
    {.op = BILO_OP_ADD_SCALAR, .label = "add_scalar", .fn = f_add_scalar, .n = 1, .in = {T('r', 3, 4)}, .p = 0.7},
    {.op = BILO_OP_MUL_SCALAR, .label = "mul_scalar", .fn = f_mul_scalar, .n = 1, .in = {T('r', 3, 4)}, .p = -1.3},
    {.op = BILO_OP_RSUB_SCALAR, .label = "rsub_scalar", .fn = f_rsub_scalar, .n = 1, .in = {T('r', 3, 4)}, .p = 2.0},

    B(ADD, add, "add [3,1]+[1,4]", 'r', 'r', SH(3, 1), SH(1, 4)),
    B(ADD, add, "add [4]+[2,3,4]", 'r', 'r', SH(4), SH(2, 3, 4)),
    B(ADD, add, "add [2,3]+[2,3]", 'r', 'r', SH(2, 3), SH(2, 3)),
    B(SUB, sub, "sub [3,1]-[1,4]", 'r', 'r', SH(3, 1), SH(1, 4)),
    B(SUB, sub, "sub [2,3,4]-[4]", 'r', 'r', SH(2, 3, 4), SH(4)),
    B(MUL, mul, "mul [3,1]*[1,4]", 'r', 'r', SH(3, 1), SH(1, 4)),
    B(MUL, mul, "mul [4]*[2,3,4]", 'r', 'r', SH(4), SH(2, 3, 4)),
    {.op = BILO_OP_MUL, .label = "mul [2,3]*[]", .fn = f_mul, .n = 2, .in = {T('r', 2, 3), T0('r')}},
    B(DIV, div, "div [3,1]/[1,4]", 'r', 'p', SH(3, 1), SH(1, 4)),
    B(DIV, div, "div [2,3,4]/[4]", 'r', 'a', SH(2, 3, 4), SH(4)),
    B(POW, pow, "pow [3,1]^[1,4]", 'p', 'r', SH(3, 1), SH(1, 4)),
    B(POW, pow, "pow [4]^[2,3,4]", 'p', 'r', SH(4), SH(2, 3, 4)),
    B(MAXIMUM, maximum, "maximum [3,4],[3,4]", 's', 'S', SH(3, 4), SH(3, 4)),
    B(MAXIMUM, maximum, "maximum [3,1],[1,4]", 's', 'S', SH(3, 1), SH(1, 4)),
    B(MINIMUM, minimum, "minimum [3,4],[3,4]", 's', 'S', SH(3, 4), SH(3, 4)),
    B(MINIMUM, minimum, "minimum [2,3,4],[4]", 's', 'S', SH(2, 3, 4), SH(4)),
    B(TANH_BACKWARD, tanh_backward, "tanh_backward [3,4],[3,4]", 'r', 'r', SH(3, 4), SH(3, 4)),
    B(TANH_BACKWARD, tanh_backward, "tanh_backward [3,1],[1,4]", 'r', 'r', SH(3, 1), SH(1, 4)),
    B(SIGMOID_BACKWARD, sigmoid_backward, "sigmoid_backward [3,4],[3,4]", 'r', 'r', SH(3, 4), SH(3, 4)),
    B(SIGMOID_BACKWARD, sigmoid_backward, "sigmoid_backward [2,3,4],[4]", 'r', 'r', SH(2, 3, 4), SH(4)),
    {.op = BILO_OP_WHERE, .label = "where [3,4] ? [3,4] : [1,4]", .fn = f_where, .n = 3, .in = {T('m', 3, 4), T('r', 3, 4), T('r', 1, 4)}},
    {.op = BILO_OP_WHERE, .label = "where [4] ? [3,1] : [3,4]", .fn = f_where, .n = 3, .in = {T('m', 4), T('r', 3, 1), T('r', 3, 4)}},

    RED(SUM, sum, 'r', 0, false), RED(SUM, sum, 'r', 1, true), RED(SUM, sum, 'r', -1, false),
    RED(SUM, sum, 'r', BILO_ALL_AXES, false), RED(SUM, sum, 'r', BILO_ALL_AXES, true),
    RED(MEAN, mean, 'r', 1, false), RED(MEAN, mean, 'r', 2, true),
    RED(MEAN, mean, 'r', BILO_ALL_AXES, false),
    RED(MAX, max, 's', 1, false), RED(MAX, max, 's', 0, true), RED(MAX, max, 's', BILO_ALL_AXES, false),
    RED(MIN, min, 's', 2, false), RED(MIN, min, 's', BILO_ALL_AXES, true),
    RED(LOGSUMEXP, logsumexp, 'r', 1, false), RED(LOGSUMEXP, logsumexp, 'r', 0, true),
    RED(LOGSUMEXP, logsumexp, 'r', BILO_ALL_AXES, false),
    RED(NORM, norm, 'r', 2, false), RED(NORM, norm, 'r', 0, true),
    RED(NORM, norm, 'r', BILO_ALL_AXES, false),
    B(DOT, dot, "dot [3,4].[3,4]", 'r', 'r', SH(3, 4), SH(3, 4)),
    {.op = BILO_OP_SOFTMAX, .label = "softmax axis 1", .fn = f_softmax, .n = 1, .in = {T('r', 3, 4)}, .axis = 1},
    {.op = BILO_OP_SOFTMAX, .label = "softmax axis 0 of [2,3,4]", .fn = f_softmax, .n = 1, .in = {T('r', 2, 3, 4)}, .axis = 0},
    {.op = BILO_OP_LOG_SOFTMAX, .label = "log_softmax axis -1", .fn = f_log_softmax, .n = 1, .in = {T('r', 3, 4)}, .axis = -1},
    {.op = BILO_OP_LOG_SOFTMAX, .label = "log_softmax axis 1 of [2,3,4]", .fn = f_log_softmax, .n = 1, .in = {T('r', 2, 3, 4)}, .axis = 1},
    {.op = BILO_OP_SOFTMAX_CROSS_ENTROPY, .label = "softmax_cross_entropy [4,5]", .fn = f_softmax_cross_entropy, .n = 2, .in = {T('r', 4, 5), IDX(5, 4)}},
    {.op = BILO_OP_SOFTMAX_CROSS_ENTROPY, .label = "softmax_cross_entropy [1,1]", .fn = f_softmax_cross_entropy, .n = 2, .in = {T('r', 1, 1), IDX(1, 1)}},
    {.op = BILO_OP_SOFTMAX_CROSS_ENTROPY_BACKWARD, .label = "softmax_cross_entropy_backward [4,5]", .fn = f_softmax_cross_entropy_backward, .n = 3, .in = {T('r', 4, 5), IDX(5, 4), T('r', 4)}},
    {.op = BILO_OP_SOFTMAX_CROSS_ENTROPY_BACKWARD, .label = "softmax_cross_entropy_backward [3,1]", .fn = f_softmax_cross_entropy_backward, .n = 3, .in = {T('r', 3, 1), IDX(1, 3), T('r', 3)}},
    {.op = BILO_OP_SOFTMAX_JVP, .label = "softmax_jvp [4,5]", .fn = f_softmax_jvp, .n = 3, .in = {T('r', 4, 5), T('r', 4, 5), T('r', 4)}},
    {.op = BILO_OP_SOFTMAX_JVP, .label = "softmax_jvp [3,1]", .fn = f_softmax_jvp, .n = 3, .in = {T('r', 3, 1), T('r', 3, 1), T('r', 3)}},

    B(OUTER, outer, "outer [3]x[4]", 'r', 'r', SH(3), SH(4)),
    {.op = BILO_OP_SPMM, .label = "spmm [4,5] sparse x [5,3]", .fn = f_spmm, .n = 2, .in = {T('r', 7), T('r', 5, 3)}},
    {.op = BILO_OP_SPMM, .label = "spmm [4,5] sparse^T x [4,3]", .fn = f_spmm, .n = 2, .in = {T('r', 7), T('r', 4, 3)}, .ta = true},
    {.op = BILO_OP_RESHAPE, .label = "reshape [3,4]->[2,6]", .fn = f_reshape, .n = 1, .in = {T('r', 3, 4)}, .nto = 2, .to = {2, 6}},
    {.op = BILO_OP_RESHAPE, .label = "reshape [3,4]->[-1]", .fn = f_reshape, .n = 1, .in = {T('r', 3, 4)}, .nto = 1, .to = {-1}},
    {.op = BILO_OP_PERMUTE, .label = "permute [2,3,4] (2,0,1)", .fn = f_permute, .n = 1, .in = {T('r', 2, 3, 4)}, .perm = {2, 0, 1}},
    {.op = BILO_OP_PERMUTE, .label = "transpose [2,3,4] (0,2)", .fn = f_transpose, .n = 1, .in = {T('r', 2, 3, 4)}, .perm = {0, 2}},
    {.op = BILO_OP_SLICE, .label = "slice [5,4] axis 0 1:5:2", .fn = f_slice, .n = 1, .in = {T('r', 5, 4)}, .axis = 0, .start = 1, .stop = 5, .step = 2},
    {.op = BILO_OP_SLICE, .label = "slice [5,4] axis 1 0:3:1", .fn = f_slice, .n = 1, .in = {T('r', 5, 4)}, .axis = 1, .start = 0, .stop = 3, .step = 1},
    {.op = BILO_OP_SLICE_SCATTER, .label = "slice_scatter [5,4] <- [2,4] axis 0 1:5:2", .fn = f_slice_scatter, .n = 2,
     .in = {T('r', 5, 4), T('r', 2, 4)}, .axis = 0, .start = 1, .stop = 5, .step = 2},
    {.op = BILO_OP_SLICE_SCATTER, .label = "slice_scatter [3,5] <- [3,2] axis 1 3:5:1", .fn = f_slice_scatter, .n = 2,
     .in = {T('r', 3, 5), T('r', 3, 2)}, .axis = 1, .start = 3, .stop = 5, .step = 1},
    {.op = BILO_OP_CONCAT, .label = "concat [2,3],[1,3],[4,3] axis 0", .fn = f_concat, .n = 3, .in = {T('r', 2, 3), T('r', 1, 3), T('r', 4, 3)}, .axis = 0},
    {.op = BILO_OP_CONCAT, .label = "concat [2,1],[2,3] axis 1", .fn = f_concat, .n = 2, .in = {T('r', 2, 1), T('r', 2, 3)}, .axis = 1},
    {.op = BILO_OP_STACK, .label = "stack [3],[3] axis 0", .fn = f_stack, .n = 2, .in = {T('r', 3), T('r', 3)}, .axis = 0},
    {.op = BILO_OP_STACK, .label = "stack 3x[2,3] axis 1", .fn = f_stack, .n = 3, .in = {T('r', 2, 3), T('r', 2, 3), T('r', 2, 3)}, .axis = 1},
    {.op = BILO_OP_INDEX_SELECT, .label = "index_select [4,3] axis 0 by [5]", .fn = f_index_select, .n = 2, .in = {T('r', 4, 3), IDX(4, 5)}, .axis = 0},
    {.op = BILO_OP_INDEX_SELECT, .label = "index_select [2,4,3] axis 2 by [2]", .fn = f_index_select, .n = 2, .in = {T('r', 2, 4, 3), IDX(3, 2)}, .axis = 2},
    {.op = BILO_OP_INDEX_ADD, .label = "index_add [4,3] axis 0 by [5]", .fn = f_index_add, .n = 3, .in = {T('r', 4, 3), IDX(4, 5), T('r', 5, 3)}, .axis = 0},
    {.op = BILO_OP_INDEX_ADD, .label = "index_add [3,4] axis 1 by [2]", .fn = f_index_add, .n = 3, .in = {T('r', 3, 4), IDX(4, 2), T('r', 3, 2)}, .axis = 1},
    {.op = BILO_OP_GATHER, .label = "gather [4,3] axis 0 by [5,3]", .fn = f_gather, .n = 2, .in = {T('r', 4, 3), IDX(4, 5, 3)}, .axis = 0},
    {.op = BILO_OP_GATHER, .label = "gather [3,4] axis 1 by [3,2]", .fn = f_gather, .n = 2, .in = {T('r', 3, 4), IDX(4, 3, 2)}, .axis = 1},
    {.op = BILO_OP_SCATTER_ADD, .label = "scatter_add [4,3] axis 0 by [5,3]", .fn = f_scatter_add, .n = 3, .in = {T('r', 4, 3), IDX(4, 5, 3), T('r', 5, 3)}, .axis = 0},
    {.op = BILO_OP_SCATTER_ADD, .label = "scatter_add [3,4] axis 1 by [3,2]", .fn = f_scatter_add, .n = 3, .in = {T('r', 3, 4), IDX(4, 3, 2), T('r', 3, 2)}, .axis = 1},
    {.op = BILO_OP_EXPAND, .label = "expand [3,1]->[2,3,4]", .fn = f_expand, .n = 1, .in = {T('r', 3, 1)}, .nto = 3, .to = {2, 3, 4}},
    {.op = BILO_OP_SUM_TO, .label = "sum_to [2,3,4]->[3,1]", .fn = f_sum_to, .n = 1, .in = {T('r', 2, 3, 4)}, .nto = 2, .to = {3, 1}},
    {.op = BILO_OP_SUM_TO, .label = "sum_to [2,3,4]->[4]", .fn = f_sum_to, .n = 1, .in = {T('r', 2, 3, 4)}, .nto = 1, .to = {4}},
    {.op = BILO_OP_CAST, .label = "cast f64->f32->f64", .fn = f_cast, .n = 1, .in = {T('r', 3, 4)}, .eps = 1e-2},
    {.op = BILO_OP_IM2COL, .label = "im2col [2,2,4,5] k 2x3 s 1x1 p 0x0 d 1x1", .fn = f_im2col, .n = 1, .in = {T('r', 2, 2, 4, 5)}, .conv = {2, 3, 1, 1, 0, 0, 1, 1}},
    {.op = BILO_OP_IM2COL, .label = "im2col [1,2,5,4] k 3x2 s 2x1 p 1x2 d 2x1", .fn = f_im2col, .n = 1, .in = {T('r', 1, 2, 5, 4)}, .conv = {3, 2, 2, 1, 1, 2, 2, 1}},
    {.op = BILO_OP_COL2IM, .label = "col2im [2,12,9] -> [2,2,4,5] k 2x3 s 1x1", .fn = f_col2im, .n = 1, .in = {T('r', 2, 12, 9)}, .to = {2, 4, 5}, .conv = {2, 3, 1, 1, 0, 0, 1, 1}},
    {.op = BILO_OP_COL2IM, .label = "col2im [1,12,14] -> [1,2,5,4] k 3x2 s 2x1 p 1x2 d 2x1", .fn = f_col2im, .n = 1, .in = {T('r', 1, 12, 14)}, .to = {2, 5, 4}, .conv = {3, 2, 2, 1, 1, 2, 2, 1}},
    /* grids 0.2k - 1 and 0.2k - 0.9 sum to odd multiples of 0.1: relu stays off its kink */
    B(BIAS_RELU, bias_relu, "bias_relu [3,4] + [4]", 's', 'S', SH(3, 4), SH(4)),
    B(BIAS_TANH, bias_tanh, "bias_tanh [3,4] + [4]", 'r', 'r', SH(3, 4), SH(4)),
    B(BIAS_TANH, bias_tanh, "bias_tanh [2,3,4] + [4]", 'r', 'r', SH(2, 3, 4), SH(4)),
    B(BIAS_SIGMOID, bias_sigmoid, "bias_sigmoid [3,4] + [4]", 'r', 'r', SH(3, 4), SH(4)),
};

/* Matmul in every supported form with each transpose flag: 2-D x 2-D, batched 3-D x 3-D,
   the shared-operand forms 3-D x 2-D and 2-D x 3-D, and matmul_batch_sum of 3-D x 3-D
   (m=3, k=4, n=2, batch 2). */
enum { MATMUL_FORMS = 5 };
static op_case matmul_case(int form, bool ta, bool tb, char *label, size_t label_size)
{
    static const char *forms[MATMUL_FORMS] = {"2-D x 2-D", "3-D x 3-D", "3-D x 2-D", "2-D x 3-D",
                                              "batch_sum 3-D x 3-D"};
    bool batch_a = form == 1 || form == 2 || form == 4, batch_b = form == 1 || form == 3 || form == 4;
    op_case c = {.op = BILO_OP_MATMUL, .label = label, .fn = f_matmul, .n = 2, .ta = ta, .tb = tb};
    if (form == 4) {
        c.op = BILO_OP_MATMUL_BATCH_SUM;
        c.fn = f_matmul_batch_sum;
    }
    int64_t m = 3, k = 4, n = 2;
    input_spec a = {'r', 0, {0}, 0}, b = {'r', 0, {0}, 0};
    if (batch_a) a.shape[a.ndim++] = 2;
    a.shape[a.ndim++] = ta ? k : m;
    a.shape[a.ndim++] = ta ? m : k;
    if (batch_b) b.shape[b.ndim++] = 2;
    b.shape[b.ndim++] = tb ? n : k;
    b.shape[b.ndim++] = tb ? k : n;
    c.in[0] = a;
    c.in[1] = b;
    snprintf(label, label_size, "matmul %s trans_a %d trans_b %d", forms[form], ta, tb);
    return c;
}

/* ---- running the checks ------------------------------------------------------------------ */

static const char *op_names[] = {
#define NAME_(name) #name,
    BILO_OP_TABLE(NAME_)
#undef NAME_
};

static int case_counts[BILO_OP_COUNT];

static void run_case(const op_case *c)
{
    bilo_scope_begin();
    bilo_tensor *in[4];
    for (int i = 0; i < c->n; i++) in[i] = make_input(&c->in[i]);
    bilo_tensor *y = c->fn(in, (void *)c);
    const char *want = bilo__op_rule(c->op)->name;
    const char *got = bilo_grad_fn_name(y);
    tap_ok(got && !strcmp(got, want), "%s: records '%s' (got '%s')", c->label, want,
           got ? got : "nothing");
    bilo_gradcheck_opts opts = {.eps = c->eps, .seed = 7};
    bilo_gradcheck_result r;
    int rc = bilo_gradcheck(c->fn, in, c->n, (void *)c, &opts, &r);
    if (!tap_ok(rc == 0 && r.passed, "gradcheck %s", c->label)) tap_diag("%s", r.message);
    rc = bilo_gradgradcheck(c->fn, in, c->n, (void *)c, &opts, &r);
    if (!tap_ok(rc == 0 && r.passed, "gradgradcheck %s", c->label)) tap_diag("%s", r.message);
    bilo_scope_end();
    case_counts[c->op]++;
}

static bool listed_non_differentiable(bilo_op_id op)
{
    static const bilo_op_id ops[] = {BILO_OP_GT, BILO_OP_GE, BILO_OP_LT, BILO_OP_LE,
                                     BILO_OP_EQ, BILO_OP_ARGMAX, BILO_OP_ONE_HOT, BILO_OP_SIGN};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
        if (ops[i] == op) return true;
    return false;
}

/* Outputs of non-differentiable ops never require grad, even from inputs that do. */
static void test_non_differentiable(void)
{
    bilo_scope_begin();
    bilo_tensor *a = make_input(&(input_spec)T('r', 3, 4));
    bilo_tensor *b = make_input(&(input_spec)T('r', 3, 4));
    bilo_tensor *labels = make_input(&(input_spec)IDX(5, 4));
    struct {
        bilo_op_id op;
        bilo_tensor *y;
    } outs[] = {
        {BILO_OP_GT, bilo_gt(a, b)},           {BILO_OP_GE, bilo_ge(a, b)},
        {BILO_OP_LT, bilo_lt(a, b)},           {BILO_OP_LE, bilo_le(a, b)},
        {BILO_OP_EQ, bilo_eq(a, b)},           {BILO_OP_ARGMAX, bilo_argmax(a, 1, false)},
        {BILO_OP_SIGN, bilo_sign(a)},          {BILO_OP_ONE_HOT, bilo_one_hot(labels, 5, BILO_F64)},
    };
    for (size_t i = 0; i < sizeof outs / sizeof *outs; i++)
        tap_ok(outs[i].y && !bilo_requires_grad(outs[i].y) && !bilo_has_grad_fn(outs[i].y),
               "%s of inputs requiring grad does not require grad", op_names[outs[i].op]);
    bilo_scope_end();
}

static void test_op_table(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(&cases[i]);
    char labels[4 * MATMUL_FORMS][64];
    for (int form = 0, l = 0; form < MATMUL_FORMS; form++)
        for (int t = 0; t < 4; t++, l++) {
            op_case c = matmul_case(form, t & 1, t >> 1, labels[l], sizeof labels[l]);
            run_case(&c);
        }
    for (int op = 0; op < BILO_OP_COUNT; op++) {
        const bilo_op_rule *rule = bilo__op_rule((bilo_op_id)op);
        bool differentiable = rule->backward != NULL;
        tap_ok(rule->name != NULL, "op table has a row for %s", op_names[op]);
        tap_ok(differentiable != listed_non_differentiable((bilo_op_id)op),
               "%s is %s", op_names[op], differentiable ? "differentiable" : "not differentiable");
        if (differentiable)
            tap_ok(case_counts[op] > 0, "%s has gradcheck and gradgradcheck cases (%d)",
                   op_names[op], case_counts[op]);
    }
    test_non_differentiable();
}

/* ---- graph semantics ------------------------------------------------------------------- */

static bilo_tensor *vec(const double *v, int64_t n)
{
    return bilo_from_data(BILO_F64, 1, &n, v);
}

static bilo_tensor *leaf(const double *v, int64_t n)
{
    bilo_tensor *t = vec(v, n);
    bilo_set_requires_grad(t, true);
    return t;
}

static bool all_close(bilo_tensor *t, const double *want, int64_t n, double tol)
{
    if (!t || bilo_numel(t) != n) return false;
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(bilo_get_flat(t, i) - want[i]) <= tol * (1 + fabs(want[i])))) return false;
    return true;
}

static bilo_tensor *f_square_by_mul(bilo_tensor *const *x, void *user)
{
    (void)user;
    return bilo_mul(x[0], x[0]);
}
static bilo_tensor *f_tanh_twice(bilo_tensor *const *x, void *user)
{
    (void)user;
    return bilo_add(bilo_tanh(x[0]), bilo_tanh(x[0]));
}
/* Softmax cross-entropy written from ops, with a shared weight used in two places. */
static bilo_tensor *f_composite(bilo_tensor *const *x, void *user)
{
    (void)user;
    bilo_tensor *h = bilo_tanh(bilo_matmul(x[0], x[1]));
    bilo_tensor *logits = bilo_add(bilo_matmul_t(h, x[1], false, true), x[0]);
    return bilo_mean(bilo_neg(bilo_mul(x[2], bilo_log_softmax(logits, 1))), BILO_ALL_AXES, false);
}

static void test_shared_subgraphs(void)
{
    bilo_scope_begin();
    const double xv[] = {0.3, -1.2, 0.8};
    bilo_tensor *x = leaf(xv, 3);
    bilo_gradcheck_result r;
    const struct {
        const char *label;
        bilo_fnN fn;
    } fns[] = {{"x*x", f_square_by_mul}, {"tanh(x)+tanh(x)", f_tanh_twice}};
    for (int i = 0; i < 2; i++) {
        tap_ok(!bilo_gradcheck(fns[i].fn, &x, 1, NULL, NULL, &r) && r.passed, "gradcheck %s",
               fns[i].label);
        tap_ok(!bilo_gradgradcheck(fns[i].fn, &x, 1, NULL, NULL, &r) && r.passed,
               "gradgradcheck %s", fns[i].label);
    }
    /* d(x*x)/dx = 2x and d(tanh x + tanh x)/dx = 2(1 - tanh^2 x), from the closed forms. */
    bilo_tensor *g = NULL;
    bilo_tensor *y = bilo_sum(f_square_by_mul(&x, NULL), BILO_ALL_AXES, false);
    bilo_grad(&y, 1, NULL, &x, 1, &g, 0);
    double want[3];
    for (int i = 0; i < 3; i++) want[i] = 2 * xv[i];
    tap_ok(all_close(g, want, 3, 1e-14), "grad of sum(x*x) is 2x");
    y = bilo_sum(f_tanh_twice(&x, NULL), BILO_ALL_AXES, false);
    bilo_grad(&y, 1, NULL, &x, 1, &g, 0);
    for (int i = 0; i < 3; i++) want[i] = 2 * (1 - tanh(xv[i]) * tanh(xv[i]));
    tap_ok(all_close(g, want, 3, 1e-14), "grad of sum(tanh x + tanh x) is 2(1 - tanh^2 x)");

    input_spec specs[] = {T('r', 3, 3), T('r', 3, 2), T('m', 3, 3)};
    bilo_tensor *in[3];
    for (int i = 0; i < 3; i++) in[i] = make_input(&specs[i]);
    tap_ok(!bilo_gradcheck(f_composite, in, 3, NULL, NULL, &r) && r.passed,
           "gradcheck composite cross-entropy with a shared weight");
    tap_ok(!bilo_gradgradcheck(f_composite, in, 3, NULL, NULL, &r) && r.passed,
           "gradgradcheck composite cross-entropy with a shared weight");
    bilo_scope_end();
}

/* Ties of max share the gradient equally; maximum sends ties to a. */
static void test_ties(void)
{
    bilo_scope_begin();
    const double xv[] = {1, 3, 3, 2}, bv[] = {3, 1, 3, 0};
    bilo_tensor *x = leaf(xv, 4), *b = leaf(bv, 4), *g[2];
    bilo_tensor *y = bilo_max(x, 0, false);
    bilo_grad(&y, 1, NULL, &x, 1, g, 0);
    tap_ok(all_close(g[0], (double[]){0, 0.5, 0.5, 0}, 4, 0), "max: two tied maxima get 1/2 each");
    bilo_tensor *in[2] = {x, b};
    y = bilo_sum(bilo_maximum(x, b), BILO_ALL_AXES, false);
    bilo_grad(&y, 1, NULL, in, 2, g, 0);
    tap_ok(all_close(g[0], (double[]){0, 1, 1, 1}, 4, 0) &&
               all_close(g[1], (double[]){1, 0, 0, 0}, 4, 0),
           "maximum: the tie at element 2 goes to a");
    bilo_scope_end();
}

/* Gradients with respect to intermediate tensors, and leaves together with them. */
static void test_intermediate_inputs(void)
{
    bilo_scope_begin();
    const double xv[] = {0.5, -0.25, 1.5};
    bilo_tensor *x = leaf(xv, 3);
    bilo_tensor *t = bilo_tanh(x);
    bilo_tensor *z = bilo_sum(bilo_mul(t, t), BILO_ALL_AXES, false);
    bilo_tensor *wrt[2] = {t, x}, *g[2];
    int rc = bilo_grad(&z, 1, NULL, wrt, 2, g, BILO_RETAIN_GRAPH);
    double gt[3], gx[3];
    for (int i = 0; i < 3; i++) {
        double th = tanh(xv[i]);
        gt[i] = 2 * th;
        gx[i] = 2 * th * (1 - th * th);
    }
    tap_ok(rc == 0 && all_close(g[0], gt, 3, 1e-14), "grad w.r.t. intermediate tanh(x) is 2 tanh(x)");
    tap_ok(rc == 0 && all_close(g[1], gx, 3, 1e-14), "grad w.r.t. x in the same call");
    tap_ok(!bilo_requires_grad(g[0]) && bilo_dtype_of(g[1]) == BILO_F64 && bilo_ndim(g[1]) == 1,
           "without CREATE_GRAPH results are plain f64 tensors of the input's shape");

    /* the same input twice: two results with equal values */
    bilo_tensor *twice[2] = {x, x};
    rc = bilo_grad(&z, 1, NULL, twice, 2, g, BILO_RETAIN_GRAPH);
    tap_ok(rc == 0 && g[0] != g[1] && all_close(g[0], gx, 3, 1e-14) && all_close(g[1], gx, 3, 1e-14),
           "an input listed twice gets two equal gradients");
    /* several outputs with cotangents: grad of <u, tanh x> + sum(x) */
    bilo_tensor *u = vec((double[]){1, 2, 3}, 3);
    bilo_tensor *outs[2] = {t, bilo_sum(x, BILO_ALL_AXES, false)}, *cots[2] = {u, NULL};
    rc = bilo_grad(outs, 2, cots, &x, 1, g, 0);
    for (int i = 0; i < 3; i++) gx[i] = (i + 1) * (1 - tanh(xv[i]) * tanh(xv[i])) + 1;
    tap_ok(rc == 0 && all_close(g[0], gx, 3, 1e-14), "two outputs, one cotangent and one default");

    /* The walk skips nodes older (lower topo) than every requested input; a deep branch that
       does not depend on the input, and one that does through a newer node, must still count:
       z = Σ s·(e + t) with s = sin(cos(x)) (deep), e = exp(x) (shallow), t = tanh(s). */
    bilo_tensor *s = bilo_sin(bilo_cos(x)), *e = bilo_exp(x), *ts = bilo_tanh(s);
    bilo_tensor *z2 = bilo_sum(bilo_mul(s, bilo_add(e, ts)), BILO_ALL_AXES, false);
    double gs[3];
    for (int i = 0; i < 3; i++) {
        double sv = sin(cos(xv[i])), th = tanh(sv);
        gs[i] = exp(xv[i]) + th + sv * (1 - th * th);
    }
    rc = bilo_grad(&z2, 1, NULL, &s, 1, g, BILO_RETAIN_GRAPH);
    tap_ok(rc == 0 && all_close(g[0], gs, 3, 1e-14),
           "grad w.r.t. a deep intermediate sums its direct and newer paths, not older branches");
    bilo_tensor *both[2] = {e, s};
    rc = bilo_grad(&z2, 1, NULL, both, 2, g, 0);
    double ge[3];
    for (int i = 0; i < 3; i++) ge[i] = sin(cos(xv[i]));
    tap_ok(rc == 0 && all_close(g[0], ge, 3, 1e-14) && all_close(g[1], gs, 3, 1e-14),
           "a shallow and a deep intermediate in one call");
    bilo_scope_end();
}

static void test_grad_mode_and_leaves(void)
{
    bilo_scope_begin();
    bilo_tensor *x = leaf((double[]){1, 2}, 2);
    tap_ok(bilo_requires_grad(x) && !bilo_has_grad_fn(x) && !bilo_grad_fn_name(x),
           "a marked leaf requires grad and has no grad_fn");
    bilo_tensor *y = bilo_exp(x);
    tap_ok(bilo_has_grad_fn(y) && !strcmp(bilo_grad_fn_name(y), "exp"), "exp(x) records 'exp'");
    bilo_tensor *d = bilo_detach(y);
    tap_ok(!bilo_requires_grad(d) && !bilo_has_grad_fn(d) && bilo_data(d) == bilo_data(y),
           "detach shares data and is cut from the graph");
    bool was = bilo_set_grad_enabled(false);
    tap_ok(was && !bilo_grad_enabled() && !bilo_requires_grad(bilo_exp(x)),
           "grad disabled: ops do not record");
    bilo_set_grad_enabled(true);
    bilo_no_grad_begin();
    bilo_no_grad_begin();
    bilo_no_grad_end();
    bool inner = bilo_grad_enabled();
    bilo_no_grad_end();
    tap_ok(!inner && bilo_grad_enabled() && bilo_requires_grad(bilo_exp(x)),
           "no_grad regions nest, and recording resumes after the last end");
    bilo_tensor *idx = bilo_zeros(BILO_I64, BILO_SHAPE(2));
    tap_ok(bilo_set_requires_grad(idx, true) == BILO_EDTYPE, "an i64 tensor cannot require grad");
    tap_ok(bilo_set_requires_grad(y, false) == BILO_EINVAL && contains(bilo_last_error(), "not a leaf"),
           "a non-leaf cannot stop requiring grad: %s", bilo_last_error());
    bilo_scope_end();
}

/* bilo_backward accumulates into .grad across calls; zero_grad clears it. */
static void test_backward_accumulation(void)
{
    const double xv[] = {0.5, -2, 3};
    bilo_tensor *x = leaf(xv, 3), *w = leaf((double[]){2}, 1);
    double g1[3], gw;
    for (int i = 0; i < 3; i++) g1[i] = 2 * xv[i] * 2; /* d/dx sum(w x^2) with w = 2 */
    gw = xv[0] * xv[0] + xv[1] * xv[1] + xv[2] * xv[2];
    for (int call = 1; call <= 2; call++) {
        bilo_scope_begin();
        bilo_tensor *loss = bilo_sum(bilo_mul(w, bilo_square(x)), BILO_ALL_AXES, false);
        int rc = bilo_backward(loss, 0);
        bilo_scope_end();
        double want[3] = {call * g1[0], call * g1[1], call * g1[2]}, want_w = call * gw;
        tap_ok(rc == 0 && all_close(bilo_grad_of(x), want, 3, 1e-14) &&
                   all_close(bilo_grad_of(w), &want_w, 1, 1e-14),
               "backward call %d: .grad holds %d times the gradient", call, call);
    }
    bilo_zero_grad(x);
    tap_ok(bilo_grad_of(x) == NULL && bilo_grad_of(w) != NULL, "zero_grad clears one leaf's .grad");
    bilo_scope_begin();
    bilo_tensor *loss = bilo_sum(bilo_add(x, x), BILO_ALL_AXES, false);
    tap_ok(bilo_backward(loss, 0) == 0 && all_close(bilo_grad_of(x), (double[]){2, 2, 2}, 3, 0),
           "after zero_grad the next backward starts from zero (x + x gives 2)");
    bilo_tensor *v = bilo_mul_scalar(x, 3);
    tap_ok(bilo_backward(v, 0) == BILO_ESHAPE, "backward of a non-scalar is refused");
    bilo_tensor *s = leaf((double[]){4}, 1), *gs = NULL;
    tap_ok(bilo_backward(s, 0) == 0 && bilo_item(bilo_grad_of(s)) == 1.0,
           "backward of a leaf: d s / d s = 1");
    tap_ok(bilo_grad(&s, 1, NULL, &s, 1, &gs, 0) == 0 && bilo_item(gs) == 1.0,
           "grad of a leaf with respect to itself is 1");
    /* with CREATE_GRAPH .grad = 3 x^2 is itself differentiable: d sum(.grad) / dx = 6 x */
    bilo_zero_grad(x);
    bilo_tensor *cube = bilo_sum(bilo_pow_scalar(x, 3), BILO_ALL_AXES, false), *g2 = NULL;
    int rc = bilo_backward(cube, BILO_CREATE_GRAPH);
    bilo_tensor *total = bilo_sum(bilo_grad_of(x), BILO_ALL_AXES, false);
    rc |= bilo_grad(&total, 1, NULL, &x, 1, &g2, 0);
    double six_x[3] = {6 * xv[0], 6 * xv[1], 6 * xv[2]};
    tap_ok(rc == 0 && bilo_requires_grad(bilo_grad_of(x)) && all_close(g2, six_x, 3, 1e-14),
           "backward with CREATE_GRAPH leaves a differentiable .grad");
    bilo_scope_end();
    /* A .grad built with CREATE_GRAPH refers to x through its graph (a cycle, as in PyTorch):
       zero_grad breaks it. Otherwise releasing x releases its .grad with it. */
    bilo_zero_grad(x);
    bilo_release(x);
    bilo_release(w);
}

/* ---- errors -------------------------------------------------------------------------------- */

static void test_errors(void)
{
    bilo_scope_begin();
    bilo_tensor *x = leaf((double[]){0.5, 1.5, -1}, 3), *unused = leaf((double[]){1}, 1);
    bilo_tensor *g[2] = {NULL, NULL};
    bilo_tensor *y = bilo_mul_scalar(x, 2);

    int rc = bilo_grad(&y, 1, NULL, &x, 1, g, 0);
    tap_ok(rc == BILO_ESHAPE && contains(bilo_last_error(), "bilo_grad") &&
               contains(bilo_last_error(), "[3]") && contains(bilo_last_error(), "cotangent"),
           "non-scalar output without cotangent: %s", bilo_last_error());

    bilo_tensor *bad = bilo_ones(BILO_F64, BILO_SHAPE(4));
    rc = bilo_grad(&y, 1, &bad, &x, 1, g, 0);
    tap_ok(rc == BILO_ESHAPE && contains(bilo_last_error(), "[4]") && contains(bilo_last_error(), "[3]"),
           "cotangent shape mismatch: %s", bilo_last_error());
    bilo_tensor *bad_dtype = bilo_ones(BILO_F32, BILO_SHAPE(3));
    rc = bilo_grad(&y, 1, &bad_dtype, &x, 1, g, 0);
    tap_ok(rc == BILO_EDTYPE && contains(bilo_last_error(), "f32"), "cotangent dtype mismatch: %s",
           bilo_last_error());

    bilo_tensor *s = bilo_sum(y, BILO_ALL_AXES, false), *both[2] = {x, unused};
    rc = bilo_grad(&s, 1, NULL, both, 2, g, BILO_RETAIN_GRAPH);
    tap_ok(rc == BILO_EGRAPH && contains(bilo_last_error(), "inputs[1]") &&
               contains(bilo_last_error(), "BILO_ALLOW_UNUSED") && !g[0] && !g[1],
           "unused input without ALLOW_UNUSED: %s", bilo_last_error());
    rc = bilo_grad(&s, 1, NULL, both, 2, g, BILO_RETAIN_GRAPH | BILO_ALLOW_UNUSED);
    tap_ok(rc == 0 && g[1] == NULL && all_close(g[0], (double[]){2, 2, 2}, 3, 0),
           "unused input with ALLOW_UNUSED gets NULL, the other its gradient");

    bilo_tensor *constant = bilo_ones(BILO_F64, BILO_SHAPE(3));
    rc = bilo_grad(&s, 1, NULL, &constant, 1, g, 0);
    tap_ok(rc == BILO_EINVAL && contains(bilo_last_error(), "does not require grad"),
           "input not requiring grad: %s", bilo_last_error());
    tap_ok(bilo_grad(NULL, 1, NULL, &x, 1, g, 0) == BILO_EINVAL &&
               bilo_grad(&s, 1, NULL, NULL, 1, g, 0) == BILO_EINVAL &&
               bilo_grad(&s, 1, NULL, &x, 1, NULL, 0) == BILO_EINVAL,
           "NULL arrays are refused");
    bilo_tensor *failed = bilo_add(x, bilo_ones(BILO_F64, BILO_SHAPE(2)));
    rc = bilo_grad(&failed, 1, NULL, &x, 1, g, 0);
    tap_ok(!failed && rc == BILO_ESHAPE && contains(bilo_last_error(), "bilo_add"),
           "a NULL output from a failed op keeps the first error: %s", bilo_last_error());

    /* freed graph, then a retained one */
    bilo_tensor *t = bilo_sum(bilo_tanh(x), BILO_ALL_AXES, false);
    tap_ok(bilo_grad(&t, 1, NULL, &x, 1, g, 0) == 0, "first backward without RETAIN_GRAPH");
    rc = bilo_grad(&t, 1, NULL, &x, 1, g, 0);
    tap_ok(rc == BILO_EGRAPH && contains(bilo_last_error(), "BILO_RETAIN_GRAPH") &&
               contains(bilo_last_error(), "freed"),
           "second backward through a freed graph: %s", bilo_last_error());
    t = bilo_sum(bilo_tanh(x), BILO_ALL_AXES, false);
    rc = bilo_grad(&t, 1, NULL, &x, 1, g, BILO_RETAIN_GRAPH);
    bilo_tensor *first = g[0];
    rc |= bilo_grad(&t, 1, NULL, &x, 1, g, 0);
    tap_ok(rc == 0 && all_close(g[0], bilo_data(first), 3, 0), "with RETAIN_GRAPH a second backward works");

    /* in-place writes to saved tensors */
    bilo_tensor *w = leaf((double[]){1, 2, 3}, 3);
    bilo_tensor *p = bilo_sum(bilo_mul(x, w), BILO_ALL_AXES, false);
    bilo_scale_(w, 2.0);
    rc = bilo_grad(&p, 1, NULL, &x, 1, g, 0);
    tap_ok(rc == BILO_EGRAPH && contains(bilo_last_error(), "modified in place") &&
               contains(bilo_last_error(), "mul") && contains(bilo_last_error(), "version 0 → 1"),
           "in-place write to a saved input: %s", bilo_last_error());
    bilo_tensor *e = bilo_exp(x), *ones = bilo_ones_like(x);
    bilo_fill_(e, 0.0);
    rc = bilo_grad(&e, 1, &ones, &x, 1, g, 0);
    tap_ok(rc == BILO_EGRAPH && contains(bilo_last_error(), "output of 'exp'"),
           "in-place write to a saved output: %s", bilo_last_error());
    bilo_scope_end();
}

/* ---- a long chain -------------------------------------------------------------------------- */

/* 1e5 steps x <- 0.999999 x + 1e-3 (2e5 nodes), built outside any scope so that releasing the
   end frees the whole chain in one cascade: no recursion may overflow the stack. */
static void test_long_chain(void)
{
    bilo_mem_stats before, after;
    bilo_mem_get_stats(&before);
    bilo_tensor *x = leaf((double[]){0.5}, 1);
    bilo_tensor *y = bilo_retain(x);
    const int steps = 100000;
    for (int i = 0; i < steps; i++) {
        bilo_tensor *scaled = bilo_mul_scalar(y, 0.999999);
        bilo_release(y);
        y = bilo_add_scalar(scaled, 1e-3);
        bilo_release(scaled);
    }
    bilo_tensor *g = NULL;
    int rc = bilo_grad(&y, 1, NULL, &x, 1, &g, BILO_RETAIN_GRAPH);
    double want = pow(0.999999, steps);
    tap_ok(rc == 0 && g && fabs(bilo_item(g) - want) < 1e-12, "1e5-step chain: dy/dx = 0.999999^1e5 = %.12f (got %.12f)",
           want, g ? bilo_item(g) : NAN);
    bilo_release(g);
    rc = bilo_backward(y, 0);
    tap_ok(rc == 0 && fabs(bilo_item(bilo_grad_of(x)) - want) < 1e-12, "bilo_backward through the chain");
    bilo_release(y);
    bilo_release(x);
    bilo_mem_get_stats(&after);
    tap_ok(after.live_bytes == before.live_bytes,
           "the chain frees completely (live bytes %zu before, %zu after)", before.live_bytes,
           after.live_bytes);
}

/* ---- shape-only inputs share their data-less stand-ins along a chain ------------------------ */

/* tanh(0.5 x + 0.25) twice: every op saves a shape-only stand-in of its input. */
static bilo_tensor *f_affine_tanh_chain(bilo_tensor *const *x, void *user)
{
    (void)user;
    bilo_tensor *y = x[0];
    for (int i = 0; i < 2; i++) y = bilo_tanh(bilo_add_scalar(bilo_mul_scalar(y, 0.5), 0.25));
    return y;
}

static void test_shared_stand_ins(void)
{
    bilo_tensor *x = leaf((double[]){0.4, -1.3, 2.0}, 3);
    check_derivatives("chain of shape-only ops", f_affine_tanh_chain, &x, 1, NULL);

    /* A producer whose saved tensors a backward released has no stand-in left to share: the
       next op makes its own and differentiates back to the producer's output. */
    bilo_mem_stats before, after;
    bilo_mem_get_stats(&before);
    bilo_tensor *y1 = bilo_add_scalar(x, 1.0);
    bilo_tensor *s1 = bilo_sum(y1, BILO_ALL_AXES, false);
    tap_ok(bilo_backward(s1, 0) == 0, "backward frees the add_scalar node's saved tensors");
    bilo_tensor *y2 = bilo_mul_scalar(y1, 3.0);
    bilo_tensor *s2 = bilo_sum(y2, BILO_ALL_AXES, false), *g = NULL;
    int rc = bilo_grad(&s2, 1, NULL, &y1, 1, &g, 0);
    tap_ok(rc == 0 && all_close(g, (double[]){3, 3, 3}, 3, 0),
           "an op recorded after its producer was freed: d sum(3 y1) / d y1 = 3");
    bilo_release(g);
    check_error(bilo_grad(&s2, 1, NULL, &x, 1, &g, 0) != 0, BILO_EGRAPH, "freed",
                "differentiating through the freed producer still fails");
    bilo_release(s2);
    bilo_release(y2);
    bilo_release(s1);
    bilo_release(y1);
    bilo_zero_grad(x);
    bilo_mem_get_stats(&after);
    tap_ok(after.live_bytes == before.live_bytes, "shared stand-ins are all freed (live %zu -> %zu)",
           before.live_bytes, after.live_bytes);
    bilo_release(x);
}

/* ---- memory over many double-backprop iterations ------------------------------------------ */

static void test_memory_loop(void)
{
    bilo_tensor *W = bilo_randn(BILO_F64, BILO_SHAPE(4, 4), &rng);
    bilo_tensor *x = bilo_randn(BILO_F64, BILO_SHAPE(4, 1), &rng);
    bilo_tensor *v = bilo_randn(BILO_F64, BILO_SHAPE(4, 1), &rng);
    bilo_set_requires_grad(x, true);
    bilo_mem_stats before, after;
    bilo_mem_get_stats(&before);
    int failures = 0;
    for (int it = 0; it < 10000; it++) {
        bilo_scope_begin();
        bilo_tensor *loss = bilo_sum(bilo_square(bilo_tanh(bilo_matmul(W, x))), BILO_ALL_AXES, false);
        bilo_tensor *g = NULL, *hv = NULL;
        failures += bilo_grad(&loss, 1, NULL, &x, 1, &g, BILO_CREATE_GRAPH) != 0;
        failures += bilo_hvp(loss, &x, 1, &v, &hv, 0) != 0;
        bilo_scope_end();
    }
    bilo_mem_get_stats(&after);
    tap_ok(failures == 0 && after.live_bytes == before.live_bytes,
           "1e4 x (loss, grad with CREATE_GRAPH, hvp) in a scope: live bytes %zu -> %zu",
           before.live_bytes, after.live_bytes);
    bilo_release(W);
    bilo_release(x);
    bilo_release(v);
}

/* The gradient of a weight shared across a batched product (W·X_i, as a convolution's im2col
   product) sums over the batch without materializing the per-entry products [batch, O, K]:
   the backward's peak stays below the size of that stack. */
static void test_shared_weight_gradient_memory(void)
{
    const int64_t batch = 64, o = 16, k = 32, p = 8;
    bilo_scope_begin();
    bilo_tensor *W = bilo_randn(BILO_F64, BILO_SHAPE(o, k), &rng);
    bilo_tensor *X = bilo_randn(BILO_F64, BILO_SHAPE(batch, k, p), &rng);
    bilo_set_requires_grad(W, true);
    bilo_tensor *y = bilo_matmul(W, X), *g = NULL;
    bilo_tensor *cot = bilo_ones(BILO_F64, BILO_SHAPE(batch, o, p));
    bilo_mem_stats before, after;
    bilo_mem_reset_peak();
    bilo_mem_get_stats(&before);
    const int rc = bilo_grad(&y, 1, &cot, &W, 1, &g, 0);
    bilo_mem_get_stats(&after);
    const double stack = (double)(batch * o * k) * sizeof(double);
    const double peak = (double)after.peak_bytes - (double)before.live_bytes;
    tap_ok(rc == 0 && peak < stack / 4,
           "shared-weight gradient: backward peak %.0f bytes, under a quarter of the [64,16,32] "
           "stack of per-entry products (%.0f)", peak, stack);
    /* dW = Σ_i 1·X_iᵀ: each entry (j, q) is the sum of X[i][q][:] over i, the same for every j */
    double worst = 0;
    for (int64_t q = 0; rc == 0 && q < k; q++) {
        double want = 0;
        for (int64_t i = 0; i < batch; i++)
            for (int64_t c = 0; c < p; c++) want += bilo_get_flat(X, (i * k + q) * p + c);
        for (int64_t j = 0; j < o; j++)
            worst = fmax(worst, fabs(bilo_get_flat(g, j * k + q) - want));
    }
    tap_ok(rc == 0 && worst < 1e-12, "shared-weight gradient equals the summed reference (max error %g)",
           worst);
    bilo_scope_end();
}

/* ---- gradcheck itself ---------------------------------------------------------------------- */

/* x * detach(x): autograd sees x, the truth is 2x; gradcheck must catch it. */
static bilo_tensor *f_wrong(bilo_tensor *const *x, void *user)
{
    (void)user;
    return bilo_mul(x[0], bilo_detach(x[0]));
}

static void test_gradcheck_itself(void)
{
    bilo_scope_begin();
    bilo_tensor *x = leaf((double[]){0.5, -1.5, 1.0}, 3);
    bilo_gradcheck_result r;
    int rc = bilo_gradcheck(f_wrong, &x, 1, NULL, NULL, &r);
    tap_ok(rc == 0 && !r.passed, "gradcheck rejects a wrong gradient: %s", r.message);
    tap_ok(r.input == 0 && r.element == 1 && r.output_element == 1, "worst element is input 0 element 1 (output 1)");
    tap_close(r.analytic, -1.5, 1e-12, 0, "analytic value at the worst element is x = -1.5");
    tap_close(r.numeric, -3.0, 1e-7, 0, "numeric value at the worst element is 2x = -3");
    tap_close(r.max_abs_err, 1.5, 1e-7, 0, "max |analytic - numeric| is 1.5");
    bilo_gradcheck_opts fast = {.fast = true, .seed = 3};
    tap_ok(bilo_gradcheck(f_wrong, &x, 1, NULL, &fast, &r) == 0 && !r.passed && r.input == -1,
           "fast mode rejects it too: %s", r.message);
    tap_ok(bilo_gradcheck(f_tanh_twice, &x, 1, NULL, &fast, &r) == 0 && r.passed,
           "fast mode accepts a right gradient: %s", r.message);
    tap_ok(bilo_gradgradcheck(f_tanh_twice, &x, 1, NULL, &fast, &r) == 0 && r.passed,
           "fast gradgradcheck accepts tanh(x)+tanh(x): %s", r.message);
    bilo_tensor *x32 = bilo_ones(BILO_F32, BILO_SHAPE(2));
    bilo_set_requires_grad(x32, true);
    tap_ok(bilo_gradcheck(f_tanh_twice, &x32, 1, NULL, NULL, &r) == BILO_EDTYPE && !r.passed &&
               contains(r.message, "f64"),
           "f32 inputs are refused: %s", r.message);
    bilo_tensor *c = bilo_ones(BILO_F64, BILO_SHAPE(2));
    tap_ok(bilo_gradcheck(f_tanh_twice, &c, 1, NULL, NULL, &r) == BILO_EINVAL,
           "no input requiring grad is refused: %s", r.message);
    bilo_scope_end();
}

/* ---- two threads sharing leaves ------------------------------------------------------------- */

static void test_threads(void)
{
    bilo_tensor *w = leaf((double[]){0.3, -0.7, 1.1}, 3);
    int ok[2] = {0, 0};
#pragma omp parallel num_threads(2)
    {
#ifdef _OPENMP
        int id = omp_get_thread_num();
#else
        int id = 0;
#endif
        for (int it = 0; it < 200 && id < 2; it++) {
            bilo_scope_begin();
            double c = id + 1.0;
            bilo_tensor *loss = bilo_sum(bilo_mul_scalar(bilo_square(w), c), BILO_ALL_AXES, false);
            bilo_tensor *g = NULL;
            int rc = bilo_grad(&loss, 1, NULL, &w, 1, &g, 0);
            double want[3] = {2 * c * 0.3, 2 * c * -0.7, 2 * c * 1.1};
            ok[id] += rc == 0 && all_close(g, want, 3, 1e-14);
            bilo_scope_end();
        }
    }
    tap_ok(ok[0] == 200 && (ok[1] == 200 || ok[1] == 0),
           "threads differentiating graphs that share a leaf (%d, %d of 200)", ok[0], ok[1]);
    bilo_release(w);
}

int main(void)
{
    rng = bilo_rng_make(2024, 0);
    test_op_table();
    test_shared_subgraphs();
    test_ties();
    test_intermediate_inputs();
    test_grad_mode_and_leaves();
    test_backward_accumulation();
    test_errors();
    test_long_chain();
    test_shared_stand_ins();
    test_memory_loop();
    test_shared_weight_gradient_memory();
    test_gradcheck_itself();
    test_threads();
    bilo_mem_stats stats;
    bilo_mem_get_stats(&stats);
    tap_ok(stats.live_bytes == 0, "every tensor and node was freed (live bytes %zu)", stats.live_bytes);
    return tap_done();
}
