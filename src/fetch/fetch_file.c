/* SPDX-License-Identifier: MIT */
/*
 * fetch_file.c: fetch_to_file, one large file (a model) streamed to disk,
 * resumable, verified, and renamed into place atomically.
 *
 * Layout on disk: "<path>.part" collects the bytes; "<path>" appears only
 * once the whole file arrived, its size matched what the server announced,
 * and the caller's verify hook accepted it (fsync, rename, fsync folder).
 *
 * Resuming: when the part already holds N > 0 bytes we ask for "Range:
 * bytes=N-". The decision is taken when the final response's headers are
 * complete (header callback, blank line), before any body byte is written:
 *   206 + Content-Range "bytes N-x/T"  append at N, expect T in total
 *   206 with any other start           refuse (it would corrupt the file)
 *   200                                the server ignored the range: truncate
 *                                      and start over, expect Content-Length
 *   416                                our part is not a prefix the server
 *                                      knows (size changed?): start over once
 * Retries after a cut connection, a timeout, a 5xx or 429 continue the part,
 * so a flaky link costs only the bytes in flight.
 *
 * The body limit (req->max_bytes) is checked against the announced total and
 * again while streaming.
 */

#include "fetch_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum abort_why { ABORT_NONE, ABORT_TOO_LARGE, ABORT_IO, ABORT_BAD_RANGE, ABORT_HTTP,
                 ABORT_RESTART, ABORT_CANCELLED };

struct attempt {
    const struct fetch_file_request *req;
    CURL *easy;
    int fd;
    uint64_t have;          /* part size when the attempt started */
    uint64_t write_at;      /* where the body starts in the part */
    uint64_t written;       /* body bytes written this attempt */
    int64_t total;          /* expected final size, -1 unknown */
    int headers_done;       /* final response headers seen */
    long code;
    enum abort_why abort;
    int io_errno;
    /* Content-Range of the current response */
    int cr_seen;
    uint64_t cr_start;
    int64_t cr_total;
    char redirect_scheme[16];
    double last_progress;
};

/* "Content-Range: bytes 100-199/200" or "bytes * /200" (no space). */
static void parse_content_range(struct attempt *a, const char *p, size_t n)
{
    char buf[128];
    if (n >= sizeof(buf))
        return;
    memcpy(buf, p, n);
    buf[n] = '\0';
    const char *v = buf + 14; /* after "content-range:" */
    while (*v == ' ' || *v == '\t')
        v++;
    if (strncasecmp(v, "bytes ", 6) != 0)
        return;
    v += 6;
    a->cr_seen = 1;
    a->cr_start = 0;
    a->cr_total = -1;
    char *end;
    if (*v == '*') {
        v++;
    } else {
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (errno || end == v || *end != '-')
            return;
        a->cr_start = s;
        v = end + 1;
        strtoull(v, &end, 10);
        if (end == v)
            return;
        v = end;
    }
    if (*v != '/')
        return;
    v++;
    if (*v == '*')
        return;
    errno = 0;
    unsigned long long t = strtoull(v, &end, 10);
    if (!errno && end != v && t <= INT64_MAX)
        a->cr_total = (int64_t)t;
}

