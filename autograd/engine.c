/* The autograd engine: grad mode, node recording and lifetime, and the reverse walk behind
   bilo_grad and bilo_backward.
 *
 * Ownership inside a walk: every gradient the walk holds is one reference it owns. Rules and
 * accumulations run inside a short scope; the walk retains the tensors it keeps before the
 * scope ends, so every temporary is freed at once and nothing the walk keeps is owned by a
 * scope. Results are handed to the caller's innermost scope at the end.
 *
 * BILO_CREATE_GRAPH implies BILO_RETAIN_GRAPH (as in torch.autograd.grad): the recorded
 * backward refers to the forward graph's saved tensors, so they must outlive this call. */
#include "autograd_impl.h"

#include <stdint.h>
#include <string.h>

/* ---- grad mode ---------------------------------------------------------------------- */

BILO_API bool bilo_grad_enabled(void) { return bilo__no_grad_depth == 0; }

/* Overrides any nesting of bilo_no_grad_begin/end: enabling clears every open region. */
BILO_API bool bilo_set_grad_enabled(bool enabled)
{
    bool previous = bilo__no_grad_depth == 0;
    if (enabled)
        bilo__no_grad_depth = 0;
    else if (previous)
        bilo__no_grad_depth = 1;
    return previous;
}

BILO_API void bilo_no_grad_begin(void) { bilo__no_grad_depth++; }

BILO_API void bilo_no_grad_end(void)
{
    if (bilo__no_grad_depth > 0) bilo__no_grad_depth--;
}

/* ---- node lifetime ------------------------------------------------------------------- */

/* Nodes whose count reached zero on this thread. Destroying one releases tensors, whose
   destruction releases further nodes: they are queued here instead of recursing, so a
   chain of 1e5 nodes frees in constant stack. */
static _Thread_local bilo_node *dead_nodes;
static _Thread_local bool draining;

static void release_saved(bilo_node *n)
{
    for (int i = 0; i < n->n_in; i++) {
        bilo_release(n->in[i]);
        n->in[i] = NULL;
    }
    bilo_release(n->out);
    n->out = NULL;
    n->freed = true;
}

static void node_release(struct bilo_node *node);

static void node_destroy(bilo_node *n)
{
    if (!n->freed) release_saved(n);
    for (int i = 0; i < n->n_in; i++) {
        node_release(n->edge[i].node);
        bilo_release(n->edge[i].leaf);
    }
    bilo__free(n, n->nbytes);
}

static void node_release(struct bilo_node *node)
{
    if (!node || atomic_fetch_sub(&node->refcount, 1) != 1) return;
    node->next_dead = dead_nodes;
    dead_nodes = node;
    if (draining) return;
    draining = true;
    while (dead_nodes) {
        bilo_node *n = dead_nodes;
        dead_nodes = n->next_dead;
        node_destroy(n);
    }
    draining = false;
}

static bilo_node *node_retain(bilo_node *n)
{
    atomic_fetch_add(&n->refcount, 1);
    return n;
}

/* Grad mode for work done on behalf of a backward: recording only under CREATE_GRAPH.
   Returns the depth to restore with leave_backward_mode. */
static int enter_backward_mode(bool create_graph)
{
    int saved_depth = bilo__no_grad_depth;
    bilo__no_grad_depth = create_graph ? 0 : saved_depth + 1;
    return saved_depth;
}

static void leave_backward_mode(int saved_depth) { bilo__no_grad_depth = saved_depth; }

static unsigned version_of(const bilo_tensor *t) { return atomic_load(&t->storage->version); }

/* ---- recording ------------------------------------------------------------------------ */

static bool input_wants_grad(const bilo_op_rule *rule, const bilo_tensor *x, int i)
{
    return x && x->requires_grad && (rule->diff_inputs >> i & 1);
}

static bilo_node *node_alloc(int n_in)
{
    size_t nbytes = sizeof(bilo_node) +
                    (size_t)n_in * (sizeof(bilo_edge) + sizeof(bilo_tensor *) + sizeof(unsigned));
    bilo_node *n = bilo__alloc(nbytes);
    if (!n) return NULL;
    memset(n, 0, nbytes);
    n->nbytes = nbytes;
    n->n_in = n_in;
    n->edge = (bilo_edge *)(n + 1);
    n->in = (bilo_tensor **)(n->edge + n_in);
    n->in_version = (unsigned *)(n->in + n_in);
    atomic_init(&n->refcount, 1);
    return n;
}

