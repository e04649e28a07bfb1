/* nn_batch_norm.c: batch_norm forward and backward on the CPU (float and double).
 *
 * Per channel over (B, S): parallel over channels, sums in double (PyTorch's CPU
 * accumulate type for float), two passes for the variance. Training forward
 * normalises with the biased batch variance and updates the running variance with
 * the unbiased one; eval uses the running stats. The normalisation is applied as
 * out = x*alpha + beta with per-channel alpha = invstd*weight, beta = bias - mean*alpha.
 * The body is nn_batch_norm.inc, compiled once per element type (see nn_generic.h).
 * Build: part of the core library; standalone test line in spec/c/test_nn_kernels.c. */
#include <math.h>

#include "nn_kernels.h"

#define NN_DOUBLE 0
#include "nn_generic.h"
#include "nn_batch_norm.inc"
#undef NN_DOUBLE
#define NN_DOUBLE 1
#include "nn_generic.h"
#include "nn_batch_norm.inc"
