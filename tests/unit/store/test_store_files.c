/* SPDX-License-Identifier: MIT */
/*
 * test_store_files.c: the folder sync's catalogue calls (schema v3), on
 * SQLite and, with the argument "pg", on PostgreSQL: store_list_under
 * returns exactly the rows under a folder (a byte prefix ending in "/":
 * /p/a never matches /p/ab or /p/a itself), sorted, with their file state
 * (none until one is recorded); store_update_files records file state,
 * moves a source, refuses a source held by another row without writing
 * anything, and skips missing ids; store_replace_content gives a changed
 * file's row its new content while it keeps its id and tags.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imgsearch/store.h"
#include "store_test_fx.h"
#include "store_test_util.h"

#define DIM TU_DIM

/* ids 1..7 in this order */
static const char *const SOURCES[] = {
    "/p/a/z.jpg", "/p/ab/x.jpg", "/p/a/sub/y.png", "/p/a", "/p/a0.jpg", "/p/a/b.jpg",
    "https://example.org/p/a/c.jpg",
};
#define N_SRC ((int)(sizeof(SOURCES) / sizeof(SOURCES[0])))

static void fill(struct tu_fx *f)
{
    struct ims_error err = {0};
    if (store_open_catalogue(f->url, f->dir, &tu_model_a, STORE_OPEN_SYNC_NORMAL, &f->st, &err) !=
        IMS_OK)
        fail_msg("open: %s", err.message);
    for (int i = 0; i < N_SRC; i++) {
        float vec[DIM];
        uint8_t h[32];
        tu_vec(vec, DIM, (uint64_t)i + 1);
        tu_hash(h, (uint64_t)i + 1);
        struct store_new_image in = {.source = SOURCES[i], .sha256 = h, .format = "jpeg",
                                     .width = 10, .height = 10, .bytes = 100 + i,
                                     .embedding = vec, .dim = DIM};
        struct store_insert_result res;
        if (store_insert_many(f->st, &in, 1, &res, &err) != IMS_OK)
            fail_msg("insert: %s", err.message);
        assert_int_equal(res.id, i + 1);
    }
}

static void test_list_under(void **state)
{
    struct tu_fx *f = *state;
    fill(f);
    struct ims_error err = {0};
    struct store_file_row *rows = NULL;
    size_t n = 0;
    assert_int_equal(store_list_under(f->st, "/p/a", &rows, &n, &err), IMS_OK);
    assert_int_equal(n, 3);
    assert_string_equal(rows[0].source, "/p/a/b.jpg");
    assert_string_equal(rows[1].source, "/p/a/sub/y.png");
    assert_string_equal(rows[2].source, "/p/a/z.jpg");
    assert_int_equal(rows[0].id, 6);
    assert_int_equal(rows[0].bytes, 105);
    assert_true(rows[0].has_sha256);
    uint8_t h[32];
    tu_hash(h, 6);
    assert_memory_equal(rows[0].sha256, h, 32);
    assert_false(rows[0].has_file_state);
    store_file_rows_free(rows, n);
    /* a trailing slash is the same folder */
    assert_int_equal(store_list_under(f->st, "/p/a/", &rows, &n, &err), IMS_OK);
    assert_int_equal(n, 3);
    store_file_rows_free(rows, n);
    assert_int_equal(store_list_under(f->st, "/p/ab", &rows, &n, &err), IMS_OK);
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].source, "/p/ab/x.jpg");
    store_file_rows_free(rows, n);
    assert_int_equal(store_list_under(f->st, "/q", &rows, &n, &err), IMS_OK);
    assert_int_equal(n, 0);
    assert_null(rows);
    /* the root holds every local path */
    assert_int_equal(store_list_under(f->st, "/", &rows, &n, &err), IMS_OK);
    assert_int_equal(n, 6);
    store_file_rows_free(rows, n);
    assert_int_equal(store_list_under(f->st, "relative", &rows, &n, &err), IMS_ERR_INVALID);
    assert_int_equal(store_list_under(f->st, "", &rows, &n, &err), IMS_ERR_INVALID);
}

