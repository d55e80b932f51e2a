/* Data loaders and dataset views. Readers run on small files written here into a temporary
   directory (plain and gzip'd IDX, LIBSVM and CSV; valid, truncated, corrupt, malformed) and on
   a few hundred random mutations of each valid file: every failure must name the file and the
   line or byte, nothing may crash. Fashion-MNIST, when installed, is checked against statistics
   computed here from its raw bytes. Splits, standardization, label noise and the minibatch
   iterator are checked against loops written in this file. */
#include "bilo.h"
#include "bilo_nn.h"
#include "tap.h"

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#ifndef FUZZ_ROUNDS
#define FUZZ_ROUNDS 300
#endif

static char tmp_dir[64];

/* ---- helpers ------------------------------------------------------------------------------ */

static const char *tmp_path(const char *name)
{
    static char paths[8][256];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 256, "%s/%s", tmp_dir, name);
    return p;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, len, f);
        fclose(f);
    }
}

static void write_gz(const char *path, const void *data, size_t len)
{
    gzFile f = gzopen(path, "wb");
    if (f) {
        gzwrite(f, data, (unsigned)len);
        gzclose(f);
    }
}

/* Whole file into a malloc'd buffer. */
static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(*len + 1);
    if (fread(buf, 1, *len, f) != *len) *len = 0;
    fclose(f);
    return buf;
}

static void remove_tmp_dir(void)
{
    DIR *d = opendir(tmp_dir);
    if (!d) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", tmp_dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(tmp_dir);
}

/* The call failed and its message names the file and the place (NULL: any place). */
static void check_error(bool failed, const char *what, const char *path, const char *where)
{
    const char *msg = bilo_last_error();
    bool named = failed && strstr(msg, path) && (!where || strstr(msg, where));
    tap_ok(named, "%s: rejected, message names the file%s%s", what, where ? " and " : "",
           where ? where : "");
    tap_diag("%s%s", failed ? "" : "call succeeded; ", msg);
    bilo_clear_error();
}

static uint64_t fuzz_state = 0x9E3779B97F4A7C15ull;

static uint64_t fuzz_next(void) /* xorshift64* */
{
    fuzz_state ^= fuzz_state >> 12;
    fuzz_state ^= fuzz_state << 25;
    fuzz_state ^= fuzz_state >> 27;
    return fuzz_state * 2685821657736338717ull;
}

/* A copy of src with 1-4 random byte changes, sometimes truncated or lengthened. */
static size_t mutate(const unsigned char *src, size_t len, unsigned char *dst)
{
    memcpy(dst, src, len);
    int changes = 1 + (int)(fuzz_next() % 4);
    for (int c = 0; c < changes && len; c++) {
        size_t at = fuzz_next() % len;
        switch (fuzz_next() % 6) {
        case 0: dst[at] = (unsigned char)fuzz_next(); break;
        case 1: dst[at] ^= (unsigned char)(1u << (fuzz_next() % 8)); break;
        case 2: len = at; break;
        case 3: dst[at] = "0123456789:#. -\n\r,e+x"[fuzz_next() % 21]; break;
        case 4: dst[at] = 0xff; break;
        default: dst[len] = (unsigned char)fuzz_next(); len++; break; /* dst has room */
        }
    }
    return len;
}

/* Reads a mutated file and reports whether the outcome was a clean success or a named error. */
typedef bool (*fuzz_reader)(const char *path);

static void fuzz(const char *what, const char *valid_path, fuzz_reader read, bool compressed)
{
    size_t len;
    unsigned char *valid = slurp(valid_path, &len);
    unsigned char *buf = malloc(len + 8);
    int rejected = 0, unnamed = 0;
    const char *path = tmp_path("fuzz.bin");
    for (int round = 0; round < FUZZ_ROUNDS; round++) {
        size_t n = mutate(valid, len, buf);
        if (compressed && round % 2) write_gz(path, buf, n); /* mutate the content, recompress */
        else
            write_file(path, buf, n);
        bilo_clear_error();
        if (!read(path)) {
            rejected++;
            if (!strstr(bilo_last_error(), path)) {
                if (unnamed++ == 0) tap_diag("unnamed: %s", bilo_last_error());
            }
        }
    }
    tap_ok(unnamed == 0 && rejected > 0,
           "%s: %d mutants read without a crash, %d rejected, each naming the file", what,
           FUZZ_ROUNDS, rejected);
    free(valid);
    free(buf);
}

/* ---- IDX ---------------------------------------------------------------------------------- */

static size_t make_idx(unsigned char *out, uint32_t magic, int ndim, const uint32_t *dims,
                       const unsigned char *data, size_t len)
{
    size_t at = 0;
    for (int s = 24; s >= 0; s -= 8) out[at++] = (unsigned char)(magic >> s);
    for (int d = 0; d < ndim; d++)
        for (int s = 24; s >= 0; s -= 8) out[at++] = (unsigned char)(dims[d] >> s);
    if (len) memcpy(out + at, data, len);
    return at + len;
}

#define IMG_N 3
#define IMG_H 2
#define IMG_W 3
#define IMG_BYTES (IMG_N * IMG_H * IMG_W)

static unsigned char pixels[IMG_BYTES];
static unsigned char idx_images[16 + IMG_BYTES], idx_labels[8 + IMG_N];
static size_t idx_images_len, idx_labels_len;

static void build_idx(void)
{
    for (int i = 0; i < IMG_BYTES; i++) pixels[i] = (unsigned char)(i * 53 + 7);
    pixels[0] = 0;
    pixels[1] = 255;
    const uint32_t dims[3] = {IMG_N, IMG_H, IMG_W}, n = IMG_N;
    idx_images_len = make_idx(idx_images, 0x803, 3, dims, pixels, IMG_BYTES);
    const unsigned char labels[IMG_N] = {9, 0, 4};
    idx_labels_len = make_idx(idx_labels, 0x801, 1, &n, labels, IMG_N);
}

