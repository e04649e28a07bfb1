/* copy.cu: the CUDA copy kernels: strided copy (broadcast sources allowed) with dtype
 * conversion between float32, float64, int64 and uint8, fill, and the host transfers of
 * contiguous tensors. Conversions are core/cpu/copy.c's: float to uint8 rounds half up
 * and saturates, float to int64 truncates toward zero and saturates, NaN becomes 0.
 *
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/copy.cu (see backend.cu)
 */
#include "common.cuh"

namespace {

__device__ __forceinline__ uint8_t to_u8(double v) {
  if (!(v > 0)) return 0;
  if (v >= 255) return 255;
  return (uint8_t)(v + 0.5);
}

__device__ __forceinline__ int64_t to_i64(double v) {
  if (v != v) return 0;
  if (v >= 9.2233720368547758e18) return INT64_MAX;
  if (v <= -9.2233720368547758e18) return INT64_MIN;
  return (int64_t)v;
}

/* the conversions of core/cpu/copy.c's CONVERT_* macros */
template <typename D, typename S> struct convert;
template <typename S> struct convert<float, S> {
  __device__ static float to(S v) { return (float)v; }
};
template <typename S> struct convert<double, S> {
  __device__ static double to(S v) { return (double)v; }
};
template <typename S> struct convert<int64_t, S> {
  __device__ static int64_t to(S v) { return to_i64((double)v); }
};
template <typename S> struct convert<uint8_t, S> {
  __device__ static uint8_t to(S v) { return to_u8((double)v); }
};

template <typename D, typename S>
__global__ void copy_kernel(D *dst, const S *src, fv_cuda_walk w) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < w.numel; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[3];
    fv_cuda_offsets(w, i, off);
    dst[off[0]] = convert<D, S>::to(src[off[1]]);
  }
}

template <typename D>
__global__ void fill_kernel(D *dst, double value, fv_cuda_walk w) {
  D v = convert<D, double>::to(value);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < w.numel; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[3];
    fv_cuda_offsets(w, i, off);
    dst[off[0]] = v;
  }
}

template <typename D, typename S>
int launch_copy(fv_tensor *dst, const fv_tensor *src, const fv_cuda_walk &w) {
  copy_kernel<D, S><<<fv_cuda_blocks(w.numel), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
      (D *)fv_cuda_base(dst), (const S *)fv_cuda_base(src), w);
  FV_CUDA_LAUNCHED("copy");
  return FV_OK;
}

template <typename D>
int copy_to(fv_tensor *dst, const fv_tensor *src, const fv_cuda_walk &w) {
  switch (src->scalar_type) {
    case FV_FLOAT32: return launch_copy<D, float>(dst, src, w);
    case FV_FLOAT64: return launch_copy<D, double>(dst, src, w);
    case FV_INT64: return launch_copy<D, int64_t>(dst, src, w);
    case FV_UINT8: return launch_copy<D, uint8_t>(dst, src, w);
    default: break;
  }
  return fv_fail(FV_ERR_DTYPE, "copy: %s to %s is not supported on cuda", fv_dtype_name(src->scalar_type),
                 fv_dtype_name(dst->scalar_type));
}

template <typename D>
int launch_fill(fv_tensor *dst, double value, const fv_cuda_walk &w) {
  fill_kernel<D><<<fv_cuda_blocks(w.numel), FV_CUDA_THREADS, 0, fv_cuda_stream>>>((D *)fv_cuda_base(dst), value, w);
  FV_CUDA_LAUNCHED("fill");
  return FV_OK;
}

}  // namespace

extern "C" int fv_cuda_copy(fv_tensor *dst, const fv_tensor *src) {
  const fv_tensor *ts[2] = {dst, src};
  fv_cuda_walk w = fv_cuda_walk_of(2, ts);
  if (w.numel == 0) return FV_OK;
  switch (dst->scalar_type) {
    case FV_FLOAT32: return copy_to<float>(dst, src, w);
    case FV_FLOAT64: return copy_to<double>(dst, src, w);
    case FV_INT64: return copy_to<int64_t>(dst, src, w);
    case FV_UINT8: return copy_to<uint8_t>(dst, src, w);
    default: break;
  }
  return fv_fail(FV_ERR_DTYPE, "copy: %s to %s is not supported on cuda", fv_dtype_name(src->scalar_type),
                 fv_dtype_name(dst->scalar_type));
}

extern "C" int fv_cuda_fill(fv_tensor *dst, double value) {
  const fv_tensor *ts[1] = {dst};
  fv_cuda_walk w = fv_cuda_walk_of(1, ts);
  if (w.numel == 0) return FV_OK;
  switch (dst->scalar_type) {
    case FV_FLOAT32: return launch_fill<float>(dst, value, w);
    case FV_FLOAT64: return launch_fill<double>(dst, value, w);
    case FV_INT64: return launch_fill<int64_t>(dst, value, w);
    case FV_UINT8: return launch_fill<uint8_t>(dst, value, w);
    default: break;
  }
  return fv_fail(FV_ERR_DTYPE, "fill: dtype %s is not supported on cuda", fv_dtype_name(dst->scalar_type));
}

/* Synchronous with respect to the host: when these return, the host buffer may be
 * read (to_host) or reused (from_host). */
extern "C" int fv_cuda_to_host(void *host, const fv_tensor *src, size_t bytes) {
  if (bytes == 0) return FV_OK;
  FV_CUDA_TRY("copy to cpu", cudaMemcpy(host, fv_cuda_first(src), bytes, cudaMemcpyDeviceToHost));
  return FV_OK;
}

extern "C" int fv_cuda_from_host(fv_tensor *dst, const void *host, size_t bytes) {
  if (bytes == 0) return FV_OK;
  FV_CUDA_TRY("copy from cpu", cudaMemcpy(fv_cuda_first(dst), host, bytes, cudaMemcpyHostToDevice));
  return FV_OK;
}
