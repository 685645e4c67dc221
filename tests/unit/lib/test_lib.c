/* SPDX-License-Identifier: MIT */
/*
 * test_lib.c: libimgsearch through its public header only (linked against
 * the shared library): refusals, a folder's life (open, add, search with
 * filters, rows, thumbnails, embeddings, remove, reopen), and searches from
 * several threads on one handle.
 *
 * The tiny CLIP model (tests/golden/clip/tiny + the bundled vocabulary) is
 * copied into a temporary folder (lib_test_util.c); the fixture images are
 * the sources.
 */
#include <imgsearch.h>

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib_test_util.h"

static void test_refusals(void **state)
{
    (void)state;
    struct imgsearch *is = NULL;
    struct imgsearch_error err;
    struct imgsearch_params p;
    lt_params(&p);
    assert_int_equal(imgsearch_open(NULL, &p, &is, &err), IMGSEARCH_ERR_INVALID);
    /* postgresql:// opens a catalogue (test_lib_pg); other schemes are
     * refused, never taken for a folder */
    assert_int_equal(imgsearch_open("mysql://u@h/db", &p, &is, &err),
                     IMGSEARCH_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.message, "postgresql://"));
    assert_null(is);
    unsetenv("IMGSEARCH_MODEL");
    p.model_dir = NULL;
    assert_int_equal(imgsearch_open(lt_data, &p, &is, &err), IMGSEARCH_ERR_INVALID);
    assert_non_null(strstr(err.message, "model"));
    char nowhere[400];
    snprintf(nowhere, sizeof(nowhere), "%s/nowhere", lt_tmp);
    p.model_dir = nowhere;
    assert_int_not_equal(imgsearch_open(lt_data, &p, &is, NULL), IMGSEARCH_OK);
    assert_null(is);
    assert_string_equal(imgsearch_status_name(IMGSEARCH_ERR_MODEL_MISMATCH), "model_mismatch");
    assert_string_equal(imgsearch_version(), "1.0.0");
    imgsearch_close(NULL);
    imgsearch_free(NULL);
}

