/* SPDX-License-Identifier: MIT */
/*
 * routes_api.c: imgsearch's own API routes (docs/internals/server.md):
 * stats, search (query string, JSON, multipart), images (URLs as a job,
 * uploads), one image and its thumbnail, jobs with ?wait=1, and /metrics.
 * Each handler runs at the end of the body (server.c's phase 3), inside the
 * admission gate when its route needs the backend, and queues exactly one
 * response through server_respond.c.
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

#define JOB_WAIT_SLICE_MS 100
#define URLS_MAX 10000

/* ---- JSON of rows, jobs, results ---------------------------------------------------------- */

json_t *server__row_json(const struct server_row *row)
{
    char thumb[64];
    snprintf(thumb, sizeof(thumb), "/api/v1/images/%lld/thumb", (long long)row->id);
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "id", json_integer(row->id));
    json_object_set_new(o, "url", row->url ? json_string(row->url) : json_null());
    json_object_set_new(o, "width", json_integer(row->width));
    json_object_set_new(o, "height", json_integer(row->height));
    json_object_set_new(o, "added", json_integer(row->added_unix));
    json_object_set_new(o, "taken", row->has_taken ? json_integer(row->taken) : json_null());
    json_object_set_new(o, "format", row->format ? json_string(row->format) : json_null());
    json_t *tags = json_array();
    for (size_t i = 0; tags && i < row->n_tags; i++)
        json_array_append_new(tags, json_string(row->tags[i]));
    json_object_set_new(o, "tags", tags ? tags : json_null());
    json_object_set_new(o, "thumb", json_string(thumb));
    /* the camera, for the details view: EXIF make and model only (never GPS) */
    json_t *meta = row->metadata ? json_loads(row->metadata, 0, NULL) : NULL;
    json_t *exif = json_object_get(meta, "exif");
    json_t *make = json_object_get(exif, "make"), *model = json_object_get(exif, "model");
    if (json_is_string(make) || json_is_string(model))
        json_object_set_new(o, "exif",
                            json_pack("{s:s?, s:s?}", "make", json_string_value(make), "model",
                                      json_string_value(model)));
    json_decref(meta);
    return o;
}

static json_t *job_json(const struct server_job *job)
{
    static const char *const states[] = {"queued", "running", "done", "failed"};
    json_t *errors = json_array();
    for (size_t i = 0; errors && i < job->n_errors; i++)
        json_array_append_new(errors,
                              json_pack("{s:s?, s:s?, s:s?}", "url", job->errors[i].url, "code",
                                        job->errors[i].code, "error", job->errors[i].error));
    unsigned state = (unsigned)job->state < 4 ? (unsigned)job->state : 3;
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:o?}", "id", job->id, "state", states[state],
                     "total",
                     (json_int_t)job->total, "done", (json_int_t)job->done, "failed",
                     (json_int_t)job->failed, "errors", errors);
}

static enum ims_status parse_image_id(const char *s, int64_t *out, struct ims_error *err)
{
    long long v;
    enum ims_status st = server__parse_int(s, "image id", 1, INT64_MAX, &v, err);
    if (st == IMS_OK)
        *out = v;
    return st;
}

/* ---- handlers -------------------------------------------------------------------------------- */

enum MHD_Result server__h_stats(struct server_request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    struct server_stats stats = {0};
    struct ims_error err = {{0}};
    enum ims_status st = s->be.stats(s->be.self, &r->arena, &stats, &err);
    if (st != IMS_OK)
        return server__respond_error(r, c, st, &err);
    json_t *o = json_pack("{s:I, s:i, s:s?, s:s?}", "images", (json_int_t)stats.images, "dim",
                          stats.dim, "model", stats.model, "index", stats.index);
    if (o && stats.extra_json) {
        json_error_t jerr;
        json_t *extra = json_loads(stats.extra_json, 0, &jerr);
        if (json_is_object(extra))
            json_object_update_missing(o, extra);
        else
            server__error_log(s, "stats: backend extra_json is not a JSON object");
        json_decref(extra);
    }
    return server__respond_json(r, c, 200, o);
}

