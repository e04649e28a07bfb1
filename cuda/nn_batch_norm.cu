/* nn_batch_norm.cu: batch_norm of a contiguous (B, C, S) tensor per channel, forward and
 * backward, training and eval, float32 and float64, with core/cpu/nn_batch_norm.inc's
 * arithmetic: statistics in double, two passes (mean, then the sum of squared
 * deviations), biased variance for normalising, invstd = 1/sqrt(var + eps) saved for
 * backward, running stats updated with the UNBIASED variance and momentum; eval uses
 * the running stats. One block per channel (block reductions in a fixed order), then the
 * same block writes its channel's outputs. Backward accumulates (+=) into dinp, dweight
 * and dbias (each may be NULL).
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_batch_norm.cu -o build/cuda/nn_batch_norm.o */
#include "nn_common.cuh"

template <typename T>
__global__ void bn_forward(T *out, T *save_mean, T *save_invstd, T *running_mean, T *running_var, const T *inp,
                           const T *weight, const T *bias, int64_t B, int64_t C, int64_t S, int training,
                           double momentum, double eps) {
  __shared__ double scratch[FV_CUDA_THREADS];
  const int64_t n = B * S;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    double mean, invstd;
    if (training) {
      double s = 0;
      for (int64_t k = threadIdx.x; k < n; k += blockDim.x) s += (double)inp[((k / S) * C + c) * S + k % S];
      mean = fv_nn_block_sum(s, scratch) / (double)n;
      double v = 0;
      for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
        const double d = (double)inp[((k / S) * C + c) * S + k % S] - mean;
        v += d * d;
      }
      const double var_sum = fv_nn_block_sum(v, scratch);
      invstd = 1 / sqrt(var_sum / (double)n + eps);
      if (threadIdx.x == 0) {
        if (save_mean) save_mean[c] = (T)mean;
        if (save_invstd) save_invstd[c] = (T)invstd;
        if (running_mean) running_mean[c] = (T)(momentum * mean + (1 - momentum) * (double)running_mean[c]);
        if (running_var) {
          const double unbiased = var_sum / (double)(n - 1);
          running_var[c] = (T)(momentum * unbiased + (1 - momentum) * (double)running_var[c]);
        }
      }
    } else {
      mean = (double)running_mean[c];
      invstd = 1 / sqrt((double)running_var[c] + eps);
    }
    const double a = invstd * (weight ? (double)weight[c] : 1);
    const T alpha = (T)a;
    const T beta = (T)((bias ? (double)bias[c] : 0) - mean * a);
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      const int64_t at = ((k / S) * C + c) * S + k % S;
      out[at] = inp[at] * alpha + beta;
    }
  }
}

template <typename T>
__global__ void bn_backward(T *dinp, T *dweight, T *dbias, const T *dout, const T *inp, const T *weight,
                            const T *running_mean, const T *running_var, const T *save_mean, const T *save_invstd,
                            int64_t B, int64_t C, int64_t S, int training, double eps) {
  __shared__ double scratch[FV_CUDA_THREADS];
  const int64_t n = B * S;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const double mean = training ? (double)save_mean[c] : (double)running_mean[c];
    const double invstd = training ? (double)save_invstd[c] : 1 / sqrt((double)running_var[c] + eps);
    double s = 0, d = 0;
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      const int64_t at = ((k / S) * C + c) * S + k % S;
      s += (double)dout[at];
      d += ((double)inp[at] - mean) * (double)dout[at];
    }
    const double sum = fv_nn_block_sum(s, scratch);
    const double dotp = fv_nn_block_sum(d, scratch);
    if (dinp) {
      const double w = weight ? (double)weight[c] : 1;
      const double A = invstd * w;
      double Bc = 0, Cc = 0;
      if (training) {
        const double kk = dotp * invstd * invstd / (double)n;
        Bc = -A * kk;
        Cc = A * (mean * kk - sum / (double)n);
      }
      const T a = (T)A, bc = (T)Bc, cc = (T)Cc;
      for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
        const int64_t at = ((k / S) * C + c) * S + k % S;
        dinp[at] += dout[at] * a + inp[at] * bc + cc;
      }
    }
    if (threadIdx.x == 0) {
      if (dweight) dweight[c] += (T)(dotp * invstd);
      if (dbias) dbias[c] += (T)sum;
    }
  }
}

template <typename T> static int bn_run(const fv_nn_call *c, int backward) {
  int64_t B, C, S;
  fv_nn_bcs(c->t[backward ? 4 : 5], &B, &C, &S);
  if (C == 0) return FV_OK;
  const unsigned grid = fv_nn_row_blocks(C);
  const int training = (int)c->i[0];
  if (!backward)
    bn_forward<T><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1), fv_nn_ptr<T>(c, 2), fv_nn_ptr<T>(c, 3), fv_nn_ptr<T>(c, 4),
        fv_nn_ptr<T>(c, 5), fv_nn_ptr<T>(c, 6), fv_nn_ptr<T>(c, 7), B, C, S, training, c->d[0], c->d[1]);
  else
    bn_backward<T><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1), fv_nn_ptr<T>(c, 2), fv_nn_ptr<T>(c, 3), fv_nn_ptr<T>(c, 4),
        fv_nn_ptr<T>(c, 5), fv_nn_ptr<T>(c, 6), fv_nn_ptr<T>(c, 7), fv_nn_ptr<T>(c, 8), fv_nn_ptr<T>(c, 9), B, C,
        S, training, c->d[1]);
  FV_CUDA_LAUNCHED(backward ? "batch_norm backward" : "batch_norm");
  return FV_OK;
}

int fv_cuda_nn_batch_norm(const fv_nn_call *c, int backward) {
  return fv_nn_is_f64(c) ? bn_run<double>(c, backward) : bn_run<float>(c, backward);
}
