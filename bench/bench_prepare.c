/* SPDX-License-Identifier: MIT */
/*
 * bench_prepare.c: what ingestion's bounded decode (image_prepare_for_ingest,
 * IMAGE_DECODE_BOUNDED) changes against the exact path, on generated large
 * photos (issue 11 item 1).
 *
 *     bench_prepare [--model DIR] [--runs N] [--sizes 12,24,48] [--count N]
 *
 * For each size (megapixels, 4:3) it generates --count photo-like JPEGs in
 * memory (gradients, soft blobs, hard-edged shapes, fine texture, sensor
 * noise; quality 90, 4:2:0; every other one progressive), then per image:
 *   - exact: image_decode + image_clip_preprocess(224) + thumbnail 256, the
 *     pre-issue-11 ingestion path (the yardstick);
 *   - bounded: image_prepare_for_ingest with the same outputs;
 *   - PSNR of the 224x224 CLIP input, bounded against exact (worst image);
 *   - with --model: the worst cosine between the two inputs' embeddings.
 * Prints JSON with medians; the ratio exact/bounded is the speed-up. The
 * decode memory per worker is the decoded image (width x height x 3 bytes)
 * plus libjpeg's few MCU rows; both are reported.
 *
 *     bench_prepare --png [--runs N] [--count N] [--sizes 12,24,48]
 *
 * PNGs instead (RGB 8-bit, zlib level 3, same generated content): the whole
 * decode (image_decode + image_clip_preprocess + thumbnail, the path before
 * the row streaming) against image_prepare_for_ingest, which streams rows
 * into both resamplers. Both must give the same 224x224 bytes (checked);
 * the peak memory of each is measured as the growth of the peak RSS
 * (getrusage ru_maxrss) in a forked child that runs it once.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jpeglib.h>
#include <png.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_cpu.h"
#include "imgsearch/base.h"
#include "imgsearch/clip.h"
#include "imgsearch/image.h"
#include "bench_stats.h"

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 32);
}
static double rndf(void) { return rnd() / 4294967296.0; }

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* CPU time of this thread: the per-stage figures below are meant to hold
 * on a machine shared with other jobs. */
static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), bench_cmp_double);
    return v[n / 2];
}

/* A photo-like RGB image: what a downscale has to get right (smooth areas,
 * hard edges, texture near the detail a 224 input still shows) and noise. */
static void gen_rgb(uint8_t *rgb, int w, int h)
{
    double ca[3], cb[3], bx[4], by[4], br[4], bc[4][3], rx[6][4], rc[6][3];
    for (int c = 0; c < 3; c++) {
        ca[c] = 40 + 180 * rndf();
        cb[c] = 40 + 180 * rndf();
    }
    for (int k = 0; k < 4; k++) {
        bx[k] = w * rndf();
        by[k] = h * rndf();
        br[k] = (0.08 + 0.25 * rndf()) * (w < h ? w : h);
        for (int c = 0; c < 3; c++)
            bc[k][c] = 160 * rndf() - 80;
    }
    for (int k = 0; k < 6; k++) {
        rx[k][0] = w * rndf();
        rx[k][1] = h * rndf();
        rx[k][2] = rx[k][0] + w * (0.05 + 0.3 * rndf());
        rx[k][3] = rx[k][1] + h * (0.05 + 0.3 * rndf());
        for (int c = 0; c < 3; c++)
            rc[k][c] = 120 * rndf() - 60;
    }
    double angle = 6.2831853 * rndf(), dx = cos(angle), dy = sin(angle);
    double period = 6 + 20 * rndf(); /* texture: a few px per cycle */
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            double t = ((x - w / 2.0) * dx + (y - h / 2.0) * dy) / (w + h) + 0.5;
            uint8_t *p = rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
            uint32_t n = rnd();
            double tex = 18 * sin(6.2831853 * (x * dy - y * dx) / period) *
                         (x < w / 2 ? 1.0 : 0.3);
            for (int c = 0; c < 3; c++) {
                double v = ca[c] + (cb[c] - ca[c]) * t + tex;
                for (int k = 0; k < 4; k++) {
                    double ex = (x - bx[k]) / br[k], ey = (y - by[k]) / br[k];
                    double d2 = ex * ex + ey * ey;
                    if (d2 < 9)
                        v += bc[k][c] * exp(-d2);
                }
                for (int k = 0; k < 6; k++)
                    if (x >= rx[k][0] && x < rx[k][2] && y >= rx[k][1] && y < rx[k][3])
                        v += rc[k][c];
                v += (double)((n >> (c * 8)) & 15) - 7.5;
                p[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
}

static unsigned char *encode_jpeg(const uint8_t *rgb, int w, int h, int progressive,
                                  unsigned long *n)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    unsigned char *buf = NULL;
    *n = 0;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &buf, n);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 90, TRUE);
    if (progressive)
        jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)c.next_scanline * (size_t)w * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return buf;
}

