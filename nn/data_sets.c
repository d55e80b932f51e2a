/* Dataset views: permutations and splits, per-feature standardization, label noise for data
   hyper-cleaning, and the shuffling minibatch iterator. Every random choice comes from a
   Philox generator (bilo_rng), so a seed fixes the result at any thread count. */
#include "bilo_nn.h"
#include "tensor_impl.h"

#include <math.h>
#include <string.h>

/* Draw u in [0, 1) maps to 0 .. m-1; the rounding of u·m can reach m, hence the clamp. */
static int64_t uniform_below(double u, int64_t m)
{
    int64_t j = (int64_t)(u * (double)m);
    return j < m ? j : m - 1;
}

/* A 1-D BILO_I64 tensor of indices in [0, bound). */
static bool check_indices(const char *op, const char *name, const bilo_tensor *t, int64_t bound)
{
    if (t->dtype != BILO_I64 || t->ndim != 1)
        return bilo__fail(BILO_EDTYPE, "%s: %s must be a 1-D i64 tensor, got %s with %d dims",
                          op, name, bilo_dtype_name(t->dtype), t->ndim),
               false;
    const int64_t *v = bilo__ptr(t);
    for (int64_t i = 0; i < t->numel; i++)
        if (v[i] < 0 || v[i] >= bound)
            return bilo__fail(BILO_ERANGE, "%s: %s[%lld] = %lld is outside [0, %lld)", op, name,
                              (long long)i, (long long)v[i], (long long)bound),
                   false;
    return true;
}

/* Fisher-Yates driven by one bilo_rand fill: element i swaps with a uniform j <= i. */
static void shuffle(int64_t *v, int64_t n, const double *u)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = uniform_below(u[i], i + 1), t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

BILO_API bilo_tensor *bilo_randperm(int64_t n, bilo_rng *rng)
{
    static const char op[] = "bilo_randperm";
    if (!rng) return bilo__fail(BILO_ENULL, "%s: rng is NULL", op);
    if (n < 0) return bilo__fail(BILO_EINVAL, "%s: n = %lld is negative", op, (long long)n);
    bilo_scope_begin();
    bilo_tensor *u = bilo_rand(BILO_F64, 1, &n, rng);
    bilo_tensor *out = u ? bilo__new(op, BILO_I64, 1, &n) : NULL;
    if (out) {
        int64_t *v = bilo__ptr(out);
        for (int64_t i = 0; i < n; i++) v[i] = i;
        shuffle(v, n, bilo__ptr(u));
    }
    bilo_scope_return(out);
    bilo_scope_end();
    return out;
}

/* Order of the rows: a permutation from rng, or 0 .. n-1 without one. */
static bilo_tensor *row_order(const char *op, int64_t n, bilo_rng *rng)
{
    if (rng) return bilo_randperm(n, rng);
    bilo_tensor *order = bilo__new(op, BILO_I64, 1, &n);
    if (order)
        for (int64_t i = 0; i < n; i++) ((int64_t *)bilo__ptr(order))[i] = i;
    return order;
}

/* New I64 tensor holding order[start .. start + count) into *part (skipped when part is NULL).
   false on failure. */
static bool take_part(const char *op, const bilo_tensor *order, int64_t start, int64_t count,
                      bilo_tensor **part)
{
    if (!part) return true;
    *part = bilo__new(op, BILO_I64, 1, &count);
    if (*part)
        memcpy(bilo__ptr(*part), (const int64_t *)bilo__ptr(order) + start,
               (size_t)count * sizeof(int64_t));
    return *part != NULL;
}

