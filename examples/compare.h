/* bilo-compare: shared declarations of the comparison runner's parts (command line, runs,
   hypergradient-error sweep, table, plots). */
#ifndef BILO_COMPARE_H
#define BILO_COMPARE_H

#include <bilo.h>
#include <bilo_tasks.h>

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#define CMP_MAX_METHODS 32
#define CMP_MAX_METRICS 8
#define CMP_MAX_SEEDS 64
#define CMP_MAX_OPTS 128
#define CMP_OPTS_LEN 512 /* the library's limit on an option string */
#define CMP_NAME_LEN 64
#define CMP_PATH_LEN 1024
#define CMP_OUT_LEN 512 /* --out, leaving room for the file names */

/* Exit codes: usage mistakes (a wrong option or value) 2, failures while running 1. */
enum { CMP_EXIT_OK = 0, CMP_EXIT_FAIL = 1, CMP_EXIT_USAGE = 2 };

/* One "--<method>.<key> value" (or a [method] line of a config file). */
typedef struct {
    char method[CMP_NAME_LEN];
    char key_value[CMP_OPTS_LEN];
} cmp_method_opt;

typedef struct {
    const char *problem;          /* the subcommand */
    char task[CMP_NAME_LEN];      /* the task it maps to */
    char task_options[CMP_OPTS_LEN];
    char methods[CMP_OPTS_LEN];   /* "all" or a comma-separated list */
    cmp_method_opt method_opts[CMP_MAX_OPTS];
    int n_method_opts;
    int64_t outer_steps;          /* 0: the problem's default */
    int inner_steps;              /* 0: each method's own T */
    uint64_t seed;
    int seeds;
    int threads;                  /* 0: the library's default */
    double time_budget;           /* seconds per method and seed, 0: none */
    int64_t eval_every;           /* 0: outer_steps / 50 */
    char out[CMP_OUT_LEN];        /* "": ./compare-out/<problem> */
    bool resume;
    const char *data;             /* meta: sinusoid or fmnist */
} cmp_config;

typedef enum {
    CMP_RAN,      /* all outer steps done in this invocation */
    CMP_SKIPPED,  /* --resume found its .done marker */
    CMP_STOPPED,  /* the time budget ran out first (resumable) */
    CMP_DIVERGED, /* a non-finite loss or hypergradient */
    CMP_FAILED,   /* any other error */
} cmp_status;

/* One method on one seed. */
typedef struct {
    cmp_status status;
    int64_t steps;
    double metrics[CMP_MAX_METRICS];
    bilo_cost cost;   /* totals, across resumes */
    double hg_error;  /* relative hypergradient error at the start (NaN: no exact reference) */
    char error[CMP_PATH_LEN + 256];
} cmp_result;

typedef struct {
    const cmp_config *cfg;
    char methods[CMP_MAX_METHODS][CMP_NAME_LEN];
    int n_methods;
    const char *metric_names[CMP_MAX_METRICS];
    char metric_store[CMP_MAX_METRICS][CMP_NAME_LEN]; /* the names outlive the task */
    int n_metrics;
    bool has_exact;
    int64_t outer_steps;
    cmp_result results[CMP_MAX_METHODS][CMP_MAX_SEEDS];
} cmp_session;

/* compare_cli.c */
int cmp_parse_args(int argc, char **argv, cmp_config *cfg);  /* CMP_EXIT_* or -1 to run */
int64_t cmp_default_outer_steps(const char *problem);
void cmp_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* compare_run.c */
void cmp_file_base(const cmp_session *s, int method, int seed_index, char *base, size_t size);
int cmp_method_options(const cmp_session *s, bilo_task *t, const char *method, bool user,
                       char *out, size_t size);
void cmp_run_method(cmp_session *s, bilo_task *t, int method, int seed_index);
int cmp_write_atomic(const char *path, const char *text);

/* compare_budget.c: the relative error of each method's hypergradient at the task's initial
   point, with its options (into the results) and over budgets (OUT/budget.csv). */
int cmp_budget_sweep(cmp_session *s, bilo_task *t, int seed_index, FILE *csv);

/* compare_table.c */
void cmp_print_table(const cmp_session *s);

/* compare_plot.c: returns a line for the table footer. */
void cmp_plot(const cmp_session *s, char *footer, size_t size);

#endif
