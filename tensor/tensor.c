/* Tensor headers and storage, reference counting, scopes, creation and element access. */
#include "tensor_impl.h"

#include <math.h>
#include <string.h>

/* Under AddressSanitizer a released header that lives inside its storage's block is
   poisoned, so a use after release is still reported while an alias keeps the block. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
static void poison_dead_header(bilo_tensor *t) { ASAN_POISON_MEMORY_REGION(t, sizeof *t); }
#else
static void poison_dead_header(bilo_tensor *t) { (void)t; }
#endif

_Thread_local int bilo__no_grad_depth;
bilo_record_fn bilo__record_hook;
bilo_node_release_fn bilo__node_release_hook;

/* Storage header and data share one block; the data starts one cache line in. A tensor made
   by bilo__new has its header in the same block, between the two: one allocation per new
   tensor instead of two. That header's memory goes back with the storage, so it is dead
   weight while an alias of the storage outlives the tensor (one cache line or two). */
#define STORAGE_HEADER 64
#define EMBEDDED_HEADER ((sizeof(bilo_tensor) + STORAGE_HEADER - 1) / STORAGE_HEADER * STORAGE_HEADER)

/* Storage for nbytes of data with room for the header of the tensor that will own it. */
static bilo_storage *storage_new(size_t nbytes)
{
    size_t block_bytes = STORAGE_HEADER + EMBEDDED_HEADER + nbytes;
    bilo_storage *s = bilo__alloc(block_bytes);
    if (!s) return NULL;
    s->data = (char *)s + STORAGE_HEADER + EMBEDDED_HEADER;
    s->nbytes = nbytes;
    s->block_bytes = block_bytes;
    atomic_init(&s->refcount, 1);
    atomic_init(&s->version, 0);
    return s;
}

static void storage_release(bilo_storage *s)
{
    if (atomic_fetch_sub(&s->refcount, 1) == 1) bilo__free(s, s->block_bytes);
}

static bilo_tensor *embedded_header(bilo_storage *s)
{
    return (bilo_tensor *)((char *)s + STORAGE_HEADER);
}

/* Whether t is the header bilo__new placed in its storage's block (compared as integers:
   storages without such room, like autograd's data-less one, are smaller than the offset). */
static bool header_in_block(const bilo_tensor *t)
{
    return (uintptr_t)t == (uintptr_t)t->storage + STORAGE_HEADER;
}

/* ---- scopes: one thread-local stack of owned tensors, split by marks ---- */
typedef struct {
    bilo_tensor **items;
    size_t count, capacity;
    size_t *marks;
    size_t depth, mark_capacity;
} scope_stack;

static _Thread_local scope_stack scopes;

bilo_tensor *bilo__scope_adopt(bilo_tensor *t)
{
    if (!t || scopes.depth == 0) return t;
    if (scopes.count == scopes.capacity &&
        !bilo__reserve((void **)&scopes.items, &scopes.capacity, scopes.count + 1,
                       sizeof *scopes.items)) {
        bilo_release(t);
        return bilo__fail(BILO_ENOMEM, "bilo_scope: out of memory growing the scope");
    }
    scopes.items[scopes.count++] = t;
    return t;
}

BILO_API void bilo_scope_begin(void)
{
    if (scopes.depth == scopes.mark_capacity &&
        !bilo__reserve((void **)&scopes.marks, &scopes.mark_capacity, scopes.depth + 1,
                       sizeof *scopes.marks)) {
        /* Without room for a mark the new scope merges into the enclosing one: tensors are
           still released, only later. */
        bilo__fail(BILO_ENOMEM, "bilo_scope_begin: out of memory");
        return;
    }
    scopes.marks[scopes.depth++] = scopes.count;
}

BILO_API void bilo_scope_end(void)
{
    if (scopes.depth == 0) return;
    size_t mark = scopes.marks[--scopes.depth];
    while (scopes.count > mark) bilo_release(scopes.items[--scopes.count]);
    if (scopes.depth == 0 && scopes.marks) {
        /* Outermost scope closed: hand the arrays back so a thread leaves nothing behind
           (items exists only once a tensor was adopted). */
        if (scopes.items) bilo__free(scopes.items, scopes.capacity * sizeof *scopes.items);
        bilo__free(scopes.marks, scopes.mark_capacity * sizeof *scopes.marks);
        scopes = (scope_stack){0};
    }
}

