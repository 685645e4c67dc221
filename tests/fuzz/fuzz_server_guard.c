/* SPDX-License-Identifier: MIT */
/*
 * fuzz_server_guard.c: the header values the hardening reads from any client
 * (guard.c): Host, Origin, Sec-Fetch-Site, Forwarded, X-Forwarded-For, and
 * the --trusted-proxy CIDR grammar. The input is split at NUL bytes into
 * those values. Never a crash or an out-of-bounds read; a client named by
 * the forwarding headers is always a valid address whose key is printable.
 */
#include "server_int.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *v[5] = {"", "", "", "", ""};
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= size && n < 5; i++)
        if (i == size || buf[i] == '\0') {
            v[n++] = buf + start;
            start = i + 1;
        }
    static const char *const hosts[] = {"photos.example.org", "[2001:db8::7]:8443"};
    static const char *const origins[] = {"https://app.example.net"};
    static const char *const proxies[] = {"10.0.0.0/8", "fd00::/8", "127.0.0.1"};
    struct server_options o;
    memset(&o, 0, sizeof(o)); /* (server_options_init lives with the daemon) */
    o.host = "127.0.0.1";
    o.public_hosts = hosts;
    o.n_public_hosts = 2;
    o.cors_origins = origins;
    o.n_cors_origins = 1;
    o.trusted_proxies = proxies;
    o.n_trusted_proxies = 3;
    struct server_guard g;
    struct ims_error err = {{0}};
    if (server__guard_init(&g, &o, &err) != IMS_OK)
        abort();
    (void)server__guard_host_ok(&g, v[0]);
    (void)server__guard_origin_ok(&g, v[0], v[1], v[2]);
    (void)server__guard_cors_ok(&g, v[1]);
    struct server_addr a;
    if (server__guard_forwarded_client(&g, n > 3 ? v[3] : NULL, n > 4 ? v[4] : NULL, &a)) {
        if (a.family != AF_INET && a.family != AF_INET6)
            abort();
        char key[64];
        server__addr_key(&a, key, sizeof(key));
        for (const char *p = key; *p; p++)
            if (!isprint((unsigned char)*p))
                abort();
    }
    struct server_cidr c;
    if (server__cidr_parse(v[0], &c, &err) == IMS_OK) {
        if (c.prefix > (c.addr.family == AF_INET ? 32u : 128u))
            abort();
    } else if (err.message[0] == '\0') {
        abort();
    }
    server__guard_fini(&g);
    free(buf);
    return 0;
}
