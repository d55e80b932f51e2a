/* Kernel throughput through the public ops, next to plain C loops over libm measured in the
   same run, then GEMM through bilo_matmul.

   Elementwise lines: `op dtype n threads bilo_Gelem/s libm_Gelem/s ratio` for exp, tanh,
   add, mul and sum (all axes), f32 and f64, n = 1e3 .. 1e7, 1 and 2 threads. The libm loop
   (expf/exp, tanhf/tanh, +, *, a double accumulator) runs with the same thread count and the
   same parallel threshold as bilo, so the ratio isolates the kernels; bilo's figure includes
   the op's own cost (output allocation from the cache, dispatch). Each figure is the median
   of SAMPLES timed batches of about BATCH_ELEMS elements.
   GEMM lines: `gemm dtype n threads GFLOP/s` for square n = 256, 512, 1024.

   With --csv (and optionally --quick) it prints instead bench/run.sh's rows for exp, tanh and
   add on 1e6 f32 elements at 1 and 2 threads: bilo next to a raw loop over SLEEF's AVX2
   functions (the limit for bilo's kernels) and next to PyTorch (bench/peers/torch_kernels.py,
   one process per round), in interleaved rounds. */
#include "bilo_tensor.h"
#include "tensor_impl.h"
#include "bench_util.h"
#include "sleef_loops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define SAMPLES 7
#define BATCH_ELEMS 2000000.0
#define BATCH_FLOPS 1e9

typedef enum { OP_EXP, OP_TANH, OP_ADD, OP_MUL, OP_SUM, OP_COUNT } bench_op;
static const char *const op_names[OP_COUNT] = {"exp", "tanh", "add", "mul", "sum"};

static volatile double sink; /* keeps the libm sum alive */


static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static void die(const char *what)
{
    fprintf(stderr, "bench_kernels: %s: %s\n", what, bilo_last_error());
    exit(1);
}

/* ---- bilo side ----------------------------------------------------------------------- */

static void bilo_once(bench_op op, bilo_tensor *a, bilo_tensor *b)
{
    bilo_tensor *y = NULL;
    switch (op) {
    case OP_EXP: y = bilo_exp(a); break;
    case OP_TANH: y = bilo_tanh(a); break;
    case OP_ADD: y = bilo_add(a, b); break;
    case OP_MUL: y = bilo_mul(a, b); break;
    case OP_SUM: y = bilo_sum(a, BILO_ALL_AXES, false); break;
    case OP_COUNT: break;
    }
    if (!y) die(op_names[op]);
    bilo_release(y);
}

/* ---- libm side: f32 and f64 from one body -------------------------------------------- */

/* The loops split over threads where bilo's ops would (bilo__threads_for_elems' rule). */
static int libm_cost(bench_op op)
{
    return op == OP_EXP || op == OP_TANH ? BILO_COST_TRANSCENDENTAL : BILO_COST_MEMORY;
}

#define BILO_LIBM_LOOP_(T, S, EXP, TANH)                                                    \
    static void libm_##S(bench_op op, const T *a, const T *b, T *y, int64_t n, int threads) \
    {                                                                                       \
        const int nt = n * libm_cost(op) >= BILO_PAR_MIN_ELEM_WORK ? threads : 1;          \
        double s = 0;                                                                       \
        switch (op) {                                                                       \
        case OP_EXP:                                                                        \
            _Pragma("omp parallel for num_threads(nt) schedule(static)")                    \
            for (int64_t i = 0; i < n; i++) y[i] = EXP(a[i]);                               \
            break;                                                                          \
        case OP_TANH:                                                                       \
            _Pragma("omp parallel for num_threads(nt) schedule(static)")                    \
            for (int64_t i = 0; i < n; i++) y[i] = TANH(a[i]);                              \
            break;                                                                          \
        case OP_ADD:                                                                        \
            _Pragma("omp parallel for num_threads(nt) schedule(static)")                    \
            for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];                             \
            break;                                                                          \
        case OP_MUL:                                                                        \
            _Pragma("omp parallel for num_threads(nt) schedule(static)")                    \
            for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i];                             \
            break;                                                                          \
        case OP_SUM:                                                                        \
            _Pragma("omp parallel for num_threads(nt) schedule(static) reduction(+ : s)")   \
            for (int64_t i = 0; i < n; i++) s += a[i];                                      \
            sink = s;                                                                       \
            break;                                                                          \
        case OP_COUNT: break;                                                               \
        }                                                                                   \
    }
BILO_LIBM_LOOP_(float, f32, expf, tanhf)
BILO_LIBM_LOOP_(double, f64, exp, tanh)

static void libm_once(bench_op op, bilo_tensor *a, bilo_tensor *b, void *y, int threads)
{
    if (bilo_dtype_of(a) == BILO_F32)
        libm_f32(op, bilo_data(a), bilo_data(b), y, bilo_numel(a), threads);
    else
        libm_f64(op, bilo_data(a), bilo_data(b), y, bilo_numel(a), threads);
}

