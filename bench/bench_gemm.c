/* GEMM throughput of bilo's kernel next to OpenBLAS (cblas_sgemm / cblas_dgemm), measured in
   the same run.

   Shapes: square n = 32 .. 2048; the three products of an MLP layer 784 -> 256 at batch 256
   (forward X·Wᵀ, and the backward forms with a transposed left or right operand); the skinny
   products of a 10-class linear model on 5000 samples (X·W, Xᵀ·R) and the matrix-vector
   products X·w, Xᵀ·r.
   f32 and f64, 1 and 2 threads. bilo's figure is its GEMM kernel (bilo__kernels()->gemm_*,
   the code every matmul, conv and backward product runs, without the op's output
   allocation); the peer is bench/peers/openblas_gemm.c, a separate process so the two thread
   pools never spin against each other, run with the same thread count
   (openblas_set_num_threads) once per round between bilo's timed blocks. GFLOP/s = 2·m·n·k
   per call; median, min and max over the rounds.

   usage: bench_gemm [--quick] [--csv] [--only TEXT] [--peer-core NAME]
     --quick: fewer rounds, shorter blocks; --only: the workloads whose name contains TEXT;
     --peer-core: OPENBLAS_CORETYPE for the peer (e.g. Haswell: OpenBLAS's AVX2 kernels on a
     CPU where it would pick AVX-512 ones, the same instruction set as bilo's kernels) */
#include "bilo_tensor.h"
#include "kernels.h"
#include "tensor_impl.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <libgen.h>
#include <string.h>
#include <unistd.h>

enum { MAX_ROUNDS = 7, MAX_THREADS = 2 };

typedef struct {
    const char *name;
    int64_t m, n, k;
    bool ta, tb;
} shape;

static const shape shapes[] = {
    {"32", 32, 32, 32, false, false},
    {"64", 64, 64, 64, false, false},
    {"256", 256, 256, 256, false, false},
    {"512", 512, 512, 512, false, false},
    {"1024", 1024, 1024, 1024, false, false},
    {"2048", 2048, 2048, 2048, false, false},
    /* MLP layer 784 -> 256, batch 256: Y = X·Wᵀ, dX = dY·W, dW = dYᵀ·X */
    {"mlp_XWt_256x784x256", 256, 256, 784, false, true},
    {"mlp_GW_256x256x784", 256, 784, 256, false, false},
    {"mlp_GtX_256x256x784", 256, 784, 256, true, false},
    /* logistic regression, 5000 samples, 784 features, 10 classes */
    {"logreg_XW_5000x784x10", 5000, 10, 784, false, false},
    {"logreg_XtR_784x5000x10", 784, 10, 5000, true, false},
    {"gemv_Xtr_784x5000", 784, 1, 5000, true, false},
    {"gemv_Xw_5000x784", 5000, 1, 784, false, false},
};
enum { N_SHAPES = sizeof shapes / sizeof shapes[0] };

typedef struct {
    int rounds;
    double block_seconds;
    bool csv;
    const char *peer_core; /* OPENBLAS_CORETYPE for the peer, NULL: OpenBLAS's own choice */
    char peer_name[64];
} settings;

static void die(const char *what)
{
    fprintf(stderr, "bench_gemm: %s\n", what);
    exit(1);
}

/* The operands of one shape and dtype, filled like the peer's (2·frac(i·φ + phase) − 1). */
typedef struct {
    bilo_dtype dt;
    void *a, *b, *c;
} operands;

/* 64-byte aligned, as bilo's tensors are (and the peer's operands). */
static void *filled(bilo_dtype dt, int64_t n, double phase)
{
    const size_t bytes = (size_t)n * bilo_dtype_size(dt);
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) die("out of memory");
    for (int64_t i = 0; i < n; i++) {
        const double v = 2 * fmod((double)i * 0.6180339887 + phase, 1.0) - 1;
        if (dt == BILO_F32) ((float *)p)[i] = (float)v;
        else ((double *)p)[i] = v;
    }
    return p;
}

static operands operands_make(const shape *s, bilo_dtype dt)
{
    return (operands){.dt = dt, .a = filled(dt, s->m * s->k, 0.1),
                      .b = filled(dt, s->k * s->n, 0.7),
                      .c = filled(dt, s->m * s->n, 0.0)};
}

static void operands_free(operands *o)
{
    free(o->a);
    free(o->b);
    free(o->c);
}

static void bilo_call(const bilo_kernels *kern, const shape *s, const operands *o, int threads)
{
    const int64_t lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
    if (o->dt == BILO_F32)
        kern->gemm_f32(s->ta, s->tb, s->m, s->n, s->k, o->a, lda, o->b, ldb, o->c, s->n, false,
                       threads);
    else
        kern->gemm_f64(s->ta, s->tb, s->m, s->n, s->k, o->a, lda, o->b, ldb, o->c, s->n, false,
                       threads);
}

/* Seconds per call of bilo's kernel over a block of at least block_seconds (after a warm-up
   call), like the peer's loop. */
