/* allocator.cu: the CUDA caching allocator behind the backend's alloc and free, the CUDA
 * layer over cuda/block_pool.c, which keeps the books (segments from cudaMalloc, blocks
 * carved from them by best fit, splitting and merging, statistics; its header comment has
 * the sizes and the rules, PyTorch's). cudaMalloc and cudaFree are slow and synchronise the
 * device, so freed blocks are kept for reuse.
 *
 * Each stream that allocates has a pool of its own (small and large blocks; a table keyed
 * by cudaStream_t), so a freed block is reused only by work queued on the stream it was
 * allocated for, after the work that used it before:
 * - fv_cuda_alloc and fv_cuda_free (the backend table's entries) serve the compute stream
 *   fv_cuda_stream: a block freed there is reusable at once.
 * - fv_cuda_alloc_on(bytes, stream) serves memory whose first user is another stream
 *   (host-to-device uploads on a copy stream). Such a block is assumed to be used by the
 *   compute stream too (PyTorch's record_stream): when it is freed, an event is recorded
 *   on fv_cuda_stream and the block is held out of its pool until the event has completed.
 *   Held blocks are polled (cudaEventQuery) at each allocation on their stream and by
 *   empty_cache, and waited for before the out-of-memory retry. Events come from a cache
 *   (cudaEventDisableTiming), each kept with its record of a held block; when none can be
 *   had, the free waits for the compute stream instead.
 * When cudaMalloc runs out of memory, the held blocks are waited for, every stream's
 * wholly free segments are given back and the allocation is tried once more; a failure
 * after that is FV_ERR_MEMORY with CUDA's message and the allocator's numbers.
 *
 * Statistics, summed over the streams: allocated (bytes of the blocks handed out and not
 * yet freed), reserved (bytes of the segments taken from the driver: allocated, held and
 * cached), peak allocated. FOVEA_NO_ALLOC_CACHE=1 turns the cache off (for
 * compute-sanitizer runs), as it does for the CPU allocator: every block is a cudaMalloc
 * of its rounded size of its own, given back by cudaFree when it is freed (for other
 * streams, once its event has completed).
 *
 * fv_cuda_free is given the bytes that were asked for: a count that differs from the
 * block's request, or a pointer that is no live block (freed twice, not from here), is
 * recorded with fv_fail (FV_ERR_INTERNAL) and nothing aborts: the block is freed by its
 * address all the same, an unknown pointer is left alone. One mutex guards it all;
 * cudaMalloc and cudaFree run under it.
 *
 * Build: nvcc -std=c++17 -O2 -Xcompiler -fPIC -Icore -c cuda/allocator.cu (see backend.cu),
 * linked with cuda/block_pool.c (compiled by the C compiler).
 */
#include <stdlib.h>
#include <string.h>

#include <mutex>

#include "common.cuh"
extern "C" {
#include "block_pool.h"
}

