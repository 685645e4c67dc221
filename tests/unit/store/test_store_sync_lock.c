/* SPDX-License-Identifier: MIT */
/*
 * test_store_sync_lock.c: the catalogue calls behind issue 10's leftovers,
 * on SQLite and, with the argument "pg", on PostgreSQL:
 * - store_sync_lock_try: one holder per catalogue (a second handle on the
 *   same catalogue, as another process would open it, is refused with
 *   IMS_ERR_BUSY and a message saying why), free again once unlocked;
 * - store_set_details: a row's caption and added time replaced (an UPDATE
 *   in the change feed), a missing row refused, nothing else changed;
 * - store_list(STORE_ORDER_ID_AFTER): keyset pages, not shifted by a
 *   deletion between two pages.
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
#define N_ROWS 7

/* The fixture's two handles, and rows 1..N_ROWS in it. */
static int setup(void **state)
{
    if (tu_fx_setup_open2(state) != 0)
        return -1;
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    for (int i = 0; i < N_ROWS; i++) {
        float vec[DIM];
        uint8_t h[32];
        char src[64];
        snprintf(src, sizeof(src), "/p/%d.jpg", i + 1);
        tu_vec(vec, DIM, (uint64_t)i + 1);
        tu_hash(h, (uint64_t)i + 1);
        struct store_new_image in = {.source = src,
                                     .sha256 = h,
                                     .format = "jpeg",
                                     .width = 10,
                                     .height = 10,
                                     .bytes = 100 + i,
                                     .added = 1000 + i,
                                     .embedding = vec,
                                     .dim = DIM};
        struct store_insert_result res;
        if (store_insert_many(f->st, &in, 1, &res, &err) != IMS_OK || res.id != i + 1) {
            fprintf(stderr, "insert: %s\n", err.message);
            tu_fx_teardown(state);
            return -1;
        }
    }
    return 0;
}

static void test_sync_lock(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    struct store_sync_lock *a = NULL, *b = NULL;
    assert_int_equal(store_sync_lock_try(f->st, &a, &err), IMS_OK);
    assert_non_null(a);
    /* the other handle (another process, another node) is refused */
    assert_int_equal(store_sync_lock_try(f->other, &b, &err), IMS_ERR_BUSY);
    assert_null(b);
    assert_non_null(strstr(err.message, "another sync of this catalogue is running"));
    if (!tu_is_pg()) /* the holder's pid is in sync.lock */
        assert_non_null(strstr(err.message, "(process "));
    /* so is a second lock through the same handle (the watcher and a
     * request in one server) */
    assert_int_equal(store_sync_lock_try(f->st, &b, &err), IMS_ERR_BUSY);
    store_sync_unlock(a);
    assert_int_equal(store_sync_lock_try(f->other, &b, &err), IMS_OK);
    assert_int_equal(store_sync_lock_try(f->st, &a, &err), IMS_ERR_BUSY);
    store_sync_unlock(b);
    assert_int_equal(store_sync_lock_try(f->st, &a, &err), IMS_OK);
    store_sync_unlock(a);
    store_sync_unlock(NULL);
    assert_int_equal(store_sync_lock_try(NULL, &a, &err), IMS_ERR_INVALID);
}

static void test_set_details(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    int64_t seq0 = 0, seq1 = 0;
    assert_int_equal(store_change_seq(f->st, &seq0, &err), IMS_OK);
    assert_int_equal(store_set_details(f->st, 3, "a red kite", 12345, &err), IMS_OK);
    assert_int_equal(store_change_seq(f->st, &seq1, &err), IMS_OK);
    assert_true(seq1 > seq0);
    struct store_change ch[4];
    size_t n = 0;
    assert_int_equal(store_changes_after(f->st, seq0, 4, ch, &n, &err), IMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ch[0].id, 3);
    assert_int_equal(ch[0].kind, STORE_CHANGE_ROW);
    struct store_image_row row;
    store_row_init(&row);
    assert_int_equal(store_get(f->st, 3, 0, &row, &err), IMS_OK);
    assert_string_equal(row.caption, "a red kite");
    assert_int_equal(row.added, 12345);
    assert_string_equal(row.source, "/p/3.jpg");
    assert_int_equal(row.bytes, 102);
    store_row_fini(&row);
    /* the other handle sees it too (no stale copy anywhere) */
    assert_int_equal(store_get(f->other, 3, 0, &row, &err), IMS_OK);
    assert_string_equal(row.caption, "a red kite");
    store_row_fini(&row);
    /* NULL clears the caption */
    assert_int_equal(store_set_details(f->st, 3, NULL, 99, &err), IMS_OK);
    assert_int_equal(store_get(f->st, 3, 0, &row, &err), IMS_OK);
    assert_null(row.caption);
    assert_int_equal(row.added, 99);
    store_row_fini(&row);
    assert_int_equal(store_set_details(f->st, 999, "x", 1, &err), IMS_ERR_NOT_FOUND);
    assert_int_equal(store_set_details(f->st, 3, "x", -1, &err), IMS_ERR_INVALID);
    char *big = malloc(STORE_CAPTION_MAX_BYTES + 2);
    memset(big, 'c', STORE_CAPTION_MAX_BYTES + 1);
    big[STORE_CAPTION_MAX_BYTES + 1] = '\0';
    assert_int_equal(store_set_details(f->st, 3, big, 1, &err), IMS_ERR_INVALID);
    free(big);
    assert_int_equal(store_get(f->st, 3, 0, &row, &err), IMS_OK);
    assert_int_equal(row.added, 99);
    store_row_fini(&row);
}

static void free_rows(struct store_image_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_row_fini(&rows[i]);
    free(rows);
}

static void test_list_after(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    struct store_image_row *rows = NULL;
    size_t n = 0;
    assert_int_equal(store_list(f->st, STORE_ORDER_ID_AFTER, 0, 3, &rows, &n, &err), IMS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(rows[0].id, 1);
    assert_int_equal(rows[2].id, 3);
    int64_t last = rows[2].id;
    free_rows(rows, n);
    /* a row of the first page deleted: the next page does not shift */
    int64_t gone = 2;
    assert_int_equal(store_delete_many(f->st, &gone, 1, NULL, &err), IMS_OK);
    assert_int_equal(store_list(f->st, STORE_ORDER_ID_AFTER, last, 3, &rows, &n, &err), IMS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(rows[0].id, 4);
    assert_int_equal(rows[2].id, 6);
    assert_int_equal(rows[0].added, 1003);
    free_rows(rows, n);
    assert_int_equal(store_list(f->st, STORE_ORDER_ID_AFTER, 6, 3, &rows, &n, &err), IMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].id, 7);
    free_rows(rows, n);
    assert_int_equal(store_list(f->st, STORE_ORDER_ID_AFTER, 7, 3, &rows, &n, &err), IMS_OK);
    assert_int_equal(n, 0);
    free_rows(rows, n);
    assert_int_equal(store_list(f->st, (enum store_order)99, 0, 3, &rows, &n, &err),
                     IMS_ERR_INVALID);
}

int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sync_lock, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_set_details, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_list_after, setup, tu_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
