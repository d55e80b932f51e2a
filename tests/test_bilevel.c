/* Bilevel estimators on the closed-form quadratic problem of bilevel_quadratic.h. */
#include "bilevel_quadratic.h"

static const double LAMBDA[NY] = {1, 2, 3, 4};

static void test_exact_and_cg(void)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    double err = named_error(&q, "exact", NULL);
    tap_ok(err >= 0 && err < 1e-12, "exact matches the closed form (rel err %.2g)", err);
    err = named_error(&q, "aid-cg", "K=4");
    tap_ok(err >= 0 && err < 1e-9, "AID-CG with K = dim matches (rel err %.2g)", err);
    err = named_error(&q, "aid-cg", "K=2");
    tap_ok(err > 1e-6, "AID-CG with K < dim does not (rel err %.2g)", err);
    free_quad(&q);

    const double ill[NY] = {1e-2, 1, 10, 100};
    make_quad(&q, ill, 1, 1);
    err = named_error(&q, "exact", NULL);
    tap_ok(err >= 0 && err < 1e-10, "exact, condition number 1e4 (rel err %.2g)", err);
    err = named_error(&q, "aid-cg", "K=4");
    tap_ok(err >= 0 && err < 1e-7, "AID-CG K = dim, condition number 1e4 (rel err %.2g)", err);
    free_quad(&q);

    const double indefinite[NY] = {-1, 2, 3, 4};
    make_quad(&q, indefinite, 1, 1);
    double ys[NY], zero[NY] = {0};
    y_star(&q, XP, ys);
    vars v;
    make_vars(&v, &q, XP, zero);
    bilo_estimator *e = bilo_exact_new(&v.p, NULL);
    free_vars(&v);
    err = hyper_error(e, &v, &q, ys);
    tap_ok(err >= 0 && err < 1e-12, "exact, indefinite ∇²_yy g solved by LU (rel err %.2g)", err);
    tap_ok(strstr(bilo_estimator_message(e), "LU") != NULL, "the LU fallback leaves a note: %s",
           bilo_estimator_message(e));
    bilo_estimator_free(e);
    free_quad(&q);
}

static void test_counters(void)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    double ys[NY];
    y_star(&q, XP, ys);
    vars v;
    make_vars(&v, &q, XP, ys);
    bilo_estimator *e = bilo_aid_ns_new(&v.p, &(bilo_aid_opts){.K = 7, .eta = 0.2});
    free_vars(&v);
    hyper_error(e, &v, &q, ys);
    bilo_cost last, total;
    bilo_estimator_report(e, &last, &total);
    tap_ok(last.hvps == 7 && last.f_grads == 1 && last.g_grads == 1 && last.inner_iters == 0,
           "AID-NS K = 7: 6 Hessian + 1 mixed products, one gradient of f and of g "
           "(hvps %lld, f %lld, g %lld)", (long long)last.hvps, (long long)last.f_grads,
           (long long)last.g_grads);
    tap_ok(last.peak_bytes > 0 && total.hvps == 7, "peak bytes %zu recorded, total follows",
           last.peak_bytes);
    bilo_estimator_free(e);
    free_quad(&q);
}

/* err(K+1)/err(K) against the dominant rate 1 − ηλ_min = 0.8 (η = 0.2, λ_min = 1); fmt
   holds the option string with %d for the knob K. */
static void test_geometric(const char *name, const char *fmt)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    char o1[64], o2[64];
    snprintf(o1, sizeof o1, fmt, 40);
    snprintf(o2, sizeof o2, fmt, 41);
    double e1 = named_error(&q, name, o1), e2 = named_error(&q, name, o2);
    tap_ok(e1 > 0 && e2 > 0 && fabs(e2 / e1 - 0.8) < 5e-3,
           "%s %s: error falls by 1 - eta*lambda_min = 0.8 per step of K = 40 (%.3g -> %.3g, "
           "ratio %.5f)", name, fmt, e1, e2, e2 / e1);
    free_quad(&q);
}

