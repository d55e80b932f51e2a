/* Training-step speed of the nn layer, against PyTorch in the same run when it is installed.
 *
 * One step = forward, softmax cross-entropy, gradient of the loss w.r.t. all parameters
 * (bilo_grad) and an in-place Adam update (bilo_optim_step), f32, at 1 and 2 threads, for two
 * models: the MLP 784-256-256-10 (ReLU) at batch 256, and the 4-block CNN of few-shot learning
 * (bilo_nn_cnn4: conv3x3-BN-ReLU-maxpool2 x4, 64 channels, training-mode batch norm) on 28x28
 * inputs at batch 64. Each round times a block of steps per thread count for bilo, each
 * followed by one run of the torch peer for the same block, so the two share the machine's
 * slow drifts; a table gives the median, min and max over the rounds of ms per step. It also
 * prints bilo's calls into the system allocator during the timed steps: the scope-per-step
 * loop is meant to run from the allocator's cache (0).
 *
 * The peer is bench/peers/torch_nn.py, found through $BILO_SOURCE_DIR or relative to this
 * program (<build>/bench/ -> ../../bench/peers), run with /usr/bin/python3,
 * OMP_WAIT_POLICY=PASSIVE (torch's best setting on this class of machine, see peers.md) and
 * OPENBLAS_NUM_THREADS set to the thread count: Debian's torch does its GEMMs in OpenBLAS,
 * whose pool torch.set_num_threads does not control, so "1 thread" would otherwise use every
 * core. */
#include "bilo.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_ROUNDS = 7, MAX_THREADS = 2, N_LAYERS = 3, CNN_STATS = 8 };
enum { MLP_PARAMS = 2 * N_LAYERS, MAX_PARAMS = 18 };

/* One measured model: the CNN step costs ~30x the MLP's, so it runs fewer, shorter rounds to
   keep the whole benchmark near a minute. */
typedef struct {
    const char *name; /* also the peer's --model and its key prefix */
    int batch, rounds, steps, warmup;
} workload;

static const workload mlp_work = {"mlp", 256, 7, 20, 3};
static const workload cnn_work = {"cnn", 64, 3, 5, 2};


static void die_on_error(int ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "bench_nn: %s failed: %s\n", what, bilo_last_error());
    exit(1);
}

/* ---- bilo's training step ----------------------------------------------------------------- */

static const int64_t mlp_widths[N_LAYERS + 1] = {784, 256, 256, 10};
static const bilo_nn_mlp mlp_desc = {
    .widths = mlp_widths, .num_widths = N_LAYERS + 1, .act = BILO_MLP_RELU, .dtype = BILO_F32};

static const bilo_nn_cnn4 cnn_desc = {
    .height = 28, .width = 28, .hidden = 64, .n_classes = 10, .dtype = BILO_F32};

typedef struct {
    bool cnn;
    int n_params;
    bilo_tensor *x, *labels;
    bilo_tensor *params[MAX_PARAMS], *stats[CNN_STATS];
    bilo_optim *adam;
} trainer;

static trainer trainer_make(const workload *w)
{
    bilo_rng rng = bilo_rng_make(2, 0);
    trainer t = {.cnn = w == &cnn_work};
    if (t.cnn) {
        t.n_params = bilo_nn_cnn4_num_tensors(&cnn_desc);
        die_on_error(t.n_params == MAX_PARAMS && bilo_nn_cnn4_init(&cnn_desc, &rng, t.params) == 0 &&
                         bilo_nn_cnn4_init_stats(&cnn_desc, t.stats) == 0,
                     "bilo_nn_cnn4_init");
        t.x = bilo_randn(BILO_F32, BILO_SHAPE(w->batch, 1, 28, 28), &rng);
    } else {
        t.n_params = bilo_nn_mlp_num_tensors(&mlp_desc);
        die_on_error(t.n_params == MLP_PARAMS && bilo_nn_mlp_init(&mlp_desc, &rng, t.params) == 0,
                     "bilo_nn_mlp_init");
        t.x = bilo_randn(BILO_F32, BILO_SHAPE(w->batch, 784), &rng);
    }
    for (int i = 0; i < t.n_params; i++) bilo_set_requires_grad(t.params[i], true);
    t.labels = bilo_zeros(BILO_I64, BILO_SHAPE(w->batch));
    for (int64_t i = 0; i < w->batch; i++) bilo_set_flat(t.labels, i, (double)(i % 10));
    const bilo_optim_opts adam = {.kind = BILO_OPTIM_ADAM, .lr = 1e-3};
    t.adam = bilo_optim_new(&adam, t.params, t.n_params);
    die_on_error(t.x && t.labels && t.adam, "trainer setup");
    return t;
}

