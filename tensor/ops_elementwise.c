/* Elementwise ops: unary maps, binary ops and where with NumPy broadcasting, and the in-place
   updates (fill_, copy_, axpy_, scale_). The kernels do the arithmetic on contiguous runs;
   this file turns shapes into such runs and splits them over threads. */
#include "kernels.h"
#include "parallel.h"
#include "tensor_impl.h"

#include <math.h>
#include <string.h>

/* Elements per parallel work item. Fixed, so how work is cut never depends on threads. */
#define CHUNK 2048
/* Output rows shorter than this are gathered into contiguous blocks of GATHER_BLOCK
   elements first, so [N,1] + [1,M] or [N,3] + [3] cost one kernel call per block instead
   of one per row. */
#define SHORT_ROW 64
#define GATHER_BLOCK 512
#define MAX_OPERANDS 3
#define WHERE_KERNEL (-1)

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static int64_t chunk_count(int64_t n) { return (n + CHUNK - 1) / CHUNK; }

static void bump_version(bilo_tensor *t) { atomic_fetch_add(&t->storage->version, 1); }

static bool same_shape(const bilo_tensor *a, const bilo_tensor *b)
{
    return a->ndim == b->ndim && !memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape);
}

static int fail_shapes(const char *op, const bilo_tensor *a, const bilo_tensor *b)
{
    char sa[BILO_SHAPE_BUF], sb[BILO_SHAPE_BUF];
    return bilo__fail_code(BILO_ESHAPE, "%s: shapes %s and %s differ", op,
                           bilo__shape_str(sa, a->ndim, a->shape),
                           bilo__shape_str(sb, b->ndim, b->shape));
}

/* ---- unary ------------------------------------------------------------------------ */

/* Per-element cost of a kernel (BILO_COST_*), which sets the size from which it threads. */
static int unary_cost(bilo_unary_kernel id)
{
    switch (id) {
    case BILO_KU_NEG: case BILO_KU_ABS: case BILO_KU_SQRT: case BILO_KU_RSQRT:
    case BILO_KU_SQUARE: case BILO_KU_RECIPROCAL: case BILO_KU_RELU: case BILO_KU_SIGN:
    case BILO_KU_ADD_SCALAR: case BILO_KU_MUL_SCALAR: case BILO_KU_RSUB_SCALAR:
        return BILO_COST_MEMORY;
    case BILO_KU_ERF: case BILO_KU_SOFTPLUS: case BILO_KU_POW_SCALAR:
        return BILO_COST_HEAVY;
    default:
        return BILO_COST_TRANSCENDENTAL;
    }
}

static int binary_cost(int kernel)
{
    return kernel == BILO_KB_POW ? BILO_COST_HEAVY : BILO_COST_MEMORY;
}

/* y[lo, lo+len) = f(x[lo, lo+len)); x and y may be the same buffer. */
static void unary_range(const bilo_kernels *k, bilo_unary_kernel id, bilo_dtype dtype,
                        const void *x, void *y, int64_t lo, int64_t len, double p)
{
    if (dtype == BILO_F32)
        k->unary_f32[id]((const float *)x + lo, (float *)y + lo, len, p);
    else
        k->unary_f64[id]((const double *)x + lo, (double *)y + lo, len, p);
}

static void run_unary(bilo_unary_kernel id, bilo_dtype dtype, const void *x, void *y, int64_t n,
                      double p)
{
    const bilo_kernels *k = bilo__kernels();
    int64_t chunks = chunk_count(n);
    int nt = bilo__threads_for_elems(n, unary_cost(id));
    BILO__PARALLEL_FOR(nt, c, chunks, {
        unary_range(k, id, dtype, x, y, c * CHUNK, min64(CHUNK, n - c * CHUNK), p);
    });
}

/* What elementwise ops hand the recording hook, which copies it into the node before it runs
   anything that could reach another op (so the per-thread scalar is not overwritten). A struct
   literal per call would clear all of bilo_op_attrs with a rep stos, whose start-up cost was
   half of a small unary op's own time (perf, chain benchmark); these are cleared once. */
static const bilo_op_attrs no_attrs;

