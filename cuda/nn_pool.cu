/* nn_pool.cu: max_pool2d, avg_pool2d, adaptive_avg_pool2d and adaptive_max_pool2d on
 * contiguous NCHW tensors, forward and backward, float32 and float64, with
 * core/cpu/nn_pool.inc's semantics: max windows with dilation and padding, the first
 * maximum (or the last NaN) and its flat index h*W + w within the image (-inf and the
 * window's first position for an empty window); avg windows clipped to the padded input,
 * divided by the padded or the clipped size (count_include_pad), sums in double; adaptive
 * bins [floor(i*in/out), ceil((i+1)*in/out)). One thread per output element; the
 * backward passes scatter with atomicAdd into dinp (accumulated), so the order of
 * additions where windows overlap is not fixed.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_pool.cu -o build/cuda/nn_pool.o */
#include "nn_common.cuh"

#define GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

__device__ __forceinline__ int64_t adaptive_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
__device__ __forceinline__ int64_t adaptive_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

/* The CPU's window_max: first maximum, or the last NaN. */
template <typename T>
__device__ T window_max(const T *x, int64_t W, int64_t ih0, int64_t ih1, int64_t dh, int64_t iw0, int64_t iw1,
                        int64_t dw, int64_t *index) {
  T m = (T)-INFINITY;
  int64_t best = ih0 * W + iw0, first = -1, nan_at = -1;
  for (int64_t ih = ih0; ih < ih1; ih += dh)
    for (int64_t iw = iw0; iw < iw1; iw += dw) {
      const T v = x[ih * W + iw];
      if (v != v) nan_at = ih * W + iw;
      else if (v > m || (first < 0 && v == m)) {
        if (v > m || first < 0) first = ih * W + iw;
        m = v;
      }
    }
  if (nan_at >= 0) {
    *index = nan_at;
    return (T)NAN;
  }
  *index = first >= 0 ? first : best;
  return m;
}

template <typename T>
__global__ void max_pool_forward(T *out, int64_t *indices, const T *inp, int64_t BC, int64_t H, int64_t W,
                                 int64_t OH, int64_t OW, int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                                 int64_t pw, int64_t dh, int64_t dw, int adaptive) {
  GRID_LOOP(e, BC * OH * OW) {
    const int64_t ow = e % OW, oh = (e / OW) % OH, p = e / (OW * OH);
    const T *x = inp + p * H * W;
    int64_t ih0, ih1, iw0, iw1;
    if (adaptive) {
      ih0 = adaptive_start(oh, H, OH), ih1 = adaptive_end(oh, H, OH);
      iw0 = adaptive_start(ow, W, OW), iw1 = adaptive_end(ow, W, OW);
      dh = dw = 1;
    } else {
      ih0 = oh * sh - ph;
      ih1 = ih0 + (KH - 1) * dh + 1 < H ? ih0 + (KH - 1) * dh + 1 : H;
      while (ih0 < 0) ih0 += dh;
      iw0 = ow * sw - pw;
      iw1 = iw0 + (KW - 1) * dw + 1 < W ? iw0 + (KW - 1) * dw + 1 : W;
      while (iw0 < 0) iw0 += dw;
    }
    out[e] = window_max(x, W, ih0, ih1, dh, iw0, iw1, dw, &indices[e]);
  }
}

template <typename T>
__global__ void max_pool_backward(T *dinp, const T *dout, const int64_t *indices, int64_t BC, int64_t H, int64_t W,
                                  int64_t OH, int64_t OW) {
  GRID_LOOP(e, BC * OH * OW) {
    const int64_t p = e / (OH * OW);
    atomicAdd(dinp + p * H * W + indices[e], dout[e]);
  }
}

/* The CPU's avg_window: 0 when the clipped window is empty. */
__device__ __forceinline__ int avg_window(int64_t oh, int64_t ow, int64_t H, int64_t W, int64_t KH, int64_t KW,
                                          int64_t sh, int64_t sw, int64_t ph, int64_t pw, int count_include_pad,
                                          int64_t *ih0, int64_t *ih1, int64_t *iw0, int64_t *iw1, int64_t *div) {
  int64_t h0 = oh * sh - ph, w0 = ow * sw - pw;
  int64_t h1 = h0 + KH < H + ph ? h0 + KH : H + ph;
  int64_t w1 = w0 + KW < W + pw ? w0 + KW : W + pw;
  const int64_t pool_size = (h1 - h0) * (w1 - w0);
  if (h0 < 0) h0 = 0;
  if (w0 < 0) w0 = 0;
  if (h1 > H) h1 = H;
  if (w1 > W) w1 = W;
  *ih0 = h0, *ih1 = h1, *iw0 = w0, *iw1 = w1;
  if (h0 >= h1 || w0 >= w1) return 0;
  *div = count_include_pad ? pool_size : (h1 - h0) * (w1 - w0);
  return 1;
}

