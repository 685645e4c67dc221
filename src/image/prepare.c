/* SPDX-License-Identifier: MIT */
/*
 * prepare.c: ingestion's one call into the image module. One decode feeds
 * both the CLIP input and the thumbnail; under IMAGE_DECODE_BOUNDED a JPEG
 * much larger than both need is decoded at a DCT scale (libjpeg-turbo's
 * scale_num / 8), which for a 12 MP photo costs a quarter of the full
 * decode and shrinks the resampler's input 16-fold. The resampling after
 * the decode is the exact path's, so the only difference from the exact
 * bytes is the scaled IDCT's low-pass in place of the first part of the
 * bicubic reduction (see bench/README.md for the measured PSNR).
 * Rotated photos (EXIF orientation 2..8) take the same decode; the reduced
 * image is turned (image_orient) and then resampled as the exact path's
 * upright full-size image is. test_image_prepare checks the PSNR bound for
 * every orientation against the exact path. Still, opaque WebPs of the same
 * proportions go through libwebp's rescaler to 2x the sizes needed
 * (decode_webp.c), under the same bound.
 * Upright non-interlaced PNGs are decoded row by row straight into both
 * resamplers (decode_png.c, image__prepare_png_stream): the same bytes as
 * the whole decode, holding the rows reduced to the outputs' widths instead
 * of the image. Interlaced and rotated PNGs take the whole decode.
 */
#include <stdio.h>
#include <string.h>

#include "image_int.h"

enum ims_status image_prepare_for_ingest(const void *bytes, size_t n,
                                         const struct image_prepare_options *o,
                                         uint8_t *rgb_out, struct image_prepared *out,
                                         struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!o || !out || !rgb_out || (!bytes && n), err, IMS_ERR_INVALID,
                        "image_prepare_for_ingest: missing argument");
    IMS_RETURN_ERROR_IF(o->clip_size < 1 || o->clip_size > 4096 || o->thumb_side < 0, err,
                        IMS_ERR_INVALID, "image_prepare_for_ingest: bad sizes %d / %d",
                        o->clip_size, o->thumb_side);
    struct image_limits def;
    const struct image_limits *lim = o->limits;
    if (!lim) {
        image_limits_default(&def);
        lim = &def;
    }
    memset(out, 0, sizeof(*out));
    struct image *img = NULL;
    struct image_info info = {0};
    enum ims_status st;
    enum image_format f;
    IMS_RETURN_ERROR_IF(n > lim->max_bytes, err, IMS_ERR_TOO_LARGE,
                        "image file is %zu bytes, more than the limit of %zu", n,
                        lim->max_bytes);
    if ((st = image_sniff(bytes, n, &f, err)) != IMS_OK)
        return st;
    if (f == IMAGE_FORMAT_PNG && (o->orientation < 2 || o->orientation > 8)) {
        /* byte-identical to the whole decode under either policy */
        int streamed = 0;
        st = image__prepare_png_stream((const uint8_t *)bytes, n, lim, o, rgb_out, out,
                                       &streamed, NULL, err);
        if (st != IMS_OK || streamed)
            return st;
    }
    if ((f == IMAGE_FORMAT_JPEG || f == IMAGE_FORMAT_WEBP) && o->decode == IMAGE_DECODE_BOUNDED) {
        /* Both consumers resample with a bicubic filter from at least twice
         * their size: the CLIP input from the shorter side, the thumbnail
         * from the longer. The scale is used only when it at least halves
         * the image (IMAGE_PREPARE_MAX_SCALE / 8); nearer 1 it saves little. */
        if ((st = image_info(bytes, n, lim, &info, err)) != IMS_OK)
            return st;
        int s = info.width < info.height ? info.width : info.height;
        int l = info.width < info.height ? info.height : info.width;
        int64_t need_s = 2 * (int64_t)o->clip_size, need_l = 2 * (int64_t)o->thumb_side;
        if (need_l < need_s)
            need_l = need_s;
        if ((int64_t)s * IMAGE_PREPARE_MAX_SCALE >= need_s * 8 &&
            (int64_t)l * IMAGE_PREPARE_MAX_SCALE >= need_l * 8)
            st = f == IMAGE_FORMAT_JPEG
                     ? image__decode_jpeg_scaled((const uint8_t *)bytes, n, lim, (int)need_s,
                                                 (int)need_l, &info, &img, err)
                     : image__decode_webp_scaled((const uint8_t *)bytes, n, lim, (int)need_s,
                                                 (int)need_l, &info, &img, err);
        else
            st = image_decode(bytes, n, lim, &img, err);
        if (st != IMS_OK)
            return st;
        img->format = f;
    } else {
        if ((st = image_decode(bytes, n, lim, &img, err)) != IMS_OK)
            return st;
        info.width = img->width;
        info.height = img->height;
    }
    out->format = f;
    out->width = info.width;
    out->height = info.height;
    out->decoded_width = img->width;
    out->decoded_height = img->height;
    struct image *upright = NULL;
    const struct image *shown = img; /* what the thumbnail and the sizes are of */
    if (o->orientation >= 2 && o->orientation <= 8) {
        if ((st = image_orient(img, o->orientation, &upright, err)) != IMS_OK) {
            image_free(img);
            return st;
        }
        shown = upright;
        if (o->orientation >= 5) { /* transposed: the sides swap */
            out->width = info.height;
            out->height = info.width;
        }
    }
    st = image_clip_preprocess(o->orientation_ignore ? img : shown, o->clip_size, rgb_out, err);
    if (st == IMS_OK && o->thumb_side > 0) {
        struct ims_error terr = {0};
        enum ims_status ts = image_thumbnail_jpeg(shown, o->thumb_side, o->thumb_quality,
                                                  &out->thumb, &out->thumb_len, NULL, NULL,
                                                  &terr);
        if (ts != IMS_OK) {
            out->thumb = NULL;
            out->thumb_len = 0;
            snprintf(out->thumb_error, sizeof(out->thumb_error), "%s",
                     ims_error_message(&terr, ts));
        }
    }
    image_free(upright);
    image_free(img);
    return st;
}
