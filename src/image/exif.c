/* SPDX-License-Identifier: MIT */
/*
 * exif.c: our own small EXIF reader (what a photo library needs, nothing
 * more): Orientation, DateTimeOriginal + OffsetTimeOriginal as unix seconds,
 * Make, Model and the GPS position; and the orientation transform itself.
 *
 * Where the EXIF block lives depends on the container:
 *   JPEG  an APP1 segment starting "Exif\0\0" (before the first SOS);
 *   PNG   an eXIf chunk (PNG 1.5 extension, anywhere before IEND);
 *   WebP  an "EXIF" RIFF chunk (VP8X files);
 *   TIFF  the file's own first IFD is the EXIF IFD0;
 *   HEIF  an "Exif" metadata item, read through libheif (decode_heif.c).
 * All of them hold the same payload: a TIFF header ("II*\0" or "MM\0*")
 * and IFD0, which points to the Exif sub-IFD (0x8769) and the GPS IFD
 * (0x8825). Every offset is relative to the TIFF header and checked against
 * the block's end before it is read; IFD entry counts are bounded; a broken
 * block yields what was read before the break (EXIF is advisory: a photo
 * with a mangled maker note still ingests).
 *
 * HEIF/AVIF: libheif already applied the file's irot/imir boxes (the
 * normative orientation); the Exif tag inside is informative and reported
 * as 1 so that nothing is rotated twice.
 */
#include <stdio.h>
#include <string.h>

#include "image_int.h"

/* ---- TIFF-structured payload ---------------------------------------------- */

struct tiffbuf {
    const uint8_t *p;
    size_t n;
    int be; /* big-endian ("MM") */
};

static uint32_t rd16(const struct tiffbuf *t, size_t at)
{
    const uint8_t *q = t->p + at;
    return t->be ? (uint32_t)q[0] << 8 | q[1] : (uint32_t)q[1] << 8 | q[0];
}

static uint32_t rd32(const struct tiffbuf *t, size_t at)
{
    const uint8_t *q = t->p + at;
    return t->be ? (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3]
                 : (uint32_t)q[3] << 24 | (uint32_t)q[2] << 16 | (uint32_t)q[1] << 8 | q[0];
}

static size_t type_size(uint32_t type)
{
    switch (type) {
    case 1: case 2: case 6: case 7: return 1; /* BYTE ASCII SBYTE UNDEFINED */
    case 3: case 8: return 2;                 /* SHORT SSHORT */
    case 4: case 9: case 11: return 4;        /* LONG SLONG FLOAT */
    case 5: case 10: case 12: return 8;       /* RATIONAL SRATIONAL DOUBLE */
    default: return 0;
    }
}

struct entry {
    uint32_t tag, type, count;
    size_t at; /* where the value's bytes are, checked to fit in the buffer */
};

#define MAX_ENTRIES 512

/* Reads the IFD at `off`; calls back for every entry whose value is in
 * bounds. Returns -1 when the IFD itself is out of bounds. */
static int walk_ifd(const struct tiffbuf *t, uint32_t off,
                    void (*fn)(const struct tiffbuf *, const struct entry *, void *), void *ud)
{
    if (off < 8 || (size_t)off + 2 > t->n)
        return -1;
    uint32_t count = rd16(t, off);
    if (count > MAX_ENTRIES)
        return -1;
    for (uint32_t i = 0; i < count; i++) {
        size_t e = (size_t)off + 2 + 12 * (size_t)i;
        if (e + 12 > t->n)
            return -1;
        struct entry en = {rd16(t, e), rd16(t, e + 2), rd32(t, e + 4), 0};
        size_t sz = type_size(en.type);
        if (!sz || en.count > (1u << 20))
            continue;
        size_t bytes = sz * en.count;
        en.at = bytes <= 4 ? e + 8 : rd32(t, e + 8);
        if (en.at > t->n || bytes > t->n - en.at)
            continue;
        fn(t, &en, ud);
    }
    return 0;
}

static uint32_t entry_uint(const struct tiffbuf *t, const struct entry *e)
{
    if (e->type == 3)
        return rd16(t, e->at);
    if (e->type == 4)
        return rd32(t, e->at);
    if (e->type == 1)
        return t->p[e->at];
    return 0;
}

