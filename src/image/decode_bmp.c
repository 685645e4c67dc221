/* SPDX-License-Identifier: MIT */
/*
 * decode_bmp.c: a small, strict BMP parser of our own (no library needed),
 * producing the modes Pillow 9.4's BmpImagePlugin does.
 *
 * Layout (little-endian):
 *   OFFSET SIZE DESCRIPTION
 *   0      2    "BM"
 *   2      4    file size (ignored, often wrong)
 *   10     4    offset of the pixel data from the start of the file
 *   14     4    info header size: 12 (OS/2 core), 40, 52, 56, 64, 108, 124
 *   18     2/4  width  (core: u16; else i32)
 *   20/22  2/4  height (core: u16; else i32, negative = top-down rows)
 *   ..     2    planes, then 2 bits per pixel
 *   30     4    compression: 0 RGB, 3 BITFIELDS, 6 ALPHABITFIELDS (1/2 RLE: refused)
 *   46     4    colours used (0 = 2^bits)
 *   54     12/16 channel masks (headers >= 52 bytes; or right after a 40-byte
 *               header when the compression is BITFIELDS, then only R, G, B)
 *   then the palette (4 bytes B G R X per entry; 3 for OS/2 core headers)
 * Rows are padded to 4 bytes and stored bottom-up unless height < 0.
 *
 * Modes, following Pillow: 24 bits -> RGB; 32 bits BI_RGB -> RGB (the 4th
 * byte is ignored); 32-bit bitfields with byte-aligned masks -> RGB, or RGBA
 * when there is an alpha mask (all-zero masks mean BGRA); 16 bits -> RGB
 * scaled with v * 255 / max (5-5-5 by default, 5-6-5 with those masks);
 * 1/4/8 bits -> P, except that an 8-bit palette that is exactly the grey
 * ramp becomes L and a 1-bit black/white palette becomes "1" (Pillow "ditches
 * the palette"; that changes how the image is resized). Pillow would also
 * turn a 4-bit grey-ramp palette into L but then unpack the rows as 8-bit,
 * which is a bug we do not reproduce: we keep such files as P.
 *
 * Every size is validated against the input length before use: the pixel
 * array must fit (else "truncated BMP") and dimensions are checked against
 * the limits before allocating.
 */
#include <string.h>

#include "image_int.h"

