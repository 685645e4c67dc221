/* SPDX-License-Identifier: MIT */
/*
 * test_store_rowchange.c: schema v5 (issue 9) on SQLite and, with the
 * argument "pg", on PostgreSQL:
 *   - the ROW change kind: a completed import, a thumbnail, a tag change and
 *     a synced rename log ROW (the row changed, its embedding did not);
 *     store_set_embeddings and store_replace_content log UPDATE;
 *   - embedding versions: store_embeddings_changed_after lists the rows
 *     whose embedding was replaced after a seq, also after the feed was
 *     trimmed, and not deleted rows nor ROW-only changes;
 *   - the migration of a v4 catalogue (the v5 parts removed, the version
 *     put back): the feed's counter and changes kept, ROW writable, the
 *     versions back-filled from the feed's UPDATEs, every row at the floor
 *     of a trimmed feed; rows intact.
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

/* Inserts /p/<seed>.jpg (hash NULL: an imported row without image data). */
static int64_t add(struct store *st, uint64_t seed, int with_hash, enum store_insert_outcome want)
{
    float vec[DIM];
    uint8_t h[32];
    char src[32];
    snprintf(src, sizeof(src), "/p/%llu.jpg", (unsigned long long)seed);
    tu_vec(vec, DIM, seed);
    tu_hash(h, seed);
    struct store_new_image r = {.source = src, .sha256 = with_hash ? h : NULL,
                                .format = "jpeg", .width = 4, .height = 4,
                                .embedding = vec, .dim = DIM};
    struct store_insert_result res;
    struct ims_error err = {0};
    if (store_insert_many(st, &r, 1, &res, &err) != IMS_OK)
        fail_msg("insert: %s", err.message);
    assert_int_equal(res.outcome, want);
    return res.id;
}

static int64_t seq_of(struct store *st)
{
    int64_t s = -1;
    struct ims_error err = {0};
    assert_int_equal(store_change_seq(st, &s, &err), IMS_OK);
    return s;
}

/* The one change after `after`: its id and kind. */
static void expect_change(struct store *st, int64_t after, int64_t id,
                          enum store_change_kind kind)
{
    struct store_change ch[4];
    size_t n = 0;
    struct ims_error err = {0};
    assert_int_equal(store_changes_after(st, after, 4, ch, &n, &err), IMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ch[0].id, id);
    assert_int_equal(ch[0].kind, kind);
}

/* The ids of store_embeddings_changed_after(after) as a bit set over ids 1..63. */
static uint64_t changed_after(struct store *st, int64_t after)
{
    int64_t *ids = NULL;
    size_t n = 0;
    struct ims_error err = {0};
    if (store_embeddings_changed_after(st, after, &ids, &n, &err) != IMS_OK)
        fail_msg("embeddings_changed_after: %s", err.message);
    uint64_t bits = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(ids[i] > 0 && ids[i] < 64);
        if (i)
            assert_true(ids[i] > ids[i - 1]);
        bits |= 1ull << ids[i];
    }
    assert_true((n == 0) == (ids == NULL));
    ims_free(ids);
    return bits;
}

