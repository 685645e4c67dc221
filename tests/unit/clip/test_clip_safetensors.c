/* SPDX-License-Identifier: MIT */
/*
 * test_clip_safetensors.c: the safetensors header parser on hand-made files:
 * a table of malformed headers (each must be a clean error naming the
 * problem), the valid corner cases (metadata, non-float buffers, empty
 * tensors, padding), lookups, and clip__safetensors_open on real files.
 *
 * Every image is built in an exactly sized heap block, so under ASan any
 * read past the end of the file is reported.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clip_int.h"

/* An exactly sized safetensors image: 8-byte length, `header`, then
 * `data_bytes` bytes of data (value = offset & 0xff). `hlen_override`, when
 * non-zero, replaces the stored header length. */
static unsigned char *make_image(const char *header, size_t data_bytes, uint64_t hlen_override,
                                 size_t *n_out)
{
    size_t hlen = strlen(header);
    size_t n = 8 + hlen + data_bytes;
    unsigned char *b = malloc(n);
    assert_non_null(b);
    uint64_t stored = hlen_override ? hlen_override : hlen;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(stored >> (8 * i));
    memcpy(b + 8, header, hlen);
    for (size_t i = 0; i < data_bytes; i++)
        b[8 + hlen + i] = (unsigned char)i;
    *n_out = n;
    return b;
}

struct bad_case {
    const char *header;
    size_t data_bytes;
    uint64_t hlen_override;
    enum ims_status st;
    const char *needle;
};

static void test_malformed(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"{", 0, 0, IMS_ERR_CORRUPT, "not valid JSON"},
        {"[]", 0, 0, IMS_ERR_CORRUPT, "not a JSON object"},
        {"{}", 0, 1000, IMS_ERR_CORRUPT, "beyond the end of the file"},
        {"{}", 0, 200ull * 1024 * 1024, IMS_ERR_CORRUPT, "absurd"},
        {"{}", 0, UINT64_MAX, IMS_ERR_CORRUPT, "absurd"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, 0, IMS_ERR_CORRUPT, "duplicate"},
        {"{\"w\":5}", 0, 0, IMS_ERR_CORRUPT, "'w': header entry is not an object"},
        {"{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, IMS_ERR_CORRUPT,
         "'w': missing or non-string dtype"},
        {"{\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0,
         IMS_ERR_UNSUPPORTED, "'w': unknown dtype 'F33'"},
        {"{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, 0, IMS_ERR_CORRUPT,
         "'w': missing or non-array shape"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, 0,
         IMS_ERR_CORRUPT, "'w': shape[0] is not a non-negative integer"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, 0,
         IMS_ERR_CORRUPT, "'w': shape[0]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, 0,
         IMS_ERR_UNSUPPORTED, "9 dimensions"},
        /* 2^32 * 2^32 elements: count overflows */
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}",
         4, 0, IMS_ERR_CORRUPT, "'w': shape element count overflows"},
        /* 2^62 elements of 4 bytes: bytes overflow */
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4,
         0, IMS_ERR_CORRUPT, "'w': shape byte size overflows"},
        /* huge but not overflowing: size mismatch */
        {"{\"w\":{\"dtype\":\"F16\",\"shape\":[65536,65536],\"data_offsets\":[0,4]}}", 4, 0,
         IMS_ERR_CORRUPT, "'w': F16 shape needs 8589934592 bytes but data_offsets span 4"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, 0,
         IMS_ERR_CORRUPT, "'w': F32 shape needs 8 bytes but data_offsets span 4"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, 0, IMS_ERR_CORRUPT,
         "'w': data_offsets must be an array [begin, end]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}", 4, 0,
         IMS_ERR_CORRUPT, "'w': data_offsets are not non-negative integers"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, 0,
         IMS_ERR_CORRUPT, "'w': data_offsets begin 8 > end 4"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 7, 0,
         IMS_ERR_CORRUPT, "'w': data_offsets end 8 beyond the data section (7 bytes)"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551612,0]}}", 8,
         0, IMS_ERR_CORRUPT, "not valid JSON"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[9223372036854775807,"
         "9223372036854775807]}}",
         8, 0, IMS_ERR_CORRUPT, "end 9223372036854775807 beyond"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[9223372036854775803,"
         "9223372036854775807]}}",
         8, 0, IMS_ERR_CORRUPT, "beyond the data section"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, 0, IMS_ERR_CORRUPT, "tensors 'a' and 'b' overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
         "\"b\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
         8, 0, IMS_ERR_CORRUPT, "overlap"},
        {"{\"__metadata__\":[1]}", 0, 0, IMS_ERR_CORRUPT, "__metadata__ is not an object"},
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(cases); i++) {
        const struct bad_case *c = &cases[i];
        size_t n;
        unsigned char *img = make_image(c->header, c->data_bytes, c->hlen_override, &n);
        struct clip_safetensors_file f;
        memset(&f, 0xab, sizeof(f)); /* must stay untouched on failure */
        struct ims_error err = {0};
        enum ims_status st = clip__safetensors_parse(img, n, &f, &err);
        if (st != c->st || !strstr(err.message, c->needle))
            fail_msg("case %zu: want %s \"%s\", got %s \"%s\"", i, ims_status_name(c->st),
                     c->needle, ims_status_name(st), err.message);
        assert_int_equal(f.n_tensors, (int)0xabababab);
        free(img);
    }
    /* Files too short to hold the length: every size 0..7. */
    unsigned char *tiny = malloc(8);
    memset(tiny, 0, 8);
    for (size_t n = 0; n < 8; n++) {
        unsigned char *b = malloc(n ? n : 1);
        memcpy(b, tiny, n);
        struct clip_safetensors_file f;
        struct ims_error err = {0};
        assert_int_equal(clip__safetensors_parse(b, n, &f, &err), IMS_ERR_CORRUPT);
        assert_non_null(strstr(err.message, "too short"));
        free(b);
    }
    free(tiny);
}

