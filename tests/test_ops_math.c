/* Math ops (tensor/ops_elementwise.c, ops_reduce.c, ops_linalg.c) against references computed
   here: hand-worked small cases and f64 loops over libm. Every op runs in f32 and f64; big
   shapes take the threaded paths and must give the same bits at 1 and 2 threads. */
#include "tap.h"
#include "tensor_impl.h"

#include <stdarg.h>
#include <string.h>

static const bilo_dtype dtypes[2] = {BILO_F32, BILO_F64};

/* Relative tolerance for results that involve rounding in the tensor's dtype. */
static double tol_for(bilo_dtype dt) { return dt == BILO_F32 ? 2e-6 : 1e-13; }

/* Deterministic test values in [-1, 1). */
static double pattern(int64_t i, int seed)
{
    double v = sin((double)i * 12.9898 + seed * 78.233) * 43758.5453;
    return 2.0 * (v - floor(v)) - 1.0;
}

static bilo_tensor *tensor_of(bilo_dtype dt, int ndim, const int64_t *shape, const double *v)
{
    bilo_tensor *t = bilo_empty(dt, ndim, shape);
    for (int64_t i = 0; i < bilo_numel(t); i++) bilo_set_flat(t, i, v[i]);
    return t;
}

/* A tensor of pattern values scaled by `scale`. */
static bilo_tensor *patterned(bilo_dtype dt, int ndim, const int64_t *shape, int seed,
                              double scale)
{
    bilo_tensor *t = bilo_empty(dt, ndim, shape);
    for (int64_t i = 0; i < bilo_numel(t); i++) bilo_set_flat(t, i, scale * pattern(i, seed));
    return t;
}

static bool close_enough(double got, double want, double tol)
{
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= tol * (1.0 + fabs(want));
}