static bool images_match(bilo_tensor *t, bilo_dtype dtype, int ndim, const int64_t *shape)
{
    if (!t || bilo_dtype_of(t) != dtype || bilo_ndim(t) != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (bilo_shape(t)[d] != shape[d]) return false;
    for (int i = 0; i < IMG_BYTES; i++) {
        double want = dtype == BILO_F32 ? (double)((float)pixels[i] / 255.0f) : pixels[i] / 255.0;
        if (bilo_get_flat(t, i) != want) return false;
    }
    return true;
}

static bool read_images_ok(const char *path)
{
    bilo_tensor *t = bilo_read_idx_images(path, NULL);
    bilo_release(t);
    return t != NULL;
}

static bool read_labels_ok(const char *path)
{
    bilo_tensor *t = bilo_read_idx_labels(path);
    bilo_release(t);
    return t != NULL;
}

static void test_idx_valid(void)
{
    const char *plain = tmp_path("img.idx"), *gz = tmp_path("img.idx.gz");
    write_file(plain, idx_images, idx_images_len);
    write_gz(gz, idx_images, idx_images_len);
    bilo_scope_begin();
    const int64_t flat[] = {IMG_N, IMG_H * IMG_W}, hw[] = {IMG_N, IMG_H, IMG_W},
                  nchw[] = {IMG_N, 1, IMG_H, IMG_W};
    tap_ok(images_match(bilo_read_idx_images(plain, NULL), BILO_F32, 2, flat),
           "idx plain: f32 [3, 6] = bytes / 255");
    tap_ok(images_match(bilo_read_idx_images(gz, NULL), BILO_F32, 2, flat),
           "idx gzip: f32 [3, 6] = bytes / 255");
    tap_ok(images_match(bilo_read_idx_images(gz, &(bilo_idx_opts){.dtype = BILO_F64,
                                                                   .layout = BILO_IDX_HW}),
                        BILO_F64, 3, hw),
           "idx gzip: f64 [3, 2, 3] layout HW");
    tap_ok(images_match(bilo_read_idx_images(plain, &(bilo_idx_opts){.layout = BILO_IDX_NCHW}),
                        BILO_F32, 4, nchw),
           "idx plain: f32 [3, 1, 2, 3] layout NCHW");
    const char *lab = tmp_path("lab.idx.gz");
    write_gz(lab, idx_labels, idx_labels_len);
    bilo_tensor *y = bilo_read_idx_labels(lab);
    tap_ok(y && bilo_dtype_of(y) == BILO_I64 && bilo_numel(y) == 3 && bilo_get_flat(y, 0) == 9 &&
               bilo_get_flat(y, 1) == 0 && bilo_get_flat(y, 2) == 4,
           "idx labels: i64 [3] = 9, 0, 4");
    const uint32_t zero = 0;
    unsigned char empty[8];
    write_file(tmp_path("empty.idx"), empty, make_idx(empty, 0x801, 1, &zero, NULL, 0));
    y = bilo_read_idx_labels(tmp_path("empty.idx"));
    tap_ok(y && bilo_numel(y) == 0, "idx labels: a file declaring 0 items gives [0]");
    bilo_scope_end();
}

static void test_idx_errors(void)
{
    unsigned char buf[64], gzbuf[256];
    const char *p = tmp_path("bad.idx");

    write_file(p, idx_images, idx_images_len - 2);
    check_error(!bilo_read_idx_images(p, NULL), "idx truncated data", p, "byte 32");

    write_file(p, idx_images, 10);
    check_error(!bilo_read_idx_images(p, NULL), "idx truncated header", p, "byte 10");

    write_file(p, idx_images, 0);
    check_error(!bilo_read_idx_images(p, NULL), "idx empty file", p, "byte 0");

    unsigned char extra[sizeof idx_images + 1];
    memcpy(extra, idx_images, idx_images_len);
    extra[idx_images_len] = 1;
    write_file(p, extra, idx_images_len + 1);
    check_error(!bilo_read_idx_images(p, NULL), "idx trailing bytes", p, "byte 34");

    const char *gz = tmp_path("trunc.idx.gz");
    write_gz(gz, idx_images, idx_images_len);
    size_t len;
    unsigned char *whole = slurp(gz, &len);
    write_file(gz, whole, len - 10); /* cut inside the deflate stream / CRC trailer */
    check_error(!bilo_read_idx_images(gz, NULL), "idx truncated gzip", gz, "byte");
    memcpy(gzbuf, whole, len);
    for (size_t i = 10; i < len - 8; i++) gzbuf[i] ^= 0x5a; /* corrupt the deflate data */
    write_file(gz, gzbuf, len);
    check_error(!bilo_read_idx_images(gz, NULL), "idx corrupt gzip", gz, "byte");
    memcpy(gzbuf, whole, len);
    gzbuf[len - 6] ^= 0xff; /* CRC-32 of the data no longer matches */
    write_file(gz, gzbuf, len);
    check_error(!bilo_read_idx_images(gz, NULL), "idx gzip CRC mismatch", gz, "byte");
    free(whole);

    const uint32_t dims[3] = {IMG_N, IMG_H, IMG_W};
    write_file(p, buf, make_idx(buf, 0x802, 2, dims, pixels, IMG_BYTES));
    check_error(!bilo_read_idx_images(p, NULL), "idx 2 dimensions for images", p, "byte 3");
    write_file(p, buf, make_idx(buf, 0x903, 3, dims, pixels, IMG_BYTES));
    check_error(!bilo_read_idx_images(p, NULL), "idx signed-byte type code", p, "byte 2");
    write_file(p, buf, make_idx(buf, 0xd03, 3, dims, pixels, IMG_BYTES));
    check_error(!bilo_read_idx_images(p, NULL), "idx float type code", p, "byte 2");
    write_file(p, buf, make_idx(buf, 0x12340803, 3, dims, pixels, IMG_BYTES));
    check_error(!bilo_read_idx_images(p, NULL), "idx bad magic", p, "byte 0");
    write_file(p, idx_images, idx_images_len);
    check_error(!bilo_read_idx_labels(p), "idx images given to the label reader", p, "byte 3");

    const uint32_t huge[3] = {0xffffffffu, 0xffffffffu, 0xffffffffu};
    write_file(p, buf, make_idx(buf, 0x803, 3, huge, pixels, IMG_BYTES));
    bilo_clear_error();
    bool failed = !bilo_read_idx_images(p, NULL);
    tap_ok(bilo_errcode() == BILO_EOVERFLOW, "idx dims 2^32-1 cubed: BILO_EOVERFLOW");
    check_error(failed, "idx overflowing dims", p, "overflow");
    const uint32_t big[3] = {1u << 31, 28, 28}; /* 1.7 TB declared over 18 bytes of data */
    write_file(p, buf, make_idx(buf, 0x803, 3, big, pixels, IMG_BYTES));
    check_error(!bilo_read_idx_images(p, NULL), "idx 2^31 images declared, 18 bytes present", p,
                "byte 34");
    const uint32_t zero_rows[3] = {3, 0, 3};
    write_file(p, buf, make_idx(buf, 0x803, 3, zero_rows, pixels, IMG_BYTES));
    check_error(!bilo_read_idx_images(p, NULL), "idx zero rows", p, "byte 8");

    const char *missing = tmp_path("missing.idx");
    bilo_clear_error();
    failed = !bilo_read_idx_images(missing, NULL);
    tap_ok(bilo_errcode() == BILO_EIO, "idx missing file: BILO_EIO");
    check_error(failed, "idx missing file", missing, "No such file");
    check_error(!bilo_read_idx_images(tmp_dir, NULL), "idx directory instead of file", tmp_dir,
                NULL);
}

static void test_idx_fuzz(void)
{
    const char *plain = tmp_path("valid.idx"), *gz = tmp_path("valid.idx.gz");
    write_file(plain, idx_images, idx_images_len);
    write_gz(gz, idx_images, idx_images_len);
    fuzz("idx images plain", plain, read_images_ok, false);
    fuzz("idx images gzip", gz, read_images_ok, true);
    write_gz(gz, idx_labels, idx_labels_len);
    fuzz("idx labels gzip", gz, read_labels_ok, true);
}

/* A fake Fashion-MNIST directory exercises the loader's own checks. */
static void test_fmnist_checks(void)
{
    bilo_tensor *x = (bilo_tensor *)1, *y = (bilo_tensor *)1;
    int rc = bilo_fashion_mnist_load(tmp_dir, BILO_FMNIST_TEST, NULL, &x, &y);
    tap_ok(rc == BILO_EIO && !x && !y, "fashion-mnist: missing files give BILO_EIO, NULL outputs");
    check_error(rc < 0, "fashion-mnist missing", tmp_dir, "dataset-fashion-mnist");

    enum { N = 2, SIDE = 28 };
    static unsigned char img[N * SIDE * SIDE], buf[16 + sizeof img];
    const uint32_t dims[3] = {N, SIDE, SIDE}, n = N, n3 = 3;
    write_gz(tmp_path("t10k-images-idx3-ubyte.gz"), buf, make_idx(buf, 0x803, 3, dims, img,
                                                                  sizeof img));
    const unsigned char bad_labels[3] = {3, 10, 1};
    unsigned char lab[16];
    const char *lpath = tmp_path("t10k-labels-idx1-ubyte"); /* uncompressed: also accepted */
    write_file(lpath, lab, make_idx(lab, 0x801, 1, &n, bad_labels, N));
    rc = bilo_fashion_mnist_load(tmp_dir, BILO_FMNIST_TEST, NULL, &x, &y);
    check_error(rc < 0 && !x && !y, "fashion-mnist label 10", lpath, "byte 9");
    write_file(lpath, lab, make_idx(lab, 0x801, 1, &n3, bad_labels, 3));
    rc = bilo_fashion_mnist_load(tmp_dir, BILO_FMNIST_TEST, NULL, &x, &y);
    check_error(rc < 0, "fashion-mnist 2 images, 3 labels", lpath, "3 labels");
    const unsigned char good[N] = {3, 1};
    write_file(lpath, lab, make_idx(lab, 0x801, 1, &n, good, N));
    rc = bilo_fashion_mnist_load(tmp_dir, BILO_FMNIST_TEST,
                                 &(bilo_idx_opts){.layout = BILO_IDX_NCHW}, &x, &y);
    tap_ok(rc == 0 && bilo_ndim(x) == 4 && bilo_dim(x, 2) == 28 && bilo_get_flat(y, 1) == 1,
           "fashion-mnist: a valid small directory loads as [2, 1, 28, 28]");
    bilo_release(x);
    bilo_release(y);
    unlink(tmp_path("t10k-images-idx3-ubyte.gz"));
    unlink(lpath);
}

/* Statistics of the data bytes of an IDX file, read here with zlib: their sum, count and
   histogram, and how many differ from pixels[i] * 255 when pixels is given. */
typedef struct {
    double sum;
    int64_t count, hist[256], mismatches;
} raw_stats;

static bool raw_idx_stats(const char *path, int header, const float *pixels, raw_stats *st)
{
    gzFile f = gzopen(path, "rb");
    if (!f) return false;
    static unsigned char buf[1 << 16];
    memset(st, 0, sizeof *st);
    int got = gzread(f, buf, (unsigned)header);
    while ((got = gzread(f, buf, sizeof buf)) > 0) {
        for (int i = 0; i < got; i++) {
            st->sum += buf[i];
            st->hist[buf[i]]++;
            if (pixels && pixels[st->count + i] != (float)buf[i] / 255.0f) st->mismatches++;
        }
        st->count += got;
    }
    gzclose(f);
    return got == 0;
}

static void test_fashion_mnist(void)
{
    const char *dir = BILO_FASHION_MNIST_DIR;
    char path[512];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
    if (access(path, R_OK) != 0) {
        printf("ok %d - fashion-mnist real files # SKIP %s absent (package "
               "dataset-fashion-mnist)\n", ++tap_count_, path);
        return;
    }
    const char *parts[2] = {"train", "t10k"};
    const int64_t sizes[2] = {60000, 10000};
    for (int p = 0; p < 2; p++) {
        bilo_scope_begin();
        bilo_tensor *x, *y;
        int rc = bilo_fashion_mnist_load(NULL, p ? BILO_FMNIST_TEST : BILO_FMNIST_TRAIN, NULL,
                                         &x, &y);
        int64_t n = sizes[p];
        tap_ok(rc == 0 && bilo_dim(x, 0) == n && bilo_dim(x, 1) == 784 && bilo_numel(y) == n,
               "fashion-mnist %s: [%lld, 784] images and %lld labels", parts[p], (long long)n,
               (long long)n);
        if (rc) {
            tap_diag("%s", bilo_last_error());
            bilo_scope_end();
            continue;
        }
        int64_t per_class[10] = {0}, out_of_range = 0;
        const int64_t *yl = bilo_data(y);
        for (int64_t i = 0; i < n; i++)
            if (yl[i] < 0 || yl[i] > 9) out_of_range++;
            else per_class[yl[i]]++;
        bool balanced = out_of_range == 0;
        for (int c = 0; c < 10; c++) balanced = balanced && per_class[c] == n / 10;
        tap_ok(balanced, "fashion-mnist %s: labels in 0..9, exactly %lld per class", parts[p],
               (long long)(n / 10));

        /* independent statistics from the raw bytes */
        raw_stats img = {0}, lab = {0};
        const float *px = bilo_data(x);
        snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz", dir, parts[p]);
        bool raw_ok = raw_idx_stats(path, 8, NULL, &lab) && lab.count == n;
        for (int c = 0; c < 10 && raw_ok; c++) raw_ok = lab.hist[c] == per_class[c];
        snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", dir, parts[p]);
        raw_ok = raw_ok && raw_idx_stats(path, 16, px, &img) && img.count == n * 784;
        tap_ok(raw_ok && img.mismatches == 0,
               "fashion-mnist %s: raw bytes: label histogram agrees, all %lld pixels = byte/255",
               parts[p], (long long)img.count);
        double sum = 0;
        for (int64_t i = 0; i < n * 784; i++) sum += px[i];
        double raw_mean = img.sum / 255.0 / (double)(n * 784);
        tap_close(sum / (double)(n * 784), raw_mean, 1e-7, 0,
                  "fashion-mnist: tensor mean = raw-byte mean / 255");
        tap_diag("%s mean pixel %.6f", parts[p], raw_mean);
        if (p == 0) tap_close(raw_mean, 0.2860, 5e-4, 0, "fashion-mnist train: mean pixel 0.2860");
        bilo_scope_end();
    }
}

/* ---- LIBSVM ------------------------------------------------------------------------------- */

static const char libsvm_text[] =
    "# three samples, four features\n"
    "+1 1:0.5 3:-2 # trailing comment\n"
    "-1\t2:1.5e1\n"
    "\n"
    "-1 qid:3 1:1 4:2\n";
static const double libsvm_dense[3][4] = {{0.5, 0, -2, 0}, {0, 15, 0, 0}, {1, 0, 0, 2}};
static const double libsvm_labels[3] = {1, -1, -1};

static bool dense_matches(bilo_tensor *x, int64_t d)
{
    if (!x || bilo_dim(x, 0) != 3 || bilo_dim(x, 1) != d) return false;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < d; j++)
            if (bilo_get(x, (int64_t[]){i, j}) != (j < 4 ? libsvm_dense[i][j] : 0)) return false;
    return true;
}

