/* SPDX-License-Identifier: MIT */
/*
 * fuzz_image.c: arbitrary bytes -> image_info, image_decode, and when the
 * decode succeeds the CLIP preprocessing, normalisation and a thumbnail;
 * the EXIF reader on the same bytes (as a file and as a bare EXIF block),
 * and the orientation transform of the decoded image; ingestion's bounded
 * prepare (image_prepare_for_ingest) with tiny outputs, so that small inputs
 * take the DCT-scaled JPEG path and its progressive early stop.
 * Limits are small (1 megapixel, 1 MiB) so that the fuzzer explores formats
 * rather than allocating; invariants that must hold for any input abort.
 */
#include <stdint.h>
#include <stdlib.h>

#include "imgsearch/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct image_limits lim = {.max_pixels = 1u << 20, .max_bytes = 1u << 20};
    struct ims_error err = {0};
    struct image_info info;
    enum ims_status ist = image_info(data, size, &lim, &info, &err);
    struct image_exif ex;
    if (image_exif_read(data, size, &ex, &err) == IMS_OK &&
        (ex.orientation < 1 || ex.orientation > 8))
        abort();
    image_exif_parse(data, size, &ex);
    if (ex.orientation < 1 || ex.orientation > 8 || ex.make[sizeof(ex.make) - 1] ||
        (ex.has_gps && (ex.lat < -90 || ex.lat > 90 || ex.lon < -180 || ex.lon > 180)))
        abort();
    {
        static uint8_t small[8 * 8 * 3];
        struct image_prepare_options po = {&lim, 1 + (int)(size % 8), 8, 75,
                                           IMAGE_DECODE_BOUNDED, 1 + (int)(size % 8), 0};
        struct image_prepared pp;
        struct ims_error perr = {0};
        if (image_prepare_for_ingest(data, size, &po, small, &pp, &perr) == IMS_OK) {
            if (pp.decoded_width < 1 || pp.decoded_height < 1 || pp.width < 1 || pp.height < 1)
                abort();
            ims_free(pp.thumb);
        } else if (!perr.message[0]) {
            abort(); /* failures always explain themselves */
        }
    }
    struct image *img = NULL;
    enum ims_status st = image_decode(data, size, &lim, &img, &err);
    if (st != IMS_OK) {
        if (img || !err.message[0])
            abort(); /* failures leave *out alone and always explain themselves */
        return 0;
    }
    /* a decodable file has decodable headers of the same size */
    if (ist != IMS_OK || info.width != img->width || info.height != img->height ||
        info.mode != img->mode)
        abort();
    static uint8_t rgb[48 * 48 * 3];
    static float chw[3 * 48 * 48];
    int size_px = 1 + (int)(size % 48);
    if (image_clip_preprocess(img, size_px, rgb, &err) == IMS_OK)
        image_clip_normalize(rgb, size_px, chw);
    uint8_t *jpg = NULL;
    size_t jn = 0;
    if (image_thumbnail_jpeg(img, 16, 75, &jpg, &jn, NULL, NULL, &err) == IMS_OK) {
        struct image *t = NULL;
        if (image_decode(jpg, jn, &lim, &t, &err) != IMS_OK)
            abort(); /* our own thumbnails always decode */
        image_free(t);
    }
    ims_free(jpg);
    struct image *o = NULL;
    int orient = 1 + (int)(size % 8);
    if (image_orient(img, orient, &o, &err) == IMS_OK) {
        int sw = orient >= 5;
        if (o->width != (sw ? img->height : img->width) ||
            o->height != (sw ? img->width : img->height))
            abort();
        image_free(o);
    }
    image_free(img);
    return 0;
}
