/* autograd.c: reverse-mode automatic differentiation. Ops record nodes (fv_record);
 * fv_backward orders the nodes reachable from a tensor so that every node runs after
 * all of its consumers, runs their backward functions with grad mode off, routes the
 * input gradients along the edges, and accumulates (+=) into the leaves' gradients. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local int grad_disabled;

int fv_set_grad_enabled(int enabled) {
  int previous = !grad_disabled;
  grad_disabled = !enabled;
  return previous;
}

int fv_is_grad_enabled(void) { return !grad_disabled; }

const char *fv_node_name(const fv_node *node) { return node ? node->name : "leaf"; }

int fv_should_record(int n, const fv_tensor *const *inputs) {
  if (grad_disabled) return 0;
  for (int i = 0; i < n; i++)
    if (inputs[i] && inputs[i]->needs_grad) return 1;
  return 0;
}

int fv_check_inplace(const char *op, const fv_tensor *t) {
  if (!grad_disabled && t->needs_grad)
    return fv_fail(FV_ERR_ARGUMENT,
                   "%s: tensor %s needs gradients; in-place changes would corrupt them (detach it or use no_grad)",
                   op, fv_shape_of(t));
  return FV_OK;
}

static void release_saved(fv_node *node) {
  for (int i = 0; i < node->n_saved; i++) {
    fv_tensor_release(node->saved[i]);
    node->saved[i] = NULL;
  }
}

void fv_node_release(fv_node *node) {
  if (!node || __atomic_sub_fetch(&node->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
  for (int i = 0; i < node->n_inputs; i++) {
    fv_node_release(node->edges[i].node);
    fv_tensor_release(node->edges[i].leaf);
  }
  release_saved(node);
  fv_tensor_release(node->grad);
  free(node->edges);
  free(node->inputs);
  free(node->saved);
  free(node);
}

int fv_record(fv_node **node, fv_tensor *out, const char *name, fv_backward_fn backward, int n_inputs,
              const fv_tensor *const *inputs, int n_saved, const fv_tensor *const *saved) {
  *node = NULL;
  if (!fv_should_record(n_inputs, inputs)) return FV_OK;
  fv_node *n = calloc(1, sizeof *n);
  if (n) {
    n->edges = calloc((size_t)n_inputs, sizeof *n->edges);
    n->inputs = calloc((size_t)n_inputs, sizeof *n->inputs);
    n->saved = calloc((size_t)(n_saved ? n_saved : 1), sizeof *n->saved);
  }
  if (!n || !n->edges || !n->inputs || !n->saved) {
    if (n) {
      free(n->edges);
      free(n->inputs);
      free(n->saved);
      free(n);
    }
    return fv_fail(FV_ERR_MEMORY, "%s: out of memory recording the autograd node", name);
  }
  n->refcount = 1;
  n->name = name;
  n->backward = backward;
  n->n_inputs = n_inputs;
  for (int i = 0; i < n_inputs; i++) {
    const fv_tensor *in = inputs[i];
    if (!in) continue;
    n->inputs[i] = *in;
    n->inputs[i].storage = NULL;
    n->inputs[i].gradient = NULL;
    n->inputs[i].grad_fn = NULL;
    if (in->grad_fn) {
      n->edges[i].node = in->grad_fn;
      __atomic_add_fetch(&in->grad_fn->refcount, 1, __ATOMIC_RELAXED);
    } else if (in->needs_grad) {
      n->edges[i].leaf = (fv_tensor *)in;
      fv_tensor_retain(n->edges[i].leaf);
    }
  }
  n->n_saved = n_saved;
  for (int i = 0; i < n_saved; i++) {
    if (!saved[i]) continue;
    int status = fv_tensor_alias(&n->saved[i], saved[i]);
    if (status) {
      fv_node_release(n);
      return status;
    }
  }
  fv_node_release(out->grad_fn);
  out->grad_fn = n;
  out->needs_grad = 1;
  *node = n;
  return FV_OK;
}

int fv_tensor_set_grad(fv_tensor *t, fv_tensor *grad) {
  if (!t) return fv_fail(FV_ERR_ARGUMENT, "set_grad: tensor is nil");
  if (grad) {
    FV_TRY(fv_check_live("set_grad", grad));
    if (grad->ndim != t->ndim || fv_tensor_numel(grad) != fv_tensor_numel(t) || grad->scalar_type != t->scalar_type)
      return fv_fail(FV_ERR_SHAPE, "set_grad: gradient %s %s does not match tensor %s %s", fv_dtype_name(grad->scalar_type),
                     fv_shape_of(grad), fv_dtype_name(t->scalar_type), fv_shape_of(t));
    for (int d = 0; d < t->ndim; d++)
      if (grad->sizes[d] != t->sizes[d])
        return fv_fail(FV_ERR_SHAPE, "set_grad: gradient %s does not match tensor %s", fv_shape_of(grad), fv_shape_of(t));
    fv_tensor_retain(grad);
  }
  fv_tensor_release(t->gradient);
  t->gradient = grad;
  return FV_OK;
}

int fv_detach(fv_tensor **out, const fv_tensor *t) {
  FV_TRY(fv_check_live("detach", t));
  return fv_tensor_alias(out, t);
}

int fv_sum_to(fv_tensor **out, const fv_tensor *g, const fv_tensor *like) {
  fv_tensor *cur = (fv_tensor *)g;
  fv_tensor_retain(cur);
  /* leading dimensions that like does not have */
  while (cur->ndim > like->ndim) {
    fv_tensor *next;
    int status = fv_reduce(&next, FV_OP_SUM, cur, 0, 0, 0, 0);
    fv_tensor_release(cur);
    if (status) return status;
    cur = next;
  }
  for (int d = 0; d < like->ndim; d++) {
    if (like->sizes[d] != 1 || cur->sizes[d] == 1) continue;
    fv_tensor *next;
    int status = fv_reduce(&next, FV_OP_SUM, cur, d, 1, 0, 0);
    fv_tensor_release(cur);
    if (status) return status;
    cur = next;
  }
  *out = cur;
  return FV_OK;
}

