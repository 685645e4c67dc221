/* SPDX-License-Identifier: MIT */
/* test_base.c: status table, error carrier, bounded buffer, files, alloc hook. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "imgsearch/base.h"

#include <pthread.h>

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(ims_status_name(IMS_OK), "ok");
    assert_string_equal(ims_status_name(IMS_ERR_TOO_LARGE), "too_large");
    assert_string_equal(ims_status_name(IMS_ERR_INTERNAL), "internal");
    assert_string_equal(ims_status_name((enum ims_status)999), "unknown");
    for (int s = 0; s < IMS_STATUS_COUNT; s++) {
        assert_non_null(ims_strerror((enum ims_status)s));
        for (int t = s + 1; t < IMS_STATUS_COUNT; t++)
            assert_string_not_equal(ims_status_name((enum ims_status)s),
                                    ims_status_name((enum ims_status)t));
    }
}

static void test_error_carrier(void **state)
{
    (void)state;
    struct ims_error err = {0};
    assert_string_equal(ims_error_message(&err, IMS_ERR_CORRUPT), "corrupt or truncated data");
    assert_int_equal(ims_error_set(&err, IMS_ERR_CORRUPT, "bad byte %d", 42), IMS_ERR_CORRUPT);
    assert_string_equal(ims_error_message(&err, IMS_ERR_CORRUPT), "bad byte 42");
    ims_error_prefix(&err, "file %s", "a.jpg");
    assert_string_equal(err.message, "file a.jpg: bad byte 42");
    assert_int_equal(ims_error_set(NULL, IMS_ERR_IO, "ignored"), IMS_ERR_IO);
    assert_string_equal(ims_error_message(NULL, IMS_ERR_IO), "input/output error");
}

static void test_buf_limit(void **state)
{
    (void)state;
    struct ims_buf b;
    ims_buf_init(&b, 10);
    assert_int_equal(ims_buf_append(&b, "hello", 5), IMS_OK);
    assert_int_equal(ims_buf_printf(&b, "%d", 1234), IMS_OK);
    assert_string_equal(b.data, "hello1234");
    assert_int_equal(ims_buf_append(&b, "ab", 2), IMS_ERR_TOO_LARGE);
    assert_int_equal(b.len, 9); /* unchanged by the failed append */
    assert_int_equal(ims_buf_append(&b, "a", 1), IMS_OK);
    size_t n;
    char *s = ims_buf_steal(&b, &n);
    assert_int_equal(n, 10);
    assert_string_equal(s, "hello1234a");
    ims_free(s);
    assert_null(b.data);
    ims_buf_fini(&b);
}

static void test_alloc_fail_hook(void **state)
{
    (void)state;
    ims_alloc_set_fail_after(1);
    void *a = ims_malloc(8);
    void *b = ims_malloc(8);
    ims_alloc_set_fail_after(-1);
    assert_non_null(a);
    assert_null(b);
    ims_free(a);
    struct ims_buf buf;
    ims_buf_init(&buf, 100);
    ims_alloc_set_fail_after(0);
    assert_int_equal(ims_buf_append(&buf, "x", 1), IMS_ERR_NOMEM);
    ims_alloc_set_fail_after(-1);
    ims_buf_fini(&buf);
}

static void test_size_overflow(void **state)
{
    (void)state;
    size_t r;
    assert_int_equal(ims_size_mul(SIZE_MAX / 2, 3, &r), -1);
    assert_int_equal(ims_size_mul(1000, 1000, &r), 0);
    assert_int_equal(r, 1000000);
    assert_int_equal(ims_size_add(SIZE_MAX, 1, &r), -1);
}

static void test_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/ims_test_base_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sub[512], path[600];
    snprintf(sub, sizeof(sub), "%s/a/b/c", dir);
    assert_int_equal(ims_mkdir_p(sub, NULL), IMS_OK);
    snprintf(path, sizeof(path), "%s/f.bin", sub);
    struct ims_error err = {0};
    assert_int_equal(ims_file_write_atomic(path, "0123456789", 10, &err), IMS_OK);
    char *data;
    size_t len;
    assert_int_equal(ims_file_read(path, 100, &data, &len, &err), IMS_OK);
    assert_int_equal(len, 10);
    assert_memory_equal(data, "0123456789", 10);
    ims_free(data);
    assert_int_equal(ims_file_read(path, 9, &data, &len, &err), IMS_ERR_TOO_LARGE);
    assert_non_null(strstr(err.message, "over the limit"));
    snprintf(path, sizeof(path), "%s/missing", dir);
    assert_int_equal(ims_file_read(path, 9, &data, &len, &err), IMS_ERR_NOT_FOUND);
    assert_int_equal(ims_file_read(sub, 9, &data, &len, &err), IMS_ERR_INVALID);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}


struct producer_arg {
    struct ims_queue *q;
    int n;
};

