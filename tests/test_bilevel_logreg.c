/* The classic hyperparameter problem: multinomial logistic regression whose per-feature L2
   weights exp(x_j) are the outer variable,
     g(x, W) = CE(X_tr W, y_tr) + ½ Σ_j exp(x_j) Σ_c W_jc²,   f(x, W) = CE(X_va W, y_va),
   on a small seeded dataset in f64. exact, AID-CG (K = dim W) and ITD after a long unroll
   must agree, and exact must match a central finite difference of Φ(x) = f(x, W*(x)) whose
   W* comes from a gradient-descent solve written here, independent of the estimators. */
#include <math.h>

#include "bilo.h"
#include "tap.h"

enum { N_TRAIN = 200, N_VAL = 100, D = 10, C = 3 };

/* g is exp(min x)-strongly convex and its curvature stays below ~4 for these x, so GD with
   this step contracts by at most 1 − 0.4·e^−1 ≈ 0.85 per step. */
#define INNER_LR 0.4
#define SOLVE_TOL 1e-13

typedef struct {
    bilo_tensor *X_tr, *y_tr, *X_va, *y_va;
} dataset;

/* Labels from a random linear teacher plus noise, so the classes overlap. */
static void make_split(bilo_rng *rng, bilo_tensor *teacher, int64_t n, bilo_tensor **X,
                       bilo_tensor **y)
{
    bilo_scope_begin();
    *X = bilo_randn(BILO_F64, BILO_SHAPE(n, D), rng);
    bilo_tensor *noise = bilo_randn(BILO_F64, BILO_SHAPE(n, C), rng);
    *y = bilo_argmax(bilo_add(bilo_matmul(*X, teacher), noise), 1, false);
    bilo_keep(*X);
    bilo_keep(*y);
    bilo_scope_end();
}

static dataset make_dataset(void)
{
    bilo_rng rng = bilo_rng_make(5, 0);
    dataset ds;
    bilo_tensor *teacher = bilo_randn(BILO_F64, BILO_SHAPE(D, C), &rng);
    make_split(&rng, teacher, N_TRAIN, &ds.X_tr, &ds.y_tr);
    make_split(&rng, teacher, N_VAL, &ds.X_va, &ds.y_va);
    bilo_release(teacher);
    return ds;
}

static void free_dataset(dataset *ds)
{
    bilo_tensor *ts[] = {ds->X_tr, ds->y_tr, ds->X_va, ds->y_va};
    for (int i = 0; i < 4; i++) bilo_release(ts[i]);
}

static bilo_tensor *lower(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                          void *user)
{
    (void)b;
    const dataset *ds = user;
    bilo_tensor *fit = bilo_nn_cross_entropy(bilo_matmul(ds->X_tr, y[0]), ds->y_tr,
                                             BILO_REDUCE_MEAN);
    bilo_tensor *weights = bilo_reshape(bilo_exp(x[0]), BILO_SHAPE(D, 1));
    bilo_tensor *penalty = bilo_sum(bilo_mul(weights, bilo_square(y[0])), BILO_ALL_AXES, false);
    return bilo_add(fit, bilo_mul_scalar(penalty, 0.5));
}

static bilo_tensor *upper(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                          void *user)
{
    (void)b;
    (void)x;
    const dataset *ds = user;
    return bilo_nn_cross_entropy(bilo_matmul(ds->X_va, y[0]), ds->y_va, BILO_REDUCE_MEAN);
}

/* W*(x) by gradient descent on g until ‖∇_W g‖ ≤ SOLVE_TOL; returns the final gradient norm. */
static double solve_inner(dataset *ds, bilo_tensor *x, bilo_tensor *W)
{
    double gnorm = INFINITY;
    for (int it = 0; it < 2000 && gnorm > SOLVE_TOL; it++) {
        bilo_scope_begin();
        bilo_tensor *g = lower(&x, &W, NULL, ds), *dW = NULL;
        if (bilo_grad(&g, 1, NULL, &W, 1, &dW, 0) == 0) {
            gnorm = bilo_item(bilo_norm(dW, BILO_ALL_AXES, false));
            bilo_copy_(W, bilo_sub(W, bilo_mul_scalar(dW, INNER_LR)));
        } else {
            gnorm = NAN;
        }
        bilo_scope_end();
        if (isnan(gnorm)) break;
    }
    return gnorm;
}

