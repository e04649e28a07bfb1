/* transfer.cu: pinned host memory and asynchronous host-to-device uploads, as PyTorch's
 * pin_memory and non_blocking copies on a side stream.
 *
 * Pinned memory (the backend's host_alloc and host_free; fv_pin_memory, the loader's
 * pin_memory). cudaHostAlloc is slow (it maps and locks pages), so pinned memory is kept
 * by a block pool (cuda/block_pool.c, the device allocator's bookkeeping): segments from
 * cudaHostAlloc, blocks carved from them by best fit, split and merged, with PyTorch's
 * sizes. A pinned block needs no event before reuse: it is freed only when its storage's
 * last reference goes, and an upload holds one until its copy has completed (below). When
 * cudaHostAlloc fails, the wholly free segments go back (cudaFreeHost) and the allocation
 * is tried once more. FOVEA_NO_ALLOC_CACHE=1 turns the cache off. Both entries run on any
 * thread (the loader's workers allocate pinned batches): one lock.
 *
 * Uploads (the backend's upload; fv_to_device and fv_copy_ of a contiguous pinned cpu
 * tensor). The compute stream is the legacy default stream (fv_cuda_stream), which would
 * serialize with any blocking stream, so copies run on a stream made with
 * cudaStreamNonBlocking. An upload takes its destination from that stream's pool
 * (fv_cuda_alloc_on: freed later, it is held back until the compute stream has passed
 * the free point), queues cudaMemcpyAsync on the copy stream, records an event after it
 * and makes the compute stream wait for that event (cudaStreamWaitEvent): kernels queued
 * later read the bytes only once they are there, while the host returns at once and the
 * copy overlaps the compute work queued before it. The source's storage is retained and
 * kept, with the event, in a list of uploads in flight; the list is polled
 * (cudaEventQuery) at each upload and emptied after the device synchronize of
 * fv_cuda_synchronize (and at exit), and a finished upload's source is released then.
 * So a pinned block is freed, and so reused, only after every upload that read it has
 * completed (its storage's last reference is the list's), and a loader never overwrites
 * a batch in flight (it reuses a batch only when its storage's refcount is 1). Pageable
 * sources keep the synchronous cudaMemcpy of copy.cu. Every CUDA call is checked
 * (FV_CUDA_TRY, op "pin_memory" or "upload"); nothing aborts.
 *
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/transfer.cu (see backend.cu)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>

#include "common.cuh"
extern "C" {
#include "block_pool.h"
}

namespace {

/* ---- the pinned block pool ---- */

/* The segment callbacks' context: the last cudaHostAlloc's outcome, for the error message. */
struct host_segment_request {
  cudaError_t error;
  size_t bytes;
};

std::mutex host_lock;
fv_block_pool *host_pool; /* made on first use, under host_lock */
host_segment_request last_host_segment;
int64_t allocations;

void *host_segment_alloc(size_t bytes, void *context) {
  host_segment_request *request = (host_segment_request *)context;
  void *p = NULL;
  request->bytes = bytes;
  request->error = cudaHostAlloc(&p, bytes, cudaHostAllocDefault);
  if (request->error != cudaSuccess) {
    (void)cudaGetLastError();
    return NULL;
  }
  return p;
}

void host_segment_free(void *segment, size_t bytes, void *context) {
  (void)bytes;
  (void)context;
  (void)cudaFreeHost(segment); /* errors at exit (runtime unloading) are of no use to anyone */
  (void)cudaGetLastError();
}

/* Under host_lock: the pool, made on first use (NULL when host memory runs out). */
fv_block_pool *host_pool_locked(void) {
  if (host_pool) return host_pool;
  fv_block_pool_config config = {host_segment_alloc, host_segment_free, &last_host_segment,
                                 fv_cuda_alloc_caching()};
  host_pool = fv_block_pool_new(&config);
  return host_pool;
}

/* ---- uploads in flight ---- */

struct flight {
  cudaEvent_t done;    /* recorded on the copy stream after the copy */
  fv_storage *source;  /* retained until done has completed */
};

std::mutex flight_lock;
cudaStream_t copy_stream;
int copy_stream_made;
flight *flights;
int flight_count, flight_cap;
cudaEvent_t *spare_events; /* events of finished uploads, for the next ones */
int spare_count, spare_cap;

