/* bilo — nn: data loaders and dataset views (layers, losses and optimizers join this header).
 *
 * Conventions are those of bilo_tensor.h: tensor-returning functions return NULL and record
 * an error; int-returning ones return 0 (or a count) or a negative BILO_E... code. Option
 * structs are filled with designated initializers; a NULL options pointer and every field left
 * at zero mean the documented default.
 */
#ifndef BILO_NN_H
#define BILO_NN_H

#include "bilo_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- data ---- */
/*
 * Readers open plain and gzip-compressed files alike (zlib detects the format). A malformed
 * file is never a crash: it is an error (BILO_EFORMAT, BILO_EOVERFLOW for sizes that cannot
 * exist, BILO_EIO when the file cannot be read) whose message names the file and the place,
 * e.g. "bilo_read_libsvm: train.txt: line 12: index 3 after 7: indices must be ascending" or
 * "bilo_read_idx_images: x.gz: byte 1616: data ends after 1600 of the 7840 bytes the header
 * declares". Byte offsets count uncompressed bytes.
 */

/* IDX (MNIST, Fashion-MNIST): big-endian header, unsigned-byte data. */
typedef enum {
    BILO_IDX_FLAT = 0, /* images as [n, rows*cols] (default: ready for a linear layer) */
    BILO_IDX_HW,       /* [n, rows, cols] */
    BILO_IDX_NCHW,     /* [n, 1, rows, cols] (ready for conv2d) */
} bilo_idx_layout;

typedef struct {
    bilo_dtype dtype;       /* BILO_F32 (default) or BILO_F64 */
    bilo_idx_layout layout; /* BILO_IDX_FLAT (default) */
} bilo_idx_opts;

/* Images of an IDX file with magic 0x00000803 (unsigned bytes, 3 dimensions), scaled to
   [0, 1] by dividing by 255. The file must hold exactly the bytes its header declares. */
BILO_API bilo_tensor *bilo_read_idx_images(const char *path, const bilo_idx_opts *opts);
/* Labels of an IDX file with magic 0x00000801 (unsigned bytes, 1 dimension): BILO_I64 [n]. */
BILO_API bilo_tensor *bilo_read_idx_labels(const char *path);

/* Where the Debian package dataset-fashion-mnist installs the files. */
#define BILO_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef enum { BILO_FMNIST_TRAIN = 0, BILO_FMNIST_TEST = 1 } bilo_fmnist_part;

/* Fashion-MNIST from dir (NULL: BILO_FASHION_MNIST_DIR), files named as shipped
   ({train,t10k}-{images-idx3,labels-idx1}-ubyte, with or without .gz). *images gets
   [n, 784] (or opts->layout) in [0, 1], *labels BILO_I64 [n] in 0..9; n is 60000 for the
   training part and 10000 for the test part. Checks 28x28 images, matching counts and label
   range. On error both outputs are NULL; a missing file names the package to install. */
BILO_API int bilo_fashion_mnist_load(const char *dir, bilo_fmnist_part part,
                                     const bilo_idx_opts *opts, bilo_tensor **images,
                                     bilo_tensor **labels);

/* Compressed sparse rows: row i holds the entries indptr[i] .. indptr[i+1]-1 of indices
   (0-based columns, strictly ascending within a row) and values. Opaque; its three arrays are
   tensors so that ops taking a matrix can keep them alive in a graph. */
typedef struct bilo_csr bilo_csr;

/* Matrix [rows, cols] from indptr (BILO_I64 [rows+1], starting at 0, non-decreasing), indices
   (BILO_I64 [nnz] as above) and values (f32 or f64 [nnz]). Validates all three and keeps a
   reference to each. */
BILO_API bilo_csr *bilo_csr_new(int64_t rows, int64_t cols, bilo_tensor *indptr,
                                bilo_tensor *indices, bilo_tensor *values);
