/* The task catalog: registry and its errors, the synthetic tasks against closed forms of the
   tests' own and f64 central differences, reset, reproducible meta-learning episodes, and
   that every task frees what it allocates. */
#include <math.h>
#include <string.h>

#include "bilo.h"
#include "checks.h"

#define MAXN 64

static bilo_task *make(const char *name, const char *options, uint64_t seed)
{
    bilo_task *t = bilo_task_new(name, &(bilo_task_opts){.seed = seed, .options = options,
                                                          .dtype = BILO_F64});
    if (!t) tap_diag("bilo_task_new(%s, %s): %s", name, options ? options : "", bilo_last_error());
    return t;
}

static void read_flat(bilo_tensor *t, double *out)
{
    for (int64_t i = 0; i < bilo_numel(t); i++) out[i] = bilo_get_flat(t, i);
}

static void write_flat(bilo_tensor *t, const double *v)
{
    for (int64_t i = 0; i < bilo_numel(t); i++) bilo_set_flat(t, i, v[i]);
}

static double norm_diff(const double *a, const double *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += (a[i] - b[i]) * (a[i] - b[i]);
    return sqrt(s);
}

static double norm(const double *a, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += a[i] * a[i];
    return sqrt(s);
}

/* A loss of the problem (lower or upper) at its x and y[0] = yv, and its gradient in y[0]. */
static double loss_at(const bilo_problem *p, bool upper, const double *yv, double *grad)
{
    bilo_scope_begin();
    bilo_tensor *y[8], *gr = NULL;
    memcpy(y, p->y, (size_t)p->n_y * sizeof *y);
    y[0] = bilo_clone(p->y[0]);
    write_flat(y[0], yv);
    bilo_set_requires_grad(y[0], true);
    bilo_tensor *l = (upper ? p->upper : p->lower)(p->x, y, NULL, p->user);
    double v = l ? bilo_item(l) : NAN;
    if (grad && (!l || bilo_grad(&l, 1, NULL, &y[0], 1, &gr, 0) < 0)) v = NAN;
    if (grad && gr) read_flat(gr, grad);
    bilo_scope_end();
    return v;
}

/* argmin of a g quadratic in y[0] (n values), from n + 1 gradients: A e_i = ∇g(e_i) − ∇g(0). */
static void inner_solution(const bilo_problem *p, int n, double *ys)
{
    double a[MAXN * MAXN], col[MAXN], e[MAXN] = {0};
    loss_at(p, false, e, ys);
    for (int i = 0; i < n; i++) {
        e[i] = 1;
        loss_at(p, false, e, col);
        e[i] = 0;
        for (int r = 0; r < n; r++) a[r * n + i] = col[r] - ys[r];
    }
    for (int r = 0; r < n; r++) ys[r] = -ys[r];
    solve_in_place(a, ys, n);
}

/* Φ(x) = f(x, y*(x)) with y* from inner_solution; x written into the problem's x[0]. */
static double phi_at(const bilo_problem *p, const double *x, int ny)
{
    double ys[MAXN];
    write_flat(p->x[0], x);
    inner_solution(p, ny, ys);
    return loss_at(p, true, ys, NULL);
}

