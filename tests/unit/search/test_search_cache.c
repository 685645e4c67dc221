/* SPDX-License-Identifier: MIT */
/* test_search_cache.c: LRU order, eviction, refresh, key equality, threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <string.h>

#include <cmocka.h>

#include "search_int.h"

static void key(int32_t ids[3], int v)
{
    ids[0] = 49406;
    ids[1] = v;
    ids[2] = 49407;
}

static void test_lru_eviction(void **state)
{
    (void)state;
    struct search_cache *c;
    assert_int_equal(search__cache_new(3, 4, &c), IMS_OK);
    int32_t ids[3];
    float v[4], out[4];
    for (int i = 0; i < 3; i++) {
        key(ids, i);
        for (int d = 0; d < 4; d++)
            v[d] = (float)(10 * i + d);
        search__cache_put(c, ids, 3, v);
    }
    key(ids, 0);
    assert_int_equal(search__cache_get(c, ids, 3, out), 1); /* 0 becomes most recent */
    assert_true(out[3] == 3.0f);
    key(ids, 3);
    search__cache_put(c, ids, 3, v); /* evicts 1, the least recently used */
    key(ids, 1);
    assert_int_equal(search__cache_get(c, ids, 3, out), 0);
    key(ids, 0);
    assert_int_equal(search__cache_get(c, ids, 3, out), 1);
    key(ids, 2);
    assert_int_equal(search__cache_get(c, ids, 3, out), 1);
    /* a prefix of a cached key is a different key */
    assert_int_equal(search__cache_get(c, ids, 2, out), 0);
    uint64_t hits, misses;
    size_t used;
    search__cache_stats(c, &hits, &misses, &used);
    assert_int_equal(hits, 3);
    assert_int_equal(misses, 2);
    assert_int_equal(used, 3);
    search__cache_free(c);
}

static void test_refresh_overwrites(void **state)
{
    (void)state;
    struct search_cache *c;
    assert_int_equal(search__cache_new(2, 2, &c), IMS_OK);
    int32_t ids[3];
    key(ids, 7);
    float a[2] = {1, 2}, b[2] = {3, 4}, out[2];
    search__cache_put(c, ids, 3, a);
    search__cache_put(c, ids, 3, b);
    assert_int_equal(search__cache_get(c, ids, 3, out), 1);
    assert_true(out[0] == 3.0f && out[1] == 4.0f);
    uint64_t hits, misses;
    size_t used;
    search__cache_stats(c, &hits, &misses, &used);
    assert_int_equal(used, 1);
    assert_int_equal(search__cache_get(c, ids, 0, out), 0);
    search__cache_free(c);
    assert_int_equal(search__cache_new(0, 2, &c), IMS_ERR_INVALID);
    search__cache_free(NULL);
}

static struct search_cache *shared;

static void *hammer(void *arg)
{
    int base = (int)(intptr_t)arg;
    int32_t ids[3];
    float v[8], out[8];
    for (int i = 0; i < 20000; i++) {
        key(ids, base + i % 50);
        for (int d = 0; d < 8; d++)
            v[d] = (float)(base + i % 50);
        if (!search__cache_get(shared, ids, 3, out))
            search__cache_put(shared, ids, 3, v);
        else if (out[0] != (float)(base + i % 50) || out[7] != out[0])
            return (void *)1; /* torn or wrong entry */
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    assert_int_equal(search__cache_new(64, 8, &shared), IMS_OK);
    pthread_t t[4];
    for (intptr_t i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, (void *)(i * 1000));
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    search__cache_free(shared);
}

static void test_hits_cache_versions(void **state)
{
    (void)state;
    struct search_hits_cache *c;
    assert_int_equal(search__hits_new(2, 4, &c), IMS_OK);
    float q1[4] = {1, 0, 0, 0}, q2[4] = {0, 1, 0, 0}, q3[4] = {0, 0, 1, 0};
    float sc[3] = {0.9f, 0.5f, 0.1f}, got_sc[SEARCH_HITS_CACHE_K];
    int64_t ids[3] = {7, 3, 9}, got_ids[SEARCH_HITS_CACHE_K];
    int n = -1;
    search__hits_put(c, q1, 3, 100, sc, ids, 3);
    assert_int_equal(search__hits_get(c, q1, 3, 100, got_sc, got_ids, &n), 1);
    assert_int_equal(n, 3);
    assert_memory_equal(got_ids, ids, sizeof(ids));
    assert_true(got_sc[0] == 0.9f && got_sc[2] == 0.1f);
    /* another k, another index version, another query: misses */
    assert_int_equal(search__hits_get(c, q1, 4, 100, got_sc, got_ids, &n), 0);
    assert_int_equal(search__hits_get(c, q1, 3, 101, got_sc, got_ids, &n), 0);
    assert_int_equal(search__hits_get(c, q2, 3, 100, got_sc, got_ids, &n), 0);
    /* capacity 2: the least recently used goes */
    search__hits_put(c, q2, 3, 100, sc, ids, 3);
    assert_int_equal(search__hits_get(c, q1, 3, 100, got_sc, got_ids, &n), 1); /* q1 fresher */
    search__hits_put(c, q3, 3, 100, sc, ids, 2);
    assert_int_equal(search__hits_get(c, q2, 3, 100, got_sc, got_ids, &n), 0);
    assert_int_equal(search__hits_get(c, q3, 3, 100, got_sc, got_ids, &n), 1);
    assert_int_equal(n, 2);
    /* beyond the cached depth: never stored, never found */
    search__hits_put(c, q1, SEARCH_HITS_CACHE_K + 1, 100, sc, ids, 3);
    assert_int_equal(search__hits_get(c, q1, SEARCH_HITS_CACHE_K + 1, 100, got_sc, got_ids, &n),
                     0);
    search__hits_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_refresh_overwrites),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_hits_cache_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
