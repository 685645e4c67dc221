/* SPDX-License-Identifier: MIT */
/*
 * vindex.c: the public index API (index.h): validation, locking, and the
 * three search paths.
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
 * - Flat search: an int8 pre-scan with an exact fp32 re-score (section
 *   below). The store keeps int8 codes of every row (a quarter of the fp32
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
        vx->params.ef_search = INDEX_GRAPH_DEFAULT_EF;
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

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
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
    qsort(sorted, n, sizeof *sorted, cmp_i64);
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
        index__graph_add(vx->graph, ids, x, n);
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
    IMS_RETURN_ERROR_IF(p->rerank > VINDEX_MAX_K || p->n_threads > 256 || p->nprobe > 1 << 20 ||
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

/* ---- exact scans ------------------------------------------------------------------ */

struct scan_job {
    const struct index__store *s;
    const float *q;
    int f16;
    size_t chunk_begin, chunk_end;
    struct index__topk top;
    pthread_t thread;
};

static void scan_chunks(struct scan_job *j)
{
    const struct index__store *s = j->s;
    float buf[INDEX_CHUNK_ROWS];
    for (size_t c = j->chunk_begin; c < j->chunk_end; c++) {
        size_t base = c * INDEX_CHUNK_ROWS;
        size_t rows = IMS_MIN((size_t)INDEX_CHUNK_ROWS, s->n - base);
        if (j->f16)
            index__dot_f16(j->q, s->chunks16[c], rows, s->dim, buf);
        else
            index__dot_f32(j->q, s->chunks[c], rows, s->dim, buf);
        const int64_t *ids = s->ids + base;
        struct index__topk *t = &j->top;
        for (size_t i = 0; i < rows; i++)
            if (index__topk_would_take(t, buf[i], ids[i]))
                index__topk_push(t, buf[i], ids[i]);
    }
}

static void *scan_thread(void *arg)
{
    scan_chunks(arg);
    return NULL;
}

/* Top `k` by fp32 or fp16 score over the whole store, into `out` (initialised
 * with room for k). Splits chunks over up to n_threads threads. */
static enum ims_status scan_store(const struct index__store *s, const float *q, int f16, int k,
                                  int n_threads, struct index__topk *out)
{
    enum ims_status st = IMS_OK;
    size_t n_chunks = (s->n + INDEX_CHUNK_ROWS - 1) / INDEX_CHUNK_ROWS;
    if (n_threads < 1)
        n_threads = 1;
    if ((size_t)n_threads > n_chunks)
        n_threads = n_chunks ? (int)n_chunks : 1;
    if (n_threads == 1) {
        struct scan_job j = {.s = s, .q = q, .f16 = f16, .chunk_end = n_chunks, .top = *out};
        scan_chunks(&j);
        *out = j.top;
        return IMS_OK;
    }
    struct scan_job *jobs = ims_calloc((size_t)n_threads, sizeof *jobs);
    int n_init = 0;
    if (!jobs)
        return IMS_ERR_NOMEM;
    for (int t = 0; t < n_threads; t++) {
        jobs[t].s = s;
        jobs[t].q = q;
        jobs[t].f16 = f16;
        jobs[t].chunk_begin = n_chunks * (size_t)t / (size_t)n_threads;
        jobs[t].chunk_end = n_chunks * (size_t)(t + 1) / (size_t)n_threads;
        st = index__topk_init(&jobs[t].top, k);
        if (st != IMS_OK)
            goto out;
        n_init++;
    }
    int started[256] = {0};
    for (int t = 1; t < n_threads; t++)
        started[t] = pthread_create(&jobs[t].thread, NULL, scan_thread, &jobs[t]) == 0;
    scan_chunks(&jobs[0]);
    for (int t = 1; t < n_threads; t++) {
        if (started[t])
            pthread_join(jobs[t].thread, NULL);
        else
            scan_chunks(&jobs[t]); /* no thread: do its share here */
    }
    for (int t = 0; t < n_threads; t++)
        for (int i = 0; i < jobs[t].top.n; i++)
            if (index__topk_would_take(out, jobs[t].top.scores[i], jobs[t].top.ids[i]))
                index__topk_push(out, jobs[t].top.scores[i], jobs[t].top.ids[i]);
out:
    for (int t = 0; t < n_init; t++)
        index__topk_fini(&jobs[t].top);
    ims_free(jobs);
    return st;
}

/* The FlatF16 exactness rule (top of file) for one query whose best fp16
 * scores are in `cand` (sorted here): if they provably hold the fp32 top k,
 * re-scores them in fp32 into `top` (empty) and returns 1; otherwise returns
 * 0 and the caller scans in fp32. */
static int f16_rescore(const struct vindex *vx, const float *q, int k, struct index__topk *cand,
                       struct index__topk *top)
{
    const struct index__store *s = &vx->store;
    index__topk_sort(cand);
    double qn = 0;
    for (int i = 0; i < vx->dim; i++)
        qn += (double)q[i] * q[i];
    qn = sqrt(qn);
    double delta = qn * ((double)s->max_norm * (0x1p-11 + vx->dim * 0x1p-22) +
                         sqrt((double)vx->dim) * 0x1p-24);
    int kk = IMS_MIN(k, cand->n);
    int complete = (size_t)cand->n == s->n ||
                   (double)cand->scores[cand->n - 1] < (double)cand->scores[kk - 1] - 2 * delta;
    if (!complete) /* near-ties beyond the candidate heap */
        return 0;
    for (int i = 0; i < cand->n; i++) {
        int64_t row = index__store_find(s, cand->ids[i]);
        IMS_ASSERT(row >= 0);
        float score;
        index__dot_f32(q, index__store_row(s, (size_t)row), 1, vx->dim, &score);
        if (index__topk_would_take(top, score, cand->ids[i]))
            index__topk_push(top, score, cand->ids[i]);
    }
    return 1;
}

