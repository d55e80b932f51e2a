/* ESJ / ESJ-S (Sow, Ji, Liang 2021) and PZOBO / PZOBO-S (same authors, NeurIPS 2022): the
   response Jacobian ∂y_T/∂x is estimated from inner runs at perturbed outer points, never
   formed, and never differentiated through (Hessian-free):

       ĝ = ∇_x f(x, y_T) + w Σ_q u_q ⟨δ_q, ∇_y f(x, y_T)⟩,
       δ_q = (y_T(x + μu_q) − y_T(x))/μ   or, antithetic, (y_T(x + μu_q) − y_T(x − μu_q))/(2μ),

   with w = 1/Q for random directions and w = 1 for the coordinate directions e_1..e_dx
   (research notes bilevel.md §A1 and check §E4: y_T is affine in x on a quadratic, so the
   coordinate mode reproduces the ITD hypergradient for any μ).

   Every path (the base run at x and one per perturbed point) starts from the same y0 with a
   fresh inner optimizer and sees the same minibatch sequence. Without lower minibatches each
   path runs its T steps as one task of a parallel loop. With them the paths advance in
   lockstep: at inner step t the calling thread draws one minibatch and every path takes its
   step on it, in parallel, so the batches are shared read-only and only one is alive at a
   time (T fork/joins per estimate instead of one). No graph outlives an inner step: memory
   is O(paths · (dim x + dim y)) plus one batch and one step's graph per thread, independent
   of T (the coordinate mode, meant for checks on small x, has dim x + 1 paths). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bilevel_impl.h"
#include "parallel.h"
#include "tensor_impl.h"

typedef struct {
    bilo_tensor **x; /* the path's outer point (owned by the estimate's scope) */
    bilo_tensor **y; /* its inner iterate: kept, updated in place */
    bilo_optim *opt; /* its own inner optimizer, fresh state */
    int64_t steps;   /* inner steps done (one ∇_y g each) */
    int rc;          /* the path's first error, with its message (errors are per thread) */
    char error[512];
} es_path;

/* Path 0 is the base run at x. Direction q gives path 1 + q at x + μu_q, or, antithetic,
   paths 1 + 2q at x + μu_q and 2 + 2q at x − μu_q. */
typedef struct {
    bilo_estimator *e;
    const bilo_es_opts *o;
    int n_dirs;       /* Q, or dim x for the coordinate directions */
    int n_paths;
    bilo_tensor **u;  /* n_dirs × n_x directions (owned by the estimate's scope) */
    es_path *paths;
    bilo_tensor **ys; /* n_paths × n_y inner iterates */
} es_run;

enum { ES_MAX_DIRS = 1 << 20 }; /* directions per estimate: keeps 1 + 2·Q paths an int */

static const bilo_es_opts *es_opts(const bilo_estimator *e) { return e->opts; }

static int64_t list_numel(bilo_tensor *const *ts, int n)
{
    int64_t s = 0;
    for (int i = 0; i < n; i++) s += bilo_numel(ts[i]);
    return s;
}

/* ---- directions ------------------------------------------------------------------------ */

/* e_j over all of x flattened: element j of the joined outer tensors is 1. */
static int coordinate_direction(bilo_tensor *const *x, int nx, int64_t j, bilo_tensor **u)
{
    for (int i = 0; i < nx; j -= bilo_numel(x[i]), i++) {
        if (!(u[i] = bilo_zeros_like(x[i]))) return bilo_errcode();
        if (j >= 0 && j < bilo_numel(x[i]) && bilo_set_flat(u[i], j, 1) < 0) return bilo_errcode();
    }
    return 0;
}

/* u ~ N(0, I) from the Philox stream of (seed, step, q); sphere: each tensor normalized. */
static int random_direction(const bilo_es_opts *o, bilo_tensor *const *x, int nx, uint64_t step,
                            int q, bilo_tensor **u)
{
    bilo_rng rng = bilo_rng_make(o->seed, step << 32 | (uint64_t)(uint32_t)q);
    for (int i = 0; i < nx; i++) {
        u[i] = bilo_randn(bilo_dtype_of(x[i]), bilo_ndim(x[i]), bilo_shape(x[i]), &rng);
        if (!u[i]) return bilo_errcode();
        if (o->directions != BILO_DIRECTIONS_SPHERE) continue;
        bilo_tensor *len = bilo_norm(u[i], BILO_ALL_AXES, false);
        if (!len || bilo_scale_(u[i], 1 / bilo_item(len)) < 0) return bilo_errcode();
    }
    return 0;
}

