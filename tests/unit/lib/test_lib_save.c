/* SPDX-License-Identifier: MIT */
/*
 * test_lib_save.c: the library calls the command line needed to open and
 * close folders through libimgsearch: imgsearch_open_flags
 * (IMGSEARCH_OPEN_EXISTING: nothing is created) and imgsearch_save (the
 * index snapshot written on request, never by imgsearch_close), and that
 * the tree-private imgsearch__* calls the CLI uses are not exported.
 * Public header only, linked against the shared library.
 */
#include <imgsearch.h>

#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "lib_test_util.h"

static char snap[400], seqf[400];

static int setup(void **state)
{
    (void)state;
    lt_setup();
    snprintf(snap, sizeof(snap), "%s/index.snap", lt_data);
    snprintf(seqf, sizeof(seqf), "%s/index.seq", lt_data);
    return 0;
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* the change seq index.seq records ("imgsearch index.seq 1\nseq N\n..."), or -1 */
static long long snapshot_seq(void)
{
    FILE *f = fopen(seqf, "r");
    long long v = -1;
    if (f) {
        if (fscanf(f, "imgsearch index.seq 1 seq %lld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static void test_open_existing(void **state)
{
    (void)state;
    struct imgsearch_params p;
    lt_params(&p);
    struct imgsearch *is = NULL;
    struct imgsearch_error err;
    /* a folder that is not there stays not there */
    assert_int_equal(imgsearch_open_flags(lt_data, &p, IMGSEARCH_OPEN_EXISTING, &is, &err),
                     IMGSEARCH_ERR_NOT_FOUND);
    assert_null(is);
    assert_true(err.message[0] != '\0');
    char cat[400];
    snprintf(cat, sizeof(cat), "%s/catalogue.db", lt_data);
    assert_false(exists(cat));
    /* unknown flags are refused, not ignored */
    assert_int_equal(imgsearch_open_flags(lt_data, &p, 1u << 7, &is, &err), IMGSEARCH_ERR_INVALID);
    assert_null(is);
    assert_false(exists(cat));
    /* flags 0 is imgsearch_open: the folder is created */
    assert_int_equal(imgsearch_open_flags(lt_data, &p, 0, &is, &err), IMGSEARCH_OK);
    imgsearch_close(is);
    assert_true(exists(cat));
    is = NULL;
    assert_int_equal(imgsearch_open_flags(lt_data, &p, IMGSEARCH_OPEN_EXISTING, &is, &err),
                     IMGSEARCH_OK);
    int64_t n = -1;
    assert_int_equal(imgsearch_count(is, &n, &err), IMGSEARCH_OK);
    assert_int_equal(n, 0);
    imgsearch_close(is);
}

static void test_save(void **state)
{
    (void)state;
    struct imgsearch_params p;
    lt_params(&p);
    struct imgsearch *is = lt_open(lt_data);
    struct imgsearch_error err;
    int64_t added = lt_add_images(is);
    imgsearch_close(is);
    /* close never writes the snapshot */
    assert_false(exists(snap));

    assert_int_equal(imgsearch_open(lt_data, &p, &is, &err), IMGSEARCH_OK);
    assert_int_equal(imgsearch_save(is, &err), IMGSEARCH_OK);
    assert_true(exists(snap));
    long long seq1 = snapshot_seq();
    assert_true(seq1 > 0);
    /* a removal moves the feed on; the next save covers it */
    struct imgsearch_term t = {.kind = IMGSEARCH_TERM_TEXT, .weight = 1, .text = "a photo"};
    struct imgsearch_query q = {.terms = &t, .n_terms = 1, .k = 1};
    struct imgsearch_results res;
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_OK);
    assert_int_equal(res.n, 1);
    int64_t gone = res.items[0].row.id;
    imgsearch_results_free(&res);
    assert_int_equal(imgsearch_remove(is, gone, &err), IMGSEARCH_OK);
    assert_int_equal(imgsearch_save(is, &err), IMGSEARCH_OK);
    long long seq2 = snapshot_seq();
    assert_true(seq2 > seq1);
    imgsearch_close(is);

    /* the reopened handle starts from that snapshot: the row stays gone */
    assert_int_equal(imgsearch_open_flags(lt_data, &p, IMGSEARCH_OPEN_EXISTING, &is, &err),
                     IMGSEARCH_OK);
    q.k = 1000;
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_OK);
    assert_int_equal(res.n, (size_t)added - 1);
    for (size_t i = 0; i < res.n; i++)
        assert_true(res.items[i].row.id != gone);
    imgsearch_results_free(&res);
    imgsearch_close(is);
    assert_int_equal(snapshot_seq(), seq2);
}

/* include/imgsearch.h is the whole ABI: the calls libimgsearch_int.h gives
 * the command line are not in the shared library's dynamic symbols */
static void test_private_not_exported(void **state)
{
    (void)state;
    assert_non_null(dlsym(RTLD_DEFAULT, "imgsearch_save"));
    assert_non_null(dlsym(RTLD_DEFAULT, "imgsearch_open_flags"));
    assert_null(dlsym(RTLD_DEFAULT, "imgsearch__open"));
    assert_null(dlsym(RTLD_DEFAULT, "imgsearch__search"));
    assert_null(dlsym(RTLD_DEFAULT, "replica_open"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_existing),
        cmocka_unit_test(test_save),
        cmocka_unit_test(test_private_not_exported),
    };
    return cmocka_run_group_tests(tests, setup, lt_group_teardown);
}