static void *producer(void *p)
{
    struct producer_arg *a = p;
    for (intptr_t i = 1; i <= a->n; i++)
        if (ims_queue_push(a->q, (void *)i) != IMS_OK)
            break;
    return NULL;
}

static void test_queue_backpressure_and_close(void **state)
{
    (void)state;
    struct ims_queue *q;
    assert_int_equal(ims_queue_new(4, &q), IMS_OK);
    void *item;
    assert_int_equal(ims_queue_pop_timed(q, &item, 10), IMS_ERR_TIMEOUT);
    for (intptr_t i = 1; i <= 4; i++)
        assert_int_equal(ims_queue_try_push(q, (void *)i), IMS_OK);
    assert_int_equal(ims_queue_try_push(q, (void *)5), IMS_ERR_BUSY);
    assert_int_equal(ims_queue_len(q), 4);
    for (intptr_t i = 1; i <= 4; i++) {
        assert_int_equal(ims_queue_pop(q, &item), IMS_OK);
        assert_int_equal((intptr_t)item, i); /* FIFO */
    }
    /* a producer of 1000 items through a queue of 4: never more than 4 queued */
    struct producer_arg a = {q, 1000};
    pthread_t t;
    pthread_create(&t, NULL, producer, &a);
    intptr_t sum = 0;
    for (int i = 0; i < 1000; i++) {
        assert_true(ims_queue_len(q) <= 4);
        assert_int_equal(ims_queue_pop(q, &item), IMS_OK);
        sum += (intptr_t)item;
    }
    pthread_join(t, NULL);
    assert_int_equal(sum, 1000 * 1001 / 2);
    assert_int_equal(ims_queue_push(q, (void *)7), IMS_OK);
    ims_queue_close(q);
    assert_int_equal(ims_queue_push(q, (void *)8), IMS_ERR_CANCELLED);
    assert_int_equal(ims_queue_pop(q, &item), IMS_OK); /* drains what is left */
    assert_int_equal((intptr_t)item, 7);
    assert_int_equal(ims_queue_pop(q, &item), IMS_ERR_CANCELLED);
    ims_queue_free(q);
}

static void test_sha256_vectors(void **state)
{
    (void)state;
    /* FIPS 180-4 / NIST example vectors, and a long input crossing blocks */
    static const struct {
        const char *in;
        const char *hex;
    } cases[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char hex[65];
    uint8_t out[32];
    for (size_t i = 0; i < IMS_ARRAY_LEN(cases); i++) {
        ims_sha256(cases[i].in, strlen(cases[i].in), out);
        ims_hex(out, 32, hex);
        assert_string_equal(hex, cases[i].hex);
    }
    char *million = malloc(1000000);
    memset(million, 'a', 1000000);
    ims_sha256(million, 1000000, out);
    ims_hex(out, 32, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(million);
}

/* The accelerated path (SHA extensions where the CPU has them) against the
 * portable one: every length 0..300 (all tail and block boundaries) and a
 * 1 MB buffer, on pseudo-random bytes. */
static void test_sha256_paths_agree(void **state)
{
    (void)state;
    size_t n = 1 << 20;
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (uint8_t)(x >> 24);
    }
    uint8_t a[32], b[32];
    for (size_t len = 0; len <= 300; len++) {
        ims_sha256(buf + 3, len, a);
        ims_sha256_portable(buf + 3, len, b);
        assert_memory_equal(a, b, 32);
    }
    ims_sha256(buf, n, a);
    ims_sha256_portable(buf, n, b);
    assert_memory_equal(a, b, 32);
    ims_sha256_portable("abc", 3, b);
    char hex[65];
    ims_hex(b, 32, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    free(buf);
}

static void test_fnv1a_and_deadline(void **state)
{
    (void)state;
    /* published FNV-1a 64-bit test vectors */
    assert_true(ims_fnv1a64("", 0) == 0xcbf29ce484222325ull);
    assert_true(ims_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(ims_fnv1a64("foobar", 6) == 0x85944171f73967e8ull);
    const long cases[] = {0, 1, 999, 1000, 1500, 2999, 123456};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct timespec before, d;
        clock_gettime(CLOCK_MONOTONIC, &before);
        ims_deadline_after_ms(CLOCK_MONOTONIC, cases[i], &d);
        assert_true(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
        double diff = (double)(d.tv_sec - before.tv_sec) + (d.tv_nsec - before.tv_nsec) * 1e-9;
        assert_true(diff >= cases[i] * 1e-3 - 1e-9);
        assert_true(diff < cases[i] * 1e-3 + 1.0); /* generous: only the arithmetic is tested */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names), cmocka_unit_test(test_error_carrier),
        cmocka_unit_test(test_buf_limit),    cmocka_unit_test(test_alloc_fail_hook),
        cmocka_unit_test(test_size_overflow), cmocka_unit_test(test_files),
        cmocka_unit_test(test_queue_backpressure_and_close),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_sha256_paths_agree),
        cmocka_unit_test(test_fnv1a_and_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
