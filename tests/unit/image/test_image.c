/* SPDX-License-Identifier: MIT */
/*
 * test_image.c: the image module against Pillow's goldens and bad input.
 *
 * - every fixture of tests/golden/clip/images (manifest.json) decodes to
 *   Pillow's format, mode and size, and preprocesses to the golden
 *   224x224x3 bytes exactly;
 * - the normalised tensor matches a double-precision computation from the
 *   golden bytes;
 * - truncated, corrupt, empty, zero-sized, HTML and bomb inputs give precise
 *   errors; limits are configurable;
 * - allocation failures at every point of a PNG decode + preprocess +
 *   thumbnail return IMS_ERR_NOMEM and leak nothing (ASan build);
 * - BMP variants built here from a known pixel function decode to it;
 * - thumbnails are decodable JPEGs of the right size and colour.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>


#include "imgsearch/image.h"
#include "image_int.h"
#include "image_test_jpeg.h"

#include <pthread.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------- */

static const char *src_dir(void)
{
    const char *d = getenv("IMS_SOURCE_DIR");
    return d && *d ? d : IMS_SOURCE_DIR;
}

static uint8_t *load(const char *rel, size_t *n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/tests/golden/clip/images/%s", src_dir(), rel);
    char *data = NULL;
    struct ims_error err = {0};
    enum ims_status st = ims_file_read(path, (size_t)64 << 20, &data, n, &err);
    if (st != IMS_OK)
        fail_msg("cannot read %s: %s", path, ims_error_message(&err, st));
    return (uint8_t *)data;
}

struct fixture {
    char file[128];
    char format[16];
    char mode[16];
    int width, height;
};

/* A minimal reader for manifest.json's fixed shape: a list of objects with
 * "file", "format", "mode" strings and "size": [w, h]. */
static int read_manifest(struct fixture *fx, int max)
{
    size_t n;
    char *m = (char *)load("manifest.json", &n);
    int count = 0;
    const char *p = m;
    while (count < max && (p = strstr(p, "\"file\"")) != NULL) {
        struct fixture *f = &fx[count];
        const char *end = strchr(p, '}');
        assert_non_null(end);
        const char *q;
        assert_int_equal(sscanf(p, "\"file\": \"%127[^\"]\"", f->file), 1);
        assert_non_null(q = strstr(p, "\"format\""));
        assert_true(q < end);
        assert_int_equal(sscanf(q, "\"format\": \"%15[^\"]\"", f->format), 1);
        assert_non_null(q = strstr(p, "\"mode\""));
        assert_true(q < end);
        assert_int_equal(sscanf(q, "\"mode\": \"%15[^\"]\"", f->mode), 1);
        assert_non_null(q = strstr(p, "\"size\""));
        assert_true(q < end);
        assert_int_equal(sscanf(q, "\"size\": [ %d , %d ]", &f->width, &f->height), 2);
        count++;
        p = end;
    }
    ims_free(m);
    return count;
}

static struct image *decode_ok(const uint8_t *p, size_t n)
{
    struct image *img = NULL;
    struct ims_error err = {0};
    enum ims_status st = image_decode(p, n, NULL, &img, &err);
    if (st != IMS_OK)
        fail_msg("decode failed: %s", ims_error_message(&err, st));
    return img;
}

static enum ims_status decode_err(const void *p, size_t n, const struct image_limits *lim,
                                  struct ims_error *err)
{
    struct image *img = NULL;
    memset(err, 0, sizeof(*err));
    enum ims_status st = image_decode(p, n, lim, &img, err);
    assert_null(img);
    return st;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("message \"%s\" does not contain \"%s\"", hay, needle);
}

/* ---- goldens --------------------------------------------------------------- */

static void test_goldens_exact(void **state)
{
    (void)state;
    struct fixture fx[64];
    int n_fx = read_manifest(fx, 64);
    assert_int_equal(n_fx, 21);
    uint8_t rgb[224 * 224 * 3];
    size_t total_diff = 0, total_bytes = 0;
    int max_diff = 0;
    for (int i = 0; i < n_fx; i++) {
        size_t n, gn;
        uint8_t *data = load(fx[i].file, &n);
        char gname[160];
        snprintf(gname, sizeof(gname), "%s.rgb.u8", fx[i].file);
        uint8_t *gold = load(gname, &gn);
        assert_int_equal(gn, sizeof(rgb));

        struct image_info info;
        struct ims_error err = {0};
        assert_int_equal(image_info(data, n, NULL, &info, &err), IMS_OK);
        assert_int_equal(info.width, fx[i].width);
        assert_int_equal(info.height, fx[i].height);

        struct image *img = decode_ok(data, n);
        assert_string_equal(image_format_name(img->format), fx[i].format);
        assert_string_equal(image_mode_name(img->mode), fx[i].mode);
        assert_string_equal(image_mode_name(info.mode), fx[i].mode);
        assert_int_equal(img->width, fx[i].width);
        assert_int_equal(img->height, fx[i].height);

        memset(rgb, 0xAB, sizeof(rgb));
        assert_int_equal(image_clip_preprocess(img, 224, rgb, &err), IMS_OK);
        size_t diff = 0;
        int mx = 0;
        for (size_t k = 0; k < sizeof(rgb); k++) {
            int d = abs((int)rgb[k] - (int)gold[k]);
            if (d) {
                diff++;
                mx = d > mx ? d : mx;
            }
        }
        if (diff)
            print_message("%-26s %zu bytes differ, max %d\n", fx[i].file, diff, mx);
        total_diff += diff;
        total_bytes += sizeof(rgb);
        max_diff = mx > max_diff ? mx : max_diff;
        image_free(img);
        ims_free(data);
        ims_free(gold);
    }
    print_message("goldens: %zu of %zu bytes differ, max difference %d\n", total_diff,
                  total_bytes, max_diff);
    /* the goal, reached: byte-exact on every fixture */
    assert_int_equal(total_diff, 0);
}

