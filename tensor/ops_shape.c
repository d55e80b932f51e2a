/* Shape ops. reshape is a view; permute, slice, slice_scatter, concat, stack, expand and clone
   are copies through one strided-copy engine; index_select/index_add, gather/scatter_add and
   one_hot walk index tensors; sum_to reduces in a fixed order; cast converts dtypes.
   Copies move elements as raw 4- or 8-byte units, so f32, f64 and i64 share one path. */
#include "kernels.h"
#include "parallel.h"
#include "tensor_impl.h"

#include <stdio.h>
#include <string.h>

#define COPY_CHUNK 16384 /* elements per parallel work item of a strided walk */
#define ADD_TILE 4096    /* columns per work item of index_add */
#define SUM_TILE 256     /* outputs accumulated together by sum_to */

static size_t elem_size(const bilo_tensor *t) { return bilo_dtype_size(t->dtype); }

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        strides[d] = s;
        s *= shape[d];
    }
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- strided walks ---------------------------------------------------------------------- */

/* A row-major walk over a shape that visits two operands, each with its own element strides.
   Size-1 axes are dropped and axes contiguous in both operands merged, so a copy between
   compatible layouts becomes a few long runs. */
typedef struct strided_plan {
    int ndim;
    int64_t numel;
    int64_t shape[BILO_MAX_DIMS];
    int64_t a[BILO_MAX_DIMS];
    int64_t b[BILO_MAX_DIMS];
} strided_plan;

static strided_plan plan_make(int ndim, const int64_t *shape, const int64_t *a, const int64_t *b)
{
    strided_plan p = {.ndim = 0, .numel = bilo__shape_numel(ndim, shape)};
    for (int d = 0; d < ndim; d++) {
        int last = p.ndim - 1;
        if (shape[d] == 1) continue;
        if (last >= 0 && p.a[last] == a[d] * shape[d] && p.b[last] == b[d] * shape[d]) {
            p.shape[last] *= shape[d];
            p.a[last] = a[d];
            p.b[last] = b[d];
        } else {
            p.shape[p.ndim] = shape[d];
            p.a[p.ndim] = a[d];
            p.b[p.ndim] = b[d];
            p.ndim++;
        }
    }
    if (p.ndim == 0) {
        p.ndim = 1;
        p.shape[0] = 1;
        p.a[0] = p.b[0] = 1;
    }
    return p;
}

typedef struct {
    const strided_plan *p;
    int64_t idx[BILO_MAX_DIMS];
    int64_t a, b; /* element offsets of the current position in each operand */
} walker;

static void walker_start(walker *w, const strided_plan *p, int64_t pos)
{
    w->p = p;
    w->a = w->b = 0;
    for (int d = p->ndim - 1; d >= 0; d--) {
        w->idx[d] = pos % p->shape[d];
        pos /= p->shape[d];
        w->a += w->idx[d] * p->a[d];
        w->b += w->idx[d] * p->b[d];
    }
}

/* Step `run` elements along the last axis (not past its end), carrying into outer axes. */
static void walker_advance(walker *w, int64_t run)
{
    const strided_plan *p = w->p;
    int d = p->ndim - 1;
    w->idx[d] += run;
    w->a += run * p->a[d];
    w->b += run * p->b[d];
    while (d > 0 && w->idx[d] == p->shape[d]) {
        w->a -= p->shape[d] * p->a[d];
        w->b -= p->shape[d] * p->b[d];
        w->idx[d--] = 0;
        w->idx[d]++;
        w->a += p->a[d];
        w->b += p->b[d];
    }
}

/* Called for each run of n elements along the plan's last axis starting at offsets a, b. */
typedef void (*run_fn)(const strided_plan *p, int64_t a, int64_t b, int64_t n, void *ctx);

/* Runs along unit strides copy like memcpy; any other stride gathers element by element. */
static int run_cost(const strided_plan *p)
{
    int last = p->ndim - 1;
    return p->a[last] == 1 && p->b[last] == 1 ? BILO_COST_MEMORY : BILO_COST_GATHER;
}

/* Visit the whole plan in fixed-size chunks; parallel only when no two chunks write to the
   same place (copies and gathers), serial for scatters, whose accumulation order must not
   depend on the thread count. */
static void for_each_run(const strided_plan *p, bool parallel, run_fn fn, void *ctx)
{
    int64_t nchunks = (p->numel + COPY_CHUNK - 1) / COPY_CHUNK;
    int nt = parallel ? bilo__threads_for_elems(p->numel, run_cost(p)) : 1;
    int last = p->ndim - 1;
    BILO__PARALLEL_FOR(nt, c, nchunks, {
        int64_t pos = c * COPY_CHUNK, end = min64(p->numel, pos + COPY_CHUNK);
        walker w;
        walker_start(&w, p, pos);
        while (pos < end) {
            int64_t run = min64(p->shape[last] - w.idx[last], end - pos);
            fn(p, w.a, w.b, run, ctx);
            walker_advance(&w, run);
            pos += run;
        }
    });
}

/* Expand BODY(SIZE) for the element size of the data at hand (4 or 8 bytes); memcpy of a
   constant size compiles to one move and keeps the accesses free of aliasing issues. */
#define BY_ELEM_SIZE(elem, BODY) \
    do {                         \
        if ((elem) == 4) {       \
            BODY(4);             \
        } else {                 \
            BODY(8);             \
        }                        \
    } while (0)

/* Expand BODY(T) for the C type of a float dtype. */
#define BY_FLOAT_TYPE(dtype, BODY) \
    do {                           \
        if ((dtype) == BILO_F32) { \
            BODY(float);           \
        } else {                   \
            BODY(double);          \
        }                          \
    } while (0)

