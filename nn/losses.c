/* bilo — nn losses and metrics, composed of public tensor ops so autograd differentiates the
   losses (twice, for hypergradients) with no rule of their own; cross-entropy is the fused
   bilo_softmax_cross_entropy, whose gradient is an op of its own. */
#include "bilo_nn.h"
#include "tensor_impl.h"

#include <math.h>

/* Close the scope a loss opened for its temporaries, moving only its result out. */
static bilo_tensor *scope_result(bilo_tensor *r)
{
    bilo_scope_return(r);
    bilo_scope_end();
    return r;
}

static bilo_tensor *reduce(const char *op, bilo_tensor *per, bilo_reduction reduction)
{
    if (!per) return NULL;
    switch (reduction) {
    case BILO_REDUCE_MEAN: return bilo_mean(per, BILO_ALL_AXES, false);
    case BILO_REDUCE_SUM: return bilo_sum(per, BILO_ALL_AXES, false);
    case BILO_REDUCE_NONE: return per;
    }
    return bilo__fail(BILO_EINVAL, "%s: unknown reduction %d", op, (int)reduction);
}

static bool check_same_shape(const char *op, const bilo_tensor *a, const bilo_tensor *b)
{
    int same = a->ndim == b->ndim;
    for (int i = 0; same && i < a->ndim; i++) same = a->shape[i] == b->shape[i];
    if (same) return true;
    char sa[BILO_SHAPE_BUF], sb[BILO_SHAPE_BUF];
    bilo__fail(BILO_ESHAPE, "%s: shapes %s and %s differ", op,
               bilo__shape_str(sa, a->ndim, a->shape), bilo__shape_str(sb, b->ndim, b->shape));
    return false;
}

BILO_API bilo_tensor *bilo_nn_cross_entropy(bilo_tensor *logits, bilo_tensor *labels,
                                            bilo_reduction reduction)
{
    static const char op[] = "bilo_nn_cross_entropy";
    if (!logits || !labels) return NULL;
    if (!bilo__check_class_labels(op, logits, labels)) return NULL;
    bilo_scope_begin();
    return scope_result(reduce(op, bilo_softmax_cross_entropy(logits, labels), reduction));
}

BILO_API bilo_tensor *bilo_nn_mse(bilo_tensor *pred, bilo_tensor *target,
                                  bilo_reduction reduction)
{
    static const char op[] = "bilo_nn_mse";
    if (!pred || !target) return NULL;
    if (!check_same_shape(op, pred, target)) return NULL;
    bilo_scope_begin();
    return scope_result(reduce(op, bilo_square(bilo_sub(pred, target)), reduction));
}

BILO_API bilo_tensor *bilo_nn_bce_with_logits(bilo_tensor *logits, bilo_tensor *targets,
                                              bilo_reduction reduction)
{
    static const char op[] = "bilo_nn_bce_with_logits";
    if (!logits || !targets) return NULL;
    if (!check_same_shape(op, logits, targets)) return NULL;
    bilo_scope_begin();
    /* max(x, 0) - x·t + log1p(e^-|x|): no exponential of a positive number, so no overflow. */
    bilo_tensor *log1p_term = bilo_softplus(bilo_neg(bilo_abs(logits)));
    bilo_tensor *per =
        bilo_add(bilo_sub(bilo_relu(logits), bilo_mul(logits, targets)), log1p_term);
    return scope_result(reduce(op, per, reduction));
}

BILO_API bilo_tensor *bilo_nn_l2_penalty(bilo_tensor *const *tensors, int n, double lambda)
{
    if (!tensors || n < 1)
        return bilo__fail(BILO_EINVAL, "bilo_nn_l2_penalty: needs at least one tensor, got %d",
                          tensors ? n : 0);
    for (int i = 0; i < n; i++)
        if (!tensors[i]) return NULL;
    bilo_scope_begin();
    bilo_tensor *total = bilo_dot(tensors[0], tensors[0]);
    for (int i = 1; i < n; i++) total = bilo_add(total, bilo_dot(tensors[i], tensors[i]));
    return scope_result(bilo_mul_scalar(total, 0.5 * lambda));
}

/* ---- metrics ---- */

/* Calls visit(true label, predicted class) for every row; false on bad input. */
static bool for_each_prediction(const char *op, bilo_tensor *logits, bilo_tensor *labels,
                                void (*visit)(int64_t label, int64_t predicted, void *user),
                                void *user)
{
    if (!logits || !labels) return false;
    if (!bilo__check_class_labels(op, logits, labels)) return false;
    bilo_scope_begin();
    bilo_tensor *pred = bilo_argmax(logits, 1, false);
    if (pred) {
        const int64_t *p = bilo__ptr(pred), *y = bilo__ptr(labels);
        for (int64_t i = 0; i < labels->numel; i++) visit(y[i], p[i], user);
    }
    bilo_scope_end();
    return pred != NULL;
}

static void count_hit(int64_t label, int64_t predicted, void *user)
{
    *(int64_t *)user += label == predicted;
}

BILO_API double bilo_nn_accuracy(bilo_tensor *logits, bilo_tensor *labels)
{
    int64_t hits = 0;
    if (!for_each_prediction("bilo_nn_accuracy", logits, labels, count_hit, &hits)) return NAN;
    if (labels->numel == 0) {
        bilo__fail(BILO_ESHAPE, "bilo_nn_accuracy: no rows");
        return NAN;
    }
    return (double)hits / (double)labels->numel;
}

typedef struct {
    int64_t *counts;
    int64_t classes;
} confusion;

static void count_pair(int64_t label, int64_t predicted, void *user)
{
    confusion *c = user;
    c->counts[label * c->classes + predicted]++;
}

BILO_API bilo_tensor *bilo_nn_confusion_matrix(bilo_tensor *logits, bilo_tensor *labels)
{
    static const char op[] = "bilo_nn_confusion_matrix";
    if (!logits || !labels) return NULL;
    if (!bilo__check_class_labels(op, logits, labels)) return NULL;
    int64_t classes = logits->shape[1];
    bilo_tensor *m = bilo_zeros(BILO_I64, BILO_SHAPE(classes, classes));
    if (!m) return NULL;
    confusion c = {bilo__ptr(m), classes};
    if (!for_each_prediction(op, logits, labels, count_pair, &c)) {
        bilo_release(bilo_keep(m));
        return NULL;
    }
    return m;
}
