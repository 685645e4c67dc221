/* SPDX-License-Identifier: MIT */
/*
 * bench_server_load: a small closed-loop HTTP/1.1 load generator for
 * bench_server.py, with exact per-request latencies.
 *
 *     bench_server_load --port P --paths FILE [--conc N] [--seconds S]
 *                       [--max-requests N] [--cycle]
 *
 * FILE holds one request target per line ("/api/v1/search?q=...&k=10",
 * already URL-encoded). N client threads each keep one keep-alive
 * connection to 127.0.0.1:P and send GET requests back to back (the next
 * request leaves when the previous answer is complete, like wrk's closed
 * loop). Targets are handed out in file order through an atomic counter:
 * without --cycle the run stops when the list is used up (every request a
 * different target: cache misses), with --cycle it wraps around (a small
 * set repeated: cache hits). The run also stops after S seconds (default 5)
 * or N requests.
 *
 * Latency is measured from just before the request is written to the last
 * byte of the body; answers are read by Content-Length (the server never
 * sends chunked bodies for the API). Prints one JSON object: requests,
 * 2xx count, other statuses, transport errors, wall time, requests/s and
 * latency percentiles in milliseconds (nearest-rank over every request).
 *
 * Talks only to 127.0.0.1. A thread per connection is the simplest way to
 * get exact latencies; each thread sleeps in recv() while its request is
 * served, so on a 2-core machine the client costs a few percent of a core.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "bench_cpu.h"
#include "bench_stats.h"

#define MAX_CONC 1024
#define RESP_MAX (4u << 20)

static char **g_paths;
static size_t g_n_paths;
static int g_cycle;
static unsigned g_port;
static double g_deadline;
static long g_max_requests;
static atomic_long g_next;

struct client {
    pthread_t th;
    double *lat_ms; /* one entry per completed request */
    size_t n_lat, cap_lat;
    long n2xx, nother, nerr;
    long status_count[6]; /* by first digit */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int connect_loopback(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)g_port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {30, 0}; /* a hung server ends the run, not the machine */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads one response. Returns the HTTP status, or -1 on a transport or
 * framing error. *close_after: the server asked to close the connection. */
