/* The dataset-backed tasks (hyperclean, l2reg, meta-fmnist). Splits, label noise and episodes
   are checked against the IDX files read here; F1 against values counted here from the clean
   mask; losses and accuracies at the zero classifier against their closed forms (ln C, the
   test set's class shares); the problems' gradients against central differences in f64. The
   LIBSVM cases run on small files written here, so they run without the dataset package; the
   Fashion-MNIST cases skip (TAP SKIP) when the package is not installed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bilo.h"
#include "bilo_tasks.h"
#include "checks.h"
#include "tap.h"
#include "tasks_data.h"

#define TRAIN_LABELS BILO_FASHION_MNIST_DIR "/train-labels-idx1-ubyte.gz"

static bool have_fmnist;

static void skip(const char *what)
{
    printf("ok %d - %s # SKIP Fashion-MNIST absent (package dataset-fashion-mnist)\n",
           ++tap_count_, what);
}

static bilo_task *make(const char *name, const char *options, uint64_t seed, bilo_dtype dtype)
{
    bilo_task *t = bilo_task_new(name, &(bilo_task_opts){.seed = seed, .options = options,
                                                         .dtype = dtype});
    if (!t) tap_diag("bilo_task_new(%s, %s): %s", name, options, bilo_last_error());
    return t;
}

static int64_t *i64(bilo_tensor *t) { return bilo_data(t); }

static double metric(bilo_task *t, int k)
{
    double v[BILO__TASK_MAX_METRICS];
    return bilo_task_metrics(t, v) == 0 ? v[k] : NAN;
}

/* Every value of the I64 tensors parts[0..n) lies in [0, bound) and none appears twice. */
static bool distinct_in_range(bilo_tensor *const *parts, int n, int64_t bound)
{
    char *seen = calloc((size_t)bound, 1);
    bool ok = true;
    for (int p = 0; p < n; p++)
        for (int64_t i = 0; ok && i < bilo_numel(parts[p]); i++) {
            int64_t r = i64(parts[p])[i];
            ok = r >= 0 && r < bound && !seen[r];
            if (ok) seen[r] = 1;
        }
    free(seen);
    return ok;
}

static bool same_i64(bilo_tensor *a, bilo_tensor *b)
{
    return bilo_numel(a) == bilo_numel(b) &&
           !memcmp(bilo_data(a), bilo_data(b), (size_t)bilo_numel(a) * sizeof(int64_t));
}

/* Worst |autograd − central difference| of the problem's lower (or upper) loss over up to
   `count` evenly spaced coordinates of x[which] (in_x) or y[which], and the largest |grad|. */
static void fd_compare(const bilo_problem *p, bool upper, bool in_x, int which, int64_t count,
                       double *worst, double *scale)
{
    bilo_loss_fn fn = upper ? p->upper : p->lower;
    bilo_tensor *target = in_x ? p->x[which] : p->y[which], *xa[8], *ya[8], *grad = NULL;
    *worst = INFINITY;
    *scale = 0;
    bilo_scope_begin();
    for (int i = 0; i < p->n_x; i++) bilo_set_requires_grad(xa[i] = bilo_detach(p->x[i]), true);
    for (int i = 0; i < p->n_y; i++) bilo_set_requires_grad(ya[i] = bilo_detach(p->y[i]), true);
    bilo_tensor *loss = fn(xa, ya, NULL, p->user), *wrt = in_x ? xa[which] : ya[which];
    if (loss && bilo_grad(&loss, 1, NULL, &wrt, 1, &grad, BILO_ALLOW_UNUSED) == 0) {
        int64_t n = bilo_numel(target), stride = n > count ? n / count : 1;
        const double h = 1e-6;
        *worst = 0;
        for (int64_t k = 0; k < n; k += stride) {
            double v = bilo_get_flat(target, k), g = grad ? bilo_get_flat(grad, k) : 0;
            bilo_set_flat(target, k, v + h);
            double plus = bilo_item(fn(p->x, p->y, NULL, p->user));
            bilo_set_flat(target, k, v - h);
            double minus = bilo_item(fn(p->x, p->y, NULL, p->user));
            bilo_set_flat(target, k, v);
            *worst = fmax(*worst, fabs((plus - minus) / (2 * h) - g));
            *scale = fmax(*scale, fabs(g));
        }
    }
    bilo_scope_end();
}

