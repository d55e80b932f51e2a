/* Optimizers (in place and differentiable), schedules, the MLP and parameter files. Expected
   values come from scalar reference loops written here, closed forms and finite differences. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bilo_autograd.h"
#include "bilo_nn.h"
#include "bilo_tensor.h"
#include "tap.h"

#define N 3
static const double P0[N] = {1.0, -2.0, 0.5};
static const double G1[N] = {0.5, 0.25, -1.0};
static const double G2[N] = {-0.3, 0.75, 2.0};

/* Reference: two steps of the documented update on plain doubles, element by element, from
   p0 with gradients g1 then g2. */
static void reference_two_steps(const bilo_optim_opts *o, int n, const double *p0,
                                const double *g1, const double *g2, double *p)
{
    double lr = o->lr, mu = o->momentum, wd = o->weight_decay;
    double b1 = o->beta1 ? o->beta1 : 0.9, b2 = o->beta2 ? o->beta2 : 0.999;
    double eps = o->eps ? o->eps : 1e-8;
    if (o->kind == BILO_OPTIM_ADAMW && wd == 0) wd = 1e-2;
    for (int i = 0; i < n; i++) {
        double x = p0[i], buf = 0, m = 0, v = 0;
        for (int t = 1; t <= 2; t++) {
            double g = t == 1 ? g1[i] : g2[i];
            if (o->kind == BILO_OPTIM_SGD) {
                g += wd * x;
                buf = mu * buf + g;
                double d = mu == 0 ? g : o->nesterov ? g + mu * buf : buf;
                x -= lr * d;
            } else {
                if (o->kind == BILO_OPTIM_ADAMW) x -= lr * wd * x;
                else g += wd * x;
                m = b1 * m + (1 - b1) * g;
                v = b2 * v + (1 - b2) * g * g;
                double mhat = m / (1 - pow(b1, t)), vhat = v / (1 - pow(b2, t));
                x -= lr * mhat / (sqrt(vhat) + eps);
            }
        }
        p[i] = x;
    }
}

static bilo_tensor *vec(const double *v) { return bilo_from_data(BILO_F64, BILO_SHAPE(N), v); }

/* Two in-place steps and two differentiable steps, both against the reference. */
static void check_optimizer(const char *name, bilo_optim_opts o)
{
    double want[N];
    reference_two_steps(&o, N, P0, G1, G2, want);
    bilo_scope_begin();
    bilo_tensor *p = vec(P0), *g1 = vec(G1), *g2 = vec(G2);
    bilo_optim *opt = bilo_optim_new(&o, &p, 1);
    bilo_no_grad_begin();
    int rc = bilo_optim_step(opt, &g1);
    rc |= bilo_optim_step(opt, &g2);
    bilo_no_grad_end();
    tap_ok(rc == 0 && bilo_optim_steps_done(opt) == 2, "%s: two in-place steps", name);
    double err = 0;
    for (int i = 0; i < N; i++) err = fmax(err, fabs(bilo_get_flat(p, i) - want[i]));
    tap_close(err, 0, 1e-15, 0, name);

    int per = bilo_optim_state_per_param(&o);
    bilo_tensor *q = vec(P0), *q1, *q2, *s1[2] = {0}, *s2[2] = {0};
    rc = bilo_optim_step_diff(&o, 1, &q, &g1, NULL, NULL, 1, &q1, s1);
    rc |= bilo_optim_step_diff(&o, 1, &q1, &g2, per ? s1 : NULL, NULL, 2, &q2, s2);
    double agree = 0;
    for (int i = 0; i < N; i++) {
        agree = fmax(agree, fabs(bilo_get_flat(q2, i) - bilo_get_flat(p, i)));
        for (int k = 0; k < per; k++)
            agree = fmax(agree, fabs(bilo_get_flat(s2[k], i) -
                                     bilo_get_flat(bilo_optim_state(opt, 0, k), i)));
    }
    tap_ok(rc == 0, "%s: two differentiable steps", name);
    tap_close(agree, 0, 1e-15, 0, "differentiable and in-place forms agree (params and state)");
    bilo_optim_free(opt);
    bilo_scope_end();
}

