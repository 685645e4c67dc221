/* SPDX-License-Identifier: MIT */
/*
 * resample.c: Pillow 9.4's resize arithmetic, reimplemented so that CLIP's
 * preprocessing is byte-exact (libImaging/Resample.c and Geometry.c describe
 * the reference behaviour; no code is taken from them).
 *
 * Convolution (BICUBIC, a = -0.5), per axis with input size `in` and output
 * size `out`:
 *   scale = in / out, filterscale = max(scale, 1), support = 2 * filterscale
 *   output x covers input [xmin, xmin + count) around center = (x + 0.5) * scale
 *   with weights bicubic((j + xmin - center + 0.5) * (1 / filterscale)),
 *   normalised to sum 1. The 8-bit path turns them into 22-bit fixed point
 *   (rounded half away from zero) and computes
 *   clip8((2^21 + sum k * in) >> 22) in int32; the int32 path (mode I) keeps
 *   doubles and rounds half away from zero. Horizontal pass first, on the
 *   rows the vertical pass needs only, into an intermediate of the same
 *   depth; a pass whose size does not change is skipped.
 *
 * Why windows: CLIP crops the centre of the resized image right away. Each
 * output pixel is a function of its own coefficients only, so computing just
 * the window (the crop) gives the same bytes for less work: a 1000x40 image
 * becomes 5600x224 before its centre 224x224 is kept.
 *
 * Layout: coefficients are precomputed once per axis (bounds (n, 2):
 * xmin, count; weights (n, ksize)), inner loops are integer multiply-adds;
 * the vertical pass accumulates whole rows in an int32 row buffer so that
 * the compiler can vectorise it.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "image_int.h"

#define PRECISION_BITS 22

/* ---- coefficients ------------------------------------------------------- */

struct coeffs {
    int ksize;
    int n;        /* outputs covered: [first, first + n) */
    int *bounds;  /* (n, 2): xmin, count */
    double *kd;   /* (n, ksize) normalised weights */
    int32_t *kq;  /* (n, ksize) fixed point, only when requested */
};

static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static void coeffs_fini(struct coeffs *c)
{
    ims_free(c->bounds);
    ims_free(c->kd);
    ims_free(c->kq);
    memset(c, 0, sizeof(*c));
}

