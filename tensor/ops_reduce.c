/* Reductions over one axis or all elements, and the softmax family.
   x is viewed as [outer, r, inner] around the reduced axis of length r. Two layouts:
   - inner == 1: each output comes from a contiguous run of r elements;
   - inner > 1: each output column is reduced across r rows, handled COLS columns at a time
     by accumulating whole rows in order (axpy and elementwise kernels).
   Sums combine fixed BLOCK-element kernel sums in block order in double, and work is split
   over outputs and blocks only, so every result is bit-identical at any thread count. */
#include "kernels.h"
#include "parallel.h"
#include "tensor_impl.h"

#include <math.h>
#include <string.h>

#define BLOCK 4096    /* summation block of a contiguous run */
#define EXP_BLOCK 1024 /* piece of a run exponentiated in a stack buffer to be summed */
#define COLS 512      /* output columns per work item when inner > 1 */

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

typedef struct {
    int64_t outer, r, inner;
    int axis; /* normalised axis or BILO_ALL_AXES, as recorded */
    bool keepdim;
    int ndim; /* output shape */
    int64_t shape[BILO_MAX_DIMS];
} reduce_geom;

static bool geom_init(const char *op, const bilo_tensor *x, int axis, bool keepdim,
                      reduce_geom *g)
{
    *g = (reduce_geom){.outer = 1, .inner = 1, .keepdim = keepdim};
    if (axis == BILO_ALL_AXES) {
        g->axis = BILO_ALL_AXES;
        g->r = x->numel;
        g->ndim = keepdim ? x->ndim : 0;
        for (int d = 0; d < g->ndim; d++) g->shape[d] = 1;
        return true;
    }
    int a = bilo__axis(op, axis, x->ndim);
    if (a < 0) return false;
    g->axis = a;
    g->r = x->shape[a];
    for (int d = 0; d < x->ndim; d++) {
        if (d < a) g->outer *= x->shape[d];
        if (d > a) g->inner *= x->shape[d];
        if (d != a || keepdim) g->shape[g->ndim++] = d == a ? 1 : x->shape[d];
    }
    return true;
}

static int64_t col_blocks(const reduce_geom *g) { return (g->inner + COLS - 1) / COLS; }

/* ---- dtype-generic access to elements and kernels ---- */

static void *elem(bilo_dtype dt, const void *p, int64_t i)
{
    return (char *)p + (size_t)i * bilo_dtype_size(dt);
}

static double load(bilo_dtype dt, const void *p, int64_t i)
{
    return dt == BILO_F32 ? ((const float *)p)[i] : ((const double *)p)[i];
}

static void store(bilo_dtype dt, void *p, int64_t i, double v)
{
    if (dt == BILO_F32)
        ((float *)p)[i] = (float)v;
    else
        ((double *)p)[i] = v;
}

static double k_sum(const bilo_kernels *k, bilo_dtype dt, const void *x, int64_t n)
{
    if (n == 0) return 0.0;
    return dt == BILO_F32 ? k->sum_f32(x, n) : k->sum_f64(x, n);
}

static double k_dot(const bilo_kernels *k, bilo_dtype dt, const void *a, const void *b, int64_t n)
{
    if (n == 0) return 0.0;
    return dt == BILO_F32 ? k->dot_f32(a, b, n) : k->dot_f64(a, b, n);
}

static double k_extreme(const bilo_kernels *k, bilo_dtype dt, bool is_max, const void *x,
                        int64_t n)
{
    if (dt == BILO_F32) return is_max ? k->max_f32(x, n) : k->min_f32(x, n);
    return is_max ? k->max_f64(x, n) : k->min_f64(x, n);
}

static void k_axpy(const bilo_kernels *k, bilo_dtype dt, int64_t n, const void *x, void *y)
{
    if (dt == BILO_F32)
        k->axpy_f32(n, 1.0f, x, y);
    else
        k->axpy_f64(n, 1.0, x, y);
}

static void k_unary(const bilo_kernels *k, bilo_dtype dt, bilo_unary_kernel id, const void *x,
                    void *y, int64_t n, double p)
{
    if (dt == BILO_F32)
        k->unary_f32[id](x, y, n, p);
    else
        k->unary_f64[id](x, y, n, p);
}

/* y = a (op) b elementwise over n contiguous elements. */
static void k_binary(const bilo_kernels *k, bilo_dtype dt, bilo_binary_kernel id, const void *a,
                     const void *b, void *y, int64_t n)
{
    if (dt == BILO_F32)
        k->binary_f32[id](a, 1, b, 1, y, n);
    else
        k->binary_f64[id](a, 1, b, 1, y, n);
}

