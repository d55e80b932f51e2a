/* The outer driver on the quadratic problem
     g(x, y) = ½ yᵀAy − yᵀBx − cᵀy,  f(x, y) = ½‖y − y₀‖² + ½‖x‖² + eᵀx:
   checkpoint/resume reproduces the uninterrupted trajectory bit for bit, bad checkpoint files
   are rejected without harm, the CSV log has its header and rows, errors stop the run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bilo.h"
#include "tap.h"

#define NX 2
#define NY 3

static const double A0[NY * NY] = {2.0, 0.5, 0.0, 0.5, 1.5, 0.2, 0.0, 0.2, 1.0};
static const double B0[NY * NX] = {0.3, -0.2, 0.1, 0.4, -0.25, 0.15};
static const double C0[NY] = {1.0, -0.5, 0.25};
static const double Y0[NY] = {0.5, 0.0, -1.0};
static const double E0[NX] = {0.2, -0.4};
static const double X_START[NX] = {1.0, -1.0};
static const double Y_START[NY] = {0.0, 0.1, -0.2};

typedef struct {
    bilo_tensor *tA, *tB, *tc, *ty0, *te;
    bilo_tensor *x, *y;
    int64_t upper_calls, fail_upper_at; /* the upper callback fails on call fail_upper_at */
    int64_t fail_metric_at;              /* the metric callback fails at this step */
} quad;

static bilo_tensor *mat_vec(bilo_tensor *m, bilo_tensor *v)
{
    return bilo_flatten(bilo_matmul(m, bilo_reshape(v, BILO_SHAPE(bilo_numel(v), 1))));
}

static bilo_tensor *lower(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                          void *user)
{
    (void)b;
    quad *q = user;
    bilo_tensor *quadratic = bilo_mul_scalar(bilo_dot(y[0], mat_vec(q->tA, y[0])), 0.5);
    return bilo_sub(bilo_sub(quadratic, bilo_dot(y[0], mat_vec(q->tB, x[0]))),
                    bilo_dot(q->tc, y[0]));
}

static bilo_tensor *upper(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                          void *user)
{
    (void)b;
    quad *q = user;
    if (++q->upper_calls == q->fail_upper_at)
        return bilo_matmul(q->tB, q->tB); /* [3,2]·[3,2]: a shape error */
    bilo_tensor *d = bilo_sub(y[0], q->ty0);
    bilo_tensor *f = bilo_add(bilo_mul_scalar(bilo_dot(d, d), 0.5),
                              bilo_mul_scalar(bilo_dot(x[0], x[0]), 0.5));
    return bilo_add(f, bilo_dot(q->te, x[0]));
}

/* f at the current (x, y), in plain doubles. */
static double upper_value(const double *x, const double *y)
{
    double f = 0;
    for (int i = 0; i < NY; i++) f += 0.5 * (y[i] - Y0[i]) * (y[i] - Y0[i]);
    for (int i = 0; i < NX; i++) f += 0.5 * x[i] * x[i] + E0[i] * x[i];
    return f;
}

static int metric(int64_t step, double *values, void *user)
{
    quad *q = user;
    if (step == q->fail_metric_at) {
        bilo_tensor *bad = bilo_matmul(q->tB, q->tB);
        bilo_release(bad);
        return bilo_errcode();
    }
    values[0] = upper_value(bilo_data(q->x), bilo_data(q->y));
    values[1] = (double)step;
    return 0;
}

static void quad_init(quad *q)
{
    memset(q, 0, sizeof *q);
    q->tA = bilo_from_data(BILO_F64, BILO_SHAPE(NY, NY), A0);
    q->tB = bilo_from_data(BILO_F64, BILO_SHAPE(NY, NX), B0);
    q->tc = bilo_from_data(BILO_F64, BILO_SHAPE(NY), C0);
    q->ty0 = bilo_from_data(BILO_F64, BILO_SHAPE(NY), Y0);
    q->te = bilo_from_data(BILO_F64, BILO_SHAPE(NX), E0);
    q->x = bilo_from_data(BILO_F64, BILO_SHAPE(NX), X_START);
    q->y = bilo_from_data(BILO_F64, BILO_SHAPE(NY), Y_START);
}

static void quad_free(quad *q)
{
    bilo_tensor *ts[] = {q->tA, q->tB, q->tc, q->ty0, q->te, q->x, q->y};
    for (int i = 0; i < 7; i++) bilo_release(ts[i]);
}