/* Position of t among the items at or above `from`, or SIZE_MAX. */
static size_t scope_find(const bilo_tensor *t, size_t from)
{
    for (size_t i = scopes.count; i > from; i--)
        if (scopes.items[i - 1] == t) return i - 1;
    return SIZE_MAX;
}

BILO_API bilo_tensor *bilo_keep(bilo_tensor *t)
{
    if (!t) return NULL;
    size_t at = scope_find(t, 0);
    if (at != SIZE_MAX) scopes.items[at] = NULL;
    return t;
}

BILO_API bilo_tensor *bilo_scope_return(bilo_tensor *t)
{
    if (!t || scopes.depth == 0) return t;
    size_t mark = scopes.marks[scopes.depth - 1];
    size_t at = scope_find(t, mark);
    if (at == SIZE_MAX) return t;
    if (scopes.depth == 1) {
        scopes.items[at] = NULL;
        return t;
    }
    /* Move t to the enclosing scope: rotate it down to the mark and raise the mark by one. */
    memmove(scopes.items + mark + 1, scopes.items + mark, (at - mark) * sizeof *scopes.items);
    scopes.items[mark] = t;
    scopes.marks[scopes.depth - 1] = mark + 1;
    return t;
}

/* ---- headers ---- */
/* Field by field: a struct literal or a memcpy of ndim dims compiles to rep stos / rep movs,
   whose start-up cost was most of a small tensor's creation (perf, chain benchmark). */
static bilo_tensor *header_init(bilo_tensor *t, bilo_dtype dtype, int ndim, const int64_t *shape,
                                int64_t numel, bilo_storage *storage)
{
    atomic_init(&t->refcount, 1);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < BILO_MAX_DIMS; d++) t->shape[d] = d < ndim ? shape[d] : 0;
    t->numel = numel;
    t->storage = storage;
    t->requires_grad = false;
    t->node = NULL;
    t->grad = NULL;
    return t;
}

static bilo_tensor *header_new(bilo_dtype dtype, int ndim, const int64_t *shape, int64_t numel,
                               bilo_storage *storage)
{
    bilo_tensor *t = bilo__alloc(sizeof *t);
    return t ? header_init(t, dtype, ndim, shape, numel, storage) : NULL;
}

BILO_API bilo_tensor *bilo_retain(bilo_tensor *t)
{
    if (t) atomic_fetch_add(&t->refcount, 1);
    return t;
}

BILO_API void bilo_release(bilo_tensor *t)
{
    if (!t || atomic_fetch_sub(&t->refcount, 1) != 1) return;
    if (t->node) __atomic_load_n(&bilo__node_release_hook, __ATOMIC_ACQUIRE)(t->node);
    bilo_release(t->grad);
    bilo_storage *s = t->storage;
    if (header_in_block(t))
        poison_dead_header(t);
    else
        bilo__free(t, sizeof *t);
    storage_release(s);
}

BILO_API size_t bilo_dtype_size(bilo_dtype dtype)
{
    switch (dtype) {
    case BILO_F32: return sizeof(float);
    case BILO_F64: return sizeof(double);
    case BILO_I64: return sizeof(int64_t);
    }
    return 0;
}

BILO_API const char *bilo_dtype_name(bilo_dtype dtype)
{
    switch (dtype) {
    case BILO_F32: return "f32";
    case BILO_F64: return "f64";
    case BILO_I64: return "i64";
    }
    return "invalid dtype";
}

int64_t bilo__shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