/* An array seen through element strides, starting `offset` elements into data. */
typedef struct {
    char *data;
    int64_t offset;
    int64_t stride[BILO_MAX_DIMS];
} strided_view;

static strided_view view_of_shape(const bilo_tensor *t, int ndim, const int64_t *shape)
{
    strided_view v = {.data = bilo__ptr(t), .offset = 0};
    contiguous_strides(ndim, shape, v.stride);
    return v;
}

static strided_view view_of(const bilo_tensor *t) { return view_of_shape(t, t->ndim, t->shape); }

typedef struct {
    char *dst;
    const char *src;
    size_t elem;
} copy_ctx;

/* Plan operand a is the destination, b the source. */
static void copy_run(const strided_plan *p, int64_t a, int64_t b, int64_t n, void *ctx)
{
    const copy_ctx *c = ctx;
    int64_t da = p->a[p->ndim - 1], sb = p->b[p->ndim - 1];
    if (da == 1 && sb == 1) {
        memcpy(c->dst + a * (int64_t)c->elem, c->src + b * (int64_t)c->elem, (size_t)n * c->elem);
        return;
    }
#define COPY_ELEMS(SIZE)              \
    for (int64_t i = 0; i < n; i++) \
    memcpy(c->dst + (a + i * da) * SIZE, c->src + (b + i * sb) * SIZE, SIZE)
    BY_ELEM_SIZE(c->elem, COPY_ELEMS);
#undef COPY_ELEMS
}

/* dst[i] = src[i] for every multi-index i of shape. */
static void strided_copy(const strided_view *dst, const strided_view *src, int ndim,
                         const int64_t *shape, size_t elem)
{
    strided_plan p = plan_make(ndim, shape, dst->stride, src->stride);
    if (p.numel == 0) return;
    copy_ctx c = {dst->data + dst->offset * (int64_t)elem, src->data + src->offset * (int64_t)elem,
                  elem};
    for_each_run(&p, true, copy_run, &c);
}

static void copy_all(bilo_tensor *dst, const bilo_tensor *src)
{
    strided_view d = view_of(dst), s = view_of(src);
    strided_copy(&d, &s, src->ndim, src->shape, elem_size(src));
}

/* Copy x, seen with view_shape (out's ndim, x's numel), into out starting at index `at` along
   axis with the given step: the write half of concat, stack and slice_scatter. */
static void place_along(bilo_tensor *out, int axis, int64_t at, int64_t step,
                        const bilo_tensor *x, const int64_t *view_shape)
{
    strided_view dst = view_of(out), src = view_of_shape(x, out->ndim, view_shape);
    dst.offset = at * dst.stride[axis];
    dst.stride[axis] *= step;
    strided_copy(&dst, &src, out->ndim, view_shape, elem_size(out));
}

/* ---- argument checks --------------------------------------------------------------------- */

static bool check_ndim(const char *op, int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > BILO_MAX_DIMS) {
        bilo__fail(BILO_EINVAL, "%s: ndim %d is outside [0, %d]", op, ndim, BILO_MAX_DIMS);
        return false;
    }
    if (ndim > 0 && !shape) {
        bilo__fail(BILO_ENULL, "%s: shape is NULL", op);
        return false;
    }
    return true;
}

/* `what` ("index", "labels") names the argument in the message. */
static bool check_index_tensor(const char *op, const char *what, const bilo_tensor *index)
{
    if (index->dtype == BILO_I64) return true;
    bilo__fail(BILO_EDTYPE, "%s: %s must have dtype i64, got %s", op, what,
               bilo_dtype_name(index->dtype));
    return false;
}

static bool check_index_1d(const char *op, const bilo_tensor *index)
{
    if (!check_index_tensor(op, "index", index)) return false;
    if (index->ndim == 1) return true;
    char s[BILO_SHAPE_BUF];
    bilo__fail(BILO_ESHAPE, "%s: index must be 1-D, got shape %s", op,
               bilo__shape_str(s, index->ndim, index->shape));
    return false;
}

/* Every value in [0, size), else ERANGE naming the first bad value and its position. `what`
   names a value ("index", "label") and `bound` what size is ("size of axis 1"). */
static bool check_index_values(const char *op, const char *what, const bilo_tensor *index,
                               int64_t size, const char *bound)
{
    const int64_t *v = bilo__ptr(index);
    for (int64_t i = 0; i < index->numel; i++) {
        if (v[i] >= 0 && v[i] < size) continue;
        bilo__fail(BILO_ERANGE, "%s: %s %lld at position %lld is outside [0, %lld) (%s)", op,
                   what, (long long)v[i], (long long)i, (long long)size, bound);
        return false;
    }
    return true;
}

static bool check_axis_indices(const char *op, const bilo_tensor *index, int axis, int64_t size)
{
    char bound[48];
    snprintf(bound, sizeof bound, "size of axis %d", axis);
    return check_index_values(op, "index", index, size, bound);
}

static bool check_same_shape(const char *op, const bilo_tensor *a, const char *what_b,
                             int nb, const int64_t *sb)
{
    if (a->ndim == nb && memcmp(a->shape, sb, (size_t)nb * sizeof *sb) == 0) return true;
    char s1[BILO_SHAPE_BUF], s2[BILO_SHAPE_BUF];
    bilo__fail(BILO_ESHAPE, "%s: shape %s does not match %s %s", op,
               bilo__shape_str(s1, a->ndim, a->shape), what_b, bilo__shape_str(s2, nb, sb));
    return false;
}

/* Product of the axes of x before `axis` and after it. */
static void outer_inner(const bilo_tensor *x, int axis, int64_t *outer, int64_t *inner)
{
    *outer = bilo__shape_numel(axis, x->shape);
    *inner = bilo__shape_numel(x->ndim - axis - 1, x->shape + axis + 1);
}

