/* SPDX-License-Identifier: MIT */
/*
 * decode_heif.c: HEIF/HEIC (HEVC) and AVIF (AV1) stills through libheif.
 *
 * Both are ISO-BMFF files holding an image item; libheif parses the boxes and
 * hands the coded data to its codec plugin (libde265 for HEVC, dav1d or aom
 * for AV1), so one decoder serves both formats. We read the primary image
 * only (a burst or a live photo's extra items are ignored, as Pillow's
 * plugins show frame 0).
 *
 * Size: the primary item's size (after libheif's geometric transformations)
 * is checked against the limits before anything is decoded, and libheif's
 * own per-image guard is set to the same bound so that a grid tile or an
 * alpha plane declaring more cannot be decoded either.
 *
 * Orientation: the HEIF `irot`/`imir` boxes are normative and libheif applies
 * them while decoding, so a HEIC photo comes out upright; the Exif
 * Orientation tag inside a HEIF must not be applied a second time (the EXIF
 * reader knows, see exif.c). Output is 8-bit RGB, or straight RGBA when the
 * file has an alpha plane; 10/12-bit images are reduced to 8 bits.
 */
#include <limits.h>
#include <string.h>

#include <libheif/heif.h>

#include "image_int.h"

/* The message of a libheif error, classified into our statuses. */
static enum ims_status heif_status(struct heif_error he, const char *what,
                                   struct ims_error *err)
{
    enum ims_status st;
    switch (he.code) {
    case heif_error_Ok: return IMS_OK;
    case heif_error_Memory_allocation_error: st = IMS_ERR_NOMEM; break;
    case heif_error_Unsupported_filetype:
    case heif_error_Unsupported_feature:
    case heif_error_Plugin_loading_error: st = IMS_ERR_UNSUPPORTED; break;
    default: st = IMS_ERR_CORRUPT; break;
    }
    if (he.subcode == heif_suberror_Security_limit_exceeded)
        st = IMS_ERR_TOO_LARGE;
    if (he.code == heif_error_Decoder_plugin_error &&
        he.subcode == heif_suberror_Unsupported_codec)
        st = IMS_ERR_UNSUPPORTED;
    return ims_error_set(err, st, "%s %s: %s", st == IMS_ERR_CORRUPT ? "corrupt" : "cannot decode",
                         what, he.message ? he.message : "libheif error");
}

/* Opens the primary image of a HEIF/AVIF held in memory (not copied: `p`
 * must outlive the context). */
static enum ims_status open_primary(const uint8_t *p, size_t n, const char *what,
                                    uint64_t max_side, struct heif_context **ctx_out,
                                    struct heif_image_handle **h_out, struct ims_error *err)
{
    struct heif_context *ctx = heif_context_alloc();
    if (!ctx)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for a %s decoder", what);
    heif_context_set_maximum_image_size_limit(ctx, (int)(max_side > INT_MAX ? INT_MAX : max_side));
    heif_context_set_max_decoding_threads(ctx, 0); /* the callers decode in parallel already */
    struct heif_image_handle *h = NULL;
    struct heif_error he = heif_context_read_from_memory_without_copy(ctx, p, n, NULL);
    if (he.code == heif_error_Ok)
        he = heif_context_get_primary_image_handle(ctx, &h);
    if (he.code != heif_error_Ok) {
        /* he.message belongs to the context: format it before freeing */
        enum ims_status st = heif_status(he, what, err);
        heif_context_free(ctx);
        return st;
    }
    *ctx_out = ctx;
    *h_out = h;
    return IMS_OK;
}

enum ims_status image__decode_heif(const uint8_t *p, size_t n, const struct image_limits *lim,
                                   struct image_info *info, struct image **out,
                                   struct ims_error *err)
{
    const char *what = info->format == IMAGE_FORMAT_AVIF ? "AVIF" : "HEIF";
    struct heif_context *ctx = NULL;
    struct heif_image_handle *h = NULL;
    struct heif_image *hi = NULL;
    struct heif_decoding_options *opt = NULL;
    struct image *im = NULL;
    /* a side longer than the pixel budget cannot pass, whatever the other side */
    uint64_t max_side = lim->max_pixels < (1u << 30) ? lim->max_pixels : (1u << 30);
    enum ims_status st = open_primary(p, n, what, max_side + 1, &ctx, &h, err);
    if (st != IMS_OK)
        return st;
    int w = heif_image_handle_get_width(h), ht = heif_image_handle_get_height(h);
    if ((st = image__check_dims(w, ht, lim, what, err)) != IMS_OK)
        goto out;
    int alpha = heif_image_handle_has_alpha_channel(h);
    enum image_mode mode = alpha ? IMAGE_MODE_RGBA : IMAGE_MODE_RGB;
    info->width = w;
    info->height = ht;
    info->mode = mode;
    if (!out)
        goto out;