/* Validate dtype and shape; on success *numel and *nbytes hold the sizes. */
static bool check_layout(const char *op, bilo_dtype dtype, int ndim, const int64_t *shape,
                         int64_t *numel, size_t *nbytes)
{
    char buf[BILO_SHAPE_BUF];
    if (bilo_dtype_size(dtype) == 0)
        return bilo__fail(BILO_EDTYPE, "%s: invalid dtype %d", op, (int)dtype), false;
    if (ndim < 0 || ndim > BILO_MAX_DIMS)
        return bilo__fail(BILO_EINVAL, "%s: ndim %d outside 0..%d", op, ndim, BILO_MAX_DIMS), false;
    if (ndim > 0 && !shape) return bilo__fail(BILO_ENULL, "%s: shape is NULL", op), false;
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return bilo__fail(BILO_EINVAL, "%s: negative dimension in shape %s", op,
                              bilo__shape_str(buf, ndim, shape)),
                   false;
        /* n * 16 must fit int64 (bytes of the widest dtype); checked without a division */
        if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n) || n > (uint64_t)INT64_MAX / 16)
            return bilo__fail(BILO_EOVERFLOW, "%s: shape %s is too large", op,
                              bilo__shape_str(buf, ndim, shape)),
                   false;
    }
    *numel = (int64_t)n;
    *nbytes = (size_t)n * bilo_dtype_size(dtype);
    return true;
}

bilo_tensor *bilo__new(const char *op, bilo_dtype dtype, int ndim, const int64_t *shape)
{
    int64_t numel;
    size_t nbytes;
    if (!check_layout(op, dtype, ndim, shape, &numel, &nbytes)) return NULL;
    bilo_storage *s = storage_new(nbytes);
    if (!s) return bilo__fail(BILO_ENOMEM, "%s: out of memory allocating %zu bytes", op, nbytes);
    return bilo__scope_adopt(header_init(embedded_header(s), dtype, ndim, shape, numel, s));
}

bilo_tensor *bilo__alias(bilo_tensor *x, int ndim, const int64_t *shape)
{
    atomic_fetch_add(&x->storage->refcount, 1);
    bilo_tensor *t = header_new(x->dtype, ndim, shape, x->numel, x->storage);
    if (!t) {
        storage_release(x->storage);
        return bilo__fail(BILO_ENOMEM, "bilo_reshape: out of memory");
    }
    return bilo__scope_adopt(t);
}

/* ---- validation helpers ---- */
bool bilo__check_float(const char *op, const bilo_tensor *t)
{
    if (t->dtype == BILO_F32 || t->dtype == BILO_F64) return true;
    bilo__fail(BILO_EDTYPE, "%s: expected an f32 or f64 tensor, got %s", op,
               bilo_dtype_name(t->dtype));
    return false;
}

bool bilo__check_same_dtype(const char *op, const bilo_tensor *a, const bilo_tensor *b)
{
    if (a->dtype == b->dtype) return true;
    bilo__fail(BILO_EDTYPE, "%s: dtypes %s and %s differ (cast one first)", op,
               bilo_dtype_name(a->dtype), bilo_dtype_name(b->dtype));
    return false;
}

int bilo__axis(const char *op, int axis, int ndim)
{
    int a = axis < 0 ? axis + ndim : axis;
    if (a < 0 || a >= ndim)
        return bilo__fail(BILO_ERANGE, "%s: axis %d out of range for %d dimensions", op, axis,
                          ndim),
               -1;
    return a;
}

bool bilo__broadcast_shape(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                           int *nout, int64_t *sout)
{
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int64_t da = i < n - na ? 1 : sa[i - (n - na)];
        int64_t db = i < n - nb ? 1 : sb[i - (n - nb)];
        if (da != db && da != 1 && db != 1) {
            char ba[BILO_SHAPE_BUF], bb[BILO_SHAPE_BUF];
            bilo__fail(BILO_ESHAPE, "%s: shapes %s and %s do not broadcast (axis %d: %lld vs %lld)",
                       op, bilo__shape_str(ba, na, sa), bilo__shape_str(bb, nb, sb), i,
                       (long long)da, (long long)db);
            return false;
        }
        sout[i] = da == 1 ? db : da;
    }
    *nout = n;
    return true;
}

/* ---- creation ---- */
void bilo__fill(bilo_tensor *t, double value)
{
    void *p = bilo__ptr(t);
    for (int64_t i = 0; i < t->numel; i++) {
        switch (t->dtype) {
        case BILO_F32: ((float *)p)[i] = (float)value; break;
        case BILO_F64: ((double *)p)[i] = value; break;
        case BILO_I64: ((int64_t *)p)[i] = (int64_t)value; break;
        }
    }
}

BILO_API bilo_tensor *bilo_empty(bilo_dtype dtype, int ndim, const int64_t *shape)
{
    return bilo__new("bilo_empty", dtype, ndim, shape);
}

