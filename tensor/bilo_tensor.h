/* bilo — tensors: dtypes, creation, errors, memory, scopes, RNG and every tensor op.
 *
 * Conventions (see README "API tour"):
 *  - Functions returning a tensor return NULL on failure and record a thread-local error
 *    (bilo_errcode / bilo_last_error). A NULL input makes an op return NULL without a second
 *    message, so a chained expression reports its first error once.
 *  - Functions returning int return 0 or a negative BILO_E... code.
 *  - A tensor created while a scope is open belongs to that scope and is released by
 *    bilo_scope_end, unless kept (bilo_keep) or returned (bilo_scope_return). Outside any
 *    scope the caller owns the returned reference and releases it with bilo_release.
 *  - Masks (comparisons) are tensors of 0 and 1 in the dtype of their inputs. Index tensors
 *    (argmax results, index_select/gather/one_hot inputs) have dtype BILO_I64.
 */
#ifndef BILO_TENSOR_H
#define BILO_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(BILO_BUILD)
#define BILO_API __attribute__((visibility("default")))
#else
#define BILO_API
#endif

#define BILO_MAX_DIMS 8
/* Pass as `axis` to a reduction to reduce over every axis. */
#define BILO_ALL_AXES (-1000)

/* Shape literal helper: bilo_zeros(BILO_F64, BILO_SHAPE(2, 3)). Expands to `ndim, dims`. */
#define BILO_SHAPE(...) \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}

typedef enum { BILO_F32 = 0, BILO_F64 = 1, BILO_I64 = 2 } bilo_dtype;

typedef struct bilo_tensor bilo_tensor;

/* ---- errors ------------------------------------------------------------------------ */
#define BILO_ERROR_TABLE(X)                                   \
    X(OK, 0, "no error")                                      \
    X(EINVAL, -1, "invalid argument")                         \
    X(ENULL, -2, "NULL argument")                             \
    X(ESHAPE, -3, "shape mismatch")                           \
    X(EDTYPE, -4, "unsupported or mismatched dtype")          \
    X(ERANGE, -5, "index or axis out of range")               \
    X(EOVERFLOW, -6, "size overflow")                         \
    X(ENOMEM, -7, "out of memory")                            \
    X(EGRAPH, -8, "autograd graph error")                     \
    X(EIO, -9, "I/O error")                                   \
    X(EFORMAT, -10, "malformed input data")                   \
    X(ENUMERIC, -11, "non-finite value")                      \
    X(ESTATE, -12, "operation not allowed in this state")

typedef enum {
#define BILO_ERROR_ENUM_(name, code, text) BILO_##name = code,
    BILO_ERROR_TABLE(BILO_ERROR_ENUM_)
#undef BILO_ERROR_ENUM_
} bilo_status;

/* Code of the last error on this thread (0 when none). */
BILO_API int bilo_errcode(void);
/* Message of the last error on this thread, e.g. "bilo_matmul: shapes [3,4] and [5,2] ...". */
BILO_API const char *bilo_last_error(void);
BILO_API void bilo_clear_error(void);
/* Static description of a code. */
BILO_API const char *bilo_strerror(int code);
BILO_API const char *bilo_version(void);

/* ---- memory ------------------------------------------------------------------------ */
typedef struct {
    void *(*malloc)(size_t size);
    void *(*realloc)(void *ptr, size_t size);
    void *(*calloc)(size_t count, size_t size);
    void (*free)(void *ptr);
} bilo_allocator;

typedef struct {
    size_t live_bytes;       /* bytes in tensors and graph objects currently alive */
    size_t peak_bytes;       /* maximum of live_bytes since start or bilo_mem_reset_peak */
    size_t cached_bytes;     /* freed blocks kept for reuse */
    uint64_t system_allocs;  /* calls into the underlying malloc */
    uint64_t system_frees;   /* calls into the underlying free */
} bilo_mem_stats;

/* Install the underlying allocator (NULL restores the C library's). Allowed only while no
   bilo memory is alive; returns BILO_ESTATE otherwise. */
