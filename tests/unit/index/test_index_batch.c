/* SPDX-License-Identifier: MIT */
/*
 * test_index_batch.c: coalesced exact searches. Concurrent vindex_search
 * calls on Flat / FlatF16 share one multi-query scan (vindex.c); the promise
 * is that a batched answer is bit-identical to the same search run alone.
 *
 * - the multi-query kernels against the one-query kernels (bit for bit) and
 *   a double-precision reference, for odd sizes and every kernel family;
 *   the int8 ones against the one-query int8 kernel;
 * - batches forced deterministically (a hook holds the first batch until the
 *   others have queued) against answers computed one at a time, for fp32 and
 *   fp16, 1 and 2 scan threads, different k per member, removed ids, and
 *   FlatF16's fp32 fall-back (exact duplicates defeat its candidate rule);
 * - Flat's int8 pre-scan inside a batch against the fp32 scan's answers;
 * - the batch cap (41 searches: a held one, then 32 + 8), an empty index,
 *   and many threads overlapping freely (8 x 50 searches).
 *
 * No timings: waits are for states (queued searches), never for durations.
 */

#include "imgsearch/index.h"
#include "index_int.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- data ------------------------------------------------------------------ */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static float unif(uint64_t *s) { return (float)((double)(splitmix(s) >> 11) * 0x1p-52 - 1.0); }

/* (n, dim) clustered unit vectors. */
static float *make_vectors(size_t n, int dim, int n_centres, uint64_t seed)
{
    float *c = malloc(sizeof(float) * (size_t)n_centres * (size_t)dim);
    float *x = malloc(sizeof(float) * n * (size_t)dim);
    assert_non_null(c);
    assert_non_null(x);
    for (size_t i = 0; i < (size_t)n_centres * (size_t)dim; i++)
        c[i] = unif(&seed);
    for (size_t i = 0; i < n; i++) {
        const float *ci = c + (splitmix(&seed) % (uint64_t)n_centres) * (size_t)dim;
        float *xi = x + i * (size_t)dim;
        double nn = 0;
        for (int j = 0; j < dim; j++) {
            xi[j] = ci[j] + 0.5f * unif(&seed);
            nn += (double)xi[j] * xi[j];
        }
        for (int j = 0; j < dim; j++)
            xi[j] = (float)(xi[j] / sqrt(nn));
    }
    free(c);
    return x;
}

static const char *const g_isas[] = {"scalar", "avx2", "avx512"};

/* ---- kernels ------------------------------------------------------------------ */

/* The multi-query kernels give each (row, query) exactly the one-query
 * kernel's score, write nothing outside their n columns, and agree with a
 * double-precision dot product. */
