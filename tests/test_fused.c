/* Fused bias + activation (bilo_bias_act, bilo_nn_linear_act, the MLP's hidden layers):
   forward against an f64 reference and bit for bit against the unfused act(add(x, b)),
   gradcheck and gradgradcheck in f64, every error path, 1 vs 2 threads, the memory the graph
   keeps, and an MLP's outputs, gradients and HVPs against the unfused composition. */
#include "bilo.h"
#include "checks.h"
#include "tap.h"

#include <math.h>
#include <string.h>

static const bilo_act acts[] = {BILO_ACT_RELU, BILO_ACT_TANH, BILO_ACT_SIGMOID, BILO_ACT_NONE};
static const char *act_names[] = {"relu", "tanh", "sigmoid", "none"};
#define N_ACTS 4

static double act_ref(bilo_act act, double z)
{
    switch (act) {
    case BILO_ACT_RELU: return z > 0 ? z : 0;
    case BILO_ACT_TANH: return tanh(z);
    case BILO_ACT_SIGMOID: return 1 / (1 + exp(-z));
    default: return z;
    }
}

/* The unfused composition the fused op replaces. */
static bilo_tensor *act_unfused(bilo_tensor *z, bilo_act act)
{
    switch (act) {
    case BILO_ACT_RELU: return bilo_relu(z);
    case BILO_ACT_TANH: return bilo_tanh(z);
    case BILO_ACT_SIGMOID: return bilo_sigmoid(z);
    default: return z;
    }
}

static bilo_tensor *randn_scaled(bilo_dtype dtype, int ndim, const int64_t *shape, double scale,
                                 bilo_rng *rng)
{
    return bilo_mul_scalar(bilo_randn(dtype, ndim, shape, rng), scale);
}

static bool same_bits(bilo_tensor *a, bilo_tensor *b)
{
    return a && b && bilo_numel(a) == bilo_numel(b) && bilo_dtype_of(a) == bilo_dtype_of(b) &&
           !memcmp(bilo_data(a), bilo_data(b),
                   (size_t)bilo_numel(a) * bilo_dtype_size(bilo_dtype_of(a)));
}

/* Largest |y - ref| / max(|ref|, 1e-30) over y = act(x + b), with ref computed in double from
   the sum rounded to the dtype (as the op rounds it). */
static double worst_rel_error(bilo_tensor *y, bilo_tensor *x, bilo_tensor *b, bilo_act act)
{
    int64_t cols = bilo_numel(b), n = bilo_numel(x);
    bool f32 = bilo_dtype_of(x) == BILO_F32;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double z = bilo_get_flat(x, i) + bilo_get_flat(b, i % cols);
        if (f32) z = (float)z;
        double ref = act_ref(act, z);
        worst = fmax(worst, fabs(bilo_get_flat(y, i) - ref) / fmax(fabs(ref), 1e-30));
    }
    return worst;
}

/* ---- forward ---- */

static void test_forward(void)
{
    /* rows of odd widths (vector tails), a 3-D batch, a 1-D x, a width of 1, rows wider than
       a work item, no rows */
    static const struct {
        int ndim;
        int64_t shape[3];
    } shapes[] = {{2, {7, 13}}, {3, {2, 3, 37}}, {1, {19}},
                  {2, {5, 1}},  {2, {3, 2501}},  {2, {0, 4}}};
    /* f32: tanh is SLEEF's 3.5-ulp tanh; f64: 1-ulp SLEEF functions and sigmoid's few roundings */
    static const double tol[2] = {6e-7, 2e-15};
    bilo_rng rng = bilo_rng_make(31, 0);
    for (int d = 0; d < 2; d++) {
        bilo_dtype dtype = d ? BILO_F64 : BILO_F32;
        for (int a = 0; a < N_ACTS; a++) {
            double worst = 0;
            bool bitwise = true;
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
                bilo_scope_begin();
                int nd = shapes[s].ndim;
                const int64_t *shape = shapes[s].shape;
                bilo_tensor *x = randn_scaled(dtype, nd, shape, 3.0, &rng);
                bilo_tensor *b = randn_scaled(dtype, 1, shape + nd - 1, 3.0, &rng);
                bilo_tensor *y = bilo_bias_act(x, b, acts[a]);
                worst = y ? fmax(worst, worst_rel_error(y, x, b, acts[a])) : INFINITY;
                bitwise = bitwise && same_bits(y, act_unfused(bilo_add(x, b), acts[a]));
                bilo_scope_end();
            }
            tap_ok(worst <= tol[d], "%s %s: act(x + b) vs f64 reference (worst rel %.3g <= %.0e)",
                   bilo_dtype_name(dtype), act_names[a], worst, tol[d]);
            tap_ok(bitwise, "%s %s: bit for bit the unfused act(bilo_add(x, b)) on %s kernels",
                   bilo_dtype_name(dtype), act_names[a], bilo_kernel_isa());
        }
    }
}

