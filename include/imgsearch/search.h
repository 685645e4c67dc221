/* SPDX-License-Identifier: MIT */
/*
 * search.h: queries. Weighted terms (texts, images, catalogue ids, raw
 * vectors) are embedded, fused and looked up in the index; the hits are
 * joined with their catalogue rows.
 *
 *     struct search_engine *se;
 *     search_engine_new(model, store, vx, NULL, &se, &err);
 *     struct search_term terms[] = {
 *         {.kind = SEARCH_TERM_TEXT, .weight = 1, .text = "beach"},
 *         {.kind = SEARCH_TERM_IMAGE_ID, .weight = 0.5f, .image_id = 42},
 *         {.kind = SEARCH_TERM_TEXT, .weight = -0.5f, .text = "people"},
 *     };
 *     struct search_request rq = {terms, 3, .k = 10};
 *     struct search_response rs;
 *     if (search_run(se, &rq, &rs, &err) == IMS_OK) {
 *         for (size_t i = 0; i < rs.n; i++)
 *             printf("%lld %.3f %s\n", rs.hits[i].row.id, rs.hits[i].score, rs.hits[i].row.source);
 *         search_response_fini(&rs);
 *     }
 *
 * The fused query is normalise(sum_i w_i * normalise(e_i)); scores are its
 * cosine similarity with the stored (normalised) embeddings.
 *
 * Threading: a search_engine may be used by any number of threads at once.
 * Text embeddings are cached (bounded LRU keyed by token ids). Encoding uses
 * a small pool of model contexts: a query waits for a free one, never for an
 * ingest batch to be committed (the index and catalogue readers are
 * concurrent with their writers).
 */
#ifndef IMGSEARCH_SEARCH_H
#define IMGSEARCH_SEARCH_H

#include <stddef.h>
#include <stdint.h>

#include "imgsearch/base.h"
#include "imgsearch/clip.h"
#include "imgsearch/image.h"
#include "imgsearch/index.h"
#include "imgsearch/store.h"

#ifdef __cplusplus
extern "C" {
#endif

struct search_engine;

struct search_options {
    size_t text_cache_entries; /* default 4096; 0 keeps the default */
    int n_contexts;            /* model contexts for concurrent encodes (default 2) */
    struct image_limits limits;/* for image terms (image_limits_default) */
};
void search_options_default(struct search_options *o);

/* model, store and index are borrowed and must outlive the engine; store and
 * index may both be NULL for an engine that only embeds (search_embed_*;
 * search_run then returns IMS_ERR_INVALID). On success
 * *out owns the engine; release it with search_engine_free(). */
enum ims_status search_engine_new(const struct clip_model *model, struct store *store,
                                  struct vindex *index, const struct search_options *opts,
                                  struct search_engine **out, struct ims_error *err);
void search_engine_free(struct search_engine *se);

enum search_term_kind {
    SEARCH_TERM_TEXT,
    SEARCH_TERM_IMAGE,    /* encoded image bytes (any format image_decode reads) */
    SEARCH_TERM_IMAGE_ID, /* the embedding of a catalogue row ("more like this") */
    SEARCH_TERM_VECTOR,   /* a raw vector of the model's dimension */
};

/* Borrowed for the call. */
struct search_term {
    enum search_term_kind kind;
    float weight; /* finite, non-zero; negative pushes away */
    const char *text;
    const void *bytes;
    size_t n_bytes;
    int64_t image_id;
    const float *vector;
    size_t n_vector;
};

enum search_order { SEARCH_ORDER_SCORE = 0, SEARCH_ORDER_DATE };

#define SEARCH_TERMS_MAX 16
#define SEARCH_K_MAX 1000
#define SEARCH_OFFSET_MAX 10000

struct search_request {
    const struct search_term *terms;
    size_t n_terms;  /* 1..SEARCH_TERMS_MAX */
    int k;           /* 1..SEARCH_K_MAX */
    int offset;      /* 0..SEARCH_OFFSET_MAX */
    int has_min_score;
    float min_score;
    enum search_order order; /* DATE: the cut set (top offset+k above min_score)
                                sorted newest first, then paged */
    /* Optional (issue 10): only rows matching it; the answer is the top
     * offset+k among them (a bitmap inside the index search, never a
     * post-filter of the unfiltered top k). */
    const struct store_filter *filter;
    /* Optional (issue 10): 0 < dedup <= 1 folds near-duplicates. Walking the
     * results best first, one whose cosine with an already kept result is
     * >= dedup goes into the best-ranked such result's `duplicates` instead
     * of the list; more candidates are fetched until offset+k results are
     * kept or the index (or the filter's rows, or min_score) runs out.
     * 0: off. With dedup, offset + k is at most SEARCH_DEDUP_WANT_MAX. */
    float dedup;
    /* Optional (issue 11): per-query index knobs (ef_search, nprobe, rerank;
     * 0 = the index's default), bounded as vindex_search_with. */
    struct vindex_search_params knobs;
};
#define SEARCH_DEDUP_WANT_MAX 2000

struct search_hit {
    struct store_image_row row; /* owned by the response */
    float score;
    int64_t *duplicates;        /* with dedup: ids folded into this hit, best first; owned */
    size_t n_duplicates;
};

/* The folding rule of search_request.dedup on n vectors (rows of dim
 * floats, L2-normalised, in rank order): into[i] = -1 when row i is kept,
 * else the index of the kept row it folds into (the best-ranked kept row
 * whose cosine with it is >= threshold). Once max_kept rows are kept, rows
 * that fold into none get -2 (beyond the cut). Returns the number kept. */
size_t search_fold_duplicates(const float *v, size_t n, size_t dim, float threshold,
                              size_t max_kept, int32_t *into);

struct search_response {
    struct search_hit *hits;
    size_t n;
    double took_ms;
};

/* Runs a query. On success *resp owns its hits; release with
 * search_response_fini(). IMS_ERR_INVALID for bad terms (message names the
 * term), IMS_ERR_NOT_FOUND for an unknown image_id. */
enum ims_status search_run(struct search_engine *se, const struct search_request *req,
                           struct search_response *resp, struct ims_error *err);
void search_response_fini(struct search_response *resp);

/* The (L2-normalised) embedding of one text, through the cache; `out` holds
 * the model's dimension. *cache_hit (may be NULL) says whether it was cached. */
enum ims_status search_embed_text(struct search_engine *se, const char *text, float *out,
                                  int *cache_hit, struct ims_error *err);
/* The embedding of encoded image bytes. */
enum ims_status search_embed_image(struct search_engine *se, const void *bytes, size_t n,
                                   float *out, struct ims_error *err);

struct search_counters {
    uint64_t queries, cache_hits, cache_misses, text_encodes, image_encodes;
    double text_encode_seconds, image_encode_seconds;
};
void search_get_counters(struct search_engine *se, struct search_counters *out);

#ifdef __cplusplus
}
#endif
#endif
