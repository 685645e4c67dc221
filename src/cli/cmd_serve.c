/* SPDX-License-Identifier: MIT */
/*
 * cmd_serve.c: `imgsearch serve`: the HTTP server over the real modules.
 *
 * DESIGN
 * ------
 * The server module knows HTTP only; this file implements its backend
 * (struct server_backend) with search, ingest, store and index:
 *   stats        store_count + the model and index type
 *   search       search_run; image_url terms are downloaded here first with
 *                the fetch module (same limits and address policy as ingest)
 *   add_urls     ingest_submit (a queued job, run by the ingest service's
 *                runner thread); job_get / job_wait read the jobs table
 *   upload       ingest_add_bytes, one file at a time
 *   image_*      store reads; delete removes the row, then the index entry
 *   metrics      counters of search, ingest and the index
 * Threads: libmicrohttpd's connection threads call these concurrently; every module used
 * is thread-safe (see their headers). Signals: SIGINT/SIGTERM are blocked in
 * every thread and taken by sigwait in the main thread, which then stops
 * the server (draining requests), stops ingest (the running job commits what
 * is in flight and is marked interrupted), writes the index snapshot and
 * exits 0.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_app.h"
#include "imgsearch/fetch.h"
#include "imgsearch/ingest.h"
#include "imgsearch/search.h"
#include "imgsearch/server.h"

const char cli_help_serve[] =
    "usage: imgsearch serve [--data DIR] [--catalogue URL]"
    " [--model DIR] [--port N] [--host ADDR]\n"
    "                       [--precision f32|bf16] [download options]\n"
    "                       [--api-key-file FILE] [--access-log FILE] [--threads N]\n"
    "                       [--max-inflight N] [--max-queued N] [--queue-wait-ms N]\n"
    "                       [--rate N] [--ingest-batch N]\n"
    "                       [--exif-orientation apply|ignore] [--keep-gps]\n"
    "Serves the web page and the HTTP API (default http://127.0.0.1:8080).\n"
    "Write endpoints need `Authorization: Bearer KEY` when a key is configured\n"
    "(--api-key-file or IMGSEARCH_API_KEY).\n"
    "  --max-inflight N   backend calls running at once (default 32; --threads N\n"
    "                     sets it too); beyond it --max-queued N (default 64)\n"
    "                     requests wait for a slot for at most --queue-wait-ms N\n"
    "                     (default 2000), the others get 503 + Retry-After\n"
    "  --rate N           requests/s per client address, burst 2N (default 50; 0: off)\n"
    "  --ingest-batch N   images per encode batch of URL jobs and uploads (default 8)\n"
    "  --keep-gps         store the EXIF GPS position of added photos (default: not)\n"
    CLI_EXIF_HELP CLI_FETCH_HELP
    CLI_CATALOGUE_HELP;

struct app_backend {
    struct cli_app *app;
    struct search_engine *se;
    struct ingest *ing;
    struct fetch_options fetch;
};

/* ---- helpers ------------------------------------------------------------------ */

static void row_from_store(struct server_arena *a, const struct store_image_row *r,
                           struct server_row *out)
{
    out->id = r->id;
    out->url = r->source ? server_arena_strdup(a, r->source) : NULL;
    out->width = (int)r->width;
    out->height = (int)r->height;
    out->added_unix = r->added;
    out->format = r->format ? server_arena_strdup(a, r->format) : NULL;
    /* the EXIF date taken lives in the row's metadata (issue 10) */
    json_t *meta = r->metadata ? json_loads(r->metadata, 0, NULL) : NULL;
    json_t *tv = meta ? json_object_get(meta, "taken") : NULL;
    out->has_taken = json_is_integer(tv);
    out->taken = out->has_taken ? (int64_t)json_integer_value(tv) : 0;
    json_decref(meta);
}

struct one_fetch {
    enum ims_status st;
    char reason[512];
    char *body;
    size_t len;
    int done;
};

static void on_one_fetched(void *user, struct fetch_result *r)
{
    struct one_fetch *f = user;
    f->done = 1;
    f->st = r->status;
    if (r->status == IMS_OK) {
        f->body = r->body;
        f->len = r->body_len;
        r->body = NULL;
    } else {
        snprintf(f->reason, sizeof(f->reason), "%s", r->reason ? r->reason : "");
    }
}

