/* ESJ / ESJ-S / PZOBO / PZOBO-S on closed forms (research notes bilevel.md §A1, check §E4):
   on the quadratic of bilevel_quadratic.h, T gradient steps of size α from y0 give
   y_T(x) affine in x with dy_T/dx = A⁻¹(I − (I − αA)^T)B, so path differences are exact for
   any μ and the coordinate directions reproduce the ITD hypergradient. */
#include "bilevel_quadratic.h"
#include "checks.h"

static const double LAMBDA[NY] = {1, 2, 3, 4};
static const double Y_START[NY] = {0.3, -0.2, 0.6, 0.1}; /* the y every estimate starts from */

/* ---- closed forms ---------------------------------------------------------------------- */

/* y_T after T steps y ← y − α(Ay − Bx − c) from y0. */
static void gd_path(const quad *q, const double *x, const double *y0, int T, double alpha,
                    double *y)
{
    memcpy(y, y0, NY * sizeof *y);
    for (int t = 0; t < T; t++) {
        double r[NY];
        for (int i = 0; i < NY; i++) {
            r[i] = -q->c[i];
            for (int k = 0; k < NY; k++) r[i] += q->A[i * NY + k] * y[k];
            for (int j = 0; j < NX; j++) r[i] -= q->B[i * NX + j] * x[j];
        }
        for (int i = 0; i < NY; i++) y[i] -= alpha * r[i];
    }
}

/* ITD hypergradient ∇_x f + (dy_T/dx)ᵀ ∇_y f(x, y_T), dy_T/dx = A⁻¹(I − (I − αA)^T)B. */
static void itd_closed_form(const quad *q, const double *x, const double *y0, int T,
                            double alpha, double *g)
{
    double m[NY * NY], next[NY * NY], yT[NY];
    for (int i = 0; i < NY * NY; i++) m[i] = (i % (NY + 1) == 0);
    for (int t = 0; t < T; t++) { /* m ← (I − αA) m */
        for (int i = 0; i < NY; i++)
            for (int j = 0; j < NY; j++) {
                double s = m[i * NY + j];
                for (int k = 0; k < NY; k++) s -= alpha * q->A[i * NY + k] * m[k * NY + j];
                next[i * NY + j] = s;
            }
        memcpy(m, next, sizeof m);
    }
    gd_path(q, x, y0, T, alpha, yT);
    for (int j = 0; j < NX; j++) {
        g[j] = q->e[j];
        for (int k = 0; k < NX; k++) g[j] += q->D[j * NX + k] * x[k];
    }
    for (int j = 0; j < NX; j++) { /* column j of the Jacobian: A⁻¹ (I − m) B e_j */
        double rhs[NY], col[NY];
        for (int i = 0; i < NY; i++) {
            rhs[i] = 0;
            for (int k = 0; k < NY; k++) rhs[i] += ((i == k) - m[i * NY + k]) * q->B[k * NX + j];
        }
        solve(q->A, NY, rhs, col);
        for (int i = 0; i < NY; i++) g[j] += col[i] * (yT[i] - q->y0[i]);
    }
}

static double rel_diff(const double *a, const double *b, int n)
{
    double d[NX > NY ? NX : NY];
    for (int i = 0; i < n; i++) d[i] = a[i] - b[i];
    return norm(d, n) / norm(b, n);
}

/* ---- running an estimator -------------------------------------------------------------- */

/* The hypergradient of method `name` with options at (XP, Y_START) into out; cost optional. */
static int estimate(quad *q, const char *name, const char *opts, double *out, bilo_cost *cost)
{
    vars v;
    make_vars(&v, q, XP, Y_START);
    bilo_estimator *e = bilo_estimator_new(name, &v.p, opts);
    int rc = e ? 0 : bilo_errcode();
    bilo_tensor *g[2];
    bilo_scope_begin();
    if (rc == 0) rc = bilo_estimator_hypergradient(e, v.x, v.y, g);
    if (rc == 0) read_list(g, v.p.n_x, out);
    bilo_scope_end();
    if (rc < 0) tap_diag("%s(%s): %s", name, opts, bilo_last_error());
    if (rc == 0 && cost) bilo_estimator_report(e, cost, NULL);
    bilo_estimator_free(e);
    free_vars(&v);
    return rc;
}

