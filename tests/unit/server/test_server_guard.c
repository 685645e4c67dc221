/* SPDX-License-Identifier: MIT */
/*
 * test_server_guard.c: the hardening pieces without sockets (issue 8): Host
 * and Origin rules, client keys (IPv6 per /64), Forwarded/X-Forwarded-For
 * behind trusted proxies, the rate limiter under a flood of new addresses,
 * the connection table's deadlines with an injected clock, and the strict
 * scalar and parameter grammars.
 */
#include "server_int.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

static void guard_with(struct server_guard *g, const char *host, const char *const *hosts,
                       size_t n_hosts, const char *const *origins, size_t n_origins,
                       const char *const *proxies, size_t n_proxies)
{
    struct server_options o;
    server_options_init(&o);
    o.host = host;
    o.public_hosts = hosts;
    o.n_public_hosts = n_hosts;
    o.cors_origins = origins;
    o.n_cors_origins = n_origins;
    o.trusted_proxies = proxies;
    o.n_trusted_proxies = n_proxies;
    struct ims_error err = {{0}};
    assert_int_equal(server__guard_init(g, &o, &err), IMS_OK);
}

static void test_guard_host(void **state)
{
    struct server_guard g;
    static const char *const hosts[] = {"Photos.Example.org", "10.0.0.7", "[2001:db8::7]",
                                        "proxy.example:8443"};
    guard_with(&g, "192.168.1.5", hosts, 4, NULL, 0, NULL, 0);
    static const struct {
        const char *host;
        bool ok;
    } cases[] = {
        {NULL, true},
        {"localhost", true},
        {"localhost:8080", true},
        {"localhost.", true},
        {"127.0.0.1", true},
        {"127.1.2.3:80", true},
        {"[::1]", true},
        {"[::1]:8080", true},
        {"192.168.1.5:8080", true}, /* the listen address */
        {"photos.example.org", true},
        {"PHOTOS.EXAMPLE.ORG:443", true},
        {"10.0.0.7", true},
        {"[2001:db8::7]:80", true},
        {"proxy.example:8443", true},
        {"proxy.example:80", false}, /* listed with a port: that port only */
        {"evil.example", false},
        {"localhost.evil.example", false},
        {"photos.example.org.evil.example", false},
        {"192.168.1.6", false},
        {"[::2]", false},
        {"::1", false},            /* an IPv6 literal needs brackets */
        {"[localhost]", false},
        {"127.0.0.1:", false},
        {"127.0.0.1:123456", false},
        {"127.0.0.1:8a", false},
        {"", false},
        {"user@localhost", false},
        {"local host", false},
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(cases); i++) {
        bool ok = server__guard_host_ok(&g, cases[i].host);
        if (ok != cases[i].ok)
            fail_msg("Host \"%s\": expected %d", cases[i].host ? cases[i].host : "(none)",
                     cases[i].ok);
    }
    server__guard_fini(&g);
    /* listening on a wildcard: any IP literal, but still no foreign name */
    guard_with(&g, "0.0.0.0", NULL, 0, NULL, 0, NULL, 0);
    assert_true(server__guard_host_ok(&g, "192.168.1.77:8080"));
    assert_true(server__guard_host_ok(&g, "[fd00::5]"));
    assert_false(server__guard_host_ok(&g, "evil.example"));
    server__guard_fini(&g);
    /* malformed --public-host values */
    struct server_options o;
    server_options_init(&o);
    static const char *const bad[] = {"a b"};
    o.public_hosts = bad;
    o.n_public_hosts = 1;
    struct ims_error err = {{0}};
    assert_int_equal(server__guard_init(&g, &o, &err), IMS_ERR_INVALID);
}

