/* SPDX-License-Identifier: MIT */
/*
 * test_index_filter.c: vindex_search_filtered (issue 10 item 1).
 *
 * On random unit vectors with random filters at 50%, 5%, 0.5% and 0.05%
 * of the ids, none and all:
 * - exact types (Flat, FlatF16) return exactly the allowed prefix of the
 *   unfiltered full ranking: same ids, same order, bit-identical scores;
 * - approximate types (HNSW32, IVF16,Flat, Graph32) return min(k, matching) rows,
 *   all allowed, with exact scores, best first; recall@10 against the exact
 *   filtered answer >= 0.9; selective filters (scan path) are exact;
 * - removed ids are never returned; ids beyond the bitmap are not allowed;
 * - a NULL filter is vindex_search; bad arguments are IMS_ERR_INVALID.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imgsearch/index.h"

#define N 3000
#define DIM 32

static float *vecs;
static int64_t *idv;

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

static int setup(void **state)
{
    (void)state;
    vecs = malloc(sizeof(float) * N * DIM);
    idv = malloc(sizeof(int64_t) * N);
    for (int i = 0; i < N; i++) {
        double norm = 0;
        for (int d = 0; d < DIM; d++) {
            float v = (float)((double)(next_rand() % 20001) / 10000.0 - 1.0);
            vecs[i * DIM + d] = v;
            norm += (double)v * v;
        }
        for (int d = 0; d < DIM; d++)
            vecs[i * DIM + d] = (float)(vecs[i * DIM + d] / sqrt(norm));
        idv[i] = 10 + 3 * (int64_t)i; /* sparse ids */
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(vecs);
    free(idv);
    return 0;
}

static struct vindex *build(const char *spec)
{
    struct vindex *vx = NULL;
    struct ims_error err = {0};
    assert_int_equal(vindex_new(spec, DIM, &vx, &err), IMS_OK);
    if (vindex_needs_training(vx))
        assert_int_equal(vindex_train(vx, vecs, N, &err), IMS_OK);
    assert_int_equal(vindex_add(vx, idv, vecs, N, &err), IMS_OK);
    /* every list: random vectors have no clusters, the filter path is what is tested */
    struct vindex_search_params p = {.nprobe = 16, .ef_search = 64};
    assert_int_equal(vindex_set_search_params(vx, &p, &err), IMS_OK);
    return vx;
}

/* bitmap over ids [0, n_bits) with each of our ids allowed with probability
 * share (in 1/100000) */
static uint64_t *make_filter(int share, struct vindex_filter *f, int *n_match)
{
    int64_t n_bits = 10 + 3 * N + 1;
    uint64_t *bits = calloc((size_t)(n_bits + 63) / 64, 8);
    *n_match = 0;
    for (int i = 0; i < N; i++)
        if ((int)(next_rand() % 100000) < share) {
            bits[idv[i] >> 6] |= 1ull << (idv[i] & 63);
            (*n_match)++;
        }
    f->bits = bits;
    f->n_bits = n_bits;
    return bits;
}

static void check_type(const char *spec, int exact)
{
    struct vindex *vx = build(spec);
    struct vindex *flat = build("Flat"); /* the reference ranking */
    struct ims_error err = {0};
    static float all_s[N], s[N], q[DIM];
    static int64_t all_i[N], ids[N];
    static const int shares[] = {50000, 5000, 500, 50, 0, 100000};
    for (int round = 0; round < 12; round++) {
        int share = shares[round % 6];
        struct vindex_filter f;
        int n_match;
        uint64_t *bits = make_filter(share, &f, &n_match);
        int qi = (int)(next_rand() % N);
        for (int d = 0; d < DIM; d++)
            q[d] = vecs[qi * DIM + d] + 0.05f * (float)((int)(next_rand() % 100) - 50) / 50.0f;
        int n_all = 0;
        assert_int_equal(vindex_search(flat, q, N, all_s, all_i, &n_all, &err), IMS_OK);
        assert_int_equal(n_all, N);
        /* the exact filtered answer: the allowed prefix of the full ranking */
        int64_t want_i[N];
        float want_s[N];
        int n_want = 0;
        for (int i = 0; i < n_all; i++)
            if (vindex_filter_allows(&f, all_i[i])) {
                want_i[n_want] = all_i[i];
                want_s[n_want++] = all_s[i];
            }
        assert_int_equal(n_want, n_match);
        const int ks[] = {1, 10, 100};
        for (int ki = 0; ki < 3; ki++) {
            int k = ks[ki], n = -1;
            assert_int_equal(vindex_search_filtered(vx, q, k, &f, s, ids, &n, &err), IMS_OK);
            int expect_n = k < n_match ? k : n_match;
            if (n != expect_n)
                fail_msg("%s share %d k %d: %d results, expected %d", spec, share, k, n, expect_n);
            for (int i = 0; i < n; i++) {
                assert_true(vindex_filter_allows(&f, ids[i]));
                if (i)
                    assert_true(s[i] <= s[i - 1]);
            }
            int selective = (double)n_match < 0.10 * N;
            if (exact || selective) {
                for (int i = 0; i < n; i++)
                    if (ids[i] != want_i[i] || s[i] != want_s[i])
                        fail_msg("%s share %d k %d: rank %d is %lld (%.9g), expected %lld (%.9g)",
                                 spec, share, k, i, (long long)ids[i], (double)s[i],
                                 (long long)want_i[i], (double)want_s[i]);
            } else if (k == 10) {
                int hit = 0;
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < n; j++)
                        hit += ids[i] == want_i[j];
                if (hit < 9)
                    fail_msg("%s share %d: recall@10 %d/10", spec, share, hit);
            }
            /* scores are exact cosines whatever the type */
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n_want; j++)
                    if (want_i[j] == ids[i]) {
                        assert_true(s[i] == want_s[j]);
                        break;
                    }
        }
        free(bits);
    }
    vindex_free(flat);
    vindex_free(vx);
}