static enum ims_status coeffs_build(int in, int out, int first, int n, int fixed,
                                    struct coeffs *c, struct ims_error *err)
{
    double scale = (double)in / out;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    double ss = 1.0 / filterscale;
    memset(c, 0, sizeof(*c));
    c->ksize = (int)ceil(support) * 2 + 1;
    c->n = n;
    size_t nk;
    if (ims_size_mul((size_t)n, (size_t)c->ksize, &nk) || nk > ((size_t)1 << 28))
        return ims_error_set(err, IMS_ERR_TOO_LARGE, "resize kernel too large");
    c->bounds = ims_malloc((size_t)n * 2 * sizeof(int));
    c->kd = ims_calloc(nk, sizeof(double));
    if (fixed)
        c->kq = ims_calloc(nk, sizeof(int32_t));
    if (!c->bounds || !c->kd || (fixed && !c->kq)) {
        coeffs_fini(c);
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for resize coefficients");
    }
    for (int i = 0; i < n; i++) {
        int xx = first + i;
        double center = (xx + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in)
            xmax = in;
        xmax -= xmin;
        double *k = c->kd + (size_t)i * c->ksize;
        double ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            double w = bicubic((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; x++)
            if (ww != 0.0)
                k[x] /= ww;
        c->bounds[2 * i] = xmin;
        c->bounds[2 * i + 1] = xmax;
        if (fixed) {
            int32_t *q = c->kq + (size_t)i * c->ksize;
            for (int x = 0; x < xmax; x++)
                q[x] = k[x] < 0 ? (int32_t)(-0.5 + k[x] * (1 << PRECISION_BITS))
                                : (int32_t)(0.5 + k[x] * (1 << PRECISION_BITS));
        }
    }
    return IMS_OK;
}

static inline uint8_t clip8(int32_t v)
{
    if (v >= (1 << PRECISION_BITS << 8))
        return 255;
    if (v <= 0)
        return 0;
    return (uint8_t)(v >> PRECISION_BITS);
}

/* ---- 8-bit passes --------------------------------------------------------- */

/* One row: dst (n outputs, CH channels) from a src row, one function per
 * channel count with the accumulators in named locals: with an array
 * indexed by a loop variable the compiler kept them in memory (3x slower). */
#define HALF (1 << (PRECISION_BITS - 1))
#define DEFINE_HORIZ_ROW(CH)                                                                       \
    static void horiz_row##CH(const uint8_t *src, uint8_t *dst, const struct coeffs *c)           \
    {                                                                                              \
        for (int i = 0; i < c->n; i++) {                                                           \
            int xmin = c->bounds[2 * i], cnt = c->bounds[2 * i + 1];                               \
            const int32_t *k = c->kq + (size_t)i * c->ksize;                                       \
            const uint8_t *p = src + (size_t)xmin * CH;                                            \
            int32_t s0 = HALF, s1 = HALF, s2 = HALF, s3 = HALF;                                    \
            for (int j = 0; j < cnt; j++, p += CH) {                                               \
                int32_t kj = k[j];                                                                 \
                s0 += p[0] * kj;                                                                   \
                if (CH > 1)                                                                        \
                    s1 += p[CH > 1 ? 1 : 0] * kj;                                                  \
                if (CH > 2)                                                                        \
                    s2 += p[CH > 2 ? 2 : 0] * kj;                                                  \
                if (CH > 3)                                                                        \
                    s3 += p[CH > 3 ? 3 : 0] * kj;                                                  \
            }                                                                                      \
            uint8_t *d = dst + (size_t)i * CH;                                                     \
            d[0] = clip8(s0);                                                                      \
            if (CH > 1)                                                                            \
                d[CH > 1 ? 1 : 0] = clip8(s1);                                                     \
            if (CH > 2)                                                                            \
                d[CH > 2 ? 2 : 0] = clip8(s2);                                                     \
            if (CH > 3)                                                                            \
                d[CH > 3 ? 3 : 0] = clip8(s3);                                                     \
        }                                                                                          \
    }
DEFINE_HORIZ_ROW(1)
DEFINE_HORIZ_ROW(2)
DEFINE_HORIZ_ROW(3)
DEFINE_HORIZ_ROW(4)

/* ---- AVX2 (x86-64, chosen at run time) ------------------------------------
 * The same integer sums in another order: every product and partial sum
 * fits in int32 (|k| sums to < 1.3 * 2^22, pixels < 2^8), so the bytes are
 * the scalar path's (test_resample_avx2 compares them). A 12 MP photo's
 * bounded decode (1008x756) spent ~9 ms per image in the two passes for the
 * CLIP input and the thumbnail (bench/README-ingest.md). */
int image__resample_simd = 1;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2_PATH 1

static int avx2_ok(void)
{
    static atomic_int ok = -1; /* decoder threads may ask at once: same answer */
    int v = atomic_load_explicit(&ok, memory_order_relaxed);
    if (v < 0) {
        v = __builtin_cpu_supports("avx2") ? 1 : 0;
        atomic_store_explicit(&ok, v, memory_order_relaxed);
    }
    return v && image__resample_simd;
}

/* 3 channels: two taps per vector, each pixel's 3 bytes (+ the next one's
 * first, a lane ignored) widened to int32. Reads one byte past the last
 * tap, so outputs whose taps reach the row's end take the scalar loop. */
__attribute__((target("avx2"))) static void horiz_row3_avx2(const uint8_t *src, int in_w,
                                                            uint8_t *dst, const struct coeffs *c)
{
    for (int i = 0; i < c->n; i++) {
        int xmin = c->bounds[2 * i], cnt = c->bounds[2 * i + 1];
        const int32_t *k = c->kq + (size_t)i * c->ksize;
        const uint8_t *p = src + (size_t)xmin * 3;
        uint8_t *d = dst + (size_t)i * 3;
        if (xmin + cnt >= in_w) {
            int32_t s0 = HALF, s1 = HALF, s2 = HALF;
            for (int j = 0; j < cnt; j++) {
                s0 += p[3 * j] * k[j];
                s1 += p[3 * j + 1] * k[j];
                s2 += p[3 * j + 2] * k[j];
            }
            d[0] = clip8(s0), d[1] = clip8(s1), d[2] = clip8(s2);
            continue;
        }
        __m256i acc = _mm256_setzero_si256();
        int j = 0;
        for (; j + 2 <= cnt; j += 2) {
            uint32_t a, b;
            memcpy(&a, p + 3 * j, 4);
            memcpy(&b, p + 3 * j + 3, 4);
            __m256i px = _mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)b, (int)a));
            __m256i kk = _mm256_set_m128i(_mm_set1_epi32(k[j + 1]), _mm_set1_epi32(k[j]));
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(px, kk));
        }
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        if (j < cnt) {
            uint32_t a;
            memcpy(&a, p + 3 * j, 4);
            s = _mm_add_epi32(s, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)a)),
                                                 _mm_set1_epi32(k[j])));
        }
        s = _mm_add_epi32(s, _mm_set1_epi32(HALF));
        int32_t o[4];
        _mm_storeu_si128((__m128i *)o, s);
        d[0] = clip8(o[0]), d[1] = clip8(o[1]), d[2] = clip8(o[2]);
    }
}

