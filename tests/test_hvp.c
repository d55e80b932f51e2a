/* Second and third derivatives by double backprop, in f64, against closed forms written in
   this file: Hessian-vector products, dense Hessians and Jacobians, Jacobian-vector products,
   and the derivative of an HVP (third order). Closed forms are compared to 1e-10 relative
   (max |got - want| <= 1e-10 * max |want|); the MLP, which has no short closed form, is
   compared with a finite-difference Hessian of a plain C reference loss (step 1e-4,
   tolerance 1e-6 * (1 + |H|): the truncation error is O(h^2 f'''') ~ 1e-8, rounding
   ~ 1e-16 / h^2 ~ 1e-8). */
#include "bilo.h"
#include "tap.h"

#include <string.h>

static bilo_rng rng;

static double uniform(double lo, double hi) { return lo + (hi - lo) * bilo_rng_uniform(&rng); }

static bilo_tensor *random_matrix(int64_t rows, int64_t cols, double lo, double hi)
{
    bilo_tensor *t = bilo_empty(BILO_F64, BILO_SHAPE(rows, cols));
    double *p = bilo_data(t);
    for (int64_t i = 0; i < rows * cols; i++) p[i] = uniform(lo, hi);
    return t;
}

static bilo_tensor *random_leaf(int64_t rows, int64_t cols, double lo, double hi)
{
    bilo_tensor *t = random_matrix(rows, cols, lo, hi);
    bilo_set_requires_grad(t, true);
    return t;
}

static const double *D(bilo_tensor *t) { return bilo_data(t); }

/* max |got - want| <= tol * max |want| over n values (NULL got fails). */
static void check_rel(bilo_tensor *got, const double *want, int64_t n, double tol, const char *label)
{
    double worst = 0, scale = 0;
    bool ok = got && bilo_numel(got) == n;
    for (int64_t i = 0; ok && i < n; i++) {
        double d = fabs(D(got)[i] - want[i]);
        if (!(d <= worst)) worst = d;
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
    }
    ok = ok && worst <= tol * scale;
    tap_ok(ok, "%s", label);
    if (!ok) tap_diag("max |diff| %.3g, max |want| %.3g (tolerance %.1g relative)%s", worst, scale, tol,
                      got ? "" : ": got NULL");
}

/* want = H v for a dense n x n H. */
static void matvec(const double *H, const double *v, int64_t n, double *out)
{
    for (int64_t i = 0; i < n; i++) {
        out[i] = 0;
        for (int64_t j = 0; j < n; j++) out[i] += H[i * n + j] * v[j];
    }
}

/* Check bilo_hvp at x along a random v and bilo_hessian at x against the closed-form H. */
static void check_second_order(bilo_fn1 f, bilo_tensor *x, void *user, const double *H,
                               double tol, const char *name)
{
    int64_t n = bilo_numel(x);
    char label[160];
    bilo_scope_begin();
    bilo_tensor *v = random_matrix(bilo_shape(x)[0], bilo_ndim(x) > 1 ? bilo_shape(x)[1] : 1, -1, 1);
    v = bilo_reshape(v, bilo_ndim(x), bilo_shape(x));
    bilo_tensor *hv = NULL;
    int rc = bilo_hvp(f(x, user), &x, 1, &v, &hv, 0);
    double *want = malloc((size_t)n * sizeof *want);
    matvec(H, D(v), n, want);
    snprintf(label, sizeof label, "%s: hvp equals H v", name);
    check_rel(rc ? NULL : hv, want, n, tol, label);
    snprintf(label, sizeof label, "%s: bilo_hessian equals H", name);
    check_rel(bilo_hessian(f, x, user), H, n * n, tol, label);
    free(want);
    bilo_scope_end();
}

/* ---- 1/2 x^T A x ------------------------------------------------------------------------- */

static bilo_tensor *quadratic(bilo_tensor *x, void *user)
{
    bilo_tensor *A = user;
    return bilo_mul_scalar(bilo_dot(x, bilo_matmul(A, x)), 0.5);
}

static void test_quadratic(void)
{
    const int64_t n = 5;
    bilo_scope_begin();
    bilo_tensor *A = random_matrix(n, n, -1, 1), *x = random_leaf(n, 1, -1, 1);
    double H[25];
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) H[i * n + j] = 0.5 * (D(A)[i * n + j] + D(A)[j * n + i]);
    check_second_order(quadratic, x, A, H, 1e-10, "1/2 x^T A x (H = (A + A^T)/2)");
    bilo_scope_end();
}

/* ---- Rosenbrock ------------------------------------------------------------------------- */

/* sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2 */
static bilo_tensor *rosenbrock(bilo_tensor *x, void *user)
{
    (void)user;
    int64_t n = bilo_numel(x);
    bilo_tensor *a = bilo_slice(x, 0, 0, n - 1, 1), *b = bilo_slice(x, 0, 1, n, 1);
    bilo_tensor *t = bilo_add(bilo_mul_scalar(bilo_square(bilo_sub(b, bilo_square(a))), 100.0),
                              bilo_square(bilo_rsub_scalar(a, 1.0)));
    return bilo_sum(t, BILO_ALL_AXES, false);
}

static void test_rosenbrock(void)
{
    const int64_t n = 6;
    bilo_scope_begin();
    double xv[6];
    for (int i = 0; i < n; i++) xv[i] = uniform(-1.5, 1.5);
    bilo_tensor *x = bilo_from_data(BILO_F64, 1, &n, xv);
    bilo_set_requires_grad(x, true);
    double H[36] = {0};
    for (int64_t i = 0; i < n; i++) {
        if (i < n - 1) {
            H[i * n + i] += 1200 * xv[i] * xv[i] - 400 * xv[i + 1] + 2;
            H[i * n + i + 1] = H[(i + 1) * n + i] = -400 * xv[i];
        }
        if (i > 0) H[i * n + i] += 200;
    }
    check_second_order(rosenbrock, x, NULL, H, 1e-10, "Rosenbrock");
    bilo_scope_end();
}

/* ---- logistic regression ------------------------------------------------------------------ */

typedef struct {
    bilo_tensor *X, *y; /* [N, d], [N, 1] in {0, 1} */
    double lambda;
} logreg;

/* mean(softplus(z) - y z) + lambda/2 |w|^2 with z = X w */
static bilo_tensor *logreg_loss(bilo_tensor *w, void *user)
{
    const logreg *p = user;
    bilo_tensor *z = bilo_matmul(p->X, w);
    bilo_tensor *nll = bilo_mean(bilo_sub(bilo_softplus(z), bilo_mul(p->y, z)), BILO_ALL_AXES, false);
    return bilo_add(nll, bilo_mul_scalar(bilo_dot(w, w), 0.5 * p->lambda));
}

/* Its gradient (recorded), so bilo_jacobian of it is the Hessian. */
static bilo_tensor *logreg_grad(bilo_tensor *w, void *user)
{
    bilo_tensor *f = logreg_loss(w, user), *g = NULL;
    return bilo_grad(&f, 1, NULL, &w, 1, &g, BILO_CREATE_GRAPH) ? NULL : g;
}

static void test_logreg(void)
{
    const int64_t N = 20, d = 4;
    bilo_scope_begin();
    logreg p = {random_matrix(N, d, -1, 1), bilo_zeros(BILO_F64, BILO_SHAPE(N, 1)), 0.1};
    for (int64_t i = 0; i < N; i++) bilo_set_flat(p.y, i, uniform(0, 1) < 0.5);
    bilo_tensor *w = random_leaf(d, 1, -1, 1);
    double H[16] = {0};
    const double *X = D(p.X);
    for (int64_t n = 0; n < N; n++) {
        double z = 0;
        for (int64_t a = 0; a < d; a++) z += X[n * d + a] * D(w)[a];
        double s = 1 / (1 + exp(-z)), c = s * (1 - s) / (double)N;
        for (int64_t a = 0; a < d; a++)
            for (int64_t b = 0; b < d; b++) H[a * d + b] += c * X[n * d + a] * X[n * d + b];
    }
    for (int64_t a = 0; a < d; a++) H[a * d + a] += p.lambda;
    check_second_order(logreg_loss, w, &p, H, 1e-10,
                       "logistic regression (H = X^T diag(p(1-p)) X / n + lambda I)");
    check_rel(bilo_jacobian(logreg_grad, w, &p), H, d * d, 1e-10,
              "logistic regression: bilo_jacobian of the gradient equals H");
    bilo_scope_end();
}

/* ---- softmax cross-entropy of a linear model --------------------------------------------- */

typedef struct {
    bilo_tensor *X, *onehot; /* [N, d], [N, C] */
} softmax_ce;

/* -mean_n sum_c onehot_nc log softmax(X W)_nc, for W [d, C] */
static bilo_tensor *softmax_ce_loss(bilo_tensor *W, void *user)
{
    const softmax_ce *p = user;
    bilo_tensor *logp = bilo_log_softmax(bilo_matmul(p->X, W), 1);
    bilo_tensor *picked = bilo_sum(bilo_mul(p->onehot, logp), 1, false);
    return bilo_neg(bilo_mean(picked, BILO_ALL_AXES, false));
}

