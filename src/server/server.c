/* SPDX-License-Identifier: MIT */
/*
 * server.c: the HTTP server: libmicrohttpd daemon, routing, request
 * limits, authentication, rate limiting, admission control, handlers,
 * error mapping and logs.
 *
 * DESIGN
 *
 * Threads. Handlers call the backend synchronously, and backend calls block
 * (a CLIP forward pass, a job wait). With libmicrohttpd's epoll thread pool
 * a worker blocked in a handler stalls every other connection multiplexed
 * on it: the unit tests saw /metrics and /healthz hang behind a blocked
 * search. So by default MHD runs one thread per connection (plus its
 * listening thread), bounded by max_connections, and the admission gate
 * below bounds how many of them are inside the backend. `use_pool` selects
 * the epoll pool of `n_threads` workers instead, which is only safe with a
 * backend that never blocks for long; the non-blocking design for the pool
 * (MHD_suspend_connection + our own worker threads) is future work. The
 * server starts one thread of its own: the connection watchdog (conns.c),
 * which enforces the header deadline and the minimum body rate.
 *
 * Before a request: MHD's accept policy refuses a client address holding
 * max_conns_per_client connections already (conns.c).
 *
 * One request, three phases (MHD calls the access handler repeatedly):
 *   1. headers: Host (421) and, for writes, Origin (403) (guard.c), CORS
 *      preflight, a repeated query parameter (400), route + method
 *      (404/405), rate limit (429, keyed by the client behind trusted
 *      proxies), API key (401), Content-Type (415) and Content-Length (413
 *      over the limit, 503 over what is left of the global body budget; a
 *      multipart body also 503 when the admission gate is full) are
 *      checked, all before a byte of the body is read; a refusal is queued
 *      at once, so a client using "Expect: 100-continue" never sends its
 *      body. Body bytes are then reserved in the budget as they arrive.
 *   2. body chunks: appended to a bounded buffer (JSON) or fed to the
 *      streaming multipart parser (form parts in bounded buffers). Past a
 *      limit nothing more is kept; the rest of the body is drained (up to
 *      DRAIN_MAX bytes, then the connection is dropped) and answered 413.
 *   3. end of body: the handler runs and queues exactly one response.
 * Per-request state (struct request) lives from phase 1 to MHD's
 * "request completed" callback, where the access log line and the metrics
 * are written and the request's arena is released.
 *
 * Back-pressure. Backend calls pass an admission gate: at most
 * `max_inflight` run at once, at most `max_queued` requests wait for a
 * slot, each for at most `queue_wait_ms`; past that the answer is 503 with
 * Retry-After. Nothing waits without bound and nothing queues without
 * bound (MHD's connection limit caps the sockets). The gate bounds threads
 * inside the backend, not CPU: the expensive work is bounded further down
 * (the model's own thread pool runs one encode at a time on every core), so
 * with a thread per connection the gate has many more slots than cores
 * (default 32). POST /api/v1/images?wait=1 queues its job inside the gate
 * and waits for it outside (wait_respond), capped by max_waiters, so slow
 * jobs never hold slots. Requests waiting for the encoder then wait inside the
 * backend, asleep, and cheap calls (text-cache hits, rows, thumbnails) pass
 * them: with 4 slots, 16 clients of cache misses held a cache hit in the
 * gate for ~350 ms (p50); with 32, 1.3 ms (bench/README-server.md). Cheap endpoints
 * (healthz, readyz, metrics, static assets, openapi) bypass the gate so that health
 * checks answer while the backend is saturated.
 *
 * Shutdown order (server_stop): set `stopping` (new requests on kept-alive
 * connections get 503 + Connection: close, waits in the gate give up) ->
 * MHD_quiesce_daemon + shutdown() of the listening socket (new connections
 * are refused at once) -> wait until no request is active or drain_ms
 * passed -> MHD_stop_daemon (joins the pool threads, closes remaining
 * connections) -> close the listening socket (only now: MHD's epoll threads
 * may still hold it until they are joined).
 *
 * Locks: gate_mu guards inflight/waiting; drain_mu pairs with the atomic
 * `active` for the drain wait; log_mu serialises log lines; the rate limiter
 * has its own mutex. No lock is held while calling the backend or MHD.
 */
#include "server_int.h"

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

#define ARENA_MAX_BYTES (256u * 1024 * 1024)
#define DRAIN_MAX (16u * 1024 * 1024)
#define JOB_WAIT_SLICE_MS 100
#define URLS_MAX 10000
#define SERVER_DEFAULT_INFLIGHT 32 /* see "Back-pressure" above */

/* ---- routes -------------------------------------------------------------------- */

enum route_id {
    R_INDEX,
    R_APPJS,
    R_STYLE,
    R_OPENAPI,
    R_HEALTHZ,
    R_READYZ,
    R_STATS,
    R_IMAGES,
    R_IMAGE,
    R_THUMB,
    R_JOB,
    R_SEARCH,
    R_METRICS,
    R_PING,      /* compat routes (options.compat): compat_immich.c, compat_clipback.c */
    R_PREDICT,
    R_KNN,
    R_METADATA,
    R_INDICES,
    R_COUNT,
    R_NONE = R_COUNT, /* metrics slot for unmatched requests */
};

/* Same order as enum route_id. The names in methods[] only document. */
const struct server__route server__routes[] = {
    {"/", {"web page", NULL, NULL}},
    {"/app.js", {"web script", NULL, NULL}},
    {"/style.css", {"web style", NULL, NULL}},
    {"/api/v1/openapi.json", {"openapi", NULL, NULL}},
    {"/healthz", {"health", NULL, NULL}},
    {"/readyz", {"readiness", NULL, NULL}},
    {"/api/v1/stats", {"stats", NULL, NULL}},
    {"/api/v1/images", {NULL, "add images", NULL}},
    {"/api/v1/images/{id}", {"image row", NULL, "delete image"}},
    {"/api/v1/images/{id}/thumb", {"thumbnail", NULL, NULL}},
    {"/api/v1/jobs/{id}", {"job", NULL, NULL}},
    {"/api/v1/search", {"search (query string)", "search (body)", NULL}},
    {"/metrics", {"metrics", NULL, NULL}},
    {"/ping", {"immich: liveness", NULL, NULL}},
    {"/predict", {NULL, "immich: CLIP embedding", NULL}},
    {"/knn-service", {NULL, "clip-retrieval: search", NULL}},
    {"/metadata", {NULL, "clip-retrieval: rows", NULL}},
    {"/indices-list", {"clip-retrieval: indices", NULL, NULL}},
};

/* The compatibility mode a route belongs to (0: imgsearch's own). */
static unsigned route_compat(int route)
{
    return route == R_PING || route == R_PREDICT                       ? SERVER_COMPAT_IMMICH
           : route == R_KNN || route == R_METADATA || route == R_INDICES ? SERVER_COMPAT_CLIP_BACK
                                                                       : 0;
}
const size_t server__n_routes = IMS_ARRAY_LEN(server__routes);
_Static_assert(IMS_ARRAY_LEN(server__routes) == R_COUNT, "route table out of sync");

/* Matches `path` against a pattern; a {x} segment captures into id. */
static bool route_match(const char *pattern, const char *path, char *id, size_t id_cap)
{
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            size_t n = strcspn(s, "/");
            if (!close || n == 0 || n >= id_cap)
                return false;
            memcpy(id, s, n);
            id[n] = '\0';
            p = close + 1;
            s += n;
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    return *p == '\0' && *s == '\0';
}

/* ---- server and request state ---------------------------------------------------- */

struct server {
    struct server_options o;       /* copy; o.api_key owned */
    struct server_backend be;
    struct MHD_Daemon *d;
    unsigned port;
    struct server_rl rl;
    struct server_route_metrics metrics[R_COUNT + 1];
    pthread_mutex_t gate_mu;       /* guards inflight, waiting */
    pthread_cond_t gate_cv;
    unsigned inflight, waiting;
    pthread_mutex_t drain_mu;      /* pairs with `active` for server_stop */
    pthread_cond_t drain_cv;
    atomic_int active;             /* requests between phase 1 and completion */
    atomic_bool stopping;
    bool stopped;
    pthread_mutex_t log_mu;        /* one log line at a time */
    struct server_guard guard;     /* Host/Origin/proxies (guard.c), read-only after start */
    struct server_conns conns;     /* open connections (conns.c) */
    bool conns_ready;
    atomic_size_t body_bytes;      /* request body bytes reserved by all requests */
    atomic_uint waiters;           /* ?wait=1 requests waiting for their job */
    atomic_ulong refused_host, refused_origin, refused_body_memory, refused_waiters,
        wait_abandoned;
};

enum body_kind { BODY_NONE, BODY_JSON, BODY_FORM };