/* acc[0..n) = HALF + sum_j k[j] * rows[j][x], 8 bytes at a time */
__attribute__((target("avx2"))) static int vert_row_avx2(const uint8_t *src, size_t src_stride,
                                                         int cnt, const int32_t *k, int n_bytes,
                                                         uint8_t *d)
{
    int x = 0;
    for (; x + 8 <= n_bytes; x += 8) {
        __m256i acc = _mm256_set1_epi32(HALF);
        for (int j = 0; j < cnt; j++) {
            __m128i b = _mm_loadl_epi64((const __m128i *)(src + (size_t)j * src_stride + x));
            acc = _mm256_add_epi32(
                acc, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(b), _mm256_set1_epi32(k[j])));
        }
        int32_t o[8];
        _mm256_storeu_si256((__m256i *)o, acc);
        for (int t = 0; t < 8; t++)
            d[x + t] = clip8(o[t]);
    }
    return x; /* the rest: the scalar loop */
}
#endif

static void horiz_rows(const uint8_t *src, size_t src_stride, int n_rows, uint8_t *dst,
                       size_t dst_stride, const struct coeffs *c, int ch, int in_w)
{
#ifdef HAVE_AVX2_PATH
    if (ch == 3 && avx2_ok()) {
        for (int y = 0; y < n_rows; y++)
            horiz_row3_avx2(src + (size_t)y * src_stride, in_w, dst + (size_t)y * dst_stride, c);
        return;
    }
#endif
    (void)in_w;
    for (int y = 0; y < n_rows; y++) {
        const uint8_t *s = src + (size_t)y * src_stride;
        uint8_t *d = dst + (size_t)y * dst_stride;
        switch (ch) {
        case 1: horiz_row1(s, d, c); break;
        case 2: horiz_row2(s, d, c); break;
        case 3: horiz_row3(s, d, c); break;
        default: horiz_row4(s, d, c); break;
        }
    }
}

/* src rows are relative to the first row the window needs (row_first). */
static void vert_rows(const uint8_t *src, size_t src_stride, int row_first, int n_bytes,
                      uint8_t *dst, size_t dst_stride, const struct coeffs *c, int32_t *acc)
{
    for (int i = 0; i < c->n; i++) {
        int ymin = c->bounds[2 * i] - row_first, cnt = c->bounds[2 * i + 1];
        const int32_t *k = c->kq + (size_t)i * c->ksize;
        uint8_t *d = dst + (size_t)i * dst_stride;
        int x0 = 0;
#ifdef HAVE_AVX2_PATH
        if (avx2_ok())
            x0 = vert_row_avx2(src + (size_t)ymin * src_stride, src_stride, cnt, k, n_bytes, d);
#endif
        for (int x = x0; x < n_bytes; x++)
            acc[x] = 1 << (PRECISION_BITS - 1);
        for (int j = 0; j < cnt; j++) {
            const uint8_t *p = src + (size_t)(ymin + j) * src_stride;
            int32_t kj = k[j];
            for (int x = x0; x < n_bytes; x++)
                acc[x] += p[x] * kj;
        }
        for (int x = x0; x < n_bytes; x++)
            d[x] = clip8(acc[x]);
    }
}

