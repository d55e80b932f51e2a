/* Caching allocator: 64-byte aligned blocks in size classes (four per power of two), freed
   blocks kept on per-class free lists so a steady-state loop never reaches the underlying
   malloc. The underlying allocator is replaceable (bilo_set_allocator). */
#include "tensor_impl.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define ALIGNMENT 64
#define MIN_CLASS_SHIFT 6  /* smallest block: 64 bytes */
#define MAX_CLASS_SHIFT 40 /* blocks up to 1 TiB are cached; larger requests fail */
#define SUBCLASSES 4
#define CLASS_COUNT ((MAX_CLASS_SHIFT - MIN_CLASS_SHIFT + 1) * SUBCLASSES)

/* Under AddressSanitizer every block goes straight back to the system, so a use after free
   inside bilo is reported instead of hidden by the cache. */
#if defined(__SANITIZE_ADDRESS__)
#define CACHE_BLOCKS 0
#else
#define CACHE_BLOCKS 1
#endif

typedef struct free_block {
    struct free_block *next;
} free_block;

static struct {
    atomic_bool locked;
    bilo_allocator sys;
    free_block *free_lists[CLASS_COUNT];
    bilo_mem_stats stats;
    size_t raw_blocks; /* outstanding bilo__malloc blocks: they pin the underlying allocator */
} heap = {
    .sys = {malloc, realloc, calloc, free},
};

/* A spin lock, not a pthread mutex: every critical section below except the calls into the
   underlying allocator is a handful of loads and stores, and a mutex lock/unlock pair cost
   more instructions than the rest of an allocation (callgrind, chain benchmark). A waiter
   yields its core after a short spin, so a holder preempted on a busy machine (or inside
   the underlying malloc) is not starved. */
static void heap_lock(void)
{
    while (atomic_exchange_explicit(&heap.locked, true, memory_order_acquire)) {
        for (int spins = 0; atomic_load_explicit(&heap.locked, memory_order_relaxed); spins++) {
            if (spins >= 64) sched_yield();
#if defined(__x86_64__) || defined(__i386__)
            else __builtin_ia32_pause();
#endif
        }
    }
}

static void heap_unlock(void) { atomic_store_explicit(&heap.locked, false, memory_order_release); }

/* Class index and rounded size for a request: sizes 2^s·{1, 1.25, 1.5, 1.75}, i.e. the
   multiples of 2^(s-2) in [2^s, 2^(s+1)]. The class of n is the smallest multiple of
   2^(s-2) above n - 1, where s is the top bit of n - 1: shifts only, no division. */
static int size_class(size_t nbytes, size_t *class_bytes)
{
    if (nbytes <= ((size_t)1 << MIN_CLASS_SHIFT)) {
        *class_bytes = (size_t)1 << MIN_CLASS_SHIFT;
        return 0;
    }
    size_t below = nbytes - 1;
    int top = 63 - __builtin_clzll((unsigned long long)below);
    int step_shift = top - 2;                              /* log2 of 2^s / SUBCLASSES */
    size_t steps = (below >> step_shift) + 1;              /* 5..8 */
    int cls = (top - MIN_CLASS_SHIFT) * SUBCLASSES + (int)steps - SUBCLASSES;
    if (cls >= CLASS_COUNT) return -1;
    *class_bytes = steps << step_shift;
    return cls;
}

/* The system block keeps its own start address just below the aligned pointer. */
static void *system_alloc(size_t bytes)
{
    char *raw = heap.sys.malloc(bytes + ALIGNMENT);
    if (!raw) return NULL;
    heap.stats.system_allocs++;
    char *aligned = (char *)(((uintptr_t)raw + ALIGNMENT) & ~(uintptr_t)(ALIGNMENT - 1));
    ((void **)aligned)[-1] = raw;
    return aligned;
}

static void system_free(void *aligned)
{
    heap.sys.free(((void **)aligned)[-1]);
    heap.stats.system_frees++;
}

