/* SPDX-License-Identifier: MIT */
/*
 * test_index.c: the vector index against brute force, across kernel
 * families, index types, snapshots (good and damaged), removal, pagination,
 * bad input and concurrent use.
 *
 * Data are clustered unit vectors from a seeded splitmix64 + Box-Muller
 * stream, small enough to keep the whole file well under 30 s (also under
 * ASan). Brute force is computed here in double precision; an index result
 * is correct when its score list equals the true sorted top-k scores and
 * every score is the true score of its id (within fp32 rounding), which is
 * robust to exact ties.
 */

#include "imgsearch/index.h"
#include "index_int.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------- */

struct rng {
    uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_unit(struct rng *r) { return ((double)(rng_next(r) >> 11) + 0.5) * 0x1p-53; }

static double rng_normal(struct rng *r)
{
    return sqrt(-2.0 * log(rng_unit(r))) * cos(6.283185307179586 * rng_unit(r));
}

static void normalise(float *x, int dim)
{
    double n = 0;
    for (int i = 0; i < dim; i++)
        n += (double)x[i] * x[i];
    n = sqrt(n);
    for (int i = 0; i < dim; i++)
        x[i] = (float)(x[i] / n);
}

/* (n, dim) clustered unit vectors: n_centres centres, spread `noise`. */
static float *make_vectors(size_t n, int dim, int n_centres, double noise, uint64_t seed)
{
    struct rng r = {seed};
    float *c = malloc(sizeof(float) * (size_t)n_centres * dim);
    float *x = malloc(sizeof(float) * n * dim);
    assert_non_null(c);
    assert_non_null(x);
    for (size_t i = 0; i < (size_t)n_centres * dim; i++)
        c[i] = (float)rng_normal(&r);
    for (size_t i = 0; i < n; i++) {
        const float *ci = c + (rng_next(&r) % (uint64_t)n_centres) * dim;
        for (int j = 0; j < dim; j++)
            x[i * dim + j] = ci[j] + (float)(noise * rng_normal(&r));
        normalise(x + i * dim, dim);
    }
    free(c);
    return x;
}

static int64_t *make_ids(size_t n, int64_t first, int64_t step)
{
    int64_t *ids = malloc(sizeof(int64_t) * n);
    assert_non_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = first + (int64_t)i * step;
    return ids;
}

static double dot_d(const float *a, const float *b, int dim)
{
    double s = 0;
    for (int i = 0; i < dim; i++)
        s += (double)a[i] * b[i];
    return s;
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* Checks an index answer against brute force over the live rows (live[i] != 0). */
static void check_exact(const float *x, const int64_t *ids, const char *live, size_t n, int dim,
                        const float *q, int k, const float *got_s, const int64_t *got_i,
                        int n_found)
{
    double *all = malloc(sizeof(double) * (n ? n : 1));
    assert_non_null(all);
    size_t n_live = 0;
    for (size_t i = 0; i < n; i++)
        if (!live || live[i])
            all[n_live++] = dot_d(q, x + i * dim, dim);
    qsort(all, n_live, sizeof *all, cmp_desc);
    assert_int_equal(n_found, (int)IMS_MIN((size_t)k, n_live));
    for (int r = 0; r < n_found; r++) {
        assert_true(fabs(got_s[r] - all[r]) < 2e-5);
        if (r > 0) {
            assert_true(got_s[r] <= got_s[r - 1]);
            assert_true(got_i[r] != got_i[r - 1]);
        }
        size_t row = SIZE_MAX;
        for (size_t i = 0; i < n; i++)
            if (ids[i] == got_i[r] && (!live || live[i]))
                row = i;
        assert_true(row != SIZE_MAX); /* a live id */
        assert_true(fabs(got_s[r] - dot_d(q, x + row * dim, dim)) < 2e-5);
    }
    free(all);
}

static struct vindex *new_index(const char *spec, int dim)
{
    struct vindex *vx = NULL;
    struct ims_error err = {{0}};
    enum ims_status st = vindex_new(spec, dim, &vx, &err);
    if (st != IMS_OK)
        fail_msg("vindex_new(%s): %s", spec ? spec : "NULL", ims_error_message(&err, st));
    return vx;
}

static void add_ok(struct vindex *vx, const int64_t *ids, const float *x, size_t n)
{
    struct ims_error err = {{0}};
    enum ims_status st = vindex_add(vx, ids, x, n, &err);
    if (st != IMS_OK)
        fail_msg("vindex_add: %s", ims_error_message(&err, st));
}

static void search_ok(struct vindex *vx, const float *q, int k, float *s, int64_t *i, int *nf)
{
    struct ims_error err = {{0}};
    enum ims_status st = vindex_search(vx, q, k, s, i, nf, &err);
    if (st != IMS_OK)
        fail_msg("vindex_search: %s", ims_error_message(&err, st));
}

static char g_dir[64];

static void make_tmpdir(void)
{
    strcpy(g_dir, "/tmp/ims-index-test-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
}

static void remove_tmpdir(void)
{
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(g_dir);
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* ---- kernels ------------------------------------------------------------- */

static void test_f16_conversion(void **state)
{
    (void)state;
    static const struct {
        float f;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},          {-0.0f, 0x8000},        {1.0f, 0x3c00},
        {-2.0f, 0xc000},         {65504.0f, 0x7bff},     {65519.0f, 0x7bff},
        {65520.0f, 0x7c00},      {0x1p-24f, 0x0001},     {0x1p-25f, 0x0000},
        {0x1.8p-25f, 0x0001},    {0x1p-14f, 0x0400},     {1.0f + 0x1p-11f, 0x3c00},
        {1.0f + 0x3p-11f, 0x3c02}, {0.333333343f, 0x3555}, {INFINITY, 0x7c00},
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(cases); i++) {
        uint16_t h;
        index__f32_to_f16(&cases[i].f, &h, 1);
        if (h != cases[i].h)
            fail_msg("f16(%a) = %04x, want %04x", (double)cases[i].f, h, cases[i].h);
    }
    /* Every finite half survives a round trip through fp32. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00)
            continue; /* inf / nan */
        float f = ims_f16_to_f32((uint16_t)h);
        uint16_t back;
        index__f32_to_f16(&f, &back, 1);
        assert_int_equal(back, h);
    }
}

static void test_topk_heap(void **state)
{
    (void)state;
    struct index__topk t;
    assert_int_equal(index__topk_init(&t, 5), IMS_OK);
    struct rng r = {7};
    float best[5] = {-1, -1, -1, -1, -1};
    for (int i = 0; i < 1000; i++) {
        float s = (float)rng_unit(&r);
        if (index__topk_would_take(&t, s, i))
            index__topk_push(&t, s, i);
        for (int j = 0; j < 5; j++) { /* insertion into the reference top 5 */
            if (s > best[j]) {
                memmove(best + j + 1, best + j, sizeof(float) * (size_t)(4 - j));
                best[j] = s;
                break;
            }
        }
    }
    index__topk_sort(&t);
    assert_int_equal(t.n, 5);
    for (int j = 0; j < 5; j++)
        assert_true(t.scores[j] == best[j]);
    index__topk_fini(&t);
    /* ties: lower id first */
    assert_int_equal(index__topk_init(&t, 2), IMS_OK);
    index__topk_push(&t, 1.0f, 9);
    index__topk_push(&t, 1.0f, 3);
    assert_true(index__topk_would_take(&t, 1.0f, 4));
    index__topk_push(&t, 1.0f, 4);
    index__topk_sort(&t);
    assert_int_equal(t.ids[0], 3);
    assert_int_equal(t.ids[1], 4);
    index__topk_fini(&t);
}

/* ---- exact search ----------------------------------------------------------- */

static void test_flat_brute_force_all_isas(void **state)
{
    (void)state;
    const int dims[] = {100, 512, 7};
    const char *isas[] = {"scalar", "avx2", "avx512"};
    for (size_t di = 0; di < IMS_ARRAY_LEN(dims); di++) {
        int dim = dims[di];
        size_t n = 5000; /* two chunks */
        float *x = make_vectors(n, dim, 30, 0.6, 11 + di);
        float *q = make_vectors(8, dim, 30, 0.6, 99 + di);
        int64_t *ids = make_ids(n, 1000, 3);
        struct vindex *vx = new_index("Flat", dim);
        add_ok(vx, ids, x, n);
        assert_int_equal(vindex_count(vx), n);
        for (size_t ii = 0; ii < IMS_ARRAY_LEN(isas); ii++) {
            if (index__scan_force_isa(isas[ii]) != 0)
                continue; /* this CPU lacks it: the others still run */
            for (int threads = 1; threads <= 3; threads += 2) {
                struct vindex_search_params p = {.n_threads = threads};
                assert_int_equal(vindex_set_search_params(vx, &p, NULL), IMS_OK);
                for (int qi = 0; qi < 8; qi++) {
                    float s[50];
                    int64_t id[50];
                    int nf = 0;
                    search_ok(vx, q + qi * dim, 50, s, id, &nf);
                    check_exact(x, ids, NULL, n, dim, q + qi * dim, 50, s, id, nf);
                    search_ok(vx, q + qi * dim, 1, s, id, &nf);
                    check_exact(x, ids, NULL, n, dim, q + qi * dim, 1, s, id, nf);
                }
            }
        }
        index__scan_force_isa(NULL);
        vindex_free(vx);
        free(x);
        free(q);
        free(ids);
    }
}

/* The one fan-out helper (vindex_exact.c): every job runs exactly once, on
 * whatever thread, for 1, a few and the named cap of threads; the cap is
 * what vindex_set_search_params accepts and one more is refused. */
struct fan_job {
    int runs;
    pthread_t self;
};

static void fan_run(void *arg)
{
    struct fan_job *j = arg;
    j->runs++;
    j->self = pthread_self();
}

static void test_fan_out(void **state)
{
    (void)state;
    static struct fan_job jobs[VINDEX_MAX_THREADS];
    const int counts[] = {1, 3, VINDEX_MAX_THREADS};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        memset(jobs, 0, sizeof jobs);
        index__fan_out(jobs, sizeof jobs[0], counts[c], fan_run);
        for (int t = 0; t < VINDEX_MAX_THREADS; t++)
            assert_int_equal(jobs[t].runs, t < counts[c] ? 1 : 0);
        assert_true(pthread_equal(jobs[0].self, pthread_self())); /* job 0: the caller */
    }
    struct vindex *vx = new_index("Flat", 4);
    struct vindex_search_params p = {.n_threads = VINDEX_MAX_THREADS};
    assert_int_equal(vindex_set_search_params(vx, &p, NULL), IMS_OK);
    p.n_threads = VINDEX_MAX_THREADS + 1;
    assert_int_equal(vindex_set_search_params(vx, &p, NULL), IMS_ERR_INVALID);
    vindex_free(vx);
}

static void test_k_larger_than_count(void **state)
{
    (void)state;
    float *x = make_vectors(3, 16, 2, 0.5, 5);
    int64_t ids[3] = {4, 8, 15};
    struct vindex *vx = new_index(NULL, 16);
    float s[10];
    int64_t id[10];
    int nf = -1;
    search_ok(vx, x, 10, s, id, &nf); /* empty index */
    assert_int_equal(nf, 0);
    add_ok(vx, ids, x, 3);
    search_ok(vx, x, 10, s, id, &nf);
    check_exact(x, ids, NULL, 3, 16, x, 10, s, id, nf);
    assert_int_equal(id[0], 4);
    assert_string_equal(vindex_spec(vx), "Flat");
    vindex_free(vx);
    free(x);
}

/* fp16 scan + fp32 re-score returns exactly the fp32 scan's answer. */
static void test_f16_equals_f32(void **state)
{
    (void)state;
    int dim = 512;
    size_t n = 6000;
    float *x = make_vectors(n, dim, 40, 0.3, 21);
    /* exact duplicates under other ids: ties must break the same way */
    memcpy(x + 100 * dim, x + 7 * dim, sizeof(float) * dim);
    memcpy(x + 5000 * dim, x + 7 * dim, sizeof(float) * dim);
    float *q = make_vectors(20, dim, 40, 0.3, 22);
    memcpy(q, x + 7 * dim, sizeof(float) * dim);
    int64_t *ids = make_ids(n, 0, 1);
    struct vindex *a = new_index("Flat", dim), *b = new_index("FlatF16", dim);
    add_ok(a, ids, x, n);
    add_ok(b, ids, x, n);
    for (int threads = 1; threads <= 2; threads++) {
        struct vindex_search_params p = {.n_threads = threads};
        assert_int_equal(vindex_set_search_params(b, &p, NULL), IMS_OK);
        for (int qi = 0; qi < 20; qi++) {
            float sa[10], sb[10];
            int64_t ia[10], ib[10];
            int na, nb;
            search_ok(a, q + qi * dim, 10, sa, ia, &na);
            search_ok(b, q + qi * dim, 10, sb, ib, &nb);
            assert_int_equal(na, nb);
            for (int r = 0; r < na; r++) {
                assert_int_equal(ia[r], ib[r]);
                assert_true(sa[r] == sb[r]);
            }
            if (qi == 0) {
                assert_int_equal(ia[0], 7);
                assert_int_equal(ia[1], 100);
                assert_int_equal(ia[2], 5000);
            }
        }
    }
    vindex_free(a);
    vindex_free(b);
    free(x);
    free(q);
    free(ids);
}

static void test_remove_swap_and_readd(void **state)
{
    (void)state;
    int dim = 24;
    size_t n = 9000;
    float *x = make_vectors(n, dim, 10, 0.5, 31);
    float *q = make_vectors(5, dim, 10, 0.5, 32);
    int64_t *ids = make_ids(n, 10, 1);
    char *live = malloc(n);
    memset(live, 1, n);
    const char *specs[] = {"Flat", "FlatF16"};
    for (size_t si = 0; si < 2; si++) {
        struct vindex *vx = new_index(specs[si], dim);
        add_ok(vx, ids, x, n);
        int64_t *rm = malloc(sizeof(int64_t) * n);
        size_t n_rm = 0;
        struct rng r = {33};
        memset(live, 1, n);
        for (size_t i = 0; i < n; i++)
            if (rng_next(&r) % 3 == 0) {
                rm[n_rm++] = ids[i];
                live[i] = 0;
            }
        rm[n_rm] = 999999999; /* absent: ignored */
        size_t removed = 0;
        assert_int_equal(vindex_remove(vx, rm, n_rm + 1, &removed, NULL), IMS_OK);
        assert_int_equal(removed, n_rm);
        assert_int_equal(vindex_count(vx), n - n_rm);
        for (int qi = 0; qi < 5; qi++) {
            float s[20];
            int64_t id[20];
            int nf;
            search_ok(vx, q + qi * dim, 20, s, id, &nf);
            check_exact(x, ids, live, n, dim, q + qi * dim, 20, s, id, nf);
        }
        /* removing again finds nothing */
        assert_int_equal(vindex_remove(vx, rm, n_rm, &removed, NULL), IMS_OK);
        assert_int_equal(removed, 0);
        /* re-add the first removed one */
        size_t row = (size_t)(rm[0] - 10);
        add_ok(vx, &rm[0], x + row * dim, 1);
        live[row] = 1;
        float s[5];
        int64_t id[5];
        int nf;
        search_ok(vx, x + row * dim, 5, s, id, &nf);
        check_exact(x, ids, live, n, dim, x + row * dim, 5, s, id, nf);
        assert_int_equal(id[0], rm[0]);
        vindex_free(vx);
        free(rm);
    }
    free(live);
    free(x);
    free(q);
    free(ids);
}

/* ---- int8 pre-scan ---------------------------------------------------------- */

static const char *const g_isas[] = {"scalar", "avx2", "avx512"};

static int64_t i8_max_code(int dim)
{
    int64_t m = ((int64_t)1 << 31) / (127 * (int64_t)dim);
    return m > 32767 ? 32767 : m;
}

/* Every int8 kernel computes qs . codes exactly (an int64 reference), for
 * dims around the 64-byte row stride, odd row counts, unaligned rows and the
 * extreme values the query preparation allows. */
static void test_i8_kernels_exact(void **state)
{
    (void)state;
    const int dims[] = {1, 7, 63, 64, 65, 100, 512, 513, 2000};
    const size_t ns[] = {1, 2, 3, 5, 37};
    const char *names[] = {"scalar", "avx2", "avx512bw", "avx512vnni"};
    struct rng r = {201};
    int n_kernels = 0;
    for (size_t k = 0; k < IMS_ARRAY_LEN(names); k++)
        n_kernels += index__dot_i8_kernel(names[k]) != NULL;
    assert_true(n_kernels >= 1);
    assert_non_null(index__dot_i8_kernel("scalar"));
    assert_null(index__dot_i8_kernel("avx1024"));
    for (size_t di = 0; di < IMS_ARRAY_LEN(dims); di++) {
        int dim = dims[di];
        size_t stride = index__i8_stride(dim);
        assert_true(stride % 64 == 0 && stride >= (size_t)dim && stride < (size_t)dim + 64);
        int64_t m16 = i8_max_code(dim);
        for (size_t ni = 0; ni < IMS_ARRAY_LEN(ns); ni++) {
            size_t n = ns[ni];
            int8_t *mem = calloc(n * stride + 1, 1);
            int16_t *q = calloc(stride, sizeof *q);
            int32_t *out = malloc(sizeof(int32_t) * (n + 1));
            int64_t *ref = malloc(sizeof(int64_t) * n);
            assert_true(mem && q && out && ref);
            int8_t *codes = mem + 1; /* not aligned */
            for (int i = 0; i < dim; i++)
                q[i] = (int16_t)(rng_next(&r) % 2 ? m16 : -m16);
            for (size_t row = 0; row < n; row++)
                for (int i = 0; i < dim; i++) {
                    int8_t v = (int8_t)((int)(rng_next(&r) % 255) - 127);
                    if (row == 0) /* the largest |dot| the bounds allow */
                        v = (int8_t)(q[i] > 0 ? 127 : -127);
                    else if (row == 1)
                        v = (int8_t)(q[i] > 0 ? -127 : 127);
                    codes[row * stride + (size_t)i] = v;
                }
            for (size_t row = 0; row < n; row++) {
                ref[row] = 0;
                for (int i = 0; i < dim; i++)
                    ref[row] += (int64_t)q[i] * codes[row * stride + (size_t)i];
                assert_true(llabs(ref[row]) < ((int64_t)1 << 31));
            }
            for (size_t k = 0; k < IMS_ARRAY_LEN(names); k++) {
                index__dot_i8_fn f = index__dot_i8_kernel(names[k]);
                if (!f)
                    continue;
                out[n] = 0x5a5a5a5a;
                f(q, codes, n, stride, out);
                for (size_t row = 0; row < n; row++)
                    if (out[row] != ref[row])
                        fail_msg("%s dim %d n %zu row %zu: %d, want %lld", names[k], dim, n, row,
                                 out[row], (long long)ref[row]);
                assert_int_equal(out[n], 0x5a5a5a5a);
            }
            free(mem);
            free(q);
            free(out);
            free(ref);
        }
    }
}

/* Rows that stress the quantisation: random, one huge component (coarse
 * codes, large residual), all equal, zero, tiny, subnormal, norm 1000. */
static void fill_hard_row(float *x, int dim, int kind, struct rng *r)
{
    for (int i = 0; i < dim; i++) {
        double g = rng_normal(r);
        switch (kind % 7) {
        case 0: x[i] = (float)(g / sqrt(dim)); break;
        case 1: x[i] = (float)(i == (int)(rng_next(r) % (uint64_t)dim) ? 1.0 : 1e-3 * g); break;
        case 2: x[i] = 0.125f; break;
        case 3: x[i] = 0.0f; break;
        case 4: x[i] = (float)(1e-30 * g); break;
        case 5: x[i] = (float)(1e-42 * g); break;
        default: x[i] = (float)(1000.0 * g / sqrt(dim)); break;
        }
    }
    if (kind % 7 == 1)
        x[0] = 1.0f; /* at least one huge component */
}

/* Codes in range and zero padded, scale = max|x| / 127, the residual bound
 * rho and the code norm are upper bounds (and not absurdly loose), and every
 * kernel family gives the same codes. */
static void test_i8_quantize(void **state)
{
    (void)state;
    const int dims[] = {512, 100, 7, 1};
    struct rng r = {301};
    for (size_t di = 0; di < IMS_ARRAY_LEN(dims); di++) {
        int dim = dims[di];
        size_t stride = index__i8_stride(dim);
        float *x = malloc(sizeof(float) * (size_t)dim);
        int8_t *codes = malloc(stride), *first = malloc(stride);
        assert_true(x && codes && first);
        for (int kind = 0; kind < 21; kind++) {
            fill_hard_row(x, dim, kind, &r);
            float scale0 = 0;
            int n_families = 0;
            for (size_t ii = 0; ii < IMS_ARRAY_LEN(g_isas); ii++) {
                if (index__scan_force_isa(g_isas[ii]) != 0)
                    continue;
                float scale, rho, cn;
                memset(codes, 0x55, stride);
                index__i8_quantize_row(x, dim, codes, &scale, &rho, &cn);
                float m = 0;
                for (int i = 0; i < dim; i++)
                    m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
                if (m == 0)
                    assert_true(scale == 0);
                else
                    assert_true(scale > 0 && scale >= (float)(m / 127.0) * 0.999f);
                long double rr = 0, xx = 0, cc = 0;
                for (int i = 0; i < dim; i++) {
                    assert_true(codes[i] >= -127 && codes[i] <= 127);
                    long double c = (long double)scale * codes[i], e = (long double)x[i] - c;
                    /* nearest code, unless clamped at +-127 */
                    if (abs(codes[i]) < 127)
                        assert_true(fabsl(e) <= 0.5L * scale * (1 + 1e-6L));
                    rr += e * e;
                    xx += (long double)x[i] * x[i];
                    cc += c * c;
                }
                for (size_t i = (size_t)dim; i < stride; i++)
                    assert_int_equal(codes[i], 0);
                long double d_u = dim * 0x1p-24L, want = sqrtl(rr) + d_u / (1 - d_u) * sqrtl(xx);
                assert_true((long double)rho >= want);
                assert_true((long double)rho <= want * (1 + 1e-6L) + 1e-44L);
                assert_true((long double)cn >= sqrtl(cc));
                assert_true((long double)cn <= sqrtl(cc) * (1 + 1e-6L) + 1e-44L);
                if (n_families++ == 0) {
                    memcpy(first, codes, stride);
                    scale0 = scale;
                } else {
                    assert_memory_equal(codes, first, stride);
                    assert_true(scale == scale0);
                }
            }
            assert_true(n_families >= 1);
        }
        index__scan_force_isa(NULL);
        free(x);
        free(codes);
        free(first);
    }
}

/* For many (query, row) pairs, the bounds hold: lower <= s <= upper for the
 * row's fp32 kernel score s (each family's) and for the exact dot product;
 * and they are not loose beyond the rule (|q| rho + small terms). Queries of
 * any norm, one-hot, zero; the threshold keeps exactly the rows whose upper
 * bound reaches it. */
static void test_i8_bound_holds(void **state)
{
    (void)state;
    const int dims[] = {512, 100, 7};
    const double qscales[] = {1.0, 1e3, 1e-3, 1e-20, 0.0};
    struct rng r = {401};
    long n_checked = 0;
    for (size_t di = 0; di < IMS_ARRAY_LEN(dims); di++) {
        int dim = dims[di];
        size_t n = 350, stride = index__i8_stride(dim);
        float *x = malloc(sizeof(float) * n * (size_t)dim);
        int8_t *codes = malloc(n * stride);
        float *scales = malloc(sizeof(float) * n), *rhos = malloc(sizeof(float) * n);
        float *q = malloc(sizeof(float) * (size_t)dim), *lo = malloc(sizeof(float) * n);
        float *up = malloc(sizeof(float) * n), *lo2 = malloc(sizeof(float) * n);
        float *up2 = malloc(sizeof(float) * n);
        int16_t *qs = malloc(sizeof(int16_t) * stride);
        int32_t *dots = malloc(sizeof(int32_t) * n);
        uint32_t *sel = malloc(sizeof(uint32_t) * n);
        assert_true(x && codes && scales && rhos && q && lo && up && lo2 && up2 && qs && dots &&
                    sel);
        for (size_t ii = 0; ii < IMS_ARRAY_LEN(g_isas); ii++) {
            if (index__scan_force_isa(g_isas[ii]) != 0)
                continue;
            double max_norm = 0;
            float max_cn = 0;
            for (size_t i = 0; i < n; i++) {
                float *row = x + i * (size_t)dim, cn;
                fill_hard_row(row, dim, (int)i, &r);
                if (i % 50 == 49) /* near-duplicates of row 0 */
                    for (int j = 0; j < dim; j++)
                        row[j] = x[j] * (1.0f + 1e-5f * (float)rng_normal(&r));
                index__i8_quantize_row(row, dim, codes + i * stride, &scales[i], &rhos[i], &cn);
                max_cn = cn > max_cn ? cn : max_cn;
                max_norm = fmax(max_norm, sqrt(dot_d(row, row, dim)));
            }
            for (int qi = 0; qi < 40; qi++) {
                double sc = qscales[qi % IMS_ARRAY_LEN(qscales)];
                for (int j = 0; j < dim; j++)
                    q[j] = (float)(sc * rng_normal(&r) / sqrt(dim));
                if (qi % 7 == 3) { /* one-hot */
                    memset(q, 0, sizeof(float) * (size_t)dim);
                    q[rng_next(&r) % (uint64_t)dim] = (float)(sc ? sc : 1);
                }
                if (qi % 11 == 5) /* a row itself */
                    memcpy(q, x + (rng_next(&r) % n) * (size_t)dim, sizeof(float) * (size_t)dim);
                struct index__i8_query p;
                assert_int_equal(index__i8_query_init(q, dim, (float)(max_norm * 1.001), max_cn,
                                                      qs, &p),
                                 1);
                for (size_t i = (size_t)dim; i < stride; i++)
                    assert_int_equal(qs[i], 0);
                index__dot_i8(qs, codes, n, stride, dots);
                size_t m = index__i8_select(&p, dots, scales, rhos, n, -INFINITY, sel, lo, up);
                assert_int_equal(m, n);
                double qn = sqrt(dot_d(q, q, dim));
                for (size_t i = 0; i < n; i++) {
                    assert_int_equal(sel[i], i);
                    const float *row = x + i * (size_t)dim;
                    float s;
                    index__dot_f32(q, row, 1, dim, &s);
                    long double exact = 0;
                    for (int j = 0; j < dim; j++)
                        exact += (long double)q[j] * row[j];
                    if (!(lo[i] <= s && s <= up[i] && lo[i] <= exact && exact <= up[i]))
                        fail_msg("%s dim %d query %d row %zu: s %a exact %La outside [%a, %a]",
                                 g_isas[ii], dim, qi, i, (double)s, exact, (double)lo[i],
                                 (double)up[i]);
                    double a = 0.5 * ((double)lo[i] + up[i]);
                    double width = (double)up[i] - lo[i];
                    double allowed = 2.0 * (qn * rhos[i] * (1 + 1e-5) + p.ec + 0x1p-19 * fabs(a)) +
                                     0x1p-90;
                    if (width > allowed)
                        fail_msg("dim %d query %d row %zu: width %g > %g", dim, qi, i, width,
                                 allowed);
                    n_checked++;
                }
                /* a threshold keeps exactly the rows whose upper bound reaches it */
                float thr = up[(size_t)qi % n];
                size_t m2 = index__i8_select(&p, dots, scales, rhos, n, thr, sel, lo2, up2), j = 0;
                for (size_t i = 0; i < n; i++) {
                    if (up[i] < thr)
                        continue;
                    assert_true(j < m2);
                    assert_int_equal(sel[j], i);
                    assert_true(lo2[j] == lo[i] && up2[j] == up[i]);
                    j++;
                }
                assert_int_equal(j, m2);
            }
        }
        index__scan_force_isa(NULL);
        /* values too large for the bounds: the caller must scan in fp32 */
        struct index__i8_query p;
        for (int j = 0; j < dim; j++)
            q[j] = 1e30f;
        assert_int_equal(index__i8_query_init(q, dim, 1.0f, 1.0f, qs, &p), 0);
        q[0] = 1.0f;
        for (int j = 1; j < dim; j++)
            q[j] = 0.0f;
        assert_int_equal(index__i8_query_init(q, dim, 1e30f, 1e30f, qs, &p), 0);
        free(x);
        free(codes);
        free(scales);
        free(rhos);
        free(q);
        free(lo);
        free(up);
        free(lo2);
        free(up2);
        free(qs);
        free(dots);
        free(sel);
    }
    assert_true(n_checked > 50000);
}

/* The same search with the int8 pre-scan and with the fp32 scan: same
 * count, ids, scores (bit for bit) and order. */
static void expect_i8_equals_fp32(struct vindex *vx, const float *q, int nq, int dim,
                                  const int *ks, int n_ks, const char *what)
{
    for (int qi = 0; qi < nq; qi++)
        for (int ki = 0; ki < n_ks; ki++) {
            int k = ks[ki];
            float *sa = malloc(sizeof(float) * (size_t)k), *sb = malloc(sizeof(float) * (size_t)k);
            int64_t *ia = malloc(sizeof(int64_t) * (size_t)k);
            int64_t *ib = malloc(sizeof(int64_t) * (size_t)k);
            int na = -1, nb = -2;
            assert_true(sa && sb && ia && ib);
            index__i8_enabled = 0;
            search_ok(vx, q + (size_t)qi * (size_t)dim, k, sa, ia, &na);
            index__i8_enabled = 1;
            search_ok(vx, q + (size_t)qi * (size_t)dim, k, sb, ib, &nb);
            if (na != nb || memcmp(ia, ib, sizeof(int64_t) * (size_t)na) != 0 ||
                memcmp(sa, sb, sizeof(float) * (size_t)na) != 0)
                fail_msg("%s: query %d k %d: the int8 answer differs from the fp32 scan's", what,
                         qi, k);
            free(sa);
            free(sb);
            free(ia);
            free(ib);
        }
}

/* Flat's int8 pre-scan returns exactly the fp32 scan's answer on random
 * unit vectors and on adversarial sets: many near-duplicates, exact
 * duplicates (ties: lower id first), rows with one huge component (coarse
 * codes), non-normalised queries, k up to above the count, removed and
 * re-added ids, 1-3 scan threads, every kernel family. Both outcomes of the
 * pre-scan are exercised: answered from few candidates, and the fall-back
 * to the fp32 scan when the ties exceed the candidate limit. */
static void test_i8_equals_fp32(void **state)
{
    (void)state;
    const int dims[] = {512, 100};
    for (size_t di = 0; di < IMS_ARRAY_LEN(dims); di++) {
        int dim = dims[di];
        size_t n = 6000;
        struct rng r = {501 + di};
        float *x = make_vectors(n, dim, 40, 0.4, 502 + di);
        /* 1000..1999: near-duplicates of row 1000; 3000..3199: exact
         * duplicates of row 7 (200 < the 439-candidate limit); 4000..4499:
         * exact duplicates of row 8 (500: beyond it); 5000..5299: one huge
         * component */
        for (size_t i = 1001; i < 2000; i++)
            for (int j = 0; j < dim; j++)
                x[i * dim + j] = x[1000 * dim + j] * (1.0f + 1e-4f * (float)rng_normal(&r));
        for (size_t i = 3000; i < 3200; i++)
            memcpy(x + i * dim, x + 7 * dim, sizeof(float) * (size_t)dim);
        for (size_t i = 4000; i < 4500; i++)
            memcpy(x + i * dim, x + 8 * dim, sizeof(float) * (size_t)dim);
        for (size_t i = 5000; i < 5300; i++)
            fill_hard_row(x + i * dim, dim, 1, &r);
        int nq = 8;
        float *q = make_vectors((size_t)nq, dim, 40, 0.4, 503 + di);
        memcpy(q + 1 * dim, x + 1000 * dim, sizeof(float) * (size_t)dim);
        memcpy(q + 2 * dim, x + 7 * dim, sizeof(float) * (size_t)dim);
        memcpy(q + 3 * dim, x + 8 * dim, sizeof(float) * (size_t)dim);
        memcpy(q + 4 * dim, x + 5100 * dim, sizeof(float) * (size_t)dim);
        for (int j = 0; j < dim; j++) {
            q[5 * dim + j] *= 1000.0f; /* not normalised */
            q[6 * dim + j] *= 1e-3f;
            q[7 * dim + j] = -q[7 * dim + j];
        }
        int64_t *ids = make_ids(n, 50, 2);
        struct vindex *vx = new_index("Flat", dim);
        add_ok(vx, ids, x, n);
        const int ks[] = {1, 10, 187, 188, 7000};
        uint64_t s0, c0, f0, s1, c1, f1;
        /* every family on one thread, the best one also on 2 and 3 */
        for (size_t ii = 0; ii < IMS_ARRAY_LEN(g_isas) + 2; ii++) {
            int th = ii < IMS_ARRAY_LEN(g_isas) ? 1 : (int)(ii - IMS_ARRAY_LEN(g_isas)) + 2;
            if (index__scan_force_isa(th == 1 ? g_isas[ii] : NULL) != 0)
                continue;
            {
                struct vindex_search_params p = {.n_threads = th};
                assert_int_equal(vindex_set_search_params(vx, &p, NULL), IMS_OK);
                index__i8_stats(vx, &s0, &c0, &f0);
                expect_i8_equals_fp32(vx, q, nq, dim, ks, (int)IMS_ARRAY_LEN(ks),
                                      index__scan_isa());
                index__i8_stats(vx, &s1, &c1, &f1);
                /* k <= 187 = 6000 / 32 takes the pre-scan: 3 of the 5 ks */
                assert_int_equal(s1 - s0, (uint64_t)nq * 3);
                assert_true(f1 - f0 >= 1);          /* the 500 duplicates of row 8 */
                /* a good share answered from the candidates (the clustered
                 * queries at k = 187 and the near-duplicate ones exceed the
                 * 439-candidate limit of these 6000 rows) */
                assert_true((s1 - s0) - (f1 - f0) >= (uint64_t)nq);
                assert_true(c1 - c0 >= (uint64_t)(s1 - s0 - (f1 - f0)));
            }
        }
        index__scan_force_isa(NULL);
        /* ties: the duplicates of row 7 come in id order */
        {
            float s[5];
            int64_t id[5];
            int nf;
            search_ok(vx, x + 7 * dim, 5, s, id, &nf);
            assert_int_equal(id[0], ids[7]);
            for (int i = 1; i < 5; i++)
                assert_int_equal(id[i], ids[3000 + i - 1]);
            check_exact(x, ids, NULL, n, dim, x + 7 * dim, 5, s, id, nf);
        }
        /* after removals (swap-remove moves rows and their codes) and re-adds */
        char *live = malloc(n);
        int64_t *rm = malloc(sizeof(int64_t) * n);
        assert_true(live && rm);
        memset(live, 1, n);
        size_t n_rm = 0;
        for (size_t i = 0; i < n; i += 3) {
            rm[n_rm++] = ids[i];
            live[i] = 0;
        }
        size_t removed;
        assert_int_equal(vindex_remove(vx, rm, n_rm, &removed, NULL), IMS_OK);
        assert_int_equal(removed, n_rm);
        float *back = malloc(sizeof(float) * 100 * (size_t)dim);
        assert_non_null(back);
        for (size_t i = 0; i < 100; i++) /* the first 100 removed come back */
            memcpy(back + i * dim, x + i * 3 * dim, sizeof(float) * (size_t)dim);
        add_ok(vx, rm, back, 100);
        free(back);
        for (size_t i = 0; i < 100; i++)
            live[i * 3] = 1;
        const int ks2[] = {1, 10, 50};
        for (int th = 1; th <= 2; th++) {
            struct vindex_search_params p = {.n_threads = th};
            assert_int_equal(vindex_set_search_params(vx, &p, NULL), IMS_OK);
            index__i8_stats(vx, &s0, &c0, &f0);
            expect_i8_equals_fp32(vx, q, nq, dim, ks2, 3, "after removal");
            index__i8_stats(vx, &s1, &c1, &f1);
            assert_int_equal(s1 - s0, (uint64_t)nq * 3);
            for (int qi = 0; qi < nq; qi++) {
                float s[50];
                int64_t id[50];
                int nf;
                if (qi == 5)
                    continue; /* scores ~1000: beyond check_exact's absolute tolerance */
                search_ok(vx, q + qi * dim, 50, s, id, &nf);
                check_exact(x, ids, live, n, dim, q + qi * dim, 50, s, id, nf);
            }
        }
        free(live);
        free(rm);
        vindex_free(vx);
        free(x);
        free(q);
        free(ids);
    }
}

/* ---- FAISS types ----------------------------------------------------------- */

static void test_faiss_types(void **state)
{
    (void)state;
    /* 4-bit PQ keeps the k-means small, and PCA stands for the pre-transforms
     * (OPQ takes the same IndexPreTransform path but trains for ~20 s). */
    const char *specs[] = {"IVF16,Flat", "HNSW16", "IVF16,PQ8x4", "PQ8x4", "PCA16,IVF8,PQ8x4"};
    int dim = 32;
    size_t n = 3000;
    float *x = make_vectors(n, dim, 16, 0.4, 41);
    int64_t *ids = make_ids(n, 5, 2);
    char *live = malloc(n);
    for (size_t si = 0; si < IMS_ARRAY_LEN(specs); si++) {
        struct vindex *vx = new_index(specs[si], dim);
        int is_hnsw = strncmp(specs[si], "HNSW", 4) == 0;
        assert_int_equal(vindex_needs_training(vx), is_hnsw ? 0 : 1);
        if (!is_hnsw) {
            struct ims_error err = {{0}};
            assert_int_equal(vindex_add(vx, ids, x, 10, &err), IMS_ERR_INVALID);
            assert_non_null(strstr(err.message, "trained"));
        }
        assert_int_equal(vindex_train(vx, x, n, NULL), IMS_OK);
        assert_int_equal(vindex_needs_training(vx), 0);
        add_ok(vx, ids, x, n);
        struct vindex_search_params p = {.nprobe = 16, .ef_search = 64, .rerank = 500};
        assert_int_equal(vindex_set_search_params(vx, &p, NULL), IMS_OK);
        memset(live, 1, n);
        /* a stored vector finds itself first, with its exact score */
        for (size_t i = 0; i < n; i += 250) {
            float s[10];
            int64_t id[10];
            int nf;
            search_ok(vx, x + i * dim, 10, s, id, &nf);
            assert_int_equal(nf, 10);
            assert_int_equal(id[0], ids[i]);
            assert_true(fabs(s[0] - dot_d(x + i * dim, x + i * dim, dim)) < 2e-5);
            for (int r = 1; r < nf; r++)
                assert_true(s[r] <= s[r - 1]);
        }
        /* remove every other vector of the first 600; they never come back */
        int64_t rm[300];
        for (int i = 0; i < 300; i++) {
            rm[i] = ids[2 * i];
            live[2 * i] = 0;
        }
        size_t removed = 0;
        assert_int_equal(vindex_remove(vx, rm, 300, &removed, NULL), IMS_OK);
        assert_int_equal(removed, 300);
        assert_int_equal(vindex_count(vx), n - 300);
        for (int i = 0; i < 600; i += 7) {
            float s[10];
            int64_t id[10];
            int nf;
            search_ok(vx, x + (size_t)i * dim, 10, s, id, &nf);
            assert_int_equal(nf, 10);
            for (int r = 0; r < nf; r++) {
                size_t row = (size_t)(id[r] - 5) / 2;
                assert_true(row < n && live[row]);
                assert_true(fabs(s[r] - dot_d(x + (size_t)i * dim, x + row * dim, dim)) < 2e-5);
            }
            if (live[i])
                assert_int_equal(id[0], ids[i]);
        }
        /* a removed id can come back */
        add_ok(vx, &rm[0], x, 1);
        float s[3];
        int64_t id[3];
        int nf;
        search_ok(vx, x, 3, s, id, &nf);
        assert_int_equal(id[0], rm[0]);
        assert_true(id[1] != rm[0] && id[2] != rm[0]);
        vindex_free(vx);
    }
    free(live);
    free(x);
    free(ids);
}

static void test_hnsw_many_tombstones(void **state)
{
    (void)state;
    int dim = 16;
    size_t n = 1000;
    float *x = make_vectors(n, dim, 8, 0.5, 51);
    int64_t *ids = make_ids(n, 0, 1);
    struct vindex *vx = new_index("HNSW8", dim);
    add_ok(vx, ids, x, n);
    /* remove 95%: searches must still fill k from the live 5% */
    size_t removed = 0;
    assert_int_equal(vindex_remove(vx, ids, 950, &removed, NULL), IMS_OK);
    assert_int_equal(removed, 950);
    float s[20];
    int64_t id[20];
    int nf;
    search_ok(vx, x, 20, s, id, &nf);
    assert_int_equal(nf, 20);
    for (int r = 0; r < nf; r++)
        assert_true(id[r] >= 950);
    vindex_free(vx);
    free(x);
    free(ids);
}

/* Our walk of FAISS's HNSW graph finds what FAISS's own walk finds. */
static void test_hnsw_own_walk_matches_faiss(void **state)
{
    (void)state;
    int dim = 48;
    size_t n = 4000;
    int nq = 40;
    float *x = make_vectors(n, dim, 20, 0.5, 111);
    float *q = make_vectors((size_t)nq, dim, 20, 0.5, 112);
    int64_t *ids = make_ids(n, 0, 1);
    struct vindex *vx = new_index("HNSW16", dim);
    add_ok(vx, ids, x, n);
    struct vindex_search_params p = {.ef_search = 128};
    assert_int_equal(vindex_set_search_params(vx, &p, NULL), IMS_OK);
    double recall[2] = {0, 0};
    for (int walk = 0; walk < 2; walk++) {
        index__hnsw_own_walk = walk;
        for (int qi = 0; qi < nq; qi++) {
            const float *qq = q + (size_t)qi * dim;
            float s[10];
            int64_t id[10];
            int nf;
            search_ok(vx, qq, 10, s, id, &nf);
            assert_int_equal(nf, 10);
            /* the true top 10 by brute force */
            double t[10];
            int64_t ti[10];
            for (int r = 0; r < 10; r++) {
                t[r] = -1e30;
                ti[r] = -1;
            }
            for (size_t i = 0; i < n; i++) {
                double d = dot_d(qq, x + i * dim, dim);
                if (d <= t[9])
                    continue;
                int r = 9;
                while (r > 0 && t[r - 1] < d) {
                    t[r] = t[r - 1];
                    ti[r] = ti[r - 1];
                    r--;
                }
                t[r] = d;
                ti[r] = (int64_t)i;
            }
            for (int a = 0; a < 10; a++)
                for (int b = 0; b < 10; b++)
                    recall[walk] += id[a] == ti[b];
        }
        recall[walk] /= 10.0 * nq;
    }
    index__hnsw_own_walk = 1;
    print_message("hnsw recall@10: faiss walk %.3f, own walk %.3f\n", recall[0], recall[1]);
    assert_true(recall[1] >= 0.85);
    assert_true(recall[1] >= recall[0] - 0.02);
    vindex_free(vx);
    free(x);
    free(q);
    free(ids);
}

static void test_pagination(void **state)
{
    (void)state;
    const char *specs[] = {"Flat", "FlatF16", "HNSW16", "IVF8,Flat"};
    int dim = 40;
    size_t n = 2000;
    float *x = make_vectors(n, dim, 12, 0.5, 61);
    float *q = make_vectors(3, dim, 12, 0.5, 62);
    int64_t *ids = make_ids(n, 1, 1);
    for (size_t si = 0; si < IMS_ARRAY_LEN(specs); si++) {
        struct vindex *vx = new_index(specs[si], dim);
        assert_int_equal(vindex_train(vx, x, n, NULL), IMS_OK);
        add_ok(vx, ids, x, n);
        struct vindex_search_params p = {.nprobe = 8, .ef_search = 200, .rerank = 200};
        assert_int_equal(vindex_set_search_params(vx, &p, NULL), IMS_OK);
        for (int qi = 0; qi < 3; qi++) {
            float all_s[40];
            int64_t all_i[40];
            int n_all;
            search_ok(vx, q + qi * dim, 40, all_s, all_i, &n_all);
            assert_int_equal(n_all, 40);
            for (int off = 0; off < 40; off += 10) {
                float s[40];
                int64_t id[40];
                int nf;
                search_ok(vx, q + qi * dim, off + 10, s, id, &nf);
                assert_int_equal(nf, off + 10);
                for (int r = off; r < off + 10; r++) {
                    assert_int_equal(id[r], all_i[r]);
                    assert_true(s[r] == all_s[r]);
                }
            }
        }
        vindex_free(vx);
    }
    free(x);
    free(q);
    free(ids);
}

/* ---- snapshots -------------------------------------------------------------- */

static void test_snapshot_round_trip(void **state)
{
    (void)state;
    const char *specs[] = {"Flat", "FlatF16", "IVF8,PQ4", "HNSW8", "Flat"};
    int dims[] = {33, 64, 32, 32, 1};
    make_tmpdir();
    for (size_t si = 0; si < IMS_ARRAY_LEN(specs); si++) {
        int dim = dims[si];
        size_t n = 1500;
        float *x = make_vectors(n, dim, 10, 0.5, 71 + si);
        int64_t *ids = make_ids(n, 100, 1);
        struct vindex *vx = new_index(specs[si], dim);
        assert_int_equal(vindex_train(vx, x, n, NULL), IMS_OK);
        add_ok(vx, ids, x, n);
        struct vindex_search_params p = {.nprobe = 4, .ef_search = 32, .rerank = 50};
        assert_int_equal(vindex_set_search_params(vx, &p, NULL), IMS_OK);
        size_t removed;
        assert_int_equal(vindex_remove(vx, ids + 10, 40, &removed, NULL), IMS_OK);
        char path[128];
        snprintf(path, sizeof path, "%s/index.snap", g_dir);
        struct ims_error err = {{0}};
        enum ims_status st = vindex_save(vx, path, 4242, &err);
        if (st != IMS_OK)
            fail_msg("save: %s", ims_error_message(&err, st));
        struct vindex *back = NULL;
        int64_t last = 0;
        st = vindex_load(path, dim, specs[si], &back, &last, &err);
        if (st != IMS_OK)
            fail_msg("load %s: %s", specs[si], ims_error_message(&err, st));
        assert_int_equal(last, 4242);
        assert_int_equal(vindex_last_id(back), 4242);
        assert_int_equal(vindex_count(back), n - 40);
        assert_string_equal(vindex_spec(back), specs[si]);
        assert_int_equal(vindex_set_search_params(back, &p, NULL), IMS_OK);
        for (size_t i = 0; i < n; i += 97) {
            float s1[10], s2[10];
            int64_t i1[10], i2[10];
            int n1, n2;
            index__i8_enabled = 0; /* the original by fp32 scan, the loaded one by int8 */
            search_ok(vx, x + i * dim, 10, s1, i1, &n1);
            index__i8_enabled = 1;
            search_ok(back, x + i * dim, 10, s2, i2, &n2);
            assert_int_equal(n1, n2);
            for (int r = 0; r < n1; r++) {
                assert_int_equal(i1[r], i2[r]);
                assert_true(s1[r] == s2[r]);
                assert_true(i1[r] < 110 || i1[r] >= 150); /* removed stay removed */
            }
        }
        if (strcmp(specs[si], "Flat") == 0 && dim > 1) { /* codes rebuilt at load (at d = 1
                                                            every row ties: fp32 fall-back) */
            uint64_t n_i8, n_fb;
            index__i8_stats(back, &n_i8, NULL, &n_fb);
            assert_true(n_i8 > 0 && n_fb < n_i8);
        }
        /* the loaded index keeps working: add more, remove more */
        int64_t extra = 100000;
        add_ok(back, &extra, x, 1);
        assert_int_equal(vindex_count(back), n - 39);
        assert_int_equal(vindex_last_id(back), 100000);
        vindex_free(back);
        vindex_free(vx);
        free(x);
        free(ids);
        assert_int_equal(count_files(g_dir), 1); /* no temp file left */
    }
    remove_tmpdir();
}

static void write_bytes(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void expect_load_error(const char *path, int dim, const char *spec, enum ims_status want,
                              const char *needle)
{
    struct vindex *vx = NULL;
    struct ims_error err = {{0}};
    int64_t last = 77;
    enum ims_status st = vindex_load(path, dim, spec, &vx, &last, &err);
    if (st != want || !strstr(err.message, needle))
        fail_msg("load: got %s \"%s\", want %s containing \"%s\"", ims_status_name(st),
                 err.message, ims_status_name(want), needle);
    assert_null(vx);
    assert_int_equal(last, 77);
}

static void test_snapshot_damage(void **state)
{
    (void)state;
    int dim = 16;
    size_t n = 200;
    const char *specs[] = {"Flat", "IVF4,Flat"};
    make_tmpdir();
    for (size_t si = 0; si < 2; si++) {
        float *x = make_vectors(n, dim, 4, 0.5, 81);
        int64_t *ids = make_ids(n, 0, 1);
        struct vindex *vx = new_index(specs[si], dim);
        assert_int_equal(vindex_train(vx, x, n, NULL), IMS_OK);
        add_ok(vx, ids, x, n);
        char path[128], bad[128];
        snprintf(path, sizeof path, "%s/good.snap", g_dir);
        snprintf(bad, sizeof bad, "%s/bad.snap", g_dir);
        assert_int_equal(vindex_save(vx, path, 199, NULL), IMS_OK);
        char *data;
        size_t len;
        assert_int_equal(ims_file_read(path, 1 << 24, &data, &len, NULL), IMS_OK);

        expect_load_error(bad, dim, specs[si], IMS_ERR_NOT_FOUND, "cannot open");
        write_bytes(bad, data, 0);
        expect_load_error(bad, dim, specs[si], IMS_ERR_CORRUPT, "truncated");
        /* a flipped byte anywhere in the payload: ids, vectors, FAISS part */
        size_t spots[] = {60, 48 + strlen(specs[si]) + 8 * n + 5, len - 10, len - 1};
        for (size_t i = 0; i < IMS_ARRAY_LEN(spots); i++) {
            data[spots[i]] ^= 0x20;
            write_bytes(bad, data, len);
            expect_load_error(bad, dim, specs[si], IMS_ERR_CORRUPT, "checksum");
            data[spots[i]] ^= 0x20;
        }
        size_t cuts[] = {len - 1, len / 2, 50, 20};
        for (size_t i = 0; i < IMS_ARRAY_LEN(cuts); i++) {
            write_bytes(bad, data, cuts[i]);
            expect_load_error(bad, dim, specs[si], IMS_ERR_CORRUPT,
                              cuts[i] < 52 ? "truncated" : "truncated or damaged");
        }
        data[0] = 'X';
        write_bytes(bad, data, len);
        expect_load_error(bad, dim, specs[si], IMS_ERR_CORRUPT, "bad magic");
        data[0] = 'I';
        data[8] = 9; /* version */
        write_bytes(bad, data, len);
        expect_load_error(bad, dim, specs[si], IMS_ERR_CORRUPT, "version");
        data[8] = 1;
        expect_load_error(path, dim + 1, specs[si], IMS_ERR_MODEL_MISMATCH, "dimension 16");
        expect_load_error(path, dim, "HNSW32", IMS_ERR_MODEL_MISMATCH, "expected \"HNSW32\"");
        /* the undamaged copy still loads */
        struct vindex *back = NULL;
        int64_t last = 0;
        write_bytes(bad, data, len);
        assert_int_equal(vindex_load(bad, dim, specs[si], &back, &last, NULL), IMS_OK);
        assert_int_equal(last, 199);
        assert_int_equal(vindex_count(back), n);
        vindex_free(back);
        ims_free(data);
        vindex_free(vx);
        free(x);
        free(ids);
        unlink(bad);
        unlink(path);
    }
    remove_tmpdir();
}

/* zlib's CRC-32, bit by bit (the test recomputes a snapshot's trailer). */
static uint32_t crc32_bits(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

static void fix_trailer(char *data, size_t len)
{
    uint32_t c = crc32_bits((const unsigned char *)data, len - 4);
    memcpy(data + len - 4, &c, 4);
}

/* Offsets in an IndexHNSWFlat's serialisation (FAISS index_write: "IHNf",
 * header, then (u64 count, items) for assign_probas, cum_nneighbor_per_level,
 * levels, offsets, neighbors, then entry_point and max_level). */
struct hnsw_at {
    size_t ntotal, cum, levels, offsets, neighbors, entry;
    uint64_t n_neighbors;
};

static struct hnsw_at hnsw_find(const char *data, size_t len)
{
    struct hnsw_at a = {0};
    const char *h = memmem(data, len, "IHNf", 4);
    assert_non_null(h);
    size_t p = (size_t)(h - data);
    a.ntotal = p + 8;
    p += 4 + 4 + 8 + 8 + 8 + 1 + 4;
    size_t sizes[5] = {8, 4, 4, 8, 4}, *where[5] = {NULL, &a.cum, &a.levels, &a.offsets,
                                                    &a.neighbors};
    for (int i = 0; i < 5; i++) {
        uint64_t cnt;
        memcpy(&cnt, data + p, 8);
        if (where[i])
            *where[i] = p + 8;
        if (i == 4)
            a.n_neighbors = cnt;
        p += 8 + cnt * sizes[i];
    }
    a.entry = p;
    return a;
}

/* Issue 8 item 6: an HNSW snapshot whose graph is damaged, with its CRC
 * recomputed, is refused at load time (IMS_ERR_CORRUPT: the caller
 * rebuilds), never walked: neighbour past the vectors, level out of the
 * table, neighbour not living on the level it is listed at, offsets that do
 * not match the levels, entry point out of range or not on the top level,
 * ntotal beyond the stored vectors. vindex_snapshot_info reads the header. */
static void test_snapshot_hnsw_graph_damage(void **state)
{
    (void)state;
    int dim = 16;
    size_t n = 300;
    make_tmpdir();
    float *x = make_vectors(n, dim, 4, 0.5, 83);
    int64_t *ids = make_ids(n, 10, 1);
    struct vindex *vx = new_index("HNSW8", dim);
    add_ok(vx, ids, x, n);
    char path[128], bad[128];
    snprintf(path, sizeof path, "%s/good.snap", g_dir);
    snprintf(bad, sizeof bad, "%s/bad.snap", g_dir);
    assert_int_equal(vindex_save(vx, path, 400, NULL), IMS_OK);
    struct vindex_snapshot_info info;
    assert_int_equal(vindex_snapshot_info(path, &info, NULL), IMS_OK);
    assert_int_equal(info.dim, dim);
    assert_int_equal(info.count, n);
    assert_int_equal(info.last_id, 400);
    assert_string_equal(info.spec, "HNSW8");
    char *data;
    size_t len;
    assert_int_equal(ims_file_read(path, 1 << 24, &data, &len, NULL), IMS_OK);
    struct hnsw_at a = hnsw_find(data, len);
    int32_t levels0;
    memcpy(&levels0, data + a.levels, 4);
    assert_true(levels0 >= 1);

    struct {
        size_t at;
        int64_t value;
        int width;
        const char *needle;
    } cases[] = {
        {a.neighbors, 100000, 4, "neighbour 100000"},
        {a.neighbors + 4, -7, 4, "neighbour -7"},
        {a.levels + 4 * 5, 0, 4, "levels"},
        {a.levels + 4 * 5, 40, 4, "levels"},
        {a.offsets + 8 * 3, 1, 8, "neighbour range"},
        {a.entry, (int64_t)n + 5, 4, "entry point"},
        {a.entry + 4, 9, 4, "max level"},
        {a.ntotal, (int64_t)n + 1, 8, "HNSW"},
        {a.ntotal, 5000, 8, "HNSW"},
        {a.neighbors - 8, (int64_t)a.n_neighbors + 1000000, 8, "HNSW neighbours"},
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(cases); i++) {
        char *copy = malloc(len);
        memcpy(copy, data, len);
        if (cases[i].width == 4) {
            int32_t v = (int32_t)cases[i].value;
            memcpy(copy + cases[i].at, &v, 4);
        } else {
            memcpy(copy + cases[i].at, &cases[i].value, 8);
        }
        fix_trailer(copy, len);
        write_bytes(bad, copy, len);
        expect_load_error(bad, dim, "HNSW8", IMS_ERR_CORRUPT, cases[i].needle);
        free(copy);
    }
    /* a neighbour that exists but does not live on the upper level it is
     * listed at: find node with levels > 1 and put a level-1 node there */
    int32_t *lv = malloc(4 * n);
    memcpy(lv, data + a.levels, 4 * n);
    size_t upper = n, low = n;
    for (size_t i = 0; i < n; i++) {
        if (lv[i] > 1 && upper == n)
            upper = i;
        if (lv[i] == 1 && low == n)
            low = i;
    }
    assert_true(upper < n && low < n);
    int32_t cum1;
    memcpy(&cum1, data + a.cum + 4, 4);
    size_t off;
    memcpy(&off, data + a.offsets + 8 * upper, 8);
    char *copy = malloc(len);
    memcpy(copy, data, len);
    int32_t v = (int32_t)low;
    memcpy(copy + a.neighbors + 4 * (off + (size_t)cum1), &v, 4);
    fix_trailer(copy, len);
    write_bytes(bad, copy, len);
    expect_load_error(bad, dim, "HNSW8", IMS_ERR_CORRUPT, "lives on 1 levels");
    free(copy);
    free(lv);

    /* the undamaged copy loads and answers */
    struct vindex *back = NULL;
    assert_int_equal(vindex_load(path, dim, "HNSW8", &back, NULL, NULL), IMS_OK);
    float sc[5];
    int64_t got[5];
    int nf = 0;
    search_ok(back, x, 5, sc, got, &nf);
    assert_int_equal(nf, 5);
    assert_int_equal(got[0], ids[0]);
    vindex_free(back);
    /* header-only info refuses a truncated file */
    write_bytes(bad, data, len - 1);
    assert_int_equal(vindex_snapshot_info(bad, &info, NULL), IMS_ERR_CORRUPT);
    assert_int_equal(vindex_snapshot_info("/nonexistent/x.snap", &info, NULL), IMS_ERR_NOT_FOUND);
    ims_free(data);
    vindex_free(vx);
    free(x);
    free(ids);
    unlink(bad);
    unlink(path);
    remove_tmpdir();
}

static void test_save_failure_keeps_old(void **state)
{
    (void)state;
    int dim = 64;
    float *x = make_vectors(3000, dim, 10, 0.5, 91);
    int64_t *ids = make_ids(3000, 0, 1);
    make_tmpdir();
    char path[128];
    snprintf(path, sizeof path, "%s/index.snap", g_dir);
    struct vindex *vx = new_index("Flat", dim);
    add_ok(vx, ids, x, 10);
    assert_int_equal(vindex_save(vx, path, 9, NULL), IMS_OK);
    add_ok(vx, ids + 10, x + 10 * dim, 2990);

    /* 1: the disk fills up (a file size limit) in the middle of the write */
    struct rlimit old_lim, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old_lim), 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old_lim;
    lim.rlim_cur = 100000;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    struct ims_error err = {{0}};
    enum ims_status st = vindex_save(vx, path, 2999, &err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old_lim), 0);
    signal(SIGXFSZ, old_handler);
    assert_int_equal(st, IMS_ERR_IO);
    assert_non_null(strstr(err.message, "cannot write"));
    assert_int_equal(count_files(g_dir), 1); /* the temp file is gone */

    /* 2: memory runs out before anything is written */
    ims_alloc_set_fail_after(0);
    st = vindex_save(vx, path, 2999, &err);
    ims_alloc_set_fail_after(-1);
    assert_int_equal(st, IMS_ERR_NOMEM);

    /* 3: a bad last id is refused before anything is written */
    assert_int_equal(vindex_save(vx, path, -2, &err), IMS_ERR_INVALID);

    /* 4: the folder does not exist */
    char nodir[160];
    snprintf(nodir, sizeof nodir, "%s/missing/index.snap", g_dir);
    assert_int_equal(vindex_save(vx, nodir, 1, &err), IMS_ERR_IO);

    struct vindex *back = NULL;
    int64_t last = 0;
    assert_int_equal(vindex_load(path, dim, "Flat", &back, &last, NULL), IMS_OK);
    assert_int_equal(last, 9);
    assert_int_equal(vindex_count(back), 10);
    vindex_free(back);
    /* and a successful save replaces it */
    assert_int_equal(vindex_save(vx, path, 2999, NULL), IMS_OK);
    assert_int_equal(vindex_load(path, dim, "Flat", &back, &last, NULL), IMS_OK);
    assert_int_equal(last, 2999);
    assert_int_equal(vindex_count(back), 3000);
    vindex_free(back);
    vindex_free(vx);
    remove_tmpdir();
    free(x);
    free(ids);
}

/* ---- bad input --------------------------------------------------------------- */

static void test_bad_input(void **state)
{
    (void)state;
    struct vindex *vx = NULL;
    struct ims_error err = {{0}};
    assert_int_equal(vindex_new("Flat", 0, &vx, &err), IMS_ERR_INVALID);
    assert_int_equal(vindex_new("Flat", -3, &vx, &err), IMS_ERR_INVALID);
    assert_int_equal(vindex_new("Flat", VINDEX_MAX_DIM + 1, &vx, &err), IMS_ERR_INVALID);
    assert_null(vx);
    assert_int_equal(vindex_new("NotAnIndex42", 8, &vx, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "NotAnIndex42"));
    assert_non_null(strstr(err.message, "faiss"));
    /* 8 % 7 != 0: FAISS throws from the PQ constructor. (Not "IVF16,PQ7":
     * FAISS 1.7.3 leaks its coarse quantizer when that one throws.) */
    assert_int_equal(vindex_new("PQ7", 8, &vx, &err), IMS_ERR_INVALID);
    assert_null(vx);

    vx = new_index("Flat", 4);
    float v[8] = {1, 0, 0, 0, 0, 1, 0, 0};
    int64_t ids[2] = {1, 2};
    v[5] = NAN;
    assert_int_equal(vindex_add(vx, ids, v, 2, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "non-finite"));
    v[5] = INFINITY;
    assert_int_equal(vindex_add(vx, ids, v, 2, &err), IMS_ERR_INVALID);
    assert_int_equal(vindex_count(vx), 0); /* all or nothing */
    v[5] = 1;
    ids[1] = 1;
    assert_int_equal(vindex_add(vx, ids, v, 2, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "twice"));
    ids[1] = -5;
    assert_int_equal(vindex_add(vx, ids, v, 2, &err), IMS_ERR_INVALID);
    ids[1] = 2;
    add_ok(vx, ids, v, 2);
    assert_int_equal(vindex_add(vx, ids + 1, v, 1, &err), IMS_ERR_EXISTS);
    assert_int_equal(vindex_count(vx), 2);
    assert_int_equal(vindex_last_id(vx), 2);

    float s[4];
    int64_t id[4];
    int nf = 0;
    float q[4] = {1, 0, NAN, 0};
    assert_int_equal(vindex_search(vx, q, 2, s, id, &nf, &err), IMS_ERR_INVALID);
    q[2] = 0;
    assert_int_equal(vindex_search(vx, q, 0, s, id, &nf, &err), IMS_ERR_INVALID);
    assert_int_equal(vindex_search(vx, q, VINDEX_MAX_K + 1, s, id, &nf, &err), IMS_ERR_INVALID);
    assert_int_equal(vindex_search(vx, NULL, 2, s, id, &nf, &err), IMS_ERR_INVALID);
    struct vindex_search_params p = {.nprobe = -1};
    assert_int_equal(vindex_set_search_params(vx, &p, &err), IMS_ERR_INVALID);
    assert_int_equal(vindex_train(vx, v, 2, &err), IMS_OK); /* no-op for Flat */
    vindex_free(vx);

    vx = new_index("FlatF16", 4);
    float big[4] = {1e6f, 0, 0, 0};
    assert_int_equal(vindex_add(vx, ids, big, 1, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "fp16"));
    vindex_free(vx);

    vx = new_index("IVF4,Flat", 4);
    assert_int_equal(vindex_train(vx, v, 0, &err), IMS_ERR_INVALID);
    float *tx = make_vectors(200, 4, 4, 0.3, 3);
    assert_int_equal(vindex_train(vx, tx, 200, &err), IMS_OK);
    assert_int_equal(vindex_train(vx, tx, 200, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "already trained"));
    free(tx);
    vindex_free(vx);
    vindex_free(NULL);
}

/* ---- concurrency ---------------------------------------------------------------- */

struct conc {
    struct vindex *vx;
    const float *q;
    int dim;
    int failures;
    int searches;
    atomic_int stop;
};

static void *reader(void *arg)
{
    struct conc *c = arg;
    while (!c->stop || c->searches < 5) {
        float s[10];
        int64_t id[10];
        int nf = 0;
        if (vindex_search(c->vx, c->q, 10, s, id, &nf, NULL) != IMS_OK)
            c->failures++;
        for (int r = 1; r < nf; r++)
            if (s[r] > s[r - 1])
                c->failures++;
        c->searches++;
    }
    return NULL;
}

static void test_concurrent_search_and_add(void **state)
{
    (void)state;
    const char *specs[] = {"Flat", "FlatF16", "HNSW8"}; /* exact ones coalesce searches */
    int dim = 32;
    size_t n = 6000;
    float *x = make_vectors(n, dim, 10, 0.5, 101);
    int64_t *ids = make_ids(n, 0, 1);
    for (size_t si = 0; si < IMS_ARRAY_LEN(specs); si++) {
        struct vindex *vx = new_index(specs[si], dim);
        struct conc c[3];
        pthread_t th[3];
        for (int t = 0; t < 3; t++) {
            c[t] = (struct conc){.vx = vx, .q = x + (size_t)t * dim, .dim = dim};
            assert_int_equal(pthread_create(&th[t], NULL, reader, &c[t]), 0);
        }
        for (size_t off = 0; off < n; off += 200) {
            add_ok(vx, ids + off, x + off * dim, 200);
            if (off >= 400) {
                size_t removed;
                assert_int_equal(vindex_remove(vx, ids + off - 400, 50, &removed, NULL), IMS_OK);
                assert_int_equal(removed, 50);
            }
        }
        for (int t = 0; t < 3; t++) {
            c[t].stop = 1;
            pthread_join(th[t], NULL);
            assert_int_equal(c[t].failures, 0);
            assert_true(c[t].searches >= 5);
        }
        assert_int_equal(vindex_count(vx), n - 50 * (n / 200 - 2));
        vindex_free(vx);
    }
    free(x);
    free(ids);
}

/* The generation is the result cache's key: it must change on every change a
 * search can see, even when (last id, count) come back to the same pair, and
 * a new index object must never repeat an old one's value. */
static void test_generation_never_repeats(void **state)
{
    (void)state;
    const int dim = 8;
    float *x = make_vectors(2, dim, 1, 0.1, 42);
    struct vindex *vx = new_index("Flat", dim);
    uint64_t g0 = vindex_generation(vx);
    int64_t id101 = 101, id100 = 100;
    add_ok(vx, &id101, x, 1);
    uint64_t g1 = vindex_generation(vx);
    assert_true(g1 != g0);
    size_t removed = 0;
    assert_int_equal(vindex_remove(vx, &id101, 1, &removed, NULL), IMS_OK);
    assert_int_equal(removed, 1);
    uint64_t g2 = vindex_generation(vx);
    assert_true(g2 != g1 && g2 != g0);
    /* removing an absent id changes nothing a search sees: same stamp */
    assert_int_equal(vindex_remove(vx, &id101, 1, &removed, NULL), IMS_OK);
    assert_int_equal(vindex_generation(vx), g2);
    add_ok(vx, &id100, x + dim, 1);
    uint64_t g3 = vindex_generation(vx);
    assert_true(g3 != g2 && g3 != g1 && g3 != g0);
    struct vindex_search_params p = {0};
    p.rerank = 50;
    assert_int_equal(vindex_set_search_params(vx, &p, NULL), IMS_OK);
    uint64_t g4 = vindex_generation(vx);
    assert_true(g4 != g3);
    struct vindex *other = new_index("Flat", dim);
    uint64_t o0 = vindex_generation(other);
    assert_true(o0 != g0 && o0 != g1 && o0 != g2 && o0 != g3 && o0 != g4);
    vindex_free(other);
    vindex_free(vx);
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_conversion),
        cmocka_unit_test(test_topk_heap),
        cmocka_unit_test(test_flat_brute_force_all_isas),
        cmocka_unit_test(test_fan_out),
        cmocka_unit_test(test_k_larger_than_count),
        cmocka_unit_test(test_f16_equals_f32),
        cmocka_unit_test(test_remove_swap_and_readd),
        cmocka_unit_test(test_generation_never_repeats),
        cmocka_unit_test(test_i8_kernels_exact),
        cmocka_unit_test(test_i8_quantize),
        cmocka_unit_test(test_i8_bound_holds),
        cmocka_unit_test(test_i8_equals_fp32),
        cmocka_unit_test(test_faiss_types),
        cmocka_unit_test(test_hnsw_many_tombstones),
        cmocka_unit_test(test_hnsw_own_walk_matches_faiss),
        cmocka_unit_test(test_pagination),
        cmocka_unit_test(test_snapshot_round_trip),
        cmocka_unit_test(test_snapshot_damage),
        cmocka_unit_test(test_snapshot_hnsw_graph_damage),
        cmocka_unit_test(test_save_failure_keeps_old),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_concurrent_search_and_add),
    };
    /* IMS_TEST_FILTER=test_pagination runs one test (a cmocka glob). */
    /* One FAISS OpenMP thread (the default; said here so the test does not
     * depend on it): on a loaded machine spinning threads make training crawl. */
    index__faiss_set_threads(1);
    const char *filter = getenv("IMS_TEST_FILTER");
    if (filter && filter[0])
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
