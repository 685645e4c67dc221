/* SPDX-License-Identifier: MIT */
/*
 * server_int.h: the contract between the files of the server module, and the
 * pure functions that the unit tests and fuzz harnesses reach directly.
 *
 *   arena.c      struct server_arena (per-request bump allocator)
 *   multipart.c  streaming multipart/form-data parser (no sockets, no MHD)
 *   query.c      search bodies (JSON, query string, multipart fields) -> server_query
 *   ratelimit.c  per-client token buckets
 *   guard.c      Host / Origin checks, client keys, trusted proxies (pure)
 *   conns.c      open connections: per-client cap, header/body deadlines
 *   metrics.c    request counters and latency histograms (Prometheus text)
 *   server.c     route table, dispatch, the request path (limits, auth, gate)
 *   server_daemon.c  options, MHD start/stop/drain, connection callbacks
 *   server_respond.c responses, status -> HTTP mapping, error log, assets
 *   routes_api.c imgsearch's own API handlers
 *   (those four share server_http.h, which includes microhttpd.h)
 *   compat_immich.c    immich's machine-learning API (POST /predict) -> backend
 *   compat_clipback.c  clip-retrieval's back end (/knn-service, /metadata, /indices-list)
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
    const char *const *tags; /* the repeatable `tag` (n_tags values) */
    size_t n_tags;
    const char *dedup;
    const char *ef, *nprobe, *rerank; /* index knobs (issue 11) */
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
/* A JSON list of at most SERVER_TAGS_MAX strings (tags; their rules are the
 * catalogue's) into an arena array. */
struct json_t;
enum ims_status server__json_tags(struct json_t *v, const char *what, struct server_arena *a,
                                  const char *const **out, size_t *n_out, struct ims_error *err);
/* Parses a decimal integer in [lo, hi] ("k", "offset", ids). */
enum ims_status server__parse_int(const char *s, const char *what, long long lo, long long hi,
                                  long long *out, struct ims_error *err);
enum ims_status server__parse_float(const char *s, const char *what, double lo, double hi,
                                    double *out, struct ims_error *err);

/* ---- ratelimit.c ------------------------------------------------------------------ */

/* A fixed-size table of token buckets keyed by client key (guard.c). A new
 * client takes a free slot of its probe window, or the slot of a client
 * whose bucket has refilled (forgetting it loses nothing: it would start
 * again full); when every slot of the window holds a client still paying
 * for its requests, the newcomer shares one overflow bucket with all other
 * such newcomers, so a flood of new addresses never resets anyone's bucket. */
#define SERVER_RL_SLOTS 4096
struct server_rl_slot {
    char key[64];
    double tokens;
    double last;           /* ims_now() of the last update */
};
struct server_rl {
    pthread_mutex_t mu;    /* guards slots, overflow */
    struct server_rl_slot *slots;
    struct server_rl_slot overflow;
    double rate, burst;
    atomic_ulong n_overflow;   /* requests charged to the overflow bucket */
};
enum ims_status server__rl_init(struct server_rl *rl, double rate, double burst);
void server__rl_fini(struct server_rl *rl);
/* true: allowed (a token taken). false: *retry_after_s = whole seconds until
 * a token is available (>= 1). Always true when rate == 0. */
bool server__rl_take(struct server_rl *rl, const char *client, double now, int *retry_after_s);

/* ---- guard.c ------------------------------------------------------------------------ */

struct sockaddr;
/* An IP address; IPv4 in a[0..4), IPv4-mapped IPv6 is IPv4. */
struct server_addr {
    int family;            /* AF_INET or AF_INET6 */
    unsigned char a[16];
};
struct server_cidr {
    struct server_addr addr;
    unsigned prefix;
};
bool server__addr_parse(const char *s, size_t len, struct server_addr *out);
bool server__addr_from_sa(const struct sockaddr *sa, struct server_addr *out);
/* The client key: "1.2.3.4", or "2001:db8:1:2::/64" for any address of that /64. */
void server__addr_key(const struct server_addr *a, char *out, size_t cap);
enum ims_status server__cidr_parse(const char *s, struct server_cidr *out, struct ims_error *err);
bool server__cidr_match(const struct server_cidr *c, const struct server_addr *a);

