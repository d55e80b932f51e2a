/* Parallel thresholds: an elementwise op, copy or reduction splits over threads from a size
   set by its per-element cost (BILO_PAR_MIN_ELEM_WORK / BILO_COST_*, tensor_impl.h). Just
   below, at and above each threshold the result must have the same bits at 1 and 2 threads,
   and a value checked against a closed form shows the pass ran. */
#include "bilo.h"
#include "tap.h"
#include "tensor_impl.h"

#include <math.h>
#include <string.h>

static bilo_rng rng;

typedef bilo_tensor *(*op_fn)(bilo_tensor *x);

static bool same_bits(bilo_tensor *a, bilo_tensor *b)
{
    if (!a || !b || bilo_dtype_of(a) != bilo_dtype_of(b) || bilo_numel(a) != bilo_numel(b))
        return false;
    size_t bytes = (size_t)bilo_numel(a) * bilo_dtype_size(bilo_dtype_of(a));
    return memcmp(bilo_data(a), bilo_data(b), bytes) == 0;
}

/* op(x) at 1 and at 2 threads, bit for bit; the 1-thread result is returned (owned by the
   caller's scope). */
static bilo_tensor *check_threads(const char *what, op_fn op, bilo_tensor *x)
{
    bilo_set_num_threads(1);
    bilo_tensor *one = op(x);
    bilo_set_num_threads(2);
    bilo_tensor *two = op(x);
    bilo_set_num_threads(0);
    tap_ok(same_bits(one, two), "%s of %lld elements: same bits at 1 and 2 threads", what,
           (long long)bilo_numel(x));
    return one;
}

/* Sizes around the threshold of a pass of the given cost, and well above it. */
static int64_t size_near(int cost, int which)
{
    const int64_t t = BILO_PAR_MIN_ELEM_WORK / cost;
    const int64_t sizes[4] = {t - 1, t, t + 1, 2 * t + 7};
    return sizes[which];
}

static bilo_tensor *positive(int64_t n)
{
    return bilo_add_scalar(bilo_abs(bilo_randn(BILO_F32, 1, &n, &rng)), 0.1);
}

static bilo_tensor *relu(bilo_tensor *x) { return bilo_relu(x); }
static bilo_tensor *exp_(bilo_tensor *x) { return bilo_exp(x); }
static bilo_tensor *erf_(bilo_tensor *x) { return bilo_erf(x); }
static bilo_tensor *pow_1_5(bilo_tensor *x) { return bilo_pow_scalar(x, 1.5); }
static bilo_tensor *x_pow_x(bilo_tensor *x) { return bilo_pow(x, x); }
static bilo_tensor *x_plus_x(bilo_tensor *x) { return bilo_add(x, x); }
static bilo_tensor *sum_all(bilo_tensor *x) { return bilo_sum(x, BILO_ALL_AXES, false); }
static bilo_tensor *max_all(bilo_tensor *x) { return bilo_max(x, 0, false); }
static bilo_tensor *argmax_all(bilo_tensor *x) { return bilo_argmax(x, 0, false); }
static bilo_tensor *logsumexp_all(bilo_tensor *x) { return bilo_logsumexp(x, 0, false); }
static bilo_tensor *to_f64(bilo_tensor *x) { return bilo_cast(x, BILO_F64); }

static void test_unary_and_binary(void)
{
    for (int which = 0; which < 4; which++) {
        bilo_scope_begin();
        int64_t n = size_near(BILO_COST_MEMORY, which);
        bilo_tensor *x = bilo_randn(BILO_F32, 1, &n, &rng);
        bilo_tensor *r = check_threads("relu", relu, x);
        tap_ok(bilo_get_flat(r, n - 1) == fmax(bilo_get_flat(x, n - 1), 0.0), "relu's last element");
        bilo_tensor *s = check_threads("x + x", x_plus_x, x);
        tap_ok(bilo_get_flat(s, n / 2) == 2 * bilo_get_flat(x, n / 2), "x + x in the middle");
        check_threads("cast to f64", to_f64, x);

        n = size_near(BILO_COST_TRANSCENDENTAL, which);
        x = bilo_randn(BILO_F32, 1, &n, &rng);
        bilo_tensor *e = check_threads("exp", exp_, x);
        tap_ok(fabs(bilo_get_flat(e, n - 1) / exp(bilo_get_flat(x, n - 1)) - 1) < 1e-6,
               "exp's last element");

        n = size_near(BILO_COST_HEAVY, which);
        x = positive(n);
        check_threads("erf", erf_, x);
        bilo_tensor *p = check_threads("pow_scalar 1.5", pow_1_5, x);
        double last = bilo_get_flat(x, n - 1);
        tap_ok(fabs(bilo_get_flat(p, n - 1) / pow(last, 1.5) - 1) < 1e-6, "x^1.5's last element");
        check_threads("pow(x, x)", x_pow_x, x);
        bilo_scope_end();
    }
}