static void test_update_rules(void)
{
    /* One plain SGD step by hand: p - 0.1·g. */
    bilo_scope_begin();
    bilo_tensor *p = vec(P0), *g = vec(G1);
    bilo_optim *opt = bilo_optim_new(&(bilo_optim_opts){.lr = 0.1}, &p, 1);
    bilo_optim_step(opt, &g);
    tap_close(bilo_get_flat(p, 0), 0.95, 1e-15, 0, "sgd: 1 - 0.1*0.5");
    tap_close(bilo_get_flat(p, 1), -2.025, 1e-15, 0, "sgd: -2 - 0.1*0.25");
    tap_close(bilo_get_flat(p, 2), 0.6, 1e-15, 0, "sgd: 0.5 + 0.1*1");
    bilo_optim_free(opt);
    bilo_scope_end();

    check_optimizer("sgd", (bilo_optim_opts){.lr = 0.1});
    check_optimizer("sgd momentum", (bilo_optim_opts){.lr = 0.1, .momentum = 0.9});
    check_optimizer("sgd nesterov", (bilo_optim_opts){.lr = 0.1, .momentum = 0.9, .nesterov = true});
    check_optimizer("sgd weight decay",
                    (bilo_optim_opts){.lr = 0.05, .momentum = 0.5, .weight_decay = 0.1});
    check_optimizer("adam", (bilo_optim_opts){.kind = BILO_OPTIM_ADAM, .lr = 0.1});
    check_optimizer("adam L2", (bilo_optim_opts){.kind = BILO_OPTIM_ADAM, .lr = 0.01,
                                                 .weight_decay = 0.2, .beta1 = 0.8, .beta2 = 0.99});
    check_optimizer("adamw default decay", (bilo_optim_opts){.kind = BILO_OPTIM_ADAMW, .lr = 0.1});
    check_optimizer("adamw", (bilo_optim_opts){.kind = BILO_OPTIM_ADAMW, .lr = 0.1,
                                               .weight_decay = 0.3, .eps = 1e-6});

    /* Adam's first step moves every coordinate by lr·sign(g) (bias correction cancels). */
    bilo_scope_begin();
    p = vec(P0);
    g = vec(G1);
    opt = bilo_optim_new(&(bilo_optim_opts){.kind = BILO_OPTIM_ADAM, .lr = 0.1, .eps = 1e-300}, &p, 1);
    bilo_optim_step(opt, &g);
    tap_close(bilo_get_flat(p, 2), 0.6, 1e-15, 0, "adam: first step is lr·sign(g)");
    bilo_optim_free(opt);

    tap_ok(bilo_optim_new(&(bilo_optim_opts){.lr = -1}, &p, 1) == NULL &&
               strstr(bilo_last_error(), "lr") != NULL,
           "negative lr rejected: %s", bilo_last_error());
    tap_ok(bilo_optim_new(&(bilo_optim_opts){.nesterov = true}, &p, 1) == NULL,
           "nesterov without momentum rejected: %s", bilo_last_error());
    opt = bilo_optim_new(NULL, &p, 1);
    bilo_tensor *wrong = bilo_zeros(BILO_F64, BILO_SHAPE(2));
    tap_ok(bilo_optim_step(opt, &wrong) == BILO_ESHAPE, "gradient of another shape: %s",
           bilo_last_error());
    tap_close(bilo_optim_get_lr(opt), 1e-3, 0, 0, "default lr is 1e-3");
    bilo_optim_free(opt);
    bilo_scope_end();
}

/* f32 parameters are updated in f32 arithmetic by vectorized loops, split across threads:
   two steps on LONG elements (above the threading thresholds, not a multiple of any vector
   width) match the f64 reference to f32 rounding, and are bit-identical at 1 and 2 threads. */
enum { LONG = 262147 }; /* above 2^18, the threshold of the memory-bound SGD update */

