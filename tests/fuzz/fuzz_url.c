/* SPDX-License-Identifier: MIT */
/*
 * fuzz_url.c: the fetch module's input checks on arbitrary bytes: URL
 * validation (fetch_url_check), the address policy over arbitrary addresses
 * (string and sockaddr forms) and the Location-header scheme scanner. Beyond
 * "no crash, no sanitizer report" it checks invariants that must hold for
 * every input: an accepted URL is short enough and http(s); a reason is
 * always NUL-terminated; allow_private never refuses more than the default.
 * Pure functions only: nothing here opens a socket or resolves a name.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "fetch_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 3 * FETCH_URL_MAX_BYTES)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    struct ims_error err = {{0}};
    if (fetch_url_check(s, &err) == IMS_OK) {
        if (strlen(s) > FETCH_URL_MAX_BYTES)
            abort();
        if (strncasecmp(s, "http://", 7) != 0 && strncasecmp(s, "https://", 8) != 0 &&
            strncasecmp(s, "http:", 5) != 0 && strncasecmp(s, "https:", 6) != 0)
            abort();
    } else if (memchr(err.message, '\0', sizeof(err.message)) == NULL || !err.message[0]) {
        abort();
    }

    char why[FETCH__WHY_BYTES];
    int d = fetch_addr_allowed_str(s, 0, why, sizeof(why));
    int p = fetch_addr_allowed_str(s, 1, why, sizeof(why));
    if (d < -1 || d > 1 || p < -1 || p > 1 || (d == -1) != (p == -1) || d > p)
        abort();
    if (!memchr(why, '\0', sizeof(why)))
        abort();

    /* the raw bytes as an address */
    if (size >= 17) {
        struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
        struct sockaddr_in in = {.sin_family = AF_INET};
        memcpy(&in6.sin6_addr, data + 1, 16);
        memcpy(&in.sin_addr, data + 1, 4);
        const struct sockaddr *sa =
            (data[0] & 1) ? (const struct sockaddr *)&in6 : (const struct sockaddr *)&in;
        int a = fetch_addr_allowed(sa, 0, why, sizeof(why));
        int b = fetch_addr_allowed(sa, 1, NULL, 0);
        if (a > b || (!a && !memchr(why, '\0', sizeof(why))))
            abort();
    }

    char scheme[16];
    memset(scheme, 'x', sizeof(scheme));
    scheme[0] = '\0'; /* callers start with "" (no redirect seen) */
    fetch__header_note(s, size, scheme);
    if (!memchr(scheme, '\0', sizeof(scheme)))
        abort();
    free(s);
    return 0;
}
