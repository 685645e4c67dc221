/* SPDX-License-Identifier: MIT */
/*
 * bench_graph: our own HNSW build and walk ("Graph" types, index_graph.c)
 * beside FAISS's HNSW32 build and walk, in the same run, on the hard set of
 * shared bench/VECTORS.md (issue 11 item 2). JSON on stdout, ratios first:
 * build time / FAISS's, and for each ef: recall@10 against the exact top 10
 * and one-core latency (p50, p99; the whole vindex search: walk + exact
 * fp32 re-score). Both builds use every online core (--threads to change).
 * Memory per vector: the graph's bytes / n (bf16 copy, links, labels) plus
 * the fp32 row every vindex keeps.
 *
 * usage: bench_graph [--n N] [--queries Q] [--spec Graph32] [--ef 32,64,...]
 *                    [--faiss-ef 64,128,256] [--no-faiss] [--threads T]
 *                    [--chunk C] [--seed S]
 */
#include "bench_cpu.h"
#include "imgsearch/index.h"
#include "index_graph.h"
#include "index_int.h"

#include <math.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "bench_stats.h"

#define DIM 512

static uint64_t rng_state;
static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unit(void) { return ((double)(rng_next() >> 11) + 0.5) * 0x1p-53; }
static double rng_normal(void)
{
    return sqrt(-2.0 * log(rng_unit())) * cos(6.283185307179586 * rng_unit());
}

/* hard set: 10,000 centres c ~ N(0, diag(s^2)), s_i = 1/sqrt(i);
 * x = normalise(c_j + 0.8 (g . s)) */
static float *centres;
static float *draw(size_t n)
{
    float *x = malloc(sizeof(float) * n * DIM);
    if (!x)
        abort();
    for (size_t i = 0; i < n; i++) {
        const float *c = centres + (rng_next() % 10000) * DIM;
        double norm = 0;
        for (int d = 0; d < DIM; d++) {
            double v = c[d] + 0.8 * rng_normal() / sqrt(d + 1.0);
            x[i * DIM + d] = (float)v;
            norm += v * v;
        }
        float inv = (float)(1.0 / sqrt(norm));
        for (int d = 0; d < DIM; d++)
            x[i * DIM + d] *= inv;
    }
    return x;
}

static void die(const char *what, enum ims_status st, const struct ims_error *err)
{
    fprintf(stderr, "bench_graph: %s: %s\n", what, ims_error_message(err, st));
    exit(1);
}

static double g_cpu; /* CPU seconds of the last build (all threads) */

static struct vindex *build(const char *spec, const float *x, size_t n, size_t chunk, double *secs)
{
    double c0 = bench_process_cpu_s();
    struct ims_error err = {{0}};
    struct vindex *vx = NULL;
    enum ims_status st = vindex_new(spec, DIM, &vx, &err);
    if (st != IMS_OK)
        die(spec, st, &err);
    int64_t *ids = malloc(sizeof(int64_t) * chunk);
    double t0 = ims_now();
    for (size_t i = 0; i < n; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        for (size_t j = 0; j < m; j++)
            ids[j] = (int64_t)(i + j);
        if ((st = vindex_add(vx, ids, x + i * DIM, m, &err)) != IMS_OK)
            die("add", st, &err);
        if (n >= 100000 && (i / chunk) % (n / chunk / 10 + 1) == 0)
            fprintf(stderr, "  %s: %zu / %zu at %.1f s\n", spec, i, n, ims_now() - t0);
    }
    *secs = ims_now() - t0;
    g_cpu = bench_process_cpu_s() - c0;
    free(ids);
    return vx;
}

struct point {
    int ef;
    double recall, p50, p99;
};