struct request {
    struct server *s;
    int route;
    enum server__method method;
    double t0;
    char client[48];               /* the peer address as written in the access log */
    char client_key[64];           /* rate-limit key (guard.c): the client behind trusted
                                      proxies, IPv6 per /64 */
    struct server_conn *conn;      /* the connection's entry in s->conns (may be NULL) */
    char cors_origin[256];         /* echoed in Access-Control-Allow-Origin when non-empty */
    size_t body_reserved;          /* bytes reserved in s->body_bytes */
    bool waiter;                   /* holds one of s->waiters */
    bool wait_pending;             /* answer after waiting for wait_job, outside the gate */
    char wait_job[SERVER_JOB_ID_MAX];
    char path[256];                /* for the log: path only, never the query string */
    char method_name[16];
    char id[80];                   /* the {id} segment */
    int status;                    /* 0 until a response is queued */
    size_t bytes_out;
    bool responded;
    enum body_kind body_kind;
    size_t body_limit;
    size_t body_seen;
    struct ims_buf body;
    struct server_mp_form form;
    bool form_ready;
    enum ims_status body_st;
    struct ims_error body_err;
    struct server_arena arena;
};

/* ---- logging ---------------------------------------------------------------------- */

static void error_log(struct server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void error_log(struct server *s, const char *fmt, ...)
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

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char line[1024];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = '\0';
    error_log(cls, "libmicrohttpd: %s", line);
}

static void access_log(struct server *s, const struct request *r, double seconds)
{
    if (!s->o.access_log)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40], iso[48];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(iso, sizeof(iso), "%s.%03ldZ", when, ts.tv_nsec / 1000000);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:f}", "time", iso, "client", r->client,
                          "method", r->method_name, "path", r->path, "status", r->status,
                          "bytes", (json_int_t)r->bytes_out, "duration_ms",
                          round(seconds * 1e6) / 1e3);
    if (!o)
        return;
    char *line = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!line)
        return;
    pthread_mutex_lock(&s->log_mu);
    fprintf(s->o.access_log, "%s\n", line);
    fflush(s->o.access_log);
    pthread_mutex_unlock(&s->log_mu);
    free(line);
}

/* ---- responses -------------------------------------------------------------------------- */

/* Percent-decoding of paths and query arguments, in place, as
 * libmicrohttpd's default does, except that "%00" stays as it is: a decoded
 * NUL would cut the string short ("/api/v1/images/1%00x" would read as image
 * 1) where the request must instead be refused for what it says. */
static size_t unescape_no_nul(void *cls, struct MHD_Connection *c, char *val)
{
    (void)cls;
    (void)c;
    char *w = val;
    for (const char *r = val; *r;) {
        if (r[0] == '%' && isxdigit((unsigned char)r[1]) && isxdigit((unsigned char)r[2])) {
            int hi = isdigit((unsigned char)r[1]) ? r[1] - '0' : (tolower((unsigned char)r[1]) - 'a' + 10);
            int lo = isdigit((unsigned char)r[2]) ? r[2] - '0' : (tolower((unsigned char)r[2]) - 'a' + 10);
            int v = hi * 16 + lo;
            if (v != 0) {
                *w++ = (char)v;
                r += 3;
                continue;
            }
        }
        *w++ = *r++;
    }
    *w = '\0';
    return (size_t)(w - val);
}

/* The one place where statuses become HTTP codes. */
static int http_status_of(enum ims_status st);
int server__http_status(enum ims_status st) { return http_status_of(st); }
static int http_status_of(enum ims_status st)
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

struct hdr {
    const char *name, *value;
};

static enum MHD_Result queue(struct request *r, struct MHD_Connection *c, int status,
                             const void *body, size_t len, const char *ctype,
                             const struct hdr *extra, size_t n_extra)
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

static enum MHD_Result respond_json(struct request *r, struct MHD_Connection *c, int status,
                                    json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(7)) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] =
            "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"out of memory\"}}";
        return queue(r, c, 503, oom, sizeof(oom) - 1, "application/json", NULL, 0);
    }
    enum MHD_Result ret = queue(r, c, status, text, strlen(text), "application/json", NULL, 0);
    free(text);
    return ret;
}

/* {"error": {"code", "message"}} with the mapped status. Messages of
 * internal failures are logged and replaced, never shown. */
static enum MHD_Result respond_error_status(struct request *r, struct MHD_Connection *c,
                                            int status, enum ims_status st,
                                            const struct ims_error *err, const struct hdr *extra,
                                            size_t n_extra)
{
    const char *msg = ims_error_message(err, st);
    if (status == 500) {
        error_log(r->s, "%s %s: %s: %s", r->method_name, r->path, ims_status_name(st), msg);
        msg = "internal error (see the server's error log)";
    }
    json_t *o = json_pack("{s:{s:s, s:s}}", "error", "code", ims_status_name(st), "message", msg);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return MHD_NO;
    enum MHD_Result ret = queue(r, c, status, text, strlen(text), "application/json", extra,
                                n_extra);
    free(text);
    return ret;
}

static enum MHD_Result respond_error_h(struct request *r, struct MHD_Connection *c,
                                       enum ims_status st, const struct ims_error *err,
                                       const struct hdr *extra, size_t n_extra)
{
    return respond_error_status(r, c, http_status_of(st), st, err, extra, n_extra);
}

static enum MHD_Result respond_error(struct request *r, struct MHD_Connection *c,
                                     enum ims_status st, const struct ims_error *err)
{
    struct hdr h = {"Retry-After", "1"};
    bool retry = st == IMS_ERR_BUSY || st == IMS_ERR_NOMEM;
    return respond_error_h(r, c, st, err, retry ? &h : NULL, retry ? 1 : 0);
}

static enum MHD_Result respond_msg(struct request *r, struct MHD_Connection *c,
                                   enum ims_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result respond_msg(struct request *r, struct MHD_Connection *c,
                                   enum ims_status st, const char *fmt, ...)
{
    struct ims_error err;
    va_list ap;
    va_start(ap, fmt);
    ims_error_setv(&err, st, fmt, ap);
    va_end(ap);
    return respond_error(r, c, st, &err);
}

/* ---- admission gate ---------------------------------------------------------------------- */

static bool gate_enter(struct server *s)
{
    bool ok = false;
    pthread_mutex_lock(&s->gate_mu);
    if (s->inflight < s->o.max_inflight) {
        s->inflight++;
        ok = true;
    } else if (s->waiting < s->o.max_queued && !atomic_load(&s->stopping)) {
        struct timespec deadline;
        ims_deadline_after_ms(CLOCK_MONOTONIC, (long)s->o.queue_wait_ms, &deadline);
        s->waiting++;
        int rc = 0;
        while (s->inflight >= s->o.max_inflight && rc != ETIMEDOUT &&
               !atomic_load(&s->stopping))
            rc = pthread_cond_timedwait(&s->gate_cv, &s->gate_mu, &deadline);
        s->waiting--;
        if (s->inflight < s->o.max_inflight) {
            s->inflight++;
            ok = true;
        }
    }
    pthread_mutex_unlock(&s->gate_mu);
    return ok;
}

static void gate_leave(struct server *s)
{
    pthread_mutex_lock(&s->gate_mu);
    s->inflight--;
    pthread_cond_signal(&s->gate_cv);
    pthread_mutex_unlock(&s->gate_mu);
}

/* ---- JSON of rows, jobs, results ---------------------------------------------------------- */

static json_t *row_json(const struct server_row *row)
{
    char thumb[64];
    snprintf(thumb, sizeof(thumb), "/api/v1/images/%lld/thumb", (long long)row->id);
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "id", json_integer(row->id));
    json_object_set_new(o, "url", row->url ? json_string(row->url) : json_null());
    json_object_set_new(o, "width", json_integer(row->width));
    json_object_set_new(o, "height", json_integer(row->height));
    json_object_set_new(o, "added", json_integer(row->added_unix));
    json_object_set_new(o, "taken", row->has_taken ? json_integer(row->taken) : json_null());
    json_object_set_new(o, "format", row->format ? json_string(row->format) : json_null());
    json_object_set_new(o, "thumb", json_string(thumb));
    return o;
}

static json_t *job_json(const struct server_job *job)
{
    static const char *const states[] = {"queued", "running", "done", "failed"};
    json_t *errors = json_array();
    for (size_t i = 0; errors && i < job->n_errors; i++)
        json_array_append_new(errors, json_pack("{s:s?, s:s?, s:s?}", "url", job->errors[i].url,
                                                "code", job->errors[i].code, "error",
                                                job->errors[i].error));
    unsigned st = (unsigned)job->state < 4 ? (unsigned)job->state : 3;
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:o?}", "id", job->id, "state", states[st],
                     "total", (json_int_t)job->total, "done", (json_int_t)job->done, "failed",
                     (json_int_t)job->failed, "errors", errors);
}

/* ---- helpers for handlers ------------------------------------------------------------------ */

static bool media_is(const char *ctype, const char *media)
{
    size_t n = strlen(media);
    if (!ctype || strncasecmp(ctype, media, n) != 0)
        return false;
    char next = ctype[n];
    return next == '\0' || next == ';' || next == ' ' || next == '\t';
}

static enum ims_status parse_image_id(const char *s, int64_t *out, struct ims_error *err)
{
    long long v;
    enum ims_status st = server__parse_int(s, "image id", 1, INT64_MAX, &v, err);
    if (st == IMS_OK)
        *out = v;
    return st;
}


static bool etag_matches(struct MHD_Connection *c, const char *etag)
{
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
    return inm && (strstr(inm, etag) != NULL || strcmp(inm, "*") == 0);
}

