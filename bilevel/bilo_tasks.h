/* bilo — the standard bilevel problems of the literature, ready to run: data (generated or
 * read from the Debian dataset packages), the problem's tensors and callbacks, task metrics
 * and, where a closed form exists, the exact hypergradient. bilo-compare runs them; tests and
 * benchmarks use them so that every program solves the same problem.
 */
#ifndef BILO_TASKS_H
#define BILO_TASKS_H

#include "bilo_bilevel.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bilo_task bilo_task;

typedef struct {
    uint64_t seed;       /* data generation, label corruption, splits, initial point */
    const char *options; /* task-specific "key=value,..." (NULL or "": the defaults); every
                            task documents its keys in bilo_task_help */
    bilo_dtype dtype;    /* BILO_F32 or BILO_F64; 0 (BILO_F32): the task's own default */
} bilo_task_opts;

/* Names: see bilo_task_name(i). Unknown names, keys or values give BILO_EINVAL naming them; a
   missing or corrupt data file gives BILO_EIO / BILO_EFORMAT naming the path. */
BILO_API bilo_task *bilo_task_new(const char *name, const bilo_task_opts *opts);
BILO_API void bilo_task_free(bilo_task *t);
/* The i-th task name (i = 0, 1, ...), NULL past the last. */
BILO_API const char *bilo_task_name(int i);
/* One paragraph on a task by name: what it is, its source, its option keys with defaults. */
BILO_API const char *bilo_task_help(const char *name);

/* The problem (its tensors are the task's; estimators update them in place). */
BILO_API const bilo_problem *bilo_task_problem(const bilo_task *t);
/* Restores x and y to the task's initial point (so several methods start from the same one). */
BILO_API int bilo_task_reset(bilo_task *t);

/* Task metrics at the current (x, y), e.g. upper loss, test accuracy, F1 of the sample weights,
   ‖∇Φ‖ where exact. The first metric is the upper-level objective the table reports. */
BILO_API int bilo_task_n_metrics(const bilo_task *t);
BILO_API const char *const *bilo_task_metric_names(const bilo_task *t);
BILO_API int bilo_task_metrics(bilo_task *t, double *values);
/* bilo_metric_fn for bilo_driver_run (user = the task). */
BILO_API int bilo_task_metric_fn(int64_t step, double *values, void *task);

/* Exact ∇Φ at the current x into grads[0..n_x) (new tensors). BILO_EINVAL when the task has
   no closed form (bilo_task_has_exact tells beforehand). */
BILO_API bool bilo_task_has_exact(const bilo_task *t);
BILO_API int bilo_task_exact_hypergradient(bilo_task *t, bilo_tensor **grads);

/* Settings that work for this task: the outer optimizer, and options for a method by name
   ("" when the task has none for it) to which the caller's options are appended. */
BILO_API bilo_optim_opts bilo_task_outer_opts(const bilo_task *t);
BILO_API const char *bilo_task_method_options(const bilo_task *t, const char *method);

#ifdef __cplusplus
}
#endif
#endif
