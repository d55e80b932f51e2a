/* Steady state allocates nothing: after a first iteration has filled bilo's caches, a
   training step of the MLP 784-256-256-10, a Hessian-vector product on a small tanh MLP and a
   100-step ITD hypergradient make no call into the system allocator. The calls are counted
   through the allocator hooks (bilo_set_allocator), installed before any bilo memory exists.
   Each workload also checks one value computed independently, so a path that silently did
   nothing could not pass. Under AddressSanitizer the block cache is off on purpose (every
   free goes to the system), so the zero-call checks are skipped there. */
#include "bilo.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>

static size_t hook_mallocs, hook_frees;
static void *count_malloc(size_t n) { hook_mallocs++; return malloc(n); }
static void *count_realloc(void *p, size_t n) { hook_mallocs++; return realloc(p, n); }
static void *count_calloc(size_t c, size_t n) { hook_mallocs++; return calloc(c, n); }
static void count_free(void *p) { hook_frees++; free(p); }

#define ITERATIONS 5

/* Runs iteration(i, user) ITERATIONS times and checks that every iteration after the first
   made no system malloc or free. */
static void expect_flat(const char *what, void (*iteration)(int i, void *user), void *user)
{
    size_t mallocs_after_first = 0, frees_after_first = 0;
    for (int i = 0; i < ITERATIONS; i++) {
        iteration(i, user);
        if (i == 0) {
            mallocs_after_first = hook_mallocs;
            frees_after_first = hook_frees;
        }
    }
#if defined(__SANITIZE_ADDRESS__)
    tap_ok(1, "%s: steady state makes no malloc or free # SKIP the block cache is off under "
              "AddressSanitizer", what);
    (void)mallocs_after_first;
    (void)frees_after_first;
#else
    tap_ok(hook_mallocs == mallocs_after_first && hook_frees == frees_after_first,
           "%s: steady state makes no malloc or free (%zu mallocs, %zu frees after the first "
           "iteration)",
           what, hook_mallocs - mallocs_after_first, hook_frees - frees_after_first);
#endif
}

/* ---- MLP 784-256-256-10 training step (ReLU, batch 64, f32, Adam) -------------------- */

enum { MLP_LAYERS = 3, MLP_TENSORS = 2 * MLP_LAYERS, MLP_BATCH = 64 };
static const int64_t mlp_widths[MLP_LAYERS + 1] = {784, 256, 256, 10};

typedef struct {
    bilo_nn_mlp desc;
    bilo_tensor *params[MLP_TENSORS], *x, *labels;
    bilo_optim *opt;
    double first_loss, last_loss;
} mlp_trainer;

static void mlp_step(int i, void *user)
{
    mlp_trainer *t = user;
    bilo_scope_begin();
    bilo_tensor *logits = bilo_nn_mlp_forward(&t->desc, t->params, t->x);
    bilo_tensor *loss = bilo_nn_cross_entropy(logits, t->labels, BILO_REDUCE_MEAN);
    bilo_tensor *grads[MLP_TENSORS];
    if (loss && bilo_grad(&loss, 1, NULL, t->params, MLP_TENSORS, grads, 0) == 0 &&
        bilo_optim_step(t->opt, grads) == 0) {
        if (i == 0) t->first_loss = bilo_item(loss);
        t->last_loss = bilo_item(loss);
    } else {
        t->last_loss = NAN;
    }
    bilo_scope_end();
}

static void test_mlp_step(void)
{
    mlp_trainer t = {.desc = {.widths = mlp_widths, .num_widths = MLP_LAYERS + 1,
                              .act = BILO_MLP_RELU, .dtype = BILO_F32}};
    bilo_rng rng = bilo_rng_make(11, 0);
    tap_ok(bilo_nn_mlp_init(&t.desc, &rng, t.params) == 0, "MLP initialized");
    for (int i = 0; i < MLP_TENSORS; i++) bilo_set_requires_grad(t.params[i], true);
    t.x = bilo_randn(BILO_F32, BILO_SHAPE(MLP_BATCH, 784), &rng);
    t.labels = bilo_zeros(BILO_I64, BILO_SHAPE(MLP_BATCH));
    for (int64_t i = 0; i < MLP_BATCH; i++) bilo_set_flat(t.labels, i, (double)(i % 10));
    t.opt = bilo_optim_new(&(bilo_optim_opts){.kind = BILO_OPTIM_ADAM, .lr = 1e-3}, t.params,
                           MLP_TENSORS);
    expect_flat("MLP 784-256-256-10 training step", mlp_step, &t);
    /* Adam steps on one fixed batch lower its loss. */
    tap_ok(isfinite(t.first_loss) && t.last_loss < t.first_loss,
           "MLP loss decreases over the steps (%g -> %g)", t.first_loss, t.last_loss);
    bilo_optim_free(t.opt);
    bilo_release(t.x);
    bilo_release(t.labels);
    for (int i = 0; i < MLP_TENSORS; i++) bilo_release(t.params[i]);
}

