/* Helpers shared by the benchmark programs: a clock, the lookup of peers, summaries of
   repeated measurements and the machine-readable `csv,` lines that bench/run.sh collects. */
#ifndef BILO_BENCH_UTIL_H
#define BILO_BENCH_UTIL_H

#include <libgen.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Find bench/peers/<script> under $BILO_SOURCE_DIR, else relative to the benchmark binary
   (build/bench/NAME). On failure, why holds a one-line reason ("torch: missing ..."). */
static inline bool torch_peer_script(const char *argv0, const char *script, char *path,
                                     size_t size, char *why, size_t why_size)
{
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
        snprintf(why, why_size, "torch: missing (/usr/bin/python3 cannot import torch)");
        return false;
    }
    const char *src = getenv("BILO_SOURCE_DIR");
    if (src) {
        snprintf(path, size, "%s/bench/peers/%s", src, script);
    } else {
        char self[1024];
        snprintf(self, sizeof self, "%s", argv0);
        snprintf(path, size, "%s/../../bench/peers/%s", dirname(self), script);
    }
    if (access(path, R_OK) == 0) return true;
    snprintf(why, why_size, "torch: peer script missing (looked for %s; set BILO_SOURCE_DIR)",
             path);
    return false;
}

/* Runs a peer command that prints `key value` lines and reads the values of keys[0..n)
   into values[] (NAN for a key it did not print). False when the command failed. */
static inline bool bench_peer_values(const char *cmd, int n, const char *const *keys,
                                     double *values)
{
    for (int i = 0; i < n; i++) values[i] = NAN;
    FILE *f = popen(cmd, "r");
    char line[256], k[128];
    double v;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%127s %lf", k, &v) == 2)
            for (int i = 0; i < n; i++)
                if (!strcmp(k, keys[i])) values[i] = v;
    return (f ? pclose(f) : -1) == 0;
}

/* Median, min and max of n repeated measurements. */
typedef struct {
    double med, min, max;
} bench_stats;

static inline int bench_cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v in place. */
static inline bench_stats bench_summarize(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return (bench_stats){.med = v[n / 2], .min = v[0], .max = v[n - 1]};
}

/* True when one of the arguments is `flag` ("--csv": machine-readable rows for bench/run.sh,
   "--quick": fewer and shorter rounds). */
static inline bool bench_has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], flag)) return true;
    return false;
}

/* One result row for bench/run.sh:
     csv,WORKLOAD,THREADS,UNIT,BILO_MED,BILO_MIN,BILO_MAX,PEER,PEER_MED,PEER_MIN,PEER_MAX,RATIO
   RATIO > 1 means bilo is better: bilo/peer for rates (higher_is_better), peer/bilo for
   times and sizes. peer_stats NULL: the peer is missing, its fields say so. */
static inline void bench_csv_row(const char *workload, int threads, const char *unit,
                                 bool higher_is_better, bench_stats bilo, const char *peer,
                                 const bench_stats *p)
{
    printf("csv,%s,%d,%s,%.6g,%.6g,%.6g,%s,", workload, threads, unit, bilo.med, bilo.min,
           bilo.max, peer);
    if (p)
        printf("%.6g,%.6g,%.6g,%.3f\n", p->med, p->min, p->max,
               higher_is_better ? bilo.med / p->med : p->med / bilo.med);
    else
        printf("missing,,,missing\n");
    fflush(stdout);
}

#endif
