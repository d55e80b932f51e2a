/* bilo — nn layers, activations, dropout and initializers, composed of public tensor ops so
   autograd differentiates them (twice, for hypergradients) with no rule of their own. */
#include "bilo_nn.h"
#include "tensor_impl.h"

#include <math.h>

/* Run the ops of a composite in a scope of their own: temporaries are released at the end
   and only the result moves to the caller's scope. */
#define COMPOSE(result_expr)                 \
    do {                                     \
        bilo_scope_begin();                  \
        bilo_tensor *r_ = (result_expr);     \
        bilo_scope_return(r_);               \
        bilo_scope_end();                    \
        return r_;                           \
    } while (0)

static bilo_tensor *activate(bilo_tensor *x, bilo_act act)
{
    switch (act) {
    case BILO_ACT_RELU: return bilo_relu(x);
    case BILO_ACT_TANH: return bilo_tanh(x);
    case BILO_ACT_SIGMOID: return bilo_sigmoid(x);
    default: return x;
    }
}

/* act(x·W + b) for the public function `op`: the bias and activation in one bilo_bias_act. */
static bilo_tensor *linear(const char *op, bilo_tensor *x, bilo_tensor *W, bilo_tensor *b,
                           bilo_act act)
{
    if (!x || !W) return NULL;
    if ((int)act < (int)BILO_ACT_RELU || (int)act > (int)BILO_ACT_NONE)
        return bilo__fail(BILO_EINVAL, "%s: unknown activation %d", op, (int)act);
    if (!b && act == BILO_ACT_NONE) return bilo_matmul(x, W);
    if (!b) COMPOSE(activate(bilo_matmul(x, W), act));
    if (b->ndim != 1 || W->ndim != 2 || b->shape[0] != W->shape[1]) {
        char sw[BILO_SHAPE_BUF], sb[BILO_SHAPE_BUF];
        return bilo__fail(BILO_ESHAPE, "%s: bias %s does not fit weight %s [in,out]", op,
                          bilo__shape_str(sb, b->ndim, b->shape),
                          bilo__shape_str(sw, W->ndim, W->shape));
    }
    COMPOSE(bilo_bias_act(bilo_matmul(x, W), b, act));
}

BILO_API bilo_tensor *bilo_nn_linear(bilo_tensor *x, bilo_tensor *W, bilo_tensor *b)
{
    return linear("bilo_nn_linear", x, W, b, BILO_ACT_NONE);
}

BILO_API bilo_tensor *bilo_nn_linear_act(bilo_tensor *x, bilo_tensor *W, bilo_tensor *b,
                                         bilo_act act)
{
    return linear("bilo_nn_linear_act", x, W, b, act);
}

BILO_API bilo_tensor *bilo_nn_leaky_relu(bilo_tensor *x, double negative_slope)
{
    if (!x) return NULL;
    /* relu(x) - s·relu(-x) is x above 0 and s·x below, with no mask tensor to build. */
    COMPOSE(bilo_sub(bilo_relu(x), bilo_mul_scalar(bilo_relu(bilo_neg(x)), negative_slope)));
}

BILO_API bilo_tensor *bilo_nn_elu(bilo_tensor *x, double alpha)
{
    if (!x) return NULL;
    /* relu(x) + alpha·expm1(-relu(-x)) is x for x >= 0 and alpha·(e^x - 1) below. */
    COMPOSE(bilo_add(bilo_relu(x),
                     bilo_mul_scalar(bilo_expm1(bilo_neg(bilo_relu(bilo_neg(x)))), alpha)));
}

/* √(2/π)·(x + 0.044715·x³), the argument of GELU's tanh. */
static bilo_tensor *gelu_tanh_arg(bilo_tensor *x)
{
    bilo_tensor *cubic = bilo_mul_scalar(bilo_mul(bilo_square(x), x), 0.044715);
    return bilo_mul_scalar(bilo_add(x, cubic), sqrt(2.0 / M_PI));
}

BILO_API bilo_tensor *bilo_nn_gelu_tanh(bilo_tensor *x)
{
    if (!x) return NULL;
    COMPOSE(bilo_mul(bilo_mul_scalar(x, 0.5), bilo_add_scalar(bilo_tanh(gelu_tanh_arg(x)), 1.0)));
}

BILO_API bilo_tensor *bilo_nn_gelu(bilo_tensor *x)
{
    if (!x) return NULL;
    COMPOSE(bilo_mul(bilo_mul_scalar(x, 0.5),
                     bilo_add_scalar(bilo_erf(bilo_mul_scalar(x, 1.0 / sqrt(2.0))), 1.0)));
}

BILO_API bilo_tensor *bilo_nn_flatten(bilo_tensor *x)
{
    if (!x) return NULL;
    if (x->ndim < 1)
        return bilo__fail(BILO_ESHAPE, "bilo_nn_flatten: a 0-dimensional tensor has no batch axis");
    int64_t n = x->shape[0];
    int64_t rest = n ? x->numel / n : bilo__shape_numel(x->ndim - 1, x->shape + 1);
    return bilo_reshape(x, BILO_SHAPE(n, rest));
}