/* ---- sums: sum, mean, norm, dot ---- */

typedef enum { SUM_PLAIN, SUM_MEAN, SUM_NORM } sum_kind;

static double sum_finish(sum_kind kind, double s, int64_t r)
{
    return kind == SUM_MEAN ? s / (double)r : kind == SUM_NORM ? sqrt(s) : s;
}

/* Sum of a contiguous piece, of x·y when y is given (y == x for sums of squares). */
static double piece_sum(const bilo_kernels *k, bilo_dtype dt, const void *x, const void *y,
                        int64_t lo, int64_t n)
{
    return y ? k_dot(k, dt, elem(dt, x, lo), elem(dt, y, lo), n) : k_sum(k, dt, elem(dt, x, lo), n);
}

/* out[o] = finish(sum of run o), runs of r contiguous elements (inner == 1). Returns false
   (error set) when the partial-sum buffer cannot be allocated. */
static bool sum_runs(const char *op, bilo_dtype dt, const void *x, const void *y, int64_t runs,
                     int64_t r, sum_kind kind, void *out)
{
    const bilo_kernels *k = bilo__kernels();
    int nt = bilo__threads_for_elems(runs * r, BILO_COST_MEMORY);
    if (r <= BLOCK) {
        BILO__PARALLEL_FOR(nt, o, runs, {
            store(dt, out, o, sum_finish(kind, piece_sum(k, dt, x, y, o * r, r), r));
        });
        return true;
    }
    int64_t nb = (r + BLOCK - 1) / BLOCK;
    size_t bytes = (size_t)(runs * nb) * sizeof(double);
    double *part = bilo__alloc(bytes);
    if (!part) return bilo__fail(BILO_ENOMEM, "%s: out of memory for %zu bytes", op, bytes), false;
    BILO__PARALLEL_FOR(nt, i, runs * nb, {
        int64_t o = i / nb, lo = (i % nb) * BLOCK;
        part[i] = piece_sum(k, dt, x, y, o * r + lo, min64(BLOCK, r - lo));
    });
    for (int64_t o = 0; o < runs; o++) {
        double s = 0.0;
        for (int64_t b = 0; b < nb; b++) s += part[o * nb + b];
        store(dt, out, o, sum_finish(kind, s, r));
    }
    bilo__free(part, bytes);
    return true;
}

/* inner > 1: out[o, c] = finish(sum_j x[o, j, c]) accumulated row by row with axpy. */
static void sum_cols(bilo_dtype dt, const void *x, const reduce_geom *g, sum_kind kind,
                     void *out)
{
    const bilo_kernels *k = bilo__kernels();
    int64_t nc = col_blocks(g), items = g->outer * nc;
    int nt = bilo__threads_for_elems(g->outer * g->r * g->inner, BILO_COST_MEMORY);
    BILO__PARALLEL_FOR(nt, it, items, {
        _Alignas(64) double squares[COLS];
        int64_t o = it / nc, c0 = (it % nc) * COLS, w = min64(COLS, g->inner - c0);
        void *acc = elem(dt, out, o * g->inner + c0);
        memset(acc, 0, (size_t)w * bilo_dtype_size(dt));
        for (int64_t j = 0; j < g->r; j++) {
            const void *row = elem(dt, x, (o * g->r + j) * g->inner + c0);
            if (kind == SUM_NORM) {
                k_unary(k, dt, BILO_KU_SQUARE, row, squares, w, 0);
                row = squares;
            }
            k_axpy(k, dt, w, row, acc);
        }
        if (kind == SUM_MEAN) k_unary(k, dt, BILO_KU_MUL_SCALAR, acc, acc, w, 1.0 / (double)g->r);
        if (kind == SUM_NORM) k_unary(k, dt, BILO_KU_SQRT, acc, acc, w, 0);
    });
}

static bilo_tensor *sum_op(const char *name, bilo_op_id op, sum_kind kind, bilo_tensor *x,
                           int axis, bool keepdim)
{
    if (!x) return NULL;
    reduce_geom g;
    if (!bilo__check_float(name, x) || !geom_init(name, x, axis, keepdim, &g)) return NULL;
    bilo_tensor *out = bilo__new(name, x->dtype, g.ndim, g.shape);
    if (!out) return NULL;
    const void *px = bilo__ptr(x);
    const void *squares_of = kind == SUM_NORM ? px : NULL;
    if (g.inner > 1) {
        sum_cols(x->dtype, px, &g, kind, bilo__ptr(out));
    } else if (g.inner == 1 && /* inner == 0: the output is empty */
               !sum_runs(name, x->dtype, px, squares_of, g.outer, g.r, kind, bilo__ptr(out))) {
        bilo_release(out);
        return NULL;
    }
    bilo_op_attrs attrs = {.axis = g.axis, .keepdim = keepdim};
    return bilo__record(op, out, &x, 1, &attrs);
}

