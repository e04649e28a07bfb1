/* fake_cudart.cpp: a fake CUDA runtime, linked in place of libcudart into the host test of
 * cuda/allocator.cu, cuda/transfer.cu and cuda/side_stream.cu (test_cuda_host.cpp; built
 * by `make cuda-host-test` with nvcc's `-cudart none`, run by spec/cuda_host_spec.lua).
 * It has the runtime calls those files make, and no more:
 * - cudaMalloc and cudaHostAlloc take malloc'd memory up to capacities the test sets
 *   (cudaErrorMemoryAllocation beyond them); frees of unknown pointers are bad calls.
 * - A stream is a queue of operations (copies, event records, waits on events). Nothing
 *   runs when queued: a stream runs when the test says so (fake_stream_run,
 *   fake_run_all) or when a synchronizing call needs it. A copy happens only then, so a
 *   copy from memory freed or overwritten before its stream ran is seen (by ASan, or as
 *   wrong data); and a stream does not pass a wait before the event's stream has reached
 *   the event.
 * - Events complete when their stream has run up to them; cudaEventQuery says "not
 *   ready" before and leaves it as the thread's last error, as HIP does (and, by
 *   PyTorch's code, some CUDA runtimes), unless FAKE_NOTREADY_CLEAN=1.
 * - Every call is counted and logged (fake_cudart.h reads them back); fake_fail_next
 *   makes the next calls of a function fail. Use of destroyed or unknown streams and
 *   events is counted as a bad call and printed ("fake cudart: BAD CALL").
 * One recursive lock serializes everything: the test's threads call in too. */
#include "fake_cudart.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <vector>

enum fake_op_kind {
  OP_NOTHING,      /* a wait on an event never recorded */
  OP_EVENT_RECORD, /* a position for events to complete at */
  OP_COPY,
  OP_WAIT
};

/* One queued operation; a stream's ops[i] sits at queue position i + 1. */
struct fake_op {
  fake_op_kind kind;
  void *dst; /* OP_COPY */
  const void *src;
  size_t bytes;
  CUstream_st *waited_stream; /* OP_WAIT: the event's stream when the wait was queued */
  long waited_position;       /*          and the event's position there */
};

struct CUstream_st {
  int id;
  int destroyed;
  long submitted, completed; /* queue positions */
  std::vector<fake_op> *ops;
};

struct CUevent_st {
  int id;
  int destroyed;
  int recorded;
  CUstream_st *stream; /* where it was last recorded */
  long position;       /* and at which queue position */
};

