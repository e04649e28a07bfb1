/* optim.cu: the optimizer steps of core/optim.c on the GPU (fv_backend.adam_step,
 * sgd_step) and clip_grad_norm's halves (grad_norm_parts, grad_scale), float32 and
 * float64. core/optim.c has checked every tensor (contiguous, on cuda, companions of the
 * parameter's shape and dtype, no shared memory) and computed the coefficients in double;
 * here each coefficient is rounded to the element type and every element goes through
 * core/optim.c's expressions in the same order (built with -fmad=false, IEEE division and
 * square root), so the steps and the scaling are meant to equal the CPU's bit for bit.
 *
 * All four are multi-tensor launches (as PyTorch's multi_tensor_apply, apex's FusedAdam):
 * the tensors of a call are grouped by dtype, and each group goes in as few launches as
 * the 4 KB kernel-parameter limit allows (a list of at most 82 tensors for Adam, 124 for
 * SGD, 248 for the norm and the scaling, per launch: a dual-branch ResNet18's ~130 tensors
 * take 2 Adam launches instead of ~130, and one launch for each half of clip_grad_norm).
 * The list (mt_list) holds, per tensor, its pointers (for the optimizers: parameter,
 * gradient, state, NULL for an unused state; for clipping: the gradient), its element
 * count and the running total of its chunks of MT_CHUNK elements; block b finds its
 * tensor by a binary search of those totals and takes the tensor's chunk
 * b - (the previous total). A block per chunk of each tensor, so the grid is the last
 * total; a tensor over MT_PIECE (2^31) elements goes in as several entries of at most
 * MT_PIECE elements (32-bit indices inside an entry). mt_pack fills the lists from what
 * a call's `slots` functor gives for each of its tensors (param_slots, grad_slots), so
 * the four share the packing, the search and the launch loop.
 * Inside its chunk a block loops with a stride of its threads, over 16-byte packs when
 * every pointer of the tensor is 16-byte aligned (the rest, under a pack, element by
 * element); both loops apply the one element function of the op (adam_op, sgd_op,
 * scale_op), so packs change nothing in the results.
 *
 * grad_norm_parts: MT_CHUNK is FV_NORM_BLOCK, so a chunk is one of the CPU's norm blocks
 * (entries of a split tensor start at multiples of it). Each block sums |g|^p (or takes
 * the largest |g|) of its chunk in double, each thread over every 256th pack (or element)
 * and then a tree over the threads in shared memory, and writes the result to one device
 * buffer (from the caching allocator) holding every block of every gradient: launch after
 * launch, block b at the launch's first index + b, so tensor i's blocks are consecutive
 * from first[i] (norm_layout, float32 gradients first as the launches go). One cudaMemcpy
 * brings all of them to the host, which combines each tensor's blocks in block order
 * from 0, as core/optim.c's norm_accumulate: one synchronization per clip_grad_norm call,
 * not one per gradient. The block sums agree with the CPU's to rounding, not bit for bit
 * (another order inside the block), but for the inf-norm (a maximum), which is exact.
 *
 * The entry points' bodies (adam_on, sgd_on, norm_parts_on, scale_on) take what runs on
 * the GPU (`gpu`: the launches, the norm's buffer and its copy) as a parameter, so that a
 * host-side test runs them, unchanged, over an emulation of every block and thread.
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
static_assert(MT_CHUNK == (uint32_t)FV_NORM_BLOCK, "a chunk is one of clip_grad_norm's norm blocks (core/optim.c)");

/* Elements per list entry at most: a larger tensor takes several entries. Entries count
 * their elements in 32 bits, and a launch's grid (at most 248 entries of 2^17 chunks)
 * stays far below 2^31 blocks. A multiple of MT_CHUNK, so pack alignment carries over
 * from one entry to the next. (Defined before inclusion, a smaller value lets a host-side
 * test exercise the split.) */
#ifndef FV_OPTIM_MT_PIECE
#define FV_OPTIM_MT_PIECE ((int64_t)1 << 31)
#endif
static const int64_t MT_PIECE = FV_OPTIM_MT_PIECE;
static_assert(FV_OPTIM_MT_PIECE > 0 && FV_OPTIM_MT_PIECE % MT_CHUNK == 0 && FV_OPTIM_MT_PIECE <= ((int64_t)1 << 31),
              "MT_PIECE: a multiple of MT_CHUNK, at most 2^31");