/* Candidates kept by the fp16 scan for a top k. */
static int f16_candidates(const struct index__store *s, int k)
{
    size_t c_want = 2 * (size_t)k + 32;
    return (int)IMS_MIN(c_want, s->n);
}

static enum ims_status search_f16(const struct vindex *vx, const float *q, int k, int n_threads,
                                  struct index__topk *top)
{
    const struct index__store *s = &vx->store;
    enum ims_status st;
    struct index__topk cand = {0};
    st = index__topk_init(&cand, f16_candidates(s, k));
    if (st != IMS_OK)
        return st;
    st = scan_store(s, q, 1, cand.k, n_threads, &cand);
    if (st == IMS_OK && !f16_rescore(vx, q, k, &cand, top))
        st = scan_store(s, q, 0, k, n_threads, top); /* exact fp32 scan */
    index__topk_fini(&cand);
    return st;
}

/* ---- coalesced exact searches ------------------------------------------------------ */

/* Rows scored per multi-query kernel call: the score buffer of a scan
 * thread is (nq, INDEX_BATCH_ROWS) floats, 128 KB for 32 queries. */
#define INDEX_BATCH_ROWS 1024

struct mscan_job {
    const struct index__store *s;
    const float *qs; /* (nq, dim) */
    int nq;
    int f16;
    size_t chunk_begin, chunk_end;
    struct index__topk *tops; /* (nq) */
    float *buf;               /* (nq, INDEX_BATCH_ROWS) */
    pthread_t thread;
};

static void mscan_chunks(struct mscan_job *j)
{
    const struct index__store *s = j->s;
    const size_t dim = (size_t)s->dim;
    for (size_t c = j->chunk_begin; c < j->chunk_end; c++) {
        size_t base = c * INDEX_CHUNK_ROWS;
        size_t rows = IMS_MIN((size_t)INDEX_CHUNK_ROWS, s->n - base);
        for (size_t b = 0; b < rows; b += INDEX_BATCH_ROWS) {
            size_t nb = IMS_MIN((size_t)INDEX_BATCH_ROWS, rows - b);
            if (j->f16)
                index__dot_f16_multi(j->qs, j->nq, s->chunks16[c] + b * dim, nb, s->dim, j->buf,
                                     INDEX_BATCH_ROWS);
            else
                index__dot_f32_multi(j->qs, j->nq, s->chunks[c] + b * dim, nb, s->dim, j->buf,
                                     INDEX_BATCH_ROWS);
            const int64_t *ids = s->ids + base + b;
            for (int q = 0; q < j->nq; q++) {
                struct index__topk *t = &j->tops[q];
                const float *sc = j->buf + (size_t)q * INDEX_BATCH_ROWS;
                for (size_t i = 0; i < nb; i++)
                    if (index__topk_would_take(t, sc[i], ids[i]))
                        index__topk_push(t, sc[i], ids[i]);
            }
        }
    }
}

static void *mscan_thread(void *arg)
{
    mscan_chunks(arg);
    return NULL;
}

/* scan_store for nq queries at once, qs: (nq, dim): tops[q] (initialised;
 * capacities may differ) receives query q's top over the whole store. Each
 * row is read once for all queries; the scores are bit-identical to the
 * one-query kernel's and the heaps hold a strict order (score, then id), so
 * every heap ends exactly as scan_store would leave it for its query alone. */
static enum ims_status scan_store_multi(const struct index__store *s, const float *qs, int nq,
                                        int f16, int n_threads, struct index__topk *tops)
{
    enum ims_status st = IMS_OK;
    size_t n_chunks = (s->n + INDEX_CHUNK_ROWS - 1) / INDEX_CHUNK_ROWS;
    struct mscan_job *jobs = NULL;
    struct index__topk *heaps = NULL; /* (n_threads, nq) when split */
    float *bufs = NULL;
    int n_heaps = 0;
    if (n_threads < 1)
        n_threads = 1;
    if ((size_t)n_threads > n_chunks)
        n_threads = n_chunks ? (int)n_chunks : 1;
    jobs = ims_calloc((size_t)n_threads, sizeof *jobs);
    bufs = ims_malloc(sizeof(float) * (size_t)n_threads * (size_t)nq * INDEX_BATCH_ROWS);
    if (!jobs || !bufs) {
        st = IMS_ERR_NOMEM;
        goto out;
    }
    if (n_threads > 1) {
        heaps = ims_calloc((size_t)n_threads * (size_t)nq, sizeof *heaps);
        if (!heaps) {
            st = IMS_ERR_NOMEM;
            goto out;
        }
        for (; n_heaps < n_threads * nq; n_heaps++) {
            st = index__topk_init(&heaps[n_heaps], tops[n_heaps % nq].k);
            if (st != IMS_OK)
                goto out;
        }
    }
    for (int t = 0; t < n_threads; t++) {
        jobs[t] = (struct mscan_job){
            .s = s,
            .qs = qs,
            .nq = nq,
            .f16 = f16,
            .chunk_begin = n_chunks * (size_t)t / (size_t)n_threads,
            .chunk_end = n_chunks * (size_t)(t + 1) / (size_t)n_threads,
            .tops = n_threads > 1 ? heaps + (size_t)t * (size_t)nq : tops,
            .buf = bufs + (size_t)t * (size_t)nq * INDEX_BATCH_ROWS,
        };
    }
    int started[256] = {0};
    for (int t = 1; t < n_threads; t++)
        started[t] = pthread_create(&jobs[t].thread, NULL, mscan_thread, &jobs[t]) == 0;
    mscan_chunks(&jobs[0]);
    for (int t = 1; t < n_threads; t++) {
        if (started[t])
            pthread_join(jobs[t].thread, NULL);
        else
            mscan_chunks(&jobs[t]); /* no thread: do its share here */
    }
    if (n_threads > 1) /* the same merge order as scan_store */
        for (int t = 0; t < n_threads; t++)
            for (int q = 0; q < nq; q++) {
                const struct index__topk *h = &heaps[(size_t)t * (size_t)nq + (size_t)q];
                for (int i = 0; i < h->n; i++)
                    if (index__topk_would_take(&tops[q], h->scores[i], h->ids[i]))
                        index__topk_push(&tops[q], h->scores[i], h->ids[i]);
            }
out:
    for (int i = 0; i < n_heaps; i++)
        index__topk_fini(&heaps[i]);
    ims_free(heaps);
    ims_free(bufs);
    ims_free(jobs);
    return st;
}

