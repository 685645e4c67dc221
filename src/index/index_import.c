/* SPDX-License-Identifier: MIT */
/*
 * index_import.c: reading vectors out of a foreign FAISS index file (the
 * Python prototype's saved state) for `imgsearch import --faiss`.
 *
 * Such a file is hostile input, and FAISS's reader is not hardened against
 * it: it trusts every length it reads (a 100-byte file can make it resize a
 * vector to 2^39 elements, or allocate per-list arrays for 2^60 lists,
 * before it notices the data is missing). So the file is validated whole, in
 * two steps, before a vector is used:
 *
 *   1. here, a walk over the bytes in FAISS's serialisation (faiss/impl/
 *      index_read.cpp, io_macros.h of FAISS 1.7): only the formats we import
 *      (Flat "IxFI"/"IxF2"/"IxFl", IDMap "IxMp"/"IxM2", HNSW-Flat "IHNf",
 *      IVF-Flat "IwFl", IVF-PQ "IwPQ", array inverted lists "ilar"), every
 *      length checked against the bytes that remain and against the counts
 *      it must agree with (codes = ntotal * d, ids = ntotal, levels = ntotal,
 *      offsets = ntotal + 1, lists = the quantizer's centroids, list sizes
 *      adding up to ntotal, PQ centroids = M * 2^nbits * d/M), no trailing
 *      bytes. After it, nothing FAISS allocates can exceed the file's size;
 *   2. FAISS deserialises the same mapped bytes (never re-reading the path)
 *      and faiss_bridge.cpp checks the object's invariants (check_index:
 *      graph offsets, neighbour ids, levels, entry point).
 * Damage is IMS_ERR_CORRUPT with what was wrong and where.
 *
 * Every format gets its own walk_* function: a new one is a function and a
 * line in walk_index. The snapshot loader (index_snapshot.c) walks its FAISS
 * payload too: a CRC recomputed over damage does not get past it for the
 * formats listed here; other types are left to the CRC.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index_int.h"

struct walk {
    const uint8_t *p, *start;
    size_t left;
    char *why;
    size_t why_cap;
    int unknown; /* stopped at a format not listed here */
};

#define WALK_FAIL(w, ...)                                                                    \
    do {                                                                                     \
        int _at = snprintf((w)->why, (w)->why_cap, "at byte %zu: ",                          \
                           (size_t)((w)->p - (w)->start));                                   \
        if (_at > 0 && (size_t)_at < (w)->why_cap)                                           \
            snprintf((w)->why + _at, (w)->why_cap - (size_t)_at, __VA_ARGS__);               \
        return -1;                                                                           \
    } while (0)

static int take(struct walk *w, void *out, size_t n)
{
    if (n > w->left)
        WALK_FAIL(w, "the file ends inside a field (%zu bytes needed, %zu left)", n, w->left);
    if (out)
        memcpy(out, w->p, n);
    w->p += n;
    w->left -= n;
    return 0;
}

/* A FAISS vector: u64 count, then count items of `size` bytes. *count and,
 * if asked, *data (pointing into the file) are set. */
static int vec(struct walk *w, size_t size, uint64_t *count, const uint8_t **data,
               const char *what)
{
    uint64_t n;
    if (take(w, &n, 8) != 0)
        return -1;
    if (n >= ((uint64_t)1 << 40) || n > w->left / size)
        WALK_FAIL(w, "%s claims %llu items of %zu bytes, %zu bytes remain", what,
                  (unsigned long long)n, size, w->left);
    if (data)
        *data = w->p;
    *count = n;
    return take(w, NULL, (size_t)n * size);
}

struct hdr {
    int32_t d;
    int64_t ntotal;
};

static int header(struct walk *w, struct hdr *h)
{
    int64_t dummy;
    uint8_t trained;
    int32_t metric;
    if (take(w, &h->d, 4) || take(w, &h->ntotal, 8) || take(w, &dummy, 8) ||
        take(w, &dummy, 8) || take(w, &trained, 1) || take(w, &metric, 4))
        return -1;
    if (h->d < 1 || h->d > VINDEX_MAX_DIM)
        WALK_FAIL(w, "dimension %d", h->d);
    if (h->ntotal < 0 || h->ntotal > ((int64_t)1 << 40))
        WALK_FAIL(w, "vector count %lld", (long long)h->ntotal);
    if (metric != 0 && metric != 1) /* inner product, L2 */
        WALK_FAIL(w, "metric %d", metric);
    return 0;
}

