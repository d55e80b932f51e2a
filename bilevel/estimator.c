/* The estimator interface: construction (by options struct or by name with a key=value
   string), hypergradient at a point, outer step, cost report. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bilevel_impl.h"
#include "tensor_impl.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool check_problem(const bilo_problem *p)
{
    if (!p || !p->x || !p->y || !p->lower || !p->upper) {
        bilo__fail(BILO_ENULL, "bilo_estimator: the problem needs x, y, lower and upper");
        return false;
    }
    if (p->n_x < 1 || p->n_y < 1) {
        bilo__fail(BILO_EINVAL, "bilo_estimator: n_x = %d and n_y = %d must be >= 1", p->n_x,
                   p->n_y);
        return false;
    }
    for (int i = 0; i < p->n_x + p->n_y; i++) {
        bilo_tensor *t = i < p->n_x ? p->x[i] : p->y[i - p->n_x];
        if (!t) {
            bilo__fail(BILO_ENULL, "bilo_estimator: %s[%d] is NULL", i < p->n_x ? "x" : "y",
                       i < p->n_x ? i : i - p->n_x);
            return false;
        }
        if (!bilo__check_float("bilo_estimator", t)) return false;
    }
    return true;
}

static void release_list(bilo_tensor **ts, int n)
{
    if (!ts) return;
    for (int i = 0; i < n; i++) bilo_release(ts[i]);
    bilo__mfree(ts);
}

static bilo_tensor **retained_copy(bilo_tensor *const *ts, int n, bool clone)
{
    bilo_tensor **out = bilo__calloc((size_t)n, sizeof *out);
    if (!out) return bilo__fail(BILO_ENOMEM, "bilo_estimator: out of memory");
    bool ok = true;
    bilo_no_grad_begin();
    for (int i = 0; i < n; i++) {
        out[i] = clone ? bilo_keep(bilo_clone(ts[i])) : bilo_retain(ts[i]);
        ok = ok && out[i];
    }
    bilo_no_grad_end();
    if (ok) return out;
    release_list(out, n);
    return NULL;
}

bilo_estimator *bilo__estimator_create(const bilo__estimator_vt *vt, const bilo_problem *p,
                                       const bilo_inner_opts *inner)
{
    if (!check_problem(p)) return NULL;
    bilo_estimator *e = bilo__calloc(1, sizeof *e);
    if (!e) return bilo__fail(BILO_ENOMEM, "bilo_estimator: out of memory");
    e->vt = vt;
    e->name = vt->name;
    e->prob = *p;
    e->inner = inner ? *inner : (bilo_inner_opts){0};
    if (e->inner.T == 0) e->inner.T = 100;
    if (e->inner.T < 0 || e->inner.tol < 0) {
        bilo_estimator_free(e);
        return bilo__fail(BILO_EINVAL, "bilo_estimator: inner T = %d and tol = %g must be >= 0",
                          e->inner.T, e->inner.tol);
    }
    e->x = retained_copy(p->x, p->n_x, false);
    e->y = retained_copy(p->y, p->n_y, false);
    e->y_init = retained_copy(p->y, p->n_y, true);
    e->v = bilo__calloc((size_t)p->n_y, sizeof *e->v);
    if (!e->x || !e->y || !e->y_init || !e->v ||
        !(e->inner_opt = bilo_optim_new(&e->inner.optim, e->y, p->n_y))) {
        bilo_estimator_free(e);
        return NULL;
    }
    e->prob.x = e->x;
    e->prob.y = e->y;
    return e;
}

void bilo_estimator_free(bilo_estimator *e)
{
    if (!e) return;
    release_list(e->x, e->prob.n_x);
    release_list(e->y, e->prob.n_y);
    release_list(e->y_init, e->prob.n_y);
    release_list(e->v, e->prob.n_y);
    release_list(e->state, e->n_state);
    bilo__mfree(e->opts);
    bilo_optim_free(e->inner_opt);
    bilo__mfree(e);
}

int bilo__estimator_set_opts(bilo_estimator *e, const void *opts, size_t size)
{
    if (!(e->opts = bilo__malloc(size)))
        return bilo__fail_code(BILO_ENOMEM, "bilo_estimator (%s): out of memory", e->name);
    memcpy(e->opts, opts, size);
    return 0;
}

int bilo__state_alloc(bilo_estimator *e, int n)
{
    if (!(e->state = bilo__calloc((size_t)n, sizeof *e->state)))
        return bilo__fail_code(BILO_ENOMEM, "bilo_estimator (%s): out of memory", e->name);
    e->n_state = n;
    return 0;
}

const char *bilo_estimator_name(const bilo_estimator *e) { return e ? e->name : NULL; }
const char *bilo_estimator_message(const bilo_estimator *e) { return e ? e->message : ""; }

void bilo_estimator_report(const bilo_estimator *e, bilo_cost *last, bilo_cost *total)
{
    if (!e) return;
    if (last) *last = e->last;
    if (total) *total = e->total;
}

/* Starts a costed unit of work (a step or a direct hypergradient call). */
static double cost_begin(bilo_estimator *e)
{
    e->last = (bilo_cost){0};
    e->message[0] = '\0';
    bilo_mem_reset_peak();
    return now_seconds();
}

