/* SPDX-License-Identifier: MIT */
/*
 * index_int.h: the contract between the files of the index module.
 *
 *   vindex.c        public API, locking, validation of every input, the
 *                   entry of every search (which engine answers)
 *   vindex_exact.c  exact fp32/fp16 scans, one query or several, the
 *                   FlatF16 rule, the filtered scan
 *   vindex_i8.c     Flat: int8 pre-scan + exact fp32 re-score
 *   vindex_batch.c  coalescing of concurrent exact searches into one
 *                   multi-query scan
 *   vindex_faiss.c  FAISS (or HNSW walk) pass + exact re-score
 *   index_store.c   the fp32 (+ optional fp16 or int8) vector store: chunked
 *                   rows on huge pages, id -> row hash map, swap-remove
 *   index_scan.c    dot-product kernels, one-query and multi-query (AVX-512 /
 *                   AVX2+FMA / scalar, run-time dispatch), fp16 conversion,
 *                   int8 quantisation, the int8 pre-scan kernels and their
 *                   error bounds
 *   index_topk.c    the top-k heap every search keeps
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
 * efSearch of at least min_ef for this call, IVF types nprobe lists when
 * nprobe > 0. Thread-safe against other searches. */
enum ims_status index__faiss_search(const struct index__faiss *f, const float *q, int k,
                                    int min_ef, int nprobe, float *scores, int64_t *ids,
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
    const int32_t *neighbors;            /* (n_neighbors) */
    size_t n_neighbors;
    const size_t *offsets;               /* (n_offsets), ntotal + 1 when valid */
    size_t n_offsets;
    const int *levels;                   /* (n_levels): node i lives on levels 0..levels[i]-1 */
    size_t n_levels;
    const int *cum_nneighbor_per_level;  /* (n_levels_table) */
    int n_levels_table;
    int32_t entry_point;
    int max_level;
    int ef_search;
    int64_t ntotal;
};
/* Fills *v and returns 1 for IndexHNSWFlat (under our IndexIDMap), else 0.
 * Graphs are validated (index__hnsw_check) when FAISS reads them, so a view
 * is always sound. */
int index__faiss_hnsw_view(const struct index__faiss *f, struct index__hnsw_view *v);
/* Fills the graph fields of *v (not vectors/labels) from a faiss::IndexHNSW
 * (passed as void: no FAISS type crosses into C). */
void index__faiss_hnsw_graph(const void *hnsw_index, struct index__hnsw_view *v);
/* Validates a graph view completely, before any walk (index_hnsw.c): sizes
 * of every table, offsets[i+1] - offsets[i] == cum[levels[i]], levels within
 * the table, every neighbour id in [-1, ntotal) and living on the level it
 * is listed at, entry point in range and on the top level. Returns 0, or -1
 * with the first problem in why. The walk relies on nothing else. */
int index__hnsw_check(const struct index__hnsw_view *v, char *why, size_t why_cap);
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
/* Reads FAISS index bytes as faiss::write_index wrote them (the prototype's
 * saved state; walked by index__faiss_walk first), validates the object (strict: only Flat, IDMap, HNSW-Flat,
 * IVF-Flat, IVF-PQ, every count checked) and reconstructs its vectors into
 * *x ((*n) x (*d) floats) with their ids in *ids ((*n); IndexIDMap's ids,
 * IVF's list ids, else the position); both allocated with ims_malloc. */
enum ims_status index__faiss_read_buffer_vectors(const void *data, size_t size, float **x,
                                                 int64_t **ids, size_t *n, int *d,
                                                 struct ims_error *err);
/* Walks a FAISS file's bytes (index_import.c): only the imported formats,
 * every length against the bytes left and the counts it must match, no
 * trailing bytes. 0 when FAISS may read it, -1 (damage) or -2 (a format
 * the walk does not know) with why. */