/* ---- 1. coordinate directions are exact ------------------------------------------------ */

static void test_coordinate_exact(int n_x, int n_y)
{
    quad q;
    make_quad(&q, LAMBDA, n_x, n_y);
    const int Ts[] = {1, 5, 50};
    const char *modes[] = {"mu=1e-3", "mu=1", "mu=0.1,antithetic=1"};
    for (int k = 0; k < 3; k++)
        for (int m = 0; m < 3; m++) {
            char opts[128];
            double want[NX], got[NX], itd[NX];
            itd_closed_form(&q, XP, Y_START, Ts[k], 0.2, want);
            snprintf(opts, sizeof opts, "T=%d,lr=0.2,directions=coordinate,%s", Ts[k], modes[m]);
            int rc = estimate(&q, "esj", opts, got, NULL);
            double err = rel_diff(got, want, NX);
            tap_ok(rc == 0 && err < 1e-9, "coordinate ESJ (%s), %d x / %d y tensors = closed-form "
                   "ITD (rel err %.2g)", opts, n_x, n_y, err);
            if (m) continue;
            snprintf(opts, sizeof opts, "T=%d,lr=0.2", Ts[k]);
            rc = estimate(&q, "itd", opts, itd, NULL);
            err = rel_diff(got, itd, NX);
            tap_ok(rc == 0 && err < 1e-9, "coordinate ESJ = the itd estimator, T = %d (rel %.2g)",
                   Ts[k], err);
        }
    free_quad(&q);
}

/* ---- 2. Gaussian directions: unbiased, error ~ 1/√Q; antithetic pairs --------------------- */

enum { MEAN_SEEDS = 400, SLOPE_SEEDS = 64, N_Q = 9 };

static void test_gaussian_mean(void)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    double want[NX], sum[NX] = {0}, sq[NX] = {0};
    itd_closed_form(&q, XP, Y_START, 5, 0.2, want);
    int rc = 0;
    for (int s = 0; s < MEAN_SEEDS && rc == 0; s++) {
        char opts[96];
        double g[NX];
        snprintf(opts, sizeof opts, "T=5,lr=0.2,directions=gaussian,threads=1,seed=%d", s);
        rc = estimate(&q, "esj", opts, g, NULL);
        for (int j = 0; j < NX; j++) {
            sum[j] += g[j];
            sq[j] += g[j] * g[j];
        }
    }
    /* Each component's mean within 4 standard errors of the ITD value. */
    double worst_z = 0;
    for (int j = 0; j < NX; j++) {
        double mean = sum[j] / MEAN_SEEDS, var = sq[j] / MEAN_SEEDS - mean * mean;
        worst_z = fmax(worst_z, fabs(mean - want[j]) / sqrt(var / MEAN_SEEDS));
    }
    tap_ok(rc == 0 && worst_z < 4, "Gaussian Q = 1: the mean of %d estimates is the ITD "
           "hypergradient (worst |z| = %.2f)", MEAN_SEEDS, worst_z);
    free_quad(&q);
}

/* Sphere directions (the authors' code): u normalized per outer tensor, here x = ([2], [1,1]).
   Both blocks of ĝ − ∇_x f are u_i·c with one scalar c, so their norms agree; and since
   E[u_i u_iᵀ] = I/d_i, the mean is ∇_x f + diag(1/d_i)·(ITD − ∇_x f). */
