/* Time and peak memory per hypergradient on the logistic-regression hyperparameter problem,
 * against PyTorch in the same run when it is installed.
 *
 *   inner: W [784, 10] minimizes CE(X_tr W, y_tr) + ½ Σ_j exp(x_j) Σ_c W_jc²  (n = 5000)
 *   outer: x [784] log-weights minimizes CE(X_va W*, y_va)                      (n = 5000)
 *
 * f32, synthetic data (Gaussian features, labels from a random linear teacher plus noise),
 * 1 thread. One hypergradient = T inner SGD steps from W = 0 (reset=1) and the method's
 * backward work: ITD differentiates through the T recorded steps, AID-CG runs K = 10 CG
 * iterations of HVPs and one mixed product. It is timed as one bilo_estimator_step (outer SGD
 * with a negligible step, so every repetition sees the same point). Peak memory is the
 * allocator's peak above the live bytes before the step (bilo_mem_get_stats).
 *
 * The peer is bench/peers/torch_bilevel.py (same shapes, same computation with
 * torch.autograd.grad), run once for all configurations right after bilo's, with
 * OMP_WAIT_POLICY=PASSIVE, OPENBLAS_NUM_THREADS=1 and torch.set_num_threads(1) (see
 * /work/shared/research/peers.md). ITD with T = 1000 runs only when its projection (ten
 * times T = 100, bilo and torch) keeps the whole benchmark under two minutes.
 *
 * With --csv [--quick] it prints bench/run.sh's rows instead: ITD T = 100, AID-CG T = 100
 * K = 10 and ESJ Q = 10 T = 100 (Gaussian directions, μ = 0.01) seconds per hypergradient at 1
 * and 2 threads (rounds of an untimed ITD T = 10 step and one bilo step per row, then one
 * torch process for all rows, which warms up the same way; torch_common.set_threads sets
 * torch's and OpenBLAS's threads), ESJ's 2-thread speedup,
 * and ITD T = 1000 peak memory above the start of the hypergradient (bilo: its
 * allocator's peak; torch: the resident-memory high-water mark). */
#include "bilo.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N = 5000, D = 784, C = 10, MAX_CONFIGS = 4 };

#define INNER_LR 0.1
#define BUDGET_S 120.0

typedef struct {
    const char *label;   /* printed, and the peer's key */
    const char *method;  /* bilo_estimator_new name */
    const char *options;
    int reps;
} config;

static const config configs[MAX_CONFIGS] = {
    {"itd_T10", "itd", "T=10,lr=0.1,reset=1", 3},
    {"itd_T100", "itd", "T=100,lr=0.1,reset=1", 2},
    {"cg_T100_K10", "aid-cg", "T=100,lr=0.1,reset=1,K=10", 2},
    {"itd_T1000", "itd", "T=1000,lr=0.1,reset=1", 1},
};

typedef struct {
    bilo_tensor *X_tr, *y_tr, *X_va, *y_va;
} dataset;

static void die_on_error(int ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "bench_bilevel: %s failed: %s\n", what, bilo_last_error());
    exit(1);
}

static void make_split(bilo_rng *rng, bilo_tensor *teacher, bilo_tensor **X, bilo_tensor **y)
{
    bilo_scope_begin();
    *X = bilo_keep(bilo_randn(BILO_F32, BILO_SHAPE(N, D), rng));
    bilo_tensor *noise = bilo_randn(BILO_F32, BILO_SHAPE(N, C), rng);
    *y = bilo_keep(bilo_argmax(bilo_add(bilo_matmul(*X, teacher), noise), 1, false));
    bilo_scope_end();
    die_on_error(*X && *y, "data generation");
}

static dataset make_dataset(void)
{
    bilo_rng rng = bilo_rng_make(5, 0);
    dataset ds;
    bilo_tensor *teacher = bilo_mul_scalar(bilo_randn(BILO_F32, BILO_SHAPE(D, C), &rng),
                                           1 / sqrt(D));
    make_split(&rng, teacher, &ds.X_tr, &ds.y_tr);
    make_split(&rng, teacher, &ds.X_va, &ds.y_va);
    bilo_release(teacher);
    return ds;
}

static void free_dataset(dataset *ds)
{
    bilo_tensor *ts[] = {ds->X_tr, ds->y_tr, ds->X_va, ds->y_va};
    for (int i = 0; i < 4; i++) bilo_release(ts[i]);
}

