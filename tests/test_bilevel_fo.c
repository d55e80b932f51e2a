/* BOME and F2SA, the first-order estimators, on the closed-form quadratic of
   bilevel_quadratic.h (g = ½yᵀAy − yᵀBx − cᵀy, f = ½‖y − y₀‖² + ½xᵀDx + eᵀx) and on BOME's
   coreset toy: the λ identity of every BOME step, the coreset optimum, F2SA's O(1/λ) bias
   in closed form, cost counters, convergence, memory flat in T, checkpoint/resume, errors. */
#include <stdio.h>

#include "bilevel_quadratic.h"

static const double LAMBDA[NY] = {1, 2, 3, 4};

/* ---- the quadratic's pieces in plain doubles ---- */

/* ∇_y g = Ay − Bx − c */
static void grad_gy(const quad *q, const double *x, const double *y, double *out)
{
    for (int i = 0; i < NY; i++) {
        out[i] = -q->c[i];
        for (int k = 0; k < NY; k++) out[i] += q->A[i * NY + k] * y[k];
        for (int j = 0; j < NX; j++) out[i] -= q->B[i * NX + j] * x[j];
    }
}

static double g_value(const quad *q, const double *x, const double *y)
{
    double s = 0;
    for (int i = 0; i < NY; i++) {
        double ay = 0, bx = 0;
        for (int k = 0; k < NY; k++) ay += q->A[i * NY + k] * y[k];
        for (int j = 0; j < NX; j++) bx += q->B[i * NX + j] * x[j];
        s += y[i] * (0.5 * ay - bx - q->c[i]);
    }
    return s;
}

/* out = Bᵀv */
static void bt(const quad *q, const double *v, double *out)
{
    for (int j = 0; j < NX; j++) {
        out[j] = 0;
        for (int i = 0; i < NY; i++) out[j] += q->B[i * NX + j] * v[i];
    }
}

