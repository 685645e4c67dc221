/* SPDX-License-Identifier: MIT */
/*
 * bench_vector_http.c: the in-process half of bench_vector_http.py (which
 * runs the HTTP half and compares). Two modes:
 *
 *   bench_vector_http gen DIR N NQ SEED
 *       writes DIR/v.npy (NumPy v1.0, '<f4', shape (N, 512): the "easy" set
 *       of shared bench/VECTORS.md, unit vectors), DIR/s.txt (N lines
 *       "https://bench.test/<i>.jpg") and DIR/q.f32 (NQ x 512 raw float32
 *       LE queries drawn the same way, not from the set).
 *
 *   bench_vector_http scan DIR [THREADS [FIRST COUNT]]
 *       loads v.npy and q.f32, applies the same float operations the product
 *       applies (import: clip_l2_normalize per row; a one-term vector query:
 *       clip_l2_normalize of the term, then of the weight-1 fusion), then
 *       times, one query at a time on this thread:
 *         - FAISS IndexFlatIP (the bridge's "Flat" factory string, FAISS's
 *           own exact scan, 1 OpenMP thread), the yardstick;
 *         - our exact scan (vindex "Flat"), i.e. what the server runs inside
 *           POST /api/v1/search, with 1 thread and with THREADS (default 1;
 *           the server's default is min(online CPUs, 4)).
 *       Queries FIRST .. FIRST+COUNT-1 only when given (the server caches
 *       the top-k of recent queries, so every HTTP round needs fresh ones).
 *       Prints one JSON object: p50/p99 of both and every query's top-10 row
 *       numbers (0-based import order) from both.
 *
 * The vectors follow VECTORS.md: 1,000 centres c ~ N(0, I), x =
 * normalise(c_j + 0.6 g), with a splitmix64 stream and Box-Muller normals.
 */
#include "imgsearch/clip.h"
#include "imgsearch/index.h"
#include "index_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench_cpu.h"

#define DIM 512
#define K 10

/* ---- the easy set ------------------------------------------------------------ */

struct prng {
    uint64_t s;
    int have;
    double spare;
};

static uint64_t prng_u64(struct prng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double prng_open01(struct prng *r) { return ((double)(prng_u64(r) >> 11) + 0.5) * 0x1p-53; }

static double prng_gauss(struct prng *r)
{
    if (r->have) {
        r->have = 0;
        return r->spare;
    }
    double m = sqrt(-2.0 * log(prng_open01(r)));
    double a = 6.283185307179586 * prng_open01(r);
    r->have = 1;
    r->spare = m * sin(a);
    return m * cos(a);
}

static void unit(float *x)
{
    double ss = 0;
    for (int i = 0; i < DIM; i++)
        ss += (double)x[i] * x[i];
    double inv = 1.0 / sqrt(ss);
    for (int i = 0; i < DIM; i++)
        x[i] = (float)(x[i] * inv);
}

/* Writes n rows of the easy set drawn with `seed` around `centres`. */
static int draw_rows(FILE *f, const float *centres, size_t n, uint64_t seed)
{
    struct prng r = {seed, 0, 0};
    float row[DIM];
    for (size_t i = 0; i < n; i++) {
        const float *c = centres + (prng_u64(&r) % 1000u) * DIM;
        for (int j = 0; j < DIM; j++)
            row[j] = c[j] + (float)(0.6 * prng_gauss(&r));
        unit(row);
        if (fwrite(row, sizeof(float), DIM, f) != DIM)
            return -1;
    }
    return 0;
}

static FILE *open_in(const char *dir, const char *name, const char *mode)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, mode);
    if (!f) {
        perror(path);
        exit(1);
    }
    return f;
}