static bilo_tensor *lower(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                          void *user)
{
    (void)b;
    const dataset *ds = user;
    bilo_tensor *fit = bilo_nn_cross_entropy(bilo_matmul(ds->X_tr, y[0]), ds->y_tr,
                                             BILO_REDUCE_MEAN);
    bilo_tensor *weights = bilo_reshape(bilo_exp(x[0]), BILO_SHAPE(D, 1));
    bilo_tensor *penalty = bilo_sum(bilo_mul(weights, bilo_square(y[0])), BILO_ALL_AXES, false);
    return bilo_add(fit, bilo_mul_scalar(penalty, 0.5));
}

static bilo_tensor *upper(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                          void *user)
{
    (void)b;
    (void)x;
    const dataset *ds = user;
    return bilo_nn_cross_entropy(bilo_matmul(ds->X_va, y[0]), ds->y_va, BILO_REDUCE_MEAN);
}

typedef struct {
    double seconds; /* best of the repetitions */
    size_t peak;    /* peak bytes above the live bytes before the step */
} measured;

static measured measure_bilo(dataset *ds, const config *cfg)
{
    bilo_tensor *x = bilo_full(BILO_F32, BILO_SHAPE(D), -3.0);
    bilo_tensor *W = bilo_zeros(BILO_F32, BILO_SHAPE(D, C));
    bilo_problem p = {.x = &x, .n_x = 1, .y = &W, .n_y = 1, .lower = lower, .upper = upper,
                      .user = ds};
    bilo_estimator *e = bilo_estimator_new(cfg->method, &p, cfg->options);
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 1e-12}, &x, 1);
    die_on_error(x && W && e && outer, cfg->label);
    measured m = {.seconds = INFINITY};
    for (int r = 0; r < cfg->reps; r++) {
        bilo_mem_stats before, after;
        bilo_mem_get_stats(&before);
        bilo_mem_reset_peak();
        double t0 = now();
        die_on_error(bilo_estimator_step(e, outer) == 0, cfg->label);
        double s = now() - t0;
        bilo_mem_get_stats(&after);
        if (s < m.seconds) m.seconds = s;
        m.peak = after.peak_bytes - before.live_bytes;
    }
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    bilo_release(x);
    bilo_release(W);
    return m;
}

/* Runs the peer on configs[first..first+n) and fills torch_s[first..] (NAN where it gave no
   figure or there is no peer). */
static void run_torch(const char *script, int first, int n, double *torch_s)
{
    char cmd[1600], list[256] = "", line[256], key[64];
    for (int i = first; i < first + n; i++) {
        torch_s[i] = NAN;
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i > first ? "," : "",
                 configs[i].label);
    }
    if (!script) return;
    snprintf(cmd, sizeof cmd,
             "OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1 /usr/bin/python3 '%s' --configs %s",
             script, list);
    FILE *f = popen(cmd, "r");
    double v;
    while (f && fgets(line, sizeof line, f))
        for (int i = first; i < first + n; i++)
            if (sscanf(line, "%63s %lf", key, &v) == 2 && !strcmp(key, configs[i].label))
                torch_s[i] = v;
    int status = f ? pclose(f) : -1;
    if (status != 0) printf("torch: peer script failed (status %d)\n", status);
}

static void print_row(const config *cfg, measured m, double torch_s)
{
    printf("  %-12s %-28s %9.3f %10.1f", cfg->label, cfg->options, m.seconds,
           (double)m.peak / (1 << 20));
    if (isnan(torch_s))
        printf(" %9s %11s\n", "-", "-");
    else
        printf(" %9.3f %11.2f\n", torch_s, m.seconds / torch_s);
}

/* ---- --csv: rows for bench/run.sh ----------------------------------------------------------- */

enum { CSV_TIMED = 3, CSV_ROWS = 2 * CSV_TIMED, CSV_MAX_ROUNDS = 7, CSV_ESJ = 2 };
static const config csv_timed[CSV_TIMED] = {
    {"itd_T100", "itd", "T=100,lr=0.1,reset=1", 1},
    {"cg_T100_K10", "aid-cg", "T=100,lr=0.1,reset=1,K=10", 1},
    [CSV_ESJ] = {"esj_Q10_T100", "esj",
                 "Q=10,T=100,mu=0.01,directions=gaussian,optim=sgd,lr=0.1,reset=1", 1},
};
static const config csv_memory = {"itd_T1000", "itd", "T=1000,lr=0.1,reset=1", 1};
/* Run untimed at the start of every round, as the peer runs it at the start of its process:
   both sides then time their rows with the data back in cache after the other side ran. */