static void check_fd(const bilo_problem *p, bool upper, bool in_x, int which, int64_t count,
                     const char *name)
{
    double worst, scale;
    fd_compare(p, upper, in_x, which, count, &worst, &scale);
    tap_ok(worst <= 1e-9 + 1e-6 * scale && scale > 0,
           "%s: autograd matches central differences (max diff %.2g, max |grad| %.2g)", name,
           worst, scale);
}

/* Small random values into an f64 tensor (a point away from the zero start). */
static void fill_random(bilo_tensor *t, uint64_t stream, double scale)
{
    bilo_rng rng = bilo_rng_make(99, stream);
    for (int64_t i = 0; i < bilo_numel(t); i++)
        bilo_set_flat(t, i, scale * bilo_rng_normal(&rng));
}

/* ---- hyperclean ----------------------------------------------------------------------- */

static void test_hyperclean_splits(void)
{
    if (!have_fmnist) {
        skip("hyperclean: default splits cover the training file with its label histogram");
        return;
    }
    bilo_task *t = make("hyperclean", NULL, 3, BILO_F32);
    bilo__hyperclean *d = t ? t->data : NULL;
    bilo_tensor *file = bilo_read_idx_labels(TRAIN_LABELS);
    bool ok = d && file && bilo_numel(d->rows_train) == 50000 &&
              bilo_numel(d->rows_val) == 5000 && bilo_numel(d->rows_eval) == 5000 &&
              bilo_numel(d->test.y) == 10000;
    tap_ok(ok, "hyperclean: default splits are 50000 / 5000 / 5000 rows, test 10000");
    if (!ok) goto done;
    bilo_tensor *parts[] = {d->rows_train, d->rows_val, d->rows_eval};
    tap_ok(distinct_in_range(parts, 3, 60000), "hyperclean: splits are disjoint rows of the file");
    int64_t hist_file[10] = {0}, hist_splits[10] = {0}, mismatched = 0;
    for (int64_t i = 0; i < 60000; i++) hist_file[i64(file)[i]]++;
    bilo__labelled *sets[] = {&d->val, &d->eval};
    for (int64_t i = 0; i < 50000; i++) {
        hist_splits[i64(d->labels_true)[i]]++;
        mismatched += i64(d->labels_true)[i] != i64(file)[i64(d->rows_train)[i]];
    }
    for (int s = 0; s < 2; s++)
        for (int64_t i = 0; i < bilo_numel(sets[s]->y); i++) {
            hist_splits[i64(sets[s]->y)[i]]++;
            mismatched += i64(sets[s]->y)[i] != i64(file)[i64(parts[s + 1])[i]];
        }
    tap_ok(!memcmp(hist_file, hist_splits, sizeof hist_file) && mismatched == 0,
           "hyperclean: clean labels of the splits are the file's (histograms agree, %lld "
           "rows differ)", (long long)mismatched);
    int64_t redrawn = 0;
    for (int64_t i = 0; i < 50000; i++) redrawn += i64(d->redrawn)[i];
    tap_ok(redrawn == 25000, "hyperclean: corruption 0.5 redraws 25000 of 50000 labels (%lld)",
           (long long)redrawn);
done:
    bilo_release(file);
    bilo_task_free(t);
}

/* Counts of the clean mask; checks that it marks exactly the labels equal to the true ones. */
static void check_noise(const bilo__hyperclean *d, double rate)
{
    int64_t n = bilo_numel(d->labels_true), redrawn = 0, clean = 0, wrong = 0, kept = 0;
    for (int64_t i = 0; i < n; i++) {
        bool same = i64(d->train.y)[i] == i64(d->labels_true)[i];
        redrawn += i64(d->redrawn)[i];
        clean += i64(d->clean)[i];
        wrong += i64(d->clean)[i] != same || (!i64(d->redrawn)[i] && !same) ||
                 i64(d->train.y)[i] < 0 || i64(d->train.y)[i] > 9;
        kept += i64(d->redrawn)[i] && same;
    }
    int64_t want = llround(rate * (double)n);
    tap_ok(redrawn == want && wrong == 0,
           "hyperclean: corruption %g redraws round(rate n) = %lld labels (%lld), the clean "
           "mask marks the true labels (%lld disagree)", rate, (long long)want,
           (long long)redrawn, (long long)wrong);
    /* A redrawn label keeps its class with probability 1/10: binomial(want, 0.1), 5 sigma. */
    double mean = 0.1 * (double)want, sd = sqrt(0.09 * (double)want);
    tap_ok(fabs((double)kept - mean) <= 5 * sd,
           "hyperclean: %lld of %lld redrawn labels kept their class (expected %.0f +- %.0f)",
           (long long)kept, (long long)want, mean, 5 * sd);
}

