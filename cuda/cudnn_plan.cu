/* cudnn_plan.cu: the cuDNN side of conv2d that cudnn.cu's passes stand on (through
 * cudnn_plan.cuh): the handle (made on first use, on the backend's stream), the version
 * check, the plan per shape and the choice of each pass's algorithm.
 *
 * Plans: each shape key (input and weight sizes, output size, stride, padding, dilation,
 * groups, dtype, TF32 setting, autocast) gets a plan holding its descriptors (input,
 * output, filter, the output again in the call's dtype and the bias for the bias's add and
 * gradient, and one convolution descriptor per pass: forward, backward-data,
 * backward-filter, each carrying its chosen algorithm's math type) and the chosen
 * algorithms with their workspace sizes, so a call after the first creates no
 * descriptor. Plans live in a table of PLAN_CAP entries; when it is full the least
 * recently used entry is reset for the new shape (its descriptors are set again, never
 * destroyed). Nothing is freed before exit.
 *
 * Algorithms (chosen for each pass on its first use with a shape), as PyTorch's
 * cudnn.benchmark = True: cudnnFind*AlgorithmEx times the algorithms on the call's own
 * operands, with a search workspace from the caching allocator (the largest any algorithm
 * asks for, capped at 1 GiB and at 90% of the device's free memory; on an allocation
 * failure halved down to 1 MiB, then none; given back to the allocator's cache after the
 * search), and the fastest successful result is taken. Forward writes its trial results
 * into the call's output (a fresh tensor that the real call then overwrites, beta = 0;
 * under autocast the bfloat16 scratch output); backward-data and backward-filter write
 * theirs into scratch buffers of the input's and the weight's size (under autocast the
 * bfloat16 results, overwritten after), so the gradients being accumulated are never
 * touched by the search. Backward passes take a deterministic algorithm instead of a
 * non-deterministic fastest one when its time is within 10% (cuDNN's non-deterministic
 * ones add with atomics: run-to-run differences for little gain). Results with
 * CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION (float32 rounded to half precision) are never
 * taken, nor tensor-op results for float32 with TF32 off (that plan's descriptors ask
 * for CUDNN_FMA_MATH, and its calls run with it). Otherwise the pass's descriptor gets
 * the math type cuDNN reported with the chosen result (cuDNN picks kernels by the
 * algorithm and math type pair). When the search cannot run (no memory for the scratch
 * buffer, Find fails) or its pick is unusable, cuDNN's heuristic order
 * (cudnnGet*Algorithm_v7: its first usable result that gets a workspace size) decides,
 * and the search's error is dropped. FOVEA_CUDNN_BENCHMARK=0 (read once) skips the
 * search and always takes the heuristic; FOVEA_CUDNN_VERBOSE=1 prints each choice to
 * stderr (pass, shape, algorithm, math type, time, workspace, timed or heuristic and why).
 *
 * Every cuDNN call is checked as in cudnn.cu; a failure inside the search is recorded the
 * same way, then replaced by the heuristic fallback. Single-threaded, as the backend is.
 * The library's version (cudnnGetVersion) is compared with the headers' CUDNN_VERSION
 * once (check_version, through cudnn.cu's fv_cuda_cudnn_check, called by fv_cuda_init); a
 * different major version is printed with both numbers at load (stderr) and reported by
 * every conv2d call instead of running it; a library older than the headers (same
 * major) is printed as a warning at load.
 *
 * Built only with cuDNN (the Makefile defines FV_HAVE_CUDNN for this file and cudnn.cu);
 * without it the file is empty and cudnn.cu's stubs answer.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -DFV_HAVE_CUDNN=1 -Icore -c cuda/cudnn_plan.cu -o build/cuda/cudnn_plan.o */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn_common.cuh"

#if FV_HAVE_CUDNN
#include "cudnn_plan.cuh"

