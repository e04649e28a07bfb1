/* allocator.cu: the CUDA caching allocator behind the backend's alloc and free.
 * cudaMalloc and cudaFree are slow and synchronise the device, so released blocks are
 * kept for reuse: sizes are rounded (under 1 MiB to a multiple of 512 bytes, above to one
 * of four classes per power of two, so at most 25% is lost) and each rounded size has a
 * free list. The rounding depends on the byte size alone, which free() is given, so no
 * table of live pointers is needed. Blocks are not split. Reuse is safe without events
 * because every kernel and copy of the backend runs on one stream, in order.
 * When cudaMalloc runs out of memory the cache is given back to the driver and the
 * allocation tried once more; a failure after that is FV_ERR_MEMORY with CUDA's message
 * and the allocator's numbers. Statistics: allocated (rounded bytes in use), reserved
 * (taken from the driver: in use plus cached), peak allocated. FOVEA_NO_ALLOC_CACHE=1
 * turns the cache off (for compute-sanitizer runs), as it does for the CPU allocator.
 *
 * Build: nvcc -std=c++17 -O2 -Xcompiler -fPIC -Icore -c cuda/allocator.cu (see backend.cu)
 */
#include <stdlib.h>
#include <string.h>

#include <mutex>

#include "common.cuh"

namespace {

enum { SMALL_LIMIT = 1 << 20, SMALL_ROUND = 512, SMALL_CLASSES = SMALL_LIMIT / SMALL_ROUND + 1, LARGE_CLASSES = 4 * 64 };

struct cached_block {
  void *ptr;
  size_t size; /* rounded */
  cached_block *next;
};

std::mutex lock;
cached_block *small_lists[SMALL_CLASSES];
cached_block *large_lists[LARGE_CLASSES];
int64_t allocated_bytes, reserved_bytes, peak_bytes;
int cache_off = -1; /* read from the environment on first use */

/* The free list for bytes and the rounded size its blocks have. */
cached_block **list_for(size_t bytes, size_t *rounded) {
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
  return NULL; /* beyond any class: not cached */
}

void note_allocated(int64_t delta) {
  allocated_bytes += delta;
  if (allocated_bytes > peak_bytes) peak_bytes = allocated_bytes;
}

/* Takes every cached block off the lists (under the lock); the caller frees them. */
cached_block *take_cache_locked(void) {
  cached_block *all = NULL;
  cached_block **lists[2] = {small_lists, large_lists};
  int counts[2] = {SMALL_CLASSES, LARGE_CLASSES};
  for (int l = 0; l < 2; l++) {
    for (int c = 0; c < counts[l]; c++) {
      while (lists[l][c]) {
        cached_block *b = lists[l][c];
        lists[l][c] = b->next;
        b->next = all;
        all = b;
      }
    }
  }
  return all;
}

void free_blocks(cached_block *all) {
  while (all) {
    cached_block *b = all;
    all = b->next;
    (void)cudaFree(b->ptr); /* errors at exit (runtime unloading) are of no use to anyone */
    {
      std::lock_guard<std::mutex> guard(lock);
      reserved_bytes -= (int64_t)b->size;
    }
    free(b);
  }
  (void)cudaGetLastError();
}

}  // namespace

extern "C" void fv_cuda_empty_cache(void) {
  cached_block *all;
  {
    std::lock_guard<std::mutex> guard(lock);
    all = take_cache_locked();
  }
  free_blocks(all);
}

extern "C" void *fv_cuda_alloc(size_t bytes) {
  size_t rounded;
  cached_block **list = list_for(bytes, &rounded);
  {
    std::lock_guard<std::mutex> guard(lock);
    if (cache_off < 0) {
      const char *off = getenv("FOVEA_NO_ALLOC_CACHE");
      cache_off = off && strcmp(off, "0") != 0;
    }
    if (list && *list) {
      cached_block *b = *list;
      *list = b->next;
      void *p = b->ptr;
      free(b);
      note_allocated((int64_t)rounded);
      return p;
    }
  }
  void *p = NULL;
  cudaError_t err = cudaMalloc(&p, rounded);
  if (err == cudaErrorMemoryAllocation) { /* give the cache back and try once more */
    (void)cudaGetLastError();
    fv_cuda_empty_cache();
    err = cudaMalloc(&p, rounded);
  }
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    int64_t allocated, reserved;
    {
      std::lock_guard<std::mutex> guard(lock);
      allocated = allocated_bytes;
      reserved = reserved_bytes;
    }
    fv_fail(err == cudaErrorMemoryAllocation ? FV_ERR_MEMORY : FV_ERR_DEVICE,
            "allocate: cudaMalloc(%zu bytes) failed at %s:%d: %s (%s); the allocator holds %lld bytes in use, "
            "%lld reserved (after emptying its cache)",
            rounded, __FILE__, __LINE__, cudaGetErrorString(err), cudaGetErrorName(err), (long long)allocated,
            (long long)reserved);
    return NULL;
  }
  std::lock_guard<std::mutex> guard(lock);
  reserved_bytes += (int64_t)rounded;
  note_allocated((int64_t)rounded);
  return p;
}

extern "C" void fv_cuda_free(void *data, size_t bytes) {
  if (!data) return;
  size_t rounded;
  cached_block **list = list_for(bytes, &rounded);
  cached_block *b = NULL;
  {
    std::lock_guard<std::mutex> guard(lock);
    note_allocated(-(int64_t)rounded);
    if (list && cache_off == 0) {
      b = (cached_block *)malloc(sizeof *b);
      if (b) {
        b->ptr = data;
        b->size = rounded;
        b->next = *list;
        *list = b;
        return;
      }
    }
  }
  (void)cudaFree(data); /* uncached */
  (void)cudaGetLastError();
  std::lock_guard<std::mutex> guard(lock);
  reserved_bytes -= (int64_t)rounded;
}

extern "C" int fv_cuda_memory_stats(int64_t *allocated, int64_t *reserved, int64_t *peak) {
  std::lock_guard<std::mutex> guard(lock);
  if (allocated) *allocated = allocated_bytes;
  if (reserved) *reserved = reserved_bytes;
  if (peak) *peak = peak_bytes;
  return FV_OK;
}

extern "C" void fv_cuda_reset_peak(void) {
  std::lock_guard<std::mutex> guard(lock);
  peak_bytes = allocated_bytes;
}
