/* nn layers, activations, dropout, initializers, losses and metrics: hand-computed values,
   gradcheck + gradgradcheck in f64, statistical bounds, error paths, and a small MLP trained
   by plain gradient descent. */
#include "bilo_autograd.h"
#include "bilo_nn.h"
#include "checks.h"
#include "tap.h"

#include <math.h>
#include <string.h>

static bilo_tensor *f64(int ndim, const int64_t *shape, const double *data)
{
    return bilo_from_data(BILO_F64, ndim, shape, data);
}

static bilo_tensor *i64(int64_t n, const int64_t *data)
{
    return bilo_from_data(BILO_I64, BILO_SHAPE(n), data);
}

static bilo_tensor *param(bilo_tensor *t)
{
    bilo_set_requires_grad(t, true);
    return t;
}

/* ---- layers ---- */

static bilo_tensor *fn_linear(bilo_tensor *const *in, void *u)
{
    return bilo_nn_linear(in[0], in[1], in[2]);
}

static void test_linear(void)
{
    bilo_scope_begin();
    const double xv[] = {1, -2, 0.5, 3, 0.25, -1}, wv[] = {0.5, -1, 2, 0.3, -0.7, 1.5},
                 bv[] = {0.1, -0.2};
    bilo_tensor *x = f64(BILO_SHAPE(2, 3), xv), *W = f64(BILO_SHAPE(3, 2), wv),
                *b = f64(BILO_SHAPE(2), bv);
    double want[4], want_nob[4];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            double s = 0;
            for (int k = 0; k < 3; k++) s += xv[i * 3 + k] * wv[k * 2 + j];
            want_nob[i * 2 + j] = s;
            want[i * 2 + j] = s + bv[j];
        }
    tap_ok(max_diff(bilo_nn_linear(x, W, b), want, 4) < 1e-14, "linear: x·W + b by hand");
    tap_ok(max_diff(bilo_nn_linear(x, W, NULL), want_nob, 4) < 1e-14, "linear: no bias");
    check_error(!bilo_nn_linear(x, W, bilo_zeros(BILO_F64, BILO_SHAPE(3))), BILO_ESHAPE,
                "bias [3] does not fit weight [3,2]", "linear: bias shape error");
    check_error(!bilo_nn_linear(x, bilo_zeros(BILO_F64, BILO_SHAPE(2, 2)), NULL), BILO_ESHAPE,
                "bilo_matmul", "linear: weight shape error from matmul");
    bilo_tensor *in[] = {param(x), param(W), param(b)};
    check_derivatives("linear", fn_linear, in, 3, NULL);
    bilo_scope_end();
}

static bilo_tensor *fn_leaky(bilo_tensor *const *in, void *u)
{
    return bilo_nn_leaky_relu(in[0], 0.1);
}
static bilo_tensor *fn_elu(bilo_tensor *const *in, void *u)
{
    return bilo_nn_elu(in[0], 1.5);
}
static bilo_tensor *fn_gelu_tanh(bilo_tensor *const *in, void *u)
{
    return bilo_nn_gelu_tanh(in[0]);
}
static bilo_tensor *fn_gelu(bilo_tensor *const *in, void *u)
{
    return bilo_nn_gelu(in[0]);
}

