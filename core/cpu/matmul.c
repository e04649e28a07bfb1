/* cpu/matmul.c: batched matrix products through CBLAS (sgemm/dgemm). Each matrix of a
 * and b is passed as is when its rows or columns are unit-stride, else copied. */
#include <cblas.h>
#include <stdlib.h>

#include "cpu.h"

/* How a (rows x cols) matrix with strides (rs, cs) can go to BLAS: transposed or not and
 * its leading dimension; returns 0 when it needs a contiguous copy first. */
static int blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, CBLAS_TRANSPOSE *trans, int64_t *ld) {
  if ((cs == 1 || cols == 1) && rs >= (cols > 1 ? cols : 1)) {
    *trans = CblasNoTrans;
    *ld = rs > 0 ? rs : 1;
    return 1;
  }
  if ((rs == 1 || rows == 1) && cs >= (rows > 1 ? rows : 1)) {
    *trans = CblasTrans;
    *ld = cs > 0 ? cs : 1;
    return 1;
  }
  return 0;
}

int fv_cpu_matmul(fv_tensor *out, const fv_tensor *a, const fv_tensor *b) {
  int nb = out->ndim - 2;
  int64_t m = out->sizes[nb], n = out->sizes[nb + 1], k = a->sizes[nb + 1];
  int64_t batch = fv_shape_numel(nb, out->sizes);
  fv_tensor *ca = NULL, *cb = NULL;
  CBLAS_TRANSPOSE ta = CblasNoTrans, tb = CblasNoTrans;
  int64_t lda = 1, ldb = 1;
  const fv_tensor *ua = a, *ub = b;
  if (!blas_layout(m, k, a->strides[nb], a->strides[nb + 1], &ta, &lda)) {
    FV_TRY(fv_clone(&ca, a));
    ua = ca;
    blas_layout(m, k, ua->strides[nb], ua->strides[nb + 1], &ta, &lda);
  }
  if (!blas_layout(k, n, b->strides[nb], b->strides[nb + 1], &tb, &ldb)) {
    int status = fv_clone(&cb, b);
    if (status) {
      fv_tensor_release(ca);
      return status;
    }
    ub = cb;
    blas_layout(k, n, ub->strides[nb], ub->strides[nb + 1], &tb, &ldb);
  }
  int is64 = out->scalar_type == FV_FLOAT64;
  int size = fv_dtype_size(out->scalar_type);
  for (int64_t bi = 0; bi < batch; bi++) {
    int64_t oa = ua->offset, ob = ub->offset, rem = bi;
    for (int d = nb - 1; d >= 0; d--) {
      int64_t i = rem % out->sizes[d];
      rem /= out->sizes[d];
      oa += i * ua->strides[d];
      ob += i * ub->strides[d];
    }
    char *pa = fv_cpu_base(ua) + oa * size, *pb = fv_cpu_base(ub) + ob * size;
    char *po = (char *)fv_tensor_data(out) + bi * m * n * size;
    if (k == 0) {
      for (int64_t i = 0; i < m * n; i++) {
        if (is64) ((double *)po)[i] = 0;
        else ((float *)po)[i] = 0;
      }
    } else if (is64) {
      cblas_dgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0, (const double *)pa, (int)lda,
                  (const double *)pb, (int)ldb, 0.0, (double *)po, (int)(n > 0 ? n : 1));
    } else {
      cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0f, (const float *)pa, (int)lda,
                  (const float *)pb, (int)ldb, 0.0f, (float *)po, (int)(n > 0 ? n : 1));
    }
  }
  fv_tensor_release(ca);
  fv_tensor_release(cb);
  return FV_OK;
}
