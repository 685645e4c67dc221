/* SPDX-License-Identifier: MIT */
/*
 * index.h: the vector index. Top-k by cosine similarity (inner product on
 * L2-normalised vectors) over catalogue embeddings, with atomic snapshots.
 *
 *     struct ims_error err = {0};
 *     struct vindex *vx = NULL;
 *     int64_t last_id = 0;
 *     enum ims_status st = vindex_load(snap_path, 512, "Flat", &vx, &last_id, &err);
 *     if (st != IMS_OK) {                      // missing, corrupt, other model: rebuild
 *         st = vindex_new("Flat", 512, &vx, &err);
 *         last_id = 0;
 *     }
 *     // stream the catalogue rows with id > last_id, in chunks of ~1024:
 *     st = vindex_add(vx, ids, vecs, n, &err);  // vecs: (n, 512) float32, row-major
 *     ...
 *     float scores[20];
 *     int64_t ids[20];
 *     int n_found = 0;
 *     st = vindex_search(vx, query, 10 + offset, scores, ids, &n_found, &err);
 *     // results offset .. n_found-1 are page `offset`; best first
 *     st = vindex_save(vx, snap_path, catalogue_max_id, &err);
 *     vindex_free(vx);
 *
 * Index types (the `spec` string):
 * - "Flat" (default, also NULL or ""): exact search by our own scan
 *   (AVX-512 / AVX2 / scalar, picked at run time) over fp32 vectors.
 * - "FlatF16": exact as well, but the scan reads fp16 copies (half the memory
 *   traffic) and re-scores in fp32 every candidate that could be in the top k
 *   (a proven error bound, see docs/internals/index.md); it returns the same
 *   ids and scores as "Flat" and uses 1.5x the memory.
 * - "Graph", "Graph<M>", "Graph<M>,efc<N>": our own HNSW graph (M links per
 *   node, default 32, 2M on level 0; build beam efc, default 80), built on
 *   every core, over bf16 copies of the vectors; the walk's beam
 *   (ef_search, default 128 for M >= 32, else 256: recall@10 >= 0.95 on
 *   1M vectors of the hard set) is
 *   re-scored exactly. Adds go into the graph at once; removed ids stay as
 *   waypoints that are never returned, until the index is rebuilt.
 * - anything else is a FAISS factory string with the inner-product metric:
 *   "IVF1024,Flat", "IVF4096,PQ64", "HNSW32", "OPQ16,IVF1024,PQ16", ... The
 *   fp32 vectors are kept alongside, so every returned score is the exact
 *   cosine: the approximate pass proposes max(k, rerank) candidates and they
 *   are re-scored exactly (vindex_search_params.rerank). Types FAISS cannot
 *   remove from (HNSW, NSG) keep removed vectors as tombstones that searches
 *   filter out (fetching more candidates to make up for them); they disappear
 *   when the index is rebuilt from the catalogue.
 *
 * Ids are catalogue ids: >= 0 and unique within the index.
 *
 * Thread contract: a vindex may be used from any number of threads. Searches
 * (and the read-only getters) run concurrently under a read lock; add, remove,
 * train, set_search_params and load/free are writers and exclude each other
 * and the searches. The lock prefers writers, so a stream of searches cannot
 * starve ingestion; a search waits at most for one writer call, so the caller
 * adds in small chunks (~1024 vectors) rather than whole batches. save takes
 * the read lock (searches continue while it writes).
 * Parallelism: one search uses one thread unless search params say otherwise
 * (n_threads: the exact scan splits rows across that many short-lived
 * threads). FAISS's OpenMP threads are used for training and adding only.
 * Concurrent searches of the exact types ("Flat", "FlatF16") coalesce when
 * the machine is busy: a search scans at once while fewer scans run than
 * there are cores; one that arrives when every core scans waits for a scan
 * to end, then runs in one shared scan with every search that queued
 * meanwhile, on one of their threads. Answers are identical to searching
 * alone, and a lone search does not wait.
 */
#ifndef IMGSEARCH_INDEX_H
#define IMGSEARCH_INDEX_H

