/* Core: errors, creation and element access, scopes, the caching allocator (its hooks, size
   classes and use from two threads at once) and views that outlive their tensor. */
#include "bilo.h"
#include "tap.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static int contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

static void test_errors(void)
{
    bilo_clear_error();
    tap_ok(bilo_errcode() == 0 && strcmp(bilo_last_error(), "") == 0, "no error after clear");
    tap_ok(strcmp(bilo_strerror(BILO_ESHAPE), "shape mismatch") == 0, "strerror from the table");
    tap_ok(strcmp(bilo_strerror(12345), "unknown error code") == 0, "strerror of unknown code");
    tap_ok(strcmp(bilo_version(), "0.1.0") == 0, "version string");

    tap_ok(bilo_zeros(BILO_F64, 2, (int64_t[]){2, -3}) == NULL && bilo_errcode() == BILO_EINVAL &&
               contains(bilo_last_error(), "[2,-3]"),
           "negative dimension rejected with the shape in the message: %s", bilo_last_error());
    tap_ok(bilo_zeros(BILO_F32, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}) == NULL &&
               bilo_errcode() == BILO_EINVAL,
           "nine dimensions rejected");
    tap_ok(bilo_zeros(BILO_F32, 3, (int64_t[]){1 << 30, 1 << 30, 1 << 30}) == NULL &&
               bilo_errcode() == BILO_EOVERFLOW,
           "overflowing shape rejected: %s", bilo_last_error());
    tap_ok(bilo_zeros((bilo_dtype)7, 1, (int64_t[]){2}) == NULL && bilo_errcode() == BILO_EDTYPE,
           "invalid dtype rejected");
    tap_ok(bilo_from_data(BILO_F64, 1, (int64_t[]){2}, NULL) == NULL &&
               bilo_errcode() == BILO_ENULL,
           "from_data with NULL data");
    tap_ok(bilo_arange(BILO_F64, 0, 1, 0) == NULL && bilo_errcode() == BILO_EINVAL,
           "arange with zero step");
}

static void test_creation(void)
{
    bilo_scope_begin();
    double values[6] = {1, 2, 3, 4, 5, 6};
    bilo_tensor *t = bilo_from_data(BILO_F64, BILO_SHAPE(2, 3), values);
    tap_ok(bilo_ndim(t) == 2 && bilo_shape(t)[0] == 2 && bilo_shape(t)[1] == 3 &&
               bilo_numel(t) == 6 && bilo_dtype_of(t) == BILO_F64,
           "from_data shape and dtype");
    tap_ok(bilo_get(t, (int64_t[]){1, 2}) == 6 && bilo_get(t, (int64_t[]){0, 1}) == 2,
           "get by multi-index");
    tap_ok(bilo_dim(t, -1) == 3 && bilo_dim(t, 2) == -1 && bilo_errcode() == BILO_ERANGE,
           "dim with negative and out-of-range axes");
    tap_ok(bilo_set(t, (int64_t[]){1, 0}, -7) == 0 && bilo_get_flat(t, 3) == -7,
           "set by multi-index lands at the row-major position");
    tap_ok(bilo_set(t, (int64_t[]){2, 0}, 1) == BILO_ERANGE, "set out of range");
    tap_ok(isnan(bilo_get_flat(t, 6)) && bilo_errcode() == BILO_ERANGE, "get_flat out of range");
    tap_ok(isnan(bilo_item(t)) && bilo_errcode() == BILO_ESHAPE, "item of a 6-element tensor");

    bilo_tensor *s = bilo_scalar(BILO_F32, 2.5);
    tap_ok(bilo_ndim(s) == 0 && bilo_numel(s) == 1 && bilo_item(s) == 2.5, "0-dim scalar");

    bilo_tensor *r = bilo_arange(BILO_F64, 1, 2, 0.25);
    tap_ok(bilo_numel(r) == 4 && bilo_get_flat(r, 3) == 1.75, "arange(1, 2, 0.25) = 1..1.75");
    bilo_tensor *e = bilo_eye(BILO_F32, 3);
    tap_ok(bilo_get(e, (int64_t[]){1, 1}) == 1 && bilo_get(e, (int64_t[]){1, 2}) == 0, "eye");
    bilo_tensor *f = bilo_full(BILO_I64, BILO_SHAPE(2, 2), 7.9);
    tap_ok(((int64_t *)bilo_data(f))[3] == 7, "full i64 truncates like a C cast");
    bilo_tensor *z = bilo_zeros(BILO_F64, BILO_SHAPE(0, 4));
    tap_ok(z && bilo_numel(z) == 0, "zero-size tensor");
    bilo_tensor *o = bilo_ones_like(t);
    tap_ok(bilo_get_flat(o, 5) == 1 && bilo_ndim(o) == 2, "ones_like");

    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    bilo_fprint(mem, bilo_from_data(BILO_F64, BILO_SHAPE(2, 2), (double[]){1, 2, 3, 4.5}));
    fclose(mem);
    tap_ok(strcmp(text, "tensor f64 [2,2]\n[[1, 2],\n [3, 4.5]]\n") == 0, "fprint layout");
    free(text);
    bilo_scope_end();
}