static void test_normalize_from_golden(void **state)
{
    (void)state;
    size_t gn;
    uint8_t *gold = load("rgba.png.rgb.u8", &gn);
    assert_int_equal(gn, 224 * 224 * 3);
    float *chw = ims_malloc(sizeof(float) * 3 * 224 * 224);
    assert_non_null(chw);
    image_clip_normalize(gold, 224, chw);
    const double mean[3] = {0.48145466, 0.4578275, 0.40821073};
    const double std[3] = {0.26862954, 0.26130258, 0.27577711};
    double max_err = 0;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 224 * 224; i++) {
            double want = (gold[3 * i + c] / 255.0 - mean[c]) / std[c];
            double e = fabs(chw[c * 224 * 224 + i] - want);
            max_err = e > max_err ? e : max_err;
        }
    assert_true(max_err < 1e-6);
    ims_free(chw);
    ims_free(gold);
}

static void test_other_sizes(void **state)
{
    (void)state;
    /* 336 (ViT-L/14-336) and an odd size: same pipeline, no golden, but the
     * centre pixel of an exact-size input must be untouched and the output
     * fully written. */
    size_t n;
    uint8_t *data = load("exact_224.png", &n);
    struct image *img = decode_ok(data, n);
    uint8_t *out = ims_malloc(336 * 336 * 3);
    assert_non_null(out);
    struct ims_error err = {0};
    assert_int_equal(image_clip_preprocess(img, 336, out, &err), IMS_OK);
    uint8_t small[7 * 7 * 3];
    assert_int_equal(image_clip_preprocess(img, 7, small, &err), IMS_OK);
    assert_int_equal(image_clip_preprocess(img, 0, small, &err), IMS_ERR_INVALID);
    assert_int_equal(image_clip_preprocess(img, 224, out, &err), IMS_OK);
    assert_memory_equal(out, img->pixels, 224 * 224 * 3); /* same size: a copy */
    ims_free(out);
    image_free(img);
    ims_free(data);
}

/* ---- errors ---------------------------------------------------------------- */

static void test_truncated(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        const char *msg;
    } cases[] = {
        {"baseline.jpg", "truncated JPEG"},  {"progressive.jpg", "truncated JPEG"},
        {"rgb.png", "truncated PNG"},        {"lossy.webp", "truncated WebP"},
        {"lossless.webp", "truncated WebP"}, {"animated.gif", "truncated GIF"},
        {"plain.bmp", "truncated BMP"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n;
        uint8_t *data = load(cases[i].file, &n);
        /* the GIF's first frame ends early in the file: cut inside it */
        int gif = strstr(cases[i].file, ".gif") != NULL;
        size_t cuts[3] = {gif ? n / 4 : n / 2, 40, gif ? 800 : n * 9 / 10};
        for (int c = 0; c < 3; c++) {
            struct ims_error err;
            enum ims_status st = decode_err(data, cuts[c], NULL, &err);
            if (st != IMS_ERR_CORRUPT)
                fail_msg("%s cut at %zu: status %s (%s)", cases[i].file, cuts[c],
                         ims_status_name(st), err.message);
            assert_contains(err.message, cases[i].msg);
        }
        if (gif) {
            /* cut in a later frame: frame 0 is whole, and that is what we show */
            struct image *full = decode_ok(data, n), *part = decode_ok(data, n * 9 / 10);
            assert_int_equal(part->width, full->width);
            assert_memory_equal(part->pixels, full->pixels, full->stride * full->height);
            image_free(full);
            image_free(part);
        }
        ims_free(data);
    }
}

static void test_corrupt(void **state)
{
    (void)state;
    size_t n;
    struct ims_error err;
    /* JPEG: destroy the quantisation/Huffman tables' markers area */
    uint8_t *j = load("baseline.jpg", &n);
    for (size_t k = 4; k < 200 && k < n; k++)
        j[k] = 0x55;
    assert_int_equal(decode_err(j, n, NULL, &err), IMS_ERR_CORRUPT);
    assert_contains(err.message, "JPEG");
    ims_free(j);
    /* PNG: a flipped bit in IHDR breaks its CRC */
    uint8_t *p = load("rgb.png", &n);
    p[20] ^= 0x01;
    assert_int_equal(decode_err(p, n, NULL, &err), IMS_ERR_CORRUPT);
    assert_contains(err.message, "PNG");
    ims_free(p);
    /* WebP: garbage after the RIFF header */
    uint8_t *w = load("lossy.webp", &n);
    for (size_t k = 12; k < 64; k++)
        w[k] = 0xEE;
    enum ims_status st = decode_err(w, n, NULL, &err);
    assert_true(st == IMS_ERR_CORRUPT || st == IMS_ERR_UNSUPPORTED);
    assert_contains(err.message, "WebP");
    ims_free(w);
    /* BMP: an unknown header size */
    uint8_t *b = load("plain.bmp", &n);
    b[14] = 77;
    assert_int_equal(decode_err(b, n, NULL, &err), IMS_ERR_UNSUPPORTED);
    assert_contains(err.message, "header size 77");
    ims_free(b);
}

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, v);
    put16(p + 2, v >> 16);
}

static void put32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return c ^ 0xFFFFFFFFu;
}