static void two_f32_steps(const bilo_optim_opts *o, int threads, const double *p0,
                          const double *g1, const double *g2, float *out)
{
    bilo_set_num_threads(threads);
    bilo_scope_begin();
    bilo_tensor *p = bilo_from_data(BILO_F64, BILO_SHAPE(LONG), p0);
    bilo_tensor *g[2] = {bilo_from_data(BILO_F64, BILO_SHAPE(LONG), g1),
                         bilo_from_data(BILO_F64, BILO_SHAPE(LONG), g2)};
    p = bilo_cast(p, BILO_F32);
    for (int t = 0; t < 2; t++) g[t] = bilo_cast(g[t], BILO_F32);
    bilo_optim *opt = bilo_optim_new(o, &p, 1);
    int rc = bilo_optim_step(opt, &g[0]);
    rc |= bilo_optim_step(opt, &g[1]);
    tap_ok(rc == 0, "f32: two steps at %d thread(s)", threads);
    memcpy(out, bilo_data(p), LONG * sizeof *out);
    bilo_optim_free(opt);
    bilo_scope_end();
}

static void check_f32_optimizer(const char *name, bilo_optim_opts o)
{
    static double p0[LONG], g1[LONG], g2[LONG], want[LONG];
    static float one[LONG], two[LONG];
    /* Values exact in f32, so both sides start equal; gradients of either sign but at least
       0.25 in size, where Adam's m/√v is well conditioned (near-zero gradients would amplify
       f32 rounding far past the bound below). */
    for (int i = 0; i < LONG; i++) {
        const double sign = i % 3 ? 1 : -1;
        p0[i] = (float)sin(0.37 * i);
        g1[i] = (float)(sign * (0.5 + 0.25 * cos(1.3 * i)));
        g2[i] = (float)(-sign * (0.375 + 0.125 * sin(2.1 * i + 1)));
    }
    reference_two_steps(&o, LONG, p0, g1, g2, want);
    int saved = bilo_get_num_threads();
    two_f32_steps(&o, 1, p0, g1, g2, one);
    two_f32_steps(&o, 2, p0, g1, g2, two);
    bilo_set_num_threads(saved);
    double err = 0;
    for (int i = 0; i < LONG; i++) err = fmax(err, fabs(one[i] - want[i]));
    /* |p| <= 1.5 and each step adds a few f32 roundings of quantities of that size */
    char what[96];
    snprintf(what, sizeof what, "%s f32: matches the f64 reference to f32 rounding", name);
    tap_close(err, 0, 1e-6, 0, what);
    tap_ok(memcmp(one, two, sizeof one) == 0, "%s f32: bit-identical at 1 and 2 threads", name);
}

static void test_f32_updates(void)
{
    check_f32_optimizer("sgd", (bilo_optim_opts){.lr = 0.1, .weight_decay = 0.01});
    check_f32_optimizer("sgd momentum", (bilo_optim_opts){.lr = 0.1, .momentum = 0.9});
    check_f32_optimizer("sgd nesterov",
                        (bilo_optim_opts){.lr = 0.1, .momentum = 0.9, .nesterov = true});
    check_f32_optimizer("adam L2", (bilo_optim_opts){.kind = BILO_OPTIM_ADAM, .lr = 0.1,
                                                     .weight_decay = 0.2});
    check_f32_optimizer("adamw", (bilo_optim_opts){.kind = BILO_OPTIM_ADAMW, .lr = 0.1});
}

/* Quadratic f(p) = ½·Σ a_i p_i², gradient a∘p; SGD with momentum μ for 3 steps from P0. */
static const double QA[N] = {1.0, 3.0, 0.5};
#define MU 0.9

static double quadratic_after_3_steps(double lr)
{
    double f = 0;
    for (int i = 0; i < N; i++) {
        double x = P0[i], b = 0;
        for (int t = 0; t < 3; t++) {
            b = MU * b + QA[i] * x;
            x -= lr * b;
        }
        f += 0.5 * QA[i] * x * x;
    }
    return f;
}

