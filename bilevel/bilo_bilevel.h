/* bilo — bilevel optimization: min_x Φ(x) = f(x, y*(x)), y*(x) = argmin_y g(x, y).
 *
 * A problem is two callbacks that build the lower loss g and the upper loss f from bilo ops
 * over lists of outer tensors x and inner tensors y. An estimator computes (an estimate of)
 * the hypergradient ∇Φ(x) = ∇_x f − ∇²_xy g · [∇²_yy g]⁻¹ ∇_y f and takes outer steps; every
 * method sits behind the same opaque bilo_estimator and reports its cost.
 */
#ifndef BILO_BILEVEL_H
#define BILO_BILEVEL_H

#include "bilo_nn.h"
#include "bilo_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Builds a scalar loss from x[0..n_x), y[0..n_y) and a batch (NULL when the level has no
   data source). Returns a new 0-d tensor, or NULL after setting a bilo error. */
typedef bilo_tensor *(*bilo_loss_fn)(bilo_tensor *const *x, bilo_tensor *const *y,
                                     const bilo_batch *batch, void *user);

typedef struct {
    bilo_tensor *const *x; /* outer tensors (any shapes, one float dtype); updated in place */
    int n_x;
    bilo_tensor *const *y; /* inner tensors; updated in place by the inner solver */
    int n_y;
    bilo_loss_fn lower;    /* g(x, y; batch) */
    bilo_loss_fn upper;    /* f(x, y; batch) */
    void *user;
    bilo_batcher *lower_data; /* minibatches for g; NULL (default): full batch */
    bilo_batcher *upper_data; /* minibatches for f; NULL (default): full batch */
    /* Called at the start of every outer step (step = steps done so far), e.g. to draw the
       step's meta-learning episodes; NULL (default): nothing. Returns 0 or a negative code
       after setting a bilo error. */
    int (*begin_step)(int64_t step, void *user);
} bilo_problem;

typedef struct {
    int T;                 /* inner steps per outer step, 100 when 0 */
    bilo_optim_opts optim; /* inner optimizer on g (SGD/momentum/Adam; nn's defaults) */
    bool reset;            /* false (default): warm start from the previous outer step;
                              true: restart from the y the estimator was created with */
    double tol;            /* stop early once ‖∇_y g‖ ≤ tol; 0 (default): run all T steps */
} bilo_inner_opts;

/* exact: dense ∇²_yy g and ∇²_xy g, solved in f64 (Cholesky, LU when not positive definite). */
typedef struct {
    bilo_inner_opts inner;
} bilo_exact_opts;

/* ITD: reverse mode through the T recorded inner steps (memory grows with T). */
typedef struct {
    bilo_inner_opts inner;
    int truncate; /* back-propagate through the last `truncate` steps only; 0 (default): all */
} bilo_itd_opts;

/* AID-CG / AID-NS / AID-FP: v ≈ [∇²_yy g]⁻¹ ∇_y f from K Hessian-vector products, then
   ∇Φ ≈ ∇_x f − ∇²_xy g · v. When the lower level has minibatches, AID-NS draws a fresh batch
   for every Neumann term (stocBiO, Ji, Yang, Liang 2021). */
typedef struct {
    bilo_inner_opts inner;
    int K;        /* CG iterations / Neumann terms / fixed-point iterations, 10 when 0 */
    double eta;   /* NS and FP step size η (needs η·λ_max(∇²_yy g) < 2), 0.1 when 0 */
    bool warm_v;  /* CG and FP: start from the previous outer step's v; false (default): 0 */
} bilo_aid_opts;

typedef struct {
    int64_t f_grads;     /* gradient evaluations of the upper loss f */
    int64_t g_grads;     /* gradient evaluations of the lower loss g */
    int64_t hvps;        /* Hessian- and mixed-vector products of g */
    int64_t inner_iters; /* inner solver steps */
    int64_t steps;       /* outer steps (bilo_estimator_step calls) */
    double seconds;      /* wall time */
    size_t peak_bytes;   /* peak live bytes of bilo's allocator */
} bilo_cost;