BILO_API void bilo_csr_free(bilo_csr *m);
BILO_API int64_t bilo_csr_rows(const bilo_csr *m);
BILO_API int64_t bilo_csr_cols(const bilo_csr *m);
BILO_API int64_t bilo_csr_nnz(const bilo_csr *m);
BILO_API bilo_dtype bilo_csr_dtype(const bilo_csr *m);
/* The arrays, borrowed: valid while m lives (bilo_retain to keep one longer). */
BILO_API bilo_tensor *bilo_csr_indptr(const bilo_csr *m);
BILO_API bilo_tensor *bilo_csr_indices(const bilo_csr *m);
BILO_API bilo_tensor *bilo_csr_values(const bilo_csr *m);
/* Dense [rows, cols] copy in the values' dtype. */
BILO_API bilo_tensor *bilo_csr_to_dense(const bilo_csr *m);
/* The rows picked by a 1-D BILO_I64 index, in its order (a minibatch of a sparse dataset). */
BILO_API bilo_csr *bilo_csr_select_rows(const bilo_csr *m, bilo_tensor *index);
/* m·dense ([rows, n]) for dense [cols, n] of the values' dtype, by bilo_spmm: differentiable
   in dense and in the matrix's values. */
BILO_API bilo_tensor *bilo_csr_matmul(const bilo_csr *a, bilo_tensor *dense);

/* LIBSVM / SVMlight text: one sample per line, "<label> [qid:<q>] <index>:<value> ...", indices
   1-based and strictly ascending, '#' starts a comment, blank lines skipped, CRLF accepted.
   Labels and values must be finite numbers (C locale). Indices are at most 2^31 - 1, as in
   LIBSVM itself. */
typedef struct {
    int64_t num_features; /* columns d; 0 (default): the largest index in the file */
    bilo_dtype dtype;     /* features: BILO_F32 (default) or BILO_F64 */
    /* Labels: with num_classes == 0 (default) they are f64 [n] as written. Otherwise they
       are BILO_I64 class ids [n]: the position of the label in classes[] (e.g. {-1, 1} maps
       -1 to 0 and +1 to 1), and a label not listed is an error naming its line. */
    const double *classes;
    int num_classes;
} bilo_libsvm_opts;

/* Dense features [n, d] in *x and labels in *y. On error both are NULL. */
BILO_API int bilo_read_libsvm(const char *path, const bilo_libsvm_opts *opts, bilo_tensor **x,
                              bilo_tensor **y);
/* The same file as a CSR matrix [n, d] (for large d: news20, real-sim, rcv1). */
BILO_API int bilo_read_libsvm_csr(const char *path, const bilo_libsvm_opts *opts, bilo_csr **x,
                                  bilo_tensor **y);

/* CSV of numbers: every row has the same number of fields; spaces and tabs around a field are
   ignored; empty lines are skipped; no quoting. Fields are parsed in the C locale, so "nan"
   and "inf" are numbers while "NA" is an error. */
typedef struct {
    char delimiter;      /* ',' when 0; not a character that can occur in a number */
    bool header;         /* false (default): every line is data; true: the first non-empty line
                            holds column names and is skipped */
    bool missing_as_nan; /* false (default): an empty field is an error naming its line and
                            column; true: it reads as NaN */
    bilo_dtype dtype;    /* BILO_F32 (default) or BILO_F64 */
} bilo_csv_opts;

/* The table as [rows, columns]. */
BILO_API bilo_tensor *bilo_read_csv(const char *path, const bilo_csv_opts *opts);

/* Random permutation of 0..n-1 (BILO_I64 [n]); advances rng by ceil(n/2) Philox blocks. */
BILO_API bilo_tensor *bilo_randperm(int64_t n, bilo_rng *rng);

/* Train / validation / test split of n rows into BILO_I64 index tensors, to be used with
   bilo_index_select(x, 0, part). */
typedef struct {
    int64_t n_train; /* rows of the train part */
    int64_t n_val;   /* rows of the validation part; the test part gets the remaining rows */
    bilo_rng *rng;   /* NULL (default): consecutive ranges [0, n_train), [n_train,
                        n_train + n_val), [n_train + n_val, n); otherwise the same ranges of a
                        bilo_randperm drawn from rng */
} bilo_split_opts;