/* A BMP file for a (w, h) image with `bits` per pixel (1, 8 palette; 16, 24,
 * 32); `compression` 0 or 3 with masks; `top_down` stores rows top first.
 * Pixel (x, y) has index (x * 7 + y * 3) & mask for palettes, and
 * colour (x * 9, y * 5, x + y) otherwise. */
static uint8_t *make_bmp(int w, int h, int bits, int compression, const uint32_t *masks,
                         int top_down, size_t *n_out)
{
    int n_pal = bits <= 8 ? 1 << bits : 0;
    size_t hdr = 14 + 40 + (compression == 3 ? 12 : 0) + (size_t)n_pal * 4;
    size_t row = (((size_t)w * bits + 31) >> 3) & ~(size_t)3;
    size_t n = hdr + row * h;
    uint8_t *f = calloc(1, n);
    f[0] = 'B';
    f[1] = 'M';
    put32(f + 2, (uint32_t)n);
    put32(f + 10, (uint32_t)hdr);
    put32(f + 14, 40);
    put32(f + 18, (uint32_t)w);
    put32(f + 22, (uint32_t)(top_down ? -h : h));
    put16(f + 26, 1);
    put16(f + 28, (uint32_t)bits);
    put32(f + 30, (uint32_t)compression);
    size_t at = 54;
    if (compression == 3) {
        for (int i = 0; i < 3; i++)
            put32(f + at + 4 * i, masks[i]);
        at += 12;
    }
    for (int i = 0; i < n_pal; i++) { /* B G R X: colour (i, 255 - i, i / 2) */
        f[at + 4 * i] = (uint8_t)(i / 2);
        f[at + 4 * i + 1] = (uint8_t)(255 - i);
        f[at + 4 * i + 2] = (uint8_t)i;
    }
    for (int y = 0; y < h; y++) {
        uint8_t *r = f + hdr + row * (size_t)(top_down ? y : h - 1 - y);
        for (int x = 0; x < w; x++) {
            uint8_t R = (uint8_t)(x * 9), G = (uint8_t)(y * 5), B = (uint8_t)(x + y);
            switch (bits) {
            case 1: if ((x * 7 + y * 3) & 1) r[x / 8] |= (uint8_t)(0x80 >> (x % 8)); break;
            case 8: r[x] = (uint8_t)((x * 7 + y * 3) & 255); break;
            case 16: put16(r + 2 * x, (uint32_t)(((R >> 3) << 11) | ((G >> 2) << 5) | (B >> 3))); break;
            case 24: r[3 * x] = B; r[3 * x + 1] = G; r[3 * x + 2] = R; break;
            case 32:
                if (compression == 3) { /* masks R=0xFF, G=0xFF00, B=0xFF0000 */
                    r[4 * x] = R; r[4 * x + 1] = G; r[4 * x + 2] = B; r[4 * x + 3] = 0x99;
                } else {
                    r[4 * x] = B; r[4 * x + 1] = G; r[4 * x + 2] = R; r[4 * x + 3] = 0x99;
                }
                break;
            }
        }
    }
    *n_out = n;
    return f;
}

static void test_bmp_variants(void **state)
{
    (void)state;
    const int w = 13, h = 5;
    static const uint32_t m565[3] = {0xF800, 0x7E0, 0x1F};
    static const uint32_t m32[3] = {0xFF, 0xFF00, 0xFF0000};
    struct {
        int bits, compression, top_down;
        const uint32_t *masks;
        enum image_mode mode;
    } cases[] = {
        {24, 0, 0, NULL, IMAGE_MODE_RGB}, {24, 0, 1, NULL, IMAGE_MODE_RGB},
        {32, 0, 0, NULL, IMAGE_MODE_RGB}, {32, 3, 1, m32, IMAGE_MODE_RGB},
        {16, 3, 0, m565, IMAGE_MODE_RGB}, {8, 0, 0, NULL, IMAGE_MODE_P},
        {1, 0, 1, NULL, IMAGE_MODE_P},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        size_t n;
        uint8_t *f = make_bmp(w, h, cases[c].bits, cases[c].compression, cases[c].masks,
                              cases[c].top_down, &n);
        struct image *img = decode_ok(f, n);
        assert_int_equal(img->mode, cases[c].mode);
        assert_int_equal(img->width, w);
        assert_int_equal(img->height, h);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                const uint8_t *px = img->pixels + (size_t)y * img->stride;
                int R = (x * 9) & 255, G = (y * 5) & 255, B = (x + y) & 255;
                if (cases[c].bits == 16) { /* 5-6-5, scaled back with v * 255 / max */
                    assert_int_equal(px[3 * x], (R >> 3) * 255 / 31);
                    assert_int_equal(px[3 * x + 1], (G >> 2) * 255 / 63);
                    assert_int_equal(px[3 * x + 2], (B >> 3) * 255 / 31);
                } else if (cases[c].bits >= 24) {
                    assert_int_equal(px[3 * x], R);
                    assert_int_equal(px[3 * x + 1], G);
                    assert_int_equal(px[3 * x + 2], B);
                } else {
                    int mask = (1 << cases[c].bits) - 1;
                    int idx = (x * 7 + y * 3) & mask;
                    assert_int_equal(px[x], idx);
                    assert_int_equal(img->palette[3 * idx], idx);
                    assert_int_equal(img->palette[3 * idx + 1], 255 - idx);
                    assert_int_equal(img->palette[3 * idx + 2], idx / 2);
                }
            }
        image_free(img);
        /* every truncation of the file is an error, never a crash */
        for (size_t cut = 0; cut < n; cut += 7) {
            struct ims_error err;
            enum ims_status st = decode_err(f, cut, NULL, &err);
            assert_true(st == IMS_ERR_CORRUPT || st == IMS_ERR_UNSUPPORTED);
        }
        free(f);
    }
}

