/* Matrix products on the gemm kernel. Transposition is a flag passed to gemm with the
   stored leading dimension, never a copy; batched forms call gemm once per batch entry. */
#include "kernels.h"
#include "parallel.h"
#include "tensor_impl.h"

#include <string.h>

/* One operand as gemm sees it: its stored matrix and what op() makes of it. */
typedef struct {
    int64_t rows, cols;   /* of op(M), the matrix that takes part in the product */
    int64_t ld;           /* row stride of the stored matrix */
    int64_t batch_stride; /* elements between batch entries, 0 when shared by all */
    int64_t batch;        /* 1 for a 2-D operand */
} gemm_operand;

static gemm_operand describe(const bilo_tensor *t, bool trans)
{
    int64_t r = t->shape[t->ndim - 2], c = t->shape[t->ndim - 1];
    bool batched = t->ndim == 3;
    return (gemm_operand){.rows = trans ? c : r, .cols = trans ? r : c, .ld = c,
                          .batch_stride = batched ? r * c : 0,
                          .batch = batched ? t->shape[0] : 1};
}

/* C = op(A)·op(B), or C += op(A)·op(B) when accumulate. */
static void gemm(const bilo_kernels *k, bilo_dtype dt, bool ta, bool tb, const gemm_operand *a,
                 const gemm_operand *b, const void *pa, const void *pb, void *pc, bool accumulate,
                 int threads)
{
    if (dt == BILO_F32)
        k->gemm_f32(ta, tb, a->rows, b->cols, a->cols, pa, a->ld, pb, b->ld, pc, b->cols,
                    accumulate, threads);
    else
        k->gemm_f64(ta, tb, a->rows, b->cols, a->cols, pa, a->ld, pb, b->ld, pc, b->cols,
                    accumulate, threads);
}

/* C[i] = op(A[i])·op(B[i]) over the batch. Large products thread inside gemm; a batch of
   small ones threads over the batch with serial gemms. */
static void batched_gemm(bilo_dtype dt, bool ta, bool tb, const gemm_operand *a,
                         const gemm_operand *b, const void *pa, const void *pb, void *pc,
                         int64_t batch)
{
    const bilo_kernels *k = bilo__kernels();
    size_t es = bilo_dtype_size(dt);
    int64_t m = a->rows, n = b->cols, kk = a->cols;
    int inner_threads = bilo__threads_for(m * n * kk);
    int nt = inner_threads > 1 ? 1 : bilo__threads_for(batch * m * n * kk);
    BILO__PARALLEL_FOR(nt, i, batch, {
        gemm(k, dt, ta, tb, a, b, (const char *)pa + (size_t)(i * a->batch_stride) * es,
             (const char *)pb + (size_t)(i * b->batch_stride) * es,
             (char *)pc + (size_t)(i * m * n) * es, false, inner_threads);
    });
}

/* The checks both batched products share: float operands of one dtype, 2-D or 3-D (3-D
   only when both3d), inner dimensions and batch sizes matching; ga and gb describe them. */
static bool check_product(const char *name, bilo_tensor *a, bilo_tensor *b, bool both3d, bool ta,
                          bool tb, gemm_operand *ga, gemm_operand *gb)
{
    if (!bilo__check_float(name, a) || !bilo__check_float(name, b) ||
        !bilo__check_same_dtype(name, a, b))
        return false;
    /* the shapes are formatted only for a message: this runs on every product */
    char sa[BILO_SHAPE_BUF], sb[BILO_SHAPE_BUF];
#define SHAPES_ bilo__shape_str(sa, a->ndim, a->shape), bilo__shape_str(sb, b->ndim, b->shape)
    const int min_dims = both3d ? 3 : 2;
    if (a->ndim < min_dims || a->ndim > 3 || b->ndim < min_dims || b->ndim > 3) {
        bilo__fail(BILO_ESHAPE, "%s: shapes %s and %s: expected %s operands", name, SHAPES_,
                   both3d ? "two 3-D" : "2-D or 3-D");
        return false;
    }
    *ga = describe(a, ta);
    *gb = describe(b, tb);
    if (ga->cols != gb->rows) {
        bilo__fail(BILO_ESHAPE, "%s: shapes %s and %s do not match (inner dimensions %lld and %lld)",
                   name, SHAPES_, (long long)ga->cols, (long long)gb->rows);
        return false;
    }
    if (a->ndim == 3 && b->ndim == 3 && ga->batch != gb->batch) {
        bilo__fail(BILO_ESHAPE, "%s: shapes %s and %s have different batch sizes", name, SHAPES_);
        return false;
    }
#undef SHAPES_
    return true;
}

