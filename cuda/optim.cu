/* optim.cu: the optimizer steps of core/optim.c on the GPU (fv_backend.adam_step,
 * sgd_step, grad_norm_part, grad_scale), float32 and float64. core/optim.c has checked
 * every tensor (contiguous, on cuda, companions of the parameter's shape and dtype, no
 * shared memory) and computed the coefficients in double; here each coefficient is
 * rounded to the element type and every element goes through core/optim.c's expressions
 * in the same order (built with -fmad=false, IEEE division and square root), so the
 * steps are meant to equal the CPU's bit for bit. One kernel launch per parameter tensor.
 * grad_norm_part sums |g|^p in double over blocks of FV_NORM_BLOCK elements (a block
 * tree inside each, so sums agree with the CPU's to rounding, not bit for bit), and the
 * blocks' results are combined on the host in block order as on the CPU.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/optim.cu -o build/cuda/optim.o */
#include <math.h>
#include <stdlib.h>

#include "common.cuh"

namespace {

enum { WD_NONE, WD_COUPLED, WD_DECOUPLED };

template <typename T> struct adam_t {
  T wd, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, neg_step_size, bc2;
  int wd_mode, amsgrad;
};

__device__ __forceinline__ float dev_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double dev_sqrt(double x) { return sqrt(x); }

template <typename T>
__global__ void adam_kernel(int64_t n, T *__restrict__ p, const T *__restrict__ g, T *__restrict__ m,
                            T *__restrict__ v, T *__restrict__ vmax, adam_t<T> c) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    T grad = g[i];
    if (c.wd_mode == WD_COUPLED) grad = grad + c.wd * p[i];
    T mi = m[i] * c.beta1 + c.one_minus_beta1 * grad;
    T vi = v[i] * c.beta2 + c.one_minus_beta2 * grad * grad;
    m[i] = mi;
    v[i] = vi;
    if (c.amsgrad) {
      T old = vmax[i];
      vi = ((old > vi) | (old != old)) ? old : vi;
      vmax[i] = vi;
    }
    T s = dev_sqrt(vi);
    T param = p[i];
    if (c.wd_mode == WD_DECOUPLED) param = param * c.decay;
    T denom = s / c.bc2 + c.eps;
    p[i] = param + c.neg_step_size * mi / denom;
  }
}

template <typename T>
static int adam_one(fv_tensor *p, fv_tensor *m, fv_tensor *v, fv_tensor *vmax, const fv_adam_coef *k) {
  int64_t n = fv_tensor_numel(p);
  if (n == 0) return FV_OK;
  adam_t<T> c;
  c.wd = (T)k->weight_decay;
  c.decay = (T)(1.0 - k->lr * k->weight_decay);
  c.beta1 = (T)k->beta1;
  c.one_minus_beta1 = (T)(1.0 - k->beta1);
  c.beta2 = (T)k->beta2;
  c.one_minus_beta2 = (T)(1.0 - k->beta2);
  c.eps = (T)k->eps;
  c.neg_step_size = (T)(-k->step_size);
  c.bc2 = (T)k->bias_correction2_sqrt;
  c.wd_mode = k->weight_decay == 0 ? WD_NONE : k->decoupled ? WD_DECOUPLED : WD_COUPLED;
  c.amsgrad = k->amsgrad != 0;
  adam_kernel<T><<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
      n, (T *)fv_cuda_first(p), (const T *)fv_cuda_first(p->gradient), (T *)fv_cuda_first(m), (T *)fv_cuda_first(v),
      vmax ? (T *)fv_cuda_first(vmax) : NULL, c);
  FV_CUDA_LAUNCHED(k->decoupled ? "adamw_step" : "adam_step");
  return FV_OK;
}

enum { MOM_NONE, MOM_FIRST, MOM_PLAIN, MOM_FIRST_NESTEROV, MOM_NESTEROV };

template <typename T>
__global__ void sgd_kernel(int64_t n, T *__restrict__ p, const T *__restrict__ g, T *__restrict__ buf, T wd, T mom,
                           T one_minus_damp, T neg_lr, int decay, int mode) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    T param = p[i], d = g[i];
    if (decay) d = d + wd * param;
    if (mode != MOM_NONE) {
      T b = (mode == MOM_FIRST || mode == MOM_FIRST_NESTEROV) ? d : buf[i] * mom + one_minus_damp * d;
      buf[i] = b;
      d = (mode == MOM_FIRST_NESTEROV || mode == MOM_NESTEROV) ? d + mom * b : b;
    }
    p[i] = param + neg_lr * d;
  }
}

template <typename T> static int sgd_one(fv_tensor *p, fv_tensor *buf, const fv_sgd_coef *c) {
  int64_t n = fv_tensor_numel(p);
  if (n == 0) return FV_OK;
  int mode = c->momentum == 0 ? MOM_NONE
             : c->nesterov    ? (c->first_step ? MOM_FIRST_NESTEROV : MOM_NESTEROV)
                              : (c->first_step ? MOM_FIRST : MOM_PLAIN);
  sgd_kernel<T><<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
      n, (T *)fv_cuda_first(p), (const T *)fv_cuda_first(p->gradient), buf ? (T *)fv_cuda_first(buf) : NULL,
      (T)c->weight_decay, (T)c->momentum, (T)(1.0 - c->dampening), (T)(-c->lr), c->weight_decay != 0, mode);
  FV_CUDA_LAUNCHED("sgd_step");
  return FV_OK;
}

