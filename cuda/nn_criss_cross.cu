/* nn_criss_cross.cu: criss-cross attention (CCNet, FV_OP_CRISS_CROSS) on the GPU, float32
 * and float64, as core/cpu/criss_cross.c: each position p = (h, w) attends to its J =
 * H + W - 1 positions cc_pos(j, h, w): its column (h', w), h' != h (j < H - 1: rows 0 ..
 * H - 1 without h), then its row (h, w'), all w' (itself once); one softmax over the
 * energies e_j = query(p) . key(cc_pos(j)) over the Cq channels, out(c, p) = sum_j a_j
 * value(c, cc_pos(j)). query and key (B, Cq, H, W), value and out (B, Cv, H, W), contiguous.
 *
 * The CPU's arithmetic, kept: energies in the element type T summed over c in order;
 * m = max_j e_j (NaNs skipped, `e > m ? e : m`); l = sum_j exp(e_j - m) in double; inv =
 * (T)(1 / l); a_j = exp(e_j - m) * inv in T (expf for float32). Backward: dA_j = dout(p) .
 * value(pos_j) in T, delta = (T) sum_j (double) a_j dA_j, dE_j = a_j (dA_j - delta) in T;
 * dquery(p) += sum_j dE_j key(pos_j), dkey(q) += sum over the p attending q of dE(p -> q)
 * query(p), dvalue(q) += the same sum of a(p -> q) dout(p). Gradients accumulate (+=);
 * each may be NULL. Sums over j run in another order than the CPU's (segments, below), so
 * results agree to rounding; and the CPU also adds its masked self entry of the column
 * (0 x value), which differs only where that value is infinite or NaN.
 *
 * Who attends q = (h, w) (the backward's gathers): q's own criss-cross, in the same order.
 * Attendee i = 0 .. J - 1 of q is cc_pos(i, h, w):
 *   i < H - 1: p = (hp, w), hp = i < h ? i : i + 1 (hp != h). p's column holds q: p's index
 *     j runs over rows (j < hp ? j : j + 1), which is h for j = h when h < hp (i >= h), and
 *     for j = h - 1 when h > hp (i < h): p sees q at j = (i < h ? h - 1 : h).
 *   i >= H - 1: p = (h, w_i), w_i = i - (H - 1) (every w_i, q itself included): p's row is
 *     q's, and p sees q at j = H - 1 + w.
 * That is all of them: a position p = (hp, wp) attends q only through its column (wp = w,
 * hp != h: the H - 1 first) or its row (hp = h: the W last), J in all. The kernels need
 * no j: a(p -> q) = exp(e - m_p) inv_p with e = query(p) . key(q), p's own statistics
 * from scratch, so it is the very a_j that p's softmax used (same energy, same rounding).
 *
 * Launches, all blocks of 32 x 8 threads: lane x = one of 32 consecutive positions (flat
 * over B * H * W, so a warp reads a row's 32 neighbours: coalesced for column entries, a
 * broadcast for row entries), y = one of 8 segments of the J indices j (or attendees i),
 * ceil(J / 8) each. Every thread works its segment, 4 indices at a time (4 independent dot
 * products, the current position's value loaded once per channel for the 4), writes its
 * partial results to shared memory, and after a barrier the 8 segments' partials are added
 * in segment order: a fixed order everywhere, no atomics, the same results on every run.
 *   1. statistics, a block per 32 positions: segment maxima -> m; segment sums of exp
 *      (double) -> l, inv; in backward with dquery or dkey also segment sums of a_j dA_j
 *      (double) -> delta. Written to scratch: m, inv (and delta), in T, B * H * W each.
 *      Per thread ceil(J / 8) x (3 Cq, + Cv with delta) multiply-adds.
 *   2. forward: out, a block per (32 positions, chunk of 64 bytes of channels: 16 float,
 *      8 double); per thread ceil(J / 8) x (Cq + chunk).
 *   3. backward: dquery (a block per 32 positions and chunk of Cq), dkey (per 32 key
 *      positions q and chunk of Cq, over q's attendees), dvalue (per 32 q and chunk of Cv);
 *      per thread ceil(J / 8) x (Cq + Cv + chunk), the same, and (Cq + chunk).
 *   B = 4, 97 x 97, Cq = 8, Cv = 64 (float32): 1,177 blocks (301,312 threads) per launch
 *   but out and dvalue (4 chunks: 4,708 blocks); in backward at most 25 x 88 multiply-adds
 *   a thread, where the old kernel (a thread per position, 37,636 threads) did 193 x 168
 *   and 193 x 72 atomicAdds.
 * Energies (and dA) are recomputed per pass and per chunk rather than stored: scratch is
 * 2 or 3 x B * H * W elements. Offsets are int64. Each kernel body is a list of phases,
 * `__host__ __device__` functions of (block, thread, shared memory) with a barrier after
 * each (cc_phase), so a host loop can emulate the grid exactly: cc_run takes the launcher
 * as a template argument (cc_gpu here). Checked that way against the CPU (cuda/README.md).
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_criss_cross.cu -o build/cuda/nn_criss_cross.o */
#include <math.h>

