/* Assertions shared by the tests of differentiable functions (on top of tap.h). */
#ifndef BILO_TEST_CHECKS_H
#define BILO_TEST_CHECKS_H

#include "bilo.h"
#include "tap.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

/* Largest |t[i] - want[i]| over n elements (infinite when the sizes disagree). */
static inline double max_diff(bilo_tensor *t, const double *want, int64_t n)
{
    if (!t || bilo_numel(t) != n) return INFINITY;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs(bilo_get_flat(t, i) - want[i]));
    return worst;
}

/* gradcheck and gradgradcheck of fn at in[0..n), one TAP line each. */
static inline void check_derivatives(const char *name, bilo_fnN fn, bilo_tensor *const *in,
                                     int n, void *user)
{
    bilo_gradcheck_result r;
    int rc = bilo_gradcheck(fn, in, n, user, NULL, &r);
    tap_ok(rc == 0 && r.passed, "%s: gradcheck (max err %.3g)", name, r.max_abs_err);
    if (rc || !r.passed) tap_diag("%s", rc ? bilo_last_error() : r.message);
    rc = bilo_gradgradcheck(fn, in, n, user, NULL, &r);
    tap_ok(rc == 0 && r.passed, "%s: gradgradcheck (max err %.3g)", name, r.max_abs_err);
    if (rc || !r.passed) tap_diag("%s", rc ? bilo_last_error() : r.message);
}

/* The call failed with `code` and a message containing needle; clears the error. */
static inline void check_error(bool failed, int code, const char *needle, const char *name)
{
    bool pass = failed && bilo_errcode() == code && strstr(bilo_last_error(), needle);
    tap_ok(pass, "%s", name);
    if (!pass) tap_diag("code %d, message \"%s\"", bilo_errcode(), bilo_last_error());
    bilo_clear_error();
}

/* a·v = b by Gaussian elimination with partial pivoting, in plain doubles: a [n, n] and b [n]
   are overwritten, v is left in b. The tests' independent reference for linear solves. */
static inline void solve_in_place(double *a, double *b, int n)
{
    for (int j = 0; j < n; j++) {
        int p = j;
        for (int i = j + 1; i < n; i++)
            if (fabs(a[i * n + j]) > fabs(a[p * n + j])) p = i;
        for (int k = 0; k < n; k++) {
            double s = a[j * n + k];
            a[j * n + k] = a[p * n + k];
            a[p * n + k] = s;
        }
        double s = b[j];
        b[j] = b[p];
        b[p] = s;
        for (int i = j + 1; i < n; i++) {
            double m = a[i * n + j] / a[j * n + j];
            for (int k = j; k < n; k++) a[i * n + k] -= m * a[j * n + k];
            b[i] -= m * b[j];
        }
    }
    for (int i = n - 1; i >= 0; i--) {
        for (int k = i + 1; k < n; k++) b[i] -= a[i * n + k] * b[k];
        b[i] /= a[i * n + i];
    }
}

#endif
