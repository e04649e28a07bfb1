/* loader.c: the threaded batch loader of fovea_data.h.
 *
 * A pool of worker threads takes samples in epoch order from a shared cursor, decodes
 * the file and runs the pipeline (fv_data_apply); the worker that finishes a batch's
 * last sample stacks the batch into its tensor (in position order, so that a sample of
 * the wrong shape is reported the same way whatever the timing). Batches live in
 * `prefetch` slots (batch b in slot b % prefetch); a worker may
 * only start a sample whose batch is fewer than `prefetch` batches ahead of the one the
 * consumer waits for, which bounds memory. The consumer (fv_loader_next) waits until
 * its batch is complete and hands out the tensors. Random steps draw by (seed, epoch,
 * index), so results do not depend on the number of workers or on timing.
 * With fv_loader_pin_memory, the batches' images and labels are allocated in host memory
 * pinned for a device (so that fv_to_device sends them asynchronously); a slot's images
 * tensor is reused only when its tensor and its storage are the slot's alone, so a batch
 * whose upload is still in flight (the backend holds its storage) is never overwritten.
 *
 * Locking: one mutex guards the cursor, the slots' bookkeeping and the epoch; decoding,
 * transforming and stacking run unlocked (a slot being stacked belongs to the worker
 * doing it until it marks the slot ready; its worker counts as busy till then).
 * work_cv wakes workers (new epoch, a slot freed, stop); done_cv wakes the consumer and
 * fv_loader_start (a sample finished, a worker went idle). */
#include <errno.h>
#include <inttypes.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "fovea_image.h"
#include "fovea_data.h"

typedef struct batch_slot {
  int64_t batch;        /* the batch this slot holds in the current epoch, -1 when none */
  int64_t count;        /* samples in it */
  int64_t remaining;    /* samples not finished */
  int ready;            /* assembled (or failed): the consumer may take it */
  fv_tensor **samples;  /* (batch_size) finished samples, until the batch is assembled */
  fv_tensor *images;    /* (count, ...) samples stacked; kept for reuse when released by the caller */
  fv_tensor *labels;    /* (count) int64 */
  fv_tensor *indices;   /* (count) int64, 0-based dataset indices */
  int failed;           /* a sample failed: status and message of the first (by position) */
  int fail_status;
  int64_t fail_pos;
  char message[4096];
} batch_slot;

struct fv_loader {
  /* fixed at creation */
  int64_t n_items;
  char **paths;            /* (n_items) */
  int64_t *labels;         /* (n_items) */
  int n_steps;
  fv_data_step *steps;     /* (n_steps) */
  int n_cached;            /* leading steps whose output is cached (0: no cache) */
  char *cache_dir;         /* NULL for none */
  int64_t batch_size;
  int prefetch;
  int workers;
  int pin_device;          /* FV_CPU: plain batches; else images and labels pinned for this device (atomic) */
  pthread_t *threads;      /* (workers) */
  int started;             /* threads running */
  /* shared state, under lock */
  pthread_mutex_t lock;
  pthread_cond_t work_cv, done_cv;
  int stop;
  int active;              /* an epoch is running */
  uint64_t generation;     /* bumped by each fv_loader_start: late results of an old epoch are dropped */
  int64_t n;               /* samples this epoch */
  int64_t *order;          /* (n) dataset indices */
  uint64_t seed, epoch;
  int64_t n_batches, next_task, next_batch;
  int busy;                /* workers processing a sample */
  batch_slot *slots;       /* (prefetch) */
  int64_t cache_hits, cache_writes;
  uint64_t tmp_counter;
};

/* ---- the on-disk cache ---- */

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

/* Leading steps that are deterministic and worth caching: up to the last RESIZE or
 * CLAHE among the first run of CHANNELS, RESIZE and CLAHE steps. */
static int cacheable_prefix(int n, const fv_data_step *steps) {
  int last = 0;
  for (int k = 0; k < n; k++) {
    int kind = steps[k].kind;
    if (kind != FV_STEP_CHANNELS && kind != FV_STEP_RESIZE && kind != FV_STEP_CLAHE) break;
    if (kind != FV_STEP_CHANNELS) last = k + 1;
  }
  return last;
}