/* Downloads one image for an image_url term. */
static enum ims_status fetch_one(struct app_backend *b, const char *url, char **body, size_t *len,
                                 struct ims_error *err)
{
    struct fetcher *f = NULL;
    struct one_fetch one = {0};
    enum ims_status st = fetcher_new(&b->fetch, &f, err);
    if (st != IMS_OK)
        return st;
    st = fetcher_add(f, url, &one, err);
    while (st == IMS_OK && !one.done)
        st = fetcher_poll(f, 1000, on_one_fetched, NULL, err);
    fetcher_free(f);
    if (st != IMS_OK)
        return st;
    if (one.st != IMS_OK)
        return ims_error_set(err, one.st == IMS_ERR_REFUSED ? IMS_ERR_REFUSED : IMS_ERR_INVALID,
                             "image_url %s: %s", url, one.reason);
    *body = one.body;
    *len = one.len;
    return IMS_OK;
}

/* ---- backend operations ------------------------------------------------------ */

static enum ims_status be_stats(void *self, struct server_arena *a, struct server_stats *out,
                                struct ims_error *err)
{
    struct app_backend *b = self;
    int64_t n = 0;
    enum ims_status st = store_count(b->app->store, &n, err);
    if (st != IMS_OK)
        return st;
    out->images = n;
    out->dim = (int)b->app->dim;
    out->model = server_arena_strdup(a, b->app->model_name);
    out->index = server_arena_strdup(a, vindex_spec(b->app->index));
    char extra[256];
    snprintf(extra, sizeof(extra), "{\"index_vectors\":%zu,\"precision\":\"%s\"}",
             vindex_count(b->app->index),
             clip_model_precision(b->app->model) == CLIP_PRECISION_BF16 ? "bf16" : "f32");
    out->extra_json = server_arena_strdup(a, extra);
    return IMS_OK;
}

static enum ims_status be_search(void *self, const struct server_query *q, struct server_arena *a,
                                 struct server_results *out, struct ims_error *err)
{
    struct app_backend *b = self;
    struct search_term terms[SEARCH_TERMS_MAX];
    char *fetched[SEARCH_TERMS_MAX] = {0};
    struct search_response resp = {0};
    enum ims_status st = IMS_OK;
    if (q->n_terms == 0 || q->n_terms > SEARCH_TERMS_MAX)
        return ims_error_set(err, IMS_ERR_INVALID, "a query needs 1 to %d terms",
                             SEARCH_TERMS_MAX);
    memset(terms, 0, sizeof(terms));
    for (size_t i = 0; i < q->n_terms; i++) {
        const struct server_term *t = &q->terms[i];
        struct search_term *s = &terms[i];
        s->weight = t->weight;
        switch (t->kind) {
        case SERVER_TERM_TEXT:
            s->kind = SEARCH_TERM_TEXT;
            s->text = t->text;
            break;
        case SERVER_TERM_IMAGE:
            s->kind = SEARCH_TERM_IMAGE;
            s->bytes = t->bytes;
            s->n_bytes = t->n_bytes;
            break;
        case SERVER_TERM_IMAGE_URL: {
            size_t len = 0;
            st = fetch_one(b, t->url, &fetched[i], &len, err);
            if (st != IMS_OK)
                goto out;
            s->kind = SEARCH_TERM_IMAGE;
            s->bytes = fetched[i];
            s->n_bytes = len;
            break;
        }
        case SERVER_TERM_IMAGE_ID:
            s->kind = SEARCH_TERM_IMAGE_ID;
            s->image_id = t->image_id;
            break;
        case SERVER_TERM_VECTOR:
            s->kind = SEARCH_TERM_VECTOR;
            s->vector = t->vector;
            s->n_vector = t->n_vector;
            break;
        }
    }
    struct search_request rq = {terms,
                                q->n_terms,
                                q->k,
                                q->offset,
                                q->has_min_score,
                                q->min_score,
                                q->order == SERVER_ORDER_DATE ? SEARCH_ORDER_DATE
                                                              : SEARCH_ORDER_SCORE,
                                q->filter};
    st = search_run(b->se, &rq, &resp, err);
    if (st != IMS_OK)
        goto out;
    out->n = resp.n;
    out->items = resp.n ? server_arena_alloc(a, resp.n * sizeof(*out->items)) : NULL;
    if (resp.n && !out->items) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "result too large");
        goto out;
    }
    for (size_t i = 0; i < resp.n; i++) {
        row_from_store(a, &resp.hits[i].row, &out->items[i].row);
        out->items[i].score = resp.hits[i].score;
    }