enum ims_status image__resample_u8(const uint8_t *src, int in_w, int in_h, size_t src_stride,
                                   int ch, int out_w, int out_h, int x0, int y0, int win_w,
                                   int win_h, uint8_t *dst, size_t dst_stride,
                                   struct ims_error *err)
{
    IMS_ASSERT(ch >= 1 && ch <= 4 && in_w > 0 && in_h > 0 && out_w > 0 && out_h > 0);
    IMS_ASSERT(x0 >= 0 && y0 >= 0 && win_w > 0 && win_h > 0 && x0 + win_w <= out_w &&
               y0 + win_h <= out_h);
    enum ims_status st = IMS_OK;
    struct coeffs hc = {0}, vc = {0};
    uint8_t *tmp = NULL; /* (row_last - row_first, win_w * ch) horizontal output */
    int32_t *acc = NULL; /* (win_w * ch) vertical accumulator */
    int need_h = out_w != in_w, need_v = out_h != in_h;
    int row_first = y0, row_last = y0 + win_h;

    if (need_v) {
        if ((st = coeffs_build(in_h, out_h, y0, win_h, 1, &vc, err)) != IMS_OK)
            goto out;
        row_first = vc.bounds[0];
        row_last = vc.bounds[2 * (win_h - 1)] + vc.bounds[2 * (win_h - 1) + 1];
    }
    const uint8_t *vsrc;
    size_t vsrc_stride;
    int n_bytes = win_w * ch;
    if (need_h) {
        if ((st = coeffs_build(in_w, out_w, x0, win_w, 1, &hc, err)) != IMS_OK)
            goto out;
        if (need_v)
            tmp = ims_malloc((size_t)n_bytes * (size_t)(row_last - row_first));
        if (need_v && !tmp) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for resize");
            goto out;
        }
        horiz_rows(src + (size_t)row_first * src_stride, src_stride, row_last - row_first,
                   need_v ? tmp : dst, need_v ? (size_t)n_bytes : dst_stride, &hc, ch, in_w);
        if (!need_v)
            goto out; /* the horizontal pass wrote the window straight to dst */
        vsrc = tmp;
        vsrc_stride = (size_t)n_bytes;
    } else {
        vsrc = src + (size_t)row_first * src_stride + (size_t)x0 * ch;
        vsrc_stride = src_stride;
    }
    if (need_v) {
        acc = ims_malloc((size_t)n_bytes * sizeof(int32_t));
        if (!acc) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for resize");
            goto out;
        }
        vert_rows(vsrc, vsrc_stride, row_first, n_bytes, dst, dst_stride, &vc, acc);
    } else {
        for (int y = 0; y < win_h; y++)
            memcpy(dst + (size_t)y * dst_stride, vsrc + (size_t)y * vsrc_stride, (size_t)n_bytes);
    }
out:
    coeffs_fini(&hc);
    coeffs_fini(&vc);
    ims_free(tmp);
    ims_free(acc);
    return st;
}

/* ---- int32 path (mode I) ------------------------------------------------- */

static inline int32_t round_up(double f)
{
    /* Pillow's ROUND_UP: half away from zero. */
    return (int32_t)(f >= 0.0 ? f + 0.5 : f - 0.5);
}