BILO_API bilo_tensor *bilo_nn_embedding(bilo_tensor *weight, bilo_tensor *indices)
{
    if (!weight || !indices) return NULL;
    if (weight->ndim != 2) {
        char sw[BILO_SHAPE_BUF];
        return bilo__fail(BILO_ESHAPE, "bilo_nn_embedding: weight %s is not [num, dim]",
                          bilo__shape_str(sw, weight->ndim, weight->shape));
    }
    if (indices->ndim >= BILO_MAX_DIMS)
        return bilo__fail(BILO_ESHAPE, "bilo_nn_embedding: indices have %d axes, at most %d",
                          indices->ndim, BILO_MAX_DIMS - 1);
    int64_t shape[BILO_MAX_DIMS];
    for (int i = 0; i < indices->ndim; i++) shape[i] = indices->shape[i];
    shape[indices->ndim] = weight->shape[1];
    COMPOSE(bilo_reshape(bilo_index_select(weight, 0, bilo_flatten(indices)), indices->ndim + 1,
                         shape));
}

BILO_API bilo_tensor *bilo_nn_dropout(bilo_tensor *x, double p, bool train, bilo_rng *rng)
{
    if (!x) return NULL;
    if (!(p >= 0.0 && p < 1.0))
        return bilo__fail(BILO_EINVAL, "bilo_nn_dropout: p = %g is not in [0, 1)", p);
    if (!train) return bilo_clone(x);
    if (!rng) return bilo__fail(BILO_ENULL, "bilo_nn_dropout: training needs an rng");
    if (!bilo__check_float("bilo_nn_dropout", x)) return NULL;
    COMPOSE(bilo_mul(x, bilo_mul_scalar(bilo_bernoulli(x->dtype, x->ndim, x->shape, 1.0 - p, rng),
                                        1.0 / (1.0 - p))));
}

/* ---- initializers ---- */

static void fans(const bilo_tensor *t, double *fan_in, double *fan_out)
{
    if (t->ndim == 1) {
        *fan_in = *fan_out = (double)t->shape[0];
    } else if (t->ndim == 2) {
        *fan_in = (double)t->shape[0];
        *fan_out = (double)t->shape[1];
    } else {
        double receptive = (double)bilo__shape_numel(t->ndim - 2, t->shape + 2);
        *fan_in = (double)t->shape[1] * receptive;
        *fan_out = (double)t->shape[0] * receptive;
    }
}

typedef enum { DRAW_UNIFORM, DRAW_NORMAL } draw_kind;

/* t ← draws of standard deviation gain·√(1/fan_in or 2/(fan_in + fan_out)), in t's dtype:
   uniform on ±√3·std or normal. */
static int init_fill(const char *op, bilo_tensor *t, bilo_rng *rng, draw_kind kind,
                     bool fan_in_only, double gain)
{
    if (!t) return bilo_errcode() ? bilo_errcode() : BILO_ENULL;
    if (!rng) return bilo__fail_code(BILO_ENULL, "%s: rng is NULL", op);
    if (!bilo__check_float(op, t)) return bilo_errcode();
    if (t->ndim < 1 || t->numel == 0) {
        char s[BILO_SHAPE_BUF];
        return bilo__fail_code(BILO_ESHAPE, "%s: cannot take fans of shape %s", op,
                               bilo__shape_str(s, t->ndim, t->shape));
    }
    double fan_in, fan_out;
    fans(t, &fan_in, &fan_out);
    double var_unit = fan_in_only ? 1.0 / fan_in : 2.0 / (fan_in + fan_out);
    double std = gain * sqrt(var_unit);
    bilo_scope_begin();
    bilo_tensor *draw =
        kind == DRAW_UNIFORM
            ? bilo_add_scalar(bilo_mul_scalar(bilo_rand(t->dtype, t->ndim, t->shape, rng),
                                              2.0 * sqrt(3.0) * std),
                              -sqrt(3.0) * std)
            : bilo_mul_scalar(bilo_randn(t->dtype, t->ndim, t->shape, rng), std);
    int rc = draw ? bilo_copy_(t, draw) : bilo_errcode();
    bilo_scope_end();
    return rc;
}

static double xavier_gain(double gain) { return gain == 0.0 ? 1.0 : gain; }
static double kaiming_gain(double slope) { return sqrt(2.0 / (1.0 + slope * slope)); }

BILO_API int bilo_nn_init_xavier_uniform(bilo_tensor *t, double gain, bilo_rng *rng)
{
    return init_fill("bilo_nn_init_xavier_uniform", t, rng, DRAW_UNIFORM, false,
                     xavier_gain(gain));
}

BILO_API int bilo_nn_init_xavier_normal(bilo_tensor *t, double gain, bilo_rng *rng)
{
    return init_fill("bilo_nn_init_xavier_normal", t, rng, DRAW_NORMAL, false, xavier_gain(gain));
}

BILO_API int bilo_nn_init_kaiming_uniform(bilo_tensor *t, double negative_slope, bilo_rng *rng)
{
    return init_fill("bilo_nn_init_kaiming_uniform", t, rng, DRAW_UNIFORM, true,
                     kaiming_gain(negative_slope));
}

BILO_API int bilo_nn_init_kaiming_normal(bilo_tensor *t, double negative_slope, bilo_rng *rng)
{
    return init_fill("bilo_nn_init_kaiming_normal", t, rng, DRAW_NORMAL, true,
                     kaiming_gain(negative_slope));
}
