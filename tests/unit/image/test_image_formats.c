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
 * - the format words of the API ("heic", "avif", "tiff", ...) round-trip;
 * - EXIF (exif.c): the same payload (make_heif.py's: orientation 6, Make,
 *   Model, DateTimeOriginal + OffsetTimeOriginal, GPS) read from a PNG eXIf
 *   chunk, a JPEG APP1, a WebP EXIF chunk and a HEIC Exif item (orientation
 *   1 there: libheif owns HEIF orientation); a big-endian block; a TIFF's
 *   Orientation tag; every truncation and many corruptions of the block
 *   without a crash; EXIF dates with and without offsets; image_orient's
 *   eight transforms against their definitions.
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

#include <dirent.h>

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

/* ---- EXIF ------------------------------------------------------------------ */

#define TAKEN_UTC 1715949000 /* 2024-05-17 14:30:00 +02:00 */

static void check_exif_fields(const struct image_exif *x, int orientation)
{
    assert_true(x->found);
    assert_int_equal(x->orientation, orientation);
    assert_string_equal(x->make, "TestCam");
    assert_string_equal(x->model, "Phone 1");
    assert_true(x->has_taken);
    assert_true(x->taken_has_offset);
    assert_int_equal(x->taken, TAKEN_UTC);
    assert_true(x->has_gps);
    assert_true(x->lat > 48.8583 && x->lat < 48.8584);
    assert_true(x->lon > 2.2944 && x->lon < 2.2945);
}

/* The eXIf payload of make_heif.py's quad_exif.png. */
static uint8_t *exif_payload(size_t *n_out, uint8_t **png_out, size_t *n_png)
{
    size_t n = 0;
    uint8_t *png = load_gen("quad_exif.png", &n);
    for (size_t at = 8; at + 12 <= n;) {
        uint32_t len = (uint32_t)png[at] << 24 | (uint32_t)png[at + 1] << 16 |
                       (uint32_t)png[at + 2] << 8 | png[at + 3];
        if (!memcmp(png + at + 4, "eXIf", 4)) {
            uint8_t *p = malloc(len);
            memcpy(p, png + at + 8, len);
            *n_out = len;
            *png_out = png;
            *n_png = n;
            return p;
        }
        at += 12 + len;
    }
    fail_msg("quad_exif.png has no eXIf chunk");
    return NULL;
}

