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

#endif
