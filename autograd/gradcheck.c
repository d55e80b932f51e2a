/* Gradient checking by central finite differences, as torch.autograd.gradcheck: the
   Jacobian autograd computes is compared element by element with (f(x+eps) - f(x-eps))/2eps.
   The fast mode compares one number, v^T J u for random unit u and v, against a single
   directional difference. gradgradcheck applies the same check to the map
   (inputs, u) -> vjp(fn(inputs), u), which exercises every backward rule's own backward.
 *
 * The checks work on private copies of the inputs, so the caller's tensors and graphs are
 * never touched. Options left at zero take the defaults (eps 1e-6, atol 1e-5, rtol 1e-3). */
#include "autograd_impl.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name; /* "bilo_gradcheck" or "bilo_gradgradcheck", for messages */
    bilo_fnN fn;
    void *user;
    bilo_tensor **x;  /* fn's inputs: copies of those to check, the others as given */
    int n;
    bilo_tensor *wrt[BILO_MAX_OP_INPUTS]; /* the copies, i.e. the inputs that are checked */
    int wrt_input[BILO_MAX_OP_INPUTS];    /* their positions in x */
    int k;
    double eps, atol, rtol;
    uint64_t seed;
    bilo_gradcheck_result *result;
    double worst_ratio; /* largest |analytic - numeric| / tolerance seen so far */
    int64_t compared;
} check_state;

/* ---- evaluating fn ---------------------------------------------------------------------- */

static bilo_tensor *evaluate(check_state *c)
{
    bilo_tensor *y = c->fn(c->x, c->user);
    if (!y && !bilo_errcode()) return bilo__fail(BILO_EINVAL, "%s: fn returned NULL", c->name);
    if (y && y->dtype == BILO_I64)
        return bilo__fail(BILO_EDTYPE, "%s: fn returned an i64 tensor", c->name);
    return y;
}

/* fn's output as doubles into values[0..numel); the caller owns an open scope. */
static int evaluate_values(check_state *c, double *values, int64_t numel)
{
    bilo_tensor *y = evaluate(c);
    bilo_tensor *y64 = y ? bilo_cast(y, BILO_F64) : NULL;
    if (!y64) return bilo_errcode();
    if (y64->numel != numel)
        return bilo__fail_code(BILO_ESHAPE, "%s: fn returned %lld elements, then %lld", c->name,
                               (long long)numel, (long long)y64->numel);
    memcpy(values, bilo_data(y64), (size_t)numel * sizeof *values);
    return 0;
}

/* ---- comparing ---------------------------------------------------------------------------- */

static void compare(check_state *c, double analytic, double numeric, int input, int64_t element,
                    int64_t output_element)
{
    bilo_gradcheck_result *r = c->result;
    double err = fabs(analytic - numeric);
    double tolerance = c->atol + c->rtol * fabs(numeric);
    double ratio = isnan(err) ? INFINITY : err / tolerance;
    c->compared++;
    if (isnan(err) || err > r->max_abs_err) r->max_abs_err = err;
    if (!(err <= tolerance)) r->passed = false;
    if (ratio <= c->worst_ratio) return;
    c->worst_ratio = ratio;
    r->analytic = analytic;
    r->numeric = numeric;
    r->input = input;
    r->element = element;
    r->output_element = output_element;
}

static void write_message(const check_state *c)
{
    const bilo_gradcheck_result *r = c->result;
    if (r->passed) {
        snprintf(c->result->message, sizeof r->message,
                 "%s: passed, %lld comparisons, max |analytic - numeric| %.3g", c->name,
                 (long long)c->compared, r->max_abs_err);
        return;
    }
    snprintf(c->result->message, sizeof r->message,
             "%s: input %d element %lld, output element %lld: analytic %.10g vs numeric %.10g "
             "(|diff| %.3g > atol %g + rtol %g * |numeric|)",
             c->name, r->input, (long long)r->element, (long long)r->output_element, r->analytic,
             r->numeric, fabs(r->analytic - r->numeric), c->atol, c->rtol);
}

/* ---- full Jacobian ---------------------------------------------------------------------- */

