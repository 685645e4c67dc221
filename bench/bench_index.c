/* SPDX-License-Identifier: MIT */
/*
 * bench_index.c: search latency and recall of the vector index (JSON on
 * stdout, progress on stderr).
 *
 * Sets: the "easy" and "hard" unit-vector sets of shared bench/VECTORS.md
 * (d = 512), generated here from a seeded splitmix64 + Box-Muller stream;
 * queries are drawn the same way, not taken from the set.
 *
 * Yardstick, measured in the same run: FAISS IndexFlatIP (Debian's 1.7.3,
 * through the bridge, one thread), one query at a time. Against it: our exact
 * scans, 1 and 2 threads, with the speed-up of the medians and the top-10
 * agreement with FAISS: Flat's fp32 scan and its int8 pre-scan + exact fp32
 * re-score (the same index, the two alternated query by query; also their
 * ratio, the candidates re-scored per query, the fall-backs, and whether
 * the top-10 ids and scores equal the fp32 scan's), FlatF16 (fp16 + exact
 * re-score); the cost of quantising every row to int8 (what a snapshot
 * load adds); then approximate types
 * (FAISS pass + our exact re-rank) with build time, p50/p99 latency and
 * recall@10 against the exact top 10. Searches use one thread; builds use
 * --build-threads FAISS OpenMP threads (default 1) plus OpenBLAS's own.
 *
 * Concurrency (--concurrency 1,4,16): C client threads issue exact searches
 * (top 10) at once, as the server's connection threads do; queries per second
 * and per-search latency with coalescing (concurrent searches share one scan,
 * vindex.c) against one-at-a-time scans (index__batch_enabled = 0), the
 * yardstick, in the same run, alternating the two, medians of --reps runs.
 * Each scan uses --scan-threads threads (default 2: what `serve` sets on this
 * 2-core machine). Also reports whether the batched top-10 lists equal the
 * one-at-a-time ones (they must: 1.0). --types: Flat (int8 pre-scan),
 * FlatF16, Flat-fp32 (Flat with the pre-scan off: index__i8_enabled = 0).
 *
 * usage: bench_index [--n N] [--queries Q] [--sets easy,hard] [--hnsw] [--pq]
 *                    [--million] [--million-types "A;B"] [--seed S] [--build-threads T]
 *                    [--concurrency 1,4,16 [--scan-threads T] [--reps R]
 *                     [--conc-queries Q] [--types Flat,FlatF16,Flat-fp32]]
 *   default    exact scans on both sets + IVF1024,Flat on the hard set
 *              (about 2 minutes)
 *   --no-ivf   skip IVF1024,Flat
 *   --pq       also IVF1024,PQ64 with exact re-rank (~5 min build at 200k)
 *   --hnsw     also build HNSW32 (minutes at 200k on 2 cores)
 *   --build-threads  FAISS OpenMP threads for train/add (default 1, see
 *              faiss_bridge.cpp: OpenBLAS threads do the parallel work)
 *   --million  also the 1M hard set: exact top 10, then the approximate
 *              types of --million-types (';'-separated, default
 *              "IVF4096_HNSW32,PQ64"; e.g. "HNSW32"; "none": only the
 *              exact scan's own latency); builds take many minutes
 *   --concurrency  only the concurrency section, at these client counts, on
 *              --sets at --n; --conc-queries searches per run (default 256,
 *              split over the clients), --reps runs per figure (default 3)
 */

#include "imgsearch/index.h"
#include "index_int.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench_cpu.h"
#include "bench_stats.h"

#define DIM 512

static int g_build_threads = 1; /* FAISS OpenMP threads for train/add */

/* ---- data ------------------------------------------------------------------- */

struct rng {
    uint64_t s;
    int have;
    double spare;
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
    if (r->have) {
        r->have = 0;
        return r->spare;
    }
    double rad = sqrt(-2.0 * log(rng_unit(r))), th = 6.283185307179586 * rng_unit(r);
    r->spare = rad * sin(th);
    r->have = 1;
    return rad * cos(th);
}

static void normalise(float *x)
{
    double n = 0;
    for (int i = 0; i < DIM; i++)
        n += (double)x[i] * x[i];
    n = 1.0 / sqrt(n);
    for (int i = 0; i < DIM; i++)
        x[i] = (float)(x[i] * n);
}

struct vset {
    int hard;
    float *centres; /* (n_centres, DIM) */
    int n_centres;
    double s[DIM];  /* per-component scale: 1 (easy) or 1/sqrt(i) (hard) */
};