/* The cache file for path after the first n_cached steps; st is the original's stat. */
static void cache_name(const fv_loader *L, const char *path, const struct stat *st, char *out, size_t size) {
  uint64_t h = 14695981039346656037ull;
  h = fnv1a(h, "fovea-cache-v1", 14);
  h = fnv1a(h, path, strlen(path) + 1);
  int64_t meta[3] = {(int64_t)st->st_size, (int64_t)st->st_mtim.tv_sec, (int64_t)st->st_mtim.tv_nsec};
  h = fnv1a(h, meta, sizeof meta);
  for (int k = 0; k < L->n_cached; k++) {
    const fv_data_step *s = &L->steps[k];
    h = fnv1a(h, &s->kind, sizeof s->kind);
    h = fnv1a(h, s->i, sizeof s->i);
    h = fnv1a(h, s->d, sizeof s->d);
  }
  snprintf(out, size, "%s/%016" PRIx64 ".png", L->cache_dir, h);
}

/* Writes img to name through a temporary file and a rename, so that a reader never sees
 * a partial file. */
static int cache_write(fv_loader *L, const char *name, const fv_tensor *img) {
  char tmp[4200];
  pthread_mutex_lock(&L->lock);
  uint64_t k = L->tmp_counter++;
  pthread_mutex_unlock(&L->lock);
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%" PRIu64, name, (long)getpid(), k);
  FV_TRY(fv_image_write_png(tmp, img));
  if (rename(tmp, name) != 0) {
    int e = errno;
    remove(tmp);
    return fv_fail(FV_ERR_IO, "loader: cannot rename the cache file '%s' to '%s': %s", tmp, name, strerror(e));
  }
  return FV_OK;
}

/* Decodes item idx and runs the pipeline, through the cache when there is one. */
static int load_sample(fv_loader *L, int64_t idx, uint64_t seed, uint64_t epoch, fv_tensor **out) {
  const char *path = L->paths[idx];
  fv_tensor *img = NULL, *done = NULL;
  int first = 0; /* steps already applied */
  int status = FV_OK;
  if (L->cache_dir && L->n_cached > 0) {
    struct stat st;
    if (stat(path, &st) != 0) return fv_fail(FV_ERR_IO, "read_image: cannot open '%s': %s", path, strerror(errno));
    char name[4096];
    cache_name(L, path, &st, name, sizeof name);
    if (access(name, R_OK) == 0 && fv_image_read_png(&img, name, 0) == FV_OK) {
      __atomic_add_fetch(&L->cache_hits, 1, __ATOMIC_RELAXED);
    } else {
      fv_tensor *raw;
      FV_TRY(fv_image_read(&raw, path));
      status = fv_data_apply(&img, raw, L->n_cached, L->steps, seed, epoch, (uint64_t)idx);
      fv_tensor_release(raw);
      if (!status) status = cache_write(L, name, img);
      if (!status) __atomic_add_fetch(&L->cache_writes, 1, __ATOMIC_RELAXED);
    }
    first = L->n_cached;
  } else {
    status = fv_image_read(&img, path);
  }
  if (!status) status = fv_data_apply(&done, img, L->n_steps - first, L->steps + first, seed, epoch, (uint64_t)idx);
  fv_tensor_release(img);
  if (!status) *out = done;
  return status;
}

/* ---- workers ---- */

static int same_sample_shape(const fv_tensor *batch, const fv_tensor *sample) {
  if (batch->ndim != sample->ndim + 1 || batch->scalar_type != sample->scalar_type) return 0;
  for (int d = 0; d < sample->ndim; d++)
    if (batch->sizes[d + 1] != sample->sizes[d]) return 0;
  return 1;
}

/* Makes s->images fit (count, sample shape), pinned for pin_device (FV_CPU: plain memory),
 * reusing the slot's tensor when the caller has released it and every view of it and no
 * upload holds its storage (the tensor and its storage are the slot's alone). */
