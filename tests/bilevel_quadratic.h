/* The closed-form quadratic bilevel problem shared by the bilevel tests:
     g(x, y) = ½ yᵀAy − yᵀBx − cᵀy,  f(x, y) = ½‖y − y₀‖² + ½ xᵀDx + eᵀx,
   with y*(x) = A⁻¹(Bx + c) and ∇Φ(x) = Dx + e + BᵀA⁻¹(y*(x) − y₀), computed here with a
   Gaussian elimination of the tests' own. A = R·diag(λ)·R (R a Householder reflection) so
   the spectrum, and with it every predicted convergence rate, is known. T gradient steps of
   size α from a y₀ that does not depend on x give dy_T/dx = A⁻¹(I − (I − αA)^T)B. */
#ifndef BILO_TESTS_BILEVEL_QUADRATIC_H
#define BILO_TESTS_BILEVEL_QUADRATIC_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bilo.h"
#include "checks.h"

#define NX 3
#define NY 4

typedef struct {
    double A[NY * NY], B[NY * NX], c[NY], y0[NY], D[NX * NX], e[NX];
    bilo_tensor *tA, *tB, *tc, *ty0, *tD, *te;
    int n_x, n_y;      /* how many tensors x and y are split into */
    bool fail_lower;   /* the lower callback returns NULL (a failing op) */
    bool nan_upper;    /* the upper callback returns NaN */
} quad;

static const double B0[NY * NX] = {0.3, -0.2, 0.1,  0.0,  0.25, -0.15,
                                   0.2, 0.1,  0.05, -0.1, 0.0,  0.3};
static const double C0[NY] = {1.0, -0.5, 0.25, 0.75};
static const double Y0[NY] = {0.5, 0.0, -1.0, 0.25};
static const double E0[NX] = {0.2, -0.4, 0.1};

static inline void make_quad(quad *q, const double lambda[NY], int n_x, int n_y)
{
    const double u[NY] = {1, 2, 3, 4};
    double uu = 0, R[NY * NY];
    for (int i = 0; i < NY; i++) uu += u[i] * u[i];
    for (int i = 0; i < NY; i++)
        for (int j = 0; j < NY; j++) R[i * NY + j] = (i == j) - 2 * u[i] * u[j] / uu;
    for (int i = 0; i < NY; i++)
        for (int j = 0; j < NY; j++) {
            double s = 0;
            for (int k = 0; k < NY; k++) s += R[i * NY + k] * lambda[k] * R[j * NY + k];
            q->A[i * NY + j] = s;
        }
    memcpy(q->B, B0, sizeof B0);
    memcpy(q->c, C0, sizeof C0);
    memcpy(q->y0, Y0, sizeof Y0);
    memcpy(q->e, E0, sizeof E0);
    for (int i = 0; i < NX * NX; i++) q->D[i] = (i % (NX + 1) == 0);
    q->tA = bilo_from_data(BILO_F64, BILO_SHAPE(NY, NY), q->A);
    q->tB = bilo_from_data(BILO_F64, BILO_SHAPE(NY, NX), q->B);
    q->tc = bilo_from_data(BILO_F64, BILO_SHAPE(NY), q->c);
    q->ty0 = bilo_from_data(BILO_F64, BILO_SHAPE(NY), q->y0);
    q->tD = bilo_from_data(BILO_F64, BILO_SHAPE(NX, NX), q->D);
    q->te = bilo_from_data(BILO_F64, BILO_SHAPE(NX), q->e);
    q->n_x = n_x;
    q->n_y = n_y;
    q->fail_lower = q->nan_upper = false;
}

static inline void free_quad(quad *q)
{
    bilo_tensor *ts[] = {q->tA, q->tB, q->tc, q->ty0, q->tD, q->te};
    for (int i = 0; i < 6; i++) bilo_release(ts[i]);
}

/* ---- the callbacks: every x (and y) tensor is flattened and joined into one vector ---- */
static inline bilo_tensor *joined(bilo_tensor *const *ts, int n)
{
    bilo_tensor *flat[4];
    for (int i = 0; i < n; i++) flat[i] = bilo_flatten(ts[i]);
    return n == 1 ? flat[0] : bilo_concat(flat, n, 0);
}

static inline bilo_tensor *mat_vec(bilo_tensor *m, bilo_tensor *v)
{
    return bilo_flatten(bilo_matmul(m, bilo_reshape(v, BILO_SHAPE(bilo_numel(v), 1))));
}