static void set_x(bilo_task *t, const bilo__hyperclean *d, double clean_value,
                  double noisy_value)
{
    bilo_tensor *x = bilo_task_problem(t)->x[0];
    for (int64_t i = 0; i < bilo_numel(x); i++)
        bilo_set_flat(x, i, i64(d->clean)[i] ? clean_value : noisy_value);
}

static void test_hyperclean_small(void)
{
    if (!have_fmnist) {
        skip("hyperclean: small instance (noise, F1, closed-form metrics, gradients)");
        return;
    }
    bilo_task *t = make("hyperclean", "n_train=1000,n_val=300,n_eval=200,corruption=0.3", 11,
                        BILO_F64);
    if (!t) {
        tap_ok(false, "hyperclean: small instance builds");
        return;
    }
    bilo__hyperclean *d = t->data;
    const bilo_problem *p = bilo_task_problem(t);
    tap_ok(p->n_x == 1 && bilo_numel(p->x[0]) == 1000 && p->n_y == 2 &&
           bilo_dim(p->y[0], 0) == 784 && bilo_dim(p->y[0], 1) == 10 &&
           bilo_numel(p->y[1]) == 10 && bilo_dtype_of(p->y[0]) == BILO_F64 && !p->lower_data,
           "hyperclean: x one weight per sample, y = W [784, 10], b [10] in f64, full batch");
    check_noise(d, 0.3);
    /* The zero classifier: every CE is ln 10, and argmax picks class 0, a tenth of the test
       set. */
    tap_close(metric(t, 0), log(10.0), 1e-12, 0, "hyperclean: val_loss at y = 0 is ln 10");
    tap_close(metric(t, 1), 0.1, 1e-12, 0, "hyperclean: test_acc at y = 0 is 0.1");
    tap_close(metric(t, 2), 0.0, 0, 0, "hyperclean: F1 of the start w = 0.5 (none > 0.5) is 0");
    set_x(t, d, 20, -20);
    tap_close(metric(t, 2), 1.0, 0, 0, "hyperclean: F1 of the oracle weights is 1");
    int64_t clean = 0, n = bilo_numel(d->clean);
    for (int64_t i = 0; i < n; i++) clean += i64(d->clean)[i];
    set_x(t, d, 1, 1);
    tap_close(metric(t, 2), 2.0 * (double)clean / (double)(clean + n), 1e-15, 0,
              "hyperclean: F1 of all weights > 0.5 is 2c/(c + n)");
    fill_random(p->y[0], 1, 0.05);
    fill_random(p->y[1], 2, 0.5);
    fill_random(p->x[0], 3, 1.0);
    check_fd(p, false, true, 0, 6, "hyperclean sigmoid: dg/dx");
    check_fd(p, false, false, 0, 6, "hyperclean sigmoid: dg/dW");
    check_fd(p, false, false, 1, 10, "hyperclean sigmoid: dg/db");
    check_fd(p, true, false, 0, 6, "hyperclean sigmoid: df/dW");
    bilo_task_reset(t);
    tap_close(metric(t, 0), log(10.0), 1e-12, 0, "hyperclean: reset restores y = 0");
    bilo_task_free(t);

    /* Same seed and sizes: the same noise whatever the weighting; clip starts at 0.5. */
    t = make("hyperclean", "n_train=1000,n_val=300,n_eval=200,corruption=0.3,weights=clip,"
             "batch=64", 11, BILO_F64);
    bilo__hyperclean *c = t ? t->data : NULL;
    tap_ok(c && bilo_get_flat(bilo_task_problem(t)->x[0], 7) == 0.5 &&
           bilo_task_problem(t)->lower_data &&
           bilo_batcher_num_batches(bilo_task_problem(t)->lower_data) == 16,
           "hyperclean clip: x starts at 0.5; batch=64 gives 16 lower batches per epoch");
    if (c) {
        p = bilo_task_problem(t);
        fill_random(p->y[0], 1, 0.05);
        fill_random(p->x[0], 4, 0.1);
        bilo_tensor *x = p->x[0];
        for (int64_t i = 0; i < bilo_numel(x); i++) /* inside (0, 1), where clip is smooth */
            bilo_set_flat(x, i, 0.5 + 0.3 * tanh(bilo_get_flat(x, i)));
        check_fd(p, false, true, 0, 6, "hyperclean clip: dg/dx");
    }
    bilo_task_free(t);
}

