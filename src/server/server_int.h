/* SPDX-License-Identifier: MIT */
/*
 * server_int.h: the contract between the files of the server module, and the
 * pure functions that the unit tests and fuzz harnesses reach directly.
 *
 *   arena.c      struct server_arena (per-request bump allocator)
 *   multipart.c  streaming multipart/form-data parser (no sockets, no MHD)
 *   query.c      search bodies (JSON, query string, multipart fields) -> server_query
 *   ratelimit.c  per-client token buckets
 *   metrics.c    request counters and latency histograms (Prometheus text)
 *   server.c     MHD daemon, routing, limits, auth, handlers, logs
 *   assets.c     generated at build time from web/ files and openapi.json
 *
 * Nothing here includes microhttpd.h or jansson.h except where stated, so
 * the parsers can be fuzzed without either.
 */
#ifndef IMS_SERVER_INT_H
#define IMS_SERVER_INT_H

#include "imgsearch/server.h"

#include <pthread.h>
#include <stdatomic.h>

/* ---- arena.c -------------------------------------------------------------- */

struct server__arena_chunk;
struct server_arena {
    struct server__arena_chunk *head;
    size_t used_bytes;     /* total handed out, checked against max_bytes */
    size_t max_bytes;
};
void server__arena_init(struct server_arena *a, size_t max_bytes);
void server__arena_fini(struct server_arena *a);

/* ---- multipart.c ------------------------------------------------------------ */

/* A streaming multipart/form-data parser (RFC 7578 / RFC 2046). Fed any
 * chunking of the body, it calls back for every part; it never holds more
 * than one header line of the input. Bodies are not buffered by the parser.
 * Only Content-Disposition (name, filename) and Content-Type of a part are
 * kept; other part headers are skipped. */
#define SERVER_MP_BOUNDARY_MAX 70    /* RFC 2046 */
#define SERVER_MP_LINE_MAX 1024
#define SERVER_MP_NAME_MAX 128
#define SERVER_MP_FILENAME_MAX 256
#define SERVER_MP_CTYPE_MAX 128

struct server_mp_part_info {
    char name[SERVER_MP_NAME_MAX];
    char filename[SERVER_MP_FILENAME_MAX];
    bool has_filename;
    char content_type[SERVER_MP_CTYPE_MAX];
};

/* Callbacks return IMS_OK to go on; any other status stops the parser,
 * which then returns it (with the message the callback put in `err`). */
struct server_mp_callbacks {
    enum ims_status (*part_begin)(void *ctx, const struct server_mp_part_info *info,
                                  struct ims_error *err);
    enum ims_status (*part_data)(void *ctx, const char *p, size_t n, struct ims_error *err);
    enum ims_status (*part_end)(void *ctx, struct ims_error *err);
    void *ctx;
};

enum server__mp_state {
    MP_PREAMBLE,
    MP_AFTER_DELIM,
    MP_AFTER_DELIM_DASH,
    MP_AFTER_DELIM_CR,
    MP_HEADER_LINE,
    MP_HEADER_LF,
    MP_BODY,
    MP_EPILOGUE,
    MP_ERROR,
};

struct server_mp {
    struct server_mp_callbacks cb;
    enum server__mp_state state;
    char delim[4 + SERVER_MP_BOUNDARY_MAX];   /* "\r\n--" boundary */
    size_t delim_len;
    size_t match;                             /* delim bytes matched so far */
    char line[SERVER_MP_LINE_MAX];
    size_t line_len;
    size_t header_bytes;                      /* of the current part, capped */
    size_t n_parts;
    struct server_mp_part_info info;
    enum ims_status st;                       /* sticky error */
    struct ims_error err;
};

/* Extracts the boundary from a Content-Type value ("multipart/form-data;
 * boundary=..."; quoted or not) into out[SERVER_MP_BOUNDARY_MAX + 1]. */
enum ims_status server__mp_boundary(const char *content_type, char *out, struct ims_error *err);
void server__mp_init(struct server_mp *mp, const char *boundary,
                     const struct server_mp_callbacks *cb);
/* Feeds the next bytes. After an error every call returns the same status. */
enum ims_status server__mp_feed(struct server_mp *mp, const char *p, size_t n,
                                struct ims_error *err);
/* Ends the body: IMS_ERR_INVALID unless the closing delimiter was seen. */
enum ims_status server__mp_finish(struct server_mp *mp, struct ims_error *err);

/* A collector on top of the parser: keeps every part in memory (the total of
 * bodies bounded by max_bytes, the number of parts by max_parts) so the
 * handlers see whole fields and files. Used by server.c and the fuzzer. */
