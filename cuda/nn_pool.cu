/* nn_pool.cu: max_pool2d, avg_pool2d, adaptive_avg_pool2d and adaptive_max_pool2d on
 * contiguous NCHW tensors, forward and backward, float32 and float64, with
 * core/cpu/nn_pool.inc's semantics: max windows with dilation and padding, the first
 * maximum (or the last NaN) and its flat index h*W + w within the image (-inf and the
 * index -1 for an empty window); avg windows clipped to the padded input,
 * divided by the padded or the clipped size (count_include_pad), sums in double; adaptive
 * bins [floor(i*in/out), ceil((i+1)*in/out)). Forward: one thread per output element.
 * Backward: a gather, no atomics: one thread per input element (n, c, iy, ix) walks the
 * outputs whose window holds it (pool_outputs, adaptive_outputs below), oh-major then
 * ow, sums their contributions in the element type in that order and adds the sum into
 * dinp once (accumulated; untouched when nothing reaches it). That is the CPU scatter's
 * order for each input element, so the gradients repeat from run to run and, from a
 * zeroed dinp (what autograd passes), are meant to be the CPU's bit for bit (IEEE
 * operations, no contraction: -fmad=false). Max pooling routes an output's gradient to
 * its saved index only (ties, NaN), and only when that position is one of its window's
 * taps: an output whose window holds no input position (possible with dilation, all taps
 * in the padding; its value is -inf and its index -1, as on the CPU) passes no gradient.
 * The per-element bodies are __host__ __device__ so that a host loop can check them.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_pool.cu -o build/cuda/nn_pool.o */
#include "nn_common.cuh"

#define GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

#define HD __host__ __device__ __forceinline__

HD int64_t adaptive_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
HD int64_t adaptive_end(int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; }

