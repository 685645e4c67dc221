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

/* The transforms and the mode for a colour type and depth (see the table
 * atop); 0 for an unknown colour type. */
static int png_set_mode(png_structp png, int depth, int ctype, enum image_mode *mode_out,
                        int *ga16, int *grey16)
{
    enum image_mode mode;
    switch (ctype) {
    case PNG_COLOR_TYPE_GRAY:
        if (depth == 16) {
            mode = IMAGE_MODE_I;
            *grey16 = 1;
        } else {
            mode = depth == 1 ? IMAGE_MODE_1 : IMAGE_MODE_L;
            if (depth < 8)
                png_set_expand_gray_1_2_4_to_8(png);
        }
        break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
        mode = depth == 16 ? IMAGE_MODE_RGBA : IMAGE_MODE_LA;
        *ga16 = depth == 16;
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
        return 0;
    }
    *mode_out = mode;
    return 1;
}

/* PLTE and tRNS into a P image's palette (entries past PLTE keep the ramp). */
static void png_get_palette(png_structp png, png_infop pi, struct image *im)
{
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

/* One decoded row into the image's mode, in place (buffer of w * 4 bytes):
 * grey 16 -> int32, grey+alpha 16 -> RGBA from the high bytes. */
static void png_fix_row(uint8_t *row, png_uint_32 w, int grey16, int ga16)
{
    if (grey16) {
        /* big-endian uint16 -> int32, right to left */
        for (int64_t x = (int64_t)w - 1; x >= 0; x--) {
            int32_t v = (row[2 * x] << 8) | row[2 * x + 1];
            memcpy(row + 4 * x, &v, 4);
        }
    } else if (ga16) {
        uint8_t *q = row;
        for (png_uint_32 x = 0; x < w; x++, q += 4) {
            uint8_t g = q[0], a = q[2];
            q[0] = q[1] = q[2] = g;
            q[3] = a;
        }
    }
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
    if (!png_set_mode(png, depth, ctype, &mode, &ga16, &grey16)) {
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
    if (mode == IMAGE_MODE_P)
        png_get_palette(png, pi, im);
    png_bytep *rp = ims_malloc((size_t)h * sizeof(png_bytep));
    if (!rp) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for PNG rows");
        goto out;
    }
    rows = rp;
    for (png_uint_32 y = 0; y < h; y++)
        rp[y] = im->pixels + (size_t)y * im->stride;
    png_read_image(png, rp);

    if (grey16 || ga16)
        for (png_uint_32 y = 0; y < h; y++)
            png_fix_row(rp[y], w, grey16, ga16);
    *out = im;
    img = NULL;
out:;
    png_infop pi_end = pinfo;
    png_destroy_read_struct(&png, pi_end ? &pi_end : NULL, NULL);
    ims_free(rows);
    image_free(img);
    return st;
}

/* ---- streaming into the resamplers (image_prepare_for_ingest) ------------ */

/* Everything the streaming decode allocates, on the heap so that libpng's
 * longjmp finds it as it was (no automatic variables change after setjmp). */
struct pstream {
    struct image hdr; /* mode and palette only: pixels stay NULL */
    struct image_limits lim;
    uint8_t *row;     /* one decoded row, w * 4 bytes (room for int32) */
    uint8_t *prem;    /* one premultiplied row (LA / RGBA) */
    uint8_t *flat;    /* one thumbnail row (w * thumb channels) */
    uint8_t *win;     /* the CLIP window in the decoded mode */
    uint8_t *small;   /* the thumbnail pixels */
    struct image__rs *clip, *thumb;
    size_t reserved;
    int have_thumb;
    char thumb_error[160];
};

static void pstream_free(struct pstream *s)
{
    if (!s)
        return;
    ims_free(s->row);
    ims_free(s->prem);
    ims_free(s->flat);
    ims_free(s->win);
    ims_free(s->small);
    image__rs_free(s->clip);
    image__rs_free(s->thumb);
    if (s->reserved)
        image__budget_release(s->reserved);
    ims_free(s);
}

enum ims_status image__prepare_png_stream(const uint8_t *p, size_t n,
                                          const struct image_limits *lim,
                                          const struct image_prepare_options *o,
                                          uint8_t *rgb_out, struct image_prepared *out,
                                          int *streamed, size_t *held, struct ims_error *err)
{
    *streamed = 0;
    struct pctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.data = p;
    ctx.n = n;
    png_infop volatile pinfo = NULL;
    volatile enum ims_status st = IMS_OK;
    struct pstream *s = ims_calloc(1, sizeof(*s));
    if (!s)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for the PNG decoder");
    if (lim)
        s->lim = *lim;
    else
        image_limits_default(&s->lim);
    png_structp png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, &ctx, png_cb_error,
                                               png_cb_warning, &ctx, png_cb_malloc, png_cb_free);
    if (!png) {
        ims_free(s);
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for the PNG decoder");
    }
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
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    png_read_info(png, pi);
    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(png, pi, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    if ((st = image__check_dims(w, h, &s->lim, "PNG", err)) != IMS_OK)
        goto out;
    int tw = (int)w, th = (int)h;
    if (o->thumb_side > 0)
        image__thumb_size((int)w, (int)h, o->thumb_side, &tw, &th);
    /* interlaced rows arrive in seven passes; a thumbnail as large as the
     * image is the image: both take the whole decode */
    if (interlace != PNG_INTERLACE_NONE || (o->thumb_side > 0 && tw == (int)w && th == (int)h))
        goto out;
    enum image_mode mode;
    int ga16 = 0, grey16 = 0;
    if (!png_set_mode(png, depth, ctype, &mode, &ga16, &grey16)) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "corrupt PNG: colour type %d", ctype);
        goto out;
    }
    png_read_update_info(png, pi);
    struct image *hdr = &s->hdr;
    hdr->width = (int)w;
    hdr->height = (int)h;
    hdr->mode = mode;
    hdr->format = IMAGE_FORMAT_PNG;
    hdr->transparency = -1;
    for (int i = 0; i < 256; i++)
        hdr->palette[3 * i] = hdr->palette[3 * i + 1] = hdr->palette[3 * i + 2] = (uint8_t)i;
    if (mode == IMAGE_MODE_P)
        png_get_palette(png, pi, hdr);
    int bpp = image_mode_bytes(mode);
    size_t rowbytes = png_get_rowbytes(png, pi);
    size_t row_cap = (size_t)w * 4;
    if (rowbytes > row_cap) {
        st = ims_error_set(err, IMS_ERR_INTERNAL, "PNG row of %zu bytes exceeds %zu", rowbytes,
                           row_cap);
        goto out;
    }

    /* the CLIP input: the same choices as image_clip_preprocess */
    int size = o->clip_size, nw, nh, x0, y0;
    {
        struct ims_error gerr = {0};
        enum ims_status gs = image__clip_geometry((int)w, (int)h, size, &nw, &nh, &x0, &y0,
                                                  &gerr);
        if (gs != IMS_OK) {
            st = ims_error_set(err, gs, "%s", ims_error_message(&gerr, gs));
            goto out;
        }
    }
    int same = nw == (int)w && nh == (int)h;
    int premul = !same && (mode == IMAGE_MODE_LA || mode == IMAGE_MODE_RGBA);
    enum image__rs_kind kind = same                                              ? IMAGE__RS_U8
                               : (mode == IMAGE_MODE_P || mode == IMAGE_MODE_1) ? IMAGE__RS_NEAREST
                               : mode == IMAGE_MODE_I                           ? IMAGE__RS_I32
                                                                                : IMAGE__RS_U8;
    struct image__rs *rs = NULL;
    if ((st = image__rs_begin(kind, (int)w, (int)h, bpp, nw, nh, x0, y0, size, size, &rs, err)) !=
        IMS_OK)
        goto out;
    s->clip = rs;
    size_t total = image__rs_held(rs) + row_cap;
    size_t win_stride = (size_t)size * bpp;
    if (mode != IMAGE_MODE_RGB) {
        s->win = ims_malloc(win_stride * (size_t)size);
        total += win_stride * (size_t)size;
    }
    if (premul) {
        s->prem = ims_malloc((size_t)w * bpp);
        total += (size_t)w * bpp;
    }
    s->row = ims_malloc(row_cap);
    if (!s->row || (mode != IMAGE_MODE_RGB && !s->win) || (premul && !s->prem)) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for a streamed PNG");
        goto out;
    }

    /* the thumbnail: image_thumbnail_jpeg's checks; its failure is not the call's */
    int tch = image__thumb_channels(mode);
    if (o->thumb_side > 0) {
        struct ims_error terr = {0};
        enum ims_status ts = IMS_OK;
        if (o->thumb_side > 65500)
            ts = ims_error_set(&terr, IMS_ERR_INVALID, "thumbnail size %d is outside 1..65500",
                               o->thumb_side);
        else if (o->thumb_quality < 1 || o->thumb_quality > 100)
            ts = ims_error_set(&terr, IMS_ERR_INVALID, "JPEG quality %d is outside 1..100",
                               o->thumb_quality);
        if (ts == IMS_OK) {
            struct image__rs *trs = NULL;
            ts = image__rs_begin(IMAGE__RS_U8, (int)w, (int)h, tch, tw, th, 0, 0, tw, th, &trs,
                                 &terr);
            s->thumb = trs;
        }
        if (ts == IMS_OK) {
            s->flat = ims_malloc((size_t)w * tch);
            s->small = ims_malloc((size_t)tw * th * tch);
            if (!s->flat || !s->small)
                ts = ims_error_set(&terr, IMS_ERR_NOMEM, "out of memory for a thumbnail");
        }
        if (ts == IMS_OK) {
            total += image__rs_held(s->thumb) + (size_t)w * tch + (size_t)tw * th * tch;
            s->have_thumb = 1;
        } else {
            snprintf(s->thumb_error, sizeof(s->thumb_error), "%s", ims_error_message(&terr, ts));
        }
    }
    /* what this decode holds, before reading a single row */
    if ((st = image__budget_reserve(total, err)) != IMS_OK)
        goto out;
    s->reserved = total;

    for (png_uint_32 y = 0; y < h; y++) {
        png_read_row(png, s->row, NULL);
        int wc = image__rs_wants(s->clip, (int)y);
        int wt = s->have_thumb && image__rs_wants(s->thumb, (int)y);
        if (!wc && !wt)
            continue;
        png_fix_row(s->row, w, grey16, ga16);
        if (wc) {
            if (premul) {
                image__premultiply_row(s->row, s->prem, (int)w, bpp);
                image__rs_row(s->clip, (int)y, s->prem);
            } else {
                image__rs_row(s->clip, (int)y, s->row);
            }
        }
        if (wt) {
            image__thumb_flatten_row(hdr, s->row, (int)w, s->flat);
            image__rs_row(s->thumb, (int)y, s->flat);
        }
    }

    uint8_t *dst = mode == IMAGE_MODE_RGB ? rgb_out : s->win;
    if ((st = image__rs_finish(s->clip, dst, win_stride, err)) != IMS_OK)
        goto out;
    if (premul)
        image__unpremultiply(dst, (size_t)size * size, bpp);
    if (dst != rgb_out)
        for (int y = 0; y < size; y++)
            image__row_to_rgb(hdr, dst + (size_t)y * win_stride, size,
                              rgb_out + (size_t)y * size * 3);
    if (s->have_thumb) {
        struct ims_error terr = {0};
        enum ims_status ts = image__rs_finish(s->thumb, s->small, (size_t)tw * tch, &terr);
        if (ts == IMS_OK)
            ts = image__thumb_encode(s->small, tw, th, tch, o->thumb_quality, &out->thumb,
                                     &out->thumb_len, &terr);
        if (ts != IMS_OK) {
            out->thumb = NULL;
            out->thumb_len = 0;
            snprintf(s->thumb_error, sizeof(s->thumb_error), "%s", ims_error_message(&terr, ts));
        }
    }
    snprintf(out->thumb_error, sizeof(out->thumb_error), "%s", s->thumb_error);
    out->format = IMAGE_FORMAT_PNG;
    out->width = out->decoded_width = (int)w;
    out->height = out->decoded_height = (int)h;
    if (held)
        *held = s->reserved;
    *streamed = 1;
out:;
    png_infop pi_end = pinfo;
    png_destroy_read_struct(&png, pi_end ? &pi_end : NULL, NULL);
    pstream_free(s);
    return st;
}
