/* Shape ops on small hand-computed cases in every supported dtype, their inverse relations
   (index_add/scatter_add of ones count what index_select/gather picked, sum_to undoes
   expand up to the broadcast factor), views sharing storage, casts, and every error path. */
#include "bilo.h"
#include "tap.h"
#include "tensor_impl.h" /* BILO_MAX_OP_INPUTS */

#include <string.h>

#define N_(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define SHAPE_OF(a) N_(a), (a)

static const bilo_dtype ALL_DTYPES[] = {BILO_F32, BILO_F64, BILO_I64};
static const bilo_dtype FLOAT_DTYPES[] = {BILO_F32, BILO_F64};

/* Tensor of dtype holding vals (row-major). */
static bilo_tensor *mk(bilo_dtype dt, int ndim, const int64_t *shape, const double *vals)
{
    bilo_tensor *t = bilo_empty(dt, ndim, shape);
    for (int64_t i = 0; t && i < bilo_numel(t); i++) bilo_set_flat(t, i, vals[i]);
    return t;
}

static bilo_tensor *mk_index(int ndim, const int64_t *shape, const int64_t *vals)
{
    return bilo_from_data(BILO_I64, ndim, shape, vals);
}

/* 0, 1, 2, ... in shape. */
static bilo_tensor *iota(bilo_dtype dt, int ndim, const int64_t *shape)
{
    bilo_tensor *t = bilo_empty(dt, ndim, shape);
    for (int64_t i = 0; t && i < bilo_numel(t); i++) bilo_set_flat(t, i, (double)i);
    return t;
}

static bool same_shape(const bilo_tensor *t, int ndim, const int64_t *shape)
{
    if (bilo_ndim(t) != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (bilo_shape(t)[d] != shape[d]) return false;
    return true;
}

/* One TAP line: t has dtype dt, the given shape and exactly the values want. */
static int expect(const bilo_tensor *t, bilo_dtype dt, int ndim, const int64_t *shape,
                  const double *want, const char *name)
{
    bool ok = t && bilo_dtype_of(t) == dt && same_shape(t, ndim, shape);
    int64_t bad = -1;
    for (int64_t i = 0; ok && i < bilo_numel(t); i++)
        if (bilo_get_flat(t, i) != want[i]) bad = i, ok = false;
    tap_ok(ok, "%s (%s)", name, bilo_dtype_name(dt));
    if (!t) tap_diag("NULL result: %s", bilo_last_error());
    if (bad >= 0)
        tap_diag("element %lld: got %g, want %g", (long long)bad, bilo_get_flat(t, bad), want[bad]);
    return ok;
}

/* One TAP line: t is NULL, the error code is `code` and the message names op and `detail`
   (when given). Clears the error. */
static void expect_error(const bilo_tensor *t, int code, const char *op, const char *detail,
                         const char *name)
{
    const char *msg = bilo_last_error();
    bool ok = !t && bilo_errcode() == code && strstr(msg, op) &&
              (!detail || strstr(msg, detail));
    tap_ok(ok, "error: %s", name);
    if (!ok)
        tap_diag("got %s, code %d, message \"%s\"", t ? "a tensor" : "NULL", bilo_errcode(), msg);
    bilo_clear_error();
}

/* ---- reshape / flatten ------------------------------------------------------------------ */

static void test_reshape(void)
{
    const double v[6] = {0, 1, 2, 3, 4, 5};
    for (int k = 0; k < N_(ALL_DTYPES); k++) {
        bilo_dtype dt = ALL_DTYPES[k];
        bilo_tensor *x = iota(dt, BILO_SHAPE(2, 3));
        expect(bilo_reshape(x, BILO_SHAPE(3, -1)), dt, BILO_SHAPE(3, 2), v, "reshape -1 inferred");
        expect(bilo_reshape(x, BILO_SHAPE(-1)), dt, BILO_SHAPE(6), v, "reshape to -1 alone");
        expect(bilo_flatten(x), dt, BILO_SHAPE(6), v, "flatten");
    }
    bilo_tensor *x = iota(BILO_F64, BILO_SHAPE(2, 3));
    bilo_tensor *r = bilo_reshape(x, BILO_SHAPE(3, 1, 2));
    bilo_set_flat(r, 4, 42.0);
    tap_ok(bilo_get_flat(x, 4) == 42.0, "reshape shares storage: write view, read base");
    bilo_set_flat(x, 1, -7.0);
    tap_ok(bilo_get_flat(r, 1) == -7.0, "reshape shares storage: write base, read view");
    tap_ok(bilo_data(r) == bilo_data(x), "reshape returns a view of the same data");

    bilo_tensor *s = bilo_scalar(BILO_F32, 2.5);
    expect(bilo_reshape(s, BILO_SHAPE(1, 1)), BILO_F32, BILO_SHAPE(1, 1), (double[]){2.5},
           "0-d to [1,1]");
    bilo_tensor *one = bilo_full(BILO_F32, BILO_SHAPE(1), 3.0);
    bilo_tensor *back = bilo_reshape(one, 0, NULL);
    tap_ok(back && bilo_ndim(back) == 0 && bilo_item(back) == 3.0, "[1] to 0-d");
    bilo_tensor *empty = bilo_zeros(BILO_F64, BILO_SHAPE(0, 3));
    expect(bilo_reshape(empty, BILO_SHAPE(3, 0)), BILO_F64, BILO_SHAPE(3, 0), NULL,
           "empty reshape");

    expect_error(bilo_reshape(x, BILO_SHAPE(4, 2)), BILO_ESHAPE, "bilo_reshape", "[4,2]",
                 "reshape numel mismatch");
    expect_error(bilo_reshape(x, BILO_SHAPE(4, -1)), BILO_ESHAPE, "bilo_reshape", "[2,3]",
                 "reshape -1 not divisible");
    expect_error(bilo_reshape(x, BILO_SHAPE(-1, -1)), BILO_EINVAL, "bilo_reshape", NULL,
                 "reshape two -1");
    expect_error(bilo_reshape(x, BILO_SHAPE(-2, -3)), BILO_EINVAL, "bilo_reshape", NULL,
                 "reshape negative size");
    expect_error(bilo_reshape(empty, BILO_SHAPE(0, -1)), BILO_ESHAPE, "bilo_reshape", NULL,
                 "reshape -1 next to 0 is ambiguous");
    expect_error(bilo_reshape(x, 9, (int64_t[9]){1}), BILO_EINVAL, "bilo_reshape", NULL,
                 "reshape ndim 9");
    expect_error(bilo_reshape(x, 2, NULL), BILO_ENULL, "bilo_reshape", NULL,
                 "reshape NULL shape");
}

/* ---- transpose / permute ---------------------------------------------------------------- */

static void test_permute(void)
{
    for (int k = 0; k < N_(ALL_DTYPES); k++) {
        bilo_dtype dt = ALL_DTYPES[k];
        bilo_tensor *x = iota(dt, BILO_SHAPE(2, 3));
        const double t23[6] = {0, 3, 1, 4, 2, 5};
        expect(bilo_transpose(x, 0, 1), dt, BILO_SHAPE(3, 2), t23, "transpose 2x3");
        expect(bilo_transpose(x, -1, -2), dt, BILO_SHAPE(3, 2), t23, "transpose negative axes");
        expect(bilo_permute(x, (int[]){1, 0}), dt, BILO_SHAPE(3, 2), t23, "permute {1,0}");

        /* x[i][j][k] = 12i + 4j + k; out[k][i][j] for perm {2,0,1} */
        bilo_tensor *y = iota(dt, BILO_SHAPE(2, 3, 4));
        double want[24];
        for (int kk = 0, n = 0; kk < 4; kk++)
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 3; j++) want[n++] = 12 * i + 4 * j + kk;
        expect(bilo_permute(y, (int[]){2, 0, 1}), dt, BILO_SHAPE(4, 2, 3), want,
               "permute {2,0,1}");
        expect(bilo_permute(y, (int[]){-1, 0, -2}), dt, BILO_SHAPE(4, 2, 3), want,
               "permute negative entries");
        double tr02[24];
        for (int kk = 0, n = 0; kk < 4; kk++)
            for (int j = 0; j < 3; j++)
                for (int i = 0; i < 2; i++) tr02[n++] = 12 * i + 4 * j + kk;
        expect(bilo_transpose(y, 0, 2), dt, BILO_SHAPE(4, 3, 2), tr02, "transpose axes 0, 2");
    }

    /* large enough for the threaded path: [64,128,8] -> perm {2,0,1} */
    bilo_tensor *big = iota(BILO_F32, BILO_SHAPE(64, 128, 8));
    bilo_tensor *p = bilo_permute(big, (int[]){2, 0, 1});
    bool ok = p && same_shape(p, BILO_SHAPE(8, 64, 128));
    const float *pd = p ? bilo_data(p) : NULL;
    for (int c = 0; ok && c < 8; c++)
        for (int a = 0; ok && a < 64; a++)
            for (int b = 0; ok && b < 128; b++)
                ok = pd[(c * 64 + a) * 128 + b] == (float)((a * 128 + b) * 8 + c);
    tap_ok(ok, "permute of 65536 elements matches the index formula");

    bilo_tensor *x = iota(BILO_F64, BILO_SHAPE(2, 3));
    expect_error(bilo_transpose(x, 0, 2), BILO_ERANGE, "bilo_transpose", "axis 2",
                 "transpose axis out of range");
    expect_error(bilo_transpose(x, -3, 0), BILO_ERANGE, "bilo_transpose", "axis -3",
                 "transpose negative axis out of range");
    expect_error(bilo_permute(x, (int[]){0, 0}), BILO_EINVAL, "bilo_permute", "value 0",
                 "permute repeated axis");
    expect_error(bilo_permute(x, (int[]){0, 2}), BILO_EINVAL, "bilo_permute", "value 2",
                 "permute axis out of range");
    expect_error(bilo_permute(x, NULL), BILO_ENULL, "bilo_permute", NULL, "permute NULL perm");
}

