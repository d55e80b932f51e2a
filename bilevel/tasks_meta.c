/* Few-shot meta-learning on the MAML sinusoids (Finn, Abbeel, Levine 2017), in the ANIL/PZOBO
   form (research notes §A1 meta_learning.py): the outer x is a shared backbone, the inner y
   one linear head per task of the meta-batch, fitted by ridge regression on the task's
   support set; the upper loss is the heads' error on the query sets. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "tasks_impl.h"
#include "tensor_impl.h"

/* Philox streams: the episodes of outer step s use stream s; these sit far above. */
#define STREAM_META_INIT UINT64_C(0xFFFFFFFF00000001)
#define STREAM_META_TEST UINT64_C(0xFFFFFFFF00000002)

typedef struct {
    int meta_batch, shots, query, hidden, test_tasks, test_points;
    double reg;
} meta_opts;

static const bilo__option meta_options[] = {
    {"meta_batch", BILO__OPT_INT, offsetof(meta_opts, meta_batch), NULL},
    {"shots", BILO__OPT_INT, offsetof(meta_opts, shots), NULL},
    {"query", BILO__OPT_INT, offsetof(meta_opts, query), NULL},
    {"hidden", BILO__OPT_INT, offsetof(meta_opts, hidden), NULL},
    {"test_tasks", BILO__OPT_INT, offsetof(meta_opts, test_tasks), NULL},
    {"test_points", BILO__OPT_INT, offsetof(meta_opts, test_points), NULL},
    {"reg", BILO__OPT_DOUBLE, offsetof(meta_opts, reg), NULL},
    {NULL}};

/* A set of sinusoid tasks: inputs [n, k, 1] and targets [n, k] for the support and the
   query points. */
typedef struct {
    bilo_tensor *z_support, *t_support, *z_query, *t_query;
} episodes;

typedef struct {
    meta_opts o;
    uint64_t seed;
    bilo_dtype dtype;
    episodes train; /* the current outer step's meta-batch, rewritten by begin_step */
    episodes test;  /* fixed tasks for the meta-test metric */
} meta_data;

static void episodes_release(episodes *e)
{
    bilo_release(e->z_support);
    bilo_release(e->t_support);
    bilo_release(e->z_query);
    bilo_release(e->t_query);
}

static void meta_free(void *p)
{
    meta_data *d = p;
    episodes_release(&d->train);
    episodes_release(&d->test);
    bilo__mfree(d);
}

/* Draws n tasks (amplitude U[0.1, 5], phase U[0, π]) with k_s support and k_q query inputs
   U[−5, 5] each, targets amplitude·sin(z − phase). */
static int episodes_draw(episodes *e, bilo_rng *rng, bilo_dtype dt, int n, int k_s, int k_q)
{
    int k = k_s + k_q;
    double *z = bilo__malloc((size_t)n * k * 2 * sizeof *z), *t = z + (size_t)n * k;
    if (!z) return bilo__fail_code(BILO_ENOMEM, "meta-sinusoid: out of memory for episodes");
    for (int i = 0; i < n; i++) {
        double amp, phase;
        bilo__fill_uniform(rng, &amp, 1, 0.1, 5);
        bilo__fill_uniform(rng, &phase, 1, 0, acos(-1.0));
        bilo__fill_uniform(rng, z + (size_t)i * k, k, -5, 5);
        for (int j = 0; j < k; j++) t[(size_t)i * k + j] = amp * sin(z[(size_t)i * k + j] - phase);
    }
    bilo_tensor *zs = bilo__task_tensor(dt, BILO_SHAPE(n, k, 1), z);
    bilo_tensor *ts = bilo__task_tensor(dt, BILO_SHAPE(n, k), t);
    bilo__mfree(z);
    episodes fresh = {bilo_slice(zs, 1, 0, k_s, 1), bilo_slice(ts, 1, 0, k_s, 1),
                      bilo_slice(zs, 1, k_s, k, 1), bilo_slice(ts, 1, k_s, k, 1)};
    if (!fresh.z_support || !fresh.t_support || !fresh.z_query || !fresh.t_query)
        return bilo_errcode();
    episodes_release(e);
    *e = (episodes){bilo_keep(fresh.z_support), bilo_keep(fresh.t_support),
                    bilo_keep(fresh.z_query), bilo_keep(fresh.t_query)};
    return 0;
}

/* The episodes of outer step `step`: a pure function of (seed, step). */
static int meta_begin_step(int64_t step, void *user)
{
    bilo_task *t = user;
    meta_data *d = t->data;
    bilo_rng rng = bilo_rng_make(d->seed, (uint64_t)step);
    bilo_scope_begin();
    int rc = episodes_draw(&d->train, &rng, d->dtype, d->o.meta_batch, d->o.shots, d->o.query);
    bilo_scope_end();
    return rc;
}