static double psnr(const uint8_t *a, const uint8_t *b, size_t n)
{
    double se = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        se += d * d;
    }
    return se == 0 ? 99.0 : 10 * log10(255.0 * 255.0 / (se / (double)n));
}

static void die(const char *what, struct ims_error *err, enum ims_status st)
{
    fprintf(stderr, "bench_prepare: %s: %s\n", what, ims_error_message(err, st));
    exit(1);
}

struct pngbuf {
    uint8_t *p;
    size_t n, cap;
};

static void png_wr(png_structp png, png_bytep d, size_t len)
{
    struct pngbuf *b = png_get_io_ptr(png);
    if (b->n + len > b->cap) {
        b->cap = (b->n + len) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            exit(1);
    }
    memcpy(b->p + b->n, d, len);
    b->n += len;
}

static void png_fl(png_structp png)
{
    (void)png;
}

static uint8_t *encode_png(const uint8_t *rgb, int w, int h, size_t *n)
{
    struct pngbuf b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop pi = png_create_info_struct(png);
    if (!png || !pi || setjmp(png_jmpbuf(png)))
        exit(1);
    png_set_write_fn(png, &b, png_wr, png_fl);
    png_set_IHDR(png, pi, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 3);
    png_write_info(png, pi);
    for (int y = 0; y < h; y++)
        png_write_row(png, (png_const_bytep)(rgb + (size_t)y * w * 3));
    png_write_end(png, pi);
    png_destroy_write_struct(&png, &pi);
    *n = b.n;
    return b.p;
}

/* One path on one PNG: 0 = whole decode, 1 = image_prepare_for_ingest. */
static void png_path(int which, const uint8_t *p, size_t n, const struct image_limits *lim,
                     uint8_t *rgb224)
{
    struct ims_error err = {0};
    enum ims_status st;
    if (which == 0) {
        struct image *img = NULL;
        uint8_t *thumb = NULL;
        size_t tn = 0;
        if ((st = image_decode(p, n, lim, &img, &err)) != IMS_OK)
            die("decode png", &err, st);
        if ((st = image_clip_preprocess(img, 224, rgb224, &err)) != IMS_OK)
            die("preprocess png", &err, st);
        if ((st = image_thumbnail_jpeg(img, 256, 80, &thumb, &tn, NULL, NULL, &err)) != IMS_OK)
            die("thumb png", &err, st);
        image_free(img);
        ims_free(thumb);
    } else {
        struct image_prepare_options po = {lim, 224, 256, 80, IMAGE_DECODE_BOUNDED, 0, 0};
        struct image_prepared prep;
        if ((st = image_prepare_for_ingest(p, n, &po, rgb224, &prep, &err)) != IMS_OK)
            die("prepare png", &err, st);
        ims_free(prep.thumb);
    }
}

/* Growth of the peak RSS (kB) while a forked child runs one path once. */
static long png_peak_kb(int which, const uint8_t *p, size_t n, const struct image_limits *lim)
{
    int fd[2];
    if (pipe(fd))
        exit(1);
    pid_t pid = fork();
    if (pid == 0) {
        static uint8_t rgb[224 * 224 * 3];
        struct rusage a, b;
        getrusage(RUSAGE_SELF, &a);
        png_path(which, p, n, lim, rgb);
        getrusage(RUSAGE_SELF, &b);
        long d = b.ru_maxrss - a.ru_maxrss;
        if (write(fd[1], &d, sizeof(d)) != (ssize_t)sizeof(d))
            _exit(1);
        _exit(0);
    }
    long d = -1;
    close(fd[1]);
    if (read(fd[0], &d, sizeof(d)) != (ssize_t)sizeof(d))
        d = -1;
    close(fd[0]);
    waitpid(pid, NULL, 0);
    return d;
}

