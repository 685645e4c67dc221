/* SPDX-License-Identifier: MIT */
/*
 * fuzz_server_query.c: POST /api/v1/search JSON bodies. Any input must give
 * IMS_OK with a query inside the contract's bounds, or an error with a
 * message; never a crash, a leak or an out-of-bounds read. Filters (issue
 * 10) come out with known format words and a valid orientation only.
 */
#include "server_int.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct server_arena a;
    server__arena_init(&a, 64u << 20);
    struct server_query q;
    struct ims_error err = {{0}};
    enum ims_status st = server__query_parse_json((const char *)data, size, &a, &q, &err);
    if (st == IMS_OK) {
        if (q.n_terms < 1 || q.n_terms > SERVER_TERMS_MAX || q.k < 1 || q.k > SERVER_K_MAX ||
            q.offset < 0 || q.offset > SERVER_OFFSET_MAX)
            abort();
        if (q.filter) { /* filters: known format words only, a valid orientation */
            if ((unsigned)q.filter->orientation > SERVER_ORIENT_SQUARE ||
                (q.filter->source_prefix && !q.filter->source_prefix[0]))
                abort();
            for (const char *f = q.filter->formats; f && *f;) {
                size_t n = strcspn(f, ",");
                static const char *const ok[] = {"jpeg", "png", "webp", "gif",
                                                 "bmp",  "heic", "avif", "tiff"};
                int known = 0;
                for (size_t i = 0; i < 8; i++)
                    known |= strlen(ok[i]) == n && !strncmp(f, ok[i], n);
                if (!known)
                    abort();
                f += n + (f[n] == ',');
            }
        }
        for (size_t i = 0; i < q.n_terms; i++) {
            if (!isfinite(q.terms[i].weight))
                abort();
            for (size_t j = 0; j < q.terms[i].n_vector; j++)
                if (!isfinite(q.terms[i].vector[j]))
                    abort();
        }
    } else if (err.message[0] == '\0') {
        abort();
    }
    server__arena_fini(&a);
    return 0;
}
