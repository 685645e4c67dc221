/* SPDX-License-Identifier: MIT */
/*
 * test_server_ready.c: GET /healthz and /readyz follow the backend's
 * `ready` hook: 503 {"status":"starting"} while a node's index catches up,
 * 200 {"status":"ok"} once it has; without a hook, always ready. Neither is
 * rate limited. Over loopback with libcurl (proxies disabled).
 */
#include <curl/curl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imgsearch/server.h"

static atomic_int is_ready;
static atomic_int n_ready_calls;

static int fake_ready(void *self)
{
    (void)self;
    atomic_fetch_add(&n_ready_calls, 1);
    return atomic_load(&is_ready);
}

static enum ims_status fake_stats(void *self, struct server_arena *a, struct server_stats *out,
                                  struct ims_error *err)
{
    (void)self;
    (void)err;
    out->images = 0;
    out->dim = 4;
    out->model = server_arena_strdup(a, "m");
    out->index = server_arena_strdup(a, "Flat");
    return IMS_OK;
}

struct body {
    char data[4096];
    size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *user)
{
    struct body *b = user;
    size_t take = size * n;
    if (take > sizeof(b->data) - 1 - b->len)
        take = sizeof(b->data) - 1 - b->len;
    memcpy(b->data + b->len, p, take);
    b->len += take;
    b->data[b->len] = 0;
    return size * n;
}

/* GET base+path; returns the status, and the JSON "status" field in `word`. */
static long get_status(const char *base, const char *path, char *word, size_t cap)
{
    char url[256];
    snprintf(url, sizeof(url), "%s%s", base, path);
    struct body b = {.len = 0};
    CURL *c = curl_easy_init();
    assert_non_null(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    json_t *j = json_loads(b.data, 0, NULL);
    assert_non_null(j);
    const char *s = json_string_value(json_object_get(j, "status"));
    assert_non_null(s);
    snprintf(word, cap, "%s", s);
    json_decref(j);
    return code;
}

static struct server *start(const struct server_backend *be, char *base, size_t cap)
{
    struct server_options o;
    server_options_init(&o);
    o.port = 0;
    o.rate_per_s = 1; /* one request a second: health checks must not count */
    o.rate_burst = 1;
    struct server *s = NULL;
    struct ims_error err = {0};
    assert_int_equal(server_start(&o, be, &s, &err), IMS_OK);
    snprintf(base, cap, "http://127.0.0.1:%u", server_port(s));
    server_options_fini(&o);
    return s;
}

static void test_starting_then_ready(void **state)
{
    (void)state;
    struct server_backend be = {.stats = fake_stats, .ready = fake_ready};
    char base[64], w[32];
    atomic_store(&is_ready, 0);
    atomic_store(&n_ready_calls, 0);
    struct server *s = start(&be, base, sizeof(base));
    for (int i = 0; i < 3; i++) { /* more than the rate limit allows */
        assert_int_equal(get_status(base, "/healthz", w, sizeof(w)), 503);
        assert_string_equal(w, "starting");
        assert_int_equal(get_status(base, "/readyz", w, sizeof(w)), 503);
        assert_string_equal(w, "starting");
    }
    assert_int_equal(atomic_load(&n_ready_calls), 6);
    atomic_store(&is_ready, 1);
    assert_int_equal(get_status(base, "/healthz", w, sizeof(w)), 200);
    assert_string_equal(w, "ok");
    assert_int_equal(get_status(base, "/readyz", w, sizeof(w)), 200);
    assert_string_equal(w, "ok");
    server_stop(s);
    server_free(s);
}

static void test_no_hook_is_ready(void **state)
{
    (void)state;
    struct server_backend be = {.stats = fake_stats};
    char base[64], w[32];
    struct server *s = start(&be, base, sizeof(base));
    assert_int_equal(get_status(base, "/readyz", w, sizeof(w)), 200);
    assert_string_equal(w, "ok");
    assert_int_equal(get_status(base, "/healthz", w, sizeof(w)), 200);
    assert_string_equal(w, "ok");
    server_stop(s);
    server_free(s);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_starting_then_ready),
        cmocka_unit_test(test_no_hook_is_ready),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