/* One TAP line: t holds n values close to want. */
static int check_values(const bilo_tensor *t, const double *want, int64_t n, double tol,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int check_values(const bilo_tensor *t, const double *want, int64_t n, double tol,
                        const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (!t || bilo_numel(t) != n) {
        tap_ok(0, "%s", name);
        tap_diag("got %s with %lld elements, want %lld (%s)", t ? "a tensor" : "NULL",
                 (long long)bilo_numel(t), (long long)n, bilo_last_error());
        return 0;
    }
    for (int64_t i = 0; i < n; i++) {
        double got = bilo_get_flat(t, i);
        if (!close_enough(got, want[i], tol)) {
            tap_ok(0, "%s", name);
            tap_diag("element %lld: got %.17g, want %.17g", (long long)i, got, want[i]);
            return 0;
        }
    }
    return tap_ok(1, "%s", name);
}

static bool has_shape(const bilo_tensor *t, int ndim, const int64_t *shape)
{
    if (!t || bilo_ndim(t) != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (bilo_shape(t)[d] != shape[d]) return false;
    return true;
}

static bool bitwise_equal(bilo_tensor *a, bilo_tensor *b)
{
    return a && b && bilo_numel(a) == bilo_numel(b) && bilo_dtype_of(a) == bilo_dtype_of(b) &&
           !memcmp(bilo_data(a), bilo_data(b),
                   (size_t)bilo_numel(a) * bilo_dtype_size(bilo_dtype_of(a)));
}

/* Evaluate expr at 1 and at 2 kernel threads and compare the bits. */
#define CHECK_THREADS(expr, ...)                                        \
    do {                                                                \
        bilo_set_num_threads(1);                                        \
        bilo_tensor *one_ = (expr);                                     \
        bilo_set_num_threads(2);                                        \
        bilo_tensor *two_ = (expr);                                     \
        bilo_set_num_threads(0);                                        \
        tap_ok(bitwise_equal(one_, two_), __VA_ARGS__);                 \
    } while (0)

/* NULL result and a message naming op. */
static void check_error(const bilo_tensor *t, const char *op, const char *what)
{
    const char *msg = bilo_last_error();
    tap_ok(!t && bilo_errcode() < 0 && strstr(msg, op) != NULL, "%s: %s fails naming the op", op,
           what);
    if (t || !strstr(msg, op)) tap_diag("message: %s", msg);
}

static double *values_of(const bilo_tensor *t)
{
    int64_t n = bilo_numel(t);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = bilo_get_flat(t, i);
    return v;
}

/* ==== unary ============================================================================ */

static double r_neg(double x) { return -x; }
static double r_recip(double x) { return 1.0 / x; }
static double r_rsqrt(double x) { return 1.0 / sqrt(x); }
static double r_square(double x) { return x * x; }
static double r_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static double r_relu(double x) { return x > 0 ? x : 0.0; }
static double r_softplus(double x) { return log1p(exp(x)); }
static double r_sign(double x) { return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0; }

typedef struct {
    const char *name;
    bilo_tensor *(*fn)(bilo_tensor *);
    double (*ref)(double);
    bool positive; /* domain x > 0 */
} unary_case;

static const unary_case unary_cases[] = {
    {"neg", bilo_neg, r_neg, false},          {"abs", bilo_abs, fabs, false},
    {"exp", bilo_exp, exp, false},            {"log", bilo_log, log, true},
    {"log1p", bilo_log1p, log1p, false},      {"expm1", bilo_expm1, expm1, false},
    {"sqrt", bilo_sqrt, sqrt, true},          {"rsqrt", bilo_rsqrt, r_rsqrt, true},
    {"square", bilo_square, r_square, false}, {"reciprocal", bilo_reciprocal, r_recip, false},
    {"sin", bilo_sin, sin, false},            {"cos", bilo_cos, cos, false},
    {"tanh", bilo_tanh, tanh, false},         {"sigmoid", bilo_sigmoid, r_sigmoid, false},
    {"relu", bilo_relu, r_relu, false},       {"softplus", bilo_softplus, r_softplus, false},
    {"erf", bilo_erf, erf, false},            {"sign", bilo_sign, r_sign, false},
};

/* Inputs avoid 0 (reciprocal) and stay above -1 (log1p). */
static const double unary_inputs[] = {-0.93, -0.61, -0.2, -0.013, 0.0071, 0.35, 0.5,
                                      0.99,  1.7,   2.45, 3.1,    -0.75,  4.2};
#define N_UNARY_INPUTS ((int64_t)(sizeof unary_inputs / sizeof unary_inputs[0]))

static void test_unary(void)
{
    bilo_scope_begin();
    for (int di = 0; di < 2; di++) {
        bilo_dtype dt = dtypes[di];
        for (size_t c = 0; c < sizeof unary_cases / sizeof unary_cases[0]; c++) {
            const unary_case *uc = &unary_cases[c];
            double in[N_UNARY_INPUTS], want[N_UNARY_INPUTS];
            for (int64_t i = 0; i < N_UNARY_INPUTS; i++)
                in[i] = uc->positive ? fabs(unary_inputs[i]) : unary_inputs[i];
            bilo_tensor *x = tensor_of(dt, 1, (int64_t[]){N_UNARY_INPUTS}, in);
            for (int64_t i = 0; i < N_UNARY_INPUTS; i++) want[i] = uc->ref(bilo_get_flat(x, i));
            bilo_tensor *y = uc->fn(x);
            check_values(y, want, N_UNARY_INPUTS, 4 * tol_for(dt), "%s %s values", uc->name,
                         bilo_dtype_name(dt));
            tap_ok(has_shape(y, 1, (int64_t[]){N_UNARY_INPUTS}) && bilo_dtype_of(y) == dt,
                   "%s %s keeps shape and dtype", uc->name, bilo_dtype_name(dt));
        }
        /* Scalar forms, on a 2-D tensor. */
        bilo_tensor *x = tensor_of(dt, 2, (int64_t[]){2, 3},
                                   (double[]){0.5, 1.25, 2.0, 3.0, 0.75, 4.0});
        check_values(bilo_pow_scalar(x, 2.5), (double[]){pow(0.5, 2.5), pow(1.25, 2.5),
                                                         pow(2.0, 2.5), pow(3.0, 2.5),
                                                         pow(0.75, 2.5), 32.0},
                     6, 4 * tol_for(dt), "pow_scalar %s", bilo_dtype_name(dt));
        check_values(bilo_pow_scalar(x, -1.0), (double[]){2.0, 0.8, 0.5, 1.0 / 3.0, 4.0 / 3.0, 0.25},
                     6, 4 * tol_for(dt), "pow_scalar -1 %s", bilo_dtype_name(dt));
        check_values(bilo_add_scalar(x, 1.5), (double[]){2.0, 2.75, 3.5, 4.5, 2.25, 5.5}, 6, 0,
                     "add_scalar %s", bilo_dtype_name(dt));
        check_values(bilo_mul_scalar(x, -2.0), (double[]){-1.0, -2.5, -4.0, -6.0, -1.5, -8.0}, 6,
                     0, "mul_scalar %s", bilo_dtype_name(dt));
        check_values(bilo_rsub_scalar(x, 1.0), (double[]){0.5, -0.25, -1.0, -2.0, 0.25, -3.0}, 6,
                     0, "rsub_scalar %s", bilo_dtype_name(dt));
        /* Edge values. */
        bilo_tensor *e = tensor_of(dt, 1, (int64_t[]){5}, (double[]){-800, -2.0, 0.0, 3.0, 800});
        check_values(bilo_sign(e), (double[]){-1, -1, 0, 1, 1}, 5, 0, "sign %s with zero",
                     bilo_dtype_name(dt));
        check_values(bilo_sigmoid(e), (double[]){0.0, r_sigmoid(-2.0), 0.5, r_sigmoid(3.0), 1.0},
                     5, 4 * tol_for(dt), "sigmoid %s saturates without NaN", bilo_dtype_name(dt));
        check_values(bilo_softplus(e), (double[]){0.0, log1p(exp(-2.0)), log(2.0),
                                                  3.0 + log1p(exp(-3.0)), 800.0},
                     5, 4 * tol_for(dt), "softplus %s stable at +-800", bilo_dtype_name(dt));
        check_values(bilo_relu(e), (double[]){0, 0, 0, 3, 800}, 5, 0, "relu %s",
                     bilo_dtype_name(dt));
        /* 0-dim and size-0 tensors. */
        bilo_tensor *s = bilo_scalar(dt, 0.25);
        bilo_tensor *sq = bilo_sqrt(s);
        tap_ok(sq && bilo_ndim(sq) == 0 && bilo_item(sq) == 0.5, "sqrt of a 0-dim %s tensor",
               bilo_dtype_name(dt));
        bilo_tensor *z = bilo_exp(bilo_empty(dt, 2, (int64_t[]){3, 0}));
        tap_ok(has_shape(z, 2, (int64_t[]){3, 0}), "exp of a [3,0] %s tensor is [3,0]",
               bilo_dtype_name(dt));
        /* Big: chunked over threads. */
        int64_t n = 70001;
        bilo_tensor *big = patterned(dt, 1, &n, 3, 5.0);
        double *want = malloc((size_t)n * sizeof *want);
        for (int64_t i = 0; i < n; i++) want[i] = tanh(bilo_get_flat(big, i));
        check_values(bilo_tanh(big), want, n, 4 * tol_for(dt), "tanh %s of 70001 elements",
                     bilo_dtype_name(dt));
        free(want);
        CHECK_THREADS(bilo_exp(big), "exp %s of 70001 elements: same bits at 1 and 2 threads",
                      bilo_dtype_name(dt));
    }
    bilo_scope_end();
}

/* ==== binary and where ================================================================= */

static double r_add(double a, double b) { return a + b; }
static double r_sub(double a, double b) { return a - b; }
static double r_mul(double a, double b) { return a * b; }
static double r_div(double a, double b) { return a / b; }
static double r_max(double a, double b) { return a > b ? a : b; }
static double r_min(double a, double b) { return a < b ? a : b; }
static double r_gt(double a, double b) { return a > b; }
static double r_ge(double a, double b) { return a >= b; }
static double r_lt(double a, double b) { return a < b; }
static double r_le(double a, double b) { return a <= b; }
static double r_eq(double a, double b) { return a == b; }
static double r_tanh_grad(double y, double g) { return g * (1 - y * y); }
static double r_sigmoid_grad(double y, double g) { return g * y * (1 - y); }

typedef struct {
    const char *name;
    bilo_tensor *(*fn)(bilo_tensor *, bilo_tensor *);
    double (*ref)(double, double);
} binary_case;

static const binary_case binary_cases[] = {
    {"add", bilo_add, r_add},         {"sub", bilo_sub, r_sub}, {"mul", bilo_mul, r_mul},
    {"div", bilo_div, r_div},         {"pow", bilo_pow, pow},   {"maximum", bilo_maximum, r_max},
    {"minimum", bilo_minimum, r_min}, {"gt", bilo_gt, r_gt},    {"ge", bilo_ge, r_ge},
    {"lt", bilo_lt, r_lt},            {"le", bilo_le, r_le},    {"eq", bilo_eq, r_eq},
    {"tanh_backward", bilo_tanh_backward, r_tanh_grad},
    {"sigmoid_backward", bilo_sigmoid_backward, r_sigmoid_grad},
};

/* Value of operand t at multi-index idx of an n-dim output, by NumPy's rule. */
static double broadcast_get(const bilo_tensor *t, int n, const int64_t *idx)
{
    int lead = n - bilo_ndim(t);
    int64_t flat = 0;
    for (int d = 0; d < bilo_ndim(t); d++) {
        int64_t dim = bilo_shape(t)[d];
        flat = flat * dim + (dim == 1 ? 0 : idx[lead + d]);
    }
    return bilo_get_flat(t, flat);
}

/* Reference for fn over operands broadcast to out (n dims, shape): want[i]. */
static double *broadcast_ref(bilo_tensor *const *ops, int nops, int n, const int64_t *shape,
                             double (*combine)(const double *))
{
    int64_t total = bilo__shape_numel(n, shape);
    double *want = malloc((size_t)(total ? total : 1) * sizeof *want);
    for (int64_t i = 0; i < total; i++) {
        int64_t idx[BILO_MAX_DIMS] = {0}, rest = i;
        for (int d = n - 1; d >= 0; d--) {
            idx[d] = rest % shape[d];
            rest /= shape[d];
        }
        double v[3];
        for (int k = 0; k < nops; k++) v[k] = broadcast_get(ops[k], n, idx);
        want[i] = combine(v);
    }
    return want;
}

static double (*current_ref)(double, double);
static double combine_binary(const double *v) { return current_ref(v[0], v[1]); }
static double combine_where(const double *v) { return v[0] != 0 ? v[1] : v[2]; }

static void check_binary(const binary_case *bc, bilo_dtype dt, int na, const int64_t *sa,
                         int nb, const int64_t *sb, int n, const int64_t *sout, int seed)
{
    char as[BILO_SHAPE_BUF], bs[BILO_SHAPE_BUF];
    bilo__shape_str(as, na, sa);
    bilo__shape_str(bs, nb, sb);
    /* pow gets positive bases; the comparisons get repeated values so ties occur. */
    bool is_pow = bc->fn == bilo_pow;
    bilo_tensor *a = bilo_empty(dt, na, sa), *b = bilo_empty(dt, nb, sb);
    for (int64_t i = 0; i < bilo_numel(a); i++)
        bilo_set_flat(a, i, is_pow ? 0.1 + fabs(pattern(i, seed)) * 2 : round(pattern(i, seed) * 4) / 2);
    for (int64_t i = 0; i < bilo_numel(b); i++)
        bilo_set_flat(b, i, round(pattern(i, seed + 1) * 4) / 2 + (bc->fn == bilo_div ? 0.25 : 0));
    current_ref = bc->ref;
    double *want = broadcast_ref((bilo_tensor *[]){a, b}, 2, n, sout, combine_binary);
    bilo_tensor *y = bc->fn(a, b);
    tap_ok(has_shape(y, n, sout), "%s %s %s with %s: output shape", bc->name, bilo_dtype_name(dt),
           as, bs);
    check_values(y, want, bilo__shape_numel(n, sout), 4 * tol_for(dt), "%s %s %s with %s: values",
                 bc->name, bilo_dtype_name(dt), as, bs);
    free(want);
}

static void test_binary(void)
{
    bilo_scope_begin();
    for (int di = 0; di < 2; di++) {
        bilo_dtype dt = dtypes[di];
        for (size_t c = 0; c < sizeof binary_cases / sizeof binary_cases[0]; c++) {
            const binary_case *bc = &binary_cases[c];
            check_binary(bc, dt, 2, (int64_t[]){2, 5}, 2, (int64_t[]){2, 5}, 2,
                         (int64_t[]){2, 5}, 1);
            check_binary(bc, dt, 2, (int64_t[]){3, 1}, 2, (int64_t[]){1, 4}, 2,
                         (int64_t[]){3, 4}, 2);
        }
        const binary_case *add = &binary_cases[0], *mul = &binary_cases[2];
        /* Broadcasting edge cases. */
        check_binary(add, dt, 1, (int64_t[]){4}, 3, (int64_t[]){2, 3, 4}, 3,
                     (int64_t[]){2, 3, 4}, 3);
        check_binary(add, dt, 0, NULL, 2, (int64_t[]){2, 2}, 2, (int64_t[]){2, 2}, 4);
        check_binary(add, dt, 2, (int64_t[]){2, 2}, 0, NULL, 2, (int64_t[]){2, 2}, 5);
        check_binary(add, dt, 0, NULL, 0, NULL, 0, NULL, 6);
        check_binary(add, dt, 1, (int64_t[]){1}, 1, (int64_t[]){0}, 1, (int64_t[]){0}, 7);
        check_binary(add, dt, 2, (int64_t[]){3, 0}, 1, (int64_t[]){1}, 2, (int64_t[]){3, 0}, 7);
        check_binary(add, dt, 3, (int64_t[]){2, 1, 3}, 2, (int64_t[]){4, 1}, 3,
                     (int64_t[]){2, 4, 3}, 8);
        check_binary(mul, dt, 4, (int64_t[]){2, 1, 3, 1}, 4, (int64_t[]){1, 5, 1, 2}, 4,
                     (int64_t[]){2, 5, 3, 2}, 9);
        check_binary(mul, dt, 3, (int64_t[]){1, 1, 1}, 1, (int64_t[]){3}, 3,
                     (int64_t[]){1, 1, 3}, 10);
        check_binary(mul, dt, 2, (int64_t[]){7, 70}, 2, (int64_t[]){7, 1}, 2,
                     (int64_t[]){7, 70}, 11);
        /* Big shapes: gathered short rows, long rows, a scalar; each threaded. */
        check_binary(add, dt, 2, (int64_t[]){300, 1}, 2, (int64_t[]){1, 250}, 2,
                     (int64_t[]){300, 250}, 12);
        check_binary(mul, dt, 2, (int64_t[]){25000, 3}, 1, (int64_t[]){3}, 2,
                     (int64_t[]){25000, 3}, 13);
        check_binary(add, dt, 2, (int64_t[]){700, 100}, 1, (int64_t[]){100}, 2,
                     (int64_t[]){700, 100}, 14);
        check_binary(mul, dt, 1, (int64_t[]){70000}, 0, NULL, 1, (int64_t[]){70000}, 15);
        bilo_tensor *col = patterned(dt, 2, (int64_t[]){300, 1}, 16, 1.0);
        bilo_tensor *row = patterned(dt, 2, (int64_t[]){1, 250}, 17, 1.0);
        bilo_tensor *mat = patterned(dt, 2, (int64_t[]){700, 100}, 18, 1.0);
        bilo_tensor *vec = patterned(dt, 1, (int64_t[]){100}, 19, 1.0);
        CHECK_THREADS(bilo_sub(col, row), "sub %s [300,1]-[1,250]: same bits at 1 and 2 threads",
                      bilo_dtype_name(dt));
        CHECK_THREADS(bilo_div(mat, vec), "div %s [700,100]/[100]: same bits at 1 and 2 threads",
                      bilo_dtype_name(dt));
        /* NaN propagates through maximum and minimum from either side. */
        bilo_tensor *p = tensor_of(dt, 1, (int64_t[]){3}, (double[]){NAN, 1.0, 2.0});
        bilo_tensor *q = tensor_of(dt, 1, (int64_t[]){3}, (double[]){0.0, NAN, 3.0});
        check_values(bilo_maximum(p, q), (double[]){NAN, NAN, 3.0}, 3, 0,
                     "maximum %s propagates NaN", bilo_dtype_name(dt));
        check_values(bilo_minimum(p, q), (double[]){NAN, NAN, 2.0}, 3, 0,
                     "minimum %s propagates NaN", bilo_dtype_name(dt));
        /* Shapes that do not broadcast. */
        bilo_tensor *bad = bilo_add(bilo_zeros(dt, 2, (int64_t[]){2, 3}),
                                    bilo_zeros(dt, 1, (int64_t[]){4}));
        check_error(bad, "bilo_add", "[2,3] + [4]");
        tap_ok(strstr(bilo_last_error(), "[2,3]") && strstr(bilo_last_error(), "[4]"),
               "broadcast error %s names both shapes", bilo_dtype_name(dt));
    }
    bilo_scope_end();
}

static void test_where(void)
{
    bilo_scope_begin();
    for (int di = 0; di < 2; di++) {
        bilo_dtype dt = dtypes[di];
        bilo_tensor *m = tensor_of(dt, 2, (int64_t[]){3, 1}, (double[]){1, 0, -2});
        bilo_tensor *a = tensor_of(dt, 2, (int64_t[]){1, 4}, (double[]){10, 11, 12, 13});
        bilo_tensor *b = bilo_scalar(dt, -5);
        bilo_tensor *y = bilo_where(m, a, b);
        tap_ok(has_shape(y, 2, (int64_t[]){3, 4}), "where %s [3,1],[1,4],[] is [3,4]",
               bilo_dtype_name(dt));
        check_values(y, (double[]){10, 11, 12, 13, -5, -5, -5, -5, 10, 11, 12, 13}, 12, 0,
                     "where %s three-way broadcast values", bilo_dtype_name(dt));
        int64_t big[2] = {400, 200};
        bilo_tensor *bm = bilo_gt(patterned(dt, 2, big, 20, 1.0), bilo_scalar(dt, 0.0));
        bilo_tensor *ba = patterned(dt, 1, (int64_t[]){200}, 21, 1.0);
        bilo_tensor *bb = patterned(dt, 2, (int64_t[]){400, 1}, 22, 1.0);
        double *want = broadcast_ref((bilo_tensor *[]){bm, ba, bb}, 3, 2, big, combine_where);
        check_values(bilo_where(bm, ba, bb), want, 400 * 200, 0, "where %s [400,200] values",
                     bilo_dtype_name(dt));
        free(want);
        CHECK_THREADS(bilo_where(bm, ba, bb), "where %s: same bits at 1 and 2 threads",
                      bilo_dtype_name(dt));
        check_error(bilo_where(m, a, bilo_zeros(dt, 1, (int64_t[]){3})), "bilo_where",
                    "shapes [3,1],[1,4],[3]");
    }
    bilo_scope_end();
}

/* ==== reductions ======================================================================= */

typedef enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_ARGMAX, R_LSE, R_NORM, R_COUNT } red_kind;

static const char *red_names[R_COUNT] = {"sum", "mean", "max", "min", "argmax", "logsumexp", "norm"};

static bilo_tensor *run_reduction(red_kind k, bilo_tensor *x, int axis, bool keepdim)
{
    switch (k) {
    case R_SUM: return bilo_sum(x, axis, keepdim);
    case R_MEAN: return bilo_mean(x, axis, keepdim);
    case R_MAX: return bilo_max(x, axis, keepdim);
    case R_MIN: return bilo_min(x, axis, keepdim);
    case R_ARGMAX: return bilo_argmax(x, axis, keepdim);
    case R_LSE: return bilo_logsumexp(x, axis, keepdim);
    default: return bilo_norm(x, axis, keepdim);
    }
}

/* Reduce a run x[0], x[s], ..., x[(r-1)s] in double. */
static double ref_reduce(red_kind k, const double *x, int64_t r, int64_t s)
{
    double acc = k == R_MAX || k == R_ARGMAX ? -INFINITY : k == R_MIN ? INFINITY : 0.0;
    int64_t arg = 0;
    for (int64_t j = 0; j < r; j++) {
        double v = x[j * s];
        switch (k) {
        case R_SUM:
        case R_MEAN: acc += v; break;
        case R_MAX: acc = v > acc || isnan(v) ? v : acc; break;
        case R_MIN: acc = v < acc || isnan(v) ? v : acc; break;
        case R_ARGMAX:
            if (v > acc) acc = v, arg = j;
            break;
        case R_LSE: acc += exp(v); break;
        default: acc += v * v; break;
        }
    }
    switch (k) {
    case R_MEAN: return acc / (double)r;
    case R_ARGMAX: return (double)arg;
    case R_LSE: return log(acc);
    case R_NORM: return sqrt(acc);
    default: return acc;
    }
}

/* Check reduction k of x (values xv, ndim n, shape) over axis, both keepdim settings. */
static void check_reduction(red_kind k, bilo_tensor *x, const double *xv, int axis)
{
    int n = bilo_ndim(x);
    const int64_t *shape = bilo_shape(x);
    int64_t outer = 1, r = bilo_numel(x), inner = 1;
    int a = axis < 0 && axis != BILO_ALL_AXES ? axis + n : axis;
    if (axis != BILO_ALL_AXES) {
        r = shape[a];
        for (int d = 0; d < a; d++) outer *= shape[d];
        for (int d = a + 1; d < n; d++) inner *= shape[d];
    }
    double *want = malloc((size_t)(outer * inner) * sizeof *want);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < inner; c++)
            want[o * inner + c] = ref_reduce(k, xv + o * r * inner + c, r, inner);
    bilo_dtype dt = bilo_dtype_of(x);
    for (int keep = 0; keep < 2; keep++) {
        int64_t oshape[BILO_MAX_DIMS];
        int on = 0;
        for (int d = 0; d < n; d++)
            if (axis == BILO_ALL_AXES ? keep : d != a || keep)
                oshape[on++] = axis == BILO_ALL_AXES || d == a ? 1 : shape[d];
        bilo_tensor *y = run_reduction(k, x, axis, keep);
        char sh[BILO_SHAPE_BUF];
        bilo__shape_str(sh, n, shape);
        tap_ok(has_shape(y, on, oshape) &&
                   bilo_dtype_of(y) == (k == R_ARGMAX ? BILO_I64 : dt),
               "%s %s %s axis %d keepdim %d: shape and dtype", red_names[k], bilo_dtype_name(dt),
               sh, axis, keep);
        check_values(y, want, outer * inner, k == R_ARGMAX ? 0 : 8 * tol_for(dt),
                     "%s %s %s axis %d keepdim %d: values", red_names[k], bilo_dtype_name(dt), sh,
                     axis, keep);
    }
    free(want);
}

