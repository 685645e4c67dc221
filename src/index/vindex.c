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
 * - Flat search: dot products chunk by chunk into a small buffer, then a
 *   bounded heap. With params.n_threads > 1 the chunks are split over that
 *   many short-lived threads (per query; creating a thread costs ~20 us
 *   against a ~10 ms scan), each with its own heap, merged at the end. This is
 *   the only intra-query parallelism; across queries it is the caller's
 *   (server threads), which is why the default is 1 thread.
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
 * - FAISS search: ask FAISS for max(k, rerank) candidates, scaled up by the
 *   tombstone ratio; re-score the live ones exactly; if removed entries left
 *   fewer than k, double the request and retry. For HNSW-Flat the candidates
 *   come from our own walk of FAISS's graph (index_hnsw.c), same algorithm,
 *   our distance kernels.
 */

#include "index_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- creation ------------------------------------------------------------- */

static const char *canonical_spec(const char *spec)
{
    return (!spec || !spec[0]) ? "Flat" : spec;
}

enum ims_status index__vindex_create(const char *spec, int dim,
                                     struct vindex **out, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct vindex *vx = NULL;
    int lock_ok = 0;
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
    vx->params.n_threads = 1;
    if (strcmp(spec, "Flat") == 0)
        vx->kind = INDEX_KIND_FLAT;
    else if (strcmp(spec, "FlatF16") == 0)
        vx->kind = INDEX_KIND_FLAT_F16;
    else
        vx->kind = INDEX_KIND_FAISS;
    index__store_init(&vx->store, dim, vx->kind == INDEX_KIND_FLAT_F16);
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
    *out = vx;
    vx = NULL;
out:
    if (vx) {
        index__faiss_free(vx->faiss);
        if (lock_ok)
            pthread_rwlock_destroy(&vx->lock);
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
    index__store_fini(&vx->store);
    pthread_rwlock_destroy(&vx->lock);
    ims_free(vx->spec);
    ims_free(vx);
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

const char *vindex_spec(struct vindex *vx) { return vx->spec; }
int vindex_dim(struct vindex *vx) { return vx->dim; }

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
    index__store_append(&vx->store, ids, x, n);
    if (sorted[n - 1] > vx->last_id)
        vx->last_id = sorted[n - 1];
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
    for (size_t i = 0; i < n; i++)
        n_present += (size_t)index__store_remove(&vx->store, ids[i]);
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
    if (p->rerank > 0)
        vx->params.rerank = p->rerank;
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

static enum ims_status search_f16(const struct vindex *vx, const float *q, int k, int n_threads,
                                  struct index__topk *top)
{
    const struct index__store *s = &vx->store;
    enum ims_status st;
    struct index__topk cand = {0};
    size_t c_want = 2 * (size_t)k + 32;
    int c = (int)IMS_MIN(c_want, s->n);
    st = index__topk_init(&cand, c);
    if (st != IMS_OK)
        return st;
    st = scan_store(s, q, 1, c, n_threads, &cand);
    if (st != IMS_OK)
        goto out;
    index__topk_sort(&cand);
    double qn = 0;
    for (int i = 0; i < vx->dim; i++)
        qn += (double)q[i] * q[i];
    qn = sqrt(qn);
    double delta = qn * ((double)s->max_norm * (0x1p-11 + vx->dim * 0x1p-22) +
                         sqrt((double)vx->dim) * 0x1p-24);
    int kk = IMS_MIN(k, cand.n);
    int complete = (size_t)cand.n == s->n ||
                   (double)cand.scores[cand.n - 1] < (double)cand.scores[kk - 1] - 2 * delta;
    if (!complete) { /* near-ties beyond the candidate heap: exact fp32 scan */
        st = scan_store(s, q, 0, k, n_threads, top);
        goto out;
    }
    for (int i = 0; i < cand.n; i++) {
        int64_t row = index__store_find(s, cand.ids[i]);
        IMS_ASSERT(row >= 0);
        float score;
        index__dot_f32(q, index__store_row(s, (size_t)row), 1, vx->dim, &score);
        if (index__topk_would_take(top, score, cand.ids[i]))
            index__topk_push(top, score, cand.ids[i]);
    }
out:
    index__topk_fini(&cand);
    return st;
}

/* ---- approximate (FAISS) search with exact re-score -------------------------------- */

static enum ims_status search_faiss(const struct vindex *vx, const float *q, int k,
                                    struct index__topk *top, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    float *cs = NULL;
    int64_t *ci = NULL;
    const struct index__store *s = &vx->store;
    int64_t ntotal = index__faiss_ntotal(vx->faiss);
    if (s->n == 0 || ntotal <= 0)
        return IMS_OK;
    int64_t want = IMS_MAX(k, vx->params.rerank);
    /* Tombstones dilute the results: ask for proportionally more. */
    int64_t fetch = want;
    if ((size_t)ntotal > s->n)
        fetch = (int64_t)((double)want * (double)ntotal / (double)s->n) + 1;
    int64_t want_found = IMS_MIN((int64_t)k, (int64_t)s->n);
    /* HNSW-Flat: walk FAISS's graph with our kernels (index_hnsw.c). */
    struct index__hnsw_view hv;
    int own_walk = index__hnsw_own_walk && index__faiss_hnsw_view(vx->faiss, &hv);
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
        if (own_walk) {
            int got = index__hnsw_search(&hv, vx->dim, q, (int)fetch,
                                         IMS_MAX(hv.ef_search, (int)fetch), cs, ci);
            if (got < 0) {
                st = ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory in the graph walk");
                goto out;
            }
            for (int64_t i = got; i < fetch; i++)
                ci[i] = -1;
        } else {
            st = index__faiss_search(vx->faiss, q, (int)fetch, (int)fetch, cs, ci, err);
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

enum ims_status vindex_search(struct vindex *vx, const float *q, int k, float *scores,
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
    switch (vx->kind) {
    case INDEX_KIND_FLAT:
        st = scan_store(&vx->store, q, 0, kk, vx->params.n_threads, &top);
        break;
    case INDEX_KIND_FLAT_F16:
        st = search_f16(vx, q, kk, vx->params.n_threads, &top);
        break;
    case INDEX_KIND_FAISS:
        st = search_faiss(vx, q, kk, &top, err);
        break;
    }
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