/* Backbone features relu(relu(z·W1 + b1)·W2 + b2) of inputs z [n, k, 1]: [n, k, hidden]. */
static bilo_tensor *backbone(bilo_tensor *const *x, bilo_tensor *z)
{
    bilo_tensor *h = bilo_nn_linear_act(z, x[0], x[1], BILO_ACT_RELU);
    return bilo_nn_linear_act(h, x[2], x[3], BILO_ACT_RELU);
}

/* Head predictions [n, k]: features [n, k, hidden] · W[i] + b[i] for task i. */
static bilo_tensor *head(bilo_tensor *features, bilo_tensor *const *y)
{
    int64_t n = bilo_dim(y[0], 0), hidden = bilo_dim(y[0], 1);
    bilo_tensor *w = bilo_reshape(y[0], BILO_SHAPE(n, 1, hidden));
    return bilo_add(bilo_sum(bilo_mul(features, w), 2, false),
                    bilo_reshape(y[1], BILO_SHAPE(n, 1)));
}

/* g = Σ_tasks ½·mean over the support (prediction − target)² + ½·reg·‖heads‖²: every task's
   head solves its own ridge problem. */
static bilo_tensor *meta_lower(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                               void *user)
{
    (void)b;
    const meta_data *d = ((bilo_task *)user)->data;
    bilo_tensor *pred = head(backbone(x, d->train.z_support), y);
    bilo_tensor *fit = bilo_nn_mse(pred, d->train.t_support, BILO_REDUCE_MEAN);
    return bilo_add(bilo_mul_scalar(fit, 0.5 * d->o.meta_batch), bilo_nn_l2_penalty(y, 2, d->o.reg));
}

/* f = ½·mean over tasks and query points of (prediction − target)². */
static bilo_tensor *meta_upper(bilo_tensor *const *x, bilo_tensor *const *y, const bilo_batch *b,
                               void *user)
{
    (void)b;
    const meta_data *d = ((bilo_task *)user)->data;
    bilo_tensor *pred = head(backbone(x, d->train.z_query), y);
    return bilo_mul_scalar(bilo_nn_mse(pred, d->train.t_query, BILO_REDUCE_MEAN), 0.5);
}

/* The ridge head of one task from its support features f [k, h] and targets t [k]:
   (F̃ᵀF̃/k + reg·I) w̃ = F̃ᵀt/k with F̃ = [f, 1]; w gets h + 1 values (weights, then bias). */
static int ridge_head(const double *f, const double *t, int k, int h, double reg, double *w,
                      double *gram)
{
    int m = h + 1;
    for (int i = 0; i < m; i++) {
        w[i] = 0;
        for (int j = 0; j < m; j++) gram[i * m + j] = i == j ? reg : 0;
    }
    for (int r = 0; r < k; r++) {
        const double *row = f + (size_t)r * h;
        for (int i = 0; i < m; i++) {
            double fi = i < h ? row[i] : 1;
            w[i] += fi * t[r] / k;
            for (int j = 0; j < m; j++) gram[i * m + j] += fi * (j < h ? row[j] : 1) / k;
        }
    }
    if (!bilo__cholesky_solve(gram, m, w))
        return bilo__fail_code(BILO_ENUMERIC, "meta-sinusoid: the ridge head's system is not "
                               "positive definite (reg = %g)", reg);
    return 0;
}

/* Mean squared error of the head w (h weights, bias) on query features f [k, h], targets t. */
static double head_mse(const double *f, const double *t, int k, int h, const double *w)
{
    double s = 0;
    for (int r = 0; r < k; r++) {
        double pred = w[h];
        for (int j = 0; j < h; j++) pred += f[(size_t)r * h + j] * w[j];
        s += (pred - t[r]) * (pred - t[r]);
    }
    return s / k;
}