static const bilo_op_attrs *scalar_attrs(double p)
{
    static _Thread_local bilo_op_attrs attrs;
    attrs.scalar = p;
    return &attrs;
}

static bilo_tensor *unary_op(const char *name, bilo_op_id op, bilo_unary_kernel kernel,
                             bilo_tensor *x, double p)
{
    if (!x) return NULL;
    if (!bilo__check_float(name, x)) return NULL;
    bilo_tensor *y = bilo__new(name, x->dtype, x->ndim, x->shape);
    if (!y) return NULL;
    run_unary(kernel, x->dtype, bilo__ptr(x), bilo__ptr(y), x->numel, p);
    return bilo__record(op, y, &x, 1, scalar_attrs(p));
}

BILO_API bilo_tensor *bilo_neg(bilo_tensor *x)
{
    return unary_op("bilo_neg", BILO_OP_NEG, BILO_KU_NEG, x, 0);
}
BILO_API bilo_tensor *bilo_abs(bilo_tensor *x)
{
    return unary_op("bilo_abs", BILO_OP_ABS, BILO_KU_ABS, x, 0);
}
BILO_API bilo_tensor *bilo_exp(bilo_tensor *x)
{
    return unary_op("bilo_exp", BILO_OP_EXP, BILO_KU_EXP, x, 0);
}
BILO_API bilo_tensor *bilo_log(bilo_tensor *x)
{
    return unary_op("bilo_log", BILO_OP_LOG, BILO_KU_LOG, x, 0);
}
BILO_API bilo_tensor *bilo_log1p(bilo_tensor *x)
{
    return unary_op("bilo_log1p", BILO_OP_LOG1P, BILO_KU_LOG1P, x, 0);
}
BILO_API bilo_tensor *bilo_expm1(bilo_tensor *x)
{
    return unary_op("bilo_expm1", BILO_OP_EXPM1, BILO_KU_EXPM1, x, 0);
}
BILO_API bilo_tensor *bilo_sqrt(bilo_tensor *x)
{
    return unary_op("bilo_sqrt", BILO_OP_SQRT, BILO_KU_SQRT, x, 0);
}
BILO_API bilo_tensor *bilo_rsqrt(bilo_tensor *x)
{
    return unary_op("bilo_rsqrt", BILO_OP_RSQRT, BILO_KU_RSQRT, x, 0);
}
BILO_API bilo_tensor *bilo_square(bilo_tensor *x)
{
    return unary_op("bilo_square", BILO_OP_SQUARE, BILO_KU_SQUARE, x, 0);
}
BILO_API bilo_tensor *bilo_reciprocal(bilo_tensor *x)
{
    return unary_op("bilo_reciprocal", BILO_OP_RECIPROCAL, BILO_KU_RECIPROCAL, x, 0);
}
BILO_API bilo_tensor *bilo_sin(bilo_tensor *x)
{
    return unary_op("bilo_sin", BILO_OP_SIN, BILO_KU_SIN, x, 0);
}
BILO_API bilo_tensor *bilo_cos(bilo_tensor *x)
{
    return unary_op("bilo_cos", BILO_OP_COS, BILO_KU_COS, x, 0);
}
BILO_API bilo_tensor *bilo_tanh(bilo_tensor *x)
{
    return unary_op("bilo_tanh", BILO_OP_TANH, BILO_KU_TANH, x, 0);
}
BILO_API bilo_tensor *bilo_sigmoid(bilo_tensor *x)
{
    return unary_op("bilo_sigmoid", BILO_OP_SIGMOID, BILO_KU_SIGMOID, x, 0);
}
BILO_API bilo_tensor *bilo_relu(bilo_tensor *x)
{
    return unary_op("bilo_relu", BILO_OP_RELU, BILO_KU_RELU, x, 0);
}
BILO_API bilo_tensor *bilo_softplus(bilo_tensor *x)
{
    return unary_op("bilo_softplus", BILO_OP_SOFTPLUS, BILO_KU_SOFTPLUS, x, 0);
}
BILO_API bilo_tensor *bilo_erf(bilo_tensor *x)
{
    return unary_op("bilo_erf", BILO_OP_ERF, BILO_KU_ERF, x, 0);
}
BILO_API bilo_tensor *bilo_sign(bilo_tensor *x)
{
    return unary_op("bilo_sign", BILO_OP_SIGN, BILO_KU_SIGN, x, 0);
}
BILO_API bilo_tensor *bilo_pow_scalar(bilo_tensor *x, double p)
{
    return unary_op("bilo_pow_scalar", BILO_OP_POW_SCALAR, BILO_KU_POW_SCALAR, x, p);
}
BILO_API bilo_tensor *bilo_add_scalar(bilo_tensor *x, double s)
{
    return unary_op("bilo_add_scalar", BILO_OP_ADD_SCALAR, BILO_KU_ADD_SCALAR, x, s);
}
BILO_API bilo_tensor *bilo_mul_scalar(bilo_tensor *x, double s)
{
    return unary_op("bilo_mul_scalar", BILO_OP_MUL_SCALAR, BILO_KU_MUL_SCALAR, x, s);
}
BILO_API bilo_tensor *bilo_rsub_scalar(bilo_tensor *x, double s)
{
    return unary_op("bilo_rsub_scalar", BILO_OP_RSUB_SCALAR, BILO_KU_RSUB_SCALAR, x, s);
}