static int shape_batch(batch_slot *s, const fv_tensor *sample, int pin_device) {
  if (s->images && s->images->storage && s->images->sizes[0] == s->count && same_sample_shape(s->images, sample) &&
      s->images->storage->pinned_for == pin_device && /* FV_CPU is 0: not pinned */
      __atomic_load_n(&s->images->refcount, __ATOMIC_ACQUIRE) == 1 &&
      __atomic_load_n(&s->images->storage->refcount, __ATOMIC_ACQUIRE) == 1)
    return FV_OK;
  fv_tensor_release(s->images);
  s->images = NULL;
  int64_t shape[FV_MAX_DIMS];
  shape[0] = s->count;
  for (int d = 0; d < sample->ndim; d++) shape[d + 1] = sample->sizes[d];
  if (pin_device != FV_CPU)
    return fv_alloc_pinned_shape(&s->images, sample->ndim + 1, shape, sample->scalar_type, pin_device, "loader");
  return fv_empty(&s->images, sample->ndim + 1, shape, sample->scalar_type, FV_CPU);
}

/* Records a failed sample (the first by position wins). */
static void record_failure(batch_slot *s, int64_t pos, int status, const char *path, int64_t idx,
                           const char *why) {
  if (s->failed && s->fail_pos < pos) return;
  s->failed = 1;
  s->fail_pos = pos;
  s->fail_status = status ? status : FV_ERR_INTERNAL;
  snprintf(s->message, sizeof s->message, "loader: item %lld ('%.2000s'): %s", (long long)idx + 1, path, why);
}

/* Stacks the finished samples of a complete slot into s->images, in position order;
 * the first sample whose shape differs from the first one's fails the batch (unless a
 * sample before it failed already). Runs unlocked: the slot is the caller's. */
static void assemble(fv_loader *L, batch_slot *s) {
  int64_t start = s->batch * L->batch_size;
  int64_t n = s->failed ? s->fail_pos : s->count; /* samples before the first failure */
  const fv_tensor *first = n > 0 ? s->samples[0] : NULL;
  for (int64_t pos = 1; pos < n; pos++) {
    const fv_tensor *x = s->samples[pos];
    if (x->ndim == first->ndim && x->scalar_type == first->scalar_type &&
        memcmp(x->sizes, first->sizes, sizeof x->sizes[0] * (size_t)x->ndim) == 0)
      continue;
    char have[64], want[64], why[256];
    fv_shape_str(x, have, sizeof have);
    fv_shape_str(first, want, sizeof want);
    snprintf(why, sizeof why, "the pipeline gives a %s %s sample but the batch holds %s %s samples "
             "(resize every image to one size)", fv_dtype_name(x->scalar_type), have,
             fv_dtype_name(first->scalar_type), want);
    int64_t idx = L->order[start + pos];
    record_failure(s, pos, FV_ERR_SHAPE, L->paths[idx], idx, why);
    break;
  }
  if (!s->failed && shape_batch(s, first, __atomic_load_n(&L->pin_device, __ATOMIC_ACQUIRE)) != FV_OK) {
    char why[1024];
    snprintf(why, sizeof why, "%s", fv_last_error());
    record_failure(s, 0, fv_last_status(), L->paths[L->order[start]], L->order[start], why);
  }
  if (!s->failed) {
    size_t bytes = (size_t)fv_tensor_numel(first) * (size_t)fv_dtype_size(first->scalar_type);
    char *dst = fv_tensor_data(s->images);
    for (int64_t pos = 0; pos < s->count; pos++) /* samples are contiguous: made by the image ops */
      memcpy(dst + (size_t)pos * bytes, fv_tensor_data(s->samples[pos]), bytes);
  }
  for (int64_t pos = 0; pos < s->count; pos++) {
    fv_tensor_release(s->samples[pos]);
    s->samples[pos] = NULL;
  }
}

/* Under the lock: 1 when the next sample may start: its batch is within the prefetch
 * window and its slot is ready. */
static int task_ready(const fv_loader *L) {
  if (!L->active || L->next_task >= L->n) return 0;
  int64_t b = L->next_task / L->batch_size;
  return b < L->next_batch + L->prefetch && L->slots[b % L->prefetch].batch == b;
}

