/* Estimators built on second-order products of g: exact (dense solve), ITD (reverse mode
   through the unrolled inner loop), AID-CG, AID-NS (Neumann series) and AID-FP (fixed point).
   Every product comes from double backprop on one recorded graph of ∇_y g. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bilevel_impl.h"
#include "tensor_impl.h"

/* ---- AID: v ≈ H⁻¹ ∇_y f by a method-specific solver, then ∇_x f − ∇²_xy g·v --------- */

typedef int (*aid_solver)(bilo_estimator *e, bilo_tensor *const *gy, bilo_tensor *const *x,
                          bilo_tensor *const *y, bilo_tensor *const *b, bilo_tensor **v);

/* The starting v: the previous solution when warm starting, else zero. */
static int initial_v(bilo_estimator *e, bilo_tensor *const *b, bilo_tensor **v)
{
    bool warm = e->aid.warm_v && e->v[0];
    for (int i = 0; i < e->prob.n_y; i++)
        if (!(v[i] = warm ? bilo_clone(e->v[i]) : bilo_zeros_like(b[i]))) return bilo_errcode();
    return 0;
}

/* Conjugate gradients on H v = b, K iterations. */
static int solve_cg(bilo_estimator *e, bilo_tensor *const *gy, bilo_tensor *const *x,
                    bilo_tensor *const *y, bilo_tensor *const *b, bilo_tensor **v)
{
    int ny = e->prob.n_y, rc;
    bilo_tensor *r[ny], *p[ny], *hp[ny];
    if ((rc = initial_v(e, b, v)) < 0 || (rc = bilo__list_scaled(b, ny, 1, r)) < 0) return rc;
    if (e->aid.warm_v && e->v[0]) {
        if ((rc = bilo__second_product(e, gy, v, y, ny, hp)) < 0 || (rc = bilo__list_axpy(r, -1, hp, ny)) < 0)
            return rc;
    }
    if ((rc = bilo__list_scaled(r, ny, 1, p)) < 0) return rc;
    double rs = bilo__list_dot(r, r, ny);
    for (int k = 0; k < e->aid.K && rs > 0; k++) {
        if ((rc = bilo__second_product(e, gy, p, y, ny, hp)) < 0) return rc;
        double php = bilo__list_dot(p, hp, ny);
        if (!(php > 0)) break; /* H not positive definite along p: keep the current v */
        double alpha = rs / php;
        if ((rc = bilo__list_axpy(v, alpha, p, ny)) < 0 || (rc = bilo__list_axpy(r, -alpha, hp, ny)) < 0)
            return rc;
        double rs_next = bilo__list_dot(r, r, ny);
        for (int i = 0; i < ny; i++)
            if (bilo_scale_(p[i], rs_next / rs) < 0 || bilo_axpy_(p[i], 1, r[i]) < 0)
                return bilo_errcode();
        rs = rs_next;
    }
    return 0;
}

/* term ← term − η H term, with H from the given graph of ∇_y g or, when the lower level has
   minibatches (stocBiO), from a graph built on a fresh batch that is dropped afterwards. */
static int neumann_term(bilo_estimator *e, bilo_tensor *const *gy, bilo_tensor *const *x,
                        bilo_tensor *const *y, bilo_tensor **term)
{
    int ny = e->prob.n_y, rc;
    bilo_tensor *fresh[ny], *hp[ny];
    bilo_scope_begin();
    if (e->prob.lower_data) {
        bilo_no_grad_end(); /* the caller solves under no-grad; this graph must be recorded */
        rc = bilo__lower_grad_graph(e, x, y, fresh);
        bilo_no_grad_begin();
        gy = fresh;
        if (rc < 0) goto done;
    }
    if ((rc = bilo__second_product(e, gy, term, y, ny, hp)) == 0)
        rc = bilo__list_axpy(term, -e->aid.eta, hp, ny);
done:
    bilo_scope_end();
    return rc;
}

/* Neumann series v = η Σ_{k<K} (I − ηH)^k b; stocBiO when the lower level has minibatches. */
static int solve_ns(bilo_estimator *e, bilo_tensor *const *gy, bilo_tensor *const *x,
                    bilo_tensor *const *y, bilo_tensor *const *b, bilo_tensor **v)
{
    int ny = e->prob.n_y, rc;
    bilo_tensor *term[ny];
    if ((rc = bilo__list_scaled(b, ny, 1, term)) < 0 || (rc = bilo__list_scaled(b, ny, 1, v)) < 0)
        return rc;
    for (int k = 1; k < e->aid.K; k++) {
        if ((rc = neumann_term(e, gy, x, y, term)) < 0 || (rc = bilo__list_axpy(v, 1, term, ny)) < 0)
            return rc;
    }
    for (int i = 0; i < ny; i++)
        if (bilo_scale_(v[i], e->aid.eta) < 0) return bilo_errcode();
    return 0;
}

