/* Optimizers (SGD with momentum/Nesterov, Adam, AdamW), in place and differentiable, and
   learning-rate schedules. Formulas: see bilo_nn.h. */
#include <math.h>
#include <stdlib.h>

#include "bilo_autograd.h"
#include "bilo_nn.h"
#include "optim_kernels.h"
#include "parallel.h"
#include "tensor_impl.h"

/* Options with every zero field replaced by its default. */
typedef struct {
    bilo_optim_kind kind;
    double lr, momentum, weight_decay, beta1, beta2, eps;
    bool nesterov;
} optim_cfg;

static double or_default(double v, double dflt) { return v == 0 ? dflt : v; }

static int resolve_opts(const char *op, const bilo_optim_opts *o, optim_cfg *c)
{
    static const bilo_optim_opts none = {0};
    if (!o) o = &none;
    *c = (optim_cfg){
        .kind = o->kind,
        .lr = or_default(o->lr, 1e-3),
        .momentum = o->momentum,
        .weight_decay = o->kind == BILO_OPTIM_ADAMW ? or_default(o->weight_decay, 1e-2)
                                                    : o->weight_decay,
        .beta1 = or_default(o->beta1, 0.9),
        .beta2 = or_default(o->beta2, 0.999),
        .eps = or_default(o->eps, 1e-8),
        .nesterov = o->nesterov,
    };
    if (c->kind < BILO_OPTIM_SGD || c->kind > BILO_OPTIM_ADAMW)
        return bilo__fail_code(BILO_EINVAL, "%s: unknown optimizer kind %d", op, (int)c->kind);
    if (!(c->lr > 0) || !(c->momentum >= 0 && c->momentum < 1) || !(c->weight_decay >= 0) ||
        !(c->beta1 > 0 && c->beta1 < 1) || !(c->beta2 > 0 && c->beta2 < 1) || !(c->eps > 0))
        return bilo__fail_code(BILO_EINVAL,
                               "%s: need lr > 0, 0 <= momentum < 1, weight_decay >= 0, betas in "
                               "(0, 1), eps > 0 (lr %g, momentum %g, weight_decay %g, betas %g "
                               "%g, eps %g)",
                               op, c->lr, c->momentum, c->weight_decay, c->beta1, c->beta2, c->eps);
    if (c->nesterov && !(c->kind == BILO_OPTIM_SGD && c->momentum > 0))
        return bilo__fail_code(BILO_EINVAL, "%s: nesterov needs SGD with momentum > 0", op);
    return 0;
}

static int state_count(const optim_cfg *c)
{
    if (c->kind != BILO_OPTIM_SGD) return 2;
    return c->momentum > 0 ? 1 : 0;
}

int bilo_optim_state_per_param(const bilo_optim_opts *opts)
{
    optim_cfg c;
    int rc = resolve_opts("bilo_optim_state_per_param", opts, &c);
    return rc < 0 ? rc : state_count(&c);
}

/* A parameter and its gradient: float, same dtype and shape. */
static int check_pair(const char *op, int i, const bilo_tensor *p, const bilo_tensor *g)
{
    char sa[BILO_SHAPE_BUF], sb[BILO_SHAPE_BUF];
    if (!p || !g) return bilo__fail_code(BILO_ENULL, "%s: parameter or gradient %d is NULL", op, i);
    if (!bilo__check_float(op, p) || !bilo__check_same_dtype(op, p, g)) return bilo_errcode();
    bool same = p->ndim == g->ndim;
    for (int d = 0; same && d < p->ndim; d++) same = p->shape[d] == g->shape[d];
    if (same) return 0;
    return bilo__fail_code(BILO_ESHAPE, "%s: parameter %d has shape %s but its gradient %s", op, i,
                           bilo__shape_str(sa, p->ndim, p->shape),
                           bilo__shape_str(sb, g->ndim, g->shape));
}

/* ---- in place ---- */

struct bilo_optim {
    optim_cfg cfg;
    int n, per_param;
    int64_t steps;
    bilo_tensor **params;
    bilo_tensor **state; /* n * per_param */
};