static bool libsvm_ok(const char *path)
{
    bilo_tensor *x, *y;
    int rc = bilo_read_libsvm(path, NULL, &x, &y);
    bilo_release(x);
    bilo_release(y);
    return rc == 0;
}

static bool csv_ok(const char *path)
{
    bilo_tensor *t = bilo_read_csv(path, &(bilo_csv_opts){.header = true});
    bilo_release(t);
    return t != NULL;
}

static void test_libsvm_valid(void)
{
    bilo_scope_begin();
    const char *p = tmp_path("a.svm"), *crlf = tmp_path("crlf.svm"), *gz = tmp_path("a.svm.gz");
    write_file(p, libsvm_text, strlen(libsvm_text));
    write_gz(gz, libsvm_text, strlen(libsvm_text));
    char crlf_text[256];
    size_t at = 0;
    for (const char *c = libsvm_text; *c; c++) {
        if (*c == '\n') crlf_text[at++] = '\r';
        crlf_text[at++] = *c;
    }
    write_file(crlf, crlf_text, at - 2); /* and no newline after the last line */
    const char *files[3] = {p, crlf, gz}, *names[3] = {"plain", "CRLF", "gzip"};
    for (int f = 0; f < 3; f++) {
        bilo_tensor *x, *y;
        int rc = bilo_read_libsvm(files[f], NULL, &x, &y);
        bool labels = rc == 0 && bilo_dtype_of(y) == BILO_F64;
        for (int i = 0; labels && i < 3; i++) labels = bilo_get_flat(y, i) == libsvm_labels[i];
        tap_ok(rc == 0 && bilo_dtype_of(x) == BILO_F32 && dense_matches(x, 4) && labels,
               "libsvm %s: dense f32 [3, 4] and f64 labels as written", names[f]);
    }
    bilo_tensor *x, *y;
    int rc = bilo_read_libsvm(p, &(bilo_libsvm_opts){.num_features = 6, .dtype = BILO_F64,
                                                     .classes = (double[]){-1, 1},
                                                     .num_classes = 2},
                              &x, &y);
    tap_ok(rc == 0 && bilo_dtype_of(x) == BILO_F64 && dense_matches(x, 6) &&
               bilo_dtype_of(y) == BILO_I64 && bilo_get_flat(y, 0) == 1 &&
               bilo_get_flat(y, 1) == 0 && bilo_get_flat(y, 2) == 0,
           "libsvm: num_features 6 pads with zeros; classes {-1, 1} give ids 1, 0, 0");

    bilo_csr *m;
    rc = bilo_read_libsvm_csr(gz, &(bilo_libsvm_opts){.dtype = BILO_F64}, &m, &y);
    const int64_t want_ptr[] = {0, 2, 3, 5}, want_idx[] = {0, 2, 1, 0, 3};
    const double want_val[] = {0.5, -2, 15, 1, 2};
    bool same = rc == 0 && bilo_csr_rows(m) == 3 && bilo_csr_cols(m) == 4 &&
                bilo_csr_nnz(m) == 5 && bilo_csr_dtype(m) == BILO_F64 &&
                !memcmp(bilo_data(bilo_csr_indptr(m)), want_ptr, sizeof want_ptr) &&
                !memcmp(bilo_data(bilo_csr_indices(m)), want_idx, sizeof want_idx) &&
                !memcmp(bilo_data(bilo_csr_values(m)), want_val, sizeof want_val);
    tap_ok(same, "libsvm csr: indptr, 0-based indices and values as in the file");
    tap_ok(dense_matches(bilo_csr_to_dense(m), 4), "csr to dense equals the file's matrix");
    bilo_tensor *rhs = bilo_from_data(BILO_F64, BILO_SHAPE(4, 2),
                                      (double[]){1, -1, 2, 0.5, -3, 4, 0.25, 8});
    bilo_tensor *product = bilo_csr_matmul(m, rhs), *want = bilo_matmul(bilo_csr_to_dense(m), rhs);
    bool equal = product && bilo_dim(product, 0) == 3 && bilo_dim(product, 1) == 2;
    for (int64_t i = 0; equal && i < 6; i++)
        equal = fabs(bilo_get_flat(product, i) - bilo_get_flat(want, i)) <= 1e-12;
    tap_ok(equal, "csr matmul equals to_dense · dense");
    bilo_csr *sub = bilo_csr_select_rows(m, bilo_from_data(BILO_I64, BILO_SHAPE(2),
                                                            (int64_t[]){2, 0}));
    const int64_t sub_ptr[] = {0, 2, 4}, sub_idx[] = {0, 3, 0, 2};
    const double sub_val[] = {1, 2, 0.5, -2};
    tap_ok(sub && bilo_csr_rows(sub) == 2 && bilo_csr_cols(sub) == 4 &&
               !memcmp(bilo_data(bilo_csr_indptr(sub)), sub_ptr, sizeof sub_ptr) &&
               !memcmp(bilo_data(bilo_csr_indices(sub)), sub_idx, sizeof sub_idx) &&
               !memcmp(bilo_data(bilo_csr_values(sub)), sub_val, sizeof sub_val),
           "csr select rows {2, 0}");
    bilo_csr_free(sub);
    bilo_csr_free(m);

    bilo_tensor *ptr = bilo_from_data(BILO_I64, BILO_SHAPE(3), (int64_t[]){0, 2, 3});
    bilo_tensor *vals = bilo_from_data(BILO_F32, BILO_SHAPE(3), (float[]){1, 2, 3});
    bilo_csr *ok = bilo_csr_new(2, 3, ptr, bilo_from_data(BILO_I64, BILO_SHAPE(3),
                                                          (int64_t[]){0, 2, 1}),
                                vals);
    tap_ok(ok && bilo_csr_nnz(ok) == 3, "csr_new accepts a valid structure");
    bilo_csr_free(ok);
    bilo_clear_error();
    bilo_csr *bad = bilo_csr_new(2, 3, ptr, bilo_from_data(BILO_I64, BILO_SHAPE(3),
                                                           (int64_t[]){2, 0, 1}),
                                 vals);
    tap_ok(!bad && bilo_errcode() == BILO_EINVAL, "csr_new rejects columns out of order");
    bad = bilo_csr_new(2, 2, ptr, bilo_from_data(BILO_I64, BILO_SHAPE(3), (int64_t[]){0, 2, 1}),
                       vals);
    tap_ok(!bad && bilo_errcode() == BILO_EINVAL, "csr_new rejects a column >= cols");
    bilo_clear_error();
    bilo_scope_end();
}