/* The CPU's window_max: first maximum, or the last NaN. */
template <typename T>
__device__ T window_max(const T *x, int64_t W, int64_t ih0, int64_t ih1, int64_t dh, int64_t iw0, int64_t iw1,
                        int64_t dw, int64_t *index) {
  T m = (T)-INFINITY;
  int64_t first = -1, nan_at = -1;
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
  *index = first; /* -1: an empty window, as the CPU */
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

/* The CPU's avg_window: 0 when the clipped window is empty. */
HD int avg_window(int64_t oh, int64_t ow, int64_t H, int64_t W, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                  int64_t ph, int64_t pw, int count_include_pad, int64_t *ih0, int64_t *ih1, int64_t *iw0,
                  int64_t *iw1, int64_t *div) {
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

/* The window's bounds and divisor of output (oh, ow), plain or adaptive; 0 when empty. */
HD int avg_bounds(int adaptive, int64_t oh, int64_t ow, int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t KH,
                  int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int cip, int64_t *ih0, int64_t *ih1,
                  int64_t *iw0, int64_t *iw1, int64_t *div) {
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

/* ---- backward: a gather per input element ---- */

/* One axis of the geometry: input and output sizes, and the window (kernel K, stride s,
 * padding p, dilation d; avg pooling has d = 1). */
struct pool_axis {
  int64_t in, out, K, s, p, d;
};
/* What a backward thread needs, by value: the h axis y, the w axis x, count_include_pad,
 * and whether the windows are adaptive bins (K, s, p, d unused then). */
struct pool_geom {
  pool_axis y, x;
  int cip, adaptive;
};

/* The outputs o along an axis whose window span holds input i (0 <= i < in): output o's
 * taps are o*s - p + k*d for k in [0, K), spanning [o*s - p, o*s - p + (K-1)*d], so
 *   o*s <= i + p  and  o*s >= i + p - (K-1)*d,  that is
 *   lo = max(0, ceil((i + p - (K-1)*d) / s)),  hi = min(out - 1, floor((i + p) / s)),
 * the range [lo, hi] (empty when lo > hi). i + p >= 0, so the floor is C's division; a
 * numerator num <= 0 gives lo = 0, else the ceiling is (num + s - 1) / s. */
HD void pool_outputs(int64_t i, const pool_axis &a, int64_t *lo, int64_t *hi) {
  const int64_t num = i + a.p - (a.K - 1) * a.d, b = (i + a.p) / a.s;
  *lo = num <= 0 ? 0 : (num + a.s - 1) / a.s;
  *hi = b < a.out - 1 ? b : a.out - 1;
}

/* The adaptive outputs o whose bin [floor(o*in/out), ceil((o+1)*in/out)) holds i, in
 * integers: floor(o*in/out) <= i  iff  o*in < (i+1)*out  iff  o <= floor(((i+1)*out - 1)/in),
 * and ceil((o+1)*in/out) > i  iff  (o+1)*in > i*out  iff  o >= floor(i*out/in). Both bin
 * ends grow with o, so these outputs are the range [lo, hi]; it is never empty (the bins
 * cover the input), and hi <= out - 1 for i < in (clamped all the same). */
HD void adaptive_outputs(int64_t i, const pool_axis &a, int64_t *lo, int64_t *hi) {
  const int64_t b = ((i + 1) * a.out - 1) / a.in;
  *lo = (i * a.out) / a.in;
  *hi = b < a.out - 1 ? b : a.out - 1;
}

HD void axis_outputs(const pool_geom &g, const pool_axis &a, int64_t i, int64_t *lo, int64_t *hi) {
  if (g.adaptive) adaptive_outputs(i, a, lo, hi);
  else pool_outputs(i, a, lo, hi);
}

/* Whether input i is a tap of output o's window along the axis (each candidate of the
 * ranges above is checked): in the bin, or at o*s - p + k*d for some k in [0, K). */
HD int axis_tap(const pool_geom &g, const pool_axis &a, int64_t o, int64_t i) {
  if (g.adaptive) return adaptive_start(o, a.in, a.out) <= i && i < adaptive_end(o, a.in, a.out);
  const int64_t k = i + a.p - o * a.s; /* offset from the window's start */
  return k >= 0 && k <= (a.K - 1) * a.d && k % a.d == 0;
}

/* Input element e of dinp (plane p, row iy, column ix): max pooling (plain or adaptive)
 * routes each output's gradient to its saved index (indices: flat iy*W + ix within the
 * plane, the forward's). Gathers the outputs whose window has (iy, ix) as a tap and
 * whose index is it, oh-major then ow, in T, and adds the sum into dinp[e] once. */
template <typename T>
HD void max_pool_grad(int64_t e, T *dinp, const T *dout, const int64_t *indices, const pool_geom &g) {
  const int64_t W = g.x.in, H = g.y.in, OW = g.x.out;
  const int64_t ix = e % W, iy = (e / W) % H, plane = e / (W * H) * (g.y.out * OW), at = iy * W + ix;
  int64_t oh0, oh1, ow0, ow1;
  axis_outputs(g, g.y, iy, &oh0, &oh1);
  axis_outputs(g, g.x, ix, &ow0, &ow1);
  T s = 0;
  int any = 0;
  for (int64_t oh = oh0; oh <= oh1; oh++) {
    if (!axis_tap(g, g.y, oh, iy)) continue;
    for (int64_t ow = ow0; ow <= ow1; ow++) {
      const int64_t o = plane + oh * OW + ow;
      if (indices[o] == at && axis_tap(g, g.x, ow, ix)) {
        s += dout[o];
        any = 1;
      }
    }
  }
  if (any) dinp[e] += s;
}

/* Input element e of dinp: avg pooling (plain or adaptive). Gathers dout / divisor over
 * the outputs whose window holds (iy, ix) (bounds and divisor from avg_bounds, as the
 * forward: clipped windows, count_include_pad, the longer ceil_mode output), oh-major
 * then ow, in T, and adds the sum into dinp[e] once. */
template <typename T> HD void avg_pool_grad(int64_t e, T *dinp, const T *dout, const pool_geom &g) {
  const int64_t W = g.x.in, H = g.y.in, OH = g.y.out, OW = g.x.out;
  const int64_t ix = e % W, iy = (e / W) % H, plane = e / (W * H) * (OH * OW);
  int64_t oh0, oh1, ow0, ow1;
  axis_outputs(g, g.y, iy, &oh0, &oh1);
  axis_outputs(g, g.x, ix, &ow0, &ow1);
  T s = 0;
  int any = 0;
  for (int64_t oh = oh0; oh <= oh1; oh++)
    for (int64_t ow = ow0; ow <= ow1; ow++) {
      int64_t ih0, ih1, iw0, iw1, div;
      if (!avg_bounds(g.adaptive, oh, ow, H, W, OH, OW, g.y.K, g.x.K, g.y.s, g.x.s, g.y.p, g.x.p, g.cip, &ih0, &ih1,
                      &iw0, &iw1, &div) ||
          iy < ih0 || iy >= ih1 || ix < iw0 || ix >= iw1)
        continue;
      s += dout[plane + oh * OW + ow] / (T)div;
      any = 1;
    }
  if (any) dinp[e] += s;
}

template <typename T>
__global__ void max_pool_backward(T *dinp, const T *dout, const int64_t *indices, int64_t n, pool_geom g) {
  GRID_LOOP(e, n) max_pool_grad(e, dinp, dout, indices, g);
}

template <typename T> __global__ void avg_pool_backward(T *dinp, const T *dout, int64_t n, pool_geom g) {
  GRID_LOOP(e, n) avg_pool_grad(e, dinp, dout, g);
}

/* The geometry of call c from its slots (core/internal.h; forward t: out, (indices,) inp;
 * backward t: dinp, dout (, indices); i: the window's arguments), and its B*C planes. */
static pool_geom pool_geom_of(const fv_nn_call *c, int backward, int64_t *BC) {
  const int is_max = c->op == FV_OP_MAX_POOL2D || c->op == FV_OP_ADAPTIVE_MAX_POOL2D;
  const int adaptive = c->op == FV_OP_ADAPTIVE_AVG_POOL2D || c->op == FV_OP_ADAPTIVE_MAX_POOL2D;
  const fv_tensor *in = backward ? c->t[0] : c->t[is_max ? 2 : 1];
  const fv_tensor *o = backward ? c->t[1] : c->t[0];
  const int64_t *i = c->i;
  pool_geom g = {{in->sizes[2], o->sizes[2], 0, 1, 0, 1}, {in->sizes[3], o->sizes[3], 0, 1, 0, 1}, 0, adaptive};
  if (c->op == FV_OP_MAX_POOL2D || c->op == FV_OP_AVG_POOL2D) {
    g.y.K = i[0], g.x.K = i[1], g.y.s = i[2], g.x.s = i[3], g.y.p = i[4], g.x.p = i[5];
    if (c->op == FV_OP_MAX_POOL2D) g.y.d = i[6], g.x.d = i[7];
    else g.cip = (int)i[6];
  }
  *BC = in->sizes[0] * in->sizes[1];
  return g;
}

template <typename T> static int pool_run(const fv_nn_call *c, int backward) {
  const int is_max = c->op == FV_OP_MAX_POOL2D || c->op == FV_OP_ADAPTIVE_MAX_POOL2D;
  int64_t BC;
  const pool_geom g = pool_geom_of(c, backward, &BC);
  const int64_t H = g.y.in, W = g.x.in, OH = g.y.out, OW = g.x.out, n = BC * OH * OW;
  if (n == 0 || (backward && H * W == 0)) return FV_OK; /* forward: an empty input's windows are empty */
  if (!backward) { /* a thread per output element */
    const unsigned grid = fv_cuda_blocks(n);
    if (is_max)
      max_pool_forward<T><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
          fv_nn_ptr<T>(c, 0), fv_nn_ptr<int64_t>(c, 1), fv_nn_ptr<T>(c, 2), BC, H, W, OH, OW, g.y.K, g.x.K, g.y.s,
          g.x.s, g.y.p, g.x.p, g.y.d, g.x.d, g.adaptive);
    else
      avg_pool_forward<T><<<grid, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1), BC, H,
                                                                         W, OH, OW, g.y.K, g.x.K, g.y.s, g.x.s, g.y.p,
                                                                         g.x.p, g.cip, g.adaptive);
  } else { /* a thread per input element */
    const int64_t nin = BC * H * W;
    if (is_max)
      max_pool_backward<T><<<fv_cuda_blocks(nin), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
          fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1), fv_nn_ptr<int64_t>(c, 2), nin, g);
    else
      avg_pool_backward<T><<<fv_cuda_blocks(nin), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(fv_nn_ptr<T>(c, 0),
                                                                                         fv_nn_ptr<T>(c, 1), nin, g);
  }
  FV_CUDA_LAUNCHED(fv_op_name(c->op));
  return FV_OK;
}

int fv_cuda_nn_pool(const fv_nn_call *c, int backward) {
  return fv_nn_is_f64(c) ? pool_run<double>(c, backward) : pool_run<float>(c, backward);
}
