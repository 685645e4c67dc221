/* SPDX-License-Identifier: MIT */
/*
 * index_store.c: the vectors every index type keeps in memory, with their ids.
 *
 * - Rows are fp32 (plus an fp16 copy for "FlatF16", or int8 codes with a
 *   scale and a bound per row for "Flat"'s pre-scan), in fixed chunks of
 *   INDEX_CHUNK_ROWS rows (8 MB of fp32 at d = 512). Growth appends chunks
 *   and never moves rows, so an add under the write lock is short even at
 *   millions of rows.
 * - Chunks of 2 MB or more are 2 MB aligned and advised onto transparent
 *   huge pages (MADV_HUGEPAGE; this machine's THP mode is "madvise"): a
 *   scan streams every chunk, and on 4 kB pages it pays a TLB miss every
 *   4 kB. Smaller chunks (small dims) stay 64-byte aligned. The advice is
 *   only advice: refused, the pages are ordinary ones.
 * - The int8 codes are derived from the fp32 row at append
 *   (index__i8_quantize_row), so snapshots store only fp32 and a load
 *   rebuilds the codes.
 * - Rows are dense: removal moves the last row into the hole (swap-remove)
 *   and updates the map, so a scan never meets a hole.
 * - id -> row is an open-addressing hash table with linear probing, load
 *   factor <= 1/2, and backward-shift deletion (no tombstones), keyed by the
 *   catalogue id mixed with a splitmix64 finaliser.
 * The exact scan reads the rows; approximate types use them to re-score
 * candidates exactly and to tell live ids from removed ones.
 */

#include "index_int.h"

#include <math.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)

/* A chunk's array: on huge pages when it spans at least one. */
static void *chunk_alloc(size_t bytes)
{
    if (bytes < HUGE_PAGE)
        return ims_aligned_alloc(64, bytes);
    void *p = ims_aligned_alloc(HUGE_PAGE, bytes);
    if (p)
        madvise(p, bytes, MADV_HUGEPAGE); /* advice only: fine if refused */
    return p;
}

static size_t hash_id(int64_t id, size_t cap)
{
    uint64_t z = (uint64_t)id + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (size_t)(z ^ (z >> 31)) & (cap - 1);
}

void index__store_init(struct index__store *s, int dim, int flags)
{
    memset(s, 0, sizeof *s);
    s->dim = dim;
    s->with_f16 = (flags & INDEX_STORE_F16) != 0;
    s->with_i8 = (flags & INDEX_STORE_I8) != 0;
}

void index__store_fini(struct index__store *s)
{
    if (!s->chunks && !s->ids && !s->map_keys)
        return;
    for (size_t c = 0; c < s->n_chunks; c++) {
        ims_free(s->chunks[c]);
        if (s->chunks16)
            ims_free(s->chunks16[c]);
        if (s->chunks8)
            ims_free(s->chunks8[c]);
        if (s->chunks8_meta)
            ims_free(s->chunks8_meta[c]);
    }
    ims_free(s->chunks);
    ims_free(s->chunks16);
    ims_free(s->chunks8);
    ims_free(s->chunks8_meta);
    ims_free(s->ids);
    ims_free(s->map_keys);
    ims_free(s->map_rows);
    int dim = s->dim;
    int flags = (s->with_f16 ? INDEX_STORE_F16 : 0) | (s->with_i8 ? INDEX_STORE_I8 : 0);
    index__store_init(s, dim, flags);
}

static void map_put(int64_t *keys, size_t *rows, size_t cap, int64_t id, size_t row)
{
    size_t i = hash_id(id, cap);
    while (keys[i] != -1 && keys[i] != id)
        i = (i + 1) & (cap - 1);
    keys[i] = id;
    rows[i] = row;
}

