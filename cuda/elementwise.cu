/* elementwise.cu: the CUDA elementwise kernels for float32 and float64: binary ops on
 * operands already broadcast to the output's shape (stride 0 on broadcast dims), the
 * same with a scalar on either side, unary ops and clamp. Semantics are those of
 * core/cpu/elementwise.c, expression for expression: comparisons give 0 or 1 in the
 * input's dtype; maximum/minimum return a NaN when the first operand is NaN (else the
 * other operand, NaN or not); relu and clamp pass NaN through; float32 uses the f
 * functions (powf, expf, ...). CUDA's math functions are not glibc's, so a transcendental
 * may differ from the CPU's in the last bit or two; arithmetic and comparisons agree
 * exactly (built without fast math, -fmad=false).
 * Three paths, one per-element expression (binary_op, unary_op), so they agree bit for
 * bit: flat (every operand dense, at most INT32_MAX elements: 32-bit indices, 16-byte
 * vector loads and stores when all pointers are aligned), per-channel (binary ops with
 * out and one operand dense and the other moving along one merged dim, as a bias or a
 * scale per channel: the other's index by a 32-bit divider), and the generic strided walk.
 *
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/elementwise.cu (see backend.cu)
 */
#include "common.cuh"

namespace {

/* the float and double spellings of the math functions */
__device__ __forceinline__ float m_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double m_pow(double x, double y) { return pow(x, y); }
__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_log(float x) { return logf(x); }
__device__ __forceinline__ double m_log(double x) { return log(x); }
__device__ __forceinline__ float m_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double m_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float m_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double m_abs(double x) { return fabs(x); }
__device__ __forceinline__ float m_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double m_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float m_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double m_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

template <int OP, typename T>
__device__ __forceinline__ T binary_op(T x, T y) {
  if constexpr (OP == FV_OP_ADD) return x + y;
  else if constexpr (OP == FV_OP_SUB) return x - y;
  else if constexpr (OP == FV_OP_MUL) return x * y;
  else if constexpr (OP == FV_OP_DIV) return x / y;
  else if constexpr (OP == FV_OP_POW) return m_pow(x, y);
  else if constexpr (OP == FV_OP_MAXIMUM) return (x != x || x > y) ? x : y;
  else if constexpr (OP == FV_OP_MINIMUM) return (x != x || x < y) ? x : y;
  else if constexpr (OP == FV_OP_EQ) return (T)(x == y);
  else if constexpr (OP == FV_OP_NE) return (T)(x != y);
  else if constexpr (OP == FV_OP_LT) return (T)(x < y);
  else if constexpr (OP == FV_OP_LE) return (T)(x <= y);
  else if constexpr (OP == FV_OP_GT) return (T)(x > y);
  else return (T)(x >= y); /* FV_OP_GE */
}

template <int OP, typename T>
__device__ __forceinline__ T unary_op(T x, T lo, T hi) {
  if constexpr (OP == FV_OP_NEG) return -x;
  else if constexpr (OP == FV_OP_EXP) return m_exp(x);
  else if constexpr (OP == FV_OP_LOG) return m_log(x);
  else if constexpr (OP == FV_OP_SQRT) return m_sqrt(x);
  else if constexpr (OP == FV_OP_ABS) return m_abs(x);
  else if constexpr (OP == FV_OP_RELU) return (x > 0 || x != x) ? x : (T)0; /* NaN passes, as in PyTorch */
  else if constexpr (OP == FV_OP_SIGMOID) return m_sigmoid(x);
  else if constexpr (OP == FV_OP_TANH) return m_tanh(x);
  else return x < lo ? lo : (x > hi ? hi : x); /* FV_OP_CLAMP */
}

/* scalar_side: 0 op(x, y), both tensors; 1 op(x, s); 2 op(s, x) (y unused) */
template <int OP, typename T>
__device__ __forceinline__ T binary_side(T x, T y, T s, int scalar_side) {
  if (scalar_side == 0) return binary_op<OP, T>(x, y);
  if (scalar_side == 1) return binary_op<OP, T>(x, s);
  return binary_op<OP, T>(s, x);
}

/* The generic path: walk operands out, a, b (b only when scalar_side is 0). */
template <int OP, typename T>
__global__ void binary_kernel(T *out, const T *a, const T *b, T s, int scalar_side, fv_cuda_walk w) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < w.numel; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[3];
    fv_cuda_offsets(w, i, off);
    out[off[0]] = binary_side<OP, T>(a[off[1]], scalar_side == 0 ? b[off[2]] : (T)0, s, scalar_side);
  }
}

