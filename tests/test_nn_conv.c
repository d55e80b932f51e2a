/* conv2d, pooling, batch norm and the 4-block CNN: values against direct loops written here,
   gradcheck + gradgradcheck in f64, running-statistics updates, a few training steps of the
   CNN, and error paths. */
#include "bilo_autograd.h"
#include "bilo_nn.h"
#include "checks.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bilo_rng rng;

static bilo_tensor *randn4(int64_t a, int64_t b, int64_t c, int64_t d)
{
    return bilo_randn(BILO_F64, BILO_SHAPE(a, b, c, d), &rng);
}

static bilo_tensor *param(bilo_tensor *t)
{
    bilo_set_requires_grad(t, true);
    return t;
}

static double at4(bilo_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d)
{
    const int64_t *s = bilo_shape(t);
    return ((const double *)bilo_data(t))[((a * s[1] + b) * s[2] + c) * s[3] + d];
}

/* ---- conv2d ---- */

/* Direct cross-correlation: the 7 loops (n, o, oh, ow, c, ki, kj) of the definition. */
static void naive_conv(bilo_tensor *x, bilo_tensor *w, bilo_tensor *b, const bilo_conv2d_opts *o,
                       int64_t oh_n, int64_t ow_n, double *out)
{
    const int64_t *xs = bilo_shape(x), *ws = bilo_shape(w);
    for (int64_t n = 0; n < xs[0]; n++)
        for (int64_t oc = 0; oc < ws[0]; oc++)
            for (int64_t oh = 0; oh < oh_n; oh++)
                for (int64_t ow = 0; ow < ow_n; ow++) {
                    double acc = b ? bilo_get_flat(b, oc) : 0;
                    for (int64_t c = 0; c < xs[1]; c++)
                        for (int64_t ki = 0; ki < ws[2]; ki++)
                            for (int64_t kj = 0; kj < ws[3]; kj++) {
                                int64_t ih = oh * o->stride_h - o->pad_h + ki * o->dil_h;
                                int64_t iw = ow * o->stride_w - o->pad_w + kj * o->dil_w;
                                if (ih < 0 || ih >= xs[2] || iw < 0 || iw >= xs[3]) continue;
                                acc += at4(x, n, c, ih, iw) * at4(w, oc, c, ki, kj);
                            }
                    *out++ = acc;
                }
}

static void test_conv_values(void)
{
    static const struct {
        bilo_conv2d_opts o;
        bool bias;
        const char *name;
    } cases[] = {
        {{1, 1, 0, 0, 1, 1}, true, "stride 1, no padding"},
        {{2, 2, 1, 1, 1, 1}, true, "stride 2, padding 1"},
        {{2, 1, 0, 2, 2, 1}, false, "stride (2,1), padding (0,2), dilation (2,1), no bias"},
        {{1, 3, 2, 1, 1, 2}, true, "stride (1,3), padding (2,1), dilation (1,2)"},
        /* padding wider than the kernel: whole output columns and rows read only padding */
        {{3, 3, 2, 3, 1, 1}, true, "stride 3, padding (2,3) wider than the 3x2 kernel"},
        {{2, 2, 3, 3, 2, 2}, false, "stride 2, padding 3, dilation 2, no bias"},
        /* stride 1 and output width = input width: the taps copied as whole runs */
        {{1, 1, 1, 1, 1, 2}, true, "stride 1, padding 1, dilation (1,2): same width"},
        {{1, 1, 3, 1, 2, 2}, true, "stride 1, padding (3,1), dilation 2: same width"},
    };
    bilo_scope_begin();
    bilo_tensor *x = randn4(2, 3, 7, 6), *w = randn4(4, 3, 3, 2);
    bilo_tensor *b = bilo_randn(BILO_F64, BILO_SHAPE(4), &rng);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const bilo_conv2d_opts *o = &cases[k].o;
        int64_t oh = (7 + 2 * o->pad_h - o->dil_h * 2 - 1) / o->stride_h + 1;
        int64_t ow = (6 + 2 * o->pad_w - o->dil_w * 1 - 1) / o->stride_w + 1;
        double want[2 * 4 * 8 * 8];
        naive_conv(x, w, cases[k].bias ? b : NULL, o, oh, ow, want);
        bilo_tensor *y = bilo_nn_conv2d(x, w, cases[k].bias ? b : NULL, o);
        bool shape_ok = y && bilo_dim(y, 2) == oh && bilo_dim(y, 3) == ow;
        tap_ok(shape_ok && max_diff(y, want, 2 * 4 * oh * ow) < 1e-12, "conv2d %s: [2,4,%lld,%lld]",
               cases[k].name, (long long)oh, (long long)ow);
    }
    /* opts NULL is stride 1, no padding, no dilation. */
    double want[2 * 4 * 5 * 5];
    naive_conv(x, w, b, &(bilo_conv2d_opts){1, 1, 0, 0, 1, 1}, 5, 5, want);
    tap_ok(max_diff(bilo_nn_conv2d(x, w, b, NULL), want, 2 * 4 * 5 * 5) < 1e-12,
           "conv2d with NULL opts uses the defaults");
    bilo_scope_end();
}

