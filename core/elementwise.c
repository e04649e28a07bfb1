/* elementwise.c: the elementwise ops: front ends that check dtypes, devices and
 * broadcasting, allocate the output and hand broadcast views to the device's kernels,
 * and their backward functions. */
#include <math.h>

#include "internal.h"

static int is_comparison(int op) { return op >= FV_OP_EQ && op <= FV_OP_GE; }

/* d(a op b): saved = {a, b, out} */
static int binary_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  const fv_tensor *a = node->saved[0], *b = node->saved[1], *out = node->saved[2];
  const fv_tensor *ma = &node->inputs[0], *mb = &node->inputs[1];
  int need_a = fv_node_needs(node, 0), need_b = fv_node_needs(node, 1);
  fv_tensor *ga = NULL, *gb = NULL, *t = NULL, *u = NULL;
  switch (node->iarg[0]) {
    case FV_OP_ADD:
      if (need_a) ga = fv_take_sum_to(fv_ref(g), ma);
      if (need_b) gb = fv_take_sum_to(fv_ref(g), mb);
      break;
    case FV_OP_SUB:
      if (need_a) ga = fv_take_sum_to(fv_ref(g), ma);
      if (need_b) gb = fv_take_sum_to(fv_op1(FV_OP_NEG, g), mb);
      break;
    case FV_OP_MUL:
      if (need_a) ga = fv_take_sum_to(fv_op2(FV_OP_MUL, g, b), ma);
      if (need_b) gb = fv_take_sum_to(fv_op2(FV_OP_MUL, g, a), mb);
      break;
    case FV_OP_DIV: /* d/da = 1/b, d/db = -out/b */
      if (need_a) ga = fv_take_sum_to(fv_op2(FV_OP_DIV, g, b), ma);
      if (need_b) {
        t = fv_op2(FV_OP_MUL, g, out);
        u = fv_op2(FV_OP_DIV, t, b);
        gb = fv_take_sum_to(fv_op1(FV_OP_NEG, u), mb);
      }
      break;
    case FV_OP_POW: /* d/da = b a^(b-1), d/db = out log a */
      if (need_a) {
        t = fv_op2(FV_OP_POW, a, u = fv_op2s(FV_OP_SUB, b, 1.0, 0));
        fv_tensor_release(u);
        u = fv_op2(FV_OP_MUL, t, b);
        ga = fv_take_sum_to(fv_op2(FV_OP_MUL, g, u), ma);
        fv_tensor_release(t);
        fv_tensor_release(u);
        t = u = NULL;
      }
      if (need_b) {
        t = fv_op1(FV_OP_LOG, a);
        u = fv_op2(FV_OP_MUL, out, t);
        gb = fv_take_sum_to(fv_op2(FV_OP_MUL, g, u), mb);
      }
      break;
    case FV_OP_MAXIMUM:
    case FV_OP_MINIMUM: { /* the gradient goes to the winner; ties split it */
      int cmp = node->iarg[0] == FV_OP_MAXIMUM ? FV_OP_GT : FV_OP_LT;
      fv_tensor *win = fv_op2(cmp, a, b), *tie = fv_op2(FV_OP_EQ, a, b);
      fv_tensor *half = fv_op2s(FV_OP_MUL, tie, 0.5, 0);
      t = fv_op2(FV_OP_ADD, win, half); /* share of a */
      if (need_a) ga = fv_take_sum_to(fv_op2(FV_OP_MUL, g, t), ma);
      if (need_b) {
        u = fv_op2s(FV_OP_SUB, t, 1.0, 1);
        gb = fv_take_sum_to(fv_op2(FV_OP_MUL, g, u), mb);
      }
      fv_tensor_release(win);
      fv_tensor_release(tie);
      fv_tensor_release(half);
      break;
    }
  }
  fv_tensor_release(t);
  fv_tensor_release(u);
  gin[0] = ga;
  gin[1] = gb;
  return fv_grads_ready(node, gin);
}

