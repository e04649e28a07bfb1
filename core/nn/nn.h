/* nn/nn.h: helpers shared by the neural-network front ends in core/nn/: operand checks,
 * contiguous copies, kernel calls through the backend, and gradient buffers. */
#ifndef FOVEA_NN_H
#define FOVEA_NN_H

#include "../internal.h"

/* Checks t is a live float tensor with ndim dims (any when ndim < 0) of dtype (any when
 * dtype < 0) on device; names op and what (e.g. "input"). */
int fv_nn_check(const char *op, const char *what, const fv_tensor *t, int ndim, int dtype, int device);
/* A contiguous tensor with t's values (t itself, retained, when it already is); NULL
 * t gives NULL. NULL-propagating on failure: returns a status. */
int fv_nn_contiguous(fv_tensor **out, const fv_tensor *t);
/* Runs the forward or backward kernel of call->op on device (checked with dtype). */
int fv_nn_run(const fv_nn_call *call, int device, int dtype, int backward);
/* Zeros shaped like the node's input i when it needs a gradient, else NULL; status. */
int fv_nn_grad_buffer(const fv_node *node, int i, fv_tensor **out);
/* Releases every tensor in list (NULLs allowed). */
void fv_nn_release(int n, fv_tensor **list);

#endif