/* ASCII value, trimmed of trailing NULs and spaces, made printable. */
static void entry_text(const struct tiffbuf *t, const struct entry *e, char *out, size_t cap)
{
    size_t k = 0;
    if (e->type == 2 || e->type == 7 || e->type == 1)
        for (uint32_t i = 0; i < e->count && k + 1 < cap; i++) {
            uint8_t c = t->p[e->at + i];
            if (!c)
                break;
            out[k++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
        }
    while (k && out[k - 1] == ' ')
        k--;
    out[k] = 0;
}

static double entry_rational(const struct tiffbuf *t, const struct entry *e, uint32_t i, int *ok)
{
    if (e->type != 5 || i >= e->count) {
        *ok = 0;
        return 0;
    }
    uint32_t num = rd32(t, e->at + 8 * (size_t)i), den = rd32(t, e->at + 8 * (size_t)i + 4);
    if (!den) {
        *ok = 0;
        return 0;
    }
    return (double)num / den;
}

struct walk {
    struct image_exif *x;
    uint32_t exif_ifd, gps_ifd;
    char dto[32], offset[16];
    char lat_ref, lon_ref;
    double lat, lon;
    int lat_ok, lon_ok;
};

static void on_ifd0(const struct tiffbuf *t, const struct entry *e, void *ud)
{
    struct walk *w = ud;
    switch (e->tag) {
    case 0x0112: {
        uint32_t o = entry_uint(t, e);
        if (o >= 1 && o <= 8)
            w->x->orientation = (int)o;
        break;
    }
    case 0x010F: entry_text(t, e, w->x->make, sizeof(w->x->make)); break;
    case 0x0110: entry_text(t, e, w->x->model, sizeof(w->x->model)); break;
    case 0x8769: w->exif_ifd = entry_uint(t, e); break;
    case 0x8825: w->gps_ifd = entry_uint(t, e); break;
    }
}

static void on_exif_ifd(const struct tiffbuf *t, const struct entry *e, void *ud)
{
    struct walk *w = ud;
    if (e->tag == 0x9003)
        entry_text(t, e, w->dto, sizeof(w->dto));
    else if (e->tag == 0x9011)
        entry_text(t, e, w->offset, sizeof(w->offset));
}

static double dms(const struct tiffbuf *t, const struct entry *e, int *ok)
{
    *ok = e->count >= 3;
    double d = entry_rational(t, e, 0, ok), m = entry_rational(t, e, 1, ok),
           s = entry_rational(t, e, 2, ok);
    return d + m / 60 + s / 3600;
}

static void on_gps_ifd(const struct tiffbuf *t, const struct entry *e, void *ud)
{
    struct walk *w = ud;
    char ref[4];
    switch (e->tag) {
    case 1: entry_text(t, e, ref, sizeof(ref)), w->lat_ref = ref[0]; break;
    case 2: w->lat = dms(t, e, &w->lat_ok); break;
    case 3: entry_text(t, e, ref, sizeof(ref)), w->lon_ref = ref[0]; break;
    case 4: w->lon = dms(t, e, &w->lon_ok); break;
    }
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * well-known civil-date arithmetic, written out from its description). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int image_exif_parse_time(const char *dt, const char *offset, int64_t *out)
{
    /* "YYYY:MM:DD HH:MM:SS" (EXIF 2.32 4.6.5); '-' accepted as the date separator */
    int Y, M, D, h, mi, s;
    if (!dt || strlen(dt) < 19 || digits(dt, 4, &Y) || digits(dt + 5, 2, &M) ||
        digits(dt + 8, 2, &D) || digits(dt + 11, 2, &h) || digits(dt + 14, 2, &mi) ||
        digits(dt + 17, 2, &s) || (dt[4] != ':' && dt[4] != '-') || dt[7] != dt[4] ||
        (dt[10] != ' ' && dt[10] != 'T') || dt[13] != ':' || dt[16] != ':')
        return -1;
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (Y < 1800 || M < 1 || M > 12 || D < 1 || D > mdays[M - 1] || h > 23 || mi > 59 || s > 60)
        return -1;
    if (M == 2 && D == 29 && !((Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0))
        return -1;
    int64_t t = days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + s;
    /* OffsetTimeOriginal "+HH:MM" / "-HH:MM": local = UTC + offset */
    int oh, om;
    if (offset && strlen(offset) >= 6 && (offset[0] == '+' || offset[0] == '-') &&
        !digits(offset + 1, 2, &oh) && offset[3] == ':' && !digits(offset + 4, 2, &om) &&
        oh <= 14 && om <= 59) {
        int64_t off = oh * 3600 + om * 60;
        t -= offset[0] == '+' ? off : -off;
    }
    *out = t;
    return 0;
}

void image__exif_parse_tiff(const uint8_t *p, size_t n, struct image_exif *x)
{
    if (n < 8)
        return;
    struct tiffbuf t = {p, n, p[0] == 'M'};
    if (!((p[0] == 'I' && p[1] == 'I') || (p[0] == 'M' && p[1] == 'M')) || rd16(&t, 2) != 42)
        return;
    struct walk w = {.x = x};
    if (walk_ifd(&t, rd32(&t, 4), on_ifd0, &w) < 0)
        return;
    x->found = 1;
    if (w.exif_ifd && walk_ifd(&t, w.exif_ifd, on_exif_ifd, &w) == 0 && w.dto[0]) {
        int64_t when;
        if (image_exif_parse_time(w.dto, w.offset[0] ? w.offset : NULL, &when) == 0) {
            x->has_taken = 1;
            x->taken = when;
            x->taken_has_offset = w.offset[0] != 0;
        }
    }
    if (w.gps_ifd && walk_ifd(&t, w.gps_ifd, on_gps_ifd, &w) == 0 && w.lat_ok && w.lon_ok &&
        (w.lat_ref == 'N' || w.lat_ref == 'S') && (w.lon_ref == 'E' || w.lon_ref == 'W') &&
        w.lat <= 90 && w.lon <= 180) {
        x->has_gps = 1;
        x->lat = w.lat_ref == 'S' ? -w.lat : w.lat;
        x->lon = w.lon_ref == 'W' ? -w.lon : w.lon;
    }
}

void image_exif_parse(const void *block, size_t n, struct image_exif *out)
{
    memset(out, 0, sizeof(*out));
    out->orientation = 1;
    if (block)
        image__exif_parse_tiff(block, n, out);
}

/* ---- containers ----------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static void from_jpeg(const uint8_t *p, size_t n, struct image_exif *x)
{
    size_t at = 2;
    while (at + 4 <= n) {
        if (p[at] != 0xFF)
            return;
        uint8_t m = p[at + 1];
        if (m == 0xFF) { /* fill byte */
            at++;
            continue;
        }
        if (m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01) {
            at += 2;
            continue;
        }
        if (m == 0xDA || m == 0xD9) /* start of scan: no more metadata */
            return;
        size_t len = (size_t)p[at + 2] << 8 | p[at + 3];
        if (len < 2 || at + 2 + len > n)
            return;
        if (m == 0xE1 && len >= 8 && !memcmp(p + at + 4, "Exif\0\0", 6)) {
            image__exif_parse_tiff(p + at + 10, len - 8, x);
            return;
        }
        at += 2 + len;
    }
}