/* ---- broadcasting ------------------------------------------------------------------- */

/* How an operand is read over a block of consecutive output elements. */
typedef enum { READ_SCALAR, READ_FULL, READ_GATHER } read_mode;

/* The output viewed as nd collapsed axes: size-1 axes dropped and neighbours merged where
   every operand is contiguous across them, so the innermost axis is as long as possible.
   Operand strides are in elements, 0 along broadcast axes; the innermost is 0 or 1. */
typedef struct {
    const bilo_kernels *k;
    int kernel; /* bilo_binary_kernel, or WHERE_KERNEL */
    bilo_dtype dtype;
    size_t esize;
    int nops;
    const char *src[MAX_OPERANDS];
    char *dst;
    int nd;
    int64_t shape[BILO_MAX_DIMS];
    int64_t stride[MAX_OPERANDS][BILO_MAX_DIMS];
    read_mode mode[MAX_OPERANDS];
} bcast_plan;

/* Strides of t read as an operand of an nout-dim output of shape sout. */
static void operand_strides(const bilo_tensor *t, int nout, const int64_t *sout, int64_t *stride)
{
    int lead = nout - t->ndim;
    int64_t step = 1;
    for (int d = nout - 1; d >= 0; d--) {
        int64_t dim = d < lead ? 1 : t->shape[d - lead];
        stride[d] = dim == 1 ? 0 : step;
        step *= dim;
    }
}

static read_mode operand_mode(const bcast_plan *p, int op)
{
    bool all_zero = true, contiguous = true;
    int64_t step = 1;
    for (int d = p->nd - 1; d >= 0; d--) {
        all_zero &= p->stride[op][d] == 0;
        contiguous &= p->stride[op][d] == step;
        step *= p->shape[d];
    }
    return all_zero ? READ_SCALAR : contiguous ? READ_FULL : READ_GATHER;
}

/* The kernel, the data pointers and no axes yet. */
static void plan_base(bcast_plan *p, int kernel, bilo_tensor *const *in, int nops,
                      bilo_tensor *out)
{
    p->k = bilo__kernels();
    p->kernel = kernel;
    p->dtype = out->dtype;
    p->esize = bilo_dtype_size(out->dtype);
    p->nops = nops;
    p->dst = bilo__ptr(out);
    p->nd = 0;
    for (int i = 0; i < nops; i++) p->src[i] = bilo__ptr(in[i]);
}

static void plan_init(bcast_plan *p, int kernel, bilo_tensor *const *in, int nops, int nout,
                      const int64_t *sout, bilo_tensor *out)
{
    int64_t full[MAX_OPERANDS][BILO_MAX_DIMS];
    plan_base(p, kernel, in, nops, out);
    for (int i = 0; i < nops; i++) operand_strides(in[i], nout, sout, full[i]);
    for (int d = 0; d < nout; d++) {
        if (sout[d] == 1) continue;
        bool merge = p->nd > 0;
        for (int i = 0; merge && i < nops; i++)
            merge = p->stride[i][p->nd - 1] == full[i][d] * sout[d];
        int at = merge ? p->nd - 1 : p->nd++;
        p->shape[at] = merge ? p->shape[at] * sout[d] : sout[d];
        for (int i = 0; i < nops; i++) p->stride[i][at] = full[i][d];
    }
    if (p->nd == 0) { /* every axis has size 1: one element */
        p->nd = 1;
        p->shape[0] = 1;
        for (int i = 0; i < nops; i++) p->stride[i][0] = 0;
    }
    for (int i = 0; i < nops; i++) p->mode[i] = operand_mode(p, i);
}