static void test_update_files(void **state)
{
    struct tu_fx *f = *state;
    fill(f);
    struct ims_error err = {0};
    struct store_file_update u[3] = {
        {6, NULL, 1234, 5678000000001LL},
        {1, "/p/a/renamed.jpg", 99, 42},
        {999, NULL, 1, 1},
    };
    uint8_t found[3];
    assert_int_equal(store_update_files(f->st, u, 3, found, &err), IMS_OK);
    assert_int_equal(found[0], 1);
    assert_int_equal(found[1], 1);
    assert_int_equal(found[2], 0);
    struct store_file_row *rows = NULL;
    size_t n = 0;
    assert_int_equal(store_list_under(f->st, "/p/a", &rows, &n, &err), IMS_OK);
    assert_int_equal(n, 3);
    assert_string_equal(rows[0].source, "/p/a/b.jpg");
    assert_true(rows[0].has_file_state);
    assert_int_equal(rows[0].file_size, 1234);
    assert_int_equal(rows[0].file_mtime_ns, 5678000000001LL);
    assert_string_equal(rows[1].source, "/p/a/renamed.jpg");
    assert_int_equal(rows[1].id, 1);
    assert_int_equal(rows[1].file_size, 99);
    assert_int_equal(rows[1].file_mtime_ns, 42);
    assert_string_equal(rows[2].source, "/p/a/sub/y.png");
    assert_false(rows[2].has_file_state);
    store_file_rows_free(rows, n);
    int64_t id = 0;
    assert_int_equal(store_find_by_source(f->st, "/p/a/renamed.jpg", &id, &err), IMS_OK);
    assert_int_equal(id, 1);
    assert_int_equal(store_find_by_source(f->st, "/p/a/z.jpg", &id, &err), IMS_ERR_NOT_FOUND);

    /* a source held by another row: nothing of the batch is written */
    struct store_file_update bad[2] = {{3, NULL, 7, 7}, {2, "/p/a/b.jpg", 1, 1}};
    assert_int_equal(store_update_files(f->st, bad, 2, found, &err), IMS_ERR_EXISTS);
    assert_non_null(strstr(err.message, "/p/a/b.jpg"));
    assert_int_equal(store_list_under(f->st, "/p/a/sub", &rows, &n, &err), IMS_OK);
    assert_int_equal(n, 1);
    assert_false(rows[0].has_file_state);
    store_file_rows_free(rows, n);
    assert_int_equal(store_find_by_source(f->st, "/p/ab/x.jpg", &id, &err), IMS_OK);
    assert_int_equal(id, 2);
    struct store_file_update neg = {3, NULL, -1, 0};
    assert_int_equal(store_update_files(f->st, &neg, 1, NULL, &err), IMS_ERR_INVALID);
    struct store_file_update empty = {3, "", 1, 0};
    assert_int_equal(store_update_files(f->st, &empty, 1, NULL, &err), IMS_ERR_INVALID);
}

/* A changed file keeps its row: store_replace_content moves the new row's
 * image data (embedding, hash, size, format, metadata and its "taken",
 * thumbnail, source) into the old row, which keeps its id, tags and caption;
 * the new row is deleted; the feed says DELETE new, UPDATE old. */