/* Any output pointer may be NULL when that part is not wanted. */
BILO_API int bilo_split(int64_t n, const bilo_split_opts *opts, bilo_tensor **train,
                        bilo_tensor **val, bilo_tensor **test);

/* Per-feature standardization: mean and standard deviation over the rows of one split,
   applied to any split as (x - mean) / std. Transparent; the tensors belong to the struct. */
typedef struct {
    bilo_tensor *mean; /* x's shape without its first axis, x's dtype */
    bilo_tensor *std;  /* population std; 1 for (near-)constant features, which then map to 0 */
} bilo_normalizer;

/* Fill *nz (its previous content is ignored: free an earlier fit first) from the rows
   (BILO_I64 indices into x's first axis; NULL: every row) of an f32/f64 x [n, ...].
   Statistics are accumulated in f64; std < 1e-12·(1 + |mean|) counts as 0. */
BILO_API int bilo_normalizer_fit(bilo_normalizer *nz, bilo_tensor *x, bilo_tensor *rows);
/* (x - mean) / std, broadcast over x's first axis. */
BILO_API bilo_tensor *bilo_normalizer_apply(const bilo_normalizer *nz, bilo_tensor *x);
/* Release the tensors and zero the struct. */
BILO_API void bilo_normalizer_free(bilo_normalizer *nz);

/* Label noise for data hyper-cleaning: each label is redrawn with probability rate. */
typedef struct {
    double rate;         /* probability that a label is redrawn, in [0, 1] */
    int64_t num_classes; /* labels lie in [0, num_classes), num_classes >= 2 */
    /* false (default): redraw uniformly among all classes, as the hyper-cleaning benchmarks do
       (BOME, benchmark_bilevel: randint), so a redrawn label keeps its value with probability
       1/num_classes and the noise rate is rate·(k-1)/k; true: uniformly among the other
       num_classes - 1 classes, so every redrawn label changes. */
    bool other_class;
} bilo_corrupt_opts;

/* Noisy copy of the BILO_I64 labels [n]. *changed (if not NULL) gets a BILO_I64 [n] mask,
   1 where the returned label differs from the input. Draws from rng: 2 uniforms per label. */
BILO_API bilo_tensor *bilo_corrupt_labels(bilo_tensor *labels, const bilo_corrupt_opts *opts,
                                          bilo_rng *rng, bilo_tensor **changed);

/* Shuffling minibatch iterator over the first axis of x and y. */
typedef struct bilo_batcher bilo_batcher;

typedef struct {
    int64_t batch_size; /* rows per batch, >= 1 (required) */
    bilo_tensor *rows;  /* BILO_I64 rows to iterate over (e.g. a split); NULL (default): all */
    bool in_order;      /* false (default): every epoch visits the rows in a new random order;
                           true: always in the order of rows */
    bool drop_last;     /* false (default): an epoch's last batch may be smaller; true: a
                           partial last batch is skipped */
    uint64_t seed;      /* the shuffles come from bilo_rng_make(seed, stream): the same seed */
    uint64_t stream;    /* and stream give the same batches in the same order */
} bilo_batcher_opts;

typedef struct {
    bilo_tensor *x;     /* bilo_index_select(x, 0, index); NULL when the batcher has no x */
    bilo_tensor *y;     /* bilo_index_select(y, 0, index); NULL when the batcher has no y */
    bilo_tensor *index; /* BILO_I64 [b]: the row numbers (e.g. to pick per-sample weights) */
    int64_t epoch;      /* 0-based */
    int64_t step;       /* 0-based batch number within the epoch */
} bilo_batch;

/* x or y may be NULL (not both); otherwise their first axes must agree. The batcher keeps a
   reference to x, y and opts->rows. */
BILO_API bilo_batcher *bilo_batcher_new(bilo_tensor *x, bilo_tensor *y,
                                        const bilo_batcher_opts *opts);