/* Under flight_lock: the copy stream, made on first use. */
int copy_stream_ready_locked(void) {
  if (copy_stream_made) return FV_OK;
  FV_CUDA_TRY("upload", cudaStreamCreateWithFlags(&copy_stream, cudaStreamNonBlocking));
  copy_stream_made = 1;
  return FV_OK;
}

/* Under flight_lock: an event for an upload (a spare one, or a new one without timing). */
int event_locked(cudaEvent_t *ev) {
  if (spare_count > 0) {
    *ev = spare_events[--spare_count];
    return FV_OK;
  }
  FV_CUDA_TRY("upload", cudaEventCreateWithFlags(ev, cudaEventDisableTiming));
  return FV_OK;
}

/* Under flight_lock: keeps a completed event for reuse (destroys it when the list cannot grow). */
void spare_locked(cudaEvent_t ev) {
  if (spare_count == spare_cap) {
    int cap = spare_cap ? 2 * spare_cap : 16;
    cudaEvent_t *grown = (cudaEvent_t *)realloc(spare_events, (size_t)cap * sizeof *grown);
    if (!grown) {
      (void)cudaEventDestroy(ev);
      return;
    }
    spare_events = grown;
    spare_cap = cap;
  }
  spare_events[spare_count++] = ev;
}

/* Under flight_lock: releases the sources of the finished uploads and keeps the others.
 * wait: the device has been synchronized, so every upload has finished (each event is
 * still waited for, to be sure). Returns the first failure other than "not ready" (an
 * earlier asynchronous fault, usually); an upload whose state is unknown keeps its
 * source. Releasing a source frees its pinned block (host_free takes host_lock, never
 * flight_lock: no lock cycle). */
int poll_locked(int wait) {
  int status = FV_OK, kept = 0;
  for (int i = 0; i < flight_count; i++) {
    flight f = flights[i];
    cudaError_t err = wait ? cudaEventSynchronize(f.done) : cudaEventQuery(f.done);
    if (err == cudaSuccess) {
      fv_storage_release(f.source);
      spare_locked(f.done);
      continue;
    }
    flights[kept++] = f;
    if (err == cudaErrorNotReady) fv_cuda_forget_not_ready();
    else if (status == FV_OK)
      status = fv_cuda_fail(err, "upload", wait ? "cudaEventSynchronize(an upload's event)"
                                                : "cudaEventQuery(an upload's event)", __FILE__, __LINE__);
  }
  flight_count = kept;
  return status;
}

/* Under flight_lock: room for one more upload in the list, before anything is queued. */
int room_locked(void) {
  if (flight_count < flight_cap) return FV_OK;
  int cap = flight_cap ? 2 * flight_cap : 16;
  flight *grown = (flight *)realloc(flights, (size_t)cap * sizeof *grown);
  if (!grown) return fv_fail(FV_ERR_MEMORY, "upload: out of host memory for the list of uploads in flight");
  flights = grown;
  flight_cap = cap;
  return FV_OK;
}

/* Under flight_lock: the copy of bytes from host to dst on the copy stream, its event,
 * and the compute stream's wait for it. */
int queue_copy_locked(void *dst, const void *host, size_t bytes, cudaEvent_t done) {
  FV_CUDA_TRY("upload", cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, copy_stream));
  FV_CUDA_TRY("upload", cudaEventRecord(done, copy_stream));
  FV_CUDA_TRY("upload", cudaStreamWaitEvent(fv_cuda_stream, done, 0));
  return FV_OK;
}

/* At exit (the library is finished with): every upload still listed is waited for and its
 * source released. The CUDA runtime may be unloading already: its errors are ignored. */
struct drain_at_exit {
  ~drain_at_exit() {
    std::lock_guard<std::mutex> guard(flight_lock);
    if (flight_count == 0) return; /* no CUDA call at all */
    for (int i = 0; i < flight_count; i++) {
      (void)cudaEventSynchronize(flights[i].done);
      fv_storage_release(flights[i].source);
    }
    flight_count = 0;
    (void)cudaGetLastError();
  }
} drain; /* defined after the locks and lists: destroyed before them */

}  // namespace

extern "C" void fv_cuda_pinned_empty_cache(void) {
  std::lock_guard<std::mutex> guard(host_lock);
  if (host_pool) fv_block_pool_release_free_segments(host_pool);
}

