/* fake_cudart.h: the controls of the fake CUDA runtime (fake_cudart.cpp) that
 * test_cuda_host.cpp drives cuda/allocator.cu, cuda/transfer.cu and cuda/side_stream.cu
 * against, on a machine with nvcc and no GPU: the fake is linked in place of libcudart
 * (`make cuda-host-test`, run by spec/cuda_host_spec.lua; see test_cuda_host.cpp).
 * Through these the test counts and reads back the runtime calls made (a log of every
 * call), injects errors, caps device and pinned memory, and decides when each stream's
 * queued work (copies, event records, waits) runs. */
#ifndef FAKE_CUDART_H
#define FAKE_CUDART_H
#include <stddef.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The runtime functions the fake counts, logs and can make fail (cudaMalloc, ...). */
typedef enum fake_fn {
  FAKE_MALLOC,
  FAKE_FREE,
  FAKE_HOST_ALLOC,
  FAKE_FREE_HOST,
  FAKE_MEMCPY,
  FAKE_MEMCPY_ASYNC,
  FAKE_STREAM_CREATE,
  FAKE_STREAM_WAIT_EVENT,
  FAKE_EVENT_CREATE,
  FAKE_EVENT_RECORD,
  FAKE_EVENT_QUERY,
  FAKE_EVENT_SYNCHRONIZE,
  FAKE_EVENT_DESTROY,
  FAKE_STREAM_SYNCHRONIZE,
  FAKE_DEVICE_SYNCHRONIZE,
  FAKE_GET_LAST_ERROR,
  FAKE_FN_COUNT
} fake_fn;

/* One logged call: what it named and what it returned. */
typedef struct fake_call {
  fake_fn fn;
  cudaStream_t stream; /* the stream named (0 for the legacy stream) */
  cudaEvent_t event;
  void *dst;
  const void *src;
  size_t bytes;
  cudaError_t result;
} fake_call;

const char *fake_fn_name(fake_fn f);
long fake_calls(fake_fn f);              /* calls made, failed ones included */
long fake_failures(fake_fn f);           /* calls that returned an error */
/* The next `count` calls of f (after `skip` successful ones) return err. */
void fake_fail_next(fake_fn f, cudaError_t err, int count, int skip);
void fake_set_device_capacity(size_t bytes); /* cudaMalloc fails with cudaErrorMemoryAllocation beyond it */
void fake_set_host_capacity(size_t bytes);   /* cudaHostAlloc likewise */
size_t fake_device_used(void);
size_t fake_host_used(void);
long fake_device_allocations(void); /* live cudaMalloc blocks */
long fake_host_allocations(void);   /* live cudaHostAlloc blocks */
long fake_bad_calls(void);          /* frees of unknown pointers, use of destroyed events, ... */
const char *fake_last_bad_call(void);
/* Stream s runs everything queued so far (force: also whatever its waits depend on; else it
 * stops before the first wait on an event that has not completed). */
void fake_stream_run(cudaStream_t s, int force);
void fake_run_all(void);
int fake_event_done(cudaEvent_t e);
long fake_live_events(void);
long fake_live_streams(void);
long fake_log_size(void);
fake_call fake_log_at(long i);
/* Whether p lies in a live cudaMalloc block; *base gets the block's start. */
int fake_device_block_of(const void *p, void **base, size_t *bytes);
/* the stream's queue position counters */
long fake_stream_submitted(cudaStream_t s);
long fake_stream_completed(cudaStream_t s);

#ifdef __cplusplus
}
#endif
#endif
