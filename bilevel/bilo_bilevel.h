/* bilo — bilevel optimization: min_x Φ(x) = f(x, y*(x)), y*(x) = argmin_y g(x, y).
 *
 * A problem is two callbacks that build the lower loss g and the upper loss f from bilo ops
 * over lists of outer tensors x and inner tensors y. An estimator computes (an estimate of)
 * the hypergradient ∇Φ(x) = ∇_x f − ∇²_xy g · [∇²_yy g]⁻¹ ∇_y f and takes outer steps; every
 * method sits behind the same opaque bilo_estimator and reports its cost.
 */
#ifndef BILO_BILEVEL_H
#define BILO_BILEVEL_H

#include "bilo_nn.h"
#include "bilo_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Builds a scalar loss from x[0..n_x), y[0..n_y) and a batch (NULL when the level has no
   data source). Returns a new 0-d tensor, or NULL after setting a bilo error. */
typedef bilo_tensor *(*bilo_loss_fn)(bilo_tensor *const *x, bilo_tensor *const *y,
                                     const bilo_batch *batch, void *user);

typedef struct {
    bilo_tensor *const *x; /* outer tensors (any shapes, one float dtype); updated in place */
    int n_x;
    bilo_tensor *const *y; /* inner tensors; updated in place by the inner solver */
    int n_y;
    bilo_loss_fn lower;    /* g(x, y; batch) */
    bilo_loss_fn upper;    /* f(x, y; batch) */
    void *user;
    bilo_batcher *lower_data; /* minibatches for g; NULL (default): full batch */
    bilo_batcher *upper_data; /* minibatches for f; NULL (default): full batch */
} bilo_problem;

typedef struct {
    int T;                 /* inner steps per outer step, 100 when 0 */
    bilo_optim_opts optim; /* inner optimizer on g (SGD/momentum/Adam; nn's defaults) */
    bool reset;            /* false (default): warm start from the previous outer step;
                              true: restart from the y the estimator was created with */
    double tol;            /* stop early once ‖∇_y g‖ ≤ tol; 0 (default): run all T steps */
} bilo_inner_opts;

/* exact: dense ∇²_yy g and ∇²_xy g, solved in f64 (Cholesky, LU when not positive definite). */
typedef struct {
    bilo_inner_opts inner;
} bilo_exact_opts;

/* ITD: reverse mode through the T recorded inner steps (memory grows with T). */
typedef struct {
    bilo_inner_opts inner;
    int truncate; /* back-propagate through the last `truncate` steps only; 0 (default): all */
} bilo_itd_opts;

/* AID-CG / AID-NS / AID-FP: v ≈ [∇²_yy g]⁻¹ ∇_y f from K Hessian-vector products, then
   ∇Φ ≈ ∇_x f − ∇²_xy g · v. When the lower level has minibatches, AID-NS draws a fresh batch
   for every Neumann term (stocBiO, Ji, Yang, Liang 2021). */
typedef struct {
    bilo_inner_opts inner;
    int K;        /* CG iterations / Neumann terms / fixed-point iterations, 10 when 0 */
    double eta;   /* NS and FP step size η (needs η·λ_max(∇²_yy g) < 2), 0.1 when 0 */
    bool warm_v;  /* CG and FP: start from the previous outer step's v; false (default): 0 */
} bilo_aid_opts;

typedef struct {
    int64_t f_grads;     /* gradient evaluations of the upper loss f */
    int64_t g_grads;     /* gradient evaluations of the lower loss g */
    int64_t hvps;        /* Hessian- and mixed-vector products of g */
    int64_t inner_iters; /* inner solver steps */
    int64_t steps;       /* outer steps (bilo_estimator_step calls) */
    double seconds;      /* wall time */
    size_t peak_bytes;   /* peak live bytes of bilo's allocator */
} bilo_cost;

typedef struct bilo_estimator bilo_estimator;

/* The problem's arrays are copied; its tensors, batchers and user pointer must outlive the
   estimator. opts may be NULL for the defaults. */
