/* Fused ops: bias + activation, act(x + b), the epilogue of a linear layer in one pass over
   its output instead of two (an add, then the activation), with one tensor instead of two.
   The backward rules (autograd/rules.c, "bias_relu" etc.) read only the output. */
#include "kernels.h"
#include "parallel.h"
#include "tensor_impl.h"

/* Elements per parallel work item, rounded to whole rows. Fixed, so how work is cut never
   depends on the thread count (the op is elementwise anyway). */
#define ROW_BLOCK_ELEMS 2048

typedef struct {
    bilo_op_id op;
    bilo_bias_act_kernel kernel;
} bias_act_entry;

static const bias_act_entry entries[] = {
    [BILO_ACT_RELU] = {BILO_OP_BIAS_RELU, BILO_KBA_RELU},
    [BILO_ACT_TANH] = {BILO_OP_BIAS_TANH, BILO_KBA_TANH},
    [BILO_ACT_SIGMOID] = {BILO_OP_BIAS_SIGMOID, BILO_KBA_SIGMOID},
};

static bool check_bias(const char *op, const bilo_tensor *x, const bilo_tensor *b)
{
    if (!bilo__check_float(op, x) || !bilo__check_same_dtype(op, x, b)) return false;
    if (x->ndim >= 1 && b->ndim == 1 && b->shape[0] == x->shape[x->ndim - 1]) return true;
    char sx[BILO_SHAPE_BUF], sb[BILO_SHAPE_BUF];
    bilo__fail(BILO_ESHAPE, "%s: bias %s does not match the last axis of x %s", op,
               bilo__shape_str(sb, b->ndim, b->shape), bilo__shape_str(sx, x->ndim, x->shape));
    return false;
}

/* y[r, :] = act(x[r, :] + b) for every row r of width cols. */
static void run_bias_act(bilo_bias_act_kernel kernel, const bilo_tensor *x, const bilo_tensor *b,
                         bilo_tensor *y)
{
    const bilo_kernels *k = bilo__kernels();
    const int64_t cols = b->numel, rows = x->numel / cols;
    const int64_t rows_per_item = cols >= ROW_BLOCK_ELEMS ? 1 : ROW_BLOCK_ELEMS / cols;
    const int64_t items = (rows + rows_per_item - 1) / rows_per_item;
    const int cost = kernel == BILO_KBA_RELU ? BILO_COST_MEMORY : BILO_COST_TRANSCENDENTAL;
    const int nt = bilo__threads_for_elems(x->numel, cost);
    BILO__PARALLEL_FOR(nt, it, items, {
        const int64_t lo = it * rows_per_item;
        const int64_t hi = lo + rows_per_item < rows ? lo + rows_per_item : rows;
        for (int64_t r = lo; r < hi; r++) {
            if (x->dtype == BILO_F32)
                k->bias_act_f32[kernel]((const float *)bilo__ptr(x) + r * cols, bilo__ptr(b),
                                        (float *)bilo__ptr(y) + r * cols, cols);
            else
                k->bias_act_f64[kernel]((const double *)bilo__ptr(x) + r * cols, bilo__ptr(b),
                                        (double *)bilo__ptr(y) + r * cols, cols);
        }
    });
}

BILO_API bilo_tensor *bilo_bias_act(bilo_tensor *x, bilo_tensor *b, bilo_act act)
{
    static const char op[] = "bilo_bias_act";
    if (!x || !b) return NULL;
    if ((int)act < (int)BILO_ACT_RELU || (int)act > (int)BILO_ACT_NONE)
        return bilo__fail(BILO_EINVAL, "%s: unknown activation %d", op, (int)act);
    if (!check_bias(op, x, b)) return NULL;
    if (act == BILO_ACT_NONE) return bilo_add(x, b);
    bilo_tensor *y = bilo__new(op, x->dtype, x->ndim, x->shape);
    if (!y) return NULL;
    if (y->numel > 0) run_bias_act(entries[act].kernel, x, b, y);
    return bilo__record(entries[act].op, y, (bilo_tensor *[]){x, b}, 2, &(bilo_op_attrs){0});
}
