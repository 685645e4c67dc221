/* SPDX-License-Identifier: MIT */
/*
 * test_sync_plan.c: the folder sync's planner (sync_plan), a pure function
 * of the catalogue rows under a folder and the folder's listing: unchanged
 * state keeps a row without reading, a different or missing state asks for
 * the hash, files without rows are new, rows without files are gone; the
 * steps come in path order; unsorted input is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imgsearch/sync.h"

static struct store_file_row row(int64_t id, const char *src, int state, int64_t size,
                                 int64_t mtime)
{
    struct store_file_row r;
    memset(&r, 0, sizeof(r));
    r.id = id;
    r.source = (char *)src;
    r.has_sha256 = 1;
    r.has_file_state = state;
    r.file_size = size;
    r.file_mtime_ns = mtime;
    return r;
}

static void test_plan_actions(void **state)
{
    (void)state;
    struct store_file_row rows[] = {
        row(1, "/f/a.jpg", 1, 10, 100),     /* same: keep */
        row(2, "/f/b.jpg", 1, 10, 100),     /* mtime differs: check */
        row(3, "/f/c.jpg", 1, 10, 100),     /* size differs: check */
        row(4, "/f/d.jpg", 0, 0, 0),        /* never synced: check */
        row(5, "/f/gone.jpg", 1, 5, 5),     /* no file: gone */
        row(6, "/f/sub/x.jpg", 1, 1, 1),    /* folder removed: gone */
    };
    struct sync_file files[] = {
        {"/f/a.jpg", 10, 100}, {"/f/b.jpg", 10, 101}, {"/f/c.jpg", 11, 100},
        {"/f/d.jpg", 10, 100}, {"/f/new.jpg", 7, 7},  {"/f/z.png", 3, 3},
    };
    struct sync_step *s = NULL;
    size_t n = 0;
    struct ims_error err = {0};
    assert_int_equal(sync_plan(rows, 6, files, 6, &s, &n, &err), IMS_OK);
    assert_int_equal(n, 8);
    const struct {
        enum sync_action a;
        size_t file, row;
    } want[] = {
        {SYNC_KEEP, 0, 0},          {SYNC_CHECK, 1, 1},         {SYNC_CHECK, 2, 2},
        {SYNC_CHECK, 3, 3},         {SYNC_GONE, SYNC_NONE, 4},  {SYNC_NEW, 4, SYNC_NONE},
        {SYNC_GONE, SYNC_NONE, 5},  {SYNC_NEW, 5, SYNC_NONE},
    };
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(s[i].action, want[i].a);
        assert_int_equal(s[i].file, want[i].file);
        assert_int_equal(s[i].row, want[i].row);
    }
    ims_free(s);
}

static void test_plan_empty_sides(void **state)
{
    (void)state;
    struct store_file_row rows[] = {row(1, "/f/a.jpg", 1, 1, 1), row(2, "/f/b.jpg", 1, 1, 1)};
    struct sync_file files[] = {{"/f/a.jpg", 1, 1}};
    struct sync_step *s = NULL;
    size_t n = 0;
    struct ims_error err = {0};
    /* everything gone (an emptied folder) */
    assert_int_equal(sync_plan(rows, 2, NULL, 0, &s, &n, &err), IMS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(s[0].action, SYNC_GONE);
    assert_int_equal(s[1].action, SYNC_GONE);
    ims_free(s);
    /* everything new (first sync) */
    assert_int_equal(sync_plan(NULL, 0, files, 1, &s, &n, &err), IMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(s[0].action, SYNC_NEW);
    ims_free(s);
    assert_int_equal(sync_plan(NULL, 0, NULL, 0, &s, &n, &err), IMS_OK);
    assert_int_equal(n, 0);
    assert_null(s);
}

static void test_plan_prefix_order(void **state)
{
    (void)state;
    /* "/f/a/x" sorts after "/f/a.jpg" and before "/f/ab" byte-wise; a row
     * and a file that differ only there are different paths */
    struct store_file_row rows[] = {row(1, "/f/a.jpg", 1, 1, 1), row(2, "/f/a/x.jpg", 1, 1, 1)};
    struct sync_file files[] = {{"/f/a/x.jpg", 1, 1}, {"/f/ab.jpg", 1, 1}};
    struct sync_step *s = NULL;
    size_t n = 0;
    struct ims_error err = {0};
    assert_int_equal(sync_plan(rows, 2, files, 2, &s, &n, &err), IMS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(s[0].action, SYNC_GONE);
    assert_int_equal(s[0].row, 0);
    assert_int_equal(s[1].action, SYNC_KEEP);
    assert_int_equal(s[2].action, SYNC_NEW);
    assert_int_equal(s[2].file, 1);
    ims_free(s);
}

static void test_plan_unsorted(void **state)
{
    (void)state;
    struct store_file_row rows[] = {row(1, "/f/b.jpg", 1, 1, 1), row(2, "/f/a.jpg", 1, 1, 1)};
    struct sync_file files[] = {{"/f/b.jpg", 1, 1}, {"/f/b.jpg", 1, 1}};
    struct sync_step *s = NULL;
    size_t n = 0;
    struct ims_error err = {0};
    assert_int_equal(sync_plan(rows, 2, NULL, 0, &s, &n, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "rows not sorted"));
    assert_int_equal(sync_plan(NULL, 0, files, 2, &s, &n, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "files not sorted"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_actions),
        cmocka_unit_test(test_plan_empty_sides),
        cmocka_unit_test(test_plan_prefix_order),
        cmocka_unit_test(test_plan_unsorted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