static bilo_tensor *fn_conv(bilo_tensor *const *in, void *u)
{
    (void)u;
    static const bilo_conv2d_opts o = {.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1};
    return bilo_nn_conv2d(in[0], in[1], in[2], &o);
}

static bilo_tensor *fn_conv_dilated(bilo_tensor *const *in, void *u)
{
    (void)u;
    static const bilo_conv2d_opts o = {.stride_w = 2, .pad_h = 2, .dil_h = 2};
    return bilo_nn_conv2d(in[0], in[1], NULL, &o);
}

static bilo_tensor *fn_conv_wide_padding(bilo_tensor *const *in, void *u)
{
    (void)u;
    static const bilo_conv2d_opts o = {.stride_h = 3, .stride_w = 2, .pad_h = 3, .pad_w = 4};
    return bilo_nn_conv2d(in[0], in[1], in[2], &o);
}

static void test_conv_derivatives(void)
{
    bilo_scope_begin();
    bilo_tensor *in[3] = {param(randn4(2, 2, 5, 4)), param(randn4(3, 2, 3, 3)),
                          param(bilo_randn(BILO_F64, BILO_SHAPE(3), &rng))};
    check_derivatives("conv2d stride 2 padding 1 (x, weight, bias)", fn_conv, in, 3, NULL);
    check_derivatives("conv2d dilation 2 (x, weight)", fn_conv_dilated, in, 2, NULL);
    check_derivatives("conv2d stride (3,2), padding (3,4) wider than the kernel (x, weight, bias)",
                      fn_conv_wide_padding, in, 3, NULL);
    bilo_scope_end();
}

/* ---- pooling ---- */

/* Direct pooling of every window: max over taps inside the image, or the sum of those taps
   divided by kernel² (padding counts as zeros). */
static void naive_pool(bilo_tensor *x, bool is_max, int k, int s, int p, int64_t oh_n,
                       int64_t ow_n, double *out)
{
    const int64_t *xs = bilo_shape(x);
    for (int64_t n = 0; n < xs[0]; n++)
        for (int64_t c = 0; c < xs[1]; c++)
            for (int64_t oh = 0; oh < oh_n; oh++)
                for (int64_t ow = 0; ow < ow_n; ow++) {
                    double acc = is_max ? -INFINITY : 0;
                    for (int ki = 0; ki < k; ki++)
                        for (int kj = 0; kj < k; kj++) {
                            int64_t ih = oh * s - p + ki, iw = ow * s - p + kj;
                            if (ih < 0 || ih >= xs[2] || iw < 0 || iw >= xs[3]) continue;
                            double v = at4(x, n, c, ih, iw);
                            acc = is_max ? fmax(acc, v) : acc + v;
                        }
                    *out++ = is_max ? acc : acc / (k * k);
                }
}