static void cost_end(bilo_estimator *e, double t0, bool is_step)
{
    bilo_mem_stats ms;
    bilo_mem_get_stats(&ms);
    e->last.seconds = now_seconds() - t0;
    e->last.peak_bytes = ms.peak_bytes;
    e->last.steps = is_step;
    bilo_cost *t = &e->total;
    t->f_grads += e->last.f_grads;
    t->g_grads += e->last.g_grads;
    t->hvps += e->last.hvps;
    t->inner_iters += e->last.inner_iters;
    t->steps += e->last.steps;
    t->seconds += e->last.seconds;
    if (e->last.peak_bytes > t->peak_bytes) t->peak_bytes = e->last.peak_bytes;
}

/* Hypergradient at (x, y) inside the current scope, checked for NaN/Inf. */
static int scoped_hypergradient(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                                bilo_tensor **grads)
{
    bilo_tensor *xa[e->prob.n_x], *ya[e->prob.n_y];
    int rc = bilo__grad_aliases(x, e->prob.n_x, xa);
    if (rc == 0) rc = bilo__grad_aliases(y, e->prob.n_y, ya);
    if (rc == 0) rc = e->vt->hypergradient(e, xa, ya, grads);
    if (rc == 0) rc = bilo__check_finite(e, "hypergradient", grads, e->prob.n_x);
    return rc;
}

int bilo_estimator_hypergradient(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                                 bilo_tensor **grads)
{
    if (!e || !x || !y || !grads)
        return bilo__fail_code(BILO_ENULL, "bilo_estimator_hypergradient: NULL argument");
    for (int i = 0; i < e->prob.n_x; i++) grads[i] = NULL;
    double t0 = cost_begin(e);
    bilo_scope_begin();
    int rc = scoped_hypergradient(e, x, y, grads);
    for (int i = 0; i < e->prob.n_x; i++) {
        if (rc == 0) bilo_scope_return(grads[i]);
        else grads[i] = NULL;
    }
    bilo_scope_end();
    cost_end(e, t0, false);
    return rc;
}

static int default_step_grads(bilo_estimator *e, bilo_tensor **grads)
{
    int rc = bilo__inner_solve(e);
    return rc < 0 ? rc : scoped_hypergradient(e, e->x, e->y, grads);
}

int bilo_estimator_step(bilo_estimator *e, bilo_optim *outer)
{
    if (!e || !outer) return bilo__fail_code(BILO_ENULL, "bilo_estimator_step: NULL argument");
    double t0 = cost_begin(e);
    bilo_tensor *grads[e->prob.n_x];
    bilo_scope_begin();
    int rc = 0;
    if (e->prob.begin_step) rc = e->prob.begin_step(e->total.steps, e->prob.user);
    if (rc == 0)
        rc = e->vt->step_grads ? e->vt->step_grads(e, outer, grads) : default_step_grads(e, grads);
    if (rc == 0) rc = bilo_optim_step(outer, grads);
    bilo_scope_end();
    cost_end(e, t0, true);
    return rc;
}

/* ---- construction by name ---------------------------------------------------------- */

const char *const bilo__optim_kinds[] = {"sgd", "adam", "adamw", NULL};