static int draw_directions(es_run *r, bilo_tensor *const *x)
{
    int nx = r->e->prob.n_x, rc = 0;
    uint64_t step = (uint64_t)r->e->total.steps;
    for (int q = 0; rc == 0 && q < r->n_dirs; q++)
        rc = r->o->directions == BILO_DIRECTIONS_COORDINATE
                 ? coordinate_direction(x, nx, q, r->u + q * nx)
                 : random_direction(r->o, x, nx, step, q, r->u + q * nx);
    return rc;
}

/* ---- the paths ------------------------------------------------------------------------- */

/* The sign of path p's perturbation (0: base) and its direction. */
static int path_sign(const es_run *r, int p, int *dir)
{
    if (p == 0) return 0;
    *dir = r->o->antithetic ? (p - 1) / 2 : p - 1;
    return r->o->antithetic && (p - 1) % 2 ? -1 : 1;
}

static int open_path(es_run *r, int p, bilo_tensor *const *x, bilo_tensor *const *y0)
{
    bilo_estimator *e = r->e;
    int nx = e->prob.n_x, ny = e->prob.n_y, dir = 0, sign = path_sign(r, p, &dir);
    es_path *path = &r->paths[p];
    path->y = r->ys + (size_t)p * (size_t)ny;
    if (!(path->x = bilo__calloc((size_t)nx, sizeof *path->x)))
        return bilo__fail_code(BILO_ENOMEM, "bilo_estimator (%s): out of memory", e->name);
    for (int i = 0; i < nx; i++) {
        path->x[i] = sign == 0 ? bilo_detach(x[i])
                               : bilo_add(x[i], bilo_mul_scalar(r->u[dir * nx + i], sign * r->o->mu));
        if (!path->x[i]) return bilo_errcode();
    }
    for (int i = 0; i < ny; i++)
        if (!(path->y[i] = bilo_keep(bilo_clone(y0[i])))) return bilo_errcode();
    path->opt = bilo_optim_new(&e->inner.optim, path->y, ny);
    return path->opt ? 0 : bilo_errcode();
}

static void close_run(es_run *r)
{
    for (int p = 0; r->paths && p < r->n_paths; p++) {
        bilo__mfree(r->paths[p].x);
        bilo_optim_free(r->paths[p].opt);
    }
    for (int k = 0; r->ys && k < r->n_paths * r->e->prob.n_y; k++) bilo_release(r->ys[k]);
    bilo__mfree(r->paths);
    bilo__mfree(r->ys);
    bilo__mfree(r->u);
}

static int open_run(es_run *r, bilo_tensor *const *x, bilo_tensor *const *y0)
{
    bilo_estimator *e = r->e;
    int nx = e->prob.n_x, ny = e->prob.n_y, rc = 0;
    int64_t dirs = r->o->directions == BILO_DIRECTIONS_COORDINATE ? list_numel(x, nx) : r->o->Q;
    if (dirs > ES_MAX_DIRS)
        return bilo__fail_code(BILO_EINVAL, "bilo_estimator (%s): %lld coordinate directions "
                               "(dim x) exceed %d", e->name, (long long)dirs, ES_MAX_DIRS);
    r->n_dirs = (int)dirs;
    r->n_paths = 1 + r->n_dirs * (r->o->antithetic ? 2 : 1);
    r->u = bilo__calloc((size_t)r->n_dirs * (size_t)nx, sizeof *r->u);
    r->paths = bilo__calloc((size_t)r->n_paths, sizeof *r->paths);
    r->ys = bilo__calloc((size_t)r->n_paths * (size_t)ny, sizeof *r->ys);
    if (!r->u || !r->paths || !r->ys)
        return bilo__fail_code(BILO_ENOMEM, "bilo_estimator (%s): out of memory for %d paths",
                               e->name, r->n_paths);
    bilo_no_grad_begin();
    rc = draw_directions(r, x);
    for (int p = 0; rc == 0 && p < r->n_paths; p++) rc = open_path(r, p, x, y0);
    bilo_no_grad_end();
    return rc;
}

/* One inner step of one path, on a worker thread: ∇_y g in a scope that drops its graph,
   then the in-place update. An error is kept with its message for the calling thread. */
