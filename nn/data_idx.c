/* IDX files (LeCun's MNIST format, also Fashion-MNIST): a 4-byte magic 00 00 <type> <ndim>,
   ndim big-endian 32-bit sizes, then the elements row-major. Only unsigned bytes (type 0x08)
   are read: images with 3 dimensions, labels with 1. */
#include "data_impl.h"

#include <unistd.h>

#define IDX_TYPE_U8 0x08
#define IDX_MAX_DIMS 3
#define READ_STEP ((int64_t)1 << 20) /* the data buffer grows by at least this much */

typedef struct {
    const char *op, *path;
    gzFile file;
    int ndim;
    uint32_t dims[IDX_MAX_DIMS];
    int64_t header_bytes, data_bytes;
} idx_file;

static uint32_t big_endian_u32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static int read_exact(idx_file *f, void *buf, int64_t n, int64_t at, const char *what)
{
    int64_t got = bilo__data_read(f->op, f->path, f->file, buf, (size_t)n, at);
    if (got < 0) return (int)got;
    if (got < n)
        return bilo__fail_code(BILO_EFORMAT, "%s: %s: byte %lld: file ends inside the %s",
                               f->op, f->path, (long long)(at + got), what);
    return 0;
}

static int check_magic(const idx_file *f, const unsigned char m[4])
{
    uint32_t magic = big_endian_u32(m);
    const char *expect = "images 0x00000803, labels 0x00000801";
    if (m[0] || m[1])
        return bilo__fail_code(BILO_EFORMAT, "%s: %s: byte 0: magic 0x%08x is not IDX (%s)",
                               f->op, f->path, magic, expect);
    if (m[2] != IDX_TYPE_U8)
        return bilo__fail_code(BILO_EFORMAT,
                               "%s: %s: byte 2: element type 0x%02x is not unsigned byte (0x08) "
                               "(magic 0x%08x; %s)",
                               f->op, f->path, m[2], magic, expect);
    if (m[3] != f->ndim)
        return bilo__fail_code(BILO_EFORMAT,
                               "%s: %s: byte 3: %d dimensions, expected %d (magic 0x%08x; %s)",
                               f->op, f->path, m[3], f->ndim, magic, expect);
    return 0;
}

/* Element count of the declared dimensions, refusing any whose f64 tensor could not exist. */
static int count_elements(idx_file *f)
{
    uint64_t n = 1;
    for (int i = 0; i < f->ndim; i++) {
        if (i > 0 && f->dims[i] == 0)
            return bilo__fail_code(BILO_EFORMAT, "%s: %s: byte %d: dimension %d is 0", f->op,
                                   f->path, 4 + 4 * i, i);
        if (__builtin_mul_overflow(n, (uint64_t)f->dims[i], &n) ||
            n > (uint64_t)INT64_MAX / 16) {
            char dims[64];
            int used = 0;
            for (int d = 0; d < f->ndim; d++)
                used += snprintf(dims + used, sizeof dims - (size_t)used, d ? " x %u" : "%u",
                                 f->dims[d]);
            return bilo__fail_code(BILO_EOVERFLOW, "%s: %s: byte 4: dimensions %s overflow",
                                   f->op, f->path, dims);
        }
    }
    f->data_bytes = (int64_t)n;
    return 0;
}

static int read_header(idx_file *f)
{
    unsigned char head[4 + 4 * IDX_MAX_DIMS];
    int rc = read_exact(f, head, 4, 0, "magic number");
    if (rc == 0) rc = check_magic(f, head);
    if (rc == 0) rc = read_exact(f, head + 4, 4 * f->ndim, 4, "dimension sizes");
    if (rc < 0) return rc;
    for (int i = 0; i < f->ndim; i++) f->dims[i] = big_endian_u32(head + 4 + 4 * i);
    f->header_bytes = 4 + 4 * f->ndim;
    return count_elements(f);
}

/* The data bytes, read into a buffer that grows with what the file really holds: a header
   declaring absurd sizes over a short file costs no large allocation. */
