/* bilo — conv2d, pooling and batch norm (compositions of public ops around bilo_im2col, so
   autograd differentiates them twice), and the 4-block CNN of few-shot learning. */
#include "bilo_nn.h"
#include "tensor_impl.h"

#include <math.h>

/* Output length of a sliding window along one axis (may be <= 0: no window fits). */
static int64_t out_len(int64_t in, int k, int stride, int pad, int dil)
{
    int64_t span = (int64_t)dil * (k - 1) + 1;
    return in + 2 * (int64_t)pad < span ? 0 : (in + 2 * (int64_t)pad - span) / stride + 1;
}

static bool check_image(const char *op, const char *what, const bilo_tensor *x)
{
    if (x->ndim == 4) return true;
    char s[BILO_SHAPE_BUF];
    bilo__fail(BILO_ESHAPE, "%s: %s %s is not [N, C, H, W]", op, what,
               bilo__shape_str(s, x->ndim, x->shape));
    return false;
}

/* A [C] vector v repeated over x's positions: [1, C] for x [N, C], [1, C, H, W] for an image
   batch (the outer product v ⊗ 1 over H·W). A [1, C, H, W] operand broadcasts over the batch
   axis alone, so the backward of the binary op using it sums contiguous rows, and the sum
   over H·W becomes the small product with the ones vector, instead of a reduction to
   [1, C, 1, 1] that strides across channels. */
static bilo_tensor *per_channel(bilo_tensor *v, const bilo_tensor *x)
{
    if (x->ndim == 2) return bilo_reshape(v, BILO_SHAPE(1, -1));
    bilo_tensor *ones = bilo_ones(x->dtype, BILO_SHAPE(x->shape[2] * x->shape[3]));
    return bilo_reshape(bilo_outer(v, ones), BILO_SHAPE(1, -1, x->shape[2], x->shape[3]));
}

/* ---- conv2d ---- */

static int or_default(int v, int dflt) { return v ? v : dflt; }

static bool conv_geometry_ok(const bilo_conv2d_opts *o)
{
    if (o->stride_h >= 1 && o->stride_w >= 1 && o->pad_h >= 0 && o->pad_w >= 0 &&
        o->dil_h >= 1 && o->dil_w >= 1)
        return true;
    bilo__fail(BILO_EINVAL,
               "bilo_nn_conv2d: stride (%d, %d) and dilation (%d, %d) must be >= 1, padding "
               "(%d, %d) >= 0",
               o->stride_h, o->stride_w, o->dil_h, o->dil_w, o->pad_h, o->pad_w);
    return false;
}

static bool conv_shapes_ok(const bilo_tensor *x, const bilo_tensor *w, const bilo_tensor *b)
{
    static const char op[] = "bilo_nn_conv2d";
    if (!check_image(op, "x", x) || !check_image(op, "weight", w)) return false;
    char sx[BILO_SHAPE_BUF], sw[BILO_SHAPE_BUF];
    if (w->shape[1] != x->shape[1] || w->shape[0] < 1) {
        bilo__fail(BILO_ESHAPE, "bilo_nn_conv2d: weight %s does not fit x %s (need [O, %lld, kh, kw])",
                   bilo__shape_str(sw, w->ndim, w->shape), bilo__shape_str(sx, x->ndim, x->shape),
                   (long long)x->shape[1]);
        return false;
    }
    if (w->shape[2] > INT32_MAX || w->shape[3] > INT32_MAX || w->shape[2] < 1 || w->shape[3] < 1) {
        bilo__fail(BILO_ESHAPE, "bilo_nn_conv2d: kernel of weight %s is empty or too large",
                   bilo__shape_str(sw, w->ndim, w->shape));
        return false;
    }
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0])) {
        bilo__fail(BILO_ESHAPE, "bilo_nn_conv2d: bias %s is not [%lld]",
                   bilo__shape_str(sx, b->ndim, b->shape), (long long)w->shape[0]);
        return false;
    }
    return true;
}

