/* The op table: one row per bilo_op_id with its name, backward rule, differentiable inputs
   and whether the rule reads the op's output.
 *
 * Every rule is written with public ops only. Without CREATE_GRAPH the engine runs them
 * under no-grad; with it they are recorded, so the gradient they return is differentiable
 * again (double backprop). Inputs are named as in the public functions: x[0] is the first
 * tensor argument, and so on (the mask of where, the index of index_select, ...).
 *
 * Non-differentiable ops (comparisons, argmax, one_hot, sign) have no rule: their outputs
 * never require grad, so a graph through them is cut there (sign's true derivative is zero
 * almost everywhere, which this matches). */
#include "autograd_impl.h"

#include <string.h>

#define G (c->g)
#define Y (c->y)
#define X0 (c->x[0])
#define X1 (c->x[1])

/* The broadcast gradient t summed back to the shape of input `like`. */
static bilo_tensor *reduce_to(bilo_tensor *t, const bilo_tensor *like)
{
    if (t && t->ndim == like->ndim &&
        !memcmp(t->shape, like->shape, (size_t)like->ndim * sizeof *like->shape))
        return t;
    return bilo_sum_to(t, like->ndim, like->shape);
}

static bilo_tensor *zero_like_scalar(const bilo_tensor *x) { return bilo_scalar(x->dtype, 0.0); }

/* ---- unary ---------------------------------------------------------------------------- */

static void neg_backward(const bilo_rule_ctx *c) { c->gx[0] = bilo_neg(G); }
static void abs_backward(const bilo_rule_ctx *c) { c->gx[0] = bilo_mul(G, bilo_sign(X0)); }
static void exp_backward(const bilo_rule_ctx *c) { c->gx[0] = bilo_mul(G, Y); }
static void log_backward(const bilo_rule_ctx *c) { c->gx[0] = bilo_div(G, X0); }
static void log1p_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_div(G, bilo_add_scalar(X0, 1.0));
}
static void expm1_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_mul(G, bilo_add_scalar(Y, 1.0));
}
static void sqrt_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_mul_scalar(bilo_div(G, Y), 0.5);
}
/* y = x^(-1/2): dy/dx = -y^3 / 2 */
static void rsqrt_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_mul(G, bilo_mul_scalar(bilo_pow_scalar(Y, 3.0), -0.5));
}
/* 2 (g x), not g (2 x): the recorded mul then saves x itself, which is usually alive anyway,
   rather than a fresh 2x (one tensor the size of x less per node under double backprop, e.g.
   per unrolled step of an L2 penalty). Doubling is exact, so the values are the same. */
static void square_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_mul_scalar(bilo_mul(G, X0), 2.0);
}
static void reciprocal_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_neg(bilo_mul(G, bilo_square(Y)));
}
static void sin_backward(const bilo_rule_ctx *c) { c->gx[0] = bilo_mul(G, bilo_cos(X0)); }
static void cos_backward(const bilo_rule_ctx *c) { c->gx[0] = bilo_neg(bilo_mul(G, bilo_sin(X0))); }
static void tanh_backward(const bilo_rule_ctx *c) { c->gx[0] = bilo_tanh_backward(Y, G); }
static void sigmoid_backward(const bilo_rule_ctx *c) { c->gx[0] = bilo_sigmoid_backward(Y, G); }
static void relu_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_mul(G, bilo_gt(X0, zero_like_scalar(X0)));
}
static void softplus_backward(const bilo_rule_ctx *c) { c->gx[0] = bilo_mul(G, bilo_sigmoid(X0)); }
/* d erf(x)/dx = (2/sqrt(pi)) e^(-x^2) */
static void erf_backward(const bilo_rule_ctx *c)
{
    const double two_over_sqrt_pi = 1.1283791670955126;
    bilo_tensor *gauss = bilo_exp(bilo_neg(bilo_square(X0)));
    c->gx[0] = bilo_mul(G, bilo_mul_scalar(gauss, two_over_sqrt_pi));
}
static void pow_scalar_backward(const bilo_rule_ctx *c)
{
    double p = c->attrs->scalar;
    c->gx[0] = bilo_mul(G, bilo_mul_scalar(bilo_pow_scalar(X0, p - 1.0), p));
}
static void identity_backward(const bilo_rule_ctx *c) { c->gx[0] = G; }
static void mul_scalar_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_mul_scalar(G, c->attrs->scalar);
}

