/* SPDX-License-Identifier: MIT */
/*
 * index_snapshot.c: the on-disk snapshot of a vindex, written atomically and
 * verified completely before anything in it is trusted.
 *
 * Format (version 1; all integers little-endian). The one copy of this
 * table: docs/internals/index.md points here.
 *
 *   OFFSET       SIZE          DESCRIPTION
 *   0            8             magic "IMSVIDX\x1a"
 *   8            4             format version (1)
 *   12           4             dim
 *   16           8             last catalogue id covered (int64, -1 = none)
 *   24           8             count: live vectors (uint64)
 *   32           8             F: bytes of the FAISS payload (0 for Flat kinds)
 *   40           4             L: bytes of the spec string (1..255)
 *   44           4             flags, 0 (reserved)
 *   48           L             spec, ASCII, no NUL ("Flat", "HNSW32", ...)
 *   48+L         8*count       ids (int64), in row order
 *   ..           4*dim*count   vectors, fp32, row-major (count, dim)
 *   ..           F             faiss::write_index of the FAISS index (may hold
 *                              tombstoned ids of graph types; the ids above
 *                              are the live set)
 *   end-4        4             CRC32 (zlib) of every byte before it
 *
 * The file size must equal 48 + L + count*(8 + 4*dim) + F + 4 exactly, so a
 * truncated file is caught before any size from the header drives an
 * allocation. Checks run in the order magic, version, dim, spec (so a sound
 * snapshot of another model says so rather than "bad checksum"), size, CRC;
 * only then is the payload parsed (FAISS's reader is not hardened against
 * hostile bytes; the CRC keeps accidental corruption away from it, and for
 * the formats index__faiss_walk knows, the walk keeps damage under a
 * recomputed CRC away too). After FAISS has read it, the object is checked
 * (faiss_bridge.cpp check_index: HNSW graph offsets, neighbour ids, levels,
 * entry point; IVF lists): a graph that points past its vectors is a
 * corrupt snapshot (rebuild), never a crash in the first search.
 * fp16 copies ("FlatF16") are not stored: they are recomputed on load.
 *
 * Writing streams through a 1 MB buffer into a temp file created next to the
 * target (mkstemp), with a CRC computed on the way; the header, whose FAISS
 * size is only known at the end, is written last with pwrite and its CRC is
 * folded in with crc32_combine. Then fsync, rename over the target, fsync of
 * the folder: a crash or error at any point leaves the old snapshot intact.
 * Loading maps the file read-only (no copy of the payload in memory).
 */

#include "index_int.h"
#include "index_graph.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the snapshot code writes ids and vectors in host order: little-endian only"
#endif

#define SNAP_MAGIC "IMSVIDX\x1a"
#define SNAP_VERSION 1u
#define SNAP_HEADER 48u
#define SNAP_BUF (1u << 20)

static void put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* zlib's crc32 takes uInt lengths: feed large ranges in pieces. */
static uLong crc_update(uLong crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len) {
        uInt part = (uInt)IMS_MIN(len, (size_t)1 << 30);
        crc = crc32(crc, p, part);
        p += part;
        len -= part;
    }
    return crc;
}

/* ---- save -------------------------------------------------------------------- */

struct snap_writer {
    int fd;
    unsigned char *buf; /* (SNAP_BUF) */
    size_t used;
    uint64_t bytes; /* payload bytes written so far (after the header) */
    uLong crc;      /* of the payload */
    int failed_errno;
};

static int writer_flush(struct snap_writer *w)
{
    size_t off = 0;
    while (off < w->used) {
        ssize_t r = write(w->fd, w->buf + off, w->used - off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            w->failed_errno = errno;
            return -1;
        }
        off += (size_t)r;
    }
    w->used = 0;
    return 0;
}

static int writer_put(void *ctx, const void *data, size_t len)
{
    struct snap_writer *w = ctx;
    const unsigned char *p = data;
    if (w->failed_errno)
        return -1;
    w->crc = crc_update(w->crc, p, len);
    w->bytes += len;
    while (len) {
        size_t part = IMS_MIN(len, SNAP_BUF - w->used);
        memcpy(w->buf + w->used, p, part);
        w->used += part;
        p += part;
        len -= part;
        if (w->used == SNAP_BUF && writer_flush(w) != 0)
            return -1;
    }
    return 0;
}

