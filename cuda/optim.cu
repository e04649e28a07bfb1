/* optim.cu: the optimizer steps of core/optim.c on the GPU (fv_backend.adam_step,
 * sgd_step, grad_norm_part, grad_scale), float32 and float64. core/optim.c has checked
 * every tensor (contiguous, on cuda, companions of the parameter's shape and dtype, no
 * shared memory) and computed the coefficients in double; here each coefficient is
 * rounded to the element type and every element goes through core/optim.c's expressions
 * in the same order (built with -fmad=false, IEEE division and square root), so the
 * steps are meant to equal the CPU's bit for bit.
 *
 * Adam and SGD are multi-tensor launches (as PyTorch's multi_tensor_apply, apex's
 * FusedAdam): the parameters with a gradient are grouped by dtype, and each group goes in
 * as few launches as the 4 KB kernel-parameter limit allows (a list of at most 82 tensors
 * for Adam, 124 for SGD, per launch: a dual-branch ResNet18's ~130 tensors take 2 Adam
 * launches instead of ~130). The list (mt_list) holds, per tensor, its pointers (parameter,
 * gradient, state; NULL for an unused state), its element count and the running total of
 * its chunks of MT_CHUNK elements; block b finds its tensor by a binary search of those
 * totals and takes the tensor's chunk b - (the previous total). A block per chunk of each
 * tensor, so the grid is the last total; a tensor over MT_PIECE (2^31) elements goes in
 * as several entries of at most MT_PIECE elements (32-bit indices inside an entry).
 * Inside its chunk a block loops with a stride of its threads, over 16-byte packs when
 * every pointer of the tensor is 16-byte aligned (the rest, under a pack, element by
 * element); both loops apply the one element function of the optimizer (adam_op, sgd_op),
 * so packs change nothing in the results.
 *
 * grad_norm_part sums |g|^p in double over blocks of FV_NORM_BLOCK elements (a block
 * tree inside each, so sums agree with the CPU's to rounding, not bit for bit), and the
 * blocks' results are combined on the host in block order as on the CPU. It and
 * grad_scale stay a launch per gradient: the backend table hands them one gradient per
 * call.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/optim.cu -o build/cuda/optim.o */
#include <math.h>
#include <stdlib.h>

#include "common.cuh"

namespace {

/* ---- multi-tensor launches ---- */

/* Elements per block: 16384 (64 per thread) gives a ResNet18's 11 M float32 parameters
 * about 750 blocks, about what an H100's 132 SMs hold at once (5 or 6 blocks of 256
 * threads each at these kernels' 39 to 46 registers); PyTorch's 65536 would give about
 * 230, under a third of that. A multiple of every pack width. */
enum : uint32_t { MT_CHUNK = 16384 };

/* Elements per list entry at most: a larger tensor takes several entries. Entries count
 * their elements in 32 bits, and a launch's grid (at most 124 entries of 2^17 chunks)
 * stays far below 2^31 blocks. A multiple of MT_CHUNK, so pack alignment carries over
 * from one entry to the next. (Defined before inclusion, a smaller value lets a host-side
 * test exercise the split.) */
#ifndef FV_OPTIM_MT_PIECE
#define FV_OPTIM_MT_PIECE ((int64_t)1 << 31)
#endif
static const int64_t MT_PIECE = FV_OPTIM_MT_PIECE;
static_assert(FV_OPTIM_MT_PIECE > 0 && FV_OPTIM_MT_PIECE % MT_CHUNK == 0 && FV_OPTIM_MT_PIECE <= ((int64_t)1 << 31),
              "MT_PIECE: a multiple of MT_CHUNK, at most 2^31");

/* One launch's tensors: DEPTH pointer lists (slot 0 the parameter, 1 its gradient, then
 * the optimizer's state; NULL where a state is unused), the elements of each entry, and
 * chunk_end[t] = the chunks of entries 0..t (ceil(numel / MT_CHUNK) each, every entry
 * non-empty, so strictly increasing). MAXT: as many entries as fit in the classic 4 KB
 * of kernel parameters with 128 bytes left for the coefficients (checked in mt_run). */
template <typename T, int DEPTH> struct mt_list {
  static constexpr int MAXT = (4096 - 128) / (DEPTH * (int)sizeof(void *) + 8);
  T *ptr[DEPTH][MAXT];
  uint32_t numel[MAXT];
  uint32_t chunk_end[MAXT];
  int count;
};

/* Block b's work: entry t, elements [start, start + len) of it. The chunk totals are
 * searched (lower bound: the first t with chunk_end[t] > b, 7 steps for 124 entries)
 * rather than read from a table of blocks, so the parameter space holds a fixed amount
 * per tensor, whatever its size, and launches are counted in tensors, not chunks. */
struct mt_spot {
  int t;
  uint32_t start, len;
};
template <typename T, int DEPTH>
__host__ __device__ __forceinline__ mt_spot mt_locate(const mt_list<T, DEPTH> &l, uint32_t b) {
  int lo = 0, hi = l.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (l.chunk_end[mid] > b) hi = mid;
    else lo = mid + 1;
  }
  mt_spot s;
  s.t = lo;
  s.start = (b - (lo > 0 ? l.chunk_end[lo - 1] : 0)) * MT_CHUNK; /* < numel <= 2^31 */
  const uint32_t rest = l.numel[lo] - s.start;
  s.len = rest < MT_CHUNK ? rest : MT_CHUNK;
  return s;
}