static bool shape_is(bilo_tensor *t, int ndim, const int64_t *shape)
{
    if (!t || bilo_ndim(t) != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (bilo_dim(t, i) != shape[i]) return false;
    return true;
}

/* ---- registry -------------------------------------------------------------------------- */

static void test_registry(void)
{
    const char *want[] = {"quadratic", "coreset", "hyperrep", "meta-sinusoid"};
    int found = 0, n = 0;
    for (; bilo_task_name(n); n++)
        for (int k = 0; k < 4; k++) found += !strcmp(bilo_task_name(n), want[k]);
    tap_ok(found == 4 && !bilo_task_name(n) && !bilo_task_name(-1),
           "the registry lists the %d synthetic tasks (%d names), NULL past the last", found, n);
    const char *help = bilo_task_help("quadratic");
    tap_ok(help && strstr(help, "quadratic") && strstr(help, "cond=10") && strstr(help, "dx=20"),
           "help names the task and its option keys with defaults");
    help = bilo_task_help("meta-sinusoid");
    tap_ok(help && strstr(help, "meta_batch=4") && strstr(help, "shots=10"),
           "meta-sinusoid's help documents its keys");

    check_error(!bilo_task_help("nope"), BILO_EINVAL, "'nope'", "help of an unknown task");
    check_error(!bilo_task_new("nope", NULL), BILO_EINVAL, "known: quadratic, coreset",
                "an unknown task names the known ones");
    check_error(!bilo_task_new(NULL, NULL), BILO_ENULL, "bilo_task_new", "NULL task name");
    check_error(!bilo_task_new("quadratic", &(bilo_task_opts){.options = "bogus=1"}),
                BILO_EINVAL, "unknown option 'bogus' for quadratic", "unknown option key");
    check_error(!bilo_task_new("quadratic", &(bilo_task_opts){.options = "dx=abc"}),
                BILO_EINVAL, "bad value 'abc' for option dx of quadratic", "bad option value");
    check_error(!bilo_task_new("quadratic", &(bilo_task_opts){.options = "dx=0"}),
                BILO_EINVAL, "dx = 0", "dx out of range");
    check_error(!bilo_task_new("quadratic", &(bilo_task_opts){.options = "cond=0.5"}),
                BILO_EINVAL, "cond = 0.5", "condition number below 1");
    check_error(!bilo_task_new("hyperrep", &(bilo_task_opts){.options = "layers=3"}),
                BILO_EINVAL, "layers = 3", "hyperrep layers other than 1, 2");
    check_error(!bilo_task_new("meta-sinusoid", &(bilo_task_opts){.options = "shots=0"}),
                BILO_EINVAL, "shots = 0", "meta-sinusoid without support points");
    check_error(!bilo_task_new("coreset", &(bilo_task_opts){.dtype = BILO_I64}), BILO_EDTYPE,
                "coreset", "integer dtype");

    bilo_task *t = make("hyperrep", "p=3,d=4,n=5", 1);
    bilo_tensor *g[1];
    tap_ok(t && !bilo_task_has_exact(t), "hyperrep has no closed-form hypergradient");
    check_error(bilo_task_exact_hypergradient(t, g) < 0, BILO_EINVAL, "'hyperrep' has no",
                "asking it for one names the task");
    tap_ok(!strcmp(bilo_task_method_options(t, "no-such-method"), "") &&
               strstr(bilo_task_method_options(t, "aid-cg"), "K="),
           "method options: the task's settings, \"\" for an unknown method");
    bilo_optim_opts oo = bilo_task_outer_opts(t);
    tap_ok(oo.kind == BILO_OPTIM_ADAM && oo.lr == 0.005, "hyperrep's outer optimizer: Adam 0.005");
    bilo_task_free(t);
    bilo_task_free(NULL);
    tap_ok(bilo_task_reset(NULL) == BILO_ENULL && !bilo_task_problem(NULL), "NULL task");
    bilo_clear_error();
}

/* Every method the library has accepts every task's settings for it. */
static void test_method_settings_parse(void)
{
    const char *tasks[][2] = {{"quadratic", "dx=3,dy=4"}, {"coreset", NULL},
                              {"hyperrep", "p=3,d=4,n=5"},
                              {"meta-sinusoid", "hidden=4,test_tasks=2"}};
    int bad = 0, tried = 0;
    for (int k = 0; k < 4; k++) {
        bilo_task *t = make(tasks[k][0], tasks[k][1], 1);
        for (int m = 0; t && bilo_estimator_method_name(m); m++, tried++) {
            const char *method = bilo_estimator_method_name(m);
            bilo_estimator *e = bilo_estimator_new(method, bilo_task_problem(t),
                                                   bilo_task_method_options(t, method));
            if (!e) tap_diag("%s, %s: %s", tasks[k][0], method, bilo_last_error());
            bad += !e;
            bilo_estimator_free(e);
        }
        bilo_task_free(t);
    }
    tap_ok(bad == 0 && tried >= 20, "every method accepts every task's settings (%d pairs)", tried);
}

/* ---- quadratic --------------------------------------------------------------------------- */

static void test_quadratic_closed_form(void)
{
    enum { DX = 6, DY = 8 };
    bilo_task *t = make("quadratic", "dx=6,dy=8,cond=50", 3);
    const bilo_problem *p = bilo_task_problem(t);
    tap_ok(t && p->n_x == 1 && p->n_y == 1 && shape_is(p->x[0], BILO_SHAPE(DX)) &&
               shape_is(p->y[0], BILO_SHAPE(DY)) && bilo_task_has_exact(t),
           "quadratic: x [6], y [8], exact hypergradient");
    double x[DX], exact[DX], fd[DX], xp[DX];
    read_flat(p->x[0], x);
    bilo_tensor *g[1];
    bilo_scope_begin();
    tap_ok(bilo_task_exact_hypergradient(t, g) == 0, "exact hypergradient computed");
    read_flat(g[0], exact);
    bilo_scope_end();
    const double h = 1e-3;
    for (int j = 0; j < DX; j++) {
        memcpy(xp, x, sizeof xp);
        xp[j] = x[j] + h;
        double up = phi_at(p, xp, DY);
        xp[j] = x[j] - h;
        fd[j] = (up - phi_at(p, xp, DY)) / (2 * h);
    }
    double err = norm_diff(exact, fd, DX) / norm(fd, DX);
    tap_ok(err < 1e-7, "∇Φ matches central differences of Φ (rel err %.2g, ‖∇Φ‖ %.3g)", err,
           norm(fd, DX));

    /* At y = y*(x) (the tests' own solve), the library's dense exact estimator agrees. */
    double ys[DY], got[DX], m[3];
    double phi = phi_at(p, x, DY);
    inner_solution(p, DY, ys);
    write_flat(p->y[0], ys);
    bilo_estimator *e = bilo_estimator_new("exact", p, NULL);
    bilo_scope_begin();
    int rc = bilo_estimator_hypergradient(e, p->x, p->y, g);
    if (rc == 0) read_flat(g[0], got);
    bilo_scope_end();
    err = rc == 0 ? norm_diff(exact, got, DX) / norm(exact, DX) : INFINITY;
    tap_ok(err < 1e-10, "matches the exact estimator at y*(x) (rel err %.2g)", err);
    bilo_estimator_free(e);

    tap_ok(bilo_task_n_metrics(t) == 3 && !strcmp(bilo_task_metric_names(t)[0], "phi") &&
               bilo_task_metrics(t, m) == 0,
           "metrics: %s, %s, %s", bilo_task_metric_names(t)[0], bilo_task_metric_names(t)[1],
           bilo_task_metric_names(t)[2]);
    tap_close(m[0], phi, 1e-11, 1e-11, "phi = f(x, y*(x))");
    tap_close(m[1], norm(exact, DX), 0, 1e-12, "grad_norm = ‖∇Φ‖");
    tap_ok(m[2] < 1e-10, "y_error at y*(x): %.2g", m[2]);
    bilo_task_free(t);
}

/* Outer steps of a method with the task's settings; ‖∇Φ‖ at the end over at the start. */
static double quad_progress(bilo_task *t, const char *method, int steps)
{
    const bilo_problem *p = bilo_task_problem(t);
    double m0[3], m1[3];
    bilo_optim_opts oo = bilo_task_outer_opts(t);
    bilo_estimator *e = bilo_estimator_new(method, p, bilo_task_method_options(t, method));
    bilo_optim *outer = bilo_optim_new(&oo, p->x, p->n_x);
    int rc = e && outer ? bilo_task_metrics(t, m0) : -1;
    for (int k = 0; rc == 0 && k < steps; k++) rc = bilo_estimator_step(e, outer);
    if (rc == 0) rc = bilo_task_metrics(t, m1);
    if (rc < 0) tap_diag("%s: %s", method, bilo_last_error());
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    return rc == 0 ? m1[1] / m0[1] : INFINITY;
}

static void test_quadratic_methods_and_reset(void)
{
    bilo_task *t = make("quadratic", NULL, 5);
    const bilo_problem *p = bilo_task_problem(t);
    double x0[20], y0[20], x1[20], y1[20];
    read_flat(p->x[0], x0);
    read_flat(p->y[0], y0);
    tap_ok(t && bilo_numel(p->x[0]) == 20 && bilo_numel(p->y[0]) == 20,
           "quadratic defaults: dx = dy = 20");
    const char *methods[] = {"exact", "itd", "aid-cg", "aid-ns", "aid-fp"};
    for (int i = 0; i < 5; i++) {
        bilo_task_reset(t);
        double r = quad_progress(t, methods[i], 150);
        tap_ok(r < 1e-3, "%s with the task's settings: ‖∇Φ‖ falls by %.2g in 150 steps",
               methods[i], r);
    }
    tap_ok(bilo_task_reset(t) == 0, "reset");
    read_flat(p->x[0], x1);
    read_flat(p->y[0], y1);
    tap_ok(!memcmp(x0, x1, sizeof x0) && !memcmp(y0, y1, sizeof y0),
           "reset restores the initial x and y bit for bit");

    bilo_task *same = make("quadratic", NULL, 5), *other = make("quadratic", NULL, 6);
    read_flat(bilo_task_problem(same)->x[0], x1);
    tap_ok(!memcmp(x0, x1, sizeof x0), "the same seed gives the same task");
    read_flat(bilo_task_problem(other)->x[0], x1);
    tap_ok(memcmp(x0, x1, sizeof x0) != 0, "another seed another");
    bilo_task_free(same);
    bilo_task_free(other);
    bilo_task_free(t);
}

/* ---- coreset ----------------------------------------------------------------------------- */

static const double POINTS[4][2] = {{1, 3}, {3, 1}, {-2, 2}, {-3, -2}};

/* The tests' own Φ: y* = Σ softmax(x)_i c_i, f = 0.1‖y* − (3, −2)‖². */
static double coreset_phi(const double *x, double *ys)
{
    double z = 0, s[4];
    for (int i = 0; i < 4; i++) z += s[i] = exp(x[i]);
    ys[0] = ys[1] = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++) ys[j] += s[i] / z * POINTS[i][j];
    return 0.1 * ((ys[0] - 3) * (ys[0] - 3) + (ys[1] + 2) * (ys[1] + 2));
}

