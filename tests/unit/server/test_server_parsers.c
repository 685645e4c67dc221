/* SPDX-License-Identifier: MIT */
/*
 * test_server_parsers.c: the server's pure parsers without sockets: the
 * streaming multipart parser under every chunking of a body, boundary
 * extraction, the rate limiter's arithmetic with an injected clock, filter
 * dates and a multipart search's "filter" field.
 */
#include "server_int.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static const char body[] = "preamble\r\n"
                           "--AaB03x\r\n"
                           "Content-Disposition: form-data; name=\"text\"\r\n"
                           "\r\n"
                           "hello\r\n--AaB03\r\r\n"
                           "--AaB03x  \r\n"
                           "content-disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".jpg\"\r\n"
                           "Content-Type: image/png\r\n"
                           "\r\n"
                           "\x89PNG\r\n\r\n\r--\r\n--\r\n"
                           "--AaB03x--\r\n"
                           "epilogue";

static void parse_chunked(size_t chunk, struct server_mp_form *f)
{
    struct ims_error err;
    assert_int_equal(server__form_init(f, "multipart/form-data; boundary=\"AaB03x\"", 1 << 20, 8,
                                       &err),
                     IMS_OK);
    size_t n = sizeof(body) - 1;
    for (size_t off = 0; off < n; off += chunk) {
        size_t len = n - off < chunk ? n - off : chunk;
        assert_int_equal(server__form_feed(f, body + off, len, &err), IMS_OK);
    }
    assert_int_equal(server__form_finish(f, &err), IMS_OK);
}

static void test_mp_every_chunking(void **state)
{
    for (size_t chunk = 1; chunk <= sizeof(body); chunk++) {
        struct server_mp_form f;
        parse_chunked(chunk, &f);
        assert_int_equal(f.n_fields, 2);
        assert_string_equal(f.fields[0].info.name, "text");
        assert_false(f.fields[0].info.has_filename);
        assert_int_equal(f.fields[0].data.len, 15);
        assert_memory_equal(f.fields[0].data.data, "hello\r\n--AaB03\r", 15);
        assert_string_equal(f.fields[1].info.name, "file");
        assert_string_equal(f.fields[1].info.filename, "a \"b\".jpg");
        assert_string_equal(f.fields[1].info.content_type, "image/png");
        assert_int_equal(f.fields[1].data.len, 15);
        assert_memory_equal(f.fields[1].data.data, "\x89PNG\r\n\r\n\r--\r\n--", 15);
        server__form_fini(&f);
    }
}

static void test_mp_boundary(void **state)
{
    char b[SERVER_MP_BOUNDARY_MAX + 1];
    struct ims_error err;
    assert_int_equal(server__mp_boundary("multipart/form-data; boundary=abc", b, &err), IMS_OK);
    assert_string_equal(b, "abc");
    assert_int_equal(server__mp_boundary("Multipart/Form-Data; charset=x; BOUNDARY=\"a b\"", b,
                                         &err),
                     IMS_OK);
    assert_string_equal(b, "a b");
    assert_int_equal(server__mp_boundary("multipart/form-data", b, &err), IMS_ERR_INVALID);
    assert_int_equal(server__mp_boundary("multipart/form-data; boundary=", b, &err),
                     IMS_ERR_INVALID);
    assert_int_equal(server__mp_boundary("multipart/form-data; boundary=a\rb", b, &err),
                     IMS_ERR_INVALID);
    char longb[200];
    snprintf(longb, sizeof(longb), "multipart/form-data; boundary=%0100d", 7);
    assert_int_equal(server__mp_boundary(longb, b, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "70"));
}

