/* Fused softmax cross-entropy: bilo_softmax_cross_entropy, its gradient op
   bilo_softmax_cross_entropy_backward and the softmax Jacobian product bilo_softmax_jvp (its
   second derivative) against a reference computed here in long double
   (random rows, logits ±1000, one class, one row, rows and classes beyond one work block),
   f32 against the same reference, a third-order derivative check, bad inputs that leave the
   library working, and bit-identical results at 1 and 2 threads. The op table's gradcheck and
   gradgradcheck of both ops are in test_autograd.c. */
#include "checks.h"
#include "tensor_impl.h" /* bilo__no_grad_depth, as gradgradcheck uses it */

#include <string.h>

static bilo_rng rng;

/* Logits [n, C] of dtype uniform in [-scale, scale], labels uniform in [0, C), g in [-1, 1]. */
typedef struct {
    int64_t n, C;
    bilo_tensor *logits, *labels, *g;
} problem;

static problem make_problem(bilo_dtype dtype, int64_t n, int64_t C, double scale)
{
    problem p = {n, C, bilo_empty(dtype, BILO_SHAPE(n, C)), bilo_empty(BILO_I64, BILO_SHAPE(n)),
                 bilo_empty(dtype, BILO_SHAPE(n))};
    for (int64_t i = 0; i < n * C; i++)
        bilo_set_flat(p.logits, i, scale * (2 * bilo_rng_uniform(&rng) - 1));
    int64_t *y = bilo_data(p.labels);
    for (int64_t i = 0; i < n; i++) {
        y[i] = (int64_t)(bilo_rng_uniform(&rng) * (double)C);
        bilo_set_flat(p.g, i, 2 * bilo_rng_uniform(&rng) - 1);
    }
    return p;
}

/* log Σ_c exp(z_c) of one row in long double, shifted by the row max. */
static long double row_logsumexp(const problem *p, int64_t i)
{
    long double m = -INFINITY, s = 0;
    for (int64_t c = 0; c < p->C; c++) m = fmaxl(m, bilo_get_flat(p->logits, i * p->C + c));
    for (int64_t c = 0; c < p->C; c++) s += expl(bilo_get_flat(p->logits, i * p->C + c) - m);
    return m + logl(s);
}

static int64_t label(const problem *p, int64_t i) { return ((const int64_t *)bilo_data(p->labels))[i]; }

/* Largest error of the per-row losses relative to max(1, |reference|). */
static double loss_error(const problem *p, bilo_tensor *loss)
{
    if (!loss || bilo_numel(loss) != p->n || bilo_dtype_of(loss) != bilo_dtype_of(p->logits))
        return INFINITY;
    double worst = 0;
    for (int64_t i = 0; i < p->n; i++) {
        long double want = row_logsumexp(p, i) - bilo_get_flat(p->logits, i * p->C + label(p, i));
        double err = fabs(bilo_get_flat(loss, i) - (double)want) / fmax(1.0, fabsl(want));
        worst = fmax(worst, isnan(err) ? INFINITY : err);
    }
    return worst;
}

/* Largest |dz - (softmax - onehot) g| over all elements. */
static double grad_error(const problem *p, bilo_tensor *dz)
{
    if (!dz || bilo_numel(dz) != p->n * p->C) return INFINITY;
    double worst = 0;
    for (int64_t i = 0; i < p->n; i++) {
        long double lse = row_logsumexp(p, i), g = bilo_get_flat(p->g, i);
        for (int64_t c = 0; c < p->C; c++) {
            long double prob = expl(bilo_get_flat(p->logits, i * p->C + c) - lse);
            long double want = (prob - (c == label(p, i))) * g;
            double err = fabs(bilo_get_flat(dz, i * p->C + c) - (double)want);
            worst = fmax(worst, isnan(err) ? INFINITY : err);
        }
    }
    return worst;
}

/* Largest |out - g ⊙ p ⊙ (u - Σ p u)| over all elements, u the problem's logits reversed
   and scaled to [-1, 1] (a direction unrelated to the softmax). */