/* Fixed point v ← v − η(H v − b), K iterations. */
static int solve_fp(bilo_estimator *e, bilo_tensor *const *gy, bilo_tensor *const *x,
                    bilo_tensor *const *y, bilo_tensor *const *b, bilo_tensor **v)
{
    int ny = e->prob.n_y, rc;
    bilo_tensor *hv[ny];
    if ((rc = initial_v(e, b, v)) < 0) return rc;
    for (int k = 0; k < e->aid.K; k++) {
        if ((rc = bilo__second_product(e, gy, v, y, ny, hv)) < 0 ||
            (rc = bilo__list_axpy(v, -e->aid.eta, hv, ny)) < 0 ||
            (rc = bilo__list_axpy(v, e->aid.eta, b, ny)) < 0)
            return rc;
    }
    return 0;
}

static int remember_v(bilo_estimator *e, bilo_tensor *const *v)
{
    for (int i = 0; i < e->prob.n_y; i++) {
        bilo_tensor *copy = bilo_keep(bilo_clone(v[i]));
        if (!copy) return bilo_errcode();
        bilo_release(e->v[i]);
        e->v[i] = copy;
    }
    return 0;
}

static int aid_hypergradient(bilo_estimator *e, aid_solver solve, bilo_tensor *const *x,
                             bilo_tensor *const *y, bilo_tensor **grads)
{
    int nx = e->prob.n_x, ny = e->prob.n_y, rc;
    bilo_tensor *fx[nx], *fy[ny], *gy[ny], *v[ny], *mixed[nx];
    if ((rc = bilo__upper_grads(e, x, y, fx, fy)) < 0 || (rc = bilo__lower_grad_graph(e, x, y, gy)) < 0)
        return rc;
    bilo_no_grad_begin();
    rc = solve(e, gy, x, y, fy, v);
    bilo_no_grad_end();
    if (rc < 0 || (e->aid.warm_v && (rc = remember_v(e, v)) < 0)) return rc;
    if ((rc = bilo__second_product(e, gy, v, x, nx, mixed)) < 0) return rc;
    for (int i = 0; i < nx; i++)
        if (!(grads[i] = bilo_sub(fx[i], mixed[i]))) return bilo_errcode();
    return 0;
}

static int cg_hypergradient(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                            bilo_tensor **grads)
{
    return aid_hypergradient(e, solve_cg, x, y, grads);
}
static int ns_hypergradient(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                            bilo_tensor **grads)
{
    return aid_hypergradient(e, solve_ns, x, y, grads);
}
static int fp_hypergradient(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                            bilo_tensor **grads)
{
    return aid_hypergradient(e, solve_fp, x, y, grads);
}

const bilo__estimator_vt bilo__aid_cg_vt = {"aid-cg", cg_hypergradient, NULL};
const bilo__estimator_vt bilo__aid_ns_vt = {"aid-ns", ns_hypergradient, NULL};
const bilo__estimator_vt bilo__aid_fp_vt = {"aid-fp", fp_hypergradient, NULL};

static bilo_estimator *aid_new(const bilo__estimator_vt *vt, const bilo_problem *p,
                               const bilo_aid_opts *opts)
{
    bilo_aid_opts o = opts ? *opts : (bilo_aid_opts){0};
    if (o.K == 0) o.K = 10;
    if (o.eta == 0) o.eta = 0.1;
    if (o.K < 0 || !(o.eta > 0) || !isfinite(o.eta))
        return bilo__fail(BILO_EINVAL, "bilo_%s_new: K = %d must be >= 0 and eta = %g > 0",
                          vt->name, o.K, o.eta);
    bilo_estimator *e = bilo__estimator_create(vt, p, &o.inner);
    if (e) e->aid = o;
    return e;
}

bilo_estimator *bilo_aid_cg_new(const bilo_problem *p, const bilo_aid_opts *opts)
{
    return aid_new(&bilo__aid_cg_vt, p, opts);
}
bilo_estimator *bilo_aid_ns_new(const bilo_problem *p, const bilo_aid_opts *opts)
{
    return aid_new(&bilo__aid_ns_vt, p, opts);
}
bilo_estimator *bilo_aid_fp_new(const bilo_problem *p, const bilo_aid_opts *opts)
{
    return aid_new(&bilo__aid_fp_vt, p, opts);
}

/* ---- exact: dense matrices in f64 ----------------------------------------------------- */

