/* First-order methods that never form a Hessian product: BOME (Ye et al. 2022) and F2SA
   (Kwon et al. 2023), as their authors' code and the SOBA authors' benchmark implement them
   (../shared/research/bilevel.md §A2, §A5). Both move y themselves during an outer step
   (step_grads) and keep their working copies in their own scopes, so memory does not grow
   with the number T of inner steps. */
#include <math.h>
#include <string.h>

#include "bilevel_impl.h"
#include "tensor_impl.h"

/* ---- shared helpers ------------------------------------------------------------------ */

/* Gradient of f (upper) or g at (x, y) with respect to in[0..n); the loss value goes to
   *value when value is not NULL. Counts one gradient of that level. */
static int level_grad(bilo_estimator *e, bool upper, bilo_tensor *const *x,
                      bilo_tensor *const *y, bilo_tensor *const *in, int n, bilo_tensor **out,
                      double *value)
{
    bilo_tensor *loss = bilo__loss(e, upper, x, y);
    if (!loss) return bilo_errcode();
    if (value) *value = bilo_item(loss);
    int rc = bilo__grads_or_zeros(loss, in, n, out, 0);
    if (rc == 0) {
        if (upper) e->last.f_grads++;
        else e->last.g_grads++;
    }
    return rc;
}

/* Copies of ts[0..n) with their own storage, owned by the current scope; in-place updates
   of them inside nested scopes keep memory flat. */
static int working_copies(bilo_tensor *const *ts, int n, bilo_tensor **out)
{
    bilo_no_grad_begin();
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++)
        if (!(out[i] = bilo_clone(ts[i]))) rc = bilo_errcode();
    bilo_no_grad_end();
    return rc;
}

static int detached(bilo_tensor *const *ts, int n, bilo_tensor **out)
{
    for (int i = 0; i < n; i++)
        if (!(out[i] = bilo_detach(ts[i]))) return bilo_errcode();
    return 0;
}

static int copy_into(bilo_tensor *const *dst, bilo_tensor *const *src, int n)
{
    for (int i = 0; i < n; i++)
        if (bilo_copy_(dst[i], src[i]) < 0) return bilo_errcode();
    return 0;
}

/* out_i = a_i + alpha·b_i, new tensors. */
static int list_combine(bilo_tensor *const *a, double alpha, bilo_tensor *const *b, int n,
                        bilo_tensor **out)
{
    for (int i = 0; i < n; i++)
        if (!(out[i] = bilo_add(a[i], bilo_mul_scalar(b[i], alpha)))) return bilo_errcode();
    return 0;
}

/* Concatenation of the lists a[0..na) and b[0..nb) into out. */
static void join(bilo_tensor *const *a, int na, bilo_tensor *const *b, int nb,
                 bilo_tensor **out)
{
    memcpy(out, a, (size_t)na * sizeof *out);
    memcpy(out + na, b, (size_t)nb * sizeof *out);
}

static bool bad_number(double v) { return !isfinite(v) || v < 0; }

/* ---- BOME ---------------------------------------------------------------------------- */

static const bilo_bome_opts *bome_opts(const bilo_estimator *e) { return e->opts; }

/* One step of opt on g(x, ·) at cur, in its own scope; *small once ‖∇_y g‖ ≤ inner.tol. */
static int bome_inner_step(bilo_estimator *e, bilo_tensor *const *xd, bilo_tensor *const *cur,
                           bilo_optim *opt, bool *small)
{
    int ny = e->prob.n_y, rc;
    bilo_tensor *ya[ny], *gr[ny];
    bilo_scope_begin();
    if ((rc = bilo__grad_aliases(cur, ny, ya)) == 0 &&
        (rc = level_grad(e, false, xd, ya, ya, ny, gr, NULL)) == 0 &&
        (rc = bilo__check_finite(e, "inner gradient of g", gr, ny)) == 0) {
        e->last.inner_iters++;
        *small = e->inner.tol > 0 && sqrt(bilo__list_dot(gr, gr, ny)) <= e->inner.tol;
        if (!*small) rc = bilo_optim_step(opt, gr);
    }
    bilo_scope_end();
    return rc;
}

