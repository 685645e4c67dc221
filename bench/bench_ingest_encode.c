/* SPDX-License-Identifier: MIT */
/*
 * bench_ingest_encode.c: the pure image-encoder throughput that
 * bench_ingest.py compares `imgsearch add` against, measured in the same run
 * with the same model, precision and batch size.
 *
 *     bench_ingest_encode MODEL_DIR [--batch N] [--images M] [--precision f32|bf16]
 *
 * Loads the model, encodes one warm-up batch, then M images (rounded up to
 * whole batches) of random preprocessed pixels through
 * clip_ctx_encode_images, normalised as the ingest pipeline asks. Prints
 * {"batch", "images", "seconds", "images_per_s", "model"} as one JSON line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgsearch/base.h"
#include "imgsearch/clip.h"
#include "bench_cpu.h"

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int batch = 16, images = 128;
    enum clip_precision prec = CLIP_PRECISION_F32;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--images") && i + 1 < argc)
            images = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc)
            prec = !strcmp(argv[++i], "bf16") ? CLIP_PRECISION_BF16 : CLIP_PRECISION_F32;
        else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else {
            fprintf(stderr, "usage: bench_ingest_encode MODEL_DIR [--batch N] [--images M] "
                            "[--precision f32|bf16]\n");
            return 2;
        }
    }
    if (!dir || batch < 1 || batch > 256 || images < 1) {
        fprintf(stderr, "bench_ingest_encode: need MODEL_DIR, 1 <= batch <= 256, images >= 1\n");
        return 2;
    }
    struct ims_error err = {0};
    struct clip_model_params mp;
    clip_model_params_default(&mp);
    mp.precision = prec;
    struct clip_model *model = NULL;
    struct clip_ctx *ctx = NULL;
    enum ims_status st = clip_model_load(dir, &mp, &model, &err);
    if (st == IMS_OK)
        st = clip_ctx_new(model, batch, &ctx, &err);
    if (st != IMS_OK) {
        fprintf(stderr, "bench_ingest_encode: %s\n", ims_error_message(&err, st));
        clip_model_free(model);
        return 1;
    }
    int s = clip_model_image_size(model), d = clip_model_embed_dim(model);
    size_t per = (size_t)3 * s * s;
    float *pixels = malloc((size_t)batch * per * sizeof(float));
    float *out = malloc((size_t)batch * d * sizeof(float));
    if (!pixels || !out) {
        fprintf(stderr, "bench_ingest_encode: out of memory\n");
        return 1;
    }
    uint64_t x = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; i < (size_t)batch * per; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pixels[i] = (float)(x >> 40) / (float)(1u << 24) * 3.6f - 1.8f; /* the normalised range */
    }
    st = clip_ctx_encode_images(ctx, pixels, batch, out, 1, &err); /* warm-up */
    int n_batches = (images + batch - 1) / batch;
    double t0 = ims_now();
    for (int b = 0; b < n_batches && st == IMS_OK; b++)
        st = clip_ctx_encode_images(ctx, pixels, batch, out, 1, &err);
    double dt = ims_now() - t0;
    if (st != IMS_OK) {
        fprintf(stderr, "bench_ingest_encode: %s\n", ims_error_message(&err, st));
        return 1;
    }
    printf("{");
    bench_cpu_print_json(stdout);
    printf("\"batch\": %d, \"images\": %d, \"seconds\": %.3f, \"images_per_s\": %.2f, "
           "\"model\": \"%s\"}\n",
           batch, n_batches * batch, dt, n_batches * batch / dt, clip_model_name(model));
    free(pixels);
    free(out);
    clip_ctx_free(ctx);
    clip_model_free(model);
    return 0;
}