typedef struct bilo_estimator bilo_estimator;

/* The problem's arrays are copied; its tensors, batchers and user pointer must outlive the
   estimator. opts may be NULL for the defaults. */
BILO_API bilo_estimator *bilo_exact_new(const bilo_problem *p, const bilo_exact_opts *opts);
BILO_API bilo_estimator *bilo_itd_new(const bilo_problem *p, const bilo_itd_opts *opts);
BILO_API bilo_estimator *bilo_aid_cg_new(const bilo_problem *p, const bilo_aid_opts *opts);
BILO_API bilo_estimator *bilo_aid_ns_new(const bilo_problem *p, const bilo_aid_opts *opts);
BILO_API bilo_estimator *bilo_aid_fp_new(const bilo_problem *p, const bilo_aid_opts *opts);

/* ---- Hessian-free and single-loop methods ---------------------------------------------
   Conventions shared by these: `inner.T` is the number of inner updates per outer step (for
   the single-loop methods SOBA and FSLA, 1 as published, 1 when 0); a method that publishes a
   schedule for the outer step size applies it through bilo_optim_set_lr on the outer
   optimizer when `outer_lr` > 0 (0, the default: the outer optimizer's lr is left alone);
   `seed` keys the method's Philox streams. bilo_estimator_hypergradient(x, y) runs the
   method's inner work from y at fixed x and returns its direction without moving the
   estimator's persistent state. */

typedef enum {
    BILO_DIRECTIONS_GAUSSIAN,   /* u ~ N(0, I) over all of x, averaged over Q */
    BILO_DIRECTIONS_SPHERE,     /* u ~ N(0, I) normalized per outer tensor (the authors' code) */
    BILO_DIRECTIONS_COORDINATE, /* u = e_1..e_dx, summed: exact when y_T is affine in x */
} bilo_directions;

/* ESJ / PZOBO (Sow, Ji, Liang 2021/2022): the response Jacobian from Q perturbed inner runs
   that share the starting point and minibatch sequence of the unperturbed run; Hessian-free:
   ĝ = ∇_x f(x, y_T) + (1/Q) Σ_q u_q ⟨(y_T(x + μu_q) − y_T(x))/μ, ∇_y f(x, y_T)⟩. Every run
   starts from the same y (warm start, or the initial y with inner.reset) with a fresh inner
   optimizer; a step keeps the unperturbed run's y_T. Cost per estimate: (1 + Q)·T gradients
   of g (1 + 2Q runs when antithetic), one of f, no HVP; no graph outlives an inner step, so
   memory does not grow with T. inner.tol must be 0: every run takes exactly T steps. */
typedef struct {
    bilo_inner_opts inner;
    int Q;                      /* perturbations per estimate, 1 when 0 (at most 2^20) */
    double mu;                  /* smoothing radius μ, 0.01 when 0 */
    bilo_directions directions; /* gaussian (default), sphere or coordinate (Q is then dim x) */
    bool antithetic;            /* pairs x ± μu (central differences), 2Q perturbed runs */
    uint64_t seed;              /* direction q of outer step k comes from the Philox stream
                                   (seed, k·2^32 + q); bilo_estimator_hypergradient uses the
                                   next step's directions */
    int threads;                /* runs in parallel; 0: bilo_get_num_threads(). The callbacks
                                   are then called from several threads at once. Results do not
                                   depend on it */
} bilo_es_opts;

typedef enum {
    BILO_BOME_PHI_GRAD_NORM, /* φ = η‖∇q‖² (the authors' toy code) */
    BILO_BOME_PHI_VALUE,     /* φ = η·q (the authors' HPO code) */
} bilo_bome_phi;