static void test_flat(void **state) { (void)state; check_type("Flat", 1); }
static void test_flat_f16(void **state) { (void)state; check_type("FlatF16", 1); }
static void test_hnsw(void **state) { (void)state; check_type("HNSW32", 0); }
static void test_ivf(void **state) { (void)state; check_type("IVF16,Flat", 0); }
/* own Graph: the filter applied inside the beam (refused nodes as waypoints) */
static void test_graph(void **state) { (void)state; check_type("Graph32", 0); }

static void test_removed_and_bounds(void **state)
{
    (void)state;
    const char *specs[] = {"Flat", "HNSW32", "Graph32"};
    for (int t = 0; t < 3; t++) {
        struct vindex *vx = build(specs[t]);
        struct ims_error err = {0};
        /* allow only ids 10, 13, 16 (rows 0..2), remove 13 */
        uint64_t bits[1] = {(1ull << 10) | (1ull << 13) | (1ull << 16)};
        struct vindex_filter f = {bits, 64};
        int64_t gone = 13;
        size_t n_rm = 0;
        assert_int_equal(vindex_remove(vx, &gone, 1, &n_rm, &err), IMS_OK);
        assert_int_equal(n_rm, 1);
        float s[5];
        int64_t ids[5];
        int n = -1;
        assert_int_equal(vindex_search_filtered(vx, vecs + 2 * DIM, 5, &f, s, ids, &n, &err), IMS_OK);
        assert_int_equal(n, 2);
        assert_int_equal(ids[0], 16); /* its own vector */
        assert_int_equal(ids[1], 10);
        /* bitmap shorter than the ids: nothing beyond it matches */
        f.n_bits = 12;
        assert_int_equal(vindex_search_filtered(vx, vecs, 5, &f, s, ids, &n, &err), IMS_OK);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], 10);
        f.n_bits = 0;
        assert_int_equal(vindex_search_filtered(vx, vecs, 5, &f, s, ids, &n, &err), IMS_OK);
        assert_int_equal(n, 0);
        /* NULL filter = vindex_search */
        float s2[5];
        int64_t i2[5];
        int n2 = 0;
        assert_int_equal(vindex_search_filtered(vx, vecs, 5, NULL, s, ids, &n, &err), IMS_OK);
        assert_int_equal(vindex_search(vx, vecs, 5, s2, i2, &n2, &err), IMS_OK);
        assert_int_equal(n, n2);
        assert_memory_equal(ids, i2, sizeof(int64_t) * (size_t)n);
        /* bad arguments */
        f.n_bits = 64;
        assert_int_equal(vindex_search_filtered(vx, vecs, 0, &f, s, ids, &n, &err), IMS_ERR_INVALID);
        struct vindex_filter nob = {NULL, 10};
        assert_int_equal(vindex_search_filtered(vx, vecs, 5, &nob, s, ids, &n, &err), IMS_ERR_INVALID);
        float nan_q[DIM];
        memcpy(nan_q, vecs, sizeof(nan_q));
        nan_q[3] = NAN;
        assert_int_equal(vindex_search_filtered(vx, nan_q, 5, &f, s, ids, &n, &err), IMS_ERR_INVALID);
        vindex_free(vx);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flat), cmocka_unit_test(test_flat_f16), cmocka_unit_test(test_hnsw),
        cmocka_unit_test(test_ivf),
        cmocka_unit_test(test_graph),  cmocka_unit_test(test_removed_and_bounds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
