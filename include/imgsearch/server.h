/* SPDX-License-Identifier: MIT */
/*
 * server.h: the HTTP server (JSON API, web page, metrics) and the backend
 * interface through which it reaches the rest of the program.
 *
 *     struct server_options o;
 *     server_options_init(&o);                 // 127.0.0.1, port 8080, limits
 *     o.port = 0;                              // ephemeral
 *     server_options_load_api_key(&o, NULL, &err);   // IMGSEARCH_API_KEY, if set
 *     struct server_backend be = {.self = app, .stats = app_stats, ...};
 *     struct server *srv = NULL;
 *     if (server_start(&o, &be, &srv, &err) != IMS_OK) ...;
 *     printf("listening on %u\n", server_port(srv));
 *     ... wait for SIGTERM/SIGINT (sigwait in the main thread) ...
 *     server_stop(srv);     // stop accepting, drain running requests (bounded)
 *     ... snapshot the index, close the catalogue ...
 *     server_free(srv);
 *     server_options_fini(&o);
 *
 * Only this module knows HTTP exists. It never includes the modules below
 * it: the `imgsearch serve` command implements `struct server_backend` with
 * the real search/ingest/store modules, tests implement it with a fake.
 *
 * Ownership: everything a backend operation returns (strings, arrays, the
 * rows of a result) is allocated from the request's `struct server_arena`
 * passed to it (server_arena_alloc/strdup/memdup); the server releases the
 * arena when the response has been sent, so a backend never frees what it
 * returns and never keeps pointers into it. Everything the server passes in
 * (query terms, upload bytes, urls) is borrowed for the duration of the call.
 *
 * Threading: backend operations are called concurrently from the server's
 * connection threads (at most `max_inflight` at a time), so they must be
 * thread-safe. They may block (search, job_wait); the server bounds how
 * many run at once and how many wait for a slot. job_wait (for ?wait=1) is
 * called outside that bound, by at most `max_waiters` requests at once. server_start/stop/free
 * are called from one controlling thread; server_port may be called from
 * any thread.
 */
#ifndef IMGSEARCH_SERVER_H
#define IMGSEARCH_SERVER_H

#include "imgsearch/base.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- per-request arena -------------------------------------------------- */

/* A bump allocator owned by one request, capped in size; freed in one go
 * when the request ends. Allocations are 16-byte aligned. */
struct server_arena;
/* NULL when the arena's cap is reached or memory runs out. */
void *server_arena_alloc(struct server_arena *a, size_t n);
char *server_arena_strdup(struct server_arena *a, const char *s);
void *server_arena_memdup(struct server_arena *a, const void *p, size_t n);

/* ---- data exchanged with the backend ------------------------------------ */

/* One catalogue row, as the API shows it. */
struct server_row {
    int64_t id;
    const char *url;       /* source URL, or the upload's file name; may be NULL */
    int width, height;     /* pixels of the original image */
    int64_t added_unix;    /* seconds since the epoch */
    const char *caption;   /* stored caption (imports); NULL if none */
    const char *format;    /* "jpeg", "heic", ...; may be NULL (issue 10) */
    bool has_taken;        /* EXIF date taken known */
    int64_t taken;         /* unix seconds, if has_taken */
    const char *const *tags; /* n_tags tags, as written (issue 10); NULL if none */
    size_t n_tags;
    const char *metadata;  /* the row's metadata JSON, GET of one image only (its EXIF
                              make and model are shown); NULL if none */
};

struct server_stats {
    int64_t images;
    int dim;
    const char *model;       /* e.g. "openai/clip-vit-base-patch32" */
    const char *index;       /* the index spec, e.g. "Flat,IP" */
    const char *extra_json;  /* optional JSON object whose members are merged into the
                                response (e.g. "{\"jobs_running\":1}"); may be NULL */
};

enum server_term_kind {
    SERVER_TERM_TEXT,
    SERVER_TERM_IMAGE,     /* image bytes (an upload) */
    SERVER_TERM_IMAGE_URL,
    SERVER_TERM_IMAGE_ID,
    SERVER_TERM_VECTOR,
};

/* One weighted term of a query; the weight is finite and may be negative.
 * Exactly the fields of `kind` are set. */
struct server_term {
    enum server_term_kind kind;
    float weight;
    const char *text;                 /* TEXT: NUL-terminated UTF-8, 1..SERVER_TEXT_MAX bytes */
    const unsigned char *bytes;       /* IMAGE: the uploaded bytes (not NUL-terminated) */
    size_t n_bytes;
    const char *filename;             /* IMAGE: as sent by the client, may be NULL */
    const char *url;                  /* IMAGE_URL */
    int64_t image_id;                 /* IMAGE_ID: > 0 */
    const float *vector;              /* VECTOR: n_vector finite floats; the backend checks
                                         n_vector against its dimension (IMS_ERR_INVALID) */
    size_t n_vector;
};