fv_tensor *fv_op2(int op, const fv_tensor *a, const fv_tensor *b) {
  fv_tensor *o;
  return a && b && !fv_binary(&o, op, a, b) ? o : NULL;
}

fv_tensor *fv_op2s(int op, const fv_tensor *a, double s, int scalar_first) {
  fv_tensor *o;
  return a && !fv_binary_scalar(&o, op, a, s, scalar_first) ? o : NULL;
}

fv_tensor *fv_op1(int op, const fv_tensor *a) {
  fv_tensor *o;
  return a && !fv_unary(&o, op, a) ? o : NULL;
}

fv_tensor *fv_take_sum_to(fv_tensor *g, const fv_tensor *like) {
  if (!g) return NULL;
  fv_tensor *o;
  int status = fv_sum_to(&o, g, like);
  fv_tensor_release(g);
  return status ? NULL : o;
}

int fv_grads_ready(const fv_node *node, fv_tensor **gin) {
  for (int i = 0; i < node->n_inputs; i++) {
    if ((node->edges[i].node || node->edges[i].leaf) && !gin[i]) {
      int status = fv_last_status();
      return status ? status : fv_fail(FV_ERR_INTERNAL, "backward of %s: no gradient for input %d", node->name, i);
    }
  }
  return FV_OK;
}

/* Whether g is held by its one reference and is the only user of its memory, which it
 * fills exactly (dense, from the storage's start): what a backward function makes fresh
 * for an input, so a leaf may keep it as its gradient with no copy (PyTorch's
 * AccumulateGrad does the same). */
static int held_alone(const fv_tensor *g) {
  return g->refcount == 1 && g->storage && g->storage->refcount == 1 && g->offset == 0 &&
         fv_tensor_is_contiguous(g) &&
         g->storage->bytes == (size_t)fv_tensor_numel(g) * (size_t)fv_dtype_size(g->scalar_type);
}

/* dst (a node's or leaf's gradient slot) += g. A first gradient is taken as is for nodes;
 * for leaves (own_copy) it is cloned unless held_alone (the caller may keep g or views of
 * it; a clone also makes it dense). */
static int accumulate(fv_tensor **slot, const fv_tensor *g, int own_copy) {
  if (!*slot) {
    if (own_copy && !held_alone(g)) return fv_clone(slot, g);
    fv_tensor_retain((fv_tensor *)g);
    *slot = (fv_tensor *)g;
    return FV_OK;
  }
  fv_tensor *sum;
  FV_TRY(fv_binary(&sum, FV_OP_ADD, *slot, g));
  fv_tensor_release(*slot);
  *slot = sum;
  return FV_OK;
}

/* Growable array of nodes. */
typedef struct {
  fv_node **items;
  int count, capacity;
} node_list;

static int push(node_list *list, fv_node *node) {
  if (list->count == list->capacity) {
    int cap = list->capacity ? 2 * list->capacity : 64;
    fv_node **items = realloc(list->items, (size_t)cap * sizeof *items);
    if (!items) return fv_fail(FV_ERR_MEMORY, "backward: out of memory for the graph");
    list->items = items;
    list->capacity = cap;
  }
  list->items[list->count++] = node;
  return FV_OK;
}

