/* SPDX-License-Identifier: MIT */
/*
 * bench_dups.c: library-wide near-duplicates (issue 10, vindex_duplicates)
 * over N vectors against an all-pairs scan of a 10k sample extrapolated to
 * N (x (N / 10k)^2), in one run. The vectors are clustered unit vectors
 * (cosine ~0.65 within a cluster, as CLIP embeddings of one subject) with
 * planted near-duplicate groups (a base and copies perturbed by small noise,
 * cosine ~0.99). Reports seconds, groups found, the share of planted groups
 * found whole (recall), and, on the 10k sample, whether the partitioned
 * pass finds the same groups as the all-pairs one.
 *
 *     bench_dups [--n 100000] [--dim 512] [--sample 10000] [--threshold 0.95] [--threads 2]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_cpu.h"
#include "imgsearch/base.h"
#include "imgsearch/index.h"
#include "bench_rand.h"

#define BENCH_SEED 0x2545F4914F6CDD1Dull

/* Groups of a result as a canonical text per group's first id: for
 * comparing two results (same groups <=> same sorted lists). */
static int same_groups(const struct vindex_dups *a, const struct vindex_dups *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t g = 0; g < a->n; g++) {
        if (a->groups[g].n != b->groups[g].n)
            return 0;
        for (size_t i = 0; i < a->groups[g].n; i++)
            if (a->groups[g].ids[i] != b->groups[g].ids[i])
                return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    bench_rng = BENCH_SEED;
    int n = 100000, dim = 512, sample = 10000, threads = 2;
    double threshold = 0.95;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--n") && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dim") && i + 1 < argc)
            dim = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sample") && i + 1 < argc)
            sample = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threshold") && i + 1 < argc)
            threshold = atof(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_dups [--n N] [--dim D] [--sample S] [--threshold T] "
                            "[--threads N]\n");
            return 2;
        }
    }
    if (sample > n)
        sample = n;
    /* 1% of the rows are in planted groups of 3 (a base and two copies) */
    int n_centres = 1000, group = 3, n_groups = n / 100 / group;
    float *centres = malloc(sizeof(float) * (size_t)n_centres * (size_t)dim);
    float *x = malloc(sizeof(float) * (size_t)n * (size_t)dim);
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)n);
    int *planted = malloc(sizeof(int) * (size_t)n); /* group, or -1 */
    if (!centres || !x || !ids || !planted)
        return 1;
    for (int c = 0; c < n_centres; c++) {
        for (int j = 0; j < dim; j++)
            centres[(size_t)c * dim + j] = gauss();
        normalise(centres + (size_t)c * dim, dim);
    }
    float spread = 0.75f / sqrtf((float)dim), copy = 0.1f / sqrtf((float)dim);
    for (int i = 0; i < n; i++) {
        const float *c = centres + (size_t)(urand() * n_centres) * dim;
        for (int j = 0; j < dim; j++)
            x[(size_t)i * dim + j] = c[j] + spread * gauss();
        normalise(x + (size_t)i * dim, dim);
        ids[i] = i + 1;
        planted[i] = -1;
    }
    /* group g: rows spread over the whole range (so the 10k sample holds some) */
    for (int g = 0; g < n_groups; g++) {
        int base = (int)(urand() * n);
        while (planted[base] >= 0)
            base = (base + 1) % n;
        planted[base] = g;
        for (int k = 1; k < group; k++) {
            int r = (int)(urand() * n);
            while (planted[r] >= 0)
                r = (r + 1) % n;
            planted[r] = g;
            for (int j = 0; j < dim; j++)
                x[(size_t)r * dim + j] = x[(size_t)base * dim + j] + copy * gauss();
            normalise(x + (size_t)r * dim, dim);
        }
    }
    struct ims_error err = {0};
    struct vindex *vx = NULL;
    if (vindex_new("Flat", dim, &vx, &err) || vindex_add(vx, ids, x, (size_t)n, &err)) {
        fprintf(stderr, "index: %s\n", err.message);
        return 1;
    }
    struct vindex_dups_options o;
    vindex_dups_options_default(&o);
    o.threshold = (float)threshold;
    o.n_threads = threads;

    /* the k-NN pass over all N, through the index */
    struct vindex_dups d;
    double t0 = ims_now();
    if (vindex_duplicates(vx, &o, &d, &err) != IMS_OK) {
        fprintf(stderr, "dups: %s\n", err.message);
        return 1;
    }
    double t_all = ims_now() - t0;
    /* recall: planted groups found whole (inside one group) */
    int *seen = calloc((size_t)n_groups, sizeof(int));
    int *found_in = malloc(sizeof(int) * (size_t)n_groups);
    for (int g = 0; g < n_groups; g++)
        found_in[g] = -1;
    size_t in_groups = 0;
    for (size_t g = 0; g < d.n; g++)
        for (size_t i = 0; i < d.groups[g].n; i++) {
            in_groups++;
            int p = planted[d.groups[g].ids[i] - 1];
            if (p < 0)
                continue;
            if (found_in[p] == -1 || found_in[p] == (int)g) {
                found_in[p] = (int)g;
                seen[p]++;
            } else {
                seen[p] = -1000; /* split over two groups */
            }
        }
    int whole = 0;
    for (int g = 0; g < n_groups; g++)
        whole += seen[g] == group;

    /* the all-pairs scan of the first `sample` rows, and the partitioned
     * pass on the same rows (exact_max below the sample) */
    struct vindex_dups_options oe = o, op = o;
    oe.exact_max = (size_t)sample;
    op.exact_max = 0;
    struct vindex_dups de, dp;
    t0 = ims_now();
    if (vindex_duplicates_of(ids, x, (size_t)sample, dim, &oe, &de, &err) != IMS_OK)
        return 1;
    double t_pairs = ims_now() - t0;
    t0 = ims_now();
    if (vindex_duplicates_of(ids, x, (size_t)sample, dim, &op, &dp, &err) != IMS_OK)
        return 1;
    double t_part_sample = ims_now() - t0;
    double scale = ((double)n / sample) * ((double)n / sample);
    double t_pairs_extrapolated = t_pairs * scale;

    printf("{");
    bench_cpu_print_json(stdout);
    printf("\"n\": %d, \"dim\": %d, \"threshold\": %.3f, \"threads\": %d, \"k\": %d, "
           "\"nprobe\": %d, \"exact_max\": %zu, ",
           n, dim, threshold, threads, o.k, o.nprobe, o.exact_max);
    printf("\"planted_groups\": %d, \"dups_seconds\": %.3f, \"dups_exact\": %d, "
           "\"groups_found\": %zu, \"rows_in_groups\": %zu, \"planted_found_whole\": %d, "
           "\"planted_recall\": %.4f, ",
           n_groups, t_all, d.exact, d.n, in_groups, whole,
           n_groups ? (double)whole / n_groups : 1.0);
    printf("\"sample\": %d, \"all_pairs_sample_seconds\": %.3f, "
           "\"all_pairs_extrapolated_seconds\": %.1f, \"partitioned_sample_seconds\": %.3f, "
           "\"sample_groups_all_pairs\": %zu, \"sample_groups_partitioned\": %zu, "
           "\"sample_same_groups\": %d, ",
           sample, t_pairs, t_pairs_extrapolated, t_part_sample, de.n, dp.n,
           same_groups(&de, &dp));
    const char *names[] = {"all_pairs_extrapolated_seconds"};
    double vals[] = {t_pairs_extrapolated};
    bench_cpu_print_yardsticks(stdout, 1, names, vals);
    printf(", \"speedup_vs_all_pairs\": %.1f}\n", t_pairs_extrapolated / t_all);
    vindex_dups_fini(&d);
    vindex_dups_fini(&de);
    vindex_dups_fini(&dp);
    vindex_free(vx);
    free(centres);
    free(x);
    free(ids);
    free(planted);
    free(seen);
    free(found_in);
    return 0;
}