static double dot(const double *a, const double *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static double dist(const double *a, const double *b, int n)
{
    double d[NX + NY];
    for (int i = 0; i < n; i++) d[i] = a[i] - b[i];
    return norm(d, n);
}

/* A fresh estimator by name on the quad's shapes, at x0 and y0 (which v then holds). */
static bilo_estimator *make_named(vars *v, quad *q, const double *x0, const double *y0,
                                  const char *name, const char *opts)
{
    make_vars(v, q, x0, y0);
    bilo_estimator *e = bilo_estimator_new(name, &v->p, opts);
    if (!e) tap_diag("%s(%s): %s", name, opts, bilo_last_error());
    return e;
}

/* The estimator's hypergradient at v's (x, y), flattened into out; 0 or a code. */
static int hypergradient_at(bilo_estimator *e, vars *v, double *out)
{
    bilo_tensor *g[2];
    bilo_scope_begin();
    int rc = bilo_estimator_hypergradient(e, v->x, v->y, g);
    if (rc == 0) read_list(g, v->p.n_x, out);
    bilo_scope_end();
    return rc;
}

/* ---- 1. BOME's λ identity at every step ---------------------------------------------- */

/* The direction d = (d_x, d_y) of one BOME step is recovered from the estimator: d_x is its
   hypergradient at the step's point, d_y = (y_before − y_after)/y_lr. ∇f, ∇q and φ come from
   the closed form with ŷ = 3 gradient steps of size 0.1 from y (the run's options). The gap
   |⟨d, ∇q⟩ − φ| is measured against the size of the identity's terms, |φ| + |∇f||∇q|. */
typedef struct {
    int active, inactive;
    double worst_identity, worst_inactive;
} identity_stats;

static void check_identity_step(const quad *q, bool value_phi, const double *x,
                                const double *y, const double *d, identity_stats *s)
{
    enum { T = 3 };
    const double lr = 0.1, eta = 0.5;
    double yhat[NY], gy[NY], gq[NX + NY], gf[NX + NY], r[NY], diff[NY];
    memcpy(yhat, y, sizeof yhat);
    for (int t = 0; t < T; t++) {
        grad_gy(q, x, yhat, r);
        for (int i = 0; i < NY; i++) yhat[i] -= lr * r[i];
    }
    grad_gy(q, x, y, gy);
    for (int i = 0; i < NY; i++) diff[i] = yhat[i] - y[i]; /* ∇_x q = −Bᵀy + Bᵀŷ */
    bt(q, diff, gq);
    memcpy(gq + NX, gy, sizeof gy);
    for (int j = 0; j < NX; j++) {
        gf[j] = q->e[j];
        for (int k = 0; k < NX; k++) gf[j] += q->D[j * NX + k] * x[k];
    }
    for (int i = 0; i < NY; i++) gf[NX + i] = y[i] - q->y0[i];
    double qq = dot(gq, gq, NX + NY), fq = dot(gf, gq, NX + NY);
    double phi = eta * (value_phi ? g_value(q, x, y) - g_value(q, x, yhat) : qq);
    double scale = fabs(phi) + norm(gf, NX + NY) * sqrt(qq);
    if (phi - fq > 0) {
        s->active++;
        s->worst_identity = fmax(s->worst_identity, fabs(dot(d, gq, NX + NY) - phi) / scale);
    } else {
        s->inactive++; /* λ = 0: d = ∇f */
        s->worst_inactive = fmax(s->worst_inactive, dist(d, gf, NX + NY) / norm(gf, NX + NY));
    }
}

static void test_lambda_identity(bool value_phi)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    const double y_start[NY] = {0.5, -1.0, 2.0, 0.0}, y_lr = 0.1;
    vars v;
    bilo_estimator *e = make_named(&v, &q, XP, y_start, "bome",
                                   value_phi ? "T=3,lr=0.1,y_lr=0.1,eta=0.5,phi=value"
                                             : "T=3,lr=0.1,y_lr=0.1,eta=0.5,phi=grad_norm");
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.1}, v.x, 1);
    identity_stats s = {0};
    int rc = e && outer ? 0 : -1;
    for (int step = 0; step < 60 && rc == 0; step++) {
        double x[NX], y[NY], y_after[NY], d[NX + NY];
        read_list(v.x, 1, x);
        read_list(v.y, 1, y);
        rc = hypergradient_at(e, &v, d);
        if (rc == 0) rc = bilo_estimator_step(e, outer);
        read_list(v.y, 1, y_after);
        for (int i = 0; i < NY; i++) d[NX + i] = (y[i] - y_after[i]) / y_lr;
        check_identity_step(&q, value_phi, x, y, d, &s);
    }
    const char *name = value_phi ? "phi = eta*q" : "phi = eta*|grad q|^2";
    tap_ok(rc == 0 && s.active > 0 && s.worst_identity < 1e-10,
           "BOME %s: <grad f + lambda grad q, grad q> = phi at all %d steps with lambda > 0 "
           "(worst relative gap %.2g)", name, s.active, s.worst_identity);
    tap_ok(rc == 0 && s.worst_inactive < 1e-10,
           "BOME %s: <grad f, grad q> >= phi and d = grad f at the %d steps with lambda = 0 "
           "(worst %.2g)", name, s.inactive, s.worst_inactive);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
}

/* x and y split into two tensors each give BOME the same direction as one tensor each. */
static void test_bome_split(void)
{
    const double y_start[NY] = {0.5, -1.0, 2.0, 0.0};
    double d[2][NX];
    int rc = 0;
    for (int split = 0; split < 2; split++) {
        quad q;
        make_quad(&q, LAMBDA, 1 + split, 1 + split);
        vars v;
        bilo_estimator *e = make_named(&v, &q, XP, y_start, "bome", "T=3,phi=value");
        rc |= e ? hypergradient_at(e, &v, d[split]) : -1;
        bilo_estimator_free(e);
        free_vars(&v);
        free_quad(&q);
    }
    tap_ok(rc == 0 && dist(d[0], d[1], NX) <= 1e-14 * norm(d[0], NX),
           "BOME: two x ([2], [1,1]) and two y ([2,1], [2]) give the same direction (%.2g)",
           dist(d[0], d[1], NX));
}

