/* Helpers shared by the benchmark programs: a clock and the lookup of PyTorch peers. */
#ifndef BILO_BENCH_UTIL_H
#define BILO_BENCH_UTIL_H

#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
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

#endif