BILO_API bilo_tensor *bilo_sum(bilo_tensor *x, int axis, bool keepdim)
{
    return sum_op("bilo_sum", BILO_OP_SUM, SUM_PLAIN, x, axis, keepdim);
}

BILO_API bilo_tensor *bilo_mean(bilo_tensor *x, int axis, bool keepdim)
{
    return sum_op("bilo_mean", BILO_OP_MEAN, SUM_MEAN, x, axis, keepdim);
}

BILO_API bilo_tensor *bilo_norm(bilo_tensor *x, int axis, bool keepdim)
{
    return sum_op("bilo_norm", BILO_OP_NORM, SUM_NORM, x, axis, keepdim);
}

BILO_API bilo_tensor *bilo_dot(bilo_tensor *a, bilo_tensor *b)
{
    if (!a || !b) return NULL;
    if (!bilo__check_float("bilo_dot", a) || !bilo__check_float("bilo_dot", b) ||
        !bilo__check_same_dtype("bilo_dot", a, b))
        return NULL;
    if (a->ndim != b->ndim ||
        memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape) != 0) {
        char sa[BILO_SHAPE_BUF], sb[BILO_SHAPE_BUF];
        return bilo__fail(BILO_ESHAPE, "bilo_dot: shapes %s and %s differ",
                          bilo__shape_str(sa, a->ndim, a->shape),
                          bilo__shape_str(sb, b->ndim, b->shape));
    }
    bilo_tensor *out = bilo__new("bilo_dot", a->dtype, 0, NULL);
    if (!out) return NULL;
    if (!sum_runs("bilo_dot", a->dtype, bilo__ptr(a), bilo__ptr(b), 1, a->numel, SUM_PLAIN,
                  bilo__ptr(out))) {
        bilo_release(out);
        return NULL;
    }
    bilo_tensor *in[2] = {a, b};
    bilo_op_attrs attrs = {.axis = BILO_ALL_AXES};
    return bilo__record(BILO_OP_DOT, out, in, 2, &attrs);
}

/* ---- max, min, argmax ---- */

/* m[0..w) = elementwise max (or min) of the r rows of width w at x with row stride inner.
   NaN propagates (the kernels' rule). */
static void col_extreme(const bilo_kernels *k, bilo_dtype dt, bool is_max, const void *x,
                        int64_t r, int64_t inner, int64_t w, void *m)
{
    memcpy(m, x, (size_t)w * bilo_dtype_size(dt));
    for (int64_t j = 1; j < r; j++)
        k_binary(k, dt, is_max ? BILO_KB_MAXIMUM : BILO_KB_MINIMUM, m,
                 elem(dt, x, j * inner), m, w);
}

static bool check_nonempty(const char *op, const bilo_tensor *x, const reduce_geom *g)
{
    if (g->r > 0) return true;
    char buf[BILO_SHAPE_BUF];
    bilo__fail(BILO_ESHAPE, "%s: cannot reduce an empty axis of shape %s", op,
               bilo__shape_str(buf, x->ndim, x->shape));
    return false;
}

static bilo_tensor *extreme_op(const char *name, bilo_op_id op, bool is_max, bilo_tensor *x,
                               int axis, bool keepdim)
{
    if (!x) return NULL;
    reduce_geom g;
    if (!bilo__check_float(name, x) || !geom_init(name, x, axis, keepdim, &g) ||
        !check_nonempty(name, x, &g))
        return NULL;
    bilo_tensor *out = bilo__new(name, x->dtype, g.ndim, g.shape);
    if (!out) return NULL;
    const bilo_kernels *k = bilo__kernels();
    bilo_dtype dt = x->dtype;
    const void *px = bilo__ptr(x);
    void *po = bilo__ptr(out);
    int64_t nc = col_blocks(&g), items = g.outer * nc;
    int nt = bilo__threads_for_elems(x->numel, BILO_COST_MEMORY);
    BILO__PARALLEL_FOR(nt, it, items, {
        int64_t o = it / nc, c0 = (it % nc) * COLS;
        const void *base = elem(dt, px, o * g.r * g.inner + c0);
        if (g.inner == 1)
            store(dt, po, o, k_extreme(k, dt, is_max, base, g.r));
        else
            col_extreme(k, dt, is_max, base, g.r, g.inner, min64(COLS, g.inner - c0),
                        elem(dt, po, o * g.inner + c0));
    });
    bilo_op_attrs attrs = {.axis = g.axis, .keepdim = keepdim};
    return bilo__record(op, out, &x, 1, &attrs);
}