/* The flat path (fv_cuda_walk_flat): out, a and b are dense runs of n elements starting at
 * the pointers given; vec: all of them are 16-byte aligned, so the first n / K * K elements
 * go by packs of K, the rest one by one. */
template <int OP, typename T>
__global__ void binary_flat(T *out, const T *a, const T *b, T s, int scalar_side, uint32_t n, int vec) {
  typedef fv_cuda_pack<T> P;
  constexpr uint32_t K = sizeof(P) / sizeof(T);
  const uint32_t first = blockIdx.x * blockDim.x + threadIdx.x, stride = gridDim.x * blockDim.x;
  const uint32_t packs = vec ? n / K : 0;
  for (uint32_t v = first; v < packs; v += stride) {
    const P x = ((const P *)a)[v];
    const P y = scalar_side == 0 ? ((const P *)b)[v] : x;
    P r;
#pragma unroll
    for (uint32_t k = 0; k < K; k++) r.v[k] = binary_side<OP, T>(x.v[k], y.v[k], s, scalar_side);
    ((P *)out)[v] = r;
  }
  for (uint32_t i = packs * K + first; i < n; i += stride)
    out[i] = binary_side<OP, T>(a[i], scalar_side == 0 ? b[i] : (T)0, s, scalar_side);
}

/* The per-channel path: out and x are dense runs of n elements, y is broadcast along all
 * merged dims but one: element i takes y[((i / inner) % period) * ystride] (inner = period
 * = 1, ystride = 0 when y is a single value). y_first: op(y, x), else op(x, y). */
template <int OP, typename T>
__global__ void binary_bcast(T *out, const T *x, const T *y, int y_first, uint32_t n, fv_cuda_div32 inner,
                             fv_cuda_div32 period, uint32_t ystride) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const uint32_t q = fv_cuda_div(inner, i);
    const T yv = y[(q - fv_cuda_div(period, q) * period.d) * ystride];
    out[i] = y_first ? binary_op<OP, T>(yv, x[i]) : binary_op<OP, T>(x[i], yv);
  }
}

template <int OP, typename T>
__global__ void unary_kernel(T *out, const T *a, T lo, T hi, fv_cuda_walk w) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < w.numel; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[3];
    fv_cuda_offsets(w, i, off);
    out[off[0]] = unary_op<OP, T>(a[off[1]], lo, hi);
  }
}

/* binary_flat's scheme for one operand */
template <int OP, typename T>
__global__ void unary_flat(T *out, const T *a, T lo, T hi, uint32_t n, int vec) {
  typedef fv_cuda_pack<T> P;
  constexpr uint32_t K = sizeof(P) / sizeof(T);
  const uint32_t first = blockIdx.x * blockDim.x + threadIdx.x, stride = gridDim.x * blockDim.x;
  const uint32_t packs = vec ? n / K : 0;
  for (uint32_t v = first; v < packs; v += stride) {
    const P x = ((const P *)a)[v];
    P r;
#pragma unroll
    for (uint32_t k = 0; k < K; k++) r.v[k] = unary_op<OP, T>(x.v[k], lo, hi);
    ((P *)out)[v] = r;
  }
  for (uint32_t i = packs * K + first; i < n; i += stride) out[i] = unary_op<OP, T>(a[i], lo, hi);
}

/* For binary_bcast: operand k of w (at most INT32_MAX elements) moves along at most one
 * merged dim, forward, with offsets below 2^31; its inner, period and stride as there. */
int walk_bcast(const fv_cuda_walk &w, int k, fv_cuda_div32 *inner, fv_cuda_div32 *period, uint32_t *stride) {
  int moving = -1;
  for (int d = 0; d < w.ndim; d++) {
    if (w.strides[k][d] == 0) continue;
    if (moving >= 0) return 0;
    moving = d;
  }
  int64_t in = 1, size = 1, st = 0;
  if (moving >= 0) {
    for (int d = moving + 1; d < w.ndim; d++) in *= w.sizes[d];
    size = w.sizes[moving];
    st = w.strides[k][moving];
    if (st < 0 || st > INT32_MAX || (size - 1) * st > INT32_MAX) return 0;
  }
  *inner = fv_cuda_div32_of((uint32_t)in);
  *period = fv_cuda_div32_of((uint32_t)size);
  *stride = (uint32_t)st;
  return 1;
}

