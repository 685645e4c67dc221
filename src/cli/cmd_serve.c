/* SPDX-License-Identifier: MIT */
/*
 * cmd_serve.c: `imgsearch serve`: its options, and the start and stop of a
 * node (catalogue and replica, server, ingest service, watched folders,
 * compatibility ports, signals). What the node answers requests with is the
 * backend in cli_serve_backend.c, whose header comment describes the
 * request path and the start-up order.
 */
#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_app.h"
#include "cli_serve_backend.h"
#include "imgsearch/fetch.h"
#include "imgsearch/ingest.h"
#include "imgsearch/search.h"
#include "imgsearch/server.h"
#include "imgsearch/sync.h"

const char cli_help_serve[] =
    "usage: imgsearch serve [--data DIR] [--catalogue URL] [--model DIR] [--port N]\n"
    "                       [--host ADDR]\n"
    "                       [--precision f32|bf16] [download options]\n"
    "                       [--api-key-file FILE] [--access-log FILE] [--threads N]\n"
    "                       [--max-inflight N] [--max-queued N] [--queue-wait-ms N]\n"
    "                       [--rate N] [--ingest-batch N] [--decode-memory MIB]\n"
    "                       [hardening options]\n"
    "                       [--immich-ml [--immich-ml-port N] [--immich-model NAME[=DIR]]...]\n"
    "                       [--clip-back]\n"
    "                       [--no-ingest] [--node-id NAME]\n"
    "                       [--lease-seconds N] [--claim-batch N] [--row-cache-mb N]\n"
    "                       [--feed-keep N] [--feed-trim-seconds S]\n"
    "                       [--exif-orientation apply|ignore] [--keep-gps]\n"
    "                       [--watch FOLDER]...\n"
    "Serves the web page and the HTTP API (default http://127.0.0.1:8080).\n"
    "Write endpoints need `Authorization: Bearer KEY` when a key is configured\n"
    "(--api-key-file or IMGSEARCH_API_KEY).\n"
    "  --max-inflight N   backend calls running at once (default 32; --threads N\n"
    "                     sets it too); beyond it --max-queued N (default 64)\n"
    "                     requests wait for a slot for at most --queue-wait-ms N\n"
    "                     (default 2000), the others get 503 + Retry-After\n"
    "  --rate N           requests/s per client address, burst 2N (default 50; 0: off)\n"
    "  --ingest-batch N   images per encode batch of URL jobs and uploads (default 8)\n"
    "  --immich-ml        also answer immich's machine-learning API (GET /ping, POST /predict;\n"
    "                     CLIP only; docs/compat-immich.md), on this port or on\n"
    "                     --immich-ml-port N (a second listener serving only those routes)\n"
    "  --immich-model NAME[=DIR]  the immich model name NAME is the CLIP model folder DIR\n"
    "                     (no DIR: the served model); repeatable; default: ViT-B-32__openai\n"
    "                     is the served model\n"
    "  --clip-back        also answer clip-retrieval's back-end API (POST /knn-service,\n"
    "                     POST /metadata, GET /indices-list; docs/compat-clip-retrieval.md)\n"
    "  --decode-memory MIB  memory all image decodes may hold at once (default 512);\n"
    "                     a decode that does not fit waits --decode-wait-ms N (default\n"
    "                     5000), then gets 503 busy; counted in /metrics\n"
    "Hardening (refusals are counted in /metrics, imgsearch_http_refused_total):\n"
    "  --public-host NAME    a name clients use in Host (repeatable); others get 421.\n"
    "                        Always accepted: localhost, 127.x, [::1], the --host address,\n"
    "                        and any IP address when --host is 0.0.0.0 or ::\n"
    "  --cors-origin ORIGIN  SCHEME://HOST[:PORT] allowed to send cross-site writes and\n"
    "                        given CORS answers (repeatable); other cross-site\n"
    "                        POST/DELETE get 403\n"
    "  --trusted-proxy CIDR  peers whose Forwarded / X-Forwarded-For name the client\n"
    "                        (repeatable; rightmost untrusted hop)\n"
    "  --max-waiters N       POST /api/v1/images?wait=1 waiting at once (default 128;\n"
    "                        not counted in --max-conns-per-client)\n"
    "  --body-memory MIB     request body bytes held in memory, all requests\n"
    "                        together (default 256); beyond: 503 + Retry-After\n"
    "  --header-timeout S    request headers complete within S seconds (default 10)\n"
    "  --min-body-rate B     bytes/s a body must bring in every such window\n"
    "                        (default 1024; 0: off)\n"
    "  --max-conns-per-client N  connections per client address, IPv6 per /64\n"
    "                        (default 32; 0: off)\n"
    "  --snapshot-interval SEC  also write the index snapshot every SEC seconds when\n"
    "                     it changed (default 0: only at shutdown; needs --data)\n"
    "URL jobs are catalogue rows: every node sharing the catalogue claims their\n"
    "items in batches with a lease, renewed while it works on them.\n"
    "  --no-ingest        a query-only node: never claims job items (jobs posted\n"
    "                     here are still created, and run by the other nodes);\n"
    "                     uploads are still encoded here\n"
    "  --node-id NAME     this node in the catalogue's claims (default HOST-PID;\n"
    "                     unique among running nodes)\n"
    "  --lease-seconds N  a claim lapses after N s without renewal (default 30):\n"
    "                     a dead node's items are redone by another after that\n"
    "  --claim-batch N    job items claimed at once (default 16; 1..128)\n"
    "  --watch FOLDER     keep FOLDER in sync like `add --sync` at start and then\n"
    "                     continuously (inotify, 500 ms debounce; repeatable); a moved\n"
    "                     or deleted FOLDER is re-armed when it reappears. Status in\n"
    "                     /metrics (imgsearch_watch_*)\n"
    "  --row-cache-mb N   rows of search hits kept in memory, at most N MiB (default\n"
    "                     64; 0: off), evicted by the change feed (docs/cluster.md)\n"
    "  --feed-keep N      keep the newest N changes of the catalogue's change feed\n"
    "                     (default 1000000; 0: never trim); older ones are trimmed\n"
    "                     every --feed-trim-seconds S (default 60) by one node at a\n"
    "                     time; a node left below them rebuilds its index live\n"
    "With --catalogue, --data is optional: a cache for the index snapshot (without\n"
    "it the index is built from the catalogue at every start). Until the index has\n"
    "caught up, /healthz and /readyz answer 503 {\"status\":\"starting\"}.\n"
    "  --keep-gps         store the EXIF GPS position of added photos (default: not)\n"
    CLI_EXIF_HELP CLI_FETCH_HELP
    CLI_CATALOGUE_HELP;