static const char *csp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

static enum MHD_Result serve_asset(struct request *r, struct MHD_Connection *c, const char *path)
{
    const struct server_asset *a = server__asset_find(path);
    if (!a)
        return respond_msg(r, c, IMS_ERR_NOT_FOUND, "no such asset");
    char etag[24];
    snprintf(etag, sizeof(etag), "\"%016llx\"", (unsigned long long)ims_fnv1a64(a->data, a->len));
    struct hdr h[4] = {{"ETag", etag},
                       {"Cache-Control", "no-cache"},
                       {"Content-Security-Policy", csp},
                       {"X-Frame-Options", "DENY"}};
    if (etag_matches(c, etag))
        return queue(r, c, 304, "", 0, NULL, h, 2);
    return queue(r, c, 200, a->data, a->len, a->content_type, h, 4);
}

/* ---- handlers -------------------------------------------------------------------------------- */

static enum MHD_Result h_stats(struct request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    struct server_stats stats = {0};
    struct ims_error err = {{0}};
    enum ims_status st = s->be.stats(s->be.self, &r->arena, &stats, &err);
    if (st != IMS_OK)
        return respond_error(r, c, st, &err);
    json_t *o = json_pack("{s:I, s:i, s:s?, s:s?}", "images", (json_int_t)stats.images, "dim",
                          stats.dim, "model", stats.model, "index", stats.index);
    if (o && stats.extra_json) {
        json_error_t jerr;
        json_t *extra = json_loads(stats.extra_json, 0, &jerr);
        if (json_is_object(extra))
            json_object_update_missing(o, extra);
        else
            error_log(s, "stats: backend extra_json is not a JSON object");
        json_decref(extra);
    }
    return respond_json(r, c, 200, o);
}

static enum MHD_Result search_respond(struct request *r, struct MHD_Connection *c,
                                      const struct server_query *q)
{
    struct server *s = r->s;
    struct server_results res = {0};
    struct ims_error err = {{0}};
    double t0 = ims_now();
    enum ims_status st = s->be.search(s->be.self, q, &r->arena, &res, &err);
    double took = (ims_now() - t0) * 1e3;
    if (st != IMS_OK)
        return respond_error(r, c, st, &err);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < res.n; i++) {
        json_t *o = row_json(&res.items[i].row);
        if (o)
            json_object_set_new(o, "score", json_real(res.items[i].score));
        json_array_append_new(arr, o);
    }
    return respond_json(r, c, 200,
                        json_pack("{s:o?, s:f}", "results", arr, "took_ms", round(took * 1e3) / 1e3));
}

struct unknown_arg {
    char name[64];
    int found;
};

static enum MHD_Result find_unknown_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value)
{
    (void)kind;
    (void)value;
    static const char *const known[] = {"q",          "image_id",   "k",         "offset",
                                        "min_score",  "order",      "added_from", "added_to",
                                        "taken_from", "taken_to",   "min_width", "min_height",
                                        "format",     "orientation", "source_prefix",
                                        "ef",         "nprobe",     "rerank"};
    struct unknown_arg *u = cls;
    for (size_t i = 0; i < IMS_ARRAY_LEN(known); i++)
        if (!strcmp(key, known[i]))
            return MHD_YES;
    snprintf(u->name, sizeof(u->name), "%s", key);
    u->found = 1;
    return MHD_NO; /* stop at the first unknown one */
}

static enum MHD_Result h_search_get(struct request *r, struct MHD_Connection *c)
{
    /* like the JSON and form bodies, refuse what would be silently ignored
     * (a typo such as "limit=" would otherwise look like it worked) */
    struct unknown_arg u = {"", 0};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, find_unknown_arg, &u);
    if (u.found) {
        struct ims_error uerr;
        ims_error_set(&uerr, IMS_ERR_INVALID,
                      "unknown query parameter '%s' (known: q, image_id, k, offset, min_score, "
                      "order, added_from, added_to, taken_from, taken_to, min_width, "
                      "min_height, format, orientation, source_prefix, ef, nprobe, rerank)",
                      u.name);
        return respond_error(r, c, IMS_ERR_INVALID, &uerr);
    }
    struct server_query_args a = {
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "q"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "image_id"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "k"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "offset"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "min_score"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "order"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "added_from"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "added_to"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "taken_from"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "taken_to"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "min_width"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "min_height"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "orientation"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "source_prefix"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "ef"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "nprobe"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "rerank"),
    };
    struct server_query q;
    struct ims_error err = {{0}};
    enum ims_status st = server__query_from_args(&a, &r->arena, &q, &err);
    if (st != IMS_OK)
        return respond_error(r, c, st, &err);
    return search_respond(r, c, &q);
}

static enum MHD_Result h_search_post(struct request *r, struct MHD_Connection *c)
{
    struct server_query q;
    struct ims_error err = {{0}};
    enum ims_status st;
    if (r->body_kind == BODY_JSON)
        st = server__query_parse_json(r->body.data ? r->body.data : "", r->body.len, &r->arena,
                                      &q, &err);
    else
        st = server__query_from_form(&r->form, &r->arena, &q, &err);
    if (st != IMS_OK)
        return respond_error(r, c, st, &err);
    return search_respond(r, c, &q);
}

static enum MHD_Result job_respond(struct request *r, struct MHD_Connection *c, const char *id,
                                   int status)
{
    struct server *s = r->s;
    struct server_job job;
    memset(&job, 0, sizeof(job));
    struct ims_error err = {{0}};
    enum ims_status st = s->be.job_get(s->be.self, id, &r->arena, &job, &err);
    if (st != IMS_OK)
        return respond_error(r, c, st, &err);
    job.id[sizeof(job.id) - 1] = '\0';
    return respond_json(r, c, status, job_json(&job));
}

static enum MHD_Result h_images_json(struct request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    json_error_t jerr;
    enum MHD_Result ret;
    const char **urls = NULL;
    json_t *root = json_loadb(r->body.data ? r->body.data : "", r->body.len,
                              JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        ret = respond_msg(r, c, IMS_ERR_INVALID, "invalid JSON at line %d, column %d: %s",
                          jerr.line, jerr.column, jerr.text);
        goto out;
    }
    json_t *ju = json_object_get(root, "urls");
    if (!json_is_object(root) || json_object_size(root) != 1 || !json_is_array(ju)) {
        ret = respond_msg(r, c, IMS_ERR_INVALID,
                          "the body must be {\"urls\": [...]} and nothing else");
        goto out;
    }
    size_t n = json_array_size(ju);
    if (n == 0 || n > URLS_MAX) {
        ret = respond_msg(r, c, IMS_ERR_INVALID, "urls: must have 1..%d entries", URLS_MAX);
        goto out;
    }
    urls = server_arena_alloc(&r->arena, n * sizeof(*urls));
    if (!urls) {
        ret = respond_msg(r, c, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(ju, i);
        const char *u = json_string_value(v);
        size_t len = json_string_length(v);
        if (!u || len == 0 || len > SERVER_URL_MAX || memchr(u, '\0', len) ||
            (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)) {
            ret = respond_msg(r, c, IMS_ERR_INVALID,
                              "urls[%zu]: must be an http:// or https:// URL of 1..%d bytes", i,
                              SERVER_URL_MAX);
            goto out;
        }
        urls[i] = u;
    }
    const char *wait = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "wait");
    bool want_wait = wait && strcmp(wait, "0") != 0 && s->be.job_wait;
    if (want_wait) {
        /* Waiters are capped on their own (they wait outside the gate, see
         * wait_respond); refuse before a job is queued, not after. */
        unsigned w = atomic_load(&s->waiters);
        do {
            if (w >= s->o.max_waiters) {
                atomic_fetch_add(&s->refused_waiters, 1);
                ret = respond_msg(r, c, IMS_ERR_BUSY,
                                  "too many ?wait=1 requests waiting (limit %u); retry, or "
                                  "post without wait and poll the job",
                                  s->o.max_waiters);
                goto out;
            }
        } while (!atomic_compare_exchange_weak(&s->waiters, &w, w + 1));
        r->waiter = true;
    }
    char job_id[SERVER_JOB_ID_MAX] = "";
    struct ims_error err = {{0}};
    enum ims_status st = s->be.add_urls(s->be.self, urls, n, job_id, &err);
    if (st != IMS_OK) {
        ret = respond_error(r, c, st, &err);
        goto out;
    }
    job_id[SERVER_JOB_ID_MAX - 1] = '\0';
    if (want_wait) {
        /* answered by finish() once it has left the gate */
        memcpy(r->wait_job, job_id, sizeof(job_id));
        r->wait_pending = true;
        ret = MHD_YES;
        goto out;
    }
    ret = respond_json(r, c, 202, json_pack("{s:s}", "job", job_id));
out:
    json_decref(root);
    return ret;
}

