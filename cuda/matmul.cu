/* matmul.cu: batched matrix products on the GPU through cuBLAS (sgemm, dgemm, strided
 * batched). out (..., m, n) is contiguous; a (..., m, k) and b (..., k, n) come with
 * broadcast batch dimensions (stride 0 allowed). As in core/cpu/matmul.c each operand's
 * matrices go to cuBLAS as they are when their rows or columns are unit-stride (as
 * transposed or not), else the operand is copied contiguous first. When the batch
 * offsets of both operands are one stride times the batch number (contiguous batches,
 * or a broadcast matrix: stride 0) the whole product is one strided-batched call, else
 * one call per matrix.
 * cuBLAS is column-major: the row-major product out = a b is computed as
 * out^T = b^T a^T, so b goes first.
 * float32 uses TF32 tensor cores by default (10-bit mantissa products, float32
 * accumulation: results differ from the CPU's at about 1e-3 relative);
 * fv_cuda_set_tf32(0) gives full float32 products.
 *
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/matmul.cu (see backend.cu)
 */
#include <limits.h>

#include <cublas_v2.h>

#include <mutex>

#include "common.cuh"

namespace {

cublasHandle_t handle;
bool handle_made;
int tf32 = 1;
std::mutex lock;

const char *blas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED (no usable GPU or driver)";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED (out of GPU memory)";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "unknown cuBLAS status";
  }
}

int blas_fail(cublasStatus_t s, const char *op, const char *call, const char *file, int line) {
  (void)cudaGetLastError();
  int status = s == CUBLAS_STATUS_ALLOC_FAILED ? FV_ERR_MEMORY : FV_ERR_DEVICE;
  return fv_fail(status, "%s: %s failed at %s:%d: %s (%d)", op, call, file, line, blas_status_name(s), (int)s);
}