BILO_API int bilo_set_allocator(const bilo_allocator *alloc);
BILO_API void bilo_mem_get_stats(bilo_mem_stats *stats);
BILO_API void bilo_mem_reset_peak(void);
/* Return every cached block to the underlying allocator. */
BILO_API void bilo_mem_trim(void);

/* ---- threads ------------------------------------------------------------------------ */
/* Threads used by kernels (default: OpenMP's maximum). Never changes OpenMP's own setting. */
BILO_API void bilo_set_num_threads(int n);
BILO_API int bilo_get_num_threads(void);
/* Name of the kernel set chosen at start-up: "avx512" (the AVX2 kernels with an AVX-512
   GEMM), "avx2" or "scalar". BILO_DISABLE=avx512 stops at "avx2"; BILO_DISABLE=avx2 forces
   the scalar reference. */
BILO_API const char *bilo_kernel_isa(void);

/* ---- reference counting and scopes ------------------------------------------------- */
BILO_API bilo_tensor *bilo_retain(bilo_tensor *t);
BILO_API void bilo_release(bilo_tensor *t);
/* Open a scope on this thread; every tensor created until the matching end belongs to it. */
BILO_API void bilo_scope_begin(void);
/* Release every tensor the innermost scope still owns. */
BILO_API void bilo_scope_end(void);
/* Move t from the innermost scope to its enclosing scope (or to the caller when the
   innermost scope is the outermost). Returns t. */
BILO_API bilo_tensor *bilo_scope_return(bilo_tensor *t);
/* Take t out of every scope: the caller now owns one reference (bilo_release). Returns t. */
BILO_API bilo_tensor *bilo_keep(bilo_tensor *t);

/* ---- RNG: Philox4x32-10, counter based --------------------------------------------- */
typedef struct {
    uint64_t seed;
    uint64_t stream;
    uint64_t counter; /* advanced by every draw; (seed, stream, counter) fixes the numbers */
} bilo_rng;

BILO_API bilo_rng bilo_rng_make(uint64_t seed, uint64_t stream);
/* One Philox4x32-10 block: the raw generator, exposed for test vectors. */
BILO_API void bilo_philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);
/* Uniform double in [0, 1) and standard normal, one at a time. */
BILO_API double bilo_rng_uniform(bilo_rng *rng);
BILO_API double bilo_rng_normal(bilo_rng *rng);

/* ---- creation ------------------------------------------------------------------------ */
BILO_API bilo_tensor *bilo_empty(bilo_dtype dtype, int ndim, const int64_t *shape);
BILO_API bilo_tensor *bilo_zeros(bilo_dtype dtype, int ndim, const int64_t *shape);
BILO_API bilo_tensor *bilo_ones(bilo_dtype dtype, int ndim, const int64_t *shape);
BILO_API bilo_tensor *bilo_full(bilo_dtype dtype, int ndim, const int64_t *shape, double value);
/* Copy of a caller buffer holding numel elements of dtype (float, double or int64_t). */
BILO_API bilo_tensor *bilo_from_data(bilo_dtype dtype, int ndim, const int64_t *shape,
                                     const void *data);
BILO_API bilo_tensor *bilo_scalar(bilo_dtype dtype, double value); /* 0-dimensional */
BILO_API bilo_tensor *bilo_arange(bilo_dtype dtype, double start, double stop, double step);
BILO_API bilo_tensor *bilo_eye(bilo_dtype dtype, int64_t n);
BILO_API bilo_tensor *bilo_zeros_like(bilo_tensor *t);
BILO_API bilo_tensor *bilo_ones_like(bilo_tensor *t);
/* Uniform [0,1), standard normal, Bernoulli(p) in {0,1}; each advances rng->counter. */
BILO_API bilo_tensor *bilo_rand(bilo_dtype dtype, int ndim, const int64_t *shape, bilo_rng *rng);
BILO_API bilo_tensor *bilo_randn(bilo_dtype dtype, int ndim, const int64_t *shape, bilo_rng *rng);
BILO_API bilo_tensor *bilo_bernoulli(bilo_dtype dtype, int ndim, const int64_t *shape, double p,
                                     bilo_rng *rng);