static struct point measure(struct vindex *vx, int ef, const float *q, int nq,
                            const int64_t *truth)
{
    struct ims_error err = {{0}};
    struct vindex_search_params p = {.ef_search = ef};
    double *lat = malloc(sizeof(double) * (size_t)nq);
    int hit = 0;
    for (int pass = 0; pass < 2; pass++) { /* the first pass warms the caches */
        hit = 0;
        for (int i = 0; i < nq; i++) {
            float s[10];
            int64_t id[10];
            int nf = 0;
            double t0 = ims_now();
            enum ims_status st =
                vindex_search_with(vx, q + (size_t)i * DIM, 10, NULL, &p, s, id, &nf, &err);
            lat[i] = (ims_now() - t0) * 1e3;
            if (st != IMS_OK)
                die("search", st, &err);
            for (int a = 0; a < nf; a++)
                for (int b = 0; b < 10; b++)
                    hit += id[a] == truth[(size_t)i * 10 + b];
        }
    }
    qsort(lat, (size_t)nq, sizeof *lat, bench_cmp_double);
    struct point r = {ef, hit / (10.0 * nq), lat[nq / 2], lat[(nq * 99) / 100]};
    free(lat);
    return r;
}

static int parse_list(const char *s, int *out, int cap)
{
    int n = 0;
    while (s && *s && n < cap) {
        out[n++] = atoi(s);
        s = strchr(s, ',');
        if (s)
            s++;
    }
    return n;
}

static void print_points(const char *name, const struct point *p, int n)
{
    printf("    \"%s\": [", name);
    for (int i = 0; i < n; i++)
        printf("%s{\"ef\": %d, \"recall10\": %.4f, \"p50_ms\": %.3f, \"p99_ms\": %.3f}",
               i ? ", " : "", p[i].ef, p[i].recall, p[i].p50, p[i].p99);
    printf("]");
}