enum server_order { SERVER_ORDER_SCORE, SERVER_ORDER_DATE };

#define SERVER_TERMS_MAX 16
#define SERVER_K_MAX 1000
#define SERVER_OFFSET_MAX 10000
/* Per-query index knobs (issue 11): 0 = the index's default. */
#define SERVER_EF_MAX 4096
#define SERVER_NPROBE_MAX 65536
#define SERVER_RERANK_MAX 100000
#define SERVER_TEXT_MAX 2048
#define SERVER_URL_MAX 4096
#define SERVER_VECTOR_MAX 8192

/* A search filter as the API states it (issue 10; every member optional).
 * The backend translates it for the catalogue: this module names no type
 * of the layers below it. */
enum server_orientation {
    SERVER_ORIENT_ANY = 0,
    SERVER_ORIENT_LANDSCAPE,
    SERVER_ORIENT_PORTRAIT,
    SERVER_ORIENT_SQUARE,
};
struct server_filter {
    bool has_added_from, has_added_to, has_taken_from, has_taken_to;
    int64_t added_from, added_to, taken_from, taken_to; /* unix seconds, inclusive */
    uint32_t min_width, min_height;
    const char *formats; /* comma list of canonical words ("jpeg,heic"); NULL: any */
    enum server_orientation orientation;
    const char *source_prefix; /* NULL: any */
    const char *const *tags;   /* the row carries every one (case-insensitive); n_tags */
    size_t n_tags;
};

struct server_query {
    const struct server_term *terms;  /* 1..SERVER_TERMS_MAX */
    size_t n_terms;
    int k;                            /* 1..SERVER_K_MAX results wanted */
    int offset;                       /* 0..SERVER_OFFSET_MAX results skipped first */
    bool has_min_score;
    float min_score;                  /* drop results scoring below, if has_min_score */
    enum server_order order;          /* DATE: the top results re-sorted newest first */
    const struct server_filter *filter; /* NULL, or only matching rows (arena-allocated) */
    bool has_dedup;                   /* fold near-duplicates (issue 10): a result whose */
    float dedup;                      /* cosine with a better-ranked kept one is >= dedup
                                         (0 < dedup <= 1) goes into its `duplicates` */
    int ef, nprobe, rerank;           /* per-query index knobs, 0 = default (issue 11) */
};

struct server_result {
    struct server_row row;
    float score;                      /* cosine similarity of the fused query */
    const int64_t *duplicates;        /* with dedup: ids folded into this row, best first */
    size_t n_duplicates;
};

/* Library-wide near-duplicates (GET /api/v1/duplicates): groups of ids whose
 * embeddings are linked by cosine >= the threshold. */
struct server_dup_group {
    const int64_t *ids;               /* ascending */
    size_t n;
    float min_score;                  /* the weakest link that joined the group */
};
struct server_dup_groups {
    struct server_dup_group *groups;  /* arena-allocated, largest groups first */
    size_t n;
};
#define SERVER_TAGS_MAX 64            /* tags in one change or filter */

struct server_results {
    struct server_result *items;      /* arena-allocated by the backend */
    size_t n;
};

enum server_job_state { SERVER_JOB_QUEUED, SERVER_JOB_RUNNING, SERVER_JOB_DONE, SERVER_JOB_FAILED };

struct server_job_error {
    const char *url;
    const char *code;  /* the status name of the failure ("not_found", ...) */
    const char *error;
};

#define SERVER_JOB_ID_MAX 64

struct server_job {
    char id[SERVER_JOB_ID_MAX];
    enum server_job_state state;
    int64_t total, done, failed;
    const struct server_job_error *errors;   /* arena-allocated, n_errors entries */
    size_t n_errors;
};

/* One uploaded file of POST /api/v1/images (borrowed for the call). */
struct server_file {
    const unsigned char *bytes;
    size_t n_bytes;
    const char *filename;       /* may be NULL */
    const char *content_type;   /* as sent, may be NULL */
};

/* The backend's answer for one uploaded file. */
struct server_upload_item {
    enum ims_status status;     /* IMS_OK: `row` is the new (or existing) row */
    struct server_row row;
    char message[256];          /* when status != IMS_OK */
};

/* One embedding computed for the compatibility routes (immich's /predict,
 * clip-retrieval's /knn-service). */
struct server_embedding {
    float *v;               /* dim floats, arena-allocated, L2-normalised */
    size_t dim;
    int width, height;      /* image embeddings: the decoded image's size; else 0 */
};

/* The backend. Every operation returns IMS_OK or a status with a message in
 * `err` (shown to the client, so it must not leak internals: the server
 * replaces the message of IMS_ERR_INTERNAL/NOMEM/IO by a generic one and
 * logs the original). Out-parameters are only read on IMS_OK. A NULL
 * operation (except metrics) makes its endpoints answer 500 "internal". */