enum ims_status image__resample_i32(const int32_t *src, int in_w, int in_h, size_t src_stride,
                                    int out_w, int out_h, int x0, int y0, int win_w, int win_h,
                                    int32_t *dst, size_t dst_stride, struct ims_error *err)
{
    IMS_ASSERT(x0 >= 0 && y0 >= 0 && x0 + win_w <= out_w && y0 + win_h <= out_h);
    enum ims_status st = IMS_OK;
    struct coeffs hc = {0}, vc = {0};
    int32_t *tmp = NULL; /* (row_last - row_first, win_w) */
    int need_h = out_w != in_w, need_v = out_h != in_h;
    int row_first = y0, row_last = y0 + win_h;
    /* strides are in elements here */
    if (need_v) {
        if ((st = coeffs_build(in_h, out_h, y0, win_h, 0, &vc, err)) != IMS_OK)
            goto out;
        row_first = vc.bounds[0];
        row_last = vc.bounds[2 * (win_h - 1)] + vc.bounds[2 * (win_h - 1) + 1];
    }
    const int32_t *vsrc;
    size_t vstride;
    if (need_h) {
        if ((st = coeffs_build(in_w, out_w, x0, win_w, 0, &hc, err)) != IMS_OK)
            goto out;
        tmp = ims_malloc((size_t)win_w * (size_t)(row_last - row_first) * sizeof(int32_t));
        if (!tmp) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for resize");
            goto out;
        }
        for (int y = row_first; y < row_last; y++) {
            const int32_t *s = src + (size_t)y * src_stride;
            int32_t *d = tmp + (size_t)(y - row_first) * win_w;
            for (int i = 0; i < win_w; i++) {
                int xmin = hc.bounds[2 * i], cnt = hc.bounds[2 * i + 1];
                const double *k = hc.kd + (size_t)i * hc.ksize;
                double ss = 0.0;
                for (int j = 0; j < cnt; j++)
                    ss += s[xmin + j] * k[j];
                d[i] = round_up(ss);
            }
        }
        vsrc = tmp;
        vstride = (size_t)win_w;
    } else {
        vsrc = src + (size_t)row_first * src_stride + x0;
        vstride = src_stride;
    }
    for (int i = 0; i < win_h; i++) {
        int32_t *d = dst + (size_t)i * dst_stride;
        if (!need_v) {
            memcpy(d, vsrc + (size_t)i * vstride, (size_t)win_w * sizeof(int32_t));
            continue;
        }
        int ymin = vc.bounds[2 * i] - row_first, cnt = vc.bounds[2 * i + 1];
        const double *k = vc.kd + (size_t)i * vc.ksize;
        for (int x = 0; x < win_w; x++) {
            double ss = 0.0;
            for (int j = 0; j < cnt; j++)
                ss += vsrc[(size_t)(ymin + j) * vstride + x] * k[j];
            d[x] = round_up(ss);
        }
    }
out:
    coeffs_fini(&hc);
    coeffs_fini(&vc);
    ims_free(tmp);
    return st;
}

/* ---- nearest (modes 1 and P) ---------------------------------------------- */

/* Pillow walks a double accumulator (xo = 0.5 * in/out; xo += in/out) instead
 * of multiplying, and the accumulated rounding decides some pixels, so we
 * walk it too, from 0, for the whole axis. */
static void nearest_table(int in, int out, int first, int n, int *tab)
{
    double a = (double)in / out;
    double xo = a * 0.5;
    for (int x = 0; x < first + n; x++) {
        int xin = xo < 0.0 ? -1 : (int)xo;
        if (xin < 0)
            xin = 0;
        if (xin >= in)
            xin = in - 1; /* unreachable for in/out > 0; keeps reads in bounds */
        if (x >= first)
            tab[x - first] = xin;
        xo += a;
    }
}

enum ims_status image__resize_nearest(const uint8_t *src, int in_w, int in_h, size_t src_stride,
                                      int bpp, int out_w, int out_h, int x0, int y0, int win_w,
                                      int win_h, uint8_t *dst, size_t dst_stride,
                                      struct ims_error *err)
{
    IMS_ASSERT(x0 >= 0 && y0 >= 0 && x0 + win_w <= out_w && y0 + win_h <= out_h);
    int *xt = ims_malloc((size_t)win_w * sizeof(int));
    int *yt = ims_malloc((size_t)win_h * sizeof(int));
    if (!xt || !yt) {
        ims_free(xt);
        ims_free(yt);
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for resize");
    }
    nearest_table(in_w, out_w, x0, win_w, xt);
    nearest_table(in_h, out_h, y0, win_h, yt);
    for (int y = 0; y < win_h; y++) {
        const uint8_t *s = src + (size_t)yt[y] * src_stride;
        uint8_t *d = dst + (size_t)y * dst_stride;
        if (bpp == 1) {
            for (int x = 0; x < win_w; x++)
                d[x] = s[xt[x]];
        } else {
            for (int x = 0; x < win_w; x++)
                memcpy(d + (size_t)x * bpp, s + (size_t)xt[x] * bpp, (size_t)bpp);
        }
    }
    ims_free(xt);
    ims_free(yt);
    return IMS_OK;
}