/* BOME (Ye et al. 2022): T steps of the inner optimizer (fresh state each outer step) from y
   give ŷ; q = g(x, y) − g(x, ŷ) with ŷ held fixed; d = ∇f + λ∇q over (x, y) with
   λ = max(φ − ⟨∇f, ∇q⟩, 0)/‖∇q‖² (eps added to every ‖∇q‖²), λ = 0 when ‖∇q‖² + eps is 0,
   so that ⟨d, ∇q⟩ = φ whenever λ > 0 (and eps = 0). An outer step
   moves y by −y_lr·d_y itself (heavy ball when y_momentum > 0) and hands d_x to the outer
   optimizer. First-order only; a step costs T + 2 gradients of g and one of f, no HVP
   (T + 3, the notes' table). With minibatches every g evaluation draws the next batch.
   inner.T is 10 when 0; inner.reset is not supported (ŷ always starts from the current y).
   bilo_estimator_hypergradient(x, y) returns d_x at (x, y). */
typedef struct {
    bilo_inner_opts inner; /* the T steps that give ŷ (inner.optim: ŷ's optimizer, any kind) */
    bilo_bome_phi phi;     /* grad_norm (default) or value */
    double eta;            /* η, 0.5 when 0 */
    double y_lr;           /* step size of y in the joint step, 0.01 when 0 */
    double y_momentum;     /* heavy-ball momentum of that step in [0, 1), 0 by default */
    double eps;            /* added to ‖∇q‖² in λ and in φ = η(‖∇q‖² + eps), as the authors'
                              HPO (1e-8) and toy (1e-4) code do; 0 (default): the benchmark */
} bilo_bome_opts;

/* F2SA (Kwon et al. 2023): y on f + λg and z on g by T plain gradient steps each,
     y ← y − γ_y(λ∇_y g(x, y) + ∇_y f(x, y)),  z ← z − γ_z ∇_y g(x, z),
   outer direction ∇_x f(x, y) + λ(∇_x g(x, y) − ∇_x g(x, z)), then λ += δ_t. y is the
   problem's y (within O(1/λ) of y*); z (from the initial y) and λ are the estimator's state.
   A step costs 2T + 2 gradients of g and T + 1 of f (3T + 3), no HVP. inner.T is 10 when 0;
   inner.optim must be plain SGD (lr: γ's base, 1e-3 when 0); inner.reset is not supported;
   inner.tol stops the T steps once both step directions have norm ≤ tol.
   bilo_estimator_hypergradient(x, y) runs the T steps with y and z both starting from the
   given y, at the current λ and step sizes, and changes nothing. First-order only. */
typedef struct {
    bilo_inner_opts inner;
    double lambda0;        /* initial multiplier λ, 1 when 0 */
    double delta;          /* δ_t = delta/(t+1)^{1/7} (t: 0-based outer step), 0.1 when 0 */
    bool fixed_lambda;     /* keep λ = lambda0 (for bias studies) */
    bool decay;            /* the published decay γ_y = lr/(t+1)^{5/7}, γ_z = lr/(t+1)^{4/7};
                              false (default): constant γ_y = γ_z = lr */
    double outer_lr;       /* see the conventions above: α_t = outer_lr/(t+1)^{4/7} with
                              decay, else outer_lr */
    bool y_lr_over_lambda; /* γ_y divided by λ, so y's steps on f + λg (curvature ∝ λ) stay
                              stable while λ grows; false (default): the benchmark's γ_y */
} bilo_f2sa_opts;