/* ŷ: T steps of a fresh inner optimizer on g(x, ·) from y. */
static int bome_yhat(bilo_estimator *e, bilo_tensor *const *xd, bilo_tensor *const *y,
                     bilo_tensor **yhat)
{
    int ny = e->prob.n_y, rc = working_copies(y, ny, yhat);
    if (rc < 0) return rc;
    bilo_optim *opt = bilo_optim_new(&e->inner.optim, yhat, ny);
    if (!opt) return bilo_errcode();
    bool small = false;
    for (int t = 0; t < e->inner.T && !small && rc == 0; t++)
        rc = bome_inner_step(e, xd, yhat, opt, &small);
    bilo_optim_free(opt);
    return rc;
}

/* λ = max(φ − ⟨∇f, ∇q⟩, 0)/‖∇q‖², with eps added to ‖∇q‖² wherever it appears (the
   authors' toys compute max(η − ⟨∇f, ∇q⟩/(‖∇q‖² + 1e-4), 0)); 0 when ‖∇q‖² + eps is 0. */
static double bome_lambda(const bilo_bome_opts *o, double q, double fq, double qq)
{
    double qq_eps = qq + o->eps;
    double phi = o->eta * (o->phi == BILO_BOME_PHI_VALUE ? q : qq_eps);
    return qq_eps > 0 ? fmax(phi - fq, 0) / qq_eps : 0;
}

/* BOME's direction d = ∇f + λ∇q at (x, y) (aliases requiring grad): dx gets its n_x
   outer parts, dy its n_y inner parts. */
static int bome_direction(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                          bilo_tensor **dx, bilo_tensor **dy)
{
    int nx = e->prob.n_x, ny = e->prob.n_y, n = nx + ny, rc;
    bilo_tensor *xd[nx], *yhat[ny], *in[n], *df[n], *dq[n], *g_at_y[n], *gx_at_yhat[nx], *d[n];
    double g_y = 0, g_yhat = 0;
    join(x, nx, y, ny, in);
    if ((rc = detached(x, nx, xd)) < 0 || (rc = bome_yhat(e, xd, y, yhat)) < 0 ||
        (rc = level_grad(e, true, x, y, in, n, df, NULL)) < 0 ||
        (rc = level_grad(e, false, x, y, in, n, g_at_y, &g_y)) < 0 ||
        (rc = level_grad(e, false, x, yhat, x, nx, gx_at_yhat, &g_yhat)) < 0)
        return rc;
    /* ∇q = (∇_x g(x, y) − ∇_x g(x, ŷ), ∇_y g(x, y)): ŷ is a constant of q */
    if ((rc = list_combine(g_at_y, -1, gx_at_yhat, nx, dq)) < 0) return rc;
    memcpy(dq + nx, g_at_y + nx, (size_t)ny * sizeof *dq);
    double lambda = bome_lambda(bome_opts(e), g_y - g_yhat, bilo__list_dot(df, dq, n),
                                bilo__list_dot(dq, dq, n));
    if ((rc = list_combine(df, lambda, dq, n, d)) < 0) return rc;
    memcpy(dx, d, (size_t)nx * sizeof *dx);
    memcpy(dy, d + nx, (size_t)ny * sizeof *dy);
    return 0;
}

static int bome_hypergradient(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                              bilo_tensor **grads)
{
    bilo_tensor *dy[e->prob.n_y];
    return bome_direction(e, x, y, grads, dy);
}

