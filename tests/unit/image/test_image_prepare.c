/* SPDX-License-Identifier: MIT */
/*
 * test_image_prepare.c: image_prepare_for_ingest (issue 11 item 1). The
 * bounded policy must stay within IMAGE_PREPARE_MIN_PSNR_DB of the exact
 * CLIP input on large generated photos (baseline and progressive), actually
 * decode them scaled, give a thumbnail of the right size, and reproduce the
 * exact bytes when the policy is exact, for formats it does not scale, and
 * for JPEGs too small to scale. Bad input fails with a precise error.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <webp/encode.h>
#include <webp/types.h>

#include "imgsearch/image.h"
#include "image_test_jpeg.h"

static uint64_t rs = 12345;
static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 32);
}

/* Gradient, hard-edged rectangles, a texture of a few pixels per cycle and
 * noise: the content a downscale can get wrong. */
static uint8_t *gen_rgb(int w, int h)
{
    uint8_t *rgb = malloc((size_t)w * (size_t)h * 3);
    assert_non_null(rgb);
    int rx0 = w / 5, rx1 = w / 2, ry0 = h / 4, ry1 = (h * 2) / 3;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
            uint32_t n = rnd();
            double tex = 20 * sin(6.2831853 * (x + 0.5 * y) / 7.0);
            int in = x >= rx0 && x < rx1 && y >= ry0 && y < ry1;
            for (int c = 0; c < 3; c++) {
                double v = 60 + 120.0 * (x + c * y) / (w + h) + tex + (in ? 50 : 0) +
                           (double)((n >> (8 * c)) & 15) - 7.5;
                p[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    return rgb;
}

static unsigned char *make_jpeg(int w, int h, int progressive, unsigned long *n)
{
    uint8_t *rgb = gen_rgb(w, h);
    size_t len = 0;
    unsigned char *jpg = itj_encode(rgb, w, h, 3, 90, progressive, &len);
    free(rgb);
    *n = len;
    return jpg;
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

static void exact_path(const void *bytes, size_t n, uint8_t *rgb)
{
    struct ims_error err = {0};
    struct image *img = NULL;
    assert_int_equal(image_decode(bytes, n, NULL, &img, &err), IMS_OK);
    assert_int_equal(image_clip_preprocess(img, 224, rgb, &err), IMS_OK);
    image_free(img);
}

static void check_thumb(const struct image_prepared *p, int want_w, int want_h)
{
    assert_non_null(p->thumb);
    struct ims_error err = {0};
    struct image *t = NULL;
    assert_int_equal(image_decode(p->thumb, p->thumb_len, NULL, &t, &err), IMS_OK);
    assert_int_equal(t->width, want_w);
    assert_int_equal(t->height, want_h);
    image_free(t);
}

static void test_bounded_large_jpegs(void **state)
{
    (void)state;
    static const struct {
        int w, h, progressive, dw, dh;
    } cases[] = {
        {2400, 1800, 0, 600, 450},  /* scale 2/8: shorter side 450 >= 2 x 224 */
        {1800, 2400, 1, 450, 600},  /* progressive, portrait */
        {2000, 1500, 0, 750, 563},  /* 3/8: 2/8 would leave the shorter side at 375 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned long n = 0;
        unsigned char *jpg = make_jpeg(cases[i].w, cases[i].h, cases[i].progressive, &n);
        uint8_t exact[224 * 224 * 3], bounded[224 * 224 * 3];
        exact_path(jpg, n, exact);
        struct image_prepare_options o = {NULL, 224, 256, 80, IMAGE_DECODE_BOUNDED, 0, 0};
        struct image_prepared p;
        struct ims_error err = {0};
        assert_int_equal(image_prepare_for_ingest(jpg, n, &o, bounded, &p, &err), IMS_OK);
        assert_int_equal(p.format, IMAGE_FORMAT_JPEG);
        assert_int_equal(p.width, cases[i].w);
        assert_int_equal(p.height, cases[i].h);
        assert_int_equal(p.decoded_width, cases[i].dw);
        assert_int_equal(p.decoded_height, cases[i].dh);
        double q = psnr(exact, bounded, sizeof(exact));
        if (q < IMAGE_PREPARE_MIN_PSNR_DB)
            fail_msg("case %zu: PSNR %.2f dB below the %.1f dB bound", i, q,
                     IMAGE_PREPARE_MIN_PSNR_DB);
        assert_true(memcmp(exact, bounded, sizeof(exact)) != 0); /* it did take the scaled path */
        int tw = cases[i].w >= cases[i].h ? 256 : (int)lround(256.0 * cases[i].w / cases[i].h);
        int th = cases[i].w >= cases[i].h ? (int)lround(256.0 * cases[i].h / cases[i].w) : 256;
        check_thumb(&p, tw, th);
        ims_free(p.thumb);

        /* the exact policy reproduces the exact bytes */
        o.decode = IMAGE_DECODE_EXACT;
        assert_int_equal(image_prepare_for_ingest(jpg, n, &o, bounded, &p, &err), IMS_OK);
        assert_memory_equal(exact, bounded, sizeof(exact));
        assert_int_equal(p.decoded_width, cases[i].w);
        ims_free(p.thumb);
        free(jpg);
    }
}

/* Offset just past the two bytes of the marker that ends the k-th scan's
 * entropy-coded data (k >= 1) of a JPEG, 0 if it has fewer scans: libjpeg
 * reads up to that marker to see the scan end, not into its segment. */
static size_t end_of_scan(const unsigned char *b, size_t n, int k)
{
    size_t i = 2;
    int scans = 0;
    while (i + 4 <= n && b[i] == 0xFF) {
        unsigned m = b[i + 1];
        size_t len = ((size_t)b[i + 2] << 8) | b[i + 3];
        i += 2 + len;
        if (m != 0xDA)
            continue;
        while (i + 1 < n &&
               !(b[i] == 0xFF && b[i + 1] != 0 && (b[i + 1] < 0xD0 || b[i + 1] > 0xD7)))
            i++;
        if (++scans == k)
            return i + 2 <= n ? i + 2 : 0;
    }
    return 0;
}

/* Progressive JPEGs on the bounded path are read only as far as the scaled
 * IDCT needs (decode_jpeg.c, progressive_enough): with libjpeg's own
 * progression, scan 1 (every DC, last bit missing) at scale 1/8, scans 1..6
 * (every coefficient but its last bit) at 2/8 and 3/8. Checked by cutting
 * the file right after those scans: the bounded path still decodes it, the
 * exact path and the bounded path cut one scan earlier report the
 * truncation. Within the PSNR bound of the exact path at every scale. */
static void test_bounded_progressive_early_stop(void **state)
{
    (void)state;
    static const struct {
        int w, h, clip, thumb, dw, dh, scans;
    } cases[] = {
        {1600, 1200, 64, 64, 200, 150, 1},    /* 1/8: 150 >= 2 x 64 */
        {2400, 1800, 224, 256, 600, 450, 6},  /* 2/8 */
        {2000, 1500, 224, 256, 750, 563, 6},  /* 3/8 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned long n = 0;
        unsigned char *jpg = make_jpeg(cases[i].w, cases[i].h, 1, &n);
        const int cs = cases[i].clip;
        uint8_t *exact = malloc((size_t)cs * cs * 3), *got = malloc((size_t)cs * cs * 3);
        assert_non_null(exact);
        assert_non_null(got);
        struct ims_error err = {0};
        struct image *img = NULL;
        assert_int_equal(image_decode(jpg, n, NULL, &img, &err), IMS_OK);
        assert_int_equal(image_clip_preprocess(img, cs, exact, &err), IMS_OK);
        image_free(img);
        struct image_prepare_options o = {NULL, cs, cases[i].thumb, 80, IMAGE_DECODE_BOUNDED,
                                          0, 0};
        struct image_prepared p;
        assert_int_equal(image_prepare_for_ingest(jpg, n, &o, got, &p, &err), IMS_OK);
        assert_int_equal(p.decoded_width, cases[i].dw);
        assert_int_equal(p.decoded_height, cases[i].dh);
        double q = psnr(exact, got, (size_t)cs * cs * 3);
        printf("progressive %dx%d at %dx%d: PSNR %.2f dB\n", cases[i].w, cases[i].h,
               cases[i].dw, cases[i].dh, q);
        if (q < IMAGE_PREPARE_MIN_PSNR_DB)
            fail_msg("case %zu: PSNR %.2f dB below the %.1f dB bound", i, q,
                     IMAGE_PREPARE_MIN_PSNR_DB);
        ims_free(p.thumb);

        /* cut after the last scan needed: same bytes on the bounded path */
        size_t cut = end_of_scan(jpg, n, cases[i].scans);
        assert_true(cut > 0 && cut < n);
        uint8_t *cut_out = malloc((size_t)cs * cs * 3);
        assert_non_null(cut_out);
        assert_int_equal(image_prepare_for_ingest(jpg, cut, &o, cut_out, &p, &err), IMS_OK);
        assert_memory_equal(got, cut_out, (size_t)cs * cs * 3);
        ims_free(p.thumb);
        /* the exact path needs every scan */
        o.decode = IMAGE_DECODE_EXACT;
        enum ims_status st = image_prepare_for_ingest(jpg, cut, &o, cut_out, &p, &err);
        assert_int_equal(st, IMS_ERR_CORRUPT);
        assert_non_null(strstr(ims_error_message(&err, st), "truncated"));
        /* and the bounded path needs the scans it reads */
        if (cases[i].scans > 1) {
            o.decode = IMAGE_DECODE_BOUNDED;
            size_t shorter = end_of_scan(jpg, n, cases[i].scans - 1);
            st = image_prepare_for_ingest(jpg, shorter, &o, cut_out, &p, &err);
            assert_int_equal(st, IMS_ERR_CORRUPT);
            assert_non_null(strstr(ims_error_message(&err, st), "truncated"));
        }
        free(cut_out);
        free(exact);
        free(got);
        free(jpg);
    }
}

/* Rotated photos (issue 11 item 2): the reduced image turned upright, within
 * the bound against the exact path (full decode, image_orient, preprocess)
 * for every orientation; sizes swap for 5..8; the thumbnail is upright;
 * orientation_ignore embeds the image as stored; --decode exact stays
 * byte-exact. The width is not a multiple of the 16-pixel MCU, so flips move
 * the partial blocks to the other side. */
static void test_bounded_rotated(void **state)
{
    (void)state;
    const int w = 2004, h = 1500;
    unsigned long n = 0;
    unsigned char *jpg = make_jpeg(w, h, 0, &n);
    struct ims_error err = {0};
    struct image *img = NULL;
    assert_int_equal(image_decode(jpg, n, NULL, &img, &err), IMS_OK);
    uint8_t exact[224 * 224 * 3], bounded[224 * 224 * 3], unturned[224 * 224 * 3];
    struct image_prepare_options o = {NULL, 224, 256, 80, IMAGE_DECODE_BOUNDED, 1, 0};
    struct image_prepared p;
    assert_int_equal(image_prepare_for_ingest(jpg, n, &o, unturned, &p, &err), IMS_OK);
    ims_free(p.thumb);
    for (int orient = 2; orient <= 8; orient++) {
        struct image *up = NULL;
        assert_int_equal(image_orient(img, orient, &up, &err), IMS_OK);
        assert_int_equal(image_clip_preprocess(up, 224, exact, &err), IMS_OK);
        image_free(up);
        o.decode = IMAGE_DECODE_BOUNDED;
        o.orientation = orient;
        o.orientation_ignore = 0;
        assert_int_equal(image_prepare_for_ingest(jpg, n, &o, bounded, &p, &err), IMS_OK);
        int sw = orient >= 5 ? h : w, sh = orient >= 5 ? w : h;
        assert_int_equal(p.width, sw);
        assert_int_equal(p.height, sh);
        assert_int_equal(p.decoded_width, 752); /* scale 3/8 of the stored 2004x1500 */
        double q = psnr(exact, bounded, sizeof(exact));
        if (q < IMAGE_PREPARE_MIN_PSNR_DB)
            fail_msg("orientation %d: PSNR %.2f dB below the %.1f dB bound", orient, q,
                     IMAGE_PREPARE_MIN_PSNR_DB);
        assert_true(memcmp(exact, bounded, sizeof(exact)) != 0);
        assert_true(memcmp(unturned, bounded, sizeof(exact)) != 0); /* it was turned */
        check_thumb(&p, sw >= sh ? 256 : (int)lround(256.0 * sw / sh),
                    sw >= sh ? (int)lround(256.0 * sh / sw) : 256);
        ims_free(p.thumb);

        o.orientation_ignore = 1; /* the embedding sees the stored image, the rest is upright */
        assert_int_equal(image_prepare_for_ingest(jpg, n, &o, bounded, &p, &err), IMS_OK);
        assert_memory_equal(unturned, bounded, sizeof(bounded));
        assert_int_equal(p.width, sw);
        ims_free(p.thumb);

        o.orientation_ignore = 0;
        o.decode = IMAGE_DECODE_EXACT;
        assert_int_equal(image_prepare_for_ingest(jpg, n, &o, bounded, &p, &err), IMS_OK);
        assert_memory_equal(exact, bounded, sizeof(exact));
        ims_free(p.thumb);
    }
    image_free(img);
    free(jpg);
}

/* WebP (issue 11 item 3): a still, opaque WebP through libwebp's rescaler
 * to 2x the needed sizes, within the bound of the exact path; one with alpha
 * keeps the exact decode; --decode exact stays byte-exact. */
static void test_bounded_webp(void **state)
{
    (void)state;
    const int w = 2400, h = 1800;
    uint8_t *rgb = gen_rgb(w, h);
    uint8_t *webp = NULL;
    size_t n = WebPEncodeRGB(rgb, w, h, w * 3, 90, &webp);
    assert_true(n > 0);
    uint8_t exact[224 * 224 * 3], bounded[224 * 224 * 3];
    exact_path(webp, n, exact);
    struct image_prepare_options o = {NULL, 224, 256, 80, IMAGE_DECODE_BOUNDED, 0, 0};
    struct image_prepared p;
    struct ims_error err = {0};
    assert_int_equal(image_prepare_for_ingest(webp, n, &o, bounded, &p, &err), IMS_OK);
    assert_int_equal(p.format, IMAGE_FORMAT_WEBP);
    assert_int_equal(p.width, w);
    assert_int_equal(p.height, h);
    assert_int_equal(p.decoded_height, 448); /* 2 x 224 on the shorter side */
    assert_int_equal(p.decoded_width, 598);
    double q = psnr(exact, bounded, sizeof(exact));
    printf("WebP %dx%d through the rescaler: PSNR %.2f dB\n", w, h, q);
    if (q < IMAGE_PREPARE_MIN_PSNR_DB)
        fail_msg("WebP: PSNR %.2f dB below the %.1f dB bound", q, IMAGE_PREPARE_MIN_PSNR_DB);
    assert_true(memcmp(exact, bounded, sizeof(exact)) != 0);
    check_thumb(&p, 256, 192);
    ims_free(p.thumb);
    o.decode = IMAGE_DECODE_EXACT;
    assert_int_equal(image_prepare_for_ingest(webp, n, &o, bounded, &p, &err), IMS_OK);
    assert_memory_equal(exact, bounded, sizeof(exact));
    assert_int_equal(p.decoded_width, w);
    ims_free(p.thumb);
    WebPFree(webp);

    /* with alpha: exact decode whatever the policy */
    uint8_t *rgba = malloc((size_t)w * h * 4);
    assert_non_null(rgba);
    for (size_t i = 0; i < (size_t)w * h; i++) {
        memcpy(rgba + 4 * i, rgb + 3 * i, 3);
        rgba[4 * i + 3] = (uint8_t)(i % 7 == 0 ? 128 : 255);
    }
    n = WebPEncodeRGBA(rgba, w, h, w * 4, 90, &webp);
    assert_true(n > 0);
    exact_path(webp, n, exact);
    o.decode = IMAGE_DECODE_BOUNDED;
    assert_int_equal(image_prepare_for_ingest(webp, n, &o, bounded, &p, &err), IMS_OK);
    assert_int_equal(p.decoded_width, w);
    assert_memory_equal(exact, bounded, sizeof(exact));
    ims_free(p.thumb);
    WebPFree(webp);
    free(rgba);
    free(rgb);
}

static void test_small_and_other_formats_exact(void **state)
{
    (void)state;
    /* 800x600: the best scale (5/8 or more) would not halve it, so no scaling */
    unsigned long n = 0;
    unsigned char *jpg = make_jpeg(800, 600, 0, &n);
    uint8_t exact[224 * 224 * 3], got[224 * 224 * 3];
    exact_path(jpg, n, exact);
    struct image_prepare_options o = {NULL, 224, 256, 80, IMAGE_DECODE_BOUNDED, 0, 0};
    struct image_prepared p;
    struct ims_error err = {0};
    assert_int_equal(image_prepare_for_ingest(jpg, n, &o, got, &p, &err), IMS_OK);
    assert_int_equal(p.decoded_width, 800);
    assert_memory_equal(exact, got, sizeof(exact));
    ims_free(p.thumb);
    free(jpg);

    /* a BMP (no scaled decode): exact bytes, no thumbnail when thumb_side is 0 */
    static uint8_t bmp[54 + 4 * 4 * 3];
    memset(bmp, 0, sizeof(bmp));
    bmp[0] = 'B';
    bmp[1] = 'M';
    bmp[2] = (uint8_t)sizeof(bmp);
    bmp[10] = 54;
    bmp[14] = 40;
    bmp[18] = 4;
    bmp[22] = 4;
    bmp[26] = 1;
    bmp[28] = 24;
    for (size_t i = 54; i < sizeof(bmp); i++)
        bmp[i] = (uint8_t)(i * 37);
    exact_path(bmp, sizeof(bmp), exact);
    o.thumb_side = 0;
    assert_int_equal(image_prepare_for_ingest(bmp, sizeof(bmp), &o, got, &p, &err), IMS_OK);
    assert_int_equal(p.format, IMAGE_FORMAT_BMP);
    assert_null(p.thumb);
    assert_memory_equal(exact, got, sizeof(exact));
}

static void test_bad_input(void **state)
{
    (void)state;
    uint8_t rgb[224 * 224 * 3];
    struct image_prepare_options o = {NULL, 224, 256, 80, IMAGE_DECODE_BOUNDED, 0, 0};
    struct image_prepared p;
    struct ims_error err = {0};
    static const uint8_t junk[] = "\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01 garbage garbage";
    enum ims_status st = image_prepare_for_ingest(junk, sizeof(junk), &o, rgb, &p, &err);
    assert_int_equal(st, IMS_ERR_CORRUPT);
    assert_non_null(strstr(ims_error_message(&err, st), "JPEG"));
    static const char text[] = "just some notes, not a picture at all";
    st = image_prepare_for_ingest(text, sizeof(text), &o, rgb, &p, &err);
    assert_int_equal(st, IMS_ERR_UNSUPPORTED);
    o.clip_size = 0;
    assert_int_equal(image_prepare_for_ingest(junk, sizeof(junk), &o, rgb, &p, &err),
                     IMS_ERR_INVALID);
    /* truncated large JPEG: the scaled decoder reports the truncation */
    unsigned long n = 0;
    unsigned char *jpg = make_jpeg(2400, 1800, 0, &n);
    o.clip_size = 224;
    st = image_prepare_for_ingest(jpg, n / 2, &o, rgb, &p, &err);
    assert_int_equal(st, IMS_ERR_CORRUPT);
    assert_non_null(strstr(ims_error_message(&err, st), "truncated"));
    free(jpg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounded_large_jpegs),
        cmocka_unit_test(test_bounded_progressive_early_stop),
        cmocka_unit_test(test_bounded_rotated),
        cmocka_unit_test(test_bounded_webp),
        cmocka_unit_test(test_small_and_other_formats_exact),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