BILO_API bilo_tensor *bilo_nn_conv2d(bilo_tensor *x, bilo_tensor *weight, bilo_tensor *bias,
                                     const bilo_conv2d_opts *opts)
{
    if (!x || !weight) return NULL;
    const bilo_conv2d_opts given = opts ? *opts : (bilo_conv2d_opts){0};
    const bilo_conv2d_opts o = {
        .stride_h = or_default(given.stride_h, 1), .stride_w = or_default(given.stride_w, 1),
        .pad_h = given.pad_h, .pad_w = given.pad_w,
        .dil_h = or_default(given.dil_h, 1), .dil_w = or_default(given.dil_w, 1)};
    if (!conv_geometry_ok(&o) || !conv_shapes_ok(x, weight, bias)) return NULL;
    int64_t n = x->shape[0], outc = weight->shape[0];
    int kh = (int)weight->shape[2], kw = (int)weight->shape[3];
    int64_t oh = out_len(x->shape[2], kh, o.stride_h, o.pad_h, o.dil_h);
    int64_t ow = out_len(x->shape[3], kw, o.stride_w, o.pad_w, o.dil_w);
    if (oh < 1 || ow < 1) {
        char sx[BILO_SHAPE_BUF];
        return bilo__fail(BILO_ESHAPE,
                          "bilo_nn_conv2d: a %dx%d kernel (dilation %d, %d) does not fit x %s "
                          "padded by (%d, %d)",
                          kh, kw, o.dil_h, o.dil_w, bilo__shape_str(sx, x->ndim, x->shape),
                          o.pad_h, o.pad_w);
    }
    bilo_scope_begin();
    bilo_tensor *cols = bilo_im2col(x, kh, kw, o.stride_h, o.stride_w, o.pad_h, o.pad_w, o.dil_h,
                                    o.dil_w);
    /* [O, C·kh·kw] · [N, C·kh·kw, OH·OW] → [N, O, OH·OW]: one GEMM per image, weight shared. */
    bilo_tensor *y = bilo_matmul(bilo_reshape(weight, BILO_SHAPE(outc, -1)), cols);
    y = bilo_reshape(y, BILO_SHAPE(n, outc, oh, ow));
    if (bias && y) y = bilo_add(y, per_channel(bias, y));
    if (y) bilo_scope_return(y);
    bilo_scope_end();
    return y;
}

/* ---- pooling ---- */

typedef enum { POOL_MAX, POOL_AVG } pool_kind;

static bilo_tensor *pool2d(const char *op, pool_kind kind, bilo_tensor *x, int kernel, int stride,
                           int padding)
{
    if (!x) return NULL;
    if (!check_image(op, "x", x)) return NULL;
    stride = or_default(stride, kernel);
    if (kernel < 1 || stride < 1 || padding < 0 || padding > kernel / 2)
        return bilo__fail(BILO_EINVAL,
                          "%s: kernel %d and stride %d must be >= 1, padding %d in [0, kernel/2]",
                          op, kernel, stride, padding);
    int64_t n = x->shape[0], c = x->shape[1], h = x->shape[2], w = x->shape[3];
    int64_t oh = out_len(h, kernel, stride, padding, 1), ow = out_len(w, kernel, stride, padding, 1);
    if (oh < 1 || ow < 1) {
        char sx[BILO_SHAPE_BUF];
        return bilo__fail(BILO_ESHAPE, "%s: a %dx%d window does not fit x %s padded by %d", op,
                          kernel, kernel, bilo__shape_str(sx, x->ndim, x->shape), padding);
    }
    bilo_scope_begin();
    /* Every channel as a one-channel image, so a window's taps form one column. */
    bilo_tensor *cols = bilo_im2col(bilo_reshape(x, BILO_SHAPE(n * c, 1, h, w)), kernel, kernel,
                                    stride, stride, padding, padding, 1, 1);
    if (kind == POOL_MAX && padding > 0 && cols) {
        /* Padded taps read 0, which would beat negative inputs: make them -inf instead. The
           taps of an all-ones image mark which entries lie inside it. */
        bilo_tensor *inside = bilo_im2col(bilo_ones(x->dtype, BILO_SHAPE(1, 1, h, w)), kernel,
                                          kernel, stride, stride, padding, padding, 1, 1);
        cols = bilo_where(inside, cols, bilo_scalar(x->dtype, -INFINITY));
    }
    bilo_tensor *y = kind == POOL_MAX ? bilo_max(cols, 1, false) : bilo_mean(cols, 1, false);
    y = bilo_reshape(y, BILO_SHAPE(n, c, oh, ow));
    if (y) bilo_scope_return(y);
    bilo_scope_end();
    return y;
}

BILO_API bilo_tensor *bilo_nn_max_pool2d(bilo_tensor *x, int kernel, int stride, int padding)
{
    return pool2d("bilo_nn_max_pool2d", POOL_MAX, x, kernel, stride, padding);
}