static void vset_init(struct vset *v, int hard, uint64_t seed)
{
    struct rng r = {seed, 0, 0};
    v->hard = hard;
    v->n_centres = hard ? 10000 : 1000;
    for (int i = 0; i < DIM; i++)
        v->s[i] = hard ? 1.0 / sqrt((double)(i + 1)) : 1.0;
    v->centres = malloc(sizeof(float) * (size_t)v->n_centres * DIM);
    if (!v->centres)
        abort();
    for (size_t i = 0; i < (size_t)v->n_centres * DIM; i++)
        v->centres[i] = (float)(rng_normal(&r) * v->s[i % DIM]);
}

/* (n, DIM): x = normalise(c_j + sigma (g . s)), j uniform. */
static float *vset_draw(const struct vset *v, size_t n, uint64_t seed)
{
    struct rng r = {seed, 0, 0};
    double sigma = v->hard ? 0.8 : 0.6;
    float *x = malloc(sizeof(float) * n * DIM);
    if (!x)
        abort();
    for (size_t i = 0; i < n; i++) {
        const float *c = v->centres + (rng_next(&r) % (uint64_t)v->n_centres) * DIM;
        float *xi = x + i * DIM;
        for (int j = 0; j < DIM; j++)
            xi[j] = c[j] + (float)(sigma * rng_normal(&r) * v->s[j]);
        normalise(xi);
    }
    return x;
}

static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    int i = (int)ceil(p * n) - 1;
    return v[i < 0 ? 0 : (i >= n ? n - 1 : i)];
}

static void die(const char *what, enum ims_status st, const struct ims_error *err)
{
    fprintf(stderr, "bench_index: %s: %s\n", what, ims_error_message(err, st));
    exit(1);
}

static struct vindex *build_exact(const char *spec, const float *x, size_t n)
{
    struct ims_error err = {{0}};
    struct vindex *vx = NULL;
    enum ims_status st = vindex_new(spec, DIM, &vx, &err);
    if (st != IMS_OK)
        die("new", st, &err);
    int64_t *ids = malloc(sizeof(int64_t) * 16384);
    for (size_t off = 0; off < n; off += 16384) {
        size_t m = IMS_MIN((size_t)16384, n - off);
        for (size_t i = 0; i < m; i++)
            ids[i] = (int64_t)(off + i);
        st = vindex_add(vx, ids, x + off * DIM, m, &err);
        if (st != IMS_OK)
            die("add", st, &err);
    }
    free(ids);
    return vx;
}

struct timing {
    double p50_ms, p99_ms;
};

/* Runs nq queries one at a time; ids: (nq, 10) results. */
static struct timing time_vindex(struct vindex *vx, const float *q, int nq, int64_t *ids)
{
    double *t = malloc(sizeof(double) * (size_t)nq);
    struct ims_error err = {{0}};
    for (int i = 0; i < nq; i++) {
        float s[10];
        int nf = 0;
        double t0 = ims_now();
        enum ims_status st = vindex_search(vx, q + (size_t)i * DIM, 10, s, ids + i * 10, &nf, &err);
        t[i] = (ims_now() - t0) * 1e3;
        if (st != IMS_OK)
            die("search", st, &err);
        for (int j = nf; j < 10; j++)
            ids[i * 10 + j] = -1;
    }
    struct timing r = {pct(t, nq, 0.5), pct(t, nq, 0.99)};
    free(t);
    return r;
}

static double recall10(const int64_t *got, const int64_t *truth, int nq)
{
    long hit = 0;
    for (int i = 0; i < nq; i++)
        for (int a = 0; a < 10; a++)
            for (int b = 0; b < 10; b++)
                hit += got[i * 10 + a] >= 0 && got[i * 10 + a] == truth[i * 10 + b];
    return (double)hit / (10.0 * nq);
}

static double same_lists(const int64_t *a, const int64_t *b, int nq)
{
    int same = 0;
    for (int i = 0; i < nq; i++)
        same += memcmp(a + i * 10, b + i * 10, 10 * sizeof(int64_t)) == 0;
    return (double)same / nq;
}

/* Flat's two exact paths on the same index, alternated query by query so
 * that drift on a shared machine hits both: the fp32 scan
 * (index__i8_enabled = 0) and the int8 pre-scan + fp32 re-score. Top-10
 * ids and scores of each go to ids[m] / sc[m], latencies to t[m]. */
static void time_flat_modes(struct vindex *vx, const float *q, int nq, int64_t *ids[2],
                            float *sc[2], double *t[2])
{
    struct ims_error err = {{0}};
    for (int i = 0; i < nq; i++)
        for (int m = 0; m < 2; m++) {
            int nf = 0;
            index__i8_enabled = m;
            double t0 = ims_now();
            enum ims_status st = vindex_search(vx, q + (size_t)i * DIM, 10, sc[m] + i * 10,
                                               ids[m] + i * 10, &nf, &err);
            t[m][i] = (ims_now() - t0) * 1e3;
            if (st != IMS_OK)
                die("search", st, &err);
            for (int j = nf; j < 10; j++)
                ids[m][i * 10 + j] = -1;
        }
    index__i8_enabled = 1;
}

