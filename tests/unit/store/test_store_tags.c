/* SPDX-License-Identifier: MIT */
/*
 * test_store_tags.c: schema v4 (issue 10) on SQLite and, with the argument
 * "pg", on PostgreSQL: the tag rules (store_tag_normalize), store_tags_update
 * (case-preserving, case-insensitive, bounded, all or nothing, unknown id),
 * tags in rows and in filters (every tag must match), tags gone with their
 * image; the taken column (from the metadata, numbers only); and the
 * migration of a v3 catalogue (taken back-filled, tags usable, data intact).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "imgsearch/store.h"
#include "store_test_fx.h"
#include "store_test_util.h"

#define DIM TU_DIM

static const char *const META[] = {
    "{\"taken\":1715949000}", NULL, "{\"taken\":\"yesterday\"}", "{\"taken\":1680000000.75}",
    "{\"x\":1}",
};
#define N_ROWS 5

static void fill(struct tu_fx *f)
{
    struct ims_error err = {0};
    for (int i = 0; i < N_ROWS; i++) {
        float vec[DIM];
        uint8_t h[32];
        char src[32];
        snprintf(src, sizeof(src), "/p/%d.jpg", i + 1);
        tu_vec(vec, DIM, (uint64_t)i + 1);
        tu_hash(h, (uint64_t)i + 1);
        struct store_new_image r = {.source = src, .sha256 = h, .format = "jpeg", .width = 10,
                                    .height = 10, .added = 1000 + i, .metadata = META[i],
                                    .embedding = vec, .dim = DIM};
        struct store_insert_result res;
        if (store_insert_many(f->st, &r, 1, &res, &err) != IMS_OK)
            fail_msg("insert: %s", err.message);
        assert_int_equal(res.id, i + 1);
    }
}

/* The tags of id joined by "|", into buf. */
static const char *tags_of(struct store *st, int64_t id, char *buf, size_t cap)
{
    struct store_image_row row;
    struct ims_error err = {0};
    if (store_get(st, id, 0, &row, &err) != IMS_OK)
        fail_msg("get %lld: %s", (long long)id, err.message);
    buf[0] = '\0';
    for (size_t i = 0; i < row.n_tags; i++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", i ? "|" : "", row.tags[i]);
    store_row_fini(&row);
    return buf;
}

static unsigned match_tags(struct store *st, const char *const *tags, size_t n)
{
    struct store_filter flt;
    memset(&flt, 0, sizeof(flt));
    flt.tags = tags;
    flt.n_tags = n;
    int64_t *ids = NULL;
    size_t n_ids = 0;
    struct ims_error err = {0};
    if (store_filter_ids(st, &flt, &ids, &n_ids, &err) != IMS_OK)
        fail_msg("filter: %s", err.message);
    unsigned set = 0;
    for (size_t i = 0; i < n_ids; i++)
        set |= 1u << (ids[i] - 1);
    ims_free(ids);
    return set;
}

static void test_tag_rules(void **state)
{
    (void)state;
    char out[STORE_TAG_MAX_BYTES + 1], key[STORE_TAG_MAX_BYTES + 1];
    struct ims_error err = {0};
    assert_int_equal(store_tag_normalize("  Trip 2024 ", out, key, &err), IMS_OK);
    assert_string_equal(out, "Trip 2024");
    assert_string_equal(key, "trip 2024");
    /* non-ASCII letters keep their bytes in the key */
    assert_int_equal(store_tag_normalize("\xc3\x89t\xc3\xa9 ZOO", out, key, &err), IMS_OK);
    assert_string_equal(out, "\xc3\x89t\xc3\xa9 ZOO");
    assert_string_equal(key, "\xc3\x89t\xc3\xa9 zoo");
    char t64[65], t65[66];
    memset(t64, 'a', 64);
    t64[64] = 0;
    memset(t65, 'b', 65);
    t65[65] = 0;
    assert_int_equal(store_tag_normalize(t64, out, key, &err), IMS_OK);
    assert_int_equal(store_tag_normalize(t65, out, key, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "longer than 64"));
    static const char *const bad[] = {"", "   ", "a\tb", "line\n", "del\x7f",
                                      "c1\xc2\x85", "bad\xff", "cut\xc3", "over\xc0\xaf"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&err, 0, sizeof(err));
        if (store_tag_normalize(bad[i], out, key, &err) != IMS_ERR_INVALID)
            fail_msg("tag %zu accepted", i);
        assert_non_null(strstr(err.message, "tag '"));
    }
}