/* ---- slice / slice_scatter -------------------------------------------------------------- */

static void test_slice(void)
{
    for (int k = 0; k < N_(ALL_DTYPES); k++) {
        bilo_dtype dt = ALL_DTYPES[k];
        bilo_tensor *x = iota(dt, BILO_SHAPE(10));
        expect(bilo_slice(x, 0, 1, 8, 3), dt, BILO_SHAPE(3), (double[]){1, 4, 7}, "slice step 3");
        expect(bilo_slice(x, 0, 0, 10, 4), dt, BILO_SHAPE(3), (double[]){0, 4, 8},
               "slice step 4 to the end");
        expect(bilo_slice(x, 0, -3, 100, 1), dt, BILO_SHAPE(3), (double[]){7, 8, 9},
               "slice negative start, stop clamped");
        expect(bilo_slice(x, 0, -100, 2, 1), dt, BILO_SHAPE(2), (double[]){0, 1},
               "slice start clamped to 0");
        expect(bilo_slice(x, 0, 2, -5, 2), dt, BILO_SHAPE(2), (double[]){2, 4},
               "slice negative stop");
        expect(bilo_slice(x, 0, 5, 2, 1), dt, BILO_SHAPE(0), NULL, "slice empty (stop < start)");
        expect(bilo_slice(x, -1, 12, 20, 1), dt, BILO_SHAPE(0), NULL, "slice start past the end");

        bilo_tensor *m = iota(dt, BILO_SHAPE(3, 4));
        expect(bilo_slice(m, 1, 1, -1, 2), dt, BILO_SHAPE(3, 1), (double[]){1, 5, 9},
               "slice 2-D axis 1");
        expect(bilo_slice(m, -1, 0, 4, 3), dt, BILO_SHAPE(3, 2), (double[]){0, 3, 4, 7, 8, 11},
               "slice 2-D axis -1 step 3");
        expect(bilo_slice(m, 0, 1, 3, 1), dt, BILO_SHAPE(2, 4),
               (double[]){4, 5, 6, 7, 8, 9, 10, 11}, "slice rows");

        bilo_tensor *base = iota(dt, BILO_SHAPE(3, 4));
        bilo_tensor *src = mk(dt, BILO_SHAPE(3, 2), (double[]){-1, -2, -3, -4, -5, -6});
        expect(bilo_slice_scatter(base, src, 1, 0, 4, 2), dt, BILO_SHAPE(3, 4),
               (double[]){-1, 1, -2, 3, -3, 5, -4, 7, -5, 9, -6, 11}, "slice_scatter columns");
        bilo_tensor *row = mk(dt, BILO_SHAPE(1, 4), (double[]){20, 21, 22, 23});
        expect(bilo_slice_scatter(base, row, -2, -1, 100, 1), dt, BILO_SHAPE(3, 4),
               (double[]){0, 1, 2, 3, 4, 5, 6, 7, 20, 21, 22, 23}, "slice_scatter last row");
        tap_ok(bilo_get_flat(base, 0) == 0 && bilo_get_flat(base, 8) == 8,
               "slice_scatter leaves base untouched (%s)", bilo_dtype_name(dt));
    }
    bilo_tensor *x = iota(BILO_F64, BILO_SHAPE(3, 4));
    expect_error(bilo_slice(x, 0, 0, 3, 0), BILO_EINVAL, "bilo_slice", "step 0", "slice step 0");
    expect_error(bilo_slice(x, 0, 3, 0, -1), BILO_EINVAL, "bilo_slice", "step -1",
                 "slice negative step");
    expect_error(bilo_slice(x, 2, 0, 1, 1), BILO_ERANGE, "bilo_slice", "axis 2", "slice bad axis");
    bilo_tensor *src = bilo_zeros(BILO_F64, BILO_SHAPE(3, 3));
    expect_error(bilo_slice_scatter(x, src, 1, 0, 4, 2), BILO_ESHAPE, "bilo_slice_scatter",
                 "[3,2]", "slice_scatter src shape mismatch");
    bilo_tensor *src32 = bilo_zeros(BILO_F32, BILO_SHAPE(3, 2));
    expect_error(bilo_slice_scatter(x, src32, 1, 0, 4, 2), BILO_EDTYPE, "bilo_slice_scatter",
                 NULL, "slice_scatter dtype mismatch");
    expect_error(bilo_slice_scatter(x, src, 1, 0, 4, 0), BILO_EINVAL, "bilo_slice_scatter",
                 "step 0", "slice_scatter step 0");
}

