/* SPDX-License-Identifier: MIT */
/*
 * guard.c: who may talk to the server and who a client is. Pure functions
 * over header values and socket addresses (no MHD), so they are unit-tested
 * and fuzzed directly.
 *
 *   Host        DNS rebinding: a page of evil.example whose name resolves to
 *               127.0.0.1 reaches the server with "Host: evil.example". A
 *               request is served only when its Host names the server: the
 *               localhost forms (localhost, 127.0.0.0/8, [::1], any port),
 *               the listen address, the --public-host names, and, when
 *               listening on a wildcard (0.0.0.0, ::), any IP literal (an IP
 *               literal cannot be rebound: rebinding needs a name). A request
 *               without Host (HTTP/1.0) passes: browsers always send one.
 *   Origin      cross-site requests: a state-changing request (POST, PUT,
 *               DELETE) whose Origin is not the server's own (scheme://Host)
 *               nor a --cors-origin, or which carries no Origin but
 *               "Sec-Fetch-Site: cross-site|same-site", is refused. The web
 *               page is served from the server's own origin, so it passes.
 *   client      the key of a client for the rate limit and the connection
 *               cap: the IPv4 address, or the IPv6 /64 (one host owns a whole
 *               /64, so counting single IPv6 addresses would give it 2^64
 *               buckets). From a --trusted-proxy peer only, the client is the
 *               rightmost hop of Forwarded (preferred) or X-Forwarded-For that
 *               is not itself a trusted proxy: hops to its left are written
 *               by the client and cannot be believed.
 */
#include "server_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* ---- addresses ------------------------------------------------------------------ */

bool server__addr_parse(const char *s, size_t len, struct server_addr *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, buf, out->a) == 1) {
        out->family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, buf, out->a) == 1) {
        out->family = AF_INET6;
        /* an IPv4-mapped IPv6 address is the IPv4 client it maps */
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(out->a, mapped, 12) == 0) {
            memmove(out->a, out->a + 12, 4);
            memset(out->a + 4, 0, 12);
            out->family = AF_INET;
        }
        return true;
    }
    return false;
}

bool server__addr_from_sa(const struct sockaddr *sa, struct server_addr *out)
{
    char buf[64];
    if (!sa)
        return false;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf,
                  sizeof(buf));
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf,
                  sizeof(buf));
    else
        return false;
    return server__addr_parse(buf, strlen(buf), out);
}

void server__addr_key(const struct server_addr *a, char *out, size_t cap)
{
    if (a->family == AF_INET) {
        inet_ntop(AF_INET, a->a, out, (socklen_t)cap);
        return;
    }
    unsigned char net[16] = {0};
    memcpy(net, a->a, 8); /* the /64 */
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, net, buf, sizeof(buf));
    snprintf(out, cap, "%s/64", buf);
}

enum ims_status server__cidr_parse(const char *s, struct server_cidr *out, struct ims_error *err)
{
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    struct server_cidr c;
    memset(&c, 0, sizeof(c));
    IMS_RETURN_ERROR_IF(!server__addr_parse(s, alen, &c.addr), err, IMS_ERR_INVALID,
                        "trusted proxy \"%s\": not an IP address or CIDR", s);
    unsigned max = c.addr.family == AF_INET ? 32 : 128;
    c.prefix = max;
    if (slash) {
        long long p;
        struct ims_error e2 = {{0}};
        IMS_RETURN_ERROR_IF(server__parse_int(slash + 1, "prefix length", 0, max, &p, &e2) !=
                                IMS_OK,
                            err, IMS_ERR_INVALID, "trusted proxy \"%s\": %s", s, e2.message);
        c.prefix = (unsigned)p;
    }
    *out = c;
    return IMS_OK;
}

bool server__cidr_match(const struct server_cidr *c, const struct server_addr *a)
{
    if (c->addr.family != a->family)
        return false;
    unsigned full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->addr.a, a->a, full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff00u >> rest);
    return (c->addr.a[full] & mask) == (a->a[full] & mask);
}

static bool addr_is_loopback(const struct server_addr *a)
{
    static const unsigned char v6lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return a->family == AF_INET ? a->a[0] == 127 : memcmp(a->a, v6lo, 16) == 0;
}

/* ---- init ------------------------------------------------------------------------ */

static char *lower_dup(const char *s, size_t n)
{
    char *d = ims_strndup(s, n);
    for (char *p = d; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

static bool token_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == ',' || *s == '/' || *s == '"' || *s == 0x7f)
            return false;
    return true;
}

