/* SPDX-License-Identifier: MIT */
/*
 * safetensors.c: reading Hugging Face .safetensors files: mmap, header
 * parsing, and a validation of every header field before a single tensor
 * byte is touched.
 *
 * Format (https://github.com/huggingface/safetensors, all little-endian):
 *
 *   OFFSET   SIZE  DESCRIPTION
 *   0        8     N, u64: length of the JSON header in bytes
 *   8        N     JSON object: "__metadata__" (optional, string map) and
 *                  one entry per tensor:
 *                  {"dtype": "F32", "shape": [d0, d1, ...],
 *                   "data_offsets": [begin, end]}
 *                  (trailing spaces are allowed, for alignment)
 *   8 + N    ...   data section; begin/end are relative to its start
 *
 * Why it is built this way:
 * - The file is mapped read-only and never copied: a ViT-B/32 in F32 is
 *   600 MB, and F32 tensors are used straight from the mapping (model.c).
 * - Everything in the header is untrusted. The checks, in order: the file
 *   holds the 8-byte length; the header fits in the file and is at most
 *   CLIP_ST_HEADER_MAX bytes; it is a JSON object without duplicate keys
 *   (jansson's JSON_REJECT_DUPLICATES); each tensor has a known dtype, at
 *   most CLIP_SAFETENSORS_MAX_DIMS non-negative dimensions whose element count times
 *   the dtype size does not overflow and equals end - begin; begin <= end <=
 *   size of the data section; and, once sorted by begin, no two tensors
 *   overlap. Only after all of that is `data` set, so every later read of a
 *   tensor stays inside the mapping. Holes between tensors are tolerated (the
 *   format does not forbid padding).
 * - dtypes other than F32/F16/BF16 (I64 position_ids buffers in many
 *   checkpoints) are recorded as CLIP_DTYPE_OTHER with their name and size,
 *   so their ranges are still validated; the loader refuses to bind them.
 * - Tensors are kept sorted by name so clip__safetensors_find is a binary search.
 */

#include "clip_int.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A real header is a few hundred KB even for ViT-bigG; anything past this is
 * a corrupt or hostile file and is refused before jansson sees it. */
#define CLIP_ST_HEADER_MAX (100u * 1024 * 1024)

struct st_dtype {
    const char *name;
    enum clip_dtype dtype;
    unsigned bytes;
};

/* Every dtype the safetensors specification lists. */
static const struct st_dtype st_dtypes[] = {
    {"F32", CLIP_DTYPE_F32, 4},     {"F16", CLIP_DTYPE_F16, 2},
    {"BF16", CLIP_DTYPE_BF16, 2},   {"F64", CLIP_DTYPE_OTHER, 8},
    {"I64", CLIP_DTYPE_OTHER, 8},   {"U64", CLIP_DTYPE_OTHER, 8},
    {"I32", CLIP_DTYPE_OTHER, 4},   {"U32", CLIP_DTYPE_OTHER, 4},
    {"I16", CLIP_DTYPE_OTHER, 2},   {"U16", CLIP_DTYPE_OTHER, 2},
    {"I8", CLIP_DTYPE_OTHER, 1},    {"U8", CLIP_DTYPE_OTHER, 1},
    {"BOOL", CLIP_DTYPE_OTHER, 1},  {"F8_E4M3", CLIP_DTYPE_OTHER, 1},
    {"F8_E5M2", CLIP_DTYPE_OTHER, 1},
};

static uint64_t read_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int cmp_by_name(const void *a, const void *b)
{
    const struct clip_safetensors_tensor *x = a, *y = b;
    return strcmp(x->name, y->name);
}

static int cmp_by_begin(const void *a, const void *b)
{
    const struct clip_safetensors_tensor *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

static void free_tensors(struct clip_safetensors_tensor *t, int n)
{
    if (!t)
        return;
    for (int i = 0; i < n; i++)
        ims_free(t[i].name);
    ims_free(t);
}

/* Reads a JSON integer in [0, INT64_MAX]; 0 on success. */
static int json_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v))
        return -1;
    json_int_t x = json_integer_value(v);
    if (x < 0)
        return -1;
    *out = (uint64_t)x;
    return 0;
}