enum { PLAIN, WITH_CLASSES, WITH_D }; /* options of a bad case */

typedef struct {
    const char *text, *where, *what;
    int options;
} bad_case;

static void test_libsvm_errors(void)
{
    static const char nul_line[] = "1 1:1\n1 1:2\0 2:3\n";
    static const bad_case cases[] = {
        {"1 1:1\n1 0:1\n", "line 2", "index 0", PLAIN},
        {"1 3:1 2:1\n", "line 1", "decreasing index", PLAIN},
        {"1 1:1\n# c\n1 1:1 1:2\n", "line 3", "repeated index", PLAIN},
        {"1 1:1\n-1 2\n", "line 2", "missing ':'", PLAIN},
        {"1 1:1\n-1 :2\n", "line 2", "missing index", PLAIN},
        {"1 1:abc\n", "line 1", "non-numeric value", PLAIN},
        {"1 1:\n", "line 1", "empty value", PLAIN},
        {"1 1: 2\n", "line 1", "blank after ':'", PLAIN},
        {"x 1:1\n", "line 1", "non-numeric label", PLAIN},
        {"1 -3:1\n", "line 1", "negative index", PLAIN},
        {"1 1:nan\n", "line 1", "NaN value", PLAIN},
        {"inf 1:1\n", "line 1", "infinite label", PLAIN},
        {"1 99999999999:1\n", "line 1", "index beyond 2^31-1", PLAIN},
        {"1 1:1\n\n2 1:1\n", "line 3", "label not among the classes", WITH_CLASSES},
        {"1 1:1\n1 5:1\n", "line 2", "index above num_features", WITH_D},
    };
    const char *p = tmp_path("bad.svm");
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        write_file(p, cases[c].text, strlen(cases[c].text));
        bilo_tensor *x = (bilo_tensor *)1, *y = (bilo_tensor *)1;
        bilo_libsvm_opts o = {.classes = (double[]){-1, 1},
                              .num_classes = cases[c].options == WITH_CLASSES ? 2 : 0,
                              .num_features = cases[c].options == WITH_D ? 3 : 0};
        int rc = bilo_read_libsvm(p, &o, &x, &y);
        char what[96];
        snprintf(what, sizeof what, "libsvm %s", cases[c].what);
        check_error(rc == BILO_EFORMAT && !x && !y, what, p, cases[c].where);
    }
    write_file(p, nul_line, sizeof nul_line - 1);
    bilo_tensor *x, *y;
    check_error(bilo_read_libsvm(p, NULL, &x, &y) < 0, "libsvm NUL byte inside a line", p,
                "line 2");
    bilo_csr *m;
    check_error(bilo_read_libsvm_csr(p, NULL, &m, &y) < 0 && !m, "libsvm csr NUL byte", p,
                "line 2");
    check_error(bilo_read_libsvm(tmp_path("nope.svm"), NULL, &x, &y) == BILO_EIO,
                "libsvm missing file", tmp_path("nope.svm"), NULL);
    /* a file declaring a dense matrix too large to exist */
    write_file(p, "1 2147483647:1\n1 1:1\n", 21);
    bilo_clear_error();
    int rc = bilo_read_libsvm(p, &(bilo_libsvm_opts){.num_features = INT64_MAX / 4}, &x, &y);
    check_error(rc < 0, "libsvm dense [2, 2^61]", p, NULL);
}