enum ims_status server__guard_init(struct server_guard *g, const struct server_options *o,
                                   struct ims_error *err)
{
    memset(g, 0, sizeof(*g));
    enum ims_status st = IMS_OK;
    const char *host = o->host ? o->host : "127.0.0.1";
    if (server__addr_parse(host, strlen(host), &g->listen)) {
        static const unsigned char zero[16] = {0};
        g->listen_any = memcmp(g->listen.a, zero, 16) == 0;
    }
    size_t n = o->n_public_hosts + o->n_cors_origins;
    g->names = ims_calloc(n ? n : 1, sizeof(char *));
    g->proxies = ims_calloc(o->n_trusted_proxies ? o->n_trusted_proxies : 1,
                            sizeof(*g->proxies));
    if (!g->names || !g->proxies) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < o->n_public_hosts; i++) {
        const char *h = o->public_hosts[i];
        size_t len = strlen(h);
        if (len && h[len - 1] == '.')
            len--;
        if (len == 0 || len > 255 || !token_ok(h)) {
            st = ims_error_set(err, IMS_ERR_INVALID,
                               "public host \"%s\": expected a host name or address, optionally "
                               "with :PORT",
                               h);
            goto out;
        }
        if (!(g->names[g->n_hosts++] = lower_dup(h, len))) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    g->origins = g->names + g->n_hosts;
    for (size_t i = 0; i < o->n_cors_origins; i++) {
        const char *v = o->cors_origins[i];
        size_t len = strlen(v);
        while (len && v[len - 1] == '/')
            len--;
        const char *sep = strstr(v, "://");
        if (!sep || sep == v || (size_t)(sep - v) + 3 >= len || len > 255 ||
            memchr(sep + 3, '/', len - (size_t)(sep - v) - 3)) {
            st = ims_error_set(err, IMS_ERR_INVALID,
                               "CORS origin \"%s\": expected SCHEME://HOST[:PORT]", v);
            goto out;
        }
        for (size_t k = 0; k < len; k++)
            if ((unsigned char)v[k] <= ' ' || v[k] == ',' || v[k] == '"') {
                st = ims_error_set(err, IMS_ERR_INVALID,
                                   "CORS origin \"%s\": expected SCHEME://HOST[:PORT]", v);
                goto out;
            }
        if (!(g->origins[g->n_origins++] = lower_dup(v, len))) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < o->n_trusted_proxies; i++) {
        if ((st = server__cidr_parse(o->trusted_proxies[i], &g->proxies[i], err)) != IMS_OK)
            goto out;
        g->n_proxies++;
    }
out:
    if (st != IMS_OK)
        server__guard_fini(g);
    return st;
}

void server__guard_fini(struct server_guard *g)
{
    if (g->names)
        for (size_t i = 0; i < g->n_hosts + g->n_origins; i++)
            ims_free(g->names[i]);
    ims_free(g->names);
    ims_free(g->proxies);
    memset(g, 0, sizeof(*g));
}

/* ---- Host -------------------------------------------------------------------------- */

/* Splits "name", "name:port", "[v6]", "[v6]:port" into the name (without the
 * brackets) and whether it is an IP literal. */
static bool host_split(const char *h, char *name, size_t cap, struct server_addr *ip, bool *is_ip)
{
    size_t len = strlen(h);
    const char *port = NULL;
    const char *nb = h;
    size_t nl;
    if (h[0] == '[') {
        const char *close = strchr(h, ']');
        if (!close)
            return false;
        nb = h + 1;
        nl = (size_t)(close - nb);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return false;
    } else {
        const char *colon = strchr(h, ':');
        nl = colon ? (size_t)(colon - h) : len;
        if (colon)
            port = colon + 1;
    }
    if (port) {
        size_t pl = strlen(port);
        if (pl == 0 || pl > 5 || strspn(port, "0123456789") != pl)
            return false;
    }
    if (nl && nb[nl - 1] == '.' && h[0] != '[')
        nl--;
    if (nl == 0 || nl >= cap)
        return false;
    for (size_t i = 0; i < nl; i++) {
        unsigned char c = (unsigned char)nb[i];
        if (c <= ' ' || c >= 0x7f || c == '/' || c == '@' || c == '\\')
            return false;
        name[i] = (char)tolower(c);
    }
    name[nl] = '\0';
    *is_ip = server__addr_parse(name, nl, ip);
    if (h[0] == '[' && (!*is_ip || ip->family != AF_INET6))
        return false;
    return true;
}

bool server__guard_host_ok(const struct server_guard *g, const char *host)
{
    if (!host)
        return true;
    char name[256];
    struct server_addr ip;
    bool is_ip = false;
    if (!host_split(host, name, sizeof(name), &ip, &is_ip))
        return false;
    if (strcmp(name, "localhost") == 0)
        return true;
    if (is_ip) {
        if (addr_is_loopback(&ip) || g->listen_any)
            return true;
        if (ip.family == g->listen.family && memcmp(ip.a, g->listen.a, 16) == 0)
            return true;
    }
    for (size_t i = 0; i < g->n_hosts; i++) {
        const char *h = g->names[i];
        /* an entry with a port must match the whole header; else the name */
        if (strcasecmp(h, host) == 0 || strcmp(h, name) == 0)
            return true;
        if (is_ip && h[0] == '[' && strlen(h) == strlen(name) + 2 &&
            strncmp(h + 1, name, strlen(name)) == 0)
            return true;
    }
    return false;
}