void *bilo__alloc(size_t nbytes)
{
    size_t bytes;
    int cls = size_class(nbytes, &bytes);
    if (cls < 0) return NULL;
    heap_lock();
    void *block = heap.free_lists[cls];
    if (block) {
        heap.free_lists[cls] = heap.free_lists[cls]->next;
        heap.stats.cached_bytes -= bytes;
    } else {
        block = system_alloc(bytes);
    }
    if (block) {
        heap.stats.live_bytes += bytes;
        if (heap.stats.live_bytes > heap.stats.peak_bytes)
            heap.stats.peak_bytes = heap.stats.live_bytes;
    }
    heap_unlock();
    return block;
}

void bilo__free(void *ptr, size_t nbytes)
{
    size_t bytes = 0;
    int cls = ptr ? size_class(nbytes, &bytes) : -1;
    if (cls < 0) return;
    heap_lock();
    heap.stats.live_bytes -= bytes;
    if (CACHE_BLOCKS) {
        free_block *block = ptr;
        block->next = heap.free_lists[cls];
        heap.free_lists[cls] = block;
        heap.stats.cached_bytes += bytes;
    } else {
        system_free(ptr);
    }
    heap_unlock();
}

bool bilo__reserve(void **array, size_t *capacity, size_t need, size_t elem)
{
    if (need <= *capacity) return true;
    size_t bigger_capacity = *capacity ? *capacity : 64;
    while (bigger_capacity < need) {
        if (bigger_capacity > SIZE_MAX / 2 / elem) return false;
        bigger_capacity *= 2;
    }
    void *bigger = bilo__alloc(bigger_capacity * elem);
    if (!bigger) return false;
    if (*array) {
        memcpy(bigger, *array, *capacity * elem);
        bilo__free(*array, *capacity * elem);
    }
    *array = bigger;
    *capacity = bigger_capacity;
    return true;
}

void *bilo__malloc(size_t nbytes)
{
    heap_lock();
    void *p = heap.sys.malloc(nbytes ? nbytes : 1);
    if (p) heap.raw_blocks++;
    heap_unlock();
    return p;
}

void *bilo__calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size) return NULL;
    void *p = bilo__malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

void bilo__mfree(void *ptr)
{
    if (!ptr) return;
    heap_lock();
    heap.sys.free(ptr);
    heap.raw_blocks--;
    heap_unlock();
}

static void trim_locked(void)
{
    for (int c = 0; c < CLASS_COUNT; c++) {
        while (heap.free_lists[c]) {
            free_block *next = heap.free_lists[c]->next;
            system_free(heap.free_lists[c]);
            heap.free_lists[c] = next;
        }
    }
    heap.stats.cached_bytes = 0;
}

BILO_API void bilo_mem_trim(void)
{
    heap_lock();
    trim_locked();
    heap_unlock();
}

BILO_API int bilo_set_allocator(const bilo_allocator *alloc)
{
    if (alloc && (!alloc->malloc || !alloc->free))
        return bilo__fail_code(BILO_EINVAL, "bilo_set_allocator: malloc and free hooks are required");
    heap_lock();
    if (heap.stats.live_bytes != 0 || heap.raw_blocks != 0) {
        size_t live = heap.stats.live_bytes + heap.raw_blocks;
        heap_unlock();
        return bilo__fail_code(BILO_ESTATE,
                               "bilo_set_allocator: bilo memory is still alive (%zu bytes and blocks); "
                               "release every tensor and bilo object first",
                               live);
    }
    trim_locked();
    heap.sys = alloc ? *alloc : (bilo_allocator){malloc, realloc, calloc, free};
    heap_unlock();
    return 0;
}

BILO_API void bilo_mem_get_stats(bilo_mem_stats *stats)
{
    if (!stats) return;
    heap_lock();
    *stats = heap.stats;
    heap_unlock();
}

BILO_API void bilo_mem_reset_peak(void)
{
    heap_lock();
    heap.stats.peak_bytes = heap.stats.live_bytes;
    heap_unlock();
}
