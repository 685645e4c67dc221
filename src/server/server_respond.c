/* SPDX-License-Identifier: MIT */
/*
 * server_respond.c: what every route answers with: the one status -> HTTP
 * code switch, response queueing with the common headers (nosniff, no-store,
 * CORS echo, Connection: close while stopping), JSON and error bodies (an
 * internal failure's message goes to the error log, never to the client),
 * the error log, static assets with their ETag, and the small request
 * helpers the routes share. No state of its own: everything is on the
 * request or the server.
 */

#include "server_http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- logging ---------------------------------------------------------------------- */

void server__error_log(struct server *s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (!s->o.error_log) {
        ims_log(IMS_LOG_ERROR, "server: %s", line);
        return;
    }
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    pthread_mutex_lock(&s->log_mu);
    fprintf(s->o.error_log, "%s error: %s\n", ts, line);
    fflush(s->o.error_log);
    pthread_mutex_unlock(&s->log_mu);
}

/* ---- responses -------------------------------------------------------------------------- */

/* The one place where statuses become HTTP codes. */
int server__http_status(enum ims_status st)
{
    switch (st) {
    case IMS_OK:
        return 200;
    case IMS_ERR_INVALID:
    case IMS_ERR_CORRUPT:
        return 400;
    case IMS_ERR_UNAUTHORIZED:
        return 401;
    case IMS_ERR_REFUSED:
        return 403;
    case IMS_ERR_NOT_FOUND:
        return 404;
    case IMS_ERR_EXISTS:
    case IMS_ERR_MODEL_MISMATCH:
        return 409;
    case IMS_ERR_METHOD_NOT_ALLOWED:
        return 405;
    case IMS_ERR_TOO_LARGE:
        return 413;
    case IMS_ERR_UNSUPPORTED:
        return 415;
    case IMS_ERR_RATE_LIMITED:
        return 429;
    case IMS_ERR_NETWORK:
        return 502;
    case IMS_ERR_BUSY:
    case IMS_ERR_NOMEM:
    case IMS_ERR_CANCELLED:
        return 503;
    case IMS_ERR_TIMEOUT:
        return 504;
    case IMS_ERR_IO:
    case IMS_ERR_INTERNAL:
    case IMS_STATUS_COUNT:
        break;
    }
    return 500;
}

static void add_common_headers(struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
}

enum MHD_Result server__queue(struct server_request *r, struct MHD_Connection *c, int status,
                             const void *body, size_t len, const char *ctype,
                             const struct server_hdr *extra, size_t n_extra)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    add_common_headers(resp);
    if (ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    bool has_cache = false;
    for (size_t i = 0; i < n_extra; i++) {
        MHD_add_response_header(resp, extra[i].name, extra[i].value);
        has_cache = has_cache || strcasecmp(extra[i].name, "Cache-Control") == 0;
    }
    if (!has_cache)
        MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (atomic_load(&r->s->stopping))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (r->cors_origin[0]) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->cors_origin);
        MHD_add_response_header(resp, "Vary", "Origin");
    }
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES) {
        r->status = status;
        r->bytes_out = len;
        r->responded = true;
    }
    return ret;
}

enum MHD_Result server__respond_json(struct server_request *r, struct MHD_Connection *c, int status,
                                    json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(7)) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] =
            "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"out of memory\"}}";
        return server__queue(r, c, 503, oom, sizeof(oom) - 1, "application/json", NULL, 0);
    }
    enum MHD_Result ret = server__queue(r, c, status, text, strlen(text), "application/json", NULL, 0);
    free(text);
    return ret;
}

/* {"error": {"code", "message"}} with the mapped status. Messages of
 * internal failures are logged and replaced, never shown. */
enum MHD_Result server__respond_error_status(struct server_request *r, struct MHD_Connection *c,
                                            int status, enum ims_status st,
                                            const struct ims_error *err, const struct server_hdr *extra,
                                            size_t n_extra)
{
    const char *msg = ims_error_message(err, st);
    if (status == 500) {
        server__error_log(r->s, "%s %s: %s: %s", r->method_name, r->path, ims_status_name(st), msg);
        msg = "internal error (see the server's error log)";
    }
    json_t *o = json_pack("{s:{s:s, s:s}}", "error", "code", ims_status_name(st), "message", msg);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return MHD_NO;
    enum MHD_Result ret = server__queue(r, c, status, text, strlen(text), "application/json", extra,
                                n_extra);
    free(text);
    return ret;
}

enum MHD_Result server__respond_error_h(struct server_request *r, struct MHD_Connection *c,
                                       enum ims_status st, const struct ims_error *err,
                                       const struct server_hdr *extra, size_t n_extra)
{
    return server__respond_error_status(r, c, server__http_status(st), st, err, extra, n_extra);
}

enum MHD_Result server__respond_error(struct server_request *r, struct MHD_Connection *c,
                                     enum ims_status st, const struct ims_error *err)
{
    struct server_hdr h = {"Retry-After", "1"};
    bool retry = st == IMS_ERR_BUSY || st == IMS_ERR_NOMEM;
    return server__respond_error_h(r, c, st, err, retry ? &h : NULL, retry ? 1 : 0);
}

enum MHD_Result server__respond_msg(struct server_request *r, struct MHD_Connection *c,
                                   enum ims_status st, const char *fmt, ...)
{
    struct ims_error err;
    va_list ap;
    va_start(ap, fmt);
    ims_error_setv(&err, st, fmt, ap);
    va_end(ap);
    return server__respond_error(r, c, st, &err);
}

/* ---- helpers for handlers ------------------------------------------------------------------ */

bool server__media_is(const char *ctype, const char *media)
{
    size_t n = strlen(media);
    if (!ctype || strncasecmp(ctype, media, n) != 0)
        return false;
    char next = ctype[n];
    return next == '\0' || next == ';' || next == ' ' || next == '\t';
}

bool server__etag_matches(struct MHD_Connection *c, const char *etag)
{
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
    return inm && (strstr(inm, etag) != NULL || strcmp(inm, "*") == 0);
}

static const char *csp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

enum MHD_Result server__serve_asset(struct server_request *r, struct MHD_Connection *c, const char *path)
{
    const struct server_asset *a = server__asset_find(path);
    if (!a)
        return server__respond_msg(r, c, IMS_ERR_NOT_FOUND, "no such asset");
    char etag[24];
    snprintf(etag, sizeof(etag), "\"%016llx\"", (unsigned long long)ims_fnv1a64(a->data, a->len));
    struct server_hdr h[4] = {{"ETag", etag},
                       {"Cache-Control", "no-cache"},
                       {"Content-Security-Policy", csp},
                       {"X-Frame-Options", "DENY"}};
    if (server__etag_matches(c, etag))
        return server__queue(r, c, 304, "", 0, NULL, h, 2);
    return server__queue(r, c, 200, a->data, a->len, a->content_type, h, 4);
}
