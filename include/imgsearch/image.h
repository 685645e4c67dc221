/* SPDX-License-Identifier: MIT */
/*
 * image.h: image bytes in, pixels out. Format sniffing, decoding (JPEG, PNG,
 * WebP, GIF, BMP, HEIF/HEIC, AVIF, TIFF), CLIP preprocessing that reproduces Pillow 9.4 +
 * torchvision 0.14 byte for byte, and small JPEG thumbnails.
 *
 *     struct image_limits lim;
 *     image_limits_default(&lim);
 *     struct image *img = NULL;
 *     struct ims_error err = {0};
 *     enum ims_status st = image_decode(bytes, n_bytes, &lim, &img, &err);
 *     if (st != IMS_OK)
 *         return st;                        // err.message says what is wrong
 *     uint8_t rgb[224 * 224 * 3];            // (224, 224, 3) HWC
 *     float chw[3 * 224 * 224];              // (3, 224, 224) CHW
 *     st = image_clip_preprocess(img, 224, rgb, &err);
 *     if (st == IMS_OK)
 *         image_clip_normalize(rgb, 224, chw);
 *     image_free(img);
 *
 * Decoding keeps the mode Pillow would decode into (palette images stay
 * palette images, 16-bit grey stays a 32-bit integer image, ...) because
 * Pillow resizes in that mode before converting to RGB, and the CLIP
 * reference bytes depend on it. See docs/internals/image.md.
 *
 * Every input is untrusted: sizes are checked against `struct image_limits`
 * before anything proportional to the image is allocated, and every failure
 * is a status with a precise message (never an abort or exit()).
 *
 * Thread-safety: all functions are reentrant; a `struct image` is immutable
 * after decoding and may be read by any number of threads.
 */
#ifndef IMGSEARCH_IMAGE_H
#define IMGSEARCH_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "imgsearch/base.h"