/* ---- binary (broadcasting) ----------------------------------------------------------- */

static void add_backward(const bilo_rule_ctx *c)
{
    if (c->need[0]) c->gx[0] = reduce_to(G, X0);
    if (c->need[1]) c->gx[1] = reduce_to(G, X1);
}
static void sub_backward(const bilo_rule_ctx *c)
{
    if (c->need[0]) c->gx[0] = reduce_to(G, X0);
    if (c->need[1]) c->gx[1] = bilo_neg(reduce_to(G, X1));
}
/* z = g·(1 - y²): dz/dg = 1 - y², dz/dy = -2·y·g. */
static void tanh_backward_backward(const bilo_rule_ctx *c)
{
    if (c->need[0]) c->gx[0] = reduce_to(bilo_mul(bilo_mul(G, X1), bilo_mul_scalar(X0, -2.0)), X0);
    if (c->need[1]) c->gx[1] = reduce_to(bilo_tanh_backward(X0, G), X1);
}
/* z = g·(y - y²): dz/dg = y - y², dz/dy = g·(1 - 2y). */
static void sigmoid_backward_backward(const bilo_rule_ctx *c)
{
    if (c->need[0])
        c->gx[0] = reduce_to(bilo_mul(bilo_mul(G, X1), bilo_rsub_scalar(bilo_mul_scalar(X0, 2.0), 1.0)),
                             X0);
    if (c->need[1]) c->gx[1] = reduce_to(bilo_sigmoid_backward(X0, G), X1);
}
static void mul_backward(const bilo_rule_ctx *c)
{
    if (c->need[0]) c->gx[0] = reduce_to(bilo_mul(G, X1), X0);
    if (c->need[1]) c->gx[1] = reduce_to(bilo_mul(G, X0), X1);
}
/* y = a / b: da = g / b, db = -g y / b */
static void div_backward(const bilo_rule_ctx *c)
{
    bilo_tensor *g_over_b = bilo_div(G, X1);
    if (c->need[0]) c->gx[0] = reduce_to(g_over_b, X0);
    if (c->need[1]) c->gx[1] = bilo_neg(reduce_to(bilo_mul(g_over_b, Y), X1));
}
/* y = a^b: da = g b a^(b-1), db = g y log a (a > 0) */
static void pow_backward(const bilo_rule_ctx *c)
{
    if (c->need[0])
        c->gx[0] = reduce_to(bilo_mul(G, bilo_mul(X1, bilo_pow(X0, bilo_add_scalar(X1, -1.0)))), X0);
    if (c->need[1]) c->gx[1] = reduce_to(bilo_mul(G, bilo_mul(Y, bilo_log(X0))), X1);
}
/* mask selects where a wins (ties included: ties send the gradient to a). */
static void select_backward(const bilo_rule_ctx *c, bilo_tensor *mask)
{
    if (c->need[0]) c->gx[0] = reduce_to(bilo_mul(G, mask), X0);
    if (c->need[1]) c->gx[1] = reduce_to(bilo_mul(G, bilo_rsub_scalar(mask, 1.0)), X1);
}
static void maximum_backward(const bilo_rule_ctx *c) { select_backward(c, bilo_ge(X0, X1)); }
static void minimum_backward(const bilo_rule_ctx *c) { select_backward(c, bilo_le(X0, X1)); }
/* where(mask, a, b): inputs mask, a, b */
static void where_backward(const bilo_rule_ctx *c)
{
    bilo_tensor *mask = c->x[0], *zero = zero_like_scalar(G);
    if (c->need[1]) c->gx[1] = reduce_to(bilo_where(mask, G, zero), c->x[1]);
    if (c->need[2]) c->gx[2] = reduce_to(bilo_where(mask, zero, G), c->x[2]);
}

/* ---- reductions ----------------------------------------------------------------------- */