/* 1: *batch holds the next batch; its tensors are new and, like any op result, belong to the
   innermost open scope or else to the caller. 0: the epoch is over (*batch zeroed); the next
   call starts the following epoch, reshuffled. Negative: an error. */
BILO_API int bilo_batcher_next(bilo_batcher *b, bilo_batch *batch);
BILO_API int64_t bilo_batcher_num_batches(const bilo_batcher *b); /* per epoch */
BILO_API void bilo_batcher_free(bilo_batcher *b);

/* A batcher's position, enough to continue the exact same batch sequence (e.g. from a
   checkpoint): a batcher built with the same data and options, given this state, draws the
   batches the original would have drawn next. */
typedef struct {
    int64_t epoch;  /* epochs finished */
    int64_t step;   /* batches drawn in the current epoch, 0 .. bilo_batcher_num_batches */
    bool in_epoch;  /* the current epoch's order is drawn (false: the next call starts one) */
    bilo_rng rng;   /* the generator as it was before the current epoch's shuffle */
} bilo_batcher_state;

BILO_API int bilo_batcher_get_state(const bilo_batcher *b, bilo_batcher_state *state);
/* BILO_EINVAL (nothing changed) when the state cannot come from this batcher: another seed or
   stream, a negative epoch, or a step outside the epoch. */
BILO_API int bilo_batcher_set_state(bilo_batcher *b, const bilo_batcher_state *state);

/* ---- layers, activations, losses, metrics, initializers ---- */
/*
 * Every function here is composed of public tensor ops, so gradients (and gradients of
 * gradients, for hypergradients) come from autograd with no rule of their own. A NULL tensor
 * argument makes a function return NULL (or a negative code, or NaN) without a new error.
 */

/* x·W + b for x [n, in] (or [batch, n, in]), W [in, out] (so no transpose is needed and
   the initializers below read fan_in from the first axis), b [out] or NULL. */
BILO_API bilo_tensor *bilo_nn_linear(bilo_tensor *x, bilo_tensor *W, bilo_tensor *b);
/* act(x·W + b), with the bias and the activation applied in one fused pass (bilo_bias_act);
   the same numbers as the activation applied to bilo_nn_linear's result. b may be NULL
   (then act(x·W)); BILO_ACT_NONE is bilo_nn_linear. */
BILO_API bilo_tensor *bilo_nn_linear_act(bilo_tensor *x, bilo_tensor *W, bilo_tensor *b,
                                         bilo_act act);

/* Activations, elementwise. */
BILO_API bilo_tensor *bilo_nn_leaky_relu(bilo_tensor *x, double negative_slope); /* x<0: s·x */
BILO_API bilo_tensor *bilo_nn_elu(bilo_tensor *x, double alpha); /* x<0: alpha·(e^x - 1) */
/* GELU, exactly 0.5·x·(1 + erf(x/√2)), and its tanh approximation
   0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
BILO_API bilo_tensor *bilo_nn_gelu(bilo_tensor *x);
BILO_API bilo_tensor *bilo_nn_gelu_tanh(bilo_tensor *x);

/* [n, d1, d2, ...] → [n, d1·d2·...], keeping the batch axis (a view). */
BILO_API bilo_tensor *bilo_nn_flatten(bilo_tensor *x);

/* Rows of weight [num_embeddings, dim] picked by BILO_I64 indices of any shape [...]:
   result [..., dim]. An index outside [0, num_embeddings) is an error. */
BILO_API bilo_tensor *bilo_nn_embedding(bilo_tensor *weight, bilo_tensor *indices);

/* Inverted dropout: in training, each element is kept with probability 1 - p (a Bernoulli
   mask drawn from rng, advancing it) and scaled by 1/(1 - p); otherwise (train false) a
   copy of x and rng is untouched. p must lie in [0, 1). */
BILO_API bilo_tensor *bilo_nn_dropout(bilo_tensor *x, double p, bool train, bilo_rng *rng);

