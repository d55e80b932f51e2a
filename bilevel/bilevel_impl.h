/* Private to the bilevel module: the estimator object, its vtable, and helpers shared by the
   methods (inner solver, loss evaluation, tensor-list algebra). */
#ifndef BILO_BILEVEL_IMPL_H
#define BILO_BILEVEL_IMPL_H

#include <stddef.h>

#include "bilo_autograd.h"
#include "bilo_bilevel.h"

typedef struct {
    const char *name;
    /* Estimate at (x, y): the lists are aliases that require grad, grads gets n_x tensors. */
    int (*hypergradient)(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                         bilo_tensor **grads);
    /* Fills grads for one outer step on the problem's tensors (methods that move y themselves,
       or that follow a published schedule for the outer step size through
       bilo_optim_set_lr(outer, ...)); NULL: inner solve, then hypergradient at (x, y). */
    int (*step_grads)(bilo_estimator *e, bilo_optim *outer, bilo_tensor **grads);
} bilo__estimator_vt;

struct bilo_estimator {
    const bilo__estimator_vt *vt;
    const char *name;        /* vt->name, or the preset's name when created by name */
    bilo_problem prob;       /* x and y point at the copies below */
    bilo_tensor **x, **y;
    bilo_tensor **y_init;    /* clones of the initial y, for inner.reset */
    bilo_inner_opts inner;
    bilo_optim *inner_opt;   /* in-place inner optimizer over y (state kept for warm start) */
    int truncate;            /* ITD */
    bilo_aid_opts aid;       /* AID-* */
    bilo_tensor **v;         /* AID warm start of v (NULL entries until first use) */
    void *opts;              /* the method's own option struct (bilo__estimator_create copies it) */
    bilo_tensor **state;     /* the method's persistent tensors (e.g. SOBA's v, F2SA's z and λ):
                                fixed shapes, created with the estimator, saved in checkpoints */
    int n_state;
    bilo_cost last, total;
    char message[256];
};

/* Calls a loss callback with the level's next batch; on NULL or a non-finite value records
   an error naming the callback and the step. */
bilo_tensor *bilo__loss(bilo_estimator *e, bool upper, bilo_tensor *const *x,
                        bilo_tensor *const *y);
/* The same on an explicit batch (NULL: full batch). Touches no estimator state, so several
   threads may call it at once. */
bilo_tensor *bilo__loss_on(bilo_estimator *e, bool upper, bilo_tensor *const *x,
                           bilo_tensor *const *y, const bilo_batch *batch);
/* Draws the level's next minibatch into *batch (tensors owned by the open scope); *use is
   batch, or NULL when the level has no data source. Returns 0 or a negative code. */
int bilo__next_batch(bilo_estimator *e, bool upper, bilo_batch *batch, const bilo_batch **use);
/* gy = ∇_y g at (x, y) on the given batch, from aliases of y (no graph kept by the result),
   checked for NaN/Inf; counts nothing and touches no estimator state (thread-safe). */
int bilo__lower_grad_on(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                        const bilo_batch *batch, bilo_tensor **gy);
/* Restores the initial y and a fresh inner optimizer state. */
int bilo__inner_reset(bilo_estimator *e);
/* T inner steps in place on the problem's y (reset first when asked). */
int bilo__inner_solve(bilo_estimator *e);
/* Aliases of ts[0..n) sharing their data, cut from any graph, requiring grad. */
int bilo__grad_aliases(bilo_tensor *const *ts, int n, bilo_tensor **out);
/* Gradient of loss w.r.t. in[0..n); unused inputs get zeros. */
int bilo__grads_or_zeros(bilo_tensor *loss, bilo_tensor *const *in, int n, bilo_tensor **out,
                         unsigned flags);
/* Σ_i <a_i, b_i> over lists of n tensors. */
double bilo__list_dot(bilo_tensor *const *a, bilo_tensor *const *b, int n);
/* Negative code naming the step when any element of ts[0..n) is NaN or Inf. */
int bilo__check_finite(bilo_estimator *e, const char *what, bilo_tensor *const *ts, int n);

extern const bilo__estimator_vt bilo__exact_vt, bilo__itd_vt, bilo__aid_cg_vt,
    bilo__aid_ns_vt, bilo__aid_fp_vt;