/* Φ(x) = f(x, W*(x)), W* solved from zero. */
static double phi(dataset *ds, const double *xv)
{
    bilo_tensor *x = bilo_from_data(BILO_F64, BILO_SHAPE(D), xv);
    bilo_tensor *W = bilo_zeros(BILO_F64, BILO_SHAPE(D, C));
    bilo_set_requires_grad(W, true);
    solve_inner(ds, x, W);
    bilo_scope_begin();
    double value = bilo_item(upper(&x, &W, NULL, ds));
    bilo_scope_end();
    bilo_release(x);
    bilo_release(W);
    return value;
}

static void read_vec(bilo_tensor *t, double *out)
{
    for (int64_t i = 0; i < bilo_numel(t); i++) out[i] = bilo_get_flat(t, i);
}

static double rel_diff(const double *a, const double *b, int n)
{
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / den);
}

/* The hypergradient of the estimator made by name at (x, W); false on failure. */
static bool hypergradient(const char *name, const char *opts, bilo_problem *p, bilo_tensor *W,
                          double *out)
{
    bilo_estimator *e = bilo_estimator_new(name, p, opts);
    bilo_tensor *grad = NULL;
    bilo_scope_begin();
    int rc = e ? bilo_estimator_hypergradient(e, p->x, &W, &grad) : -1;
    if (rc == 0) read_vec(grad, out);
    bilo_scope_end();
    if (rc < 0) tap_diag("%s(%s): %s", name, opts, bilo_last_error());
    bilo_estimator_free(e);
    return rc == 0;
}

static const double X0[D] = {-1.0, -0.5, 0.0, 0.5, 1.0, -0.8, 0.3, -0.2, 0.7, -1.0};

int main(void)
{
    bilo_mem_stats start, end;
    bilo_mem_get_stats(&start);
    dataset ds = make_dataset();
    bilo_tensor *x = bilo_from_data(BILO_F64, BILO_SHAPE(D), X0);
    bilo_tensor *W = bilo_zeros(BILO_F64, BILO_SHAPE(D, C));
    bilo_tensor *W0 = bilo_zeros(BILO_F64, BILO_SHAPE(D, C));
    bilo_set_requires_grad(W, true);
    bilo_problem p = {.x = &x, .n_x = 1, .y = &W, .n_y = 1, .lower = lower, .upper = upper,
                      .user = &ds};

    double gnorm = solve_inner(&ds, x, W);
    tap_ok(gnorm <= SOLVE_TOL, "GD reaches W*: |grad_W g| = %.2g", gnorm);

    double exact[D], cg[D], itd[D], fd[D];
    bool ok = hypergradient("exact", NULL, &p, W, exact);
    tap_ok(ok, "exact hypergradient at W*");
    ok = hypergradient("aid-cg", "K=30", &p, W, cg);
    double err = ok ? rel_diff(cg, exact, D) : INFINITY;
    tap_ok(err < 1e-6, "AID-CG with K = dim W = 30 agrees with exact (rel diff %.2g)", err);
    /* ITD unrolls from W = 0: after 400 steps both W_T and dW_T/dx are converged. */
    ok = hypergradient("itd", "T=400,lr=0.4", &p, W0, itd);
    err = ok ? rel_diff(itd, exact, D) : INFINITY;
    tap_ok(err < 1e-6, "ITD after 400 GD steps from 0 agrees with exact (rel diff %.2g)", err);

    const double h = 1e-5;
    for (int j = 0; j < D; j++) {
        double xp[D], xm[D];
        for (int i = 0; i < D; i++) xp[i] = xm[i] = X0[i];
        xp[j] += h;
        xm[j] -= h;
        fd[j] = (phi(&ds, xp) - phi(&ds, xm)) / (2 * h);
    }
    err = rel_diff(exact, fd, D);
    tap_ok(err < 1e-6, "exact matches a central difference of Phi (rel diff %.2g)", err);

    bilo_release(x);
    bilo_release(W);
    bilo_release(W0);
    free_dataset(&ds);
    bilo_mem_get_stats(&end);
    tap_ok(end.live_bytes == start.live_bytes, "no leaks: live bytes %zu -> %zu",
           start.live_bytes, end.live_bytes);
    return tap_done();
}
