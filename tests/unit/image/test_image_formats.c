/* SPDX-License-Identifier: MIT */
/*
 * test_image_formats.c: the formats phones and cameras write (issue 10).
 *
 * - HEIC (x265) and AVIF (aom) files made by heif-enc in the test set-up
 *   (make_heif.py: a four-quadrant pattern of known colours) decode to the
 *   right size and mode and keep each quadrant's colour within a lossy
 *   codec's tolerance; their alpha variants come out RGBA with the alpha
 *   halves; image_info agrees with image_decode;
 * - TIFFs written here with libtiff (RGB strips, tiles, grey, palette,
 *   16-bit, unassociated alpha, LZW, big-endian, an Orientation tag) decode
 *   to the exact pixels, in stored order;
 * - truncated and corrupt files of both kinds fail with precise errors, and
 *   a TIFF or HEIF declaring more pixels than the limit is refused as
 *   too large before any pixel is decoded;
 * - the format words of the API ("heic", "avif", "tiff", ...) round-trip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <tiffio.h>

#include "imgsearch/image.h"

static const uint8_t QUAD[4][3] = {{220, 30, 30}, {30, 200, 40}, {30, 40, 210}, {230, 220, 40}};

static uint8_t *load_gen(const char *name, size_t *n)
{
    const char *d = getenv("IMS_HEIF_DIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", d && *d ? d : IMS_HEIF_DIR, name);
    char *data = NULL;
    struct ims_error err = {0};
    enum ims_status st = ims_file_read(path, (size_t)16 << 20, &data, n, &err);
    if (st != IMS_OK)
        fail_msg("cannot read %s (made by make_heif.py in the set-up): %s", path,
                 ims_error_message(&err, st));
    return (uint8_t *)data;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

/* Each quadrant's centre pixel within `tol` of its colour. */
static void check_quads(const struct image *img, int tol)
{
    int bpp = image_mode_bytes(img->mode);
    for (int q = 0; q < 4; q++) {
        int x = (q & 1) ? img->width * 3 / 4 : img->width / 4;
        int y = (q & 2) ? img->height * 3 / 4 : img->height / 4;
        const uint8_t *p = img->pixels + (size_t)y * img->stride + (size_t)x * (size_t)bpp;
        for (int c = 0; c < 3; c++)
            if (abs(p[c] - QUAD[q][c]) > tol)
                fail_msg("quadrant %d channel %d: %d, expected %d +- %d", q, c, p[c], QUAD[q][c],
                         tol);
    }
}

static void decode_heif_file(const char *name, enum image_format f, int alpha)
{
    size_t n = 0;
    uint8_t *data = load_gen(name, &n);
    struct ims_error err = {0};
    enum image_format sf;
    assert_int_equal(image_sniff(data, n, &sf, &err), IMS_OK);
    assert_int_equal(sf, f);
    struct image_info info;
    assert_int_equal(image_info(data, n, NULL, &info, &err), IMS_OK);
    struct image *img = NULL;
    enum ims_status st = image_decode(data, n, NULL, &img, &err);
    if (st != IMS_OK)
        fail_msg("%s: %s", name, err.message);
    assert_int_equal(img->width, 64);
    assert_int_equal(img->height, 48);
    assert_int_equal(img->format, f);
    assert_int_equal(img->mode, alpha ? IMAGE_MODE_RGBA : IMAGE_MODE_RGB);
    assert_int_equal(info.width, 64);
    assert_int_equal(info.height, 48);
    assert_int_equal(info.mode, img->mode);
    check_quads(img, 24);
    if (alpha) {
        const uint8_t *l = img->pixels + 10 * img->stride + 4 * 8;
        const uint8_t *r = img->pixels + 10 * img->stride + 4 * 56;
        assert_true(l[3] >= 240);
        assert_true(abs(r[3] - 96) <= 12);
    }
    /* a thumbnail of it is fine too */
    uint8_t *jpg = NULL;
    size_t jn = 0;
    assert_int_equal(image_thumbnail_jpeg(img, 32, 85, &jpg, &jn, NULL, NULL, &err), IMS_OK);
    ims_free(jpg);
    image_free(img);

    /* truncated: a precise error, never a crash */
    for (size_t cut = 16; cut < n; cut += n / 7 + 1) {
        img = NULL;
        memset(&err, 0, sizeof(err));
        st = image_decode(data, cut, NULL, &img, &err);
        assert_int_not_equal(st, IMS_OK);
        assert_null(img);
        assert_true(err.message[0] != 0);
    }
    /* limits: one pixel short of the image is refused before decoding */
    struct image_limits lim;
    image_limits_default(&lim);
    lim.max_pixels = 64 * 48 - 1;
    img = NULL;
    assert_int_equal(image_decode(data, n, &lim, &img, &err), IMS_ERR_TOO_LARGE);
    assert_null(img);
    assert_contains(err.message, f == IMAGE_FORMAT_AVIF ? "AVIF" : "HEIF");
    assert_contains(err.message, "64x48");
    ims_free(data);
}

