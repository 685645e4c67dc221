/* SPDX-License-Identifier: MIT */
/*
 * image.c: the module's front door: format sniffing from magic bytes, limits,
 * allocation of images and the dispatch to one decoder per format.
 *
 * Sniffing looks at content only (a file called x.jpg holding a PNG is a
 * PNG). When the bytes are not an image we support, the message says what
 * they look like if we can tell (an HTML error page saved as .jpg is the most
 * common case when ingesting URLs), so that users see "HTML document" rather
 * than "corrupt JPEG".
 *
 * Size checks happen in the decoders right after the header is parsed and
 * before anything proportional to the image is allocated (decompression
 * bombs), through image__check_dims: pixel count, side and aspect ratio.
 *
 * Decode memory: image_decode first runs the decoder in header-only mode
 * (cheap for every format), reserves width * height * bytes per pixel from
 * a process-wide budget (mutex + condition variable, bounded wait), decodes,
 * and releases the reservation when the decode returns. Concurrent decodes
 * therefore hold at most the budget between them.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "image_int.h"

const char *image_format_name(enum image_format f)
{
    switch (f) {
    case IMAGE_FORMAT_JPEG: return "JPEG";
    case IMAGE_FORMAT_PNG: return "PNG";
    case IMAGE_FORMAT_WEBP: return "WEBP";
    case IMAGE_FORMAT_GIF: return "GIF";
    case IMAGE_FORMAT_BMP: return "BMP";
    case IMAGE_FORMAT_HEIF: return "HEIF";
    case IMAGE_FORMAT_AVIF: return "AVIF";
    case IMAGE_FORMAT_TIFF: return "TIFF";
    }
    return "unknown";
}

const char *image_format_word(enum image_format f)
{
    switch (f) {
    case IMAGE_FORMAT_JPEG: return "jpeg";
    case IMAGE_FORMAT_PNG: return "png";
    case IMAGE_FORMAT_WEBP: return "webp";
    case IMAGE_FORMAT_GIF: return "gif";
    case IMAGE_FORMAT_BMP: return "bmp";
    case IMAGE_FORMAT_HEIF: return "heic";
    case IMAGE_FORMAT_AVIF: return "avif";
    case IMAGE_FORMAT_TIFF: return "tiff";
    }
    return "unknown";
}

int image_format_parse(const char *word, enum image_format *out)
{
    /* base's table is the one list of accepted spellings; this maps its
     * canonical word back to the enum through image_format_word */
    const char *canonical = ims_format_word(word);
    for (int f = IMAGE_FORMAT_JPEG; canonical && f <= IMAGE_FORMAT_TIFF; f++)
        if (!strcmp(canonical, image_format_word((enum image_format)f))) {
            *out = (enum image_format)f;
            return 0;
        }
    return -1;
}

const char *image_mode_name(enum image_mode m)
{
    switch (m) {
    case IMAGE_MODE_1: return "1";
    case IMAGE_MODE_L: return "L";
    case IMAGE_MODE_P: return "P";
    case IMAGE_MODE_LA: return "LA";
    case IMAGE_MODE_RGB: return "RGB";
    case IMAGE_MODE_RGBA: return "RGBA";
    case IMAGE_MODE_CMYK: return "CMYK";
    case IMAGE_MODE_I: return "I";
    }
    return "unknown";
}

int image_mode_bytes(enum image_mode m)
{
    switch (m) {
    case IMAGE_MODE_1:
    case IMAGE_MODE_L:
    case IMAGE_MODE_P: return 1;
    case IMAGE_MODE_LA: return 2;
    case IMAGE_MODE_RGB: return 3;
    case IMAGE_MODE_RGBA:
    case IMAGE_MODE_CMYK:
    case IMAGE_MODE_I: return 4;
    }
    return 1;
}

void image_limits_default(struct image_limits *lim)
{
    lim->max_pixels = IMAGE_DEFAULT_MAX_PIXELS;
    lim->max_bytes = IMAGE_DEFAULT_MAX_BYTES;
    lim->max_aspect = IMAGE_DEFAULT_MAX_ASPECT;
}