static const char *const metric_names[] = {"f", "step_seen"};

typedef struct {
    const char *method, *options;
    int64_t steps, eval_every, checkpoint_every;
    const char *csv, *ckpt;
    bool resume;
    int64_t fail_upper_at, fail_metric_at;
    double time_budget;
} run_spec;

/* One process' worth of work: fresh tensors, estimator and Adam outer optimizer, one driver
   run. Final x and y go to xo, yo; returns the driver's code. */
static int run(const run_spec *s, double *xo, double *yo)
{
    quad q;
    quad_init(&q);
    q.fail_upper_at = s->fail_upper_at;
    q.fail_metric_at = s->fail_metric_at;
    bilo_problem p = {.x = &q.x, .n_x = 1, .y = &q.y, .n_y = 1, .lower = lower,
                      .upper = upper, .user = &q};
    bilo_estimator *e = bilo_estimator_new(s->method, &p, s->options);
    bilo_optim_opts oo = {.kind = BILO_OPTIM_ADAM, .lr = 0.05};
    bilo_optim *outer = bilo_optim_new(&oo, &q.x, 1);
    bilo_driver_opts o = {.steps = s->steps, .eval_every = s->eval_every, .metric = metric,
                          .metric_names = metric_names, .n_metrics = 2, .user = &q,
                          .csv_path = s->csv, .checkpoint_path = s->ckpt,
                          .checkpoint_every = s->checkpoint_every, .resume = s->resume,
                          .time_budget = s->time_budget};
    int rc = e && outer ? bilo_driver_run(e, outer, &o) : -100;
    memcpy(xo, bilo_data(q.x), sizeof(double) * NX);
    memcpy(yo, bilo_data(q.y), sizeof(double) * NY);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    quad_free(&q);
    return rc;
}

static char *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    *size = fread(buf, 1, (size_t)n, f);
    buf[*size] = '\0';
    fclose(f);
    return buf;
}

static void spit(const char *path, const char *buf, size_t size)
{
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, size, f);
    fclose(f);
}

static char tmpdir[] = "/tmp/bilo_driver_XXXXXX";
static char ckpt[64], csv[64];

/* 100 steps straight vs 50 steps, a checkpoint, and a resumed run to 100. */
static void test_resume(const char *method, const char *options)
{
    double xa[NX], ya[NY], xb[NX], yb[NY], xm[NX], ym[NY];
    remove(ckpt);
    run_spec full = {.method = method, .options = options, .steps = 100, .eval_every = 10};
    int rc = run(&full, xa, ya);
    run_spec first = full;
    first.steps = 50;
    first.ckpt = ckpt;
    first.checkpoint_every = 25;
    rc |= run(&first, xm, ym);
    run_spec second = full;
    second.ckpt = ckpt;
    second.checkpoint_every = 25;
    second.resume = true;
    rc |= run(&second, xb, yb);
    tap_ok(rc == 0, "%s: the three runs succeed (%s)", method, rc ? bilo_last_error() : "");
    tap_ok(memcmp(xa, xm, sizeof xa) != 0, "%s: x moved between steps 50 and 100", method);
    tap_ok(!memcmp(xa, xb, sizeof xa) && !memcmp(ya, yb, sizeof ya),
           "%s: resumed at 50, x and y at 100 are bit-identical to the straight run", method);
}

/* A budget every step exceeds stops the run after step 1, logged and checkpointed there (not
   a multiple of checkpoint_every); resuming completes the straight run's trajectory. */
static void test_time_budget(void)
{
    double xa[NX], ya[NY], xb[NX], yb[NY], xm[NX], ym[NY];
    remove(ckpt);
    run_spec full = {.method = "aid-cg", .options = "K=3,T=5", .steps = 100, .eval_every = 10};
    int rc = run(&full, xa, ya);
    run_spec cut = full;
    cut.ckpt = ckpt;
    cut.csv = csv;
    cut.checkpoint_every = 25;
    cut.time_budget = 1e-9;
    rc |= run(&cut, xm, ym);
    size_t size = 0;
    char *log = slurp(csv, &size);
    char *row = log ? strchr(log, '\n') : NULL;
    int lines = 0;
    for (size_t i = 0; i < size; i++) lines += log[i] == '\n';
    tap_ok(row && !strncmp(row, "\n1,", 3) && lines == 2,
           "time budget: the run stops after step 1 with one CSV row for it");
    free(log);
    run_spec rest = cut;
    rest.csv = NULL;
    rest.time_budget = 0;
    rest.resume = true;
    rc |= run(&rest, xb, yb);
    tap_ok(rc == 0, "time budget: both runs return 0 (%s)", rc ? bilo_last_error() : "");
    tap_ok(!memcmp(xa, xb, sizeof xa) && !memcmp(ya, yb, sizeof ya),
           "time budget: resumed after step 1, x and y at 100 equal the straight run's bits");
}