/* Validates one header entry into `t` (name already set). */
static enum ims_status parse_entry(const char *name, const json_t *val, uint64_t data_bytes,
                                   struct clip_safetensors_tensor *t, struct ims_error *err)
{
    if (!json_is_object(val))
        return ims_error_set(err, IMS_ERR_CORRUPT, "tensor '%s': header entry is not an object",
                             name);
    const json_t *jd = json_object_get(val, "dtype");
    const json_t *js = json_object_get(val, "shape");
    const json_t *jo = json_object_get(val, "data_offsets");
    if (!json_is_string(jd))
        return ims_error_set(err, IMS_ERR_CORRUPT, "tensor '%s': missing or non-string dtype",
                             name);
    const char *dname = json_string_value(jd);
    const struct st_dtype *dt = NULL;
    for (size_t i = 0; i < IMS_ARRAY_LEN(st_dtypes); i++)
        if (!strcmp(st_dtypes[i].name, dname))
            dt = &st_dtypes[i];
    if (!dt)
        return ims_error_set(err, IMS_ERR_UNSUPPORTED, "tensor '%s': unknown dtype '%.32s'", name,
                             dname);
    t->dtype = dt->dtype;
    snprintf(t->dtype_name, sizeof(t->dtype_name), "%s", dt->name);

    if (!json_is_array(js))
        return ims_error_set(err, IMS_ERR_CORRUPT, "tensor '%s': missing or non-array shape",
                             name);
    size_t nd = json_array_size(js);
    if (nd > CLIP_SAFETENSORS_MAX_DIMS)
        return ims_error_set(err, IMS_ERR_UNSUPPORTED,
                             "tensor '%s': %zu dimensions, at most %d supported", name, nd,
                             CLIP_SAFETENSORS_MAX_DIMS);
    t->n_dims = (int)nd;
    int has_zero = 0;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (json_u64(json_array_get(js, i), &d) != 0)
            return ims_error_set(err, IMS_ERR_CORRUPT,
                                 "tensor '%s': shape[%zu] is not a non-negative integer", name, i);
        t->shape[i] = (int64_t)d;
        has_zero |= d == 0;
    }
    /* Element count times dtype size, refusing overflow (a zero dimension
     * makes any other dimension harmless). */
    uint64_t count = has_zero ? 0 : 1;
    for (size_t i = 0; i < nd && !has_zero; i++) {
        uint64_t d = (uint64_t)t->shape[i];
        if (count > UINT64_MAX / d)
            return ims_error_set(err, IMS_ERR_CORRUPT,
                                 "tensor '%s': shape element count overflows", name);
        count *= d;
    }
    if (count > UINT64_MAX / dt->bytes)
        return ims_error_set(err, IMS_ERR_CORRUPT, "tensor '%s': shape byte size overflows",
                             name);
    uint64_t nbytes = count * dt->bytes;

    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return ims_error_set(err, IMS_ERR_CORRUPT,
                             "tensor '%s': data_offsets must be an array [begin, end]", name);
    uint64_t begin, end;
    if (json_u64(json_array_get(jo, 0), &begin) != 0 || json_u64(json_array_get(jo, 1), &end) != 0)
        return ims_error_set(err, IMS_ERR_CORRUPT,
                             "tensor '%s': data_offsets are not non-negative integers", name);
    if (begin > end)
        return ims_error_set(err, IMS_ERR_CORRUPT,
                             "tensor '%s': data_offsets begin %llu > end %llu", name,
                             (unsigned long long)begin, (unsigned long long)end);
    if (end > data_bytes)
        return ims_error_set(err, IMS_ERR_CORRUPT,
                             "tensor '%s': data_offsets end %llu beyond the data section (%llu "
                             "bytes): file truncated?",
                             name, (unsigned long long)end, (unsigned long long)data_bytes);
    if (end - begin != nbytes)
        return ims_error_set(err, IMS_ERR_CORRUPT,
                             "tensor '%s': %s shape needs %llu bytes but data_offsets span %llu",
                             name, dt->name, (unsigned long long)nbytes,
                             (unsigned long long)(end - begin));
    t->begin = begin;
    t->end = end;
    return IMS_OK;
}

