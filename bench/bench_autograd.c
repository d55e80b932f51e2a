/* Autograd overhead and double-backprop speed, against PyTorch in the same run when it is
   installed.
 *
 *  1. A chain of 1000 elementwise ops (mul_scalar, add_scalar, tanh in turn) on 1 and 16
 *     f32 elements: ns per op without grad, with recording, and forward + backward — the
 *     per-node cost that dominates unrolled bilevel graphs of small tensors.
 *  2. An MLP 784-256-256-10 (tanh, softmax cross-entropy), batch 256, f32: ms per gradient
 *     of the loss w.r.t. all six parameters, and per Hessian-vector product (double
 *     backprop), forward pass included, at 1 and 2 threads.
 *
 * The peer is bench/peers/torch_autograd.py, found through $BILO_SOURCE_DIR or relative to
 * this program (<build>/bench/ -> ../../bench/peers), run with /usr/bin/python3 and
 * OMP_WAIT_POLICY=PASSIVE (torch's best setting on this class of machine, see peers.md); the
 * script sets torch's and its OpenBLAS pool's thread counts alike (torch_common.py).
 * With --csv [--quick] it prints bench/run.sh's rows instead: the 16-element chain and the
 * MLP gradient / HVP at 1 and 2 threads, in rounds of bilo then one torch process. With --chain
 * it prints bilo's chain table alone (no torch, no MLP). */
#include "bilo.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CHAIN_OPS = 1000, CHAIN_REPS = 31, MLP_REPS = 11, BATCH = 256, MAX_ROUNDS = 5 };


static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static void die_on_error(int ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "bench_autograd: %s failed: %s\n", what, bilo_last_error());
    exit(1);
}

/* ---- 1. chain of elementwise ops ---------------------------------------------------------- */

typedef enum { NO_GRAD, RECORD, FORWARD_BACKWARD } chain_mode;

static bilo_tensor *chain_forward(bilo_tensor *x)
{
    bilo_tensor *y = x;
    for (int i = 0; i < CHAIN_OPS; i++) {
        switch (i % 3) {
        case 0: y = bilo_mul_scalar(y, 0.999); break;
        case 1: y = bilo_add_scalar(y, 0.001); break;
        default: y = bilo_tanh(y); break;
        }
    }
    return y;
}

/* Median ns per op of one chain, each repetition inside its own scope. */
static double bench_chain(int64_t numel, chain_mode mode)
{
    bilo_rng rng = bilo_rng_make(1, 0);
    bilo_tensor *x = bilo_randn(BILO_F32, 1, &numel, &rng);
    bilo_set_requires_grad(x, mode != NO_GRAD);
    double t[CHAIN_REPS];
    for (int r = 0; r < CHAIN_REPS; r++) {
        double t0 = now();
        bilo_scope_begin();
        bilo_tensor *y = chain_forward(x);
        if (mode == FORWARD_BACKWARD) {
            bilo_tensor *loss = bilo_sum(y, BILO_ALL_AXES, false), *g = NULL;
            die_on_error(bilo_grad(&loss, 1, NULL, &x, 1, &g, 0) == 0, "chain backward");
        }
        die_on_error(y != NULL, "chain forward");
        bilo_scope_end();
        t[r] = (now() - t0) * 1e9 / CHAIN_OPS;
    }
    bilo_release(x);
    return median(t, CHAIN_REPS);
}

/* ---- 2. MLP -------------------------------------------------------------------------------- */

enum { N_PARAMS = 6 };

typedef struct {
    bilo_tensor *X, *onehot;
    bilo_tensor *p[N_PARAMS]; /* W1 [784,256], b1, W2 [256,256], b2, W3 [256,10], b3 */
    bilo_tensor *v[N_PARAMS]; /* HVP direction */
} mlp;

static bilo_tensor *param(int ndim, const int64_t *shape, double scale, bilo_rng *rng)
{
    bilo_tensor *t = bilo_randn(BILO_F32, ndim, shape, rng);
    bilo_scale_(t, scale);
    return t;
}

static mlp mlp_make(void)
{
    bilo_rng rng = bilo_rng_make(2, 0);
    mlp m;
    m.X = bilo_randn(BILO_F32, BILO_SHAPE(BATCH, 784), &rng);
    bilo_tensor *labels = bilo_zeros(BILO_I64, BILO_SHAPE(BATCH));
    for (int64_t i = 0; i < BATCH; i++) bilo_set_flat(labels, i, (double)(i % 10));
    m.onehot = bilo_one_hot(labels, 10, BILO_F32);
    bilo_release(labels);
    const int64_t dims[4] = {784, 256, 256, 10};
    for (int l = 0; l < 3; l++) {
        m.p[2 * l] = param(BILO_SHAPE(dims[l], dims[l + 1]), 1.0 / sqrt((double)dims[l]), &rng);
        m.p[2 * l + 1] = param(1, &dims[l + 1], 0.1, &rng);
    }
    for (int i = 0; i < N_PARAMS; i++) {
        bilo_set_requires_grad(m.p[i], true);
        m.v[i] = bilo_randn(BILO_F32, bilo_ndim(m.p[i]), bilo_shape(m.p[i]), &rng);
    }
    return m;
}