/* The fp32 scan for the queries redo[0..n_redo) of qs (nq, dim): one pass
 * for all of them (the one-query scan when there is one). tops[redo[i]]
 * are empty heaps of the queries' k. */
static enum ims_status scan_fp32_redo(const struct index__store *s, const float *qs,
                                      const int *redo, int n_redo, int n_threads,
                                      struct index__topk *tops)
{
    const size_t dim = (size_t)s->dim;
    struct index__topk redo_tops[INDEX_BATCH_MAX];
    IMS_ASSERT(n_redo <= INDEX_BATCH_MAX);
    if (n_redo == 0)
        return IMS_OK;
    if (n_redo == 1)
        return scan_store(s, qs + (size_t)redo[0] * dim, 0, tops[redo[0]].k, n_threads,
                          &tops[redo[0]]);
    float *redo_qs = ims_malloc(sizeof(float) * (size_t)n_redo * dim);
    if (!redo_qs)
        return IMS_ERR_NOMEM;
    for (int i = 0; i < n_redo; i++) {
        memcpy(redo_qs + (size_t)i * dim, qs + (size_t)redo[i] * dim, sizeof(float) * dim);
        redo_tops[i] = tops[redo[i]];
    }
    enum ims_status st = scan_store_multi(s, redo_qs, n_redo, 0, n_threads, redo_tops);
    for (int i = 0; i < n_redo; i++)
        tops[redo[i]] = redo_tops[i]; /* same arrays; the counts moved */
    ims_free(redo_qs);
    return st;
}

/* search_f16 for nq queries at once: one fp16 pass for all, the exactness
 * rule per query, and one fp32 pass for the queries whose rule failed. */
static enum ims_status search_f16_multi(const struct vindex *vx, const float *qs, int nq,
                                        const int *k, int n_threads, struct index__topk *tops)
{
    const struct index__store *s = &vx->store;
    const size_t dim = (size_t)vx->dim;
    enum ims_status st = IMS_OK;
    struct index__topk cand[INDEX_BATCH_MAX] = {{0}};
    int redo[INDEX_BATCH_MAX], n_redo = 0, n_cand = 0;
    IMS_ASSERT(nq <= INDEX_BATCH_MAX);
    for (; n_cand < nq; n_cand++) {
        st = index__topk_init(&cand[n_cand], f16_candidates(s, k[n_cand]));
        if (st != IMS_OK)
            goto out;
    }
    st = scan_store_multi(s, qs, nq, 1, n_threads, cand);
    if (st != IMS_OK)
        goto out;
    for (int q = 0; q < nq; q++)
        if (!f16_rescore(vx, qs + (size_t)q * dim, k[q], &cand[q], &tops[q]))
            redo[n_redo++] = q;
    st = scan_fp32_redo(s, qs, redo, n_redo, n_threads, tops);
out:
    for (int i = 0; i < n_cand; i++)
        index__topk_fini(&cand[i]);
    return st;
}

/* ---- Flat: int8 pre-scan + exact fp32 re-score --------------------------------------- */

/* The rule (docs/internals/index.md, index_scan.c): every row gets bounds
 * lower <= s <= upper around its int8 estimate, s its fp32 kernel score.
 * With L the k-th largest lower bound, at least k rows score >= L, so the
 * k-th best score is >= L and every row that can be in the top k (ties
 * included) has upper >= L. Those candidates are re-scored with the fp32
 * kernel (bit-identical to the scan's scores) and pushed through the same
 * (score, id) heap: the answer is the fp32 scan's, bit for bit.
 *
 * Streaming: each scan thread keeps the k largest lower bounds seen so far
 * (their minimum only rises) and every row whose upper bound reaches that
 * running minimum; a row dropped then has upper < running L <= final L, so
 * no candidate is lost, and a row dropped by the vector pre-filter could not
 * have entered the lower-bound heap either (lower <= upper < its minimum).
 * The threads' heaps merge into the final L, their lists are filtered by it. */

int index__i8_enabled = 1;

/* Rows per multi-query int8 kernel call in a batch: the scores buffer of
 * a scan thread is (nq, I8_BLOCK_ROWS) int32, 32 KB for 32 queries. A lone
 * query takes whole chunks with the one-query kernel. */
#define I8_BLOCK_ROWS 256

/* The pre-scan pays off when it leaves few rows to re-score: k at most
 * 1/32 of the rows, and at most 1/16 of them (+ 64) as candidates, beyond
 * which a query falls back to the fp32 scan (a candidate's re-score is a
 * random 2 KB read, several times the cost of a streamed row). */
static int i8_usable(const struct index__store *s, int k)
{
    return index__i8_enabled && s->with_i8 && (size_t)k * 32 <= s->n;
}

static size_t i8_limit(const struct index__store *s) { return s->n / 16 + 64; }

/* One query's pre-scan state in one scan thread. */
struct i8_state {
    struct index__topk low; /* the k largest lower bounds seen (ids: rows) */
    size_t *cand;           /* rows whose upper bound reached the running L */
    float *cand_up;         /* (cap_cand) their upper bounds */
    size_t n_cand, cap_cand;
    int over; /* beyond the limit (or out of memory): fp32 scan instead */
};

