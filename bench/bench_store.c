/* SPDX-License-Identifier: MIT */
/*
 * bench_store.c: speed of the catalogue (src/store) against the disk's own
 * yardstick measured in the same run.
 *
 *     bench_store [--rows N] [--dim D] [--batch B]      (200000, 512, 1000)
 *
 * Works in a mkdtemp folder under /tmp, removed at the end. Prints one JSON
 * object:
 *   - yardstick_write: the same embedding bytes appended to a raw file with
 *     one fsync per batch (what any durable store must at least pay);
 *   - insert: store_insert_many of the rows (no thumbnails), batch by batch,
 *     synchronous=FULL (the default); insert_sync_normal: the first rows
 *     again into another folder with STORE_OPEN_SYNC_NORMAL, for the
 *     durability trade-off in docs/internals/store.md;
 *   - scan: store_scan_embeddings over every row, against reading the raw
 *     file back (page cache) with read(2);
 *   - get_many: joining 10 random ids, as a search result page does;
 *   - ratios of each to its yardstick, and catalogue bytes per row.
 * Rates are medians over batches or repeats, plus totals. Nothing here is a
 * test.
 */
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgsearch/store.h"
#include "bench_cpu.h"
#include "bench_stats.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_u64(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

static void fill(float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(next_u64() >> 40) / (float)(1u << 24) - 0.5f;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void die(const char *what, const struct ims_error *err, enum ims_status st)
{
    fprintf(stderr, "bench_store: %s: %s\n", what, ims_error_message(err, st));
    exit(1);
}

struct scan_sum {
    double sum;
    size_t n;
};

static int scan_cb(void *user, const int64_t *ids, const float *v, size_t n, uint32_t dim)
{
    struct scan_sum *s = user;
    (void)ids;
    s->sum += v[0] + v[(n * dim) - 1]; /* touch the data so nothing is elided */
    s->n += n;
    return 0;
}

/* Inserts rows [0, n) into `st`; per-batch seconds go to t[] (n / batch
 * entries). */
static void insert_rows(struct store *st, size_t n, size_t batch, uint32_t dim, double *t)
{
    struct store_new_image *rows = calloc(batch, sizeof(*rows));
    struct store_insert_result *res = calloc(batch, sizeof(*res));
    char(*src)[48] = calloc(batch, 48);
    float *vec = malloc(batch * dim * sizeof(float));
    if (!rows || !res || !src || !vec) {
        fprintf(stderr, "bench_store: out of memory\n");
        exit(1);
    }
    struct ims_error err = {0};
    for (size_t b = 0; b * batch < n; b++) {
        size_t m = n - b * batch < batch ? n - b * batch : batch;
        fill(vec, m * dim);
        for (size_t i = 0; i < m; i++) {
            snprintf(src[i], sizeof(src[i]), "https://example.org/%zu.jpg", b * batch + i);
            rows[i] = (struct store_new_image){.source = src[i], .format = "jpeg", .width = 640,
                                               .height = 480, .bytes = 50000,
                                               .embedding = vec + i * dim, .dim = dim};
        }
        double t0 = ims_now();
        enum ims_status s = store_insert_many(st, rows, m, res, &err);
        t[b] = ims_now() - t0;
        if (s != IMS_OK)
            die("insert", &err, s);
    }
    free(rows);
    free(res);
    free(src);
    free(vec);
}

int main(int argc, char **argv)
{
    size_t n_rows = 200000, batch = 1000;
    uint32_t dim = 512;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--rows") == 0)
            n_rows = (size_t)strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--dim") == 0)
            dim = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = (size_t)strtoull(argv[i + 1], NULL, 10);
    }
    if (n_rows == 0 || batch == 0 || dim == 0 || dim > STORE_DIM_MAX) {
        fprintf(stderr, "usage: bench_store [--rows N] [--dim D] [--batch B]\n");
        return 2;
    }
    size_t n_batches = (n_rows + batch - 1) / batch;
    size_t vec_bytes = (size_t)dim * sizeof(float);
    double *t = calloc(n_batches, sizeof(double));

    char tmpl[] = "/tmp/ims-bench-store-XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (!dir || !t) {
        perror("bench_store: mkdtemp");
        return 1;
    }
    char path[512], dir_full[512], dir_normal[512];
    snprintf(dir_full, sizeof(dir_full), "%s/full", dir);
    snprintf(dir_normal, sizeof(dir_normal), "%s/normal", dir);

    /* ---- yardstick: raw append + fsync per batch ---- */
    snprintf(path, sizeof(path), "%s/raw.bin", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    float *vec = malloc(batch * vec_bytes);
    if (fd < 0 || !vec) {
        perror("bench_store: raw file");
        return 1;
    }
    double raw_total = 0;
    for (size_t b = 0; b < n_batches; b++) {
        size_t m = n_rows - b * batch < batch ? n_rows - b * batch : batch;
        fill(vec, m * dim);
        double t0 = ims_now();
        if (write(fd, vec, m * vec_bytes) != (ssize_t)(m * vec_bytes) || fsync(fd) != 0) {
            perror("bench_store: raw write");
            return 1;
        }
        t[b] = ims_now() - t0;
        raw_total += t[b];
    }
    close(fd);
    double raw_batch_med = bench_median(t, n_batches);

    /* ---- inserts, synchronous=FULL ---- */
    struct store_model_info model = {"bench-model", dim};
    struct store *st = NULL;
    struct ims_error err = {0};
    enum ims_status s = store_open(dir_full, &model, 0, &st, &err);
    if (s != IMS_OK)
        die("open", &err, s);
    insert_rows(st, n_rows, batch, dim, t);
    double ins_total = 0;
    for (size_t b = 0; b < n_batches; b++)
        ins_total += t[b];
    double ins_batch_med = bench_median(t, n_batches);

    /* ---- inserts, synchronous=NORMAL, on an eighth of the rows ---- */
    size_t n_normal = n_rows / 8 ? n_rows / 8 : n_rows;
    size_t nb_normal = (n_normal + batch - 1) / batch;
    struct store *stn = NULL;
    s = store_open(dir_normal, &model, STORE_OPEN_SYNC_NORMAL, &stn, &err);
    if (s != IMS_OK)
        die("open normal", &err, s);
    insert_rows(stn, n_normal, batch, dim, t);
    double normal_batch_med = bench_median(t, nb_normal);
    store_close(stn);

    /* ---- scan, against reading the raw file back ---- */
    enum { REPEATS = 3 };
    double scan_t[REPEATS], read_t[REPEATS];
    struct scan_sum sum = {0};
    for (int r = 0; r < REPEATS; r++) {
        sum.n = 0;
        double t0 = ims_now();
        s = store_scan_embeddings(st, 0, 4096, scan_cb, &sum, &err);
        scan_t[r] = ims_now() - t0;
        if (s != IMS_OK || sum.n != n_rows)
            die("scan", &err, s);
    }
    size_t chunk = 4096 * vec_bytes;
    char *buf = malloc(chunk);
    for (int r = 0; r < REPEATS; r++) {
        double t0 = ims_now();
        fd = open(path, O_RDONLY);
        ssize_t got;
        size_t total = 0;
        while ((got = read(fd, buf, chunk)) > 0) {
            total += (size_t)got;
            sum.sum += buf[0];
        }
        close(fd);
        read_t[r] = ims_now() - t0;
        if (total != n_rows * vec_bytes) {
            fprintf(stderr, "bench_store: short raw read\n");
            return 1;
        }
    }
    double scan_med = bench_median(scan_t, REPEATS), read_med = bench_median(read_t, REPEATS);

    /* ---- get_many of 10 random ids ---- */
    enum { LOOKUPS = 1000 };
    double *lt = calloc(LOOKUPS, sizeof(double));
    int64_t ids[10];
    struct store_image_row rows[10];
    uint8_t found[10];
    for (int q = 0; q < LOOKUPS; q++) {
        for (int i = 0; i < 10; i++)
            ids[i] = 1 + (int64_t)(next_u64() % n_rows);
        double t0 = ims_now();
        s = store_get_many(st, ids, 10, 0, rows, found, &err);
        lt[q] = ims_now() - t0;
        if (s != IMS_OK)
            die("get_many", &err, s);
        for (int i = 0; i < 10; i++)
            store_row_fini(&rows[i]);
    }
    double get_med = bench_median(lt, LOOKUPS);
    store_close(st);

    snprintf(path, sizeof(path), "%s/catalogue.db", dir_full);
    struct stat sb;
    double db_bytes = stat(path, &sb) == 0 ? (double)sb.st_size : 0;
    snprintf(path, sizeof(path), "%s/catalogue.db-wal", dir_full);
    if (stat(path, &sb) == 0)
        db_bytes += (double)sb.st_size;

    double mb = (double)(n_rows * vec_bytes) / 1e6;
    double raw_rows_s = (double)batch / raw_batch_med, ins_rows_s = (double)batch / ins_batch_med;
    printf("{\n");
    printf("  ");
    bench_cpu_print_json(stdout);
    {
        const char *yn[] = {"raw_write_rows_per_s", "raw_read_mb_per_s"};
        double yv[] = {raw_rows_s, mb / read_med};
        bench_cpu_print_yardsticks(stdout, 2, yn, yv);
    }
    printf(",\n  \"bench\": \"store\",\n");
    printf("  \"rows\": %zu, \"dim\": %u, \"batch\": %zu, \"embedding_mb\": %.1f,\n", n_rows, dim,
           batch, mb);
    printf("  \"yardstick_write\": {\"what\": \"raw append + fsync per batch\", "
           "\"rows_per_s_median\": %.0f, \"rows_per_s_total\": %.0f, \"mb_per_s_total\": %.1f},\n",
           raw_rows_s, (double)n_rows / raw_total, mb / raw_total);
    printf("  \"insert\": {\"sync\": \"full\", \"rows_per_s_median\": %.0f, "
           "\"rows_per_s_total\": %.0f, \"seconds_total\": %.2f},\n",
           ins_rows_s, (double)n_rows / ins_total, ins_total);
    printf("  \"insert_sync_normal\": {\"rows\": %zu, \"rows_per_s_median\": %.0f},\n", n_normal,
           (double)batch / normal_batch_med);
    printf("  \"scan\": {\"mb_per_s_median\": %.1f, \"rows_per_s_median\": %.0f, "
           "\"seconds_median\": %.3f},\n",
           mb / scan_med, (double)n_rows / scan_med, scan_med);
    printf("  \"yardstick_read\": {\"what\": \"read(2) of the raw file, page cache\", "
           "\"mb_per_s_median\": %.1f},\n",
           mb / read_med);
    printf("  \"get_many_10\": {\"us_median\": %.1f},\n", get_med * 1e6);
    printf("  \"catalogue_bytes_per_row\": %.0f,\n", db_bytes / (double)n_rows);
    printf("  \"ratios\": {\"insert_over_raw_write\": %.3f, \"insert_full_over_normal\": %.3f, "
           "\"scan_over_raw_read\": %.3f},\n",
           ins_rows_s / raw_rows_s, normal_batch_med / ins_batch_med, read_med / scan_med);
    printf("  \"checksum\": %.3f\n}\n", sum.sum);

    free(buf);
    free(lt);
    free(vec);
    free(t);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