static void test_zero_and_bombs(void **state)
{
    (void)state;
    struct ims_error err;
    size_t n;
    /* BMP 0 x 5 and 100000 x 100000 (rejected before any allocation: with
     * every allocation failing, the answer is still TOO_LARGE) */
    uint8_t *f = make_bmp(4, 4, 24, 0, NULL, 0, &n);
    put32(f + 18, 0);
    assert_int_equal(decode_err(f, n, NULL, &err), IMS_ERR_CORRUPT);
    assert_contains(err.message, "empty image");
    put32(f + 18, 100000);
    put32(f + 22, 100000);
    ims_alloc_set_fail_after(0);
    enum ims_status st = decode_err(f, n, NULL, &err);
    ims_alloc_set_fail_after(-1);
    assert_int_equal(st, IMS_ERR_TOO_LARGE);
    assert_contains(err.message, "100000x100000");
    free(f);

    /* PNG IHDR declaring 100000 x 100000 (valid CRC) */
    uint8_t *p = load("rgb.png", &n);
    put32be(p + 16, 100000);
    put32be(p + 20, 100000);
    put32be(p + 29, crc32_png(p + 12, 17));
    assert_int_equal(decode_err(p, n, NULL, &err), IMS_ERR_TOO_LARGE);
    assert_contains(err.message, "100000x100000");
    /* and width 0 */
    put32be(p + 16, 0);
    put32be(p + 29, crc32_png(p + 12, 17));
    assert_int_equal(decode_err(p, n, NULL, &err), IMS_ERR_CORRUPT);
    ims_free(p);

    /* JPEG SOF0 declaring 65535 x 65535 */
    uint8_t *j = load("baseline.jpg", &n);
    size_t k = 2; /* walk the marker segments to SOF0/SOF2 */
    while (k + 9 < n && j[k] == 0xFF && j[k + 1] != 0xC0 && j[k + 1] != 0xC2)
        k += 2 + (size_t)((j[k + 2] << 8) | j[k + 3]);
    assert_true(k + 9 < n);
    assert_int_equal(j[k], 0xFF);
    j[k + 5] = j[k + 7] = 0xEA; /* 60000 = 0xEA60 */
    j[k + 6] = j[k + 8] = 0x60;
    assert_int_equal(decode_err(j, n, NULL, &err), IMS_ERR_TOO_LARGE);
    assert_contains(err.message, "60000x60000");
    /* past libjpeg's own 65500 maximum: still TOO_LARGE, not "corrupt" */
    j[k + 5] = j[k + 6] = j[k + 7] = j[k + 8] = 0xFF;
    assert_int_equal(decode_err(j, n, NULL, &err), IMS_ERR_TOO_LARGE);
    ims_free(j);

    /* GIF logical screen 65535 x 65535 */
    uint8_t *g = load("animated.gif", &n);
    g[6] = g[7] = g[8] = g[9] = 0xFF;
    assert_int_equal(decode_err(g, n, NULL, &err), IMS_ERR_TOO_LARGE);
    /* and a 0 x 0 screen with a 0 x 0 frame is empty */
    ims_free(g);
    static const uint8_t empty_gif[] = {'G', 'I', 'F', '8', '9', 'a', 0, 0, 0, 0, 0, 0, 0,
                                        0x2C, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x3B};
    assert_int_equal(decode_err(empty_gif, sizeof(empty_gif), NULL, &err), IMS_ERR_CORRUPT);
    assert_contains(err.message, "empty image");
}

