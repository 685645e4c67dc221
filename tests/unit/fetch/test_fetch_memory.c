/* SPDX-License-Identifier: MIT */
/* test_fetch_memory.c: fetch_to_memory against the loopback test server:
 * the body, each kind of failure with its status and the URL in the
 * message, the address policy, and bad arguments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http_test_server.h"
#include "imgsearch/fetch.h"

static struct fetch_options loopback_opts(void)
{
    struct fetch_options o;
    fetch_options_default(&o);
    o.allow_private = 1;
    o.connect_timeout_ms = 2000;
    o.total_timeout_ms = 5000;
    o.retry_base_ms = 10;
    o.max_retries = 0;
    return o;
}

static void test_body(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    static const char img[] = "\x89PNG\r\n\x1a\n not really";
    hts_route(s, &(struct hts_route){.path = "/a.png", .body = img, .body_len = sizeof(img) - 1});
    struct fetch_options o = loopback_opts();
    char url[128], *body = NULL;
    size_t len = 0;
    struct ims_error err = {0};
    assert_int_equal(fetch_to_memory(hts_url(s, "/a.png", url, sizeof(url)), &o, &body, &len,
                                     &err),
                     IMS_OK);
    assert_int_equal(len, sizeof(img) - 1);
    assert_memory_equal(body, img, len);
    assert_int_equal(body[len], '\0');
    ims_free(body);
    hts_stop(s);
}

static void test_failures(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    char big[4096];
    memset(big, 'x', sizeof(big));
    hts_route(s, &(struct hts_route){.path = "/big", .body = big, .body_len = sizeof(big)});
    struct fetch_options o = loopback_opts();
    o.max_bytes = 1024;
    char url[128], *body = NULL;
    size_t len = 0;
    struct ims_error err = {0};
    assert_int_equal(fetch_to_memory(hts_url(s, "/missing", url, sizeof(url)), &o, &body, &len,
                                     &err),
                     IMS_ERR_NOT_FOUND);
    assert_null(body);
    assert_non_null(strstr(err.message, url));
    assert_non_null(strstr(err.message, "HTTP 404"));
    assert_int_equal(fetch_to_memory(hts_url(s, "/big", url, sizeof(url)), &o, &body, &len, &err),
                     IMS_ERR_TOO_LARGE);
    assert_null(body);
    /* the default policy refuses loopback, without a connection */
    struct fetch_options d;
    fetch_options_default(&d);
    long before = hts_connections(s);
    assert_int_equal(fetch_to_memory(hts_url(s, "/big", url, sizeof(url)), &d, &body, &len, &err),
                     IMS_ERR_REFUSED);
    assert_non_null(strstr(err.message, "loopback"));
    assert_int_equal(hts_connections(s), before);
    /* not a URL we fetch: fetch_url_check's status */
    assert_int_equal(fetch_to_memory("file:///etc/passwd", &o, &body, &len, &err),
                     IMS_ERR_UNSUPPORTED);
    assert_int_equal(fetch_to_memory("http://", &o, &body, &len, &err), IMS_ERR_INVALID);
    assert_int_equal(fetch_to_memory(NULL, &o, &body, &len, &err), IMS_ERR_INVALID);
    assert_int_equal(fetch_to_memory(url, &o, NULL, &len, &err), IMS_ERR_INVALID);
    assert_null(body);
    hts_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
