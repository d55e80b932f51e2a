/* Private to the task catalog: the task object and what each task kind provides. */
#ifndef BILO_TASKS_IMPL_H
#define BILO_TASKS_IMPL_H

#include "bilevel_impl.h"
#include "bilo_tasks.h"

#define BILO__TASK_MAX_METRICS 8
#define BILO__TASK_MAX_TENSORS 8

struct bilo_task {
    const struct bilo__task_kind *kind;
    bilo_problem problem;                      /* x and y point at the arrays below */
    bilo_tensor *x[BILO__TASK_MAX_TENSORS], *y[BILO__TASK_MAX_TENSORS];
    bilo_tensor *x0[BILO__TASK_MAX_TENSORS], *y0[BILO__TASK_MAX_TENSORS]; /* initial point */
    const char *metric_names[BILO__TASK_MAX_METRICS];
    int n_metrics;
    bilo_optim_opts outer;
    void *data;                                /* the kind's own state (datasets, batchers) */
};

typedef struct bilo__task_kind {
    const char *name;
    const char *help;           /* for bilo_task_help: source, what is measured, option keys */
    const bilo__option *options; /* the kind's "key=value" table, {NULL}-terminated */
    size_t opts_size;           /* size of the option struct the table fills */
    const char *defaults;       /* options applied before the caller's */
    /* Builds t->data, the problem (callbacks with user = t), x, y (kept tensors), metric names
       and outer opts; the catalog then records the initial point. */
    int (*build)(bilo_task *t, const void *opts, const bilo_task_opts *o);
    int (*metrics)(bilo_task *t, double *values);
    int (*exact)(bilo_task *t, bilo_tensor **grads);   /* NULL: no closed form */
    const char *(*method_options)(const char *method); /* NULL: none */
    void (*free_data)(void *data);
} bilo__task_kind;

/* Hands v (a new tensor, or one a scope owns) to the task as its next outer (x) or inner (y)
   tensor: kept, listed in the problem, released by bilo_task_free. NULL v passes its error on;
   on any failure v is released. */
int bilo__task_add_x(bilo_task *t, bilo_tensor *v);
int bilo__task_add_y(bilo_task *t, bilo_tensor *v);
/* Sets the metric names (at most BILO__TASK_MAX_METRICS, static strings). */
void bilo__task_set_metrics(bilo_task *t, const char *const *names, int n);

/* A tensor of dtype holding the f64 values v (so that a task generates the same numbers at
   either precision); NULL after an error. */
bilo_tensor *bilo__task_tensor(bilo_dtype dtype, int ndim, const int64_t *shape, const double *v);
/* The elements of t, flattened, into out (f64). */
void bilo__task_read(const bilo_tensor *t, double *out);
/* v[0..n) = lo + (hi − lo)·U[0,1) and v[0..n) = scale·N(0,1) from rng. */
void bilo__fill_uniform(bilo_rng *rng, double *v, int64_t n, double lo, double hi);
void bilo__fill_normal(bilo_rng *rng, double *v, int64_t n, double scale);

/* A kind's settings per method, for its method_options: {NULL}-terminated. */
typedef struct {
    const char *method, *options;
} bilo__method_setting;
/* The options of `method` in table, "" when the table has none. */
const char *bilo__method_setting_find(const bilo__method_setting *table, const char *method);

/* The rows of the first-order, single-loop and penalty methods that the dataset tasks with 20
   inner SGD steps of 0.1 share (l2reg, meta-fmnist): constant steps, F2SA from λ = 10 with y's
   step scaled by 1/λ, penalty with Adam 0.01 from ρ = λ = 3. */
#define BILO__T20_SGD_FIRST_ORDER_SETTINGS                                   \
    {"bome", "T=20,lr=0.1,y_lr=0.1"},                                        \
    {"bome-hpo", "T=20,lr=0.1,momentum=0,y_lr=0.1,y_momentum=0"},            \
    {"f2sa", "T=20,lr=0.1,y_lr_over_lambda=1,decay=0,lambda0=10"},           \
    {"soba", "T=20,lr=0.1,decay=0"},                                         \
    {"fsla", "T=20,lr=0.1,decay=0"},                                         \
    {"penalty", "T=20,optim=adam,lr=0.01,rho0=3,lambda0=3"}

extern const bilo__task_kind bilo__task_quadratic, bilo__task_coreset, bilo__task_hyperrep,
    bilo__task_meta_sinusoid, bilo__task_hyperclean, bilo__task_l2reg, bilo__task_meta_fmnist;

#endif