static void *worker_main(void *arg) {
  fv_loader *L = arg;
  omp_set_num_threads(1); /* this thread's parallel regions: the pool is the parallelism */
  pthread_mutex_lock(&L->lock);
  for (;;) {
    while (!L->stop && !task_ready(L)) pthread_cond_wait(&L->work_cv, &L->lock);
    if (L->stop) break;
    int64_t t = L->next_task++, b = t / L->batch_size, pos = t % L->batch_size;
    batch_slot *s = &L->slots[b % L->prefetch];
    uint64_t gen = L->generation, seed = L->seed, epoch = L->epoch;
    int64_t idx = L->order[t];
    L->busy++;
    pthread_mutex_unlock(&L->lock);

    fv_tensor *sample = NULL;
    int status = load_sample(L, idx, seed, epoch, &sample);
    if (!status && !fv_tensor_is_contiguous(sample)) { /* stacking copies raw bytes */
      fv_tensor *c = NULL;
      status = fv_contiguous(&c, sample);
      fv_tensor_release(sample);
      sample = c;
    }
    char why[1024];
    if (status) snprintf(why, sizeof why, "%s", fv_last_error());

    pthread_mutex_lock(&L->lock);
    int complete = 0;
    if (gen == L->generation && s->batch == b) { /* else the epoch was cancelled: drop it */
      if (status) {
        record_failure(s, pos, status, L->paths[idx], idx, why);
      } else {
        s->samples[pos] = sample;
        sample = NULL;
      }
      complete = --s->remaining == 0;
    }
    if (complete) {
      pthread_mutex_unlock(&L->lock);
      assemble(L, s);
      pthread_mutex_lock(&L->lock);
      s->ready = 1;
    }
    fv_tensor_release(sample);
    L->busy--;
    pthread_cond_broadcast(&L->done_cv);
  }
  pthread_mutex_unlock(&L->lock);
  return NULL;
}

/* ---- the public API ---- */

static void release_slot(batch_slot *s, int keep_images) {
  if (!keep_images) {
    fv_tensor_release(s->images);
    s->images = NULL;
  }
  fv_tensor_release(s->labels);
  fv_tensor_release(s->indices);
  s->labels = s->indices = NULL;
  for (int64_t pos = 0; s->samples && pos < s->count; pos++) {
    fv_tensor_release(s->samples[pos]);
    s->samples[pos] = NULL;
  }
  s->batch = -1;
  s->ready = 0;
  s->failed = 0;
}

void fv_loader_free(fv_loader *L) {
  if (!L) return;
  if (L->started) {
    pthread_mutex_lock(&L->lock);
    L->stop = 1;
    pthread_cond_broadcast(&L->work_cv);
    pthread_cond_broadcast(&L->done_cv);
    pthread_mutex_unlock(&L->lock);
    for (int i = 0; i < L->started; i++) pthread_join(L->threads[i], NULL);
  }
  pthread_mutex_destroy(&L->lock);
  pthread_cond_destroy(&L->work_cv);
  pthread_cond_destroy(&L->done_cv);
  if (L->slots)
    for (int i = 0; i < L->prefetch; i++) {
      release_slot(&L->slots[i], 0);
      free(L->slots[i].samples);
    }
  if (L->paths)
    for (int64_t i = 0; i < L->n_items; i++) free(L->paths[i]);
  free(L->paths);
  free(L->labels);
  free(L->steps);
  free(L->cache_dir);
  free(L->threads);
  free(L->order);
  free(L->slots);
  free(L);
}

