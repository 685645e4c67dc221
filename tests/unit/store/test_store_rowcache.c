/* SPDX-License-Identifier: MIT */
/* test_store_rowcache.c: the node-side row cache in front of store_get_many
 * (store_row_cache_set): hits, this store's own writes evicting, another
 * writer's delete and thumbnail reaching the cache only through the change
 * feed (as the replica follows it), and the byte bound. Runs on SQLite, and
 * on PostgreSQL when started with "pg". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>

#include <cmocka.h>

#include "imgsearch/store.h"
#include "store_test_fx.h"
#include "store_test_util.h"

#define DIM TU_DIM

static int64_t add(struct store *st, uint64_t k, const char *caption)
{
    char src[64];
    float vec[DIM];
    uint8_t h[32];
    snprintf(src, sizeof(src), "https://example.org/rc/%llu.jpg", (unsigned long long)k);
    tu_vec(vec, DIM, k);
    tu_hash(h, k);
    struct store_new_image r = {.source = src, .sha256 = h, .embedding = vec, .dim = DIM,
                                .caption = caption, .format = "jpeg"};
    struct store_insert_result res;
    struct ims_error err = {0};
    if (store_insert_many(st, &r, 1, &res, &err) != IMS_OK)
        fail_msg("insert: %s", err.message);
    return res.id;
}

/* store_get_many of n ids; returns how many were found, rows released. */
static size_t get_found(struct store *st, const int64_t *ids, size_t n, int *has_thumb)
{
    struct store_image_row rows[64];
    uint8_t found[64];
    struct ims_error err = {0};
    assert_true(n <= 64);
    assert_int_equal(store_get_many(st, ids, n, 0, rows, found, &err), IMS_OK);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!found[i])
            continue;
        k++;
        assert_int_equal(rows[i].id, ids[i]);
        char want[64];
        snprintf(want, sizeof(want), "https://example.org/rc/");
        assert_memory_equal(rows[i].source, want, strlen(want));
        assert_string_equal(rows[i].format, "jpeg");
        if (has_thumb)
            *has_thumb = rows[i].has_thumbnail;
        store_row_fini(&rows[i]);
    }
    return k;
}

/* What the replica does with the feed: evict every DELETE/UPDATE id. */
static void follow_feed(struct store *st, int64_t *seq)
{
    struct store_change ch[64];
    size_t n = 0;
    struct ims_error err = {0};
    assert_int_equal(store_changes_after(st, *seq, 64, ch, &n, &err), IMS_OK);
    for (size_t i = 0; i < n; i++) {
        if (ch[i].kind != STORE_CHANGE_INSERT)
            store_row_cache_evict(st, &ch[i].id, 1);
        *seq = ch[i].seq;
    }
}

static void test_hits_and_own_writes(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    assert_int_equal(store_row_cache_set(f->st, 1 << 20, &err), IMS_OK);
    int64_t ids[3] = {add(f->st, 1, "one"), add(f->st, 2, NULL), add(f->st, 3, "three")};
    assert_int_equal(get_found(f->st, ids, 3, NULL), 3);
    struct store_row_cache_stats s;
    store_row_cache_get_stats(f->st, &s);
    assert_int_equal(s.misses, 3);
    assert_int_equal(s.hits, 0);
    assert_int_equal(s.rows, 3);
    /* the second time from the cache, same contents */
    struct store_image_row row;
    assert_int_equal(store_get(f->st, ids[0], 0, &row, &err), IMS_OK);
    assert_string_equal(row.caption, "one");
    assert_int_equal(row.width, 0);
    store_row_fini(&row);
    assert_int_equal(get_found(f->st, ids, 3, NULL), 3);
    store_row_cache_get_stats(f->st, &s);
    assert_int_equal(s.hits, 4);
    assert_int_equal(s.misses, 3);
    /* with the embedding: never from the cache */
    assert_int_equal(store_get(f->st, ids[1], STORE_FIELD_EMBEDDING, &row, &err), IMS_OK);
    assert_non_null(row.embedding);
    store_row_fini(&row);
    store_row_cache_get_stats(f->st, &s);
    assert_int_equal(s.hits, 4);
    /* this store's own delete evicts at once: never a deleted row */
    assert_int_equal(store_delete(f->st, ids[1], &err), IMS_OK);
    assert_int_equal(get_found(f->st, ids, 3, NULL), 2);
    assert_int_equal(store_get(f->st, ids[1], 0, &row, &err), IMS_ERR_NOT_FOUND);
    /* an absence is not cached: misses each time */
    store_row_cache_get_stats(f->st, &s);
    uint64_t m0 = s.misses;
    assert_int_equal(store_get(f->st, ids[1], 0, &row, &err), IMS_ERR_NOT_FOUND);
    store_row_cache_get_stats(f->st, &s);
    assert_int_equal(s.misses, m0 + 1);
    /* its own thumbnail evicts too */
    int thumb = -1;
    assert_int_equal(store_set_thumbnail(f->st, ids[2], "\xff\xd8jpeg", 6, &err), IMS_OK);
    assert_int_equal(get_found(f->st, &ids[2], 1, &thumb), 1);
    assert_int_equal(thumb, 1);
    /* off: straight to the catalogue */
    assert_int_equal(store_row_cache_set(f->st, 0, &err), IMS_OK);
    store_row_cache_get_stats(f->st, &s);
    assert_int_equal(s.max_bytes, 0);
    assert_int_equal(get_found(f->st, ids, 3, NULL), 2);
}

