/* errors.cu: the backend's error reporter, fv_cuda_fail (declared in common.cuh, used by
 * its checked-call macros and by every file that reports a failed CUDA call itself): it
 * records "op: call failed at file:line: CUDA's message (its name)" with fv_fail and
 * returns FV_ERR_MEMORY for an allocation failure, else FV_ERR_DEVICE; and
 * fv_cuda_forget_not_ready, which clears a "not ready" left by an event query. A file of its own,
 * apart from the backend table, so that the host test of the allocator, transfers and
 * side stream against a fake CUDA runtime (spec/cuda_host/) links this very function.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/errors.cu (see backend.cu) */
#include "common.cuh"

int fv_cuda_fail(cudaError_t err, const char *op, const char *call, const char *file, int line) {
  /* a non-sticky error stays as the runtime's "last error" unless read once */
  (void)cudaGetLastError();
  int status = err == cudaErrorMemoryAllocation ? FV_ERR_MEMORY : FV_ERR_DEVICE;
  return fv_fail(status, "%s: %s failed at %s:%d: %s (%s)", op, call, file, line, cudaGetErrorString(err),
                 cudaGetErrorName(err));
}

void fv_cuda_forget_not_ready(void) {
  if (cudaPeekAtLastError() == cudaErrorNotReady) (void)cudaGetLastError();
}