namespace fv_cudnn {

cudnnHandle_t handle;
static int version_checked;
static char version_error[256];

int cudnn_fail(cudnnStatus_t st, const char *op, const char *call, const char *file, int line) {
  int status = st == CUDNN_STATUS_ALLOC_FAILED ? FV_ERR_MEMORY : FV_ERR_DEVICE;
  return fv_fail(status, "%s: %s failed at %s:%d: %s", op, call, file, line, cudnnGetErrorString(st));
}

int check_version(void) {
  if (version_checked) return version_error[0] ? FV_ERR_DEVICE : FV_OK;
  version_checked = 1;
  size_t have = cudnnGetVersion();
  if (have / 10000 != (size_t)CUDNN_VERSION / 10000) {
    snprintf(version_error, sizeof version_error,
             "cuDNN library version %zu does not match the headers' version %d (major %zu vs %d)", have,
             (int)CUDNN_VERSION, have / 10000, (int)CUDNN_VERSION / 10000);
    fprintf(stderr, "fovea cuda: %s; conv2d on cuda will fail until the two agree\n", version_error);
  } else if (have < (size_t)CUDNN_VERSION) { /* cuDNN keeps compatibility with older builds only */
    fprintf(stderr,
            "fovea cuda: warning: the cuDNN library (version %zu) is older than the headers fovea was built "
            "with (version %d); cuDNN guarantees only newer libraries of the same major version\n",
            have, (int)CUDNN_VERSION);
  }
  return version_error[0] ? FV_ERR_DEVICE : FV_OK;
}

int cudnn_ready(const char *op) {
  if (check_version()) return fv_fail(FV_ERR_DEVICE, "%s: %s", op, version_error);
  if (handle) return FV_OK;
  FV_CUDNN_TRY(op, cudnnCreate(&handle));
  FV_CUDNN_TRY(op, cudnnSetStream(handle, fv_cuda_stream));
  return FV_OK;
}

/* ---- settings, read from the environment once ---- */
static int benchmark_on = -1; /* FOVEA_CUDNN_BENCHMARK: anything but "0" (or unset) times algorithms */
static int verbose_on = -1;   /* FOVEA_CUDNN_VERBOSE: anything but "" or "0" prints each choice */

static void read_settings(void) {
  if (benchmark_on >= 0) return;
  const char *b = getenv("FOVEA_CUDNN_BENCHMARK"), *v = getenv("FOVEA_CUDNN_VERBOSE");
  benchmark_on = !(b && strcmp(b, "0") == 0);
  verbose_on = v && v[0] && strcmp(v, "0") != 0;
}

/* ---- plans (cudnn_plan.cuh): a table of them, by shape ---- */
static const char *const pass_names[PASS_COUNT] = {"forward", "backward-data", "backward-filter"};

enum { PLAN_CAP = 512 };
static conv_plan plans[PLAN_CAP]; /* zero: no descriptors yet */
static int plan_count;            /* entries handed out so far */
static uint64_t plan_tick;

/* bf16: the float32 call runs under autocast (its TF32 setting then plays no part) */
static conv_key key_of(const fv_tensor *inp, const fv_tensor *weight, const fv_tensor *out, const int64_t *i,
                       int f64, int bf16) {
  conv_key k;
  memset(&k, 0, sizeof k);
  int64_t v[KEY_LEN] = {inp->sizes[0], inp->sizes[1], inp->sizes[2], inp->sizes[3], weight->sizes[0],
                        weight->sizes[2], weight->sizes[3], out->sizes[2], out->sizes[3], i[0], i[1], i[2], i[3],
                        i[4], i[5], i[6], f64, (f64 || bf16) ? 0 : fv_cuda_tf32_enabled(), bf16};
  memcpy(k.v, v, sizeof v);
  return k;
}

static uint64_t hash_of(const conv_key &k) { /* FNV-1a over the key's bytes */
  uint64_t h = 1469598103934665603ull;
  const unsigned char *p = (const unsigned char *)k.v;
  for (size_t n = 0; n < sizeof k.v; n++) h = (h ^ p[n]) * 1099511628211ull;
  return h;
}

/* The math type a pass's descriptor starts with (and searches with): CUDNN_DEFAULT_MATH
 * lets cuDNN consider TF32 tensor cores for float32, CUDNN_FMA_MATH rules them out, and
 * CUDNN_TENSOR_OP_MATH lets bfloat16 operands (autocast) run on tensor cores. */
static cudnnMathType_t base_math(const conv_plan *p) {
  if (p->key.v[KEY_BF16]) return CUDNN_TENSOR_OP_MATH;
  return (!p->key.v[KEY_F64] && p->key.v[KEY_TF32]) ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
}

/* Creates the plan's missing descriptors (a failure part-way leaves the ones made, for the
 * next try) and sets them all for p->key. Under autocast x, y and w are bfloat16 and the
 * convolution computes in float (cuDNN's PSEUDO_BFLOAT16_CONFIG); yt and b stay float32. */
static int plan_set(const char *op, conv_plan *p, const fv_tensor *inp, const fv_tensor *weight,
                    const fv_tensor *out, const int64_t *i) {
  const int f64 = (int)p->key.v[KEY_F64];
  const cudnnDataType_t dt = f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT; /* the call's, and the compute type */
  const cudnnDataType_t st = p->key.v[KEY_BF16] ? CUDNN_DATA_BFLOAT16 : dt; /* the convolution's operands */
  for (int k = 0; k < 4; k++)
    if (inp->sizes[k] > INT32_MAX || weight->sizes[k] > INT32_MAX || out->sizes[k] > INT32_MAX)
      return fv_fail(FV_ERR_SHAPE, "%s: sizes beyond 2^31 are not supported by cuDNN", op);
  if (!p->x) FV_CUDNN_TRY(op, cudnnCreateTensorDescriptor(&p->x));
  if (!p->y) FV_CUDNN_TRY(op, cudnnCreateTensorDescriptor(&p->y));
  if (!p->yt) FV_CUDNN_TRY(op, cudnnCreateTensorDescriptor(&p->yt));
  if (!p->b) FV_CUDNN_TRY(op, cudnnCreateTensorDescriptor(&p->b));
  if (!p->w) FV_CUDNN_TRY(op, cudnnCreateFilterDescriptor(&p->w));
  for (int k = 0; k < PASS_COUNT; k++)
    if (!p->conv[k]) FV_CUDNN_TRY(op, cudnnCreateConvolutionDescriptor(&p->conv[k]));
  FV_CUDNN_TRY(op, cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, st, (int)inp->sizes[0], (int)inp->sizes[1],
                                              (int)inp->sizes[2], (int)inp->sizes[3]));
  FV_CUDNN_TRY(op, cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, st, (int)out->sizes[0], (int)out->sizes[1],
                                              (int)out->sizes[2], (int)out->sizes[3]));
  FV_CUDNN_TRY(op, cudnnSetTensor4dDescriptor(p->yt, CUDNN_TENSOR_NCHW, dt, (int)out->sizes[0], (int)out->sizes[1],
                                              (int)out->sizes[2], (int)out->sizes[3]));
  FV_CUDNN_TRY(op, cudnnSetTensor4dDescriptor(p->b, CUDNN_TENSOR_NCHW, dt, 1, (int)out->sizes[1], 1, 1));
  FV_CUDNN_TRY(op, cudnnSetFilter4dDescriptor(p->w, st, CUDNN_TENSOR_NCHW, (int)weight->sizes[0],
                                              (int)weight->sizes[1], (int)weight->sizes[2], (int)weight->sizes[3]));
  for (int k = 0; k < PASS_COUNT; k++) {
    FV_CUDNN_TRY(op, cudnnSetConvolution2dDescriptor(p->conv[k], (int)i[2], (int)i[3], (int)i[0], (int)i[1],
                                                     (int)i[4], (int)i[5], CUDNN_CROSS_CORRELATION, dt));
    FV_CUDNN_TRY(op, cudnnSetConvolutionGroupCount(p->conv[k], (int)i[6]));
    FV_CUDNN_TRY(op, cudnnSetConvolutionMathType(p->conv[k], base_math(p)));
  }
  /* cuDNN must agree with the core's output size */
  int n, c, h, w;
  FV_CUDNN_TRY(op, cudnnGetConvolution2dForwardOutputDim(p->conv[PASS_FWD], p->x, p->w, &n, &c, &h, &w));
  if (n != out->sizes[0] || c != out->sizes[1] || h != out->sizes[2] || w != out->sizes[3])
    return fv_fail(FV_ERR_INTERNAL, "%s: cuDNN's output size %dx%dx%dx%d differs from %s", op, n, c, h, w,
                   fv_shape_of(out));
  return FV_OK;
}