static void test_activations(void)
{
    bilo_scope_begin();
    /* Kinks at 0 are avoided: finite differences there see neither side. */
    const double xv[] = {-3, -0.7, -0.2, 0.3, 1.1, 2.5};
    bilo_tensor *x = f64(BILO_SHAPE(6), xv);
    double leaky[6], elu[6], gelu_tanh[6], gelu[6];
    for (int i = 0; i < 6; i++) {
        double v = xv[i];
        leaky[i] = v > 0 ? v : 0.1 * v;
        elu[i] = v > 0 ? v : 1.5 * (exp(v) - 1);
        gelu_tanh[i] = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
        gelu[i] = 0.5 * v * (1 + erf(v / sqrt(2.0)));
    }
    tap_ok(max_diff(bilo_nn_leaky_relu(x, 0.1), leaky, 6) < 1e-15, "leaky_relu values");
    tap_ok(max_diff(bilo_nn_elu(x, 1.5), elu, 6) < 1e-15, "elu values");
    tap_ok(max_diff(bilo_nn_gelu_tanh(x), gelu_tanh, 6) < 1e-15, "gelu_tanh values");
    tap_ok(max_diff(bilo_nn_gelu(x), gelu, 6) < 1e-15, "gelu (erf form) values");
    /* Known GELU points: gelu(0) = 0 and gelu(x) - gelu(-x) = x. */
    const double pm[] = {0, 1.3, -1.3};
    bilo_tensor *g = bilo_nn_gelu_tanh(f64(BILO_SHAPE(3), pm));
    tap_ok(g && bilo_get_flat(g, 0) == 0 &&
               fabs(bilo_get_flat(g, 1) - bilo_get_flat(g, 2) - 1.3) < 1e-15,
           "gelu_tanh: gelu(0) = 0, gelu(x) - gelu(-x) = x");
    bilo_tensor *in[] = {param(x)};
    check_derivatives("leaky_relu", fn_leaky, in, 1, NULL);
    check_derivatives("elu", fn_elu, in, 1, NULL);
    check_derivatives("gelu_tanh", fn_gelu_tanh, in, 1, NULL);
    check_derivatives("gelu", fn_gelu, in, 1, NULL);
    bilo_scope_end();
}

static bilo_tensor *fn_embedding(bilo_tensor *const *in, void *idx)
{
    return bilo_nn_embedding(in[0], idx);
}

static void test_flatten_embedding(void)
{
    bilo_scope_begin();
    bilo_tensor *a = bilo_arange(BILO_F64, 0, 24, 1);
    bilo_tensor *f = bilo_nn_flatten(bilo_reshape(a, BILO_SHAPE(2, 3, 4)));
    tap_ok(f && bilo_ndim(f) == 2 && bilo_dim(f, 0) == 2 && bilo_dim(f, 1) == 12 &&
               bilo_get(f, (int64_t[]){1, 5}) == 17,
           "flatten: [2,3,4] -> [2,12], element [1,5] = 17");
    check_error(!bilo_nn_flatten(bilo_scalar(BILO_F64, 1)), BILO_ESHAPE, "batch axis",
                "flatten: 0-d error");

    bilo_tensor *w = bilo_reshape(bilo_arange(BILO_F64, 0, 12, 1), BILO_SHAPE(4, 3));
    bilo_tensor *idx = bilo_from_data(BILO_I64, BILO_SHAPE(2, 2), (int64_t[]){1, 3, 0, 1});
    bilo_tensor *e = bilo_nn_embedding(w, idx);
    const double want[] = {3, 4, 5, 9, 10, 11, 0, 1, 2, 3, 4, 5};
    tap_ok(e && bilo_ndim(e) == 3 && bilo_dim(e, 2) == 3 && max_diff(e, want, 12) == 0,
           "embedding: rows of weight picked by [2,2] indices");
    bilo_clear_error();
    tap_ok(!bilo_nn_embedding(w, i64(1, (int64_t[]){4})) && bilo_errcode() == BILO_ERANGE,
           "embedding: index 4 of 4 rows is an error");
    bilo_clear_error();
    bilo_tensor *in[] = {param(bilo_clone(w))};
    check_derivatives("embedding (weight)", fn_embedding, in, 1, idx);
    bilo_scope_end();
}