/* ---- 2. BOME's coreset toy (notes §B5) ----------------------------------------------- */
/* outer w ∈ R⁴, inner point p ∈ R²: g = ‖Σ softmax(w)_i c_i − p‖², f = 0.1‖p − (3, −2)‖².
   inf f = 0.72 at p = (1.8, 0.4), 0.8·(3, 1) + 0.2·(−3, −2) on the hull's edge. */

static const double CORESET[8] = {1, 3, 3, 1, -2, 2, -3, -2};
static const double TARGET[2] = {3, -2};

typedef struct {
    bilo_tensor *c, *target;
} coreset;

static bilo_tensor *coreset_lower(bilo_tensor *const *w, bilo_tensor *const *p,
                                  const bilo_batch *b, void *user)
{
    (void)b;
    coreset *cs = user;
    bilo_tensor *s = bilo_reshape(bilo_softmax(w[0], 0), BILO_SHAPE(1, 4));
    bilo_tensor *d = bilo_sub(bilo_flatten(bilo_matmul(s, cs->c)), p[0]);
    return bilo_dot(d, d);
}

static bilo_tensor *coreset_upper(bilo_tensor *const *w, bilo_tensor *const *p,
                                  const bilo_batch *b, void *user)
{
    (void)w;
    (void)b;
    coreset *cs = user;
    bilo_tensor *d = bilo_sub(p[0], cs->target);
    return bilo_mul_scalar(bilo_dot(d, d), 0.1);
}

static void test_coreset(void)
{
    enum { STEPS = 5000 };
    coreset cs = {bilo_from_data(BILO_F64, BILO_SHAPE(4, 2), CORESET),
                  bilo_from_data(BILO_F64, BILO_SHAPE(2), TARGET)};
    bilo_tensor *w = bilo_zeros(BILO_F64, BILO_SHAPE(4));
    bilo_tensor *p = bilo_from_data(BILO_F64, BILO_SHAPE(2), (double[]){0, 3});
    bilo_problem prob = {.x = &w, .n_x = 1, .y = &p, .n_y = 1, .lower = coreset_lower,
                         .upper = coreset_upper, .user = &cs};
    /* the authors' toy: T = 10, every step size 0.05, η = 0.5, φ = η(‖∇q‖² + 1e-4) */
    bilo_estimator *e =
        bilo_estimator_new("bome", &prob, "T=10,lr=0.05,y_lr=0.05,eta=0.5,eps=1e-4");
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.05}, &w, 1);
    int rc = e && outer ? 0 : -1;
    for (int s = 0; s < STEPS && rc == 0; s++) rc = bilo_estimator_step(e, outer);
    double mix[2] = {0, 0}, z = 0, wmax = -INFINITY; /* p*(w) = Σ softmax(w)_i c_i */
    for (int i = 0; i < 4; i++) wmax = fmax(wmax, bilo_get_flat(w, i));
    for (int i = 0; i < 4; i++) z += exp(bilo_get_flat(w, i) - wmax);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 2; k++)
            mix[k] += exp(bilo_get_flat(w, i) - wmax) / z * CORESET[2 * i + k];
    const double *pt = bilo_data(p), opt[2] = {1.8, 0.4};
    double f = 0.1 * dist(pt, TARGET, 2) * dist(pt, TARGET, 2);
    double phi = 0.1 * dist(mix, TARGET, 2) * dist(mix, TARGET, 2);
    tap_ok(rc == 0 && fabs(phi - 0.72) < 0.01 && dist(pt, opt, 2) < 0.05,
           "BOME coreset toy, %d steps: Phi(w) = f(p*(w)) = %.5f (inf 0.72), p = (%.4f, %.4f) "
           "(optimum (1.8, 0.4)), f(p) = %.5f, |p - p*(w)| = %.3g", STEPS, phi, pt[0], pt[1],
           f, dist(pt, mix, 2));
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    bilo_release(w);
    bilo_release(p);
    bilo_release(cs.c);
    bilo_release(cs.target);
}

/* ---- 3. F2SA's bias against ∇Φ ------------------------------------------------------- */
/* With y solved on f + λg, y_λ − y* = (I + λA)⁻¹(y₀ − y*), and the F2SA direction minus ∇Φ
   is −BᵀA⁻¹(I + λA)⁻¹(y* − y₀): O(1/λ). z starts at y* and stays there. */