static void test_coreset(void)
{
    bilo_task *t = make("coreset", NULL, 11);
    const bilo_problem *p = bilo_task_problem(t);
    tap_ok(t && shape_is(p->x[0], BILO_SHAPE(4)) && shape_is(p->y[0], BILO_SHAPE(2)),
           "coreset: logits x [4], point y [2]");
    double x[4], xp[4], ys[2], solved[2], fd[4], exact[4], got[4], m[4];
    read_flat(p->x[0], x);
    for (int j = 0; j < 4; j++) {
        memcpy(xp, x, sizeof xp);
        xp[j] += 1e-5;
        double up = coreset_phi(xp, ys);
        xp[j] -= 2e-5;
        fd[j] = (up - coreset_phi(xp, ys)) / 2e-5;
    }
    bilo_tensor *g[1];
    bilo_scope_begin();
    bilo_task_exact_hypergradient(t, g);
    read_flat(g[0], exact);
    bilo_scope_end();
    double err = norm_diff(exact, fd, 4) / norm(fd, 4);
    tap_ok(err < 1e-7, "∇Φ matches central differences (rel err %.2g)", err);

    double phi = coreset_phi(x, ys);
    inner_solution(p, 2, solved);
    tap_ok(norm_diff(ys, solved, 2) < 1e-12, "g's minimizer is the softmax-weighted point");
    write_flat(p->y[0], ys);
    bilo_estimator *e = bilo_estimator_new("exact", p, NULL);
    bilo_scope_begin();
    int rc = bilo_estimator_hypergradient(e, p->x, p->y, g);
    if (rc == 0) read_flat(g[0], got);
    bilo_scope_end();
    bilo_estimator_free(e);
    err = rc == 0 ? norm_diff(exact, got, 4) / norm(exact, 4) : INFINITY;
    tap_ok(err < 1e-10, "matches the exact estimator at y*(x) (rel err %.2g)", err);
    bilo_task_metrics(t, m);
    tap_ok(fabs(m[0] - phi) < 1e-14 && fabs(m[1] - phi) < 1e-14 && m[2] == ys[0] &&
               m[3] == ys[1],
           "metrics f, phi, y1, y2 at y = y*(x)");

    /* Gradient descent on Φ with the exact hypergradient and the task's outer settings. */
    bilo_optim_opts oo = bilo_task_outer_opts(t);
    bilo_optim *outer = bilo_optim_new(&oo, p->x, 1);
    for (int k = 0; k < 3000; k++) {
        bilo_scope_begin();
        bilo_task_exact_hypergradient(t, g);
        bilo_optim_step(outer, g);
        bilo_scope_end();
    }
    bilo_optim_free(outer);
    read_flat(p->x[0], x);
    phi = coreset_phi(x, ys);
    tap_ok(phi >= 0.72 && phi < 0.7206, "3000 exact steps reach Φ = %.6f (inf 0.72)", phi);
    tap_ok(fabs(ys[0] - 1.8) < 2e-3 && fabs(ys[1] - 0.4) < 2e-3,
           "at y*(x) = (%.4f, %.4f), the projection (1.8, 0.4) of (3, −2) on the hull", ys[0],
           ys[1]);
    bilo_task_free(t);
}

