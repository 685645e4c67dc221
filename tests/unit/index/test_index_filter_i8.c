/* SPDX-License-Identifier: MIT */
/*
 * test_index_filter_i8.c: Flat's filtered search through the int8 pre-scan
 * (issue 10 item 1: a filtered search at high selectivity takes the same
 * fast path as the unfiltered one and stays exact).
 *
 * On clustered unit vectors, with filters of exactly 50%, 20% and 10% of
 * the rows (the pre-scan's range), k = 1, 10, 100, one and two scan threads:
 * - the answer equals the filtered fp32 scan's (int8 pre-scan disabled):
 *   same ids, same order, bit-identical scores;
 * - it equals an independent brute force in double over the allowed rows
 *   (ids in order where the scores are not near-tied, scores within 1e-5);
 * - every returned id is allowed;
 * - the pre-scan really answered (its counters moved, candidates re-scored);
 * - with massive ties (every row duplicated many times) the answer is still
 *   the fp32 scan's, whether the pre-scan answers or falls back;
 * - the own Graph walk with a filter (refused nodes as waypoints) returns k
 *   allowed nodes at 50% and 10% matching, with recall@10 >= 0.9 against
 *   the brute force, where the unfiltered walk's k best hold fewer.
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
#include "index_graph.h"
#include "index_int.h"

#define N 12000
#define DIM 64
#define CENTRES 40
#define NQ 12

static float *vecs;
static int64_t *idv;

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}
static double unif(void) { return (double)(next_rand() >> 11) / 9007199254740992.0; }

static void normalise(float *v)
{
    double norm = 0;
    for (int d = 0; d < DIM; d++)
        norm += (double)v[d] * v[d];
    for (int d = 0; d < DIM; d++)
        v[d] = (float)(v[d] / sqrt(norm));
}

/* Clustered unit vectors: CENTRES random centres, noise 0.3 per component;
 * with dup > 1 every block of dup rows is one vector (massive ties). */
static void make_vectors(int dup)
{
    float centres[CENTRES * DIM];
    for (int i = 0; i < CENTRES * DIM; i++)
        centres[i] = (float)(2 * unif() - 1);
    for (int i = 0; i < N; i++) {
        float *v = vecs + (size_t)i * DIM;
        if (dup > 1 && i % dup) {
            memcpy(v, vecs + (size_t)(i - i % dup) * DIM, sizeof(float) * DIM);
            continue;
        }
        const float *c = centres + (size_t)(next_rand() % CENTRES) * DIM;
        for (int d = 0; d < DIM; d++)
            v[d] = c[d] + (float)(0.3 * (2 * unif() - 1));
        normalise(v);
    }
}

static int setup(void **state)
{
    (void)state;
    vecs = malloc(sizeof(float) * N * DIM);
    idv = malloc(sizeof(int64_t) * N);
    for (int i = 0; i < N; i++)
        idv[i] = 5 + 2 * (int64_t)i; /* sparse ids */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(vecs);
    free(idv);
    return 0;
}

static struct vindex *build_flat(int n_threads)
{
    struct vindex *vx = NULL;
    struct ims_error err = {0};
    assert_int_equal(vindex_new("Flat", DIM, &vx, &err), IMS_OK);
    assert_int_equal(vindex_add(vx, idv, vecs, N, &err), IMS_OK);
    struct vindex_search_params p = {.n_threads = n_threads};
    assert_int_equal(vindex_set_search_params(vx, &p, &err), IMS_OK);
    return vx;
}