namespace {

enum { MAX_STREAMS = 16 };

/* A block freed on another stream than the compute stream, held until `event` (recorded
 * on fv_cuda_stream at the free) has completed; spare records keep their event. */
struct held_block {
  void *ptr;
  cudaEvent_t event;
  held_block *next;
};

struct stream_pool {
  cudaStream_t stream;
  fv_block_pool *pool;
  held_block *held_first, *held_last; /* in the order of their events (one stream: completion order) */
};

/* The segment callbacks' context: the last cudaMalloc's outcome, for the error message. */
struct segment_requests {
  cudaError_t error;
  size_t bytes;
};

std::mutex lock;
stream_pool streams[MAX_STREAMS];
int stream_count;
held_block *spare_records;
segment_requests last_segment;
int64_t peak_bytes;

void *cuda_segment_alloc(size_t bytes, void *context) {
  segment_requests *requests = (segment_requests *)context;
  void *p = NULL;
  requests->bytes = bytes;
  requests->error = cudaMalloc(&p, bytes);
  if (requests->error == cudaSuccess) return p;
  (void)cudaGetLastError();
  return NULL;
}

void cuda_segment_free(void *segment, size_t, void *) {
  (void)cudaFree(segment); /* errors at exit (runtime unloading) are of no use to anyone */
  (void)cudaGetLastError();
}

/* ---- the table of streams ---- */

stream_pool *pool_of_stream(cudaStream_t stream) {
  for (int i = 0; i < stream_count; i++)
    if (streams[i].stream == stream) return &streams[i];
  return NULL;
}

/* The stream's pool, made on its first allocation; NULL with fv_fail when it cannot be. */
stream_pool *pool_for_stream(cudaStream_t stream) {
  stream_pool *sp = pool_of_stream(stream);
  if (sp) return sp;
  if (stream_count == MAX_STREAMS) {
    fv_fail(FV_ERR_INTERNAL, "allocate: more than %d CUDA streams allocate memory", MAX_STREAMS);
    return NULL;
  }
  fv_block_pool_config config = {cuda_segment_alloc, cuda_segment_free, &last_segment, fv_cuda_alloc_caching()};
  fv_block_pool *pool = fv_block_pool_new(&config);
  if (!pool) {
    fv_fail(FV_ERR_MEMORY, "allocate: out of host memory for the CUDA allocator's bookkeeping");
    return NULL;
  }
  sp = &streams[stream_count++];
  sp->stream = stream;
  sp->pool = pool;
  sp->held_first = sp->held_last = NULL;
  return sp;
}

/* The pool whose live block ptr is, with the block's info; NULL when none. */
stream_pool *pool_holding(const void *ptr, fv_block_info *info) {
  for (int i = 0; i < stream_count; i++)
    if (fv_block_pool_lookup(streams[i].pool, ptr, info)) return &streams[i];
  return NULL;
}

/* ---- blocks held until the compute stream has passed their free ---- */

/* A spare record with its event, or a new one; NULL when no event can be made. */
held_block *take_record(void) {
  held_block *record = spare_records;
  if (record) {
    spare_records = record->next;
    return record;
  }
  record = (held_block *)malloc(sizeof *record);
  if (record && cudaEventCreateWithFlags(&record->event, cudaEventDisableTiming) != cudaSuccess) {
    (void)cudaGetLastError();
    free(record);
    record = NULL;
  }
  return record;
}

void keep_record(held_block *record) {
  record->next = spare_records;
  spare_records = record;
}

/* Frees ptr once the work queued on the compute stream so far has run. */
void free_after_compute_stream(stream_pool *sp, void *ptr) {
  held_block *record = take_record();
  if (record && cudaEventRecord(record->event, fv_cuda_stream) == cudaSuccess) {
    fv_block_pool_hold(sp->pool, ptr);
    record->ptr = ptr;
    record->next = NULL;
    if (sp->held_last) sp->held_last->next = record;
    else sp->held_first = record;
    sp->held_last = record;
    return;
  }
  if (record) keep_record(record);
  (void)cudaGetLastError();
  (void)cudaStreamSynchronize(fv_cuda_stream); /* no event: wait for the stream itself */
  (void)cudaGetLastError();
  fv_block_pool_free(sp->pool, ptr);
}

/* Frees the held blocks of sp whose event has completed (wait: waits for all of them). A
 * failed query (a broken context) counts as completed: nothing will run any more. */
void free_passed_blocks(stream_pool *sp, int wait) {
  while (sp->held_first) {
    held_block *record = sp->held_first;
    cudaError_t status = wait ? cudaEventSynchronize(record->event) : cudaEventQuery(record->event);
    if (status == cudaErrorNotReady) {
      fv_cuda_forget_not_ready();
      return;
    }
    if (status != cudaSuccess) (void)cudaGetLastError();
    sp->held_first = record->next;
    if (!sp->held_first) sp->held_last = NULL;
    fv_block_pool_free(sp->pool, record->ptr);
    keep_record(record);
  }
}

/* ---- statistics ---- */

int64_t allocated_bytes(void) {
  int64_t sum = 0;
  for (int i = 0; i < stream_count; i++) sum += fv_block_pool_get_stats(streams[i].pool).allocated_bytes;
  return sum;
}

int64_t reserved_bytes(void) {
  int64_t sum = 0;
  for (int i = 0; i < stream_count; i++) sum += fv_block_pool_get_stats(streams[i].pool).reserved_bytes;
  return sum;
}

void note_peak(void) {
  int64_t now = allocated_bytes();
  if (now > peak_bytes) peak_bytes = now;
}

/* ---- allocation ---- */

/* Gives back every wholly free segment of every stream, after freeing the held blocks
 * whose event has completed (wait: after waiting for all of them). */
void release_cache(int wait) {
  for (int i = 0; i < stream_count; i++) {
    free_passed_blocks(&streams[i], wait);
    fv_block_pool_release_free_segments(streams[i].pool);
  }
}

int out_of_device_memory(fv_block_pool_result result) {
  return result == FV_BLOCK_POOL_NO_SEGMENT && last_segment.error == cudaErrorMemoryAllocation;
}

void report_failure(fv_block_pool_result result, size_t bytes, int cache_emptied) {
  if (result == FV_BLOCK_POOL_TOO_LARGE) {
    fv_fail(FV_ERR_MEMORY, "allocate: %zu bytes is more than a GPU can hold", bytes);
  } else if (result == FV_BLOCK_POOL_NO_HOST_MEMORY) {
    fv_fail(FV_ERR_MEMORY, "allocate: out of host memory for the CUDA allocator's bookkeeping");
  } else {
    cudaError_t err = last_segment.error;
    fv_fail(err == cudaErrorMemoryAllocation ? FV_ERR_MEMORY : FV_ERR_DEVICE,
            "allocate: cudaMalloc(%zu bytes) for a request of %zu bytes failed at %s:%d: %s (%s); the allocator "
            "holds %lld bytes in use, %lld reserved%s",
            last_segment.bytes, bytes, __FILE__, __LINE__, cudaGetErrorString(err), cudaGetErrorName(err),
            (long long)allocated_bytes(), (long long)reserved_bytes(),
            cache_emptied ? " (after emptying its cache)" : "");
  }
}

}  // namespace

