/* bilo-compare's command line: the problem (subcommand), the common options, per-method options
   "--<method>.<key> value" and INI-like config files. Every mistake is one line on stderr. */
#include "compare.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name, *task, *summary;
    int64_t outer_steps;
} problem;

/* The default budgets finish in about a minute each on 2 cores (hyperclean: all methods). */
static const problem problems[] = {
    {"hyperclean", "hyperclean", "data hyper-cleaning on Fashion-MNIST with noisy labels", 300},
    {"l2reg", "l2reg", "per-feature L2 regularization of logistic regression", 200},
    {"hyperrep", "hyperrep", "hyper-representation: ridge head on a shared map", 300},
    {"meta", NULL, "few-shot meta-learning (--data sinusoid|fmnist)", 200},
    {"quadratic", "quadratic", "synthetic quadratic with the exact hypergradient", 200},
    {"coreset", "coreset", "BOME's coreset toy in the plane (optimum f = 0.72)", 500},
};
enum { N_PROBLEMS = sizeof problems / sizeof *problems };

void cmp_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bilo-compare: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static const problem *find_problem(const char *name)
{
    for (int i = 0; i < N_PROBLEMS; i++)
        if (!strcmp(problems[i].name, name)) return &problems[i];
    return NULL;
}

int64_t cmp_default_outer_steps(const char *name)
{
    const problem *p = find_problem(name);
    return p ? p->outer_steps : 100;
}

/* ---- values ------------------------------------------------------------------------- */

