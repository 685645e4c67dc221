/* SPDX-License-Identifier: MIT */
/*
 * test_fetch.c: the fetch module. The address policy and the URL check are
 * tested as pure functions over tables; everything that touches the network
 * talks only to the loopback server of http_test_server.c (127.0.0.1), and
 * the default-policy tests check that it saw zero connections. Every test is
 * bounded: short timeouts, small retry backoffs, bounded poll loops.
 */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "http_test_server.h"
#include "imgsearch/fetch.h"

/* ---- address policy --------------------------------------------------------- */

struct addr_case {
    const char *addr;
    int allowed;         /* under the default policy */
    int allowed_private; /* with allow_private */
    const char *why;     /* substring of the reason when refused */
};

static const struct addr_case addr_cases[] = {
    /* IPv4 public */
    {"8.8.8.8", 1, 1, NULL},
    {"1.1.1.1", 1, 1, NULL},
    {"93.184.216.34", 1, 1, NULL},
    {"172.15.255.255", 1, 1, NULL},
    {"172.32.0.1", 1, 1, NULL},
    {"100.63.255.255", 1, 1, NULL},
    {"100.128.0.1", 1, 1, NULL},
    {"169.253.255.255", 1, 1, NULL},
    {"223.255.255.255", 1, 1, NULL},
    {"11.0.0.1", 1, 1, NULL},
    /* IPv4 refused */
    {"127.0.0.1", 0, 1, "loopback"},
    {"127.255.255.254", 0, 1, "loopback"},
    {"10.0.0.1", 0, 1, "10.0.0.1 is a private address"},
    {"10.255.255.255", 0, 1, "private"},
    {"172.16.0.1", 0, 1, "private"},
    {"172.31.255.255", 0, 1, "private"},
    {"192.168.1.1", 0, 1, "private"},
    {"169.254.169.254", 0, 0, "metadata"},
    {"169.254.0.1", 0, 1, "link-local"},
    {"100.64.0.1", 0, 1, "CGNAT"},
    {"100.127.255.255", 0, 1, "CGNAT"},
    {"0.0.0.0", 0, 1, "unspecified"},
    {"0.1.2.3", 0, 1, "unspecified"},
    {"224.0.0.1", 0, 1, "multicast"},
    {"239.255.255.250", 0, 1, "multicast"},
    {"255.255.255.255", 0, 1, "broadcast"},
    {"240.0.0.1", 0, 1, "reserved"},
    {"192.0.2.1", 0, 1, "reserved"},
    {"198.18.0.1", 0, 1, "reserved"},
    {"203.0.113.9", 0, 1, "reserved"},
    /* IPv6 public */
    {"2606:4700:4700::1111", 1, 1, NULL},
    {"2a00:1450:4001:80b::200e", 1, 1, NULL},
    {"2002:808:808::1", 1, 1, NULL}, /* 6to4 of 8.8.8.8 */
    {"64:ff9b::808:808", 1, 1, NULL}, /* NAT64 of 8.8.8.8 */
    {"::ffff:8.8.8.8", 1, 1, NULL},
    /* IPv6 refused */
    {"::1", 0, 1, "loopback"},
    {"::", 0, 1, "unspecified"},
    {"fc00::1", 0, 1, "private"},
    {"fd12:3456:789a::1", 0, 1, "private"},
    {"fe80::1", 0, 1, "link-local"},
    {"febf:ffff::1", 0, 1, "link-local"},
    {"fec0::1", 0, 1, "private"},
    {"ff02::1", 0, 1, "multicast"},
    {"fd00:ec2::254", 0, 0, "metadata"},
    {"2001:db8::1", 0, 1, "reserved"},
    {"2001:0:4136:e378:8000:63bf:3fff:fdd2", 0, 1, "reserved"}, /* Teredo */
    {"100::1", 0, 1, "reserved"},
    {"4000::1", 0, 1, "reserved"},
    /* IPv4 inside IPv6 */
    {"::ffff:127.0.0.1", 0, 1, "IPv4-mapped 127.0.0.1"},
    {"::ffff:10.1.2.3", 0, 1, "private"},
    {"::ffff:169.254.169.254", 0, 0, "metadata"},
    {"::127.0.0.1", 0, 1, "IPv4-compatible 127.0.0.1"},
    {"::ffff:0:c0a8:1", 0, 1, "IPv4-translated 192.168.0.1"},
    {"64:ff9b::7f00:1", 0, 1, "NAT64 127.0.0.1"},
    {"64:ff9b::a9fe:a9fe", 0, 0, "metadata"},
    {"64:ff9b:1::1", 0, 1, "reserved"},
    {"2002:7f00:1::1", 0, 1, "6to4 127.0.0.1"},
    {"2002:a00:1::", 0, 1, "private"},
};