static bilo_tensor *matmul_impl(const char *name, bilo_tensor *a, bilo_tensor *b, bool ta,
                                bool tb)
{
    if (!a || !b) return NULL;
    gemm_operand ga, gb;
    if (!check_product(name, a, b, false, ta, tb, &ga, &gb)) return NULL;
    int64_t batch = ga.batch > gb.batch ? ga.batch : gb.batch;
    bool batched = a->ndim == 3 || b->ndim == 3;
    int64_t shape[3] = {batch, ga.rows, gb.cols};
    bilo_tensor *out = batched ? bilo__new(name, a->dtype, 3, shape)
                               : bilo__new(name, a->dtype, 2, shape + 1);
    if (!out) return NULL;
    if (ga.cols == 0)
        memset(bilo__ptr(out), 0, out->storage->nbytes);
    else if (out->numel > 0)
        batched_gemm(a->dtype, ta, tb, &ga, &gb, bilo__ptr(a), bilo__ptr(b), bilo__ptr(out), batch);
    bilo_tensor *in[2] = {a, b};
    bilo_op_attrs attrs = {.trans_a = ta, .trans_b = tb};
    return bilo__record(BILO_OP_MATMUL, out, in, 2, &attrs);
}

BILO_API bilo_tensor *bilo_matmul_t(bilo_tensor *a, bilo_tensor *b, bool trans_a, bool trans_b)
{
    return matmul_impl("bilo_matmul_t", a, b, trans_a, trans_b);
}

BILO_API bilo_tensor *bilo_matmul(bilo_tensor *a, bilo_tensor *b)
{
    return matmul_impl("bilo_matmul", a, b, false, false);
}

BILO_API bilo_tensor *bilo_matmul_batch_sum(bilo_tensor *a, bilo_tensor *b, bool trans_a,
                                            bool trans_b)
{
    static const char name[] = "bilo_matmul_batch_sum";
    if (!a || !b) return NULL;
    gemm_operand ga, gb;
    if (!check_product(name, a, b, true, trans_a, trans_b, &ga, &gb)) return NULL;
    bilo_tensor *out = bilo__new(name, a->dtype, 2, (int64_t[]){ga.rows, gb.cols});
    if (!out) return NULL;
    if (ga.batch == 0 || ga.cols == 0) memset(bilo__ptr(out), 0, out->storage->nbytes);
    const bilo_kernels *k = bilo__kernels();
    const size_t es = bilo_dtype_size(a->dtype);
    const int threads = bilo__threads_for(ga.rows * gb.cols * ga.cols);
    /* in batch order, whatever the thread count: the sum is the same at any */
    for (int64_t i = 0; out->numel > 0 && ga.cols > 0 && i < ga.batch; i++)
        gemm(k, a->dtype, trans_a, trans_b, &ga, &gb,
             (const char *)bilo__ptr(a) + (size_t)(i * ga.batch_stride) * es,
             (const char *)bilo__ptr(b) + (size_t)(i * gb.batch_stride) * es, bilo__ptr(out),
             i > 0, threads);
    bilo_tensor *in[2] = {a, b};
    bilo_op_attrs attrs = {.trans_a = trans_a, .trans_b = trans_b};
    return bilo__record(BILO_OP_MATMUL_BATCH_SUM, out, in, 2, &attrs);
}

BILO_API bilo_tensor *bilo_outer(bilo_tensor *a, bilo_tensor *b)
{
    const char *name = "bilo_outer";
    if (!a || !b) return NULL;
    if (!bilo__check_float(name, a) || !bilo__check_float(name, b) ||
        !bilo__check_same_dtype(name, a, b))
        return NULL;
    if (a->ndim != 1 || b->ndim != 1) {
        char sa[BILO_SHAPE_BUF], sb[BILO_SHAPE_BUF];
        return bilo__fail(BILO_ESHAPE, "%s: shapes %s and %s: expected two 1-D tensors", name,
                          bilo__shape_str(sa, a->ndim, a->shape),
                          bilo__shape_str(sb, b->ndim, b->shape));
    }
    int64_t n = a->shape[0], m = b->shape[0];
    bilo_tensor *out = bilo__new(name, a->dtype, 2, (int64_t[]){n, m});
    if (!out) return NULL;
    /* [n,1]·[1,m]: a rank-1 gemm with k = 1 computes each a[i]*b[j] exactly once. */
    gemm_operand ga = {.rows = n, .cols = 1, .ld = 1, .batch = 1};
    gemm_operand gb = {.rows = 1, .cols = m, .ld = m, .batch = 1};
    if (out->numel > 0)
        gemm(bilo__kernels(), a->dtype, false, false, &ga, &gb, bilo__ptr(a), bilo__ptr(b),
             bilo__ptr(out), false, bilo__threads_for(n * m));
    bilo_tensor *in[2] = {a, b};
    return bilo__record(BILO_OP_OUTER, out, in, 2, &(bilo_op_attrs){0});
}