struct server_backend {
    void *self;
    enum ims_status (*stats)(void *self, struct server_arena *a, struct server_stats *out,
                             struct ims_error *err);
    enum ims_status (*search)(void *self, const struct server_query *q, struct server_arena *a,
                              struct server_results *out, struct ims_error *err);
    /* Queues a job fetching `urls` and writes its id (NUL-terminated). */
    enum ims_status (*add_urls)(void *self, const char *const *urls, size_t n_urls,
                                char job_id[SERVER_JOB_ID_MAX], struct ims_error *err);
    /* IMS_ERR_NOT_FOUND for an unknown id. */
    enum ims_status (*job_get)(void *self, const char *job_id, struct server_arena *a,
                               struct server_job *out, struct ims_error *err);
    /* Blocks until the job is done/failed (IMS_OK) or timeout_ms passes
     * (IMS_ERR_TIMEOUT). The server calls it in slices of <= 100 ms, outside
     * the admission gate, so that it notices shutdown and clients that hang up. */
    enum ims_status (*job_wait)(void *self, const char *job_id, int timeout_ms,
                                struct ims_error *err);
    /* Adds `n_files` images; fills items[0..n_files) (server-provided). Returns
     * IMS_OK when it ran, even if some or all files failed individually. */
    enum ims_status (*upload)(void *self, const struct server_file *files, size_t n_files,
                              struct server_arena *a, struct server_upload_item *items,
                              struct ims_error *err);
    enum ims_status (*image_get)(void *self, int64_t id, struct server_arena *a,
                                 struct server_row *out, struct ims_error *err);
    /* The JPEG thumbnail, arena-allocated. */
    enum ims_status (*image_thumb)(void *self, int64_t id, struct server_arena *a,
                                   struct ims_str *jpeg, struct ims_error *err);
    enum ims_status (*image_delete)(void *self, int64_t id, struct ims_error *err);
    /* Appends backend gauges/counters in Prometheus text format. Optional. */
    enum ims_status (*metrics)(void *self, struct ims_buf *out, struct ims_error *err);
    /* Optional: non-zero once the backend serves (a node's index has caught
     * up with the catalogue), 0 while it starts: GET /healthz and /readyz
     * then answer 503 {"status":"starting"}. NULL: always ready. Called
     * outside the gate: must be cheap and never block. */
    int (*ready)(void *self);
    /* Compatibility modes (server_options.compat); optional otherwise.
     * `model` names a model the way the client does (immich's "ViT-B-32__openai");
     * NULL means the served model. IMS_ERR_NOT_FOUND for a name the backend
     * does not serve (the message lists those it does). */
    enum ims_status (*embed_text)(void *self, const char *model, const char *text,
                                  struct server_arena *a, struct server_embedding *out,
                                  struct ims_error *err);
    enum ims_status (*embed_image)(void *self, const char *model, const unsigned char *bytes,
                                   size_t n_bytes, struct server_arena *a,
                                   struct server_embedding *out, struct ims_error *err);
    /* The stored embeddings of ids[0..n): *vectors (n x *dim, arena-allocated;
     * rows of missing ids zero) and found[i] (server-provided, n entries). */
    enum ims_status (*embeddings)(void *self, const int64_t *ids, size_t n, struct server_arena *a,
                                  float **vectors, size_t *dim, uint8_t *found,
                                  struct ims_error *err);
    /* Issue 10 (routes_library.c). Removes then adds tags of image `id` and
     * answers the row as it now is. IMS_ERR_NOT_FOUND for an unknown id,
     * IMS_ERR_INVALID naming a bad tag. */
    enum ims_status (*image_tags)(void *self, int64_t id, const char *const *add, size_t n_add,
                                  const char *const *remove, size_t n_remove,
                                  struct server_arena *a, struct server_row *out,
                                  struct ims_error *err);
    /* Groups of near-duplicates over the whole catalogue (cosine >= threshold),
     * at most `limit` groups. */
    enum ims_status (*duplicates)(void *self, float threshold, size_t limit,
                                  struct server_arena *a, struct server_dup_groups *out,
                                  struct ims_error *err);
};

/* ---- options ------------------------------------------------------------ */