static void test_guard_origin(void **state)
{
    struct server_guard g;
    static const char *const origins[] = {"https://App.Example.net/"};
    guard_with(&g, "127.0.0.1", NULL, 0, origins, 1, NULL, 0);
    const char *host = "127.0.0.1:8080";
    assert_true(server__guard_origin_ok(&g, host, NULL, NULL));           /* curl, scripts */
    assert_true(server__guard_origin_ok(&g, host, "http://127.0.0.1:8080", NULL));
    assert_true(server__guard_origin_ok(&g, host, "https://127.0.0.1:8080", "same-origin"));
    assert_true(server__guard_origin_ok(&g, host, NULL, "none"));
    assert_true(server__guard_origin_ok(&g, host, NULL, "same-origin"));
    assert_true(server__guard_origin_ok(&g, host, "https://app.example.net", "cross-site"));
    assert_false(server__guard_origin_ok(&g, host, "http://127.0.0.1:9999", NULL));
    assert_false(server__guard_origin_ok(&g, host, "http://evil.example", NULL));
    assert_false(server__guard_origin_ok(&g, host, "null", NULL));
    assert_false(server__guard_origin_ok(&g, host, "ftp://127.0.0.1:8080", NULL));
    assert_false(server__guard_origin_ok(&g, host, "http://127.0.0.1:8080.evil.example", NULL));
    assert_false(server__guard_origin_ok(&g, host, NULL, "cross-site"));
    assert_false(server__guard_origin_ok(&g, host, NULL, "same-site"));
    assert_false(server__guard_origin_ok(&g, NULL, "http://127.0.0.1:8080", NULL));
    assert_true(server__guard_cors_ok(&g, "https://app.example.net"));
    assert_false(server__guard_cors_ok(&g, "https://app.example.net.evil"));
    assert_false(server__guard_cors_ok(&g, "http://app.example.net"));
    server__guard_fini(&g);
    /* behind a proxy that rewrites Host: a page under a --public-host name */
    static const char *const hosts[] = {"photos.example.org"};
    guard_with(&g, "127.0.0.1", hosts, 1, NULL, 0, NULL, 0);
    assert_true(server__guard_origin_ok(&g, host, "https://photos.example.org", "same-origin"));
    assert_false(server__guard_origin_ok(&g, host, "https://photos.example.org.evil", NULL));
    assert_false(server__guard_origin_ok(&g, host, "http://localhost:3000", NULL));
    server__guard_fini(&g);
    struct server_options o;
    server_options_init(&o);
    struct ims_error err = {{0}};
    static const char *const bad[][1] = {{"app.example.net"}, {"https://a/b"}, {"https://"},
                                         {"https://a b"}};
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad); i++) {
        o.cors_origins = bad[i];
        o.n_cors_origins = 1;
        assert_int_equal(server__guard_init(&g, &o, &err), IMS_ERR_INVALID);
    }
}

static void key_of(const char *ip, char *out, size_t cap)
{
    struct server_addr a;
    assert_true(server__addr_parse(ip, strlen(ip), &a));
    server__addr_key(&a, out, cap);
}

static void test_client_keys(void **state)
{
    char k1[64], k2[64];
    key_of("203.0.113.5", k1, sizeof(k1));
    assert_string_equal(k1, "203.0.113.5");
    key_of("::ffff:203.0.113.5", k2, sizeof(k2)); /* IPv4-mapped = the IPv4 client */
    assert_string_equal(k2, "203.0.113.5");
    key_of("2001:db8:1:2::1", k1, sizeof(k1));
    key_of("2001:db8:1:2:ffff:ffff:ffff:ffff", k2, sizeof(k2));
    assert_string_equal(k1, k2); /* one /64, one client */
    assert_string_equal(k1, "2001:db8:1:2::/64");
    key_of("2001:db8:1:3::1", k2, sizeof(k2));
    assert_string_not_equal(k1, k2);

    struct server_cidr c;
    struct server_addr a;
    struct ims_error err = {{0}};
    assert_int_equal(server__cidr_parse("10.0.0.0/8", &c, &err), IMS_OK);
    assert_true(server__addr_parse("10.200.1.1", 10, &a));
    assert_true(server__cidr_match(&c, &a));
    assert_true(server__addr_parse("11.0.0.1", 8, &a));
    assert_false(server__cidr_match(&c, &a));
    assert_int_equal(server__cidr_parse("fd00::/7", &c, &err), IMS_OK);
    assert_true(server__addr_parse("fdff::1", 7, &a));
    assert_true(server__cidr_match(&c, &a));
    assert_int_equal(server__cidr_parse("192.168.0.1", &c, &err), IMS_OK);
    assert_int_equal(c.prefix, 32);
    static const char *const bad[] = {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/08", "::/129",
                                      "host.example", "10.0.0.0/8/8", ""};
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad); i++)
        assert_int_equal(server__cidr_parse(bad[i], &c, &err), IMS_ERR_INVALID);
}