#include "imgsearch/base.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Limits checked by vindex_new and vindex_load. */
#define VINDEX_MAX_DIM 65536
#define VINDEX_MAX_SPEC 255
#define VINDEX_MAX_K 100000
/* Most scan threads one search may use (vindex_search_params.n_threads). */
#define VINDEX_MAX_THREADS 256

struct vindex;

/* Search-time knobs. 0 leaves a field unchanged in vindex_set_search_params. */
struct vindex_search_params {
    int nprobe;    /* IVF types: lists visited (FAISS default 1) */
    int ef_search; /* HNSW types: candidate list size (FAISS default 16) */
    int rerank;    /* approximate types: candidates re-scored exactly, >= k (default 0: k) */
    int n_threads; /* exact scan threads for one query (default 1, at most
                      VINDEX_MAX_THREADS) */
};

/* Creates an empty index of `spec` (see above) for `dim`-dimensional vectors.
 * Returns IMS_ERR_INVALID for a bad dim or an unknown/invalid spec (FAISS's
 * message included). On success *out owns the index; release it with
 * vindex_free(). */
enum ims_status vindex_new(const char *spec, int dim, struct vindex **out,
                           struct ims_error *err);
/* Releases everything; accepts NULL. No other thread may use `vx`. */
void vindex_free(struct vindex *vx);

/* 1 if vindex_train must succeed before vindex_add (IVF, PQ types), else 0. */
int vindex_needs_training(struct vindex *vx);
/* Trains on `n` vectors x: (n, dim) float32. A no-op for types without
 * training. Retraining a trained index is IMS_ERR_INVALID. */
enum ims_status vindex_train(struct vindex *vx, const float *x, size_t n, struct ims_error *err);

/* Adds `n` vectors x: (n, dim) float32 with their catalogue ids. All or
 * nothing: a negative or duplicate id (IMS_ERR_EXISTS if already present),
 * a non-finite value or an untrained index is an error and nothing is added.
 * The arrays are copied. */
enum ims_status vindex_add(struct vindex *vx, const int64_t *ids, const float *x, size_t n,
                           struct ims_error *err);
/* Removes the given ids; ids not present are ignored. *n_removed (may be
 * NULL) receives how many were present. */
enum ims_status vindex_remove(struct vindex *vx, const int64_t *ids, size_t n, size_t *n_removed,
                              struct ims_error *err);

/* The top `k` (1..VINDEX_MAX_K) vectors by inner product with q: (dim)
 * float32, best first (ties: lower id first). scores and ids have room for k;
 * *n_found = min(k, count) entries are filled (fewer only for approximate
 * types that find fewer). A non-finite query is IMS_ERR_INVALID. */
enum ims_status vindex_search(struct vindex *vx, const float *q, int k, float *scores,
                              int64_t *ids, int *n_found, struct ims_error *err);
/* A filter: the catalogue ids a search may return. Bit (id % 64) of
 * bits[id / 64] set means allowed; ids >= n_bits are not allowed. The
 * bitmap is borrowed for the call. */
struct vindex_filter {
    const uint64_t *bits;
    int64_t n_bits;
};
static inline int vindex_filter_allows(const struct vindex_filter *f, int64_t id)
{
    return id >= 0 && id < f->n_bits && (f->bits[id >> 6] >> (id & 63) & 1);
}
/* vindex_search restricted to the ids `filter` allows (NULL: no filter, the
 * same as vindex_search). Every type returns min(k, matching rows) results
 * with exact scores. Exact types return the exact top k among the matching
 * rows (a filtered fp32 scan, or Flat's int8 pre-scan over the matching rows
 * with fp32 re-score from 10% matching on: scores bit-identical to
 * vindex_search's).
 * Approximate types widen their candidate pass by the filter's selectivity
 * and, when the filter matches few rows (< 10%, or the approximate pass
 * still found fewer than k matches), scan the matching rows exactly. */
enum ims_status vindex_search_filtered(struct vindex *vx, const float *q, int k,
                                       const struct vindex_filter *filter, float *scores,
                                       int64_t *ids, int *n_found, struct ims_error *err);