/* A header sharing out's storage, owned by the node and cut from every graph. */
static bilo_tensor *save_output(bilo_tensor *out)
{
    bilo_tensor *alias = bilo__alias(out, out->ndim, out->shape);
    if (!alias) return NULL;
    alias->requires_grad = false;
    alias->node = NULL;
    return bilo_keep(alias);
}

/* Whether the rule may read the values of input i, so the node must keep them. */
static bool rule_reads_value(const bilo_op_rule *rule, bilo_tensor *const *in, int n_in, int i)
{
    if (rule->shape_only >> i & 1) return false;
    if (!rule->product || n_in != 2 || !in[i]) return true;
    return input_wants_grad(rule, in[1 - i], 1 - i);
}

/* One data-less storage shared by every stand-in below; its own reference keeps it alive. */
static bilo_storage no_data = {.refcount = 1};
static bilo_tensor no_data_tensor = {.refcount = 1, .ndim = 1, .storage = &no_data};

static bool is_stand_in_for(const bilo_tensor *s, const bilo_tensor *x)
{
    return s && s->storage == &no_data && s->dtype == x->dtype && s->ndim == x->ndim &&
           !memcmp(s->shape, x->shape, (size_t)x->ndim * sizeof *x->shape);
}

/* A stand-in the node that produced x already holds for a same-shaped input, if any: in a
   chain of elementwise ops every node would otherwise allocate an identical header. */
static bilo_tensor *reusable_stand_in(const bilo_tensor *x)
{
    const bilo_node *producer = x->node;
    if (!producer || producer->freed) return NULL;
    for (int i = 0; i < producer->n_in; i++)
        if (is_stand_in_for(producer->in[i], x)) return producer->in[i];
    return NULL;
}

/* A header with x's dtype and shape but no data: what a rule that reads only the shape of an
   input sees, so the node does not keep the input's data alive. Its version never changes:
   an in-place write to x cannot invalidate a rule that never reads it. Stand-ins are never
   written after creation, so nodes may share one (reference counted). */
static bilo_tensor *shape_stand_in(const bilo_tensor *x)
{
    if (!x) return NULL;
    bilo_tensor *shared = reusable_stand_in(x);
    if (shared) return bilo_retain(shared);
    bilo_tensor *s = bilo_keep(bilo__alias(&no_data_tensor, x->ndim, x->shape));
    if (s) {
        s->dtype = x->dtype;
        s->numel = x->numel;
    }
    return s;
}

static bilo_tensor *record_node(bilo_op_id op, bilo_tensor *out, bilo_tensor *const *in, int n_in,
                                const bilo_op_attrs *attrs)
{
    const bilo_op_rule *rule = bilo__op_rule(op);
    bool any = false;
    for (int i = 0; i < n_in; i++) any |= input_wants_grad(rule, in[i], i);
    if (!any || !rule->backward) return out;

    bilo_node *n = node_alloc(n_in);
    if (!n) {
        bilo_release(out);
        return bilo__fail(BILO_ENOMEM, "bilo_%s: out of memory recording the autograd node",
                          rule->name);
    }
    n->op = op;
    if (attrs) n->attrs = *attrs; /* before any op can run: attrs may be a per-thread struct */
    for (int i = 0; i < n_in; i++) {
        n->in[i] = rule_reads_value(rule, in, n_in, i) ? bilo_retain(in[i]) : shape_stand_in(in[i]);
        if (!n->in[i]) {
            node_release(n);
            bilo_release(out);
            return NULL;
        }
        n->in_version[i] = version_of(n->in[i]);
        if (!input_wants_grad(rule, in[i], i)) continue;
        if (in[i]->node) {
            n->edge[i].node = node_retain(in[i]->node);
            if (in[i]->node->topo >= n->topo) n->topo = in[i]->node->topo + 1;
        } else {
            n->edge[i].leaf = bilo_retain(in[i]);
        }
    }
    if (rule->needs_output) {
        n->out = save_output(out);
        if (!n->out) {
            node_release(n);
            bilo_release(out);
            return NULL;
        }
        n->out_version = version_of(out);
    }
    out->requires_grad = true;
    out->node = n;
    return out;
}