static void test_sphere(void)
{
    quad q;
    make_quad(&q, LAMBDA, 2, 1);
    double itd[NX], fx[NX], want[NX], sum[NX] = {0}, sq[NX] = {0}, worst_gap = 0;
    const double scale[NX] = {0.5, 0.5, 1};
    itd_closed_form(&q, XP, Y_START, 5, 0.2, itd);
    for (int j = 0; j < NX; j++) {
        fx[j] = q.e[j];
        for (int k = 0; k < NX; k++) fx[j] += q.D[j * NX + k] * XP[k];
        want[j] = fx[j] + scale[j] * (itd[j] - fx[j]);
    }
    int rc = 0;
    for (int s = 0; s < MEAN_SEEDS && rc == 0; s++) {
        char opts[96];
        double g[NX];
        snprintf(opts, sizeof opts, "T=5,lr=0.2,directions=sphere,threads=1,seed=%d", s);
        rc = estimate(&q, "esj", opts, g, NULL);
        double first = hypot(g[0] - fx[0], g[1] - fx[1]), second = fabs(g[2] - fx[2]);
        worst_gap = fmax(worst_gap, fabs(first - second) / second);
        for (int j = 0; j < NX; j++) {
            sum[j] += g[j];
            sq[j] += g[j] * g[j];
        }
    }
    tap_ok(rc == 0 && worst_gap < 1e-10, "sphere: every outer tensor's direction has unit norm "
           "(worst relative gap %.2g)", worst_gap);
    double worst_z = 0;
    for (int j = 0; j < NX; j++) {
        double mean = sum[j] / MEAN_SEEDS, var = sq[j] / MEAN_SEEDS - mean * mean;
        worst_z = fmax(worst_z, fabs(mean - want[j]) / sqrt(var / MEAN_SEEDS));
    }
    tap_ok(rc == 0 && worst_z < 4, "sphere: the mean of %d estimates scales the Jacobian term by "
           "1/dim per tensor (worst |z| = %.2f)", MEAN_SEEDS, worst_z);
    free_quad(&q);
}

/* Root mean squared relative error over SLOPE_SEEDS seeds at each Q = 1, 2, ..., 256, and the
   least-squares slope of log(error) against log(Q). */
static void test_gaussian_slope(void)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    double want[NX], lq[N_Q], le[N_Q];
    itd_closed_form(&q, XP, Y_START, 3, 0.2, want);
    int rc = 0;
    for (int k = 0; k < N_Q && rc == 0; k++) {
        double mse = 0;
        for (int s = 0; s < SLOPE_SEEDS && rc == 0; s++) {
            char opts[96];
            double g[NX], err;
            snprintf(opts, sizeof opts, "T=3,lr=0.2,directions=gaussian,threads=1,Q=%d,seed=%d", 1 << k,
                     1000 + s);
            rc = estimate(&q, "esj", opts, g, NULL);
            err = rel_diff(g, want, NX);
            mse += err * err / SLOPE_SEEDS;
        }
        lq[k] = log(1 << k);
        le[k] = 0.5 * log(mse);
    }
    double mx = 0, my = 0, sxy = 0, sxx = 0;
    for (int k = 0; k < N_Q; k++) mx += lq[k] / N_Q, my += le[k] / N_Q;
    for (int k = 0; k < N_Q; k++) {
        sxy += (lq[k] - mx) * (le[k] - my);
        sxx += (lq[k] - mx) * (lq[k] - mx);
    }
    double slope = sxy / sxx;
    tap_ok(rc == 0 && slope >= -0.6 && slope <= -0.4,
           "Gaussian: RMS relative error falls like Q^%.3f over Q = 1..256 (%.3g at Q = 1, %.3g "
           "at Q = 256)", slope, exp(le[0]), exp(le[N_Q - 1]));
    free_quad(&q);
}

/* A curved response for the antithetic comparison (on the affine quadratic a forward
   difference is already exact, so central differences cannot lower the variance there):
   g = ½‖y − x⊙x‖², f = ½‖y − t‖². T GD steps of size α from y0 give
   y_T = s·x⊙x + (1 − α)^T y0 with s = 1 − (1 − α)^T, so ITD = 2s·x⊙(y_T − t), while the
   forward difference adds μ s u⊙u to δ: noise that the pair x ± μu cancels. */
static const double CURVE_T[NX] = {1.0, -0.5, 0.25};

static bilo_tensor *curve_lower(bilo_tensor *const *x, bilo_tensor *const *y,
                                const bilo_batch *b, void *user)
{
    (void)b;
    (void)user;
    bilo_tensor *d = bilo_sub(y[0], bilo_mul(x[0], x[0]));
    return bilo_mul_scalar(bilo_dot(d, d), 0.5);
}

static bilo_tensor *curve_upper(bilo_tensor *const *x, bilo_tensor *const *y,
                                const bilo_batch *b, void *user)
{
    (void)x;
    (void)b;
    bilo_tensor *d = bilo_sub(y[0], (bilo_tensor *)user);
    return bilo_mul_scalar(bilo_dot(d, d), 0.5);
}

