/* profile.cu: the opt-in per-op profiler of the CUDA backend, to see where a training
 * step's GPU time goes. FOVEA_CUDA_PROFILE set to anything but "" or "0" when
 * fv_cuda_init runs (it is read there, once) makes fv_cuda_profile_install replace every
 * kernel entry of the backend table (all but `supports`) with a wrapper that records a
 * cudaEvent on fv_cuda_stream before and after the call, waits for the end event and
 * adds to the op's row: one call, the events' elapsed GPU milliseconds
 * (cudaEventElapsedTime) and the host wall time of the call, the wait included.
 * Otherwise the table holds the kernels themselves and profiling costs nothing.
 *
 * Each profiled call synchronizes, so a profiled run is slower than a plain one and the
 * host column counts the wait (host ms - gpu ms is roughly the host overhead of the
 * call); an asynchronous fault then shows up at the op that caused it. A call made from
 * inside another profiled call (none does so today) is counted in the outer one only,
 * so the rows add up to the total. Single-threaded, as the backend is, but for the
 * pinned host memory entries (host_alloc, host_free), which the loader's worker threads
 * call: those are counted with their host time only (no GPU work, no events), under a
 * lock, and never synchronize.
 *
 * Rows: copy, fill, to_host, from_host, upload, alloc, free, host_alloc, host_free,
 * matmul, adam_step, sgd_step, grad_norm_parts, grad_scale (one call each per
 * clip_grad_norm, for all its gradients), and by op code (core/ops.c's names): "binary add",
 * "binary_scalar mul", "unary relu", "reduce sum", "random randn", "nn conv2d forward",
 * "nn batch_norm backward", "nn nam_attention forward", ...
 * The report and reset: fv_cuda_profile_report, fv_cuda_profile_reset (fovea_cuda.h).
 *
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/profile.cu (see backend.cu)
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mutex>

#include "common.cuh"

namespace {

/* The rows: a kind, and for the kinds that take one, the op code (FV_OP_COUNT: invalid). */
enum row_kind {
  K_COPY, K_FILL, K_TO_HOST, K_FROM_HOST, K_UPLOAD, K_ALLOC, K_FREE, K_HOST_ALLOC, K_HOST_FREE, K_MATMUL, K_ADAM,
  K_SGD, K_NORM, K_SCALE, K_BINARY, K_BINARY_SCALAR, K_UNARY, K_REDUCE, K_RANDOM, K_NN_FORWARD, K_NN_BACKWARD,
  K_COUNT
};
const char *const kind_names[K_COUNT] = {
    "copy", "fill", "to_host", "from_host", "upload", "alloc", "free", "host_alloc", "host_free", "matmul",
    "adam_step", "sgd_step",
    "grad_norm_parts", "grad_scale", "binary", "binary_scalar", "unary", "reduce", "random", "nn", "nn",
};
const int FIRST_BY_OP = K_BINARY;
const int OPS = FV_OP_COUNT + 1;

struct row {
  char name[64];   /* made on the row's first call */
  int64_t calls;
  double gpu_ms, host_ms;
};
row rows[K_COUNT * (FV_OP_COUNT + 1)];

int enabled;
std::mutex rows_lock;        /* the rows, for the host-only entries called from other threads */
int depth;                   /* profiled calls in progress (nested ones are not timed) */
cudaEvent_t ev_start, ev_end;
fv_backend kernels;          /* the table as backend.cu filled it */

int slot_of(int kind, int op) {
  if (kind < FIRST_BY_OP) return kind * OPS;
  return kind * OPS + (op >= 0 && op < FV_OP_COUNT ? op : FV_OP_COUNT);
}

row *row_of(int kind, int op) {
  row *r = &rows[slot_of(kind, op)];
  if (!r->name[0]) {
    if (kind < FIRST_BY_OP)
      snprintf(r->name, sizeof r->name, "%s", kind_names[kind]);
    else if (op < 0 || op >= FV_OP_COUNT) /* one row for every invalid code, named by the first */
      snprintf(r->name, sizeof r->name, "%s op %d%s", kind_names[kind], op,
               kind == K_NN_FORWARD ? " forward" : kind == K_NN_BACKWARD ? " backward" : "");
    else if (kind == K_NN_FORWARD || kind == K_NN_BACKWARD)
      snprintf(r->name, sizeof r->name, "nn %s %s", fv_op_name(op), kind == K_NN_FORWARD ? "forward" : "backward");
    else
      snprintf(r->name, sizeof r->name, "%s %s", kind_names[kind], fv_op_name(op));
  }
  return r;
}

double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* One profiled call: begin before it, finish after it with its status. */
struct span {
  int timed;
  cudaError_t err;
  double host0;
};

span begin(void) {
  span s;
  s.timed = depth++ == 0;
  s.err = cudaSuccess;
  s.host0 = now_ms();
  if (s.timed) s.err = cudaEventRecord(ev_start, fv_cuda_stream);
  return s;
}

/* Adds the call to its row and returns the call's status; when the call succeeded but
 * the timing failed (an asynchronous fault of this or an earlier op, usually), returns
 * that failure instead if report is set (a void or pointer entry cannot say it). */
