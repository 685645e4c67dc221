/* SPDX-License-Identifier: MIT */
/*
 * bench_ingest_genjpeg.c: writes photo-like JPEGs for bench_ingest.py.
 *
 *     bench_ingest_genjpeg OUT_DIR COUNT [SEED] [WxH]
 *
 * Image i is OUT_DIR/photo_NNNN.jpg, 1-2 megapixels (the sizes cycle through
 * 1280x960, 1600x1067, 1200x1200, 1920x1080, 1024x1024 portrait variants),
 * quality 88, 4:2:0. Content: smooth gradients and a few soft blobs that
 * differ per image, plus per-pixel noise, so that the files compress like
 * photographs (roughly 150-500 kB) rather than like flat test patterns.
 * With WxH every image has that size instead (bench_large_photos.py: 12 and
 * 24 MP phone photos, 224x224 thumbnails-sized ones); WxHp writes them
 * progressive (libjpeg's own scan script, jpeg_simple_progression).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

static uint64_t rs;
static int progressive;
static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 32);
}
static double rndf(void) { return rnd() / 4294967296.0; }

static int write_one(const char *path, int w, int h, unsigned char *rgb)
{
    double ca[3], cb[3], bx[4], by[4], br[4], bc[4][3];
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
    double angle = 6.2831853 * rndf(), dx = cos(angle), dy = sin(angle);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            double t = ((x - w / 2.0) * dx + (y - h / 2.0) * dy) / (w + h) + 0.5;
            unsigned char *p = rgb + ((size_t)y * w + x) * 3;
            uint32_t n = rnd();
            for (int c = 0; c < 3; c++) {
                double v = ca[c] + (cb[c] - ca[c]) * t;
                for (int k = 0; k < 4; k++) {
                    double ex = (x - bx[k]) / br[k], ey = (y - by[k]) / br[k];
                    double d2 = ex * ex + ey * ey;
                    if (d2 < 9)
                        v += bc[k][c] * exp(-d2);
                }
                v += (double)((n >> (c * 8)) & 31) - 15.5; /* sensor-like noise */
                p[c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return 1;
    }
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr jerr;
    cinfo.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&cinfo);
    jpeg_stdio_dest(&cinfo, f);
    cinfo.image_width = (JDIMENSION)w;
    cinfo.image_height = (JDIMENSION)h;
    cinfo.input_components = 3;
    cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, 88, TRUE);
    if (progressive)
        jpeg_simple_progression(&cinfo);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = rgb + (size_t)cinfo.next_scanline * w * 3;
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    return fclose(f) != 0;
}

int main(int argc, char **argv)
{
    static const int sizes[][2] = {{1280, 960}, {1600, 1067}, {1200, 1200}, {1920, 1080},
                                   {1024, 1024}, {960, 1280}, {1067, 1600}};
    if (argc < 3) {
        fprintf(stderr, "usage: bench_ingest_genjpeg OUT_DIR COUNT [SEED] [WxH[p]]\n");
        return 2;
    }
    int count = atoi(argv[2]);
    rs = 0x9e3779b97f4a7c15ull ^ (argc > 3 ? strtoull(argv[3], NULL, 10) : 1);
    int fixed[2] = {0, 0};
    char suffix[2] = "";
    int nf = argc > 4 ? sscanf(argv[4], "%dx%d%1s", &fixed[0], &fixed[1], suffix) : 0;
    progressive = nf == 3 && suffix[0] == 'p';
    if (argc > 4 && ((nf != 2 && !progressive) || fixed[0] < 1 || fixed[1] < 1 ||
                     fixed[0] > 20000 || fixed[1] > 20000)) {
        fprintf(stderr, "bench_ingest_genjpeg: bad size %s\n", argv[4]);
        return 2;
    }
    unsigned char *rgb = malloc(fixed[0] ? (size_t)fixed[0] * (size_t)fixed[1] * 3
                                         : (size_t)1920 * 1600 * 3);
    if (!rgb)
        return 1;
    for (int i = 0; i < count; i++) {
        char path[4096];
        const int *s = fixed[0] ? fixed : sizes[i % (int)(sizeof(sizes) / sizeof(sizes[0]))];
        snprintf(path, sizeof(path), "%s/photo_%04d.jpg", argv[1], i);
        if (write_one(path, s[0], s[1], rgb)) {
            free(rgb);
            return 1;
        }
    }
    free(rgb);
    return 0;
}