BILO_API bilo_tensor *bilo_nn_avg_pool2d(bilo_tensor *x, int kernel, int stride, int padding)
{
    return pool2d("bilo_nn_avg_pool2d", POOL_AVG, x, kernel, stride, padding);
}

/* ---- batch norm ---- */

/* Mean over every axis of x but axis 1, as a [C] vector: sums first over the batch (whole
   contiguous rows), then over each channel's H·W positions, and only the [C] sums are scaled,
   so the backward spreads the gradient over x's size in one pass. */
static bilo_tensor *channel_mean(bilo_tensor *x)
{
    if (!x) return NULL;
    int64_t n = x->shape[0], c = x->shape[1];
    bilo_tensor *over_batch = bilo_sum(bilo_reshape(x, BILO_SHAPE(n, -1)), 0, false);
    bilo_tensor *sums = bilo_sum(bilo_reshape(over_batch, BILO_SHAPE(c, -1)), 1, false);
    return bilo_mul_scalar(sums, 1.0 / (double)(x->numel / c));
}

static bool channel_vec_ok(const char *what, const bilo_tensor *v, const bilo_tensor *x)
{
    if (!v) return true;
    char sv[BILO_SHAPE_BUF], sx[BILO_SHAPE_BUF];
    if (v->ndim != 1 || v->shape[0] != x->shape[1]) {
        bilo__fail(BILO_ESHAPE, "bilo_nn_batch_norm: %s %s is not [C] for x %s", what,
                   bilo__shape_str(sv, v->ndim, v->shape), bilo__shape_str(sx, x->ndim, x->shape));
        return false;
    }
    if (v->dtype != x->dtype) {
        bilo__fail(BILO_EDTYPE, "bilo_nn_batch_norm: %s is %s, x is %s", what,
                   bilo_dtype_name(v->dtype), bilo_dtype_name(x->dtype));
        return false;
    }
    return true;
}

static bool batch_norm_args_ok(bilo_tensor *x, bilo_tensor *const vec[4], bool training,
                               double momentum, double eps)
{
    static const char *const names[4] = {"gamma", "beta", "running_mean", "running_var"};
    char sx[BILO_SHAPE_BUF];
    if (x->ndim != 2 && x->ndim != 4) {
        bilo__fail(BILO_ESHAPE, "bilo_nn_batch_norm: x %s is neither [N, C] nor [N, C, H, W]",
                   bilo__shape_str(sx, x->ndim, x->shape));
        return false;
    }
    if (!bilo__check_float("bilo_nn_batch_norm", x)) return false;
    for (int i = 0; i < 4; i++)
        if (!channel_vec_ok(names[i], vec[i], x)) return false;
    if (!(momentum >= 0 && momentum <= 1) || !(eps > 0)) {
        bilo__fail(BILO_EINVAL, "bilo_nn_batch_norm: momentum %g must lie in [0, 1], eps %g > 0",
                   momentum, eps);
        return false;
    }
    if (!training && (!vec[2] || !vec[3])) {
        bilo__fail(BILO_ENULL, "bilo_nn_batch_norm: eval mode needs running_mean and running_var");
        return false;
    }
    if (training && (!vec[2]) != (!vec[3])) {
        bilo__fail(BILO_ENULL, "bilo_nn_batch_norm: give both running statistics or neither");
        return false;
    }
    if (training && x->numel < 2 * x->shape[1]) {
        bilo__fail(BILO_EINVAL, "bilo_nn_batch_norm: x %s has fewer than 2 values per channel",
                   bilo__shape_str(sx, x->ndim, x->shape));
        return false;
    }
    return true;
}

/* running ← (1 − momentum)·running + momentum·batch_stat, outside the graph. */
static int update_running(bilo_tensor *running, bilo_tensor *stat, double momentum)
{
    bilo_tensor *flat = bilo_reshape(stat, BILO_SHAPE(running->shape[0]));
    if (!flat) return bilo_errcode();
    int rc = bilo_scale_(running, 1 - momentum);
    return rc ? rc : bilo_axpy_(running, momentum, flat);
}