static void test_not_images(void **state)
{
    (void)state;
    struct ims_error err;
    static const struct {
        const char *bytes;
        size_t n;
        const char *msg;
    } cases[] = {
        {"", 0, "empty file"},
        {"\n  <!DOCTYPE html><html><body>Not found</body></html>", 52, "HTML document"},
        {"<HTML><HEAD>", 12, "HTML document"},
        {"%PDF-1.7\n", 9, "PDF document"},
        {"<?xml version=\"1.0\"?><svg xmlns=", 33, "SVG"},
        {"II+\0\x08\0\0\0", 8, "BigTIFF"},
        {"\0\0\0\x18" "ftypavis\0\0\0\0avis", 20, "image sequence"},
        {"\0\0\0\x18" "ftypisom\0\0\0\0mp41", 20, "video"},
        {"{\"error\": 1}", 12, "JSON"},
        {"\x01\x02\x03\x04\x05", 5, "01 02 03 04 05"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(decode_err(cases[i].bytes, cases[i].n, NULL, &err), IMS_ERR_UNSUPPORTED);
        assert_contains(err.message, cases[i].msg);
        enum image_format f;
        assert_int_equal(image_sniff(cases[i].bytes, cases[i].n, &f, &err), IMS_ERR_UNSUPPORTED);
    }
    static const struct {
        const char *bytes;
        size_t n;
        enum image_format f;
    } ok[] = {
        {"\xff\xd8\xff\xe0", 4, IMAGE_FORMAT_JPEG}, {"\x89PNG\r\n\x1a\n", 8, IMAGE_FORMAT_PNG},
        {"GIF87a", 6, IMAGE_FORMAT_GIF},            {"GIF89a", 6, IMAGE_FORMAT_GIF},
        {"RIFF\0\0\0\0WEBP", 12, IMAGE_FORMAT_WEBP}, {"BM", 2, IMAGE_FORMAT_BMP},
        {"II*\0", 4, IMAGE_FORMAT_TIFF}, {"MM\0*", 4, IMAGE_FORMAT_TIFF},
        {"\0\0\0\x18" "ftypheic\0\0\0\0mif1heic", 24, IMAGE_FORMAT_HEIF},
        {"\0\0\0\x18" "ftypmif1\0\0\0\0mif1heic", 24, IMAGE_FORMAT_HEIF},
        {"\0\0\0\x1c" "ftypavif\0\0\0\0avifmif1miaf", 28, IMAGE_FORMAT_AVIF},
        {"\0\0\0\x18" "ftypmif1\0\0\0\0mif1avif", 24, IMAGE_FORMAT_AVIF},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        enum image_format f = (enum image_format)-1;
        assert_int_equal(image_sniff(ok[i].bytes, ok[i].n, &f, &err), IMS_OK);
        assert_int_equal(f, ok[i].f);
    }
}

/* Issue 8 item 9: a 77 KB-class PNG of 1 x 40,000,000 pixels (within the
 * pixel limit) is refused from its header by its aspect ratio, in image_info
 * and image_decode alike; a BMP strip too, with every allocation failing
 * (nothing decoded); a JPEG strip under a configured limit. An ordinary wide image passes. */
static void test_aspect_from_header(void **state)
{
    (void)state;
    struct ims_error err;
    size_t n;
    uint8_t *p = load("rgb.png", &n);
    put32be(p + 16, 1);
    put32be(p + 20, 40000000);
    put32be(p + 29, crc32_png(p + 12, 17));
    struct image_info info;
    memset(&err, 0, sizeof(err));
    assert_int_equal(image_info(p, n, NULL, &info, &err), IMS_ERR_TOO_LARGE);
    assert_contains(err.message, "aspect ratio");
    assert_int_equal(decode_err(p, n, NULL, &err), IMS_ERR_TOO_LARGE);
    assert_contains(err.message, "1x40000000");
    /* a configured limit applies; 0 means the default */
    struct image_limits lim;
    image_limits_default(&lim);
    assert_int_equal(lim.max_aspect, IMAGE_DEFAULT_MAX_ASPECT);
    put32be(p + 16, 10);
    put32be(p + 20, 200);
    put32be(p + 29, crc32_png(p + 12, 17));
    lim.max_aspect = 19;
    assert_int_equal(image_info(p, n, &lim, &info, &err), IMS_ERR_TOO_LARGE);
    assert_contains(err.message, "1:19");
    lim.max_aspect = 20;
    assert_int_equal(image_info(p, n, &lim, &info, &err), IMS_OK);
    lim.max_aspect = 0;
    assert_int_equal(image_info(p, n, &lim, &info, &err), IMS_OK);
    ims_free(p);

    uint8_t *f = make_bmp(4, 4, 24, 0, NULL, 0, &n);
    put32(f + 18, 40000000);
    put32(f + 22, 1);
    ims_alloc_set_fail_after(0); /* refused before anything is allocated */
    enum ims_status st = decode_err(f, n, NULL, &err);
    ims_alloc_set_fail_after(-1);
    assert_int_equal(st, IMS_ERR_TOO_LARGE);
    assert_contains(err.message, "aspect ratio");
    free(f);

    uint8_t *j = load("baseline.jpg", &n);
    size_t k = 2;
    while (k + 9 < n && j[k] == 0xFF && j[k + 1] != 0xC0 && j[k + 1] != 0xC2)
        k += 2 + (size_t)((j[k + 2] << 8) | j[k + 3]);
    assert_true(k + 9 < n);
    j[k + 5] = 0; /* height 1 */
    j[k + 6] = 1;
    j[k + 7] = 0xFF; /* width 65500 < 65536: allowed by the default */
    j[k + 8] = 0xDC;
    struct image_limits l2;
    image_limits_default(&l2);
    l2.max_aspect = 1000;
    assert_int_equal(image_info(j, n, &l2, &info, &err), IMS_ERR_TOO_LARGE);
    assert_contains(err.message, "aspect ratio");
    assert_int_equal(image_info(j, n, NULL, &info, &err), IMS_OK);
    ims_free(j);
}

static uint8_t *make_progressive_jpeg(int w, int h, size_t *n_out)
{
    uint8_t *px = malloc((size_t)w * (size_t)h * 3);
    assert_non_null(px);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w * 3; x++)
            px[(size_t)y * (size_t)w * 3 + (size_t)x] = (uint8_t)(x * 7 + y * 3);
    uint8_t *jpg = itj_encode(px, w, h, 3, 0, 1, n_out);
    free(px);
    return jpg;
}

/* libjpeg's max_memory_to_use is set: a progressive JPEG whose coefficient
 * buffers exceed it is TOO_LARGE, not an unbounded allocation. */
static void test_jpeg_memory_cap(void **state)
{
    (void)state;
    size_t n;
    uint8_t *j = make_progressive_jpeg(512, 512, &n);
    struct image *img = NULL;
    struct ims_error err = {0};
    assert_int_equal(image_decode(j, n, NULL, &img, &err), IMS_OK);
    image_free(img);
    size_t saved = image__jpeg_max_memory;
    image__jpeg_max_memory = 256 << 10; /* 512x512x3 coefficients need 1.5 MiB */
    img = NULL;
    enum ims_status st = image_decode(j, n, NULL, &img, &err);
    image__jpeg_max_memory = saved;
    assert_int_equal(st, IMS_ERR_TOO_LARGE);
    assert_null(img);
    assert_contains(err.message, "decoder memory");
    free(j);
}

struct budget_thread {
    const uint8_t *p;
    size_t n;
    enum ims_status st;
};

