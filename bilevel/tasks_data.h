/* Private to the dataset-backed tasks (tasks_data.c, tasks_fewshot.c) and their tests: the
   option structs and the data each task keeps, so a test can check splits, label noise and
   episodes against the files they came from. */
#ifndef BILO_TASKS_DATA_H
#define BILO_TASKS_DATA_H

#include "tasks_impl.h"

/* A labelled set: dense features X [n, d] or sparse S (exactly one is set), BILO_I64 y [n]. */
typedef struct {
    bilo_tensor *X;
    bilo_csr *S;
    bilo_tensor *y;
} bilo__labelled;

/* X·W + b for either kind of features. */
bilo_tensor *bilo__labelled_logits(const bilo__labelled *l, bilo_tensor *W, bilo_tensor *b);
void bilo__labelled_free(bilo__labelled *l);
/* Fashion-MNIST part from dir ("" : the Debian package's directory), values in [0, 1]. */
int bilo__load_fmnist(const char *dir, bilo_fmnist_part part, bilo_dtype dtype,
                      bilo_tensor **images, bilo_tensor **labels);

/* ---- hyperclean ---- */
typedef enum { BILO__WEIGHTS_SIGMOID, BILO__WEIGHTS_CLIP } bilo__weights;

typedef struct {
    int n_train, n_val, n_eval; /* rows drawn from the 60k training file */
    double corruption;          /* fraction of training labels replaced by a random class */
    double reg;                 /* reg·‖y‖² in g */
    int weights;                /* bilo__weights */
    int batch;                  /* 0: full batch; > 0: minibatches of g and f */
    char data_dir[BILO__OPT_STRING_LEN];
} bilo__hyperclean_opts;

typedef struct {
    bilo__hyperclean_opts o;
    bilo_tensor *rows_train, *rows_val, *rows_eval; /* BILO_I64 rows of the training file */
    bilo_tensor *labels_true; /* BILO_I64 [n_train]: the file's labels of the train split */
    bilo_tensor *redrawn;     /* BILO_I64 [n_train]: 1 where the label was replaced */
    bilo_tensor *clean;       /* BILO_I64 [n_train]: 1 where the training label is the true one */
    bilo__labelled train, val, eval, test; /* train.y holds the noisy labels */
    bilo_batcher *lower_data, *upper_data;
} bilo__hyperclean;

/* ---- l2reg ---- */
typedef struct {
    char data[BILO__OPT_STRING_LEN]; /* "fmnist" or the path of a LIBSVM file */
    char data_dir[BILO__OPT_STRING_LEN];
    int n_train, n_val;              /* fmnist: rows of the 60k training file */
    double val_frac, test_frac;      /* LIBSVM: shares of the shuffled rows */
    double reg0;                     /* initial per-feature weight exp(x_j) */
} bilo__l2reg_opts;

typedef struct {
    bilo__l2reg_opts o;
    bilo__labelled train, val, test;
    int64_t n_features, n_classes;
} bilo__l2reg;

/* ---- meta-fmnist ---- */
/* Which classes meta-train and which meta-test: 0-4 / 5-9, or even / odd. */
typedef enum { BILO__META_HALVES, BILO__META_ALTERNATE } bilo__meta_classes;

#define BILO__META_CLASSES_PER_SIDE 5

typedef struct {
    int ways, shots, queries;   /* N-way K-shot with `queries` query images per class */
    int meta_batch;             /* episodes per outer step */
    int hidden;                 /* backbone width */
    double reg;                 /* reg/2·‖head‖² per episode in g */
    int test_episodes;          /* fixed meta-test episodes for the metrics */
    int adapt_T;                /* plain gradient steps of the head in the metric */
    double adapt_lr;
    int classes;                /* bilo__meta_classes */
    char data_dir[BILO__OPT_STRING_LEN];
} bilo__meta_opts;

/* Episodes drawn at once: rows of the image file and episode labels 0..ways-1. */
typedef struct {
    /* BILO_I64 [tasks, ways·shots] and [tasks, ways·queries] */
    bilo_tensor *support_rows, *query_rows;
    bilo_tensor *support_y, *query_y;       /* BILO_I64, same shapes */
    bilo_tensor *support_x, *query_x;       /* images [tasks, rows, 784] (training episodes only) */
} bilo__episodes;

typedef struct {
    bilo__meta_opts o;
    uint64_t seed;
    bilo_dtype dtype;               /* the task's; episode images are cast to it */
    bilo_tensor *images, *labels;   /* the 60k training file, images in f32 */
    int64_t *class_rows[10];        /* rows of each class */
    int64_t class_count[10];
    int64_t train_classes[BILO__META_CLASSES_PER_SIDE], test_classes[BILO__META_CLASSES_PER_SIDE];
    bilo__episodes train;           /* the current outer step's episodes */
    bilo__episodes test;            /* fixed meta-test episodes (rows and labels only) */
} bilo__meta_fmnist;

#endif
