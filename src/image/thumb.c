/* SPDX-License-Identifier: MIT */
/*
 * thumb.c: small JPEG thumbnails for the catalogue and the web page.
 *
 * Pipeline: to RGB (or stay grey for L: a one-channel JPEG is smaller and
 * looks the same), compositing alpha over white so that transparent logos
 * do not turn black; then Pillow's bicubic resampler (with its antialiasing
 * when shrinking) to fit the longer side in max_side, never enlarging; then
 * a baseline JPEG with libjpeg-turbo (4:2:0, optimised Huffman tables).
 *
 * The encoder writes into a growable ims_malloc'd buffer through our own
 * destination manager, so allocation failures are reported like any other
 * and the result is released with ims_free. libjpeg errors longjmp back.
 */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "image_int.h"

/* ---- to RGB / L ---------------------------------------------------------- */

static inline uint8_t over_white(int c, int a)
{
    int t = c * a + 255 * (255 - a) + 127;
    return (uint8_t)(t / 255);
}

int image__thumb_channels(enum image_mode mode)
{
    return (mode == IMAGE_MODE_L || mode == IMAGE_MODE_1 || mode == IMAGE_MODE_LA ||
            mode == IMAGE_MODE_I)
               ? 1
               : 3;
}

void image__thumb_flatten_row(const struct image *img, const uint8_t *s, int n, uint8_t *d)
{
    for (int x = 0; x < n; x++) {
        switch (img->mode) {
        case IMAGE_MODE_1:
        case IMAGE_MODE_L: d[x] = s[x]; break;
        case IMAGE_MODE_LA: d[x] = over_white(s[2 * x], s[2 * x + 1]); break;
        case IMAGE_MODE_I: {
            int32_t v;
            memcpy(&v, s + 4 * x, 4);
            d[x] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : v);
            break;
        }
        case IMAGE_MODE_P: memcpy(d + 3 * x, img->palette + 3 * s[x], 3); break;
        case IMAGE_MODE_RGB: memcpy(d + 3 * x, s + 3 * x, 3); break;
        case IMAGE_MODE_RGBA:
            for (int c = 0; c < 3; c++)
                d[3 * x + c] = over_white(s[4 * x + c], s[4 * x + 3]);
            break;
        case IMAGE_MODE_CMYK: {
            const uint8_t *k = s + 4 * x;
            int nk = 255 - k[3];
            for (int c = 0; c < 3; c++) {
                int t = k[c] * nk + 128;
                d[3 * x + c] = (uint8_t)(nk - (((t >> 8) + t) >> 8));
            }
            break;
        }
        }
    }
}

/* A copy of `img` as RGB (ch 3) or grey (ch 1), (h, w * ch). */
static enum ims_status flatten(const struct image *img, uint8_t **out, int *ch_out,
                               struct ims_error *err)
{
    int ch = image__thumb_channels(img->mode);
    size_t stride = (size_t)img->width * ch;
    uint8_t *buf = ims_malloc(stride * (size_t)img->height);
    if (!buf)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for a thumbnail");
    for (int y = 0; y < img->height; y++)
        image__thumb_flatten_row(img, img->pixels + (size_t)y * img->stride,
                                 img->width, buf + (size_t)y * stride);
    *out = buf;
    *ch_out = ch;
    return IMS_OK;
}

/* ---- JPEG encoding to memory --------------------------------------------- */

struct enc_err {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
};

struct enc_dst {
    struct jpeg_destination_mgr pub;
    uint8_t *buf;
    size_t cap;
    int nomem;
};

static void enc_error_exit(j_common_ptr cinfo)
{
    struct enc_err *e = (struct enc_err *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jb, 1);
}

static void enc_emit(j_common_ptr cinfo, int level)
{
    (void)cinfo;
    (void)level;
}

static void dst_init(j_compress_ptr cinfo)
{
    struct enc_dst *d = (struct enc_dst *)cinfo->dest;
    d->pub.next_output_byte = d->buf;
    d->pub.free_in_buffer = d->cap;
}

static boolean dst_grow(j_compress_ptr cinfo)
{
    struct enc_dst *d = (struct enc_dst *)cinfo->dest;
    size_t ncap = d->cap * 2;
    uint8_t *nb = ims_realloc(d->buf, ncap);
    if (!nb) {
        d->nomem = 1;
        ERREXIT(cinfo, JERR_OUT_OF_MEMORY);
    }
    d->pub.next_output_byte = nb + d->cap; /* libjpeg wants the whole buffer flushed */
    d->pub.free_in_buffer = ncap - d->cap;
    d->buf = nb;
    d->cap = ncap;
    return TRUE;
}