static void test_reductions(void)
{
    bilo_scope_begin();
    static const int axes[] = {0, 1, 2, -1, -3, BILO_ALL_AXES};
    for (int di = 0; di < 2; di++) {
        bilo_dtype dt = dtypes[di];
        bilo_tensor *x = patterned(dt, 3, (int64_t[]){2, 3, 4}, 30, 3.0);
        double *xv = values_of(x);
        for (int k = 0; k < R_COUNT; k++)
            for (size_t i = 0; i < sizeof axes / sizeof axes[0]; i++)
                check_reduction((red_kind)k, x, xv, axes[i]);
        free(xv);
        /* Hand-computed. */
        bilo_tensor *m = tensor_of(dt, 2, (int64_t[]){2, 3}, (double[]){1, 2, 3, 4, 5, 6});
        check_values(bilo_sum(m, 0, false), (double[]){5, 7, 9}, 3, 0, "sum %s [[1,2,3],[4,5,6]] axis 0",
                     bilo_dtype_name(dt));
        check_values(bilo_sum(m, 1, true), (double[]){6, 15}, 2, 0, "sum %s axis 1 keepdim",
                     bilo_dtype_name(dt));
        check_values(bilo_mean(m, BILO_ALL_AXES, false), (double[]){3.5}, 1, 0, "mean %s of all",
                     bilo_dtype_name(dt));
        check_values(bilo_norm(tensor_of(dt, 1, (int64_t[]){2}, (double[]){3, 4}), 0, false),
                     (double[]){5}, 1, tol_for(dt), "norm %s of [3,4] is 5", bilo_dtype_name(dt));
        check_values(bilo_dot(m, m), (double[]){91}, 1, 0, "dot %s of [[1,2,3],[4,5,6]] with itself",
                     bilo_dtype_name(dt));
        bilo_tensor *d = bilo_dot(m, m);
        tap_ok(d && bilo_ndim(d) == 0, "dot %s is 0-dimensional", bilo_dtype_name(dt));
        /* argmax ties go to the first index, in runs and in columns. */
        bilo_tensor *t = tensor_of(dt, 2, (int64_t[]){3, 4},
                                   (double[]){1, 3, 3, 2, 7, 7, 7, 7, 5, 9, 0, 9});
        check_values(bilo_argmax(t, 1, false), (double[]){1, 0, 1}, 3, 0,
                     "argmax %s ties along a run pick the first", bilo_dtype_name(dt));
        bilo_tensor *u = tensor_of(dt, 2, (int64_t[]){3, 2}, (double[]){4, 1, 4, 8, 2, 8});
        check_values(bilo_argmax(u, 0, false), (double[]){0, 1}, 2, 0,
                     "argmax %s ties down a column pick the first", bilo_dtype_name(dt));
        check_values(bilo_argmax(t, BILO_ALL_AXES, false), (double[]){9}, 1, 0,
                     "argmax %s over all axes is a flat index", bilo_dtype_name(dt));
        /* NaN propagates through max and min in both layouts. */
        bilo_tensor *w = tensor_of(dt, 2, (int64_t[]){2, 2}, (double[]){1, NAN, 3, 0});
        check_values(bilo_max(w, 1, false), (double[]){NAN, 3}, 2, 0, "max %s propagates NaN (run)",
                     bilo_dtype_name(dt));
        check_values(bilo_min(w, 0, false), (double[]){1, NAN}, 2, 0,
                     "min %s propagates NaN (column)", bilo_dtype_name(dt));
        check_values(bilo_max(w, 0, false), (double[]){3, NAN}, 2, 0,
                     "max %s propagates NaN (column)", bilo_dtype_name(dt));
        /* Empty axes. */
        bilo_tensor *e = bilo_zeros(dt, 2, (int64_t[]){2, 0});
        check_values(bilo_sum(e, 1, false), (double[]){0, 0}, 2, 0, "sum %s over an empty axis is 0",
                     bilo_dtype_name(dt));
        check_values(bilo_mean(e, BILO_ALL_AXES, false), (double[]){NAN}, 1, 0,
                     "mean %s of nothing is NaN", bilo_dtype_name(dt));
        check_values(bilo_logsumexp(e, 1, false), (double[]){-INFINITY, -INFINITY}, 2, 0,
                     "logsumexp %s over an empty axis is -inf", bilo_dtype_name(dt));
        tap_ok(has_shape(bilo_sum(e, 0, false), 1, (int64_t[]){0}), "sum %s of [2,0] over axis 0 is [0]",
               bilo_dtype_name(dt));
        check_error(bilo_max(e, 1, false), "bilo_max", "an empty axis");
        check_error(bilo_argmax(e, 1, false), "bilo_argmax", "an empty axis");
        /* Big: block partial sums and threads. */
        int64_t n = 70000;
        bilo_tensor *big = patterned(dt, 1, &n, 31, 1.0);
        double ref = 0, ref2 = 0;
        for (int64_t i = 0; i < n; i++) {
            double v = bilo_get_flat(big, i);
            ref += v;
            ref2 += v * v;
        }
        check_values(bilo_sum(big, 0, false), &ref, 1, tol_for(dt), "sum %s of 70000 elements",
                     bilo_dtype_name(dt));
        check_values(bilo_dot(big, big), &ref2, 1, tol_for(dt), "dot %s of 70000 elements",
                     bilo_dtype_name(dt));
        CHECK_THREADS(bilo_sum(big, 0, false), "sum %s of 70000: same bits at 1 and 2 threads",
                      bilo_dtype_name(dt));
        CHECK_THREADS(bilo_norm(big, BILO_ALL_AXES, true),
                      "norm %s of 70000: same bits at 1 and 2 threads", bilo_dtype_name(dt));
        CHECK_THREADS(bilo_dot(big, big), "dot %s of 70000: same bits at 1 and 2 threads",
                      bilo_dtype_name(dt));
        bilo_tensor *runs = patterned(dt, 2, (int64_t[]){3, 25000}, 32, 1.0);
        double *rv = values_of(runs);
        check_reduction(R_SUM, runs, rv, 1);
        check_reduction(R_LSE, runs, rv, 1);
        free(rv);
        CHECK_THREADS(bilo_mean(runs, 1, false), "mean %s [3,25000] axis 1: same bits at 1 and 2 threads",
                      bilo_dtype_name(dt));
        bilo_tensor *cols = patterned(dt, 2, (int64_t[]){100, 800}, 33, 1.0);
        double *cv = values_of(cols);
        for (int k = 0; k < R_COUNT; k++) check_reduction((red_kind)k, cols, cv, 0);
        free(cv);
        for (int k = 0; k < R_COUNT; k++)
            CHECK_THREADS(run_reduction((red_kind)k, cols, 0, false),
                          "%s %s [100,800] axis 0: same bits at 1 and 2 threads", red_names[k],
                          bilo_dtype_name(dt));
    }
    bilo_scope_end();
}