static int bench_png(char *sizes_arg, int runs, int count)
{
    struct image_limits lim;
    image_limits_default(&lim);
    lim.max_pixels = 60ull * 1000 * 1000;
    printf("{");
    bench_cpu_print_json(stdout);
    printf("\"bench\": \"prepare_png\", \"clip_size\": 224, \"thumb_side\": 256, \"runs\": %d, "
           "\"count\": %d,\n \"sizes\": [",
           runs, count);
    int first = 1;
    for (char *tok = strtok(sizes_arg, ","); tok; tok = strtok(NULL, ",")) {
        int mp = atoi(tok);
        if (mp < 1 || mp > 60)
            continue;
        int h = (int)lround(sqrt(mp * 1e6 * 3 / 4.0)), w = h * 4 / 3;
        double *tw = calloc((size_t)(runs * count), sizeof(double));
        double *ts = calloc((size_t)(runs * count), sizeof(double));
        double *cw = calloc((size_t)(runs * count), sizeof(double));
        double *cs = calloc((size_t)(runs * count), sizeof(double));
        if (!tw || !ts || !cw || !cs)
            return 1;
        size_t png_bytes = 0;
        long peak_w = 0, peak_s = 0;
        for (int k = 0; k < count; k++) {
            uint8_t *rgb = malloc((size_t)w * (size_t)h * 3);
            if (!rgb)
                return 1;
            gen_rgb(rgb, w, h);
            size_t n = 0;
            uint8_t *png = encode_png(rgb, w, h, &n);
            free(rgb);
            png_bytes += n;
            static uint8_t a[224 * 224 * 3], b[224 * 224 * 3];
            for (int r = 0; r < runs; r++) {
                double t0 = now(), c0 = cpu_now();
                png_path(0, png, n, &lim, a);
                double t1 = now(), c1 = cpu_now();
                png_path(1, png, n, &lim, b);
                double t2 = now(), c2 = cpu_now();
                tw[k * runs + r] = (t1 - t0) * 1e3;
                ts[k * runs + r] = (t2 - t1) * 1e3;
                cw[k * runs + r] = (c1 - c0) * 1e3;
                cs[k * runs + r] = (c2 - c1) * 1e3;
                if (memcmp(a, b, sizeof(a))) {
                    fprintf(stderr, "bench_prepare: streamed PNG differs from the whole decode\n");
                    return 1;
                }
            }
            long pw = png_peak_kb(0, png, n, &lim), ps = png_peak_kb(1, png, n, &lim);
            peak_w = pw > peak_w ? pw : peak_w;
            peak_s = ps > peak_s ? ps : peak_s;
            free(png);
        }
        int nm = runs * count;
        double mw = median(tw, nm), ms = median(ts, nm);
        printf("%s\n  {\"megapixels\": %d, \"width\": %d, \"height\": %d, \"png_kb_avg\": %.0f, "
               "\"whole_ms_median\": %.2f, \"streamed_ms_median\": %.2f, "
               "\"ratio_whole_over_streamed\": %.2f, \"whole_cpu_ms_median\": %.2f, "
               "\"streamed_cpu_ms_median\": %.2f, \"decoded_image_mb\": %.2f, "
               "\"peak_rss_growth_mb_whole\": %.2f, \"peak_rss_growth_mb_streamed\": %.2f, "
               "\"bytes_identical\": true}",
               first ? "" : ",", mp, w, h, (double)png_bytes / count / 1024, mw, ms, mw / ms,
               median(cw, nm), median(cs, nm), (double)w * h * 3 / 1e6, peak_w / 1024.0,
               peak_s / 1024.0);
        first = 0;
        free(tw);
        free(ts);
        free(cw);
        free(cs);
    }
    printf("\n ]}\n");
    return 0;
}