/* ---- derivatives ---- */

static bilo_act case_act;

static bilo_tensor *fn_bias_act(bilo_tensor *const *in, void *user)
{
    (void)user;
    return bilo_bias_act(in[0], in[1], case_act);
}

static bilo_tensor *fn_linear_act(bilo_tensor *const *in, void *user)
{
    (void)user;
    return bilo_nn_linear_act(in[0], in[1], in[2], case_act);
}

static bilo_tensor *fn_linear_act_no_bias(bilo_tensor *const *in, void *user)
{
    (void)user;
    return bilo_nn_linear_act(in[0], in[1], NULL, case_act);
}

static bilo_tensor *leaf(bilo_tensor *t)
{
    bilo_set_requires_grad(t, true);
    return t;
}

/* f64 inputs of x·W + b whose entries all lie at least 0.14 away from relu's kink: |x·W| is
   at most 4·0.3·0.3 = 0.36 and every bias is ±0.5. */
static void linear_inputs(bilo_rng *rng, bilo_tensor **x, bilo_tensor **W, bilo_tensor **b)
{
    *x = leaf(bilo_add_scalar(bilo_mul_scalar(bilo_rand(BILO_F64, BILO_SHAPE(3, 4), rng), 0.6),
                              -0.3));
    *W = leaf(bilo_add_scalar(bilo_mul_scalar(bilo_rand(BILO_F64, BILO_SHAPE(4, 5), rng), 0.6),
                              -0.3));
    *b = leaf(bilo_from_data(BILO_F64, BILO_SHAPE(5), (double[]){0.5, -0.5, 0.5, -0.5, 0.5}));
}

static void test_derivatives(void)
{
    bilo_rng rng = bilo_rng_make(32, 0);
    for (int a = 0; a < N_ACTS; a++) {
        bilo_scope_begin();
        case_act = acts[a];
        bilo_tensor *x, *W, *b;
        linear_inputs(&rng, &x, &W, &b);
        char name[64];
        snprintf(name, sizeof name, "bias_act %s [3,5] + [5]", act_names[a]);
        bilo_tensor *z = leaf(bilo_detach(bilo_matmul(x, W)));
        check_derivatives(name, fn_bias_act, (bilo_tensor *[]){z, b}, 2, NULL);
        snprintf(name, sizeof name, "linear_act %s", act_names[a]);
        check_derivatives(name, fn_linear_act, (bilo_tensor *[]){x, W, b}, 3, NULL);
        snprintf(name, sizeof name, "linear_act %s without bias", act_names[a]);
        /* x in [0.7, 1.3] and W in [0.2, 0.8]: x·W >= 0.56, off relu's kink */
        bilo_tensor *x_pos = leaf(bilo_add_scalar(bilo_detach(x), 1.0));
        bilo_tensor *W_pos = leaf(bilo_add_scalar(bilo_detach(W), 0.5));
        check_derivatives(name, fn_linear_act_no_bias, (bilo_tensor *[]){x_pos, W_pos}, 2, NULL);
        bilo_scope_end();
    }
}

/* ---- errors ---- */