/* ---- sections ------------------------------------------------------------------- */

static void bench_exact(const char *set, const float *x, size_t n, const float *q, int nq,
                        int nq_faiss, int64_t *truth)
{
    struct ims_error err = {{0}};
    enum ims_status st;
    /* yardstick: FAISS IndexFlatIP, one thread */
    index__faiss_set_threads(1);
    struct index__faiss *ff = NULL;
    st = index__faiss_new("Flat", DIM, &ff, &err);
    if (st != IMS_OK)
        die("faiss Flat", st, &err);
    int64_t *ids = malloc(sizeof(int64_t) * n);
    for (size_t i = 0; i < n; i++)
        ids[i] = (int64_t)i;
    st = index__faiss_add(ff, ids, x, n, &err);
    if (st != IMS_OK)
        die("faiss add", st, &err);
    free(ids);
    int64_t *faiss_ids = malloc(sizeof(int64_t) * 10 * (size_t)nq_faiss);
    double *t = malloc(sizeof(double) * (size_t)nq_faiss);
    for (int i = 0; i < nq_faiss; i++) {
        float s[10];
        double t0 = ims_now();
        st = index__faiss_search(ff, q + (size_t)i * DIM, 10, 0, 0, s, faiss_ids + i * 10, &err);
        t[i] = (ims_now() - t0) * 1e3;
        if (st != IMS_OK)
            die("faiss search", st, &err);
    }
    struct timing tf = {pct(t, nq_faiss, 0.5), pct(t, nq_faiss, 0.99)};
    free(t);
    index__faiss_free(ff);
    fprintf(stderr, "  faiss IndexFlatIP: p50 %.2f ms\n", tf.p50_ms);

    printf("    {\"set\": \"%s\", \"n\": %zu, \"d\": %d, \"queries\": %d, \"faiss_queries\": %d, "
           "\"isa\": \"%s\",\n",
           set, n, DIM, nq, nq_faiss, index__scan_isa());
    printf("     \"faiss_flat_ip\": {\"p50_ms\": %.3f, \"p99_ms\": %.3f},\n", tf.p50_ms, tf.p99_ms);
    /* the int8 codes' cost: quantising every row (what a snapshot load adds) */
    {
        size_t stride = index__i8_stride(DIM);
        int8_t *codes = malloc(stride);
        /* best of 3 passes: on this VM the first re-read of rows untouched
         * for a while pays a page-table fault per 4 kB page (~150 ms per
         * 205 MB), which is not the quantiser's cost */
        double ms = 1e30, sink = 0;
        for (int pass = 0; pass < 3; pass++) {
            double tq = ims_now();
            sink = 0;
            for (size_t i = 0; i < n; i++) {
                float a, r, c;
                index__i8_quantize_row(x + i * DIM, DIM, codes, &a, &r, &c);
                sink += r;
            }
            ms = IMS_MIN(ms, (ims_now() - tq) * 1e3);
        }
        free(codes);
        fprintf(stderr, "  int8 codes for %zu rows: %.1f ms (mean rho %.5f)\n", n, ms, sink / n);
        printf("     \"i8_quantize_ms\": %.1f, \"i8_mean_rho\": %.6f,\n", ms, sink / n);
    }
    printf("     \"scan\": [\n");
    int first = 1;
    /* Flat: the fp32 scan and the int8 pre-scan, alternated */
    {
        struct vindex *vx = build_exact("Flat", x, n);
        for (int th = 1; th <= 2; th++) {
            struct vindex_search_params p = {.n_threads = th};
            vindex_set_search_params(vx, &p, NULL);
            int64_t *got[2];
            float *sc[2];
            double *lat[2];
            for (int m = 0; m < 2; m++) {
                got[m] = malloc(sizeof(int64_t) * 10 * (size_t)nq);
                sc[m] = malloc(sizeof(float) * 10 * (size_t)nq);
                lat[m] = malloc(sizeof(double) * (size_t)nq);
            }
            uint64_t s0, c0, f0, s1, c1, f1;
            index__i8_stats(vx, &s0, &c0, &f0);
            time_flat_modes(vx, q, nq, got, sc, lat);
            index__i8_stats(vx, &s1, &c1, &f1);
            if (th == 1)
                memcpy(truth, got[0], sizeof(int64_t) * 10 * (size_t)nq);
            int same_scores = 0;
            for (int i = 0; i < nq; i++)
                same_scores += memcmp(sc[0] + i * 10, sc[1] + i * 10, 10 * sizeof(float)) == 0;
            struct timing tm[2];
            for (int m = 0; m < 2; m++)
                tm[m] = (struct timing){pct(lat[m], nq, 0.5), pct(lat[m], nq, 0.99)};
            double cand = s1 - s0 > f1 - f0 ? (double)(c1 - c0) / (double)((s1 - s0) - (f1 - f0))
                                            : 0;
            fprintf(stderr, "  Flat fp32 %d thread(s): p50 %.2f ms; int8 + re-score: p50 %.2f ms "
                            "(x%.2f), %.1f candidates/query, %llu fallbacks\n",
                    th, tm[0].p50_ms, tm[1].p50_ms, tm[0].p50_ms / tm[1].p50_ms, cand,
                    (unsigned long long)(f1 - f0));
            for (int m = 0; m < 2; m++) {
                printf("%s      {\"type\": \"Flat\", \"scan\": \"%s\", \"threads\": %d, "
                       "\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"speedup_vs_faiss_p50\": %.2f, "
                       "\"top10_recall_vs_faiss\": %.4f, \"top10_lists_equal_faiss\": %.4f, "
                       "\"top10_lists_equal_flat_fp32\": %.4f",
                       first ? "" : ",\n", m ? "int8" : "fp32", th, tm[m].p50_ms, tm[m].p99_ms,
                       tf.p50_ms / tm[m].p50_ms, recall10(got[m], faiss_ids, nq_faiss),
                       same_lists(got[m], faiss_ids, nq_faiss), same_lists(got[m], got[0], nq));
                if (m)
                    printf(", \"speedup_vs_fp32_p50\": %.2f, \"top10_scores_equal_fp32\": %.4f, "
                           "\"candidates_per_query\": %.1f, \"fallbacks\": %llu, "
                           "\"i8_isa\": \"%s\"",
                           tm[0].p50_ms / tm[1].p50_ms, (double)same_scores / nq, cand,
                           (unsigned long long)(f1 - f0), index__scan_i8_isa());
                printf("}");
                first = 0;
            }
            for (int m = 0; m < 2; m++) {
                free(got[m]);
                free(sc[m]);
                free(lat[m]);
            }
        }
        vindex_free(vx);
    }
    {
        struct vindex *vx = build_exact("FlatF16", x, n);
        for (int th = 1; th <= 2; th++) {
            struct vindex_search_params p = {.n_threads = th};
            vindex_set_search_params(vx, &p, NULL);
            int64_t *got = malloc(sizeof(int64_t) * 10 * (size_t)nq);
            struct timing tm = time_vindex(vx, q, nq, got);
            fprintf(stderr, "  FlatF16 %d thread(s): p50 %.2f ms\n", th, tm.p50_ms);
            printf(",\n      {\"type\": \"FlatF16\", \"scan\": \"fp16\", \"threads\": %d, "
                   "\"p50_ms\": %.3f, \"p99_ms\": %.3f, "
                   "\"speedup_vs_faiss_p50\": %.2f, \"top10_recall_vs_faiss\": %.4f, "
                   "\"top10_lists_equal_faiss\": %.4f, \"top10_lists_equal_flat_fp32\": %.4f}",
                   th, tm.p50_ms, tm.p99_ms, tf.p50_ms / tm.p50_ms,
                   recall10(got, faiss_ids, nq_faiss), same_lists(got, faiss_ids, nq_faiss),
                   same_lists(got, truth, nq));
            free(got);
        }
        vindex_free(vx);
    }
    printf("\n     ]}");
    free(faiss_ids);
}

