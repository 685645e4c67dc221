/* SPDX-License-Identifier: MIT */
/*
 * test_index_graph.c: our own HNSW graph ("Graph<M>" types, index_graph.c;
 * issue 11 item 2) and per-query search parameters (item 1).
 *
 * - spec parsing: Graph, Graph<M>, Graph<M>,efc<N>; bad forms refused;
 * - recall@10 against the exact answer on clustered vectors, built on one
 *   thread and on several (the parallel build runs under TSan too);
 * - determinism: two one-thread builds give byte-identical snapshots, and so
 *   does a three-thread build whose threads cannot be created;
 * - incremental adds after the build: every added vector finds itself;
 * - deletes: never returned, the walk still finds the rest; a re-added id
 *   is found again; snapshot round trip keeps answers and deletions;
 * - damaged graph payloads (CRC recomputed): counts, offsets, neighbours,
 *   levels, flags, labels, entry point, and random flips: IMS_ERR_CORRUPT
 *   or a sound load, never a crash (run under ASan);
 * - vindex_search_with: per-query ef / rerank / nprobe within bounds, 0 =
 *   the index's default, out of bounds IMS_ERR_INVALID (IVF's per-query
 *   nprobe: test_index_knobs.c, outside TSan: FAISS trains through
 *   OpenBLAS's uninstrumented threads).
 * No timings are asserted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "imgsearch/index.h"
#include "index_graph.h"

#define N 3000
#define DIM 48
#define NQ 60

static float *vecs, *queries;
static int64_t *idv;
static char g_dir[64];

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}
static double unit(void) { return ((double)(next_rand() >> 11) + 0.5) * 0x1p-53; }
static double normal(void) { return sqrt(-2.0 * log(unit())) * cos(6.283185307179586 * unit()); }

/* clustered unit vectors with a decaying spectrum (a small "hard" set) */
static void draw(float *x, int n, const float *centres)
{
    for (int i = 0; i < n; i++) {
        const float *c = centres + (next_rand() % 60) * DIM;
        double norm = 0;
        for (int d = 0; d < DIM; d++) {
            double v = c[d] + 0.8 * normal() / sqrt(d + 1.0);
            x[i * DIM + d] = (float)v;
            norm += v * v;
        }
        for (int d = 0; d < DIM; d++)
            x[i * DIM + d] = (float)(x[i * DIM + d] / sqrt(norm));
    }
}