/* ---- concat / stack --------------------------------------------------------------------- */

static void test_concat_stack(void)
{
    for (int k = 0; k < N_(ALL_DTYPES); k++) {
        bilo_dtype dt = ALL_DTYPES[k];
        bilo_tensor *a = mk(dt, BILO_SHAPE(2, 2), (double[]){1, 2, 3, 4});
        bilo_tensor *b = mk(dt, BILO_SHAPE(1, 2), (double[]){5, 6});
        bilo_tensor *c = mk(dt, BILO_SHAPE(2, 1), (double[]){7, 8});
        expect(bilo_concat((bilo_tensor *[]){a, b}, 2, 0), dt, BILO_SHAPE(3, 2),
               (double[]){1, 2, 3, 4, 5, 6}, "concat axis 0");
        expect(bilo_concat((bilo_tensor *[]){b, a, b}, 3, -2), dt, BILO_SHAPE(4, 2),
               (double[]){5, 6, 1, 2, 3, 4, 5, 6}, "concat three along axis -2");
        expect(bilo_concat((bilo_tensor *[]){a, c}, 2, 1), dt, BILO_SHAPE(2, 3),
               (double[]){1, 2, 7, 3, 4, 8}, "concat axis 1");
        expect(bilo_concat((bilo_tensor *[]){c, a, c}, 3, -1), dt, BILO_SHAPE(2, 4),
               (double[]){7, 1, 2, 7, 8, 3, 4, 8}, "concat three along axis -1");
        expect(bilo_concat((bilo_tensor *[]){a}, 1, 0), dt, BILO_SHAPE(2, 2),
               (double[]){1, 2, 3, 4}, "concat of one");

        /* stack two [2,3]: x = iota, y = 10 + iota */
        bilo_tensor *x = iota(dt, BILO_SHAPE(2, 3));
        bilo_tensor *y = mk(dt, BILO_SHAPE(2, 3), (double[]){10, 11, 12, 13, 14, 15});
        bilo_tensor *xy[2] = {x, y};
        for (int axis = -3; axis <= 2; axis++) {
            int ax = axis < 0 ? axis + 3 : axis;
            int64_t shape[3] = {2, 3};
            double want[12];
            /* out index (s, i, j) with s inserted at ax */
            for (int s = 0; s < 2; s++)
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 3; j++) {
                        int64_t idx[3], pos = 0;
                        int64_t rest[2] = {i, j};
                        int64_t dims[3];
                        for (int d = 0, r = 0; d < 3; d++) {
                            idx[d] = d == ax ? s : rest[r];
                            dims[d] = d == ax ? 2 : shape[r++];
                        }
                        for (int d = 0; d < 3; d++) pos = pos * dims[d] + idx[d];
                        want[pos] = 10 * s + 3 * i + j;
                    }
            int64_t out_shape[3];
            for (int d = 0, r = 0; d < 3; d++) out_shape[d] = d == ax ? 2 : shape[r++];
            char name[64];
            snprintf(name, sizeof name, "stack along axis %d", axis);
            expect(bilo_stack(xy, 2, axis), dt, 3, out_shape, want, name);
        }
    }
    bilo_tensor *a = bilo_zeros(BILO_F64, BILO_SHAPE(2, 2));
    bilo_tensor *b = bilo_zeros(BILO_F64, BILO_SHAPE(2, 3));
    bilo_tensor *f = bilo_zeros(BILO_F32, BILO_SHAPE(2, 2));
    expect_error(bilo_concat((bilo_tensor *[]){a, b}, 2, 0), BILO_ESHAPE, "bilo_concat", "[2,3]",
                 "concat shapes differ outside axis");
    expect_error(bilo_concat((bilo_tensor *[]){a, f}, 2, 0), BILO_EDTYPE, "bilo_concat", NULL,
                 "concat dtype mismatch");
    expect_error(bilo_concat((bilo_tensor *[]){a}, 0, 0), BILO_EINVAL, "bilo_concat", NULL,
                 "concat of zero tensors");
    expect_error(bilo_concat((bilo_tensor *[]){a}, 1, 2), BILO_ERANGE, "bilo_concat", "axis 2",
                 "concat bad axis");
    expect_error(bilo_stack((bilo_tensor *[]){a, b}, 2, 0), BILO_ESHAPE, "bilo_stack", "[2,3]",
                 "stack shape mismatch");
    expect_error(bilo_stack((bilo_tensor *[]){a, a}, 2, 3), BILO_ERANGE, "bilo_stack", "axis 3",
                 "stack bad axis");
    bilo_tensor *many[BILO_MAX_OP_INPUTS + 1];
    for (int i = 0; i <= BILO_MAX_OP_INPUTS; i++) many[i] = a;
    expect_error(bilo_stack(many, BILO_MAX_OP_INPUTS + 1, 0), BILO_EINVAL, "bilo_stack", NULL,
                 "stack of too many tensors");
}

/* ---- index_select / index_add ----------------------------------------------------------- */