static void test_hyperclean_seeds_and_errors(void)
{
    if (!have_fmnist) {
        skip("hyperclean: reproducible per seed, bad options rejected");
        return;
    }
    const char *o = "n_train=500,n_val=100,n_eval=100";
    bilo_task *a = make("hyperclean", o, 5, BILO_F32), *b = make("hyperclean", o, 5, BILO_F32),
              *c = make("hyperclean", o, 6, BILO_F32);
    bilo__hyperclean *da = a ? a->data : NULL, *db = b ? b->data : NULL,
                     *dc = c ? c->data : NULL;
    tap_ok(da && db && dc && same_i64(da->rows_train, db->rows_train) &&
           same_i64(da->train.y, db->train.y) && !same_i64(da->rows_train, dc->rows_train),
           "hyperclean: the same seed gives the same split and noise, another seed another");
    bilo_task_free(a);
    bilo_task_free(b);
    bilo_task_free(c);
    check_error(!make("hyperclean", "n_train=59000,n_val=1000,n_eval=1000", 1, BILO_F32),
                BILO_EINVAL, "n_train = 59000", "hyperclean: splits larger than the file");
    check_error(!make("hyperclean", "corruption=1.5", 1, BILO_F32), BILO_EINVAL,
                "corruption = 1.5", "hyperclean: corruption above 1");
    check_error(!make("hyperclean", "data_dir=/nonexistent/fm", 1, BILO_F32), BILO_EIO,
                "/nonexistent/fm", "hyperclean: a missing data_dir names the path");
}

/* The same seed gives bit-identical data and metrics at 1 and 2 threads. */
static void test_hyperclean_threads(void)
{
    if (!have_fmnist) {
        skip("hyperclean: identical at 1 and 2 threads");
        return;
    }
    int saved = bilo_get_num_threads();
    bilo_task *t[2];
    double v[2][4];
    for (int k = 0; k < 2; k++) {
        bilo_set_num_threads(k + 1);
        t[k] = make("hyperclean", "n_train=3000,n_val=500,n_eval=100", 8, BILO_F32);
        if (t[k]) fill_random(bilo_task_problem(t[k])->y[0], 9, 0.05);
        if (!t[k] || bilo_task_metrics(t[k], v[k]) < 0) v[k][0] = NAN;
    }
    bilo_set_num_threads(saved);
    bilo__hyperclean *a = t[0] ? t[0]->data : NULL, *b = t[1] ? t[1]->data : NULL;
    bool same = a && b && !memcmp(v[0], v[1], sizeof v[0]) && same_i64(a->train.y, b->train.y) &&
                !memcmp(bilo_data(a->train.X), bilo_data(b->train.X),
                        (size_t)bilo_numel(a->train.X) * sizeof(float));
    tap_ok(same, "hyperclean: data and metrics are bit-identical at 1 and 2 threads (val_loss "
           "%.6f)", v[0][0]);
    bilo_task_free(t[0]);
    bilo_task_free(t[1]);
}

/* ---- l2reg ---------------------------------------------------------------------------- */

static char tmp_dir[64];

/* 40 samples, 3 features; sample i has feature 1 = i + 1 (so rows identify samples) and label
   -1, 2 or 7 (classes 0, 1, 2). */
static const double LIBSVM_LABELS[3] = {-1, 2, 7};