template <int OP, typename T>
int launch_binary(fv_tensor *out, const fv_tensor *a, const fv_tensor *b, double s, int side) {
  const fv_tensor *ts[3] = {out, a, b};
  fv_cuda_walk w = fv_cuda_walk_of(side == 0 ? 3 : 2, ts);
  if (w.numel == 0) return FV_OK;
  T *po = (T *)fv_cuda_base(out);
  const T *pa = (const T *)fv_cuda_base(a), *pb = side == 0 ? (const T *)fv_cuda_base(b) : (const T *)0;
  fv_cuda_div32 inner, period;
  uint32_t ystride;
  if (fv_cuda_walk_flat(w)) {
    T *o = po + w.base[0];
    const T *x = pa + w.base[1], *y = pb ? pb + w.base[2] : (const T *)0;
    const int vec = fv_cuda_aligned16(o) && fv_cuda_aligned16(x) && (!y || fv_cuda_aligned16(y));
    const uint32_t n = (uint32_t)w.numel;
    binary_flat<OP, T><<<fv_cuda_blocks(vec ? n / (16 / sizeof(T)) : n), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        o, x, y, (T)s, side, n, vec);
  } else if (side == 0 && w.numel <= INT32_MAX && fv_cuda_walk_dense(w, 0) &&
             ((fv_cuda_walk_dense(w, 1) && walk_bcast(w, 2, &inner, &period, &ystride)) ||
              (fv_cuda_walk_dense(w, 2) && walk_bcast(w, 1, &inner, &period, &ystride)))) {
    const int y_first = !fv_cuda_walk_dense(w, 1); /* a is the broadcast one */
    const T *x = y_first ? pb + w.base[2] : pa + w.base[1], *y = y_first ? pa + w.base[1] : pb + w.base[2];
    binary_bcast<OP, T><<<fv_cuda_blocks(w.numel), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        po + w.base[0], x, y, y_first, (uint32_t)w.numel, inner, period, ystride);
  } else {
    binary_kernel<OP, T><<<fv_cuda_blocks(w.numel), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(po, pa, pb, (T)s, side,
                                                                                           w);
  }
  FV_CUDA_LAUNCHED(fv_op_name(OP));
  return FV_OK;
}

template <int OP, typename T>
int launch_unary(fv_tensor *out, const fv_tensor *a, double lo, double hi) {
  const fv_tensor *ts[2] = {out, a};
  fv_cuda_walk w = fv_cuda_walk_of(2, ts);
  if (w.numel == 0) return FV_OK;
  if (fv_cuda_walk_flat(w)) {
    T *o = (T *)fv_cuda_base(out) + w.base[0];
    const T *x = (const T *)fv_cuda_base(a) + w.base[1];
    const int vec = fv_cuda_aligned16(o) && fv_cuda_aligned16(x);
    const uint32_t n = (uint32_t)w.numel;
    unary_flat<OP, T><<<fv_cuda_blocks(vec ? n / (16 / sizeof(T)) : n), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        o, x, (T)lo, (T)hi, n, vec);
  } else {
    unary_kernel<OP, T><<<fv_cuda_blocks(w.numel), FV_CUDA_THREADS, 0, fv_cuda_stream>>>(
        (T *)fv_cuda_base(out), (const T *)fv_cuda_base(a), (T)lo, (T)hi, w);
  }
  FV_CUDA_LAUNCHED(fv_op_name(OP));
  return FV_OK;
}