static int64_t list_numel(bilo_tensor *const *ts, int n)
{
    int64_t s = 0;
    for (int i = 0; i < n; i++) s += bilo_numel(ts[i]);
    return s;
}

/* Copies ts[0..n) flattened into dst (f64). */
static void gather_flat(bilo_tensor *const *ts, int n, double *dst)
{
    for (int i = 0; i < n; i++)
        for (int64_t k = 0; k < bilo_numel(ts[i]); k++) *dst++ = bilo_get_flat(ts[i], k);
}

bool bilo__cholesky_solve(double *a, int64_t n, double *b)
{
    for (int64_t j = 0; j < n; j++) {
        double d = a[j * n + j];
        for (int64_t k = 0; k < j; k++) d -= a[j * n + k] * a[j * n + k];
        if (!(d > 0)) return false;
        a[j * n + j] = sqrt(d);
        for (int64_t i = j + 1; i < n; i++) {
            double s = a[i * n + j];
            for (int64_t k = 0; k < j; k++) s -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = s / a[j * n + j];
        }
    }
    for (int64_t i = 0; i < n; i++) {
        for (int64_t k = 0; k < i; k++) b[i] -= a[i * n + k] * b[k];
        b[i] /= a[i * n + i];
    }
    for (int64_t i = n - 1; i >= 0; i--) {
        for (int64_t k = i + 1; k < n; k++) b[i] -= a[k * n + i] * b[k];
        b[i] /= a[i * n + i];
    }
    return true;
}

/* LU with partial pivoting on a, solving a·v = b in place; false if singular. */
static bool lu_solve(double *a, int64_t n, double *b)
{
    for (int64_t j = 0; j < n; j++) {
        int64_t piv = j;
        for (int64_t i = j + 1; i < n; i++)
            if (fabs(a[i * n + j]) > fabs(a[piv * n + j])) piv = i;
        if (a[piv * n + j] == 0) return false;
        for (int64_t k = 0; k < n && piv != j; k++) {
            double t = a[j * n + k];
            a[j * n + k] = a[piv * n + k];
            a[piv * n + k] = t;
        }
        double tb = b[j];
        b[j] = b[piv];
        b[piv] = tb;
        for (int64_t i = j + 1; i < n; i++) {
            double m = a[i * n + j] / a[j * n + j];
            for (int64_t k = j; k < n; k++) a[i * n + k] -= m * a[j * n + k];
            b[i] -= m * b[j];
        }
    }
    for (int64_t i = n - 1; i >= 0; i--) {
        for (int64_t k = i + 1; k < n; k++) b[i] -= a[i * n + k] * b[k];
        b[i] /= a[i * n + i];
    }
    return true;
}

/* Row r of ∇²_yy g into h and of ∇²_yx g (column r of ∇²_xy g) into m, by one backward of
   the r-th entry of ∇_y g. */
static int dense_row(bilo_estimator *e, bilo_tensor *gy_flat, int64_t r, bilo_tensor *const *in,
                     double *h, double *m)
{
    int nx = e->prob.n_x, ny = e->prob.n_y, rc;
    bilo_tensor *out[nx + ny];
    bilo_scope_begin();
    bilo_tensor *cot = bilo_zeros_like(gy_flat);
    rc = cot ? bilo_set_flat(cot, r, 1) : bilo_errcode();
    if (rc == 0) rc = bilo_grad(&gy_flat, 1, &cot, in, nx + ny, out,
                                BILO_RETAIN_GRAPH | BILO_ALLOW_UNUSED);
    for (int i = 0; rc == 0 && i < nx + ny; i++)
        if (!out[i] && !(out[i] = bilo_zeros_like(in[i]))) rc = bilo_errcode();
    if (rc == 0) {
        gather_flat(out + nx, ny, h);
        gather_flat(out, nx, m);
        e->last.hvps++;
    }
    bilo_scope_end();
    return rc;
}

/* v = H⁻¹ b in place, Cholesky first and LU when H is not positive definite. */
static int dense_solve(bilo_estimator *e, double *h, int64_t n, double *b)
{
    double *work = bilo__malloc((size_t)(n * n) * sizeof *work);
    double *rhs = bilo__malloc((size_t)n * sizeof *rhs);
    int rc = 0;
    if (!work || !rhs) {
        rc = bilo__fail_code(BILO_ENOMEM, "bilo_estimator (exact): out of memory for a %lld×%lld "
                             "Hessian", (long long)n, (long long)n);
    } else {
        memcpy(work, h, (size_t)(n * n) * sizeof *work);
        memcpy(rhs, b, (size_t)n * sizeof *rhs);
        if (bilo__cholesky_solve(work, n, rhs)) {
            memcpy(b, rhs, (size_t)n * sizeof *b);
        } else if (lu_solve(h, n, b)) {
            snprintf(e->message, sizeof e->message, "exact: ∇²_yy g is not positive definite "
                     "(Cholesky failed), solved by LU instead");
        } else {
            rc = bilo__fail_code(BILO_ENUMERIC, "bilo_estimator (exact): ∇²_yy g is singular");
        }
    }
    bilo__mfree(work);
    bilo__mfree(rhs);
    return rc;
}

