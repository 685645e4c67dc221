/* SPDX-License-Identifier: MIT */
/*
 * http_test_server.c: the loopback HTTP server of http_test_server.h.
 *
 * Written for tests, so clarity beats speed: one thread per connection, a
 * whole request head in a 16 KB buffer, bodies sent from memory (served
 * files are read whole per request). Every blocking call is a poll() of at
 * most 50 ms followed by a look at the stop flag, which is what lets
 * hts_stop() finish promptly even while a route is dripping or sleeping.
 * Listens on 127.0.0.1 only.
 *
 * Shared state: `mu` guards the route table, the hit table and the
 * connection list; the counters are atomics.
 */

#include "http_test_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HTS_HEAD_MAX 16384
#define HTS_FILE_MAX (256L * 1024 * 1024)

struct route {
    struct hts_route r; /* strings and body point into owned copies */
    char *path, *content_type, *headers, *redirect;
    void *body;
    long hits;
    struct route *next;
};

struct dir_route {
    char *prefix, *dir;
    long close_after;
    int close_times;
    struct dir_route *next;
};

struct hit {
    char *path;
    long n;
    struct hit *next;
};

struct conn {
    struct hts *s;
    int fd;
    pthread_t th;
    struct conn *next;
};

struct hts {
    int listen_fd;
    int port;
    pthread_t accept_th;
    atomic_int stop;
    atomic_long n_connections, n_requests, n_range, last_range_start;
    pthread_mutex_t mu;
    struct route *routes;
    struct dir_route *dirs;
    struct hit *hits;
    struct conn *conns;
};

static void die(const char *what)
{
    fprintf(stderr, "http_test_server: %s: %s\n", what, strerror(errno));
    abort();
}

static char *xstrdup(const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        die("strdup");
    return d;
}