/* ---- decode memory budget ---------------------------------------------------- */

static pthread_mutex_t g_budget_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_budget_cv;          /* CLOCK_MONOTONIC, made once */
static pthread_once_t g_budget_once = PTHREAD_ONCE_INIT;
static size_t g_budget = IMAGE_DEFAULT_DECODE_BUDGET;   /* guarded by g_budget_mu */
static int g_budget_wait_ms = IMAGE_DEFAULT_DECODE_WAIT_MS;
static size_t g_budget_used;
static atomic_uint_least64_t g_n_waited, g_n_busy, g_n_too_large;

static void budget_init(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&g_budget_cv, &a);
    pthread_condattr_destroy(&a);
}

void image_decode_budget_set(size_t bytes, int wait_ms)
{
    pthread_once(&g_budget_once, budget_init);
    pthread_mutex_lock(&g_budget_mu);
    g_budget = bytes ? bytes : IMAGE_DEFAULT_DECODE_BUDGET;
    g_budget_wait_ms = wait_ms < 0 ? IMAGE_DEFAULT_DECODE_WAIT_MS : wait_ms;
    pthread_cond_broadcast(&g_budget_cv);
    pthread_mutex_unlock(&g_budget_mu);
}

void image_decode_budget_stats(struct image_decode_budget_stats *out)
{
    pthread_mutex_lock(&g_budget_mu);
    out->budget = g_budget;
    out->in_use = g_budget_used;
    pthread_mutex_unlock(&g_budget_mu);
    out->n_waited = atomic_load(&g_n_waited);
    out->n_busy = atomic_load(&g_n_busy);
    out->n_too_large = atomic_load(&g_n_too_large);
}

enum ims_status image__budget_reserve(size_t bytes, struct ims_error *err)
{
    pthread_once(&g_budget_once, budget_init);
    pthread_mutex_lock(&g_budget_mu);
    if (bytes > g_budget) {
        size_t budget = g_budget;
        pthread_mutex_unlock(&g_budget_mu);
        atomic_fetch_add(&g_n_too_large, 1);
        return ims_error_set(err, IMS_ERR_TOO_LARGE,
                             "decoding this image needs %zu MiB, more than the whole decode "
                             "memory budget of %zu MiB",
                             (bytes + (1u << 20) - 1) >> 20, budget >> 20);
    }
    if (g_budget - g_budget_used < bytes) {
        atomic_fetch_add(&g_n_waited, 1);
        struct timespec until;
        ims_deadline_after_ms(CLOCK_MONOTONIC, (long)g_budget_wait_ms, &until);
        int rc = 0;
        while (g_budget - IMS_MIN(g_budget_used, g_budget) < bytes && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&g_budget_cv, &g_budget_mu, &until);
        if (g_budget - IMS_MIN(g_budget_used, g_budget) < bytes) {
            size_t used = g_budget_used, budget = g_budget;
            pthread_mutex_unlock(&g_budget_mu);
            atomic_fetch_add(&g_n_busy, 1);
            return ims_error_set(err, IMS_ERR_BUSY,
                                 "image decoding is busy: %zu of %zu MiB of decode memory in "
                                 "use by other decodes (this one needs %zu MiB); try again "
                                 "later",
                                 used >> 20, budget >> 20, (bytes + (1u << 20) - 1) >> 20);
        }
    }
    g_budget_used += bytes;
    pthread_mutex_unlock(&g_budget_mu);
    return IMS_OK;
}

void image__budget_release(size_t bytes)
{
    pthread_once(&g_budget_once, budget_init);
    pthread_mutex_lock(&g_budget_mu);
    IMS_ASSERT(g_budget_used >= bytes);
    g_budget_used -= bytes;
    pthread_cond_broadcast(&g_budget_cv);
    pthread_mutex_unlock(&g_budget_mu);
}

