/* SPDX-License-Identifier: MIT */
/*
 * test_base_words.c: the FNV-1a hash carried on over several pieces, and the
 * one table of image format words (ims_format_word) that the server's filters
 * and the image module share.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "imgsearch/base.h"

/* The FNV reference values (draft-eastlake-fnv, test vectors of FNV-1a 64). */
static void test_fnv1a64_vectors(void **state)
{
    (void)state;
    assert_true(ims_fnv1a64("", 0) == 0xcbf29ce484222325ull);
    assert_true(ims_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(ims_fnv1a64("foobar", 6) == 0x85944171f73967e8ull);
    assert_true(IMS_FNV1A64_BASIS == 0xcbf29ce484222325ull);
}

/* Hashing in pieces gives the hash of the whole, whatever the cut. */
static void test_fnv1a64_update(void **state)
{
    (void)state;
    const char *s = "the quick brown fox jumps over the lazy dog";
    size_t n = strlen(s);
    uint64_t whole = ims_fnv1a64(s, n);
    for (size_t cut = 0; cut <= n; cut++) {
        uint64_t h = ims_fnv1a64_update(IMS_FNV1A64_BASIS, s, cut);
        assert_true(ims_fnv1a64_update(h, s + cut, n - cut) == whole);
    }
    assert_true(ims_fnv1a64_update(ims_fnv1a64("foo", 3), "bar", 3) == 0x85944171f73967e8ull);
    assert_true(ims_fnv1a64_update(12345, "", 0) == 12345);
}

static void test_format_words(void **state)
{
    (void)state;
    static const char *const pairs[][2] = {
        {"jpeg", "jpeg"}, {"JPG", "jpeg"}, {"Jpeg", "jpeg"}, {"png", "png"},
        {"webp", "webp"}, {"gif", "gif"},  {"bmp", "bmp"},   {"heic", "heic"},
        {"HEIF", "heic"}, {"avif", "avif"}, {"tiff", "tiff"}, {"tif", "tiff"},
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(pairs); i++) {
        const char *w = ims_format_word(pairs[i][0]);
        assert_non_null(w);
        assert_string_equal(w, pairs[i][1]);
    }
    static const char *const bad[] = {"", "jp", "jpegx", "svg", "pdf", " png", "png "};
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad); i++)
        assert_null(ims_format_word(bad[i]));
    assert_null(ims_format_word(NULL));
    /* every canonical word is in the message list, and maps to itself */
    char list[] = IMS_FORMAT_WORDS;
    int n = 0;
    for (char *w = strtok(list, ", "); w; w = strtok(NULL, ", "), n++) {
        assert_non_null(ims_format_word(w));
        assert_string_equal(ims_format_word(w), w);
    }
    assert_int_equal(n, 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fnv1a64_vectors),
        cmocka_unit_test(test_fnv1a64_update),
        cmocka_unit_test(test_format_words),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