static void path_step(bilo_estimator *e, es_path *path, const bilo_batch *batch)
{
    if (path->rc < 0) return;
    bilo_tensor *gy[e->prob.n_y];
    bilo_scope_begin();
    int rc = bilo__lower_grad_on(e, path->x, path->y, batch, gy);
    if (rc == 0) rc = bilo_optim_step(path->opt, gy);
    bilo_scope_end();
    if (rc == 0) {
        path->steps++;
        return;
    }
    path->rc = rc;
    snprintf(path->error, sizeof path->error, "%s", bilo_last_error());
}

static int run_threads(const bilo_es_opts *o)
{
    return o->threads > 0 ? o->threads : bilo_get_num_threads();
}

/* The first failed path's error (in path order), raised again on the calling thread. */
static int first_path_error(const es_run *r)
{
    for (int p = 0; p < r->n_paths; p++)
        if (r->paths[p].rc < 0) return bilo__fail_code(r->paths[p].rc, "%s", r->paths[p].error);
    return 0;
}

/* T inner steps of every path, in one parallel region when the lower level is full-batch.
   With minibatches the paths advance in lockstep, one region per step, so that the calling
   thread draws each batch once and every path reads it. Costs are summed in path order.
   The region takes a multiple of the thread count of paths; the rest (Q + 1 = 11 paths on 2
   threads leave one) run after it on the calling thread, whose ops then use every thread —
   instead of one thread working alone while the other idles. The ops' results do not depend
   on the thread count, so neither does the estimate. */
static int run_paths(es_run *r)
{
    bilo_estimator *e = r->e;
    int nt = run_threads(r->o), rc = 0, T = e->inner.T;
    int chunk = e->prob.lower_data ? 1 : T;
    if (nt > r->n_paths) nt = r->n_paths;
    const int in_region = r->n_paths / nt * nt;
    for (int t = 0; t < T && rc == 0; t += chunk) {
        bilo_batch batch;
        const bilo_batch *use;
        bilo_scope_begin();
        rc = bilo__next_batch(e, false, &batch, &use);
        if (rc == 0) {
            BILO__PARALLEL_FOR(nt, p, in_region,
                               for (int s = 0; s < chunk; s++) path_step(e, &r->paths[p], use););
            for (int p = in_region; p < r->n_paths; p++)
                for (int s = 0; s < chunk; s++) path_step(e, &r->paths[p], use);
            rc = first_path_error(r);
        }
        bilo_scope_end();
    }
    for (int p = 0; p < r->n_paths; p++) {
        e->last.g_grads += r->paths[p].steps;
        e->last.inner_iters += r->paths[p].steps;
    }
    return rc;
}

/* ---- the estimate ---------------------------------------------------------------------- */

/* ⟨a − b, v⟩ over lists of n tensors, the difference taken first (no cancellation). */
static double diff_dot(bilo_tensor *const *a, bilo_tensor *const *b, bilo_tensor *const *v, int n)
{
    bilo_tensor *d[n];
    double s = NAN;
    bilo_scope_begin();
    bool ok = true;
    for (int i = 0; i < n; i++) ok = ok && (d[i] = bilo_sub(a[i], b[i]));
    if (ok) s = bilo__list_dot(d, v, n);
    bilo_scope_end();
    return s;
}

/* grads = ∇_x f + w Σ_q u_q ⟨δ_q, ∇_y f⟩ at the base path's y_T, x given as grad aliases. */
static int combine(es_run *r, bilo_tensor *const *x, bilo_tensor **grads)
{
    bilo_estimator *e = r->e;
    int nx = e->prob.n_x, ny = e->prob.n_y, rc;
    bilo_tensor *ya[ny], *fx[nx], *fy[ny];
    if ((rc = bilo__grad_aliases(r->paths[0].y, ny, ya)) < 0 ||
        (rc = bilo__upper_grads(e, x, ya, fx, fy)) < 0)
        return rc;
    bool coordinate = r->o->directions == BILO_DIRECTIONS_COORDINATE;
    double w = (coordinate ? 1.0 : 1.0 / r->n_dirs) / (r->o->mu * (r->o->antithetic ? 2 : 1));
    bilo_no_grad_begin();
    rc = bilo__list_scaled(fx, nx, 1, grads);
    for (int q = 0; rc == 0 && q < r->n_dirs; q++) {
        int plus = r->o->antithetic ? 1 + 2 * q : 1 + q, minus = r->o->antithetic ? plus + 1 : 0;
        double c = diff_dot(r->paths[plus].y, r->paths[minus].y, fy, ny);
        rc = bilo__list_axpy(grads, w * c, r->u + q * nx, nx);
    }
    bilo_no_grad_end();
    return rc;
}