/* Stores only once, so threads that build graphs at the same time never write while others
   read the hooks. */
static void install_hooks(void)
{
    if (__atomic_load_n(&bilo__record_hook, __ATOMIC_ACQUIRE)) return;
    __atomic_store_n(&bilo__node_release_hook, node_release, __ATOMIC_RELEASE);
    __atomic_store_n(&bilo__record_hook, record_node, __ATOMIC_RELEASE);
}

/* ---- leaves and graph queries -------------------------------------------------------- */

BILO_API int bilo_set_requires_grad(bilo_tensor *t, bool requires_grad)
{
    static const char *fn = "bilo_set_requires_grad";
    if (!t) return bilo_errcode() ? bilo_errcode() : bilo__fail_code(BILO_ENULL, "%s: t is NULL", fn);
    if (t->node) {
        if (requires_grad) return 0;
        return bilo__fail_code(BILO_EINVAL,
                               "%s: t is not a leaf (it was produced by '%s'); use bilo_detach",
                               fn, bilo__op_rule(t->node->op)->name);
    }
    if (requires_grad && !bilo__check_float(fn, t)) return bilo_errcode();
    if (requires_grad) install_hooks();
    t->requires_grad = requires_grad;
    return 0;
}

BILO_API bool bilo_requires_grad(const bilo_tensor *t) { return t && t->requires_grad; }

BILO_API bool bilo_has_grad_fn(const bilo_tensor *t) { return t && t->node; }

BILO_API const char *bilo_grad_fn_name(const bilo_tensor *t)
{
    return t && t->node ? bilo__op_rule(t->node->op)->name : NULL;
}

BILO_API bilo_tensor *bilo_detach(bilo_tensor *t)
{
    if (!t) return NULL;
    bilo_tensor *d = bilo__alias(t, t->ndim, t->shape);
    if (d) {
        d->requires_grad = false;
        d->node = NULL;
    }
    return d;
}

BILO_API bilo_tensor *bilo_grad_of(bilo_tensor *leaf) { return leaf ? leaf->grad : NULL; }

BILO_API void bilo_zero_grad(bilo_tensor *leaf)
{
    if (!leaf) return;
    bilo_release(leaf->grad);
    leaf->grad = NULL;
}

/* ---- the walk's bookkeeping: a pointer-keyed hash map and growable arrays ------------ */

enum { UNSEEN, ON_STACK, DONE };

typedef struct {
    const void *key;   /* a bilo_node (non-leaf) or a leaf bilo_tensor */
    bilo_tensor *grad; /* owned: the gradient accumulated so far */
    unsigned char state;
    bool target;       /* a requested input */
    bool is_leaf;
    bool needed;       /* its rule must run: an input edge reaches a target */
    bool reaches;      /* target or needed */
} grad_slot;

typedef struct {
    bilo_node *node;
    int next_edge;
} dfs_frame;

typedef struct {
    grad_slot *slots;
    size_t cap, used;
    bilo_node **order; /* DFS post-order: reversed, a topological order from the outputs */
    size_t n_order, cap_order;
    dfs_frame *stack;
    size_t cap_stack;
    bool all_leaves;   /* bilo_backward: every leaf that requires grad is a target */
    int64_t min_topo;  /* nodes below it cannot reach a target: the DFS skips them (as
                          PyTorch's topological_nr pruning); 0 when some target is a leaf */
    bool retain;
} walk_state;

static size_t hash_ptr(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    return (size_t)x;
}

static grad_slot *slot_find(const walk_state *w, const void *key)
{
    if (!w->cap) return NULL;
    size_t mask = w->cap - 1;
    for (size_t i = hash_ptr(key) & mask;; i = (i + 1) & mask) {
        if (w->slots[i].key == key) return &w->slots[i];
        if (!w->slots[i].key) return NULL;
    }
}

static grad_slot *slot_place(grad_slot *slots, size_t cap, const void *key)
{
    size_t mask = cap - 1;
    size_t i = hash_ptr(key) & mask;
    while (slots[i].key && slots[i].key != key) i = (i + 1) & mask;
    return &slots[i];
}