static int walk_index(struct walk *w, int depth, struct hdr *out, char kind[5]);

static int walk_flat(struct walk *w, struct hdr *h)
{
    if (header(w, h) != 0)
        return -1;
    uint64_t n;
    if (vec(w, 4, &n, NULL, "flat codes") != 0)
        return -1;
    if (n != (uint64_t)h->ntotal * (uint64_t)h->d)
        WALK_FAIL(w, "flat index: %llu floats for %lld vectors of %d", (unsigned long long)n,
                  (long long)h->ntotal, h->d);
    return 0;
}

static int walk_idmap(struct walk *w, int depth, struct hdr *h)
{
    if (header(w, h) != 0)
        return -1;
    struct hdr in;
    char kind[5];
    if (walk_index(w, depth + 1, &in, kind) != 0)
        return -1;
    uint64_t n;
    if (vec(w, 8, &n, NULL, "id map") != 0)
        return -1;
    if (in.ntotal != h->ntotal || n != (uint64_t)h->ntotal || in.d != h->d)
        WALK_FAIL(w, "id map: %llu ids, header %lld, inner index %lld vectors",
                  (unsigned long long)n, (long long)h->ntotal, (long long)in.ntotal);
    return 0;
}

static int walk_hnsw(struct walk *w, int depth, struct hdr *h)
{
    if (header(w, h) != 0)
        return -1;
    uint64_t n_probas, n_cum, n_levels, n_offsets, n_nb;
    if (vec(w, 8, &n_probas, NULL, "HNSW level probabilities") ||
        vec(w, 4, &n_cum, NULL, "HNSW neighbour table") ||
        vec(w, 4, &n_levels, NULL, "HNSW levels") || vec(w, 8, &n_offsets, NULL, "HNSW offsets") ||
        vec(w, 4, &n_nb, NULL, "HNSW neighbours"))
        return -1;
    int32_t tail[5]; /* entry_point, max_level, efConstruction, efSearch, upper_beam */
    if (take(w, tail, sizeof tail) != 0)
        return -1;
    if (n_levels != (uint64_t)h->ntotal || n_offsets != (uint64_t)h->ntotal + 1 || n_cum < 2 ||
        n_cum > 64)
        WALK_FAIL(w, "HNSW of %lld nodes with %llu levels, %llu offsets, %llu table entries",
                  (long long)h->ntotal, (unsigned long long)n_levels,
                  (unsigned long long)n_offsets, (unsigned long long)n_cum);
    struct hdr storage;
    char kind[5];
    if (walk_index(w, depth + 1, &storage, kind) != 0)
        return -1;
    if (kind[0] != 'I' || kind[1] != 'x' || kind[2] != 'F' || storage.ntotal != h->ntotal ||
        storage.d != h->d)
        WALK_FAIL(w, "HNSW of %lld vectors over a %s storage of %lld", (long long)h->ntotal,
                  kind, (long long)storage.ntotal);
    return 0;
}