static double jvp_error(const problem *p, bilo_tensor *u, bilo_tensor *out)
{
    if (!out || bilo_numel(out) != p->n * p->C) return INFINITY;
    double worst = 0;
    for (int64_t i = 0; i < p->n; i++) {
        long double lse = row_logsumexp(p, i), g = bilo_get_flat(p->g, i), pu = 0;
        for (int64_t c = 0; c < p->C; c++)
            pu += expl(bilo_get_flat(p->logits, i * p->C + c) - lse) * bilo_get_flat(u, i * p->C + c);
        for (int64_t c = 0; c < p->C; c++) {
            long double prob = expl(bilo_get_flat(p->logits, i * p->C + c) - lse);
            long double want = g * prob * (bilo_get_flat(u, i * p->C + c) - pu);
            double err = fabs(bilo_get_flat(out, i * p->C + c) - (double)want);
            worst = fmax(worst, isnan(err) ? INFINITY : err);
        }
    }
    return worst;
}

static bilo_tensor *direction(const problem *p)
{
    bilo_tensor *u = bilo_empty(bilo_dtype_of(p->logits), BILO_SHAPE(p->n, p->C));
    for (int64_t i = 0; i < p->n * p->C; i++) bilo_set_flat(u, i, cos((double)(3 * i + 1)));
    return u;
}

static void check_values(const char *what, bilo_dtype dtype, int64_t n, int64_t C, double scale)
{
    bilo_scope_begin();
    problem p = make_problem(dtype, n, C, scale);
    double tol = dtype == BILO_F64 ? 1e-13 : 2e-6;
    const char *dt = bilo_dtype_name(dtype);
    double err = loss_error(&p, bilo_softmax_cross_entropy(p.logits, p.labels));
    tap_ok(err <= tol, "%s %s [%lld,%lld]: losses match the long double reference (rel err %.3g)",
           dt, what, (long long)n, (long long)C, err);
    err = grad_error(&p, bilo_softmax_cross_entropy_backward(p.logits, p.labels, p.g));
    tap_ok(err <= tol, "%s %s [%lld,%lld]: gradient (softmax - onehot) g matches (err %.3g)", dt,
           what, (long long)n, (long long)C, err);
    bilo_tensor *u = direction(&p);
    err = jvp_error(&p, u, bilo_softmax_jvp(p.logits, u, p.g));
    tap_ok(err <= tol, "%s %s [%lld,%lld]: softmax_jvp g p (u - Σ p u) matches (err %.3g)", dt, what,
           (long long)n, (long long)C, err);
    bilo_scope_end();
}

static void test_values(void)
{
    for (int d = 0; d < 2; d++) {
        bilo_dtype dtype = d ? BILO_F32 : BILO_F64;
        check_values("random", dtype, 7, 5, 3.0);
        check_values("one row", dtype, 1, 9, 3.0);
        check_values("one class", dtype, 4, 1, 3.0);
        check_values("logits up to ±1000", dtype, 6, 4, 1000.0);
        check_values("several row blocks", dtype, 600, 10, 5.0);
        check_values("long rows", dtype, 3, 5000, 5.0);
    }
}

/* Closed forms: one class costs 0 whatever the logit; two equal huge logits cost log 2;
   uniform logits cost log C; an empty batch gives an empty result. */