static bool slots_grow(walk_state *w, size_t cap)
{
    grad_slot *slots = bilo__alloc(cap * sizeof *slots);
    if (!slots) return false;
    memset(slots, 0, cap * sizeof *slots);
    for (size_t i = 0; i < w->cap; i++)
        if (w->slots[i].key) *slot_place(slots, cap, w->slots[i].key) = w->slots[i];
    if (w->cap) bilo__free(w->slots, w->cap * sizeof *slots);
    w->slots = slots;
    w->cap = cap;
    return true;
}

/* The slot of key, created empty if absent; NULL when out of memory. Invalidates earlier
   slot pointers when the table grows. */
static grad_slot *slot_get(walk_state *w, const void *key)
{
    if (2 * (w->used + 1) > w->cap && !slots_grow(w, w->cap ? 2 * w->cap : 64)) return NULL;
    grad_slot *s = slot_place(w->slots, w->cap, key);
    if (!s->key) {
        s->key = key;
        w->used++;
    }
    return s;
}

/* Room for `more` keys beyond those present without regrowing, so a deep graph is not
   rehashed log2(depth) times (the order and stack arrays still grow by doubling). */
static bool slots_presize(walk_state *w, size_t more)
{
    size_t cap = w->cap ? w->cap : 64;
    while (cap < 2 * (w->used + more)) cap *= 2;
    return cap == w->cap || slots_grow(w, cap);
}

static void walk_free(walk_state *w)
{
    for (size_t i = 0; i < w->cap; i++) bilo_release(w->slots[i].grad);
    if (w->cap) bilo__free(w->slots, w->cap * sizeof *w->slots);
    if (w->cap_order) bilo__free(w->order, w->cap_order * sizeof *w->order);
    if (w->cap_stack) bilo__free(w->stack, w->cap_stack * sizeof *w->stack);
}

static int out_of_memory(const char *fn)
{
    return bilo__fail_code(BILO_ENOMEM, "%s: out of memory walking the graph", fn);
}

static const void *key_of(const bilo_tensor *t) { return t->node ? (const void *)t->node : t; }

/* ---- topological order ----------------------------------------------------------------- */

static bool edge_reaches(const walk_state *w, const bilo_edge *e)
{
    if (e->node) {
        const grad_slot *s = slot_find(w, e->node);
        return s && s->reaches;
    }
    if (!e->leaf) return false;
    if (w->all_leaves) return true;
    const grad_slot *s = slot_find(w, e->leaf);
    return s && s->target;
}

static void finish_node(walk_state *w, bilo_node *n)
{
    bool needed = false;
    for (int i = 0; i < n->n_in; i++) needed |= edge_reaches(w, &n->edge[i]);
    grad_slot *s = slot_find(w, n);
    s->state = DONE;
    s->needed = needed;
    s->reaches = s->target || needed;
    w->order[w->n_order++] = n;
}

/* Iterative post-order DFS from root, so unrolled graphs of any depth fit the C stack. */
static int collect_from(walk_state *w, bilo_node *root, const char *fn)
{
    grad_slot *s = slot_get(w, root);
    if (!s) return out_of_memory(fn);
    if (s->state != UNSEEN) return 0;
    s->state = ON_STACK;
    size_t depth = 0;
    if (!bilo__reserve((void **)&w->stack, &w->cap_stack, 1, sizeof *w->stack)) return out_of_memory(fn);
    w->stack[depth++] = (dfs_frame){root, 0};
    while (depth) {
        dfs_frame *top = &w->stack[depth - 1];
        if (top->next_edge < top->node->n_in) {
            bilo_node *child = top->node->edge[top->next_edge++].node;
            if (!child || child->topo < w->min_topo) continue;
            s = slot_get(w, child);
            if (!s) return out_of_memory(fn);
            if (s->state != UNSEEN) continue;
            s->state = ON_STACK;
            if (!bilo__reserve((void **)&w->stack, &w->cap_stack, depth + 1, sizeof *w->stack))
                return out_of_memory(fn);
            w->stack[depth++] = (dfs_frame){child, 0};
            continue;
        }
        if (!bilo__reserve((void **)&w->order, &w->cap_order, w->n_order + 1, sizeof *w->order))
            return out_of_memory(fn);
        finish_node(w, top->node);
        depth--;
    }
    return 0;
}

/* ---- running the rules ------------------------------------------------------------------ */

