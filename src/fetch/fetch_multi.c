/* SPDX-License-Identifier: MIT */
/*
 * fetch_multi.c: struct fetcher, many downloads at once on one thread.
 *
 * DESIGN
 * One libcurl multi handle drives every transfer, so connections (and TLS
 * sessions) are reused across URLs of the same host: its connection cache
 * lives in the multi handle, bounded by max_in_flight. No thread is owned
 * here; the caller's thread runs everything inside fetcher_poll, and the
 * callback runs on that thread too.
 *
 * A URL accepted by fetcher_add becomes a `struct xfer` that moves through
 *
 *     queued (FIFO) --start--> active (in the multi handle) --done--> callback
 *                      ^                  |
 *                      +-- retry list <---+  (retryable failure, backoff due)
 *
 * and is freed after its callback. Capacity: active + queued + waiting-to-
 * retry never exceeds max_in_flight + max_queued; fetcher_add says BUSY
 * beyond, which is the caller's back-pressure signal.
 *
 * Limits are enforced by libcurl options (timeouts, low speed, redirects,
 * protocols, the announced Content-Length via MAXFILESIZE) and by the write
 * callback, which appends into an ims_buf capped at max_bytes and aborts the
 * transfer the moment the cap would be passed (no Content-Length needed).
 * Bodies of redirect responses are dropped. Error bodies never reach us
 * (CURLOPT_FAILONERROR).
 */

#include "fetch_int.h"

#include <stdio.h>
#include <string.h>

struct xfer {
    struct fetcher *f;
    CURL *easy;
    char *url;
    void *user;
    struct ims_buf body;
    struct fetch__sock sock;
    char errbuf[CURL_ERROR_SIZE];
    char redirect_scheme[16];
    int too_large;
    int nomem;
    int n_retries;
    double due; /* retry time (ims_now seconds) while on the retry list */
    struct xfer *next; /* in the queue, the retry list or the active list */
};

struct fetcher {
    struct fetch_options o;
    CURLM *multi;
    struct xfer *queue_head, *queue_tail; /* accepted, not started */
    struct xfer *retry;                   /* waiting for their backoff */
    struct xfer *active;                  /* in the multi handle */
    int n_active, n_queued, n_retry;
    long n_connections;
    uint64_t rng;
};

/* ---- callbacks from libcurl --------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 300 && code < 400)
        return n; /* body of a redirect being followed */
    enum ims_status st = ims_buf_append(&x->body, p, n);
    if (st == IMS_ERR_TOO_LARGE) {
        x->too_large = 1;
        return CURL_WRITEFUNC_ERROR;
    }
    if (st != IMS_OK) {
        x->nomem = 1;
        return CURL_WRITEFUNC_ERROR;
    }
    return n;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    fetch__header_note(p, n, x->redirect_scheme);
    return n;
}

/* ---- transfers ------------------------------------------------------------------- */

static void xfer_free(struct xfer *x)
{
    if (!x)
        return;
    if (x->easy)
        curl_easy_cleanup(x->easy);
    ims_buf_fini(&x->body);
    ims_free(x->url);
    ims_free(x);
}

static void xfer_reset_attempt(struct xfer *x)
{
    ims_buf_reset(&x->body);
    x->sock.why[0] = '\0';
    x->errbuf[0] = '\0';
    x->redirect_scheme[0] = '\0';
    x->too_large = 0;
    x->nomem = 0;
}

static enum ims_status xfer_new(struct fetcher *f, const char *url, void *user,
                                struct xfer **out, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct xfer *x = ims_calloc(1, sizeof(*x));
    if (!x)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    ims_buf_init(&x->body, f->o.max_bytes);
    x->f = f;
    x->user = user;
    x->sock.allow_private = f->o.allow_private;
    x->sock.n_connections = &f->n_connections;
    x->url = ims_strdup(url);
    x->easy = curl_easy_init();
    if (!x->url || !x->easy) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    CURLcode rc = fetch__easy_setup(x->easy, &f->o, &x->sock, x->errbuf);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(x->easy, CURLOPT_URL, x->url);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(x->easy, CURLOPT_FAILONERROR, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(x->easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->o.max_bytes);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, on_body);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(x->easy, CURLOPT_HEADERFUNCTION, on_header);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(x->easy, CURLOPT_HEADERDATA, x);
    if (rc != CURLE_OK) {
        st = ims_error_set(err, IMS_ERR_INTERNAL, "libcurl setup failed: %s",
                           curl_easy_strerror(rc));
        goto out;
    }
out:
    if (st != IMS_OK) {
        xfer_free(x);
        return st;
    }
    *out = x;
    return IMS_OK;
}

/* ---- public API -------------------------------------------------------------------- */