static void test_unrolled_hypergradient(void)
{
    bilo_scope_begin();
    const double lr0 = 0.07;
    bilo_tensor *lr = bilo_scalar(BILO_F64, lr0), *a = vec(QA), *p = vec(P0), *b = NULL;
    bilo_set_requires_grad(lr, true);
    bilo_optim_opts o = {.lr = 1, .momentum = MU};
    int rc = 0;
    for (int t = 1; t <= 3; t++) {
        bilo_tensor *g = bilo_mul(a, p), *np, *nb;
        rc |= bilo_optim_step_diff(&o, 1, &p, &g, b ? &b : NULL, lr, t, &np, &nb);
        p = np;
        b = nb;
    }
    bilo_tensor *f = bilo_mul_scalar(bilo_sum(bilo_mul(a, bilo_square(p)), BILO_ALL_AXES, false), 0.5);
    bilo_tensor *dlr;
    rc |= bilo_grad(&f, 1, NULL, &lr, 1, &dlr, 0);
    tap_ok(rc == 0, "3 unrolled momentum steps differentiated w.r.t. lr");
    tap_close(bilo_item(f), quadratic_after_3_steps(lr0), 1e-14, 1e-13, "unrolled loss matches the loop");
    double h = 1e-5;
    double fd = (quadratic_after_3_steps(lr0 + h) - quadratic_after_3_steps(lr0 - h)) / (2 * h);
    tap_close(bilo_item(dlr), fd, 1e-8, 1e-7, "d loss / d lr vs central differences");
    bilo_scope_end();
}

/* AdamW, two steps with fixed gradients: d Σp / d lr through the decay and the Adam term. */
static double adamw_sum(double lr)
{
    double p[N];
    bilo_optim_opts o = {.kind = BILO_OPTIM_ADAMW, .lr = lr, .weight_decay = 0.3};
    reference_two_steps(&o, N, P0, G1, G2, p);
    return p[0] + p[1] + p[2];
}

static void test_adamw_lr_gradient(void)
{
    bilo_scope_begin();
    const double lr0 = 0.2;
    bilo_tensor *lr = bilo_scalar(BILO_F64, lr0), *p = vec(P0), *g[2] = {vec(G1), vec(G2)};
    bilo_set_requires_grad(lr, true);
    bilo_optim_opts o = {.kind = BILO_OPTIM_ADAMW, .lr = 1, .weight_decay = 0.3};
    bilo_tensor *st[2], *nst[2], *np, *dlr;
    int rc = bilo_optim_step_diff(&o, 1, &p, &g[0], NULL, lr, 1, &np, st);
    rc |= bilo_optim_step_diff(&o, 1, &np, &g[1], st, lr, 2, &p, nst);
    bilo_tensor *f = bilo_sum(p, BILO_ALL_AXES, false);
    rc |= bilo_grad(&f, 1, NULL, &lr, 1, &dlr, 0);
    double h = 1e-6, fd = (adamw_sum(lr0 + h) - adamw_sum(lr0 - h)) / (2 * h);
    tap_ok(rc == 0, "adamw: two differentiable steps w.r.t. a tensor lr");
    tap_close(bilo_item(dlr), fd, 1e-8, 1e-7, "adamw: d sum(p) / d lr vs central differences");
    bilo_scope_end();
}

static void test_schedules(void)
{
    bilo_lr_schedule c = {.lr = 0.5};
    tap_close(bilo_lr_at(&c, 1000), 0.5, 0, 0, "constant");
    bilo_lr_schedule s = {.kind = BILO_LR_STEP, .lr = 1, .step_size = 3, .gamma = 0.5};
    tap_close(bilo_lr_at(&s, 2), 1, 0, 0, "step: before the first drop");
    tap_close(bilo_lr_at(&s, 3), 0.5, 0, 0, "step: first drop at step 3");
    tap_close(bilo_lr_at(&s, 7), 0.25, 0, 0, "step: two drops at step 7");
    s.gamma = 0;
    tap_close(bilo_lr_at(&s, 6), 0.01, 1e-17, 0, "step: default gamma 0.1");
    bilo_lr_schedule k = {.kind = BILO_LR_COSINE, .lr = 1, .total_steps = 10, .min_lr = 0.1};
    tap_close(bilo_lr_at(&k, 0), 1, 1e-15, 0, "cosine: starts at lr");
    tap_close(bilo_lr_at(&k, 5), 0.55, 1e-15, 0, "cosine: midpoint is the mean");
    tap_close(bilo_lr_at(&k, 10), 0.1, 1e-15, 0, "cosine: ends at min_lr");
    tap_close(bilo_lr_at(&k, 25), 0.1, 1e-15, 0, "cosine: stays at min_lr");
    tap_close(bilo_lr_at(&k, 2), 0.1 + 0.9 * (1 + cos(M_PI / 5)) / 2, 1e-15, 0, "cosine: step 2");
    s.step_size = 0;
    tap_ok(isnan(bilo_lr_at(&s, 1)) && bilo_errcode() == BILO_EINVAL, "step_size 0 rejected: %s",
           bilo_last_error());
}