/* ---- reshape ------------------------------------------------------------------------------- */

/* Resolve a reshape target (one -1 inferred) into out; false with an error if impossible. */
static bool reshape_target(const bilo_tensor *x, int ndim, const int64_t *shape, int64_t *out)
{
    static const char op[] = "bilo_reshape";
    char s1[BILO_SHAPE_BUF], s2[BILO_SHAPE_BUF];
    if (!check_ndim(op, ndim, shape)) return false;
    int infer = -1;
    int64_t known = 1;
    bool overflow = false;
    for (int d = 0; d < ndim; d++) {
        out[d] = shape[d];
        if (shape[d] == -1 && infer < 0) {
            infer = d;
        } else if (shape[d] < 0) {
            bilo__fail(BILO_EINVAL, "%s: invalid shape %s (one -1 at most, other sizes >= 0)",
                       op, bilo__shape_str(s1, ndim, shape));
            return false;
        } else {
            overflow |= __builtin_mul_overflow(known, shape[d], &known);
        }
    }
    /* -1 next to a zero size is ambiguous (any value fits), so it is refused */
    bool ok = !overflow && (infer >= 0 ? known > 0 && x->numel % known == 0 : known == x->numel);
    if (ok && infer >= 0) out[infer] = x->numel / known;
    if (!ok) {
        bilo__fail(BILO_ESHAPE, "%s: cannot reshape %s (%lld elements) into %s", op,
                   bilo__shape_str(s1, x->ndim, x->shape), (long long)x->numel,
                   bilo__shape_str(s2, ndim, shape));
        return false;
    }
    return true;
}

BILO_API bilo_tensor *bilo_reshape(bilo_tensor *x, int ndim, const int64_t *shape)
{
    int64_t target[BILO_MAX_DIMS];
    if (!x || !reshape_target(x, ndim, shape, target)) return NULL;
    bilo_op_attrs attrs = {0};
    return bilo__record(BILO_OP_RESHAPE, bilo__alias(x, ndim, target), &x, 1, &attrs);
}

BILO_API bilo_tensor *bilo_flatten(bilo_tensor *x)
{
    if (!x) return NULL;
    return bilo_reshape(x, 1, &x->numel);
}

/* ---- permute / transpose ------------------------------------------------------------------ */

/* perm (validated, normalised) gives out axis d = x axis perm[d]. */
static bilo_tensor *permute_copy(const char *op, bilo_tensor *x, const int *perm)
{
    int64_t shape[BILO_MAX_DIMS];
    strided_view src = view_of(x), permuted = src;
    for (int d = 0; d < x->ndim; d++) {
        shape[d] = x->shape[perm[d]];
        permuted.stride[d] = src.stride[perm[d]];
    }
    bilo_tensor *out = bilo__new(op, x->dtype, x->ndim, shape);
    if (!out) return NULL;
    strided_view dst = view_of(out);
    strided_copy(&dst, &permuted, x->ndim, shape, elem_size(x));
    bilo_op_attrs attrs = {0};
    memcpy(attrs.perm, perm, (size_t)x->ndim * sizeof *perm);
    return bilo__record(BILO_OP_PERMUTE, out, &x, 1, &attrs);
}

BILO_API bilo_tensor *bilo_permute(bilo_tensor *x, const int *perm)
{
    static const char op[] = "bilo_permute";
    if (!x) return NULL;
    if (x->ndim > 0 && !perm) return bilo__fail(BILO_ENULL, "%s: perm is NULL", op);
    int norm[BILO_MAX_DIMS];
    bool seen[BILO_MAX_DIMS] = {false};
    for (int d = 0; d < x->ndim; d++) {
        int axis = perm[d] < 0 ? perm[d] + x->ndim : perm[d];
        if (axis < 0 || axis >= x->ndim || seen[axis]) {
            char s[BILO_SHAPE_BUF];
            return bilo__fail(BILO_EINVAL,
                              "%s: perm entry %d (value %d) is not a permutation of the %d axes "
                              "of %s",
                              op, d, perm[d], x->ndim, bilo__shape_str(s, x->ndim, x->shape));
        }
        seen[axis] = true;
        norm[d] = axis;
    }
    return permute_copy(op, x, norm);
}

BILO_API bilo_tensor *bilo_transpose(bilo_tensor *x, int axis0, int axis1)
{
    static const char op[] = "bilo_transpose";
    if (!x) return NULL;
    int a0 = bilo__axis(op, axis0, x->ndim);
    int a1 = a0 < 0 ? -1 : bilo__axis(op, axis1, x->ndim);
    if (a1 < 0) return NULL;
    int perm[BILO_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) perm[d] = d;
    perm[a0] = a1;
    perm[a1] = a0;
    return permute_copy(op, x, perm);
}

/* ---- slice / slice_scatter ---------------------------------------------------------------- */

/* Python's clamping of a slice bound: negative counts from the end, then into [0, len]. */
static int64_t clamp_bound(int64_t i, int64_t len)
{
    if (i < 0) i += len;
    return i < 0 ? 0 : i > len ? len : i;
}

typedef struct {
    int axis;
    int64_t start, stop, step, count;
} slice_spec;

static bool slice_resolve(const char *op, const bilo_tensor *x, int axis, int64_t start,
                          int64_t stop, int64_t step, slice_spec *s)
{
    s->axis = bilo__axis(op, axis, x->ndim);
    if (s->axis < 0) return false;
    if (step <= 0) {
        bilo__fail(BILO_EINVAL, "%s: step %lld must be positive", op, (long long)step);
        return false;
    }
    int64_t len = x->shape[s->axis];
    s->start = clamp_bound(start, len);
    s->stop = clamp_bound(stop, len);
    s->step = step;
    s->count = s->stop > s->start ? (s->stop - s->start - 1) / step + 1 : 0;
    return true;
}

