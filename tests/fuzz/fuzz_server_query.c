/* SPDX-License-Identifier: MIT */
/*
 * fuzz_server_query.c: POST /api/v1/search JSON bodies. Any input must give
 * IMS_OK with a query inside the contract's bounds, or an error with a
 * message; never a crash, a leak or an out-of-bounds read.
 */
#include "server_int.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

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
