/* SPDX-License-Identifier: MIT */
/*
 * test_index_dups_ref.c: the exact duplicates pass (every pair scored once,
 * blocked upper triangle) against a brute force written the plain way:
 * every ordered pair in double precision, each vector's k best links above
 * the threshold (higher score, then lower position), union-find strongest
 * first. Families of near-copies larger than k make the k limit decide
 * which links exist; sizes that are not multiples of the row and query
 * blocks and 1..3 threads (also 3 that cannot be created) must all give
 * the reference's groups and weakest links.
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
#include "index_int.h"

#include "unit_fx.h"

#define DIM 32
#define N_MAX 1400

static uint64_t rng = 11;
static float gauss(void)
{
    return ufx_gauss(&rng);
}

static void unit(float *v)
{
    double s = 0;
    for (int i = 0; i < DIM; i++)
        s += (double)v[i] * v[i];
    for (int i = 0; i < DIM; i++)
        v[i] = (float)(v[i] / sqrt(s));
}

static float x[N_MAX * DIM];
static int64_t ids[N_MAX];

/* 40 families of 9 near-copies (noise 0.05..0.21, cosines ~0.85-0.99; odd
 * ones twin clusters), one every 35 rows, among random vectors. */
static void make_data(void)
{
    for (int i = 0; i < N_MAX; i++) {
        float *v = x + (size_t)i * DIM;
        for (int d = 0; d < DIM; d++)
            v[d] = gauss();
        unit(v);
        ids[i] = 50000 - 7 * (int64_t)i; /* ids not in position order */
    }
    for (int f = 0; f < 40; f++) {
        float base[DIM];
        for (int d = 0; d < DIM; d++)
            base[d] = gauss();
        unit(base);
        /* odd families: twin clusters, 4 tight copies of base and 4 of a
         * second base at cosine 0.93 from it: joined when k > 3, apart
         * when each copy's k best links stay in its own cluster */
        float twin[DIM], dotb = 0;
        for (int d = 0; d < DIM; d++)
            twin[d] = gauss();
        for (int d = 0; d < DIM; d++)
            dotb += twin[d] * base[d];
        for (int d = 0; d < DIM; d++)
            twin[d] -= dotb * base[d];
        unit(twin);
        for (int d = 0; d < DIM; d++)
            twin[d] = 0.93f * base[d] + 0.36762f * twin[d];
        for (int c = 0; c < 9; c++) {
            int pos = f * 35 + c * 3; /* family 14 straddles row 512 */
            float *v = x + (size_t)pos * DIM;
            float noise = 0.05f + 0.02f * (float)c;
            const float *b = (f & 1) && c >= 4 && c < 8 ? twin : base;
            if (f & 1)
                noise = c < 8 ? 0.01f : 0.2f;
            for (int d = 0; d < DIM; d++)
                v[d] = b[d] + noise * gauss();
            unit(v);
        }
    }
}

static double dot(int a, int b)
{
    double s = 0;
    for (int d = 0; d < DIM; d++)
        s += (double)x[(size_t)a * DIM + d] * x[(size_t)b * DIM + d];
    return s;
}

struct link {
    int a, b;
    double s;
};

static int link_cmp(const void *p, const void *q)
{
    const struct link *x1 = p, *y = q;
    if (x1->s != y->s)
        return x1->s < y->s ? 1 : -1;
    if (x1->a != y->a)
        return x1->a < y->a ? -1 : 1;
    return (x1->b > y->b) - (x1->b < y->b);
}

static int find(int *parent, int i)
{
    while (parent[i] != i)
        i = parent[i] = parent[parent[i]];
    return i;
}

/* Reference groups: root[i] (or -1 alone), weakest link per root; a pair
 * within 1e-4 of the threshold or of a competitor at the k boundary would
 * make the float kernel's answer legitimately differ: fails loudly instead. */