    opt = heif_decoding_options_alloc();
    if (!opt) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for %s options", what);
        goto out;
    }
    opt->convert_hdr_to_8bit = 1;
    struct heif_error he =
        heif_decode_image(h, &hi, heif_colorspace_RGB,
                          alpha ? heif_chroma_interleaved_RGBA : heif_chroma_interleaved_RGB, opt);
    if (he.code != heif_error_Ok) {
        st = heif_status(he, what, err);
        goto out;
    }
    int stride = 0;
    const uint8_t *px = heif_image_get_plane_readonly(hi, heif_channel_interleaved, &stride);
    int dw = heif_image_get_width(hi, heif_channel_interleaved);
    int dh = heif_image_get_height(hi, heif_channel_interleaved);
    if (!px || dw != w || dh != ht || stride < w * image_mode_bytes(mode) ||
        heif_image_get_bits_per_pixel_range(hi, heif_channel_interleaved) != 8) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "corrupt %s: decoded %dx%d pixels where the header declares %dx%d",
                           what, dw, dh, w, ht);
        goto out;
    }
    if ((st = image_new(w, ht, mode, &im, err)) != IMS_OK)
        goto out;
    for (int y = 0; y < ht; y++)
        memcpy(im->pixels + (size_t)y * im->stride, px + (size_t)y * (size_t)stride, im->stride);
    if (alpha && heif_image_handle_is_premultiplied_alpha(h)) {
        /* our RGBA is straight alpha */
        for (int y = 0; y < ht; y++) {
            uint8_t *r = im->pixels + (size_t)y * im->stride;
            for (int x = 0; x < w; x++, r += 4) {
                unsigned a = r[3];
                for (int c = 0; c < 3; c++) {
                    unsigned v = a ? (r[c] * 255u + a / 2) / a : 0;
                    r[c] = (uint8_t)(v > 255 ? 255 : v);
                }
            }
        }
    }
    *out = im;
    im = NULL;
out:
    image_free(im);
    heif_image_release(hi);
    heif_decoding_options_free(opt);
    heif_image_handle_release(h);
    heif_context_free(ctx);
    return st;
}

enum ims_status image__heif_exif(const uint8_t *p, size_t n, uint8_t **exif, size_t *n_exif,
                                 struct ims_error *err)
{
    struct heif_context *ctx = NULL;
    struct heif_image_handle *h = NULL;
    uint8_t *buf = NULL;
    enum ims_status st = open_primary(p, n, "HEIF", (uint64_t)1 << 30, &ctx, &h, err);
    if (st != IMS_OK)
        return st;
    heif_item_id id;
    if (heif_image_handle_get_list_of_metadata_block_IDs(h, "Exif", &id, 1) != 1) {
        st = ims_error_set(err, IMS_ERR_NOT_FOUND, "HEIF has no Exif item");
        goto out;
    }
    size_t sz = heif_image_handle_get_metadata_size(h, id);
    if (sz < 4 || sz > ((size_t)1 << 20)) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "HEIF Exif item of %zu bytes", sz);
        goto out;
    }
    buf = ims_malloc(sz);
    if (!buf) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for a HEIF Exif item");
        goto out;
    }
    struct heif_error he = heif_image_handle_get_metadata(h, id, buf);
    if (he.code != heif_error_Ok) {
        st = heif_status(he, "HEIF Exif item", err);
        goto out;
    }
    /* ISO/IEC 23008-12 A.2.1: a 4-byte big-endian offset to the TIFF header */
    uint32_t off = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
    if (off > sz - 4) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "HEIF Exif item: header offset %u past its end",
                           off);
        goto out;
    }
    memmove(buf, buf + 4 + off, sz - 4 - off);
    *exif = buf;
    *n_exif = sz - 4 - off;
    buf = NULL;
out:
    ims_free(buf);
    heif_image_handle_release(h);
    heif_context_free(ctx);
    return st;
}