/* ---- concurrency: coalesced exact searches vs one at a time --------------------------- */

/* Is `name` one of the comma-separated items of `list`? */
static int has_item(const char *list, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (strncmp(p, name, len) == 0 && (p[len] == ',' || p[len] == 0))
            return 1;
    return 0;
}

struct client {
    struct vindex *vx;
    const float *q;
    int nq;
    int first, count, stride; /* runs queries (first + i * stride) % nq, i < count */
    double *lat_ms;           /* (count) */
    int64_t *ids;             /* (count, 10) */
    pthread_barrier_t *start;
    pthread_t th;
};

static void *client_run(void *arg)
{
    struct client *c = arg;
    struct ims_error err = {{0}};
    pthread_barrier_wait(c->start);
    for (int i = 0; i < c->count; i++) {
        float s[10];
        int nf = 0;
        const float *q = c->q + (size_t)((c->first + i * c->stride) % c->nq) * DIM;
        double t0 = ims_now();
        enum ims_status st = vindex_search(c->vx, q, 10, s, c->ids + (size_t)i * 10, &nf, &err);
        c->lat_ms[i] = (ims_now() - t0) * 1e3;
        if (st != IMS_OK)
            die("search", st, &err);
        for (int j = nf; j < 10; j++)
            c->ids[(size_t)i * 10 + j] = -1;
    }
    return NULL;
}

struct conc_run {
    double qps, mean_batch;
};

