/* Every hypergradient estimator on one random quadratic bilevel problem with a closed form:
 *   g(x, y) = ½ yᵀAy − yᵀBx − cᵀy,   f(x, y) = ½‖y − y₀‖² + ½‖x‖² + eᵀx,
 *   y*(x) = A⁻¹(Bx + c),   ∇Φ(x) = x + e + BᵀA⁻¹(y*(x) − y₀),
 * with A = I + MᵀM/n (spectrum in about [1, 5]). Each estimator does one outer step from
 * y = 0 (its inner solve included); the table gives its hypergradient's relative error
 * against the closed form and the step's cost.
 *
 * usage: quadratic [dim (20)] [seed (1)]   — x and y both have dim entries. */
#include <bilo.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Inner GD step and NS/FP step 0.3 contract by max(1 − 0.3·1, |1 − 0.3·5|) = 0.7 per step. */
static const struct {
    const char *name, *options;
} methods[] = {
    {"exact", "T=100,lr=0.3,reset=1"},
    {"itd", "T=100,lr=0.3,reset=1"},
    {"aid-cg", "T=100,lr=0.3,reset=1,K=%d"},
    {"aid-ns", "T=100,lr=0.3,reset=1,K=100,eta=0.3"},
    {"aid-fp", "T=100,lr=0.3,reset=1,K=100,eta=0.3"},
};

typedef struct {
    int n;
    bilo_tensor *A, *B, *c, *y0, *e;
} quadratic;

static bilo_tensor *mat_vec(bilo_tensor *m, bilo_tensor *v)
{
    return bilo_flatten(bilo_matmul(m, bilo_reshape(v, BILO_SHAPE(bilo_numel(v), 1))));
}

static bilo_tensor *lower(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                          void *user)
{
    (void)b;
    const quadratic *q = user;
    bilo_tensor *half_yAy = bilo_mul_scalar(bilo_dot(y[0], mat_vec(q->A, y[0])), 0.5);
    return bilo_sub(bilo_sub(half_yAy, bilo_dot(y[0], mat_vec(q->B, x[0]))),
                    bilo_dot(q->c, y[0]));
}

static bilo_tensor *upper(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                          void *user)
{
    (void)b;
    const quadratic *q = user;
    bilo_tensor *d = bilo_sub(y[0], q->y0);
    bilo_tensor *squares = bilo_add(bilo_dot(d, d), bilo_dot(x[0], x[0]));
    return bilo_add(bilo_mul_scalar(squares, 0.5), bilo_dot(q->e, x[0]));
}

static quadratic make_quadratic(int n, uint64_t seed)
{
    bilo_rng rng = bilo_rng_make(seed, 0);
    quadratic q = {.n = n};
    bilo_scope_begin();
    bilo_tensor *M = bilo_randn(BILO_F64, BILO_SHAPE(n, n), &rng);
    bilo_tensor *MtM = bilo_mul_scalar(bilo_matmul_t(M, M, true, false), 1.0 / n);
    q.A = bilo_keep(bilo_add(MtM, bilo_eye(BILO_F64, n)));
    q.B = bilo_keep(bilo_mul_scalar(bilo_randn(BILO_F64, BILO_SHAPE(n, n), &rng), 1 / sqrt(n)));
    q.c = bilo_keep(bilo_randn(BILO_F64, BILO_SHAPE(n), &rng));
    q.y0 = bilo_keep(bilo_randn(BILO_F64, BILO_SHAPE(n), &rng));
    q.e = bilo_keep(bilo_randn(BILO_F64, BILO_SHAPE(n), &rng));
    bilo_scope_end();
    return q;
}

static void free_quadratic(quadratic *q)
{
    bilo_tensor *ts[] = {q->A, q->B, q->c, q->y0, q->e};
    for (int i = 0; i < 5; i++) bilo_release(ts[i]);
}

/* A⁻¹ r in plain doubles: Cholesky of the SPD matrix a (n×n, overwritten). */
static void cholesky_solve(double *a, int n, double *r)
{
    for (int j = 0; j < n; j++) {
        for (int k = 0; k < j; k++)
            for (int i = j; i < n; i++) a[i * n + j] -= a[i * n + k] * a[j * n + k];
        double d = sqrt(a[j * n + j]);
        for (int i = j; i < n; i++) a[i * n + j] /= d;
    }
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < i; k++) r[i] -= a[i * n + k] * r[k];
        r[i] /= a[i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) {
        for (int k = i + 1; k < n; k++) r[i] -= a[k * n + i] * r[k];
        r[i] /= a[i * n + i];
    }
}