static void test_exif_containers(void **state)
{
    (void)state;
    struct ims_error err = {0};
    struct image_exif x;
    size_t np = 0, npng = 0;
    uint8_t *png = NULL;
    uint8_t *payload = exif_payload(&np, &png, &npng);

    assert_int_equal(image_exif_read(png, npng, &x, &err), IMS_OK);
    assert_int_equal(x.format, IMAGE_FORMAT_PNG);
    check_exif_fields(&x, 6);

    /* JPEG: our own thumbnail encoder's output with an APP1 spliced after SOI */
    struct image *img = NULL;
    assert_int_equal(image_decode(png, npng, NULL, &img, &err), IMS_OK);
    uint8_t *jpg = NULL;
    size_t jn = 0;
    assert_int_equal(image_thumbnail_jpeg(img, 64, 90, &jpg, &jn, NULL, NULL, &err), IMS_OK);
    image_free(img);
    size_t an = 2 + 2 + 6 + np;
    uint8_t *j2 = malloc(jn + an);
    memcpy(j2, jpg, 2);
    j2[2] = 0xFF, j2[3] = 0xE1, j2[4] = (uint8_t)((an - 2) >> 8), j2[5] = (uint8_t)(an - 2);
    memcpy(j2 + 6, "Exif\0\0", 6);
    memcpy(j2 + 12, payload, np);
    memcpy(j2 + 2 + an, jpg + 2, jn - 2);
    assert_int_equal(image_exif_read(j2, jn + an, &x, &err), IMS_OK);
    check_exif_fields(&x, 6);
    /* and it still decodes as a JPEG */
    img = NULL;
    assert_int_equal(image_decode(j2, jn + an, NULL, &img, &err), IMS_OK);
    image_free(img);
    /* a JPEG without APP1 has no EXIF */
    assert_int_equal(image_exif_read(jpg, jn, &x, &err), IMS_OK);
    assert_false(x.found);
    assert_int_equal(x.orientation, 1);
    assert_false(x.has_taken);

    /* WebP: VP8X (EXIF flag) + the lossy seed's VP8 chunk + EXIF chunk */
    char path[4096];
    const char *src = getenv("IMS_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/image/seed_lossy.webp",
             src && *src ? src : IMS_SOURCE_DIR);
    char *wsrc = NULL;
    size_t wn = 0;
    assert_int_equal(ims_file_read(path, 1 << 20, &wsrc, &wn, &err), IMS_OK);
    assert_memory_equal(wsrc + 12, "VP8 ", 4);
    size_t vp8 = wn - 12, pad = np & 1;
    size_t total = 12 + 18 + vp8 + 8 + np + pad;
    uint8_t *w = calloc(1, total);
    memcpy(w, "RIFF", 4);
    uint32_t riff = (uint32_t)(total - 8);
    memcpy(w + 4, &riff, 4); /* little-endian host */
    memcpy(w + 8, "WEBPVP8X", 8);
    w[16] = 10, w[20] = 0x08;
    w[24] = 12 - 1, w[27] = 9 - 1; /* canvas 12x9 */
    memcpy(w + 30, wsrc + 12, vp8);
    memcpy(w + 30 + vp8, "EXIF", 4);
    uint32_t el = (uint32_t)np;
    memcpy(w + 34 + vp8, &el, 4);
    memcpy(w + 38 + vp8, payload, np);
    assert_int_equal(image_exif_read(w, total, &x, &err), IMS_OK);
    check_exif_fields(&x, 6);
    img = NULL;
    if (image_decode(w, total, NULL, &img, &err) != IMS_OK)
        fail_msg("VP8X WebP: %s", err.message);
    assert_int_equal(img->width, 12);
    image_free(img);

    /* HEIC: heif-enc copied the eXIf chunk into the Exif item */
    size_t hn = 0;
    uint8_t *heic = load_gen("quad_exif.heic", &hn);
    assert_int_equal(image_exif_read(heic, hn, &x, &err), IMS_OK);
    assert_int_equal(x.format, IMAGE_FORMAT_HEIF);
    check_exif_fields(&x, 1);
    /* a HEIC without Exif */
    ims_free(heic);
    heic = load_gen("quad.heic", &hn);
    assert_int_equal(image_exif_read(heic, hn, &x, &err), IMS_OK);
    assert_false(x.found);

    /* not an image */
    assert_int_equal(image_exif_read("hello", 5, &x, &err), IMS_ERR_UNSUPPORTED);

    /* every truncation and byte corruption of the block: no crash, sane fields */
    for (size_t cut = 0; cut <= np; cut++) {
        memset(&x, 0, sizeof(x));
        x.orientation = 1;
        image_exif_parse(payload, cut, &x);
        assert_true(x.orientation >= 1 && x.orientation <= 8);
        assert_true(strlen(x.make) < sizeof(x.make));
    }
    uint8_t *bad = malloc(np);
    uint32_t seed = 12345;
    for (int round = 0; round < 4000; round++) {
        memcpy(bad, payload, np);
        for (int k = 0; k < 1 + round % 4; k++) {
            seed = seed * 1103515245u + 12345u;
            bad[(seed >> 8) % np] = (uint8_t)(seed >> 20);
        }
        memset(&x, 0, sizeof(x));
        x.orientation = 1;
        image_exif_parse(bad, np, &x);
        assert_true(x.orientation >= 1 && x.orientation <= 8);
        if (x.has_gps)
            assert_true(x.lat >= -90 && x.lat <= 90 && x.lon >= -180 && x.lon <= 180);
    }
    free(bad);
    free(w);
    ims_free(wsrc);
    ims_free(heic);
    free(j2);
    ims_free(jpg);
    ims_free(png);
    free(payload);
}