/* d(a op s) or d(s op a): saved = {a, out}; darg[0] = s, iarg = {op, scalar_first} */
static int binary_scalar_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  const fv_tensor *a = node->saved[0], *out = node->saved[1];
  double s = node->darg[0];
  int first = (int)node->iarg[1];
  fv_tensor *t = NULL, *u = NULL, *r = NULL;
  switch (node->iarg[0]) {
    case FV_OP_ADD: r = fv_ref(g); break;
    case FV_OP_SUB: r = first ? fv_op1(FV_OP_NEG, g) : fv_ref(g); break;
    case FV_OP_MUL: r = fv_op2s(FV_OP_MUL, g, s, 0); break;
    case FV_OP_DIV:
      if (!first) {
        r = fv_op2s(FV_OP_MUL, g, 1.0 / s, 0);
      } else { /* d(s/a) = -out/a */
        t = fv_op2(FV_OP_DIV, out, a);
        u = fv_op2(FV_OP_MUL, g, t);
        r = fv_op1(FV_OP_NEG, u);
      }
      break;
    case FV_OP_POW:
      if (!first) { /* d(a^s) = s a^(s-1) */
        t = fv_op2s(FV_OP_POW, a, s - 1.0, 0);
        u = fv_op2s(FV_OP_MUL, t, s, 0);
        r = fv_op2(FV_OP_MUL, g, u);
      } else { /* d(s^a) = out log s */
        t = fv_op2s(FV_OP_MUL, out, log(s), 0);
        r = fv_op2(FV_OP_MUL, g, t);
      }
      break;
    case FV_OP_MAXIMUM:
    case FV_OP_MINIMUM: {
      int cmp = node->iarg[0] == FV_OP_MAXIMUM ? FV_OP_GT : FV_OP_LT;
      t = fv_op2s(cmp, a, s, 0);
      u = fv_op2s(FV_OP_EQ, a, s, 0);
      fv_tensor *half = fv_op2s(FV_OP_MUL, u, 0.5, 0), *share = fv_op2(FV_OP_ADD, t, half);
      r = fv_op2(FV_OP_MUL, g, share);
      fv_tensor_release(half);
      fv_tensor_release(share);
      break;
    }
  }
  fv_tensor_release(t);
  fv_tensor_release(u);
  gin[0] = r;
  return fv_grads_ready(node, gin);
}

/* d f(a): saved = {a, out}; darg = {lo, hi} for clamp */
static int unary_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  const fv_tensor *a = node->saved[0], *out = node->saved[1];
  fv_tensor *t = NULL, *u = NULL, *r = NULL;
  switch (node->iarg[0]) {
    case FV_OP_NEG: r = fv_op1(FV_OP_NEG, g); break;
    case FV_OP_EXP: r = fv_op2(FV_OP_MUL, g, out); break;
    case FV_OP_LOG: r = fv_op2(FV_OP_DIV, g, a); break;
    case FV_OP_SQRT: /* g / (2 out) */
      t = fv_op2s(FV_OP_MUL, out, 2.0, 0);
      r = fv_op2(FV_OP_DIV, g, t);
      break;
    case FV_OP_ABS: /* g sign(a) */
      t = fv_op2s(FV_OP_GT, a, 0.0, 0);
      u = fv_op2s(FV_OP_LT, a, 0.0, 0);
      fv_tensor *sign = fv_op2(FV_OP_SUB, t, u);
      r = fv_op2(FV_OP_MUL, g, sign);
      fv_tensor_release(sign);
      break;
    case FV_OP_RELU:
      t = fv_op2s(FV_OP_GT, out, 0.0, 0);
      r = fv_op2(FV_OP_MUL, g, t);
      break;
    case FV_OP_SIGMOID: /* g out (1 - out) */
      t = fv_op2s(FV_OP_SUB, out, 1.0, 1);
      u = fv_op2(FV_OP_MUL, out, t);
      r = fv_op2(FV_OP_MUL, g, u);
      break;
    case FV_OP_TANH: /* g (1 - out^2) */
      t = fv_op2(FV_OP_MUL, out, out);
      u = fv_op2s(FV_OP_SUB, t, 1.0, 1);
      r = fv_op2(FV_OP_MUL, g, u);
      break;
    case FV_OP_CLAMP: /* g where lo <= a <= hi */
      t = fv_op2s(FV_OP_GE, a, node->darg[0], 0);
      u = fv_op2s(FV_OP_LE, a, node->darg[1], 0);
      fv_tensor *inside = fv_op2(FV_OP_MUL, t, u);
      r = fv_op2(FV_OP_MUL, g, inside);
      fv_tensor_release(inside);
      break;
  }
  fv_tensor_release(t);
  fv_tensor_release(u);
  gin[0] = r;
  return fv_grads_ready(node, gin);
}

static int is_binary(int op) { return op >= FV_OP_ADD && op <= FV_OP_GE; }
static int is_unary(int op) { return op >= FV_OP_NEG && op <= FV_OP_TANH; }

int fv_binary(fv_tensor **out, int op, const fv_tensor *a, const fv_tensor *b) {
  if (!is_binary(op)) return fv_fail(FV_ERR_ARGUMENT, "binary: %s is not a binary op", fv_op_name(op));
  const char *name = fv_op_name(op);
  FV_TRY(fv_check_float(name, a));
  FV_TRY(fv_check_float(name, b));
  FV_TRY(fv_check_same_device(name, a, b));
  if (a->scalar_type != b->scalar_type)
    return fv_fail(FV_ERR_DTYPE, "%s: dtypes differ (%s %s and %s %s); convert one first", name,
                   fv_dtype_name(a->scalar_type), fv_shape_of(a), fv_dtype_name(b->scalar_type), fv_shape_of(b));
  int ndim;
  int64_t shape[FV_MAX_DIMS];
  FV_TRY(fv_broadcast_shapes(name, a, b, &ndim, shape));
  const fv_backend *be = fv_backend_for(name, a->device_type);
  if (!be) return fv_last_status();
  FV_TRY(fv_backend_require(be, op, a->scalar_type));
  fv_tensor *o;
  FV_TRY(fv_alloc_like_shape(&o, ndim, shape, a->scalar_type, a->device_type));
  fv_tensor va, vb;
  fv_broadcast_view(&va, a, ndim, shape);
  fv_broadcast_view(&vb, b, ndim, shape);
  int status = be->binary(op, o, &va, &vb);
  if (!status && !is_comparison(op)) {
    const fv_tensor *inputs[2] = {a, b};
    const fv_tensor *saved[3] = {NULL, NULL, NULL};
    if (op != FV_OP_ADD && op != FV_OP_SUB) {
      saved[0] = a;
      saved[1] = b;
    }
    if (op == FV_OP_DIV || op == FV_OP_POW) saved[2] = o;
    fv_node *node;
    status = fv_record(&node, o, fv_op_name(op), binary_backward, 2, inputs, 3, saved);
    if (node) node->iarg[0] = op;
  }
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  *out = o;
  return FV_OK;
}

