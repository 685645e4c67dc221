/* SPDX-License-Identifier: MIT */
/*
 * test_search_dedup.c: near-duplicate folding in a search (issue 10,
 * search_request.dedup) over a real catalogue and index with the tiny
 * model. The rows are random unit vectors plus groups of near-duplicates (a
 * base vector and copies perturbed by small noise, cosine ~0.99); the
 * expected answer is computed here by brute force over the full ranking:
 * the kept rows are those no better-ranked kept row is within the
 * threshold of, k of them (fewer only when the rows run out), and a
 * query's own group folds into its best member. Also with a filter, the
 * pure folding rule, and refused values.
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
#include "unit_fx.h"

#define N_RANDOM 150
#define N_GROUPS 10
#define GROUP 5
#define N_ROWS (N_RANDOM + N_GROUPS * GROUP)
#define T 0.95f

struct fixture {
    char dir[256];
    struct clip_model *model;
    struct store *store;
    struct vindex *vx;
    struct search_engine *se;
    int dim;
    float *vecs;
    int64_t ids[N_ROWS];
    int group[N_ROWS];
};

static uint64_t rng_state = 99;
static float gauss(void)
{
    return ufx_gauss(&rng_state);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/ims_test_dedup_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char model_dir[300];
    snprintf(model_dir, sizeof(model_dir), "%s/model", f->dir);
    ufx_copy_tiny_model(model_dir);
    struct ims_error err = {0};
    assert_int_equal(clip_model_load(model_dir, NULL, &f->model, &err), IMS_OK);
    f->dim = clip_model_embed_dim(f->model);
    char data[300];
    snprintf(data, sizeof(data), "%s/data", f->dir);
    struct store_model_info mi = {clip_model_name(f->model), (uint32_t)f->dim};
    assert_int_equal(store_open(data, &mi, STORE_OPEN_SYNC_NORMAL, &f->store, &err), IMS_OK);
    assert_int_equal(vindex_new("Flat", f->dim, &f->vx, &err), IMS_OK);
    f->vecs = malloc((size_t)N_ROWS * f->dim * sizeof(float));
    /* groups interleaved with the random rows; odd rows under /odd/ */
    for (int i = 0; i < N_ROWS; i++)
        f->group[i] = -1;
    for (int g = 0; g < N_GROUPS; g++) {
        float base[512];
        for (int j = 0; j < f->dim; j++)
            base[j] = gauss();
        clip_l2_normalize(base, f->dim);
        for (int c = 0; c < GROUP; c++) {
            int pos = g * (N_ROWS / N_GROUPS) + c * 3;
            float *v = f->vecs + (size_t)pos * f->dim;
            for (int j = 0; j < f->dim; j++)
                v[j] = base[j] + (c ? 0.1f / sqrtf((float)f->dim) * gauss() : 0.0f);
            clip_l2_normalize(v, f->dim);
            f->group[pos] = g;
        }
    }
    struct store_new_image rows[N_ROWS];
    char sources[N_ROWS][64];
    struct store_insert_result res[N_ROWS];
    for (int i = 0; i < N_ROWS; i++) {
        float *v = f->vecs + (size_t)i * f->dim;
        if (f->group[i] < 0) {
            for (int j = 0; j < f->dim; j++)
                v[j] = gauss();
            clip_l2_normalize(v, f->dim);
        }
        snprintf(sources[i], sizeof(sources[i]), "/%s/%d.jpg", i % 2 ? "odd" : "even", i);
        memset(&rows[i], 0, sizeof(rows[i]));
        rows[i].source = sources[i];
        rows[i].embedding = v;
        rows[i].dim = (uint32_t)f->dim;
    }
    assert_int_equal(store_insert_many(f->store, rows, N_ROWS, res, &err), IMS_OK);
    for (int i = 0; i < N_ROWS; i++)
        f->ids[i] = res[i].id;
    assert_int_equal(vindex_add(f->vx, f->ids, f->vecs, N_ROWS, &err), IMS_OK);
    struct search_options so;
    search_options_default(&so);
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

static float dot(const float *a, const float *b, int d)
{
    float s = 0;
    for (int i = 0; i < d; i++)
        s += a[i] * b[i];
    return s;
}

static int row_of(const struct fixture *f, int64_t id)
{
    for (int i = 0; i < N_ROWS; i++)
        if (f->ids[i] == id)
            return i;
    fail_msg("unknown id %lld", (long long)id);
    return -1;
}

/* The expected kept rows (indices, best first) for query q over the rows
 * allowed (odd_only), at most k; returns how many. */