struct server_guard {
    struct server_addr listen;
    bool listen_any;             /* 0.0.0.0 or :: */
    char **names;                /* owned: n_hosts public hosts, then n_origins origins */
    size_t n_hosts;
    char **origins;              /* = names + n_hosts */
    size_t n_origins;
    struct server_cidr *proxies; /* owned */
    size_t n_proxies;
};
enum ims_status server__guard_init(struct server_guard *g, const struct server_options *o,
                                   struct ims_error *err);
void server__guard_fini(struct server_guard *g);
/* Whether a Host header value names this server (NULL: no header, true). */
bool server__guard_host_ok(const struct server_guard *g, const char *host);
/* Whether a state-changing request may proceed: same origin as `host`, a CORS
 * origin, or no sign of a cross-site browser request. */
bool server__guard_origin_ok(const struct server_guard *g, const char *host, const char *origin,
                             const char *sec_fetch_site);
bool server__guard_cors_ok(const struct server_guard *g, const char *origin);
bool server__guard_is_proxy(const struct server_guard *g, const struct server_addr *a);
/* The client named by Forwarded (preferred) or X-Forwarded-For: the rightmost
 * hop that is not a trusted proxy. false when neither header gives one. */
bool server__guard_forwarded_client(const struct server_guard *g, const char *forwarded,
                                    const char *xff, struct server_addr *out);

/* ---- conns.c -------------------------------------------------------------------------- */

enum server_conn_phase { SERVER_CONN_HEADERS, SERVER_CONN_BODY, SERVER_CONN_BUSY };
struct server_conn {
    struct server_conn *prev, *next;
    char key[64];                /* client key; "" when exempt from the cap (trusted proxy) */
    int fd;
    enum server_conn_phase phase;
    double since;                /* ims_now() when the phase began */
    size_t body_bytes;           /* received in the BODY phase */
    double win_start;            /* the current rate window began (BODY) */
    size_t win_bytes;            /* received in that window */
    bool served;                 /* a request has completed on it */
    bool waiting;                /* a ?wait=1 waiter: capped by max_waiters, not per client */
    bool killed;
};
struct server_conns {
    pthread_mutex_t mu;          /* guards the list and every entry */
    pthread_cond_t cv;
    struct server_conn *head;
    size_t n;
    unsigned max_per_client;
    double header_timeout_s, min_rate;
    pthread_t thread;
    bool thread_started, stop;
    atomic_ulong refused_per_client, killed_headers, killed_body;
};
enum ims_status server__conns_init(struct server_conns *cs, unsigned max_per_client,
                                   unsigned header_timeout_ms, size_t min_rate, bool start_thread);
void server__conns_fini(struct server_conns *cs);
/* Whether one more connection of `key` is allowed (counts the refusal). */
bool server__conns_accept_ok(struct server_conns *cs, const char *key);
struct server_conn *server__conns_add(struct server_conns *cs, const char *key, int fd,
                                      bool exempt, double now);
void server__conns_remove(struct server_conns *cs, struct server_conn *c);
void server__conns_phase(struct server_conns *cs, struct server_conn *c,
                         enum server_conn_phase phase, double now);
void server__conns_body(struct server_conns *cs, struct server_conn *c, size_t n);
void server__conns_waiting(struct server_conns *cs, struct server_conn *c, bool waiting);
/* Shuts down the sockets past their deadline at `now`; returns how many. */
unsigned server__conns_sweep(struct server_conns *cs, double now);

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

/* ---- compat_immich.c, compat_clipback.c (use jansson) ------------------------------------- */

/* What a compatibility handler answers; server.c queues it as it is. The
 * handlers know the other tool's request and error shapes, not HTTP
 * plumbing: they read a parsed body and call the backend. */
