/* data_fs.c: the few file-system calls the data sets need from Lua (fovea_data.h):
 * listing a folder, creating folders, and asking what a path is. Plain POSIX, so the
 * Lua side needs no struct layouts from system headers. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"
#include "fovea_data.h"

void fv_data_free(void *p) { free(p); }

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int fv_data_list_dir(const char *dir, char **out, int64_t *bytes, int64_t *count) {
  if (!dir || !out || !bytes || !count) return fv_fail(FV_ERR_ARGUMENT, "list_dir: NULL argument");
  *out = NULL;
  *bytes = *count = 0;
  DIR *d = opendir(dir);
  if (!d) return fv_fail(FV_ERR_IO, "list_dir: cannot open the folder '%s': %s", dir, strerror(errno));
  size_t n = 0, cap = 64, total = 0;
  char **names = malloc(cap * sizeof *names);
  int status = names ? FV_OK : fv_fail(FV_ERR_MEMORY, "list_dir: out of memory");
  struct dirent *e;
  while (!status && (e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (n == cap) {
      char **grown = realloc(names, 2 * cap * sizeof *names);
      if (!grown) {
        status = fv_fail(FV_ERR_MEMORY, "list_dir: out of memory");
        break;
      }
      names = grown;
      cap *= 2;
    }
    if (!(names[n] = strdup(e->d_name))) {
      status = fv_fail(FV_ERR_MEMORY, "list_dir: out of memory");
      break;
    }
    total += strlen(names[n]) + 2;
    n++;
  }
  closedir(d);
  char *buf = NULL;
  if (!status) {
    qsort(names, n, sizeof *names, by_name);
    buf = malloc(total > 0 ? total : 1);
    if (!buf) status = fv_fail(FV_ERR_MEMORY, "list_dir: out of memory");
  }
  size_t dirlen = strlen(dir), pos = 0;
  for (size_t i = 0; !status && i < n; i++) {
    size_t len = strlen(names[i]);
    char *full = malloc(dirlen + len + 2);
    char type = 'o';
    if (full) {
      memcpy(full, dir, dirlen);
      full[dirlen] = '/';
      memcpy(full + dirlen + 1, names[i], len + 1);
      struct stat st;
      if (stat(full, &st) == 0) type = S_ISDIR(st.st_mode) ? 'd' : S_ISREG(st.st_mode) ? 'f' : 'o';
      free(full);
    }
    buf[pos++] = type;
    memcpy(buf + pos, names[i], len + 1);
    pos += len + 1;
  }
  for (size_t i = 0; i < n && names; i++) free(names[i]);
  free(names);
  if (status) {
    free(buf);
    return status;
  }
  *out = buf;
  *bytes = (int64_t)pos;
  *count = (int64_t)n;
  return FV_OK;
}

int fv_data_mkdirs(const char *path) {
  if (!path || !path[0]) return fv_fail(FV_ERR_ARGUMENT, "mkdirs: empty path");
  char *p = strdup(path);
  if (!p) return fv_fail(FV_ERR_MEMORY, "mkdirs: out of memory");
  int status = FV_OK;
  for (char *c = p + 1;; c++) {
    if (*c != '/' && *c != '\0') continue;
    char saved = *c;
    *c = '\0';
    struct stat st;
    if (mkdir(p, 0777) != 0 && errno != EEXIST) {
      status = fv_fail(FV_ERR_IO, "mkdirs: cannot create the folder '%s': %s", p, strerror(errno));
    } else if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
      status = fv_fail(FV_ERR_IO, "mkdirs: '%s' exists and is not a folder", p);
    }
    *c = saved;
    if (status || saved == '\0') break;
  }
  free(p);
  return status;
}

int fv_data_stat(const char *path, int *kind, int64_t *size) {
  if (!path || !kind || !size) return fv_fail(FV_ERR_ARGUMENT, "stat: NULL argument");
  struct stat st;
  *size = 0;
  if (stat(path, &st) != 0) {
    *kind = 0;
    return FV_OK;
  }
  *kind = S_ISREG(st.st_mode) ? 1 : S_ISDIR(st.st_mode) ? 2 : 3;
  *size = (int64_t)st.st_size;
  return FV_OK;
}
