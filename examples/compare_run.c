/* bilo-compare: one method on one seed — the driver run with its CSV log and checkpoints, and
   the small .done marker that lets --resume skip the method next time.

   Files per run, base = OUT/<method>[-seed<K>]: base.csv (the driver's log), base.ckpt (its
   checkpoints), base.key (the options the checkpoint belongs to) and base.done (the final
   numbers, written last and atomically). */
#include "compare.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cmp_file_base(const cmp_session *s, int method, int seed_index, char *base, size_t size)
{
    const cmp_config *c = s->cfg;
    if (c->seeds > 1)
        snprintf(base, size, "%s/%s-seed%llu", c->out, s->methods[method],
                 (unsigned long long)(c->seed + (uint64_t)seed_index));
    else
        snprintf(base, size, "%s/%s", c->out, s->methods[method]);
}

static int append(char *out, size_t size, const char *item)
{
    size_t len = strlen(out);
    if (!*item) return 0;
    int n = snprintf(out + len, size - len, "%s%s", len ? "," : "", item);
    return n < 0 || (size_t)n >= size - len ? -1 : 0;
}

/* The task's options for the method, then (with user) T from --inner-steps and the user's own. */
int cmp_method_options(const cmp_session *s, bilo_task *t, const char *method, bool user,
                       char *out, size_t size)
{
    const cmp_config *c = s->cfg;
    *out = '\0';
    int rc = append(out, size, bilo_task_method_options(t, method));
    char T[32] = "";
    if (c->inner_steps > 0 && user) snprintf(T, sizeof T, "T=%d", c->inner_steps);
    if (rc == 0) rc = append(out, size, T);
    for (int i = 0; i < c->n_method_opts && rc == 0 && user; i++)
        if (!strcmp(c->method_opts[i].method, method))
            rc = append(out, size, c->method_opts[i].key_value);
    return rc;
}