static void test_valid(void **state)
{
    (void)state;
    /* Metadata, an I64 buffer, an empty tensor sharing an offset, a 0-d
     * scalar, unsorted entries, a hole, trailing spaces. */
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"z\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[30,32]},"
                    "\"ids\":{\"dtype\":\"I64\",\"shape\":[1,2],\"data_offsets\":[8,24]},"
                    "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[8,8]},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"h\":{\"dtype\":\"F16\",\"shape\":[2,1],\"data_offsets\":[24,28]}}   ";
    size_t n;
    unsigned char *img = make_image(h, 32, 0, &n);
    struct clip_safetensors_file f;
    struct ims_error err = {0};
    enum ims_status st = clip__safetensors_parse(img, n, &f, &err);
    if (st != IMS_OK)
        fail_msg("%s", err.message);
    assert_int_equal(f.n_tensors, 5);
    const unsigned char *data = img + 8 + strlen(h);
    const char *names[] = {"a", "e", "h", "ids", "z"}; /* sorted by name */
    for (int i = 0; i < 5; i++)
        assert_string_equal(f.tensors[i].name, names[i]);
    const struct clip_safetensors_tensor *t = clip__safetensors_find(&f, "ids");
    assert_non_null(t);
    assert_int_equal(t->dtype, CLIP_DTYPE_OTHER);
    assert_string_equal(t->dtype_name, "I64");
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->shape[1], 2);
    assert_ptr_equal(t->data, data + 8);
    t = clip__safetensors_find(&f, "z");
    assert_int_equal(t->dtype, CLIP_DTYPE_BF16);
    assert_int_equal(t->n_dims, 0);
    assert_int_equal(t->begin, 30);
    assert_int_equal(t->end, 32);
    t = clip__safetensors_find(&f, "h");
    assert_int_equal(t->dtype, CLIP_DTYPE_F16);
    assert_ptr_equal(t->data, data + 24);
    assert_int_equal(clip__safetensors_find(&f, "a")->dtype, CLIP_DTYPE_F32);
    assert_null(clip__safetensors_find(&f, "b"));
    assert_null(clip__safetensors_find(&f, "zz"));
    assert_null(clip__safetensors_find(&f, ""));
    assert_null(clip__safetensors_find(&f, "__metadata__"));
    clip__safetensors_close(&f); /* no map: frees the index only */
    free(img);

    /* Empty header object: no tensors, valid. */
    img = make_image("{}", 0, 0, &n);
    assert_int_equal(clip__safetensors_parse(img, n, &f, NULL), IMS_OK);
    assert_int_equal(f.n_tensors, 0);
    assert_null(clip__safetensors_find(&f, "a"));
    clip__safetensors_close(&f);
    free(img);
}