static void test_errors(void)
{
    bilo_scope_begin();
    bilo_tensor *x = bilo_zeros(BILO_F32, BILO_SHAPE(3, 4));
    bilo_tensor *b4 = bilo_zeros(BILO_F32, BILO_SHAPE(4));
    check_error(!bilo_bias_act(x, bilo_zeros(BILO_F32, BILO_SHAPE(5)), BILO_ACT_TANH), BILO_ESHAPE,
                "bilo_bias_act: bias [5] does not match the last axis of x [3,4]",
                "bias_act: bias width differs from x's last axis");
    check_error(!bilo_bias_act(x, bilo_zeros(BILO_F32, BILO_SHAPE(1, 4)), BILO_ACT_RELU),
                BILO_ESHAPE, "bilo_bias_act: bias [1,4] does not match", "bias_act: 2-D bias");
    check_error(!bilo_bias_act(bilo_scalar(BILO_F32, 1), bilo_zeros(BILO_F32, BILO_SHAPE(1)),
                               BILO_ACT_RELU),
                BILO_ESHAPE, "bilo_bias_act: bias [1] does not match the last axis of x []",
                "bias_act: 0-dimensional x");
    check_error(!bilo_bias_act(x, bilo_zeros(BILO_F64, BILO_SHAPE(4)), BILO_ACT_SIGMOID),
                BILO_EDTYPE, "bilo_bias_act: dtypes f32 and f64 differ",
                "bias_act: dtype mismatch");
    check_error(!bilo_bias_act(bilo_zeros(BILO_I64, BILO_SHAPE(3, 4)), b4, BILO_ACT_NONE),
                BILO_EDTYPE, "bilo_bias_act: expected an f32 or f64 tensor, got i64",
                "bias_act: integer x");
    check_error(!bilo_bias_act(x, b4, (bilo_act)7), BILO_EINVAL,
                "bilo_bias_act: unknown activation 7", "bias_act: activation 7");
    check_error(!bilo_bias_act(x, b4, (bilo_act)-1), BILO_EINVAL,
                "bilo_bias_act: unknown activation -1", "bias_act: activation -1");
    check_error(!bilo_nn_linear_act(x, bilo_zeros(BILO_F32, BILO_SHAPE(4, 2)), NULL, (bilo_act)9),
                BILO_EINVAL, "bilo_nn_linear_act: unknown activation 9",
                "linear_act: activation 9");
    check_error(!bilo_nn_linear_act(x, bilo_zeros(BILO_F32, BILO_SHAPE(4, 2)), b4, BILO_ACT_TANH),
                BILO_ESHAPE, "bilo_nn_linear_act: bias [4] does not fit weight [4,2]",
                "linear_act: bias does not fit W");
    bilo_clear_error();
    bool quiet = !bilo_bias_act(NULL, b4, BILO_ACT_RELU) &&
                 !bilo_bias_act(x, NULL, BILO_ACT_RELU) &&
                 !bilo_nn_linear_act(NULL, x, b4, BILO_ACT_RELU) &&
                 !bilo_nn_linear_act(x, NULL, b4, BILO_ACT_RELU);
    tap_ok(quiet && bilo_errcode() == 0, "NULL inputs give NULL without a new error");
    bilo_nn_mlp bad = {.widths = (const int64_t[]){2, 2}, .num_widths = 2, .act = (bilo_act)4};
    check_error(bilo_nn_mlp_num_tensors(&bad) < 0, BILO_EINVAL, "unknown activation 4",
                "mlp: activation 4 rejected");
    bilo_scope_end();
}

/* ---- threads ---- */

/* y = act(x + b) and the gradients of sum(y ⊙ r) w.r.t. x and b, at `threads` threads. */
static void run_at(int threads, bilo_act act, bilo_tensor *x, bilo_tensor *b, bilo_tensor *r,
                   bilo_tensor **out)
{
    bilo_set_num_threads(threads);
    bilo_tensor *y = bilo_bias_act(x, b, act);
    out[0] = y;
    if (bilo_grad(&y, 1, &r, (bilo_tensor *[]){x, b}, 2, out + 1, 0) < 0) out[1] = out[2] = NULL;
    bilo_set_num_threads(0);
}

static void test_threads(void)
{
    bilo_rng rng = bilo_rng_make(33, 0);
    for (int a = 0; a < N_ACTS - 1; a++) {
        bilo_scope_begin();
        /* 1100 x 257 = 282700 elements: above the parallel threshold of the cheapest (relu's
           2^18 elements), rows not lane multiples */
        bilo_tensor *x = leaf(randn_scaled(BILO_F32, BILO_SHAPE(1100, 257), 2.0, &rng));
        bilo_tensor *b = leaf(randn_scaled(BILO_F32, BILO_SHAPE(257), 2.0, &rng));
        bilo_tensor *r = bilo_randn(BILO_F32, BILO_SHAPE(1100, 257), &rng);
        bilo_tensor *one[3], *two[3];
        run_at(1, acts[a], x, b, r, one);
        run_at(2, acts[a], x, b, r, two);
        tap_ok(same_bits(one[0], two[0]) && same_bits(one[1], two[1]) && same_bits(one[2], two[2]),
               "%s: output and gradients bit-identical at 1 and 2 threads", act_names[a]);
        bilo_scope_end();
    }
}