struct server_mp_field {
    struct server_mp_part_info info;
    struct ims_buf data;
};
struct server_mp_form {
    struct server_mp mp;
    struct server_mp_field *fields;
    size_t n_fields, cap_fields;
    size_t max_parts;
    size_t total_bytes, max_bytes;
};
enum ims_status server__form_init(struct server_mp_form *f, const char *content_type,
                                  size_t max_bytes, size_t max_parts, struct ims_error *err);
enum ims_status server__form_feed(struct server_mp_form *f, const char *p, size_t n,
                                  struct ims_error *err);
enum ims_status server__form_finish(struct server_mp_form *f, struct ims_error *err);
void server__form_fini(struct server_mp_form *f);

/* ---- query.c (uses jansson) ---------------------------------------------------- */

/* POST /api/v1/search JSON body -> *q, everything allocated from `a`.
 * IMS_ERR_INVALID with a precise message (jansson's line/column for syntax
 * errors) for anything the contract does not allow. */
enum ims_status server__query_parse_json(const char *body, size_t len, struct server_arena *a,
                                         struct server_query *q, struct ims_error *err);
/* GET /api/v1/search: the decoded query-string values (NULL when absent). */
struct server_query_args {
    const char *q, *image_id, *k, *offset, *min_score, *order;
    /* filters (issue 10), NULL when absent */
    const char *added_from, *added_to, *taken_from, *taken_to, *min_width, *min_height, *format,
        *orientation, *source_prefix;
};
enum ims_status server__query_from_args(const struct server_query_args *args,
                                        struct server_arena *a, struct server_query *q,
                                        struct ims_error *err);
/* Multipart POST /api/v1/search: fields "file" (image terms), "text",
 * "negative", "image_id", "image_url", their weights "file_weight",
 * "text_weight", "negative_weight", "image_id_weight", "image_url_weight",
 * and "k", "offset", "min_score", "order" (see docs/internals/server.md). */
enum ims_status server__query_from_form(const struct server_mp_form *f, struct server_arena *a,
                                        struct server_query *q, struct ims_error *err);
/* Parses a decimal integer in [lo, hi] ("k", "offset", ids). */
enum ims_status server__parse_int(const char *s, const char *what, long long lo, long long hi,
                                  long long *out, struct ims_error *err);
enum ims_status server__parse_float(const char *s, const char *what, double lo, double hi,
                                    double *out, struct ims_error *err);

/* ---- ratelimit.c ------------------------------------------------------------------ */

/* A fixed-size table of token buckets keyed by client address; a full table
 * evicts the least recently seen client of the probed slots, so memory is
 * bounded whatever the number of clients. */
#define SERVER_RL_SLOTS 4096
struct server_rl_slot {
    char key[48];
    double tokens;
    double last;           /* ims_now() of the last update */
};
struct server_rl {
    pthread_mutex_t mu;    /* guards slots */
    struct server_rl_slot *slots;
    double rate, burst;
};
enum ims_status server__rl_init(struct server_rl *rl, double rate, double burst);
void server__rl_fini(struct server_rl *rl);
/* true: allowed (a token taken). false: *retry_after_s = whole seconds until
 * a token is available (>= 1). Always true when rate == 0. */
bool server__rl_take(struct server_rl *rl, const char *client, double now, int *retry_after_s);

/* ---- metrics.c ---------------------------------------------------------------------- */

#define SERVER_HIST_BUCKETS 12
enum { SERVER_METRIC_STATUSES = 16 };
struct server_route_metrics {
    atomic_ulong count[SERVER_METRIC_STATUSES];     /* by server__status_slot() */
    atomic_ulong hist[SERVER_HIST_BUCKETS];         /* cumulative at render time */
    atomic_ulong sum_us;
};
extern const double server__hist_bounds[SERVER_HIST_BUCKETS - 1];  /* seconds; last = +Inf */
extern const int server__metric_statuses[SERVER_METRIC_STATUSES];  /* last = other */
int server__status_slot(int http_status);
void server__metrics_observe(struct server_route_metrics *m, int http_status, double seconds);
/* Appends the series of one route. */
enum ims_status server__metrics_render(struct ims_buf *out, const char *route,
                                       const struct server_route_metrics *m);

/* ---- routes (server.c) ------------------------------------------------------------------ */

enum server__method { SM_GET, SM_POST, SM_DELETE, SM_COUNT };
struct server__route {
    const char *pattern;            /* "/api/v1/images/{id}": {x} matches one segment */
    const char *methods[SM_COUNT];  /* non-NULL: the method is served (value = handler name) */
};
extern const struct server__route server__routes[];
extern const size_t server__n_routes;

/* ---- assets.c (generated) ------------------------------------------------------------ */

struct server_asset {
    const char *path;              /* "/", "/app.js", "/openapi.json" */
    const char *content_type;
    const unsigned char *data;
    size_t len;
};
extern const struct server_asset server__assets[];
extern const size_t server__n_assets;
const struct server_asset *server__asset_find(const char *path);

#endif