enum ims_status fetcher_new(const struct fetch_options *opts, struct fetcher **out,
                            struct ims_error *err)
{
    enum ims_status st = fetch__global_init(err);
    if (st != IMS_OK)
        return st;
    struct fetcher *f = ims_calloc(1, sizeof(*f));
    if (!f)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    if (opts)
        f->o = *opts;
    else
        fetch_options_default(&f->o);
    if (f->o.max_in_flight < 1)
        f->o.max_in_flight = 1;
    if (f->o.max_queued < 0)
        f->o.max_queued = 0;
    f->rng = (uint64_t)(ims_now() * 1e9) ^ (uint64_t)(uintptr_t)f;
    f->multi = curl_multi_init();
    if (!f->multi) {
        ims_free(f);
        return ims_error_set(err, IMS_ERR_NOMEM, "cannot create a libcurl multi handle");
    }
    curl_multi_setopt(f->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)f->o.max_in_flight);
    curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, (long)f->o.max_in_flight);
    *out = f;
    return IMS_OK;
}

static void free_list(struct xfer *x)
{
    while (x) {
        struct xfer *next = x->next;
        xfer_free(x);
        x = next;
    }
}

void fetcher_free(struct fetcher *f)
{
    if (!f)
        return;
    for (struct xfer *x = f->active; x; x = x->next)
        curl_multi_remove_handle(f->multi, x->easy);
    free_list(f->active);
    free_list(f->queue_head);
    free_list(f->retry);
    curl_multi_cleanup(f->multi);
    ims_free(f);
}

int fetcher_pending(const struct fetcher *f)
{
    return f->n_active + f->n_queued + f->n_retry;
}

long fetcher_connections(const struct fetcher *f)
{
    return f->n_connections;
}

static void queue_push(struct fetcher *f, struct xfer *x)
{
    x->next = NULL;
    if (f->queue_tail)
        f->queue_tail->next = x;
    else
        f->queue_head = x;
    f->queue_tail = x;
    f->n_queued++;
}

enum ims_status fetcher_add(struct fetcher *f, const char *url, void *user,
                            struct ims_error *err)
{
    if (fetcher_pending(f) >= f->o.max_in_flight + f->o.max_queued)
        return ims_error_set(err, IMS_ERR_BUSY, "%d downloads pending; try again later",
                             fetcher_pending(f));
    enum ims_status st = fetch_url_check(url, err);
    if (st != IMS_OK)
        return st;
    struct xfer *x = NULL;
    st = xfer_new(f, url, user, &x, err);
    if (st != IMS_OK)
        return st;
    queue_push(f, x);
    return IMS_OK;
}

static void active_remove(struct fetcher *f, struct xfer *x)
{
    for (struct xfer **pp = &f->active; *pp; pp = &(*pp)->next) {
        if (*pp == x) {
            *pp = x->next;
            x->next = NULL;
            f->n_active--;
            return;
        }
    }
    IMS_ASSERT(!"transfer not on the active list");
}

/* Seconds until the next retry is due (a large number when none waits). */
static double next_retry_in(const struct fetcher *f, double now)
{
    double next_due = 1e9;
    for (const struct xfer *x = f->retry; x; x = x->next)
        if (x->due - now < next_due)
            next_due = x->due - now;
    return next_due;
}

static void report(struct fetcher *f, struct xfer *x, enum ims_status st, long code,
                   char *reason, size_t reason_n, fetch_done_fn *cb);

/* Moves retries that are due to the queue, then starts queued transfers
 * while there is room. Returns the number of transfers reported (a start
 * can only fail on out-of-memory inside libcurl). */
static int start_ready(struct fetcher *f, double now, fetch_done_fn *cb)
{
    int reported = 0;
    struct xfer **pp = &f->retry;
    while (*pp) {
        struct xfer *x = *pp;
        if (x->due <= now) {
            *pp = x->next;
            f->n_retry--;
            queue_push(f, x);
        } else {
            pp = &x->next;
        }
    }
    while (f->queue_head && f->n_active < f->o.max_in_flight) {
        struct xfer *x = f->queue_head;
        f->queue_head = x->next;
        if (!f->queue_head)
            f->queue_tail = NULL;
        f->n_queued--;
        x->next = NULL;
        xfer_reset_attempt(x);
        CURLMcode mc = curl_multi_add_handle(f->multi, x->easy);
        if (mc != CURLM_OK) {
            char reason[128];
            snprintf(reason, sizeof(reason), "cannot start: %s", curl_multi_strerror(mc));
            report(f, x, IMS_ERR_INTERNAL, 0, reason, sizeof(reason), cb);
            reported++;
            continue;
        }
        x->next = f->active;
        f->active = x;
        f->n_active++;
    }
    return reported;
}