BILO_API bilo_tensor *bilo_nn_batch_norm(bilo_tensor *x, bilo_tensor *gamma, bilo_tensor *beta,
                                         bilo_tensor *running_mean, bilo_tensor *running_var,
                                         bool training, double momentum, double eps)
{
    if (!x) return NULL;
    bilo_tensor *const vec[4] = {gamma, beta, running_mean, running_var};
    if (!batch_norm_args_ok(x, vec, training, momentum, eps)) return NULL;
    bilo_scope_begin();
    bilo_tensor *mean = training ? channel_mean(x) : running_mean;
    bilo_tensor *centered = bilo_sub(x, per_channel(mean, x));
    bilo_tensor *var = training ? channel_mean(bilo_square(centered)) : running_var;
    /* gamma folds into the [C] scale, so x's size sees one product and one sum. */
    bilo_tensor *scale = bilo_rsqrt(bilo_add_scalar(var, eps));
    if (gamma) scale = bilo_mul(scale, gamma);
    bilo_tensor *y = bilo_mul(centered, per_channel(scale, x));
    if (beta) y = bilo_add(y, per_channel(beta, x));
    if (y && training && running_mean) {
        double count = (double)(x->numel / x->shape[1]);
        if (update_running(running_mean, mean, momentum) ||
            update_running(running_var, bilo_mul_scalar(var, count / (count - 1)), momentum))
            y = NULL;
    }
    if (y) bilo_scope_return(y);
    bilo_scope_end();
    return y;
}

/* ---- the 4-block CNN ---- */

enum { CNN_BLOCKS = 4, CNN_PER_BLOCK = 4, CNN_TENSORS = CNN_BLOCKS * CNN_PER_BLOCK + 2 };

typedef struct {
    int64_t in, hidden, classes;
    int64_t feat_h, feat_w; /* spatial size after the last block */
} cnn_dims;

static int cnn_dims_of(const char *op, const bilo_nn_cnn4 *m, cnn_dims *d)
{
    *d = (cnn_dims){0};
    if (!m) return bilo__fail_code(BILO_ENULL, "%s: NULL description", op);
    *d = (cnn_dims){.in = m->in_channels ? m->in_channels : 1,
                    .hidden = m->hidden ? m->hidden : 64,
                    .classes = m->n_classes,
                    .feat_h = m->height >> CNN_BLOCKS,
                    .feat_w = m->width >> CNN_BLOCKS};
    if (d->in < 1 || d->hidden < 1 || d->classes < 1)
        return bilo__fail_code(BILO_EINVAL,
                               "%s: in_channels %lld, hidden %lld and n_classes %lld must be >= 1",
                               op, (long long)d->in, (long long)d->hidden, (long long)d->classes);
    if (m->height < 16 || m->width < 16)
        return bilo__fail_code(BILO_EINVAL, "%s: input %lldx%lld is smaller than 16x16", op,
                               (long long)m->height, (long long)m->width);
    if (m->dtype != BILO_F32 && m->dtype != BILO_F64)
        return bilo__fail_code(BILO_EDTYPE, "%s: dtype must be f32 or f64", op);
    return 0;
}

int bilo_nn_cnn4_num_tensors(const bilo_nn_cnn4 *m)
{
    cnn_dims d;
    int rc = cnn_dims_of("bilo_nn_cnn4_num_tensors", m, &d);
    return rc < 0 ? rc : CNN_TENSORS;
}

int64_t bilo_nn_cnn4_num_params(const bilo_nn_cnn4 *m)
{
    cnn_dims d;
    int rc = cnn_dims_of("bilo_nn_cnn4_num_params", m, &d);
    if (rc < 0) return rc;
    int64_t total = 0, in = d.in;
    for (int b = 0; b < CNN_BLOCKS; b++, in = d.hidden) total += d.hidden * (in * 9 + 3);
    return total + (d.hidden * d.feat_h * d.feat_w + 1) * d.classes;
}

/* Shape of parameter i (of the 18, in order) into shape; returns its ndim. */
static int cnn_param_shape(const cnn_dims *d, int i, int64_t shape[4])
{
    if (i == CNN_TENSORS - 2) {
        shape[0] = d->hidden * d->feat_h * d->feat_w;
        shape[1] = d->classes;
        return 2;
    }
    if (i == CNN_TENSORS - 1) {
        shape[0] = d->classes;
        return 1;
    }
    if (i % CNN_PER_BLOCK == 0) {
        shape[0] = d->hidden;
        shape[1] = i == 0 ? d->in : d->hidden;
        shape[2] = shape[3] = 3;
        return 4;
    }
    shape[0] = d->hidden;
    return 1;
}