static void test_multi_kernel_matches_single(void **state)
{
    (void)state;
    const int dims[] = {1, 7, 15, 16, 17, 31, 32, 33, 48, 100, 513};
    const size_t ns[] = {1, 2, 3, 5, 8, 37, 100};
    const int max_nq = 13; /* every remainder of the 4- and 3-query tiles, and more */
    const float sentinel = 12345.0f;
    uint64_t seed = 7;
    for (size_t ii = 0; ii < IMS_ARRAY_LEN(g_isas); ii++) {
        if (index__scan_force_isa(g_isas[ii]) != 0)
            continue; /* this CPU lacks it: the others still run */
        for (size_t di = 0; di < IMS_ARRAY_LEN(dims); di++) {
            int dim = dims[di];
            for (size_t ni = 0; ni < IMS_ARRAY_LEN(ns); ni++) {
                size_t n = ns[ni], stride = n + 3;
                /* one float / half of offset: no alignment is assumed */
                float *rows_mem = malloc(sizeof(float) * (n * (size_t)dim + 1));
                uint16_t *rows16_mem = malloc(sizeof(uint16_t) * (n * (size_t)dim + 1));
                float *qs = malloc(sizeof(float) * (size_t)max_nq * (size_t)dim);
                float *out = malloc(sizeof(float) * (size_t)max_nq * stride);
                float *one = malloc(sizeof(float) * n);
                assert_true(rows_mem && rows16_mem && qs && out && one);
                float *rows = rows_mem + 1;
                uint16_t *rows16 = rows16_mem + 1;
                for (size_t i = 0; i < n * (size_t)dim; i++)
                    rows[i] = unif(&seed);
                index__f32_to_f16(rows, rows16, n * (size_t)dim);
                for (int i = 0; i < max_nq * dim; i++)
                    qs[i] = unif(&seed);
                for (int nq = 1; nq <= max_nq; nq++) {
                    for (int f16 = 0; f16 < 2; f16++) {
                        for (size_t i = 0; i < (size_t)max_nq * stride; i++)
                            out[i] = sentinel;
                        if (f16)
                            index__dot_f16_multi(qs, nq, rows16, n, dim, out, stride);
                        else
                            index__dot_f32_multi(qs, nq, rows, n, dim, out, stride);
                        for (int j = 0; j < nq; j++) {
                            const float *q = qs + (size_t)j * (size_t)dim;
                            if (f16)
                                index__dot_f16(q, rows16, n, dim, one);
                            else
                                index__dot_f32(q, rows, n, dim, one);
                            for (size_t r = 0; r < n; r++) {
                                float got = out[(size_t)j * stride + r];
                                if (memcmp(&got, &one[r], sizeof got) != 0)
                                    fail_msg("%s %s dim %d n %zu nq %d: query %d row %zu: "
                                             "multi %a, one-query %a",
                                             g_isas[ii], f16 ? "f16" : "f32", dim, n, nq, j, r,
                                             (double)got, (double)one[r]);
                                double ref = 0, mag = 0;
                                for (int c = 0; c < dim; c++) {
                                    size_t at = r * (size_t)dim + (size_t)c;
                                    double xv = f16 ? ims_f16_to_f32(rows16[at]) : rows[at];
                                    ref += (double)q[c] * xv;
                                    mag += fabs((double)q[c] * xv);
                                }
                                assert_true(fabs(got - ref) <= 1e-6 * (mag + 1));
                            }
                            for (size_t r = n; r < stride; r++)
                                assert_true(out[(size_t)j * stride + r] == sentinel);
                        }
                        for (size_t i = (size_t)nq * stride; i < (size_t)max_nq * stride; i++)
                            assert_true(out[i] == sentinel);
                    }
                }
                free(rows_mem);
                free(rows16_mem);
                free(qs);
                free(out);
                free(one);
            }
        }
    }
    index__scan_force_isa(NULL);
}

/* The int8 multi-query kernels give each (row, query) exactly the one-query
 * kernel's dot (integers: exact) and write nothing outside their n columns,
 * for every family and every tiled kernel by name, 1..19 queries (two
 * 8-query tiles and every remainder). */