extern "C" void *fv_cuda_host_alloc(size_t bytes) {
  std::lock_guard<std::mutex> guard(host_lock);
  fv_block_pool *pool = host_pool_locked();
  if (!pool) {
    fv_fail(FV_ERR_MEMORY, "pin_memory: out of host memory for the pinned pool's bookkeeping");
    return NULL;
  }
  void *p = NULL;
  fv_block_pool_result result = fv_block_pool_alloc(pool, bytes, &p);
  if (result == FV_BLOCK_POOL_NO_SEGMENT && last_host_segment.error == cudaErrorMemoryAllocation) {
    fv_block_pool_release_free_segments(pool); /* give the free segments back, try once more */
    result = fv_block_pool_alloc(pool, bytes, &p);
  }
  switch (result) {
    case FV_BLOCK_POOL_OK:
      allocations++;
      return p;
    case FV_BLOCK_POOL_NO_SEGMENT: {
      char call[64];
      snprintf(call, sizeof call, "cudaHostAlloc(%zu bytes)", last_host_segment.bytes);
      fv_cuda_fail(last_host_segment.error, "pin_memory", call, __FILE__, __LINE__);
      return NULL;
    }
    case FV_BLOCK_POOL_TOO_LARGE:
      fv_fail(FV_ERR_MEMORY, "pin_memory: %zu bytes is too large to allocate", bytes);
      return NULL;
    case FV_BLOCK_POOL_NO_HOST_MEMORY:
      fv_fail(FV_ERR_MEMORY, "pin_memory: out of host memory for the pinned pool's bookkeeping");
      return NULL;
  }
  return NULL;
}

extern "C" void fv_cuda_host_free(void *ptr, size_t bytes) {
  if (!ptr) return;
  std::lock_guard<std::mutex> guard(host_lock);
  fv_block_info info;
  if (!host_pool || !fv_block_pool_lookup(host_pool, ptr, &info)) {
    fv_fail(FV_ERR_INTERNAL, "pin_memory: free of %p, which is no pinned block in use", ptr);
    return;
  }
  if (info.requested != bytes)
    fv_fail(FV_ERR_INTERNAL, "pin_memory: free of %zu bytes at %p, allocated as %zu", bytes, ptr, info.requested);
  fv_block_pool_free(host_pool, ptr);
}

extern "C" int fv_cuda_upload(void **data, const fv_tensor *src, size_t bytes) {
  *data = NULL;
  if (src->device_type != FV_CPU || !src->storage || src->storage->pinned_for != FV_CUDA)
    return fv_fail(FV_ERR_ARGUMENT, "upload: the source is not in host memory pinned for cuda");
  const char *host = (const char *)src->storage->data + src->offset * fv_dtype_size(src->scalar_type);
  std::lock_guard<std::mutex> guard(flight_lock);
  FV_TRY(poll_locked(0)); /* finished uploads give their sources back */
  FV_TRY(copy_stream_ready_locked());
  FV_TRY(room_locked());
  cudaEvent_t done;
  FV_TRY(event_locked(&done));
  fv_clear_error(); /* the allocator says why it failed */
  void *p = fv_cuda_alloc_on(bytes, copy_stream);
  if (!p) {
    spare_locked(done);
    if (fv_last_status()) return fv_last_status();
    return fv_fail(FV_ERR_MEMORY, "upload: cannot allocate %zu bytes on cuda for the copy", bytes);
  }
  int status = queue_copy_locked(p, host, bytes, done);
  if (status) { /* let whatever was queued finish before the memory and the source are let go */
    (void)cudaStreamSynchronize(copy_stream);
    (void)cudaGetLastError();
    fv_cuda_free(p, bytes);
    (void)cudaEventDestroy(done);
    return status;
  }
  fv_storage_retain(src->storage);
  flights[flight_count].done = done;
  flights[flight_count].source = src->storage;
  flight_count++;
  *data = p;
  return FV_OK;
}

extern "C" int fv_cuda_uploads_settle(void) {
  std::lock_guard<std::mutex> guard(flight_lock);
  return poll_locked(1);
}

extern "C" int fv_cuda_pinned_stats(int64_t *in_use, int64_t *cached, int64_t *allocs, int64_t *in_flight) {
  {
    std::lock_guard<std::mutex> guard(host_lock);
    fv_block_pool_stats st = {};
    if (host_pool) st = fv_block_pool_get_stats(host_pool);
    if (in_use) *in_use = st.allocated_bytes;
    if (cached) *cached = st.cached_bytes;
    if (allocs) *allocs = allocations;
  }
  std::lock_guard<std::mutex> guard(flight_lock);
  if (in_flight) *in_flight = flight_count;
  return FV_OK;
}