static void test_folder_life(void **state)
{
    (void)state;
    struct imgsearch *is = lt_open(lt_data);
    struct imgsearch_error err;
    int dim = imgsearch_dim(is);
    assert_true(dim > 0);
    int64_t added = lt_add_images(is);
    int64_t n = 0;
    assert_int_equal(imgsearch_count(is, &n, &err), IMGSEARCH_OK);
    assert_int_equal(n, added);

    /* a text query: scores are the cosine of the text's embedding */
    float *t = malloc((size_t)dim * sizeof(float)), *e = malloc((size_t)dim * sizeof(float));
    assert_int_equal(imgsearch_embed_text(is, "a red square", t, &err), IMGSEARCH_OK);
    struct imgsearch_term term = {.kind = IMGSEARCH_TERM_TEXT, .weight = 1, .text = "a red square"};
    struct imgsearch_query q = {.terms = &term, .n_terms = 1, .k = 5};
    struct imgsearch_results res;
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_OK);
    assert_int_equal(res.n, 5);
    for (size_t i = 1; i < res.n; i++)
        assert_true(res.items[i - 1].score >= res.items[i].score);
    int64_t best = res.items[0].row.id;
    char best_src[1024];
    snprintf(best_src, sizeof(best_src), "%s", res.items[0].row.source);
    imgsearch_results_free(&res);
    assert_null(res.items);

    /* the best row's own image, read back from its file, scores ~1 */
    FILE *f = fopen(best_src, "rb");
    assert_non_null(f);
    static unsigned char buf[8 << 20];
    size_t nb = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    assert_int_equal(imgsearch_embed_image(is, buf, nb, e, &err), IMGSEARCH_OK);
    struct imgsearch_term vt = {.kind = IMGSEARCH_TERM_VECTOR, .weight = 1, .vector = e,
                                .n_vector = (size_t)dim};
    struct imgsearch_query qv = {.terms = &vt, .n_terms = 1, .k = 1};
    assert_int_equal(imgsearch_search(is, &qv, &res, &err), IMGSEARCH_OK);
    assert_int_equal(res.items[0].row.id, best);
    assert_true(fabsf(res.items[0].score - 1.0f) < 1e-3f);
    imgsearch_results_free(&res);
    vt.n_vector = 3;
    assert_int_equal(imgsearch_search(is, &qv, &res, &err), IMGSEARCH_ERR_INVALID);

    /* filters: at least 200 px wide, under the fixture folder */
    char prefix[1100];
    snprintf(prefix, sizeof(prefix), "%s/", lt_images);
    struct imgsearch_filter flt = {.min_width = 200, .source_prefix = prefix};
    q.k = 1000;
    q.filter = &flt;
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_OK);
    assert_true(res.n > 0 && res.n < (size_t)n);
    for (size_t i = 0; i < res.n; i++)
        assert_true(res.items[i].row.width >= 200);
    size_t n_wide = res.n;
    imgsearch_results_free(&res);
    q.offset = 1;
    q.k = 2;
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_OK);
    assert_int_equal(res.n, n_wide >= 3 ? 2 : n_wide - 1);
    imgsearch_results_free(&res);

    /* rows and thumbnails */
    struct imgsearch_row row;
    assert_int_equal(imgsearch_get(is, best, &row, &err), IMGSEARCH_OK);
    assert_string_equal(row.source, best_src);
    assert_true(row.width > 0 && row.height > 0);
    imgsearch_row_free(&row);
    void *jpeg = NULL;
    size_t nj = 0;
    assert_int_equal(imgsearch_thumbnail(is, best, &jpeg, &nj, &err), IMGSEARCH_OK);
    assert_true(nj > 2 && ((unsigned char *)jpeg)[0] == 0xff && ((unsigned char *)jpeg)[1] == 0xd8);
    imgsearch_free(jpeg);

    /* remove: gone from rows and from results */
    assert_int_equal(imgsearch_remove(is, best, &err), IMGSEARCH_OK);
    assert_int_equal(imgsearch_get(is, best, &row, &err), IMGSEARCH_ERR_NOT_FOUND);
    assert_int_equal(imgsearch_remove(is, best, &err), IMGSEARCH_ERR_NOT_FOUND);
    q.filter = NULL;
    q.offset = 0;
    q.k = 1000;
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_OK);
    assert_int_equal(res.n, (size_t)n - 1);
    for (size_t i = 0; i < res.n; i++)
        assert_true(res.items[i].row.id != best);
    imgsearch_results_free(&res);
    imgsearch_close(is);

    /* reopened: the same rows, the removal kept; adding again finds duplicates */
    is = lt_open(lt_data);
    assert_int_equal(imgsearch_count(is, &n, &err), IMGSEARCH_OK);
    assert_int_equal(n, added - 1);
    const char *src[] = {lt_images};
    struct imgsearch_add_summary sum;
    assert_int_equal(imgsearch_add(is, src, 1, &sum, &err), IMGSEARCH_OK);
    assert_int_equal(sum.added, 1); /* the removed one comes back */
    imgsearch_close(is);
    free(t);
    free(e);
}

struct worker {
    struct imgsearch *is;
    int ok;
};

static void *search_worker(void *arg)
{
    struct worker *w = arg;
    static const char *const texts[] = {"a cat", "a dog", "a tree", "the sea"};
    w->ok = 1;
    for (int i = 0; i < 20; i++) {
        struct imgsearch_term t = {.kind = IMGSEARCH_TERM_TEXT, .weight = 1, .text = texts[i % 4]};
        struct imgsearch_query q = {.terms = &t, .n_terms = 1, .k = 3};
        struct imgsearch_results res;
        if (imgsearch_search(w->is, &q, &res, NULL) != IMGSEARCH_OK || res.n != 3)
            w->ok = 0;
        else
            imgsearch_results_free(&res);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct imgsearch *is = lt_open(lt_data);
    pthread_t th[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i].is = is;
        assert_int_equal(pthread_create(&th[i], NULL, search_worker, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(w[i].ok);
    }
    imgsearch_close(is);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_folder_life),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, lt_group_setup, lt_group_teardown);
}