BILO_API bilo_tensor *bilo_max(bilo_tensor *x, int axis, bool keepdim)
{
    return extreme_op("bilo_max", BILO_OP_MAX, true, x, axis, keepdim);
}

BILO_API bilo_tensor *bilo_min(bilo_tensor *x, int axis, bool keepdim)
{
    return extreme_op("bilo_min", BILO_OP_MIN, false, x, axis, keepdim);
}

/* Index of the first maximum along the rows for w columns (row stride inner); a NaN counts
   as larger than any number, so the first NaN wins like NumPy. */
#define DEFINE_ARGMAX(T)                                                                   \
    static void argmax_##T(const T *x, int64_t r, int64_t inner, int64_t w, int64_t *out) \
    {                                                                                      \
        T best[COLS];                                                                      \
        for (int64_t c = 0; c < w; c++) {                                                  \
            best[c] = x[c];                                                                \
            out[c] = 0;                                                                    \
        }                                                                                  \
        for (int64_t j = 1; j < r; j++)                                                    \
            for (int64_t c = 0; c < w; c++) {                                              \
                T v = x[j * inner + c];                                                    \
                if (v > best[c] || (isnan(v) && !isnan(best[c]))) {                        \
                    best[c] = v;                                                           \
                    out[c] = j;                                                            \
                }                                                                          \
            }                                                                              \
    }
DEFINE_ARGMAX(float)
DEFINE_ARGMAX(double)

BILO_API bilo_tensor *bilo_argmax(bilo_tensor *x, int axis, bool keepdim)
{
    const char *name = "bilo_argmax";
    if (!x) return NULL;
    reduce_geom g;
    if (!bilo__check_float(name, x) || !geom_init(name, x, axis, keepdim, &g) ||
        !check_nonempty(name, x, &g))
        return NULL;
    bilo_tensor *out = bilo__new(name, BILO_I64, g.ndim, g.shape);
    if (!out) return NULL;
    int64_t *po = bilo__ptr(out);
    int64_t nc = col_blocks(&g), items = g.outer * nc;
    int nt = bilo__threads_for_elems(x->numel, BILO_COST_MEMORY);
    BILO__PARALLEL_FOR(nt, it, items, {
        int64_t o = it / nc, c0 = (it % nc) * COLS, w = min64(COLS, g.inner - c0);
        int64_t from = o * g.r * g.inner + c0;
        if (x->dtype == BILO_F32)
            argmax_float((const float *)bilo__ptr(x) + from, g.r, g.inner, w,
                         po + o * g.inner + c0);
        else
            argmax_double((const double *)bilo__ptr(x) + from, g.r, g.inner, w,
                          po + o * g.inner + c0);
    });
    bilo_op_attrs attrs = {.axis = g.axis, .keepdim = keepdim};
    return bilo__record(BILO_OP_ARGMAX, out, &x, 1, &attrs);
}

/* ---- logsumexp, softmax, log_softmax: max-shifted so nothing overflows ---- */

typedef enum { EXP_LOGSUMEXP, EXP_SOFTMAX, EXP_LOG_SOFTMAX } exp_kind;

/* Sum of exp(x[i] + shift) over a contiguous run, in EXP_BLOCK pieces. */
static double exp_sum(const bilo_kernels *k, bilo_dtype dt, const void *x, int64_t n,
                      double shift)
{
    _Alignas(64) double buf[EXP_BLOCK];
    double s = 0.0;
    for (int64_t lo = 0; lo < n; lo += EXP_BLOCK) {
        int64_t len = min64(EXP_BLOCK, n - lo);
        k_unary(k, dt, BILO_KU_ADD_SCALAR, elem(dt, x, lo), buf, len, shift);
        k_unary(k, dt, BILO_KU_EXP, buf, buf, len, 0);
        s += k_sum(k, dt, buf, len);
    }
    return s;
}

/* One contiguous run of r >= 1 elements (inner == 1). logsumexp writes one value to y,
   softmax and log_softmax write r. A run whose max is not finite (all -inf, +inf or NaN)
   has logsumexp equal to that max; the normalisations then give NaN like PyTorch. */