static void test_pool_values(void)
{
    static const struct {
        int k, s, p;
    } cases[] = {{2, 0, 0}, {3, 2, 1}, {3, 1, 1}, {2, 3, 0}, {2, 2, 1}, {3, 3, 1}};
    bilo_scope_begin();
    /* Shifted down so most values are negative: padding must not win a max. */
    bilo_tensor *x = bilo_add_scalar(randn4(2, 3, 7, 6), -2.0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int k = cases[i].k, s = cases[i].s ? cases[i].s : k, p = cases[i].p;
        int64_t oh = (7 + 2 * p - k) / s + 1, ow = (6 + 2 * p - k) / s + 1;
        double want[2 * 3 * 7 * 6];
        naive_pool(x, true, k, s, p, oh, ow, want);
        tap_ok(max_diff(bilo_nn_max_pool2d(x, k, cases[i].s, p), want, 6 * oh * ow) < 1e-15,
               "max_pool2d kernel %d stride %d padding %d", k, cases[i].s, p);
        naive_pool(x, false, k, s, p, oh, ow, want);
        tap_ok(max_diff(bilo_nn_avg_pool2d(x, k, cases[i].s, p), want, 6 * oh * ow) < 1e-14,
               "avg_pool2d kernel %d stride %d padding %d", k, cases[i].s, p);
    }
    bilo_scope_end();
}

static bilo_tensor *fn_max_pool(bilo_tensor *const *in, void *u)
{
    const int *ksp = u;
    return bilo_nn_max_pool2d(in[0], ksp[0], ksp[1], ksp[2]);
}

static bilo_tensor *fn_avg_pool(bilo_tensor *const *in, void *u)
{
    const int *ksp = u;
    return bilo_nn_avg_pool2d(in[0], ksp[0], ksp[1], ksp[2]);
}

static void test_pool_derivatives(void)
{
    bilo_scope_begin();
    /* Continuous random inputs: no ties, so the max is differentiable at the point. */
    bilo_tensor *x = param(bilo_add_scalar(randn4(2, 2, 5, 5), -1.0));
    int k2[3] = {2, 2, 0}, k3[3] = {3, 2, 1};
    check_derivatives("max_pool2d 2x2", fn_max_pool, &x, 1, k2);
    check_derivatives("max_pool2d 3x3 stride 2 padding 1", fn_max_pool, &x, 1, k3);
    check_derivatives("avg_pool2d 2x2", fn_avg_pool, &x, 1, k2);
    check_derivatives("avg_pool2d 3x3 stride 2 padding 1", fn_avg_pool, &x, 1, k3);
    bilo_scope_end();
}

/* ---- batch norm ---- */

