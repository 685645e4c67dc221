/* SPDX-License-Identifier: MIT */
/*
 * preprocess.c: CLIP's reference preprocessing (OpenAI clip.load() on
 * torchvision 0.14 + Pillow 9.4), byte for byte:
 *
 *   Resize(size, BICUBIC)  shorter side -> size, longer -> int(size * long / short)
 *   CenterCrop(size)       top = round((h - size) / 2) with Python's
 *                          round-half-to-even
 *   convert("RGB")
 *   ToTensor + Normalize   (image_clip_normalize)
 *
 * The resize happens in the decoded mode (tests/golden/clip/images and
 * the fixtures' PREPROCESSING.md, restated in docs/internals/image.md):
 *   1, P       NEAREST (Pillow's Image.resize switches the filter), then the
 *              palette lookup in convert("RGB");
 *   LA, RGBA   premultiplied: c' = MULDIV255(c, a), resized, then
 *              c = a in {0, 255} ? c' : min(255, 255 * c' / a) (integer division);
 *   L, RGB, CMYK  8-bit fixed-point convolution per channel;
 *   I          double convolution, then convert("RGB") clips to 0..255;
 *   and a resize to the same size is a plain copy (no premultiply round trip).
 * Only the crop window of the resized image is computed (see resample.c).
 */
#include <string.h>

#include "image_int.h"

static inline uint8_t muldiv255(int a, int b)
{
    int t = a * b + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

/* Python's round() on d / 2 for an integer d >= 0: halves go to even. */
static int half_round_even(int d)
{
    int q = d / 2;
    if (d % 2 == 0)
        return q;
    return (q % 2 == 0) ? q : q + 1;
}

/* Converts one window row in the image's mode to RGB. */
void image__row_to_rgb(const struct image *img, const uint8_t *s, int n, uint8_t *d)
{
    switch (img->mode) {
    case IMAGE_MODE_1:
    case IMAGE_MODE_L:
        for (int x = 0; x < n; x++, d += 3)
            d[0] = d[1] = d[2] = s[x];
        break;
    case IMAGE_MODE_P:
        for (int x = 0; x < n; x++, d += 3)
            memcpy(d, img->palette + 3 * s[x], 3);
        break;
    case IMAGE_MODE_LA:
        for (int x = 0; x < n; x++, d += 3)
            d[0] = d[1] = d[2] = s[2 * x];
        break;
    case IMAGE_MODE_RGB:
        memcpy(d, s, (size_t)n * 3);
        break;
    case IMAGE_MODE_RGBA:
        for (int x = 0; x < n; x++, d += 3)
            memcpy(d, s + 4 * x, 3);
        break;
    case IMAGE_MODE_CMYK:
        /* Pillow's cmyk2rgb: nk - MULDIV255(c, nk) with nk = 255 - k */
        for (int x = 0; x < n; x++, d += 3) {
            const uint8_t *c = s + 4 * x;
            int nk = 255 - c[3];
            for (int k = 0; k < 3; k++)
                d[k] = (uint8_t)(nk - muldiv255(c[k], nk));
        }
        break;
    case IMAGE_MODE_I:
        for (int x = 0; x < n; x++, d += 3) {
            int32_t v;
            memcpy(&v, s + 4 * x, 4);
            d[0] = d[1] = d[2] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : v);
        }
        break;
    }
}

void image__premultiply_row(const uint8_t *s, uint8_t *d, int n, int ch)
{
    for (int x = 0; x < n; x++, s += ch, d += ch) {
        int a = s[ch - 1];
        for (int c = 0; c < ch - 1; c++)
            d[c] = muldiv255(s[c], a);
        d[ch - 1] = (uint8_t)a;
    }
}

/* Copy of an LA or RGBA image with premultiplied colour (Pillow's La/RGBa). */
static enum ims_status premultiply(const struct image *img, uint8_t **out, struct ims_error *err)
{
    int ch = image_mode_bytes(img->mode);
    uint8_t *buf = ims_malloc(img->stride * (size_t)img->height);
    if (!buf)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for premultiplied alpha");
    for (int y = 0; y < img->height; y++)
        image__premultiply_row(img->pixels + (size_t)y * img->stride,
                               buf + (size_t)y * img->stride, img->width, ch);
    *out = buf;
    return IMS_OK;
}

void image__unpremultiply(uint8_t *p, size_t n_px, int ch)
{
    for (size_t i = 0; i < n_px; i++, p += ch) {
        unsigned a = p[ch - 1];
        if (a == 0 || a == 255)
            continue;
        for (int c = 0; c < ch - 1; c++) {
            unsigned v = 255u * p[c] / a;
            p[c] = (uint8_t)(v > 255 ? 255 : v);
        }
    }
}