static bilo_op_attrs slice_attrs(const slice_spec *s)
{
    return (bilo_op_attrs){.axis = s->axis, .start = s->start, .stop = s->stop, .step = s->step};
}

BILO_API bilo_tensor *bilo_slice(bilo_tensor *x, int axis, int64_t start, int64_t stop,
                                 int64_t step)
{
    static const char op[] = "bilo_slice";
    slice_spec s;
    if (!x || !slice_resolve(op, x, axis, start, stop, step, &s)) return NULL;
    int64_t shape[BILO_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[s.axis] = s.count;
    bilo_tensor *out = bilo__new(op, x->dtype, x->ndim, shape);
    if (!out) return NULL;
    strided_view src = view_of(x), dst = view_of(out);
    src.offset = s.start * src.stride[s.axis];
    src.stride[s.axis] *= s.step;
    strided_copy(&dst, &src, x->ndim, shape, elem_size(x));
    bilo_op_attrs attrs = slice_attrs(&s);
    return bilo__record(BILO_OP_SLICE, out, &x, 1, &attrs);
}

BILO_API bilo_tensor *bilo_slice_scatter(bilo_tensor *base, bilo_tensor *src, int axis,
                                         int64_t start, int64_t stop, int64_t step)
{
    static const char op[] = "bilo_slice_scatter";
    slice_spec s;
    if (!base || !src) return NULL;
    if (!bilo__check_same_dtype(op, base, src) ||
        !slice_resolve(op, base, axis, start, stop, step, &s))
        return NULL;
    int64_t want[BILO_MAX_DIMS];
    memcpy(want, base->shape, sizeof want);
    want[s.axis] = s.count;
    if (!check_same_shape(op, src, "the slice's shape", base->ndim, want)) return NULL;
    bilo_tensor *out = bilo__new(op, base->dtype, base->ndim, base->shape);
    if (!out) return NULL;
    copy_all(out, base);
    place_along(out, s.axis, s.start, s.step, src, src->shape);
    bilo_op_attrs attrs = slice_attrs(&s);
    bilo_tensor *in[2] = {base, src};
    return bilo__record(BILO_OP_SLICE_SCATTER, out, in, 2, &attrs);
}

/* ---- concat / stack ----------------------------------------------------------------------- */

/* xs non-NULL with n in [1, BILO_MAX_OP_INPUTS], one dtype and one ndim; false otherwise (an
   error is set unless an entry is NULL, which propagates silently). */
static bool check_list(const char *op, bilo_tensor *const *xs, int n)
{
    if (n < 1 || n > BILO_MAX_OP_INPUTS) {
        bilo__fail(BILO_EINVAL, "%s: %d tensors given, expected 1 to %d", op, n,
                   BILO_MAX_OP_INPUTS);
        return false;
    }
    if (!xs) {
        bilo__fail(BILO_ENULL, "%s: tensor list is NULL", op);
        return false;
    }
    for (int i = 0; i < n; i++)
        if (!xs[i]) return false;
    for (int i = 1; i < n; i++)
        if (!bilo__check_same_dtype(op, xs[0], xs[i])) return false;
    return true;
}

/* Shapes of xs[0] and xs[i] agree on every axis except `skip` (-1: on every axis). */
static bool check_list_shapes(const char *op, bilo_tensor *const *xs, int n, int skip)
{
    for (int i = 1; i < n; i++) {
        bool same = xs[i]->ndim == xs[0]->ndim;
        for (int d = 0; same && d < xs[0]->ndim; d++)
            same = d == skip || xs[i]->shape[d] == xs[0]->shape[d];
        if (same) continue;
        char s0[BILO_SHAPE_BUF], si[BILO_SHAPE_BUF];
        bilo__fail(BILO_ESHAPE, "%s: tensor 0 has shape %s and tensor %d shape %s%s", op,
                   bilo__shape_str(s0, xs[0]->ndim, xs[0]->shape), i,
                   bilo__shape_str(si, xs[i]->ndim, xs[i]->shape),
                   skip >= 0 ? ", which differ outside the concatenation axis" : "");
        return false;
    }
    return true;
}

BILO_API bilo_tensor *bilo_concat(bilo_tensor *const *xs, int n, int axis)
{
    static const char op[] = "bilo_concat";
    if (!check_list(op, xs, n)) return NULL;
    int ax = bilo__axis(op, axis, xs[0]->ndim);
    if (ax < 0 || !check_list_shapes(op, xs, n, ax)) return NULL;
    int64_t shape[BILO_MAX_DIMS];
    memcpy(shape, xs[0]->shape, sizeof shape);
    shape[ax] = 0;
    for (int i = 0; i < n; i++) shape[ax] += xs[i]->shape[ax];
    bilo_tensor *out = bilo__new(op, xs[0]->dtype, xs[0]->ndim, shape);
    if (!out) return NULL;
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        place_along(out, ax, at, 1, xs[i], xs[i]->shape);
        at += xs[i]->shape[ax];
    }
    bilo_op_attrs attrs = {.axis = ax};
    return bilo__record(BILO_OP_CONCAT, out, xs, n, &attrs);
}

