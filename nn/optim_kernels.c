/* Element loops of the in-place optimizer step, written so the compiler vectorizes them: one
   loop per rule, with the rule's options fixed at compile time (the const bool parameters of
   the inline bodies), every division by a bias correction hoisted into a multiplication, and
   the dtype's own arithmetic. Formulas: see bilo_nn.h; the operation order follows the
   differentiable form in optim.c so both agree to rounding. */
#include <math.h>
#include <stddef.h>

#include "optim_kernels.h"

#define DEFINE_UPDATES(T, SUFFIX, SQRT)                                                      \
    static inline void sgd_##SUFFIX(const bilo__optim_consts *k, int64_t n, T *restrict p,  \
                                    const T *restrict g, T *restrict b, const bool momentum, \
                                    const bool nesterov)                                     \
    {                                                                                        \
        const T lr = (T)k->lr, wd = (T)k->weight_decay, mu = (T)k->momentum;                 \
        for (int64_t i = 0; i < n; i++) {                                                    \
            T gi = g[i] + wd * p[i], d = gi;                                                 \
            if (momentum) {                                                                  \
                T bi = mu * b[i] + gi;                                                       \
                b[i] = bi;                                                                   \
                d = nesterov ? gi + mu * bi : bi;                                            \
            }                                                                                \
            p[i] = p[i] - lr * d;                                                            \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    static inline void adam_##SUFFIX(const bilo__optim_consts *k, int64_t n, T *restrict p, \
                                     const T *restrict g, T *restrict m, T *restrict v,     \
                                     const bool adamw)                                       \
    {                                                                                        \
        const T lr = (T)k->lr, wd = (T)k->weight_decay, keep = (T)k->adamw_keep;             \
        const T b1 = (T)k->beta1, c1 = (T)(1 - k->beta1);                                    \
        const T b2 = (T)k->beta2, c2 = (T)(1 - k->beta2);                                    \
        const T inv_bc1 = (T)k->inv_bc1, inv_bc2 = (T)k->inv_bc2, eps = (T)k->eps;           \
        for (int64_t i = 0; i < n; i++) {                                                    \
            T pi = p[i], gi = g[i];                                                          \
            if (adamw) pi *= keep;                                                           \
            else gi += wd * pi;                                                              \
            T mi = b1 * m[i] + c1 * gi, vi = b2 * v[i] + c2 * gi * gi;                       \
            m[i] = mi;                                                                       \
            v[i] = vi;                                                                       \
            p[i] = pi - lr * ((mi * inv_bc1) / (SQRT(vi * inv_bc2) + eps));                  \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    void bilo__optim_update_##SUFFIX(const bilo__optim_consts *k, bool adam, int64_t n,     \
                                     T *p, const T *g, T *s0, T *s1)                         \
    {                                                                                        \
        if (adam && k->adamw) adam_##SUFFIX(k, n, p, g, s0, s1, true);                       \
        else if (adam) adam_##SUFFIX(k, n, p, g, s0, s1, false);                             \
        else if (!s0) sgd_##SUFFIX(k, n, p, g, NULL, false, false);                          \
        else if (k->nesterov) sgd_##SUFFIX(k, n, p, g, s0, true, true);                      \
        else sgd_##SUFFIX(k, n, p, g, s0, true, false);                                      \
    }

DEFINE_UPDATES(float, f32, sqrtf)
DEFINE_UPDATES(double, f64, sqrt)