static void test_text_fuzz(void)
{
    const char *p = tmp_path("valid.svm"), *c = tmp_path("valid.csv");
    write_file(p, libsvm_text, strlen(libsvm_text));
    fuzz("libsvm", p, libsvm_ok, false);
    const char csv[] = "x,y,z\n1,2.5,-3\n4e2, 5 ,6\n\n7,8,9\n";
    write_file(c, csv, strlen(csv));
    fuzz("csv", c, csv_ok, false);
    write_gz(c, csv, strlen(csv));
    fuzz("csv gzip", c, csv_ok, true);
}

/* ---- CSV ---------------------------------------------------------------------------------- */

static bool table_is(bilo_tensor *t, int64_t rows, int64_t cols, const double *want)
{
    if (!t || bilo_ndim(t) != 2 || bilo_dim(t, 0) != rows || bilo_dim(t, 1) != cols) return false;
    for (int64_t i = 0; i < rows * cols; i++) {
        double v = bilo_get_flat(t, i);
        if (!(v == want[i] || (isnan(v) && isnan(want[i])))) return false;
    }
    return true;
}

static void test_csv(void)
{
    bilo_scope_begin();
    const char *p = tmp_path("t.csv");
    const char with_header[] = "a,b,c\n1,2,3\n\n4.5, 5 ,\t-6e-1\r\n";
    write_file(p, with_header, strlen(with_header));
    tap_ok(table_is(bilo_read_csv(p, &(bilo_csv_opts){.header = true, .dtype = BILO_F64}), 2, 3,
                    (double[]){1, 2, 3, 4.5, 5, -0.6}),
           "csv: header skipped, blanks trimmed, CRLF and empty lines accepted");
    check_error(!bilo_read_csv(p, NULL), "csv header read as data", p, "line 1, column 1");

    const char semi[] = "1;2\n3;4";
    write_file(p, semi, strlen(semi));
    tap_ok(table_is(bilo_read_csv(p, &(bilo_csv_opts){.delimiter = ';'}), 2, 2,
                    (double[]){1, 2, 3, 4}),
           "csv: ';' delimiter, f32, no final newline");
    const char tabs[] = "1\t2\n3\t4\n";
    write_file(p, tabs, strlen(tabs));
    tap_ok(table_is(bilo_read_csv(p, &(bilo_csv_opts){.delimiter = '\t'}), 2, 2,
                    (double[]){1, 2, 3, 4}),
           "csv: tab delimiter");

    const char missing[] = "1,2,3\n4,,6\n";
    write_file(p, missing, strlen(missing));
    check_error(!bilo_read_csv(p, NULL), "csv missing value", p, "line 2, column 2");
    tap_ok(table_is(bilo_read_csv(p, &(bilo_csv_opts){.missing_as_nan = true}), 2, 3,
                    (double[]){1, 2, 3, 4, NAN, 6}),
           "csv: missing_as_nan reads the empty field as NaN");
    const char trailing[] = "1,2,\n";
    write_file(p, trailing, strlen(trailing));
    check_error(!bilo_read_csv(p, NULL), "csv trailing delimiter", p, "line 1, column 3");

    const char words[] = "1,2\n3,NA\n";
    write_file(p, words, strlen(words));
    check_error(!bilo_read_csv(p, NULL), "csv non-numeric field", p, "line 2, column 2");
    const char ragged[] = "1,2\n3,4\n5\n";
    write_file(p, ragged, strlen(ragged));
    check_error(!bilo_read_csv(p, NULL), "csv ragged row", p, "line 3");
    const char quoted[] = "\"1\",2\n";
    write_file(p, quoted, strlen(quoted));
    check_error(!bilo_read_csv(p, NULL), "csv quoted number", p, "line 1, column 1");
    bilo_clear_error();
    tap_ok(!bilo_read_csv(p, &(bilo_csv_opts){.delimiter = '.'}) && bilo_errcode() == BILO_EINVAL,
           "csv: '.' as delimiter is refused");
    write_file(p, "", 0);
    bilo_tensor *empty = bilo_read_csv(p, NULL);
    tap_ok(empty && bilo_numel(empty) == 0, "csv: an empty file gives a [0, 0] table");
    bilo_clear_error();
    bilo_scope_end();
}

/* ---- splits, permutations ----------------------------------------------------------------- */