static double f2sa_bias_closed_form(const quad *q, double lambda)
{
    double ys[NY], d[NY], m[NY * NY], w[NY], u[NY], out[NX];
    y_star(q, XP, ys);
    for (int i = 0; i < NY; i++) d[i] = ys[i] - q->y0[i];
    for (int i = 0; i < NY * NY; i++) m[i] = lambda * q->A[i] + (i % (NY + 1) == 0);
    solve(m, NY, d, w);
    solve(q->A, NY, w, u);
    bt(q, u, out);
    return norm(out, NX);
}

static double f2sa_bias(quad *q, double lambda)
{
    double ys[NY], want[NX], got[NX];
    y_star(q, XP, ys);
    grad_phi(q, XP, want);
    char opts[128];
    /* step 1/(1 + 4λ) (4 = λ_max(A)): y contracts by ≤ 0.75 a step, 200 steps converge */
    snprintf(opts, sizeof opts, "T=200,lr=%.17g,lambda0=%g,fixed_lambda=1", 1 / (1 + 4 * lambda),
             lambda);
    vars v;
    bilo_estimator *e = make_named(&v, q, XP, ys, "f2sa", opts);
    int rc = e ? hypergradient_at(e, &v, got) : -1;
    bilo_estimator_free(e);
    free_vars(&v);
    return rc == 0 ? dist(got, want, NX) : -1;
}

static void test_f2sa_bias(void)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    const double lambdas[3] = {1, 10, 100};
    double err[3];
    for (int k = 0; k < 3; k++) {
        err[k] = f2sa_bias(&q, lambdas[k]);
        double want = f2sa_bias_closed_form(&q, lambdas[k]);
        tap_ok(err[k] > 0 && fabs(err[k] - want) <= 1e-10 * want,
               "F2SA lambda = %g: |direction - grad Phi| = %.6g matches the closed form %.6g",
               lambdas[k], err[k], want);
    }
    double r1 = err[0] / err[1], r2 = err[1] / err[2];
    tap_ok(r1 >= 5 && r1 <= 20 && r2 >= 5 && r2 <= 20,
           "F2SA bias shrinks like 1/lambda: ratios %.3f (1 -> 10) and %.3f (10 -> 100)", r1, r2);
    tap_ok(fabs(10 * err[1] / (100 * err[2]) - 1) < 0.1,
           "lambda * bias levels off: %.4g, %.4g, %.4g", err[0], 10 * err[1], 100 * err[2]);
    free_quad(&q);

    make_quad(&q, LAMBDA, 2, 2);
    double split = f2sa_bias(&q, 10);
    tap_ok(fabs(split - err[1]) <= 1e-12 * err[1],
           "two x ([2], [1,1]) and two y ([2,1], [2]): the same bias (%.6g)", split);
    free_quad(&q);
}

/* ---- 4. cost counters ------------------------------------------------------------- */

static void expect_costs(const char *name, const char *opts, int64_t f, int64_t g, int64_t it,
                         const char *formula)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    const double zero[NY] = {0};
    vars v;
    bilo_estimator *e = make_named(&v, &q, XP, zero, name, opts);
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.1}, v.x, 1);
    double grad[NX];
    bilo_cost step, hyper, total;
    int rc = e && outer ? bilo_estimator_step(e, outer) : -1;
    bilo_estimator_report(e, &step, NULL);
    if (rc == 0) rc = hypergradient_at(e, &v, grad);
    bilo_estimator_report(e, &hyper, &total);
    tap_ok(rc == 0 && step.f_grads == f && step.g_grads == g && step.inner_iters == it &&
               step.hvps == 0 && step.steps == 1,
           "%s %s: a step costs %s: f %lld, g %lld, inner %lld, HVPs %lld", name, opts, formula,
           (long long)step.f_grads, (long long)step.g_grads, (long long)step.inner_iters,
           (long long)step.hvps);
    tap_ok(hyper.f_grads == f && hyper.g_grads == g && hyper.hvps == 0 && hyper.steps == 0 &&
               total.f_grads == 2 * f && total.g_grads == 2 * g && total.hvps == 0,
           "%s: the hypergradient costs the same, totals add up, no HVP", name);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
}