static inline bilo_tensor *lower(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                          void *user)
{
    (void)b;
    quad *q = user;
    if (q->fail_lower) return bilo_matmul(q->tB, q->tB); /* [4,3]·[4,3]: a shape error */
    bilo_tensor *xv = joined(x, q->n_x), *yv = joined(y, q->n_y);
    bilo_tensor *quadratic = bilo_mul_scalar(bilo_dot(yv, mat_vec(q->tA, yv)), 0.5);
    return bilo_sub(bilo_sub(quadratic, bilo_dot(yv, mat_vec(q->tB, xv))), bilo_dot(q->tc, yv));
}

static inline bilo_tensor *upper(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                          void *user)
{
    (void)b;
    quad *q = user;
    bilo_tensor *xv = joined(x, q->n_x), *d = bilo_sub(joined(y, q->n_y), q->ty0);
    bilo_tensor *f = bilo_add(bilo_mul_scalar(bilo_dot(d, d), 0.5),
                              bilo_mul_scalar(bilo_dot(xv, mat_vec(q->tD, xv)), 0.5));
    f = bilo_add(f, bilo_dot(q->te, xv));
    return q->nan_upper ? bilo_mul_scalar(f, NAN) : f;
}

/* ---- the closed form, in plain doubles ---- */
static inline void solve(const double *m, int n, const double *b, double *out)
{
    double a[NY * NY + NX * NX];
    memcpy(a, m, (size_t)(n * n) * sizeof *a);
    memmove(out, b, (size_t)n * sizeof *out);
    solve_in_place(a, out, n);
}

static inline void y_star(const quad *q, const double *x, double *y)
{
    double rhs[NY];
    for (int i = 0; i < NY; i++) {
        rhs[i] = q->c[i];
        for (int j = 0; j < NX; j++) rhs[i] += q->B[i * NX + j] * x[j];
    }
    solve(q->A, NY, rhs, y);
}

static inline void grad_phi(const quad *q, const double *x, double *g)
{
    double y[NY], d[NY], w[NY];
    y_star(q, x, y);
    for (int i = 0; i < NY; i++) d[i] = y[i] - q->y0[i];
    solve(q->A, NY, d, w);
    for (int j = 0; j < NX; j++) {
        g[j] = q->e[j];
        for (int k = 0; k < NX; k++) g[j] += q->D[j * NX + k] * x[k];
        for (int i = 0; i < NY; i++) g[j] += q->B[i * NX + j] * w[i];
    }
}

static inline double norm(const double *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i] * v[i];
    return sqrt(s);
}

/* ---- the tensors of one run: x and y split as the quad says ---- */
typedef struct {
    bilo_tensor *x[2], *y[2];
    bilo_problem p;
} vars;

static inline void make_vars(vars *v, quad *q, const double *x, const double *y)
{
    if (q->n_x == 1) {
        v->x[0] = bilo_from_data(BILO_F64, BILO_SHAPE(NX), x);
    } else { /* [2] and [1, 1] */
        v->x[0] = bilo_from_data(BILO_F64, BILO_SHAPE(2), x);
        v->x[1] = bilo_from_data(BILO_F64, BILO_SHAPE(1, 1), x + 2);
    }
    if (q->n_y == 1) {
        v->y[0] = bilo_from_data(BILO_F64, BILO_SHAPE(NY), y);
    } else { /* [2, 1] and [2] */
        v->y[0] = bilo_from_data(BILO_F64, BILO_SHAPE(2, 1), y);
        v->y[1] = bilo_from_data(BILO_F64, BILO_SHAPE(2), y + 2);
    }
    v->p = (bilo_problem){.x = v->x, .n_x = q->n_x, .y = v->y, .n_y = q->n_y, .lower = lower,
                          .upper = upper, .user = q};
}

static inline void free_vars(vars *v)
{
    for (int i = 0; i < v->p.n_x; i++) bilo_release(v->x[i]);
    for (int i = 0; i < v->p.n_y; i++) bilo_release(v->y[i]);
}

static inline void read_list(bilo_tensor *const *ts, int n, double *out)
{
    for (int i = 0; i < n; i++)
        for (int64_t k = 0; k < bilo_numel(ts[i]); k++) *out++ = bilo_get_flat(ts[i], k);
}

static const double XP[NX] = {0.7, -1.1, 0.4};

/* The usual start of a test: the one-tensor quadratic with spectrum lambda, at x = XP, y = 0. */
static inline void make_quad_at_xp(quad *q, vars *v, const double *lambda)
{
    const double zero[NY] = {0};
    make_quad(q, lambda, 1, 1);
    make_vars(v, q, XP, zero);
}