static bool is_range(bilo_tensor *t, int64_t from, int64_t to)
{
    if (!t || bilo_numel(t) != to - from) return false;
    for (int64_t i = from; i < to; i++)
        if (bilo_get_flat(t, i - from) != i) return false;
    return true;
}

static bool same_i64(bilo_tensor *a, bilo_tensor *b)
{
    return a && b && bilo_numel(a) == bilo_numel(b) &&
           !memcmp(bilo_data(a), bilo_data(b), (size_t)bilo_numel(a) * sizeof(int64_t));
}

static void test_splits(void)
{
    bilo_scope_begin();
    bilo_tensor *tr, *va, *te;
    int rc = bilo_split(10, &(bilo_split_opts){.n_train = 6, .n_val = 3}, &tr, &va, &te);
    tap_ok(rc == 0 && is_range(tr, 0, 6) && is_range(va, 6, 9) && is_range(te, 9, 10),
           "split by ranges: [0,6), [6,9), [9,10)");

    enum { N = 1000 };
    bilo_rng rng = bilo_rng_make(7, 0);
    rc = bilo_split(N, &(bilo_split_opts){.n_train = 500, .n_val = 300, .rng = &rng}, &tr, &va,
                    &te);
    int seen[N] = {0};
    bilo_tensor *parts[3] = {tr, va, te};
    for (int p = 0; rc == 0 && p < 3; p++)
        for (int64_t i = 0; i < bilo_numel(parts[p]); i++)
            seen[(int64_t)bilo_get_flat(parts[p], i)]++;
    bool partition = rc == 0 && bilo_numel(tr) == 500 && bilo_numel(va) == 300 &&
                     bilo_numel(te) == 200;
    for (int i = 0; i < N; i++) partition = partition && seen[i] == 1;
    tap_ok(partition, "seeded split: 500/300/200 parts cover 0..999 exactly once");
    bilo_tensor *tr2, *va2;
    bilo_rng again = bilo_rng_make(7, 0), other = bilo_rng_make(8, 0);
    bilo_split(N, &(bilo_split_opts){.n_train = 500, .n_val = 300, .rng = &again}, &tr2, &va2,
               NULL);
    tap_ok(same_i64(tr, tr2) && same_i64(va, va2), "seeded split: same seed, same parts");
    bilo_split(N, &(bilo_split_opts){.n_train = 500, .rng = &other}, &tr2, NULL, NULL);
    tap_ok(!same_i64(tr, tr2) && !is_range(tr, 0, 500), "seeded split: another seed differs");
    bilo_clear_error();
    rc = bilo_split(10, &(bilo_split_opts){.n_train = 8, .n_val = 3}, &tr, &va, &te);
    tap_ok(rc == BILO_EINVAL && !tr && !va && !te, "split: n_train + n_val > n is refused");

    /* randperm: a permutation whose first entry is uniform over 0..9 */
    rng = bilo_rng_make(11, 2);
    bool perms = true;
    int64_t first[10] = {0};
    for (int r = 0; r < 4000; r++) {
        bilo_scope_begin();
        bilo_tensor *p = bilo_randperm(10, &rng);
        int hit[10] = {0};
        for (int i = 0; i < 10; i++) hit[(int64_t)bilo_get_flat(p, i)]++;
        for (int i = 0; i < 10; i++) perms = perms && hit[i] == 1;
        first[(int64_t)bilo_get_flat(p, 0)]++;
        bilo_scope_end();
    }
    bool uniform = true; /* 400 expected, sd 19: 6 sd bounds */
    for (int i = 0; i < 10; i++) uniform = uniform && llabs(first[i] - 400) < 114;
    tap_ok(perms && uniform, "randperm: 4000 permutations of 10, first entry uniform");
    bilo_scope_end();
}

/* ---- normalization ------------------------------------------------------------------------ */

static void test_normalizer(void)
{
    bilo_scope_begin();
    enum { N = 50, D = 3, FIT = 30 };
    bilo_rng rng = bilo_rng_make(3, 0);
    bilo_tensor *x = bilo_randn(BILO_F64, BILO_SHAPE(N, D), &rng);
    double *xv = bilo_data(x);
    for (int i = 0; i < N; i++) {
        xv[i * D + 0] = 5 + 2 * xv[i * D + 0];
        xv[i * D + 2] = 7; /* constant feature */
    }
    int64_t rows_v[FIT];
    for (int i = 0; i < FIT; i++) rows_v[i] = 2 * i % N + (2 * i >= N); /* some even, some odd */
    bilo_tensor *rows = bilo_from_data(BILO_I64, BILO_SHAPE(FIT), rows_v);
    double mean[D] = {0}, sd[D] = {0};
    for (int j = 0; j < D; j++) {
        for (int r = 0; r < FIT; r++) mean[j] += xv[rows_v[r] * D + j] / FIT;
        for (int r = 0; r < FIT; r++) sd[j] += pow(xv[rows_v[r] * D + j] - mean[j], 2) / FIT;
        sd[j] = sqrt(sd[j]);
    }
    bilo_normalizer nz;
    int rc = bilo_normalizer_fit(&nz, x, rows);
    bool stats = rc == 0 && bilo_numel(nz.mean) == D;
    for (int j = 0; stats && j < 2; j++)
        stats = fabs(bilo_get_flat(nz.mean, j) - mean[j]) < 1e-12 &&
                fabs(bilo_get_flat(nz.std, j) - sd[j]) < 1e-12;
    tap_ok(stats && bilo_get_flat(nz.mean, 2) == 7 && bilo_get_flat(nz.std, 2) == 1,
           "normalizer fit on 30 rows: mean and population std; constant feature std 1");
    bilo_tensor *z = bilo_normalizer_apply(&nz, x);
    double worst = 0;
    for (int i = 0; z && i < N; i++)
        for (int j = 0; j < D; j++) {
            double want = j == 2 ? 0 : (xv[i * D + j] - mean[j]) / sd[j];
            worst = fmax(worst, fabs(bilo_get_flat(z, i * D + j) - want));
        }
    tap_ok(z && worst < 1e-12, "normalizer apply to every row: (x - mean) / std");
    bilo_tensor *zf = bilo_normalizer_apply(&nz, bilo_index_select(x, 0, rows));
    double m0 = 0, v0 = 0;
    for (int r = 0; zf && r < FIT; r++) m0 += bilo_get_flat(zf, r * D) / FIT;
    for (int r = 0; zf && r < FIT; r++) v0 += pow(bilo_get_flat(zf, r * D) - m0, 2) / FIT;
    tap_ok(zf && fabs(m0) < 1e-12 && fabs(v0 - 1) < 1e-12,
           "normalizer: the fitted rows come out with mean 0 and variance 1");
    bilo_clear_error();
    tap_ok(!bilo_normalizer_apply(&nz, bilo_zeros(BILO_F64, BILO_SHAPE(4, 2))) &&
               bilo_errcode() == BILO_ESHAPE,
           "normalizer: rows of another width are refused");
    bilo_normalizer_free(&nz);

    bilo_tensor *xf = bilo_cast(x, BILO_F32);
    rc = bilo_normalizer_fit(&nz, xf, NULL);
    bilo_tensor *zf32 = bilo_normalizer_apply(&nz, xf);
    tap_ok(rc == 0 && bilo_dtype_of(nz.mean) == BILO_F32 && bilo_dtype_of(zf32) == BILO_F32,
           "normalizer on f32 data keeps f32");
    bilo_normalizer_free(&nz);
    bilo_clear_error();
    rc = bilo_normalizer_fit(&nz, x, bilo_from_data(BILO_I64, BILO_SHAPE(1), (int64_t[]){N}));
    tap_ok(rc == BILO_ERANGE && !nz.mean, "normalizer: a row index out of range is refused");
    bilo_clear_error();
    bilo_scope_end();
}