/* ---- memory: the fused graph keeps the output only ---- */

static size_t live_bytes(void)
{
    bilo_mem_stats s;
    bilo_mem_get_stats(&s);
    return s.live_bytes;
}

/* Bytes a recorded act(x + b) keeps alive (its output and what its graph saved) once the
   temporaries are gone, fused or composed. */
static size_t kept_bytes(bilo_tensor *x, bilo_tensor *b, bilo_act act, bool fused)
{
    size_t before = live_bytes();
    bilo_scope_begin();
    bilo_tensor *y = bilo_keep(fused ? bilo_bias_act(x, b, act) : act_unfused(bilo_add(x, b), act));
    bilo_scope_end();
    size_t kept = live_bytes() - before;
    bilo_release(y);
    return kept;
}

static void test_memory(void)
{
    bilo_rng rng = bilo_rng_make(34, 0);
    bilo_tensor *x = leaf(bilo_randn(BILO_F32, BILO_SHAPE(64, 100), &rng));
    bilo_tensor *b = leaf(bilo_randn(BILO_F32, BILO_SHAPE(100), &rng));
    const size_t activations = 64 * 100 * sizeof(float);
    /* relu's own rule saves its input, so the composition keeps x + b as well */
    size_t fused = kept_bytes(x, b, BILO_ACT_RELU, true);
    size_t unfused = kept_bytes(x, b, BILO_ACT_RELU, false);
    tap_ok(fused >= activations && fused + activations <= unfused,
           "relu: the fused graph keeps %zu bytes, one activation tensor (%zu) less than the "
           "unfused %zu", fused, activations, unfused);
    for (int a = 1; a < N_ACTS - 1; a++) {
        fused = kept_bytes(x, b, acts[a], true);
        unfused = kept_bytes(x, b, acts[a], false);
        tap_ok(fused >= activations && fused <= unfused,
               "%s: the fused graph keeps %zu bytes, the unfused %zu", act_names[a], fused,
               unfused);
    }
    bilo_release(x);
    bilo_release(b);
}

/* ---- the MLP against the unfused composition ---- */

#define MLP_LAYERS 3
static const int64_t mlp_widths[MLP_LAYERS + 1] = {13, 33, 17, 5};

static bilo_tensor *mlp_unfused(bilo_act act, bilo_tensor *const *p, bilo_tensor *x)
{
    bilo_tensor *h = x;
    for (int l = 0; l < MLP_LAYERS; l++) {
        h = bilo_add(bilo_matmul(h, p[2 * l]), p[2 * l + 1]);
        if (l + 1 < MLP_LAYERS) h = act_unfused(h, act);
    }
    return h;
}

/* Largest |a - b| / (1 + |b|) over the elements of two tensors. */
static double rel_diff(bilo_tensor *a, bilo_tensor *b)
{
    if (!a || !b || bilo_numel(a) != bilo_numel(b)) return INFINITY;
    double worst = 0;
    for (int64_t i = 0; i < bilo_numel(a); i++)
        worst = fmax(worst, fabs(bilo_get_flat(a, i) - bilo_get_flat(b, i)) /
                                (1 + fabs(bilo_get_flat(b, i))));
    return worst;
}

/* Gradients of sum(out ⊙ r) w.r.t. the 6 parameters; worst rel_diff of the two sets. */
static double grads_diff(bilo_tensor *fused, bilo_tensor *unfused, bilo_tensor *r,
                         bilo_tensor *const *p)
{
    bilo_tensor *gf[2 * MLP_LAYERS], *gu[2 * MLP_LAYERS];
    if (bilo_grad(&fused, 1, &r, p, 2 * MLP_LAYERS, gf, 0) < 0 ||
        bilo_grad(&unfused, 1, &r, p, 2 * MLP_LAYERS, gu, 0) < 0)
        return INFINITY;
    double worst = 0;
    for (int i = 0; i < 2 * MLP_LAYERS; i++) worst = fmax(worst, rel_diff(gf[i], gu[i]));
    return worst;
}