/* SOBA (Dagréou et al. 2022) and FSLA (Li, Gu, Huang 2022), as the SOBA authors' benchmark
   implements them: one loop moving y, the linear-system state v and, for FSLA, the STORM
   momentum d; no inner problem is solved. Update u (u = steps·T + k) uses γ_u = s/√(u+1)
   (s = inner.optim.lr, γ_u = s without decay):
   - SOBA: at (x, y, v), on one lower and one upper batch, direction ∇_x f + ∇²_xy g·v, then
     y −= γ∇_y g, v −= γ(∇²_yy g·v + ∇_y f), so v → −[∇²_yy g]⁻¹∇_y f. Per update: 1 gradient
     of f and of g, 1 product (Hv and Jv from one double backprop).
   - FSLA: y −= γ∇_y g; v −= γ(∇²_yy g(y⁺)·v − ∇_y f(y⁺)) (v → +[∇²_yy g]⁻¹∇_y f);
     ω = ∇_x f − ∇²_xy g·v at (x, y⁺, v⁺) and ω_old the same at (x_prev, y, v) on the same
     upper and lower batches; d = ω + (1−η)(d − ω_old) with η = γ; x_prev = x; direction d.
     d and x_prev start at zero as in the benchmark. Per update: 3 gradients of f, 4 of g,
     3 products.
   The state (v; FSLA's d and x_prev) is checkpointed by bilo_driver_run. */
typedef struct {
    bilo_inner_opts inner; /* T single-loop updates per outer step (1 when 0); inner.optim.lr
                              is the base step s (0.1 when 0). Plain steps only: optim other
                              than sgd, momentum, reset and tol are rejected */
    bool decay;            /* the published 1/√(t+1) decay of every step size */
    double outer_lr;       /* α_t = outer_lr/√(t+1) when decay, else outer_lr (t: outer step) */
} bilo_single_loop_opts;

/* Penalty (Mehra, Hamm 2021), as the authors' code implements it: with
   h_upper = f + νᵀ∇_y g + (ρ/2)‖∇_y g‖² and h_lower = h_upper + λg, T steps of the inner
   optimizer (inner.optim, e.g. Adam as the authors; the preset "penalty" sets it) on y along
   ∇_y h_lower, then the outer direction ∇_x h_upper; both from one double-backprop product of
   ∇_y g with ν + ρ∇_y g, so a step costs T + 1 products and T + 1 gradients of f and of g.
   Schedule: when ‖∇_x h_upper‖⁴ + ‖∇_y h_lower‖⁴ < ε² at the point an outer step reached
   (the code squares the squared norms; this test does the same), ρ ← c_ρρ, λ ← c_λλ,
   ε ← c_εε, ν ← ν + ρ∇_y g (new ρ) and both step sizes × lr_decay: the outer optimizer's lr
   becomes its lr at the first step times the product of the decays. The check runs at the
   start of the next step (with minibatches: on that step's first batches) and shares its
   products with the first inner step; an advancing step pays one product (and one gradient of
   f and g) more. ν starts at nu0 everywhere; ν, ρ, λ, ε and the decay are checkpointed.
   bilo_estimator_hypergradient runs the T steps with a fresh inner optimizer. */
typedef struct {
    bilo_inner_opts inner; /* T (niter) steps on y against h_lower, 20 when 0; reset and tol
                              are not supported */
    double rho0, lambda0, eps0, nu0;   /* 1e-2, 1e-2, 1e-2, 1e-4 when 0 */
    double c_rho, c_lambda, c_eps;     /* 1.1, 0.9, 0.9 when 0 */
    double lr_decay;       /* both step sizes ×lr_decay when the schedule advances, 0.9 when 0 */
} bilo_penalty_opts;

BILO_API bilo_estimator *bilo_esj_new(const bilo_problem *p, const bilo_es_opts *opts);
BILO_API bilo_estimator *bilo_bome_new(const bilo_problem *p, const bilo_bome_opts *opts);
BILO_API bilo_estimator *bilo_f2sa_new(const bilo_problem *p, const bilo_f2sa_opts *opts);
BILO_API bilo_estimator *bilo_soba_new(const bilo_problem *p, const bilo_single_loop_opts *opts);
BILO_API bilo_estimator *bilo_fsla_new(const bilo_problem *p, const bilo_single_loop_opts *opts);
BILO_API bilo_estimator *bilo_penalty_new(const bilo_problem *p, const bilo_penalty_opts *opts);

