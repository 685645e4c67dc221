/* SPDX-License-Identifier: MIT */
/*
 * server_daemon.c: the daemon around the request path (server.c): options,
 * server_start (limits resolved, guard, rate limiter and connection table
 * set up, MHD started with server.c's access handler), the MHD callbacks of
 * the connection's life (the per-client accept policy, the connection table,
 * request completion with its access-log line and metrics) and
 * server_stop's drain. The order of shutdown is in server.c's DESIGN block.
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

#define SERVER_DEFAULT_INFLIGHT 32 /* see "Back-pressure" in server.c */

/* ---- logs --------------------------------------------------------------------------------- */

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char line[1024];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = '\0';
    server__error_log(cls, "libmicrohttpd: %s", line);
}

static void access_log(struct server *s, const struct server_request *r, double seconds)
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

/* ---- MHD callbacks ----------------------------------------------------------------------------------- */

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

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct server *s = cls;
    struct server_request *r = *con_cls;
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
    server__request_free(r);
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
        flags, (uint16_t)s->o.port, on_accept, s, server__on_request, s, MHD_OPTION_SOCK_ADDR, sa,
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
        server__error_log(s, "shutdown: %d request(s) still running after %u ms",
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