static void test_batch_norm_values(void)
{
    enum { N = 3, C = 2, H = 2, W = 3, M = N * H * W };
    bilo_scope_begin();
    bilo_tensor *x = randn4(N, C, H, W);
    double g[C] = {1.5, -0.5}, bt[C] = {0.25, 2.0}, rm0[C] = {0.1, -0.2}, rv0[C] = {2.0, 0.5};
    bilo_tensor *gamma = bilo_from_data(BILO_F64, BILO_SHAPE(C), g);
    bilo_tensor *beta = bilo_from_data(BILO_F64, BILO_SHAPE(C), bt);
    bilo_tensor *rm = bilo_from_data(BILO_F64, BILO_SHAPE(C), rm0);
    bilo_tensor *rv = bilo_from_data(BILO_F64, BILO_SHAPE(C), rv0);
    const double mom = 0.3, eps = 1e-3;
    double want[N * C * H * W], want_eval[N * C * H * W], want_rm[C], want_rv[C];
    for (int c = 0; c < C; c++) {
        double sum = 0, sq = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < H * W; i++) sum += at4(x, n, c, i / W, i % W);
        double mean = sum / M;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < H * W; i++) sq += pow(at4(x, n, c, i / W, i % W) - mean, 2);
        double var = sq / M;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < H * W; i++) {
                double v = at4(x, n, c, i / W, i % W);
                want[(n * C + c) * H * W + i] = g[c] * (v - mean) / sqrt(var + eps) + bt[c];
                want_eval[(n * C + c) * H * W + i] = g[c] * (v - rm0[c]) / sqrt(rv0[c] + eps) + bt[c];
            }
        want_rm[c] = (1 - mom) * rm0[c] + mom * mean;
        want_rv[c] = (1 - mom) * rv0[c] + mom * sq / (M - 1);
    }
    bilo_tensor *eval = bilo_nn_batch_norm(x, gamma, beta, rm, rv, false, mom, eps);
    tap_ok(max_diff(eval, want_eval, N * C * H * W) < 1e-12, "batch_norm eval uses running stats");
    tap_ok(max_diff(rm, rm0, C) == 0 && max_diff(rv, rv0, C) == 0,
           "batch_norm eval leaves running stats alone");
    bilo_tensor *y = bilo_nn_batch_norm(x, gamma, beta, rm, rv, true, mom, eps);
    tap_ok(max_diff(y, want, N * C * H * W) < 1e-12, "batch_norm training [N,C,H,W] values");
    tap_ok(max_diff(rm, want_rm, C) < 1e-14, "running_mean update");
    tap_ok(max_diff(rv, want_rv, C) < 1e-14, "running_var update (unbiased)");

    /* [N, C] input without affine parameters: (x - mean)/sqrt(var + eps) per column. */
    double x2d[8] = {1, 10, 2, 20, 3, 30, 6, 40};
    bilo_tensor *x2 = bilo_from_data(BILO_F64, BILO_SHAPE(4, 2), x2d);
    double want2[8];
    for (int c = 0; c < 2; c++) {
        double mean = c ? 25.0 : 3.0, var = c ? 125.0 : 3.5; /* by hand */
        for (int n = 0; n < 4; n++) want2[n * 2 + c] = (x2d[n * 2 + c] - mean) / sqrt(var + 1e-5);
    }
    tap_ok(max_diff(bilo_nn_batch_norm(x2, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), want2, 8) <
               1e-12,
           "batch_norm training [N,C] without gamma, beta, running stats");
    bilo_scope_end();
}

static bilo_tensor *fn_bn(bilo_tensor *const *in, void *u)
{
    (void)u;
    return bilo_nn_batch_norm(in[0], in[1], in[2], NULL, NULL, true, 0.1, 1e-5);
}

static bilo_tensor *fn_bn_plain(bilo_tensor *const *in, void *u)
{
    (void)u;
    return bilo_nn_batch_norm(in[0], NULL, NULL, NULL, NULL, true, 0.1, 1e-5);
}

/* Eval mode with the running statistics in u (mean, then var). */
static bilo_tensor *fn_bn_eval(bilo_tensor *const *in, void *u)
{
    bilo_tensor *const *running = u;
    return bilo_nn_batch_norm(in[0], in[1], in[2], running[0], running[1], false, 0.1, 1e-5);
}

static void test_batch_norm_derivatives(void)
{
    bilo_scope_begin();
    bilo_tensor *in4[3] = {param(randn4(3, 2, 2, 2)),
                           param(bilo_randn(BILO_F64, BILO_SHAPE(2), &rng)),
                           param(bilo_randn(BILO_F64, BILO_SHAPE(2), &rng))};
    check_derivatives("batch_norm [N,C,H,W] training (x, gamma, beta)", fn_bn, in4, 3, NULL);
    bilo_tensor *in2[3] = {param(bilo_randn(BILO_F64, BILO_SHAPE(5, 3), &rng)),
                           param(bilo_randn(BILO_F64, BILO_SHAPE(3), &rng)),
                           param(bilo_randn(BILO_F64, BILO_SHAPE(3), &rng))};
    check_derivatives("batch_norm [N,C] training (x, gamma, beta)", fn_bn, in2, 3, NULL);
    bilo_tensor *odd = param(randn4(2, 3, 3, 5));
    check_derivatives("batch_norm [2,3,3,5] training, no gamma or beta", fn_bn_plain, &odd, 1, NULL);
    bilo_tensor *in_eval[3] = {odd, param(bilo_randn(BILO_F64, BILO_SHAPE(3), &rng)),
                               param(bilo_randn(BILO_F64, BILO_SHAPE(3), &rng))};
    bilo_tensor *running[2] = {bilo_randn(BILO_F64, BILO_SHAPE(3), &rng),
                               bilo_add_scalar(bilo_rand(BILO_F64, BILO_SHAPE(3), &rng), 0.5)};
    check_derivatives("batch_norm [2,3,3,5] eval (x, gamma, beta)", fn_bn_eval, in_eval, 3, running);
    bilo_scope_end();
}

