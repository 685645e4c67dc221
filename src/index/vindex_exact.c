/* SPDX-License-Identifier: MIT */
/*
 * vindex_exact.c: the exact scans of the store, fp32 and fp16, one query
 * and several at once (the multi-query form the coalesced batches use), the
 * FlatF16 exactness rule with its fp32 re-score, and the filtered scan.
 *
 * Owns no state: every function runs under the caller's read lock on the
 * vindex (vindex.c, vindex_batch.c) and allocates only per-call scratch.
 * Why the scans are exact and how the threads split the chunks: vindex.c's
 * DESIGN block; the kernels: index_scan.c.
 */

#include "index_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- exact scans ------------------------------------------------------------------ */

/* ---- fan-out: one search's scan split over short-lived threads ------------- */

struct fan_out_slot {
    void (*run)(void *job);
    void *job;
    pthread_t thread;
};

static void *fan_out_main(void *arg)
{
    struct fan_out_slot *slot = arg;
    slot->run(slot->job);
    return NULL;
}

int index__fan_out_fail = 0;

void index__fan_out(void *jobs, size_t job_bytes, int n, void (*run)(void *job))
{
    struct fan_out_slot slots[VINDEX_MAX_THREADS];
    int started[VINDEX_MAX_THREADS] = {0};
    IMS_ASSERT(n >= 1 && n <= VINDEX_MAX_THREADS);
    for (int t = 1; t < n; t++) {
        slots[t] = (struct fan_out_slot){.run = run, .job = (char *)jobs + job_bytes * (size_t)t};
        started[t] = !index__fan_out_fail &&
                     pthread_create(&slots[t].thread, NULL, fan_out_main, &slots[t]) == 0;
    }
    run(jobs);
    for (int t = 1; t < n; t++) {
        if (started[t])
            pthread_join(slots[t].thread, NULL);
        else
            run(slots[t].job); /* no thread: do its share here */
    }
}

/* ---- one query, then several at once ----------------------------------------------- */

struct scan_job {
    const struct index__store *s;
    const float *q;
    int f16;
    size_t chunk_begin, chunk_end;
    struct index__topk top;
};

static void scan_chunks(void *arg)
{
    struct scan_job *j = arg;
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
    index__fan_out(jobs, sizeof *jobs, n_threads, scan_chunks);
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

/* The FlatF16 exactness rule (vindex.c DESIGN) for one query whose best fp16
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

enum ims_status index__search_f16(const struct vindex *vx, const float *q, int k, int n_threads,
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
};

static void mscan_chunks(void *arg)
{
    struct mscan_job *j = arg;
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
    index__fan_out(jobs, sizeof *jobs, n_threads, mscan_chunks);
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
enum ims_status index__scan_fp32_redo(const struct index__store *s, const float *qs,
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

/* index__search_f16 for nq queries at once: one fp16 pass for all, the exactness
 * rule per query, and one fp32 pass for the queries whose rule failed. */
enum ims_status index__search_f16_multi(const struct vindex *vx, const float *qs, int nq,
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
    st = index__scan_fp32_redo(s, qs, redo, n_redo, n_threads, tops);
out:
    for (int i = 0; i < n_cand; i++)
        index__topk_fini(&cand[i]);
    return st;
}

/* The exact top k among the allowed rows: fp32 scores from the same kernel
 * as the unfiltered search (bit-identical per row). Dense filters score a
 * whole chunk at once; sparse ones test the bit first and score only the
 * allowed rows. */
enum ims_status index__scan_filtered(const struct index__store *s, const float *q,
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