/* Add an owned gradient g into the slot of key (taking ownership of g). */
static int accumulate(walk_state *w, const void *key, bool is_leaf, bilo_tensor *g, const char *fn)
{
    grad_slot *s = slot_get(w, key);
    if (!s) {
        bilo_release(g);
        return out_of_memory(fn);
    }
    s->is_leaf = is_leaf;
    if (!s->grad) {
        s->grad = g;
        return 0;
    }
    bilo_scope_begin();
    bilo_tensor *sum = bilo_add(s->grad, g);
    if (sum) bilo_retain(sum);
    bilo_scope_end();
    bilo_release(s->grad);
    bilo_release(g);
    s->grad = sum;
    return sum ? 0 : bilo_errcode();
}

static int check_versions(const bilo_node *n, const char *fn)
{
    const char *name = bilo__op_rule(n->op)->name;
    for (int i = 0; i < n->n_in; i++) {
        unsigned now = version_of(n->in[i]);
        if (now != n->in_version[i])
            return bilo__fail_code(BILO_EGRAPH,
                                   "%s: input %d of '%s' was modified in place after being saved "
                                   "(version %u → %u)",
                                   fn, i, name, n->in_version[i], now);
    }
    if (n->out && version_of(n->out) != n->out_version)
        return bilo__fail_code(BILO_EGRAPH,
                               "%s: the output of '%s' was modified in place after being saved "
                               "(version %u → %u)",
                               fn, name, n->out_version, version_of(n->out));
    return 0;
}

/* The saved output as the rule should see it: under CREATE_GRAPH a fresh header whose node
   is n, so second derivatives flow through y as well (PyTorch's SavedVariable). */
static bilo_tensor *output_for_rule(bilo_node *n, bool create_graph)
{
    if (!n->out || !create_graph) return n->out;
    bilo_tensor *y = bilo__alias(n->out, n->out->ndim, n->out->shape);
    if (!y) return NULL;
    y->node = node_retain(n);
    y->requires_grad = true;
    return y;
}

static int check_rule_result(const bilo_node *n, int i, const bilo_tensor *gx, const char *fn)
{
    const bilo_tensor *x = n->in[i];
    const char *name = bilo__op_rule(n->op)->name;
    if (!gx) {
        if (bilo_errcode()) return bilo_errcode();
        return bilo__fail_code(BILO_EGRAPH, "%s: the backward of '%s' gave no gradient for input %d",
                               fn, name, i);
    }
    bool same = gx->ndim == x->ndim && gx->dtype == x->dtype &&
                !memcmp(gx->shape, x->shape, (size_t)x->ndim * sizeof *x->shape);
    if (same) return 0;
    char a[BILO_SHAPE_BUF], b[BILO_SHAPE_BUF];
    return bilo__fail_code(BILO_EGRAPH,
                           "%s: the backward of '%s' gave a %s %s gradient for a %s %s input %d",
                           fn, name, bilo_dtype_name(gx->dtype),
                           bilo__shape_str(a, gx->ndim, gx->shape), bilo_dtype_name(x->dtype),
                           bilo__shape_str(b, x->ndim, x->shape), i);
}

/* Call n's rule with the gradient of its output; gx[i] receive owned references. */
static int call_rule(bilo_node *n, bilo_tensor *g, const bool *need, bilo_tensor **gx,
                     bool create_graph, const char *fn)
{
    const bilo_op_rule *rule = bilo__op_rule(n->op);
    int rc = 0;
    bilo_scope_begin();
    bilo_rule_ctx ctx = {.attrs = &n->attrs, .x = n->in, .n_in = n->n_in, .g = g,
                         .need = need, .gx = gx};
    ctx.y = output_for_rule(n, create_graph);
    if (rule->needs_output && !ctx.y)
        rc = bilo_errcode();
    else
        rule->backward(&ctx);
    for (int i = 0; i < n->n_in; i++) {
        if (!need[i]) continue;
        if (!rc) rc = check_rule_result(n, i, gx[i], fn);
        if (gx[i]) bilo_retain(gx[i]);
    }
    bilo_scope_end();
    if (rc)
        for (int i = 0; i < n->n_in; i++) {
            bilo_release(gx[i]);
            gx[i] = NULL;
        }
    return rc;
}

