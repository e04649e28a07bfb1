/* cudnn_batch_norm.cu: batch_norm through cuDNN 9's legacy batch-normalization API, the
 * alternative to nn_batch_norm.cu's kernels that FOVEA_BATCH_NORM_KERNEL=cudnn selects
 * (nn_batch_norm.cu's fv_cuda_nn_batch_norm reads the variable at each call and comes
 * here). Same slots and semantics as core/cpu/nn_batch_norm.inc (core/internal.h lists
 * the slots): per channel over (B, S), biased batch variance for normalising, running
 * stats updated with the unbiased one and momentum, eval on the running stats; backward
 * accumulates (+=) into dinp, dweight and dbias, each of which may be NULL; weight, bias
 * and the running stats may be NULL. float32 and float64.
 *
 * Calls (CUDNN_BATCHNORM_SPATIAL: one mean and variance per channel over N x H x W):
 *   training forward  cudnnBatchNormalizationForwardTraining, exponentialAverageFactor =
 *                     momentum (cuDNN: running = new * factor + running * (1 - factor), our
 *                     update; cuDNN's "factor=1 in the very first call" is for running
 *                     buffers that hold nothing yet, and ours always hold their values),
 *                     resultSaveMean / resultSaveInvVariance = save_mean / save_invstd;
 *   eval forward      cudnnBatchNormalizationForwardInference on the running stats;
 *   training backward cudnnBatchNormalizationBackward from save_mean / save_invstd with
 *                     alphaDataDiff = betaDataDiff = alphaParamDiff = betaParamDiff = 1,
 *                     so dx, dscale and dbias are added into (our += contract).
 * The (B, C, ...) input of any rank (the front end, core/nn/batch_norm.c, accepts 2 and
 * more dimensions) is described as the packed NCHW tensor (B, C, S, 1), S the product of
 * the sizes after C: (N, C) is (N, C, 1, 1), (N, C, L) is (N, C, L, 1), and 4D and 5D
 * inputs are their own memory order; spatial normalisation over N x S is exactly ours.
 * The per-channel descriptor comes from cudnnDeriveBNTensorDescriptor: float for float32
 * inputs, double for float64 (cudnn_ops.h: "type = (typeOf(x) == double) ? double :
 * float"), the element type of our channel vectors in both cases.
 *
 * Stand-ins for what cuDNN needs and the call does not have, from fv_cuda_alloc (one block
 * per call, freed on every path by device_buffer's destructor): ones for a NULL weight and
 * zeros for a NULL bias; zeros for a missing one of the two running stats or of the two
 * saved stats when the other is given (both missing: NULL to cuDNN, which it allows);
 * in backward, a dx buffer when dinp is NULL (betaDataDiff = 0, so its contents are never
 * read) and a dscale or dbias buffer when dweight or dbias is NULL (zeroed: betaParamDiff
 * applies to both; the results written there are dropped).
 *
 * What the docs say, and where (looked up for this file):
 *   - save_mean / save_invstd. cuDNN's resultSaveMean / resultSaveInvVariance are "intermediate
 *     results from the forward pass" that "can be reused to speed up backward pass" (cudnn_ops.h,
 *     cuDNN 9.19) and are cudnnBatchNormalizationBackward's savedMean / savedInvVariance: the
 *     batch mean and 1 / sqrt(var + epsilon) with the batch's biased variance (the one the
 *     forward normalises with), despite the name. Evidence: PyTorch's
 *     aten/src/ATen/native/cudnn/BatchNorm.cpp returns resultSaveInvVariance as the save_var
 *     that its autograd passes where the native kernels pass save_invstd (1 / sqrt(var + eps));
 *     ngraph's "Preprocess input variance into BN denominator for cudnn (#1885)": "what cuDNN
 *     describes as the inverse variance ... requires 1.0f / sqrt(variance + eps)". So the saved
 *     stats are interchangeable with ours: a forward by one path and a backward by the other
 *     (the variable changed between them, a fallback below) agree.
 *   - The running variance. cuDNN's own text says only "the moving average of variance[x]
 *     (factor is applied in the same way as for runningMean)" (cudnn_ops.h; the API reference
 *     adds nothing); it does not name the estimator. Its behaviour is the UNBIASED variance
 *     (n / (n - 1), Bessel's correction), as our CPU reference: apache/mxnet#18751 ("on GPU
 *     CUDNN is sample variance (v / (n - 1))", against MXNet's own kernel's v / n), a script in
 *     apache/mxnet#21111 showing cuDNN's moving variance is the unbiased one, soumith/cudnn.torch
 *     #165 (cuDNN 5's running_var matches torch nn's, which is unbiased), and PyTorch handing
 *     running_var to cuDNN unchanged while documenting it as unbiased (pytorch/pytorch#77427,
 *     #106366). So no correction is applied; spec/cuda_spec.lua's "running_var (unbiased)"
 *     comparison with the CPU under FOVEA_BATCH_NORM_KERNEL=cudnn is the check on the GPU
 *     (shapes with n = 8 make a biased update differ by 14%).
 *   - epsilon. cuDNN requires epsilon >= CUDNN_BN_MIN_EPSILON (cudnn_ops.h: "Has to be >=
 *     CUDNN_BN_MIN_EPSILON"); the constant is 0.0 in cuDNN 9's headers (1e-5 in cuDNN 7's and
 *     older), and the front end requires eps > 0, so with cuDNN 9 every call qualifies. A call
 *     with a smaller epsilon (headers with a positive minimum) runs the native kernels.
 *   - Sizes. Legacy tensor descriptors have int sizes and strides, so tensors of more than
 *     INT32_MAX elements run the native kernels; and, as PyTorch does (pytorch/pytorch#32763,
 *     limits measured on cuDNN 7.6.5 and still applied by PyTorch's Normalization.cpp), so do
 *     spatial calls with a batch of more than 880,801 (training, and its backward) or 65,535
 *     (eval), which cuDNN refused.
 *   - Eval-mode backward has no cuDNN call: cudnnBatchNormalizationBackward differentiates
 *     the training formula (batch statistics; PyTorch's BatchNorm.cpp: "CuDNN only implements
 *     the backward algorithm for batchnorm in training mode"), so it runs the native kernels.
 *   - In place (out == inp) is not documented for these calls: such a forward runs the native
 *     kernels (the front end never asks for it).
 * cuDNN 9 marks the legacy batch-norm calls deprecated (CUDNN_DEPRECATED, warned about only
 * with CUDNN_WARN_DEPRECATED); the graph API's batchnorm is their successor.
 *
 * Every cuDNN call is checked (FV_CUDNN_TRY: "batch_norm: <call> failed at file:line:
 * <cuDNN's status>", or "batch_norm backward: ..."); the handle is cudnn_plan.cu's
 * (cudnn_ready: version check, made on first use, on the backend's stream). Single-
 * threaded, as the backend is. Built without cuDNN, the stub at the end reports that
 * FOVEA_BATCH_NORM_KERNEL=cudnn needs a cuDNN build.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -DFV_HAVE_CUDNN=1 -Icore -c cuda/cudnn_batch_norm.cu -o build/cuda/cudnn_batch_norm.o */