static void test_row_kind(void **state)
{
    struct tu_fx *f = *state;
    f->st = tu_fx_open(f);
    struct store *st = f->st;
    struct ims_error err = {0};
    int64_t a = add(st, 1, 1, STORE_INSERTED);
    int64_t b = add(st, 2, 0, STORE_INSERTED); /* imported: no image data */
    int64_t s = seq_of(st);
    assert_int_equal(add(st, 2, 1, STORE_COMPLETED), b);
    expect_change(st, s, b, STORE_CHANGE_ROW);
    s = seq_of(st);
    static const unsigned char jpeg[] = {0xff, 0xd8, 0xff, 0xd9};
    assert_int_equal(store_set_thumbnail(st, a, jpeg, sizeof(jpeg), &err), IMS_OK);
    expect_change(st, s, a, STORE_CHANGE_ROW);
    s = seq_of(st);
    const char *tags[] = {"Trip"};
    assert_int_equal(store_tags_update(st, a, tags, 1, NULL, 0, &err), IMS_OK);
    expect_change(st, s, a, STORE_CHANGE_ROW);
    s = seq_of(st);
    struct store_file_update u = {.id = b, .source = "/p/moved.jpg", .file_size = 5,
                                  .file_mtime_ns = 6};
    assert_int_equal(store_update_files(st, &u, 1, NULL, &err), IMS_OK);
    expect_change(st, s, b, STORE_CHANGE_ROW);
    assert_string_equal(store_change_kind_name(STORE_CHANGE_ROW), "row");
    /* none of these replaced an embedding */
    assert_int_equal(changed_after(st, 0), 0);

    s = seq_of(st);
    float v[DIM];
    tu_vec(v, DIM, 77);
    assert_int_equal(store_set_embeddings(st, &a, v, 1, NULL, &err), IMS_OK);
    expect_change(st, s, a, STORE_CHANGE_UPDATE);
    int64_t s_a = seq_of(st);
    assert_int_equal(changed_after(st, s), 1ull << a);
    assert_int_equal(changed_after(st, s_a), 0);

    /* a changed file: the new content's row goes into b (DELETE c, UPDATE b) */
    int64_t c = add(st, 3, 1, STORE_INSERTED);
    s = seq_of(st);
    assert_int_equal(store_replace_content(st, b, c, 7, 8, &err), IMS_OK);
    struct store_change ch[4];
    size_t n = 0;
    assert_int_equal(store_changes_after(st, s, 4, ch, &n, &err), IMS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ch[0].id, c);
    assert_int_equal(ch[0].kind, STORE_CHANGE_DELETE);
    assert_int_equal(ch[1].id, b);
    assert_int_equal(ch[1].kind, STORE_CHANGE_UPDATE);
    assert_int_equal(changed_after(st, s), 1ull << b);
    assert_int_equal(changed_after(st, 0), (1ull << a) | (1ull << b));
    /* the versions outlive the trimmed feed */
    assert_int_equal(store_change_trim(st, seq_of(st), &err), IMS_OK);
    assert_int_equal(changed_after(st, s_a - 1), (1ull << a) | (1ull << b));
    assert_int_equal(changed_after(st, s), 1ull << b);
    /* a deleted row is not listed */
    assert_int_equal(store_delete(st, a, &err), IMS_OK);
    assert_int_equal(changed_after(st, 0), 1ull << b);
    /* a later ROW change does not move b's version */
    int64_t s_b = seq_of(st);
    assert_int_equal(store_tags_update(st, b, tags, 1, NULL, 0, &err), IMS_OK);
    assert_int_equal(changed_after(st, s_b), 0);
    assert_int_equal(store_embeddings_changed_after(st, -1, NULL, &n, &err), IMS_ERR_INVALID);
    if (store_check(st, &err) != IMS_OK)
        fail_msg("check: %s", err.message);
}

/* Puts the catalogue back to schema v4: ROW changes as UPDATE (what v4
 * wrote), the kind check of v4, no embedding_versions. */
static void down_to_v4(struct tu_fx *f)
{
    if (tu_is_pg()) {
        static const char *const sql[] = {
            "DROP TABLE embedding_versions",
            "ALTER TABLE changes DROP CONSTRAINT changes_kind_check",
            "UPDATE changes SET kind = 3 WHERE kind = 4",
            "ALTER TABLE changes ADD CONSTRAINT changes_kind_check CHECK (kind IN (1, 2, 3))",
            "UPDATE schema_version SET version = 4",
        };
        for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++)
            assert_int_equal(tu_pg_exec(f->url, sql[i]), 0);
        return;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/catalogue.db", f->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    static const char sql[] =
        "BEGIN;"
        "DROP TABLE embedding_versions;"
        "CREATE TEMP TABLE keep AS SELECT seq FROM sqlite_sequence WHERE name = 'changes';"
        "CREATE TABLE c4(seq INTEGER PRIMARY KEY AUTOINCREMENT, image_id INTEGER NOT NULL,"
        "  kind INTEGER NOT NULL CHECK (kind IN (1, 2, 3)));"
        "INSERT INTO c4 SELECT seq, image_id, CASE kind WHEN 4 THEN 3 ELSE kind END FROM changes;"
        "DROP TABLE changes;"
        "ALTER TABLE c4 RENAME TO changes;"
        "UPDATE sqlite_sequence SET seq = (SELECT seq FROM temp.keep) WHERE name = 'changes';"
        "UPDATE meta SET value = '4' WHERE key = 'schema_version';"
        "COMMIT;";
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("down to v4: %s", msg);
    sqlite3_close(db);
}

