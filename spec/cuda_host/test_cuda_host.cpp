/* test_cuda_host.cpp: the host logic of the CUDA backend's caching allocator
 * (cuda/allocator.cu over cuda/block_pool.c), pinned memory and asynchronous uploads
 * (cuda/transfer.cu) and side stream (cuda/side_stream.cu), with its error reporter
 * (cuda/errors.cu), driven against a fake CUDA runtime (fake_cudart.cpp, linked in place
 * of libcudart): no GPU is needed, only nvcc to compile the .cu files. The fake defers
 * every queued copy until the test runs the stream and enforces waits on events, so the
 * checks see what is queued on which stream, in which order, what is held until which
 * event, and what the runtime is left with (memory, events, its last error).
 *
 * Built by `make cuda-host-test` (build/spec/cuda_host/test_cuda_host; with the build's
 * SANITIZE flags under `make sanitize`) and run by spec/cuda_host_spec.lua, one process
 * per scenario (each allocator reads its environment once):
 *   test_cuda_host main          the allocator, pinned memory, uploads, side stream
 *   FAKE_NOTREADY_CLEAN=1 test_cuda_host main      a runtime that leaves no "not ready"
 *   FOVEA_NO_ALLOC_CACHE=1 test_cuda_host nocache  the allocators with caching off
 *   test_cuda_host exitdrain     uploads left in flight at exit: the drain releases them
 *                                (also with FOVEA_NO_ALLOC_CACHE=1)
 *   test_cuda_host threads       pinned allocations from threads beside uploads
 *                                (also with FOVEA_NO_ALLOC_CACHE=1)
 *   test_cuda_host fragmentation a cached block too big to lend is lent when no new
 *                                segment can be had
 * FOVEA_NO_ALLOC_CACHE must be unset or 0 for all but nocache. Each prints
 * "<scenario>: N checks, 0 failed" and exits 0 when every check passed. Under valgrind
 * and ThreadSanitizer (too slow for the specs): spec/cuda_host/run_all.sh. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_cudart.h"
extern "C" {
#include "internal.h"
/* cuda/allocator.cu, transfer.cu and side_stream.cu (common.cuh and fovea_cuda.h declare
 * them for the backend; those headers hold CUDA code the host compiler does not take) */
void *fv_cuda_alloc(size_t bytes);
void fv_cuda_free(void *data, size_t bytes);
void *fv_cuda_alloc_on(size_t bytes, cudaStream_t stream);
void fv_cuda_empty_cache(void);
int fv_cuda_memory_stats(int64_t *allocated, int64_t *reserved, int64_t *peak);
void fv_cuda_reset_peak(void);
void *fv_cuda_host_alloc(size_t bytes);
void fv_cuda_host_free(void *ptr, size_t bytes);
int fv_cuda_upload(void **data, const fv_tensor *src, size_t bytes);
int fv_cuda_uploads_settle(void);
int fv_cuda_pinned_stats(int64_t *in_use, int64_t *cached, int64_t *allocations, int64_t *in_flight);
void fv_cuda_pinned_empty_cache(void);
int fv_cuda_fork(const char *op, cudaStream_t *stream);
int fv_cuda_join(const char *op);
}

static const size_t KiB = 1024, MiB = 1024 * 1024;
static int failed, checked;

#define CHECK(cond)                                                              \
  do {                                                                           \
    checked++;                                                                   \
    if (!(cond)) {                                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
      failed++;                                                                  \
    }                                                                            \
  } while (0)