BILO_API int bilo_split(int64_t n, const bilo_split_opts *opts, bilo_tensor **train,
                        bilo_tensor **val, bilo_tensor **test)
{
    static const char op[] = "bilo_split";
    bilo_tensor **parts[3] = {train, val, test};
    for (int p = 0; p < 3; p++)
        if (parts[p]) *parts[p] = NULL;
    bilo_split_opts o = opts ? *opts : (bilo_split_opts){0};
    if (n < 0 || o.n_train < 0 || o.n_val < 0 || o.n_train > n || o.n_val > n - o.n_train)
        return bilo__fail_code(BILO_EINVAL,
                               "%s: n_train %lld and n_val %lld do not fit in n = %lld", op,
                               (long long)o.n_train, (long long)o.n_val, (long long)n);
    int64_t starts[4] = {0, o.n_train, o.n_train + o.n_val, n};
    bilo_scope_begin();
    bilo_tensor *order = row_order(op, n, o.rng);
    bool ok = order != NULL;
    for (int p = 0; ok && p < 3; p++)
        ok = take_part(op, order, starts[p], starts[p + 1] - starts[p], parts[p]);
    for (int p = 0; p < 3; p++)
        if (parts[p]) *parts[p] = ok ? bilo_scope_return(*parts[p]) : NULL;
    bilo_scope_end();
    return ok ? 0 : bilo_errcode();
}

/* ---- standardization ---- */

/* Mean and population std per feature over the picked rows of x ([n, f] in memory), in f64
   with two passes. */
#define FEATURE_STATS(T)                                                               \
    do {                                                                               \
        const T *data = bilo__ptr(x);                                                  \
        for (int64_t r = 0; r < count; r++) {                                          \
            const T *row = data + (pick ? pick[r] : r) * f;                            \
            for (int64_t j = 0; j < f; j++) mean[j] += row[j];                         \
        }                                                                              \
        for (int64_t j = 0; j < f; j++) mean[j] /= (double)count;                      \
        for (int64_t r = 0; r < count; r++) {                                          \
            const T *row = data + (pick ? pick[r] : r) * f;                            \
            for (int64_t j = 0; j < f; j++) {                                          \
                double dev = row[j] - mean[j];                                         \
                var[j] += dev * dev;                                                   \
            }                                                                          \
        }                                                                              \
    } while (0)

#define STORE_STATS(T)                                                                 \
    for (int64_t j = 0; j < f; j++) {                                                  \
        double sd = sqrt(var[j] / (double)count);                                      \
        ((T *)bilo__ptr(nz->mean))[j] = (T)mean[j];                                    \
        ((T *)bilo__ptr(nz->std))[j] = (T)(sd < 1e-12 * (1.0 + fabs(mean[j])) ? 1.0 : sd); \
    }

BILO_API int bilo_normalizer_fit(bilo_normalizer *nz, bilo_tensor *x, bilo_tensor *rows)
{
    static const char op[] = "bilo_normalizer_fit";
    if (!nz) return bilo__fail_code(BILO_ENULL, "%s: normalizer is NULL", op);
    *nz = (bilo_normalizer){0};
    if (!x) return BILO_ENULL;
    if (!bilo__check_float(op, x)) return bilo_errcode();
    if (x->ndim < 1) return bilo__fail_code(BILO_ESHAPE, "%s: x is 0-dimensional", op);
    int64_t n = x->shape[0], f = n ? x->numel / n : 0;
    if (rows && !check_indices(op, "rows", rows, n)) return bilo_errcode();
    int64_t count = rows ? rows->numel : n;
    if (count == 0) return bilo__fail_code(BILO_EINVAL, "%s: no rows to fit on", op);
    double *mean = bilo__alloc(2 * (size_t)f * sizeof *mean), *var = mean + f;
    nz->mean = bilo_keep(bilo__new(op, x->dtype, x->ndim - 1, x->shape + 1));
    nz->std = bilo_keep(bilo__new(op, x->dtype, x->ndim - 1, x->shape + 1));
    if (!mean || !nz->mean || !nz->std) {
        if (mean) bilo__free(mean, 2 * (size_t)f * sizeof *mean);
        bilo_normalizer_free(nz);
        return bilo__fail_code(BILO_ENOMEM, "%s: out of memory", op);
    }
    memset(mean, 0, 2 * (size_t)f * sizeof *mean);
    const int64_t *pick = rows ? bilo__ptr(rows) : NULL;
    if (x->dtype == BILO_F32) {
        FEATURE_STATS(float);
        STORE_STATS(float)
    } else {
        FEATURE_STATS(double);
        STORE_STATS(double)
    }
    bilo__free(mean, 2 * (size_t)f * sizeof *mean);
    return 0;
}