static void test_softmax_ce(void)
{
    enum { N = 8, d = 3, C = 4 };
    bilo_scope_begin();
    softmax_ce p = {random_matrix(N, d, -1, 1), bilo_zeros(BILO_F64, BILO_SHAPE(N, C))};
    for (int64_t n = 0; n < N; n++) bilo_set_flat(p.onehot, n * C + (int64_t)(uniform(0, 1) * C), 1);
    bilo_tensor *W = random_leaf(d, C, -1, 1);
    /* H[(a,c),(b,e)] = 1/N sum_n X_na X_nb (p_nc [c = e] - p_nc p_ne), W flattened row-major */
    static double H[d * C * d * C];
    memset(H, 0, sizeof H);
    const double *X = D(p.X), *w = D(W);
    for (int n = 0; n < N; n++) {
        double z[C], zmax = -INFINITY, total = 0, prob[C];
        for (int c = 0; c < C; c++) {
            z[c] = 0;
            for (int a = 0; a < d; a++) z[c] += X[n * d + a] * w[a * C + c];
            zmax = fmax(zmax, z[c]);
        }
        for (int c = 0; c < C; c++) total += exp(z[c] - zmax);
        for (int c = 0; c < C; c++) prob[c] = exp(z[c] - zmax) / total;
        for (int a = 0; a < d; a++)
            for (int c = 0; c < C; c++)
                for (int b = 0; b < d; b++)
                    for (int e = 0; e < C; e++)
                        H[(a * C + c) * d * C + b * C + e] +=
                            X[n * d + a] * X[n * d + b] * ((c == e) * prob[c] - prob[c] * prob[e]) / N;
    }
    check_second_order(softmax_ce_loss, W, &p, H, 1e-10, "softmax cross-entropy of X W");
    bilo_scope_end();
}

/* ---- 2-layer tanh MLP against a finite-difference Hessian -------------------------------- */

enum { MLP_N = 5, MLP_D = 3, MLP_H = 4, MLP_P = MLP_H * MLP_D + 2 * MLP_H };

typedef struct {
    double X[MLP_N * MLP_D], t[MLP_N];
    bilo_tensor *Xt, *tt;
} mlp;

/* theta = [W1 (H x D, row-major), b1 (H), w2 (H)]; mean_n (w2 . tanh(W1 x_n + b1) - t_n)^2 */
static bilo_tensor *mlp_loss(bilo_tensor *theta, void *user)
{
    const mlp *p = user;
    bilo_tensor *W1 = bilo_reshape(bilo_slice(theta, 0, 0, MLP_H * MLP_D, 1), BILO_SHAPE(MLP_H, MLP_D));
    bilo_tensor *b1 = bilo_slice(theta, 0, MLP_H * MLP_D, MLP_H * MLP_D + MLP_H, 1);
    bilo_tensor *w2 = bilo_reshape(bilo_slice(theta, 0, MLP_H * MLP_D + MLP_H, MLP_P, 1), BILO_SHAPE(MLP_H, 1));
    bilo_tensor *hidden = bilo_tanh(bilo_add(bilo_matmul_t(p->Xt, W1, false, true), b1));
    bilo_tensor *err = bilo_sub(bilo_matmul(hidden, w2), p->tt);
    return bilo_mean(bilo_square(err), BILO_ALL_AXES, false);
}

static double mlp_reference(const mlp *p, const double *th)
{
    double loss = 0;
    for (int n = 0; n < MLP_N; n++) {
        double out = 0;
        for (int h = 0; h < MLP_H; h++) {
            double a = th[MLP_H * MLP_D + h];
            for (int k = 0; k < MLP_D; k++) a += th[h * MLP_D + k] * p->X[n * MLP_D + k];
            out += th[MLP_H * MLP_D + MLP_H + h] * tanh(a);
        }
        loss += (out - p->t[n]) * (out - p->t[n]);
    }
    return loss / MLP_N;
}

