/* A first look at bilo: a few tensor ops with their results and timings, then a gradient
   and a Hessian-vector product of a small function by double backprop. */
#include <bilo.h>

#include <stdio.h>
#include <time.h>

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const char *what)
{
    fprintf(stderr, "demo: %s failed: %s\n", what, bilo_last_error());
    return 1;
}

static int show_ops(void)
{
    bilo_tensor *a = bilo_from_data(BILO_F64, BILO_SHAPE(2, 3), (double[]){1, 2, 3, 4, 5, 6});
    bilo_tensor *b = bilo_from_data(BILO_F64, BILO_SHAPE(3), (double[]){10, 20, 30});
    bilo_tensor *sum = bilo_add(a, b); /* broadcast [2,3] + [3] */
    bilo_tensor *prod = bilo_matmul_t(a, a, false, true);
    bilo_tensor *soft = bilo_softmax(a, 1);
    if (!sum || !prod || !soft) return fail("ops");
    printf("a + b (broadcast):\n");
    bilo_fprint(stdout, sum);
    printf("a · aᵀ:\n");
    bilo_fprint(stdout, prod);
    printf("softmax(a, axis 1):\n");
    bilo_fprint(stdout, soft);

    /* A wrong shape is an error message, not a crash. */
    if (!bilo_matmul(a, b)) printf("expected error: %s\n\n", bilo_last_error());
    return 0;
}

static int show_timings(void)
{
    bilo_rng rng = bilo_rng_make(42, 0);
    bilo_tensor *x = bilo_randn(BILO_F32, BILO_SHAPE(1000000), &rng);
    bilo_tensor *m = bilo_randn(BILO_F32, BILO_SHAPE(512, 512), &rng);
    if (!x || !m) return fail("randn");
    const int reps = 20;
    double t0 = now_seconds();
    for (int i = 0; i < reps; i++) bilo_release(bilo_keep(bilo_tanh(x)));
    double t_tanh = (now_seconds() - t0) / reps;
    t0 = now_seconds();
    for (int i = 0; i < reps; i++) bilo_release(bilo_keep(bilo_matmul(m, m)));
    double t_mm = (now_seconds() - t0) / reps;
    printf("kernels: %s, %d threads\n", bilo_kernel_isa(), bilo_get_num_threads());
    printf("tanh of 1e6 f32:      %8.3f ms  (%.2f Gelem/s)\n", 1e3 * t_tanh, 1e-3 / t_tanh);
    printf("matmul 512x512 f32:   %8.3f ms  (%.1f GFLOP/s)\n\n", 1e3 * t_mm,
           2.0 * 512 * 512 * 512 / t_mm * 1e-9);
    return 0;
}

/* f(x) = Σ tanh(x_i)² + x_0 x_1: its gradient and the Hessian times v = (1, 0, 0). */
static bilo_tensor *small_function(bilo_tensor *x)
{
    bilo_tensor *x0 = bilo_slice(x, 0, 0, 1, 1), *x1 = bilo_slice(x, 0, 1, 2, 1);
    return bilo_add(bilo_sum(bilo_square(bilo_tanh(x)), BILO_ALL_AXES, false),
                    bilo_sum(bilo_mul(x0, x1), BILO_ALL_AXES, false));
}

static int show_autograd(void)
{
    bilo_tensor *x = bilo_from_data(BILO_F64, BILO_SHAPE(3), (double[]){0.5, -1.0, 2.0});
    bilo_tensor *v = bilo_from_data(BILO_F64, BILO_SHAPE(3), (double[]){1, 0, 0});
    bilo_set_requires_grad(x, true);
    bilo_tensor *f = small_function(x);
    bilo_tensor *grad = NULL, *hv = NULL;
    if (bilo_grad(&f, 1, NULL, &x, 1, &grad, BILO_RETAIN_GRAPH) < 0) return fail("grad");
    if (bilo_hvp(f, &x, 1, &v, &hv, 0) < 0) return fail("hvp");
    printf("f(x) = sum tanh(x)^2 + x0*x1 at x = (0.5, -1, 2): f = %.6f\n", bilo_item(f));
    printf("gradient:\n");
    bilo_fprint(stdout, grad);
    printf("Hessian · (1, 0, 0) by double backprop:\n");
    bilo_fprint(stdout, hv);
    return 0;
}

int main(void)
{
    printf("bilo %s\n\n", bilo_version());
    bilo_scope_begin(); /* every tensor below is released by the matching end */
    int rc = show_ops() || show_timings() || show_autograd();
    bilo_scope_end();
    return rc;
}
