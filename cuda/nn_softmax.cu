/* nn_softmax.cu: softmax and log_softmax over the last dim of a contiguous (rows, n)
 * matrix, forward and backward, for float32 and float64, with core/cpu/nn_softmax.inc's
 * semantics: max-subtracted (the max skips NaNs; a NaN then spreads over its row through
 * exp), sums accumulated in double, backward from the forward's output, accumulated
 * (+=) into dinp. One block of FV_CUDA_THREADS threads per row (grid-stride over rows);
 * the sums are combined in a fixed tree order, so they may differ from the CPU's
 * sequential sums in the last bits.
 * Also the shared device error flag of nn_common.cuh.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_softmax.cu -o build/cuda/nn_softmax.o */
#include "nn_common.cuh"

int fv_nn_flag_new(const char *op, int **flag) {
  *flag = (int *)fv_cuda_alloc(sizeof(int));
  if (!*flag) return fv_last_status() ? fv_last_status() : fv_fail(FV_ERR_MEMORY, "%s: cannot allocate a flag", op);
  cudaError_t err = cudaMemsetAsync(*flag, 0, sizeof(int), fv_cuda_stream);
  if (err != cudaSuccess) {
    fv_cuda_free(*flag, sizeof(int));
    *flag = NULL;
    return fv_cuda_fail(err, op, "cudaMemsetAsync(flag)", __FILE__, __LINE__);
  }
  return FV_OK;
}

int fv_nn_flag_read(const char *op, int *flag, int *value) {
  *value = 0;
  cudaError_t err = cudaMemcpy(value, flag, sizeof(int), cudaMemcpyDeviceToHost);
  fv_cuda_free(flag, sizeof(int));
  if (err != cudaSuccess) return fv_cuda_fail(err, op, "cudaMemcpy(flag)", __FILE__, __LINE__);
  return FV_OK;
}

template <typename T, bool LOG>
__global__ void softmax_forward_kernel(T *out, const T *inp, int64_t rows, int64_t n) {
  __shared__ double scratch[FV_CUDA_THREADS];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *x = inp + r * n;
    T *y = out + r * n;
    T m = (T)-INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = x[j] > m ? x[j] : m;
    m = (T)fv_nn_block_max((double)m, scratch);
    double s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += (double)fv_nn_exp((T)(x[j] - m));
    s = fv_nn_block_sum(s, scratch);
    if (LOG) {
      const T shift = m + (T)log(s);
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) y[j] = x[j] - shift;
    } else {
      const T inv = (T)(1 / s);
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) y[j] = fv_nn_exp((T)(x[j] - m)) * inv;
    }
  }
}

template <typename T, bool LOG>
__global__ void softmax_backward_kernel(T *dinp, const T *dout, const T *out, int64_t rows, int64_t n) {
  __shared__ double scratch[FV_CUDA_THREADS];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *dy = dout + r * n, *y = out + r * n;
    T *dx = dinp + r * n;
    double s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += LOG ? (double)dy[j] : (double)dy[j] * (double)y[j];
    const T st = (T)fv_nn_block_sum(s, scratch);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      if (LOG) dx[j] += dy[j] - fv_nn_exp(y[j]) * st;
      else dx[j] += y[j] * (dy[j] - st);
    }
  }
}

template <typename T> static int softmax_run(const fv_nn_call *c, int backward) {
  const char *op = fv_op_name(c->op);
  const int log_ = c->op == FV_OP_LOG_SOFTMAX;
  const fv_tensor *shape = c->t[backward ? 0 : 1];
  int64_t n = shape->ndim ? shape->sizes[shape->ndim - 1] : 1;
  int64_t rows = n ? fv_tensor_numel(shape) / n : 0;
  if (rows == 0 || n == 0) return FV_OK;
  unsigned grid = fv_nn_row_blocks(rows);
  if (!backward) {
    T *out = fv_nn_ptr<T>(c, 0);
    const T *inp = fv_nn_ptr<T>(c, 1);
    if (log_) softmax_forward_kernel<T, true><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(out, inp, rows, n);
    else softmax_forward_kernel<T, false><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(out, inp, rows, n);
  } else {
    T *dinp = fv_nn_ptr<T>(c, 0);
    const T *dout = fv_nn_ptr<T>(c, 1), *out = fv_nn_ptr<T>(c, 2);
    if (log_)
      softmax_backward_kernel<T, true><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(dinp, dout, out, rows, n);
    else
      softmax_backward_kernel<T, false><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(dinp, dout, out, rows, n);
  }
  FV_CUDA_LAUNCHED(op);
  return FV_OK;
}

int fv_cuda_nn_softmax(const fv_nn_call *c, int backward) {
  return fv_nn_is_f64(c) ? softmax_run<double>(c, backward) : softmax_run<float>(c, backward);
}
