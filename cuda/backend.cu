/* backend.cu: the CUDA backend table and its registration: fv_cuda_init (find the GPU,
 * register the table with the core), the supports query, device count and synchronize.
 * The kernels live in the other files of cuda/, the shared error reporter fv_cuda_fail in
 * errors.cu.
 *
 * Build (the Makefile's rule `cuda` does this for every .cu file in cuda/, then links them):
 *   nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/backend.cu -o build/cuda/backend.o
 *   nvcc -shared -o build/libfovea_cuda.so build/cuda/{allocator,backend,copy,cudnn,elementwise,errors,matmul,nn_*,optim,profile,random,reduce,transfer}.o
 *        -Lbuild -lfovea -lcudart -lcublas [-lcudnn]
 */
#include <stdio.h>

#include "nn_common.cuh"

/* copy and fill for the four storable dtypes; the arithmetic for the float ones; the
 * neural-network kernels of nn_*.cu and cudnn.cu (conv2d only when built with cuDNN) for
 * the float ones. */
static int cuda_supports(int op, int dtype) {
  int is_float = dtype == FV_FLOAT32 || dtype == FV_FLOAT64;
  if (op == FV_OP_COPY || op == FV_OP_FILL) return is_float || dtype == FV_INT64 || dtype == FV_UINT8;
  if (op >= FV_OP_ADD && op <= FV_OP_CLAMP) return is_float;
  if (op >= FV_OP_SUM && op <= FV_OP_VAR) return is_float;
  if (op == FV_OP_MATMUL || op == FV_OP_RAND || op == FV_OP_RANDN) return is_float;
  switch (op) {
    case FV_OP_CONV2D: return is_float && fv_cuda_conv2d_available();
    case FV_OP_BATCH_NORM:
    case FV_OP_MAX_POOL2D:
    case FV_OP_AVG_POOL2D:
    case FV_OP_ADAPTIVE_AVG_POOL2D:
    case FV_OP_ADAPTIVE_MAX_POOL2D:
    case FV_OP_UPSAMPLE_BILINEAR:
    case FV_OP_SOFTMAX:
    case FV_OP_LOG_SOFTMAX:
    case FV_OP_CROSS_ENTROPY:
    case FV_OP_CHANNEL_SHUFFLE:
    case FV_OP_NAM:
    case FV_OP_CRISS_CROSS: return is_float;
  }
  return 0;
}

/* One entry for forward and backward: the op family's file. */
static int cuda_nn(const fv_nn_call *call, int backward) {
  switch (call->op) {
    case FV_OP_CONV2D: return fv_cuda_conv2d(call, backward);
    case FV_OP_BATCH_NORM: return fv_cuda_nn_batch_norm(call, backward);
    case FV_OP_MAX_POOL2D:
    case FV_OP_AVG_POOL2D:
    case FV_OP_ADAPTIVE_AVG_POOL2D:
    case FV_OP_ADAPTIVE_MAX_POOL2D: return fv_cuda_nn_pool(call, backward);
    case FV_OP_UPSAMPLE_BILINEAR: return fv_cuda_nn_upsample(call, backward);
    case FV_OP_SOFTMAX:
    case FV_OP_LOG_SOFTMAX: return fv_cuda_nn_softmax(call, backward);
    case FV_OP_CROSS_ENTROPY: return fv_cuda_nn_cross_entropy(call, backward);
    case FV_OP_CHANNEL_SHUFFLE: return fv_cuda_nn_shuffle(call, backward);
    case FV_OP_NAM: return fv_cuda_nn_nam(call, backward);
    case FV_OP_CRISS_CROSS: return fv_cuda_nn_criss_cross(call, backward);
  }
  return fv_fail(FV_ERR_DEVICE, "%s: not implemented on cuda yet", fv_op_name(call->op));
}
static int cuda_nn_forward(const fv_nn_call *call) { return cuda_nn(call, 0); }
static int cuda_nn_backward(const fv_nn_call *call) { return cuda_nn(call, 1); }

static fv_backend table;
static int registered;

static void fill_table(void) {
  table.name = "cuda";
  table.device_type = FV_CUDA;
  table.supports = cuda_supports;
  table.alloc = fv_cuda_alloc;
  table.free = fv_cuda_free;
  table.copy = fv_cuda_copy;
  table.fill = fv_cuda_fill;
  table.to_host = fv_cuda_to_host;
  table.from_host = fv_cuda_from_host;
  table.host_alloc = fv_cuda_host_alloc; /* transfer.cu */
  table.host_free = fv_cuda_host_free;
  table.upload = fv_cuda_upload;
  table.binary = fv_cuda_binary;
  table.binary_scalar = fv_cuda_binary_scalar;
  table.unary = fv_cuda_unary;
  table.reduce = fv_cuda_reduce;
  table.matmul = fv_cuda_matmul;
  table.random = fv_cuda_random;
  table.nn_forward = cuda_nn_forward;
  table.nn_backward = cuda_nn_backward;
  table.adam_step = fv_cuda_adam_step;
  table.sgd_step = fv_cuda_sgd_step;
  table.grad_norm_parts = fv_cuda_grad_norm_parts;
  table.grad_scale = fv_cuda_grad_scale;
}

extern "C" int fv_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

extern "C" int fv_cuda_init(void) {
  if (registered) return FV_OK;
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return fv_fail(FV_ERR_DEVICE, "cuda: no usable GPU: cudaGetDeviceCount failed: %s (%s)", cudaGetErrorString(err),
                   cudaGetErrorName(err));
  }
  if (n == 0) return fv_fail(FV_ERR_DEVICE, "cuda: no usable GPU: cudaGetDeviceCount found no CUDA device");
  FV_CUDA_TRY("cuda init", cudaSetDevice(0));
  FV_CUDA_TRY("cuda init", cudaFree(0)); /* creates the context now, so that a broken driver shows here */
  (void)fv_cuda_cudnn_check(); /* a cuDNN version mismatch is printed here; a major one is reported by conv2d */
  fill_table();
  FV_TRY(fv_cuda_profile_install(&table)); /* FOVEA_CUDA_PROFILE: timing wrappers (profile.cu) */
  FV_TRY(fv_backend_register(&table));
  registered = 1;
  return FV_OK;
}

static int autocast_bf16; /* fv_cuda_set_autocast */

extern "C" int fv_cuda_set_autocast(int bf16) {
  const int previous = autocast_bf16;
  autocast_bf16 = bf16 != 0;
  return previous;
}

int fv_cuda_autocast_bf16(void) { return autocast_bf16; }

extern "C" int fv_cuda_synchronize(void) {
  FV_CUDA_TRY("synchronize", cudaDeviceSynchronize());
  return fv_cuda_uploads_settle(); /* every upload has finished: their sources go back */
}
