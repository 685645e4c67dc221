/* SPDX-License-Identifier: MIT */
/*
 * server.c: the HTTP server's route table and request path: routing,
 * request limits, authentication, rate limiting, admission control and
 * dispatch to the handlers. Beside it (server_http.h names them):
 * server_daemon.c starts, stops and drains the daemon and follows the
 * connections, server_respond.c writes responses and logs, routes_api.c
 * holds imgsearch's own API handlers, compat_*.c the compatibility ones.
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
 * Per-request state (struct server_request) lives from phase 1 to MHD's
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
 * and waits for it outside (server__wait_respond), capped by max_waiters, so slow
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

#define ARENA_MAX_BYTES (256u * 1024 * 1024)
#define DRAIN_MAX (16u * 1024 * 1024)

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
_Static_assert(R_COUNT + 1 <= SERVER__ROUTE_SLOTS, "more routes than metric slots");

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

/* ---- compatibility routes (compat_immich.c, compat_clipback.c) -------------------------------- */

static enum MHD_Result h_compat(struct server_request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    struct server__compat_reply rep = {0};
    const char *index = s->o.clip_back_index ? s->o.clip_back_index : "imgsearch";
    if (r->route == R_PREDICT && r->body_kind != BODY_FORM) {
        static const char msg[] = "{\"detail\":\"POST /predict takes multipart/form-data\"}";
        return server__queue(r, c, 415, msg, sizeof(msg) - 1, "application/json", NULL, 0);
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
        server__error_log(s, "%s %s: %s", r->method_name, r->path, rep.log);
    struct server_hdr h[4];
    size_t n = 0;
    if (rep.ignored[0])
        h[n++] = (struct server_hdr){"X-Imgsearch-Ignored", rep.ignored};
    if (rep.capped[0])
        h[n++] = (struct server_hdr){"X-Imgsearch-Capped", rep.capped};
    if (route_compat(r->route) == SERVER_COMPAT_CLIP_BACK && r->cors_origin[0]) {
        /* clip-front runs on another origin and reads the answers. clip-back
         * itself answers CORS "*"; here the origin must be one allowed with
         * --cors-origin (the guard refuses other origins' POSTs, and the
         * common path echoes the allowed one), so no page the user happens
         * to visit can read the catalogue through these routes */
        h[n++] = (struct server_hdr){"Access-Control-Expose-Headers",
                              "X-Imgsearch-Ignored, X-Imgsearch-Capped"};
    }
    return server__queue(r, c, rep.status, rep.body ? rep.body : "", rep.len, rep.content_type, h, n);
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

static enum MHD_Result dispatch(struct server_request *r, struct MHD_Connection *c)
{
    switch (r->route) {
    case R_INDEX:
        return server__serve_asset(r, c, "/");
    case R_APPJS:
        return server__serve_asset(r, c, "/app.js");
    case R_STYLE:
        return server__serve_asset(r, c, "/style.css");
    case R_OPENAPI:
        return server__serve_asset(r, c, "/api/v1/openapi.json");
    case R_HEALTHZ:
    case R_READYZ: {
        /* a node whose index is still catching up is alive but not serving:
         * both say so (load balancers probe /readyz, DESIGN.md) */
        const struct server_backend *be = &r->s->be;
        bool ready = !be->ready || be->ready(be->self);
        return server__respond_json(r, c, ready ? 200 : 503,
                            json_pack("{s:s}", "status", ready ? "ok" : "starting"));
    }
    case R_METRICS:
        return server__h_metrics(r, c);
    case R_STATS:
        return server__h_stats(r, c);
    case R_IMAGES:
        return r->body_kind == BODY_JSON ? server__h_images_json(r, c) : server__h_images_form(r, c);
    case R_IMAGE:
        return r->method == SM_DELETE ? server__h_image_delete(r, c) : server__h_image_get(r, c);
    case R_THUMB:
        return server__h_thumb(r, c);
    case R_JOB:
        return server__h_job(r, c);
    case R_SEARCH:
        return r->method == SM_POST ? server__h_search_post(r, c) : server__h_search_get(r, c);
    case R_PING:
        return server__queue(r, c, 200, "pong", 4, "text/plain; charset=utf-8", NULL, 0);
    case R_PREDICT:
    case R_KNN:
    case R_METADATA:
    case R_INDICES:
        return h_compat(r, c);
    }
    return server__respond_msg(r, c, IMS_ERR_NOT_FOUND, "no such route");
}

static enum MHD_Result finish(struct server_request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    server__conns_phase(&s->conns, r->conn, SERVER_CONN_BUSY, ims_now());
    if (r->body_st == IMS_OK && r->body_kind == BODY_FORM)
        r->body_st = server__form_finish(&r->form, &r->body_err);
    if (r->body_st != IMS_OK)
        return server__respond_error(r, c, r->body_st, &r->body_err);
    if (!route_needs_backend(r->route))
        return dispatch(r, c);
    if (!backend_has(&s->be, r->route, r->method))
        return server__respond_msg(r, c, IMS_ERR_INTERNAL, "backend operation not available");
    if (!gate_enter(s)) {
        struct server_hdr h = {"Retry-After", "1"};
        struct ims_error err;
        ims_error_set(&err, IMS_ERR_BUSY, "the server is at capacity, retry shortly");
        return server__respond_error_h(r, c, IMS_ERR_BUSY, &err, &h, 1);
    }
    enum MHD_Result ret = dispatch(r, c);
    gate_leave(s);
    if (ret == MHD_YES && r->wait_pending)
        ret = server__wait_respond(r, c);
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
static void client_key_of(struct server_request *r, struct MHD_Connection *c)
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

static enum MHD_Result refuse(struct server_request *r, struct MHD_Connection *c, int status,
                              atomic_ulong *counter, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static enum MHD_Result refuse(struct server_request *r, struct MHD_Connection *c, int status,
                              atomic_ulong *counter, const char *fmt, ...)
{
    struct ims_error err;
    va_list ap;
    va_start(ap, fmt);
    ims_error_setv(&err, IMS_ERR_REFUSED, fmt, ap);
    va_end(ap);
    atomic_fetch_add(counter, 1);
    return server__respond_error_status(r, c, status, IMS_ERR_REFUSED, &err, NULL, 0);
}

/* Host, Origin and CORS preflight (see guard.c). MHD_YES with nothing
 * queued: go on. */
static enum MHD_Result check_site(struct server_request *r, struct MHD_Connection *c, bool *done)
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
        struct server_hdr h[3] = {{"Access-Control-Allow-Methods", "GET, HEAD, POST, DELETE"},
                           {"Access-Control-Allow-Headers", "Authorization, Content-Type"},
                           {"Access-Control-Max-Age", "600"}};
        return server__queue(r, c, 204, "", 0, NULL, h, 3);
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
static bool body_reserve(struct server_request *r, size_t n)
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

static enum MHD_Result begin(struct server_request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    if (atomic_load(&s->stopping))
        return server__respond_msg(r, c, IMS_ERR_BUSY, "the server is shutting down");
    bool done;
    enum MHD_Result site = check_site(r, c, &done);
    if (done)
        return site;
    client_key_of(r, c);
    if (r->route == R_NONE)
        return server__respond_msg(r, c, IMS_ERR_NOT_FOUND, "no such route: %s", r->path);
    struct repeat_scan rs;
    rs.n = 0;
    rs.dup[0] = '\0';
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, repeat_cb, &rs);
    if (rs.dup[0])
        return server__respond_msg(r, c, IMS_ERR_INVALID, "query parameter '%s' given more than once",
                           rs.dup);
    const struct server__route *rt = &server__routes[r->route];
    if (r->method == SM_COUNT || !rt->methods[r->method]) {
        char allow[64] = "";
        static const char *const names[SM_COUNT] = {"GET, HEAD", "POST", "DELETE"};
        for (int m = 0; m < SM_COUNT; m++)
            if (rt->methods[m])
                snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s",
                         allow[0] ? ", " : "", names[m]);
        struct server_hdr h = {"Allow", allow};
        struct ims_error err;
        ims_error_set(&err, IMS_ERR_METHOD_NOT_ALLOWED, "method %s not allowed on %s (allowed: %s)",
                      r->method_name, rt->pattern, allow);
        return server__respond_error_status(r, c, 405, IMS_ERR_METHOD_NOT_ALLOWED, &err, &h, 1);
    }
    unsigned compat = route_compat(r->route);
    if (compat && !(s->o.compat & compat))
        return server__respond_msg(r, c, IMS_ERR_NOT_FOUND, "%s is off: imgsearch serve %s turns it on",
                           r->path,
                           compat == SERVER_COMPAT_IMMICH ? "--immich-ml" : "--clip-back");
    if (!compat && s->o.compat_only && r->route != R_HEALTHZ && r->route != R_READYZ &&
        r->route != R_METRICS)
        return server__respond_msg(r, c, IMS_ERR_NOT_FOUND, "no such route on this listener: %s",
                           r->path);
    if (r->route != R_HEALTHZ && r->route != R_READYZ && r->route != R_METRICS) {
        int retry = 1;
        if (!server__rl_take(&s->rl, r->client_key, ims_now(), &retry)) {
            char ra[16];
            snprintf(ra, sizeof(ra), "%d", retry);
            struct server_hdr h = {"Retry-After", ra};
            struct ims_error err;
            ims_error_set(&err, IMS_ERR_RATE_LIMITED, "rate limit exceeded, retry in %d s",
                          retry);
            return server__respond_error_h(r, c, IMS_ERR_RATE_LIMITED, &err, &h, 1);
        }
    }
    bool write = (r->route == R_IMAGES && r->method == SM_POST) ||
                 (r->route == R_IMAGE && r->method == SM_DELETE);
    if (write && s->o.api_key) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        bool ok = auth && strncasecmp(auth, "Bearer ", 7) == 0 && key_equal(auth + 7, s->o.api_key);
        if (!ok) {
            struct server_hdr h = {"WWW-Authenticate", "Bearer realm=\"imgsearch\""};
            struct ims_error err;
            ims_error_set(&err, IMS_ERR_UNAUTHORIZED,
                          auth ? "wrong API key" : "this endpoint needs an API key "
                                                   "(Authorization: Bearer KEY)");
            return server__respond_error_h(r, c, IMS_ERR_UNAUTHORIZED, &err, &h, 1);
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
    } else if (server__media_is(ctype, "application/json")) {
        r->body_kind = BODY_JSON;
        r->body_limit = s->o.json_max_bytes;
        ims_buf_init(&r->body, r->body_limit);
    } else if (server__media_is(ctype, "multipart/form-data")) {
        r->body_kind = BODY_FORM;
        r->body_limit = s->o.upload_max_bytes;
        /* A large body is not read when the gate would refuse it anyway
         * (every slot taken and the queue full). */
        pthread_mutex_lock(&s->gate_mu);
        bool full = s->inflight >= s->o.max_inflight && s->waiting >= s->o.max_queued;
        pthread_mutex_unlock(&s->gate_mu);
        if (full) {
            struct server_hdr h = {"Retry-After", "1"};
            struct ims_error err;
            ims_error_set(&err, IMS_ERR_BUSY, "the server is at capacity, retry shortly");
            return server__respond_error_h(r, c, IMS_ERR_BUSY, &err, &h, 1);
        }
    } else {
        return server__respond_msg(r, c, IMS_ERR_UNSUPPORTED,
                           "Content-Type must be application/json or multipart/form-data%s%s",
                           ctype ? ", not " : "", ctype ? ctype : "");
    }
    const char *clen = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (clen) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(clen, &end, 10);
        if (errno == 0 && end != clen && *end == '\0' && n > r->body_limit)
            return server__respond_msg(r, c, IMS_ERR_TOO_LARGE,
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
            return server__respond_msg(r, c, IMS_ERR_BUSY,
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
            return server__respond_error(r, c, st, &err);
        r->form_ready = true;
    }
    return MHD_YES;
}

/* ---- phase 2: body -------------------------------------------------------------------------------- */

static enum MHD_Result body_feed(struct server_request *r, const char *p, size_t n)
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

/* ---- request lifetime (MHD access handler) ------------------------------------------------------------ */

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

static struct server_request *request_new(struct server *s, struct MHD_Connection *c, const char *url,
                                   const char *method)
{
    struct server_request *r = ims_calloc(1, sizeof(*r));
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

void server__request_free(struct server_request *r)
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

enum MHD_Result server__on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct server *s = cls;
    struct server_request *r = *con_cls;
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
