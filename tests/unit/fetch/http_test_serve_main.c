/* SPDX-License-Identifier: MIT */
/*
 * http_test_serve_main.c: the loopback test server as a process, for
 * integration scripts (tests/integration/model_fetch_test.py).
 *
 * usage: http_test_serve --dir DIR --state FILE [--prefix P] [--close-after N]
 *                        [--close-times K] [--max-seconds S]
 *
 * Serves DIR below prefix P (default "/") on 127.0.0.1, port chosen by the
 * kernel. Rewrites FILE (atomically) every 50 ms with one line:
 *     port=<port> connections=<n> requests=<n> range_requests=<n> last_range_start=<n>
 * Exits on SIGTERM/SIGINT or after S seconds (default 60), so a broken
 * script can never leave it running.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_test_server.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void write_state(struct hts *s, const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "port=%d connections=%ld requests=%ld range_requests=%ld last_range_start=%ld\n",
            hts_port(s), hts_connections(s), hts_requests(s), hts_range_requests(s),
            hts_last_range_start(s));
    if (fclose(f) == 0)
        rename(tmp, path);
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *state = NULL, *prefix = "/";
    long close_after = 0, close_times = 0, max_seconds = 60;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--dir"))
            dir = argv[i + 1];
        else if (!strcmp(argv[i], "--state"))
            state = argv[i + 1];
        else if (!strcmp(argv[i], "--prefix"))
            prefix = argv[i + 1];
        else if (!strcmp(argv[i], "--close-after"))
            close_after = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--close-times"))
            close_times = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-seconds"))
            max_seconds = atol(argv[i + 1]);
        else {
            fprintf(stderr, "http_test_serve: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!dir || !state) {
        fprintf(stderr, "usage: http_test_serve --dir DIR --state FILE [--prefix P] "
                        "[--close-after N] [--close-times K] [--max-seconds S]\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    struct hts *s = hts_start();
    hts_serve_dir(s, prefix, dir, close_after, (int)close_times);
    for (long ticks = 0; !stop && ticks < max_seconds * 20; ticks++) {
        write_state(s, state);
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    write_state(s, state);
    hts_stop(s);
    return 0;
}