static int cnn_fill(bilo_tensor *t, int i, bilo_rng *rng)
{
    if (i == CNN_TENSORS - 2) return bilo_nn_init_xavier_uniform(t, 1.0, rng);
    if (i < CNN_TENSORS - 2 && i % CNN_PER_BLOCK == 0) return bilo_nn_init_kaiming_uniform(t, 0, rng);
    return bilo_fill_(t, i < CNN_TENSORS - 2 && i % CNN_PER_BLOCK == 2 ? 1.0 : 0.0);
}

static void release_all(bilo_tensor **ts, int n)
{
    for (int i = 0; i < n; i++) {
        bilo_release(ts[i]);
        ts[i] = NULL;
    }
}

int bilo_nn_cnn4_init(const bilo_nn_cnn4 *m, bilo_rng *rng, bilo_tensor **params)
{
    static const char op[] = "bilo_nn_cnn4_init";
    cnn_dims d;
    int rc = cnn_dims_of(op, m, &d);
    if (rc < 0) return rc;
    if (!rng || !params) return bilo__fail_code(BILO_ENULL, "%s: NULL rng or params", op);
    for (int i = 0; i < CNN_TENSORS; i++) {
        int64_t shape[4];
        int ndim = cnn_param_shape(&d, i, shape);
        params[i] = bilo_empty(m->dtype, ndim, shape);
        rc = params[i] ? cnn_fill(params[i], i, rng) : bilo_errcode();
        if (rc < 0) {
            release_all(params, i + 1);
            return rc;
        }
    }
    return 0;
}

int bilo_nn_cnn4_init_stats(const bilo_nn_cnn4 *m, bilo_tensor **stats)
{
    static const char op[] = "bilo_nn_cnn4_init_stats";
    cnn_dims d;
    int rc = cnn_dims_of(op, m, &d);
    if (rc < 0) return rc;
    if (!stats) return bilo__fail_code(BILO_ENULL, "%s: NULL stats", op);
    for (int i = 0; i < 2 * CNN_BLOCKS; i++) {
        stats[i] = bilo_full(m->dtype, BILO_SHAPE(d.hidden), i % 2 ? 1.0 : 0.0);
        if (!stats[i]) {
            release_all(stats, i);
            return bilo_errcode();
        }
    }
    return 0;
}

static bilo_tensor *cnn_block(bilo_tensor *h, bilo_tensor *const *p, bilo_tensor *const *stats,
                              bool training)
{
    static const bilo_conv2d_opts same = {.pad_h = 1, .pad_w = 1};
    h = bilo_nn_conv2d(h, p[0], p[1], &same);
    h = bilo_nn_batch_norm(h, p[2], p[3], stats ? stats[0] : NULL, stats ? stats[1] : NULL,
                           training, 0.1, 1e-5);
    /* relu and the max over a window commute exactly (gradients included: a window whose
       maximum is <= 0 passes none either way), so relu runs on the pooled quarter. */
    return bilo_relu(bilo_nn_max_pool2d(h, 2, 2, 0));
}

bilo_tensor *bilo_nn_cnn4_forward(const bilo_nn_cnn4 *m, bilo_tensor *const *params,
                                  bilo_tensor *const *stats, bilo_tensor *x, bool training)
{
    static const char op[] = "bilo_nn_cnn4_forward";
    cnn_dims d;
    if (cnn_dims_of(op, m, &d) < 0) return NULL;
    if (!params || !x) return NULL;
    for (int i = 0; i < CNN_TENSORS; i++)
        if (!params[i]) return NULL;
    if (!training && !stats)
        return bilo__fail(BILO_ENULL, "%s: eval mode needs the running statistics", op);
    char sx[BILO_SHAPE_BUF];
    if (x->ndim != 4 || x->shape[1] != d.in || x->shape[2] != m->height || x->shape[3] != m->width)
        return bilo__fail(BILO_ESHAPE, "%s: x %s is not [N, %lld, %lld, %lld]", op,
                          bilo__shape_str(sx, x->ndim, x->shape), (long long)d.in,
                          (long long)m->height, (long long)m->width);
    bilo_scope_begin();
    bilo_tensor *h = x;
    for (int b = 0; b < CNN_BLOCKS && h; b++)
        h = cnn_block(h, params + CNN_PER_BLOCK * b, stats ? stats + 2 * b : NULL, training);
    h = bilo_nn_linear(bilo_nn_flatten(h), params[CNN_TENSORS - 2], params[CNN_TENSORS - 1]);
    if (h) bilo_scope_return(h);
    bilo_scope_end();
    return h;
}
