/* Products of a compressed-sparse-rows matrix with a dense one. A·D threads over the rows of
   the result; Aᵀ·D scatters every entry into the row of its column, so it threads over fixed
   blocks of the result's columns instead: each block replays the same scatter in the same
   order, and the sums do not depend on the thread count. */
#include "parallel.h"
#include "tensor_impl.h"

#include <string.h>

#define SPMM_COL_BLOCK 64

typedef struct {
    const int64_t *ptr, *idx;
    int64_t rows, n;
    const void *values, *dense;
    void *out;
} spmm_args;

/* spmm_rows_T: out[i, :] = Σ values[k] · dense[idx[k], :] over the entries k of row i.
   spmm_scatter_T: out[idx[k], j0:j1] += values[k] · dense[i, j0:j1] over every entry, rows in
   order (out zeroed by the caller). */
#define DEFINE_SPMM(T)                                                                     \
    static void spmm_rows_##T(const spmm_args *a, int64_t i)                                \
    {                                                                                       \
        const T *v = a->values, *d = a->dense;                                              \
        T *o = (T *)a->out + i * a->n;                                                      \
        for (int64_t j = 0; j < a->n; j++) o[j] = 0;                                        \
        for (int64_t k = a->ptr[i]; k < a->ptr[i + 1]; k++) {                              \
            const T *row = d + a->idx[k] * a->n;                                            \
            for (int64_t j = 0; j < a->n; j++) o[j] += v[k] * row[j];                       \
        }                                                                                   \
    }                                                                                       \
    static void spmm_scatter_##T(const spmm_args *a, int64_t j0, int64_t j1)                \
    {                                                                                       \
        const T *v = a->values, *d = a->dense;                                              \
        for (int64_t i = 0; i < a->rows; i++)                                               \
            for (int64_t k = a->ptr[i]; k < a->ptr[i + 1]; k++) {                           \
                T *o = (T *)a->out + a->idx[k] * a->n;                                      \
                const T *row = d + i * a->n;                                                \
                for (int64_t j = j0; j < j1; j++) o[j] += v[k] * row[j];                    \
            }                                                                               \
    }

DEFINE_SPMM(float)
DEFINE_SPMM(double)

static void spmm_run(const spmm_args *a, bilo_dtype dtype, bool trans, int64_t out_rows)
{
    bool f32 = dtype == BILO_F32;
    int nt = bilo__threads_for(a->ptr[a->rows] * a->n);
    if (!trans) {
        BILO__PARALLEL_FOR(nt, i, a->rows, {
            if (f32) spmm_rows_float(a, i);
            else spmm_rows_double(a, i);
        });
        return;
    }
    memset(a->out, 0, (size_t)(out_rows * a->n) * bilo_dtype_size(dtype));
    int64_t blocks = (a->n + SPMM_COL_BLOCK - 1) / SPMM_COL_BLOCK;
    BILO__PARALLEL_FOR(nt, b, blocks, {
        int64_t j0 = b * SPMM_COL_BLOCK;
        int64_t j1 = j0 + SPMM_COL_BLOCK < a->n ? j0 + SPMM_COL_BLOCK : a->n;
        if (f32) spmm_scatter_float(a, j0, j1);
        else spmm_scatter_double(a, j0, j1);
    });
}

static bool check_index_vector(const char *name, const bilo_tensor *t, int64_t numel)
{
    if (t->dtype != BILO_I64 || t->ndim != 1 || t->numel != numel) {
        char s[BILO_SHAPE_BUF];
        bilo__shape_str(s, t->ndim, t->shape);
        return bilo__fail(BILO_ESHAPE, "bilo_spmm: %s must be an i64 vector of %lld elements, "
                          "got %s %s", name, (long long)numel, bilo_dtype_name(t->dtype), s),
               false;
    }
    return true;
}

static bool check_structure(const int64_t *ptr, const int64_t *idx, int64_t rows, int64_t cols,
                            int64_t nnz)
{
    if (ptr[0] != 0 || ptr[rows] != nnz)
        return bilo__fail(BILO_EINVAL, "bilo_spmm: indptr runs from %lld to %lld, expected 0 to "
                          "nnz %lld", (long long)ptr[0], (long long)ptr[rows], (long long)nnz),
               false;
    for (int64_t i = 0; i < rows; i++)
        if (ptr[i + 1] < ptr[i])
            return bilo__fail(BILO_EINVAL, "bilo_spmm: indptr decreases at row %lld (%lld > %lld)",
                              (long long)i, (long long)ptr[i], (long long)ptr[i + 1]),
                   false;
    for (int64_t k = 0; k < nnz; k++)
        if (idx[k] < 0 || idx[k] >= cols)
            return bilo__fail(BILO_EINVAL, "bilo_spmm: indices[%lld] = %lld is outside [0, %lld)",
                              (long long)k, (long long)idx[k], (long long)cols),
                   false;
    return true;
}

static bool check_operands(bilo_tensor *indptr, bilo_tensor *indices, bilo_tensor *values,
                           int64_t rows, int64_t cols, bilo_tensor *dense, bool trans)
{
    static const char op[] = "bilo_spmm";
    if (rows < 0 || cols < 0)
        return bilo__fail(BILO_EINVAL, "%s: negative size %lld x %lld", op, (long long)rows,
                          (long long)cols),
               false;
    if (!bilo__check_float(op, values) || !bilo__check_float(op, dense) ||
        !bilo__check_same_dtype(op, values, dense))
        return false;
    char s[BILO_SHAPE_BUF];
    if (values->ndim != 1)
        return bilo__fail(BILO_ESHAPE, "%s: values must be 1-D, got %s", op,
                          bilo__shape_str(s, values->ndim, values->shape)),
               false;
    int64_t inner = trans ? rows : cols;
    if (dense->ndim != 2 || dense->shape[0] != inner)
        return bilo__fail(BILO_ESHAPE, "%s: dense must be [%lld, n] for a %lld x %lld matrix%s, "
                          "got %s", op, (long long)inner, (long long)rows, (long long)cols,
                          trans ? " (transposed)" : "",
                          bilo__shape_str(s, dense->ndim, dense->shape)),
               false;
    return check_index_vector("indptr", indptr, rows + 1) &&
           check_index_vector("indices", indices, values->numel) &&
           check_structure(bilo__ptr(indptr), bilo__ptr(indices), rows, cols, values->numel);
}

BILO_API bilo_tensor *bilo_spmm(bilo_tensor *indptr, bilo_tensor *indices, bilo_tensor *values,
                                int64_t rows, int64_t cols, bilo_tensor *dense, bool trans)
{
    if (!indptr || !indices || !values || !dense) return NULL;
    if (!check_operands(indptr, indices, values, rows, cols, dense, trans)) return NULL;
    int64_t out_rows = trans ? cols : rows, n = dense->shape[1];
    bilo_tensor *out = bilo__new("bilo_spmm", dense->dtype, BILO_SHAPE(out_rows, n));
    if (!out) return NULL;
    spmm_args a = {bilo__ptr(indptr), bilo__ptr(indices), rows, n, bilo__ptr(values),
                   bilo__ptr(dense), bilo__ptr(out)};
    if (out->numel) spmm_run(&a, dense->dtype, trans, out_rows);
    bilo_tensor *in[] = {indptr, indices, values, dense};
    return bilo__record(BILO_OP_SPMM, out, in, 4, &(bilo_op_attrs){.trans_a = trans});
}