static void test_multi_tensor(void)
{
    quad q;
    make_quad(&q, LAMBDA, 2, 2);
    double err = named_error(&q, "exact", NULL);
    tap_ok(err >= 0 && err < 1e-12, "two x ([2], [1,1]) and two y ([2,1], [2]): exact (%.2g)", err);
    err = named_error(&q, "aid-cg", "K=4");
    tap_ok(err >= 0 && err < 1e-9, "two x and two y: AID-CG (%.2g)", err);
    err = named_error(&q, "itd", "T=200,lr=0.2");
    tap_ok(err >= 0 && err < 1e-12, "two x and two y: ITD after 200 steps (%.2g)", err);
    err = named_error(&q, "itd", "T=200,lr=0.2,truncate=150");
    tap_ok(err >= 0 && err < 1e-12, "ITD truncated to the last 150 of 200 steps (%.2g)", err);
    err = named_error(&q, "aid-fp", "K=200,eta=0.2");
    tap_ok(err >= 0 && err < 1e-12, "two x and two y: AID-FP K = 200 (%.2g)", err);
    free_quad(&q);
}

/* The minimizer solves (D + BᵀA⁻²B) x = −e − BᵀA⁻¹(A⁻¹c − y₀); ∇Φ is affine. */
static void minimizer(const quad *q, double *x)
{
    double g0[NX], h[NX * NX], zero[NX] = {0}, neg[NX];
    grad_phi(q, zero, g0);
    for (int j = 0; j < NX; j++) {
        double ej[NX] = {0}, gj[NX];
        ej[j] = 1;
        grad_phi(q, ej, gj);
        for (int i = 0; i < NX; i++) h[i * NX + j] = gj[i] - g0[i];
    }
    for (int i = 0; i < NX; i++) neg[i] = -g0[i];
    solve(h, NX, neg, x);
}

static void test_outer(const char *name, const char *opts)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    double x0[NX] = {0}, y0[NY] = {0}, xs[NX], x[NX], g[NX], diff[NX];
    minimizer(&q, xs);
    vars v;
    make_vars(&v, &q, x0, y0);
    bilo_estimator *e = bilo_estimator_new(name, &v.p, opts);
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.5}, v.x, 1);
    int rc = 0;
    for (int s = 0; s < 200 && rc == 0; s++) rc = bilo_estimator_step(e, outer);
    read_list(v.x, 1, x);
    grad_phi(&q, x, g);
    for (int i = 0; i < NX; i++) diff[i] = x[i] - xs[i];
    tap_ok(rc == 0 && norm(g, NX) < 1e-6 && norm(diff, NX) < 1e-6,
           "%s: 200 outer steps reach |grad Phi| = %.2g, |x - x*| = %.2g", name, norm(g, NX),
           norm(diff, NX));
    bilo_cost total;
    bilo_estimator_report(e, NULL, &total);
    tap_ok(total.steps == 200 && total.inner_iters > 0, "%s: 200 steps, %lld inner iterations",
           name, (long long)total.inner_iters);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
}

/* reset=1: each step restarts from y = 0, so after two steps y is three GD steps from 0 at
   the x the second step started from; tol stops the inner loop early. */
static void test_inner_options(void)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    double x0[NX] = {0}, y0[NY] = {0}, x1[NX], want[NY] = {0}, got[NY];
    vars v;
    make_vars(&v, &q, x0, y0);
    bilo_estimator *e = bilo_estimator_new("aid-cg", &v.p, "T=3,lr=0.2,reset=1,K=4");
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.5}, v.x, 1);
    int rc = bilo_estimator_step(e, outer);
    read_list(v.x, 1, x1);
    rc = rc < 0 ? rc : bilo_estimator_step(e, outer);
    for (int t = 0; t < 3; t++) {
        double r[NY];
        for (int i = 0; i < NY; i++) {
            r[i] = -q.c[i];
            for (int k = 0; k < NY; k++) r[i] += q.A[i * NY + k] * want[k];
            for (int j = 0; j < NX; j++) r[i] -= q.B[i * NX + j] * x1[j];
        }
        for (int i = 0; i < NY; i++) want[i] -= 0.2 * r[i];
    }
    read_list(v.y, 1, got);
    double diff[NY];
    for (int i = 0; i < NY; i++) diff[i] = got[i] - want[i];
    tap_ok(rc == 0 && norm(diff, NY) < 1e-14, "reset=1: y is 3 GD steps from y_init (err %.2g)",
           norm(diff, NY));
    bilo_estimator_free(e);
    e = bilo_estimator_new("exact", &v.p, "T=1000,lr=0.2,tol=1e-8");
    rc = bilo_estimator_step(e, outer);
    bilo_cost last;
    bilo_estimator_report(e, &last, NULL);
    tap_ok(rc == 0 && last.inner_iters > 10 && last.inner_iters < 1000,
           "tol=1e-8 stops the inner loop after %lld of 1000 steps", (long long)last.inner_iters);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
}