/* One run: n_clients threads, `per` searches each, started together.
 * lat_ms: (n_clients * per) latencies out; ids: (n_clients * per, 10). */
static struct conc_run conc_once(struct vindex *vx, const float *q, int nq, int n_clients, int per,
                                 double *lat_ms, int64_t *ids)
{
    struct client *c = calloc((size_t)n_clients, sizeof *c);
    pthread_barrier_t start;
    if (!c || pthread_barrier_init(&start, NULL, (unsigned)n_clients + 1) != 0)
        abort();
    uint64_t b0, s0, b1, s1;
    index__batch_stats(vx, &b0, &s0);
    for (int t = 0; t < n_clients; t++) {
        c[t] = (struct client){.vx = vx, .q = q, .nq = nq, .first = t, .count = per,
                               .stride = n_clients, .lat_ms = lat_ms + (size_t)t * per,
                               .ids = ids + (size_t)t * per * 10, .start = &start};
        if (pthread_create(&c[t].th, NULL, client_run, &c[t]) != 0)
            abort();
    }
    pthread_barrier_wait(&start);
    double t0 = ims_now();
    for (int t = 0; t < n_clients; t++)
        pthread_join(c[t].th, NULL);
    double wall = ims_now() - t0;
    index__batch_stats(vx, &b1, &s1);
    pthread_barrier_destroy(&start);
    free(c);
    struct conc_run r = {(double)n_clients * per / wall, 0};
    r.mean_batch = b1 > b0 ? (double)(s1 - s0) / (double)(b1 - b0) : 0;
    return r;
}

static void bench_concurrency(const char *set, const float *x, size_t n, const float *q, int nq,
                              const int *levels, int n_levels, const char *types, int scan_threads,
                              int total, int reps, int *first_out)
{
    /* "Flat-fp32": Flat with the int8 pre-scan off (the fp32 scan) */
    const char *names[] = {"Flat", "FlatF16", "Flat-fp32"};
    const char *specs[] = {"Flat", "FlatF16", "Flat"};
    for (int si = 0; si < 3; si++) {
        if (!has_item(types, names[si]))
            continue;
        index__i8_enabled = si != 2;
        struct vindex *vx = build_exact(specs[si], x, n);
        struct vindex_search_params p = {.n_threads = scan_threads};
        vindex_set_search_params(vx, &p, NULL);
        printf("%s    {\"set\": \"%s\", \"n\": %zu, \"type\": \"%s\", \"scan_threads\": %d, "
               "\"isa\": \"%s\", \"reps\": %d, \"levels\": [\n",
               *first_out ? "" : ",\n", set, n, names[si], scan_threads, index__scan_isa(), reps);
        *first_out = 0;
        { /* warm-up, not recorded: first touches, thread start-up */
            double wl[16];
            int64_t wi[160];
            for (int b = 0; b < 3; b++) {
                index__batch_enabled = b;
                conc_once(vx, q, nq, 4, 4, wl, wi);
            }
        }
        for (int li = 0; li < n_levels; li++) {
            int nc = levels[li], per = total / nc > 4 ? total / nc : 4, m = nc * per;
            /* b: index__batch_enabled, 0 never, 1 always, 2 adaptive (default) */
            double *lat[3], *qps[3], *mb[3];
            int64_t *ids[3];
            for (int b = 0; b < 3; b++) {
                lat[b] = malloc(sizeof(double) * (size_t)m * (size_t)reps);
                qps[b] = malloc(sizeof(double) * (size_t)reps);
                mb[b] = malloc(sizeof(double) * (size_t)reps);
                ids[b] = malloc(sizeof(int64_t) * (size_t)m * 10);
                if (!lat[b] || !qps[b] || !mb[b] || !ids[b])
                    abort();
            }
            for (int r = 0; r < reps; r++)
                for (int b = 0; b < 3; b++) { /* alternate: drift hits all three */
                    index__batch_enabled = b;
                    struct conc_run cr =
                        conc_once(vx, q, nq, nc, per, lat[b] + (size_t)r * m, ids[b]);
                    qps[b][r] = cr.qps;
                    mb[b][r] = cr.mean_batch;
                }
            index__batch_enabled = 2;
            double same = same_lists(ids[0], ids[1], m);
            double same2 = same_lists(ids[0], ids[2], m);
            double q2 = pct(qps[2], reps, 0.5);
            double p50_2 = pct(lat[2], m * reps, 0.5), p99_2 = pct(lat[2], m * reps, 0.99);
            double mean_b2 = pct(mb[2], reps, 0.5);
            double q0 = pct(qps[0], reps, 0.5), q1 = pct(qps[1], reps, 0.5);
            double p50_0 = pct(lat[0], m * reps, 0.5), p99_0 = pct(lat[0], m * reps, 0.99);
            double p50_1 = pct(lat[1], m * reps, 0.5), p99_1 = pct(lat[1], m * reps, 0.99);
            double mean_b = pct(mb[1], reps, 0.5);
            fprintf(stderr, "  %s %s c=%d: never %.1f q/s p50 %.2f ms; always %.1f q/s "
                            "p50 %.2f ms (mean batch %.1f); adaptive %.1f q/s p50 %.2f ms "
                            "(mean batch %.1f): adaptive/best %.2f\n",
                    set, names[si], nc, q0, p50_0, q1, p50_1, mean_b, q2, p50_2, mean_b2,
                    q2 / (q0 > q1 ? q0 : q1));
            printf("%s      {\"clients\": %d, \"adaptive_over_best_of_never_always\": %.3f, "
                   "\"adaptive_over_never\": %.3f, \"adaptive_over_always\": %.3f,\n"
                   "       \"adaptive\": {\"qps\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
                   "\"mean_batch\": %.2f, \"top10_lists_equal_one_at_a_time\": %.4f},\n",
                   li ? ",\n" : "", nc, q2 / (q0 > q1 ? q0 : q1), q2 / q0, q2 / q1, q2, p50_2,
                   p99_2, mean_b2, same2);
            printf("%s      \"searches_per_run\": %d,\n"
                   "       \"one_at_a_time\": {\"qps\": %.1f, \"p50_ms\": %.3f, "
                   "\"p99_ms\": %.3f},\n"
                   "       \"batched\": {\"qps\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
                   "\"mean_batch\": %.2f},\n"
                   "       \"qps_ratio\": %.2f, \"p50_ratio\": %.2f, "
                   "\"top10_lists_equal_one_at_a_time\": %.4f}",
                   "", m, q0, p50_0, p99_0, q1, p50_1, p99_1, mean_b, q1 / q0,
                   p50_1 / p50_0, same);
            for (int b = 0; b < 3; b++) {
                free(lat[b]);
                free(qps[b]);
                free(mb[b]);
                free(ids[b]);
            }
        }
        printf("\n    ]}");
        vindex_free(vx);
    }
    index__i8_enabled = 1;
}

