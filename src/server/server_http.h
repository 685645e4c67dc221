/* SPDX-License-Identifier: MIT */
/*
 * server_http.h: the state the HTTP files of the server module share:
 * struct server, one request's state (struct server_request) and what the
 * request path, the routes and the daemon call of each other.
 *
 *   server.c          route table, dispatch, the request path (headers,
 *                     body, end: limits, auth, gate), the DESIGN block
 *   server_daemon.c   options, start/stop/drain, connection callbacks
 *   server_respond.c  responses, status -> HTTP mapping, error log, assets
 *   routes_api.c      imgsearch's own API handlers
 *
 * Unlike server_int.h this includes microhttpd.h and jansson.h: the parser
 * files (and their fuzz harnesses) never include it.
 */
#ifndef IMS_SERVER_HTTP_H
#define IMS_SERVER_HTTP_H

#include "server_int.h"

#include <jansson.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdbool.h>

/* Per-route metric slots in struct server: every route of server.c's table
 * plus one for unmatched requests (server.c checks that they fit). */
#define SERVER__ROUTE_SLOTS 48

struct server {
    struct server_options o;       /* copy; o.api_key owned */
    struct server_backend be;
    struct MHD_Daemon *d;
    unsigned port;
    struct server_rl rl;
    struct server_route_metrics metrics[SERVER__ROUTE_SLOTS]; /* by route; [n_routes]: unmatched */
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

struct server_request {
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

struct server_hdr {
    const char *name, *value;
};


/* ---- server_respond.c ------------------------------------------------------- */

/* One line in the error log (or through ims_log when there is none). */
void server__error_log(struct server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Queues `body` (copied) with the common headers and `extra`; records the
 * status and size on r for the access log. */
enum MHD_Result server__queue(struct server_request *r, struct MHD_Connection *c, int status,
                              const void *body, size_t len, const char *ctype,
                              const struct server_hdr *extra, size_t n_extra);
/* Serialises and releases `body` (NULL: 503 out of memory). */
enum MHD_Result server__respond_json(struct server_request *r, struct MHD_Connection *c, int status,
                                     json_t *body);
/* {"error": {"code", "message"}} with `status`; a 500's message is logged
 * and replaced. */
enum MHD_Result server__respond_error_status(struct server_request *r, struct MHD_Connection *c,
                                             int status, enum ims_status st,
                                             const struct ims_error *err,
                                             const struct server_hdr *extra, size_t n_extra);
/* The same with the mapped status (server__http_status). */
enum MHD_Result server__respond_error_h(struct server_request *r, struct MHD_Connection *c,
                                        enum ims_status st, const struct ims_error *err,
                                        const struct server_hdr *extra, size_t n_extra);
/* The same, with Retry-After: 1 for BUSY and NOMEM. */
enum MHD_Result server__respond_error(struct server_request *r, struct MHD_Connection *c,
                                      enum ims_status st, const struct ims_error *err);
enum MHD_Result server__respond_msg(struct server_request *r, struct MHD_Connection *c,
                                    enum ims_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Whether a Content-Type value is `media` (parameters ignored). */
bool server__media_is(const char *ctype, const char *media);
/* Whether If-None-Match names `etag` (or is "*"). */
bool server__etag_matches(struct MHD_Connection *c, const char *etag);
/* An embedded asset (web page, script, style, openapi) with its ETag. */
enum MHD_Result server__serve_asset(struct server_request *r, struct MHD_Connection *c,
                                    const char *path);

/* ---- routes_api.c: the handlers server.c's dispatch calls -------------------- */

enum MHD_Result server__h_stats(struct server_request *r, struct MHD_Connection *c);
enum MHD_Result server__h_search_get(struct server_request *r, struct MHD_Connection *c);
enum MHD_Result server__h_search_post(struct server_request *r, struct MHD_Connection *c);
enum MHD_Result server__h_images_json(struct server_request *r, struct MHD_Connection *c);
enum MHD_Result server__h_images_form(struct server_request *r, struct MHD_Connection *c);
enum MHD_Result server__h_image_get(struct server_request *r, struct MHD_Connection *c);
enum MHD_Result server__h_image_delete(struct server_request *r, struct MHD_Connection *c);
enum MHD_Result server__h_thumb(struct server_request *r, struct MHD_Connection *c);
enum MHD_Result server__h_job(struct server_request *r, struct MHD_Connection *c);
enum MHD_Result server__h_metrics(struct server_request *r, struct MHD_Connection *c);
/* POST /api/v1/images?wait=1, after the gate: waits for r->wait_job in
 * slices (giving up when the client hangs up or the server stops), then
 * answers with the job. */
enum MHD_Result server__wait_respond(struct server_request *r, struct MHD_Connection *c);

/* ---- server.c: the request path, for the daemon -------------------------------- */

/* MHD's access handler (all three phases of a request). */
enum MHD_Result server__on_request(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *version,
                                   const char *upload_data, size_t *upload_data_size,
                                   void **con_cls);
/* Ends a request's life (MHD's completion callback, server_daemon.c):
 * releases its arena, body budget and waiter slot, wakes the drain. */
void server__request_free(struct server_request *r);

#endif