static void expect_bad_name(const char *name, const char *opts, const char *needle)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    double z[NY] = {0};
    vars v;
    make_vars(&v, &q, z, z);
    bilo_clear_error();
    bilo_estimator *e = bilo_estimator_new(name, &v.p, opts);
    tap_ok(!e && bilo_errcode() == BILO_EINVAL && strstr(bilo_last_error(), needle),
           "%s \"%s\" is rejected: %s", name, opts ? opts : "", bilo_last_error());
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
}

static void test_bad_callbacks(void)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    double x0[NX] = {0}, y0[NY] = {0};
    vars v;
    make_vars(&v, &q, x0, y0);
    bilo_estimator *e = bilo_aid_cg_new(&v.p, &(bilo_aid_opts){.K = 4, .inner = {.T = 5,
                                                               .optim = {.lr = 0.2}}});
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.5}, v.x, 1);
    int rc1 = bilo_estimator_step(e, outer), rc2 = bilo_estimator_step(e, outer);
    double before[NX], after[NX];
    read_list(v.x, 1, before);
    q.nan_upper = true;
    int rc = bilo_estimator_step(e, outer);
    tap_ok(rc1 == 0 && rc2 == 0 && rc == BILO_ENUMERIC && strstr(bilo_last_error(), "step 3"),
           "a NaN upper loss at step 3 gives BILO_ENUMERIC: %s", bilo_last_error());
    q.nan_upper = false;
    q.fail_lower = true;
    rc = bilo_estimator_step(e, outer);
    tap_ok(rc == BILO_ESHAPE && strstr(bilo_last_error(), "callback") &&
           strstr(bilo_last_error(), "bilo_matmul"),
           "a lower callback returning NULL stops the step with its error: %s",
           bilo_last_error());
    read_list(v.x, 1, after);
    tap_ok(!memcmp(before, after, sizeof before), "failed steps leave x unchanged");
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
}

/* ---- stocBiO: AID-NS with a fresh lower minibatch for every Neumann term ---------------- */

/* g = ½ Σ_j mean_batch(h)_j y_j² − yᵀx over rows h of positive curvatures; f = ½‖y − y₀‖².
   At a point (x, y) the hypergradient is H̄⁻¹(y − y₀) with H̄ = diag(mean of all rows). */
enum { SB_ROWS = 8, SB_DIM = 3, SB_RUNS = 400 };

static bilo_tensor *sb_lower(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                             void *user)
{
    (void)user;
    bilo_tensor *h = bilo_mean(b->x, 0, false);
    bilo_tensor *curv = bilo_mul_scalar(bilo_dot(h, bilo_square(y[0])), 0.5);
    return bilo_sub(curv, bilo_dot(y[0], x[0]));
}

static bilo_tensor *sb_upper(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                             void *user)
{
    (void)x;
    (void)b;
    bilo_tensor *d = bilo_sub(y[0], (bilo_tensor *)user);
    return bilo_mul_scalar(bilo_dot(d, d), 0.5);
}

