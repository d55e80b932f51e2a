/* Every hypergradient estimator on the catalog's "quadratic" task (bilo_tasks.h), a bilevel
 * problem with a closed-form ∇Φ (../shared/research/bilevel.md §E1), in f64.
 *
 * Two measurements per method, both with the task's settings for it:
 *   one step    the direction of the first outer step from the task's start (x₀, y₀), its
 *               inner work included, against ∇Φ(x₀): relative error and the step's cost;
 *   run         ‖∇Φ(x)‖ after `steps` outer steps with the task's outer optimizer, and the
 *               mean time per step.
 * The HVP-based methods and ESJ/PZOBO (coordinate directions are exact on this affine inner
 * problem) estimate ∇Φ itself; BOME, F2SA, SOBA, FSLA and the penalty method move y (and
 * their own state) along with x, so their first direction is not meant to equal ∇Φ: their
 * worth shows in the run column.
 *
 * usage: quadratic [dim (20)] [seed (1)] [steps (300)] */
#include <bilo.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double err;        /* one step: relative error of the direction */
    bilo_cost step;    /* one step: its cost */
    double grad_norm;  /* run: ‖∇Φ‖ at the end */
    double ms_per_step;
} row;

static double flat_distance(bilo_tensor *a, bilo_tensor *b, double *norm_b)
{
    double num = 0, den = 0;
    for (int64_t k = 0; k < bilo_numel(a); k++) {
        double d = bilo_get_flat(a, k) - bilo_get_flat(b, k);
        num += d * d;
        den += bilo_get_flat(b, k) * bilo_get_flat(b, k);
    }
    *norm_b = sqrt(den);
    return sqrt(num);
}

static bilo_estimator *method_on(bilo_task *task, const char *name)
{
    if (bilo_task_reset(task) < 0) return NULL;
    return bilo_estimator_new(name, bilo_task_problem(task), bilo_task_method_options(task, name));
}

/* An outer SGD step of lr 1 moves x by exactly minus the direction the method produced. */
static int one_step(bilo_task *task, const char *name, row *r)
{
    const bilo_problem *p = bilo_task_problem(task);
    bilo_estimator *e = method_on(task, name);
    bilo_optim *outer = e ? bilo_optim_new(&(bilo_optim_opts){.lr = 1.0}, p->x, 1) : NULL;
    int rc = outer ? 0 : bilo_errcode();
    bilo_scope_begin();
    bilo_tensor *want = NULL, *x0 = bilo_clone(p->x[0]);
    if (rc == 0) rc = bilo_task_exact_hypergradient(task, &want);
    if (rc == 0) rc = bilo_estimator_step(e, outer);
    if (rc == 0) {
        double norm;
        bilo_tensor *got = bilo_sub(x0, p->x[0]);
        r->err = flat_distance(got, want, &norm) / norm;
        bilo_estimator_report(e, &r->step, NULL);
    }
    bilo_scope_end();
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    return rc;
}

static int run(bilo_task *task, const char *name, int steps, row *r)
{
    bilo_estimator *e = method_on(task, name);
    bilo_optim_opts oo = bilo_task_outer_opts(task);
    bilo_optim *outer = e ? bilo_optim_new(&oo, bilo_task_problem(task)->x, 1) : NULL;
    int rc = outer ? 0 : bilo_errcode();
    for (int s = 0; s < steps && rc == 0; s++) rc = bilo_estimator_step(e, outer);
    double metrics[8];
    if (rc == 0) rc = bilo_task_metrics(task, metrics);
    if (rc == 0) {
        bilo_cost total;
        bilo_estimator_report(e, NULL, &total);
        r->grad_norm = metrics[1]; /* the task's metrics: phi, grad_norm, y_error */
        r->ms_per_step = total.seconds * 1e3 / steps;
    }
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    return rc;
}

int main(int argc, char **argv)
{
    int dim = argc > 1 ? atoi(argv[1]) : 20, steps = argc > 3 ? atoi(argv[3]) : 300;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    if (dim < 1 || steps < 1) {
        fprintf(stderr, "usage: quadratic [dim >= 1] [seed] [steps >= 1]\n");
        return 2;
    }
    char options[64];
    snprintf(options, sizeof options, "dx=%d,dy=%d", dim, dim);
    bilo_task *task = bilo_task_new("quadratic", &(bilo_task_opts){.seed = seed,
                                                                    .options = options,
                                                                    .dtype = BILO_F64});
    if (!task) {
        fprintf(stderr, "quadratic: %s\n", bilo_last_error());
        return 1;
    }
    double start[8];
    bilo_task_metrics(task, start);
    printf("catalog task 'quadratic' (dim x = dim y = %d, seed %llu, f64): ‖∇Φ(x₀)‖ = %.3g\n", dim,
           (unsigned long long)seed, start[1]);
    printf("%-8s | %9s %7s %7s %6s %8s %10s | %10s %8s\n", "", "one step", "", "", "", "",
           "", "run", "");
    printf("%-8s | %9s %7s %7s %6s %8s %10s | %10s %8s\n", "method", "rel err", "f grads",
           "g grads", "HVPs", "ms", "peak bytes", "|grad Phi|", "ms/step");
    int failed = 0;
    for (int m = 0; bilo_estimator_method_name(m); m++) {
        const char *name = bilo_estimator_method_name(m);
        row r = {0};
        if (one_step(task, name, &r) < 0 || run(task, name, steps, &r) < 0) {
            fprintf(stderr, "quadratic: %s failed: %s\n", name, bilo_last_error());
            failed++;
            continue;
        }
        printf("%-8s | %9.2e %7lld %7lld %6lld %8.3f %10zu | %10.2e %8.3f\n", name, r.err,
               (long long)r.step.f_grads, (long long)r.step.g_grads, (long long)r.step.hvps,
               r.step.seconds * 1e3, r.step.peak_bytes, r.grad_norm, r.ms_per_step);
    }
    printf("(run: %d outer steps from x₀ with the task's outer optimizer and method settings; "
           "bilo_task_method_options lists them)\n", steps);
    bilo_task_free(task);
    return failed ? 1 : 0;
}