static void trainer_free(trainer *t)
{
    bilo_optim_free(t->adam);
    bilo_release(t->x);
    bilo_release(t->labels);
    for (int i = 0; i < t->n_params; i++) bilo_release(t->params[i]);
    for (int i = 0; t->cnn && i < CNN_STATS; i++) bilo_release(t->stats[i]);
}

static void train_step(trainer *t)
{
    bilo_scope_begin();
    bilo_tensor *logits = t->cnn ? bilo_nn_cnn4_forward(&cnn_desc, t->params, t->stats, t->x, true)
                                 : bilo_nn_mlp_forward(&mlp_desc, t->params, t->x);
    bilo_tensor *loss = bilo_nn_cross_entropy(logits, t->labels, BILO_REDUCE_MEAN);
    bilo_tensor *grads[MAX_PARAMS];
    die_on_error(bilo_grad(&loss, 1, NULL, t->params, t->n_params, grads, 0) == 0, "bilo_grad");
    die_on_error(bilo_optim_step(t->adam, grads) == 0, "bilo_optim_step");
    bilo_scope_end();
}

/* ms per step over one timed block; adds the block's system allocations to *allocs. */
static double time_block(trainer *t, const workload *w, int threads, uint64_t *allocs)
{
    bilo_set_num_threads(threads);
    for (int i = 0; i < w->warmup; i++) train_step(t);
    bilo_mem_stats before, after;
    bilo_mem_get_stats(&before);
    double t0 = now();
    for (int i = 0; i < w->steps; i++) train_step(t);
    double ms = (now() - t0) * 1e3 / w->steps;
    bilo_mem_get_stats(&after);
    *allocs += after.system_allocs - before.system_allocs;
    return ms;
}

/* ---- the torch peer ------------------------------------------------------------------------ */

/* The peer script's path, or false with the reason printed. */
static bool torch_script(const char *argv0, char *script, size_t size)
{
    char why[1400];
    if (torch_peer_script(argv0, "torch_nn.py", script, size, why, sizeof why)) return true;
    printf("%s\n", why);
    return false;
}

/* One peer block at the given thread count: *ms per step, or false (with the reason printed)
   when it failed. */
static bool torch_block(const char *script, const workload *w, int threads, double *ms)
{
    char cmd[1400], line[256], want[64], key[64];
    snprintf(cmd, sizeof cmd,
             "OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=%d /usr/bin/python3 '%s' --model %s "
             "--batch %d --steps %d --warmup %d --threads %d",
             threads, script, w->name, w->batch, w->steps, w->warmup, threads);
    snprintf(want, sizeof want, "%s_%dt_step_ms", w->name, threads);
    FILE *f = popen(cmd, "r");
    bool found = false;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%63s %lf", key, ms) == 2 && !strcmp(key, want)) found = true;
    int status = f ? pclose(f) : -1;
    if (status == 0 && found) return true;
    printf("torch: peer script failed (status %d%s)\n", status, found ? "" : ", no figure");
    return false;
}

/* ---- report -------------------------------------------------------------------------------- */

