/* SPDX-License-Identifier: MIT */
/*
 * fetch.h: downloads from untrusted URLs, with limits and an address policy.
 *
 * Many images at once (a multi-transfer engine over one libcurl multi handle):
 *
 *     struct fetch_options o;
 *     fetch_options_default(&o);            // 32 in flight, 20 MB, 30 s, ...
 *     struct fetcher *f = NULL;
 *     if (fetcher_new(&o, &f, &err) != IMS_OK) ...
 *     for (each url) {
 *         enum ims_status st;
 *         while ((st = fetcher_add(f, url, item, &err)) == IMS_ERR_BUSY)
 *             fetcher_poll(f, 100, on_done, NULL);   // back-pressure: drain first
 *         if (st != IMS_OK) report(item, err.message);  // bad URL: never queued
 *     }
 *     while (fetcher_pending(f) > 0)
 *         fetcher_poll(f, 1000, on_done, NULL);
 *     fetcher_free(f);
 *
 *     static void on_done(void *user, struct fetch_result *r)
 *     {
 *         if (r->status != IMS_OK) { report(user, r->reason); return; }
 *         use(user, r->body, r->body_len);         // borrowed, or steal it:
 *         keep(user, r->body); r->body = NULL;     // now ours, ims_free() later
 *     }
 *
 * One small body into memory, blocking (an image named in a query):
 * fetch_to_memory(). One big file (a model), resumable, to disk:
 * fetch_to_file().
 *
 * Policy (both paths): only http and https, also after redirects; at most
 * `max_redirects` hops; the body is limited while it streams (and refused at
 * once when Content-Length announces too much); and unless `allow_private`,
 * every connection, redirects included, is refused when its resolved address
 * is loopback, private, link-local, cloud metadata, CGNAT, multicast,
 * unspecified, broadcast or reserved, in any IPv6 spelling (v4-mapped,
 * v4-compatible, NAT64). The check is made on the socket address curl is
 * about to connect to, after DNS resolution, so DNS rebinding cannot bypass
 * it; a refused address never gets a socket. Proxies from the environment are
 * ignored (a proxy would connect on our behalf where the policy cannot see).
 *
 * Thread contract: a `struct fetcher` is used by one thread at a time (the
 * callback runs on the thread calling fetcher_poll, and may call
 * fetcher_add). Different fetchers may be used from different threads.
 * fetch_to_memory, fetch_to_file, fetch_url_check and the fetch_addr_*
 * functions are thread-safe. The first fetcher_new/fetch_to_file initialises libcurl once.
 */
#ifndef IMGSEARCH_FETCH_H
#define IMGSEARCH_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "imgsearch/base.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sockaddr;

/* ---- options ------------------------------------------------------------ */

#define FETCH_URL_MAX_BYTES 8192

struct fetch_options {
    int max_in_flight;        /* concurrent transfers of a fetcher (32) */
    int max_queued;           /* waiting beyond those before fetcher_add says BUSY (64) */
    size_t max_bytes;         /* body limit (20 MB); fetch_to_file has its own */
    long connect_timeout_ms;  /* per connection (10 s) */
    long total_timeout_ms;    /* per attempt, whole transfer (30 s) */
    long low_speed_bytes;     /* a transfer slower than this (1000 B/s) ... */
    long low_speed_time_s;    /* ... for this long (15 s) is abandoned as stalled */
    int max_redirects;        /* 5 */
    int max_retries;          /* 2: on timeouts, connection errors, 5xx and 429 */
    long retry_base_ms;       /* first backoff (500 ms), doubled per retry, +-50% jitter */
    int allow_private;        /* 0: the address policy above applies */
    const char *user_agent;   /* NULL: "imgsearch/<version>"; borrowed, must outlive use */
};

/* Fills `o` with the defaults noted above. */
void fetch_options_default(struct fetch_options *o);

/* ---- URL and address policy (pure functions) ------------------------------ */

/* Checks that `url` can be queued: at most FETCH_URL_MAX_BYTES, parses
 * (libcurl's URL parser), scheme http or https, a host present, no embedded
 * NUL/control characters. Does not resolve anything. */
enum ims_status fetch_url_check(const char *url, struct ims_error *err);

/* Returns 1 if a connection to `sa` (AF_INET or AF_INET6) is allowed under
 * the policy, 0 if not; then `why` (if not NULL, n > 0) receives e.g.
 * "10.0.0.1 is a private address". Unknown families are refused. */
int fetch_addr_allowed(const struct sockaddr *sa, int allow_private, char *why, size_t n);

/* The same over a numeric address string ("10.0.0.1", "::ffff:127.0.0.1");
 * returns -1 (and a reason) when `addr` is not a numeric IPv4/IPv6 address. */
int fetch_addr_allowed_str(const char *addr, int allow_private, char *why, size_t n);

/* ---- multi-transfer engine ------------------------------------------------ */

struct fetcher;

/* The outcome of one URL, handed to the callback of fetcher_poll. Everything
 * is owned by the fetcher and valid during the callback only, except `body`,
 * which the callback may take: set r->body = NULL and release it later with
 * ims_free(). */