/* ---- accessors ------------------------------------------------------------------------ */
BILO_API bilo_dtype bilo_dtype_of(const bilo_tensor *t);
BILO_API int bilo_ndim(const bilo_tensor *t);
BILO_API const int64_t *bilo_shape(const bilo_tensor *t);
/* Size of one axis; negative axes count from the end. -1 (and an error) when out of range. */
BILO_API int64_t bilo_dim(const bilo_tensor *t, int axis);
BILO_API int64_t bilo_numel(const bilo_tensor *t);
BILO_API size_t bilo_dtype_size(bilo_dtype dtype);
BILO_API const char *bilo_dtype_name(bilo_dtype dtype);
/* Contiguous row-major elements. Writing through the pointer is allowed; call
   bilo_mark_modified afterwards if the tensor may be saved for a backward pass. */
BILO_API void *bilo_data(bilo_tensor *t);
BILO_API void bilo_mark_modified(bilo_tensor *t);
/* Element access by multi-index (ndim entries) or by flat row-major position. */
BILO_API double bilo_get(const bilo_tensor *t, const int64_t *index);
BILO_API int bilo_set(bilo_tensor *t, const int64_t *index, double value);
BILO_API double bilo_get_flat(const bilo_tensor *t, int64_t i);
BILO_API int bilo_set_flat(bilo_tensor *t, int64_t i, double value);
/* Value of a one-element tensor (NaN and an error otherwise). */
BILO_API double bilo_item(const bilo_tensor *t);
/* Human-readable dump, e.g. "tensor f64 [2,3]\n[[1, 2, 3],\n [4, 5, 6]]". */
BILO_API int bilo_fprint(FILE *stream, const bilo_tensor *t);

/* ---- unary ops (f32, f64) ----------------------------------------------------------- */
BILO_API bilo_tensor *bilo_neg(bilo_tensor *x);
BILO_API bilo_tensor *bilo_abs(bilo_tensor *x);
BILO_API bilo_tensor *bilo_exp(bilo_tensor *x);
BILO_API bilo_tensor *bilo_log(bilo_tensor *x);
BILO_API bilo_tensor *bilo_log1p(bilo_tensor *x);
BILO_API bilo_tensor *bilo_expm1(bilo_tensor *x);
BILO_API bilo_tensor *bilo_sqrt(bilo_tensor *x);
BILO_API bilo_tensor *bilo_rsqrt(bilo_tensor *x);
BILO_API bilo_tensor *bilo_square(bilo_tensor *x);
BILO_API bilo_tensor *bilo_reciprocal(bilo_tensor *x);
BILO_API bilo_tensor *bilo_sin(bilo_tensor *x);
BILO_API bilo_tensor *bilo_cos(bilo_tensor *x);
BILO_API bilo_tensor *bilo_tanh(bilo_tensor *x);
BILO_API bilo_tensor *bilo_sigmoid(bilo_tensor *x);
BILO_API bilo_tensor *bilo_relu(bilo_tensor *x);
BILO_API bilo_tensor *bilo_softplus(bilo_tensor *x);
BILO_API bilo_tensor *bilo_erf(bilo_tensor *x);
BILO_API bilo_tensor *bilo_sign(bilo_tensor *x); /* -1, 0, 1; not differentiable */
BILO_API bilo_tensor *bilo_pow_scalar(bilo_tensor *x, double p);
BILO_API bilo_tensor *bilo_add_scalar(bilo_tensor *x, double s);  /* x + s */
BILO_API bilo_tensor *bilo_mul_scalar(bilo_tensor *x, double s);  /* x * s */
BILO_API bilo_tensor *bilo_rsub_scalar(bilo_tensor *x, double s); /* s - x */

