/* nn_shuffle.c: channel_shuffle (ShuffleNet) forward and backward on the CPU (float
 * and double). (B, C, S) viewed as (B, g, C/g, S) with the two channel dims swapped;
 * the backward is the inverse permutation, accumulated. Parallel over (batch, channel),
 * each a contiguous run of S elements.
 * The body is nn_shuffle.inc, compiled once per element type (see nn_generic.h).
 * Build: part of the core library; standalone test line in spec/c/test_nn_kernels.c. */
#include <string.h>

#include "nn_kernels.h"

#define NN_DOUBLE 0
#include "nn_generic.h"
#include "nn_shuffle.inc"
#undef NN_DOUBLE
#define NN_DOUBLE 1
#include "nn_generic.h"
#include "nn_shuffle.inc"