static void test_tags(void **state)
{
    struct tu_fx *f = *state;
    f->st = tu_fx_open(f);
    fill(f);
    struct ims_error err = {0};
    char buf[4096];
    const char *add1[] = {"Trip", "beach", "TRIP"};
    assert_int_equal(store_tags_update(f->st, 1, add1, 3, NULL, 0, &err), IMS_OK);
    assert_string_equal(tags_of(f->st, 1, buf, sizeof(buf)), "beach|Trip");
    /* another case of a tag there: the new spelling, still one tag */
    const char *add2[] = {"trip", "Zoo"};
    assert_int_equal(store_tags_update(f->st, 1, add2, 2, NULL, 0, &err), IMS_OK);
    assert_string_equal(tags_of(f->st, 1, buf, sizeof(buf)), "beach|trip|Zoo");
    const char *add3[] = {"beach", "zoo"};
    assert_int_equal(store_tags_update(f->st, 2, add3, 2, NULL, 0, &err), IMS_OK);
    const char *add4[] = {"BEACH"};
    assert_int_equal(store_tags_update(f->st, 3, add4, 1, NULL, 0, &err), IMS_OK);
    /* remove (case-insensitive, absent ones ignored), then add */
    const char *rm1[] = {"ZOO", "never"};
    const char *add5[] = {"sunset"};
    assert_int_equal(store_tags_update(f->st, 1, add5, 1, rm1, 2, &err), IMS_OK);
    assert_string_equal(tags_of(f->st, 1, buf, sizeof(buf)), "beach|sunset|trip");
    assert_string_equal(tags_of(f->st, 4, buf, sizeof(buf)), "");

    /* filters: every tag must match, case-insensitively */
    const char *f1[] = {"Beach"};
    assert_int_equal(match_tags(f->st, f1, 1), 0x7u);
    const char *f2[] = {"beach", "ZOO"};
    assert_int_equal(match_tags(f->st, f2, 2), 0x2u);
    const char *f3[] = {"beach", "beach "};
    assert_int_equal(match_tags(f->st, f3, 2), 0x7u);
    const char *f4[] = {"nothing"};
    assert_int_equal(match_tags(f->st, f4, 1), 0u);
    const char *f5[] = {"bad\x01"};
    struct store_filter flt;
    memset(&flt, 0, sizeof(flt));
    flt.tags = f5;
    flt.n_tags = 1;
    int64_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(store_filter_ids(f->st, &flt, &ids, &n, &err), IMS_ERR_INVALID);
    /* combined with another member */
    flt.tags = f1;
    flt.has_added_from = 1, flt.added_from = 1001;
    assert_int_equal(store_filter_ids(f->st, &flt, &ids, &n, &err), IMS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 3);
    ims_free(ids);

    /* refusals change nothing */
    const char *badadd[] = {"fine", "a\nb"};
    memset(&err, 0, sizeof(err));
    assert_int_equal(store_tags_update(f->st, 1, badadd, 2, NULL, 0, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "a"));
    assert_string_equal(tags_of(f->st, 1, buf, sizeof(buf)), "beach|sunset|trip");
    assert_int_equal(store_tags_update(f->st, 99, add5, 1, NULL, 0, &err), IMS_ERR_NOT_FOUND);
    assert_int_equal(store_tags_update(f->st, 0, add5, 1, NULL, 0, &err), IMS_ERR_INVALID);
    /* at most STORE_TAGS_MAX per image: 61 more fit (3 there), 62 do not */
    char names[STORE_TAGS_MAX][16];
    const char *many[STORE_TAGS_MAX];
    for (int i = 0; i < STORE_TAGS_MAX; i++) {
        snprintf(names[i], sizeof(names[i]), "t%02d", i);
        many[i] = names[i];
    }
    memset(&err, 0, sizeof(err));
    assert_int_equal(store_tags_update(f->st, 1, many, 62, NULL, 0, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "at most 64"));
    assert_string_equal(tags_of(f->st, 1, buf, sizeof(buf)), "beach|sunset|trip");
    assert_int_equal(store_tags_update(f->st, 1, many, 61, NULL, 0, &err), IMS_OK);
    struct store_image_row row;
    assert_int_equal(store_get(f->st, 1, 0, &row, &err), IMS_OK);
    assert_int_equal(row.n_tags, 64);
    store_row_fini(&row);

    /* tags go with their image */
    assert_int_equal(store_delete(f->st, 2, &err), IMS_OK);
    const char *f6[] = {"zoo"};
    assert_int_equal(match_tags(f->st, f6, 1), 0u);
    assert_int_equal(match_tags(f->st, f1, 1), 0x5u);
    if (store_check(f->st, &err) != IMS_OK)
        fail_msg("check: %s", err.message);
}