static enum ims_status map_grow(struct index__store *s, size_t need, struct ims_error *err)
{
    size_t cap = s->map_cap ? s->map_cap : 64;
    while (cap / 2 < need) {
        if (cap > SIZE_MAX / 4)
            return ims_error_set(err, IMS_ERR_TOO_LARGE, "index: too many vectors");
        cap *= 2;
    }
    if (cap == s->map_cap)
        return IMS_OK;
    int64_t *keys = ims_malloc(cap * sizeof *keys);
    size_t *rows = ims_malloc(cap * sizeof *rows);
    if (!keys || !rows) {
        ims_free(keys);
        ims_free(rows);
        return ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory for the id map");
    }
    memset(keys, 0xff, cap * sizeof *keys); /* all -1 */
    for (size_t i = 0; i < s->map_cap; i++)
        if (s->map_keys[i] != -1)
            map_put(keys, rows, cap, s->map_keys[i], s->map_rows[i]);
    ims_free(s->map_keys);
    ims_free(s->map_rows);
    s->map_keys = keys;
    s->map_rows = rows;
    s->map_cap = cap;
    return IMS_OK;
}

enum ims_status index__store_reserve(struct index__store *s, size_t n_more, struct ims_error *err)
{
    size_t need;
    if (ims_size_add(s->n, n_more, &need) != 0 || need > ((size_t)1 << 40))
        return ims_error_set(err, IMS_ERR_TOO_LARGE, "index: too many vectors");
    enum ims_status st = map_grow(s, need, err);
    if (st != IMS_OK)
        return st;
    if (need > s->ids_cap) {
        size_t cap = s->ids_cap ? s->ids_cap : 1024;
        while (cap < need)
            cap *= 2;
        int64_t *ids = ims_realloc(s->ids, cap * sizeof *ids);
        if (!ids)
            return ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory for ids");
        s->ids = ids;
        s->ids_cap = cap;
    }
    size_t chunks_needed = (need + INDEX_CHUNK_ROWS - 1) / INDEX_CHUNK_ROWS;
    if (chunks_needed > s->chunks_cap) {
        size_t cap = s->chunks_cap ? s->chunks_cap : 16;
        while (cap < chunks_needed)
            cap *= 2;
        float **c32 = ims_realloc(s->chunks, cap * sizeof *c32);
        if (!c32)
            return ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory");
        s->chunks = c32;
        if (s->with_f16) {
            uint16_t **c16 = ims_realloc(s->chunks16, cap * sizeof *c16);
            if (!c16)
                return ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory");
            s->chunks16 = c16;
        }
        if (s->with_i8) {
            int8_t **c8 = ims_realloc(s->chunks8, cap * sizeof *c8);
            if (!c8)
                return ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory");
            s->chunks8 = c8;
            float **m8 = ims_realloc(s->chunks8_meta, cap * sizeof *m8);
            if (!m8)
                return ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory");
            s->chunks8_meta = m8;
        }
        s->chunks_cap = cap;
    }
    size_t chunk_bytes = (size_t)s->dim * sizeof(float) * INDEX_CHUNK_ROWS;
    size_t chunk8_bytes = index__i8_stride(s->dim) * INDEX_CHUNK_ROWS;
    while (s->n_chunks < chunks_needed) {
        float *c = chunk_alloc(chunk_bytes);
        uint16_t *h = s->with_f16 && c ? chunk_alloc(chunk_bytes / 2) : NULL;
        int8_t *b = s->with_i8 && c ? chunk_alloc(chunk8_bytes) : NULL;
        float *m = b ? ims_malloc(2 * sizeof(float) * INDEX_CHUNK_ROWS) : NULL;
        if (!c || (s->with_f16 && !h) || (s->with_i8 && !m)) {
            ims_free(c);
            ims_free(h);
            ims_free(b);
            return ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory for vectors");
        }
        s->chunks[s->n_chunks] = c;
        if (s->with_f16)
            s->chunks16[s->n_chunks] = h;
        if (s->with_i8) {
            s->chunks8[s->n_chunks] = b;
            s->chunks8_meta[s->n_chunks] = m;
        }
        s->n_chunks++;
    }
    return IMS_OK;
}

/* Row r's int8 codes, scale and rho: where append and remove put them. */
static int8_t *row_codes(const struct index__store *s, size_t r)
{
    return s->chunks8[r / INDEX_CHUNK_ROWS] + (r % INDEX_CHUNK_ROWS) * index__i8_stride(s->dim);
}

static float *row_scale(const struct index__store *s, size_t r)
{
    return s->chunks8_meta[r / INDEX_CHUNK_ROWS] + r % INDEX_CHUNK_ROWS;
}