/* ==== softmax family =================================================================== */

static void check_softmax(bilo_tensor *x, int axis)
{
    bilo_dtype dt = bilo_dtype_of(x);
    int n = bilo_ndim(x);
    const int64_t *shape = bilo_shape(x);
    int a = axis < 0 ? axis + n : axis;
    int64_t outer = 1, r = shape[a], inner = 1, total = bilo_numel(x);
    for (int d = 0; d < a; d++) outer *= shape[d];
    for (int d = a + 1; d < n; d++) inner *= shape[d];
    double *xv = values_of(x);
    double *sm = malloc((size_t)total * sizeof *sm), *lsm = malloc((size_t)total * sizeof *lsm);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < inner; c++) {
            const double *run = xv + o * r * inner + c;
            double lse = ref_reduce(R_LSE, run, r, inner);
            for (int64_t j = 0; j < r; j++) {
                lsm[o * r * inner + j * inner + c] = run[j * inner] - lse;
                sm[o * r * inner + j * inner + c] = exp(run[j * inner] - lse);
            }
        }
    char sh[BILO_SHAPE_BUF];
    bilo__shape_str(sh, n, shape);
    bilo_tensor *y = bilo_softmax(x, axis);
    tap_ok(has_shape(y, n, shape), "softmax %s %s axis %d: shape", bilo_dtype_name(dt), sh, axis);
    check_values(y, sm, total, 8 * tol_for(dt), "softmax %s %s axis %d: values", bilo_dtype_name(dt),
                 sh, axis);
    double worst = 0;
    for (int64_t o = 0; y && o < outer; o++)
        for (int64_t c = 0; c < inner; c++) {
            double s = 0;
            for (int64_t j = 0; j < r; j++) s += bilo_get_flat(y, o * r * inner + j * inner + c);
            worst = fmax(worst, fabs(s - 1));
        }
    tap_ok(y && worst <= 8 * tol_for(dt) * (double)r, "softmax %s %s axis %d: rows sum to 1 (worst %.3g)",
           bilo_dtype_name(dt), sh, axis, worst);
    check_values(bilo_log_softmax(x, axis), lsm, total, 8 * tol_for(dt),
                 "log_softmax %s %s axis %d: values", bilo_dtype_name(dt), sh, axis);
    free(xv);
    free(sm);
    free(lsm);
}

