/* nn/compose.c: ops built from other ops, so that autograd records their parts: cat
 * (with its own backward: slices of the gradient), linear and dropout. */
#include <stdio.h>

#include "nn.h"

/* iarg[0] = dim; each input's gradient is its slice of g along dim */
static int cat_backward(fv_node *node, const fv_tensor *g, fv_tensor **gin) {
  int dim = (int)node->iarg[0];
  int64_t start = 0;
  for (int k = 0; k < node->n_inputs; k++) {
    int64_t size = node->inputs[k].sizes[dim];
    if (fv_node_needs(node, k)) FV_TRY(fv_narrow(&gin[k], g, dim, start, size));
    start += size;
  }
  return FV_OK;
}

int fv_cat(fv_tensor **out, int n, const fv_tensor *const *inputs, int dim) {
  if (n < 1 || !inputs) return fv_fail(FV_ERR_ARGUMENT, "cat: no tensors to join");
  const fv_tensor *first = inputs[0];
  FV_TRY(fv_nn_check("cat", "tensor 1", first, -1, -1, -1));
  int d;
  FV_TRY(fv_wrap_dim("cat", dim, first->ndim, &d));
  int64_t shape[FV_MAX_DIMS];
  for (int k = 0; k < first->ndim; k++) shape[k] = first->sizes[k];
  shape[d] = 0;
  for (int i = 0; i < n; i++) {
    const fv_tensor *t = inputs[i];
    char what[32];
    snprintf(what, sizeof what, "tensor %d", i + 1);
    FV_TRY(fv_nn_check("cat", what, t, first->ndim, first->scalar_type, first->device_type));
    for (int k = 0; k < first->ndim; k++)
      if (k != d && t->sizes[k] != first->sizes[k])
        return fv_fail(FV_ERR_SHAPE, "cat: tensor %d %s does not match tensor 1 %s outside dimension %d", i + 1,
                       fv_shape_of(t), fv_shape_of(first), dim);
    shape[d] += t->sizes[d];
  }
  fv_tensor *o;
  FV_TRY(fv_alloc_like_shape(&o, first->ndim, shape, first->scalar_type, first->device_type));
  int64_t start = 0;
  int status = FV_OK;
  for (int i = 0; i < n && !status; i++) {
    fv_tensor *slot;
    status = fv_narrow(&slot, o, d, start, inputs[i]->sizes[d]);
    if (!status) status = fv_copy_(slot, inputs[i]);
    fv_tensor_release(slot);
    start += inputs[i]->sizes[d];
  }
  if (!status) {
    fv_node *node;
    status = fv_record(&node, o, "cat", cat_backward, n, inputs, 0, NULL);
    if (node) node->iarg[0] = d;
  }
  if (status) {
    fv_tensor_release(o);
    return status;
  }
  *out = o;
  return FV_OK;
}

int fv_linear(fv_tensor **out, const fv_tensor *input, const fv_tensor *weight, const fv_tensor *bias) {
  FV_TRY(fv_nn_check("linear", "input", input, -1, -1, -1));
  FV_TRY(fv_nn_check("linear", "weight", weight, 2, input->scalar_type, input->device_type));
  if (input->ndim < 1 || input->sizes[input->ndim - 1] != weight->sizes[1])
    return fv_fail(FV_ERR_SHAPE, "linear: input %s does not end in the %lld features of weight %s",
                   fv_shape_of(input), (long long)weight->sizes[1], fv_shape_of(weight));
  if (bias) {
    FV_TRY(fv_nn_check("linear", "bias", bias, 1, input->scalar_type, input->device_type));
    if (bias->sizes[0] != weight->sizes[0])
      return fv_fail(FV_ERR_SHAPE, "linear: bias %s does not match weight %s", fv_shape_of(bias), fv_shape_of(weight));
  }
  fv_tensor *wt, *y;
  FV_TRY(fv_transpose(&wt, weight, 0, 1));
  int status = fv_matmul(&y, input, wt);
  fv_tensor_release(wt);
  if (status || !bias) {
    if (!status) *out = y;
    return status;
  }
  status = fv_binary(out, FV_OP_ADD, y, bias);
  fv_tensor_release(y);
  return status;
}

int fv_dropout(fv_tensor **out, const fv_tensor *input, double p, int training, fv_generator *gen) {
  FV_TRY(fv_nn_check("dropout", "input", input, -1, -1, -1));
  if (!(p >= 0 && p <= 1)) return fv_fail(FV_ERR_ARGUMENT, "dropout: probability %g is not in [0, 1]", p);
  if (!training || p == 0) {
    fv_tensor_retain((fv_tensor *)input);
    *out = (fv_tensor *)input;
    return FV_OK;
  }
  if (p == 1) return fv_binary_scalar(out, FV_OP_MUL, input, 0.0, 0);
  fv_tensor *u, *keep, *mask;
  FV_TRY(fv_rand(&u, input->ndim, input->sizes, input->scalar_type, input->device_type, gen));
  int status = fv_binary_scalar(&keep, FV_OP_GE, u, p, 0);
  fv_tensor_release(u);
  if (status) return status;
  status = fv_binary_scalar(&mask, FV_OP_MUL, keep, 1.0 / (1.0 - p), 0);
  fv_tensor_release(keep);
  if (status) return status;
  status = fv_binary(out, FV_OP_MUL, input, mask);
  fv_tensor_release(mask);
  return status;
}