static const char *write_libsvm(void)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/small.svm", tmp_dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; f && i < 40; i++) {
        fprintf(f, "%g 1:%d", LIBSVM_LABELS[(i * 7) % 3], i + 1);
        if (i % 2) fprintf(f, " 2:%g", 0.1 * (i % 5));
        fprintf(f, " 3:%g\n", i % 3 ? -0.5 : 0.25);
    }
    if (f) fclose(f);
    return path;
}

/* Each split's rows are file samples with their class; together every sample once. */
static void check_libsvm_parts(const bilo__l2reg *d)
{
    const bilo__labelled *parts[] = {&d->train, &d->val, &d->test};
    int seen[40] = {0};
    bool ok = true;
    for (int p = 0; p < 3; p++) {
        bilo_scope_begin();
        bilo_tensor *dense = bilo_csr_to_dense(parts[p]->S);
        for (int64_t r = 0; dense && r < bilo_dim(dense, 0); r++) {
            int i = (int)bilo_get(dense, (int64_t[]){r, 0}) - 1;
            ok = ok && i >= 0 && i < 40 && !seen[i]++ &&
                 LIBSVM_LABELS[i64(parts[p]->y)[r]] == LIBSVM_LABELS[(i * 7) % 3];
        }
        ok = ok && dense;
        bilo_scope_end();
    }
    for (int i = 0; i < 40; i++) ok = ok && seen[i] == 1;
    tap_ok(ok, "l2reg libsvm: split rows are the file's samples, each once, with its class "
           "(labels -1, 2, 7 -> 0, 1, 2)");
}

static void test_l2reg_libsvm(void)
{
    const char *path = write_libsvm();
    char opts[256];
    snprintf(opts, sizeof opts, "data=%s,val_frac=0.25,test_frac=0.25,reg0=0.5", path);
    bilo_task *t = make("l2reg", opts, 2, BILO_F64);
    bilo__l2reg *d = t ? t->data : NULL;
    tap_ok(d && bilo_csr_rows(d->train.S) == 20 && bilo_csr_rows(d->val.S) == 10 &&
           bilo_csr_rows(d->test.S) == 10 && d->n_features == 3 && d->n_classes == 3,
           "l2reg libsvm: 20 / 10 / 10 rows, 3 features, 3 classes");
    if (!d) return;
    check_libsvm_parts(d);
    const bilo_problem *p = bilo_task_problem(t);
    tap_close(bilo_get_flat(p->x[0], 2), log(0.5), 1e-15, 0, "l2reg: x starts at log(reg0)");
    tap_close(metric(t, 0), log(3.0), 1e-12, 0, "l2reg: val_loss at y = 0 is ln 3");
    fill_random(p->y[0], 5, 0.7);
    fill_random(p->y[1], 6, 0.3);
    fill_random(p->x[0], 7, 0.5);
    check_fd(p, false, true, 0, 3, "l2reg: dg/dx");
    check_fd(p, false, false, 0, 9, "l2reg: dg/dW");
    check_fd(p, false, false, 1, 3, "l2reg: dg/db");
    check_fd(p, true, false, 0, 9, "l2reg: df/dW");
    bilo_task_free(t);

    snprintf(opts, sizeof opts, "data=%s,val_frac=0.5,test_frac=0.5", path);
    check_error(!make("l2reg", opts, 2, BILO_F32), BILO_EINVAL, "leave an empty part",
                "l2reg libsvm: fractions that leave no training row");
    char bad[128];
    snprintf(bad, sizeof bad, "%s/bad.svm", tmp_dir);
    FILE *f = fopen(bad, "w");
    if (f) {
        fputs("1 1:0.5 2:1\n-1 2:0.5\n1 3:0.1 2:0.2\n", f);
        fclose(f);
    }
    snprintf(opts, sizeof opts, "data=%s", bad);
    bilo_task *u = make("l2reg", opts, 2, BILO_F32);
    bool named = !u && strstr(bilo_last_error(), bad) && strstr(bilo_last_error(), "line 3");
    tap_ok(named, "l2reg libsvm: a corrupt file is rejected naming the path and line 3");
    if (!named) tap_diag("%s", bilo_last_error());
    bilo_clear_error();
    bilo_task_free(u);
    unlink(bad);
    unlink(path);
}

/* Gradient of g at W = 0 and b = log of the train split's class shares: ∂g/∂b = p̂ − p̂ = 0
   exactly, ∂g/∂W = Xᵀ(P − Y)/n with P's rows all p̂, computed here from the dense rows. */