namespace {
pthread_mutex_t lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
struct locked {
  locked() { pthread_mutex_lock(&lock); }
  ~locked() { pthread_mutex_unlock(&lock); }
};

long calls[FAKE_FN_COUNT], failures[FAKE_FN_COUNT];
int failures_to_inject[FAKE_FN_COUNT], successes_before_failing[FAKE_FN_COUNT];
cudaError_t error_to_inject[FAKE_FN_COUNT];
thread_local cudaError_t last_error = cudaSuccess; /* per thread, as the runtime's */
size_t device_capacity = SIZE_MAX, host_capacity = SIZE_MAX, device_used, host_used;
/* never deleted: reachable until exit, for LeakSanitizer */
std::map<uintptr_t, size_t> *device_blocks = new std::map<uintptr_t, size_t>;
std::map<uintptr_t, size_t> *host_blocks = new std::map<uintptr_t, size_t>;
std::vector<CUstream_st *> *all_streams = new std::vector<CUstream_st *>;
std::vector<CUevent_st *> *all_events = new std::vector<CUevent_st *>;
std::vector<fake_call> *call_log = new std::vector<fake_call>;
long bad_calls;
char last_bad_call[512];
CUstream_st legacy_stream = {0, 0, 0, 0, new std::vector<fake_op>};

void report_bad_call(const char *what, const void *p) {
  bad_calls++;
  snprintf(last_bad_call, sizeof last_bad_call, "%s %p", what, p);
  fprintf(stderr, "fake cudart: BAD CALL: %s\n", last_bad_call);
}

/* Counts a call of f; returns the error injected for it (cudaSuccess when none). */
cudaError_t begin_call(fake_fn f) {
  calls[f]++;
  if (failures_to_inject[f] == 0) return cudaSuccess;
  if (successes_before_failing[f] > 0) {
    successes_before_failing[f]--;
    return cudaSuccess;
  }
  failures_to_inject[f]--;
  return error_to_inject[f];
}

/* Logs the call and its result (a failure becomes the thread's last error); returns err. */
cudaError_t end_call(fake_fn f, cudaError_t err, cudaStream_t s, cudaEvent_t e, void *dst, const void *src,
                     size_t bytes) {
  if (err != cudaSuccess) {
    failures[f]++;
    last_error = err;
  }
  call_log->push_back(fake_call{f, s, e, dst, src, bytes, err});
  return err;
}

bool is_legacy(cudaStream_t s) { return s == 0 || s == cudaStreamLegacy || s == cudaStreamPerThread; }

/* The stream behind a handle; NULL (a bad call) for an unknown one. */
CUstream_st *stream_of(cudaStream_t s) {
  if (is_legacy(s)) return &legacy_stream;
  for (CUstream_st *known : *all_streams)
    if (known == s) {
      if (known->destroyed) report_bad_call("use of a destroyed stream", s);
      return known;
    }
  report_bad_call("unknown stream", s);
  return NULL;
}

bool is_live_event(cudaEvent_t e) {
  for (CUevent_st *known : *all_events)
    if (known == e) {
      if (known->destroyed) {
        report_bad_call("use of a destroyed event", e);
        return false;
      }
      return true;
    }
  report_bad_call("unknown event", e);
  return false;
}

bool event_completed(CUevent_st *e) { return !e->recorded || e->stream->completed >= e->position; }

/* Runs s up to queue position pos, performing its copies then. With force, the streams
 * its waits depend on are run first; without, it stops before a wait not yet met. */
void run_stream_until(CUstream_st *s, long pos, int force) {
  if (pos > s->submitted) pos = s->submitted;
  while (s->completed < pos) {
    fake_op &op = (*s->ops)[(size_t)s->completed];
    if (op.kind == OP_WAIT && op.waited_stream->completed < op.waited_position) {
      if (!force) return;
      run_stream_until(op.waited_stream, op.waited_position, 1);
    }
    if (op.kind == OP_COPY) memcpy(op.dst, op.src, op.bytes);
    s->completed++;
  }
}

void run_stream(CUstream_st *s, int force) { run_stream_until(s, s->submitted, force); }

void run_every_stream(void) {
  run_stream(&legacy_stream, 1);
  for (CUstream_st *s : *all_streams) run_stream(s, 1);
}

void queue_op(CUstream_st *s, fake_op op) {
  s->ops->push_back(op);
  s->submitted++;
}

/* malloc within a capacity, the start of the block scribbled on (memory is not zeroed) */
bool allocate_block(std::map<uintptr_t, size_t> *blocks, size_t *used, size_t capacity, void **p, size_t size) {
  if (size > capacity || *used > capacity - size) return false;
  void *m = malloc(size ? size : 1);
  if (!m) return false;
  memset(m, 0xAB, size < 64 ? size : 64);
  (*blocks)[(uintptr_t)m] = size;
  *used += size;
  *p = m;
  return true;
}

bool free_block(std::map<uintptr_t, size_t> *blocks, size_t *used, void *p) {
  auto it = blocks->find((uintptr_t)p);
  if (it == blocks->end()) return false;
  *used -= it->second;
  blocks->erase(it);
  free(p);
  return true;
}

bool not_ready_stays_as_last_error(void) {
  static int clean = -1;
  if (clean < 0) clean = getenv("FAKE_NOTREADY_CLEAN") && strcmp(getenv("FAKE_NOTREADY_CLEAN"), "0");
  return !clean;
}
}  // namespace