static int parse_value(const bilo__option *o, const char *s, void *opts)
{
    char *field = (char *)opts + o->offset, *end;
    switch (o->type) {
    case BILO__OPT_INT: {
        long v = strtol(s, &end, 10);
        if (end == s || *end || v < 0 || v > 1000000000) return -1;
        *(int *)field = (int)v;
        return 0;
    }
    case BILO__OPT_DOUBLE: {
        double v = strtod(s, &end);
        if (end == s || *end || !(v >= 0) || v > 1e300) return -1;
        *(double *)field = v;
        return 0;
    }
    case BILO__OPT_BOOL:
        if (strcmp(s, "0") && strcmp(s, "1")) return -1;
        *(bool *)field = s[0] == '1';
        return 0;
    case BILO__OPT_U64: {
        if (*s == '-') return -1;
        unsigned long long v = strtoull(s, &end, 10);
        if (end == s || *end) return -1;
        *(uint64_t *)field = v;
        return 0;
    }
    case BILO__OPT_CHOICE:
        for (int k = 0; o->choices[k]; k++)
            if (!strcmp(s, o->choices[k])) {
                *(int *)field = k;
                return 0;
            }
        return -1;
    case BILO__OPT_STRING:
        if (!*s || strlen(s) >= BILO__OPT_STRING_LEN) return -1;
        strcpy(field, s);
        return 0;
    }
    return -1;
}

static int apply_option(const char *api, const char *who, const bilo__option *options,
                        char *item, void *opts)
{
    char *eq = strchr(item, '=');
    if (!eq)
        return bilo__fail_code(BILO_EINVAL, "%s: option '%s' for %s is not key=value", api, item,
                               who);
    *eq = '\0';
    for (const bilo__option *o = options; o->key; o++) {
        if (strcmp(item, o->key)) continue;
        if (parse_value(o, eq + 1, opts) < 0)
            return bilo__fail_code(BILO_EINVAL, "%s: bad value '%s' for option %s of %s", api,
                                   eq + 1, item, who);
        return 0;
    }
    return bilo__fail_code(BILO_EINVAL, "%s: unknown option '%s' for %s", api, item, who);
}

int bilo__parse_options(const char *api, const char *who, const bilo__option *options,
                        const char *text, void *opts)
{
    if (!text) return 0;
    char buf[512];
    if (strlen(text) >= sizeof buf)
        return bilo__fail_code(BILO_EINVAL, "%s: option string of %zu characters is too long",
                               api, strlen(text));
    strcpy(buf, text);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        int rc = apply_option(api, who, options, item, opts);
        if (rc < 0) return rc;
    }
    return 0;
}

static int parse_options(const bilo__method *m, const char *text, void *opts)
{
    return bilo__parse_options("bilo_estimator_new", m->name, m->options, text, opts);
}

static bilo_estimator *make_exact(const bilo_problem *p, const void *o)
{
    return bilo_exact_new(p, o);
}
static bilo_estimator *make_itd(const bilo_problem *p, const void *o) { return bilo_itd_new(p, o); }
static bilo_estimator *make_cg(const bilo_problem *p, const void *o)
{
    return bilo_aid_cg_new(p, o);
}
static bilo_estimator *make_ns(const bilo_problem *p, const void *o)
{
    return bilo_aid_ns_new(p, o);
}
static bilo_estimator *make_fp(const bilo_problem *p, const void *o)
{
    return bilo_aid_fp_new(p, o);
}
static bilo_estimator *make_esj(const bilo_problem *p, const void *o) { return bilo_esj_new(p, o); }

static const bilo__option exact_options[] = {BILO__INNER_OPTIONS(bilo_exact_opts), {NULL}};
static const bilo__option itd_options[] = {
    BILO__INNER_OPTIONS(bilo_itd_opts),
    {"truncate", BILO__OPT_INT, offsetof(bilo_itd_opts, truncate), NULL},
    {NULL}};
static const bilo__option aid_options[] = {
    BILO__INNER_OPTIONS(bilo_aid_opts),
    {"K", BILO__OPT_INT, offsetof(bilo_aid_opts, K), NULL},
    {"eta", BILO__OPT_DOUBLE, offsetof(bilo_aid_opts, eta), NULL},
    {"warm_v", BILO__OPT_BOOL, offsetof(bilo_aid_opts, warm_v), NULL},
    {NULL}};