/* Losses: how per-element (per-sample for cross-entropy) losses are combined. */
typedef enum {
    BILO_REDUCE_MEAN = 0, /* default: 0-dimensional mean */
    BILO_REDUCE_SUM,      /* 0-dimensional sum */
    BILO_REDUCE_NONE,     /* unreduced, so a caller can weight samples before summing */
} bilo_reduction;

/* Softmax cross-entropy -log softmax(logits[i])[labels[i]] for logits [n, C] (f32/f64) and
   BILO_I64 labels [n] in [0, C); NONE gives [n]. */
BILO_API bilo_tensor *bilo_nn_cross_entropy(bilo_tensor *logits, bilo_tensor *labels,
                                            bilo_reduction reduction);
/* (pred - target)² for two tensors of the same shape; NONE gives that shape. */
BILO_API bilo_tensor *bilo_nn_mse(bilo_tensor *pred, bilo_tensor *target,
                                  bilo_reduction reduction);
/* Binary cross-entropy of sigmoid(logits) against targets in [0, 1] (same shape), computed
   as max(x, 0) - x·t + log(1 + e^-|x|), finite for any finite logit. */
BILO_API bilo_tensor *bilo_nn_bce_with_logits(bilo_tensor *logits, bilo_tensor *targets,
                                              bilo_reduction reduction);
/* lambda/2 · Σ_i ‖tensors[i]‖² (0-dimensional), n >= 1 tensors of one dtype. */
BILO_API bilo_tensor *bilo_nn_l2_penalty(bilo_tensor *const *tensors, int n, double lambda);

/* Metrics (not differentiable). Fraction of rows of logits [n, C] whose argmax equals the
   BILO_I64 label [n]; NaN and an error on bad input. */
BILO_API double bilo_nn_accuracy(bilo_tensor *logits, bilo_tensor *labels);
/* BILO_I64 [C, C]: entry [true label][predicted class] counts rows, C = logits' columns. */
BILO_API bilo_tensor *bilo_nn_confusion_matrix(bilo_tensor *logits, bilo_tensor *labels);

/* Initializers: overwrite an f32/f64 tensor in place (not recorded) from rng, return 0 or a
   negative code. Fans: a 2-D tensor is [fan_in, fan_out] as bilo_nn_linear's W; a tensor
   of 3 or more axes is [out, in, k...] with fan_in = in·Πk and fan_out = out·Πk; a 1-D
   tensor has fan_in = fan_out = its length. */
/* Glorot: uniform on ±gain·√(6/(fan_in + fan_out)), or normal with std gain·√(2/(fan_in +
   fan_out)); gain 0 means 1. */
BILO_API int bilo_nn_init_xavier_uniform(bilo_tensor *t, double gain, bilo_rng *rng);
BILO_API int bilo_nn_init_xavier_normal(bilo_tensor *t, double gain, bilo_rng *rng);
/* He, fan_in mode, for a (leaky) ReLU of the given negative slope (0: ReLU):
   gain = √(2/(1 + slope²)); uniform on ±gain·√(3/fan_in), or normal with std
   gain/√fan_in. */
BILO_API int bilo_nn_init_kaiming_uniform(bilo_tensor *t, double negative_slope, bilo_rng *rng);
BILO_API int bilo_nn_init_kaiming_normal(bilo_tensor *t, double negative_slope, bilo_rng *rng);


/* ---- convolution, pooling, normalization, CNN ---- */
/*
 * Images are NCHW. Like the layers above these are compositions of public ops (conv2d and
 * pooling go through bilo_im2col), so they differentiate twice with no rule of their own.
 */

/* Geometry of a 2-D convolution; every field left at 0 takes its default. */
typedef struct {
    int stride_h, stride_w; /* >= 1; 1 when 0 */
    int pad_h, pad_w;       /* zero padding on both sides, >= 0; 0 (default) */
    int dil_h, dil_w;       /* dilation, >= 1; 1 when 0 */
} bilo_conv2d_opts;