static void test_other_writer_via_feed(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    assert_int_equal(store_row_cache_set(f->st, 1 << 20, &err), IMS_OK);
    int64_t ids[4];
    for (int i = 0; i < 4; i++)
        ids[i] = add(f->other, 10 + (uint64_t)i, "x");
    int64_t seq = 0;
    follow_feed(f->st, &seq); /* inserts evict nothing */
    assert_int_equal(get_found(f->st, ids, 4, NULL), 4);
    int thumb = -1;
    assert_int_equal(get_found(f->st, &ids[3], 1, &thumb), 1);
    assert_int_equal(thumb, 0);
    /* another node deletes one and gives another a thumbnail */
    assert_int_equal(store_delete(f->other, ids[0], &err), IMS_OK);
    assert_int_equal(store_set_thumbnail(f->other, ids[3], "\xff\xd8jpeg", 6, &err), IMS_OK);
    /* until the feed is followed the node's view is its cache (as its index) */
    assert_int_equal(get_found(f->st, ids, 4, NULL), 4);
    follow_feed(f->st, &seq);
    struct store_row_cache_stats s;
    store_row_cache_get_stats(f->st, &s);
    assert_int_equal(s.invalidated, 2);
    assert_int_equal(get_found(f->st, ids, 4, NULL), 3);
    assert_int_equal(get_found(f->st, &ids[3], 1, &thumb), 1);
    assert_int_equal(thumb, 1);
    /* a completed (imported) row is an UPDATE change too */
    float vec[DIM];
    tu_vec(vec, DIM, 99);
    struct store_new_image imp = {.source = "https://example.org/rc/imp.jpg", .embedding = vec,
                                  .dim = DIM};
    struct store_insert_result res;
    assert_int_equal(store_insert_many(f->other, &imp, 1, &res, &err), IMS_OK);
    follow_feed(f->st, &seq);
    struct store_image_row row;
    assert_int_equal(store_get(f->st, res.id, 0, &row, &err), IMS_OK);
    assert_int_equal(row.has_sha256, 0);
    store_row_fini(&row);
    uint8_t h[32];
    tu_hash(h, 99);
    imp.sha256 = h;
    imp.format = "png";
    assert_int_equal(store_insert_many(f->other, &imp, 1, &res, &err), IMS_OK);
    assert_int_equal(res.outcome, STORE_COMPLETED);
    follow_feed(f->st, &seq);
    assert_int_equal(store_get(f->st, res.id, 0, &row, &err), IMS_OK);
    assert_int_equal(row.has_sha256, 1);
    assert_string_equal(row.format, "png");
    store_row_fini(&row);
    /* evict everything (a rebuild) */
    store_row_cache_evict(f->st, NULL, 0);
    store_row_cache_get_stats(f->st, &s);
    assert_int_equal(s.rows, 0);
    assert_int_equal(s.bytes, 0);
}

/* Tags (a block of pointers and text) are deep-copied by the cache; a tag
 * change or a moved source by another node reaches it through the feed. */