void bilo_optim_free(bilo_optim *opt)
{
    if (!opt) return;
    for (int i = 0; i < opt->n; i++) bilo_release(opt->params[i]);
    for (int i = 0; i < opt->n * opt->per_param; i++) bilo_release(opt->state[i]);
    bilo__mfree(opt->params);
    bilo__mfree(opt->state);
    bilo__mfree(opt);
}

bilo_optim *bilo_optim_new(const bilo_optim_opts *opts, bilo_tensor *const *params, int n)
{
    static const char op[] = "bilo_optim_new";
    optim_cfg cfg;
    if (resolve_opts(op, opts, &cfg) < 0) return NULL;
    if (n < 1 || !params) return bilo__fail(BILO_EINVAL, "%s: need n >= 1 parameters (n %d)", op, n);
    for (int i = 0; i < n; i++)
        if (check_pair(op, i, params[i], params[i]) < 0) return NULL;
    bilo_optim *opt = bilo__calloc(1, sizeof *opt);
    if (!opt) return bilo__fail(BILO_ENOMEM, "%s: out of memory", op);
    opt->cfg = cfg;
    opt->per_param = state_count(&cfg);
    opt->params = bilo__calloc((size_t)n, sizeof *opt->params);
    opt->state = bilo__calloc((size_t)n * (size_t)opt->per_param + 1, sizeof *opt->state);
    if (!opt->params || !opt->state) {
        bilo_optim_free(opt);
        return bilo__fail(BILO_ENOMEM, "%s: out of memory", op);
    }
    for (int i = 0; i < n; i++) {
        opt->params[i] = bilo_retain(params[i]);
        opt->n = i + 1;
        for (int k = 0; k < opt->per_param; k++) {
            bilo_tensor *s = bilo_zeros(params[i]->dtype, params[i]->ndim, params[i]->shape);
            if (!s) {
                bilo_optim_free(opt);
                return NULL;
            }
            opt->state[i * opt->per_param + k] = bilo_keep(s);
        }
    }
    return opt;
}

double bilo_optim_get_lr(const bilo_optim *opt) { return opt ? opt->cfg.lr : NAN; }
void bilo_optim_set_lr(bilo_optim *opt, double lr)
{
    if (opt && lr > 0) opt->cfg.lr = lr;
}
int64_t bilo_optim_steps_done(const bilo_optim *opt) { return opt ? opt->steps : 0; }

bilo_tensor *bilo_optim_state(const bilo_optim *opt, int i, int k)
{
    if (!opt || i < 0 || i >= opt->n || k < 0 || k >= opt->per_param) return NULL;
    return opt->state[i * opt->per_param + k];
}

/* The loop-invariant scalars of step number t (1-based). */
static bilo__optim_consts step_consts(const optim_cfg *c, int64_t t)
{
    return (bilo__optim_consts){
        .lr = c->lr,
        .weight_decay = c->weight_decay,
        .momentum = c->momentum,
        .beta1 = c->beta1,
        .beta2 = c->beta2,
        .eps = c->eps,
        .inv_bc1 = 1 / (1 - pow(c->beta1, (double)t)),
        .inv_bc2 = 1 / (1 - pow(c->beta2, (double)t)),
        .adamw_keep = 1 - c->lr * c->weight_decay,
        .nesterov = c->nesterov,
        .adamw = c->kind == BILO_OPTIM_ADAMW,
    };
}

/* Updates one parameter in nt equal contiguous parts, one per thread; the update is
   elementwise, so the result does not depend on the split. */
static void step_inplace(const bilo__optim_consts *k, bool adam, bilo_tensor *p,
                         const bilo_tensor *g, void *s0, void *s1)
{
    const int64_t n = p->numel;
    /* Adam's square root and division per element cost about what one SLEEF call does. */
    const int nt = bilo__threads_for_elems(n, adam ? BILO_COST_TRANSCENDENTAL : BILO_COST_MEMORY);
    const size_t size = bilo_dtype_size(p->dtype);
    char *pp = bilo__ptr(p), *s0p = s0, *s1p = s1;
    const char *gp = bilo__ptr(g);
    BILO__PARALLEL_FOR(nt, part, nt, {
        int64_t lo = n * part / nt, len = n * (part + 1) / nt - lo;
        size_t at = (size_t)lo * size;
        if (p->dtype == BILO_F32)
            bilo__optim_update_f32(k, adam, len, (float *)(pp + at), (const float *)(gp + at),
                                   s0p ? (float *)(s0p + at) : NULL,
                                   s1p ? (float *)(s1p + at) : NULL);
        else
            bilo__optim_update_f64(k, adam, len, (double *)(pp + at), (const double *)(gp + at),
                                   s0p ? (double *)(s0p + at) : NULL,
                                   s1p ? (double *)(s1p + at) : NULL);
    });
}

