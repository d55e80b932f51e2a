/* Single-loop estimators: SOBA (Dagréou et al. 2022) and FSLA (Li, Gu, Huang 2022), as the
   SOBA authors' benchmark implements them (benchmark_bilevel soba.py and fsla.py, the only
   FSLA code; research notes bilevel.md §A3, §A5). Every update moves y by one gradient step,
   the linear-system state v by one step on ½vᵀHv ∓ vᵀ∇_y f, and yields an outer direction;
   no inner problem is ever solved. The state (v, and FSLA's d and previous x) lives in
   e->state so checkpoints carry it. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "bilevel_impl.h"
#include "tensor_impl.h"

/* One update on the working copies work = [y (n_y), state (n_state)] at fixed x with step γ
   (FSLA's STORM weight η is γ too); dir gets the update's outer direction (copied in). */
typedef int (*sl_update)(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *work,
                         double gamma, bilo_tensor *const *dir);

typedef struct {
    bilo__estimator_vt vt;
    sl_update update;
} sl_method;

static const bilo_single_loop_opts *sl_opts(const bilo_estimator *e) { return e->opts; }

/* The published schedule s/√(t+1), or the constant s without decay. */
static double scheduled(const bilo_single_loop_opts *o, double base, int64_t t)
{
    return o->decay ? base / sqrt((double)t + 1) : base;
}

/* ∇_y g at (x, y) without a graph, on the lower level's next batch. */
static int lower_grad(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                      bilo_tensor **gy)
{
    bilo_tensor *g = bilo__loss(e, false, x, y);
    if (!g) return bilo_errcode();
    int rc = bilo__grads_or_zeros(g, y, e->prob.n_y, gy, 0);
    if (rc == 0) e->last.g_grads++;
    return rc;
}

/* dir_i = a_i + b_i. */
static int write_direction(bilo_tensor *const *dir, bilo_tensor *const *a,
                           bilo_tensor *const *b, int n)
{
    for (int i = 0; i < n; i++)
        if (bilo_copy_(dir[i], a[i]) < 0 || bilo_axpy_(dir[i], 1, b[i]) < 0)
            return bilo_errcode();
    return 0;
}

/* ---- SOBA: v ≈ −H⁻¹∇_y f -------------------------------------------------------------
   At the current (x, y, v), on one lower and one upper batch: (Hv, Jv) from one product of
   ∇_y g with v w.r.t. (y, x); direction Jv + ∇_x f; then y −= γ∇_y g, v −= γ(Hv + ∇_y f). */
static int soba_update(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *work,
                       double gamma, bilo_tensor *const *dir)
{
    int nx = e->prob.n_x, ny = e->prob.n_y, rc;
    bilo_tensor *const *y = work, *const *v = work + ny;
    bilo_tensor *xa[nx], *ya[ny], *in[ny + nx], *prod[ny + nx], *gy[ny], *fx[nx], *fy[ny];
    if ((rc = bilo__grad_aliases(x, nx, xa)) < 0 || (rc = bilo__grad_aliases(y, ny, ya)) < 0 ||
        (rc = bilo__lower_grad_graph(e, xa, ya, gy)) < 0)
        return rc;
    memcpy(in, ya, (size_t)ny * sizeof *in);
    memcpy(in + ny, xa, (size_t)nx * sizeof *in);
    if ((rc = bilo__second_product(e, gy, v, in, ny + nx, prod)) < 0 ||
        (rc = bilo__upper_grads(e, xa, ya, fx, fy)) < 0 ||
        (rc = write_direction(dir, fx, prod + ny, nx)) < 0 ||
        (rc = bilo__list_axpy(y, -gamma, gy, ny)) < 0 ||
        (rc = bilo__list_axpy(v, -gamma, prod, ny)) < 0)
        return rc;
    return bilo__list_axpy(v, -gamma, fy, ny);
}

/* ---- FSLA: v ≈ +H⁻¹∇_y f, STORM momentum d, previous outer point x_prev -----------------
   State after y: v (n_y), d (n_x), x_prev (n_x). d and x_prev start at zero as in the
   benchmark, so the first correction term is evaluated at x_prev = 0. */

/* Runs a level's loss at two points on the same batch: marks the batcher position so the
   second evaluation can rewind to it. */
static void batch_mark(bilo_batcher *b, bilo_batcher_state *s)
{
    if (b) bilo_batcher_get_state(b, s);
}
static int batch_rewind(bilo_batcher *b, const bilo_batcher_state *s)
{
    return b ? bilo_batcher_set_state(b, s) : 0;
}