#include "nn_common.cuh"

/* nn_batch_norm.cu's FOVEA_BATCH_NORM_KERNEL=cudnn path: FV_OK or an error status with
 * *taken = 1 when cuDNN ran the call, *taken = 0 (and FV_OK) when the call is one cuDNN
 * cannot run (see above) and the native kernels are to run it. */
int fv_cuda_batch_norm_cudnn(const fv_nn_call *c, int backward, int *taken);

#if FV_HAVE_CUDNN
#include "cudnn_plan.cuh"

using namespace fv_cudnn;

namespace {

template <typename T> __global__ void bn_fill(T *p, int64_t n, T value) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    p[i] = value;
}

/* The input's and the per-channel descriptors: made on first use, set for each call, kept
 * (as cudnn_plan.cu's plans, nothing is freed before exit). */
cudnnTensorDescriptor_t x_desc, c_desc;

int set_descs(const char *op, int f64, int64_t B, int64_t C, int64_t S) {
  if (!x_desc) FV_CUDNN_TRY(op, cudnnCreateTensorDescriptor(&x_desc));
  if (!c_desc) FV_CUDNN_TRY(op, cudnnCreateTensorDescriptor(&c_desc));
  FV_CUDNN_TRY(op, cudnnSetTensor4dDescriptor(x_desc, CUDNN_TENSOR_NCHW, f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT,
                                              (int)B, (int)C, (int)S, 1));
  FV_CUDNN_TRY(op, cudnnDeriveBNTensorDescriptor(c_desc, x_desc, CUDNN_BATCHNORM_SPATIAL));
  return FV_OK;
}

