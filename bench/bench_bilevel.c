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
 * times T = 100, bilo and torch) keeps the whole benchmark under two minutes. */
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

int main(int argc, char **argv)
{
    (void)argc;
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