static void print_row(int threads, bench_stats bilo, const bench_stats *torch)
{
    printf("  %7d %8.2f %8.2f %8.2f", threads, bilo.med, bilo.min, bilo.max);
    if (torch)
        printf("   %8.2f %8.2f %8.2f   %10.2f\n", torch->med, torch->min, torch->max,
               bilo.med / torch->med);
    else
        printf("   %8s %8s %8s   %10s\n", "-", "-", "-", "-");
}

/* Interleaved bilo / torch rounds of one workload, then its table (or, with csv, its rows
   for bench/run.sh); script NULL: no torch. */
static void measure(const workload *w, const char *title, const char *script, bool csv)
{
    trainer t = trainer_make(w);
    double bilo_ms[MAX_THREADS][MAX_ROUNDS], torch_ms[MAX_THREADS][MAX_ROUNDS];
    bool have_torch = script != NULL;
    uint64_t allocs = 0;
    for (int r = 0; r < w->rounds; r++)
        for (int th = 1; th <= MAX_THREADS; th++) {
            bilo_ms[th - 1][r] = time_block(&t, w, th, &allocs);
            have_torch = have_torch && torch_block(script, w, th, &torch_ms[th - 1][r]);
        }
    trainer_free(&t);
    if (csv) {
        for (int th = 1; th <= MAX_THREADS; th++) {
            bench_stats torch = have_torch ? bench_summarize(torch_ms[th - 1], w->rounds)
                                           : (bench_stats){0};
            bench_csv_row("mlp784_relu_b256_train_step", th, "ms", false,
                          bench_summarize(bilo_ms[th - 1], w->rounds), "PyTorch",
                          have_torch ? &torch : NULL);
        }
        return;
    }

    printf("\n%s, batch %d: ms per training step (forward, cross-entropy, backward, Adam),\n"
           "median [min, max] of %d interleaved rounds of %d steps\n",
           title, w->batch, w->rounds, w->steps);
    printf("  %7s %8s %8s %8s   %8s %8s %8s   %10s\n", "threads", "bilo", "min", "max", "torch",
           "min", "max", "bilo/torch");
    for (int th = 1; th <= MAX_THREADS; th++) {
        bench_stats torch =
            have_torch ? bench_summarize(torch_ms[th - 1], w->rounds) : (bench_stats){0};
        print_row(th, bench_summarize(bilo_ms[th - 1], w->rounds), have_torch ? &torch : NULL);
    }
    int timed = w->rounds * MAX_THREADS * w->steps;
    printf("bilo system allocations per step in steady state: %.2f (%llu over %d timed steps)\n",
           (double)allocs / timed, (unsigned long long)allocs, timed);
}

int main(int argc, char **argv)
{
    char script[1200];
    if (bench_has_flag(argc, argv, "--csv")) { /* the MLP only, for bench/run.sh */
        char why[1400];
        const bool have_torch =
            torch_peer_script(argv[0], "torch_nn.py", script, sizeof script, why, sizeof why);
        if (!have_torch) fprintf(stderr, "bench_nn: %s\n", why);
        workload w = mlp_work;
        if (bench_has_flag(argc, argv, "--quick")) w.rounds = 3;
        measure(&w, "MLP", have_torch ? script : NULL, true);
        return 0;
    }
    printf("bilo nn benchmark (kernels %s), f32\n", bilo_kernel_isa());
    bool have_torch = torch_script(argv[0], script, sizeof script);
    const char *policy = getenv("OMP_WAIT_POLICY");
    printf("OMP_WAIT_POLICY for bilo: %s; torch runs with PASSIVE, torch.set_num_threads and "
           "OPENBLAS_NUM_THREADS\n",
           policy ? policy : "unset (OpenMP's default)");

    measure(&mlp_work, "MLP 784-256-256-10 ReLU", have_torch ? script : NULL, false);
    measure(&cnn_work, "4-block CNN (conv3x3-BN-ReLU-maxpool2 x4, 64 channels), 28x28",
            have_torch ? script : NULL, false);
    return 0;
}