static void *state_ptr(const bilo_optim *opt, int i, int k)
{
    bilo_tensor *s = bilo_optim_state(opt, i, k);
    if (!s) return NULL;
    atomic_fetch_add(&s->storage->version, 1);
    return bilo__ptr(s);
}

int bilo_optim_step(bilo_optim *opt, bilo_tensor *const *grads)
{
    static const char op[] = "bilo_optim_step";
    if (!opt || !grads) return bilo__fail_code(BILO_ENULL, "%s: NULL optimizer or gradients", op);
    for (int i = 0; i < opt->n; i++)
        if (grads[i] && check_pair(op, i, opt->params[i], grads[i]) < 0) return bilo_errcode();
    opt->steps++;
    const bilo__optim_consts k = step_consts(&opt->cfg, opt->steps);
    const bool adam = opt->cfg.kind != BILO_OPTIM_SGD;
    for (int i = 0; i < opt->n; i++) {
        bilo_tensor *p = opt->params[i];
        if (!grads[i]) continue;
        atomic_fetch_add(&p->storage->version, 1);
        step_inplace(&k, adam, p, grads[i], state_ptr(opt, i, 0), state_ptr(opt, i, 1));
    }
    return 0;
}

/* ---- differentiable ---- */

/* a + s·b for a 0-d tensor or NULL scalar factor: s given as a tensor wins over the number. */
static bilo_tensor *add_scaled(bilo_tensor *a, bilo_tensor *b, bilo_tensor *s_tensor, double s)
{
    return bilo_add(a, s_tensor ? bilo_mul(b, s_tensor) : bilo_mul_scalar(b, s));
}

/* New parameter and state tensors for parameter p; every intermediate lives in the caller's
   scope, which returns only the outputs. */
static bilo_tensor *diff_one(const optim_cfg *c, bilo_tensor *p, bilo_tensor *g,
                             bilo_tensor *const *st, bilo_tensor *lr, int64_t t,
                             bilo_tensor **out_state)
{
    bilo_tensor *neg_lr = lr ? bilo_neg(lr) : NULL;
    if (c->kind == BILO_OPTIM_SGD) {
        if (c->weight_decay > 0) g = add_scaled(g, p, NULL, c->weight_decay);
        bilo_tensor *d = g;
        if (c->momentum > 0) {
            /* a fresh node even on the first step, so that b is never an input */
            bilo_tensor *b = st ? add_scaled(g, st[0], NULL, c->momentum) : bilo_clone(g);
            out_state[0] = b;
            d = c->nesterov ? add_scaled(g, b, NULL, c->momentum) : b;
        }
        return add_scaled(p, d, neg_lr, -c->lr);
    }
    if (c->kind == BILO_OPTIM_ADAMW) {
        /* p·(1 − lr·wd) = p − lr·(wd·p) */
        p = add_scaled(p, bilo_mul_scalar(p, c->weight_decay), neg_lr, -c->lr);
    } else if (c->weight_decay > 0) {
        g = add_scaled(g, p, NULL, c->weight_decay);
    }
    bilo_tensor *m = bilo_mul_scalar(g, 1 - c->beta1);
    bilo_tensor *v = bilo_mul_scalar(bilo_square(g), 1 - c->beta2);
    if (st) {
        m = add_scaled(m, st[0], NULL, c->beta1);
        v = add_scaled(v, st[1], NULL, c->beta2);
    }
    out_state[0] = m;
    out_state[1] = v;
    double bc1 = 1 - pow(c->beta1, (double)t), bc2 = 1 - pow(c->beta2, (double)t);
    bilo_tensor *denom = bilo_add_scalar(bilo_sqrt(bilo_mul_scalar(v, 1 / bc2)), c->eps);
    bilo_tensor *d = bilo_div(bilo_mul_scalar(m, 1 / bc1), denom);
    return add_scaled(p, d, neg_lr, -c->lr);
}

