/* SPDX-License-Identifier: MIT */
/*
 * fetch_policy.c: which addresses a download may connect to, and which URLs
 * may be queued. Pure functions: no sockets, no DNS, no global state.
 *
 * The address check works on the numeric address curl is about to connect to
 * (see fetch_curl.c), never on the host name, so DNS rebinding and odd host
 * spellings ("0x7f.1", "2130706433", "[::ffff:127.0.0.1]") cannot bypass it:
 * whatever the spelling, it ends up as a sockaddr here.
 *
 * IPv4 ranges refused (RFC 6890 special-purpose registry, trimmed):
 *   0.0.0.0/8 unspecified ("this network"), 10/8 172.16/12 192.168/16
 *   private, 100.64/10 shared (CGNAT), 127/8 loopback, 169.254.169.254
 *   metadata, 169.254/16 link-local, 192.0.0/24 192.0.2/24 192.88.99/24
 *   198.18/15 198.51.100/24 203.0.113/24 240/4 reserved (protocol
 *   assignments, documentation, benchmarking, 6to4 relay, future use),
 *   224/4 multicast, 255.255.255.255 broadcast.
 * IPv6: only global unicast 2000::/3 is allowed, minus 2001:db8::/32
 * (documentation) and 2001::/32 (Teredo: tunnels to an IPv4 we cannot see);
 * ::/128 unspecified, ::1 loopback, fd00:ec2::254 metadata, fc00::/7
 * private, fe80::/10 link-local, fec0::/10 site-local, ff00::/8 multicast,
 * everything else outside 2000::/3 reserved. Forms embedding an IPv4
 * address (::ffff:a.b.c.d mapped, ::a.b.c.d compatible, ::ffff:0:a.b.c.d
 * translated, 64:ff9b::a.b.c.d NAT64, 2002:AABB:CCDD::/48 6to4) are judged
 * by the IPv4 address inside.
 *
 * Cloud metadata addresses stay refused even with allow_private: no image
 * lives there, and it is the one SSRF target that hands out credentials.
 */

#include "fetch_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* ---- classification --------------------------------------------------------- */

enum addr_class {
    ADDR_OK,
    ADDR_METADATA, /* refused even with allow_private */
    ADDR_LOOPBACK,
    ADDR_PRIVATE,
    ADDR_LINK_LOCAL,
    ADDR_CGNAT,
    ADDR_UNSPECIFIED,
    ADDR_MULTICAST,
    ADDR_BROADCAST,
    ADDR_RESERVED,
};

static const char *const class_text[] = {
    [ADDR_OK] = "an allowed address",
    [ADDR_METADATA] = "a cloud metadata address",
    [ADDR_LOOPBACK] = "a loopback address",
    [ADDR_PRIVATE] = "a private address",
    [ADDR_LINK_LOCAL] = "a link-local address",
    [ADDR_CGNAT] = "a shared (CGNAT) address",
    [ADDR_UNSPECIFIED] = "an unspecified address",
    [ADDR_MULTICAST] = "a multicast address",
    [ADDR_BROADCAST] = "a broadcast address",
    [ADDR_RESERVED] = "a reserved address",
};

struct v4_range {
    uint32_t net;
    int prefix;
    enum addr_class cls;
};

#define V4(a, b, c, d) (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((uint32_t)(c) << 8) | (d))

/* First match wins, so the more specific entries come first. */
static const struct v4_range v4_table[] = {
    {V4(169, 254, 169, 254), 32, ADDR_METADATA},
    {V4(255, 255, 255, 255), 32, ADDR_BROADCAST},
    {V4(0, 0, 0, 0), 8, ADDR_UNSPECIFIED},
    {V4(10, 0, 0, 0), 8, ADDR_PRIVATE},
    {V4(100, 64, 0, 0), 10, ADDR_CGNAT},
    {V4(127, 0, 0, 0), 8, ADDR_LOOPBACK},
    {V4(169, 254, 0, 0), 16, ADDR_LINK_LOCAL},
    {V4(172, 16, 0, 0), 12, ADDR_PRIVATE},
    {V4(192, 0, 0, 0), 24, ADDR_RESERVED},
    {V4(192, 0, 2, 0), 24, ADDR_RESERVED},
    {V4(192, 88, 99, 0), 24, ADDR_RESERVED},
    {V4(192, 168, 0, 0), 16, ADDR_PRIVATE},
    {V4(198, 18, 0, 0), 15, ADDR_RESERVED},
    {V4(198, 51, 100, 0), 24, ADDR_RESERVED},
    {V4(203, 0, 113, 0), 24, ADDR_RESERVED},
    {V4(224, 0, 0, 0), 4, ADDR_MULTICAST},
    {V4(240, 0, 0, 0), 4, ADDR_RESERVED},
};

static enum addr_class classify_v4(uint32_t a)
{
    for (size_t i = 0; i < IMS_ARRAY_LEN(v4_table); i++) {
        uint32_t mask = v4_table[i].prefix == 0 ? 0 : ~(uint32_t)0 << (32 - v4_table[i].prefix);
        if ((a & mask) == v4_table[i].net)
            return v4_table[i].cls;
    }
    return ADDR_OK;
}

static uint32_t load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* Classifies an IPv6 address. When it embeds an IPv4 address that decides
 * the verdict, *v4 receives it and *form names the embedding. */