static void mlp_free(mlp *m)
{
    bilo_release(m->X);
    bilo_release(m->onehot);
    for (int i = 0; i < N_PARAMS; i++) {
        bilo_release(m->p[i]);
        bilo_release(m->v[i]);
    }
}

static bilo_tensor *mlp_loss(const mlp *m)
{
    bilo_tensor *h = m->X;
    for (int l = 0; l < 3; l++)
        h = bilo_nn_linear_act(h, m->p[2 * l], m->p[2 * l + 1],
                               l < 2 ? BILO_ACT_TANH : BILO_ACT_NONE);
    bilo_tensor *picked = bilo_sum(bilo_mul(m->onehot, bilo_log_softmax(h, 1)), 1, false);
    return bilo_neg(bilo_mean(picked, BILO_ALL_AXES, false));
}

/* Median ms of one gradient (hvp false) or one HVP, forward included. */
static double bench_mlp(const mlp *m, bool hvp)
{
    double t[MLP_REPS];
    bilo_tensor *out[N_PARAMS];
    for (int r = 0; r < MLP_REPS; r++) {
        double t0 = now();
        bilo_scope_begin();
        bilo_tensor *loss = mlp_loss(m);
        int rc = hvp ? bilo_hvp(loss, m->p, N_PARAMS, m->v, out, 0)
                     : bilo_grad(&loss, 1, NULL, m->p, N_PARAMS, out, 0);
        die_on_error(rc == 0, hvp ? "mlp hvp" : "mlp grad");
        bilo_scope_end();
        t[r] = (now() - t0) * 1e3;
    }
    return median(t, MLP_REPS);
}

/* ---- the torch peer ------------------------------------------------------------------------ */

typedef struct {
    char key[64];
    double value;
} peer_figure;

typedef struct {
    peer_figure fig[32];
    int n;
    char status[1400]; /* empty when torch ran */
} peer_results;

static double peer_get(const peer_results *p, const char *key)
{
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->fig[i].key, key)) return p->fig[i].value;
    return NAN;
}

static peer_results run_torch(const char *argv0)
{
    peer_results p = {.n = 0};
    char script[1200], cmd[1400];
    if (!torch_peer_script(argv0, "torch_autograd.py", script, sizeof script, p.status,
                           sizeof p.status))
        return p;
    snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 '%s' --ops %d --batch %d",
             script, CHAIN_OPS, BATCH);
    FILE *f = popen(cmd, "r");
    char line[256];
    while (f && fgets(line, sizeof line, f) && p.n < 32)
        if (sscanf(line, "%63s %lf", p.fig[p.n].key, &p.fig[p.n].value) == 2) p.n++;
    int status = f ? pclose(f) : -1;
    if (status != 0 || p.n == 0)
        snprintf(p.status, sizeof p.status, "torch: peer script failed (status %d)", status);
    return p;
}

static void print_ratio(double bilo, double torch)
{
    if (isnan(torch))
        printf("  %10s %10s\n", "-", "-");
    else
        printf("  %10.1f %10.2f\n", torch, bilo / torch);
}

/* ---- --csv: interleaved rounds for bench/run.sh ------------------------------------------- */

enum { CSV_CONFIGS = 5 }; /* chain 16, then (grad, hvp) at 1 and 2 threads */

/* bilo's figure of config c: ns per op of the 16-element chain, or ms per MLP grad / HVP. */
static double csv_bilo(const mlp *m, int c)
{
    if (c == 0) {
        bilo_set_num_threads(1);
        return bench_chain(16, FORWARD_BACKWARD);
    }
    bilo_set_num_threads((c - 1) / 2 + 1);
    return bench_mlp(m, (c - 1) % 2 == 1);
}