out:
    search_response_fini(&resp);
    for (size_t i = 0; i < SEARCH_TERMS_MAX; i++)
        ims_free(fetched[i]);
    return st;
}

static enum ims_status be_add_urls(void *self, const char *const *urls, size_t n_urls,
                                   char job_id[SERVER_JOB_ID_MAX], struct ims_error *err)
{
    struct app_backend *b = self;
    char id[INGEST_JOB_ID_BYTES];
    enum ims_status st = ingest_submit(b->ing, urls, n_urls, id, err);
    if (st == IMS_OK)
        snprintf(job_id, SERVER_JOB_ID_MAX, "%s", id);
    return st;
}

static enum ims_status be_job_get(void *self, const char *job_id, struct server_arena *a,
                                  struct server_job *out, struct ims_error *err)
{
    struct app_backend *b = self;
    struct store_job job;
    memset(&job, 0, sizeof(job));
    enum ims_status st = ingest_job_get(b->ing, job_id, &job, err);
    if (st != IMS_OK)
        return st;
    snprintf(out->id, sizeof(out->id), "%s", job.id);
    switch (job.state) {
    case STORE_JOB_QUEUED: out->state = SERVER_JOB_QUEUED; break;
    case STORE_JOB_RUNNING: out->state = SERVER_JOB_RUNNING; break;
    case STORE_JOB_DONE: out->state = SERVER_JOB_DONE; break;
    case STORE_JOB_FAILED: out->state = SERVER_JOB_FAILED; break;
    }
    out->total = job.total;
    out->done = job.done;
    out->failed = job.failed;
    out->n_errors = job.n_errors;
    struct server_job_error *errs =
        job.n_errors ? server_arena_alloc(a, job.n_errors * sizeof(*errs)) : NULL;
    if (job.n_errors && !errs) {
        store_job_fini(&job);
        return ims_error_set(err, IMS_ERR_NOMEM, "job too large to show");
    }
    for (size_t i = 0; i < job.n_errors; i++) {
        errs[i].url = server_arena_strdup(a, job.errors[i].url ? job.errors[i].url : "");
        errs[i].error = server_arena_strdup(a, job.errors[i].error ? job.errors[i].error : "");
    }
    out->errors = errs;
    store_job_fini(&job);
    return IMS_OK;
}

static enum ims_status be_job_wait(void *self, const char *job_id, int timeout_ms,
                                   struct ims_error *err)
{
    struct app_backend *b = self;
    struct store_job job;
    memset(&job, 0, sizeof(job));
    enum ims_status st = ingest_job_wait(b->ing, job_id, timeout_ms, &job, err);
    store_job_fini(&job);
    return st;
}

static enum ims_status be_upload(void *self, const struct server_file *files, size_t n_files,
                                 struct server_arena *a, struct server_upload_item *items,
                                 struct ims_error *err)
{
    struct app_backend *b = self;
    for (size_t i = 0; i < n_files; i++) {
        struct server_upload_item *it = &items[i];
        memset(it, 0, sizeof(*it));
        /* uploads are named by content: the same bytes are the same image */
        uint8_t sha[32];
        char hex[65], source[512];
        ims_sha256(files[i].bytes, files[i].n_bytes, sha);
        ims_hex(sha, 32, hex);
        snprintf(source, sizeof(source), "upload:%.16s/%s", hex,
                 files[i].filename && *files[i].filename ? files[i].filename : "image");
        struct ingest_item_report rep = {0};
        enum ims_status st = ingest_add_bytes(b->ing, source, files[i].bytes, files[i].n_bytes,
                                              &rep, it->message, sizeof(it->message), err);
        if (st != IMS_OK)
            return st; /* the catalogue failed: nothing more will work */
        if (rep.outcome == INGEST_FAILED) {
            it->status = strstr(it->message, "not a supported image") ? IMS_ERR_UNSUPPORTED
                         : strstr(it->message, "limit")               ? IMS_ERR_TOO_LARGE
                                                                      : IMS_ERR_INVALID;
            continue;
        }
        struct store_image_row row;
        store_row_init(&row);
        st = store_get(b->app->store, rep.id, 0, &row, NULL);
        if (st == IMS_OK) {
            row_from_store(a, &row, &it->row);
            it->status = IMS_OK;
        } else {
            it->status = st;
            snprintf(it->message, sizeof(it->message), "stored, but cannot be read back");
        }
        store_row_fini(&row);
    }
    return IMS_OK;
}

