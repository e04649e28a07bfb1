/* transfer.cu: pinned host memory and asynchronous host-to-device uploads, as PyTorch's
 * pin_memory and non_blocking copies on a side stream.
 *
 * Pinned memory (the backend's host_alloc and host_free; fv_pin_memory, the loader's
 * pin_memory). cudaHostAlloc is slow (it maps and locks pages), so freed blocks are kept
 * for reuse: sizes are rounded (under 1 MiB to a multiple of 4 KiB, above to one of four
 * classes per power of two) and each rounded size has a free list, as allocator.cu does
 * for device memory; the rounding depends on the byte size alone, which host_free is
 * given. On cudaErrorMemoryAllocation the free blocks go back (cudaFreeHost) and the
 * allocation is tried once more. FOVEA_NO_ALLOC_CACHE=1 turns the cache off. Both entries
 * run on any thread (the loader's workers allocate pinned batches): one lock.
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

namespace {

/* ---- the pinned block cache ---- */

enum {
  SMALL_LIMIT = 1 << 20,
  SMALL_ROUND = 4096,
  SMALL_CLASSES = SMALL_LIMIT / SMALL_ROUND + 1,
  LARGE_CLASSES = 4 * 64
};

struct host_block {
  void *ptr;
  size_t size; /* rounded */
  host_block *next;
};

std::mutex host_lock;
host_block *small_lists[SMALL_CLASSES];
host_block *large_lists[LARGE_CLASSES];
int64_t in_use_bytes, cached_bytes, allocations;
int cache_off = -1; /* read from the environment on first use */

/* The free list for bytes and the rounded size its blocks have (NULL: not cached). */
host_block **list_for(size_t bytes, size_t *rounded) {
  if (bytes == 0) bytes = 1;
  if (bytes < SMALL_LIMIT) {
    size_t r = (bytes + SMALL_ROUND - 1) / SMALL_ROUND * SMALL_ROUND;
    *rounded = r;
    return &small_lists[r / SMALL_ROUND];
  }
  int k = 63 - __builtin_clzll((unsigned long long)bytes);
  size_t base = (size_t)1 << k;
  for (int j = 0; j <= 4; j++) {
    size_t size = base + (base / 4) * (size_t)j;
    if (size >= bytes) {
      if (j == 4) {
        *rounded = k + 1 < 64 ? (size_t)1 << (k + 1) : bytes;
        return k + 1 < 64 ? &large_lists[4 * (k + 1)] : NULL;
      }
      *rounded = size;
      return &large_lists[4 * k + j];
    }
  }
  *rounded = bytes;
  return NULL;
}

/* Under host_lock: every free block, off the lists. */
host_block *take_cache_locked(void) {
  host_block *all = NULL;
  host_block **lists[2] = {small_lists, large_lists};
  int counts[2] = {SMALL_CLASSES, LARGE_CLASSES};
  for (int l = 0; l < 2; l++)
    for (int c = 0; c < counts[l]; c++)
      while (lists[l][c]) {
        host_block *b = lists[l][c];
        lists[l][c] = b->next;
        b->next = all;
        all = b;
      }
  return all;
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
    if (err != cudaErrorNotReady && status == FV_OK)
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
  host_block *all;
  {
    std::lock_guard<std::mutex> guard(host_lock);
    all = take_cache_locked();
  }
  while (all) {
    host_block *b = all;
    all = b->next;
    (void)cudaFreeHost(b->ptr);
    {
      std::lock_guard<std::mutex> guard(host_lock);
      cached_bytes -= (int64_t)b->size;
    }
    free(b);
  }
  (void)cudaGetLastError();
}

extern "C" void *fv_cuda_host_alloc(size_t bytes) {
  size_t rounded;
  host_block **list = list_for(bytes, &rounded);
  {
    std::lock_guard<std::mutex> guard(host_lock);
    if (cache_off < 0) {
      const char *off = getenv("FOVEA_NO_ALLOC_CACHE");
      cache_off = off && strcmp(off, "0") != 0;
    }
    if (list && *list) {
      host_block *b = *list;
      *list = b->next;
      void *p = b->ptr;
      free(b);
      cached_bytes -= (int64_t)rounded;
      in_use_bytes += (int64_t)rounded;
      allocations++;
      return p;
    }
  }
  void *p = NULL;
  cudaError_t err = cudaHostAlloc(&p, rounded, cudaHostAllocDefault);
  if (err == cudaErrorMemoryAllocation) { /* give the free blocks back and try once more */
    (void)cudaGetLastError();
    fv_cuda_pinned_empty_cache();
    err = cudaHostAlloc(&p, rounded, cudaHostAllocDefault);
  }
  if (err != cudaSuccess) {
    char call[64];
    snprintf(call, sizeof call, "cudaHostAlloc(%zu bytes)", rounded);
    fv_cuda_fail(err, "pin_memory", call, __FILE__, __LINE__);
    return NULL;
  }
  std::lock_guard<std::mutex> guard(host_lock);
  in_use_bytes += (int64_t)rounded;
  allocations++;
  return p;
}

extern "C" void fv_cuda_host_free(void *ptr, size_t bytes) {
  if (!ptr) return;
  size_t rounded;
  host_block **list = list_for(bytes, &rounded);
  {
    std::lock_guard<std::mutex> guard(host_lock);
    in_use_bytes -= (int64_t)rounded;
    if (list && cache_off == 0) {
      host_block *b = (host_block *)malloc(sizeof *b);
      if (b) {
        b->ptr = ptr;
        b->size = rounded;
        b->next = *list;
        *list = b;
        cached_bytes += (int64_t)rounded;
        return;
      }
    }
  }
  (void)cudaFreeHost(ptr); /* uncached */
  (void)cudaGetLastError();
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
    if (in_use) *in_use = in_use_bytes;
    if (cached) *cached = cached_bytes;
    if (allocs) *allocs = allocations;
  }
  std::lock_guard<std::mutex> guard(flight_lock);
  if (in_flight) *in_flight = flight_count;
  return FV_OK;
}
