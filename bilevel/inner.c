/* The inner solver and the helpers every estimator shares: loss evaluation with error and
   NaN reporting, gradient aliases, tensor-list algebra. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bilevel_impl.h"
#include "tensor_impl.h"

static int next_batch(bilo_batcher *b, bilo_batch *batch)
{
    int rc = bilo_batcher_next(b, batch);
    if (rc == 0) rc = bilo_batcher_next(b, batch); /* epoch over: start the next one */
    return rc;
}

static int64_t step_number(const bilo_estimator *e) { return e->total.steps + 1; }

int bilo__next_batch(bilo_estimator *e, bool upper, bilo_batch *batch, const bilo_batch **use)
{
    bilo_batcher *data = upper ? e->prob.upper_data : e->prob.lower_data;
    *batch = (bilo_batch){0};
    *use = data ? batch : NULL;
    return data && next_batch(data, batch) < 0 ? bilo_errcode() : 0;
}

bilo_tensor *bilo__loss_on(bilo_estimator *e, bool upper, bilo_tensor *const *x,
                           bilo_tensor *const *y, const bilo_batch *batch)
{
    const char *which = upper ? "upper loss f" : "lower loss g";
    bilo_tensor *loss = (upper ? e->prob.upper : e->prob.lower)(x, y, batch, e->prob.user);
    if (!loss) {
        char prev[256];
        snprintf(prev, sizeof prev, "%s", bilo_last_error());
        int code = bilo_errcode() ? bilo_errcode() : BILO_EINVAL;
        return bilo__fail(code, "bilo_estimator (%s): the %s callback returned NULL at step "
                          "%lld: %s", e->name, which, (long long)step_number(e), prev);
    }
    if (bilo_numel(loss) != 1) {
        bilo_release(bilo_keep(loss)); /* the open scope may own it: take it out first */
        return bilo__fail(BILO_ESHAPE, "bilo_estimator (%s): the %s callback returned %lld "
                          "elements, want a scalar", e->name, which,
                          (long long)bilo_numel(loss));
    }
    if (!isfinite(bilo_item(loss))) {
        double v = bilo_item(loss);
        bilo_release(bilo_keep(loss));
        return bilo__fail(BILO_ENUMERIC, "bilo_estimator (%s): %s = %g at step %lld",
                          e->name, which, v, (long long)step_number(e));
    }
    return loss;
}

bilo_tensor *bilo__loss(bilo_estimator *e, bool upper, bilo_tensor *const *x,
                        bilo_tensor *const *y)
{
    bilo_batch batch;
    const bilo_batch *use;
    if (bilo__next_batch(e, upper, &batch, &use) < 0) return NULL;
    return bilo__loss_on(e, upper, x, y, use);
}

int bilo__check_finite(bilo_estimator *e, const char *what, bilo_tensor *const *ts, int n)
{
    for (int i = 0; i < n; i++)
        for (int64_t k = 0; k < bilo_numel(ts[i]); k++)
            if (!isfinite(bilo_get_flat(ts[i], k)))
                return bilo__fail_code(BILO_ENUMERIC,
                                       "bilo_estimator (%s): non-finite %s (tensor %d, element "
                                       "%lld) at step %lld", e->name, what, i, (long long)k,
                                       (long long)step_number(e));
    return 0;
}

int bilo__grad_aliases(bilo_tensor *const *ts, int n, bilo_tensor **out)
{
    for (int i = 0; i < n; i++) {
        out[i] = bilo_detach(ts[i]);
        if (!out[i] || bilo_set_requires_grad(out[i], true) < 0) return bilo_errcode();
    }
    return 0;
}

int bilo__grads_or_zeros(bilo_tensor *loss, bilo_tensor *const *in, int n, bilo_tensor **out,
                         unsigned flags)
{
    int rc = bilo_grad(&loss, 1, NULL, in, n, out, flags | BILO_ALLOW_UNUSED);
    if (rc < 0) return rc;
    for (int i = 0; i < n; i++)
        if (!out[i] && !(out[i] = bilo_zeros_like(in[i]))) return bilo_errcode();
    return 0;
}

double bilo__list_dot(bilo_tensor *const *a, bilo_tensor *const *b, int n)
{
    double s = 0;
    bilo_scope_begin();
    bilo_no_grad_begin();
    for (int i = 0; i < n; i++) {
        bilo_tensor *d = bilo_dot(bilo_flatten(a[i]), bilo_flatten(b[i]));
        s += d ? bilo_item(d) : NAN;
    }
    bilo_no_grad_end();
    bilo_scope_end();
    return s;
}