static enum ims_status be_image_get(void *self, int64_t id, struct server_arena *a,
                                    struct server_row *out, struct ims_error *err)
{
    struct app_backend *b = self;
    struct store_image_row row;
    store_row_init(&row);
    enum ims_status st = store_get(b->app->store, id, 0, &row, err);
    if (st == IMS_ERR_NOT_FOUND)
        st = ims_error_set(err, st, "no image with id %lld", (long long)id);
    if (st == IMS_OK)
        row_from_store(a, &row, out);
    store_row_fini(&row);
    return st;
}

static enum ims_status be_image_thumb(void *self, int64_t id, struct server_arena *a,
                                      struct ims_str *jpeg, struct ims_error *err)
{
    struct app_backend *b = self;
    void *data = NULL;
    size_t n = 0;
    enum ims_status st = store_get_thumbnail(b->app->store, id, &data, &n, err);
    if (st == IMS_ERR_NOT_FOUND)
        return ims_error_set(err, st, "image %lld has no thumbnail", (long long)id);
    if (st != IMS_OK)
        return st;
    jpeg->ptr = server_arena_memdup(a, data, n);
    jpeg->len = n;
    ims_free(data);
    return jpeg->ptr ? IMS_OK : ims_error_set(err, IMS_ERR_NOMEM, "thumbnail too large");
}

static enum ims_status be_image_delete(void *self, int64_t id, struct ims_error *err)
{
    struct app_backend *b = self;
    enum ims_status st = store_delete(b->app->store, id, err);
    if (st == IMS_ERR_NOT_FOUND)
        return ims_error_set(err, st, "no image with id %lld", (long long)id);
    if (st != IMS_OK)
        return st;
    /* the row is gone first: a search racing with this skips the id */
    return vindex_remove(b->app->index, &id, 1, NULL, err);
}

static enum ims_status be_metrics(void *self, struct ims_buf *out, struct ims_error *err)
{
    struct app_backend *b = self;
    struct search_counters sc;
    struct ingest_counters ic;
    search_get_counters(b->se, &sc);
    ingest_get_counters(b->ing, &ic);
    int64_t n = 0;
    store_count(b->app->store, &n, NULL);
    enum ims_status st = ims_buf_printf(
        out,
        "# TYPE imgsearch_images gauge\nimgsearch_images %lld\n"
        "# TYPE imgsearch_index_vectors gauge\nimgsearch_index_vectors %zu\n"
        "# TYPE imgsearch_search_queries_total counter\nimgsearch_search_queries_total %llu\n"
        "# TYPE imgsearch_text_cache_hits_total counter\nimgsearch_text_cache_hits_total %llu\n"
        "# TYPE imgsearch_text_cache_misses_total counter\n"
        "imgsearch_text_cache_misses_total %llu\n"
        "# TYPE imgsearch_text_encode_seconds_total counter\n"
        "imgsearch_text_encode_seconds_total %.6f\n"
        "# TYPE imgsearch_image_query_encode_seconds_total counter\n"
        "imgsearch_image_query_encode_seconds_total %.6f\n"
        "# TYPE imgsearch_ingest_jobs_total counter\nimgsearch_ingest_jobs_total %lld\n"
        "# TYPE imgsearch_ingest_items_total counter\n"
        "imgsearch_ingest_items_total{outcome=\"added\"} %lld\n"
        "imgsearch_ingest_items_total{outcome=\"duplicate\"} %lld\n"
        "imgsearch_ingest_items_total{outcome=\"failed\"} %lld\n"
        "# TYPE imgsearch_ingest_encode_seconds_total counter\n"
        "imgsearch_ingest_encode_seconds_total %.6f\n"
        "# TYPE imgsearch_ingest_images_encoded_total counter\n"
        "imgsearch_ingest_images_encoded_total %lld\n",
        (long long)n, vindex_count(b->app->index), (unsigned long long)sc.queries,
        (unsigned long long)sc.cache_hits, (unsigned long long)sc.cache_misses,
        sc.text_encode_seconds, sc.image_encode_seconds, (long long)ic.jobs,
        (long long)ic.items_added, (long long)ic.items_duplicate, (long long)ic.items_failed,
        ic.encode_seconds, (long long)ic.images_encoded);
    if (st != IMS_OK)
        return ims_error_set(err, st, "metrics buffer full");
    return IMS_OK;
}