int index__faiss_walk(const void *data, size_t n, char *why, size_t why_cap);
/* 1 when every part of a snapshot of this spec is a format the walk knows
 * ("HNSW32", "IVF1024,Flat", "IVF1024,PQ64"): then an unknown format in its
 * payload is damage, not a type left to the CRC. */
int index__faiss_spec_walkable(const char *spec);

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

/* ---- int8 pre-scan (index_scan.c; the exactness argument is in
 * docs/internals/index.md and at the top of index_scan.c) ---------------- */

/* Bytes per int8 row: dim rounded up to 64, zero padded, so that the kernels
 * never meet a tail (the query is padded with zeros the same way). */
static inline size_t index__i8_stride(int dim) { return ((size_t)dim + 63) & ~(size_t)63; }

/* Quantises one fp32 row x (dim): scale a = max|x_i| / 127 (as a float),
 * codes[i] = round(x_i / a) in [-127, 127], codes[dim..stride) = 0. Out:
 * *scale = a; *rho >= ||x - a codes|| + gamma_d ||x|| (the residual norm plus
 * the fp32 kernel's worst rounding error per unit of ||q||, gamma_d =
 * d 2^-24 / (1 - d 2^-24)), computed in double and rounded up; *code_norm >=
 * ||a codes||, rounded up. */
void index__i8_quantize_row(const float *x, int dim, int8_t *codes, float *scale, float *rho,
                            float *code_norm);

/* A query prepared for the int8 pre-scan. qs: (stride) int16, zero padded,
 * qs = round(q S) with S = 2^e chosen so that max|qs_i| <= 32767 and
 * dim * max|qs_i| * 127 < 2^31 (the int32 dot cannot overflow). For a row
 * with int32 dot D = qs . codes, scale a and rho:
 *   A = fl(fl(fl(D) a) inv_s),  B = qc rho + kc |A| + ec  (in float),
 *   lower = fl(A - B) <= s <= fl(A + B) = upper,
 * where s is the row's fp32 kernel score (any kernel family). */
struct index__i8_query {
    int16_t *qs;  /* (stride), borrowed from the caller */
    float inv_s;  /* 1 / S, a power of two */
    float qc;     /* >= ||q||, inflated (covers the residual and fp32 terms) */
    float ec;     /* >= ||q - qs/S|| * max code norm, inflated, + 2^-100 */
    float kc;     /* 2^-21: the float rounding of A and of the bounds */
};
/* Prepares q (dim) into p, writing p->qs = qs (room for index__i8_stride
 * values). max_norm >= every stored row's norm, max_code_norm >= every
 * row's code norm. Returns 0 when the values are too large for the bounds
 * to be evaluated without overflow (||q|| or ||q|| max_norm above 2^60):
 * the caller then scans in fp32. */
int index__i8_query_init(const float *q, int dim, float max_norm, float max_code_norm, int16_t *qs,
                         struct index__i8_query *p);
/* out[i] = qs . rows[i] exactly, for i < n; rows: (n, stride) int8,
 * qs: (stride) int16 as prepared above (no overflow by construction). */
void index__dot_i8(const int16_t *qs, const int8_t *rows, size_t n, size_t stride, int32_t *out);
/* Several queries against the same rows, each row read once for all:
 * out[j * out_stride + i] = qs_j . rows[i] for j < nq, i < n; qs: (nq,
 * stride) int16, each prepared as above; out_stride >= n. Exact, like
 * index__dot_i8. */
void index__dot_i8_multi(const int16_t *qs, int nq, const int8_t *rows, size_t n, size_t stride,
                         int32_t *out, size_t out_stride);
/* The int8 kernels by name for the tests: "avx512vnni", "avx512bw", "avx2",
 * "scalar"; NULL if the CPU (or the build) lacks it. */
typedef void (*index__dot_i8_fn)(const int16_t *, const int8_t *, size_t, size_t, int32_t *);
typedef void (*index__dot_i8_multi_fn)(const int16_t *, int, const int8_t *, size_t, size_t,
                                       int32_t *, size_t);