static int parse_int(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) {
        cmp_usage_error("%s needs an integer in [%lld, %lld], not '%s'", opt, (long long)lo,
                        (long long)hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_seconds(const char *opt, const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0) || v > 1e9) {
        cmp_usage_error("%s needs a number of seconds >= 0, not '%s'", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

static bool known_method(const char *name)
{
    for (int i = 0; bilo_estimator_method_name(i); i++)
        if (!strcmp(bilo_estimator_method_name(i), name)) return true;
    return false;
}

static int check_methods(const char *list)
{
    if (!strcmp(list, "all")) return 0;
    char buf[CMP_OPTS_LEN];
    snprintf(buf, sizeof buf, "%s", list);
    int n = 0;
    char *save = NULL;
    for (char *m = strtok_r(buf, ",", &save); m; m = strtok_r(NULL, ",", &save), n++)
        if (!known_method(m)) {
            cmp_usage_error("--methods: unknown method '%s' (see --help)", m);
            return -1;
        }
    if (n == 0 || n > CMP_MAX_METHODS) {
        cmp_usage_error("--methods needs 1 to %d names or 'all'", CMP_MAX_METHODS);
        return -1;
    }
    return 0;
}

/* Appends "item" to a comma-separated list within the library's option length. */
static int append_item(const char *opt, char *list, const char *item)
{
    size_t len = strlen(list);
    if (len + strlen(item) + 2 > CMP_OPTS_LEN) {
        cmp_usage_error("%s: options longer than %d characters", opt, CMP_OPTS_LEN - 1);
        return -1;
    }
    snprintf(list + len, CMP_OPTS_LEN - len, "%s%s", len ? "," : "", item);
    return 0;
}

static int check_copy(const char *opt, char *dst, size_t size, const char *value)
{
    if (!*value || strlen(value) >= size) {
        cmp_usage_error("%s needs a value of 1 to %zu characters", opt, size - 1);
        return -1;
    }
    snprintf(dst, size, "%s", value);
    return 0;
}

/* ---- the option table ----------------------------------------------------------------- */

typedef struct {
    const char *name, *arg, *fallback, *help;
    int (*set)(cmp_config *c, const char *opt, const char *value);
} option;

/* The list without blanks, so that "itd, aid-cg" reads as "itd,aid-cg". */
static int set_methods(cmp_config *c, const char *opt, const char *v)
{
    if (check_copy(opt, c->methods, sizeof c->methods, v) < 0) return -1;
    char *to = c->methods;
    for (const char *from = v; *from; from++)
        if (*from != ' ' && *from != '\t') *to++ = *from;
    *to = '\0';
    return check_methods(c->methods);
}
static int set_outer(cmp_config *c, const char *opt, const char *v)
{
    return parse_int(opt, v, 1, INT64_C(1) << 40, &c->outer_steps);
}
static int set_inner(cmp_config *c, const char *opt, const char *v)
{
    int64_t n;
    if (parse_int(opt, v, 1, 1000000, &n) < 0) return -1;
    c->inner_steps = (int)n;
    return 0;
}
static int set_seed(cmp_config *c, const char *opt, const char *v)
{
    int64_t n;
    if (parse_int(opt, v, 0, INT64_MAX, &n) < 0) return -1;
    c->seed = (uint64_t)n;
    return 0;
}
static int set_seeds(cmp_config *c, const char *opt, const char *v)
{
    int64_t n;
    if (parse_int(opt, v, 1, CMP_MAX_SEEDS, &n) < 0) return -1;
    c->seeds = (int)n;
    return 0;
}
static int set_threads(cmp_config *c, const char *opt, const char *v)
{
    int64_t n;
    if (parse_int(opt, v, 1, 1024, &n) < 0) return -1;
    c->threads = (int)n;
    return 0;
}
static int set_budget(cmp_config *c, const char *opt, const char *v)
{
    return parse_seconds(opt, v, &c->time_budget);
}
static int set_eval(cmp_config *c, const char *opt, const char *v)
{
    return parse_int(opt, v, 1, INT64_C(1) << 40, &c->eval_every);
}
static int set_out(cmp_config *c, const char *opt, const char *v)
{
    return check_copy(opt, c->out, sizeof c->out, v);
}
static int set_resume(cmp_config *c, const char *opt, const char *v)
{
    c->resume = true;
    return 0;
}
static int set_task_opt(cmp_config *c, const char *opt, const char *v)
{
    if (!strchr(v, '=') || *v == '=' || strchr(v, ',')) {
        cmp_usage_error("%s needs one key=value, not '%s'", opt, v);
        return -1;
    }
    return append_item(opt, c->task_options, v);
}
static int set_data(cmp_config *c, const char *opt, const char *v)
{
    if (strcmp(v, "sinusoid") && strcmp(v, "fmnist")) {
        cmp_usage_error("%s needs sinusoid or fmnist, not '%s'", opt, v);
        return -1;
    }
    c->data = strcmp(v, "sinusoid") ? "fmnist" : "sinusoid";
    return 0;
}
static int set_config(cmp_config *c, const char *opt, const char *v);

static const option options[] = {
    {"methods", "LIST|all", "all", "methods to compare (all: every one the problem can run)",
     set_methods},
    {"outer-steps", "N", "per problem (see above)", "outer steps per method", set_outer},
    {"inner-steps", "N", "each method's own", "inner steps T for every method", set_inner},
    {"seed", "N", "1", "the task's seed (data, corruption, start), first of --seeds",
     set_seed},
    {"seeds", "N", "1", "repeat over seeds seed..seed+N-1, the table shows mean ± std",
     set_seeds},
    {"threads", "N", "OpenMP's maximum", "kernel threads (bilo_set_num_threads)", set_threads},
    {"time-budget", "SECONDS", "0 (none)",
     "per method and seed: stop once exceeded (--resume continues)", set_budget},
    {"eval-every", "N", "outer-steps/50", "metrics and a CSV row every N outer steps", set_eval},
    {"out", "DIR", "./compare-out/<problem>", "CSV logs, checkpoints, markers and plots",
     set_out},
    {"resume", NULL, "off",
     "skip finished methods, continue the others from checkpoints",
     set_resume},
    {"task-opt", "KEY=VALUE", "the task's defaults",
     "a task option (repeatable; keys: bilo-compare PROBLEM --help)", set_task_opt},
    {"data", "sinusoid|fmnist", "sinusoid", "meta: the episodes' data set", set_data},
    {"config", "FILE", "none",
     "INI file: [run] options, [task] task options, [METHOD] key = value", set_config},
};
enum { N_OPTIONS = sizeof options / sizeof *options };

static const option *find_option(const char *name)
{
    for (int i = 0; i < N_OPTIONS; i++)
        if (!strcmp(options[i].name, name)) return &options[i];
    return NULL;
}

/* "--esj.Q 10" → method esj gets "Q=10" after the task's options for it. */
static int add_method_opt(cmp_config *c, const char *method, const char *key, const char *value)
{
    if (!known_method(method)) {
        cmp_usage_error("--%s.%s: unknown method '%s' (see --help)", method, key, method);
        return -1;
    }
    if (!*key || !*value || strchr(value, ',') || strchr(key, '=') ||
        c->n_method_opts == CMP_MAX_OPTS) {
        cmp_usage_error("--%s.%s needs a key and one value without commas", method, key);
        return -1;
    }
    cmp_method_opt *o = &c->method_opts[c->n_method_opts++];
    snprintf(o->method, sizeof o->method, "%s", method);
    if ((size_t)snprintf(o->key_value, sizeof o->key_value, "%s=%s", key, value) >=
        sizeof o->key_value) {
        cmp_usage_error("--%s.%s: value too long", method, key);
        return -1;
    }
    return 0;
}

/* ---- config files --------------------------------------------------------------------- */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && strchr(" \t\r\n", s[n - 1])) s[--n] = '\0';
    return s;
}

static int config_line(cmp_config *c, const char *section, char *line, const char *where)
{
    char *eq = strchr(line, '=');
    if (!eq) {
        cmp_usage_error("%s: expected 'key = value'", where);
        return -1;
    }
    *eq = '\0';
    char *key = trim(line), *value = trim(eq + 1);
    if (!strcmp(section, "task")) {
        char kv[CMP_OPTS_LEN];
        snprintf(kv, sizeof kv, "%s=%s", key, value);
        return set_task_opt(c, where, kv);
    }
    if (strcmp(section, "run")) return add_method_opt(c, section, key, value);
    const option *o = find_option(key);
    if (!o || o->set == set_config) {
        cmp_usage_error("%s: unknown [run] key '%s'", where, key);
        return -1;
    }
    if (o->arg) return o->set(c, where, value);
    if (!strcmp(value, "1") || !strcmp(value, "true")) return o->set(c, where, value);
    if (!strcmp(value, "0") || !strcmp(value, "false")) return 0;
    cmp_usage_error("%s: %s takes 0, 1, true or false, not '%s'", where, key, value);
    return -1;
}

static int read_config(cmp_config *c, FILE *f, const char *path)
{
    char line[1024], section[CMP_NAME_LEN] = "", where[CMP_PATH_LEN + 32];
    for (int n = 1; fgets(line, sizeof line, f); n++) {
        snprintf(where, sizeof where, "%s:%d", path, n);
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';') continue;
        size_t len = strlen(s);
        if (*s == '[' && s[len - 1] == ']' && len - 2 < sizeof section) {
            s[len - 1] = '\0';
            snprintf(section, sizeof section, "%s", trim(s + 1));
            continue;
        }
        if (!*section) {
            cmp_usage_error("%s: a line before any [section]", where);
            return -1;
        }
        if (config_line(c, section, s, where) < 0) return -1;
    }
    return 0;
}