static void test_closed_forms(void)
{
    bilo_scope_begin();
    double one[] = {-7.5, 1e300}, pair[] = {1000, 1000, -1000, -1000}, flat[] = {2, 2, 2};
    int64_t zeros[] = {0, 0};
    bilo_tensor *y = bilo_from_data(BILO_I64, BILO_SHAPE(2), zeros);
    bilo_tensor *l1 = bilo_softmax_cross_entropy(bilo_from_data(BILO_F64, BILO_SHAPE(2, 1), one), y);
    tap_ok(l1 && bilo_get_flat(l1, 0) == 0 && bilo_get_flat(l1, 1) == 0,
           "one class: loss exactly 0, even for a logit of 1e300");
    bilo_tensor *l2 = bilo_softmax_cross_entropy(bilo_from_data(BILO_F64, BILO_SHAPE(2, 2), pair), y);
    tap_ok(max_diff(l2, (double[]){log(2), log(2)}, 2) < 1e-15, "two equal logits ±1000: log 2");
    bilo_tensor *l3 = bilo_softmax_cross_entropy(bilo_from_data(BILO_F64, BILO_SHAPE(1, 3), flat),
                                                 bilo_from_data(BILO_I64, BILO_SHAPE(1), zeros));
    tap_ok(max_diff(l3, (double[]){log(3)}, 1) < 1e-15, "three equal logits: log 3");
    double with_nan[] = {NAN, 1, 2, 1, NAN, 2, 1, 2, 3};
    bilo_tensor *zn = bilo_from_data(BILO_F64, BILO_SHAPE(3, 3), with_nan);
    bilo_tensor *yn = bilo_from_data(BILO_I64, BILO_SHAPE(3), (int64_t[]){1, 0, 2});
    bilo_tensor *ln = bilo_softmax_cross_entropy(zn, yn);
    bilo_tensor *dn = bilo_softmax_cross_entropy_backward(zn, yn, bilo_ones(BILO_F64, BILO_SHAPE(3)));
    bool nan_rows = ln && dn && isnan(bilo_get_flat(ln, 0)) && isnan(bilo_get_flat(ln, 1)) &&
                    fabs(bilo_get_flat(ln, 2) - (log(exp(-2) + exp(-1) + 1))) < 1e-15;
    for (int64_t i = 0; nan_rows && i < 9; i++) nan_rows = isnan(bilo_get_flat(dn, i)) == (i < 6);
    tap_ok(nan_rows, "a NaN logit (first or later in its row) makes that row's loss and gradient "
                     "NaN and no other");
    bilo_tensor *l0 = bilo_softmax_cross_entropy(bilo_zeros(BILO_F32, BILO_SHAPE(0, 4)),
                                                 bilo_zeros(BILO_I64, BILO_SHAPE(0)));
    tap_ok(l0 && bilo_numel(l0) == 0 && bilo_dtype_of(l0) == BILO_F32, "no rows: empty f32 result");
    bilo_scope_end();
}

/* ---- derivatives ---- */

typedef struct {
    bilo_tensor *labels, *weights, *direction;
} ce_data;

static bilo_tensor *weighted_ce(bilo_tensor *const *z, void *user)
{
    const ce_data *d = user;
    return bilo_dot(bilo_softmax_cross_entropy(z[0], d->labels), d->weights);
}

/* z ↦ H(z) v for L(z) = Σ_i w_i CE(z)_i, by two recorded gradients: the first goes through
   bilo_softmax_cross_entropy_backward, the second through that op's rule. gradcheck of it checks
   third derivatives of L, gradgradcheck fourth. The checks evaluate fn under no-grad; like
   their own vjp, it records its inner graph anyway. */
static bilo_tensor *hvp_of_weighted_ce(bilo_tensor *const *z, void *user)
{
    const ce_data *d = user;
    int depth = bilo__no_grad_depth;
    bilo__no_grad_depth = 0;
    bilo_tensor *loss = weighted_ce(z, user), *dz = NULL, *hv = NULL;
    if (bilo_grad(&loss, 1, NULL, z, 1, &dz, BILO_CREATE_GRAPH) == 0) {
        bilo_tensor *dir = bilo_dot(dz, d->direction);
        if (bilo_grad(&dir, 1, NULL, z, 1, &hv, BILO_CREATE_GRAPH) < 0) hv = NULL;
    }
    bilo__no_grad_depth = depth;
    return hv;
}