/* Row o of analytic[j] ([m, numel(wrt_j)], f64) is d y_o / d wrt_j, by one backward each. */
static int analytic_jacobians(check_state *c, int64_t m, bilo_tensor **analytic)
{
    bilo_scope_begin();
    bilo_tensor *y = evaluate(c);
    bilo_tensor *onehot = y ? bilo_zeros_like(y) : NULL;
    bilo_tensor *g[BILO_MAX_OP_INPUTS];
    int rc = onehot ? 0 : bilo_errcode();
    for (int64_t o = 0; o < m && !rc && y->requires_grad; o++) {
        bilo_set_flat(onehot, o, 1.0);
        bilo_scope_begin();
        rc = bilo_grad(&y, 1, &onehot, c->wrt, c->k, g, BILO_RETAIN_GRAPH | BILO_ALLOW_UNUSED);
        for (int j = 0; j < c->k && !rc; j++)
            if (g[j])
                memcpy((double *)bilo_data(analytic[j]) + o * g[j]->numel, bilo_data(g[j]),
                       (size_t)g[j]->numel * sizeof(double));
        bilo_scope_end();
        bilo_set_flat(onehot, o, 0.0);
    }
    bilo_scope_end();
    return rc;
}

static int check_full(check_state *c, int64_t m)
{
    bilo_tensor *analytic[BILO_MAX_OP_INPUTS];
    for (int j = 0; j < c->k; j++)
        if (!(analytic[j] = bilo_zeros(BILO_F64, BILO_SHAPE(m, c->wrt[j]->numel))))
            return bilo_errcode();
    bilo_tensor *plus = bilo_empty(BILO_F64, BILO_SHAPE(m));
    bilo_tensor *minus = bilo_empty(BILO_F64, BILO_SHAPE(m));
    if (!plus || !minus) return bilo_errcode();
    int rc = analytic_jacobians(c, m, analytic);
    double *yp = bilo_data(plus), *ym = bilo_data(minus);

    bilo_no_grad_begin();
    for (int j = 0; j < c->k && !rc; j++) {
        int64_t numel = c->wrt[j]->numel;
        double *x = bilo_data(c->wrt[j]);
        const double *a = bilo_data(analytic[j]);
        for (int64_t e = 0; e < numel && !rc; e++) {
            double original = x[e];
            bilo_scope_begin();
            x[e] = original + c->eps;
            rc = evaluate_values(c, yp, m);
            x[e] = original - c->eps;
            if (!rc) rc = evaluate_values(c, ym, m);
            x[e] = original;
            bilo_scope_end();
            for (int64_t o = 0; o < m && !rc; o++)
                compare(c, a[o * numel + e], (yp[o] - ym[o]) / (2 * c->eps), c->wrt_input[j], e, o);
        }
    }
    bilo_no_grad_end();
    return rc;
}

/* ---- fast mode: v^T J u ------------------------------------------------------------------- */

static double dot_values(const bilo_tensor *a, const bilo_tensor *b)
{
    const double *pa = bilo__ptr(a), *pb = bilo__ptr(b);
    double s = 0;
    for (int64_t k = 0; k < a->numel; k++) s += pa[k] * pb[k];
    return s;
}

/* Random standard-normal directions u_j (one per checked input) scaled to unit total norm. */
static int random_directions(check_state *c, bilo_tensor **u)
{
    bilo_rng rng = bilo_rng_make(c->seed, 0);
    double norm2 = 0;
    for (int j = 0; j < c->k; j++) {
        if (!(u[j] = bilo_randn(BILO_F64, c->wrt[j]->ndim, c->wrt[j]->shape, &rng)))
            return bilo_errcode();
        norm2 += dot_values(u[j], u[j]);
    }
    for (int j = 0; j < c->k; j++) bilo_scale_(u[j], 1.0 / sqrt(norm2));
    return 0;
}

/* wrt_j += alpha u_j for every checked input. */
static void shift_inputs(check_state *c, bilo_tensor *const *u, double alpha)
{
    for (int j = 0; j < c->k; j++) {
        double *x = bilo_data(c->wrt[j]);
        const double *d = bilo__ptr(u[j]);
        for (int64_t e = 0; e < c->wrt[j]->numel; e++) x[e] += alpha * d[e];
    }
}

