/* SPDX-License-Identifier: MIT */
/*
 * fuzz_server_multipart.c: the streaming multipart parser. The first byte
 * picks a chunk size; the body is fed in chunks of that size and again in
 * one piece, and both runs must agree on the status and on every part's
 * name and bytes (the parser must not depend on how the body is split).
 * The form is then turned into a search query, which must not crash.
 */
#include "server_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static enum ims_status run(const char *p, size_t n, size_t chunk, struct server_mp_form *f)
{
    struct ims_error err;
    enum ims_status st = server__form_init(f, "multipart/form-data; boundary=XyZ", 1u << 20, 32,
                                           &err);
    if (st != IMS_OK)
        abort();
    for (size_t off = 0; off < n && st == IMS_OK; off += chunk)
        st = server__form_feed(f, p + off, n - off < chunk ? n - off : chunk, &err);
    if (st == IMS_OK)
        st = server__form_finish(f, &err);
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] % 17 + 1;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    struct server_mp_form a, b;
    enum ims_status sa = run(p, n, chunk, &a);
    enum ims_status sb = run(p, n, n ? n : 1, &b);
    if (sa != sb)
        abort();
    if (sa == IMS_OK) {
        if (a.n_fields != b.n_fields)
            abort();
        for (size_t i = 0; i < a.n_fields; i++) {
            if (strcmp(a.fields[i].info.name, b.fields[i].info.name) != 0 ||
                a.fields[i].data.len != b.fields[i].data.len ||
                (a.fields[i].data.len &&
                 memcmp(a.fields[i].data.data, b.fields[i].data.data, a.fields[i].data.len)))
                abort();
        }
        struct server_arena ar;
        server__arena_init(&ar, 16u << 20);
        struct server_query q;
        struct ims_error err;
        (void)server__query_from_form(&a, &ar, &q, &err);
        server__arena_fini(&ar);
    }
    server__form_fini(&a);
    server__form_fini(&b);
    return 0;
}