static void test_dropout(void)
{
    bilo_scope_begin();
    const int64_t n = 100000;
    const double p = 0.3;
    bilo_tensor *x = bilo_ones(BILO_F64, BILO_SHAPE(n));
    bilo_rng rng = bilo_rng_make(7, 1), rng2 = bilo_rng_make(7, 1);
    bilo_tensor *y = bilo_nn_dropout(x, p, true, &rng);
    bilo_tensor *y2 = bilo_nn_dropout(x, p, true, &rng2);
    int64_t kept = 0, bad = 0, differ = 0;
    for (int64_t i = 0; i < n && y && y2; i++) {
        double v = bilo_get_flat(y, i);
        kept += v != 0;
        bad += v != 0 && fabs(v - 1 / (1 - p)) > 1e-15;
        differ += v != bilo_get_flat(y2, i);
    }
    /* Kept count ~ Binomial(n, 1-p): 5 standard deviations. */
    double sd = sqrt(n * p * (1 - p));
    tap_ok(y && fabs(kept - n * (1 - p)) < 5 * sd,
           "dropout: kept %lld of %lld, expected %.0f ± %.0f", (long long)kept, (long long)n,
           n * (1 - p), 5 * sd);
    tap_ok(y && bad == 0, "dropout: kept elements scaled by 1/(1-p)");
    tap_ok(y2 && differ == 0, "dropout: same seed, same mask");
    bilo_tensor *y3 = bilo_nn_dropout(x, p, true, &rng);
    int64_t same = 0;
    for (int64_t i = 0; i < n && y3; i++) same += bilo_get_flat(y3, i) == bilo_get_flat(y, i);
    tap_ok(y3 && same < n, "dropout: the advanced rng draws a new mask");
    bilo_rng before = rng;
    const double xv[] = {1.5, -2, 3};
    bilo_tensor *e = bilo_nn_dropout(f64(BILO_SHAPE(3), xv), p, false, &rng);
    tap_ok(max_diff(e, xv, 3) == 0 && rng.counter == before.counter,
           "dropout: eval is the identity and leaves rng alone");
    check_error(!bilo_nn_dropout(x, 1.0, true, &rng), BILO_EINVAL, "p = 1 is not in [0, 1)",
                "dropout: p = 1 error");
    check_error(!bilo_nn_dropout(x, -0.1, false, &rng), BILO_EINVAL, "p = -0.1",
                "dropout: p < 0 error");
    check_error(!bilo_nn_dropout(x, 0.5, true, NULL), BILO_ENULL, "rng",
                "dropout: NULL rng in training");
    bilo_scope_end();
}

/* Mean and variance of t's elements, and max |t|. */
static void moments(bilo_tensor *t, double *mean, double *var, double *absmax)
{
    int64_t n = bilo_numel(t);
    double s = 0, s2 = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = bilo_get_flat(t, i);
        s += v;
        s2 += v * v;
        m = fmax(m, fabs(v));
    }
    *mean = s / n;
    *var = s2 / n - *mean * *mean;
    *absmax = m;
}

