/* SPDX-License-Identifier: MIT */
/*
 * search_cache.c: a bounded LRU cache of text embeddings, keyed by token ids.
 *
 * The prototype named its query cache as its main optimisation; here a hit
 * skips the text transformer entirely. Keys are the token ids, not the raw
 * text, so "Cat", " cat " and "cat" (identical after the tokenizer's
 * clean-up and lower-casing) share one entry. Open hashing with chaining plus
 * a doubly linked recency list; every operation is O(1) under one mutex
 * (lookups are ~100 ns, far below anything else in a request, so a sharded
 * lock would buy nothing measurable). Capacity is fixed at creation and all
 * entries are allocated then, so a full cache evicts instead of growing.
 */
#include "search_int.h"

#include <pthread.h>
#include <string.h>

struct cache_entry {
    struct cache_entry *hnext;        /* hash chain */
    struct cache_entry *prev, *next;  /* recency list, most recent at head */
    uint64_t hash;
    int n_ids;                        /* 0: unused entry */
    int32_t ids[CLIP_CONTEXT_MAX];
    float *vec;                       /* (dim) */
};

struct search_cache {
    pthread_mutex_t mu;               /* guards everything below */
    size_t capacity, used, n_buckets;
    int dim;
    struct cache_entry **buckets;
    struct cache_entry *entries;      /* (capacity) */
    float *vectors;                   /* (capacity, dim) */
    struct cache_entry *head, *tail;
    uint64_t hits, misses;
};

static uint64_t hash_ids(const int32_t *ids, int n)
{
    uint64_t h = ims_fnv1a64(ids, (size_t)n * sizeof(*ids));
    return h ^ (h >> 29); /* the bucket index takes the low bits */
}

enum ims_status search__cache_new(size_t capacity, int dim, struct search_cache **out)
{
    if (capacity == 0 || dim <= 0)
        return IMS_ERR_INVALID;
    struct search_cache *c = ims_calloc(1, sizeof(*c));
    if (!c)
        return IMS_ERR_NOMEM;
    c->capacity = capacity;
    c->dim = dim;
    c->n_buckets = 1;
    while (c->n_buckets < capacity * 2)
        c->n_buckets *= 2;
    c->buckets = ims_calloc(c->n_buckets, sizeof(*c->buckets));
    c->entries = ims_calloc(capacity, sizeof(*c->entries));
    size_t vec_bytes;
    if (ims_size_mul(capacity, (size_t)dim * sizeof(float), &vec_bytes) == 0)
        c->vectors = ims_malloc(vec_bytes);
    if (!c->buckets || !c->entries || !c->vectors) {
        search__cache_free(c);
        return IMS_ERR_NOMEM;
    }
    for (size_t i = 0; i < capacity; i++)
        c->entries[i].vec = c->vectors + i * (size_t)dim;
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return IMS_OK;
}

void search__cache_free(struct search_cache *c)
{
    if (!c)
        return;
    if (c->entries)
        pthread_mutex_destroy(&c->mu);
    ims_free(c->buckets);
    ims_free(c->entries);
    ims_free(c->vectors);
    ims_free(c);
}

