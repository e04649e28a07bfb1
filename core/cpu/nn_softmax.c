/* nn_softmax.c: softmax and log_softmax over the last dim of a (rows, n) matrix,
 * forward and backward on the CPU (float and double).
 *
 * Max-subtracted; exponentials in the element type, their sum in double. Backward
 * from the forward's output y: softmax dx = y*(dy - sum(dy*y)), log_softmax
 * dx = dy - exp(y)*sum(dy). Parallel over rows.
 * The body is nn_softmax.inc, compiled once per element type (see nn_generic.h).
 * Build: part of the core library; standalone test line in spec/c/test_nn_kernels.c. */
#include <math.h>

#include "nn_kernels.h"

#define NN_DOUBLE 0
#include "nn_generic.h"
#include "nn_softmax.inc"
#undef NN_DOUBLE
#define NN_DOUBLE 1
#include "nn_generic.h"
#include "nn_softmax.inc"
