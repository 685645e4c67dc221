/* SPDX-License-Identifier: MIT */
/*
 * decode_tiff.c: TIFF (scans, camera and export files) through libtiff.
 *
 * The file is read from memory through TIFFClientOpenExt's callbacks, with
 * per-call error and warning handlers (the messages land in our error, never
 * on stderr, and no global handler is touched, so decoders on several
 * threads do not interfere) and libtiff's single-allocation cap set from the
 * pixel budget, so a strip or tile that declares gigabytes is refused inside
 * libtiff. The first directory (page) is decoded.
 *
 * Pixels go through libtiff's RGBA reader (TIFFRGBAImage), which handles
 * every photometric interpretation, bit depth, planar layout, strip and tile
 * organisation it knows. We ask it for the file's own orientation so that it
 * flips nothing: the raster comes out in stored order, and the Orientation
 * tag is applied by the caller like any other EXIF orientation (exif.c reads
 * it from the same IFD), once and in one place. The RGBA reader premultiplies
 * unassociated alpha; we undo it, as our RGBA is straight alpha. The result
 * is RGBA when the file has an alpha sample, else RGB.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <tiffio.h>

#include "image_int.h"

struct mem {
    const uint8_t *p;
    size_t n, at;
    char msg[256]; /* first error libtiff reported */
};

static tmsize_t mem_read(thandle_t h, void *buf, tmsize_t size)
{
    struct mem *m = h;
    if (size <= 0 || m->at >= m->n)
        return 0;
    size_t k = m->n - m->at < (size_t)size ? m->n - m->at : (size_t)size;
    memcpy(buf, m->p + m->at, k);
    m->at += k;
    return (tmsize_t)k;
}

static tmsize_t mem_write(thandle_t h, void *buf, tmsize_t size)
{
    (void)h, (void)buf, (void)size;
    return -1;
}

static toff_t mem_seek(thandle_t h, toff_t off, int whence)
{
    struct mem *m = h;
    uint64_t base = whence == SEEK_CUR ? m->at : whence == SEEK_END ? m->n : 0;
    if (whence != SEEK_SET && whence != SEEK_CUR && whence != SEEK_END)
        return (toff_t)-1;
    /* toff_t is unsigned: a negative relative offset wraps, which is what we want */
    uint64_t to = base + (uint64_t)off;
    if (to > m->n)
        return (toff_t)-1;
    m->at = (size_t)to;
    return to;
}

static int mem_close(thandle_t h)
{
    (void)h;
    return 0;
}

static toff_t mem_size(thandle_t h)
{
    return ((struct mem *)h)->n;
}

static int mem_map(thandle_t h, void **base, toff_t *size)
{
    struct mem *m = h;
    *base = (void *)m->p; /* read-only mode: libtiff never writes through it */
    *size = m->n;
    return 1;
}

static void mem_unmap(thandle_t h, void *base, toff_t size)
{
    (void)h, (void)base, (void)size;
}

static int on_error(TIFF *t, void *user, const char *module, const char *fmt, va_list ap)
{
    (void)t, (void)module;
    struct mem *m = user;
    if (!m->msg[0])
        vsnprintf(m->msg, sizeof(m->msg), fmt, ap);
    return 1;
}

static int on_warning(TIFF *t, void *user, const char *module, const char *fmt, va_list ap)
{
    (void)t, (void)user, (void)module, (void)fmt, (void)ap;
    return 1; /* handled: nothing on stderr */
}

static enum ims_status tiff_fail(struct mem *m, enum ims_status st, const char *what,
                                 struct ims_error *err)
{
    return ims_error_set(err, st, "%s TIFF: %s%s%s", st == IMS_ERR_UNSUPPORTED ? "unsupported" : "corrupt",
                         what, m->msg[0] ? ": " : "", m->msg);
}

