/* SPDX-License-Identifier: MIT */
/*
 * vindex_faiss.c: approximate search (every FAISS kind): FAISS's candidates
 * (or our own walk of an HNSW-Flat graph, index_hnsw.c), the live ones
 * re-scored exactly from the store, tombstones and filtered-out ids skipped,
 * the request widened until k live results are found. Runs under the
 * caller's read lock (vindex.c).
 */

#include "index_int.h"
#include "index_graph.h"

#include <stdlib.h>

/* ---- approximate (FAISS) search with exact re-score -------------------------------- */

enum ims_status index__search_faiss(const struct vindex *vx, const float *q, int k,
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
    /* (the own graph walk filters inside the beam: no dilution to pay for) */
    if ((size_t)ntotal > live && !(vx->graph && filter))
        fetch = (int64_t)((double)want * (double)ntotal / (double)live) + 1;
    int64_t want_found = IMS_MIN((int64_t)k, (int64_t)live);
    /* Graph: the walk ranks by bf16 scores; re-score its whole beam in fp32
     * (ef rows, tens of microseconds) so no near-tie at the k-th place is lost. */
    /* Own graph with a filter: the beam holds allowed nodes only and walks
     * through the others, so a beam of ef * share allowed nodes costs about
     * what the unfiltered beam of ef does (visits ~ beam / share). */
    double share = vx->graph && filter ? (double)live / (double)ntotal : 1.0;
    int ef_q = (int)IMS_MIN((double)qp->ef_search, (double)qp->ef_search * share + 1);
    if (vx->graph)
        fetch = IMS_MAX(fetch, (int64_t)ef_q);
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
            int ef = qp->ef_search > 0 ? (vx->graph ? ef_q : qp->ef_search)
                                       : own_walk ? IMS_MAX(hv.ef_search, INDEX_HNSW_DEFAULT_EF) : 0;
            int got = vx->graph ? index__graph_search_filtered(vx->graph, q, (int)fetch,
                                                               IMS_MAX(ef, (int)fetch), filter,
                                                               cs, ci)
                                : index__hnsw_search(&hv, vx->dim, q, (int)fetch,
                                                     IMS_MAX(ef, (int)fetch), cs, ci);
            if (got < 0) {
                st = ims_error_set(err, IMS_ERR_NOMEM, "index: out of memory in the graph walk");
                goto out;
            }
            for (int64_t i = got; i < fetch; i++)
                ci[i] = -1;
        } else {
            /* (min_ef only reaches an HNSW graph; IVF ignores it) */
            int ef = qp->ef_search > 0 ? qp->ef_search : INDEX_HNSW_DEFAULT_EF;
            st = index__faiss_search(vx->faiss, q, (int)fetch, IMS_MAX((int)fetch, ef),
                                     qp->nprobe, cs, ci, err);
            if (st != IMS_OK)
                goto out;
        }
        /* Sort candidate ids so duplicates (an id re-added after a removal in a
         * graph index) are scored once. */
        qsort(ci, (size_t)fetch, sizeof *ci, index__cmp_i64);
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