static void test_addr_policy_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(addr_cases) / sizeof(addr_cases[0]); i++) {
        const struct addr_case *c = &addr_cases[i];
        char why[192] = "";
        int got = fetch_addr_allowed_str(c->addr, 0, why, sizeof(why));
        if (got != c->allowed)
            fail_msg("%s: default policy gave %d, want %d (%s)", c->addr, got, c->allowed, why);
        if (!c->allowed) {
            if (!strstr(why, c->addr))
                fail_msg("%s: reason '%s' does not name the address", c->addr, why);
            if (!strstr(why, c->why))
                fail_msg("%s: reason '%s' lacks '%s'", c->addr, why, c->why);
        }
        why[0] = '\0';
        got = fetch_addr_allowed_str(c->addr, 1, why, sizeof(why));
        if (got != c->allowed_private)
            fail_msg("%s: allow_private gave %d, want %d (%s)", c->addr, got,
                     c->allowed_private, why);
    }
}

static void test_addr_policy_bad_input(void **state)
{
    (void)state;
    char why[128] = "";
    assert_int_equal(fetch_addr_allowed_str("not-an-ip", 0, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "not a numeric IP address"));
    assert_int_equal(fetch_addr_allowed_str("localhost", 1, why, sizeof(why)), -1);
    assert_int_equal(fetch_addr_allowed_str("127.1", 0, NULL, 0), -1);
    assert_int_equal(fetch_addr_allowed_str(NULL, 0, why, sizeof(why)), -1);
    assert_int_equal(fetch_addr_allowed(NULL, 1, why, sizeof(why)), 0);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    ss.ss_family = 1; /* AF_UNIX */
    assert_int_equal(fetch_addr_allowed((struct sockaddr *)&ss, 1, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "not IPv4 or IPv6"));
    /* a tiny reason buffer truncates, never overflows */
    char tiny[8];
    memset(tiny, 'x', sizeof(tiny));
    assert_int_equal(fetch_addr_allowed_str("10.0.0.1", 0, tiny, sizeof(tiny)), 0);
    assert_int_equal(tiny[7], '\0');
}

/* ---- URL check ------------------------------------------------------------------ */

struct url_case {
    const char *url;
    enum ims_status st;
    const char *msg; /* substring */
};

static const struct url_case url_cases[] = {
    {"http://example.test/a.jpg", IMS_OK, NULL},
    {"https://example.test:8443/path/x.png?q=1#frag", IMS_OK, NULL},
    {"HTTP://EXAMPLE.TEST/", IMS_OK, NULL},
    {"http://127.0.0.1:8080/", IMS_OK, NULL}, /* policy is for connections */
    {"http://[::1]/", IMS_OK, NULL},
    {"http://user:pw@example.test/", IMS_OK, NULL},
    {"", IMS_ERR_INVALID, "empty URL"},
    {"example.test/a.jpg", IMS_ERR_INVALID, "not a valid URL"},
    {"ftp://example.test/a", IMS_ERR_UNSUPPORTED, "scheme 'ftp' not allowed"},
    {"file:///etc/passwd", IMS_ERR_UNSUPPORTED, "scheme 'file' not allowed"},
    {"gopher://example.test/", IMS_ERR_UNSUPPORTED, "gopher"},
    {"javascript:alert(1)", IMS_ERR_INVALID, "not a valid URL"},
    {"http://", IMS_ERR_INVALID, NULL},
    {"http://exa mple.test/", IMS_ERR_INVALID, "offset 10"},
    {"http://example.test/\n", IMS_ERR_INVALID, "control character"},
    {"http://[::1/", IMS_ERR_INVALID, "not a valid URL"},
    {"http://example.test:99999/", IMS_ERR_INVALID, "not a valid URL"},
};

static void test_url_check_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(url_cases) / sizeof(url_cases[0]); i++) {
        struct ims_error err = {{0}};
        enum ims_status st = fetch_url_check(url_cases[i].url, &err);
        if (st != url_cases[i].st)
            fail_msg("'%s': status %s, want %s (%s)", url_cases[i].url, ims_status_name(st),
                     ims_status_name(url_cases[i].st), err.message);
        if (url_cases[i].msg && !strstr(err.message, url_cases[i].msg))
            fail_msg("'%s': message '%s' lacks '%s'", url_cases[i].url, err.message,
                     url_cases[i].msg);
    }
}