static enum addr_class classify_v6(const uint8_t b[16], uint32_t *v4, const char **form)
{
    static const uint8_t metadata[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0,
                                         0,    0,    0,    0,    0, 0, 0x02, 0x54};
    *form = NULL;
    if (all_zero(b, 16))
        return ADDR_UNSPECIFIED;
    if (all_zero(b, 15) && b[15] == 1)
        return ADDR_LOOPBACK;
    if (!memcmp(b, metadata, 16))
        return ADDR_METADATA;
    if (all_zero(b, 10) && b[10] == 0xff && b[11] == 0xff) {
        *form = "IPv4-mapped";
        goto embedded_last32;
    }
    if (all_zero(b, 12)) {
        *form = "IPv4-compatible";
        goto embedded_last32;
    }
    if (all_zero(b, 8) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0) {
        *form = "IPv4-translated";
        goto embedded_last32;
    }
    if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) {
        if (all_zero(b + 4, 8)) {
            *form = "NAT64";
            goto embedded_last32;
        }
        return ADDR_RESERVED; /* 64:ff9b:1::/48 local-use translation and the rest */
    }
    if (b[0] == 0x20 && b[1] == 0x02) {
        *form = "6to4";
        *v4 = load_be32(b + 2);
        return classify_v4(*v4);
    }
    if ((b[0] & 0xfe) == 0xfc)
        return ADDR_PRIVATE;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return ADDR_LINK_LOCAL;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
        return ADDR_PRIVATE; /* site-local, deprecated but still routable inside */
    if (b[0] == 0xff)
        return ADDR_MULTICAST;
    if ((b[0] & 0xe0) != 0x20)
        return ADDR_RESERVED;
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        return ADDR_RESERVED;
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00)
        return ADDR_RESERVED; /* Teredo */
    return ADDR_OK;

embedded_last32:
    *v4 = load_be32(b + 12);
    return classify_v4(*v4);
}

/* ---- public checks ------------------------------------------------------------ */

static int verdict(enum addr_class cls, int allow_private, const char *text, uint32_t v4,
                   const char *form, char *why, size_t n)
{
    if (cls == ADDR_OK || (allow_private && cls != ADDR_METADATA))
        return 1;
    if (why && n) {
        if (form) {
            struct in_addr in = {.s_addr = htonl(v4)};
            char inner[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &in, inner, sizeof(inner));
            snprintf(why, n, "%s is %s (%s %s)", text, class_text[cls], form, inner);
        } else {
            snprintf(why, n, "%s is %s", text, class_text[cls]);
        }
    }
    return 0;
}

int fetch_addr_allowed(const struct sockaddr *sa, int allow_private, char *why, size_t n)
{
    char text[INET6_ADDRSTRLEN];
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        uint32_t a = ntohl(in->sin_addr.s_addr);
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
        return verdict(classify_v4(a), allow_private, text, 0, NULL, why, n);
    }
    if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        uint32_t v4 = 0;
        const char *form = NULL;
        enum addr_class cls = classify_v6(in6->sin6_addr.s6_addr, &v4, &form);
        inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
        return verdict(cls, allow_private, text, v4, form, why, n);
    }
    if (why && n)
        snprintf(why, n, "address family %d is not IPv4 or IPv6", sa ? sa->sa_family : -1);
    return 0;
}

int fetch_addr_allowed_str(const char *addr, int allow_private, char *why, size_t n)
{
    struct sockaddr_in in = {.sin_family = AF_INET};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    if (addr && inet_pton(AF_INET, addr, &in.sin_addr) == 1)
        return fetch_addr_allowed((const struct sockaddr *)&in, allow_private, why, n);
    if (addr && inet_pton(AF_INET6, addr, &in6.sin6_addr) == 1)
        return fetch_addr_allowed((const struct sockaddr *)&in6, allow_private, why, n);
    if (why && n)
        snprintf(why, n, "'%.64s' is not a numeric IP address", addr ? addr : "(null)");
    return -1;
}

/* ---- URLs --------------------------------------------------------------------- */

enum ims_status fetch_url_check(const char *url, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    CURLU *u = NULL;
    char *scheme = NULL, *host = NULL;

    if (!url)
        return ims_error_set(err, IMS_ERR_INVALID, "no URL");
    size_t len = strnlen(url, FETCH_URL_MAX_BYTES + 1);
    if (len > FETCH_URL_MAX_BYTES)
        return ims_error_set(err, IMS_ERR_TOO_LARGE, "URL longer than %d bytes",
                             FETCH_URL_MAX_BYTES);
    if (len == 0)
        return ims_error_set(err, IMS_ERR_INVALID, "empty URL");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c == 0x7f)
            return ims_error_set(err, IMS_ERR_INVALID,
                                 "URL contains a space or control character at offset %zu", i);
    }

    u = curl_url();
    if (!u) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory parsing URL");
        goto out;
    }
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (uc != CURLUE_OK) {
        st = ims_error_set(err, IMS_ERR_INVALID, "not a valid URL: %s", curl_url_strerror(uc));
        goto out;
    }
    uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    if (uc != CURLUE_OK || !scheme) {
        st = ims_error_set(err, IMS_ERR_INVALID, "URL has no scheme (http:// or https://)");
        goto out;
    }
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        st = ims_error_set(err, IMS_ERR_UNSUPPORTED,
                           "scheme '%.32s' not allowed (http and https only)", scheme);
        goto out;
    }
    uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    if (uc != CURLUE_OK || !host || !*host) {
        st = ims_error_set(err, IMS_ERR_INVALID, "URL has no host");
        goto out;
    }
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return st;
}