/* ---- hyper-representation ------------------------------------------------------------------ */

static void test_hyperrep(void)
{
    enum { P = 6, D = 9 };
    bilo_task *t = make("hyperrep", "p=6,d=9,n=20,reg=0.3", 2);
    const bilo_problem *p = bilo_task_problem(t);
    tap_ok(t && p->n_x == 1 && shape_is(p->x[0], BILO_SHAPE(P, D)) &&
               shape_is(p->y[0], BILO_SHAPE(D)),
           "hyperrep: H [6, 9], w [9]");
    double ws[D], zero[D] = {0}, g0[D], gs[D], m0[2], m1[2];
    bilo_task_metrics(t, m0);
    loss_at(p, false, zero, g0);
    inner_solution(p, D, ws);
    loss_at(p, false, ws, gs);
    tap_ok(norm(gs, D) < 1e-10 * norm(g0, D), "∇_w g = 0 at the ridge solution (%.2g vs %.2g)",
           norm(gs, D), norm(g0, D));
    write_flat(p->y[0], ws);
    bilo_task_metrics(t, m1);
    tap_ok(m1[1] < m0[1] && m1[0] < m0[0], "the ridge head lowers both losses (g %.4g → %.4g)",
           m0[1], m1[1]);

    /* With d > p, H has a null space; there the Hessian of g is reg·I exactly. */
    double H[P * D], v[D], hv[D], h0[D];
    read_flat(p->x[0], H);
    for (int i = 0; i < D; i++) v[i] = sin(i + 1.0);
    /* Orthonormal basis of H's rows, then v minus its projection. */
    double basis[P * D];
    memcpy(basis, H, sizeof basis);
    for (int r = 0; r < P; r++) {
        double *b = basis + r * D;
        for (int q = 0; q < r; q++) {
            double c = 0;
            for (int i = 0; i < D; i++) c += b[i] * basis[q * D + i];
            for (int i = 0; i < D; i++) b[i] -= c * basis[q * D + i];
        }
        double nb = norm(b, D);
        for (int i = 0; i < D; i++) b[i] /= nb;
    }
    for (int r = 0; r < P; r++) {
        double c = 0;
        for (int i = 0; i < D; i++) c += v[i] * basis[r * D + i];
        for (int i = 0; i < D; i++) v[i] -= c * basis[r * D + i];
    }
    loss_at(p, false, v, hv);
    loss_at(p, false, zero, h0);
    double worst = 0;
    for (int i = 0; i < D; i++) worst = fmax(worst, fabs(hv[i] - h0[i] - 0.3 * v[i]));
    tap_ok(worst < 1e-12 && norm(v, D) > 0.1, "on H's null space ∇²_ww g = reg·I (err %.2g)",
           worst);
    bilo_task_free(t);

    t = make("hyperrep", "layers=2,p=5,q=4,d=3,n=7", 2);
    p = bilo_task_problem(t);
    tap_ok(t && p->n_x == 2 && shape_is(p->x[0], BILO_SHAPE(5, 4)) &&
               shape_is(p->x[1], BILO_SHAPE(4, 3)) && shape_is(p->y[0], BILO_SHAPE(3)),
           "two-layer hyperrep: H1 [5, 4], H2 [4, 3], w [3]");
    double w2[3], g2[3], z2[3] = {0}, g20[3];
    inner_solution(p, 3, w2);
    loss_at(p, false, w2, g2);
    loss_at(p, false, z2, g20);
    tap_ok(norm(g2, 3) < 1e-10 * norm(g20, 3), "its head is a ridge fit too");
    bilo_task_free(t);

    bilo_task *big = bilo_task_new("hyperrep", NULL), *deep = bilo_task_new(
        "hyperrep", &(bilo_task_opts){.options = "layers=2"});
    tap_ok(big && shape_is(bilo_task_problem(big)->x[0], BILO_SHAPE(64, 128)) &&
               bilo_dtype_of(bilo_task_problem(big)->y[0]) == BILO_F32,
           "default sizes p, d = 64, 128 (research notes §B1), f32");
    tap_ok(deep && shape_is(bilo_task_problem(deep)->x[0], BILO_SHAPE(64, 128)) &&
               shape_is(bilo_task_problem(deep)->x[1], BILO_SHAPE(128, 64)),
           "layers=2 defaults: the published 256, 512, 256 scaled by 0.25");
    bilo_task_free(big);
    bilo_task_free(deep);

    double at1[2], at2[2];
    int threads = bilo_get_num_threads();
    for (int k = 1; k <= 2; k++) {
        bilo_set_num_threads(k);
        t = make("hyperrep", NULL, 9);
        bilo_task_metrics(t, k == 1 ? at1 : at2);
        bilo_task_free(t);
    }
    bilo_set_num_threads(threads);
    tap_ok(at1[0] == at2[0] && at1[1] == at2[1], "the same data at 1 and 2 threads (f %.17g)",
           at1[0]);
}

