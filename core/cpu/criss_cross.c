/* criss_cross.c: criss-cross attention (CCNet) on the CPU, float and double; described
 * in attention.h.
 *
 * Forward, OpenMP over (batch, row h): the energies of row h's positions against their
 * column (H x W, the self entry masked) and their row (W x W) by direct loops over
 * channels, one softmax per position over the H + W - 1 entries, then the weighted sums
 * of the values. Backward recomputes the attention; pass 1 (per row h) forms the
 * gradients of the energies and adds every term that lands in row h (all of dquery,
 * the row parts of dkey and dvalue); pass 2 (per row h') adds the column parts, which
 * land in other rows, from the column attention and its gradient kept by pass 1
 * (2 * B * H * H * W elements of workspace). No two threads write one element.
 * The body is criss_cross.inc, compiled once per element type (see nn_generic.h). */
#include <math.h>
#include <omp.h>

#include "attention.h"

static size_t cc_round(int64_t n) { return ((size_t)n + 15) & ~(size_t)15; }

/* Elements of one thread's scratch: two accumulator arrays of W (room for double in
 * float elements), 1/sum, then Acol and Arow (forward) or Arow and its gradient. */
static size_t cc_thread_elems(int64_t H, int64_t W, int backward) {
  return cc_round(4 * W) + cc_round(W) + cc_round(backward ? 2 * W * W : H * W + W * W);
}

size_t fv_criss_cross_workspace_size(int64_t B, int64_t H, int64_t W, int threads, int backward,
                                     size_t elem_size) {
  if (B <= 0 || H <= 0 || W <= 0) return 0;
  if (threads < 1) threads = 1;
  size_t n = (size_t)threads * cc_thread_elems(H, W, backward);
  if (backward) n += cc_round(2 * B * H * H * W);
  return n * elem_size;
}

#define NN_DOUBLE 0
#include "nn_generic.h"
#include "criss_cross.inc"
#undef NN_DOUBLE
#define NN_DOUBLE 1
#include "nn_generic.h"
#include "criss_cross.inc"