/* One launch's tensors: DEPTH pointer lists (the optimizers: slot 0 the parameter, 1 its
 * gradient, then the state, NULL where a state is unused; clipping: slot 0 the gradient),
 * the elements of each entry, and chunk_end[t] = the chunks of entries 0..t
 * (ceil(numel / MT_CHUNK) each, every entry non-empty, so strictly increasing). MAXT: as
 * many entries as fit in the classic 4 KB of kernel parameters with 128 bytes left for
 * the coefficients (checked in mt_run and norm_launches). */
template <typename T, int DEPTH> struct mt_list {
  static constexpr int MAXT = (4096 - 128) / (DEPTH * (int)sizeof(void *) + 8);
  T *ptr[DEPTH][MAXT];
  uint32_t numel[MAXT];
  uint32_t chunk_end[MAXT];
  int count;
};

/* Block b's work: entry t, elements [start, start + len) of it. The chunk totals are
 * searched (lower bound: the first t with chunk_end[t] > b, 8 steps for 248 entries)
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

/* Fills lists with a call's tensors, in order, and calls launch(list, blocks) for each
 * full list and for the last one. slots(i, base) puts tensor i's DEPTH first-element
 * pointers in base (NULL for an unused slot) and returns its element count, or -1 when
 * this pass leaves tensor i out (no gradient, the other dtype); a tensor of 0 elements
 * takes no entry. */