static void list_unlink(struct search_cache *c, struct cache_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void list_push_front(struct search_cache *c, struct cache_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

static struct cache_entry *find_locked(struct search_cache *c, uint64_t h, const int32_t *ids,
                                       int n)
{
    for (struct cache_entry *e = c->buckets[h & (c->n_buckets - 1)]; e; e = e->hnext)
        if (e->hash == h && e->n_ids == n && memcmp(e->ids, ids, (size_t)n * sizeof(*ids)) == 0)
            return e;
    return NULL;
}

int search__cache_get(struct search_cache *c, const int32_t *ids, int n_ids, float *out)
{
    if (n_ids <= 0 || n_ids > CLIP_CONTEXT_MAX)
        return 0;
    uint64_t h = hash_ids(ids, n_ids);
    pthread_mutex_lock(&c->mu);
    struct cache_entry *e = find_locked(c, h, ids, n_ids);
    if (e) {
        memcpy(out, e->vec, (size_t)c->dim * sizeof(float));
        list_unlink(c, e);
        list_push_front(c, e);
        c->hits++;
    } else {
        c->misses++;
    }
    pthread_mutex_unlock(&c->mu);
    return e != NULL;
}

static void bucket_remove(struct search_cache *c, struct cache_entry *e)
{
    struct cache_entry **pp = &c->buckets[e->hash & (c->n_buckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    e->hnext = NULL;
}

void search__cache_put(struct search_cache *c, const int32_t *ids, int n_ids, const float *vec)
{
    if (n_ids <= 0 || n_ids > CLIP_CONTEXT_MAX)
        return;
    uint64_t h = hash_ids(ids, n_ids);
    pthread_mutex_lock(&c->mu);
    struct cache_entry *e = find_locked(c, h, ids, n_ids);
    if (!e) {
        if (c->used < c->capacity) {
            e = &c->entries[c->used++];
        } else { /* evict the least recently used */
            e = c->tail;
            list_unlink(c, e);
            bucket_remove(c, e);
        }
        e->hash = h;
        e->n_ids = n_ids;
        memcpy(e->ids, ids, (size_t)n_ids * sizeof(*ids));
        size_t b = h & (c->n_buckets - 1);
        e->hnext = c->buckets[b];
        c->buckets[b] = e;
    } else {
        list_unlink(c, e);
    }
    memcpy(e->vec, vec, (size_t)c->dim * sizeof(float));
    list_push_front(c, e);
    pthread_mutex_unlock(&c->mu);
}

void search__cache_stats(struct search_cache *c, uint64_t *hits, uint64_t *misses, size_t *used)
{
    pthread_mutex_lock(&c->mu);
    *hits = c->hits;
    *misses = c->misses;
    *used = c->used;
    pthread_mutex_unlock(&c->mu);
}

/* ---- top-k result cache ------------------------------------------------------
 *
 * Popular queries repeat (the same text from many users, the next page of a
 * result list), and once their text embedding is cached the index scan is
 * what is left: at 100k vectors it costs milliseconds, a lookup here costs
 * microseconds. Keys are the fused query vector (compared in full: no false
 * hits) plus how many results were asked for and the index's generation
 * (vindex_generation: a fresh value on every add, remove or parameter
 * change, never repeated), so a hit is exactly what the index would answer
 * now. Fixed
 * capacity, LRU by a clock counter, one mutex.
 */

struct hits_entry {
    uint64_t hash, last_used;
    uint64_t v_generation;
    int want, n_found; /* want == 0: unused */
    float *q;          /* (dim) */
    float scores[SEARCH_HITS_CACHE_K];
    int64_t ids[SEARCH_HITS_CACHE_K];
};

struct search_hits_cache {
    pthread_mutex_t mu; /* guards everything below */
    size_t capacity;
    int dim;
    uint64_t clock, hits, misses;
    struct hits_entry *e; /* (capacity) */
    float *qs;            /* (capacity, dim) */
};

enum ims_status search__hits_new(size_t capacity, int dim, struct search_hits_cache **out)
{
    if (capacity == 0 || dim <= 0)
        return IMS_ERR_INVALID;
    struct search_hits_cache *c = ims_calloc(1, sizeof(*c));
    if (!c)
        return IMS_ERR_NOMEM;
    c->e = ims_calloc(capacity, sizeof(*c->e));
    size_t bytes;
    if (ims_size_mul(capacity, (size_t)dim * sizeof(float), &bytes) == 0)
        c->qs = ims_malloc(bytes);
    if (!c->e || !c->qs) {
        ims_free(c->e);
        ims_free(c->qs);
        ims_free(c);
        return IMS_ERR_NOMEM;
    }
    for (size_t i = 0; i < capacity; i++)
        c->e[i].q = c->qs + i * (size_t)dim;
    c->capacity = capacity;
    c->dim = dim;
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return IMS_OK;
}

void search__hits_free(struct search_hits_cache *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    ims_free(c->e);
    ims_free(c->qs);
    ims_free(c);
}

static uint64_t hash_query(const float *q, int dim, int want)
{
    return hash_ids((const int32_t *)q, dim) ^ ((uint64_t)want * 0x9E3779B97F4A7C15ull);
}

int search__hits_get(struct search_hits_cache *c, const float *q, int want,
                     uint64_t v_generation, float *scores, int64_t *ids, int *n_found)
{
    if (want > SEARCH_HITS_CACHE_K)
        return 0;
    uint64_t h = hash_query(q, c->dim, want);
    int found = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->capacity; i++) {
        struct hits_entry *e = &c->e[i];
        if (e->want == want && e->hash == h && e->v_generation == v_generation &&
            memcmp(e->q, q, (size_t)c->dim * sizeof(float)) == 0) {
            memcpy(scores, e->scores, (size_t)e->n_found * sizeof(float));
            memcpy(ids, e->ids, (size_t)e->n_found * sizeof(int64_t));
            *n_found = e->n_found;
            e->last_used = ++c->clock;
            found = 1;
            break;
        }
    }
    if (found)
        c->hits++;
    else
        c->misses++;
    pthread_mutex_unlock(&c->mu);
    return found;
}

void search__hits_put(struct search_hits_cache *c, const float *q, int want,
                      uint64_t v_generation, const float *scores, const int64_t *ids,
                      int n_found)
{
    if (want > SEARCH_HITS_CACHE_K || n_found > want || n_found < 0)
        return;
    pthread_mutex_lock(&c->mu);
    struct hits_entry *victim = &c->e[0];
    for (size_t i = 0; i < c->capacity; i++) {
        struct hits_entry *e = &c->e[i];
        if (e->want == 0 || e->last_used < victim->last_used) {
            victim = e;
            if (e->want == 0)
                break;
        }
    }
    victim->hash = hash_query(q, c->dim, want);
    victim->want = want;
    victim->n_found = n_found;
    victim->v_generation = v_generation;
    victim->last_used = ++c->clock;
    memcpy(victim->q, q, (size_t)c->dim * sizeof(float));
    memcpy(victim->scores, scores, (size_t)n_found * sizeof(float));
    memcpy(victim->ids, ids, (size_t)n_found * sizeof(int64_t));
    pthread_mutex_unlock(&c->mu);
}