static void test_initializers(void)
{
    bilo_scope_begin();
    const int64_t fan_in = 200, fan_out = 300, n = fan_in * fan_out;
    bilo_tensor *W = bilo_zeros(BILO_F64, BILO_SHAPE(fan_in, fan_out));
    bilo_rng rng = bilo_rng_make(11, 0);
    double mean, var, absmax;

    struct {
        const char *name;
        int (*init)(bilo_tensor *, double, bilo_rng *);
        double arg;
        double want_var;
        bool uniform;
    } cases[] = {
        {"xavier_uniform", bilo_nn_init_xavier_uniform, 0, 2.0 / (fan_in + fan_out), true},
        {"xavier_normal gain 2", bilo_nn_init_xavier_normal, 2, 8.0 / (fan_in + fan_out), false},
        {"kaiming_uniform", bilo_nn_init_kaiming_uniform, 0, 2.0 / fan_in, true},
        {"kaiming_normal slope 0.5", bilo_nn_init_kaiming_normal, 0.5, 2.0 / 1.25 / fan_in, false},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int rc = cases[c].init(W, cases[c].arg, &rng);
        moments(W, &mean, &var, &absmax);
        /* Sample variance: relative sd sqrt(0.8/n) (uniform), sqrt(2/n) (normal); 5 sd. */
        double rel = 5 * sqrt((cases[c].uniform ? 0.8 : 2.0) / n);
        tap_ok(rc == 0 && fabs(var / cases[c].want_var - 1) < rel &&
                   fabs(mean) < 5 * sqrt(cases[c].want_var / n),
               "%s: mean %.2g, variance %.5g vs %.5g", cases[c].name, mean, var,
               cases[c].want_var);
        if (cases[c].uniform)
            tap_ok(absmax <= sqrt(3 * cases[c].want_var) &&
                       absmax > 0.99 * sqrt(3 * cases[c].want_var),
                   "%s: |w| <= bound %.5g, reaching %.5g", cases[c].name,
                   sqrt(3 * cases[c].want_var), absmax);
    }
    /* A conv weight [out 8, in 4, 3, 3]: fan_in = 36, kaiming bound sqrt(6/36). */
    bilo_tensor *K = bilo_zeros(BILO_F64, BILO_SHAPE(8, 4, 3, 3));
    tap_ok(bilo_nn_init_kaiming_uniform(K, 0, &rng) == 0 &&
               (moments(K, &mean, &var, &absmax), absmax <= sqrt(6.0 / 36) && absmax > 0.3),
           "kaiming_uniform on [8,4,3,3]: bound sqrt(6/36)");
    bilo_tensor *X = bilo_zeros(BILO_F64, BILO_SHAPE(8, 4, 3, 3));
    tap_ok(bilo_nn_init_xavier_uniform(X, 0, &rng) == 0 &&
               (moments(X, &mean, &var, &absmax), absmax <= sqrt(6.0 / (36 + 72))),
           "xavier_uniform on [8,4,3,3]: bound sqrt(6/(36+72))");
    bilo_rng r1 = bilo_rng_make(3, 0), r2 = bilo_rng_make(3, 0);
    bilo_tensor *A = bilo_zeros(BILO_F64, BILO_SHAPE(5)), *B = bilo_zeros(BILO_F64, BILO_SHAPE(5));
    bilo_nn_init_xavier_normal(A, 0, &r1);
    bilo_nn_init_xavier_normal(B, 0, &r2);
    int equal = 1;
    for (int i = 0; i < 5; i++) equal &= bilo_get_flat(A, i) == bilo_get_flat(B, i);
    tap_ok(equal && bilo_get_flat(A, 0) != 0, "initializers: same seed, same values");
    check_error(bilo_nn_init_kaiming_normal(bilo_zeros(BILO_I64, BILO_SHAPE(3)), 0, &rng) ==
                    BILO_EDTYPE,
                BILO_EDTYPE, "bilo_nn_init_kaiming_normal", "initializers: i64 tensor error");
    check_error(bilo_nn_init_xavier_uniform(W, 0, NULL) == BILO_ENULL, BILO_ENULL, "rng",
                "initializers: NULL rng error");
    bilo_scope_end();
}

/* The same composites in f32: values agree with an f64 loop to float precision. */
static void test_f32(void)
{
    bilo_scope_begin();
    const float xv[] = {1, -2, 0.5f, 3, 0.25f, -1}, wv[] = {0.5f, -1, 2, 0.3f, -0.7f, 1.5f};
    bilo_tensor *x = bilo_from_data(BILO_F32, BILO_SHAPE(2, 3), xv);
    bilo_tensor *W = bilo_from_data(BILO_F32, BILO_SHAPE(3, 2), wv);
    const int64_t yv[] = {1, 0};
    double want = 0;
    for (int i = 0; i < 2; i++) {
        double z[2] = {0, 0};
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 3; k++) z[j] += (double)xv[i * 3 + k] * wv[k * 2 + j];
        want += (log(exp(z[0]) + exp(z[1])) - z[yv[i]]) / 2;
    }
    bilo_tensor *loss =
        bilo_nn_cross_entropy(bilo_nn_linear(x, W, NULL), i64(2, yv), BILO_REDUCE_MEAN);
    tap_ok(loss && bilo_dtype_of(loss) == BILO_F32 && fabs(bilo_item(loss) - want) < 1e-5,
           "f32: cross_entropy of linear, %.7g vs %.7g", loss ? bilo_item(loss) : NAN, want);
    bilo_tensor *K = bilo_zeros(BILO_F32, BILO_SHAPE(300, 200));
    bilo_rng rng = bilo_rng_make(2, 0);
    double mean, var, absmax;
    int rc = bilo_nn_init_kaiming_normal(K, 0, &rng);
    moments(K, &mean, &var, &absmax);
    tap_ok(rc == 0 && fabs(var / (2.0 / 300) - 1) < 5 * sqrt(2.0 / 60000),
           "f32: kaiming_normal variance %.5g vs %.5g", var, 2.0 / 300);
    bilo_scope_end();
}