/* ---- the command ---------------------------------------------------------------- */

int cli_cmd_serve(int argc, char **argv)
{
    struct cli_app_options o = {0};
    struct server_options so;
    server_options_init(&so);
    struct fetch_options fo;
    fetch_options_default(&fo);
    const char *key_file = NULL, *access_log = NULL;
    long ingest_batch = 8; /* keeps query latency low while a job runs */
    int exif_ignore = 0, keep_gps = 0;
    int inflight_set = 0;
    int rc = 0;
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
        } else if ((r = cli_opt_value(argc, argv, &i, "--ingest-batch", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 256, &ingest_batch))
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

    o.with_model = 1;
    o.with_index = 1;
    struct cli_app app;
    struct app_backend b = {&app, NULL, NULL, fo};
    struct server *srv = NULL;
    if (cli_app_open("serve", &o, &app) != 0) {
        rc = 1;
        goto out_opts;
    }
    struct search_options sopt;
    search_options_default(&sopt);
    st = search_engine_new(app.model, app.store, app.index, &sopt, &b.se, &err);
    if (st == IMS_OK) {
        struct ingest_options io;
        ingest_options_default(&io);
        io.fetch = fo;
        io.allow_local_files = 0; /* the HTTP API never reads the server's disk */
        io.batch_size = (int)ingest_batch;
        io.exif_orientation_ignore = exif_ignore;
        io.keep_gps = keep_gps;
        struct ingest_deps deps = {app.model, app.store, app.index};
        st = ingest_new(&deps, &io, &b.ing, &err);
    }
    struct server_backend be = {
        .self = &b,
        .stats = be_stats,
        .search = be_search,
        .add_urls = be_add_urls,
        .job_get = be_job_get,
        .job_wait = be_job_wait,
        .upload = be_upload,
        .image_get = be_image_get,
        .image_thumb = be_image_thumb,
        .image_delete = be_image_delete,
        .metrics = be_metrics,
    };
    if (st == IMS_OK) {
        /* warm-up: the first encode JIT-compiles the kernels; pay it now,
         * not on the first user's query */
        float *v = ims_malloc(app.dim * sizeof(float));
        if (v)
            search_embed_text(b.se, "a photo", v, NULL, NULL);
        ims_free(v);
        st = server_start(&so, &be, &srv, &err);
    }
    if (st != IMS_OK) {
        rc = cli_fail("serve", "%s", ims_error_message(&err, st));
        goto out;
    }
    int64_t n = 0;
    store_count(app.store, &n, NULL);
    const char *host = so.host ? so.host : "127.0.0.1";
    fprintf(stderr, "imgsearch: serving http://%s%s%s:%u/ (%lld images, model %s, index %s%s)\n",
            strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", server_port(srv),
            (long long)n, app.model_name, vindex_spec(app.index),
            so.api_key ? ", API key required for writes" : "");
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "imgsearch: %s: shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
out:
    server_stop(srv);
    ingest_free(b.ing); /* the running job commits what is in flight */
    server_free(srv);
    search_engine_free(b.se);
    if (app.store && cli_app_close("serve", &app, 1) != 0)
        rc = 1;
out_opts:
    if (log && log != stdout)
        fclose(log);
    server_options_fini(&so);
    return rc;
}
