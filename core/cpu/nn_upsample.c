/* nn_upsample.c: bilinear interpolation (F.interpolate mode='bilinear'), forward and
 * backward on the CPU (float and double).
 *
 * Source coordinates follow PyTorch's area_pixel_compute_scale and
 * area_pixel_compute_source_index (aten/src/ATen/native/UpSample.h), computed in the
 * element type as PyTorch does; the two neighbours are i0 = floor(src) (at most in-1)
 * and i1 = i0 + 1 except at the last row/column, weights 1 - lambda and lambda.
 * Parallel over the B*C planes, which are independent in forward and backward.
 * The body is nn_upsample.inc, compiled once per element type (see nn_generic.h).
 * Build: part of the core library; standalone test line in spec/c/test_nn_kernels.c. */
#include <math.h>

#include "nn_kernels.h"

#define NN_DOUBLE 0
#include "nn_generic.h"
#include "nn_upsample.inc"
#undef NN_DOUBLE
#define NN_DOUBLE 1
#include "nn_generic.h"
#include "nn_upsample.inc"