static void *decode_in_thread(void *arg)
{
    struct budget_thread *t = arg;
    struct image *img = NULL;
    struct ims_error err = {0};
    t->st = image_decode(t->p, t->n, NULL, &img, &err);
    image_free(img);
    return NULL;
}

/* The process-wide decode budget: a decode bigger than all of it is
 * TOO_LARGE at once; one that does not fit beside others waits, then is
 * BUSY; one that waits is served when memory comes back. Counted. */
static void test_decode_budget(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = load("rgb.png", &n);
    struct image_info info;
    struct ims_error err = {0};
    assert_int_equal(image_info(p, n, NULL, &info, &err), IMS_OK);
    size_t need = (size_t)info.width * (size_t)info.height * (size_t)image_mode_bytes(info.mode);
    struct image_decode_budget_stats s0, s1;
    image_decode_budget_stats(&s0);
    assert_int_equal(s0.budget, IMAGE_DEFAULT_DECODE_BUDGET);
    assert_int_equal(s0.in_use, 0);

    image_decode_budget_set(need - 1, 50);
    assert_int_equal(decode_err(p, n, NULL, &err), IMS_ERR_TOO_LARGE);
    assert_contains(err.message, "decode memory budget");

    image_decode_budget_set(need + need / 2, 50);
    assert_int_equal(image__budget_reserve(need, &err), IMS_OK); /* another decode */
    assert_int_equal(decode_err(p, n, NULL, &err), IMS_ERR_BUSY);
    assert_contains(err.message, "busy");
    image_decode_budget_stats(&s1);
    assert_int_equal(s1.in_use, need);
    assert_true(s1.n_busy >= s0.n_busy + 1);
    assert_true(s1.n_too_large >= s0.n_too_large + 1);

    /* a waiting decode is served as soon as the memory comes back */
    image_decode_budget_set(need + need / 2, 60000);
    struct budget_thread t = {p, n, IMS_ERR_INTERNAL};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, decode_in_thread, &t), 0);
    for (int i = 0; i < 2000; i++) { /* until it waits (bounded: 20 s) */
        image_decode_budget_stats(&s1);
        if (s1.n_waited > s0.n_waited + 1)
            break;
        usleep(10000);
    }
    image__budget_release(need);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(t.st, IMS_OK);
    image_decode_budget_stats(&s1);
    assert_int_equal(s1.in_use, 0);
    image_decode_budget_set(0, -1);
    image_decode_budget_stats(&s1);
    assert_int_equal(s1.budget, IMAGE_DEFAULT_DECODE_BUDGET);
    ims_free(p);
}

static void test_limits(void **state)
{
    (void)state;
    size_t n;
    uint8_t *data = load("baseline.jpg", &n); /* 1024 x 768 */
    struct image_limits lim;
    image_limits_default(&lim);
    assert_int_equal(lim.max_pixels, IMAGE_DEFAULT_MAX_PIXELS);
    assert_int_equal(lim.max_bytes, IMAGE_DEFAULT_MAX_BYTES);
    struct ims_error err;
    lim.max_pixels = 1024 * 768 - 1;
    assert_int_equal(decode_err(data, n, &lim, &err), IMS_ERR_TOO_LARGE);
    assert_contains(err.message, "1024x768");
    struct image_info info;
    assert_int_equal(image_info(data, n, &lim, &info, &err), IMS_ERR_TOO_LARGE);
    lim.max_pixels = 1024 * 768;
    struct image *img = NULL;
    assert_int_equal(image_decode(data, n, &lim, &img, &err), IMS_OK);
    image_free(img);
    lim.max_bytes = n - 1;
    assert_int_equal(decode_err(data, n, &lim, &err), IMS_ERR_TOO_LARGE);
    assert_contains(err.message, "bytes");
    ims_free(data);

    /* by default a 48 MP phone photo's header passes, a 144 MP one does not */
    uint8_t *p = load("rgb.png", &n);
    put32be(p + 16, 8064);
    put32be(p + 20, 6048);
    put32be(p + 29, crc32_png(p + 12, 17));
    assert_int_equal(image_info(p, n, NULL, &info, &err), IMS_OK);
    assert_int_equal(info.width, 8064);
    put32be(p + 16, 12000);
    put32be(p + 20, 12000);
    put32be(p + 29, crc32_png(p + 12, 17));
    assert_int_equal(image_info(p, n, NULL, &info, &err), IMS_ERR_TOO_LARGE);
    assert_contains(err.message, "12000x12000");
    ims_free(p);
}

/* ---- rarer modes, from tests/fuzz/corpus/image (make_seeds.py) ---------- */

static uint8_t *load_seed(const char *name, size_t *n)
{
    char rel[256];
    snprintf(rel, sizeof(rel), "../../../fuzz/corpus/image/%s", name);
    return load(rel, n);
}

static int v16(int x, int y)
{
    return (x * 9173 + y * 20011) & 0xFFFF;
}

static const uint8_t *px_at(const struct image *img, int x, int y)
{
    return img->pixels + (size_t)y * img->stride + (size_t)x * image_mode_bytes(img->mode);
}

static struct image *decode_seed(const char *name, enum image_mode mode, int w, int h)
{
    size_t n;
    uint8_t *data = load_seed(name, &n);
    struct image *img = decode_ok(data, n);
    ims_free(data);
    assert_int_equal(img->mode, mode);
    assert_int_equal(img->width, w);
    assert_int_equal(img->height, h);
    /* and the pipeline runs on it */
    uint8_t rgb[224 * 224 * 3];
    struct ims_error err = {0};
    assert_int_equal(image_clip_preprocess(img, 224, rgb, &err), IMS_OK);
    return img;
}