/* ---- label noise -------------------------------------------------------------------------- */

static void test_corruption(void)
{
    bilo_scope_begin();
    enum { N = 10000, K = 10 };
    int64_t clean[N];
    for (int i = 0; i < N; i++) clean[i] = i % K;
    bilo_tensor *y = bilo_from_data(BILO_I64, BILO_SHAPE(N), clean);
    const struct {
        bool other;
        double expect; /* expected fraction changed at rate 0.5 */
    } modes[2] = {{true, 0.5}, {false, 0.45}};
    for (int m = 0; m < 2; m++) {
        bilo_rng rng = bilo_rng_make(42, 0);
        bilo_tensor *mask;
        bilo_tensor *noisy = bilo_corrupt_labels(
            y, &(bilo_corrupt_opts){.rate = 0.5, .num_classes = K, .other_class = modes[m].other},
            &rng, &mask);
        int64_t changed = 0, mask_agrees = 1, in_range = 1, per_class[K] = {0};
        for (int i = 0; noisy && i < N; i++) {
            int64_t v = (int64_t)bilo_get_flat(noisy, i);
            bool differs = v != clean[i];
            in_range &= v >= 0 && v < K;
            mask_agrees &= bilo_get_flat(mask, i) == differs;
            changed += differs;
            if (differs && v >= 0 && v < K) per_class[v]++;
        }
        double mean = N * modes[m].expect, sd = sqrt(N * modes[m].expect * (1 - modes[m].expect));
        tap_ok(noisy && fabs((double)changed - mean) < 6 * sd && in_range,
               "corrupt %s, rate 0.5: %lld of 10000 changed (binomial mean %.0f, sd %.0f)",
               modes[m].other ? "other_class" : "any class", (long long)changed, mean, sd);
        tap_ok(mask_agrees, "corrupt %s: the mask is 1 exactly where the label changed",
               modes[m].other ? "other_class" : "any class");
        bool uniform = true; /* new values spread evenly over the classes */
        for (int c = 0; c < K; c++)
            uniform = uniform && fabs(per_class[c] - changed / 10.0) < 6 * sqrt(changed / 10.0);
        tap_ok(uniform, "corrupt %s: new labels uniform over classes",
               modes[m].other ? "other_class" : "any class");
        bilo_rng again = bilo_rng_make(42, 0);
        bilo_tensor *noisy2 = bilo_corrupt_labels(
            y, &(bilo_corrupt_opts){.rate = 0.5, .num_classes = K, .other_class = modes[m].other},
            &again, NULL);
        tap_ok(same_i64(noisy, noisy2) && again.counter == rng.counter && rng.counter == N,
               "corrupt: same seed, same labels; rng advanced by one block per label");
    }
    bilo_rng rng = bilo_rng_make(1, 0);
    bilo_tensor *mask;
    bilo_tensor *all = bilo_corrupt_labels(
        y, &(bilo_corrupt_opts){.rate = 1, .num_classes = K, .other_class = true}, &rng, &mask);
    bilo_tensor *none = bilo_corrupt_labels(y, &(bilo_corrupt_opts){.rate = 0, .num_classes = K},
                                            &rng, NULL);
    int64_t changed_all = 0;
    for (int i = 0; all && i < N; i++) changed_all += bilo_get_flat(all, i) != clean[i];
    tap_ok(changed_all == N && same_i64(none, y),
           "corrupt: rate 1 with other_class changes all, rate 0 none");
    bilo_clear_error();
    bilo_tensor *bad = bilo_corrupt_labels(y, &(bilo_corrupt_opts){.rate = 0.5, .num_classes = 5},
                                           &rng, &mask);
    tap_ok(!bad && !mask && bilo_errcode() == BILO_ERANGE,
           "corrupt: a label >= num_classes is refused");
    bilo_clear_error();
    bilo_scope_end();
}

/* ---- minibatches -------------------------------------------------------------------------- */

enum { BN = 10 };

/* Batches of one epoch: their index lists concatenated into order[], sizes into sizes[]. */
static int run_epoch(bilo_batcher *b, int64_t *order, int64_t *sizes, bool *rows_match,
                     const double *xv, const int64_t *yv)
{
    int count = 0, at = 0;
    bilo_batch batch;
    for (;;) {
        bilo_scope_begin();
        int rc = bilo_batcher_next(b, &batch);
        if (rc <= 0) {
            bilo_scope_end();
            return rc < 0 ? rc : count;
        }
        int64_t k = bilo_numel(batch.index);
        sizes[count++] = k;
        for (int64_t i = 0; i < k; i++) {
            int64_t r = (int64_t)bilo_get_flat(batch.index, i);
            order[at++] = r;
            *rows_match = *rows_match && bilo_get_flat(batch.x, 2 * i) == xv[2 * r] &&
                          bilo_get_flat(batch.x, 2 * i + 1) == xv[2 * r + 1] &&
                          bilo_get_flat(batch.y, i) == yv[r] && batch.step == count - 1;
        }
        bilo_scope_end();
    }
}

