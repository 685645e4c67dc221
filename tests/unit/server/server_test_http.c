/* SPDX-License-Identifier: MIT */
/*
 * server_test_http.c: the server tests' loopback HTTP client
 * (server_test_http.h).
 */
#include "server_test_http.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <curl/curl.h>

size_t ts_write_cb(char *p, size_t sz, size_t n, void *ud)
{
    return ims_buf_append(ud, p, sz * n) == IMS_OK ? sz * n : 0;
}

void resp_fini(struct resp *r)
{
    ims_buf_fini(&r->body);
    ims_buf_fini(&r->headers);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

void ts_http(struct resp *out, const char *base_url, const char *method, const char *path,
             const char *ctype, const void *body, size_t len, const char *const *hdrs)
{
    memset(out, 0, sizeof(*out));
    ims_buf_init(&out->body, 128u << 20);
    ims_buf_init(&out->headers, 1u << 20);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    char url[4096];
    snprintf(url, sizeof(url), "%s%s", base_url, path);
    struct curl_slist *list = NULL;
    if (ctype) {
        char h[256];
        snprintf(h, sizeof(h), "Content-Type: %s", ctype);
        list = curl_slist_append(list, h);
    }
    for (size_t i = 0; hdrs && hdrs[i]; i++)
        list = curl_slist_append(list, hdrs[i]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ts_write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, ts_write_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &out->headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        fprintf(stderr, "curl: %s %s: %s\n", method, path, curl_easy_strerror(rc));
    assert_int_equal(rc, CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(list);
    curl_easy_cleanup(c);
    ims_buf_append(&out->body, "", 1); /* NUL-terminate */
    out->body.len--;
    if (out->body.len) {
        json_error_t jerr;
        out->json = json_loadb(out->body.data, out->body.len, 0, &jerr);
    }
}

const char *header(const struct resp *r, const char *name, char *out, size_t cap)
{
    out[0] = '\0';
    const char *p = r->headers.data;
    size_t n = strlen(name);
    while (p && *p) {
        const char *eol = strstr(p, "\r\n");
        if (!eol)
            break;
        if ((size_t)(eol - p) > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(eol - v), v);
        }
        p = eol + 2;
    }
    return out;
}