static void test_in_place(void)
{
    for (int which = 0; which < 4; which++) {
        bilo_scope_begin();
        int64_t n = size_near(BILO_COST_MEMORY, which);
        bilo_tensor *x = bilo_randn(BILO_F32, 1, &n, &rng);
        bilo_tensor *y[2];
        for (int t = 0; t < 2; t++) {
            bilo_set_num_threads(t + 1);
            y[t] = bilo_full(BILO_F32, 1, &n, 1.0);
            bilo_axpy_(y[t], 0.5, x);
        }
        bilo_set_num_threads(0);
        tap_ok(same_bits(y[0], y[1]) && bilo_get_flat(y[0], n - 1) == 1.0f + 0.5f * (float)bilo_get_flat(x, n - 1),
               "axpy_ of %lld elements: same bits at 1 and 2 threads, y = 1 + x/2", (long long)n);
        bilo_scope_end();
    }
}

static void test_reductions(void)
{
    for (int which = 0; which < 4; which++) {
        bilo_scope_begin();
        int64_t n = size_near(BILO_COST_MEMORY, which);
        bilo_tensor *x = bilo_randn(BILO_F32, 1, &n, &rng);
        bilo_set_flat(x, n / 3, 50.0);
        check_threads("sum", sum_all, x);
        tap_ok(bilo_item(check_threads("max", max_all, x)) == 50.0, "max finds the planted 50");
        tap_ok(bilo_item(check_threads("argmax", argmax_all, x)) == (double)(n / 3),
               "argmax finds the planted 50");

        n = size_near(BILO_COST_TRANSCENDENTAL, which);
        x = bilo_full(BILO_F32, 1, &n, 0.0);
        bilo_tensor *lse = check_threads("logsumexp", logsumexp_all, x);
        tap_ok(fabs(bilo_item(lse) - log((double)n)) < 1e-5, "logsumexp of zeros is log n");
        bilo_scope_end();
    }
}

/* Column sums of [rows, 256] (the bias gradient of a layer), row sums (kept elements not
   adjacent in memory) and a transposed copy. */
static void test_strided(void)
{
    const int64_t cols = 256;
    for (int which = 0; which < 4; which++) {
        bilo_scope_begin();
        int64_t rows = size_near(BILO_COST_MEMORY, which) / cols + (which == 2);
        bilo_tensor *m = bilo_randn(BILO_F32, BILO_SHAPE(rows, cols), &rng);
        bilo_tensor *s[2], *c[2];
        for (int t = 0; t < 2; t++) {
            bilo_set_num_threads(t + 1);
            s[t] = bilo_sum_to(m, 1, &cols);
            c[t] = bilo_clone(bilo_transpose(m, 0, 1));
        }
        bilo_set_num_threads(0);
        double col = 0; /* column 200 summed in a double, row by row, as sum_to does */
        for (int64_t r = 0; r < rows; r++) col += bilo_get(m, (int64_t[]){r, 200});
        tap_ok(same_bits(s[0], s[1]) && bilo_get_flat(s[0], 200) == (float)col,
               "sum_to [%lld,256] -> [256]: same bits at 1 and 2 threads, column 200 exact",
               (long long)rows);
        bilo_tensor *row_sums[2];
        for (int t = 0; t < 2; t++) {
            bilo_set_num_threads(t + 1);
            row_sums[t] = bilo_sum_to(m, 2, (int64_t[]){rows, 1});
        }
        bilo_set_num_threads(0);
        double row = 0; /* the last row summed in a double, left to right */
        for (int64_t j = 0; j < cols; j++) row += bilo_get(m, (int64_t[]){rows - 1, j});
        tap_ok(same_bits(row_sums[0], row_sums[1]) && bilo_get_flat(row_sums[0], rows - 1) == (float)row,
               "sum_to [%lld,256] -> [%lld,1]: same bits at 1 and 2 threads, last row exact",
               (long long)rows, (long long)rows);
        tap_ok(same_bits(c[0], c[1]) &&
                   bilo_get(c[0], (int64_t[]){7, rows - 1}) == bilo_get(m, (int64_t[]){rows - 1, 7}),
               "transposed copy of [%lld,256]: same bits at 1 and 2 threads", (long long)rows);
        bilo_scope_end();
    }
}

int main(void)
{
    rng = bilo_rng_make(8, 0);
    test_unary_and_binary();
    test_in_place();
    test_reductions();
    test_strided();
    return tap_done();
}