static void test_scopes(void)
{
    bilo_mem_stats start, now;
    bilo_mem_get_stats(&start);

    bilo_scope_begin();
    bilo_tensor *kept = bilo_keep(bilo_ones(BILO_F64, BILO_SHAPE(3)));
    bilo_tensor *returned = NULL;
    bilo_scope_begin();
    bilo_tensor *inner = bilo_full(BILO_F64, BILO_SHAPE(2), 4);
    bilo_zeros(BILO_F64, BILO_SHAPE(5)); /* a temporary released at the inner end */
    returned = bilo_scope_return(inner);
    bilo_scope_end();
    tap_ok(bilo_get_flat(returned, 1) == 4, "scope_return keeps the tensor alive past its scope");
    bilo_scope_end();
    tap_ok(bilo_get_flat(kept, 2) == 1, "kept tensor outlives every scope");
    bilo_release(kept);

    bilo_mem_get_stats(&now);
    tap_ok(now.live_bytes == start.live_bytes, "scopes leave live bytes where they started (%zu vs %zu)",
           now.live_bytes, start.live_bytes);

    bilo_scope_begin(); /* a scope that never adopts a tensor */
    bilo_scope_begin();
    bilo_scope_end();
    bilo_scope_end();
    bilo_mem_get_stats(&now);
    tap_ok(now.live_bytes == start.live_bytes, "empty nested scopes leave no bytes behind (%zu vs %zu)",
           now.live_bytes, start.live_bytes);

    /* 1e5 iterations, each with temporaries, must return to the starting live bytes. */
    bilo_tensor *x = bilo_keep(bilo_full(BILO_F32, BILO_SHAPE(16), 0.5));
    bilo_mem_get_stats(&start);
    int ok = 1;
    for (int i = 0; i < 100000 && ok; i++) {
        bilo_scope_begin();
        bilo_tensor *y = bilo_mul(bilo_add(x, x), x);
        ok = y && bilo_get_flat(y, 0) == 0.5f;
        bilo_scope_end();
    }
    bilo_mem_get_stats(&now);
    tap_ok(ok, "1e5 scoped iterations compute (x+x)*x = 0.5");
    tap_ok(now.live_bytes == start.live_bytes, "after 1e5 iterations live bytes are back (%zu vs %zu)",
           now.live_bytes, start.live_bytes);
    bilo_release(x);
}

/* Allocator hooks that count calls into the system allocator. */
static size_t hook_mallocs, hook_frees;
static void *count_malloc(size_t n) { hook_mallocs++; return malloc(n); }
static void *count_realloc(void *p, size_t n) { return realloc(p, n); }
static void *count_calloc(size_t c, size_t n) { return calloc(c, n); }
static void count_free(void *p) { hook_frees++; free(p); }

static void test_allocator_hooks(void)
{
    bilo_tensor *held = bilo_zeros(BILO_F64, BILO_SHAPE(4));
    tap_ok(bilo_set_allocator(&(bilo_allocator){count_malloc, count_realloc, count_calloc,
                                                count_free}) == BILO_ESTATE,
           "hooks refused while bilo memory is alive: %s", bilo_last_error());
    bilo_release(held);

    tap_ok(bilo_set_allocator(&(bilo_allocator){count_malloc, count_realloc, count_calloc,
                                                count_free}) == 0,
           "hooks installed with nothing alive");
    size_t after_first = 0;
    for (int i = 0; i < 50; i++) {
        bilo_scope_begin();
        bilo_tensor *a = bilo_ones(BILO_F32, BILO_SHAPE(256, 64));
        bilo_tensor *b = bilo_exp(bilo_add(a, a));
        bilo_sum(b, 1, false);
        bilo_scope_end();
        if (i == 0) after_first = hook_mallocs;
    }
    tap_ok(after_first > 0, "the first iteration went through the hooks (%zu mallocs)", after_first);
#if defined(__SANITIZE_ADDRESS__)
    tap_ok(1, "steady state makes no malloc # SKIP the block cache is off under AddressSanitizer");
#else
    tap_ok(hook_mallocs == after_first, "steady state makes no malloc (%zu after the first, %zu total)",
           after_first, hook_mallocs);
#endif
    bilo_mem_trim();
    tap_ok(hook_frees == hook_mallocs, "trim returns every block to the hooks (%zu frees, %zu mallocs)",
           hook_frees, hook_mallocs);
    tap_ok(bilo_set_allocator(NULL) == 0, "default allocator restored");
    tap_ok(bilo_set_allocator(&(bilo_allocator){NULL, NULL, NULL, NULL}) == BILO_EINVAL,
           "hooks without malloc/free rejected");

    bilo_mem_stats stats;
    bilo_mem_reset_peak();
    bilo_tensor *big = bilo_zeros(BILO_F64, BILO_SHAPE(1000));
    bilo_mem_get_stats(&stats);
    tap_ok(stats.peak_bytes >= stats.live_bytes && stats.live_bytes >= 8000,
           "peak and live bytes count an 8000-byte tensor (live %zu)", stats.live_bytes);
    bilo_release(big);
}