static void test_i8_multi_kernel_matches_single(void **state)
{
    (void)state;
    const int dims[] = {1, 63, 100, 512};
    const size_t ns[] = {1, 2, 5, 37};
    const int max_nq = 19;
    uint64_t seed = 17;
    const char *tiles[] = {"avx512bw", "avx512vnni"};
    for (size_t ii = 0; ii < IMS_ARRAY_LEN(g_isas) + IMS_ARRAY_LEN(tiles); ii++) {
        index__dot_i8_multi_fn tiled = NULL;
        if (ii < IMS_ARRAY_LEN(g_isas) ? index__scan_force_isa(g_isas[ii]) != 0
                                        : !(tiled = index__dot_i8_multi_kernel(
                                                tiles[ii - IMS_ARRAY_LEN(g_isas)])))
            continue;
        const char *name = tiled ? tiles[ii - IMS_ARRAY_LEN(g_isas)] : g_isas[ii];
        for (size_t di = 0; di < IMS_ARRAY_LEN(dims); di++) {
            size_t stride = index__i8_stride(dims[di]);
            for (size_t ni = 0; ni < IMS_ARRAY_LEN(ns); ni++) {
                size_t n = ns[ni], out_stride = n + 3;
                int8_t *rows = calloc(n * stride, 1);
                int16_t *qs = calloc((size_t)max_nq * stride, sizeof *qs);
                int32_t *out = malloc(sizeof(int32_t) * (size_t)max_nq * out_stride);
                int32_t *one = malloc(sizeof(int32_t) * n);
                assert_true(rows && qs && out && one);
                for (size_t r = 0; r < n; r++)
                    for (int i = 0; i < dims[di]; i++)
                        rows[r * stride + (size_t)i] = (int8_t)(splitmix(&seed) % 255) - 127;
                for (int j = 0; j < max_nq; j++)
                    for (int i = 0; i < dims[di]; i++)
                        qs[(size_t)j * stride + (size_t)i] =
                            (int16_t)((int)(splitmix(&seed) % 65535) - 32767);
                for (int nq = 1; nq <= max_nq; nq++) {
                    for (size_t i = 0; i < (size_t)max_nq * out_stride; i++)
                        out[i] = 0x5a5a5a5a;
                    if (tiled) /* by name: also the one the dispatch skips */
                        tiled(qs, nq, rows, n, stride, out, out_stride);
                    else
                        index__dot_i8_multi(qs, nq, rows, n, stride, out, out_stride);
                    for (int j = 0; j < max_nq; j++) {
                        if (j < nq)
                            index__dot_i8(qs + (size_t)j * stride, rows, n, stride, one);
                        for (size_t r = 0; r < out_stride; r++) {
                            int32_t want = j < nq && r < n ? one[r] : 0x5a5a5a5a;
                            if (out[(size_t)j * out_stride + r] != want)
                                fail_msg("%s dim %d n %zu nq %d: query %d row %zu: %d, want %d",
                                         name, dims[di], n, nq, j, r,
                                         out[(size_t)j * out_stride + r], want);
                        }
                    }
                }
                free(rows);
                free(qs);
                free(out);
                free(one);
            }
        }
    }
    index__scan_force_isa(NULL);
}

/* ---- batches ------------------------------------------------------------------- */

/* A catalogue: n rows of dim, ids 10, 13, 16, ..., with some removed;
 * queries with k from 1 to 100 and a few of 7000 (above the live count of
 * the 6000-row fixtures). */
struct fixture {
    int dim;
    size_t n;
    float *x;
    int64_t *ids;
    int n_queries;
    float *q;
    int *k;
    /* answers computed one search at a time: (n_queries, k_max) */
    int k_max;
    float *want_s;
    int64_t *want_i;
    int *want_n;
};

#define N_DUP 300 /* exact duplicates of row 0: more than FlatF16's 2k + 32 candidates */

/* n_rows > 13 * N_DUP; more than one 4096-row chunk after removal, so that
 * two scan threads split the rows. */
static void fixture_init(struct fixture *f, int n_queries, size_t n_rows)
{
    f->dim = 100; /* not a multiple of 16: every kernel tail runs */
    f->n = n_rows;
    f->x = make_vectors(f->n, f->dim, 40, 11);
    for (size_t i = 1; i <= N_DUP; i++)
        memcpy(f->x + i * 13 * (size_t)f->dim, f->x, sizeof(float) * (size_t)f->dim);
    f->ids = malloc(sizeof(int64_t) * f->n);
    assert_non_null(f->ids);
    for (size_t i = 0; i < f->n; i++)
        f->ids[i] = 10 + 3 * (int64_t)i;
    f->n_queries = n_queries;
    f->q = make_vectors((size_t)n_queries, f->dim, 40, 12);
    f->k = malloc(sizeof(int) * (size_t)n_queries);
    assert_non_null(f->k);
    const int ks[] = {10, 1, 37, 5, 100, 3, 64};
    f->k_max = 7000;
    for (int i = 0; i < n_queries; i++) {
        f->k[i] = i % 25 == 5 ? 7000 : ks[i % 7]; /* 7000: about or above the count */
        if (i % 4 >= 2) /* the duplicated row: FlatF16 falls back to fp32 */
            memcpy(f->q + (size_t)i * (size_t)f->dim, f->x, sizeof(float) * (size_t)f->dim);
    }
    size_t cells = (size_t)n_queries * (size_t)f->k_max;
    f->want_s = malloc(sizeof(float) * cells);
    f->want_i = malloc(sizeof(int64_t) * cells);
    f->want_n = malloc(sizeof(int) * (size_t)n_queries);
    assert_true(f->want_s && f->want_i && f->want_n);
}

