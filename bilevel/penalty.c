/* The penalty method (Mehra, Hamm 2021) as the authors' code implements it
   (hammlab/bilevel-penalty optimizers/penalty/bilevel_penalty_aug_lag.py; research notes
   bilevel.md §A4):
     h_upper = f + νᵀ∇_y g + (ρ/2)‖∇_y g‖²,   h_lower = h_upper + λg,
   T steps of the inner optimizer on y against h_lower, then one outer step along ∇_x h_upper.
   The penalty terms' gradients are one double-backprop product of ∇_y g with
   w = ν + ρ∇_y g: ∇_y h_lower = ∇_y f + H w + λ∇_y g and ∇_x h_upper = ∇_x f + J w.

   Schedule (checked by the code after the outer step, on the point it reached): when
   ‖∇_x h_upper‖₂⁴ + ‖∇_y h_lower‖₂⁴ < ε² — the code squares the already squared norms, and so
   does this test — then ρ ← c_ρρ, λ ← c_λλ, ε ← c_εε, ν ← ν + ρ∇_y g with the new ρ, and both
   step sizes ×lr_decay. Here the check runs at the start of the next step, on that same
   point (with minibatches: on the next step's first lower and upper batch), where its
   products double as the first inner step's; when the schedule advances, the inner gradient
   is recomputed with the new ν, ρ, λ (one product more). */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "bilevel_impl.h"
#include "tensor_impl.h"

/* e->state: ν (shaped like y), then these scalars (0-d f64). LR_SCALE is the product of the
   lr_decay factors applied so far; OUTER_LR0 the outer optimizer's lr at the first step (0
   until then), so that a resumed run sets the same step sizes. */
enum { RHO, LAMBDA, EPS, LR_SCALE, OUTER_LR0, N_SCALARS };

static const bilo_penalty_opts *pen_opts(const bilo_estimator *e) { return e->opts; }
static bilo_tensor *scalar_slot(const bilo_estimator *e, int k)
{
    return e->state[e->prob.n_y + k];
}
static double get(const bilo_estimator *e, int k) { return bilo_item(scalar_slot(e, k)); }
static void put(bilo_estimator *e, int k, double v) { bilo_set_flat(scalar_slot(e, k), 0, v); }

/* The gradients of the penalized losses at (x, y): hy = ∇_y h_lower (when hy is given),
   hx = ∇_x h_upper (when hx is given), from one product; gy gets ∇_y g (no graph). */
static int penalty_grads(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                         bilo_tensor **hy, bilo_tensor **hx, bilo_tensor **gy)
{
    int nx = e->prob.n_x, ny = e->prob.n_y, rc, n_in = 0;
    bilo_tensor *xa[nx], *ya[ny], *gyg[ny], *w[ny], *in[nx + ny], *prod[nx + ny], *fx[nx],
        *fy[ny];
    if ((rc = bilo__grad_aliases(x, nx, xa)) < 0 || (rc = bilo__grad_aliases(y, ny, ya)) < 0 ||
        (rc = bilo__lower_grad_graph(e, xa, ya, gyg)) < 0)
        return rc;
    double rho = get(e, RHO), lambda = get(e, LAMBDA);
    bilo_no_grad_begin();
    for (int i = 0; i < ny && rc == 0; i++)
        if (!(gy[i] = bilo_detach(gyg[i])) || !(w[i] = bilo_add(e->state[i],
                                                                 bilo_mul_scalar(gy[i], rho))))
            rc = bilo_errcode();
    bilo_no_grad_end();
    if (hy) {
        memcpy(in, ya, (size_t)ny * sizeof *in);
        n_in = ny;
    }
    if (hx) {
        memcpy(in + n_in, xa, (size_t)nx * sizeof *in);
        n_in += nx;
    }
    if (rc < 0 || (rc = bilo__second_product(e, gyg, w, in, n_in, prod)) < 0 ||
        (rc = bilo__upper_grads(e, xa, ya, fx, fy)) < 0)
        return rc;
    bilo_no_grad_begin();
    for (int i = 0; hy && i < ny && rc == 0; i++)
        if (!(hy[i] = bilo_add(bilo_add(fy[i], prod[i]), bilo_mul_scalar(gy[i], lambda))))
            rc = bilo_errcode();
    for (int i = 0; hx && i < nx && rc == 0; i++)
        if (!(hx[i] = bilo_add(fx[i], prod[(hy ? ny : 0) + i]))) rc = bilo_errcode();
    bilo_no_grad_end();
    return rc;
}