/* Full unrolling of the loops over slots and pack lanes (their arrays stay in registers);
 * the pragma is the device compiler's, so the host pass of these __host__ __device__
 * functions goes without it. */
#ifdef __CUDA_ARCH__
#define MT_UNROLL _Pragma("unroll")
#else
#define MT_UNROLL
#endif

/* Block b of a launch, thread tid of nthreads: every element of its chunk through op,
 * which maps the DEPTH values of one element (r[k] from slot k; 0 for a NULL slot) to
 * their new values; slots in Op::WRITES with a pointer are stored. 16-byte packs when all
 * the entry's pointers are aligned (chunk starts are multiples of MT_CHUNK elements, so
 * every chunk of the entry is then aligned), else, and for the last len % pack elements,
 * one element at a time. */
template <typename Op>
__host__ __device__ __forceinline__ void mt_block(const mt_list<typename Op::T, Op::DEPTH> &l, const Op &op, uint32_t b,
                                                  uint32_t tid, uint32_t nthreads) {
  typedef typename Op::T T;
  typedef fv_cuda_pack<T> P;
  enum { DEPTH = Op::DEPTH, V = 16 / sizeof(T) };
  const mt_spot s = mt_locate(l, b);
  T *q[DEPTH];
  uintptr_t bits = 0;
  MT_UNROLL
  for (int k = 0; k < DEPTH; k++) {
    q[k] = l.ptr[k][s.t] ? l.ptr[k][s.t] + s.start : NULL;
    bits |= (uintptr_t)q[k];
  }
  uint32_t done = 0;
  if ((bits & 15) == 0) {
    const uint32_t packs = s.len / V;
    for (uint32_t j = tid; j < packs; j += nthreads) {
      P pk[DEPTH];
      MT_UNROLL
      for (int k = 0; k < DEPTH; k++) {
        if (q[k]) {
          pk[k] = ((const P *)q[k])[j];
        } else {
          MT_UNROLL
          for (int e = 0; e < V; e++) pk[k].v[e] = 0;
        }
      }
      MT_UNROLL
      for (int e = 0; e < V; e++) {
        T r[DEPTH];
        MT_UNROLL
        for (int k = 0; k < DEPTH; k++) r[k] = pk[k].v[e];
        op(r);
        MT_UNROLL
        for (int k = 0; k < DEPTH; k++) pk[k].v[e] = r[k];
      }
      MT_UNROLL
      for (int k = 0; k < DEPTH; k++)
        if (((Op::WRITES >> k) & 1) && q[k]) ((P *)q[k])[j] = pk[k];
    }
    done = packs * V;
  }
  for (uint32_t i = done + tid; i < s.len; i += nthreads) {
    T r[DEPTH];
    MT_UNROLL
    for (int k = 0; k < DEPTH; k++) r[k] = q[k] ? q[k][i] : (T)0;
    op(r);
    MT_UNROLL
    for (int k = 0; k < DEPTH; k++)
      if (((Op::WRITES >> k) & 1) && q[k]) q[k][i] = r[k];
  }
}