/* ---- streaming (rows arrive one at a time, top to bottom) ---------------- */

/* The same arithmetic as the three functions above, reordered only in when
 * the horizontal pass runs: each input row the window needs is reduced to
 * the window's width as it arrives (horiz_row / the i32 loop / the nearest
 * table), and the vertical pass runs once all of them are in. Every output
 * byte therefore comes from the same operations in the same order. */
struct image__rs {
    enum image__rs_kind kind;
    int ch, n_bytes; /* bytes per input pixel (u8: channels); window row bytes */
    int x0, win_w, win_h, in_w;
    int need_h, need_v;
    int row_first, row_last; /* input rows kept: [row_first, row_last) */
    struct coeffs hc, vc;
    int *xt, *yt; /* nearest tables */
    uint8_t *tmp; /* (rows kept, n_bytes) */
    size_t held;
};

void image__rs_free(struct image__rs *r)
{
    if (!r)
        return;
    coeffs_fini(&r->hc);
    coeffs_fini(&r->vc);
    ims_free(r->xt);
    ims_free(r->yt);
    ims_free(r->tmp);
    ims_free(r);
}

static size_t coeffs_bytes(const struct coeffs *c)
{
    size_t nk = (size_t)c->n * (size_t)c->ksize;
    return (size_t)c->n * 2 * sizeof(int) + nk * sizeof(double) +
           (c->kq ? nk * sizeof(int32_t) : 0);
}

enum ims_status image__rs_begin(enum image__rs_kind kind, int in_w, int in_h, int ch, int out_w,
                                int out_h, int x0, int y0, int win_w, int win_h,
                                struct image__rs **out, struct ims_error *err)
{
    IMS_ASSERT(in_w > 0 && in_h > 0 && out_w > 0 && out_h > 0 && ch >= 1 && ch <= 4);
    IMS_ASSERT(x0 >= 0 && y0 >= 0 && win_w > 0 && win_h > 0 && x0 + win_w <= out_w &&
               y0 + win_h <= out_h);
    IMS_ASSERT(kind != IMAGE__RS_I32 || ch == 4);
    enum ims_status st = IMS_OK;
    struct image__rs *r = ims_calloc(1, sizeof(*r));
    if (!r)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for resize");
    r->kind = kind;
    r->ch = ch;
    r->x0 = x0;
    r->in_w = in_w;
    r->win_w = win_w;
    r->win_h = win_h;
    r->n_bytes = win_w * ch;
    size_t rows;
    if (kind == IMAGE__RS_NEAREST) {
        r->xt = ims_malloc((size_t)win_w * sizeof(int));
        r->yt = ims_malloc((size_t)win_h * sizeof(int));
        if (!r->xt || !r->yt)
            goto nomem;
        nearest_table(in_w, out_w, x0, win_w, r->xt);
        nearest_table(in_h, out_h, y0, win_h, r->yt);
        r->row_first = r->yt[0];
        r->row_last = r->yt[win_h - 1] + 1;
        rows = (size_t)win_h;
        r->held = (size_t)(win_w + win_h) * sizeof(int);
    } else {
        int fixed = kind == IMAGE__RS_U8;
        r->need_h = out_w != in_w;
        r->need_v = out_h != in_h;
        r->row_first = y0;
        r->row_last = y0 + win_h;
        if (r->need_v) {
            if ((st = coeffs_build(in_h, out_h, y0, win_h, fixed, &r->vc, err)) != IMS_OK)
                goto fail;
            r->row_first = r->vc.bounds[0];
            r->row_last = r->vc.bounds[2 * (win_h - 1)] + r->vc.bounds[2 * (win_h - 1) + 1];
            r->held += coeffs_bytes(&r->vc) + (size_t)r->n_bytes * sizeof(int32_t);
        }
        if (r->need_h) {
            if ((st = coeffs_build(in_w, out_w, x0, win_w, fixed, &r->hc, err)) != IMS_OK)
                goto fail;
            r->held += coeffs_bytes(&r->hc);
        }
        rows = (size_t)(r->row_last - r->row_first);
    }
    r->tmp = ims_malloc((size_t)r->n_bytes * rows);
    if (!r->tmp)
        goto nomem;
    r->held += (size_t)r->n_bytes * rows + sizeof(*r);
    *out = r;
    return IMS_OK;
nomem:
    st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for resize");
fail:
    image__rs_free(r);
    return st;
}