template <typename T>
int binary_dispatch(int op, fv_tensor *out, const fv_tensor *a, const fv_tensor *b, double s, int side) {
  switch (op) {
    case FV_OP_ADD: return launch_binary<FV_OP_ADD, T>(out, a, b, s, side);
    case FV_OP_SUB: return launch_binary<FV_OP_SUB, T>(out, a, b, s, side);
    case FV_OP_MUL: return launch_binary<FV_OP_MUL, T>(out, a, b, s, side);
    case FV_OP_DIV: return launch_binary<FV_OP_DIV, T>(out, a, b, s, side);
    case FV_OP_POW: return launch_binary<FV_OP_POW, T>(out, a, b, s, side);
    case FV_OP_MAXIMUM: return launch_binary<FV_OP_MAXIMUM, T>(out, a, b, s, side);
    case FV_OP_MINIMUM: return launch_binary<FV_OP_MINIMUM, T>(out, a, b, s, side);
    case FV_OP_EQ: return launch_binary<FV_OP_EQ, T>(out, a, b, s, side);
    case FV_OP_NE: return launch_binary<FV_OP_NE, T>(out, a, b, s, side);
    case FV_OP_LT: return launch_binary<FV_OP_LT, T>(out, a, b, s, side);
    case FV_OP_LE: return launch_binary<FV_OP_LE, T>(out, a, b, s, side);
    case FV_OP_GT: return launch_binary<FV_OP_GT, T>(out, a, b, s, side);
    case FV_OP_GE: return launch_binary<FV_OP_GE, T>(out, a, b, s, side);
    default: break;
  }
  return fv_fail(FV_ERR_ARGUMENT, "%s: not a binary op on cuda", fv_op_name(op));
}

template <typename T>
int unary_dispatch(int op, fv_tensor *out, const fv_tensor *a, double lo, double hi) {
  switch (op) {
    case FV_OP_NEG: return launch_unary<FV_OP_NEG, T>(out, a, lo, hi);
    case FV_OP_EXP: return launch_unary<FV_OP_EXP, T>(out, a, lo, hi);
    case FV_OP_LOG: return launch_unary<FV_OP_LOG, T>(out, a, lo, hi);
    case FV_OP_SQRT: return launch_unary<FV_OP_SQRT, T>(out, a, lo, hi);
    case FV_OP_ABS: return launch_unary<FV_OP_ABS, T>(out, a, lo, hi);
    case FV_OP_RELU: return launch_unary<FV_OP_RELU, T>(out, a, lo, hi);
    case FV_OP_SIGMOID: return launch_unary<FV_OP_SIGMOID, T>(out, a, lo, hi);
    case FV_OP_TANH: return launch_unary<FV_OP_TANH, T>(out, a, lo, hi);
    case FV_OP_CLAMP: return launch_unary<FV_OP_CLAMP, T>(out, a, lo, hi);
    default: break;
  }
  return fv_fail(FV_ERR_ARGUMENT, "%s: not a unary op on cuda", fv_op_name(op));
}

int check_float(const char *op, const fv_tensor *t) {
  if (t->scalar_type == FV_FLOAT32 || t->scalar_type == FV_FLOAT64) return FV_OK;
  return fv_fail(FV_ERR_DTYPE, "%s: dtype %s is not supported on cuda", op, fv_dtype_name(t->scalar_type));
}

}  // namespace

extern "C" int fv_cuda_binary(int op, fv_tensor *out, const fv_tensor *a, const fv_tensor *b) {
  FV_TRY(check_float(fv_op_name(op), out));
  if (out->scalar_type == FV_FLOAT64) return binary_dispatch<double>(op, out, a, b, 0.0, 0);
  return binary_dispatch<float>(op, out, a, b, 0.0, 0);
}

/* s is rounded to a's dtype first, as on the cpu */
extern "C" int fv_cuda_binary_scalar(int op, fv_tensor *out, const fv_tensor *a, double s, int scalar_first) {
  FV_TRY(check_float(fv_op_name(op), out));
  int side = scalar_first ? 2 : 1;
  if (out->scalar_type == FV_FLOAT64) return binary_dispatch<double>(op, out, a, NULL, s, side);
  return binary_dispatch<float>(op, out, a, NULL, s, side);
}

extern "C" int fv_cuda_unary(int op, fv_tensor *out, const fv_tensor *a, double lo, double hi) {
  FV_TRY(check_float(fv_op_name(op), out));
  if (out->scalar_type == FV_FLOAT64) return unary_dispatch<double>(op, out, a, lo, hi);
  return unary_dispatch<float>(op, out, a, lo, hi);
}