index__dot_i8_fn index__dot_i8_kernel(const char *name);
/* The tiled multi-query kernels by name ("avx512vnni", "avx512bw"); NULL
 * for the others (their multi-query form loops over the one-query kernel)
 * or if the CPU lacks it. */
index__dot_i8_multi_fn index__dot_i8_multi_kernel(const char *name);
/* The name of the int8 kernel index__dot_i8 uses (follows the family that
 * index__scan_force_isa picked). */
const char *index__scan_i8_isa(void);
/* Bounds of rows i < n from their dots, scales and rhos (formulas above);
 * keeps the rows whose upper bound is >= thr: writes their indices, lower
 * and upper bounds in order and returns how many. sel, lower, upper: (n). */
size_t index__i8_select(const struct index__i8_query *p, const int32_t *dot, const float *scale,
                        const float *rho, size_t n, float thr, uint32_t *sel, float *lower,
                        float *upper);

/* A bounded top-k (index_topk.c): min-heap on (score, -id) keeping the k best. */
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

/* Which copies a store keeps beside the fp32 rows. */
enum {
    INDEX_STORE_F16 = 1, /* fp16 copies (FlatF16) */
    INDEX_STORE_I8 = 2,  /* int8 codes + scale + rho per row (Flat's pre-scan) */
};

/* Rows live in fixed chunks of INDEX_CHUNK_ROWS so that growth never moves
 * existing rows (a search never waits for a big realloc) and a scan reads
 * each chunk sequentially. Row r is chunks[r / CHUNK][r % CHUNK]. Chunks of
 * 2 MB or more are 2 MB aligned and advised onto transparent huge pages. */
struct index__store {
    int dim;
    int with_f16;
    int with_i8;
    size_t n;             /* live rows */
    size_t n_chunks;      /* allocated chunks */
    size_t chunks_cap;
    float **chunks;       /* each (INDEX_CHUNK_ROWS, dim) fp32 */
    uint16_t **chunks16;  /* each (INDEX_CHUNK_ROWS, dim) fp16, if with_f16 */
    int8_t **chunks8;     /* each (INDEX_CHUNK_ROWS, index__i8_stride(dim)) int8 codes,
                             if with_i8 */
    float **chunks8_meta; /* each (2, INDEX_CHUNK_ROWS): the rows' scales, then their
                             rhos (index__i8_quantize_row), if with_i8 */
    int64_t *ids;         /* (ids_cap) id of each row */
    size_t ids_cap;
    int64_t *map_keys;    /* open addressing, linear probing; -1 = empty */
    size_t *map_rows;     /* (map_cap) */
    size_t map_cap;       /* power of two, load <= 1/2 */
    float max_norm;       /* >= every stored row's L2 norm (never decreases) */
    float max_code_norm;  /* >= every stored row's int8 code norm (never decreases) */
};

/* flags: INDEX_STORE_F16 | INDEX_STORE_I8, or 0. */
void index__store_init(struct index__store *s, int dim, int flags);
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
/* Chunk c's int8 scales and rhos: (INDEX_CHUNK_ROWS) each. */
static inline const float *index__store_i8_scales(const struct index__store *s, size_t c)
{
    return s->chunks8_meta[c];
}
static inline const float *index__store_i8_rhos(const struct index__store *s, size_t c)
{
    return s->chunks8_meta[c] + INDEX_CHUNK_ROWS;
}

/* ---- the index object (vindex.c, index_snapshot.c) ------------------------ */

#ifndef __cplusplus
#include "imgsearch/index.h"

#include <pthread.h>