/* Mean squared error of n estimates (seeds 0..n-1) against the ITD closed form. */
static double curve_mse(const char *opts, int n)
{
    const double x0[NX] = {0.3, -0.2, 0.1}, alpha = 0.5;
    const int T = 4;
    bilo_scope_begin();
    bilo_tensor *t = bilo_from_data(BILO_F64, BILO_SHAPE(NX), CURVE_T);
    bilo_tensor *x = bilo_from_data(BILO_F64, BILO_SHAPE(NX), x0);
    bilo_tensor *y = bilo_zeros(BILO_F64, BILO_SHAPE(NX));
    bilo_problem p = {.x = &x, .n_x = 1, .y = &y, .n_y = 1, .lower = curve_lower,
                      .upper = curve_upper, .user = t};
    double s = 1 - pow(1 - alpha, T), want[NX], mse = 0;
    for (int j = 0; j < NX; j++) want[j] = 2 * s * x0[j] * (s * x0[j] * x0[j] - CURVE_T[j]);
    for (int k = 0; k < n; k++) {
        char full[160];
        snprintf(full, sizeof full, "T=%d,lr=%g,directions=gaussian,mu=0.5,threads=1,seed=%d,%s", T,
                 alpha, k, opts);
        bilo_estimator *e = bilo_estimator_new("esj", &p, full);
        bilo_tensor *g = NULL;
        if (!e || bilo_estimator_hypergradient(e, &x, &y, &g) < 0) {
            tap_diag("%s: %s", full, bilo_last_error());
            mse = NAN;
        }
        for (int j = 0; g && j < NX; j++) {
            double d = bilo_get_flat(g, j) - want[j];
            mse += d * d / n;
        }
        bilo_estimator_free(e);
    }
    bilo_scope_end();
    return mse;
}

static void test_antithetic(void)
{
    bilo_cost plain_cost, pair_cost;
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    double g[NX];
    int rc = estimate(&q, "esj", "T=3,directions=gaussian,Q=4", g, &plain_cost);
    if (rc == 0) rc = estimate(&q, "esj", "T=3,directions=gaussian,Q=2,antithetic=1", g, &pair_cost);
    free_quad(&q);
    tap_ok(rc == 0 && plain_cost.g_grads == pair_cost.g_grads && plain_cost.g_grads == 15,
           "Q = 4 plain and 2 antithetic pairs cost the same: 5 paths x 3 steps (%lld, %lld)",
           (long long)plain_cost.g_grads, (long long)pair_cost.g_grads);
    double plain = curve_mse("Q=4", 200), pairs = curve_mse("Q=2,antithetic=1", 200);
    tap_ok(pairs < 0.5 * plain, "curved response, mu = 0.5: 2 antithetic pairs have mean squared "
           "error %.3g < plain Q = 4's %.3g (ratio %.3f)", pairs, plain, pairs / plain);
}

/* ---- steps: warm start or reset, and no persistent change from a hypergradient ------- */

/* Two outer SGD steps (lr 0.1) with coordinate directions: step k's x moves by the closed-form
   ITD gradient from the y it started at, and y becomes the base run's y_T (warm start) or
   T steps from the initial y at the current x (reset). */
static void test_steps(const char *name, bool reset)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    vars v;
    make_vars(&v, &q, XP, Y_START);
    bilo_estimator *e = bilo_estimator_new(name, &v.p, "T=5,optim=sgd,lr=0.2,momentum=0,"
                                           "directions=coordinate,mu=0.5");
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.1}, v.x, 1);
    double x[NX], y[NY], g[NX], got_x[NX], got_y[NY];
    memcpy(x, XP, sizeof x);
    memcpy(y, Y_START, sizeof y);
    int rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++) {
        itd_closed_form(&q, x, reset ? Y_START : y, 5, 0.2, g);
        gd_path(&q, x, reset ? Y_START : y, 5, 0.2, y);
        for (int j = 0; j < NX; j++) x[j] -= 0.1 * g[j];
        rc = bilo_estimator_step(e, outer);
    }
    read_list(v.x, 1, got_x);
    read_list(v.y, 1, got_y);
    double ex = rel_diff(got_x, x, NX), ey = rel_diff(got_y, y, NY);
    tap_ok(rc == 0 && ex < 1e-12 && ey < 1e-12, "%s (reset = %d): after 2 steps x follows the "
           "ITD closed form (%.2g) and y is the base run's y_T (%.2g)", name, reset, ex, ey);

    bilo_tensor *g1 = NULL, *g2 = NULL;
    bilo_scope_begin();
    if (rc == 0) rc = bilo_estimator_hypergradient(e, v.x, v.y, &g1);
    if (rc == 0) rc = bilo_estimator_hypergradient(e, v.x, v.y, &g2);
    double a[NX], b[NX], y_after[NY];
    if (rc == 0) {
        read_list(&g1, 1, a);
        read_list(&g2, 1, b);
    }
    read_list(v.y, 1, y_after);
    bilo_scope_end();
    tap_ok(rc == 0 && !memcmp(a, b, sizeof a) && !memcmp(y_after, got_y, sizeof y_after),
           "%s: hypergradient calls repeat bit for bit and leave y alone", name);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
}