static int walk_ivf(struct walk *w, int depth, struct hdr *h, int pq)
{
    uint64_t nlist, nprobe;
    if (header(w, h) != 0 || take(w, &nlist, 8) != 0 || take(w, &nprobe, 8) != 0)
        return -1;
    struct hdr q;
    char kind[5];
    if (walk_index(w, depth + 1, &q, kind) != 0)
        return -1;
    if ((uint64_t)q.ntotal != nlist || q.d != h->d || nlist == 0)
        WALK_FAIL(w, "IVF of %llu lists over a quantizer of %lld centroids",
                  (unsigned long long)nlist, (long long)q.ntotal);
    uint8_t dm_type;
    uint64_t n;
    if (take(w, &dm_type, 1) || vec(w, 8, &n, NULL, "IVF direct map"))
        return -1;
    if (dm_type > 2)
        WALK_FAIL(w, "direct map type %u", dm_type);
    if (dm_type == 2 && vec(w, 16, &n, NULL, "IVF direct map hashtable") != 0)
        return -1;
    uint64_t code_size = 4 * (uint64_t)h->d;
    if (pq) {
        uint8_t by_residual;
        uint64_t cs, pd, m, nbits, nc;
        if (take(w, &by_residual, 1) || take(w, &cs, 8) || take(w, &pd, 8) || take(w, &m, 8) ||
            take(w, &nbits, 8) || vec(w, 4, &nc, NULL, "PQ centroids"))
            return -1;
        if (pd != (uint64_t)h->d || m < 1 || pd % m != 0 || nbits < 1 || nbits > 16 ||
            cs != (m * nbits + 7) / 8 || nc != m * ((uint64_t)1 << nbits) * (pd / m))
            WALK_FAIL(w, "IVF-PQ: d %llu, M %llu, %llu bits, code size %llu, %llu centroid "
                         "floats do not agree",
                      (unsigned long long)pd, (unsigned long long)m, (unsigned long long)nbits,
                      (unsigned long long)cs, (unsigned long long)nc);
        code_size = cs;
    }
    char il[4];
    uint64_t il_n, il_cs;
    if (take(w, il, 4) != 0)
        return -1;
    if (memcmp(il, "ilar", 4) != 0)
        WALK_FAIL(w, "inverted lists of kind '%.4s' (only in-file lists \"ilar\" are read)", il);
    if (take(w, &il_n, 8) || take(w, &il_cs, 8))
        return -1;
    if (il_n != nlist || il_cs != code_size)
        WALK_FAIL(w, "inverted lists: %llu lists of %llu-byte codes for an IVF of %llu lists of "
                     "%llu",
                  (unsigned long long)il_n, (unsigned long long)il_cs,
                  (unsigned long long)nlist, (unsigned long long)code_size);
    uint64_t *sizes = ims_calloc((size_t)nlist, sizeof(uint64_t));
    if (!sizes)
        WALK_FAIL(w, "out of memory for %llu list sizes", (unsigned long long)nlist);
    char lt[4];
    const uint8_t *data = NULL;
    int rc = -1;
    if (take(w, lt, 4) != 0)
        goto out;
    if (memcmp(lt, "full", 4) == 0) {
        if (vec(w, 8, &n, &data, "list sizes") != 0)
            goto out;
        if (n != nlist) {
            snprintf(w->why, w->why_cap, "%llu list sizes for %llu lists",
                     (unsigned long long)n, (unsigned long long)nlist);
            goto out;
        }
        memcpy(sizes, data, (size_t)n * 8);
    } else if (memcmp(lt, "sprs", 4) == 0) {
        if (vec(w, 8, &n, &data, "sparse list sizes") != 0)
            goto out;
        for (uint64_t j = 0; j + 1 < n; j += 2) {
            uint64_t at, sz;
            memcpy(&at, data + 8 * j, 8);
            memcpy(&sz, data + 8 * j + 8, 8);
            if (at >= nlist) {
                snprintf(w->why, w->why_cap, "sparse list sizes name list %llu of %llu",
                         (unsigned long long)at, (unsigned long long)nlist);
                goto out;
            }
            sizes[at] = sz;
        }
    } else {
        snprintf(w->why, w->why_cap, "list sizes of kind '%.4s'", lt);
        goto out;
    }
    uint64_t total = 0;
    for (uint64_t l = 0; l < nlist; l++) {
        uint64_t s = sizes[l], bytes;
        if (s > w->left || __builtin_mul_overflow(s, code_size + 8, &bytes) || bytes > w->left) {
            snprintf(w->why, w->why_cap, "list %llu claims %llu entries, %zu bytes remain",
                     (unsigned long long)l, (unsigned long long)s, w->left);
            goto out;
        }
        take(w, NULL, (size_t)bytes); /* codes, then ids */
        total += s;
    }
    if (total != (uint64_t)h->ntotal) {
        snprintf(w->why, w->why_cap, "IVF lists hold %llu vectors, the header says %lld",
                 (unsigned long long)total, (long long)h->ntotal);
        goto out;
    }
    rc = 0;
out:
    ims_free(sizes);
    return rc;
}