/* ω = ∇_x f(x, y) − J(x, y)·v with the upper and lower batches given by the marks. */
static int fsla_omega(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                      bilo_tensor *const *v, const bilo_batcher_state *marks,
                      bilo_tensor **omega)
{
    int nx = e->prob.n_x, ny = e->prob.n_y, rc;
    bilo_tensor *xa[nx], *ya[ny], *fx[nx], *fy[ny], *gy[ny], *cross[nx];
    if ((rc = batch_rewind(e->prob.upper_data, &marks[1])) < 0 ||
        (rc = batch_rewind(e->prob.lower_data, &marks[0])) < 0 ||
        (rc = bilo__grad_aliases(x, nx, xa)) < 0 || (rc = bilo__grad_aliases(y, ny, ya)) < 0 ||
        (rc = bilo__upper_grads(e, xa, ya, fx, fy)) < 0 ||
        (rc = bilo__lower_grad_graph(e, xa, ya, gy)) < 0 ||
        (rc = bilo__second_product(e, gy, v, xa, nx, cross)) < 0)
        return rc;
    for (int i = 0; i < nx; i++)
        if (!(omega[i] = bilo_sub(fx[i], cross[i]))) return bilo_errcode();
    return 0;
}

/* y⁺ = y − γ∇_y g(x, y);  v⁺ = v − γ(H(x, y⁺)v − ∇_y f(x, y⁺)). */
static int fsla_inner(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                      bilo_tensor *const *v, double gamma)
{
    int nx = e->prob.n_x, ny = e->prob.n_y, rc;
    bilo_tensor *xa[nx], *ya[ny], *gy[ny], *hv[ny], *fx[nx], *fy[ny];
    if ((rc = bilo__grad_aliases(x, nx, xa)) < 0 || (rc = bilo__grad_aliases(y, ny, ya)) < 0 ||
        (rc = lower_grad(e, xa, ya, gy)) < 0 || (rc = bilo__list_axpy(y, -gamma, gy, ny)) < 0 ||
        (rc = bilo__lower_grad_graph(e, xa, ya, gy)) < 0 ||
        (rc = bilo__second_product(e, gy, v, ya, ny, hv)) < 0 ||
        (rc = bilo__upper_grads(e, xa, ya, fx, fy)) < 0 ||
        (rc = bilo__list_axpy(v, -gamma, hv, ny)) < 0)
        return rc;
    return bilo__list_axpy(v, gamma, fy, ny);
}

static int fsla_update(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *work,
                       double gamma, bilo_tensor *const *dir)
{
    int nx = e->prob.n_x, ny = e->prob.n_y, rc;
    bilo_tensor *const *y = work, *const *v = work + ny, *const *d = v + ny, *const *xp = d + nx;
    bilo_tensor *y_old[ny], *v_old[ny], *omega[nx], *omega_old[nx];
    bilo_batcher_state marks[2] = {{0}};
    if ((rc = bilo__list_scaled(y, ny, 1, y_old)) < 0 ||
        (rc = bilo__list_scaled(v, ny, 1, v_old)) < 0 || (rc = fsla_inner(e, x, y, v, gamma)) < 0)
        return rc;
    /* ω and ω_old share the upper batch of ∇_x f and the lower batch of the cross product */
    batch_mark(e->prob.lower_data, &marks[0]);
    batch_mark(e->prob.upper_data, &marks[1]);
    if ((rc = fsla_omega(e, x, y, v, marks, omega)) < 0 ||
        (rc = fsla_omega(e, xp, y_old, v_old, marks, omega_old)) < 0)
        return rc;
    double keep = 1 - gamma;
    for (int i = 0; i < nx; i++)
        if (bilo_scale_(d[i], keep) < 0 || bilo_axpy_(d[i], 1, omega[i]) < 0 ||
            bilo_axpy_(d[i], -keep, omega_old[i]) < 0 || bilo_copy_(xp[i], x[i]) < 0 ||
            bilo_copy_(dir[i], d[i]) < 0)
            return bilo_errcode();
    return 0;
}

/* ---- the loop shared by both ---------------------------------------------------------- */

/* T updates at fixed x on work = [y, state], starting at global update number
   steps·T; dir holds the last update's direction. */
static int sl_run(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *work,
                  bilo_tensor *const *dir)
{
    const sl_method *m = (const sl_method *)e->vt; /* vt is sl_method's first member */
    const bilo_single_loop_opts *o = sl_opts(e);
    int T = e->inner.T, rc = 0;
    for (int k = 0; k < T && rc == 0; k++) {
        double gamma = scheduled(o, o->inner.optim.lr, e->total.steps * T + k);
        bilo_scope_begin();
        rc = m->update(e, x, work, gamma, dir);
        bilo_scope_end();
        e->last.inner_iters++;
    }
    if (rc == 0) rc = bilo__check_finite(e, "single-loop state (y, v)", work, e->prob.n_y * 2);
    return rc;
}

static int zero_directions(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor **dir)
{
    for (int i = 0; i < e->prob.n_x; i++)
        if (!(dir[i] = bilo_zeros_like(x[i]))) return bilo_errcode();
    return 0;
}

/* From the given y and copies of the state: nothing persistent moves. */
static int sl_hypergradient(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                            bilo_tensor **grads)
{
    int ny = e->prob.n_y, n = ny + e->n_state, rc;
    bilo_tensor *work[n];
    bilo_no_grad_begin();
    rc = bilo__list_scaled(y, ny, 1, work);
    if (rc == 0) rc = bilo__list_scaled(e->state, e->n_state, 1, work + ny);
    if (rc == 0) rc = zero_directions(e, x, grads);
    bilo_no_grad_end();
    return rc < 0 ? rc : sl_run(e, x, work, grads);
}

