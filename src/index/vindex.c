/* SPDX-License-Identifier: MIT */
/*
 * vindex.c: the public index API (index.h): creation, validation, the
 * lock, train/add/remove, and the entry of every search, which picks the
 * engine. The engines live beside it, one file each:
 *   vindex_exact.c  exact fp32/fp16 scans (one query or several), the
 *                   FlatF16 rule, the filtered scan
 *   vindex_i8.c     Flat's int8 pre-scan + exact fp32 re-score (also
 *                   filtered, from 10% matching rows on)
 *   vindex_batch.c  coalescing of concurrent exact searches into batches
 *   vindex_faiss.c  FAISS (or our HNSW walk) + exact re-score
 *
 * DESIGN
 * - One pthread rwlock per index, writer-preferring (glibc's
 *   PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP), so that a steady stream of
 *   searches cannot starve ingestion. Writers hold it for one call; callers
 *   add in small chunks so searches wait milliseconds, never a whole batch.
 * - Every kind keeps the live vectors in an index__store (index_store.c).
 *   That is the exact-scan data for "Flat"/"FlatF16", and for FAISS kinds it
 *   gives (a) the exact re-score of candidates, so reported scores are true
 *   cosines whatever the quantisation, and (b) the live-id set: a candidate
 *   FAISS returns whose id is not in the store was removed (graph types that
 *   cannot remove keep such tombstones) and is skipped.
 * - fp32 scan: dot products chunk by chunk into a small buffer, then a
 *   bounded heap. With params.n_threads > 1 the chunks are split over that
 *   many short-lived threads (per query; creating a thread costs 20-60 us
 *   here against a 1-10 ms scan), each with its own heap, merged at the end.
 *   This is the only intra-query parallelism; across queries it is the
 *   caller's (server threads), which is why the default is 1 thread.
 * - Flat search: an int8 pre-scan with an exact fp32 re-score
 *   (vindex_i8.c). The store keeps int8 codes of every row (a quarter of the fp32
 *   bytes); the pre-scan reads them, bounds every row's fp32 score from
 *   above and below (index_scan.c), and re-scores in fp32 only the rows
 *   whose upper bound reaches the k-th largest lower bound: tens of rows per
 *   query on 100k. Same answer as the fp32 scan, bit for bit; too many
 *   candidates (massive near-ties) fall back to the fp32 scan.
 * - FlatF16 search (exactness rule): with fp16 rows, |s16 - s32| <= delta
 *   where delta = |q| (M (2^-11 + d 2^-22) + sqrt(d) 2^-24), M >= every row
 *   norm (fp16 rounding is <= 2^-11 relative for normals, <= 2^-25 absolute
 *   for subnormals; both sums round in fp32, <= d 2^-24 relative each). If T
 *   is the k-th best fp16 score, every true top-k row has s16 >= T - 2 delta.
 *   The scan keeps the best C = 2k + 32 fp16 scores; if the C-th is below
 *   T - 2 delta, the heap holds every row that can be in the top k, and
 *   re-scoring them with the fp32 kernel gives exactly the fp32 scan's top k
 *   (same kernel, bit-identical scores). Otherwise (massive ties) it falls
 *   back to the fp32 scan. So FlatF16 is exact, not approximate.
 * - Coalescing (exact kinds): a full scan reads every vector, so with many
 *   concurrent queries the memory bandwidth, not the arithmetic, caps the
 *   throughput (16 clients over 100k x 512 fp32: ~100 queries/s on 2 cores).
 *   Concurrent searches therefore share scans: a search that arrives while a
 *   scan runs queues; when the scan ends, the oldest queued search leads the
 *   next batch (everything queued, up to INDEX_BATCH_MAX), which reads each
 *   block of rows once and scores it against every query with the
 *   multi-query kernel (index_scan.c), each query with its own heap and k
 *   (Flat: the int8 codes, each query with its own bounds and candidates).
 *   A lone search runs at once through the one-query path (no timer, no
 *   waiting for company). The multi-query kernel gives every (row, query)
 *   the one-query kernel's bits, the heaps have a strict order, and FlatF16
 *   applies its rule per query, so a batched answer is identical to the same
 *   search run alone. A batch runs under one read lock taken by its leader.
 * - FAISS search: ask FAISS for max(k, rerank) candidates, scaled up by the
 *   tombstone ratio; re-score the live ones exactly; if removed entries left
 *   fewer than k, double the request and retry. For HNSW-Flat the candidates
 *   come from our own walk of FAISS's graph (index_hnsw.c), same algorithm,
 *   our distance kernels.
 */