/* The plan of this shape: found by key, else a new or the least recently used entry, set
 * for it (its choices start empty). */
int plan_for(const char *op, conv_plan **plan, const fv_tensor *inp, const fv_tensor *weight, const fv_tensor *out,
             const int64_t *i, int f64, int bf16) {
  const conv_key key = key_of(inp, weight, out, i, f64, bf16);
  const uint64_t h = hash_of(key);
  conv_plan *victim = NULL;
  for (int k = 0; k < plan_count; k++) {
    conv_plan *p = &plans[k];
    if (p->valid && p->hash == h && memcmp(&p->key, &key, sizeof key) == 0) {
      p->used = ++plan_tick;
      *plan = p;
      return FV_OK;
    }
    if (!victim || (victim->valid && (!p->valid || p->used < victim->used))) victim = p;
  }
  if (plan_count < PLAN_CAP && (!victim || victim->valid)) victim = &plans[plan_count++];
  conv_plan *p = victim;
  p->valid = 0; /* until every descriptor is set */
  p->key = key;
  p->hash = h;
  memset(p->choice, 0, sizeof p->choice);
  FV_TRY(plan_set(op, p, inp, weight, out, i));
  p->valid = 1;
  p->used = ++plan_tick;
  *plan = p;
  return FV_OK;
}

