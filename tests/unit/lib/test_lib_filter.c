/* SPDX-License-Identifier: MIT */
/*
 * test_lib_filter.c: the search options and row members libimgsearch 1.0
 * added to its public header (linked against the shared library, through
 * include/imgsearch.h only): the taken / format / orientation / tag
 * filters (only matching rows, still k of them when k match), dedup
 * folding into `duplicates`, the row's taken, format and tags, tag edits
 * (imgsearch_tags_update), and the refusals (unknown format, too-long tag,
 * bad orientation or dedup: IMGSEARCH_ERR_INVALID with a message).
 *
 * The rows: the fixture images (tests/golden/clip/images) and one JPEG the
 * test writes with an EXIF DateTimeOriginal, so one row has a `taken`.
 */
#include <imgsearch.h>

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "lib_test_util.h"

static char exif_dir[300], exif_jpg[400];

/* A big-endian EXIF block: IFD0 holding only the Exif IFD pointer, whose
 * one entry is DateTimeOriginal "2000:02:29 23:59:59". */
static const unsigned char EXIF_MM[] = {
    'M', 'M', 0, 42, 0, 0, 0, 8,                /* header, IFD0 at 8 */
    0, 1,                                       /* 1 entry */
    0x87, 0x69, 0, 4, 0, 0, 0, 1, 0, 0, 0, 26,  /* Exif IFD at 26 */
    0, 0, 0, 0,                                 /* no next IFD */
    0, 1,                                       /* Exif IFD: 1 entry */
    0x90, 0x03, 0, 2, 0, 0, 0, 20, 0, 0, 0, 44, /* DateTimeOriginal ASCII[20] at 44 */
    0, 0, 0, 0,
    '2', '0', '0', '0', ':', '0', '2', ':', '2', '9', ' ', '2', '3', ':', '5', '9',
    ':', '5', '9', 0};

/* baseline.jpg with an APP1 Exif segment after its SOI */
static void write_exif_jpeg(void)
{
    char src[1200];
    snprintf(src, sizeof(src), "%s/baseline.jpg", lt_images);
    FILE *f = fopen(src, "rb");
    assert_non_null(f);
    static unsigned char buf[4 << 20];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    assert_true(n > 4 && buf[0] == 0xff && buf[1] == 0xd8);
    snprintf(exif_dir, sizeof(exif_dir), "%s/exif", lt_tmp);
    assert_int_equal(mkdir(exif_dir, 0700), 0);
    snprintf(exif_jpg, sizeof(exif_jpg), "%s/taken.jpg", exif_dir);
    f = fopen(exif_jpg, "wb");
    assert_non_null(f);
    size_t seg = 2 + 6 + sizeof(EXIF_MM);
    unsigned char head[10] = {0xff, 0xd8, 0xff, 0xe1, (unsigned char)(seg >> 8),
                              (unsigned char)(seg & 0xff), 'E', 'x', 'i', 'f'};
    static const unsigned char zz[2] = {0, 0};
    assert_int_equal(fwrite(head, 1, sizeof(head), f), sizeof(head));
    assert_int_equal(fwrite(zz, 1, 2, f), 2);
    assert_int_equal(fwrite(EXIF_MM, 1, sizeof(EXIF_MM), f), sizeof(EXIF_MM));
    assert_int_equal(fwrite(buf + 2, 1, n - 2, f), n - 2);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
    (void)state;
    lt_setup();
    write_exif_jpeg();
    /* the catalogue every test searches */
    struct imgsearch *is = lt_open(lt_data);
    struct imgsearch_error err;
    const char *src[] = {lt_images, exif_dir};
    struct imgsearch_add_summary sum;
    assert_int_equal(imgsearch_add(is, src, 2, &sum, &err), IMGSEARCH_OK);
    assert_true(sum.added >= 21);
    imgsearch_close(is);
    return 0;
}

static const struct imgsearch_term TEXT = {.kind = IMGSEARCH_TERM_TEXT, .weight = 1,
                                           .text = "a photo"};

/* Searches `f` with k; asserts success. */
static void search(struct imgsearch *is, const struct imgsearch_filter *f, int k,
                   struct imgsearch_results *res)
{
    struct imgsearch_query q = {.terms = &TEXT, .n_terms = 1, .k = k, .filter = f};
    struct imgsearch_error err;
    enum imgsearch_status st = imgsearch_search(is, &q, res, &err);
    if (st != IMGSEARCH_OK)
        fail_msg("search: %s", err.message);
}