/* Cross-correlation of x [N, C, H, W] with weight [O, C, kh, kw], plus bias [O] (or NULL):
   result [N, O, OH, OW], OH = (H + 2·pad_h − dil_h·(kh−1) − 1) / stride_h + 1 (OW likewise),
   which must be >= 1. opts NULL: stride 1, no padding, no dilation. */
BILO_API bilo_tensor *bilo_nn_conv2d(bilo_tensor *x, bilo_tensor *weight, bilo_tensor *bias,
                                     const bilo_conv2d_opts *opts);

/* Pooling over square windows of x [N, C, H, W]: kernel >= 1, stride >= 1 (0: kernel),
   padding in [0, kernel/2] (as PyTorch). Max pooling ignores padded taps (they never win);
   average pooling counts them as zeros and divides by kernel² (PyTorch's default
   count_include_pad). The max shares its gradient equally among tied maxima. */
BILO_API bilo_tensor *bilo_nn_max_pool2d(bilo_tensor *x, int kernel, int stride, int padding);
BILO_API bilo_tensor *bilo_nn_avg_pool2d(bilo_tensor *x, int kernel, int stride, int padding);

/* Batch normalization of x [N, C] or [N, C, H, W] per channel C:
   gamma·(x − mean)/√(var + eps) + beta, gamma and beta [C] (NULL: 1 and 0).
   training: mean and biased var over all axes but C (N·H·W >= 2 values); then, when
   running_mean and running_var ([C], x's dtype) are given, they are updated in place and
   not recorded, as PyTorch does: r ← (1 − momentum)·r + momentum·s, with the unbiased
   variance for running_var. Not training: the running statistics (required) are used.
   momentum in [0, 1] (PyTorch: 0.1), eps > 0 (PyTorch: 1e-5). */
BILO_API bilo_tensor *bilo_nn_batch_norm(bilo_tensor *x, bilo_tensor *gamma, bilo_tensor *beta,
                                         bilo_tensor *running_mean, bilo_tensor *running_var,
                                         bool training, double momentum, double eps);

/* The 4-block CNN of few-shot learning (MAML, prototypical networks): 4 × [conv 3×3 pad 1,
   batch norm, ReLU, max pool 2] with `hidden` channels, then a linear head on the flattened
   features. Batch norm uses momentum 0.1 and eps 1e-5. */
typedef struct {
    int64_t in_channels;   /* 1 when 0 */
    int64_t height, width; /* input size, >= 16 each (e.g. 28 for Fashion-MNIST) */
    int64_t hidden;        /* 64 when 0 */
    int64_t n_classes;     /* >= 1 (required) */
    bilo_dtype dtype;      /* BILO_F32 (default) or BILO_F64 */
} bilo_nn_cnn4;

/* Parameter tensors: 4 per block (conv weight [hidden, in, 3, 3], conv bias, BN gamma, BN
   beta, each [hidden]) then the head W [hidden·h·w, n_classes] and b [n_classes]: 18.
   Negative when the description is invalid. */
BILO_API int bilo_nn_cnn4_num_tensors(const bilo_nn_cnn4 *m);
BILO_API int64_t bilo_nn_cnn4_num_params(const bilo_nn_cnn4 *m);
/* New parameters into params[0..17]: conv weights Kaiming-uniform (ReLU) and the head W
   Xavier-uniform, both from rng; biases and beta 0, gamma 1. */
BILO_API int bilo_nn_cnn4_init(const bilo_nn_cnn4 *m, bilo_rng *rng, bilo_tensor **params);
/* Running statistics (8 tensors [hidden]: mean then var of each block) into stats: means 0,
   variances 1. They are state, not parameters: save them with bilo_save_params too. */
BILO_API int bilo_nn_cnn4_init_stats(const bilo_nn_cnn4 *m, bilo_tensor **stats);
/* Logits [N, n_classes] of x [N, in_channels, height, width]. training: batch statistics,
   and stats (may be NULL) are updated in place; otherwise stats (required) are used. */