static void test_heic(void **state)
{
    (void)state;
    decode_heif_file("quad.heic", IMAGE_FORMAT_HEIF, 0);
    decode_heif_file("quad_alpha.heic", IMAGE_FORMAT_HEIF, 1);
}

static void test_avif(void **state)
{
    (void)state;
    decode_heif_file("quad.avif", IMAGE_FORMAT_AVIF, 0);
    decode_heif_file("quad_alpha.avif", IMAGE_FORMAT_AVIF, 1);
}

static void test_heif_corrupt(void **state)
{
    (void)state;
    size_t n = 0;
    uint8_t *data = load_gen("quad.heic", &n);
    /* the coded data (at the end of the file, in mdat) overwritten */
    for (size_t i = n - n / 3; i < n; i++)
        data[i] = (uint8_t)(i * 37);
    struct image *img = NULL;
    struct ims_error err = {0};
    enum ims_status st = image_decode(data, n, NULL, &img, &err);
    if (st == IMS_OK) {
        /* HEVC is resilient: garbage may decode to garbage of the right size */
        assert_int_equal(img->width, 64);
        image_free(img);
    } else {
        assert_null(img);
        assert_true(err.message[0] != 0);
    }
    /* an ftyp that says HEIC with nothing after it */
    static const uint8_t bare[] = {0, 0, 0, 0x18, 'f', 't', 'y', 'p', 'h', 'e', 'i', 'c',
                                   0, 0, 0, 0,    'm', 'i', 'f', '1', 'h', 'e', 'i', 'c'};
    assert_int_equal(image_decode(bare, sizeof(bare), NULL, &img, &err), IMS_ERR_CORRUPT);
    assert_contains(err.message, "HEIF");
    ims_free(data);
}

/* ---- TIFF ------------------------------------------------------------------ */

static uint8_t pix(int x, int y, int c)
{
    return (uint8_t)(x * 7 + y * 13 + c * 71);
}

struct tiff_spec {
    int w, h;
    int spp, bps;        /* samples per pixel, bits per sample */
    int photometric;     /* PHOTOMETRIC_* */
    int tiled;           /* 16x16 tiles, else strips of 3 rows */
    int compression;     /* COMPRESSION_* */
    int alpha;           /* last sample is unassociated alpha */
    int orientation;     /* 0 = no tag */
    const char *mode;    /* "w" little endian or "wb" big endian */
};

