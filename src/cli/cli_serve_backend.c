/* SPDX-License-Identifier: MIT */
/*
 * cli_serve_backend.c: what `imgsearch serve` answers the HTTP server with
 * (cmd_serve.c parses the options and starts the node).
 *
 * DESIGN
 * ------
 * The server module knows HTTP only; this file implements its backend
 * (struct server_backend) over the node's libimgsearch handle (b->app->is,
 * opened by cli_app_open: the same open, search and remove as the library's
 * users get) and, for what the library does not cover, the modules the
 * handle holds (libimgsearch_int.h: ingest's job service, the replica, the
 * store), and only translates between the server's types and theirs:
 *   stats        imgsearch_count + the model and index type
 *   search       imgsearch__search; image_url terms are downloaded first with
 *                fetch_to_memory (same limits and address policy as ingest)
 *   add_urls     ingest_submit (a job of item rows in the catalogue, claimed
 *                by every node's ingest service); job_get / job_wait read it
 *   upload       ingest_add_bytes, one file at a time
 *   image_*      store reads (the thumbnail: imgsearch_thumbnail); delete is
 *                imgsearch__remove: the row leaves the catalogue, then this
 *                node's index follows at once
 *   metrics      counters of search, ingest and the replica
 *   ready        the replica has caught up and the engines exist
 * Ingest's after_commit hook is the handle's (cli_app_after_commit): an
 * upload or a waited-for job answers once this node's index shows it; the
 * other nodes' replicas follow the change feed by themselves.
 * Start: the replica opens deferred (its follower thread builds the index
 * and catches up) and the server starts at once: /healthz and /readyz say
 * "starting" (503) and the operations that need the index answer 503. The
 * main thread, once replica_ready(), creates the search engine and ingest
 * on the index, warms the encoder up and flips `ready`.
 * Threads: libmicrohttpd's connection threads call these concurrently; every module used
 * is thread-safe (see their headers). Signals: SIGINT/SIGTERM are blocked in
 * every thread and taken by sigtimedwait in the main thread, which then stops
 * the server (draining requests), stops ingest (the items in flight are
 * committed and recorded; the rest of the job stays queued for any node),
 * stops the replica's follower, writes the index snapshot and exits 0.
 */
#include "cli_serve_backend.h"

#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The index and the engines built on it exist once the replica has caught
 * up; until then the operations that need them answer 503. */
static enum ims_status need_ready(struct app_backend *b, struct ims_error *err)
{
    if (atomic_load(&b->ready))
        return IMS_OK;
    return ims_error_set(err, IMS_ERR_BUSY,
                         "starting: the index is catching up with the catalogue");
}

static int be_ready(void *self)
{
    struct app_backend *b = self;
    return atomic_load(&b->ready);
}

/* ---- helpers ------------------------------------------------------------------ */

/* A row in the request's arena. A full arena is IMS_ERR_NOMEM (503, retry)
 * naming the row: a NULL url would read as a row without a source. */
static enum ims_status row_from_store(struct server_arena *a, const struct store_image_row *r,
                                      struct server_row *out, struct ims_error *err)
{
    out->id = r->id;
    out->url = r->source ? server_arena_strdup(a, r->source) : NULL;
    out->width = (int)r->width;
    out->height = (int)r->height;
    out->added_unix = r->added;
    out->caption = r->caption ? server_arena_strdup(a, r->caption) : NULL;
    out->format = r->format ? server_arena_strdup(a, r->format) : NULL;
    if ((r->source && !out->url) || (r->caption && !out->caption) || (r->format && !out->format))
        return ims_error_set(err, IMS_ERR_NOMEM,
                             "image %lld: the request's memory is full (its source is %zu bytes)",
                             (long long)r->id, r->source ? strlen(r->source) : 0);
    /* the EXIF date taken and the tags (issue 10, schema v4) */
    out->has_taken = r->has_taken;
    out->taken = r->taken;
    char **tags = r->n_tags ? server_arena_alloc(a, r->n_tags * sizeof(*tags)) : NULL;
    for (size_t i = 0; tags && i < r->n_tags; i++)
        if (!(tags[i] = server_arena_strdup(a, r->tags[i])))
            tags = NULL;
    if (r->n_tags && !tags)
        return ims_error_set(err, IMS_ERR_NOMEM,
                             "image %lld: the request's memory is full (%zu tags)",
                             (long long)r->id, r->n_tags);
    out->tags = (const char *const *)tags;
    out->n_tags = r->n_tags;
    out->metadata = NULL;
    return IMS_OK;
}