/* y ← y − y_lr·d_y, through the heavy-ball buffers b ← μb + d_y when y_momentum > 0. */
static int bome_move_y(bilo_estimator *e, bilo_tensor *const *dy)
{
    const bilo_bome_opts *o = bome_opts(e);
    int ny = e->prob.n_y;
    bilo_tensor *const *step = dy;
    if (e->n_state > 0) {
        for (int i = 0; i < ny; i++)
            if (bilo_scale_(e->state[i], o->y_momentum) < 0) return bilo_errcode();
        int rc = bilo__list_axpy(e->state, 1, dy, ny);
        if (rc < 0) return rc;
        step = e->state;
    }
    return bilo__list_axpy(e->y, -o->y_lr, step, ny);
}

/* The joint step at the problem's (x, y): y moves here, d_x goes to the outer optimizer.
   Nothing changes unless the whole direction was computed and is finite. */
static int bome_step_grads(bilo_estimator *e, bilo_optim *outer, bilo_tensor **grads)
{
    int nx = e->prob.n_x, ny = e->prob.n_y, rc;
    bilo_tensor *xa[nx], *ya[ny], *dy[ny];
    (void)outer; /* BOME publishes no outer schedule */
    if ((rc = bilo__grad_aliases(e->x, nx, xa)) < 0 ||
        (rc = bilo__grad_aliases(e->y, ny, ya)) < 0 ||
        (rc = bome_direction(e, xa, ya, grads, dy)) < 0 ||
        (rc = bilo__check_finite(e, "hypergradient", grads, nx)) < 0 ||
        (rc = bilo__check_finite(e, "inner direction", dy, ny)) < 0)
        return rc;
    return bome_move_y(e, dy);
}

static const bilo__estimator_vt bome_vt = {"bome", bome_hypergradient, bome_step_grads};

static int check_inner(const char *api, const bilo_inner_opts *inner)
{
    if (inner->reset)
        return bilo__fail_code(BILO_EINVAL, "%s: inner.reset = 1 is not supported (the inner "
                               "iterates always start from the current y)", api);
    return 0;
}

static int check_bome(const bilo_bome_opts *o)
{
    int rc = check_inner("bilo_bome_new", &o->inner);
    if (rc < 0) return rc;
    if (o->phi != BILO_BOME_PHI_GRAD_NORM && o->phi != BILO_BOME_PHI_VALUE)
        return bilo__fail_code(BILO_EINVAL, "bilo_bome_new: phi = %d is not a bilo_bome_phi",
                               (int)o->phi);
    if (bad_number(o->eta) || bad_number(o->y_lr) || bad_number(o->eps) ||
        bad_number(o->y_momentum) || o->y_momentum >= 1)
        return bilo__fail_code(BILO_EINVAL, "bilo_bome_new: eta = %g, y_lr = %g and eps = %g "
                               "must be finite and >= 0, y_momentum = %g in [0, 1)", o->eta,
                               o->y_lr, o->eps, o->y_momentum);
    return 0;
}

/* Momentum buffers (zeros shaped like y) when the joint step has momentum. */
static int bome_state(bilo_estimator *e, const bilo_bome_opts *o)
{
    if (o->y_momentum == 0) return 0;
    int rc = bilo__state_alloc(e, e->prob.n_y);
    for (int i = 0; i < e->prob.n_y && rc == 0; i++)
        if (!(e->state[i] = bilo_keep(bilo_zeros_like(e->y[i])))) rc = bilo_errcode();
    return rc;
}

bilo_estimator *bilo_bome_new(const bilo_problem *p, const bilo_bome_opts *opts)
{
    bilo_bome_opts o = opts ? *opts : (bilo_bome_opts){0};
    if (o.inner.T == 0) o.inner.T = 10;
    if (o.eta == 0) o.eta = 0.5;
    if (o.y_lr == 0) o.y_lr = 0.01;
    if (check_bome(&o) < 0) return NULL;
    bilo_estimator *e = bilo__estimator_create(&bome_vt, p, &o.inner);
    if (e && (bilo__estimator_set_opts(e, &o, sizeof o) < 0 || bome_state(e, &o) < 0)) {
        bilo_estimator_free(e);
        return NULL;
    }
    return e;
}