static uint8_t *write_tiff(const struct tiff_spec *s, size_t *n_out)
{
    char path[] = "/tmp/ims_tiff_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    TIFF *t = TIFFOpen(path, s->mode);
    assert_non_null(t);
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, s->w);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, s->h);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, s->spp);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, s->bps);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, s->photometric);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, s->compression);
    if (s->orientation)
        TIFFSetField(t, TIFFTAG_ORIENTATION, s->orientation);
    if (s->alpha) {
        uint16_t ex = EXTRASAMPLE_UNASSALPHA;
        TIFFSetField(t, TIFFTAG_EXTRASAMPLES, 1, &ex);
    }
    if (s->photometric == PHOTOMETRIC_PALETTE) {
        static uint16_t r[256], g[256], b[256];
        for (int i = 0; i < 256; i++) {
            r[i] = (uint16_t)(i * 257);
            g[i] = (uint16_t)((255 - i) * 257);
            b[i] = (uint16_t)((i * 3 & 255) * 257);
        }
        TIFFSetField(t, TIFFTAG_COLORMAP, r, g, b);
    }
    size_t bpp = (size_t)s->spp * (size_t)s->bps / 8;
    if (s->tiled) {
        TIFFSetField(t, TIFFTAG_TILEWIDTH, 16);
        TIFFSetField(t, TIFFTAG_TILELENGTH, 16);
        uint8_t *tile = calloc(16 * 16, bpp);
        for (int ty = 0; ty < s->h; ty += 16)
            for (int tx = 0; tx < s->w; tx += 16) {
                memset(tile, 0, 16 * 16 * bpp);
                for (int y = 0; y < 16 && ty + y < s->h; y++)
                    for (int x = 0; x < 16 && tx + x < s->w; x++)
                        for (int c = 0; c < s->spp; c++) {
                            uint8_t v = pix(tx + x, ty + y, c);
                            if (s->bps == 8)
                                tile[(y * 16 + x) * bpp + (size_t)c] = v;
                        }
                assert_true(TIFFWriteTile(t, tile, (uint32_t)tx, (uint32_t)ty, 0, 0) > 0);
            }
        free(tile);
    } else {
        TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, 3);
        uint8_t *row = calloc((size_t)s->w, bpp);
        for (int y = 0; y < s->h; y++) {
            for (int x = 0; x < s->w; x++)
                for (int c = 0; c < s->spp; c++) {
                    uint8_t v = pix(x, y, c);
                    if (s->bps == 8) {
                        row[(size_t)x * bpp + (size_t)c] = v;
                    } else { /* 16: v * 257 in host order, libtiff swaps as needed */
                        uint16_t w16 = (uint16_t)(v * 257);
                        memcpy(row + (size_t)x * bpp + 2 * (size_t)c, &w16, 2);
                    }
                }
            assert_true(TIFFWriteScanline(t, row, (uint32_t)y, 0) >= 0);
        }
        free(row);
    }
    TIFFClose(t);
    char *data = NULL;
    struct ims_error err = {0};
    assert_int_equal(ims_file_read(path, (size_t)16 << 20, &data, n_out, &err), IMS_OK);
    unlink(path);
    return (uint8_t *)data;
}

static void check_tiff(const struct tiff_spec *s)
{
    size_t n = 0;
    uint8_t *data = write_tiff(s, &n);
    struct ims_error err = {0};
    struct image *img = NULL;
    enum ims_status st = image_decode(data, n, NULL, &img, &err);
    if (st != IMS_OK)
        fail_msg("TIFF spp %d bps %d: %s", s->spp, s->bps, err.message);
    struct image_info info;
    assert_int_equal(image_info(data, n, NULL, &info, &err), IMS_OK);
    assert_int_equal(info.mode, img->mode);
    assert_int_equal(img->format, IMAGE_FORMAT_TIFF);
    assert_int_equal(img->width, s->w);
    assert_int_equal(img->height, s->h);
    assert_int_equal(img->mode, s->alpha ? IMAGE_MODE_RGBA : IMAGE_MODE_RGB);
    int bpp = image_mode_bytes(img->mode);
    for (int y = 0; y < s->h; y++)
        for (int x = 0; x < s->w; x++) {
            const uint8_t *p = img->pixels + (size_t)y * img->stride + (size_t)x * (size_t)bpp;
            uint8_t e[4];
            if (s->photometric == PHOTOMETRIC_MINISBLACK) {
                e[0] = e[1] = e[2] = pix(x, y, 0);
            } else if (s->photometric == PHOTOMETRIC_PALETTE) {
                uint8_t i = pix(x, y, 0);
                e[0] = i, e[1] = (uint8_t)(255 - i), e[2] = (uint8_t)(i * 3 & 255);
            } else {
                e[0] = pix(x, y, 0), e[1] = pix(x, y, 1), e[2] = pix(x, y, 2);
            }
            e[3] = s->alpha ? pix(x, y, 3) : 255;
            for (int c = 0; c < bpp; c++) {
                int tol = 0;
                if (s->alpha && c < 3) /* premultiplied by libtiff, undone by us */
                    tol = e[3] ? 255 / e[3] + 1 : 255;
                if (abs(p[c] - e[c]) > tol)
                    fail_msg("TIFF spp %d bps %d at (%d,%d) ch %d: %d, expected %d", s->spp,
                             s->bps, x, y, c, p[c], e[c]);
            }
        }
    image_free(img);

    /* truncations: errors with messages, never a crash */
    for (size_t cut = 0; cut < n; cut += n / 9 + 1) {
        img = NULL;
        st = image_decode(data, cut, NULL, &img, &err);
        if (st == IMS_OK) { /* libtiff reads short strips as zeros past the end */
            image_free(img);
            continue;
        }
        assert_null(img);
        assert_true(err.message[0] != 0);
    }
    ims_free(data);
}