static int pwrite_all(int fd, const void *data, size_t len, off_t off)
{
    const unsigned char *p = data;
    while (len) {
        ssize_t r = pwrite(fd, p, len, off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += r;
        len -= (size_t)r;
        off += r;
    }
    return 0;
}

static void fsync_parent(const char *path)
{
    char *dir = ims_strdup(path);
    if (!dir)
        return;
    char *slash = strrchr(dir, '/');
    const char *d = ".";
    if (slash == dir)
        d = "/";
    else if (slash) {
        *slash = '\0';
        d = dir;
    }
    int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    ims_free(dir);
}

enum ims_status vindex_save(struct vindex *vx, const char *path, int64_t last_id,
                            struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct snap_writer w = {.fd = -1};
    char *tmp = NULL;
    int locked = 0, created = 0;
    IMS_RETURN_ERROR_IF(!vx || !path || !path[0], err, IMS_ERR_INVALID,
                        "index: save needs an index and a path");
    IMS_RETURN_ERROR_IF(last_id < -1, err, IMS_ERR_INVALID, "index: last id %lld is below -1",
                        (long long)last_id);
    size_t plen = strlen(path);
    tmp = ims_malloc(plen + 16);
    w.buf = ims_malloc(SNAP_BUF);
    if (!tmp || !w.buf) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory saving %s", path);
        goto out;
    }
    snprintf(tmp, plen + 16, "%s.tmp-XXXXXX", path);
    w.fd = mkostemp(tmp, O_CLOEXEC);
    created = w.fd >= 0;
    if (w.fd < 0) {
        st = ims_error_set(err, IMS_ERR_IO, "index: cannot create a temp file next to %s: %s",
                           path, strerror(errno));
        goto out;
    }
    pthread_rwlock_rdlock(&vx->lock);
    locked = 1;
    const struct index__store *s = &vx->store;
    size_t spec_len = strlen(vx->spec);
    size_t header_len = SNAP_HEADER + spec_len;
    if (lseek(w.fd, (off_t)header_len, SEEK_SET) < 0) {
        st = ims_error_set(err, IMS_ERR_IO, "index: cannot seek in %s: %s", tmp, strerror(errno));
        goto out;
    }
    w.crc = crc32(0L, Z_NULL, 0);
    int ok = writer_put(&w, s->ids, s->n * sizeof(int64_t)) == 0;
    for (size_t c = 0; ok && c * INDEX_CHUNK_ROWS < s->n; c++) {
        size_t rows = IMS_MIN((size_t)INDEX_CHUNK_ROWS, s->n - c * INDEX_CHUNK_ROWS);
        ok = writer_put(&w, s->chunks[c], rows * (size_t)s->dim * sizeof(float)) == 0;
    }
    if (!ok)
        goto write_failed;
    uint64_t before_faiss = w.bytes;
    if (vx->faiss) {
        st = index__faiss_write(vx->faiss, writer_put, &w, err);
        if (st != IMS_OK) {
            if (w.failed_errno)
                goto write_failed;
            ims_error_prefix(err, "index: saving %s", path);
            goto out;
        }
    }
    if (vx->graph) { /* own graph (Graph types): its bytes in the same slot */
        st = index__graph_write(vx->graph, writer_put, &w, err);
        if (st != IMS_OK)
            goto write_failed;
    }
    uint64_t faiss_bytes = w.bytes - before_faiss;
    if (writer_flush(&w) != 0)
        goto write_failed;

    unsigned char hdr[SNAP_HEADER + VINDEX_MAX_SPEC];
    memset(hdr, 0, sizeof hdr);
    memcpy(hdr, SNAP_MAGIC, 8);
    put_u32(hdr + 8, SNAP_VERSION);
    put_u32(hdr + 12, (uint32_t)vx->dim);
    put_u64(hdr + 16, (uint64_t)last_id);
    put_u64(hdr + 24, (uint64_t)s->n);
    put_u64(hdr + 32, faiss_bytes);
    put_u32(hdr + 40, (uint32_t)spec_len);
    put_u32(hdr + 44, 0);
    memcpy(hdr + SNAP_HEADER, vx->spec, spec_len);
    pthread_rwlock_unlock(&vx->lock);
    locked = 0;

    uLong crc = crc32_combine(crc_update(crc32(0L, Z_NULL, 0), hdr, header_len), w.crc,
                              (z_off_t)w.bytes);
    unsigned char trailer[4];
    put_u32(trailer, (uint32_t)crc);
    if (pwrite_all(w.fd, hdr, header_len, 0) != 0 ||
        pwrite_all(w.fd, trailer, 4, (off_t)(header_len + w.bytes)) != 0) {
        w.failed_errno = errno;
        goto write_failed;
    }
    if (fsync(w.fd) != 0) {
        w.failed_errno = errno;
        goto write_failed;
    }
    if (close(w.fd) != 0) {
        w.fd = -1;
        w.failed_errno = errno;
        goto write_failed;
    }
    w.fd = -1;
    if (rename(tmp, path) != 0) {
        st = ims_error_set(err, IMS_ERR_IO, "index: cannot rename %s to %s: %s", tmp, path,
                           strerror(errno));
        goto out;
    }
    fsync_parent(path);
    goto out;

write_failed:
    st = ims_error_set(err, IMS_ERR_IO, "index: cannot write %s: %s", tmp,
                       strerror(w.failed_errno ? w.failed_errno : EIO));
out:
    if (locked)
        pthread_rwlock_unlock(&vx->lock);
    if (w.fd >= 0)
        close(w.fd);
    if (st != IMS_OK && created)
        unlink(tmp);
    ims_free(w.buf);
    ims_free(tmp);
    return st;
}