/* t (a reduction's output or its gradient) reshaped to the keepdim shape, so it broadcasts
   against the reduction's input x. */
static bilo_tensor *keep_dims(bilo_tensor *t, const bilo_tensor *x, const bilo_op_attrs *a)
{
    int64_t shape[BILO_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        shape[d] = a->axis == BILO_ALL_AXES || a->axis == d ? 1 : x->shape[d];
    return bilo_reshape(t, x->ndim, shape);
}

static bilo_tensor *expand_reduced(bilo_tensor *t, const bilo_tensor *x, const bilo_op_attrs *a)
{
    return bilo_expand(keep_dims(t, x, a), x->ndim, x->shape);
}

static int64_t reduced_count(const bilo_tensor *x, const bilo_op_attrs *a)
{
    return a->axis == BILO_ALL_AXES ? x->numel : x->shape[a->axis];
}

static void sum_backward(const bilo_rule_ctx *c) { c->gx[0] = expand_reduced(G, X0, c->attrs); }
static void mean_backward(const bilo_rule_ctx *c)
{
    int64_t count = reduced_count(X0, c->attrs);
    c->gx[0] = bilo_mul_scalar(expand_reduced(G, X0, c->attrs), 1.0 / (double)(count ? count : 1));
}
/* The gradient is shared equally among the elements equal to the extreme value. */
static void extreme_backward(const bilo_rule_ctx *c)
{
    const bilo_op_attrs *a = c->attrs;
    bilo_tensor *mask = bilo_eq(X0, keep_dims(Y, X0, a));
    bilo_tensor *count = keep_dims(bilo_sum(mask, a->axis, true), X0, a);
    c->gx[0] = bilo_mul(mask, bilo_div(keep_dims(G, X0, a), count));
}
static void logsumexp_backward(const bilo_rule_ctx *c)
{
    const bilo_op_attrs *a = c->attrs;
    c->gx[0] = bilo_mul(keep_dims(G, X0, a), bilo_exp(bilo_sub(X0, keep_dims(Y, X0, a))));
}
static void norm_backward(const bilo_rule_ctx *c)
{
    const bilo_op_attrs *a = c->attrs;
    c->gx[0] = bilo_mul(X0, bilo_div(keep_dims(G, X0, a), keep_dims(Y, X0, a)));
}
static void dot_backward(const bilo_rule_ctx *c)
{
    if (c->need[0]) c->gx[0] = bilo_mul(G, X1);
    if (c->need[1]) c->gx[1] = bilo_mul(G, X0);
}
/* dx = y (g - sum(g y)) */
static void softmax_backward(const bilo_rule_ctx *c)
{
    int axis = c->attrs->axis;
    c->gx[0] = bilo_mul(Y, bilo_sub(G, bilo_sum(bilo_mul(G, Y), axis, true)));
}
/* dx = g - softmax(x) sum(g), with softmax(x) = exp(y) */
static void log_softmax_backward(const bilo_rule_ctx *c)
{
    int axis = c->attrs->axis;
    c->gx[0] = bilo_sub(G, bilo_mul(bilo_exp(Y), bilo_sum(G, axis, true)));
}

/* ---- softmax cross-entropy ------------------------------------------------------------- */

/* inputs logits, labels: the fused gradient op, itself differentiable */
static void softmax_cross_entropy_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_softmax_cross_entropy_backward(X0, X1, G);
}
/* inputs logits z, labels, g of y = (p - onehot) g[:, None] with p = softmax(z); for the
   incoming gradient u: dz = g p (u - Σ_c p u) (one softmax_jvp) and dg = Σ_c (p - onehot) u
   = Σ_c p u - u[label]. p is recomputed from z rather than saved, so a node keeps no [n, C]
   softmax. */