static enum MHD_Result h_images_form(struct request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    size_t n = 0;
    for (size_t i = 0; i < r->form.n_fields; i++) {
        const struct server_mp_field *f = &r->form.fields[i];
        if (strcmp(f->info.name, "file") != 0)
            return respond_msg(r, c, IMS_ERR_INVALID,
                               "unknown form field \"%s\" (only \"file\" is accepted)",
                               f->info.name);
        if (f->data.len == 0)
            return respond_msg(r, c, IMS_ERR_INVALID, "file \"%s\" is empty", f->info.filename);
        n++;
    }
    if (n > s->o.max_files)
        return respond_msg(r, c, IMS_ERR_TOO_LARGE,
                           "%zu files in one upload; the limit is %zu (field \"file\")", n,
                           s->o.max_files);
    if (n == 0)
        return respond_msg(r, c, IMS_ERR_INVALID, "multipart body without a \"file\" field");
    struct server_file *files = server_arena_alloc(&r->arena, n * sizeof(*files));
    struct server_upload_item *items = server_arena_alloc(&r->arena, n * sizeof(*items));
    if (!files || !items)
        return respond_msg(r, c, IMS_ERR_NOMEM, "out of memory");
    memset(items, 0, n * sizeof(*items));
    for (size_t i = 0; i < n; i++) {
        const struct server_mp_field *f = &r->form.fields[i];
        files[i].bytes = (const unsigned char *)f->data.data;
        files[i].n_bytes = f->data.len;
        files[i].filename = f->info.has_filename ? f->info.filename : NULL;
        files[i].content_type = f->info.content_type[0] ? f->info.content_type : NULL;
        items[i].status = IMS_ERR_INTERNAL;
    }
    struct ims_error err = {{0}};
    enum ims_status st = s->be.upload(s->be.self, files, n, &r->arena, items, &err);
    if (st != IMS_OK)
        return respond_error(r, c, st, &err);
    json_t *rows = json_array(), *errors = json_array();
    size_t n_ok = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].status == IMS_OK) {
            json_array_append_new(rows, row_json(&items[i].row));
            n_ok++;
            continue;
        }
        items[i].message[sizeof(items[i].message) - 1] = '\0';
        bool internal = http_status_of(items[i].status) == 500;
        json_array_append_new(
            errors, json_pack("{s:s?, s:s, s:s}", "file", files[i].filename, "code",
                              ims_status_name(items[i].status), "message",
                              internal ? "internal error"
                              : items[i].message[0] ? items[i].message
                                                    : ims_strerror(items[i].status)));
    }
    if (n_ok == 0) {
        json_decref(rows);
        json_decref(errors);
        struct ims_error e;
        ims_error_set(&e, items[0].status, "file \"%s\": %s",
                      files[0].filename ? files[0].filename : "",
                      items[0].message[0] ? items[0].message : ims_strerror(items[0].status));
        return respond_error(r, c, items[0].status, &e);
    }
    return respond_json(r, c, 200, json_pack("{s:o, s:o}", "images", rows, "errors", errors));
}

static enum MHD_Result h_image_get(struct request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    int64_t id;
    struct ims_error err = {{0}};
    enum ims_status st = parse_image_id(r->id, &id, &err);
    struct server_row row = {0};
    if (st == IMS_OK)
        st = s->be.image_get(s->be.self, id, &r->arena, &row, &err);
    if (st != IMS_OK)
        return respond_error(r, c, st, &err);
    return respond_json(r, c, 200, row_json(&row));
}

static enum MHD_Result h_image_delete(struct request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    int64_t id;
    struct ims_error err = {{0}};
    enum ims_status st = parse_image_id(r->id, &id, &err);
    if (st == IMS_OK)
        st = s->be.image_delete(s->be.self, id, &err);
    if (st != IMS_OK)
        return respond_error(r, c, st, &err);
    return respond_json(r, c, 200, json_pack("{s:I}", "deleted", (json_int_t)id));
}

static enum MHD_Result h_thumb(struct request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    int64_t id;
    struct ims_error err = {{0}};
    struct ims_str jpeg = {0};
    enum ims_status st = parse_image_id(r->id, &id, &err);
    if (st == IMS_OK)
        st = s->be.image_thumb(s->be.self, id, &r->arena, &jpeg, &err);
    if (st != IMS_OK)
        return respond_error(r, c, st, &err);
    char etag[24];
    snprintf(etag, sizeof(etag), "\"%016llx\"", (unsigned long long)ims_fnv1a64(jpeg.ptr, jpeg.len));
    struct hdr h[2] = {{"ETag", etag}, {"Cache-Control", "public, max-age=86400"}};
    if (etag_matches(c, etag))
        return queue(r, c, 304, "", 0, NULL, h, 2);
    return queue(r, c, 200, jpeg.ptr, jpeg.len, "image/jpeg", h, 2);
}

static enum MHD_Result h_job(struct request *r, struct MHD_Connection *c)
{
    const char *id = r->id;
    for (const char *p = id; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            return respond_msg(r, c, IMS_ERR_INVALID, "job id: only letters, digits, - and _");
    if (strlen(id) >= SERVER_JOB_ID_MAX)
        return respond_msg(r, c, IMS_ERR_INVALID, "job id: too long");
    return job_respond(r, c, id, 200);
}

static size_t conns_open(struct server *s)
{
    pthread_mutex_lock(&s->conns.mu);
    size_t n = s->conns.n;
    pthread_mutex_unlock(&s->conns.mu);
    return n;
}

static enum MHD_Result h_metrics(struct request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    struct ims_buf b;
    ims_buf_init(&b, 4u << 20);
    enum ims_status st = ims_buf_printf(
        &b, "# HELP imgsearch_http_requests_total HTTP requests by route and status.\n"
            "# TYPE imgsearch_http_requests_total counter\n"
            "# HELP imgsearch_http_request_duration_seconds HTTP request latency by route.\n"
            "# TYPE imgsearch_http_request_duration_seconds histogram\n");
    for (int i = 0; i <= R_COUNT && st == IMS_OK; i++)
        st = server__metrics_render(&b, i < R_COUNT ? server__routes[i].pattern : "unmatched",
                                    &s->metrics[i]);
    pthread_mutex_lock(&s->gate_mu);
    unsigned inflight = s->inflight, waiting = s->waiting;
    pthread_mutex_unlock(&s->gate_mu);
    if (st == IMS_OK)
        st = ims_buf_printf(&b,
                            "# HELP imgsearch_http_inflight Backend calls running.\n"
                            "# TYPE imgsearch_http_inflight gauge\n"
                            "imgsearch_http_inflight %u\n"
                            "# HELP imgsearch_http_queue_waiting Requests waiting for a slot.\n"
                            "# TYPE imgsearch_http_queue_waiting gauge\n"
                            "imgsearch_http_queue_waiting %u\n"
                            "# HELP imgsearch_http_active_requests Requests being served.\n"
                            "# TYPE imgsearch_http_active_requests gauge\n"
                            "imgsearch_http_active_requests %d\n",
                            inflight, waiting, atomic_load(&s->active));
    if (st == IMS_OK)
        st = ims_buf_printf(
            &b,
            "# HELP imgsearch_http_job_waiters Requests waiting for their job (?wait=1).\n"
            "# TYPE imgsearch_http_job_waiters gauge\n"
            "imgsearch_http_job_waiters %u\n"
            "# HELP imgsearch_http_body_bytes Request body bytes held (budget reserved).\n"
            "# TYPE imgsearch_http_body_bytes gauge\n"
            "imgsearch_http_body_bytes %zu\n"
            "# HELP imgsearch_http_connections Open connections.\n"
            "# TYPE imgsearch_http_connections gauge\n"
            "imgsearch_http_connections %zu\n"
            "# HELP imgsearch_http_wait_abandoned_total ?wait=1 requests whose client hung up.\n"
            "# TYPE imgsearch_http_wait_abandoned_total counter\n"
            "imgsearch_http_wait_abandoned_total %lu\n"
            "# HELP imgsearch_http_rate_limit_overflow_total Requests charged to the shared "
            "bucket of new clients (rate-limit table full).\n"
            "# TYPE imgsearch_http_rate_limit_overflow_total counter\n"
            "imgsearch_http_rate_limit_overflow_total %lu\n"
            "# HELP imgsearch_http_refused_total Requests and connections refused by a "
            "hardening limit, by reason.\n"
            "# TYPE imgsearch_http_refused_total counter\n"
            "imgsearch_http_refused_total{reason=\"host\"} %lu\n"
            "imgsearch_http_refused_total{reason=\"origin\"} %lu\n"
            "imgsearch_http_refused_total{reason=\"body_memory\"} %lu\n"
            "imgsearch_http_refused_total{reason=\"waiters\"} %lu\n"
            "imgsearch_http_refused_total{reason=\"client_connections\"} %lu\n"
            "imgsearch_http_refused_total{reason=\"header_timeout\"} %lu\n"
            "imgsearch_http_refused_total{reason=\"body_rate\"} %lu\n",
            atomic_load(&s->waiters), atomic_load(&s->body_bytes), conns_open(s),
            atomic_load(&s->wait_abandoned), atomic_load(&s->rl.n_overflow),
            atomic_load(&s->refused_host), atomic_load(&s->refused_origin),
            atomic_load(&s->refused_body_memory), atomic_load(&s->refused_waiters),
            atomic_load(&s->conns.refused_per_client), atomic_load(&s->conns.killed_headers),
            atomic_load(&s->conns.killed_body));
    struct ims_error err = {{0}};
    if (st == IMS_OK && s->be.metrics) {
        st = s->be.metrics(s->be.self, &b, &err);
        if (st != IMS_OK) {
            error_log(s, "metrics: backend: %s", ims_error_message(&err, st));
            st = IMS_OK; /* the server's own series are still worth serving */
        }
    }
    enum MHD_Result ret;
    if (st != IMS_OK)
        ret = respond_msg(r, c, st, "cannot render metrics");
    else
        ret = queue(r, c, 200, b.data ? b.data : "", b.len, "text/plain; version=0.0.4", NULL, 0);
    ims_buf_fini(&b);
    return ret;
}

/* ---- compatibility routes (compat_immich.c, compat_clipback.c) -------------------------------- */

static enum MHD_Result h_compat(struct request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    struct server__compat_reply rep = {0};
    const char *index = s->o.clip_back_index ? s->o.clip_back_index : "imgsearch";
    if (r->route == R_PREDICT && r->body_kind != BODY_FORM) {
        static const char msg[] = "{\"detail\":\"POST /predict takes multipart/form-data\"}";
        return queue(r, c, 415, msg, sizeof(msg) - 1, "application/json", NULL, 0);
    }
    if (r->route == R_PREDICT)
        server__immich_predict(&s->be, &r->form, &r->arena, &rep);
    else if (r->route == R_KNN)
        server__clipback_knn(&s->be, index, r->body.data, r->body.len, &r->arena, &rep);
    else if (r->route == R_METADATA)
        server__clipback_metadata(&s->be, index, r->body.data, r->body.len, &r->arena, &rep);
    else
        server__clipback_indices(index, &r->arena, &rep);
    if (rep.log[0])
        error_log(s, "%s %s: %s", r->method_name, r->path, rep.log);
    struct hdr h[4];
    size_t n = 0;
    if (rep.ignored[0])
        h[n++] = (struct hdr){"X-Imgsearch-Ignored", rep.ignored};
    if (rep.capped[0])
        h[n++] = (struct hdr){"X-Imgsearch-Capped", rep.capped};
    if (route_compat(r->route) == SERVER_COMPAT_CLIP_BACK && r->cors_origin[0]) {
        /* clip-front runs on another origin and reads the answers. clip-back
         * itself answers CORS "*"; here the origin must be one allowed with
         * --cors-origin (the guard refuses other origins' POSTs, and the
         * common path echoes the allowed one), so no page the user happens
         * to visit can read the catalogue through these routes */
        h[n++] = (struct hdr){"Access-Control-Expose-Headers",
                              "X-Imgsearch-Ignored, X-Imgsearch-Capped"};
    }
    return queue(r, c, rep.status, rep.body ? rep.body : "", rep.len, rep.content_type, h, n);
}

/* ---- ?wait=1 -------------------------------------------------------------------------------- */

/* Whether the client has closed its end: the socket is readable and a
 * peek reads end-of-stream (or an error). MHD does not read the socket
 * while its thread is here, so peeking is safe. */
static bool client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL))
        return true;
    char b;
    ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* POST /api/v1/images?wait=1, after the job is queued: waits OUTSIDE the
 * admission gate (its slot was given back), so waiters never starve
 * searches; the waiter cap bounds them instead. With a thread per
 * connection the waiting thread is the connection's own, idle in
 * job_wait slices of JOB_WAIT_SLICE_MS; between slices it checks for
 * shutdown and for a client that hung up (then it stops at once and the
 * connection is closed). */