static void test_bad_files(void)
{
    double x[NX], y[NY], xs[NX], ys[NY];
    remove(ckpt);
    run_spec base = {.method = "aid-cg", .options = "K=3,warm_v=1,T=5,momentum=0.5",
                     .steps = 20, .ckpt = ckpt, .checkpoint_every = 20};
    run(&base, x, y);
    size_t size, after;
    char *good = slurp(ckpt, &size);
    char bad[64];
    snprintf(bad, sizeof bad, "%s/bad.ckpt", tmpdir);
    run_spec load = base;
    load.ckpt = bad;
    load.resume = true;
    load.steps = 30;

    spit(bad, good, size - 7);
    bilo_clear_error();
    int rc = run(&load, xs, ys);
    tap_ok(rc < 0 && strstr(bilo_last_error(), "bad.ckpt"),
           "a truncated checkpoint is rejected: %s", bilo_last_error());
    tap_ok(!memcmp(xs, X_START, sizeof xs) && !memcmp(ys, Y_START, sizeof ys),
           "x and y are untouched by the rejected file");

    spit(bad, "step,f\n1,2\n", 11);
    rc = run(&load, xs, ys);
    tap_ok(rc < 0 && strstr(bilo_last_error(), "bad.ckpt"), "a foreign file is rejected: %s",
           bilo_last_error());

    bilo_tensor *other = bilo_zeros(BILO_F64, BILO_SHAPE(5));
    bilo_save_params(bad, &other, 1);
    bilo_release(other);
    rc = run(&load, xs, ys);
    tap_ok(rc < 0 && strstr(bilo_last_error(), "bad.ckpt"),
           "a parameter file of other tensors is rejected: %s", bilo_last_error());

    run_spec other_method = base;
    other_method.method = "itd";
    other_method.options = "T=5,momentum=0.5";
    other_method.resume = true;
    rc = run(&other_method, xs, ys);
    tap_ok(rc == BILO_EFORMAT && strstr(bilo_last_error(), "not a checkpoint of this method"),
           "another method's checkpoint of the same layout is rejected: %s", bilo_last_error());
    tap_ok(!memcmp(xs, X_START, sizeof xs) && !memcmp(ys, Y_START, sizeof ys),
           "x and y are untouched by the rejected checkpoint");

    char *now = slurp(ckpt, &after);
    tap_ok(now && after == size && !memcmp(now, good, size),
           "the previous checkpoint is byte for byte intact");
    free(now);
    free(good);
    remove(bad);
}

/* A failure at step 37 leaves the step-30 checkpoint; resuming from it to 60 matches a
   straight 60-step run. */
static void test_error_keeps_checkpoint(void)
{
    double xa[NX], ya[NY], xb[NX], yb[NY];
    remove(ckpt);
    run_spec spec = {.method = "itd", .options = "T=4,momentum=0.5", .steps = 60,
                     .ckpt = ckpt, .checkpoint_every = 10};
    run_spec failing = spec;
    failing.fail_upper_at = 37; /* ITD evaluates f once per outer step */
    bilo_clear_error();
    int rc = run(&failing, xb, yb);
    tap_ok(rc == BILO_ESHAPE && strstr(bilo_last_error(), "step 37"),
           "an upper-callback error stops the run with its code and step: %s",
           bilo_last_error());
    run_spec straight = spec;
    straight.ckpt = NULL;
    rc = run(&straight, xa, ya);
    run_spec resumed = spec;
    resumed.resume = true;
    rc |= run(&resumed, xb, yb);
    tap_ok(rc == 0 && !memcmp(xa, xb, sizeof xa) && !memcmp(ya, yb, sizeof ya),
           "resuming from the last checkpoint before the failure reproduces the straight run");

    run_spec metric_fail = straight;
    metric_fail.fail_metric_at = 40;
    metric_fail.eval_every = 20;
    rc = run(&metric_fail, xa, ya);
    tap_ok(rc == BILO_ESHAPE && strstr(bilo_last_error(), "metric") &&
               strstr(bilo_last_error(), "step 40"),
           "a metric-callback error stops the run with its code and step: %s",
           bilo_last_error());
}

