/* SPDX-License-Identifier: MIT */
/*
 * image_int.h: the contract between the image module's files (private).
 *
 * - image.c owns sniffing, limits, allocation and the decode dispatch;
 * - decode_<fmt>.c each implement one `image__decode_<fmt>`: with out == NULL
 *   they only read the headers and fill `info` (image_info), otherwise they
 *   also decode the first frame into a new image (image_decode);
 * - resample.c is Pillow's separable resampler (8-bit fixed point and the
 *   int32/double path) and its nearest-neighbour scaler, both computing only
 *   a window of the full output (the centre crop), which is exact because
 *   every output pixel depends only on its own coefficients;
 * - preprocess.c chains them into CLIP's pipeline; thumb.c encodes JPEGs.
 */
#ifndef IMGSEARCH_IMAGE_INT_H
#define IMGSEARCH_IMAGE_INT_H

#include "imgsearch/image.h"

typedef enum ims_status (*image__decode_fn)(const uint8_t *p, size_t n,
                                            const struct image_limits *lim,
                                            struct image_info *info, struct image **out,
                                            struct ims_error *err);

enum ims_status image__decode_jpeg(const uint8_t *p, size_t n, const struct image_limits *lim,
                                   struct image_info *info, struct image **out,
                                   struct ims_error *err);
/* The same with libjpeg-turbo's DCT scaling: the smallest scale M/8 whose
 * output keeps its shorter side >= min_short and its longer side >=
 * min_long (no scaling when none is smaller). The image has the scaled
 * size; `info` keeps the file's size. */
enum ims_status image__decode_jpeg_scaled(const uint8_t *p, size_t n,
                                          const struct image_limits *lim, int min_short,
                                          int min_long, struct image_info *info,
                                          struct image **out, struct ims_error *err);
enum ims_status image__decode_png(const uint8_t *p, size_t n, const struct image_limits *lim,
                                  struct image_info *info, struct image **out,
                                  struct ims_error *err);
enum ims_status image__decode_webp(const uint8_t *p, size_t n, const struct image_limits *lim,
                                   struct image_info *info, struct image **out,
                                   struct ims_error *err);
/* The same through libwebp's rescaler to the smallest size keeping the
 * shorter side >= min_short and the longer >= min_long, when that at least
 * halves a still, opaque image; else exactly. `info` keeps the file's size. */
enum ims_status image__decode_webp_scaled(const uint8_t *p, size_t n,
                                          const struct image_limits *lim, int min_short,
                                          int min_long, struct image_info *info,
                                          struct image **out, struct ims_error *err);
enum ims_status image__decode_gif(const uint8_t *p, size_t n, const struct image_limits *lim,
                                  struct image_info *info, struct image **out,
                                  struct ims_error *err);
enum ims_status image__decode_bmp(const uint8_t *p, size_t n, const struct image_limits *lim,
                                  struct image_info *info, struct image **out,
                                  struct ims_error *err);
/* HEIF/HEIC and AVIF (libheif); info->format tells which on entry. */
enum ims_status image__decode_heif(const uint8_t *p, size_t n, const struct image_limits *lim,
                                   struct image_info *info, struct image **out,
                                   struct ims_error *err);
enum ims_status image__decode_tiff(const uint8_t *p, size_t n, const struct image_limits *lim,
                                   struct image_info *info, struct image **out,
                                   struct ims_error *err);
/* The Exif payload (from the TIFF header on) of a HEIF's primary image.
 * On success *exif (release with ims_free) and *n_exif are set;
 * IMS_ERR_NOT_FOUND when it has none. */
enum ims_status image__heif_exif(const uint8_t *p, size_t n, uint8_t **exif, size_t *n_exif,
                                 struct ims_error *err);

/* Parses a TIFF-structured EXIF payload (from "II*\0"/"MM\0*" on) into x. */
void image__exif_parse_tiff(const uint8_t *p, size_t n, struct image_exif *x);

/* The limit every decoder applies to its header's size, before allocating
 * or decoding anything proportional to it (a new decoder calls it as soon as
 * it knows the canvas size): zero and negative sizes are CORRUPT; more than
 * lim->max_pixels, a side past 2^30, or an aspect ratio past lim->max_aspect
 * TOO_LARGE. `what` names the format in the message ("PNG"). The memory
 * budget (image__budget_reserve) is taken by image.c around every decode
 * from the header's size and mode, so decoders need nothing more. */
enum ims_status image__check_dims(int64_t w, int64_t h, const struct image_limits *lim,
                                  const char *what, struct ims_error *err);

/* Process-wide decode memory (image.c; see image_decode_budget_set): takes
 * `bytes` from the budget, waiting up to the configured time. IMS_ERR_BUSY
 * when it stays spent, IMS_ERR_TOO_LARGE when bytes exceed the budget.
 * Every successful reserve is paired with one release of the same bytes. */
enum ims_status image__budget_reserve(size_t bytes, struct ims_error *err);
void image__budget_release(size_t bytes);
/* libjpeg's max_memory_to_use (decode_jpeg.c); IMAGE_JPEG_MAX_MEMORY by
 * default, lowered by tests. Not thread-safe: set before decoding. */
extern size_t image__jpeg_max_memory;

/* ---- resample.c ------------------------------------------------------- */