static void fixture_fini(struct fixture *f)
{
    free(f->x);
    free(f->ids);
    free(f->q);
    free(f->k);
    free(f->want_s);
    free(f->want_i);
    free(f->want_n);
}

/* An index of the fixture with every 11th row removed (swap-remove moves
 * rows, so removal also reorders what the scans see). */
static struct vindex *fixture_index(const struct fixture *f, const char *spec, int n_threads)
{
    struct vindex *vx = NULL;
    assert_int_equal(vindex_new(spec, f->dim, &vx, NULL), IMS_OK);
    assert_int_equal(vindex_add(vx, f->ids, f->x, f->n, NULL), IMS_OK);
    size_t n_rm = 0;
    int64_t *rm = malloc(sizeof(int64_t) * f->n);
    assert_non_null(rm);
    for (size_t i = 5; i < f->n; i += 11)
        rm[n_rm++] = f->ids[i];
    size_t removed = 0;
    assert_int_equal(vindex_remove(vx, rm, n_rm, &removed, NULL), IMS_OK);
    assert_int_equal(removed, n_rm);
    free(rm);
    struct vindex_search_params p = {.n_threads = n_threads};
    assert_int_equal(vindex_set_search_params(vx, &p, NULL), IMS_OK);
    return vx;
}

/* The answers, one search at a time (each alone: a batch of 1). */
static void fixture_answers(struct fixture *f, struct vindex *vx)
{
    uint64_t b0, s0, b1, s1;
    index__batch_stats(vx, &b0, &s0);
    for (int i = 0; i < f->n_queries; i++) {
        size_t at = (size_t)i * (size_t)f->k_max;
        assert_int_equal(vindex_search(vx, f->q + (size_t)i * (size_t)f->dim, f->k[i],
                                       f->want_s + at, f->want_i + at, &f->want_n[i], NULL),
                         IMS_OK);
        assert_int_equal(f->want_n[i], (int)IMS_MIN((size_t)f->k[i], vindex_count(vx)));
    }
    index__batch_stats(vx, &b1, &s1);
    assert_int_equal(b1 - b0, (uint64_t)f->n_queries); /* all alone */
    assert_int_equal(s1 - s0, (uint64_t)f->n_queries);
}

/* Runs query i and checks it against the answer, bit for bit. Returns 0 on
 * success (callable from any thread: no cmocka assertion inside). */
static int check_query(const struct fixture *f, struct vindex *vx, int i)
{
    float *s = malloc(sizeof(float) * (size_t)f->k[i]);
    int64_t *id = malloc(sizeof(int64_t) * (size_t)f->k[i]);
    int nf = -1, bad = 0;
    if (!s || !id)
        bad = 1;
    else if (vindex_search(vx, f->q + (size_t)i * (size_t)f->dim, f->k[i], s, id, &nf, NULL) !=
             IMS_OK)
        bad = 2;
    else if (nf != f->want_n[i])
        bad = 3;
    else {
        size_t at = (size_t)i * (size_t)f->k_max;
        if (memcmp(s, f->want_s + at, sizeof(float) * (size_t)nf) != 0 ||
            memcmp(id, f->want_i + at, sizeof(int64_t) * (size_t)nf) != 0)
            bad = 4;
    }
    free(s);
    free(id);
    return bad;
}

/* The hook: the first batch it sees waits (outside every lock) until
 * `hold_until` searches have queued behind it. */
static atomic_int g_armed;
static int g_hold_until;

static void hold_first_batch(struct vindex *vx, int n_members)
{
    (void)n_members;
    int expected = 1;
    if (!atomic_compare_exchange_strong(&g_armed, &expected, 0))
        return;
    while (index__batch_queued(vx) < g_hold_until)
        sched_yield();
}

