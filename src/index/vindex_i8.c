/* SPDX-License-Identifier: MIT */
/*
 * vindex_i8.c: Flat's search: the int8 pre-scan over the codes the store
 * keeps, the exact fp32 re-score of its candidates, and the fp32 scan
 * (vindex_exact.c) for the queries it cannot answer; with its counters.
 *
 * Runs under the caller's read lock (vindex_batch.c). The exactness
 * argument: below, index_scan.c's header and docs/internals/index.md.
 */

#include "index_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
 * The threads' heaps merge into the final L, their lists are filtered by it.
 *
 * Filtered (issue 10): with a filter, a row whose id the filter refuses is
 * skipped after the vector pre-filter, before it can enter either the
 * lower-bound heap or the candidate list. The rule then holds with "rows"
 * read as "matching rows": L is the k-th largest lower bound among matching
 * rows (k <= matching rows, which the caller ensures), so every matching row
 * that can be in the top k has upper >= L, and re-scoring those gives the
 * filtered fp32 scan's answer, bit for bit. */

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

static float i8_threshold(const struct i8_state *state)
{
    return state->low.n == state->low.k ? state->low.scores[0] : -INFINITY;
}

static void i8_state_fini(struct i8_state *state)
{
    index__topk_fini(&state->low);
    ims_free(state->cand);
    ims_free(state->cand_up);
}

static enum ims_status i8_state_init(struct i8_state *state, int k)
{
    memset(state, 0, sizeof *state);
    state->cap_cand = 2 * (size_t)k + 256;
    state->cand = ims_malloc(state->cap_cand * sizeof *state->cand);
    state->cand_up = ims_malloc(state->cap_cand * sizeof *state->cand_up);
    if (!state->cand || !state->cand_up || index__topk_init(&state->low, k) != IMS_OK) {
        i8_state_fini(state);
        return IMS_ERR_NOMEM;
    }
    return IMS_OK;
}

/* Keeps the candidates whose upper bound is >= thr. */
static void i8_prune(struct i8_state *state, float thr)
{
    size_t m = 0;
    for (size_t i = 0; i < state->n_cand; i++)
        if (state->cand_up[i] >= thr) {
            state->cand[m] = state->cand[i];
            state->cand_up[m++] = state->cand_up[i];
        }
    state->n_cand = m;
}

static void i8_add(struct i8_state *state, size_t row, float up, size_t limit)
{
    if (state->n_cand == state->cap_cand) {
        i8_prune(state, i8_threshold(state));
        if (state->n_cand > limit) {
            state->over = 1;
            return;
        }
        if (state->n_cand > state->cap_cand / 2) {
            size_t cap = 2 * state->cap_cand;
            size_t *c = ims_realloc(state->cand, cap * sizeof *c);
            if (c)
                state->cand = c;
            float *u = c ? ims_realloc(state->cand_up, cap * sizeof *u) : NULL;
            if (!u) {
                state->over = 1; /* the fp32 scan needs no more memory */
                return;
            }
            state->cand_up = u;
            state->cap_cand = cap;
        }
    }
    state->cand[state->n_cand] = row;
    state->cand_up[state->n_cand++] = up;
}

struct i8_job {
    const struct index__store *s;
    const struct index__i8_query *qp; /* (nq) */
    const int16_t *q16;               /* (nq, stride): the qp[q].qs, contiguous */
    int nq;
    const struct vindex_filter *filter; /* NULL: every row (nq == 1 if set) */
    size_t limit;
    struct i8_state *state;              /* (nq) this thread's */
    size_t chunk_begin, chunk_end;
    int32_t *dots;                    /* (nq, block) */
    uint32_t *sel;                    /* (block) */
    float *lower, *upper;             /* (block) */
};

static void i8_chunks(void *arg)
{
    struct i8_job *j = arg;
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
                struct i8_state *state = &j->state[q];
                if (state->over)
                    continue;
                size_t m = index__i8_select(&j->qp[q], j->dots + (size_t)q * block, scales + b,
                                            rhos + b, nb, i8_threshold(state), j->sel, j->lower,
                                            j->upper);
                for (size_t t = 0; t < m && !state->over; t++) {
                    int64_t row = (int64_t)(base + b + j->sel[t]);
                    if (j->filter && !vindex_filter_allows(j->filter, s->ids[row]))
                        continue;
                    if (index__topk_would_take(&state->low, j->lower[t], row))
                        index__topk_push(&state->low, j->lower[t], row);
                    if (j->upper[t] >= i8_threshold(state))
                        i8_add(state, (size_t)row, j->upper[t], j->limit);
                }
            }
        }
    }
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
        const struct i8_state *state = &per_thread[(size_t)t * (size_t)nq + (size_t)qi];
        for (size_t i = 0; i < state->n_cand; i++) {
            if (state->cand_up[i] < thr)
                continue;
            size_t row = state->cand[i];
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
                                 const struct vindex_filter *filter, int n_threads,
                                 struct index__topk *tops, int *done)
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
    IMS_ASSERT(!filter || nq == 1);
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
            .filter = filter,
            .limit = i8_limit(s),
            .state = states + (size_t)t * (size_t)n_use,
            .chunk_begin = n_chunks * (size_t)t / (size_t)n_threads,
            .chunk_end = n_chunks * (size_t)(t + 1) / (size_t)n_threads,
            .dots = (int32_t *)b,
            .sel = (uint32_t *)(b + dots_bytes),
            .lower = (float *)(b + dots_bytes + block * sizeof(uint32_t)),
            .upper = (float *)(b + dots_bytes + block * (sizeof(uint32_t) + sizeof(float))),
        };
    }
    index__fan_out(jobs, sizeof *jobs, n_threads, i8_chunks);
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
enum ims_status index__search_flat_multi(struct vindex *vx, const float *qs, int nq, const int *k,
                                         int n_threads, struct index__topk *tops)
{
    int done[INDEX_BATCH_MAX], redo[INDEX_BATCH_MAX], n_redo = 0;
    enum ims_status st = search_i8(vx, qs, nq, k, NULL, n_threads, tops, done);
    if (st != IMS_OK)
        return st;
    for (int q = 0; q < nq; q++)
        if (!done[q])
            redo[n_redo++] = q;
    return index__scan_fp32_redo(&vx->store, qs, redo, n_redo, n_threads, tops);
}

/* Flat's filtered search, k <= the rows f allows: the int8 pre-scan
 * restricted to them. *done = 0 when the pre-scan cannot answer (the
 * caller scans the matching rows in fp32; top untouched). */
enum ims_status index__search_flat_filtered(struct vindex *vx, const float *q, int k,
                                            const struct vindex_filter *f, int n_threads,
                                            struct index__topk *top, int *done)
{
    return search_i8(vx, q, 1, &k, f, n_threads, top, done);
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