/* Per-channel stand-ins: up to four vectors of C elements in one block of scratch, each
 * starting on a 256-byte boundary (as cudaMalloc's pointers: no cuDNN engine meets a
 * misaligned parameter vector). */
template <typename T> struct channel_scratch {
  device_buffer buf;
  int64_t C = 0, stride = 0; /* elements per vector, and between vectors' starts */
  int used = 0;
  /* room for need vectors of C elements */
  int reserve(const char *op, int64_t C_, int need) {
    C = C_;
    stride = ((C * (int64_t)sizeof(T) + 255) / 256) * 256 / (int64_t)sizeof(T);
    return buf.get(op, (size_t)need * (size_t)stride * sizeof(T));
  }
  /* the next vector, every element value (0: a memset) */
  int take(const char *op, T value, T **out) {
    T *p = (T *)buf.p + (int64_t)used++ * stride;
    if (value == (T)0) {
      FV_CUDA_TRY(op, cudaMemsetAsync(p, 0, (size_t)C * sizeof(T), fv_cuda_stream));
    } else {
      bn_fill<T><<<fv_cuda_blocks(C), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(p, C, value);
      FV_CUDA_LAUNCHED(op);
    }
    *out = p;
    return FV_OK;
  }
};

/* a or, when a is NULL and b is not, a zeroed stand-in (both NULL stay NULL: cuDNN's
 * "NULL if unused" pairs) */
template <typename T> int pair_or_zeros(const char *op, channel_scratch<T> &s, T **a, T *b) {
  if (!*a && b) return s.take(op, (T)0, a);
  return FV_OK;
}

template <typename T> int bn_forward(const fv_nn_call *c, int f64, int64_t B, int64_t C, int64_t S) {
  const char *op = "batch_norm";
  const int training = (int)c->i[0];
  const double momentum = c->d[0], eps = c->d[1];
  T *out = fv_nn_ptr<T>(c, 0), *save_mean = fv_nn_ptr<T>(c, 1), *save_invstd = fv_nn_ptr<T>(c, 2);
  T *running_mean = fv_nn_ptr<T>(c, 3), *running_var = fv_nn_ptr<T>(c, 4), *weight = fv_nn_ptr<T>(c, 6),
    *bias = fv_nn_ptr<T>(c, 7);
  const T *inp = fv_nn_ptr<T>(c, 5);
  FV_TRY(set_descs(op, f64, B, C, S));
  channel_scratch<T> s;
  const int need = !weight + !bias + (training ? (!running_mean != !running_var) + (!save_mean != !save_invstd) : 0);
  FV_TRY(s.reserve(op, C, need));
  if (!weight) FV_TRY(s.take(op, (T)1, &weight));
  if (!bias) FV_TRY(s.take(op, (T)0, &bias));
  const T one = 1, zero = 0; /* alpha and beta: double for double data, else float */
  if (!training) {
    FV_CUDNN_TRY(op, cudnnBatchNormalizationForwardInference(handle, CUDNN_BATCHNORM_SPATIAL, &one, &zero, x_desc, inp,
                                                             x_desc, out, c_desc, weight, bias, running_mean,
                                                             running_var, eps));
    return FV_OK;
  }
  FV_TRY(pair_or_zeros(op, s, &running_mean, running_var));
  FV_TRY(pair_or_zeros(op, s, &running_var, running_mean));
  FV_TRY(pair_or_zeros(op, s, &save_mean, save_invstd));
  FV_TRY(pair_or_zeros(op, s, &save_invstd, save_mean));
  FV_CUDNN_TRY(op, cudnnBatchNormalizationForwardTraining(handle, CUDNN_BATCHNORM_SPATIAL, &one, &zero, x_desc, inp,
                                                          x_desc, out, c_desc, weight, bias, momentum, running_mean,
                                                          running_var, eps, save_mean, save_invstd));
  return FV_OK;
}