/* ---- HVP on a small tanh MLP (f64) ------------------------------------------------------ */

enum { HVP_IN = 6, HVP_HIDDEN = 8, HVP_BATCH = 5 };

typedef struct {
    bilo_tensor *W1, *W2, *x, *v;
    double hv_dot_v; /* <Hv, v> of the last iteration */
} hvp_case;

/* f(W1) = ½ Σ (tanh(x W1ᵀ) W2ᵀ)², a function of W1 only. */
static bilo_tensor *hvp_loss(const hvp_case *c, bilo_tensor *W1)
{
    bilo_tensor *out = bilo_matmul_t(bilo_tanh(bilo_matmul_t(c->x, W1, false, true)), c->W2,
                                     false, true);
    return bilo_mul_scalar(bilo_sum(bilo_square(out), BILO_ALL_AXES, false), 0.5);
}

static void hvp_iteration(int i, void *user)
{
    (void)i;
    hvp_case *c = user;
    bilo_scope_begin();
    bilo_tensor *hv = NULL;
    if (bilo_hvp(hvp_loss(c, c->W1), &c->W1, 1, &c->v, &hv, 0) == 0)
        c->hv_dot_v = bilo_item(bilo_sum(bilo_mul(hv, c->v), BILO_ALL_AXES, false));
    else
        c->hv_dot_v = NAN;
    bilo_scope_end();
}

static void test_hvp(void)
{
    bilo_rng rng = bilo_rng_make(12, 0);
    hvp_case c = {.W1 = bilo_randn(BILO_F64, BILO_SHAPE(HVP_HIDDEN, HVP_IN), &rng),
                  .W2 = bilo_randn(BILO_F64, BILO_SHAPE(1, HVP_HIDDEN), &rng),
                  .x = bilo_randn(BILO_F64, BILO_SHAPE(HVP_BATCH, HVP_IN), &rng),
                  .v = bilo_randn(BILO_F64, BILO_SHAPE(HVP_HIDDEN, HVP_IN), &rng)};
    bilo_set_requires_grad(c.W1, true);
    expect_flat("HVP on a tanh MLP", hvp_iteration, &c);
    /* <Hv, v> = d²/dt² f(W1 + t v) at t = 0, by a central second difference in f64. */
    const double h = 1e-4;
    double f_at[3];
    bilo_no_grad_begin();
    for (int s = -1; s <= 1; s++) {
        bilo_scope_begin();
        f_at[s + 1] = bilo_item(hvp_loss(&c, bilo_add(c.W1, bilo_mul_scalar(c.v, s * h))));
        bilo_scope_end();
    }
    bilo_no_grad_end();
    const double fd = (f_at[0] - 2 * f_at[1] + f_at[2]) / (h * h);
    tap_ok(fabs(c.hv_dot_v - fd) <= 1e-4 * (1 + fabs(fd)),
           "<Hv, v> = %.8g matches the second difference %.8g", c.hv_dot_v, fd);
    bilo_release(c.W1);
    bilo_release(c.W2);
    bilo_release(c.x);
    bilo_release(c.v);
}

/* ---- ITD hypergradient through 100 unrolled inner steps --------------------------------- */

/* g(x, y) = ½ yᵀ diag(a) y − xᵀy and f(x, y) = ½‖y − 1‖²: gradient steps of size lr from
   y₀ = 0 give y_T = (1 − (1 − lr·a)^T) x / a elementwise, so
   dΦ/dx = (1 − (1 − lr·a)^T) / a · (y_T − 1). */