static const config csv_warmup = {"itd_T10", "itd", "T=10,lr=0.1,reset=1", 1};

/* Seconds of one hypergradient step of every (config, threads) row, after a warm-up step. */
typedef struct {
    bilo_tensor *x, *W;
    bilo_estimator *e;
    bilo_optim *outer;
} csv_run;

static csv_run csv_run_make(dataset *ds, const config *cfg)
{
    csv_run r = {.x = bilo_full(BILO_F32, BILO_SHAPE(D), -3.0),
                 .W = bilo_zeros(BILO_F32, BILO_SHAPE(D, C))};
    bilo_problem p = {.x = &r.x, .n_x = 1, .y = &r.W, .n_y = 1, .lower = lower,
                      .upper = upper, .user = ds};
    r.e = bilo_estimator_new(cfg->method, &p, cfg->options);
    r.outer = bilo_optim_new(&(bilo_optim_opts){.lr = 1e-12}, &r.x, 1);
    die_on_error(r.x && r.W && r.e && r.outer, cfg->label);
    die_on_error(bilo_estimator_step(r.e, r.outer) == 0, cfg->label); /* warm-up */
    return r;
}

static void csv_run_free(csv_run *r)
{
    bilo_optim_free(r->outer);
    bilo_estimator_free(r->e);
    bilo_release(r->x);
    bilo_release(r->W);
}

static double csv_step_seconds(csv_run *r, const char *label)
{
    const double t0 = now();
    die_on_error(bilo_estimator_step(r->e, r->outer) == 0, label);
    return now() - t0;
}

/* ESJ's 2-thread speedup over 1 thread, round by round (its paths run in parallel; torch can
   only thread inside each product), as median, min and max. */
typedef struct {
    bench_stats ours, torch;
} speedups;

static speedups esj_speedups(double ours[][CSV_MAX_ROUNDS], double torch[][CSV_MAX_ROUNDS],
                             int rounds)
{
    double s_ours[CSV_MAX_ROUNDS], s_torch[CSV_MAX_ROUNDS];
    const int one = 2 * CSV_ESJ, two = one + 1;
    for (int r = 0; r < rounds; r++) {
        s_ours[r] = ours[one][r] / ours[two][r];
        s_torch[r] = torch[one][r] / torch[two][r];
    }
    return (speedups){bench_summarize(s_ours, rounds), bench_summarize(s_torch, rounds)};
}

/* Row i: config i / 2 at i % 2 + 1 threads; rounds of bilo's steps, then one torch process. */
static void csv_times(dataset *ds, const char *script, int rounds)
{
    char keys[CSV_ROWS][64], cmd[1600];
    const char *key_list[CSV_ROWS];
    for (int i = 0; i < CSV_ROWS; i++) {
        snprintf(keys[i], sizeof keys[i], "%s_%dt", csv_timed[i / 2].label, i % 2 + 1);
        key_list[i] = keys[i];
    }
    snprintf(cmd, sizeof cmd,
             "OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 '%s' --configs %s,%s,%s --threads 1,2 "
             "--reps 1 --warmup %s", script ? script : "", csv_timed[0].label,
             csv_timed[1].label, csv_timed[2].label, csv_warmup.label);
    csv_run runs[CSV_TIMED], warmup = csv_run_make(ds, &csv_warmup);
    for (int c = 0; c < CSV_TIMED; c++) runs[c] = csv_run_make(ds, &csv_timed[c]);
    double ours[CSV_ROWS][CSV_MAX_ROUNDS], torch[CSV_ROWS][CSV_MAX_ROUNDS];
    bool torch_ok = script != NULL;
    for (int r = 0; r < rounds; r++) {
        bilo_set_num_threads(1);
        csv_step_seconds(&warmup, csv_warmup.label);
        for (int i = 0; i < CSV_ROWS; i++) {
            bilo_set_num_threads(i % 2 + 1);
            ours[i][r] = csv_step_seconds(&runs[i / 2], csv_timed[i / 2].label);
        }
        double v[CSV_ROWS] = {0};
        torch_ok = torch_ok && bench_peer_values(cmd, CSV_ROWS, key_list, v);
        for (int i = 0; i < CSV_ROWS; i++) {
            torch_ok = torch_ok && !isnan(v[i]);
            torch[i][r] = v[i];
        }
    }
    for (int c = 0; c < CSV_TIMED; c++) csv_run_free(&runs[c]);
    csv_run_free(&warmup);
    bilo_set_num_threads(1);
    const speedups esj = esj_speedups(ours, torch, rounds); /* before the rows sort them */
    for (int i = 0; i < CSV_ROWS; i++) {
        char name[96];
        snprintf(name, sizeof name, "logreg_hypergrad_%s", csv_timed[i / 2].label);
        const bench_stats t = torch_ok ? bench_summarize(torch[i], rounds) : (bench_stats){0};
        bench_csv_row(name, i % 2 + 1, "s", false, bench_summarize(ours[i], rounds), "PyTorch",
                      torch_ok ? &t : NULL);
    }
    bench_csv_row("logreg_esj_Q10_T100_speedup_2t_over_1t", 2, "x", true, esj.ours, "PyTorch",
                  torch_ok ? &esj.torch : NULL);
}

