/* The outer driver: N outer steps with periodic metrics, a CSV log, a progress line, an
   optional time budget and atomic checkpoints that a later run resumes bit for bit.

   A checkpoint is a bilo_save_params file (CRC-checked, written atomically) holding, in order:
   a meta vector (int64 fields stored bit for bit in an f64 tensor, a dtype the format has),
   x, y, the outer optimizer's state, the inner optimizer's state and
   the warm-start v (zeros where the estimator has none yet; meta says which). The meta vector
   ends with both levels' batcher positions. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bilevel_impl.h"
#include "tensor_impl.h"

#define CKPT_MAGIC INT64_C(0x42494C4F44525632) /* "BILODRV2" */

enum { M_MAGIC, M_METHOD, M_NX, M_NY, M_S_OUTER, M_S_INNER, M_STEP, M_OUTER_STEPS, M_INNER_STEPS,
       M_COST, M_V = M_COST + 7 };
/* Per level, after the v flags: a bilo_batcher_state (present = 0 without a batcher). */
enum { B_PRESENT, B_EPOCH, B_STEP, B_IN_EPOCH, B_SEED, B_STREAM, B_COUNTER, B_FIELDS };

static int meta_len(int ny) { return M_V + ny + 2 * B_FIELDS; }

static bilo_batcher *level_data(const bilo_estimator *e, int upper)
{
    return upper ? e->prob.upper_data : e->prob.lower_data;
}

typedef struct {
    bilo_estimator *e;
    bilo_optim *outer;
    const bilo_driver_opts *o;
    int s_outer, s_inner; /* state tensors per parameter */
    int n;                /* tensors in a checkpoint */
    FILE *csv;
    double t0;
    int64_t first_step;   /* the step this run started after */
    double shown;         /* first metric at the last evaluation (NaN before one), for progress */
} driver;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* FNV-1a of the estimator's name, so one method's checkpoint is not taken for another's. */
static int64_t method_id(const bilo_estimator *e)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (const char *c = e->name; *c; c++)
        h = (h ^ (unsigned char)*c) * UINT64_C(1099511628211);
    return (int64_t)(h >> 1);
}

static int states_per_param(const bilo_optim *opt)
{
    int k = 0;
    while (bilo_optim_state(opt, 0, k)) k++;
    return k;
}

/* The estimator's and optimizers' tensors in checkpoint order (after the meta vector); v
   entries the estimator lacks are NULL. */
static void live_tensors(const driver *d, bilo_tensor **ts)
{
    const bilo_estimator *e = d->e;
    int nx = e->prob.n_x, ny = e->prob.n_y, at = 0;
    for (int i = 0; i < nx; i++) ts[at++] = e->x[i];
    for (int i = 0; i < ny; i++) ts[at++] = e->y[i];
    for (int i = 0; i < nx; i++)
        for (int k = 0; k < d->s_outer; k++) ts[at++] = bilo_optim_state(d->outer, i, k);
    for (int i = 0; i < ny; i++)
        for (int k = 0; k < d->s_inner; k++) ts[at++] = bilo_optim_state(e->inner_opt, i, k);
    for (int i = 0; i < e->n_state; i++) ts[at++] = e->state[i];
    for (int i = 0; i < ny; i++) ts[at++] = e->v[i];
}

static void cost_to_meta(const bilo_cost *c, int64_t *m)
{
    int64_t sec;
    memcpy(&sec, &c->seconds, sizeof sec);
    int64_t vals[7] = {c->f_grads, c->g_grads, c->hvps, c->inner_iters, c->steps, sec,
                       (int64_t)c->peak_bytes};
    memcpy(m, vals, sizeof vals);
}

static void meta_to_cost(const int64_t *m, bilo_cost *c)
{
    *c = (bilo_cost){.f_grads = m[0], .g_grads = m[1], .hvps = m[2], .inner_iters = m[3],
                     .steps = m[4], .peak_bytes = (size_t)m[6]};
    memcpy(&c->seconds, &m[5], sizeof c->seconds);
}

static void batcher_to_meta(const bilo_batcher *b, int64_t *m)
{
    bilo_batcher_state s = {0};
    if (b) bilo_batcher_get_state(b, &s);
    int64_t vals[B_FIELDS] = {b != NULL, s.epoch, s.step, s.in_epoch, (int64_t)s.rng.seed,
                              (int64_t)s.rng.stream, (int64_t)s.rng.counter};
    memcpy(m, vals, sizeof vals);
}