static void test_index_select_add(void)
{
    bilo_tensor *idx = mk_index(BILO_SHAPE(3), (int64_t[]){2, 0, 2});
    for (int k = 0; k < N_(ALL_DTYPES); k++) {
        bilo_dtype dt = ALL_DTYPES[k];
        bilo_tensor *x = iota(dt, BILO_SHAPE(3, 2));
        expect(bilo_index_select(x, 0, idx), dt, BILO_SHAPE(3, 2), (double[]){4, 5, 0, 1, 4, 5},
               "index_select rows, repeated index");
        bilo_tensor *cols = mk_index(BILO_SHAPE(4), (int64_t[]){1, 1, 0, 1});
        expect(bilo_index_select(x, -1, cols), dt, BILO_SHAPE(3, 4),
               (double[]){1, 1, 0, 1, 3, 3, 2, 3, 5, 5, 4, 5}, "index_select axis -1");
    }
    for (int k = 0; k < N_(FLOAT_DTYPES); k++) {
        bilo_dtype dt = FLOAT_DTYPES[k];
        bilo_tensor *base = bilo_ones(dt, BILO_SHAPE(3, 2));
        bilo_tensor *src = mk(dt, BILO_SHAPE(3, 2), (double[]){1, 2, 3, 4, 5, 6});
        expect(bilo_index_add(base, 0, idx, src), dt, BILO_SHAPE(3, 2),
               (double[]){4, 5, 1, 1, 7, 9}, "index_add rows, repeated index accumulates");
        /* inverse relation: index_add of ones onto zeros counts how often each row was picked */
        bilo_tensor *x = iota(dt, BILO_SHAPE(3, 2));
        bilo_tensor *picked = bilo_index_select(x, 0, idx);
        bilo_tensor *counts = bilo_index_add(bilo_zeros_like(x), 0, idx, bilo_ones_like(picked));
        expect(counts, dt, BILO_SHAPE(3, 2), (double[]){1, 1, 0, 0, 2, 2},
               "index_add of ones counts index_select picks");
        bilo_tensor *cidx = mk_index(BILO_SHAPE(3), (int64_t[]){0, 0, 1});
        bilo_tensor *csrc = mk(dt, BILO_SHAPE(3, 3), (double[]){1, 2, 3, 4, 5, 6, 7, 8, 9});
        expect(bilo_index_add(bilo_zeros(dt, BILO_SHAPE(3, 2)), 1, cidx, csrc), dt,
               BILO_SHAPE(3, 2), (double[]){3, 3, 9, 6, 15, 9}, "index_add along axis 1");
    }
    bilo_tensor *x = iota(BILO_F64, BILO_SHAPE(3, 2));
    bilo_tensor *bad = mk_index(BILO_SHAPE(3), (int64_t[]){0, 3, 1});
    expect_error(bilo_index_select(x, 0, bad), BILO_ERANGE, "bilo_index_select",
                 "index 3 at position 1", "index_select out of range");
    bilo_tensor *neg = mk_index(BILO_SHAPE(2), (int64_t[]){0, -1});
    expect_error(bilo_index_select(x, 0, neg), BILO_ERANGE, "bilo_index_select",
                 "index -1 at position 1", "index_select negative index");
    expect_error(bilo_index_select(x, 2, idx), BILO_ERANGE, "bilo_index_select", "axis 2",
                 "index_select bad axis");
    expect_error(bilo_index_select(x, 0, x), BILO_EDTYPE, "bilo_index_select", "i64",
                 "index_select float index");
    bilo_tensor *idx2d = mk_index(BILO_SHAPE(1, 2), (int64_t[]){0, 1});
    expect_error(bilo_index_select(x, 0, idx2d), BILO_ESHAPE, "bilo_index_select", "[1,2]",
                 "index_select 2-D index");
    expect_error(bilo_index_add(x, 0, idx, bilo_zeros(BILO_F64, BILO_SHAPE(2, 2))), BILO_ESHAPE,
                 "bilo_index_add", "[2,2]", "index_add src shape mismatch");
    expect_error(bilo_index_add(x, 0, bad, bilo_zeros(BILO_F64, BILO_SHAPE(3, 2))), BILO_ERANGE,
                 "bilo_index_add", "index 3", "index_add out of range");
    bilo_tensor *xi = iota(BILO_I64, BILO_SHAPE(3, 2));
    expect_error(bilo_index_add(xi, 0, idx, xi), BILO_EDTYPE, "bilo_index_add", NULL,
                 "index_add on i64");
}

/* ---- gather / scatter_add --------------------------------------------------------------- */

static void test_gather_scatter(void)
{
    for (int k = 0; k < N_(ALL_DTYPES); k++) {
        bilo_dtype dt = ALL_DTYPES[k];
        bilo_tensor *x = mk(dt, BILO_SHAPE(2, 2), (double[]){1, 2, 3, 4});
        bilo_tensor *i1 = mk_index(BILO_SHAPE(2, 2), (int64_t[]){0, 0, 1, 0});
        expect(bilo_gather(x, 1, i1), dt, BILO_SHAPE(2, 2), (double[]){1, 1, 4, 3},
               "gather axis 1 (torch example)");
        bilo_tensor *y = iota(dt, BILO_SHAPE(3, 3));
        bilo_tensor *i0 = mk_index(BILO_SHAPE(2, 3), (int64_t[]){2, 1, 0, 0, 0, 2});
        expect(bilo_gather(y, 0, i0), dt, BILO_SHAPE(2, 3), (double[]){6, 4, 2, 0, 1, 8},
               "gather axis 0");
        bilo_tensor *small = mk_index(BILO_SHAPE(2, 1), (int64_t[]){2, 2});
        expect(bilo_gather(y, -1, small), dt, BILO_SHAPE(2, 1), (double[]){2, 5},
               "gather with a smaller index, axis -1");
        bilo_tensor *z = iota(dt, BILO_SHAPE(2, 3, 2));
        bilo_tensor *iz = mk_index(BILO_SHAPE(1, 2, 2), (int64_t[]){2, 0, 1, 1});
        expect(bilo_gather(z, 1, iz), dt, BILO_SHAPE(1, 2, 2), (double[]){4, 1, 2, 3},
               "gather 3-D axis 1");
    }
    for (int k = 0; k < N_(FLOAT_DTYPES); k++) {
        bilo_dtype dt = FLOAT_DTYPES[k];
        bilo_tensor *idx = mk_index(BILO_SHAPE(2, 3), (int64_t[]){0, 0, 2, 1, 1, 1});
        bilo_tensor *counts = bilo_scatter_add(bilo_zeros(dt, BILO_SHAPE(2, 3)), 1, idx,
                                               bilo_ones(dt, BILO_SHAPE(2, 3)));
        expect(counts, dt, BILO_SHAPE(2, 3), (double[]){2, 0, 1, 0, 3, 0},
               "scatter_add of ones counts gather picks");
        bilo_tensor *base = mk(dt, BILO_SHAPE(3, 2), (double[]){1, 1, 1, 1, 1, 1});
        bilo_tensor *i0 = mk_index(BILO_SHAPE(2, 2), (int64_t[]){2, 0, 2, 2});
        bilo_tensor *src = mk(dt, BILO_SHAPE(2, 2), (double[]){10, 20, 30, 40});
        expect(bilo_scatter_add(base, 0, i0, src), dt, BILO_SHAPE(3, 2),
               (double[]){1, 21, 1, 1, 41, 41}, "scatter_add axis 0 with repeats");
        /* gather then scatter_add of the gathered values: each x element times its count */
        bilo_tensor *x = mk(dt, BILO_SHAPE(2, 3), (double[]){1, 2, 3, 4, 5, 6});
        bilo_tensor *g = bilo_gather(x, 1, idx);
        expect(bilo_scatter_add(bilo_zeros_like(x), -1, idx, g), dt, BILO_SHAPE(2, 3),
               (double[]){2, 0, 3, 0, 15, 0}, "scatter_add(gather) = x * count");
    }
    bilo_tensor *x = iota(BILO_F64, BILO_SHAPE(2, 3));
    bilo_tensor *bad = mk_index(BILO_SHAPE(2, 1), (int64_t[]){0, 3});
    expect_error(bilo_gather(x, 1, bad), BILO_ERANGE, "bilo_gather", "index 3 at position 1",
                 "gather out of range");
    bilo_tensor *wide = mk_index(BILO_SHAPE(3, 1), (int64_t[]){0, 0, 0});
    expect_error(bilo_gather(x, 1, wide), BILO_ESHAPE, "bilo_gather", "[3,1]",
                 "gather index larger than x outside axis");
    bilo_tensor *flat = mk_index(BILO_SHAPE(2), (int64_t[]){0, 0});
    expect_error(bilo_gather(x, 0, flat), BILO_ESHAPE, "bilo_gather", NULL,
                 "gather ndim mismatch");
    expect_error(bilo_gather(x, -3, bad), BILO_ERANGE, "bilo_gather", "axis -3",
                 "gather bad axis");
    expect_error(bilo_scatter_add(x, 1, bad, bilo_ones(BILO_F64, BILO_SHAPE(2, 1))), BILO_ERANGE,
                 "bilo_scatter_add", "index 3", "scatter_add out of range");
    bilo_tensor *ok_idx = mk_index(BILO_SHAPE(2, 1), (int64_t[]){0, 1});
    expect_error(bilo_scatter_add(x, 1, ok_idx, bilo_ones(BILO_F64, BILO_SHAPE(2, 2))),
                 BILO_ESHAPE, "bilo_scatter_add", "[2,2]", "scatter_add src shape mismatch");
}