/* ---- losses ---- */

static bilo_tensor *fn_ce(bilo_tensor *const *in, void *labels)
{
    return bilo_nn_cross_entropy(in[0], labels, BILO_REDUCE_MEAN);
}
static bilo_tensor *fn_ce_none(bilo_tensor *const *in, void *labels)
{
    return bilo_nn_cross_entropy(in[0], labels, BILO_REDUCE_NONE);
}

static void test_cross_entropy(void)
{
    bilo_scope_begin();
    const double lv[] = {1, 2, 0.5, -1, 0.3, -0.2, 2.2, 0.1, -1.5, 0.7, 0.4, 3};
    const int64_t yv[] = {2, 0, 3};
    bilo_tensor *logits = f64(BILO_SHAPE(3, 4), lv), *labels = i64(3, yv);
    double per[3], sum = 0;
    for (int i = 0; i < 3; i++) {
        double z = 0;
        for (int c = 0; c < 4; c++) z += exp(lv[i * 4 + c]);
        per[i] = -log(exp(lv[i * 4 + yv[i]]) / z);
        sum += per[i];
    }
    tap_ok(max_diff(bilo_nn_cross_entropy(logits, labels, BILO_REDUCE_NONE), per, 3) < 1e-14,
           "cross_entropy NONE: per-row -log softmax by hand");
    double mean = sum / 3;
    tap_ok(max_diff(bilo_nn_cross_entropy(logits, labels, BILO_REDUCE_MEAN), &mean, 1) < 1e-14,
           "cross_entropy MEAN");
    tap_ok(max_diff(bilo_nn_cross_entropy(logits, labels, BILO_REDUCE_SUM), &sum, 1) < 1e-14,
           "cross_entropy SUM");
    /* Huge logits stay finite: log_softmax subtracts the max. */
    const double big[] = {1000, 0, -1000, 999};
    double want_big[] = {log1p(exp(-1000.0)), 1999 + log1p(exp(-1999.0))};
    tap_ok(max_diff(bilo_nn_cross_entropy(f64(BILO_SHAPE(2, 2), big), i64(2, (int64_t[]){0, 0}),
                                          BILO_REDUCE_NONE),
                    want_big, 2) < 1e-9,
           "cross_entropy: logits ±1000 stay finite");

    check_error(!bilo_nn_cross_entropy(logits, i64(3, (int64_t[]){2, 4, 0}), BILO_REDUCE_MEAN),
                BILO_ERANGE, "label 4 at row 1 is outside [0, 4)", "cross_entropy: label too big");
    check_error(!bilo_nn_cross_entropy(logits, i64(3, (int64_t[]){0, 1, -1}), BILO_REDUCE_MEAN),
                BILO_ERANGE, "label -1 at row 2", "cross_entropy: negative label");
    check_error(!bilo_nn_cross_entropy(logits, i64(2, yv), BILO_REDUCE_MEAN), BILO_ESHAPE,
                "logits [3,4] and labels [2]", "cross_entropy: row count mismatch");
    check_error(!bilo_nn_cross_entropy(logits, bilo_zeros(BILO_F64, BILO_SHAPE(3)),
                                       BILO_REDUCE_MEAN),
                BILO_EDTYPE, "labels are f64", "cross_entropy: float labels");
    check_error(!bilo_nn_cross_entropy(logits, labels, (bilo_reduction)7), BILO_EINVAL,
                "unknown reduction 7", "cross_entropy: bad reduction");
    bilo_tensor *in[] = {param(logits)};
    check_derivatives("cross_entropy MEAN", fn_ce, in, 1, labels);
    check_derivatives("cross_entropy NONE", fn_ce_none, in, 1, labels);
    bilo_scope_end();
}