static float i8_threshold(const struct i8_state *st)
{
    return st->low.n == st->low.k ? st->low.scores[0] : -INFINITY;
}

static void i8_state_fini(struct i8_state *st)
{
    index__topk_fini(&st->low);
    ims_free(st->cand);
    ims_free(st->cand_up);
}

static enum ims_status i8_state_init(struct i8_state *st, int k)
{
    memset(st, 0, sizeof *st);
    st->cap_cand = 2 * (size_t)k + 256;
    st->cand = ims_malloc(st->cap_cand * sizeof *st->cand);
    st->cand_up = ims_malloc(st->cap_cand * sizeof *st->cand_up);
    if (!st->cand || !st->cand_up || index__topk_init(&st->low, k) != IMS_OK) {
        i8_state_fini(st);
        return IMS_ERR_NOMEM;
    }
    return IMS_OK;
}

/* Keeps the candidates whose upper bound is >= thr. */
static void i8_prune(struct i8_state *st, float thr)
{
    size_t m = 0;
    for (size_t i = 0; i < st->n_cand; i++)
        if (st->cand_up[i] >= thr) {
            st->cand[m] = st->cand[i];
            st->cand_up[m++] = st->cand_up[i];
        }
    st->n_cand = m;
}

static void i8_add(struct i8_state *st, size_t row, float up, size_t limit)
{
    if (st->n_cand == st->cap_cand) {
        i8_prune(st, i8_threshold(st));
        if (st->n_cand > limit) {
            st->over = 1;
            return;
        }
        if (st->n_cand > st->cap_cand / 2) {
            size_t cap = 2 * st->cap_cand;
            size_t *c = ims_realloc(st->cand, cap * sizeof *c);
            if (c)
                st->cand = c;
            float *u = c ? ims_realloc(st->cand_up, cap * sizeof *u) : NULL;
            if (!u) {
                st->over = 1; /* the fp32 scan needs no more memory */
                return;
            }
            st->cand_up = u;
            st->cap_cand = cap;
        }
    }
    st->cand[st->n_cand] = row;
    st->cand_up[st->n_cand++] = up;
}

struct i8_job {
    const struct index__store *s;
    const struct index__i8_query *qp; /* (nq) */
    const int16_t *q16;               /* (nq, stride): the qp[q].qs, contiguous */
    int nq;
    size_t limit;
    struct i8_state *st;              /* (nq) this thread's */
    size_t chunk_begin, chunk_end;
    int32_t *dots;                    /* (nq, block) */
    uint32_t *sel;                    /* (block) */
    float *lower, *upper;             /* (block) */
    pthread_t thread;
};

static void i8_chunks(struct i8_job *j)
{
    const struct index__store *s = j->s;
    const size_t stride = index__i8_stride(s->dim);
    const size_t block = j->nq == 1 ? INDEX_CHUNK_ROWS : I8_BLOCK_ROWS;
    for (size_t c = j->chunk_begin; c < j->chunk_end; c++) {
        size_t base = c * INDEX_CHUNK_ROWS;
        size_t rows = IMS_MIN((size_t)INDEX_CHUNK_ROWS, s->n - base);
        const float *scales = index__store_i8_scales(s, c), *rhos = index__store_i8_rhos(s, c);
        for (size_t b = 0; b < rows; b += block) {
            size_t nb = IMS_MIN(block, rows - b);
            const int8_t *codes = s->chunks8[c] + b * stride;
            if (j->nq == 1)
                index__dot_i8(j->q16, codes, nb, stride, j->dots);
            else /* every query, fallen back or not: they are few */
                index__dot_i8_multi(j->q16, j->nq, codes, nb, stride, j->dots, block);
            for (int q = 0; q < j->nq; q++) {
                struct i8_state *st = &j->st[q];
                if (st->over)
                    continue;
                size_t m = index__i8_select(&j->qp[q], j->dots + (size_t)q * block, scales + b,
                                            rhos + b, nb, i8_threshold(st), j->sel, j->lower,
                                            j->upper);
                for (size_t t = 0; t < m && !st->over; t++) {
                    int64_t row = (int64_t)(base + b + j->sel[t]);
                    if (index__topk_would_take(&st->low, j->lower[t], row))
                        index__topk_push(&st->low, j->lower[t], row);
                    if (j->upper[t] >= i8_threshold(st))
                        i8_add(st, (size_t)row, j->upper[t], j->limit);
                }
            }
        }
    }
}

static void *i8_thread(void *arg)
{
    i8_chunks(arg);
    return NULL;
}

/* The pre-scan's end for query q: merges the threads' lower bounds into the
 * final L, re-scores every candidate with upper >= L in fp32 into `top`.
 * Returns the number re-scored, or 0 if a thread went over the limit (the
 * caller scans in fp32; top untouched). */
static size_t i8_finish(const struct index__store *s, const float *q, struct i8_state *per_thread,
                        int n_threads, int nq, int qi, struct index__topk *top)
{
    struct index__topk *low = &per_thread[qi].low;
    for (int t = 0; t < n_threads; t++)
        if (per_thread[(size_t)t * (size_t)nq + (size_t)qi].over)
            return 0;
    for (int t = 1; t < n_threads; t++) {
        const struct index__topk *h = &per_thread[(size_t)t * (size_t)nq + (size_t)qi].low;
        for (int i = 0; i < h->n; i++)
            if (index__topk_would_take(low, h->scores[i], h->ids[i]))
                index__topk_push(low, h->scores[i], h->ids[i]);
    }
    IMS_ASSERT(low->n == low->k); /* k <= rows: every row's lower bound was offered */
    float thr = low->scores[0];
    size_t n_scored = 0;
    for (int t = 0; t < n_threads; t++) {
        const struct i8_state *st = &per_thread[(size_t)t * (size_t)nq + (size_t)qi];
        for (size_t i = 0; i < st->n_cand; i++) {
            if (st->cand_up[i] < thr)
                continue;
            size_t row = st->cand[i];
            float score;
            index__dot_f32(q, index__store_row(s, row), 1, s->dim, &score);
            if (index__topk_would_take(top, score, s->ids[row]))
                index__topk_push(top, score, s->ids[row]);
            n_scored++;
        }
    }
    return n_scored;
}