#include "nn_common.cuh"

namespace {

enum { CC_LANES = 32, CC_SEGS = 8, CC_JB = 4 };

/* Full unrolling of the loops over the CC_JB indices and the chunk's channels (their
 * arrays stay in registers), none of cc_dots' loop over channels (fewer registers); the
 * pragmas are the device compiler's, so the host pass of the __host__ __device__ functions
 * goes without them. */
#ifdef __CUDA_ARCH__
#define CC_UNROLL _Pragma("unroll")
#define CC_NO_UNROLL _Pragma("unroll 1")
#else
#define CC_UNROLL
#define CC_NO_UNROLL
#endif

/* The kernels (template argument KIND). */
enum { CC_STATS, CC_STATS_DELTA, CC_OUT, CC_DQUERY, CC_DKEY, CC_DVALUE };

/* Output channels per thread: 64 bytes of accumulators (16 float, 8 double). With 128
 * bytes, or with the channel loop of cc_dots unrolled, the gathers need more than the 128
 * registers that two blocks per SM allow, and spill. */
template <typename T> struct cc_chunk {
  static const int value = 64 / (int)sizeof(T);
};

struct cc_dims {
  int64_t B, Cq, Cv, H, W;
  int64_t HW, J, N; /* H * W, H + W - 1, B * H * W */
  int64_t L;        /* segment length, ceil(J / CC_SEGS) */
};

/* Everything a kernel reads: the operands (NULL where a pass does not use them) and the
 * scratch statistics (N each). */
template <typename T> struct cc_args {
  cc_dims d;
  const T *q, *k, *v, *dout;
  T *out, *dq, *dk, *dv;
  T *m, *inv, *delta;
};

/* Attended position j (0 .. J-1) of (h, w), as h' * W + w' in the image: the column
 * without (h, w), then the row. */
__host__ __device__ __forceinline__ int64_t cc_pos(int64_t j, int64_t h, int64_t w, int64_t H, int64_t W) {
  if (j < H - 1) return (j < h ? j : j + 1) * W + w;
  return h * W + (j - (H - 1));
}

/* Output channels of a kernel and its chunks of them. */
template <typename T, int KIND> __host__ __device__ __forceinline__ int64_t cc_chunks(const cc_dims &d) {
  if (KIND == CC_STATS || KIND == CC_STATS_DELTA) return 1;
  const int64_t C = (KIND == CC_OUT || KIND == CC_DVALUE) ? d.Cv : d.Cq;
  return (C + cc_chunk<T>::value - 1) / cc_chunk<T>::value;
}
template <typename T, int KIND> __host__ __device__ __forceinline__ int64_t cc_blocks(const cc_dims &d) {
  return (d.N + CC_LANES - 1) / CC_LANES * cc_chunks<T, KIND>(d);
}
template <int KIND> __host__ __device__ constexpr int cc_phases() {
  return KIND == CC_STATS ? 3 : KIND == CC_STATS_DELTA ? 4 : 2;
}
/* Shared memory in doubles: three (segment, lane) tables of double for the statistics,
 * a (segment, channel, lane) table of T for the others. */
template <typename T, int KIND> __host__ __device__ constexpr int cc_smem_doubles() {
  return (KIND == CC_STATS || KIND == CC_STATS_DELTA)
             ? 3 * CC_SEGS * CC_LANES
             : (int)(CC_SEGS * cc_chunk<T>::value * CC_LANES * sizeof(T) / sizeof(double));
}

/* One thread's position and segment in block blk: lane's position e = b * HW + p, p = h * W +
 * w (the tile's spare lanes past N take position N - 1 and write nothing), channel chunk
 * offset c0, and its segment [j0, j1) of 0 .. J-1. */
struct cc_thread {
  int64_t e, b, p, h, w, c0, j0, j1;
  int valid;
};
template <typename T, int KIND>
__host__ __device__ __forceinline__ cc_thread cc_thread_of(const cc_dims &d, int64_t blk, int lane, int seg) {
  const int64_t chunks = cc_chunks<T, KIND>(d), tile = blk / chunks;
  cc_thread t;
  t.c0 = (blk - tile * chunks) * cc_chunk<T>::value;
  int64_t e = tile * CC_LANES + lane;
  t.valid = e < d.N;
  if (!t.valid) e = d.N - 1;
  t.e = e;
  t.b = e / d.HW;
  t.p = e - t.b * d.HW;
  t.h = t.p / d.W;
  t.w = t.p - t.h * d.W;
  t.j0 = seg * d.L < d.J ? seg * d.L : d.J;
  t.j1 = t.j0 + d.L < d.J ? t.j0 + d.L : d.J;
  return t;
}

/* Positions cc_pos(j .. j + CC_JB - 1) of the thread's (h, w); returns how many are below
 * j1 (the others repeat position j: valid addresses whose results are not used). */
__host__ __device__ __forceinline__ int cc_block(int64_t (&pos)[CC_JB], int64_t j, const cc_thread &t,
                                                 const cc_dims &d) {
  const int n = t.j1 - j < CC_JB ? (int)(t.j1 - j) : CC_JB;
  CC_UNROLL
  for (int jj = 0; jj < CC_JB; jj++) pos[jj] = cc_pos(jj < n ? j + jj : j, t.h, t.w, d.H, d.W);
  return n;
}

/* r[jj] = sum over c < C, in order, of own[c * HW] * other[c * HW + pos[jj]], in T. */
template <typename T>
__host__ __device__ __forceinline__ void cc_dots(T (&r)[CC_JB], const T *own, const T *other,
                                                 const int64_t (&pos)[CC_JB], int64_t C, int64_t HW) {
  CC_UNROLL
  for (int jj = 0; jj < CC_JB; jj++) r[jj] = 0;
  CC_NO_UNROLL /* the CC_JB independent sums are the parallelism; fewer registers */
  for (int64_t c = 0; c < C; c++) {
    const T o = own[c * HW];
    const T *oc = other + c * HW;
    CC_UNROLL
    for (int jj = 0; jj < CC_JB; jj++) r[jj] += o * oc[pos[jj]];
  }
}

/* The thread's segment CC_JB positions at a time: f(pos, e, n) with pos from cc_block, n of
 * them used, and e[jj] = cc_dots of own against other at pos[jj] over Cq channels (query(t)
 * . key(pos), or, commuted, query(pos) . key(t)). */
template <typename T, typename F>
__host__ __device__ __forceinline__ void cc_walk(const cc_thread &t, const cc_dims &d, const T *own, const T *other,
                                                 F f) {
  for (int64_t j = t.j0; j < t.j1; j += CC_JB) {
    int64_t pos[CC_JB];
    T e[CC_JB];
    const int n = cc_block(pos, j, t, d);
    cc_dots(e, own, other, pos, d.Cq, d.HW);
    f(pos, e, n);
  }
}

/* acc[cc] += sum over jj < n, in order, of w[jj] * src[cc * HW + pos[jj]], for cc < nc. */
template <typename T, int CH>
__host__ __device__ __forceinline__ void cc_gather(T (&acc)[CH], const T (&w)[CC_JB], const T *src,
                                                   const int64_t (&pos)[CC_JB], int n, int nc, int64_t HW) {
  CC_UNROLL
  for (int cc = 0; cc < CH; cc++)
    if (cc < nc) {
      const T *sc = src + cc * HW;
      CC_UNROLL
      for (int jj = 0; jj < CC_JB; jj++)
        if (jj < n) acc[cc] += w[jj] * sc[pos[jj]];
    }
}

/* The statistics' tables: 0 segment maxima, 1 segment sums of exp, 2 segment sums of a dA. */
__host__ __device__ __forceinline__ double *cc_table(double *smem, int k) { return smem + k * CC_SEGS * CC_LANES; }

template <typename T> __host__ __device__ __forceinline__ T cc_max_of(const double *table, int lane) {
  T m = (T)-INFINITY;
  for (int s = 0; s < CC_SEGS; s++) {
    const T x = (T)table[s * CC_LANES + lane];
    m = x > m ? x : m;
  }
  return m;
}
__host__ __device__ __forceinline__ double cc_sum_of(const double *table, int lane) {
  double l = 0;
  for (int s = 0; s < CC_SEGS; s++) l += table[s * CC_LANES + lane];
  return l;
}

/* Phase `phase` of kernel KIND for thread (lane, seg) of block blk; a barrier follows each. */
template <typename T, int KIND>
__host__ __device__ void cc_phase(const cc_args<T> &a, int phase, int64_t blk, int lane, int seg, double *smem) {
  enum { CH = cc_chunk<T>::value };
  const cc_dims &d = a.d;
  const cc_thread t = cc_thread_of<T, KIND>(d, blk, lane, seg);
  const int64_t HW = d.HW, Cq = d.Cq, Cv = d.Cv;
  const T *qb = a.q + t.b * Cq * HW, *kb = a.k + t.b * Cq * HW;
  if (KIND == CC_STATS || KIND == CC_STATS_DELTA) {
    const int store = KIND == CC_STATS ? 2 : 3;
    const T *qp = qb + t.p;
    const int slot = seg * CC_LANES + lane;
    if (phase == 0) { /* segment maximum */
      T mx = (T)-INFINITY;
      cc_walk(t, d, qp, kb, [&](const int64_t(&)[CC_JB], const T(&e)[CC_JB], int n) {
        CC_UNROLL
        for (int jj = 0; jj < CC_JB; jj++)
          if (jj < n) mx = e[jj] > mx ? e[jj] : mx;
      });
      cc_table(smem, 0)[slot] = (double)mx;
    } else if (phase == 1) { /* segment sum of exp(e - m) */
      const T m = cc_max_of<T>(cc_table(smem, 0), lane);
      double l = 0;
      cc_walk(t, d, qp, kb, [&](const int64_t(&)[CC_JB], const T(&e)[CC_JB], int n) {
        CC_UNROLL
        for (int jj = 0; jj < CC_JB; jj++)
          if (jj < n) l += (double)fv_nn_exp(e[jj] - m);
      });
      cc_table(smem, 1)[slot] = l;
    } else if (phase == 2 && KIND == CC_STATS_DELTA) { /* segment sum of a_j dA_j */
      const T m = cc_max_of<T>(cc_table(smem, 0), lane), inv = (T)(1 / cc_sum_of(cc_table(smem, 1), lane));
      const T *dp = a.dout + t.b * Cv * HW + t.p, *vb = a.v + t.b * Cv * HW;
      double s = 0;
      cc_walk(t, d, qp, kb, [&](const int64_t(&pos)[CC_JB], const T(&e)[CC_JB], int n) {
        T dA[CC_JB];
        cc_dots(dA, dp, vb, pos, Cv, HW);
        CC_UNROLL
        for (int jj = 0; jj < CC_JB; jj++)
          if (jj < n) s += (double)(fv_nn_exp(e[jj] - m) * inv) * (double)dA[jj];
      });
      cc_table(smem, 2)[slot] = s;
    } else if (phase == store && seg == 0 && t.valid) {
      a.m[t.e] = cc_max_of<T>(cc_table(smem, 0), lane);
      a.inv[t.e] = (T)(1 / cc_sum_of(cc_table(smem, 1), lane));
      if (KIND == CC_STATS_DELTA) a.delta[t.e] = (T)cc_sum_of(cc_table(smem, 2), lane);
    }
    return;
  }
  /* the gathers: phase 0 adds the segment's terms into acc, phase 1 adds the segments */
  T *red = (T *)(void *)smem; /* (segment, channel, lane) */
  const int64_t C = (KIND == CC_OUT || KIND == CC_DVALUE) ? Cv : Cq;
  const int nc = C - t.c0 < CH ? (int)(C - t.c0) : (int)CH;
  if (phase == 1) {
    if (!t.valid) return;
    T *dst = KIND == CC_OUT ? a.out : KIND == CC_DQUERY ? a.dq : KIND == CC_DKEY ? a.dk : a.dv;
    for (int cc = seg; cc < nc; cc += CC_SEGS) {
      T s = red[cc * CC_LANES + lane];
      for (int g = 1; g < CC_SEGS; g++) s += red[(g * CH + cc) * CC_LANES + lane];
      T *o = dst + (t.b * C + t.c0 + cc) * HW + t.p;
      *o = KIND == CC_OUT ? s : *o + s;
    }
    return;
  }
  T acc[CH];
  CC_UNROLL
  for (int cc = 0; cc < CH; cc++) acc[cc] = 0;
  const T *vb = a.v + t.b * Cv * HW;
  const T *db = KIND == CC_OUT ? (const T *)NULL : a.dout + t.b * Cv * HW;
  if (KIND == CC_OUT || KIND == CC_DQUERY) {
    /* over the thread's own attention: j of p = t */
    const T *qp = qb + t.p;
    const T m = a.m[t.e], inv = a.inv[t.e], delta = KIND == CC_DQUERY ? a.delta[t.e] : (T)0;
    const T *src = KIND == CC_OUT ? vb : kb; /* out: a_j value(pos_j); dquery: dE_j key(pos_j) */
    cc_walk(t, d, qp, kb, [&](const int64_t(&pos)[CC_JB], const T(&e)[CC_JB], int n) {
      T w[CC_JB];
      CC_UNROLL
      for (int jj = 0; jj < CC_JB; jj++) w[jj] = fv_nn_exp(e[jj] - m) * inv;
      if (KIND == CC_DQUERY) {
        T dA[CC_JB];
        cc_dots(dA, db + t.p, vb, pos, Cv, HW);
        CC_UNROLL
        for (int jj = 0; jj < CC_JB; jj++) w[jj] = w[jj] * (dA[jj] - delta);
      }
      cc_gather<T, CH>(acc, w, src + t.c0 * HW, pos, n, nc, HW);
    });
  } else {
    /* over the attendees of q = t: p_i = cc_pos(i, h, w), with p_i's own statistics */
    const T *kq = kb + t.p, *vq = vb + t.p;
    const T *sm = a.m + t.b * HW, *si = a.inv + t.b * HW, *sd = KIND == CC_DKEY ? a.delta + t.b * HW : (const T *)NULL;
    const T *src = KIND == CC_DKEY ? qb : db; /* dkey: dE(p -> q) query(p); dvalue: a(p -> q) dout(p) */
    /* e: query(p_i) . key(q), the products as p_i's (commuted) */
    cc_walk(t, d, kq, qb, [&](const int64_t(&pos)[CC_JB], const T(&e)[CC_JB], int n) {
      T w[CC_JB];
      CC_UNROLL
      for (int jj = 0; jj < CC_JB; jj++) w[jj] = fv_nn_exp(e[jj] - sm[pos[jj]]) * si[pos[jj]];
      if (KIND == CC_DKEY) {
        T dA[CC_JB];
        cc_dots(dA, vq, db, pos, Cv, HW); /* dout(p_i) . value(q) */
        CC_UNROLL
        for (int jj = 0; jj < CC_JB; jj++) w[jj] = w[jj] * (dA[jj] - sd[pos[jj]]);
      }
      cc_gather<T, CH>(acc, w, src + t.c0 * HW, pos, n, nc, HW);
    });
  }
  CC_UNROLL
  for (int cc = 0; cc < CH; cc++) red[(seg * CH + cc) * CC_LANES + lane] = acc[cc];
}

template <typename T, int KIND> __global__ void __launch_bounds__(CC_LANES * CC_SEGS, 2) cc_kernel(const cc_args<T> a) {
  __shared__ double smem[cc_smem_doubles<T, KIND>()];
  const int64_t blocks = cc_blocks<T, KIND>(a.d);
  for (int64_t blk = blockIdx.x; blk < blocks; blk += gridDim.x)
    for (int phase = 0; phase < cc_phases<KIND>(); phase++) {
      cc_phase<T, KIND>(a, phase, blk, (int)threadIdx.x, (int)threadIdx.y, smem);
      __syncthreads();
    }
}

/* Runs kernel KIND over the grid: on the GPU here; a test's host emulation runs the phases
 * of every block and thread in its place (the launcher argument L of cc_run). */
struct cc_gpu {
  template <int KIND, typename T> static int launch(const cc_args<T> &a, const char *op) {
    const int64_t blocks = cc_blocks<T, KIND>(a.d);
    if (blocks == 0) return FV_OK;
    cc_kernel<T, KIND><<<fv_nn_row_blocks(blocks), dim3(CC_LANES, CC_SEGS), 0, fv_cuda_stream>>>(a);
    FV_CUDA_LAUNCHED(op);
    return FV_OK;
  }
};

/* The launches of one call, in order; a's scratch statistics are set. */
template <typename L, typename T> int cc_launches(const cc_args<T> &a, int backward) {
  if (!backward) {
    const char *op = "criss_cross_attention";
    const int status = L::template launch<CC_STATS>(a, op);
    return status ? status : L::template launch<CC_OUT>(a, op);
  }
  const char *op = "criss_cross_attention backward";
  /* delta only for dquery and dkey; dvalue needs the attention alone */
  int status = (a.dq || a.dk) ? L::template launch<CC_STATS_DELTA>(a, op) : L::template launch<CC_STATS>(a, op);
  if (!status && a.dq) status = L::template launch<CC_DQUERY>(a, op);
  if (!status && a.dk) status = L::template launch<CC_DKEY>(a, op);
  if (!status && a.dv) status = L::template launch<CC_DVALUE>(a, op);
  return status;
}

template <typename T, typename L = cc_gpu> int cc_run(const fv_nn_call *c, int backward) {
  const fv_tensor *q = c->t[backward ? 4 : 1], *v = c->t[backward ? 6 : 3];
  cc_args<T> a;
  cc_dims &d = a.d;
  d.B = q->sizes[0];
  d.Cq = q->sizes[1];
  d.H = q->sizes[2];
  d.W = q->sizes[3];
  d.Cv = v->sizes[1];
  d.HW = d.H * d.W;
  d.N = d.B * d.HW;
  d.J = d.H + d.W - 1;
  d.L = (d.J + CC_SEGS - 1) / CC_SEGS;
  const int b = backward;
  a.out = b ? NULL : fv_nn_ptr<T>(c, 0);
  a.dq = b ? fv_nn_ptr<T>(c, 0) : NULL;
  a.dk = b ? fv_nn_ptr<T>(c, 1) : NULL;
  a.dv = b ? fv_nn_ptr<T>(c, 2) : NULL;
  a.dout = b ? fv_nn_ptr<T>(c, 3) : NULL;
  a.q = fv_nn_ptr<T>(c, b ? 4 : 1);
  a.k = fv_nn_ptr<T>(c, b ? 5 : 2);
  a.v = fv_nn_ptr<T>(c, b ? 6 : 3);
  if (d.N == 0 || (!b && d.Cv == 0) || (b && !a.dq && !a.dk && !a.dv)) return FV_OK;
  const size_t bytes = (size_t)(b ? 3 : 2) * (size_t)d.N * sizeof(T);
  T *scratch = (T *)fv_cuda_alloc(bytes);
  if (!scratch)
    return fv_last_status() ? fv_last_status()
                            : fv_fail(FV_ERR_MEMORY, "criss_cross_attention%s: out of memory", b ? " backward" : "");
  a.m = scratch;
  a.inv = scratch + d.N;
  a.delta = b ? scratch + 2 * d.N : NULL;
  const int status = cc_launches<L>(a, backward);
  fv_cuda_free(scratch, bytes); /* on every path; ordered on the stream: safe to reuse */
  return status;
}

} // namespace

int fv_cuda_nn_criss_cross(const fv_nn_call *c, int backward) {
  return fv_nn_is_f64(c) ? cc_run<double>(c, backward) : cc_run<float>(c, backward);
}