enum index__kind {
    INDEX_KIND_FLAT,     /* own exact scan, fp32 */
    INDEX_KIND_FLAT_F16, /* own exact scan over fp16 copies + fp32 re-score */
    INDEX_KIND_FAISS,    /* FAISS pass + exact re-score from the store */
    INDEX_KIND_GRAPH,    /* own HNSW (index_graph.c) + exact re-score */
};
struct index__graph;

#include <stdatomic.h>

/* Most exact searches one coalesced batch scans together (vindex_batch.c). */
#define INDEX_BATCH_MAX 32

/* ef_search of a FAISS-built HNSW index nobody set one for (index set,
 * reindex --ef-search, a query's ef): FAISS's own default is 16, which on
 * the hard set of bench/VECTORS.md gives recall@10 far below 0.95; 256 gives
 * 0.983 at 1M (ef 128: 0.944), bench/README-index.md. Our Graph has its own
 * default (index__graph_default_ef). */
#define INDEX_HNSW_DEFAULT_EF 256

struct index__batch_member; /* a search waiting for, or running in, a batch (vindex_batch.c) */

struct vindex {
    pthread_rwlock_t lock;          /* writer-preferring; guards every field below
                                       up to the batch fields */
    enum index__kind kind;          /* immutable after creation */
    int dim;
    char *spec;                     /* canonical spec, immutable after creation */
    struct index__store store;      /* live vectors and ids (all kinds) */
    struct index__faiss *faiss;     /* INDEX_KIND_FAISS only; may hold tombstones */
    struct index__graph *graph;     /* INDEX_KIND_GRAPH only (index_graph.h) */
    int type_trains;                /* the FAISS type needs vindex_train (IVF, PQ) */
    struct vindex_search_params params;
    int64_t last_id;                /* highest catalogue id covered, -1 if none */
    _Atomic uint64_t generation;    /* version stamp: set under the write lock on
                                       every change searches can see (vindex.c) */

    /* Coalescing of concurrent exact searches (vindex_batch.c), guarded by
     * batch_mu, never by the rwlock (a batch takes the read lock itself). */
    pthread_mutex_t batch_mu;
    int batch_running;                       /* leaders scanning (index_batch_policy.c) */
    struct index__batch_member *queue_head;  /* arrived while it scans, FIFO */
    struct index__batch_member *queue_tail;
    int n_queued;
    uint64_t n_batches, n_batched;           /* batches run, searches they served */

    /* Flat's int8 pre-scan (vindex_i8.c): searches that used it, candidates
     * they re-scored in fp32, and those that fell back to the fp32 scan
     * (too many candidates). Updated by concurrent searches. */
    atomic_uint_least64_t i8_searches, i8_candidates, i8_fallbacks;
};

/* 1 (default): Flat searches pre-scan the int8 codes and re-score the
 * candidates in fp32; 0: they scan the fp32 rows (tests and benchmarks
 * compare both). Not thread-safe; set before searching. */
extern int index__i8_enabled;
/* The counters above; any pointer may be NULL. */
void index__i8_stats(struct vindex *vx, uint64_t *n_searches, uint64_t *n_candidates,
                     uint64_t *n_fallbacks);

/* Coalescing policy (index_batch_policy.c): 2 (default, adaptive): a
 * search scans at once, alone, while fewer scans than cores run, and queues
 * for a shared scan only when every core already scans; 1 (always): one
 * scan at a time, every search arriving meanwhile queues; 0 (never): each
 * scans alone. Not thread-safe; set before searching. */
extern int index__batch_enabled;
/* How many scans may run before a search queues: 1 for "always", the
 * online cores (or index__batch_max_runners when > 0) for "adaptive". */
int index__batch_runners(void);
extern int index__batch_max_runners;
/* Called by a batch's leader, outside every lock, just before its scan, with
 * the batch's size (tests use it to hold a batch open until others have
 * queued). NULL by default. Not thread-safe; set before searching. */
extern void (*index__batch_hook)(struct vindex *vx, int n_members);
/* Searches queued behind the running batch. */
int index__batch_queued(struct vindex *vx);
/* Batches run so far and the searches they served (a lone search is a batch
 * of 1); either pointer may be NULL. */
