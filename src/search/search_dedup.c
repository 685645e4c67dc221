/* SPDX-License-Identifier: MIT */
/*
 * search_dedup.c: near-duplicate folding inside a search (issue 10,
 * search_request.dedup). The folding rule itself is search_fold_duplicates
 * (pure, unit-tested); search__dedup fetches candidates from the index
 * (through the filter's bitmap when there is one), reads their embeddings
 * from the catalogue and folds them, fetching four times more candidates
 * until offset+k results are kept or nothing more can come.
 */
#include "search_int.h"

#include "imgsearch/search.h"

#include <string.h>

size_t search_fold_duplicates(const float *v, size_t n, size_t dim, float threshold,
                              size_t max_kept, int32_t *into)
{
    size_t n_kept = 0;
    /* the kept rows' indices; without memory for them, found again in into[] */
    int32_t *kept = n ? ims_malloc(n * sizeof(*kept)) : NULL;
    for (size_t i = 0; i < n; i++) {
        const float *x = v + i * dim;
        int32_t to = -1;
        for (size_t j = 0; j < (kept ? n_kept : i) && to < 0; j++) {
            if (!kept && into[j] != -1)
                continue;
            const float *y = v + (kept ? (size_t)kept[j] : j) * dim;
            float dot = 0.0f;
            for (size_t d = 0; d < dim; d++)
                dot += x[d] * y[d];
            if (dot >= threshold)
                to = kept ? kept[j] : (int32_t)j;
        }
        if (to >= 0) {
            into[i] = to;
        } else if (n_kept < max_kept) {
            into[i] = -1;
            if (kept)
                kept[n_kept] = (int32_t)i;
            n_kept++;
        } else {
            into[i] = -2;
        }
    }
    ims_free(kept);
    return n_kept;
}

/* One round: the top `fetch` candidates folded. Fills hits when enough are
 * kept or nothing more can come (*done = 1). */
static enum ims_status dedup_round(struct search_engine *se, const float *q,
                                   const struct search_request *req, int fetch, size_t want,
                                   struct search_hit *hits, size_t *n_hits, int *done,
                                   struct ims_error *err)
{
    struct vindex *vx = search__index(se);
    float *scores = ims_malloc((size_t)fetch * sizeof(float));
    int64_t *ids = ims_malloc((size_t)fetch * sizeof(int64_t));
    struct store_image_row *rows = ims_calloc((size_t)fetch, sizeof(*rows));
    uint8_t *found = ims_calloc((size_t)fetch, 1);
    int32_t *live = ims_malloc((size_t)fetch * sizeof(int32_t));
    int32_t *into = ims_malloc((size_t)fetch * sizeof(int32_t));
    float *m = NULL;
    size_t *ndup = NULL;
    int n_found = 0, loaded = 0;
    enum ims_status st = IMS_OK;
    if (!scores || !ids || !rows || !found || !live || !into) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    st = req->filter ? search__filtered(se, q, fetch, req->filter, &req->knobs, scores, ids,
                                        &n_found, err)
                     : vindex_search_with(vx, q, fetch, NULL, &req->knobs, scores, ids, &n_found,
                                          err);
    if (st != IMS_OK || n_found == 0)
        goto out_done;
    st = store_get_many(search__store(se), ids, (size_t)n_found, STORE_FIELD_EMBEDDING, rows,
                        found, err);
    if (st != IMS_OK)
        goto out;
    loaded = 1;
    /* the live candidates above min_score, and their embeddings */
    size_t n_live = 0, dim = 0;
    int below = 0;
    for (int i = 0; i < n_found; i++) {
        if (!found[i] || !rows[i].embedding)
            continue; /* deleted since the index saw it */
        if (req->has_min_score && scores[i] < req->min_score) {
            below = 1;
            break;
        }
        if (dim == 0)
            dim = rows[i].dim;
        if (rows[i].dim != dim)
            continue;
        live[n_live++] = i;
    }
    if (n_live) {
        m = ims_malloc(n_live * dim * sizeof(float));
        if (!m) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n_live; i++)
            memcpy(m + i * dim, rows[live[i]].embedding, dim * sizeof(float));
    }
    size_t kept = search_fold_duplicates(m, n_live, dim, req->dedup, want, into);
    if (kept < want && !below && n_found >= fetch && (size_t)fetch < vindex_count(vx) &&
        fetch < VINDEX_MAX_K)
        goto out; /* not enough yet: the caller fetches more */
    /* each kept hit's folded ids, counted first: its list is allocated to size */
    ndup = ims_calloc(n_live ? n_live : 1, sizeof(*ndup));
    if (!ndup) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_live; i++)
        if (into[i] >= 0)
            ndup[into[i]]++;
    /* the kept hits, each with the ids folded into it */
    int32_t *slot = into; /* reused: live index -> hit index for kept rows */
    size_t nh = 0;
    for (size_t i = 0; i < n_live; i++) {
        if (into[i] == -1) {
            struct search_hit *h = &hits[nh];
            memset(h, 0, sizeof(*h));
            h->row = rows[live[i]];
            memset(&rows[live[i]], 0, sizeof(rows[0]));
            ims_free(h->row.embedding);
            h->row.embedding = NULL;
            h->row.dim = 0;
            h->score = scores[live[i]];
            slot[i] = (int32_t)nh++;
        } else if (into[i] >= 0) {
            struct search_hit *h = &hits[slot[into[i]]];
            if (!h->duplicates) {
                h->duplicates = ims_malloc(ndup[into[i]] * sizeof(int64_t));
                if (!h->duplicates) {
                    st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
                    for (size_t j = 0; j < nh; j++)
                        search__hit_fini(&hits[j]);
                    nh = 0;
                    goto out;
                }
            }
            h->duplicates[h->n_duplicates++] = ids[live[i]];
            slot[i] = -2;
        }
    }
    *n_hits = nh;
out_done:
    *done = 1;
out:
    if (loaded)
        for (int i = 0; i < n_found; i++)
            store_row_fini(&rows[i]);
    ims_free(m);
    ims_free(scores);
    ims_free(ids);
    ims_free(rows);
    ims_free(found);
    ims_free(live);
    ims_free(into);
    ims_free(ndup);
    return st;
}

enum ims_status search__dedup(struct search_engine *se, const float *q,
                              const struct search_request *req, struct search_hit *hits,
                              size_t *n_hits, struct ims_error *err)
{
    size_t want = (size_t)req->k + (size_t)req->offset;
    size_t total = vindex_count(search__index(se));
    size_t fetch = want * 4 > want + 32 ? want * 4 : want + 32;
    *n_hits = 0;
    for (;;) {
        if (fetch > total)
            fetch = total;
        if (fetch > VINDEX_MAX_K) /* the most one index search returns */
            fetch = VINDEX_MAX_K;
        int done = 0;
        enum ims_status st =
            dedup_round(se, q, req, (int)fetch, want, hits, n_hits, &done, err);
        if (st != IMS_OK || done || fetch >= total || fetch >= VINDEX_MAX_K)
            return st;
        fetch *= 4;
    }
}