struct fetch_result {
    void *user;                /* as given to fetcher_add */
    enum ims_status status;    /* IMS_OK: a 2xx response and its whole body */
    const char *url;           /* as given to fetcher_add */
    const char *final_url;     /* after redirects; may equal url */
    long http_status;          /* last response status; 0 when none arrived */
    const char *content_type;  /* Content-Type of the final response or NULL */
    char *body;                /* NUL-terminated (not counted); NULL on failure */
    size_t body_len;
    int n_retries;             /* attempts beyond the first */
    const char *reason;        /* on failure a precise message ("HTTP 404",
                                  "timed out after 30 s", "refused: 10.0.0.1 is a
                                  private address", ...); "" on success */
};

typedef void fetch_done_fn(void *user, struct fetch_result *r);

/* Creates a fetcher with a copy of `opts` (NULL: defaults). On success *out
 * owns it; release with fetcher_free(), which abandons unfinished transfers
 * without calling the callback. */
enum ims_status fetcher_new(const struct fetch_options *opts, struct fetcher **out,
                            struct ims_error *err);
void fetcher_free(struct fetcher *f);

/* Queues `url` (copied) with an opaque `user` pointer. Returns IMS_OK, or
 * IMS_ERR_BUSY when max_in_flight + max_queued URLs are already pending
 * (poll, then add again), or the fetch_url_check status for a bad URL. The
 * callback is called exactly once for every URL that was accepted, and never
 * for one that was not. */
enum ims_status fetcher_add(struct fetcher *f, const char *url, void *user,
                            struct ims_error *err);

/* Runs transfers for up to `timeout_ms` (0: only what is ready), calling
 * `cb` for each URL that finished (success or final failure, after retries).
 * Returns early once at least one finished. *n_done (may be NULL) gets the
 * number of callbacks made. Fails only on an internal libcurl error. */
enum ims_status fetcher_poll(struct fetcher *f, int timeout_ms, fetch_done_fn *cb,
                             int *n_done, struct ims_error *err);

/* URLs accepted and not yet reported (queued, in flight, or waiting to retry). */
int fetcher_pending(const struct fetcher *f);

/* Connections opened so far (for tests and metrics: reuse keeps it low). */
long fetcher_connections(const struct fetcher *f);

/* ---- one body into memory ------------------------------------------------ */

/* Downloads `url` with `opts` (NULL: defaults; every limit and the address
 * policy apply, retries included) and blocks until it is done. On success
 * *body (NUL-terminated, not counted; release with ims_free) and *len are
 * set. Errors: the status of the failure (IMS_ERR_REFUSED for a refused
 * address, IMS_ERR_TOO_LARGE, IMS_ERR_TIMEOUT, IMS_ERR_NETWORK, ...; see
 * struct fetch_result) with "URL: reason" in err, or fetch_url_check's for a
 * bad URL. */
enum ims_status fetch_to_memory(const char *url, const struct fetch_options *opts, char **body,
                                size_t *len, struct ims_error *err);

/* ---- one large file to disk ---------------------------------------------- */

/* Progress: bytes of the file present so far (resumed bytes included) and the
 * expected total (0 while unknown). Return non-zero to cancel. */
typedef int fetch_progress_fn(void *ctx, uint64_t have_bytes, uint64_t total_bytes);

/* Called on the complete "<path>.part" before it is renamed into place;
 * returning an error keeps the final path untouched (and deletes the part,
 * which cannot be resumed into anything valid). */
typedef enum ims_status fetch_verify_fn(void *ctx, const char *part_path, uint64_t size,
                                        struct ims_error *err);

struct fetch_file_request {
    const char *url;
    const char *path;            /* final path; data goes to "<path>.part" first */
    uint64_t max_bytes;          /* e.g. 8 GiB for model files */
    int resume;                  /* continue an existing .part with a Range request;
                                    a server answering 200 instead of 206 restarts it */
    fetch_progress_fn *progress; /* may be NULL; called at most ~10 times a second */
    void *progress_ctx;
    fetch_verify_fn *verify;     /* may be NULL */
    void *verify_ctx;
};

struct fetch_file_info {
    uint64_t size;               /* final file size */
    uint64_t resumed_from;       /* bytes kept from an earlier .part (last attempt) */
    int n_attempts;              /* HTTP requests made (retries resume) */
    long http_status;
};

/* Downloads req->url into req->path: streams into "<path>.part", retries
 * (opts->max_retries, resuming) after connection errors, timeouts, 5xx, 429
 * and cut connections, checks the size against Content-Length or the
 * Content-Range total, calls req->verify, then fsyncs and renames the part
 * into place atomically. opts->max_bytes is ignored (req->max_bytes applies)
 * and opts->total_timeout_ms bounds each attempt (0: no bound; the low-speed
 * limit still catches stalls). On failure the .part stays for a later resume
 * unless it was found invalid. `info` (may be NULL) is set on success. */
enum ims_status fetch_to_file(const struct fetch_file_request *req,
                              const struct fetch_options *opts, struct fetch_file_info *info,
                              struct ims_error *err);

#ifdef __cplusplus
}
#endif
#endif