/* ---- load -------------------------------------------------------------------- */

struct snap_reader {
    const unsigned char *p;
    size_t left;
};

static int reader_get(void *ctx, void *data, size_t len)
{
    struct snap_reader *r = ctx;
    if (len > r->left)
        return -1;
    memcpy(data, r->p, len);
    r->p += len;
    r->left -= len;
    return 0;
}

enum ims_status vindex_snapshot_info(const char *path, struct vindex_snapshot_info *info,
                                     struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!path || !info, err, IMS_ERR_INVALID, "index: snapshot info needs a path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ims_error_set(err, errno == ENOENT ? IMS_ERR_NOT_FOUND : IMS_ERR_IO,
                             "index snapshot %s: cannot open: %s", path, strerror(errno));
    enum ims_status st = IMS_OK;
    unsigned char hdr[SNAP_HEADER + VINDEX_MAX_SPEC];
    struct stat sb;
    ssize_t got = 0;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = ims_error_set(err, IMS_ERR_IO, "index snapshot %s: not a regular file", path);
        goto out;
    }
    got = pread(fd, hdr, sizeof hdr, 0);
    if (got < (ssize_t)SNAP_HEADER + 1 || memcmp(hdr, SNAP_MAGIC, 8) != 0 ||
        get_u32(hdr + 8) != SNAP_VERSION) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "index snapshot %s: not an imgsearch snapshot of format %u", path,
                           SNAP_VERSION);
        goto out;
    }
    uint32_t dim = get_u32(hdr + 12), spec_len = get_u32(hdr + 40);
    int64_t last = (int64_t)get_u64(hdr + 16);
    uint64_t count = get_u64(hdr + 24), faiss_bytes = get_u64(hdr + 32);
    size_t size = (size_t)sb.st_size, rows_total = 0, expect = 0;
    if (dim < 1 || dim > VINDEX_MAX_DIM || spec_len < 1 || spec_len > VINDEX_MAX_SPEC ||
        (size_t)got < SNAP_HEADER + spec_len || last < -1 || count > SIZE_MAX ||
        faiss_bytes > SIZE_MAX ||
        ims_size_mul((size_t)count, 8 + 4 * (size_t)dim, &rows_total) != 0 ||
        ims_size_add(SNAP_HEADER + spec_len + 4, rows_total, &expect) != 0 ||
        ims_size_add(expect, (size_t)faiss_bytes, &expect) != 0 || expect != size) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "index snapshot %s: header does not match the file (%zu bytes)", path,
                           size);
        goto out;
    }
    for (uint32_t i = 0; i < spec_len; i++)
        if (hdr[SNAP_HEADER + i] < 0x21 || hdr[SNAP_HEADER + i] > 0x7e) {
            st = ims_error_set(err, IMS_ERR_CORRUPT, "index snapshot %s: bad index type", path);
            goto out;
        }
    info->dim = (int)dim;
    info->count = count;
    info->last_id = last;
    memcpy(info->spec, hdr + SNAP_HEADER, spec_len);
    info->spec[spec_len] = '\0';
out:
    close(fd);
    return st;
}

/* The own graph of a Graph snapshot (index_graph.c validates it whole),
 * then its live labels against the stored ids: the same set, one node each. */