/* ---- backend operations ------------------------------------------------------ */

static enum ims_status be_stats(void *self, struct server_arena *a, struct server_stats *out,
                                struct ims_error *err)
{
    struct app_backend *b = self;
    int64_t n = 0;
    enum ims_status st = (enum ims_status)imgsearch_count(b->app->is, &n, imgsearch__err(err));
    if (st != IMS_OK)
        return st;
    out->images = n;
    out->dim = (int)b->app->dim;
    out->model = server_arena_strdup(a, b->app->model_name);
    struct vindex *vx = replica_index(b->app->replica);
    out->index = server_arena_strdup(a, vx ? vindex_spec(vx) : b->app->spec);
    char extra[256];
    snprintf(extra, sizeof(extra),
             "{\"index_vectors\":%zu,\"precision\":\"%s\",\"catalogue\":\"%s\"}",
             vx ? vindex_count(vx) : 0,
             clip_model_precision(b->app->model) == CLIP_PRECISION_BF16 ? "bf16" : "f32",
             store_backend_name(b->app->store));
    out->extra_json = server_arena_strdup(a, extra);
    return IMS_OK;
}

/* One search term, as the library states it. An image_url term is
 * downloaded here (*fetched: the bytes, the caller frees them). */
static enum ims_status term_from_server(struct app_backend *b, const struct server_term *t,
                                        struct search_term *s, char **fetched,
                                        struct ims_error *err)
{
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
        enum ims_status st = fetch_to_memory(t->url, &b->fetch, fetched, &len, err);
        if (st != IMS_OK) {
            /* the client named an image we could not get: its request is
             * at fault (400), unless our policy refused the address */
            if (st != IMS_ERR_REFUSED && st != IMS_ERR_NOMEM)
                st = IMS_ERR_INVALID;
            ims_error_prefix(err, "image_url");
            return st;
        }
        s->kind = SEARCH_TERM_IMAGE;
        s->bytes = *fetched;
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
    return IMS_OK;
}

/* The API's filter, as the catalogue states it (the strings stay the
 * request's). */
static void filter_from_server(const struct server_filter *f, struct store_filter *sf)
{
    memset(sf, 0, sizeof(*sf));
    sf->has_added_from = f->has_added_from;
    sf->has_added_to = f->has_added_to;
    sf->has_taken_from = f->has_taken_from;
    sf->has_taken_to = f->has_taken_to;
    sf->added_from = f->added_from;
    sf->added_to = f->added_to;
    sf->taken_from = f->taken_from;
    sf->taken_to = f->taken_to;
    sf->min_width = f->min_width;
    sf->min_height = f->min_height;
    sf->formats = f->formats;
    sf->orientation = f->orientation == SERVER_ORIENT_LANDSCAPE ? STORE_ORIENT_LANDSCAPE
                      : f->orientation == SERVER_ORIENT_PORTRAIT ? STORE_ORIENT_PORTRAIT
                      : f->orientation == SERVER_ORIENT_SQUARE   ? STORE_ORIENT_SQUARE
                                                                 : STORE_ORIENT_ANY;
    sf->source_prefix = f->source_prefix;
    sf->tags = f->tags;
    sf->n_tags = f->n_tags;
}