static void apply_kernel(const bcast_plan *p, const char *const *src, const int64_t *st,
                         char *dst, int64_t n)
{
    const bilo_kernels *k = p->k;
    if (p->kernel == WHERE_KERNEL && p->dtype == BILO_F32)
        k->where_f32((const float *)src[0], st[0], (const float *)src[1], st[1],
                     (const float *)src[2], st[2], (float *)dst, n);
    else if (p->kernel == WHERE_KERNEL)
        k->where_f64((const double *)src[0], st[0], (const double *)src[1], st[1],
                     (const double *)src[2], st[2], (double *)dst, n);
    else if (p->dtype == BILO_F32)
        k->binary_f32[p->kernel]((const float *)src[0], st[0], (const float *)src[1], st[1],
                                 (float *)dst, n);
    else
        k->binary_f64[p->kernel]((const double *)src[0], st[0], (const double *)src[1], st[1],
                                 (double *)dst, n);
}

/* ---- positions in the collapsed output ---- */

static void seek(const bcast_plan *p, int64_t pos, int64_t *idx)
{
    for (int d = p->nd - 1; d >= 0; d--) {
        idx[d] = pos % p->shape[d];
        pos /= p->shape[d];
    }
}

static int64_t operand_offset(const bcast_plan *p, int op, const int64_t *idx)
{
    int64_t off = 0;
    for (int d = 0; d < p->nd; d++) off += idx[d] * p->stride[op][d];
    return off;
}

/* Move idx on by len elements that stay within the current row. */
static void advance(const bcast_plan *p, int64_t *idx, int64_t len)
{
    int last = p->nd - 1;
    idx[last] += len;
    for (int d = last; d > 0 && idx[d] == p->shape[d]; d--) {
        idx[d] = 0;
        idx[d - 1]++;
    }
}

/* Output elements [lo, hi) with one kernel call per run along the innermost axis. */
static void run_rows(const bcast_plan *p, int64_t lo, int64_t hi)
{
    int last = p->nd - 1;
    int64_t idx[BILO_MAX_DIMS];
    seek(p, lo, idx);
    for (int64_t pos = lo; pos < hi;) {
        int64_t len = min64(p->shape[last] - idx[last], hi - pos);
        const char *src[MAX_OPERANDS];
        int64_t st[MAX_OPERANDS];
        for (int i = 0; i < p->nops; i++) {
            src[i] = p->src[i] + (size_t)operand_offset(p, i, idx) * p->esize;
            st[i] = p->stride[i][last];
        }
        apply_kernel(p, src, st, p->dst + (size_t)pos * p->esize, len);
        pos += len;
        advance(p, idx, len);
    }
}

/* buf[0, hi-lo) = operand op at output positions [lo, hi), with the index arithmetic done
   once per row. */
#define DEFINE_GATHER(T)                                                                  \
    static void gather_##T(const bcast_plan *p, int op, int64_t lo, int64_t hi, T *buf)  \
    {                                                                                     \
        int last = p->nd - 1;                                                             \
        int64_t idx[BILO_MAX_DIMS], step = p->stride[op][last];                           \
        seek(p, lo, idx);                                                                 \
        for (int64_t pos = lo; pos < hi;) {                                               \
            int64_t len = min64(p->shape[last] - idx[last], hi - pos);                    \
            const T *row = (const T *)p->src[op] + operand_offset(p, op, idx);           \
            for (int64_t j = 0; j < len; j++) buf[pos - lo + j] = row[j * step];          \
            pos += len;                                                                   \
            advance(p, idx, len);                                                         \
        }                                                                                 \
    }
DEFINE_GATHER(float)
DEFINE_GATHER(double)