static void exp_run(const bilo_kernels *k, bilo_dtype dt, exp_kind kind, const void *x,
                    int64_t r, void *y)
{
    double m = k_extreme(k, dt, true, x, r);
    if (kind == EXP_LOGSUMEXP) {
        store(dt, y, 0, isfinite(m) ? m + log(exp_sum(k, dt, x, r, -m)) : m);
        return;
    }
    k_unary(k, dt, BILO_KU_ADD_SCALAR, x, y, r, -m); /* y = x - m */
    if (kind == EXP_LOG_SOFTMAX) {
        k_unary(k, dt, BILO_KU_ADD_SCALAR, y, y, r, -log(exp_sum(k, dt, y, r, 0.0)));
        return;
    }
    k_unary(k, dt, BILO_KU_EXP, y, y, r, 0);
    double s = 0.0;
    for (int64_t lo = 0; lo < r; lo += BLOCK) s += k_sum(k, dt, elem(dt, y, lo), min64(BLOCK, r - lo));
    k_unary(k, dt, BILO_KU_MUL_SCALAR, y, y, r, 1.0 / s);
}

/* inner > 1: w columns of r rows (row stride inner) from x; logsumexp writes w values to y,
   the others r rows of w with stride inner. */
static void exp_cols(const bilo_kernels *k, bilo_dtype dt, exp_kind kind, const void *x,
                     int64_t r, int64_t inner, int64_t w, void *y)
{
    _Alignas(64) double m[COLS], s[COLS], tmp[COLS];
    col_extreme(k, dt, true, x, r, inner, w, m);
    memset(s, 0, sizeof s);
    for (int64_t j = 0; j < r; j++) {
        void *t = kind == EXP_LOGSUMEXP ? (void *)tmp : elem(dt, y, j * inner);
        k_binary(k, dt, BILO_KB_SUB, elem(dt, x, j * inner), m, t, w);
        if (kind == EXP_SOFTMAX) {
            k_unary(k, dt, BILO_KU_EXP, t, t, w, 0);
        } else {
            k_unary(k, dt, BILO_KU_EXP, t, tmp, w, 0);
            t = tmp;
        }
        k_axpy(k, dt, w, t, s);
    }
    if (kind == EXP_LOGSUMEXP) {
        for (int64_t c = 0; c < w; c++) {
            double mc = load(dt, m, c);
            store(dt, y, c, isfinite(mc) ? mc + log(load(dt, s, c)) : mc);
        }
        return;
    }
    bilo_binary_kernel finish = kind == EXP_SOFTMAX ? BILO_KB_DIV : BILO_KB_SUB;
    if (kind == EXP_LOG_SOFTMAX) k_unary(k, dt, BILO_KU_LOG, s, s, w, 0);
    for (int64_t j = 0; j < r; j++) {
        void *row = elem(dt, y, j * inner);
        k_binary(k, dt, finish, row, s, row, w);
    }
}

static bilo_tensor *exp_op(const char *name, bilo_op_id op, exp_kind kind, bilo_tensor *x,
                           int axis, bool keepdim)
{
    if (!x) return NULL;
    reduce_geom g;
    if (!bilo__check_float(name, x) || !geom_init(name, x, axis, keepdim, &g)) return NULL;
    bool reduce = kind == EXP_LOGSUMEXP;
    bilo_tensor *out = reduce ? bilo__new(name, x->dtype, g.ndim, g.shape)
                              : bilo__new(name, x->dtype, x->ndim, x->shape);
    if (!out) return NULL;
    const bilo_kernels *k = bilo__kernels();
    bilo_dtype dt = x->dtype;
    const void *px = bilo__ptr(x);
    void *po = bilo__ptr(out);
    /* Over an empty axis logsumexp is log 0 and softmax has nothing to write. */
    for (int64_t i = 0; g.r == 0 && reduce && i < out->numel; i++) store(dt, po, i, -INFINITY);
    int64_t nc = col_blocks(&g), items = g.r ? g.outer * nc : 0;
    int nt = bilo__threads_for_elems(x->numel, BILO_COST_TRANSCENDENTAL);
    BILO__PARALLEL_FOR(nt, it, items, {
        int64_t o = it / nc, c0 = (it % nc) * COLS, from = o * g.r * g.inner + c0;
        void *y = elem(dt, po, reduce ? o * g.inner + c0 : from);
        if (g.inner == 1)
            exp_run(k, dt, kind, elem(dt, px, from), g.r, y);
        else
            exp_cols(k, dt, kind, elem(dt, px, from), g.r, g.inner, min64(COLS, g.inner - c0), y);
    });
    bilo_op_attrs attrs = {.axis = g.axis, .keepdim = keepdim};
    return bilo__record(op, out, &x, 1, &attrs);
}

BILO_API bilo_tensor *bilo_logsumexp(bilo_tensor *x, int axis, bool keepdim)
{
    return exp_op("bilo_logsumexp", BILO_OP_LOGSUMEXP, EXP_LOGSUMEXP, x, axis, keepdim);
}

BILO_API bilo_tensor *bilo_softmax(bilo_tensor *x, int axis)
{
    return exp_op("bilo_softmax", BILO_OP_SOFTMAX, EXP_SOFTMAX, x, axis, false);
}