/* Allocator hooks counting calls into the system allocator (as in test_core.c). */
static size_t hook_mallocs;
static void *count_malloc(size_t n) { hook_mallocs++; return malloc(n); }
static void *count_realloc(void *p, size_t n) { hook_mallocs++; return realloc(p, n); }
static void *count_calloc(size_t c, size_t n) { hook_mallocs++; return calloc(c, n); }
static void count_free(void *p) { free(p); }

/* Runs first, while no bilo memory is alive. */
static void test_step_allocates_nothing(void)
{
    tap_ok(bilo_set_allocator(&(bilo_allocator){count_malloc, count_realloc, count_calloc,
                                                count_free}) == 0,
           "counting hooks installed");
    size_t before_new = hook_mallocs;
    bilo_tensor *w = bilo_ones(BILO_F64, BILO_SHAPE(3));
    bilo_optim_free(bilo_optim_new(&(bilo_optim_opts){.kind = BILO_OPTIM_ADAM}, &w, 1));
    bilo_release(w);
    tap_ok(hook_mallocs > before_new, "optimizer objects come from the installed hooks");
    bilo_rng rng = bilo_rng_make(3, 0);
    const bilo_optim_kind kinds[] = {BILO_OPTIM_SGD, BILO_OPTIM_ADAM, BILO_OPTIM_ADAMW};
    for (int k = 0; k < 3; k++) {
        bilo_tensor *p[2] = {bilo_randn(BILO_F32, BILO_SHAPE(64, 33), &rng),
                             bilo_randn(BILO_F64, BILO_SHAPE(100), &rng)};
        bilo_tensor *g[2] = {bilo_randn(BILO_F32, BILO_SHAPE(64, 33), &rng),
                             bilo_randn(BILO_F64, BILO_SHAPE(100), &rng)};
        bilo_optim *opt = bilo_optim_new(
            &(bilo_optim_opts){.kind = kinds[k], .lr = 0.01, .momentum = k == 0 ? 0.9 : 0}, p, 2);
        bilo_no_grad_begin();
        bilo_optim_step(opt, g);
        size_t after_first = hook_mallocs;
        for (int t = 0; t < 20; t++) bilo_optim_step(opt, g);
        bilo_no_grad_end();
        tap_ok(hook_mallocs == after_first, "kind %d: 20 more steps, no system allocation (%zu, %zu)",
               k, after_first, hook_mallocs);
        for (int i = 0; i < 2; i++) {
            bilo_release(p[i]);
            bilo_release(g[i]);
        }
        tap_ok(bilo_set_allocator(NULL) == BILO_ESTATE,
               "kind %d: the hooks stay while an optimizer holds memory from them", k);
        bilo_optim_free(opt);
    }
    bilo_mem_trim();
    tap_ok(bilo_set_allocator(NULL) == 0, "default allocator restored");
}

static double act_ref(bilo_mlp_act act, double z)
{
    if (act == BILO_MLP_TANH) return tanh(z);
    if (act == BILO_MLP_SIGMOID) return 1 / (1 + exp(-z));
    return z > 0 ? z : 0;
}

