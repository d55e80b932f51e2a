/* bilo-compare: how do the hypergradient methods compare on *my* problem — in accuracy, time
 * and memory? Runs every chosen method on one of the literature's standard bilevel problems
 * (bilo_tasks.h) from the same starting point and prints a table; CSV logs, checkpoints and
 * plots go to --out. Interrupted comparisons continue with --resume.
 *
 * usage: bilo-compare PROBLEM [options]   (bilo-compare --help lists both)
 *   bilo-compare quadratic --methods itd,aid-cg,esj --outer-steps 100
 *   bilo-compare hyperclean --methods all --seeds 3 --esj.Q 10 --esj.mu 0.01
 */
#include "compare.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* mkdir -p */
static int make_dirs(const char *path)
{
    char buf[CMP_PATH_LEN];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        bool end = *p == '\0';
        if (*p != '/' && !end) continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -1;
        if (end) return 0;
        *p = '/';
    }
}

static bool task_exists(const char *name)
{
    for (int i = 0; bilo_task_name(i); i++)
        if (!strcmp(bilo_task_name(i), name)) return true;
    return false;
}

/* "exact" builds dense ∇²_yy g and ∇²_xy g: within reach when those fit in ~32 MB of f64. */
static bool exact_runnable(const bilo_task *t)
{
    if (bilo_task_has_exact(t)) return true;
    const bilo_problem *p = bilo_task_problem(t);
    int64_t nx = 0, ny = 0;
    for (int i = 0; i < p->n_x; i++) nx += bilo_numel(p->x[i]);
    for (int i = 0; i < p->n_y; i++) ny += bilo_numel(p->y[i]);
    return ny <= 2000 && ny * (nx + ny) <= 4000000;
}

static int add_method(cmp_session *s, const char *name)
{
    for (int m = 0; m < s->n_methods; m++)
        if (!strcmp(s->methods[m], name)) {
            cmp_usage_error("--methods names %s twice", name);
            return -1;
        }
    snprintf(s->methods[s->n_methods++], CMP_NAME_LEN, "%s", name);
    return 0;
}

/* For --methods all: exact within reach, and the task's own settings for the method accepted
   (a method they do not suit is left out with a note; named explicitly, it fails in its row). */
static bool runnable(const cmp_session *s, bilo_task *t, const char *method)
{
    if (!strcmp(method, "exact") && !exact_runnable(t)) return false;
    char options[CMP_OPTS_LEN];
    cmp_method_options(s, t, method, false, options, sizeof options);
    bilo_estimator *e = bilo_estimator_new(method, bilo_task_problem(t), options);
    bilo_estimator_free(e);
    if (!e) fprintf(stderr, "bilo-compare: all: leaving out %s: %s\n", method, bilo_last_error());
    return e != NULL;
}

static int resolve_methods(cmp_session *s, bilo_task *t)
{
    if (!strcmp(s->cfg->methods, "all")) {
        for (int i = 0; bilo_estimator_method_name(i) && s->n_methods < CMP_MAX_METHODS; i++)
            if (runnable(s, t, bilo_estimator_method_name(i)))
                add_method(s, bilo_estimator_method_name(i));
        return 0;
    }
    char list[CMP_OPTS_LEN], *save = NULL;
    snprintf(list, sizeof list, "%s", s->cfg->methods);
    for (char *m = strtok_r(list, ",", &save); m; m = strtok_r(NULL, ",", &save))
        if (add_method(s, m) < 0) return -1;
    return 0;
}

/* A method that cannot be built: the user's mistake when it builds without the user's options
   (exit 2 before any work), else the task's settings do not suit it (its row will say FAILED). */
static int blame_options(const cmp_session *s, bilo_task *t, const char *method)
{
    char message[512], options[CMP_OPTS_LEN];
    snprintf(message, sizeof message, "%s", bilo_last_error());
    cmp_method_options(s, t, method, false, options, sizeof options);
    bilo_estimator *e = bilo_estimator_new(method, bilo_task_problem(t), options);
    bilo_estimator_free(e);
    if (e) {
        cmp_usage_error("%s", message);
        return -1;
    }
    fprintf(stderr, "bilo-compare: %s cannot run with the task's settings: %s\n", method, message);
    return 0;
}

/* Every method is built once up front, so that a bad option stops the run before any work. */
static int check_method_options(const cmp_session *s, bilo_task *t)
{
    for (int m = 0; m < s->n_methods; m++) {
        char options[CMP_OPTS_LEN];
        if (cmp_method_options(s, t, s->methods[m], true, options, sizeof options) < 0) {
            cmp_usage_error("options of %s longer than %d characters", s->methods[m],
                            CMP_OPTS_LEN - 1);
            return -1;
        }
        bilo_estimator *e = bilo_estimator_new(s->methods[m], bilo_task_problem(t), options);
        bilo_estimator_free(e);
        if (!e && blame_options(s, t, s->methods[m]) < 0) return -1;
    }
    return 0;
}