static enum ims_status be_search(void *self, const struct server_query *q, struct server_arena *a,
                                 struct server_results *out, struct ims_error *err)
{
    struct app_backend *b = self;
    struct search_term terms[SEARCH_TERMS_MAX];
    char *fetched[SEARCH_TERMS_MAX] = {0};
    struct search_response resp = {0};
    enum ims_status st = need_ready(b, err);
    if (st != IMS_OK)
        return st;
    if (q->n_terms == 0 || q->n_terms > SEARCH_TERMS_MAX)
        return ims_error_set(err, IMS_ERR_INVALID, "a query needs 1 to %d terms",
                             SEARCH_TERMS_MAX);
    memset(terms, 0, sizeof(terms));
    for (size_t i = 0; i < q->n_terms; i++)
        if ((st = term_from_server(b, &q->terms[i], &terms[i], &fetched[i], err)) != IMS_OK)
            goto out;
    struct store_filter sf;
    if (q->filter)
        filter_from_server(q->filter, &sf);
    struct search_request rq = {terms,
                                q->n_terms,
                                q->k,
                                q->offset,
                                q->has_min_score,
                                q->min_score,
                                q->order == SERVER_ORDER_DATE ? SEARCH_ORDER_DATE
                                                              : SEARCH_ORDER_SCORE,
                                q->filter ? &sf : NULL,
                                q->has_dedup ? q->dedup : 0.0f,
                                {.ef_search = q->ef, .nprobe = q->nprobe, .rerank = q->rerank}};
    st = imgsearch__search(b->app->is, &rq, &resp, err);
    if (st != IMS_OK)
        goto out;
    out->n = resp.n;
    out->items = resp.n ? server_arena_alloc(a, resp.n * sizeof(*out->items)) : NULL;
    if (resp.n && !out->items) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "result too large");
        goto out;
    }
    for (size_t i = 0; i < resp.n && st == IMS_OK; i++) {
        st = row_from_store(a, &resp.hits[i].row, &out->items[i].row, err);
        out->items[i].score = resp.hits[i].score;
        out->items[i].n_duplicates = resp.hits[i].n_duplicates;
        out->items[i].duplicates =
            resp.hits[i].n_duplicates
                ? server_arena_memdup(a, resp.hits[i].duplicates,
                                      resp.hits[i].n_duplicates * sizeof(int64_t))
                : NULL;
        if (st == IMS_OK && resp.hits[i].n_duplicates && !out->items[i].duplicates)
            st = ims_error_set(err, IMS_ERR_NOMEM,
                               "image %lld: the request's memory is full (%zu folded duplicates)",
                               (long long)resp.hits[i].row.id, resp.hits[i].n_duplicates);
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
    enum ims_status st = need_ready(b, err);
    if (st != IMS_OK)
        return st;
    st = ingest_submit(b->ing, urls, n_urls, id, err);
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
    enum ims_status st = need_ready(b, err);
    if (st != IMS_OK)
        return st;
    st = ingest_job_get(b->ing, job_id, &job, err);
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
        errs[i].code = server_arena_strdup(a, job.errors[i].code ? job.errors[i].code : "");
        errs[i].error = server_arena_strdup(a, job.errors[i].error ? job.errors[i].error : "");
        if (!errs[i].url || !errs[i].code || !errs[i].error) {
            store_job_fini(&job);
            return ims_error_set(err, IMS_ERR_NOMEM, "job too large to show");
        }
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
    enum ims_status st = need_ready(b, err);
    if (st != IMS_OK)
        return st;
    st = ingest_job_wait(b->ing, job_id, timeout_ms, &job, err);
    store_job_fini(&job);
    return st;
}

static enum ims_status be_upload(void *self, const struct server_file *files, size_t n_files,
                                 struct server_arena *a, struct server_upload_item *items,
                                 struct ims_error *err)
{
    struct app_backend *b = self;
    enum ims_status rst = need_ready(b, err);
    if (rst != IMS_OK)
        return rst;
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
            it->status = rep.status; /* the decoder's own status, never guessed from words */
            continue;
        }
        struct store_image_row row;
        store_row_init(&row);
        struct ims_error rerr = {0};
        st = store_get(b->app->store, rep.id, 0, &row, &rerr);
        if (st == IMS_OK)
            st = row_from_store(a, &row, &it->row, &rerr);
        it->status = st;
        if (st != IMS_OK)
            snprintf(it->message, sizeof(it->message), "stored, but cannot be read back: %s",
                     ims_error_message(&rerr, st));
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
        st = row_from_store(a, &row, out, err);
    if (st == IMS_OK)
        out->metadata = row.metadata ? server_arena_strdup(a, row.metadata) : NULL;
    store_row_fini(&row);
    return st;
}