static void test_tiff_variants(void **state)
{
    (void)state;
    const struct tiff_spec specs[] = {
        {21, 10, 3, 8, PHOTOMETRIC_RGB, 0, COMPRESSION_NONE, 0, 0, "w"},
        {21, 10, 3, 8, PHOTOMETRIC_RGB, 0, COMPRESSION_LZW, 0, 0, "wb"},
        {37, 20, 3, 8, PHOTOMETRIC_RGB, 1, COMPRESSION_ADOBE_DEFLATE, 0, 0, "w"},
        {21, 10, 1, 8, PHOTOMETRIC_MINISBLACK, 0, COMPRESSION_NONE, 0, 0, "w"},
        {21, 10, 1, 8, PHOTOMETRIC_PALETTE, 0, COMPRESSION_PACKBITS, 0, 0, "w"},
        {21, 10, 3, 16, PHOTOMETRIC_RGB, 0, COMPRESSION_NONE, 0, 0, "wb"},
        {21, 10, 4, 8, PHOTOMETRIC_RGB, 0, COMPRESSION_NONE, 1, 0, "w"},
        /* orientation 6 (rotate on display): pixels still in stored order */
        {21, 10, 3, 8, PHOTOMETRIC_RGB, 0, COMPRESSION_NONE, 0, ORIENTATION_RIGHTTOP, "w"},
        {21, 10, 3, 8, PHOTOMETRIC_RGB, 0, COMPRESSION_NONE, 0, ORIENTATION_BOTRIGHT, "w"},
    };
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++)
        check_tiff(&specs[i]);
}

/* A little-endian TIFF header + one IFD declaring w x h 8-bit RGB. */
static size_t tiff_header(uint8_t *b, uint32_t w, uint32_t h)
{
    memset(b, 0, 256);
    memcpy(b, "II*\0\x08\0\0\0", 8);
    uint16_t tags[][2] = {{256, 4}, {257, 4}, {258, 3}, {259, 3}, {262, 3},
                          {273, 4}, {277, 3}, {278, 4}, {279, 4}};
    uint32_t vals[] = {w, h, 8, 1, 2, 200, 3, h, 16};
    b[8] = 9;
    size_t at = 10;
    for (int i = 0; i < 9; i++, at += 12) {
        b[at] = (uint8_t)tags[i][0], b[at + 1] = (uint8_t)(tags[i][0] >> 8);
        b[at + 2] = (uint8_t)tags[i][1];
        b[at + 4] = 1;
        memcpy(b + at + 8, &vals[i], 4); /* little-endian host */
    }
    return 256;
}