/* ---- binary ops with NumPy broadcasting (f32, f64; both operands the same dtype) ----- */
BILO_API bilo_tensor *bilo_add(bilo_tensor *a, bilo_tensor *b);
BILO_API bilo_tensor *bilo_sub(bilo_tensor *a, bilo_tensor *b);
BILO_API bilo_tensor *bilo_mul(bilo_tensor *a, bilo_tensor *b);
BILO_API bilo_tensor *bilo_div(bilo_tensor *a, bilo_tensor *b);
BILO_API bilo_tensor *bilo_pow(bilo_tensor *a, bilo_tensor *b);
BILO_API bilo_tensor *bilo_maximum(bilo_tensor *a, bilo_tensor *b); /* ties: gradient to a */
BILO_API bilo_tensor *bilo_minimum(bilo_tensor *a, bilo_tensor *b); /* ties: gradient to a */
BILO_API bilo_tensor *bilo_gt(bilo_tensor *a, bilo_tensor *b);
BILO_API bilo_tensor *bilo_ge(bilo_tensor *a, bilo_tensor *b);
BILO_API bilo_tensor *bilo_lt(bilo_tensor *a, bilo_tensor *b);
BILO_API bilo_tensor *bilo_le(bilo_tensor *a, bilo_tensor *b);
BILO_API bilo_tensor *bilo_eq(bilo_tensor *a, bilo_tensor *b);
/* mask ? a : b elementwise (mask nonzero = true), all three broadcast together. */
BILO_API bilo_tensor *bilo_where(bilo_tensor *mask, bilo_tensor *a, bilo_tensor *b);
/* The gradients of tanh and sigmoid from their output y and an output gradient g, in one
   pass each (broadcast together): g·(1 - y²) and g·y·(1 - y), the latter evaluated as
   g·(y - y²); in double with fused multiply-adds, rounded once for f32. Differentiable in
   y and g: the backward rules of tanh, sigmoid and the fused bias + activation ops. */
BILO_API bilo_tensor *bilo_tanh_backward(bilo_tensor *y, bilo_tensor *g);
BILO_API bilo_tensor *bilo_sigmoid_backward(bilo_tensor *y, bilo_tensor *g);

/* ---- fused bias + activation ---------------------------------------------------------- */
/* Activations of bilo_bias_act (and of nn's linear layers and MLP). RELU is 0 so that a
   zero-initialised option struct means ReLU. */
typedef enum { BILO_ACT_RELU = 0, BILO_ACT_TANH, BILO_ACT_SIGMOID, BILO_ACT_NONE } bilo_act;
/* act(x + b) in one pass, b [C] added to every row of x [.., C] (f32, f64; same dtype), with
   the activation's rounding of bilo_relu/bilo_tanh/bilo_sigmoid, so the result equals
   act(bilo_add(x, b)) bit for bit. Differentiable in x and b; only the output is saved for
   the backward. BILO_ACT_NONE is bilo_add(x, b). */
BILO_API bilo_tensor *bilo_bias_act(bilo_tensor *x, bilo_tensor *b, bilo_act act);

/* ---- reductions: axis may be negative or BILO_ALL_AXES ------------------------------- */
BILO_API bilo_tensor *bilo_sum(bilo_tensor *x, int axis, bool keepdim);
BILO_API bilo_tensor *bilo_mean(bilo_tensor *x, int axis, bool keepdim);
/* max/min: the gradient is shared equally among tied maxima. */
BILO_API bilo_tensor *bilo_max(bilo_tensor *x, int axis, bool keepdim);
BILO_API bilo_tensor *bilo_min(bilo_tensor *x, int axis, bool keepdim);
BILO_API bilo_tensor *bilo_argmax(bilo_tensor *x, int axis, bool keepdim); /* BILO_I64 */
BILO_API bilo_tensor *bilo_logsumexp(bilo_tensor *x, int axis, bool keepdim);
/* Euclidean norm over an axis or all elements. */
BILO_API bilo_tensor *bilo_norm(bilo_tensor *x, int axis, bool keepdim);
/* Sum of a*b over all elements of two same-shaped tensors (0-dimensional result). */
BILO_API bilo_tensor *bilo_dot(bilo_tensor *a, bilo_tensor *b);
BILO_API bilo_tensor *bilo_softmax(bilo_tensor *x, int axis);
BILO_API bilo_tensor *bilo_log_softmax(bilo_tensor *x, int axis);
/* Softmax cross-entropy per row, fused: logits [n, C] (f32, f64) and BILO_I64 labels [n] with
   every label in [0, C) → [n] of logits' dtype, loss_i = logsumexp(logits_i) - logits_i[label_i]
   computed row by row (max, shifted exp-sum and pick fused, no [n, C] result), so logits of
   any magnitude give finite losses.
   Differentiable in logits; the gradient is bilo_softmax_cross_entropy_backward, so the node
   saves the logits (and labels) and no softmax. */