static void solve_A(const quadratic *q, double *r)
{
    int n = q->n;
    double *a = malloc((size_t)n * (size_t)n * sizeof *a);
    for (int64_t i = 0; i < (int64_t)n * n; i++) a[i] = bilo_get_flat(q->A, i);
    cholesky_solve(a, n, r);
    free(a);
}

/* ∇Φ(x) from the closed form. */
static void closed_form(const quadratic *q, const double *x, double *grad)
{
    int n = q->n;
    double *r = malloc((size_t)n * sizeof *r);
    for (int i = 0; i < n; i++) {
        r[i] = bilo_get_flat(q->c, i);
        for (int j = 0; j < n; j++) r[i] += bilo_get_flat(q->B, (int64_t)i * n + j) * x[j];
    }
    solve_A(q, r); /* y* */
    for (int i = 0; i < n; i++) r[i] -= bilo_get_flat(q->y0, i);
    solve_A(q, r); /* A⁻¹(y* − y₀) */
    for (int j = 0; j < n; j++) {
        grad[j] = x[j] + bilo_get_flat(q->e, j);
        for (int i = 0; i < n; i++) grad[j] += bilo_get_flat(q->B, (int64_t)i * n + j) * r[i];
    }
    free(r);
}

/* One step of `name` from (x, 0). An outer SGD step of lr 1 moves x by exactly −∇Φ, so the
   hypergradient the step used is x_before − x_after. Returns the relative error, or -1. */
static double run_method(quadratic *q, const char *name, const char *options, const double *x0,
                         const double *want, bilo_cost *cost)
{
    int n = q->n;
    bilo_tensor *x = bilo_from_data(BILO_F64, BILO_SHAPE(n), x0);
    bilo_tensor *y = bilo_zeros(BILO_F64, BILO_SHAPE(n));
    bilo_problem p = {.x = &x, .n_x = 1, .y = &y, .n_y = 1, .lower = lower, .upper = upper,
                      .user = q};
    bilo_estimator *e = bilo_estimator_new(name, &p, options);
    bilo_optim *outer = bilo_optim_new(&(bilo_optim_opts){.lr = 1.0}, &x, 1);
    double err = -1;
    if (e && outer && bilo_estimator_step(e, outer) == 0) {
        double num = 0, den = 0;
        for (int j = 0; j < n; j++) {
            double got = x0[j] - bilo_get_flat(x, j);
            num += (got - want[j]) * (got - want[j]);
            den += want[j] * want[j];
        }
        err = sqrt(num / den);
        bilo_estimator_report(e, cost, NULL);
    }
    if (err < 0) fprintf(stderr, "quadratic: %s failed: %s\n", name, bilo_last_error());
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    bilo_release(x);
    bilo_release(y);
    return err;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    if (n < 1) {
        fprintf(stderr, "usage: quadratic [dim >= 1] [seed]\n");
        return 2;
    }
    quadratic q = make_quadratic(n, seed);
    double *x0 = malloc(2 * (size_t)n * sizeof *x0), *want = x0 + n;
    for (int j = 0; j < n; j++) x0[j] = sin(1.0 + j);
    closed_form(&q, x0, want);

    printf("random quadratic bilevel problem, dim x = dim y = %d, seed %llu, f64\n", n,
           (unsigned long long)seed);
    printf("%-7s %-36s %9s %7s %7s %6s %6s %9s %11s\n", "method", "options", "rel err",
           "f grads", "g grads", "HVPs", "inner", "ms", "peak bytes");
    int failed = 0;
    for (size_t m = 0; m < sizeof methods / sizeof *methods; m++) {
        char options[128];
        snprintf(options, sizeof options, methods[m].options, n); /* CG: K = dim */
        bilo_cost c = {0};
        double err = run_method(&q, methods[m].name, options, x0, want, &c);
        failed += err < 0;
        printf("%-7s %-36s %9.2e %7lld %7lld %6lld %6lld %9.3f %11zu\n", methods[m].name,
               options, err, (long long)c.f_grads, (long long)c.g_grads, (long long)c.hvps,
               (long long)c.inner_iters, c.seconds * 1e3, c.peak_bytes);
    }
    free(x0);
    free_quadratic(&q);
    return failed ? 1 : 0;
}