int fv_loader_new(fv_loader **out, int64_t n_items, const char *const *paths, const int64_t *labels, int n_steps,
                  const fv_data_step *steps, int64_t batch_size, int workers, int prefetch, const char *cache_dir) {
  if (!out) return fv_fail(FV_ERR_ARGUMENT, "loader: out is NULL");
  if (n_items < 0 || (n_items > 0 && (!paths || !labels)))
    return fv_fail(FV_ERR_ARGUMENT, "loader: %lld items need paths and labels", (long long)n_items);
  if (batch_size < 1) return fv_fail(FV_ERR_ARGUMENT, "loader: batch size %lld must be >= 1", (long long)batch_size);
  if (workers < 1 || workers > 256) return fv_fail(FV_ERR_ARGUMENT, "loader: %d workers (1..256)", workers);
  if (prefetch < 1 || prefetch > 1024) return fv_fail(FV_ERR_ARGUMENT, "loader: prefetch %d (1..1024)", prefetch);
  FV_TRY(fv_data_check_steps(n_steps, steps));
  for (int64_t i = 0; i < n_items; i++)
    if (!paths[i]) return fv_fail(FV_ERR_ARGUMENT, "loader: path of item %lld is NULL", (long long)i + 1);
  if (cache_dir && cache_dir[0]) {
    struct stat st;
    if (stat(cache_dir, &st) != 0 || !S_ISDIR(st.st_mode))
      return fv_fail(FV_ERR_IO, "loader: cache folder '%s' does not exist", cache_dir);
  }

  fv_loader *L = calloc(1, sizeof *L);
  if (!L) return fv_fail(FV_ERR_MEMORY, "loader: out of memory");
  pthread_mutex_init(&L->lock, NULL);
  pthread_cond_init(&L->work_cv, NULL);
  pthread_cond_init(&L->done_cv, NULL);
  L->n_items = n_items;
  L->batch_size = batch_size;
  L->workers = workers;
  L->prefetch = prefetch;
  L->pin_device = FV_CPU;
  L->n_steps = n_steps;
  L->paths = calloc((size_t)(n_items > 0 ? n_items : 1), sizeof *L->paths);
  L->labels = malloc((size_t)(n_items > 0 ? n_items : 1) * sizeof *L->labels);
  L->steps = malloc((size_t)(n_steps > 0 ? n_steps : 1) * sizeof *L->steps);
  L->threads = calloc((size_t)workers, sizeof *L->threads);
  L->slots = calloc((size_t)prefetch, sizeof *L->slots);
  int ok = L->paths && L->labels && L->steps && L->threads && L->slots;
  for (int i = 0; ok && i < prefetch; i++)
    ok = (L->slots[i].samples = calloc((size_t)batch_size, sizeof *L->slots[i].samples)) != NULL;
  for (int64_t i = 0; ok && i < n_items; i++) ok = (L->paths[i] = strdup(paths[i])) != NULL;
  if (ok && cache_dir && cache_dir[0]) ok = (L->cache_dir = strdup(cache_dir)) != NULL;
  if (!ok) {
    fv_loader_free(L);
    return fv_fail(FV_ERR_MEMORY, "loader: out of memory for %lld items", (long long)n_items);
  }
  if (n_items > 0) memcpy(L->labels, labels, (size_t)n_items * sizeof *labels);
  if (n_steps > 0) memcpy(L->steps, steps, (size_t)n_steps * sizeof *steps);
  L->n_cached = L->cache_dir ? cacheable_prefix(n_steps, steps) : 0;
  for (int i = 0; i < prefetch; i++) L->slots[i].batch = -1;
  for (int i = 0; i < workers; i++) {
    int e = pthread_create(&L->threads[i], NULL, worker_main, L);
    if (e) {
      fv_loader_free(L);
      return fv_fail(FV_ERR_INTERNAL, "loader: cannot start worker thread %d: %s", i + 1, strerror(e));
    }
    L->started++;
  }
  *out = L;
  return FV_OK;
}

/* Under the lock: stops handing out samples of the running epoch and waits until no
 * worker is processing one. */
static void cancel_epoch(fv_loader *L) {
  L->active = 0;
  L->generation++;
  while (L->busy > 0) pthread_cond_wait(&L->done_cv, &L->lock);
}

/* Under the lock: readies the slots of batches next_batch .. next_batch + prefetch - 1
 * that are not yet (labels and indices filled), which lets workers start on them. */
static int prepare_slots(fv_loader *L) {
  for (int64_t b = L->next_batch; b < L->n_batches && b < L->next_batch + L->prefetch; b++) {
    batch_slot *s = &L->slots[b % L->prefetch];
    if (s->batch == b) continue;
    release_slot(s, 1);
    int64_t start = b * L->batch_size, count = L->n - start < L->batch_size ? L->n - start : L->batch_size;
    if (L->pin_device != FV_CPU)
      FV_TRY(fv_alloc_pinned_shape(&s->labels, 1, &count, FV_INT64, L->pin_device, "loader"));
    else
      FV_TRY(fv_empty(&s->labels, 1, &count, FV_INT64, FV_CPU));
    FV_TRY(fv_empty(&s->indices, 1, &count, FV_INT64, FV_CPU));
    int64_t *lab = fv_tensor_data(s->labels), *ind = fv_tensor_data(s->indices);
    for (int64_t k = 0; k < count; k++) {
      ind[k] = L->order[start + k];
      lab[k] = L->labels[ind[k]];
    }
    s->count = s->remaining = count;
    s->batch = b;
  }
  pthread_cond_broadcast(&L->work_cv);
  return FV_OK;
}

