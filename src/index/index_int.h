/* SPDX-License-Identifier: MIT */
/*
 * index_int.h: the contract between the files of the index module.
 *
 *   vindex.c        public API, locking, search orchestration (scan or FAISS
 *                   pass + exact re-score), coalescing of concurrent exact
 *                   searches into one multi-query scan, validation of every
 *                   input
 *   index_store.c   the fp32 (+ optional fp16) vector store: chunked rows,
 *                   id -> row hash map, swap-remove
 *   index_scan.c    dot-product kernels, one-query and multi-query (AVX-512 /
 *                   AVX2+FMA / scalar, run-time dispatch), fp16 conversion,
 *                   the top-k heap
 *   index_snapshot.c  save/load of the snapshot format
 *   index_hnsw.c    the HNSW graph walk with our kernels over FAISS's graph
 *   index_import.c  vectors out of a foreign FAISS file (`imgsearch import`)
 *   faiss_bridge.cpp  the only C++ file: FAISS behind plain C functions; no
 *                   exception crosses it and no memory is freed across it
 *
 * Nothing here names a FAISS type; struct index__faiss is opaque to C.
 */
#ifndef IMGSEARCH_INDEX_INT_H
#define IMGSEARCH_INDEX_INT_H

#include "imgsearch/base.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- FAISS bridge (faiss_bridge.cpp) ------------------------------------ */

struct index__faiss;

/* index_factory(dim, spec, METRIC_INNER_PRODUCT); types without native ids
 * are wrapped in an IndexIDMap. On success *out owns the handle. */
enum ims_status index__faiss_new(const char *spec, int dim, struct index__faiss **out,
                                 struct ims_error *err);
void index__faiss_free(struct index__faiss *f);
int index__faiss_is_trained(const struct index__faiss *f);
/* 1 if remove_ids works for this type, 0 if removal needs tombstones. */
int index__faiss_can_remove(const struct index__faiss *f);
int64_t index__faiss_ntotal(const struct index__faiss *f);
int index__faiss_dim(const struct index__faiss *f);
enum ims_status index__faiss_train(struct index__faiss *f, const float *x, size_t n,
                                   struct ims_error *err);
enum ims_status index__faiss_add(struct index__faiss *f, const int64_t *ids, const float *x,
                                 size_t n, struct ims_error *err);
enum ims_status index__faiss_remove(struct index__faiss *f, const int64_t *ids, size_t n,
                                    struct ims_error *err);
/* Sets "nprobe" / "efSearch" where they apply (value > 0); ignores knobs the
 * type does not have. Not thread-safe against searches: hold the write lock. */
enum ims_status index__faiss_set_param(struct index__faiss *f, const char *name, int value,
                                       struct ims_error *err);
/* One query; scores/ids: (k). Missing results have id -1. Graph types use an
 * efSearch of at least min_ef for this call. Thread-safe against other
 * searches. */
enum ims_status index__faiss_search(const struct index__faiss *f, const float *q, int k,
                                    int min_ef, float *scores, int64_t *ids,
                                    struct ims_error *err);
/* Serialises with faiss::write_index, streaming bytes to `write`, which
 * returns 0 on success. */
typedef int (*index__write_fn)(void *ctx, const void *data, size_t len);
typedef int (*index__read_fn)(void *ctx, void *data, size_t len);
enum ims_status index__faiss_write(const struct index__faiss *f, index__write_fn write, void *ctx,
                                   struct ims_error *err);
/* Deserialises with faiss::read_index, pulling bytes from `read` (0 = all
 * `len` bytes delivered). */
enum ims_status index__faiss_read(index__read_fn read, void *ctx, struct index__faiss **out,
                                  struct ims_error *err);
/* A read-only view of an HNSW-Flat graph (borrowed from FAISS: valid while
 * the index is not modified, i.e. under the vindex read lock; nothing in it
 * is ever freed by C). Node i's neighbours at level l are
 * neighbors[offsets[i] + cum[l] .. offsets[i] + cum[l + 1]), -1 = end. */
struct index__hnsw_view {
    const float *vectors;                /* (ntotal, d) fp32, graph order */
    const int64_t *labels;               /* (ntotal) graph node -> catalogue id */
    const int32_t *neighbors;
    const size_t *offsets;               /* (ntotal + 1) */
    const int *cum_nneighbor_per_level;  /* (n_levels_table) */
    int n_levels_table;
    int32_t entry_point;
    int max_level;
    int ef_search;
    int64_t ntotal;
};
/* Fills *v and returns 1 for IndexHNSWFlat (under our IndexIDMap), else 0. */
int index__faiss_hnsw_view(const struct index__faiss *f, struct index__hnsw_view *v);
/* HNSW search with our kernels over a view (index_hnsw.c): the best `k`
 * nodes' labels and scores, best first; returns how many (<= k), or -1 when
 * out of memory. ef: beam width (>= k is used). */