/* In place on the problem's y and the estimator's state; sets the outer step α_t. */
static int sl_step_grads(bilo_estimator *e, bilo_optim *outer, bilo_tensor **grads)
{
    int ny = e->prob.n_y, rc;
    bilo_tensor *work[ny + e->n_state];
    memcpy(work, e->y, (size_t)ny * sizeof *work);
    memcpy(work + ny, e->state, (size_t)e->n_state * sizeof *work);
    const bilo_single_loop_opts *o = sl_opts(e);
    if (o->outer_lr > 0) bilo_optim_set_lr(outer, scheduled(o, o->outer_lr, e->total.steps));
    if ((rc = zero_directions(e, e->x, grads)) < 0 || (rc = sl_run(e, e->x, work, grads)) < 0)
        return rc;
    return bilo__check_finite(e, "hypergradient", grads, e->prob.n_x);
}

static const sl_method soba_method = {{"soba", sl_hypergradient, sl_step_grads}, soba_update};
static const sl_method fsla_method = {{"fsla", sl_hypergradient, sl_step_grads}, fsla_update};

/* ---- construction ---------------------------------------------------------------------- */

static bool sl_check(const char *name, const bilo_single_loop_opts *o)
{
    const bilo_inner_opts *in = &o->inner;
    if (in->T < 0 || !(in->optim.lr > 0) || !isfinite(in->optim.lr) || !(o->outer_lr >= 0) ||
        !isfinite(o->outer_lr)) {
        bilo__fail(BILO_EINVAL, "bilo_%s_new: T = %d must be >= 0, lr = %g > 0 and outer_lr = "
                   "%g >= 0", name, in->T, in->optim.lr, o->outer_lr);
        return false;
    }
    if (in->optim.kind != BILO_OPTIM_SGD || in->optim.momentum != 0 || in->reset || in->tol != 0) {
        bool known = in->optim.kind <= BILO_OPTIM_ADAMW;
        bilo__fail(BILO_EINVAL, "bilo_%s_new: the single loop takes plain steps from a warm y: "
                   "optim = %s, momentum = %g, reset = %d and tol = %g are not supported",
                   name, known ? bilo__optim_kinds[in->optim.kind] : "?", in->optim.momentum,
                   in->reset, in->tol);
        return false;
    }
    return true;
}

/* State tensors: v shaped like y, then (FSLA) d and x_prev shaped like x, all zero. */
static int sl_state(bilo_estimator *e, bool fsla)
{
    int nx = e->prob.n_x, ny = e->prob.n_y;
    int rc = bilo__state_alloc(e, ny + (fsla ? 2 * nx : 0));
    for (int i = 0; rc == 0 && i < e->n_state; i++) {
        bilo_tensor *like = i < ny ? e->y[i] : e->x[(i - ny) % nx];
        if (!(e->state[i] = bilo_keep(bilo_zeros_like(like)))) rc = bilo_errcode();
    }
    return rc;
}

static bilo_estimator *sl_new(const sl_method *m, const bilo_problem *p,
                              const bilo_single_loop_opts *opts)
{
    bilo_single_loop_opts o = opts ? *opts : (bilo_single_loop_opts){0};
    if (o.inner.T == 0) o.inner.T = 1;
    if (o.inner.optim.lr == 0) o.inner.optim.lr = 0.1;
    if (!sl_check(m->vt.name, &o)) return NULL;
    bilo_estimator *e = bilo__estimator_create(&m->vt, p, &o.inner);
    bool fsla = m == &fsla_method;
    if (e && (bilo__estimator_set_opts(e, &o, sizeof o) < 0 || sl_state(e, fsla) < 0)) {
        bilo_estimator_free(e);
        return NULL;
    }
    return e;
}

bilo_estimator *bilo_soba_new(const bilo_problem *p, const bilo_single_loop_opts *opts)
{
    return sl_new(&soba_method, p, opts);
}

bilo_estimator *bilo_fsla_new(const bilo_problem *p, const bilo_single_loop_opts *opts)
{
    return sl_new(&fsla_method, p, opts);
}

bilo_estimator *bilo__make_soba(const bilo_problem *p, const void *opts)
{
    return bilo_soba_new(p, opts);
}
bilo_estimator *bilo__make_fsla(const bilo_problem *p, const void *opts)
{
    return bilo_fsla_new(p, opts);
}

const bilo__option bilo__single_loop_options[] = {
    BILO__INNER_OPTIONS(bilo_single_loop_opts),
    {"decay", BILO__OPT_BOOL, offsetof(bilo_single_loop_opts, decay), NULL},
    {"outer_lr", BILO__OPT_DOUBLE, offsetof(bilo_single_loop_opts, outer_lr), NULL},
    {NULL}};