/* ---- CNN ---- */

static void test_cnn4(void)
{
    const bilo_nn_cnn4 m = {.height = 28, .width = 28, .hidden = 4, .n_classes = 3,
                            .dtype = BILO_F64};
    enum { T = 18 };
    tap_ok(bilo_nn_cnn4_num_tensors(&m) == T, "cnn4 has 18 parameter tensors");
    /* conv: 4·(1·9+3) + 3·4·(4·9+3); head: (4·1·1 + 1)·3 */
    tap_ok(bilo_nn_cnn4_num_params(&m) == 48 + 3 * 4 * 39 + 15, "cnn4 parameter count");
    const bilo_nn_cnn4 dflt = {.height = 28, .width = 28, .n_classes = 5};
    tap_ok(bilo_nn_cnn4_num_params(&dflt) == 64 * 12 + 3 * 64 * (64 * 9 + 3) + 65 * 5,
           "cnn4 defaults: 1 input channel, 64 hidden");

    bilo_tensor *p[T], *stats[8];
    bilo_rng init = bilo_rng_make(7, 0);
    tap_ok(bilo_nn_cnn4_init(&m, &init, p) == 0 && bilo_nn_cnn4_init_stats(&m, stats) == 0,
           "cnn4 init");
    double bound = sqrt(6.0 / 9), worst = 0;
    for (int64_t i = 0; i < bilo_numel(p[0]); i++) worst = fmax(worst, fabs(bilo_get_flat(p[0], i)));
    tap_ok(worst <= bound && worst > 0.5 * bound && bilo_get_flat(p[2], 0) == 1 &&
               bilo_get_flat(p[3], 0) == 0 && bilo_get_flat(stats[1], 0) == 1,
           "cnn4 init: Kaiming bound, gamma 1, beta 0, running var 1");
    for (int i = 0; i < T; i++) bilo_set_requires_grad(p[i], true);

    bilo_scope_begin();
    bilo_tensor *x = bilo_randn(BILO_F64, BILO_SHAPE(6, 1, 28, 28), &rng);
    int64_t lab[6] = {0, 1, 2, 0, 1, 2};
    bilo_tensor *labels = bilo_from_data(BILO_I64, BILO_SHAPE(6), lab);
    bilo_tensor *logits = bilo_nn_cnn4_forward(&m, p, stats, x, true);
    tap_ok(logits && bilo_ndim(logits) == 2 && bilo_dim(logits, 0) == 6 && bilo_dim(logits, 1) == 3,
           "cnn4 forward on 28x28: logits [6,3]");
    tap_ok(bilo_get_flat(stats[0], 0) != 0, "cnn4 training forward updates running stats");
    bilo_tensor *ev = bilo_nn_cnn4_forward(&m, p, stats, x, false);
    tap_ok(ev && bilo_dim(ev, 1) == 3, "cnn4 eval forward");

    double first = NAN, last = NAN;
    for (int step = 0; step < 8; step++) {
        bilo_scope_begin();
        bilo_tensor *loss = bilo_nn_cross_entropy(bilo_nn_cnn4_forward(&m, p, stats, x, true),
                                                  labels, BILO_REDUCE_MEAN);
        bilo_tensor *g[T];
        int rc = bilo_grad(&loss, 1, NULL, p, T, g, 0);
        if (step == 0) first = bilo_item(loss);
        last = bilo_item(loss);
        for (int i = 0; i < T && rc == 0; i++) bilo_axpy_(p[i], -0.1, g[i]);
        bilo_scope_end();
    }
    tap_ok(last < 0.7 * first, "cnn4: 8 gradient steps lower the loss (%.4f -> %.4f)", first, last);

    /* Parameters and running statistics through one file into a fresh model. */
    bilo_tensor *saved[T + 8], *fresh[T + 8];
    for (int i = 0; i < T; i++) saved[i] = p[i];
    for (int i = 0; i < 8; i++) saved[T + i] = stats[i];
    bilo_rng other = bilo_rng_make(8, 0);
    bilo_nn_cnn4_init(&m, &other, fresh);
    bilo_nn_cnn4_init_stats(&m, fresh + T);
    char path[] = "/tmp/bilo_cnn4_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    int saved_rc = bilo_save_params(path, saved, T + 8);
    int loaded_rc = bilo_load_params(path, fresh, T + 8);
    remove(path);
    bilo_tensor *want = bilo_nn_cnn4_forward(&m, p, stats, x, false);
    bilo_tensor *got = bilo_nn_cnn4_forward(&m, fresh, fresh + T, x, false);
    double reload_diff = INFINITY;
    if (want && got)
        reload_diff = max_diff(got, (const double *)bilo_data(want), bilo_numel(want));
    tap_ok(saved_rc == 0 && loaded_rc == 0 && reload_diff == 0,
           "cnn4: saved and reloaded parameters and statistics give identical eval logits");
    bilo_scope_end();
    for (int i = 0; i < T; i++) bilo_release(p[i]);
    for (int i = 0; i < 8; i++) bilo_release(stats[i]);
}