static void test_mlp(void)
{
    static const double tol[2] = {1e-6, 1e-14};
    for (int d = 0; d < 2; d++) {
        bilo_dtype dtype = d ? BILO_F64 : BILO_F32;
        for (int a = 0; a < N_ACTS; a++) {
            bilo_scope_begin();
            bilo_nn_mlp m = {.widths = mlp_widths, .num_widths = MLP_LAYERS + 1, .act = acts[a],
                             .dtype = dtype};
            bilo_rng rng = bilo_rng_make(35, (uint64_t)a);
            bilo_tensor *p[2 * MLP_LAYERS];
            bilo_nn_mlp_init(&m, &rng, p);
            for (int l = 0; l < MLP_LAYERS; l++) /* non-zero biases */
                bilo_copy_(p[2 * l + 1], bilo_randn(dtype, BILO_SHAPE(mlp_widths[l + 1]), &rng));
            for (int i = 0; i < 2 * MLP_LAYERS; i++) leaf(p[i]);
            bilo_tensor *x = bilo_randn(dtype, BILO_SHAPE(11, 13), &rng);
            bilo_tensor *r = bilo_randn(dtype, BILO_SHAPE(11, 5), &rng);
            bilo_tensor *fused = bilo_nn_mlp_forward(&m, p, x);
            bilo_tensor *unfused = mlp_unfused(acts[a], p, x);
            tap_ok(rel_diff(fused, unfused) <= tol[d],
                   "mlp %s %s: outputs equal the unfused composition (rel %.3g)",
                   bilo_dtype_name(dtype), act_names[a], rel_diff(fused, unfused));
            double g = grads_diff(fused, unfused, r, p);
            tap_ok(g <= tol[d], "mlp %s %s: parameter gradients equal the unfused ones (rel %.3g)",
                   bilo_dtype_name(dtype), act_names[a], g);
            bilo_scope_end();
        }
    }
}

/* H·v of <mlp(x), r> w.r.t. the parameters, fused and unfused, for the tanh MLP in f64. */
static void test_mlp_hvp(void)
{
    bilo_scope_begin();
    bilo_nn_mlp m = {.widths = mlp_widths, .num_widths = MLP_LAYERS + 1, .act = BILO_ACT_TANH,
                     .dtype = BILO_F64};
    bilo_rng rng = bilo_rng_make(36, 0);
    bilo_tensor *p[2 * MLP_LAYERS], *v[2 * MLP_LAYERS];
    bilo_tensor *hv_f[2 * MLP_LAYERS], *hv_u[2 * MLP_LAYERS];
    bilo_nn_mlp_init(&m, &rng, p);
    for (int i = 0; i < 2 * MLP_LAYERS; i++) {
        leaf(p[i]);
        v[i] = bilo_randn(BILO_F64, bilo_ndim(p[i]), bilo_shape(p[i]), &rng);
    }
    bilo_tensor *x = bilo_randn(BILO_F64, BILO_SHAPE(11, 13), &rng);
    bilo_tensor *r = bilo_randn(BILO_F64, BILO_SHAPE(11, 5), &rng);
    bilo_tensor *f_fused = bilo_dot(bilo_nn_mlp_forward(&m, p, x), r);
    bilo_tensor *f_unfused = bilo_dot(mlp_unfused(BILO_ACT_TANH, p, x), r);
    int rc = bilo_hvp(f_fused, p, 2 * MLP_LAYERS, v, hv_f, 0) |
             bilo_hvp(f_unfused, p, 2 * MLP_LAYERS, v, hv_u, 0);
    double worst = rc ? INFINITY : 0, size = 0;
    for (int i = 0; !rc && i < 2 * MLP_LAYERS; i++) {
        worst = fmax(worst, rel_diff(hv_f[i], hv_u[i]));
        for (int64_t k = 0; k < bilo_numel(hv_u[i]); k++)
            size = fmax(size, fabs(bilo_get_flat(hv_u[i], k)));
    }
    tap_ok(worst <= 1e-13 && size > 1e-3, "tanh mlp f64: HVP equals the unfused one (rel %.3g, "
           "largest entry %.3g)", worst, size);
    bilo_scope_end();
}

int main(void)
{
    test_forward();
    test_derivatives();
    test_errors();
    test_threads();
    test_memory();
    test_mlp();
    test_mlp_hvp();
    bilo_mem_stats stats;
    bilo_mem_get_stats(&stats);
    tap_ok(stats.live_bytes == 0, "every tensor and node was freed (live bytes %zu)",
           stats.live_bytes);
    return tap_done();
}