struct server__compat_reply {
    int status;                 /* HTTP status */
    const char *content_type;   /* static string */
    char *body;                 /* arena-allocated */
    size_t len;
    char ignored[256];          /* X-Imgsearch-Ignored: what the request asked that was
                                   accepted and not honoured; "" = none */
    char capped[128];           /* X-Imgsearch-Capped: limits applied; "" = none */
    char log[512];              /* for the error log when status is 500; "" = none */
};

/* Sets the reply's body (copied into the arena; 503 when it is full). The
 * JSON variant takes the reference to `o` (NULL: out of memory). */
void server__compat_text(struct server__compat_reply *out, struct server_arena *a, int status,
                         const char *ctype, const char *text, size_t len);
struct json_t;
void server__compat_json(struct server__compat_reply *out, struct server_arena *a, int status,
                         struct json_t *o);

/* {key: message} as the reply, with `status` (key: "detail" for immich,
 * "message" for clip-retrieval); bytes that are not UTF-8 become '?'. */
void server__compat_message(struct server__compat_reply *out, struct server_arena *a, int status,
                            const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* A backend failure as {key: message} with `status` (the caller's mapping
 * of st); a 500's message goes to out->log and the client reads "internal
 * error". */
void server__compat_error(struct server__compat_reply *out, struct server_arena *a,
                          const char *key, int status, enum ims_status st,
                          const struct ims_error *err);

/* The one place where statuses become HTTP codes (server_respond.c). */
int server__http_status(enum ims_status st);

/* POST /predict (multipart: "entries" JSON, "image" file or "text" field). */
void server__immich_predict(const struct server_backend *be, const struct server_mp_form *f,
                            struct server_arena *a, struct server__compat_reply *out);
/* The JSON text of a float array, as immich's service writes one
 * ("[0.1,-2.49999994e-05]"): each value a decimal that reads back as the same
 * float (nine significant digits, trailing zeros trimmed). NaN/Inf are not
 * JSON: callers pass finite values. */
enum ims_status server__floats_json(const float *v, size_t n, struct ims_buf *out);

/* POST /knn-service, POST /metadata (JSON bodies, whatever the Content-Type:
 * clip-front sends text/plain), GET /indices-list. `index_name` is the one
 * index served. */
void server__clipback_knn(const struct server_backend *be, const char *index_name,
                          const char *body, size_t len, struct server_arena *a,
                          struct server__compat_reply *out);
void server__clipback_metadata(const struct server_backend *be, const char *index_name,
                               const char *body, size_t len, struct server_arena *a,
                               struct server__compat_reply *out);
void server__clipback_indices(const char *index_name, struct server_arena *a,
                              struct server__compat_reply *out);
/* clip-retrieval's near-duplicate rule: results (n x dim, normalised, in rank
 * order) whose inner product is >= threshold are linked; of each connected
 * group only the best-ranked is kept. Sets drop[i] (n entries); returns the
 * number dropped. */
size_t server__clipback_dedup(const float *v, size_t n, size_t dim, float threshold,
                              uint8_t *drop);
/* Standard base64 (RFC 4648, padding optional, whitespace skipped) into
 * out[*n], out holding at least len * 3 / 4 + 3 bytes. IMS_ERR_INVALID on a
 * character outside the alphabet. */
enum ims_status server__base64_decode(const char *s, size_t len, unsigned char *out, size_t *n);
/* Encodes into a NUL-terminated arena string; NULL when the arena is full. */
char *server__base64_encode(struct server_arena *a, const void *p, size_t n);

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

/* ---- routes_library.c (uses jansson): issue 10's tags and duplicates ---------------- */

/* One row as the API shows it (server.c). */
struct json_t *server__row_json(const struct server_row *row);
/* POST /api/v1/images/{id}/tags: *out is the row with its new tags. */
enum ims_status server__tags_post(const struct server_backend *be, const char *id_text,
                                  const char *body, size_t len, struct server_arena *a,
                                  struct json_t **out, struct ims_error *err);
/* GET /api/v1/duplicates (threshold, limit: the query values or NULL). */
enum ims_status server__duplicates_get(const struct server_backend *be, const char *threshold,
                                       const char *limit, struct server_arena *a,
                                       struct json_t **out, struct ims_error *err);

#endif