/* v^T J u by one backward (analytic) and one central difference along u (numeric). */
static int check_fast(check_state *c, const bilo_tensor *y0)
{
    bilo_tensor *u[BILO_MAX_OP_INPUTS], *g[BILO_MAX_OP_INPUTS];
    bilo_rng rng = bilo_rng_make(c->seed, 1);
    bilo_tensor *v = bilo_randn(BILO_F64, y0->ndim, y0->shape, &rng);
    bilo_tensor *plus = bilo_empty(BILO_F64, y0->ndim, y0->shape);
    bilo_tensor *minus = bilo_empty(BILO_F64, y0->ndim, y0->shape);
    int rc = v && plus && minus ? random_directions(c, u) : bilo_errcode();
    if (rc) return rc;
    bilo_scale_(v, 1.0 / sqrt(dot_values(v, v)));

    double analytic = 0;
    bilo_scope_begin();
    bilo_tensor *y = evaluate(c);
    bilo_tensor *vy = y ? bilo_cast(v, y->dtype) : NULL;
    rc = vy ? 0 : bilo_errcode();
    if (!rc && y->requires_grad) rc = bilo_grad(&y, 1, &vy, c->wrt, c->k, g, BILO_ALLOW_UNUSED);
    for (int j = 0; j < c->k && !rc && y->requires_grad; j++)
        if (g[j]) analytic += dot_values(g[j], u[j]);
    bilo_scope_end();
    if (rc) return rc;

    bilo_no_grad_begin();
    bilo_scope_begin();
    shift_inputs(c, u, c->eps);
    rc = evaluate_values(c, bilo_data(plus), y0->numel);
    shift_inputs(c, u, -2 * c->eps);
    if (!rc) rc = evaluate_values(c, bilo_data(minus), y0->numel);
    shift_inputs(c, u, c->eps);
    bilo_scope_end();
    bilo_no_grad_end();
    double numeric = (dot_values(v, plus) - dot_values(v, minus)) / (2 * c->eps);
    if (!rc) compare(c, analytic, numeric, -1, -1, -1);
    return rc;
}

/* ---- driver ------------------------------------------------------------------------------- */

static int copy_inputs(check_state *c, bilo_tensor *const *inputs)
{
    for (int i = 0; i < c->n; i++) {
        if (!inputs[i]) {
            if (bilo_errcode()) return bilo_errcode();
            return bilo__fail_code(BILO_ENULL, "%s: inputs[%d] is NULL", c->name, i);
        }
        c->x[i] = inputs[i];
        if (!inputs[i]->requires_grad) continue;
        if (inputs[i]->dtype != BILO_F64)
            return bilo__fail_code(BILO_EDTYPE, "%s: inputs[%d] is %s; gradient checks need f64",
                                   c->name, i, bilo_dtype_name(inputs[i]->dtype));
        bilo_no_grad_begin();
        c->x[i] = bilo_clone(inputs[i]);
        bilo_no_grad_end();
        if (!c->x[i] || bilo_set_requires_grad(c->x[i], true)) return bilo_errcode();
        c->wrt_input[c->k] = i;
        c->wrt[c->k++] = c->x[i];
    }
    if (!c->k) return bilo__fail_code(BILO_EINVAL, "%s: no input requires grad", c->name);
    return 0;
}

/* Arguments shared by both checks; max_n leaves room for gradgradcheck's cotangent. */
static int check_arguments(const char *name, bilo_fnN fn, bilo_tensor *const *inputs, int n,
                           int max_n, bilo_gradcheck_result *result)
{
    if (result) *result = (bilo_gradcheck_result){.input = -1, .element = -1, .output_element = -1};
    if (fn && inputs && result && n >= 1 && n <= max_n) return 0;
    int rc = bilo__fail_code(BILO_EINVAL,
                             "%s: bad arguments (fn %s, inputs %s, result %s, n %d; need 1 <= n <= %d)",
                             name, fn ? "set" : "NULL", inputs ? "set" : "NULL",
                             result ? "set" : "NULL", n, max_n);
    if (result) snprintf(result->message, sizeof result->message, "%s", bilo_last_error());
    return rc;
}

static int run_check(const char *name, bilo_fnN fn, bilo_tensor *const *inputs, int n, void *user,
                     const bilo_gradcheck_opts *opts, bilo_gradcheck_result *result)
{
    int rc = check_arguments(name, fn, inputs, n, BILO_MAX_OP_INPUTS, result);
    if (rc) return rc;
    bilo_gradcheck_opts o = opts ? *opts : (bilo_gradcheck_opts){0};
    bilo_tensor *copies[BILO_MAX_OP_INPUTS];
    check_state c = {.name = name, .fn = fn, .user = user, .x = copies, .n = n,
                     .eps = o.eps > 0 ? o.eps : 1e-6, .atol = o.atol > 0 ? o.atol : 1e-5,
                     .rtol = o.rtol > 0 ? o.rtol : 1e-3, .seed = o.seed, .result = result,
                     .worst_ratio = -1};
    result->passed = true;
    bilo_scope_begin();
    rc = copy_inputs(&c, inputs);
    bilo_tensor *y0 = NULL;
    if (!rc) {
        bilo_no_grad_begin();
        y0 = evaluate(&c);
        bilo_no_grad_end();
        if (!y0) rc = bilo_errcode();
    }
    if (!rc) rc = o.fast ? check_fast(&c, y0) : check_full(&c, y0->numel);
    bilo_scope_end();
    if (rc) {
        result->passed = false;
        snprintf(result->message, sizeof result->message, "%s", bilo_last_error());
    } else {
        write_message(&c);
    }
    return rc;
}

