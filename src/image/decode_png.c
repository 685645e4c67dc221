/* SPDX-License-Identifier: MIT */
/*
 * decode_png.c: PNG through libpng, into the modes Pillow 9.4's PngImagePlugin
 * produces (its _MODES table), because CLIP resizes in that mode:
 *
 *   grey 1 bit          -> "1" (0/255; resized NEAREST by Pillow)
 *   grey 2/4/8 bit      -> L   (2 and 4 bits scaled by 85 and 17)
 *   grey 16 bit         -> I   (int32 value 0..65535, rawmode I;16B)
 *   grey+alpha 8 bit    -> LA
 *   grey+alpha 16 bit   -> RGBA (rawmode LA;16B: grey's high byte to R, G, B)
 *   RGB / RGBA 8 bit    -> RGB / RGBA
 *   RGB / RGBA 16 bit   -> RGB / RGBA from the high bytes (RGB;16B: libpng's
 *                          png_set_strip_16 truncates the same way)
 *   palette 1..8 bit    -> P, tRNS or not (transparency stays informative)
 *
 * tRNS is never expanded into alpha, gamma/sBIT/iCCP are ignored (Pillow
 * does not apply them either). We stop after the image rows: a missing IEND
 * or a damaged chunk after IDAT does not fail the decode, as in Pillow.
 *
 * libpng allocates through ims_malloc (png_create_read_struct_2), so the
 * allocation-failure tests reach its internals too; its errors longjmp back
 * here with the message, and a short read says "truncated PNG".
 */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <png.h>

#include "image_int.h"

struct pctx {
    const uint8_t *data;
    size_t n, pos;
    int nomem;
    int truncated;
    char msg[256];
};

static png_voidp png_cb_malloc(png_structp png, png_alloc_size_t size)
{
    void *p = ims_malloc(size ? size : 1);
    if (!p) {
        struct pctx *c = png_get_mem_ptr(png);
        if (c)
            c->nomem = 1;
    }
    return p;
}

static void png_cb_free(png_structp png, png_voidp p)
{
    (void)png;
    ims_free(p);
}

static void png_cb_error(png_structp png, png_const_charp msg)
{
    struct pctx *c = png_get_error_ptr(png);
    if (c && !c->msg[0])
        snprintf(c->msg, sizeof(c->msg), "corrupt PNG: %s", msg);
    png_longjmp(png, 1);
}

static void png_cb_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void png_cb_read(png_structp png, png_bytep out, size_t len)
{
    struct pctx *c = png_get_io_ptr(png);
    if (len > c->n - c->pos) {
        c->truncated = 1;
        snprintf(c->msg, sizeof(c->msg), "truncated PNG: data ends at byte %zu", c->n);
        png_error(png, "truncated");
    }
    memcpy(out, c->data + c->pos, len);
    c->pos += len;
}

enum ims_status image__decode_png(const uint8_t *p, size_t n, const struct image_limits *lim,
                                  struct image_info *info, struct image **out,
                                  struct ims_error *err)
{
    struct pctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.data = p;
    ctx.n = n;
    png_structp png = NULL;
    png_infop volatile pinfo = NULL;
    struct image *volatile img = NULL;
    png_bytep *volatile rows = NULL; /* (height) row pointers into img->pixels */
    volatile enum ims_status st = IMS_OK;

