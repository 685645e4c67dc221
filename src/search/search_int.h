/* SPDX-License-Identifier: MIT */
/* search_int.h: what the files of the search module share, private to it. */
#ifndef IMGSEARCH_SEARCH_INT_H
#define IMGSEARCH_SEARCH_INT_H

#include "imgsearch/base.h"
#include "imgsearch/clip.h"

/* ---- text-embedding LRU cache (search_cache.c) ---------------------------- */

struct search_cache;
/* A cache of `capacity` embeddings of `dim` floats, all allocated now. */
enum ims_status search__cache_new(size_t capacity, int dim, struct search_cache **out);
void search__cache_free(struct search_cache *c);
/* Copies the cached embedding for these token ids into `out` and returns 1,
 * or returns 0 on a miss. Thread-safe. */
int search__cache_get(struct search_cache *c, const int32_t *ids, int n_ids, float *out);
/* Stores (or refreshes) an entry, evicting the least recently used one when
 * full. Thread-safe. */
void search__cache_put(struct search_cache *c, const int32_t *ids, int n_ids, const float *vec);
void search__cache_stats(struct search_cache *c, uint64_t *hits, uint64_t *misses, size_t *used);

/* ---- top-k result cache (search_cache.c) ---------------------------------- */

/* Results cached per query: at most this many (k + offset). */
#define SEARCH_HITS_CACHE_K 128

struct search_hits_cache;
enum ims_status search__hits_new(size_t capacity, int dim, struct search_hits_cache **out);
void search__hits_free(struct search_hits_cache *c);
/* 1 and the cached top `want` (scores, ids, *n_found) for query q under the
 * index generation v_generation (vindex_generation); 0 on a miss.
 * Thread-safe. */
int search__hits_get(struct search_hits_cache *c, const float *q, int want,
                     uint64_t v_generation, float *scores, int64_t *ids, int *n_found);
void search__hits_put(struct search_hits_cache *c, const float *q, int want,
                      uint64_t v_generation, const float *scores, const int64_t *ids,
                      int n_found);

/* ---- search.c / search_dedup.c ------------------------------------------------ */

struct search_engine;
struct search_hit;
struct search_request;
struct store_filter;
struct vindex_search_params;
/* The top `want` ids among the rows matching f (a bitmap inside the index). */
enum ims_status search__filtered(struct search_engine *se, const float *q, int want,
                                 const struct store_filter *f,
                                 const struct vindex_search_params *knobs, float *scores,
                                 int64_t *ids, int *n_found, struct ims_error *err);
/* The engine's index, catalogue and dimension (search.c). */
struct vindex *search__index(struct search_engine *se);
struct store *search__store(struct search_engine *se);
/* The cut set of a dedup query (search_request.dedup): up to offset+k kept
 * hits, best first, into hits[] (caller's array of offset+k), *n_hits. */
enum ims_status search__dedup(struct search_engine *se, const float *q,
                              const struct search_request *req, struct search_hit *hits,
                              size_t *n_hits, struct ims_error *err);
void search__hit_fini(struct search_hit *h);

#endif