static void test_mlp(void)
{
    bilo_scope_begin();
    mlp p;
    for (int i = 0; i < MLP_N * MLP_D; i++) p.X[i] = uniform(-1, 1);
    for (int i = 0; i < MLP_N; i++) p.t[i] = uniform(-1, 1);
    p.Xt = bilo_from_data(BILO_F64, BILO_SHAPE(MLP_N, MLP_D), p.X);
    p.tt = bilo_from_data(BILO_F64, BILO_SHAPE(MLP_N, 1), p.t);
    double th[MLP_P], H[MLP_P * MLP_P];
    for (int i = 0; i < MLP_P; i++) th[i] = uniform(-1, 1);
    const double h = 1e-4;
    for (int i = 0; i < MLP_P; i++)
        for (int j = 0; j < MLP_P; j++) {
            double f[4], *q = th;
            for (int s = 0; s < 4; s++) {
                double oi = q[i], oj = q[j];
                q[i] += s & 1 ? -h : h;
                q[j] += s & 2 ? -h : h;
                f[s] = mlp_reference(&p, q);
                q[i] = oi;
                q[j] = oj;
            }
            H[i * MLP_P + j] = (f[0] - f[1] - f[2] + f[3]) / (4 * h * h);
        }
    int64_t np = MLP_P;
    bilo_tensor *theta = bilo_from_data(BILO_F64, 1, &np, th);
    bilo_set_requires_grad(theta, true);
    bilo_tensor *hess = bilo_hessian(mlp_loss, theta, &p);
    double worst = 0;
    for (int i = 0; hess && i < MLP_P * MLP_P; i++)
        worst = fmax(worst, fabs(D(hess)[i] - H[i]) / (1 + fabs(H[i])));
    tap_ok(hess && worst < 1e-6, "2-layer tanh MLP: bilo_hessian vs FD Hessian (worst %.2g < 1e-6)", worst);
    bilo_tensor *v = random_matrix(MLP_P, 1, -1, 1), *hv = NULL;
    v = bilo_flatten(v);
    int rc = bilo_hvp(mlp_loss(theta, &p), &theta, 1, &v, &hv, 0);
    double want[MLP_P];
    matvec(H, D(v), MLP_P, want);
    worst = 0;
    for (int i = 0; !rc && i < MLP_P; i++) worst = fmax(worst, fabs(D(hv)[i] - want[i]) / (1 + fabs(want[i])));
    tap_ok(!rc && worst < 1e-6, "2-layer tanh MLP: hvp vs FD H v (worst %.2g < 1e-6)", worst);
    bilo_scope_end();
}

/* ---- Jacobians and JVPs: y = tanh(A x), J = diag(1 - y^2) A -------------------------- */

static bilo_tensor *tanh_linear(bilo_tensor *x, void *user) { return bilo_tanh(bilo_matmul(user, x)); }

static void test_jacobian_jvp(void)
{
    const int64_t m = 4, n = 5;
    bilo_scope_begin();
    bilo_tensor *A = random_matrix(m, n, -1, 1), *x = random_leaf(n, 1, -1, 1);
    bilo_tensor *v = random_matrix(n, 1, -1, 1);
    double J[20], Jv[4];
    for (int64_t i = 0; i < m; i++) {
        double z = 0;
        for (int64_t k = 0; k < n; k++) z += D(A)[i * n + k] * D(x)[k];
        double s = 1 - tanh(z) * tanh(z);
        Jv[i] = 0;
        for (int64_t k = 0; k < n; k++) {
            J[i * n + k] = s * D(A)[i * n + k];
            Jv[i] += J[i * n + k] * D(v)[k];
        }
    }
    check_rel(bilo_jacobian(tanh_linear, x, A), J, m * n, 1e-10, "bilo_jacobian of tanh(A x)");
    bilo_tensor *jv = bilo_jvp(tanh_linear(x, A), &x, 1, &v, 0);
    check_rel(jv, Jv, m, 1e-10, "bilo_jvp of tanh(A x) equals J v");
    tap_ok(jv && bilo_ndim(jv) == 2 && bilo_shape(jv)[0] == m, "jvp has the output's shape");
    bilo_scope_end();
}

/* ---- two inputs, and a zero block ------------------------------------------------------- */