int index__hnsw_search(const struct index__hnsw_view *v, int dim, const float *q, int k, int ef,
                       float *scores, int64_t *labels);
/* 1 (default): HNSW-Flat types are searched by index__hnsw_search; 0: by
 * FAISS (benchmarks compare both). Not thread-safe; set before searching. */
extern int index__hnsw_own_walk;

/* OpenMP threads FAISS uses in train/add, process-wide (default 1: see
 * faiss_bridge.cpp); searches always use one. */
void index__faiss_set_threads(int n);
/* Reads a FAISS index file as faiss::write_index wrote it (the prototype's
 * saved state) and reconstructs its vectors in insertion order into *x
 * ((*n) x (*d) floats, allocated with ims_malloc: release with ims_free). IVF
 * types get a direct map first; types that cannot reconstruct (PQ codes are
 * lossy but reconstruct; HNSW over Flat reconstructs) are IMS_ERR_UNSUPPORTED. */
enum ims_status index__faiss_read_file_vectors(const char *path, float **x, size_t *n, int *d,
                                               struct ims_error *err);

/* ---- scan kernels (index_scan.c) ----------------------------------------- */

/* Which kernel family the CPU gets: "avx512", "avx2", "scalar". */
const char *index__scan_isa(void);
/* Forces a family (tests/benchmarks): "avx512", "avx2", "scalar" or NULL for
 * the best supported. Returns 0, or -1 if the CPU lacks it. Not thread-safe. */
int index__scan_force_isa(const char *isa);
/* out[i] = dot(q, rows + i*dim) for i < n. rows: (n, dim) fp32. The value of
 * a row's score does not depend on n or on the row's position. */
void index__dot_f32(const float *q, const float *rows, size_t n, int dim, float *out);
/* Same over fp16 rows: (n, dim) IEEE binary16. */
void index__dot_f16(const float *q, const uint16_t *rows, size_t n, int dim, float *out);
/* Several queries against the same rows, each row read once for all of
 * them: out[j * out_stride + i] = dot(qs + j*dim, rows + i*dim) for j < nq,
 * i < n. qs: (nq, dim) fp32; out_stride >= n. Every score is bit-identical to
 * what index__dot_f32 / index__dot_f16 give for that query and row. */
void index__dot_f32_multi(const float *qs, int nq, const float *rows, size_t n, int dim,
                          float *out, size_t out_stride);
void index__dot_f16_multi(const float *qs, int nq, const uint16_t *rows, size_t n, int dim,
                          float *out, size_t out_stride);
/* Round-to-nearest-even fp32 -> fp16; |x| must be <= 65504. */
void index__f32_to_f16(const float *x, uint16_t *out, size_t n);
float index__f16_to_f32(uint16_t h);

/* A bounded top-k: min-heap on (score, -id) keeping the k best. */
struct index__topk {
    int k, n;
    float *scores; /* (k) */
    int64_t *ids;  /* (k) */
};
/* Allocates room for k. */
enum ims_status index__topk_init(struct index__topk *t, int k);
void index__topk_fini(struct index__topk *t);
/* Is (score, id) better than the current worst of a full heap? */
static inline int index__topk_would_take(const struct index__topk *t, float score, int64_t id)
{
    if (t->n < t->k)
        return 1;
    return score > t->scores[0] || (score == t->scores[0] && id < t->ids[0]);
}
void index__topk_push(struct index__topk *t, float score, int64_t id);
/* Sorts best first (score desc, id asc) in place; the heap is spent. */
void index__topk_sort(struct index__topk *t);

/* ---- vector store (index_store.c) ---------------------------------------- */

#define INDEX_CHUNK_ROWS 4096

/* Rows live in fixed chunks of INDEX_CHUNK_ROWS so that growth never moves
 * existing rows (a search never waits for a big realloc) and a scan reads
 * each chunk sequentially. Row r is chunks[r / CHUNK][r % CHUNK]. */