/* Largest |Hv - w p (v - Σ_c p v)| with p = softmax(z) per row. */
static double hvp_error(const problem *p, bilo_tensor *v, bilo_tensor *hv)
{
    if (!hv || bilo_numel(hv) != p->n * p->C) return INFINITY;
    double worst = 0;
    for (int64_t i = 0; i < p->n; i++) {
        long double lse = row_logsumexp(p, i), pv = 0;
        for (int64_t c = 0; c < p->C; c++)
            pv += expl(bilo_get_flat(p->logits, i * p->C + c) - lse) * bilo_get_flat(v, i * p->C + c);
        for (int64_t c = 0; c < p->C; c++) {
            int64_t at = i * p->C + c;
            long double prob = expl(bilo_get_flat(p->logits, at) - lse);
            long double want = bilo_get_flat(p->g, i) * prob * (bilo_get_flat(v, at) - pv);
            worst = fmax(worst, fabs(bilo_get_flat(hv, at) - (double)want));
        }
    }
    return isnan(worst) ? INFINITY : worst;
}

static void test_derivatives(void)
{
    bilo_scope_begin();
    problem p = make_problem(BILO_F64, 3, 4, 2.0);
    bilo_set_requires_grad(p.logits, true);
    problem dir = make_problem(BILO_F64, 3, 4, 1.0);
    ce_data d = {p.labels, p.g, dir.logits};
    bilo_tensor *loss = weighted_ce(&p.logits, &d), *dz = NULL;
    int rc = bilo_grad(&loss, 1, NULL, &p.logits, 1, &dz, BILO_CREATE_GRAPH);
    tap_ok(rc == 0 && !strcmp(bilo_grad_fn_name(dz), "softmax_cross_entropy_backward"),
           "the gradient with CREATE_GRAPH is recorded as softmax_cross_entropy_backward (%s)",
           rc == 0 ? bilo_grad_fn_name(dz) : bilo_last_error());
    tap_ok(grad_error(&p, dz) < 1e-14, "its value is (softmax - onehot) w");
    double err = hvp_error(&p, dir.logits, hvp_of_weighted_ce(&p.logits, &d));
    tap_ok(err < 1e-14, "H v through the gradient op's rule is w p (v - sum p v) (err %.3g)", err);
    check_derivatives("weighted softmax_cross_entropy", weighted_ce, &p.logits, 1, &d);
    check_derivatives("its Hessian-vector product (third and fourth order)", hvp_of_weighted_ce,
                      &p.logits, 1, &d);
    bilo_scope_end();
}

/* ---- what an unrolled step keeps ---- */

/* Steps W ← W - 0.1 ∇_W [mean CE(X W) + ½ Σ W²] recorded with CREATE_GRAPH, as ITD unrolls
   them: the bytes each step leaves alive. The fused gradient keeps the logits X W and no
   softmax, so a step keeps one [n, C] tensor (the composite log_softmax kept two). */
static double bytes_per_unrolled_step(int64_t n, int64_t d, int64_t C, int steps)
{
    bilo_tensor *X = bilo_randn(BILO_F64, BILO_SHAPE(n, d), &rng);
    bilo_tensor *y = make_problem(BILO_F64, n, C, 1.0).labels;
    bilo_tensor *W = bilo_zeros(BILO_F64, BILO_SHAPE(d, C));
    bilo_set_requires_grad(W, true);
    bilo_mem_stats before, after;
    bilo_mem_get_stats(&before);
    bilo_scope_begin();
    for (int t = 0; t < steps && W; t++) {
        bilo_scope_begin();
        bilo_tensor *loss = bilo_add(bilo_nn_cross_entropy(bilo_matmul(X, W), y, BILO_REDUCE_MEAN),
                                     bilo_mul_scalar(bilo_dot(W, W), 0.5));
        bilo_tensor *g = NULL;
        W = bilo_grad(&loss, 1, NULL, &W, 1, &g, BILO_CREATE_GRAPH) ? NULL
                                                                     : bilo_sub(W, bilo_mul_scalar(g, 0.1));
        bilo_scope_return(W);
        bilo_scope_end();
    }
    bilo_mem_get_stats(&after);
    bilo_scope_end();
    return W ? ((double)after.live_bytes - (double)before.live_bytes) / steps : INFINITY;
}

/* The gradient in w of Σ c w², recorded with CREATE_GRAPH, with c requiring grad as well (the
   weighted L2 penalty of a hyperparameter problem): it keeps itself, c's and w's output
   gradients, and w, alive anyway; square's rule is 2 (g w), so no fresh 2 w is saved too. */