static int cmd_gen(const char *dir, size_t n, size_t nq, uint64_t seed)
{
    struct prng r = {seed, 0, 0};
    float *centres = malloc(sizeof(float) * 1000 * DIM);
    if (!centres)
        return 1;
    for (size_t i = 0; i < 1000 * DIM; i++)
        centres[i] = (float)prng_gauss(&r);

    /* NumPy format 1.0: magic, version, u16 LE header length, an ASCII dict
     * padded with spaces and ended by '\n' so the data starts 64-aligned. */
    char dict[128];
    int dl = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %d), }",
                      n, DIM);
    size_t hl = (size_t)dl + 1;
    size_t total = 10 + hl;
    size_t pad = (64 - total % 64) % 64;
    hl += pad;
    FILE *f = open_in(dir, "v.npy", "wb");
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xff),
                             (unsigned char)(hl >> 8)};
    fwrite(pre, 1, 10, f);
    fwrite(dict, 1, (size_t)dl, f);
    for (size_t i = 0; i < pad; i++)
        fputc(' ', f);
    fputc('\n', f);
    if (draw_rows(f, centres, n, seed * 1000 + 1) != 0 || fclose(f) != 0) {
        fprintf(stderr, "bench_vector_http: writing v.npy failed\n");
        return 1;
    }
    f = open_in(dir, "q.f32", "wb");
    if (draw_rows(f, centres, nq, seed * 1000 + 500) != 0 || fclose(f) != 0) {
        fprintf(stderr, "bench_vector_http: writing q.f32 failed\n");
        return 1;
    }
    f = open_in(dir, "s.txt", "w");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "https://bench.test/%zu.jpg\n", i);
    if (fclose(f) != 0)
        return 1;
    free(centres);
    return 0;
}

/* ---- scan ---------------------------------------------------------------------- */

static float *read_all(const char *dir, const char *name, size_t skip, size_t *n_rows)
{
    FILE *f = open_in(dir, name, "rb");
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    if (bytes < (long)skip)
        exit(1);
    size_t n = ((size_t)bytes - skip) / (sizeof(float) * DIM);
    float *x = malloc(n * DIM * sizeof(float));
    fseek(f, (long)skip, SEEK_SET);
    if (!x || fread(x, sizeof(float) * DIM, n, f) != n) {
        fprintf(stderr, "bench_vector_http: reading %s failed\n", name);
        exit(1);
    }
    fclose(f);
    *n_rows = n;
    return x;
}