static void test_replace_content(void **state)
{
    struct tu_fx *f = *state;
    fill(f);
    struct ims_error err = {0};
    const char *tags[] = {"Trip", "beach"};
    assert_int_equal(store_tags_update(f->st, 6, tags, 2, NULL, 0, &err), IMS_OK);
    int64_t seq0 = 0;
    assert_int_equal(store_change_seq(f->st, &seq0, &err), IMS_OK);

    /* the new content, as the sync's ingest adds it under a parked source */
    float vec[DIM];
    uint8_t h[32];
    tu_vec(vec, DIM, 777);
    tu_hash(h, 777);
    static const char thumb[] = "\xff\xd8 new thumbnail";
    struct store_new_image in = {.source = "/p/a/b.jpg.new",
                                 .sha256 = h,
                                 .format = "png",
                                 .width = 30,
                                 .height = 20,
                                 .bytes = 4321,
                                 .metadata = "{\"taken\":1700000000}",
                                 .embedding = vec,
                                 .dim = DIM,
                                 .thumbnail = thumb,
                                 .thumbnail_bytes = sizeof(thumb)};
    struct store_insert_result res;
    assert_int_equal(store_insert_many(f->st, &in, 1, &res, &err), IMS_OK);
    assert_int_equal(res.outcome, STORE_INSERTED);
    int64_t nid = res.id;
    assert_int_equal(store_replace_content(f->st, 6, nid, 4321, 99, &err), IMS_OK);

    struct store_image_row row;
    store_row_init(&row);
    assert_int_equal(store_get(f->st, 6, STORE_FIELD_EMBEDDING, &row, &err), IMS_OK);
    assert_string_equal(row.source, "/p/a/b.jpg.new");
    assert_memory_equal(row.sha256, h, 32);
    assert_string_equal(row.format, "png");
    assert_int_equal(row.width, 30);
    assert_int_equal(row.height, 20);
    assert_int_equal(row.bytes, 4321);
    assert_true(row.has_taken);
    assert_int_equal(row.taken, 1700000000);
    assert_true(row.has_thumbnail);
    assert_memory_equal(row.embedding, vec, sizeof(vec));
    assert_int_equal(row.n_tags, 2);
    assert_string_equal(row.tags[0], "beach");
    assert_string_equal(row.tags[1], "Trip");
    store_row_fini(&row);
    void *jpeg = NULL;
    size_t nj = 0;
    assert_int_equal(store_get_thumbnail(f->st, 6, &jpeg, &nj, &err), IMS_OK);
    assert_int_equal(nj, sizeof(thumb));
    assert_memory_equal(jpeg, thumb, nj);
    ims_free(jpeg);
    assert_int_equal(store_get(f->st, nid, 0, &row, &err), IMS_ERR_NOT_FOUND);
    int64_t id = 0;
    assert_int_equal(store_find_by_sha256(f->st, h, &id, &err), IMS_OK);
    assert_int_equal(id, 6);
    struct store_file_row *rows = NULL;
    size_t n = 0;
    assert_int_equal(store_list_under(f->st, "/p/a", &rows, &n, &err), IMS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(rows[0].id, 6);
    assert_true(rows[0].has_file_state);
    assert_int_equal(rows[0].file_size, 4321);
    assert_int_equal(rows[0].file_mtime_ns, 99);
    store_file_rows_free(rows, n);

    /* the feed: INSERT new (the ingest), then DELETE new, UPDATE 6 */
    struct store_change ch[8];
    size_t nc = 0;
    assert_int_equal(store_changes_after(f->st, seq0, 8, ch, &nc, &err), IMS_OK);
    assert_int_equal(nc, 3);
    assert_int_equal(ch[0].id, nid);
    assert_int_equal(ch[0].kind, STORE_CHANGE_INSERT);
    assert_int_equal(ch[1].id, nid);
    assert_int_equal(ch[1].kind, STORE_CHANGE_DELETE);
    assert_int_equal(ch[2].id, 6);
    assert_int_equal(ch[2].kind, STORE_CHANGE_UPDATE);

    /* a missing row: nothing written */
    assert_int_equal(store_replace_content(f->st, 6, 999, 1, 1, &err), IMS_ERR_NOT_FOUND);
    assert_int_equal(store_replace_content(f->st, 999, 5, 1, 1, &err), IMS_ERR_NOT_FOUND);
    assert_int_equal(store_replace_content(f->st, 5, 5, 1, 1, &err), IMS_ERR_INVALID);
    assert_int_equal(store_get(f->st, 5, 0, &row, &err), IMS_OK);
    assert_string_equal(row.source, "/p/a0.jpg");
    store_row_fini(&row);
    int64_t cnt = 0;
    assert_int_equal(store_count(f->st, &cnt, &err), IMS_OK);
    assert_int_equal(cnt, N_SRC);
}

int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_list_under, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_update_files, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_replace_content, tu_fx_setup, tu_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