static uint32_t rd16(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

/* Byte index (0..3) of an 8-bit mask aligned on a byte, or -1. */
static int mask_byte(uint32_t m)
{
    for (int b = 0; b < 4; b++)
        if (m == 0xFFu << (8 * b))
            return b;
    return -1;
}

enum ims_status image__decode_bmp(const uint8_t *p, size_t n, const struct image_limits *lim,
                                  struct image_info *info, struct image **out,
                                  struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(n < 18, err, IMS_ERR_CORRUPT,
                        "truncated BMP: %zu bytes, the headers need at least 18", n);
    uint32_t off_bits = rd32(p + 10);
    uint32_t hsize = rd32(p + 14);
    IMS_RETURN_ERROR_IF(hsize != 12 && hsize != 40 && hsize != 52 && hsize != 56 &&
                            hsize != 64 && hsize != 108 && hsize != 124,
                        err, IMS_ERR_UNSUPPORTED, "BMP with an unknown header size %u", hsize);
    IMS_RETURN_ERROR_IF(n < 14 + (size_t)hsize, err, IMS_ERR_CORRUPT,
                        "truncated BMP: data ends at byte %zu inside the %u-byte header", n,
                        hsize);
    const uint8_t *h = p + 14;
    int64_t w, ht;
    uint32_t bits, compression = 0, colors = 0;
    uint32_t masks[4] = {0, 0, 0, 0};
    size_t pal_at, pal_entry;
    int core = hsize == 12;
    if (core) {
        w = rd16(h + 4);
        ht = rd16(h + 6);
        bits = rd16(h + 10);
        pal_entry = 3;
        pal_at = 14 + 12;
    } else {
        w = (int32_t)rd32(h + 4);
        ht = (int32_t)rd32(h + 8);
        bits = rd16(h + 14);
        compression = rd32(h + 16);
        colors = rd32(h + 32);
        pal_entry = 4;
        pal_at = 14 + (size_t)hsize;
        if (compression == 3 || compression == 6) {
            if (hsize >= 52) {
                for (int i = 0; i < 3; i++)
                    masks[i] = rd32(h + 40 + 4 * i);
                if (hsize >= 56)
                    masks[3] = rd32(h + 52);
            } else {
                IMS_RETURN_ERROR_IF(n < pal_at + 12, err, IMS_ERR_CORRUPT,
                                    "truncated BMP: data ends at byte %zu inside the bit masks",
                                    n);
                for (int i = 0; i < 3; i++)
                    masks[i] = rd32(p + pal_at + 4 * i);
                pal_at += 12;
            }
        }
    }
    int top_down = 0;
    if (ht < 0) {
        IMS_RETURN_ERROR_IF(ht == INT32_MIN, err, IMS_ERR_CORRUPT, "corrupt BMP: height %lld",
                            (long long)ht);
        top_down = 1;
        ht = -ht;
    }
    IMS_RETURN_ERROR_IF(compression == 1 || compression == 2, err, IMS_ERR_UNSUPPORTED,
                        "run-length encoded BMP (RLE%d) is not supported",
                        compression == 1 ? 8 : 4);
    IMS_RETURN_ERROR_IF(compression != 0 && compression != 3 && compression != 6, err,
                        IMS_ERR_UNSUPPORTED, "BMP compression %u is not supported", compression);
    IMS_RETURN_ERROR_IF(bits != 1 && bits != 4 && bits != 8 && bits != 16 && bits != 24 &&
                            bits != 32,
                        err, IMS_ERR_UNSUPPORTED, "BMP with %u bits per pixel", bits);
    IMS_RETURN_ERROR_IF((compression == 3 || compression == 6) && bits != 16 && bits != 24 &&
                            bits != 32,
                        err, IMS_ERR_CORRUPT, "corrupt BMP: bit fields with %u bits per pixel",
                        bits);
    enum ims_status st = image__check_dims(w, ht, lim, "BMP", err);
    if (st != IMS_OK)
        return st;

    /* pixel format */
    enum image_mode mode = IMAGE_MODE_RGB;
    int idx[4] = {2, 1, 0, -1}; /* byte of R, G, B, A within a 24/32-bit pixel */
    int is565 = 0;
    uint8_t pal[256 * 3];
    int n_pal = 0;
    if (bits <= 8) {
        uint32_t max_colors = 1u << bits;
        if (colors == 0)
            colors = max_colors;
        IMS_RETURN_ERROR_IF(colors > 256, err, IMS_ERR_CORRUPT,
                            "corrupt BMP: palette of %u colours", colors);
        IMS_RETURN_ERROR_IF(pal_at + (size_t)colors * pal_entry > n, err, IMS_ERR_CORRUPT,
                            "truncated BMP: data ends at byte %zu inside the palette", n);
        n_pal = (int)colors;
        for (int i = 0; i < n_pal; i++) {
            const uint8_t *e = p + pal_at + (size_t)i * pal_entry;
            pal[3 * i] = e[2];
            pal[3 * i + 1] = e[1];
            pal[3 * i + 2] = e[0];
        }
        mode = IMAGE_MODE_P;
        int grey = 1;
        for (int i = 0; i < n_pal && grey; i++) {
            int v = bits == 1 ? (i ? 255 : 0) : i; /* 1 bit: black/white; else ramp */
            grey = pal[3 * i] == v && pal[3 * i + 1] == v && pal[3 * i + 2] == v;
        }
        if (grey && bits == 8)
            mode = IMAGE_MODE_L;
        else if (grey && bits == 1)
            mode = IMAGE_MODE_1;
    } else if (bits == 16) {
        if (compression != 0) {
            if (masks[0] == 0xF800 && masks[1] == 0x7E0 && masks[2] == 0x1F)
                is565 = 1;
            else
                IMS_RETURN_ERROR_IF(!(masks[0] == 0x7C00 && masks[1] == 0x3E0 && masks[2] == 0x1F),
                                    err, IMS_ERR_UNSUPPORTED,
                                    "16-bit BMP with unsupported bit fields");
        }
    } else if (bits == 24) {
        IMS_RETURN_ERROR_IF(compression != 0 && !(masks[0] == 0xFF0000 && masks[1] == 0xFF00 &&
                                                  masks[2] == 0xFF),
                            err, IMS_ERR_UNSUPPORTED, "24-bit BMP with unsupported bit fields");
    } else if (compression != 0) { /* 32-bit bit fields */
        if (!masks[0] && !masks[1] && !masks[2] && !masks[3]) {
            idx[3] = 3; /* Pillow: all-zero masks read as BGRA */
        } else {
            for (int c = 0; c < 3; c++)
                idx[c] = mask_byte(masks[c]);
            idx[3] = masks[3] ? mask_byte(masks[3]) : -1;
            IMS_RETURN_ERROR_IF(idx[0] < 0 || idx[1] < 0 || idx[2] < 0 ||
                                    (masks[3] && idx[3] < 0),
                                err, IMS_ERR_UNSUPPORTED,
                                "32-bit BMP with unsupported bit fields");
        }
        if (idx[3] >= 0)
            mode = IMAGE_MODE_RGBA;
    }

    /* pixel array */
    size_t row_bytes = (((size_t)w * bits + 31) >> 3) & ~(size_t)3;
    size_t data_at = off_bits ? off_bits : pal_at + (size_t)n_pal * pal_entry;
    IMS_RETURN_ERROR_IF(data_at > n, err, IMS_ERR_CORRUPT,
                        "truncated BMP: pixel data offset %zu is past the end (%zu bytes)",
                        data_at, n);
    size_t need = row_bytes * (size_t)ht; /* w, ht <= 2^30 and w*ht bounded: no overflow */
    IMS_RETURN_ERROR_IF(need > n - data_at, err, IMS_ERR_CORRUPT,
                        "truncated BMP: data ends at byte %zu, the pixels need %zu bytes from "
                        "byte %zu",
                        n, need, data_at);
    info->width = (int)w;
    info->height = (int)ht;
    info->mode = mode;
    if (!out)
        return IMS_OK;

    struct image *im = NULL;
    if ((st = image_new((int)w, (int)ht, mode, &im, err)) != IMS_OK)
        return st;
    if (mode == IMAGE_MODE_P) {
        memcpy(im->palette, pal, (size_t)n_pal * 3);
        im->n_palette = n_pal;
    }
    for (int64_t y = 0; y < ht; y++) {
        const uint8_t *s = p + data_at + (size_t)y * row_bytes;
        uint8_t *d = im->pixels + (size_t)(top_down ? y : ht - 1 - y) * im->stride;
        switch (bits) {
        case 1:
        case 4:
        case 8: {
            int per = 8 / (int)bits;
            uint8_t m = (uint8_t)((1u << bits) - 1);
            for (int64_t x = 0; x < w; x++) {
                int shift = (int)(8 - bits * (uint32_t)(x % per + 1));
                uint8_t v = (uint8_t)((s[x / per] >> shift) & m);
                d[x] = mode == IMAGE_MODE_1 ? (v ? 255 : 0) : v;
            }
            break;
        }
        case 16:
            for (int64_t x = 0; x < w; x++, d += 3) {
                uint32_t px = rd16(s + 2 * x);
                if (is565) {
                    d[0] = (uint8_t)(((px >> 11) & 31) * 255 / 31);
                    d[1] = (uint8_t)(((px >> 5) & 63) * 255 / 63);
                } else {
                    d[0] = (uint8_t)(((px >> 10) & 31) * 255 / 31);
                    d[1] = (uint8_t)(((px >> 5) & 31) * 255 / 31);
                }
                d[2] = (uint8_t)((px & 31) * 255 / 31);
            }
            break;
        case 24:
            for (int64_t x = 0; x < w; x++, d += 3, s += 3) {
                d[0] = s[2];
                d[1] = s[1];
                d[2] = s[0];
            }
            break;
        default: /* 32 */
            for (int64_t x = 0; x < w; x++, s += 4) {
                *d++ = s[idx[0]];
                *d++ = s[idx[1]];
                *d++ = s[idx[2]];
                if (mode == IMAGE_MODE_RGBA)
                    *d++ = s[idx[3]];
            }
            break;
        }
    }
    *out = im;
    return IMS_OK;
}