extern "C" void *fv_cuda_alloc_on(size_t bytes, cudaStream_t stream) {
  std::lock_guard<std::mutex> guard(lock);
  stream_pool *sp = pool_for_stream(stream);
  if (!sp) return NULL;
  free_passed_blocks(sp, 0);
  void *p = NULL;
  fv_block_pool_result result = fv_block_pool_alloc(sp->pool, bytes, &p);
  int cache_emptied = out_of_device_memory(result);
  if (cache_emptied) {
    release_cache(1);
    result = fv_block_pool_alloc(sp->pool, bytes, &p);
  }
  if (result != FV_BLOCK_POOL_OK) {
    report_failure(result, bytes, cache_emptied);
    return NULL;
  }
  note_peak();
  return p;
}

extern "C" void *fv_cuda_alloc(size_t bytes) { return fv_cuda_alloc_on(bytes, fv_cuda_stream); }

extern "C" void fv_cuda_free(void *data, size_t bytes) {
  if (!data) return;
  std::lock_guard<std::mutex> guard(lock);
  fv_block_info info;
  stream_pool *sp = pool_holding(data, &info);
  if (!sp || info.held) {
    fv_fail(FV_ERR_INTERNAL, "free: %p (%zu bytes) is no live block of the CUDA allocator (freed twice?); ignored",
            data, bytes);
    return;
  }
  if (info.requested != bytes)
    fv_fail(FV_ERR_INTERNAL, "free: %zu bytes given for the block at %p, which was asked for %zu; freed all the same",
            bytes, data, info.requested);
  if (sp->stream == fv_cuda_stream) fv_block_pool_free(sp->pool, data);
  else free_after_compute_stream(sp, data);
}

extern "C" void fv_cuda_empty_cache(void) {
  std::lock_guard<std::mutex> guard(lock);
  release_cache(0);
}

extern "C" int fv_cuda_memory_stats(int64_t *allocated, int64_t *reserved, int64_t *peak) {
  std::lock_guard<std::mutex> guard(lock);
  if (allocated) *allocated = allocated_bytes();
  if (reserved) *reserved = reserved_bytes();
  if (peak) *peak = peak_bytes;
  return FV_OK;
}

extern "C" void fv_cuda_reset_peak(void) {
  std::lock_guard<std::mutex> guard(lock);
  peak_bytes = allocated_bytes();
}