static const bilo__method methods[] = {
    {"exact", "", exact_options, sizeof(bilo_exact_opts), make_exact},
    {"itd", "", itd_options, sizeof(bilo_itd_opts), make_itd},
    {"aid-cg", "", aid_options, sizeof(bilo_aid_opts), make_cg},
    {"aid-ns", "", aid_options, sizeof(bilo_aid_opts), make_ns},
    {"aid-fp", "", aid_options, sizeof(bilo_aid_opts), make_fp},
    {"bome", "T=10,lr=0.1,y_lr=0.1,eta=0.5,phi=grad_norm", bilo__bome_options,
     sizeof(bilo_bome_opts), bilo__make_bome},
    /* the data-cleaning script's defaults; its ŷ momentum also persists across outer steps */
    {"bome-hpo", "T=10,lr=0.01,momentum=0.9,y_lr=0.01,y_momentum=0.9,eta=0.1,phi=value,"
     "eps=1e-8", bilo__bome_options, sizeof(bilo_bome_opts), bilo__make_bome},
    {"f2sa", "T=10,lr=0.01,lambda0=1,delta=0.1,decay=1", bilo__f2sa_options,
     sizeof(bilo_f2sa_opts), bilo__make_f2sa},
    {"soba", "lr=0.1,decay=1,T=1", bilo__single_loop_options, sizeof(bilo_single_loop_opts),
     bilo__make_soba},
    {"fsla", "lr=0.1,decay=1,T=1", bilo__single_loop_options, sizeof(bilo_single_loop_opts),
     bilo__make_fsla},
    {"penalty", "T=20,optim=adam,lr=1e-4,rho0=1e-2,lambda0=1e-2,eps0=1e-2,nu0=1e-4,c_rho=1.1,"
     "c_lambda=0.9,c_eps=0.9,lr_decay=0.9", bilo__penalty_options, sizeof(bilo_penalty_opts),
     bilo__make_penalty},
    /* ESJ/PZOBO presets from the authors' scripts (research notes §A1): HyperRepresentation
       notebook (GD from a fixed p0), bilevel_training_mnist.py (Adam re-created every outer
       step, warm start), meta_learning.py (SGD momentum, w0 = the previous step's y_T). */
    {"esj", "T=20,mu=0.01,Q=1,directions=sphere,optim=sgd,lr=0.001,reset=1", bilo__es_options,
     sizeof(bilo_es_opts), make_esj},
    {"esj-s", "T=10,mu=0.01,Q=1,directions=sphere,optim=adam,lr=0.001", bilo__es_options,
     sizeof(bilo_es_opts), make_esj},
    {"pzobo", "T=30,mu=0.1,Q=1,directions=sphere,optim=sgd,lr=0.01,momentum=0.9",
     bilo__es_options, sizeof(bilo_es_opts), make_esj},
    {"pzobo-s", "T=10,mu=0.01,Q=1,directions=sphere,optim=adam,lr=0.001", bilo__es_options,
     sizeof(bilo_es_opts), make_esj},
};
enum { N_METHODS = sizeof methods / sizeof *methods };

const char *bilo_estimator_method_name(int i)
{
    return i >= 0 && i < N_METHODS ? methods[i].name : NULL;
}

static bilo_estimator *make_by_name(const bilo__method *m, const bilo_problem *p,
                                    const char *options)
{
    _Alignas(max_align_t) unsigned char opts[256] = {0};
    if (m->opts_size > sizeof opts)
        return bilo__fail(BILO_EINVAL, "bilo_estimator_new: options of %s too large", m->name);
    if (parse_options(m, m->preset, opts) < 0 || parse_options(m, options, opts) < 0)
        return NULL;
    bilo_estimator *e = m->make(p, opts);
    if (e) e->name = m->name;
    return e;
}

bilo_estimator *bilo_estimator_new(const char *name, const bilo_problem *p, const char *options)
{
    if (!name) return bilo__fail(BILO_ENULL, "bilo_estimator_new: NULL method name");
    char known[512] = "";
    for (int m = 0; m < N_METHODS; m++) {
        if (!strcmp(name, methods[m].name)) return make_by_name(&methods[m], p, options);
        size_t len = strlen(known);
        snprintf(known + len, sizeof known - len, "%s%s", m ? ", " : "", methods[m].name);
    }
    return bilo__fail(BILO_EINVAL, "bilo_estimator_new: unknown method '%s' (known: %s)", name,
                      known);
}