static double bytes_kept_by_penalty_gradient(int64_t n)
{
    bilo_tensor *w = bilo_randn(BILO_F64, BILO_SHAPE(n), &rng);
    bilo_tensor *c = bilo_randn(BILO_F64, BILO_SHAPE(n), &rng);
    bilo_set_requires_grad(w, true);
    bilo_set_requires_grad(c, true);
    bilo_mem_stats before, after;
    bilo_mem_get_stats(&before);
    bilo_scope_begin();
    bilo_tensor *g = NULL;
    bilo_scope_begin();
    bilo_tensor *loss = bilo_sum(bilo_mul(c, bilo_square(w)), BILO_ALL_AXES, false);
    bool ok = bilo_grad(&loss, 1, NULL, &w, 1, &g, BILO_CREATE_GRAPH) == 0;
    if (ok) bilo_scope_return(g);
    bilo_scope_end();
    bilo_mem_get_stats(&after);
    bilo_scope_end();
    return ok ? (double)after.live_bytes - (double)before.live_bytes : INFINITY;
}

static void test_unrolled_memory(void)
{
    bilo_scope_begin();
    const int64_t w_numel = 3000;
    double w_bytes = (double)w_numel * sizeof(double);
    double kept = bytes_kept_by_penalty_gradient(w_numel);
    tap_ok(kept < 3.5 * w_bytes,
           "the recorded gradient of sum(c square(w)) keeps %.0f bytes: three tensors the size "
           "of w (%.0f bytes), no saved copy of 2 w", kept, w_bytes);
    const int64_t n = 1000, d = 20, C = 10;
    double logits_bytes = (double)(n * C) * sizeof(double);
    double per_step = bytes_per_unrolled_step(n, d, C, 8);
    tap_ok(per_step < 1.5 * logits_bytes,
           "an unrolled CE step keeps %.0f bytes, less than 1.5 x the %.0f bytes of its logits",
           per_step, logits_bytes);
    bilo_scope_end();
}

/* ---- bad inputs ---- */