static void test_mlp(void)
{
    bilo_scope_begin();
    const int64_t widths[] = {3, 4, 2};
    const bilo_mlp_act acts[] = {BILO_MLP_RELU, BILO_MLP_TANH, BILO_MLP_SIGMOID};
    for (int a = 0; a < 3; a++) {
        bilo_nn_mlp m = {.widths = widths, .num_widths = 3, .act = acts[a], .dtype = BILO_F64};
        tap_ok(bilo_nn_mlp_num_tensors(&m) == 4 && bilo_nn_mlp_num_params(&m) == 4 * 4 + 5 * 2,
               "act %d: 4 tensors, 26 parameters", a);
        bilo_rng rng = bilo_rng_make(11, (uint64_t)a);
        bilo_tensor *params[4];
        tap_ok(bilo_nn_mlp_init(&m, &rng, params) == 0, "act %d: init", a);
        double bound1 = a == 0 ? sqrt(6.0 / 3) : (a == 1 ? 5.0 / 3 : 1.0) * sqrt(6.0 / 7);
        double wmax = 0, bmax = 0;
        for (int i = 0; i < 12; i++) wmax = fmax(wmax, fabs(bilo_get_flat(params[0], i)));
        for (int i = 0; i < 4; i++) bmax = fmax(bmax, fabs(bilo_get_flat(params[1], i)));
        tap_ok(wmax > 0 && wmax <= bound1 && bmax == 0, "act %d: |W1| <= %g, b1 = 0", a, bound1);
        /* non-zero biases so the hand loop checks their use */
        bilo_fill_(params[1], 0.1);
        bilo_fill_(params[3], -0.2);
        bilo_tensor *x = bilo_randn(BILO_F64, BILO_SHAPE(5, 3), &rng);
        bilo_tensor *y = bilo_nn_mlp_forward(&m, params, x);
        double err = y ? 0 : INFINITY;
        for (int r = 0; y && r < 5; r++) {
            double h[4];
            for (int j = 0; j < 4; j++) {
                double z = bilo_get_flat(params[1], j);
                for (int i = 0; i < 3; i++)
                    z += bilo_get_flat(x, r * 3 + i) * bilo_get_flat(params[0], i * 4 + j);
                h[j] = act_ref(acts[a], z);
            }
            for (int k = 0; k < 2; k++) {
                double z = bilo_get_flat(params[3], k);
                for (int j = 0; j < 4; j++) z += h[j] * bilo_get_flat(params[2], j * 2 + k);
                err = fmax(err, fabs(bilo_get_flat(y, r * 2 + k) - z));
            }
        }
        tap_close(err, 0, 1e-14, 0, "mlp forward vs hand loop");
    }
    bilo_nn_mlp bad = {.widths = widths, .num_widths = 1};
    tap_ok(bilo_nn_mlp_num_params(&bad) == BILO_EINVAL, "one width rejected: %s", bilo_last_error());
    bilo_scope_end();
}

static int count_tmp_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

static void write_bytes(const char *path, const unsigned char *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    unsigned char *buf = malloc(*n);
    *n = fread(buf, 1, *n, f);
    fclose(f);
    return buf;
}

/* Load must fail with code, naming the file and containing what. */
static void expect_load_error(const char *path, bilo_tensor *const *params, int n, int code,
                              const char *what, const char *name)
{
    int rc = bilo_load_params(path, params, n);
    const char *msg = bilo_last_error();
    tap_ok(rc == code && strstr(msg, path) && strstr(msg, "byte") && strstr(msg, what),
           "%s: %s", name, msg);
}

