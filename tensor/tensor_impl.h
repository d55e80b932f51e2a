/* Private to libbilo: the tensor layout, error helpers, op identities and the recording
   hook through which autograd (a later module) observes ops without tensor/ knowing it. */
#ifndef BILO_TENSOR_IMPL_H
#define BILO_TENSOR_IMPL_H

#include "bilo_tensor.h"

#include <stdatomic.h>

typedef struct bilo_storage {
    void *data;
    size_t nbytes;
    size_t block_bytes; /* the allocation holding this header, the data and maybe a tensor */
    atomic_int refcount;
    atomic_uint version; /* bumped by every in-place write; checked by autograd */
} bilo_storage;

struct bilo_node; /* autograd's; tensor/ only stores and releases the pointer */

struct bilo_tensor {
    atomic_int refcount;
    bilo_dtype dtype;
    int ndim;
    int64_t shape[BILO_MAX_DIMS];
    int64_t numel;
    bilo_storage *storage;
    /* autograd slots */
    bool requires_grad;
    struct bilo_node *node; /* strong reference to the op that produced this tensor */
    bilo_tensor *grad;      /* accumulated .grad of a leaf */
};

/* ---- errors (core.c) ---- */
/* Record an error for this thread and return NULL, so call sites can `return fail(...)`. */
void *bilo__fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, returning the (negative) code for int-returning functions. */
int bilo__fail_code(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "[2,3,4]" into buf (at least 8*21+3 bytes). */
const char *bilo__shape_str(char *buf, int ndim, const int64_t *shape);
#define BILO_SHAPE_BUF 192

/* ---- memory (alloc.c) ---- */
/* 64-byte aligned blocks from the caching allocator; NULL (no error set) when out of memory. */
void *bilo__alloc(size_t nbytes);
void bilo__free(void *ptr, size_t nbytes);
/* Unaligned, uncached blocks for long-lived objects (optimizers, estimators, scratch),
   through the embedding program's allocator hooks; NULL when out of memory. */
void *bilo__malloc(size_t nbytes);
void *bilo__calloc(size_t count, size_t size);
void bilo__mfree(void *ptr);
/* Grow an array of elem-sized items (from bilo__alloc) to hold at least `need`, doubling;
   false (array unchanged) when out of memory. */
bool bilo__reserve(void **array, size_t *capacity, size_t need, size_t elem);

/* ---- tensors (tensor.c) ---- */
/* New tensor with fresh uninitialised storage; sets ENOMEM/EOVERFLOW errors naming `op`. */
bilo_tensor *bilo__new(const char *op, bilo_dtype dtype, int ndim, const int64_t *shape);
/* New header sharing x's storage with another shape of the same numel. */
bilo_tensor *bilo__alias(bilo_tensor *x, int ndim, const int64_t *shape);
/* Register a freshly created tensor (refcount 1) with the innermost scope, if any. */
bilo_tensor *bilo__scope_adopt(bilo_tensor *t);
/* Set every element of t to value (converted to t's dtype). */
void bilo__fill(bilo_tensor *t, double value);
static inline void *bilo__ptr(const bilo_tensor *t) { return t->storage->data; }
/* Validation helpers: set a message naming op and return false. */
bool bilo__check_float(const char *op, const bilo_tensor *t);
bool bilo__check_same_dtype(const char *op, const bilo_tensor *a, const bilo_tensor *b);
/* Normalise a possibly negative axis for ndim dims; -1 and an error when out of range. */
int bilo__axis(const char *op, int axis, int ndim);
/* Broadcast two shapes; false and an error naming op when incompatible. */
bool bilo__broadcast_shape(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                           int *nout, int64_t *sout);
int64_t bilo__shape_numel(int ndim, const int64_t *shape);
/* Class labels for logits: logits [n, C] f32/f64 and labels BILO_I64 [n] with every entry in
   [0, C); false and an error naming op otherwise (ops_reduce.c). */
bool bilo__check_class_labels(const char *op, const bilo_tensor *logits,
                              const bilo_tensor *labels);

/* ---- threads (threads.c) ---- */
int bilo__threads_for(int64_t work); /* 1 below the parallel threshold or inside a region */
#define BILO_PAR_MIN_WORK 32768

/* Threads for one pass over n elements (an elementwise op, a copy, a reduction) whose kernel
   costs `cost` units per element. A PASSIVE OpenMP region wakes its sleeping worker through a
   futex: measured on the 2-core reference VM, a region adds 10-15 µs (up to ~50 µs while the
   other vCPU idles), while an add of 65536 floats takes 7 µs. A pass is split only from
   BILO_PAR_MIN_ELEM_WORK units, about 30 µs of one-thread work, where half of it saved beats
   the wake-up. Results never depend on the answer (fixed chunks). */
int bilo__threads_for_elems(int64_t n, int cost);
#define BILO_PAR_MIN_ELEM_WORK (INT64_C(1) << 18)
enum {
    BILO_COST_MEMORY = 1,         /* add, compare, relu, contiguous copy, sum: ~0.1 ns each */
    BILO_COST_TRANSCENDENTAL = 8, /* exp, log, tanh, sin, sigmoid (one SLEEF call): ~1 ns */
    BILO_COST_GATHER = 8,         /* a copy reading or writing along a non-unit stride */
    BILO_COST_HEAVY = 64          /* erf, pow, softplus: several ns each */
};

/* ---- op identities and recording ---- */
#define BILO_OP_TABLE(X)                                                                    \
    X(NEG) X(ABS) X(EXP) X(LOG) X(LOG1P) X(EXPM1) X(SQRT) X(RSQRT) X(SQUARE) X(RECIPROCAL) \
    X(SIN) X(COS) X(TANH) X(SIGMOID) X(RELU) X(SOFTPLUS) X(ERF) X(SIGN) X(POW_SCALAR)      \
    X(ADD_SCALAR) X(MUL_SCALAR) X(RSUB_SCALAR)                                             \
    X(ADD) X(SUB) X(MUL) X(DIV) X(POW) X(MAXIMUM) X(MINIMUM)                               \
    X(TANH_BACKWARD) X(SIGMOID_BACKWARD)                                                   \
    X(GT) X(GE) X(LT) X(LE) X(EQ) X(WHERE)                                                 \
    X(SUM) X(MEAN) X(MAX) X(MIN) X(ARGMAX) X(LOGSUMEXP) X(NORM) X(DOT)                     \
    X(SOFTMAX) X(LOG_SOFTMAX) X(MATMUL) X(MATMUL_BATCH_SUM) X(OUTER)                      \
    X(RESHAPE) X(PERMUTE) X(SLICE) X(SLICE_SCATTER) X(CONCAT) X(STACK)                     \
    X(INDEX_SELECT) X(INDEX_ADD) X(GATHER) X(SCATTER_ADD) X(ONE_HOT) X(EXPAND) X(SUM_TO)   \
    X(CLONE) X(CAST) X(IM2COL) X(COL2IM) X(SPMM)                                          \
    X(SOFTMAX_CROSS_ENTROPY) X(SOFTMAX_CROSS_ENTROPY_BACKWARD) X(SOFTMAX_JVP) \
    X(BIAS_RELU) X(BIAS_TANH) X(BIAS_SIGMOID)

typedef enum {
#define BILO_OP_ENUM_(name) BILO_OP_##name,
    BILO_OP_TABLE(BILO_OP_ENUM_)
#undef BILO_OP_ENUM_
    BILO_OP_COUNT
} bilo_op_id;

/* Everything besides the inputs that an op's backward needs to know. */
typedef struct {
    double scalar;         /* pow/add/mul/rsub scalar */
    int axis;              /* normalised axis, or BILO_ALL_AXES */
    bool keepdim;
    bool trans_a, trans_b; /* matmul */
    int64_t start, stop, step; /* slice, slice_scatter (normalised) */
    int perm[BILO_MAX_DIMS];   /* permute */
    int64_t conv[8];           /* im2col/col2im: kh, kw, sh, sw, ph, pw, dh, dw */
} bilo_op_attrs;

#define BILO_MAX_OP_INPUTS 64 /* concat/stack take lists */

/* Installed by autograd the first time a tensor requires grad. Called by ops whose output
   `out` was just computed from inputs; it decides whether to record. Returns out, or NULL
   (with out released and an error set) if recording failed. */
typedef bilo_tensor *(*bilo_record_fn)(bilo_op_id op, bilo_tensor *out, bilo_tensor *const *in,
                                       int n_in, const bilo_op_attrs *attrs);
extern bilo_record_fn bilo__record_hook;
/* Thread-local count of open no-grad regions; composite ops raise it around their inner
   steps so only the composite itself is recorded. */
extern _Thread_local int bilo__no_grad_depth;
typedef void (*bilo_node_release_fn)(struct bilo_node *node);
extern bilo_node_release_fn bilo__node_release_hook;

static inline bilo_tensor *bilo__record(bilo_op_id op, bilo_tensor *out, bilo_tensor *const *in,
                                        int n_in, const bilo_op_attrs *attrs)
{
    if (!out || bilo__no_grad_depth > 0) return out;
    /* Atomic: another thread may be installing the hook while this one runs ops. */
    bilo_record_fn hook = __atomic_load_n(&bilo__record_hook, __ATOMIC_ACQUIRE);
    return hook ? hook(op, out, in, n_in, attrs) : out;
}

#endif