BILO_API bilo_estimator *bilo_exact_new(const bilo_problem *p, const bilo_exact_opts *opts);
BILO_API bilo_estimator *bilo_itd_new(const bilo_problem *p, const bilo_itd_opts *opts);
BILO_API bilo_estimator *bilo_aid_cg_new(const bilo_problem *p, const bilo_aid_opts *opts);
BILO_API bilo_estimator *bilo_aid_ns_new(const bilo_problem *p, const bilo_aid_opts *opts);
BILO_API bilo_estimator *bilo_aid_fp_new(const bilo_problem *p, const bilo_aid_opts *opts);

/* By name ("exact", "itd", "aid-cg", "aid-ns", "aid-fp") with options "key=value,..." (NULL or
   "" for the defaults). Keys: T, lr, momentum, optim (sgd|adam|adamw), reset (0|1), tol for
   every method; truncate (itd); K, eta, warm_v (aid-*). Unknown names, keys or values give
   BILO_EINVAL with a message naming them. */
BILO_API bilo_estimator *bilo_estimator_new(const char *name, const bilo_problem *p,
                                            const char *options);
BILO_API const char *bilo_estimator_name(const bilo_estimator *e);

/* The estimate at the point (x, y) (lists shaped like the problem's; ITD unrolls its T inner
   steps from y). grads[0..n_x) get new tensors, owned like op results. Costs count towards
   the next report. Returns 0 or a negative code. */
BILO_API int bilo_estimator_hypergradient(bilo_estimator *e, bilo_tensor *const *x,
                                          bilo_tensor *const *y, bilo_tensor **grads);
/* One outer iteration on the problem's tensors: the inner work, then outer->step with the
   hypergradient (outer must be an optimizer over the problem's x). A callback returning NULL
   stops the step with its error; a non-finite loss or hypergradient gives BILO_ENUMERIC
   naming the step number. */
BILO_API int bilo_estimator_step(bilo_estimator *e, bilo_optim *outer);
/* Cost of the last step (or hypergradient call) and the total since creation. */
BILO_API void bilo_estimator_report(const bilo_estimator *e, bilo_cost *last, bilo_cost *total);
/* A note from the last computation (e.g. exact's fallback to LU), "" when none. */
BILO_API const char *bilo_estimator_message(const bilo_estimator *e);
BILO_API void bilo_estimator_free(bilo_estimator *e);

/* ---- outer driver ---------------------------------------------------------------------- */

/* Fills values[0..n_metrics) (e.g. validation loss, test accuracy) after outer step `step`.
   Returns 0 or a negative code after setting a bilo error. */
typedef int (*bilo_metric_fn)(int64_t step, double *values, void *user);

typedef struct {
    int64_t steps;              /* outer steps in all, counting those before a resume */
    int64_t eval_every;         /* metrics and a CSV row every k steps and after the last;
                                   0: after the last step only */
    bilo_metric_fn metric;      /* NULL: no metrics */
    const char *const *metric_names; /* n_metrics column names */
    int n_metrics;
    void *user;                 /* passed to metric */
    const char *csv_path;       /* NULL: no log. Header, then one row per evaluation: step, the
                                   last and total of every bilo_cost counter, seconds, metrics */
    bool progress;              /* one line rewritten on stderr, only when it is a terminal */
    const char *checkpoint_path;/* NULL: no checkpoints */
    int64_t checkpoint_every;   /* 0: none */
    bool resume;                /* continue from checkpoint_path when that file exists */
} bilo_driver_opts;

/* Runs outer steps until o->steps (outer: the optimizer over the problem's x). Checkpoints hold
   x, y, the outer optimizer's state and step count, the estimator's persistent state (inner
   optimizer, warm-start v, costs) and both levels' batcher positions; they are saved atomically
   (bilo_save_params' format), so a failed save keeps the previous one, and a resumed run (with
   batchers built like the original's) follows the uninterrupted trajectory bit for bit.
   Returns 0 or the first error, with a message naming the step. */
BILO_API int bilo_driver_run(bilo_estimator *e, bilo_optim *outer, const bilo_driver_opts *o);

#ifdef __cplusplus
}
#endif
#endif
