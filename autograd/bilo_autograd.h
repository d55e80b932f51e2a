/* bilo — reverse-mode autograd with higher-order gradients.
 *
 * Every tensor op of bilo_tensor.h records a node when one of its inputs requires grad and
 * grad mode is on. Backward rules are written with those same ops, so a gradient computed
 * with BILO_CREATE_GRAPH is itself a differentiable tensor (Hessian-vector products by
 * double backprop).
 */
#ifndef BILO_AUTOGRAD_H
#define BILO_AUTOGRAD_H

#include "bilo_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    /* record the backward so its result can be differentiated; implies BILO_RETAIN_GRAPH,
       since differentiating the result walks the forward graph again */
    BILO_CREATE_GRAPH = 1u << 0,
    BILO_RETAIN_GRAPH = 1u << 1, /* keep saved tensors for another backward through the graph */
    BILO_ALLOW_UNUSED = 1u << 2, /* NULL gradient for inputs the outputs do not depend on */
};

/* Mark a floating-point tensor as a leaf whose gradient is wanted. */
BILO_API int bilo_set_requires_grad(bilo_tensor *t, bool requires_grad);
BILO_API bool bilo_requires_grad(const bilo_tensor *t);
/* True when t was produced by a recorded op (not a leaf). */
BILO_API bool bilo_has_grad_fn(const bilo_tensor *t);
/* Name of the op that produced t ("tanh", "matmul", ...), NULL for leaves. */
BILO_API const char *bilo_grad_fn_name(const bilo_tensor *t);
/* Tensor sharing t's data, cut from the graph. */
BILO_API bilo_tensor *bilo_detach(bilo_tensor *t);

/* Grad mode is per thread. set returns the previous value; enabling it closes every open
   no-grad region of the thread. */
BILO_API bool bilo_grad_enabled(void);
BILO_API bool bilo_set_grad_enabled(bool enabled);
BILO_API void bilo_no_grad_begin(void);
BILO_API void bilo_no_grad_end(void);

/* Gradients of sum_i <cotangents[i], outputs[i]> with respect to inputs[0..n_in).
   cotangents may be NULL (or hold NULLs) for one-element outputs, which default to 1.
   grads[j] receives a new tensor (owned like any op result), or NULL for an unused input
   when BILO_ALLOW_UNUSED is set. Two results may share storage (an input listed twice,
   both operands of an add): copy one before writing into it in place. Returns 0 or a
   negative code. */
BILO_API int bilo_grad(bilo_tensor *const *outputs, int n_out, bilo_tensor *const *cotangents,
                       bilo_tensor *const *inputs, int n_in, bilo_tensor **grads,
                       unsigned flags);
/* Accumulate d loss / d leaf into the .grad of every leaf that requires grad. With
   BILO_CREATE_GRAPH the .grad refers back to its leaf through the graph: call
   bilo_zero_grad before releasing such a leaf. */
BILO_API int bilo_backward(bilo_tensor *loss, unsigned flags);
/* The accumulated gradient of a leaf (borrowed; NULL before any backward). */
BILO_API bilo_tensor *bilo_grad_of(bilo_tensor *leaf);
BILO_API void bilo_zero_grad(bilo_tensor *leaf);

/* H·v of a scalar f with respect to x[0..n), by double backprop. With BILO_CREATE_GRAPH
   the products stay differentiable. */
BILO_API int bilo_hvp(bilo_tensor *f, bilo_tensor *const *x, int n, bilo_tensor *const *v,
                      bilo_tensor **hv, unsigned flags);
/* Vector-Jacobian product of one output: grads of <u, y> w.r.t. x. */
BILO_API int bilo_vjp(bilo_tensor *y, bilo_tensor *u, bilo_tensor *const *x, int n,
                      bilo_tensor **vjp, unsigned flags);
/* Jacobian-vector product J·v of y w.r.t. x[0..n) along v, by the double-vjp trick. */
BILO_API bilo_tensor *bilo_jvp(bilo_tensor *y, bilo_tensor *const *x, int n,
                               bilo_tensor *const *v, unsigned flags);

/* A function of one tensor, for the dense helpers below. Returns a new tensor or NULL. */
typedef bilo_tensor *(*bilo_fn1)(bilo_tensor *x, void *user);
/* Dense Jacobian [numel(y), numel(x)] and Hessian [numel(x), numel(x)] of fn at x (small
   problems: one backward per row). */
BILO_API bilo_tensor *bilo_jacobian(bilo_fn1 fn, bilo_tensor *x, void *user);
BILO_API bilo_tensor *bilo_hessian(bilo_fn1 fn, bilo_tensor *x, void *user);

/* ---- gradient checking (central finite differences, f64 inputs) ---------------------- */
/* A function of several tensors returning one tensor. */
typedef bilo_tensor *(*bilo_fnN)(bilo_tensor *const *inputs, void *user);

typedef struct {
    double eps;  /* finite-difference step, default 1e-6 */
    double atol; /* default 1e-5 */
    double rtol; /* default 1e-3 */
    bool fast;   /* compare v^T J u for random u, v instead of the full Jacobian */
    uint64_t seed;
} bilo_gradcheck_opts;

typedef struct {
    bool passed;
    double max_abs_err;  /* worst |analytic - numeric| */
    double analytic;     /* the two values at the worst element */
    double numeric;
    int input;           /* which input, and flat element index within it (-1 in fast mode) */
    int64_t element;
    int64_t output_element;
    char message[256];
} bilo_gradcheck_result;

/* Compare autograd's Jacobian of fn with central differences, for every input that
   requires grad. opts may be NULL for the defaults. Returns 0 when the check ran (see
   result->passed), or a negative code if fn failed. */
BILO_API int bilo_gradcheck(bilo_fnN fn, bilo_tensor *const *inputs, int n, void *user,
                            const bilo_gradcheck_opts *opts, bilo_gradcheck_result *result);
/* The same for the map (inputs, u) ↦ vjp(fn, u): checks second derivatives, including the
   derivative with respect to the cotangent u (random, seeded). */
BILO_API int bilo_gradgradcheck(bilo_fnN fn, bilo_tensor *const *inputs, int n, void *user,
                                const bilo_gradcheck_opts *opts, bilo_gradcheck_result *result);

#ifdef __cplusplus
}
#endif
#endif