extern "C" {

/* nvcc's registration of the .cu files' fat binaries (they hold no kernels) */
void **__cudaRegisterFatBinary(void *) {
  static void *handle;
  return &handle;
}
void __cudaRegisterFatBinaryEnd(void **) {}
void __cudaUnregisterFatBinary(void **) {}

/* ---- memory ---- */

cudaError_t CUDARTAPI cudaMalloc(void **devPtr, size_t size) {
  locked l;
  cudaError_t err = begin_call(FAKE_MALLOC);
  *devPtr = NULL;
  if (!err && !allocate_block(device_blocks, &device_used, device_capacity, devPtr, size))
    err = cudaErrorMemoryAllocation;
  return end_call(FAKE_MALLOC, err, 0, 0, *devPtr, NULL, size);
}

cudaError_t CUDARTAPI cudaFree(void *devPtr) {
  locked l;
  cudaError_t err = begin_call(FAKE_FREE);
  if (!err && devPtr && !free_block(device_blocks, &device_used, devPtr)) {
    report_bad_call("cudaFree of an unknown pointer", devPtr);
    err = cudaErrorInvalidValue;
  }
  return end_call(FAKE_FREE, err, 0, 0, devPtr, NULL, 0);
}

cudaError_t CUDARTAPI cudaHostAlloc(void **pHost, size_t size, unsigned int) {
  locked l;
  cudaError_t err = begin_call(FAKE_HOST_ALLOC);
  *pHost = NULL;
  if (!err && !allocate_block(host_blocks, &host_used, host_capacity, pHost, size)) err = cudaErrorMemoryAllocation;
  return end_call(FAKE_HOST_ALLOC, err, 0, 0, *pHost, NULL, size);
}

cudaError_t CUDARTAPI cudaFreeHost(void *ptr) {
  locked l;
  cudaError_t err = begin_call(FAKE_FREE_HOST);
  if (!err && ptr && !free_block(host_blocks, &host_used, ptr)) {
    report_bad_call("cudaFreeHost of an unknown pointer", ptr);
    err = cudaErrorInvalidValue;
  }
  return end_call(FAKE_FREE_HOST, err, 0, 0, ptr, NULL, 0);
}

/* ---- copies ---- */

/* synchronous: after everything queued on the legacy stream */
cudaError_t CUDARTAPI cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind) {
  locked l;
  cudaError_t err = begin_call(FAKE_MEMCPY);
  if (!err) {
    run_stream(&legacy_stream, 1);
    memcpy(dst, src, count);
  }
  return end_call(FAKE_MEMCPY, err, 0, 0, dst, src, count);
}

/* queued: the copy happens when its stream runs */
cudaError_t CUDARTAPI cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind,
                                      cudaStream_t stream) {
  locked l;
  cudaError_t err = begin_call(FAKE_MEMCPY_ASYNC);
  CUstream_st *s = stream_of(stream);
  if (!s) err = cudaErrorInvalidResourceHandle;
  if (!err) queue_op(s, fake_op{OP_COPY, dst, src, count, NULL, 0});
  return end_call(FAKE_MEMCPY_ASYNC, err, stream, 0, dst, src, count);
}

/* ---- streams ---- */

cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t *pStream, unsigned int) {
  locked l;
  cudaError_t err = begin_call(FAKE_STREAM_CREATE);
  if (!err) {
    CUstream_st *s = new CUstream_st{(int)all_streams->size() + 1, 0, 0, 0, new std::vector<fake_op>};
    all_streams->push_back(s);
    *pStream = s;
  }
  return end_call(FAKE_STREAM_CREATE, err, err ? 0 : *pStream, 0, NULL, NULL, 0);
}