static void test_softmax(void)
{
    bilo_scope_begin();
    for (int di = 0; di < 2; di++) {
        bilo_dtype dt = dtypes[di];
        bilo_tensor *x = patterned(dt, 3, (int64_t[]){2, 3, 4}, 40, 4.0);
        for (int axis = -1; axis < 3; axis++) check_softmax(x, axis);
        /* Stable at large inputs, in a run and down a column. */
        const double big[3] = {1000, 1000, 999};
        double z = 2 + exp(-1.0);
        bilo_tensor *run = tensor_of(dt, 1, (int64_t[]){3}, big);
        check_values(bilo_softmax(run, 0), (double[]){1 / z, 1 / z, exp(-1.0) / z}, 3,
                     4 * tol_for(dt), "softmax %s of [1000,1000,999]", bilo_dtype_name(dt));
        check_values(bilo_log_softmax(run, 0), (double[]){-log(z), -log(z), -1 - log(z)}, 3,
                     4 * tol_for(dt), "log_softmax %s of [1000,1000,999]", bilo_dtype_name(dt));
        check_values(bilo_logsumexp(run, 0, false), (double[]){1000 + log(z)}, 1, 4 * tol_for(dt),
                     "logsumexp %s of [1000,1000,999]", bilo_dtype_name(dt));
        bilo_tensor *colm = tensor_of(dt, 2, (int64_t[]){3, 2},
                                      (double[]){1000, -INFINITY, 1000, -INFINITY, 999, -INFINITY});
        check_values(bilo_softmax(colm, 0), (double[]){1 / z, NAN, 1 / z, NAN, exp(-1.0) / z, NAN},
                     6, 4 * tol_for(dt), "softmax %s down columns: stable, all -inf gives NaN",
                     bilo_dtype_name(dt));
        check_values(bilo_logsumexp(colm, 0, true), (double[]){1000 + log(z), -INFINITY}, 2,
                     4 * tol_for(dt), "logsumexp %s down columns incl. all -inf", bilo_dtype_name(dt));
        bilo_tensor *ninf = tensor_of(dt, 1, (int64_t[]){2}, (double[]){-INFINITY, -INFINITY});
        check_values(bilo_logsumexp(ninf, 0, false), (double[]){-INFINITY}, 1, 0,
                     "logsumexp %s of [-inf,-inf] is -inf", bilo_dtype_name(dt));
        bilo_tensor *pinf = tensor_of(dt, 1, (int64_t[]){2}, (double[]){INFINITY, 1.0});
        check_values(bilo_logsumexp(pinf, 0, false), (double[]){INFINITY}, 1, 0,
                     "logsumexp %s of [inf,1] is inf", bilo_dtype_name(dt));
        /* Big rows and columns, threaded. */
        bilo_tensor *wide = patterned(dt, 2, (int64_t[]){70, 1000}, 41, 10.0);
        check_softmax(wide, 1);
        check_softmax(wide, 0);
        CHECK_THREADS(bilo_softmax(wide, 1), "softmax %s [70,1000] axis 1: same bits at 1 and 2 threads",
                      bilo_dtype_name(dt));
        CHECK_THREADS(bilo_log_softmax(wide, 0),
                      "log_softmax %s [70,1000] axis 0: same bits at 1 and 2 threads",
                      bilo_dtype_name(dt));
        CHECK_THREADS(bilo_logsumexp(wide, 1, false),
                      "logsumexp %s [70,1000] axis 1: same bits at 1 and 2 threads",
                      bilo_dtype_name(dt));
        int64_t n = 70000;
        bilo_tensor *flat = patterned(dt, 1, &n, 42, 3.0);
        double *fv = values_of(flat);
        double want = ref_reduce(R_LSE, fv, n, 1);
        free(fv);
        check_values(bilo_logsumexp(flat, BILO_ALL_AXES, false), &want, 1, 8 * tol_for(dt),
                     "logsumexp %s of 70000 elements", bilo_dtype_name(dt));
    }
    bilo_scope_end();
}

/* ==== linear algebra =================================================================== */

/* op(M)[i][p] of a stored rows×cols matrix. */
static double op_at(const double *m, int64_t cols, bool trans, int64_t i, int64_t p)
{
    return trans ? m[p * cols + i] : m[i * cols + p];
}

/* Check matmul_t(a, b, ta, tb) for stored shapes; batch 0 = 2-D operand. Two batched
   operands also check matmul_batch_sum against the sum of the reference products. */
static void check_matmul(bilo_dtype dt, int64_t batch_a, int64_t batch_b, int64_t m, int64_t k,
                         int64_t n, bool ta, bool tb, int seed)
{
    int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    bilo_tensor *a = batch_a ? patterned(dt, 3, (int64_t[]){batch_a, ar, ac}, seed, 1.0)
                             : patterned(dt, 2, (int64_t[]){ar, ac}, seed, 1.0);
    bilo_tensor *b = batch_b ? patterned(dt, 3, (int64_t[]){batch_b, br, bc}, seed + 1, 1.0)
                             : patterned(dt, 2, (int64_t[]){br, bc}, seed + 1, 1.0);
    int64_t batch = batch_a > batch_b ? batch_a : batch_b;
    double *av = values_of(a), *bv = values_of(b);
    double *want = malloc((size_t)((batch ? batch : 1) * m * n + 1) * sizeof *want);
    for (int64_t q = 0; q < (batch ? batch : 1); q++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t p = 0; p < k; p++)
                    s += op_at(av + (batch_a ? q * ar * ac : 0), ac, ta, i, p) *
                         op_at(bv + (batch_b ? q * br * bc : 0), bc, tb, p, j);
                want[(q * m + i) * n + j] = s;
            }
    bilo_tensor *y = ta || tb ? bilo_matmul_t(a, b, ta, tb) : bilo_matmul(a, b);
    bool shape_ok = batch ? has_shape(y, 3, (int64_t[]){batch, m, n})
                          : has_shape(y, 2, (int64_t[]){m, n});
    char as[BILO_SHAPE_BUF], bs[BILO_SHAPE_BUF];
    bilo__shape_str(as, bilo_ndim(a), bilo_shape(a));
    bilo__shape_str(bs, bilo_ndim(b), bilo_shape(b));
    tap_ok(shape_ok, "matmul %s %s x %s ta=%d tb=%d: shape", bilo_dtype_name(dt), as, bs, ta, tb);
    check_values(y, want, (batch ? batch : 1) * m * n, (dt == BILO_F32 ? 1e-5 : 1e-13) * (double)k,
                 "matmul %s %s x %s ta=%d tb=%d: values", bilo_dtype_name(dt), as, bs, ta, tb);
    if (batch_a && batch_b) {
        for (int64_t q = 1; q < batch; q++)
            for (int64_t e = 0; e < m * n; e++) want[e] += want[q * m * n + e];
        bilo_tensor *summed = bilo_matmul_batch_sum(a, b, ta, tb);
        tap_ok(has_shape(summed, 2, (int64_t[]){m, n}), "matmul_batch_sum %s %s x %s ta=%d tb=%d: shape",
               bilo_dtype_name(dt), as, bs, ta, tb);
        check_values(summed, want, m * n, (dt == BILO_F32 ? 1e-5 : 1e-13) * (double)(k * batch),
                     "matmul_batch_sum %s %s x %s ta=%d tb=%d: values", bilo_dtype_name(dt), as, bs,
                     ta, tb);
    }
    free(av);
    free(bv);
    free(want);
}

