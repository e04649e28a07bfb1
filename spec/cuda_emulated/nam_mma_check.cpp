/* nam_mma_check.cpp: cuda/nn_nam_mma.cu's kernels (forward, dK/dV, dQ; TF32 and bfloat16)
 * run on the host over their grids, block after block, on nam_mma_shim.h, against a
 * float64 attention forward and backward; spec/nam_mma_emulated_spec.lua makes the kernel
 * source (NAM_MMA_KERNELS: the kernels with their inline PTX replaced by the shim's
 * emulations) and runs this.
 *   nam_mma_check B N M D Cv    prints each result's largest difference; "all ok" or "FAILED" */
#include NAM_MMA_KERNELS
#include <thread>
#include <vector>
#include <random>
#include <functional>
#include <cstdlib>

static void run_grid(unsigned gx, unsigned gy, const std::function<void()> &body) {
  for (unsigned by = 0; by < gy; by++)
    for (unsigned bx = 0; bx < gx; bx++) {
      pthread_barrier_init(&block_bar, NULL, 128);
      for (int w = 0; w < 4; w++) pthread_barrier_init(&warp_bar[w], NULL, 32);
      for (size_t i = 0; i < sizeof smem / sizeof *smem; i++) smem[i] = NAN; /* no value carried over */
      std::vector<std::thread> th;
      for (unsigned t = 0; t < 128; t++)
        th.emplace_back([&, t] { threadIdx.x = t; blockIdx.x = bx; blockIdx.y = by; body(); });
      for (auto &x : th) x.join();
      pthread_barrier_destroy(&block_bar);
      for (int w = 0; w < 4; w++) pthread_barrier_destroy(&warp_bar[w]);
    }
}

static double maxdiff(const std::vector<float> &a, const std::vector<double> &b, double *scale) {
  double m = 0, s = 0;
  for (size_t i = 0; i < a.size(); i++) { m = fmax(m, fabs(a[i] - b[i])); s = fmax(s, fabs(b[i])); if (a[i] != a[i]) m = INFINITY; }
  *scale = s;
  return m;
}