/* fx = ∇_x f, fy = ∇_y f at (x, y) (aliases requiring grad); counts one f gradient. */
int bilo__upper_grads(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                      bilo_tensor **fx, bilo_tensor **fy);
/* gy = ∇_y g with its graph recorded, so products with it are second derivatives. */
int bilo__lower_grad_graph(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                           bilo_tensor **gy);
/* out = (∂gy/∂in)ᵀ v: ∇²_yy g·v for in = y, ∇²_xy g·v for in = x; counts one HVP. */
int bilo__second_product(bilo_estimator *e, bilo_tensor *const *gy, bilo_tensor *const *v,
                         bilo_tensor *const *in, int n_in, bilo_tensor **out);
/* Fresh copies (no graph, own storage) of ts[0..n), scaled by alpha. */
int bilo__list_scaled(bilo_tensor *const *ts, int n, double alpha, bilo_tensor **out);
/* y_i += alpha x_i in place. */
int bilo__list_axpy(bilo_tensor *const *y, double alpha, bilo_tensor *const *x, int n);

/* In-place Cholesky of the n×n row-major a and solve of a·v = b (b overwritten by v); false
   when a is not positive definite. */
bool bilo__cholesky_solve(double *a, int64_t n, double *b);

/* Common constructor for every method. */
bilo_estimator *bilo__estimator_create(const bilo__estimator_vt *vt, const bilo_problem *p,
                                       const bilo_inner_opts *inner);
/* Copies the method's option struct into e->opts (freed with the estimator). */
int bilo__estimator_set_opts(bilo_estimator *e, const void *opts, size_t size);
/* Allocates e->state with n NULL entries; the method fills them with kept tensors. */
int bilo__state_alloc(bilo_estimator *e, int n);

/* ---- options by name ------------------------------------------------------------------ */

typedef enum { BILO__OPT_INT, BILO__OPT_DOUBLE, BILO__OPT_BOOL, BILO__OPT_U64,
               BILO__OPT_CHOICE, BILO__OPT_STRING } bilo__opt_type;

/* Size of a STRING option's field: char[BILO__OPT_STRING_LEN] (e.g. a data path). */
#define BILO__OPT_STRING_LEN 256

/* One "key=value" option: where it lives in the method's option struct. CHOICE stores the
   index (an int-sized enum) of the value in the NULL-terminated `choices`; STRING copies the
   value into a char[BILO__OPT_STRING_LEN] field (a longer value is rejected). */
typedef struct {
    const char *key;
    bilo__opt_type type;
    size_t offset;
    const char *const *choices;
} bilo__option;

/* The keys every method takes, for an option struct whose first member is `inner`. */
#define BILO__INNER_OPTIONS(type)                                                              \
    {"T", BILO__OPT_INT, offsetof(type, inner.T), NULL},                                       \
    {"lr", BILO__OPT_DOUBLE, offsetof(type, inner.optim.lr), NULL},                            \
    {"momentum", BILO__OPT_DOUBLE, offsetof(type, inner.optim.momentum), NULL},                \
    {"optim", BILO__OPT_CHOICE, offsetof(type, inner.optim.kind), bilo__optim_kinds},          \
    {"reset", BILO__OPT_BOOL, offsetof(type, inner.reset), NULL},                              \
    {"tol", BILO__OPT_DOUBLE, offsetof(type, inner.tol), NULL}

extern const char *const bilo__optim_kinds[];

/* Parses "key=value,..." into opts by the table; errors start with `api` and name `who`. */
int bilo__parse_options(const char *api, const char *who, const bilo__option *options,
                        const char *text, void *opts);

/* A name bilo_estimator_new accepts: the preset is applied before the caller's options. */
typedef struct {
    const char *name;
    const char *preset;            /* "key=value,..." ("" for none) */
    const bilo__option *options;   /* terminated by a {NULL} entry */
    size_t opts_size;
    bilo_estimator *(*make)(const bilo_problem *p, const void *opts);
} bilo__method;

/* Option tables and by-name constructors of the methods in their own files. */
extern const bilo__option bilo__bome_options[], bilo__f2sa_options[];        /* first_order.c */
bilo_estimator *bilo__make_bome(const bilo_problem *p, const void *opts);
bilo_estimator *bilo__make_f2sa(const bilo_problem *p, const void *opts);
extern const bilo__option bilo__single_loop_options[], bilo__penalty_options[];
bilo_estimator *bilo__make_soba(const bilo_problem *p, const void *opts);
bilo_estimator *bilo__make_fsla(const bilo_problem *p, const void *opts);
bilo_estimator *bilo__make_penalty(const bilo_problem *p, const void *opts);
extern const bilo__option bilo__es_options[]; /* es_methods.c: esj, esj-s, pzobo, pzobo-s */

#endif