static void test_two_inputs(void)
{
    const int64_t nx = 3, ny = 2;
    bilo_scope_begin();
    bilo_tensor *A = random_matrix(nx, nx, -1, 1), *B = random_matrix(nx, ny, -1, 1);
    bilo_tensor *Cm = random_matrix(ny, ny, -1, 1);
    bilo_tensor *x = random_leaf(nx, 1, -1, 1), *y = random_leaf(ny, 1, -1, 1);
    bilo_tensor *vx = random_matrix(nx, 1, -1, 1), *vy = random_matrix(ny, 1, -1, 1);
    /* f = 1/2 x^T A x + x^T B y + 1/2 y^T C y: H = [[sym A, B], [B^T, sym C]] */
    bilo_tensor *f = bilo_add(bilo_add(quadratic(x, A), bilo_dot(x, bilo_matmul(B, y))), quadratic(y, Cm));
    bilo_tensor *xs[2] = {x, y}, *vs[2] = {vx, vy}, *hv[2] = {NULL, NULL};
    int rc = bilo_hvp(f, xs, 2, vs, hv, 0);
    double wx[3], wy[2];
    const double *a = D(A), *b = D(B), *c = D(Cm);
    for (int64_t i = 0; i < nx; i++) {
        wx[i] = 0;
        for (int64_t j = 0; j < nx; j++) wx[i] += 0.5 * (a[i * nx + j] + a[j * nx + i]) * D(vx)[j];
        for (int64_t j = 0; j < ny; j++) wx[i] += b[i * ny + j] * D(vy)[j];
    }
    for (int64_t i = 0; i < ny; i++) {
        wy[i] = 0;
        for (int64_t j = 0; j < nx; j++) wy[i] += b[j * ny + i] * D(vx)[j];
        for (int64_t j = 0; j < ny; j++) wy[i] += 0.5 * (c[i * ny + j] + c[j * ny + i]) * D(vy)[j];
    }
    check_rel(rc ? NULL : hv[0], wx, nx, 1e-10, "two inputs: x block of H v");
    check_rel(rc ? NULL : hv[1], wy, ny, 1e-10, "two inputs: y block of H v");
    /* f linear in y: that block of H is zero and comes back as zeros, not NULL */
    bilo_tensor *g = bilo_add(quadratic(x, A), bilo_sum(y, BILO_ALL_AXES, false));
    rc = bilo_hvp(g, xs, 2, vs, hv, 0);
    tap_ok(rc == 0 && hv[1] && bilo_get_flat(hv[1], 0) == 0 && bilo_get_flat(hv[1], 1) == 0,
           "an input the gradient does not depend on gets a zero product");
    bilo_scope_end();
}

/* ---- third order: f = sum c_ijk x_i x_j x_k ----------------------------------------------- */

static bilo_tensor *cubic(bilo_tensor *x, void *user)
{
    int64_t n = bilo_numel(x);
    bilo_tensor *M = bilo_reshape(bilo_matmul(bilo_reshape(user, BILO_SHAPE(n * n, n)), x), BILO_SHAPE(n, n));
    return bilo_dot(x, bilo_matmul(M, x));
}

static void test_third_order(void)
{
    enum { n = 4 };
    bilo_scope_begin();
    bilo_tensor *Ct = bilo_empty(BILO_F64, BILO_SHAPE(n, n, n));
    for (int i = 0; i < n * n * n; i++) bilo_set_flat(Ct, i, uniform(-1, 1));
    bilo_tensor *x = random_leaf(n, 1, -1, 1), *v = random_matrix(n, 1, -1, 1);
    bilo_tensor *w = random_matrix(n, 1, -1, 1);
    const double *c = D(Ct), *xv = D(x), *vv = D(v), *wv = D(w);
    /* S_abk = sum of c over the 6 orderings of (a, b, k): H_ab = sum_k S_abk x_k and
       d/dx_k (w^T H v) = sum_ab w_a v_b S_abk */
    double S[n][n][n], Hv[n] = {0}, T3[n] = {0};
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++)
            for (int k = 0; k < n; k++) {
#define CC(i, j, l) c[((i) * n + (j)) * n + (l)]
                S[a][b][k] = CC(a, b, k) + CC(a, k, b) + CC(b, a, k) + CC(b, k, a) + CC(k, a, b) + CC(k, b, a);
#undef CC
                Hv[a] += S[a][b][k] * xv[k] * vv[b];
                T3[k] += wv[a] * vv[b] * S[a][b][k];
            }
    bilo_tensor *hv = NULL, *t3 = NULL;
    int rc = bilo_hvp(cubic(x, Ct), &x, 1, &v, &hv, BILO_CREATE_GRAPH);
    check_rel(rc ? NULL : hv, Hv, n, 1e-10, "cubic: H v");
    tap_ok(bilo_requires_grad(hv), "hvp with CREATE_GRAPH is differentiable");
    bilo_tensor *s = bilo_dot(hv, w);
    rc = bilo_grad(&s, 1, NULL, &x, 1, &t3, 0);
    check_rel(rc ? NULL : t3, T3, n, 1e-10, "cubic: d/dx (w^T H v) equals the contraction of S");
    bilo_scope_end();
}

int main(void)
{
    rng = bilo_rng_make(99, 0);
    test_quadratic();
    test_rosenbrock();
    test_logreg();
    test_softmax_ce();
    test_mlp();
    test_jacobian_jvp();
    test_two_inputs();
    test_third_order();
    bilo_mem_stats stats;
    bilo_mem_get_stats(&stats);
    tap_ok(stats.live_bytes == 0, "every tensor and node was freed (live bytes %zu)", stats.live_bytes);
    return tap_done();
}
