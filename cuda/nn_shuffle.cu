/* nn_shuffle.cu: channel_shuffle of a contiguous (B, C, S) tensor, forward and backward,
 * float32 and float64, as core/cpu/nn_shuffle.inc: out channel j*groups + i = inp
 * channel i*(C/groups) + j; the backward adds dout back to the source channels. One
 * thread per element; every element has one source, so no atomics.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_shuffle.cu -o build/cuda/nn_shuffle.o */
#include "nn_common.cuh"

template <typename T>
__global__ void shuffle_kernel(T *dst, const T *src, int64_t B, int64_t C, int64_t S, int64_t groups, int backward) {
  const int64_t cpg = C / groups;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < B * C * S;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = e % S, oc = (e / S) % C, b = e / (S * C);
    const int64_t i = oc % groups, j = oc / groups;
    const int64_t from = (b * C + i * cpg + j) * S + s; /* the input channel of output channel oc */
    if (backward) dst[from] += src[e];
    else dst[e] = src[from];
  }
}

template <typename T> static int shuffle_run(const fv_nn_call *c, int backward) {
  int64_t B, C, S;
  fv_nn_bcs(c->t[backward ? 0 : 1], &B, &C, &S);
  if (B * C * S == 0) return FV_OK;
  shuffle_kernel<T><<<fv_cuda_blocks(B * C * S), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
      fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1), B, C, S, c->i[0], backward);
  FV_CUDA_LAUNCHED(backward ? "channel_shuffle backward" : "channel_shuffle");
  return FV_OK;
}

int fv_cuda_nn_shuffle(const fv_nn_call *c, int backward) {
  return fv_nn_is_f64(c) ? shuffle_run<double>(c, backward) : shuffle_run<float>(c, backward);
}