static void dst_term(j_compress_ptr cinfo)
{
    (void)cinfo;
}

enum ims_status image__thumb_encode(const uint8_t *px, int w, int h, int ch, int quality,
                                   uint8_t **jpeg, size_t *n_bytes, struct ims_error *err)
{
    struct jpeg_compress_struct cinfo;
    struct enc_err jerr;
    struct enc_dst dst;
    volatile enum ims_status st = IMS_OK;
    memset(&cinfo, 0, sizeof(cinfo));
    memset(&dst, 0, sizeof(dst));
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = enc_error_exit;
    jerr.pub.emit_message = enc_emit;
    dst.cap = 16384;
    dst.buf = ims_malloc(dst.cap);
    if (!dst.buf)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for a thumbnail");
    if (setjmp(jerr.jb)) {
        st = dst.nomem ? ims_error_set(err, IMS_ERR_NOMEM, "out of memory encoding a thumbnail")
                       : ims_error_set(err, IMS_ERR_INTERNAL, "JPEG encoder: %s", jerr.msg);
        goto out;
    }
    jpeg_create_compress(&cinfo);
    dst.pub.init_destination = dst_init;
    dst.pub.empty_output_buffer = dst_grow;
    dst.pub.term_destination = dst_term;
    cinfo.dest = &dst.pub;
    cinfo.image_width = (JDIMENSION)w;
    cinfo.image_height = (JDIMENSION)h;
    cinfo.input_components = ch;
    cinfo.in_color_space = ch == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    cinfo.optimize_coding = TRUE;
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)cinfo.next_scanline * w * ch);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    *n_bytes = dst.cap - dst.pub.free_in_buffer;
    *jpeg = dst.buf;
    dst.buf = NULL;
out:
    jpeg_destroy_compress(&cinfo);
    ims_free(dst.buf);
    return st;
}

void image__thumb_size(int w, int h, int max_side, int *tw_out, int *th_out)
{
    int tw = w, th = h;
    int longer = IMS_MAX(w, h);
    if (longer > max_side) {
        double s = (double)max_side / longer;
        tw = w >= h ? max_side : (int)(w * s + 0.5);
        th = h > w ? max_side : (int)(h * s + 0.5);
        tw = IMS_MAX(tw, 1);
        th = IMS_MAX(th, 1);
    }
    *tw_out = tw;
    *th_out = th;
}

enum ims_status image_thumbnail_jpeg(const struct image *img, int max_side, int quality,
                                     uint8_t **jpeg, size_t *n_bytes, int *out_w, int *out_h,
                                     struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!img || !img->pixels || img->width <= 0 || img->height <= 0, err,
                        IMS_ERR_INVALID, "no image for a thumbnail");
    IMS_RETURN_ERROR_IF(max_side < 1 || max_side > 65500, err, IMS_ERR_INVALID,
                        "thumbnail size %d is outside 1..65500", max_side);
    IMS_RETURN_ERROR_IF(quality < 1 || quality > 100, err, IMS_ERR_INVALID,
                        "JPEG quality %d is outside 1..100", quality);
    enum ims_status st = IMS_OK;
    uint8_t *flat = NULL, *small = NULL;
    int ch = 3;
    int w = img->width, h = img->height, tw = w, th = h;
    image__thumb_size(w, h, max_side, &tw, &th);
    const uint8_t *px;
    int direct_ch = img->mode == IMAGE_MODE_RGB ? 3 : img->mode == IMAGE_MODE_L ? 1 : 0;
    if (direct_ch && img->stride == (size_t)w * direct_ch) {
        /* already what the encoder takes, rows contiguous: no copy */
        ch = direct_ch;
        px = img->pixels;
    } else {
        if ((st = flatten(img, &flat, &ch, err)) != IMS_OK)
            goto out;
        px = flat;
    }
    if (tw != w || th != h) {
        small = ims_malloc((size_t)tw * th * ch);
        if (!small) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for a thumbnail");
            goto out;
        }
        st = image__resample_u8(px, w, h, (size_t)w * ch, ch, tw, th, 0, 0, tw, th, small,
                                (size_t)tw * ch, err);
        if (st != IMS_OK)
            goto out;
        px = small;
    }
    if ((st = image__thumb_encode(px, tw, th, ch, quality, jpeg, n_bytes, err)) != IMS_OK)
        goto out;
    if (out_w)
        *out_w = tw;
    if (out_h)
        *out_h = th;
out:
    ims_free(flat);
    ims_free(small);
    return st;
}
