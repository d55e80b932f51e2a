/* The task catalog: the registry of task kinds, construction by name with "key=value"
   options, the initial point, metrics and the exact hypergradient where a kind has one. */
#include <stdio.h>
#include <string.h>

#include "tasks_impl.h"
#include "tensor_impl.h"

/* Every task kind, in the order bilo_task_name lists them; NULL ends the list. */
static const bilo__task_kind *const kinds[] = {
    &bilo__task_quadratic,
    &bilo__task_coreset,
    &bilo__task_hyperrep,
    &bilo__task_meta_sinusoid,
    &bilo__task_hyperclean,
    &bilo__task_l2reg,
    &bilo__task_meta_fmnist,
    NULL,
};

static const bilo__task_kind *find_kind(const char *api, const char *name)
{
    if (!name) return bilo__fail(BILO_ENULL, "%s: NULL task name", api);
    char known[512] = "";
    for (int k = 0; kinds[k]; k++) {
        if (!strcmp(name, kinds[k]->name)) return kinds[k];
        size_t len = strlen(known);
        snprintf(known + len, sizeof known - len, "%s%s", k ? ", " : "", kinds[k]->name);
    }
    return bilo__fail(BILO_EINVAL, "%s: unknown task '%s' (known: %s)", api, name, known);
}

const char *bilo_task_name(int i)
{
    for (int k = 0; kinds[k]; k++)
        if (k == i) return kinds[k]->name;
    return NULL;
}

const char *bilo_task_help(const char *name)
{
    const bilo__task_kind *k = find_kind("bilo_task_help", name);
    return k ? k->help : NULL;
}

static int add_tensor(bilo_task *t, bool outer, bilo_tensor *v)
{
    int *n = outer ? &t->problem.n_x : &t->problem.n_y;
    bilo_tensor **list = outer ? t->x : t->y;
    if (!v) return bilo_errcode();
    if (*n >= BILO__TASK_MAX_TENSORS) {
        bilo_release(bilo_keep(v));
        return bilo__fail_code(BILO_EINVAL, "bilo_task_new (%s): more than %d %s tensors",
                               t->kind->name, BILO__TASK_MAX_TENSORS, outer ? "outer" : "inner");
    }
    list[(*n)++] = bilo_keep(v);
    return 0;
}

int bilo__task_add_x(bilo_task *t, bilo_tensor *v) { return add_tensor(t, true, v); }
int bilo__task_add_y(bilo_task *t, bilo_tensor *v) { return add_tensor(t, false, v); }

void bilo__task_set_metrics(bilo_task *t, const char *const *names, int n)
{
    t->n_metrics = n < BILO__TASK_MAX_METRICS ? n : BILO__TASK_MAX_METRICS;
    for (int i = 0; i < t->n_metrics; i++) t->metric_names[i] = names[i];
}

bilo_tensor *bilo__task_tensor(bilo_dtype dtype, int ndim, const int64_t *shape, const double *v)
{
    bilo_tensor *t64 = bilo_from_data(BILO_F64, ndim, shape, v);
    if (dtype == BILO_F64 || !t64) return t64;
    bilo_tensor *t = bilo_cast(t64, dtype);
    bilo_release(bilo_keep(t64));
    return t;
}

void bilo__task_read(const bilo_tensor *t, double *out)
{
    for (int64_t i = 0; i < bilo_numel(t); i++) out[i] = bilo_get_flat(t, i);
}