static int run_node(walk_state *w, bilo_node *n, bool create_graph, const char *fn)
{
    grad_slot *s = slot_find(w, n);
    if (!s->needed || !s->grad) return 0;
    if (n->freed)
        return bilo__fail_code(BILO_EGRAPH,
                               "%s: the graph through '%s' was freed by an earlier backward; pass "
                               "BILO_RETAIN_GRAPH to that call to differentiate it again",
                               fn, bilo__op_rule(n->op)->name);
    int rc = check_versions(n, fn);
    if (rc) return rc;

    bool need[BILO_MAX_OP_INPUTS];
    bilo_tensor *gx[BILO_MAX_OP_INPUTS];
    for (int i = 0; i < n->n_in; i++) {
        need[i] = edge_reaches(w, &n->edge[i]);
        gx[i] = NULL;
    }
    rc = call_rule(n, s->grad, need, gx, create_graph, fn);
    if (rc) return rc;
    s = slot_find(w, n);
    if (!s->target) {
        bilo_release(s->grad);
        s->grad = NULL;
    }
    for (int i = 0; i < n->n_in && !rc; i++) {
        if (!need[i]) continue;
        const bilo_edge *e = &n->edge[i];
        rc = accumulate(w, e->node ? (const void *)e->node : e->leaf, !e->node, gx[i], fn);
        gx[i] = NULL;
    }
    for (int i = 0; i < n->n_in; i++) bilo_release(gx[i]);
    if (!rc && !w->retain) release_saved(n);
    return rc;
}

/* ---- validation ------------------------------------------------------------------------ */

static int null_argument(const char *fn, const char *what)
{
    if (bilo_errcode()) return bilo_errcode(); /* a failed op upstream already said why */
    return bilo__fail_code(BILO_ENULL, "%s: %s is NULL", fn, what);
}

static int check_outputs(bilo_tensor *const *outputs, int n_out, bilo_tensor *const *cotangents,
                         const char *fn)
{
    if (!outputs || n_out < 1)
        return bilo__fail_code(BILO_EINVAL, "%s: no outputs (outputs %p, n_out %d)", fn,
                               (const void *)outputs, n_out);
    char a[BILO_SHAPE_BUF], b[BILO_SHAPE_BUF];
    for (int i = 0; i < n_out; i++) {
        const bilo_tensor *y = outputs[i];
        const bilo_tensor *u = cotangents ? cotangents[i] : NULL;
        if (!y) return null_argument(fn, "an output");
        if (!u) {
            if (y->numel != 1)
                return bilo__fail_code(BILO_ESHAPE,
                                       "%s: outputs[%d] has shape %s; a cotangent is required for "
                                       "outputs with more than one element",
                                       fn, i, bilo__shape_str(a, y->ndim, y->shape));
            continue;
        }
        if (u->ndim != y->ndim || memcmp(u->shape, y->shape, (size_t)y->ndim * sizeof *y->shape))
            return bilo__fail_code(BILO_ESHAPE, "%s: cotangents[%d] has shape %s but outputs[%d] has %s",
                                   fn, i, bilo__shape_str(a, u->ndim, u->shape), i,
                                   bilo__shape_str(b, y->ndim, y->shape));
        if (u->dtype != y->dtype)
            return bilo__fail_code(BILO_EDTYPE, "%s: cotangents[%d] is %s but outputs[%d] is %s", fn,
                                   i, bilo_dtype_name(u->dtype), i, bilo_dtype_name(y->dtype));
    }
    return 0;
}

static int check_inputs(bilo_tensor *const *inputs, int n_in, bilo_tensor **grads, const char *fn)
{
    if (!inputs || n_in < 1 || !grads)
        return bilo__fail_code(BILO_EINVAL, "%s: no inputs (inputs %p, n_in %d, grads %p)", fn,
                               (const void *)inputs, n_in, (void *)grads);
    for (int j = 0; j < n_in; j++) {
        if (!inputs[j]) return null_argument(fn, "an input");
        if (!inputs[j]->requires_grad)
            return bilo__fail_code(BILO_EINVAL,
                                   "%s: inputs[%d] does not require grad (mark it with "
                                   "bilo_set_requires_grad or pass a tensor computed from one)",
                                   fn, j);
    }
    return 0;
}

/* ---- the walk ---------------------------------------------------------------------------- */