/* A new tensor's header shares its storage's block: a view must outlive the tensor. */
static void test_view_outlives_owner(void)
{
    bilo_mem_stats start, now;
    bilo_mem_get_stats(&start);
    bilo_tensor *t = bilo_arange(BILO_F64, 0, 6, 1);
    bilo_tensor *view = bilo_reshape(t, BILO_SHAPE(2, 3));
    bilo_release(t);
    bilo_tensor *again = bilo_reshape(view, BILO_SHAPE(6));
    double sum = 0;
    for (int64_t i = 0; i < 6; i++) sum += bilo_get_flat(again, i);
    tap_ok(sum == 15 && bilo_get(view, (int64_t[]){1, 2}) == 5,
           "views read the data after the tensor that made it is released (sum %g)", sum);
    bilo_release(view);
    bilo_release(again);
    bilo_mem_get_stats(&now);
    tap_ok(now.live_bytes == start.live_bytes, "the shared block goes back with the last view (%zu vs %zu)",
           now.live_bytes, start.live_bytes);
}

/* Blocks come in size classes 2^s * {1, 1.25, 1.5, 1.75}: a tensor's bytes grow with its size
   and never exceed its data plus a fixed header by more than a quarter. */
static void test_size_classes(void)
{
    size_t previous = 0;
    int monotone = 1, tight = 1, covers = 1;
    for (int64_t n = 1; n <= 5000; n++) {
        bilo_mem_stats before, after;
        bilo_mem_get_stats(&before);
        bilo_tensor *t = bilo_empty(BILO_F32, 1, &n);
        bilo_mem_get_stats(&after);
        bilo_release(t);
        size_t bytes = after.live_bytes - before.live_bytes, data = (size_t)n * sizeof(float);
        monotone &= bytes >= previous;
        covers &= bytes >= data;
        tight &= bytes <= (data + 512) + (data + 512) / 4;
        previous = bytes;
    }
    tap_ok(monotone && covers && tight, "block sizes grow with the request and round up by at most "
                                        "a quarter (monotone %d, covers %d, tight %d)",
           monotone, covers, tight);
}

enum { ALLOC_THREAD_ITERS = 20000 };

/* Creates and releases tensors of many sizes, checking each one's values. */
static void *allocate_in_loop(void *arg)
{
    int *ok = arg;
    for (int i = 0; i < ALLOC_THREAD_ITERS; i++) {
        int64_t n = 1 + (i * 37) % 700;
        bilo_scope_begin();
        bilo_tensor *a = bilo_full(BILO_F32, 1, &n, 1.5);
        bilo_tensor *b = bilo_add(a, a);
        *ok += b && bilo_get_flat(b, n - 1) == 3.0;
        bilo_scope_end();
    }
    return NULL;
}

/* Two threads allocating at once through the shared block cache. */
static void test_allocator_threads(void)
{
    bilo_mem_stats start, now;
    bilo_mem_get_stats(&start);
    int ok[2] = {0, 0};
    pthread_t other;
    int started = pthread_create(&other, NULL, allocate_in_loop, &ok[1]) == 0;
    allocate_in_loop(&ok[0]);
    if (started) pthread_join(other, NULL);
    bilo_mem_get_stats(&now);
    tap_ok(started && ok[0] == ALLOC_THREAD_ITERS && ok[1] == ALLOC_THREAD_ITERS,
           "two threads allocate and compute at once (%d and %d of %d)", ok[0], ok[1],
           ALLOC_THREAD_ITERS);
    tap_ok(now.live_bytes == start.live_bytes, "live bytes are back after both threads (%zu vs %zu)",
           now.live_bytes, start.live_bytes);
}

static void test_threads(void)
{
    int before = bilo_get_num_threads();
    bilo_set_num_threads(1);
    tap_ok(bilo_get_num_threads() == 1, "set_num_threads(1)");
    bilo_set_num_threads(0);
    tap_ok(bilo_get_num_threads() == before, "set_num_threads(0) restores the default (%d)", before);
    const char *isa = bilo_kernel_isa();
    tap_ok(strcmp(isa, "avx512") == 0 || strcmp(isa, "avx2") == 0 || strcmp(isa, "scalar") == 0,
           "kernel set: %s", isa);
}

int main(void)
{
    test_errors();
    test_creation();
    test_scopes();
    test_allocator_hooks();
    test_view_outlives_owner();
    test_size_classes();
    test_allocator_threads();
    test_threads();
    return tap_done();
}