template <int DP, int CP, bool BF16> int check(int B, int N, int M, int D, int Cv, float scale, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  auto fill = [&](std::vector<float> &v, size_t n) { v.resize(n); for (auto &x : v) x = nd(rng); };
  std::vector<float> q, k, v, dout;
  fill(q, (size_t)B * N * D); fill(k, (size_t)B * M * D); fill(v, (size_t)B * M * Cv); fill(dout, (size_t)B * N * Cv);
  /* float64 reference */
  std::vector<double> O((size_t)B * N * Cv), L((size_t)B * N), dQ(q.size()), dK(k.size()), dV(v.size());
  for (int b = 0; b < B; b++) {
    std::vector<double> P((size_t)N * M), dS((size_t)N * M);
    for (int i = 0; i < N; i++) {
      double mx = -INFINITY;
      for (int j = 0; j < M; j++) {
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)q[((size_t)b * N + i) * D + d] * k[((size_t)b * M + j) * D + d];
        P[(size_t)i * M + j] = s * scale; mx = fmax(mx, s * scale);
      }
      double l = 0;
      for (int j = 0; j < M; j++) l += exp(P[(size_t)i * M + j] - mx);
      for (int j = 0; j < M; j++) P[(size_t)i * M + j] = exp(P[(size_t)i * M + j] - mx) / l;
      L[(size_t)b * N + i] = mx + log(l);
      for (int c = 0; c < Cv; c++) {
        double s = 0;
        for (int j = 0; j < M; j++) s += P[(size_t)i * M + j] * v[((size_t)b * M + j) * Cv + c];
        O[((size_t)b * N + i) * Cv + c] = s;
      }
      double delta = 0;
      for (int c = 0; c < Cv; c++) delta += O[((size_t)b * N + i) * Cv + c] * dout[((size_t)b * N + i) * Cv + c];
      for (int j = 0; j < M; j++) {
        double dp = 0;
        for (int c = 0; c < Cv; c++) dp += (double)dout[((size_t)b * N + i) * Cv + c] * v[((size_t)b * M + j) * Cv + c];
        dS[(size_t)i * M + j] = P[(size_t)i * M + j] * (dp - delta);
      }
    }
    for (int i = 0; i < N; i++)
      for (int d = 0; d < D; d++) {
        double s = 0;
        for (int j = 0; j < M; j++) s += dS[(size_t)i * M + j] * k[((size_t)b * M + j) * D + d];
        dQ[((size_t)b * N + i) * D + d] = 1 + scale * s;
      }
    for (int j = 0; j < M; j++) {
      for (int d = 0; d < D; d++) {
        double s = 0;
        for (int i = 0; i < N; i++) s += dS[(size_t)i * M + j] * q[((size_t)b * N + i) * D + d];
        dK[((size_t)b * M + j) * D + d] = 1 + scale * s;
      }
      for (int c = 0; c < Cv; c++) {
        double s = 0;
        for (int i = 0; i < N; i++) s += P[(size_t)i * M + j] * dout[((size_t)b * N + i) * Cv + c];
        dV[((size_t)b * M + j) * Cv + c] = 1 + s;
      }
    }
  }
  /* the kernels */
  std::vector<float> out((size_t)B * N * Cv, NAN), lse((size_t)B * N, NAN);
  run_grid((N + 63) / 64, B, [&] {
    mma_forward<DP, CP, BF16>(out.data(), lse.data(), q.data(), k.data(), v.data(), N, M, D, Cv, scale);
  });
  std::vector<float> delta((size_t)B * N);
  for (size_t r = 0; r < delta.size(); r++) {
    float s = 0;
    for (int c = 0; c < Cv; c++) s = fmaf(dout[r * Cv + c], out[r * Cv + c], s);
    delta[r] = s;
  }
  std::vector<float> dq(q.size(), 1.f), dk(k.size(), 1.f), dv(v.size(), 1.f); /* += into ones */
  run_grid((M + 63) / 64, B, [&] {
    mma_dkdv<DP, CP, BF16>(dk.data(), dv.data(), q.data(), k.data(), v.data(), dout.data(), lse.data(), delta.data(),
                           N, M, D, Cv, scale);
  });
  run_grid((N + 63) / 64, B, [&] {
    mma_dq<DP, CP, BF16>(dq.data(), q.data(), k.data(), v.data(), dout.data(), lse.data(), delta.data(), N, M, D, Cv,
                         scale);
  });
  std::vector<double> Lf(L);
  const char *names[] = {"out", "lse", "dq", "dk", "dv"};
  const std::vector<float> *got[] = {&out, &lse, &dq, &dk, &dv};
  const std::vector<double> *want[] = {&O, &Lf, &dQ, &dK, &dV};
  const double tol = BF16 ? 3e-2 : 4e-3;
  int bad = 0;
  for (int i = 0; i < 5; i++) {
    double sc, d = maxdiff(*got[i], *want[i], &sc);
    const bool ok = d <= tol * fmax(sc, 1.0);
    printf("  %s %-3s max |diff| %.3g (max |ref| %.3g)%s\n", BF16 ? "bf16" : "tf32", names[i], d, sc, ok ? "" : "  FAIL");
    bad += !ok;
  }
  return bad;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: nam_mma_check B N M D Cv\n");
    return 2;
  }
  const int B = atoi(argv[1]), N = atoi(argv[2]), M = atoi(argv[3]), D = atoi(argv[4]), Cv = atoi(argv[5]);
  const int dp = D <= 16 ? 16 : D <= 32 ? 32 : 64, cp = Cv <= 32 ? 32 : 64;
  if (D > 64 || Cv > 64 || D % 4 || Cv % 4) {
    fprintf(stderr, "nam_mma_check: D and Cv must be multiples of 4 up to 64\n");
    return 2;
  }
  int bad = 0;
  for (int bf = 0; bf < 2; bf++) {
#define CASE(DPv, CPv)                                                                                  \
  if (dp == DPv && cp == CPv)                                                                          \
    bad += bf ? check<DPv, CPv, true>(B, N, M, D, Cv, 0.4f, 5) : check<DPv, CPv, false>(B, N, M, D, Cv, 0.4f, 5);
    CASE(16, 32) CASE(16, 64) CASE(32, 32) CASE(32, 64) CASE(64, 32) CASE(64, 64)
#undef CASE
  }
  printf("%s\n", bad ? "FAILED" : "all ok");
  return bad != 0;
}
