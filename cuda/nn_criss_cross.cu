/* nn_criss_cross.cu: criss-cross attention (CCNet, FV_OP_CRISS_CROSS) on the GPU, float32
 * and float64, as core/cpu/criss_cross.c: each position (h, w) attends to its column
 * (h', w), h' != h, and its row (h, w'), all w' (itself once), one softmax over the
 * H + W - 1 energies query(h, w) . key(position) over the Cq channels;
 * out(c, h, w) = sum of attention * value(c, position). query and key (B, Cq, H, W),
 * value and out (B, Cv, H, W). One thread per position (correctness over speed): energies
 * recomputed per pass, max and softmax sum in double; backward adds dquery(h, w) itself
 * and dkey, dvalue at the attended positions with atomicAdd (accumulated; each may be
 * NULL).
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/nn_criss_cross.cu -o build/cuda/nn_criss_cross.o */
#include "nn_common.cuh"

/* Attended position j (0 .. H+W-2) of (h, w): the column without (h, w), then the row. */
__device__ __forceinline__ int64_t cc_pos(int64_t j, int64_t h, int64_t w, int64_t H, int64_t W) {
  if (j < H - 1) return (j < h ? j : j + 1) * W + w;
  return h * W + (j - (H - 1));
}

/* energy of position p (h*W + w) against pos in image b: sum_c q[c, p] k[c, pos] */
template <typename T>
__device__ __forceinline__ T cc_energy(const T *qb, const T *kb, int64_t p, int64_t pos, int64_t Cq, int64_t HW) {
  T e = 0;
  for (int64_t c = 0; c < Cq; c++) e += qb[c * HW + p] * kb[c * HW + pos];
  return e;
}

template <typename T>
__global__ void cc_kernel(T *out, T *dq, T *dk, T *dv, const T *dout, const T *q, const T *k, const T *v, int64_t B,
                          int64_t Cq, int64_t Cv, int64_t H, int64_t W, int backward) {
  const int64_t HW = H * W, J = H + W - 1;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < B * HW; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = e / HW, p = e % HW, h = p / W, w = p % W;
    const T *qb = q + b * Cq * HW, *kb = k + b * Cq * HW, *vb = v + b * Cv * HW;
    double m = -INFINITY, l = 0;
    for (int64_t j = 0; j < J; j++) {
      const double s = (double)cc_energy(qb, kb, p, cc_pos(j, h, w, H, W), Cq, HW);
      m = s > m ? s : m;
    }
    for (int64_t j = 0; j < J; j++)
      l += exp((double)cc_energy(qb, kb, p, cc_pos(j, h, w, H, W), Cq, HW) - m);
    if (!backward) {
      T *ob = out + b * Cv * HW;
      for (int64_t c = 0; c < Cv; c++) ob[c * HW + p] = 0;
      for (int64_t j = 0; j < J; j++) {
        const int64_t pos = cc_pos(j, h, w, H, W);
        const T a = (T)(exp((double)cc_energy(qb, kb, p, pos, Cq, HW) - m) / l);
        for (int64_t c = 0; c < Cv; c++) ob[c * HW + p] += a * vb[c * HW + pos];
      }
      continue;
    }
    const T *gb = dout + b * Cv * HW;
    /* sum_j a_j dA_j, dA_j = sum_c dout(c, p) v(c, pos_j) */
    double adot = 0;
    for (int64_t j = 0; j < J; j++) {
      const int64_t pos = cc_pos(j, h, w, H, W);
      const double a = exp((double)cc_energy(qb, kb, p, pos, Cq, HW) - m) / l;
      T dA = 0;
      for (int64_t c = 0; c < Cv; c++) dA += gb[c * HW + p] * vb[c * HW + pos];
      adot += a * (double)dA;
    }
    for (int64_t j = 0; j < J; j++) {
      const int64_t pos = cc_pos(j, h, w, H, W);
      const double a = exp((double)cc_energy(qb, kb, p, pos, Cq, HW) - m) / l;
      T dA = 0;
      for (int64_t c = 0; c < Cv; c++) dA += gb[c * HW + p] * vb[c * HW + pos];
      if (dv)
        for (int64_t c = 0; c < Cv; c++) atomicAdd(dv + (b * Cv + c) * HW + pos, (T)a * gb[c * HW + p]);
      const T dE = (T)(a * ((double)dA - adot));
      if (dq)
        for (int64_t c = 0; c < Cq; c++) dq[(b * Cq + c) * HW + p] += dE * kb[c * HW + pos];
      if (dk)
        for (int64_t c = 0; c < Cq; c++) atomicAdd(dk + (b * Cq + c) * HW + pos, dE * qb[c * HW + p]);
    }
  }
}

template <typename T> static int cc_run(const fv_nn_call *c, int backward) {
  const fv_tensor *q = c->t[backward ? 4 : 1], *v = c->t[backward ? 6 : 3];
  const int64_t B = q->sizes[0], Cq = q->sizes[1], H = q->sizes[2], W = q->sizes[3], Cv = v->sizes[1];
  if (B * H * W == 0) return FV_OK;
  const unsigned threads = 64, grid = (unsigned)((B * H * W + threads - 1) / threads);
  if (!backward)
    cc_kernel<T><<<grid, threads, 0, fv_cuda_stream>>>(fv_nn_ptr<T>(c, 0), NULL, NULL, NULL, NULL, fv_nn_ptr<T>(c, 1),
                                                       fv_nn_ptr<T>(c, 2), fv_nn_ptr<T>(c, 3), B, Cq, Cv, H, W, 0);
  else
    cc_kernel<T><<<grid, threads, 0, fv_cuda_stream>>>(NULL, fv_nn_ptr<T>(c, 0), fv_nn_ptr<T>(c, 1),
                                                       fv_nn_ptr<T>(c, 2), fv_nn_ptr<T>(c, 3), fv_nn_ptr<T>(c, 4),
                                                       fv_nn_ptr<T>(c, 5), fv_nn_ptr<T>(c, 6), B, Cq, Cv, H, W, 1);
  FV_CUDA_LAUNCHED(backward ? "criss_cross_attention backward" : "criss_cross_attention");
  return FV_OK;
}

int fv_cuda_nn_criss_cross(const fv_nn_call *c, int backward) {
  return fv_nn_is_f64(c) ? cc_run<double>(c, backward) : cc_run<float>(c, backward);
}