int bilo__upper_grads(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                       bilo_tensor **fx, bilo_tensor **fy)
{
    int nx = e->prob.n_x, ny = e->prob.n_y;
    bilo_tensor *in[nx + ny], *out[nx + ny];
    memcpy(in, x, (size_t)nx * sizeof *in);
    memcpy(in + nx, y, (size_t)ny * sizeof *in);
    bilo_tensor *f = bilo__loss(e, true, x, y);
    if (!f) return bilo_errcode();
    int rc = bilo__grads_or_zeros(f, in, nx + ny, out, 0);
    if (rc < 0) return rc;
    e->last.f_grads++;
    memcpy(fx, out, (size_t)nx * sizeof *out);
    memcpy(fy, out + nx, (size_t)ny * sizeof *out);
    return 0;
}

int bilo__lower_grad_graph(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                            bilo_tensor **gy)
{
    bilo_tensor *g = bilo__loss(e, false, x, y);
    if (!g) return bilo_errcode();
    int rc = bilo__grads_or_zeros(g, y, e->prob.n_y, gy, BILO_CREATE_GRAPH);
    if (rc == 0) e->last.g_grads++;
    return rc;
}

int bilo__second_product(bilo_estimator *e, bilo_tensor *const *gy, bilo_tensor *const *v,
                          bilo_tensor *const *in, int n_in, bilo_tensor **out)
{
    int rc = bilo_grad(gy, e->prob.n_y, v, in, n_in, out,
                       BILO_RETAIN_GRAPH | BILO_ALLOW_UNUSED);
    for (int i = 0; rc == 0 && i < n_in; i++)
        if (!out[i] && !(out[i] = bilo_zeros_like(in[i]))) rc = bilo_errcode();
    if (rc == 0) e->last.hvps++;
    return rc;
}

int bilo__list_scaled(bilo_tensor *const *ts, int n, double alpha, bilo_tensor **out)
{
    for (int i = 0; i < n; i++)
        if (!(out[i] = bilo_mul_scalar(ts[i], alpha))) return bilo_errcode();
    return 0;
}

int bilo__list_axpy(bilo_tensor *const *y, double alpha, bilo_tensor *const *x, int n)
{
    for (int i = 0; i < n; i++)
        if (bilo_axpy_(y[i], alpha, x[i]) < 0) return bilo_errcode();
    return 0;
}

int bilo__inner_reset(bilo_estimator *e)
{
    for (int i = 0; i < e->prob.n_y; i++)
        if (bilo_copy_(e->y[i], e->y_init[i]) < 0) return bilo_errcode();
    bilo_optim_free(e->inner_opt);
    e->inner_opt = bilo_optim_new(&e->inner.optim, e->y, e->prob.n_y);
    return e->inner_opt ? 0 : bilo_errcode();
}

int bilo__lower_grad_on(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                        const bilo_batch *batch, bilo_tensor **gy)
{
    int ny = e->prob.n_y, rc;
    bilo_tensor *ys[ny];
    if ((rc = bilo__grad_aliases(y, ny, ys)) < 0) return rc;
    bilo_tensor *g = bilo__loss_on(e, false, x, ys, batch);
    if (!g) return bilo_errcode();
    if ((rc = bilo__grads_or_zeros(g, ys, ny, gy, 0)) < 0) return rc;
    return bilo__check_finite(e, "inner gradient of g", gy, ny);
}

/* One step of the in-place inner optimizer; *small is set when ‖∇_y g‖ ≤ tol. */
static int inner_iteration(bilo_estimator *e, bool *small)
{
    int ny = e->prob.n_y, rc;
    bilo_tensor *xs[e->prob.n_x], *gr[ny];
    bilo_batch batch;
    const bilo_batch *use;
    for (int i = 0; i < e->prob.n_x; i++)
        if (!(xs[i] = bilo_detach(e->x[i]))) return bilo_errcode();
    if ((rc = bilo__next_batch(e, false, &batch, &use)) < 0 ||
        (rc = bilo__lower_grad_on(e, xs, e->y, use, gr)) < 0)
        return rc;
    e->last.g_grads++;
    e->last.inner_iters++;
    *small = e->inner.tol > 0 && sqrt(bilo__list_dot(gr, gr, ny)) <= e->inner.tol;
    if (*small) return 0;
    return bilo_optim_step(e->inner_opt, gr);
}

int bilo__inner_solve(bilo_estimator *e)
{
    int rc = 0;
    if (e->inner.reset && (rc = bilo__inner_reset(e)) < 0) return rc;
    bool small = false;
    for (int t = 0; t < e->inner.T && !small && rc == 0; t++) {
        bilo_scope_begin();
        rc = inner_iteration(e, &small);
        bilo_scope_end();
    }
    return rc;
}
