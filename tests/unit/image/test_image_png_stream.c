/* SPDX-License-Identifier: MIT */
/*
 * test_image_png_stream.c: the streamed PNG path of image_prepare_for_ingest
 * (issue 11 item 1). For PNGs of every colour type and depth, odd sizes and
 * one large image, the CLIP input and the thumbnail must be byte-identical
 * to the whole decode (image_decode + image_clip_preprocess +
 * image_thumbnail_jpeg), the decode must really stream (and hold far less
 * than the image), interlaced PNGs must take the whole decode, and a
 * truncated PNG must fail with a precise error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <png.h>

#include "image_int.h"

static uint64_t rs = 777;
static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 32);
}

struct membuf {
    uint8_t *p;
    size_t n, cap;
};

static void wr(png_structp png, png_bytep d, size_t len)
{
    struct membuf *b = png_get_io_ptr(png);
    if (b->n + len > b->cap) {
        b->cap = (b->n + len) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, d, len);
    b->n += len;
}

static void fl(png_structp png)
{
    (void)png;
}

/* A sample of `bits` bits at (x, y, channel c): gradients, a hard-edged
 * block, a fine texture and noise, so that every filter tap matters. Alpha
 * (c == alpha) takes 0, full and intermediate values in bands. */
static unsigned sample(int x, int y, int c, int w, int h, int bits, int is_alpha)
{
    unsigned max = (1u << bits) - 1;
    if (is_alpha) {
        int band = (x * 5 / w + y * 3 / h) % 4;
        if (band == 0)
            return 0;
        if (band == 1)
            return max;
        return (unsigned)(((x * 7 + y * 3) % 97) * max / 96);
    }
    double v = (double)(x + (c + 1) * y) / (w + 3 * h);
    if (x > w / 4 && x < w / 2 && y > h / 3 && y < (2 * h) / 3)
        v = 1.0 - v;
    v += ((x ^ y) & 3) * 0.04 + (rnd() % 100) / 2000.0;
    if (v > 1)
        v = 1;
    return (unsigned)(v * max + 0.5);
}

/* A PNG of colour type ctype and depth, w x h, in memory (malloc'd). */
static uint8_t *make_png(int w, int h, int ctype, int depth, int interlace, size_t *n)
{
    struct membuf b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop pi = png_create_info_struct(png);
    assert_non_null(png);
    assert_non_null(pi);
    assert_int_equal(setjmp(png_jmpbuf(png)), 0);
    png_set_write_fn(png, &b, wr, fl);
    png_set_IHDR(png, pi, (png_uint_32)w, (png_uint_32)h, depth, ctype,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 1);
    int nch = 1, np = 1 << depth;
    if (ctype == PNG_COLOR_TYPE_PALETTE) {
        if (np > 200)
            np = 200; /* libpng writes no index past PLTE */
        png_color pal[256];
        png_byte trans[4] = {255, 0, 128, 0};
        for (int i = 0; i < np; i++) {
            pal[i].red = (png_byte)(i * 37);
            pal[i].green = (png_byte)(255 - i * 11);
            pal[i].blue = (png_byte)(i * i);
        }
        png_set_PLTE(png, pi, pal, np);
        png_set_tRNS(png, pi, trans, np < 4 ? np : 4, NULL);
    } else if (ctype == PNG_COLOR_TYPE_GRAY_ALPHA) {
        nch = 2;
    } else if (ctype == PNG_COLOR_TYPE_RGB) {
        nch = 3;
    } else if (ctype == PNG_COLOR_TYPE_RGB_ALPHA) {
        nch = 4;
    }
    int has_alpha = ctype & PNG_COLOR_MASK_ALPHA;
    png_write_info(png, pi);
    if (depth < 8)
        png_set_packing(png);
    int passes = png_set_interlace_handling(png);
    size_t bps = depth == 16 ? 2 : 1;
    uint8_t *row = calloc((size_t)w * nch * bps, 1);
    uint8_t *img = calloc((size_t)w * nch * bps * (size_t)h, 1);
    assert_non_null(row);
    assert_non_null(img);
    for (int y = 0; y < h; y++) {
        uint8_t *r = img + (size_t)y * w * nch * bps;
        for (int x = 0; x < w; x++)
            for (int c = 0; c < nch; c++) {
                unsigned v = ctype == PNG_COLOR_TYPE_PALETTE
                                 ? (unsigned)((x / 3 + y / 5 + (int)(rnd() % 3)) % np)
                                 : sample(x, y, c, w, h, depth, has_alpha && c == nch - 1);
                if (depth == 16) {
                    r[2 * ((size_t)x * nch + c)] = (uint8_t)(v >> 8);
                    r[2 * ((size_t)x * nch + c) + 1] = (uint8_t)v;
                } else {
                    r[(size_t)x * nch + c] = (uint8_t)v;
                }
            }
    }
    for (int p = 0; p < passes; p++)
        for (int y = 0; y < h; y++)
            png_write_row(png, img + (size_t)y * w * nch * bps);
    png_write_end(png, pi);
    png_destroy_write_struct(&png, &pi);
    free(row);
    free(img);
    *n = b.n;
    return b.p;
}

