/* SPDX-License-Identifier: MIT */
/*
 * bench_filter.c: filtered search (issue 10) against the unfiltered search,
 * in one run. N random unit vectors (clustered, so that HNSW behaves as on
 * embeddings), random filters at 50%, 20%, 11%, 9%, 5% and 0.1% of the ids (11% and 9%
 * straddle the 10% at which Flat switches to its int8 pre-scan):
 * - Flat: p50/p95 latency filtered and unfiltered, and their ratio;
 * - HNSW32 (ef_search given): the same, plus recall@10 of the filtered
 *   answer against Flat's exact filtered answer.
 * JSON on stdout, with the machine (bench_cpu).
 *
 *     bench_filter [--n 100000] [--dim 512] [--queries 200] [--ef 128] [--no-hnsw]
 *                  [--approx SPEC]   (the approximate type, HNSW32 by default;
 *                                     Graph32 for the own graph)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_cpu.h"
#include "imgsearch/index.h"
#include "bench_rand.h"

#define BENCH_SEED 0x9E3779B97F4A7C15ull
static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
struct lat {
    double p50, p95;
};
static struct lat pct(double *t, int n)
{
    qsort(t, (size_t)n, sizeof(*t), cmp_d);
    return (struct lat){t[n / 2], t[(n * 95) / 100]};
}

int main(int argc, char **argv)
{
    bench_rng = BENCH_SEED;
    int n = 100000, dim = 512, nq = 200, ef = 128, hnsw = 1;
    const char *approx = "HNSW32";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--n") && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dim") && i + 1 < argc)
            dim = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--queries") && i + 1 < argc)
            nq = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ef") && i + 1 < argc)
            ef = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--approx") && i + 1 < argc)
            approx = argv[++i];
        else if (!strcmp(argv[i], "--no-hnsw"))
            hnsw = 0;
        else {
            int help = !strcmp(argv[i], "--help");
            fprintf(help ? stdout : stderr,
                    "usage: bench_filter [--n N] [--dim D] [--queries Q] [--ef E] [--no-hnsw] "
                    "[--approx SPEC]\n"
                    "  defaults: --n 100000 --dim 512 --queries 200 --ef 128 --approx HNSW32\n"
                    "  (Graph32 for the own graph); JSON on stdout, see bench/README-index.md\n");
            return help ? 0 : 2;
        }
    }
    int n_centres = 100;
    float *centres = malloc(sizeof(float) * (size_t)n_centres * (size_t)dim);
    float *x = malloc(sizeof(float) * (size_t)n * (size_t)dim);
    float *qs = malloc(sizeof(float) * (size_t)nq * (size_t)dim);
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)n);
    for (int c = 0; c < n_centres; c++) {
        for (int j = 0; j < dim; j++)
            centres[(size_t)c * dim + j] = gauss();
        normalise(centres + (size_t)c * dim, dim);
    }
    for (int i = 0; i < n; i++) {
        const float *c = centres + (size_t)(i % n_centres) * dim;
        for (int j = 0; j < dim; j++)
            x[(size_t)i * dim + j] = c[j] + 0.08f * gauss();
        normalise(x + (size_t)i * dim, dim);
        ids[i] = i + 1;
    }
    for (int q = 0; q < nq; q++) {
        const float *c = centres + (size_t)(q * 7 % n_centres) * dim;
        for (int j = 0; j < dim; j++)
            qs[(size_t)q * dim + j] = c[j] + 0.1f * gauss();
        normalise(qs + (size_t)q * dim, dim);
    }
    struct ims_error err = {0};
    struct vindex *flat = NULL, *hv = NULL;
    if (vindex_new("Flat", dim, &flat, &err) || vindex_add(flat, ids, x, (size_t)n, &err)) {
        fprintf(stderr, "flat: %s\n", err.message);
        return 1;
    }
    if (hnsw) {
        if (vindex_new(approx, dim, &hv, &err) || vindex_add(hv, ids, x, (size_t)n, &err)) {
            fprintf(stderr, "hnsw: %s\n", err.message);
            return 1;
        }
        struct vindex_search_params p = {.ef_search = ef};
        vindex_set_search_params(hv, &p, &err);
    }
    printf("{");
    bench_cpu_print_json(stdout);
    printf("\"approx\": \"%s\", ", approx);
    printf("\"n\": %d, \"dim\": %d, \"queries\": %d, \"k\": 10, \"hnsw_ef\": %d, "
           "\"rows\": [",
           n, dim, nq, ef);
    const double shares[] = {1.0, 0.5, 0.2, 0.11, 0.09, 0.05, 0.001};
    double *t = malloc(sizeof(double) * (size_t)nq);
    uint64_t *bits = malloc(sizeof(uint64_t) * (size_t)(n / 64 + 2));
    struct lat base_flat = {0, 0}, base_hnsw = {0, 0};
    for (size_t si = 0; si < sizeof shares / sizeof *shares; si++) {
        double share = shares[si];
        memset(bits, 0, sizeof(uint64_t) * (size_t)(n / 64 + 2));
        int n_match = 0;
        for (int i = 0; i < n; i++)
            if (urand() < share) {
                bits[ids[i] >> 6] |= 1ull << (ids[i] & 63);
                n_match++;
            }
        struct vindex_filter f = {bits, (int64_t)n + 1};
        const struct vindex_filter *fp = si == 0 ? NULL : &f;
        static float sc[10], sc2[10];
        static int64_t id1[10], id2[10];
        int nf = 0, nf2 = 0;
        int64_t *truth = malloc(sizeof(int64_t) * 10 * (size_t)nq);
        for (int q = 0; q < nq; q++) {
            double t0 = ims_now();
            vindex_search_filtered(flat, qs + (size_t)q * dim, 10, fp, sc, id1, &nf, &err);
            t[q] = (ims_now() - t0) * 1e3;
            memcpy(truth + 10 * q, id1, sizeof(id1));
        }
        struct lat lf = pct(t, nq);
        if (si == 0)
            base_flat = lf;
        printf("%s{\"share\": %g, \"matching\": %d, \"flat_p50_ms\": %.4f, \"flat_p95_ms\": %.4f, "
               "\"flat_ratio_p50\": %.3f",
               si ? ", " : "", share, n_match, lf.p50, lf.p95, lf.p50 / base_flat.p50);
        if (hv) {
            int hit = 0, tot = 0;
            for (int q = 0; q < nq; q++) {
                double t0 = ims_now();
                vindex_search_filtered(hv, qs + (size_t)q * dim, 10, fp, sc2, id2, &nf2, &err);
                t[q] = (ims_now() - t0) * 1e3;
                int m = n_match < 10 ? n_match : 10;
                for (int a = 0; a < nf2; a++)
                    for (int b = 0; b < m; b++)
                        hit += id2[a] == truth[10 * q + b];
                tot += m;
            }
            struct lat lh = pct(t, nq);
            if (si == 0)
                base_hnsw = lh;
            printf(", \"hnsw_p50_ms\": %.4f, \"hnsw_p95_ms\": %.4f, \"hnsw_ratio_p50\": %.3f, "
                   "\"hnsw_recall_at_10\": %.4f",
                   lh.p50, lh.p95, lh.p50 / base_hnsw.p50, tot ? (double)hit / tot : 1.0);
        }
        printf("}");
        free(truth);
    }
    printf("]}\n");
    vindex_free(flat);
    vindex_free(hv);
    free(t);
    free(bits);
    free(centres);
    free(x);
    free(qs);
    free(ids);
    return 0;
}