/* ---- one_hot ---------------------------------------------------------------------------- */

static void test_one_hot(void)
{
    bilo_tensor *labels = mk_index(BILO_SHAPE(2, 2), (int64_t[]){0, 2, 1, 0});
    for (int k = 0; k < N_(FLOAT_DTYPES); k++) {
        bilo_dtype dt = FLOAT_DTYPES[k];
        expect(bilo_one_hot(labels, 3, dt), dt, BILO_SHAPE(2, 2, 3),
               (double[]){1, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0}, "one_hot [2,2] labels");
    }
    bilo_tensor *scalar_label = mk_index(0, NULL, (int64_t[]){1});
    expect(bilo_one_hot(scalar_label, 2, BILO_F64), BILO_F64, BILO_SHAPE(2), (double[]){0, 1},
           "one_hot 0-d label");
    bilo_tensor *bad = mk_index(BILO_SHAPE(3), (int64_t[]){0, 1, 3});
    expect_error(bilo_one_hot(bad, 3, BILO_F32), BILO_ERANGE, "bilo_one_hot",
                 "label 3 at position 2", "one_hot label out of range");
    bilo_tensor *neg = mk_index(BILO_SHAPE(1), (int64_t[]){-1});
    expect_error(bilo_one_hot(neg, 3, BILO_F32), BILO_ERANGE, "bilo_one_hot", "label -1",
                 "one_hot negative label");
    expect_error(bilo_one_hot(labels, 0, BILO_F32), BILO_EINVAL, "bilo_one_hot", NULL,
                 "one_hot zero classes");
    expect_error(bilo_one_hot(labels, 3, BILO_I64), BILO_EDTYPE, "bilo_one_hot", NULL,
                 "one_hot integer output");
    expect_error(bilo_one_hot(bilo_zeros(BILO_F32, BILO_SHAPE(2)), 3, BILO_F32), BILO_EDTYPE,
                 "bilo_one_hot", "labels", "one_hot float labels");
}

/* ---- expand / sum_to -------------------------------------------------------------------- */

static void test_expand_sum_to(void)
{
    for (int k = 0; k < N_(ALL_DTYPES); k++) {
        bilo_dtype dt = ALL_DTYPES[k];
        bilo_tensor *x = mk(dt, BILO_SHAPE(3, 1), (double[]){1, 2, 3});
        double want[24];
        for (int a = 0, n = 0; a < 2; a++)
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 4; j++) want[n++] = i + 1;
        expect(bilo_expand(x, BILO_SHAPE(2, 3, 4)), dt, BILO_SHAPE(2, 3, 4), want,
               "expand [3,1] to [2,3,4]");
        bilo_tensor *row = mk(dt, BILO_SHAPE(3), (double[]){1, 2, 3});
        expect(bilo_expand(row, BILO_SHAPE(2, 3)), dt, BILO_SHAPE(2, 3),
               (double[]){1, 2, 3, 1, 2, 3}, "expand [3] to [2,3]");
        bilo_tensor *s = bilo_full(dt, 0, NULL, 7);
        expect(bilo_expand(s, BILO_SHAPE(2, 2)), dt, BILO_SHAPE(2, 2), (double[]){7, 7, 7, 7},
               "expand 0-d to [2,2]");
        expect(bilo_expand(row, BILO_SHAPE(3)), dt, BILO_SHAPE(3), (double[]){1, 2, 3},
               "expand to the same shape");
    }
    for (int k = 0; k < N_(FLOAT_DTYPES); k++) {
        bilo_dtype dt = FLOAT_DTYPES[k];
        bilo_tensor *m = iota(dt, BILO_SHAPE(2, 3));
        expect(bilo_sum_to(m, BILO_SHAPE(3)), dt, BILO_SHAPE(3), (double[]){3, 5, 7},
               "sum_to [3] drops the leading axis");
        expect(bilo_sum_to(m, BILO_SHAPE(2, 1)), dt, BILO_SHAPE(2, 1), (double[]){3, 12},
               "sum_to [2,1] sums rows");
        expect(bilo_sum_to(m, BILO_SHAPE(1, 3)), dt, BILO_SHAPE(1, 3), (double[]){3, 5, 7},
               "sum_to [1,3] sums columns");
        expect(bilo_sum_to(m, 0, NULL), dt, 0, NULL, (double[]){15}, "sum_to 0-d sums all");
        expect(bilo_sum_to(m, BILO_SHAPE(2, 3)), dt, BILO_SHAPE(2, 3),
               (double[]){0, 1, 2, 3, 4, 5}, "sum_to the same shape copies");
        /* round trip: sum_to(expand(x)) == x * (broadcast factor 8) */
        bilo_tensor *x = mk(dt, BILO_SHAPE(3, 1), (double[]){1.5, -2, 0.25});
        bilo_tensor *rt = bilo_sum_to(bilo_expand(x, BILO_SHAPE(2, 3, 4)), BILO_SHAPE(3, 1));
        expect(rt, dt, BILO_SHAPE(3, 1), (double[]){12, -16, 2}, "sum_to(expand(x)) == 8 x");
        bilo_tensor *c = mk(dt, BILO_SHAPE(1, 2, 1), (double[]){1, 10});
        bilo_tensor *e = bilo_expand(c, BILO_SHAPE(3, 1, 2, 4));
        expect(bilo_sum_to(e, BILO_SHAPE(1, 2, 1)), dt, BILO_SHAPE(1, 2, 1), (double[]){12, 120},
               "sum_to reduces leading and size-1 axes together");
    }

    /* a large reduction compared with a double reference loop in the same order, and the
       result at 1 and 2 threads */
    int64_t rows = 1000, cols = 300;
    bilo_tensor *big = bilo_empty(BILO_F32, BILO_SHAPE(rows, cols));
    float *bd = bilo_data(big);
    for (int64_t i = 0; i < rows * cols; i++) bd[i] = (float)((i * 7919) % 1001) / 37.0f - 13.0f;
    bool ok = true;
    bilo_tensor *by_thread[2];
    for (int nt = 1; nt <= 2; nt++) {
        bilo_set_num_threads(nt);
        by_thread[nt - 1] = bilo_sum_to(big, BILO_SHAPE(1, cols));
    }
    bilo_set_num_threads(0);
    const float *s1 = bilo_data(by_thread[0]);
    for (int64_t j = 0; j < cols; j++) {
        double acc = 0;
        for (int64_t i = 0; i < rows; i++) acc += bd[i * cols + j];
        ok = ok && s1[j] == (float)acc;
    }
    tap_ok(ok, "sum_to [1000,300] -> [1,300] equals the f64 reference, rounded");
    tap_ok(memcmp(bilo_data(by_thread[0]), bilo_data(by_thread[1]), (size_t)cols * 4) == 0,
           "sum_to identical at 1 and 2 threads");

    bilo_tensor *x = bilo_zeros(BILO_F64, BILO_SHAPE(2, 3));
    expect_error(bilo_expand(x, BILO_SHAPE(2, 4)), BILO_ESHAPE, "bilo_expand", "[2,4]",
                 "expand non-broadcastable");
    expect_error(bilo_expand(x, BILO_SHAPE(3)), BILO_ESHAPE, "bilo_expand", "[2,3]",
                 "expand to fewer axes");
    expect_error(bilo_sum_to(x, BILO_SHAPE(2)), BILO_ESHAPE, "bilo_sum_to", "[2]",
                 "sum_to non-broadcastable");
    expect_error(bilo_sum_to(x, BILO_SHAPE(1, 2, 3, 1)), BILO_ESHAPE, "bilo_sum_to", NULL,
                 "sum_to to more axes");
    expect_error(bilo_sum_to(bilo_zeros(BILO_I64, BILO_SHAPE(2)), BILO_SHAPE(1)), BILO_EDTYPE,
                 "bilo_sum_to", NULL, "sum_to on i64");
}