BILO_API bilo_tensor *bilo_nn_cnn4_forward(const bilo_nn_cnn4 *m, bilo_tensor *const *params,
                                           bilo_tensor *const *stats, bilo_tensor *x,
                                           bool training);

/* ---- optimizers, schedules, models ---- */
/*
 * Optimizers update a list of n parameter tensors (f32 or f64) from gradients of the same
 * shapes and dtypes. Two forms share one options struct:
 *  - bilo_optim_step: in place, on a bilo_optim object that owns the state; records no graph
 *    and, after its first call, allocates nothing.
 *  - bilo_optim_step_diff: pure, built from public ops, so T unrolled steps can be
 *    differentiated (through the state and through a learning rate given as a tensor).
 * Updates follow PyTorch's torch.optim documentation (dampening is always 0):
 *  SGD:   g ← g + wd·p;  b ← μ·b + g;  d = nesterov ? g + μ·b : b (d = g when μ = 0);  p ← p − lr·d
 *  Adam:  g ← g + wd·p;  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
 *         p ← p − lr·(m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + eps)       (t: 1-based step)
 *  AdamW: p ← p·(1 − lr·wd) first, then Adam without the L2 term.
 */
typedef enum { BILO_OPTIM_SGD = 0, BILO_OPTIM_ADAM, BILO_OPTIM_ADAMW } bilo_optim_kind;

typedef struct {
    bilo_optim_kind kind; /* BILO_OPTIM_SGD (default) */
    double lr;            /* 1e-3 when 0 */
    double momentum;      /* SGD: μ, 0 (default) for plain SGD */
    bool nesterov;        /* SGD: Nesterov momentum (needs μ > 0) */
    double weight_decay;  /* 0 (default); AdamW: 1e-2 when 0 (AdamW without decay is Adam) */
    double beta1;         /* Adam/AdamW: 0.9 when 0 */
    double beta2;         /* Adam/AdamW: 0.999 when 0 */
    double eps;           /* Adam/AdamW: 1e-8 when 0 */
} bilo_optim_opts;

/* State tensors per parameter: 0 (SGD without momentum), 1 (SGD momentum buffer b) or
   2 (Adam/AdamW: m then v). Negative for invalid options. */
BILO_API int bilo_optim_state_per_param(const bilo_optim_opts *opts);

typedef struct bilo_optim bilo_optim;

/* Optimizer over params[0..n-1] (references kept); the state starts at zero. */
BILO_API bilo_optim *bilo_optim_new(const bilo_optim_opts *opts, bilo_tensor *const *params,
                                    int n);
/* One in-place step with grads[0..n-1] (a NULL gradient leaves its parameter alone), in the
   parameters' own arithmetic (f32 parameters and state are updated in f32, as PyTorch does). */
BILO_API int bilo_optim_step(bilo_optim *opt, bilo_tensor *const *grads);
BILO_API double bilo_optim_get_lr(const bilo_optim *opt);
BILO_API void bilo_optim_set_lr(bilo_optim *opt, double lr); /* e.g. from bilo_lr_at */
BILO_API int64_t bilo_optim_steps_done(const bilo_optim *opt);
/* State tensor k of parameter i, borrowed (NULL when out of range). */
BILO_API bilo_tensor *bilo_optim_state(const bilo_optim *opt, int i, int k);
BILO_API void bilo_optim_free(bilo_optim *opt);

/* Differentiable step number t (1-based) of n parameters. state holds
   n·bilo_optim_state_per_param tensors, parameter i's at state[i·S .. i·S+S-1]; NULL means
   all zero (the first step). lr: a 0-d tensor of the params' dtype, or NULL for opts->lr.
   new_params gets n and new_state n·S new tensors (graph nodes of the inputs). On error
   every output is NULL. */
BILO_API int bilo_optim_step_diff(const bilo_optim_opts *opts, int n, bilo_tensor *const *params,
                                  bilo_tensor *const *grads, bilo_tensor *const *state,
                                  bilo_tensor *lr, int64_t t, bilo_tensor **new_params,
                                  bilo_tensor **new_state);

