/* fovea_data.h: data loading in C: transform pipelines described as data, per-sample
 * random numbers, a threaded batch loader with an optional on-disk cache, small
 * file-system helpers, and drawing primitives for synthetic images.
 *
 * Read by LuaJIT's ffi.cdef after fovea.h and fovea_image.h (no macros, no includes, no
 * include guard). C users include <stdint.h>, <stddef.h>, fovea.h and fovea_image.h
 * first. Conventions are fovea.h's: int status, message in fv_last_error(), outputs
 * through fv_tensor ** with one reference owned by the caller.
 *
 * Pipelines
 *   A pipeline is an array of fv_data_step: a kind and its parameters. Each step turns
 *   an image (H x W x C uint8, or float32 C x H x W after FV_STEP_TO_TENSOR) into the
 *   next. Random steps draw from fv_data_uniform(seed, epoch, index, slot * 16 + j) for
 *   their j-th number, so a sample's augmentation depends only on (seed, epoch, dataset
 *   index, the step's slot), never on which thread ran it or in which order. The Lua
 *   transforms (lua/fovea/data/transforms.lua) draw the same numbers and give the same
 *   images.
 *     FV_STEP_CHANNELS   i[0] = channels (1..4), as fv_image_channels.
 *     FV_STEP_RESIZE     i[0] = h, i[1] = w, i[2] = fv_resize_mode.
 *     FV_STEP_CLAHE      d[0] = clip limit, i[0] = tiles_x, i[1] = tiles_y,
 *                        i[2] = fv_data_clahe_mode (see fv_data_clahe).
 *     FV_STEP_FLIPS      d[0], d[1], d[2] = probabilities of a horizontal, a vertical
 *                        and a diagonal (transpose) flip, drawn independently (j = 0,
 *                        1, 2) and applied in that order.
 *     FV_STEP_ROTATION   with probability d[0] (draw j = 0) rotate counter-clockwise by
 *                        an angle uniform in [d[1], d[2]] degrees (draw j = 1), bilinear,
 *                        same size, outside samples read d[3].
 *     FV_STEP_TO_TENSOR  i[0] = channels to convert to first (0 keeps them); then
 *                        fv_image_to_chw: float32 C x H x W, uint8 divided by 255.
 *     FV_STEP_NORMALIZE  on float32 C x H x W: (v - d[c]) / d[4 + c] for channel c;
 *                        i[0] = number of values given (1: the same for all channels,
 *                        else the channel count, at most 4).
 *
 * Loader
 *   fv_loader_new copies a list of image files, their labels and a pipeline, and starts
 *   `workers` threads. fv_loader_start begins an epoch over `order` (dataset indices,
 *   0-based; cut into batches of batch_size, the last one possibly shorter). Workers
 *   decode and transform samples ahead of the consumer, at most `prefetch` batches
 *   ahead, each batch assembled in its own tensor: images (B, ...) stacking the
 *   samples' results (all must have the same shape), labels int64 (B), indices int64
 *   (B, 0-based). fv_loader_next returns the next batch in order, or FV_OK with *images
 *   NULL at the end of the epoch. A failure in a worker (missing or corrupt file,
 *   samples of different sizes) comes back from fv_loader_next as an error naming the
 *   file; the epoch stops there. fv_loader_free stops and joins the threads.
 *   Batch tensors are reused for later batches only when the caller has released them.
 *   cache_dir (NULL or "" for none): the leading deterministic steps (CHANNELS, RESIZE,
 *   CLAHE) of the pipeline are cached as PNG files named by a hash of the file's path,
 *   size, modification time and those steps' parameters; later epochs read the cached
 *   image instead of decoding the original. The folder must exist.
 *   fv_loader_pin_memory(loader, FV_CUDA): batches assembled from then on have their
 *   images and labels in host memory pinned for that device's transfers (fv_pin_memory),
 *   so that fv_to_device sends them asynchronously; FV_CPU turns it off (the default).
 *   Fails, naming the reason, when no backend for the device is loaded or it has no
 *   pinned memory. A batch whose upload is still in flight is never reused.
 *
 * File system
 *   fv_data_list_dir    the entries of a folder except . and .., sorted by name (bytes),
 *                       as one malloc'd buffer: per entry a type byte ('d' folder, 'f'
 *                       file, 'o' other; links followed) then the name and a '\0'.
 *   fv_data_mkdirs      creates a folder and its parents (mode 0777 & ~umask).
 *   fv_data_stat        *kind = 0 missing, 1 file, 2 folder, 3 other; *size in bytes.
 *
 * Drawing (synthetic images; img: contiguous uint8 H x W x C CPU tensor, C = 1..4,
 * colours as C values 0..255, changed in place)
 *   fv_draw_disc        blends colour over a disc: alpha = opacity * coverage, coverage
 *                       a ramp of width `softness` pixels across the edge (>= 0.5 gives
 *                       anti-aliased edges, about the radius gives a soft blob); the
 *                       colour is scaled by 1 - vignette * (d / radius)^2 (darker rim).
 *   fv_draw_polyline    n points (y, x); width from width0 at the first point to width1
 *                       at the last; coverage is the maximum over the segments, so
 *                       joints are not darker than the rest.
 *   fv_draw_noise       adds amplitude * (2u - 1), u uniform per pixel (same for every
 *                       channel but alpha) from Philox with the given seed.
 *   fv_draw_mask_circle sets everything outside the circle to `outside` with a ramp of
 *                       width softness.
 */

