/* SPDX-License-Identifier: MIT */
/*
 * http_test_server.h: a tiny HTTP/1.1 server on 127.0.0.1 for tests.
 *
 *     struct hts *s = hts_start();                  // 127.0.0.1, port 0
 *     hts_route(s, &(struct hts_route){.path = "/a.jpg", .body = jpg, .body_len = n});
 *     hts_route(s, &(struct hts_route){.path = "/slow", .drip_bytes = 10,
 *                                       .drip_interval_ms = 200, .body = big, ...});
 *     hts_serve_dir(s, "/files/", "/tmp/xyz");      // GET /files/a.bin, Range ok
 *     char url[128]; hts_url(s, "/a.jpg", url, sizeof(url));
 *     ... run the code under test against url ...
 *     assert(hts_connections(s) == 3);
 *     hts_stop(s);                                  // joins every thread
 *
 * It listens only on 127.0.0.1 (never anything else). One accept thread,
 * one thread per connection; keep-alive unless a route closes. Every wait
 * (delays, drips) is sliced so hts_stop returns within ~50 ms whatever the
 * routes do. Request bodies (Content-Length) are read and discarded.
 *
 * Routes match the path exactly (query string ignored); unknown paths get 404.
 * hts_route copies everything it is given. Routes may be added while the
 * server runs. Counters are atomic and may be read from any thread.
 *
 * Also built into the standalone helper `http_test_serve` (see
 * http_test_serve_main.c) for integration tests in other languages.
 */
#ifndef IMS_HTTP_TEST_SERVER_H
#define IMS_HTTP_TEST_SERVER_H

#include <stddef.h>

struct hts;

struct hts_route {
    const char *path;        /* exact path, e.g. "/img.jpg" */
    int status;              /* 0: 200 (or 302 with `redirect`) */
    const char *content_type;   /* NULL: application/octet-stream */
    const char *headers;     /* extra header lines, each ending "\r\n" */
    const void *body;
    size_t body_len;
    const char *redirect;    /* Location value; status defaults to 302 */
    int delay_ms;            /* before the status line */
    int drip_bytes;          /* > 0: send the body this many bytes ... */
    int drip_interval_ms;    /* ... every this many ms */
    long close_after;        /* > 0: close the connection after this many body
                                bytes (only on the first `close_times` hits) */
    int close_times;         /* 0 with close_after > 0: every hit */
    long content_length;     /* 0: the true length; > 0: announce this instead
                                (a lie); -1: announce none (close-delimited) */
    int fail_times;          /* the first N hits answer `fail_status` instead */
    int fail_status;         /* 0: 500 */
    int no_range;            /* 1: ignore Range headers (always 200) */
};

/* Starts the server; aborts the test process if it cannot (no socket). */
struct hts *hts_start(void);
/* Stops accepting, closes every connection, joins all threads, frees. */
void hts_stop(struct hts *s);

int hts_port(const struct hts *s);
/* "http://127.0.0.1:<port><path>" into buf; returns buf. */
char *hts_url(const struct hts *s, const char *path, char *buf, size_t n);

void hts_route(struct hts *s, const struct hts_route *r);
/* Serves files below `dir` as GET <prefix><name>, with Range support.
 * `close_after`/`close_times` apply as in a route. Names with ".." or
 * characters outside [A-Za-z0-9._/-] get 404. */
void hts_serve_dir(struct hts *s, const char *prefix, const char *dir, long close_after,
                   int close_times);

long hts_connections(const struct hts *s); /* TCP connections accepted */
long hts_requests(const struct hts *s);    /* requests parsed */
/* Requests that carried a Range header, and the start offset of the last. */
long hts_range_requests(const struct hts *s);
long hts_last_range_start(const struct hts *s);
/* Hits of a route or served file path so far. */
long hts_hits(struct hts *s, const char *path);

/* A 127.0.0.1 port that nothing listens on (bound, then closed). */
int hts_closed_port(void);

#endif