BILO_API bilo_tensor *bilo_stack(bilo_tensor *const *xs, int n, int axis)
{
    static const char op[] = "bilo_stack";
    if (!check_list(op, xs, n)) return NULL;
    int ndim = xs[0]->ndim;
    if (ndim == BILO_MAX_DIMS)
        return bilo__fail(BILO_EINVAL, "%s: stacking %d-dimensional tensors exceeds %d axes", op,
                          ndim, BILO_MAX_DIMS);
    int ax = bilo__axis(op, axis, ndim + 1);
    if (ax < 0 || !check_list_shapes(op, xs, n, -1)) return NULL;
    int64_t view[BILO_MAX_DIMS], shape[BILO_MAX_DIMS];
    for (int d = 0, s = 0; d <= ndim; d++) view[d] = d == ax ? 1 : xs[0]->shape[s++];
    memcpy(shape, view, sizeof shape);
    shape[ax] = n;
    bilo_tensor *out = bilo__new(op, xs[0]->dtype, ndim + 1, shape);
    if (!out) return NULL;
    for (int i = 0; i < n; i++) place_along(out, ax, i, 1, xs[i], view);
    bilo_op_attrs attrs = {.axis = ax};
    return bilo__record(BILO_OP_STACK, out, xs, n, &attrs);
}

/* ---- index_select / index_add ------------------------------------------------------------- */

BILO_API bilo_tensor *bilo_index_select(bilo_tensor *x, int axis, bilo_tensor *index)
{
    static const char op[] = "bilo_index_select";
    if (!x || !index) return NULL;
    int ax = bilo__axis(op, axis, x->ndim);
    if (ax < 0 || !check_index_1d(op, index) ||
        !check_axis_indices(op, index, ax, x->shape[ax]))
        return NULL;
    int64_t shape[BILO_MAX_DIMS], outer, inner, k = index->numel, len = x->shape[ax];
    memcpy(shape, x->shape, sizeof shape);
    shape[ax] = k;
    bilo_tensor *out = bilo__new(op, x->dtype, x->ndim, shape);
    if (!out) return NULL;
    outer_inner(x, ax, &outer, &inner);
    const int64_t *idx = bilo__ptr(index);
    size_t row = (size_t)inner * elem_size(x);
    int64_t rows = out->numel ? outer * k : 0;
    char *dst = bilo__ptr(out);
    const char *src = bilo__ptr(x);
    int nt = bilo__threads_for_elems(out->numel, BILO_COST_MEMORY);
    BILO__PARALLEL_FOR(nt, r, rows, {
        memcpy(dst + (size_t)r * row, src + (size_t)((r / k) * len + idx[r % k]) * row, row);
    });
    bilo_op_attrs attrs = {.axis = ax};
    bilo_tensor *in[2] = {x, index};
    return bilo__record(BILO_OP_INDEX_SELECT, out, in, 2, &attrs);
}

/* out[o, idx[i], c] += src[o, i, c]. Work items own disjoint column tiles of one outer slice
   and add the k source rows in index order, so repeated indices accumulate in the same order
   at any thread count. */
static void add_rows(bilo_tensor *out, int axis, const int64_t *idx, const bilo_tensor *src)
{
    int64_t outer, inner, k = src->shape[axis], len = out->shape[axis];
    outer_inner(out, axis, &outer, &inner);
    int64_t col_tiles = (inner + ADD_TILE - 1) / ADD_TILE, tiles = k ? outer * col_tiles : 0;
    int nt = bilo__threads_for_elems(src->numel, BILO_COST_MEMORY);
#define ADD_ROWS(T)                                                            \
    for (int64_t i = 0; i < k; i++) {                                          \
        T *y = (T *)bilo__ptr(out) + (o * len + idx[i]) * inner + c0;          \
        const T *x = (const T *)bilo__ptr(src) + (o * k + i) * inner + c0;     \
        for (int64_t c = 0; c < n; c++) y[c] += x[c];                          \
    }
    BILO__PARALLEL_FOR(nt, t, tiles, {
        int64_t o = t / col_tiles, c0 = t % col_tiles * ADD_TILE, n = min64(ADD_TILE, inner - c0);
        BY_FLOAT_TYPE(out->dtype, ADD_ROWS);
    });
#undef ADD_ROWS
}

BILO_API bilo_tensor *bilo_index_add(bilo_tensor *base, int axis, bilo_tensor *index,
                                     bilo_tensor *src)
{
    static const char op[] = "bilo_index_add";
    if (!base || !index || !src) return NULL;
    if (!bilo__check_float(op, base) || !bilo__check_same_dtype(op, base, src)) return NULL;
    int ax = bilo__axis(op, axis, base->ndim);
    if (ax < 0 || !check_index_1d(op, index) ||
        !check_axis_indices(op, index, ax, base->shape[ax]))
        return NULL;
    int64_t want[BILO_MAX_DIMS];
    memcpy(want, base->shape, sizeof want);
    want[ax] = index->numel;
    if (!check_same_shape(op, src, "the expected", base->ndim, want)) return NULL;
    bilo_tensor *out = bilo__new(op, base->dtype, base->ndim, base->shape);
    if (!out) return NULL;
    copy_all(out, base);
    add_rows(out, ax, bilo__ptr(index), src);
    bilo_op_attrs attrs = {.axis = ax};
    bilo_tensor *in[3] = {base, index, src};
    return bilo__record(BILO_OP_INDEX_ADD, out, in, 3, &attrs);
}

/* ---- gather / scatter_add ----------------------------------------------------------------- */

/* index has x's ndim and fits inside x on every axis but `axis`. */
static bool check_gather_shapes(const char *op, const bilo_tensor *x, int axis,
                                const bilo_tensor *index)
{
    bool fits = index->ndim == x->ndim;
    for (int d = 0; fits && d < x->ndim; d++) fits = d == axis || index->shape[d] <= x->shape[d];
    if (fits) return true;
    char si[BILO_SHAPE_BUF], sx[BILO_SHAPE_BUF];
    bilo__fail(BILO_ESHAPE,
               "%s: index shape %s does not fit %s (same ndim, sizes <= outside axis %d)", op,
               bilo__shape_str(si, index->ndim, index->shape),
               bilo__shape_str(sx, x->ndim, x->shape), axis);
    return false;
}