/* The thread's error status and message, put back after a search whose failure is
 * replaced by the heuristic fallback. */
struct saved_error {
  int status;
  char message[1024];
  saved_error() : status(fv_last_status()) { snprintf(message, sizeof message, "%s", fv_last_error()); }
  void restore() const {
    if (status) fv_fail(status, "%s", message);
    else fv_clear_error();
  }
};

/* ---- the three passes, behind one interface for the search ---- */
struct pass_fwd {
  typedef cudnnConvolutionFwdAlgoPerf_t perf_t;
  typedef cudnnConvolutionFwdAlgo_t algo_t;
  static constexpr int PASS = PASS_FWD, COUNT = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
  static int max_count(const char *op, int *n) {
    FV_CUDNN_TRY(op, cudnnGetConvolutionForwardAlgorithmMaxCount(handle, n));
    return FV_OK;
  }
  static int heuristic(const char *op, const conv_plan *p, int n, int *found, perf_t *perf) {
    FV_CUDNN_TRY(op, cudnnGetConvolutionForwardAlgorithm_v7(handle, p->x, p->w, p->conv[PASS], p->y, n, found, perf));
    return FV_OK;
  }
  static int find(const char *op, const conv_plan *p, const conv_io &io, void *result, int n, int *found,
                  perf_t *perf, void *ws, size_t ws_bytes) {
    FV_CUDNN_TRY(op, cudnnFindConvolutionForwardAlgorithmEx(handle, p->x, io.x, p->w, io.w, p->conv[PASS], p->y,
                                                            result, n, found, perf, ws, ws_bytes));
    return FV_OK;
  }
  static int ws_size(const char *op, const conv_plan *p, algo_t algo, size_t *bytes) {
    FV_CUDNN_TRY(op, cudnnGetConvolutionForwardWorkspaceSize(handle, p->x, p->w, p->conv[PASS], p->y, algo, bytes));
    return FV_OK;
  }
  /* A query for sizing the search workspace: algorithms that do not apply to the shape
   * answer CUDNN_STATUS_NOT_SUPPORTED and are left out, so its status is only looked at. */
  static cudnnStatus_t probe_ws(const conv_plan *p, algo_t algo, size_t *bytes) {
    return cudnnGetConvolutionForwardWorkspaceSize(handle, p->x, p->w, p->conv[PASS], p->y, algo, bytes);
  }
};