struct index__store {
    int dim;
    int with_f16;
    size_t n;             /* live rows */
    size_t n_chunks;      /* allocated chunks */
    size_t chunks_cap;
    float **chunks;       /* each (INDEX_CHUNK_ROWS, dim) fp32, 64-byte aligned */
    uint16_t **chunks16;  /* each (INDEX_CHUNK_ROWS, dim) fp16, if with_f16 */
    int64_t *ids;         /* (ids_cap) id of each row */
    size_t ids_cap;
    int64_t *map_keys;    /* open addressing, linear probing; -1 = empty */
    size_t *map_rows;     /* (map_cap) */
    size_t map_cap;       /* power of two, load <= 1/2 */
    float max_norm;       /* >= every stored row's L2 norm (never decreases) */
};

void index__store_init(struct index__store *s, int dim, int with_f16);
void index__store_fini(struct index__store *s);
/* Makes room for n_more rows (rows, ids and map). May fail with NOMEM; after
 * success, index__store_append of up to n_more rows cannot fail. */
enum ims_status index__store_reserve(struct index__store *s, size_t n_more, struct ims_error *err);
/* Appends validated rows (ids new and unique, values finite). */
void index__store_append(struct index__store *s, const int64_t *ids, const float *x, size_t n);
/* Row of `id`, or -1. */
int64_t index__store_find(const struct index__store *s, int64_t id);
/* Swap-remove: the last row moves into the hole. Returns 1 if removed. */
int index__store_remove(struct index__store *s, int64_t id);
static inline const float *index__store_row(const struct index__store *s, size_t r)
{
    return s->chunks[r / INDEX_CHUNK_ROWS] + (r % INDEX_CHUNK_ROWS) * (size_t)s->dim;
}

/* ---- the index object (vindex.c, index_snapshot.c) ------------------------ */

#ifndef __cplusplus
#include "imgsearch/index.h"

#include <pthread.h>

enum index__kind {
    INDEX_KIND_FLAT,     /* own exact scan, fp32 */
    INDEX_KIND_FLAT_F16, /* own exact scan over fp16 copies + fp32 re-score */
    INDEX_KIND_FAISS,    /* FAISS pass + exact re-score from the store */
};

/* Most exact searches one coalesced batch scans together (vindex.c). */
#define INDEX_BATCH_MAX 32

struct index__batch_member; /* a search waiting for, or running in, a batch (vindex.c) */

struct vindex {
    pthread_rwlock_t lock;          /* writer-preferring; guards every field below
                                       up to the batch fields */
    enum index__kind kind;          /* immutable after creation */
    int dim;
    char *spec;                     /* canonical spec, immutable after creation */
    struct index__store store;      /* live vectors and ids (all kinds) */
    struct index__faiss *faiss;     /* INDEX_KIND_FAISS only; may hold tombstones */
    int type_trains;                /* the FAISS type needs vindex_train (IVF, PQ) */
    struct vindex_search_params params;
    int64_t last_id;                /* highest catalogue id covered, -1 if none */

    /* Coalescing of concurrent exact searches (vindex.c), guarded by
     * batch_mu, never by the rwlock (a batch takes the read lock itself). */
    pthread_mutex_t batch_mu;
    int batch_running;                       /* a leader is scanning */
    struct index__batch_member *queue_head;  /* arrived while it scans, FIFO */
    struct index__batch_member *queue_tail;
    int n_queued;
    uint64_t n_batches, n_batched;           /* batches run, searches they served */
};

/* 1 (default): concurrent exact searches share one scan; 0: each scans
 * alone (benchmarks compare both). Not thread-safe; set before searching. */
extern int index__batch_enabled;
/* Called by a batch's leader, outside every lock, just before its scan, with
 * the batch's size (tests use it to hold a batch open until others have
 * queued). NULL by default. Not thread-safe; set before searching. */
extern void (*index__batch_hook)(struct vindex *vx, int n_members);
/* Searches queued behind the running batch. */
int index__batch_queued(struct vindex *vx);
/* Batches run so far and the searches they served (a lone search is a batch
 * of 1); either pointer may be NULL. */
void index__batch_stats(struct vindex *vx, uint64_t *n_batches, uint64_t *n_searches);

/* vindex_new without the output check; for FAISS kinds it also builds an
 * empty index of the type (load replaces it with the snapshot's). */
enum ims_status index__vindex_create(const char *spec, int dim,
                                     struct vindex **out, struct ims_error *err);
/* Installs a deserialised FAISS index (replacing the empty one). */
void index__vindex_set_faiss(struct vindex *vx, struct index__faiss *f);
#endif

#ifdef __cplusplus
}
#endif
#endif
