/* Text datasets: LIBSVM/SVMlight (dense or CSR output) and numeric CSV, plus the CSR matrix
   type. Files are read line by line through zlib, so gzip'd files work as well. */
#include "data_impl.h"

#include <ctype.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>

#define READ_CHUNK ((size_t)1 << 16)
#define SHOWN_CHARS 40        /* longest piece of a bad field quoted in a message */
#define MAX_INDEX INT32_MAX   /* LIBSVM's own indices are C ints */

/* ---- numbers in the C locale, whatever locale the host program has set ---- */

static locale_t c_numeric;
static pthread_once_t c_numeric_once = PTHREAD_ONCE_INIT;

static void make_c_numeric(void) { c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0); }

/* The number spelled by exactly s[0 .. len), which must not start with a blank. */
static bool parse_double(const char *s, size_t len, double *v)
{
    pthread_once(&c_numeric_once, make_c_numeric);
    if (len == 0 || isspace((unsigned char)s[0])) return false;
    char *end;
    *v = c_numeric ? strtod_l(s, &end, c_numeric) : strtod(s, &end);
    return end == s + len;
}

static int shown(size_t len) { return len > SHOWN_CHARS ? SHOWN_CHARS : (int)len; }

/* ---- lines ---- */

typedef struct {
    const char *op, *path;
    gzFile file;
    char *buf;
    size_t cap, pos, end; /* unread bytes are buf[pos .. end) */
    int64_t offset;       /* uncompressed offset of buf[0] */
    int64_t lineno;       /* 1-based number of the line last returned */
    bool eof;
} line_reader;

static int reader_open(line_reader *r, const char *op, const char *path)
{
    *r = (line_reader){.op = op, .path = path};
    if (!bilo__reserve((void **)&r->buf, &r->cap, READ_CHUNK + 1, 1))
        return bilo__fail_code(BILO_ENOMEM, "%s: out of memory", op);
    r->file = bilo__data_open(op, path);
    if (r->file) return 0;
    bilo__data_release(r->buf, r->cap, 1);
    return bilo_errcode();
}

static void reader_close(line_reader *r)
{
    gzclose_r(r->file);
    bilo__data_release(r->buf, r->cap, 1);
}