/* taken: numbers only (a fraction is cut), else none */
static void check_taken(struct store *st)
{
    static const int has[N_ROWS] = {1, 0, 0, 1, 0};
    static const int64_t val[N_ROWS] = {1715949000, 0, 0, 1680000000, 0};
    for (int i = 0; i < N_ROWS; i++) {
        struct store_image_row row;
        struct ims_error err = {0};
        if (store_get(st, i + 1, 0, &row, &err) != IMS_OK)
            fail_msg("get: %s", err.message);
        assert_int_equal(row.has_taken, has[i]);
        if (has[i])
            assert_int_equal(row.taken, val[i]);
        store_row_fini(&row);
    }
    struct store_filter flt;
    memset(&flt, 0, sizeof(flt));
    flt.has_taken_from = 1, flt.taken_from = 1680000000;
    flt.has_taken_to = 1, flt.taken_to = 1700000000;
    int64_t *ids = NULL;
    size_t n = 0;
    struct ims_error err = {0};
    assert_int_equal(store_filter_ids(st, &flt, &ids, &n, &err), IMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 4);
    ims_free(ids);
}

static void test_taken_column(void **state)
{
    struct tu_fx *f = *state;
    f->st = tu_fx_open(f);
    fill(f);
    check_taken(f->st);
}

/* A v3 catalogue (the v4 parts removed, the version put back) opened by this
 * binary: migrated to v4, taken back-filled, tags usable, rows intact. */