static enum ims_status load_graph(struct vindex *vx, const unsigned char *p, size_t n,
                                  const char *path, struct ims_error *err)
{
    char why[256];
    struct index__graph *g = NULL;
    if (index__graph_read(p, n, vx->dim, &g, why, sizeof why) != 0)
        return ims_error_set(err, IMS_ERR_CORRUPT, "index snapshot %s: %s", path, why);
    if (index__graph_m(g) != index__graph_m(vx->graph) ||
        index__graph_live(g) != vx->store.n) {
        enum ims_status st = ims_error_set(
            err, IMS_ERR_CORRUPT, "index snapshot %s: graph (M %d, %zu live nodes) does not match "
            "the type or the %zu stored vectors", path, index__graph_m(g), index__graph_live(g),
            vx->store.n);
        index__graph_free(g);
        return st;
    }
    for (size_t i = 0; i < index__graph_nodes(g); i++) {
        int del;
        int64_t label = index__graph_label(g, i, &del);
        if (!del && index__store_find(&vx->store, label) < 0) {
            index__graph_free(g);
            return ims_error_set(err, IMS_ERR_CORRUPT,
                                 "index snapshot %s: graph node %zu holds id %lld, not stored",
                                 path, i, (long long)label);
        }
    }
    index__graph_free(vx->graph);
    vx->graph = g;
    return IMS_OK;
}

