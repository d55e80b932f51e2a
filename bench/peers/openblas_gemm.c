/* OpenBLAS peer of bench_gemm: times cblas_sgemm / cblas_dgemm on one shape and prints one
   line `seconds_per_call`. Runs as its own process so OpenBLAS's thread pool and bilo's
   OpenMP workers never spin against each other; bench_gemm calls it once per round,
   between its own timed blocks.

   usage: openblas_gemm f32|f64 M N K TA TB THREADS MIN_SECONDS
   computes C (M×N) = op(A)·op(B) with op(A) M×K, op(B) K×N, row-major, TA/TB 0 or 1, on
   THREADS threads (openblas_set_num_threads), repeating the call until MIN_SECONDS have
   passed (after one warm-up call). The operands hold the same values as bench_gemm's. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void openblas_set_num_threads(int num_threads);

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Values in [-1, 1) from a fixed recurrence: no denormals, no overflow. */
static void fill(double *v, size_t n, double phase)
{
    for (size_t i = 0; i < n; i++) v[i] = 2 * fmod((double)i * 0.6180339887 + phase, 1.0) - 1;
}

int main(int argc, char **argv)
{
    if (argc != 9 || (strcmp(argv[1], "f32") != 0 && strcmp(argv[1], "f64") != 0)) {
        fprintf(stderr, "usage: %s f32|f64 M N K TA TB THREADS MIN_SECONDS\n", argv[0]);
        return 2;
    }
    const int f32 = strcmp(argv[1], "f32") == 0;
    const int m = atoi(argv[2]), n = atoi(argv[3]), k = atoi(argv[4]);
    const int ta = atoi(argv[5]), tb = atoi(argv[6]), threads = atoi(argv[7]);
    const double min_seconds = atof(argv[8]);
    if (m < 1 || n < 1 || k < 1 || threads < 1) {
        fprintf(stderr, "openblas_gemm: bad sizes or thread count\n");
        return 2;
    }
    openblas_set_num_threads(threads);
    const size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
    double *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b);
    /* 64-byte aligned, as bench_gemm's operands and bilo's tensors are */
    void *A = aligned_alloc(64, (na * 8 + 63) / 64 * 64);
    void *B = aligned_alloc(64, (nb * 8 + 63) / 64 * 64);
    void *C = aligned_alloc(64, (nc * 8 + 63) / 64 * 64);
    if (!a || !b || !A || !B || !C) {
        fprintf(stderr, "openblas_gemm: out of memory\n");
        return 1;
    }
    fill(a, na, 0.1);
    fill(b, nb, 0.7);
    for (size_t i = 0; i < na; i++) {
        if (f32) ((float *)A)[i] = (float)a[i];
        else ((double *)A)[i] = a[i];
    }
    for (size_t i = 0; i < nb; i++) {
        if (f32) ((float *)B)[i] = (float)b[i];
        else ((double *)B)[i] = b[i];
    }
    const enum CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans;
    const enum CBLAS_TRANSPOSE opb = tb ? CblasTrans : CblasNoTrans;
    const int lda = ta ? m : k, ldb = tb ? k : n;
    long calls = 0;
    double t0 = 0;
    for (long i = -1;; i++) {
        if (i == 0) t0 = now();
        if (f32)
            cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, 1.0f, A, lda, B, ldb, 0.0f, C, n);
        else
            cblas_dgemm(CblasRowMajor, opa, opb, m, n, k, 1.0, A, lda, B, ldb, 0.0, C, n);
        if (i >= 0) calls++;
        if (i >= 0 && now() - t0 >= min_seconds) break;
    }
    printf("%.9g\n", (now() - t0) / (double)calls);
    free(a);
    free(b);
    free(A);
    free(B);
    free(C);
    return 0;
}