enum ims_status image__check_dims(int64_t w, int64_t h, const struct image_limits *lim,
                                  const char *what, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(w <= 0 || h <= 0, err, IMS_ERR_CORRUPT,
                        "%s declares an empty image (%lldx%lld)", what, (long long)w,
                        (long long)h);
    /* int sized everywhere downstream; 2^30 per side keeps stride math safe */
    IMS_RETURN_ERROR_IF(w > (1 << 30) || h > (1 << 30) ||
                            (uint64_t)w * (uint64_t)h > lim->max_pixels,
                        err, IMS_ERR_TOO_LARGE,
                        "%s is %lldx%lld pixels, more than the limit of %llu pixels", what,
                        (long long)w, (long long)h, (unsigned long long)lim->max_pixels);
    uint64_t aspect = lim->max_aspect ? lim->max_aspect : IMAGE_DEFAULT_MAX_ASPECT;
    int64_t lo = IMS_MIN(w, h), hi = IMS_MAX(w, h);
    IMS_RETURN_ERROR_IF((uint64_t)hi > (uint64_t)lo * aspect, err, IMS_ERR_TOO_LARGE,
                        "%s is %lldx%lld pixels: aspect ratio beyond the limit of 1:%llu", what,
                        (long long)w, (long long)h, (unsigned long long)aspect);
    return IMS_OK;
}

/* ---- sniffing ------------------------------------------------------------- */

#define SUPPORTED "JPEG, PNG, WebP, GIF, BMP, HEIC, AVIF, TIFF"

static int has_prefix(const uint8_t *p, size_t n, const char *magic, size_t m)
{
    return n >= m && memcmp(p, magic, m) == 0;
}