#include "index_int.h"
#include "index_graph.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


/* ---- creation ------------------------------------------------------------- */

static const char *canonical_spec(const char *spec)
{
    return (!spec || !spec[0]) ? "Flat" : spec;
}

static void bump_generation(struct vindex *vx);

enum ims_status index__vindex_create(const char *spec, int dim,
                                     struct vindex **out, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct vindex *vx = NULL;
    int lock_ok = 0, gm = 0, gefc = 0;
    spec = canonical_spec(spec);
    IMS_RETURN_ERROR_IF(dim < 1 || dim > VINDEX_MAX_DIM, err, IMS_ERR_INVALID,
                        "index: dimension %d is outside 1..%d", dim, VINDEX_MAX_DIM);
    IMS_RETURN_ERROR_IF(strlen(spec) > VINDEX_MAX_SPEC, err, IMS_ERR_INVALID,
                        "index: type string longer than %d bytes", VINDEX_MAX_SPEC);
    vx = ims_calloc(1, sizeof *vx);
    if (!vx) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory");
        goto out;
    }
    vx->dim = dim;
    vx->last_id = -1;
    atomic_init(&vx->i8_searches, 0);
    atomic_init(&vx->i8_candidates, 0);
    atomic_init(&vx->i8_fallbacks, 0);
    atomic_init(&vx->generation, 0);
    bump_generation(vx); /* a new object never repeats an old object's stamp */
    vx->params.n_threads = 1;
    if (strcmp(spec, "Flat") == 0)
        vx->kind = INDEX_KIND_FLAT;
    else if (strcmp(spec, "FlatF16") == 0)
        vx->kind = INDEX_KIND_FLAT_F16;
    else if (index__graph_parse_spec(spec, &gm, &gefc) != 0)
        vx->kind = INDEX_KIND_GRAPH;
    else
        vx->kind = INDEX_KIND_FAISS;
    index__store_init(&vx->store, dim,
                      vx->kind == INDEX_KIND_FLAT_F16 ? INDEX_STORE_F16
                      : vx->kind == INDEX_KIND_FLAT   ? INDEX_STORE_I8
                                                      : 0);
    vx->spec = ims_strdup(spec);
    if (!vx->spec) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory");
        goto out;
    }
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&vx->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rc != 0) {
        st = ims_error_set(err, IMS_ERR_INTERNAL, "index: cannot create the lock");
        goto out;
    }
    lock_ok = 1;
    if (pthread_mutex_init(&vx->batch_mu, NULL) != 0) {
        st = ims_error_set(err, IMS_ERR_INTERNAL, "index: cannot create the lock");
        goto out;
    }
    lock_ok = 2;
    if (vx->kind == INDEX_KIND_FAISS) {
        /* Also when loading (the snapshot's index replaces this one): an empty
         * index of the type tells whether the type trains at all. */
        st = index__faiss_new(spec, dim, &vx->faiss, err);
        if (st != IMS_OK) {
            ims_error_prefix(err, "index type \"%s\"", spec);
            goto out;
        }
        vx->type_trains = !index__faiss_is_trained(vx->faiss);
    }
    if (vx->kind == INDEX_KIND_GRAPH) {
        if (index__graph_parse_spec(spec, &gm, &gefc) != 1) {
            st = ims_error_set(err, IMS_ERR_INVALID,
                               "index type \"%s\": Graph<M>[,efc<N>] wants M in %d..%d and N in "
                               "8..2048", spec, INDEX_GRAPH_MIN_M, INDEX_GRAPH_MAX_M);
            goto out;
        }
        if ((st = index__graph_new(dim, gm, gefc, &vx->graph)) != IMS_OK) {
            st = ims_error_set(err, st, "index: out of memory");
            goto out;
        }
        vx->params.ef_search = index__graph_default_ef(gm);
    }
    *out = vx;
    vx = NULL;
out:
    if (vx) {
        index__faiss_free(vx->faiss);
        index__graph_free(vx->graph);
        if (lock_ok >= 1)
            pthread_rwlock_destroy(&vx->lock);
        if (lock_ok >= 2)
            pthread_mutex_destroy(&vx->batch_mu);
        ims_free(vx->spec);
        ims_free(vx);
    }
    return st;
}