static int set_config(cmp_config *c, const char *opt, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        cmp_usage_error("%s: cannot read '%s': %s", opt, path, strerror(errno));
        return -1;
    }
    int rc = read_config(c, f, path);
    fclose(f);
    return rc;
}

/* ---- help ----------------------------------------------------------------------------- */

static void print_help(const problem *only)
{
    printf("usage: bilo-compare PROBLEM [options]\n\n"
           "Runs every chosen hypergradient method on one bilevel problem from the same start\n"
           "and prints a table (upper loss, task metrics, time, gradient evaluations, HVPs,\n"
           "peak memory), CSV logs per method and, with gnuplot, plots.\n\nproblems:\n");
    for (int i = 0; i < N_PROBLEMS; i++)
        printf("  %-11s %s [%lld steps]\n", problems[i].name,
               problems[i].summary, (long long)problems[i].outer_steps);
    printf("\noptions (default in brackets):\n");
    for (int i = 0; i < N_OPTIONS; i++) {
        char head[64];
        snprintf(head, sizeof head, "--%s%s%s", options[i].name, options[i].arg ? " " : "",
                 options[i].arg ? options[i].arg : "");
        printf("  %-24s %s\n  %-24s default: %s\n", head, options[i].help, "",
               options[i].fallback);
    }
    printf("  %-24s %s\n  %-24s %s\n  %-24s %s\n\nmethods:", "--METHOD.KEY VALUE",
           "a method option after the task's own for it", "", "(e.g. --esj.Q 10 --esj.mu 0.01)",
           "--help", "this text; after a PROBLEM also the task's options");
    for (int i = 0; bilo_estimator_method_name(i); i++)
        printf(" %s", bilo_estimator_method_name(i));
    printf("\n");
    bool meta = only && !only->task;
    const char *const tasks[] = {only ? only->task : NULL, meta ? "meta-sinusoid" : NULL,
                                 meta ? "meta-fmnist" : NULL};
    for (int i = 0; i < 3; i++) {
        const char *help = tasks[i] ? bilo_task_help(tasks[i]) : NULL;
        if (tasks[i]) printf("\ntask %s: %s\n", tasks[i], help ? help : "(not in this build)");
    }
    bilo_clear_error();
}