#define FV_BLAS_TRY(op, call)                                                     \
  do {                                                                            \
    cublasStatus_t fv_blas_status_ = (call);                                      \
    if (fv_blas_status_ != CUBLAS_STATUS_SUCCESS)                                 \
      return blas_fail(fv_blas_status_, (op), #call, __FILE__, __LINE__);         \
  } while (0)

int apply_math_mode(const char *op) {
  FV_BLAS_TRY(op, cublasSetMathMode(handle, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  return FV_OK;
}

/* How a (rows x cols) row-major matrix with strides (rs, cs) goes to cuBLAS: as the
 * column-major (cols x rows) matrix it is when its columns are unit-stride (op N), or
 * transposed when its rows are (op T); 0 when neither. ld: the leading dimension. */
int blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, cublasOperation_t *op, int64_t *ld) {
  if ((cs == 1 || cols == 1) && rs >= (cols > 1 ? cols : 1)) {
    *op = CUBLAS_OP_N;
    *ld = rs > 0 ? rs : 1;
    if (*ld < cols) *ld = cols > 1 ? cols : 1;
    return 1;
  }
  if ((rs == 1 || rows == 1) && cs >= (rows > 1 ? rows : 1)) {
    *op = CUBLAS_OP_T;
    *ld = cs > 0 ? cs : 1;
    if (*ld < rows) *ld = rows > 1 ? rows : 1;
    return 1;
  }
  return 0;
}

/* The stride between consecutive matrices of t over the flattened batch dims (sizes of
 * out), when there is one: 1 and *stride set, else 0. */
int batch_stride(const fv_tensor *t, const fv_tensor *out, int nb, int64_t *stride) {
  int64_t s = -1, expect = 0;
  for (int d = nb - 1; d >= 0; d--) {
    if (out->sizes[d] == 1) continue;
    if (s < 0) { /* the innermost batch dim with more than one matrix sets the stride */
      s = t->strides[d];
      expect = s * out->sizes[d];
    } else {
      if (t->strides[d] != expect) return 0;
      expect *= out->sizes[d];
    }
  }
  *stride = s < 0 ? 0 : s;
  return 1;
}

int too_big(int64_t v) { return v > INT_MAX; }

}  // namespace

extern "C" int fv_cuda_blas_ready(const char *op) {
  std::lock_guard<std::mutex> guard(lock);
  if (!handle_made) {
    FV_BLAS_TRY(op, cublasCreate(&handle));
    handle_made = true;
    FV_BLAS_TRY(op, cublasSetStream(handle, fv_cuda_stream));
    return apply_math_mode(op);
  }
  return FV_OK;
}

int fv_cuda_tf32_enabled(void) { return tf32; }

extern "C" int fv_cuda_set_tf32(int enabled) {
  std::lock_guard<std::mutex> guard(lock);
  int previous = tf32;
  tf32 = enabled != 0;
  if (handle_made && apply_math_mode("set_tf32")) return previous; /* the error stays in fv_last_error */
  return previous;
}

/* Row-major float32 C = alpha op(A) op(B) + beta C, C (m, n) with row stride ldc; op(A)
 * (m, k) is A (row stride lda) or, when ta, the transpose of A stored (k, m); op(B)
 * (k, n) likewise. For the kernels that use cuBLAS directly (nn_nam_gemm.cu); TF32 as
 * set by fv_cuda_set_tf32. */
int fv_cuda_sgemm_rows(const char *op, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                       int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (too_big(m) || too_big(n) || too_big(k) || too_big(lda) || too_big(ldb) || too_big(ldc))
    return fv_fail(FV_ERR_SHAPE, "%s: sizes %lld x %lld x %lld are too large for cuBLAS's int", op, (long long)m,
                   (long long)k, (long long)n);
  FV_TRY(fv_cuda_blas_ready(op));
  /* column-major: C^T = op(B)^T op(A)^T, and a row-major buffer read column-major is its transpose */
  FV_BLAS_TRY(op, cublasSgemm(handle, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m,
                              (int)k, &alpha, B, (int)ldb, A, (int)lda, &beta, C, (int)ldc));
  return FV_OK;
}

extern "C" int fv_cuda_matmul(fv_tensor *out, const fv_tensor *a, const fv_tensor *b) {
  int nb = out->ndim - 2;
  int64_t m = out->sizes[nb], n = out->sizes[nb + 1], k = a->sizes[nb + 1];
  int64_t batch = fv_shape_numel(nb, out->sizes);
  int is64 = out->scalar_type == FV_FLOAT64;
  int size = fv_dtype_size(out->scalar_type);
  if (m == 0 || n == 0 || batch == 0) return FV_OK;
  if (k == 0) { /* an empty sum: zeros */
    FV_CUDA_TRY("matmul", cudaMemsetAsync(fv_cuda_first(out), 0, (size_t)(batch * m * n * size), fv_cuda_stream));
    return FV_OK;
  }
  if (too_big(m) || too_big(n) || too_big(k) || too_big(batch))
    return fv_fail(FV_ERR_SHAPE, "matmul: sizes %lld x %lld x %lld (batch %lld) are too large for cuBLAS's int", (long long)m,
                   (long long)k, (long long)n, (long long)batch);
  FV_TRY(fv_cuda_blas_ready("matmul"));
  fv_tensor *ca = NULL, *cb = NULL;
  const fv_tensor *ua = a, *ub = b;
  cublasOperation_t opa = CUBLAS_OP_N, opb = CUBLAS_OP_N;
  int64_t lda = 1, ldb = 1;
  if (!blas_layout(m, k, a->strides[nb], a->strides[nb + 1], &opa, &lda)) {
    FV_TRY(fv_clone(&ca, a));
    ua = ca;
    blas_layout(m, k, ua->strides[nb], ua->strides[nb + 1], &opa, &lda);
  }
  if (!blas_layout(k, n, b->strides[nb], b->strides[nb + 1], &opb, &ldb)) {
    int status = fv_clone(&cb, b);
    if (status) {
      fv_tensor_release(ca);
      return status;
    }
    ub = cb;
    blas_layout(k, n, ub->strides[nb], ub->strides[nb + 1], &opb, &ldb);
  }
  int status = FV_OK;
  int64_t sa, sb;
  const double one = 1.0, zero = 0.0;
  const float onef = 1.0f, zerof = 0.0f;
  if (too_big(lda) || too_big(ldb)) {
    status = fv_fail(FV_ERR_SHAPE, "matmul: leading dimensions %lld and %lld are too large for cuBLAS's int", (long long)lda,
                     (long long)ldb);
  } else if (batch_stride(ua, out, nb, &sa) && batch_stride(ub, out, nb, &sb)) {
    /* one call: matrix i of a at offset + i * sa, of b at offset + i * sb */
    const char *pa = fv_cuda_first(ua), *pb = fv_cuda_first(ub);
    char *po = fv_cuda_first(out);
    cublasStatus_t s;
    if (is64)
      s = cublasDgemmStridedBatched(handle, opb, opa, (int)n, (int)m, (int)k, &one, (const double *)pb, (int)ldb, sb,
                                    (const double *)pa, (int)lda, sa, &zero, (double *)po, (int)n, m * n, (int)batch);
    else
      s = cublasSgemmStridedBatched(handle, opb, opa, (int)n, (int)m, (int)k, &onef, (const float *)pb, (int)ldb, sb,
                                    (const float *)pa, (int)lda, sa, &zerof, (float *)po, (int)n, m * n, (int)batch);
    if (s != CUBLAS_STATUS_SUCCESS) status = blas_fail(s, "matmul", is64 ? "cublasDgemmStridedBatched" : "cublasSgemmStridedBatched", __FILE__, __LINE__);
  } else {
    for (int64_t bi = 0; bi < batch && !status; bi++) { /* one call per matrix */
      int64_t oa = ua->offset, ob = ub->offset, rem = bi;
      for (int d = nb - 1; d >= 0; d--) {
        int64_t i = rem % out->sizes[d];
        rem /= out->sizes[d];
        oa += i * ua->strides[d];
        ob += i * ub->strides[d];
      }
      const char *pa = fv_cuda_base(ua) + oa * size, *pb = fv_cuda_base(ub) + ob * size;
      char *po = fv_cuda_first(out) + bi * m * n * size;
      cublasStatus_t s;
      if (is64)
        s = cublasDgemm(handle, opb, opa, (int)n, (int)m, (int)k, &one, (const double *)pb, (int)ldb, (const double *)pa,
                        (int)lda, &zero, (double *)po, (int)n);
      else
        s = cublasSgemm(handle, opb, opa, (int)n, (int)m, (int)k, &onef, (const float *)pb, (int)ldb, (const float *)pa,
                        (int)lda, &zerof, (float *)po, (int)n);
      if (s != CUBLAS_STATUS_SUCCESS) status = blas_fail(s, "matmul", is64 ? "cublasDgemm" : "cublasSgemm", __FILE__, __LINE__);
    }
  }
  /* the copies may be freed at once: the allocator reuses them only for later work on the same stream */
  fv_tensor_release(ca);
  fv_tensor_release(cb);
  return status;
}