static void test_param_files(void)
{
    char dir[] = "/tmp/bilo_nno_XXXXXX";
    if (!mkdtemp(dir)) {
        tap_ok(0, "mkdtemp");
        return;
    }
    char path[256], other[256];
    snprintf(path, sizeof path, "%s/params.bin", dir);
    snprintf(other, sizeof other, "%s/other.bin", dir);
    bilo_scope_begin();
    bilo_rng rng = bilo_rng_make(5, 1);
    bilo_tensor *saved[3] = {bilo_randn(BILO_F32, BILO_SHAPE(3, 4), &rng),
                             bilo_randn(BILO_F64, BILO_SHAPE(5), &rng),
                             bilo_randn(BILO_F64, BILO_SHAPE(2, 1, 3), &rng)};
    bilo_tensor *loaded[3] = {bilo_zeros(BILO_F32, BILO_SHAPE(3, 4)),
                              bilo_zeros(BILO_F64, BILO_SHAPE(5)),
                              bilo_zeros(BILO_F64, BILO_SHAPE(2, 1, 3))};
    tap_ok(bilo_save_params(path, saved, 3) == 0, "save 3 tensors");
    tap_ok(bilo_load_params(path, loaded, 3) == 0, "load them back");
    bool exact = true;
    for (int i = 0; i < 3; i++)
        exact = exact && memcmp(bilo_data(saved[i]), bilo_data(loaded[i]),
                                (size_t)bilo_numel(saved[i]) * bilo_dtype_size(bilo_dtype_of(saved[i]))) == 0;
    tap_ok(exact, "round trip is bit-exact");
    size_t size;
    unsigned char *good = read_bytes(path, &size);
    tap_ok(size == 16 + (8 + 16) + (8 + 8) + (8 + 24) + 12 * 4 + 5 * 8 + 6 * 8 + 4,
           "file size is header + data + crc (%zu bytes)", size);

    write_bytes(other, good, size - 7);
    expect_load_error(other, loaded, 3, BILO_EFORMAT, "truncated", "truncated data");
    write_bytes(other, good, 20);
    expect_load_error(other, loaded, 3, BILO_EFORMAT, "truncated", "truncated header");
    write_bytes(other, (const unsigned char *)"P6\n3 4\n255\nnot a parameter file", 30);
    expect_load_error(other, loaded, 3, BILO_EFORMAT, "not a bilo parameter file", "foreign file");
    unsigned char *bad = malloc(size);
    memcpy(bad, good, size);
    bad[size - 20] ^= 0x10;
    write_bytes(other, bad, size);
    expect_load_error(other, loaded, 3, BILO_EFORMAT, "checksum", "flipped data byte");
    free(bad);
    bilo_fill_(loaded[1], 7);
    bilo_tensor *mismatch[3] = {loaded[0], loaded[1], bilo_zeros(BILO_F64, BILO_SHAPE(3, 2))};
    expect_load_error(path, mismatch, 3, BILO_ESHAPE, "shape [2,1,3], expected [3,2]",
                      "shape mismatch");
    tap_close(bilo_get_flat(loaded[1], 0), 7, 0, 0, "a rejected file writes nothing");
    expect_load_error(path, loaded, 2, BILO_ESHAPE, "3 tensors, expected 2", "count mismatch");
    snprintf(other, sizeof other, "%s/missing.bin", dir);
    tap_ok(bilo_load_params(other, loaded, 3) == BILO_EIO && strstr(bilo_last_error(), other),
           "missing file: %s", bilo_last_error());

    /* Saving over a directory fails at the rename: the directory stays, no temp file left. */
    snprintf(other, sizeof other, "%s/sub", dir);
    mkdir(other, 0700);
    tap_ok(bilo_save_params(other, saved, 3) == BILO_EIO, "save over a directory fails: %s",
           bilo_last_error());
    struct stat st;
    tap_ok(stat(other, &st) == 0 && S_ISDIR(st.st_mode) && count_tmp_files(dir) == 0,
           "the old entry survives and no temp file is left");
    snprintf(other, sizeof other, "%s/no/such/dir/p.bin", dir);
    tap_ok(bilo_save_params(other, saved, 3) == BILO_EIO && strstr(bilo_last_error(), other),
           "save into a missing directory: %s", bilo_last_error());
    size_t after;
    unsigned char *again = read_bytes(path, &after);
    tap_ok(after == size && memcmp(again, good, size) == 0, "the saved file is unchanged");
    free(again);
    free(good);
    bilo_scope_end();

    snprintf(other, sizeof other, "%s/sub", dir);
    rmdir(other);
    unlink(path);
    snprintf(other, sizeof other, "%s/other.bin", dir);
    unlink(other);
    rmdir(dir);
}

int main(void)
{
    test_step_allocates_nothing();
    test_update_rules();
    test_f32_updates();
    test_unrolled_hypergradient();
    test_adamw_lr_gradient();
    test_schedules();
    test_mlp();
    test_param_files();
    return tap_done();
}