#define CHECK_EQ(a, b)                                                                                       \
  do {                                                                                                       \
    checked++;                                                                                               \
    long long a_ = (long long)(a), b_ = (long long)(b);                                                      \
    if (a_ != b_) {                                                                                          \
      fprintf(stderr, "%s:%d: CHECK_EQ failed: %s = %lld, %s = %lld\n", __FILE__, __LINE__, #a, a_, #b, b_); \
      failed++;                                                                                              \
    }                                                                                                        \
  } while (0)
/* the last error message recorded by fv_fail contains sub */
#define CHECK_MSG(sub)                                                                                  \
  do {                                                                                                  \
    checked++;                                                                                          \
    if (!strstr(fv_last_error(), (sub))) {                                                              \
      fprintf(stderr, "%s:%d: message lacks \"%s\": %s\n", __FILE__, __LINE__, (sub), fv_last_error()); \
      failed++;                                                                                         \
    }                                                                                                   \
  } while (0)

/* ---- reading the allocators' statistics and the fake's log ---- */

struct device_memory {
  int64_t allocated, reserved, peak;
};
static device_memory device_memory_now(void) {
  device_memory m;
  fv_cuda_memory_stats(&m.allocated, &m.reserved, &m.peak);
  return m;
}

struct pinned_memory {
  int64_t in_use, cached, allocations, in_flight;
};
static pinned_memory pinned_memory_now(void) {
  pinned_memory p;
  fv_cuda_pinned_stats(&p.in_use, &p.cached, &p.allocations, &p.in_flight);
  return p;
}

/* calls of fn logged since log index mark */
static int calls_since(long mark, fake_fn fn) {
  int n = 0;
  for (long i = mark; i < fake_log_size(); i++) n += fake_log_at(i).fn == fn;
  return n;
}

/* the log index of the nth call of fn since mark (counting from 0), the call in *out; -1 if none */
static int nth_call_since(long mark, fake_fn fn, int nth, fake_call *out) {
  for (long i = mark; i < fake_log_size(); i++) {
    fake_call c = fake_log_at(i);
    if (c.fn == fn && nth-- == 0) {
      if (out) *out = c;
      return (int)i;
    }
  }
  return -1;
}

static long successful_mallocs(void) { return fake_calls(FAKE_MALLOC) - fake_failures(FAKE_MALLOC); }

/* the cudaMalloc block (the allocator's segment) that p lies in */
static void *device_segment_of(const void *p) {
  void *base = NULL;
  return fake_device_block_of(p, &base, NULL) ? base : NULL;
}

/* the compute stream runs everything queued; then wholly free segments go back */
static void run_compute_stream_and_empty_cache(void) {
  fake_stream_run(0, 0);
  fv_cuda_empty_cache();
}

/* ---- a backend table over these files, with the CPU's copies on the fake's host memory ---- */

static long host_allocs, host_frees; /* through the table: pinned tensors */
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;

static void *counting_host_alloc(size_t bytes) {
  void *p = fv_cuda_host_alloc(bytes);
  pthread_mutex_lock(&count_lock);
  if (p) host_allocs++;
  pthread_mutex_unlock(&count_lock);
  return p;
}

static void counting_host_free(void *p, size_t bytes) {
  pthread_mutex_lock(&count_lock);
  host_frees++;
  pthread_mutex_unlock(&count_lock);
  fv_cuda_host_free(p, bytes);
}

static int copy_and_fill_only(int op, int dtype) {
  (void)dtype;
  return op == FV_OP_COPY || op == FV_OP_FILL;
}

/* a "kernel" on the compute stream: runs (on the host) once the stream has run what it
 * waits for */
static int copy_on_compute_stream(fv_tensor *dst, const fv_tensor *src) {
  fake_stream_run(0, 1);
  return fv_cpu_backend.copy(dst, src);
}

static int fill_on_compute_stream(fv_tensor *dst, double v) {
  fake_stream_run(0, 1);
  return fv_cpu_backend.fill(dst, v);
}

static char *data_of(const fv_tensor *t) {
  return (char *)t->storage->data + t->offset * fv_dtype_size(t->scalar_type);
}

static int copy_to_host(void *host, const fv_tensor *src, size_t bytes) {
  if (cudaMemcpy(host, data_of(src), bytes, cudaMemcpyDeviceToHost) != cudaSuccess)
    return fv_fail(FV_ERR_DEVICE, "to_host");
  return FV_OK;
}

static int copy_from_host(fv_tensor *dst, const void *host, size_t bytes) {
  if (cudaMemcpy(data_of(dst), host, bytes, cudaMemcpyHostToDevice) != cudaSuccess)
    return fv_fail(FV_ERR_DEVICE, "from_host");
  return FV_OK;
}

static fv_backend table;

static void register_backend(void) {
  table.name = "cuda";
  table.device_type = FV_CUDA;
  table.supports = copy_and_fill_only;
  table.alloc = fv_cuda_alloc;
  table.free = fv_cuda_free;
  table.copy = copy_on_compute_stream;
  table.fill = fill_on_compute_stream;
  table.to_host = copy_to_host;
  table.from_host = copy_from_host;
  table.host_alloc = counting_host_alloc;
  table.host_free = counting_host_free;
  table.upload = fv_cuda_upload;
  if (fv_backend_register(&table)) {
    fprintf(stderr, "register: %s\n", fv_last_error());
    exit(2);
  }
}

/* a pinned float32 tensor of n values */
static fv_tensor *pinned_full(int64_t n, double value) {
  fv_tensor *t, *p;
  int64_t shape[1] = {n};
  if (fv_full(&t, 1, shape, value, FV_FLOAT32, FV_CPU) || fv_pin_memory(&p, t, FV_CUDA)) {
    fprintf(stderr, "pinned_full: %s\n", fv_last_error());
    exit(2);
  }
  fv_tensor_release(t);
  return p;
}

/* reads a device tensor as a kernel on the compute stream would: after what it waits for */
static int all_equal(const fv_tensor *g, float v) {
  fake_stream_run(0, 1);
  const float *d = (const float *)g->storage->data + g->offset;
  for (int64_t i = 0; i < fv_tensor_numel(g); i++)
    if (d[i] != v) return 0;
  return 1;
}

static cudaStream_t other_stream; /* a stand-in copy stream, made by main */

/* ---- the compute stream's pool ---- */

static void compute_stream_blocks_are_rounded_split_and_reused(void) {
  device_memory m0 = device_memory_now();
  CHECK_EQ(m0.allocated, 0);
  CHECK_EQ(m0.reserved, 0);
  long mallocs = fake_calls(FAKE_MALLOC), mark = fake_log_size();
  char *a = (char *)fv_cuda_alloc(1000);
  CHECK(a != NULL);
  CHECK_EQ(fake_calls(FAKE_MALLOC), mallocs + 1);
  fake_call c;
  CHECK(nth_call_since(mark, FAKE_MALLOC, 0, &c) >= 0 && c.bytes == 2 * MiB);
  device_memory m = device_memory_now();
  CHECK_EQ(m.allocated, 1024);
  CHECK_EQ(m.reserved, 2 * MiB);
  CHECK_EQ(m.peak, 1024);
  char *b = (char *)fv_cuda_alloc(1000);
  CHECK(b == a + 1024); /* split off the same segment */
  fv_cuda_free(a, 1000);
  CHECK_EQ(device_memory_now().allocated, 1024);
  char *c2 = (char *)fv_cuda_alloc(600);
  CHECK(c2 == a); /* reused at once on the compute stream */
  CHECK_EQ(fake_calls(FAKE_MALLOC), mallocs + 1);
  /* large: a 20 MiB segment, split */
  char *d = (char *)fv_cuda_alloc(3 * MiB);
  CHECK_EQ(fake_calls(FAKE_MALLOC), mallocs + 2);
  CHECK(nth_call_since(mark, FAKE_MALLOC, 1, &c) >= 0 && c.bytes == 20 * MiB);
  char *e = (char *)fv_cuda_alloc(3 * MiB);
  CHECK(e == d + 3 * MiB);
  /* the 14 MiB rest is not split for 13.5 MiB (0.5 MiB would be left) */
  char *f = (char *)fv_cuda_alloc(13 * MiB + 512 * KiB);
  CHECK(f == e + 3 * MiB);
  CHECK_EQ(fake_calls(FAKE_MALLOC), mallocs + 2);
  CHECK_EQ(device_memory_now().allocated, 2048 + 20 * MiB);
  /* from 10 MiB on, a segment of its own rounded to 2 MiB */
  char *g = (char *)fv_cuda_alloc(25 * MiB + 1);
  CHECK(nth_call_since(mark, FAKE_MALLOC, 2, &c) >= 0 && c.bytes == 26 * MiB && c.dst == g);
  m = device_memory_now();
  CHECK_EQ(m.allocated, 2048 + 20 * MiB + 26 * MiB); /* 1 MiB - 512 left: not split */
  CHECK_EQ(m.reserved, 48 * MiB);
  CHECK_EQ(m.peak, m.allocated);
  int64_t peak = m.peak;
  fv_cuda_free(b, 1000);
  fv_cuda_free(c2, 600);
  fv_cuda_free(d, 3 * MiB);
  fv_cuda_free(e, 3 * MiB);
  fv_cuda_free(f, 13 * MiB + 512 * KiB);
  fv_cuda_free(g, 25 * MiB + 1);
  m = device_memory_now();
  CHECK_EQ(m.allocated, 0);
  CHECK_EQ(m.reserved, 48 * MiB);
  CHECK_EQ(m.peak, peak);
  CHECK_EQ(fake_calls(FAKE_FREE), 0);
  fv_cuda_reset_peak();
  CHECK_EQ(device_memory_now().peak, 0);
  fv_cuda_empty_cache();
  CHECK_EQ(device_memory_now().reserved, 0);
  CHECK_EQ(fake_calls(FAKE_FREE), 3);
  CHECK_EQ(fake_device_used(), 0);
}

static void empty_cache_keeps_segments_in_use(void) {
  void *k = fv_cuda_alloc(100), *k2 = fv_cuda_alloc(5 * MiB);
  fv_cuda_free(k2, 5 * MiB);
  fv_cuda_empty_cache();
  device_memory m = device_memory_now();
  CHECK_EQ(m.allocated, 512);
  CHECK_EQ(m.reserved, 2 * MiB); /* reserved drops to the segments of what is allocated */
  fv_cuda_free(k, 100);
  fv_cuda_empty_cache();
  CHECK_EQ(device_memory_now().reserved, 0);
}

/* a wrong size, a second free, an unknown or interior pointer: recorded with fv_fail, no abort */
static void bad_frees_are_recorded_not_fatal(void) {
  void *k = fv_cuda_alloc(100);
  fv_clear_error();
  fv_cuda_free(k, 99);
  CHECK_EQ(fv_last_status(), FV_ERR_INTERNAL);
  CHECK_MSG("99 bytes given");
  CHECK_MSG("asked for 100");
  CHECK_EQ(device_memory_now().allocated, 0); /* freed all the same */
  fv_clear_error();
  fv_cuda_free(k, 100);
  CHECK_EQ(fv_last_status(), FV_ERR_INTERNAL);
  CHECK_MSG("no live block");
  fv_clear_error();
  fv_cuda_free((void *)0x1000, 8);
  CHECK_EQ(fv_last_status(), FV_ERR_INTERNAL);
  fv_clear_error();
  fv_cuda_free(NULL, 8);
  CHECK_EQ(fv_last_status(), FV_OK);
  char *in = (char *)fv_cuda_alloc(4096);
  fv_clear_error();
  fv_cuda_free(in + 512, 4096);
  CHECK_EQ(fv_last_status(), FV_ERR_INTERNAL);
  CHECK_EQ(device_memory_now().allocated, 4096);
  fv_cuda_free(in, 4096);
}

static void zero_byte_blocks_are_blocks(void) {
  fv_clear_error();
  void *z = fv_cuda_alloc(0);
  CHECK(z != NULL);
  fv_cuda_free(z, 0);
  CHECK_EQ(fv_last_status(), FV_OK);
  fv_cuda_empty_cache();
  CHECK_EQ(device_memory_now().reserved, 0);
  CHECK_EQ(fake_bad_calls(), 0);
}

/* ---- another stream's pool: blocks held until the compute stream passes their free ---- */

static void blocks_freed_from_another_stream_are_held(void) {
  long creates = fake_calls(FAKE_EVENT_CREATE);
  char *p = (char *)fv_cuda_alloc_on(1000, other_stream);
  CHECK(p != NULL);
  device_memory m = device_memory_now();
  CHECK_EQ(m.allocated, 1024);
  CHECK_EQ(m.reserved, 2 * MiB);
  long mark = fake_log_size();
  fv_cuda_free(p, 1000);
  fake_call rec;
  CHECK_EQ(calls_since(mark, FAKE_EVENT_RECORD), 1);
  CHECK(nth_call_since(mark, FAKE_EVENT_RECORD, 0, &rec) >= 0 && rec.stream == 0); /* on the compute stream */
  CHECK_EQ(calls_since(mark, FAKE_STREAM_SYNCHRONIZE), 0);
  cudaEvent_t ev = rec.event;
  CHECK(!fake_event_done(ev));
  m = device_memory_now();
  CHECK_EQ(m.allocated, 0); /* held: reserved, not allocated */
  CHECK_EQ(m.reserved, 2 * MiB);
  char *q = (char *)fv_cuda_alloc_on(1000, other_stream);
  CHECK_EQ(cudaPeekAtLastError(), cudaSuccess); /* a "not ready" poll leaves no error behind */
  CHECK(q != p);        /* held, not reused */
  CHECK(q == p + 1024); /* from the rest of the segment */
  /* freeing the held block again: an error, nothing recorded */
  long mark2 = fake_log_size();
  fv_clear_error();
  fv_cuda_free(p, 1000);
  CHECK_EQ(fv_last_status(), FV_ERR_INTERNAL);
  CHECK_EQ(calls_since(mark2, FAKE_EVENT_RECORD), 0);
  /* the compute stream's pool is another */
  char *r = (char *)fv_cuda_alloc(1000);
  CHECK(device_segment_of(r) != device_segment_of(p));
  /* the copy stream's progress does not release it; the compute stream's does */
  fake_stream_run(other_stream, 0);
  CHECK(!fake_event_done(ev));
  char *x = (char *)fv_cuda_alloc_on(1000, other_stream);
  CHECK(x != p);
  fake_stream_run(0, 0);
  CHECK(fake_event_done(ev));
  long queries = fake_calls(FAKE_EVENT_QUERY);
  char *s2 = (char *)fv_cuda_alloc_on(1000, other_stream);
  CHECK(s2 == p); /* polled, freed, reused by its stream */
  CHECK(fake_calls(FAKE_EVENT_QUERY) > queries);
  char *t = (char *)fv_cuda_alloc(1000);
  CHECK(device_segment_of(t) != device_segment_of(p)); /* never by the compute stream */
  fv_cuda_free(q, 1000);
  fv_cuda_free(s2, 1000);
  fv_cuda_free(x, 1000);
  fv_cuda_free(r, 1000);
  fv_cuda_free(t, 1000);
  m = device_memory_now();
  CHECK_EQ(m.allocated, 0);
  CHECK_EQ(m.reserved, 4 * MiB);
  /* empty_cache while held: the compute pool goes, the held segment stays */
  fv_cuda_empty_cache();
  CHECK_EQ(device_memory_now().reserved, 2 * MiB);
  run_compute_stream_and_empty_cache();
  CHECK_EQ(device_memory_now().reserved, 0);
  CHECK_EQ(fake_device_used(), 0);
  /* records and events reused: p's record served one of the later frees */
  CHECK_EQ(fake_calls(FAKE_EVENT_CREATE) - creates, 3);
}

/* the free waits for the compute stream instead, and the block is not held */
static void a_failed_event_record_makes_the_free_wait(void) {
  void *y = fv_cuda_alloc_on(1000, other_stream);
  fake_fail_next(FAKE_EVENT_RECORD, cudaErrorLaunchFailure, 1, 0);
  long syncs = fake_calls(FAKE_STREAM_SYNCHRONIZE);
  fv_cuda_free(y, 1000);
  CHECK_EQ(fake_calls(FAKE_STREAM_SYNCHRONIZE), syncs + 1);
  CHECK_EQ(cudaGetLastError(), cudaSuccess); /* cleared */
  CHECK_EQ(device_memory_now().allocated, 0);
  fv_cuda_empty_cache();
  CHECK_EQ(device_memory_now().reserved, 0); /* not held: its segment went */
}

/* the spare records used up and cudaEventCreate failing: that free waits, the others hold */
static void no_event_to_be_had_makes_the_free_wait(void) {
  void *blocks[8];
  for (int i = 0; i < 8; i++) blocks[i] = fv_cuda_alloc_on(1000, other_stream);
  fake_fail_next(FAKE_EVENT_CREATE, cudaErrorMemoryAllocation, 1, 0);
  int failed_creates = 0;
  for (int i = 0; i < 8; i++) {
    long create_failures = fake_failures(FAKE_EVENT_CREATE), syncs = fake_calls(FAKE_STREAM_SYNCHRONIZE);
    fv_cuda_free(blocks[i], 1000);
    if (fake_failures(FAKE_EVENT_CREATE) > create_failures) {
      failed_creates++;
      CHECK_EQ(fake_calls(FAKE_STREAM_SYNCHRONIZE), syncs + 1);
      CHECK_EQ(cudaGetLastError(), cudaSuccess);
    } else {
      CHECK_EQ(fake_calls(FAKE_STREAM_SYNCHRONIZE), syncs);
    }
  }
  CHECK_EQ(failed_creates, 1);
  run_compute_stream_and_empty_cache();
  CHECK_EQ(device_memory_now().reserved, 0);
  CHECK_EQ(fake_bad_calls(), 0);
}

/* ---- out of device memory ---- */

/* held blocks are waited for and every free segment given back before the one retry */
static void out_of_memory_waits_for_held_blocks_and_retries(void) {
  CHECK_EQ(fake_device_used(), 0);
  fake_set_device_capacity(22 * MiB);
  void *h = fv_cuda_alloc_on(3 * MiB, other_stream); /* a 20 MiB segment of the copy stream */
  CHECK(h != NULL);
  fv_cuda_free(h, 3 * MiB);                          /* held */
  void *k = fv_cuda_alloc(1000);                     /* a 2 MiB segment of the compute stream, cached */
  fv_cuda_free(k, 1000);
  CHECK_EQ(fake_device_used(), 22 * MiB);
  long evsyncs = fake_calls(FAKE_EVENT_SYNCHRONIZE), frees = fake_calls(FAKE_FREE);
  long malloc_failures = fake_failures(FAKE_MALLOC);
  fv_clear_error();
  void *m = fv_cuda_alloc(3 * MiB);
  CHECK(m != NULL);
  CHECK_EQ(fake_failures(FAKE_MALLOC), malloc_failures + 1);
  CHECK_EQ(fake_calls(FAKE_EVENT_SYNCHRONIZE), evsyncs + 1);
  CHECK_EQ(fake_calls(FAKE_FREE), frees + 2);
  CHECK_EQ(fv_last_status(), FV_OK);
  CHECK_EQ(cudaGetLastError(), cudaSuccess);
  device_memory s = device_memory_now();
  CHECK_EQ(s.allocated, 3 * MiB);
  CHECK_EQ(s.reserved, 20 * MiB);
  /* the same from the copy stream, whose own held block is the one to wait for */
  void *u = fv_cuda_alloc_on(1000, other_stream);        /* 2 MiB: 22 used */
  void *u2 = fv_cuda_alloc_on(5 * MiB, other_stream);    /* needs 20 MiB: out of memory, nothing to free */
  CHECK(u != NULL);
  CHECK(u2 == NULL);
  fv_cuda_free(u, 1000);    /* held */
  fv_cuda_free(m, 3 * MiB); /* the compute segment is wholly free */
  fv_clear_error();
  u2 = fv_cuda_alloc_on(5 * MiB, other_stream); /* retry: the compute segment goes, and u's once waited for */
  CHECK(u2 != NULL);
  CHECK_EQ(fv_last_status(), FV_OK);
  CHECK_EQ(device_memory_now().reserved, 20 * MiB);
  fv_cuda_free(u2, 5 * MiB);
  run_compute_stream_and_empty_cache();
  CHECK_EQ(fake_device_used(), 0);
}

/* a held block in a segment that stays in use: after the wait the retry takes it from the
 * pool (no second cudaMalloc needed) */
static void out_of_memory_reuses_a_held_block_of_a_segment_in_use(void) {
  fake_set_device_capacity(20 * MiB);
  void *h1 = fv_cuda_alloc_on(3 * MiB, other_stream), *h2 = fv_cuda_alloc_on(17 * MiB, other_stream);
  CHECK(h1 && h2);
  CHECK_EQ(fake_device_used(), 20 * MiB);
  fv_cuda_free(h1, 3 * MiB); /* held */
  long mallocs = successful_mallocs();
  fv_clear_error();
  void *h3 = fv_cuda_alloc_on(3 * MiB, other_stream);
  CHECK(h3 == h1);
  CHECK_EQ(successful_mallocs(), mallocs);
  CHECK_EQ(fv_last_status(), FV_OK);
  fv_cuda_free(h3, 3 * MiB);
  fv_cuda_free(h2, 17 * MiB);
  run_compute_stream_and_empty_cache();
}

/* too much even after the retry: FV_ERR_MEMORY, the sizes named, nothing changed */
static void out_of_memory_after_the_retry_names_the_sizes(void) {
  fake_set_device_capacity(22 * MiB);
  void *u = fv_cuda_alloc_on(5 * MiB, other_stream);
  CHECK(u != NULL);
  device_memory before = device_memory_now();
  fv_clear_error();
  void *big = fv_cuda_alloc(30 * MiB);
  CHECK(big == NULL);
  CHECK_EQ(fv_last_status(), FV_ERR_MEMORY);
  CHECK_MSG("cudaMalloc(31457280 bytes)");
  CHECK_MSG("out of memory (cudaErrorMemoryAllocation)");
  CHECK_MSG("5242880 bytes in use, 20971520 reserved");
  CHECK_MSG("after emptying its cache");
  CHECK_MSG("31457280"); /* the request itself */
  /* a request served by a shared segment: the message names the request too */
  fv_clear_error();
  CHECK(fv_cuda_alloc(3 * MiB) == NULL);
  CHECK_EQ(fv_last_status(), FV_ERR_MEMORY);
  CHECK_MSG("cudaMalloc(20971520 bytes)");
  CHECK_MSG("3145728");
  device_memory after = device_memory_now();
  CHECK_EQ(after.allocated, before.allocated);
  CHECK_EQ(after.reserved, before.reserved);
  fake_set_device_capacity(SIZE_MAX);
  fv_cuda_free(u, 5 * MiB);
  run_compute_stream_and_empty_cache();
  CHECK_EQ(device_memory_now().reserved, 0);
  CHECK_EQ(fake_device_used(), 0);
}

/* another error: no retry, FV_ERR_DEVICE */
static void other_malloc_errors_are_not_retried(void) {
  fake_fail_next(FAKE_MALLOC, cudaErrorLaunchFailure, 1, 0);
  long evsyncs = fake_calls(FAKE_EVENT_SYNCHRONIZE), mallocs = fake_calls(FAKE_MALLOC);
  fv_clear_error();
  CHECK(fv_cuda_alloc(30 * MiB) == NULL);
  CHECK_EQ(fv_last_status(), FV_ERR_DEVICE);
  CHECK_MSG("unspecified launch failure");
  CHECK_EQ(fake_calls(FAKE_MALLOC), mallocs + 1);
  CHECK_EQ(fake_calls(FAKE_EVENT_SYNCHRONIZE), evsyncs);
}

/* a request no size_t can round: FV_ERR_MEMORY, no cudaMalloc */
static void unroundable_requests_fail_without_malloc(void) {
  long mallocs = fake_calls(FAKE_MALLOC);
  fv_clear_error();
  CHECK(fv_cuda_alloc(SIZE_MAX - 10) == NULL);
  CHECK_EQ(fv_last_status(), FV_ERR_MEMORY);
  CHECK_EQ(fake_calls(FAKE_MALLOC), mallocs);
  CHECK_EQ(fake_device_used(), 0);
}

/* ---- pinned memory (transfer.cu's pool over cudaHostAlloc) ---- */

static void pinned_blocks_are_cached_and_reused(void) {
  long hallocs = fake_calls(FAKE_HOST_ALLOC);
  pinned_memory p0 = pinned_memory_now();
  char *h1 = (char *)fv_cuda_host_alloc(1000);
  CHECK(h1 != NULL);
  CHECK_EQ(fake_calls(FAKE_HOST_ALLOC), hallocs + 1);
  pinned_memory p = pinned_memory_now();
  CHECK_EQ(p.in_use, p0.in_use + 1024);
  CHECK_EQ(p.cached, p0.cached + 2 * MiB - 1024);
  CHECK_EQ(p.allocations, p0.allocations + 1);
  fv_cuda_host_free(h1, 1000);
  char *h2 = (char *)fv_cuda_host_alloc(1000);
  CHECK(h2 == h1);
  CHECK_EQ(fake_calls(FAKE_HOST_ALLOC), hallocs + 1);
  CHECK_EQ(pinned_memory_now().allocations, p0.allocations + 2);
  fv_cuda_host_free(h2, 1000);
}

static void pinned_bad_frees_are_recorded_not_fatal(void) {
  pinned_memory p0 = pinned_memory_now();
  char *h = (char *)fv_cuda_host_alloc(1000);
  fv_clear_error();
  fv_cuda_host_free(h, 5);
  CHECK_EQ(fv_last_status(), FV_ERR_INTERNAL);
  CHECK_MSG("allocated as 1000");
  CHECK_EQ(pinned_memory_now().in_use, p0.in_use); /* freed all the same */
  fv_clear_error();
  fv_cuda_host_free(h, 1000);
  CHECK_EQ(fv_last_status(), FV_ERR_INTERNAL);
  fv_clear_error();
  fv_cuda_host_free((void *)0x10, 1);
  CHECK_EQ(fv_last_status(), FV_ERR_INTERNAL);
}

static void pinned_empty_cache_gives_back_wholly_free_segments_only(void) {
  long hfrees = fake_calls(FAKE_FREE_HOST);
  char *h = (char *)fv_cuda_host_alloc(1000);
  fv_cuda_pinned_empty_cache();
  CHECK_EQ(fake_calls(FAKE_FREE_HOST), hfrees);
  fv_cuda_host_free(h, 1000);
  fv_cuda_pinned_empty_cache();
  CHECK_EQ(fake_calls(FAKE_FREE_HOST), hfrees + 1);
  CHECK_EQ(pinned_memory_now().cached, 0);
  CHECK_EQ(fake_host_used(), 0);
}

/* cudaHostAlloc out of memory: free segments back, retried; when that is not enough, a clear error */
static void pinned_out_of_memory_empties_the_cache_and_retries(void) {
  void *cached = fv_cuda_host_alloc(3 * MiB);
  fv_cuda_host_free(cached, 3 * MiB);
  fake_set_host_capacity(21 * MiB);
  long host_alloc_failures = fake_failures(FAKE_HOST_ALLOC), hfrees = fake_calls(FAKE_FREE_HOST);
  fv_clear_error();
  void *s = fv_cuda_host_alloc(1000);
  CHECK(s != NULL);
  CHECK_EQ(fake_failures(FAKE_HOST_ALLOC), host_alloc_failures + 1);
  CHECK_EQ(fake_calls(FAKE_FREE_HOST), hfrees + 1);
  CHECK_EQ(fv_last_status(), FV_OK);
  fv_clear_error();
  CHECK(fv_cuda_host_alloc(30 * MiB) == NULL);
  CHECK_EQ(fv_last_status(), FV_ERR_MEMORY);
  CHECK_MSG("pin_memory: cudaHostAlloc(31457280 bytes) failed");
  CHECK_MSG("out of memory");
  CHECK_EQ(cudaGetLastError(), cudaSuccess);
  fake_set_host_capacity(SIZE_MAX);
  fv_cuda_host_free(s, 1000);
  fv_cuda_pinned_empty_cache();
  CHECK_EQ(fake_host_used(), 0);
  CHECK_EQ(fake_bad_calls(), 0);
}

/* ---- uploads of pinned tensors (fv_to_device through the table's upload) ---- */

/* what the upload steps below hand on to each other */
struct uploads_state {
  cudaStream_t copy;  /* transfer.cu's copy stream, as the first upload named it */
  cudaEvent_t first_event;
  fv_tensor *first;   /* pinned, 1000 x 3.5; released by the user while in flight */
  fv_storage *first_storage;
  fv_tensor *first_on_device;
  fv_tensor *second, *second_on_device; /* pinned, 1000 x -1 */
  fv_tensor *third, *third_on_device;   /* pinned, 1000 x 7 */
};

static void first_upload_is_queued_on_the_copy_stream(uploads_state *st) {
  fv_tensor *p = st->first = pinned_full(1000, 3.5);
  CHECK_EQ(host_allocs, 1);
  CHECK(p->storage->pinned_for == FV_CUDA);
  CHECK_EQ(p->storage->refcount, 1);
  device_memory m0 = device_memory_now();
  long mark = fake_log_size();
  if (fv_to_device(&st->first_on_device, p, FV_CUDA)) {
    fprintf(stderr, "upload: %s\n", fv_last_error());
    exit(1);
  }
  fv_tensor *g = st->first_on_device;
  CHECK_EQ(p->storage->refcount, 2); /* retained while in flight */
  CHECK_EQ(pinned_memory_now().in_flight, 1);
  fake_call cp, rec, wait;
  int icp = nth_call_since(mark, FAKE_MEMCPY_ASYNC, 0, &cp), irec = nth_call_since(mark, FAKE_EVENT_RECORD, 0, &rec),
      iwait = nth_call_since(mark, FAKE_STREAM_WAIT_EVENT, 0, &wait);
  CHECK(icp >= 0 && irec > icp && iwait > irec);
  st->copy = cp.stream;
  CHECK(st->copy != 0 && st->copy != cudaStreamLegacy && st->copy != other_stream);
  CHECK(cp.dst == g->storage->data);
  CHECK(cp.src == p->storage->data);
  CHECK_EQ(cp.bytes, 4000);
  CHECK(rec.stream == st->copy);
  CHECK(wait.stream == 0 && wait.event == rec.event); /* the compute stream waits for the copy */
  CHECK_EQ(calls_since(mark, FAKE_MEMCPY), 0);        /* no synchronous copy */
  CHECK_EQ(calls_since(mark, FAKE_STREAM_SYNCHRONIZE) + calls_since(mark, FAKE_EVENT_SYNCHRONIZE) +
               calls_since(mark, FAKE_DEVICE_SYNCHRONIZE),
           0);
  CHECK_EQ(device_memory_now().allocated, m0.allocated + 4096);
  st->first_event = rec.event;
  CHECK(!fake_event_done(st->first_event));
  /* the compute stream cannot pass the wait before the copy (the fake enforces waits) */
  fake_stream_run(0, 0);
  CHECK(fake_stream_completed(0) < fake_stream_submitted(0));
  /* the destination is the copy stream's: the compute pool does not hand it out */
  void *c = fv_cuda_alloc(4000);
  CHECK(device_segment_of(c) != device_segment_of(g->storage->data));
  fv_cuda_free(c, 4000);
}

static void sources_are_held_until_their_copies_complete(uploads_state *st) {
  /* the user lets go of the first source: the list of uploads in flight still holds it */
  st->first_storage = st->first->storage;
  fv_tensor_release(st->first);
  st->first = NULL;
  CHECK_EQ(st->first_storage->refcount, 1);
  CHECK_EQ(host_frees, 0);
  /* a second upload while the first is in flight */
  fv_tensor *p2 = st->second = pinned_full(1000, -1.0);
  CHECK_EQ(fv_to_device(&st->second_on_device, p2, FV_CUDA), FV_OK);
  CHECK_EQ(cudaPeekAtLastError(), cudaSuccess); /* the poll found the first not ready: no error left */
  CHECK_EQ(pinned_memory_now().in_flight, 2);
  CHECK_EQ(host_frees, 0);
  /* the copy stream finishes; the next upload's poll releases both sources */
  fake_stream_run(st->copy, 0);
  CHECK(fake_event_done(st->first_event));
  /* the copies ran only now (the fake defers them): the first block was not reused by p2 */
  CHECK(p2->storage->data != st->first_storage->data);
  CHECK(all_equal(st->first_on_device, 3.5f));
  CHECK(all_equal(st->second_on_device, -1.0f));
  fv_tensor *p3 = st->third = pinned_full(1000, 7.0);
  CHECK_EQ(fv_to_device(&st->third_on_device, p3, FV_CUDA), FV_OK);
  CHECK_EQ(pinned_memory_now().in_flight, 1);
  CHECK_EQ(host_frees, 1); /* the first storage: its last reference was the list's */
  CHECK_EQ(p2->storage->refcount, 1);
  CHECK_EQ(p3->storage->refcount, 2);
  /* settle: waits for each, releases them */
  long evsyncs = fake_calls(FAKE_EVENT_SYNCHRONIZE);
  CHECK_EQ(fv_cuda_uploads_settle(), FV_OK);
  CHECK(fake_calls(FAKE_EVENT_SYNCHRONIZE) > evsyncs);
  CHECK_EQ(pinned_memory_now().in_flight, 0);
  CHECK_EQ(p3->storage->refcount, 1);
}

/* an upload's destination, freed, is held until the compute stream passes the free */
static void upload_destinations_are_held_until_the_compute_stream_passes(uploads_state *st) {
  void *addr = st->first_on_device->storage->data;
  long mark = fake_log_size();
  int64_t allocated = device_memory_now().allocated;
  fv_tensor_release(st->first_on_device);
  st->first_on_device = NULL;
  CHECK_EQ(calls_since(mark, FAKE_EVENT_RECORD), 1);
  fake_call rec;
  CHECK(nth_call_since(mark, FAKE_EVENT_RECORD, 0, &rec) >= 0 && rec.stream == 0);
  CHECK_EQ(device_memory_now().allocated, allocated - 4096);
  fv_tensor *g4, *g5;
  CHECK_EQ(fv_to_device(&g4, st->second, FV_CUDA), FV_OK);
  CHECK(g4->storage->data != addr);
  CHECK(all_equal(g4, -1.0f));
  fake_stream_run(0, 1);
  CHECK_EQ(fv_to_device(&g5, st->third, FV_CUDA), FV_OK);
  CHECK(g5->storage->data == addr); /* reused by the copy stream once passed */
  CHECK(all_equal(g5, 7.0f));
  CHECK_EQ(fv_cuda_uploads_settle(), FV_OK);
  fv_tensor_release(g4);
  fv_tensor_release(g5);
}

static void upload_events_are_reused(const fv_tensor *pinned) {
  long creates = fake_calls(FAKE_EVENT_CREATE);
  for (int i = 0; i < 5; i++) {
    fv_tensor *g;
    CHECK_EQ(fv_to_device(&g, pinned, FV_CUDA), FV_OK);
    fv_tensor_release(g);
    fake_run_all();
  }
  CHECK_EQ(fv_cuda_uploads_settle(), FV_OK);
  CHECK(fake_calls(FAKE_EVENT_CREATE) - creates <= 2);
}

/* a call failing while the upload is queued: memory and event returned, nothing retained */
static void upload_queueing_failures_give_everything_back(const fv_tensor *pinned) {
  fake_fn inject[3] = {FAKE_MEMCPY_ASYNC, FAKE_EVENT_RECORD, FAKE_STREAM_WAIT_EVENT};
  const char *named[3] = {"cudaMemcpyAsync", "cudaEventRecord", "cudaStreamWaitEvent"};
  for (int k = 0; k < 3; k++) {
    int refs = pinned->storage->refcount;
    pinned_memory pb = pinned_memory_now();
    device_memory mb = device_memory_now();
    long destroys = fake_calls(FAKE_EVENT_DESTROY), live_events = fake_live_events();
    long syncs = fake_calls(FAKE_STREAM_SYNCHRONIZE);
    fake_fail_next(inject[k], cudaErrorInvalidValue, 1, 0);
    fv_tensor *g = NULL;
    fv_clear_error();
    CHECK_EQ(fv_to_device(&g, pinned, FV_CUDA), FV_ERR_DEVICE);
    CHECK(g == NULL);
    CHECK_MSG(named[k]);
    CHECK_MSG("invalid argument");
    CHECK_EQ(pinned->storage->refcount, refs);
    CHECK_EQ(pinned_memory_now().in_flight, pb.in_flight);
    CHECK_EQ(device_memory_now().allocated, mb.allocated);
    CHECK_EQ(fake_calls(FAKE_EVENT_DESTROY), destroys + 1); /* the upload's event given back */
    CHECK(fake_live_events() <= live_events + 1);           /* the upload's event does not leak */
    CHECK(fake_calls(FAKE_STREAM_SYNCHRONIZE) > syncs);     /* whatever was queued, finished first */
    CHECK_EQ(cudaGetLastError(), cudaSuccess);
  }
}

/* no device memory for the copy: FV_ERR_MEMORY, nothing retained */
static void upload_without_device_memory_fails_cleanly(void) {
  fv_tensor *big = pinned_full(8 * 1024 * 1024, 1.0), *g = NULL;
  fake_set_device_capacity(fake_device_used());
  int refs = big->storage->refcount;
  long live_events = fake_live_events();
  fv_clear_error();
  CHECK_EQ(fv_to_device(&g, big, FV_CUDA), FV_ERR_MEMORY);
  CHECK_MSG("cudaMalloc(33554432 bytes)");
  CHECK_MSG("cannot upload the pinned float32 8388608 tensor");
  CHECK_EQ(big->storage->refcount, refs);
  CHECK(fake_live_events() <= live_events + 1); /* a new event, kept as a spare */
  live_events = fake_live_events();
  CHECK_EQ(fv_to_device(&g, big, FV_CUDA), FV_ERR_MEMORY);
  CHECK_EQ(fake_live_events(), live_events); /* ... and reused */
  CHECK_EQ(big->storage->refcount, refs);
  fake_set_device_capacity(SIZE_MAX);
  fv_tensor_release(big);
}

/* a contiguous view at an offset: its own bytes go */
static void upload_of_a_view_sends_its_own_bytes(void) {
  fv_tensor *q = pinned_full(100, 0.0), *view, *g;
  float *d = (float *)q->storage->data;
  for (int i = 0; i < 100; i++) d[i] = (float)i;
  CHECK_EQ(fv_narrow(&view, q, 0, 40, 20), FV_OK);
  long mark = fake_log_size();
  CHECK_EQ(fv_to_device(&g, view, FV_CUDA), FV_OK);
  CHECK_EQ(calls_since(mark, FAKE_MEMCPY_ASYNC), 1);
  fake_run_all();
  const float *gd = (const float *)g->storage->data;
  int same = 1;
  for (int i = 0; i < 20; i++) same &= gd[i] == (float)(40 + i);
  CHECK(same);
  CHECK_EQ(q->storage->refcount, 3); /* q, the view, the upload */
  fv_tensor_release(g);
  fv_tensor_release(view);
  fv_tensor_release(q);
}

/* fv_copy_ into an existing cuda tensor: uploaded, then copied on the device */
static void copy_into_a_cuda_tensor_uploads(const fv_tensor *pinned_sevens) {
  fv_tensor *dst;
  int64_t shape[1] = {1000};
  CHECK_EQ(fv_zeros(&dst, 1, shape, FV_FLOAT32, FV_CUDA), FV_OK);
  long mark = fake_log_size();
  CHECK_EQ(fv_copy_(dst, pinned_sevens), FV_OK);
  CHECK_EQ(calls_since(mark, FAKE_MEMCPY_ASYNC), 1);
  CHECK(all_equal(dst, 7.0f));
  fv_tensor_release(dst);
}

static void pageable_sources_keep_the_synchronous_copy(void) {
  fv_tensor *t, *g;
  int64_t shape[1] = {10};
  fv_full(&t, 1, shape, 2.0, FV_FLOAT32, FV_CPU);
  long mark = fake_log_size();
  CHECK_EQ(fv_to_device(&g, t, FV_CUDA), FV_OK);
  CHECK_EQ(calls_since(mark, FAKE_MEMCPY_ASYNC), 0);
  CHECK_EQ(calls_since(mark, FAKE_MEMCPY), 1);
  fv_tensor_release(g);
  fv_tensor_release(t);
}

static void fv_cuda_upload_refuses_a_pageable_source(void) {
  fv_tensor *t;
  int64_t shape[1] = {10};
  fv_full(&t, 1, shape, 2.0, FV_FLOAT32, FV_CPU);
  void *data = (void *)1;
  fv_clear_error();
  CHECK_EQ(fv_cuda_upload(&data, t, 40), FV_ERR_ARGUMENT);
  CHECK(data == NULL);
  fv_tensor_release(t);
}

static void release_uploads_and_check_nothing_is_left(uploads_state *st) {
  fv_tensor_release(st->second_on_device);
  fv_tensor_release(st->third_on_device);
  fv_tensor_release(st->second);
  fv_tensor_release(st->third);
  fake_run_all();
  CHECK_EQ(fv_cuda_uploads_settle(), FV_OK);
  CHECK_EQ(host_allocs, host_frees);
  pinned_memory pe = pinned_memory_now();
  CHECK_EQ(pe.in_use, 0);
  CHECK_EQ(pe.in_flight, 0);
  fv_cuda_empty_cache();
  fv_cuda_pinned_empty_cache();
  device_memory me = device_memory_now();
  CHECK_EQ(me.allocated, 0);
  CHECK_EQ(me.reserved, 0);
  CHECK_EQ(fake_device_used(), 0);
  CHECK_EQ(fake_host_used(), 0);
  CHECK_EQ(fake_bad_calls(), 0);
}

static void uploads(void) {
  register_backend();
  uploads_state st = {};
  first_upload_is_queued_on_the_copy_stream(&st);
  sources_are_held_until_their_copies_complete(&st);
  upload_destinations_are_held_until_the_compute_stream_passes(&st);
  upload_events_are_reused(st.second);
  upload_queueing_failures_give_everything_back(st.second);
  upload_without_device_memory_fails_cleanly();
  upload_of_a_view_sends_its_own_bytes();
  copy_into_a_cuda_tensor_uploads(st.third);
  pageable_sources_keep_the_synchronous_copy();
  fv_cuda_upload_refuses_a_pageable_source();
  release_uploads_and_check_nothing_is_left(&st);
}

/* ---- the side stream (fv_cuda_fork, fv_cuda_join) ---- */

/* the first fork fails half way (its second event cannot be made); the next makes only
 * what is missing, and fork and join order the two streams by an event each */
static cudaStream_t fork_and_join_order_the_streams(void) {
  long streams = fake_live_streams(), events = fake_live_events();
  fake_fail_next(FAKE_EVENT_CREATE, cudaErrorMemoryAllocation, 1, 1);
  cudaStream_t side = 0;
  fv_clear_error();
  CHECK(fv_cuda_fork("nam backward", &side) != FV_OK);
  CHECK_MSG("nam backward");
  long mark = fake_log_size();
  CHECK_EQ(fv_cuda_fork("nam backward", &side), FV_OK);
  CHECK_EQ(fake_live_streams(), streams + 1); /* one side stream, however many tries */
  CHECK_EQ(fake_live_events(), events + 2);
  CHECK(side != 0 && side != other_stream);
  fake_call rec, wait;
  CHECK(nth_call_since(mark, FAKE_EVENT_RECORD, 0, &rec) >= 0 && rec.stream == 0);
  CHECK(nth_call_since(mark, FAKE_STREAM_WAIT_EVENT, 0, &wait) >= 0 && wait.stream == side &&
        wait.event == rec.event);
  CHECK(nth_call_since(mark, FAKE_STREAM_WAIT_EVENT, 0, NULL) > nth_call_since(mark, FAKE_EVENT_RECORD, 0, NULL));
  cudaEvent_t forked = rec.event;
  long mark2 = fake_log_size();
  CHECK_EQ(fv_cuda_join("nam backward"), FV_OK);
  CHECK(nth_call_since(mark2, FAKE_EVENT_RECORD, 0, &rec) >= 0 && rec.stream == side && rec.event != forked);
  CHECK(nth_call_since(mark2, FAKE_STREAM_WAIT_EVENT, 0, &wait) >= 0 && wait.stream == 0 &&
        wait.event == rec.event);
  CHECK_EQ(calls_since(mark2, FAKE_EVENT_RECORD), 1);
  CHECK_EQ(calls_since(mark2, FAKE_STREAM_WAIT_EVENT), 1);
  return side;
}

/* the side stream really waits (fake): it cannot run past the fork before the compute stream */
static void the_side_stream_waits_for_the_fork(cudaStream_t side) {
  cudaStream_t again = 0;
  long mark = fake_log_size();
  CHECK_EQ(fv_cuda_fork("nam backward", &again), FV_OK);
  CHECK(again == side);
  CHECK_EQ(calls_since(mark, FAKE_STREAM_CREATE) + calls_since(mark, FAKE_EVENT_CREATE), 0);
  fake_stream_run(side, 0);
  CHECK(fake_stream_completed(side) < fake_stream_submitted(side));
  fake_stream_run(0, 1);
  fake_stream_run(side, 0);
  CHECK_EQ(fake_stream_completed(side), fake_stream_submitted(side));
  CHECK_EQ(fv_cuda_join("nam backward"), FV_OK);
}

static void a_failed_fork_names_the_op_and_the_call(void) {
  cudaStream_t side = 0;
  fake_fail_next(FAKE_EVENT_RECORD, cudaErrorLaunchFailure, 1, 0);
  fv_clear_error();
  CHECK_EQ(fv_cuda_fork("nam backward", &side), FV_ERR_DEVICE);
  CHECK_MSG("nam backward: cudaEventRecord(forked, fv_cuda_stream) failed");
  fake_run_all();
  CHECK_EQ(fake_bad_calls(), 0);
}

static void side_stream(void) {
  cudaStream_t side = fork_and_join_order_the_streams();
  the_side_stream_waits_for_the_fork(side);
  a_failed_fork_names_the_op_and_the_call();
}

/* ---- caching off (FOVEA_NO_ALLOC_CACHE=1) ---- */

static void nocache_device_blocks_go_straight_back(void) {
  long mallocs = fake_calls(FAKE_MALLOC), frees = fake_calls(FAKE_FREE), mark = fake_log_size();
  void *a = fv_cuda_alloc(1000);
  fake_call c;
  CHECK(nth_call_since(mark, FAKE_MALLOC, 0, &c) >= 0 && c.bytes == 1024);
  void *b = fv_cuda_alloc(1000);
  CHECK_EQ(fake_calls(FAKE_MALLOC), mallocs + 2);
  fv_cuda_free(a, 1000);
  CHECK_EQ(fake_calls(FAKE_FREE), frees + 1);
  fv_cuda_free(b, 1000);
  CHECK_EQ(fake_calls(FAKE_FREE), frees + 2);
  device_memory m = device_memory_now();
  CHECK_EQ(m.allocated, 0);
  CHECK_EQ(m.reserved, 0);
}

/* another stream's: held until its event, then given back */
static void nocache_held_blocks_go_back_once_passed(void) {
  long mallocs = fake_calls(FAKE_MALLOC), frees = fake_calls(FAKE_FREE);
  void *h = fv_cuda_alloc_on(1000, other_stream);
  fv_cuda_free(h, 1000);
  CHECK_EQ(fake_calls(FAKE_FREE), frees);
  CHECK_EQ(device_memory_now().reserved, 1024);
  void *h2 = fv_cuda_alloc_on(1000, other_stream);
  CHECK(h2 != h || fake_calls(FAKE_MALLOC) == mallocs + 2);
  fv_cuda_empty_cache(); /* not passed yet */
  CHECK_EQ(fake_calls(FAKE_FREE), frees);
  fake_stream_run(0, 0);
  void *h3 = fv_cuda_alloc_on(1000, other_stream); /* the poll gives h back */
  CHECK_EQ(fake_calls(FAKE_FREE), frees + 1);
  fv_cuda_free(h2, 1000);
  fv_cuda_free(h3, 1000);
  run_compute_stream_and_empty_cache();
  CHECK_EQ(fake_calls(FAKE_FREE), frees + 3);
  CHECK_EQ(device_memory_now().reserved, 0);
  CHECK_EQ(fake_device_used(), 0);
}

static void nocache_pinned_blocks_go_straight_back(void) {
  long hallocs = fake_calls(FAKE_HOST_ALLOC), hfrees = fake_calls(FAKE_FREE_HOST);
  void *p = fv_cuda_host_alloc(1000), *q = fv_cuda_host_alloc(1000);
  CHECK_EQ(fake_calls(FAKE_HOST_ALLOC), hallocs + 2);
  fv_cuda_host_free(p, 1000);
  CHECK_EQ(fake_calls(FAKE_FREE_HOST), hfrees + 1);
  fv_cuda_host_free(q, 1000);
  CHECK_EQ(fake_calls(FAKE_FREE_HOST), hfrees + 2);
  CHECK_EQ(fake_host_used(), 0);
}

/* an upload's destination: its cudaFree once the compute stream passed */
static void nocache_upload_destinations_go_back_once_passed(void) {
  register_backend();
  fv_tensor *pt = pinned_full(100, 1.0), *g;
  CHECK_EQ(fv_to_device(&g, pt, FV_CUDA), FV_OK);
  long frees = fake_calls(FAKE_FREE);
  fv_tensor_release(g);
  CHECK_EQ(fake_calls(FAKE_FREE), frees);
  fake_run_all();
  fv_cuda_empty_cache();
  CHECK_EQ(fake_calls(FAKE_FREE), frees + 1);
  CHECK_EQ(fv_cuda_uploads_settle(), FV_OK);
  fv_tensor_release(pt);
  CHECK_EQ(fake_host_used(), 0);
  CHECK_EQ(fake_device_used(), 0);
  CHECK_EQ(fake_bad_calls(), 0);
}

/* ---- the scenarios ---- */

static void main_scenario(void) {
  compute_stream_blocks_are_rounded_split_and_reused();
  empty_cache_keeps_segments_in_use();
  bad_frees_are_recorded_not_fatal();
  zero_byte_blocks_are_blocks();
  blocks_freed_from_another_stream_are_held();
  a_failed_event_record_makes_the_free_wait();
  no_event_to_be_had_makes_the_free_wait();
  out_of_memory_waits_for_held_blocks_and_retries();
  out_of_memory_reuses_a_held_block_of_a_segment_in_use();
  out_of_memory_after_the_retry_names_the_sizes();
  other_malloc_errors_are_not_retried();
  unroundable_requests_fail_without_malloc();
  pinned_blocks_are_cached_and_reused();
  pinned_bad_frees_are_recorded_not_fatal();
  pinned_empty_cache_gives_back_wholly_free_segments_only();
  pinned_out_of_memory_empties_the_cache_and_retries();
  uploads();
  side_stream();
}

static void nocache_scenario(void) {
  nocache_device_blocks_go_straight_back();
  nocache_held_blocks_go_back_once_passed();
  nocache_pinned_blocks_go_straight_back();
  nocache_upload_destinations_go_back_once_passed();
}

/* exitdrain: uploads left in flight at exit; transfer.cu's drain (a C++ static destructor)
 * must wait for them and release their sources. Checked after it, by a destructor of
 * this file's, which prints "exitdrain: ... ok" or fails the process. */
static long drain_expected_frees;

__attribute__((destructor)) static void check_the_exit_drain(void) {
  if (!drain_expected_frees) return;
  int ok = host_frees == drain_expected_frees && fake_calls(FAKE_EVENT_SYNCHRONIZE) >= 3 && fake_bad_calls() == 0;
  fprintf(stderr, "exitdrain: host_frees %ld of %ld, cudaEventSynchronize %ld, bad calls %ld: %s\n", host_frees,
          drain_expected_frees, fake_calls(FAKE_EVENT_SYNCHRONIZE), fake_bad_calls(), ok ? "ok" : "FAILED");
  if (!ok) _exit(1);
}

static void exitdrain_scenario(void) {
  register_backend();
  for (int i = 0; i < 3; i++) {
    fv_tensor *p = pinned_full(1000, i), *g;
    CHECK_EQ(fv_to_device(&g, p, FV_CUDA), FV_OK);
    fv_tensor_release(p);
    fv_tensor_release(g);
  }
  CHECK_EQ(pinned_memory_now().in_flight, 3);
  CHECK_EQ(host_frees, 0);
  drain_expected_frees = 3;
}

/* threads: pinned blocks allocated and freed by 4 threads while the main thread uploads */
static void *allocate_and_free_pinned_blocks(void *arg) {
  (void)arg;
  for (int i = 0; i < 300; i++) {
    size_t n = (size_t)(i % 7 + 1) * 3000;
    void *p = counting_host_alloc(n);
    if (p) {
      memset(p, i, n);
      counting_host_free(p, n);
    }
  }
  return NULL;
}

static void threads_scenario(void) {
  register_backend();
  pthread_t th[4];
  for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, allocate_and_free_pinned_blocks, NULL);
  for (int i = 0; i < 200; i++) {
    fv_tensor *p = pinned_full(500, i), *g;
    CHECK_EQ(fv_to_device(&g, p, FV_CUDA), FV_OK);
    fv_tensor_release(p);
    fv_tensor_release(g);
    if (i % 10 == 0) fake_run_all();
    if (i % 50 == 0) fv_cuda_uploads_settle();
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  fake_run_all();
  CHECK_EQ(fv_cuda_uploads_settle(), FV_OK);
  CHECK_EQ(pinned_memory_now().in_use, 0);
  CHECK_EQ(host_allocs, host_frees);
  CHECK_EQ(fake_bad_calls(), 0);
}

/* fragmentation: a free cached block larger than the "too big to lend" rule allows
 * (block_pool.c) is lent, split, when no new segment can be had, rather than the request
 * failing with out of memory while the cache holds room for it. */
static void fragmentation_scenario(void) {
  fake_set_device_capacity(70 * MiB);
  void *a = fv_cuda_alloc(60 * MiB);
  fv_cuda_free(a, 60 * MiB);
  char *b = (char *)fv_cuda_alloc(30 * MiB); /* the 60 MiB block, split: 30 MiB stays free */
  CHECK(b == a);
  device_memory m = device_memory_now();
  CHECK_EQ(m.allocated, 30 * MiB);
  CHECK_EQ(m.reserved, 60 * MiB);
  long mallocs = successful_mallocs(), malloc_failures = fake_failures(FAKE_MALLOC);
  fv_clear_error();
  /* too big to lend by the usual rule: a 20 MiB segment is asked for and refused */
  char *c = (char *)fv_cuda_alloc(9 * MiB);
  printf("fragmentation: allocated %lld, reserved %lld (%lld free in the cache); alloc(9 MiB) %s%s\n",
         (long long)m.allocated, (long long)m.reserved, (long long)(m.reserved - m.allocated),
         c ? "succeeded" : "FAILED: ", c ? "" : fv_last_error());
  CHECK(c != NULL);
  CHECK_EQ(fv_last_status(), FV_OK);
  CHECK(fake_failures(FAKE_MALLOC) > malloc_failures);
  CHECK_EQ(successful_mallocs(), mallocs);
  CHECK(c == b + 30 * MiB); /* the free rest of the 60 MiB segment, split */
  m = device_memory_now();
  CHECK_EQ(m.allocated, 39 * MiB);
  CHECK_EQ(m.reserved, 60 * MiB);
  if (c) fv_cuda_free(c, 9 * MiB);
  fv_cuda_free(b, 30 * MiB);
  fake_set_device_capacity(SIZE_MAX);
  fv_cuda_empty_cache();
  CHECK_EQ(device_memory_now().reserved, 0);
  CHECK_EQ(fake_device_used(), 0);
  CHECK_EQ(fake_bad_calls(), 0);
}

struct scenario {
  const char *name;
  void (*run)(void);
};

static const scenario scenarios[] = {
    {"main", main_scenario},
    {"nocache", nocache_scenario},
    {"exitdrain", exitdrain_scenario},
    {"threads", threads_scenario},
    {"fragmentation", fragmentation_scenario},
};

int main(int argc, char **argv) {
  const char *which = argc > 1 ? argv[1] : "main";
  for (const scenario &s : scenarios) {
    if (strcmp(which, s.name)) continue;
    cudaStreamCreateWithFlags(&other_stream, cudaStreamNonBlocking);
    s.run();
    printf("%s: %d checks, %d failed\n", which, checked, failed);
    return failed ? 1 : 0;
  }
  fprintf(stderr, "unknown scenario %s (main, nocache, exitdrain, threads, fragmentation)\n", which);
  return 2;
}