static bilo_batcher_state meta_to_batcher(const int64_t *m)
{
    return (bilo_batcher_state){.epoch = m[B_EPOCH], .step = m[B_STEP],
                                .in_epoch = m[B_IN_EPOCH] != 0,
                                .rng = {.seed = (uint64_t)m[B_SEED],
                                        .stream = (uint64_t)m[B_STREAM],
                                        .counter = (uint64_t)m[B_COUNTER]}};
}

static void fill_meta(const driver *d, int64_t step, int64_t *m)
{
    const bilo_estimator *e = d->e;
    m[M_MAGIC] = CKPT_MAGIC;
    m[M_METHOD] = method_id(e);
    m[M_NX] = e->prob.n_x;
    m[M_NY] = e->prob.n_y;
    m[M_S_OUTER] = d->s_outer;
    m[M_S_INNER] = d->s_inner;
    m[M_STEP] = step;
    m[M_OUTER_STEPS] = bilo_optim_steps_done(d->outer);
    m[M_INNER_STEPS] = bilo_optim_steps_done(e->inner_opt);
    cost_to_meta(&e->total, m + M_COST);
    for (int i = 0; i < e->prob.n_y; i++) m[M_V + i] = e->v[i] != NULL;
    for (int upper = 0; upper < 2; upper++)
        batcher_to_meta(level_data(e, upper), m + M_V + e->prob.n_y + upper * B_FIELDS);
}

static int save_checkpoint(driver *d, int64_t step)
{
    bilo_estimator *e = d->e;
    int ny = e->prob.n_y;
    bilo_tensor *ts[d->n];
    int64_t meta[meta_len(ny)];
    fill_meta(d, step, meta);
    bilo_scope_begin();
    ts[0] = bilo_from_data(BILO_F64, BILO_SHAPE(meta_len(ny)), meta);
    live_tensors(d, ts + 1);
    for (int i = 0; i < ny; i++) {
        bilo_tensor **v = &ts[d->n - ny + i];
        if (!*v) *v = bilo_zeros(e->y[i]->dtype, e->y[i]->ndim, e->y[i]->shape);
    }
    int rc = bilo_save_params(d->o->checkpoint_path, ts, d->n);
    bilo_scope_end();
    return rc;
}

static int check_meta(const driver *d, const int64_t *m)
{
    const char *path = d->o->checkpoint_path;
    const int64_t *batchers = m + M_V + d->e->prob.n_y;
    if (m[M_MAGIC] != CKPT_MAGIC || m[M_METHOD] != method_id(d->e) ||
        m[M_NX] != d->e->prob.n_x || m[M_NY] != d->e->prob.n_y ||
        m[M_S_OUTER] != d->s_outer || m[M_S_INNER] != d->s_inner ||
        batchers[B_PRESENT] != (level_data(d->e, 0) != NULL) ||
        batchers[B_FIELDS + B_PRESENT] != (level_data(d->e, 1) != NULL))
        return bilo__fail_code(BILO_EFORMAT, "bilo_driver_run: %s is not a checkpoint of this "
                               "method, problem and optimizers", path);
    if (m[M_STEP] < 0 || m[M_STEP] > d->o->steps ||
        m[M_OUTER_STEPS] < bilo_optim_steps_done(d->outer) ||
        m[M_INNER_STEPS] < bilo_optim_steps_done(d->e->inner_opt))
        return bilo__fail_code(BILO_EFORMAT, "bilo_driver_run: checkpoint %s at step %lld does "
                               "not fit a run of %lld steps from this state", path,
                               (long long)m[M_STEP], (long long)d->o->steps);
    return 0;
}

/* Advances an optimizer's step count (Adam's bias correction) without touching anything:
   a step with no gradients only counts. */