static void test_png_modes(void **state)
{
    (void)state;
    struct image *img = decode_seed("seed_grey16.png", IMAGE_MODE_I, 7, 5);
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 7; x++) {
            int32_t v;
            memcpy(&v, px_at(img, x, y), 4);
            assert_int_equal(v, v16(x, y));
        }
    image_free(img);
    img = decode_seed("seed_ga16.png", IMAGE_MODE_RGBA, 7, 5);
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 7; x++) {
            const uint8_t *p = px_at(img, x, y);
            assert_int_equal(p[0], v16(x, y) >> 8);
            assert_int_equal(p[1], v16(x, y) >> 8);
            assert_int_equal(p[2], v16(x, y) >> 8);
            assert_int_equal(p[3], v16(y, x) >> 8);
        }
    image_free(img);
    img = decode_seed("seed_rgb16.png", IMAGE_MODE_RGB, 7, 5);
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 7; x++) {
            const uint8_t *p = px_at(img, x, y);
            assert_int_equal(p[0], v16(x, y) >> 8);
            assert_int_equal(p[1], v16(y, x) >> 8);
            assert_int_equal(p[2], v16(x, x) >> 8);
        }
    image_free(img);
    img = decode_seed("seed_grey1.png", IMAGE_MODE_1, 7, 5);
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 7; x++)
            assert_int_equal(*px_at(img, x, y), ((x + y) & 1) ? 255 : 0);
    image_free(img);
    img = decode_seed("seed_pal4_trns.png", IMAGE_MODE_P, 7, 5);
    assert_int_equal(img->n_palette, 16);
    assert_int_equal(img->transparency, 2);
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 7; x++)
            assert_int_equal(*px_at(img, x, y), (x * 3 + y) & 15);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(img->palette[3 * i], i * 16);
        assert_int_equal(img->palette[3 * i + 1], 255 - i * 16);
        assert_int_equal(img->palette[3 * i + 2], i);
    }
    assert_int_equal(img->palette[3 * 200], 200); /* past the PLTE: Pillow's grey ramp */
    image_free(img);
    img = decode_seed("seed_pal8.bmp", IMAGE_MODE_P, 7, 5);
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 7; x++)
            assert_int_equal(*px_at(img, x, y), (x * 3 + y) & 15);
    assert_int_equal(img->palette[3 * 3], 3 * 16);
    assert_int_equal(img->palette[3 * 3 + 1], 255 - 3 * 16);
    assert_int_equal(img->palette[3 * 3 + 2], 3);
    image_free(img);
}

static void test_gif_first_frame(void **state)
{
    (void)state;
    /* interlaced 12x9 frame at (1, 1) on a 14x11 screen, transparent index 2:
     * outside the frame Pillow shows the transparent index (not the
     * background); inside, (x + y) & 3 once de-interlaced */
    struct image *img = decode_seed("seed_interlaced.gif", IMAGE_MODE_P, 14, 11);
    assert_int_equal(img->transparency, 2);
    for (int y = 0; y < 11; y++)
        for (int x = 0; x < 14; x++) {
            int inside = x >= 1 && x < 13 && y >= 1 && y < 10;
            assert_int_equal(*px_at(img, x, y), inside ? ((x - 1 + y - 1) & 3) : 2);
        }
    assert_int_equal(img->palette[3], 255); /* entry 1 is red */
    assert_int_equal(img->palette[4], 0);
    image_free(img);
}

/* ---- CMYK JPEG -------------------------------------------------------------- */

/* A w x h CMYK JPEG of one ink colour, written the way Adobe software does
 * (inverted values, Adobe marker), with libjpeg's encoder. */
static uint8_t *make_cmyk_jpeg(int w, int h, const uint8_t ink[4], size_t *n_out)
{
    uint8_t *px = malloc((size_t)w * (size_t)h * 4);
    assert_non_null(px);
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++)
        for (int k = 0; k < 4; k++)
            px[4 * i + (size_t)k] = (uint8_t)(255 - ink[k]);
    uint8_t *jpg = itj_encode(px, w, h, 4, 100, 0, n_out);
    free(px);
    return jpg;
}

static void test_cmyk_jpeg(void **state)
{
    (void)state;
    static const uint8_t ink[4] = {40, 200, 90, 30};
    size_t n;
    uint8_t *jpg = make_cmyk_jpeg(64, 48, ink, &n);
    struct image *img = decode_ok(jpg, n);
    assert_int_equal(img->mode, IMAGE_MODE_CMYK);
    for (int k = 0; k < 4; k++) /* quality 100 on a flat colour: within 1 */
        assert_true(abs((int)img->pixels[(size_t)10 * img->stride + 40 + k] - ink[k]) <= 1);
    uint8_t rgb[224 * 224 * 3];
    struct ims_error err = {0};
    assert_int_equal(image_clip_preprocess(img, 224, rgb, &err), IMS_OK);
    /* Pillow's cmyk2rgb: 255 - k - c * (255 - k) / 255, i.e. (255 - c)(255 - k)/255 */
    for (int c = 0; c < 3; c++) {
        double want = (255.0 - ink[c]) * (255.0 - ink[3]) / 255.0;
        assert_true(fabs(rgb[3 * (112 * 224 + 112) + c] - want) <= 2.0);
    }
    image_free(img);
    free(jpg);
}

/* ---- allocation failures ----------------------------------------------- */