static void test_batcher(void)
{
    bilo_scope_begin();
    double xv[2 * BN];
    int64_t yv[BN];
    for (int i = 0; i < BN; i++) {
        xv[2 * i] = i;
        xv[2 * i + 1] = 100 + i;
        yv[i] = 3 * i;
    }
    bilo_tensor *x = bilo_from_data(BILO_F64, BILO_SHAPE(BN, 2), xv);
    bilo_tensor *y = bilo_from_data(BILO_I64, BILO_SHAPE(BN), yv);
    bilo_batcher_opts o = {.batch_size = 4, .seed = 5};
    bilo_batcher *a = bilo_batcher_new(x, y, &o), *b = bilo_batcher_new(x, y, &o);
    int64_t oa[3][BN], ob[3][BN], sizes[8];
    bool rows_match = true, covers = true, same = true, epochs_differ = false;
    int counts[3];
    for (int e = 0; e < 3; e++) {
        counts[e] = run_epoch(a, oa[e], sizes, &rows_match, xv, yv);
        bool sized = counts[e] == 3 && sizes[0] == 4 && sizes[1] == 4 && sizes[2] == 2;
        int hit[BN] = {0};
        for (int i = 0; i < BN; i++) hit[oa[e][i]]++;
        for (int i = 0; i < BN; i++) covers = covers && hit[i] == 1 && sized;
        run_epoch(b, ob[e], sizes, &rows_match, xv, yv);
        same = same && !memcmp(oa[e], ob[e], sizeof oa[e]);
        if (e) epochs_differ = epochs_differ || memcmp(oa[e], oa[e - 1], sizeof oa[e]);
    }
    tap_ok(covers, "batcher: each epoch is batches of 4, 4, 2 covering every row once");
    tap_ok(rows_match, "batcher: batch x and y are the rows named by batch.index");
    tap_ok(same, "batcher: same seed, same batches over 3 epochs");
    tap_ok(epochs_differ, "batcher: epochs are reshuffled");
    tap_ok(bilo_batcher_num_batches(a) == 3, "batcher: 3 batches per epoch");
    bilo_batcher_free(a);
    bilo_batcher_free(b);

    o.seed = 6;
    a = bilo_batcher_new(x, y, &o);
    run_epoch(a, ob[0], sizes, &rows_match, xv, yv);
    tap_ok(memcmp(oa[0], ob[0], sizeof oa[0]) != 0, "batcher: another seed, another order");
    bilo_batcher_free(a);

    a = bilo_batcher_new(x, y, &(bilo_batcher_opts){.batch_size = 4, .drop_last = true,
                                                     .in_order = true});
    int n = run_epoch(a, oa[0], sizes, &rows_match, xv, yv);
    bool ordered = n == 2 && sizes[0] == 4 && sizes[1] == 4;
    for (int i = 0; i < 8; i++) ordered = ordered && oa[0][i] == i;
    tap_ok(ordered && bilo_batcher_num_batches(a) == 2,
           "batcher: in_order + drop_last gives rows 0..7 in two batches");
    bilo_batcher_free(a);

    bilo_tensor *subset = bilo_from_data(BILO_I64, BILO_SHAPE(4), (int64_t[]){1, 3, 5, 7});
    a = bilo_batcher_new(NULL, y, &(bilo_batcher_opts){.batch_size = 3, .rows = subset, .seed = 9});
    bilo_batch batch;
    int64_t sum = 0, total = 0;
    bool only_y = true;
    bilo_scope_begin();
    while (bilo_batcher_next(a, &batch) > 0) {
        only_y = only_y && !batch.x && batch.y;
        for (int64_t i = 0; i < bilo_numel(batch.index); i++) {
            sum += (int64_t)bilo_get_flat(batch.index, i);
            total++;
        }
    }
    bilo_scope_end();
    tap_ok(only_y && total == 4 && sum == 16, "batcher: rows subset {1,3,5,7}, y only");
    bilo_batcher_free(a);

    bilo_clear_error();
    tap_ok(!bilo_batcher_new(x, y, &(bilo_batcher_opts){.batch_size = 0}) &&
               bilo_errcode() == BILO_EINVAL,
           "batcher: batch_size 0 is refused");
    bilo_clear_error();
    tap_ok(!bilo_batcher_new(x, bilo_zeros(BILO_F64, BILO_SHAPE(3)),
                             &(bilo_batcher_opts){.batch_size = 2}) &&
               bilo_errcode() == BILO_ESHAPE,
           "batcher: x and y with different row counts are refused");
    bilo_clear_error();
    bilo_scope_end();
}

/* n calls of bilo_batcher_next, each as 4 slots in out: the batch's rows padded with -1, or
   all -2 for a call that ends an epoch. */
static void draw_calls(bilo_batcher *b, int n, int64_t *out)
{
    for (int c = 0; c < n; c++) {
        bilo_scope_begin();
        bilo_batch batch;
        int rc = bilo_batcher_next(b, &batch);
        for (int64_t i = 0; i < 4; i++)
            out[4 * c + i] = rc == 0 ? -2
                             : rc > 0 && i < bilo_numel(batch.index)
                                 ? (int64_t)bilo_get_flat(batch.index, i)
                                 : -1;
        bilo_scope_end();
    }
}

/* A batcher that takes over another's state at any point continues its sequence exactly. */
static void test_batcher_state(void)
{
    enum { CALLS = 14 };
    bilo_scope_begin();
    bilo_tensor *x = bilo_arange(BILO_F64, 0, BN, 1);
    bilo_batcher_opts o = {.batch_size = 4, .seed = 11, .stream = 3};
    int64_t want[4 * CALLS], got[4 * CALLS];
    bilo_batcher *ref = bilo_batcher_new(x, NULL, &o);
    draw_calls(ref, CALLS, want);
    bilo_batcher_free(ref);
    bool same = true;
    for (int cut = 0; cut < CALLS; cut++) {
        bilo_batcher *a = bilo_batcher_new(x, NULL, &o), *b = bilo_batcher_new(x, NULL, &o);
        bilo_batcher_state st;
        draw_calls(a, cut, got);
        draw_calls(b, 1 + cut % 3, got); /* b elsewhere in the sequence before taking over */
        int rc = bilo_batcher_get_state(a, &st) | bilo_batcher_set_state(b, &st);
        draw_calls(b, CALLS - cut, got + 4 * cut);
        same = same && rc == 0 && !memcmp(got + 4 * cut, want + 4 * cut,
                                          sizeof(int64_t) * 4 * (size_t)(CALLS - cut));
        bilo_batcher_free(a);
        bilo_batcher_free(b);
    }
    tap_ok(same, "batcher state: taken over after any of %d calls (epoch ends included), the "
           "sequence continues unchanged", CALLS);

    bilo_batcher *a = bilo_batcher_new(x, NULL, &o);
    bilo_batcher_state good, bad[4];
    draw_calls(a, 2, got);
    bilo_batcher_get_state(a, &good);
    for (int k = 0; k < 4; k++) bad[k] = good;
    bad[0].rng.seed = 12;          /* another batcher's generator */
    bad[1].step = 4;               /* only 3 batches per epoch */
    bad[2].epoch = -1;
    bad[3].in_epoch = false;       /* between epochs, yet 2 batches into one */
    bool rejected = true;
    for (int k = 0; k < 4; k++) {
        bilo_clear_error();
        rejected = rejected && bilo_batcher_set_state(a, &bad[k]) == BILO_EINVAL &&
                   strstr(bilo_last_error(), "bilo_batcher_set_state");
    }
    draw_calls(a, CALLS - 2, got + 8);
    tap_ok(rejected && !memcmp(got + 8, want + 8, sizeof(int64_t) * 4 * (CALLS - 2)),
           "batcher state: a foreign seed, a step past the epoch, a negative epoch and a step "
           "outside an epoch are rejected, and the batcher carries on unchanged");
    bilo_batcher_free(a);
    bilo_clear_error();
    bilo_scope_end();
}

int main(void)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/bilo_test_data_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        tap_ok(0, "mkdtemp");
        return tap_done();
    }
    build_idx();
    test_idx_valid();
    test_idx_errors();
    test_idx_fuzz();
    test_fmnist_checks();
    test_fashion_mnist();
    test_libsvm_valid();
    test_libsvm_errors();
    test_csv();
    test_text_fuzz();
    test_splits();
    test_normalizer();
    test_corruption();
    test_batcher();
    test_batcher_state();
    remove_tmp_dir();
    return tap_done();
}