void bilo__fill_uniform(bilo_rng *rng, double *v, int64_t n, double lo, double hi)
{
    for (int64_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * bilo_rng_uniform(rng);
}

void bilo__fill_normal(bilo_rng *rng, double *v, int64_t n, double scale)
{
    for (int64_t i = 0; i < n; i++) v[i] = scale * bilo_rng_normal(rng);
}

const char *bilo__method_setting_find(const bilo__method_setting *table, const char *method)
{
    for (; table->method; table++)
        if (!strcmp(method, table->method)) return table->options;
    return "";
}

/* Clones of the current x and y, kept as the point bilo_task_reset returns to. */
static int record_initial_point(bilo_task *t)
{
    int rc = 0;
    bilo_no_grad_begin();
    for (int i = 0; rc == 0 && i < t->problem.n_x; i++)
        if (!(t->x0[i] = bilo_keep(bilo_clone(t->x[i])))) rc = bilo_errcode();
    for (int i = 0; rc == 0 && i < t->problem.n_y; i++)
        if (!(t->y0[i] = bilo_keep(bilo_clone(t->y[i])))) rc = bilo_errcode();
    bilo_no_grad_end();
    return rc;
}

/* The kind's option struct: its defaults, then the caller's options, then build. */
static int build_task(bilo_task *t, const bilo_task_opts *o)
{
    const bilo__task_kind *k = t->kind;
    void *opts = bilo__calloc(1, k->opts_size ? k->opts_size : 1);
    if (!opts) return bilo__fail_code(BILO_ENOMEM, "bilo_task_new (%s): out of memory", k->name);
    int rc = bilo__parse_options("bilo_task_new", k->name, k->options, k->defaults, opts);
    if (rc == 0) rc = bilo__parse_options("bilo_task_new", k->name, k->options, o->options, opts);
    if (rc == 0) {
        bilo_scope_begin();
        rc = k->build(t, opts, o);
        bilo_scope_end();
    }
    bilo__mfree(opts);
    return rc < 0 ? rc : record_initial_point(t);
}

bilo_task *bilo_task_new(const char *name, const bilo_task_opts *opts)
{
    const bilo__task_kind *k = find_kind("bilo_task_new", name);
    if (!k) return NULL;
    bilo_task_opts o = opts ? *opts : (bilo_task_opts){0};
    if (o.dtype != BILO_F32 && o.dtype != BILO_F64)
        return bilo__fail(BILO_EDTYPE, "bilo_task_new (%s): dtype %s is not f32 or f64", name,
                          bilo_dtype_name(o.dtype));
    bilo_task *t = bilo__calloc(1, sizeof *t);
    if (!t) return bilo__fail(BILO_ENOMEM, "bilo_task_new (%s): out of memory", name);
    t->kind = k;
    t->problem.x = t->x;
    t->problem.y = t->y;
    t->problem.user = t;
    if (build_task(t, &o) < 0) {
        bilo_task_free(t);
        return NULL;
    }
    return t;
}

void bilo_task_free(bilo_task *t)
{
    if (!t) return;
    for (int i = 0; i < t->problem.n_x; i++) {
        bilo_release(t->x[i]);
        bilo_release(t->x0[i]);
    }
    for (int i = 0; i < t->problem.n_y; i++) {
        bilo_release(t->y[i]);
        bilo_release(t->y0[i]);
    }
    if (t->data && t->kind->free_data) t->kind->free_data(t->data);
    bilo__mfree(t);
}

const bilo_problem *bilo_task_problem(const bilo_task *t) { return t ? &t->problem : NULL; }

int bilo_task_reset(bilo_task *t)
{
    if (!t) return bilo__fail_code(BILO_ENULL, "bilo_task_reset: NULL task");
    for (int i = 0; i < t->problem.n_x; i++)
        if (bilo_copy_(t->x[i], t->x0[i]) < 0) return bilo_errcode();
    for (int i = 0; i < t->problem.n_y; i++)
        if (bilo_copy_(t->y[i], t->y0[i]) < 0) return bilo_errcode();
    return 0;
}

int bilo_task_n_metrics(const bilo_task *t) { return t ? t->n_metrics : 0; }

const char *const *bilo_task_metric_names(const bilo_task *t)
{
    return t ? t->metric_names : NULL;
}

int bilo_task_metrics(bilo_task *t, double *values)
{
    if (!t || !values) return bilo__fail_code(BILO_ENULL, "bilo_task_metrics: NULL argument");
    bilo_scope_begin();
    bilo_no_grad_begin();
    int rc = t->kind->metrics(t, values);
    bilo_no_grad_end();
    bilo_scope_end();
    return rc;
}

int bilo_task_metric_fn(int64_t step, double *values, void *task)
{
    (void)step;
    return bilo_task_metrics(task, values);
}

bool bilo_task_has_exact(const bilo_task *t) { return t && t->kind->exact; }

int bilo_task_exact_hypergradient(bilo_task *t, bilo_tensor **grads)
{
    if (!t || !grads)
        return bilo__fail_code(BILO_ENULL, "bilo_task_exact_hypergradient: NULL argument");
    if (!t->kind->exact)
        return bilo__fail_code(BILO_EINVAL, "bilo_task_exact_hypergradient: task '%s' has no "
                               "closed-form hypergradient", t->kind->name);
    for (int i = 0; i < t->problem.n_x; i++) grads[i] = NULL;
    bilo_scope_begin();
    bilo_no_grad_begin();
    int rc = t->kind->exact(t, grads);
    bilo_no_grad_end();
    for (int i = 0; i < t->problem.n_x; i++) {
        if (rc == 0) bilo_scope_return(grads[i]);
        else grads[i] = NULL;
    }
    bilo_scope_end();
    return rc;
}

bilo_optim_opts bilo_task_outer_opts(const bilo_task *t)
{
    return t ? t->outer : (bilo_optim_opts){0};
}

const char *bilo_task_method_options(const bilo_task *t, const char *method)
{
    if (!t || !method || !t->kind->method_options) return "";
    const char *s = t->kind->method_options(method);
    return s ? s : "";
}