int finish(span s, int kind, int op, int status, int report) {
  depth--;
  if (!s.timed) return status;
  cudaError_t err = s.err;
  float gpu = 0;
  if (err == cudaSuccess) err = cudaEventRecord(ev_end, fv_cuda_stream);
  if (err == cudaSuccess) err = cudaEventSynchronize(ev_end);
  double host = now_ms() - s.host0;
  if (err == cudaSuccess) err = cudaEventElapsedTime(&gpu, ev_start, ev_end);
  row *r = row_of(kind, op);
  r->calls++;
  r->gpu_ms += gpu;
  r->host_ms += host;
  if (err != cudaSuccess) {
    if (status == FV_OK && report) return fv_cuda_fail(err, r->name, "cuda profile: timing events", __FILE__, __LINE__);
    (void)cudaGetLastError();
  }
  return status;
}

/* ---- the wrappers: one per table entry ---- */
void *p_alloc(size_t bytes) {
  span s = begin();
  void *p = kernels.alloc(bytes);
  finish(s, K_ALLOC, 0, p ? FV_OK : FV_ERR_MEMORY, 0);
  return p;
}
void p_free(void *data, size_t bytes) {
  span s = begin();
  kernels.free(data, bytes);
  finish(s, K_FREE, 0, FV_OK, 0);
}
/* host_alloc and host_free: host time only (any thread; no GPU work to time) */
void host_only(int kind, double host0) {
  double host = now_ms() - host0;
  std::lock_guard<std::mutex> guard(rows_lock);
  row *r = row_of(kind, 0);
  r->calls++;
  r->host_ms += host;
}
void *p_host_alloc(size_t bytes) {
  double host0 = now_ms();
  void *p = kernels.host_alloc(bytes);
  host_only(K_HOST_ALLOC, host0);
  return p;
}
void p_host_free(void *ptr, size_t bytes) {
  double host0 = now_ms();
  kernels.host_free(ptr, bytes);
  host_only(K_HOST_FREE, host0);
}
int p_upload(void **data, const fv_tensor *src, size_t bytes) {
  span s = begin();
  return finish(s, K_UPLOAD, 0, kernels.upload(data, src, bytes), 1);
}
int p_copy(fv_tensor *dst, const fv_tensor *src) {
  span s = begin();
  return finish(s, K_COPY, 0, kernels.copy(dst, src), 1);
}
int p_fill(fv_tensor *dst, double value) {
  span s = begin();
  return finish(s, K_FILL, 0, kernels.fill(dst, value), 1);
}
int p_to_host(void *host, const fv_tensor *src, size_t bytes) {
  span s = begin();
  return finish(s, K_TO_HOST, 0, kernels.to_host(host, src, bytes), 1);
}
int p_from_host(fv_tensor *dst, const void *host, size_t bytes) {
  span s = begin();
  return finish(s, K_FROM_HOST, 0, kernels.from_host(dst, host, bytes), 1);
}
int p_binary(int op, fv_tensor *out, const fv_tensor *a, const fv_tensor *b) {
  span s = begin();
  return finish(s, K_BINARY, op, kernels.binary(op, out, a, b), 1);
}
int p_binary_scalar(int op, fv_tensor *out, const fv_tensor *a, double v, int scalar_first) {
  span s = begin();
  return finish(s, K_BINARY_SCALAR, op, kernels.binary_scalar(op, out, a, v, scalar_first), 1);
}
int p_unary(int op, fv_tensor *out, const fv_tensor *a, double lo, double hi) {
  span s = begin();
  return finish(s, K_UNARY, op, kernels.unary(op, out, a, lo, hi), 1);
}
int p_reduce(int op, fv_tensor *out, fv_tensor *index, const fv_tensor *a, int64_t outer, int64_t n, int64_t inner,
             int correction, int index_base) {
  span s = begin();
  return finish(s, K_REDUCE, op, kernels.reduce(op, out, index, a, outer, n, inner, correction, index_base), 1);
}
int p_matmul(fv_tensor *out, const fv_tensor *a, const fv_tensor *b) {
  span s = begin();
  return finish(s, K_MATMUL, 0, kernels.matmul(out, a, b), 1);
}
int p_random(int op, fv_tensor *out, uint64_t seed, uint64_t offset) {
  span s = begin();
  return finish(s, K_RANDOM, op, kernels.random(op, out, seed, offset), 1);
}
int p_nn_forward(const fv_nn_call *call) {
  span s = begin();
  return finish(s, K_NN_FORWARD, call->op, kernels.nn_forward(call), 1);
}
int p_nn_backward(const fv_nn_call *call) {
  span s = begin();
  return finish(s, K_NN_BACKWARD, call->op, kernels.nn_backward(call), 1);
}
int p_adam_step(int n, fv_tensor *const *params, fv_tensor *const *exp_avg, fv_tensor *const *exp_avg_sq,
                fv_tensor *const *max_exp_avg_sq, const fv_adam_coef *c) {
  span s = begin();
  return finish(s, K_ADAM, 0, kernels.adam_step(n, params, exp_avg, exp_avg_sq, max_exp_avg_sq, c), 1);
}
int p_sgd_step(int n, fv_tensor *const *params, fv_tensor *const *momentum_buf, const fv_sgd_coef *c) {
  span s = begin();
  return finish(s, K_SGD, 0, kernels.sgd_step(n, params, momentum_buf, c), 1);
}
int p_grad_norm_parts(int n, const fv_tensor *const *grads, int kind, double p, double *parts) {
  span s = begin();
  return finish(s, K_NORM, 0, kernels.grad_norm_parts(n, grads, kind, p, parts), 1);
}
int p_grad_scale(int n, fv_tensor *const *grads, double coef) {
  span s = begin();
  return finish(s, K_SCALE, 0, kernels.grad_scale(n, grads, coef), 1);
}