static void test_migrate_from_v3(void **state)
{
    struct tu_fx *f = *state;
    f->st = tu_fx_open(f);
    fill(f);
    store_close(f->st);
    f->st = NULL;
    static const char *const down[] = {
        "DROP TABLE image_tags", "DROP INDEX images_taken", "ALTER TABLE images DROP COLUMN taken",
        "DROP TABLE embedding_versions", /* v5 (test_store_rowchange tests v4 -> v5) */
    };
    if (tu_is_pg()) {
        for (size_t i = 0; i < 4; i++)
            assert_int_equal(tu_pg_exec(f->url, down[i]), 0);
        assert_int_equal(tu_pg_exec(f->url, "UPDATE schema_version SET version = 3"), 0);
    } else {
        char path[4096];
        snprintf(path, sizeof(path), "%s/catalogue.db", f->dir);
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        for (size_t i = 0; i < 4; i++)
            if (sqlite3_exec(db, down[i], NULL, NULL, NULL) != SQLITE_OK)
                fail_msg("%s: %s", down[i], sqlite3_errmsg(db));
        assert_int_equal(sqlite3_exec(db,
                                      "UPDATE meta SET value = '3' WHERE key = 'schema_version'",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(db);
    }
    f->st = tu_fx_open(f);
    int v = 0;
    struct ims_error err = {0};
    assert_int_equal(store_schema_version(f->st, &v, &err), IMS_OK);
    assert_int_equal(v, STORE_SCHEMA_VERSION);
    check_taken(f->st);
    int64_t count = 0;
    assert_int_equal(store_count(f->st, &count, &err), IMS_OK);
    assert_int_equal(count, N_ROWS);
    struct store_image_row row;
    assert_int_equal(store_get(f->st, 3, STORE_FIELD_EMBEDDING, &row, &err), IMS_OK);
    float vec[DIM];
    tu_vec(vec, DIM, 3);
    assert_memory_equal(row.embedding, vec, sizeof(vec));
    assert_string_equal(row.source, "/p/3.jpg");
    store_row_fini(&row);
    const char *add[] = {"Migrated"};
    assert_int_equal(store_tags_update(f->st, 5, add, 1, NULL, 0, &err), IMS_OK);
    assert_int_equal(match_tags(f->st, add, 1), 0x10u);
    if (store_check(f->st, &err) != IMS_OK)
        fail_msg("check: %s", err.message);
}

/* store_restore_many (catalogue copy) carries the tags over */
static void test_restore_keeps_tags(void **state)
{
    struct tu_fx *f = *state;
    f->st = tu_fx_open(f);
    fill(f);
    struct ims_error err = {0};
    const char *add[] = {"Trip", "zoo"};
    assert_int_equal(store_tags_update(f->st, 2, add, 2, NULL, 0, &err), IMS_OK);
    int64_t ids[N_ROWS];
    struct store_image_row rows[N_ROWS];
    uint8_t found[N_ROWS];
    struct store_restore_row rr[N_ROWS];
    for (int i = 0; i < N_ROWS; i++)
        ids[i] = i + 1;
    assert_int_equal(store_get_many(f->st, ids, N_ROWS, STORE_FIELD_EMBEDDING, rows, found, &err),
                     IMS_OK);
    for (int i = 0; i < N_ROWS; i++)
        rr[i] = (struct store_restore_row){&rows[i], NULL, 0};
    char dir2[4096], url2[1024];
    char *d2 = tu_mkdtemp();
    snprintf(dir2, sizeof(dir2), "%s", d2);
    assert_int_equal(tu_catalogue_new(url2, sizeof(url2)), 0);
    struct store *st2 = NULL;
    if (store_open_catalogue(url2, dir2, &tu_model_a, STORE_OPEN_SYNC_NORMAL, &st2, &err) != IMS_OK)
        fail_msg("open 2: %s", err.message);
    if (store_restore_many(st2, rr, N_ROWS, &err) != IMS_OK)
        fail_msg("restore: %s", err.message);
    char buf[256];
    assert_string_equal(tags_of(st2, 2, buf, sizeof(buf)), "Trip|zoo");
    assert_string_equal(tags_of(st2, 1, buf, sizeof(buf)), "");
    const char *flt[] = {"TRIP"};
    assert_int_equal(match_tags(st2, flt, 1), 0x2u);
    struct store_image_row row;
    assert_int_equal(store_get(st2, 1, 0, &row, &err), IMS_OK);
    assert_int_equal(row.has_taken, 1);
    assert_int_equal(row.taken, 1715949000);
    store_row_fini(&row);
    for (int i = 0; i < N_ROWS; i++)
        store_row_fini(&rows[i]);
    store_close(st2);
    tu_catalogue_drop(url2);
    tu_rmtree(dir2);
    free(d2);
}

int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tag_rules),
        cmocka_unit_test_setup_teardown(test_tags, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_taken_column, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_migrate_from_v3, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_restore_keeps_tags, tu_fx_setup, tu_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