#ifdef __cplusplus
extern "C" {
#endif

enum image_format {
    IMAGE_FORMAT_JPEG,
    IMAGE_FORMAT_PNG,
    IMAGE_FORMAT_WEBP,
    IMAGE_FORMAT_GIF,
    IMAGE_FORMAT_BMP,
    IMAGE_FORMAT_HEIF, /* HEIF/HEIC (HEVC-coded, what phones write), through libheif */
    IMAGE_FORMAT_AVIF, /* AV1-coded HEIF, through libheif */
    IMAGE_FORMAT_TIFF, /* first page, through libtiff */
};

/* Pillow's decoded modes (the ones our decoders can produce). */
enum image_mode {
    IMAGE_MODE_1,    /* bilevel, 1 byte per pixel holding 0 or 255 */
    IMAGE_MODE_L,    /* grey, 1 byte */
    IMAGE_MODE_P,    /* palette index, 1 byte; colours in image.palette */
    IMAGE_MODE_LA,   /* grey + alpha, 2 bytes */
    IMAGE_MODE_RGB,  /* 3 bytes */
    IMAGE_MODE_RGBA, /* 4 bytes, straight (not premultiplied) alpha */
    IMAGE_MODE_CMYK, /* 4 bytes, ink amounts (Adobe inversion already undone) */
    IMAGE_MODE_I,    /* int32 per pixel, host byte order (16-bit grey PNG) */
};

/* "JPEG", "PNG", ... and "RGB", "P", ... (Pillow's names). Never NULL. */
const char *image_format_name(enum image_format f);
/* The lower-case word of the API and the catalogue: "jpeg", "png", "webp",
 * "gif", "bmp", "heic", "avif", "tiff". Never NULL. */
const char *image_format_word(enum image_format f);
/* The reverse of image_format_word, case-insensitive ("jpg", "heif", "tif"
 * accepted too). Returns 0 and sets *out, or -1 for an unknown word. */
int image_format_parse(const char *word, enum image_format *out);
const char *image_mode_name(enum image_mode m);
/* Bytes per pixel of a mode (1, 2, 3 or 4). */
int image_mode_bytes(enum image_mode m);

/* Resource limits for untrusted input. */
struct image_limits {
    uint64_t max_pixels; /* width * height of the decoded canvas */
    size_t max_bytes;    /* size of the encoded input */
    uint32_t max_aspect; /* longest side / shortest side; 0 = IMAGE_DEFAULT_MAX_ASPECT */
};
/* Defaults: IMAGE_DEFAULT_MAX_PIXELS (128 megapixels: 48-50 MP phone photos
 * (8064x6048, 8160x6120) and 102 MP medium-format frames (11648x8736) pass;
 * a bomb declaring 100000x100000 does not; the decode memory budget, not
 * this limit, bounds how much is held at once),
 * IMAGE_DEFAULT_MAX_BYTES (50 MiB encoded) and IMAGE_DEFAULT_MAX_ASPECT (the
 * widest panorama is ~1:50; a 1 x 40,000,000 strip is refused from its
 * header instead of being decoded and refused by the resize). All three are
 * checked from the header, before anything proportional to the image is
 * allocated or decoded. */
#define IMAGE_DEFAULT_MAX_PIXELS (128ull * 1000 * 1000)
#define IMAGE_DEFAULT_MAX_BYTES ((size_t)50 << 20)
#define IMAGE_DEFAULT_MAX_ASPECT 65536u
void image_limits_default(struct image_limits *lim);

/* ---- decode memory budget (process-wide) ----------------------------------
 *
 * Every image_decode reserves width * height * bytes per pixel of its
 * decoded image from one process-wide budget after reading the header and
 * before decoding, and gives it back when the decode returns (the image it
 * hands out is the caller's). When the budget is spent, a decode waits up to
 * wait_ms for others to finish, then fails with IMS_ERR_BUSY; a decode that
 * needs more than the whole budget fails at once with IMS_ERR_TOO_LARGE. So
 * 32 concurrent search decodes of 40-megapixel images take at most the
 * budget, not GBs. libjpeg's own working memory (progressive coefficient
 * buffers) is capped separately at IMAGE_JPEG_MAX_MEMORY. Thread-safe. */
#define IMAGE_DEFAULT_DECODE_BUDGET ((size_t)512 << 20)
#define IMAGE_DEFAULT_DECODE_WAIT_MS 5000
#define IMAGE_JPEG_MAX_MEMORY ((size_t)256 << 20)
/* Sets the budget (bytes, 0 = default) and the wait (ms, < 0 = default).
 * Decodes already holding memory keep it. */
void image_decode_budget_set(size_t bytes, int wait_ms);
struct image_decode_budget_stats {
    size_t budget, in_use;     /* bytes */
    uint64_t n_waited;         /* decodes that had to wait */
    uint64_t n_busy;           /* refused after waiting (IMS_ERR_BUSY) */
    uint64_t n_too_large;      /* refused: needs more than the whole budget */
};
void image_decode_budget_stats(struct image_decode_budget_stats *out);

/* A decoded image. Pixels are rows top to bottom, `stride` bytes apart, each
 * pixel image_mode_bytes(mode) bytes (channels interleaved). */
struct image {
    int width, height;
    enum image_mode mode;
    enum image_format format; /* what it was decoded from */
    size_t stride;            /* bytes per row */
    uint8_t *pixels;          /* (height, stride), owned by the image */
    /* Mode P only: 256 RGB entries. Entries past n_palette hold Pillow's
     * default grey ramp (i, i, i), which is what Pillow shows for them. */
    int n_palette;
    uint8_t palette[256 * 3];
    int transparency; /* P: transparent index from tRNS/GCE, else -1 (informative) */
};

/* Identifies the format from the first bytes (never from a file name).
 * On success *out is set. Unknown data returns IMS_ERR_UNSUPPORTED with a
 * message naming what it looks like when recognisable ("empty file", "HTML
 * document", "PDF document", "TIFF image", ...). */
enum ims_status image_sniff(const void *bytes, size_t n, enum image_format *out,
                            struct ims_error *err);

/* Width, height and format from the headers only (no pixel decoding).
 * `lim` may be NULL (defaults). The dimension limit is checked too, so a
 * successful image_info means image_decode will not refuse it for size. */
struct image_info {
    int width, height;
    enum image_format format;
    enum image_mode mode;
};
enum ims_status image_info(const void *bytes, size_t n, const struct image_limits *lim,
                           struct image_info *out, struct ims_error *err);

/* Decodes the first frame of `bytes` in Pillow's decoded mode. `lim` may be
 * NULL (defaults). `bytes` is only borrowed for the call. On success *out
 * owns a new image (release with image_free); on failure *out is unchanged.
 * Errors: IMS_ERR_UNSUPPORTED (unknown format or unsupported variant),
 * IMS_ERR_TOO_LARGE (limits), IMS_ERR_CORRUPT (truncated or invalid data),
 * IMS_ERR_NOMEM. */
enum ims_status image_decode(const void *bytes, size_t n, const struct image_limits *lim,
                             struct image **out, struct ims_error *err);

/* Allocates a zero-filled image (palette: grey ramp, transparency -1).
 * On success *out owns it. Fails with IMS_ERR_INVALID on non-positive
 * sizes and IMS_ERR_NOMEM. Mostly for tests and synthetic inputs. */
enum ims_status image_new(int width, int height, enum image_mode mode, struct image **out,
                          struct ims_error *err);

/* Releases an image; NULL is fine. */
void image_free(struct image *img);

/* CLIP's reference preprocessing, bytes exact: Resize(size, BICUBIC) of the
 * shorter side, CenterCrop(size), convert("RGB"), all with Pillow 9.4's
 * arithmetic (see docs/internals/image.md). `size` is the model's input size
 * (224 for ViT-B/32, 336 for ViT-L/14-336), 1..4096.
 * rgb_out: (size, size, 3) uint8, HWC, caller-owned.
 * Allocates scratch memory (IMS_ERR_NOMEM possible); `img` is not modified. */
enum ims_status image_clip_preprocess(const struct image *img, int size, uint8_t *rgb_out,
                                      struct ims_error *err);

/* ToTensor + Normalize with CLIP's mean and std.
 * rgb: (size, size, 3) uint8 HWC; chw_out: (3, size, size) float32, caller-owned. */
void image_clip_normalize(const uint8_t *rgb, int size, float *chw_out);

/* Converts to RGB (alpha composited over white, so transparent PNGs look
 * right), scales so that the longer side is at most `max_side` (never
 * enlarges) with Pillow's bicubic resampler, and encodes a baseline JPEG of
 * the given quality (1..100) with libjpeg-turbo. On success *jpeg (release
 * with ims_free) and *n_bytes are set; optional *out_w / *out_h (may be NULL)
 * get the thumbnail's size. */
enum ims_status image_thumbnail_jpeg(const struct image *img, int max_side, int quality,
                                     uint8_t **jpeg, size_t *n_bytes, int *out_w, int *out_h,
                                     struct ims_error *err);

/* ---- ingestion: one decode feeds the CLIP input and the thumbnail ---------- */

enum image_decode_policy {
    /* Default. JPEGs much larger than needed are decoded with libjpeg-turbo's
     * DCT scaling to the smallest scale M/8 that keeps the shorter side >=
     * 2 x clip_size and the longer side >= 2 x thumb_side, and only when that
     * scale is <= IMAGE_PREPARE_MAX_SCALE/8; the resampling after it is
     * the exact path's. Bound (measured, tested): PSNR of the CLIP input
     * against the exact path >= IMAGE_PREPARE_MIN_PSNR_DB. Other formats
     * decode exactly. */
    IMAGE_DECODE_BOUNDED = 0,
    /* Pillow-exact bytes (image_decode + image_clip_preprocess). */
    IMAGE_DECODE_EXACT = 1,
};
#define IMAGE_PREPARE_MAX_SCALE 4
#define IMAGE_PREPARE_MIN_PSNR_DB 40.0

struct image_prepare_options {
    const struct image_limits *limits; /* NULL: image_limits_default */
    int clip_size;                     /* model input size (224), 1..4096 */
    int thumb_side;                    /* longest side of the thumbnail; 0: none */
    int thumb_quality;                 /* 1..100 */
    enum image_decode_policy decode;
};

struct image_prepared {
    enum image_format format;
    int width, height;                 /* of the file */
    int decoded_width, decoded_height; /* what the resampler read */
    uint8_t *thumb;                    /* JPEG (release with ims_free), NULL if none */
    size_t thumb_len;
    /* A thumbnail failure is not an error of the call (the image is still
     * searchable): thumb is NULL and thumb_error says why. */
    char thumb_error[160];
};

/* Decodes `bytes` once and produces both the CLIP input (rgb_out:
 * (clip_size, clip_size, 3) uint8 HWC, as image_clip_preprocess) and, when
 * o->thumb_side > 0, the JPEG thumbnail (as image_thumbnail_jpeg). Errors
 * are image_decode's. On success *out is filled (release out->thumb). */
enum ims_status image_prepare_for_ingest(const void *bytes, size_t n,
                                         const struct image_prepare_options *o,
                                         uint8_t *rgb_out, struct image_prepared *out,
                                         struct ims_error *err);

/* ---- EXIF ---------------------------------------------------------------- */

/* What a photo library reads from EXIF (JPEG APP1, PNG eXIf, WebP EXIF
 * chunk, TIFF IFD0, HEIF Exif item). Text fields are printable ASCII,
 * NUL-terminated, empty when absent. */
struct image_exif {
    enum image_format format; /* the container it was read from */
    int found;                /* an EXIF block was present and readable */
    int orientation;          /* 1..8 (1 = upright, also when absent). HEIF/AVIF:
                                 always 1, libheif applies the file's irot/imir */
    int has_taken;            /* DateTimeOriginal present and valid */
    int taken_has_offset;     /* OffsetTimeOriginal was present (else taken as UTC) */
    int64_t taken;            /* unix seconds */
    char make[64], model[64];
    int has_gps;
    double lat, lon;          /* degrees, south and west negative */
};

/* Reads the EXIF fields of an encoded image. Only an unknown format is an
 * error (IMS_ERR_UNSUPPORTED); no or a broken EXIF block gives found = 0 or
 * the fields read before the break. Never allocates more than the file's
 * EXIF block. */
enum ims_status image_exif_read(const void *bytes, size_t n, struct image_exif *out,
                                struct ims_error *err);

/* Parses a bare EXIF block (a TIFF header "II*\0" or "MM\0*" and its IFDs,
 * what a JPEG APP1 holds after "Exif\0\0") into *out, which it initialises
 * (format left at 0). Never fails: a broken block gives what was read. */
void image_exif_parse(const void *block, size_t n, struct image_exif *out);

/* "YYYY:MM:DD HH:MM:SS" (EXIF) plus an optional "+HH:MM" offset to unix
 * seconds (no offset: read as UTC). Returns 0, or -1 for an invalid text. */
int image_exif_parse_time(const char *datetime, const char *offset, int64_t *out);

/* A new image showing `img` upright for an EXIF orientation 1..8 (2 mirror,
 * 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse,
 * 8 rotate 90 counter-clockwise); 5..8 swap width and height. Exact pixel
 * moves, any mode. On success *out owns the new image. */
enum ims_status image_orient(const struct image *img, int orientation, struct image **out,
                             struct ims_error *err);

/* Replaces *img (decoded from `bytes`) by its upright version when the
 * file's EXIF orientation is not 1; *img is untouched when it is 1 or on
 * failure (IMS_ERR_NOMEM). */
enum ims_status image_exif_upright(const void *bytes, size_t n, struct image **img,
                                   struct ims_error *err);

#ifdef __cplusplus
}
#endif
#endif