static void test_tiff_bad(void **state)
{
    (void)state;
    uint8_t b[256];
    struct ims_error err = {0};
    struct image *img = NULL;
    size_t n = tiff_header(b, 100000, 100000);
    assert_int_equal(image_decode(b, n, NULL, &img, &err), IMS_ERR_TOO_LARGE);
    assert_contains(err.message, "TIFF is 100000x100000");
    struct image_info info;
    assert_int_equal(image_info(b, n, NULL, &info, &err), IMS_ERR_TOO_LARGE);
    n = tiff_header(b, 0, 10);
    assert_int_not_equal(image_decode(b, n, NULL, &img, &err), IMS_OK);
    assert_true(err.message[0] != 0);
    /* an IFD offset past the end */
    static const uint8_t lost[] = {'I', 'I', '*', 0, 0xff, 0xff, 0, 0};
    assert_int_equal(image_decode(lost, sizeof(lost), NULL, &img, &err), IMS_ERR_CORRUPT);
    assert_contains(err.message, "TIFF");
    /* a small declared size with strips pointing past the end reads as an error or zeros */
    n = tiff_header(b, 8, 4);
    enum ims_status st = image_decode(b, n, NULL, &img, &err);
    if (st == IMS_OK) {
        assert_int_equal(img->width, 8);
        image_free(img);
    } else {
        assert_true(err.message[0] != 0);
    }
}

/* The fuzz seeds of make_seeds.py (hand-assembled IFDs, both byte orders). */
static void test_tiff_seeds(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int spp;
        enum image_mode mode;
    } seeds[] = {{"seed_rgb8.tif", 3, IMAGE_MODE_RGB},
                 {"seed_rgba16_be.tif", 4, IMAGE_MODE_RGBA},
                 {"seed_grey16.tif", 1, IMAGE_MODE_RGB}};
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        char path[4096];
        const char *src = getenv("IMS_SOURCE_DIR");
        snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/image/%s", src && *src ? src : IMS_SOURCE_DIR,
                 seeds[i].name);
        char *data = NULL;
        size_t n = 0;
        struct ims_error err = {0};
        assert_int_equal(ims_file_read(path, 1 << 20, &data, &n, &err), IMS_OK);
        struct image *img = NULL;
        if (image_decode(data, n, NULL, &img, &err) != IMS_OK)
            fail_msg("%s: %s", seeds[i].name, err.message);
        assert_int_equal(img->width, 7);
        assert_int_equal(img->height, 5);
        assert_int_equal(img->mode, seeds[i].mode);
        int bpp = image_mode_bytes(img->mode);
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 7; x++)
                for (int c = 0; c < 3; c++) {
                    int sc = seeds[i].spp == 1 ? 0 : c;
                    int e = ((x * 9173 + (y + 7 * sc) * 20011) & 0xFFFF) >> 8;
                    int a = ((x * 9173 + (y + 21) * 20011) & 0xFFFF) >> 8;
                    int got = img->pixels[(size_t)y * img->stride + (size_t)(x * bpp + c)];
                    int tol = seeds[i].spp == 4 ? (a ? 255 / a + 1 : 255) : 0;
                    if (abs(got - e) > tol)
                        fail_msg("%s (%d,%d) ch %d: %d, expected %d", seeds[i].name, x, y, c, got,
                                 e);
                }
        image_free(img);
        ims_free(data);
    }
}

static void test_format_words(void **state)
{
    (void)state;
    static const char *words[] = {"jpeg", "png", "webp", "gif", "bmp", "heic", "avif", "tiff"};
    for (int f = IMAGE_FORMAT_JPEG; f <= IMAGE_FORMAT_TIFF; f++) {
        assert_string_equal(image_format_word((enum image_format)f), words[f]);
        enum image_format back;
        assert_int_equal(image_format_parse(words[f], &back), 0);
        assert_int_equal(back, f);
    }
    enum image_format g;
    assert_int_equal(image_format_parse("JPG", &g), 0);
    assert_int_equal(g, IMAGE_FORMAT_JPEG);
    assert_int_equal(image_format_parse("HEIF", &g), 0);
    assert_int_equal(g, IMAGE_FORMAT_HEIF);
    assert_int_equal(image_format_parse("tif", &g), 0);
    assert_int_equal(g, IMAGE_FORMAT_TIFF);
    assert_int_equal(image_format_parse("svg", &g), -1);
    assert_int_equal(image_format_parse("", &g), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heic),          cmocka_unit_test(test_avif),
        cmocka_unit_test(test_heif_corrupt),  cmocka_unit_test(test_tiff_variants),
        cmocka_unit_test(test_tiff_bad),      cmocka_unit_test(test_format_words),
        cmocka_unit_test(test_tiff_seeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