static void test_matmul(void)
{
    bilo_scope_begin();
    for (int di = 0; di < 2; di++) {
        bilo_dtype dt = dtypes[di];
        bilo_tensor *a = tensor_of(dt, 2, (int64_t[]){2, 3}, (double[]){1, 2, 3, 4, 5, 6});
        bilo_tensor *b = tensor_of(dt, 2, (int64_t[]){3, 2}, (double[]){7, 8, 9, 10, 11, 12});
        check_values(bilo_matmul(a, b), (double[]){58, 64, 139, 154}, 4, 0,
                     "matmul %s [[1,2,3],[4,5,6]]·[[7,8],[9,10],[11,12]]", bilo_dtype_name(dt));
        check_values(bilo_matmul_t(a, a, false, true), (double[]){14, 32, 32, 77}, 4, 0,
                     "matmul_t %s A·Aᵀ", bilo_dtype_name(dt));
        check_values(bilo_matmul_t(a, a, true, false), (double[]){17, 22, 27, 22, 29, 36, 27, 36, 45},
                     9, 0, "matmul_t %s Aᵀ·A", bilo_dtype_name(dt));
        for (int f = 0; f < 4; f++) {
            bool ta = f & 1, tb = f & 2;
            check_matmul(dt, 0, 0, 5, 7, 3, ta, tb, 50 + f);
            check_matmul(dt, 4, 4, 3, 6, 5, ta, tb, 54 + f);
            check_matmul(dt, 4, 0, 3, 6, 5, ta, tb, 58 + f);
            check_matmul(dt, 0, 4, 3, 6, 5, ta, tb, 62 + f);
            check_matmul(dt, 0, 0, 67, 45, 71, ta, tb, 66 + f);
        }
        check_matmul(dt, 0, 0, 2, 0, 3, false, false, 70);
        check_matmul(dt, 0, 0, 0, 4, 3, false, true, 71);
        check_matmul(dt, 3, 3, 2, 0, 2, true, false, 72);
        /* Threaded: one big gemm, and a batch of small ones. */
        bilo_tensor *p = patterned(dt, 2, (int64_t[]){70, 80}, 73, 1.0);
        bilo_tensor *q = patterned(dt, 2, (int64_t[]){90, 80}, 74, 1.0);
        CHECK_THREADS(bilo_matmul_t(p, q, false, true), "matmul_t %s [70,80]·[90,80]ᵀ: same bits at 1 and 2 threads",
                      bilo_dtype_name(dt));
        bilo_tensor *bp = patterned(dt, 3, (int64_t[]){100, 8, 9}, 75, 1.0);
        bilo_tensor *bq = patterned(dt, 2, (int64_t[]){9, 10}, 76, 1.0);
        CHECK_THREADS(bilo_matmul(bp, bq), "matmul %s [100,8,9]·[9,10]: same bits at 1 and 2 threads",
                      bilo_dtype_name(dt));
        check_matmul(dt, 100, 0, 8, 9, 10, false, false, 75);
        /* outer */
        bilo_tensor *u = tensor_of(dt, 1, (int64_t[]){3}, (double[]){1, -2, 0.5});
        bilo_tensor *v = tensor_of(dt, 1, (int64_t[]){2}, (double[]){4, 3});
        bilo_tensor *o = bilo_outer(u, v);
        tap_ok(has_shape(o, 2, (int64_t[]){3, 2}), "outer %s [3]x[2] is [3,2]", bilo_dtype_name(dt));
        check_values(o, (double[]){4, 3, -8, -6, 2, 1.5}, 6, 0, "outer %s values", bilo_dtype_name(dt));
        /* Errors */
        bilo_tensor *e1 = bilo_zeros(dt, 2, (int64_t[]){3, 4}), *e2 = bilo_zeros(dt, 2, (int64_t[]){5, 2});
        check_error(bilo_matmul(e1, e2), "bilo_matmul", "[3,4]·[5,2]");
        tap_ok(strstr(bilo_last_error(), "[3,4]") && strstr(bilo_last_error(), "[5,2]") &&
                   strstr(bilo_last_error(), "4 and 5"),
               "matmul %s mismatch message names shapes and inner dimensions", bilo_dtype_name(dt));
        check_error(bilo_matmul_t(e1, e2, true, false), "bilo_matmul_t", "[3,4]ᵀ·[5,2]");
        check_error(bilo_matmul(bilo_zeros(dt, 1, (int64_t[]){4}), e1), "bilo_matmul", "a 1-D operand");
        check_error(bilo_matmul(bilo_zeros(dt, 3, (int64_t[]){2, 3, 4}),
                                bilo_zeros(dt, 3, (int64_t[]){3, 4, 2})),
                    "bilo_matmul", "batch 2 with batch 3");
        bilo_tensor *b3 = bilo_zeros(dt, 3, (int64_t[]){2, 4, 5});
        check_error(bilo_matmul_batch_sum(e1, b3, false, false), "bilo_matmul_batch_sum",
                    "a 2-D operand");
        check_error(bilo_matmul_batch_sum(bilo_zeros(dt, 3, (int64_t[]){3, 3, 4}), b3, false, false),
                    "bilo_matmul_batch_sum", "batch 3 with batch 2");
        check_error(bilo_matmul_batch_sum(b3, b3, false, false), "bilo_matmul_batch_sum",
                    "[2,4,5]·[2,4,5]");
        tap_ok(strstr(bilo_last_error(), "5 and 4") != NULL,
               "matmul_batch_sum %s mismatch message names the inner dimensions", bilo_dtype_name(dt));
        check_error(bilo_outer(e1, u), "bilo_outer", "a 2-D operand");
    }
    bilo_scope_end();
}

/* ==== errors =========================================================================== */