void index__vindex_set_faiss(struct vindex *vx, struct index__faiss *f)
{
    index__faiss_free(vx->faiss);
    vx->faiss = f;
}

enum ims_status vindex_new(const char *spec, int dim, struct vindex **out, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!out, err, IMS_ERR_INVALID, "index: no output pointer");
    return index__vindex_create(spec, dim, out, err);
}

void vindex_free(struct vindex *vx)
{
    if (!vx)
        return;
    index__faiss_free(vx->faiss);
    index__graph_free(vx->graph);
    index__store_fini(&vx->store);
    pthread_rwlock_destroy(&vx->lock);
    pthread_mutex_destroy(&vx->batch_mu);
    ims_free(vx->spec);
    ims_free(vx);
}

/* ---- generation: the version stamp of what a search can return -------------
 *
 * Every change to what searches return (add, remove, train, search params,
 * load) takes a fresh value from ONE process-wide counter while holding the
 * index's write lock. Process-wide, not per index: an index rebuilt or
 * reloaded into a new object must never repeat a stamp an old one handed
 * out, or a result cache keyed by it would serve the old index's answers.
 * (last id, count) was not a stamp: add(101), delete, add(100) repeats it.
 */
static _Atomic uint64_t vindex__generation_source = 1;

static void bump_generation(struct vindex *vx)
{
    atomic_store_explicit(&vx->generation,
                          atomic_fetch_add_explicit(&vindex__generation_source, 1,
                                                    memory_order_relaxed) + 1,
                          memory_order_release);
}

/* ---- getters --------------------------------------------------------------- */

#define RDLOCK(vx) pthread_rwlock_rdlock(&(vx)->lock)
#define WRLOCK(vx) pthread_rwlock_wrlock(&(vx)->lock)
#define UNLOCK(vx) pthread_rwlock_unlock(&(vx)->lock)

size_t vindex_count(struct vindex *vx)
{
    RDLOCK(vx);
    size_t n = vx->store.n;
    UNLOCK(vx);
    return n;
}

enum ims_status vindex_scan(struct vindex *vx, vindex_scan_fn fn, void *user,
                            struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!vx || !fn, err, IMS_ERR_INVALID, "index: scan needs an index and a "
                                                          "callback");
    enum ims_status st = IMS_OK;
    RDLOCK(vx);
    const struct index__store *s = &vx->store;
    for (size_t c = 0; c * INDEX_CHUNK_ROWS < s->n; c++) {
        size_t first = c * INDEX_CHUNK_ROWS, rows = IMS_MIN((size_t)INDEX_CHUNK_ROWS, s->n - first);
        if (fn(user, s->ids + first, s->chunks[c], rows, vx->dim) != 0) {
            st = ims_error_set(err, IMS_ERR_CANCELLED, "index: scan stopped");
            break;
        }
    }
    UNLOCK(vx);
    return st;
}

const char *vindex_spec(struct vindex *vx) { return vx->spec; }
int vindex_dim(struct vindex *vx) { return vx->dim; }

uint64_t vindex_generation(struct vindex *vx)
{
    return atomic_load_explicit(&vx->generation, memory_order_acquire);
}

int64_t vindex_last_id(struct vindex *vx)
{
    RDLOCK(vx);
    int64_t id = vx->last_id;
    UNLOCK(vx);
    return id;
}

int vindex_needs_training(struct vindex *vx)
{
    RDLOCK(vx);
    int r = vx->faiss ? !index__faiss_is_trained(vx->faiss) : 0;
    UNLOCK(vx);
    return r;
}

void vindex_get_search_params(struct vindex *vx, struct vindex_search_params *out)
{
    RDLOCK(vx);
    *out = vx->params;
    UNLOCK(vx);
}

struct vindex_search_params vindex_search_params_merge(const struct vindex_search_params *base,
                                                       const struct vindex_search_params *over)
{
    struct vindex_search_params p = *base;
    if (over && over->nprobe > 0)
        p.nprobe = over->nprobe;
    if (over && over->ef_search > 0)
        p.ef_search = over->ef_search;
    if (over && over->rerank > 0)
        p.rerank = over->rerank;
    return p;
}