/* Output elements [lo, hi) with one kernel call: broadcast operands are first gathered into
   contiguous buffers. */
static void gather_block(const bcast_plan *p, int64_t lo, int64_t hi)
{
    union {
        float f32[GATHER_BLOCK];
        double f64[GATHER_BLOCK];
    } buf[MAX_OPERANDS];
    const char *src[MAX_OPERANDS];
    int64_t st[MAX_OPERANDS];
    for (int i = 0; i < p->nops; i++) {
        st[i] = p->mode[i] != READ_SCALAR;
        src[i] = p->mode[i] == READ_FULL ? p->src[i] + (size_t)lo * p->esize : p->src[i];
        if (p->mode[i] != READ_GATHER) continue;
        if (p->dtype == BILO_F32)
            gather_float(p, i, lo, hi, buf[i].f32);
        else
            gather_double(p, i, lo, hi, buf[i].f64);
        src[i] = (const char *)&buf[i];
    }
    apply_kernel(p, src, st, p->dst + (size_t)lo * p->esize, hi - lo);
}

static void run_range(const bcast_plan *p, int64_t lo, int64_t hi)
{
    if (p->nd == 1 || p->shape[p->nd - 1] >= SHORT_ROW) {
        run_rows(p, lo, hi);
        return;
    }
    for (int64_t b = lo; b < hi; b += GATHER_BLOCK) gather_block(p, b, min64(b + GATHER_BLOCK, hi));
}

/* Output elements [lo, hi) when every operand has the output's shape: one kernel call, as
   run_rows makes on the one collapsed axis such a plan has, without its index arithmetic. */
static void run_contiguous(const bcast_plan *p, int64_t lo, int64_t hi)
{
    const char *src[MAX_OPERANDS];
    const int64_t st[MAX_OPERANDS] = {1, 1, 1};
    for (int i = 0; i < p->nops; i++) src[i] = p->src[i] + (size_t)lo * p->esize;
    apply_kernel(p, src, st, p->dst + (size_t)lo * p->esize, hi - lo);
}

static bool operands_share_shape(bilo_tensor *const *in, int nops)
{
    for (int i = 1; i < nops; i++)
        if (!same_shape(in[0], in[i])) return false;
    return true;
}

/* The common case of operands of one shape, without broadcast planning (a small op's
   dispatch cost is most of its time). */
static bilo_tensor *same_shape_apply(const char *name, int kernel, bilo_tensor *const *in,
                                     int nops)
{
    bilo_tensor *out = bilo__new(name, in[0]->dtype, in[0]->ndim, in[0]->shape);
    if (!out || out->numel == 0) return out;
    bcast_plan plan;
    plan_base(&plan, kernel, in, nops, out);
    int64_t n = out->numel, chunks = chunk_count(n);
    int nt = bilo__threads_for_elems(n, binary_cost(kernel));
    BILO__PARALLEL_FOR(nt, c, chunks, {
        run_contiguous(&plan, c * CHUNK, min64((c + 1) * CHUNK, n));
    });
    return out;
}

/* New tensor holding kernel applied to the broadcast operands in[0..nops). */
static bilo_tensor *broadcast_apply(const char *name, int kernel, bilo_tensor *const *in,
                                    int nops)
{
    if (operands_share_shape(in, nops)) return same_shape_apply(name, kernel, in, nops);
    int nd = in[0]->ndim;
    int64_t shape[BILO_MAX_DIMS], next[BILO_MAX_DIMS];
    memcpy(shape, in[0]->shape, (size_t)nd * sizeof *shape);
    for (int i = 1; i < nops; i++) {
        if (!bilo__broadcast_shape(name, nd, shape, in[i]->ndim, in[i]->shape, &nd, next))
            return NULL;
        memcpy(shape, next, (size_t)nd * sizeof *shape);
    }
    bilo_tensor *out = bilo__new(name, in[0]->dtype, nd, shape);
    if (!out || out->numel == 0) return out;
    bcast_plan plan;
    plan_init(&plan, kernel, in, nops, nd, shape, out);
    int64_t n = out->numel, chunks = chunk_count(n);
    int nt = bilo__threads_for_elems(n, binary_cost(kernel));
    BILO__PARALLEL_FOR(nt, c, chunks, {
        run_range(&plan, c * CHUNK, min64((c + 1) * CHUNK, n));
    });
    return out;
}