static void softmax_cross_entropy_backward_backward(const bilo_rule_ctx *c)
{
    bilo_tensor *g = c->x[2];
    int64_t n = X0->shape[0];
    if (c->need[0]) c->gx[0] = bilo_softmax_jvp(X0, G, g);
    if (c->need[2]) {
        bilo_tensor *pu = bilo_sum(bilo_mul(bilo_softmax(X0, 1), G), 1, true);
        bilo_tensor *picked = bilo_gather(G, 1, bilo_reshape(X1, BILO_SHAPE(n, 1)));
        c->gx[2] = bilo_reshape(bilo_sub(pu, picked), BILO_SHAPE(n));
    }
}
/* y = g ⊙ J(z) u per row, J = diag(p) - p pᵀ symmetric; for the incoming gradient v:
   du = g ⊙ J v, dg = Σ_c v ⊙ J u, and, since d(Σ_c p a)/dz = J a,
   dz = g ⊙ (J (v ⊙ u) - (p·u) J v - (p·v) J u). */
static void softmax_jvp_backward(const bilo_rule_ctx *c)
{
    bilo_tensor *z = X0, *u = X1, *g = c->x[2];
    if (c->need[1]) c->gx[1] = bilo_softmax_jvp(z, G, g);
    if (!c->need[0] && !c->need[2]) return;
    bilo_tensor *ones = bilo_ones(g->dtype, g->ndim, g->shape);
    bilo_tensor *Ju = bilo_softmax_jvp(z, u, ones);
    if (c->need[2]) c->gx[2] = bilo_sum(bilo_mul(G, Ju), 1, false);
    if (c->need[0]) {
        bilo_tensor *p = bilo_softmax(z, 1);
        bilo_tensor *pu = bilo_sum(bilo_mul(p, u), 1, true), *pv = bilo_sum(bilo_mul(p, G), 1, true);
        bilo_tensor *Jvu = bilo_softmax_jvp(z, bilo_mul(G, u), ones), *Jv = bilo_softmax_jvp(z, G, ones);
        bilo_tensor *inner = bilo_sub(bilo_sub(Jvu, bilo_mul(pu, Jv)), bilo_mul(pv, Ju));
        c->gx[0] = bilo_mul(inner, bilo_reshape(g, BILO_SHAPE(g->shape[0], 1)));
    }
}

/* ---- linear algebra ------------------------------------------------------------------- */

/* y = op(a) op(b): d op(a) = g op(b)^T and d op(b) = op(a)^T g, written with transpose flags
   so no transposed copy is made, each computed by `product`: bilo_matmul_t, or, for an
   operand shared across the batch of g, bilo_matmul_batch_sum (the sum over the batch
   without the per-entry products). */
typedef bilo_tensor *(*product_fn)(bilo_tensor *, bilo_tensor *, bool, bool);
static void product_backward(const bilo_rule_ctx *c, product_fn product_a, product_fn product_b)
{
    bool ta = c->attrs->trans_a, tb = c->attrs->trans_b;
    if (c->need[0]) c->gx[0] = ta ? product_a(X1, G, tb, true) : product_a(G, X1, false, !tb);
    if (c->need[1]) c->gx[1] = tb ? product_b(G, X0, true, ta) : product_b(X0, G, !ta, false);
}
static product_fn product_for(const bilo_tensor *operand, const bilo_tensor *g)
{
    return operand->ndim < g->ndim ? bilo_matmul_batch_sum : bilo_matmul_t;
}
static void matmul_backward(const bilo_rule_ctx *c)
{
    product_backward(c, product_for(X0, G), product_for(X1, G));
}
/* y = Σ_i op(a_i) op(b_i): the same formulas per batch entry, g shared by all. */
static void matmul_batch_sum_backward(const bilo_rule_ctx *c)
{
    product_backward(c, bilo_matmul_t, bilo_matmul_t);
}
/* y = a b^T for vectors: da = g b, db = g^T a */
static void outer_backward(const bilo_rule_ctx *c)
{
    if (c->need[0]) {
        bilo_tensor *b = bilo_reshape(X1, BILO_SHAPE(X1->numel, 1));
        c->gx[0] = bilo_reshape(bilo_matmul_t(G, b, false, false), X0->ndim, X0->shape);
    }
    if (c->need[1]) {
        bilo_tensor *a = bilo_reshape(X0, BILO_SHAPE(X0->numel, 1));
        c->gx[1] = bilo_reshape(bilo_matmul_t(G, a, true, false), X1->ndim, X1->shape);
    }
}