static enum MHD_Result wait_respond(struct request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    struct ims_error err = {{0}};
    double deadline = ims_now() + s->o.wait_max_ms / 1e3;
    enum ims_status st = IMS_ERR_TIMEOUT;
    server__conns_waiting(&s->conns, r->conn, true);
    while (st == IMS_ERR_TIMEOUT && !atomic_load(&s->stopping) && ims_now() < deadline) {
        if (client_gone(c)) {
            atomic_fetch_add(&s->wait_abandoned, 1);
            server__conns_waiting(&s->conns, r->conn, false);
            return MHD_NO;
        }
        st = s->be.job_wait(s->be.self, r->wait_job, JOB_WAIT_SLICE_MS, &err);
    }
    server__conns_waiting(&s->conns, r->conn, false);
    if (st == IMS_OK)
        return job_respond(r, c, r->wait_job, 200);
    if (st != IMS_ERR_TIMEOUT)
        return respond_error(r, c, st, &err);
    /* the wait cap passed, or shutdown: answer like without ?wait */
    return respond_json(r, c, 202, json_pack("{s:s}", "job", r->wait_job));
}

/* ---- dispatch ---------------------------------------------------------------------------------- */

static bool route_needs_backend(int route)
{
    return route == R_STATS || route == R_IMAGES || route == R_IMAGE || route == R_THUMB ||
           route == R_JOB || route == R_SEARCH || route == R_PREDICT || route == R_KNN ||
           route == R_METADATA;
}

static bool backend_has(const struct server_backend *be, int route, enum server__method m)
{
    switch (route) {
    case R_STATS:
        return be->stats;
    case R_IMAGES:
        return be->add_urls && be->upload && be->job_get;
    case R_IMAGE:
        return m == SM_DELETE ? be->image_delete != NULL : be->image_get != NULL;
    case R_THUMB:
        return be->image_thumb;
    case R_JOB:
        return be->job_get;
    case R_SEARCH:
        return be->search;
    case R_PREDICT:
        return be->embed_text && be->embed_image;
    case R_KNN:
        return be->search && be->embeddings && be->image_thumb;
    case R_METADATA:
        return be->image_get && be->image_thumb;
    default:
        return true;
    }
}

static enum MHD_Result dispatch(struct request *r, struct MHD_Connection *c)
{
    switch (r->route) {
    case R_INDEX:
        return serve_asset(r, c, "/");
    case R_APPJS:
        return serve_asset(r, c, "/app.js");
    case R_STYLE:
        return serve_asset(r, c, "/style.css");
    case R_OPENAPI:
        return serve_asset(r, c, "/api/v1/openapi.json");
    case R_HEALTHZ:
    case R_READYZ: {
        /* a node whose index is still catching up is alive but not serving:
         * both say so (load balancers probe /readyz, DESIGN.md) */
        const struct server_backend *be = &r->s->be;
        bool ready = !be->ready || be->ready(be->self);
        return respond_json(r, c, ready ? 200 : 503,
                            json_pack("{s:s}", "status", ready ? "ok" : "starting"));
    }
    case R_METRICS:
        return h_metrics(r, c);
    case R_STATS:
        return h_stats(r, c);
    case R_IMAGES:
        return r->body_kind == BODY_JSON ? h_images_json(r, c) : h_images_form(r, c);
    case R_IMAGE:
        return r->method == SM_DELETE ? h_image_delete(r, c) : h_image_get(r, c);
    case R_THUMB:
        return h_thumb(r, c);
    case R_JOB:
        return h_job(r, c);
    case R_SEARCH:
        return r->method == SM_POST ? h_search_post(r, c) : h_search_get(r, c);
    case R_PING:
        return queue(r, c, 200, "pong", 4, "text/plain; charset=utf-8", NULL, 0);
    case R_PREDICT:
    case R_KNN:
    case R_METADATA:
    case R_INDICES:
        return h_compat(r, c);
    }
    return respond_msg(r, c, IMS_ERR_NOT_FOUND, "no such route");
}

static enum MHD_Result finish(struct request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    server__conns_phase(&s->conns, r->conn, SERVER_CONN_BUSY, ims_now());
    if (r->body_st == IMS_OK && r->body_kind == BODY_FORM)
        r->body_st = server__form_finish(&r->form, &r->body_err);
    if (r->body_st != IMS_OK)
        return respond_error(r, c, r->body_st, &r->body_err);
    if (!route_needs_backend(r->route))
        return dispatch(r, c);
    if (!backend_has(&s->be, r->route, r->method))
        return respond_msg(r, c, IMS_ERR_INTERNAL, "backend operation not available");
    if (!gate_enter(s)) {
        struct hdr h = {"Retry-After", "1"};
        struct ims_error err;
        ims_error_set(&err, IMS_ERR_BUSY, "the server is at capacity, retry shortly");
        return respond_error_h(r, c, IMS_ERR_BUSY, &err, &h, 1);
    }
    enum MHD_Result ret = dispatch(r, c);
    gate_leave(s);
    if (ret == MHD_YES && r->wait_pending)
        ret = wait_respond(r, c);
    return ret;
}

/* ---- phase 1: headers -------------------------------------------------------------------------- */

static bool key_equal(const char *a, const char *b)
{
    /* Constant time in the length of the configured key `b`: every byte is
     * compared whatever the first difference, and a length mismatch only
     * shows in the result. */
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++)
        diff |= (unsigned char)((i < la ? (unsigned char)a[i] : 0u) ^ (unsigned char)b[i]);
    return diff == 0;
}

/* Collects every value of one request header, comma-joined in order;
 * keeps the rightmost `cap` bytes (the hops nearest to us) when longer. */
struct hdr_join {
    const char *name;
    char buf[2048];
    size_t len;
};