void index__batch_stats(struct vindex *vx, uint64_t *n_batches, uint64_t *n_searches);

/* ---- the search engines (vindex_*.c); all run under the caller's read
 * lock, tops are initialised heaps, k <= the store's row count ------------- */

/* Runs run(jobs + t * job_bytes) for every t < n, 1 <= n <= VINDEX_MAX_THREADS
 * (vindex_exact.c): job 0 on the calling thread, the others on short-lived
 * threads joined before it returns. A job whose thread cannot be created
 * runs on the calling thread, so every job runs exactly once whatever the
 * system allows. The one fan-out of the index: exact scans, int8 pre-scan,
 * graph build (index_graph.c) and the duplicates pass (index_dups.c). */
void index__fan_out(void *jobs, size_t job_bytes, int n, void (*run)(void *job));
/* Tests: when nonzero, index__fan_out treats every thread creation as
 * failed (the path a system out of threads takes). */
extern int index__fan_out_fail;
/* qsort order of int64 ids, ascending. */
static inline int index__cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}
/* FlatF16, one query (vindex_exact.c): the fp16 scan, then the exactness
 * rule's fp32 re-score, or the fp32 scan when the rule cannot decide. */
enum ims_status index__search_f16(const struct vindex *vx, const float *q, int k, int n_threads,
                                  struct index__topk *top);
/* The same for nq <= INDEX_BATCH_MAX queries qs (nq, dim), k[q] each. */
enum ims_status index__search_f16_multi(const struct vindex *vx, const float *qs, int nq,
                                        const int *k, int n_threads, struct index__topk *tops);
/* The fp32 scan for the queries redo[0..n_redo) of qs (nq, dim), one pass
 * for all; tops[redo[i]] are empty heaps of the queries' k. */
enum ims_status index__scan_fp32_redo(const struct index__store *s, const float *qs,
                                      const int *redo, int n_redo, int n_threads,
                                      struct index__topk *tops);
/* The exact top k among the rows `f` allows (n_match of them). */
enum ims_status index__scan_filtered(const struct index__store *s, const float *q,
                                     const struct vindex_filter *f, size_t n_match,
                                     struct index__topk *top);
/* Flat, nq <= INDEX_BATCH_MAX queries (vindex_i8.c): the int8 pre-scan,
 * then the fp32 scan for the queries it could not answer. */
enum ims_status index__search_flat_multi(struct vindex *vx, const float *qs, int nq, const int *k,
                                         int n_threads, struct index__topk *tops);
/* Flat with a filter (vindex_i8.c), 1 <= k <= the rows f allows: the int8
 * pre-scan and fp32 re-score over the matching rows only, the exact top k
 * among them into top (empty heap of k); *done = 0 if it could not answer
 * (not usable, too many candidates): top untouched, scan instead. */
enum ims_status index__search_flat_filtered(struct vindex *vx, const float *q, int k,
                                            const struct vindex_filter *f, int n_threads,
                                            struct index__topk *top, int *done);
/* FAISS kinds (vindex_faiss.c): candidates, exact re-score; filter may be
 * NULL (n_match: the rows it allows). Messages go to err. */
enum ims_status index__search_faiss(const struct vindex *vx, const float *q, int k,
                                    const struct vindex_filter *filter, size_t n_match,
                                    const struct vindex_search_params *qp,
                                    struct index__topk *top, struct ims_error *err);
/* An exact kind's search (vindex_batch.c): joins or leads a coalesced batch
 * (or runs alone when index__batch_enabled is 0) and takes the read lock
 * itself. k >= 1; on IMS_OK scores/ids hold *n_found results, best first. */
enum ims_status index__batch_search(struct vindex *vx, const float *q, int k, float *scores,
                                    int64_t *ids, int *n_found);

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