static void test_exif_big_endian_and_tiff(void **state)
{
    (void)state;
    /* MM: IFD0 with Orientation 3 and an Exif IFD with DateTimeOriginal, no offset */
    static const uint8_t mm[] = {
        'M', 'M', 0, 42, 0, 0, 0, 8,                     /* header, IFD0 at 8 */
        0, 2,                                            /* 2 entries */
        0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 3, 0, 0,        /* Orientation SHORT 3 */
        0x87, 0x69, 0, 4, 0, 0, 0, 1, 0, 0, 0, 38,       /* Exif IFD at 38 */
        0, 0, 0, 0,                                      /* no next IFD */
        0, 1,                                            /* Exif IFD: 1 entry */
        0x90, 0x03, 0, 2, 0, 0, 0, 20, 0, 0, 0, 56,      /* DTO ASCII[20] at 56 */
        0, 0, 0, 0,
        '2', '0', '0', '0', ':', '0', '2', ':', '2', '9', ' ', '2', '3', ':', '5', '9',
        ':', '5', '9', 0};
    struct image_exif x;
    memset(&x, 0, sizeof(x));
    x.orientation = 1;
    image_exif_parse(mm, sizeof(mm), &x);
    assert_true(x.found);
    assert_int_equal(x.orientation, 3);
    assert_true(x.has_taken);
    assert_false(x.taken_has_offset);
    assert_int_equal(x.taken, 951868799); /* 2000-02-29 23:59:59 UTC */
    assert_false(x.has_gps);

    /* a TIFF file's own IFD0 Orientation */
    const struct tiff_spec s = {5, 3, 3, 8, PHOTOMETRIC_RGB, 0, COMPRESSION_NONE, 0,
                                ORIENTATION_LEFTBOT, "w"};
    size_t n = 0;
    uint8_t *t = write_tiff(&s, &n);
    struct ims_error err = {0};
    assert_int_equal(image_exif_read(t, n, &x, &err), IMS_OK);
    assert_int_equal(x.format, IMAGE_FORMAT_TIFF);
    assert_int_equal(x.orientation, 8);
    ims_free(t);
}

static void test_exif_time(void **state)
{
    (void)state;
    int64_t t = 0;
    assert_int_equal(image_exif_parse_time("1970:01:01 00:00:00", NULL, &t), 0);
    assert_int_equal(t, 0);
    assert_int_equal(image_exif_parse_time("2024:05:17 14:30:00", "+02:00", &t), 0);
    assert_int_equal(t, TAKEN_UTC);
    assert_int_equal(image_exif_parse_time("2024:05:17 07:00:00", "-05:30", &t), 0);
    assert_int_equal(t, TAKEN_UTC);
    assert_int_equal(image_exif_parse_time("2024-05-17T12:30:00", NULL, &t), 0);
    assert_int_equal(t, TAKEN_UTC);
    assert_int_equal(image_exif_parse_time("1969:12:31 23:59:59", NULL, &t), 0);
    assert_int_equal(t, -1);
    t = 42;
    assert_int_equal(image_exif_parse_time("0000:00:00 00:00:00", NULL, &t), -1);
    assert_int_equal(image_exif_parse_time("2023:02:29 10:00:00", NULL, &t), -1);
    assert_int_equal(image_exif_parse_time("2024:13:01 10:00:00", NULL, &t), -1);
    assert_int_equal(image_exif_parse_time("2024:01:01 24:00:00", NULL, &t), -1);
    assert_int_equal(image_exif_parse_time("    :  :     :  :  ", NULL, &t), -1);
    assert_int_equal(image_exif_parse_time("2024:01:01", NULL, &t), -1);
    assert_int_equal(t, 42); /* untouched on failure */
    /* a malformed offset is ignored (read as UTC) */
    assert_int_equal(image_exif_parse_time("2024:05:17 12:30:00", "2 hours", &t), 0);
    assert_int_equal(t, TAKEN_UTC);
}