static double bilo_block(const shape *s, const operands *o, int threads, double block_seconds)
{
    const bilo_kernels *kern = bilo__kernels();
    threads = bilo__threads_for(s->m * s->n * s->k); /* what bilo_matmul passes */
    bilo_call(kern, s, o, threads);
    long calls = 0;
    const double t0 = now();
    do {
        bilo_call(kern, s, o, threads);
        calls++;
    } while (now() - t0 < block_seconds);
    return (now() - t0) / (double)calls;
}

/* Seconds per call of the peer, or a negative value when it did not answer. */
static double peer_block(const char *peer, const shape *s, bilo_dtype dt, int threads,
                         const settings *set)
{
    char cmd[1400], core[96] = "";
    if (set->peer_core) snprintf(core, sizeof core, "OPENBLAS_CORETYPE='%s' ", set->peer_core);
    snprintf(cmd, sizeof cmd, "%sOPENBLAS_NUM_THREADS=%d '%s' %s %lld %lld %lld %d %d %d %g",
             core, threads, peer, bilo_dtype_name(dt), (long long)s->m, (long long)s->n,
             (long long)s->k, s->ta, s->tb, threads, set->block_seconds);
    FILE *f = popen(cmd, "r");
    double seconds = -1;
    if (!f || fscanf(f, "%lf", &seconds) != 1) seconds = -1;
    if ((f ? pclose(f) : -1) != 0) seconds = -1;
    return seconds;
}

/* The peer program next to this one (both built in <build>/bench), or NULL. */
static const char *find_peer(const char *argv0, char *path, size_t size)
{
    char self[1024];
    snprintf(self, sizeof self, "%s", argv0);
    snprintf(path, size, "%s/openblas_gemm", dirname(self));
    return access(path, X_OK) == 0 ? path : NULL;
}

static void measure(const shape *s, bilo_dtype dt, int threads, const char *peer,
                    const settings *set)
{
    operands o = operands_make(s, dt);
    const double flops = 2.0 * (double)s->m * (double)s->n * (double)s->k;
    double ours[MAX_ROUNDS], theirs[MAX_ROUNDS];
    bool have_peer = peer != NULL;
    for (int r = 0; r < set->rounds; r++) {
        ours[r] = flops / bilo_block(s, &o, threads, set->block_seconds) * 1e-9;
        if (have_peer) {
            const double sec = peer_block(peer, s, dt, threads, set);
            have_peer = sec > 0;
            theirs[r] = flops / sec * 1e-9;
        }
    }
    operands_free(&o);
    const bench_stats b = bench_summarize(ours, set->rounds);
    const bench_stats p = have_peer ? bench_summarize(theirs, set->rounds) : (bench_stats){0};
    char workload[128];
    snprintf(workload, sizeof workload, "%s_%s", dt == BILO_F32 ? "sgemm" : "dgemm", s->name);
    if (set->csv) {
        bench_csv_row(workload, threads, "GFLOP/s", true, b, set->peer_name,
                      have_peer ? &p : NULL);
        return;
    }
    printf("%-30s %d %8.1f [%6.1f %6.1f]", workload, threads, b.med, b.min, b.max);
    if (have_peer)
        printf("  %8.1f [%6.1f %6.1f]  %5.2f\n", p.med, p.min, p.max, b.med / p.med);
    else
        printf("  %8s\n", "missing");
    fflush(stdout);
}

/* The value of option `name` ("--only X"), or NULL. */
static const char *option_value(int argc, char **argv, const char *name)
{
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return NULL;
}

int main(int argc, char **argv)
{
    const bool quick = bench_has_flag(argc, argv, "--quick");
    const char *only = option_value(argc, argv, "--only");
    settings set = {.rounds = quick ? 3 : 5, .block_seconds = quick ? 0.05 : 0.15,
                    .csv = bench_has_flag(argc, argv, "--csv"),
                    .peer_core = option_value(argc, argv, "--peer-core")};
    snprintf(set.peer_name, sizeof set.peer_name, "OpenBLAS%s%s", set.peer_core ? "-" : "",
             set.peer_core ? set.peer_core : "");
    char path[1100];
    const char *peer = find_peer(argv[0], path, sizeof path);
    if (!set.csv) {
        printf("# bilo gemm (kernels %s) vs OpenBLAS, GFLOP/s: median [min max] of %d "
               "interleaved rounds\n",
               bilo_kernel_isa(), set.rounds);
        printf("# %-28s th %8s %15s  %8s %15s  %5s\n", "workload", "bilo", "", "OpenBLAS", "",
               "ratio");
    }
    if (!peer)
        fprintf(stderr, "bench_gemm: OpenBLAS peer missing (%s not built: libopenblas-dev "
                        "was not found when the build was configured)\n", path);
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < N_SHAPES; i++)
            for (int threads = 1; threads <= MAX_THREADS; threads++) {
                char workload[128];
                snprintf(workload, sizeof workload, "%s_%s", d ? "dgemm" : "sgemm",
                         shapes[i].name);
                if (only && !strstr(workload, only)) continue;
                bilo_set_num_threads(threads);
                measure(&shapes[i], d ? BILO_F64 : BILO_F32, threads, peer, &set);
            }
    bilo_set_num_threads(0);
    return 0;
}