BILO_API bilo_tensor *bilo_full(bilo_dtype dtype, int ndim, const int64_t *shape, double value)
{
    bilo_tensor *t = bilo__new("bilo_full", dtype, ndim, shape);
    if (t) bilo__fill(t, value);
    return t;
}

BILO_API bilo_tensor *bilo_zeros(bilo_dtype dtype, int ndim, const int64_t *shape)
{
    bilo_tensor *t = bilo__new("bilo_zeros", dtype, ndim, shape);
    if (t) memset(bilo__ptr(t), 0, t->storage->nbytes);
    return t;
}

BILO_API bilo_tensor *bilo_ones(bilo_dtype dtype, int ndim, const int64_t *shape)
{
    return bilo_full(dtype, ndim, shape, 1.0);
}

BILO_API bilo_tensor *bilo_zeros_like(bilo_tensor *t)
{
    return t ? bilo_zeros(t->dtype, t->ndim, t->shape) : NULL;
}

BILO_API bilo_tensor *bilo_ones_like(bilo_tensor *t)
{
    return t ? bilo_ones(t->dtype, t->ndim, t->shape) : NULL;
}

BILO_API bilo_tensor *bilo_from_data(bilo_dtype dtype, int ndim, const int64_t *shape,
                                     const void *data)
{
    if (!data) return bilo__fail(BILO_ENULL, "bilo_from_data: data is NULL");
    bilo_tensor *t = bilo__new("bilo_from_data", dtype, ndim, shape);
    if (t && t->storage->nbytes) memcpy(bilo__ptr(t), data, t->storage->nbytes);
    return t;
}

BILO_API bilo_tensor *bilo_scalar(bilo_dtype dtype, double value)
{
    bilo_tensor *t = bilo__new("bilo_scalar", dtype, 0, NULL);
    if (t) bilo__fill(t, value);
    return t;
}

BILO_API bilo_tensor *bilo_arange(bilo_dtype dtype, double start, double stop, double step)
{
    if (step == 0 || !isfinite(start) || !isfinite(stop) || !isfinite(step))
        return bilo__fail(BILO_EINVAL, "bilo_arange: start %g, stop %g, step %g do not define a range",
                          start, stop, step);
    double count = ceil((stop - start) / step);
    int64_t n = count > 0 ? (int64_t)count : 0;
    bilo_tensor *t = bilo__new("bilo_arange", dtype, 1, &n);
    for (int64_t i = 0; t && i < n; i++) bilo_set_flat(t, i, start + (double)i * step);
    return t;
}

BILO_API bilo_tensor *bilo_eye(bilo_dtype dtype, int64_t n)
{
    bilo_tensor *t = bilo_zeros(dtype, 2, (int64_t[]){n, n});
    for (int64_t i = 0; t && i < n; i++) bilo_set_flat(t, i * n + i, 1.0);
    return t;
}

/* ---- accessors ---- */
BILO_API bilo_dtype bilo_dtype_of(const bilo_tensor *t) { return t ? t->dtype : BILO_F32; }
BILO_API int bilo_ndim(const bilo_tensor *t) { return t ? t->ndim : -1; }
BILO_API const int64_t *bilo_shape(const bilo_tensor *t) { return t ? t->shape : NULL; }
BILO_API int64_t bilo_numel(const bilo_tensor *t) { return t ? t->numel : 0; }
BILO_API void *bilo_data(bilo_tensor *t) { return t ? bilo__ptr(t) : NULL; }

BILO_API int64_t bilo_dim(const bilo_tensor *t, int axis)
{
    if (!t) return -1;
    int a = bilo__axis("bilo_dim", axis, t->ndim);
    return a < 0 ? -1 : t->shape[a];
}

BILO_API void bilo_mark_modified(bilo_tensor *t)
{
    if (t) atomic_fetch_add(&t->storage->version, 1);
}

static bool check_flat(const char *op, const bilo_tensor *t, int64_t i)
{
    if (!t) return bilo__fail(BILO_ENULL, "%s: tensor is NULL", op), false;
    if (i < 0 || i >= t->numel)
        return bilo__fail(BILO_ERANGE, "%s: element %lld outside a tensor of %lld elements", op,
                          (long long)i, (long long)t->numel),
               false;
    return true;
}

