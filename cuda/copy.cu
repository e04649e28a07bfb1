/* copy.cu: the CUDA copy kernels: strided copy (broadcast sources allowed) with dtype
 * conversion between float32, float64, int64 and uint8, fill, and the host transfers of
 * contiguous tensors. Conversions are core/cpu/copy.c's: float to uint8 rounds half up
 * and saturates, float to int64 truncates toward zero and saturates, NaN becomes 0.
 * Dense operands (one run each, fv_cuda_walk_dense) take fast paths: a copy within one
 * dtype is cudaMemcpyAsync, a conversion or a fill of at most INT32_MAX elements a flat
 * kernel with 32-bit indices (fills by 16-byte stores when aligned), a fill with +0 is
 * cudaMemsetAsync; everything else walks the strides.
 *
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/copy.cu (see backend.cu)
 */
#include <math.h>

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

/* dst and src dense runs of n elements from the pointers given (fv_cuda_walk_flat) */
template <typename D, typename S>
__global__ void copy_flat(D *dst, const S *src, uint32_t n) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    dst[i] = convert<D, S>::to(src[i]);
}

/* dst a dense run of n elements; vec: dst is 16-byte aligned, so the first n / K * K
 * elements are stored by packs of K */
template <typename D>
__global__ void fill_flat(D *dst, double value, uint32_t n, int vec) {
  typedef fv_cuda_pack<D> P;
  constexpr uint32_t K = sizeof(P) / sizeof(D);
  const D v = convert<D, double>::to(value);
  P p;
#pragma unroll
  for (uint32_t k = 0; k < K; k++) p.v[k] = v;
  const uint32_t first = blockIdx.x * blockDim.x + threadIdx.x, stride = gridDim.x * blockDim.x;
  const uint32_t packs = vec ? n / K : 0;
  for (uint32_t j = first; j < packs; j += stride) ((P *)dst)[j] = p;
  for (uint32_t i = packs * K + first; i < n; i += stride) dst[i] = v;
}

template <typename D, typename S>
int launch_copy(fv_tensor *dst, const fv_tensor *src, const fv_cuda_walk &w) {
  if (fv_cuda_walk_flat(w))
    copy_flat<D, S><<<fv_cuda_blocks(w.numel), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        (D *)fv_cuda_base(dst) + w.base[0], (const S *)fv_cuda_base(src) + w.base[1], (uint32_t)w.numel);
  else
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
  if (fv_cuda_walk_flat(w)) {
    D *d = (D *)fv_cuda_base(dst) + w.base[0];
    const int vec = fv_cuda_aligned16(d);
    const uint32_t n = (uint32_t)w.numel;
    fill_flat<D><<<fv_cuda_blocks(vec ? n / (16 / sizeof(D)) : n), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(d, value, n,
                                                                                                        vec);
  } else {
    fill_kernel<D><<<fv_cuda_blocks(w.numel), FV_CUDA_THREADS, 0, fv_cuda_stream>>>((D *)fv_cuda_base(dst), value,
                                                                                     w);
  }
  FV_CUDA_LAUNCHED("fill");
  return FV_OK;
}

}  // namespace

extern "C" int fv_cuda_copy(fv_tensor *dst, const fv_tensor *src) {
  const fv_tensor *ts[2] = {dst, src};
  fv_cuda_walk w = fv_cuda_walk_of(2, ts);
  if (w.numel == 0) return FV_OK;
  if (dst->scalar_type == src->scalar_type && fv_cuda_walk_dense(w, 0) && fv_cuda_walk_dense(w, 1)) {
    char *to = fv_cuda_first(dst), *from = fv_cuda_first(src);
    if (to == from) return FV_OK; /* onto itself */
    FV_CUDA_TRY("copy", cudaMemcpyAsync(to, from, (size_t)w.numel * fv_dtype_size(dst->scalar_type),
                                        cudaMemcpyDeviceToDevice, fv_cuda_stream));
    return FV_OK;
  }
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
  if (value == 0 && !signbit(value) && fv_cuda_walk_dense(w, 0)) { /* +0 is all zero bytes in every dtype */
    FV_CUDA_TRY("fill", cudaMemsetAsync(fv_cuda_first(dst), 0, (size_t)w.numel * fv_dtype_size(dst->scalar_type),
                                        fv_cuda_stream));
    return FV_OK;
  }
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