/* The whole-decode path the stream must reproduce. */
static void reference(const uint8_t *p, size_t n, int clip, int thumb, uint8_t *rgb,
                      uint8_t **tj, size_t *tn)
{
    struct image *img = NULL;
    struct ims_error err = {0};
    assert_int_equal(image_decode(p, n, NULL, &img, &err), IMS_OK);
    assert_int_equal(image_clip_preprocess(img, clip, rgb, &err), IMS_OK);
    *tj = NULL;
    *tn = 0;
    if (thumb > 0)
        assert_int_equal(
            image_thumbnail_jpeg(img, thumb, 85, tj, tn, NULL, NULL, &err), IMS_OK);
    image_free(img);
}

/* Streams p and compares with the reference; returns the bytes held. */
static size_t check_same(const uint8_t *p, size_t n, int w, int h, int clip, int thumb,
                         int expect_stream)
{
    size_t nrgb = (size_t)clip * clip * 3;
    uint8_t *want = malloc(nrgb), *got = malloc(nrgb), *got2 = malloc(nrgb);
    assert_non_null(want);
    assert_non_null(got);
    assert_non_null(got2);
    uint8_t *tj = NULL;
    size_t tn = 0;
    reference(p, n, clip, thumb, want, &tj, &tn);

    struct image_prepare_options o = {0};
    o.clip_size = clip;
    o.thumb_side = thumb;
    o.thumb_quality = 85;
    o.decode = IMAGE_DECODE_EXACT;
    struct image_prepared out;
    memset(&out, 0, sizeof(out));
    struct ims_error err = {0};
    int streamed = -1;
    size_t held = 0;
    memset(got, 0xa5, nrgb);
    enum ims_status st = image__prepare_png_stream(p, n, NULL, &o, got, &out, &streamed, &held,
                                                  &err);
    assert_int_equal(st, IMS_OK);
    assert_int_equal(streamed, expect_stream);
    if (streamed) {
        assert_memory_equal(got, want, nrgb);
        assert_int_equal(out.width, w);
        assert_int_equal(out.height, h);
        assert_string_equal(out.thumb_error, "");
        if (thumb > 0) {
            assert_non_null(out.thumb);
            assert_int_equal(out.thumb_len, tn);
            assert_memory_equal(out.thumb, tj, tn);
        } else {
            assert_null(out.thumb);
        }
        assert_true(held > 0);
        ims_free(out.thumb);
    } else {
        assert_null(out.thumb);
        assert_int_equal(held, 0);
    }

    /* and through the public call, under both policies */
    for (int pol = 0; pol < 2; pol++) {
        o.decode = pol ? IMAGE_DECODE_BOUNDED : IMAGE_DECODE_EXACT;
        memset(&out, 0, sizeof(out));
        memset(got2, 0x5a, nrgb);
        assert_int_equal(image_prepare_for_ingest(p, n, &o, got2, &out, &err), IMS_OK);
        assert_memory_equal(got2, want, nrgb);
        assert_int_equal(out.format, IMAGE_FORMAT_PNG);
        assert_int_equal(out.width, w);
        assert_int_equal(out.height, h);
        if (thumb > 0) {
            assert_int_equal(out.thumb_len, tn);
            assert_memory_equal(out.thumb, tj, tn);
        }
        ims_free(out.thumb);
    }
    ims_free(tj);
    free(want);
    free(got);
    free(got2);
    return held;
}

