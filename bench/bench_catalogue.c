/* SPDX-License-Identifier: MIT */
/*
 * bench_catalogue.c: the catalogue's share of the time per image, SQLite
 * against PostgreSQL, measured in one run on the same machine.
 *
 *     bench_catalogue --pg URL [--rows N] [--dim D] [--batch B] [--joins J]
 *                     (N 5000, D 512, B 8 = serve's ingest batch, J 2000)
 *
 * URL must name an EMPTY database (bench/bench_catalogue.sh starts a
 * throwaway server and makes one). For each backend it measures:
 *   - insert: store_insert_many of B rows at a time (512-d embedding, a 6 KiB
 *     thumbnail, a content hash: what ingest commits per batch), durable
 *     commits (SQLite synchronous=FULL; PostgreSQL as configured);
 *     microseconds per image, median over batches, and the total;
 *   - join: store_get_many of 10 random ids, as a search result page joins
 *     rows; microseconds per call, median and p99;
 *   - feed: store_changes_after of the newest 64 changes, as a replica's
 *     catch-up step.
 * Prints one JSON object with both backends, the ratios PostgreSQL/SQLite
 * and the CPU model. Nothing here is a test.
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "imgsearch/store.h"
#include "bench_stats.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double pct(double *v, size_t n, double p)
{
    qsort(v, n, sizeof(double), bench_cmp_double);
    size_t k = (size_t)(p * (double)(n - 1) + 0.5);
    return v[k];
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint64_t next_u64(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void cpu_model(char *out, size_t cap)
{
    snprintf(out, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ')
                    c++;
                c[strcspn(c, "\n")] = 0;
                snprintf(out, cap, "%s", c);
            }
            break;
        }
    }
    fclose(f);
}

struct result {
    double insert_us_median, insert_us_total, join_us_median, join_us_p99, feed_us_median;
};

static int run(const char *url, const char *dir, size_t rows, uint32_t dim, size_t batch,
               size_t joins, struct result *res)
{
    struct store_model_info m = {"bench-model", dim};
    struct store *st = NULL;
    struct ims_error err = {0};
    if (store_open_catalogue(url, dir, &m, 0, &st, &err) != IMS_OK) {
        fprintf(stderr, "bench_catalogue: open: %s\n", err.message);
        return -1;
    }
    size_t nb = (rows + batch - 1) / batch;
    float *vecs = malloc(batch * dim * sizeof(float));
    struct store_new_image *in = calloc(batch, sizeof(*in));
    struct store_insert_result *out = calloc(batch, sizeof(*out));
    char (*src)[64] = calloc(batch, 64);
    uint8_t (*hash)[32] = calloc(batch, 32);
    unsigned char *thumb = malloc(6144);
    double *t = calloc(nb > joins ? nb : joins, sizeof(double));
    int rc = -1;
    if (!vecs || !in || !out || !src || !hash || !thumb || !t)
        goto out;
    for (size_t i = 0; i < 6144; i++)
        thumb[i] = (unsigned char)next_u64();
    double total = 0;
    size_t done = 0;
    for (size_t b = 0; b < nb; b++) {
        size_t k = rows - done < batch ? rows - done : batch;
        for (size_t i = 0; i < k; i++) {
            for (uint32_t d = 0; d < dim; d++)
                vecs[i * dim + d] = (float)(next_u64() >> 40) / (float)(1u << 24) - 0.5f;
            snprintf(src[i], 64, "https://bench.example/%zu.jpg", done + i);
            for (int h = 0; h < 32; h += 8) {
                uint64_t x = next_u64();
                memcpy(hash[i] + h, &x, 8);
            }
            in[i] = (struct store_new_image){.source = src[i], .sha256 = hash[i],
                                             .format = "jpeg", .width = 640, .height = 480,
                                             .bytes = 80000, .embedding = vecs + i * dim,
                                             .dim = dim, .thumbnail = thumb,
                                             .thumbnail_bytes = 6144};
        }
        double t0 = now_s();
        if (store_insert_many(st, in, k, out, &err) != IMS_OK) {
            fprintf(stderr, "bench_catalogue: insert: %s\n", err.message);
            goto out;
        }
        double dt = now_s() - t0;
        t[b] = dt * 1e6 / (double)k;
        total += dt;
        done += k;
    }
    res->insert_us_median = pct(t, nb, 0.5);
    res->insert_us_total = total * 1e6 / (double)rows;
    int64_t max_id = 0;
    store_max_id(st, &max_id, NULL);
    for (size_t j = 0; j < joins; j++) {
        int64_t ids[10];
        struct store_image_row r[10];
        uint8_t found[10];
        for (int i = 0; i < 10; i++)
            ids[i] = 1 + (int64_t)(next_u64() % (uint64_t)max_id);
        double t0 = now_s();
        if (store_get_many(st, ids, 10, 0, r, found, &err) != IMS_OK) {
            fprintf(stderr, "bench_catalogue: join: %s\n", err.message);
            goto out;
        }
        t[j] = (now_s() - t0) * 1e6;
        for (int i = 0; i < 10; i++)
            store_row_fini(&r[i]);
    }
    res->join_us_median = pct(t, joins, 0.5);
    res->join_us_p99 = pct(t, joins, 0.99);
    int64_t seq = 0;
    store_change_seq(st, &seq, NULL);
    struct store_change ch[64];
    size_t reps = joins / 4 ? joins / 4 : 1;
    for (size_t j = 0; j < reps; j++) {
        size_t n = 0;
        double t0 = now_s();
        if (store_changes_after(st, seq > 64 ? seq - 64 : 0, 64, ch, &n, &err) != IMS_OK) {
            fprintf(stderr, "bench_catalogue: feed: %s\n", err.message);
            goto out;
        }
        t[j] = (now_s() - t0) * 1e6;
    }
    res->feed_us_median = pct(t, reps, 0.5);
    rc = 0;
out:
    store_close(st);
    free(vecs);
    free(in);
    free(out);
    free(src);
    free(hash);
    free(thumb);
    free(t);
    return rc;
}

static void print_result(const char *name, const struct result *r, int last)
{
    printf("  \"%s\": {\"insert_us_per_image_median\": %.1f, \"insert_us_per_image_total\": "
           "%.1f, \"join10_us_median\": %.1f, \"join10_us_p99\": %.1f, "
           "\"feed64_us_median\": %.1f}%s\n",
           name, r->insert_us_median, r->insert_us_total, r->join_us_median, r->join_us_p99,
           r->feed_us_median, last ? "" : ",");
}

int main(int argc, char **argv)
{
    const char *url = NULL;
    size_t rows = 5000, batch = 8, joins = 2000;
    uint32_t dim = 512;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--pg") && i + 1 < argc)
            url = argv[++i];
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            rows = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--dim") && i + 1 < argc)
            dim = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--joins") && i + 1 < argc)
            joins = strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_catalogue --pg URL [--rows N] [--dim D] [--batch B] "
                            "[--joins J]\n");
            return 2;
        }
    }
    if (!url || rows < 1 || batch < 1 || dim < 1 || joins < 4) {
        fprintf(stderr, "bench_catalogue: --pg URL (an empty database) is required\n");
        return 2;
    }
    char tmpl[] = "/tmp/ims-bench-catalogue-XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (!dir)
        return 1;
    struct result sq = {0}, pg = {0};
    int rc = run(NULL, dir, rows, dim, batch, joins, &sq);
    if (rc == 0)
        rc = run(url, NULL, rows, dim, batch, joins, &pg);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    if (rc != 0)
        return 1;
    char cpu[256];
    cpu_model(cpu, sizeof(cpu));
    char shown[512];
    store_catalogue_display(url, shown, sizeof(shown));
    printf("{\n  \"bench\": \"catalogue\",\n  \"cpu\": \"%s\",\n  \"cores\": %ld,\n", cpu,
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("  \"rows\": %zu, \"dim\": %u, \"batch\": %zu, \"joins\": %zu,\n", rows, dim, batch,
           joins);
    print_result("sqlite", &sq, 0);
    print_result("postgresql", &pg, 0);
    printf("  \"ratio_pg_over_sqlite\": {\"insert\": %.2f, \"join10\": %.2f, \"feed64\": %.2f}\n}\n",
           pg.insert_us_median / sq.insert_us_median, pg.join_us_median / sq.join_us_median,
           pg.feed_us_median / sq.feed_us_median);
    return 0;
}