BILO_API bilo_tensor *bilo_log_softmax(bilo_tensor *x, int axis)
{
    return exp_op("bilo_log_softmax", BILO_OP_LOG_SOFTMAX, EXP_LOG_SOFTMAX, x, axis, false);
}

/* ---- softmax cross-entropy: per-row losses and their fused gradient ---- */

/* Rows per work item: threads split fixed row blocks, and each row is computed whole by one
   thread, so results do not depend on the thread count. */
#define XENT_ROWS 256

bool bilo__check_class_labels(const char *op, const bilo_tensor *logits, const bilo_tensor *labels)
{
    char sl[BILO_SHAPE_BUF], sy[BILO_SHAPE_BUF];
    if (!bilo__check_float(op, logits)) return false;
    if (labels->dtype != BILO_I64) {
        bilo__fail(BILO_EDTYPE, "%s: labels are %s, not i64", op, bilo_dtype_name(labels->dtype));
        return false;
    }
    if (logits->ndim != 2 || labels->ndim != 1 || labels->shape[0] != logits->shape[0]) {
        bilo__fail(BILO_ESHAPE, "%s: logits %s and labels %s are not [n, C] and [n]", op,
                   bilo__shape_str(sl, logits->ndim, logits->shape),
                   bilo__shape_str(sy, labels->ndim, labels->shape));
        return false;
    }
    const int64_t *y = bilo__ptr(labels);
    int64_t classes = logits->shape[1];
    for (int64_t i = 0; i < labels->numel; i++) {
        if (y[i] < 0 || y[i] >= classes) {
            bilo__fail(BILO_ERANGE, "%s: label %lld at row %lld is outside [0, %lld)", op,
                       (long long)y[i], (long long)i, (long long)classes);
            return false;
        }
    }
    return true;
}

/* One block of `rows` rows of C >= 1 logits z in T (float or double). Plain loops do the
   short per-row work (a kernel call per row of ten classes costs more than the row) and one
   vector exp call covers the block; sums accumulate in double.
   shifted_exp writes e = exp(z - row max), the row maxima and the row sums of e (a NaN logit
   makes its row's max or sum NaN, so its loss and gradient row are NaN). xent_loss writes loss_i = (max_i - z_i[y_i]) + log Σ_c e_ic: the difference
   comes first, so large equal logits cancel exactly. xent_grad writes the softmax straight
   into dz and turns it into (softmax - onehot) g in place. */
#define DEFINE_XENT(T, S)                                                                       \
    static void shifted_exp_##S(const bilo_kernels *k, const T *z, int64_t rows, int64_t C,      \
                                T *e, double *row_max, double *row_sum)                          \
    {                                                                                           \
        for (int64_t r = 0; r < rows; r++) {                                                    \
            const T *zr = z + r * C;                                                            \
            T m = zr[0];                                                                        \
            for (int64_t c = 1; c < C; c++) m = zr[c] > m ? zr[c] : m;                          \
            for (int64_t c = 0; c < C; c++) e[r * C + c] = zr[c] - m;                           \
            row_max[r] = m;                                                                     \
        }                                                                                       \
        k->unary_##S[BILO_KU_EXP](e, e, rows * C, 0);                                           \
        for (int64_t r = 0; r < rows; r++) {                                                    \
            double s = 0;                                                                       \
            for (int64_t c = 0; c < C; c++) s += e[r * C + c];                                  \
            row_sum[r] = s;                                                                     \
        }                                                                                       \
    }                                                                                           \
    static void xent_loss_##S(const bilo_kernels *k, const T *z, const int64_t *labels,         \
                              int64_t rows, int64_t C, T *e, T *loss)                           \
    {                                                                                           \
        double row_max[XENT_ROWS], log_sum[XENT_ROWS];                                          \
        shifted_exp_##S(k, z, rows, C, e, row_max, log_sum);                                    \
        k->unary_f64[BILO_KU_LOG](log_sum, log_sum, rows, 0);                                   \
        for (int64_t r = 0; r < rows; r++) {                                                    \
            double m = row_max[r], picked = z[r * C + labels[r]];                               \
            loss[r] = (T)(isfinite(m) ? (m - picked) + log_sum[r] : m - picked);                \
        }                                                                                       \
    }                                                                                           \
    static void xent_grad_##S(const bilo_kernels *k, const T *z, const int64_t *labels,         \
                              const T *g, int64_t rows, int64_t C, T *dz)                       \
    {                                                                                           \
        double row_max[XENT_ROWS], row_sum[XENT_ROWS];                                          \
        shifted_exp_##S(k, z, rows, C, dz, row_max, row_sum);                                   \
        for (int64_t r = 0; r < rows; r++) {                                                    \
            T scale = (T)(g[r] / row_sum[r]), *dr = dz + r * C;                                 \
            for (int64_t c = 0; c < C; c++) dr[c] *= scale;                                     \
            dr[labels[r]] -= g[r];                                                              \
        }                                                                                       \
    }                                                                                           \
    /* out = g ⊙ p ⊙ (u - Σ_c p u) per row, p = softmax(z): e goes to out first, then each    \
       element is computed from it in double and rounded once. */                              \
    static void softmax_jvp_##S(const bilo_kernels *k, const T *z, const T *u, const T *g,      \
                                int64_t rows, int64_t C, T *out)                                \
    {                                                                                           \
        double row_max[XENT_ROWS], row_sum[XENT_ROWS];                                          \
        shifted_exp_##S(k, z, rows, C, out, row_max, row_sum);                                  \
        for (int64_t r = 0; r < rows; r++) {                                                    \
            T *o = out + r * C;                                                                 \
            const T *ur = u + r * C;                                                            \
            const double inv_sum = 1 / row_sum[r];                                              \
            double pu = 0;                                                                      \
            for (int64_t c = 0; c < C; c++) pu += o[c] * inv_sum * ur[c];                       \
            for (int64_t c = 0; c < C; c++) o[c] = (T)(g[r] * (o[c] * inv_sum) * (ur[c] - pu)); \
        }                                                                                       \
    }
