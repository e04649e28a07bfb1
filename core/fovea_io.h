/* fovea_io.h: saving and loading tensors in the safetensors format.
 *
 * Read by LuaJIT's ffi.cdef right after fovea.h (no macros, no includes, no include
 * guard). C users include <stdint.h>, <stddef.h> and fovea.h first.
 *
 * The format (https://github.com/huggingface/safetensors): an 8-byte little-endian
 * unsigned length N, then N bytes of UTF-8 JSON
 *   {"__metadata__": {"key": "value", ...},
 *    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 * padded with spaces to a multiple of 8 bytes, then the tensors' raw little-endian
 * bytes, row-major; data_offsets count from the start of that data section.
 * fovea reads and writes the dtypes F32 (float32), F64 (float64), I64 (int64) and U8
 * (uint8). Files holding other byte-sized dtypes (F16, BF16, I32, BOOL, ...) open, and
 * getting such a tensor fails with "dtype X not supported"; the sub-byte ones (F4, F6_*)
 * are refused when opening, and so are dtypes the format does not define.
 *
 * Conventions are fovea.h's: an int status (FV_OK or an fv_status code) and a message
 * in fv_last_error() naming the file and the reason.
 *
 * Writing
 *   fv_safetensors_save writes n tensors under names[i] (any dtype above, any device,
 *   any strides: written row-major) and n_meta metadata pairs (UTF-8 strings; n_meta
 *   may be 0 and the arrays NULL). Tensors go in the given order. Names must be
 *   distinct, valid UTF-8 and not "__metadata__". The write is atomic: the bytes go to
 *   "<path>.tmp.<pid>" in the same directory, which is fsync'ed, closed and renamed
 *   over path, and then the directory is fsync'ed. On any failure the temporary file
 *   is removed and an existing file at path is left as it was (FV_ERR_IO naming the
 *   path and the system's reason; FV_ERR_ARGUMENT or FV_ERR_DTYPE for bad arguments).
 *
 * Reading
 *   Files are untrusted. fv_safetensors_open reads and checks the whole header (at most
 *   100,000,000 bytes, strict JSON, known dtypes, non-negative shapes without
 *   overflow, data_offsets inside the file with end - begin = numel * element size, no
 *   two tensors' bytes overlapping, no duplicate names or keys) and keeps the file
 *   open; any violation is FV_ERR_IO with a message naming the file and the problem.
 *   fv_safetensors_get reads one tensor into a new contiguous CPU tensor (one
 *   reference owned by the caller); an unknown name is FV_ERR_ARGUMENT, a tensor of more
 *   than FV_MAX_DIMS dimensions or of an unreadable dtype FV_ERR_IO. Names and metadata
 *   are listed in the header's order; the strings stay valid until fv_safetensors_close,
 *   which also closes the file (NULL is allowed).
 */

typedef struct fv_safetensors fv_safetensors;   /* opaque: an open file and its header */

int fv_safetensors_save(const char *path, int n, const char *const *names, const fv_tensor *const *tensors,
                        int n_meta, const char *const *meta_keys, const char *const *meta_values);

int fv_safetensors_open(fv_safetensors **out, const char *path);
int fv_safetensors_count(const fv_safetensors *f);
const char *fv_safetensors_name(const fv_safetensors *f, int i);          /* NULL when i is out of range */
int fv_safetensors_get(fv_tensor **out, const fv_safetensors *f, const char *name);
int fv_safetensors_meta_count(const fv_safetensors *f);
const char *fv_safetensors_meta_key(const fv_safetensors *f, int i);      /* NULL when i is out of range */
const char *fv_safetensors_meta_value(const fv_safetensors *f, int i);
void fv_safetensors_close(fv_safetensors *f);