/* POST /api/v1/images/ID/tags: the catalogue checks the tags; searches read
 * tags from the catalogue (the result cache holds no filtered search), so
 * every node sees the change at once */
static enum ims_status be_image_tags(void *self, int64_t id, const char *const *add,
                                     size_t n_add, const char *const *remove, size_t n_remove,
                                     struct server_arena *a, struct server_row *out,
                                     struct ims_error *err)
{
    struct app_backend *b = self;
    enum ims_status st = (enum ims_status)imgsearch_tags_update(
        b->app->is, id, add, n_add, remove, n_remove, imgsearch__err(err));
    return st == IMS_OK ? be_image_get(self, id, a, out, err) : st;
}

struct dups_copy {
    size_t limit;
    struct server_arena *a;
    struct server_dup_groups *out;
};

/* the first `limit` groups, into the request's arena */
static enum ims_status dups_to_server(void *ctx, const struct vindex_dups *d,
                                      struct ims_error *err)
{
    struct dups_copy *c = ctx;
    struct server_dup_groups *out = c->out;
    out->n = IMS_MIN(d->n, c->limit);
    out->groups = out->n ? server_arena_alloc(c->a, out->n * sizeof(*out->groups)) : NULL;
    for (size_t i = 0; i < out->n; i++) {
        int64_t *ids = out->groups ? server_arena_memdup(c->a, d->groups[i].ids,
                                                         d->groups[i].n * sizeof(int64_t))
                                   : NULL;
        if (!ids)
            return ims_error_set(err, IMS_ERR_NOMEM, "too many duplicates to show: lower limit");
        out->groups[i] = (struct server_dup_group){ids, d->groups[i].n, d->groups[i].min_score};
    }
    return IMS_OK;
}

/* GET /api/v1/duplicates (issue 10): the k-NN pass over this node's index;
 * the handle keeps the last pass while the index does not change, so a page
 * showing the groups does not redo a pass of seconds each time
 * (imgsearch__duplicates) */
static enum ims_status be_duplicates(void *self, float threshold, size_t limit,
                                     struct server_arena *a, struct server_dup_groups *out,
                                     struct ims_error *err)
{
    struct app_backend *b = self;
    enum ims_status st = need_ready(b, err);
    if (st != IMS_OK)
        return st;
    struct dups_copy c = {limit, a, out};
    return imgsearch__duplicates(b->app->is, threshold, dups_to_server, &c, err);
}

static enum ims_status be_image_thumb(void *self, int64_t id, struct server_arena *a,
                                      struct ims_str *jpeg, struct ims_error *err)
{
    struct app_backend *b = self;
    void *data = NULL;
    size_t n = 0;
    enum ims_status st =
        (enum ims_status)imgsearch_thumbnail(b->app->is, id, &data, &n, imgsearch__err(err));
    if (st == IMS_ERR_NOT_FOUND)
        return ims_error_set(err, st, "image %lld has no thumbnail", (long long)id);
    if (st != IMS_OK)
        return st;
    jpeg->ptr = server_arena_memdup(a, data, n);
    jpeg->len = n;
    imgsearch_free(data);
    return jpeg->ptr ? IMS_OK : ims_error_set(err, IMS_ERR_NOMEM, "thumbnail too large");
}

#define DELETE_SYNC_MS 10000