/* Every node reachable from root, each once, with pending = its number of consumers. */
static int collect(fv_node *root, node_list *all) {
  node_list stack = {0};
  int status = push(&stack, root);
  root->visited = 1;
  while (!status && stack.count > 0) {
    fv_node *node = stack.items[--stack.count];
    status = push(all, node);
    for (int i = 0; i < node->n_inputs && !status; i++) {
      fv_node *next = node->edges[i].node;
      if (!next) continue;
      next->pending++;
      if (!next->visited) {
        next->visited = 1;
        status = push(&stack, next);
      }
    }
  }
  free(stack.items);
  return status;
}

static int check_grad_shape(const fv_node *node, int i, const fv_tensor *g) {
  const fv_tensor *in = &node->inputs[i];
  int same = g->ndim == in->ndim && g->scalar_type == in->scalar_type;
  for (int d = 0; same && d < in->ndim; d++) same = g->sizes[d] == in->sizes[d];
  if (same) return FV_OK;
  return fv_fail(FV_ERR_INTERNAL, "backward of %s: gradient %s %s for input %d of shape %s %s", node->name,
                 fv_dtype_name(g->scalar_type), fv_shape_of(g), i, fv_dtype_name(in->scalar_type), fv_shape_of(in));
}

/* Runs one node's backward and routes the input gradients. */
static int run_node(fv_node *node, node_list *ready) {
  if (node->released)
    return fv_fail(FV_ERR_ARGUMENT, "backward: trying to go through %s a second time, but its saved tensors were "
                   "freed; pass retain_graph the first time", node->name);
  fv_tensor *grad_in[64] = {0};
  fv_tensor **gin = node->n_inputs <= 64 ? grad_in : calloc((size_t)node->n_inputs, sizeof *gin);
  if (!gin) return fv_fail(FV_ERR_MEMORY, "backward: out of memory");
  int status = node->grad ? node->backward(node, node->grad, gin) : FV_OK;
  for (int i = 0; i < node->n_inputs; i++) {
    fv_edge *e = &node->edges[i];
    if (!status && gin[i] && (e->node || e->leaf)) {
      status = check_grad_shape(node, i, gin[i]);
      if (!status && e->leaf) status = accumulate(&e->leaf->gradient, gin[i], 1);
      if (!status && e->node) status = accumulate(&e->node->grad, gin[i], 0);
    }
    if (e->node && --e->node->pending == 0 && !status) status = push(ready, e->node);
    fv_tensor_release(gin[i]);
  }
  if (gin != grad_in) free(gin);
  fv_tensor_release(node->grad);
  node->grad = NULL;
  return status;
}

int fv_backward(fv_tensor *t, const fv_tensor *grad, int retain_graph) {
  FV_TRY(fv_check_live("backward", t));
  if (!t->needs_grad)
    return fv_fail(FV_ERR_ARGUMENT, "backward: tensor %s does not need gradients (no input had requires_grad)",
                   fv_shape_of(t));
  fv_tensor *seed;
  if (grad) {
    FV_TRY(fv_check_live("backward", grad));
    if (grad->ndim != t->ndim || fv_tensor_numel(grad) != fv_tensor_numel(t))
      return fv_fail(FV_ERR_SHAPE, "backward: gradient %s does not match tensor %s", fv_shape_of(grad), fv_shape_of(t));
    fv_tensor_retain((fv_tensor *)grad);
    seed = (fv_tensor *)grad;
  } else {
    if (fv_tensor_numel(t) != 1)
      return fv_fail(FV_ERR_SHAPE, "backward: tensor %s has %lld elements; give the gradient for a non-scalar output",
                     fv_shape_of(t), (long long)fv_tensor_numel(t));
    FV_TRY(fv_ones(&seed, t->ndim, t->sizes, t->scalar_type, t->device_type));
  }
  int was_enabled = fv_set_grad_enabled(0);
  int status;
  if (!t->grad_fn) { /* a leaf: its gradient is the seed */
    status = accumulate(&t->gradient, seed, 1);
    fv_tensor_release(seed);
    fv_set_grad_enabled(was_enabled);
    return status;
  }
  node_list all = {0}, ready = {0};
  fv_node *root = t->grad_fn;
  status = collect(root, &all);
  if (!status) status = accumulate(&root->grad, seed, 0);
  fv_tensor_release(seed);
  if (!status) status = push(&ready, root);
  while (!status && ready.count > 0) {
    fv_node *node = ready.items[--ready.count];
    status = run_node(node, &ready);
    if (!status && !retain_graph && node->n_saved > 0) {
      release_saved(node);
      node->released = 1;
    }
  }
  for (int i = 0; i < all.count; i++) { /* leave the graph clean for a later backward */
    all.items[i]->visited = 0;
    all.items[i]->pending = 0;
    fv_tensor_release(all.items[i]->grad);
    all.items[i]->grad = NULL;
  }
  free(all.items);
  free(ready.items);
  fv_set_grad_enabled(was_enabled);
  return status;
}