static void test_l2reg_fmnist(void)
{
    if (!have_fmnist) {
        skip("l2reg fmnist: sizes, closed-form metrics, stationary bias");
        return;
    }
    bilo_task *t = make("l2reg", "n_train=400,n_val=200", 4, BILO_F64);
    bilo__l2reg *d = t ? t->data : NULL;
    tap_ok(d && bilo_dim(d->train.X, 0) == 400 && bilo_dim(d->val.X, 0) == 200 &&
           bilo_dim(d->test.X, 0) == 10000 && d->n_features == 784 && d->n_classes == 10,
           "l2reg fmnist: 400 train, 200 val, 10000 test rows of 784 features, 10 classes");
    if (!d) return;
    tap_close(metric(t, 0), log(10.0), 1e-12, 0, "l2reg fmnist: val_loss at y = 0 is ln 10");
    tap_close(metric(t, 3), 0.1, 1e-12, 0, "l2reg fmnist: test_acc at y = 0 is 0.1");
    const bilo_problem *p = bilo_task_problem(t);
    double share[10] = {0};
    for (int64_t i = 0; i < 400; i++) share[i64(d->train.y)[i]] += 1.0 / 400;
    for (int c = 0; c < 10; c++) bilo_set_flat(p->y[1], c, log(share[c]));
    double worst_b = INFINITY, worst_W = INFINITY;
    bilo_scope_begin();
    bilo_tensor *ya[2] = {bilo_detach(p->y[0]), bilo_detach(p->y[1])}, *g[2] = {0};
    bilo_set_requires_grad(ya[0], true);
    bilo_set_requires_grad(ya[1], true);
    bilo_tensor *loss = p->lower(p->x, ya, NULL, p->user);
    if (loss && bilo_grad(&loss, 1, NULL, ya, 2, g, 0) == 0) {
        worst_b = worst_W = 0;
        for (int c = 0; c < 10; c++) worst_b = fmax(worst_b, fabs(bilo_get_flat(g[1], c)));
        for (int64_t j = 0; j < 784; j += 7)
            for (int c = 0; c < 10; c++) {
                double want = 0;
                for (int64_t i = 0; i < 400; i++)
                    want += bilo_get(d->train.X, (int64_t[]){i, j}) *
                            (share[c] - (i64(d->train.y)[i] == c)) / 400;
                worst_W = fmax(worst_W, fabs(bilo_get(g[0], (int64_t[]){j, c}) - want));
            }
    }
    bilo_scope_end();
    tap_ok(worst_b < 1e-14 && worst_W < 1e-13,
           "l2reg fmnist: at W = 0, b = log shares, dg/db = 0 (%.2g) and dg/dW = X'(P - Y)/n "
           "(max diff %.2g)", worst_b, worst_W);
    bilo_task_free(t);
}

/* ---- meta-fmnist ---------------------------------------------------------------------- */

static const int64_t LOWER_HALF[5] = {0, 1, 2, 3, 4}, UPPER_HALF[5] = {5, 6, 7, 8, 9},
                     EVEN[5] = {0, 2, 4, 6, 8}, ODD[5] = {1, 3, 5, 7, 9};

static bool among(int64_t c, const int64_t *classes)
{
    for (int k = 0; k < 5; k++)
        if (classes[k] == c) return true;
    return false;
}

/* Every episode of e: `ways` distinct classes among `classes`, each with `shots` support and
   `queries` query images of that class, episode label c for its c-th class, no image twice.
   Returns the number of bad episodes. */