static enum ims_status be_image_delete(void *self, int64_t id, struct ims_error *err)
{
    struct app_backend *b = self;
    /* the catalogue first (a search racing with this skips the row), then
     * this node's index catches up to the delete (the other nodes' follow
     * the feed) */
    enum ims_status st = imgsearch__remove(b->app->is, id, DELETE_SYNC_MS, err);
    if (st == IMS_ERR_NOT_FOUND)
        return ims_error_set(err, st, "no image with id %lld", (long long)id);
    return st;
}

static enum ims_status be_metrics(void *self, struct ims_buf *out, struct ims_error *err)
{
    struct app_backend *b = self;
    struct search_counters sc;
    struct ingest_counters ic;
    memset(&sc, 0, sizeof(sc));
    memset(&ic, 0, sizeof(ic));
    if (atomic_load(&b->ready)) {
        search_get_counters(b->se, &sc);
        ingest_get_counters(b->ing, &ic);
    }
    int64_t n = 0;
    struct ims_error cerr = {0};
    enum ims_status cst = store_count(b->app->store, &n, &cerr);
    if (cst != IMS_OK) /* the other figures are still worth a scrape */
        ims_log(IMS_LOG_WARN, "metrics: imgsearch_images reads 0: cannot count the catalogue: %s",
                ims_error_message(&cerr, cst));
    struct replica_stats rs;
    replica_get_stats(b->app->replica, &rs);
    struct vindex *vx = replica_index(b->app->replica);
    enum ims_status st = ims_buf_printf(
        out,
        "# TYPE imgsearch_replica_ready gauge\nimgsearch_replica_ready %d\n"
        "# TYPE imgsearch_replica_seq gauge\nimgsearch_replica_seq %lld\n"
        "# TYPE imgsearch_catalogue_seq gauge\nimgsearch_catalogue_seq %lld\n"
        "# TYPE imgsearch_replica_lag_changes gauge\nimgsearch_replica_lag_changes %lld\n"
        "# TYPE imgsearch_replica_changes_applied_total counter\n"
        "imgsearch_replica_changes_applied_total %llu\n"
        "# TYPE imgsearch_replica_rebuilds_total counter\nimgsearch_replica_rebuilds_total %llu\n"
        "# TYPE imgsearch_replica_follow_errors_total counter\n"
        "imgsearch_replica_follow_errors_total %llu\n"
        "# TYPE imgsearch_replica_behind_floor gauge\nimgsearch_replica_behind_floor %d\n",
        rs.ready, (long long)rs.seq, (long long)rs.catalogue_seq,
        (long long)(rs.catalogue_seq - rs.seq), (unsigned long long)rs.changes_applied,
        (unsigned long long)rs.rebuilds, (unsigned long long)rs.follow_errors, rs.behind_floor);
    struct store_row_cache_stats rcs;
    store_row_cache_get_stats(b->app->store, &rcs);
    if (st == IMS_OK)
        st = ims_buf_printf(
            out,
            "# TYPE imgsearch_row_cache_bytes gauge\nimgsearch_row_cache_bytes %zu\n"
            "# TYPE imgsearch_row_cache_hits_total counter\nimgsearch_row_cache_hits_total %llu\n"
            "# TYPE imgsearch_row_cache_misses_total counter\n"
            "imgsearch_row_cache_misses_total %llu\n"
            "# TYPE imgsearch_row_cache_invalidated_total counter\n"
            "imgsearch_row_cache_invalidated_total %llu\n"
            "# TYPE imgsearch_replica_feed_trims_total counter\n"
            "imgsearch_replica_feed_trims_total %llu\n",
            rcs.bytes, (unsigned long long)rcs.hits, (unsigned long long)rcs.misses,
            (unsigned long long)rcs.invalidated, (unsigned long long)rs.trims);
    if (st != IMS_OK)
        return ims_error_set(err, st, "metrics buffer full");
    st = ims_buf_printf(
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
        "imgsearch_ingest_images_encoded_total %lld\n"
        "# TYPE imgsearch_ingest_catalogue_seconds_total counter\n"
        "imgsearch_ingest_catalogue_seconds_total %.6f\n",
        (long long)n, vx ? vindex_count(vx) : 0, (unsigned long long)sc.queries,
        (unsigned long long)sc.cache_hits, (unsigned long long)sc.cache_misses,
        sc.text_encode_seconds, sc.image_encode_seconds, (long long)ic.jobs,
        (long long)ic.items_added, (long long)ic.items_duplicate, (long long)ic.items_failed,
        ic.encode_seconds, (long long)ic.images_encoded, ic.catalogue_seconds);
    struct image_decode_budget_stats db;
    image_decode_budget_stats(&db);
    if (st == IMS_OK)
        st = ims_buf_printf(
            out,
            "# TYPE imgsearch_image_decode_memory_bytes gauge\n"
            "imgsearch_image_decode_memory_bytes{kind=\"budget\"} %zu\n"
            "imgsearch_image_decode_memory_bytes{kind=\"in_use\"} %zu\n"
            "# TYPE imgsearch_image_decode_refused_total counter\n"
            "imgsearch_image_decode_refused_total{reason=\"busy\"} %llu\n"
            "imgsearch_image_decode_refused_total{reason=\"too_large\"} %llu\n"
            "# TYPE imgsearch_image_decode_waited_total counter\n"
            "imgsearch_image_decode_waited_total %llu\n",
            db.budget, db.in_use, (unsigned long long)db.n_busy,
            (unsigned long long)db.n_too_large, (unsigned long long)db.n_waited);
    /* b->watch is set before ready */
    if (st == IMS_OK && b->n_watch > 0 && atomic_load(&b->ready)) {
        size_t need = sync_watch_metrics(b->watch, NULL, 0) + 1;
        char *w = ims_malloc(need);
        if (w) {
            sync_watch_metrics(b->watch, w, need);
            st = ims_buf_printf(out, "%s", w);
            ims_free(w);
        }
    }
    if (st != IMS_OK)
        return ims_error_set(err, st, "metrics buffer full");
    return IMS_OK;
}

