/* Multi-layer perceptron (parameters passed explicitly) and parameter files. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "bilo_nn.h"
#include "tensor_impl.h"

/* ---- MLP ---- */

static int check_mlp(const char *op, const bilo_nn_mlp *m)
{
    if (!m || !m->widths || m->num_widths < 2)
        return bilo__fail_code(BILO_EINVAL, "%s: need at least 2 widths", op);
    for (int i = 0; i < m->num_widths; i++)
        if (m->widths[i] < 1)
            return bilo__fail_code(BILO_EINVAL, "%s: width %d is %lld, must be >= 1", op, i,
                                   (long long)m->widths[i]);
    if ((int)m->act < (int)BILO_ACT_RELU || (int)m->act > (int)BILO_ACT_NONE)
        return bilo__fail_code(BILO_EINVAL, "%s: unknown activation %d", op, (int)m->act);
    if (m->dtype != BILO_F32 && m->dtype != BILO_F64)
        return bilo__fail_code(BILO_EDTYPE, "%s: dtype must be f32 or f64", op);
    return 0;
}

int bilo_nn_mlp_num_tensors(const bilo_nn_mlp *m)
{
    int rc = check_mlp("bilo_nn_mlp_num_tensors", m);
    return rc < 0 ? rc : 2 * (m->num_widths - 1);
}

int64_t bilo_nn_mlp_num_params(const bilo_nn_mlp *m)
{
    int rc = check_mlp("bilo_nn_mlp_num_params", m);
    if (rc < 0) return rc;
    int64_t total = 0;
    for (int l = 0; l + 1 < m->num_widths; l++)
        total += (m->widths[l] + 1) * m->widths[l + 1];
    return total;
}

/* Kaiming-uniform for ReLU, Xavier-uniform (with the activation's gain, 1 for none) otherwise. */
static double init_bound(bilo_mlp_act act, int64_t fan_in, int64_t fan_out)
{
    if (act == BILO_MLP_RELU) return sqrt(6.0 / (double)fan_in);
    double gain = act == BILO_MLP_TANH ? 5.0 / 3.0 : 1.0;
    return gain * sqrt(6.0 / (double)(fan_in + fan_out));
}

int bilo_nn_mlp_init(const bilo_nn_mlp *m, bilo_rng *rng, bilo_tensor **params)
{
    static const char op[] = "bilo_nn_mlp_init";
    int rc = check_mlp(op, m);
    if (rc < 0) return rc;
    if (!rng || !params) return bilo__fail_code(BILO_ENULL, "%s: NULL rng or params", op);
    int layers = m->num_widths - 1;
    for (int l = 0; l < layers; l++) {
        int64_t in = m->widths[l], out = m->widths[l + 1];
        bilo_tensor *w = bilo_empty(m->dtype, BILO_SHAPE(in, out));
        bilo_tensor *b = bilo_zeros(m->dtype, BILO_SHAPE(out));
        if (!w || !b) {
            bilo_release(w);
            bilo_release(b);
            for (int i = 0; i < 2 * l; i++) bilo_release(params[i]);
            return bilo_errcode();
        }
        double bound = init_bound(m->act, in, out);
        for (int64_t i = 0; i < in * out; i++)
            bilo_set_flat(w, i, bound * (2 * bilo_rng_uniform(rng) - 1));
        params[2 * l] = w;
        params[2 * l + 1] = b;
    }
    return 0;
}

bilo_tensor *bilo_nn_mlp_forward(const bilo_nn_mlp *m, bilo_tensor *const *params, bilo_tensor *x)
{
    static const char op[] = "bilo_nn_mlp_forward";
    if (check_mlp(op, m) < 0) return NULL;
    if (!params || !x) return NULL;
    int layers = m->num_widths - 1;
    for (int i = 0; i < 2 * layers; i++)
        if (!params[i]) return NULL;
    bilo_scope_begin();
    bilo_tensor *h = x;
    for (int l = 0; l < layers && h; l++) {
        bilo_act act = l + 1 < layers ? m->act : BILO_ACT_NONE;
        h = bilo_nn_linear_act(h, params[2 * l], params[2 * l + 1], act);
    }
    if (h) bilo_scope_return(h);
    bilo_scope_end();
    return h;
}

/* ---- parameter files ---- */