BILO_API double bilo_get_flat(const bilo_tensor *t, int64_t i)
{
    if (!check_flat("bilo_get_flat", t, i)) return NAN;
    const void *p = bilo__ptr(t);
    switch (t->dtype) {
    case BILO_F32: return ((const float *)p)[i];
    case BILO_F64: return ((const double *)p)[i];
    case BILO_I64: return (double)((const int64_t *)p)[i];
    }
    return NAN;
}

BILO_API int bilo_set_flat(bilo_tensor *t, int64_t i, double value)
{
    if (!check_flat("bilo_set_flat", t, i)) return bilo_errcode();
    void *p = bilo__ptr(t);
    switch (t->dtype) {
    case BILO_F32: ((float *)p)[i] = (float)value; break;
    case BILO_F64: ((double *)p)[i] = value; break;
    case BILO_I64: ((int64_t *)p)[i] = (int64_t)value; break;
    }
    atomic_fetch_add(&t->storage->version, 1);
    return 0;
}

/* Flat position of a multi-index, or -1 with an error. */
static int64_t flat_index(const char *op, const bilo_tensor *t, const int64_t *index)
{
    if (!t) return bilo__fail(BILO_ENULL, "%s: tensor is NULL", op), -1;
    if (t->ndim && !index) return bilo__fail(BILO_ENULL, "%s: index is NULL", op), -1;
    int64_t flat = 0;
    for (int d = 0; d < t->ndim; d++) {
        if (index[d] < 0 || index[d] >= t->shape[d]) {
            char buf[BILO_SHAPE_BUF];
            return bilo__fail(BILO_ERANGE, "%s: index %lld out of range on axis %d of shape %s",
                              op, (long long)index[d], d, bilo__shape_str(buf, t->ndim, t->shape)),
                   -1;
        }
        flat = flat * t->shape[d] + index[d];
    }
    return flat;
}

BILO_API double bilo_get(const bilo_tensor *t, const int64_t *index)
{
    int64_t i = flat_index("bilo_get", t, index);
    return i < 0 ? NAN : bilo_get_flat(t, i);
}

BILO_API int bilo_set(bilo_tensor *t, const int64_t *index, double value)
{
    int64_t i = flat_index("bilo_set", t, index);
    return i < 0 ? bilo_errcode() : bilo_set_flat(t, i, value);
}

BILO_API double bilo_item(const bilo_tensor *t)
{
    if (t && t->numel != 1) {
        char buf[BILO_SHAPE_BUF];
        bilo__fail(BILO_ESHAPE, "bilo_item: tensor of shape %s has %lld elements, not 1",
                   bilo__shape_str(buf, t->ndim, t->shape), (long long)t->numel);
        return NAN;
    }
    return bilo_get_flat(t, 0);
}

/* Print the sub-array starting at flat position `at` spanning axes d.. of t. */
static void print_axis(FILE *f, const bilo_tensor *t, int d, int64_t at, int64_t stride)
{
    if (d == t->ndim) {
        fprintf(f, t->dtype == BILO_I64 ? "%.0f" : "%.6g", bilo_get_flat(t, at));
        return;
    }
    int64_t inner = stride / (t->shape[d] ? t->shape[d] : 1);
    fputc('[', f);
    for (int64_t i = 0; i < t->shape[d]; i++) {
        if (i) fprintf(f, d == t->ndim - 1 ? ", " : ",\n%*s", d + 1, "");
        print_axis(f, t, d + 1, at + i * inner, inner);
    }
    fputc(']', f);
}

BILO_API int bilo_fprint(FILE *stream, const bilo_tensor *t)
{
    if (!stream || !t) return bilo__fail_code(BILO_ENULL, "bilo_fprint: NULL argument");
    char buf[BILO_SHAPE_BUF];
    fprintf(stream, "tensor %s %s\n", bilo_dtype_name(t->dtype),
            bilo__shape_str(buf, t->ndim, t->shape));
    print_axis(stream, t, 0, 0, t->numel);
    fputc('\n', stream);
    return ferror(stream) ? bilo__fail_code(BILO_EIO, "bilo_fprint: write failed") : 0;
}