/* inner.tol ends the T inner steps early; the iterations counted include the last check. */
static void expect_tol_stop(const char *name, const char *opts)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    double ys[NY], grad[NX];
    y_star(&q, XP, ys);
    for (int i = 0; i < NY; i++) ys[i] += 0.5; /* start half a unit off y* */
    vars v;
    bilo_estimator *e = make_named(&v, &q, XP, ys, name, opts);
    int rc = e ? hypergradient_at(e, &v, grad) : -1;
    bilo_cost last;
    bilo_estimator_report(e, &last, NULL);
    tap_ok(rc == 0 && last.inner_iters > 10 && last.inner_iters < 1000,
           "%s %s: tol stops the inner loop after %lld of 100000 iterations", name, opts,
           (long long)last.inner_iters);
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
}

static void test_costs(void)
{
    expect_costs("bome", "T=7", 1, 9, 7, "T + 3 gradients (g: T + 2, f: 1)");
    expect_costs("bome-hpo", "", 1, 12, 10, "T + 3 gradients (preset T = 10)");
    expect_costs("f2sa", "T=7", 8, 16, 7, "3T + 3 gradients (g: 2T + 2, f: T + 1)");
    expect_costs("f2sa", "", 11, 22, 10, "3T + 3 gradients (preset T = 10)");
    expect_tol_stop("bome", "T=100000,lr=0.2,tol=1e-8");
    expect_tol_stop("f2sa", "T=100000,lr=0.2,fixed_lambda=1,decay=0,tol=1e-8");
}

/* ---- 5. convergence on the quadratic ------------------------------------------------ */

/* SGD outer steps (lr) from x = 0, y = 0 for `budget` steps: the first step with
   |∇Φ(x)| < 1e-3 (-1 if none) and the largest |∇Φ| from then on. */
static int first_converged(const char *name, const char *opts, double lr, int budget,
                           double *worst_after)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    const double zero[NY] = {0};
    vars v;
    bilo_estimator *e = make_named(&v, &q, zero, zero, name, opts);
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = lr}, v.x, 1);
    int rc = e && outer ? 0 : -1, first = -1;
    *worst_after = 0;
    for (int s = 1; s <= budget && rc == 0; s++) {
        rc = bilo_estimator_step(e, outer);
        double x[NX], g[NX];
        read_list(v.x, 1, x);
        grad_phi(&q, x, g);
        if (first < 0 && norm(g, NX) < 1e-3) first = s;
        if (first > 0) *worst_after = fmax(*worst_after, norm(g, NX));
    }
    if (rc < 0) tap_diag("%s: %s", name, bilo_last_error());
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
    return rc == 0 ? first : -1;
}

static void test_convergence(void)
{
    /* BOME with a constant joint step does not settle: d = P∇f + η∇q projects out the one
       direction ∇q, which turns quickly as y − y* shrinks, so the iterates chatter in a band
       of width O(step·|∇f|) once they reach the solution. Budget: 1000 steps of T + 3 = 23
       gradients with y_lr 0.005 and outer lr 0.05; after the first step below 1e-3 the band
       stays under 3e-3. */
    double worst;
    int s = first_converged("bome", "T=20,lr=0.2,y_lr=0.005,eta=0.5", 0.05, 1000, &worst);
    tap_ok(s > 0 && worst < 3e-3,
           "BOME: |grad Phi| < 1e-3 first at step %d of 1000, then within %.3g", s, worst);
    /* F2SA's bias is 0.044/λ at its fixed point here, and the direction amplifies inner
       errors by λ: T = 30 steps of 0.2 (y's divided by λ, so they stay stable as λ grows by
       δ_t = 1/(t+1)^{1/7}), outer 0.3. Budget: 400 steps of 3T + 3 = 93 gradients. */
    s = first_converged("f2sa", "T=30,lr=0.2,delta=1,y_lr_over_lambda=1", 0.3, 400, &worst);
    tap_ok(s > 0 && s <= 150 && worst < 1e-3,
           "F2SA: |grad Phi| < 1e-3 from step %d on, through step 400 (largest %.3g)", s,
           worst);
}