BILO_API bilo_tensor *bilo_normalizer_apply(const bilo_normalizer *nz, bilo_tensor *x)
{
    static const char op[] = "bilo_normalizer_apply";
    if (!x) return NULL;
    if (!nz || !nz->mean || !nz->std)
        return bilo__fail(BILO_ENULL, "%s: normalizer is NULL or not fitted", op);
    const bilo_tensor *m = nz->mean;
    if (x->ndim != m->ndim + 1 ||
        memcmp(x->shape + 1, m->shape, (size_t)m->ndim * sizeof *m->shape) != 0) {
        char sx[BILO_SHAPE_BUF], sm[BILO_SHAPE_BUF];
        return bilo__fail(BILO_ESHAPE, "%s: x %s does not have rows of the fitted shape %s", op,
                          bilo__shape_str(sx, x->ndim, x->shape),
                          bilo__shape_str(sm, m->ndim, m->shape));
    }
    bilo_scope_begin();
    bilo_tensor *out = bilo_div(bilo_sub(x, nz->mean), nz->std);
    bilo_scope_return(out);
    bilo_scope_end();
    return out;
}

BILO_API void bilo_normalizer_free(bilo_normalizer *nz)
{
    if (!nz) return;
    bilo_release(nz->mean);
    bilo_release(nz->std);
    *nz = (bilo_normalizer){0};
}

/* ---- label noise ---- */

static bool check_corrupt_opts(const char *op, const bilo_tensor *labels,
                               const bilo_corrupt_opts *o)
{
    if (!(o->rate >= 0.0 && o->rate <= 1.0))
        return bilo__fail(BILO_EINVAL, "%s: rate = %g is outside [0, 1]", op, o->rate), false;
    if (o->num_classes < 2)
        return bilo__fail(BILO_EINVAL, "%s: num_classes = %lld, need at least 2", op,
                          (long long)o->num_classes),
               false;
    if (labels->dtype != BILO_I64)
        return bilo__fail(BILO_EDTYPE, "%s: labels must be i64, got %s", op,
                          bilo_dtype_name(labels->dtype)),
               false;
    const int64_t *y = bilo__ptr(labels);
    for (int64_t i = 0; i < labels->numel; i++)
        if (y[i] < 0 || y[i] >= o->num_classes)
            return bilo__fail(BILO_ERANGE, "%s: label[%lld] = %lld is outside [0, %lld)", op,
                              (long long)i, (long long)y[i], (long long)o->num_classes),
                   false;
    return true;
}

BILO_API bilo_tensor *bilo_corrupt_labels(bilo_tensor *labels, const bilo_corrupt_opts *opts,
                                          bilo_rng *rng, bilo_tensor **changed)
{
    static const char op[] = "bilo_corrupt_labels";
    if (changed) *changed = NULL;
    if (!labels) return NULL;
    if (!opts || !rng) return bilo__fail(BILO_ENULL, "%s: opts or rng is NULL", op);
    if (!check_corrupt_opts(op, labels, opts)) return NULL;
    int64_t n = labels->numel, k = opts->num_classes;
    bilo_scope_begin();
    bilo_tensor *u = bilo_rand(BILO_F64, BILO_SHAPE(n, 2), rng);
    bilo_tensor *out = u ? bilo__new(op, BILO_I64, labels->ndim, labels->shape) : NULL;
    bilo_tensor *mask = out && changed ? bilo__new(op, BILO_I64, labels->ndim, labels->shape)
                                       : NULL;
    bool ok = out && (mask || !changed);
    if (ok) {
        const int64_t *y = bilo__ptr(labels);
        const double *draw = bilo__ptr(u);
        int64_t *noisy = bilo__ptr(out);
        for (int64_t i = 0; i < n; i++) {
            noisy[i] = y[i];
            if (draw[2 * i] >= opts->rate) continue;
            if (!opts->other_class) {
                noisy[i] = uniform_below(draw[2 * i + 1], k);
            } else {
                int64_t c = uniform_below(draw[2 * i + 1], k - 1);
                noisy[i] = c < y[i] ? c : c + 1;
            }
        }
        for (int64_t i = 0; mask && i < n; i++)
            ((int64_t *)bilo__ptr(mask))[i] = noisy[i] != y[i];
    }
    if (ok) {
        bilo_scope_return(out);
        if (changed) *changed = bilo_scope_return(mask);
    }
    bilo_scope_end();
    return ok ? out : NULL;
}

