/* SPDX-License-Identifier: MIT */
/*
 * server_test_http.h: the loopback HTTP client the server's tests share
 * (test_server, test_server_compat): one request with libcurl (proxies off,
 * 60 s cap), the status, the body (NUL-terminated, parsed as JSON when it is
 * JSON) and the raw header block.
 */
#ifndef IMS_SERVER_TEST_HTTP_H
#define IMS_SERVER_TEST_HTTP_H

#include "imgsearch/base.h"

#include <jansson.h>
#include <stddef.h>

struct resp {
    long status;
    struct ims_buf body, headers;
    json_t *json; /* NULL when the body is not JSON */
};

/* METHOD base_url+path with an optional Content-Type and body; hdrs: a
 * NULL-terminated list of extra header lines, or NULL. Asserts the transfer
 * itself worked. Release *out with resp_fini. */
void ts_http(struct resp *out, const char *base_url, const char *method, const char *path,
             const char *ctype, const void *body, size_t len, const char *const *hdrs);
void resp_fini(struct resp *r);
/* libcurl write callback appending to the struct ims_buf in its user data. */
size_t ts_write_cb(char *p, size_t sz, size_t n, void *ud);
/* The value of header `name` (case-insensitive; the last one) into out, or
 * "" when absent; returns out. */
const char *header(const struct resp *r, const char *name, char *out, size_t cap);

#endif