struct knob {
    int nprobe, ef, rerank;
};

static void bench_approx(const char *set, const char *spec, const float *x, size_t n,
                         size_t n_train, const float *q, int nq, const int64_t *truth,
                         const struct knob *knobs, int n_knobs, int *first_out)
{
    struct ims_error err = {{0}};
    struct vindex *vx = NULL;
    enum ims_status st = vindex_new(spec, DIM, &vx, &err);
    if (st != IMS_OK)
        die(spec, st, &err);
    index__faiss_set_threads(g_build_threads);
    double t0 = ims_now();
    if (vindex_needs_training(vx)) {
        st = vindex_train(vx, x, IMS_MIN(n_train, n), &err);
        if (st != IMS_OK)
            die("train", st, &err);
    }
    double t_train = ims_now() - t0;
    int64_t *ids = malloc(sizeof(int64_t) * 65536);
    for (size_t off = 0; off < n; off += 65536) {
        size_t m = IMS_MIN((size_t)65536, n - off);
        for (size_t i = 0; i < m; i++)
            ids[i] = (int64_t)(off + i);
        st = vindex_add(vx, ids, x + off * DIM, m, &err);
        if (st != IMS_OK)
            die("add", st, &err);
    }
    free(ids);
    double t_build = ims_now() - t0;
    index__faiss_set_threads(1);
    fprintf(stderr, "  %s: built in %.1f s\n", spec, t_build);
    printf("%s    {\"set\": \"%s\", \"n\": %zu, \"type\": \"%s\", \"train_n\": %zu, "
           "\"train_s\": %.1f, \"build_s\": %.1f, \"build_threads\": %d, \"runs\": [\n",
           *first_out ? "" : ",\n", set, n, spec, vindex_needs_training(vx) ? 0 : IMS_MIN(n_train, n),
           t_train, t_build, g_build_threads);
    *first_out = 0;
    int64_t *got = malloc(sizeof(int64_t) * 10 * (size_t)nq);
    /* HNSW: our walk of the graph, then FAISS's walk of the same graph */
    int n_walks = strncmp(spec, "HNSW", 4) == 0 ? 2 : 1;
    for (int w = 0; w < n_walks; w++)
    for (int i = 0; i < n_knobs; i++) {
        index__hnsw_own_walk = w == 0;
        struct vindex_search_params p = {
            .nprobe = knobs[i].nprobe, .ef_search = knobs[i].ef, .rerank = knobs[i].rerank};
        st = vindex_set_search_params(vx, &p, &err);
        if (st != IMS_OK)
            die("params", st, &err);
        struct timing tm = time_vindex(vx, q, nq, got);
        double rc = recall10(got, truth, nq);
        const char *walk = n_walks == 1 ? "faiss" : (w == 0 ? "own" : "faiss");
        fprintf(stderr, "    %s nprobe %d ef %d rerank %d: p50 %.3f ms recall %.3f\n", walk,
                knobs[i].nprobe, knobs[i].ef, knobs[i].rerank, tm.p50_ms, rc);
        printf("%s      {\"search\": \"%s\", \"nprobe\": %d, \"ef_search\": %d, \"rerank\": %d, "
               "\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"recall10\": %.4f}",
               (i || w) ? ",\n" : "", walk, knobs[i].nprobe, knobs[i].ef, knobs[i].rerank,
               tm.p50_ms, tm.p99_ms, rc);
    }
    index__hnsw_own_walk = 1;
    printf("\n    ]}");
    free(got);
    vindex_free(vx);
}