static int64_t bad_episodes(const bilo__episodes *e, bilo_tensor *labels, const int64_t *classes,
                            int ways, int shots, int queries)
{
    int64_t tasks = bilo_dim(e->support_rows, 0), bad = 0;
    int64_t ns = ways * shots, nq = ways * queries;
    bilo_tensor *file_rows[2] = {e->support_rows, e->query_rows};
    bilo_tensor *episode_y[2] = {e->support_y, e->query_y};
    for (int64_t t = 0; t < tasks; t++) {
        int64_t class_of[5] = {-1, -1, -1, -1, -1}, per_label[2][5] = {{0}};
        bool ok = bilo_dim(e->support_rows, 1) == ns && bilo_dim(e->query_rows, 1) == nq;
        for (int s = 0; ok && s < 2; s++) {
            int64_t n = s ? nq : ns;
            for (int64_t i = 0; ok && i < n; i++) {
                int64_t row = i64(file_rows[s])[t * n + i], c = i64(episode_y[s])[t * n + i];
                int64_t cls = i64(labels)[row];
                ok = c >= 0 && c < ways && among(cls, classes) &&
                     (class_of[c] < 0 || class_of[c] == cls);
                if (ok) {
                    class_of[c] = cls;
                    per_label[s][c]++;
                }
            }
        }
        for (int c = 0; ok && c < ways; c++) {
            ok = per_label[0][c] == shots && per_label[1][c] == queries;
            for (int k = 0; k < c; k++) ok = ok && class_of[k] != class_of[c];
        }
        bilo_scope_begin();
        bilo_tensor *rows[2] = {bilo_flatten(bilo_slice(e->support_rows, 0, t, t + 1, 1)),
                                bilo_flatten(bilo_slice(e->query_rows, 0, t, t + 1, 1))};
        ok = ok && distinct_in_range(rows, 2, bilo_numel(labels));
        bilo_scope_end();
        bad += !ok;
    }
    return bad;
}

static void test_meta_episodes(void)
{
    if (!have_fmnist) {
        skip("meta-fmnist: episodes, reproducibility, metrics");
        return;
    }
    check_error(!make("meta-fmnist", "ways=6", 1, BILO_F32), BILO_EINVAL, "ways = 6",
                "meta-fmnist: more ways than meta-training classes");
    const char *o = "ways=3,shots=2,queries=4,meta_batch=6,hidden=8,test_episodes=60,adapt_T=3";
    bilo_task *t = make("meta-fmnist", o, 21, BILO_F64);
    bilo__meta_fmnist *d = t ? t->data : NULL;
    tap_ok(d != NULL, "meta-fmnist: builds");
    if (!d) return;
    const bilo_problem *p = bilo_task_problem(t);
    tap_ok(p->begin_step && bilo_dim(p->y[0], 0) == 6 && bilo_dim(p->y[0], 1) == 8 &&
           bilo_dim(p->y[0], 2) == 3 && bilo_dim(p->x[0], 1) == 8 &&
           bilo_dim(d->train.support_x, 1) == 6 && bilo_dim(d->train.query_x, 1) == 12,
           "meta-fmnist: heads [6, 8, 3], backbone [784, 8], support 6 and query 12 images");
    tap_ok(bad_episodes(&d->test, d->labels, UPPER_HALF, 3, 2, 4) == 0 &&
           bilo_dim(d->test.support_rows, 0) == 60,
           "meta-fmnist: 60 test episodes, 3-way 2-shot 4-query over classes 5-9");
    int64_t bad = 0;
    for (int64_t s = 0; s < 4; s++)
        bad += p->begin_step(s, p->user) < 0 ||
               bad_episodes(&d->train, d->labels, LOWER_HALF, 3, 2, 4);
    tap_ok(bad == 0, "meta-fmnist: training episodes of steps 0-3 are 3-way 2-shot over 0-4");
    bool images_ok = true;
    for (int64_t i = 0; i < 12; i += 5) {
        int64_t row = i64(d->train.query_rows)[i];
        images_ok = images_ok && bilo_get(d->train.query_x, (int64_t[]){0, i, 300}) ==
                                     bilo_get(d->images, (int64_t[]){row, 300});
    }
    tap_ok(images_ok, "meta-fmnist: the episode images are the file's rows");

    p->begin_step(7, p->user);
    bilo_tensor *rows7 = bilo_keep(bilo_clone(d->train.support_rows));
    p->begin_step(8, p->user);
    bool differ = !same_i64(rows7, d->train.support_rows);
    p->begin_step(7, p->user);
    tap_ok(differ && same_i64(rows7, d->train.support_rows),
           "meta-fmnist: episodes depend on (seed, step) alone");
    bilo_release(rows7);

    tap_close(metric(t, 0), log(3.0), 1e-12, 0, "meta-fmnist: query_loss at zero heads is ln 3");
    double v[4], w[4];
    bilo_task *twin = make("meta-fmnist", o, 21, BILO_F64);
    bool got = bilo_task_metrics(t, v) == 0 && twin && bilo_task_metrics(twin, w) == 0;
    tap_ok(got && v[1] > 1.0 / 3 && v[1] <= 1 && v[2] > 0 && v[2] < 0.2 && v[3] > 0 &&
           !memcmp(v + 1, w + 1, 3 * sizeof *v),
           "meta-fmnist: test_acc %.3f +- %.3f above chance, test_loss %.3f, the same for a "
           "twin task", v[1], v[2], v[3]);
    bilo_task_free(twin);
    fill_random(p->y[0], 8, 0.3);
    check_fd(p, false, false, 0, 12, "meta-fmnist: dg/dhead");
    check_fd(p, false, true, 0, 12, "meta-fmnist: dg/dW1");
    check_fd(p, true, true, 0, 12, "meta-fmnist: df/dW1");
    bilo_task_free(t);

    t = make("meta-fmnist", "ways=5,shots=1,queries=2,meta_batch=4,test_episodes=8,"
             "classes=alternate", 22, BILO_F32);
    d = t ? t->data : NULL;
    tap_ok(d && bad_episodes(&d->train, d->labels, EVEN, 5, 1, 2) == 0 &&
           bad_episodes(&d->test, d->labels, ODD, 5, 1, 2) == 0,
           "meta-fmnist classes=alternate: 5-way episodes over even classes, tests over odd");
    bilo_task_free(t);
}