static enum ims_status pipeline(const uint8_t *data, size_t n, uint8_t *rgb)
{
    struct image *img = NULL;
    uint8_t *jpg = NULL;
    size_t jn = 0;
    struct ims_error err = {0};
    enum ims_status st = image_decode(data, n, NULL, &img, &err);
    if (st == IMS_OK)
        st = image_clip_preprocess(img, 224, rgb, &err);
    if (st == IMS_OK)
        st = image_thumbnail_jpeg(img, 64, 80, &jpg, &jn, NULL, NULL, &err);
    image_free(img);
    ims_free(jpg);
    return st;
}

static void test_alloc_failures(void **state)
{
    (void)state;
    static const char *files[] = {"palette_transparent.png", "grey_alpha.png"};
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        size_t n, gn;
        uint8_t *data = load(files[f], &n);
        char gname[160];
        snprintf(gname, sizeof(gname), "%s.rgb.u8", files[f]);
        uint8_t *gold = load(gname, &gn);
        uint8_t *rgb = ims_malloc(224 * 224 * 3);
        assert_non_null(rgb);
        int n_nomem = 0, ok_at = -1;
        for (long k = 0; k < 500 && ok_at < 0; k++) {
            ims_alloc_set_fail_after(k);
            enum ims_status st = pipeline(data, n, rgb);
            ims_alloc_set_fail_after(-1);
            if (st == IMS_OK) {
                ok_at = (int)k;
                assert_memory_equal(rgb, gold, gn);
            } else {
                if (st != IMS_ERR_NOMEM)
                    fail_msg("%s: failing after %ld allocations gave %s", files[f], k,
                             ims_status_name(st));
                n_nomem++;
            }
        }
        assert_true(ok_at > 0);        /* the pipeline does allocate ... */
        assert_int_equal(n_nomem, ok_at); /* ... and every failure point said NOMEM */
        ims_free(rgb);
        ims_free(gold);
        ims_free(data);
    }
}

/* ---- thumbnails ------------------------------------------------------------ */

static void channel_means(const struct image *img, double m[3])
{
    uint8_t *rgb = ims_malloc((size_t)img->width * img->height * 3);
    assert_non_null(rgb);
    /* preprocess at full size would resize; compute directly instead */
    for (int c = 0; c < 3; c++)
        m[c] = 0;
    for (int y = 0; y < img->height; y++)
        for (int x = 0; x < img->width; x++) {
            const uint8_t *px = img->pixels + (size_t)y * img->stride;
            for (int c = 0; c < 3; c++)
                m[c] += img->mode == IMAGE_MODE_L ? px[x] : px[3 * x + c];
        }
    for (int c = 0; c < 3; c++)
        m[c] /= (double)img->width * img->height;
    ims_free(rgb);
}

static void test_thumbnail(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        int tw, th;
        enum image_mode mode;
    } cases[] = {
        {"baseline.jpg", 256, 192, IMAGE_MODE_RGB},     /* 1024x768 */
        {"progressive.jpg", 171, 256, IMAGE_MODE_RGB},  /* 600x900 */
        {"grey.jpg", 256, 192, IMAGE_MODE_L},           /* 512x384 */
        {"small_upscale.jpg", 100, 64, IMAGE_MODE_RGB}, /* never enlarged */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n;
        uint8_t *data = load(cases[i].file, &n);
        struct image *img = decode_ok(data, n);
        uint8_t *jpg = NULL;
        size_t jn = 0;
        int tw = 0, th = 0;
        struct ims_error err = {0};
        assert_int_equal(image_thumbnail_jpeg(img, 256, 85, &jpg, &jn, &tw, &th, &err), IMS_OK);
        assert_int_equal(tw, cases[i].tw);
        assert_int_equal(th, cases[i].th);
        struct image *t = decode_ok(jpg, jn);
        assert_int_equal(t->format, IMAGE_FORMAT_JPEG);
        assert_int_equal(t->width, cases[i].tw);
        assert_int_equal(t->height, cases[i].th);
        assert_int_equal(t->mode, cases[i].mode);
        double a[3], b[3];
        channel_means(img, a);
        channel_means(t, b);
        for (int c = 0; c < 3; c++)
            assert_true(fabs(a[c] - b[c]) < 4.0);
        image_free(t);
        ims_free(jpg);
        image_free(img);
        ims_free(data);
    }
    /* fully transparent RGBA composites over white */
    struct image *img = NULL;
    struct ims_error err = {0};
    assert_int_equal(image_new(300, 10, IMAGE_MODE_RGBA, &img, &err), IMS_OK);
    uint8_t *jpg = NULL;
    size_t jn;
    assert_int_equal(image_thumbnail_jpeg(img, 30, 90, &jpg, &jn, NULL, NULL, &err), IMS_OK);
    struct image *t = decode_ok(jpg, jn);
    assert_int_equal(t->width, 30);
    assert_int_equal(t->height, 1);
    for (int x = 0; x < 30 * 3; x++)
        assert_true(t->pixels[x] >= 250);
    assert_int_equal(image_thumbnail_jpeg(img, 30, 0, &jpg, &jn, NULL, NULL, &err),
                     IMS_ERR_INVALID);
    image_free(t);
    ims_free(jpg);
    image_free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_goldens_exact),  cmocka_unit_test(test_normalize_from_golden),
        cmocka_unit_test(test_other_sizes),    cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_corrupt),        cmocka_unit_test(test_bmp_variants),
        cmocka_unit_test(test_zero_and_bombs), cmocka_unit_test(test_not_images),
        cmocka_unit_test(test_aspect_from_header), cmocka_unit_test(test_jpeg_memory_cap),
        cmocka_unit_test(test_decode_budget),
        cmocka_unit_test(test_limits),         cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_thumbnail),      cmocka_unit_test(test_png_modes),
        cmocka_unit_test(test_gif_first_frame), cmocka_unit_test(test_cmyk_jpeg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
