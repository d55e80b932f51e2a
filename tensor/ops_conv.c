/* im2col and its adjoint col2im: the patch extraction convolution and pooling are built on.
   Both are linear, so each is the other's backward and second order comes for free. Work is
   split over (n, c) planes only: col2im sums every contribution to a plane on one thread in
   a fixed order, so results are bit-identical at any thread count. */
#include "parallel.h"
#include "tensor_impl.h"

#include <string.h>

/* Sizes of one im2col/col2im: image [N, C, H, W], kernel kh x kw, output OH x OW. */
typedef struct {
    int64_t N, C, H, W;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    int64_t OH, OW;
} conv_geom;

static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d)
{
    int64_t span = in + 2 * p - d * (k - 1) - 1;
    return span < 0 ? 0 : span / s + 1;
}

/* Fill g from the image size and the op's eight parameters; false and an error naming op
   when a parameter is out of range or the output would be empty. */
static bool geom_make(const char *op, int64_t N, int64_t C, int64_t H, int64_t W,
                      const int64_t p[8], conv_geom *g)
{
    *g = (conv_geom){N, C, H, W, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], 0, 0};
    if (g->kh < 1 || g->kw < 1 || g->sh < 1 || g->sw < 1 || g->dh < 1 || g->dw < 1 ||
        g->ph < 0 || g->pw < 0) {
        bilo__fail(BILO_EINVAL,
                   "%s: kernel %lldx%lld, stride %lldx%lld and dilation %lldx%lld must be "
                   "positive and padding %lldx%lld non-negative",
                   op, (long long)g->kh, (long long)g->kw, (long long)g->sh, (long long)g->sw,
                   (long long)g->dh, (long long)g->dw, (long long)g->ph, (long long)g->pw);
        return false;
    }
    g->OH = out_size(H, g->kh, g->sh, g->ph, g->dh);
    g->OW = out_size(W, g->kw, g->sw, g->pw, g->dw);
    if (g->OH < 1 || g->OW < 1) {
        bilo__fail(BILO_ESHAPE,
                   "%s: output size %lldx%lld < 1 for image %lldx%lld with kernel %lldx%lld, "
                   "stride %lldx%lld, padding %lldx%lld, dilation %lldx%lld",
                   op, (long long)g->OH, (long long)g->OW, (long long)H, (long long)W,
                   (long long)g->kh, (long long)g->kw, (long long)g->sh, (long long)g->sw,
                   (long long)g->ph, (long long)g->pw, (long long)g->dh, (long long)g->dw);
        return false;
    }
    return true;
}

/* The shape of the columns, [N, C*kh*kw, OH*OW]; false and an error when it overflows. */
static bool cols_shape(const char *op, const conv_geom *g, int64_t shape[3])
{
    shape[0] = g->N;
    if (__builtin_mul_overflow(g->C, g->kh * g->kw, &shape[1]) ||
        __builtin_mul_overflow(g->OH, g->OW, &shape[2])) {
        bilo__fail(BILO_EOVERFLOW, "%s: %lld channels x kernel %lldx%lld overflow", op,
                   (long long)g->C, (long long)g->kh, (long long)g->kw);
        return false;
    }
    return true;
}

/* The outputs o in [0, count) whose input position o·stride + offset lies in [0, limit), as
   [*lo, *hi) (empty when *lo == *hi): the taps inside the image, so the loops over them need no
   bounds test and vectorize. */
static void inside_range(int64_t offset, int64_t stride, int64_t limit, int64_t count,
                         int64_t *lo, int64_t *hi)
{
    int64_t first = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    int64_t end = limit <= offset ? 0 : (limit - offset + stride - 1) / stride;
    *lo = first < count ? first : count;
    *hi = end < *lo ? *lo : end < count ? end : count;
}

/* One (n, c) plane: img [H, W] and its kh*kw rows of cols, each [OH, OW]. im2col reads the
   image (zero outside it); col2im zeroes the plane, then adds the rows in (ki, kj, oh, ow)
   order, so every pixel sums its contributions in one fixed order. */