/* ---- 3. determinism across thread counts ----------------------------------------------- */

/* Two outer steps (warm start) then a hypergradient; x, y and the gradient into out. */
static int two_steps(quad *q, const char *opts, double *out)
{
    vars v;
    make_vars(&v, q, XP, Y_START);
    bilo_estimator *e = bilo_estimator_new("esj-s", &v.p, opts);
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.1}, v.x, v.p.n_x);
    int rc = e && outer ? 0 : bilo_errcode();
    for (int s = 0; s < 2 && rc == 0; s++) rc = bilo_estimator_step(e, outer);
    bilo_tensor *g[2];
    bilo_scope_begin();
    if (rc == 0) rc = bilo_estimator_hypergradient(e, v.x, v.y, g);
    if (rc == 0) {
        read_list(v.x, v.p.n_x, out);
        read_list(v.y, v.p.n_y, out + NX);
        read_list(g, v.p.n_x, out + NX + NY);
    }
    bilo_scope_end();
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);
    return rc;
}

static void test_threads(void)
{
    quad q;
    make_quad(&q, LAMBDA, 2, 2);
    double a[2 * NX + NY], b[2 * NX + NY], c[2 * NX + NY], d[2 * NX + NY];
    const char *base = "T=6,Q=5,directions=gaussian,antithetic=1,seed=9";
    char o1[128], o2[128];
    snprintf(o1, sizeof o1, "%s,threads=1", base);
    snprintf(o2, sizeof o2, "%s,threads=2", base);
    int rc = two_steps(&q, o1, a);
    if (rc == 0) rc = two_steps(&q, o2, b);
    tap_ok(rc == 0 && !memcmp(a, b, sizeof a), "threads=1 and threads=2: x, y and the "
           "hypergradient are bit-identical after 2 steps");
    int saved = bilo_get_num_threads();
    bilo_set_num_threads(1);
    if (rc == 0) rc = two_steps(&q, base, c);
    bilo_set_num_threads(2);
    if (rc == 0) rc = two_steps(&q, base, d);
    bilo_set_num_threads(saved);
    tap_ok(rc == 0 && !memcmp(c, d, sizeof c) && !memcmp(a, c, sizeof a),
           "threads=0 under bilo_set_num_threads(1) and (2): bit-identical too");
    snprintf(o1, sizeof o1, "%s,threads=2,seed=10", base);
    if (rc == 0) rc = two_steps(&q, o1, c);
    tap_ok(rc == 0 && memcmp(a, c, sizeof a), "another seed gives other directions");
    free_quad(&q);
}

/* ---- 4. memory does not grow with T ---------------------------------------------------- */

static size_t peak_of(quad *q, const char *name, const char *opts)
{
    double g[NX];
    bilo_cost cost = {0};
    return estimate(q, name, opts, g, &cost) == 0 ? cost.peak_bytes : 0;
}