static void test_url_check_length(void **state)
{
    (void)state;
    size_t n = FETCH_URL_MAX_BYTES + 1;
    char *u = malloc(n + 1);
    assert_non_null(u);
    memcpy(u, "http://example.test/", 20);
    memset(u + 20, 'a', n - 20);
    u[n] = '\0';
    struct ims_error err = {{0}};
    assert_int_equal(fetch_url_check(u, &err), IMS_ERR_TOO_LARGE);
    assert_non_null(strstr(err.message, "8192"));
    u[FETCH_URL_MAX_BYTES] = '\0'; /* exactly the limit */
    assert_int_equal(fetch_url_check(u, &err), IMS_OK);
    assert_int_equal(fetch_url_check(NULL, &err), IMS_ERR_INVALID);
    free(u);
}

/* ---- multi engine helpers ----------------------------------------------------------- */

struct outcome {
    int calls;
    enum ims_status status;
    long http_status;
    char reason[320];
    char final_url[256];
    char content_type[64];
    char *body; /* stolen */
    size_t body_len;
    int n_retries;
};

static void on_done(void *user, struct fetch_result *r)
{
    struct outcome *o = user;
    o->calls++;
    o->status = r->status;
    o->http_status = r->http_status;
    o->n_retries = r->n_retries;
    snprintf(o->reason, sizeof(o->reason), "%s", r->reason);
    snprintf(o->final_url, sizeof(o->final_url), "%s", r->final_url ? r->final_url : "");
    snprintf(o->content_type, sizeof(o->content_type), "%s",
             r->content_type ? r->content_type : "");
    if (r->status == IMS_OK) {
        o->body = r->body; /* steal */
        o->body_len = r->body_len;
        r->body = NULL;
    }
}

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

/* Fetches one URL to completion (bounded by 100 polls of 100 ms). */
static void fetch_one(const struct fetch_options *o, const char *url, struct outcome *out)
{
    struct fetcher *f = NULL;
    struct ims_error err = {{0}};
    memset(out, 0, sizeof(*out));
    assert_int_equal(fetcher_new(o, &f, &err), IMS_OK);
    assert_int_equal(fetcher_add(f, url, out, &err), IMS_OK);
    assert_int_equal(fetcher_pending(f), 1);
    for (int i = 0; i < 100 && fetcher_pending(f) > 0; i++)
        assert_int_equal(fetcher_poll(f, 100, on_done, NULL, &err), IMS_OK);
    assert_int_equal(fetcher_pending(f), 0);
    assert_int_equal(out->calls, 1);
    fetcher_free(f);
}

static char *make_body(size_t n)
{
    char *b = malloc(n);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (char)('a' + (i * 7 + i / 13) % 26);
    return b;
}

/* ---- multi engine tests ----------------------------------------------------------- */