static bilo_tensor *fn_mse(bilo_tensor *const *in, void *u)
{
    return bilo_nn_mse(in[0], in[1], BILO_REDUCE_MEAN);
}
static bilo_tensor *fn_bce(bilo_tensor *const *in, void *u)
{
    return bilo_nn_bce_with_logits(in[0], in[1], BILO_REDUCE_SUM);
}
static bilo_tensor *fn_l2(bilo_tensor *const *in, void *u)
{
    return bilo_nn_l2_penalty(in, 2, 0.3);
}

static void test_regression_losses(void)
{
    bilo_scope_begin();
    const double pv[] = {1, -2, 0.5, 4}, tv[] = {0.5, -1, 0.5, 2};
    bilo_tensor *pred = f64(BILO_SHAPE(2, 2), pv), *target = f64(BILO_SHAPE(2, 2), tv);
    const double sq[] = {0.25, 1, 0, 4}, mse_mean = 5.25 / 4, mse_sum = 5.25;
    tap_ok(max_diff(bilo_nn_mse(pred, target, BILO_REDUCE_NONE), sq, 4) == 0, "mse NONE");
    tap_ok(max_diff(bilo_nn_mse(pred, target, BILO_REDUCE_MEAN), &mse_mean, 1) < 1e-15, "mse MEAN");
    tap_ok(max_diff(bilo_nn_mse(pred, target, BILO_REDUCE_SUM), &mse_sum, 1) < 1e-15, "mse SUM");
    check_error(!bilo_nn_mse(pred, bilo_zeros(BILO_F64, BILO_SHAPE(4)), BILO_REDUCE_MEAN),
                BILO_ESHAPE, "shapes [2,2] and [4] differ", "mse: shape mismatch");
    bilo_tensor *in[] = {param(pred), param(target)};
    check_derivatives("mse", fn_mse, in, 2, NULL);

    /* BCE against the textbook -(t log σ(x) + (1 - t) log(1 - σ(x))). */
    const double xv[] = {-2, -0.4, 0.7, 3}, yv[] = {0, 1, 0.3, 1};
    double want[4];
    for (int i = 0; i < 4; i++) {
        double s = 1 / (1 + exp(-xv[i]));
        want[i] = -(yv[i] * log(s) + (1 - yv[i]) * log(1 - s));
    }
    bilo_tensor *x = f64(BILO_SHAPE(4), xv), *t = f64(BILO_SHAPE(4), yv);
    tap_ok(max_diff(bilo_nn_bce_with_logits(x, t, BILO_REDUCE_NONE), want, 4) < 1e-14,
           "bce_with_logits: textbook values");
    const double ext[] = {100, 100, -100, -100}, ext_t[] = {1, 0, 0, 1};
    const double ext_want[] = {exp(-100.0), 100, exp(-100.0), 100};
    bilo_tensor *be = bilo_nn_bce_with_logits(f64(BILO_SHAPE(4), ext), f64(BILO_SHAPE(4), ext_t),
                                              BILO_REDUCE_NONE);
    tap_ok(max_diff(be, ext_want, 4) < 1e-12, "bce_with_logits: stable at logits ±100");
    check_error(!bilo_nn_bce_with_logits(x, pred, BILO_REDUCE_MEAN), BILO_ESHAPE,
                "bilo_nn_bce_with_logits: shapes [4] and [2,2]", "bce: shape mismatch");
    bilo_tensor *bin[] = {param(x), param(t)};
    check_derivatives("bce_with_logits", fn_bce, bin, 2, NULL);

    /* l2: 0.3/2 · (1+4+0.25+16 + 9+1) */
    const double av[] = {1, -2, 0.5, 4}, bv[] = {3, -1};
    bilo_tensor *lin[] = {param(f64(BILO_SHAPE(2, 2), av)), param(f64(BILO_SHAPE(2), bv))};
    double l2 = 0.15 * 31.25;
    tap_ok(max_diff(bilo_nn_l2_penalty(lin, 2, 0.3), &l2, 1) < 1e-14, "l2_penalty by hand");
    check_derivatives("l2_penalty", fn_l2, lin, 2, NULL);
    check_error(!bilo_nn_l2_penalty(lin, 0, 0.3), BILO_EINVAL, "at least one tensor",
                "l2_penalty: no tensors");
    bilo_scope_end();
}