enum ims_status image__clip_geometry(int w, int h, int size, int *nw_out, int *nh_out, int *x0,
                                     int *y0, struct ims_error *err)
{
    int64_t nw, nh;
    if (w <= h) {
        nw = size;
        nh = (int64_t)((double)((int64_t)size * h) / w);
    } else {
        nh = size;
        nw = (int64_t)((double)((int64_t)size * w) / h);
    }
    IMS_RETURN_ERROR_IF(nw > (1 << 30) || nh > (1 << 30), err, IMS_ERR_TOO_LARGE,
                        "image aspect ratio %dx%d is too extreme to resize", w, h);
    *nw_out = (int)nw;
    *nh_out = (int)nh;
    *x0 = half_round_even((int)nw - size);
    *y0 = half_round_even((int)nh - size);
    return IMS_OK;
}

enum ims_status image_clip_preprocess(const struct image *img, int size, uint8_t *rgb_out,
                                      struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!img || !img->pixels || img->width <= 0 || img->height <= 0, err,
                        IMS_ERR_INVALID, "no image to preprocess");
    IMS_RETURN_ERROR_IF(size < 1 || size > 4096, err, IMS_ERR_INVALID,
                        "preprocess size %d is outside 1..4096", size);
    enum ims_status st = IMS_OK;
    uint8_t *win = NULL;  /* (size, size, bpp) the crop window in the image's mode */
    uint8_t *premul = NULL;
    int w = img->width, h = img->height;
    int nw, nh, x0, y0;
    if ((st = image__clip_geometry(w, h, size, &nw, &nh, &x0, &y0, err)) != IMS_OK)
        return st;
    int same = nw == w && nh == h;
    int bpp = image_mode_bytes(img->mode);
    size_t win_stride = (size_t)size * bpp;
    uint8_t *dst;
    if (img->mode == IMAGE_MODE_RGB) {
        dst = rgb_out; /* resample straight into the output */
    } else {
        win = ims_malloc(win_stride * (size_t)size);
        if (!win)
            return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for preprocessing");
        dst = win;
    }

    if (same) {
        for (int y = 0; y < size; y++)
            memcpy(dst + (size_t)y * win_stride,
                   img->pixels + (size_t)(y0 + y) * img->stride + (size_t)x0 * bpp, win_stride);
    } else if (img->mode == IMAGE_MODE_P || img->mode == IMAGE_MODE_1) {
        st = image__resize_nearest(img->pixels, w, h, img->stride, 1, (int)nw, (int)nh, x0, y0,
                                   size, size, dst, win_stride, err);
    } else if (img->mode == IMAGE_MODE_I) {
        st = image__resample_i32((const int32_t *)(const void *)img->pixels, w, h,
                                 img->stride / 4, (int)nw, (int)nh, x0, y0, size, size,
                                 (int32_t *)(void *)dst, (size_t)size, err);
    } else if (img->mode == IMAGE_MODE_LA || img->mode == IMAGE_MODE_RGBA) {
        if ((st = premultiply(img, &premul, err)) != IMS_OK)
            goto out;
        st = image__resample_u8(premul, w, h, img->stride, bpp, (int)nw, (int)nh, x0, y0, size,
                                size, dst, win_stride, err);
        if (st == IMS_OK)
            image__unpremultiply(dst, (size_t)size * size, bpp);
    } else {
        st = image__resample_u8(img->pixels, w, h, img->stride, bpp, (int)nw, (int)nh, x0, y0,
                                size, size, dst, win_stride, err);
    }
    if (st != IMS_OK)
        goto out;
    if (dst != rgb_out)
        for (int y = 0; y < size; y++)
            image__row_to_rgb(img, dst + (size_t)y * win_stride, size, rgb_out + (size_t)y * size * 3);
out:
    ims_free(win);
    ims_free(premul);
    return st;
}

void image_clip_normalize(const uint8_t *rgb, int size, float *chw_out)
{
    /* torchvision: ToTensor divides by 255 in float32, Normalize subtracts
     * the mean and divides by the std, both float32 tensors. */
    static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    static const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    size_t plane = (size_t)size * size;
    for (int c = 0; c < 3; c++) {
        float *o = chw_out + c * plane;
        for (size_t i = 0; i < plane; i++)
            o[i] = ((float)rgb[3 * i + c] / 255.0f - mean[c]) / std[c];
    }
}