/* The final response's headers are complete: decide where the body goes. */
static int headers_complete(struct attempt *a)
{
    curl_easy_getinfo(a->easy, CURLINFO_RESPONSE_CODE, &a->code);
    if (a->code < 200 || (a->code >= 300 && a->code < 400))
        return 1; /* interim or a redirect being followed */
    if (a->code == 416 && a->have > 0) {
        a->abort = ABORT_RESTART;
        return 0;
    }
    if (a->code >= 400 || (a->code != 200 && a->code != 206)) {
        a->abort = ABORT_HTTP;
        return 0;
    }
    if (a->code == 206) {
        if (a->have == 0 || !a->cr_seen || a->cr_start != a->have) {
            a->abort = ABORT_BAD_RANGE;
            return 0;
        }
        a->write_at = a->have;
        a->total = a->cr_total;
    } else {
        curl_off_t cl = -1;
        curl_easy_getinfo(a->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        a->write_at = 0;
        a->total = cl >= 0 ? (int64_t)cl : -1;
    }
    if (a->total >= 0 && (uint64_t)a->total > a->req->max_bytes) {
        a->abort = ABORT_TOO_LARGE;
        return 0;
    }
    if (ftruncate(a->fd, (off_t)a->write_at) != 0 ||
        lseek(a->fd, (off_t)a->write_at, SEEK_SET) < 0) {
        a->io_errno = errno;
        a->abort = ABORT_IO;
        return 0;
    }
    a->headers_done = 1;
    return 1;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    struct attempt *a = ud;
    size_t n = size * nmemb;
    fetch__header_note(p, n, a->redirect_scheme);
    if (n >= 5 && !strncmp(p, "HTTP/", 5)) {
        a->cr_seen = 0;
    } else if (n >= 14 && !strncasecmp(p, "content-range:", 14)) {
        parse_content_range(a, p, n);
    } else if ((n == 2 && p[0] == '\r' && p[1] == '\n') || (n == 1 && p[0] == '\n')) {
        if (!headers_complete(a))
            return CURL_WRITEFUNC_ERROR;
    }
    return n;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct attempt *a = ud;
    size_t n = size * nmemb;
    if (!a->headers_done)
        return n; /* body of a redirect */
    if (a->write_at + a->written + n > a->req->max_bytes ||
        (a->total >= 0 && a->write_at + a->written + n > (uint64_t)a->total)) {
        a->abort = ABORT_TOO_LARGE;
        return CURL_WRITEFUNC_ERROR;
    }
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(a->fd, p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            a->io_errno = w < 0 ? errno : EIO;
            a->abort = ABORT_IO;
            return CURL_WRITEFUNC_ERROR;
        }
        off += (size_t)w;
    }
    a->written += n;
    return n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct attempt *a = ud;
    if (!a->req->progress || !a->headers_done)
        return 0;
    double now = ims_now();
    if (now - a->last_progress < 0.1)
        return 0;
    a->last_progress = now;
    uint64_t total = a->total >= 0 ? (uint64_t)a->total : 0;
    if (a->req->progress(a->req->progress_ctx, a->write_at + a->written, total)) {
        a->abort = ABORT_CANCELLED;
        return 1;
    }
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static enum ims_status fsync_dir_of(const char *path, struct ims_error *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ims_error_set(err, IMS_ERR_IO, "cannot open %s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0)
        return ims_error_set(err, IMS_ERR_IO, "cannot sync %s: %s", dir, strerror(errno));
    return IMS_OK;
}

/* One HTTP request. Returns IMS_OK when the part is complete; else the
 * status, a reason in `err`, and *retryable / *restart. */
static enum ims_status run_attempt(const struct fetch_file_request *req,
                                   const struct fetch_options *o, const char *part,
                                   struct fetch_file_info *info, int *retryable, int *restart,
                                   struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct attempt a = {.req = req, .fd = -1, .total = -1, .cr_total = -1};
    struct fetch__sock sock = {.allow_private = o->allow_private};
    char errbuf[CURL_ERROR_SIZE] = "";
    char range[48];
    struct stat sb;

    *retryable = 0;
    *restart = 0;
    a.fd = open(part, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (a.fd < 0) {
        st = ims_error_set(err, IMS_ERR_IO, "cannot open %s: %s", part, strerror(errno));
        goto out;
    }
    if (fstat(a.fd, &sb) != 0) {
        st = ims_error_set(err, IMS_ERR_IO, "cannot stat %s: %s", part, strerror(errno));
        goto out;
    }
    a.have = req->resume ? (uint64_t)sb.st_size : 0;
    if (a.have > req->max_bytes)
        a.have = 0; /* cannot be a prefix of anything we accept */

    a.easy = curl_easy_init();
    if (!a.easy) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "cannot create a libcurl handle");
        goto out;
    }
    CURLcode rc = fetch__easy_setup(a.easy, o, &sock, errbuf);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(a.easy, CURLOPT_URL, req->url);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(a.easy, CURLOPT_WRITEFUNCTION, on_body);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(a.easy, CURLOPT_WRITEDATA, &a);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(a.easy, CURLOPT_HEADERFUNCTION, on_header);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(a.easy, CURLOPT_HEADERDATA, &a);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(a.easy, CURLOPT_XFERINFOFUNCTION, on_progress);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(a.easy, CURLOPT_XFERINFODATA, &a);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(a.easy, CURLOPT_NOPROGRESS, 0L);
    if (rc == CURLE_OK && a.have > 0) {
        snprintf(range, sizeof(range), "%llu-", (unsigned long long)a.have);
        rc = curl_easy_setopt(a.easy, CURLOPT_RANGE, range);
    }
    if (rc != CURLE_OK) {
        st = ims_error_set(err, IMS_ERR_INTERNAL, "libcurl setup failed: %s",
                           curl_easy_strerror(rc));
        goto out;
    }

    rc = curl_easy_perform(a.easy);
    if (info) {
        info->n_attempts++;
        info->http_status = a.code;
        info->resumed_from = a.write_at;
    }
    uint64_t size = a.write_at + a.written;
    if (rc == CURLE_OK && a.headers_done) {
        if (a.total >= 0 && size != (uint64_t)a.total) {
            *retryable = 1;
            st = ims_error_set(err, IMS_ERR_CORRUPT, "size mismatch: got %llu of %lld bytes",
                               (unsigned long long)size, (long long)a.total);
        }
        goto out;
    }
    switch (a.abort) {
    case ABORT_TOO_LARGE:
        st = ims_error_set(err, IMS_ERR_TOO_LARGE, "too large: more than %llu bytes%s",
                           (unsigned long long)(a.total >= 0 && (uint64_t)a.total <= req->max_bytes
                                                    ? (uint64_t)a.total
                                                    : req->max_bytes),
                           a.total >= 0 && (uint64_t)a.total <= req->max_bytes
                               ? " (more than announced)"
                               : "");
        *restart = 1; /* what we have cannot be trusted */
        goto out;
    case ABORT_IO:
        st = ims_error_set(err, IMS_ERR_IO, "cannot write %s: %s", part, strerror(a.io_errno));
        goto out;
    case ABORT_BAD_RANGE:
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "server answered 206 for another range than bytes=%llu-",
                           (unsigned long long)a.have);
        *restart = 1;
        goto out;
    case ABORT_RESTART:
        st = ims_error_set(err, IMS_ERR_CORRUPT, "range not satisfiable: restarting");
        *restart = 1;
        *retryable = 1;
        goto out;
    case ABORT_CANCELLED:
        st = ims_error_set(err, IMS_ERR_CANCELLED, "cancelled");
        goto out;
    case ABORT_HTTP:
    case ABORT_NONE:
        break;
    }
    {
        char reason[320];
        struct fetch_options eff = *o;
        eff.max_bytes = (size_t)IMS_MIN(req->max_bytes, (uint64_t)SIZE_MAX);
        if (a.abort == ABORT_HTTP || rc == CURLE_OK)
            rc = rc == CURLE_OK ? CURLE_OK : CURLE_HTTP_RETURNED_ERROR;
        long os_errno = 0;
        curl_easy_getinfo(a.easy, CURLINFO_OS_ERRNO, &os_errno);
        st = fetch__describe(rc, a.code, os_errno, errbuf, &sock, a.redirect_scheme, &eff, reason,
                             sizeof(reason), retryable);
        if (rc == CURLE_OK && a.code >= 300 && a.code < 400)
            snprintf(reason, sizeof(reason), "HTTP %ld without a usable Location", a.code);
        if (a.headers_done && a.total >= 0 && size < (uint64_t)a.total)
            ims_error_set(err, st, "%s after %llu of %lld bytes", reason,
                          (unsigned long long)size, (long long)a.total);
        else
            ims_error_set(err, st, "%s", reason);
    }
out:
    if (a.fd >= 0) {
        if (st == IMS_OK && fsync(a.fd) != 0)
            st = ims_error_set(err, IMS_ERR_IO, "cannot sync %s: %s", part, strerror(errno));
        close(a.fd);
    }
    if (st == IMS_OK && info)
        info->size = a.write_at + a.written;
    curl_easy_cleanup(a.easy);
    return st;
}