static int brute_kept(const struct fixture *f, const float *q, int odd_only, int k, int *kept)
{
    int order[N_ROWS], n = 0;
    float sc[N_ROWS];
    for (int i = 0; i < N_ROWS; i++) {
        if (odd_only && i % 2 == 0)
            continue;
        order[n++] = i;
        sc[i] = dot(q, f->vecs + (size_t)i * f->dim, f->dim);
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && sc[order[j]] > sc[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    int nk = 0;
    for (int i = 0; i < n && nk < k; i++) {
        const float *v = f->vecs + (size_t)order[i] * f->dim;
        int folded = 0;
        for (int j = 0; j < nk && !folded; j++)
            folded = dot(v, f->vecs + (size_t)kept[j] * f->dim, f->dim) >= T;
        if (!folded)
            kept[nk++] = order[i];
    }
    return nk;
}

static void run(struct fixture *f, const float *q, int k, int offset, int odd_only,
                struct search_response *rs)
{
    struct search_term t = {.kind = SEARCH_TERM_VECTOR, .weight = 1.0f, .vector = q,
                            .n_vector = (size_t)f->dim};
    struct store_filter flt;
    memset(&flt, 0, sizeof(flt));
    flt.source_prefix = "/odd/";
    struct search_request rq = {&t, 1, k, offset, 0, 0, SEARCH_ORDER_SCORE,
                                odd_only ? &flt : NULL, T, {0}};
    struct ims_error err = {0};
    if (search_run(f->se, &rq, rs, &err) != IMS_OK)
        fail_msg("search: %s", err.message);
}

static void check(struct fixture *f, const float *q, int k, int odd_only)
{
    int kept[N_ROWS];
    int nk = brute_kept(f, q, odd_only, k, kept);
    struct search_response rs;
    run(f, q, k, 0, odd_only, &rs);
    assert_int_equal(rs.n, nk);
    for (size_t i = 0; i < rs.n; i++) {
        int r = row_of(f, rs.hits[i].row.id);
        assert_int_equal(r, kept[i]);
        if (odd_only)
            assert_true(r % 2 == 1);
        /* what folded into a kept row is near it, and in its group */
        for (size_t d = 0; d < rs.hits[i].n_duplicates; d++) {
            int dr = row_of(f, rs.hits[i].duplicates[d]);
            assert_true(dot(f->vecs + (size_t)dr * f->dim, f->vecs + (size_t)r * f->dim,
                            f->dim) >= T);
            assert_true(f->group[dr] >= 0 && f->group[dr] == f->group[r]);
            if (odd_only)
                assert_true(dr % 2 == 1);
        }
    }
    search_response_fini(&rs);
}

static void test_dedup_search(void **state)
{
    struct fixture *f = *state;
    for (int g = 0; g < N_GROUPS; g++) {
        int base = g * (N_ROWS / N_GROUPS);
        const float *q = f->vecs + (size_t)base * f->dim;
        struct search_response rs;
        /* without dedup the whole group leads; with it, one row holds the rest */
        run(f, q, 5, 0, 0, &rs);
        assert_int_equal(rs.n, 5);
        assert_int_equal(rs.hits[0].n_duplicates, GROUP - 1);
        assert_int_equal(f->group[row_of(f, rs.hits[0].row.id)], g);
        for (size_t d = 0; d < rs.hits[0].n_duplicates; d++)
            assert_int_equal(f->group[row_of(f, rs.hits[0].duplicates[d])], g);
        for (size_t i = 1; i < rs.n; i++)
            assert_true(f->group[row_of(f, rs.hits[i].row.id)] != g);
        search_response_fini(&rs);
        check(f, q, 5, 0);
        check(f, q, 20, 0);
        check(f, q, 7, 1);
    }
    /* random queries, and every row at once: fewer than k when rows run out */
    for (int r = 0; r < 5; r++) {
        float q[512];
        for (int j = 0; j < f->dim; j++)
            q[j] = gauss();
        clip_l2_normalize(q, f->dim);
        check(f, q, 10, r % 2);
    }
    const float *q0 = f->vecs;
    check(f, q0, N_ROWS, 0);
    check(f, q0, N_ROWS, 1);
    /* paging: offset skips kept rows */
    int kept[N_ROWS];
    int nk = brute_kept(f, q0, 0, 12, kept);
    struct search_response rs;
    run(f, q0, 4, 8, 0, &rs);
    assert_int_equal(rs.n, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(row_of(f, rs.hits[i].row.id), kept[8 + i]);
    assert_int_equal(nk, 12);
    search_response_fini(&rs);
}

static void test_dedup_refused(void **state)
{
    struct fixture *f = *state;
    struct search_term t = {.kind = SEARCH_TERM_VECTOR, .weight = 1.0f, .vector = f->vecs,
                            .n_vector = (size_t)f->dim};
    struct search_request rq = {&t, 1, 5, 0, 0, 0, SEARCH_ORDER_SCORE, NULL, 1.5f, {0}};
    struct search_response rs;
    struct ims_error err = {0};
    assert_int_equal(search_run(f->se, &rq, &rs, &err), IMS_ERR_INVALID);
    rq.dedup = -0.5f;
    assert_int_equal(search_run(f->se, &rq, &rs, &err), IMS_ERR_INVALID);
    rq.dedup = 0.9f;
    rq.k = 1000;
    rq.offset = 1001;
    assert_int_equal(search_run(f->se, &rq, &rs, &err), IMS_ERR_INVALID);
}

static void test_fold_rule(void **state)
{
    (void)state;
    /* 2-d unit vectors: 0, 10, 50, 55, 90 degrees */
    static const double deg[] = {0, 10, 50, 55, 90};
    float v[10];
    for (int i = 0; i < 5; i++) {
        v[2 * i] = (float)cos(deg[i] * 3.141592653589793 / 180);
        v[2 * i + 1] = (float)sin(deg[i] * 3.141592653589793 / 180);
    }
    int32_t into[5];
    /* cos 10 deg = 0.985: 10 folds into 0, 55 into 50 */
    assert_int_equal(search_fold_duplicates(v, 5, 2, 0.98f, 10, into), 3);
    assert_int_equal(into[0], -1);
    assert_int_equal(into[1], 0);
    assert_int_equal(into[2], -1);
    assert_int_equal(into[3], 2);
    assert_int_equal(into[4], -1);
    /* a cut at 2 kept: 90 is beyond it, 55 still folds */
    assert_int_equal(search_fold_duplicates(v, 5, 2, 0.98f, 2, into), 2);
    assert_int_equal(into[3], 2);
    assert_int_equal(into[4], -2);
    /* threshold 1: only identical vectors fold */
    assert_int_equal(search_fold_duplicates(v, 5, 2, 1.0f, 10, into), 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fold_rule),
        cmocka_unit_test_setup_teardown(test_dedup_search, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
