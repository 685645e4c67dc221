/* SPDX-License-Identifier: MIT */
/*
 * test_index_dups.c: vindex_duplicates (issue 10). Planted near-duplicate
 * groups (a base vector and copies perturbed by small noise) among random
 * vectors are found exactly, by the all-pairs pass and by the partitioned
 * k-NN pass (forced with a small exact_max), with 1 and 2 threads and
 * through a live index; a chain a-b-c joins one group whose min_score is
 * its weakest link; k bounds the links, not the groups; bad options refused.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imgsearch/index.h"

#include "unit_fx.h"

#define DIM 64
#define N_RANDOM 1500
#define N_GROUPS 25
#define GROUP 4
#define N (N_RANDOM + N_GROUPS * GROUP)

static uint64_t rng = 7;
static float gauss(void)
{
    return ufx_gauss(&rng);
}

static void unit(float *v, int d)
{
    double s = 0;
    for (int i = 0; i < d; i++)
        s += (double)v[i] * v[i];
    for (int i = 0; i < d; i++)
        v[i] = (float)(v[i] / sqrt(s));
}

static float *x;
static int64_t ids[N];
/* group of ids[i]: -1 for random ones */
static int group_of[N];

static void make_data(void)
{
    x = malloc((size_t)N * DIM * sizeof(float));
    size_t at = 0;
    /* the planted groups are interleaved with the random ones */
    for (int i = 0; i < N; i++)
        group_of[i] = -1;
    for (int g = 0; g < N_GROUPS; g++) {
        float base[DIM];
        for (int d = 0; d < DIM; d++)
            base[d] = gauss();
        unit(base, DIM);
        for (int c = 0; c < GROUP; c++) {
            int pos = g * (N / N_GROUPS) + c * 7;
            float *v = x + (size_t)pos * DIM;
            for (int d = 0; d < DIM; d++)
                v[d] = base[d] + (c ? 0.02f * gauss() : 0.0f);
            unit(v, DIM);
            group_of[pos] = g;
        }
    }
    for (int i = 0; i < N; i++) {
        ids[i] = 1000 + 3 * (int64_t)i;
        if (group_of[i] >= 0)
            continue;
        float *v = x + (size_t)i * DIM;
        for (int d = 0; d < DIM; d++)
            v[d] = gauss();
        unit(v, DIM);
        at++;
    }
    assert_int_equal(at, N_RANDOM);
}

/* The groups found are exactly the planted ones. */
static void check_planted(const struct vindex_dups *r, float threshold)
{
    assert_int_equal(r->n, N_GROUPS);
    for (size_t g = 0; g < r->n; g++) {
        const struct vindex_dup_group *gr = &r->groups[g];
        assert_int_equal(gr->n, GROUP);
        assert_true(gr->min_score >= threshold && gr->min_score <= 1.0001f);
        int pos0 = (int)((gr->ids[0] - 1000) / 3);
        int want = group_of[pos0];
        assert_true(want >= 0);
        for (size_t i = 0; i < gr->n; i++) {
            int pos = (int)((gr->ids[i] - 1000) / 3);
            assert_int_equal(group_of[pos], want);
            if (i)
                assert_true(gr->ids[i] > gr->ids[i - 1]);
        }
        if (g)
            assert_true(gr->ids[0] > r->groups[g - 1].ids[0]); /* same size: by first id */
    }
}

static void test_planted(void **state)
{
    (void)state;
    struct vindex_dups_options o;
    vindex_dups_options_default(&o);
    o.threshold = 0.9f;
    struct vindex_dups r;
    struct ims_error err = {0};
    for (int threads = 1; threads <= 2; threads++) {
        o.n_threads = threads;
        o.exact_max = N;
        assert_int_equal(vindex_duplicates_of(ids, x, N, DIM, &o, &r, &err), IMS_OK);
        assert_int_equal(r.exact, 1);
        assert_int_equal(r.n_vectors, N);
        check_planted(&r, o.threshold);
        vindex_dups_fini(&r);
        o.exact_max = 100; /* the partitioned pass */
        assert_int_equal(vindex_duplicates_of(ids, x, N, DIM, &o, &r, &err), IMS_OK);
        assert_int_equal(r.exact, 0);
        check_planted(&r, o.threshold);
        vindex_dups_fini(&r);
    }
    /* a threshold above the copies' similarity finds nothing */
    o.threshold = 0.9999f;
    o.exact_max = N;
    assert_int_equal(vindex_duplicates_of(ids, x, N, DIM, &o, &r, &err), IMS_OK);
    assert_int_equal(r.n, 0);
    vindex_dups_fini(&r);
}