static bool check_float_operands(const char *name, bilo_tensor *const *in, int n)
{
    for (int i = 0; i < n; i++)
        if (!bilo__check_float(name, in[i])) return false;
    for (int i = 1; i < n; i++)
        if (!bilo__check_same_dtype(name, in[0], in[i])) return false;
    return true;
}

static bilo_tensor *binary_op(const char *name, bilo_op_id op, bilo_binary_kernel kernel,
                              bilo_tensor *a, bilo_tensor *b)
{
    if (!a || !b) return NULL;
    bilo_tensor *in[2] = {a, b};
    if (!check_float_operands(name, in, 2)) return NULL;
    bilo_tensor *out = broadcast_apply(name, (int)kernel, in, 2);
    return bilo__record(op, out, in, 2, &no_attrs);
}

BILO_API bilo_tensor *bilo_add(bilo_tensor *a, bilo_tensor *b)
{
    return binary_op("bilo_add", BILO_OP_ADD, BILO_KB_ADD, a, b);
}
BILO_API bilo_tensor *bilo_sub(bilo_tensor *a, bilo_tensor *b)
{
    return binary_op("bilo_sub", BILO_OP_SUB, BILO_KB_SUB, a, b);
}
BILO_API bilo_tensor *bilo_mul(bilo_tensor *a, bilo_tensor *b)
{
    return binary_op("bilo_mul", BILO_OP_MUL, BILO_KB_MUL, a, b);
}
BILO_API bilo_tensor *bilo_div(bilo_tensor *a, bilo_tensor *b)
{
    return binary_op("bilo_div", BILO_OP_DIV, BILO_KB_DIV, a, b);
}
BILO_API bilo_tensor *bilo_pow(bilo_tensor *a, bilo_tensor *b)
{
    return binary_op("bilo_pow", BILO_OP_POW, BILO_KB_POW, a, b);
}
BILO_API bilo_tensor *bilo_maximum(bilo_tensor *a, bilo_tensor *b)
{
    return binary_op("bilo_maximum", BILO_OP_MAXIMUM, BILO_KB_MAXIMUM, a, b);
}
BILO_API bilo_tensor *bilo_minimum(bilo_tensor *a, bilo_tensor *b)
{
    return binary_op("bilo_minimum", BILO_OP_MINIMUM, BILO_KB_MINIMUM, a, b);
}
BILO_API bilo_tensor *bilo_tanh_backward(bilo_tensor *y, bilo_tensor *g)
{
    return binary_op("bilo_tanh_backward", BILO_OP_TANH_BACKWARD, BILO_KB_TANH_GRAD, y, g);
}
BILO_API bilo_tensor *bilo_sigmoid_backward(bilo_tensor *y, bilo_tensor *g)
{
    return binary_op("bilo_sigmoid_backward", BILO_OP_SIGMOID_BACKWARD, BILO_KB_SIGMOID_GRAD, y,
                     g);
}
BILO_API bilo_tensor *bilo_gt(bilo_tensor *a, bilo_tensor *b)
{
    return binary_op("bilo_gt", BILO_OP_GT, BILO_KB_GT, a, b);
}
BILO_API bilo_tensor *bilo_ge(bilo_tensor *a, bilo_tensor *b)
{
    return binary_op("bilo_ge", BILO_OP_GE, BILO_KB_GE, a, b);
}
BILO_API bilo_tensor *bilo_lt(bilo_tensor *a, bilo_tensor *b)
{
    return binary_op("bilo_lt", BILO_OP_LT, BILO_KB_LT, a, b);
}
BILO_API bilo_tensor *bilo_le(bilo_tensor *a, bilo_tensor *b)
{
    return binary_op("bilo_le", BILO_OP_LE, BILO_KB_LE, a, b);
}
BILO_API bilo_tensor *bilo_eq(bilo_tensor *a, bilo_tensor *b)
{
    return binary_op("bilo_eq", BILO_OP_EQ, BILO_KB_EQ, a, b);
}