#define PARAM_MAGIC "BILOPARM"
#define PARAM_VERSION 1u

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Tensor data as little-endian words (bit patterns, so the round trip is exact). */
static void put_data(unsigned char *p, const bilo_tensor *t)
{
    size_t es = bilo_dtype_size(t->dtype);
    const unsigned char *src = bilo__ptr(t);
    for (int64_t i = 0; i < t->numel; i++, p += es, src += es) {
        if (es == 8) {
            uint64_t w;
            memcpy(&w, src, 8);
            put_u64(p, w);
        } else {
            uint32_t w;
            memcpy(&w, src, 4);
            put_u32(p, w);
        }
    }
}
static void get_data(bilo_tensor *t, const unsigned char *p)
{
    size_t es = bilo_dtype_size(t->dtype);
    unsigned char *dst = bilo__ptr(t);
    for (int64_t i = 0; i < t->numel; i++, p += es, dst += es) {
        if (es == 8) {
            uint64_t w = get_u64(p);
            memcpy(dst, &w, 8);
        } else {
            uint32_t w = get_u32(p);
            memcpy(dst, &w, 4);
        }
    }
    atomic_fetch_add(&t->storage->version, 1);
}

static size_t header_size(bilo_tensor *const *params, int n)
{
    size_t size = 8 + 4 + 4;
    for (int i = 0; i < n; i++) size += 8 + 8 * (size_t)params[i]->ndim;
    return size;
}

static int write_all(int fd, const unsigned char *buf, size_t size)
{
    while (size > 0) {
        ssize_t w = write(fd, buf, size);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        buf += w;
        size -= (size_t)w;
    }
    return 0;
}

/* Write buf to a temporary file beside path, fsync it and rename it over path. */
static int write_atomically(const char *op, const char *path, const unsigned char *buf, size_t size)
{
    size_t len = strlen(path);
    char *tmp = bilo__malloc(len + sizeof ".tmp.XXXXXX");
    if (!tmp) return bilo__fail_code(BILO_ENOMEM, "%s: out of memory", op);
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int rc = bilo__fail_code(BILO_EIO, "%s: %s: cannot create %s: %s", op, path, tmp,
                                 strerror(errno));
        bilo__mfree(tmp);
        return rc;
    }
    const char *step = "write";
    bool ok = write_all(fd, buf, size) == 0;
    if (ok && !(ok = fsync(fd) == 0)) step = "fsync";
    if (close(fd) != 0 && ok) ok = false, step = "close";
    if (ok && !(ok = rename(tmp, path) == 0)) step = "rename";
    int rc = 0;
    if (!ok) {
        rc = bilo__fail_code(BILO_EIO, "%s: %s: %s of %s failed: %s", op, path, step, tmp,
                             strerror(errno));
        unlink(tmp);
    }
    bilo__mfree(tmp);
    return rc;
}

int bilo_save_params(const char *path, bilo_tensor *const *params, int n)
{
    static const char op[] = "bilo_save_params";
    if (!path || !params) return bilo__fail_code(BILO_ENULL, "%s: NULL path or params", op);
    if (n < 0) return bilo__fail_code(BILO_EINVAL, "%s: negative count %d", op, n);
    for (int i = 0; i < n; i++) {
        if (!params[i]) return bilo__fail_code(BILO_ENULL, "%s: params[%d] is NULL", op, i);
        if (!bilo__check_float(op, params[i])) return bilo_errcode();
    }
    size_t size = header_size(params, n);
    for (int i = 0; i < n; i++) size += (size_t)params[i]->numel * bilo_dtype_size(params[i]->dtype);
    size += 4;
    unsigned char *buf = bilo__malloc(size), *p = buf;
    if (!buf) return bilo__fail_code(BILO_ENOMEM, "%s: out of memory for %zu bytes", op, size);
    memcpy(p, PARAM_MAGIC, 8);
    put_u32(p + 8, PARAM_VERSION);
    put_u32(p + 12, (uint32_t)n);
    p += 16;
    for (int i = 0; i < n; i++) {
        put_u32(p, (uint32_t)params[i]->dtype);
        put_u32(p + 4, (uint32_t)params[i]->ndim);
        p += 8;
        for (int d = 0; d < params[i]->ndim; d++, p += 8) put_u64(p, (uint64_t)params[i]->shape[d]);
    }
    for (int i = 0; i < n; i++) {
        put_data(p, params[i]);
        p += (size_t)params[i]->numel * bilo_dtype_size(params[i]->dtype);
    }
    put_u32(p, (uint32_t)crc32_z(0L, buf, size - 4));
    int rc = write_atomically(op, path, buf, size);
    bilo__mfree(buf);
    return rc;
}

/* The whole file into *buf (malloc'd) and *size. */
static int read_file(const char *op, const char *path, unsigned char **buf, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return bilo__fail_code(BILO_EIO, "%s: %s: cannot open: %s", op, path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return bilo__fail_code(BILO_EIO, "%s: %s: not a regular file", op, path);
    }
    *size = (size_t)st.st_size;
    *buf = bilo__malloc(*size + 1);
    bool ok = *buf && fread(*buf, 1, *size, f) == *size;
    fclose(f);
    if (!ok) {
        bilo__mfree(*buf);
        *buf = NULL;
        return bilo__fail_code(BILO_EIO, "%s: %s: cannot read %zu bytes", op, path, *size);
    }
    return 0;
}

