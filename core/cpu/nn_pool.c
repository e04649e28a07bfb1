/* nn_pool.c: max_pool2d, avg_pool2d, adaptive_avg_pool2d and adaptive_max_pool2d,
 * forward and backward on the CPU (float and double).
 *
 * Window rules follow PyTorch's CPU kernels (aten/src/ATen/native/cpu/MaxPoolKernel.cpp,
 * AvgPoolKernel.cpp, AdaptiveMaxPoolKernel.cpp):
 * max pooling starts from -inf with the window's first in-range position as index and
 * takes a value when it is greater or NaN; avg pooling divides by the window clipped to
 * the padded input (count_include_pad) or to the input. Every kernel is parallel over
 * the B*C planes, which are independent in forward and backward.
 * The body is nn_pool.inc, compiled once per element type (see nn_generic.h).
 * Build: part of the core library; standalone test line in spec/c/test_nn_kernels.c. */
#include <math.h>

#include "nn_kernels.h"

#define NN_DOUBLE 0
#include "nn_generic.h"
#include "nn_pool.inc"
#undef NN_DOUBLE
#define NN_DOUBLE 1
#include "nn_generic.h"
#include "nn_pool.inc"