static int exact_from_matrices(bilo_estimator *e, bilo_tensor *const *fx, bilo_tensor *const *fy,
                               double *h, double *m, int64_t nyt, int64_t nxt,
                               bilo_tensor **grads)
{
    double *v = bilo__malloc((size_t)nyt * sizeof *v), *gx = bilo__malloc((size_t)nxt * sizeof *gx);
    int rc = (!v || !gx) ? bilo__fail_code(BILO_ENOMEM, "bilo_estimator (exact): out of memory")
                         : 0;
    if (rc == 0) {
        gather_flat(fy, e->prob.n_y, v);
        gather_flat(fx, e->prob.n_x, gx);
        rc = dense_solve(e, h, nyt, v);
    }
    for (int64_t r = 0; rc == 0 && r < nyt; r++)
        for (int64_t j = 0; j < nxt; j++) gx[j] -= m[r * nxt + j] * v[r];
    for (int i = 0, off = 0; rc == 0 && i < e->prob.n_x; off += (int)bilo_numel(fx[i]), i++) {
        if (!(grads[i] = bilo_zeros_like(fx[i]))) rc = bilo_errcode();
        for (int64_t k = 0; rc == 0 && k < bilo_numel(fx[i]); k++)
            bilo_set_flat(grads[i], k, gx[off + k]);
    }
    bilo__mfree(v);
    bilo__mfree(gx);
    return rc;
}

static int exact_hypergradient(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                               bilo_tensor **grads)
{
    int nx = e->prob.n_x, ny = e->prob.n_y, rc;
    bilo_tensor *fx[nx], *fy[ny], *gy[ny], *flat[ny], *in[nx + ny];
    if ((rc = bilo__upper_grads(e, x, y, fx, fy)) < 0 || (rc = bilo__lower_grad_graph(e, x, y, gy)) < 0)
        return rc;
    for (int i = 0; i < ny; i++)
        if (!(flat[i] = bilo_flatten(gy[i]))) return bilo_errcode();
    bilo_tensor *gy_flat = bilo_concat(flat, ny, 0);
    if (!gy_flat) return bilo_errcode();
    memcpy(in, x, (size_t)nx * sizeof *in);
    memcpy(in + nx, y, (size_t)ny * sizeof *in);
    int64_t nyt = list_numel(y, ny), nxt = list_numel(x, nx);
    double *h = bilo__malloc((size_t)(nyt * nyt) * sizeof *h);
    double *m = bilo__malloc((size_t)(nyt * nxt) * sizeof *m);
    rc = (!h || !m) ? bilo__fail_code(BILO_ENOMEM, "bilo_estimator (exact): out of memory for "
                                      "%lld×%lld matrices", (long long)nyt, (long long)nxt)
                    : 0;
    for (int64_t r = 0; rc == 0 && r < nyt; r++)
        rc = dense_row(e, gy_flat, r, in, h + r * nyt, m + r * nxt);
    if (rc == 0) rc = exact_from_matrices(e, fx, fy, h, m, nyt, nxt, grads);
    bilo__mfree(h);
    bilo__mfree(m);
    return rc;
}

const bilo__estimator_vt bilo__exact_vt = {"exact", exact_hypergradient, NULL};

bilo_estimator *bilo_exact_new(const bilo_problem *p, const bilo_exact_opts *opts)
{
    return bilo__estimator_create(&bilo__exact_vt, p, opts ? &opts->inner : NULL);
}

/* ---- ITD: reverse mode through the unrolled inner loop ------------------------------- */

/* Inner step t (0-based) by bilo_optim_step_diff on cur/state. Steps before `first_recorded`
   are cut from the graph (truncated back-propagation). */