static int is_format(const struct imgsearch_row *r, const char *a, const char *b)
{
    return r->format && (!strcmp(r->format, a) || (b && !strcmp(r->format, b)));
}

/* The filtered answer is the unfiltered ranking's matching rows, in order
 * (rows of equal score, e.g. one picture in two formats, may trade
 * places): all of them with a big k, the first k of them with a small one. */
static void check_filtered(struct imgsearch *is, const struct imgsearch_results *all,
                           const struct imgsearch_filter *f,
                           int (*match)(const struct imgsearch_row *r), size_t *n_match)
{
    size_t want = 0;
    int64_t want_ids[1000];
    float want_scores[1000];
    for (size_t i = 0; i < all->n; i++)
        if (match(&all->items[i].row)) {
            want_scores[want] = all->items[i].score;
            want_ids[want++] = all->items[i].row.id;
        }
    assert_true(want > 0 && want < all->n);
    struct imgsearch_results res;
    for (int pass = 0; pass < 2; pass++) {
        size_t k = pass ? want - 1 : want + 5;
        if (k == 0)
            break;
        search(is, f, (int)k, &res);
        assert_int_equal(res.n, pass ? k : want);
        for (size_t i = 0; i < res.n; i++) {
            assert_true(match(&res.items[i].row));
            if (res.items[i].row.id != want_ids[i])
                assert_true(fabsf(res.items[i].score - want_scores[i]) < 1e-5f);
            for (size_t j = 0; j < i; j++)
                assert_true(res.items[j].row.id != res.items[i].row.id);
        }
        imgsearch_results_free(&res);
    }
    *n_match = want;
}

static int m_png(const struct imgsearch_row *r) { return is_format(r, "png", NULL); }
static int m_jpeg_webp(const struct imgsearch_row *r) { return is_format(r, "jpeg", "webp"); }
static int m_portrait(const struct imgsearch_row *r) { return r->height > r->width; }
static int m_taken(const struct imgsearch_row *r) { return r->has_taken; }
static int m_png_landscape(const struct imgsearch_row *r)
{
    return is_format(r, "png", NULL) && r->width > r->height;
}

static void test_filters(void **state)
{
    (void)state;
    struct imgsearch *is = lt_open(lt_data);
    struct imgsearch_results all;
    search(is, NULL, 1000, &all);
    int64_t n = 0;
    assert_int_equal(imgsearch_count(is, &n, NULL), IMGSEARCH_OK);
    assert_int_equal(all.n, (size_t)n);

    /* the row's format and taken: the EXIF JPEG has one, the others none */
    int64_t taken_id = 0, taken = 0;
    for (size_t i = 0; i < all.n; i++) {
        const struct imgsearch_row *r = &all.items[i].row;
        assert_non_null(r->format);
        if (!strcmp(r->source, exif_jpg)) {
            assert_true(r->has_taken);
            assert_string_equal(r->format, "jpeg");
            taken_id = r->id;
            taken = r->taken;
        } else {
            assert_false(r->has_taken);
        }
    }
    assert_true(taken_id > 0);
    /* 2000-02-29 23:59:59 (as a UTC or a local time: within a day) */
    assert_true(llabs((long long)taken - 951868799LL) <= 14 * 3600);

    size_t m;
    const char *png[] = {"PNG"}; /* any case */
    struct imgsearch_filter f = {.formats = png, .n_formats = 1};
    check_filtered(is, &all, &f, m_png, &m);
    const char *jw[] = {"jpg", "webp"};
    f = (struct imgsearch_filter){.formats = jw, .n_formats = 2};
    check_filtered(is, &all, &f, m_jpeg_webp, &m);
    f = (struct imgsearch_filter){.orientation = IMGSEARCH_ORIENT_PORTRAIT};
    check_filtered(is, &all, &f, m_portrait, &m);
    f = (struct imgsearch_filter){.formats = png, .n_formats = 1,
                                  .orientation = IMGSEARCH_ORIENT_LANDSCAPE};
    check_filtered(is, &all, &f, m_png_landscape, &m);
    f = (struct imgsearch_filter){.taken_from = 1};
    check_filtered(is, &all, &f, m_taken, &m);
    assert_int_equal(m, 1);

    /* a taken range around the row's time, and one beside it */
    struct imgsearch_results res;
    f = (struct imgsearch_filter){.taken_from = taken, .taken_to = taken};
    search(is, &f, 10, &res);
    assert_int_equal(res.n, 1);
    assert_int_equal(res.items[0].row.id, taken_id);
    imgsearch_results_free(&res);
    f = (struct imgsearch_filter){.taken_from = taken + 1};
    search(is, &f, 10, &res);
    assert_int_equal(res.n, 0);
    imgsearch_results_free(&res);

    /* refusals: the member named, nothing searched */
    struct imgsearch_error err;
    struct imgsearch_query q = {.terms = &TEXT, .n_terms = 1, .k = 5, .filter = &f};
    const char *bad[] = {"jpeg", "raw"};
    f = (struct imgsearch_filter){.formats = bad, .n_formats = 2};
    err.message[0] = 0;
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_ERR_INVALID);
    assert_non_null(strstr(err.message, "filter.formats[1]"));
    assert_non_null(strstr(err.message, "'raw'"));
    f = (struct imgsearch_filter){.formats = NULL, .n_formats = 1};
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_ERR_INVALID);
    assert_non_null(strstr(err.message, "filter.formats"));
    f = (struct imgsearch_filter){.orientation = (enum imgsearch_orientation)7};
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_ERR_INVALID);
    assert_non_null(strstr(err.message, "filter.orientation"));
    char longtag[80];
    memset(longtag, 'x', 65);
    longtag[65] = 0;
    const char *lt[] = {"ok", longtag};
    f = (struct imgsearch_filter){.tags = lt, .n_tags = 2};
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_ERR_INVALID);
    assert_non_null(strstr(err.message, "filter.tags[1]"));
    f = (struct imgsearch_filter){0};
    q.dedup = 1.5f;
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_ERR_INVALID);
    assert_non_null(strstr(err.message, "dedup"));
    q.dedup = NAN;
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_ERR_INVALID);
    imgsearch_results_free(&all);
    imgsearch_close(is);
}