/* ---- F2SA ---------------------------------------------------------------------------- */

enum { F2SA_LAMBDA, F2SA_Z }; /* e->state: λ (0-d f64), then z shaped like y */

static const bilo_f2sa_opts *f2sa_opts(const bilo_estimator *e) { return e->opts; }
static double f2sa_lambda(const bilo_estimator *e) { return bilo_item(e->state[F2SA_LAMBDA]); }

/* 1/(t+1)^power under the published decay, else 1 (t: 0-based outer step). */
static double f2sa_decay(const bilo_f2sa_opts *o, int64_t t, double power)
{
    return o->decay ? pow((double)(t + 1), -power) : 1;
}

/* ‖λa + b‖ over lists of n tensors. */
static double combined_norm(double lambda, bilo_tensor *const *a, bilo_tensor *const *b, int n)
{
    double s = lambda * lambda * bilo__list_dot(a, a, n) + 2 * lambda * bilo__list_dot(a, b, n) +
               bilo__list_dot(b, b, n);
    return sqrt(fmax(s, 0));
}

typedef struct {
    double lambda, gamma_y, gamma_z;
} f2sa_rates;

/* One iteration in place on the working copies y and z, in its own scope:
   y ← y − γ_y(λ∇_y g(x, y) + ∇_y f(x, y)),  z ← z − γ_z ∇_y g(x, z). */
static int f2sa_iteration(bilo_estimator *e, bilo_tensor *const *xd, bilo_tensor *const *y,
                          bilo_tensor *const *z, const f2sa_rates *r, bool *small)
{
    int ny = e->prob.n_y, rc;
    bilo_tensor *ya[ny], *za[ny], *gy[ny], *fy[ny], *gz[ny];
    bilo_scope_begin();
    if ((rc = bilo__grad_aliases(y, ny, ya)) == 0 && (rc = bilo__grad_aliases(z, ny, za)) == 0 &&
        (rc = level_grad(e, false, xd, ya, ya, ny, gy, NULL)) == 0 &&
        (rc = level_grad(e, true, xd, ya, ya, ny, fy, NULL)) == 0 &&
        (rc = level_grad(e, false, xd, za, za, ny, gz, NULL)) == 0 &&
        (rc = bilo__check_finite(e, "inner gradient of g", gy, ny)) == 0 &&
        (rc = bilo__check_finite(e, "inner gradient of f", fy, ny)) == 0 &&
        (rc = bilo__check_finite(e, "inner gradient of g at z", gz, ny)) == 0) {
        e->last.inner_iters++;
        double tol = e->inner.tol;
        *small = tol > 0 && combined_norm(r->lambda, gy, fy, ny) <= tol &&
                 sqrt(bilo__list_dot(gz, gz, ny)) <= tol;
        if (!*small && (rc = bilo__list_axpy(y, -r->gamma_y * r->lambda, gy, ny)) == 0 &&
            (rc = bilo__list_axpy(y, -r->gamma_y, fy, ny)) == 0)
            rc = bilo__list_axpy(z, -r->gamma_z, gz, ny);
    }
    bilo_scope_end();
    return rc;
}

/* T iterations on the working copies y and z at outer step t, then the direction
   ∇_x f(x, y) + λ(∇_x g(x, y) − ∇_x g(x, z)) into grads (x: aliases requiring grad). */