static enum MHD_Result hdr_join_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    struct hdr_join *j = cls;
    if (strcasecmp(key, j->name) != 0 || !value)
        return MHD_YES;
    size_t vn = strlen(value);
    if (vn + 2 >= sizeof(j->buf)) {
        value += vn - (sizeof(j->buf) - 3);
        vn = sizeof(j->buf) - 3;
    }
    size_t need = j->len + (j->len ? 1 : 0) + vn;
    if (need >= sizeof(j->buf)) {
        size_t drop = need - (sizeof(j->buf) - 1);
        memmove(j->buf, j->buf + drop, j->len - drop);
        j->len -= drop;
    }
    if (j->len)
        j->buf[j->len++] = ',';
    memcpy(j->buf + j->len, value, vn);
    j->len += vn;
    j->buf[j->len] = '\0';
    return MHD_YES;
}

/* The rate-limit key: the peer's address, or from a trusted proxy the
 * client it names (guard.c); IPv6 per /64. */
static void client_key_of(struct request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    struct server_addr a;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !server__addr_from_sa(ci->client_addr, &a)) {
        snprintf(r->client_key, sizeof(r->client_key), "%s", r->client);
        return;
    }
    if (s->guard.n_proxies && server__guard_is_proxy(&s->guard, &a)) {
        struct hdr_join fwd = {.name = "Forwarded"}, xff = {.name = "X-Forwarded-For"};
        MHD_get_connection_values(c, MHD_HEADER_KIND, hdr_join_cb, &fwd);
        MHD_get_connection_values(c, MHD_HEADER_KIND, hdr_join_cb, &xff);
        struct server_addr b;
        if (server__guard_forwarded_client(&s->guard, fwd.len ? fwd.buf : NULL,
                                           xff.len ? xff.buf : NULL, &b))
            a = b;
    }
    server__addr_key(&a, r->client_key, sizeof(r->client_key));
}

static enum MHD_Result refuse(struct request *r, struct MHD_Connection *c, int status,
                              atomic_ulong *counter, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static enum MHD_Result refuse(struct request *r, struct MHD_Connection *c, int status,
                              atomic_ulong *counter, const char *fmt, ...)
{
    struct ims_error err;
    va_list ap;
    va_start(ap, fmt);
    ims_error_setv(&err, IMS_ERR_REFUSED, fmt, ap);
    va_end(ap);
    atomic_fetch_add(counter, 1);
    return respond_error_status(r, c, status, IMS_ERR_REFUSED, &err, NULL, 0);
}

/* Host, Origin and CORS preflight (see guard.c). MHD_YES with nothing
 * queued: go on. */
static enum MHD_Result check_site(struct request *r, struct MHD_Connection *c, bool *done)
{
    struct server *s = r->s;
    *done = true;
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    if (!server__guard_host_ok(&s->guard, host))
        return refuse(r, c, 421, &s->refused_host,
                      "Host \"%.200s\" is not a name of this server (add it with "
                      "--public-host)",
                      host);
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    bool cors = server__guard_cors_ok(&s->guard, origin);
    if (cors)
        snprintf(r->cors_origin, sizeof(r->cors_origin), "%s", origin);
    if (!strcmp(r->method_name, "OPTIONS") && origin &&
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Method")) {
        if (!cors)
            return refuse(r, c, 403, &s->refused_origin,
                          "origin \"%.200s\" is not allowed (see --cors-origin)", origin);
        struct hdr h[3] = {{"Access-Control-Allow-Methods", "GET, HEAD, POST, DELETE"},
                           {"Access-Control-Allow-Headers", "Authorization, Content-Type"},
                           {"Access-Control-Max-Age", "600"}};
        return queue(r, c, 204, "", 0, NULL, h, 3);
    }
    /* (clip-back's routes too: clip-front's origin is allowed with
     * --cors-origin, see h_compat) */
    bool unsafe = !strcmp(r->method_name, "POST") || !strcmp(r->method_name, "PUT") ||
                  !strcmp(r->method_name, "DELETE") || !strcmp(r->method_name, "PATCH");
    if (unsafe &&
        !server__guard_origin_ok(&s->guard, host,
                                 origin, MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                                     "Sec-Fetch-Site")))
        return refuse(r, c, 403, &s->refused_origin,
                      "cross-site %s refused (%s \"%.200s\"; allow an origin with "
                      "--cors-origin)",
                      r->method_name, origin ? "Origin" : "Sec-Fetch-Site",
                      origin ? origin
                             : MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-Fetch-Site"));
    *done = false;
    return MHD_YES;
}

/* Reserves n more bytes of the global body budget for this request. */
static bool body_reserve(struct request *r, size_t n)
{
    struct server *s = r->s;
    size_t cur = atomic_load(&s->body_bytes);
    do {
        if (cur > s->o.body_budget_bytes || n > s->o.body_budget_bytes - cur)
            return false;
    } while (!atomic_compare_exchange_weak(&s->body_bytes, &cur, cur + n));
    r->body_reserved += n;
    return true;
}

/* A query parameter given twice is refused (400 naming it) rather than one
 * of its values silently winning; only parameters documented as
 * repeatable (none today besides the search filters' "tag") may repeat. */
struct repeat_scan {
    char names[32][64];
    size_t n;
    char dup[64];
};

static enum MHD_Result repeat_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    (void)value;
    struct repeat_scan *rs = cls;
    if (!strcmp(key, "tag"))
        return MHD_YES;
    for (size_t i = 0; i < rs->n; i++)
        if (!strncmp(rs->names[i], key, sizeof(rs->names[i]) - 1)) {
            snprintf(rs->dup, sizeof(rs->dup), "%s", key);
            return MHD_NO;
        }
    if (rs->n < IMS_ARRAY_LEN(rs->names))
        snprintf(rs->names[rs->n++], sizeof(rs->names[0]), "%s", key);
    return MHD_YES;
}

static enum MHD_Result begin(struct request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    if (atomic_load(&s->stopping))
        return respond_msg(r, c, IMS_ERR_BUSY, "the server is shutting down");
    bool done;
    enum MHD_Result site = check_site(r, c, &done);
    if (done)
        return site;
    client_key_of(r, c);
    if (r->route == R_NONE)
        return respond_msg(r, c, IMS_ERR_NOT_FOUND, "no such route: %s", r->path);
    struct repeat_scan rs;
    rs.n = 0;
    rs.dup[0] = '\0';
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, repeat_cb, &rs);
    if (rs.dup[0])
        return respond_msg(r, c, IMS_ERR_INVALID, "query parameter '%s' given more than once",
                           rs.dup);
    const struct server__route *rt = &server__routes[r->route];
    if (r->method == SM_COUNT || !rt->methods[r->method]) {
        char allow[64] = "";
        static const char *const names[SM_COUNT] = {"GET, HEAD", "POST", "DELETE"};
        for (int m = 0; m < SM_COUNT; m++)
            if (rt->methods[m])
                snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s",
                         allow[0] ? ", " : "", names[m]);
        struct hdr h = {"Allow", allow};
        struct ims_error err;
        ims_error_set(&err, IMS_ERR_METHOD_NOT_ALLOWED, "method %s not allowed on %s (allowed: %s)",
                      r->method_name, rt->pattern, allow);
        return respond_error_status(r, c, 405, IMS_ERR_METHOD_NOT_ALLOWED, &err, &h, 1);
    }
    unsigned compat = route_compat(r->route);
    if (compat && !(s->o.compat & compat))
        return respond_msg(r, c, IMS_ERR_NOT_FOUND, "%s is off: imgsearch serve %s turns it on",
                           r->path,
                           compat == SERVER_COMPAT_IMMICH ? "--immich-ml" : "--clip-back");
    if (!compat && s->o.compat_only && r->route != R_HEALTHZ && r->route != R_READYZ &&
        r->route != R_METRICS)
        return respond_msg(r, c, IMS_ERR_NOT_FOUND, "no such route on this listener: %s",
                           r->path);
    if (r->route != R_HEALTHZ && r->route != R_READYZ && r->route != R_METRICS) {
        int retry = 1;
        if (!server__rl_take(&s->rl, r->client_key, ims_now(), &retry)) {
            char ra[16];
            snprintf(ra, sizeof(ra), "%d", retry);
            struct hdr h = {"Retry-After", ra};
            struct ims_error err;
            ims_error_set(&err, IMS_ERR_RATE_LIMITED, "rate limit exceeded, retry in %d s",
                          retry);
            return respond_error_h(r, c, IMS_ERR_RATE_LIMITED, &err, &h, 1);
        }
    }
    bool write = (r->route == R_IMAGES && r->method == SM_POST) ||
                 (r->route == R_IMAGE && r->method == SM_DELETE);
    if (write && s->o.api_key) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        bool ok = auth && strncasecmp(auth, "Bearer ", 7) == 0 && key_equal(auth + 7, s->o.api_key);
        if (!ok) {
            struct hdr h = {"WWW-Authenticate", "Bearer realm=\"imgsearch\""};
            struct ims_error err;
            ims_error_set(&err, IMS_ERR_UNAUTHORIZED,
                          auth ? "wrong API key" : "this endpoint needs an API key "
                                                   "(Authorization: Bearer KEY)");
            return respond_error_h(r, c, IMS_ERR_UNAUTHORIZED, &err, &h, 1);
        }
    }
    if (r->method != SM_POST)
        return MHD_YES;
    const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (compat == SERVER_COMPAT_CLIP_BACK) {
        /* JSON whatever the Content-Type (clip-front sends text/plain); an
         * image query is base64 in the body, so it gets the upload limit */
        r->body_kind = BODY_JSON;
        r->body_limit = r->route == R_KNN ? s->o.upload_max_bytes : s->o.json_max_bytes;
        ims_buf_init(&r->body, r->body_limit);
    } else if (media_is(ctype, "application/json")) {
        r->body_kind = BODY_JSON;
        r->body_limit = s->o.json_max_bytes;
        ims_buf_init(&r->body, r->body_limit);
    } else if (media_is(ctype, "multipart/form-data")) {
        r->body_kind = BODY_FORM;
        r->body_limit = s->o.upload_max_bytes;
        /* A large body is not read when the gate would refuse it anyway
         * (every slot taken and the queue full). */
        pthread_mutex_lock(&s->gate_mu);
        bool full = s->inflight >= s->o.max_inflight && s->waiting >= s->o.max_queued;
        pthread_mutex_unlock(&s->gate_mu);
        if (full) {
            struct hdr h = {"Retry-After", "1"};
            struct ims_error err;
            ims_error_set(&err, IMS_ERR_BUSY, "the server is at capacity, retry shortly");
            return respond_error_h(r, c, IMS_ERR_BUSY, &err, &h, 1);
        }
    } else {
        return respond_msg(r, c, IMS_ERR_UNSUPPORTED,
                           "Content-Type must be application/json or multipart/form-data%s%s",
                           ctype ? ", not " : "", ctype ? ctype : "");
    }
    const char *clen = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (clen) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(clen, &end, 10);
        if (errno == 0 && end != clen && *end == '\0' && n > r->body_limit)
            return respond_msg(r, c, IMS_ERR_TOO_LARGE,
                               "request body of %llu bytes exceeds the limit of %zu bytes", n,
                               r->body_limit);
        /* A body that cannot fit in what is left of the budget now is
         * refused before a byte of it is read (after the route, rate limit,
         * auth and media checks above). Bytes are reserved as they arrive
         * (body_feed), not as announced: announcing 50 MiB and sending one
         * byte a second must not hold 50 MiB of everyone's budget. */
        size_t held = atomic_load(&s->body_bytes);
        if (errno == 0 && end != clen && *end == '\0' &&
            (held > s->o.body_budget_bytes || n > s->o.body_budget_bytes - held)) {
            atomic_fetch_add(&s->refused_body_memory, 1);
            return respond_msg(r, c, IMS_ERR_BUSY,
                               "the server holds too many request bodies in memory (limit %zu "
                               "bytes); retry shortly",
                               s->o.body_budget_bytes);
        }
    }
    if (r->body_kind == BODY_FORM) {
        struct ims_error err = {{0}};
        enum ims_status st = server__form_init(&r->form, ctype, r->body_limit,
                                               s->o.max_files + 16, &err);
        if (st != IMS_OK)
            return respond_error(r, c, st, &err);
        r->form_ready = true;
    }
    return MHD_YES;
}