static int itd_step_scoped(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor **cur,
                           bilo_tensor **state, int nstate, int t, bool recorded)
{
    int ny = e->prob.n_y, rc;
    bilo_tensor *gr[ny], *np[ny], *ns[nstate > 0 ? nstate : 1];
    bilo_tensor *g = bilo__loss(e, false, x, cur);
    if (!g) return bilo_errcode();
    if ((rc = bilo__grads_or_zeros(g, cur, ny, gr, recorded ? BILO_CREATE_GRAPH : 0)) < 0 ||
        (rc = bilo__check_finite(e, "inner gradient of g", gr, ny)) < 0)
        return rc;
    rc = bilo_optim_step_diff(&e->inner.optim, ny, cur, gr, t > 0 ? state : NULL, NULL, t + 1,
                              np, ns);
    if (rc < 0) return rc;
    e->last.g_grads++;
    e->last.inner_iters++;
    e->last.hvps += recorded;
    for (int i = 0; i < ny; i++) cur[i] = recorded ? np[i] : bilo_detach(np[i]);
    for (int i = 0; i < nstate; i++) state[i] = recorded ? ns[i] : bilo_detach(ns[i]);
    for (int i = 0; !recorded && i < ny; i++)
        if (!cur[i] || bilo_set_requires_grad(cur[i], true) < 0) return bilo_errcode();
    return 0;
}

/* One inner step in its own scope, which hands back only the new iterate and state: the
   step's temporaries live on only where the recorded graph saved them. */
static int itd_inner_step(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor **cur,
                          bilo_tensor **state, int nstate, int t, bool recorded)
{
    bilo_scope_begin();
    int rc = itd_step_scoped(e, x, cur, state, nstate, t, recorded);
    for (int i = 0; rc == 0 && i < e->prob.n_y; i++) bilo_scope_return(cur[i]);
    for (int i = 0; rc == 0 && i < nstate; i++) bilo_scope_return(state[i]);
    bilo_scope_end();
    return rc;
}

/* Unrolls T steps from y (cur gets y_T) and back-propagates f(x, y_T) to x. */
static int itd_unroll(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                      bilo_tensor **cur, bilo_tensor **grads)
{
    int ny = e->prob.n_y, nx = e->prob.n_x, rc = 0, T = e->inner.T;
    int nstate = ny * bilo_optim_state_per_param(&e->inner.optim);
    if (nstate < 0) return bilo_errcode();
    bilo_tensor *state[nstate > 0 ? nstate : 1], *xd[nx];
    int first_recorded = e->truncate > 0 && e->truncate < T ? T - e->truncate : 0;
    memcpy(cur, y, (size_t)ny * sizeof *cur);
    for (int i = 0; i < nx; i++)
        if (!(xd[i] = bilo_detach(x[i]))) return bilo_errcode();
    for (int t = 0; rc == 0 && t < T; t++) {
        bool recorded = t >= first_recorded;
        rc = itd_inner_step(e, recorded ? x : xd, cur, state, nstate, t, recorded);
    }
    if (rc < 0) return rc;
    bilo_tensor *f = bilo__loss(e, true, x, cur);
    if (!f) return bilo_errcode();
    e->last.f_grads++;
    return bilo__grads_or_zeros(f, x, nx, grads, 0);
}

static int itd_hypergradient(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                             bilo_tensor **grads)
{
    bilo_tensor *cur[e->prob.n_y];
    return itd_unroll(e, x, y, cur, grads);
}

/* Unrolls from the problem's y (warm or reset), keeps y_T as the next warm start. */
static int itd_step_grads(bilo_estimator *e, bilo_optim *outer, bilo_tensor **grads)
{
    int nx = e->prob.n_x, ny = e->prob.n_y, rc = 0;
    bilo_tensor *xa[nx], *ya[ny], *cur[ny];
    (void)outer;
    if (e->inner.reset) rc = bilo__inner_reset(e);
    if (rc == 0) rc = bilo__grad_aliases(e->x, nx, xa);
    if (rc == 0) rc = bilo__grad_aliases(e->y, ny, ya);
    if (rc == 0) rc = itd_unroll(e, xa, ya, cur, grads);
    if (rc == 0) rc = bilo__check_finite(e, "hypergradient", grads, nx);
    for (int i = 0; rc == 0 && i < ny; i++)
        if (bilo_copy_(e->y[i], cur[i]) < 0) rc = bilo_errcode();
    return rc;
}

const bilo__estimator_vt bilo__itd_vt = {"itd", itd_hypergradient, itd_step_grads};

bilo_estimator *bilo_itd_new(const bilo_problem *p, const bilo_itd_opts *opts)
{
    bilo_itd_opts o = opts ? *opts : (bilo_itd_opts){0};
    if (o.truncate < 0)
        return bilo__fail(BILO_EINVAL, "bilo_itd_new: truncate = %d must be >= 0", o.truncate);
    bilo_estimator *e = bilo__estimator_create(&bilo__itd_vt, p, &o.inner);
    if (e) e->truncate = o.truncate;
    return e;
}