/* sum_to over [N, C, H, W] to the shapes that reduce whole contiguous runs (per-channel,
   per-sample, per-pixel sums) and to ones that do not, against a loop over the index formula.
   The values are multiples of 1/8 below 2^7, so every sum is exact in a double and the result
   must be that sum rounded once, whatever the order of additions; also 1 against 2 threads. */
static void test_sum_to_runs(void)
{
    const int64_t n = 8, c = 64, h = 32, w = 32;
    const int64_t targets[][4] = {{1, c, 1, 1}, {n, 1, 1, 1}, {1, 1, h, w}, {1, c, 1, w},
                                  {n, c, 1, 1}, {1, 1, 1, 1}};
    for (int k = 0; k < N_(FLOAT_DTYPES); k++) {
        const bilo_dtype dt = FLOAT_DTYPES[k];
        bilo_tensor *x = bilo_empty(dt, BILO_SHAPE(n, c, h, w));
        for (int64_t i = 0; i < n * c * h * w; i++)
            bilo_set_flat(x, i, (double)((i * 7919) % 1001) / 8 - 60);
        for (int t = 0; t < N_(targets); t++) {
            const int64_t *to = targets[t];
            const int64_t numel = to[0] * to[1] * to[2] * to[3];
            double *want = calloc((size_t)numel, sizeof *want);
            for (int64_t i = 0; i < n * c * h * w; i++) {
                const int64_t in = i / (c * h * w), ic = i / (h * w) % c, ih = i / w % h,
                              iw = i % w;
                const int64_t o = ((in % to[0] * to[1] + ic % to[1]) * to[2] + ih % to[2]) * to[3] +
                                  iw % to[3];
                want[o] += bilo_get_flat(x, i);
            }
            if (dt == BILO_F32) /* the exact sum, rounded once to the result's dtype */
                for (int64_t o = 0; o < numel; o++) want[o] = (float)want[o];
            bilo_tensor *by_threads[2];
            for (int nt = 1; nt <= 2; nt++) {
                bilo_set_num_threads(nt);
                by_threads[nt - 1] = bilo_sum_to(x, 4, to);
            }
            bilo_set_num_threads(0);
            char name[96];
            snprintf(name, sizeof name, "sum_to [8,64,32,32] -> [%lld,%lld,%lld,%lld]",
                     (long long)to[0], (long long)to[1], (long long)to[2], (long long)to[3]);
            expect(by_threads[0], dt, 4, to, want, name);
            tap_ok(by_threads[1] && memcmp(bilo_data(by_threads[0]), bilo_data(by_threads[1]),
                                           (size_t)numel * bilo_dtype_size(dt)) == 0,
                   "%s identical at 1 and 2 threads (%s)", name, bilo_dtype_name(dt));
            free(want);
        }
    }
}

/* ---- clone / cast ----------------------------------------------------------------------- */

static void test_clone_cast(void)
{
    for (int k = 0; k < N_(ALL_DTYPES); k++) {
        bilo_dtype dt = ALL_DTYPES[k];
        bilo_tensor *x = iota(dt, BILO_SHAPE(2, 2));
        bilo_tensor *c = bilo_clone(x);
        expect(c, dt, BILO_SHAPE(2, 2), (double[]){0, 1, 2, 3}, "clone");
        bilo_set_flat(c, 0, 9);
        tap_ok(bilo_get_flat(x, 0) == 0, "clone owns its storage (%s)", bilo_dtype_name(dt));
        for (int j = 0; j < N_(ALL_DTYPES); j++) {
            char name[48];
            snprintf(name, sizeof name, "cast to %s", bilo_dtype_name(ALL_DTYPES[j]));
            bilo_tensor *y = bilo_cast(x, ALL_DTYPES[j]);
            expect(y, ALL_DTYPES[j], BILO_SHAPE(2, 2), (double[]){0, 1, 2, 3}, name);
            tap_ok(y && bilo_data(y) != bilo_data(x), "%s copies (from %s)", name,
                   bilo_dtype_name(dt));
        }
    }
    /* float -> i64 truncates toward zero */
    const double fv[6] = {1.5, -1.5, 2.7, -2.7, 0.999, -0.999};
    for (int k = 0; k < N_(FLOAT_DTYPES); k++) {
        bilo_dtype dt = FLOAT_DTYPES[k];
        expect(bilo_cast(mk(dt, BILO_SHAPE(6), fv), BILO_I64), BILO_I64, BILO_SHAPE(6),
               (double[]){1, -1, 2, -2, 0, 0}, "cast to i64 truncates toward zero");
    }
    /* i64 -> float rounds to nearest, ties to even */
    int64_t iv[3] = {16777217, (1LL << 53) + 1, -((1LL << 24) + 3)};
    bilo_tensor *ix = mk_index(BILO_SHAPE(3), iv);
    bilo_tensor *f32 = bilo_cast(ix, BILO_F32);
    bilo_tensor *f64 = bilo_cast(ix, BILO_F64);
    const float *pf = f32 ? bilo_data(f32) : NULL;
    const double *pd = f64 ? bilo_data(f64) : NULL;
    tap_ok(pf && pf[0] == 16777216.0f && pf[2] == -16777220.0f,
           "cast i64 -> f32 rounds 2^24+1 to 2^24 and -(2^24+3) to -(2^24+4)");
    tap_ok(pd && pd[1] == 9007199254740992.0 && pd[0] == 16777217.0,
           "cast i64 -> f64 rounds 2^53+1 to 2^53, keeps 2^24+1");
    bilo_tensor *big = bilo_from_data(BILO_I64, BILO_SHAPE(1), (int64_t[]){(1LL << 53) + 1});
    bilo_tensor *same = bilo_cast(big, BILO_I64);
    tap_ok(same && ((int64_t *)bilo_data(same))[0] == (1LL << 53) + 1,
           "cast i64 -> i64 keeps values beyond 2^53 exactly");
    bilo_tensor *d = mk(BILO_F64, BILO_SHAPE(1), (double[]){0.1});
    bilo_tensor *d32 = bilo_cast(d, BILO_F32);
    tap_ok(d32 && ((float *)bilo_data(d32))[0] == 0.1f, "cast f64 -> f32 rounds to nearest");

    expect_error(bilo_cast(mk(BILO_F64, BILO_SHAPE(2), (double[]){1, NAN}), BILO_I64),
                 BILO_ENUMERIC, "bilo_cast", "position 1", "cast NaN to i64");
    expect_error(bilo_cast(mk(BILO_F32, BILO_SHAPE(1), (double[]){1e19}), BILO_I64),
                 BILO_ENUMERIC, "bilo_cast", "position 0", "cast 1e19 to i64");
    expect_error(bilo_cast(d, (bilo_dtype)7), BILO_EDTYPE, "bilo_cast", "7", "cast unknown dtype");
}