/* One thread per output: the window's bounds and divisor, plain or adaptive. */
__device__ __forceinline__ int avg_bounds(int adaptive, int64_t oh, int64_t ow, int64_t H, int64_t W, int64_t OH,
                                          int64_t OW, int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                                          int64_t pw, int cip, int64_t *ih0, int64_t *ih1, int64_t *iw0,
                                          int64_t *iw1, int64_t *div) {
  if (!adaptive) return avg_window(oh, ow, H, W, KH, KW, sh, sw, ph, pw, cip, ih0, ih1, iw0, iw1, div);
  *ih0 = adaptive_start(oh, H, OH), *ih1 = adaptive_end(oh, H, OH);
  *iw0 = adaptive_start(ow, W, OW), *iw1 = adaptive_end(ow, W, OW);
  *div = (*ih1 - *ih0) * (*iw1 - *iw0);
  return 1;
}

template <typename T>
__global__ void avg_pool_forward(T *out, const T *inp, int64_t BC, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                 int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int cip,
                                 int adaptive) {
  GRID_LOOP(e, BC * OH * OW) {
    const int64_t ow = e % OW, oh = (e / OW) % OH, p = e / (OW * OH);
    const T *x = inp + p * H * W;
    int64_t ih0, ih1, iw0, iw1, div;
    if (!avg_bounds(adaptive, oh, ow, H, W, OH, OW, KH, KW, sh, sw, ph, pw, cip, &ih0, &ih1, &iw0, &iw1, &div)) {
      out[e] = 0;
      continue;
    }
    double s = 0;
    for (int64_t ih = ih0; ih < ih1; ih++)
      for (int64_t iw = iw0; iw < iw1; iw++) s += (double)x[ih * W + iw];
    out[e] = (T)(s / (double)div);
  }
}

template <typename T>
__global__ void avg_pool_backward(T *dinp, const T *dout, int64_t BC, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                  int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int cip,
                                  int adaptive) {
  GRID_LOOP(e, BC * OH * OW) {
    const int64_t ow = e % OW, oh = (e / OW) % OH, p = e / (OW * OH);
    T *d = dinp + p * H * W;
    int64_t ih0, ih1, iw0, iw1, div;
    if (!avg_bounds(adaptive, oh, ow, H, W, OH, OW, KH, KW, sh, sw, ph, pw, cip, &ih0, &ih1, &iw0, &iw1, &div))
      continue;
    const T v = dout[e] / (T)div;
    for (int64_t ih = ih0; ih < ih1; ih++)
      for (int64_t iw = iw0; iw < iw1; iw++) atomicAdd(d + ih * W + iw, v);
  }
}

template <typename T> static int pool_run(const fv_nn_call *c, int backward) {
  const char *op = fv_op_name(c->op);
  const int64_t *i = c->i;
  const int is_max = c->op == FV_OP_MAX_POOL2D || c->op == FV_OP_ADAPTIVE_MAX_POOL2D;
  const int adaptive = c->op == FV_OP_ADAPTIVE_AVG_POOL2D || c->op == FV_OP_ADAPTIVE_MAX_POOL2D;
  /* forward: out first, the input last; backward: dinp, dout (, indices) */
  const fv_tensor *in = backward ? c->t[0] : c->t[is_max ? 2 : 1];
  const fv_tensor *o = backward ? c->t[1] : c->t[0];
  const int64_t BC = in->sizes[0] * in->sizes[1], H = in->sizes[2], W = in->sizes[3];
  const int64_t OH = o->sizes[2], OW = o->sizes[3], n = BC * OH * OW;
  if (n == 0) return FV_OK;
  int64_t KH = 0, KW = 0, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  int cip = 0;
  if (c->op == FV_OP_MAX_POOL2D) KH = i[0], KW = i[1], sh = i[2], sw = i[3], ph = i[4], pw = i[5], dh = i[6], dw = i[7];
  if (c->op == FV_OP_AVG_POOL2D) KH = i[0], KW = i[1], sh = i[2], sw = i[3], ph = i[4], pw = i[5], cip = (int)i[6];
  const unsigned grid = fv_cuda_blocks(n);
  if (is_max && !backward)
    max_pool_forward<T><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        fv_nn_ptr<T>(c, 0), fv_nn_ptr<int64_t>(c, 1), fv_nn_ptr<T>(c, 2), BC, H, W, OH, OW, KH, KW, sh, sw, ph, pw,
        dh, dw, adaptive);
  else if (is_max)
    max_pool_backward<T><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1), fv_nn_ptr<int64_t>(c, 2), BC, H, W, OH, OW);
  else if (!backward)
    avg_pool_forward<T><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1), BC, H,
                                                                       W, OH, OW, KH, KW, sh, sw, ph, pw, cip,
                                                                       adaptive);
  else
    avg_pool_backward<T><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1), BC,
                                                                        H, W, OH, OW, KH, KW, sh, sw, ph, pw, cip,
                                                                        adaptive);
  FV_CUDA_LAUNCHED(op);
  return FV_OK;
}

int fv_cuda_nn_pool(const fv_nn_call *c, int backward) {
  return fv_nn_is_f64(c) ? pool_run<double>(c, backward) : pool_run<float>(c, backward);
}