static void test_errors(void)
{
    bilo_scope_begin();
    bilo_tensor *f = bilo_ones(BILO_F32, 2, (int64_t[]){2, 3});
    bilo_tensor *d = bilo_ones(BILO_F64, 2, (int64_t[]){2, 3});
    bilo_tensor *i = bilo_zeros(BILO_I64, 2, (int64_t[]){2, 3});
    bilo_tensor *m3 = bilo_ones(BILO_F64, 3, (int64_t[]){2, 3, 4});

    /* NULL propagates: NULL out and no new error. */
#define NULL_CASE(expr)                                                              \
    do {                                                                             \
        bilo_clear_error();                                                          \
        bilo_tensor *r_ = (expr);                                                    \
        tap_ok(!r_ && bilo_errcode() == 0, "%s: NULL without a new error", #expr);   \
    } while (0)
    NULL_CASE(bilo_exp(NULL));
    NULL_CASE(bilo_pow_scalar(NULL, 2));
    NULL_CASE(bilo_add(NULL, d));
    NULL_CASE(bilo_mul(d, NULL));
    NULL_CASE(bilo_where(NULL, d, d));
    NULL_CASE(bilo_sum(NULL, 0, false));
    NULL_CASE(bilo_argmax(NULL, 0, false));
    NULL_CASE(bilo_logsumexp(NULL, 0, false));
    NULL_CASE(bilo_softmax(NULL, 0));
    NULL_CASE(bilo_dot(NULL, d));
    NULL_CASE(bilo_matmul(d, NULL));
    NULL_CASE(bilo_matmul_batch_sum(NULL, m3, false, false));
    NULL_CASE(bilo_outer(NULL, NULL));
#undef NULL_CASE
    bilo_clear_error();
    bilo_tensor *chained = bilo_sum(bilo_exp(NULL), 0, false);
    tap_ok(!chained && bilo_errcode() == 0, "NULL input leaves the error state clear");
    tap_ok(bilo_fill_(NULL, 1) == BILO_ENULL && bilo_copy_(d, NULL) == BILO_ENULL &&
               bilo_axpy_(NULL, 1, d) == BILO_ENULL && bilo_scale_(NULL, 2) == BILO_ENULL &&
               bilo_errcode() == 0,
           "in-place ops return BILO_ENULL for NULL without a new error");

    /* dtype mismatch and I64 inputs. */
    check_error(bilo_add(f, d), "bilo_add", "f32 + f64");
    tap_ok(strstr(bilo_last_error(), "f32") && strstr(bilo_last_error(), "f64"),
           "dtype mismatch message names both dtypes");
    check_error(bilo_where(d, f, f), "bilo_where", "an f64 mask with f32 values");
    check_error(bilo_dot(f, d), "bilo_dot", "f32 · f64");
    check_error(bilo_matmul(f, bilo_ones(BILO_F64, 2, (int64_t[]){3, 2})), "bilo_matmul",
                "f32 · f64");
    check_error(bilo_exp(i), "bilo_exp", "an i64 tensor");
    tap_ok(strstr(bilo_last_error(), "i64") != NULL, "i64 message names the dtype");
    check_error(bilo_mul_scalar(i, 2), "bilo_mul_scalar", "an i64 tensor");
    check_error(bilo_gt(i, i), "bilo_gt", "i64 tensors");
    check_error(bilo_sum(i, 0, false), "bilo_sum", "an i64 tensor");
    check_error(bilo_argmax(i, 0, false), "bilo_argmax", "an i64 tensor");
    check_error(bilo_softmax(i, 0), "bilo_softmax", "an i64 tensor");
    check_error(bilo_matmul(i, i), "bilo_matmul", "i64 tensors");
    check_error(bilo_outer(bilo_zeros(BILO_I64, 1, (int64_t[]){2}), bilo_zeros(BILO_I64, 1, (int64_t[]){2})),
                "bilo_outer", "i64 tensors");

    /* Axis out of range. */
    check_error(bilo_sum(m3, 3, false), "bilo_sum", "axis 3 of 3 dims");
    check_error(bilo_mean(m3, -4, true), "bilo_mean", "axis -4 of 3 dims");
    check_error(bilo_max(m3, 5, false), "bilo_max", "axis 5");
    check_error(bilo_argmax(m3, -7, false), "bilo_argmax", "axis -7");
    check_error(bilo_logsumexp(m3, 3, false), "bilo_logsumexp", "axis 3");
    check_error(bilo_norm(m3, 3, false), "bilo_norm", "axis 3");
    check_error(bilo_softmax(m3, 3), "bilo_softmax", "axis 3");
    check_error(bilo_log_softmax(m3, -4), "bilo_log_softmax", "axis -4");
    check_error(bilo_dot(d, m3), "bilo_dot", "shapes [2,3] and [2,3,4]");
    bilo_scope_end();
}

/* ==== in place ========================================================================= */

static void test_inplace(void)
{
    bilo_scope_begin();
    for (int di = 0; di < 2; di++) {
        bilo_dtype dt = dtypes[di];
        bilo_tensor *t = bilo_zeros(dt, 2, (int64_t[]){2, 2});
        unsigned v0 = atomic_load(&t->storage->version);
        tap_ok(bilo_fill_(t, 2.5) == 0, "fill_ %s returns 0", bilo_dtype_name(dt));
        check_values(t, (double[]){2.5, 2.5, 2.5, 2.5}, 4, 0, "fill_ %s values", bilo_dtype_name(dt));
        tap_ok(atomic_load(&t->storage->version) > v0, "fill_ %s bumps the version", bilo_dtype_name(dt));

        bilo_tensor *x = tensor_of(dt, 2, (int64_t[]){2, 2}, (double[]){1, -2, 3, 0.5});
        unsigned v1 = atomic_load(&t->storage->version);
        tap_ok(bilo_axpy_(t, -2.0, x) == 0, "axpy_ %s returns 0", bilo_dtype_name(dt));
        check_values(t, (double[]){0.5, 6.5, -3.5, 1.5}, 4, 0, "axpy_ %s values", bilo_dtype_name(dt));
        tap_ok(atomic_load(&t->storage->version) > v1, "axpy_ %s bumps the version", bilo_dtype_name(dt));
        tap_ok(bilo_scale_(t, 4.0) == 0, "scale_ %s returns 0", bilo_dtype_name(dt));
        check_values(t, (double[]){2, 26, -14, 6}, 4, 0, "scale_ %s values", bilo_dtype_name(dt));
        tap_ok(bilo_axpy_(t, 1.0, bilo_zeros(dt, 1, (int64_t[]){4})) == BILO_ESHAPE &&
                   strstr(bilo_last_error(), "bilo_axpy_"),
               "axpy_ %s rejects [4] into [2,2]", bilo_dtype_name(dt));
        bilo_tensor *other = bilo_zeros(dt == BILO_F32 ? BILO_F64 : BILO_F32, 2, (int64_t[]){2, 2});
        tap_ok(bilo_axpy_(t, 1.0, other) == BILO_EDTYPE && strstr(bilo_last_error(), "bilo_axpy_"),
               "axpy_ %s rejects another dtype", bilo_dtype_name(dt));
        tap_ok(bilo_scale_(bilo_zeros(BILO_I64, 1, (int64_t[]){2}), 2) == BILO_EDTYPE &&
                   strstr(bilo_last_error(), "bilo_scale_"),
               "scale_ rejects i64");

        /* copy_ between every pair of dtypes. */
        static const bilo_dtype all[3] = {BILO_F32, BILO_F64, BILO_I64};
        for (int s = 0; s < 3; s++) {
            bilo_tensor *src = tensor_of(all[s], 1, (int64_t[]){4}, (double[]){2.75, -2.75, 7, 0.5});
            bilo_tensor *dst = bilo_zeros(dt, 1, (int64_t[]){4});
            unsigned v2 = atomic_load(&dst->storage->version);
            int rc = bilo_copy_(dst, src);
            /* An i64 source already truncated toward zero when it was filled. */
            double want[4] = {2.75, -2.75, 7, 0.5};
            if (all[s] == BILO_I64) want[0] = 2, want[1] = -2, want[3] = 0;
            tap_ok(rc == 0 && atomic_load(&dst->storage->version) > v2, "copy_ %s <- %s returns 0, bumps the version",
                   bilo_dtype_name(dt), bilo_dtype_name(all[s]));
            check_values(dst, want, 4, 0, "copy_ %s <- %s values", bilo_dtype_name(dt),
                         bilo_dtype_name(all[s]));
        }
        bilo_tensor *i64 = bilo_zeros(BILO_I64, 1, (int64_t[]){4});
        tap_ok(bilo_copy_(i64, tensor_of(dt, 1, (int64_t[]){4}, (double[]){2.75, -2.75, 1e30, NAN})) == 0,
               "copy_ i64 <- %s returns 0", bilo_dtype_name(dt));
        check_values(i64, (double[]){2, -2, 9223372036854775807.0, 0}, 4, 0,
                     "copy_ i64 <- %s truncates toward zero, saturates, NaN is 0", bilo_dtype_name(dt));
        tap_ok(bilo_copy_(t, bilo_zeros(dt, 2, (int64_t[]){4, 1})) == BILO_ESHAPE &&
                   strstr(bilo_last_error(), "bilo_copy_") && strstr(bilo_last_error(), "[4,1]"),
               "copy_ %s rejects [4,1] into [2,2]", bilo_dtype_name(dt));
        bilo_tensor *li = bilo_zeros(BILO_I64, 1, (int64_t[]){3});
        tap_ok(bilo_fill_(li, -7.9) == 0 && bilo_get_flat(li, 2) == -7, "fill_ i64 truncates");

        /* Big axpy_ and scale_, threaded. */
        int64_t n = 70000;
        bilo_tensor *big = patterned(dt, 1, &n, 80, 1.0);
        bilo_tensor *acc = patterned(dt, 1, &n, 81, 1.0);
        double *want = malloc((size_t)n * sizeof *want);
        for (int64_t k = 0; k < n; k++)
            want[k] = bilo_get_flat(acc, k) + (dt == BILO_F32 ? (double)(float)0.3 : 0.3) * bilo_get_flat(big, k);
        bilo_axpy_(acc, 0.3, big);
        check_values(acc, want, n, tol_for(dt), "axpy_ %s of 70000 elements", bilo_dtype_name(dt));
        for (int k = 0; k < n; k++) want[k] = bilo_get_flat(acc, k) * 0.5;
        bilo_scale_(acc, 0.5);
        check_values(acc, want, n, 0, "scale_ %s of 70000 elements", bilo_dtype_name(dt));
        free(want);
    }
    bilo_scope_end();
}

/* ==== sparse · dense ==================================================================== */

/* A random rows x cols CSR matrix with about 10% of its entries set, built in the caller's
   buffers (ptr [rows+1], idx and val [rows*cols]); returns nnz. */
static int64_t random_csr(int64_t rows, int64_t cols, int seed, int64_t *ptr, int64_t *idx,
                          double *val)
{
    int64_t nnz = 0;
    ptr[0] = 0;
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t j = 0; j < cols; j++)
            if (pattern(i * cols + j, seed) > 0.8) {
                idx[nnz] = j;
                val[nnz] = pattern(nnz, seed + 1);
                nnz++;
            }
        ptr[i + 1] = nnz;
    }
    return nnz;
}