#define CONV_PLANE_KERNELS(T)                                                                 \
    /* One kernel tap's [OH, OW] rows of cols, row by row. */                                 \
    static void im2col_tap_rows_##T(const conv_geom *g, const T *restrict img,                \
                                    T *restrict cols, int64_t ki, int64_t off, int64_t lo,    \
                                    int64_t hi)                                               \
    {                                                                                         \
        for (int64_t oh = 0; oh < g->OH; oh++, cols += g->OW) {                               \
            int64_t ih = oh * g->sh - g->ph + ki * g->dh;                                     \
            if (ih < 0 || ih >= g->H) {                                                       \
                memset(cols, 0, (size_t)g->OW * sizeof(T));                                   \
                continue;                                                                     \
            }                                                                                 \
            const T *src = img + ih * g->W;                                                   \
            for (int64_t ow = 0; ow < lo; ow++) cols[ow] = 0;                                 \
            if (g->sw == 1)                                                                   \
                for (int64_t ow = lo; ow < hi; ow++) cols[ow] = src[ow + off];                \
            else                                                                              \
                for (int64_t ow = lo; ow < hi; ow++) cols[ow] = src[ow * g->sw + off];        \
            for (int64_t ow = hi; ow < g->OW; ow++) cols[ow] = 0;                             \
        }                                                                                     \
    }                                                                                         \
    /* The same for stride 1 and OW == W (a "same" convolution): the tap's in-image rows are  \
       one contiguous run of the image shifted by a constant, copied at once; then the        \
       columns outside the image are zeroed. */                                               \
    static void im2col_tap_flat_##T(const conv_geom *g, const T *restrict img,                \
                                    T *restrict cols, int64_t ki, int64_t off, int64_t lo,    \
                                    int64_t hi)                                               \
    {                                                                                         \
        int64_t row_off = ki * g->dh - g->ph, rlo, rhi;                                       \
        inside_range(row_off, 1, g->H, g->OH, &rlo, &rhi);                                    \
        memset(cols, 0, (size_t)(rlo * g->OW) * sizeof(T));                                   \
        memset(cols + rhi * g->OW, 0, (size_t)((g->OH - rhi) * g->OW) * sizeof(T));           \
        int64_t first = rlo * g->OW + lo, end = (rhi - 1) * g->OW + hi;                       \
        if (lo < hi && rlo < rhi)                                                             \
            memcpy(cols + first, img + first + row_off * g->W + off,                          \
                   (size_t)(end - first) * sizeof(T));                                        \
        for (int64_t oh = rlo; oh < rhi; oh++) {                                              \
            T *row = cols + oh * g->OW;                                                       \
            for (int64_t ow = 0; ow < lo; ow++) row[ow] = 0;                                  \
            for (int64_t ow = hi > lo ? hi : lo; ow < g->OW; ow++) row[ow] = 0;               \
        }                                                                                     \
    }                                                                                         \
    static void im2col_plane_##T(const conv_geom *g, const T *restrict img, T *restrict cols) \
    {                                                                                         \
        bool flat = g->sh == 1 && g->sw == 1 && g->OW == g->W;                                \
        for (int64_t ki = 0; ki < g->kh; ki++)                                                \
            for (int64_t kj = 0; kj < g->kw; kj++, cols += g->OH * g->OW) {                   \
                int64_t off = kj * g->dw - g->pw, lo, hi;                                     \
                inside_range(off, g->sw, g->W, g->OW, &lo, &hi);                              \
                (flat ? im2col_tap_flat_##T : im2col_tap_rows_##T)(g, img, cols, ki, off, lo, \
                                                                   hi);                       \
            }                                                                                 \
    }                                                                                         \
    static void col2im_plane_##T(const conv_geom *g, T *restrict img, const T *restrict cols) \
    {                                                                                         \
        memset(img, 0, (size_t)(g->H * g->W) * sizeof(T));                                    \
        for (int64_t ki = 0; ki < g->kh; ki++)                                                \
            for (int64_t kj = 0; kj < g->kw; kj++) {                                          \
                int64_t off = kj * g->dw - g->pw, lo, hi;                                     \
                inside_range(off, g->sw, g->W, g->OW, &lo, &hi);                              \
                for (int64_t oh = 0; oh < g->OH; oh++, cols += g->OW) {                       \
                    int64_t ih = oh * g->sh - g->ph + ki * g->dh;                             \
                    if (ih < 0 || ih >= g->H) continue;                                       \
                    T *dst = img + ih * g->W;                                                 \
                    if (g->sw == 1)                                                           \
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow + off] += cols[ow];       \
                    else                                                                      \
                        for (int64_t ow = lo; ow < hi; ow++)                                  \
                            dst[ow * g->sw + off] += cols[ow];                                \
                }                                                                             \
            }                                                                                 \
    }