/* ---- NULL inputs propagate without a new error ------------------------------------------ */

static void test_null_propagation(void)
{
    bilo_tensor *x = iota(BILO_F64, BILO_SHAPE(2, 2));
    bilo_tensor *idx = mk_index(BILO_SHAPE(2), (int64_t[]){0, 1});
    bilo_tensor *idx2 = mk_index(BILO_SHAPE(2, 2), (int64_t[]){0, 1, 1, 0});
    bilo_clear_error();
    bilo_tensor *results[] = {
        bilo_reshape(NULL, BILO_SHAPE(4)),
        bilo_flatten(NULL),
        bilo_transpose(NULL, 0, 1),
        bilo_permute(NULL, (int[]){1, 0}),
        bilo_slice(NULL, 0, 0, 1, 1),
        bilo_slice_scatter(NULL, x, 0, 0, 2, 1),
        bilo_slice_scatter(x, NULL, 0, 0, 2, 1),
        bilo_concat((bilo_tensor *[]){x, NULL}, 2, 0),
        bilo_stack((bilo_tensor *[]){NULL, x}, 2, 0),
        bilo_index_select(NULL, 0, idx),
        bilo_index_select(x, 0, NULL),
        bilo_index_add(NULL, 0, idx, x),
        bilo_index_add(x, 0, NULL, x),
        bilo_index_add(x, 0, idx, NULL),
        bilo_gather(NULL, 0, idx2),
        bilo_gather(x, 0, NULL),
        bilo_scatter_add(NULL, 0, idx2, x),
        bilo_scatter_add(x, 0, NULL, x),
        bilo_scatter_add(x, 0, idx2, NULL),
        bilo_one_hot(NULL, 3, BILO_F32),
        bilo_expand(NULL, BILO_SHAPE(2, 2)),
        bilo_sum_to(NULL, BILO_SHAPE(2)),
        bilo_clone(NULL),
        bilo_cast(NULL, BILO_F32),
    };
    bool all_null = true;
    for (int i = 0; i < N_(results); i++) all_null = all_null && !results[i];
    tap_ok(all_null, "every shape op returns NULL for a NULL input (%d cases)", N_(results));
    tap_ok(bilo_errcode() == 0, "and records no new error");
    /* a chain reports its first error only */
    bilo_tensor *chain = bilo_flatten(bilo_transpose(bilo_reshape(x, BILO_SHAPE(3, 2)), 0, 1));
    expect_error(chain, BILO_ESHAPE, "bilo_reshape", NULL, "chained ops keep the first error");
}

/* ---- im2col / col2im ----------------------------------------------------------------------- */

typedef struct {
    int k[2], s[2], p[2], d[2];
} conv_params;

#define CONV_P(c) (c).k[0], (c).k[1], (c).s[0], (c).s[1], (c).p[0], (c).p[1], (c).d[0], (c).d[1]

static int64_t conv_out(int64_t in, int axis, const conv_params *c)
{
    return (in + 2 * c->p[axis] - c->d[axis] * (c->k[axis] - 1) - 1) / c->s[axis] + 1;
}

/* im2col of x [N, C, H, W] by the definition, one element at a time. */
static bilo_tensor *naive_im2col(const bilo_tensor *x, const conv_params *c)
{
    const int64_t *xs = bilo_shape(x);
    int64_t oh_n = conv_out(xs[2], 0, c), ow_n = conv_out(xs[3], 1, c);
    bilo_tensor *out = bilo_zeros(BILO_F64, BILO_SHAPE(xs[0], xs[1] * c->k[0] * c->k[1], oh_n * ow_n));
    for (int64_t n = 0; n < xs[0]; n++)
        for (int64_t ch = 0; ch < xs[1]; ch++)
            for (int ki = 0; ki < c->k[0]; ki++)
                for (int kj = 0; kj < c->k[1]; kj++)
                    for (int64_t oh = 0; oh < oh_n; oh++)
                        for (int64_t ow = 0; ow < ow_n; ow++) {
                            int64_t ih = oh * c->s[0] - c->p[0] + ki * c->d[0];
                            int64_t iw = ow * c->s[1] - c->p[1] + kj * c->d[1];
                            if (ih < 0 || ih >= xs[2] || iw < 0 || iw >= xs[3]) continue;
                            int64_t row = (ch * c->k[0] + ki) * c->k[1] + kj;
                            bilo_set(out, (int64_t[]){n, row, oh * ow_n + ow},
                                     bilo_get(x, (int64_t[]){n, ch, ih, iw}));
                        }
    return out;
}

static double dot_f64(const bilo_tensor *a, const bilo_tensor *b)
{
    double s = 0;
    for (int64_t i = 0; i < bilo_numel(a); i++) s += bilo_get_flat(a, i) * bilo_get_flat(b, i);
    return s;
}

static bilo_tensor *randn(int ndim, const int64_t *shape, bilo_rng *rng)
{
    return bilo_randn(BILO_F64, ndim, shape, rng);
}

static void test_im2col_values(void)
{
    /* x = 0..8 as a 3x3 image, 2x2 kernel: each column is one window, rows (ki, kj) */
    static const double want[] = {0, 1, 3, 4, 1, 2, 4, 5, 3, 4, 6, 7, 4, 5, 7, 8};
    for (int i = 0; i < N_(FLOAT_DTYPES); i++) {
        bilo_tensor *x = iota(FLOAT_DTYPES[i], BILO_SHAPE(1, 1, 3, 3));
        expect(bilo_im2col(x, 2, 2, 1, 1, 0, 0, 1, 1), FLOAT_DTYPES[i], BILO_SHAPE(1, 4, 4), want,
               "im2col 3x3 image, 2x2 kernel");
    }
    static const conv_params variants[] = {
        {{2, 2}, {1, 1}, {1, 1}, {1, 1}}, {{2, 2}, {2, 2}, {0, 0}, {1, 1}},
        {{2, 2}, {1, 1}, {0, 0}, {2, 2}}, {{2, 2}, {2, 1}, {1, 0}, {2, 1}},
        {{3, 1}, {1, 2}, {2, 1}, {1, 2}},
    };
    static const char *names[] = {"padding 1", "stride 2", "dilation 2",
                                  "stride 2x1, padding 1x0, dilation 2x1",
                                  "kernel 3x1, stride 1x2, padding 2x1, dilation 1x2"};
    bilo_tensor *x = iota(BILO_F64, BILO_SHAPE(1, 1, 3, 3));
    bilo_tensor *x2 = iota(BILO_F64, BILO_SHAPE(2, 3, 4, 5));
    for (int v = 0; v < N_(variants); v++) {
        bilo_tensor *inputs[] = {x, x2};
        for (int j = 0; j < 2; j++) {
            bilo_tensor *ref = naive_im2col(inputs[j], &variants[v]);
            char name[128];
            snprintf(name, sizeof name, "im2col %s of a %s image", names[v], j ? "2x3x4x5" : "3x3");
            expect(bilo_im2col(inputs[j], CONV_P(variants[v])), BILO_F64, bilo_ndim(ref),
                   bilo_shape(ref), bilo_data(ref), name);
        }
    }
}