static void test_mp_limits(void **state)
{
    struct server_mp_form f;
    struct ims_error err;
    /* total bytes */
    assert_int_equal(server__form_init(&f, "multipart/form-data; boundary=X", 4, 8, &err), IMS_OK);
    const char *b1 = "--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n12345\r\n--X--";
    assert_int_equal(server__form_feed(&f, b1, strlen(b1), &err), IMS_ERR_TOO_LARGE);
    assert_non_null(strstr(err.message, "4 bytes"));
    /* the error is sticky */
    assert_int_equal(server__form_feed(&f, "x", 1, &err), IMS_ERR_TOO_LARGE);
    assert_int_equal(server__form_finish(&f, &err), IMS_ERR_TOO_LARGE);
    server__form_fini(&f);
    /* number of parts */
    assert_int_equal(server__form_init(&f, "multipart/form-data; boundary=X", 100, 1, &err),
                     IMS_OK);
    const char *b2 = "--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
                     "--X\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n2\r\n--X--";
    assert_int_equal(server__form_feed(&f, b2, strlen(b2), &err), IMS_ERR_TOO_LARGE);
    server__form_fini(&f);
    /* a header line longer than the parser's line buffer */
    assert_int_equal(server__form_init(&f, "multipart/form-data; boundary=X", 100, 4, &err),
                     IMS_OK);
    char hdr[SERVER_MP_LINE_MAX + 64];
    memset(hdr, 'h', sizeof(hdr));
    memcpy(hdr, "--X\r\n", 5);
    assert_int_equal(server__form_feed(&f, hdr, sizeof(hdr), &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "too long"));
    server__form_fini(&f);
}

static void test_rate_limiter(void **state)
{
    struct server_rl rl;
    int retry = 0;
    assert_int_equal(server__rl_init(&rl, 2.0, 3.0), IMS_OK);
    for (int i = 0; i < 3; i++)
        assert_true(server__rl_take(&rl, "10.0.0.1", 100.0, &retry));
    assert_false(server__rl_take(&rl, "10.0.0.1", 100.0, &retry));
    assert_int_equal(retry, 1);
    /* another client has its own bucket */
    assert_true(server__rl_take(&rl, "10.0.0.2", 100.0, &retry));
    /* half a second later one token (rate 2/s) is back */
    assert_true(server__rl_take(&rl, "10.0.0.1", 100.5, &retry));
    assert_false(server__rl_take(&rl, "10.0.0.1", 100.5, &retry));
    /* many clients: the table stays bounded and keeps working */
    char key[32];
    for (int i = 0; i < 3 * SERVER_RL_SLOTS; i++) {
        snprintf(key, sizeof(key), "c%d", i);
        assert_true(server__rl_take(&rl, key, 200.0 + i * 1e-3, &retry));
    }
    server__rl_fini(&rl);
    /* slow rate: Retry-After rounds up to whole seconds */
    assert_int_equal(server__rl_init(&rl, 0.1, 1.0), IMS_OK);
    assert_true(server__rl_take(&rl, "a", 0.0, &retry));
    assert_false(server__rl_take(&rl, "a", 0.0, &retry));
    assert_int_equal(retry, 10);
    server__rl_fini(&rl);
    /* rate 0 disables */
    assert_int_equal(server__rl_init(&rl, 0.0, 1.0), IMS_OK);
    for (int i = 0; i < 100; i++)
        assert_true(server__rl_take(&rl, "a", 0.0, &retry));
    server__rl_fini(&rl);
}

static void test_arena_cap(void **state)
{
    struct server_arena a;
    server__arena_init(&a, 100000);
    void *p = server_arena_alloc(&a, 40000);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 16, 0);
    assert_non_null(server_arena_alloc(&a, 40000));
    assert_null(server_arena_alloc(&a, 40000)); /* past the cap */
    char *s = server_arena_strdup(&a, "abc");
    assert_string_equal(s, "abc");
    assert_null(server_arena_alloc(&a, SIZE_MAX));
    server__arena_fini(&a);
}

/* Filter dates in GET queries: UTC days (a "to" bound takes the day's last
 * second), full times, unix seconds; impossible dates are 400s. */