/* A walk over index's shape: operand a visits `big` with its axis stride zeroed (returned in
   axis_stride, to be applied per element with the index value), operand b visits index. */
static strided_plan index_plan(const bilo_tensor *big, int axis, const bilo_tensor *index,
                               int64_t *axis_stride)
{
    strided_view bv = view_of(big), iv = view_of(index);
    *axis_stride = bv.stride[axis];
    bv.stride[axis] = 0;
    return plan_make(index->ndim, index->shape, bv.stride, iv.stride);
}

typedef struct {
    char *dst;         /* gather: out (index's shape); scatter: out (base's shape) */
    const char *src;   /* gather: x; scatter: src (index's shape) */
    const int64_t *index;
    int64_t axis_stride;
    size_t elem;
    bilo_dtype dtype;
} index_ctx;

static void gather_run(const strided_plan *p, int64_t a, int64_t b, int64_t n, void *ctx)
{
    const index_ctx *g = ctx;
    int64_t sa = p->a[p->ndim - 1], sb = p->b[p->ndim - 1];
#define GATHER_ELEMS(SIZE)                                                              \
    for (int64_t i = 0; i < n; i++) {                                                   \
        int64_t q = b + i * sb;                                                         \
        memcpy(g->dst + q * SIZE, g->src + (a + i * sa + g->index[q] * g->axis_stride) * SIZE, \
               SIZE);                                                                   \
    }
    BY_ELEM_SIZE(g->elem, GATHER_ELEMS);
#undef GATHER_ELEMS
}

static void scatter_add_run(const strided_plan *p, int64_t a, int64_t b, int64_t n, void *ctx)
{
    const index_ctx *s = ctx;
    int64_t sa = p->a[p->ndim - 1], sb = p->b[p->ndim - 1];
#define SCATTER_ELEMS(T)                                                  \
    for (int64_t i = 0; i < n; i++) {                                     \
        int64_t q = b + i * sb;                                           \
        ((T *)s->dst)[a + i * sa + s->index[q] * s->axis_stride] +=       \
            ((const T *)s->src)[q];                                       \
    }
    BY_FLOAT_TYPE(s->dtype, SCATTER_ELEMS);
#undef SCATTER_ELEMS
}

BILO_API bilo_tensor *bilo_gather(bilo_tensor *x, int axis, bilo_tensor *index)
{
    static const char op[] = "bilo_gather";
    if (!x || !index) return NULL;
    int ax = bilo__axis(op, axis, x->ndim);
    if (ax < 0 || !check_index_tensor(op, "index", index) ||
        !check_gather_shapes(op, x, ax, index) || !check_axis_indices(op, index, ax, x->shape[ax]))
        return NULL;
    bilo_tensor *out = bilo__new(op, x->dtype, index->ndim, index->shape);
    if (!out) return NULL;
    index_ctx g = {.dst = bilo__ptr(out), .src = bilo__ptr(x), .index = bilo__ptr(index),
                   .elem = elem_size(x)};
    strided_plan p = index_plan(x, ax, index, &g.axis_stride);
    if (p.numel) for_each_run(&p, true, gather_run, &g);
    bilo_op_attrs attrs = {.axis = ax};
    bilo_tensor *in[2] = {x, index};
    return bilo__record(BILO_OP_GATHER, out, in, 2, &attrs);
}

BILO_API bilo_tensor *bilo_scatter_add(bilo_tensor *base, int axis, bilo_tensor *index,
                                       bilo_tensor *src)
{
    static const char op[] = "bilo_scatter_add";
    if (!base || !index || !src) return NULL;
    if (!bilo__check_float(op, base) || !bilo__check_same_dtype(op, base, src)) return NULL;
    int ax = bilo__axis(op, axis, base->ndim);
    if (ax < 0 || !check_index_tensor(op, "index", index) ||
        !check_gather_shapes(op, base, ax, index) ||
        !check_same_shape(op, src, "index shape", index->ndim, index->shape) ||
        !check_axis_indices(op, index, ax, base->shape[ax]))
        return NULL;
    bilo_tensor *out = bilo__new(op, base->dtype, base->ndim, base->shape);
    if (!out) return NULL;
    copy_all(out, base);
    index_ctx s = {.dst = bilo__ptr(out), .src = bilo__ptr(src), .index = bilo__ptr(index),
                   .dtype = base->dtype};
    strided_plan p = index_plan(out, ax, index, &s.axis_stride);
    /* serial: repeated indices must accumulate in one fixed order */
    if (p.numel) for_each_run(&p, false, scatter_add_run, &s);
    bilo_op_attrs attrs = {.axis = ax};
    bilo_tensor *in[3] = {base, index, src};
    return bilo__record(BILO_OP_SCATTER_ADD, out, in, 3, &attrs);
}

/* ---- one_hot ------------------------------------------------------------------------------- */