static void test_open(void **state)
{
    (void)state;
    char dir[] = "/tmp/ims_test_st_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[256];
    struct clip_safetensors_file f;
    struct ims_error err = {0};

    snprintf(p, sizeof(p), "%s/missing.safetensors", dir);
    assert_int_equal(clip__safetensors_open(p, &f, &err), IMS_ERR_NOT_FOUND);
    assert_non_null(strstr(err.message, "missing.safetensors"));
    assert_int_equal(clip__safetensors_open(dir, &f, &err), IMS_ERR_INVALID);

    snprintf(p, sizeof(p), "%s/empty.safetensors", dir);
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(clip__safetensors_open(p, &f, &err), IMS_ERR_CORRUPT);
    assert_non_null(strstr(err.message, "too short"));
    unlink(p);

    size_t n;
    unsigned char *img =
        make_image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0, &n);
    snprintf(p, sizeof(p), "%s/ok.safetensors", dir);
    fp = fopen(p, "wb");
    assert_int_equal(fwrite(img, 1, n, fp), n);
    fclose(fp);
    assert_int_equal(clip__safetensors_open(p, &f, &err), IMS_OK);
    assert_non_null(f.map);
    assert_int_equal(f.map_bytes, n);
    const struct clip_safetensors_tensor *t = clip__safetensors_find(&f, "w");
    assert_non_null(t);
    assert_memory_equal(t->data, img + n - 8, 8);
    clip__safetensors_close(&f);
    assert_null(f.map);
    clip__safetensors_close(NULL);
    unlink(p);

    /* An error from the parser is prefixed with the path. */
    img[9] = 'x';
    snprintf(p, sizeof(p), "%s/bad.safetensors", dir);
    fp = fopen(p, "wb");
    assert_int_equal(fwrite(img, 1, n, fp), n);
    fclose(fp);
    assert_int_equal(clip__safetensors_open(p, &f, &err), IMS_ERR_CORRUPT);
    assert_non_null(strstr(err.message, "bad.safetensors"));
    assert_non_null(strstr(err.message, "not valid JSON"));
    unlink(p);
    free(img);
    assert_int_equal(rmdir(dir), 0);
}

static void test_alloc_failures(void **state)
{
    (void)state;
    size_t n;
    unsigned char *img = make_image(
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
        8, 0, &n);
    int ok = 0;
    long k;
    for (k = 0; k < 100 && !ok; k++) {
        struct clip_safetensors_file f;
        struct ims_error err = {0};
        ims_alloc_set_fail_after(k);
        enum ims_status st = clip__safetensors_parse(img, n, &f, &err);
        ims_alloc_set_fail_after(-1);
        if (st == IMS_OK) {
            ok = 1;
            assert_int_equal(f.n_tensors, 2);
            clip__safetensors_close(&f);
        } else {
            assert_int_equal(st, IMS_ERR_NOMEM);
        }
    }
    assert_true(ok);
    assert_true(k > 1);
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_open),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