/* ---- shape ops -------------------------------------------------------------------------- */

static void reshape_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_reshape(G, X0->ndim, X0->shape);
}
static void permute_backward(const bilo_rule_ctx *c)
{
    int inverse[BILO_MAX_DIMS];
    for (int d = 0; d < X0->ndim; d++) inverse[c->attrs->perm[d]] = d;
    c->gx[0] = bilo_permute(G, inverse);
}
static void slice_backward(const bilo_rule_ctx *c)
{
    const bilo_op_attrs *a = c->attrs;
    c->gx[0] = bilo_slice_scatter(bilo_zeros_like(X0), G, a->axis, a->start, a->stop, a->step);
}
/* inputs base, src */
static void slice_scatter_backward(const bilo_rule_ctx *c)
{
    const bilo_op_attrs *a = c->attrs;
    if (c->need[0])
        c->gx[0] = bilo_slice_scatter(G, bilo_zeros_like(X1), a->axis, a->start, a->stop, a->step);
    if (c->need[1]) c->gx[1] = bilo_slice(G, a->axis, a->start, a->stop, a->step);
}
static void concat_backward(const bilo_rule_ctx *c)
{
    int axis = c->attrs->axis;
    int64_t offset = 0;
    for (int i = 0; i < c->n_in; i++) {
        int64_t len = c->x[i]->shape[axis];
        if (c->need[i]) c->gx[i] = bilo_slice(G, axis, offset, offset + len, 1);
        offset += len;
    }
}
static void stack_backward(const bilo_rule_ctx *c)
{
    int axis = c->attrs->axis;
    for (int i = 0; i < c->n_in; i++)
        if (c->need[i])
            c->gx[i] = bilo_reshape(bilo_slice(G, axis, i, i + 1, 1), c->x[i]->ndim, c->x[i]->shape);
}
/* inputs x, index */
static void index_select_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_index_add(bilo_zeros_like(X0), c->attrs->axis, X1, G);
}
/* inputs base, index, src */
static void index_add_backward(const bilo_rule_ctx *c)
{
    if (c->need[0]) c->gx[0] = G;
    if (c->need[2]) c->gx[2] = bilo_index_select(G, c->attrs->axis, X1);
}
/* inputs x, index */
static void gather_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_scatter_add(bilo_zeros_like(X0), c->attrs->axis, X1, G);
}
/* inputs base, index, src */
static void scatter_add_backward(const bilo_rule_ctx *c)
{
    if (c->need[0]) c->gx[0] = G;
    if (c->need[2]) c->gx[2] = bilo_gather(G, c->attrs->axis, X1);
}
static void expand_backward(const bilo_rule_ctx *c) { c->gx[0] = reduce_to(G, X0); }
static void sum_to_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_expand(G, X0->ndim, X0->shape);
}
static void cast_backward(const bilo_rule_ctx *c) { c->gx[0] = bilo_cast(G, X0->dtype); }

/* ---- convolution patches: im2col and col2im are each other's adjoint ------------------- */

#define CONV_ARGS(a) (int)(a)[0], (int)(a)[1], (int)(a)[2], (int)(a)[3], (int)(a)[4], \
                     (int)(a)[5], (int)(a)[6], (int)(a)[7]

static void im2col_backward(const bilo_rule_ctx *c)
{
    const int64_t *image = X0->shape + 1; /* C, H, W */
    c->gx[0] = bilo_col2im(G, image[0], image[1], image[2], CONV_ARGS(c->attrs->conv));
}
static void col2im_backward(const bilo_rule_ctx *c)
{
    c->gx[0] = bilo_im2col(G, CONV_ARGS(c->attrs->conv));
}

/* ---- sparse · dense ------------------------------------------------------------------- */

/* The row of each stored entry of a CSR matrix: i repeated indptr[i+1] - indptr[i] times. */
static bilo_tensor *csr_row_ids(const bilo_tensor *indptr)
{
    const int64_t *ptr = bilo__ptr(indptr);
    int64_t rows = indptr->numel - 1;
    bilo_tensor *ids = bilo_empty(BILO_I64, BILO_SHAPE(ptr[rows]));
    if (!ids) return NULL;
    int64_t *id = bilo__ptr(ids);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t k = ptr[i]; k < ptr[i + 1]; k++) id[k] = i;
    return ids;
}