static void test_memory(void)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    size_t es10 = peak_of(&q, "esj", "T=10,lr=0.2,Q=4,threads=1");
    size_t es1000 = peak_of(&q, "esj", "T=1000,lr=0.2,Q=4,threads=1");
    size_t par10 = peak_of(&q, "pzobo", "T=10,Q=4,threads=2");
    size_t par1000 = peak_of(&q, "pzobo", "T=1000,Q=4,threads=2");
    /* ITD at T = 200 (its T = 1000 run takes seconds): the growth is already clear. */
    size_t itd10 = peak_of(&q, "itd", "T=10,lr=0.2");
    size_t itd200 = peak_of(&q, "itd", "T=200,lr=0.2");
    tap_ok(es10 > 0 && es10 == es1000, "ESJ peak bytes, 1 thread: T = 10 %zu, T = 1000 %zu",
           es10, es1000);
    /* Two threads interleave their steps' temporaries: the peak is the persistent part plus
       at most one step's temporaries per thread, so at most twice a run's that held one. */
    tap_ok(par10 > 0 && par1000 <= 2 * par10, "PZOBO peak bytes, 2 threads: T = 10 %zu, "
           "T = 1000 %zu", par10, par1000);
    tap_ok(itd10 > 0 && itd200 > 10 * itd10, "ITD's peak grows with T: T = 10 %zu, T = 200 %zu",
           itd10, itd200);
    free_quad(&q);
}

/* ---- 5. cost counters ------------------------------------------------------------------ */

static void check_costs(quad *q, const char *opts, int64_t paths, int T)
{
    double g[NX];
    bilo_cost c = {0};
    int rc = estimate(q, "esj", opts, g, &c);
    tap_ok(rc == 0 && c.hvps == 0 && c.f_grads == 1 && c.g_grads == paths * T &&
           c.inner_iters == paths * T, "%s: hvps %lld, f grads %lld, g grads = inner iters = "
           "%lld (%lld paths x %d)", opts, (long long)c.hvps, (long long)c.f_grads,
           (long long)c.g_grads, (long long)paths, T);
}

static void test_costs(void)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    check_costs(&q, "T=7,Q=3", 4, 7);
    check_costs(&q, "T=7,Q=3,antithetic=1", 7, 7);
    check_costs(&q, "T=2,directions=coordinate", 1 + NX, 2);
    check_costs(&q, "T=2,directions=coordinate,antithetic=1", 1 + 2 * NX, 2);

    vars v;
    make_vars(&v, &q, XP, Y_START);
    bilo_estimator *e = bilo_estimator_new("pzobo", &v.p, "T=5,Q=2");
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.1}, v.x, 1);
    int rc = bilo_estimator_step(e, outer);
    if (rc == 0) rc = bilo_estimator_step(e, outer);
    bilo_cost last, total;
    bilo_estimator_report(e, &last, &total);
    tap_ok(rc == 0 && last.g_grads == 15 && total.g_grads == 30 && total.f_grads == 2 &&
           total.hvps == 0 && total.steps == 2, "pzobo steps: 15 g grads each, 2 f grads, "
           "no HVP (total g %lld, f %lld, hvps %lld)", (long long)total.g_grads,
           (long long)total.f_grads, (long long)total.hvps);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
}

/* ---- 6. minibatches: every path sees the same sequence --------------------------------- */

/* The quadratic plus a batch-dependent linear term: g + s·⟨y, mean of the batch rows⟩. Its
   Jacobian is still the closed form, but y_T depends on the batches, so a path drawing its
   own batches would be off by s·(batch difference)/μ. */
typedef struct {
    quad q;
    double scale;
} batched;

static bilo_tensor *batched_lower(bilo_tensor *const *x, bilo_tensor *const *y,
                                  const bilo_batch *b, void *user)
{
    batched *bq = user;
    bilo_tensor *shift = bilo_mul_scalar(bilo_mean(b->x, 0, false), bq->scale);
    return bilo_add(lower(x, y, NULL, &bq->q), bilo_dot(joined(y, bq->q.n_y), shift));
}

static bilo_tensor *batched_upper(bilo_tensor *const *x, bilo_tensor *const *y,
                                  const bilo_batch *b, void *user)
{
    return upper(x, y, b, &((batched *)user)->q);
}