int main(int argc, char **argv)
{
    size_t n = 100000, chunk = 1024;
    int nq = 300, threads = 0, with_faiss = 1;
    uint64_t seed = 1;
    const char *spec = "Graph32";
    int efs[16], n_efs = parse_list("32,48,64,96,128,192", efs, 16);
    int fefs[16], n_fefs = parse_list("64,128,256", fefs, 16);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--n") && i + 1 < argc)
            n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--queries") && i + 1 < argc)
            nq = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--spec") && i + 1 < argc)
            spec = argv[++i];
        else if (!strcmp(argv[i], "--ef") && i + 1 < argc)
            n_efs = parse_list(argv[++i], efs, 16);
        else if (!strcmp(argv[i], "--faiss-ef") && i + 1 < argc)
            n_fefs = parse_list(argv[++i], fefs, 16);
        else if (!strcmp(argv[i], "--no-faiss"))
            with_faiss = 0;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc)
            chunk = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_graph [--n N] [--queries Q] [--spec S] [--ef LIST] "
                            "[--faiss-ef LIST] [--no-faiss] [--threads T] [--chunk C]\n");
            return 2;
        }
    }
    int cores = threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    index__graph_threads = cores;
    index__faiss_set_threads(cores);

    rng_state = seed;
    centres = malloc(sizeof(float) * 10000 * DIM);
    for (int j = 0; j < 10000; j++)
        for (int d = 0; d < DIM; d++)
            centres[j * DIM + d] = (float)(rng_normal() / sqrt(d + 1.0));
    float *x = draw(n), *q = draw((size_t)nq);

    /* ground truth: the exact top 10 (Flat) */
    double t_flat;
    struct vindex *flat = build("Flat", x, n, 65536, &t_flat);
    int64_t *truth = malloc(sizeof(int64_t) * (size_t)nq * 10);
    for (int i = 0; i < nq; i++) {
        float s[10];
        int nf;
        struct ims_error err = {{0}};
        enum ims_status st = vindex_search(flat, q + (size_t)i * DIM, 10, s, truth + i * 10, &nf,
                                           &err);
        if (st != IMS_OK)
            die("exact", st, &err);
    }
    vindex_free(flat);

    double t_own;
    struct vindex *own = build(spec, x, n, chunk, &t_own);
    double cpu_own = g_cpu;
    fprintf(stderr, "  %s: built %zu in %.1f s (%.1f CPU s)\n", spec, n, t_own, cpu_own);
    struct point own_pts[16];
    for (int i = 0; i < n_efs; i++) {
        own_pts[i] = measure(own, efs[i], q, nq, truth);
        fprintf(stderr, "  %s ef %d: recall %.4f p50 %.3f ms\n", spec, efs[i], own_pts[i].recall,
                own_pts[i].p50);
    }
    size_t gbytes = index__graph_memory(own->graph);
    vindex_free(own);

    double t_faiss = 0, cpu_faiss = 0;
    struct point f_pts[16];
    if (with_faiss) {
        struct vindex *fx = build("HNSW32", x, n, chunk, &t_faiss);
        cpu_faiss = g_cpu;
        fprintf(stderr, "  HNSW32 (FAISS): built %zu in %.1f s (%.1f CPU s)\n", n, t_faiss,
                cpu_faiss);
        for (int i = 0; i < n_fefs; i++) {
            f_pts[i] = measure(fx, fefs[i], q, nq, truth);
            fprintf(stderr, "  HNSW32 ef %d: recall %.4f p50 %.3f ms\n", fefs[i],
                    f_pts[i].recall, f_pts[i].p50);
        }
        vindex_free(fx);
    }

    /* the best own point reaching recall 0.95, and FAISS's */
    int own_best = -1, f_best = -1;
    for (int i = 0; i < n_efs; i++)
        if (own_pts[i].recall >= 0.95 && (own_best < 0 || own_pts[i].p50 < own_pts[own_best].p50))
            own_best = i;
    for (int i = 0; with_faiss && i < n_fefs; i++)
        if (f_pts[i].recall >= 0.95 && (f_best < 0 || f_pts[i].p50 < f_pts[f_best].p50))
            f_best = i;

    printf("{");
    bench_cpu_print_json(stdout);
    const char *names[] = {"faiss_hnsw32_build_s"};
    double vals[] = {t_faiss};
    bench_cpu_print_yardsticks(stdout, with_faiss ? 1 : 0, names, vals);
    printf(",\n  \"ratios\": {\"build_time_own_over_faiss\": %.3f, "
           "\"build_cpu_own_over_faiss\": %.3f",
           with_faiss && t_faiss > 0 ? t_own / t_faiss : 0.0,
           with_faiss && cpu_faiss > 0 ? cpu_own / cpu_faiss : 0.0);
    if (own_best >= 0 && f_best >= 0)
        printf(", \"p50_at_recall95_own_over_faiss\": %.3f", own_pts[own_best].p50 / f_pts[f_best].p50);
    printf("},\n  \"set\": \"hard\", \"n\": %zu, \"dim\": %d, \"queries\": %d, \"threads\": %d, "
           "\"add_chunk\": %zu, \"isa\": \"%s\",\n",
           n, DIM, nq, cores, chunk, index__scan_isa());
    printf("  \"own\": {\"spec\": \"%s\", \"build_s\": %.2f, \"build_cpu_s\": %.2f, "
           "\"graph_bytes_per_vector\": %.1f, \"bytes_per_vector_with_fp32\": %.1f,\n",
           spec, t_own, cpu_own, (double)gbytes / (double)n, (double)gbytes / (double)n + 4.0 * DIM + 8);
    print_points("points", own_pts, n_efs);
    printf("},\n");
    if (with_faiss) {
        printf("  \"faiss\": {\"spec\": \"HNSW32\", \"build_s\": %.2f, \"build_cpu_s\": %.2f,\n",
               t_faiss, cpu_faiss);
        print_points("points", f_pts, n_fefs);
        printf("}\n");
    } else {
        printf("  \"faiss\": null\n");
    }
    printf("}\n");
    free(x);
    free(q);
    free(truth);
    free(centres);
    return 0;
}
