/* SPDX-License-Identifier: MIT */
/*
 * arena.c: the per-request bump allocator (nginx's request pool, h2o's
 * req->pool). Everything a request needs beyond its fixed context (parsed
 * query terms, backend results, strings) comes from here and is released in
 * one go when the response is done, so handlers and backends never free
 * piecemeal and cannot leak across requests. The arena has a cap: past it an
 * allocation returns NULL, which the handlers turn into out_of_memory.
 *
 * Chunks are singly linked, newest first; a request larger than the default
 * chunk size gets a chunk of its own.
 */
#include "server_int.h"

#include <string.h>

#define ARENA_CHUNK_BYTES (16 * 1024)
#define ARENA_ALIGN 16

struct server__arena_chunk {
    struct server__arena_chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

void server__arena_init(struct server_arena *a, size_t max_bytes)
{
    a->head = NULL;
    a->used_bytes = 0;
    a->max_bytes = max_bytes;
}

void server__arena_fini(struct server_arena *a)
{
    struct server__arena_chunk *c = a->head;
    while (c) {
        struct server__arena_chunk *next = c->next;
        ims_free(c);
        c = next;
    }
    a->head = NULL;
    a->used_bytes = 0;
}

void *server_arena_alloc(struct server_arena *a, size_t n)
{
    size_t need;
    if (n == 0)
        n = 1;
    if (ims_size_add(n, ARENA_ALIGN - 1, &need) != 0)
        return NULL;
    need &= ~(size_t)(ARENA_ALIGN - 1);
    size_t total;
    if (ims_size_add(a->used_bytes, need, &total) != 0 || total > a->max_bytes)
        return NULL;
    struct server__arena_chunk *c = a->head;
    if (!c || c->cap - c->used < need) {
        size_t cap = need > ARENA_CHUNK_BYTES ? need : ARENA_CHUNK_BYTES;
        size_t bytes;
        if (ims_size_add(sizeof(*c), cap, &bytes) != 0)
            return NULL;
        c = ims_malloc(bytes);
        if (!c)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += need;
    a->used_bytes = total;
    return p;
}

void *server_arena_memdup(struct server_arena *a, const void *p, size_t n)
{
    void *q = server_arena_alloc(a, n);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

char *server_arena_strdup(struct server_arena *a, const char *s)
{
    size_t n = strlen(s);
    char *q = server_arena_alloc(a, n + 1);
    if (q) {
        memcpy(q, s, n);
        q[n] = '\0';
    }
    return q;
}