static void csv_rounds(const char *argv0, bool quick)
{
    static const char *const keys[CSV_CONFIGS] = {"chain_16_fwdbwd_ns", "mlp_1t_grad_ms",
                                                  "mlp_1t_hvp_ms", "mlp_2t_grad_ms",
                                                  "mlp_2t_hvp_ms"};
    static const char *const names[CSV_CONFIGS] = {"chain1000_16elem_fwd+bwd_per_op",
                                                   "mlp784_tanh_b256_grad", "mlp784_tanh_b256_hvp",
                                                   "mlp784_tanh_b256_grad", "mlp784_tanh_b256_hvp"};
    const int rounds = quick ? 3 : 5;
    char script[1200], why[1400], cmd[1600];
    bool torch_ok = torch_peer_script(argv0, "torch_autograd.py", script, sizeof script, why,
                                      sizeof why);
    if (!torch_ok) fprintf(stderr, "bench_autograd: %s\n", why);
    snprintf(cmd, sizeof cmd,
             "OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 '%s' --ops %d --batch %d --sizes 16 "
             "--threads 1,2", script, CHAIN_OPS, BATCH);
    mlp m = mlp_make();
    double ours[CSV_CONFIGS][MAX_ROUNDS], torch[CSV_CONFIGS][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        for (int c = 0; c < CSV_CONFIGS; c++) ours[c][r] = csv_bilo(&m, c);
        double v[CSV_CONFIGS] = {0};
        torch_ok = torch_ok && bench_peer_values(cmd, CSV_CONFIGS, keys, v);
        for (int c = 0; c < CSV_CONFIGS; c++) {
            torch_ok = torch_ok && !isnan(v[c]);
            torch[c][r] = v[c];
        }
    }
    mlp_free(&m);
    bilo_set_num_threads(0);
    for (int c = 0; c < CSV_CONFIGS; c++) {
        const bench_stats t = torch_ok ? bench_summarize(torch[c], rounds) : (bench_stats){0};
        bench_csv_row(names[c], c == 0 ? 1 : (c - 1) / 2 + 1, c == 0 ? "ns" : "ms", false,
                      bench_summarize(ours[c], rounds), "PyTorch", torch_ok ? &t : NULL);
    }
}

/* The chain table: ns per op at 1 and 16 elements, with torch's figure where it ran. */
static void print_chain_table(const peer_results *torch)
{
    printf("\nchain of %d elementwise ops (mul_scalar, add_scalar, tanh), ns per op, median of %d\n",
           CHAIN_OPS, CHAIN_REPS);
    printf("  %5s %10s %10s %10s  %10s %10s\n", "numel", "no grad", "recording", "fwd+bwd",
           "torch f+b", "bilo/torch");
    bilo_set_num_threads(1);
    const int64_t sizes[2] = {1, 16};
    for (int s = 0; s < 2; s++) {
        double fb = bench_chain(sizes[s], FORWARD_BACKWARD);
        printf("  %5lld %10.0f %10.0f %10.0f", (long long)sizes[s], bench_chain(sizes[s], NO_GRAD),
               bench_chain(sizes[s], RECORD), fb);
        char key[64];
        snprintf(key, sizeof key, "chain_%lld_fwdbwd_ns", (long long)sizes[s]);
        print_ratio(fb, peer_get(torch, key));
    }
}

int main(int argc, char **argv)
{
    if (bench_has_flag(argc, argv, "--csv")) {
        csv_rounds(argv[0], bench_has_flag(argc, argv, "--quick"));
        return 0;
    }
    printf("bilo autograd benchmark (kernels %s), f32\n", bilo_kernel_isa());
    if (bench_has_flag(argc, argv, "--chain")) { /* bilo's chain alone: quick to repeat */
        print_chain_table(&(peer_results){.n = 0});
        return 0;
    }
    peer_results torch = run_torch(argv[0]);
    if (torch.status[0]) printf("%s\n", torch.status);
    const char *policy = getenv("OMP_WAIT_POLICY");
    printf("OMP_WAIT_POLICY for bilo: %s; torch runs with PASSIVE and torch.set_num_threads\n",
           policy ? policy : "unset (OpenMP's default)");
    print_chain_table(&torch);

    printf("\nMLP 784-256-256-10 tanh, batch %d: ms per gradient / per HVP (forward included), "
           "median of %d\n", BATCH, MLP_REPS);
    printf("  %7s %5s %10s  %10s %10s\n", "threads", "what", "bilo ms", "torch ms", "bilo/torch");
    mlp m = mlp_make();
    for (int threads = 1; threads <= 2; threads++) {
        bilo_set_num_threads(threads);
        for (int hvp = 0; hvp <= 1; hvp++) {
            double ms = bench_mlp(&m, hvp);
            printf("  %7d %5s %10.2f", threads, hvp ? "hvp" : "grad", ms);
            char key[64];
            snprintf(key, sizeof key, "mlp_%dt_%s_ms", threads, hvp ? "hvp" : "grad");
            print_ratio(ms, peer_get(&torch, key));
        }
    }
    mlp_free(&m);
    return 0;
}