static uint8_t *read_data(idx_file *f, size_t *cap)
{
    uint8_t *data = NULL;
    int64_t done = 0, total = f->data_bytes, got = 0;
    do {
        int64_t want = total - done;
        if (want > READ_STEP && want > done) want = done > READ_STEP ? done : READ_STEP;
        /* + 1: the byte that must not exist after the declared data is read there too */
        if (!bilo__reserve((void **)&data, cap, (size_t)(done + want) + 1, 1)) {
            bilo__fail(BILO_ENOMEM, "%s: %s: out of memory for %lld bytes", f->op, f->path,
                       (long long)(done + want));
            got = -1;
            break;
        }
        got = bilo__data_read(f->op, f->path, f->file, data + done, (size_t)want,
                              f->header_bytes + done);
        if (got >= 0) done += got;
        if (got >= 0 && got < want)
            got = bilo__fail_code(BILO_EFORMAT,
                                  "%s: %s: byte %lld: data ends after %lld of the %lld bytes "
                                  "the header declares",
                                  f->op, f->path, (long long)(f->header_bytes + done),
                                  (long long)done, (long long)total);
    } while (got >= 0 && done < total);
    if (got >= 0) got = bilo__data_read(f->op, f->path, f->file, data + done, 1,
                                        f->header_bytes + done);
    if (got == 0) return data;
    if (got > 0)
        bilo__fail(BILO_EFORMAT, "%s: %s: byte %lld: unexpected bytes after the %lld the header "
                   "declares",
                   f->op, f->path, (long long)(f->header_bytes + done), (long long)total);
    bilo__data_release(data, *cap, 1);
    return NULL;
}

/* Open, validate and read one file; the caller releases the bytes (capacity *cap). */
static uint8_t *read_idx(const char *op, const char *path, int ndim, idx_file *f, size_t *cap)
{
    *f = (idx_file){.op = op, .path = path, .ndim = ndim};
    *cap = 0;
    f->file = bilo__data_open(op, path);
    if (!f->file) return NULL;
    uint8_t *data = read_header(f) == 0 ? read_data(f, cap) : NULL;
    gzclose_r(f->file);
    return data;
}

/* Images in the layout asked for; dims receives the header's n, rows, cols. */
static bilo_tensor *read_images(const char *path, const bilo_idx_opts *opts, uint32_t dims[3])
{
    static const char op[] = "bilo_read_idx_images";
    bilo_idx_opts o = opts ? *opts : (bilo_idx_opts){0};
    if (o.dtype != BILO_F32 && o.dtype != BILO_F64)
        return bilo__fail(BILO_EDTYPE, "%s: dtype must be f32 or f64, got %s", op,
                          bilo_dtype_name(o.dtype));
    if (o.layout != BILO_IDX_FLAT && o.layout != BILO_IDX_HW && o.layout != BILO_IDX_NCHW)
        return bilo__fail(BILO_EINVAL, "%s: unknown layout %d", op, (int)o.layout);
    idx_file f;
    size_t cap;
    uint8_t *raw = read_idx(op, path, 3, &f, &cap);
    if (!raw) return NULL;
    memcpy(dims, f.dims, 3 * sizeof *dims);
    int64_t n = f.dims[0], h = f.dims[1], w = f.dims[2];
    const int64_t shapes[][4] = {{n, h * w}, {n, h, w}, {n, 1, h, w}};
    const int ndims[] = {2, 3, 4};
    bilo_tensor *out = bilo__new(op, o.dtype, ndims[o.layout], shapes[o.layout]);
    if (out) {
        int64_t count = out->numel;
#define SCALE_PIXELS(T) \
    for (int64_t i = 0; i < count; i++) ((T *)bilo__ptr(out))[i] = (T)raw[i] / (T)255;
        if (o.dtype == BILO_F32) {
            SCALE_PIXELS(float)
        } else {
            SCALE_PIXELS(double)
        }
#undef SCALE_PIXELS
    }
    bilo__data_release(raw, cap, 1);
    return out;
}

BILO_API bilo_tensor *bilo_read_idx_images(const char *path, const bilo_idx_opts *opts)
{
    uint32_t dims[3];
    return read_images(path, opts, dims);
}