/* ---- phase 2: body -------------------------------------------------------------------------------- */

static enum MHD_Result body_feed(struct request *r, const char *p, size_t n)
{
    r->body_seen += n;
    server__conns_body(&r->s->conns, r->conn, n);
    if (r->body_st == IMS_OK && r->body_kind != BODY_NONE) {
        /* reserve what is about to be held (see begin) */
        if (!body_reserve(r, n)) {
            atomic_fetch_add(&r->s->refused_body_memory, 1);
            r->body_st = IMS_ERR_BUSY;
            ims_error_set(&r->body_err, IMS_ERR_BUSY,
                          "the server holds too many request bodies in memory (limit %zu "
                          "bytes); retry shortly",
                          r->s->o.body_budget_bytes);
            ims_buf_fini(&r->body);
            if (r->form_ready) {
                server__form_fini(&r->form);
                r->form_ready = false;
            }
        }
    }
    if (r->body_st != IMS_OK) {
        /* Draining after a refusal: keep nothing, give up past DRAIN_MAX. */
        return r->body_seen > r->body_limit + DRAIN_MAX ? MHD_NO : MHD_YES;
    }
    if (r->body_kind == BODY_JSON) {
        enum ims_status st = ims_buf_append(&r->body, p, n);
        if (st != IMS_OK) {
            r->body_st = st;
            ims_error_set(&r->body_err, st, "request body exceeds the limit of %zu bytes",
                          r->body_limit);
            ims_buf_fini(&r->body);
        }
    } else if (r->body_kind == BODY_FORM) {
        r->body_st = server__form_feed(&r->form, p, n, &r->body_err);
        if (r->body_st != IMS_OK)
            server__form_fini(&r->form);
    } else {
        r->body_st = IMS_ERR_INVALID;
        ims_error_set(&r->body_err, IMS_ERR_INVALID, "%s %s takes no request body",
                      r->method_name, r->path);
    }
    return MHD_YES;
}

/* ---- MHD callbacks ----------------------------------------------------------------------------------- */

static void client_address(struct MHD_Connection *c, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, cap, "unknown");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)cap);
}

static struct request *request_new(struct server *s, struct MHD_Connection *c, const char *url,
                                   const char *method)
{
    struct request *r = ims_calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->s = s;
    r->t0 = ims_now();
    r->route = R_NONE;
    server__arena_init(&r->arena, ARENA_MAX_BYTES);
    ims_buf_init(&r->body, 0);
    snprintf(r->path, sizeof(r->path), "%s", url);
    snprintf(r->method_name, sizeof(r->method_name), "%s", method);
    client_address(c, r->client, sizeof(r->client));
    snprintf(r->client_key, sizeof(r->client_key), "%s", r->client);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->conn = ci ? ci->socket_context : NULL;
    server__conns_phase(&s->conns, r->conn, SERVER_CONN_BODY, r->t0);
    if (!strcmp(method, "GET") || !strcmp(method, "HEAD"))
        r->method = SM_GET;
    else if (!strcmp(method, "POST"))
        r->method = SM_POST;
    else if (!strcmp(method, "DELETE"))
        r->method = SM_DELETE;
    else
        r->method = SM_COUNT;
    for (int i = 0; i < R_COUNT; i++) {
        if (route_match(server__routes[i].pattern, url, r->id, sizeof(r->id))) {
            r->route = i;
            break;
        }
    }
    atomic_fetch_add(&s->active, 1);
    return r;
}