/* Relative error of e's hypergradient at (XP, y) against ∇Φ(XP); -1 on failure. */
static inline double hyper_error(bilo_estimator *e, vars *v, const quad *q, const double *y)
{
    double want[NX], got[NX], diff[NX];
    grad_phi(q, XP, want);
    make_vars(v, (quad *)q, XP, y);
    bilo_tensor *g[2];
    bilo_scope_begin();
    int rc = bilo_estimator_hypergradient(e, v->x, v->y, g);
    if (rc == 0) read_list(g, v->p.n_x, got);
    bilo_scope_end();
    free_vars(v);
    if (rc < 0) {
        tap_diag("hypergradient failed: %s", bilo_last_error());
        return -1;
    }
    for (int i = 0; i < NX; i++) diff[i] = got[i] - want[i];
    return norm(diff, NX) / norm(want, NX);
}

/* Error at y*(XP) of an estimator made from p's shapes with a name and option string. */
static inline double named_error(quad *q, const char *name, const char *opts)
{
    double ys[NY], zero[NY] = {0};
    y_star(q, XP, ys);
    vars v;
    make_vars(&v, q, XP, zero);
    bilo_estimator *e = bilo_estimator_new(name, &v.p, opts);
    free_vars(&v);
    if (!e) {
        tap_diag("%s(%s): %s", name, opts, bilo_last_error());
        return -1;
    }
    bool itd = !strcmp(name, "itd");
    double err = hyper_error(e, &v, q, itd ? zero : ys);
    bilo_estimator_free(e);
    return err;
}

/* ---- checkpoint/resume through bilo_driver_run ---- */

/* `steps` driver steps of the named estimator from (x0, 0) on the quadratic of spectrum
   lambda, checkpointing every 20 steps to ckpt when save and continuing from it when resume;
   the final x and y go to xo and yo. */
static inline int quad_driver_run(const char *name, const char *opts, const double *lambda,
                                  const double *x0, const bilo_optim_opts *outer_opts,
                                  const char *ckpt, int64_t steps, bool save, bool resume,
                                  double *xo, double *yo)
{
    quad q;
    make_quad(&q, lambda, 1, 1);
    const double zero[NY] = {0};
    vars v;
    make_vars(&v, &q, x0, zero);
    bilo_estimator *e = bilo_estimator_new(name, &v.p, opts);
    bilo_optim *outer = bilo_optim_new(outer_opts, v.x, 1);
    bilo_driver_opts o = {.steps = steps, .checkpoint_path = save || resume ? ckpt : NULL,
                          .checkpoint_every = save ? 20 : 0, .resume = resume};
    int rc = e && outer ? bilo_driver_run(e, outer, &o) : -100;
    read_list(v.x, 1, xo);
    read_list(v.y, 1, yo);
    bilo_optim_free(outer);
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
    return rc;
}

/* TAP check: 20 steps, a checkpoint, resumed to 40 = 40 straight steps bit for bit. */
static inline void quad_check_resume(const char *name, const char *opts, const double *lambda,
                                     const double *x0, const bilo_optim_opts *outer_opts,
                                     const char *ckpt)
{
    double xa[NX], ya[NY], xm[NX], ym[NY], xb[NX], yb[NY];
    remove(ckpt);
    int rc = quad_driver_run(name, opts, lambda, x0, outer_opts, ckpt, 40, false, false, xa, ya);
    rc |= quad_driver_run(name, opts, lambda, x0, outer_opts, ckpt, 20, true, false, xm, ym);
    rc |= quad_driver_run(name, opts, lambda, x0, outer_opts, ckpt, 40, false, true, xb, yb);
    tap_ok(rc == 0 && memcmp(xa, xm, sizeof xa) != 0 && !memcmp(xa, xb, sizeof xa) &&
               !memcmp(ya, yb, sizeof ya),
           "%s (%s): 20 steps, a checkpoint, resumed to 40 = 40 straight steps bit for bit%s%s",
           name, opts, rc ? ": " : "", rc ? bilo_last_error() : "");
    remove(ckpt);
}

/* TAP check: creating the named estimator with opts on the quadratic fails with BILO_EINVAL
   and a message containing needle. */
static inline void quad_expect_rejected(const char *name, const char *opts, const double *lambda,
                                        const char *needle)
{
    quad q;
    vars v;
    make_quad_at_xp(&q, &v, lambda);
    bilo_clear_error();
    bilo_estimator *e = bilo_estimator_new(name, &v.p, opts);
    tap_ok(!e && bilo_errcode() == BILO_EINVAL && strstr(bilo_last_error(), needle),
           "%s \"%s\" is rejected: %s", name, opts, bilo_last_error());
    bilo_estimator_free(e);
    free_vars(&v);
    free_quad(&q);
}

#endif