static void test_minibatches(void)
{
    batched bq = {.scale = 1.0};
    make_quad(&bq.q, LAMBDA, 1, 1);
    vars v;
    make_vars(&v, &bq.q, XP, Y_START);
    bilo_scope_begin(); /* owns rows and the hypergradients */
    bilo_rng rng = bilo_rng_make(21, 0);
    bilo_tensor *rows = bilo_randn(BILO_F64, BILO_SHAPE(16, NY), &rng);
    bilo_batcher *data = bilo_batcher_new(rows, NULL, &(bilo_batcher_opts){.batch_size = 3,
                                                                           .seed = 5});
    v.p.lower = batched_lower;
    v.p.upper = batched_upper;
    v.p.user = &bq;
    v.p.lower_data = data;
    const char *opts = "T=7,optim=sgd,lr=0.2,directions=coordinate,mu=0.01,threads=2";
    bilo_estimator *es = bilo_estimator_new("esj-s", &v.p, opts);
    bilo_estimator *itd = bilo_estimator_new("itd", &v.p, "T=7,lr=0.2");
    bilo_batcher_state before, after;
    bilo_tensor *g_es = NULL, *g_itd = NULL;
    int rc = bilo_batcher_get_state(data, &before);
    if (rc == 0) rc = bilo_estimator_hypergradient(es, v.x, v.y, &g_es);
    if (rc == 0) rc = bilo_batcher_get_state(data, &after);
    if (rc == 0) rc = bilo_batcher_set_state(data, &before);
    if (rc == 0) rc = bilo_estimator_hypergradient(itd, v.x, v.y, &g_itd);
    if (rc < 0) tap_diag("%s", bilo_last_error());
    double got[NX], want[NX];
    if (rc == 0) {
        read_list(&g_es, 1, got);
        read_list(&g_itd, 1, want);
    }
    int64_t drawn = (after.epoch - before.epoch) * bilo_batcher_num_batches(data) + after.step -
                    before.step;
    tap_ok(rc == 0 && drawn == 7, "ESJ-S draws T = 7 batches per estimate, shared by its %d "
           "paths (drew %lld)", 1 + NX, (long long)drawn);
    double err = rc == 0 ? rel_diff(got, want, NX) : INFINITY;
    tap_ok(err < 1e-9, "ESJ-S coordinate mode = ITD on the same batch sequence (rel err %.2g)",
           err);
    bilo_estimator_free(es);
    bilo_estimator_free(itd);
    bilo_batcher_free(data);
    bilo_scope_end();
    free_vars(&v);
    free_quad(&bq.q);
}

/* ---- 7. outer convergence -------------------------------------------------------------- */

/* ‖∇Φ(x)‖ after `steps` outer SGD steps (lr 0.5, decayed as 0.5/(1 + k/decay) when decay > 0)
   from x = 0, y = 0 with the given ESJ options (warm start). */
static double outer_run(const char *opts, int steps, double decay)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    double zero[NY] = {0}, x[NX], g[NX];
    vars v;
    make_vars(&v, &q, zero, zero);
    bilo_estimator *e = bilo_estimator_new("esj-s", &v.p, opts);
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.5}, v.x, 1);
    int rc = e ? 0 : -1;
    for (int k = 0; k < steps && rc == 0; k++) {
        if (decay > 0) bilo_optim_set_lr(outer, 0.5 / (1 + k / decay));
        rc = bilo_estimator_step(e, outer);
    }
    if (rc < 0) tap_diag("%s: %s", opts, bilo_last_error());
    read_list(v.x, 1, x);
    grad_phi(&q, x, g);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
    return rc == 0 ? norm(g, NX) : INFINITY;
}

static void test_outer(void)
{
    /* The fixed point has ĝ = 0, which differs from ∇Φ by (J* − J_T)ᵀ∇_y f, |J* − J_T| ≤
       0.6^T for α = 0.4 on the spectrum [1, 4]: 5e-5 at T = 20. */
    double gn = outer_run("optim=sgd,T=20,lr=0.4,directions=coordinate,threads=1", 150, 0);
    tap_ok(gn < 1e-3, "coordinate ESJ, T = 20, 150 outer steps: |grad Phi| = %.2g", gn);
    /* Budget: 300 outer steps of Q = 4 Gaussian directions (5 paths x T = 20 inner steps, so
       30000 gradients of g per run), outer lr 0.5/(1 + k/3); mean over 4 seeds. */
    double mean = 0;
    for (int s = 0; s < 4; s++) {
        char opts[128];
        snprintf(opts, sizeof opts, "optim=sgd,T=20,lr=0.4,directions=gaussian,Q=4,threads=1,"
                 "seed=%d", s);
        mean += outer_run(opts, 300, 3) / 4;
    }
    tap_ok(mean < 1e-2, "Gaussian ESJ, Q = 4, 300 decayed outer steps: mean |grad Phi| = %.2g "
           "over 4 seeds", mean);
}

