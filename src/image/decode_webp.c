/* SPDX-License-Identifier: MIT */
/*
 * decode_webp.c: WebP through libwebp.
 *
 * Pillow 9.4 decodes every WebP through WebPAnimDecoder in MODE_RGBA and
 * names the result RGBA when the file has an alpha flag, else RGB (its
 * "RGBX" rawmode drops the fourth byte). For a still image the animation
 * decoder decodes the single key frame straight into its canvas, which is
 * what WebPDecode does into our buffer (same fancy upsampling, same YUV->RGB
 * code), so still images go through WebPDecode with our pixels as external
 * memory (no copy). Animated files go through WebPAnimDecoder and keep the
 * first composited frame, as Pillow shows frame 0.
 *
 * image__decode_webp_scaled (ingestion's bounded path, prepare.c): a still,
 * opaque WebP much larger than needed is decoded through libwebp's own
 * rescaler (options.use_scaling): the VP8 data is still decoded in full, but
 * rows are reduced as they come out, so neither the full-size RGB image nor
 * its colour conversion exist. Files with alpha or animation decode exactly.
 *
 * Sizes (canvas size for VP8X files) are checked before decoding.
 */
#include <math.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

#include "image_int.h"

static enum ims_status vp8_status(VP8StatusCode s, size_t n, struct ims_error *err)
{
    switch (s) {
    case VP8_STATUS_OK: return IMS_OK;
    case VP8_STATUS_OUT_OF_MEMORY:
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory while decoding WebP");
    case VP8_STATUS_NOT_ENOUGH_DATA:
        return ims_error_set(err, IMS_ERR_CORRUPT, "truncated WebP: data ends at byte %zu", n);
    case VP8_STATUS_UNSUPPORTED_FEATURE:
        return ims_error_set(err, IMS_ERR_UNSUPPORTED, "WebP uses an unsupported feature");
    case VP8_STATUS_INVALID_PARAM:
    case VP8_STATUS_BITSTREAM_ERROR:
    case VP8_STATUS_SUSPENDED:
    case VP8_STATUS_USER_ABORT:
    default: return ims_error_set(err, IMS_ERR_CORRUPT, "corrupt WebP: invalid bitstream");
    }
}

static enum ims_status decode_animated(const uint8_t *p, size_t n, struct image *im,
                                       struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    WebPData data = {p, n};
    WebPAnimDecoderOptions opt;
    if (!WebPAnimDecoderOptionsInit(&opt))
        return ims_error_set(err, IMS_ERR_INTERNAL, "libwebp version mismatch");
    opt.color_mode = MODE_RGBA;
    opt.use_threads = 0;
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&data, &opt);
    if (!dec)
        return ims_error_set(err, IMS_ERR_CORRUPT, "corrupt animated WebP");
    WebPAnimInfo ai;
    uint8_t *frame = NULL; /* (canvas_height, canvas_width, 4), owned by dec */
    int ts = 0;
    if (!WebPAnimDecoderGetInfo(dec, &ai) || (int)ai.canvas_width != im->width ||
        (int)ai.canvas_height != im->height) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "corrupt animated WebP: canvas size mismatch");
        goto out;
    }
    if (!WebPAnimDecoderGetNext(dec, &frame, &ts) || !frame) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "corrupt animated WebP: first frame unreadable");
        goto out;
    }
    int bpp = image_mode_bytes(im->mode);
    for (int y = 0; y < im->height; y++) {
        const uint8_t *s = frame + (size_t)y * (size_t)im->width * 4;
        uint8_t *d = im->pixels + (size_t)y * im->stride;
        if (bpp == 4) {
            memcpy(d, s, (size_t)im->width * 4);
        } else {
            for (int x = 0; x < im->width; x++)
                memcpy(d + 3 * x, s + 4 * x, 3);
        }
    }
out:
    WebPAnimDecoderDelete(dec);
    return st;
}

static enum ims_status decode_webp(const uint8_t *p, size_t n, const struct image_limits *lim,
                                   struct image_info *info, struct image **out, int min_short,
                                   int min_long, struct ims_error *err)
{
    enum ims_status st;
    WebPBitstreamFeatures feat;
    VP8StatusCode vs = WebPGetFeatures(p, n, &feat);
    if (vs != VP8_STATUS_OK)
        return vp8_status(vs, n, err);
    if ((st = image__check_dims(feat.width, feat.height, lim, "WebP", err)) != IMS_OK)
        return st;
    enum image_mode mode = feat.has_alpha ? IMAGE_MODE_RGBA : IMAGE_MODE_RGB;
    info->width = feat.width;
    info->height = feat.height;
    info->mode = mode;
    if (!out)
        return IMS_OK;

    /* scaled: the smallest size keeping both minimums, if it at least
     * halves the image (nearer 1 the rescaler saves little) */
    int ow = feat.width, oh = feat.height;
    if (min_short > 0 && !feat.has_alpha && !feat.has_animation) {
        int s = ow < oh ? ow : oh, l = ow < oh ? oh : ow;
        double f = (double)min_short / s;
        if ((double)min_long / l > f)
            f = (double)min_long / l;
        if (f <= 0.5) {
            ow = (int)ceil(feat.width * f);
            oh = (int)ceil(feat.height * f);
        }
    }
    struct image *im = NULL;
    if ((st = image_new(ow, oh, mode, &im, err)) != IMS_OK)
        return st;
    if (feat.has_animation) {
        st = decode_animated(p, n, im, err);
    } else {
        WebPDecoderConfig cfg;
        if (!WebPInitDecoderConfig(&cfg)) {
            st = ims_error_set(err, IMS_ERR_INTERNAL, "libwebp version mismatch");
        } else {
            cfg.output.colorspace = mode == IMAGE_MODE_RGBA ? MODE_RGBA : MODE_RGB;
            if (ow != feat.width || oh != feat.height) {
                cfg.options.use_scaling = 1;
                cfg.options.scaled_width = ow;
                cfg.options.scaled_height = oh;
            }
            cfg.output.is_external_memory = 1;
            cfg.output.u.RGBA.rgba = im->pixels;
            cfg.output.u.RGBA.stride = (int)im->stride;
            cfg.output.u.RGBA.size = im->stride * (size_t)im->height;
            st = vp8_status(WebPDecode(p, n, &cfg), n, err);
            WebPFreeDecBuffer(&cfg.output);
        }
    }
    if (st != IMS_OK) {
        image_free(im);
        return st;
    }
    *out = im;
    return IMS_OK;
}

enum ims_status image__decode_webp(const uint8_t *p, size_t n, const struct image_limits *lim,
                                   struct image_info *info, struct image **out,
                                   struct ims_error *err)
{
    return decode_webp(p, n, lim, info, out, 0, 0, err);
}

enum ims_status image__decode_webp_scaled(const uint8_t *p, size_t n,
                                          const struct image_limits *lim, int min_short,
                                          int min_long, struct image_info *info,
                                          struct image **out, struct ims_error *err)
{
    return decode_webp(p, n, lim, info, out, min_short > 0 ? min_short : 1,
                       min_long > 0 ? min_long : 1, err);
}
