/* nn_upsample.cu: bilinear interpolation (F.interpolate mode='bilinear') of contiguous
 * NCHW tensors to (OH, OW), up or down, forward and backward, float32 and float64, with
 * core/cpu/nn_upsample.inc's arithmetic in the element type: PyTorch's
 * area_pixel_compute_scale and source index rule (align_corners 1: src = dst*(in-1)/(out-1),
 * 0 when out == 1; align_corners 0: src = (dst + 0.5)*in/out - 0.5 clamped at 0), the
 * upper neighbour clamped to the last row/column. One thread per output element; the
 * backward scatters its four weighted contributions with atomicAdd (accumulated).
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_upsample.cu -o build/cuda/nn_upsample.o */
#include "nn_common.cuh"

template <typename T> static T bl_scale(int64_t in, int64_t out, int align_corners) {
  if (align_corners) return out > 1 ? (T)(in - 1) / (T)(out - 1) : (T)0;
  return (T)in / (T)out;
}

template <typename T>
__device__ __forceinline__ void bl_index(T scale, int64_t dst, int align_corners, int64_t in, int64_t *i0,
                                         int64_t *i1, T *l0, T *l1) {
  T src = align_corners ? scale * (T)dst : scale * ((T)dst + (T)0.5) - (T)0.5;
  if (src < 0) src = 0;
  int64_t i = (int64_t)src;
  if (i > in - 1) i = in - 1;
  T lam = src - (T)i;
  if (lam < 0) lam = 0;
  if (lam > 1) lam = 1;
  *i0 = i;
  *i1 = i + (i < in - 1 ? 1 : 0);
  *l1 = lam;
  *l0 = (T)1 - lam;
}

template <typename T>
__global__ void upsample_kernel(T *out, T *dinp, const T *inp, const T *dout, int64_t BC, int64_t H, int64_t W,
                                int64_t OH, int64_t OW, T rh, T rw, int align_corners) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < BC * OH * OW;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ow = e % OW, oh = (e / OW) % OH, p = e / (OW * OH);
    int64_t h0, h1, w0, w1;
    T lh0, lh1, lw0, lw1;
    bl_index(rh, oh, align_corners, H, &h0, &h1, &lh0, &lh1);
    bl_index(rw, ow, align_corners, W, &w0, &w1, &lw0, &lw1);
    if (out) {
      const T *r0 = inp + p * H * W + h0 * W, *r1 = inp + p * H * W + h1 * W;
      out[e] = lh0 * (lw0 * r0[w0] + lw1 * r0[w1]) + lh1 * (lw0 * r1[w0] + lw1 * r1[w1]);
    } else {
      T *r0 = dinp + p * H * W + h0 * W, *r1 = dinp + p * H * W + h1 * W;
      const T v = dout[e];
      atomicAdd(r0 + w0, lh0 * lw0 * v);
      atomicAdd(r0 + w1, lh0 * lw1 * v);
      atomicAdd(r1 + w0, lh1 * lw0 * v);
      atomicAdd(r1 + w1, lh1 * lw1 * v);
    }
  }
}

template <typename T> static int upsample_run(const fv_nn_call *c, int backward) {
  const int align_corners = (int)c->i[0];
  const fv_tensor *in = c->t[backward ? 0 : 1], *o = c->t[backward ? 1 : 0];
  const int64_t BC = in->sizes[0] * in->sizes[1], H = in->sizes[2], W = in->sizes[3];
  const int64_t OH = o->sizes[2], OW = o->sizes[3];
  if (BC * OH * OW == 0) return FV_OK;
  const T rh = bl_scale<T>(H, OH, align_corners), rw = bl_scale<T>(W, OW, align_corners);
  if (!backward)
    upsample_kernel<T><<<fv_cuda_blocks(BC * OH * OW), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        fv_nn_ptr<T>(c, 0), NULL, fv_nn_ptr<T>(c, 1), NULL, BC, H, W, OH, OW, rh, rw, align_corners);
  else
    upsample_kernel<T><<<fv_cuda_blocks(BC * OH * OW), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        NULL, fv_nn_ptr<T>(c, 0), NULL, fv_nn_ptr<T>(c, 1), BC, H, W, OH, OW, rh, rw, align_corners);
  FV_CUDA_LAUNCHED(backward ? "upsample_bilinear backward" : "upsample_bilinear");
  return FV_OK;
}

int fv_cuda_nn_upsample(const fv_nn_call *c, int backward) {
  return fv_nn_is_f64(c) ? upsample_run<double>(c, backward) : upsample_run<float>(c, backward);
}