/* ---- 8. errors ------------------------------------------------------------------------- */

static void expect_rejected(const char *name, const char *opts, const char *needle)
{
    quad_expect_rejected(name, opts, LAMBDA, needle);
}

/* Fails (a shape error) when x's last element exceeds 1: only the path at x + μe_3. */
static bilo_tensor *picky_lower(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                                void *user)
{
    quad *q = user;
    if (bilo_get_flat(x[0], NX - 1) > 1) return bilo_matmul(q->tB, q->tB);
    return lower(x, y, b, user);
}

static void test_errors(void)
{
    expect_rejected("esj", "directions=foo", "bad value 'foo'");
    expect_rejected("pzobo", "Q=-2", "bad value '-2'");
    expect_rejected("esj-s", "sigma=1", "unknown option 'sigma'");
    expect_rejected("pzobo-s", "tol=1e-3", "tol = 0.001");
    expect_rejected("esj", "Q=2000000", "Q = 2000000");
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    vars v;
    make_vars(&v, &q, XP, Y_START);
    bilo_clear_error();
    bilo_estimator *e = bilo_esj_new(&v.p, &(bilo_es_opts){.mu = -1});
    check_error(!e, BILO_EINVAL, "mu = -1", "bilo_esj_new: mu = -1 is rejected");
    e = bilo_esj_new(&v.p, &(bilo_es_opts){.directions = (bilo_directions)7});
    check_error(!e, BILO_EINVAL, "directions = 7", "bilo_esj_new: directions = 7 is rejected");

    bilo_mem_stats start, end;
    bilo_mem_get_stats(&start);
    v.p.lower = picky_lower;
    e = bilo_estimator_new("esj", &v.p, "T=4,lr=0.2,directions=coordinate,mu=1,threads=2");
    bilo_tensor *g = NULL;
    int rc = bilo_estimator_hypergradient(e, v.x, v.y, &g);
    tap_ok(rc == BILO_ESHAPE && g == NULL && strstr(bilo_last_error(), "lower loss g callback") &&
           strstr(bilo_last_error(), "bilo_matmul"), "a callback failing in one parallel path "
           "is reported on the caller: %s", bilo_last_error());
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.1}, v.x, 1);
    double before[NX], after[NX];
    read_list(v.x, 1, before);
    rc = bilo_estimator_step(e, outer);
    read_list(v.x, 1, after);
    tap_ok(rc == BILO_ESHAPE && !memcmp(before, after, sizeof before),
           "the failed step leaves x unchanged");
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    bilo_clear_error();
    bilo_mem_get_stats(&end);
    tap_ok(end.live_bytes == start.live_bytes, "no leak after the failures: live bytes %zu -> %zu",
           start.live_bytes, end.live_bytes);
    free_vars(&v);
    free_quad(&q);
}

static void test_names(void)
{
    const char *want[] = {"esj", "esj-s", "pzobo", "pzobo-s"};
    int found = 0;
    for (int i = 0; bilo_estimator_method_name(i); i++)
        for (int k = 0; k < 4; k++) found += !strcmp(bilo_estimator_method_name(i), want[k]);
    tap_ok(found == 4, "esj, esj-s, pzobo and pzobo-s are listed by name");
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    vars v;
    make_vars(&v, &q, XP, Y_START);
    bilo_estimator *e = bilo_estimator_new("pzobo", &v.p, NULL);
    tap_ok(e && !strcmp(bilo_estimator_name(e), "pzobo"), "the estimator reports its preset name");
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
}

int main(void)
{
    bilo_mem_stats start, end;
    bilo_mem_get_stats(&start);
    test_coordinate_exact(1, 1);
    test_coordinate_exact(2, 2);
    test_gaussian_mean();
    test_gaussian_slope();
    test_sphere();
    test_antithetic();
    test_steps("esj-s", false);
    test_steps("esj", true);
    test_threads();
    test_memory();
    test_costs();
    test_minibatches();
    test_outer();
    test_errors();
    test_names();
    bilo_mem_get_stats(&end);
    tap_ok(end.live_bytes == start.live_bytes, "no leaks: live bytes %zu -> %zu",
           start.live_bytes, end.live_bytes);
    return tap_done();
}
