/* iter.c: strided iteration shared by the CPU kernels. Operands of one shape (with
 * broadcast strides) are walked as rows along the last dimension after merging the
 * dimensions that are contiguous for every operand; rows run in parallel when large. */
#include "internal.h"

void fv_iter_init(fv_iter *it, int count, const fv_tensor *const *ts) {
  const fv_tensor *ref = ts[0];
  it->count = count;
  it->ndim = 0;
  for (int k = 0; k < count; k++) it->base[k] = ts[k]->offset;
  for (int d = 0; d < ref->ndim; d++) {
    if (ref->sizes[d] == 1) continue;
    int n = it->ndim;
    int merge = n > 0;
    for (int k = 0; k < count && merge; k++)
      merge = it->strides[k][n - 1] == ts[k]->strides[d] * ref->sizes[d];
    if (merge) {
      it->sizes[n - 1] *= ref->sizes[d];
      for (int k = 0; k < count; k++) it->strides[k][n - 1] = ts[k]->strides[d];
    } else {
      it->sizes[n] = ref->sizes[d];
      for (int k = 0; k < count; k++) it->strides[k][n] = ts[k]->strides[d];
      it->ndim = n + 1;
    }
  }
  if (it->ndim == 0) { /* a single element */
    it->ndim = 1;
    it->sizes[0] = fv_shape_numel(ref->ndim, ref->sizes) ? 1 : 0;
    for (int k = 0; k < count; k++) it->strides[k][0] = 1;
  }
}

void fv_iter_rows(const fv_iter *it, fv_row_fn row, void *ctx) {
  int last = it->ndim - 1;
  int64_t n = it->sizes[last];
  int64_t rows = 1;
  for (int d = 0; d < last; d++) rows *= it->sizes[d];
  if (n == 0 || rows == 0) return;
  int64_t strides[3] = {0, 0, 0};
  for (int k = 0; k < it->count; k++) strides[k] = it->strides[k][last];
  /* long rows are cut into pieces so that one big contiguous tensor still runs in parallel */
  int64_t piece = n > 32768 ? 16384 : n;
  int64_t pieces = (n + piece - 1) / piece;
  int64_t tasks = rows * pieces;
#pragma omp parallel for schedule(static) if (rows * n > 65536 && tasks > 1)
  for (int64_t task = 0; task < tasks; task++) {
    int64_t r = task / pieces, start = (task % pieces) * piece;
    int64_t len = n - start < piece ? n - start : piece;
    int64_t off[3];
    for (int k = 0; k < it->count; k++) off[k] = it->base[k] + start * strides[k];
    int64_t rem = r;
    for (int d = last - 1; d >= 0; d--) {
      int64_t i = rem % it->sizes[d];
      rem /= it->sizes[d];
      for (int k = 0; k < it->count; k++) off[k] += i * it->strides[k][d];
    }
    row(ctx, off, len, strides);
  }
}
