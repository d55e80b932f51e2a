/* bilo-compare: hypergradient error against the task's closed form. All methods are measured
   at one point: the task's initial x₀ and ŷ ≈ y*(x₀) from a long inner solve, so that the
   error is the estimator's own (exact and AID take y as given; ITD and ES run their T inner
   steps from it). Each method estimates ∇Φ once with its configured options (the table's
   "hg rel err" column) and once per budget in {1, 3, 10, 30, 100} of the option that sets its
   work: K for AID's linear solve, Q for ES perturbations, T (inner steps) otherwise — the
   clearest picture of each estimator's bias and variance (../shared/research/bilevel.md).
   Rows go to OUT/budget.csv. */
#include "compare.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int budgets[] = {1, 3, 10, 30, 100};
enum { N_BUDGETS = sizeof budgets / sizeof *budgets };

static double squared_norm(bilo_tensor *t)
{
    bilo_tensor *n = bilo_norm(t, BILO_ALL_AXES, false);
    return n ? bilo_item(n) * bilo_item(n) : NAN;
}

typedef struct {
    bilo_task *task;
    bilo_tensor **y_hat; /* ŷ ≈ y*(x₀), kept */
} point;

/* ŷ: one aid-cg step of 2000 inner iterations (the task's inner settings) from the initial
   point; x is then put back by the reset. */
static int solve_inner(point *pt)
{
    bilo_task *t = pt->task;
    const bilo_problem *p = bilo_task_problem(t);
    if (!(pt->y_hat = calloc((size_t)p->n_y, sizeof *pt->y_hat))) return BILO_ENOMEM;
    char options[CMP_OPTS_LEN + 32];
    const char *base = bilo_task_method_options(t, "aid-cg");
    snprintf(options, sizeof options, "%s%sT=2000,tol=1e-12", base, *base ? "," : "");
    bilo_optim_opts oo = bilo_task_outer_opts(t);
    bilo_estimator *e = bilo_estimator_new("aid-cg", p, options);
    bilo_optim *outer = bilo_optim_new(&oo, p->x, p->n_x);
    int rc = e && outer ? bilo_task_reset(t) : bilo_errcode();
    if (rc == 0) rc = bilo_estimator_step(e, outer);
    for (int i = 0; i < p->n_y && rc == 0; i++)
        if (!(pt->y_hat[i] = bilo_keep(bilo_clone(p->y[i])))) rc = bilo_errcode();
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    return rc;
}

static void free_point(point *pt)
{
    for (int i = 0; pt->y_hat && i < bilo_task_problem(pt->task)->n_y; i++)
        bilo_release(pt->y_hat[i]);
    free(pt->y_hat);
}

static int go_to(const point *pt)
{
    const bilo_problem *p = bilo_task_problem(pt->task);
    int rc = bilo_task_reset(pt->task);
    for (int i = 0; i < p->n_y && rc == 0; i++) rc = bilo_copy_(p->y[i], pt->y_hat[i]);
    return rc;
}

/* ‖ĝ − ∇Φ‖ / ‖∇Φ‖ over all outer tensors at (x₀, ŷ); NaN when the estimate fails. */
static double relative_error(const point *pt, bilo_estimator *e)
{
    const bilo_problem *p = bilo_task_problem(pt->task);
    bilo_tensor *exact[p->n_x], *estimate[p->n_x];
    double diff = 0, norm = 0;
    bilo_scope_begin();
    int rc = go_to(pt);
    if (rc == 0) rc = bilo_task_exact_hypergradient(pt->task, exact);
    if (rc == 0) rc = bilo_estimator_hypergradient(e, p->x, p->y, estimate);
    for (int i = 0; i < p->n_x && rc == 0; i++) {
        bilo_tensor *reference = bilo_cast(exact[i], BILO_F64);
        diff += squared_norm(bilo_sub(bilo_cast(estimate[i], BILO_F64), reference));
        norm += squared_norm(reference);
    }
    bilo_scope_end();
    return rc == 0 ? sqrt(diff / norm) : NAN;
}

static double error_with(const point *pt, const char *method, const char *options)
{
    bilo_estimator *e = bilo_estimator_new(method, bilo_task_problem(pt->task), options);
    double err = e ? relative_error(pt, e) : NAN;
    bilo_estimator_free(e);
    return err;
}

static void with_key(char *out, size_t size, const char *options, const char *key, int value)
{
    snprintf(out, size, "%s%s%s=%d", options, *options ? "," : "", key, value);
}

/* The first of K, Q, T that the method accepts — asked of the library itself, so that methods
   added later get a budget without a table here. */
static const char *budget_key(bilo_task *t, const char *method, const char *options)
{
    static const char *const keys[] = {"K", "Q", "T"};
    for (int k = 0; k < 3; k++) {
        char probe[CMP_OPTS_LEN + 16];
        with_key(probe, sizeof probe, options, keys[k], 1);
        bilo_estimator *e = bilo_estimator_new(method, bilo_task_problem(t), probe);
        bilo_estimator_free(e);
        if (e) return keys[k];
    }
    bilo_clear_error();
    return NULL;
}

static void sweep_method(cmp_session *s, const point *pt, int m, int si, FILE *csv)
{
    const char *method = s->methods[m];
    char options[CMP_OPTS_LEN], budgeted[CMP_OPTS_LEN + 16];
    cmp_method_options(s, pt->task, method, true, options, sizeof options);
    s->results[m][si].hg_error = error_with(pt, method, options);
    const char *key = budget_key(pt->task, method, options);
    fprintf(stderr, "[budget] %s: relative hypergradient error over %s in 1..100\n", method,
            key ? key : "(no budget key)");
    for (int b = 0; b < N_BUDGETS && key; b++) {
        with_key(budgeted, sizeof budgeted, options, key, budgets[b]);
        fprintf(csv, "%s,%s,%d,%llu,%.9g\n", method, key, budgets[b],
                (unsigned long long)(s->cfg->seed + (uint64_t)si),
                error_with(pt, method, budgeted));
    }
}

int cmp_budget_sweep(cmp_session *s, bilo_task *t, int si, FILE *csv)
{
    point pt = {.task = t};
    int rc = solve_inner(&pt);
    if (rc < 0) {
        fprintf(stderr, "bilo-compare: the inner solve for the budget sweep failed: %s\n",
                bilo_last_error());
        free_point(&pt);
        return rc;
    }
    if (si == 0) fputs("method,key,budget,seed,rel_error\n", csv);
    for (int m = 0; m < s->n_methods; m++) sweep_method(s, &pt, m, si, csv);
    free_point(&pt);
    bilo_clear_error();
    if (fflush(csv) == 0) return 0;
    fprintf(stderr, "bilo-compare: cannot write %s/budget.csv\n", s->cfg->out);
    return -1;
}