static void from_png(const uint8_t *p, size_t n, struct image_exif *x)
{
    size_t at = 8;
    while (at + 12 <= n) {
        uint32_t len = be32(p + at);
        if (len > n - at - 12)
            return;
        if (!memcmp(p + at + 4, "eXIf", 4)) {
            image__exif_parse_tiff(p + at + 8, len, x);
            return;
        }
        if (!memcmp(p + at + 4, "IEND", 4))
            return;
        at += 12 + (size_t)len;
    }
}

static void from_webp(const uint8_t *p, size_t n, struct image_exif *x)
{
    size_t at = 12;
    while (at + 8 <= n) {
        uint32_t len = le32(p + at + 4);
        if (len > n - at - 8)
            return;
        if (!memcmp(p + at, "EXIF", 4)) {
            const uint8_t *q = p + at + 8;
            size_t qn = len;
            if (qn >= 6 && !memcmp(q, "Exif\0\0", 6)) /* some writers keep JPEG's prefix */
                q += 6, qn -= 6;
            image__exif_parse_tiff(q, qn, x);
            return;
        }
        at += 8 + (size_t)len + (len & 1);
    }
}

enum ims_status image_exif_read(const void *bytes, size_t n, struct image_exif *out,
                                struct ims_error *err)
{
    struct image_exif x;
    memset(&x, 0, sizeof(x));
    x.orientation = 1;
    enum image_format f;
    enum ims_status st = image_sniff(bytes, n, &f, err);
    if (st != IMS_OK)
        return st;
    const uint8_t *p = bytes;
    switch (f) {
    case IMAGE_FORMAT_JPEG: from_jpeg(p, n, &x); break;
    case IMAGE_FORMAT_PNG: from_png(p, n, &x); break;
    case IMAGE_FORMAT_WEBP: from_webp(p, n, &x); break;
    case IMAGE_FORMAT_TIFF: image__exif_parse_tiff(p, n, &x); break;
    case IMAGE_FORMAT_HEIF:
    case IMAGE_FORMAT_AVIF: {
        uint8_t *blk = NULL;
        size_t nb = 0;
        struct ims_error e2 = {0};
        if (image__heif_exif(p, n, &blk, &nb, &e2) == IMS_OK) {
            image__exif_parse_tiff(blk, nb, &x);
            ims_free(blk);
        }
        x.orientation = 1; /* irot/imir already applied by libheif */
        break;
    }
    case IMAGE_FORMAT_GIF:
    case IMAGE_FORMAT_BMP: break;
    }
    x.format = f;
    *out = x;
    return IMS_OK;
}