int main(int argc, char **argv)
{
    const char *model_dir = NULL;
    int runs = 3, count = 4, png = 0;
    char sizes_arg[64] = "12,24,48";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--png"))
            png = 1;
        else if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model_dir = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--count") && i + 1 < argc)
            count = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sizes") && i + 1 < argc)
            snprintf(sizes_arg, sizeof(sizes_arg), "%s", argv[++i]);
        else {
            fprintf(stderr, "usage: bench_prepare [--png] [--model DIR] [--runs N] [--count N] "
                            "[--sizes 12,24,48]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 99 || count < 1 || count > 64) {
        fprintf(stderr, "bench_prepare: --runs 1..99, --count 1..64\n");
        return 2;
    }
    if (png)
        return bench_png(sizes_arg, runs, count);
    struct ims_error err = {0};
    enum ims_status st;
    struct clip_model *model = NULL;
    struct clip_ctx *ctx = NULL;
    if (model_dir) {
        struct clip_model_params mp;
        clip_model_params_default(&mp);
        if ((st = clip_model_load(model_dir, &mp, &model, &err)) != IMS_OK)
            die("model", &err, st);
        if ((st = clip_ctx_new(model, 1, &ctx, &err)) != IMS_OK)
            die("ctx", &err, st);
    }
    const int S = 224;
    struct image_limits lim;
    image_limits_default(&lim);
    lim.max_pixels = 60ull * 1000 * 1000;
    printf("{");
    bench_cpu_print_json(stdout);
    printf("\"bench\": \"prepare\", \"clip_size\": %d, \"thumb_side\": 256, \"runs\": %d, "
           "\"count\": %d, \"min_psnr_bound_db\": %.1f,\n \"sizes\": [",
           S, runs, count, IMAGE_PREPARE_MIN_PSNR_DB);
    int first = 1;
    for (char *tok = strtok(sizes_arg, ","); tok; tok = strtok(NULL, ",")) {
        int mp = atoi(tok);
        if (mp < 1 || mp > 60)
            continue;
        int h = (int)lround(sqrt(mp * 1e6 * 3 / 4.0)), w = h * 4 / 3;
        uint8_t *rgb = malloc((size_t)w * (size_t)h * 3);
        double *te = calloc((size_t)(runs * count), sizeof(double));
        double *tb = calloc((size_t)(runs * count), sizeof(double));
        if (!rgb || !te || !tb)
            return 1;
        /* the decode worker's stages, CPU ms per image (sum over images and runs) */
        double c_sha = 0, c_sha_portable = 0, c_exif = 0, c_clip_only = 0, c_prepare = 0;
        double c_by_kind[2] = {0, 0}; /* decode + 224: baseline, progressive */
        double worst_psnr = 1e9, worst_cos = 1.0, sum_psnr = 0;
        int dw = 0, dh = 0;
        size_t jpeg_bytes = 0;
        for (int k = 0; k < count; k++) {
            gen_rgb(rgb, w, h);
            unsigned long n = 0;
            unsigned char *jpg = encode_jpeg(rgb, w, h, k & 1, &n);
            jpeg_bytes += n;
            uint8_t exact[224 * 224 * 3], bounded[224 * 224 * 3];
            for (int r = 0; r < runs; r++) {
                double t0 = now();
                struct image *img = NULL;
                uint8_t *thumb = NULL;
                size_t tn = 0;
                if ((st = image_decode(jpg, n, &lim, &img, &err)) != IMS_OK)
                    die("decode", &err, st);
                if ((st = image_clip_preprocess(img, S, exact, &err)) != IMS_OK)
                    die("preprocess", &err, st);
                if ((st = image_thumbnail_jpeg(img, 256, 80, &thumb, &tn, NULL, NULL, &err)) !=
                    IMS_OK)
                    die("thumb", &err, st);
                image_free(img);
                ims_free(thumb);
                double t1 = now();
                struct image_prepare_options po = {&lim, S, 256, 80, IMAGE_DECODE_BOUNDED, 0, 0};
                struct image_prepared prep;
                if ((st = image_prepare_for_ingest(jpg, n, &po, bounded, &prep, &err)) != IMS_OK)
                    die("prepare", &err, st);
                ims_free(prep.thumb);
                double t2 = now();
                te[k * runs + r] = (t1 - t0) * 1e3;
                tb[k * runs + r] = (t2 - t1) * 1e3;
                dw = prep.decoded_width;
                dh = prep.decoded_height;
                uint8_t digest[32];
                struct image_exif ex;
                struct image_prepare_options po0 = po;
                po0.thumb_side = 0;
                double c0 = cpu_now();
                ims_sha256(jpg, n, digest);
                double c1 = cpu_now();
                ims_sha256_portable(jpg, n, digest);
                double c2 = cpu_now();
                (void)image_exif_read(jpg, n, &ex, NULL);
                double c3 = cpu_now();
                if ((st = image_prepare_for_ingest(jpg, n, &po0, bounded, &prep, &err)) != IMS_OK)
                    die("prepare", &err, st);
                double c4 = cpu_now();
                if ((st = image_prepare_for_ingest(jpg, n, &po, bounded, &prep, &err)) != IMS_OK)
                    die("prepare", &err, st);
                ims_free(prep.thumb);
                double c5 = cpu_now();
                c_sha += c1 - c0, c_sha_portable += c2 - c1, c_exif += c3 - c2;
                c_clip_only += c4 - c3, c_prepare += c5 - c4;
                c_by_kind[k & 1] += c4 - c3;
            }
            double p = psnr(exact, bounded, sizeof(exact));
            sum_psnr += p;
            worst_psnr = p < worst_psnr ? p : worst_psnr;
            if (ctx) {
                static float ce[3 * 224 * 224], cb[3 * 224 * 224];
                float ee[1024], eb[1024];
                image_clip_normalize(exact, S, ce);
                image_clip_normalize(bounded, S, cb);
                if ((st = clip_ctx_encode_images(ctx, ce, 1, ee, 1, &err)) != IMS_OK ||
                    (st = clip_ctx_encode_images(ctx, cb, 1, eb, 1, &err)) != IMS_OK)
                    die("encode", &err, st);
                int d = clip_model_embed_dim(model);
                double ab = 0, aa = 0, bb = 0;
                for (int i = 0; i < d; i++) {
                    ab += (double)ee[i] * eb[i];
                    aa += (double)ee[i] * ee[i];
                    bb += (double)eb[i] * eb[i];
                }
                double c = ab / sqrt(aa * bb);
                worst_cos = c < worst_cos ? c : worst_cos;
            }
            free(jpg);
        }
        double me = median(te, runs * count), mb = median(tb, runs * count);
        printf("%s\n  {\"megapixels\": %d, \"width\": %d, \"height\": %d, "
               "\"jpeg_kb_avg\": %.0f, \"progressive\": \"every other\", "
               "\"exact_ms_median\": %.2f, \"bounded_ms_median\": %.2f, "
               "\"ratio_exact_over_bounded\": %.2f, \"decoded_width\": %d, "
               "\"decoded_height\": %d, \"decoded_mb_bounded\": %.2f, "
               "\"decoded_mb_exact\": %.2f, \"psnr_db_worst\": %.2f, \"psnr_db_mean\": %.2f",
               first ? "" : ",", mp, w, h, (double)jpeg_bytes / count / 1024, me, mb, me / mb,
               dw, dh, (double)dw * dh * 3 / 1e6, (double)w * h * 3 / 1e6, worst_psnr,
               sum_psnr / count);
        double per = 1e3 / (runs * count);
        printf(",\n   \"stages_cpu_ms\": {\"sha256\": %.2f, \"sha256_portable\": %.2f, "
               "\"exif\": %.3f, \"bounded_decode_and_224\": %.2f, \"thumbnail\": %.2f, "
               "\"bounded_total\": %.2f, \"bounded_decode_and_224_baseline\": %.2f, "
               "\"bounded_decode_and_224_progressive\": %.2f}",
               c_sha * per, c_sha_portable * per, c_exif * per, c_clip_only * per,
               (c_prepare - c_clip_only) * per, c_prepare * per,
               c_by_kind[0] * 1e3 / (runs * ((count + 1) / 2)),
               count > 1 ? c_by_kind[1] * 1e3 / (runs * (count / 2)) : 0.0);
        if (ctx)
            printf(", \"embedding_cosine_worst\": %.6f", worst_cos);
        printf("}");
        first = 0;
        free(rgb);
        free(te);
        free(tb);
    }
    printf("\n ]%s%s%s}\n", model ? ", \"model\": \"" : "", model ? clip_model_name(model) : "",
           model ? "\"" : "");
    clip_ctx_free(ctx);
    clip_model_free(model);
    return 0;
}