    png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, &ctx, png_cb_error, png_cb_warning,
                                   &ctx, png_cb_malloc, png_cb_free);
    if (!png)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for the PNG decoder");
    if (setjmp(png_jmpbuf(png))) {
        if (ctx.nomem)
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory while decoding PNG");
        else
            st = ims_error_set(err, IMS_ERR_CORRUPT, "%s",
                               ctx.msg[0] ? ctx.msg : "corrupt PNG");
        goto out;
    }
    png_infop pi = png_create_info_struct(png);
    pinfo = pi;
    if (!pi) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for the PNG decoder");
        goto out;
    }
    png_set_read_fn(png, &ctx, png_cb_read);
    /* our own pixel limit decides (with TOO_LARGE), not libpng's 1M default */
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    png_read_info(png, pi);

    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(png, pi, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    if ((st = image__check_dims(w, h, lim, "PNG", err)) != IMS_OK)
        goto out;
    enum image_mode mode;
    int ga16 = 0, grey16 = 0;
    switch (ctype) {
    case PNG_COLOR_TYPE_GRAY:
        if (depth == 16) {
            mode = IMAGE_MODE_I;
            grey16 = 1;
        } else {
            mode = depth == 1 ? IMAGE_MODE_1 : IMAGE_MODE_L;
            if (depth < 8)
                png_set_expand_gray_1_2_4_to_8(png);
        }
        break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
        mode = depth == 16 ? IMAGE_MODE_RGBA : IMAGE_MODE_LA;
        ga16 = depth == 16;
        break;
    case PNG_COLOR_TYPE_RGB:
        mode = IMAGE_MODE_RGB;
        if (depth == 16)
            png_set_strip_16(png);
        break;
    case PNG_COLOR_TYPE_RGB_ALPHA:
        mode = IMAGE_MODE_RGBA;
        if (depth == 16)
            png_set_strip_16(png);
        break;
    case PNG_COLOR_TYPE_PALETTE:
        mode = IMAGE_MODE_P;
        if (depth < 8)
            png_set_packing(png);
        break;
    default:
        st = ims_error_set(err, IMS_ERR_CORRUPT, "corrupt PNG: colour type %d", ctype);
        goto out;
    }
    info->width = (int)w;
    info->height = (int)h;
    info->mode = mode;
    if (!out)
        goto out;

    if (interlace != PNG_INTERLACE_NONE)
        png_set_interlace_handling(png);
    png_read_update_info(png, pi);

    struct image *im = NULL;
    if ((st = image_new((int)w, (int)h, mode, &im, err)) != IMS_OK)
        goto out;
    img = im;
    size_t rowbytes = png_get_rowbytes(png, pi);
    if (rowbytes > im->stride) {
        st = ims_error_set(err, IMS_ERR_INTERNAL, "PNG row of %zu bytes exceeds %zu", rowbytes,
                           im->stride);
        goto out;
    }
    if (mode == IMAGE_MODE_P) {
        png_colorp pal = NULL;
        int n_pal = 0;
        if (png_get_PLTE(png, pi, &pal, &n_pal) && pal) {
            if (n_pal > 256)
                n_pal = 256;
            for (int i = 0; i < n_pal; i++) {
                im->palette[3 * i] = pal[i].red;
                im->palette[3 * i + 1] = pal[i].green;
                im->palette[3 * i + 2] = pal[i].blue;
            }
            im->n_palette = n_pal;
        }
        png_bytep trans = NULL;
        int n_trans = 0;
        if (png_get_tRNS(png, pi, &trans, &n_trans, NULL) && trans) {
            for (int i = 0; i < n_trans; i++)
                if (trans[i] == 0) {
                    im->transparency = i;
                    break;
                }
        }
    }
    png_bytep *rp = ims_malloc((size_t)h * sizeof(png_bytep));
    if (!rp) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for PNG rows");
        goto out;
    }
    rows = rp;
    for (png_uint_32 y = 0; y < h; y++)
        rp[y] = im->pixels + (size_t)y * im->stride;
    png_read_image(png, rp);

    if (grey16) {
        /* (h, w) big-endian uint16 -> int32 in place, right to left */
        for (png_uint_32 y = 0; y < h; y++) {
            uint8_t *row = rp[y];
            for (int64_t x = (int64_t)w - 1; x >= 0; x--) {
                int32_t v = (row[2 * x] << 8) | row[2 * x + 1];
                memcpy(row + 4 * x, &v, 4);
            }
        }
    } else if (ga16) {
        /* G16 A16 (big-endian) -> R G B A from the high bytes, in place */
        for (png_uint_32 y = 0; y < h; y++) {
            uint8_t *q = rp[y];
            for (png_uint_32 x = 0; x < w; x++, q += 4) {
                uint8_t g = q[0], a = q[2];
                q[0] = q[1] = q[2] = g;
                q[3] = a;
            }
        }
    }
    *out = im;
    img = NULL;
out:;
    png_infop pi_end = pinfo;
    png_destroy_read_struct(&png, pi_end ? &pi_end : NULL, NULL);
    ims_free(rows);
    image_free(img);
    return st;
}