static int advance_steps(bilo_optim *opt, int n, int64_t target)
{
    bilo_tensor *none[n];
    for (int i = 0; i < n; i++) none[i] = NULL;
    while (bilo_optim_steps_done(opt) < target) {
        int rc = bilo_optim_step(opt, none);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Both levels' batchers to the checkpoint's positions, or neither when one is rejected. */
static int restore_batchers(bilo_estimator *e, const int64_t *m)
{
    bilo_batcher_state before[2];
    for (int upper = 0; upper < 2; upper++) {
        bilo_batcher *b = level_data(e, upper);
        if (!b) continue;
        bilo_batcher_get_state(b, &before[upper]);
        bilo_batcher_state s = meta_to_batcher(m + upper * B_FIELDS);
        int rc = bilo_batcher_set_state(b, &s);
        bilo_batcher *lower = level_data(e, 0);
        if (rc < 0 && upper == 1 && lower) bilo_batcher_set_state(lower, &before[0]);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Moves a validated checkpoint (file[1..n)) into the live tensors. */
static int install(driver *d, bilo_tensor *const *file, const int64_t *m)
{
    bilo_estimator *e = d->e;
    int ny = e->prob.n_y, nv = d->n - 1 - ny;
    bilo_tensor *live[d->n - 1];
    live_tensors(d, live);
    int rc = restore_batchers(e, m + M_V + ny);
    for (int i = 0; i < nv && rc == 0; i++) rc = bilo_copy_(live[i], file[i]);
    for (int i = 0; i < ny && rc == 0; i++) {
        bilo_release(e->v[i]);
        e->v[i] = m[M_V + i] ? bilo_keep(bilo_clone(file[nv + i])) : NULL;
        if (m[M_V + i] && !e->v[i]) rc = bilo_errcode();
    }
    if (rc == 0) rc = advance_steps(d->outer, e->prob.n_x, m[M_OUTER_STEPS]);
    if (rc == 0) rc = advance_steps(e->inner_opt, ny, m[M_INNER_STEPS]);
    if (rc == 0) meta_to_cost(m + M_COST, &e->total);
    return rc;
}

/* Loads into scratch tensors first so that a bad file changes nothing. Returns the step. */
static int64_t load_checkpoint(driver *d)
{
    int ny = d->e->prob.n_y;
    bilo_tensor *live[d->n - 1], *file[d->n];
    live_tensors(d, live);
    bilo_scope_begin();
    bilo_no_grad_begin();
    file[0] = bilo_empty(BILO_F64, BILO_SHAPE(meta_len(ny)));
    for (int i = 0; i < d->n - 1; i++) {
        bilo_tensor *like = live[i] ? live[i] : d->e->y[i - (d->n - 1 - ny)];
        file[i + 1] = bilo_empty(like->dtype, like->ndim, like->shape);
    }
    int64_t m[meta_len(ny)];
    int64_t rc = bilo_load_params(d->o->checkpoint_path, file, d->n);
    if (rc == 0) memcpy(m, bilo__ptr(file[0]), sizeof m);
    if (rc == 0) rc = check_meta(d, m);
    if (rc == 0) rc = install(d, file + 1, m);
    if (rc == 0) rc = m[M_STEP];
    bilo_no_grad_end();
    bilo_scope_end();
    return rc;
}

/* ---- log and progress ----------------------------------------------------------------- */

static const char *const cost_names[] = {"f_grads", "g_grads", "hvps", "inner_iters", "steps",
                                         "seconds", "peak_bytes"};

static void write_cost(FILE *f, const bilo_cost *c)
{
    fprintf(f, ",%lld,%lld,%lld,%lld,%lld,%.9g,%zu", (long long)c->f_grads,
            (long long)c->g_grads, (long long)c->hvps, (long long)c->inner_iters,
            (long long)c->steps, c->seconds, c->peak_bytes);
}

static int open_csv(driver *d, bool append)
{
    const bilo_driver_opts *o = d->o;
    if (!o->csv_path) return 0;
    d->csv = fopen(o->csv_path, append ? "a" : "w");
    if (!d->csv)
        return bilo__fail_code(BILO_EIO, "bilo_driver_run: cannot open %s for writing",
                               o->csv_path);
    if (ftell(d->csv) > 0) return 0; /* resuming an existing log: no second header */
    fputs("step", d->csv);
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < 7; k++)
            fprintf(d->csv, ",%s_%s", pass ? "total" : "last", cost_names[k]);
    fputs(",elapsed", d->csv);
    for (int k = 0; k < o->n_metrics && o->metric; k++) fprintf(d->csv, ",%s", o->metric_names[k]);
    fputc('\n', d->csv);
    return fflush(d->csv) == 0 ? 0
                               : bilo__fail_code(BILO_EIO, "bilo_driver_run: cannot write %s",
                                                 o->csv_path);
}

static int evaluate(driver *d, int64_t step)
{
    const bilo_driver_opts *o = d->o;
    double values[o->n_metrics > 0 ? o->n_metrics : 1];
    if (o->metric && o->n_metrics > 0) {
        int rc = o->metric(step, values, o->user);
        if (rc < 0) {
            char prev[256];
            snprintf(prev, sizeof prev, "%s", bilo_last_error());
            return bilo__fail_code(rc, "bilo_driver_run: the metric callback failed at step "
                                   "%lld: %s", (long long)step, prev);
        }
        d->shown = values[0];
    }
    if (!d->csv) return 0;
    bilo_cost last, total;
    bilo_estimator_report(d->e, &last, &total);
    fprintf(d->csv, "%lld", (long long)step);
    write_cost(d->csv, &last);
    write_cost(d->csv, &total);
    fprintf(d->csv, ",%.6f", now_seconds() - d->t0);
    for (int k = 0; k < o->n_metrics && o->metric; k++) fprintf(d->csv, ",%.17g", values[k]);
    fputc('\n', d->csv);
    return fflush(d->csv) == 0 ? 0
                               : bilo__fail_code(BILO_EIO, "bilo_driver_run: cannot write %s",
                                                 o->csv_path);
}

/* On a terminal one line rewritten after every step; elsewhere (a log file, a pipe) a plain
   line every ~10% of the run so that the log stays short. */
static void show_progress(const driver *d, int64_t step, bool tty, bool last)
{
    const bilo_driver_opts *o = d->o;
    int64_t tenth = o->steps / 10 > 0 ? o->steps / 10 : 1;
    if (!tty && step % tenth != 0 && !last) return;
    double elapsed = now_seconds() - d->t0;
    double eta = elapsed / (double)(step - d->first_step) * (double)(o->steps - step);
    const char *label = o->label ? o->label : d->e->name;
    fprintf(stderr, "%s[%s] step %lld/%lld", tty ? "\r" : "", label, (long long)step,
            (long long)o->steps);
    if (o->metric && o->n_metrics > 0 && !isnan(d->shown))
        fprintf(stderr, "  %s=%.6g", o->metric_names[0], d->shown);
    fprintf(stderr, "  elapsed %.1fs  ETA %.1fs%s", elapsed, eta, tty ? "\033[K" : "");
    if (!tty || last) fputc('\n', stderr);
    fflush(stderr);
}

/* ---- the run --------------------------------------------------------------------------- */

static int check_opts(const bilo_estimator *e, const bilo_optim *outer, const bilo_driver_opts *o)
{
    if (!e || !outer || !o) return bilo__fail_code(BILO_ENULL, "bilo_driver_run: NULL argument");
    if (o->steps < 0 || o->eval_every < 0 || o->checkpoint_every < 0 || o->n_metrics < 0 ||
        (o->n_metrics > 0 && !o->metric_names))
        return bilo__fail_code(BILO_EINVAL, "bilo_driver_run: steps %lld, eval_every %lld, "
                               "checkpoint_every %lld and n_metrics %d must be >= 0 (with names "
                               "for the metrics)", (long long)o->steps, (long long)o->eval_every,
                               (long long)o->checkpoint_every, o->n_metrics);
    if (!(o->time_budget >= 0))
        return bilo__fail_code(BILO_EINVAL, "bilo_driver_run: time_budget %g must be >= 0",
                               o->time_budget);
    return 0;
}

static bool over_budget(const driver *d, int64_t step)
{
    return d->o->time_budget > 0 && step < d->o->steps &&
           now_seconds() - d->t0 >= d->o->time_budget;
}

static int run_steps(driver *d)
{
    const bilo_driver_opts *o = d->o;
    bool tty = isatty(STDERR_FILENO);
    for (int64_t step = d->first_step + 1; step <= o->steps; step++) {
        int rc = bilo_estimator_step(d->e, d->outer);
        bool stop = rc == 0 && over_budget(d, step);
        bool eval = stop || step == o->steps || (o->eval_every > 0 && step % o->eval_every == 0);
        if (rc == 0 && eval) rc = evaluate(d, step);
        bool save = stop || (o->checkpoint_every > 0 && step % o->checkpoint_every == 0);
        if (rc == 0 && o->checkpoint_path && save) rc = save_checkpoint(d, step);
        if (rc < 0) return rc;
        if (o->progress) show_progress(d, step, tty, stop || step == o->steps);
        if (stop) break;
    }
    return 0;
}

int bilo_driver_run(bilo_estimator *e, bilo_optim *outer, const bilo_driver_opts *o)
{
    int rc = check_opts(e, outer, o);
    if (rc < 0) return rc;
    driver d = {.e = e, .outer = outer, .o = o, .t0 = now_seconds(), .shown = NAN};
    d.s_outer = states_per_param(outer);
    d.s_inner = states_per_param(e->inner_opt);
    d.n = 1 + e->prob.n_x * (1 + d.s_outer) + e->prob.n_y * (2 + d.s_inner) + e->n_state;
    if (o->resume && o->checkpoint_path && access(o->checkpoint_path, F_OK) == 0) {
        int64_t step = load_checkpoint(&d);
        if (step < 0) return (int)step;
        d.first_step = step;
    }
    rc = open_csv(&d, d.first_step > 0);
    if (rc == 0) rc = run_steps(&d);
    if (d.csv && fclose(d.csv) != 0 && rc == 0)
        rc = bilo__fail_code(BILO_EIO, "bilo_driver_run: cannot write %s", o->csv_path);
    return rc;
}
