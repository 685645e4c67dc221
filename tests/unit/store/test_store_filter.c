/* SPDX-License-Identifier: MIT */
/*
 * test_store_filter.c: store_filter_ids (issue 10), on SQLite and, with the
 * argument "pg", on PostgreSQL: each member of the filter alone and combined
 * over rows of known added time, EXIF taken time (metadata), size, format
 * and source; rows without "taken", or with a non-numeric one, never match a
 * taken range; an empty filter matches everything.
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

/* id i (1..8): source, format, w x h, added, metadata */
static const struct {
    const char *source, *format;
    uint32_t w, h;
    int64_t added;
    const char *meta;
} ROWS[] = {
    {"/photos/2024/a.heic", "heic", 4032, 3024, 1000, "{\"taken\":1715949000,\"exif\":{}}"},
    {"/photos/2024/b.jpg", "jpeg", 3024, 4032, 2000, "{\"taken\":1715000000}"},
    {"/photos/2023/c.jpg", "jpeg", 1000, 1000, 3000, "{\"taken\":1680000000}"},
    {"/scans/d.tif", "tiff", 2000, 1500, 4000, NULL},
    {"/scans/e.png", "png", 640, 480, 5000, "{\"taken\":\"yesterday\"}"},
    {"https://example.org/f.avif", "avif", 800, 1200, 6000, "{\"other\":1}"},
    {"/photos/2024/g.webp", "webp", 300, 200, 7000, "{\"taken\":1716000000}"},
    {"/photos/2024_h.gif", "gif", 50, 50, 8000, NULL},
};
#define N_ROWS ((int)(sizeof(ROWS) / sizeof(ROWS[0])))

static void fill(struct tu_fx *f)
{
    struct ims_error err = {0};
    if (store_open_catalogue(f->url, f->dir, &tu_model_a, STORE_OPEN_SYNC_NORMAL, &f->st, &err) !=
        IMS_OK)
        fail_msg("open: %s", err.message);
    for (int i = 0; i < N_ROWS; i++) {
        float vec[DIM];
        uint8_t h[32];
        tu_vec(vec, DIM, (uint64_t)i + 1);
        tu_hash(h, (uint64_t)i + 1);
        struct store_new_image r = {.source = ROWS[i].source, .sha256 = h,
                                    .format = ROWS[i].format, .width = ROWS[i].w,
                                    .height = ROWS[i].h, .added = ROWS[i].added,
                                    .metadata = ROWS[i].meta, .embedding = vec, .dim = DIM};
        struct store_insert_result res;
        if (store_insert_many(f->st, &r, 1, &res, &err) != IMS_OK)
            fail_msg("insert: %s", err.message);
        assert_int_equal(res.id, i + 1);
    }
}

/* The ids matching f as a bit set over 1..8. */
static unsigned match(struct store *st, const struct store_filter *flt)
{
    int64_t *ids = NULL;
    size_t n = 0;
    struct ims_error err = {0};
    if (store_filter_ids(st, flt, &ids, &n, &err) != IMS_OK)
        fail_msg("store_filter_ids: %s", err.message);
    unsigned set = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(ids[i] >= 1 && ids[i] <= N_ROWS);
        if (i)
            assert_true(ids[i] > ids[i - 1]);
        set |= 1u << (ids[i] - 1);
    }
    ims_free(ids);
    return set;
}

#define B(i) (1u << ((i) - 1))

static void test_filters(void **state)
{
    struct tu_fx *f = *state;
    fill(f);
    struct store_filter flt;
    memset(&flt, 0, sizeof(flt));
    assert_int_equal(match(f->st, &flt), 0xFFu);

    flt.has_added_from = 1, flt.added_from = 2000;
    flt.has_added_to = 1, flt.added_to = 4000;
    assert_int_equal(match(f->st, &flt), B(2) | B(3) | B(4));
    memset(&flt, 0, sizeof(flt));

    flt.has_taken_from = 1, flt.taken_from = 1715000000;
    assert_int_equal(match(f->st, &flt), B(1) | B(2) | B(7));
    flt.has_taken_to = 1, flt.taken_to = 1715949000;
    assert_int_equal(match(f->st, &flt), B(1) | B(2));
    memset(&flt, 0, sizeof(flt));
    flt.has_taken_to = 1, flt.taken_to = 1700000000;
    assert_int_equal(match(f->st, &flt), B(3));
    memset(&flt, 0, sizeof(flt));

    flt.min_width = 1000;
    assert_int_equal(match(f->st, &flt), B(1) | B(2) | B(3) | B(4));
    flt.min_height = 1500;
    assert_int_equal(match(f->st, &flt), B(1) | B(2) | B(4));
    memset(&flt, 0, sizeof(flt));

    flt.formats = "jpeg,heic";
    assert_int_equal(match(f->st, &flt), B(1) | B(2) | B(3));
    flt.formats = "avif";
    assert_int_equal(match(f->st, &flt), B(6));
    flt.formats = "peg"; /* whole words only */
    assert_int_equal(match(f->st, &flt), 0u);
    memset(&flt, 0, sizeof(flt));

    flt.orientation = STORE_ORIENT_LANDSCAPE;
    assert_int_equal(match(f->st, &flt), B(1) | B(4) | B(5) | B(7));
    flt.orientation = STORE_ORIENT_PORTRAIT;
    assert_int_equal(match(f->st, &flt), B(2) | B(6));
    flt.orientation = STORE_ORIENT_SQUARE;
    assert_int_equal(match(f->st, &flt), B(3) | B(8));
    memset(&flt, 0, sizeof(flt));

    flt.source_prefix = "/photos/2024/";
    assert_int_equal(match(f->st, &flt), B(1) | B(2) | B(7));
    flt.source_prefix = "/photos/2024%"; /* no LIKE pattern: bytes */
    assert_int_equal(match(f->st, &flt), 0u);
    flt.source_prefix = "/photos/2024";
    assert_int_equal(match(f->st, &flt), B(1) | B(2) | B(7) | B(8));

    /* combined: 2024 folder, landscape, taken after 2024-05-01 */
    flt.orientation = STORE_ORIENT_LANDSCAPE;
    flt.has_taken_from = 1, flt.taken_from = 1714521600;
    assert_int_equal(match(f->st, &flt), B(1) | B(7));
    flt.formats = "webp";
    assert_int_equal(match(f->st, &flt), B(7));

    struct ims_error err = {0};
    int64_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(store_filter_ids(f->st, NULL, &ids, &n, &err), IMS_ERR_INVALID);
}

int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_filters, tu_fx_setup, tu_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