/* Learning-rate schedules, as a function of the 0-based step. */
typedef enum { BILO_LR_CONSTANT = 0, BILO_LR_STEP, BILO_LR_COSINE } bilo_lr_kind;

typedef struct {
    bilo_lr_kind kind;   /* BILO_LR_CONSTANT (default): lr */
    double lr;           /* base rate, > 0 (required) */
    int64_t step_size;   /* BILO_LR_STEP: lr·gamma^floor(step/step_size), step_size >= 1 */
    double gamma;        /* BILO_LR_STEP: 0.1 when 0 */
    int64_t total_steps; /* BILO_LR_COSINE: min_lr + (lr−min_lr)·(1+cos(π·min(step,T)/T))/2 */
    double min_lr;       /* BILO_LR_COSINE: 0 (default) */
} bilo_lr_schedule;

/* NaN (and an error) for invalid settings or a negative step. */
BILO_API double bilo_lr_at(const bilo_lr_schedule *s, int64_t step);

/* Multi-layer perceptron widths[0] → widths[1] → ... → widths[L]: L linear layers y = x·W + b
   (W [in, out], b [out]) with the activation between them, none after the last (logits).
   The hidden layers run bilo_nn_linear_act. The activation is a bilo_act; the BILO_MLP_ names
   remain as its aliases. */
typedef bilo_act bilo_mlp_act;
#define BILO_MLP_RELU BILO_ACT_RELU
#define BILO_MLP_TANH BILO_ACT_TANH
#define BILO_MLP_SIGMOID BILO_ACT_SIGMOID

typedef struct {
    const int64_t *widths; /* num_widths >= 2 widths, each >= 1 */
    int num_widths;
    bilo_mlp_act act; /* BILO_ACT_RELU (default), _TANH, _SIGMOID, or _NONE (linear) */
    bilo_dtype dtype; /* BILO_F32 (default) or BILO_F64 */
} bilo_nn_mlp;

/* Parameter tensors (2·L: W1, b1, W2, b2, ...), negative when the description is invalid. */
BILO_API int bilo_nn_mlp_num_tensors(const bilo_nn_mlp *m);
/* Scalars in all parameters, negative when the description is invalid. */
BILO_API int64_t bilo_nn_mlp_num_params(const bilo_nn_mlp *m);
/* New parameters into params[0 .. num_tensors-1]: W uniform in ±bound with Kaiming
   (relu: sqrt(6/in)) or Xavier (tanh, gain 5/3; sigmoid and none, gain 1: gain·sqrt(6/(in+out)))
   bounds, drawn in row-major order from rng; b zero. Owned like any new tensor. */
BILO_API int bilo_nn_mlp_init(const bilo_nn_mlp *m, bilo_rng *rng, bilo_tensor **params);
/* Logits [batch, widths[L]] of x [batch, widths[0]] with the given parameters. */
BILO_API bilo_tensor *bilo_nn_mlp_forward(const bilo_nn_mlp *m, bilo_tensor *const *params,
                                          bilo_tensor *x);

/* Parameter files: "BILOPARM" magic, u32 version 1, u32 count, per tensor u32 dtype, u32 ndim,
   i64 shape[ndim]; then the data of each tensor; then the u32 CRC-32 of all preceding bytes.
   Little-endian throughout. Saving writes path.tmp.XXXXXX in the same directory, fsyncs it
   and renames it over path, so a failed save leaves an existing file as it was. */
BILO_API int bilo_save_params(const char *path, bilo_tensor *const *params, int n);
/* Load into existing tensors, whose dtypes and shapes must match the file's; nothing is
   written unless the whole file is valid. Errors (BILO_EIO, BILO_EFORMAT, BILO_ESHAPE) name
   the file and the byte offset. */
BILO_API int bilo_load_params(const char *path, bilo_tensor *const *params, int n);

#ifdef __cplusplus
}
#endif
#endif