struct worker {
    const struct fixture *f;
    struct vindex *vx;
    int first, count, step; /* queries first, first + step, ... */
    int failures;
    pthread_t th;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->count; i++)
        if (check_query(w->f, w->vx, w->first + i * w->step) != 0)
            w->failures++;
    return NULL;
}

/* n_workers threads, each running `per` queries; with hold_until > 0 the
 * first batch waits until that many searches queued behind it. */
static void run_workers(const struct fixture *f, struct vindex *vx, int n_workers, int per,
                        int hold_until)
{
    struct worker w[16];
    assert_true(n_workers <= 16);
    g_hold_until = hold_until;
    atomic_store(&g_armed, hold_until > 0);
    index__batch_hook = hold_first_batch;
    for (int t = 0; t < n_workers; t++) {
        w[t] = (struct worker){.f = f, .vx = vx, .first = t, .count = per, .step = n_workers};
        assert_int_equal(pthread_create(&w[t].th, NULL, worker_run, &w[t]), 0);
    }
    for (int t = 0; t < n_workers; t++) {
        pthread_join(w[t].th, NULL);
        assert_int_equal(w[t].failures, 0);
    }
    index__batch_hook = NULL;
}

/* Eight searches, one batch of 7 behind a held first one: the 7 ran in one
 * multi-query scan and each got exactly its alone answer. */
static void test_batch_equals_alone(void **state)
{
    (void)state;
    const char *specs[] = {"Flat", "FlatF16"};
    struct fixture f;
    fixture_init(&f, 8, 9000);
    for (size_t si = 0; si < 2; si++) {
        for (int th = 1; th <= 2; th++) {
            struct vindex *vx = fixture_index(&f, specs[si], th);
            for (size_t ii = 0; ii < IMS_ARRAY_LEN(g_isas); ii++) {
                if (index__scan_force_isa(g_isas[ii]) != 0)
                    continue;
                fixture_answers(&f, vx);
                uint64_t b0, s0, b1, s1;
                index__batch_stats(vx, &b0, &s0);
                run_workers(&f, vx, 8, 1, 7);
                index__batch_stats(vx, &b1, &s1);
                assert_int_equal(s1 - s0, 8);
                assert_int_equal(b1 - b0, 2); /* the held one, then the other 7 together */
            }
            index__scan_force_isa(NULL);
            vindex_free(vx);
        }
    }
    fixture_fini(&f);
}

/* Flat's coalesced int8 pre-scan: a batch of searches shares one pass over
 * the int8 codes, and every member's answer equals the fp32 scan's, bit for
 * bit (answers computed alone with the pre-scan off), for 1 and 2 scan
 * threads and every kernel family; the queries with k = 7000 (above the
 * count) and the duplicated row's ties take the fp32 path inside the same
 * batch. */
static void test_batch_i8_equals_fp32(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f, 16, 9000);
    for (int th = 1; th <= 2; th++) {
        struct vindex *vx = fixture_index(&f, "Flat", th);
        for (size_t ii = 0; ii < IMS_ARRAY_LEN(g_isas); ii++) {
            if (index__scan_force_isa(g_isas[ii]) != 0)
                continue;
            index__i8_enabled = 0;
            fixture_answers(&f, vx);
            index__i8_enabled = 1;
            uint64_t b0, s0, b1, s1, i0, i1, fb0, fb1;
            index__batch_stats(vx, &b0, &s0);
            index__i8_stats(vx, &i0, NULL, &fb0);
            run_workers(&f, vx, 8, 2, 7);
            index__batch_stats(vx, &b1, &s1);
            index__i8_stats(vx, &i1, NULL, &fb1);
            assert_int_equal(s1 - s0, 16);
            assert_true(b1 - b0 < 16);        /* some searches shared a pass */
            assert_true(i1 - i0 >= 12);       /* all but the k = 7000 ones pre-scanned */
            assert_true(fb1 - fb0 < i1 - i0); /* and most were answered by it */
        }
        index__scan_force_isa(NULL);
        vindex_free(vx);
    }
    fixture_fini(&f);
}