/* --concurrency: only that section, on each set of --sets. */
static int main_concurrency(size_t n, int nq, uint64_t seed, const char *sets, const char *conc,
                            const char *types, int scan_threads, int total, int reps)
{
    int levels[16], n_levels = 0;
    for (const char *p = conc; p && *p && n_levels < 16;
         p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        levels[n_levels++] = atoi(p);
    for (int i = 0; i < n_levels; i++)
        if (levels[i] < 1 || levels[i] > 256) {
            fprintf(stderr, "bench_index: client counts are 1..256\n");
            return 2;
        }
    if (reps < 1 || total < 1 || scan_threads < 1) {
        fprintf(stderr, "bench_index: --reps, --conc-queries and --scan-threads must be >= 1\n");
        return 2;
    }
    printf("{");
    bench_cpu_print_json(stdout);
    printf("\"bench\": \"index\", \"d\": %d, \"seed\": %llu,\n \"concurrency\": [\n", DIM,
           (unsigned long long)seed);
    const char *names[] = {"easy", "hard"};
    int first = 1;
    for (int si = 0; si < 2; si++) {
        if (!has_item(sets, names[si]))
            continue;
        struct vset v;
        vset_init(&v, si, seed + (uint64_t)si);
        fprintf(stderr, "%s %zu: generating\n", names[si], n);
        float *x = vset_draw(&v, n, seed * 1000 + 1 + (uint64_t)si);
        float *q = vset_draw(&v, (size_t)nq, seed * 1000 + 500 + (uint64_t)si);
        free(v.centres);
        bench_concurrency(names[si], x, n, q, nq, levels, n_levels, types, scan_threads, total,
                          reps, &first);
        free(x);
        free(q);
    }
    printf("\n ]\n}\n");
    return 0;
}

int main(int argc, char **argv)
{
    size_t n = 200000;
    int nq = 200, hnsw = 0, million = 0, pq = 0, ivf = 1;
    uint64_t seed = 42;
    const char *sets = "easy,hard";
    const char *million_types = "IVF4096_HNSW32,PQ64";
    const char *conc = NULL, *conc_types = "Flat,FlatF16";
    int scan_threads = 2, reps = 3, conc_queries = 256;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--n") && i + 1 < argc)
            n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--queries") && i + 1 < argc)
            nq = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sets") && i + 1 < argc)
            sets = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--build-threads") && i + 1 < argc)
            g_build_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--hnsw"))
            hnsw = 1;
        else if (!strcmp(argv[i], "--pq"))
            pq = 1;
        else if (!strcmp(argv[i], "--no-ivf"))
            ivf = 0;
        else if (!strcmp(argv[i], "--million"))
            million = 1;
        else if (!strcmp(argv[i], "--million-types") && i + 1 < argc)
            million_types = argv[++i];
        else if (!strcmp(argv[i], "--concurrency") && i + 1 < argc)
            conc = argv[++i];
        else if (!strcmp(argv[i], "--types") && i + 1 < argc)
            conc_types = argv[++i];
        else if (!strcmp(argv[i], "--scan-threads") && i + 1 < argc)
            scan_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--conc-queries") && i + 1 < argc)
            conc_queries = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--n N] [--queries Q] [--sets easy,hard] [--hnsw] [--pq] [--no-ivf] "
                            "[--million] [--million-types \"A;B\"] [--seed S] [--build-threads T]\n"
                            "       [--concurrency 1,4,16 [--scan-threads T] [--reps R] "
                            "[--conc-queries Q] [--types Flat,FlatF16,Flat-fp32]]\n", argv[0]);
            return 2;
        }
    }
    if (n < 1000 || nq < 10) {
        fprintf(stderr, "bench_index: need --n >= 1000 and --queries >= 10\n");
        return 2;
    }
    if (conc)
        return main_concurrency(n, nq, seed, sets, conc, conc_types, scan_threads, conc_queries,
                                reps);
    int nq_faiss = IMS_MIN(nq, 50);
    const struct knob ivf_flat[] = {{8, 0, 0}, {16, 0, 0}, {32, 0, 0}, {64, 0, 0}};
    const struct knob ivf_pq[] = {{16, 0, 100}, {32, 0, 100}, {64, 0, 200}, {128, 0, 200}};
    const struct knob hnsw_k[] = {{0, 32, 0}, {0, 64, 0}, {0, 128, 0}};

    printf("{");
    bench_cpu_print_json(stdout);
    printf("\"bench\": \"index\", \"d\": %d, \"seed\": %llu,\n \"exact\": [\n", DIM,
           (unsigned long long)seed);
    struct {
        const char *name;
        int hard;
    } all[] = {{"easy", 0}, {"hard", 1}};
    int64_t *truth[2] = {NULL, NULL};
    float *xs[2] = {NULL, NULL}, *qs[2] = {NULL, NULL};
    int first = 1;
    for (int si = 0; si < 2; si++) {
        if (!strstr(sets, all[si].name))
            continue;
        struct vset v;
        vset_init(&v, all[si].hard, seed + (uint64_t)si);
        fprintf(stderr, "%s %zu: generating\n", all[si].name, n);
        xs[si] = vset_draw(&v, n, seed * 1000 + 1 + (uint64_t)si);
        qs[si] = vset_draw(&v, (size_t)nq, seed * 1000 + 500 + (uint64_t)si);
        free(v.centres);
        truth[si] = malloc(sizeof(int64_t) * 10 * (size_t)nq);
        if (!first)
            printf(",\n");
        first = 0;
        bench_exact(all[si].name, xs[si], n, qs[si], nq, nq_faiss, truth[si]);
    }
    printf("\n ],\n \"approximate\": [\n");
    first = 1;
    if (truth[1]) {
        size_t nl = n >= 500000 ? 4096 : 1024;
        char spec[64];
        snprintf(spec, sizeof spec, "IVF%zu,Flat", nl);
        if (ivf)
            bench_approx("hard", spec, xs[1], n, IMS_MIN(n, 100000), qs[1], nq, truth[1],
                         ivf_flat, 4, &first);
        snprintf(spec, sizeof spec, "IVF%zu,PQ64", nl);
        if (pq)
            bench_approx("hard", spec, xs[1], n, IMS_MIN(n, 100000), qs[1], nq, truth[1], ivf_pq,
                         4, &first);
        if (hnsw)
            bench_approx("hard", "HNSW32", xs[1], n, 0, qs[1], nq, truth[1], hnsw_k, 3, &first);
    }
    for (int si = 0; si < 2; si++) {
        free(xs[si]);
        free(qs[si]);
    }
    if (million) {
        size_t nm = 1000000;
        struct vset v;
        vset_init(&v, 1, seed + 1);
        fprintf(stderr, "hard 1M: generating\n");
        float *x = vset_draw(&v, nm, seed * 1000 + 2);
        float *q = vset_draw(&v, (size_t)nq, seed * 1000 + 501);
        free(v.centres);
        int64_t *tr = malloc(sizeof(int64_t) * 10 * (size_t)nq);
        struct vindex *vx = build_exact("Flat", x, nm);
        struct timing te = time_vindex(vx, q, nq, tr); /* the truth, and its cost */
        vindex_free(vx);
        fprintf(stderr, "  Flat (own scan, 1 thread): p50 %.3f ms\n", te.p50_ms);
        printf("%s    {\"set\": \"hard\", \"n\": %zu, \"type\": \"Flat\", \"runs\": [\n"
               "      {\"search\": \"own\", \"threads\": 1, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
               "\"recall10\": 1.0}\n    ]}",
               first ? "" : ",\n", nm, te.p50_ms, te.p99_ms);
        first = 0;
        const struct knob pq1m[] = {{32, 0, 200}, {64, 0, 200}, {128, 0, 200}, {128, 0, 400}};
        const struct knob hnsw1m[] = {{0, 64, 0}, {0, 128, 0}, {0, 256, 0}, {0, 384, 0}, {0, 512, 0}};
        /* --million-types: ';'-separated specs (factory strings contain ',') */
        char types[256];
        snprintf(types, sizeof types, "%s", million_types);
        for (char *save = NULL, *t = strtok_r(types, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
            if (strcmp(t, "none") == 0)
                continue;
            if (strncmp(t, "HNSW", 4) == 0)
                bench_approx("hard", t, x, nm, 0, q, nq, tr, hnsw1m, 5, &first);
            else
                bench_approx("hard", t, x, nm, 100000, q, nq, tr, pq1m, 4, &first);
        }
        free(tr);
        free(x);
        free(q);
    }
    printf("\n ]\n}\n");
    free(truth[0]);
    free(truth[1]);
    return 0;
}
