/* cpu/alloc.c: the CPU caching allocator. Large blocks (64 KiB and up) are rounded up
 * to size classes (four per power of two) and kept on a free list when released, so a
 * training loop reuses its activation buffers instead of faulting in fresh pages from
 * the system every step (glibc returns big blocks to the kernel on free). The cache is
 * bounded; when it would grow past its limit, or an allocation fails, cached blocks go
 * back to the system. Small blocks go straight to malloc. Thread-safe.
 * FOVEA_NO_ALLOC_CACHE=1 in the environment turns the cache off (the sanitizer run does
 * this, so that AddressSanitizer sees every use after free). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

enum { SMALL_LIMIT = 64 * 1024, CLASSES = 4 * 48 };

typedef struct cached_block {
  struct cached_block *next;
} cached_block;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static cached_block *free_lists[CLASSES];
static size_t cached_bytes;
static size_t cache_limit = (size_t)2 << 30; /* 2 GiB */
static pthread_once_t read_environment = PTHREAD_ONCE_INIT;

static void apply_environment(void) {
  const char *off = getenv("FOVEA_NO_ALLOC_CACHE");
  if (off && strcmp(off, "0") != 0) cache_limit = 0;
}

/* Size class of a large request: 2^k * (4 + j) / 4 with j in 0..3, the smallest >= bytes. */
static int size_class(size_t bytes, size_t *rounded) {
  int k = 63 - __builtin_clzll((unsigned long long)bytes);
  size_t base = (size_t)1 << k;
  for (int j = 0; j <= 4; j++) {
    size_t size = base + (base / 4) * (size_t)j;
    if (size >= bytes) {
      int cls = j == 4 ? 4 * (k + 1) : 4 * k + j;
      *rounded = j == 4 ? (size_t)1 << (k + 1) : size;
      return cls;
    }
  }
  return -1;
}

static void release_cache_locked(void) {
  for (int c = 0; c < CLASSES; c++) {
    while (free_lists[c]) {
      cached_block *b = free_lists[c];
      free_lists[c] = b->next;
      free(b);
    }
  }
  cached_bytes = 0;
}

void *fv_cpu_alloc(size_t bytes) {
  if (bytes < SMALL_LIMIT) return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
  size_t rounded;
  int cls = size_class(bytes, &rounded);
  if (cls < 0 || cls >= CLASSES) return NULL;
  pthread_once(&read_environment, apply_environment);
  pthread_mutex_lock(&lock);
  cached_block *b = free_lists[cls];
  if (b) {
    free_lists[cls] = b->next;
    cached_bytes -= rounded;
  }
  pthread_mutex_unlock(&lock);
  if (b) return b;
  void *p = aligned_alloc(64, rounded);
  if (!p) { /* give the cache back to the system and retry once */
    pthread_mutex_lock(&lock);
    release_cache_locked();
    pthread_mutex_unlock(&lock);
    p = aligned_alloc(64, rounded);
  }
  return p;
}

void fv_cpu_free(void *data, size_t bytes) {
  if (!data) return;
  if (bytes < SMALL_LIMIT) {
    free(data);
    return;
  }
  size_t rounded;
  int cls = size_class(bytes, &rounded);
  pthread_mutex_lock(&lock);
  if (cached_bytes + rounded <= cache_limit) {
    cached_block *b = data;
    b->next = free_lists[cls];
    free_lists[cls] = b;
    cached_bytes += rounded;
    data = NULL;
  }
  pthread_mutex_unlock(&lock);
  free(data);
}

void fv_empty_cache(void) {
  pthread_mutex_lock(&lock);
  release_cache_locked();
  pthread_mutex_unlock(&lock);
}

int64_t fv_cached_bytes(void) {
  pthread_mutex_lock(&lock);
  size_t n = cached_bytes;
  pthread_mutex_unlock(&lock);
  return (int64_t)n;
}

int fv_set_cache_limit(int64_t bytes) {
  if (bytes < 0) return fv_fail(FV_ERR_ARGUMENT, "set_cache_limit: negative limit %lld", (long long)bytes);
  pthread_once(&read_environment, apply_environment);
  pthread_mutex_lock(&lock);
  cache_limit = (size_t)bytes;
  if (cached_bytes > cache_limit) release_cache_locked();
  pthread_mutex_unlock(&lock);
  return FV_OK;
}