struct server_options {
    const char *host;             /* bind address, default "127.0.0.1"; "::1"/"::" for IPv6 */
    unsigned port;                /* default 8080; 0 = ephemeral (see server_port) */
    bool use_pool;                /* false (default): a thread per connection, safe with a
                                     blocking backend; true: MHD's epoll pool of n_threads
                                     (a blocked handler stalls its worker's connections) */
    unsigned n_threads;           /* pool threads when use_pool, default 4 */
    unsigned max_inflight;        /* backend calls running at once; 0 (default): 32 with a
                                     thread per connection (more than cores, so cheap calls
                                     pass calls waiting for the encoder), n_threads with
                                     the pool */
    unsigned max_queued;          /* requests waiting for a slot, default 64 */
    unsigned queue_wait_ms;       /* how long one waits before 503, default 2000 */
    unsigned max_connections;     /* default 256 */
    unsigned connection_timeout_s;/* idle/slow-client timeout, default 30 */
    size_t json_max_bytes;        /* JSON request bodies, default 1 MiB */
    size_t upload_max_bytes;      /* multipart bodies in total, default 50 MiB */
    size_t max_files;             /* "file" parts per request, default 64 */
    double rate_per_s;            /* per-client token bucket refill, default 50; 0 disables */
    double rate_burst;            /* bucket size, default 100 */
    unsigned wait_max_ms;         /* cap for ?wait=1 on POST /api/v1/images, default 120000 */
    unsigned drain_ms;            /* server_stop waits this long for running requests, 10000 */
    /* Hardening against hostile clients (see docs/api.md "Limits and hardening"). */
    unsigned max_waiters;         /* ?wait=1 requests waiting for their job at once (outside
                                     the admission gate; their connections do not count in
                                     max_conns_per_client), default 128; beyond: 503 */
    size_t body_budget_bytes;     /* request body bytes held in memory by all requests
                                     together, default 256 MiB; beyond: 503 + Retry-After */
    unsigned header_timeout_ms;   /* request headers complete within this, default 10000; an
                                     idle kept-alive connection is closed after it too */
    size_t body_min_rate;         /* bytes/s a body must average over every window of
                                     header_timeout_ms, default 1024; 0 disables */
    unsigned max_conns_per_client;/* connections per client address (IPv6: per /64),
                                     default 32; 0 disables */
    const char *const *public_hosts;   /* extra names accepted in Host (borrowed, n entries) */
    size_t n_public_hosts;
    const char *const *cors_origins;   /* origins allowed cross-site writes + CORS answers */
    size_t n_cors_origins;
    const char *const *trusted_proxies;/* CIDRs whose Forwarded/X-Forwarded-For is believed */
    size_t n_trusted_proxies;
    char *api_key;                /* owned (ims_free); NULL = writes need no key */
    FILE *access_log;             /* JSON lines; NULL = none (borrowed) */
    FILE *error_log;              /* NULL = stderr through ims_log (borrowed) */
    /* Compatibility routes of other tools' APIs, off by default (docs/compat-*.md):
     * SERVER_COMPAT_IMMICH     GET /ping, POST /predict (immich machine learning)
     * SERVER_COMPAT_CLIP_BACK  POST /knn-service, POST /metadata, GET /indices-list */
    unsigned compat;
    bool compat_only;             /* serve only the compat routes (+ /healthz, /metrics):
                                     a second listener for them */
    const char *clip_back_index;  /* the index name /indices-list shows, default "imgsearch"
                                     (borrowed) */
};
#define SERVER_COMPAT_IMMICH 1u
#define SERVER_COMPAT_CLIP_BACK 2u

/* Fills the defaults above. Cannot fail. */
void server_options_init(struct server_options *o);
/* Releases what the options own (the API key). Accepts NULL. */
void server_options_fini(struct server_options *o);
/* Loads the API key: from `file` if not NULL (whitespace-trimmed content,
 * at most 4 KiB, non-empty), else from the environment IMGSEARCH_API_KEY if
 * set and non-empty, else leaves o->api_key NULL. Replaces any previous key. */
enum ims_status server_options_load_api_key(struct server_options *o, const char *file,
                                            struct ims_error *err);

/* ---- lifecycle ----------------------------------------------------------- */

struct server;

/* Binds and starts serving. `o` and `be` are copied (the API key, host names,
 * origins and proxy ranges too), `be->self` stays borrowed and must outlive
 * the server. IMS_ERR_INVALID for a malformed --public-host, --cors-origin or
 * --trusted-proxy value. On success *out owns the server;
 * release it with server_free(). */
enum ims_status server_start(const struct server_options *o, const struct server_backend *be,
                             struct server **out, struct ims_error *err);
/* The bound TCP port (the ephemeral one when options.port was 0). */
unsigned server_port(const struct server *s);
/* Stops accepting connections (the listening socket is shut down at once, so
 * new clients are refused, and closed once MHD's threads have stopped), lets
 * requests already running finish for up to options.drain_ms, then stops the
 * threads. Backend calls still running at the deadline are waited for (the
 * threads are joined), so backends must return in bounded time. Idempotent. */
void server_stop(struct server *s);
/* server_stop() if needed, then releases everything. Accepts NULL. */
void server_free(struct server *s);

#ifdef __cplusplus
}
#endif
#endif