static void test_forwarded(void **state)
{
    struct server_guard g;
    static const char *const proxies[] = {"10.0.0.0/8", "2001:db8:ffff::/48"};
    guard_with(&g, "127.0.0.1", NULL, 0, NULL, 0, proxies, 2);
    static const struct {
        const char *fwd, *xff, *want; /* want NULL: no client named */
    } cases[] = {
        {NULL, "203.0.113.5", "203.0.113.5"},
        {NULL, "198.51.100.1, 203.0.113.5", "203.0.113.5"},   /* rightmost */
        {NULL, "203.0.113.5, 10.0.0.2, 10.1.1.1", "203.0.113.5"}, /* skip our proxies */
        {NULL, "203.0.113.5:4711", "203.0.113.5"},
        {NULL, "[2001:db8:1:2::1]:80", "2001:db8:1:2::/64"},
        {NULL, "10.0.0.2", "10.0.0.2"},                      /* all trusted: the leftmost */
        {NULL, "garbage", NULL},
        {NULL, "", NULL},
        {NULL, "198.51.100.1, unknown", NULL},               /* stop at what we cannot read */
        {"for=203.0.113.5", NULL, "203.0.113.5"},
        {"for=198.51.100.1, for=203.0.113.5;proto=https", NULL, "203.0.113.5"},
        {"For=\"[2001:db8:1:2::9]:4711\";by=10.0.0.1", NULL, "2001:db8:1:2::/64"},
        {"for=203.0.113.5, for=\"[2001:db8:ffff::1]\"", NULL, "203.0.113.5"},
        {"proto=https;for=203.0.113.9", "198.51.100.7", "203.0.113.9"}, /* Forwarded wins */
        {"for=_hidden", NULL, NULL},
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(cases); i++) {
        struct server_addr a;
        bool ok = server__guard_forwarded_client(&g, cases[i].fwd, cases[i].xff, &a);
        if (!cases[i].want) {
            if (ok)
                fail_msg("case %zu: expected no client", i);
            continue;
        }
        if (!ok)
            fail_msg("case %zu: no client, expected %s", i, cases[i].want);
        char k[64];
        server__addr_key(&a, k, sizeof(k));
        if (strcmp(k, cases[i].want) != 0)
            fail_msg("case %zu: %s, expected %s", i, k, cases[i].want);
    }
    server__guard_fini(&g);
}

/* A flood of new client keys must not evict (and so refill) the bucket of a
 * client that is being limited. */
static void test_rl_flood(void **state)
{
    struct server_rl rl;
    int retry = 0;
    assert_int_equal(server__rl_init(&rl, 1.0, 5.0), IMS_OK);
    for (int i = 0; i < 4; i++)
        assert_true(server__rl_take(&rl, "victim", 0.0, &retry));
    char key[32];
    for (int i = 0; i < 20 * SERVER_RL_SLOTS; i++) {
        snprintf(key, sizeof(key), "flood-%d", i);
        server__rl_take(&rl, key, 0.001, &retry);
    }
    /* one token left, not a fresh bucket of five */
    assert_true(server__rl_take(&rl, "victim", 0.002, &retry));
    assert_false(server__rl_take(&rl, "victim", 0.002, &retry));
    /* the flood shared one bucket once the table was full, and is limited */
    assert_true(atomic_load(&rl.n_overflow) > 0);
    assert_false(server__rl_take(&rl, "flood-new", 0.003, &retry));
    /* refilled clients are forgotten: the table still takes new clients
     * once the flood's buckets have refilled */
    assert_true(server__rl_take(&rl, "late", 100.0, &retry));
    unsigned long before = atomic_load(&rl.n_overflow);
    assert_true(server__rl_take(&rl, "late", 100.0, &retry));
    assert_int_equal(atomic_load(&rl.n_overflow), before); /* in its own slot */
    server__rl_fini(&rl);
}