/* 41 threads, one search each: the first is held until the other 40 have
 * queued, then they run as a batch of INDEX_BATCH_MAX and one of the rest. */
struct one_search {
    const struct fixture *f;
    struct vindex *vx;
    int i;
    int bad;
    pthread_t th;
};

static void *one_search_run(void *arg)
{
    struct one_search *o = arg;
    o->bad = check_query(o->f, o->vx, o->i);
    return NULL;
}

static void test_batch_cap_splits(void **state)
{
    (void)state;
    enum { N = 41 };
    struct fixture f;
    fixture_init(&f, N, 6000);
    struct vindex *vx = fixture_index(&f, "FlatF16", 2);
    fixture_answers(&f, vx);
    uint64_t b0, s0, b1, s1;
    index__batch_stats(vx, &b0, &s0);
    struct one_search *o = calloc(N, sizeof *o);
    assert_non_null(o);
    g_hold_until = N - 1;
    atomic_store(&g_armed, 1);
    index__batch_hook = hold_first_batch;
    for (int i = 0; i < N; i++) {
        o[i] = (struct one_search){.f = &f, .vx = vx, .i = i};
        assert_int_equal(pthread_create(&o[i].th, NULL, one_search_run, &o[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(o[i].th, NULL);
        assert_int_equal(o[i].bad, 0);
    }
    index__batch_hook = NULL;
    index__batch_stats(vx, &b1, &s1);
    assert_int_equal(s1 - s0, N);
    assert_int_equal(b1 - b0, 1 + (N - 1 + INDEX_BATCH_MAX - 1) / INDEX_BATCH_MAX);
    free(o);
    vindex_free(vx);
    fixture_fini(&f);
}

/* 8 threads x 50 searches overlapping freely (the first batch is held until
 * three searches queued, so some batches surely form); every answer equals
 * its alone answer. Also with batching switched off, the yardstick of the
 * benchmark. */
static void test_batch_many_threads(void **state)
{
    (void)state;
    const char *specs[] = {"Flat", "FlatF16"};
    struct fixture f;
    fixture_init(&f, 400, 6000);
    for (size_t si = 0; si < 2; si++) {
        struct vindex *vx = fixture_index(&f, specs[si], si == 0 ? 2 : 1);
        fixture_answers(&f, vx);
        uint64_t b0, s0, b1, s1;
        index__batch_stats(vx, &b0, &s0);
        run_workers(&f, vx, 8, 50, 3);
        index__batch_stats(vx, &b1, &s1);
        assert_int_equal(s1 - s0, 400);
        assert_true(b1 - b0 < 400);
        index__batch_enabled = 0;
        run_workers(&f, vx, 4, 5, 0);
        index__batch_enabled = 1;
        vindex_free(vx);
    }
    fixture_fini(&f);
}

/* An empty index and k beyond the count inside a batch. */
static void test_batch_empty_index(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f, 4, 6000);
    struct vindex *vx = NULL;
    assert_int_equal(vindex_new("Flat", f.dim, &vx, NULL), IMS_OK);
    for (int i = 0; i < f.n_queries; i++)
        f.want_n[i] = 0;
    run_workers(&f, vx, 4, 1, 3);
    vindex_free(vx);
    fixture_fini(&f);
}

int main(void)
{
    /* these tests check the batching itself: "always" (one scan at a time);
     * the adaptive default is tested in test_index_batch_policy.c */
    index__batch_enabled = 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multi_kernel_matches_single),
        cmocka_unit_test(test_i8_multi_kernel_matches_single),
        cmocka_unit_test(test_batch_equals_alone),
        cmocka_unit_test(test_batch_i8_equals_fp32),
        cmocka_unit_test(test_batch_cap_splits),
        cmocka_unit_test(test_batch_many_threads),
        cmocka_unit_test(test_batch_empty_index),
    };
    const char *filter = getenv("IMS_TEST_FILTER");
    if (filter && filter[0])
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