BILO_API bilo_tensor *bilo_softmax_cross_entropy(bilo_tensor *logits, bilo_tensor *labels);
/* The gradient of the above for output gradient g [n] (logits' dtype):
   (softmax(logits) - one_hot(labels)) ⊙ g[:, None] → [n, C], fused row by row. Itself
   differentiable in logits and g (its rule is written with public ops, so any order works). */
BILO_API bilo_tensor *bilo_softmax_cross_entropy_backward(bilo_tensor *logits,
                                                          bilo_tensor *labels, bilo_tensor *g);
/* The softmax Jacobian of each row of logits [n, C] applied to the row of u [n, C], scaled by
   g [n]: g ⊙ p ⊙ (u - Σ_c p u) with p = softmax(logits) along axis 1, in one pass (p is
   recomputed, never stored). The Jacobian is symmetric, so this is the softmax's VJP too:
   the second derivative of the cross-entropy. Differentiable in logits, u and g. */
BILO_API bilo_tensor *bilo_softmax_jvp(bilo_tensor *logits, bilo_tensor *u, bilo_tensor *g);

/* ---- linear algebra ------------------------------------------------------------------ */
/* op(a)·op(b) where op transposes the last two axes when its flag is set (no copy).
   2-D × 2-D, 3-D × 3-D (same batch), 3-D × 2-D and 2-D × 3-D (the 2-D side is shared). */
BILO_API bilo_tensor *bilo_matmul_t(bilo_tensor *a, bilo_tensor *b, bool trans_a, bool trans_b);
BILO_API bilo_tensor *bilo_matmul(bilo_tensor *a, bilo_tensor *b);
/* Σ_i op(a_i)·op(b_i) over the batch of two 3-D operands (same batch) → 2-D, accumulated in
   batch order without the per-entry products: the gradient of an operand that a batched
   matmul shares across its batch (a layer's weight), as einsum("bik,bkj->ij"). */
BILO_API bilo_tensor *bilo_matmul_batch_sum(bilo_tensor *a, bilo_tensor *b, bool trans_a,
                                            bool trans_b);
/* a ⊗ b for 1-D tensors: [n] × [m] → [n, m]. */
BILO_API bilo_tensor *bilo_outer(bilo_tensor *a, bilo_tensor *b);
/* A·dense, or Aᵀ·dense when trans, for the sparse matrix A [rows, cols] in compressed sparse
   rows: row i holds values[k] at column indices[k] for k in indptr[i] .. indptr[i+1]-1
   (indptr BILO_I64 [rows+1] from 0 to nnz, non-decreasing; indices BILO_I64 [nnz] in
   [0, cols); values f32 or f64 [nnz]). dense is [cols, n] ([rows, n] with trans) of the
   values' dtype; the result is [rows, n] ([cols, n]). Differentiable in values and dense; the
   result does not depend on the thread count. */
BILO_API bilo_tensor *bilo_spmm(bilo_tensor *indptr, bilo_tensor *indices, bilo_tensor *values,
                                int64_t rows, int64_t cols, bilo_tensor *dense, bool trans);

/* ---- shape ops ----------------------------------------------------------------------- */
/* View sharing storage; one entry of shape may be -1 (inferred). */
BILO_API bilo_tensor *bilo_reshape(bilo_tensor *x, int ndim, const int64_t *shape);
BILO_API bilo_tensor *bilo_flatten(bilo_tensor *x); /* reshape to 1-D */
BILO_API bilo_tensor *bilo_transpose(bilo_tensor *x, int axis0, int axis1);
BILO_API bilo_tensor *bilo_permute(bilo_tensor *x, const int *perm);
/* Elements start, start+step, ... < stop along axis (step > 0; bounds clamped like Python). */
BILO_API bilo_tensor *bilo_slice(bilo_tensor *x, int axis, int64_t start, int64_t stop,
                                 int64_t step);