BILO_API bilo_tensor *bilo_one_hot(bilo_tensor *labels, int64_t num_classes, bilo_dtype dtype)
{
    static const char op[] = "bilo_one_hot";
    if (!labels) return NULL;
    if (!check_index_tensor(op, "labels", labels)) return NULL;
    if (dtype != BILO_F32 && dtype != BILO_F64)
        return bilo__fail(BILO_EDTYPE, "%s: dtype must be f32 or f64, got %d", op, (int)dtype);
    if (num_classes < 1)
        return bilo__fail(BILO_EINVAL, "%s: num_classes %lld must be positive", op,
                          (long long)num_classes);
    if (labels->ndim == BILO_MAX_DIMS)
        return bilo__fail(BILO_EINVAL, "%s: labels already have %d axes", op, BILO_MAX_DIMS);
    if (!check_index_values(op, "label", labels, num_classes, "num_classes")) return NULL;
    int64_t shape[BILO_MAX_DIMS];
    memcpy(shape, labels->shape, (size_t)labels->ndim * sizeof *shape);
    shape[labels->ndim] = num_classes;
    bilo_tensor *out = bilo__new(op, dtype, labels->ndim + 1, shape);
    if (!out) return NULL;
    const int64_t *lab = bilo__ptr(labels);
    if (out->numel) memset(bilo__ptr(out), 0, (size_t)out->numel * elem_size(out));
#define SET_ONES(T)                                                                    \
    for (int64_t i = 0; i < labels->numel; i++) ((T *)bilo__ptr(out))[i * num_classes + lab[i]] = 1;
    BY_FLOAT_TYPE(dtype, SET_ONES);
#undef SET_ONES
    bilo_op_attrs attrs = {0};
    return bilo__record(BILO_OP_ONE_HOT, out, &labels, 1, &attrs);
}

/* ---- expand / sum_to ---------------------------------------------------------------------- */

/* NumPy broadcasting of `small` alone onto `big`: right-aligned, each size equal or 1. */
static bool broadcasts_to(int ns, const int64_t *small, int nb, const int64_t *big)
{
    if (ns > nb) return false;
    for (int d = 0; d < nb; d++) {
        int s = d - (nb - ns);
        if (big[d] < 0 || (s >= 0 && small[s] != big[d] && small[s] != 1)) return false;
    }
    return true;
}

BILO_API bilo_tensor *bilo_expand(bilo_tensor *x, int ndim, const int64_t *shape)
{
    static const char op[] = "bilo_expand";
    if (!x || !check_ndim(op, ndim, shape)) return NULL;
    if (!broadcasts_to(x->ndim, x->shape, ndim, shape)) {
        char sx[BILO_SHAPE_BUF], st[BILO_SHAPE_BUF];
        return bilo__fail(BILO_ESHAPE, "%s: shape %s cannot be broadcast to %s", op,
                          bilo__shape_str(sx, x->ndim, x->shape), bilo__shape_str(st, ndim, shape));
    }
    bilo_tensor *out = bilo__new(op, x->dtype, ndim, shape);
    if (!out) return NULL;
    strided_view xv = view_of(x), src = {.data = xv.data}, dst = view_of(out);
    for (int d = 0, lead = ndim - x->ndim; d < ndim; d++)
        src.stride[d] = d < lead || x->shape[d - lead] == 1 ? 0 : xv.stride[d - lead];
    strided_copy(&dst, &src, ndim, shape, elem_size(x));
    bilo_op_attrs attrs = {0};
    return bilo__record(BILO_OP_EXPAND, out, &x, 1, &attrs);
}

/* Sums out[j0 .. j0+m) (m <= SUM_TILE): `kept` walks x over the axes out keeps, `reduced`
   over the axes summed away. Each output adds its reduced elements into a double in
   row-major order, in runs where the last reduced axis is contiguous (below), so the result
   does not depend on how outputs are split into tiles or threads. */
static void sum_tile(bilo_tensor *out, const bilo_tensor *x, const strided_plan *kept,
                     const strided_plan *reduced, int64_t j0, int64_t m)
{
    int64_t koff[SUM_TILE];
    double acc[SUM_TILE] = {0};
    walker w;
    walker_start(&w, kept, j0);
    for (int64_t t = 0; t < m; t++, walker_advance(&w, 1)) koff[t] = w.a;
    if (reduced->numel) walker_start(&w, reduced, 0);
    /* Kept elements adjacent in x (a bias gradient: [rows, n] -> [n]): the same additions
       read straight along the row, which vectorizes, instead of through koff. Otherwise,
       when the last reduced axis is contiguous (a per-channel sum, [N, C, H, W] ->
       [1, C, 1, 1]), each output sums whole runs of it with the vector sum kernel instead
       of stepping the walker once per element. */
    const bool adjacent = kept->ndim == 1 && kept->a[0] == 1;
    const int last = reduced->ndim - 1;
    const int64_t run = !adjacent && reduced->a[last] == 1 ? reduced->shape[last] : 1;
    const bilo_kernels *k = bilo__kernels();
#define SUM_REDUCED(T, SUM)                                                           \
    for (int64_t r = 0; r < reduced->numel; r += run, walker_advance(&w, run)) {     \
        const T *xp = (const T *)bilo__ptr(x) + w.a;                                  \
        if (adjacent)                                                                 \
            for (int64_t t = 0, k0 = koff[0]; t < m; t++) acc[t] += xp[k0 + t];       \
        else if (run > 1)                                                             \
            for (int64_t t = 0; t < m; t++) acc[t] += k->SUM(xp + koff[t], run);      \
        else                                                                          \
            for (int64_t t = 0; t < m; t++) acc[t] += xp[koff[t]];                    \
    }                                                                                 \
    for (int64_t t = 0; t < m; t++) ((T *)bilo__ptr(out))[j0 + t] = (T)acc[t];
    if (x->dtype == BILO_F32) {
        SUM_REDUCED(float, sum_f32)
    } else {
        SUM_REDUCED(double, sum_f64)
    }
#undef SUM_REDUCED
}

