/* SPDX-License-Identifier: MIT */
/*
 * store_rowcache.c: a node-side cache of image rows (without embeddings)
 * in front of store_get_many, bounded by bytes (store_row_cache_set).
 *
 * Why: a search answers from the node's own index, then joins its hits'
 * rows; on a shared PostgreSQL catalogue that join is one network round
 * trip per query. Popular result sets are joined again and again, so the
 * rows are kept here and a repeated result set costs no round trip.
 *
 * Invalidation is exact, by the writes themselves, never by age:
 *   - this store's own writes evict the ids they touched once they are
 *     committed (store.c): deletes, thumbnails, embeddings, completed rows;
 *   - other writers' (other nodes, the CLI) reach this node through the
 *     change feed: the replica evicts every DELETE/UPDATE change's id
 *     before it removes the id from its index (replica.c), and clears the
 *     whole cache when it rebuilds from the catalogue (the feed was trimmed
 *     past it). Every row change is in the feed (an UPDATE change for a
 *     completed row or a new thumbnail as well as for a new embedding).
 * The race: a reader that read a row from the catalogue BEFORE a delete
 * committed must not put it into the cache AFTER the delete evicted it.
 * Every eviction bumps `gen`; a reader notes gen before its catalogue read
 * and puts its rows only if gen has not moved. Ids are never reused and a
 * row that is not found is never cached, so inserts need no eviction.
 *
 * Structure: a chained hash table of entries (id -> a deep copy of the
 * row) plus one LRU list; one mutex (hits copy a handful of short strings
 * out, so it is held briefly). Byte accounting counts the entry and every
 * string it owns.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

struct rc_entry {
    int64_t id;
    size_t bytes;
    struct store_image_row row; /* embedding always NULL */
    struct rc_entry *hnext;     /* bucket chain */
    struct rc_entry *prev, *next; /* LRU: head.next is the most recent */
};

struct store__rowcache {
    pthread_mutex_t mu;
    size_t max_bytes, bytes, n;
    uint64_t gen;
    struct rc_entry **buckets;
    size_t mask;
    struct rc_entry head; /* LRU sentinel */
    uint64_t hits, misses, invalidated, dropped;
};

static size_t slot(const struct store__rowcache *rc, int64_t id)
{
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & rc->mask;
}

static size_t str_bytes(const char *s) { return s ? strlen(s) + 1 : 0; }

static size_t tags_bytes(const struct store_image_row *r)
{
    size_t n = r->n_tags * sizeof(char *);
    for (size_t i = 0; i < r->n_tags; i++)
        n += strlen(r->tags[i]) + 1;
    return r->n_tags ? n : 0;
}

static size_t row_bytes(const struct store_image_row *r)
{
    return sizeof(struct rc_entry) + str_bytes(r->source) + str_bytes(r->format) +
           str_bytes(r->caption) + str_bytes(r->metadata) + str_bytes(r->model) +
           tags_bytes(r);
}

/* The tags as one block (pointers, then text), the layout store_row_fini frees. */
static int dup_tags(struct store_image_row *dst, const struct store_image_row *src)
{
    dst->tags = NULL;
    dst->n_tags = 0;
    if (!src->n_tags || !src->tags)
        return 1;
    char *blk = ims_malloc(tags_bytes(src));
    if (!blk)
        return 0;
    char **t = (char **)(void *)blk;
    char *text = blk + src->n_tags * sizeof(char *);
    for (size_t i = 0; i < src->n_tags; i++) {
        size_t n = strlen(src->tags[i]) + 1;
        memcpy(text, src->tags[i], n);
        t[i] = text;
        text += n;
    }
    dst->tags = t;
    dst->n_tags = src->n_tags;
    return 1;
}

static int dup_str(char **dst, const char *src)
{
    *dst = NULL;
    if (!src)
        return 1;
    size_t n = strlen(src) + 1;
    *dst = ims_malloc(n);
    if (!*dst)
        return 0;
    memcpy(*dst, src, n);
    return 1;
}

/* Deep copy of a row without its embedding; 0 (dst zeroed) when out of memory. */
static int row_copy(struct store_image_row *dst, const struct store_image_row *src)
{
    *dst = *src;
    dst->embedding = NULL;
    dst->source = dst->format = dst->caption = dst->metadata = dst->model = NULL;
    dst->tags = NULL;
    dst->n_tags = 0;
    if (dup_str(&dst->source, src->source) && dup_str(&dst->format, src->format) &&
        dup_str(&dst->caption, src->caption) && dup_str(&dst->metadata, src->metadata) &&
        dup_str(&dst->model, src->model) && dup_tags(dst, src))
        return 1;
    store_row_fini(dst);
    return 0;
}

struct store__rowcache *store__rowcache_new(size_t max_bytes)
{
    struct store__rowcache *rc = ims_calloc(1, sizeof(*rc));
    if (!rc)
        return NULL;
    size_t nb = 1024;
    while (nb < (1u << 20) && nb * 512 < max_bytes) /* ~one bucket per small row */
        nb <<= 1;
    rc->buckets = ims_calloc(nb, sizeof(*rc->buckets));
    if (!rc->buckets) {
        ims_free(rc);
        return NULL;
    }
    rc->mask = nb - 1;
    rc->max_bytes = max_bytes;
    rc->head.prev = rc->head.next = &rc->head;
    pthread_mutex_init(&rc->mu, NULL);
    return rc;
}