static enum MHD_Result search_respond(struct server_request *r, struct MHD_Connection *c,
                                      const struct server_query *q)
{
    struct server *s = r->s;
    struct server_results res = {0};
    struct ims_error err = {{0}};
    double t0 = ims_now();
    enum ims_status st = s->be.search(s->be.self, q, &r->arena, &res, &err);
    double took = (ims_now() - t0) * 1e3;
    if (st != IMS_OK)
        return server__respond_error(r, c, st, &err);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < res.n; i++) {
        json_t *o = server__row_json(&res.items[i].row);
        if (o)
            json_object_set_new(o, "score", json_real(res.items[i].score));
        if (o && q->has_dedup) {
            json_t *d = json_array();
            for (size_t j = 0; d && j < res.items[i].n_duplicates; j++)
                json_array_append_new(d, json_integer(res.items[i].duplicates[j]));
            json_object_set_new(o, "duplicates", d ? d : json_null());
        }
        json_array_append_new(arr, o);
    }
    return server__respond_json(
        r, c, 200, json_pack("{s:o?, s:f}", "results", arr, "took_ms", round(took * 1e3) / 1e3));
}

struct unknown_arg {
    char name[64];
    int found;
};

static enum MHD_Result find_unknown_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value)
{
    (void)kind;
    (void)value;
    static const char *const known[] = {
        "q",         "image_id",   "k",        "offset",      "min_score",
        "order",     "added_from", "added_to", "taken_from",  "taken_to",
        "min_width", "min_height", "format",   "orientation", "source_prefix",
        "tag",       "dedup",      "ef",       "nprobe",      "rerank"};
    struct unknown_arg *u = cls;
    for (size_t i = 0; i < IMS_ARRAY_LEN(known); i++)
        if (!strcmp(key, known[i]))
            return MHD_YES;
    snprintf(u->name, sizeof(u->name), "%s", key);
    u->found = 1;
    return MHD_NO; /* stop at the first unknown one */
}

/* The repeatable `tag` parameter's values (up to SERVER_TAGS_MAX kept; n
 * counts them all). */
struct tag_args {
    const char **v;
    size_t n;
    struct server_arena *a;
};

static enum MHD_Result collect_tags(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    struct tag_args *t = cls;
    if (strcmp(key, "tag"))
        return MHD_YES;
    if (!t->v)
        t->v = server_arena_alloc(t->a, SERVER_TAGS_MAX * sizeof(*t->v));
    if (t->v && t->n < SERVER_TAGS_MAX)
        t->v[t->n] = value ? value : "";
    t->n++;
    return MHD_YES;
}

enum MHD_Result server__h_search_get(struct server_request *r, struct MHD_Connection *c)
{
    /* like the JSON and form bodies, refuse what would be silently ignored
     * (a typo such as "limit=" would otherwise look like it worked) */
    struct unknown_arg u = {"", 0};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, find_unknown_arg, &u);
    if (u.found) {
        struct ims_error uerr;
        ims_error_set(&uerr, IMS_ERR_INVALID,
                      "unknown query parameter '%s' (known: q, image_id, k, offset, min_score, "
                      "order, added_from, added_to, taken_from, taken_to, min_width, "
                      "min_height, format, orientation, source_prefix, tag, dedup, ef, nprobe, "
                      "rerank)",
                      u.name);
        return server__respond_error(r, c, IMS_ERR_INVALID, &uerr);
    }
    struct server_query_args a = {
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "q"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "image_id"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "k"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "offset"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "min_score"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "order"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "added_from"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "added_to"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "taken_from"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "taken_to"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "min_width"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "min_height"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "orientation"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "source_prefix"),
        NULL, 0, NULL,
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "ef"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "nprobe"),
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "rerank"),
    };
    struct tag_args ta = {NULL, 0, &r->arena};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_tags, &ta);
    if (ta.n > SERVER_TAGS_MAX)
        return server__respond_msg(r, c, IMS_ERR_INVALID, "tag: at most %d tags", SERVER_TAGS_MAX);
    if (ta.n && !ta.v)
        return server__respond_msg(r, c, IMS_ERR_NOMEM, "out of memory");
    a.tags = ta.v;
    a.n_tags = ta.n;
    a.dedup = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "dedup");
    struct server_query q;
    struct ims_error err = {{0}};
    enum ims_status st = server__query_from_args(&a, &r->arena, &q, &err);
    if (st != IMS_OK)
        return server__respond_error(r, c, st, &err);
    return search_respond(r, c, &q);
}