static void test_metrics(void)
{
    bilo_scope_begin();
    /* predictions: 1, 0, 2, 2, 1; labels: 1, 0, 1, 2, 0 → 3 of 5 right. */
    const double lv[] = {0, 5, 1, 3, 1, 2, 0, 1, 4, -1, 0, 2, 0.5, 0.9, 0.2};
    bilo_tensor *logits = f64(BILO_SHAPE(5, 3), lv);
    bilo_tensor *labels = i64(5, (int64_t[]){1, 0, 1, 2, 0});
    tap_close(bilo_nn_accuracy(logits, labels), 0.6, 0, 0, "accuracy: 3 of 5");
    bilo_tensor *cm = bilo_nn_confusion_matrix(logits, labels);
    const double want[] = {1, 1, 0, 0, 1, 1, 0, 0, 1};
    tap_ok(cm && bilo_dtype_of(cm) == BILO_I64 && bilo_dim(cm, 0) == 3 &&
               max_diff(cm, want, 9) == 0,
           "confusion matrix [true][predicted]");
    bilo_clear_error();
    tap_ok(isnan(bilo_nn_accuracy(logits, i64(5, (int64_t[]){1, 0, 3, 2, 0}))) &&
               strstr(bilo_last_error(), "label 3 at row 2"),
           "accuracy: bad label is NaN and an error");
    check_error(!bilo_nn_confusion_matrix(logits, i64(4, (int64_t[]){1, 0, 1, 2})), BILO_ESHAPE,
                "bilo_nn_confusion_matrix", "confusion: row mismatch");
    bilo_scope_end();
}

static void test_null_propagation(void)
{
    bilo_scope_begin();
    bilo_clear_error();
    bilo_tensor *x = bilo_ones(BILO_F64, BILO_SHAPE(2, 2));
    bilo_tensor *labels = i64(2, (int64_t[]){0, 1});
    bilo_rng rng = bilo_rng_make(1, 1);
    bool all_null = !bilo_nn_linear(NULL, x, NULL) && !bilo_nn_linear(x, NULL, NULL) &&
                    !bilo_nn_leaky_relu(NULL, 0.1) && !bilo_nn_elu(NULL, 1) &&
                    !bilo_nn_gelu(NULL) && !bilo_nn_gelu_tanh(NULL) && !bilo_nn_flatten(NULL) &&
                    !bilo_nn_embedding(NULL, labels) && !bilo_nn_embedding(x, NULL) &&
                    !bilo_nn_dropout(NULL, 0.5, true, &rng) &&
                    !bilo_nn_cross_entropy(NULL, labels, BILO_REDUCE_MEAN) &&
                    !bilo_nn_cross_entropy(x, NULL, BILO_REDUCE_MEAN) &&
                    !bilo_nn_mse(x, NULL, BILO_REDUCE_MEAN) &&
                    !bilo_nn_bce_with_logits(NULL, x, BILO_REDUCE_MEAN) &&
                    !bilo_nn_l2_penalty((bilo_tensor *[]){x, NULL}, 2, 1) &&
                    isnan(bilo_nn_accuracy(NULL, labels)) && !bilo_nn_confusion_matrix(x, NULL) &&
                    bilo_nn_init_xavier_uniform(NULL, 0, &rng) < 0;
    tap_ok(all_null && bilo_errcode() == 0, "NULL inputs propagate without a new error");
    bilo_scope_end();
}