/* ---- Origin ------------------------------------------------------------------------- */

bool server__guard_cors_ok(const struct server_guard *g, const char *origin)
{
    if (!origin)
        return false;
    size_t len = strlen(origin);
    while (len && origin[len - 1] == '/')
        len--;
    for (size_t i = 0; i < g->n_origins; i++)
        if (strlen(g->origins[i]) == len && strncasecmp(g->origins[i], origin, len) == 0)
            return true;
    return false;
}

bool server__guard_origin_ok(const struct server_guard *g, const char *host, const char *origin,
                             const char *sec_fetch_site)
{
    if (origin) {
        if (server__guard_cors_ok(g, origin))
            return true;
        const char *sep = strstr(origin, "://");
        if (!sep || !host)
            return false; /* "null", or garbage */
        size_t scheme = (size_t)(sep - origin);
        if (!((scheme == 4 && strncasecmp(origin, "http", 4) == 0) ||
              (scheme == 5 && strncasecmp(origin, "https", 5) == 0)))
            return false;
        const char *oh = sep + 3;
        size_t len = strlen(oh);
        while (len && oh[len - 1] == '/')
            len--;
        if (len == strlen(host) && strncasecmp(oh, host, len) == 0)
            return true;
        /* a page served under one of our --public-host names (a reverse
         * proxy may have rewritten Host on its way here) */
        char name[256];
        struct server_addr ip;
        bool is_ip;
        char ohost[256];
        if (len >= sizeof(ohost))
            return false;
        memcpy(ohost, oh, len);
        ohost[len] = '\0';
        if (!host_split(ohost, name, sizeof(name), &ip, &is_ip))
            return false;
        for (size_t i = 0; i < g->n_hosts; i++)
            if (strcmp(g->names[i], name) == 0 || strcasecmp(g->names[i], ohost) == 0)
                return true;
        return false;
    }
    if (sec_fetch_site &&
        (strcasecmp(sec_fetch_site, "cross-site") == 0 ||
         strcasecmp(sec_fetch_site, "same-site") == 0))
        return false;
    return true;
}

/* ---- client behind trusted proxies ---------------------------------------------------- */

bool server__guard_is_proxy(const struct server_guard *g, const struct server_addr *a)
{
    for (size_t i = 0; i < g->n_proxies; i++)
        if (server__cidr_match(&g->proxies[i], a))
            return true;
    return false;
}

/* One hop of X-Forwarded-For ("1.2.3.4", "1.2.3.4:5", "::1", "[::1]:5"), or the
 * value of a Forwarded for= parameter (the same, quoted or not). */
static bool hop_parse(const char *p, size_t n, struct server_addr *out)
{
    while (n && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"') {
        p++;
        n -= 2;
    }
    if (n && p[0] == '[') {
        const char *close = memchr(p, ']', n);
        if (!close)
            return false;
        return server__addr_parse(p + 1, (size_t)(close - p - 1), out);
    }
    if (server__addr_parse(p, n, out))
        return true;
    const char *colon = memchr(p, ':', n);
    if (colon && !memchr(colon + 1, ':', n - (size_t)(colon + 1 - p)))
        return server__addr_parse(p, (size_t)(colon - p), out); /* v4:port */
    return false;
}

/* The for= value of one Forwarded element ("for=1.2.3.4;proto=https"). */
static bool forwarded_for(const char *p, size_t n, struct server_addr *out)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        bool q = false;
        while (j < n && (q || p[j] != ';')) {
            if (p[j] == '"')
                q = !q;
            j++;
        }
        const char *pp = p + i;
        size_t pn = j - i;
        while (pn && (*pp == ' ' || *pp == '\t')) {
            pp++;
            pn--;
        }
        if (pn > 4 && strncasecmp(pp, "for=", 4) == 0)
            return hop_parse(pp + 4, pn - 4, out);
        i = j + 1;
    }
    return false;
}

bool server__guard_forwarded_client(const struct server_guard *g, const char *forwarded,
                                    const char *xff, struct server_addr *out)
{
    const char *h = forwarded && *forwarded ? forwarded : xff;
    if (!h || !*h)
        return false;
    bool fwd = h == forwarded;
    /* walk the hops right to left; elements are separated by commas (quoted
     * strings in Forwarded may hold commas) */
    size_t end = strlen(h);
    struct server_addr a;
    bool have = false;
    while (end > 0) {
        size_t start = end;
        bool q = false;
        while (start > 0 && (q || h[start - 1] != ',')) {
            if (h[start - 1] == '"')
                q = !q;
            start--;
        }
        bool ok = fwd ? forwarded_for(h + start, end - start, &a)
                      : hop_parse(h + start, end - start, &a);
        if (!ok)
            break; /* "unknown", obfuscated or garbage: trust nothing further left */
        *out = a;
        have = true;
        if (!server__guard_is_proxy(g, &a))
            return true;
        end = start ? start - 1 : 0;
    }
    return have;
}