static void test_conns_deadlines(void **state)
{
    struct server_conns cs;
    assert_int_equal(server__conns_init(&cs, 2, 1000, 1000, false), IMS_OK);
    struct server_conn *h = server__conns_add(&cs, "1.1.1.1", -1, false, 0.0);
    struct server_conn *b = server__conns_add(&cs, "1.1.1.1", -1, false, 0.0);
    struct server_conn *busy = server__conns_add(&cs, "2.2.2.2", -1, false, 0.0);
    struct server_conn *proxy = server__conns_add(&cs, "3.3.3.3", -1, true, 0.0);
    /* per-client cap: two of 1.1.1.1 are open */
    assert_false(server__conns_accept_ok(&cs, "1.1.1.1"));
    assert_true(server__conns_accept_ok(&cs, "2.2.2.2"));
    assert_true(server__conns_accept_ok(&cs, "3.3.3.3"));
    assert_true(server__conns_accept_ok(&cs, "3.3.3.3"));
    assert_int_equal(atomic_load(&cs.refused_per_client), 1);
    server__conns_phase(&cs, b, SERVER_CONN_BODY, 0.0);
    server__conns_phase(&cs, busy, SERVER_CONN_BUSY, 0.0);
    server__conns_phase(&cs, proxy, SERVER_CONN_BODY, 0.0);
    server__conns_body(&cs, proxy, 1u << 20);
    assert_int_equal(server__conns_sweep(&cs, 0.9), 0);
    server__conns_body(&cs, b, 1100);
    /* past the header deadline: the head-less one goes; the body brought
     * 1100 bytes in its first 1 s window (1000 due) and starts another */
    assert_int_equal(server__conns_sweep(&cs, 1.05), 1);
    assert_true(h->killed);
    assert_false(b->killed);
    assert_int_equal(atomic_load(&cs.killed_headers), 1);
    /* a fast start buys nothing: the next window wants its own 1000 bytes */
    server__conns_body(&cs, b, 999);
    server__conns_body(&cs, proxy, 1u << 20);
    assert_int_equal(server__conns_sweep(&cs, 2.1), 1);
    assert_true(b->killed);
    assert_false(proxy->killed);
    assert_int_equal(atomic_load(&cs.killed_body), 1);
    server__conns_phase(&cs, proxy, SERVER_CONN_BUSY, 2.2);
    assert_int_equal(server__conns_sweep(&cs, 1000.0), 0); /* busy and fast: never */
    /* an idle kept-alive connection is closed but not counted as refused */
    server__conns_phase(&cs, busy, SERVER_CONN_HEADERS, 1000.0);
    assert_int_equal(server__conns_sweep(&cs, 1002.0), 1);
    assert_int_equal(atomic_load(&cs.killed_headers), 1);
    server__conns_remove(&cs, h);
    server__conns_remove(&cs, b);
    server__conns_remove(&cs, busy);
    server__conns_remove(&cs, proxy);
    assert_int_equal(cs.n, 0);
    assert_true(server__conns_accept_ok(&cs, "1.1.1.1"));
    server__conns_fini(&cs);
}