static void test_types_and_sizes(void **state)
{
    (void)state;
    static const struct {
        int ctype, depth;
    } kinds[] = {
        {PNG_COLOR_TYPE_RGB, 8},        {PNG_COLOR_TYPE_RGB_ALPHA, 8},
        {PNG_COLOR_TYPE_GRAY, 8},       {PNG_COLOR_TYPE_GRAY, 1},
        {PNG_COLOR_TYPE_GRAY, 2},       {PNG_COLOR_TYPE_GRAY, 4},
        {PNG_COLOR_TYPE_GRAY, 16},      {PNG_COLOR_TYPE_GRAY_ALPHA, 8},
        {PNG_COLOR_TYPE_GRAY_ALPHA, 16}, {PNG_COLOR_TYPE_RGB, 16},
        {PNG_COLOR_TYPE_RGB_ALPHA, 16}, {PNG_COLOR_TYPE_PALETTE, 8},
        {PNG_COLOR_TYPE_PALETTE, 4},    {PNG_COLOR_TYPE_PALETTE, 1},
    };
    /* odd sizes both ways, one side equal to the CLIP size (one pass
     * skipped), exactly the CLIP size (a plain copy), a thin strip */
    static const int sizes[][2] = {{301, 203}, {203, 517}, {224, 391}, {224, 224}, {999, 37}};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            int w = sizes[s][0], h = sizes[s][1];
            size_t n = 0;
            uint8_t *p = make_png(w, h, kinds[k].ctype, kinds[k].depth, 0, &n);
            check_same(p, n, w, h, 224, 128, 1);
            check_same(p, n, w, h, 64, 0, 1); /* no thumbnail */
            free(p);
        }
}

static void test_large(void **state)
{
    (void)state;
    int w = 3000, h = 2000;
    size_t n = 0;
    uint8_t *p = make_png(w, h, PNG_COLOR_TYPE_RGB, 8, 0, &n);
    size_t held = check_same(p, n, w, h, 224, 256, 1);
    /* the rows reduced to 224 and 256 wide, not the 18 MB image */
    size_t whole = (size_t)w * h * 3;
    printf("3000x2000 RGB: streamed decode holds %zu bytes (whole image %zu)\n", held, whole);
    assert_true(held < whole / 5);
    free(p);
    p = make_png(w, h, PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, &n);
    check_same(p, n, w, h, 224, 256, 1);
    free(p);
}

static void test_whole_decode_cases(void **state)
{
    (void)state;
    size_t n = 0;
    /* interlaced: the whole decode, same bytes */
    uint8_t *p = make_png(401, 300, PNG_COLOR_TYPE_RGB, 8, 1, &n);
    check_same(p, n, 401, 300, 224, 128, 0);
    free(p);
    /* the thumbnail would be the image itself: the whole decode */
    p = make_png(120, 90, PNG_COLOR_TYPE_RGB, 8, 0, &n);
    check_same(p, n, 120, 90, 224, 128, 0);
    free(p);
}

static void test_truncated_and_budget(void **state)
{
    (void)state;
    size_t n = 0;
    uint8_t *p = make_png(640, 480, PNG_COLOR_TYPE_RGB, 8, 0, &n);
    struct image_prepare_options o = {0};
    o.clip_size = 224;
    o.thumb_side = 128;
    o.thumb_quality = 85;
    uint8_t *rgb = malloc(224 * 224 * 3);
    assert_non_null(rgb);
    struct image_prepared out;
    memset(&out, 0, sizeof(out));
    struct ims_error err = {0};
    enum ims_status st = image_prepare_for_ingest(p, n / 2, &o, rgb, &out, &err);
    assert_int_equal(st, IMS_ERR_CORRUPT);
    assert_non_null(strstr(ims_error_message(&err, st), "truncated PNG"));
    assert_null(out.thumb);
    struct image_decode_budget_stats bs;
    image_decode_budget_stats(&bs);
    assert_int_equal(bs.in_use, 0); /* released on the error path */

    /* a budget smaller than what the stream holds refuses it precisely */
    image_decode_budget_set(4096, 0);
    st = image_prepare_for_ingest(p, n, &o, rgb, &out, &err);
    assert_int_equal(st, IMS_ERR_TOO_LARGE);
    assert_non_null(strstr(ims_error_message(&err, st), "budget"));
    /* ... and one above it (but below the whole image's 900 kB) admits it */
    image_decode_budget_set(768 * 1024, 0);
    st = image_prepare_for_ingest(p, n, &o, rgb, &out, &err);
    assert_int_equal(st, IMS_OK);
    ims_free(out.thumb);
    image_decode_budget_set(0, -1);
    image_decode_budget_stats(&bs);
    assert_int_equal(bs.in_use, 0);
    free(rgb);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types_and_sizes),
        cmocka_unit_test(test_large),
        cmocka_unit_test(test_whole_decode_cases),
        cmocka_unit_test(test_truncated_and_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
