/* Private to the bilevel module: the estimator object, its vtable, and helpers shared by the
   methods (inner solver, loss evaluation, tensor-list algebra). */
#ifndef BILO_BILEVEL_IMPL_H
#define BILO_BILEVEL_IMPL_H

#include "bilo_autograd.h"
#include "bilo_bilevel.h"

typedef struct {
    const char *name;
    /* Estimate at (x, y): the lists are aliases that require grad, grads gets n_x tensors. */
    int (*hypergradient)(bilo_estimator *e, bilo_tensor *const *x, bilo_tensor *const *y,
                         bilo_tensor **grads);
    /* Fills grads for one outer step on the problem's tensors; NULL: inner solve, then
       hypergradient at the problem's (x, y). */
    int (*step_grads)(bilo_estimator *e, bilo_tensor **grads);
} bilo__estimator_vt;

struct bilo_estimator {
    const bilo__estimator_vt *vt;
    bilo_problem prob;       /* x and y point at the copies below */
    bilo_tensor **x, **y;
    bilo_tensor **y_init;    /* clones of the initial y, for inner.reset */
    bilo_inner_opts inner;
    bilo_optim *inner_opt;   /* in-place inner optimizer over y (state kept for warm start) */
    int truncate;            /* ITD */
    bilo_aid_opts aid;       /* AID-* */
    bilo_tensor **v;         /* AID warm start of v (NULL entries until first use) */
    bilo_cost last, total;
    char message[256];
};

/* Calls a loss callback with the level's next batch; on NULL or a non-finite value records
   an error naming the callback and the step. */
bilo_tensor *bilo__loss(bilo_estimator *e, bool upper, bilo_tensor *const *x,
                        bilo_tensor *const *y);
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
/* Common constructor for every method. */
bilo_estimator *bilo__estimator_create(const bilo__estimator_vt *vt, const bilo_problem *p,
                                       const bilo_inner_opts *inner);

#endif