/* Checks a and allocates o like it; shared by the scalar and unary front ends. */
static int unary_like(fv_tensor **out, int op, const fv_tensor *a, const fv_backend **be, fv_tensor **o) {
  const char *name = fv_op_name(op);
  FV_TRY(fv_check_float(name, a));
  *be = fv_backend_for(name, a->device_type);
  if (!*be) return fv_last_status();
  FV_TRY(fv_backend_require(*be, op, a->scalar_type));
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "%s: out is NULL", name);
  return fv_alloc_like_shape(o, a->ndim, a->sizes, a->scalar_type, a->device_type);
}

static int finish(fv_tensor **out, fv_tensor *o, int status) {
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  *out = o;
  return FV_OK;
}

int fv_binary_scalar(fv_tensor **out, int op, const fv_tensor *a, double s, int scalar_first) {
  if (!is_binary(op)) return fv_fail(FV_ERR_ARGUMENT, "binary_scalar: %s is not a binary op", fv_op_name(op));
  const fv_backend *be;
  fv_tensor *o;
  FV_TRY(unary_like(out, op, a, &be, &o));
  int status = be->binary_scalar(op, o, a, s, scalar_first);
  if (!status && !is_comparison(op)) {
    /* the input for powers and extrema (and s / a), the output for s / a and s ^ a */
    int uses_input = op == FV_OP_POW || op == FV_OP_MAXIMUM || op == FV_OP_MINIMUM || (op == FV_OP_DIV && scalar_first);
    int uses_output = scalar_first && (op == FV_OP_DIV || op == FV_OP_POW);
    const fv_tensor *saved[2] = {uses_input ? a : NULL, uses_output ? o : NULL};
    fv_node *node;
    status = fv_record(&node, o, fv_op_name(op), binary_scalar_backward, 1, &a, 2, saved);
    if (node) {
      node->iarg[0] = op;
      node->iarg[1] = scalar_first;
      node->darg[0] = s;
    }
  }
  return finish(out, o, status);
}

/* Records the backward of a unary op (or clamp with bounds lo, hi) on o, keeping only
 * what the derivative reads: the input (log, abs, clamp) or the output (exp, sqrt,
 * relu, sigmoid, tanh), so that e.g. a ReLU does not keep its input alive. */
static int record_unary(int op, fv_tensor *o, const fv_tensor *a, double lo, double hi) {
  int uses_input = op == FV_OP_LOG || op == FV_OP_ABS || op == FV_OP_CLAMP;
  int uses_output = op == FV_OP_EXP || op == FV_OP_SQRT || op == FV_OP_RELU || op == FV_OP_SIGMOID ||
                    op == FV_OP_TANH;
  const fv_tensor *saved[2] = {uses_input ? a : NULL, uses_output ? o : NULL};
  fv_node *node;
  FV_TRY(fv_record(&node, o, fv_op_name(op), unary_backward, 1, &a, 2, saved));
  if (node) {
    node->iarg[0] = op;
    node->darg[0] = lo;
    node->darg[1] = hi;
  }
  return FV_OK;
}

int fv_unary(fv_tensor **out, int op, const fv_tensor *a) {
  if (!is_unary(op)) return fv_fail(FV_ERR_ARGUMENT, "unary: %s is not a unary op", fv_op_name(op));
  const fv_backend *be;
  fv_tensor *o;
  FV_TRY(unary_like(out, op, a, &be, &o));
  int status = be->unary(op, o, a, 0.0, 0.0);
  if (!status) status = record_unary(op, o, a, 0.0, 0.0);
  return finish(out, o, status);
}

int fv_clamp(fv_tensor **out, const fv_tensor *a, double lo, double hi) {
  if (lo > hi) return fv_fail(FV_ERR_ARGUMENT, "clamp: lower bound %g is above upper bound %g", lo, hi);
  const fv_backend *be;
  fv_tensor *o;
  FV_TRY(unary_like(out, FV_OP_CLAMP, a, &be, &o));
  int status = be->unary(FV_OP_CLAMP, o, a, lo, hi);
  if (!status) status = record_unary(FV_OP_CLAMP, o, a, lo, hi);
  return finish(out, o, status);
}