enum ims_status vindex_load(const char *path, int dim, const char *spec, struct vindex **out,
                            int64_t *last_id, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct vindex *vx = NULL;
    struct index__faiss *f = NULL;
    unsigned char *map = NULL;
    float *rowbuf = NULL;
    size_t size = 0;
    int fd = -1;
    IMS_RETURN_ERROR_IF(!path || !out, err, IMS_ERR_INVALID, "index: load needs a path");
    spec = (!spec || !spec[0]) ? "Flat" : spec;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st = ims_error_set(err, errno == ENOENT ? IMS_ERR_NOT_FOUND : IMS_ERR_IO,
                           "index snapshot %s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = ims_error_set(err, IMS_ERR_IO, "index snapshot %s: not a regular file", path);
        goto out;
    }
    size = (size_t)sb.st_size;
    if (size < SNAP_HEADER + 4) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "index snapshot %s: truncated (%zu bytes, the header alone is %u)",
                           path, size, SNAP_HEADER + 4);
        goto out;
    }
    map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        map = NULL;
        st = ims_error_set(err, IMS_ERR_IO, "index snapshot %s: cannot map: %s", path,
                           strerror(errno));
        goto out;
    }
    if (memcmp(map, SNAP_MAGIC, 8) != 0) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "index snapshot %s: bad magic, not an imgsearch index snapshot", path);
        goto out;
    }
    uint32_t version = get_u32(map + 8);
    if (version != SNAP_VERSION) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "index snapshot %s: format version %u, this build reads %u", path,
                           version, SNAP_VERSION);
        goto out;
    }
    uint32_t sdim = get_u32(map + 12);
    if (sdim != (uint32_t)dim) {
        st = ims_error_set(err, IMS_ERR_MODEL_MISMATCH,
                           "index snapshot %s: vectors have dimension %u, expected %d", path,
                           sdim, dim);
        goto out;
    }
    int64_t slast = (int64_t)get_u64(map + 16);
    uint64_t count = get_u64(map + 24), faiss_bytes = get_u64(map + 32);
    uint32_t spec_len = get_u32(map + 40), flags = get_u32(map + 44);
    if (spec_len < 1 || spec_len > VINDEX_MAX_SPEC || SNAP_HEADER + spec_len + 4 > size) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "index snapshot %s: bad spec length %u", path,
                           spec_len);
        goto out;
    }
    if (strlen(spec) != spec_len || memcmp(map + SNAP_HEADER, spec, spec_len) != 0) {
        st = ims_error_set(err, IMS_ERR_MODEL_MISMATCH,
                           "index snapshot %s: index type \"%.*s\", expected \"%s\"", path,
                           (int)spec_len, (const char *)map + SNAP_HEADER, spec);
        goto out;
    }
    /* expected = 48 + L + count*(8 + 4*dim) + F + 4, overflow-checked */
    size_t row_bytes = 8 + 4 * (size_t)sdim, expect = 0, rows_total = 0;
    if (count > SIZE_MAX || faiss_bytes > SIZE_MAX ||
        ims_size_mul((size_t)count, row_bytes, &rows_total) != 0 ||
        ims_size_add(SNAP_HEADER + spec_len + 4, rows_total, &expect) != 0 ||
        ims_size_add(expect, (size_t)faiss_bytes, &expect) != 0 || expect != size) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "index snapshot %s: %zu bytes on disk but the header describes %llu "
                           "vectors and %llu FAISS bytes (truncated or damaged)",
                           path, size, (unsigned long long)count,
                           (unsigned long long)faiss_bytes);
        goto out;
    }
    uint32_t want_crc = get_u32(map + size - 4);
    uint32_t got_crc = (uint32_t)crc_update(crc32(0L, Z_NULL, 0), map, size - 4);
    if (want_crc != got_crc) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "index snapshot %s: checksum mismatch (stored %08x, computed %08x)",
                           path, want_crc, got_crc);
        goto out;
    }
    if (flags != 0) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "index snapshot %s: unknown flags %08x", path,
                           flags);
        goto out;
    }
    if (slast < -1) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "index snapshot %s: bad last id %lld", path,
                           (long long)slast);
        goto out;
    }

    st = index__vindex_create(spec, dim, &vx, err);
    if (st != IMS_OK)
        goto out;
    if ((vx->kind == INDEX_KIND_FAISS || vx->kind == INDEX_KIND_GRAPH) != (faiss_bytes != 0)) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "index snapshot %s: FAISS payload %s for type \"%s\"", path,
                           faiss_bytes ? "present" : "missing", spec);
        goto out;
    }
    const unsigned char *ids_at = map + SNAP_HEADER + spec_len;
    const unsigned char *vec_at = ids_at + 8 * (size_t)count;
    st = index__store_reserve(&vx->store, (size_t)count, err);
    if (st != IMS_OK)
        goto out;
    rowbuf = ims_malloc(4 * (size_t)sdim);
    if (!rowbuf) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "index snapshot %s: out of memory", path);
        goto out;
    }
    for (size_t i = 0; i < (size_t)count; i++) {
        /* The map is only 4-byte aligned when L is: copy each row out. */
        int64_t id = (int64_t)get_u64(ids_at + 8 * i);
        memcpy(rowbuf, vec_at + 4 * (size_t)sdim * i, 4 * (size_t)sdim);
        int finite = 1;
        for (size_t j = 0; j < sdim && finite; j++)
            finite = isfinite(rowbuf[j]);
        if (id < 0 || index__store_find(&vx->store, id) >= 0 || !finite) {
            st = ims_error_set(err, IMS_ERR_CORRUPT,
                               "index snapshot %s: row %zu has a bad or duplicate id %lld or a "
                               "non-finite value",
                               path, i, (long long)id);
            goto out;
        }
        index__store_append(&vx->store, &id, rowbuf, 1);
        if (id > vx->last_id)
            vx->last_id = id;
    }
    if (faiss_bytes && vx->kind == INDEX_KIND_GRAPH) {
        st = load_graph(vx, vec_at + 4 * (size_t)sdim * (size_t)count, (size_t)faiss_bytes, path,
                        err);
        if (st != IMS_OK)
            goto out;
    } else if (faiss_bytes) {
        struct snap_reader r = {vec_at + 4 * (size_t)sdim * (size_t)count, (size_t)faiss_bytes};
        /* Damage under a recomputed CRC must not reach FAISS's reader, which
         * trusts every length: walk the formats we know first. */
        char why[256];
        int walked = index__faiss_walk(r.p, r.left, why, sizeof why);
        if (walked == -1 || (walked == -2 && index__faiss_spec_walkable(spec))) {
            st = ims_error_set(err, IMS_ERR_CORRUPT, "index snapshot %s: FAISS payload: %s",
                               path, why);
            goto out;
        }
        st = index__faiss_read(reader_get, &r, &f, err);
        if (st != IMS_OK) {
            ims_error_prefix(err, "index snapshot %s", path);
            goto out;
        }
        int64_t ntotal = index__faiss_ntotal(f);
        if (index__faiss_dim(f) != dim || ntotal < (int64_t)count ||
            (index__faiss_can_remove(f) && ntotal != (int64_t)count) || r.left != 0) {
            st = ims_error_set(err, IMS_ERR_CORRUPT,
                               "index snapshot %s: FAISS index (d=%d, %lld vectors) does not "
                               "match the %llu stored vectors",
                               path, index__faiss_dim(f), (long long)ntotal,
                               (unsigned long long)count);
            goto out;
        }
        index__vindex_set_faiss(vx, f);
        f = NULL;
    }
    if (slast > vx->last_id)
        vx->last_id = slast;
    *out = vx;
    vx = NULL;
    if (last_id)
        *last_id = slast;
out:
    ims_free(rowbuf);
    index__faiss_free(f);
    vindex_free(vx);
    if (map)
        munmap(map, size);
    if (fd >= 0)
        close(fd);
    return st;
}