/* The int8 pre-scan for the queries qs (nq, dim) with k[q] <= count: one
 * pass over the codes for all of them, then each query's candidates are
 * re-scored into tops[q] (empty heaps of k[q]) and done[q] set. Queries it
 * cannot answer (not usable, over the limit) keep done[q] = 0. */
static enum ims_status search_i8(struct vindex *vx, const float *qs, int nq, const int *k,
                                 int n_threads, struct index__topk *tops, int *done)
{
    const struct index__store *s = &vx->store;
    const size_t dim = (size_t)vx->dim, stride = index__i8_stride(vx->dim);
    size_t n_chunks = (s->n + INDEX_CHUNK_ROWS - 1) / INDEX_CHUNK_ROWS;
    enum ims_status st = IMS_OK;
    struct index__i8_query qp[INDEX_BATCH_MAX];
    int which[INDEX_BATCH_MAX], n_use = 0, n_states = 0;
    int16_t *q16 = NULL;
    struct i8_state *states = NULL; /* (n_threads, n_use) */
    struct i8_job *jobs = NULL;
    void *bufs = NULL;
    IMS_ASSERT(nq <= INDEX_BATCH_MAX);
    q16 = ims_malloc(sizeof(int16_t) * stride * (size_t)nq);
    if (!q16) {
        st = IMS_ERR_NOMEM;
        goto out;
    }
    for (int q = 0; q < nq; q++) {
        done[q] = 0;
        if (i8_usable(s, k[q]) &&
            index__i8_query_init(qs + (size_t)q * dim, vx->dim, s->max_norm, s->max_code_norm,
                                 q16 + stride * (size_t)n_use, &qp[n_use]))
            which[n_use++] = q;
    }
    if (n_use == 0)
        goto out;
    if (n_threads < 1)
        n_threads = 1;
    if ((size_t)n_threads > n_chunks)
        n_threads = (int)n_chunks;
    size_t block = n_use == 1 ? INDEX_CHUNK_ROWS : I8_BLOCK_ROWS;
    size_t buf_bytes = block * ((size_t)n_use * sizeof(int32_t) + sizeof(uint32_t) +
                                2 * sizeof(float));
    states = ims_calloc((size_t)n_threads * (size_t)n_use, sizeof *states);
    jobs = ims_calloc((size_t)n_threads, sizeof *jobs);
    bufs = ims_malloc(buf_bytes * (size_t)n_threads);
    if (!states || !jobs || !bufs) {
        st = IMS_ERR_NOMEM;
        goto out;
    }
    for (; n_states < n_threads * n_use; n_states++) {
        st = i8_state_init(&states[n_states], k[which[n_states % n_use]]);
        if (st != IMS_OK)
            goto out;
    }
    for (int t = 0; t < n_threads; t++) {
        char *b = (char *)bufs + buf_bytes * (size_t)t;
        size_t dots_bytes = block * (size_t)n_use * sizeof(int32_t);
        jobs[t] = (struct i8_job){
            .s = s,
            .qp = qp,
            .q16 = q16,
            .nq = n_use,
            .limit = i8_limit(s),
            .st = states + (size_t)t * (size_t)n_use,
            .chunk_begin = n_chunks * (size_t)t / (size_t)n_threads,
            .chunk_end = n_chunks * (size_t)(t + 1) / (size_t)n_threads,
            .dots = (int32_t *)b,
            .sel = (uint32_t *)(b + dots_bytes),
            .lower = (float *)(b + dots_bytes + block * sizeof(uint32_t)),
            .upper = (float *)(b + dots_bytes + block * (sizeof(uint32_t) + sizeof(float))),
        };
    }
    int started[256] = {0};
    for (int t = 1; t < n_threads; t++)
        started[t] = pthread_create(&jobs[t].thread, NULL, i8_thread, &jobs[t]) == 0;
    i8_chunks(&jobs[0]);
    for (int t = 1; t < n_threads; t++) {
        if (started[t])
            pthread_join(jobs[t].thread, NULL);
        else
            i8_chunks(&jobs[t]); /* no thread: do its share here */
    }
    for (int u = 0; u < n_use; u++) {
        int q = which[u];
        size_t n_scored = i8_finish(s, qs + (size_t)q * dim, states, n_threads, n_use, u, &tops[q]);
        atomic_fetch_add_explicit(&vx->i8_searches, 1, memory_order_relaxed);
        if (n_scored == 0) {
            atomic_fetch_add_explicit(&vx->i8_fallbacks, 1, memory_order_relaxed);
            continue;
        }
        atomic_fetch_add_explicit(&vx->i8_candidates, n_scored, memory_order_relaxed);
        done[q] = 1;
    }
out:
    for (int i = 0; i < n_states; i++)
        i8_state_fini(&states[i]);
    ims_free(states);
    ims_free(jobs);
    ims_free(bufs);
    ims_free(q16);
    return st;
}

/* Flat's exact search of nq queries: the int8 pre-scan, then the fp32 scan
 * (one pass) for the queries it could not answer. */
static enum ims_status search_flat_multi(struct vindex *vx, const float *qs, int nq, const int *k,
                                         int n_threads, struct index__topk *tops)
{
    int done[INDEX_BATCH_MAX], redo[INDEX_BATCH_MAX], n_redo = 0;
    enum ims_status st = search_i8(vx, qs, nq, k, n_threads, tops, done);
    if (st != IMS_OK)
        return st;
    for (int q = 0; q < nq; q++)
        if (!done[q])
            redo[n_redo++] = q;
    return scan_fp32_redo(&vx->store, qs, redo, n_redo, n_threads, tops);
}

