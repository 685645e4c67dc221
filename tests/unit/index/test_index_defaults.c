/* SPDX-License-Identifier: MIT */
/*
 * test_index_defaults.c: vindex_default_search_params (what `imgsearch index
 * show` prints for a knob nobody stored, issue 11) is the value searches
 * really use: Graph<M>'s ef_search is the one vindex_new gives the index,
 * and an HNSW32 index searched without an ef answers exactly as with
 * ef 256; knobs a type lacks are 0. vindex_search_params_merge replaces only
 * the non-zero knobs.
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

#define N 2000
#define DIM 24

static void test_graph_default_is_the_index_own(void **state)
{
    (void)state;
    const char *specs[] = {"Graph", "Graph32", "Graph16", "Graph8,efc40", "Graph48"};
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        struct ims_error err = {0};
        struct vindex *vx = NULL;
        struct vindex_search_params def, got;
        assert_int_equal(vindex_new(specs[i], DIM, &vx, &err), IMS_OK);
        vindex_get_search_params(vx, &got);
        vindex_default_search_params(specs[i], &def);
        assert_true(def.ef_search > 0);
        assert_int_equal(def.ef_search, got.ef_search);
        assert_int_equal(def.nprobe, 0);
        assert_int_equal(def.rerank, 0);
        vindex_free(vx);
    }
    struct vindex_search_params d;
    vindex_default_search_params("Graph32", &d);
    assert_int_equal(d.ef_search, 128);
    vindex_default_search_params("Graph16", &d);
    assert_int_equal(d.ef_search, 256);
}

static void test_faiss_and_exact_types(void **state)
{
    (void)state;
    struct vindex_search_params d;
    vindex_default_search_params("HNSW32", &d);
    assert_int_equal(d.ef_search, 256);
    assert_int_equal(d.nprobe, 0);
    vindex_default_search_params("IVF1024,PQ32", &d);
    assert_int_equal(d.ef_search, 0);
    assert_int_equal(d.nprobe, 1);
    vindex_default_search_params("IVF4096_HNSW32,Flat", &d); /* HNSW is the quantizer */
    assert_int_equal(d.ef_search, 0);
    assert_int_equal(d.nprobe, 1);
    vindex_default_search_params("OPQ16,IVF256,PQ16", &d);
    assert_int_equal(d.nprobe, 1);
    vindex_default_search_params("Flat", &d);
    assert_int_equal(d.ef_search + d.nprobe + d.rerank, 0);
    vindex_default_search_params("FlatF16", &d);
    assert_int_equal(d.ef_search + d.nprobe + d.rerank, 0);
    assert_int_equal(d.n_threads, 1);
}

/* The 256 printed for HNSW32 is what a search without an ef walks with. */
static void test_hnsw_default_ef_is_used(void **state)
{
    (void)state;
    struct ims_error err = {0};
    float *x = malloc(sizeof(float) * N * DIM);
    int64_t *ids = malloc(sizeof(int64_t) * N);
    assert_non_null(x);
    assert_non_null(ids);
    ufx_unit_rows(0x9e3779b97f4a7c15ull, x, N, DIM);
    for (int i = 0; i < N; i++)
        ids[i] = i;
    struct vindex *vx = NULL;
    assert_int_equal(vindex_new("HNSW32", DIM, &vx, &err), IMS_OK);
    assert_int_equal(vindex_add(vx, ids, x, N, &err), IMS_OK);
    struct vindex_search_params def;
    vindex_default_search_params("HNSW32", &def);
    struct vindex_search_params with_def = {.ef_search = def.ef_search};
    for (int i = 0; i < 30; i++) {
        const float *q = x + (size_t)(i * 61) * DIM;
        float s0[10], s1[10];
        int64_t i0[10], i1[10];
        int n0 = 0, n1 = 0;
        assert_int_equal(vindex_search(vx, q, 10, s0, i0, &n0, &err), IMS_OK);
        assert_int_equal(vindex_search_with(vx, q, 10, NULL, &with_def, s1, i1, &n1, &err),
                         IMS_OK);
        assert_int_equal(n0, 10);
        assert_int_equal(n0, n1);
        assert_memory_equal(i0, i1, sizeof(int64_t) * (size_t)n0);
        assert_memory_equal(s0, s1, sizeof(float) * (size_t)n0);
    }
    vindex_free(vx);
    free(x);
    free(ids);
}

static void test_merge(void **state)
{
    (void)state;
    struct vindex_search_params base = {.nprobe = 8, .ef_search = 64, .rerank = 20, .n_threads = 2};
    struct vindex_search_params over = {.ef_search = 300, .n_threads = 7};
    struct vindex_search_params m = vindex_search_params_merge(&base, &over);
    assert_int_equal(m.nprobe, 8);
    assert_int_equal(m.ef_search, 300);
    assert_int_equal(m.rerank, 20);
    assert_int_equal(m.n_threads, 2);
    over = (struct vindex_search_params){.nprobe = 3, .rerank = 50};
    m = vindex_search_params_merge(&base, &over);
    assert_int_equal(m.nprobe, 3);
    assert_int_equal(m.ef_search, 64);
    assert_int_equal(m.rerank, 50);
    m = vindex_search_params_merge(&base, NULL);
    assert_memory_equal(&m, &base, sizeof m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_graph_default_is_the_index_own),
        cmocka_unit_test(test_faiss_and_exact_types),
        cmocka_unit_test(test_hnsw_default_ef_is_used),
        cmocka_unit_test(test_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