/* The schedule's advance; gy = ∇_y g at the point the criterion held. */
static int advance(bilo_estimator *e, bilo_tensor *const *gy)
{
    const bilo_penalty_opts *o = pen_opts(e);
    double rho = o->c_rho * get(e, RHO);
    put(e, RHO, rho);
    put(e, LAMBDA, o->c_lambda * get(e, LAMBDA));
    put(e, EPS, o->c_eps * get(e, EPS));
    put(e, LR_SCALE, o->lr_decay * get(e, LR_SCALE));
    return bilo__list_axpy(e->state, rho, gy, e->prob.n_y);
}

/* ∇_y h_lower for the first inner step of a step after the first: also the published
   convergence check of the previous step's result, and the advance when it holds. */
static int checked_inner_grad(bilo_estimator *e, bilo_tensor **hy)
{
    int nx = e->prob.n_x, ny = e->prob.n_y, rc;
    bilo_tensor *hx[nx], *gy[ny];
    if ((rc = penalty_grads(e, e->x, e->y, hy, hx, gy)) < 0) return rc;
    double hu = bilo__list_dot(hx, hx, nx), hl = bilo__list_dot(hy, hy, ny), eps = get(e, EPS);
    if (!(hu * hu + hl * hl < eps * eps)) return 0;
    if ((rc = advance(e, gy)) < 0) return rc;
    return penalty_grads(e, e->x, e->y, hy, NULL, gy);
}

/* T steps of opt on y against h_lower; the first one's gradient is the checked one when
   `check` is set. */
static int inner_steps(bilo_estimator *e, bilo_optim *opt, bilo_tensor *const *x,
                       bilo_tensor *const *y, bool check)
{
    int ny = e->prob.n_y, rc = 0;
    for (int t = 0; t < e->inner.T && rc == 0; t++) {
        bilo_tensor *hy[ny], *gy[ny];
        bilo_scope_begin();
        rc = t == 0 && check ? checked_inner_grad(e, hy) : penalty_grads(e, x, y, hy, NULL, gy);
        if (rc == 0) rc = bilo__check_finite(e, "inner gradient of h_lower", hy, ny);
        if (rc == 0) {
            bilo_optim_set_lr(opt, pen_opts(e)->inner.optim.lr * get(e, LR_SCALE));
            rc = bilo_optim_step(opt, hy);
        }
        bilo_scope_end();
        e->last.inner_iters++;
    }
    return rc;
}

static int outer_direction(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                           bilo_tensor **grads)
{
    bilo_tensor *gy[e->prob.n_y];
    return penalty_grads(e, x, y, NULL, grads, gy);
}

/* T steps on a copy of y with a fresh optimizer at the current step size. */
static int penalty_hypergradient(bilo_estimator *e, bilo_tensor *const *x,
                                 bilo_tensor *const *y, bilo_tensor **grads)
{
    int ny = e->prob.n_y, rc;
    bilo_tensor *cur[ny];
    bilo_no_grad_begin();
    rc = bilo__list_scaled(y, ny, 1, cur);
    bilo_no_grad_end();
    if (rc < 0) return rc;
    bilo_optim *opt = bilo_optim_new(&e->inner.optim, cur, ny);
    if (!opt) return bilo_errcode();
    rc = inner_steps(e, opt, x, cur, false);
    bilo_optim_free(opt);
    return rc < 0 ? rc : outer_direction(e, x, cur, grads);
}

static int penalty_step_grads(bilo_estimator *e, bilo_optim *outer, bilo_tensor **grads)
{
    if (get(e, OUTER_LR0) == 0) put(e, OUTER_LR0, bilo_optim_get_lr(outer));
    int rc = inner_steps(e, e->inner_opt, e->x, e->y, e->total.steps > 0);
    if (rc < 0) return rc;
    bilo_optim_set_lr(outer, get(e, OUTER_LR0) * get(e, LR_SCALE));
    if ((rc = outer_direction(e, e->x, e->y, grads)) < 0) return rc;
    return bilo__check_finite(e, "hypergradient", grads, e->prob.n_x);
}

static const bilo__estimator_vt penalty_vt = {"penalty", penalty_hypergradient,
                                              penalty_step_grads};