/* ITD at T = 1000, 1 thread, once: bilo's allocator peak vs torch's resident-memory peak,
   both above the start of the hypergradient. */
static void csv_peak_memory(dataset *ds, const char *script)
{
    bilo_set_num_threads(1);
    const double mib = (double)measure_bilo(ds, &csv_memory).peak / (1 << 20);
    char cmd[1600], key[64];
    snprintf(cmd, sizeof cmd,
             "OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 '%s' --configs '' --memory %s",
             script ? script : "", csv_memory.label);
    snprintf(key, sizeof key, "%s_peak_mib", csv_memory.label);
    const char *keys[1] = {key};
    double torch_mib = NAN;
    const bool ok = script && bench_peer_values(cmd, 1, keys, &torch_mib) && !isnan(torch_mib);
    const bench_stats b = {mib, mib, mib}, t = {torch_mib, torch_mib, torch_mib};
    bench_csv_row("logreg_itd_T1000_peak_memory", 1, "MiB", false, b, "PyTorch", ok ? &t : NULL);
}

int main(int argc, char **argv)
{
    if (bench_has_flag(argc, argv, "--csv")) {
        char script[1200], why[1400];
        const bool have_torch = torch_peer_script(argv[0], "torch_bilevel.py", script,
                                                  sizeof script, why, sizeof why);
        if (!have_torch) fprintf(stderr, "bench_bilevel: %s\n", why);
        dataset ds = make_dataset();
        csv_times(&ds, have_torch ? script : NULL, bench_has_flag(argc, argv, "--quick") ? 3 : CSV_MAX_ROUNDS);
        csv_peak_memory(&ds, have_torch ? script : NULL);
        free_dataset(&ds);
        return 0;
    }
    double start = now();
    bilo_set_num_threads(1);
    printf("bilo bilevel benchmark (kernels %s): logistic-regression hyperparameters, n = %d, "
           "d = %d, %d classes, f32, 1 thread\n", bilo_kernel_isa(), N, D, C);
    char script[1200], why[1400];
    bool have_torch = torch_peer_script(argv[0], "torch_bilevel.py", script, sizeof script, why,
                                        sizeof why);
    if (!have_torch) printf("%s\n", why);

    dataset ds = make_dataset();
    measured m[MAX_CONFIGS];
    double torch_s[MAX_CONFIGS];
    int n = MAX_CONFIGS - 1; /* T = 1000 joins below when time allows */
    for (int i = 0; i < n; i++) m[i] = measure_bilo(&ds, &configs[i]);
    const char *peer = have_torch ? script : NULL;
    run_torch(peer, 0, n, torch_s);

    double t100 = m[1].seconds + (isnan(torch_s[1]) ? 0 : torch_s[1]);
    double projected = now() - start + 10 * t100;
    bool long_run = projected < BUDGET_S;
    if (long_run) {
        m[n] = measure_bilo(&ds, &configs[n]);
        run_torch(peer, n, 1, torch_s);
        n++;
    }
    free_dataset(&ds);

    printf("seconds per hypergradient (best of repetitions), bilo peak MiB above baseline\n");
    printf("  %-12s %-28s %9s %10s %9s %11s\n", "config", "bilo options", "bilo s", "peak MiB",
           "torch s", "bilo/torch");
    for (int i = 0; i < n; i++) print_row(&configs[i], m[i], torch_s[i]);
    if (!long_run)
        printf("  itd_T1000 skipped for time: projected total %.0f s (10 x the T = 100 figures) "
               "exceeds the %.0f s budget\n", projected, BUDGET_S);
    printf("ITD peak memory growth per unrolled step: %.3f MiB (T = 10 -> 100)\n",
           ((double)m[1].peak - (double)m[0].peak) / 90 / (1 << 20));
    printf("total benchmark time %.1f s\n", now() - start);
    return 0;
}