enum MHD_Result server__h_search_post(struct server_request *r, struct MHD_Connection *c)
{
    struct server_query q;
    struct ims_error err = {{0}};
    enum ims_status st;
    if (r->body_kind == BODY_JSON)
        st = server__query_parse_json(r->body.data ? r->body.data : "", r->body.len, &r->arena, &q,
                                      &err);
    else
        st = server__query_from_form(&r->form, &r->arena, &q, &err);
    if (st != IMS_OK)
        return server__respond_error(r, c, st, &err);
    return search_respond(r, c, &q);
}

static enum MHD_Result job_respond(struct server_request *r, struct MHD_Connection *c,
                                   const char *id, int status)
{
    struct server *s = r->s;
    struct server_job job;
    memset(&job, 0, sizeof(job));
    struct ims_error err = {{0}};
    enum ims_status st = s->be.job_get(s->be.self, id, &r->arena, &job, &err);
    if (st != IMS_OK)
        return server__respond_error(r, c, st, &err);
    job.id[sizeof(job.id) - 1] = '\0';
    return server__respond_json(r, c, status, job_json(&job));
}

enum MHD_Result server__h_images_json(struct server_request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    json_error_t jerr;
    enum MHD_Result ret;
    const char **urls = NULL;
    json_t *root =
        json_loadb(r->body.data ? r->body.data : "", r->body.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        ret = server__respond_msg(r, c, IMS_ERR_INVALID, "invalid JSON at line %d, column %d: %s",
                                  jerr.line, jerr.column, jerr.text);
        goto out;
    }
    json_t *ju = json_object_get(root, "urls");
    if (!json_is_object(root) || json_object_size(root) != 1 || !json_is_array(ju)) {
        ret = server__respond_msg(r, c, IMS_ERR_INVALID,
                                  "the body must be {\"urls\": [...]} and nothing else");
        goto out;
    }
    size_t n = json_array_size(ju);
    if (n == 0 || n > URLS_MAX) {
        ret = server__respond_msg(r, c, IMS_ERR_INVALID, "urls: must have 1..%d entries", URLS_MAX);
        goto out;
    }
    urls = server_arena_alloc(&r->arena, n * sizeof(*urls));
    if (!urls) {
        ret = server__respond_msg(r, c, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(ju, i);
        const char *u = json_string_value(v);
        size_t len = json_string_length(v);
        if (!u || len == 0 || len > SERVER_URL_MAX || memchr(u, '\0', len) ||
            (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)) {
            ret = server__respond_msg(
                r, c, IMS_ERR_INVALID,
                "urls[%zu]: must be an http:// or https:// URL of 1..%d bytes", i, SERVER_URL_MAX);
            goto out;
        }
        urls[i] = u;
    }
    const char *wait = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "wait");
    bool want_wait = wait && strcmp(wait, "0") != 0 && s->be.job_wait;
    if (want_wait) {
        /* Waiters are capped on their own (they wait outside the gate, see
         * server__wait_respond); refuse before a job is queued, not after. */
        unsigned w = atomic_load(&s->waiters);
        do {
            if (w >= s->o.max_waiters) {
                atomic_fetch_add(&s->refused_waiters, 1);
                ret = server__respond_msg(r, c, IMS_ERR_BUSY,
                                          "too many ?wait=1 requests waiting (limit %u); retry, or "
                                          "post without wait and poll the job",
                                          s->o.max_waiters);
                goto out;
            }
        } while (!atomic_compare_exchange_weak(&s->waiters, &w, w + 1));
        r->waiter = true;
    }
    char job_id[SERVER_JOB_ID_MAX] = "";
    struct ims_error err = {{0}};
    enum ims_status st = s->be.add_urls(s->be.self, urls, n, job_id, &err);
    if (st != IMS_OK) {
        ret = server__respond_error(r, c, st, &err);
        goto out;
    }
    job_id[SERVER_JOB_ID_MAX - 1] = '\0';
    if (want_wait) {
        /* answered by finish() once it has left the gate */
        memcpy(r->wait_job, job_id, sizeof(job_id));
        r->wait_pending = true;
        ret = MHD_YES;
        goto out;
    }
    ret = server__respond_json(r, c, 202, json_pack("{s:s}", "job", job_id));
out:
    json_decref(root);
    return ret;
}