/* ---- meta-sinusoid ------------------------------------------------------------------------- */

/* Upper and lower loss after begin_step(step) at the task's current x and y. */
static void episode_losses(bilo_task *t, int64_t step, double *out)
{
    const bilo_problem *p = bilo_task_problem(t);
    p->begin_step(step, p->user);
    bilo_scope_begin();
    out[0] = bilo_item(p->upper(p->x, p->y, NULL, p->user));
    out[1] = bilo_item(p->lower(p->x, p->y, NULL, p->user));
    bilo_scope_end();
}

static void test_meta_sinusoid(void)
{
    const char *opts = "meta_batch=3,shots=5,query=4,hidden=8,test_tasks=10,test_points=6";
    bilo_task *t = make("meta-sinusoid", opts, 4), *same = make("meta-sinusoid", opts, 4);
    const bilo_problem *p = bilo_task_problem(t);
    tap_ok(t && p->n_x == 4 && p->n_y == 2 && shape_is(p->x[0], BILO_SHAPE(1, 8)) &&
               shape_is(p->x[2], BILO_SHAPE(8, 8)) && shape_is(p->y[0], BILO_SHAPE(3, 8)) &&
               shape_is(p->y[1], BILO_SHAPE(3)) && p->begin_step,
           "meta-sinusoid: backbone 1→8→8, heads [3, 8] + [3], a begin_step hook");
    tap_ok(strstr(bilo_task_method_options(t, "itd"), "reset=1") != NULL,
           "its method options restart the heads every step");
    for (int i = 0; i < 2; i++) { /* nonzero heads so that every loss term matters */
        double v[24];
        for (int k = 0; k < 24; k++) v[k] = 0.1 * cos(k + i);
        write_flat(p->y[i], v);
        write_flat(bilo_task_problem(same)->y[i], v);
    }
    double a[2], b[2], c[2], d[2];
    episode_losses(t, 5, a);
    episode_losses(t, 6, b);
    episode_losses(t, 5, c);
    episode_losses(same, 5, d);
    tap_ok(a[0] == c[0] && a[1] == c[1] && a[0] == d[0] && a[1] == d[1],
           "episodes of step 5 are reproducible (f %.6g, g %.6g)", a[0], a[1]);
    tap_ok(a[0] != b[0] && a[1] != b[1], "step 6 draws other episodes (f %.6g)", b[0]);

    double m[3];
    int rc = bilo_task_metrics(t, m);
    tap_ok(rc == 0 && m[1] > 0 && m[2] > 0 && m[2] < m[1] * 2,
           "metrics: test MSE %.4g ± %.3g (95%% CI)", m[1], m[2]);
    bilo_task_free(same);

    /* The heads adapted by the exact estimator's inner solve (T steps, reset) reach the ridge
       solution of each task: the lower loss's gradient vanishes. */
    bilo_estimator *e = bilo_estimator_new("exact", p, "T=400,lr=0.02,momentum=0.9,reset=1");
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 1e-12}, p->x, p->n_x);
    rc = bilo_estimator_step(e, outer);
    bilo_scope_begin();
    bilo_tensor *y[2], *gr[2];
    for (int i = 0; i < 2; i++) {
        y[i] = bilo_clone(p->y[i]);
        bilo_set_requires_grad(y[i], true);
    }
    bilo_tensor *g = p->lower(p->x, y, NULL, p->user);
    rc = rc == 0 ? bilo_grad(&g, 1, NULL, y, 2, gr, 0) : rc;
    double gn = rc == 0 ? bilo_item(bilo_norm(gr[0], BILO_ALL_AXES, false)) : INFINITY;
    bilo_scope_end();
    tap_ok(gn < 1e-6, "400 heavy-ball steps solve the heads' ridge problems (‖∇_y g‖ %.2g)", gn);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    bilo_task_free(t);
}

int main(void)
{
    bilo_mem_stats before, after;
    bilo_mem_get_stats(&before);
    test_registry();
    test_method_settings_parse();
    test_quadratic_closed_form();
    test_quadratic_methods_and_reset();
    test_coreset();
    test_hyperrep();
    test_meta_sinusoid();
    bilo_mem_get_stats(&after);
    tap_ok(after.live_bytes == before.live_bytes, "every task frees what it allocated (live "
           "bytes %zu before, %zu after)", before.live_bytes, after.live_bytes);
    return tap_done();
}