/* ---- compatibility modes (immich, clip-retrieval) ---------------------------------- */

static enum ims_status immich_engine(struct app_backend *b, const char *model,
                                     struct search_engine **se, size_t *dim,
                                     struct ims_error *err)
{
    enum ims_status st = need_ready(b, err); /* b->se exists once the node is ready */
    if (st != IMS_OK)
        return st;
    *se = b->se;
    *dim = b->app->dim;
    if (!model)
        return IMS_OK;
    for (size_t i = 0; i < b->n_immich; i++) {
        if (strcmp(b->immich[i].name, model) == 0) {
            if (b->immich[i].se) {
                *se = b->immich[i].se;
                *dim = (size_t)clip_model_embed_dim(b->immich[i].model);
            }
            return IMS_OK;
        }
    }
    char names[256] = "";
    for (size_t i = 0; i < b->n_immich; i++)
        snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? ", " : "",
                 b->immich[i].name);
    return ims_error_set(err, IMS_ERR_NOT_FOUND,
                         "unknown model \"%.100s\": this server has %s (serve --immich-model "
                         "NAME=DIR maps a name to a model folder)", model, names);
}

static enum ims_status be_embed_text(void *self, const char *model, const char *text,
                                     struct server_arena *a, struct server_embedding *out,
                                     struct ims_error *err)
{
    struct search_engine *se;
    enum ims_status st = immich_engine(self, model, &se, &out->dim, err);
    if (st != IMS_OK)
        return st;
    out->v = server_arena_alloc(a, out->dim * sizeof(float));
    if (!out->v)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    return search_embed_text(se, text, out->v, NULL, err);
}

static enum ims_status be_embed_image(void *self, const char *model, const unsigned char *bytes,
                                      size_t n, struct server_arena *a,
                                      struct server_embedding *out, struct ims_error *err)
{
    struct search_engine *se;
    struct image_info info;
    enum ims_status st = immich_engine(self, model, &se, &out->dim, err);
    if (st == IMS_OK)
        st = image_info(bytes, n, NULL, &info, err);
    if (st != IMS_OK)
        return st;
    out->width = info.width;
    out->height = info.height;
    out->v = server_arena_alloc(a, out->dim * sizeof(float));
    if (!out->v)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    return search_embed_image(se, bytes, n, out->v, err);
}