static void test_csv(void)
{
    double x[NX], y[NY];
    remove(csv);
    run_spec spec = {.method = "aid-cg", .options = "K=3,T=5", .steps = 25, .eval_every = 10,
                     .csv = csv};
    int rc = run(&spec, x, y);
    size_t size;
    char *text = slurp(csv, &size);
    static const char header[] =
        "step,last_f_grads,last_g_grads,last_hvps,last_inner_iters,last_steps,last_seconds,"
        "last_peak_bytes,total_f_grads,total_g_grads,total_hvps,total_inner_iters,total_steps,"
        "total_seconds,total_peak_bytes,elapsed,f,step_seen\n";
    tap_ok(rc == 0 && text && !strncmp(text, header, strlen(header)), "CSV header");
    const int64_t want_steps[] = {10, 20, 25};
    int rows = 0;
    bool steps_ok = true, totals_ok = true, columns_ok = true;
    double last_f = 0;
    for (char *line = text ? strchr(text, '\n') + 1 : NULL; line && *line; rows++) {
        char *end = strchr(line, '\n');
        *end = '\0';
        double v[18];
        int n = 0;
        for (char *tok = strtok(line, ","); tok && n < 18; tok = strtok(NULL, ","))
            v[n++] = strtod(tok, NULL);
        columns_ok = columns_ok && n == 18;
        steps_ok = steps_ok && rows < 3 && v[0] == (double)want_steps[rows] && v[17] == v[0];
        /* each AID-CG step: T g-gradients in the inner loop, one total step count per step */
        totals_ok = totals_ok && v[12] == v[0] && v[11] == 5 * v[0] && v[5] == 1;
        last_f = v[16];
        line = end + 1;
    }
    tap_ok(rows == 3 && columns_ok, "one row of 18 columns per evaluation (%d rows)", rows);
    tap_ok(steps_ok, "rows at steps 10, 20 and the last, 25, in order");
    tap_ok(totals_ok, "cost columns: total steps = step, total inner iterations = 5·step");
    tap_close(last_f, upper_value(x, y), 1e-12, 1e-12, "last row's metric is f at the final x, y");
    free(text);
    remove(csv);
}

/* ---- minibatches: least squares on both levels --------------------------------------------
   g(x, y; b) = ‖A_b y − t_b‖²/(2|b|) + ½‖y − x‖²,  f(x, y; b) = ‖V_b y − s_b‖²/(2|b|), with the
   rows A_b, t_b and V_b, s_b drawn by a shuffling batcher per level. */

enum { LS_LOWER = 11, LS_UPPER = 7 };

static bilo_tensor *batch_lsq(const bilo_batch *b, bilo_tensor *y)
{
    bilo_tensor *r = bilo_sub(mat_vec(b->x, y), b->y);
    return bilo_mul_scalar(bilo_dot(r, r), 0.5 / (double)bilo_numel(b->y));
}

static bilo_tensor *ls_lower(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                             void *user)
{
    (void)user;
    bilo_tensor *d = bilo_sub(y[0], x[0]);
    return bilo_add(batch_lsq(b, y[0]), bilo_mul_scalar(bilo_dot(d, d), 0.5));
}

static bilo_tensor *ls_upper(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                             void *user)
{
    (void)x;
    (void)user;
    return batch_lsq(b, y[0]);
}

/* rows × NY features and rows targets, from a fixed formula. */
static bilo_batcher *ls_batcher(int64_t rows, double phase, int64_t batch_size, uint64_t seed)
{
    double a[LS_LOWER * NY], t[LS_LOWER];
    for (int64_t i = 0; i < rows; i++) {
        for (int j = 0; j < NY; j++) a[i * NY + j] = sin(phase + 1.3 * (double)i + 0.7 * j);
        t[i] = cos(phase + 0.9 * (double)i);
    }
    bilo_tensor *ta = bilo_from_data(BILO_F64, BILO_SHAPE(rows, NY), a);
    bilo_tensor *tt = bilo_from_data(BILO_F64, BILO_SHAPE(rows), t);
    bilo_batcher *b = bilo_batcher_new(ta, tt, &(bilo_batcher_opts){.batch_size = batch_size,
                                                                    .seed = seed});
    bilo_release(ta);
    bilo_release(tt);
    return b;
}