enum MHD_Result server__h_images_form(struct server_request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    size_t n = 0;
    for (size_t i = 0; i < r->form.n_fields; i++) {
        const struct server_mp_field *f = &r->form.fields[i];
        if (strcmp(f->info.name, "file") != 0)
            return server__respond_msg(r, c, IMS_ERR_INVALID,
                                       "unknown form field \"%s\" (only \"file\" is accepted)",
                                       f->info.name);
        if (f->data.len == 0)
            return server__respond_msg(r, c, IMS_ERR_INVALID, "file \"%s\" is empty",
                                       f->info.filename);
        n++;
    }
    if (n > s->o.max_files)
        return server__respond_msg(r, c, IMS_ERR_TOO_LARGE,
                                   "%zu files in one upload; the limit is %zu (field \"file\")", n,
                                   s->o.max_files);
    if (n == 0)
        return server__respond_msg(r, c, IMS_ERR_INVALID,
                                   "multipart body without a \"file\" field");
    struct server_file *files = server_arena_alloc(&r->arena, n * sizeof(*files));
    struct server_upload_item *items = server_arena_alloc(&r->arena, n * sizeof(*items));
    if (!files || !items)
        return server__respond_msg(r, c, IMS_ERR_NOMEM, "out of memory");
    memset(items, 0, n * sizeof(*items));
    for (size_t i = 0; i < n; i++) {
        const struct server_mp_field *f = &r->form.fields[i];
        files[i].bytes = (const unsigned char *)f->data.data;
        files[i].n_bytes = f->data.len;
        files[i].filename = f->info.has_filename ? f->info.filename : NULL;
        files[i].content_type = f->info.content_type[0] ? f->info.content_type : NULL;
        items[i].status = IMS_ERR_INTERNAL;
    }
    struct ims_error err = {{0}};
    enum ims_status st = s->be.upload(s->be.self, files, n, &r->arena, items, &err);
    if (st != IMS_OK)
        return server__respond_error(r, c, st, &err);
    json_t *rows = json_array(), *errors = json_array();
    size_t n_ok = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].status == IMS_OK) {
            json_array_append_new(rows, server__row_json(&items[i].row));
            n_ok++;
            continue;
        }
        items[i].message[sizeof(items[i].message) - 1] = '\0';
        bool internal = server__http_status(items[i].status) == 500;
        json_array_append_new(errors,
                              json_pack("{s:s?, s:s, s:s}", "file", files[i].filename, "code",
                                        ims_status_name(items[i].status), "message",
                                        internal              ? "internal error"
                                        : items[i].message[0] ? items[i].message
                                                              : ims_strerror(items[i].status)));
    }
    if (n_ok == 0) {
        json_decref(rows);
        json_decref(errors);
        struct ims_error e;
        ims_error_set(&e, items[0].status, "file \"%s\": %s",
                      files[0].filename ? files[0].filename : "",
                      items[0].message[0] ? items[0].message : ims_strerror(items[0].status));
        return server__respond_error(r, c, items[0].status, &e);
    }
    return server__respond_json(r, c, 200,
                                json_pack("{s:o, s:o}", "images", rows, "errors", errors));
}

enum MHD_Result server__h_image_get(struct server_request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    int64_t id;
    struct ims_error err = {{0}};
    enum ims_status st = parse_image_id(r->id, &id, &err);
    struct server_row row = {0};
    if (st == IMS_OK)
        st = s->be.image_get(s->be.self, id, &r->arena, &row, &err);
    if (st != IMS_OK)
        return server__respond_error(r, c, st, &err);
    return server__respond_json(r, c, 200, server__row_json(&row));
}

enum MHD_Result server__h_image_delete(struct server_request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    int64_t id;
    struct ims_error err = {{0}};
    enum ims_status st = parse_image_id(r->id, &id, &err);
    if (st == IMS_OK)
        st = s->be.image_delete(s->be.self, id, &err);
    if (st != IMS_OK)
        return server__respond_error(r, c, st, &err);
    return server__respond_json(r, c, 200, json_pack("{s:I}", "deleted", (json_int_t)id));
}