/* inputs indptr, indices, values, dense. y = op(A) d: dd = op(A)^T g, and the entry k at
   (i, j) of A gets g[i]·d[j] (g[j]·d[i] when transposed). */
static void spmm_backward(const bilo_rule_ctx *c)
{
    bilo_tensor *indptr = c->x[0], *indices = c->x[1], *values = c->x[2], *dense = c->x[3];
    bool trans = c->attrs->trans_a;
    int64_t rows = indptr->numel - 1, cols = trans ? G->shape[0] : dense->shape[0];
    if (c->need[2]) {
        bilo_tensor *row_ids = csr_row_ids(indptr);
        bilo_tensor *g_rows = bilo_index_select(G, 0, trans ? indices : row_ids);
        bilo_tensor *d_rows = bilo_index_select(dense, 0, trans ? row_ids : indices);
        c->gx[2] = bilo_sum(bilo_mul(g_rows, d_rows), 1, false);
    }
    if (c->need[3]) c->gx[3] = bilo_spmm(indptr, indices, values, rows, cols, G, !trans);
}

/* ---- fused bias + activation: y = act(x + b), inputs x, b ------------------------------ */

/* gz, the gradient of z = x + b, is the gradient of x; b's is gz summed over the rows. */
static void bias_act_backward(const bilo_rule_ctx *c, bilo_tensor *gz)
{
    if (c->need[0]) c->gx[0] = gz;
    if (c->need[1]) c->gx[1] = reduce_to(gz, X1);
}
/* relu' = 1 where y > 0, which is where y is nonzero: y itself is the mask, so the gradient
   takes one pass and no mask tensor. */
static void bias_relu_backward(const bilo_rule_ctx *c)
{
    bias_act_backward(c, bilo_where(Y, G, zero_like_scalar(G)));
}
static void bias_tanh_backward(const bilo_rule_ctx *c)
{
    bias_act_backward(c, bilo_tanh_backward(Y, G));
}
static void bias_sigmoid_backward(const bilo_rule_ctx *c)
{
    bias_act_backward(c, bilo_sigmoid_backward(Y, G));
}

/* ---- the table ------------------------------------------------------------------------ */

#define IN(i) (UINT64_C(1) << (i))
#define ALL_INPUTS (~UINT64_C(0))
#define OUTPUT true
#define INPUTS false
#define NOT_DIFFERENTIABLE(name) {name, NULL, 0, false, 0, false}
#define SHAPE_ONLY(mask) mask, false
#define PRODUCT 0, true
#define SAVES_INPUTS 0, false