size_t image__rs_held(const struct image__rs *r)
{
    return r ? r->held : 0;
}

int image__rs_wants(const struct image__rs *r, int y)
{
    return r && y >= r->row_first && y < r->row_last;
}

void image__rs_row(struct image__rs *r, int y, const uint8_t *row)
{
    if (!image__rs_wants(r, y))
        return;
    if (r->kind == IMAGE__RS_NEAREST) {
        /* yt is non-decreasing: the outputs reading row y are contiguous */
        for (int i = 0; i < r->win_h; i++) {
            if (r->yt[i] != y)
                continue;
            uint8_t *d = r->tmp + (size_t)i * r->n_bytes;
            if (r->ch == 1) {
                for (int x = 0; x < r->win_w; x++)
                    d[x] = row[r->xt[x]];
            } else {
                for (int x = 0; x < r->win_w; x++)
                    memcpy(d + (size_t)x * r->ch, row + (size_t)r->xt[x] * r->ch,
                           (size_t)r->ch);
            }
        }
        return;
    }
    uint8_t *d = r->tmp + (size_t)(y - r->row_first) * r->n_bytes;
    if (!r->need_h) {
        memcpy(d, row + (size_t)r->x0 * r->ch, (size_t)r->n_bytes);
        return;
    }
    if (r->kind == IMAGE__RS_U8) {
        horiz_rows(row, 0, 1, d, 0, &r->hc, r->ch, r->in_w);
        return;
    }
    const int32_t *s = (const int32_t *)(const void *)row;
    int32_t *di = (int32_t *)(void *)d;
    for (int i = 0; i < r->win_w; i++) {
        int xmin = r->hc.bounds[2 * i], cnt = r->hc.bounds[2 * i + 1];
        const double *k = r->hc.kd + (size_t)i * r->hc.ksize;
        double ss = 0.0;
        for (int j = 0; j < cnt; j++)
            ss += s[xmin + j] * k[j];
        di[i] = round_up(ss);
    }
}

enum ims_status image__rs_finish(struct image__rs *r, uint8_t *dst, size_t dst_stride,
                                 struct ims_error *err)
{
    if (r->kind == IMAGE__RS_NEAREST || !r->need_v) {
        for (int y = 0; y < r->win_h; y++)
            memcpy(dst + (size_t)y * dst_stride, r->tmp + (size_t)y * r->n_bytes,
                   (size_t)r->n_bytes);
        return IMS_OK;
    }
    if (r->kind == IMAGE__RS_U8) {
        int32_t *acc = ims_malloc((size_t)r->n_bytes * sizeof(int32_t));
        if (!acc)
            return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for resize");
        vert_rows(r->tmp, (size_t)r->n_bytes, r->row_first, r->n_bytes, dst, dst_stride, &r->vc,
                  acc);
        ims_free(acc);
        return IMS_OK;
    }
    const int32_t *vsrc = (const int32_t *)(const void *)r->tmp;
    size_t vstride = (size_t)r->win_w;
    for (int i = 0; i < r->win_h; i++) {
        int32_t *d = (int32_t *)(void *)(dst + (size_t)i * dst_stride);
        int ymin = r->vc.bounds[2 * i] - r->row_first, cnt = r->vc.bounds[2 * i + 1];
        const double *k = r->vc.kd + (size_t)i * r->vc.ksize;
        for (int x = 0; x < r->win_w; x++) {
            double ss = 0.0;
            for (int j = 0; j < cnt; j++)
                ss += vsrc[(size_t)(ymin + j) * vstride + x] * k[j];
            d[x] = round_up(ss);
        }
    }
    return IMS_OK;
}