enum MHD_Result server__h_thumb(struct server_request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    int64_t id;
    struct ims_error err = {{0}};
    struct ims_str jpeg = {0};
    enum ims_status st = parse_image_id(r->id, &id, &err);
    if (st == IMS_OK)
        st = s->be.image_thumb(s->be.self, id, &r->arena, &jpeg, &err);
    if (st != IMS_OK)
        return server__respond_error(r, c, st, &err);
    char etag[24];
    snprintf(etag, sizeof(etag), "\"%016llx\"",
             (unsigned long long)ims_fnv1a64(jpeg.ptr, jpeg.len));
    struct server_hdr h[2] = {{"ETag", etag}, {"Cache-Control", "public, max-age=86400"}};
    if (server__etag_matches(c, etag))
        return server__queue(r, c, 304, "", 0, NULL, h, 2);
    return server__queue(r, c, 200, jpeg.ptr, jpeg.len, "image/jpeg", h, 2);
}

enum MHD_Result server__h_job(struct server_request *r, struct MHD_Connection *c)
{
    const char *id = r->id;
    for (const char *p = id; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            return server__respond_msg(r, c, IMS_ERR_INVALID,
                                       "job id: only letters, digits, - and _");
    if (strlen(id) >= SERVER_JOB_ID_MAX)
        return server__respond_msg(r, c, IMS_ERR_INVALID, "job id: too long");
    return job_respond(r, c, id, 200);
}

static size_t conns_open(struct server *s)
{
    pthread_mutex_lock(&s->conns.mu);
    size_t n = s->conns.n;
    pthread_mutex_unlock(&s->conns.mu);
    return n;
}

enum MHD_Result server__h_metrics(struct server_request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    struct ims_buf b;
    ims_buf_init(&b, 4u << 20);
    enum ims_status st = ims_buf_printf(
        &b, "# HELP imgsearch_http_requests_total HTTP requests by route and status.\n"
            "# TYPE imgsearch_http_requests_total counter\n"
            "# HELP imgsearch_http_request_duration_seconds HTTP request latency by route.\n"
            "# TYPE imgsearch_http_request_duration_seconds histogram\n");
    for (size_t i = 0; i <= server__n_routes && st == IMS_OK; i++)
        st = server__metrics_render(
            &b, i < server__n_routes ? server__routes[i].pattern : "unmatched", &s->metrics[i]);
    pthread_mutex_lock(&s->gate_mu);
    unsigned inflight = s->inflight, waiting = s->waiting;
    pthread_mutex_unlock(&s->gate_mu);
    if (st == IMS_OK)
        st = ims_buf_printf(&b,
                            "# HELP imgsearch_http_inflight Backend calls running.\n"
                            "# TYPE imgsearch_http_inflight gauge\n"
                            "imgsearch_http_inflight %u\n"
                            "# HELP imgsearch_http_queue_waiting Requests waiting for a slot.\n"
                            "# TYPE imgsearch_http_queue_waiting gauge\n"
                            "imgsearch_http_queue_waiting %u\n"
                            "# HELP imgsearch_http_active_requests Requests being served.\n"
                            "# TYPE imgsearch_http_active_requests gauge\n"
                            "imgsearch_http_active_requests %d\n",
                            inflight, waiting, atomic_load(&s->active));
    if (st == IMS_OK)
        st = ims_buf_printf(
            &b,
            "# HELP imgsearch_http_job_waiters Requests waiting for their job (?wait=1).\n"
            "# TYPE imgsearch_http_job_waiters gauge\n"
            "imgsearch_http_job_waiters %u\n"
            "# HELP imgsearch_http_body_bytes Request body bytes held (budget reserved).\n"
            "# TYPE imgsearch_http_body_bytes gauge\n"
            "imgsearch_http_body_bytes %zu\n"
            "# HELP imgsearch_http_connections Open connections.\n"
            "# TYPE imgsearch_http_connections gauge\n"
            "imgsearch_http_connections %zu\n"
            "# HELP imgsearch_http_wait_abandoned_total ?wait=1 requests whose client hung up.\n"
            "# TYPE imgsearch_http_wait_abandoned_total counter\n"
            "imgsearch_http_wait_abandoned_total %lu\n"
            "# HELP imgsearch_http_rate_limit_overflow_total Requests charged to the shared "
            "bucket of new clients (rate-limit table full).\n"
            "# TYPE imgsearch_http_rate_limit_overflow_total counter\n"
            "imgsearch_http_rate_limit_overflow_total %lu\n"
            "# HELP imgsearch_http_refused_total Requests and connections refused by a "
            "hardening limit, by reason.\n"
            "# TYPE imgsearch_http_refused_total counter\n"
            "imgsearch_http_refused_total{reason=\"host\"} %lu\n"
            "imgsearch_http_refused_total{reason=\"origin\"} %lu\n"
            "imgsearch_http_refused_total{reason=\"body_memory\"} %lu\n"
            "imgsearch_http_refused_total{reason=\"waiters\"} %lu\n"
            "imgsearch_http_refused_total{reason=\"client_connections\"} %lu\n"
            "imgsearch_http_refused_total{reason=\"header_timeout\"} %lu\n"
            "imgsearch_http_refused_total{reason=\"body_rate\"} %lu\n",
            atomic_load(&s->waiters), atomic_load(&s->body_bytes), conns_open(s),
            atomic_load(&s->wait_abandoned), atomic_load(&s->rl.n_overflow),
            atomic_load(&s->refused_host), atomic_load(&s->refused_origin),
            atomic_load(&s->refused_body_memory), atomic_load(&s->refused_waiters),
            atomic_load(&s->conns.refused_per_client), atomic_load(&s->conns.killed_headers),
            atomic_load(&s->conns.killed_body));
    struct ims_error err = {{0}};
    if (st == IMS_OK && s->be.metrics) {
        st = s->be.metrics(s->be.self, &b, &err);
        if (st != IMS_OK) {
            server__error_log(s, "metrics: backend: %s", ims_error_message(&err, st));
            st = IMS_OK; /* the server's own series are still worth serving */
        }
    }
    enum MHD_Result ret;
    if (st != IMS_OK)
        ret = server__respond_msg(r, c, st, "cannot render metrics");
    else
        ret = server__queue(r, c, 200, b.data ? b.data : "", b.len, "text/plain; version=0.0.4",
                            NULL, 0);
    ims_buf_fini(&b);
    return ret;
}

/* ---- ?wait=1 -------------------------------------------------------------------------------- */

/* Whether the client has closed its end: the socket is readable and a
 * peek reads end-of-stream (or an error). MHD does not read the socket
 * while its thread is here, so peeking is safe. */
static bool client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL))
        return true;
    char b;
    ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* POST /api/v1/images?wait=1, after the job is queued: waits OUTSIDE the
 * admission gate (its slot was given back), so waiters never starve
 * searches; the waiter cap bounds them instead. With a thread per
 * connection the waiting thread is the connection's own, idle in
 * job_wait slices of JOB_WAIT_SLICE_MS; between slices it checks for
 * shutdown and for a client that hung up (then it stops at once and the
 * connection is closed). */
enum MHD_Result server__wait_respond(struct server_request *r, struct MHD_Connection *c)
{
    struct server *s = r->s;
    struct ims_error err = {{0}};
    double deadline = ims_now() + s->o.wait_max_ms / 1e3;
    enum ims_status st = IMS_ERR_TIMEOUT;
    server__conns_waiting(&s->conns, r->conn, true);
    while (st == IMS_ERR_TIMEOUT && !atomic_load(&s->stopping) && ims_now() < deadline) {
        if (client_gone(c)) {
            atomic_fetch_add(&s->wait_abandoned, 1);
            server__conns_waiting(&s->conns, r->conn, false);
            return MHD_NO;
        }
        st = s->be.job_wait(s->be.self, r->wait_job, JOB_WAIT_SLICE_MS, &err);
    }
    server__conns_waiting(&s->conns, r->conn, false);
    if (st == IMS_OK)
        return job_respond(r, c, r->wait_job, 200);
    if (st != IMS_ERR_TIMEOUT)
        return server__respond_error(r, c, st, &err);
    /* the wait cap passed, or shutdown: answer like without ?wait */
    return server__respond_json(r, c, 202, json_pack("{s:s}", "job", r->wait_job));
}