/* ---- construction ---------------------------------------------------------------------- */

static void apply_defaults(bilo_penalty_opts *o)
{
    if (o->inner.T == 0) o->inner.T = 20;
    double *fields[] = {&o->rho0, &o->lambda0, &o->eps0, &o->nu0, &o->c_rho, &o->c_lambda,
                        &o->c_eps, &o->lr_decay};
    const double defaults[] = {1e-2, 1e-2, 1e-2, 1e-4, 1.1, 0.9, 0.9, 0.9};
    for (int k = 0; k < 8; k++)
        if (*fields[k] == 0) *fields[k] = defaults[k];
}

static bool penalty_check(const bilo_penalty_opts *o)
{
    const double v[] = {o->rho0, o->lambda0, o->eps0, o->nu0, o->c_rho, o->c_lambda, o->c_eps,
                        o->lr_decay};
    bool ok = o->inner.T > 0 && !o->inner.reset && o->inner.tol == 0;
    for (int k = 0; k < 8; k++) ok = ok && v[k] > 0 && isfinite(v[k]);
    if (!ok)
        bilo__fail(BILO_EINVAL, "bilo_penalty_new: T = %d must be >= 0 (reset = %d and tol = %g "
                   "are not supported), rho0 = %g, lambda0 = %g, eps0 = %g, nu0 = %g, c_rho = "
                   "%g, c_lambda = %g, c_eps = %g and lr_decay = %g must be finite and > 0",
                   o->inner.T, o->inner.reset, o->inner.tol, v[0], v[1], v[2], v[3], v[4], v[5],
                   v[6], v[7]);
    return ok;
}

/* ν = nu0 everywhere (the authors' initialization), then the scalars. */
static int penalty_state(bilo_estimator *e, const bilo_penalty_opts *o)
{
    int ny = e->prob.n_y;
    int rc = bilo__state_alloc(e, ny + N_SCALARS);
    const double init[N_SCALARS] = {o->rho0, o->lambda0, o->eps0, 1, 0};
    for (int i = 0; rc == 0 && i < e->n_state; i++) {
        bilo_tensor *t = i < ny ? bilo_full(e->y[i]->dtype, e->y[i]->ndim, e->y[i]->shape, o->nu0)
                                : bilo_scalar(BILO_F64, init[i - ny]);
        if (!(e->state[i] = bilo_keep(t))) rc = bilo_errcode();
    }
    return rc;
}

bilo_estimator *bilo_penalty_new(const bilo_problem *p, const bilo_penalty_opts *opts)
{
    bilo_penalty_opts o = opts ? *opts : (bilo_penalty_opts){0};
    apply_defaults(&o);
    if (!penalty_check(&o)) return NULL;
    bilo_estimator *e = bilo__estimator_create(&penalty_vt, p, &o.inner);
    if (e) o.inner.optim.lr = bilo_optim_get_lr(e->inner_opt); /* nn's default when 0 */
    if (e && (bilo__estimator_set_opts(e, &o, sizeof o) < 0 || penalty_state(e, &o) < 0)) {
        bilo_estimator_free(e);
        return NULL;
    }
    return e;
}

bilo_estimator *bilo__make_penalty(const bilo_problem *p, const void *opts)
{
    return bilo_penalty_new(p, opts);
}

const bilo__option bilo__penalty_options[] = {
    BILO__INNER_OPTIONS(bilo_penalty_opts),
    {"rho0", BILO__OPT_DOUBLE, offsetof(bilo_penalty_opts, rho0), NULL},
    {"lambda0", BILO__OPT_DOUBLE, offsetof(bilo_penalty_opts, lambda0), NULL},
    {"eps0", BILO__OPT_DOUBLE, offsetof(bilo_penalty_opts, eps0), NULL},
    {"nu0", BILO__OPT_DOUBLE, offsetof(bilo_penalty_opts, nu0), NULL},
    {"c_rho", BILO__OPT_DOUBLE, offsetof(bilo_penalty_opts, c_rho), NULL},
    {"c_lambda", BILO__OPT_DOUBLE, offsetof(bilo_penalty_opts, c_lambda), NULL},
    {"c_eps", BILO__OPT_DOUBLE, offsetof(bilo_penalty_opts, c_eps), NULL},
    {"lr_decay", BILO__OPT_DOUBLE, offsetof(bilo_penalty_opts, lr_decay), NULL},
    {NULL}};