static void test_dedup(void **state)
{
    (void)state;
    struct imgsearch *is = lt_open(lt_data);
    struct imgsearch_results all, res;
    search(is, NULL, 1000, &all);
    assert_true(all.n >= 6);
    int64_t x = all.items[0].row.id;
    imgsearch_results_free(&all);

    /* "more like x": p first (x, or a row of the same embedding), then y
     * at cos(p, y) */
    struct imgsearch_term like = {.kind = IMGSEARCH_TERM_IMAGE_ID, .weight = 1, .image_id = x};
    struct imgsearch_query q = {.terms = &like, .n_terms = 1, .k = 3};
    struct imgsearch_error err;
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_OK);
    assert_int_equal(res.n, 3);
    assert_true(res.items[0].score > 0.999f);
    for (size_t i = 0; i < res.n; i++) {
        assert_null(res.items[i].duplicates);
        assert_int_equal(res.items[i].n_duplicates, 0);
    }
    int64_t p = res.items[0].row.id, y = res.items[1].row.id;
    float s2 = res.items[1].score;
    imgsearch_results_free(&res);
    assert_true(s2 > 0.01f);

    /* a threshold just under cos(x, y): y folds into x; still k kept */
    q.dedup = fminf(s2, 1.0f) - 0.005f;
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_OK);
    assert_int_equal(res.n, 3);
    assert_int_equal(res.items[0].row.id, p);
    assert_true(res.items[0].n_duplicates >= 1);
    assert_int_equal(res.items[0].duplicates[0], y);
    for (size_t i = 0; i < res.n; i++) {
        assert_true(res.items[i].row.id != y);
        for (size_t j = 0; j < res.items[i].n_duplicates; j++)
            for (size_t l = 0; l < res.n; l++)
                assert_true(res.items[i].duplicates[j] != res.items[l].row.id);
    }
    imgsearch_results_free(&res);
    imgsearch_close(is);
}