static bilo_tensor *seed_for(bilo_tensor *y, bilo_tensor *u)
{
    if (u) return bilo_retain(u);
    bilo_scope_begin();
    bilo_tensor *one = bilo_ones(y->dtype, y->ndim, y->shape);
    if (one) bilo_retain(one);
    bilo_scope_end();
    return one;
}

/* A lower bound on the nodes the walk will visit: every topo level between an output's
   node and the pruning level holds at least one (a chain of n ops holds exactly n). */
static size_t nodes_at_least(const walk_state *w, bilo_tensor *const *outputs, int n_out)
{
    int64_t most = 0;
    for (int i = 0; i < n_out; i++) {
        const bilo_node *n = outputs[i]->node;
        if (n && n->topo - w->min_topo + 1 > most) most = n->topo - w->min_topo + 1;
    }
    return (size_t)most;
}

/* Order the graph, seed the outputs and run every needed rule, outputs first. */
static int walk_run(walk_state *w, bilo_tensor *const *outputs, int n_out,
                    bilo_tensor *const *cotangents, bool create_graph, const char *fn)
{
    if (!slots_presize(w, nodes_at_least(w, outputs, n_out))) return out_of_memory(fn);
    for (int i = 0; i < n_out; i++) {
        if (!outputs[i]->node) continue;
        int rc = collect_from(w, outputs[i]->node, fn);
        if (rc) return rc;
    }
    for (int i = 0; i < n_out; i++) {
        bilo_tensor *y = outputs[i];
        if (!y->requires_grad) continue;
        const grad_slot *s = slot_find(w, key_of(y));
        bool leaf_target = !y->node && (w->all_leaves || (s && s->target));
        if (!leaf_target && !(s && s->reaches)) continue;
        bilo_tensor *seed = seed_for(y, cotangents ? cotangents[i] : NULL);
        if (!seed) return bilo_errcode();
        int rc = accumulate(w, key_of(y), !y->node, seed, fn);
        if (rc) return rc;
    }
    for (size_t k = w->n_order; k-- > 0;) {
        int rc = run_node(w, w->order[k], create_graph, fn);
        if (rc) return rc;
    }
    return 0;
}

static int walk_with_mode(walk_state *w, bilo_tensor *const *outputs, int n_out,
                          bilo_tensor *const *cotangents, unsigned flags, const char *fn)
{
    bool create_graph = flags & BILO_CREATE_GRAPH;
    w->retain = create_graph || (flags & BILO_RETAIN_GRAPH);
    int saved_depth = enter_backward_mode(create_graph);
    int rc = walk_run(w, outputs, n_out, cotangents, create_graph, fn);
    leave_backward_mode(saved_depth);
    return rc;
}

static bool storage_exclusive(const bilo_tensor *t)
{
    return atomic_load(&t->refcount) == 1 && atomic_load(&t->storage->refcount) == 1;
}

/* A new header on t for the caller's scope, recorded as a reshape under CREATE_GRAPH so it
   stays in the graph. */
static bilo_tensor *fresh_view(bilo_tensor *t, bool create_graph)
{
    int saved_depth = enter_backward_mode(create_graph);
    bilo_tensor *view = bilo_reshape(t, t->ndim, t->shape);
    leave_backward_mode(saved_depth);
    return view;
}

/* Hand the walk's gradient to the caller as a tensor of its own in the innermost scope. */
static bilo_tensor *hand_over(grad_slot *s, bool create_graph)
{
    bilo_tensor *g = s->grad;
    if (atomic_load(&g->refcount) != 1) return fresh_view(g, create_graph); /* shared */
    s->grad = NULL;
    return bilo__scope_adopt(g);
}

static int collect_results(walk_state *w, bilo_tensor *const *inputs, int n_in, bilo_tensor **grads,
                           unsigned flags, const char *fn)
{
    bool create_graph = flags & BILO_CREATE_GRAPH;
    for (int j = 0; j < n_in; j++) {
        const grad_slot *s = slot_find(w, key_of(inputs[j]));
        if (!s->grad && !(flags & BILO_ALLOW_UNUSED))
            return bilo__fail_code(BILO_EGRAPH,
                                   "%s: inputs[%d] is not reached from the outputs (pass "
                                   "BILO_ALLOW_UNUSED to get NULL for it)",
                                   fn, j);
    }
    for (int j = 0; j < n_in; j++) {
        int first = 0;
        while (key_of(inputs[first]) != key_of(inputs[j])) first++;
        if (first < j) { /* the same input twice: a second header on the first result */
            if (grads[first] && !(grads[j] = fresh_view(grads[first], create_graph)))
                return bilo_errcode();
            continue;
        }
        grad_slot *s = slot_find(w, key_of(inputs[j]));
        if (s->grad && !(grads[j] = hand_over(s, create_graph))) return bilo_errcode();
    }
    return 0;
}