static void test_through_index(void **state)
{
    (void)state;
    struct vindex *vx = NULL;
    struct ims_error err = {0};
    assert_int_equal(vindex_new("Flat", DIM, &vx, &err), IMS_OK);
    assert_int_equal(vindex_add(vx, ids, x, N, &err), IMS_OK);
    struct vindex_dups_options o;
    vindex_dups_options_default(&o);
    o.threshold = 0.9f;
    struct vindex_dups r;
    assert_int_equal(vindex_duplicates(vx, &o, &r, &err), IMS_OK);
    check_planted(&r, o.threshold);
    vindex_dups_fini(&r);
    /* removing one copy of a group leaves a group of 3 */
    int64_t gone = ids[0];
    assert_int_equal(group_of[0], 0);
    assert_int_equal(vindex_remove(vx, &gone, 1, NULL, &err), IMS_OK);
    assert_int_equal(vindex_duplicates(vx, &o, &r, &err), IMS_OK);
    assert_int_equal(r.n, N_GROUPS);
    assert_int_equal(r.groups[N_GROUPS - 1].n, GROUP - 1);
    vindex_dups_fini(&r);
    vindex_free(vx);
}

static void test_chain_and_k(void **state)
{
    (void)state;
    /* unit vectors at 0, 18 and 36 degrees in a plane: cos 0.951 between
     * neighbours, 0.809 between the ends */
    float v[4 * DIM];
    memset(v, 0, sizeof(v));
    const double pi = 3.141592653589793;
    for (int i = 0; i < 3; i++) {
        v[i * DIM] = (float)cos(i * pi / 10);
        v[i * DIM + 1] = (float)sin(i * pi / 10);
    }
    v[3 * DIM + 5] = 1.0f; /* unrelated */
    int64_t cid[4] = {5, 6, 7, 8};
    struct vindex_dups_options o;
    vindex_dups_options_default(&o);
    o.threshold = 0.9f;
    struct vindex_dups r;
    struct ims_error err = {0};
    assert_int_equal(vindex_duplicates_of(cid, v, 4, DIM, &o, &r, &err), IMS_OK);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.groups[0].n, 3);
    assert_int_equal(r.groups[0].ids[0], 5);
    assert_int_equal(r.groups[0].ids[2], 7);
    assert_float_equal(r.groups[0].min_score, (float)cos(pi / 10), 1e-5);
    vindex_dups_fini(&r);

    /* 40 identical vectors with k = 2: few links each, still one group */
    float *same = malloc(40 * DIM * sizeof(float));
    int64_t sid[40];
    for (int i = 0; i < 40; i++) {
        memcpy(same + i * DIM, x, DIM * sizeof(float));
        sid[i] = 100 - i;
    }
    o.k = 2;
    assert_int_equal(vindex_duplicates_of(sid, same, 40, DIM, &o, &r, &err), IMS_OK);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.groups[0].n, 40);
    assert_int_equal(r.groups[0].ids[0], 61);
    vindex_dups_fini(&r);
    free(same);

    /* refusals and trivial inputs */
    o.k = 16;
    o.threshold = 0.0f;
    assert_int_equal(vindex_duplicates_of(cid, v, 4, DIM, &o, &r, &err), IMS_ERR_INVALID);
    o.threshold = 1.5f;
    assert_int_equal(vindex_duplicates_of(cid, v, 4, DIM, &o, &r, &err), IMS_ERR_INVALID);
    o.threshold = 0.9f;
    o.k = 0;
    assert_int_equal(vindex_duplicates_of(cid, v, 4, DIM, &o, &r, &err), IMS_ERR_INVALID);
    o.k = 16;
    assert_int_equal(vindex_duplicates_of(cid, v, 1, DIM, &o, &r, &err), IMS_OK);
    assert_int_equal(r.n, 0);
    vindex_dups_fini(&r);
}

int main(void)
{
    make_data();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_planted),
        cmocka_unit_test(test_through_index),
        cmocka_unit_test(test_chain_and_k),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(x);
    return rc;
}