/* A block per chunk of the list's entries (the list in the parameter space, read in place). */
template <typename Op>
__global__ void __launch_bounds__(FV_CUDA_THREADS)
    mt_kernel(const __grid_constant__ mt_list<typename Op::T, Op::DEPTH> l, const __grid_constant__ Op op) {
  mt_block(l, op, blockIdx.x, threadIdx.x, blockDim.x);
}

/* Fills lists with the parameters of dtype that have a gradient and elements, in order,
 * and calls launch(list, blocks) for each full list and for the last one. Slot k >= 2 of
 * parameter i is state[k - 2][i], or NULL when state[k - 2] is NULL. */
template <typename T, int DEPTH, typename Launch>
static int mt_pack(int dtype, int n, fv_tensor *const *params, fv_tensor *const *const *state, Launch &&launch) {
  typedef mt_list<T, DEPTH> L;
  static_assert((int64_t)L::MAXT * (MT_PIECE / MT_CHUNK) <= INT32_MAX, "a launch's grid fits in 2^31 - 1 blocks");
  L l = {};
  uint32_t chunks = 0;
  for (int i = 0; i < n; i++) {
    const fv_tensor *p = params[i];
    if (!p->gradient || p->scalar_type != dtype) continue;
    const int64_t numel = fv_tensor_numel(p);
    T *base[DEPTH];
    base[0] = (T *)fv_cuda_first(p);
    base[1] = (T *)fv_cuda_first(p->gradient);
    for (int k = 2; k < DEPTH; k++) base[k] = state[k - 2] ? (T *)fv_cuda_first(state[k - 2][i]) : NULL;
    for (int64_t off = 0; off < numel; off += MT_PIECE) {
      const int64_t len = numel - off < MT_PIECE ? numel - off : MT_PIECE;
      for (int k = 0; k < DEPTH; k++) l.ptr[k][l.count] = base[k] ? base[k] + off : NULL;
      l.numel[l.count] = (uint32_t)len;
      chunks += (uint32_t)((len + MT_CHUNK - 1) / MT_CHUNK);
      l.chunk_end[l.count] = chunks;
      if (++l.count == L::MAXT) {
        FV_TRY(launch((const L &)l, chunks));
        l.count = 0;
        chunks = 0;
      }
    }
  }
  if (l.count > 0) FV_TRY(launch((const L &)l, chunks));
  return FV_OK;
}

/* The launches of op over the parameters of dtype (see mt_pack), each checked and named. */
template <typename Op>
static int mt_run(const char *name, const Op &op, int dtype, int n, fv_tensor *const *params,
                  fv_tensor *const *const *state) {
  typedef mt_list<typename Op::T, Op::DEPTH> L;
  static_assert(sizeof(L) + sizeof(Op) + 8 <= 4096, "the classic 4 KB kernel-parameter limit");
  return mt_pack<typename Op::T, Op::DEPTH>(dtype, n, params, state, [&](const L &l, uint32_t blocks) -> int {
    mt_kernel<Op><<<blocks, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(l, op);
    FV_CUDA_LAUNCHED(name);
    return FV_OK;
  });
}

/* ---- the element functions ---- */

enum { WD_NONE, WD_COUPLED, WD_DECOUPLED };

__host__ __device__ __forceinline__ float dev_sqrt(float x) { return sqrtf(x); }
__host__ __device__ __forceinline__ double dev_sqrt(double x) { return sqrt(x); }