void index__i8_stats(struct vindex *vx, uint64_t *n_searches, uint64_t *n_candidates,
                     uint64_t *n_fallbacks)
{
    if (n_searches)
        *n_searches = atomic_load(&vx->i8_searches);
    if (n_candidates)
        *n_candidates = atomic_load(&vx->i8_candidates);
    if (n_fallbacks)
        *n_fallbacks = atomic_load(&vx->i8_fallbacks);
}

/* A search taking part in coalescing. Borrowed from the caller's stack: it
 * lives until its own vindex_search returns, which is after its batch. */
struct index__batch_member {
    const float *q;
    int k;
    float *scores;  /* the caller's arrays, filled by the batch's leader */
    int64_t *ids;
    int n_found;
    enum ims_status st;
    enum { MEMBER_WAITING, MEMBER_LEADS, MEMBER_DONE } state; /* under batch_mu */
    struct index__batch_member *next; /* queue link, then the batch list */
    pthread_cond_t wake;              /* signalled under batch_mu */
};

int index__batch_enabled = 2;
void (*index__batch_hook)(struct vindex *vx, int n_members) = NULL;

/* Runs the searches of one batch (all exact kinds) under one read lock and
 * fills every member's results and status. A batch of 1 takes the one-query
 * path, so a lone search costs what it cost before coalescing existed. */
static void run_batch(struct vindex *vx, struct index__batch_member **m, int n)
{
    enum ims_status st = IMS_OK;
    struct index__topk tops[INDEX_BATCH_MAX] = {{0}};
    int kk[INDEX_BATCH_MAX], n_tops = 0;
    float *qs = NULL;
    const size_t dim = (size_t)vx->dim;
    IMS_ASSERT(n >= 1 && n <= INDEX_BATCH_MAX);
    RDLOCK(vx);
    size_t count = vx->store.n;
    int n_threads = vx->params.n_threads;
    for (int i = 0; i < n; i++) {
        kk[i] = (int)IMS_MIN((size_t)m[i]->k, count);
        m[i]->n_found = 0;
    }
    if (count == 0)
        goto out;
    for (; n_tops < n; n_tops++) {
        st = index__topk_init(&tops[n_tops], kk[n_tops]);
        if (st != IMS_OK)
            goto out;
    }
    if (n == 1) {
        if (vx->kind == INDEX_KIND_FLAT)
            st = search_flat_multi(vx, m[0]->q, 1, kk, n_threads, tops);
        else
            st = search_f16(vx, m[0]->q, kk[0], n_threads, &tops[0]);
    } else {
        qs = ims_malloc(sizeof(float) * (size_t)n * dim);
        if (!qs) {
            st = IMS_ERR_NOMEM;
            goto out;
        }
        for (int i = 0; i < n; i++)
            memcpy(qs + (size_t)i * dim, m[i]->q, sizeof(float) * dim);
        if (vx->kind == INDEX_KIND_FLAT)
            st = search_flat_multi(vx, qs, n, kk, n_threads, tops);
        else
            st = search_f16_multi(vx, qs, n, kk, n_threads, tops);
    }
    if (st != IMS_OK)
        goto out;
    for (int i = 0; i < n; i++) {
        index__topk_sort(&tops[i]);
        memcpy(m[i]->scores, tops[i].scores, (size_t)tops[i].n * sizeof(float));
        memcpy(m[i]->ids, tops[i].ids, (size_t)tops[i].n * sizeof(int64_t));
        m[i]->n_found = tops[i].n;
    }
out:
    UNLOCK(vx);
    for (int i = 0; i < n; i++)
        m[i]->st = st;
    for (int i = 0; i < n_tops; i++)
        index__topk_fini(&tops[i]);
    ims_free(qs);
}

/* Coalescing (docs/internals/index.md): the first search to arrive while no
 * batch runs leads at once, alone. Searches arriving while a batch scans
 * queue; when the scan ends its leader hands each member its results, then
 * makes the oldest queued search the leader of the next batch (it and up to
 * INDEX_BATCH_MAX - 1 more, in arrival order) and wakes it. No timer: a
 * batch is whatever queued during the previous scan. */
static void search_coalesced(struct vindex *vx, struct index__batch_member *me)
{
    struct index__batch_member *batch[INDEX_BATCH_MAX];
    int n = 0;
    pthread_mutex_lock(&vx->batch_mu);
    if (vx->batch_running < index__batch_runners()) {
        vx->batch_running++;
        batch[n++] = me;
    } else {
        pthread_cond_init(&me->wake, NULL);
        me->state = MEMBER_WAITING;
        me->next = NULL;
        if (vx->queue_tail)
            vx->queue_tail->next = me;
        else
            vx->queue_head = me;
        vx->queue_tail = me;
        vx->n_queued++;
        while (me->state == MEMBER_WAITING)
            pthread_cond_wait(&me->wake, &vx->batch_mu);
        /* whoever changed the state did so and signalled under batch_mu and
         * touches `me` no more once it has released it */
        pthread_cond_destroy(&me->wake);
        if (me->state == MEMBER_DONE) {
            pthread_mutex_unlock(&vx->batch_mu);
            return;
        }
        for (struct index__batch_member *m = me; m; m = m->next) /* MEMBER_LEADS */
            batch[n++] = m;
    }
    pthread_mutex_unlock(&vx->batch_mu);

    if (index__batch_hook)
        index__batch_hook(vx, n);
    run_batch(vx, batch, n);

    pthread_mutex_lock(&vx->batch_mu);
    vx->n_batches++;
    vx->n_batched += (uint64_t)n;
    for (int i = 1; i < n; i++) { /* batch[0] is this thread's own search */
        batch[i]->state = MEMBER_DONE;
        pthread_cond_signal(&batch[i]->wake);
    }
    struct index__batch_member *lead = vx->queue_head;
    if (lead) {
        struct index__batch_member *last = lead;
        int taken = 1;
        while (taken < INDEX_BATCH_MAX && last->next) {
            last = last->next;
            taken++;
        }
        vx->queue_head = last->next;
        if (!vx->queue_head)
            vx->queue_tail = NULL;
        vx->n_queued -= taken;
        last->next = NULL;
        lead->state = MEMBER_LEADS;
        pthread_cond_signal(&lead->wake);
    } else {
        vx->batch_running--;
    }
    pthread_mutex_unlock(&vx->batch_mu);
}

