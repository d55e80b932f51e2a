/* Minimal TAP producer for bilo's tests: one "ok N - name" line per checked case. Values are
   printed on failure so a log shows what was compared. Header-only, used by tests alone. */
#ifndef BILO_TAP_H
#define BILO_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int tap_count_;
static int tap_failed_;

static inline int tap_ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int tap_ok(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%sok %d - ", cond ? "" : "not ", ++tap_count_);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (!cond) tap_failed_++;
    fflush(stdout);
    return cond;
}

/* |got - want| <= atol + rtol*|want|; NaN never passes unless both are NaN. */
static inline int tap_close(double got, double want, double atol, double rtol, const char *name)
{
    int pass = (isnan(got) && isnan(want)) || fabs(got - want) <= atol + rtol * fabs(want);
    tap_ok(pass, "%s", name);
    if (!pass) printf("#   got %.17g, want %.17g (atol %g, rtol %g)\n", got, want, atol, rtol);
    return pass;
}

static inline void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void tap_diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("# ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

/* Print the plan (at the end: counts need not be known up front) and exit status. */
static inline int tap_done(void)
{
    printf("1..%d\n", tap_count_);
    return tap_failed_ ? 1 : 0;
}

#endif
