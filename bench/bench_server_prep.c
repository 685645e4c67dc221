/* SPDX-License-Identifier: MIT */
/*
 * bench_server_prep: the two engine-side helpers of bench_server.py.
 *
 *     bench_server_prep populate DATA_DIR MODEL_DIR N [SEED]
 *         Creates (or extends to N rows) the catalogue of DATA_DIR for the
 *         model in MODEL_DIR (its name and dimension are recorded, so
 *         `imgsearch serve --model MODEL_DIR --data DATA_DIR` opens it) with
 *         N rows "bench://img/<i>" of random L2-normalised embeddings and no
 *         thumbnail, 1000 rows per transaction. Building a 100k catalogue
 *         this way takes seconds instead of hours of encoding; the search
 *         path (index scan, row fetch) does the same work on it as on a real
 *         one. The index is built by `serve` when it opens the folder.
 *
 *     bench_server_prep encode MODEL_DIR TEXTS_FILE N
 *         The bare engine cost of one text-search cache miss: tokenize +
 *         clip_ctx_encode_text of the first N lines of TEXTS_FILE, one at a
 *         time on one context (as search_embed_text does after a cache
 *         miss), after 3 warm-up encodes. Prints JSON with the median, p90
 *         and mean milliseconds and the mean token count.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgsearch/base.h"
#include "imgsearch/clip.h"
#include "imgsearch/store.h"
#include "bench_cpu.h"
#include "bench_stats.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
    /* xorshift64*: plenty for synthetic embeddings */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static float rng_unit(void)
{
    return (float)((double)(rng_next() >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static int load_model(const char *dir, struct clip_model **m)
{
    struct ims_error err = {0};
    struct clip_model_params mp;
    clip_model_params_default(&mp);
    enum ims_status st = clip_model_load(dir, &mp, m, &err);
    if (st != IMS_OK) {
        fprintf(stderr, "bench_server_prep: %s\n", ims_error_message(&err, st));
        return -1;
    }
    return 0;
}

static int populate(const char *data_dir, const char *model_dir, long n, uint64_t seed)
{
    struct clip_model *m = NULL;
    struct store *st = NULL;
    struct ims_error err = {0};
    enum ims_status s;
    int rc = 1;
    enum { BATCH = 1000 };
    struct store_new_image *rows = calloc(BATCH, sizeof(*rows));
    struct store_insert_result *res = calloc(BATCH, sizeof(*res));
    char(*src)[48] = calloc(BATCH, sizeof(*src));
    float *vec = NULL;
    if (!rows || !res || !src || load_model(model_dir, &m) != 0)
        goto out;
    uint32_t dim = (uint32_t)clip_model_embed_dim(m);
    struct store_model_info mi = {clip_model_name(m), dim};
    s = store_open(data_dir, &mi, STORE_OPEN_SYNC_NORMAL, &st, &err);
    if (s != IMS_OK)
        goto fail;
    int64_t have = 0;
    if ((s = store_count(st, &have, &err)) != IMS_OK)
        goto fail;
    if (!(vec = malloc((size_t)BATCH * dim * sizeof(float))))
        goto out;
    rng_state ^= seed * 0x2545f4914f6cdd1dull;
    double t0 = ims_now();
    for (long i = have; i < n;) {
        size_t k = (size_t)(n - i < BATCH ? n - i : BATCH);
        for (size_t r = 0; r < k; r++) {
            float *v = vec + r * dim;
            for (uint32_t d = 0; d < dim; d++)
                v[d] = rng_unit();
            clip_l2_normalize(v, (int)dim);
            snprintf(src[r], sizeof(src[r]), "bench://img/%ld", i + (long)r);
            memset(&rows[r], 0, sizeof(rows[r]));
            rows[r].source = src[r];
            rows[r].format = "jpeg";
            rows[r].width = 1280;
            rows[r].height = 960;
            rows[r].embedding = v;
            rows[r].dim = dim;
        }
        if ((s = store_insert_many(st, rows, k, res, &err)) != IMS_OK)
            goto fail;
        i += (long)k;
    }
    fprintf(stderr, "bench_server_prep: %ld rows (%lld were there) in %.1f s\n", n,
            (long long)have, ims_now() - t0);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench_server_prep: %s\n", ims_error_message(&err, s));
out:
    store_close(st);
    clip_model_free(m);
    free(vec);
    free(rows);
    free(res);
    free(src);
    return rc;
}

static int encode(const char *model_dir, const char *texts, long n)
{
    struct clip_model *m = NULL;
    struct clip_ctx *c = NULL;
    struct ims_error err = {0};
    enum ims_status s = IMS_OK;
    int rc = 1;
    double *ms = calloc((size_t)n, sizeof(*ms));
    FILE *f = fopen(texts, "r");
    if (!ms || !f || load_model(model_dir, &m) != 0)
        goto out;
    if ((s = clip_ctx_new(m, 1, &c, &err)) != IMS_OK)
        goto fail;
    int dim = clip_model_embed_dim(m);
    float *out = malloc((size_t)dim * sizeof(float));
    if (!out)
        goto out;
    int32_t ids[CLIP_CONTEXT_MAX];
    int n_ids = 0;
    for (int w = 0; w < 3; w++) {
        if ((s = clip_tokenize(clip_model_tokenizer(m), "a photo of a cat", 16, ids, &n_ids,
                               &err)) != IMS_OK ||
            (s = clip_ctx_encode_text(c, ids, n_ids, out, 1, &err)) != IMS_OK) {
            free(out);
            goto fail;
        }
    }
    char line[4096];
    long done = 0;
    double tokens = 0, sum = 0;
    while (done < n && fgets(line, sizeof(line), f)) {
        size_t len = strcspn(line, "\r\n");
        line[len] = '\0';
        double t0 = ims_now();
        s = clip_tokenize(clip_model_tokenizer(m), line, len, ids, &n_ids, &err);
        if (s == IMS_OK)
            s = clip_ctx_encode_text(c, ids, n_ids, out, 1, &err);
        if (s != IMS_OK) {
            free(out);
            goto fail;
        }
        ms[done] = (ims_now() - t0) * 1e3;
        sum += ms[done];
        tokens += n_ids;
        done++;
    }
    free(out);
    if (done == 0)
        goto out;
    qsort(ms, (size_t)done, sizeof(*ms), bench_cmp_double);
    printf("{");
    bench_cpu_print_json(stdout);
    printf("\"texts\": %ld, \"tokens_avg\": %.1f, \"encode_p50_ms\": %.3f, "
           "\"encode_p90_ms\": %.3f, \"encode_mean_ms\": %.3f, \"model\": \"%s\"}\n",
           done, tokens / (double)done, ms[done / 2], ms[(size_t)((double)done * 0.9)],
           sum / (double)done, clip_model_name(m));
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench_server_prep: %s\n", ims_error_message(&err, s));
out:
    if (f)
        fclose(f);
    clip_ctx_free(c);
    clip_model_free(m);
    free(ms);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && !strcmp(argv[1], "populate"))
        return populate(argv[2], argv[3], atol(argv[4]),
                        argc > 5 ? strtoull(argv[5], NULL, 10) : 1);
    if (argc == 5 && !strcmp(argv[1], "encode") && atol(argv[4]) > 0)
        return encode(argv[2], argv[3], atol(argv[4]));
    fprintf(stderr, "usage: bench_server_prep populate DATA_DIR MODEL_DIR N [SEED]\n"
                    "       bench_server_prep encode MODEL_DIR TEXTS_FILE N\n");
    return 2;
}