static void test_tags_and_moves(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    assert_int_equal(store_row_cache_set(f->st, 1 << 20, &err), IMS_OK);
    int64_t id = add(f->other, 40, "t");
    const char *add_tags[] = {"Beach", "sunset"};
    assert_int_equal(store_tags_update(f->other, id, add_tags, 2, NULL, 0, &err), IMS_OK);
    int64_t seq = 0;
    follow_feed(f->st, &seq);
    for (int pass = 0; pass < 3; pass++) { /* a miss, then hits: each a copy of its own */
        struct store_image_row row;
        assert_int_equal(store_get(f->st, id, 0, &row, &err), IMS_OK);
        assert_int_equal(row.n_tags, 2);
        assert_string_equal(row.tags[0], "Beach");
        assert_string_equal(row.tags[1], "sunset");
        store_row_fini(&row);
    }
    struct store_row_cache_stats s;
    store_row_cache_get_stats(f->st, &s);
    assert_int_equal(s.hits, 2);
    /* another node removes a tag: stale until the feed is followed, then fresh */
    const char *rm[] = {"beach"};
    assert_int_equal(store_tags_update(f->other, id, NULL, 0, rm, 1, &err), IMS_OK);
    follow_feed(f->st, &seq);
    struct store_image_row row;
    assert_int_equal(store_get(f->st, id, 0, &row, &err), IMS_OK);
    assert_int_equal(row.n_tags, 1);
    assert_string_equal(row.tags[0], "sunset");
    store_row_fini(&row);
    /* this store's own tag change evicts at once */
    const char *more[] = {"trip"};
    assert_int_equal(store_tags_update(f->st, id, more, 1, NULL, 0, &err), IMS_OK);
    assert_int_equal(store_get(f->st, id, 0, &row, &err), IMS_OK);
    assert_int_equal(row.n_tags, 2);
    store_row_fini(&row);
    /* a synced rename by another node moves the source */
    struct store_file_update u = {.id = id, .source = "https://example.org/rc/moved.jpg",
                                  .file_size = 1, .file_mtime_ns = 2};
    assert_int_equal(store_update_files(f->other, &u, 1, NULL, &err), IMS_OK);
    follow_feed(f->st, &seq);
    assert_int_equal(store_get(f->st, id, 0, &row, &err), IMS_OK);
    assert_string_equal(row.source, "https://example.org/rc/moved.jpg");
    store_row_fini(&row);
}

static void test_byte_bound(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    char caption[600];
    memset(caption, 'c', sizeof(caption) - 1);
    caption[sizeof(caption) - 1] = '\0';
    enum { N = 40 };
    int64_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = add(f->st, 100 + (uint64_t)i, caption);
    const size_t bound = 8 * 1024; /* room for about a dozen of these rows */
    assert_int_equal(store_row_cache_set(f->st, bound, &err), IMS_OK);
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < N; i += 8)
            assert_int_equal(get_found(f->st, ids + i, 8, NULL), 8);
    struct store_row_cache_stats s;
    store_row_cache_get_stats(f->st, &s);
    assert_true(s.bytes <= bound);
    assert_true(s.bytes > bound / 2);
    assert_true(s.rows > 0 && s.rows < N);
    assert_true(s.dropped > 0);
    /* the most recent rows are the ones kept */
    uint64_t h0 = s.hits;
    assert_int_equal(get_found(f->st, ids + N - 8, 8, NULL), 8);
    store_row_cache_get_stats(f->st, &s);
    assert_int_equal(s.hits, h0 + 8);
    /* a row larger than the whole bound is served but not kept */
    assert_int_equal(store_row_cache_set(f->st, 300, &err), IMS_OK);
    assert_int_equal(get_found(f->st, ids, 1, NULL), 1);
    store_row_cache_get_stats(f->st, &s);
    assert_int_equal(s.rows, 0);
    assert_int_equal(s.bytes, 0);
}

struct reader {
    struct store *st;
    const int64_t *ids;
    size_t n;
    atomic_int *stop;
    int errors;
};

static void *read_loop(void *arg)
{
    struct reader *r = arg;
    struct store_image_row rows[16];
    uint8_t found[16];
    while (!atomic_load(r->stop)) {
        if (store_get_many(r->st, r->ids, r->n, 0, rows, found, NULL) != IMS_OK) {
            r->errors++;
            continue;
        }
        for (size_t i = 0; i < r->n; i++)
            store_row_fini(&rows[i]);
    }
    return NULL;
}

/* Readers fill the cache while rows are deleted: once a delete returned,
 * the row is never found again, whatever the readers put in meanwhile. */
static void test_concurrent_deletes(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    assert_int_equal(store_row_cache_set(f->st, 1 << 20, &err), IMS_OK);
    int64_t ids[16];
    for (int i = 0; i < 16; i++)
        ids[i] = add(f->st, 200 + (uint64_t)i, "x");
    atomic_int stop = 0;
    struct reader rd[3];
    pthread_t th[3];
    for (int t = 0; t < 3; t++) {
        rd[t] = (struct reader){f->st, ids, 16, &stop, 0};
        assert_int_equal(pthread_create(&th[t], NULL, read_loop, &rd[t]), 0);
    }
    for (int i = 0; i < 16; i += 2) {
        assert_int_equal(store_delete(f->st, ids[i], &err), IMS_OK);
        for (int again = 0; again < 20; again++)
            assert_int_equal(get_found(f->st, &ids[i], 1, NULL), 0);
    }
    atomic_store(&stop, 1);
    for (int t = 0; t < 3; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(rd[t].errors, 0);
    }
    assert_int_equal(get_found(f->st, ids, 16, NULL), 8);
}

int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hits_and_own_writes, tu_fx_setup_open2, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_other_writer_via_feed, tu_fx_setup_open2, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_tags_and_moves, tu_fx_setup_open2, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_byte_bound, tu_fx_setup_open2, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_deletes, tu_fx_setup_open2, tu_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