/* Adam / AdamW on one element: slots parameter, gradient, exp_avg, exp_avg_sq,
 * max_exp_avg_sq (NULL unless amsgrad); core/optim.c's DEFINE_ADAM body. */
template <typename T_> struct adam_op {
  typedef T_ T;
  enum { DEPTH = 5, WRITES = 1 | 4 | 8 | 16 };
  T wd, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, neg_step_size, bc2;
  int wd_mode, amsgrad;

  __host__ __device__ __forceinline__ void operator()(T (&r)[DEPTH]) const {
    T grad = r[1];
    if (wd_mode == WD_COUPLED) grad = grad + wd * r[0];
    T mi = r[2] * beta1 + one_minus_beta1 * grad;
    T vi = r[3] * beta2 + one_minus_beta2 * grad * grad;
    r[2] = mi;
    r[3] = vi;
    if (amsgrad) {
      T old = r[4];
      vi = ((old > vi) | (old != old)) ? old : vi;
      r[4] = vi;
    }
    T s = dev_sqrt(vi);
    T param = r[0];
    if (wd_mode == WD_DECOUPLED) param = param * decay;
    T denom = s / bc2 + eps;
    r[0] = param + neg_step_size * mi / denom;
  }
};

template <typename T> static adam_op<T> adam_op_of(const fv_adam_coef *k) {
  adam_op<T> c;
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
  return c;
}

enum { MOM_NONE, MOM_FIRST, MOM_PLAIN, MOM_FIRST_NESTEROV, MOM_NESTEROV };

/* SGD on one element: slots parameter, gradient, momentum_buffer (NULL without
 * momentum); core/optim.c's DEFINE_SGD body. */
template <typename T_> struct sgd_op {
  typedef T_ T;
  enum { DEPTH = 3, WRITES = 1 | 4 };
  T wd, mom, one_minus_damp, neg_lr;
  int decay, mode;

  __host__ __device__ __forceinline__ void operator()(T (&r)[DEPTH]) const {
    T param = r[0], d = r[1];
    if (decay) d = d + wd * param;
    if (mode != MOM_NONE) {
      T b = (mode == MOM_FIRST || mode == MOM_FIRST_NESTEROV) ? d : r[2] * mom + one_minus_damp * d;
      r[2] = b;
      d = (mode == MOM_FIRST_NESTEROV || mode == MOM_NESTEROV) ? d + mom * b : b;
    }
    r[0] = param + neg_lr * d;
  }
};

template <typename T> static sgd_op<T> sgd_op_of(const fv_sgd_coef *c) {
  sgd_op<T> o;
  o.wd = (T)c->weight_decay;
  o.mom = (T)c->momentum;
  o.one_minus_damp = (T)(1.0 - c->dampening);
  o.neg_lr = (T)(-c->lr);
  o.decay = c->weight_decay != 0;
  o.mode = c->momentum == 0 ? MOM_NONE
           : c->nesterov    ? (c->first_step ? MOM_FIRST_NESTEROV : MOM_NESTEROV)
                            : (c->first_step ? MOM_FIRST : MOM_PLAIN);
  return o;
}

/* ---- clip_grad_norm ---- */

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
  const char *name = c->decoupled ? "adamw_step" : "adam_step";
  fv_tensor *const *const state[3] = {exp_avg, exp_avg_sq, c->amsgrad ? max_exp_avg_sq : NULL};
  FV_TRY(mt_run(name, adam_op_of<float>(c), FV_FLOAT32, n, params, state));
  return mt_run(name, adam_op_of<double>(c), FV_FLOAT64, n, params, state);
}

extern "C" int fv_cuda_sgd_step(int n, fv_tensor *const *params, fv_tensor *const *momentum_buf,
                                const fv_sgd_coef *c) {
  fv_tensor *const *const state[1] = {c->momentum != 0 ? momentum_buf : NULL};
  FV_TRY(mt_run("sgd_step", sgd_op_of<float>(c), FV_FLOAT32, n, params, state));
  return mt_run("sgd_step", sgd_op_of<double>(c), FV_FLOAT64, n, params, state);
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