static void test_filter_dates(void **state)
{
    (void)state;
    static const struct {
        const char *from, *to;
        int ok;
        int64_t want_from, want_to;
    } cases[] = {
        {"2024-01-01", "2024-02-29", 1, 1704067200, 1709251199}, /* leap day */
        {"1970-01-01T00:00:00Z", "2000-03-01 12:30:05", 1, 0, 951913805},
        {"1969-12-31", "86400", 1, -86400, 86400},
        {"2023-02-29", NULL, 0, 0, 0}, /* not a leap year */
        {"1900-02-29", NULL, 0, 0, 0}, /* century, not a leap year */
        {"2024-13-01", NULL, 0, 0, 0},
        {"2024-01-01T24:00:00", NULL, 0, 0, 0},
        {"2024-1-01", NULL, 0, 0, 0},
        {"yesterday", NULL, 0, 0, 0},
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(cases); i++) {
        struct server_arena a;
        server__arena_init(&a, 1 << 20);
        struct server_query_args g;
        memset(&g, 0, sizeof(g));
        g.q = "beach";
        g.added_from = cases[i].from;
        g.added_to = cases[i].to;
        struct server_query q;
        memset(&q, 0, sizeof(q));
        struct ims_error err = {{0}};
        enum ims_status st = server__query_from_args(&g, &a, &q, &err);
        if (!cases[i].ok) {
            assert_int_equal(st, IMS_ERR_INVALID);
            assert_non_null(strstr(err.message, "added_from"));
        } else {
            assert_int_equal(st, IMS_OK);
            assert_non_null(q.filter);
            assert_true(q.filter->has_added_from && q.filter->has_added_to);
            assert_int_equal(q.filter->added_from, cases[i].want_from);
            assert_int_equal(q.filter->added_to, cases[i].want_to);
        }
        server__arena_fini(&a);
    }
}

/* A multipart search's "filter" field: the JSON body's filter object as text
 * (the web page's search by an uploaded image sends its filters so). */
static enum ims_status form_query(const char *filter, struct server_arena *a,
                                  struct server_query *q, struct ims_error *err)
{
    struct server_mp_form f;
    struct ims_buf mp;
    ims_buf_init(&mp, 1 << 20);
    ims_buf_printf(&mp, "--XB\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nbeach\r\n");
    ims_buf_printf(&mp, "--XB\r\nContent-Disposition: form-data; name=\"filter\"\r\n\r\n%s\r\n",
                   filter);
    ims_buf_printf(&mp, "--XB--\r\n");
    assert_int_equal(server__form_init(&f, "multipart/form-data; boundary=XB", 1 << 20, 8, err),
                     IMS_OK);
    assert_int_equal(server__form_feed(&f, mp.data, mp.len, err), IMS_OK);
    assert_int_equal(server__form_finish(&f, err), IMS_OK);
    memset(q, 0, sizeof(*q));
    enum ims_status st = server__query_from_form(&f, a, q, err);
    /* the filter lives in the arena (the terms point into the form: not read here) */
    server__form_fini(&f);
    ims_buf_fini(&mp);
    return st;
}

static void test_form_filter(void **state)
{
    (void)state;
    struct server_arena a;
    server__arena_init(&a, 1 << 20);
    struct server_query q;
    struct ims_error err = {{0}};
    assert_int_equal(form_query("{\"format\": [\"heic\", \"jpg\"], \"min_width\": 700, "
                                "\"taken\": {\"from\": \"2024-05-17\"}, \"tags\": [\"Trip\"], "
                                "\"source_prefix\": \"/photos/\"}",
                                &a, &q, &err),
                     IMS_OK);
    assert_non_null(q.filter);
    assert_string_equal(q.filter->formats, "heic,jpeg");
    assert_int_equal(q.filter->min_width, 700);
    assert_true(q.filter->has_taken_from && !q.filter->has_taken_to);
    assert_int_equal(q.filter->taken_from, 1715904000);
    assert_int_equal(q.filter->n_tags, 1);
    assert_string_equal(q.filter->tags[0], "Trip");
    assert_string_equal(q.filter->source_prefix, "/photos/");
    static const struct {
        const char *filter, *says;
    } bad[] = {{"{\"format\": [\"svg\"]}", "svg"},
               {"{\"colour\": 1}", "filter.colour"},
               {"{\"min_width\": -1}", "filter.min_width"},
               {"[1]", "filter: must be an object"},
               {"{\"format\": ", "filter: invalid JSON"}};
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad); i++) {
        assert_int_equal(form_query(bad[i].filter, &a, &q, &err), IMS_ERR_INVALID);
        assert_non_null(strstr(err.message, bad[i].says));
    }
    server__arena_fini(&a);
}

const struct CMUnitTest server_parser_tests[] = {
    cmocka_unit_test(test_mp_every_chunking), cmocka_unit_test(test_mp_boundary),
    cmocka_unit_test(test_mp_limits),         cmocka_unit_test(test_rate_limiter),
    cmocka_unit_test(test_arena_cap),         cmocka_unit_test(test_filter_dates),
    cmocka_unit_test(test_form_filter),
};
const size_t server_n_parser_tests = IMS_ARRAY_LEN(server_parser_tests);