/* ---- the command ---------------------------------------------------------------- */

/* Set by on_stop_signal when SIGINT/SIGTERM reach a thread that does not
 * block them (see cli_cmd_serve). */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig) { stop_signal = sig; }

int cli_cmd_serve(int argc, char **argv)
{
    struct cli_app_options o = {0};
    struct server_options so;
    server_options_init(&so);
    struct fetch_options fo;
    fetch_options_default(&fo);
    const char *key_file = NULL, *access_log = NULL;
    long ingest_batch = 8; /* keeps query latency low while a job runs */
    struct app_backend b = {0};
    long immich_port = -1;
    long decode_mib = 0, decode_wait_ms = -1; /* image module defaults */
    long snapshot_interval = 0;
    const char *node_id = NULL;
    long lease_s = 30, claim_batch = 16, row_cache_mb = 64;
    long feed_keep = 1000000, trim_s = 60;
    int no_ingest = 0;
    int exif_ignore = 0, keep_gps = 0;
    int inflight_set = 0;
    int rc = 0;
    /* repeatable options: argv strings, which outlive the server */
    enum { LIST_MAX = 64 };
    static const char *hosts[LIST_MAX], *origins[LIST_MAX], *proxies[LIST_MAX];
    so.public_hosts = hosts;
    so.cors_origins = origins;
    so.trusted_proxies = proxies;
    for (int i = 1; i < argc; i++) {
        const char *v;
        long num;
        int r = cli_app_parse_common(argc, argv, &i, &o);
        if (r < 0)
            goto bad_value;
        if (r > 0)
            continue;
        if ((r = cli_app_parse_fetch(argc, argv, &i, &fo)) != 0) {
            if (r < 0)
                goto bad_value;
        } else if ((r = cli_opt_value(argc, argv, &i, "--exif-orientation", &v)) != 0) {
            if (r < 0 || cli_parse_exif_orientation(v, &exif_ignore))
                goto bad_value;
        } else if (!strcmp(argv[i], "--keep-gps")) {
            keep_gps = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--port", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 65535, &num))
                goto bad_value;
            so.port = (unsigned)num;
        } else if ((r = cli_opt_value(argc, argv, &i, "--host", &v)) != 0) {
            if (r < 0)
                goto bad_value;
            so.host = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--threads", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 256, &num))
                goto bad_value;
            so.n_threads = (unsigned)num;
            if (!inflight_set)
                so.max_inflight = (unsigned)num; /* what --threads always meant here */
        } else if ((r = cli_opt_value(argc, argv, &i, "--max-inflight", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 4096, &num))
                goto bad_value;
            so.max_inflight = (unsigned)num;
            inflight_set = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--max-queued", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 65536, &num))
                goto bad_value;
            so.max_queued = (unsigned)num;
        } else if ((r = cli_opt_value(argc, argv, &i, "--queue-wait-ms", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 600000, &num))
                goto bad_value;
            so.queue_wait_ms = (unsigned)num;
        } else if ((r = cli_opt_value(argc, argv, &i, "--rate", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 1000000, &num))
                goto bad_value;
            so.rate_per_s = (double)num;
            so.rate_burst = 2.0 * (double)num;
        } else if (strcmp(argv[i], "--immich-ml") == 0) {
            so.compat |= SERVER_COMPAT_IMMICH;
        } else if (strcmp(argv[i], "--clip-back") == 0) {
            so.compat |= SERVER_COMPAT_CLIP_BACK;
        } else if ((r = cli_opt_value(argc, argv, &i, "--immich-ml-port", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 65535, &immich_port))
                goto bad_value;
        } else if ((r = cli_opt_value(argc, argv, &i, "--immich-model", &v)) != 0) {
            if (r < 0 || !*v || *v == '=' || b.n_immich == IMMICH_MODELS_MAX)
                goto bad_value;
            char *eq = strchr(v, '=');
            size_t nlen = eq ? (size_t)(eq - v) : strlen(v);
            for (size_t k = 0; k < b.n_immich; k++)
                if (strlen(b.immich[k].name) == nlen && !strncmp(b.immich[k].name, v, nlen))
                    goto bad_value; /* one folder per name */
            b.immich[b.n_immich].name = v;
            b.immich[b.n_immich].dir = eq ? eq + 1 : NULL;
            if (eq)
                *eq = '\0'; /* argv is ours to cut */
            b.n_immich++;
        } else if ((r = cli_opt_value(argc, argv, &i, "--ingest-batch", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 256, &ingest_batch))
                goto bad_value;
        } else if ((r = cli_opt_value(argc, argv, &i, "--decode-memory", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 16, 1 << 20, &num))
                goto bad_value;
            decode_mib = num;
        } else if ((r = cli_opt_value(argc, argv, &i, "--decode-wait-ms", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 600000, &num))
                goto bad_value;
            decode_wait_ms = num;
        } else if ((r = cli_opt_value(argc, argv, &i, "--public-host", &v)) != 0) {
            if (r < 0 || so.n_public_hosts >= LIST_MAX)
                goto bad_value;
            hosts[so.n_public_hosts++] = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--cors-origin", &v)) != 0) {
            if (r < 0 || so.n_cors_origins >= LIST_MAX)
                goto bad_value;
            origins[so.n_cors_origins++] = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--trusted-proxy", &v)) != 0) {
            if (r < 0 || so.n_trusted_proxies >= LIST_MAX)
                goto bad_value;
            proxies[so.n_trusted_proxies++] = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--max-waiters", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 65536, &num))
                goto bad_value;
            so.max_waiters = (unsigned)num;
        } else if ((r = cli_opt_value(argc, argv, &i, "--body-memory", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 1L << 20, &num))
                goto bad_value;
            so.body_budget_bytes = (size_t)num << 20;
        } else if ((r = cli_opt_value(argc, argv, &i, "--header-timeout", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 3600, &num))
                goto bad_value;
            so.header_timeout_ms = (unsigned)num * 1000u;
        } else if ((r = cli_opt_value(argc, argv, &i, "--min-body-rate", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 1L << 30, &num))
                goto bad_value;
            so.body_min_rate = (size_t)num;
        } else if ((r = cli_opt_value(argc, argv, &i, "--max-conns-per-client", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 65536, &num))
                goto bad_value;
            so.max_conns_per_client = (unsigned)num;
        } else if ((r = cli_opt_value(argc, argv, &i, "--snapshot-interval", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 86400 * 365, &snapshot_interval))
                goto bad_value;
        } else if (strcmp(argv[i], "--no-ingest") == 0) {
            no_ingest = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--watch", &v)) != 0) {
            if (r < 0 || !*v || b.n_watch == SYNC_WATCH_MAX_ROOTS)
                goto bad_value;
            b.watch_dirs[b.n_watch++] = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--node-id", &v)) != 0) {
            if (r < 0 || !*v || strlen(v) > STORE_NODE_ID_MAX_BYTES)
                goto bad_value;
            node_id = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--lease-seconds", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 86400, &lease_s))
                goto bad_value;
        } else if ((r = cli_opt_value(argc, argv, &i, "--row-cache-mb", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 1L << 20, &row_cache_mb))
                goto bad_value;
        } else if ((r = cli_opt_value(argc, argv, &i, "--feed-keep", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 1L << 40, &feed_keep))
                goto bad_value;
        } else if ((r = cli_opt_value(argc, argv, &i, "--feed-trim-seconds", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 86400, &trim_s))
                goto bad_value;
        } else if ((r = cli_opt_value(argc, argv, &i, "--claim-batch", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 128, &claim_batch))
                goto bad_value;
        } else if ((r = cli_opt_value(argc, argv, &i, "--api-key-file", &v)) != 0) {
            if (r < 0)
                goto bad_value;
            key_file = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--access-log", &v)) != 0) {
            if (r < 0)
                goto bad_value;
            access_log = v;
        } else {
            server_options_fini(&so);
            return cli_usage("serve", cli_help_serve, "unexpected argument '%s'", argv[i]);
        }
        continue;
    bad_value:
        server_options_fini(&so);
        return cli_usage("serve", cli_help_serve, "bad or missing value for %s", argv[i]);
    }
    if ((immich_port >= 0 || b.n_immich) && !(so.compat & SERVER_COMPAT_IMMICH)) {
        server_options_fini(&so);
        return cli_usage("serve", cli_help_serve,
                         "--immich-ml-port and --immich-model need --immich-ml");
    }
    image_decode_budget_set((size_t)decode_mib << 20, (int)decode_wait_ms);
    struct ims_error err = {0};
    enum ims_status st = server_options_load_api_key(&so, key_file, &err);
    if (st != IMS_OK) {
        server_options_fini(&so);
        return cli_fail("serve", "%s", ims_error_message(&err, st));
    }
    FILE *log = NULL;
    if (access_log) {
        log = strcmp(access_log, "-") == 0 ? stdout : fopen(access_log, "a");
        if (!log) {
            server_options_fini(&so);
            return cli_fail("serve", "cannot open %s: %s", access_log, strerror(errno));
        }
        setvbuf(log, NULL, _IOLBF, 0);
        so.access_log = log;
    }

    /* SIGINT/SIGTERM are taken by sigwait below: block them before any
     * thread (model pool, ingest, server) starts, so every thread inherits it */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A thread we did not create (a library's, started before main) may not
     * block them: there the default action would kill the process without
     * its shutdown (seen under ASan). A handler turns such a delivery into a
     * flag the loop below polls, so SIGTERM always shuts down cleanly. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART; /* the library call it interrupts goes on */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    o.with_model = 1;
    o.with_index = 1;
    o.defer_sync = 1; /* answer /healthz "starting" while the index is built */
    o.snapshot_interval_s = (int)snapshot_interval;
    o.feed_keep = feed_keep;
    o.trim_interval_ms = (int)trim_s * 1000;
    struct cli_app app;
    b.app = &app;
    b.fetch = fo;
    struct server *srv = NULL, *srv_immich = NULL;
    if (cli_app_open("serve", &o, &app) != 0) {
        rc = 1;
        goto out_opts;
    }
    struct server_backend be;
    cli_serve_backend_ops(&b, &be);
    if ((so.compat & SERVER_COMPAT_IMMICH) &&
        cli_serve_immich_open(&b, o.model_dir ? o.model_dir : cli_default_model_dir(),
                           o.precision) != 0) {
        rc = 1;
        goto out;
    }
    st = store_row_cache_set(app.store, (size_t)row_cache_mb << 20, &err);
    if (st == IMS_OK)
        st = replica_follow_start(app.replica, &err);
    if (st == IMS_OK) {
        struct server_options own = so;
        if (immich_port >= 0)
            own.compat &= ~SERVER_COMPAT_IMMICH; /* served by the second listener */
        st = server_start(&own, &be, &srv, &err);
    }
    if (st == IMS_OK && immich_port >= 0) {
        struct server_options io = so;
        io.port = (unsigned)immich_port;
        io.compat = SERVER_COMPAT_IMMICH;
        io.compat_only = true;
        st = server_start(&io, &be, &srv_immich, &err);
        if (st == IMS_OK)
            fprintf(stderr, "imgsearch: immich machine-learning API on port %u\n",
                    server_port(srv_immich));
    }
    if (st != IMS_OK) {
        rc = cli_fail("serve", "%s", ims_error_message(&err, st));
        goto out;
    }
    const char *host = so.host ? so.host : "127.0.0.1";
    const char *lb = strchr(host, ':') ? "[" : "", *rb = strchr(host, ':') ? "]" : "";
    /* "serving" (what scripts wait for) is printed once the node is ready */
    fprintf(stderr, "imgsearch: listening on http://%s%s%s:%u/, starting (catalogue %s)\n", lb,
            host, rb, server_port(srv), store_location(app.store));
    int sig = 0;
    for (;;) {
        struct timespec tick = {0, 50 * 1000000L};
        sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig == SIGINT || sig == SIGTERM)
            break;
        if (stop_signal) {
            sig = stop_signal;
            break;
        }
        if (atomic_load(&b.ready) || !replica_ready(app.replica))
            continue;
        /* the index has caught up: build what serves on it, then open */
        struct vindex *vx = replica_index(app.replica);
        struct search_options sopt;
        search_options_default(&sopt);
        st = imgsearch__engine_start(app.is, &sopt, &err); /* the handle's (libimgsearch) */
        b.se = imgsearch__engine(app.is);
        if (st == IMS_OK) {
            struct ingest_options io;
            ingest_options_default(&io);
            io.fetch = fo;
            io.allow_local_files = 0; /* the HTTP API never reads the server's disk */
            io.batch_size = (int)ingest_batch;
            io.node_id = node_id;
            io.lease_ms = lease_s * 1000;
            io.claim_batch = (int)claim_batch;
            io.no_ingest = no_ingest;
            io.exif_orientation_ignore = exif_ignore;
            io.keep_gps = keep_gps;
            struct ingest_deps deps = {app.model, app.store, cli_app_after_commit, &app};
            st = ingest_new(&deps, &io, &b.ing, &err);
            if (st == IMS_OK && b.n_watch > 0) { /* the same pipeline, on local files */
                b.watch_deps = deps;
                b.watch_io = io;
                st = sync_watch_start(&b.watch_deps, &b.watch_io, b.watch_dirs, b.n_watch, NULL,
                                      &b.watch, &err);
            }
        }
        if (st != IMS_OK) {
            rc = cli_fail("serve", "%s", ims_error_message(&err, st));
            goto out;
        }
        /* warm-up: the first encode JIT-compiles the kernels; pay it now,
         * not on the first user's query */
        float *v = ims_malloc(app.dim * sizeof(float));
        struct ims_error werr = {0};
        enum ims_status wst =
            v ? search_embed_text(b.se, "a photo", v, NULL, &werr) : IMS_ERR_NOMEM;
        if (wst != IMS_OK) /* the first query pays for it instead */
            ims_log(IMS_LOG_WARN, "serve: the warm-up encode failed: %s",
                    ims_error_message(&werr, wst));
        ims_free(v);
        atomic_store(&b.ready, 1);
        int64_t n = 0;
        memset(&werr, 0, sizeof(werr));
        if ((wst = store_count(app.store, &n, &werr)) != IMS_OK)
            ims_log(IMS_LOG_WARN, "serve: cannot count the catalogue's images: %s",
                    ims_error_message(&werr, wst));
        fprintf(stderr,
                "imgsearch: serving http://%s%s%s:%u/ (%lld images, model %s, index %s%s)\n", lb,
                host, rb, server_port(srv), (long long)n, app.model_name, vindex_spec(vx),
                so.api_key ? ", API key required for writes" : "");
    }
    fprintf(stderr, "imgsearch: %s: shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
out:
    server_stop(srv_immich);
    server_stop(srv);
    sync_watch_stop(b.watch); /* a sync in progress stops; what it committed stays */
    ingest_free(b.ing); /* what is in flight is committed and recorded */
    server_free(srv_immich);
    server_free(srv);
    cli_serve_immich_close(&b);
    if (app.store && cli_app_close("serve", &app, atomic_load(&b.ready)) != 0)
        rc = 1;
out_opts:
    if (log && log != stdout && fclose(log) != 0) /* its last lines may be lost */
        fprintf(stderr, "imgsearch serve: cannot finish writing the access log: %s\n",
                strerror(errno));
    server_options_fini(&so);
    return rc;
}