/* A bitmap over the ids allowing exactly n_allow rows, chosen at random. */
static uint64_t *make_filter(int n_allow, struct vindex_filter *f)
{
    int64_t n_bits = idv[N - 1] + 1;
    uint64_t *bits = calloc((size_t)(n_bits + 63) / 64, sizeof *bits);
    int *perm = malloc(sizeof(int) * N);
    for (int i = 0; i < N; i++)
        perm[i] = i;
    for (int i = N - 1; i > 0; i--) {
        int j = (int)(next_rand() % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int i = 0; i < n_allow; i++) {
        int64_t id = idv[perm[i]];
        bits[id >> 6] |= (uint64_t)1 << (id & 63);
    }
    free(perm);
    f->bits = bits;
    f->n_bits = n_bits;
    return bits;
}

struct ranked {
    double score;
    int64_t id;
};
static int by_score_desc(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The double brute force over the allowed rows agrees with (scores, ids):
 * each score within 1e-5 of the true one at its rank, and the ids equal
 * wherever the true scores around that rank are not within 1e-5. */
static void check_brute(const float *q, const struct vindex_filter *f, int k, const float *scores,
                        const int64_t *ids, int n_found)
{
    struct ranked *all = malloc(sizeof *all * N);
    int n = 0;
    for (int i = 0; i < N; i++) {
        if (!vindex_filter_allows(f, idv[i]))
            continue;
        double s = 0;
        for (int d = 0; d < DIM; d++)
            s += (double)q[d] * vecs[(size_t)i * DIM + d];
        all[n++] = (struct ranked){s, idv[i]};
    }
    qsort(all, (size_t)n, sizeof *all, by_score_desc);
    assert_int_equal(n_found, k < n ? k : n);
    for (int r = 0; r < n_found; r++) {
        assert_true(vindex_filter_allows(f, ids[r]));
        assert_true(fabs((double)scores[r] - all[r].score) < 1e-5);
        int tied = (r > 0 && all[r - 1].score - all[r].score < 1e-5) ||
                   (r + 1 < n && all[r].score - all[r + 1].score < 1e-5);
        if (!tied)
            assert_int_equal(ids[r], all[r].id);
    }
    free(all);
}

/* Every query of qs: the filtered search with the pre-scan equals the one
 * without it (bit for bit) and the brute force. Returns how many of the
 * searches the pre-scan answered (counters). */
static uint64_t compare(struct vindex *vx, const float *qs, const struct vindex_filter *f, int k,
                        int brute)
{
    float *s1 = malloc(sizeof(float) * (size_t)k), *s2 = malloc(sizeof(float) * (size_t)k);
    int64_t *i1 = malloc(sizeof(int64_t) * (size_t)k), *i2 = malloc(sizeof(int64_t) * (size_t)k);
    struct ims_error err = {0};
    uint64_t searches0, fallbacks0, searches1, fallbacks1;
    index__i8_stats(vx, &searches0, NULL, &fallbacks0);
    for (int qi = 0; qi < NQ; qi++) {
        const float *q = qs + (size_t)qi * DIM;
        int n1 = -1, n2 = -1;
        index__i8_enabled = 1;
        assert_int_equal(vindex_search_filtered(vx, q, k, f, s1, i1, &n1, &err), IMS_OK);
        index__i8_enabled = 0;
        assert_int_equal(vindex_search_filtered(vx, q, k, f, s2, i2, &n2, &err), IMS_OK);
        index__i8_enabled = 1;
        assert_int_equal(n1, n2);
        assert_int_equal(n1, k);
        assert_memory_equal(i1, i2, sizeof(int64_t) * (size_t)n1);
        assert_memory_equal(s1, s2, sizeof(float) * (size_t)n1);
        if (brute)
            check_brute(q, f, k, s1, i1, n1);
    }
    index__i8_stats(vx, &searches1, NULL, &fallbacks1);
    free(s1), free(s2), free(i1), free(i2);
    return (searches1 - searches0) - (fallbacks1 - fallbacks0);
}

static void make_queries(float *qs)
{
    for (int qi = 0; qi < NQ; qi++) {
        /* half near a stored row (a realistic query), half random */
        float *q = qs + (size_t)qi * DIM;
        const float *row = vecs + (size_t)(next_rand() % N) * DIM;
        for (int d = 0; d < DIM; d++)
            q[d] = (qi & 1) ? (float)(2 * unif() - 1) : row[d] + (float)(0.05 * (2 * unif() - 1));
        normalise(q);
    }
}

static void test_filtered_i8_exact(void **state)
{
    (void)state;
    static const int shares_pct[] = {50, 20, 10};
    static const int ks[] = {1, 10, 100};
    float qs[NQ * DIM];
    make_vectors(1);
    make_queries(qs);
    for (int threads = 1; threads <= 2; threads++) {
        struct vindex *vx = build_flat(threads);
        for (size_t si = 0; si < sizeof shares_pct / sizeof *shares_pct; si++) {
            struct vindex_filter f;
            uint64_t *bits = make_filter(N * shares_pct[si] / 100, &f);
            for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
                uint64_t answered = compare(vx, qs, &f, ks[ki], 1);
                /* the fast path must really be taken on clustered data */
                assert_true(answered >= NQ / 2);
            }
            free(bits);
        }
        vindex_free(vx);
    }
}

/* Below 10% matching rows the fp32 scan of the matching rows answers: the
 * pre-scan's counters do not move. */
static void test_filtered_selective_scans(void **state)
{
    (void)state;
    float qs[NQ * DIM];
    make_vectors(1);
    make_queries(qs);
    struct vindex *vx = build_flat(1);
    struct vindex_filter f;
    uint64_t *bits = make_filter(N / 20, &f); /* 5% */
    uint64_t s0, s1;
    index__i8_stats(vx, &s0, NULL, NULL);
    assert_int_equal(compare(vx, qs, &f, 10, 1), 0);
    index__i8_stats(vx, &s1, NULL, NULL);
    assert_int_equal(s1, s0);
    free(bits);
    vindex_free(vx);
}

/* Massive ties: every vector 400 times. The pre-scan may fall back (too
 * many candidates); either way the answer is the fp32 scan's. */
static void test_filtered_i8_ties(void **state)
{
    (void)state;
    float qs[NQ * DIM];
    make_vectors(400);
    make_queries(qs);
    struct vindex *vx = build_flat(2);
    struct vindex_filter f;
    uint64_t *bits = make_filter(N / 2, &f);
    compare(vx, qs, &f, 10, 1);
    compare(vx, qs, &f, 100, 1);
    uint64_t searches = 0;
    index__i8_stats(vx, &searches, NULL, NULL);
    assert_true(searches >= 2 * NQ); /* the pre-scan was tried every time */
    free(bits);
    vindex_free(vx);
}

/* The graph walk with a filter returns only allowed nodes, k of them. */
static void test_graph_walk_filtered(void **state)
{
    (void)state;
    enum { K = 10, EF = 128 };
    float qs[NQ * DIM];
    make_vectors(1);
    make_queries(qs);
    index__graph_threads = 1;
    struct index__graph *g = NULL;
    assert_int_equal(index__graph_new(DIM, 16, 64, &g), IMS_OK);
    assert_int_equal(index__graph_reserve(g, N), IMS_OK);
    assert_int_equal(index__graph_add(g, idv, vecs, N), IMS_OK);
    static const int shares_pct[] = {50, 10};
    for (size_t si = 0; si < 2; si++) {
        struct vindex_filter f;
        uint64_t *bits = make_filter(N * shares_pct[si] / 100, &f);
        int hits = 0, total = 0, plain_allowed_min = K;
        for (int qi = 0; qi < NQ; qi++) {
            const float *q = qs + (size_t)qi * DIM;
            float s[K];
            int64_t lab[K];
            int n = index__graph_search_filtered(g, q, K, EF, &f, s, lab);
            assert_int_equal(n, K);
            for (int i = 0; i < n; i++) {
                assert_true(vindex_filter_allows(&f, lab[i]));
                if (i)
                    assert_true(s[i] <= s[i - 1]);
            }
            /* the unfiltered walk's k best are mostly refused ones */
            int m = index__graph_search(g, q, K, EF, s, lab), allowed = 0;
            assert_int_equal(m, K);
            for (int i = 0; i < m; i++)
                allowed += vindex_filter_allows(&f, lab[i]);
            if (allowed < plain_allowed_min)
                plain_allowed_min = allowed;
            /* recall@10 against the brute force over the allowed rows */
            n = index__graph_search_filtered(g, q, K, EF, &f, s, lab);
            struct ranked *all = malloc(sizeof *all * N);
            int na = 0;
            for (int i = 0; i < N; i++) {
                if (!vindex_filter_allows(&f, idv[i]))
                    continue;
                double d = 0;
                for (int j = 0; j < DIM; j++)
                    d += (double)q[j] * vecs[(size_t)i * DIM + j];
                all[na++] = (struct ranked){d, idv[i]};
            }
            qsort(all, (size_t)na, sizeof *all, by_score_desc);
            for (int i = 0; i < n; i++)
                for (int j = 0; j < K; j++)
                    hits += lab[i] == all[j].id;
            total += K;
            free(all);
        }
        assert_true(plain_allowed_min < K); /* the filter really mattered */
        if (hits * 10 < total * 9)
            fail_msg("share %d%%: recall@10 %d/%d", shares_pct[si], hits, total);
        free(bits);
    }
    index__graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filtered_i8_exact),
        cmocka_unit_test(test_filtered_selective_scans),
        cmocka_unit_test(test_filtered_i8_ties),
        cmocka_unit_test(test_graph_walk_filtered),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