void vindex_default_search_params(const char *spec, struct vindex_search_params *out)
{
    int gm, gefc;
    *out = (struct vindex_search_params){.n_threads = 1};
    if (!spec || !strcmp(spec, "Flat") || !strcmp(spec, "FlatF16"))
        return;
    if (index__graph_parse_spec(spec, &gm, &gefc) == 1) {
        out->ef_search = index__graph_default_ef(gm);
        return;
    }
    /* FAISS factory strings: an IVF (or IMI) index has nprobe (its HNSW
     * quantizer, if any, follows nprobe: faiss_bridge.cpp); an HNSW index
     * without an IVF has ef_search (vindex_faiss.c's INDEX_HNSW_DEFAULT_EF
     * when nobody set one). */
    int ivf = strstr(spec, "IVF") != NULL || strstr(spec, "IMI") != NULL;
    if (ivf)
        out->nprobe = 1;
    else if (strstr(spec, "HNSW"))
        out->ef_search = INDEX_HNSW_DEFAULT_EF;
}

/* ---- input validation -------------------------------------------------------- */

static enum ims_status check_vectors(const struct vindex *vx, const float *x, size_t n,
                                     const char *what, struct ims_error *err)
{
    size_t dim = (size_t)vx->dim;
    for (size_t i = 0; i < n; i++) {
        const float *row = x + i * dim;
        for (size_t j = 0; j < dim; j++) {
            if (!isfinite(row[j]))
                return ims_error_set(err, IMS_ERR_INVALID,
                                     "index: %s %zu has a non-finite value at component %zu",
                                     what, i, j);
            if (vx->kind == INDEX_KIND_FLAT_F16 && fabsf(row[j]) > 65504.0f)
                return ims_error_set(err, IMS_ERR_INVALID,
                                     "index: %s %zu component %zu (%g) is outside the fp16 range",
                                     what, i, j, (double)row[j]);
        }
    }
    return IMS_OK;
}

/* A search's arguments: result arrays present, k in range, a finite query
 * (vindex_search and vindex_search_filtered). */
static enum ims_status check_query(const struct vindex *vx, const float *q, int k,
                                   const float *scores, const int64_t *ids, const int *n_found,
                                   struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!q || !scores || !ids || !n_found, err, IMS_ERR_INVALID,
                        "index: search without query or result arrays");
    IMS_RETURN_ERROR_IF(k < 1 || k > VINDEX_MAX_K, err, IMS_ERR_INVALID,
                        "index: k = %d is outside 1..%d", k, VINDEX_MAX_K);
    return check_vectors(vx, q, 1, "query", err);
}

/* ---- train / add / remove ------------------------------------------------------- */

enum ims_status vindex_train(struct vindex *vx, const float *x, size_t n, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    IMS_RETURN_ERROR_IF(n > 0 && !x, err, IMS_ERR_INVALID, "index: no training vectors");
    st = check_vectors(vx, x, n, "training vector", err);
    if (st != IMS_OK)
        return st;
    WRLOCK(vx);
    if (!vx->faiss || !vx->type_trains)
        goto out; /* own kinds and graph types need no training */
    if (index__faiss_is_trained(vx->faiss)) {
        st = ims_error_set(err, IMS_ERR_INVALID, "index: %s is already trained", vx->spec);
        goto out;
    }
    if (n == 0) {
        st = ims_error_set(err, IMS_ERR_INVALID, "index: %s needs training vectors", vx->spec);
        goto out;
    }
    st = index__faiss_train(vx->faiss, x, n, err);
    bump_generation(vx);
out:
    UNLOCK(vx);
    return st;
}