/* Take back results already handed to the caller's scope after a later one failed. */
static void release_results(bilo_tensor **grads, int n_in)
{
    for (int j = 0; j < n_in; j++) {
        bilo_release(bilo_keep(grads[j]));
        grads[j] = NULL;
    }
}

BILO_API int bilo_grad(bilo_tensor *const *outputs, int n_out, bilo_tensor *const *cotangents,
                       bilo_tensor *const *inputs, int n_in, bilo_tensor **grads, unsigned flags)
{
    static const char *fn = "bilo_grad";
    if (grads && n_in > 0)
        for (int j = 0; j < n_in; j++) grads[j] = NULL;
    int rc = check_outputs(outputs, n_out, cotangents, fn);
    if (!rc) rc = check_inputs(inputs, n_in, grads, fn);
    if (rc) return rc;

    walk_state w = {0};
    w.min_topo = INT64_MAX;
    for (int j = 0; j < n_in; j++) {
        int64_t topo = inputs[j]->node ? inputs[j]->node->topo : 0;
        if (topo < w.min_topo) w.min_topo = topo;
    }
    for (int j = 0; j < n_in && !rc; j++) {
        grad_slot *s = slot_get(&w, key_of(inputs[j]));
        if (!s) {
            rc = out_of_memory(fn);
            break;
        }
        s->target = true;
        s->reaches = true;
        s->is_leaf = !inputs[j]->node;
    }
    if (!rc) rc = walk_with_mode(&w, outputs, n_out, cotangents, flags, fn);
    if (!rc) rc = collect_results(&w, inputs, n_in, grads, flags, fn);
    if (rc) release_results(grads, n_in);
    walk_free(&w);
    return rc;
}

/* ---- bilo_backward ----------------------------------------------------------------------- */

static int accumulate_into_leaf(bilo_tensor *leaf, grad_slot *s, bool create_graph)
{
    bilo_tensor *g = s->grad;
    if (!leaf->grad && storage_exclusive(g)) {
        leaf->grad = g;
        s->grad = NULL;
        return 0;
    }
    bool in_place = leaf->grad && !leaf->grad->requires_grad && !g->requires_grad &&
                    storage_exclusive(leaf->grad);
    if (in_place) return bilo_axpy_(leaf->grad, 1.0, g);

    int saved_depth = enter_backward_mode(create_graph);
    bilo_scope_begin();
    bilo_tensor *sum = leaf->grad ? bilo_add(leaf->grad, g) : bilo_clone(g);
    if (sum) bilo_retain(sum);
    bilo_scope_end();
    leave_backward_mode(saved_depth);
    if (!sum) return bilo_errcode();
    bilo_release(leaf->grad);
    leaf->grad = sum;
    return 0;
}

BILO_API int bilo_backward(bilo_tensor *loss, unsigned flags)
{
    static const char *fn = "bilo_backward";
    if (!loss) return null_argument(fn, "loss");
    int rc = check_outputs(&loss, 1, NULL, fn);
    if (rc) return rc;
    if (!loss->requires_grad)
        return bilo__fail_code(BILO_EGRAPH,
                               "%s: loss does not require grad (no input of its graph was marked "
                               "with bilo_set_requires_grad)",
                               fn);
    walk_state w = {.all_leaves = true};
    rc = walk_with_mode(&w, &loss, 1, NULL, flags, fn);
    for (size_t i = 0; i < w.cap && !rc; i++) {
        grad_slot *s = &w.slots[i];
        bilo_tensor *leaf = (bilo_tensor *)s->key;
        if (s->key && s->is_leaf && s->grad && leaf->requires_grad)
            rc = accumulate_into_leaf(leaf, s, flags & BILO_CREATE_GRAPH);
    }
    walk_free(&w);
    return rc;
}