static void sleep_sliced(struct hts *s, int ms)
{
    while (ms > 0 && !atomic_load(&s->stop)) {
        int step = ms < 20 ? ms : 20;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* Sends all bytes unless stopped or the peer goes away. 0 on success. */
static int send_all(struct hts *s, int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        if (atomic_load(&s->stop))
            return -1;
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int pr = poll(&pfd, 1, 50);
        if (pr < 0 && errno != EINTR)
            return -1;
        if (pr <= 0)
            continue;
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static long count_hit(struct hts *s, const char *path)
{
    long n;
    pthread_mutex_lock(&s->mu);
    struct hit *h = s->hits;
    while (h && strcmp(h->path, path) != 0)
        h = h->next;
    if (!h) {
        h = calloc(1, sizeof(*h));
        if (!h)
            die("calloc");
        h->path = xstrdup(path);
        h->next = s->hits;
        s->hits = h;
    }
    n = ++h->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 307: return "Temporary Redirect";
    case 404: return "Not Found";
    case 416: return "Range Not Satisfiable";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

/* ---- one response ---------------------------------------------------------- */

struct reply {
    int status;
    const char *content_type;
    const char *headers;
    const char *redirect;
    const char *body;
    size_t body_len;
    int delay_ms, drip_bytes, drip_interval_ms;
    long close_after;       /* > 0 active for this hit */
    long content_length;    /* as in hts_route */
    int no_range;
};

/* Parses "bytes=a-" / "bytes=a-b" against a body of `len`. Returns 0 when
 * absent/ignored, 1 for a valid range, -1 for unsatisfiable. */
static int parse_range(const char *range, size_t len, size_t *start, size_t *end)
{
    if (!range || strncmp(range, "bytes=", 6) != 0)
        return 0;
    char *e;
    unsigned long long a = strtoull(range + 6, &e, 10);
    if (e == range + 6 || *e != '-')
        return 0;
    unsigned long long b = len ? len - 1 : 0;
    if (e[1] >= '0' && e[1] <= '9')
        b = strtoull(e + 1, NULL, 10);
    if (a >= len)
        return -1;
    if (b >= len)
        b = len - 1;
    if (b < a)
        return -1;
    *start = (size_t)a;
    *end = (size_t)b;
    return 1;
}

/* Returns 1 to keep the connection, 0 to close it. */
static int send_reply(struct hts *s, int fd, struct reply *rp, const char *range, int keep)
{
    char head[4096];
    size_t from = 0, to = rp->body_len; /* [from, to) */
    int status = rp->status;
    char extra[256] = "";

    sleep_sliced(s, rp->delay_ms);
    if (atomic_load(&s->stop))
        return 0;
    if (range && status == 200 && !rp->no_range) {
        atomic_fetch_add(&s->n_range, 1);
        size_t a = 0, b = 0;
        int pr = parse_range(range, rp->body_len, &a, &b);
        if (pr > 0) {
            atomic_store(&s->last_range_start, (long)a);
            status = 206;
            from = a;
            to = b + 1;
            snprintf(extra, sizeof(extra), "Content-Range: bytes %zu-%zu/%zu\r\n", a, b,
                     rp->body_len);
        } else if (pr < 0) {
            status = 416;
            from = to = 0;
            snprintf(extra, sizeof(extra), "Content-Range: bytes */%zu\r\n", rp->body_len);
        }
    }
    size_t n_body = to - from;
    int close_after_body = !keep || rp->content_length != 0 || rp->close_after > 0;
    int hl = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s%s%s%s%s",
                      status, reason_phrase(status),
                      rp->content_type ? rp->content_type : "application/octet-stream",
                      rp->redirect ? "Location: " : "", rp->redirect ? rp->redirect : "",
                      rp->redirect ? "\r\n" : "", extra, rp->headers ? rp->headers : "");
    if (rp->content_length >= 0)
        hl += snprintf(head + hl, sizeof(head) - (size_t)hl, "Content-Length: %ld\r\n",
                       rp->content_length > 0 ? rp->content_length : (long)n_body);
    hl += snprintf(head + hl, sizeof(head) - (size_t)hl, "%s\r\n",
                   close_after_body ? "Connection: close\r\n" : "");
    if (hl >= (int)sizeof(head) || send_all(s, fd, head, (size_t)hl) != 0)
        return 0;

    const char *p = rp->body + from;
    size_t left = n_body;
    if (rp->close_after > 0 && (size_t)rp->close_after < left)
        left = (size_t)rp->close_after;
    while (left > 0) {
        size_t chunk = left;
        if (rp->drip_bytes > 0 && (size_t)rp->drip_bytes < chunk)
            chunk = (size_t)rp->drip_bytes;
        if (send_all(s, fd, p, chunk) != 0)
            return 0;
        p += chunk;
        left -= chunk;
        if (rp->drip_bytes > 0 && left > 0)
            sleep_sliced(s, rp->drip_interval_ms);
        if (atomic_load(&s->stop))
            return 0;
    }
    return !close_after_body;
}

static int safe_name(const char *p)
{
    if (strstr(p, ".."))
        return 0;
    for (; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '/'))
            return 0;
    }
    return 1;
}

static char *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > HTS_FILE_MAX) {
        close(fd);
        return NULL;
    }
    char *buf = malloc((size_t)sb.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)sb.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);
        if (r <= 0) {
            free(buf);
            buf = NULL;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return buf;
}

/* Answers one request; returns 1 to keep the connection. */
static int handle(struct hts *s, int fd, const char *method, const char *path, const char *range,
                  int keep)
{
    struct reply rp = {.status = 404, .content_type = "text/plain", .body = "not found\n",
                       .body_len = 10};
    char *file_body = NULL;
    int ret;
    long hit = count_hit(s, path);
    (void)method;

    pthread_mutex_lock(&s->mu);
    struct route *r = s->routes;
    while (r && strcmp(r->path, path) != 0)
        r = r->next;
    if (r) {
        r->hits++;
        const struct hts_route *h = &r->r;
        if (h->fail_times > 0 && r->hits <= h->fail_times) {
            rp.status = h->fail_status ? h->fail_status : 500;
            rp.body = "failing on purpose\n";
            rp.body_len = strlen(rp.body);
        } else {
            rp.status = h->status ? h->status : (h->redirect ? 302 : 200);
            rp.content_type = h->content_type;
            rp.headers = h->headers;
            rp.redirect = h->redirect;
            rp.body = h->body ? h->body : "";
            rp.body_len = h->body_len;
            rp.drip_bytes = h->drip_bytes;
            rp.drip_interval_ms = h->drip_interval_ms;
            rp.content_length = h->content_length;
            rp.no_range = h->no_range;
            if (h->close_after > 0 && (h->close_times == 0 || r->hits <= h->close_times))
                rp.close_after = h->close_after;
        }
        rp.delay_ms = h->delay_ms;
    } else {
        for (struct dir_route *d = s->dirs; d; d = d->next) {
            size_t pl = strlen(d->prefix);
            if (strncmp(path, d->prefix, pl) != 0 || !safe_name(path + pl))
                continue;
            char fp[4096];
            snprintf(fp, sizeof(fp), "%s/%s", d->dir, path + pl);
            size_t len = 0;
            file_body = read_file(fp, &len);
            if (file_body) {
                rp.status = 200;
                rp.content_type = NULL;
                rp.body = file_body;
                rp.body_len = len;
                if (d->close_after > 0 && (d->close_times == 0 || hit <= d->close_times))
                    rp.close_after = d->close_after;
            }
            break;
        }
    }
    /* Body pointers stay valid after unlock: routes are never removed. */
    pthread_mutex_unlock(&s->mu);
    ret = send_reply(s, fd, &rp, range, keep);
    free(file_body);
    return ret;
}