static const bilo_op_rule rules[BILO_OP_COUNT] = {
    [BILO_OP_NEG] = {"neg", neg_backward, IN(0), INPUTS, SHAPE_ONLY(IN(0))},
    [BILO_OP_ABS] = {"abs", abs_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_EXP] = {"exp", exp_backward, IN(0), OUTPUT, SHAPE_ONLY(IN(0))},
    [BILO_OP_LOG] = {"log", log_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_LOG1P] = {"log1p", log1p_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_EXPM1] = {"expm1", expm1_backward, IN(0), OUTPUT, SHAPE_ONLY(IN(0))},
    [BILO_OP_SQRT] = {"sqrt", sqrt_backward, IN(0), OUTPUT, SHAPE_ONLY(IN(0))},
    [BILO_OP_RSQRT] = {"rsqrt", rsqrt_backward, IN(0), OUTPUT, SHAPE_ONLY(IN(0))},
    [BILO_OP_SQUARE] = {"square", square_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_RECIPROCAL] = {"reciprocal", reciprocal_backward, IN(0), OUTPUT, SHAPE_ONLY(IN(0))},
    [BILO_OP_SIN] = {"sin", sin_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_COS] = {"cos", cos_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_TANH] = {"tanh", tanh_backward, IN(0), OUTPUT, SHAPE_ONLY(IN(0))},
    [BILO_OP_SIGMOID] = {"sigmoid", sigmoid_backward, IN(0), OUTPUT, SHAPE_ONLY(IN(0))},
    [BILO_OP_RELU] = {"relu", relu_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_SOFTPLUS] = {"softplus", softplus_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_ERF] = {"erf", erf_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_SIGN] = NOT_DIFFERENTIABLE("sign"),
    [BILO_OP_POW_SCALAR] = {"pow_scalar", pow_scalar_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_ADD_SCALAR] = {"add_scalar", identity_backward, IN(0), INPUTS, SHAPE_ONLY(IN(0))},
    [BILO_OP_MUL_SCALAR] = {"mul_scalar", mul_scalar_backward, IN(0), INPUTS, SHAPE_ONLY(IN(0))},
    [BILO_OP_RSUB_SCALAR] = {"rsub_scalar", neg_backward, IN(0), INPUTS, SHAPE_ONLY(IN(0))},
    [BILO_OP_ADD] = {"add", add_backward, IN(0) | IN(1), INPUTS, SHAPE_ONLY(IN(0) | IN(1))},
    [BILO_OP_SUB] = {"sub", sub_backward, IN(0) | IN(1), INPUTS, SHAPE_ONLY(IN(0) | IN(1))},
    [BILO_OP_MUL] = {"mul", mul_backward, IN(0) | IN(1), INPUTS, PRODUCT},
    [BILO_OP_TANH_BACKWARD] = {"tanh_backward", tanh_backward_backward, IN(0) | IN(1), INPUTS, SAVES_INPUTS},
    [BILO_OP_SIGMOID_BACKWARD] = {"sigmoid_backward", sigmoid_backward_backward, IN(0) | IN(1), INPUTS, SAVES_INPUTS},
    [BILO_OP_DIV] = {"div", div_backward, IN(0) | IN(1), OUTPUT, SAVES_INPUTS},
    [BILO_OP_POW] = {"pow", pow_backward, IN(0) | IN(1), OUTPUT, SAVES_INPUTS},
    [BILO_OP_MAXIMUM] = {"maximum", maximum_backward, IN(0) | IN(1), INPUTS, SAVES_INPUTS},
    [BILO_OP_MINIMUM] = {"minimum", minimum_backward, IN(0) | IN(1), INPUTS, SAVES_INPUTS},
    [BILO_OP_GT] = NOT_DIFFERENTIABLE("gt"),
    [BILO_OP_GE] = NOT_DIFFERENTIABLE("ge"),
    [BILO_OP_LT] = NOT_DIFFERENTIABLE("lt"),
    [BILO_OP_LE] = NOT_DIFFERENTIABLE("le"),
    [BILO_OP_EQ] = NOT_DIFFERENTIABLE("eq"),
    [BILO_OP_WHERE] = {"where", where_backward, IN(1) | IN(2), INPUTS, SAVES_INPUTS},
    [BILO_OP_SUM] = {"sum", sum_backward, IN(0), INPUTS, SHAPE_ONLY(IN(0))},
    [BILO_OP_MEAN] = {"mean", mean_backward, IN(0), INPUTS, SHAPE_ONLY(IN(0))},
    [BILO_OP_MAX] = {"max", extreme_backward, IN(0), OUTPUT, SAVES_INPUTS},
    [BILO_OP_MIN] = {"min", extreme_backward, IN(0), OUTPUT, SAVES_INPUTS},
    [BILO_OP_ARGMAX] = NOT_DIFFERENTIABLE("argmax"),
    [BILO_OP_LOGSUMEXP] = {"logsumexp", logsumexp_backward, IN(0), OUTPUT, SAVES_INPUTS},
    [BILO_OP_NORM] = {"norm", norm_backward, IN(0), OUTPUT, SAVES_INPUTS},
    [BILO_OP_DOT] = {"dot", dot_backward, IN(0) | IN(1), INPUTS, PRODUCT},
    [BILO_OP_SOFTMAX] = {"softmax", softmax_backward, IN(0), OUTPUT, SHAPE_ONLY(IN(0))},
    [BILO_OP_LOG_SOFTMAX] = {"log_softmax", log_softmax_backward, IN(0), OUTPUT, SHAPE_ONLY(IN(0))},
    [BILO_OP_MATMUL] = {"matmul", matmul_backward, IN(0) | IN(1), INPUTS, PRODUCT},
    [BILO_OP_MATMUL_BATCH_SUM] = {"matmul_batch_sum", matmul_batch_sum_backward, IN(0) | IN(1), INPUTS, PRODUCT},
    [BILO_OP_OUTER] = {"outer", outer_backward, IN(0) | IN(1), INPUTS, PRODUCT},
    [BILO_OP_RESHAPE] = {"reshape", reshape_backward, IN(0), INPUTS, SHAPE_ONLY(IN(0))},
    [BILO_OP_PERMUTE] = {"permute", permute_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_SLICE] = {"slice", slice_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_SLICE_SCATTER] = {"slice_scatter", slice_scatter_backward, IN(0) | IN(1), INPUTS, SAVES_INPUTS},
    [BILO_OP_CONCAT] = {"concat", concat_backward, ALL_INPUTS, INPUTS, SAVES_INPUTS},
    [BILO_OP_STACK] = {"stack", stack_backward, ALL_INPUTS, INPUTS, SAVES_INPUTS},
    [BILO_OP_INDEX_SELECT] = {"index_select", index_select_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_INDEX_ADD] = {"index_add", index_add_backward, IN(0) | IN(2), INPUTS, SAVES_INPUTS},
    [BILO_OP_GATHER] = {"gather", gather_backward, IN(0), INPUTS, SHAPE_ONLY(IN(0))},
    [BILO_OP_SCATTER_ADD] = {"scatter_add", scatter_add_backward, IN(0) | IN(2), INPUTS, SAVES_INPUTS},
    [BILO_OP_ONE_HOT] = NOT_DIFFERENTIABLE("one_hot"),
    [BILO_OP_EXPAND] = {"expand", expand_backward, IN(0), INPUTS, SHAPE_ONLY(IN(0))},
    [BILO_OP_SUM_TO] = {"sum_to", sum_to_backward, IN(0), INPUTS, SHAPE_ONLY(IN(0))},
    [BILO_OP_CLONE] = {"clone", identity_backward, IN(0), INPUTS, SHAPE_ONLY(IN(0))},
    [BILO_OP_CAST] = {"cast", cast_backward, IN(0), INPUTS, SHAPE_ONLY(IN(0))},
    [BILO_OP_IM2COL] = {"im2col", im2col_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_COL2IM] = {"col2im", col2im_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_SPMM] = {"spmm", spmm_backward, IN(2) | IN(3), INPUTS, SAVES_INPUTS},
    [BILO_OP_SOFTMAX_CROSS_ENTROPY] = {"softmax_cross_entropy", softmax_cross_entropy_backward, IN(0), INPUTS, SAVES_INPUTS},
    [BILO_OP_SOFTMAX_CROSS_ENTROPY_BACKWARD] = {"softmax_cross_entropy_backward", softmax_cross_entropy_backward_backward, IN(0) | IN(2), INPUTS, SAVES_INPUTS},
    [BILO_OP_SOFTMAX_JVP] = {"softmax_jvp", softmax_jvp_backward, IN(0) | IN(1) | IN(2), INPUTS, SAVES_INPUTS},
    [BILO_OP_BIAS_RELU] = {"bias_relu", bias_relu_backward, IN(0) | IN(1), OUTPUT, SHAPE_ONLY(IN(0) | IN(1))},
    [BILO_OP_BIAS_TANH] = {"bias_tanh", bias_tanh_backward, IN(0) | IN(1), OUTPUT, SHAPE_ONLY(IN(0) | IN(1))},
    [BILO_OP_BIAS_SIGMOID] = {"bias_sigmoid", bias_sigmoid_backward, IN(0) | IN(1), OUTPUT, SHAPE_ONLY(IN(0) | IN(1))},
};

const bilo_op_rule *bilo__op_rule(bilo_op_id op) { return &rules[op]; }