enum ims_status clip__safetensors_parse(const void *bytes, size_t n,
                                        struct clip_safetensors_file *out, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    const unsigned char *b = bytes;
    json_t *root = NULL;
    struct clip_safetensors_tensor *tensors = NULL;
    int n_tensors = 0;

    if (n < 8) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "file is %zu bytes, too short for the 8-byte header length", n);
        goto out;
    }
    uint64_t hlen = read_le64(b);
    if (hlen > CLIP_ST_HEADER_MAX) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "header length %llu is absurd (limit %u bytes): not a safetensors file",
                           (unsigned long long)hlen, CLIP_ST_HEADER_MAX);
        goto out;
    }
    if (hlen > n - 8) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "header length %llu goes beyond the end of the file (%zu bytes)",
                           (unsigned long long)hlen, n);
        goto out;
    }
    uint64_t data_bytes = n - 8 - hlen;
    json_error_t jerr;
    root = json_loadb((const char *)b + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "header is not valid JSON: %s (offset %d)",
                           jerr.text, jerr.position);
        goto out;
    }
    if (!json_is_object(root)) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "header is not a JSON object");
        goto out;
    }
    size_t n_entries = json_object_size(root);
    tensors = ims_calloc(n_entries ? n_entries : 1, sizeof(*tensors));
    if (!tensors) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for %zu tensor entries", n_entries);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(val) && !json_is_null(val)) {
                st = ims_error_set(err, IMS_ERR_CORRUPT, "__metadata__ is not an object");
                goto out;
            }
            continue;
        }
        struct clip_safetensors_tensor *t = &tensors[n_tensors];
        t->name = ims_strdup(key);
        if (!t->name) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
            goto out;
        }
        n_tensors++;
        st = parse_entry(key, val, data_bytes, t, err);
        if (st != IMS_OK)
            goto out;
    }

    /* No overlaps: after sorting by begin, each non-empty range starts at or
     * after the end of every earlier one (ends are monotone by then). */
    qsort(tensors, (size_t)n_tensors, sizeof(*tensors), cmp_by_begin);
    uint64_t max_end = 0;
    const char *max_name = NULL;
    for (int i = 0; i < n_tensors; i++) {
        struct clip_safetensors_tensor *t = &tensors[i];
        if (t->begin == t->end)
            continue;
        if (max_name && t->begin < max_end) {
            st = ims_error_set(err, IMS_ERR_CORRUPT,
                               "tensors '%s' and '%s' overlap in the data section", max_name,
                               t->name);
            goto out;
        }
        max_end = t->end;
        max_name = t->name;
    }
    qsort(tensors, (size_t)n_tensors, sizeof(*tensors), cmp_by_name);
    for (int i = 1; i < n_tensors; i++) {
        /* jansson already refuses duplicate keys; kept as a cheap second line. */
        if (!strcmp(tensors[i - 1].name, tensors[i].name)) {
            st = ims_error_set(err, IMS_ERR_CORRUPT, "duplicate tensor '%s'", tensors[i].name);
            goto out;
        }
    }
    const unsigned char *data = b + 8 + hlen;
    for (int i = 0; i < n_tensors; i++)
        tensors[i].data = data + tensors[i].begin;

    memset(out, 0, sizeof(*out));
    out->n_tensors = n_tensors;
    out->tensors = tensors;
    tensors = NULL;
out:
    free_tensors(tensors, n_tensors);
    json_decref(root);
    return st;
}

enum ims_status clip__safetensors_open(const char *path, struct clip_safetensors_file *out,
                                       struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    void *map = MAP_FAILED;
    size_t map_bytes = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st = ims_error_set(err, errno == ENOENT ? IMS_ERR_NOT_FOUND : IMS_ERR_IO,
                           "cannot open %s: %s", path, strerror(errno));
        goto out;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = ims_error_set(err, IMS_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = ims_error_set(err, IMS_ERR_INVALID, "%s is not a regular file", path);
        goto out;
    }
    if (sb.st_size < 8) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "%s: file is %lld bytes, too short for the 8-byte header length", path,
                           (long long)sb.st_size);
        goto out;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        st = ims_error_set(err, IMS_ERR_TOO_LARGE, "%s is too large to map", path);
        goto out;
    }
    map_bytes = (size_t)sb.st_size;
    map = mmap(NULL, map_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = ims_error_set(err, IMS_ERR_IO, "cannot map %s: %s", path, strerror(errno));
        goto out;
    }
    st = clip__safetensors_parse(map, map_bytes, out, err);
    if (st != IMS_OK) {
        ims_error_prefix(err, "%s", path);
        goto out;
    }
    out->map = map;
    out->map_bytes = map_bytes;
    map = MAP_FAILED;
out:
    if (map != MAP_FAILED)
        munmap(map, map_bytes);
    if (fd >= 0)
        close(fd);
    return st;
}

void clip__safetensors_close(struct clip_safetensors_file *f)
{
    if (!f)
        return;
    free_tensors(f->tensors, f->n_tensors);
    if (f->map)
        munmap(f->map, f->map_bytes);
    memset(f, 0, sizeof(*f));
}

const struct clip_safetensors_tensor *clip__safetensors_find(const struct clip_safetensors_file *f,
                                                             const char *name)
{
    if (!f || !f->tensors)
        return NULL;
    int lo = 0, hi = f->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (c == 0)
            return &f->tensors[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}