template <typename T, int DEPTH, typename Slots, typename Launch>
static int mt_pack(int n, const Slots &slots, Launch &&launch) {
  typedef mt_list<T, DEPTH> L;
  static_assert((int64_t)L::MAXT * (MT_PIECE / MT_CHUNK) <= INT32_MAX, "a launch's grid fits in 2^31 - 1 blocks");
  L l = {};
  uint32_t chunks = 0;
  for (int i = 0; i < n; i++) {
    T *base[DEPTH];
    const int64_t numel = slots(i, base);
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

/* An optimizer's tensors: parameter i when it has a gradient and is of dtype; slot 0 the
 * parameter, 1 its gradient, k >= 2 state[k - 2][i] (NULL when state[k - 2] is NULL). */
template <typename T, int DEPTH> struct param_slots {
  int dtype;
  fv_tensor *const *params;
  fv_tensor *const *const *state;
  int64_t operator()(int i, T *(&base)[DEPTH]) const {
    const fv_tensor *p = params[i];
    if (!p->gradient || p->scalar_type != dtype) return -1;
    base[0] = (T *)fv_cuda_first(p);
    base[1] = (T *)fv_cuda_first(p->gradient);
    for (int k = 2; k < DEPTH; k++) base[k] = state[k - 2] ? (T *)fv_cuda_first(state[k - 2][i]) : NULL;
    return fv_tensor_numel(p);
  }
};

/* clip_grad_norm's tensors: gradient i (never NULL) when it is of dtype, in slot 0. */
template <typename T> struct grad_slots {
  int dtype;
  const fv_tensor *const *grads;
  int64_t operator()(int i, T *(&base)[1]) const {
    const fv_tensor *g = grads[i];
    if (g->scalar_type != dtype) return -1;
    base[0] = (T *)fv_cuda_first(g);
    return fv_tensor_numel(g);
  }
};

/* The launches of the element function op over the tensors that slots gives (see
 * mt_pack) on dev (gpu below: mt_kernel, each launch checked and named). */
template <typename Device, typename Op, typename Slots>
static int mt_run(const Device &dev, const char *name, const Op &op, int n, const Slots &slots) {
  typedef mt_list<typename Op::T, Op::DEPTH> L;
  static_assert(sizeof(L) + sizeof(Op) + 8 <= 4096, "the classic 4 KB kernel-parameter limit");
  return mt_pack<typename Op::T, Op::DEPTH>(
      n, slots, [&](const L &l, uint32_t blocks) -> int { return dev.run(name, l, blocks, op); });
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

/* Scaling one element: slot 0 the gradient; core/optim.c's DEFINE_SCALE (g * (T)coef). */
template <typename T_> struct scale_op {
  typedef T_ T;
  enum { DEPTH = 1, WRITES = 1 };
  T c;

  __host__ __device__ __forceinline__ void operator()(T (&r)[DEPTH]) const { r[0] = r[0] * c; }
};

/* Largest magnitude, NaN winning (as core/optim.c). */
__host__ __device__ __forceinline__ double nan_max(double m, double a) { return (a > m || a != a) ? a : m; }

/* One element x (in double) into a sum of |x|^p, or a maximum of |x|, of norm kind KIND. */
template <int KIND> __host__ __device__ __forceinline__ double norm_add(double acc, double x, double p) {
  switch (KIND) {
  case FV_NORM_INF: return nan_max(acc, fabs(x));
  case FV_NORM_ONE: return acc + fabs(x);
  case FV_NORM_TWO: return acc + x * x;
  default: return acc + pow(fabs(x), p);
  }
}

/* Two partial results of kind KIND into one: the tree's step, and the host's. */
template <int KIND> __host__ __device__ __forceinline__ double norm_pair(double a, double b) {
  return KIND == FV_NORM_INF ? nan_max(a, b) : a + b;
}

/* Thread tid's share of block b's chunk (s = mt_locate(l, b)), from 0: packs tid,
 * tid + nthreads, ... (their elements in order) when the chunk is 16-byte aligned, then
 * the elements after the last whole pack, or elements tid, tid + nthreads, ... */
template <typename T, int KIND>
__host__ __device__ __forceinline__ double norm_thread(const mt_list<T, 1> &l, const mt_spot &s, double p,
                                                       uint32_t tid, uint32_t nthreads) {
  typedef fv_cuda_pack<T> P;
  enum { V = 16 / sizeof(T) };
  const T *g = l.ptr[0][s.t] + s.start;
  double a = 0;
  uint32_t done = 0;
  if (((uintptr_t)g & 15) == 0) {
    const uint32_t packs = s.len / V;
    for (uint32_t j = tid; j < packs; j += nthreads) {
      const P pk = ((const P *)g)[j];
      MT_UNROLL
      for (int e = 0; e < V; e++) a = norm_add<KIND>(a, (double)pk.v[e], p);
    }
    done = packs * V;
  }
  for (uint32_t i = done + tid; i < s.len; i += nthreads) a = norm_add<KIND>(a, (double)g[i], p);
  return a;
}

/* A block per chunk of the list's gradients: out[b] = block b's result, the threads'
 * shares combined by a fixed tree (acc[t] with acc[t + w], w = 128, 64, ..., 1). */
template <typename T, int KIND>
__global__ void __launch_bounds__(FV_CUDA_THREADS)
    norm_kernel(const __grid_constant__ mt_list<T, 1> l, double *__restrict__ out, double p) {
  __shared__ double acc[FV_CUDA_THREADS];
  const mt_spot s = mt_locate(l, blockIdx.x);
  acc[threadIdx.x] = norm_thread<T, KIND>(l, s, p, threadIdx.x, FV_CUDA_THREADS);
  __syncthreads();
  for (uint32_t w = FV_CUDA_THREADS / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) acc[threadIdx.x] = norm_pair<KIND>(acc[threadIdx.x], acc[threadIdx.x + w]);
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = acc[0];
}

/* Where each gradient's block results go in the buffer: first[i] for gradient i, its
 * blocks after it in order, the float32 gradients first, then the float64 ones, each in
 * list order (the order of norm_parts_on's launches). Returns the blocks in all. */
static int64_t norm_layout(int n, const fv_tensor *const *grads, int64_t *first) {
  int64_t total = 0;
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < n; i++) {
      if (grads[i]->scalar_type != (pass == 0 ? FV_FLOAT32 : FV_FLOAT64)) continue;
      first[i] = total;
      total += (fv_tensor_numel(grads[i]) + FV_NORM_BLOCK - 1) / FV_NORM_BLOCK;
    }
  return total;
}

/* The launches over the gradients of T's dtype (dev.norm: norm_kernel on the GPU), writing
 * their blocks' results from out + *done on; *done counts them. */
template <typename T, int KIND, typename Device>
static int norm_launches(const Device &dev, int n, const fv_tensor *const *grads, double p, double *out,
                         int64_t *done) {
  typedef mt_list<T, 1> L;
  static_assert(sizeof(L) + sizeof(double *) + sizeof(double) + 8 <= 4096, "the classic 4 KB kernel-parameter limit");
  const grad_slots<T> slots = {sizeof(T) == 4 ? FV_FLOAT32 : FV_FLOAT64, grads};
  return mt_pack<T, 1>(n, slots, [&](const L &l, uint32_t blocks) -> int {
    const int status = dev.template norm<T, KIND>(l, blocks, out + *done, p);
    *done += blocks;
    return status;
  });
}

template <typename T, typename Device>
static int norm_launches_of(const Device &dev, int kind, int n, const fv_tensor *const *grads, double p, double *out,
                            int64_t *done) {
  switch (kind) {
  case FV_NORM_INF: return norm_launches<T, FV_NORM_INF>(dev, n, grads, p, out, done);
  case FV_NORM_ONE: return norm_launches<T, FV_NORM_ONE>(dev, n, grads, p, out, done);
  case FV_NORM_TWO: return norm_launches<T, FV_NORM_TWO>(dev, n, grads, p, out, done);
  default: return norm_launches<T, FV_NORM_P>(dev, n, grads, p, out, done);
  }
}

/* parts[i] = gradient i's block results (blocks[first[i]], ... in block order) combined
 * from 0, as core/optim.c's norm_accumulate combines its blocks. */
template <int KIND>
static void norm_combine(int n, const fv_tensor *const *grads, const int64_t *first, const double *blocks,
                         double *parts) {
  for (int i = 0; i < n; i++) {
    const int64_t count = (fv_tensor_numel(grads[i]) + FV_NORM_BLOCK - 1) / FV_NORM_BLOCK;
    double total = 0;
    for (int64_t b = 0; b < count; b++) total = norm_pair<KIND>(total, blocks[first[i] + b]);
    parts[i] = total;
  }
}

static void norm_combine_of(int kind, int n, const fv_tensor *const *grads, const int64_t *first,
                            const double *blocks, double *parts) {
  /* norm_pair: a maximum for the inf-norm, a sum for the others (ONE, TWO and P alike) */
  if (kind == FV_NORM_INF) norm_combine<FV_NORM_INF>(n, grads, first, blocks, parts);
  else norm_combine<FV_NORM_TWO>(n, grads, first, blocks, parts);
}

/* ---- the device and the entry points' bodies ---- */

/* What the bodies below ask of the GPU: the launches (an element function over a list;
 * the norm's blocks of a list into out[0, blocks)), and the norm's buffer of block
 * results (the caching allocator) and its copy to the host. The bodies take it as a
 * parameter so that a host-side test can run them over an emulation of the kernels. */
struct gpu {
  template <typename Op>
  int run(const char *name, const mt_list<typename Op::T, Op::DEPTH> &l, uint32_t blocks, const Op &op) const {
    mt_kernel<Op><<<blocks, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(l, op);
    FV_CUDA_LAUNCHED(name);
    return FV_OK;
  }
  template <typename T, int KIND> int norm(const mt_list<T, 1> &l, uint32_t blocks, double *out, double p) const {
    norm_kernel<T, KIND><<<blocks, FV_CUDA_THREADS, 0, fv_cuda_stream>>>(l, out, p);
    FV_CUDA_LAUNCHED("clip_grad_norm");
    return FV_OK;
  }
  double *alloc(size_t bytes) const { return (double *)fv_cuda_alloc(bytes); }
  void release(double *dev, size_t bytes) const { fv_cuda_free(dev, bytes); }
  /* waits for the launches before it (the legacy default stream) */
  int to_host(double *host, const double *dev, size_t bytes) const {
    cudaError_t err = cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost);
    if (err != cudaSuccess)
      return fv_cuda_fail(err, "clip_grad_norm", "norm kernels and the copy of their block sums", __FILE__, __LINE__);
    return FV_OK;
  }
};

template <typename Device>
static int adam_on(const Device &dev, int n, fv_tensor *const *params, fv_tensor *const *exp_avg,
                   fv_tensor *const *exp_avg_sq, fv_tensor *const *max_exp_avg_sq, const fv_adam_coef *c) {
  const char *name = c->decoupled ? "adamw_step" : "adam_step";
  fv_tensor *const *const state[3] = {exp_avg, exp_avg_sq, c->amsgrad ? max_exp_avg_sq : NULL};
  FV_TRY(mt_run(dev, name, adam_op_of<float>(c), n, param_slots<float, 5>{FV_FLOAT32, params, state}));
  return mt_run(dev, name, adam_op_of<double>(c), n, param_slots<double, 5>{FV_FLOAT64, params, state});
}

template <typename Device>
static int sgd_on(const Device &dev, int n, fv_tensor *const *params, fv_tensor *const *momentum_buf,
                  const fv_sgd_coef *c) {
  fv_tensor *const *const state[1] = {c->momentum != 0 ? momentum_buf : NULL};
  FV_TRY(mt_run(dev, "sgd_step", sgd_op_of<float>(c), n, param_slots<float, 3>{FV_FLOAT32, params, state}));
  return mt_run(dev, "sgd_step", sgd_op_of<double>(c), n, param_slots<double, 3>{FV_FLOAT64, params, state});
}

/* grad_norm_parts: the launches of every block of every gradient into one buffer, one
 * copy of it to the host (the call's one synchronization), the combination per gradient. */
template <typename Device>
static int norm_parts_on(const Device &dev, int n, const fv_tensor *const *grads, int kind, double p,
                         double *parts) {
  const char *op = "clip_grad_norm";
  for (int i = 0; i < n; i++) parts[i] = 0;
  if (n <= 0) return FV_OK;
  int64_t *first = (int64_t *)malloc((size_t)n * sizeof *first);
  if (!first) return fv_fail(FV_ERR_MEMORY, "%s: out of host memory for the layout of %d gradients", op, n);
  const int64_t total = norm_layout(n, grads, first);
  if (total == 0) { /* every gradient empty */
    free(first);
    return FV_OK;
  }
  const size_t bytes = (size_t)total * sizeof(double);
  int status = FV_OK;
  double *host = NULL, *blocks = dev.alloc(bytes);
  if (!blocks)
    status = fv_last_status() ? fv_last_status()
                              : fv_fail(FV_ERR_MEMORY, "%s: out of GPU memory for %lld block sums", op,
                                        (long long)total);
  else if (!(host = (double *)malloc(bytes)))
    status = fv_fail(FV_ERR_MEMORY, "%s: out of host memory for %lld block sums", op, (long long)total);
  if (status == FV_OK) {
    int64_t done = 0;
    status = norm_launches_of<float>(dev, kind, n, grads, p, blocks, &done);
    if (status == FV_OK) status = norm_launches_of<double>(dev, kind, n, grads, p, blocks, &done);
    if (status == FV_OK) status = dev.to_host(host, blocks, bytes);
    if (status == FV_OK) norm_combine_of(kind, n, grads, first, host, parts);
  }
  if (blocks) dev.release(blocks, bytes);
  free(host);
  free(first);
  return status;
}

/* grad_scale: g * (T)coef over the float32 gradients, then the float64 ones. */
template <typename Device> static int scale_on(const Device &dev, int n, fv_tensor *const *grads, double coef) {
  const scale_op<float> f32 = {(float)coef};
  const scale_op<double> f64 = {coef};
  FV_TRY(mt_run(dev, "clip_grad_norm", f32, n, grad_slots<float>{FV_FLOAT32, grads}));
  return mt_run(dev, "clip_grad_norm", f64, n, grad_slots<double>{FV_FLOAT64, grads});
}

}  // namespace

extern "C" int fv_cuda_adam_step(int n, fv_tensor *const *params, fv_tensor *const *exp_avg,
                                 fv_tensor *const *exp_avg_sq, fv_tensor *const *max_exp_avg_sq,
                                 const fv_adam_coef *c) {
  return adam_on(gpu(), n, params, exp_avg, exp_avg_sq, max_exp_avg_sq, c);
}

extern "C" int fv_cuda_sgd_step(int n, fv_tensor *const *params, fv_tensor *const *momentum_buf,
                                const fv_sgd_coef *c) {
  return sgd_on(gpu(), n, params, momentum_buf, c);
}

extern "C" int fv_cuda_grad_norm_parts(int n, const fv_tensor *const *grads, int kind, double p, double *parts) {
  return norm_parts_on(gpu(), n, grads, kind, p, parts);
}

extern "C" int fv_cuda_grad_scale(int n, fv_tensor *const *grads, double coef) {
  return scale_on(gpu(), n, grads, coef);
}