enum { CNN_T = 18 };

/* The gradients of the mean cross-entropy of the cnn4 logits (training mode, no running
   statistics) into g; the logits are returned. */
static bilo_tensor *cnn4_grads(const bilo_nn_cnn4 *m, bilo_tensor *const *p, bilo_tensor *x,
                               bilo_tensor *labels, bilo_tensor **g)
{
    bilo_tensor *logits = bilo_nn_cnn4_forward(m, p, NULL, x, true);
    bilo_tensor *loss = bilo_nn_cross_entropy(logits, labels, BILO_REDUCE_MEAN);
    return bilo_grad(&loss, 1, NULL, p, CNN_T, g, 0) == 0 ? logits : NULL;
}

/* The same network written out block by block in the textbook order conv, batch norm, relu,
   max pool. */
static bilo_tensor *cnn4_textbook(bilo_tensor *const *p, bilo_tensor *x)
{
    static const bilo_conv2d_opts same = {.pad_h = 1, .pad_w = 1};
    for (int b = 0; b < 4; b++) {
        bilo_tensor *const *q = p + 4 * b;
        x = bilo_nn_batch_norm(bilo_nn_conv2d(x, q[0], q[1], &same), q[2], q[3], NULL, NULL, true,
                               0.1, 1e-5);
        x = bilo_nn_max_pool2d(bilo_relu(x), 2, 2, 0);
    }
    return bilo_nn_linear(bilo_nn_flatten(x), p[16], p[17]);
}

static double max_abs_diff(bilo_tensor *a, bilo_tensor *b)
{
    if (!a || !b || bilo_numel(a) != bilo_numel(b)) return INFINITY;
    double worst = 0;
    for (int64_t i = 0; i < bilo_numel(a); i++)
        worst = fmax(worst, fabs(bilo_get_flat(a, i) - bilo_get_flat(b, i)));
    return worst;
}