/* Bounds of the per-query knobs of vindex_search_with. */
#define VINDEX_MAX_EF 4096
#define VINDEX_MAX_NPROBE 65536
/* vindex_search_filtered (filter may be NULL) with per-query knobs: the
 * non-zero fields ef_search, nprobe and rerank of *params (NULL: none)
 * replace the index's defaults for this call only; n_threads is ignored.
 * A knob that does not apply to the type is ignored; a negative one or one
 * above VINDEX_MAX_EF / VINDEX_MAX_NPROBE / VINDEX_MAX_K is IMS_ERR_INVALID. */
enum ims_status vindex_search_with(struct vindex *vx, const float *q, int k,
                                   const struct vindex_filter *filter,
                                   const struct vindex_search_params *params, float *scores,
                                   int64_t *ids, int *n_found, struct ims_error *err);
/* Sets the non-zero fields of *p. A knob that does not apply to the type
 * (nprobe on HNSW) is ignored; a negative value is IMS_ERR_INVALID. */
enum ims_status vindex_set_search_params(struct vindex *vx, const struct vindex_search_params *p,
                                         struct ims_error *err);
void vindex_get_search_params(struct vindex *vx, struct vindex_search_params *out);
/* *base with the non-zero ef_search, nprobe and rerank of *over (NULL:
 * none) in their place; n_threads stays base's. */
struct vindex_search_params vindex_search_params_merge(const struct vindex_search_params *base,
                                                       const struct vindex_search_params *over);
/* What a search of an index of type `spec` uses for a knob left at 0: the
 * ef_search of Graph<M> (128 for M >= 32, else 256) and of FAISS's HNSW
 * types (256), the nprobe of IVF types (FAISS's 1); 0 for a knob the
 * type does not have (nprobe of a graph, ef_search of Flat or of an IVF
 * over an HNSW quantizer). rerank is always 0: a query re-scores its k.
 * n_threads 1. */
void vindex_default_search_params(const char *spec, struct vindex_search_params *out);

/* Live vectors (removed ones excluded). */
size_t vindex_count(struct vindex *vx);
/* The canonical spec string ("Flat" for NULL/""); owned by vx. */
const char *vindex_spec(struct vindex *vx);
int vindex_dim(struct vindex *vx);
/* The highest catalogue id covered: max of the loaded snapshot's last id and
 * every id added since (-1 if none). */
int64_t vindex_last_id(struct vindex *vx);
/* The index's version stamp: changes (to a value never used before by any
 * index of this process) whenever an add, remove, train or parameter change
 * could change what a search returns. Read it BEFORE a search to key a
 * result cache: a change racing with the search then leaves the entry with
 * a stamp older than the data, so it is never reused. Lock-free. */
uint64_t vindex_generation(struct vindex *vx);

/* ---- near-duplicates over the whole index (issue 10) ----------------------
 *
 * Groups of vectors linked by cosine (inner product of the normalised
 * vectors) >= threshold: a k-NN pass, not a list of all pairs. Each vector
 * keeps its k best neighbours above the threshold; the groups are the
 * connected components of those links (union-find, strongest links first).
 * Up to exact_max vectors every vector is scored against every other (the
 * multi-query kernels of the exact scan); beyond, the vectors are split into
 * about sqrt(n) cells (spherical k-means on a sample, deterministic) and
 * each vector is scored against the vectors of its nprobe nearest cells. */
struct vindex_dups_options {
    float threshold;   /* 0 < threshold <= 1 */
    int k;             /* neighbours kept per vector (per cell), default 16 */
    int n_threads;     /* default 2 */
    size_t exact_max;  /* default 10000 */
    int nprobe;        /* cells probed per vector beyond exact_max, default 8 */
};
void vindex_dups_options_default(struct vindex_dups_options *o);
struct vindex_dup_group {
    int64_t *ids;      /* ascending, n >= 2 */
    size_t n;
    float min_score;   /* the weakest link that joined the group */
};
struct vindex_dups {
    struct vindex_dup_group *groups; /* largest first, then by first id */
    size_t n;
    size_t n_vectors;  /* vectors looked at */
    int exact;         /* 1: every pair scored */
    int64_t *storage;  /* the groups' ids (one block) */
};
/* Over the live vectors of vx (a copy is taken under the read lock, then
 * the index is free for others). On success release *out with
 * vindex_dups_fini. IMS_ERR_INVALID for a bad threshold or option. */