static int setup_session(cmp_session *s, bilo_task *t)
{
    s->n_metrics = bilo_task_n_metrics(t);
    if (s->n_metrics > CMP_MAX_METRICS) s->n_metrics = CMP_MAX_METRICS;
    for (int k = 0; k < s->n_metrics; k++) {
        snprintf(s->metric_store[k], CMP_NAME_LEN, "%s", bilo_task_metric_names(t)[k]);
        s->metric_names[k] = s->metric_store[k];
    }
    s->has_exact = bilo_task_has_exact(t);
    if (resolve_methods(s, t) < 0 || check_method_options(s, t) < 0) return CMP_EXIT_USAGE;
    return 0;
}

static bilo_task *make_task(const cmp_config *c, int si, int *exit_code)
{
    bilo_task_opts o = {.seed = c->seed + (uint64_t)si, .options = c->task_options};
    bilo_task *t = bilo_task_new(c->task, &o);
    if (!t) {
        fprintf(stderr, "bilo-compare: %s\n", bilo_last_error());
        *exit_code = bilo_errcode() == BILO_EINVAL ? CMP_EXIT_USAGE : CMP_EXIT_FAIL;
    }
    return t;
}

static int sweep(cmp_session *s, bilo_task *t, int si, FILE **budget)
{
    char path[CMP_PATH_LEN + 16];
    snprintf(path, sizeof path, "%s/budget.csv", s->cfg->out);
    if (!*budget && !(*budget = fopen(path, "w"))) {
        fprintf(stderr, "bilo-compare: cannot write %s: %s\n", path, strerror(errno));
        return CMP_EXIT_FAIL;
    }
    return cmp_budget_sweep(s, t, si, *budget) < 0 ? CMP_EXIT_FAIL : 0;
}

/* Per seed: the task rebuilt, the budget sweep where exact exists, then every method. */
static int run_seeds(cmp_session *s)
{
    int rc = 0;
    FILE *budget = NULL;
    for (int si = 0; si < s->cfg->seeds && rc == 0; si++) {
        bilo_task *t = make_task(s->cfg, si, &rc);
        if (t && si == 0) rc = setup_session(s, t);
        if (t && rc == 0 && s->has_exact) rc = sweep(s, t, si, &budget);
        for (int m = 0; t && rc == 0 && m < s->n_methods; m++) cmp_run_method(s, t, m, si);
        bilo_task_free(t);
    }
    if (budget) fclose(budget);
    return rc;
}

static int finish(const cmp_session *s)
{
    char footer[2 * CMP_PATH_LEN];
    cmp_plot(s, footer, sizeof footer);
    cmp_print_table(s);
    printf("\nCSV logs: %s/<method>%s.csv%s\n%s\n", s->cfg->out, s->cfg->seeds > 1 ? "-seedK" : "",
           s->has_exact ? ", hypergradient error vs budget: budget.csv" : "", footer);
    int rc = CMP_EXIT_OK;
    for (int m = 0; m < s->n_methods; m++)
        for (int i = 0; i < s->cfg->seeds; i++)
            if (s->results[m][i].status == CMP_FAILED) rc = CMP_EXIT_FAIL;
    return rc;
}

int main(int argc, char **argv)
{
    static cmp_config cfg;
    static cmp_session s;
    int rc = cmp_parse_args(argc, argv, &cfg);
    if (rc >= 0) return rc;
    if (!task_exists(cfg.task)) {
        fprintf(stderr, "bilo-compare: problem %s needs task '%s', which this build lacks\n",
                cfg.problem, cfg.task);
        return CMP_EXIT_FAIL;
    }
    if (make_dirs(cfg.out) < 0) {
        fprintf(stderr, "bilo-compare: cannot create %s: %s\n", cfg.out, strerror(errno));
        return CMP_EXIT_FAIL;
    }
    if (cfg.threads) bilo_set_num_threads(cfg.threads);
    s.cfg = &cfg;
    s.outer_steps = cfg.outer_steps ? cfg.outer_steps : cmp_default_outer_steps(cfg.problem);
    for (int m = 0; m < CMP_MAX_METHODS; m++)
        for (int i = 0; i < CMP_MAX_SEEDS; i++) s.results[m][i].hg_error = NAN;
    rc = run_seeds(&s);
    return rc ? rc : finish(&s);
}