static float *row_rho(const struct index__store *s, size_t r)
{
    return s->chunks8_meta[r / INDEX_CHUNK_ROWS] + INDEX_CHUNK_ROWS + r % INDEX_CHUNK_ROWS;
}

void index__store_append(struct index__store *s, const int64_t *ids, const float *x, size_t n)
{
    size_t dim = (size_t)s->dim;
    for (size_t i = 0; i < n; i++) {
        size_t r = s->n + i;
        const float *src = x + i * dim;
        float *dst = s->chunks[r / INDEX_CHUNK_ROWS] + (r % INDEX_CHUNK_ROWS) * dim;
        memcpy(dst, src, dim * sizeof(float));
        if (s->with_f16)
            index__f32_to_f16(src, s->chunks16[r / INDEX_CHUNK_ROWS] + (r % INDEX_CHUNK_ROWS) * dim,
                              dim);
        if (s->with_i8) {
            float code_norm;
            index__i8_quantize_row(src, s->dim, row_codes(s, r), row_scale(s, r), row_rho(s, r),
                                   &code_norm);
            if (code_norm > s->max_code_norm)
                s->max_code_norm = code_norm;
        }
        double nn = 0;
        for (size_t j = 0; j < dim; j++)
            nn += (double)src[j] * src[j];
        float norm = (float)sqrt(nn) * (1.0f + 1e-6f);
        if (norm > s->max_norm)
            s->max_norm = norm;
        s->ids[r] = ids[i];
        map_put(s->map_keys, s->map_rows, s->map_cap, ids[i], r);
    }
    s->n += n;
}

static size_t map_slot(const struct index__store *s, int64_t id)
{
    if (!s->map_cap)
        return SIZE_MAX;
    size_t i = hash_id(id, s->map_cap);
    while (s->map_keys[i] != -1) {
        if (s->map_keys[i] == id)
            return i;
        i = (i + 1) & (s->map_cap - 1);
    }
    return SIZE_MAX;
}

int64_t index__store_find(const struct index__store *s, int64_t id)
{
    size_t i = map_slot(s, id);
    return i == SIZE_MAX ? -1 : (int64_t)s->map_rows[i];
}

/* Backward-shift deletion: pull later entries of the probe run back so that
 * every key stays reachable from its home slot without tombstones. */
static void map_delete_slot(struct index__store *s, size_t i)
{
    size_t mask = s->map_cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (s->map_keys[j] == -1)
            break;
        size_t home = hash_id(s->map_keys[j], s->map_cap);
        /* j's entry may move to i if home is not cyclically in (i, j] */
        int in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            s->map_keys[i] = s->map_keys[j];
            s->map_rows[i] = s->map_rows[j];
            i = j;
        }
    }
    s->map_keys[i] = -1;
}

int index__store_remove(struct index__store *s, int64_t id)
{
    size_t slot = map_slot(s, id);
    if (slot == SIZE_MAX)
        return 0;
    size_t r = s->map_rows[slot], last = s->n - 1;
    map_delete_slot(s, slot);
    if (r != last) {
        size_t dim = (size_t)s->dim;
        int64_t moved = s->ids[last];
        memcpy(s->chunks[r / INDEX_CHUNK_ROWS] + (r % INDEX_CHUNK_ROWS) * dim,
               s->chunks[last / INDEX_CHUNK_ROWS] + (last % INDEX_CHUNK_ROWS) * dim,
               dim * sizeof(float));
        if (s->with_f16)
            memcpy(s->chunks16[r / INDEX_CHUNK_ROWS] + (r % INDEX_CHUNK_ROWS) * dim,
                   s->chunks16[last / INDEX_CHUNK_ROWS] + (last % INDEX_CHUNK_ROWS) * dim,
                   dim * sizeof(uint16_t));
        if (s->with_i8) {
            memcpy(row_codes(s, r), row_codes(s, last), index__i8_stride(s->dim));
            *row_scale(s, r) = *row_scale(s, last);
            *row_rho(s, r) = *row_rho(s, last);
        }
        s->ids[r] = moved;
        s->map_rows[map_slot(s, moved)] = r;
    }
    s->n--;
    return 1;
}