/* <im2col(x), y> = <x, col2im(y)> for random x and y. */
static void test_col2im_adjoint(void)
{
    static const conv_params params[] = {
        {{3, 3}, {1, 1}, {1, 1}, {1, 1}}, {{2, 3}, {2, 1}, {0, 1}, {1, 2}},
        {{3, 2}, {3, 2}, {2, 0}, {2, 1}}, {{1, 1}, {1, 1}, {0, 0}, {1, 1}},
        {{4, 4}, {1, 1}, {0, 0}, {1, 1}},
    };
    bilo_rng rng = bilo_rng_make(99, 3);
    const int64_t N = 2, C = 3, H = 5, W = 6;
    for (int v = 0; v < N_(params); v++) {
        bilo_tensor *x = randn(BILO_SHAPE(N, C, H, W), &rng);
        bilo_tensor *cols = bilo_im2col(x, CONV_P(params[v]));
        bilo_tensor *y = cols ? randn(bilo_ndim(cols), bilo_shape(cols), &rng) : NULL;
        bilo_tensor *back = bilo_col2im(y, C, H, W, CONV_P(params[v]));
        char name[96];
        snprintf(name, sizeof name, "col2im is the adjoint of im2col (parameter set %d)", v);
        if (!back) {
            tap_ok(0, "%s: %s", name, bilo_last_error());
            continue;
        }
        tap_close(dot_f64(x, back), dot_f64(cols, y), 1e-12, 1e-12, name);
    }
}

static bool bit_identical(const bilo_tensor *a, const bilo_tensor *b)
{
    return a && b && bilo_numel(a) == bilo_numel(b) &&
           !memcmp(bilo_data((bilo_tensor *)a), bilo_data((bilo_tensor *)b),
                   (size_t)bilo_numel(a) * bilo_dtype_size(bilo_dtype_of(a)));
}

static void test_conv_threads(void)
{
    const conv_params c = {{3, 3}, {1, 1}, {2, 2}, {2, 2}};
    bilo_rng rng = bilo_rng_make(5, 0);
    bilo_tensor *x = bilo_randn(BILO_F32, BILO_SHAPE(2, 16, 32, 32), &rng);
    int saved = bilo_get_num_threads();
    bilo_tensor *cols[2], *img[2];
    for (int t = 0; t < 2; t++) {
        bilo_set_num_threads(t + 1);
        cols[t] = bilo_im2col(x, CONV_P(c));
        img[t] = bilo_col2im(cols[0], 16, 32, 32, CONV_P(c));
    }
    bilo_set_num_threads(saved);
    tap_ok(bit_identical(cols[0], cols[1]), "im2col: 1 and 2 threads give identical bits");
    tap_ok(bit_identical(img[0], img[1]), "col2im: 1 and 2 threads give identical bits");
}

static void test_conv_errors(void)
{
    bilo_tensor *x = iota(BILO_F64, BILO_SHAPE(1, 2, 3, 3));
    bilo_tensor *cols = iota(BILO_F64, BILO_SHAPE(1, 8, 4)); /* 2 channels, 2x2 kernel, 3x3 image */
    bilo_tensor *flat = iota(BILO_F64, BILO_SHAPE(2, 3, 3));
    bilo_tensor *ints = bilo_zeros(BILO_I64, BILO_SHAPE(1, 1, 3, 3));
    bilo_clear_error();
    tap_ok(!bilo_im2col(NULL, 2, 2, 1, 1, 0, 0, 1, 1) &&
               !bilo_col2im(NULL, 2, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1) && bilo_errcode() == 0,
           "im2col and col2im return NULL for a NULL input and record no error");
    expect_error(bilo_im2col(flat, 2, 2, 1, 1, 0, 0, 1, 1), BILO_ESHAPE, "bilo_im2col", "[2,3,3]",
                 "im2col of a 3-D tensor");
    expect_error(bilo_im2col(ints, 2, 2, 1, 1, 0, 0, 1, 1), BILO_EDTYPE, "bilo_im2col", "i64",
                 "im2col of an i64 tensor");
    expect_error(bilo_im2col(x, 0, 2, 1, 1, 0, 0, 1, 1), BILO_EINVAL, "bilo_im2col", "kernel 0x2",
                 "im2col kernel 0");
    expect_error(bilo_im2col(x, 2, 2, 1, -1, 0, 0, 1, 1), BILO_EINVAL, "bilo_im2col",
                 "stride 1x-1", "im2col negative stride");
    expect_error(bilo_im2col(x, 2, 2, 1, 1, 0, 0, 0, 1), BILO_EINVAL, "bilo_im2col",
                 "dilation 0x1", "im2col dilation 0");
    expect_error(bilo_im2col(x, 2, 2, 1, 1, -1, 0, 1, 1), BILO_EINVAL, "bilo_im2col",
                 "padding -1x0", "im2col negative padding");
    expect_error(bilo_im2col(x, 4, 2, 1, 1, 0, 0, 1, 1), BILO_ESHAPE, "bilo_im2col",
                 "output size 0x2", "im2col kernel larger than the image");
    expect_error(bilo_im2col(x, 2, 2, 1, 1, 0, 0, 3, 1), BILO_ESHAPE, "bilo_im2col",
                 "output size 0x2", "im2col dilated kernel larger than the image");
    expect_error(bilo_col2im(cols, 2, 3, 3, 3, 2, 1, 1, 0, 0, 1, 1), BILO_ESHAPE, "bilo_col2im",
                 "[1,8,4] do not match [N, C*kh*kw, OH*OW] = [1,12,2]", "col2im columns of another kernel");
    expect_error(bilo_col2im(flat, 2, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1), BILO_ESHAPE, "bilo_col2im",
                 "[2,3,3]", "col2im of a 3-D tensor that is not columns");
    expect_error(bilo_col2im(cols, 0, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1), BILO_EINVAL, "bilo_col2im",
                 "C=0", "col2im with no channels");
    expect_error(bilo_col2im(cols, 2, 3, 3, 2, 2, 0, 1, 0, 0, 1, 1), BILO_EINVAL, "bilo_col2im",
                 "stride 0x1", "col2im stride 0");
    expect_error(bilo_col2im(cols, 2, 1, 3, 2, 2, 1, 1, 0, 0, 1, 1), BILO_ESHAPE, "bilo_col2im",
                 "output size 0x2", "col2im kernel larger than the image");
}

int main(void)
{
    bilo_scope_begin();
    test_reshape();
    test_permute();
    test_slice();
    test_concat_stack();
    test_index_select_add();
    test_gather_scatter();
    test_one_hot();
    test_expand_sum_to();
    test_sum_to_runs();
    test_clone_cast();
    test_null_propagation();
    test_im2col_values();
    test_col2im_adjoint();
    test_conv_threads();
    test_conv_errors();
    bilo_scope_end();
    return tap_done();
}