BILO_API int bilo_gradcheck(bilo_fnN fn, bilo_tensor *const *inputs, int n, void *user,
                            const bilo_gradcheck_opts *opts, bilo_gradcheck_result *result)
{
    return run_check("bilo_gradcheck", fn, inputs, n, user, opts, result);
}

/* ---- gradgradcheck: (inputs, u) -> vjp(fn(inputs), u) ---------------------------------- */

typedef struct {
    bilo_fnN fn;
    void *user;
    int n; /* fn's inputs; the cotangent u comes after them */
} vjp_problem;

/* The gradients of <u, fn(inputs)> with respect to the inputs that require grad, flattened
   and concatenated; recorded (CREATE_GRAPH) so they can be differentiated again. */
static bilo_tensor *vjp_of_fn(bilo_tensor *const *inputs, void *user)
{
    const vjp_problem *p = user;
    bilo_tensor *wrt[BILO_MAX_OP_INPUTS], *g[BILO_MAX_OP_INPUTS], *parts[BILO_MAX_OP_INPUTS];
    int k = 0;
    for (int i = 0; i < p->n; i++)
        if (inputs[i]->requires_grad) wrt[k++] = inputs[i];
    int depth = bilo__no_grad_depth; /* the vjp needs fn's graph even inside no-grad */
    bilo__no_grad_depth = 0;
    bilo_tensor *u = inputs[p->n], *result = NULL;
    bilo_tensor *y = p->fn(inputs, p->user);
    if (y && !bilo_grad(&y, 1, &u, wrt, k, g, BILO_CREATE_GRAPH | BILO_ALLOW_UNUSED)) {
        bool ok = true;
        for (int j = 0; j < k && ok; j++)
            ok = (parts[j] = g[j] ? bilo_flatten(g[j]) : bilo_zeros(BILO_F64, BILO_SHAPE(wrt[j]->numel)));
        if (ok) result = k == 1 ? parts[0] : bilo_concat(parts, k, 0);
    }
    bilo__no_grad_depth = depth;
    return result;
}

BILO_API int bilo_gradgradcheck(bilo_fnN fn, bilo_tensor *const *inputs, int n, void *user,
                                const bilo_gradcheck_opts *opts, bilo_gradcheck_result *result)
{
    static const char *name = "bilo_gradgradcheck";
    int rc = check_arguments(name, fn, inputs, n, BILO_MAX_OP_INPUTS - 1, result);
    if (rc) return rc;
    for (int i = 0; i < n; i++) /* run_check reports the NULL input */
        if (!inputs[i]) return run_check(name, fn, inputs, n, user, opts, result);

    bilo_scope_begin();
    bilo_no_grad_begin();
    bilo_tensor *y = fn(inputs, user);
    bilo_no_grad_end();
    rc = y ? 0 : bilo_errcode();
    if (!y && !rc) rc = bilo__fail_code(BILO_EINVAL, "%s: fn returned NULL", name);
    if (!rc) {
        bilo_rng rng = bilo_rng_make(opts ? opts->seed : 0, 2);
        bilo_tensor *u = bilo_randn(BILO_F64, y->ndim, y->shape, &rng);
        bilo_tensor *extended[BILO_MAX_OP_INPUTS];
        memcpy(extended, inputs, (size_t)n * sizeof *inputs);
        extended[n] = u;
        rc = u ? bilo_set_requires_grad(u, true) : bilo_errcode();
        vjp_problem p = {fn, user, n};
        if (!rc) rc = run_check(name, vjp_of_fn, extended, n + 1, &p, opts, result);
    }
    bilo_scope_end();
    if (rc && !result->message[0])
        snprintf(result->message, sizeof result->message, "%s", bilo_last_error());
    return rc;
}