/* Case-insensitive prefix test after skipping a UTF-8 BOM and whitespace. */
static int text_starts(const uint8_t *p, size_t n, const char *word)
{
    size_t i = 0;
    if (n >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
        i = 3;
    while (i < n && i < 512 && isspace(p[i]))
        i++;
    size_t m = strlen(word);
    if (n - i < m)
        return 0;
    for (size_t k = 0; k < m; k++)
        if (tolower(p[i + k]) != word[k])
            return 0;
    return 1;
}

static const char *looks_like(const uint8_t *p, size_t n)
{
    if (text_starts(p, n, "<!doctype html") || text_starts(p, n, "<html") ||
        text_starts(p, n, "<head") || text_starts(p, n, "<body"))
        return "an HTML document";
    if (text_starts(p, n, "<svg") || (text_starts(p, n, "<?xml") && n < (1 << 20) &&
                                      memmem(p, n, "<svg", 4)))
        return "an SVG image (vector images are not supported)";
    if (text_starts(p, n, "<?xml"))
        return "an XML document";
    if (text_starts(p, n, "{") || text_starts(p, n, "["))
        return "a JSON document";
    if (has_prefix(p, n, "%PDF", 4))
        return "a PDF document";
    if (has_prefix(p, n, "II+\0", 4) || has_prefix(p, n, "MM\0+", 4))
        return "a BigTIFF image (not supported)";
    if (n >= 12 && memcmp(p + 4, "ftyp", 4) == 0) {
        if (!memcmp(p + 8, "avis", 4) || !memcmp(p + 8, "msf1", 4) || !memcmp(p + 8, "hevc", 4))
            return "an image sequence (HEIF/AVIF animation, not supported)";
        return "an MP4/QuickTime video";
    }
    if (has_prefix(p, n, "RIFF", 4))
        return "a RIFF file that is not WebP";
    if (has_prefix(p, n, "\0\0\1\0", 4))
        return "a Windows icon (not supported)";
    if (has_prefix(p, n, "8BPS", 4))
        return "a Photoshop document (not supported)";
    if (has_prefix(p, n, "PK\3\4", 4))
        return "a ZIP archive";
    if (has_prefix(p, n, "\x1f\x8b", 2))
        return "gzip-compressed data";
    if (has_prefix(p, n, "\xff\xd8", 2))
        return "a truncated JPEG header";
    if (has_prefix(p, n, "\x89PNG", 4))
        return "a truncated PNG signature";
    if (has_prefix(p, n, "GIF8", 4))
        return "a GIF with an unknown version";
    return NULL;
}

/* ISO-BMFF: an `ftyp` box first, whose major and compatible brands say
 * which still-image kind it is (ISO/IEC 23008-12 and the AVIF spec): `avif`
 * wins over the generic `mif1`, the HEVC brands make it a HEIC. */
static int sniff_ftyp(const uint8_t *p, size_t n, enum image_format *out)
{
    if (n < 16 || memcmp(p + 4, "ftyp", 4) != 0)
        return 0;
    size_t box = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (box < 16 || box > 4096)
        return 0;
    if (box > n)
        box = n;
    int heic = 0, avif = 0;
    for (size_t at = 8; at + 4 <= box; at += at == 8 ? 8 : 4) { /* skip minor_version */
        const uint8_t *b = p + at;
        if (!memcmp(b, "avif", 4))
            avif = 1;
        else if (!memcmp(b, "heic", 4) || !memcmp(b, "heix", 4) || !memcmp(b, "heim", 4) ||
                 !memcmp(b, "heis", 4) || !memcmp(b, "mif1", 4))
            heic = 1;
    }
    if (avif && (!memcmp(p + 8, "avif", 4) || !memcmp(p + 8, "mif1", 4) || !heic)) {
        *out = IMAGE_FORMAT_AVIF;
        return 1;
    }
    if (heic) {
        *out = IMAGE_FORMAT_HEIF;
        return 1;
    }
    return 0;
}

enum ims_status image_sniff(const void *bytes, size_t n, enum image_format *out,
                            struct ims_error *err)
{
    const uint8_t *p = bytes;
    IMS_RETURN_ERROR_IF(n == 0 || !p, err, IMS_ERR_UNSUPPORTED, "empty file: no image data");
    if (has_prefix(p, n, "\xff\xd8\xff", 3)) {
        *out = IMAGE_FORMAT_JPEG;
        return IMS_OK;
    }
    if (has_prefix(p, n, "\x89PNG\r\n\x1a\n", 8)) {
        *out = IMAGE_FORMAT_PNG;
        return IMS_OK;
    }
    if (has_prefix(p, n, "GIF87a", 6) || has_prefix(p, n, "GIF89a", 6)) {
        *out = IMAGE_FORMAT_GIF;
        return IMS_OK;
    }
    if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) {
        *out = IMAGE_FORMAT_WEBP;
        return IMS_OK;
    }
    if (has_prefix(p, n, "BM", 2)) {
        *out = IMAGE_FORMAT_BMP;
        return IMS_OK;
    }
    if (has_prefix(p, n, "II*\0", 4) || has_prefix(p, n, "MM\0*", 4)) {
        *out = IMAGE_FORMAT_TIFF;
        return IMS_OK;
    }
    if (sniff_ftyp(p, n, out))
        return IMS_OK;
    const char *what = looks_like(p, n);
    if (what)
        return ims_error_set(err, IMS_ERR_UNSUPPORTED,
                             "not a supported image (" SUPPORTED "): looks like %s",
                             what);
    char hex[3 * 8 + 1] = "";
    size_t at = 0;
    for (size_t i = 0; i < n && i < 8; i++)
        at += (size_t)snprintf(hex + at, sizeof(hex) - at, "%s%02x", i ? " " : "", p[i]);
    return ims_error_set(err, IMS_ERR_UNSUPPORTED,
                         "not a supported image (" SUPPORTED "): unrecognised "
                         "data starting with bytes %s",
                         hex);
}

/* ---- images --------------------------------------------------------------- */