static void test_strict_scalars(void **state)
{
    long long v;
    struct ims_error err = {{0}};
    static const char *const bad[] = {"+1", "01", " 1", "1 ", "-1", "0x1", "1e3", "", "1\t",
                                      "00", "9223372036854775808"};
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad); i++)
        if (server__parse_int(bad[i], "id", 1, INT64_MAX, &v, &err) != IMS_ERR_INVALID)
            fail_msg("\"%s\" accepted", bad[i]);
    assert_int_equal(server__parse_int("0", "offset", 0, 10, &v, &err), IMS_OK);
    assert_int_equal(v, 0);
    assert_int_equal(server__parse_int("9223372036854775807", "id", 1, INT64_MAX, &v, &err),
                     IMS_OK);
    assert_int_equal(server__parse_int("-5", "x", -10, 10, &v, &err), IMS_OK);
    assert_int_equal(v, -5);
    double d;
    static const char *const badf[] = {" 1", "0x1p3", "inf", "nan", "1,5", ""};
    for (size_t i = 0; i < IMS_ARRAY_LEN(badf); i++)
        if (server__parse_float(badf[i], "w", -10, 10, &d, &err) != IMS_ERR_INVALID)
            fail_msg("\"%s\" accepted", badf[i]);
    assert_int_equal(server__parse_float("-0.5e1", "w", -10, 10, &d, &err), IMS_OK);
    assert_true(d == -5.0);
}

/* One grammar for Content-Type and Content-Disposition parameters, strict. */
static void test_mp_params_strict(void **state)
{
    char b[SERVER_MP_BOUNDARY_MAX + 1];
    struct ims_error err = {{0}};
    assert_int_equal(server__mp_boundary("multipart/form-data; charset=utf-8; boundary=\"a b\"",
                                         b, &err),
                     IMS_OK);
    assert_string_equal(b, "a b");
    static const char *const bad[] = {
        "multipart/form-data; boundary",            /* no value */
        "multipart/form-data; boundary=",           /* empty */
        "multipart/form-data; boundary=a; boundary=b",
        "multipart/form-data; junk; boundary=a",    /* a parameter without '=' */
        "multipart/form-data; boundary=\"a",        /* unterminated */
        "multipart/form-data boundary=a",           /* no ';' */
        "multipart/form-data; boundary=a x",        /* garbage after a value */
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad); i++)
        if (server__mp_boundary(bad[i], b, &err) != IMS_ERR_INVALID)
            fail_msg("accepted: %s", bad[i]);
    /* the same rules in a part's Content-Disposition */
    static const char *const bad_parts[] = {
        "Content-Disposition: form-data; name\r\n",
        "Content-Disposition: form-data; name=\"a\"; name=\"b\"\r\n",
        "Content-Disposition: form-data; name=\"a\" junk\r\n",
        "Content-Disposition: form-data; name=\"\"\r\n",
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad_parts); i++) {
        struct server_mp_form f;
        assert_int_equal(server__form_init(&f, "multipart/form-data; boundary=X", 1000, 10, &err),
                         IMS_OK);
        char body[512];
        snprintf(body, sizeof(body), "--X\r\n%s\r\nv\r\n--X--\r\n", bad_parts[i]);
        enum ims_status st = server__form_feed(&f, body, strlen(body), &err);
        if (st == IMS_OK)
            st = server__form_finish(&f, &err);
        if (st != IMS_ERR_INVALID)
            fail_msg("accepted part header: %s", bad_parts[i]);
        server__form_fini(&f);
    }
}

const struct CMUnitTest server_guard_tests[] = {
    cmocka_unit_test(test_guard_host),      cmocka_unit_test(test_guard_origin),
    cmocka_unit_test(test_client_keys),     cmocka_unit_test(test_forwarded),
    cmocka_unit_test(test_rl_flood),        cmocka_unit_test(test_conns_deadlines),
    cmocka_unit_test(test_strict_scalars),  cmocka_unit_test(test_mp_params_strict),
};
const size_t server_n_guard_tests = IMS_ARRAY_LEN(server_guard_tests);