/* Per-task query MSE of the ridge heads adapted on the test tasks' support sets. */
static int meta_test_errors(bilo_task *t, double *mse)
{
    const meta_data *d = t->data;
    int n = d->o.test_tasks, ks = d->o.shots, kq = d->o.test_points, h = d->o.hidden;
    bilo_tensor *fs = backbone(t->x, d->test.z_support), *fq = backbone(t->x, d->test.z_query);
    if (!fs || !fq) return bilo_errcode();
    size_t total = (size_t)n * (ks + kq) * (h + 1) + (size_t)(h + 1) * (h + 2);
    double *buf = bilo__malloc(total * sizeof *buf);
    if (!buf) return bilo__fail_code(BILO_ENOMEM, "meta-sinusoid: out of memory for the test");
    double *vs = buf, *vq = vs + (size_t)n * ks * h, *ts = vq + (size_t)n * kq * h;
    double *tq = ts + (size_t)n * ks, *w = tq + (size_t)n * kq, *gram = w + h + 1;
    bilo__task_read(fs, vs);
    bilo__task_read(fq, vq);
    bilo__task_read(d->test.t_support, ts);
    bilo__task_read(d->test.t_query, tq);
    int rc = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        rc = ridge_head(vs + (size_t)i * ks * h, ts + (size_t)i * ks, ks, h, d->o.reg, w, gram);
        if (rc == 0) mse[i] = head_mse(vq + (size_t)i * kq * h, tq + (size_t)i * kq, kq, h, w);
    }
    bilo__mfree(buf);
    return rc;
}

static const char *const meta_metrics[] = {"upper_loss", "test_mse", "test_mse_ci95"};

/* Upper loss on the current meta-batch, then the meta-test MSE and the half-width of its 95%
   confidence interval (1.96 standard errors over the test tasks). */
static int meta_metrics_fn(bilo_task *t, double *values)
{
    const meta_data *d = t->data;
    int n = d->o.test_tasks;
    bilo_tensor *f = meta_upper(t->x, t->y, NULL, t);
    double *mse = bilo__malloc((size_t)n * sizeof *mse);
    if (!f || !mse) {
        bilo__mfree(mse);
        return f ? bilo__fail_code(BILO_ENOMEM, "meta-sinusoid: out of memory") : bilo_errcode();
    }
    int rc = meta_test_errors(t, mse);
    double mean = 0, var = 0;
    for (int i = 0; rc == 0 && i < n; i++) mean += mse[i] / n;
    for (int i = 0; rc == 0 && i < n; i++) var += (mse[i] - mean) * (mse[i] - mean) / (n > 1 ? n - 1 : 1);
    bilo__mfree(mse);
    values[0] = bilo_item(f);
    values[1] = mean;
    values[2] = 1.96 * sqrt(var / n);
    return rc;
}

/* PyTorch's default initialization of a linear layer: U(±1/√fan_in) for weights and bias. */
static bilo_tensor *fan_in_uniform(bilo_rng *rng, bilo_dtype dt, int fan_in, int ndim,
                                   const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    double *v = bilo__malloc((size_t)n * sizeof *v);
    if (!v) return bilo__fail(BILO_ENOMEM, "meta-sinusoid: out of memory");
    bilo__fill_uniform(rng, v, n, -1 / sqrt(fan_in), 1 / sqrt(fan_in));
    bilo_tensor *t = bilo__task_tensor(dt, ndim, shape, v);
    bilo__mfree(v);
    return t;
}

static int meta_params(bilo_task *t, const meta_opts *o, bilo_rng *rng, bilo_dtype dt)
{
    int h = o->hidden, rc;
    if ((rc = bilo__task_add_x(t, fan_in_uniform(rng, dt, 1, BILO_SHAPE(1, h)))) < 0 ||
        (rc = bilo__task_add_x(t, fan_in_uniform(rng, dt, 1, BILO_SHAPE(h)))) < 0 ||
        (rc = bilo__task_add_x(t, fan_in_uniform(rng, dt, h, BILO_SHAPE(h, h)))) < 0 ||
        (rc = bilo__task_add_x(t, fan_in_uniform(rng, dt, h, BILO_SHAPE(h)))) < 0 ||
        (rc = bilo__task_add_y(t, bilo_zeros(dt, BILO_SHAPE(o->meta_batch, h)))) < 0)
        return rc;
    return bilo__task_add_y(t, bilo_zeros(dt, BILO_SHAPE(o->meta_batch)));
}

