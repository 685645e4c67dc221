/* SPDX-License-Identifier: MIT */
/*
 * fetch_memory.c: fetch_to_memory, one small download into memory with the
 * multi engine's limits and address policy (an image named by URL in a
 * query). A fetcher of its own per call: the call blocks its thread only,
 * and concurrent calls share nothing.
 */
#include "fetch_int.h"

#include <stdio.h>
#include <string.h>

struct one {
    enum ims_status status;
    char reason[512];
    char *body;
    size_t len;
    int done;
};

static void on_done(void *user, struct fetch_result *r)
{
    struct one *o = user;
    o->done = 1;
    o->status = r->status;
    if (r->status == IMS_OK) {
        o->body = r->body; /* taken: ours now */
        o->len = r->body_len;
        r->body = NULL;
    } else {
        snprintf(o->reason, sizeof(o->reason), "%s", r->reason ? r->reason : "");
    }
}

enum ims_status fetch_to_memory(const char *url, const struct fetch_options *opts, char **body,
                                size_t *len, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!url || !body || !len, err, IMS_ERR_INVALID,
                        "fetch: no URL or no output");
    struct fetcher *f = NULL;
    struct one one = {0};
    enum ims_status st = fetcher_new(opts, &f, err);
    if (st != IMS_OK)
        return st;
    st = fetcher_add(f, url, &one, err);
    while (st == IMS_OK && !one.done)
        st = fetcher_poll(f, 1000, on_done, NULL, err);
    fetcher_free(f);
    if (st != IMS_OK) {
        ims_free(one.body);
        return st;
    }
    if (one.status != IMS_OK)
        return ims_error_set(err, one.status, "%s: %s", url, one.reason);
    *body = one.body;
    *len = one.len;
    return IMS_OK;
}