/* training only (eval backward runs the native kernels) */
template <typename T> int bn_backward(const fv_nn_call *c, int f64, int64_t B, int64_t C, int64_t S) {
  const char *op = "batch_norm backward";
  const double eps = c->d[1];
  T *dinp = fv_nn_ptr<T>(c, 0), *dweight = fv_nn_ptr<T>(c, 1), *dbias = fv_nn_ptr<T>(c, 2);
  const T *dout = fv_nn_ptr<T>(c, 3), *inp = fv_nn_ptr<T>(c, 4), *save_mean = fv_nn_ptr<T>(c, 8),
          *save_invstd = fv_nn_ptr<T>(c, 9);
  T *weight = fv_nn_ptr<T>(c, 5);
  if (!dinp && !dweight && !dbias) return FV_OK; /* nothing asked for */
  if (!save_mean || !save_invstd) save_mean = save_invstd = NULL; /* cuDNN then recomputes both */
  FV_TRY(set_descs(op, f64, B, C, S));
  channel_scratch<T> s;
  const int params = dweight || dbias; /* any parameter gradient wanted: add into them */
  const int need = !weight + (params ? !dweight + !dbias : 2);
  FV_TRY(s.reserve(op, C, need));
  if (!weight) FV_TRY(s.take(op, (T)1, &weight));
  if (!dweight) FV_TRY(s.take(op, (T)0, &dweight));
  if (!dbias) FV_TRY(s.take(op, (T)0, &dbias));
  device_buffer dx_scratch; /* B x C x S, when dinp is NULL: written, never read */
  if (!dinp) {
    FV_TRY(dx_scratch.get(op, (size_t)(B * C * S) * sizeof(T)));
    dinp = (T *)dx_scratch.p;
  }
  const T one = 1, zero = 0;
  const T *beta_data = dx_scratch.p ? &zero : &one, *beta_param = params ? &one : &zero;
  FV_CUDNN_TRY(op, cudnnBatchNormalizationBackward(handle, CUDNN_BATCHNORM_SPATIAL, &one, beta_data, &one, beta_param,
                                                   x_desc, inp, x_desc, dout, x_desc, dinp, c_desc, weight, dweight,
                                                   dbias, eps, save_mean, save_invstd));
  return FV_OK;
}

} // namespace

int fv_cuda_batch_norm_cudnn(const fv_nn_call *c, int backward, int *taken) {
  const char *op = backward ? "batch_norm backward" : "batch_norm";
  const int training = (int)c->i[0];
  const double eps = c->d[1];
  int64_t B, C, S;
  fv_nn_bcs(c->t[backward ? 4 : 5], &B, &C, &S);
  *taken = 0;
  /* the calls cuDNN does not run (see the header): the native kernels take them */
  if (backward && !training) return FV_OK;
  if (!backward && c->t[0] && c->t[5] && fv_cuda_first(c->t[0]) == fv_cuda_first(c->t[5])) return FV_OK;
  if (!backward && !training && (!c->t[3] || !c->t[4])) return FV_OK; /* eval without running stats: refused by the front end */
  if (eps < CUDNN_BN_MIN_EPSILON) return FV_OK;
  if (B * C * S == 0 || B * C * S > INT32_MAX) return FV_OK;
  if (B > ((training || backward) ? 880801 : 65535)) return FV_OK;
  *taken = 1; /* from here on cuDNN's: its errors are the call's */
  FV_TRY(cudnn_ready(op));
  const int f64 = fv_nn_is_f64(c);
  if (backward) return f64 ? bn_backward<double>(c, 1, B, C, S) : bn_backward<float>(c, 0, B, C, S);
  return f64 ? bn_forward<double>(c, 1, B, C, S) : bn_forward<float>(c, 0, B, C, S);
}

#else /* built without cuDNN */

int fv_cuda_batch_norm_cudnn(const fv_nn_call *c, int backward, int *taken) {
  (void)c;
  *taken = 1;
  return fv_fail(FV_ERR_DEVICE, "%s: FOVEA_BATCH_NORM_KERNEL=cudnn, but this build has no cuDNN (built without it); "
                 "unset it or set it to native", backward ? "batch_norm backward" : "batch_norm");
}

#endif
