/* SPDX-License-Identifier: MIT */
/*
 * test_index_ivf_hnsw.c: an IVF whose coarse quantizer is an HNSW graph
 * ("IVF512_HNSW4,Flat"). The quantizer walks with its own efSearch (FAISS's
 * default 16) and stops early, so a query asking for more lists than that
 * used to get fewer: with nprobe = every list, a search for every vector
 * must return every vector with exact scores (all lists scanned), whether
 * nprobe comes per query (vindex_search_with) or as the index's default
 * (vindex_set_search_params). HNSW4 (8 level-0 links) keeps the quantizer's
 * early stop far from the 512 lists. Not under TSan: FAISS trains through
 * OpenBLAS's uninstrumented threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "unit_fx.h"

#include "imgsearch/index.h"

#define N 3000
#define DIM 16
#define NLIST 512

static float *make_data(int64_t *ids)
{
    float *x = malloc(sizeof(float) * N * DIM);
    assert_non_null(x);
    ufx_unit_rows(0x2545f4914f6cdd1dull, x, N, DIM);
    for (int i = 0; i < N; i++)
        ids[i] = 100 + i;
    return x;
}

/* Every vector comes back once, each with its exact inner product with q. */
static void check_all(const float *x, const float *q, const float *s, const int64_t *id, int nf)
{
    assert_int_equal(nf, N);
    unsigned char *seen = calloc(N, 1);
    assert_non_null(seen);
    for (int i = 0; i < nf; i++) {
        int64_t row = id[i] - 100;
        assert_true(row >= 0 && row < N);
        assert_int_equal(seen[row], 0);
        seen[row] = 1;
        double dot = 0;
        for (int d = 0; d < DIM; d++)
            dot += (double)q[d] * x[row * DIM + d];
        assert_true(fabs(dot - s[i]) < 1e-4);
        if (i > 0)
            assert_true(s[i] <= s[i - 1]);
    }
    free(seen);
}

static void test_nprobe_beyond_quantizer_ef(void **state)
{
    (void)state;
    struct ims_error err = {0};
    int64_t *ids = malloc(sizeof(int64_t) * N);
    float *x = make_data(ids);
    struct vindex *vx = NULL;
    assert_int_equal(vindex_new("IVF512_HNSW4,Flat", DIM, &vx, &err), IMS_OK);
    assert_int_equal(vindex_train(vx, x, N, &err), IMS_OK);
    assert_int_equal(vindex_add(vx, ids, x, N, &err), IMS_OK);
    float *s = malloc(sizeof(float) * N);
    int64_t *id = malloc(sizeof(int64_t) * N);
    struct vindex_search_params all = {.nprobe = NLIST};
    for (int i = 0; i < 5; i++) {
        const float *q = x + (size_t)(i * 331) * DIM;
        int nf = 0;
        /* per query */
        assert_int_equal(vindex_search_with(vx, q, N, NULL, &all, s, id, &nf, &err), IMS_OK);
        check_all(x, q, s, id, nf);
        assert_int_equal(id[0], ids[i * 331]); /* itself first */
    }
    /* the per-query widening did not change the index's defaults */
    struct vindex_search_params got;
    vindex_get_search_params(vx, &got);
    assert_int_equal(got.nprobe, 0);
    int nf = 0;
    assert_int_equal(vindex_search(vx, x, N, s, id, &nf, &err), IMS_OK);
    assert_true(nf < N); /* one list of 512 */

    /* as the index's default */
    assert_int_equal(vindex_set_search_params(vx, &all, &err), IMS_OK);
    for (int i = 0; i < 3; i++) {
        const float *q = x + (size_t)(i * 577 + 5) * DIM;
        assert_int_equal(vindex_search(vx, q, N, s, id, &nf, &err), IMS_OK);
        check_all(x, q, s, id, nf);
    }
    vindex_free(vx);
    free(s);
    free(id);
    free(x);
    free(ids);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nprobe_beyond_quantizer_ef),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