static void request_free(struct request *r)
{
    if (!r)
        return;
    struct server *s = r->s;
    ims_buf_fini(&r->body);
    if (r->form_ready)
        server__form_fini(&r->form);
    server__arena_fini(&r->arena);
    if (r->body_reserved)
        atomic_fetch_sub(&s->body_bytes, r->body_reserved);
    if (r->waiter)
        atomic_fetch_sub(&s->waiters, 1);
    ims_free(r);
    pthread_mutex_lock(&s->drain_mu);
    atomic_fetch_sub(&s->active, 1);
    pthread_cond_broadcast(&s->drain_cv);
    pthread_mutex_unlock(&s->drain_mu);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct server *s = cls;
    struct request *r = *con_cls;
    if (!r)
        return;
    double now = ims_now(), secs = now - r->t0;
    /* the next request's head is due within the header deadline; the entry
     * is fetched again (not r->conn): NULL once the connection is closed */
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (ci && ci->socket_context && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        server__conns_phase(&s->conns, ci->socket_context, SERVER_CONN_HEADERS, now);
    server__metrics_observe(&s->metrics[r->route], r->status, secs);
    access_log(s, r, secs);
    request_free(r);
    *con_cls = NULL;
}

/* MHD's accept policy: the per-client connection cap (conns.c). Trusted
 * proxies carry many clients and are exempt. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *sa, socklen_t len)
{
    (void)len;
    struct server *s = cls;
    struct server_addr a;
    if (!server__addr_from_sa(sa, &a) || server__guard_is_proxy(&s->guard, &a))
        return MHD_YES;
    char key[64];
    server__addr_key(&a, key, sizeof(key));
    return server__conns_accept_ok(&s->conns, key) ? MHD_YES : MHD_NO;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        struct server_addr a;
        char key[64] = "";
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        bool known = ci && server__addr_from_sa(ci->client_addr, &a);
        if (known)
            server__addr_key(&a, key, sizeof(key));
        const union MHD_ConnectionInfo *fi =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context =
            server__conns_add(&s->conns, key, fi ? fi->connect_fd : -1,
                              !known || server__guard_is_proxy(&s->guard, &a), ims_now());
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        server__conns_remove(&s->conns, *socket_context);
        *socket_context = NULL;
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct server *s = cls;
    struct request *r = *con_cls;
    if (!r) {
        r = request_new(s, c, url, method);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        return begin(r, c);
    }
    (void)version;
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->responded)
            return MHD_YES;
        return body_feed(r, upload_data, n);
    }
    if (r->responded)
        return MHD_YES;
    return finish(r, c);
}

/* ---- options and lifecycle -------------------------------------------------------------------------- */

void server_options_init(struct server_options *o)
{
    memset(o, 0, sizeof(*o));
    o->host = "127.0.0.1";
    o->port = 8080;
    o->n_threads = 4;
    o->max_inflight = 0; /* resolved at start: 32 per connection threads, n_threads for the pool */
    o->max_queued = 64;
    o->queue_wait_ms = 2000;
    o->max_connections = 256;
    o->connection_timeout_s = 30;
    o->json_max_bytes = 1u << 20;
    o->upload_max_bytes = 50u << 20;
    o->max_files = 64;
    o->rate_per_s = 50.0;
    o->rate_burst = 100.0;
    o->wait_max_ms = 120000;
    o->drain_ms = 10000;
    o->max_waiters = 128;
    o->body_budget_bytes = 256u << 20;
    o->header_timeout_ms = 10000;
    o->body_min_rate = 1024;
    o->max_conns_per_client = 32;
}

void server_options_fini(struct server_options *o)
{
    if (!o)
        return;
    if (o->api_key) {
        /* Wipe the secret before the memory is reused. */
        volatile char *p = o->api_key;
        while (*p)
            *p++ = '\0';
    }
    ims_free(o->api_key);
    o->api_key = NULL;
}

enum ims_status server_options_load_api_key(struct server_options *o, const char *file,
                                            struct ims_error *err)
{
    char *data = NULL;
    size_t len = 0;
    const char *src;
    if (file) {
        enum ims_status st = ims_file_read(file, 4096, &data, &len, err);
        if (st != IMS_OK) {
            ims_error_prefix(err, "API key file");
            return st;
        }
        src = data;
    } else {
        src = getenv("IMGSEARCH_API_KEY");
        if (!src || !*src)
            return IMS_OK;
        len = strlen(src);
    }
    while (len && isspace((unsigned char)src[len - 1]))
        len--;
    while (len && isspace((unsigned char)*src)) {
        src++;
        len--;
    }
    enum ims_status st = IMS_OK;
    if (len == 0) {
        st = ims_error_set(err, IMS_ERR_INVALID, "the API key is empty");
    } else if (memchr(src, '\0', len) || memchr(src, '\n', len)) {
        st = ims_error_set(err, IMS_ERR_INVALID, "the API key must be one line");
    } else {
        char *key = ims_strndup(src, len);
        if (!key) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        } else {
            server_options_fini(o);
            o->api_key = key;
        }
    }
    ims_free(data);
    return st;
}

enum ims_status server_start(const struct server_options *o, const struct server_backend *be,
                             struct server **out, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct server *s = ims_calloc(1, sizeof(*s));
    bool rl_ready = false, guard_ready = false;
    if (!s)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    s->o = *o;
    s->o.api_key = NULL;
    s->be = *be;
    if (o->api_key && !(s->o.api_key = ims_strdup(o->api_key))) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (s->o.n_threads == 0)
        s->o.n_threads = 1;
    if (s->o.max_inflight == 0)
        s->o.max_inflight = s->o.use_pool ? s->o.n_threads : SERVER_DEFAULT_INFLIGHT;
    if (s->o.json_max_bytes == 0 || s->o.upload_max_bytes == 0 || s->o.max_files == 0) {
        st = ims_error_set(err, IMS_ERR_INVALID, "server limits must be positive");
        goto out;
    }
    if (s->o.rate_per_s < 0 || !isfinite(s->o.rate_per_s) || !isfinite(s->o.rate_burst)) {
        st = ims_error_set(err, IMS_ERR_INVALID, "rate limit must be a finite number >= 0");
        goto out;
    }
    if (s->o.port > 65535) {
        st = ims_error_set(err, IMS_ERR_INVALID, "port %u out of range", s->o.port);
        goto out;
    }
    if ((st = server__rl_init(&s->rl, s->o.rate_per_s, s->o.rate_burst)) != IMS_OK) {
        st = ims_error_set(err, st, "out of memory");
        goto out;
    }
    rl_ready = true;
    if (s->o.body_budget_bytes == 0) {
        st = ims_error_set(err, IMS_ERR_INVALID, "the body memory budget must be positive");
        goto out;
    }
    if ((st = server__guard_init(&s->guard, &s->o, err)) != IMS_OK)
        goto out;
    guard_ready = true;
    /* the copied options must not point at the caller's arrays */
    s->o.public_hosts = s->o.cors_origins = s->o.trusted_proxies = NULL;
    if ((st = server__conns_init(&s->conns, s->o.max_conns_per_client, s->o.header_timeout_ms,
                                 s->o.body_min_rate, true)) != IMS_OK) {
        st = ims_error_set(err, st, "cannot start the connection watchdog");
        goto out;
    }
    s->conns_ready = true;

    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    const struct sockaddr *sa;
    /* See DESIGN: blocking handlers need a thread per connection unless the
     * caller opts into the epoll pool. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     (s->o.use_pool ? MHD_USE_EPOLL : MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL);
    const char *host = s->o.host ? s->o.host : "127.0.0.1";
    memset(&sin, 0, sizeof(sin));
    memset(&sin6, 0, sizeof(sin6));
    if (inet_pton(AF_INET, host, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)s->o.port);
        sa = (const struct sockaddr *)&sin;
    } else if (inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)s->o.port);
        sa = (const struct sockaddr *)&sin6;
        flags |= MHD_USE_IPv6;
    } else {
        st = ims_error_set(err, IMS_ERR_INVALID,
                           "host \"%s\" is not an IPv4 or IPv6 address", host);
        goto out;
    }

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->gate_mu, NULL);
    pthread_cond_init(&s->gate_cv, &ca);
    pthread_mutex_init(&s->drain_mu, NULL);
    pthread_cond_init(&s->drain_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->log_mu, NULL);

    s->d = MHD_start_daemon(
        flags, (uint16_t)s->o.port, on_accept, s, on_request, s, MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)(s->o.use_pool ? s->o.n_threads : 0),
        MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)(s->o.max_connections ? s->o.max_connections : 256),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)s->o.connection_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, s,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape_no_nul, s, MHD_OPTION_END);
    if (!s->d) {
        st = ims_error_set(err, IMS_ERR_IO, "cannot listen on %s port %u: %s", host, s->o.port,
                           errno ? strerror(errno) : "libmicrohttpd refused the options");
        pthread_mutex_destroy(&s->gate_mu);
        pthread_cond_destroy(&s->gate_cv);
        pthread_mutex_destroy(&s->drain_mu);
        pthread_cond_destroy(&s->drain_cv);
        pthread_mutex_destroy(&s->log_mu);
        goto out;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : s->o.port;
    *out = s;
    s = NULL;
out:
    if (s) {
        if (s->conns_ready)
            server__conns_fini(&s->conns);
        if (guard_ready)
            server__guard_fini(&s->guard);
        if (rl_ready)
            server__rl_fini(&s->rl);
        ims_free(s->o.api_key);
        ims_free(s);
    }
    return st;
}

unsigned server_port(const struct server *s) { return s->port; }

void server_stop(struct server *s)
{
    if (!s || s->stopped)
        return;
    atomic_store(&s->stopping, true);
    pthread_mutex_lock(&s->gate_mu);
    pthread_cond_broadcast(&s->gate_cv); /* queued requests give up now */
    pthread_mutex_unlock(&s->gate_mu);
    /* Stop listening now (new clients are refused at once, not left in the
     * backlog), but keep the descriptor until MHD has stopped: its threads
     * may still be taking the socket out of their epoll sets, and a closed
     * (or reused) number there is a race (seen by TSan in epoll mode). */
    MHD_socket fd = MHD_quiesce_daemon(s->d);
    if (fd != MHD_INVALID_SOCKET)
        shutdown(fd, SHUT_RDWR);
    struct timespec deadline;
    ims_deadline_after_ms(CLOCK_MONOTONIC, (long)s->o.drain_ms, &deadline);
    pthread_mutex_lock(&s->drain_mu);
    int rc = 0;
    while (atomic_load(&s->active) > 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&s->drain_cv, &s->drain_mu, &deadline);
    pthread_mutex_unlock(&s->drain_mu);
    if (rc == ETIMEDOUT)
        error_log(s, "shutdown: %d request(s) still running after %u ms",
                  atomic_load(&s->active), s->o.drain_ms);
    MHD_stop_daemon(s->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    s->d = NULL;
    s->stopped = true;
}

void server_free(struct server *s)
{
    if (!s)
        return;
    server_stop(s);
    server__conns_fini(&s->conns);
    server__guard_fini(&s->guard);
    server__rl_fini(&s->rl);
    pthread_mutex_destroy(&s->gate_mu);
    pthread_cond_destroy(&s->gate_cv);
    pthread_mutex_destroy(&s->drain_mu);
    pthread_cond_destroy(&s->drain_cv);
    pthread_mutex_destroy(&s->log_mu);
    if (s->o.api_key) {
        volatile char *p = s->o.api_key;
        while (*p)
            *p++ = '\0';
    }
    ims_free(s->o.api_key);
    ims_free(s);
}