/* ---- training ---- */

/* Three classes around well separated centres, each point within 0.6 of its centre. */
static void make_blobs(int64_t n, bilo_tensor **x, bilo_tensor **y)
{
    const double centre[3][2] = {{2, 0}, {-1, 1.7}, {-1, -1.7}};
    bilo_rng rng = bilo_rng_make(5, 0);
    *x = bilo_zeros(BILO_F64, BILO_SHAPE(n, 2));
    *y = bilo_zeros(BILO_I64, BILO_SHAPE(n));
    for (int64_t i = 0; i < n; i++) {
        int c = (int)(i % 3);
        double r = 0.6 * bilo_rng_uniform(&rng), a = 2 * M_PI * bilo_rng_uniform(&rng);
        bilo_set(*x, (int64_t[]){i, 0}, centre[c][0] + r * cos(a));
        bilo_set(*x, (int64_t[]){i, 1}, centre[c][1] + r * sin(a));
        bilo_set_flat(*y, i, c);
    }
}

static void test_mlp_training(void)
{
    bilo_scope_begin();
    bilo_tensor *x, *y;
    make_blobs(150, &x, &y);
    bilo_rng rng = bilo_rng_make(9, 0);
    bilo_tensor *p[4] = {bilo_zeros(BILO_F64, BILO_SHAPE(2, 16)),
                         bilo_zeros(BILO_F64, BILO_SHAPE(16)),
                         bilo_zeros(BILO_F64, BILO_SHAPE(16, 3)),
                         bilo_zeros(BILO_F64, BILO_SHAPE(3))};
    bilo_nn_init_xavier_uniform(p[0], 0, &rng);
    bilo_nn_init_xavier_uniform(p[2], 0, &rng);
    for (int i = 0; i < 4; i++) param(p[i]);
    double first = NAN, last = NAN;
    int rc = 0;
    for (int step = 0; step < 200 && rc == 0; step++) {
        bilo_scope_begin();
        bilo_tensor *h = bilo_tanh(bilo_nn_linear(x, p[0], p[1]));
        bilo_tensor *logits = bilo_nn_linear(h, p[2], p[3]);
        bilo_tensor *loss = bilo_nn_cross_entropy(logits, y, BILO_REDUCE_MEAN);
        bilo_tensor *g[4];
        rc = loss ? bilo_grad(&loss, 1, NULL, p, 4, g, 0) : -1;
        for (int i = 0; i < 4 && rc == 0; i++) rc = bilo_axpy_(p[i], -0.5, g[i]);
        if (loss && step == 0) first = bilo_item(loss);
        if (loss) last = bilo_item(loss);
        bilo_scope_end();
    }
    bilo_no_grad_begin();
    double acc = bilo_nn_accuracy(
        bilo_nn_linear(bilo_tanh(bilo_nn_linear(x, p[0], p[1])), p[2], p[3]), y);
    bilo_no_grad_end();
    tap_ok(rc == 0 && last < first, "mlp: 200 gradient steps, loss %.4f -> %.4f", first, last);
    tap_ok(acc >= 0.99, "mlp: training accuracy %.4f >= 0.99", acc);
    bilo_scope_end();
}

int main(void)
{
    test_linear();
    test_activations();
    test_flatten_embedding();
    test_dropout();
    test_initializers();
    test_f32();
    test_cross_entropy();
    test_regression_losses();
    test_metrics();
    test_null_propagation();
    test_mlp_training();
    return tap_done();
}