/* A transfer finished: retry it or report it. Returns 1 if reported. */
static int finish(struct fetcher *f, struct xfer *x, CURLcode rc, fetch_done_fn *cb)
{
    long code = 0;
    char reason[320];
    int retryable = 0;
    enum ims_status st;

    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    if (rc == CURLE_OK && code >= 200 && code < 300) {
        st = IMS_OK;
        reason[0] = '\0';
    } else if (x->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
        st = IMS_ERR_TOO_LARGE;
        snprintf(reason, sizeof(reason), "too large: more than %zu bytes", f->o.max_bytes);
    } else if (x->nomem) {
        st = IMS_ERR_NOMEM;
        snprintf(reason, sizeof(reason), "out of memory");
    } else if (rc == CURLE_OK) {
        st = IMS_ERR_NETWORK;
        snprintf(reason, sizeof(reason), "HTTP %ld%s", code,
                 code >= 300 && code < 400 ? " without a usable Location" : "");
    } else {
        long os_errno = 0;
        curl_easy_getinfo(x->easy, CURLINFO_OS_ERRNO, &os_errno);
        st = fetch__describe(rc, code, os_errno, x->errbuf, &x->sock, x->redirect_scheme, &f->o, reason,
                             sizeof(reason), &retryable);
    }

    curl_multi_remove_handle(f->multi, x->easy);
    active_remove(f, x);

    if (st != IMS_OK && retryable && x->n_retries < f->o.max_retries) {
        x->n_retries++;
        x->due = ims_now() + (double)fetch__backoff_ms(&f->o, x->n_retries, &f->rng) / 1000.0;
        x->next = f->retry;
        f->retry = x;
        f->n_retry++;
        ims_log(IMS_LOG_DEBUG, "fetch: %s: %s; retry %d", x->url, reason, x->n_retries);
        return 0;
    }
    report(f, x, st, code, reason, sizeof(reason), cb);
    return 1;
}

/* Hands the outcome of `x` (no longer in any list) to the callback and frees
 * it. */
static void report(struct fetcher *f, struct xfer *x, enum ims_status st, long code,
                   char *reason, size_t reason_n, fetch_done_fn *cb)
{
    (void)f;
    char *eff = NULL, *ctype = NULL;
    curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &eff);
    curl_easy_getinfo(x->easy, CURLINFO_CONTENT_TYPE, &ctype);
    struct fetch_result r = {
        .user = x->user,
        .status = st,
        .url = x->url,
        .final_url = eff ? eff : x->url,
        .http_status = code,
        .content_type = ctype,
        .body = NULL,
        .body_len = 0,
        .n_retries = x->n_retries,
        .reason = reason,
    };
    if (st == IMS_OK) {
        if (!x->body.data) {
            /* empty body: hand out an empty string all the same */
            if (ims_buf_append(&x->body, "", 0) != IMS_OK || !x->body.data) {
                r.status = IMS_ERR_NOMEM;
                snprintf(reason, reason_n, "out of memory");
            }
        }
        if (r.status == IMS_OK) {
            r.body_len = x->body.len;
            r.body = ims_buf_steal(&x->body, &r.body_len);
        }
    }
    cb(x->user, &r);
    ims_free(r.body); /* NULL if the callback took it */
    xfer_free(x);
}

enum ims_status fetcher_poll(struct fetcher *f, int timeout_ms, fetch_done_fn *cb, int *n_done,
                             struct ims_error *err)
{
    int done = 0;
    double deadline = ims_now() + (timeout_ms > 0 ? timeout_ms : 0) / 1000.0;
    enum ims_status st = IMS_OK;

    for (;;) {
        double now = ims_now();
        done += start_ready(f, now, cb);
        int running = 0;
        CURLMcode mc = curl_multi_perform(f->multi, &running);
        if (mc != CURLM_OK) {
            st = ims_error_set(err, IMS_ERR_INTERNAL, "libcurl: %s", curl_multi_strerror(mc));
            goto out;
        }
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(f->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct xfer *x = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            IMS_ASSERT(x != NULL);
            done += finish(f, x, m->data.result, cb);
        }
        now = ims_now();
        if (done > 0 || now >= deadline || fetcher_pending(f) == 0)
            break;
        /* Something may have been queued by a callback or a retry may be
         * due: loop to start it before waiting. */
        if (f->queue_head && f->n_active < f->o.max_in_flight)
            continue;
        double wait = deadline - now;
        double next_due = next_retry_in(f, now);
        if (next_due < wait)
            wait = next_due;
        int wait_ms = wait > 0 ? (int)(wait * 1000.0) + 1 : 0;
        mc = curl_multi_poll(f->multi, NULL, 0, wait_ms, NULL);
        if (mc != CURLM_OK) {
            st = ims_error_set(err, IMS_ERR_INTERNAL, "libcurl: %s", curl_multi_strerror(mc));
            goto out;
        }
    }
out:
    if (n_done)
        *n_done = done;
    return st;
}