static int setup(void **state)
{
    (void)state;
    float *centres = malloc(sizeof(float) * 60 * DIM);
    for (int j = 0; j < 60 * DIM; j++)
        centres[j] = (float)(normal() / sqrt((j % DIM) + 1.0));
    vecs = malloc(sizeof(float) * N * DIM);
    queries = malloc(sizeof(float) * NQ * DIM);
    idv = malloc(sizeof(int64_t) * N);
    draw(vecs, N, centres);
    draw(queries, NQ, centres);
    free(centres);
    for (int i = 0; i < N; i++)
        idv[i] = 5 + 2 * (int64_t)i;
    strcpy(g_dir, "/tmp/ims-graph-test-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    assert_int_equal(system(cmd), 0);
    free(vecs);
    free(queries);
    free(idv);
    return 0;
}

static struct vindex *build(const char *spec, int n, int threads, size_t chunk)
{
    struct ims_error err = {0};
    struct vindex *vx = NULL;
    index__graph_threads = threads;
    assert_int_equal(vindex_new(spec, DIM, &vx, &err), IMS_OK);
    for (int i = 0; i < n; i += (int)chunk) {
        int m = (int)IMS_MIN((size_t)(n - i), chunk);
        assert_int_equal(vindex_add(vx, idv + i, vecs + (size_t)i * DIM, (size_t)m, &err), IMS_OK);
    }
    index__graph_threads = 0;
    return vx;
}

/* recall@10 of vx against the exact answer (Flat over the same live rows) */
static double recall(struct vindex *vx, struct vindex *exact, int ef)
{
    struct ims_error err = {0};
    struct vindex_search_params p = {.ef_search = ef};
    int hit = 0;
    for (int i = 0; i < NQ; i++) {
        float s[10], se[10];
        int64_t id[10], ide[10];
        int nf = 0, ne = 0;
        assert_int_equal(vindex_search_with(vx, queries + i * DIM, 10, NULL, &p, s, id, &nf, &err),
                         IMS_OK);
        assert_int_equal(vindex_search(exact, queries + i * DIM, 10, se, ide, &ne, &err), IMS_OK);
        assert_int_equal(nf, ne);
        for (int a = 0; a < nf; a++) {
            if (a > 0)
                assert_true(s[a] <= s[a - 1]);
            for (int b = 0; b < ne; b++)
                if (id[a] == ide[b]) {
                    hit++;
                    assert_true(s[a] == se[b]); /* re-scored exactly */
                }
        }
    }
    return hit / (10.0 * NQ);
}

static void test_spec(void **state)
{
    (void)state;
    int m, efc;
    assert_int_equal(index__graph_parse_spec("Graph", &m, &efc), 1);
    assert_int_equal(m, INDEX_GRAPH_DEFAULT_M);
    assert_int_equal(index__graph_parse_spec("Graph24", &m, &efc), 1);
    assert_int_equal(m, 24);
    assert_int_equal(index__graph_parse_spec("Graph8,efc40", &m, &efc), 1);
    assert_int_equal(efc, 40);
    assert_int_equal(index__graph_parse_spec("HNSW32", &m, &efc), 0);
    const char *bad[] = {"Graph3", "Graph65", "Graph16,efc4", "Graphx", "Graph16,", "Graph16,efc",
                         "Graph99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct ims_error err = {0};
        struct vindex *vx = NULL;
        assert_int_equal(index__graph_parse_spec(bad[i], &m, &efc), -1);
        assert_int_equal(vindex_new(bad[i], DIM, &vx, &err), IMS_ERR_INVALID);
        assert_null(vx);
    }
}

static void test_recall_and_threads(void **state)
{
    (void)state;
    struct vindex *exact = build("Flat", N, 1, N);
    struct vindex *one = build("Graph12", N, 1, 1000);
    struct vindex *par = build("Graph12", N, 3, 1000); /* more threads than cores: still sound */
    assert_int_equal(vindex_count(one), N);
    double r1 = recall(one, exact, 64), r3 = recall(par, exact, 64);
    assert_true(r1 >= 0.9);
    assert_true(r3 >= 0.9);
    /* a wider beam finds at least as much on average (and the default works) */
    assert_true(recall(one, exact, 200) >= 0.97);
    assert_true(recall(one, exact, 0) >= 0.9);
    vindex_free(exact);
    vindex_free(one);
    vindex_free(par);
}

static long read_file(const char *path, unsigned char **out)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc((size_t)n);
    assert_int_equal(fread(*out, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return n;
}

static void write_file(const char *path, const unsigned char *p, long n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
}

static void test_deterministic(void **state)
{
    (void)state;
    struct ims_error err = {0};
    char a[128], b[128];
    snprintf(a, sizeof a, "%s/a.snap", g_dir);
    snprintf(b, sizeof b, "%s/b.snap", g_dir);
    struct vindex *x = build("Graph8", 1500, 1, 300), *y = build("Graph8", 1500, 1, 300);
    /* 3 threads asked, none can be created (index__fan_out's failure path):
     * every node still inserted once, on the caller, as the one-thread build */
    index__fan_out_fail = 1;
    struct vindex *z = build("Graph8", 1500, 3, 300);
    index__fan_out_fail = 0;
    assert_int_equal(vindex_save(x, a, 99, &err), IMS_OK);
    assert_int_equal(vindex_save(y, b, 99, &err), IMS_OK);
    unsigned char *pa, *pb;
    long na = read_file(a, &pa), nb = read_file(b, &pb);
    assert_int_equal(na, nb);
    assert_memory_equal(pa, pb, (size_t)na);
    free(pb);
    assert_int_equal(vindex_save(z, b, 99, &err), IMS_OK);
    nb = read_file(b, &pb);
    assert_int_equal(na, nb);
    assert_memory_equal(pa, pb, (size_t)na);
    free(pa);
    free(pb);
    vindex_free(x);
    vindex_free(y);
    vindex_free(z);
}

static void test_incremental_and_deletes(void **state)
{
    (void)state;
    struct ims_error err = {0};
    struct vindex *vx = build("Graph8", 2000, 1, 2000);
    /* adds after the build, one at a time: each finds itself first */
    for (int i = 2000; i < 2300; i++) {
        assert_int_equal(vindex_add(vx, &idv[i], vecs + (size_t)i * DIM, 1, &err), IMS_OK);
        float s[1];
        int64_t id[1];
        int nf = 0;
        assert_int_equal(vindex_search(vx, vecs + (size_t)i * DIM, 1, s, id, &nf, &err), IMS_OK);
        assert_int_equal(nf, 1);
        assert_int_equal(id[0], idv[i]);
    }
    /* deletes: every third of the first 600 */
    for (int i = 0; i < 600; i += 3) {
        size_t removed = 0;
        assert_int_equal(vindex_remove(vx, &idv[i], 1, &removed, &err), IMS_OK);
        assert_int_equal(removed, 1);
    }
    assert_int_equal(vindex_count(vx), 2300 - 200);
    for (int i = 0; i < 600; i++) {
        float s[5];
        int64_t id[5];
        int nf = 0;
        assert_int_equal(vindex_search(vx, vecs + (size_t)i * DIM, 5, s, id, &nf, &err), IMS_OK);
        assert_int_equal(nf, 5);
        for (int j = 0; j < nf; j++) {
            int64_t row = (id[j] - 5) / 2;
            assert_false(row < 600 && row % 3 == 0); /* never a deleted id */
        }
        if (i % 3 != 0)
            assert_int_equal(id[0], idv[i]); /* the live ones still find themselves */
    }
    /* a deleted id re-added is found again */
    assert_int_equal(vindex_add(vx, &idv[0], vecs, 1, &err), IMS_OK);
    float s1[1];
    int64_t id1[1];
    int nf1 = 0;
    assert_int_equal(vindex_search(vx, vecs, 1, s1, id1, &nf1, &err), IMS_OK);
    assert_int_equal(id1[0], idv[0]);

    /* round trip: same answers, deletions kept */
    char path[128];
    snprintf(path, sizeof path, "%s/rt.snap", g_dir);
    assert_int_equal(vindex_save(vx, path, 12345, &err), IMS_OK);
    struct vindex *back = NULL;
    int64_t last = 0;
    assert_int_equal(vindex_load(path, DIM, "Graph8", &back, &last, &err), IMS_OK);
    assert_int_equal(last, 12345);
    assert_int_equal(vindex_count(back), vindex_count(vx));
    for (int i = 0; i < NQ; i++) {
        float sa[10], sb[10];
        int64_t ia[10], ib[10];
        int na = 0, nb = 0;
        assert_int_equal(vindex_search(vx, queries + i * DIM, 10, sa, ia, &na, &err), IMS_OK);
        assert_int_equal(vindex_search(back, queries + i * DIM, 10, sb, ib, &nb, &err), IMS_OK);
        assert_int_equal(na, nb);
        assert_memory_equal(ia, ib, sizeof(int64_t) * (size_t)na);
        assert_memory_equal(sa, sb, sizeof(float) * (size_t)na);
    }
    /* another M is another type */
    struct vindex *other = NULL;
    assert_int_equal(vindex_load(path, DIM, "Graph16", &other, &last, &err),
                     IMS_ERR_MODEL_MISMATCH);
    vindex_free(back);
    vindex_free(vx);
}

/* zlib's CRC-32, bit by bit (the test recomputes a snapshot's trailer). */
static uint32_t crc32_bits(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

static enum ims_status load_damaged(const char *path, const unsigned char *good, long n,
                                    long off, const void *bytes, size_t len)
{
    unsigned char *p = malloc((size_t)n);
    memcpy(p, good, (size_t)n);
    memcpy(p + off, bytes, len);
    uint32_t crc = crc32_bits(p, (size_t)n - 4);
    memcpy(p + n - 4, &crc, 4);
    write_file(path, p, n);
    free(p);
    struct ims_error err = {0};
    struct vindex *vx = NULL;
    int64_t last = 0;
    enum ims_status st = vindex_load(path, DIM, "Graph8", &vx, &last, &err);
    if (st == IMS_OK) { /* a sound load must be searchable */
        float s[10];
        int64_t id[10];
        int nf = 0;
        assert_int_equal(vindex_search(vx, queries, 10, s, id, &nf, &err), IMS_OK);
    }
    vindex_free(vx);
    return st;
}

static void test_damaged_snapshots(void **state)
{
    (void)state;
    struct ims_error err = {0};
    const int n = 400;
    struct vindex *vx = build("Graph8", n, 1, n);
    size_t removed;
    assert_int_equal(vindex_remove(vx, &idv[7], 1, &removed, &err), IMS_OK);
    char good_path[128], bad[128];
    snprintf(good_path, sizeof good_path, "%s/g.snap", g_dir);
    snprintf(bad, sizeof bad, "%s/bad.snap", g_dir);
    assert_int_equal(vindex_save(vx, good_path, 0, &err), IMS_OK);
    vindex_free(vx);
    unsigned char *good;
    long size = read_file(good_path, &good);
    /* payload offset: header 48 + spec + ids + vectors of the n - 1 live rows */
    long P = 48 + (long)strlen("Graph8") + (long)(n - 1) * (8 + 4 * DIM);
    assert_memory_equal(good + P, "IMSGRPH1", 8);
    long lv = P + 48, del = lv + n, lab = del + n, l0 = lab + 8L * n;
    int32_t v32;
    int64_t v64;
    uint8_t v8;
    /* counts */
    v64 = n + 1;
    assert_int_equal(load_damaged(bad, good, size, P + 24, &v64, 8), IMS_ERR_CORRUPT);
    v64 = (int64_t)1 << 40;
    assert_int_equal(load_damaged(bad, good, size, P + 24, &v64, 8), IMS_ERR_CORRUPT);
    v64 = 17;
    assert_int_equal(load_damaged(bad, good, size, P + 32, &v64, 8), IMS_ERR_CORRUPT);
    /* M of another type, dim */
    v32 = 12;
    assert_int_equal(load_damaged(bad, good, size, P + 12, &v32, 4), IMS_ERR_CORRUPT);
    v32 = DIM + 1;
    assert_int_equal(load_damaged(bad, good, size, P + 8, &v32, 4), IMS_ERR_CORRUPT);
    /* entry point out of range, not on the top level */
    v32 = n;
    assert_int_equal(load_damaged(bad, good, size, P + 40, &v32, 4), IMS_ERR_CORRUPT);
    v32 = -2;
    assert_int_equal(load_damaged(bad, good, size, P + 40, &v32, 4), IMS_ERR_CORRUPT);
    int32_t entry;
    memcpy(&entry, good + P + 40, 4);
    int low = 0;
    while (good[lv + low] != 0)
        low++;
    v32 = low;
    assert_int_equal(load_damaged(bad, good, size, P + 40, &v32, 4), IMS_ERR_CORRUPT);
    /* levels: too high, or one that the upper-link count does not cover */
    v8 = 200;
    assert_int_equal(load_damaged(bad, good, size, lv + low, &v8, 1), IMS_ERR_CORRUPT);
    v8 = 1;
    assert_int_equal(load_damaged(bad, good, size, lv + low, &v8, 1), IMS_ERR_CORRUPT);
    /* deleted flag: not 0/1; a live node more than the store holds */
    v8 = 2;
    assert_int_equal(load_damaged(bad, good, size, del + 3, &v8, 1), IMS_ERR_CORRUPT);
    v8 = 0;
    assert_int_equal(load_damaged(bad, good, size, del + 7, &v8, 1), IMS_ERR_CORRUPT);
    /* labels: negative, duplicate live, not stored */
    v64 = -1;
    assert_int_equal(load_damaged(bad, good, size, lab + 8 * 3, &v64, 8), IMS_ERR_CORRUPT);
    v64 = idv[4];
    assert_int_equal(load_damaged(bad, good, size, lab + 8 * 3, &v64, 8), IMS_ERR_CORRUPT);
    v64 = 999999;
    assert_int_equal(load_damaged(bad, good, size, lab + 8 * 3, &v64, 8), IMS_ERR_CORRUPT);
    /* links: count over the cap, neighbour out of range, itself, negative */
    long row = l0 + 4L * (2 * 8 + 1) * 5;
    v32 = 17;
    assert_int_equal(load_damaged(bad, good, size, row, &v32, 4), IMS_ERR_CORRUPT);
    v32 = -1;
    assert_int_equal(load_damaged(bad, good, size, row, &v32, 4), IMS_ERR_CORRUPT);
    v32 = n;
    assert_int_equal(load_damaged(bad, good, size, row + 4, &v32, 4), IMS_ERR_CORRUPT);
    v32 = 5;
    assert_int_equal(load_damaged(bad, good, size, row + 4, &v32, 4), IMS_ERR_CORRUPT);
    v32 = -7;
    assert_int_equal(load_damaged(bad, good, size, row + 4, &v32, 4), IMS_ERR_CORRUPT);
    /* a non-finite bf16 component */
    uint16_t inf = 0x7f80;
    long vec0 = size - 4 - 2L * DIM * n;
    assert_int_equal(load_damaged(bad, good, size, vec0 + 2 * 10, &inf, 2), IMS_ERR_CORRUPT);
    /* random damage in the payload: a sound load or CORRUPT, never a crash */
    for (int t = 0; t < 300; t++) {
        long off = P + (long)(next_rand() % (uint64_t)(size - 4 - P));
        uint8_t b = (uint8_t)next_rand();
        enum ims_status st = load_damaged(bad, good, size, off, &b, 1);
        assert_true(st == IMS_OK || st == IMS_ERR_CORRUPT);
    }
    /* the good one still loads */
    assert_int_equal(load_damaged(bad, good, size, 0, good, 1), IMS_OK);
    free(good);
}

static void test_query_params(void **state)
{
    (void)state;
    struct ims_error err = {0};
    struct vindex *vx = build("Graph8", 1000, 1, 1000);
    float s[10];
    int64_t id[10];
    int nf = 0;
    struct vindex_search_params p = {.ef_search = VINDEX_MAX_EF, .rerank = 50};
    assert_int_equal(vindex_search_with(vx, queries, 10, NULL, &p, s, id, &nf, &err), IMS_OK);
    assert_int_equal(nf, 10);
    p.ef_search = VINDEX_MAX_EF + 1;
    assert_int_equal(vindex_search_with(vx, queries, 10, NULL, &p, s, id, &nf, &err),
                     IMS_ERR_INVALID);
    p = (struct vindex_search_params){.ef_search = -1};
    assert_int_equal(vindex_search_with(vx, queries, 10, NULL, &p, s, id, &nf, &err),
                     IMS_ERR_INVALID);
    p = (struct vindex_search_params){.nprobe = VINDEX_MAX_NPROBE + 1};
    assert_int_equal(vindex_search_with(vx, queries, 10, NULL, &p, s, id, &nf, &err),
                     IMS_ERR_INVALID);
    p = (struct vindex_search_params){.rerank = VINDEX_MAX_K + 1};
    assert_int_equal(vindex_search_with(vx, queries, 10, NULL, &p, s, id, &nf, &err),
                     IMS_ERR_INVALID);
    /* the default ef is the Graph default until set; setting it is no rebuild */
    struct vindex_search_params got;
    vindex_get_search_params(vx, &got);
    assert_int_equal(got.ef_search, index__graph_default_ef(8));
    size_t nodes = index__graph_nodes(vx->graph);
    struct vindex_search_params set = {.ef_search = 40};
    assert_int_equal(vindex_set_search_params(vx, &set, &err), IMS_OK);
    vindex_get_search_params(vx, &got);
    assert_int_equal(got.ef_search, 40);
    assert_int_equal(index__graph_nodes(vx->graph), nodes);
    vindex_free(vx);

}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec),
        cmocka_unit_test(test_recall_and_threads),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_incremental_and_deletes),
        cmocka_unit_test(test_damaged_snapshots),
        cmocka_unit_test(test_query_params),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
