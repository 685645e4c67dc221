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

#endif