BILO_API bilo_tensor *bilo_read_idx_labels(const char *path)
{
    static const char op[] = "bilo_read_idx_labels";
    idx_file f;
    size_t cap;
    uint8_t *raw = read_idx(op, path, 1, &f, &cap);
    if (!raw) return NULL;
    int64_t n = f.dims[0];
    bilo_tensor *out = bilo__new(op, BILO_I64, 1, &n);
    if (out)
        for (int64_t i = 0; i < n; i++) ((int64_t *)bilo__ptr(out))[i] = raw[i];
    bilo__data_release(raw, cap, 1);
    return out;
}

/* ---- Fashion-MNIST ---- */

#define FMNIST_SIDE 28
#define FMNIST_CLASSES 10
#define FMNIST_LABELS_HEADER 8

/* dir/name.gz, or dir/name when only the uncompressed file exists. */
static int find_file(const char *dir, const char *name, char *path, size_t size)
{
    static const char op[] = "bilo_fashion_mnist_load";
    if ((size_t)snprintf(path, size, "%s/%s.gz", dir, name) >= size)
        return bilo__fail_code(BILO_EINVAL, "%s: directory name too long: %s", op, dir);
    if (access(path, F_OK) == 0) return 0;
    snprintf(path, size, "%s/%s", dir, name);
    if (access(path, F_OK) == 0) return 0;
    return bilo__fail_code(BILO_EIO,
                           "%s: %s/%s.gz not found (nor without .gz): install the Debian package "
                           "dataset-fashion-mnist (files in %s) or pass the directory holding "
                           "the files",
                           op, dir, name, BILO_FASHION_MNIST_DIR);
}

static int check_fmnist(const char *image_path, const char *label_path, const uint32_t dims[3],
                        bilo_tensor *labels)
{
    static const char op[] = "bilo_fashion_mnist_load";
    if (dims[1] != FMNIST_SIDE || dims[2] != FMNIST_SIDE)
        return bilo__fail_code(BILO_EFORMAT, "%s: %s: byte 8: images are %ux%u, not 28x28", op,
                               image_path, dims[1], dims[2]);
    if (dims[0] != labels->numel)
        return bilo__fail_code(BILO_EFORMAT, "%s: %s holds %u images but %s %lld labels", op,
                               image_path, dims[0], label_path, (long long)labels->numel);
    const int64_t *y = bilo__ptr(labels);
    for (int64_t i = 0; i < labels->numel; i++)
        if (y[i] >= FMNIST_CLASSES)
            return bilo__fail_code(BILO_EFORMAT, "%s: %s: byte %lld: label %lld is not in 0..9",
                                   op, label_path, (long long)(FMNIST_LABELS_HEADER + i),
                                   (long long)y[i]);
    return 0;
}

BILO_API int bilo_fashion_mnist_load(const char *dir, bilo_fmnist_part part,
                                     const bilo_idx_opts *opts, bilo_tensor **images,
                                     bilo_tensor **labels)
{
    static const char op[] = "bilo_fashion_mnist_load";
    if (!images || !labels) return bilo__fail_code(BILO_ENULL, "%s: output pointer is NULL", op);
    *images = *labels = NULL;
    if (part != BILO_FMNIST_TRAIN && part != BILO_FMNIST_TEST)
        return bilo__fail_code(BILO_EINVAL, "%s: unknown part %d", op, (int)part);
    if (!dir) dir = BILO_FASHION_MNIST_DIR;
    const char *prefix = part == BILO_FMNIST_TRAIN ? "train" : "t10k";
    char name[64], image_path[4096], label_path[4096];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    int rc = find_file(dir, name, image_path, sizeof image_path);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    if (rc == 0) rc = find_file(dir, name, label_path, sizeof label_path);
    if (rc < 0) return rc;
    /* the scope frees whatever was read when a later step fails */
    bilo_scope_begin();
    uint32_t dims[3];
    bilo_tensor *x = read_images(image_path, opts, dims);
    bilo_tensor *y = x ? bilo_read_idx_labels(label_path) : NULL;
    rc = x && y ? check_fmnist(image_path, label_path, dims, y) : bilo_errcode();
    if (rc == 0) {
        *images = bilo_scope_return(x);
        *labels = bilo_scope_return(y);
    }
    bilo_scope_end();
    return rc;
}