static void test_migrate_from_v4(void **state)
{
    struct tu_fx *f = *state;
    f->st = tu_fx_open(f);
    struct ims_error err = {0};
    int64_t id[6];
    for (int i = 0; i < 6; i++)
        id[i] = add(f->st, (uint64_t)i + 1, 1, STORE_INSERTED);
    float v[DIM];
    tu_vec(v, DIM, 50);
    assert_int_equal(store_set_embeddings(f->st, &id[4], v, 1, NULL, &err), IMS_OK);
    int64_t s_reembed = seq_of(f->st);
    const char *tags[] = {"x"};
    assert_int_equal(store_tags_update(f->st, id[5], tags, 1, NULL, 0, &err), IMS_OK);
    int64_t newest = seq_of(f->st);
    store_close(f->st);
    f->st = NULL;

    /* 1: an untrimmed feed: versions from its UPDATE changes (a v4 feed's
     * UPDATEs include row-only ones: listed too, which is only extra work) */
    down_to_v4(f);
    f->st = tu_fx_open(f);
    int v5 = 0;
    assert_int_equal(store_schema_version(f->st, &v5, &err), IMS_OK);
    assert_int_equal(v5, STORE_SCHEMA_VERSION);
    assert_int_equal(seq_of(f->st), newest);
    assert_int_equal(changed_after(f->st, 0), (1ull << id[4]) | (1ull << id[5]));
    assert_int_equal(changed_after(f->st, s_reembed), 1ull << id[5]);
    struct store_change ch[16];
    size_t n = 0;
    assert_int_equal(store_changes_after(f->st, 0, 16, ch, &n, &err), IMS_OK);
    assert_int_equal((int64_t)n, newest);
    assert_int_equal(ch[6].kind, STORE_CHANGE_UPDATE);
    assert_int_equal(ch[6].id, id[4]);
    /* ROW is writable now, after the kept counter */
    assert_int_equal(store_tags_update(f->st, id[0], tags, 1, NULL, 0, &err), IMS_OK);
    expect_change(f->st, newest, id[0], STORE_CHANGE_ROW);
    newest++;

    /* 2: a trimmed feed: every row at the floor (what was trimmed is unknown) */
    assert_int_equal(store_change_trim(f->st, 3, &err), IMS_OK);
    store_close(f->st);
    f->st = NULL;
    down_to_v4(f);
    f->st = tu_fx_open(f);
    assert_int_equal(seq_of(f->st), newest);
    uint64_t all = 0;
    for (int i = 0; i < 6; i++)
        all |= 1ull << id[i];
    assert_int_equal(changed_after(f->st, 2), all);
    /* above the floor: the UPDATEs still in the feed (the ROW change of id[0]
     * went down to v4 as an UPDATE, as v4 wrote it) */
    assert_int_equal(changed_after(f->st, 3),
                     (1ull << id[0]) | (1ull << id[4]) | (1ull << id[5]));
    int64_t floor = -1;
    assert_int_equal(store_change_floor(f->st, &floor, &err), IMS_OK);
    assert_int_equal(floor, 3);
    /* rows intact */
    struct store_image_row row;
    assert_int_equal(store_get(f->st, id[4], STORE_FIELD_EMBEDDING, &row, &err), IMS_OK);
    assert_memory_equal(row.embedding, v, sizeof(v));
    store_row_fini(&row);
    int64_t count = 0;
    assert_int_equal(store_count(f->st, &count, &err), IMS_OK);
    assert_int_equal(count, 6);
    if (store_check(f->st, &err) != IMS_OK)
        fail_msg("check: %s", err.message);
}

int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_row_kind, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_migrate_from_v4, tu_fx_setup, tu_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