static void test_tags(void **state)
{
    (void)state;
    struct imgsearch *is = lt_open(lt_data);
    struct imgsearch_results all, res;
    search(is, NULL, 1000, &all);
    assert_true(all.n >= 3);
    int64_t a = all.items[0].row.id, b = all.items[2].row.id;
    assert_int_equal(all.items[0].row.n_tags, 0);
    assert_null(all.items[0].row.tags);
    imgsearch_results_free(&all);

    struct imgsearch_error err;
    struct imgsearch_row row;
    const char *add1[] = {"Trip", " beach "};
    assert_int_equal(imgsearch_tags_update(is, a, add1, 2, NULL, 0, &err), IMGSEARCH_OK);
    assert_int_equal(imgsearch_get(is, a, &row, &err), IMGSEARCH_OK);
    assert_int_equal(row.n_tags, 2);
    assert_string_equal(row.tags[0], "beach"); /* trimmed, ordered case-insensitively */
    assert_string_equal(row.tags[1], "Trip");
    imgsearch_row_free(&row);
    assert_null(row.tags);
    const char *add2[] = {"TRIP"}, *rm2[] = {"BEACH", "absent"};
    assert_int_equal(imgsearch_tags_update(is, a, add2, 1, rm2, 2, &err), IMGSEARCH_OK);
    const char *add3[] = {"trip", "sea"};
    assert_int_equal(imgsearch_tags_update(is, b, add3, 2, NULL, 0, &err), IMGSEARCH_OK);
    assert_int_equal(imgsearch_get(is, a, &row, &err), IMGSEARCH_OK);
    assert_int_equal(row.n_tags, 1);
    assert_string_equal(row.tags[0], "TRIP"); /* the new spelling */
    imgsearch_row_free(&row);

    /* a tag filter: the rows carrying every tag; their tags on the results */
    const char *t1[] = {"tRiP"};
    struct imgsearch_filter f = {.tags = t1, .n_tags = 1};
    search(is, &f, 1000, &res);
    assert_int_equal(res.n, 2);
    for (size_t i = 0; i < res.n; i++) {
        assert_true(res.items[i].row.id == a || res.items[i].row.id == b);
        assert_true(res.items[i].row.n_tags >= 1);
        int has = 0;
        for (size_t j = 0; j < res.items[i].row.n_tags; j++)
            has |= !strcasecmp(res.items[i].row.tags[j], "trip");
        assert_true(has);
    }
    imgsearch_results_free(&res);
    search(is, &f, 1, &res);
    assert_int_equal(res.n, 1);
    imgsearch_results_free(&res);
    const char *t2[] = {"trip", "sea"};
    f = (struct imgsearch_filter){.tags = t2, .n_tags = 2};
    search(is, &f, 1000, &res);
    assert_int_equal(res.n, 1);
    assert_int_equal(res.items[0].row.id, b);
    assert_int_equal(res.items[0].row.n_tags, 2);
    imgsearch_results_free(&res);

    /* refusals: nothing changed */
    char longtag[80];
    memset(longtag, 'x', 65);
    longtag[65] = 0;
    const char *bad[] = {"fine", longtag};
    err.message[0] = 0;
    assert_int_equal(imgsearch_tags_update(is, a, bad, 2, NULL, 0, &err), IMGSEARCH_ERR_INVALID);
    assert_true(strlen(err.message) > 0);
    const char *many[65];
    for (int i = 0; i < 65; i++)
        many[i] = "t";
    assert_int_equal(imgsearch_tags_update(is, a, many, 65, NULL, 0, &err),
                     IMGSEARCH_ERR_INVALID);
    assert_non_null(strstr(err.message, "add"));
    const char *withnull[] = {"ok", NULL};
    assert_int_equal(imgsearch_tags_update(is, a, NULL, 0, withnull, 2, &err),
                     IMGSEARCH_ERR_INVALID);
    assert_non_null(strstr(err.message, "remove[1]"));
    assert_int_equal(imgsearch_tags_update(is, 999999, add2, 1, NULL, 0, &err),
                     IMGSEARCH_ERR_NOT_FOUND);
    assert_non_null(strstr(err.message, "999999"));
    assert_int_equal(imgsearch_get(is, a, &row, &err), IMGSEARCH_OK);
    assert_int_equal(row.n_tags, 1);
    assert_string_equal(row.tags[0], "TRIP");
    imgsearch_row_free(&row);
    imgsearch_close(is);

    /* kept in the catalogue: a new handle reads them */
    is = lt_open(lt_data);
    assert_int_equal(imgsearch_get(is, b, &row, &err), IMGSEARCH_OK);
    assert_int_equal(row.n_tags, 2);
    assert_string_equal(row.tags[0], "sea");
    assert_string_equal(row.tags[1], "trip");
    imgsearch_row_free(&row);
    imgsearch_close(is);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_dedup),
        cmocka_unit_test(test_tags),
    };
    return cmocka_run_group_tests(tests, setup, lt_group_teardown);
}