/* cnn4 pools before its relu; the textbook order must give the same logits and gradients. */
static void test_cnn4_matches_textbook_order(void)
{
    const bilo_nn_cnn4 m = {.height = 28, .width = 28, .hidden = 3, .n_classes = 4,
                            .dtype = BILO_F64};
    bilo_tensor *p[CNN_T];
    bilo_rng init = bilo_rng_make(11, 0);
    if (bilo_nn_cnn4_init(&m, &init, p) != 0) {
        tap_ok(0, "cnn4 init: %s", bilo_last_error());
        return;
    }
    for (int i = 0; i < CNN_T; i++) bilo_set_requires_grad(p[i], true);
    bilo_scope_begin();
    bilo_tensor *x = bilo_randn(BILO_F64, BILO_SHAPE(5, 1, 28, 28), &rng);
    bilo_tensor *labels = bilo_from_data(BILO_I64, BILO_SHAPE(5), (int64_t[]){0, 1, 2, 3, 1});
    bilo_tensor *g[CNN_T], *g_ref[CNN_T];
    bilo_tensor *logits = cnn4_grads(&m, p, x, labels, g);
    bilo_tensor *ref = cnn4_textbook(p, x);
    bilo_tensor *ref_loss = bilo_nn_cross_entropy(ref, labels, BILO_REDUCE_MEAN);
    bool ok = logits && bilo_grad(&ref_loss, 1, NULL, p, CNN_T, g_ref, 0) == 0;
    double worst = ok ? max_abs_diff(logits, ref) : INFINITY;
    for (int i = 0; ok && i < CNN_T; i++) worst = fmax(worst, max_abs_diff(g[i], g_ref[i]));
    tap_ok(ok && worst < 1e-12, "cnn4 logits and gradients equal conv-BN-relu-pool's (max diff %.3g)",
           worst);
    bilo_scope_end();
    for (int i = 0; i < CNN_T; i++) bilo_release(p[i]);
}

static bool same_bits(bilo_tensor *a, bilo_tensor *b)
{
    return a && b && bilo_numel(a) == bilo_numel(b) &&
           !memcmp(bilo_data(a), bilo_data(b), (size_t)bilo_numel(a) * sizeof(float));
}

/* f32 cnn4 gradients at 1 and 2 threads, on sizes large enough to split the work. */
static void test_cnn4_thread_independent(void)
{
    const bilo_nn_cnn4 m = {.height = 28, .width = 28, .hidden = 16, .n_classes = 10,
                            .dtype = BILO_F32};
    bilo_tensor *p[CNN_T];
    bilo_rng init = bilo_rng_make(12, 0);
    if (bilo_nn_cnn4_init(&m, &init, p) != 0) {
        tap_ok(0, "cnn4 init: %s", bilo_last_error());
        return;
    }
    for (int i = 0; i < CNN_T; i++) bilo_set_requires_grad(p[i], true);
    bilo_scope_begin();
    bilo_tensor *x = bilo_randn(BILO_F32, BILO_SHAPE(32, 1, 28, 28), &rng);
    bilo_tensor *labels = bilo_zeros(BILO_I64, BILO_SHAPE(32));
    for (int64_t i = 0; i < 32; i++) bilo_set_flat(labels, i, (double)(i % 10));
    bilo_tensor *g1[CNN_T], *g2[CNN_T];
    int threads = bilo_get_num_threads();
    bilo_set_num_threads(1);
    bilo_tensor *y1 = cnn4_grads(&m, p, x, labels, g1);
    bilo_set_num_threads(2);
    bilo_tensor *y2 = cnn4_grads(&m, p, x, labels, g2);
    bilo_set_num_threads(threads);
    bool same = same_bits(y1, y2);
    for (int i = 0; same && i < CNN_T; i++) same = same_bits(g1[i], g2[i]);
    tap_ok(same, "cnn4 f32 logits and gradients are bit-identical at 1 and 2 threads");
    bilo_scope_end();
    for (int i = 0; i < CNN_T; i++) bilo_release(p[i]);
}

/* ---- errors ---- */