static int f2sa_run(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                    bilo_tensor *const *z, int64_t t, bilo_tensor **grads)
{
    const bilo_f2sa_opts *o = f2sa_opts(e);
    int nx = e->prob.n_x, rc;
    double lr = o->inner.optim.lr;
    double lambda = f2sa_lambda(e), y_scale = o->y_lr_over_lambda ? 1 / lambda : 1;
    f2sa_rates r = {lambda, lr * y_scale * f2sa_decay(o, t, 5.0 / 7),
                    lr * f2sa_decay(o, t, 4.0 / 7)};
    bilo_tensor *xd[nx], *fx[nx], *gx_y[nx], *gx_z[nx], *gap[nx];
    if ((rc = detached(x, nx, xd)) < 0) return rc;
    bool small = false;
    for (int k = 0; k < e->inner.T && !small && rc == 0; k++)
        rc = f2sa_iteration(e, xd, y, z, &r, &small);
    if (rc < 0 || (rc = level_grad(e, true, x, y, x, nx, fx, NULL)) < 0 ||
        (rc = level_grad(e, false, x, y, x, nx, gx_y, NULL)) < 0 ||
        (rc = level_grad(e, false, x, z, x, nx, gx_z, NULL)) < 0 ||
        (rc = list_combine(gx_y, -1, gx_z, nx, gap)) < 0)
        return rc;
    return list_combine(fx, r.lambda, gap, nx, grads);
}

/* From the given y for both y and z; the estimator's state is not touched. */
static int f2sa_hypergradient(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                              bilo_tensor **grads)
{
    int ny = e->prob.n_y, rc;
    bilo_tensor *yw[ny], *zw[ny];
    if ((rc = working_copies(y, ny, yw)) < 0 || (rc = working_copies(y, ny, zw)) < 0) return rc;
    return f2sa_run(e, x, yw, zw, e->total.steps, grads);
}

/* One outer step: y, z and λ change only once the direction is computed and finite. */
static int f2sa_step_grads(bilo_estimator *e, bilo_optim *outer, bilo_tensor **grads)
{
    const bilo_f2sa_opts *o = f2sa_opts(e);
    int nx = e->prob.n_x, ny = e->prob.n_y, rc;
    int64_t t = e->total.steps;
    bilo_tensor *xa[nx], *yw[ny], *zw[ny], *const *z = e->state + F2SA_Z;
    if ((rc = bilo__grad_aliases(e->x, nx, xa)) < 0 || (rc = working_copies(e->y, ny, yw)) < 0 ||
        (rc = working_copies(z, ny, zw)) < 0 || (rc = f2sa_run(e, xa, yw, zw, t, grads)) < 0 ||
        (rc = bilo__check_finite(e, "hypergradient", grads, nx)) < 0 ||
        (rc = copy_into(e->y, yw, ny)) < 0 || (rc = copy_into(z, zw, ny)) < 0)
        return rc;
    double next_lambda = f2sa_lambda(e) + o->delta * pow((double)(t + 1), -1.0 / 7);
    if (!o->fixed_lambda && bilo_fill_(e->state[F2SA_LAMBDA], next_lambda) < 0)
        return bilo_errcode();
    if (o->outer_lr > 0) bilo_optim_set_lr(outer, o->outer_lr * f2sa_decay(o, t, 4.0 / 7));
    return 0;
}

static const bilo__estimator_vt f2sa_vt = {"f2sa", f2sa_hypergradient, f2sa_step_grads};

static int check_f2sa(const bilo_f2sa_opts *o)
{
    int rc = check_inner("bilo_f2sa_new", &o->inner);
    if (rc < 0) return rc;
    const bilo_optim_opts *s = &o->inner.optim;
    if (s->kind != BILO_OPTIM_SGD || s->momentum != 0 || s->nesterov || s->weight_decay != 0)
        return bilo__fail_code(BILO_EINVAL, "bilo_f2sa_new: F2SA takes plain gradient steps; "
                               "inner.optim must be SGD without momentum or weight decay (got "
                               "kind %d, momentum = %g, weight_decay = %g)", (int)s->kind,
                               s->momentum, s->weight_decay);
    if (bad_number(s->lr) || bad_number(o->lambda0) || bad_number(o->delta) ||
        bad_number(o->outer_lr))
        return bilo__fail_code(BILO_EINVAL, "bilo_f2sa_new: lr = %g, lambda0 = %g, delta = %g "
                               "and outer_lr = %g must be finite and >= 0", s->lr, o->lambda0,
                               o->delta, o->outer_lr);
    return 0;
}