/* Appends to the report as snprintf would: *len counts every character, buf gets what fits. */
void add(char *buf, size_t size, size_t *len, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void add(char *buf, size_t size, size_t *len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = *len < size ? vsnprintf(buf + *len, size - *len, fmt, ap) : vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n > 0) *len += (size_t)n;
}

int by_gpu_time(const void *x, const void *y) {
  const row *a = *(const row *const *)x, *b = *(const row *const *)y;
  if (a->gpu_ms != b->gpu_ms) return a->gpu_ms < b->gpu_ms ? 1 : -1;
  if (a->host_ms != b->host_ms) return a->host_ms < b->host_ms ? 1 : -1;
  return strcmp(a->name, b->name);
}

}  // namespace

extern "C" int fv_cuda_profile_install(fv_backend *table) {
  const char *env = getenv("FOVEA_CUDA_PROFILE");
  if (!env || !*env || strcmp(env, "0") == 0) return FV_OK;
  if (!ev_start) FV_CUDA_TRY("cuda profile", cudaEventCreate(&ev_start));
  if (!ev_end) FV_CUDA_TRY("cuda profile", cudaEventCreate(&ev_end));
  kernels = *table;
  table->alloc = p_alloc;
  table->free = p_free;
  table->copy = p_copy;
  table->fill = p_fill;
  table->to_host = p_to_host;
  table->from_host = p_from_host;
  if (table->host_alloc) table->host_alloc = p_host_alloc;
  if (table->host_free) table->host_free = p_host_free;
  if (table->upload) table->upload = p_upload;
  table->binary = p_binary;
  table->binary_scalar = p_binary_scalar;
  table->unary = p_unary;
  table->reduce = p_reduce;
  table->matmul = p_matmul;
  table->random = p_random;
  table->nn_forward = p_nn_forward;
  table->nn_backward = p_nn_backward;
  table->adam_step = p_adam_step;
  table->sgd_step = p_sgd_step;
  table->grad_norm_parts = p_grad_norm_parts;
  table->grad_scale = p_grad_scale;
  enabled = 1;
  return FV_OK;
}

extern "C" void fv_cuda_profile_reset(void) {
  std::lock_guard<std::mutex> guard(rows_lock);
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    rows[i].calls = 0;
    rows[i].gpu_ms = rows[i].host_ms = 0;
  }
}

extern "C" int fv_cuda_profile_report(char *buf, size_t size) {
  if (!enabled) {
    fv_fail(FV_ERR_ARGUMENT, "cuda profile: the profiler is off (set FOVEA_CUDA_PROFILE=1 in the environment "
                             "before the CUDA backend loads)");
    return -1;
  }
  enum { N = sizeof rows / sizeof rows[0] };
  static const row *used[N];
  std::lock_guard<std::mutex> guard(rows_lock);
  int count = 0, width = 2;
  int64_t calls = 0;
  double gpu = 0, host = 0;
  for (int i = 0; i < N; i++) {
    if (!rows[i].calls) continue;
    used[count++] = &rows[i];
    calls += rows[i].calls;
    gpu += rows[i].gpu_ms;
    host += rows[i].host_ms;
    int w = (int)strlen(rows[i].name);
    if (w > width) width = w;
  }
  qsort(used, (size_t)count, sizeof used[0], by_gpu_time);
  size_t len = 0;
  if (buf && size) buf[0] = '\0';
  else size = 0;
  add(buf, size, &len,
      "cuda profile since the start or the last reset: %lld calls, %.3f ms on the GPU, %.3f ms on the host "
      "(every call synchronized)\n",
      (long long)calls, gpu, host);
  add(buf, size, &len, "%-*s %9s %12s %12s %12s %7s\n", width, "op", "calls", "gpu ms", "host ms", "gpu ms/call",
      "share");
  for (int i = 0; i < count; i++) {
    const row *r = used[i];
    add(buf, size, &len, "%-*s %9lld %12.3f %12.3f %12.4f %6.1f%%\n", width, r->name, (long long)r->calls, r->gpu_ms,
        r->host_ms, r->gpu_ms / (double)r->calls, gpu > 0 ? 100.0 * r->gpu_ms / gpu : 0.0);
  }
  add(buf, size, &len, "%-*s %9lld %12.3f %12.3f %12s %6.1f%%\n", width, "total", (long long)calls, gpu, host, "",
      gpu > 0 ? 100.0 : 0.0);
  return (int)len;
}