static void test_get_200(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    char *body = make_body(3000);
    hts_route(s, &(struct hts_route){.path = "/img.jpg", .body = body, .body_len = 3000,
                                     .content_type = "image/jpeg"});
    struct fetch_options o = loopback_opts();
    struct outcome out;
    char url[128];
    fetch_one(&o, hts_url(s, "/img.jpg?x=1", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_OK);
    assert_int_equal(out.http_status, 200);
    assert_string_equal(out.reason, "");
    assert_string_equal(out.content_type, "image/jpeg");
    assert_string_equal(out.final_url, url);
    assert_int_equal(out.body_len, 3000);
    assert_memory_equal(out.body, body, 3000);
    assert_int_equal(out.body[3000], '\0');
    ims_free(out.body);

    /* an empty body is a success with a non-NULL empty string */
    hts_route(s, &(struct hts_route){.path = "/empty"});
    fetch_one(&o, hts_url(s, "/empty", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_OK);
    assert_int_equal(out.body_len, 0);
    assert_non_null(out.body);
    ims_free(out.body);
    assert_int_equal(hts_connections(s) >= 1, 1);
    free(body);
    hts_stop(s);
}

static void test_404_and_500_reasons(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    hts_route(s, &(struct hts_route){.path = "/boom", .status = 503, .body = "x", .body_len = 1});
    struct fetch_options o = loopback_opts();
    struct outcome out;
    char url[128];
    fetch_one(&o, hts_url(s, "/missing", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_ERR_NOT_FOUND);
    assert_string_equal(out.reason, "HTTP 404");
    assert_int_equal(out.http_status, 404);
    assert_null(out.body);

    o.max_retries = 2;
    fetch_one(&o, hts_url(s, "/boom", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_ERR_NETWORK);
    assert_string_equal(out.reason, "HTTP 503");
    assert_int_equal(out.n_retries, 2);
    assert_int_equal(hts_hits(s, "/boom"), 3);
    /* 404 is not retried */
    assert_int_equal(hts_hits(s, "/missing"), 1);
    hts_stop(s);
}

static void test_retry_then_success(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    hts_route(s, &(struct hts_route){.path = "/flaky", .body = "fine", .body_len = 4,
                                     .fail_times = 2, .fail_status = 500});
    hts_route(s, &(struct hts_route){.path = "/limited", .body = "ok", .body_len = 2,
                                     .fail_times = 1, .fail_status = 429});
    struct fetch_options o = loopback_opts();
    o.max_retries = 2;
    struct outcome out;
    char url[128];
    fetch_one(&o, hts_url(s, "/flaky", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_OK);
    assert_int_equal(out.n_retries, 2);
    assert_int_equal(out.body_len, 4);
    assert_memory_equal(out.body, "fine", 4);
    ims_free(out.body);
    assert_int_equal(hts_hits(s, "/flaky"), 3);

    fetch_one(&o, hts_url(s, "/limited", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_OK);
    assert_int_equal(out.n_retries, 1);
    ims_free(out.body);
    hts_stop(s);
}

static void test_timeout(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    hts_route(s, &(struct hts_route){.path = "/sleepy", .delay_ms = 3000, .body = "late",
                                     .body_len = 4});
    struct fetch_options o = loopback_opts();
    o.total_timeout_ms = 300;
    struct outcome out;
    char url[128];
    fetch_one(&o, hts_url(s, "/sleepy", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_ERR_TIMEOUT);
    assert_string_equal(out.reason, "timed out after 0.3 s");
    hts_stop(s);
}

static void test_stall(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    char *body = make_body(4000);
    hts_route(s, &(struct hts_route){.path = "/drip", .body = body, .body_len = 4000,
                                     .drip_bytes = 10, .drip_interval_ms = 200});
    struct fetch_options o = loopback_opts();
    o.low_speed_bytes = 1000;
    o.low_speed_time_s = 1;
    struct outcome out;
    char url[128];
    fetch_one(&o, hts_url(s, "/drip", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_ERR_TIMEOUT);
    assert_string_equal(out.reason, "stalled: below 1000 B/s for 1 s");
    free(body);
    hts_stop(s);
}

static void test_too_large(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    char *body = make_body(50000);
    hts_route(s, &(struct hts_route){.path = "/big-cl", .body = body, .body_len = 50000});
    hts_route(s, &(struct hts_route){.path = "/big-stream", .body = body, .body_len = 50000,
                                     .content_length = -1});
    hts_route(s, &(struct hts_route){.path = "/fits", .body = body, .body_len = 1000,
                                     .content_length = -1});
    struct fetch_options o = loopback_opts();
    o.max_bytes = 1000;
    struct outcome out;
    char url[128];
    fetch_one(&o, hts_url(s, "/big-cl", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_ERR_TOO_LARGE);
    assert_string_equal(out.reason, "too large: more than 1000 bytes");
    fetch_one(&o, hts_url(s, "/big-stream", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_ERR_TOO_LARGE);
    assert_string_equal(out.reason, "too large: more than 1000 bytes");
    /* exactly the limit, without Content-Length, passes */
    fetch_one(&o, hts_url(s, "/fits", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_OK);
    assert_int_equal(out.body_len, 1000);
    ims_free(out.body);
    free(body);
    hts_stop(s);
}

static void test_redirects(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    char url[128], target[128];
    hts_route(s, &(struct hts_route){.path = "/final", .body = "here", .body_len = 4});
    hts_route(s, &(struct hts_route){.path = "/hop2", .redirect = "/final", .status = 301});
    hts_route(s, &(struct hts_route){.path = "/hop1", .redirect = hts_url(s, "/hop2", target,
                                                                          sizeof(target))});
    hts_route(s, &(struct hts_route){.path = "/loop", .redirect = "/loop"});
    hts_route(s, &(struct hts_route){.path = "/to-file", .redirect = "file:///etc/passwd"});
    hts_route(s, &(struct hts_route){.path = "/to-ftp", .redirect = "ftp://127.0.0.1/x"});
    struct fetch_options o = loopback_opts();
    struct outcome out;

    fetch_one(&o, hts_url(s, "/hop1", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_OK);
    assert_memory_equal(out.body, "here", 4);
    assert_string_equal(out.final_url, hts_url(s, "/final", url, sizeof(url)));
    ims_free(out.body);

    fetch_one(&o, hts_url(s, "/loop", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_ERR_NETWORK);
    assert_string_equal(out.reason, "too many redirects (5)");
    assert_int_equal(hts_hits(s, "/loop"), 6);

    o.max_redirects = 2;
    fetch_one(&o, hts_url(s, "/loop", url, sizeof(url)), &out);
    assert_string_equal(out.reason, "too many redirects (2)");

    fetch_one(&o, hts_url(s, "/to-file", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_ERR_REFUSED);
    assert_string_equal(out.reason, "redirect to file:// refused");

    long before = hts_connections(s);
    fetch_one(&o, hts_url(s, "/to-ftp", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_ERR_REFUSED);
    assert_string_equal(out.reason, "redirect to ftp:// refused");
    assert_int_equal(hts_connections(s), before + 1); /* no FTP connection was tried */
    hts_stop(s);
}

static void test_connection_refused(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", hts_closed_port());
    struct fetch_options o = loopback_opts();
    o.max_retries = 1;
    struct outcome out;
    fetch_one(&o, url, &out);
    assert_int_equal(out.status, IMS_ERR_NETWORK);
    assert_string_equal(out.reason, "connection refused");
    assert_int_equal(out.n_retries, 1);
}

/* The default policy refuses loopback before connecting: zero connections. */
static void test_default_policy_refuses_loopback(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    hts_route(s, &(struct hts_route){.path = "/", .body = "secret", .body_len = 6});
    struct fetch_options o;
    fetch_options_default(&o);
    o.retry_base_ms = 10;
    struct outcome out;
    char url[128];

    fetch_one(&o, hts_url(s, "/", url, sizeof(url)), &out);
    assert_int_equal(out.status, IMS_ERR_REFUSED);
    assert_string_equal(out.reason, "refused: 127.0.0.1 is a loopback address");
    assert_int_equal(out.n_retries, 0);

    snprintf(url, sizeof(url), "http://localhost:%d/", hts_port(s));
    fetch_one(&o, url, &out);
    assert_int_equal(out.status, IMS_ERR_REFUSED);
    assert_non_null(strstr(out.reason, "is a loopback address"));

    snprintf(url, sizeof(url), "http://[::ffff:127.0.0.1]:%d/", hts_port(s));
    fetch_one(&o, url, &out);
    assert_int_equal(out.status, IMS_ERR_REFUSED);
    assert_non_null(strstr(out.reason, "loopback"));

    snprintf(url, sizeof(url), "http://2130706433:%d/", hts_port(s)); /* 127.0.0.1 as an int */
    fetch_one(&o, url, &out);
    assert_int_equal(out.status, IMS_ERR_REFUSED);

    assert_int_equal(hts_connections(s), 0);
    assert_int_equal(hts_requests(s), 0);
    hts_stop(s);
}

#define N_MANY 200

static void on_done_many(void *user, struct fetch_result *r)
{
    int *ok = user;
    if (r->status == IMS_OK && r->body_len == 5 && !memcmp(r->body, "hello", 5))
        (*ok)++;
}

static void test_many_concurrent_reuse(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    hts_route(s, &(struct hts_route){.path = "/one", .body = "hello", .body_len = 5});
    struct fetch_options o = loopback_opts();
    o.max_in_flight = 32;
    o.max_queued = N_MANY;
    struct fetcher *f = NULL;
    struct ims_error err = {{0}};
    assert_int_equal(fetcher_new(&o, &f, &err), IMS_OK);
    int ok = 0;
    char url[128];
    for (int i = 0; i < N_MANY; i++) {
        char path[32];
        snprintf(path, sizeof(path), "/one?i=%d", i);
        assert_int_equal(fetcher_add(f, hts_url(s, path, url, sizeof(url)), &ok, &err), IMS_OK);
    }
    assert_int_equal(fetcher_pending(f), N_MANY);
    for (int i = 0; i < 1000 && fetcher_pending(f) > 0; i++)
        assert_int_equal(fetcher_poll(f, 100, on_done_many, NULL, &err), IMS_OK);
    assert_int_equal(ok, N_MANY);
    assert_int_equal(hts_requests(s), N_MANY);
    long conns = hts_connections(s);
    assert_true(conns >= 1);
    assert_true(conns < N_MANY);
    assert_int_equal(fetcher_connections(f), conns);
    fetcher_free(f);
    hts_stop(s);
}

static void count_done(void *user, struct fetch_result *r)
{
    (void)r;
    (*(int *)user)++;
}

static void test_backpressure(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    hts_route(s, &(struct hts_route){.path = "/q", .body = "q", .body_len = 1});
    struct fetch_options o = loopback_opts();
    o.max_in_flight = 2;
    o.max_queued = 3;
    struct fetcher *f = NULL;
    struct ims_error err = {{0}};
    assert_int_equal(fetcher_new(&o, &f, &err), IMS_OK);
    int done = 0;
    char url[128];
    hts_url(s, "/q", url, sizeof(url));
    for (int i = 0; i < 5; i++)
        assert_int_equal(fetcher_add(f, url, &done, &err), IMS_OK);
    assert_int_equal(fetcher_add(f, url, &done, &err), IMS_ERR_BUSY);
    assert_non_null(strstr(err.message, "5 downloads pending"));
    assert_int_equal(fetcher_pending(f), 5);
    /* a bad URL is refused without a callback and without taking a slot */
    assert_int_equal(fetcher_add(f, "ftp://x/", &done, &err), IMS_ERR_BUSY);

    /* drain with the back-pressure loop: add 20 more as room appears */
    int added = 5;
    for (int i = 0; i < 2000 && (added < 25 || fetcher_pending(f) > 0); i++) {
        while (added < 25 && fetcher_add(f, url, &done, &err) == IMS_OK)
            added++;
        assert_true(fetcher_pending(f) <= 5);
        int n = 0;
        assert_int_equal(fetcher_poll(f, 100, count_done, &n, &err), IMS_OK);
    }
    assert_int_equal(added, 25);
    assert_int_equal(done, 25);
    assert_int_equal(fetcher_pending(f), 0);
    assert_int_equal(fetcher_add(f, "ftp://x/", &done, &err), IMS_ERR_UNSUPPORTED);
    assert_int_equal(fetcher_pending(f), 0);
    fetcher_free(f);
    assert_int_equal(done, 25);
    hts_stop(s);
}

/* fetcher_free with transfers in flight and queued: no callback, no leak. */
static void test_free_with_pending(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    hts_route(s, &(struct hts_route){.path = "/slow", .delay_ms = 2000, .body = "z",
                                     .body_len = 1});
    struct fetch_options o = loopback_opts();
    o.max_in_flight = 2;
    struct fetcher *f = NULL;
    struct ims_error err = {{0}};
    assert_int_equal(fetcher_new(&o, &f, &err), IMS_OK);
    int done = 0;
    char url[128];
    for (int i = 0; i < 4; i++)
        assert_int_equal(fetcher_add(f, hts_url(s, "/slow", url, sizeof(url)), &done, &err),
                         IMS_OK);
    assert_int_equal(fetcher_poll(f, 50, count_done, NULL, &err), IMS_OK);
    assert_int_equal(done, 0);
    assert_int_equal(fetcher_pending(f), 4);
    fetcher_free(f);
    assert_int_equal(done, 0);
    hts_stop(s);
}

/* ---- fetch_to_file ---------------------------------------------------------------------- */

static char tmpdir[64];

static int setup_tmp(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/ims_fetch_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static void assert_file_equals(const char *path, const char *want, size_t n)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    char *got = malloc(n + 1);
    assert_non_null(got);
    size_t r = fread(got, 1, n + 1, fp);
    fclose(fp);
    assert_int_equal(r, n);
    assert_memory_equal(got, want, n);
    free(got);
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

struct prog {
    int calls;
    uint64_t last_have, last_total;
};

static int on_progress(void *ctx, uint64_t have, uint64_t total)
{
    struct prog *p = ctx;
    p->calls++;
    p->last_have = have;
    p->last_total = total;
    return 0;
}

static enum ims_status reject_all(void *ctx, const char *part, uint64_t size,
                                  struct ims_error *err)
{
    (void)ctx;
    (void)part;
    return ims_error_set(err, IMS_ERR_CORRUPT, "rejected %llu bytes", (unsigned long long)size);
}

#define FILE_BYTES 200000

static void test_file_download_and_resume(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    char *body = make_body(FILE_BYTES);
    hts_route(s, &(struct hts_route){.path = "/m.bin", .body = body, .body_len = FILE_BYTES});
    char url[128], path[128], part[140];
    hts_url(s, "/m.bin", url, sizeof(url));
    snprintf(path, sizeof(path), "%s/m.bin", tmpdir);
    snprintf(part, sizeof(part), "%s.part", path);
    struct fetch_options o = loopback_opts();
    struct prog pg = {0};
    struct fetch_file_request req = {.url = url, .path = path, .max_bytes = 1 << 20,
                                     .resume = 1, .progress = on_progress, .progress_ctx = &pg};
    struct fetch_file_info info = {0};
    struct ims_error err = {{0}};

    /* fresh */
    assert_int_equal(fetch_to_file(&req, &o, &info, &err), IMS_OK);
    assert_file_equals(path, body, FILE_BYTES);
    assert_false(exists(part));
    assert_int_equal(info.size, FILE_BYTES);
    assert_int_equal(info.resumed_from, 0);
    assert_int_equal(info.n_attempts, 1);
    assert_true(pg.calls >= 1);
    assert_int_equal(pg.last_have, FILE_BYTES);
    assert_int_equal(pg.last_total, FILE_BYTES);
    assert_int_equal(hts_range_requests(s), 0);
    unlink(path);

    /* an earlier run left 70000 bytes: continued with a Range request */
    write_file(part, body, 70000);
    memset(&info, 0, sizeof(info));
    assert_int_equal(fetch_to_file(&req, &o, &info, &err), IMS_OK);
    assert_file_equals(path, body, FILE_BYTES);
    assert_int_equal(info.resumed_from, 70000);
    assert_int_equal(hts_range_requests(s), 1);
    assert_int_equal(hts_last_range_start(s), 70000);
    unlink(path);

    /* resume = 0 ignores the part */
    write_file(part, "garbage", 7);
    req.resume = 0;
    assert_int_equal(fetch_to_file(&req, &o, &info, &err), IMS_OK);
    assert_file_equals(path, body, FILE_BYTES);
    assert_int_equal(hts_range_requests(s), 1);
    unlink(path);
    free(body);
    hts_stop(s);
}

static void test_file_cut_then_retry_resumes(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    char *body = make_body(FILE_BYTES);
    hts_route(s, &(struct hts_route){.path = "/cut.bin", .body = body, .body_len = FILE_BYTES,
                                     .close_after = 50000, .close_times = 1});
    char url[128], path[128];
    hts_url(s, "/cut.bin", url, sizeof(url));
    snprintf(path, sizeof(path), "%s/cut.bin", tmpdir);
    struct fetch_options o = loopback_opts();
    struct fetch_file_request req = {.url = url, .path = path, .max_bytes = 1 << 20};
    struct fetch_file_info info = {0};
    struct ims_error err = {{0}};

    /* without retries: fails, the part keeps what arrived */
    assert_int_equal(fetch_to_file(&req, &o, &info, &err), IMS_ERR_NETWORK);
    assert_non_null(strstr(err.message, "after 50000 of 200000 bytes"));
    char part[140];
    snprintf(part, sizeof(part), "%s.part", path);
    assert_true(exists(part));
    assert_false(exists(path));

    /* the next call resumes and completes */
    req.resume = 1;
    assert_int_equal(fetch_to_file(&req, &o, &info, &err), IMS_OK);
    assert_file_equals(path, body, FILE_BYTES);
    assert_int_equal(info.resumed_from, 50000);
    assert_int_equal(hts_last_range_start(s), 50000);
    unlink(path);

    /* with a retry budget one call survives the cut */
    hts_route(s, &(struct hts_route){.path = "/cut2.bin", .body = body, .body_len = FILE_BYTES,
                                     .close_after = 30000, .close_times = 1});
    hts_url(s, "/cut2.bin", url, sizeof(url));
    o.max_retries = 1;
    req.resume = 0;
    memset(&info, 0, sizeof(info));
    assert_int_equal(fetch_to_file(&req, &o, &info, &err), IMS_OK);
    assert_file_equals(path, body, FILE_BYTES);
    assert_int_equal(info.n_attempts, 2);
    assert_int_equal(info.resumed_from, 30000);
    unlink(path);
    free(body);
    hts_stop(s);
}

static void test_file_no_range_restarts(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    char *body = make_body(FILE_BYTES);
    hts_route(s, &(struct hts_route){.path = "/nr.bin", .body = body, .body_len = FILE_BYTES,
                                     .no_range = 1});
    char url[128], path[128], part[140];
    hts_url(s, "/nr.bin", url, sizeof(url));
    snprintf(path, sizeof(path), "%s/nr.bin", tmpdir);
    snprintf(part, sizeof(part), "%s.part", path);
    /* a part whose bytes are wrong: must not survive a 200 restart */
    char *junk = malloc(90000);
    assert_non_null(junk);
    memset(junk, '#', 90000);
    write_file(part, junk, 90000);
    free(junk);
    struct fetch_options o = loopback_opts();
    struct fetch_file_request req = {.url = url, .path = path, .max_bytes = 1 << 20,
                                     .resume = 1};
    struct fetch_file_info info = {0};
    struct ims_error err = {{0}};
    assert_int_equal(fetch_to_file(&req, &o, &info, &err), IMS_OK);
    assert_file_equals(path, body, FILE_BYTES);
    assert_int_equal(info.resumed_from, 0);
    assert_int_equal(info.http_status, 200);
    unlink(path);

    /* a part longer than the file: 416, then a clean restart */
    hts_route(s, &(struct hts_route){.path = "/short.bin", .body = "abc", .body_len = 3});
    hts_url(s, "/short.bin", url, sizeof(url));
    write_file(part, "0123456789", 10);
    memset(&info, 0, sizeof(info));
    assert_int_equal(fetch_to_file(&req, &o, &info, &err), IMS_OK);
    assert_file_equals(path, "abc", 3);
    assert_int_equal(info.n_attempts, 2);
    unlink(path);
    free(body);
    hts_stop(s);
}

static void test_file_limits_and_verify(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    char *body = make_body(FILE_BYTES);
    hts_route(s, &(struct hts_route){.path = "/f.bin", .body = body, .body_len = FILE_BYTES});
    hts_route(s, &(struct hts_route){.path = "/nolen.bin", .body = body,
                                     .body_len = FILE_BYTES, .content_length = -1});
    char url[128], path[128], part[140];
    snprintf(path, sizeof(path), "%s/f.bin", tmpdir);
    snprintf(part, sizeof(part), "%s.part", path);
    struct fetch_options o = loopback_opts();
    struct fetch_file_request req = {.url = hts_url(s, "/f.bin", url, sizeof(url)),
                                     .path = path, .max_bytes = 100000};
    struct ims_error err = {{0}};

    assert_int_equal(fetch_to_file(&req, &o, NULL, &err), IMS_ERR_TOO_LARGE);
    assert_string_equal(err.message, "too large: more than 100000 bytes");
    assert_false(exists(path));
    hts_url(s, "/nolen.bin", url, sizeof(url));
    assert_int_equal(fetch_to_file(&req, &o, NULL, &err), IMS_ERR_TOO_LARGE);
    assert_false(exists(path));

    /* the verify hook keeps a bad file out of place */
    req.max_bytes = 1 << 20;
    req.verify = reject_all;
    assert_int_equal(fetch_to_file(&req, &o, NULL, &err), IMS_ERR_CORRUPT);
    assert_string_equal(err.message, "rejected 200000 bytes");
    assert_false(exists(path));
    assert_false(exists(part));

    /* 404 */
    req.verify = NULL;
    hts_url(s, "/none.bin", url, sizeof(url));
    assert_int_equal(fetch_to_file(&req, &o, NULL, &err), IMS_ERR_NOT_FOUND);
    assert_string_equal(err.message, "HTTP 404");
    assert_false(exists(path));

    /* bad URL, before any connection */
    long conns = hts_connections(s);
    req.url = "file:///etc/passwd";
    assert_int_equal(fetch_to_file(&req, &o, NULL, &err), IMS_ERR_UNSUPPORTED);
    assert_int_equal(hts_connections(s), conns);
    free(body);
    hts_stop(s);
}

static void test_file_default_policy(void **state)
{
    (void)state;
    struct hts *s = hts_start();
    hts_route(s, &(struct hts_route){.path = "/m", .body = "m", .body_len = 1});
    char url[128], path[128];
    snprintf(path, sizeof(path), "%s/p.bin", tmpdir);
    struct fetch_options o;
    fetch_options_default(&o);
    o.retry_base_ms = 10;
    struct fetch_file_request req = {.url = hts_url(s, "/m", url, sizeof(url)), .path = path,
                                     .max_bytes = 100};
    struct ims_error err = {{0}};
    assert_int_equal(fetch_to_file(&req, &o, NULL, &err), IMS_ERR_REFUSED);
    assert_string_equal(err.message, "refused: 127.0.0.1 is a loopback address");
    assert_false(exists(path));
    assert_int_equal(hts_connections(s), 0);
    hts_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_policy_table),
        cmocka_unit_test(test_addr_policy_bad_input),
        cmocka_unit_test(test_url_check_table),
        cmocka_unit_test(test_url_check_length),
        cmocka_unit_test(test_get_200),
        cmocka_unit_test(test_404_and_500_reasons),
        cmocka_unit_test(test_retry_then_success),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_stall),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_redirects),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_default_policy_refuses_loopback),
        cmocka_unit_test(test_many_concurrent_reuse),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_free_with_pending),
        cmocka_unit_test_setup_teardown(test_file_download_and_resume, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_file_cut_then_retry_resumes, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_file_no_range_restarts, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_file_limits_and_verify, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_file_default_policy, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