/* Like run() on the least-squares problem, with batchers of the given seed. */
static int run_ls(const run_spec *s, uint64_t seed, double *xo, double *yo)
{
    bilo_tensor *x = bilo_zeros(BILO_F64, BILO_SHAPE(NY));
    bilo_tensor *y = bilo_from_data(BILO_F64, BILO_SHAPE(NY), Y_START);
    bilo_batcher *lower_data = ls_batcher(LS_LOWER, 0.0, 4, seed);
    bilo_batcher *upper_data = ls_batcher(LS_UPPER, 2.0, 3, seed + 1);
    bilo_problem p = {.x = &x, .n_x = 1, .y = &y, .n_y = 1, .lower = ls_lower,
                      .upper = ls_upper, .lower_data = lower_data, .upper_data = upper_data};
    bilo_estimator *e = bilo_estimator_new(s->method, &p, s->options);
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.kind = BILO_OPTIM_ADAM, .lr = 0.05},
                                       &x, 1);
    bilo_driver_opts o = {.steps = s->steps, .checkpoint_path = s->ckpt,
                          .checkpoint_every = s->checkpoint_every, .resume = s->resume};
    int rc = e && outer ? bilo_driver_run(e, outer, &o) : -100;
    memcpy(xo, bilo_data(x), sizeof(double) * NY);
    memcpy(yo, bilo_data(y), sizeof(double) * NY);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    bilo_batcher_free(lower_data);
    bilo_batcher_free(upper_data);
    bilo_release(x);
    bilo_release(y);
    return rc;
}

/* 100 minibatch steps straight vs 50, a checkpoint, and a resumed run: the batchers' positions
   travel with the checkpoint (at step 50 the upper batcher is mid-epoch, the lower one at an
   epoch boundary for aid-cg's 6 batches a step and mid-epoch for aid-ns' 7). */
static void test_resume_minibatch(const char *method, const char *options)
{
    double xa[NY], ya[NY], xb[NY], yb[NY], xm[NY], ym[NY], xs[NY], ys[NY];
    remove(ckpt);
    run_spec full = {.method = method, .options = options, .steps = 100};
    int rc = run_ls(&full, 21, xa, ya);
    run_spec first = full;
    first.steps = 50;
    first.ckpt = ckpt;
    first.checkpoint_every = 25;
    rc |= run_ls(&first, 21, xm, ym);
    run_spec second = first;
    second.steps = 100;
    second.resume = true;
    rc |= run_ls(&second, 21, xb, yb);
    rc |= run_ls(&full, 22, xs, ys);
    tap_ok(rc == 0, "%s minibatch: the runs succeed (%s)", method, rc ? bilo_last_error() : "");
    tap_ok(memcmp(xa, xs, sizeof xa) != 0,
           "%s minibatch: the trajectory depends on the batch order (another seed differs)",
           method);
    tap_ok(memcmp(xa, xm, sizeof xa) != 0, "%s minibatch: x moved between steps 50 and 100",
           method);
    tap_ok(!memcmp(xa, xb, sizeof xa) && !memcmp(ya, yb, sizeof ya),
           "%s minibatch: resumed at 50, x and y at 100 are bit-identical to the straight run",
           method);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) return tap_ok(0, "mkdtemp"), tap_done();
    snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", tmpdir);
    snprintf(csv, sizeof csv, "%s/log.csv", tmpdir);
    test_resume("aid-cg", "K=3,warm_v=1,T=5,momentum=0.5");
    test_resume("itd", "T=5,momentum=0.5");
    test_resume_minibatch("aid-cg", "K=3,warm_v=1,T=5,momentum=0.5");
    test_resume_minibatch("aid-ns", "K=4,eta=0.3,T=6,optim=adam,lr=0.05");
    test_time_budget();
    test_bad_files();
    test_error_keeps_checkpoint();
    test_csv();
    remove(ckpt);
    remove(tmpdir);
    return tap_done();
}