/* A window [x0, x0 + win_w) x [y0, y0 + win_h) of the image that Pillow's
 * Image.resize((out_w, out_h), BICUBIC) would produce from `src`.
 * src: (in_h, src_stride) bytes, pixels of `ch` interleaved uint8 channels.
 * dst: (win_h, dst_stride) bytes, same layout. A pass whose size does not
 * change is skipped, as in Pillow. */
enum ims_status image__resample_u8(const uint8_t *src, int in_w, int in_h, size_t src_stride,
                                   int ch, int out_w, int out_h, int x0, int y0, int win_w,
                                   int win_h, uint8_t *dst, size_t dst_stride,
                                   struct ims_error *err);
/* The same for one int32 channel (mode I): double coefficients, rounding
 * half away from zero after each pass (Pillow's 32bpc path). */
enum ims_status image__resample_i32(const int32_t *src, int in_w, int in_h, size_t src_stride,
                                    int out_w, int out_h, int x0, int y0, int win_w, int win_h,
                                    int32_t *dst, size_t dst_stride, struct ims_error *err);
/* Pillow's NEAREST scaling (ImagingScaleAffine's double accumulator), for
 * pixels of `bpp` bytes. Same window convention. */
enum ims_status image__resize_nearest(const uint8_t *src, int in_w, int in_h, size_t src_stride,
                                      int bpp, int out_w, int out_h, int x0, int y0, int win_w,
                                      int win_h, uint8_t *dst, size_t dst_stride,
                                      struct ims_error *err);

/* Streaming form of the three functions above for decoders that produce
 * rows top to bottom (decode_png.c): begin with the same geometry, offer
 * every input row in order (rows the window does not need are ignored;
 * `image__rs_wants` says which are), then finish writes the window into
 * dst, byte-identical to the whole-image call. It holds only the needed
 * rows already reduced to the window's width; `image__rs_held` says how
 * many bytes. IMAGE__RS_U8: ch channels (image__resample_u8);
 * IMAGE__RS_I32: ch must be 4, one int32 (image__resample_i32);
 * IMAGE__RS_NEAREST: pixels of ch bytes (image__resize_nearest). */
enum image__rs_kind { IMAGE__RS_U8, IMAGE__RS_I32, IMAGE__RS_NEAREST };
struct image__rs;
/* resample.c takes AVX2 loops (same bytes) when the CPU has them; 0 forces
 * the scalar loops (tests compare the two). */
extern int image__resample_simd;
enum ims_status image__rs_begin(enum image__rs_kind kind, int in_w, int in_h, int ch, int out_w,
                                int out_h, int x0, int y0, int win_w, int win_h,
                                struct image__rs **out, struct ims_error *err);
int image__rs_wants(const struct image__rs *r, int y);
void image__rs_row(struct image__rs *r, int y, const uint8_t *row);
enum ims_status image__rs_finish(struct image__rs *r, uint8_t *dst, size_t dst_stride,
                                 struct ims_error *err);
size_t image__rs_held(const struct image__rs *r);
void image__rs_free(struct image__rs *r);

/* ---- preprocess.c / thumb.c pieces the streaming PNG path reuses -------- */

/* CLIP's resize geometry for a w x h image: the resized size and the crop's
 * top-left corner (TOO_LARGE for extreme aspect ratios). */
enum ims_status image__clip_geometry(int w, int h, int size, int *nw, int *nh, int *x0, int *y0,
                                     struct ims_error *err);
/* n pixels of one row in img's mode (img->palette for P) to RGB. */
void image__row_to_rgb(const struct image *img, const uint8_t *s, int n, uint8_t *d);
/* Pillow's premultiply (LA/RGBA, ch bytes per pixel) of n pixels, and the
 * undo applied after the resize. */
void image__premultiply_row(const uint8_t *s, uint8_t *d, int n, int ch);
void image__unpremultiply(uint8_t *p, size_t n_px, int ch);
/* The thumbnail's size for w x h under max_side (never enlarging), its
 * channels for img's mode (1 grey, 3 RGB), one row flattened to them, and
 * the encoder. */
void image__thumb_size(int w, int h, int max_side, int *tw, int *th);
int image__thumb_channels(enum image_mode mode);
void image__thumb_flatten_row(const struct image *img, const uint8_t *s, int n, uint8_t *d);
enum ims_status image__thumb_encode(const uint8_t *px, int w, int h, int ch, int quality,
                                    uint8_t **jpeg, size_t *n_bytes, struct ims_error *err);

/* Non-interlaced PNGs for image_prepare_for_ingest (upright only): rows are
 * decoded one at a time and fed to both resamplers, never holding the whole
 * image; the CLIP input and the thumbnail are byte-identical to decode +
 * image_clip_preprocess + image_thumbnail_jpeg. *streamed = 0 (and nothing
 * else done) when the file must take the whole decode: interlaced, or a
 * thumbnail that needs no resize. The budget is reserved for what it holds. */
enum ims_status image__prepare_png_stream(const uint8_t *p, size_t n,
                                          const struct image_limits *lim,
                                          const struct image_prepare_options *o,
                                          uint8_t *rgb_out, struct image_prepared *out,
                                          int *streamed, size_t *held, struct ims_error *err);

#endif