int bilo_optim_step_diff(const bilo_optim_opts *opts, int n, bilo_tensor *const *params,
                         bilo_tensor *const *grads, bilo_tensor *const *state, bilo_tensor *lr,
                         int64_t t, bilo_tensor **new_params, bilo_tensor **new_state)
{
    static const char op[] = "bilo_optim_step_diff";
    optim_cfg c;
    if (!new_params) return bilo__fail_code(BILO_ENULL, "%s: NULL new_params", op);
    if (n < 1 || !params || !grads)
        return bilo__fail_code(BILO_EINVAL, "%s: need n >= 1 parameters and gradients (n %d)", op, n);
    for (int i = 0; i < n; i++) new_params[i] = NULL;
    if (resolve_opts(op, opts, &c) < 0) return bilo_errcode();
    int per = state_count(&c);
    if (per > 0 && !new_state)
        return bilo__fail_code(BILO_ENULL, "%s: NULL new_state for an optimizer with state", op);
    for (int i = 0; i < n * per; i++) new_state[i] = NULL;
    if (t < 1) return bilo__fail_code(BILO_EINVAL, "%s: step t must be >= 1 (t %lld)", op, (long long)t);
    for (int i = 0; i < n; i++) {
        if (check_pair(op, i, params[i], grads[i]) < 0) return bilo_errcode();
        for (int k = 0; state && k < per; k++)
            if (check_pair(op, i, params[i], state[i * per + k]) < 0) return bilo_errcode();
    }
    if (lr && (lr->ndim != 0 || lr->dtype != params[0]->dtype))
        return bilo__fail_code(BILO_EINVAL, "%s: lr must be a 0-d tensor of dtype %s", op,
                               bilo_dtype_name(params[0]->dtype));
    bilo_scope_begin();
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        bilo_tensor *st[2] = {NULL, NULL};
        new_params[i] = diff_one(&c, params[i], grads[i], state ? state + i * per : NULL, lr, t, st);
        ok = new_params[i] != NULL;
        for (int k = 0; k < per; k++) {
            new_state[i * per + k] = st[k];
            ok = ok && st[k];
        }
    }
    for (int i = 0; ok && i < n; i++) bilo_scope_return(new_params[i]);
    for (int i = 0; ok && i < n * per; i++) bilo_scope_return(new_state[i]);
    bilo_scope_end();
    if (!ok) {
        for (int i = 0; i < n; i++) new_params[i] = NULL;
        for (int i = 0; i < n * per; i++) new_state[i] = NULL;
        return bilo_errcode() ? bilo_errcode() : BILO_EINVAL;
    }
    return 0;
}

/* ---- schedules ---- */

/* Records the error and returns NaN, the "no rate" value of bilo_lr_at. */
static double lr_invalid(const bilo_lr_schedule *s, int64_t step)
{
    if (!s) {
        bilo__fail_code(BILO_ENULL, "bilo_lr_at: NULL schedule");
        return NAN;
    }
    bilo__fail_code(BILO_EINVAL,
                    "bilo_lr_at: invalid schedule or step (kind %d, lr %g, step %lld, step_size "
                    "%lld, gamma %g, total_steps %lld, min_lr %g)",
                    (int)s->kind, s->lr, (long long)step, (long long)s->step_size, s->gamma,
                    (long long)s->total_steps, s->min_lr);
    return NAN;
}

double bilo_lr_at(const bilo_lr_schedule *s, int64_t step)
{
    if (!s || !(s->lr > 0) || step < 0) return lr_invalid(s, step);
    switch (s->kind) {
    case BILO_LR_CONSTANT:
        return s->lr;
    case BILO_LR_STEP:
        if (s->step_size < 1 || !(s->gamma >= 0)) break;
        return s->lr * pow(or_default(s->gamma, 0.1), (double)(step / s->step_size));
    case BILO_LR_COSINE: {
        if (s->total_steps < 1 || !(s->min_lr >= 0)) break;
        int64_t done = step < s->total_steps ? step : s->total_steps;
        return s->min_lr +
               (s->lr - s->min_lr) * (1 + cos(M_PI * (double)done / (double)s->total_steps)) / 2;
    }
    }
    return lr_invalid(s, step);
}