/* EFORMAT "op: path: line N[, column C]: problem". */
static int line_error(const line_reader *r, int64_t column, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int line_error(const line_reader *r, int64_t column, const char *fmt, ...)
{
    char what[256], where[48];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int used = snprintf(where, sizeof where, "line %lld", (long long)r->lineno);
    if (column > 0) snprintf(where + used, sizeof where - (size_t)used, ", column %lld",
                             (long long)column);
    return bilo__fail_code(BILO_EFORMAT, "%s: %s: %s: %s", r->op, r->path, where, what);
}

/* Next line, NUL-terminated, without its "\n" or "\r\n". 1: a line; 0: end of file;
   negative: an error (a NUL byte inside a line is one: text files have none). */
static int next_line(line_reader *r, char **line, size_t *len)
{
    for (;;) {
        char *nl = r->pos < r->end ? memchr(r->buf + r->pos, '\n', r->end - r->pos) : NULL;
        if (nl || (r->eof && r->pos < r->end)) {
            size_t stop = nl ? (size_t)(nl - r->buf) : r->end;
            *line = r->buf + r->pos;
            *len = stop - r->pos;
            r->buf[stop] = '\0';
            if (*len && (*line)[*len - 1] == '\r') (*line)[--*len] = '\0';
            r->pos = nl ? stop + 1 : stop;
            r->lineno++;
            const char *nul = memchr(*line, '\0', *len);
            return nul ? line_error(r, nul - *line + 1, "NUL byte: not a text file") : 1;
        }
        if (r->eof) return 0;
        memmove(r->buf, r->buf + r->pos, r->end - r->pos);
        r->offset += (int64_t)r->pos;
        r->end -= r->pos;
        r->pos = 0;
        if (!bilo__reserve((void **)&r->buf, &r->cap, r->end + READ_CHUNK + 1, 1))
            return bilo__fail_code(BILO_ENOMEM, "%s: %s: line %lld: out of memory", r->op,
                                   r->path, (long long)r->lineno + 1);
        size_t want = r->cap - r->end - 1; /* one byte stays free for the terminating NUL */
        int64_t got = bilo__data_read(r->op, r->path, r->file, r->buf + r->end, want,
                                      r->offset + (int64_t)r->end);
        if (got < 0) return (int)got;
        r->end += (size_t)got;
        r->eof = (size_t)got < want;
    }
}

/* Next blank-separated token of [*p, end): false when none is left. */
static bool next_token(char **p, const char *end, char **tok, size_t *len)
{
    while (*p < end && (**p == ' ' || **p == '\t')) (*p)++;
    if (*p == end) return false;
    *tok = *p;
    while (*p < end && **p != ' ' && **p != '\t') (*p)++;
    *len = (size_t)(*p - *tok);
    return true;
}

/* ---- CSR matrices ---- */

struct bilo_csr {
    int64_t rows, cols;
    bilo_tensor *indptr, *indices, *values; /* one reference each, owned by the matrix */
};

/* Takes over one reference to each array (already out of every scope). */
static bilo_csr *csr_wrap(const char *op, int64_t rows, int64_t cols, bilo_tensor *indptr,
                          bilo_tensor *indices, bilo_tensor *values)
{
    bilo_csr *m = bilo__alloc(sizeof *m);
    if (!m) {
        bilo_release(indptr);
        bilo_release(indices);
        bilo_release(values);
        return bilo__fail(BILO_ENOMEM, "%s: out of memory", op);
    }
    *m = (bilo_csr){rows, cols, indptr, indices, values};
    return m;
}

BILO_API void bilo_csr_free(bilo_csr *m)
{
    if (!m) return;
    bilo_release(m->indptr);
    bilo_release(m->indices);
    bilo_release(m->values);
    bilo__free(m, sizeof *m);
}

BILO_API int64_t bilo_csr_rows(const bilo_csr *m) { return m ? m->rows : -1; }
BILO_API int64_t bilo_csr_cols(const bilo_csr *m) { return m ? m->cols : -1; }
BILO_API int64_t bilo_csr_nnz(const bilo_csr *m) { return m ? m->values->numel : -1; }
BILO_API bilo_dtype bilo_csr_dtype(const bilo_csr *m) { return m ? m->values->dtype : BILO_F32; }
BILO_API bilo_tensor *bilo_csr_indptr(const bilo_csr *m) { return m ? m->indptr : NULL; }
BILO_API bilo_tensor *bilo_csr_indices(const bilo_csr *m) { return m ? m->indices : NULL; }
BILO_API bilo_tensor *bilo_csr_values(const bilo_csr *m) { return m ? m->values : NULL; }

static bool check_vector(const char *op, const char *name, const bilo_tensor *t, bool is_index,
                         int64_t numel)
{
    bool dtype_ok = is_index ? t->dtype == BILO_I64 : t->dtype == BILO_F32 || t->dtype == BILO_F64;
    if (!dtype_ok)
        return bilo__fail(BILO_EDTYPE, "%s: %s must be %s, got %s", op, name,
                          is_index ? "i64" : "f32 or f64", bilo_dtype_name(t->dtype)),
               false;
    if (t->ndim != 1)
        return bilo__fail(BILO_ESHAPE, "%s: %s must be 1-D, got %d dims", op, name, t->ndim),
               false;
    if (numel >= 0 && t->numel != numel)
        return bilo__fail(BILO_ESHAPE, "%s: %s has %lld elements, expected %lld", op, name,
                          (long long)t->numel, (long long)numel),
               false;
    return true;
}

static bool check_csr_structure(const char *op, int64_t rows, int64_t cols, const int64_t *ptr,
                                const int64_t *idx, int64_t nnz)
{
    if (ptr[0] != 0 || ptr[rows] != nnz)
        return bilo__fail(BILO_EINVAL, "%s: indptr runs from %lld to %lld, expected 0 to nnz %lld",
                          op, (long long)ptr[0], (long long)ptr[rows], (long long)nnz),
               false;
    for (int64_t i = 0; i < rows; i++) {
        if (ptr[i + 1] < ptr[i] || ptr[i + 1] > nnz)
            return bilo__fail(BILO_EINVAL, "%s: indptr[%lld] = %lld is out of order", op,
                              (long long)(i + 1), (long long)ptr[i + 1]),
                   false;
        for (int64_t k = ptr[i]; k < ptr[i + 1]; k++)
            if (idx[k] < 0 || idx[k] >= cols || (k > ptr[i] && idx[k] <= idx[k - 1]))
                return bilo__fail(BILO_EINVAL,
                                  "%s: row %lld: column %lld is outside [0, %lld) or not "
                                  "ascending",
                                  op, (long long)i, (long long)idx[k], (long long)cols),
                       false;
    }
    return true;
}

BILO_API bilo_csr *bilo_csr_new(int64_t rows, int64_t cols, bilo_tensor *indptr,
                                bilo_tensor *indices, bilo_tensor *values)
{
    static const char op[] = "bilo_csr_new";
    if (!indptr || !indices || !values) return NULL;
    if (rows < 0 || cols < 0)
        return bilo__fail(BILO_EINVAL, "%s: negative size %lld x %lld", op, (long long)rows,
                          (long long)cols);
    if (!check_vector(op, "indptr", indptr, true, rows + 1) ||
        !check_vector(op, "values", values, false, -1) ||
        !check_vector(op, "indices", indices, true, values->numel) ||
        !check_csr_structure(op, rows, cols, bilo__ptr(indptr), bilo__ptr(indices),
                             values->numel))
        return NULL;
    return csr_wrap(op, rows, cols, bilo_retain(indptr), bilo_retain(indices),
                    bilo_retain(values));
}

/* Fill a dense [rows, cols] tensor of zeros from CSR arrays with values of type T. */
#define SCATTER_ROWS(T, dense, rows, cols, ptr, idx, vals)                          \
    for (int64_t i = 0; i < (rows); i++)                                           \
        for (int64_t k = (ptr)[i]; k < (ptr)[i + 1]; k++)                          \
            ((T *)bilo__ptr(dense))[i * (cols) + (idx)[k]] = (T)((vals)[k]);

BILO_API bilo_tensor *bilo_csr_to_dense(const bilo_csr *m)
{
    if (!m) return NULL;
    bilo_tensor *out = bilo_zeros(m->values->dtype, BILO_SHAPE(m->rows, m->cols));
    if (!out) return NULL;
    const int64_t *ptr = bilo__ptr(m->indptr), *idx = bilo__ptr(m->indices);
    if (out->dtype == BILO_F32) {
        SCATTER_ROWS(float, out, m->rows, m->cols, ptr, idx, (const float *)bilo__ptr(m->values))
    } else {
        SCATTER_ROWS(double, out, m->rows, m->cols, ptr, idx,
                     (const double *)bilo__ptr(m->values))
    }
    return out;
}

BILO_API bilo_tensor *bilo_csr_matmul(const bilo_csr *a, bilo_tensor *dense)
{
    if (!a || !dense) return NULL;
    return bilo_spmm(a->indptr, a->indices, a->values, a->rows, a->cols, dense, false);
}

/* New tensor taken out of every scope, for a matrix to own. */
static bilo_tensor *owned_vector(const char *op, bilo_dtype dtype, int64_t n)
{
    return bilo_keep(bilo__new(op, dtype, 1, &n));
}

BILO_API bilo_csr *bilo_csr_select_rows(const bilo_csr *m, bilo_tensor *index)
{
    static const char op[] = "bilo_csr_select_rows";
    if (!m || !index || !check_vector(op, "index", index, true, -1)) return NULL;
    const int64_t *pick = bilo__ptr(index), *ptr = bilo__ptr(m->indptr);
    int64_t k = index->numel, nnz = 0;
    for (int64_t i = 0; i < k; i++) {
        if (pick[i] < 0 || pick[i] >= m->rows)
            return bilo__fail(BILO_ERANGE, "%s: index[%lld] = %lld is outside [0, %lld)", op,
                              (long long)i, (long long)pick[i], (long long)m->rows);
        nnz += ptr[pick[i] + 1] - ptr[pick[i]];
    }
    bilo_tensor *indptr = owned_vector(op, BILO_I64, k + 1);
    bilo_tensor *indices = owned_vector(op, BILO_I64, nnz);
    bilo_tensor *values = owned_vector(op, m->values->dtype, nnz);
    if (!indptr || !indices || !values) {
        bilo_release(indptr);
        bilo_release(indices);
        bilo_release(values);
        return NULL;
    }
    int64_t *new_ptr = bilo__ptr(indptr), *new_idx = bilo__ptr(indices);
    size_t vsize = bilo_dtype_size(values->dtype);
    new_ptr[0] = 0;
    for (int64_t i = 0; i < k; i++) {
        int64_t from = ptr[pick[i]], count = ptr[pick[i] + 1] - from, at = new_ptr[i];
        memcpy(new_idx + at, (const int64_t *)bilo__ptr(m->indices) + from,
               (size_t)count * sizeof *new_idx);
        memcpy((char *)bilo__ptr(values) + (size_t)at * vsize,
               (const char *)bilo__ptr(m->values) + (size_t)from * vsize, (size_t)count * vsize);
        new_ptr[i + 1] = at + count;
    }
    return csr_wrap(op, k, m->cols, indptr, indices, values);
}

/* ---- LIBSVM ---- */

/* A parsed file: CSR arrays with f64 values, and one label per row. */
typedef struct {
    int64_t *indptr, *cols;
    double *vals, *labels;
    size_t indptr_cap, cols_cap, vals_cap, labels_cap;
    int64_t rows, nnz, max_index;
} sparse_rows;

static void sparse_free(sparse_rows *s)
{
    bilo__data_release(s->indptr, s->indptr_cap, sizeof *s->indptr);
    bilo__data_release(s->cols, s->cols_cap, sizeof *s->cols);
    bilo__data_release(s->vals, s->vals_cap, sizeof *s->vals);
    bilo__data_release(s->labels, s->labels_cap, sizeof *s->labels);
}

/* Position of label in opts->classes, or -1. */
static int class_of(const bilo_libsvm_opts *o, double label)
{
    for (int c = 0; c < o->num_classes; c++)
        if (o->classes[c] == label) return c;
    return -1;
}

static int parse_label(const line_reader *r, const bilo_libsvm_opts *o, const char *tok,
                       size_t len, double *label)
{
    if (!parse_double(tok, len, label) || !isfinite(*label))
        return line_error(r, 0, "label '%.*s' is not a finite number", shown(len), tok);
    if (o->num_classes > 0 && class_of(o, *label) < 0)
        return line_error(r, 0, "label %.17g is not one of the %d classes given", *label,
                          o->num_classes);
    return 0;
}

/* "index:value" with 1-based index > previous; stores the 0-based column. */
static int parse_feature(const line_reader *r, const bilo_libsvm_opts *o, const char *tok,
                         size_t len, int64_t previous, int64_t *column, double *value)
{
    const char *colon = memchr(tok, ':', len);
    if (!colon) return line_error(r, 0, "'%.*s' is not index:value", shown(len), tok);
    size_t ilen = (size_t)(colon - tok);
    int64_t index = 0;
    for (size_t i = 0; i < ilen; i++) {
        if (!isdigit((unsigned char)tok[i]))
            return line_error(r, 0, "index '%.*s' is not a positive integer", shown(ilen), tok);
        index = index * 10 + (tok[i] - '0');
        if (index > MAX_INDEX)
            return line_error(r, 0, "index %.*s exceeds %d", shown(ilen), tok, MAX_INDEX);
    }
    if (ilen == 0) return line_error(r, 0, "'%.*s' lacks an index", shown(len), tok);
    if (index == 0) return line_error(r, 0, "index 0: indices start at 1");
    if (index <= previous)
        return line_error(r, 0, "index %lld after %lld: indices must be strictly ascending",
                          (long long)index, (long long)previous);
    if (o->num_features > 0 && index > o->num_features)
        return line_error(r, 0, "index %lld exceeds num_features %lld", (long long)index,
                          (long long)o->num_features);
    size_t vlen = len - ilen - 1;
    if (vlen == 0) return line_error(r, 0, "index %lld has no value", (long long)index);
    if (!parse_double(colon + 1, vlen, value) || !isfinite(*value))
        return line_error(r, 0, "value '%.*s' of index %lld is not a finite number",
                          shown(vlen), colon + 1, (long long)index);
    *column = index - 1;
    return 0;
}

static bool is_qid(const char *tok, size_t len)
{
    if (len <= 4 || memcmp(tok, "qid:", 4) != 0) return false;
    for (size_t i = 4; i < len; i++)
        if (!isdigit((unsigned char)tok[i])) return false;
    return true;
}

static int out_of_memory(const line_reader *r)
{
    return bilo__fail_code(BILO_ENOMEM, "%s: %s: line %lld: out of memory", r->op, r->path,
                           (long long)r->lineno);
}

static int parse_libsvm_line(const line_reader *r, const bilo_libsvm_opts *o, sparse_rows *s,
                             char *line, size_t len)
{
    const char *comment = memchr(line, '#', len);
    const char *end = comment ? comment : line + len;
    char *p = line, *tok;
    size_t tlen;
    if (!next_token(&p, end, &tok, &tlen)) return 0; /* blank or comment only */
    double label = 0;
    int rc = parse_label(r, o, tok, tlen, &label);
    if (rc < 0) return rc;
    if (!bilo__reserve((void **)&s->labels, &s->labels_cap, (size_t)s->rows + 1,
                            sizeof *s->labels) ||
        !bilo__reserve((void **)&s->indptr, &s->indptr_cap, (size_t)s->rows + 2,
                            sizeof *s->indptr))
        return out_of_memory(r);
    bool first = true;
    int64_t previous = 0;
    while (next_token(&p, end, &tok, &tlen)) {
        if (first && is_qid(tok, tlen)) continue;
        first = false;
        int64_t column = 0;
        double value = 0;
        rc = parse_feature(r, o, tok, tlen, previous, &column, &value);
        if (rc < 0) return rc;
        if (!bilo__reserve((void **)&s->cols, &s->cols_cap, (size_t)s->nnz + 1,
                                sizeof *s->cols) ||
            !bilo__reserve((void **)&s->vals, &s->vals_cap, (size_t)s->nnz + 1,
                                sizeof *s->vals))
            return out_of_memory(r);
        s->cols[s->nnz] = column;
        s->vals[s->nnz++] = value;
        previous = column + 1;
    }
    if (previous > s->max_index) s->max_index = previous;
    s->labels[s->rows++] = label;
    s->indptr[s->rows] = s->nnz;
    return 0;
}

static int parse_libsvm(const char *op, const char *path, const bilo_libsvm_opts *o,
                        sparse_rows *s)
{
    *s = (sparse_rows){0};
    if (!bilo__reserve((void **)&s->indptr, &s->indptr_cap, 1, sizeof *s->indptr))
        return bilo__fail_code(BILO_ENOMEM, "%s: out of memory", op);
    s->indptr[0] = 0;
    line_reader r;
    int rc = reader_open(&r, op, path);
    char *line;
    size_t len;
    while (rc == 0 && (rc = next_line(&r, &line, &len)) > 0)
        rc = parse_libsvm_line(&r, o, s, line, len);
    if (r.file) reader_close(&r);
    if (rc < 0) sparse_free(s);
    return rc;
}

static int check_libsvm_opts(const char *op, const bilo_libsvm_opts *o)
{
    if (o->dtype != BILO_F32 && o->dtype != BILO_F64)
        return bilo__fail_code(BILO_EDTYPE, "%s: dtype must be f32 or f64, got %s", op,
                               bilo_dtype_name(o->dtype));
    if (o->num_features < 0)
        return bilo__fail_code(BILO_EINVAL, "%s: num_features = %lld is negative", op,
                               (long long)o->num_features);
    if (o->num_classes < 0 || (o->num_classes > 0 && !o->classes))
        return bilo__fail_code(BILO_EINVAL, "%s: num_classes = %d needs a classes array", op,
                               o->num_classes);
    return 0;
}

static bilo_tensor *labels_tensor(const char *where, const bilo_libsvm_opts *o,
                                  const sparse_rows *s)
{
    int64_t n = s->rows;
    bilo_tensor *y = bilo__new(where, o->num_classes ? BILO_I64 : BILO_F64, 1, &n);
    if (y && o->num_classes)
        for (int64_t i = 0; i < n; i++) ((int64_t *)bilo__ptr(y))[i] = class_of(o, s->labels[i]);
    else if (y && n)
        memcpy(bilo__ptr(y), s->labels, (size_t)n * sizeof *s->labels);
    return y;
}

static bilo_tensor *dense_tensor(const char *where, const bilo_libsvm_opts *o,
                                 const sparse_rows *s, int64_t d)
{
    int64_t shape[2] = {s->rows, d};
    bilo_tensor *x = bilo__new(where, o->dtype, 2, shape);
    if (!x) return NULL;
    memset(bilo__ptr(x), 0, (size_t)x->numel * bilo_dtype_size(o->dtype));
    if (o->dtype == BILO_F32) {
        SCATTER_ROWS(float, x, s->rows, d, s->indptr, s->cols, s->vals)
    } else {
        SCATTER_ROWS(double, x, s->rows, d, s->indptr, s->cols, s->vals)
    }
    return x;
}

static bilo_csr *csr_from_rows(const char *where, const bilo_libsvm_opts *o,
                               const sparse_rows *s, int64_t d)
{
    bilo_tensor *indptr = owned_vector(where, BILO_I64, s->rows + 1);
    bilo_tensor *indices = owned_vector(where, BILO_I64, s->nnz);
    bilo_tensor *values = owned_vector(where, o->dtype, s->nnz);
    if (!indptr || !indices || !values) {
        bilo_release(indptr);
        bilo_release(indices);
        bilo_release(values);
        return NULL;
    }
    memcpy(bilo__ptr(indptr), s->indptr, (size_t)(s->rows + 1) * sizeof *s->indptr);
    if (s->nnz) memcpy(bilo__ptr(indices), s->cols, (size_t)s->nnz * sizeof *s->cols);
#define COPY_VALUES(T) \
    for (int64_t k = 0; k < s->nnz; k++) ((T *)bilo__ptr(values))[k] = (T)s->vals[k];
    if (o->dtype == BILO_F32) {
        COPY_VALUES(float)
    } else {
        COPY_VALUES(double)
    }
#undef COPY_VALUES
    return csr_wrap(where, s->rows, d, indptr, indices, values);
}

/* Parse path and build the requested outputs; x_dense or x_csr is NULL. */
static int read_libsvm(const char *op, const char *path, const bilo_libsvm_opts *opts,
                       bilo_tensor **x_dense, bilo_csr **x_csr, bilo_tensor **y)
{
    if (!y) return bilo__fail_code(BILO_ENULL, "%s: output pointer is NULL", op);
    if (x_dense) *x_dense = NULL;
    if (x_csr) *x_csr = NULL;
    *y = NULL;
    bilo_libsvm_opts o = opts ? *opts : (bilo_libsvm_opts){0};
    sparse_rows s;
    int rc = check_libsvm_opts(op, &o);
    if (rc == 0) rc = parse_libsvm(op, path, &o, &s);
    if (rc < 0) return rc;
    char where[4096]; /* allocation errors name the file too */
    snprintf(where, sizeof where, "%s: %s", op, path);
    int64_t d = o.num_features ? o.num_features : s.max_index;
    bilo_scope_begin();
    bilo_tensor *labels = labels_tensor(where, &o, &s);
    bilo_tensor *dense = labels && x_dense ? dense_tensor(where, &o, &s, d) : NULL;
    bilo_csr *csr = labels && x_csr ? csr_from_rows(where, &o, &s, d) : NULL;
    rc = dense || csr ? 0 : bilo_errcode();
    if (rc == 0) {
        *y = bilo_scope_return(labels);
        if (x_dense) *x_dense = bilo_scope_return(dense);
        if (x_csr) *x_csr = csr;
    }
    bilo_scope_end();
    sparse_free(&s);
    return rc;
}

BILO_API int bilo_read_libsvm(const char *path, const bilo_libsvm_opts *opts, bilo_tensor **x,
                              bilo_tensor **y)
{
    if (!x) return bilo__fail_code(BILO_ENULL, "bilo_read_libsvm: output pointer is NULL");
    return read_libsvm("bilo_read_libsvm", path, opts, x, NULL, y);
}

BILO_API int bilo_read_libsvm_csr(const char *path, const bilo_libsvm_opts *opts, bilo_csr **x,
                                  bilo_tensor **y)
{
    if (!x) return bilo__fail_code(BILO_ENULL, "bilo_read_libsvm_csr: output pointer is NULL");
    return read_libsvm("bilo_read_libsvm_csr", path, opts, NULL, x, y);
}

/* ---- CSV ---- */

typedef struct {
    const bilo_csv_opts *o;
    double *vals;
    size_t cap;
    int64_t count, rows, cols, first_row_line;
    bool header_pending;
} csv_table;

static bool is_blank_for(char c, char delimiter)
{
    return (c == ' ' || c == '\t') && c != delimiter;
}

static int parse_csv_field(const line_reader *r, csv_table *t, const char *field, size_t len,
                           int64_t column)
{
    char d = t->o->delimiter;
    while (len && is_blank_for(*field, d)) field++, len--;
    while (len && is_blank_for(field[len - 1], d)) len--;
    double v;
    if (len == 0 && !t->o->missing_as_nan) return line_error(r, column, "missing value");
    if (len == 0)
        v = NAN;
    else if (!parse_double(field, len, &v))
        return line_error(r, column, "'%.*s' is not a number", shown(len), field);
    if (!bilo__reserve((void **)&t->vals, &t->cap, (size_t)t->count + 1, sizeof *t->vals))
        return out_of_memory(r);
    t->vals[t->count++] = v;
    return 0;
}

static int parse_csv_line(const line_reader *r, csv_table *t, const char *line, size_t len)
{
    size_t blank = 0;
    while (blank < len && (line[blank] == ' ' || line[blank] == '\t')) blank++;
    if (blank == len) return 0;
    if (t->header_pending) {
        t->header_pending = false;
        return 0;
    }
    int64_t fields = 0;
    for (const char *p = line, *end = line + len;; p++) {
        const char *stop = memchr(p, t->o->delimiter, (size_t)(end - p));
        if (!stop) stop = end;
        int rc = parse_csv_field(r, t, p, (size_t)(stop - p), ++fields);
        if (rc < 0) return rc;
        p = stop;
        if (p == end) break;
    }
    if (t->rows == 0) {
        t->cols = fields;
        t->first_row_line = r->lineno;
    } else if (fields != t->cols) {
        return line_error(r, 0, "%lld field(s) where line %lld has %lld", (long long)fields,
                          (long long)t->first_row_line, (long long)t->cols);
    }
    t->rows++;
    return 0;
}

static int check_csv_opts(const char *op, const bilo_csv_opts *o)
{
    if (o->dtype != BILO_F32 && o->dtype != BILO_F64)
        return bilo__fail_code(BILO_EDTYPE, "%s: dtype must be f32 or f64, got %s", op,
                               bilo_dtype_name(o->dtype));
    unsigned char d = (unsigned char)o->delimiter;
    if (isalnum(d) || strchr(".+-#\"\r\n", d))
        return bilo__fail_code(BILO_EINVAL, "%s: delimiter '%c' can occur in numbers or lines",
                               op, d);
    return 0;
}

BILO_API bilo_tensor *bilo_read_csv(const char *path, const bilo_csv_opts *opts)
{
    static const char op[] = "bilo_read_csv";
    bilo_csv_opts o = opts ? *opts : (bilo_csv_opts){0};
    if (!o.delimiter) o.delimiter = ',';
    if (check_csv_opts(op, &o) < 0) return NULL;
    csv_table t = {.o = &o, .header_pending = o.header};
    line_reader r;
    int rc = reader_open(&r, op, path);
    char *line;
    size_t len;
    while (rc == 0 && (rc = next_line(&r, &line, &len)) > 0)
        rc = parse_csv_line(&r, &t, line, len);
    bilo_tensor *out = NULL;
    if (r.file) reader_close(&r);
    if (rc == 0) {
        char where[4096];
        snprintf(where, sizeof where, "%s: %s", op, path);
        out = bilo__new(where, o.dtype, BILO_SHAPE(t.rows, t.cols));
    }
    if (out && o.dtype == BILO_F32)
        for (int64_t i = 0; i < t.count; i++) ((float *)bilo__ptr(out))[i] = (float)t.vals[i];
    else if (out && t.count)
        memcpy(bilo__ptr(out), t.vals, (size_t)t.count * sizeof *t.vals);
    bilo__data_release(t.vals, t.cap, sizeof *t.vals);
    return out;
}