static int read_response(int fd, char *buf, size_t cap, int *close_after)
{
    size_t have = 0, head_end = 0;
    *close_after = 0;
    for (;;) {
        if (have == cap)
            return -1;
        ssize_t r = recv(fd, buf + have, cap - have, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        have += (size_t)r;
        char *e = memmem(buf, have, "\r\n\r\n", 4);
        if (e) {
            head_end = (size_t)(e - buf) + 4;
            break;
        }
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    long content_length = -1;
    const char *h = (const char *)memchr(buf, '\n', head_end) + 1;
    while ((size_t)(h - buf) < head_end) {
        const char *eol = memchr(h, '\n', head_end - (size_t)(h - buf));
        if (!eol)
            break;
        size_t len = (size_t)(eol - h);
        if (!strncasecmp(h, "Content-Length:", 15))
            content_length = strtol(h + 15, NULL, 10);
        else if (!strncasecmp(h, "Connection:", 11) && memmem(h, len, "close", 5))
            *close_after = 1;
        else if (!strncasecmp(h, "Transfer-Encoding:", 18))
            return -1; /* not expected from this server */
        h = eol + 1;
    }
    if (content_length < 0 || (size_t)content_length > cap - head_end)
        return -1;
    size_t want = head_end + (size_t)content_length;
    while (have < want) {
        ssize_t r = recv(fd, buf + have, want - have, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        have += (size_t)r;
    }
    return have == want ? status : -1; /* pipelining is never used */
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    char *buf = malloc(RESP_MAX);
    char *req = malloc(16384);
    int fd = -1;
    if (!buf || !req)
        goto out;
    for (;;) {
        long i = atomic_fetch_add(&g_next, 1);
        if ((g_max_requests && i >= g_max_requests) || (!g_cycle && (size_t)i >= g_n_paths))
            break;
        if (now_s() >= g_deadline)
            break;
        const char *path = g_paths[(size_t)i % g_n_paths];
        int n = snprintf(req, 16384, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
        if (n <= 0 || n >= 16384) {
            c->nerr++;
            continue;
        }
        if (fd < 0 && (fd = connect_loopback()) < 0) {
            c->nerr++;
            continue;
        }
        double t0 = now_s();
        int close_after = 0, status = -1;
        if (write_all(fd, req, (size_t)n) == 0)
            status = read_response(fd, buf, RESP_MAX, &close_after);
        double t1 = now_s();
        if (status < 0) {
            c->nerr++;
            close(fd);
            fd = -1;
            continue;
        }
        if (c->n_lat == c->cap_lat) {
            size_t cap = c->cap_lat ? 2 * c->cap_lat : 4096;
            double *p = realloc(c->lat_ms, cap * sizeof(*p));
            if (!p)
                break;
            c->lat_ms = p;
            c->cap_lat = cap;
        }
        c->lat_ms[c->n_lat++] = (t1 - t0) * 1e3;
        if (status >= 200 && status < 300)
            c->n2xx++;
        else
            c->nother++;
        if (status >= 100 && status < 600)
            c->status_count[status / 100]++;
        if (close_after) {
            close(fd);
            fd = -1;
        }
    }
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    free(req);
    return NULL;
}

static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999); /* nearest rank, 1-based */
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

static int load_paths(const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f)
        return -1;
    size_t cap = 0;
    char line[16384];
    while (fgets(line, sizeof(line), f)) {
        size_t len = strcspn(line, "\r\n");
        if (len == 0)
            continue;
        line[len] = '\0';
        if (g_n_paths == cap) {
            cap = cap ? 2 * cap : 1024;
            char **p = realloc(g_paths, cap * sizeof(*p));
            if (!p) {
                fclose(f);
                return -1;
            }
            g_paths = p;
        }
        if (!(g_paths[g_n_paths++] = strdup(line))) {
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return g_n_paths ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *paths = NULL;
    int conc = 1;
    double seconds = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--cycle")) {
            g_cycle = 1;
            continue;
        }
        if (!v)
            goto usage;
        if (!strcmp(a, "--port"))
            g_port = (unsigned)atoi(v);
        else if (!strcmp(a, "--paths"))
            paths = v;
        else if (!strcmp(a, "--conc"))
            conc = atoi(v);
        else if (!strcmp(a, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(a, "--max-requests"))
            g_max_requests = atol(v);
        else
            goto usage;
        i++;
    }
    if (!paths || g_port == 0 || g_port > 65535 || conc < 1 || conc > MAX_CONC || seconds <= 0)
        goto usage;
    if (load_paths(paths) != 0) {
        fprintf(stderr, "bench_server_load: cannot read targets from %s\n", paths);
        return 1;
    }
    struct client *cl = calloc((size_t)conc, sizeof(*cl));
    if (!cl)
        return 1;
    double t0 = now_s();
    g_deadline = t0 + seconds;
    for (int i = 0; i < conc; i++)
        if (pthread_create(&cl[i].th, NULL, client_main, &cl[i]) != 0) {
            fprintf(stderr, "bench_server_load: cannot start thread %d\n", i);
            return 1;
        }
    for (int i = 0; i < conc; i++)
        pthread_join(cl[i].th, NULL);
    double wall = now_s() - t0;
    size_t n = 0;
    long n2xx = 0, nother = 0, nerr = 0, sc[6] = {0};
    for (int i = 0; i < conc; i++) {
        n += cl[i].n_lat;
        n2xx += cl[i].n2xx;
        nother += cl[i].nother;
        nerr += cl[i].nerr;
        for (int k = 0; k < 6; k++)
            sc[k] += cl[i].status_count[k];
    }
    double *all = malloc((n ? n : 1) * sizeof(*all));
    if (!all)
        return 1;
    size_t j = 0;
    for (int i = 0; i < conc; i++) {
        memcpy(all + j, cl[i].lat_ms, cl[i].n_lat * sizeof(*all));
        j += cl[i].n_lat;
        free(cl[i].lat_ms);
    }
    qsort(all, n, sizeof(*all), bench_cmp_double);
    printf("{");
    bench_cpu_print_json(stdout);
    printf("\"concurrency\": %d, \"requests\": %zu, \"ok_2xx\": %ld, \"non_2xx\": %ld, "
           "\"status_4xx\": %ld, \"status_5xx\": %ld, \"transport_errors\": %ld, "
           "\"wall_s\": %.3f, \"requests_per_s\": %.1f, \"p50_ms\": %.3f, \"p90_ms\": %.3f, "
           "\"p99_ms\": %.3f, \"max_ms\": %.3f}\n",
           conc, n, n2xx, nother, sc[4], sc[5], nerr, wall, (double)n / wall, pct(all, n, 50),
           pct(all, n, 90), pct(all, n, 99), n ? all[n - 1] : 0.0);
    free(all);
    free(cl);
    return 0;
usage:
    fprintf(stderr, "usage: bench_server_load --port P --paths FILE [--conc N] [--seconds S] "
                    "[--max-requests N] [--cycle]\n");
    return 2;
}