/* f64 reference of A·d ([rows, n]) or Aᵀ·d ([cols, n]) from the CSR arrays. */
static double *spmm_reference(const int64_t *ptr, const int64_t *idx, const double *val,
                              int64_t rows, int64_t cols, const double *d, int64_t n, bool trans)
{
    double *out = calloc((size_t)((trans ? cols : rows) * n + 1), sizeof *out);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t k = ptr[i]; k < ptr[i + 1]; k++)
            for (int64_t j = 0; j < n; j++) {
                if (trans) out[idx[k] * n + j] += val[k] * d[i * n + j];
                else out[i * n + j] += val[k] * d[idx[k] * n + j];
            }
    return out;
}

static void check_spmm_random(bilo_dtype dt, int64_t rows, int64_t cols, int64_t n, int seed)
{
    int64_t *ptr = malloc((size_t)(rows + 1) * sizeof *ptr);
    int64_t *idx = malloc((size_t)(rows * cols + 1) * sizeof *idx);
    double *val = malloc((size_t)(rows * cols + 1) * sizeof *val);
    int64_t nnz = random_csr(rows, cols, seed, ptr, idx, val);
    bilo_tensor *indptr = bilo_from_data(BILO_I64, BILO_SHAPE(rows + 1), ptr);
    bilo_tensor *indices = bilo_from_data(BILO_I64, BILO_SHAPE(nnz), idx);
    bilo_tensor *values = tensor_of(dt, 1, (int64_t[]){nnz}, val);
    for (int t = 0; t < 2; t++) {
        bool trans = t;
        int64_t inner = trans ? rows : cols, out_rows = trans ? cols : rows;
        bilo_tensor *d = patterned(dt, 2, (int64_t[]){inner, n}, seed + 2 + t, 1.0);
        double *dv = values_of(d);
        double *want = spmm_reference(ptr, idx, val, rows, cols, dv, n, trans);
        bilo_tensor *y = bilo_spmm(indptr, indices, values, rows, cols, d, trans);
        tap_ok(has_shape(y, 2, (int64_t[]){out_rows, n}), "spmm %s %lldx%lld (nnz %lld)%s x [%lld,%lld]: shape",
               bilo_dtype_name(dt), (long long)rows, (long long)cols, (long long)nnz,
               trans ? "ᵀ" : "", (long long)inner, (long long)n);
        check_values(y, want, out_rows * n, 10 * tol_for(dt), "spmm %s %lldx%lld%s: matches the f64 loop",
                     bilo_dtype_name(dt), (long long)rows, (long long)cols, trans ? "ᵀ" : "");
        CHECK_THREADS(bilo_spmm(indptr, indices, values, rows, cols, d, trans),
                      "spmm %s %lldx%lld%s x n=%lld: same bits at 1 and 2 threads",
                      bilo_dtype_name(dt), (long long)rows, (long long)cols, trans ? "ᵀ" : "",
                      (long long)n);
        free(dv);
        free(want);
    }
    free(ptr);
    free(idx);
    free(val);
}

static void test_spmm_errors(void)
{
    bilo_tensor *ptr = bilo_from_data(BILO_I64, BILO_SHAPE(3), (int64_t[]){0, 1, 2});
    bilo_tensor *idx = bilo_from_data(BILO_I64, BILO_SHAPE(2), (int64_t[]){0, 2});
    bilo_tensor *val = bilo_ones(BILO_F64, BILO_SHAPE(2));
    bilo_tensor *d = bilo_ones(BILO_F64, BILO_SHAPE(3, 2));
    check_error(bilo_spmm(bilo_cast(ptr, BILO_F64), idx, val, 2, 3, d, false), "bilo_spmm",
                "an f64 indptr");
    check_error(bilo_spmm(ptr, idx, val, 3, 3, d, false), "bilo_spmm", "indptr of 3 for 3 rows");
    check_error(bilo_spmm(bilo_from_data(BILO_I64, BILO_SHAPE(3), (int64_t[]){0, 2, 1}), idx, val,
                          2, 3, d, false),
                "bilo_spmm", "an indptr ending below nnz");
    check_error(bilo_spmm(bilo_from_data(BILO_I64, BILO_SHAPE(4), (int64_t[]){0, 2, 1, 2}), idx,
                          val, 3, 3, d, false),
                "bilo_spmm", "a decreasing indptr");
    tap_ok(strstr(bilo_last_error(), "decreases") != NULL, "spmm: decreasing indptr message (%s)",
           bilo_last_error());
    check_error(bilo_spmm(ptr, bilo_from_data(BILO_I64, BILO_SHAPE(2), (int64_t[]){0, 3}), val, 2,
                          3, d, false),
                "bilo_spmm", "a column index 3 of 3 columns");
    tap_ok(strstr(bilo_last_error(), "indices[1] = 3") != NULL, "spmm: out-of-range message (%s)",
           bilo_last_error());
    check_error(bilo_spmm(ptr, idx, bilo_ones(BILO_F64, BILO_SHAPE(3)), 2, 3, d, false),
                "bilo_spmm", "3 values for 2 indices");
    check_error(bilo_spmm(ptr, idx, val, 2, 3, bilo_ones(BILO_F64, BILO_SHAPE(2, 2)), false),
                "bilo_spmm", "dense [2,2] for 3 columns");
    tap_ok(strstr(bilo_last_error(), "[2,2]") != NULL, "spmm: shape message names the shape (%s)",
           bilo_last_error());
    check_error(bilo_spmm(ptr, idx, val, 2, 3, d, true), "bilo_spmm", "dense [3,2] for Aᵀ of 2 rows");
    check_error(bilo_spmm(ptr, idx, val, 2, 3, bilo_ones(BILO_F32, BILO_SHAPE(3, 2)), false),
                "bilo_spmm", "f64 values with f32 dense");
    check_error(bilo_spmm(ptr, idx, val, -1, 3, d, false), "bilo_spmm", "negative rows");
    bilo_clear_error();
    tap_ok(!bilo_spmm(ptr, idx, NULL, 2, 3, d, false) && bilo_errcode() == 0,
           "spmm: a NULL operand propagates without a new error");
}

static void test_spmm(void)
{
    bilo_scope_begin();
    /* A = [[0,1,0,2],[0,0,0,0],[-1,0,3,0]] */
    bilo_tensor *ptr = bilo_from_data(BILO_I64, BILO_SHAPE(4), (int64_t[]){0, 2, 2, 4});
    bilo_tensor *idx = bilo_from_data(BILO_I64, BILO_SHAPE(4), (int64_t[]){1, 3, 0, 2});
    for (int di = 0; di < 2; di++) {
        bilo_dtype dt = dtypes[di];
        bilo_tensor *val = tensor_of(dt, 1, (int64_t[]){4}, (double[]){1, 2, -1, 3});
        bilo_tensor *d = tensor_of(dt, 2, (int64_t[]){4, 2}, (double[]){1, 2, 3, 4, 5, 6, 7, 8});
        bilo_tensor *e = tensor_of(dt, 2, (int64_t[]){3, 2}, (double[]){1, 2, 3, 4, 5, 6});
        check_values(bilo_spmm(ptr, idx, val, 3, 4, d, false), (double[]){17, 20, 0, 0, 14, 16}, 6,
                     0, "spmm %s A·D by hand (empty row gives zeros)", bilo_dtype_name(dt));
        check_values(bilo_spmm(ptr, idx, val, 3, 4, e, true),
                     (double[]){-5, -6, 1, 2, 15, 18, 2, 4}, 8, 0, "spmm %s Aᵀ·E by hand",
                     bilo_dtype_name(dt));
        check_spmm_random(dt, 300, 200, 70, 80 + di);
        check_spmm_random(dt, 7, 5, 3, 90 + di);
    }
    test_spmm_errors();
    bilo_scope_end();
}

int main(void)
{
    test_unary();
    test_binary();
    test_where();
    test_reductions();
    test_softmax();
    test_matmul();
    test_errors();
    test_inplace();
    test_spmm();
    bilo_mem_trim();
    return tap_done();
}