enum ims_status image_new(int width, int height, enum image_mode mode, struct image **out,
                          struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(width <= 0 || height <= 0, err, IMS_ERR_INVALID,
                        "image size %dx%d is not positive", width, height);
    size_t stride, total;
    if (ims_size_mul((size_t)width, (size_t)image_mode_bytes(mode), &stride) ||
        ims_size_mul(stride, (size_t)height, &total))
        return ims_error_set(err, IMS_ERR_TOO_LARGE, "image size %dx%d overflows", width, height);
    struct image *img = ims_calloc(1, sizeof(*img));
    if (!img)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for an image");
    img->pixels = ims_calloc(total ? total : 1, 1);
    if (!img->pixels) {
        ims_free(img);
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for a %dx%d image", width,
                             height);
    }
    img->width = width;
    img->height = height;
    img->mode = mode;
    img->stride = stride;
    img->transparency = -1;
    for (int i = 0; i < 256; i++)
        img->palette[3 * i] = img->palette[3 * i + 1] = img->palette[3 * i + 2] = (uint8_t)i;
    *out = img;
    return IMS_OK;
}

void image_free(struct image *img)
{
    if (!img)
        return;
    ims_free(img->pixels);
    ims_free(img);
}

/* ---- dispatch ------------------------------------------------------------- */

static image__decode_fn decoder_for(enum image_format f)
{
    switch (f) {
    case IMAGE_FORMAT_JPEG: return image__decode_jpeg;
    case IMAGE_FORMAT_PNG: return image__decode_png;
    case IMAGE_FORMAT_WEBP: return image__decode_webp;
    case IMAGE_FORMAT_GIF: return image__decode_gif;
    case IMAGE_FORMAT_BMP: return image__decode_bmp;
    case IMAGE_FORMAT_HEIF:
    case IMAGE_FORMAT_AVIF: return image__decode_heif;
    case IMAGE_FORMAT_TIFF: return image__decode_tiff;
    }
    return NULL;
}

static enum ims_status run(const void *bytes, size_t n, const struct image_limits *lim,
                           struct image_info *info, struct image **out, struct ims_error *err)
{
    struct image_limits def;
    if (!lim) {
        image_limits_default(&def);
        lim = &def;
    }
    IMS_RETURN_ERROR_IF(n > lim->max_bytes, err, IMS_ERR_TOO_LARGE,
                        "image file is %zu bytes, more than the limit of %zu", n,
                        lim->max_bytes);
    enum image_format f;
    enum ims_status st = image_sniff(bytes, n, &f, err);
    if (st != IMS_OK)
        return st;
    struct image_info tmp = {0};
    tmp.format = f;
    if (!out) {
        st = decoder_for(f)((const uint8_t *)bytes, n, lim, &tmp, NULL, err);
        if (st == IMS_OK && info)
            *info = tmp;
        return st;
    }
    /* Header first (refuses by size and aspect, gives the decoded size), then
     * the budget, then the decode. */
    st = decoder_for(f)((const uint8_t *)bytes, n, lim, &tmp, NULL, err);
    if (st != IMS_OK)
        return st;
    size_t need = (size_t)tmp.width * (size_t)tmp.height * (size_t)image_mode_bytes(tmp.mode);
    st = image__budget_reserve(need, err);
    if (st != IMS_OK)
        return st;
    st = decoder_for(f)((const uint8_t *)bytes, n, lim, &tmp, out, err);
    image__budget_release(need);
    if (st == IMS_OK && info)
        *info = tmp;
    if (st == IMS_OK)
        (*out)->format = f;
    return st;
}

enum ims_status image_info(const void *bytes, size_t n, const struct image_limits *lim,
                           struct image_info *out, struct ims_error *err)
{
    return run(bytes, n, lim, out, NULL, err);
}

enum ims_status image_decode(const void *bytes, size_t n, const struct image_limits *lim,
                             struct image **out, struct ims_error *err)
{
    struct image *img = NULL;
    enum ims_status st = run(bytes, n, lim, NULL, &img, err);
    if (st == IMS_OK)
        *out = img;
    return st;
}