/* λ = lambda0 and z = the initial y. */
static int f2sa_state(bilo_estimator *e, const bilo_f2sa_opts *o)
{
    int rc = bilo__state_alloc(e, 1 + e->prob.n_y);
    if (rc == 0 && !(e->state[F2SA_LAMBDA] = bilo_keep(bilo_scalar(BILO_F64, o->lambda0))))
        rc = bilo_errcode();
    for (int i = 0; i < e->prob.n_y && rc == 0; i++)
        if (!(e->state[F2SA_Z + i] = bilo_keep(bilo_clone(e->y_init[i])))) rc = bilo_errcode();
    return rc;
}

bilo_estimator *bilo_f2sa_new(const bilo_problem *p, const bilo_f2sa_opts *opts)
{
    bilo_f2sa_opts o = opts ? *opts : (bilo_f2sa_opts){0};
    if (o.inner.T == 0) o.inner.T = 10;
    if (o.inner.optim.lr == 0) o.inner.optim.lr = 1e-3; /* nn's default */
    if (o.lambda0 == 0) o.lambda0 = 1;
    if (o.delta == 0) o.delta = 0.1;
    if (check_f2sa(&o) < 0) return NULL;
    bilo_estimator *e = bilo__estimator_create(&f2sa_vt, p, &o.inner);
    if (e && (bilo__estimator_set_opts(e, &o, sizeof o) < 0 || f2sa_state(e, &o) < 0)) {
        bilo_estimator_free(e);
        return NULL;
    }
    return e;
}

/* ---- by name ------------------------------------------------------------------------- */

static const char *const bome_phis[] = {"grad_norm", "value", NULL};

const bilo__option bilo__bome_options[] = {
    BILO__INNER_OPTIONS(bilo_bome_opts),
    {"phi", BILO__OPT_CHOICE, offsetof(bilo_bome_opts, phi), bome_phis},
    {"eta", BILO__OPT_DOUBLE, offsetof(bilo_bome_opts, eta), NULL},
    {"y_lr", BILO__OPT_DOUBLE, offsetof(bilo_bome_opts, y_lr), NULL},
    {"y_momentum", BILO__OPT_DOUBLE, offsetof(bilo_bome_opts, y_momentum), NULL},
    {"eps", BILO__OPT_DOUBLE, offsetof(bilo_bome_opts, eps), NULL},
    {NULL}};

const bilo__option bilo__f2sa_options[] = {
    BILO__INNER_OPTIONS(bilo_f2sa_opts),
    {"lambda0", BILO__OPT_DOUBLE, offsetof(bilo_f2sa_opts, lambda0), NULL},
    {"delta", BILO__OPT_DOUBLE, offsetof(bilo_f2sa_opts, delta), NULL},
    {"fixed_lambda", BILO__OPT_BOOL, offsetof(bilo_f2sa_opts, fixed_lambda), NULL},
    {"decay", BILO__OPT_BOOL, offsetof(bilo_f2sa_opts, decay), NULL},
    {"outer_lr", BILO__OPT_DOUBLE, offsetof(bilo_f2sa_opts, outer_lr), NULL},
    {"y_lr_over_lambda", BILO__OPT_BOOL, offsetof(bilo_f2sa_opts, y_lr_over_lambda), NULL},
    {NULL}};

bilo_estimator *bilo__bome_make(const bilo_problem *p, const void *opts)
{
    return bilo_bome_new(p, opts);
}

bilo_estimator *bilo__f2sa_make(const bilo_problem *p, const void *opts)
{
    return bilo_f2sa_new(p, opts);
}