static enum ims_status be_embeddings(void *self, const int64_t *ids, size_t n,
                                     struct server_arena *a, float **vectors, size_t *dim,
                                     uint8_t *found, struct ims_error *err)
{
    struct app_backend *b = self;
    size_t d = b->app->dim;
    struct store_image_row *rows = ims_calloc(n ? n : 1, sizeof(*rows));
    float *v = server_arena_alloc(a, (n ? n : 1) * d * sizeof(float));
    if (!rows || !v) {
        ims_free(rows);
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    }
    enum ims_status st = store_get_many(b->app->store, ids, n, STORE_FIELD_EMBEDDING, rows, found,
                                        err);
    if (st != IMS_OK) {
        ims_free(rows);
        return st;
    }
    for (size_t i = 0; i < n; i++) {
        bool ok = found[i] && rows[i].embedding && rows[i].dim == d;
        if (ok)
            memcpy(v + i * d, rows[i].embedding, d * sizeof(float));
        else
            memset(v + i * d, 0, d * sizeof(float));
        found[i] = ok;
        store_row_fini(&rows[i]);
    }
    ims_free(rows);
    *vectors = v;
    *dim = d;
    return IMS_OK;
}

/* Loads the model folders of --immich-model NAME=DIR (a folder that is the
 * served model's is not loaded twice). */
int cli_serve_immich_open(struct app_backend *b, const char *served_dir, int precision)
{
    if (b->n_immich == 0) {
        b->immich[0].name = "ViT-B-32__openai";
        b->n_immich = 1;
    }
    char served[PATH_MAX], other[PATH_MAX];
    if (!realpath(served_dir, served))
        served[0] = '\0';
    for (size_t i = 0; i < b->n_immich; i++) {
        struct immich_model *m = &b->immich[i];
        if (m->dir && served[0] && realpath(m->dir, other) && strcmp(served, other) == 0)
            m->dir = NULL;
        if (m->dir) {
            struct clip_model_params mp;
            clip_model_params_default(&mp);
            mp.precision = (enum clip_precision)precision;
            struct ims_error err = {0};
            enum ims_status st = clip_model_load(m->dir, &mp, &m->model, &err);
            if (st == IMS_OK)
                st = search_engine_new(m->model, NULL, NULL, NULL, &m->se, &err);
            if (st != IMS_OK)
                return cli_fail("serve", "--immich-model %s=%s: %s", m->name, m->dir,
                                ims_error_message(&err, st));
        }
        fprintf(stderr, "imgsearch: immich model %s: %s (%d dimensions)\n", m->name,
                m->dir ? m->dir : "the served model",
                clip_model_embed_dim(m->model ? m->model : b->app->model));
    }
    return 0;
}

void cli_serve_immich_close(struct app_backend *b)
{
    for (size_t i = 0; i < b->n_immich; i++) {
        search_engine_free(b->immich[i].se);
        clip_model_free(b->immich[i].model);
    }
}

/* ---- the table ------------------------------------------------------------------ */

void cli_serve_backend_ops(struct app_backend *b, struct server_backend *be)
{
    *be = (struct server_backend){
        .self = b,
        .stats = be_stats,
        .search = be_search,
        .add_urls = be_add_urls,
        .job_get = be_job_get,
        .job_wait = be_job_wait,
        .upload = be_upload,
        .image_get = be_image_get,
        .image_thumb = be_image_thumb,
        .image_delete = be_image_delete,
        .image_tags = be_image_tags,
        .duplicates = be_duplicates,
        .metrics = be_metrics,
        .embed_text = be_embed_text,
        .embed_image = be_embed_image,
        .embeddings = be_embeddings,
        .ready = be_ready,
    };
}