DEFINE_XENT(float, f32)
DEFINE_XENT(double, f64)

/* The work of one op call: rows [0, n) of C classes, split into XENT_ROWS blocks. */
typedef struct {
    const bilo_kernels *k;
    bilo_dtype dt;
    int64_t n, C;
    const void *z;
    const int64_t *labels;
} xent_rows;

static int64_t xent_blocks(const xent_rows *w) { return (w->n + XENT_ROWS - 1) / XENT_ROWS; }

/* Losses of block b into loss; e is scratch the size of the logits. */
static void xent_loss_block(const xent_rows *w, int64_t b, void *e, void *loss)
{
    int64_t r0 = b * XENT_ROWS, rows = min64(XENT_ROWS, w->n - r0), at = r0 * w->C;
    if (w->dt == BILO_F32)
        xent_loss_f32(w->k, (const float *)w->z + at, w->labels + r0, rows, w->C,
                      (float *)e + at, (float *)loss + r0);
    else
        xent_loss_f64(w->k, (const double *)w->z + at, w->labels + r0, rows, w->C,
                      (double *)e + at, (double *)loss + r0);
}

/* Gradient rows of block b into dz for output gradient g. */
static void xent_grad_block(const xent_rows *w, int64_t b, const void *g, void *dz)
{
    int64_t r0 = b * XENT_ROWS, rows = min64(XENT_ROWS, w->n - r0), at = r0 * w->C;
    if (w->dt == BILO_F32)
        xent_grad_f32(w->k, (const float *)w->z + at, w->labels + r0, (const float *)g + r0,
                      rows, w->C, (float *)dz + at);
    else
        xent_grad_f64(w->k, (const double *)w->z + at, w->labels + r0, (const double *)g + r0,
                      rows, w->C, (double *)dz + at);
}

/* Softmax Jacobian products of block b into out, for directions u and row scales g. */
static void softmax_jvp_block(const xent_rows *w, int64_t b, const void *u, const void *g,
                              void *out)
{
    int64_t r0 = b * XENT_ROWS, rows = min64(XENT_ROWS, w->n - r0), at = r0 * w->C;
    if (w->dt == BILO_F32)
        softmax_jvp_f32(w->k, (const float *)w->z + at, (const float *)u + at,
                        (const float *)g + r0, rows, w->C, (float *)out + at);
    else
        softmax_jvp_f64(w->k, (const double *)w->z + at, (const double *)u + at,
                        (const double *)g + r0, rows, w->C, (double *)out + at);
}

static xent_rows xent_work(const bilo_tensor *logits, const bilo_tensor *labels)
{
    return (xent_rows){bilo__kernels(), logits->dtype, logits->shape[0], logits->shape[1],
                       bilo__ptr(logits), labels ? bilo__ptr(labels) : NULL};
}

/* g is [n] for logits [n, C] (dtypes checked by the caller). */
static bool check_row_scales(const char *name, const bilo_tensor *logits, const bilo_tensor *g)
{
    if (g->ndim == 1 && g->shape[0] == logits->shape[0]) return true;
    char sl[BILO_SHAPE_BUF], sg[BILO_SHAPE_BUF];
    bilo__fail(BILO_ESHAPE, "%s: g %s is not [n] for logits %s", name,
               bilo__shape_str(sg, g->ndim, g->shape),
               bilo__shape_str(sl, logits->ndim, logits->shape));
    return false;
}