enum { ITD_N = 4, ITD_T = 100 };
static const double itd_a[ITD_N] = {0.5, 1.0, 2.0, 3.0};
static const double itd_x[ITD_N] = {0.3, -0.2, 0.7, 1.1};
static const double itd_lr = 0.1;

typedef struct {
    bilo_tensor *a, *ones, *x, *y;
    bilo_estimator *est;
    double hypergrad[ITD_N];
} itd_case;

static bilo_tensor *itd_lower(bilo_tensor *const *x, bilo_tensor *const *y,
                              const bilo_batch *b, void *user)
{
    (void)b;
    const itd_case *c = user;
    bilo_tensor *quad = bilo_mul_scalar(bilo_sum(bilo_mul(c->a, bilo_square(y[0])),
                                                 BILO_ALL_AXES, false), 0.5);
    return bilo_sub(quad, bilo_sum(bilo_mul(x[0], y[0]), BILO_ALL_AXES, false));
}

static bilo_tensor *itd_upper(bilo_tensor *const *x, bilo_tensor *const *y,
                              const bilo_batch *b, void *user)
{
    (void)x;
    (void)b;
    const itd_case *c = user;
    return bilo_mul_scalar(bilo_sum(bilo_square(bilo_sub(y[0], c->ones)), BILO_ALL_AXES, false),
                           0.5);
}

static void itd_iteration(int i, void *user)
{
    (void)i;
    itd_case *c = user;
    bilo_scope_begin();
    bilo_tensor *g = NULL;
    if (bilo_estimator_hypergradient(c->est, &c->x, &c->y, &g) == 0)
        for (int k = 0; k < ITD_N; k++) c->hypergrad[k] = bilo_get_flat(g, k);
    else
        c->hypergrad[0] = NAN;
    bilo_scope_end();
}

static void test_itd(void)
{
    itd_case c = {.a = bilo_from_data(BILO_F64, BILO_SHAPE(ITD_N), itd_a),
                  .ones = bilo_ones(BILO_F64, BILO_SHAPE(ITD_N)),
                  .x = bilo_from_data(BILO_F64, BILO_SHAPE(ITD_N), itd_x),
                  .y = bilo_zeros(BILO_F64, BILO_SHAPE(ITD_N))};
    const bilo_problem p = {.x = &c.x, .n_x = 1, .y = &c.y, .n_y = 1, .lower = itd_lower,
                            .upper = itd_upper, .user = &c};
    c.est = bilo_estimator_new("itd", &p, "T=100,lr=0.1");
    if (!tap_ok(c.est != NULL, "ITD estimator created")) {
        tap_diag("%s", bilo_last_error());
        return;
    }
    expect_flat("ITD hypergradient, T = 100", itd_iteration, &c);
    double worst = 0;
    for (int k = 0; k < ITD_N; k++) {
        const double shrink = 1 - pow(1 - itd_lr * itd_a[k], ITD_T);
        const double y_T = shrink * itd_x[k] / itd_a[k];
        worst = fmax(worst, fabs(c.hypergrad[k] - shrink / itd_a[k] * (y_T - 1)));
    }
    tap_ok(worst < 1e-10, "ITD hypergradient matches the closed form (max error %.3g)", worst);
    bilo_estimator_free(c.est);
    bilo_release(c.a);
    bilo_release(c.ones);
    bilo_release(c.x);
    bilo_release(c.y);
}

int main(void)
{
    tap_ok(bilo_set_allocator(&(bilo_allocator){count_malloc, count_realloc, count_calloc,
                                                count_free}) == 0,
           "counting hooks installed before any bilo memory exists");
    /* At 2 threads the kernels' parallel paths (packed GEMM per-thread buffers) run too. */
    for (int threads = 1; threads <= 2; threads++) {
        bilo_set_num_threads(threads);
        tap_diag("%d thread(s)", threads);
        test_mlp_step();
        test_hvp();
        test_itd();
    }
    bilo_set_num_threads(0);
    tap_ok(hook_mallocs > 0, "the first iterations went through the hooks (%zu mallocs)",
           hook_mallocs);
    bilo_mem_trim();
    tap_ok(hook_frees == hook_mallocs, "trim returns every block (%zu frees, %zu mallocs)",
           hook_frees, hook_mallocs);
    tap_ok(bilo_set_allocator(NULL) == 0, "default allocator restored (nothing left alive)");
    return tap_done();
}