/* waits for the event's latest record; an event never recorded is no wait at all */
cudaError_t CUDARTAPI cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  locked l;
  cudaError_t err = begin_call(FAKE_STREAM_WAIT_EVENT);
  CUstream_st *s = stream_of(stream);
  if (!s || !is_live_event(event)) err = cudaErrorInvalidResourceHandle;
  if (!err) {
    if (event->recorded) queue_op(s, fake_op{OP_WAIT, NULL, NULL, 0, event->stream, event->position});
    else queue_op(s, fake_op{OP_NOTHING, NULL, NULL, 0, NULL, 0});
  }
  return end_call(FAKE_STREAM_WAIT_EVENT, err, stream, event, NULL, NULL, 0);
}

cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t stream) {
  locked l;
  cudaError_t err = begin_call(FAKE_STREAM_SYNCHRONIZE);
  CUstream_st *s = stream_of(stream);
  if (!s) err = cudaErrorInvalidResourceHandle;
  if (!err) run_stream(s, 1);
  return end_call(FAKE_STREAM_SYNCHRONIZE, err, stream, 0, NULL, NULL, 0);
}

cudaError_t CUDARTAPI cudaDeviceSynchronize(void) {
  locked l;
  cudaError_t err = begin_call(FAKE_DEVICE_SYNCHRONIZE);
  if (!err) run_every_stream();
  return end_call(FAKE_DEVICE_SYNCHRONIZE, err, 0, 0, NULL, NULL, 0);
}

/* ---- events ---- */

cudaError_t CUDARTAPI cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int) {
  locked l;
  cudaError_t err = begin_call(FAKE_EVENT_CREATE);
  if (!err) {
    CUevent_st *e = new CUevent_st{(int)all_events->size() + 1, 0, 0, NULL, 0};
    all_events->push_back(e);
    *event = e;
  }
  return end_call(FAKE_EVENT_CREATE, err, 0, err ? 0 : *event, NULL, NULL, 0);
}

cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  locked l;
  cudaError_t err = begin_call(FAKE_EVENT_RECORD);
  CUstream_st *s = stream_of(stream);
  if (!s || !is_live_event(event)) err = cudaErrorInvalidResourceHandle;
  if (!err) {
    queue_op(s, fake_op{OP_EVENT_RECORD, NULL, NULL, 0, NULL, 0});
    event->recorded = 1;
    event->stream = s;
    event->position = s->submitted;
  }
  return end_call(FAKE_EVENT_RECORD, err, stream, event, NULL, NULL, 0);
}

cudaError_t CUDARTAPI cudaEventQuery(cudaEvent_t event) {
  locked l;
  cudaError_t err = begin_call(FAKE_EVENT_QUERY);
  if (!is_live_event(event)) err = cudaErrorInvalidResourceHandle;
  if (!err && !event_completed(event)) {
    /* logged, not counted as a failure */
    call_log->push_back(fake_call{FAKE_EVENT_QUERY, 0, event, NULL, NULL, 0, cudaErrorNotReady});
    if (not_ready_stays_as_last_error()) last_error = cudaErrorNotReady;
    return cudaErrorNotReady;
  }
  return end_call(FAKE_EVENT_QUERY, err, 0, event, NULL, NULL, 0);
}

cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t event) {
  locked l;
  cudaError_t err = begin_call(FAKE_EVENT_SYNCHRONIZE);
  if (!is_live_event(event)) err = cudaErrorInvalidResourceHandle;
  if (!err && event->recorded) run_stream_until(event->stream, event->position, 1);
  return end_call(FAKE_EVENT_SYNCHRONIZE, err, 0, event, NULL, NULL, 0);
}

cudaError_t CUDARTAPI cudaEventDestroy(cudaEvent_t event) {
  locked l;
  cudaError_t err = begin_call(FAKE_EVENT_DESTROY);
  if (!is_live_event(event)) err = cudaErrorInvalidResourceHandle;
  if (!err) event->destroyed = 1; /* kept, to catch later use */
  return end_call(FAKE_EVENT_DESTROY, err, 0, event, NULL, NULL, 0);
}

