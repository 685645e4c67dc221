/* SPDX-License-Identifier: MIT */
/*
 * decode_gif.c: the first frame of a GIF through giflib, as Pillow 9.4's
 * GifImagePlugin shows it (frame 0, no disposal or compositing involved):
 *
 * - canvas = the logical screen, enlarged when the first frame reaches past
 *   it (Pillow grows `size` to the frame's extent);
 * - pixels outside the frame's rectangle are 0, or the frame's transparent
 *   index when its Graphic Control Extension has one (Pillow fills with
 *   `_frame_transparency`, never with the background index);
 * - the frame's palette is its local colour table, else the global one.
 *   Without any palette, or when the palette is exactly the grey ramp
 *   (entry i == (i, i, i): Pillow's `_is_palette_needed` is false), the mode
 *   is L instead of P, which matters because L is resized bicubically while
 *   P is resized with NEAREST;
 * - interlaced frames are de-interlaced (rows of pass 1..4 at 0/8, 4/8,
 *   2/4, 1/2).
 *
 * We read records one at a time (DGifGetRecordType) and stop after the first
 * image, rather than DGifSlurp, so a 500-frame animation costs one frame.
 */
#include <stdio.h>
#include <string.h>

#include <gif_lib.h>

#include "image_int.h"

struct gctx {
    const uint8_t *data;
    size_t n, pos;
    int truncated;
};

static int gif_read(GifFileType *gif, GifByteType *buf, int len)
{
    struct gctx *c = gif->UserData;
    if (len < 0)
        return 0;
    size_t want = (size_t)len, have = c->n - c->pos;
    if (want > have) {
        c->truncated = 1;
        want = have;
    }
    memcpy(buf, c->data + c->pos, want);
    c->pos += want;
    return (int)want;
}

static enum ims_status gif_error(const struct gctx *c, int code, struct ims_error *err)
{
    if (c->truncated || code == D_GIF_ERR_READ_FAILED || code == D_GIF_ERR_EOF_TOO_SOON)
        return ims_error_set(err, IMS_ERR_CORRUPT, "truncated GIF: data ends at byte %zu", c->n);
    if (code == D_GIF_ERR_NOT_ENOUGH_MEM)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory while decoding GIF");
    const char *s = GifErrorString(code);
    return ims_error_set(err, IMS_ERR_CORRUPT, "corrupt GIF: %s", s ? s : "decoder error");
}

static int is_grey_ramp(const ColorMapObject *cm)
{
    for (int i = 0; i < cm->ColorCount; i++) {
        const GifColorType *c = &cm->Colors[i];
        if (c->Red != i || c->Green != i || c->Blue != i)
            return 0;
    }
    return 1;
}

enum ims_status image__decode_gif(const uint8_t *p, size_t n, const struct image_limits *lim,
                                  struct image_info *info, struct image **out,
                                  struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct gctx ctx = {p, n, 0, 0};
    int gerr = 0;
    struct image *im = NULL;
    uint8_t *line = NULL; /* (frame width) indices of one row */
    GifFileType *gif = DGifOpen(&ctx, gif_read, &gerr);
    if (!gif)
        return gif_error(&ctx, gerr, err);

    int transparency = -1;
    int found = 0;
    while (!found) {
        GifRecordType type;
        if (DGifGetRecordType(gif, &type) == GIF_ERROR) {
            st = gif_error(&ctx, gif->Error, err);
            goto out;
        }
        switch (type) {
        case EXTENSION_RECORD_TYPE: {
            int code = 0;
            GifByteType *ext = NULL;
            if (DGifGetExtension(gif, &code, &ext) == GIF_ERROR) {
                st = gif_error(&ctx, gif->Error, err);
                goto out;
            }
            if (code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4)
                transparency = (ext[1] & 1) ? ext[4] : -1;
            while (ext) {
                if (DGifGetExtensionNext(gif, &ext) == GIF_ERROR) {
                    st = gif_error(&ctx, gif->Error, err);
                    goto out;
                }
            }
            break;
        }
        case IMAGE_DESC_RECORD_TYPE:
            if (DGifGetImageDesc(gif) == GIF_ERROR) {
                st = gif_error(&ctx, gif->Error, err);
                goto out;
            }
            found = 1;
            break;
        case TERMINATE_RECORD_TYPE:
            st = ims_error_set(err, IMS_ERR_CORRUPT, "corrupt GIF: no image in the file");
            goto out;
        default:
            st = ims_error_set(err, IMS_ERR_CORRUPT, "corrupt GIF: unknown record");
            goto out;
        }
    }

    int64_t fx = gif->Image.Left, fy = gif->Image.Top;
    int64_t fw = gif->Image.Width, fh = gif->Image.Height;
    int64_t cw = IMS_MAX((int64_t)gif->SWidth, fx + fw);
    int64_t ch = IMS_MAX((int64_t)gif->SHeight, fy + fh);
    if ((st = image__check_dims(cw, ch, lim, "GIF", err)) != IMS_OK)
        goto out;
    const ColorMapObject *cm = gif->Image.ColorMap ? gif->Image.ColorMap : gif->SColorMap;
    enum image_mode mode = (cm && cm->Colors && !is_grey_ramp(cm)) ? IMAGE_MODE_P : IMAGE_MODE_L;
    info->width = (int)cw;
    info->height = (int)ch;
    info->mode = mode;
    if (!out)
        goto out;

    if ((st = image_new((int)cw, (int)ch, mode, &im, err)) != IMS_OK)
        goto out;
    if (mode == IMAGE_MODE_P) {
        int n_pal = IMS_MIN(cm->ColorCount, 256);
        for (int i = 0; i < n_pal; i++) {
            im->palette[3 * i] = cm->Colors[i].Red;
            im->palette[3 * i + 1] = cm->Colors[i].Green;
            im->palette[3 * i + 2] = cm->Colors[i].Blue;
        }
        im->n_palette = n_pal;
        im->transparency = transparency;
    }
    if (transparency >= 0)
        memset(im->pixels, transparency, im->stride * (size_t)im->height);
    if (fw > 0 && fh > 0) {
        line = ims_malloc((size_t)fw);
        if (!line) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for a GIF row");
            goto out;
        }
        static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
        int n_pass = gif->Image.Interlace ? 4 : 1;
        for (int pass = 0; pass < n_pass; pass++) {
            int y0 = gif->Image.Interlace ? start[pass] : 0;
            int dy = gif->Image.Interlace ? step[pass] : 1;
            for (int64_t y = y0; y < fh; y += dy) {
                if (DGifGetLine(gif, line, (int)fw) == GIF_ERROR) {
                    st = gif_error(&ctx, gif->Error, err);
                    goto out;
                }
                memcpy(im->pixels + (size_t)(fy + y) * im->stride + (size_t)fx, line,
                       (size_t)fw);
            }
        }
    }
    *out = im;
    im = NULL;
out:
    DGifCloseFile(gif, &gerr);
    ims_free(line);
    image_free(im);
    return st;
}
