/* Higher-order helpers built on bilo_grad: Hessian-vector products by double backprop,
   vector-Jacobian products, Jacobian-vector products by the double-vjp trick, and dense
   Jacobians and Hessians for small problems. */
#include "autograd_impl.h"

#include <string.h>

static bilo_tensor **tensor_array(int n)
{
    bilo_tensor **a = bilo__alloc((size_t)n * sizeof *a);
    if (a) memset(a, 0, (size_t)n * sizeof *a);
    return a;
}

static void tensor_array_free(bilo_tensor **a, int n) { bilo__free(a, (size_t)n * sizeof *a); }

static bool same_shape(const bilo_tensor *a, const bilo_tensor *b)
{
    return a->ndim == b->ndim && !memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape);
}

/* v[i] must match x[i] in shape and dtype. */
static int check_directions(const char *fn, bilo_tensor *const *x, bilo_tensor *const *v, int n)
{
    if (!x || !v || n < 1)
        return bilo__fail_code(BILO_EINVAL, "%s: no inputs (x %p, v %p, n %d)", fn, (const void *)x,
                               (const void *)v, n);
    char a[BILO_SHAPE_BUF], b[BILO_SHAPE_BUF];
    for (int i = 0; i < n; i++) {
        if (!x[i] || !v[i]) {
            if (bilo_errcode()) return bilo_errcode();
            return bilo__fail_code(BILO_ENULL, "%s: %s[%d] is NULL", fn, x[i] ? "v" : "x", i);
        }
        if (!same_shape(x[i], v[i]) || x[i]->dtype != v[i]->dtype)
            return bilo__fail_code(BILO_ESHAPE, "%s: v[%d] is %s %s but x[%d] is %s %s", fn, i,
                                   bilo_dtype_name(v[i]->dtype),
                                   bilo__shape_str(a, v[i]->ndim, v[i]->shape), i,
                                   bilo_dtype_name(x[i]->dtype),
                                   bilo__shape_str(b, x[i]->ndim, x[i]->shape));
    }
    return 0;
}

/* *s = sum_i <g_i, v_i> over the non-NULL g_i (NULL when every g_i is NULL). */
static int sum_of_dots(bilo_tensor *const *g, bilo_tensor *const *v, int n, bilo_tensor **s)
{
    *s = NULL;
    for (int i = 0; i < n; i++) {
        if (!g[i]) continue;
        bilo_tensor *d = bilo_dot(g[i], v[i]);
        *s = *s ? bilo_add(*s, d) : d;
        if (!*s) return bilo_errcode();
    }
    return 0;
}

/* Recording on whatever no-grad regions the caller has open: these helpers build graphs
   they differentiate themselves. Returns the depth to restore. */
static int force_grad_mode(void)
{
    int depth = bilo__no_grad_depth;
    bilo__no_grad_depth = 0;
    return depth;
}

BILO_API int bilo_vjp(bilo_tensor *y, bilo_tensor *u, bilo_tensor *const *x, int n,
                      bilo_tensor **vjp, unsigned flags)
{
    return bilo_grad(&y, 1, &u, x, n, vjp, flags);
}

/* The second derivative's flags: the caller's CREATE/RETAIN, and unused inputs allowed (a
   block of the Hessian that is identically zero). */
static unsigned second_flags(unsigned flags)
{
    return (flags & (BILO_CREATE_GRAPH | BILO_RETAIN_GRAPH)) | BILO_ALLOW_UNUSED;
}

BILO_API int bilo_hvp(bilo_tensor *f, bilo_tensor *const *x, int n, bilo_tensor *const *v,
                      bilo_tensor **hv, unsigned flags)
{
    static const char *fn = "bilo_hvp";
    if (!hv) return bilo__fail_code(BILO_EINVAL, "%s: hv is NULL", fn);
    int rc = check_directions(fn, x, v, n);
    if (rc) return rc;
    for (int i = 0; i < n; i++) hv[i] = NULL;
    bilo_tensor **g = tensor_array(n);
    if (!g) return bilo__fail_code(BILO_ENOMEM, "%s: out of memory", fn);

    int depth = force_grad_mode();
    bilo_scope_begin();
    bilo_tensor *s = NULL;
    rc = bilo_grad(&f, 1, NULL, x, n, g, BILO_CREATE_GRAPH | (flags & BILO_ALLOW_UNUSED));
    if (!rc) rc = sum_of_dots(g, v, n, &s);
    if (!rc && s && s->requires_grad) rc = bilo_grad(&s, 1, NULL, x, n, hv, second_flags(flags));
    for (int i = 0; i < n && !rc; i++)
        if (!hv[i] && !(hv[i] = bilo_zeros_like(x[i]))) rc = bilo_errcode();
    for (int i = 0; i < n; i++) hv[i] = rc ? NULL : bilo_scope_return(hv[i]);
    bilo_scope_end();
    bilo__no_grad_depth = depth;
    tensor_array_free(g, n);
    return rc;
}