/* Largest magnitude, NaN winning (as core/optim.c). */
__device__ __forceinline__ double nan_max(double m, double a) { return (a > m || a != a) ? a : m; }

/* One CUDA block per FV_NORM_BLOCK elements of g: part[b] = the block's sum of |g|^p
 * (or largest |g|), in double, a fixed tree over the threads. */
template <typename T>
__global__ void norm_kernel(const T *__restrict__ g, int64_t n, int kind, double p, double *part) {
  __shared__ double acc[FV_CUDA_THREADS];
  const int64_t start = (int64_t)blockIdx.x * FV_NORM_BLOCK;
  const int64_t end = start + FV_NORM_BLOCK < n ? start + FV_NORM_BLOCK : n;
  double a = 0;
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    double x = (double)g[i];
    switch (kind) {
    case FV_NORM_INF: a = nan_max(a, fabs(x)); break;
    case FV_NORM_ONE: a += fabs(x); break;
    case FV_NORM_TWO: a += x * x; break;
    default: a += pow(fabs(x), p);
    }
  }
  acc[threadIdx.x] = a;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s)
      acc[threadIdx.x] = kind == FV_NORM_INF ? nan_max(acc[threadIdx.x], acc[threadIdx.x + s])
                                             : acc[threadIdx.x] + acc[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[blockIdx.x] = acc[0];
}

template <typename T> __global__ void scale_kernel(T *g, int64_t n, T c) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    g[i] = g[i] * c;
}

}  // namespace

extern "C" int fv_cuda_adam_step(int n, fv_tensor *const *params, fv_tensor *const *exp_avg,
                                 fv_tensor *const *exp_avg_sq, fv_tensor *const *max_exp_avg_sq,
                                 const fv_adam_coef *c) {
  for (int i = 0; i < n; i++) {
    fv_tensor *p = params[i];
    if (!p->gradient) continue;
    fv_tensor *vmax = c->amsgrad ? max_exp_avg_sq[i] : NULL;
    if (p->scalar_type == FV_FLOAT32) FV_TRY(adam_one<float>(p, exp_avg[i], exp_avg_sq[i], vmax, c));
    else FV_TRY(adam_one<double>(p, exp_avg[i], exp_avg_sq[i], vmax, c));
  }
  return FV_OK;
}

extern "C" int fv_cuda_sgd_step(int n, fv_tensor *const *params, fv_tensor *const *momentum_buf,
                                const fv_sgd_coef *c) {
  for (int i = 0; i < n; i++) {
    fv_tensor *p = params[i];
    if (!p->gradient) continue;
    fv_tensor *buf = c->momentum != 0 ? momentum_buf[i] : NULL;
    if (p->scalar_type == FV_FLOAT32) FV_TRY(sgd_one<float>(p, buf, c));
    else FV_TRY(sgd_one<double>(p, buf, c));
  }
  return FV_OK;
}

extern "C" int fv_cuda_grad_norm_part(const fv_tensor *g, int kind, double p, double *out) {
  const char *op = "clip_grad_norm";
  int64_t n = fv_tensor_numel(g);
  *out = 0;
  if (n == 0) return FV_OK;
  int64_t blocks = (n + FV_NORM_BLOCK - 1) / FV_NORM_BLOCK;
  size_t bytes = (size_t)blocks * sizeof(double);
  double *part = (double *)fv_cuda_alloc(bytes);
  if (!part) return fv_last_status() ? fv_last_status() : fv_fail(FV_ERR_MEMORY, "%s: out of memory", op);
  double *host = (double *)malloc(bytes);
  if (!host) {
    fv_cuda_free(part, bytes);
    return fv_fail(FV_ERR_MEMORY, "%s: out of host memory", op);
  }
  if (g->scalar_type == FV_FLOAT32)
    norm_kernel<float><<<(unsigned)blocks, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        (const float *)fv_cuda_first(g), n, kind, p, part);
  else
    norm_kernel<double><<<(unsigned)blocks, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        (const double *)fv_cuda_first(g), n, kind, p, part);
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) err = cudaMemcpy(host, part, bytes, cudaMemcpyDeviceToHost);
  fv_cuda_free(part, bytes);
  if (err != cudaSuccess) {
    free(host);
    return fv_cuda_fail(err, op, "norm kernel and copy", __FILE__, __LINE__);
  }
  double total = 0;
  for (int64_t b = 0; b < blocks; b++)
    total = kind == FV_NORM_INF ? ((host[b] > total || host[b] != host[b]) ? host[b] : total) : total + host[b];
  free(host);
  *out = total;
  return FV_OK;
}

extern "C" int fv_cuda_grad_scale(fv_tensor *g, double coef) {
  int64_t n = fv_tensor_numel(g);
  if (n == 0) return FV_OK;
  if (g->scalar_type == FV_FLOAT32)
    scale_kernel<float><<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, fv_cuda_stream>>>((float *)fv_cuda_first(g), n,
                                                                                   (float)coef);
  else
    scale_kernel<double><<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, fv_cuda_stream>>>((double *)fv_cuda_first(g), n,
                                                                                    coef);
  FV_CUDA_LAUNCHED("clip_grad_norm");
  return FV_OK;
}
