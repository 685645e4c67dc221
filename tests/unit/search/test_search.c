/* SPDX-License-Identifier: MIT */
/*
 * test_search.c: query execution over a real catalogue and index with the
 * tiny model: fusion arithmetic (checked against embeddings computed here),
 * paging, min_score, date order, deleted rows, the text cache, and every
 * kind of bad term.
 *
 * The catalogue holds synthetic rows whose embeddings are known unit
 * vectors, so expected rankings are computed in the test by brute force.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgsearch/search.h"
#include "search_int.h"
#include "unit_fx.h"

#define N_ROWS 200

struct fixture {
    char dir[256];
    char model_dir[300];
    struct clip_model *model;
    struct store *store;
    struct vindex *vx;
    struct search_engine *se;
    int dim;
    float *vecs; /* (N_ROWS, dim) normalised */
    int64_t ids[N_ROWS];
};

static uint64_t rng_state = 42;
static float gauss(void)
{
    return ufx_gauss(&rng_state);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/ims_test_search_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->model_dir, sizeof(f->model_dir), "%s/model", f->dir);
    ufx_copy_tiny_model(f->model_dir);
    struct ims_error err = {0};
    assert_int_equal(clip_model_load(f->model_dir, NULL, &f->model, &err), IMS_OK);
    f->dim = clip_model_embed_dim(f->model);
    char data[300];
    snprintf(data, sizeof(data), "%s/data", f->dir);
    struct store_model_info mi = {clip_model_name(f->model), (uint32_t)f->dim};
    assert_int_equal(store_open(data, &mi, STORE_OPEN_SYNC_NORMAL, &f->store, &err), IMS_OK);
    assert_int_equal(vindex_new("Flat", f->dim, &f->vx, &err), IMS_OK);

    /* N_ROWS synthetic rows: random unit vectors, added times increasing
     * with a twist so that date order differs from id order */
    f->vecs = malloc((size_t)N_ROWS * f->dim * sizeof(float));
    struct store_new_image rows[N_ROWS];
    char sources[N_ROWS][64];
    struct store_insert_result res[N_ROWS];
    for (int i = 0; i < N_ROWS; i++) {
        float *v = f->vecs + (size_t)i * f->dim;
        for (int j = 0; j < f->dim; j++)
            v[j] = gauss();
        clip_l2_normalize(v, f->dim);
        snprintf(sources[i], sizeof(sources[i]), "https://example.test/%d.jpg", i);
        memset(&rows[i], 0, sizeof(rows[i]));
        rows[i].source = sources[i];
        rows[i].embedding = v;
        rows[i].dim = (uint32_t)f->dim;
        rows[i].added = 1700000000 + (i * 37) % N_ROWS;
        rows[i].width = 100 + (uint32_t)i;
        rows[i].height = 50;
    }
    assert_int_equal(store_insert_many(f->store, rows, N_ROWS, res, &err), IMS_OK);
    for (int i = 0; i < N_ROWS; i++) {
        assert_int_equal(res[i].outcome, STORE_INSERTED);
        f->ids[i] = res[i].id;
    }
    assert_int_equal(vindex_add(f->vx, f->ids, f->vecs, N_ROWS, &err), IMS_OK);
    struct search_options so;
    search_options_default(&so);
    so.text_cache_entries = 8;
    assert_int_equal(search_engine_new(f->model, f->store, f->vx, &so, &f->se, &err), IMS_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    search_engine_free(f->se);
    vindex_free(f->vx);
    store_close(f->store);
    clip_model_free(f->model);
    free(f->vecs);
    ufx_rmtree(f->dir);
    free(f);
    return 0;
}

static int row_of(const struct fixture *f, int64_t id)
{
    for (int i = 0; i < N_ROWS; i++)
        if (f->ids[i] == id)
            return i;
    return -1;
}

static float dot(const float *a, const float *b, int d)
{
    double s = 0;
    for (int i = 0; i < d; i++)
        s += (double)a[i] * b[i];
    return (float)s;
}