static size_t npy_data_offset(const char *dir)
{
    FILE *f = open_in(dir, "v.npy", "rb");
    unsigned char pre[10];
    if (fread(pre, 1, 10, f) != 10 || pre[0] != 0x93 || pre[6] != 1) {
        fprintf(stderr, "bench_vector_http: v.npy: not NumPy 1.0\n");
        exit(1);
    }
    fclose(f);
    return 10 + (size_t)pre[8] + ((size_t)pre[9] << 8);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quantile(double *v, size_t n, double p)
{
    qsort(v, n, sizeof *v, cmp_d);
    size_t i = (size_t)ceil(p * (double)n);
    return v[i == 0 ? 0 : (i > n ? n - 1 : i - 1)];
}

static void fail(const char *what, enum ims_status st, const struct ims_error *err)
{
    fprintf(stderr, "bench_vector_http: %s: %s\n", what, ims_error_message(err, st));
    exit(1);
}

static void print_ids(const char *name, const int64_t *ids, size_t nq)
{
    printf(" \"%s\": [", name);
    for (size_t i = 0; i < nq; i++) {
        printf("%s[", i ? "," : "");
        for (int j = 0; j < K; j++)
            printf("%s%lld", j ? "," : "", (long long)ids[i * K + j]);
        printf("]");
    }
    printf("]");
}

static int cmd_scan(const char *dir, int n_threads, size_t first, size_t count)
{
    size_t n = 0, nq = 0;
    float *x = read_all(dir, "v.npy", npy_data_offset(dir), &n);
    float *q = read_all(dir, "q.f32", 0, &nq);
    if (first > nq || count > nq - first) {
        fprintf(stderr, "bench_vector_http: queries %zu..%zu of %zu\n", first, first + count, nq);
        return 1;
    }
    if (count) {
        memmove(q, q + first * DIM, count * DIM * sizeof(float));
        nq = count;
    }
    for (size_t i = 0; i < n; i++)
        clip_l2_normalize(x + i * DIM, DIM); /* as `imgsearch import` */
    for (size_t i = 0; i < nq; i++) {        /* as search_run: term, then fusion */
        clip_l2_normalize(q + i * DIM, DIM);
        clip_l2_normalize(q + i * DIM, DIM);
    }
    int64_t *ids = malloc(sizeof(int64_t) * (n > 65536 ? 65536 : n));
    int64_t *faiss_top = malloc(sizeof(int64_t) * K * nq);
    int64_t *scan_top = malloc(sizeof(int64_t) * K * nq);
    double *t = malloc(sizeof(double) * nq);
    if (!ids || !faiss_top || !scan_top || !t)
        return 1;
    struct ims_error err = {{0}};
    enum ims_status st;
    float sc[K];

    /* yardstick: FAISS IndexFlatIP, 1 thread */
    index__faiss_set_threads(1);
    struct index__faiss *ff = NULL;
    if ((st = index__faiss_new("Flat", DIM, &ff, &err)) != IMS_OK)
        fail("faiss Flat", st, &err);
    for (size_t off = 0; off < n; off += 65536) {
        size_t m = n - off < 65536 ? n - off : 65536;
        for (size_t i = 0; i < m; i++)
            ids[i] = (int64_t)(off + i);
        if ((st = index__faiss_add(ff, ids, x + off * DIM, m, &err)) != IMS_OK)
            fail("faiss add", st, &err);
    }
    for (size_t i = 0; i < nq; i++) {
        double t0 = ims_now();
        st = index__faiss_search(ff, q + i * DIM, K, 0, 0, sc, faiss_top + i * K, &err);
        t[i] = (ims_now() - t0) * 1e3;
        if (st != IMS_OK)
            fail("faiss search", st, &err);
    }
    double f50 = quantile(t, nq, 0.5), f99 = quantile(t, nq, 0.99);
    index__faiss_free(ff);
    fprintf(stderr, "bench_vector_http: FAISS IndexFlatIP p50 %.2f ms\n", f50);

    /* our exact scan, as the server runs it */
    struct vindex *vx = NULL;
    if ((st = vindex_new("Flat", DIM, &vx, &err)) != IMS_OK)
        fail("vindex_new", st, &err);
    for (size_t off = 0; off < n; off += 1024) {
        size_t m = n - off < 1024 ? n - off : 1024;
        for (size_t i = 0; i < m; i++)
            ids[i] = (int64_t)(off + i);
        if ((st = vindex_add(vx, ids, x + off * DIM, m, &err)) != IMS_OK)
            fail("vindex_add", st, &err);
    }
    double s50 = 0, s99 = 0, m50 = 0, m99 = 0;
    for (int pass = 0; pass < 2; pass++) {
        struct vindex_search_params sp = {.n_threads = pass ? n_threads : 1};
        if ((st = vindex_set_search_params(vx, &sp, &err)) != IMS_OK)
            fail("vindex_set_search_params", st, &err);
        for (size_t i = 0; i < nq; i++) {
            int nf = 0;
            double t0 = ims_now();
            st = vindex_search(vx, q + i * DIM, K, sc, scan_top + i * K, &nf, &err);
            t[i] = (ims_now() - t0) * 1e3;
            if (st != IMS_OK || nf != K)
                fail("vindex_search", st, &err);
        }
        *(pass ? &m50 : &s50) = quantile(t, nq, 0.5);
        *(pass ? &m99 : &s99) = quantile(t, nq, 0.99);
    }
    vindex_free(vx);
    fprintf(stderr, "bench_vector_http: our Flat scan p50 %.2f ms (1 thread), %.2f ms (%d)\n",
            s50, m50, n_threads);

    printf("{");
    bench_cpu_print_json(stdout);
    {
        const char *yn[] = {"faiss_flat_ip_p50_ms"};
        double yv[] = {f50};
        bench_cpu_print_yardsticks(stdout, 1, yn, yv);
    }
    printf(",\n \"n\": %zu, \"d\": %d, \"queries\": %zu, \"isa\": \"%s\",\n", n, DIM, nq,
           index__scan_isa());
    printf(" \"faiss_flat_ip\": {\"p50_ms\": %.3f, \"p99_ms\": %.3f},\n", f50, f99);
    printf(" \"scan_flat\": {\"threads\": 1, \"p50_ms\": %.3f, \"p99_ms\": %.3f},\n", s50, s99);
    printf(" \"scan_flat_mt\": {\"threads\": %d, \"p50_ms\": %.3f, \"p99_ms\": %.3f},\n",
           n_threads, m50, m99);
    print_ids("faiss_top10", faiss_top, nq);
    printf(",\n");
    print_ids("scan_top10", scan_top, nq);
    printf("\n}\n");
    free(x);
    free(q);
    free(ids);
    free(faiss_top);
    free(scan_top);
    free(t);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && !strcmp(argv[1], "gen"))
        return cmd_gen(argv[2], strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10),
                       strtoull(argv[5], NULL, 10));
    if ((argc == 3 || argc == 4 || argc == 6) && !strcmp(argv[1], "scan"))
        return cmd_scan(argv[2], argc >= 4 ? atoi(argv[3]) : 1,
                        argc == 6 ? strtoull(argv[4], NULL, 10) : 0,
                        argc == 6 ? strtoull(argv[5], NULL, 10) : 0);
    fprintf(stderr, "usage: bench_vector_http gen DIR N NQ SEED | scan DIR [THREADS [FIRST COUNT]]\n");
    return 2;
}