/* ---- measurement --------------------------------------------------------------------- */

/* Median elements per second of SAMPLES batches of `reps` calls (after one warm-up). */
static double elementwise_rate(bench_op op, bilo_tensor *a, bilo_tensor *b, void *libm_out,
                               int threads, bool use_libm)
{
    const int64_t n = bilo_numel(a);
    const int64_t reps = n >= BATCH_ELEMS ? 1 : (int64_t)(BATCH_ELEMS / (double)n);
    double rate[SAMPLES];
    for (int s = -1; s < SAMPLES; s++) {
        const double t0 = now();
        for (int64_t r = 0; r < reps; r++) {
            if (use_libm) libm_once(op, a, b, libm_out, threads);
            else bilo_once(op, a, b);
        }
        if (s >= 0) rate[s] = (double)(n * reps) / (now() - t0);
    }
    return median(rate, SAMPLES);
}

/* Values in [-5, 5): inside exp's and tanh's interesting range, no overflow. */
static bilo_tensor *input(bilo_dtype dt, int ndim, const int64_t *shape, double phase)
{
    bilo_tensor *t = bilo_empty(dt, ndim, shape);
    if (!t) die("bilo_empty");
    const int64_t n = bilo_numel(t);
    for (int64_t i = 0; i < n; i++) {
        const double v = 10 * fmod((double)i * 0.6180339887 + phase, 1.0) - 5;
        if (dt == BILO_F32) ((float *)bilo_data(t))[i] = (float)v;
        else ((double *)bilo_data(t))[i] = v;
    }
    return t;
}

static void bench_elementwise(void)
{
    printf("# op dtype n threads bilo_Gelem/s libm_Gelem/s ratio\n");
    for (int d = 0; d < 2; d++)
        for (int64_t n = 1000; n <= 10000000; n *= 10) {
            const bilo_dtype dt = d ? BILO_F64 : BILO_F32;
            bilo_tensor *a = input(dt, 1, &n, 0.1), *b = input(dt, 1, &n, 0.7);
            void *y = malloc((size_t)n * bilo_dtype_size(dt));
            if (!y) die("malloc");
            for (int op = 0; op < OP_COUNT; op++)
                for (int threads = 1; threads <= 2; threads++) {
                    bilo_set_num_threads(threads);
                    const double ours = elementwise_rate(op, a, b, y, threads, false);
                    const double libm = elementwise_rate(op, a, b, y, threads, true);
                    printf("%-4s %s %8lld %d %8.3f %8.3f %6.2f\n", op_names[op],
                           bilo_dtype_name(dt), (long long)n, threads, ours * 1e-9, libm * 1e-9,
                           ours / libm);
                    fflush(stdout);
                }
            free(y);
            bilo_release(a);
            bilo_release(b);
        }
}

static void bench_gemm(void)
{
    printf("# gemm dtype n threads GFLOP/s (bilo_matmul, square)\n");
    for (int d = 0; d < 2; d++)
        for (int64_t n = 256; n <= 1024; n *= 2) {
            const bilo_dtype dt = d ? BILO_F64 : BILO_F32;
            const int64_t shape[2] = {n, n};
            bilo_tensor *a = input(dt, 2, shape, 0.1), *b = input(dt, 2, shape, 0.7);
            const double flops = 2.0 * (double)n * (double)n * (double)n;
            const int64_t reps = flops >= BATCH_FLOPS ? 1 : (int64_t)(BATCH_FLOPS / flops);
            for (int threads = 1; threads <= 2; threads++) {
                bilo_set_num_threads(threads);
                double rate[SAMPLES];
                for (int s = -1; s < SAMPLES; s++) {
                    const double t0 = now();
                    for (int64_t r = 0; r < reps; r++) {
                        bilo_tensor *c = bilo_matmul(a, b);
                        if (!c) die("bilo_matmul");
                        bilo_release(c);
                    }
                    if (s >= 0) rate[s] = flops * (double)reps / (now() - t0);
                }
                printf("gemm %s %5lld %d %8.1f\n", bilo_dtype_name(dt), (long long)n, threads,
                       median(rate, SAMPLES) * 1e-9);
                fflush(stdout);
            }
            bilo_release(a);
            bilo_release(b);
        }
}

/* ---- --csv: exp, tanh, add at 1e6 f32 next to raw SLEEF loops and PyTorch ------------ */

#define CSV_N 1000000

/* Seconds per call of bilo's op (use_sleef false) or the raw loop over a block of at least
   `seconds`, after one warm-up call. */