CONV_PLANE_KERNELS(float)
CONV_PLANE_KERNELS(double)
#undef CONV_PLANE_KERNELS

/* Run KERNEL (im2col_plane or col2im_plane) of type T over every (n, c) plane of the image
   tensor img and the column tensor cols. */
#define FOR_EACH_PLANE(KERNEL, T, g, img, cols)                                               \
    do {                                                                                      \
        int64_t plane = (g)->H * (g)->W, patch = (g)->kh * (g)->kw * (g)->OH * (g)->OW;       \
        int nt = bilo__threads_for((g)->N * (g)->C * (plane + patch));                        \
        T *img_ = bilo__ptr(img), *cols_ = bilo__ptr(cols);                                   \
        BILO__PARALLEL_FOR(nt, p, (g)->N * (g)->C,                                            \
                           { KERNEL##_##T(g, img_ + p * plane, cols_ + p * patch); });        \
    } while (0)

static bilo_tensor *conv_record(bilo_op_id op, bilo_tensor *out, bilo_tensor *in,
                                const int64_t p[8])
{
    bilo_op_attrs attrs = {0};
    memcpy(attrs.conv, p, sizeof attrs.conv);
    return bilo__record(op, out, &in, 1, &attrs);
}

BILO_API bilo_tensor *bilo_im2col(bilo_tensor *x, int kh, int kw, int stride_h, int stride_w,
                                  int pad_h, int pad_w, int dil_h, int dil_w)
{
    static const char op[] = "bilo_im2col";
    if (!x) return NULL;
    if (!bilo__check_float(op, x)) return NULL;
    if (x->ndim != 4) {
        char buf[BILO_SHAPE_BUF];
        return bilo__fail(BILO_ESHAPE, "%s: expected an image batch [N, C, H, W], got %s", op,
                          bilo__shape_str(buf, x->ndim, x->shape));
    }
    const int64_t p[8] = {kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w};
    conv_geom g;
    int64_t shape[3];
    if (!geom_make(op, x->shape[0], x->shape[1], x->shape[2], x->shape[3], p, &g) ||
        !cols_shape(op, &g, shape))
        return NULL;
    bilo_tensor *out = bilo__new(op, x->dtype, 3, shape);
    if (!out) return NULL;
    if (x->dtype == BILO_F32)
        FOR_EACH_PLANE(im2col_plane, float, &g, x, out);
    else
        FOR_EACH_PLANE(im2col_plane, double, &g, x, out);
    return conv_record(BILO_OP_IM2COL, out, x, p);
}

BILO_API bilo_tensor *bilo_col2im(bilo_tensor *cols, int64_t C, int64_t H, int64_t W, int kh,
                                  int kw, int stride_h, int stride_w, int pad_h, int pad_w,
                                  int dil_h, int dil_w)
{
    static const char op[] = "bilo_col2im";
    if (!cols) return NULL;
    if (!bilo__check_float(op, cols)) return NULL;
    if (C < 1 || H < 1 || W < 1)
        return bilo__fail(BILO_EINVAL, "%s: image size C=%lld, H=%lld, W=%lld must be positive",
                          op, (long long)C, (long long)H, (long long)W);
    const int64_t p[8] = {kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w};
    conv_geom g;
    int64_t want[3];
    int64_t N = cols->ndim == 3 ? cols->shape[0] : 0;
    if (!geom_make(op, N, C, H, W, p, &g) || !cols_shape(op, &g, want)) return NULL;
    if (cols->ndim != 3 || memcmp(cols->shape, want, sizeof want)) {
        char got_s[BILO_SHAPE_BUF], want_s[BILO_SHAPE_BUF];
        return bilo__fail(BILO_ESHAPE, "%s: columns %s do not match [N, C*kh*kw, OH*OW] = %s",
                          op, bilo__shape_str(got_s, cols->ndim, cols->shape),
                          bilo__shape_str(want_s, 3, want));
    }
    bilo_tensor *out = bilo__new(op, cols->dtype, BILO_SHAPE(N, C, H, W));
    if (!out) return NULL;
    if (cols->dtype == BILO_F32)
        FOR_EACH_PLANE(col2im_plane, float, &g, out, cols);
    else
        FOR_EACH_PLANE(col2im_plane, double, &g, out, cols);
    return conv_record(BILO_OP_COL2IM, out, cols, p);
}