static void test_errors(void)
{
    bilo_scope_begin();
    problem p = make_problem(BILO_F64, 3, 4, 1.0);
    const char *fwd = "bilo_softmax_cross_entropy:", *bwd = "bilo_softmax_cross_entropy_backward:";
    bilo_tensor *wrong_n = bilo_zeros(BILO_I64, BILO_SHAPE(2));
    check_error(!bilo_softmax_cross_entropy(p.logits, bilo_zeros(BILO_F64, BILO_SHAPE(3))),
                BILO_EDTYPE, "labels are f64, not i64", "f64 labels are rejected");
    check_error(!bilo_softmax_cross_entropy(p.logits, wrong_n), BILO_ESHAPE,
                "logits [3,4] and labels [2] are not [n, C] and [n]", "row count mismatch");
    check_error(!bilo_softmax_cross_entropy(bilo_zeros(BILO_F64, BILO_SHAPE(3)), p.labels),
                BILO_ESHAPE, "logits [3] and labels [3]", "1-D logits are rejected");
    check_error(!bilo_softmax_cross_entropy(bilo_zeros(BILO_I64, BILO_SHAPE(3, 4)), p.labels),
                BILO_EDTYPE, fwd, "i64 logits are rejected");
    check_error(!bilo_softmax_cross_entropy(p.logits, bilo_from_data(BILO_I64, BILO_SHAPE(3),
                                                                     (int64_t[]){0, 4, 1})),
                BILO_ERANGE, "label 4 at row 1 is outside [0, 4)", "label C is out of range");
    check_error(!bilo_softmax_cross_entropy(p.logits, bilo_from_data(BILO_I64, BILO_SHAPE(3),
                                                                     (int64_t[]){0, 1, -1})),
                BILO_ERANGE, "label -1 at row 2", "negative label is out of range");
    check_error(!bilo_softmax_cross_entropy_backward(p.logits, p.labels, bilo_zeros(BILO_F64, BILO_SHAPE(4))),
                BILO_ESHAPE, "g [4] is not [n] for logits [3,4]", "backward: g of the wrong length");
    check_error(!bilo_softmax_cross_entropy_backward(p.logits, p.labels, bilo_zeros(BILO_F32, BILO_SHAPE(3))),
                BILO_EDTYPE, "dtypes f64 and f32 differ", "backward: g of another dtype");
    check_error(!bilo_softmax_cross_entropy_backward(p.logits, wrong_n, p.g), BILO_ESHAPE, bwd,
                "backward: row count mismatch names the op");
    const char *jvp = "bilo_softmax_jvp:";
    check_error(!bilo_softmax_jvp(p.logits, bilo_zeros(BILO_F64, BILO_SHAPE(3, 5)), p.g),
                BILO_ESHAPE, "u [3,5] does not match logits [3,4]", "jvp: u of another shape");
    check_error(!bilo_softmax_jvp(p.logits, p.logits, bilo_zeros(BILO_F64, BILO_SHAPE(3, 1))),
                BILO_ESHAPE, "g [3,1] is not [n] for logits [3,4]", "jvp: g not 1-D");
    check_error(!bilo_softmax_jvp(bilo_zeros(BILO_F64, BILO_SHAPE(12)), p.logits, p.g),
                BILO_ESHAPE, "logits [12] are not [n, C]", "jvp: 1-D logits");
    check_error(!bilo_softmax_jvp(p.logits, bilo_zeros(BILO_F32, BILO_SHAPE(3, 4)), p.g),
                BILO_EDTYPE, jvp, "jvp: u of another dtype");
    bool nulls = !bilo_softmax_jvp(p.logits, NULL, p.g) && !bilo_softmax_jvp(NULL, p.logits, p.g) &&
                 !bilo_softmax_cross_entropy(NULL, p.labels) &&
                 !bilo_softmax_cross_entropy(p.logits, NULL) &&
                 !bilo_softmax_cross_entropy_backward(p.logits, p.labels, NULL) &&
                 !bilo_softmax_cross_entropy_backward(NULL, p.labels, p.g);
    tap_ok(nulls && bilo_errcode() == 0, "NULL inputs give NULL and add no error of their own");
    double err = loss_error(&p, bilo_softmax_cross_entropy(p.logits, p.labels));
    tap_ok(err < 1e-13 && bilo_errcode() == 0, "after the errors the op still works (err %.3g)", err);
    bilo_scope_end();
}

/* ---- thread counts ---- */

static bool same_bits(bilo_tensor *a, bilo_tensor *b)
{
    return a && b && bilo_numel(a) == bilo_numel(b) &&
           !memcmp(bilo_data(a), bilo_data(b), (size_t)bilo_numel(a) * sizeof(float));
}

/* 2000 x 37 elements: above the parallel threshold, several row blocks per thread. */
static void test_threads(void)
{
    bilo_scope_begin();
    problem p = make_problem(BILO_F32, 2000, 37, 20.0);
    bilo_tensor *out[2][3], *u = direction(&p);
    for (int t = 0; t < 2; t++) {
        bilo_set_num_threads(t + 1);
        out[t][0] = bilo_softmax_cross_entropy(p.logits, p.labels);
        out[t][1] = bilo_softmax_cross_entropy_backward(p.logits, p.labels, p.g);
        out[t][2] = bilo_softmax_jvp(p.logits, u, p.g);
    }
    bilo_set_num_threads(0);
    tap_ok(same_bits(out[0][0], out[1][0]), "f32 losses bit-identical at 1 and 2 threads");
    tap_ok(same_bits(out[0][1], out[1][1]), "f32 gradient bit-identical at 1 and 2 threads");
    tap_ok(same_bits(out[0][2], out[1][2]), "f32 softmax_jvp bit-identical at 1 and 2 threads");
    bilo_scope_end();
}

int main(void)
{
    rng = bilo_rng_make(2026, 0);
    test_values();
    test_closed_forms();
    test_derivatives();
    test_unrolled_memory();
    test_errors();
    test_threads();
    return tap_done();
}