int cmp_write_atomic(const char *path, const char *text)
{
    char tmp[CMP_PATH_LEN + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    bool ok = fputs(text, f) >= 0;
    ok = fclose(f) == 0 && ok;
    if (ok && rename(tmp, path) == 0) return 0;
    remove(tmp);
    return -1;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (size_t n; buf && (n = fread(buf + len, 1, cap - 1 - len, f)) > 0;) {
        len += n;
        if (len + 1 == cap) {
            char *grown = realloc(buf, cap *= 2);
            if (!grown) free(buf);
            buf = grown;
        }
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

/* ---- the .done marker ---------------------------------------------------------------- */

static const char *const status_names[] = {"ran", "skipped", "stopped", "diverged", "failed"};

static void write_marker(const cmp_session *s, const char *path, const char *key,
                         const cmp_result *r)
{
    char text[4096];
    const bilo_cost *c = &r->cost;
    int n = snprintf(text, sizeof text,
                     "key %s\nstatus %s\nsteps %lld\nseconds %.17g\nf_grads %lld\ng_grads %lld\n"
                     "hvps %lld\ninner_iters %lld\npeak_bytes %zu\n",
                     key, status_names[r->status], (long long)r->steps, c->seconds,
                     (long long)c->f_grads, (long long)c->g_grads, (long long)c->hvps,
                     (long long)c->inner_iters, c->peak_bytes);
    for (int k = 0; k < s->n_metrics && n > 0 && (size_t)n < sizeof text; k++)
        n += snprintf(text + n, sizeof text - (size_t)n, "metric %s %.17g\n",
                      s->metric_names[k], r->metrics[k]);
    if (cmp_write_atomic(path, text) < 0)
        fprintf(stderr, "bilo-compare: cannot write %s: %s\n", path, strerror(errno));
}

static void marker_field(const cmp_session *s, const char *name, const char *value,
                         cmp_result *r)
{
    bilo_cost *c = &r->cost;
    if (!strcmp(name, "steps")) r->steps = strtoll(value, NULL, 10);
    if (!strcmp(name, "seconds")) c->seconds = strtod(value, NULL);
    if (!strcmp(name, "f_grads")) c->f_grads = strtoll(value, NULL, 10);
    if (!strcmp(name, "g_grads")) c->g_grads = strtoll(value, NULL, 10);
    if (!strcmp(name, "hvps")) c->hvps = strtoll(value, NULL, 10);
    if (!strcmp(name, "inner_iters")) c->inner_iters = strtoll(value, NULL, 10);
    if (!strcmp(name, "peak_bytes")) c->peak_bytes = (size_t)strtoull(value, NULL, 10);
    if (strcmp(name, "metric")) return;
    const char *space = strchr(value, ' ');
    for (int k = 0; space && k < s->n_metrics; k++)
        if (strlen(s->metric_names[k]) == (size_t)(space - value) &&
            !strncmp(s->metric_names[k], value, (size_t)(space - value)))
            r->metrics[k] = strtod(space + 1, NULL);
}

/* Fills r from a marker written with the same key; false when there is none such. */
static bool read_marker(const cmp_session *s, const char *path, const char *key, cmp_result *r)
{
    char *text = read_text(path);
    size_t key_len = strlen(key);
    bool same = text && !strncmp(text, "key ", 4) && !strncmp(text + 4, key, key_len) &&
                text[4 + key_len] == '\n';
    char *save = NULL;
    for (char *line = same ? strtok_r(text, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        char *space = strchr(line, ' ');
        if (!space) continue;
        *space = '\0';
        marker_field(s, line, space + 1, r);
    }
    free(text);
    return same;
}

/* ---- the CSV after a resume ------------------------------------------------------------ */

/* Splits text into lines, dropping each earlier row whose step a later row repeats (a step
   going back starts the resumed run's rows); rows[0] is the header. Returns the rows kept. */
static size_t keep_latest_rows(char *text, char **rows)
{
    size_t n = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        long long step = strtoll(line, NULL, 10);
        while (n > 1 && strtoll(rows[n - 1], NULL, 10) >= step) n--;
        rows[n++] = line;
    }
    return n;
}

/* A run killed after its last checkpoint logged rows that the resumed run logs again: keep
   the resumed run's rows so that every step appears once, in order. */
static void drop_repeated_rows(const char *path)
{
    char *text = read_text(path);
    char **rows = text ? malloc(sizeof *rows * (strlen(text) / 2 + 1)) : NULL;
    size_t n = rows ? keep_latest_rows(text, rows) : 0, len = 0;
    for (size_t i = 0; i < n; i++) len += strlen(rows[i]) + 1;
    char *out = rows ? malloc(len + 1) : NULL;
    for (size_t i = 0, at = 0; out && i < n; i++) at += (size_t)sprintf(out + at, "%s\n", rows[i]);
    if (out && cmp_write_atomic(path, n ? out : "") < 0)
        fprintf(stderr, "bilo-compare: cannot rewrite %s\n", path);
    free(out);
    free(rows);
    free(text);
}

/* ---- the run ----------------------------------------------------------------------------- */

typedef struct {
    bilo_task *task;
    double *last; /* the latest evaluation, for the table */
    int n;
    bool seen;
} metric_capture;

static int capture_metrics(int64_t step, double *values, void *user)
{
    metric_capture *c = user;
    int rc = bilo_task_metric_fn(step, values, c->task);
    if (rc == 0) memcpy(c->last, values, sizeof *values * (size_t)c->n);
    if (rc == 0) c->seen = true;
    return rc;
}

typedef struct {
    char base[CMP_PATH_LEN], csv[CMP_PATH_LEN + 8], ckpt[CMP_PATH_LEN + 8];
    char keyfile[CMP_PATH_LEN + 8], done[CMP_PATH_LEN + 8];
    char run_key[2 * CMP_OPTS_LEN + 256], done_key[2 * CMP_OPTS_LEN + 300];
    char options[CMP_OPTS_LEN];
    const char *label;
} run_files;

static void name_files(const cmp_session *s, bilo_task *t, int m, int si, run_files *f)
{
    const cmp_config *c = s->cfg;
    cmp_file_base(s, m, si, f->base, sizeof f->base);
    snprintf(f->csv, sizeof f->csv, "%s.csv", f->base);
    snprintf(f->ckpt, sizeof f->ckpt, "%s.ckpt", f->base);
    snprintf(f->keyfile, sizeof f->keyfile, "%s.key", f->base);
    snprintf(f->done, sizeof f->done, "%s.done", f->base);
    f->label = strrchr(f->base, '/') + 1;
    cmp_method_options(s, t, s->methods[m], true, f->options, sizeof f->options);
    snprintf(f->run_key, sizeof f->run_key, "task=%s;task_options=%s;seed=%llu;method=%s;"
             "options=%s", c->task, c->task_options,
             (unsigned long long)(c->seed + (uint64_t)si), s->methods[m], f->options);
    snprintf(f->done_key, sizeof f->done_key, "%s;outer_steps=%lld", f->run_key,
             (long long)s->outer_steps);
}

/* Without --resume every earlier file goes; with it, a checkpoint must carry our options. */
static int prepare_files(const cmp_session *s, const run_files *f, cmp_result *r)
{
    if (!s->cfg->resume) {
        remove(f->done);
        remove(f->ckpt);
    } else if (access(f->ckpt, F_OK) == 0) {
        char *key = read_text(f->keyfile);
        bool same = key && !strcmp(key, f->run_key);
        free(key);
        if (!same) {
            snprintf(r->error, sizeof r->error, "%s was written with other options; run "
                     "without --resume or with another --out", f->ckpt);
            return -1;
        }
    }
    if (cmp_write_atomic(f->keyfile, f->run_key) == 0) return 0;
    snprintf(r->error, sizeof r->error, "cannot write %s: %s", f->keyfile, strerror(errno));
    return -1;
}

static int64_t checkpoint_every(int64_t steps) { return steps >= 20 ? (steps + 19) / 20 : 1; }

static int drive(const cmp_session *s, bilo_task *t, const run_files *f, metric_capture *mc,
                 bilo_estimator *e)
{
    const cmp_config *c = s->cfg;
    const bilo_problem *p = bilo_task_problem(t);
    bilo_optim_opts oo = bilo_task_outer_opts(t);
    bilo_optim *outer = bilo_optim_new(&oo, p->x, p->n_x);
    if (!outer) return bilo_errcode();
    int64_t eval = c->eval_every ? c->eval_every : (s->outer_steps >= 50 ? s->outer_steps / 50 : 1);
    bilo_driver_opts o = {.steps = s->outer_steps, .eval_every = eval,
                          .metric = capture_metrics, .metric_names = s->metric_names,
                          .n_metrics = s->n_metrics, .user = mc, .csv_path = f->csv,
                          .progress = true, .checkpoint_path = f->ckpt,
                          .checkpoint_every = checkpoint_every(s->outer_steps),
                          .resume = c->resume, .time_budget = c->time_budget,
                          .label = f->label};
    int rc = bilo_driver_run(e, outer, &o);
    bilo_optim_free(outer);
    return rc;
}

static void finish_result(const cmp_session *s, bilo_task *t, bilo_estimator *e, int rc,
                          metric_capture *mc, cmp_result *r)
{
    bilo_estimator_report(e, NULL, &r->cost);
    r->steps = r->cost.steps;
    if (rc == 0 && !mc->seen && bilo_task_metrics(t, r->metrics) < 0) rc = bilo_errcode();
    if (rc == BILO_ENUMERIC) r->status = CMP_DIVERGED;
    else if (rc < 0) r->status = CMP_FAILED;
    else r->status = r->steps < s->outer_steps ? CMP_STOPPED : CMP_RAN;
    if (rc < 0) snprintf(r->error, sizeof r->error, "%s", bilo_last_error());
}

void cmp_run_method(cmp_session *s, bilo_task *t, int m, int si)
{
    cmp_result *r = &s->results[m][si];
    *r = (cmp_result){.hg_error = r->hg_error};
    for (int k = 0; k < CMP_MAX_METRICS; k++) r->metrics[k] = NAN;
    run_files f;
    name_files(s, t, m, si, &f);
    if (s->cfg->resume && read_marker(s, f.done, f.done_key, r)) {
        r->status = CMP_SKIPPED;
        fprintf(stderr, "[%s] skipped (done)\n", f.label);
        return;
    }
    r->status = CMP_FAILED;
    if (prepare_files(s, &f, r) < 0 || bilo_task_reset(t) < 0) {
        if (!*r->error) snprintf(r->error, sizeof r->error, "%s", bilo_last_error());
        return;
    }
    bilo_estimator *e = bilo_estimator_new(s->methods[m], bilo_task_problem(t), f.options);
    metric_capture mc = {.task = t, .last = r->metrics, .n = s->n_metrics};
    int rc = e ? drive(s, t, &f, &mc, e) : bilo_errcode();
    if (e) finish_result(s, t, e, rc, &mc, r);
    else snprintf(r->error, sizeof r->error, "%s", bilo_last_error());
    bilo_estimator_free(e);
    if (s->cfg->resume) drop_repeated_rows(f.csv);
    if (r->status == CMP_RAN || r->status == CMP_DIVERGED) write_marker(s, f.done, f.done_key, r);
}
