/* SPDX-License-Identifier: MIT */
/*
 * bench_image.c: cost of getting one photo ready for the encoder, against
 * plain libjpeg-turbo measured in the same run.
 *
 *     bench_image [FILE.jpg] [--runs N]
 *
 * Default input: tests/golden/clip/images/large_1600x1200.jpg. Prints one
 * JSON object with medians over N runs (default 21), in milliseconds:
 *   - yardstick_libjpeg_decode: jpeg_read_scanlines of the whole file into
 *     one buffer with libjpeg's defaults (the same exact settings we use);
 *   - yardstick_libjpeg_decode_scaled_1_4: the same with scale_denom 4, for
 *     reference only (it changes the bytes, so the CLIP path cannot use it);
 *   - decode (image_decode), preprocess (image_clip_preprocess 224),
 *     decode_preprocess (both, the ingestion path), normalize, thumbnail_256;
 *   - min_ms: the fastest run of each (the arrays are sorted by bench_median());
 *     on a loaded machine the minimum is the steadier figure;
 *   - ratios (of medians): decode / yardstick, decode_preprocess / yardstick,
 *     preprocess / decode.
 * Timings are medians; nothing here is a test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "imgsearch/image.h"
#include "bench_cpu.h"
#include "bench_stats.h"

/* Plain libjpeg decode of the whole image (default error manager: the input
 * is a known-good file). Returns a checksum so the work is not optimised out. */
static unsigned plain_decode(const uint8_t *p, size_t n, int denom)
{
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    cinfo.err = jpeg_std_error(&jerr);
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, p, (unsigned long)n);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned)denom;
    jpeg_start_decompress(&cinfo);
    size_t stride = (size_t)cinfo.output_width * cinfo.output_components;
    uint8_t *buf = malloc(stride * cinfo.output_height);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = buf + stride * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    unsigned sum = 0;
    for (size_t i = 0; i < stride * cinfo.output_height; i += 97)
        sum += buf[i];
    free(buf);
    return sum;
}

int main(int argc, char **argv)
{
    char def[4096];
    snprintf(def, sizeof(def), "%s/tests/golden/clip/images/large_1600x1200.jpg", bench_src_dir());
    const char *file = def;
    int runs = 21;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else
            file = argv[i];
    }
    if (runs < 1)
        runs = 1;
    char *data = NULL;
    size_t n = 0;
    struct ims_error err = {0};
    enum ims_status st = ims_file_read(file, (size_t)1 << 30, &data, &n, &err);
    if (st != IMS_OK) {
        fprintf(stderr, "bench_image: %s\n", ims_error_message(&err, st));
        return 1;
    }
    double *t_y = calloc((size_t)runs, sizeof(double)), *t_ys = calloc((size_t)runs, sizeof(double));
    double *t_d = calloc((size_t)runs, sizeof(double)), *t_p = calloc((size_t)runs, sizeof(double));
    double *t_dp = calloc((size_t)runs, sizeof(double)), *t_n = calloc((size_t)runs, sizeof(double));
    double *t_t = calloc((size_t)runs, sizeof(double));
    static uint8_t rgb[224 * 224 * 3];
    static float chw[3 * 224 * 224];
    unsigned sink = 0;
    int w = 0, h = 0;
    const char *mode = "";
    for (int r = 0; r < runs; r++) {
        double t0 = ims_now();
        sink += plain_decode((const uint8_t *)data, n, 1);
        double t1 = ims_now();
        sink += plain_decode((const uint8_t *)data, n, 4);
        double t2 = ims_now();
        struct image *img = NULL;
        if ((st = image_decode(data, n, NULL, &img, &err)) != IMS_OK) {
            fprintf(stderr, "bench_image: %s\n", ims_error_message(&err, st));
            return 1;
        }
        double t3 = ims_now();
        if ((st = image_clip_preprocess(img, 224, rgb, &err)) != IMS_OK) {
            fprintf(stderr, "bench_image: %s\n", ims_error_message(&err, st));
            return 1;
        }
        double t4 = ims_now();
        image_clip_normalize(rgb, 224, chw);
        double t5 = ims_now();
        uint8_t *jpg = NULL;
        size_t jn = 0;
        if ((st = image_thumbnail_jpeg(img, 256, 85, &jpg, &jn, NULL, NULL, &err)) != IMS_OK) {
            fprintf(stderr, "bench_image: %s\n", ims_error_message(&err, st));
            return 1;
        }
        double t6 = ims_now();
        sink += rgb[r % sizeof(rgb)] + (unsigned)jn + (unsigned)(chw[r] > 0);
        w = img->width;
        h = img->height;
        mode = image_mode_name(img->mode);
        ims_free(jpg);
        image_free(img);
        t_y[r] = (t1 - t0) * 1e3;
        t_ys[r] = (t2 - t1) * 1e3;
        t_d[r] = (t3 - t2) * 1e3;
        t_p[r] = (t4 - t3) * 1e3;
        t_dp[r] = (t4 - t2) * 1e3;
        t_n[r] = (t5 - t4) * 1e3;
        t_t[r] = (t6 - t5) * 1e3;
    }
    double y = bench_median(t_y, runs), ys = bench_median(t_ys, runs), d = bench_median(t_d, runs);
    double p = bench_median(t_p, runs), dp = bench_median(t_dp, runs), nn = bench_median(t_n, runs);
    double t = bench_median(t_t, runs);
    printf("{");
    bench_cpu_print_json(stdout);
    {
        const char *yn[] = {"libjpeg_decode_ms", "libjpeg_decode_scaled_1_4_ms"};
        double yv[] = {y, ys};
        bench_cpu_print_yardsticks(stdout, 2, yn, yv);
    }
    printf(", \"bench\": \"image\", \"file\": \"%s\", \"width\": %d, \"height\": %d, "
           "\"mode\": \"%s\", \"runs\": %d,\n"
           " \"median_ms\": {\"yardstick_libjpeg_decode\": %.3f, "
           "\"yardstick_libjpeg_decode_scaled_1_4\": %.3f, \"decode\": %.3f, "
           "\"preprocess\": %.3f, \"decode_preprocess\": %.3f, \"normalize\": %.3f, "
           "\"thumbnail_256\": %.3f},\n"
           " \"min_ms\": {\"yardstick_libjpeg_decode\": %.3f, \"decode\": %.3f, "
           "\"preprocess\": %.3f, \"decode_preprocess\": %.3f, \"thumbnail_256\": %.3f},\n"
           " \"ratios\": {\"decode_over_yardstick\": %.3f, "
           "\"decode_preprocess_over_yardstick\": %.3f, \"preprocess_over_decode\": %.3f},\n"
           " \"sink\": %u}\n",
           strrchr(file, '/') ? strrchr(file, '/') + 1 : file, w, h, mode, runs, y, ys, d, p,
           dp, nn, t, t_y[0], t_d[0], t_p[0], t_dp[0], t_t[0], d / y, dp / y, p / d, sink);
    free(t_y);
    free(t_ys);
    free(t_d);
    free(t_p);
    free(t_dp);
    free(t_n);
    free(t_t);
    ims_free(data);
    return 0;
}