BILO_API bilo_tensor *bilo_where(bilo_tensor *mask, bilo_tensor *a, bilo_tensor *b)
{
    if (!mask || !a || !b) return NULL;
    bilo_tensor *in[3] = {mask, a, b};
    if (!check_float_operands("bilo_where", in, 3)) return NULL;
    bilo_tensor *out = broadcast_apply("bilo_where", WHERE_KERNEL, in, 3);
    return bilo__record(BILO_OP_WHERE, out, in, 3, &no_attrs);
}

/* ---- in place ------------------------------------------------------------------------ */

BILO_API int bilo_fill_(bilo_tensor *t, double value)
{
    if (!t) return BILO_ENULL;
    bilo__fill(t, value);
    bump_version(t);
    return 0;
}

/* Float to int64 truncating toward zero like a C cast, but defined for every input:
   NaN becomes 0 and out-of-range values saturate. */
static int64_t to_i64(double v)
{
    if (isnan(v)) return 0;
    if (v >= 0x1p63) return INT64_MAX;
    if (v < -0x1p63) return INT64_MIN;
    return (int64_t)v;
}

#define CONVERT_float(v) ((float)(v))
#define CONVERT_double(v) ((double)(v))
#define CONVERT_int64_t(v) to_i64((double)(v))
#define CONVERT_LOOP(DT, ST)                                                   \
    for (int64_t i = 0; i < n; i++) ((DT *)dst)[i] = CONVERT_##DT(((const ST *)src)[i])
#define CONVERT_FROM(DT)                                               \
    switch (from) {                                                    \
    case BILO_F32: CONVERT_LOOP(DT, float); break;                     \
    case BILO_F64: CONVERT_LOOP(DT, double); break;                    \
    case BILO_I64: CONVERT_LOOP(DT, int64_t); break;                   \
    }

static void convert(void *dst, bilo_dtype to, const void *src, bilo_dtype from, int64_t n)
{
    switch (to) {
    case BILO_F32: CONVERT_FROM(float) break;
    case BILO_F64: CONVERT_FROM(double) break;
    case BILO_I64: CONVERT_FROM(int64_t) break;
    }
}

BILO_API int bilo_copy_(bilo_tensor *dst, bilo_tensor *src)
{
    if (!dst || !src) return BILO_ENULL;
    if (!same_shape(dst, src)) return fail_shapes("bilo_copy_", dst, src);
    if (dst->dtype == src->dtype)
        memmove(bilo__ptr(dst), bilo__ptr(src), (size_t)dst->numel * bilo_dtype_size(dst->dtype));
    else
        convert(bilo__ptr(dst), dst->dtype, bilo__ptr(src), src->dtype, dst->numel);
    bump_version(dst);
    return 0;
}

BILO_API int bilo_axpy_(bilo_tensor *y, double alpha, bilo_tensor *x)
{
    if (!y || !x) return BILO_ENULL;
    bilo_tensor *in[2] = {y, x};
    if (!check_float_operands("bilo_axpy_", in, 2)) return bilo_errcode();
    if (!same_shape(y, x)) return fail_shapes("bilo_axpy_", y, x);
    const bilo_kernels *k = bilo__kernels();
    int64_t n = y->numel, chunks = chunk_count(n);
    int nt = bilo__threads_for_elems(n, BILO_COST_MEMORY);
    BILO__PARALLEL_FOR(nt, c, chunks, {
        int64_t lo = c * CHUNK, len = min64(CHUNK, n - lo);
        if (y->dtype == BILO_F32)
            k->axpy_f32(len, (float)alpha, (const float *)bilo__ptr(x) + lo,
                        (float *)bilo__ptr(y) + lo);
        else
            k->axpy_f64(len, alpha, (const double *)bilo__ptr(x) + lo,
                        (double *)bilo__ptr(y) + lo);
    });
    bump_version(y);
    return 0;
}

BILO_API int bilo_scale_(bilo_tensor *t, double alpha)
{
    if (!t) return BILO_ENULL;
    if (!bilo__check_float("bilo_scale_", t)) return bilo_errcode();
    run_unary(BILO_KU_MUL_SCALAR, t->dtype, bilo__ptr(t), bilo__ptr(t), t->numel, alpha);
    bump_version(t);
    return 0;
}