/* Every method the library has accepts the settings each task gives it ("" for a method the
   task cannot run, e.g. exact at this size), and a step with each runs on a tiny instance. */
static void test_method_settings(void)
{
    if (!have_fmnist) {
        skip("every method accepts the dataset tasks' settings");
        return;
    }
    const char *tasks[][2] = {{"hyperclean", "n_train=60,n_val=20,n_eval=20"},
                              {"l2reg", "n_train=60,n_val=20"},
                              {"meta-fmnist", "meta_batch=2,hidden=4,test_episodes=2"}};
    int bad = 0, tried = 0, saved = bilo_get_num_threads();
    bilo_set_num_threads(1); /* problems this small only pay for thread start-ups */
    for (int k = 0; k < 3; k++) {
        bilo_task *t = make(tasks[k][0], tasks[k][1], 1, BILO_F32);
        bad += !t;
        for (int m = 0; t && bilo_estimator_method_name(m); m++) {
            const char *method = bilo_estimator_method_name(m);
            const char *opts = bilo_task_method_options(t, method);
            if (!*opts) continue;
            tried++;
            bilo_task_reset(t);
            bilo_estimator *e = bilo_estimator_new(method, bilo_task_problem(t), opts);
            bilo_optim_opts oo = bilo_task_outer_opts(t);
            bilo_optim *outer = bilo_optim_new(&oo, bilo_task_problem(t)->x,
                                               bilo_task_problem(t)->n_x);
            if (!e || !outer || bilo_estimator_step(e, outer) < 0) {
                tap_diag("%s, %s (%s): %s", tasks[k][0], method, opts, bilo_last_error());
                bad++;
            }
            bilo_optim_free(outer);
            bilo_estimator_free(e);
        }
        bilo_task_free(t);
    }
    bilo_set_num_threads(saved);
    tap_ok(bad == 0 && tried >= 12, "every method accepts the dataset tasks' settings and steps "
           "(%d pairs)", tried);
}

int main(void)
{
    bilo_mem_stats start, end;
    bilo_mem_get_stats(&start);
    have_fmnist = access(TRAIN_LABELS, R_OK) == 0;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/bilo_tasks_data_XXXXXX");
    if (!mkdtemp(tmp_dir)) return 1;
    test_l2reg_libsvm();
    test_hyperclean_splits();
    test_hyperclean_small();
    test_hyperclean_seeds_and_errors();
    test_hyperclean_threads();
    test_l2reg_fmnist();
    test_meta_episodes();
    test_method_settings();
    rmdir(tmp_dir);
    bilo_mem_get_stats(&end);
    tap_ok(end.live_bytes == start.live_bytes, "no leaks: live bytes %zu -> %zu",
           start.live_bytes, end.live_bytes);
    return tap_done();
}