static void test_errors(void)
{
    bilo_scope_begin();
    bilo_tensor *x = randn4(2, 3, 5, 5), *w = randn4(4, 2, 3, 3), *w3 = randn4(4, 3, 3, 3);
    bilo_tensor *b = bilo_zeros(BILO_F64, BILO_SHAPE(3));
    check_error(!bilo_nn_conv2d(x, w, NULL, NULL), BILO_ESHAPE, "does not fit x [2,3,5,5]",
                "conv2d: channel mismatch");
    check_error(!bilo_nn_conv2d(x, w3, b, NULL), BILO_ESHAPE, "bias [3] is not [4]",
                "conv2d: bias length");
    check_error(!bilo_nn_conv2d(x, w3, NULL, &(bilo_conv2d_opts){.stride_h = -1}), BILO_EINVAL,
                "stride (-1, 1)", "conv2d: negative stride");
    check_error(!bilo_nn_conv2d(x, w3, NULL, &(bilo_conv2d_opts){.dil_h = 3}), BILO_ESHAPE,
                "does not fit", "conv2d: dilated kernel larger than the image");
    check_error(!bilo_nn_conv2d(bilo_reshape(x, BILO_SHAPE(6, 25)), w3, NULL, NULL), BILO_ESHAPE,
                "x [6,25] is not [N, C, H, W]", "conv2d: 2-D input");
    bilo_clear_error();
    tap_ok(!bilo_nn_conv2d(NULL, w3, NULL, NULL) && bilo_errcode() == 0,
           "conv2d: NULL input propagates without a new error");
    check_error(!bilo_nn_max_pool2d(x, 2, 2, 2), BILO_EINVAL, "padding 2 in [0, kernel/2]",
                "max_pool2d: padding over kernel/2");
    check_error(!bilo_nn_avg_pool2d(x, 6, 1, 0), BILO_ESHAPE, "6x6 window does not fit",
                "avg_pool2d: window larger than the image");
    check_error(!bilo_nn_batch_norm(x, NULL, NULL, NULL, NULL, false, 0.1, 1e-5), BILO_ENULL,
                "eval mode needs", "batch_norm: eval without running stats");
    check_error(!bilo_nn_batch_norm(x, b, NULL, NULL, NULL, true, 1.5, 1e-5), BILO_EINVAL,
                "momentum 1.5", "batch_norm: momentum out of range");
    check_error(!bilo_nn_batch_norm(x, bilo_zeros(BILO_F64, BILO_SHAPE(4)), NULL, NULL, NULL, true,
                                    0.1, 1e-5),
                BILO_ESHAPE, "gamma [4] is not [C]", "batch_norm: gamma length");
    check_error(!bilo_nn_batch_norm(bilo_zeros(BILO_F64, BILO_SHAPE(1, 3)), NULL, NULL, NULL, NULL,
                                    true, 0.1, 1e-5),
                BILO_EINVAL, "fewer than 2 values per channel", "batch_norm: one sample");
    const bilo_nn_cnn4 small = {.height = 12, .width = 28, .n_classes = 2};
    check_error(bilo_nn_cnn4_num_tensors(&small) < 0, BILO_EINVAL, "12x28 is smaller than 16x16",
                "cnn4: input too small");
    const bilo_nn_cnn4 m = {.height = 16, .width = 16, .hidden = 2, .n_classes = 2,
                            .dtype = BILO_F64};
    bilo_tensor *p[18];
    bilo_rng r = bilo_rng_make(1, 1);
    bilo_nn_cnn4_init(&m, &r, p);
    check_error(!bilo_nn_cnn4_forward(&m, p, NULL, x, true), BILO_ESHAPE,
                "x [2,3,5,5] is not [N, 1, 16, 16]", "cnn4: wrong input shape");
    check_error(!bilo_nn_cnn4_forward(&m, p, NULL, randn4(1, 1, 16, 16), false), BILO_ENULL,
                "eval mode needs", "cnn4: eval without running stats");
    bilo_scope_end();
}

int main(void)
{
    rng = bilo_rng_make(2024, 0);
    test_conv_values();
    test_conv_derivatives();
    test_pool_values();
    test_pool_derivatives();
    test_batch_norm_values();
    test_batch_norm_derivatives();
    test_cnn4();
    test_cnn4_matches_textbook_order();
    test_cnn4_thread_independent();
    test_errors();
    return tap_done();
}
