/* nn_upsample.cu: bilinear interpolation (F.interpolate mode='bilinear') of contiguous
 * NCHW tensors to (OH, OW), up or down, forward and backward, float32 and float64, with
 * core/cpu/nn_upsample.inc's arithmetic in the element type: PyTorch's
 * area_pixel_compute_scale and source index rule (align_corners 1: src = dst*(in-1)/(out-1),
 * 0 when out == 1; align_corners 0: src = (dst + 0.5)*in/out - 0.5 clamped at 0), the
 * upper neighbour clamped to the last row/column. Forward: one thread per output element.
 * Backward: a gather, no atomics: one thread per input element (n, c, iy, ix) finds the
 * outputs whose taps use row iy and column ix (bl_outputs below), recomputes their taps
 * and weights with the forward's bl_index (the same expressions, so the same weights),
 * sums weight * dout in T over them, oh-major then ow and within an output in the CPU's
 * tap order (h0 w0, h0 w1, h1 w0, h1 w1), and adds the sum into dinp once (accumulated;
 * untouched when nothing reaches it). That is the CPU scatter's order for each input
 * element, so the gradients repeat from run to run and, from a zeroed dinp (what
 * autograd passes), are meant to be the CPU's bit for bit (IEEE operations, no
 * contraction: -fmad=false).
 * The per-element bodies are __host__ __device__ so that a host loop can check them.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_upsample.cu -o build/cuda/nn_upsample.o */
#include "nn_common.cuh"

#define HD __host__ __device__ __forceinline__

template <typename T> static T bl_scale(int64_t in, int64_t out, int align_corners) {
  if (align_corners) return out > 1 ? (T)(in - 1) / (T)(out - 1) : (T)0;
  return (T)in / (T)out;
}

/* Taps i0 <= i1 and weights of output position dst along an axis of size in. */
template <typename T>
HD void bl_index(T scale, int64_t dst, int align_corners, int64_t in, int64_t *i0, int64_t *i1, T *l0, T *l1) {
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

/* The lower tap of output dst: bl_index's i0. */
template <typename T> HD int64_t bl_lower(T scale, int64_t dst, int align_corners, int64_t in) {
  int64_t i0, i1;
  T l0, l1;
  bl_index(scale, dst, align_corners, in, &i0, &i1, &l0, &l1);
  return i0;
}

/* The outputs [*lo, *hi] along an axis (in inputs, out outputs) whose taps include input
 * i. Output o's taps are i0(o) and i1(o) = min(i0(o) + 1, in - 1), so it uses i iff
 * i - 1 <= i0(o) <= i (for i0(o) = i - 1 < in - 1, i1(o) = i). i0 does not decrease with
 * o (src is built from o by roundings that keep order, then clamped and truncated), so
 * these outputs are the range lo = min{o : i0(o) >= i - 1}, hi = max{o : i0(o) <= i}
 * (lo = 0 when i <= 1, hi = out - 1 when i = in - 1). The ends are first estimated from
 * the inverse of the mapping in double (src >= t from o = t/scale, align_corners, or
 * (t + 0.5)/scale - 0.5; src < i + 1 below the same for t = i + 1; everything when the
 * scale is 0) and then moved one output at a time while the exact i0 of the neighbour
 * says so, so the result is exact whatever the estimate's rounding error (the estimate
 * only saves the steps). May be empty (hi < lo: nothing uses i, when downscaling). */
template <typename T>
HD void bl_outputs(T scale, int align_corners, int64_t i, int64_t in, int64_t out, int64_t *lo, int64_t *hi) {
  const double r = (double)scale;
  double elo = 0, ehi = (double)out;
  if (r > 0) {
    elo = align_corners ? (double)(i - 1) / r : ((double)(i - 1) + 0.5) / r - 0.5;
    ehi = align_corners ? (double)(i + 1) / r : ((double)(i + 1) + 0.5) / r - 0.5;
  }
  int64_t a = elo <= 0 ? 0 : elo >= (double)out ? out : (int64_t)elo;
  int64_t b = ehi <= 0 ? -1 : ehi >= (double)out ? out - 1 : (int64_t)ehi;
  if (i <= 1) a = 0;
  else {
    while (a > 0 && bl_lower(scale, a - 1, align_corners, in) >= i - 1) a--;
    while (a < out && bl_lower(scale, a, align_corners, in) < i - 1) a++;
  }
  if (i >= in - 1) b = out - 1;
  else {
    while (b < out - 1 && bl_lower(scale, b + 1, align_corners, in) <= i) b++;
    while (b >= 0 && bl_lower(scale, b, align_corners, in) > i) b--;
  }
  *lo = a;
  *hi = b;
}

/* What a backward thread needs, by value. */
template <typename T> struct bl_geom {
  int64_t H, W, OH, OW;
  T rh, rw;
  int align_corners;
};

/* Input element e of dinp (plane p, row iy, column ix): the gather described above. */
template <typename T> HD void bl_grad(int64_t e, T *dinp, const T *dout, const bl_geom<T> &g) {
  const int64_t ix = e % g.W, iy = (e / g.W) % g.H, plane = e / (g.W * g.H) * (g.OH * g.OW);
  int64_t oh0, oh1, ow0, ow1;
  bl_outputs(g.rh, g.align_corners, iy, g.H, g.OH, &oh0, &oh1);
  bl_outputs(g.rw, g.align_corners, ix, g.W, g.OW, &ow0, &ow1);
  T s = 0;
  int any = 0;
  for (int64_t oh = oh0; oh <= oh1; oh++) {
    int64_t h0, h1;
    T lh0, lh1;
    bl_index(g.rh, oh, g.align_corners, g.H, &h0, &h1, &lh0, &lh1);
    if (h0 != iy && h1 != iy) continue;
    for (int64_t ow = ow0; ow <= ow1; ow++) {
      int64_t w0, w1;
      T lw0, lw1;
      bl_index(g.rw, ow, g.align_corners, g.W, &w0, &w1, &lw0, &lw1);
      if (w0 != ix && w1 != ix) continue;
      const T v = dout[plane + oh * g.OW + ow];
      if (h0 == iy && w0 == ix) s += lh0 * lw0 * v;
      if (h0 == iy && w1 == ix) s += lh0 * lw1 * v;
      if (h1 == iy && w0 == ix) s += lh1 * lw0 * v;
      if (h1 == iy && w1 == ix) s += lh1 * lw1 * v;
      any = 1;
    }
  }
  if (any) dinp[e] += s;
}

template <typename T>
__global__ void upsample_forward(T *out, const T *inp, int64_t BC, int64_t H, int64_t W, int64_t OH, int64_t OW, T rh,
                                 T rw, int align_corners) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < BC * OH * OW;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ow = e % OW, oh = (e / OW) % OH, p = e / (OW * OH);
    int64_t h0, h1, w0, w1;
    T lh0, lh1, lw0, lw1;
    bl_index(rh, oh, align_corners, H, &h0, &h1, &lh0, &lh1);
    bl_index(rw, ow, align_corners, W, &w0, &w1, &lw0, &lw1);
    const T *r0 = inp + p * H * W + h0 * W, *r1 = inp + p * H * W + h1 * W;
    out[e] = lh0 * (lw0 * r0[w0] + lw1 * r0[w1]) + lh1 * (lw0 * r1[w0] + lw1 * r1[w1]);
  }
}