enum ims_status vindex_duplicates(struct vindex *vx, const struct vindex_dups_options *o,
                                  struct vindex_dups *out, struct ims_error *err);
/* The same over n vectors x (n x dim, normalised) named ids[n]. */
enum ims_status vindex_duplicates_of(const int64_t *ids, const float *x, size_t n, int dim,
                                     const struct vindex_dups_options *o,
                                     struct vindex_dups *out, struct ims_error *err);
void vindex_dups_fini(struct vindex_dups *d);

/* Writes a snapshot to `path` atomically (temp file in the same folder,
 * fsync, rename, fsync of the folder): a failure or crash leaves the previous
 * snapshot intact. `last_id` is the highest catalogue id the index covers. */
enum ims_status vindex_save(struct vindex *vx, const char *path, int64_t last_id,
                            struct ims_error *err);
/* Loads a snapshot, verifying magic, version, dim == `dim`, spec == `spec`
 * (NULL = "Flat"), sizes and the CRC32. Errors: IMS_ERR_NOT_FOUND (missing),
 * IMS_ERR_CORRUPT (truncated, bad checksum, bad content), IMS_ERR_MODEL_MISMATCH
 * (other dim or spec), IMS_ERR_IO. Each means: rebuild from the catalogue.
 * On success *out owns a new index and *last_id is the recorded catalogue id. */
enum ims_status vindex_load(const char *path, int dim, const char *spec, struct vindex **out,
                            int64_t *last_id, struct ims_error *err);

/* Calls fn with the live vectors in storage order, a chunk at a time: ids
 * (n), vectors (n, dim) fp32, borrowed for the call, under the read lock (fn
 * must not call back into vx). Non-zero from fn stops: IMS_ERR_CANCELLED.
 * For `imgsearch repair`, which rebuilds catalogue rows from a snapshot. */
typedef int (*vindex_scan_fn)(void *user, const int64_t *ids, const float *vectors, size_t n,
                              int dim);
enum ims_status vindex_scan(struct vindex *vx, vindex_scan_fn fn, void *user,
                            struct ims_error *err);

/* What a snapshot holds, from its header alone (no payload is read, no
 * checksum verified): magic, version, dim, spec and that the file size
 * matches the counts are validated. For decisions such as "never replace a
 * snapshot that holds more" and `imgsearch repair` (which then loads it
 * with vindex_load, which verifies everything). */
struct vindex_snapshot_info {
    int dim;
    uint64_t count;   /* live vectors */
    int64_t last_id;  /* highest catalogue id covered, -1 = none */
    char spec[VINDEX_MAX_SPEC + 1];
};
/* IMS_ERR_NOT_FOUND (missing), IMS_ERR_CORRUPT (not a sound header), IMS_ERR_IO.
 * *info is set on success only. */
enum ims_status vindex_snapshot_info(const char *path, struct vindex_snapshot_info *info,
                                     struct ims_error *err);

/* Reads the vectors of a FAISS index file written by faiss.write_index (for
 * importing another tool's state). Supported: Flat, IndexIDMap(2) over Flat
 * or HNSW-Flat, HNSW-Flat, IVF-Flat and IVF-PQ (custom ids included); the
 * file is validated whole (every count, list size, graph offset, neighbour
 * id, level and entry point) before a vector is read: damage is
 * IMS_ERR_CORRUPT, other types IMS_ERR_CORRUPT naming what is supported. On
 * success *x ((*n) x (*d) floats) and *ids ((*n): the IndexIDMap's or IVF
 * lists' ids, else the position 0..n-1) are set; release both with ims_free. */
enum ims_status vindex_read_faiss_vectors(const char *path, float **x, int64_t **ids,
                                          size_t *n, int *d,
                                          struct ims_error *err);

#ifdef __cplusplus
}
#endif
#endif