struct pass_data {
  typedef cudnnConvolutionBwdDataAlgoPerf_t perf_t;
  typedef cudnnConvolutionBwdDataAlgo_t algo_t;
  static constexpr int PASS = PASS_DATA, COUNT = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
  static int max_count(const char *op, int *n) {
    FV_CUDNN_TRY(op, cudnnGetConvolutionBackwardDataAlgorithmMaxCount(handle, n));
    return FV_OK;
  }
  static int heuristic(const char *op, const conv_plan *p, int n, int *found, perf_t *perf) {
    FV_CUDNN_TRY(op, cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, p->w, p->y, p->conv[PASS], p->x, n, found,
                                                                 perf));
    return FV_OK;
  }
  static int find(const char *op, const conv_plan *p, const conv_io &io, void *result, int n, int *found,
                  perf_t *perf, void *ws, size_t ws_bytes) {
    FV_CUDNN_TRY(op, cudnnFindConvolutionBackwardDataAlgorithmEx(handle, p->w, io.w, p->y, io.dy, p->conv[PASS], p->x,
                                                                 result, n, found, perf, ws, ws_bytes));
    return FV_OK;
  }
  static int ws_size(const char *op, const conv_plan *p, algo_t algo, size_t *bytes) {
    FV_CUDNN_TRY(op, cudnnGetConvolutionBackwardDataWorkspaceSize(handle, p->w, p->y, p->conv[PASS], p->x, algo,
                                                                  bytes));
    return FV_OK;
  }
  static cudnnStatus_t probe_ws(const conv_plan *p, algo_t algo, size_t *bytes) {
    return cudnnGetConvolutionBackwardDataWorkspaceSize(handle, p->w, p->y, p->conv[PASS], p->x, algo, bytes);
  }
};

struct pass_filter {
  typedef cudnnConvolutionBwdFilterAlgoPerf_t perf_t;
  typedef cudnnConvolutionBwdFilterAlgo_t algo_t;
  static constexpr int PASS = PASS_FILTER, COUNT = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
  static int max_count(const char *op, int *n) {
    FV_CUDNN_TRY(op, cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(handle, n));
    return FV_OK;
  }
  static int heuristic(const char *op, const conv_plan *p, int n, int *found, perf_t *perf) {
    FV_CUDNN_TRY(op, cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle, p->x, p->y, p->conv[PASS], p->w, n, found,
                                                                   perf));
    return FV_OK;
  }
  static int find(const char *op, const conv_plan *p, const conv_io &io, void *result, int n, int *found,
                  perf_t *perf, void *ws, size_t ws_bytes) {
    FV_CUDNN_TRY(op, cudnnFindConvolutionBackwardFilterAlgorithmEx(handle, p->x, io.x, p->y, io.dy, p->conv[PASS],
                                                                   p->w, result, n, found, perf, ws, ws_bytes));
    return FV_OK;
  }
  static int ws_size(const char *op, const conv_plan *p, algo_t algo, size_t *bytes) {
    FV_CUDNN_TRY(op, cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, p->x, p->y, p->conv[PASS], p->w, algo,
                                                                    bytes));
    return FV_OK;
  }
  static cudnnStatus_t probe_ws(const conv_plan *p, algo_t algo, size_t *bytes) {
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, p->x, p->y, p->conv[PASS], p->w, algo, bytes);
  }
};

enum { PERF_MAX = 64 };                                /* results asked of cuDNN at most */
static const size_t SEARCH_WS_CAP = (size_t)1 << 30;  /* the search workspace's cap: 1 GiB */
static const size_t SEARCH_WS_MIN = (size_t)1 << 20;  /* halving stops here: then none */

/* Whether a result may be used, and the math type to run it with (*math). Never
 * CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION (operands rounded to half precision); for float32
 * with TF32 off, only results that do not ask for tensor cores, run with CUDNN_FMA_MATH;
 * under bf16 autocast any other math type (tensor cores or not, float accumulation). */