/* Brute-force ranking of all rows for query q: indices sorted by score. */
static void brute_rank(const struct fixture *f, const float *q, int *order, float *scores)
{
    for (int i = 0; i < N_ROWS; i++) {
        order[i] = i;
        scores[i] = dot(q, f->vecs + (size_t)i * f->dim, f->dim);
    }
    for (int i = 1; i < N_ROWS; i++) /* insertion sort, best first */
        for (int j = i; j > 0 && scores[order[j]] > scores[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
}

static void test_vector_term_pages(void **state)
{
    struct fixture *f = *state;
    float q[512];
    for (int j = 0; j < f->dim; j++)
        q[j] = gauss();
    int order[N_ROWS];
    float scores[N_ROWS];
    float qn[512];
    memcpy(qn, q, sizeof(float) * (size_t)f->dim);
    clip_l2_normalize(qn, f->dim);
    brute_rank(f, qn, order, scores);
    struct search_term t = {.kind = SEARCH_TERM_VECTOR, .weight = 2.5f, .vector = q,
                            .n_vector = (size_t)f->dim};
    struct ims_error err = {0};
    /* three pages of 7 follow the brute-force order without gaps or overlap */
    for (int page = 0; page < 3; page++) {
        struct search_request rq = {&t, 1, 7, page * 7, 0, 0, SEARCH_ORDER_SCORE, NULL, 0, {0}};
        struct search_response rs;
        assert_int_equal(search_run(f->se, &rq, &rs, &err), IMS_OK);
        assert_int_equal(rs.n, 7);
        for (size_t i = 0; i < rs.n; i++) {
            int want = order[page * 7 + (int)i];
            assert_int_equal(rs.hits[i].row.id, f->ids[want]);
            assert_true(fabsf(rs.hits[i].score - scores[want]) < 1e-4f);
            char want_src[64];
            snprintf(want_src, sizeof(want_src), "https://example.test/%d.jpg", want);
            assert_string_equal(rs.hits[i].row.source, want_src);
            assert_int_equal(rs.hits[i].row.width, 100 + want);
        }
        search_response_fini(&rs);
    }
}

static void test_fusion_of_ids(void **state)
{
    struct fixture *f = *state;
    /* image_id a + 0.5 * image_id b - 0.3 * image_id c, computed by hand */
    int a = 3, b = 50, c = 120;
    float q[512] = {0};
    for (int j = 0; j < f->dim; j++)
        q[j] = f->vecs[(size_t)a * f->dim + j] + 0.5f * f->vecs[(size_t)b * f->dim + j] -
               0.3f * f->vecs[(size_t)c * f->dim + j];
    clip_l2_normalize(q, f->dim);
    int order[N_ROWS];
    float scores[N_ROWS];
    brute_rank(f, q, order, scores);
    struct search_term t[3] = {
        {.kind = SEARCH_TERM_IMAGE_ID, .weight = 1, .image_id = f->ids[a]},
        {.kind = SEARCH_TERM_IMAGE_ID, .weight = 0.5f, .image_id = f->ids[b]},
        {.kind = SEARCH_TERM_IMAGE_ID, .weight = -0.3f, .image_id = f->ids[c]},
    };
    struct search_request rq = {t, 3, 10, 0, 0, 0, SEARCH_ORDER_SCORE, NULL, 0, {0}};
    struct search_response rs;
    struct ims_error err = {0};
    assert_int_equal(search_run(f->se, &rq, &rs, &err), IMS_OK);
    assert_int_equal(rs.n, 10);
    assert_int_equal(rs.hits[0].row.id, f->ids[a]);
    for (size_t i = 0; i < rs.n; i++) {
        assert_int_equal(rs.hits[i].row.id, f->ids[order[i]]);
        assert_true(fabsf(rs.hits[i].score - scores[order[i]]) < 1e-4f);
    }
    search_response_fini(&rs);
}

static void test_min_score_and_date_order(void **state)
{
    struct fixture *f = *state;
    int a = 7;
    struct search_term t = {.kind = SEARCH_TERM_IMAGE_ID, .weight = 1, .image_id = f->ids[a]};
    int order[N_ROWS];
    float scores[N_ROWS];
    brute_rank(f, f->vecs + (size_t)a * f->dim, order, scores);
    float cut = scores[order[12]] - 1e-6f; /* exactly 13 rows score above */
    struct search_request rq = {&t, 1, 100, 0, 1, cut, SEARCH_ORDER_SCORE, NULL, 0, {0}};
    struct search_response rs;
    struct ims_error err = {0};
    assert_int_equal(search_run(f->se, &rq, &rs, &err), IMS_OK);
    assert_int_equal(rs.n, 13);
    for (size_t i = 0; i < rs.n; i++)
        assert_true(rs.hits[i].score >= cut);
    search_response_fini(&rs);
    /* the same cut set by date: newest first, same members */
    rq.order = SEARCH_ORDER_DATE;
    assert_int_equal(search_run(f->se, &rq, &rs, &err), IMS_OK);
    assert_int_equal(rs.n, 13);
    for (size_t i = 1; i < rs.n; i++)
        assert_true(rs.hits[i - 1].row.added >= rs.hits[i].row.added);
    for (size_t i = 0; i < rs.n; i++) {
        int r = row_of(f, rs.hits[i].row.id);
        assert_true(r >= 0);
        assert_true(scores[r] >= cut);
    }
    search_response_fini(&rs);
}

static void test_deleted_rows_skipped(void **state)
{
    struct fixture *f = *state;
    int a = 11;
    struct search_term t = {.kind = SEARCH_TERM_VECTOR, .weight = 1,
                            .vector = f->vecs + (size_t)a * f->dim, .n_vector = (size_t)f->dim};
    struct search_request rq = {&t, 1, 5, 0, 0, 0, SEARCH_ORDER_SCORE, NULL, 0, {0}};
    struct search_response rs;
    struct ims_error err = {0};
    assert_int_equal(search_run(f->se, &rq, &rs, &err), IMS_OK);
    assert_int_equal(rs.hits[0].row.id, f->ids[a]);
    int64_t second = rs.hits[1].row.id;
    search_response_fini(&rs);
    /* the row is deleted from the catalogue only: the index still has it */
    assert_int_equal(store_delete(f->store, f->ids[a], &err), IMS_OK);
    assert_int_equal(search_run(f->se, &rq, &rs, &err), IMS_OK);
    assert_true(rs.n >= 4);
    assert_int_equal(rs.hits[0].row.id, second);
    for (size_t i = 0; i < rs.n; i++)
        assert_true(rs.hits[i].row.id != f->ids[a]);
    search_response_fini(&rs);
    /* searching for the deleted row by id is a clear not-found */
    struct search_term gone = {.kind = SEARCH_TERM_IMAGE_ID, .weight = 1, .image_id = f->ids[a]};
    rq.terms = &gone;
    assert_int_equal(search_run(f->se, &rq, &rs, &err), IMS_ERR_NOT_FOUND);
    assert_non_null(strstr(err.message, "no image with id"));
}

static void test_text_terms_and_cache(void **state)
{
    struct fixture *f = *state;
    float a[512], b[512], direct[512];
    int hit = -1;
    struct ims_error err = {0};
    assert_int_equal(search_embed_text(f->se, "a photo of a cat", a, &hit, &err), IMS_OK);
    assert_int_equal(hit, 0);
    /* same tokens after clean-up and lower-casing: a cache hit, same vector */
    assert_int_equal(search_embed_text(f->se, "  A PHOTO of a   Cat ", b, &hit, &err), IMS_OK);
    assert_int_equal(hit, 1);
    assert_memory_equal(a, b, sizeof(float) * (size_t)f->dim);
    /* and equal to the model's own encoding */
    int32_t ids[CLIP_CONTEXT_MAX];
    int n_ids;
    assert_int_equal(clip_tokenize(clip_model_tokenizer(f->model), "a photo of a cat", 16, ids,
                                   &n_ids, &err),
                     IMS_OK);
    struct clip_ctx *ctx;
    assert_int_equal(clip_ctx_new(f->model, 1, &ctx, &err), IMS_OK);
    assert_int_equal(clip_ctx_encode_text(ctx, ids, n_ids, direct, 1, &err), IMS_OK);
    clip_ctx_free(ctx);
    for (int j = 0; j < f->dim; j++)
        assert_true(fabsf(direct[j] - a[j]) < 1e-6f);
    /* a text term ranks rows like the vector of that text */
    struct search_term tt = {.kind = SEARCH_TERM_TEXT, .weight = 1, .text = "a photo of a cat"};
    struct search_term tv = {.kind = SEARCH_TERM_VECTOR, .weight = 1, .vector = direct,
                             .n_vector = (size_t)f->dim};
    struct search_request r1 = {&tt, 1, 10, 0, 0, 0, SEARCH_ORDER_SCORE, NULL, 0, {0}};
    struct search_request r2 = {&tv, 1, 10, 0, 0, 0, SEARCH_ORDER_SCORE, NULL, 0, {0}};
    struct search_response s1, s2;
    assert_int_equal(search_run(f->se, &r1, &s1, &err), IMS_OK);
    assert_int_equal(search_run(f->se, &r2, &s2, &err), IMS_OK);
    assert_int_equal(s1.n, s2.n);
    for (size_t i = 0; i < s1.n; i++)
        assert_int_equal(s1.hits[i].row.id, s2.hits[i].row.id);
    search_response_fini(&s1);
    search_response_fini(&s2);
    struct search_counters c;
    search_get_counters(f->se, &c);
    assert_true(c.cache_hits >= 2);
    assert_int_equal(c.text_encodes, 1);
}

static void test_bad_terms(void **state)
{
    struct fixture *f = *state;
    float v[512] = {0};
    float nan_v[512];
    for (int j = 0; j < f->dim; j++)
        nan_v[j] = j == 3 ? NAN : 1.0f;
    const char junk[] = "<html>not an image</html>";
    struct {
        struct search_term t[2];
        size_t n;
        enum ims_status st;
        const char *needle;
    } cases[] = {
        {{{.kind = SEARCH_TERM_VECTOR, .weight = 1, .vector = v, .n_vector = 3}}, 1,
         IMS_ERR_INVALID, "3 values"},
        {{{.kind = SEARCH_TERM_VECTOR, .weight = 1, .vector = nan_v, .n_vector = (size_t)f->dim}},
         1, IMS_ERR_INVALID, "not finite"},
        {{{.kind = SEARCH_TERM_TEXT, .weight = 1, .text = ""}}, 1, IMS_ERR_INVALID, "empty text"},
        {{{.kind = SEARCH_TERM_TEXT, .weight = 0, .text = "cat"}}, 1, IMS_ERR_INVALID, "weight"},
        {{{.kind = SEARCH_TERM_TEXT, .weight = INFINITY, .text = "cat"}}, 1, IMS_ERR_INVALID,
         "weight"},
        {{{.kind = SEARCH_TERM_TEXT, .weight = 1, .text = "cat"},
          {.kind = SEARCH_TERM_TEXT, .weight = -1, .text = "cat"}},
         2, IMS_ERR_INVALID, "cancel"},
        {{{.kind = SEARCH_TERM_IMAGE, .weight = 1, .bytes = junk, .n_bytes = sizeof(junk) - 1}},
         1, IMS_ERR_UNSUPPORTED, "HTML"},
        {{{.kind = SEARCH_TERM_IMAGE_ID, .weight = 1, .image_id = 987654}}, 1, IMS_ERR_NOT_FOUND,
         "987654"},
        {{{.kind = SEARCH_TERM_TEXT, .weight = 1, .text = "\xff\xfe"}}, 1, IMS_ERR_INVALID,
         "term 0"},
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(cases); i++) {
        struct search_request rq = {cases[i].t, cases[i].n, 10, 0, 0, 0, SEARCH_ORDER_SCORE, NULL, 0, {0}};
        struct search_response rs = {0};
        struct ims_error err = {0};
        enum ims_status st = search_run(f->se, &rq, &rs, &err);
        if (st != cases[i].st || !strstr(err.message, cases[i].needle))
            fail_msg("case %zu: got %s '%s', want %s containing '%s'", i, ims_status_name(st),
                     err.message, ims_status_name(cases[i].st), cases[i].needle);
        assert_null(rs.hits);
    }
    struct search_term ok = {.kind = SEARCH_TERM_TEXT, .weight = 1, .text = "cat"};
    struct search_request bad_k = {&ok, 1, 0, 0, 0, 0, SEARCH_ORDER_SCORE, NULL, 0, {0}};
    struct search_response rs;
    assert_int_equal(search_run(f->se, &bad_k, &rs, NULL), IMS_ERR_INVALID);
    bad_k.k = 10;
    bad_k.offset = SEARCH_OFFSET_MAX + 1;
    assert_int_equal(search_run(f->se, &bad_k, &rs, NULL), IMS_ERR_INVALID);
    bad_k.offset = 0;
    bad_k.n_terms = 0;
    assert_int_equal(search_run(f->se, &bad_k, &rs, NULL), IMS_ERR_INVALID);
}

static void test_image_term(void **state)
{
    struct fixture *f = *state;
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/golden/clip/images/rgb.png", ufx_src_dir());
    char *bytes = NULL;
    size_t n = 0;
    assert_int_equal(ims_file_read(path, 1u << 24, &bytes, &n, NULL), IMS_OK);
    float e[512];
    struct ims_error err = {0};
    assert_int_equal(search_embed_image(f->se, bytes, n, e, &err), IMS_OK);
    double norm = dot(e, e, f->dim);
    assert_true(fabs(norm - 1.0) < 1e-4);
    /* an image term ranks rows like its own embedding as a vector term */
    struct search_term ti = {.kind = SEARCH_TERM_IMAGE, .weight = 1, .bytes = bytes, .n_bytes = n};
    struct search_request rq = {&ti, 1, 5, 0, 0, 0, SEARCH_ORDER_SCORE, NULL, 0, {0}};
    struct search_response rs;
    assert_int_equal(search_run(f->se, &rq, &rs, &err), IMS_OK);
    int order[N_ROWS];
    float scores[N_ROWS];
    brute_rank(f, e, order, scores);
    for (size_t i = 0; i < rs.n; i++)
        if (row_of(f, rs.hits[i].row.id) >= 0) /* row 11 may have been deleted earlier */
            assert_true(fabsf(rs.hits[i].score - scores[row_of(f, rs.hits[i].row.id)]) < 1e-4f);
    search_response_fini(&rs);
    ims_free(bytes);
}

static void test_result_cache_follows_the_index(void **state)
{
    struct fixture *f = *state;
    float q[512];
    for (int j = 0; j < f->dim; j++)
        q[j] = gauss();
    struct search_term t = {.kind = SEARCH_TERM_VECTOR, .weight = 1, .vector = q,
                            .n_vector = (size_t)f->dim};
    struct search_request rq = {&t, 1, 3, 0, 0, 0, SEARCH_ORDER_SCORE, NULL, 0, {0}};
    struct search_response a, b, c;
    struct ims_error err = {0};
    assert_int_equal(search_run(f->se, &rq, &a, &err), IMS_OK);
    assert_int_equal(search_run(f->se, &rq, &b, &err), IMS_OK); /* served from the cache */
    assert_int_equal(a.n, b.n);
    for (size_t i = 0; i < a.n; i++) {
        assert_int_equal(a.hits[i].row.id, b.hits[i].row.id);
        assert_true(a.hits[i].score == b.hits[i].score);
    }
    /* a new row equal to the query: the next identical search must see it */
    float qn[512];
    memcpy(qn, q, sizeof(float) * (size_t)f->dim);
    clip_l2_normalize(qn, f->dim);
    struct store_new_image row = {.source = "https://example.test/new.jpg", .embedding = qn,
                                  .dim = (uint32_t)f->dim};
    struct store_insert_result res;
    assert_int_equal(store_insert_many(f->store, &row, 1, &res, &err), IMS_OK);
    assert_int_equal(vindex_add(f->vx, &res.id, qn, 1, &err), IMS_OK);
    assert_int_equal(search_run(f->se, &rq, &c, &err), IMS_OK);
    assert_int_equal(c.hits[0].row.id, res.id);
    assert_true(fabsf(c.hits[0].score - 1.0f) < 1e-5f);
    search_response_fini(&a);
    search_response_fini(&b);
    search_response_fini(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_term_pages),
        cmocka_unit_test(test_fusion_of_ids),
        cmocka_unit_test(test_min_score_and_date_order),
        cmocka_unit_test(test_text_terms_and_cache),
        cmocka_unit_test(test_bad_terms),
        cmocka_unit_test(test_image_term),
        cmocka_unit_test(test_deleted_rows_skipped),
        cmocka_unit_test(test_result_cache_follows_the_index),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