/* Check the file in buf against params; copy nothing. */
static int validate(const char *op, const char *path, const unsigned char *buf, size_t size,
                    bilo_tensor *const *params, int n)
{
    char sa[BILO_SHAPE_BUF], sb[BILO_SHAPE_BUF];
    if (size < 16 || memcmp(buf, PARAM_MAGIC, 8) != 0)
        return bilo__fail_code(BILO_EFORMAT, "%s: %s: byte 0: not a bilo parameter file", op, path);
    if (get_u32(buf + 8) != PARAM_VERSION)
        return bilo__fail_code(BILO_EFORMAT, "%s: %s: byte 8: version %u, expected %u", op, path,
                               get_u32(buf + 8), PARAM_VERSION);
    if (get_u32(buf + 12) != (uint32_t)n)
        return bilo__fail_code(BILO_ESHAPE, "%s: %s: byte 12: file holds %u tensors, expected %d",
                               op, path, get_u32(buf + 12), n);
    size_t off = 16, data = 0;
    for (int i = 0; i < n; i++) {
        if (size < off + 8) goto truncated;
        uint32_t dtype = get_u32(buf + off), ndim = get_u32(buf + off + 4);
        if (dtype != (uint32_t)params[i]->dtype)
            return bilo__fail_code(BILO_ESHAPE, "%s: %s: byte %zu: tensor %d has dtype %u, expected %s",
                                   op, path, off, i, dtype, bilo_dtype_name(params[i]->dtype));
        if (ndim > BILO_MAX_DIMS)
            return bilo__fail_code(BILO_EFORMAT, "%s: %s: byte %zu: tensor %d has %u dims (at most %d)",
                                   op, path, off + 4, i, ndim, BILO_MAX_DIMS);
        off += 8;
        if (size < off + 8 * (size_t)ndim) goto truncated;
        int64_t shape[BILO_MAX_DIMS];
        bool same = ndim == (uint32_t)params[i]->ndim;
        for (uint32_t d = 0; d < ndim; d++) {
            shape[d] = (int64_t)get_u64(buf + off + 8 * d);
            same = same && shape[d] == params[i]->shape[d];
        }
        if (!same)
            return bilo__fail_code(BILO_ESHAPE, "%s: %s: byte %zu: tensor %d has shape %s, expected %s",
                                   op, path, off, i, bilo__shape_str(sa, (int)ndim, shape),
                                   bilo__shape_str(sb, params[i]->ndim, params[i]->shape));
        off += 8 * (size_t)ndim;
        data += (size_t)params[i]->numel * bilo_dtype_size(params[i]->dtype);
    }
    if (size < off + data + 4) goto truncated;
    if (size > off + data + 4)
        return bilo__fail_code(BILO_EFORMAT, "%s: %s: byte %zu: %zu unexpected trailing bytes", op,
                               path, off + data + 4, size - (off + data + 4));
    uint32_t stored = get_u32(buf + size - 4), computed = (uint32_t)crc32_z(0L, buf, size - 4);
    if (stored != computed)
        return bilo__fail_code(BILO_EFORMAT,
                               "%s: %s: byte %zu: checksum 0x%08x does not match the content's "
                               "0x%08x (corrupted file)",
                               op, path, size - 4, stored, computed);
    return 0;
truncated:
    return bilo__fail_code(BILO_EFORMAT, "%s: %s: byte %zu: file truncated (%zu bytes)", op, path,
                           size, size);
}

int bilo_load_params(const char *path, bilo_tensor *const *params, int n)
{
    static const char op[] = "bilo_load_params";
    if (!path || !params) return bilo__fail_code(BILO_ENULL, "%s: NULL path or params", op);
    if (n < 0) return bilo__fail_code(BILO_EINVAL, "%s: negative count %d", op, n);
    for (int i = 0; i < n; i++) {
        if (!params[i]) return bilo__fail_code(BILO_ENULL, "%s: params[%d] is NULL", op, i);
        if (!bilo__check_float(op, params[i])) return bilo_errcode();
    }
    unsigned char *buf = NULL;
    size_t size = 0;
    int rc = read_file(op, path, &buf, &size);
    if (rc < 0) return rc;
    rc = validate(op, path, buf, size, params, n);
    if (rc == 0) {
        size_t off = header_size(params, n);
        for (int i = 0; i < n; i++) {
            get_data(params[i], buf + off);
            off += (size_t)params[i]->numel * bilo_dtype_size(params[i]->dtype);
        }
    }
    bilo__mfree(buf);
    return rc;
}