/* Copy of base whose slice (as in bilo_slice) is replaced by src. */
BILO_API bilo_tensor *bilo_slice_scatter(bilo_tensor *base, bilo_tensor *src, int axis,
                                         int64_t start, int64_t stop, int64_t step);
BILO_API bilo_tensor *bilo_concat(bilo_tensor *const *xs, int n, int axis);
BILO_API bilo_tensor *bilo_stack(bilo_tensor *const *xs, int n, int axis);
/* Rows of x along axis picked by the 1-D BILO_I64 tensor index. */
BILO_API bilo_tensor *bilo_index_select(bilo_tensor *x, int axis, bilo_tensor *index);
/* Copy of base with src's slices added at positions index along axis (inverse of select). */
BILO_API bilo_tensor *bilo_index_add(bilo_tensor *base, int axis, bilo_tensor *index,
                                     bilo_tensor *src);
/* out[i][j] = x[index[i][j]][j] for axis 0 (torch.gather); index has x's ndim. */
BILO_API bilo_tensor *bilo_gather(bilo_tensor *x, int axis, bilo_tensor *index);
/* Copy of base with base[index[i][j]][j] += src[i][j] for axis 0 (inverse of gather). */
BILO_API bilo_tensor *bilo_scatter_add(bilo_tensor *base, int axis, bilo_tensor *index,
                                       bilo_tensor *src);
/* [..] BILO_I64 labels → [.., num_classes] of dtype. */
BILO_API bilo_tensor *bilo_one_hot(bilo_tensor *labels, int64_t num_classes, bilo_dtype dtype);
/* Broadcast to a larger shape (NumPy rules). */
BILO_API bilo_tensor *bilo_expand(bilo_tensor *x, int ndim, const int64_t *shape);
/* Sum a broadcast tensor back down to shape (the adjoint of expand). */
BILO_API bilo_tensor *bilo_sum_to(bilo_tensor *x, int ndim, const int64_t *shape);
BILO_API bilo_tensor *bilo_clone(bilo_tensor *x);
/* Sliding-window patches of an image batch (the im2col of a convolution): x [N, C, H, W]
   (f32, f64) → [N, C*kh*kw, OH*OW], rows ordered (c, ki, kj), columns (oh, ow), where
   OH = (H + 2*pad_h - dil_h*(kh-1) - 1) / stride_h + 1 (OW likewise) and out-of-image taps
   read zero. Kernel, stride and dilation must be positive, padding non-negative. */
BILO_API bilo_tensor *bilo_im2col(bilo_tensor *x, int kh, int kw, int stride_h, int stride_w,
                                  int pad_h, int pad_w, int dil_h, int dil_w);
/* The adjoint of bilo_im2col: cols [N, C*kh*kw, OH*OW] → [N, C, H, W], summing the patches
   that overlap (in a fixed order, so the result does not depend on the thread count). */
BILO_API bilo_tensor *bilo_col2im(bilo_tensor *cols, int64_t C, int64_t H, int64_t W, int kh,
                                  int kw, int stride_h, int stride_w, int pad_h, int pad_w,
                                  int dil_h, int dil_w);
BILO_API bilo_tensor *bilo_cast(bilo_tensor *x, bilo_dtype dtype);

/* ---- in place (never recorded; bump the version counter) ---------------------------- */
BILO_API int bilo_fill_(bilo_tensor *t, double value);
/* dst ← src (same shape; dtype converted). */
BILO_API int bilo_copy_(bilo_tensor *dst, bilo_tensor *src);
/* y ← y + alpha·x (same shape and dtype). */
BILO_API int bilo_axpy_(bilo_tensor *y, double alpha, bilo_tensor *x);
/* t ← alpha·t */
BILO_API int bilo_scale_(bilo_tensor *t, double alpha);

#ifdef __cplusplus
}
#endif
#endif
