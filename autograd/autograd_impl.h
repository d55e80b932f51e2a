/* Private to libbilo's autograd: the graph node and the op table of backward rules. */
#ifndef BILO_AUTOGRAD_IMPL_H
#define BILO_AUTOGRAD_IMPL_H

#include "bilo_autograd.h"
#include "tensor_impl.h"

/* Where the gradient of one input goes: the node that produced it, or the leaf itself.
   Both are strong references and survive the release of the saved tensors, so a graph
   whose buffers were freed can still be walked (and reported) by a later backward. */
typedef struct {
    struct bilo_node *node;
    bilo_tensor *leaf;
} bilo_edge;

typedef struct bilo_node {
    atomic_int refcount;   /* held by the output tensor, re-attached outputs, child edges */
    bilo_op_id op;
    int n_in;
    bool freed;            /* saved tensors released by a backward without RETAIN_GRAPH */
    int64_t topo;          /* 1 + the largest topo of its input nodes (0 for leaves): a node
                              can depend on another only if its topo is larger */
    size_t nbytes;         /* size of this allocation (node + the arrays below) */
    bilo_op_attrs attrs;
    bilo_tensor *out;      /* detached alias of the output when the rule needs it */
    unsigned out_version;
    struct bilo_node *next_dead; /* link in the thread's list of nodes being destroyed */
    bilo_edge *edge;       /* [n_in]; empty where the input needs no gradient */
    bilo_tensor **in;      /* [n_in] saved inputs (strong references) */
    unsigned *in_version;  /* [n_in] storage versions at record time */
} bilo_node;

/* What a backward rule sees. Rules use public ops only, so with CREATE_GRAPH the gradient
   they build is recorded and can be differentiated again. */
typedef struct {
    const bilo_op_attrs *attrs;
    bilo_tensor *const *x; /* the op's inputs */
    int n_in;
    bilo_tensor *y;        /* the output (re-attached to the graph under CREATE_GRAPH);
                              NULL unless the rule declares needs_output */
    bilo_tensor *g;        /* gradient flowing into the output */
    const bool *need;      /* need[i]: compute gx[i] */
    bilo_tensor **gx;      /* out: gradient of each needed input, same shape as x[i] */
} bilo_rule_ctx;

typedef void (*bilo_rule_fn)(const bilo_rule_ctx *c);

typedef struct {
    const char *name;      /* the public op's name without the prefix: "tanh" */
    bilo_rule_fn backward; /* NULL for non-differentiable ops, which are never recorded */
    uint64_t diff_inputs;  /* bit i set: input i is differentiable */
    bool needs_output;
    /* What the node must save. Bit i of shape_only: the rule reads only the shape and dtype
       of input i, so a stand-in without data is saved instead. product: each of the two
       inputs' values is read only for the other's gradient, so it is saved only when the
       other input wants one (a matmul against fixed data keeps just the data). */
    uint64_t shape_only;
    bool product;
} bilo_op_rule;

/* The row of op in the table (rules.c). */
const bilo_op_rule *bilo__op_rule(bilo_op_id op);

#endif