static void sum_into(bilo_tensor *out, const bilo_tensor *x)
{
    int64_t kshape[BILO_MAX_DIMS], kstride[BILO_MAX_DIMS], rshape[BILO_MAX_DIMS],
        rstride[BILO_MAX_DIMS], unused[BILO_MAX_DIMS] = {0};
    int nk = 0, nr = 0, lead = x->ndim - out->ndim;
    strided_view xv = view_of(x);
    for (int d = 0; d < x->ndim; d++) {
        if (d >= lead && out->shape[d - lead] == x->shape[d]) {
            kshape[nk] = x->shape[d];
            kstride[nk++] = xv.stride[d];
        } else {
            rshape[nr] = x->shape[d];
            rstride[nr++] = xv.stride[d];
        }
    }
    strided_plan kept = plan_make(nk, kshape, kstride, unused);
    strided_plan reduced = plan_make(nr, rshape, rstride, unused);
    int64_t tiles = (out->numel + SUM_TILE - 1) / SUM_TILE;
    int nt = bilo__threads_for_elems(x->numel, BILO_COST_MEMORY);
    BILO__PARALLEL_FOR(nt, t, tiles, {
        sum_tile(out, x, &kept, &reduced, t * SUM_TILE, min64(SUM_TILE, out->numel - t * SUM_TILE));
    });
}

BILO_API bilo_tensor *bilo_sum_to(bilo_tensor *x, int ndim, const int64_t *shape)
{
    static const char op[] = "bilo_sum_to";
    if (!x || !bilo__check_float(op, x) || !check_ndim(op, ndim, shape)) return NULL;
    if (!broadcasts_to(ndim, shape, x->ndim, x->shape)) {
        char sx[BILO_SHAPE_BUF], st[BILO_SHAPE_BUF];
        return bilo__fail(BILO_ESHAPE,
                          "%s: shape %s cannot be summed to %s (the target must broadcast to it)",
                          op, bilo__shape_str(sx, x->ndim, x->shape),
                          bilo__shape_str(st, ndim, shape));
    }
    bilo_tensor *out = bilo__new(op, x->dtype, ndim, shape);
    if (!out) return NULL;
    sum_into(out, x);
    bilo_op_attrs attrs = {0};
    return bilo__record(BILO_OP_SUM_TO, out, &x, 1, &attrs);
}

/* ---- clone / cast ------------------------------------------------------------------------- */

BILO_API bilo_tensor *bilo_clone(bilo_tensor *x)
{
    if (!x) return NULL;
    bilo_tensor *out = bilo__new("bilo_clone", x->dtype, x->ndim, x->shape);
    if (!out) return NULL;
    copy_all(out, x);
    bilo_op_attrs attrs = {0};
    return bilo__record(BILO_OP_CLONE, out, &x, 1, &attrs);
}

/* A float → i64 cast truncates toward zero, which C defines only for finite values inside
   int64's range: anything else is refused, naming the first offending value. */
static bool check_i64_range(const char *op, const bilo_tensor *x)
{
    int64_t bad = -1;
    double value = 0;
#define FIND_UNREPRESENTABLE(T)                                            \
    for (int64_t i = 0; i < x->numel && bad < 0; i++) {                    \
        double v = ((const T *)bilo__ptr(x))[i];                           \
        if (!(v >= -0x1p63 && v < 0x1p63)) bad = i, value = v;             \
    }
    BY_FLOAT_TYPE(x->dtype, FIND_UNREPRESENTABLE);
#undef FIND_UNREPRESENTABLE
    if (bad < 0) return true;
    bilo__fail(BILO_ENUMERIC, "%s: value %g at position %lld has no i64 representation", op, value,
               (long long)bad);
    return false;
}

static void convert_range(bilo_tensor *out, const bilo_tensor *x, int64_t begin, int64_t end)
{
#define CONVERT(TS, TD)                                                                 \
    for (int64_t i = begin; i < end; i++)                                               \
        ((TD *)bilo__ptr(out))[i] = (TD)((const TS *)bilo__ptr(x))[i];
#define CONVERT_FROM(TS)                                                                \
    switch (out->dtype) {                                                               \
    case BILO_F32: CONVERT(TS, float) break;                                            \
    case BILO_F64: CONVERT(TS, double) break;                                           \
    case BILO_I64: CONVERT(TS, int64_t) break;                                          \
    }
    switch (x->dtype) {
    case BILO_F32: CONVERT_FROM(float) break;
    case BILO_F64: CONVERT_FROM(double) break;
    case BILO_I64: CONVERT_FROM(int64_t) break;
    }
#undef CONVERT_FROM
#undef CONVERT
}

BILO_API bilo_tensor *bilo_cast(bilo_tensor *x, bilo_dtype dtype)
{
    static const char op[] = "bilo_cast";
    if (!x) return NULL;
    if (dtype != BILO_F32 && dtype != BILO_F64 && dtype != BILO_I64)
        return bilo__fail(BILO_EDTYPE, "%s: unknown dtype %d", op, (int)dtype);
    if (dtype == BILO_I64 && x->dtype != BILO_I64 && !check_i64_range(op, x)) return NULL;
    bilo_tensor *out = bilo__new(op, dtype, x->ndim, x->shape);
    if (!out) return NULL;
    int64_t n = x->numel, chunks = (n + COPY_CHUNK - 1) / COPY_CHUNK;
    int nt = bilo__threads_for_elems(n, BILO_COST_MEMORY);
    BILO__PARALLEL_FOR(nt, c, chunks, {
        convert_range(out, x, c * COPY_CHUNK, min64(n, (c + 1) * COPY_CHUNK));
    });
    bilo_op_attrs attrs = {0};
    return bilo__record(BILO_OP_CAST, out, &x, 1, &attrs);
}