enum ims_status fetch_to_file(const struct fetch_file_request *req,
                              const struct fetch_options *opts, struct fetch_file_info *info,
                              struct ims_error *err)
{
    enum ims_status st;
    char part[PATH_MAX];
    struct fetch_options o;
    struct fetch_file_info inf = {0};
    uint64_t rng = (uint64_t)(ims_now() * 1e9);
    int restarted = 0;

    if (opts)
        o = *opts;
    else
        fetch_options_default(&o);
    st = fetch_url_check(req->url, err);
    if (st != IMS_OK)
        return st;
    st = fetch__global_init(err);
    if (st != IMS_OK)
        return st;
    if (!req->path || snprintf(part, sizeof(part), "%s.part", req->path) >= (int)sizeof(part))
        return ims_error_set(err, IMS_ERR_INVALID, "bad destination path");
    if (!req->resume && unlink(part) != 0 && errno != ENOENT)
        return ims_error_set(err, IMS_ERR_IO, "cannot remove %s: %s", part, strerror(errno));

    struct fetch_file_request r = *req;
    for (int retries = 0;;) {
        int retryable = 0, restart = 0;
        st = run_attempt(&r, &o, part, &inf, &retryable, &restart, err);
        if (st == IMS_OK)
            break;
        if (restart) {
            if (truncate(part, 0) != 0 && errno != ENOENT)
                return ims_error_set(err, IMS_ERR_IO, "cannot truncate %s: %s", part,
                                     strerror(errno));
            /* A 416 restart is free once; it is not the network's fault. */
            if (retryable && !restarted) {
                restarted = 1;
                continue;
            }
        }
        if (!retryable || retries >= o.max_retries)
            return st;
        retries++;
        long ms = fetch__backoff_ms(&o, retries, &rng);
        ims_log(IMS_LOG_INFO, "fetch: %s: %s; retry %d in %ld ms", req->url,
                err ? err->message : "", retries, ms);
        sleep_ms(ms);
        r.resume = 1; /* keep what arrived */
    }

    if (req->verify) {
        st = req->verify(req->verify_ctx, part, inf.size, err);
        if (st != IMS_OK) {
            unlink(part);
            return st;
        }
    }
    if (rename(part, req->path) != 0)
        return ims_error_set(err, IMS_ERR_IO, "cannot rename %s: %s", part, strerror(errno));
    st = fsync_dir_of(req->path, err);
    if (st != IMS_OK)
        return st;
    if (req->progress)
        req->progress(req->progress_ctx, inf.size, inf.size);
    if (info)
        *info = inf;
    return IMS_OK;
}
