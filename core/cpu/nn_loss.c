/* nn_loss.c: cross_entropy from logits (log_softmax + nll_loss fused), forward and
 * backward on the CPU (float and double).
 *
 * Class weights, ignore_index and the reductions none/mean/sum as PyTorch's
 * F.cross_entropy (no label smoothing). Targets are checked before anything is
 * written; a bad one makes the kernel return -1. Parallel over rows.
 * The body is nn_loss.inc, compiled once per element type (see nn_generic.h).
 * Build: part of the core library; standalone test line in spec/c/test_nn_kernels.c. */
#include <math.h>

#include "nn_kernels.h"

/* 0 when every target is in [0, K) or equal to ignore_index, else -1. */
static int ce_check_targets(const int64_t *target, int64_t B, int64_t K, int64_t ignore_index) {
  for (int64_t b = 0; b < B; b++) {
    const int64_t t = target[b];
    if (t != ignore_index && (t < 0 || t >= K)) return -1;
  }
  return 0;
}

#define NN_DOUBLE 0
#include "nn_generic.h"
#include "nn_loss.inc"
#undef NN_DOUBLE
#define NN_DOUBLE 1
#include "nn_generic.h"
#include "nn_loss.inc"