enum ims_status vindex_add(struct vindex *vx, const int64_t *ids, const float *x, size_t n,
                           struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    int64_t *sorted = NULL;
    int locked = 0;
    if (n == 0)
        return IMS_OK;
    IMS_RETURN_ERROR_IF(!ids || !x, err, IMS_ERR_INVALID, "index: add without ids or vectors");
    st = check_vectors(vx, x, n, "vector", err);
    if (st != IMS_OK)
        goto out;
    sorted = ims_malloc(n * sizeof *sorted);
    if (!sorted) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory");
        goto out;
    }
    memcpy(sorted, ids, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, index__cmp_i64);
    if (sorted[0] < 0) {
        st = ims_error_set(err, IMS_ERR_INVALID, "index: negative id %lld", (long long)sorted[0]);
        goto out;
    }
    for (size_t i = 1; i < n; i++) {
        if (sorted[i] == sorted[i - 1]) {
            st = ims_error_set(err, IMS_ERR_INVALID, "index: id %lld appears twice in one add",
                               (long long)sorted[i]);
            goto out;
        }
    }
    WRLOCK(vx);
    locked = 1;
    for (size_t i = 0; i < n; i++) {
        if (index__store_find(&vx->store, ids[i]) >= 0) {
            st = ims_error_set(err, IMS_ERR_EXISTS, "index: id %lld is already in the index",
                               (long long)ids[i]);
            goto out;
        }
    }
    if (vx->faiss && !index__faiss_is_trained(vx->faiss)) {
        st = ims_error_set(err, IMS_ERR_INVALID, "index: %s must be trained before adding",
                           vx->spec);
        goto out;
    }
    /* Reserve first: after FAISS accepted the rows, appending cannot fail. */
    st = index__store_reserve(&vx->store, n, err);
    if (st != IMS_OK)
        goto out;
    if (vx->faiss) {
        st = index__faiss_add(vx->faiss, ids, x, n, err);
        if (st != IMS_OK)
            goto out;
    }
    if (vx->graph) { /* reserve, then insert (in parallel on every core) */
        if ((st = index__graph_reserve(vx->graph, n)) != IMS_OK) {
            st = ims_error_set(err, st, "index: out of memory for the graph");
            goto out;
        }
        if ((st = index__graph_add(vx->graph, ids, x, n)) != IMS_OK) {
            st = ims_error_set(err, st, "index: out of memory for the graph");
            goto out;
        }
    }
    index__store_append(&vx->store, ids, x, n);
    if (sorted[n - 1] > vx->last_id)
        vx->last_id = sorted[n - 1];
    bump_generation(vx);
out:
    if (locked)
        UNLOCK(vx);
    ims_free(sorted);
    return st;
}

enum ims_status vindex_remove(struct vindex *vx, const int64_t *ids, size_t n, size_t *n_removed,
                              struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    int64_t *present = NULL;
    size_t n_present = 0;
    IMS_RETURN_ERROR_IF(n > 0 && !ids, err, IMS_ERR_INVALID, "index: remove without ids");
    WRLOCK(vx);
    if (n == 0)
        goto out;
    present = ims_malloc(n * sizeof *present);
    if (!present) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if (index__store_find(&vx->store, ids[i]) >= 0)
            present[n_present++] = ids[i];
    if (n_present && vx->faiss && index__faiss_can_remove(vx->faiss)) {
        st = index__faiss_remove(vx->faiss, present, n_present, err);
        if (st != IMS_OK)
            goto out;
    }
    /* Graph types: the store alone forgets the ids; FAISS keeps tombstones
     * that searches filter out. Duplicates in `ids` are removed once. */
    n_present = 0;
    for (size_t i = 0; i < n; i++) {
        int gone = index__store_remove(&vx->store, ids[i]);
        if (gone && vx->graph)
            index__graph_delete(vx->graph, ids[i]); /* a waypoint, never a result */
        n_present += (size_t)gone;
    }
    if (n_present)
        bump_generation(vx);
out:
    UNLOCK(vx);
    ims_free(present);
    if (st == IMS_OK && n_removed)
        *n_removed = n_present;
    return st;
}

enum ims_status vindex_set_search_params(struct vindex *vx, const struct vindex_search_params *p,
                                         struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    IMS_RETURN_ERROR_IF(!p, err, IMS_ERR_INVALID, "index: no search parameters");
    IMS_RETURN_ERROR_IF(p->nprobe < 0 || p->ef_search < 0 || p->rerank < 0 || p->n_threads < 0,
                        err, IMS_ERR_INVALID, "index: negative search parameter");
    IMS_RETURN_ERROR_IF(p->rerank > VINDEX_MAX_K || p->n_threads > VINDEX_MAX_THREADS || p->nprobe > 1 << 20 ||
                            p->ef_search > 1 << 20,
                        err, IMS_ERR_INVALID, "index: search parameter out of range");
    WRLOCK(vx);
    if (vx->faiss && p->nprobe > 0) {
        st = index__faiss_set_param(vx->faiss, "nprobe", p->nprobe, err);
        if (st != IMS_OK)
            goto out;
        vx->params.nprobe = p->nprobe;
    }
    if (vx->faiss && p->ef_search > 0) {
        st = index__faiss_set_param(vx->faiss, "efSearch", p->ef_search, err);
        if (st != IMS_OK)
            goto out;
        vx->params.ef_search = p->ef_search;
    }
    if (vx->graph && p->ef_search > 0)
        vx->params.ef_search = p->ef_search;
    if (p->rerank > 0)
        vx->params.rerank = p->rerank;
    bump_generation(vx);
    if (p->n_threads > 0)
        vx->params.n_threads = p->n_threads;
out:
    UNLOCK(vx);
    return st;
}