/* ---- errors ---- */

cudaError_t CUDARTAPI cudaGetLastError(void) {
  locked l;
  calls[FAKE_GET_LAST_ERROR]++;
  cudaError_t err = last_error;
  last_error = cudaSuccess;
  return err;
}

cudaError_t CUDARTAPI cudaPeekAtLastError(void) { return last_error; }

const char *CUDARTAPI cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "some fake error";
  }
}

const char *CUDARTAPI cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorFake";
  }
}

/* ---- the test's controls (fake_cudart.h) ---- */

const char *fake_fn_name(fake_fn f) {
  static const char *names[FAKE_FN_COUNT] = {"cudaMalloc",
                                             "cudaFree",
                                             "cudaHostAlloc",
                                             "cudaFreeHost",
                                             "cudaMemcpy",
                                             "cudaMemcpyAsync",
                                             "cudaStreamCreateWithFlags",
                                             "cudaStreamWaitEvent",
                                             "cudaEventCreateWithFlags",
                                             "cudaEventRecord",
                                             "cudaEventQuery",
                                             "cudaEventSynchronize",
                                             "cudaEventDestroy",
                                             "cudaStreamSynchronize",
                                             "cudaDeviceSynchronize",
                                             "cudaGetLastError"};
  return names[f];
}

long fake_calls(fake_fn f) {
  locked l;
  return calls[f];
}

long fake_failures(fake_fn f) {
  locked l;
  return failures[f];
}

void fake_fail_next(fake_fn f, cudaError_t err, int count, int skip) {
  locked l;
  error_to_inject[f] = err;
  failures_to_inject[f] = count;
  successes_before_failing[f] = skip;
}

void fake_set_device_capacity(size_t bytes) {
  locked l;
  device_capacity = bytes;
}

void fake_set_host_capacity(size_t bytes) {
  locked l;
  host_capacity = bytes;
}

size_t fake_device_used(void) {
  locked l;
  return device_used;
}

size_t fake_host_used(void) {
  locked l;
  return host_used;
}

long fake_device_allocations(void) {
  locked l;
  return (long)device_blocks->size();
}

long fake_host_allocations(void) {
  locked l;
  return (long)host_blocks->size();
}

long fake_bad_calls(void) {
  locked l;
  return bad_calls;
}

const char *fake_last_bad_call(void) { return last_bad_call; }

void fake_stream_run(cudaStream_t stream, int force) {
  locked l;
  CUstream_st *s = stream_of(stream);
  if (s) run_stream(s, force);
}

void fake_run_all(void) {
  locked l;
  run_every_stream();
}

int fake_event_done(cudaEvent_t e) {
  locked l;
  return event_completed(e);
}

long fake_live_events(void) {
  locked l;
  long n = 0;
  for (CUevent_st *e : *all_events) n += !e->destroyed;
  return n;
}

long fake_live_streams(void) {
  locked l;
  long n = 0;
  for (CUstream_st *s : *all_streams) n += !s->destroyed;
  return n;
}

long fake_log_size(void) {
  locked l;
  return (long)call_log->size();
}

fake_call fake_log_at(long i) {
  locked l;
  return (*call_log)[(size_t)i];
}

int fake_device_block_of(const void *p, void **base, size_t *bytes) {
  locked l;
  auto it = device_blocks->upper_bound((uintptr_t)p);
  if (it == device_blocks->begin()) return 0;
  --it;
  if ((uintptr_t)p >= it->first + it->second) return 0;
  if (base) *base = (void *)it->first;
  if (bytes) *bytes = it->second;
  return 1;
}

long fake_stream_submitted(cudaStream_t stream) {
  locked l;
  CUstream_st *s = stream_of(stream);
  return s ? s->submitted : -1;
}

long fake_stream_completed(cudaStream_t stream) {
  locked l;
  CUstream_st *s = stream_of(stream);
  return s ? s->completed : -1;
}

}  // extern "C"
