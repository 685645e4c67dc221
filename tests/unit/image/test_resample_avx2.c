/* SPDX-License-Identifier: MIT */
/*
 * test_resample_avx2.c: resample.c's AVX2 loops (issue 11 item 1) give the
 * scalar loops' bytes. Random images of many sizes, channel counts, scales
 * (down and up, one axis or both) and crop windows go through
 * image__resample_u8 with image__resample_simd on and off; the CLIP input
 * and the thumbnail of a photo-sized image too. On a CPU without AVX2 both
 * runs take the scalar loops and the test still checks they agree.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "image_int.h"

static uint64_t rs = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 32);
}

/* noise over a gradient: every byte value, extremes included (clip8 at
 * both ends) */
static uint8_t *gen(int w, int h, int ch)
{
    size_t n = (size_t)w * (size_t)h * (size_t)ch;
    uint8_t *p = malloc(n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        uint32_t r = rnd();
        p[i] = (r & 7) == 0 ? 255 : (r & 7) == 1 ? 0 : (uint8_t)((i * 7 + (r >> 8)) & 255);
    }
    return p;
}

static void resample_both(const uint8_t *src, int w, int h, int ch, int ow, int oh, int x0,
                          int y0, int ww, int wh)
{
    size_t n = (size_t)ww * (size_t)wh * (size_t)ch;
    uint8_t *a = malloc(n), *b = malloc(n);
    assert_non_null(a);
    assert_non_null(b);
    struct ims_error err = {0};
    image__resample_simd = 1;
    assert_int_equal(image__resample_u8(src, w, h, (size_t)w * ch, ch, ow, oh, x0, y0, ww, wh, a,
                                        (size_t)ww * ch, &err),
                     IMS_OK);
    image__resample_simd = 0;
    assert_int_equal(image__resample_u8(src, w, h, (size_t)w * ch, ch, ow, oh, x0, y0, ww, wh, b,
                                        (size_t)ww * ch, &err),
                     IMS_OK);
    image__resample_simd = 1;
    if (memcmp(a, b, n) != 0)
        fail_msg("%dx%dx%d -> %dx%d window (%d,%d) %dx%d: SIMD and scalar bytes differ", w, h,
                 ch, ow, oh, x0, y0, ww, wh);
    free(a);
    free(b);
}

static void test_resample_matches_scalar(void **state)
{
    (void)state;
    static const int sizes[][4] = {
        /* w, h, out_w, out_h */
        {1008, 756, 299, 224}, /* a 12 MP photo at 2/8 -> CLIP (before the crop) */
        {1008, 756, 256, 192}, /* -> thumbnail */
        {707, 531, 298, 224},  /* 24 MP at 1/8 */
        {31, 17, 7, 5},        {17, 31, 5, 9},   {9, 9, 23, 23}, /* enlarging */
        {640, 3, 224, 3},      {3, 640, 3, 224}, /* one axis only */
        {2, 2, 1, 1},          {1, 1, 5, 5},     {300, 200, 299, 199},
    };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        for (int ch = 1; ch <= 4; ch++) {
            int w = sizes[i][0], h = sizes[i][1], ow = sizes[i][2], oh = sizes[i][3];
            uint8_t *src = gen(w, h, ch);
            resample_both(src, w, h, ch, ow, oh, 0, 0, ow, oh);
            /* a centre window, as CLIP's crop */
            int ww = ow > 2 ? ow / 2 : ow, wh = oh > 2 ? oh / 2 : oh;
            resample_both(src, w, h, ch, ow, oh, (ow - ww) / 2, (oh - wh) / 2, ww, wh);
            free(src);
        }
    }
}

static void test_clip_input_and_thumbnail_match_scalar(void **state)
{
    (void)state;
    struct image *img = NULL;
    struct ims_error err = {0};
    assert_int_equal(image_new(1008, 756, IMAGE_MODE_RGB, &img, &err), IMS_OK);
    uint8_t *px = gen(1008, 756, 3);
    for (int y = 0; y < 756; y++)
        memcpy(img->pixels + (size_t)y * img->stride, px + (size_t)y * 1008 * 3, 1008 * 3);
    free(px);
    static uint8_t a[224 * 224 * 3], b[224 * 224 * 3];
    uint8_t *ta = NULL, *tb = NULL;
    size_t na = 0, nb = 0;
    image__resample_simd = 1;
    assert_int_equal(image_clip_preprocess(img, 224, a, &err), IMS_OK);
    assert_int_equal(image_thumbnail_jpeg(img, 256, 80, &ta, &na, NULL, NULL, &err), IMS_OK);
    image__resample_simd = 0;
    assert_int_equal(image_clip_preprocess(img, 224, b, &err), IMS_OK);
    assert_int_equal(image_thumbnail_jpeg(img, 256, 80, &tb, &nb, NULL, NULL, &err), IMS_OK);
    image__resample_simd = 1;
    assert_memory_equal(a, b, sizeof(a));
    assert_int_equal(na, nb);
    assert_memory_equal(ta, tb, na);
    ims_free(ta);
    ims_free(tb);
    image_free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resample_matches_scalar),
        cmocka_unit_test(test_clip_input_and_thumbnail_match_scalar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