/* The index's search parameters with the non-zero fields of *qp (one
 * query's) in their place. Under the read lock. */
static struct vindex_search_params query_params(const struct vindex *vx,
                                                const struct vindex_search_params *qp)
{
    return vindex_search_params_merge(&vx->params, qp);
}

/* The search's answer, best first, into the caller's arrays. */
static void topk_copy_out(struct index__topk *top, float *scores, int64_t *ids, int *n_found)
{
    index__topk_sort(top);
    memcpy(scores, top->scores, (size_t)top->n * sizeof *scores);
    memcpy(ids, top->ids, (size_t)top->n * sizeof *ids);
    *n_found = top->n;
}

/* search_plain and search_filtered: arguments checked by vindex_search_with. */
static enum ims_status search_plain(struct vindex *vx, const float *q, int k,
                                    const struct vindex_search_params *qp, float *scores,
                                    int64_t *ids, int *n_found, struct ims_error *err)
{
    struct index__topk top = {0};
    enum ims_status st = IMS_OK;
    if (vx->kind == INDEX_KIND_FLAT || vx->kind == INDEX_KIND_FLAT_F16) { /* exact: batches share */
        st = index__batch_search(vx, q, k, scores, ids, n_found);
        if (st != IMS_OK)
            return ims_error_set(err, st, "index: %s during search",
                                 st == IMS_ERR_NOMEM ? "out of memory" : ims_strerror(st));
        return IMS_OK;
    }
    RDLOCK(vx);
    int kk = (int)IMS_MIN((size_t)k, vx->store.n);
    if (kk == 0) {
        *n_found = 0;
        goto out;
    }
    st = index__topk_init(&top, kk);
    if (st != IMS_OK) {
        st = ims_error_set(err, st, "index: out of memory");
        goto out;
    }
    struct vindex_search_params p = query_params(vx, qp);
    st = index__search_faiss(vx, q, kk, NULL, 0, &p, &top, err);
    if (st != IMS_OK) {
        if (st == IMS_ERR_NOMEM)
            ims_error_set(err, st, "index: out of memory during search");
        goto out;
    }
    topk_copy_out(&top, scores, ids, n_found);
out:
    UNLOCK(vx);
    index__topk_fini(&top);
    return st;
}

/* ---- filtered search (issue 10) ------------------------------------------ */

/* Below this share of matching rows, approximate types scan the matching
 * rows instead of widening their candidate pass (a graph walk through 5% of
 * matching nodes visits ~50x the nodes for the same k). */
#define FILTER_SCAN_SHARE 0.10

/* The own Graph walks with the filter inside its beam (refused nodes are
 * waypoints), which stays cheap down to a few percent: at 100k rows the
 * walk at 5-9% matching costs 0.96-1.22x the unfiltered walk (recall@10
 * 0.99) where the scan of those 5-9k rows cost 2.2-5.2x
 * (bench/README-index.md). It scans the matching rows below 1% of them,
 * or below 2048 rows whatever the share (a scan that small is cheaper than
 * any walk). */
#define FILTER_GRAPH_SCAN_SHARE 0.01
#define FILTER_GRAPH_SCAN_ROWS 2048

/* From this share of matching rows on, Flat's filtered search runs the int8
 * pre-scan (skipping refused rows) instead of the fp32 scan of the matching
 * rows: the pre-scan reads every row's int8 code (a quarter of its fp32
 * bytes) and re-scores tens of rows, which beats reading the fp32 rows of
 * 10% of them at random (bench/README-index.md, bench_filter). */
#define FILTER_I8_SHARE 0.10

static size_t filter_count(const struct index__store *s, const struct vindex_filter *f)
{
    size_t n = 0;
    for (size_t r = 0; r < s->n; r++)
        n += (size_t)vindex_filter_allows(f, s->ids[r]);
    return n;
}