/* ---- connections ---------------------------------------------------------- */

static const char *header_value(char *head, const char *name)
{
    size_t nl = strlen(name);
    for (char *line = strstr(head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        char *l = line + 2;
        if (!strncasecmp(l, name, nl) && l[nl] == ':') {
            char *v = l + nl + 1;
            while (*v == ' ')
                v++;
            return v;
        }
    }
    return NULL;
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct hts *s = c->s;
    char *buf = malloc(HTS_HEAD_MAX + 1);
    size_t have = 0;
    if (!buf)
        die("malloc");
    for (;;) {
        char *end = NULL;
        buf[have] = '\0';
        while (!(end = strstr(buf, "\r\n\r\n"))) {
            if (have >= HTS_HEAD_MAX || atomic_load(&s->stop))
                goto done;
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
            int pr = poll(&pfd, 1, 50);
            if (pr < 0 && errno != EINTR)
                goto done;
            if (pr <= 0)
                continue;
            ssize_t r = recv(c->fd, buf + have, HTS_HEAD_MAX - have, 0);
            if (r <= 0)
                goto done;
            have += (size_t)r;
            buf[have] = '\0';
        }
        size_t head_len = (size_t)(end - buf) + 4;
        /* NUL-terminate each header line for parsing on a copy. */
        char head[HTS_HEAD_MAX + 1];
        memcpy(head, buf, head_len);
        head[head_len] = '\0';
        atomic_fetch_add(&s->n_requests, 1);

        char method[16] = "", path[2048] = "", version[16] = "";
        if (sscanf(head, "%15s %2047s %15s", method, path, version) != 3)
            goto done;
        char *q = strchr(path, '?');
        if (q)
            *q = '\0';
        char range[128] = "";
        const char *rv = header_value(head, "Range");
        if (rv)
            sscanf(rv, "%127[^\r\n]", range);
        const char *cv = header_value(head, "Connection");
        int keep = strcmp(version, "HTTP/1.1") == 0 && !(cv && !strncasecmp(cv, "close", 5));
        long body_len = 0;
        const char *cl = header_value(head, "Content-Length");
        if (cl)
            body_len = strtol(cl, NULL, 10);
        /* Discard a request body, already partly in buf. */
        size_t extra = have - head_len;
        memmove(buf, buf + head_len, extra);
        have = extra;
        while (body_len > 0) {
            size_t take = (size_t)body_len < have ? (size_t)body_len : have;
            memmove(buf, buf + take, have - take);
            have -= take;
            body_len -= (long)take;
            if (body_len == 0)
                break;
            ssize_t r = recv(c->fd, buf + have, HTS_HEAD_MAX - have, 0);
            if (r <= 0)
                goto done;
            have += (size_t)r;
        }
        if (!handle(s, c->fd, method, path, range[0] ? range : NULL, keep))
            goto done;
    }
done:
    free(buf);
    shutdown(c->fd, SHUT_RDWR);
    return NULL;
}

static void *accept_main(void *arg)
{
    struct hts *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd pfd = {.fd = s->listen_fd, .events = POLLIN};
        int pr = poll(&pfd, 1, 50);
        if (pr <= 0)
            continue;
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        atomic_fetch_add(&s->n_connections, 1);
        struct conn *c = calloc(1, sizeof(*c));
        if (!c)
            die("calloc");
        c->s = s;
        c->fd = fd;
        pthread_mutex_lock(&s->mu);
        c->next = s->conns;
        s->conns = c;
        if (pthread_create(&c->th, NULL, conn_main, c) != 0)
            die("pthread_create");
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

/* ---- public ------------------------------------------------------------------ */

struct hts *hts_start(void)
{
    struct hts *s = calloc(1, sizeof(*s));
    if (!s)
        die("calloc");
    pthread_mutex_init(&s->mu, NULL);
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0)
        die("socket");
    int one = 1;
    setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s->listen_fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        die("bind 127.0.0.1");
    if (listen(s->listen_fd, 256) != 0)
        die("listen");
    socklen_t al = sizeof(a);
    if (getsockname(s->listen_fd, (struct sockaddr *)&a, &al) != 0)
        die("getsockname");
    s->port = ntohs(a.sin_port);
    if (pthread_create(&s->accept_th, NULL, accept_main, s) != 0)
        die("pthread_create");
    return s;
}

void hts_stop(struct hts *s)
{
    if (!s)
        return;
    atomic_store(&s->stop, 1);
    pthread_join(s->accept_th, NULL);
    close(s->listen_fd);
    /* No new connections now; the list is stable. */
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        pthread_join(c->th, NULL);
        close(c->fd);
        free(c);
    }
    for (struct route *r = s->routes, *next; r; r = next) {
        next = r->next;
        free(r->path);
        free(r->content_type);
        free(r->headers);
        free(r->redirect);
        free(r->body);
        free(r);
    }
    for (struct dir_route *d = s->dirs, *next; d; d = next) {
        next = d->next;
        free(d->prefix);
        free(d->dir);
        free(d);
    }
    for (struct hit *h = s->hits, *next; h; h = next) {
        next = h->next;
        free(h->path);
        free(h);
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int hts_port(const struct hts *s)
{
    return s->port;
}

char *hts_url(const struct hts *s, const char *path, char *buf, size_t n)
{
    snprintf(buf, n, "http://127.0.0.1:%d%s", s->port, path);
    return buf;
}

void hts_route(struct hts *s, const struct hts_route *in)
{
    struct route *r = calloc(1, sizeof(*r));
    if (!r)
        die("calloc");
    r->r = *in;
    r->path = xstrdup(in->path);
    r->content_type = xstrdup(in->content_type);
    r->headers = xstrdup(in->headers);
    r->redirect = xstrdup(in->redirect);
    if (in->body_len) {
        r->body = malloc(in->body_len);
        if (!r->body)
            die("malloc");
        memcpy(r->body, in->body, in->body_len);
    }
    r->r.path = r->path;
    r->r.content_type = r->content_type;
    r->r.headers = r->headers;
    r->r.redirect = r->redirect;
    r->r.body = r->body;
    pthread_mutex_lock(&s->mu);
    r->next = s->routes;
    s->routes = r;
    pthread_mutex_unlock(&s->mu);
}

void hts_serve_dir(struct hts *s, const char *prefix, const char *dir, long close_after,
                   int close_times)
{
    struct dir_route *d = calloc(1, sizeof(*d));
    if (!d)
        die("calloc");
    d->prefix = xstrdup(prefix);
    d->dir = xstrdup(dir);
    d->close_after = close_after;
    d->close_times = close_times;
    pthread_mutex_lock(&s->mu);
    d->next = s->dirs;
    s->dirs = d;
    pthread_mutex_unlock(&s->mu);
}

long hts_connections(const struct hts *s)
{
    return atomic_load(&((struct hts *)s)->n_connections);
}

long hts_requests(const struct hts *s)
{
    return atomic_load(&((struct hts *)s)->n_requests);
}

long hts_range_requests(const struct hts *s)
{
    return atomic_load(&((struct hts *)s)->n_range);
}

long hts_last_range_start(const struct hts *s)
{
    return atomic_load(&((struct hts *)s)->last_range_start);
}

long hts_hits(struct hts *s, const char *path)
{
    long n = 0;
    pthread_mutex_lock(&s->mu);
    for (struct hit *h = s->hits; h; h = h->next)
        if (!strcmp(h->path, path))
            n = h->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

int hts_closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0)
        die("bind 127.0.0.1");
    close(fd);
    return ntohs(a.sin_port);
}