int index__batch_queued(struct vindex *vx)
{
    pthread_mutex_lock(&vx->batch_mu);
    int n = vx->n_queued;
    pthread_mutex_unlock(&vx->batch_mu);
    return n;
}

void index__batch_stats(struct vindex *vx, uint64_t *n_batches, uint64_t *n_searches)
{
    pthread_mutex_lock(&vx->batch_mu);
    if (n_batches)
        *n_batches = vx->n_batches;
    if (n_searches)
        *n_searches = vx->n_batched;
    pthread_mutex_unlock(&vx->batch_mu);
}

/* ---- approximate (FAISS) search with exact re-score -------------------------------- */

static enum ims_status search_faiss(const struct vindex *vx, const float *q, int k,
                                    const struct vindex_filter *filter, size_t n_match,
                                    const struct vindex_search_params *qp,
                                    struct index__topk *top, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    float *cs = NULL;
    int64_t *ci = NULL;
    const struct index__store *s = &vx->store;
    /* a graph returns live nodes only: no tombstones to fetch past */
    int64_t ntotal = vx->graph ? (int64_t)index__graph_live(vx->graph)
                               : index__faiss_ntotal(vx->faiss);
    if (s->n == 0 || ntotal <= 0)
        return IMS_OK;
    int64_t want = IMS_MAX(k, qp->rerank);
    /* Tombstones (and a filter) dilute the results: ask for proportionally more. */
    int64_t fetch = want;
    size_t live = filter ? n_match : s->n;
    if (live == 0)
        return IMS_OK;
    if ((size_t)ntotal > live)
        fetch = (int64_t)((double)want * (double)ntotal / (double)live) + 1;
    int64_t want_found = IMS_MIN((int64_t)k, (int64_t)live);
    /* Graph: the walk ranks by bf16 scores; re-score its whole beam in fp32
     * (ef rows, tens of microseconds) so no near-tie at the k-th place is lost. */
    if (vx->graph)
        fetch = IMS_MAX(fetch, (int64_t)qp->ef_search);
    /* HNSW-Flat: walk FAISS's graph with our kernels (index_hnsw.c). */
    struct index__hnsw_view hv;
    int own_walk = !vx->graph && index__hnsw_own_walk && index__faiss_hnsw_view(vx->faiss, &hv);
    for (;;) {
        fetch = IMS_MIN(fetch, ntotal);
        fetch = IMS_MIN(fetch, (int64_t)1 << 24);
        ims_free(cs);
        ims_free(ci);
        cs = ims_malloc((size_t)fetch * sizeof *cs);
        ci = ims_malloc((size_t)fetch * sizeof *ci);
        if (!cs || !ci) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory for candidates");
            goto out;
        }
        if (own_walk || vx->graph) {
            int ef = qp->ef_search > 0 ? qp->ef_search : own_walk ? hv.ef_search : 0;
            int got = vx->graph ? index__graph_search(vx->graph, q, (int)fetch,
                                                      IMS_MAX(ef, (int)fetch), cs, ci)
                                : index__hnsw_search(&hv, vx->dim, q, (int)fetch,
                                                     IMS_MAX(ef, (int)fetch), cs, ci);
            if (got < 0) {
                st = ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory in the graph walk");
                goto out;
            }
            for (int64_t i = got; i < fetch; i++)
                ci[i] = -1;
        } else {
            st = index__faiss_search(vx->faiss, q, (int)fetch,
                                     IMS_MAX((int)fetch, qp->ef_search), qp->nprobe, cs, ci, err);
            if (st != IMS_OK)
                goto out;
        }
        /* Sort candidate ids so duplicates (an id re-added after a removal in a
         * graph index) are scored once. */
        qsort(ci, (size_t)fetch, sizeof *ci, cmp_i64);
        top->n = 0;
        int64_t n_valid = 0;
        for (int64_t i = 0; i < fetch; i++) {
            if (ci[i] < 0 || (i > 0 && ci[i] == ci[i - 1]))
                continue;
            n_valid++;
            if (filter && !vindex_filter_allows(filter, ci[i]))
                continue;
            int64_t row = index__store_find(s, ci[i]);
            if (row < 0)
                continue; /* removed: a tombstone */
            float score;
            index__dot_f32(q, index__store_row(s, (size_t)row), 1, vx->dim, &score);
            if (index__topk_would_take(top, score, ci[i]))
                index__topk_push(top, score, ci[i]);
        }
        if (top->n >= want_found || n_valid < fetch || fetch >= ntotal || fetch >= (1 << 24))
            break;
        fetch *= 2;
    }
out:
    ims_free(cs);
    ims_free(ci);
    return st;
}

/* The index's search parameters with the non-zero fields of *qp (one
 * query's) in their place. Under the read lock. */
static struct vindex_search_params query_params(const struct vindex *vx,
                                                const struct vindex_search_params *qp)
{
    struct vindex_search_params p = vx->params;
    if (qp && qp->nprobe > 0)
        p.nprobe = qp->nprobe;
    if (qp && qp->ef_search > 0)
        p.ef_search = qp->ef_search;
    if (qp && qp->rerank > 0)
        p.rerank = qp->rerank;
    return p;
}