/* By name with options "key=value,..." (NULL or "" for the defaults); a preset name applies its
   authors' defaults first. Names: exact, itd, aid-cg, aid-ns, aid-fp, and those listed by
   bilo_estimator_method_name. Keys: T, lr, momentum, optim (sgd|adam|adamw), reset (0|1), tol
   for every method; truncate (itd); K, eta, warm_v (aid-*); the other methods' keys are their
   option fields' names. Unknown names, keys or values give BILO_EINVAL naming them. */
BILO_API bilo_estimator *bilo_estimator_new(const char *name, const bilo_problem *p,
                                            const char *options);
/* The i-th name bilo_estimator_new accepts (i = 0, 1, ...), NULL past the last. */
BILO_API const char *bilo_estimator_method_name(int i);
BILO_API const char *bilo_estimator_name(const bilo_estimator *e);

/* The estimate at the point (x, y) (lists shaped like the problem's; ITD unrolls its T inner
   steps from y). grads[0..n_x) get new tensors, owned like op results. Costs count towards
   the next report. Returns 0 or a negative code. */
BILO_API int bilo_estimator_hypergradient(bilo_estimator *e, bilo_tensor *const *x,
                                          bilo_tensor *const *y, bilo_tensor **grads);
/* One outer iteration on the problem's tensors: the inner work, then outer->step with the
   hypergradient (outer must be an optimizer over the problem's x). A callback returning NULL
   stops the step with its error; a non-finite loss or hypergradient gives BILO_ENUMERIC
   naming the step number. */
BILO_API int bilo_estimator_step(bilo_estimator *e, bilo_optim *outer);
/* Cost of the last step (or hypergradient call) and the total since creation. */
BILO_API void bilo_estimator_report(const bilo_estimator *e, bilo_cost *last, bilo_cost *total);
/* A note from the last computation (e.g. exact's fallback to LU), "" when none. */
BILO_API const char *bilo_estimator_message(const bilo_estimator *e);
BILO_API void bilo_estimator_free(bilo_estimator *e);

/* ---- outer driver ---------------------------------------------------------------------- */

/* Fills values[0..n_metrics) (e.g. validation loss, test accuracy) after outer step `step`.
   Returns 0 or a negative code after setting a bilo error. */
typedef int (*bilo_metric_fn)(int64_t step, double *values, void *user);

typedef struct {
    int64_t steps;              /* outer steps in all, counting those before a resume */
    int64_t eval_every;         /* metrics and a CSV row every k steps and after the last;
                                   0: after the last step only */
    bilo_metric_fn metric;      /* NULL: no metrics */
    const char *const *metric_names; /* n_metrics column names */
    int n_metrics;
    void *user;                 /* passed to metric */
    const char *csv_path;       /* NULL: no log. Header, then one row per evaluation: step, the
                                   last and total of every bilo_cost counter, seconds, metrics */
    bool progress;              /* on stderr: one line rewritten when it is a terminal (step,
                                   first metric, elapsed, ETA), else a plain line every ~10% */
    const char *checkpoint_path;/* NULL: no checkpoints */
    int64_t checkpoint_every;   /* 0: none */
    bool resume;                /* continue from checkpoint_path when that file exists */
    double time_budget;         /* seconds for this call, 0: none. Once past it the run stops
                                   after the current step, evaluated and checkpointed, and
                                   returns 0: bilo_estimator_report's steps tell how far it got */
    const char *label;          /* progress lines start "[label]"; NULL: the estimator's name */
} bilo_driver_opts;

/* Runs outer steps until o->steps (outer: the optimizer over the problem's x). Checkpoints hold
   x, y, the outer optimizer's state and step count, the estimator's persistent state (inner
   optimizer, warm-start v, costs) and both levels' batcher positions; they are saved atomically
   (bilo_save_params' format), so a failed save keeps the previous one, and a resumed run (with
   batchers built like the original's) follows the uninterrupted trajectory bit for bit.
   Returns 0 or the first error, with a message naming the step. */
BILO_API int bilo_driver_run(bilo_estimator *e, bilo_optim *outer, const bilo_driver_opts *o);

#ifdef __cplusplus
}
#endif
#endif
