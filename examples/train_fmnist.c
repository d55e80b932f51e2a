/* Train an MLP 784-256-10 on Fashion-MNIST with Adam and report, per epoch, the training loss,
   the test accuracy and the time. Usage: train_fmnist [epochs] [data dir]
   The data comes from Debian's dataset-fashion-mnist package by default. */
#include <bilo.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { BATCH = 128, HIDDEN = 256, CLASSES = 10 };

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One pass over the training set; returns the mean batch loss, NaN on error. */
static double train_epoch(const bilo_nn_mlp *model, bilo_tensor **params, int n_params,
                          bilo_optim *opt, bilo_batcher *batches)
{
    double loss_sum = 0;
    int64_t count = 0;
    bilo_batch batch;
    for (;;) {
        bilo_scope_begin();
        int more = bilo_batcher_next(batches, &batch);
        bilo_tensor *grads[8];
        int rc = more;
        if (more > 0) {
            bilo_tensor *logits = bilo_nn_mlp_forward(model, params, batch.x);
            bilo_tensor *loss = bilo_nn_cross_entropy(logits, batch.y, BILO_REDUCE_MEAN);
            rc = bilo_grad(&loss, 1, NULL, params, n_params, grads, 0);
            if (rc == 0) rc = bilo_optim_step(opt, grads);
            if (rc == 0) {
                loss_sum += bilo_item(loss);
                count++;
            }
        }
        bilo_scope_end();
        if (rc < 0) return NAN;
        if (more == 0) return loss_sum / (double)count;
    }
}

static double test_accuracy(const bilo_nn_mlp *model, bilo_tensor **params, bilo_tensor *x,
                            bilo_tensor *y)
{
    bilo_scope_begin();
    bilo_no_grad_begin();
    double accuracy = bilo_nn_accuracy(bilo_nn_mlp_forward(model, params, x), y);
    bilo_no_grad_end();
    bilo_scope_end();
    return accuracy;
}

int main(int argc, char **argv)
{
    int epochs = argc > 1 ? atoi(argv[1]) : 5;
    const char *dir = argc > 2 ? argv[2] : NULL;
    if (epochs < 1) {
        fprintf(stderr, "usage: train_fmnist [epochs >= 1] [fashion-mnist dir]\n");
        return 2;
    }
    bilo_tensor *train_x, *train_y, *test_x, *test_y;
    if (bilo_fashion_mnist_load(dir, BILO_FMNIST_TRAIN, NULL, &train_x, &train_y) < 0 ||
        bilo_fashion_mnist_load(dir, BILO_FMNIST_TEST, NULL, &test_x, &test_y) < 0) {
        fprintf(stderr, "train_fmnist: %s\n", bilo_last_error());
        return 1;
    }

    const int64_t widths[] = {784, HIDDEN, CLASSES};
    const bilo_nn_mlp model = {.widths = widths, .num_widths = 3, .act = BILO_MLP_RELU};
    bilo_tensor *params[4];
    bilo_rng rng = bilo_rng_make(1, 0);
    int n_params = bilo_nn_mlp_num_tensors(&model);
    bilo_nn_mlp_init(&model, &rng, params);
    for (int i = 0; i < n_params; i++) bilo_set_requires_grad(params[i], true);
    bilo_optim *opt = bilo_optim_new(&(bilo_optim_opts){.kind = BILO_OPTIM_ADAM, .lr = 1e-3},
                                     params, n_params);
    bilo_batcher *batches =
        bilo_batcher_new(train_x, train_y, &(bilo_batcher_opts){.batch_size = BATCH, .seed = 1});
    if (!opt || !batches) {
        fprintf(stderr, "train_fmnist: %s\n", bilo_last_error());
        return 1;
    }

    printf("MLP 784-%d-%d on Fashion-MNIST, Adam lr 1e-3, batch %d, %d threads (%s kernels)\n",
           HIDDEN, CLASSES, BATCH, bilo_get_num_threads(), bilo_kernel_isa());
    printf("epoch  train loss  test accuracy  seconds\n");
    int rc = 0;
    for (int epoch = 1; epoch <= epochs && rc == 0; epoch++) {
        double start = now_seconds();
        double loss = train_epoch(&model, params, n_params, opt, batches);
        double accuracy = test_accuracy(&model, params, test_x, test_y);
        if (isnan(loss) || isnan(accuracy)) {
            fprintf(stderr, "train_fmnist: %s\n", bilo_last_error());
            rc = 1;
            break;
        }
        printf("%5d  %10.4f  %13.4f  %7.2f\n", epoch, loss, accuracy, now_seconds() - start);
    }

    bilo_batcher_free(batches);
    bilo_optim_free(opt);
    for (int i = 0; i < n_params; i++) bilo_release(params[i]);
    bilo_release(train_x);
    bilo_release(train_y);
    bilo_release(test_x);
    bilo_release(test_y);
    return rc;
}