static enum ims_status search_plain(struct vindex *vx, const float *q, int k,
                                    const struct vindex_search_params *qp, float *scores,
                                    int64_t *ids, int *n_found, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct index__topk top = {0};
    IMS_RETURN_ERROR_IF(!q || !scores || !ids || !n_found, err, IMS_ERR_INVALID,
                        "index: search without query or result arrays");
    IMS_RETURN_ERROR_IF(k < 1 || k > VINDEX_MAX_K, err, IMS_ERR_INVALID,
                        "index: k = %d is outside 1..%d", k, VINDEX_MAX_K);
    st = check_vectors(vx, q, 1, "query", err);
    if (st != IMS_OK)
        return st;
    if (vx->kind == INDEX_KIND_FLAT || vx->kind == INDEX_KIND_FLAT_F16) { /* exact: batches share */
        struct index__batch_member me = {.q = q, .k = k, .scores = scores, .ids = ids};
        struct index__batch_member *one = &me;
        if (index__batch_enabled)
            search_coalesced(vx, &me);
        else
            run_batch(vx, &one, 1);
        if (me.st != IMS_OK)
            return ims_error_set(err, me.st, "index: %s during search",
                                 me.st == IMS_ERR_NOMEM ? "out of memory" : ims_strerror(me.st));
        *n_found = me.n_found;
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
    st = search_faiss(vx, q, kk, NULL, 0, &p, &top, err);
    if (st != IMS_OK) {
        if (st == IMS_ERR_NOMEM)
            ims_error_set(err, st, "index: out of memory during search");
        goto out;
    }
    index__topk_sort(&top);
    memcpy(scores, top.scores, (size_t)top.n * sizeof *scores);
    memcpy(ids, top.ids, (size_t)top.n * sizeof *ids);
    *n_found = top.n;
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

static size_t filter_count(const struct index__store *s, const struct vindex_filter *f)
{
    size_t n = 0;
    for (size_t r = 0; r < s->n; r++)
        n += (size_t)vindex_filter_allows(f, s->ids[r]);
    return n;
}

/* The exact top k among the allowed rows: fp32 scores from the same kernel
 * as the unfiltered search (bit-identical per row). Dense filters score a
 * whole chunk at once; sparse ones test the bit first and score only the
 * allowed rows. */
static enum ims_status scan_filtered(const struct index__store *s, const float *q,
                                     const struct vindex_filter *f, size_t n_match,
                                     struct index__topk *top)
{
    float *buf = NULL;
    int dense = n_match * 8 > s->n;
    if (dense && !(buf = ims_malloc(INDEX_CHUNK_ROWS * sizeof *buf)))
        return IMS_ERR_NOMEM;
    for (size_t c0 = 0; c0 < s->n; c0 += INDEX_CHUNK_ROWS) {
        size_t m = IMS_MIN((size_t)INDEX_CHUNK_ROWS, s->n - c0);
        if (dense)
            index__dot_f32(q, index__store_row(s, c0), m, s->dim, buf);
        for (size_t i = 0; i < m; i++) {
            int64_t id = s->ids[c0 + i];
            if (!vindex_filter_allows(f, id))
                continue;
            float score;
            if (dense)
                score = buf[i];
            else
                index__dot_f32(q, index__store_row(s, c0 + i), 1, s->dim, &score);
            if (index__topk_would_take(top, score, id))
                index__topk_push(top, score, id);
        }
    }
    ims_free(buf);
    return IMS_OK;
}

static enum ims_status search_filtered(struct vindex *vx, const float *q, int k,
                                       const struct vindex_filter *filter,
                                       const struct vindex_search_params *qp, float *scores,
                                       int64_t *ids, int *n_found, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct index__topk top = {0};
    IMS_RETURN_ERROR_IF(!q || !scores || !ids || !n_found, err, IMS_ERR_INVALID,
                        "index: search without query or result arrays");
    IMS_RETURN_ERROR_IF(k < 1 || k > VINDEX_MAX_K, err, IMS_ERR_INVALID,
                        "index: k = %d is outside 1..%d", k, VINDEX_MAX_K);
    IMS_RETURN_ERROR_IF(filter->n_bits < 0 || (filter->n_bits > 0 && !filter->bits), err,
                        IMS_ERR_INVALID, "index: filter without a bitmap");
    st = check_vectors(vx, q, 1, "query", err);
    if (st != IMS_OK)
        return st;
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
    int scan = vx->kind == INDEX_KIND_FLAT || vx->kind == INDEX_KIND_FLAT_F16 || (double)n_match < FILTER_SCAN_SHARE * (double)s->n;
    if (!scan) {
        struct vindex_search_params p = query_params(vx, qp);
        st = search_faiss(vx, q, kk, filter, n_match, &p, &top, err);
        if (st != IMS_OK)
            goto fail;
        if (top.n < kk) { /* the approximate pass missed matches: scan them */
            top.n = 0;
            scan = 1;
        }
    }
    if (scan && (st = scan_filtered(s, q, filter, n_match, &top)) != IMS_OK)
        goto nomem;
    index__topk_sort(&top);
    memcpy(scores, top.scores, (size_t)top.n * sizeof *scores);
    memcpy(ids, top.ids, (size_t)top.n * sizeof *ids);
    *n_found = top.n;
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
    if (filter)
        return search_filtered(vx, q, k, filter, params, scores, ids, n_found, err);
    return search_plain(vx, q, k, params, scores, ids, n_found, err);
}

enum ims_status vindex_search(struct vindex *vx, const float *q, int k, float *scores,
                              int64_t *ids, int *n_found, struct ims_error *err)
{
    return search_plain(vx, q, k, NULL, scores, ids, n_found, err);
}

enum ims_status vindex_search_filtered(struct vindex *vx, const float *q, int k,
                                       const struct vindex_filter *filter, float *scores,
                                       int64_t *ids, int *n_found, struct ims_error *err)
{
    return vindex_search_with(vx, q, k, filter, NULL, scores, ids, n_found, err);
}