static void test_orient(void **state)
{
    (void)state;
    /* 3x2 RGB, pixel (x, y) = (x, y, 7) */
    struct image *img = NULL;
    struct ims_error err = {0};
    assert_int_equal(image_new(3, 2, IMAGE_MODE_RGB, &img, &err), IMS_OK);
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++) {
            uint8_t *p = img->pixels + (size_t)y * img->stride + 3 * (size_t)x;
            p[0] = (uint8_t)x, p[1] = (uint8_t)y, p[2] = 7;
        }
    /* expected stored (x, y) at each output position, row-major, per orientation */
    static const int want[9][6][2] = {
        {{0}},
        {{0, 0}, {1, 0}, {2, 0}, {0, 1}, {1, 1}, {2, 1}}, /* 1 */
        {{2, 0}, {1, 0}, {0, 0}, {2, 1}, {1, 1}, {0, 1}}, /* 2 mirror */
        {{2, 1}, {1, 1}, {0, 1}, {2, 0}, {1, 0}, {0, 0}}, /* 3 rotate 180 */
        {{0, 1}, {1, 1}, {2, 1}, {0, 0}, {1, 0}, {2, 0}}, /* 4 flip */
        {{0, 0}, {0, 1}, {1, 0}, {1, 1}, {2, 0}, {2, 1}}, /* 5 transpose: 2x3 */
        {{0, 1}, {0, 0}, {1, 1}, {1, 0}, {2, 1}, {2, 0}}, /* 6 rotate 90 cw */
        {{2, 1}, {2, 0}, {1, 1}, {1, 0}, {0, 1}, {0, 0}}, /* 7 transverse */
        {{2, 0}, {2, 1}, {1, 0}, {1, 1}, {0, 0}, {0, 1}}, /* 8 rotate 90 ccw */
    };
    for (int o = 1; o <= 8; o++) {
        struct image *r = NULL;
        assert_int_equal(image_orient(img, o, &r, &err), IMS_OK);
        int ow = o >= 5 ? 2 : 3, oh = o >= 5 ? 3 : 2;
        assert_int_equal(r->width, ow);
        assert_int_equal(r->height, oh);
        for (int i = 0; i < 6; i++) {
            const uint8_t *p = r->pixels + (size_t)(i / ow) * r->stride + 3 * (size_t)(i % ow);
            if (p[0] != want[o][i][0] || p[1] != want[o][i][1] || p[2] != 7)
                fail_msg("orientation %d output %d: (%d,%d), expected (%d,%d)", o, i, p[0], p[1],
                         want[o][i][0], want[o][i][1]);
        }
        image_free(r);
    }
    struct image *r = NULL;
    assert_int_equal(image_orient(img, 9, &r, &err), IMS_ERR_INVALID);
    assert_int_equal(image_orient(img, 0, &r, &err), IMS_ERR_INVALID);
    assert_null(r);
    image_free(img);
}

/* The CLIP goldens carry no EXIF orientation, so applying orientation by
 * default leaves the reference pipeline's bytes on them unchanged. */
static void test_goldens_upright(void **state)
{
    (void)state;
    const char *src = getenv("IMS_SOURCE_DIR");
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/tests/golden/clip/images", src && *src ? src : IMS_SOURCE_DIR);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n_images = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || (l > 3 && !strcmp(e->d_name + l - 3, ".u8")) ||
            (l > 5 && !strcmp(e->d_name + l - 5, ".json")))
            continue;
        char path[8192];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        char *data = NULL;
        size_t n = 0;
        struct ims_error err = {0};
        assert_int_equal(ims_file_read(path, 64 << 20, &data, &n, &err), IMS_OK);
        struct image_exif x;
        assert_int_equal(image_exif_read(data, n, &x, &err), IMS_OK);
        if (x.orientation != 1)
            fail_msg("golden %s has EXIF orientation %d", e->d_name, x.orientation);
        ims_free(data);
        n_images++;
    }
    closedir(d);
    assert_true(n_images >= 10);
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
        cmocka_unit_test(test_exif_containers), cmocka_unit_test(test_exif_big_endian_and_tiff),
        cmocka_unit_test(test_exif_time),       cmocka_unit_test(test_orient),
        cmocka_unit_test(test_goldens_upright),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