enum ims_status image__decode_tiff(const uint8_t *p, size_t n, const struct image_limits *lim,
                                   struct image_info *info, struct image **out,
                                   struct ims_error *err)
{
    struct mem m = {.p = p, .n = n};
    TIFF *t = NULL;
    struct image *im = NULL;
    uint32_t *raster = NULL;
    TIFFRGBAImage rgba;
    int rgba_open = 0;
    enum ims_status st = IMS_OK;
    TIFFOpenOptions *opt = TIFFOpenOptionsAlloc();
    if (!opt)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for TIFF options");
    /* the largest legitimate single buffer is one RGBA raster of the budget */
    uint64_t cap = lim->max_pixels * 4 + (1u << 20);
    TIFFOpenOptionsSetMaxSingleMemAlloc(opt, (tmsize_t)(cap > (uint64_t)INT64_MAX / 2 ? INT64_MAX / 2 : cap));
    TIFFOpenOptionsSetErrorHandlerExtR(opt, on_error, &m);
    TIFFOpenOptionsSetWarningHandlerExtR(opt, on_warning, &m);
    /* read-only: strips are read straight from our buffer through mem_map */
    t = TIFFClientOpenExt("tiff", "r", &m, mem_read, mem_write, mem_seek, mem_close, mem_size,
                          mem_map, mem_unmap, opt);
    TIFFOpenOptionsFree(opt);
    if (!t)
        return tiff_fail(&m, IMS_ERR_CORRUPT, "unreadable header", err);

    uint32_t w = 0, h = 0;
    if (!TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w) || !TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h)) {
        st = tiff_fail(&m, IMS_ERR_CORRUPT, "no image size", err);
        goto out;
    }
    if ((st = image__check_dims(w, h, lim, "TIFF", err)) != IMS_OK)
        goto out;
    /* the reader decides whether there is alpha (an RGB file with a fourth
     * sample and no ExtraSamples tag counts), so ask it in both paths */
    char emsg[1024] = "";
    if (!TIFFRGBAImageOK(t, emsg) || !TIFFRGBAImageBegin(&rgba, t, 0, emsg)) {
        snprintf(m.msg, sizeof(m.msg), "%s", emsg);
        st = tiff_fail(&m, IMS_ERR_UNSUPPORTED, "variant not readable", err);
        goto out;
    }
    rgba_open = 1;
    int alpha = rgba.alpha != 0;
    enum image_mode mode = alpha ? IMAGE_MODE_RGBA : IMAGE_MODE_RGB;
    info->width = (int)w;
    info->height = (int)h;
    info->mode = mode;
    if (!out)
        goto out;
    rgba.req_orientation = rgba.orientation; /* stored order, see the top comment */
    raster = ims_malloc((size_t)w * h * sizeof(uint32_t));
    if (!raster) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for a %ux%u TIFF", w, h);
        goto out;
    }
    if (!TIFFRGBAImageGet(&rgba, raster, w, h)) {
        st = tiff_fail(&m, IMS_ERR_CORRUPT, "pixel data unreadable", err);
        goto out;
    }
    if ((st = image_new((int)w, (int)h, mode, &im, err)) != IMS_OK)
        goto out;
    int un_premultiply = rgba.alpha == EXTRASAMPLE_UNASSALPHA;
    for (uint32_t y = 0; y < h; y++) {
        const uint32_t *s = raster + (size_t)y * w;
        uint8_t *d = im->pixels + (size_t)y * im->stride;
        for (uint32_t x = 0; x < w; x++) {
            uint32_t v = s[x];
            uint8_t r = (uint8_t)TIFFGetR(v), g = (uint8_t)TIFFGetG(v), b = (uint8_t)TIFFGetB(v);
            if (!alpha) {
                d[0] = r, d[1] = g, d[2] = b;
                d += 3;
                continue;
            }
            unsigned a = TIFFGetA(v);
            if (un_premultiply) {
                unsigned c[3] = {r, g, b};
                for (int k = 0; k < 3; k++) {
                    unsigned u = a ? (c[k] * 255u + a / 2) / a : 0;
                    c[k] = u > 255 ? 255 : u;
                }
                r = (uint8_t)c[0], g = (uint8_t)c[1], b = (uint8_t)c[2];
            }
            d[0] = r, d[1] = g, d[2] = b, d[3] = (uint8_t)a;
            d += 4;
        }
    }
    *out = im;
    im = NULL;
out:
    if (rgba_open)
        TIFFRGBAImageEnd(&rgba);
    ims_free(raster);
    image_free(im);
    TIFFClose(t);
    return st;
}