template <typename T> __global__ void upsample_backward(T *dinp, const T *dout, int64_t n, bl_geom<T> g) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x)
    bl_grad(e, dinp, dout, g);
}

/* The geometry of call c from its slots (core/internal.h; forward t: out, inp; backward t:
 * dinp, dout; i: align_corners), and its B*C planes. */
template <typename T> static bl_geom<T> bl_geom_of(const fv_nn_call *c, int backward, int64_t *BC) {
  const int align_corners = (int)c->i[0];
  const fv_tensor *in = c->t[backward ? 0 : 1], *o = c->t[backward ? 1 : 0];
  const int64_t H = in->sizes[2], W = in->sizes[3], OH = o->sizes[2], OW = o->sizes[3];
  *BC = in->sizes[0] * in->sizes[1];
  const bl_geom<T> g = {H, W, OH, OW, bl_scale<T>(H, OH, align_corners), bl_scale<T>(W, OW, align_corners),
                        align_corners};
  return g;
}

template <typename T> static int upsample_run(const fv_nn_call *c, int backward) {
  int64_t BC;
  const bl_geom<T> g = bl_geom_of<T>(c, backward, &BC);
  if (BC * g.OH * g.OW == 0 || g.H * g.W == 0) return FV_OK;
  if (!backward) /* a thread per output element */
    upsample_forward<T><<<fv_cuda_blocks(BC * g.OH * g.OW), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1), BC, g.H, g.W, g.OH, g.OW, g.rh, g.rw, g.align_corners);
  else /* a thread per input element */
    upsample_backward<T><<<fv_cuda_blocks(BC * g.H * g.W), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1), BC * g.H * g.W, g);
  FV_CUDA_LAUNCHED(backward ? "upsample_bilinear backward" : "upsample_bilinear");
  return FV_OK;
}

int fv_cuda_nn_upsample(const fv_nn_call *c, int backward) {
  return fv_nn_is_f64(c) ? upsample_run<double>(c, backward) : upsample_run<float>(c, backward);
}