/* ---- arguments -------------------------------------------------------------------------- */

static int method_arg(cmp_config *c, const char *name, const char *value)
{
    char method[CMP_NAME_LEN];
    const char *dot = strchr(name, '.');
    if ((size_t)(dot - name) >= sizeof method) {
        cmp_usage_error("unknown option '--%s' (see --help)", name);
        return -1;
    }
    snprintf(method, sizeof method, "%.*s", (int)(dot - name), name);
    return add_method_opt(c, method, dot + 1, value);
}

/* One "--name[=value]" at argv[*i]; consumes its value. */
static int one_option(cmp_config *c, int argc, char **argv, int *i)
{
    char name[128];
    const char *arg = argv[*i], *eq = strchr(arg, '='), *value = NULL;
    if (strncmp(arg, "--", 2) || strlen(arg) >= sizeof name) {
        cmp_usage_error("unexpected argument '%s' (see --help)", arg);
        return -1;
    }
    snprintf(name, sizeof name, "%.*s", (int)(eq ? eq - arg - 2 : (long)strlen(arg) - 2), arg + 2);
    const option *o = find_option(name);
    if (!o && !strchr(name, '.')) {
        cmp_usage_error("unknown option '--%s' (see --help)", name);
        return -1;
    }
    bool takes_value = !o || o->arg;
    if (takes_value) value = eq ? eq + 1 : *i + 1 < argc ? argv[++*i] : NULL;
    if (takes_value && !value) {
        cmp_usage_error("--%s needs a value", name);
        return -1;
    }
    if (!takes_value && eq) {
        cmp_usage_error("--%s takes no value", name);
        return -1;
    }
    return o ? o->set(c, arg, value) : method_arg(c, name, value);
}

static int finish(cmp_config *c, const problem *p)
{
    if (!p->task && !c->data) c->data = "sinusoid";
    if (p->task) {
        if (c->data) {
            cmp_usage_error("--data is an option of 'meta' only");
            return -1;
        }
        snprintf(c->task, sizeof c->task, "%s", p->task);
    } else {
        snprintf(c->task, sizeof c->task, "meta-%s", c->data);
    }
    if (!*c->out) snprintf(c->out, sizeof c->out, "compare-out/%s", p->name);
    return 0;
}

int cmp_parse_args(int argc, char **argv, cmp_config *c)
{
    *c = (cmp_config){.seed = 1, .seeds = 1};
    snprintf(c->methods, sizeof c->methods, "all");
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        if (argc >= 2) return print_help(NULL), CMP_EXIT_OK;
        cmp_usage_error("missing PROBLEM (hyperclean, l2reg, hyperrep, meta, quadratic, "
                        "coreset); see --help");
        return CMP_EXIT_USAGE;
    }
    const problem *p = find_problem(argv[1]);
    if (!p) {
        cmp_usage_error("unknown problem '%s' (see --help)", argv[1]);
        return CMP_EXIT_USAGE;
    }
    c->problem = p->name;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return print_help(p), CMP_EXIT_OK;
        if (one_option(c, argc, argv, &i) < 0) return CMP_EXIT_USAGE;
    }
    return finish(c, p) < 0 ? CMP_EXIT_USAGE : -1;
}