static void test_stocbio(void)
{
    bilo_scope_begin();
    bilo_rng rng = bilo_rng_make(11, 0);
    bilo_tensor *rows = bilo_add_scalar(bilo_mul_scalar(bilo_rand(BILO_F64, BILO_SHAPE(SB_ROWS, SB_DIM), &rng), 2.5), 0.5);
    bilo_tensor *y0 = bilo_from_data(BILO_F64, BILO_SHAPE(SB_DIM), (double[]){1, -2, 0.5});
    bilo_tensor *x = bilo_zeros(BILO_F64, BILO_SHAPE(SB_DIM));
    bilo_tensor *y = bilo_zeros(BILO_F64, BILO_SHAPE(SB_DIM));
    bilo_batcher *batches = bilo_batcher_new(rows, NULL,
                                             &(bilo_batcher_opts){.batch_size = 2, .seed = 3});
    bilo_problem p = {.x = &x, .n_x = 1, .y = &y, .n_y = 1, .lower = sb_lower,
                      .upper = sb_upper, .user = y0, .lower_data = batches};
    bilo_estimator *e = bilo_estimator_new("aid-ns", &p, "T=1,K=200,eta=0.1");

    double want[SB_DIM], mean[SB_DIM] = {0}, single_err = 0;
    for (int j = 0; j < SB_DIM; j++) {
        double hbar = 0;
        for (int i = 0; i < SB_ROWS; i++) hbar += bilo_get_flat(rows, i * SB_DIM + j) / SB_ROWS;
        want[j] = (0 - bilo_get_flat(y0, j)) / hbar;
    }
    int rc = 0;
    for (int r = 0; r < SB_RUNS && rc == 0; r++) {
        bilo_scope_begin();
        bilo_tensor *g;
        rc = bilo_estimator_hypergradient(e, &x, &y, &g);
        for (int j = 0; rc == 0 && j < SB_DIM; j++) {
            double gj = bilo_get_flat(g, j);
            mean[j] += gj / SB_RUNS;
            single_err = fmax(single_err, fabs(gj - want[j]) / norm(want, SB_DIM));
        }
        bilo_scope_end();
    }
    double diff[SB_DIM];
    for (int j = 0; j < SB_DIM; j++) diff[j] = mean[j] - want[j];
    double mean_err = norm(diff, SB_DIM) / norm(want, SB_DIM);
    tap_ok(rc == 0 && single_err > 0.05,
           "stocbio: single estimates vary with the minibatches (worst relative error %.3f)",
           single_err);
    /* Batches within an epoch are drawn without replacement, so terms are slightly dependent:
       the average is close to H̄⁻¹∇_y f but not unbiased; 3% covers that and the sampling. */
    tap_ok(rc == 0 && mean_err < 0.03 && mean_err < single_err / 3,
           "stocbio: the mean of %d estimates approaches the full-batch hypergradient "
           "(relative error %.4f)", SB_RUNS, mean_err);
    bilo_cost last, total;
    bilo_estimator_report(e, &last, &total);
    tap_ok(last.g_grads == 200 && last.hvps == 200,
           "stocbio: one lower gradient graph per Neumann term (g grads %lld, HVPs %lld, want 200 each)",
           (long long)last.g_grads, (long long)last.hvps);
    bilo_estimator_free(e);
    bilo_batcher_free(batches);
    bilo_scope_end();
}

int main(void)
{
    bilo_mem_stats start, end;
    bilo_mem_get_stats(&start);
    test_exact_and_cg();
    test_counters();
    test_geometric("aid-ns", "K=%d,eta=0.2");
    test_geometric("aid-fp", "K=%d,eta=0.2");
    test_geometric("itd", "T=%d,lr=0.2");
    test_geometric("itd", "T=200,lr=0.2,truncate=%d");
    test_multi_tensor();
    test_outer("exact", "T=100,lr=0.2");
    test_outer("aid-cg", "T=100,lr=0.2,K=4");
    test_outer("itd", "T=100,lr=0.2");
    test_outer("aid-fp", "T=100,lr=0.2,K=1,eta=0.2,warm_v=1");
    test_outer("aid-ns", "T=100,lr=0.2,momentum=0.5,K=100,eta=0.2");
    test_inner_options();
    expect_bad_name("newton", NULL, "unknown method 'newton'");
    expect_bad_name("aid-cg", "Q=3", "unknown option 'Q'");
    expect_bad_name("aid-cg", "truncate=3", "unknown option 'truncate'");
    expect_bad_name("aid-cg", "K=abc", "bad value 'abc'");
    expect_bad_name("itd", "optim=rmsprop", "bad value 'rmsprop'");
    expect_bad_name("exact", "T", "not key=value");
    test_bad_callbacks();
    test_stocbio();
    bilo_mem_get_stats(&end);
    tap_ok(end.live_bytes == start.live_bytes, "no leaks: live bytes %zu -> %zu",
           start.live_bytes, end.live_bytes);
    return tap_done();
}