static void lru_unlink(struct rc_entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

static void lru_front(struct store__rowcache *rc, struct rc_entry *e)
{
    e->next = rc->head.next;
    e->prev = &rc->head;
    rc->head.next->prev = e;
    rc->head.next = e;
}

static struct rc_entry *find(struct store__rowcache *rc, int64_t id, struct rc_entry ***link)
{
    struct rc_entry **p = &rc->buckets[slot(rc, id)];
    while (*p && (*p)->id != id)
        p = &(*p)->hnext;
    if (link)
        *link = p;
    return *p;
}

/* Unlinks and frees the entry *link points to. Caller holds mu. */
static void drop(struct store__rowcache *rc, struct rc_entry **link)
{
    struct rc_entry *e = *link;
    *link = e->hnext;
    lru_unlink(e);
    rc->bytes -= e->bytes;
    rc->n--;
    store_row_fini(&e->row);
    ims_free(e);
}

static void clear_locked(struct store__rowcache *rc)
{
    for (size_t b = 0; b <= rc->mask; b++)
        while (rc->buckets[b])
            drop(rc, &rc->buckets[b]);
}

void store__rowcache_free(struct store__rowcache *rc)
{
    if (!rc)
        return;
    clear_locked(rc);
    pthread_mutex_destroy(&rc->mu);
    ims_free(rc->buckets);
    ims_free(rc);
}

void store__rowcache_evict(struct store__rowcache *rc, const int64_t *ids, size_t n)
{
    if (!rc)
        return;
    pthread_mutex_lock(&rc->mu);
    rc->gen++;
    if (!ids) {
        rc->invalidated += rc->n;
        clear_locked(rc);
    } else {
        for (size_t i = 0; i < n; i++) {
            struct rc_entry **link = NULL;
            if (find(rc, ids[i], &link)) {
                drop(rc, link);
                rc->invalidated++;
            }
        }
    }
    pthread_mutex_unlock(&rc->mu);
}

/* Copies the cached row of `id` into *out (1) or counts a miss (0). */
static int lookup(struct store__rowcache *rc, int64_t id, struct store_image_row *out)
{
    pthread_mutex_lock(&rc->mu);
    struct rc_entry *e = find(rc, id, NULL);
    int hit = e && row_copy(out, &e->row);
    if (hit) {
        lru_unlink(e);
        lru_front(rc, e);
        rc->hits++;
    } else {
        rc->misses++;
    }
    pthread_mutex_unlock(&rc->mu);
    return hit;
}

/* Caches a copy of `row` unless an eviction happened since `gen` was read
 * (the row may be older than it), it is there already, or it alone exceeds
 * the bound. Least recently used rows make room. */
static void put(struct store__rowcache *rc, const struct store_image_row *row, uint64_t gen)
{
    size_t bytes = row_bytes(row);
    if (bytes > rc->max_bytes)
        return;
    struct rc_entry *e = ims_calloc(1, sizeof(*e));
    if (!e)
        return;
    if (!row_copy(&e->row, row)) {
        ims_free(e);
        return;
    }
    e->id = row->id;
    e->bytes = bytes;
    pthread_mutex_lock(&rc->mu);
    struct rc_entry **link = NULL;
    if (rc->gen != gen || find(rc, row->id, &link)) {
        pthread_mutex_unlock(&rc->mu);
        store_row_fini(&e->row);
        ims_free(e);
        return;
    }
    while (rc->bytes + bytes > rc->max_bytes && rc->head.prev != &rc->head) {
        struct rc_entry *old = rc->head.prev, **ol = NULL;
        find(rc, old->id, &ol);
        drop(rc, ol);
        rc->dropped++;
    }
    find(rc, row->id, &link); /* the chain may have changed */
    *link = e;
    e->hnext = NULL;
    lru_front(rc, e);
    rc->bytes += bytes;
    rc->n++;
    pthread_mutex_unlock(&rc->mu);
}

enum ims_status store__rowcache_get_many(struct store *store, struct store__rowcache *rc,
                                         const int64_t *ids, size_t n, struct store_image_row *rows,
                                         uint8_t *found, struct ims_error *err)
{
    int64_t *miss = ims_malloc(n * sizeof(*miss));
    size_t *where = ims_malloc(n * sizeof(*where));
    struct store_image_row *mrows = ims_calloc(n, sizeof(*mrows));
    uint8_t *mfound = ims_calloc(n, 1);
    enum ims_status s = IMS_OK;
    size_t m = 0;
    if (!miss || !where || !mrows || !mfound) {
        s = ims_error_set(err, IMS_ERR_NOMEM, "store_get_many: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        store_row_init(&rows[i]);
        found[i] = (uint8_t)lookup(rc, ids[i], &rows[i]);
        if (!found[i]) {
            miss[m] = ids[i];
            where[m++] = i;
        }
    }
    if (m > 0) {
        pthread_mutex_lock(&rc->mu);
        uint64_t gen = rc->gen; /* before the read: see the top of the file */
        pthread_mutex_unlock(&rc->mu);
        s = store->ops->get_many(store, miss, m, 0, mrows, mfound, err);
        if (s != IMS_OK) {
            for (size_t i = 0; i < n; i++) {
                store_row_fini(&rows[i]);
                found[i] = 0;
            }
            goto out;
        }
        for (size_t k = 0; k < m; k++) {
            if (!mfound[k])
                continue; /* never cache an absence */
            put(rc, &mrows[k], gen);
            rows[where[k]] = mrows[k];
            found[where[k]] = 1;
        }
    }
out:
    ims_free(miss);
    ims_free(where);
    ims_free(mrows);
    ims_free(mfound);
    return s;
}

void store__rowcache_stats(struct store__rowcache *rc, struct store_row_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!rc)
        return;
    pthread_mutex_lock(&rc->mu);
    out->max_bytes = rc->max_bytes;
    out->bytes = rc->bytes;
    out->rows = rc->n;
    out->hits = rc->hits;
    out->misses = rc->misses;
    out->invalidated = rc->invalidated;
    out->dropped = rc->dropped;
    pthread_mutex_unlock(&rc->mu);
}