/* ---- orientation ---------------------------------------------------------- */

enum ims_status image_orient(const struct image *img, int orientation, struct image **out,
                             struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(orientation < 1 || orientation > 8, err, IMS_ERR_INVALID,
                        "EXIF orientation %d is not 1..8", orientation);
    int transpose = orientation >= 5;
    int w = transpose ? img->height : img->width, h = transpose ? img->width : img->height;
    struct image *o = NULL;
    enum ims_status st = image_new(w, h, img->mode, &o, err);
    if (st != IMS_OK)
        return st;
    o->format = img->format;
    o->n_palette = img->n_palette;
    memcpy(o->palette, img->palette, sizeof(o->palette));
    o->transparency = img->transparency;
    size_t bpp = (size_t)image_mode_bytes(img->mode);
    /* For each output pixel (x, y), the stored pixel (sx, sy) it shows. EXIF
     * 2.32 table: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90
     * clockwise, 7 transverse, 8 rotate 90 counter-clockwise (for display). */
    int W = img->width, H = img->height;
    for (int y = 0; y < h; y++) {
        uint8_t *d = o->pixels + (size_t)y * o->stride;
        for (int x = 0; x < w; x++) {
            int sx, sy;
            switch (orientation) {
            case 2: sx = W - 1 - x, sy = y; break;
            case 3: sx = W - 1 - x, sy = H - 1 - y; break;
            case 4: sx = x, sy = H - 1 - y; break;
            case 5: sx = y, sy = x; break;
            case 6: sx = y, sy = H - 1 - x; break;
            case 7: sx = W - 1 - y, sy = H - 1 - x; break;
            case 8: sx = W - 1 - y, sy = x; break;
            default: sx = x, sy = y; break;
            }
            memcpy(d + (size_t)x * bpp, img->pixels + (size_t)sy * img->stride + (size_t)sx * bpp,
                   bpp);
        }
    }
    *out = o;
    return IMS_OK;
}

enum ims_status image_exif_upright(const void *bytes, size_t n, struct image **img,
                                   struct ims_error *err)
{
    struct image_exif x;
    struct ims_error e2 = {0};
    if (image_exif_read(bytes, n, &x, &e2) != IMS_OK || x.orientation == 1)
        return IMS_OK;
    struct image *o = NULL;
    enum ims_status st = image_orient(*img, x.orientation, &o, err);
    if (st != IMS_OK)
        return st;
    image_free(*img);
    *img = o;
    return IMS_OK;
}