/* ---- 6. memory does not grow with T ------------------------------------------------ */

/* Peak allocator bytes of the second step (the first one warms the allocator's caches). */
static size_t step_peak(const char *name, const char *opts)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    const double zero[NY] = {0};
    vars v;
    bilo_estimator *e = make_named(&v, &q, XP, zero, name, opts);
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.01}, v.x, 1);
    int rc = e && outer ? bilo_estimator_step(e, outer) : -1;
    if (rc == 0) rc = bilo_estimator_step(e, outer);
    bilo_cost last;
    bilo_estimator_report(e, &last, NULL);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
    return rc == 0 ? last.peak_bytes : 0;
}

static void test_memory(void)
{
    const char *names[2] = {"bome", "f2sa"};
    const char *opts[2][2] = {{"T=10,lr=0.1,momentum=0.5", "T=1000,lr=0.1,momentum=0.5"},
                              {"T=10,lr=0.05", "T=1000,lr=0.05"}};
    for (int m = 0; m < 2; m++) {
        size_t small = step_peak(names[m], opts[m][0]), large = step_peak(names[m], opts[m][1]);
        tap_ok(small > 0 && large == small,
               "%s: peak bytes of a step at T = 1000 (%zu) equal those at T = 10 (%zu)",
               names[m], large, small);
    }
}

/* ---- 7. checkpoint and resume --------------------------------------------------------- */

static char tmpdir[] = "/tmp/bilo_fo_XXXXXX";
static char ckpt[64];

static const bilo_optim_opts OUTER = {.lr = 0.1, .momentum = 0.5};

static void test_resume(const char *name, const char *opts)
{
    quad_check_resume(name, opts, LAMBDA, XP, &OUTER, ckpt);
}

/* The same steps at 1 and 2 kernel threads give bit-identical iterates. */
static void test_threads(const char *name, const char *opts)
{
    double x[2][NX], y[2][NY];
    int rc = 0, threads = bilo_get_num_threads();
    for (int k = 0; k < 2; k++) {
        bilo_set_num_threads(k + 1);
        rc |= quad_driver_run(name, opts, LAMBDA, XP, &OUTER, ckpt, 10, false, false, x[k], y[k]);
    }
    bilo_set_num_threads(threads);
    tap_ok(rc == 0 && !memcmp(x[0], x[1], sizeof x[0]) && !memcmp(y[0], y[1], sizeof y[0]),
           "%s: 10 steps at 1 and 2 threads are bit-identical", name);
}

/* ---- 8. errors --------------------------------------------------------------------------- */

static void expect_bad(const char *name, const char *opts, const char *needle)
{
    quad_expect_rejected(name, opts, LAMBDA, needle);
}

static void test_bad_options(void)
{
    expect_bad("bome", "phi=newton", "bad value 'newton' for option phi");
    expect_bad("bome", "eta=-1", "bad value '-1' for option eta");
    expect_bad("bome", "y_momentum=1", "y_momentum = 1");
    expect_bad("bome", "reset=1", "inner.reset");
    expect_bad("bome", "lambda0=2", "unknown option 'lambda0'");
    expect_bad("f2sa", "momentum=0.9", "momentum = 0.9");
    expect_bad("f2sa", "optim=adam", "plain gradient steps");
    expect_bad("f2sa", "delta=abc", "bad value 'abc' for option delta");
    expect_bad("f2sa", "phi=value", "unknown option 'phi'");

    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    const double zero[NY] = {0};
    vars v;
    make_vars(&v, &q, zero, zero);
    bilo_estimator *e = bilo_bome_new(&v.p, &(bilo_bome_opts){.eta = NAN});
    tap_ok(!e && bilo_errcode() == BILO_EINVAL && strstr(bilo_last_error(), "eta = nan"),
           "bilo_bome_new with eta = NaN: %s", bilo_last_error());
    e = bilo_bome_new(&v.p, &(bilo_bome_opts){.phi = (bilo_bome_phi)7});
    tap_ok(!e && strstr(bilo_last_error(), "phi = 7"), "bilo_bome_new with phi = 7: %s",
           bilo_last_error());
    e = bilo_f2sa_new(&v.p, &(bilo_f2sa_opts){.lambda0 = -2});
    tap_ok(!e && bilo_errcode() == BILO_EINVAL && strstr(bilo_last_error(), "lambda0 = -2"),
           "bilo_f2sa_new with lambda0 = -2: %s", bilo_last_error());
    free_vars(&v);
    free_quad(&q);
}