static int meta_build(bilo_task *t, const void *opts, const bilo_task_opts *o)
{
    const meta_opts *mo = opts;
    const int *sizes[] = {&mo->meta_batch, &mo->shots, &mo->query, &mo->hidden, &mo->test_tasks,
                          &mo->test_points};
    for (int i = 0; i < 6; i++)
        if (*sizes[i] < 1 || *sizes[i] > 100000)
            return bilo__fail_code(BILO_EINVAL, "bilo_task_new (meta-sinusoid): option %s = %d "
                                   "must lie in [1, 100000]", meta_options[i].key, *sizes[i]);
    if (!(mo->reg > 0))
        return bilo__fail_code(BILO_EINVAL, "bilo_task_new (meta-sinusoid): reg = %g must be "
                               "> 0 (the heads' ridge problems)", mo->reg);
    meta_data *d = bilo__calloc(1, sizeof *d);
    if (!d) return bilo__fail_code(BILO_ENOMEM, "bilo_task_new (meta-sinusoid): out of memory");
    t->data = d;
    d->o = *mo;
    d->seed = o->seed;
    d->dtype = o->dtype;
    bilo_rng init = bilo_rng_make(o->seed, STREAM_META_INIT);
    bilo_rng test = bilo_rng_make(o->seed, STREAM_META_TEST);
    int rc = meta_params(t, mo, &init, o->dtype);
    if (rc == 0)
        rc = episodes_draw(&d->test, &test, o->dtype, mo->test_tasks, mo->shots, mo->test_points);
    if (rc == 0) rc = meta_begin_step(0, t);
    if (rc < 0) return rc;
    t->problem.lower = meta_lower;
    t->problem.upper = meta_upper;
    t->problem.begin_step = meta_begin_step;
    bilo__task_set_metrics(t, meta_metrics, 3);
    t->outer = (bilo_optim_opts){.kind = BILO_OPTIM_ADAM, .lr = 1e-3}; /* MAML's meta step */
    return 0;
}

/* The heads restart from zero each step (the episodes are new) wherever the method allows it;
   BOME, F2SA, SOBA, FSLA and penalty reject reset and start from the previous episode's
   heads. The heads' ridge problems have curvature in [reg, ~20] at the initial backbone:
   heavy-ball SGD at lr 0.02, momentum 0.9 (PZOBO's inner optimizer) is stable up to curvature
   190 and T = 100 steps leave a small fraction of the initial error. BOME moves the heads one
   step per outer step, so it learns slowly here (φ = η·q, as in the authors' HPO code). */
static const bilo__method_setting meta_settings[] = {
    {"exact", "T=100,lr=0.02,momentum=0.9,reset=1"},
    {"itd", "T=100,lr=0.02,momentum=0.9,reset=1"},
    {"aid-cg", "T=100,lr=0.02,momentum=0.9,reset=1,K=10"},
    {"aid-ns", "T=100,lr=0.02,momentum=0.9,reset=1,K=20,eta=0.02"},
    {"aid-fp", "T=100,lr=0.02,momentum=0.9,reset=1,K=20,eta=0.02"},
    {"esj", "T=100,lr=0.02,momentum=0.9,reset=1,mu=0.1"},
    {"esj-s", "T=100,optim=sgd,lr=0.02,momentum=0.9,reset=1,mu=0.1"},
    {"pzobo", "T=100,lr=0.02,momentum=0.9,reset=1,mu=0.1"},
    {"pzobo-s", "T=100,optim=sgd,lr=0.02,momentum=0.9,reset=1,mu=0.1"},
    {"bome", "T=100,lr=0.02,momentum=0.9,y_lr=0.05,phi=value,eta=0.1"},
    {"f2sa", "T=100,lr=0.02,y_lr_over_lambda=1,decay=0,lambda0=10"},
    {"soba", "T=100,lr=0.02,decay=0"},
    {"fsla", "T=100,lr=0.02,decay=0"},
    {"penalty", "T=100,lr=0.01"},
    {NULL, NULL}};

static const char *meta_method_options(const char *method)
{
    return bilo__method_setting_find(meta_settings, method);
}

const bilo__task_kind bilo__task_meta_sinusoid = {
    .name = "meta-sinusoid",
    .help = "meta-sinusoid: few-shot regression on MAML's sinusoids (amplitude U[0.1, 5], "
            "phase U[0, π], inputs U[−5, 5]). Outer: a 1→hidden→hidden ReLU backbone; inner: "
            "one linear head per task of the meta-batch, a ridge fit (reg) on the support "
            "set, restarted every step; upper loss: the query error. New episodes every outer "
            "step, a pure function of (seed, step). Metrics: upper_loss, test_mse (query MSE "
            "of ridge heads adapted on test_tasks fixed tasks), test_mse_ci95 (1.96 standard "
            "errors). Options: meta_batch=4, shots=10, query=10, hidden=40, test_tasks=100, "
            "test_points=100, reg=0.5.",
    .options = meta_options,
    .opts_size = sizeof(meta_opts),
    .defaults = "meta_batch=4,shots=10,query=10,hidden=40,test_tasks=100,test_points=100,reg=0.5",
    .build = meta_build,
    .metrics = meta_metrics_fn,
    .exact = NULL,
    .method_options = meta_method_options,
    .free_data = meta_free,
};