/* ---- minibatches ---- */

struct bilo_batcher {
    bilo_tensor *x, *y, *rows; /* references held by the batcher */
    bilo_batcher_opts o;
    bilo_rng rng;
    bilo_rng epoch_rng; /* rng before the current epoch's shuffle, to redraw it on set_state */
    int64_t n;      /* rows visited per epoch */
    int64_t *order; /* this epoch's rows, n entries */
    int64_t pos, epoch, step;
    bool in_epoch;
};

static size_t order_bytes(int64_t n) { return (size_t)(n > 0 ? n : 1) * sizeof(int64_t); }

BILO_API void bilo_batcher_free(bilo_batcher *b)
{
    if (!b) return;
    bilo_release(b->x);
    bilo_release(b->y);
    bilo_release(b->rows);
    if (b->order) bilo__free(b->order, order_bytes(b->n));
    bilo__free(b, sizeof *b);
}

/* Number of rows of the data (x and y agree), or -1 with an error. */
static int64_t data_rows(const char *op, const bilo_tensor *x, const bilo_tensor *y)
{
    const bilo_tensor *t = x ? x : y;
    if (!t) return bilo__fail(BILO_ENULL, "%s: both x and y are NULL", op), -1;
    if ((x && x->ndim < 1) || (y && y->ndim < 1))
        return bilo__fail(BILO_ESHAPE, "%s: x and y need a first axis to batch over", op), -1;
    if (x && y && x->shape[0] != y->shape[0])
        return bilo__fail(BILO_ESHAPE, "%s: x has %lld rows but y has %lld", op,
                          (long long)x->shape[0], (long long)y->shape[0]),
               -1;
    return t->shape[0];
}

BILO_API bilo_batcher *bilo_batcher_new(bilo_tensor *x, bilo_tensor *y,
                                        const bilo_batcher_opts *opts)
{
    static const char op[] = "bilo_batcher_new";
    if (!opts) return bilo__fail(BILO_ENULL, "%s: opts is NULL (batch_size is required)", op);
    if (opts->batch_size < 1)
        return bilo__fail(BILO_EINVAL, "%s: batch_size = %lld, need at least 1", op,
                          (long long)opts->batch_size);
    int64_t total = data_rows(op, x, y);
    if (total < 0 || (opts->rows && !check_indices(op, "rows", opts->rows, total))) return NULL;
    bilo_batcher *b = bilo__alloc(sizeof *b);
    int64_t n = opts->rows ? opts->rows->numel : total;
    int64_t *order = bilo__alloc(order_bytes(n));
    if (!b || !order) {
        if (b) bilo__free(b, sizeof *b);
        if (order) bilo__free(order, order_bytes(n));
        return bilo__fail(BILO_ENOMEM, "%s: out of memory", op);
    }
    *b = (bilo_batcher){.x = bilo_retain(x), .y = bilo_retain(y), .rows = bilo_retain(opts->rows),
                        .o = *opts, .rng = bilo_rng_make(opts->seed, opts->stream), .n = n,
                        .order = order};
    b->o.rows = NULL; /* held in b->rows */
    return b;
}

BILO_API int64_t bilo_batcher_num_batches(const bilo_batcher *b)
{
    if (!b) return -1;
    int64_t bs = b->o.batch_size;
    return b->o.drop_last ? b->n / bs : (b->n + bs - 1) / bs;
}

/* Fill b->order with this epoch's rows: the base order, shuffled unless in_order. */
static int start_epoch(bilo_batcher *b)
{
    const int64_t *base = b->rows ? bilo__ptr(b->rows) : NULL;
    b->epoch_rng = b->rng;
    bilo_tensor *perm = b->o.in_order ? NULL : bilo_keep(bilo_randperm(b->n, &b->rng));
    if (!b->o.in_order && !perm) return bilo_errcode();
    const int64_t *p = perm ? bilo__ptr(perm) : NULL;
    for (int64_t i = 0; i < b->n; i++) {
        int64_t at = p ? p[i] : i;
        b->order[i] = base ? base[at] : at;
    }
    bilo_release(perm);
    b->in_epoch = true;
    b->pos = b->step = 0;
    return 0;
}