static void reference(int n, float threshold, int k, int *root, double *weakest)
{
    static struct link links[N_MAX * 64];
    int n_links = 0;
    for (int i = 0; i < n; i++) {
        double bs[64];
        int bi[64], nb = 0;
        for (int j = 0; j < n; j++) {
            if (j == i)
                continue;
            double s = dot(i, j);
            assert_false(fabs(s - threshold) < 1e-4);
            if (s < threshold)
                continue;
            /* insert keeping (score desc, position asc), at most k */
            if (nb == k && (s < bs[k - 1] || (s == bs[k - 1] && j > bi[k - 1])))
                continue;
            int at = nb < k ? nb++ : k - 1;
            while (at > 0 && (bs[at - 1] < s || (bs[at - 1] == s && bi[at - 1] > j))) {
                bs[at] = bs[at - 1];
                bi[at] = bi[at - 1];
                at--;
            }
            bs[at] = s;
            bi[at] = j;
        }
        for (int t = 0; t < nb; t++) {
            links[n_links++] = (struct link){i < bi[t] ? i : bi[t], i < bi[t] ? bi[t] : i, bs[t]};
        }
    }
    qsort(links, (size_t)n_links, sizeof(links[0]), link_cmp);
    static int parent[N_MAX], size[N_MAX];
    for (int i = 0; i < n; i++) {
        parent[i] = i;
        size[i] = 1;
        weakest[i] = 1.0;
    }
    for (int l = 0; l < n_links; l++) {
        int a = find(parent, links[l].a), b = find(parent, links[l].b);
        if (a == b)
            continue;
        if (size[a] < size[b]) {
            int t = a;
            a = b;
            b = t;
        }
        parent[b] = a;
        size[a] += size[b];
        weakest[a] = links[l].s;
    }
    for (int i = 0; i < n; i++) {
        int r = find(parent, i);
        root[i] = size[r] > 1 ? r : -1;
    }
}

static int pos_of(int64_t id)
{
    return (int)((50000 - id) / 7);
}

static void check_against_reference(int n, float threshold, int k)
{
    static int root[N_MAX];
    static double weakest[N_MAX];
    reference(n, threshold, k, root, weakest);
    int want_groups = 0, want_rows = 0;
    for (int i = 0; i < n; i++) {
        want_groups += root[i] == i;
        want_rows += root[i] >= 0;
    }
    assert_true(want_groups >= 2); /* the data exercise something */
    /* 1..3 threads, then 3 asked with no thread creatable (index__fan_out's
     * failure path: every share runs on the caller) */
    for (int threads = 1; threads <= 4; threads++) {
        index__fan_out_fail = threads == 4;
        struct vindex_dups_options o;
        vindex_dups_options_default(&o);
        o.threshold = threshold;
        o.k = k;
        o.n_threads = threads == 4 ? 3 : threads;
        o.exact_max = (size_t)n;
        struct vindex_dups r;
        struct ims_error err = {0};
        assert_int_equal(vindex_duplicates_of(ids, x, (size_t)n, DIM, &o, &r, &err), IMS_OK);
        assert_int_equal(r.exact, 1);
        assert_int_equal(r.n, want_groups);
        int rows = 0;
        for (size_t g = 0; g < r.n; g++) {
            const struct vindex_dup_group *gr = &r.groups[g];
            int rt = root[pos_of(gr->ids[0])];
            assert_true(rt >= 0);
            for (size_t i = 0; i < gr->n; i++)
                assert_int_equal(root[pos_of(gr->ids[i])], rt);
            rows += (int)gr->n;
            assert_float_equal(gr->min_score, weakest[rt], 1e-5);
        }
        assert_int_equal(rows, want_rows);
        vindex_dups_fini(&r);
    }
    index__fan_out_fail = 0;
}

static void test_k_binds(void **state)
{
    (void)state;
    /* 1400 rows: two full row blocks of 512 and a partial one; k 2 < 8 */
    check_against_reference(N_MAX, 0.9f, 2);
}

static void test_odd_sizes(void **state)
{
    (void)state;
    check_against_reference(1033, 0.87f, 3);
    check_against_reference(513, 0.9f, 16);
    check_against_reference(97, 0.85f, 1);
}

int main(void)
{
    make_data();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_k_binds),
        cmocka_unit_test(test_odd_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