/* A NaN upper loss at step 3 fails with BILO_ENUMERIC and moves nothing: the next step
   lands where an estimator that never failed lands after its third step (F2SA without its
   schedules, which follow the step count, failed steps included). */
static void test_failed_step(const char *name, const char *opts)
{
    quad q;
    make_quad(&q, LAMBDA, 1, 1);
    const double zero[NY] = {0};
    double xa[NX], ya[NY], xb[NX], yb[NY], xf[NX], yf[NY];
    vars v;
    bilo_estimator *e = make_named(&v, &q, XP, zero, name, opts);
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.1}, v.x, 1);
    int rc = 0;
    for (int s = 0; s < 3 && rc == 0; s++) rc = bilo_estimator_step(e, outer);
    read_list(v.x, 1, xa);
    read_list(v.y, 1, ya);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);

    e = make_named(&v, &q, XP, zero, name, opts);
    outer = bilo_optim_new(&(bilo_optim_opts){.lr = 0.1}, v.x, 1);
    for (int s = 0; s < 2 && rc == 0; s++) rc = bilo_estimator_step(e, outer);
    read_list(v.x, 1, xb);
    read_list(v.y, 1, yb);
    q.nan_upper = true;
    int failed = bilo_estimator_step(e, outer);
    tap_ok(rc == 0 && failed == BILO_ENUMERIC && strstr(bilo_last_error(), "step 3"),
           "%s: a NaN upper loss at step 3 gives BILO_ENUMERIC: %s", name, bilo_last_error());
    read_list(v.x, 1, xf);
    read_list(v.y, 1, yf);
    bool untouched = !memcmp(xb, xf, sizeof xb) && !memcmp(yb, yf, sizeof yb);
    q.nan_upper = false;
    rc = bilo_estimator_step(e, outer);
    read_list(v.x, 1, xf);
    read_list(v.y, 1, yf);
    tap_ok(rc == 0 && untouched && !memcmp(xa, xf, sizeof xa) && !memcmp(ya, yf, sizeof ya),
           "%s: the failed step leaves x, y and the state as they were", name);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
}

int main(void)
{
    bilo_mem_stats start, end;
    bilo_mem_get_stats(&start);
    test_lambda_identity(false);
    test_lambda_identity(true);
    test_bome_split();
    test_coreset();
    test_f2sa_bias();
    test_costs();
    test_convergence();
    test_memory();
    if (mkdtemp(tmpdir)) {
        snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", tmpdir);
        test_resume("bome", "T=5,lr=0.1,y_lr=0.1,y_momentum=0.5");
        test_resume("f2sa", "T=5,lr=0.1,delta=1,decay=1,outer_lr=0.2,y_lr_over_lambda=1");
        remove(tmpdir);
    } else {
        tap_ok(0, "mkdtemp %s", tmpdir);
    }
    test_threads("bome", "T=5,lr=0.1,y_lr=0.1,y_momentum=0.5");
    test_threads("f2sa", "T=5,lr=0.1,delta=1,decay=1,outer_lr=0.2");
    test_bad_options();
    test_failed_step("bome", "T=5,lr=0.1,y_lr=0.1,y_momentum=0.5");
    test_failed_step("f2sa", "T=5,lr=0.1,fixed_lambda=1,lambda0=3,decay=0");
    bilo_mem_get_stats(&end);
    tap_ok(end.live_bytes == start.live_bytes, "no leaks: live bytes %zu -> %zu",
           start.live_bytes, end.live_bytes);
    return tap_done();
}