BILO_API int bilo_batcher_next(bilo_batcher *b, bilo_batch *batch)
{
    static const char op[] = "bilo_batcher_next";
    if (!b || !batch) return bilo__fail_code(BILO_ENULL, "%s: NULL argument", op);
    *batch = (bilo_batch){0};
    if (!b->in_epoch) {
        int rc = start_epoch(b);
        if (rc < 0) return rc;
    }
    int64_t left = b->n - b->pos, size = left < b->o.batch_size ? left : b->o.batch_size;
    if (left == 0 || (b->o.drop_last && size < b->o.batch_size)) {
        b->in_epoch = false;
        b->epoch++;
        return 0;
    }
    bilo_scope_begin();
    bilo_tensor *index = bilo__new(op, BILO_I64, 1, &size);
    if (index) memcpy(bilo__ptr(index), b->order + b->pos, (size_t)size * sizeof *b->order);
    bilo_tensor *xb = b->x && index ? bilo_index_select(b->x, 0, index) : NULL;
    bilo_tensor *yb = b->y && index ? bilo_index_select(b->y, 0, index) : NULL;
    bool ok = index && (xb || !b->x) && (yb || !b->y);
    if (ok)
        *batch = (bilo_batch){.x = bilo_scope_return(xb), .y = bilo_scope_return(yb),
                              .index = bilo_scope_return(index), .epoch = b->epoch,
                              .step = b->step};
    bilo_scope_end();
    if (!ok) return bilo_errcode();
    b->pos += size;
    b->step++;
    return 1;
}

BILO_API int bilo_batcher_get_state(const bilo_batcher *b, bilo_batcher_state *state)
{
    if (!b || !state) return bilo__fail_code(BILO_ENULL, "bilo_batcher_get_state: NULL argument");
    *state = (bilo_batcher_state){.epoch = b->epoch, .step = b->in_epoch ? b->step : 0,
                                  .in_epoch = b->in_epoch,
                                  .rng = b->in_epoch ? b->epoch_rng : b->rng};
    return 0;
}

BILO_API int bilo_batcher_set_state(bilo_batcher *b, const bilo_batcher_state *state)
{
    static const char op[] = "bilo_batcher_set_state";
    if (!b || !state) return bilo__fail_code(BILO_ENULL, "%s: NULL argument", op);
    const bilo_batcher_state *s = state;
    int64_t batches = bilo_batcher_num_batches(b);
    if (s->rng.seed != b->o.seed || s->rng.stream != b->o.stream)
        return bilo__fail_code(BILO_EINVAL, "%s: the state's rng (seed %llu, stream %llu) is "
                               "not this batcher's (seed %llu, stream %llu)", op,
                               (unsigned long long)s->rng.seed, (unsigned long long)s->rng.stream,
                               (unsigned long long)b->o.seed, (unsigned long long)b->o.stream);
    if (s->epoch < 0 || s->step < 0 || s->step > batches || (!s->in_epoch && s->step != 0))
        return bilo__fail_code(BILO_EINVAL, "%s: epoch %lld, step %lld (in_epoch %d) is not a "
                               "position of a batcher with %lld batches per epoch", op,
                               (long long)s->epoch, (long long)s->step, (int)s->in_epoch,
                               (long long)batches);
    bilo_batcher saved = *b;
    b->rng = s->rng;
    b->in_epoch = false;
    if (s->in_epoch) {
        int rc = start_epoch(b); /* redraws the epoch's order from its rng */
        if (rc < 0) {
            *b = saved;
            return rc;
        }
        /* every batch before the last is full, so the position follows from the step (a
           finished epoch's position is n, which ends it on the next call either way) */
        b->step = s->step;
        b->pos = s->step == batches ? b->n : s->step * b->o.batch_size;
    }
    b->epoch = s->epoch;
    return 0;
}