static enum ims_status search_filtered(struct vindex *vx, const float *q, int k,
                                       const struct vindex_filter *filter,
                                       const struct vindex_search_params *qp, float *scores,
                                       int64_t *ids, int *n_found, struct ims_error *err)
{
    struct index__topk top = {0};
    enum ims_status st = IMS_OK;
    IMS_RETURN_ERROR_IF(filter->n_bits < 0 || (filter->n_bits > 0 && !filter->bits), err,
                        IMS_ERR_INVALID, "index: filter without a bitmap");
    RDLOCK(vx);
    const struct index__store *s = &vx->store;
    size_t n_match = filter_count(s, filter);
    int kk = (int)IMS_MIN((size_t)k, n_match);
    if (kk == 0) {
        *n_found = 0;
        goto out;
    }
    if ((st = index__topk_init(&top, kk)) != IMS_OK)
        goto nomem;
    double scan_below = vx->graph ? IMS_MAX(FILTER_GRAPH_SCAN_SHARE * (double)s->n,
                                            (double)FILTER_GRAPH_SCAN_ROWS)
                                  : FILTER_SCAN_SHARE * (double)s->n;
    int scan = vx->kind == INDEX_KIND_FLAT || vx->kind == INDEX_KIND_FLAT_F16 ||
               (double)n_match < scan_below;
    if (!scan) {
        struct vindex_search_params p = query_params(vx, qp);
        st = index__search_faiss(vx, q, kk, filter, n_match, &p, &top, err);
        if (st != IMS_OK)
            goto fail;
        if (top.n < kk) { /* the approximate pass missed matches: scan them */
            top.n = 0;
            scan = 1;
        }
    }
    if (scan && vx->kind == INDEX_KIND_FLAT &&
        (double)n_match >= FILTER_I8_SHARE * (double)s->n) {
        int done = 0;
        if ((st = index__search_flat_filtered(vx, q, kk, filter, vx->params.n_threads, &top,
                                              &done)) != IMS_OK)
            goto nomem;
        scan = !done;
    }
    if (scan && (st = index__scan_filtered(s, q, filter, n_match, &top)) != IMS_OK)
        goto nomem;
    topk_copy_out(&top, scores, ids, n_found);
    goto out;
nomem:
    st = ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory during a filtered search");
    goto out;
fail:
    if (st == IMS_ERR_NOMEM)
        ims_error_set(err, st, "index: out of memory during search");
out:
    UNLOCK(vx);
    index__topk_fini(&top);
    return st;
}

/* ---- per-query parameters (issue 11) -------------------------------------- */

enum ims_status vindex_search_with(struct vindex *vx, const float *q, int k,
                                   const struct vindex_filter *filter,
                                   const struct vindex_search_params *params, float *scores,
                                   int64_t *ids, int *n_found, struct ims_error *err)
{
    if (params) {
        IMS_RETURN_ERROR_IF(params->ef_search < 0 || params->ef_search > VINDEX_MAX_EF, err,
                            IMS_ERR_INVALID, "index: ef %d is outside 1..%d", params->ef_search,
                            VINDEX_MAX_EF);
        IMS_RETURN_ERROR_IF(params->nprobe < 0 || params->nprobe > VINDEX_MAX_NPROBE, err,
                            IMS_ERR_INVALID, "index: nprobe %d is outside 1..%d", params->nprobe,
                            VINDEX_MAX_NPROBE);
        IMS_RETURN_ERROR_IF(params->rerank < 0 || params->rerank > VINDEX_MAX_K, err,
                            IMS_ERR_INVALID, "index: rerank %d is outside 1..%d", params->rerank,
                            VINDEX_MAX_K);
    }
    enum ims_status st = check_query(vx, q, k, scores, ids, n_found, err);
    if (st != IMS_OK)
        return st;
    if (filter)
        return search_filtered(vx, q, k, filter, params, scores, ids, n_found, err);
    return search_plain(vx, q, k, params, scores, ids, n_found, err);
}

enum ims_status vindex_search(struct vindex *vx, const float *q, int k, float *scores,
                              int64_t *ids, int *n_found, struct ims_error *err)
{
    return vindex_search_with(vx, q, k, NULL, NULL, scores, ids, n_found, err);
}

enum ims_status vindex_search_filtered(struct vindex *vx, const float *q, int k,
                                       const struct vindex_filter *filter, float *scores,
                                       int64_t *ids, int *n_found, struct ims_error *err)
{
    return vindex_search_with(vx, q, k, filter, NULL, scores, ids, n_found, err);
}