static double block_seconds(bench_op op, bilo_tensor *a, bilo_tensor *b, float *y, int threads,
                            bool use_sleef, double seconds)
{
    const sleef_loop_op sop = op == OP_EXP ? SLEEF_LOOP_EXP : op == OP_TANH ? SLEEF_LOOP_TANH
                                                                            : SLEEF_LOOP_ADD;
    long calls = -1;
    double t0 = 0;
    do {
        if (calls == 0) t0 = now();
        if (use_sleef) sleef_loop_f32(sop, bilo_data(a), bilo_data(b), y, CSV_N, threads);
        else bilo_once(op, a, b);
        calls++;
    } while (calls < 1 || now() - t0 < seconds);
    return (now() - t0) / (double)calls;
}

enum { CSV_OPS = 3, CSV_CONFIGS = 2 * CSV_OPS };
static const bench_op csv_ops[CSV_OPS] = {OP_EXP, OP_TANH, OP_ADD};

/* Rounds of: bilo and the SLEEF loop on every (op, threads), then one torch process for all
   of them. Rates in Gelem/s. */
static void csv_elementwise(const char *argv0, bool quick)
{
    const int rounds = quick ? 3 : 5;
    const double seconds = quick ? 0.05 : 0.15;
    char script[1200], why[1400], cmd[1600];
    const bool have_torch =
        torch_peer_script(argv0, "torch_kernels.py", script, sizeof script, why, sizeof why);
    if (!have_torch) fprintf(stderr, "bench_kernels: %s\n", why);
    snprintf(cmd, sizeof cmd,
             "OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 '%s' --ops exp,tanh,add --threads 1,2 "
             "--n %d --seconds %g", script, CSV_N, seconds);
    char keys[CSV_CONFIGS][32];
    const char *key_list[CSV_CONFIGS];
    for (int c = 0; c < CSV_CONFIGS; c++) {
        snprintf(keys[c], sizeof keys[c], "%s_%dt_seconds", op_names[csv_ops[c / 2]], c % 2 + 1);
        key_list[c] = keys[c];
    }
    const int64_t n = CSV_N;
    bilo_tensor *a = input(BILO_F32, 1, &n, 0.1), *b = input(BILO_F32, 1, &n, 0.7);
    float *y = malloc(CSV_N * sizeof *y);
    if (!y) die("malloc");
    double ours[CSV_CONFIGS][SAMPLES], sleef[CSV_CONFIGS][SAMPLES], torch[CSV_CONFIGS][SAMPLES];
    bool torch_ok = have_torch;
    for (int r = 0; r < rounds; r++) {
        for (int c = 0; c < CSV_CONFIGS; c++) {
            const int threads = c % 2 + 1;
            bilo_set_num_threads(threads);
            ours[c][r] = 1e-9 * CSV_N / block_seconds(csv_ops[c / 2], a, b, y, threads, false,
                                                      seconds);
            sleef[c][r] = 1e-9 * CSV_N / block_seconds(csv_ops[c / 2], a, b, y, threads, true,
                                                       seconds);
        }
        double sec[CSV_CONFIGS];
        torch_ok = torch_ok && bench_peer_values(cmd, CSV_CONFIGS, key_list, sec);
        for (int c = 0; c < CSV_CONFIGS; c++) {
            torch_ok = torch_ok && sec[c] > 0;
            torch[c][r] = torch_ok ? 1e-9 * CSV_N / sec[c] : 0;
        }
    }
    if (have_torch && !torch_ok) fprintf(stderr, "bench_kernels: torch peer failed\n");
    for (int c = 0; c < CSV_CONFIGS; c++) {
        char workload[64];
        snprintf(workload, sizeof workload, "%s_f32_1e6", op_names[csv_ops[c / 2]]);
        const bench_stats b_st = bench_summarize(ours[c], rounds);
        const bench_stats s_st = bench_summarize(sleef[c], rounds);
        const bench_stats t_st = torch_ok ? bench_summarize(torch[c], rounds) : (bench_stats){0};
        bench_csv_row(workload, c % 2 + 1, "Gelem/s", true, b_st, "SLEEF loop", &s_st);
        bench_csv_row(workload, c % 2 + 1, "Gelem/s", true, b_st, "PyTorch",
                      torch_ok ? &t_st : NULL);
    }
    free(y);
    bilo_release(a);
    bilo_release(b);
    bilo_set_num_threads(0);
}

int main(int argc, char **argv)
{
    if (bench_has_flag(argc, argv, "--csv")) {
        if (strcmp(bilo_kernel_isa(), "scalar") == 0) {
            fprintf(stderr, "bench_kernels: the SLEEF AVX2 loops need an AVX2 CPU\n");
            return 1;
        }
        csv_elementwise(argv[0], bench_has_flag(argc, argv, "--quick"));
        return 0;
    }
    printf("# bilo kernels: %s\n", bilo_kernel_isa());
    const double t0 = now();
    bench_elementwise();
    bench_gemm();
    bilo_set_num_threads(0);
    printf("# total %.1f s\n", now() - t0);
    return 0;
}