typedef enum fv_data_step_kind {
  FV_STEP_CHANNELS = 0,
  FV_STEP_RESIZE = 1,
  FV_STEP_CLAHE = 2,
  FV_STEP_FLIPS = 3,
  FV_STEP_ROTATION = 4,
  FV_STEP_TO_TENSOR = 5,
  FV_STEP_NORMALIZE = 6,
  FV_STEP_KIND_COUNT = 7
} fv_data_step_kind;

/* CLAHE on gray or colour images:
 *   AUTO  gray for one-channel images and for colour images whose channels are all equal
 *         (gray replicated, as X-rays), LAB otherwise;
 *   GRAY  the image (made gray by luma first when it is colour) is equalised and put
 *         back into every colour channel (alpha kept);
 *   LAB   L of 8-bit LAB (colour images; gray ones are equalised directly);
 *   GREEN the green channel only (colour images; gray ones equalised directly). */
typedef enum fv_data_clahe_mode {
  FV_DATA_CLAHE_AUTO = 0,
  FV_DATA_CLAHE_GRAY = 1,
  FV_DATA_CLAHE_LAB = 2,
  FV_DATA_CLAHE_GREEN = 3
} fv_data_clahe_mode;

typedef struct fv_data_step {
  int32_t kind;       /* fv_data_step_kind */
  int32_t slot;       /* the step's position in its pipeline, for random draws */
  int64_t i[4];
  double d[8];
} fv_data_step;

typedef struct fv_loader fv_loader;

/* ---- pipelines ---- */
/* Uniform [0, 1) number `draw` of sample `index` in `epoch` for `seed` (Philox4x32-10). */
double fv_data_uniform(uint64_t seed, uint64_t epoch, uint64_t index, uint64_t draw);
int fv_data_clahe(fv_tensor **out, const fv_tensor *img, double clip_limit, int tiles_x, int tiles_y, int mode);
/* Checks n steps' kinds and parameters; the message names the first bad step. */
int fv_data_check_steps(int n, const fv_data_step *steps);
/* Runs n steps on img for sample (seed, epoch, index). */
int fv_data_apply(fv_tensor **out, const fv_tensor *img, int n, const fv_data_step *steps, uint64_t seed,
                  uint64_t epoch, uint64_t index);

/* ---- loader ---- */
int fv_loader_new(fv_loader **out, int64_t n_items, const char *const *paths, const int64_t *labels, int n_steps,
                  const fv_data_step *steps, int64_t batch_size, int workers, int prefetch, const char *cache_dir);
int fv_loader_start(fv_loader *loader, int64_t n, const int64_t *order, uint64_t seed, uint64_t epoch);
int fv_loader_next(fv_loader *loader, fv_tensor **images, fv_tensor **labels, fv_tensor **indices);
/* Pinned batches for device (FV_CUDA), or plain ones (FV_CPU); see "Loader" above. */
int fv_loader_pin_memory(fv_loader *loader, int device);
/* Cached images read and written since the loader was made. */
int64_t fv_loader_cache_hits(const fv_loader *loader);
int64_t fv_loader_cache_writes(const fv_loader *loader);
void fv_loader_free(fv_loader *loader);

/* ---- file system ---- */
int fv_data_list_dir(const char *dir, char **out, int64_t *bytes, int64_t *count);
int fv_data_mkdirs(const char *path);
int fv_data_stat(const char *path, int *kind, int64_t *size);
void fv_data_free(void *p);

/* ---- drawing ---- */
int fv_draw_disc(fv_tensor *img, double cy, double cx, double radius, const double *color, double opacity,
                 double softness, double vignette);
int fv_draw_polyline(fv_tensor *img, int n, const double *ys, const double *xs, double width0, double width1,
                     const double *color, double opacity, double softness);
int fv_draw_noise(fv_tensor *img, double amplitude, uint64_t seed);
int fv_draw_mask_circle(fv_tensor *img, double cy, double cx, double radius, double softness,
                        const double *outside);