/* The estimate at x (grad aliases) from y0; y_out (or NULL) receives the base path's y_T. */
static int es_estimate(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y0,
                       bilo_tensor **grads, bilo_tensor *const *y_out)
{
    es_run r = {.e = e, .o = es_opts(e)};
    int rc = open_run(&r, x, y0);
    if (rc == 0) rc = run_paths(&r);
    if (rc == 0) rc = combine(&r, x, grads);
    for (int i = 0; rc == 0 && y_out && i < e->prob.n_y; i++)
        if (bilo_copy_(y_out[i], r.paths[0].y[i]) < 0) rc = bilo_errcode();
    close_run(&r);
    return rc;
}

static int es_hypergradient(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                            bilo_tensor **grads)
{
    return es_estimate(e, x, y, grads, NULL);
}

/* From the problem's y (warm start) or the initial y (inner.reset); y becomes the base y_T. */
static int es_step_grads(bilo_estimator *e, bilo_optim *outer, bilo_tensor **grads)
{
    int nx = e->prob.n_x, rc;
    bilo_tensor *xa[nx];
    (void)outer;
    if ((rc = bilo__grad_aliases(e->x, nx, xa)) < 0 ||
        (rc = es_estimate(e, xa, e->inner.reset ? e->y_init : e->y, grads, e->y)) < 0)
        return rc;
    return bilo__check_finite(e, "hypergradient", grads, nx);
}

static const bilo__estimator_vt es_vt = {"esj", es_hypergradient, es_step_grads};

static const char *const direction_names[] = {"gaussian", "sphere", "coordinate", NULL};

const bilo__option bilo__es_options[] = {
    BILO__INNER_OPTIONS(bilo_es_opts),
    {"Q", BILO__OPT_INT, offsetof(bilo_es_opts, Q), NULL},
    {"mu", BILO__OPT_DOUBLE, offsetof(bilo_es_opts, mu), NULL},
    {"directions", BILO__OPT_CHOICE, offsetof(bilo_es_opts, directions), direction_names},
    {"antithetic", BILO__OPT_BOOL, offsetof(bilo_es_opts, antithetic), NULL},
    {"seed", BILO__OPT_U64, offsetof(bilo_es_opts, seed), NULL},
    {"threads", BILO__OPT_INT, offsetof(bilo_es_opts, threads), NULL},
    {NULL}};

static int check_es_opts(const bilo_es_opts *o)
{
    static const char api[] = "bilo_esj_new";
    if (o->Q < 1 || o->Q > ES_MAX_DIRS || o->threads < 0)
        return bilo__fail_code(BILO_EINVAL, "%s: Q = %d must lie in 1..%d and threads = %d be "
                               ">= 0", api, o->Q, ES_MAX_DIRS, o->threads);
    if (!(o->mu > 0) || !isfinite(o->mu))
        return bilo__fail_code(BILO_EINVAL, "%s: mu = %g must be finite and > 0", api, o->mu);
    if ((unsigned)o->directions > BILO_DIRECTIONS_COORDINATE)
        return bilo__fail_code(BILO_EINVAL, "%s: directions = %d is not a bilo_directions value",
                               api, (int)o->directions);
    if (o->inner.tol != 0) /* a path stopping early would no longer differ from the base by x */
        return bilo__fail_code(BILO_EINVAL, "%s: inner tol = %g is not supported: every path "
                               "takes exactly T steps", api, o->inner.tol);
    return 0;
}

bilo_estimator *bilo_esj_new(const bilo_problem *p, const bilo_es_opts *opts)
{
    bilo_es_opts o = opts ? *opts : (bilo_es_opts){0};
    if (o.Q == 0) o.Q = 1;
    if (o.mu == 0) o.mu = 0.01;
    if (check_es_opts(&o) < 0) return NULL;
    bilo_estimator *e = bilo__estimator_create(&es_vt, p, &o.inner);
    if (e && bilo__estimator_set_opts(e, &o, sizeof o) < 0) {
        bilo_estimator_free(e);
        return NULL;
    }
    return e;
}