int fv_loader_start(fv_loader *L, int64_t n, const int64_t *order, uint64_t seed, uint64_t epoch) {
  if (!L) return fv_fail(FV_ERR_ARGUMENT, "loader: NULL loader");
  if (n < 0 || (n > 0 && !order))
    return fv_fail(FV_ERR_ARGUMENT, "loader: epoch of %lld samples and no order", (long long)n);
  for (int64_t i = 0; i < n; i++)
    if (order[i] < 0 || order[i] >= L->n_items)
      return fv_fail(FV_ERR_INDEX, "loader: sample %lld of the epoch is item %lld, outside 1..%lld", (long long)i + 1,
                     (long long)order[i] + 1, (long long)L->n_items);
  int64_t *copy = malloc((size_t)(n > 0 ? n : 1) * sizeof *copy);
  if (!copy) return fv_fail(FV_ERR_MEMORY, "loader: out of memory for an epoch of %lld samples", (long long)n);
  if (n > 0) memcpy(copy, order, (size_t)n * sizeof *order);

  pthread_mutex_lock(&L->lock);
  cancel_epoch(L);
  for (int i = 0; i < L->prefetch; i++) release_slot(&L->slots[i], 1);
  free(L->order);
  L->order = copy;
  L->n = n;
  L->seed = seed;
  L->epoch = epoch;
  L->n_batches = (n + L->batch_size - 1) / L->batch_size;
  L->next_task = 0;
  L->next_batch = 0;
  L->active = 1;
  int status = prepare_slots(L); /* the first batches' labels and indices; workers start */
  if (status) L->active = 0;
  pthread_mutex_unlock(&L->lock);
  return status;
}

int fv_loader_next(fv_loader *L, fv_tensor **images, fv_tensor **labels, fv_tensor **indices) {
  if (!L || !images || !labels || !indices) return fv_fail(FV_ERR_ARGUMENT, "loader: NULL argument to next");
  *images = *labels = *indices = NULL;
  pthread_mutex_lock(&L->lock);
  if (!L->active) {
    pthread_mutex_unlock(&L->lock);
    return fv_fail(FV_ERR_ARGUMENT, "loader: no epoch is running (start one; an error ends the epoch)");
  }
  if (L->next_batch >= L->n_batches) {
    L->active = 0;
    pthread_mutex_unlock(&L->lock);
    return FV_OK;
  }
  int status = prepare_slots(L);
  batch_slot *s = &L->slots[L->next_batch % L->prefetch];
  while (!status && !L->stop && !s->ready) pthread_cond_wait(&L->done_cv, &L->lock);
  if (!status && s->failed) status = fv_fail(s->fail_status, "%s", s->message);
  if (status) {
    cancel_epoch(L);
    pthread_mutex_unlock(&L->lock);
    return status;
  }
  *images = fv_ref(s->images); /* the slot keeps its reference, to reuse the tensor */
  *labels = s->labels;
  *indices = s->indices;
  s->labels = s->indices = NULL;
  s->batch = -1;
  s->ready = 0;
  L->next_batch++;
  status = prepare_slots(L);
  pthread_mutex_unlock(&L->lock);
  if (status) { /* out of memory for a later batch: report it now, with this batch released */
    fv_tensor_release(*images);
    fv_tensor_release(*labels);
    fv_tensor_release(*indices);
    *images = *labels = *indices = NULL;
  }
  return status;
}

int fv_loader_pin_memory(fv_loader *L, int device) {
  if (!L) return fv_fail(FV_ERR_ARGUMENT, "loader: NULL loader");
  if (device != FV_CPU) FV_TRY(fv_check_pinned("loader: pin_memory", device));
  pthread_mutex_lock(&L->lock);
  __atomic_store_n(&L->pin_device, device, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&L->lock);
  return FV_OK;
}

int64_t fv_loader_cache_hits(const fv_loader *L) { return L ? __atomic_load_n(&L->cache_hits, __ATOMIC_RELAXED) : 0; }
int64_t fv_loader_cache_writes(const fv_loader *L) {
  return L ? __atomic_load_n(&L->cache_writes, __ATOMIC_RELAXED) : 0;
}