BILO_API bilo_tensor *bilo_jvp(bilo_tensor *y, bilo_tensor *const *x, int n, bilo_tensor *const *v,
                               unsigned flags)
{
    static const char *fn = "bilo_jvp";
    if (!y) return NULL;
    if (check_directions(fn, x, v, n)) return NULL;
    bilo_tensor **g = tensor_array(n);
    if (!g) return bilo__fail(BILO_ENOMEM, "%s: out of memory", fn);

    /* g = J^T u is linear in the dummy cotangent u; d<g, v>/du = J v. */
    int depth = force_grad_mode();
    bilo_scope_begin();
    bilo_tensor *jv = NULL, *s = NULL;
    bilo_tensor *u = bilo_zeros_like(y);
    int rc = u ? bilo_set_requires_grad(u, true) : bilo_errcode();
    if (!rc) rc = bilo_grad(&y, 1, &u, x, n, g, BILO_CREATE_GRAPH | BILO_ALLOW_UNUSED);
    if (!rc) rc = sum_of_dots(g, v, n, &s);
    if (!rc && s && s->requires_grad)
        rc = bilo_grad(&s, 1, NULL, &u, 1, &jv, second_flags(flags));
    if (!rc && !jv && !(jv = bilo_zeros_like(y))) rc = bilo_errcode();
    jv = rc ? NULL : bilo_scope_return(jv);
    bilo_scope_end();
    bilo__no_grad_depth = depth;
    tensor_array_free(g, n);
    return jv;
}

/* ---- dense Jacobian and Hessian --------------------------------------------------------- */

/* Row r of the result is the gradient of y's element r with respect to x: one backward
   with a one-hot cotangent per row. */
static bilo_tensor *jacobian_rows(bilo_tensor *y, bilo_tensor *x)
{
    bilo_tensor *jac = bilo_zeros(x->dtype, BILO_SHAPE(y->numel, x->numel));
    if (!jac || !y->requires_grad) return jac;
    bilo_tensor *onehot = bilo_zeros_like(y);
    if (!onehot) return NULL;
    size_t row_bytes = (size_t)x->numel * bilo_dtype_size(x->dtype);
    for (int64_t r = 0; r < y->numel; r++) {
        bilo_set_flat(onehot, r, 1.0);
        bilo_scope_begin();
        bilo_tensor *row = NULL;
        int rc = bilo_grad(&y, 1, &onehot, &x, 1, &row, BILO_RETAIN_GRAPH | BILO_ALLOW_UNUSED);
        if (row) memcpy((char *)bilo_data(jac) + (size_t)r * row_bytes, bilo_data(row), row_bytes);
        bilo_scope_end();
        bilo_set_flat(onehot, r, 0.0);
        if (rc) return NULL;
    }
    return jac;
}

/* fn evaluated at a fresh leaf sharing x's data, so the caller's graph is untouched. */
static bilo_tensor *evaluate_at_leaf(const char *name, bilo_fn1 fn, bilo_tensor *x, void *user,
                                     bilo_tensor **leaf)
{
    if (!fn) return bilo__fail(BILO_EINVAL, "%s: fn is NULL", name);
    if (!bilo__check_float(name, x)) return NULL;
    *leaf = bilo_detach(x);
    if (!*leaf || bilo_set_requires_grad(*leaf, true)) return NULL;
    int depth = force_grad_mode();
    bilo_tensor *y = fn(*leaf, user);
    bilo__no_grad_depth = depth;
    if (!y && !bilo_errcode()) return bilo__fail(BILO_EINVAL, "%s: fn returned NULL", name);
    return y;
}

BILO_API bilo_tensor *bilo_jacobian(bilo_fn1 fn, bilo_tensor *x, void *user)
{
    if (!x) return NULL;
    bilo_scope_begin();
    bilo_tensor *leaf = NULL;
    bilo_tensor *y = evaluate_at_leaf("bilo_jacobian", fn, x, user, &leaf);
    bilo_tensor *jac = y ? jacobian_rows(y, leaf) : NULL;
    if (jac) bilo_scope_return(jac);
    bilo_scope_end();
    return jac;
}

BILO_API bilo_tensor *bilo_hessian(bilo_fn1 fn, bilo_tensor *x, void *user)
{
    static const char *name = "bilo_hessian";
    if (!x) return NULL;
    bilo_scope_begin();
    bilo_tensor *leaf = NULL, *hess = NULL, *g = NULL;
    bilo_tensor *y = evaluate_at_leaf(name, fn, x, user, &leaf);
    char s[BILO_SHAPE_BUF];
    if (y && y->numel != 1)
        bilo__fail(BILO_ESHAPE, "%s: fn returned shape %s; it must return one element", name,
                   bilo__shape_str(s, y->ndim, y->shape));
    else if (y && !bilo_grad(&y, 1, NULL, &leaf, 1, &g, BILO_CREATE_GRAPH | BILO_ALLOW_UNUSED))
        hess = g ? jacobian_rows(g, leaf) : bilo_zeros(x->dtype, BILO_SHAPE(x->numel, x->numel));
    if (hess) bilo_scope_return(hess);
    bilo_scope_end();
    return hess;
}