BILO_API bilo_tensor *bilo_softmax_cross_entropy(bilo_tensor *logits, bilo_tensor *labels)
{
    static const char name[] = "bilo_softmax_cross_entropy";
    if (!logits || !labels) return NULL;
    if (!bilo__check_class_labels(name, logits, labels)) return NULL;
    xent_rows w = xent_work(logits, labels);
    /* The exponentials go to scratch: only the per-row sums are kept. */
    size_t scratch_bytes = (size_t)logits->numel * bilo_dtype_size(w.dt);
    void *e = scratch_bytes ? bilo__alloc(scratch_bytes) : NULL;
    if (scratch_bytes && !e)
        return bilo__fail(BILO_ENOMEM, "%s: out of memory for %zu bytes of scratch", name,
                          scratch_bytes);
    bilo_tensor *loss = bilo__new(name, w.dt, 1, &w.n);
    void *pl = loss ? bilo__ptr(loss) : NULL;
    const int nt = bilo__threads_for_elems(logits->numel, BILO_COST_TRANSCENDENTAL);
    BILO__PARALLEL_FOR(nt, b, loss ? xent_blocks(&w) : 0, { xent_loss_block(&w, b, e, pl); });
    bilo__free(e, scratch_bytes);
    bilo_tensor *in[2] = {logits, labels};
    return bilo__record(BILO_OP_SOFTMAX_CROSS_ENTROPY, loss, in, 2, NULL);
}

BILO_API bilo_tensor *bilo_softmax_cross_entropy_backward(bilo_tensor *logits,
                                                          bilo_tensor *labels, bilo_tensor *g)
{
    static const char name[] = "bilo_softmax_cross_entropy_backward";
    if (!logits || !labels || !g) return NULL;
    if (!bilo__check_class_labels(name, logits, labels) ||
        !bilo__check_same_dtype(name, logits, g) || !check_row_scales(name, logits, g))
        return NULL;
    xent_rows w = xent_work(logits, labels);
    bilo_tensor *dz = bilo__new(name, w.dt, 2, logits->shape);
    if (!dz) return NULL;
    const void *pg = bilo__ptr(g);
    void *pd = bilo__ptr(dz);
    const int nt = bilo__threads_for_elems(logits->numel, BILO_COST_TRANSCENDENTAL);
    BILO__PARALLEL_FOR(nt, b, xent_blocks(&w), { xent_grad_block(&w, b, pg, pd); });
    bilo_tensor *in[3] = {logits, labels, g};
    return bilo__record(BILO_OP_SOFTMAX_CROSS_ENTROPY_BACKWARD, dz, in, 3, NULL);
}

BILO_API bilo_tensor *bilo_softmax_jvp(bilo_tensor *logits, bilo_tensor *u, bilo_tensor *g)
{
    static const char name[] = "bilo_softmax_jvp";
    if (!logits || !u || !g) return NULL;
    if (!bilo__check_float(name, logits) || !bilo__check_same_dtype(name, logits, u) ||
        !bilo__check_same_dtype(name, logits, g))
        return NULL;
    char sl[BILO_SHAPE_BUF], su[BILO_SHAPE_BUF];
    bilo__shape_str(sl, logits->ndim, logits->shape);
    if (logits->ndim != 2)
        return bilo__fail(BILO_ESHAPE, "%s: logits %s are not [n, C]", name, sl);
    if (u->ndim != 2 || u->shape[0] != logits->shape[0] || u->shape[1] != logits->shape[1])
        return bilo__fail(BILO_ESHAPE, "%s: u %s does not match logits %s", name,
                          bilo__shape_str(su, u->ndim, u->shape), sl);
    if (!check_row_scales(name, logits, g)) return NULL;
    xent_rows w = xent_work(logits, NULL);
    bilo_tensor *out = bilo__new(name, w.dt, 2, logits->shape);
    if (!out) return NULL;
    const void *pu = bilo__ptr(u), *pg = bilo__ptr(g);
    void *po = bilo__ptr(out);
    const int nt = bilo__threads_for_elems(logits->numel, BILO_COST_TRANSCENDENTAL);
    BILO__PARALLEL_FOR(nt, b, w.C ? xent_blocks(&w) : 0, { softmax_jvp_block(&w, b, pu, pg, po); });
    bilo_tensor *in[3] = {logits, u, g};
    return bilo__record(BILO_OP_SOFTMAX_JVP, out, in, 3, NULL);
}