static int walk_index(struct walk *w, int depth, struct hdr *h, char kind[5])
{
    if (depth > 4)
        WALK_FAIL(w, "indexes nested too deep");
    if (take(w, kind, 4) != 0)
        return -1;
    kind[4] = '\0';
    for (int i = 0; i < 4; i++)
        if (kind[i] < 0x20 || kind[i] > 0x7e)
            kind[i] = '?';
    if (!strcmp(kind, "IxFI") || !strcmp(kind, "IxF2") || !strcmp(kind, "IxFl"))
        return walk_flat(w, h);
    if (!strcmp(kind, "IxMp") || !strcmp(kind, "IxM2"))
        return walk_idmap(w, depth, h);
    if (!strcmp(kind, "IHNf"))
        return walk_hnsw(w, depth, h);
    if (!strcmp(kind, "IwFl"))
        return walk_ivf(w, depth, h, 0);
    if (!strcmp(kind, "IwPQ"))
        return walk_ivf(w, depth, h, 1);
    w->unknown = 1;
    WALK_FAIL(w, "index type '%s' is not supported for import (Flat, IDMap, HNSW-Flat, "
                 "IVF-Flat, IVF-PQ are)",
              kind);
}

int index__faiss_walk(const void *data, size_t n, char *why, size_t why_cap)
{
    struct walk w = {data, data, n, why, why_cap, 0};
    struct hdr h;
    char kind[5];
    if (walk_index(&w, 0, &h, kind) != 0)
        return w.unknown ? -2 : -1;
    if (w.left != 0)
        WALK_FAIL(&w, "%zu bytes after the index", w.left);
    return 0;
}

/* "HNSW<M>", "IVF<n>,Flat", "IVF<n>,PQ<m>[x<b>]": types whose whole FAISS
 * serialisation the walk knows (a flat quantizer, no pre-transform). */
int index__faiss_spec_walkable(const char *spec)
{
    const char *p = spec;
    if (!strncmp(p, "HNSW", 4)) {
        p += 4;
        if (*p < '0' || *p > '9')
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
        return *p == '\0';
    }
    if (strncmp(p, "IVF", 3) != 0)
        return 0;
    p += 3;
    if (*p < '0' || *p > '9')
        return 0;
    while (*p >= '0' && *p <= '9')
        p++;
    if (!strcmp(p, ",Flat"))
        return 1;
    if (strncmp(p, ",PQ", 3) != 0)
        return 0;
    p += 3;
    if (*p < '0' || *p > '9')
        return 0;
    while ((*p >= '0' && *p <= '9') || *p == 'x')
        p++;
    return *p == '\0';
}

enum ims_status vindex_read_faiss_vectors(const char *path, float **x, int64_t **ids,
                                          size_t *n, int *d, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!path || !x || !ids || !n || !d, err, IMS_ERR_INVALID,
                        "index: import needs a path and outputs");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ims_error_set(err, errno == ENOENT ? IMS_ERR_NOT_FOUND : IMS_ERR_IO,
                             "cannot open: %s", strerror(errno));
    struct stat sb;
    enum ims_status st = IMS_OK;
    void *map = NULL;
    size_t size = 0;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = ims_error_set(err, IMS_ERR_INVALID, "not a regular file");
        goto out;
    }
    size = (size_t)sb.st_size;
    if (size < 16) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "too short to be a FAISS index");
        goto out;
    }
    map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        map = NULL;
        st = ims_error_set(err, IMS_ERR_IO, "cannot map: %s", strerror(errno));
        goto out;
    }
    char why[256] = "";
    if (index__faiss_walk(map, size, why, sizeof why) != 0) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "not a FAISS index this import reads: %s", why);
        goto out;
    }
    st = index__faiss_read_buffer_vectors(map, size, x, ids, n, d, err);
out:
    if (map)
        munmap(map, size);
    close(fd);
    return st;
}