template <typename Perf> static int usable(const Perf &r, const conv_plan *p, cudnnMathType_t *math) {
  if (r.status != CUDNN_STATUS_SUCCESS || r.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return 0;
  if (!p->key.v[KEY_F64] && !p->key.v[KEY_BF16] && !p->key.v[KEY_TF32]) {
    if (r.mathType == CUDNN_TENSOR_OP_MATH) return 0;
    *math = CUDNN_FMA_MATH;
    return 1;
  }
  *math = r.mathType;
  return 1;
}

/* The result to take: the first usable one in cuDNN's order (timed = 0, the heuristic),
 * or the fastest usable one (timed = 1); with prefer_det, a deterministic result within
 * 10% of the fastest time replaces a non-deterministic fastest. -1 when none is usable. */
template <typename Perf> static int pick(const Perf *r, int n, const conv_plan *p, int timed, int prefer_det) {
  cudnnMathType_t math;
  int best = -1;
  for (int k = 0; k < n; k++) {
    if (!usable(r[k], p, &math)) continue;
    if (!timed) return k;
    if (best < 0 || r[k].time < r[best].time) best = k;
  }
  if (best >= 0 && prefer_det && r[best].determinism != CUDNN_DETERMINISTIC) {
    int det = -1;
    for (int k = 0; k < n; k++)
      if (usable(r[k], p, &math) && r[k].determinism == CUDNN_DETERMINISTIC &&
          r[k].time <= 1.1f * r[best].time && (det < 0 || r[k].time < r[det].time))
        det = k;
    if (det >= 0) best = det;
  }
  return best;
}

/* Times the pass's algorithms with cudnnFind*AlgorithmEx. result: where trial outputs go
 * (the forward call's own output), or NULL for a scratch buffer of result_bytes. Any
 * failure comes back as a status with its message (the caller falls back). */
template <typename T>
static int search(const char *op, const conv_plan *p, const conv_io &io, void *result, size_t result_bytes,
                  const typename T::perf_t *heur, int nheur, int n, typename T::perf_t *found, int *nfound,
                  size_t *ws_given) {
  device_buffer scratch;
  if (!result) {
    FV_TRY(scratch.get(op, result_bytes));
    result = scratch.p;
  }
  size_t want = 0;
  for (int a = 0; a < T::COUNT; a++) {
    size_t bytes = 0;
    if (T::probe_ws(p, (typename T::algo_t)a, &bytes) == CUDNN_STATUS_SUCCESS && bytes > want) want = bytes;
  }
  for (int k = 0; k < nheur; k++)
    if (heur[k].status == CUDNN_STATUS_SUCCESS && heur[k].memory > want) want = heur[k].memory;
  size_t free_bytes = 0, total_bytes = 0;
  FV_CUDA_TRY(op, cudaMemGetInfo(&free_bytes, &total_bytes));
  if (want > SEARCH_WS_CAP) want = SEARCH_WS_CAP;
  if (want > free_bytes / 10 * 9) want = free_bytes / 10 * 9;
  device_buffer ws;
  /* the full size first; on failure half as much, down to SEARCH_WS_MIN, then none */
  while (want && ws.get(op, want) != FV_OK) want = want / 2 >= SEARCH_WS_MIN ? want / 2 : 0;
  FV_TRY(T::find(op, p, io, result, n, nfound, found, ws.p, ws.bytes));
  *ws_given = ws.bytes;
  return FV_OK;
}

static void print_choice(const conv_plan *p, int pass, float ms, const char *how) {
  const int64_t *v = p->key.v;
  const conv_choice &ch = p->choice[pass];
  const char *type = v[KEY_F64]    ? "float64"
                     : v[KEY_BF16] ? "float32 bf16-autocast"
                     : v[KEY_TF32] ? "float32 tf32"
                                   : "float32 no-tf32";
  static const char *const math_names[] = {"default", "tensor-op", "tensor-op-conversion", "fma"};
  fprintf(stderr,
          "fovea cudnn: conv2d %s %lldx%lldx%lldx%lld * %lldx%lldx%lldx%lld stride %lld,%lld pad %lld,%lld "
          "dilation %lld,%lld groups %lld %s: algo %d, math %s, %.4f ms, workspace %zu B (%s)\n",
          pass_names[pass], (long long)v[0], (long long)v[1], (long long)v[2], (long long)v[3], (long long)v[4],
          (long long)(v[1] / v[15]), (long long)v[5], (long long)v[6], (long long)v[9], (long long)v[10],
          (long long)v[11], (long long)v[12], (long long)v[13], (long long)v[14], (long long)v[15],
          type, ch.algo, (int)ch.math >= 0 && (int)ch.math < 4 ? math_names[(int)ch.math] : "?", (double)ms, ch.ws,
          how);
}

/* Makes r the pass's choice: its math type on the pass's descriptor, its workspace (the
 * larger of cuDNN's size for it and the result's own figure). */
template <typename T> static int adopt(const char *op, conv_plan *p, const typename T::perf_t &r) {
  cudnnMathType_t math = base_math(p);
  (void)usable(r, p, &math);
  FV_CUDNN_TRY(op, cudnnSetConvolutionMathType(p->conv[T::PASS], math));
  size_t ws = 0;
  FV_TRY(T::ws_size(op, p, r.algo, &ws));
  conv_choice &ch = p->choice[T::PASS];
  ch.algo = (int)r.algo;
  ch.math = math;
  ch.ws = r.memory > ws ? r.memory : ws;
  ch.have = 1;
  return FV_OK;
}

/* Chooses the pass's algorithm for the plan once (see the header): the timed search's
 * pick unless FOVEA_CUDNN_BENCHMARK=0, then (when there is none, or it cannot be adopted)
 * the heuristic's usable results in cuDNN's order; the first one adopted wins, and the
 * errors of the ones before it are dropped. */
template <typename T>
static int choose(const char *op, conv_plan *p, const conv_io &io, void *result, size_t result_bytes) {
  if (p->choice[T::PASS].have) return FV_OK;
  read_settings();
  /* an earlier try that failed after setting a math type must not leave it behind */
  FV_CUDNN_TRY(op, cudnnSetConvolutionMathType(p->conv[T::PASS], base_math(p)));
  int n = 0;
  FV_TRY(T::max_count(op, &n));
  if (n < T::COUNT) n = T::COUNT;
  if (n > PERF_MAX) n = PERF_MAX;
  typename T::perf_t heur[PERF_MAX], found[PERF_MAX];
  int nheur = 0, nfound = 0;
  FV_TRY(T::heuristic(op, p, n, &nheur, heur));
  const saved_error before;
  char why[400];
  snprintf(why, sizeof why, "FOVEA_CUDNN_BENCHMARK=0");
  if (benchmark_on) {
    size_t ws_given = 0;
    if (search<T>(op, p, io, result, result_bytes, heur, nheur, n, found, &nfound, &ws_given) == FV_OK) {
      const int k = pick(found, nfound, p, 1, T::PASS != PASS_FWD);
      if (k >= 0 && adopt<T>(op, p, found[k]) == FV_OK) {
        before.restore();
        if (verbose_on) {
          char how[200];
          snprintf(how, sizeof how, "timed: %d results, search workspace %zu B", nfound, ws_given);
          print_choice(p, T::PASS, found[k].time, how);
        }
        return FV_OK;
      }
      if (k < 0) snprintf(why, sizeof why, "none of the %d timed results is usable", nfound);
      else snprintf(why, sizeof why, "the timed choice failed: %s", fv_last_error());
    } else {
      snprintf(why, sizeof why, "the search failed: %s", fv_last_error());
    }
  }
  int tried = 0, status = FV_OK;
  cudnnMathType_t math;
  for (int k = 0; k < nheur; k++) {
    if (!usable(heur[k], p, &math)) continue;
    tried++;
    status = adopt<T>(op, p, heur[k]);
    if (status == FV_OK) {
      before.restore();
      if (verbose_on) {
        char how[500];
        snprintf(how, sizeof how, "heuristic: %s", why);
        print_choice(p, T::PASS, -1.0f, how);
      }
      return FV_OK;
    }
  }
  if (tried) return status; /* the last candidate's checked failure */
  return fv_fail(FV_ERR_DEVICE, "%s: cuDNN has no %s algorithm for input %lldx%lldx%lldx%lld, %lld outputs, "
                 "%lldx%lld kernel, groups %lld", op, pass_names[T::PASS], (long long)p->key.v[0],
                 (long long)p->key.v[1], (long long)p->key.v[2], (long long)p->key.v[3], (long long)p->key.v[4],
                 (long long)p->key.v[5], (long long)p->key.v[6], (long long)p->key.v[15]);
}

/* choose for the pass by its number (cudnn_plan.cuh) */
int choose_algo(const char *op, conv_plan *p, int pass, const conv_io &io, void *result, size_t result_bytes) {
  switch (pass) {
  case PASS_FWD: return choose<pass_fwd>(op, p, io, result, result_bytes);
  case PASS_DATA: return choose<pass_data>(op, p, io, result, result_bytes);
  default: return choose<pass_filter>(op, p, io, result, result_bytes);
  }
}

} // namespace fv_cudnn

#endif
