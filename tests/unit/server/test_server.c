/* SPDX-License-Identifier: MIT */
/*
 * test_server.c: the HTTP layer, end to end over loopback, with a fake
 * backend.
 *
 * Every test starts a server on 127.0.0.1 (or ::1) port 0 with the fake
 * backend below and talks to it with libcurl (proxies disabled). The fake
 * keeps rows in memory, answers searches deterministically (rows by id,
 * score = 1 - id/100) and records the last query it received, so tests check
 * both what the client sees and what reached the backend. For the capacity
 * and shutdown tests its search can block until the test releases it; the
 * test learns that a request is inside the backend (or queued) from the fake
 * or from /metrics, never from sleeps.
 */
#include "server_int.h"
#include "server_test_http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <sys/time.h>
#include <time.h>
#include <strings.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- fake backend ---------------------------------------------------------------- */

#define FAKE_DIM 8
#define FAKE_MAX_ROWS 64

struct fake {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct server_row rows[FAKE_MAX_ROWS];
    bool deleted[FAKE_MAX_ROWS];
    int n_rows;
    int next_job;
    /* the last query */
    int q_terms, q_k, q_offset, q_order;
    bool q_has_min;
    float q_min;
    enum server_term_kind q_kind[SERVER_TERMS_MAX];
    float q_weight[SERVER_TERMS_MAX];
    char q_text[SERVER_TERMS_MAX][64];
    size_t q_bytes[SERVER_TERMS_MAX];
    /* blocking search */
    bool block;
    int entered;
    bool release;
    int n_searches;
    /* job_wait blocks until release (a slow job) */
    bool wait_block;
};

static struct fake fk;

static void fake_reset(void)
{
    pthread_mutex_init(&fk.mu, NULL);
    pthread_cond_init(&fk.cv, NULL);
    memset(fk.rows, 0, sizeof(fk.rows));
    memset(fk.deleted, 0, sizeof(fk.deleted));
    fk.n_rows = 5;
    for (int i = 0; i < 5; i++) {
        fk.rows[i].id = i + 1;
        fk.rows[i].url = "http://example.com/img.jpg";
        fk.rows[i].width = 100 + i;
        fk.rows[i].height = 50 + i;
        fk.rows[i].added_unix = 1700000000 + i;
    }
    fk.next_job = 1;
    fk.q_terms = 0;
    fk.block = false;
    fk.entered = 0;
    fk.release = false;
    fk.n_searches = 0;
    fk.wait_block = false;
}

static struct server_row *fake_row(int64_t id)
{
    if (id < 1 || id > fk.n_rows || fk.deleted[id - 1])
        return NULL;
    return &fk.rows[id - 1];
}

static enum ims_status f_stats(void *self, struct server_arena *a, struct server_stats *out,
                               struct ims_error *err)
{
    int n = 0;
    pthread_mutex_lock(&fk.mu);
    for (int i = 0; i < fk.n_rows; i++)
        n += !fk.deleted[i];
    pthread_mutex_unlock(&fk.mu);
    out->images = n;
    out->dim = FAKE_DIM;
    out->model = server_arena_strdup(a, "fake-clip");
    out->index = "Flat,IP";
    out->extra_json = "{\"jobs_running\": 0, \"images\": -1}";
    return IMS_OK;
}

static enum ims_status f_search(void *self, const struct server_query *q, struct server_arena *a,
                                struct server_results *out, struct ims_error *err)
{
    for (size_t i = 0; i < q->n_terms; i++) {
        const struct server_term *t = &q->terms[i];
        if (t->kind == SERVER_TERM_VECTOR && t->n_vector != FAKE_DIM)
            return ims_error_set(err, IMS_ERR_INVALID, "vector has %zu dimensions, not %d",
                                 t->n_vector, FAKE_DIM);
        if (t->kind == SERVER_TERM_IMAGE && (t->n_bytes < 3 || memcmp(t->bytes, "IMG", 3)))
            return ims_error_set(err, IMS_ERR_UNSUPPORTED, "not an image");
        if (t->kind == SERVER_TERM_IMAGE_ID && !fake_row(t->image_id))
            return ims_error_set(err, IMS_ERR_NOT_FOUND, "no image %lld",
                                 (long long)t->image_id);
    }
    pthread_mutex_lock(&fk.mu);
    fk.n_searches++;
    fk.q_terms = (int)q->n_terms;
    fk.q_k = q->k;
    fk.q_offset = q->offset;
    fk.q_order = q->order;
    fk.q_has_min = q->has_min_score;
    fk.q_min = q->min_score;
    for (size_t i = 0; i < q->n_terms; i++) {
        fk.q_kind[i] = q->terms[i].kind;
        fk.q_weight[i] = q->terms[i].weight;
        snprintf(fk.q_text[i], sizeof(fk.q_text[i]), "%s",
                 q->terms[i].text ? q->terms[i].text : "");
        fk.q_bytes[i] = q->terms[i].n_bytes;
    }
    if (fk.block) {
        fk.entered++;
        pthread_cond_broadcast(&fk.cv);
        while (!fk.release)
            pthread_cond_wait(&fk.cv, &fk.mu);
    }
    out->items = server_arena_alloc(a, FAKE_MAX_ROWS * sizeof(*out->items));
    out->n = 0;
    int skipped = 0;
    for (int i = 0; i < fk.n_rows && out->n < (size_t)q->k; i++) {
        if (fk.deleted[i])
            continue;
        float score = 1.0f - (float)fk.rows[i].id / 100.0f;
        if (q->has_min_score && score < q->min_score)
            continue;
        if (skipped++ < q->offset)
            continue;
        out->items[out->n].row = fk.rows[i];
        out->items[out->n].score = score;
        out->n++;
    }
    pthread_mutex_unlock(&fk.mu);
    return IMS_OK;
}

static enum ims_status f_add_urls(void *self, const char *const *urls, size_t n,
                                  char job_id[SERVER_JOB_ID_MAX], struct ims_error *err)
{
    pthread_mutex_lock(&fk.mu);
    snprintf(job_id, SERVER_JOB_ID_MAX, "job-%d-%zu", fk.next_job++, n);
    pthread_mutex_unlock(&fk.mu);
    return IMS_OK;
}

static enum ims_status f_job_get(void *self, const char *id, struct server_arena *a,
                                 struct server_job *out, struct ims_error *err)
{
    int num;
    size_t n;
    if (sscanf(id, "job-%d-%zu", &num, &n) != 2)
        return ims_error_set(err, IMS_ERR_NOT_FOUND, "no job %s", id);
    snprintf(out->id, sizeof(out->id), "%s", id);
    out->state = SERVER_JOB_DONE;
    out->total = (int64_t)n;
    out->done = (int64_t)n - 1;
    out->failed = 1;
    struct server_job_error *e = server_arena_alloc(a, sizeof(*e));
    memset(e, 0, sizeof(*e)); /* arena memory is not zeroed: `code` stays NULL */
    e->url = "http://bad.example/x.jpg";
    e->error = "not an image";
    out->errors = e;
    out->n_errors = 1;
    return IMS_OK;
}

static enum ims_status f_job_wait(void *self, const char *id, int timeout_ms,
                                  struct ims_error *err)
{
    pthread_mutex_lock(&fk.mu);
    if (!fk.wait_block) {
        pthread_mutex_unlock(&fk.mu);
        return IMS_OK;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)timeout_ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    int rc = 0;
    while (!fk.release && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&fk.cv, &fk.mu, &ts);
    bool done = fk.release;
    pthread_mutex_unlock(&fk.mu);
    return done ? IMS_OK : ims_error_set(err, IMS_ERR_TIMEOUT, "still running");
}

static enum ims_status f_upload(void *self, const struct server_file *files, size_t n,
                                struct server_arena *a, struct server_upload_item *items,
                                struct ims_error *err)
{
    pthread_mutex_lock(&fk.mu);
    for (size_t i = 0; i < n; i++) {
        if (files[i].n_bytes < 3 || memcmp(files[i].bytes, "IMG", 3) != 0) {
            items[i].status = IMS_ERR_UNSUPPORTED;
            snprintf(items[i].message, sizeof(items[i].message), "not an image");
            continue;
        }
        if (fk.n_rows == FAKE_MAX_ROWS) {
            items[i].status = IMS_ERR_TOO_LARGE;
            continue;
        }
        struct server_row *r = &fk.rows[fk.n_rows];
        r->id = ++fk.n_rows;
        r->url = files[i].filename ? server_arena_strdup(a, files[i].filename) : NULL;
        r->width = (int)files[i].n_bytes;
        r->height = 1;
        r->added_unix = 1800000000;
        items[i].status = IMS_OK;
        items[i].row = *r;
        r->url = "upload";
    }
    pthread_mutex_unlock(&fk.mu);
    return IMS_OK;
}

static enum ims_status f_image_get(void *self, int64_t id, struct server_arena *a,
                                   struct server_row *out, struct ims_error *err)
{
    pthread_mutex_lock(&fk.mu);
    struct server_row *r = fake_row(id);
    if (r)
        *out = *r;
    pthread_mutex_unlock(&fk.mu);
    if (!r)
        return ims_error_set(err, IMS_ERR_NOT_FOUND, "no image %lld", (long long)id);
    return IMS_OK;
}

static enum ims_status f_image_thumb(void *self, int64_t id, struct server_arena *a,
                                     struct ims_str *jpeg, struct ims_error *err)
{
    if (id == 4)
        return ims_error_set(err, IMS_ERR_INTERNAL, "secret path /var/lib/x is broken");
    pthread_mutex_lock(&fk.mu);
    struct server_row *r = fake_row(id);
    pthread_mutex_unlock(&fk.mu);
    if (!r)
        return ims_error_set(err, IMS_ERR_NOT_FOUND, "no image %lld", (long long)id);
    char *p = server_arena_alloc(a, 32);
    int n = snprintf(p, 32, "\xff\xd8\xff-thumb-%lld", (long long)id);
    jpeg->ptr = p;
    jpeg->len = (size_t)n;
    return IMS_OK;
}

static enum ims_status f_image_delete(void *self, int64_t id, struct ims_error *err)
{
    pthread_mutex_lock(&fk.mu);
    struct server_row *r = fake_row(id);
    if (r)
        fk.deleted[id - 1] = true;
    pthread_mutex_unlock(&fk.mu);
    if (!r)
        return ims_error_set(err, IMS_ERR_NOT_FOUND, "no image %lld", (long long)id);
    return IMS_OK;
}

static enum ims_status f_metrics(void *self, struct ims_buf *out, struct ims_error *err)
{
    return ims_buf_printf(out, "fake_backend_rows %d\n", fk.n_rows);
}

static const struct server_backend fake_backend = {
    .stats = f_stats,         .search = f_search,         .add_urls = f_add_urls,
    .job_get = f_job_get,     .job_wait = f_job_wait,     .upload = f_upload,
    .image_get = f_image_get, .image_thumb = f_image_thumb, .image_delete = f_image_delete,
    .metrics = f_metrics,
};

/* ---- server + client helpers ------------------------------------------------------ */

static struct server *srv;
static char base_url[64];

static void start_with(struct server_options *o)
{
    struct ims_error err = {{0}};
    fake_reset();
    o->port = 0;
    assert_int_equal(server_start(o, &fake_backend, &srv, &err), IMS_OK);
    assert_true(server_port(srv) > 0);
    if (strchr(o->host, ':'))
        snprintf(base_url, sizeof(base_url), "http://[%s]:%u", o->host, server_port(srv));
    else
        snprintf(base_url, sizeof(base_url), "http://%s:%u", o->host, server_port(srv));
}

static void start_default(void)
{
    struct server_options o;
    server_options_init(&o);
    start_with(&o);
}

static void stop(void)
{
    server_free(srv);
    srv = NULL;
}

/* One request. `hdrs` is a NULL-terminated list of extra header lines. */
static void http_req(struct resp *out, const char *method, const char *path, const char *ctype,
                     const void *body, size_t len, const char *const *hdrs)
{
    ts_http(out, base_url, method, path, ctype, body, len, hdrs);
}

static void get(struct resp *r, const char *path) { http_req(r, "GET", path, NULL, NULL, 0, NULL); }

static void post_json(struct resp *r, const char *path, const char *json)
{
    http_req(r, "POST", path, "application/json", json, strlen(json), NULL);
}

/* The value of response header `name` (case-insensitive), or "" . */
static void assert_error(const struct resp *r, long status, const char *code, const char *needle)
{
    if (r->status != status)
        fprintf(stderr, "unexpected %ld: %s\n", r->status, r->body.data ? r->body.data : "");
    assert_int_equal(r->status, status);
    assert_non_null(r->json);
    json_t *e = json_object_get(r->json, "error");
    assert_true(json_is_object(e));
    assert_string_equal(json_string_value(json_object_get(e, "code")), code);
    const char *msg = json_string_value(json_object_get(e, "message"));
    assert_non_null(msg);
    if (needle && !strstr(msg, needle))
        fprintf(stderr, "message \"%s\" lacks \"%s\"\n", msg, needle);
    if (needle)
        assert_non_null(strstr(msg, needle));
}

static long long jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

/* ---- basic endpoints ------------------------------------------------------------------ */

static void test_healthz_stats(void **state)
{
    start_default();
    struct resp r;
    get(&r, "/healthz");
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "ok");
    char h[256];
    assert_string_equal(header(&r, "Content-Type", h, sizeof(h)), "application/json");
    resp_fini(&r);

    get(&r, "/api/v1/stats");
    assert_int_equal(r.status, 200);
    assert_int_equal(jint(r.json, "images"), 5);
    assert_int_equal(jint(r.json, "dim"), FAKE_DIM);
    assert_string_equal(json_string_value(json_object_get(r.json, "model")), "fake-clip");
    assert_string_equal(json_string_value(json_object_get(r.json, "index")), "Flat,IP");
    assert_int_equal(jint(r.json, "jobs_running"), 0); /* extras merged, not overriding */
    resp_fini(&r);

    http_req(&r, "HEAD", "/healthz", NULL, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 0);
    resp_fini(&r);
    stop();
}

static void test_web_assets(void **state)
{
    start_default();
    struct resp r;
    char h[512];
    get(&r, "/");
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", h, sizeof(h)), "text/html; charset=utf-8");
    assert_non_null(strstr(header(&r, "Content-Security-Policy", h, sizeof(h)),
                           "script-src 'self'"));
    assert_non_null(strstr(r.body.data, "<html"));
    char etag[64];
    header(&r, "ETag", etag, sizeof(etag));
    assert_true(strlen(etag) > 2);
    resp_fini(&r);

    char inm[96];
    snprintf(inm, sizeof(inm), "If-None-Match: %s", etag);
    const char *hdrs[] = {inm, NULL};
    http_req(&r, "GET", "/", NULL, NULL, 0, hdrs);
    assert_int_equal(r.status, 304);
    resp_fini(&r);

    get(&r, "/app.js");
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", h, sizeof(h)),
                        "text/javascript; charset=utf-8");
    assert_true(r.body.len > 100);
    resp_fini(&r);
    get(&r, "/style.css");
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", h, sizeof(h)), "text/css; charset=utf-8");
    resp_fini(&r);
    stop();
}

static void test_not_found_and_method(void **state)
{
    start_default();
    struct resp r;
    char h[128];
    get(&r, "/nope");
    assert_error(&r, 404, "not_found", "/nope");
    resp_fini(&r);
    get(&r, "/api/v1/images/1/thumb/extra");
    assert_error(&r, 404, "not_found", NULL);
    resp_fini(&r);

    http_req(&r, "DELETE", "/api/v1/search", NULL, NULL, 0, NULL);
    assert_error(&r, 405, "method_not_allowed", "DELETE");
    assert_string_equal(header(&r, "Allow", h, sizeof(h)), "GET, HEAD, POST");
    resp_fini(&r);
    http_req(&r, "PUT", "/api/v1/images/1", NULL, NULL, 0, NULL);
    assert_int_equal(r.status, 405);
    assert_string_equal(header(&r, "Allow", h, sizeof(h)), "GET, HEAD, DELETE");
    resp_fini(&r);
    http_req(&r, "GET", "/api/v1/images", NULL, NULL, 0, NULL);
    assert_int_equal(r.status, 405);
    assert_string_equal(header(&r, "Allow", h, sizeof(h)), "POST");
    resp_fini(&r);
    stop();
}

/* ---- search ------------------------------------------------------------------------------- */

static void test_search_get(void **state)
{
    start_default();
    struct resp r;
    get(&r, "/api/v1/search?q=red%20car&k=3&offset=1");
    assert_int_equal(r.status, 200);
    json_t *res = json_object_get(r.json, "results");
    assert_int_equal(json_array_size(res), 3);
    json_t *first = json_array_get(res, 0);
    assert_int_equal(jint(first, "id"), 2); /* offset 1 skipped id 1 */
    assert_string_equal(json_string_value(json_object_get(first, "thumb")),
                        "/api/v1/images/2/thumb");
    assert_int_equal(jint(first, "width"), 101);
    assert_int_equal(jint(first, "height"), 51);
    assert_true(fabs(json_real_value(json_object_get(first, "score")) - 0.98) < 1e-5);
    assert_true(json_is_number(json_object_get(r.json, "took_ms")));
    assert_int_equal(fk.q_terms, 1);
    assert_int_equal(fk.q_kind[0], SERVER_TERM_TEXT);
    assert_string_equal(fk.q_text[0], "red car");
    assert_int_equal(fk.q_k, 3);
    assert_int_equal(fk.q_offset, 1);
    resp_fini(&r);

    get(&r, "/api/v1/search?q=x&image_id=3&min_score=0.975&order=date");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "results")), 2);
    assert_int_equal(fk.q_terms, 2);
    assert_int_equal(fk.q_kind[1], SERVER_TERM_IMAGE_ID);
    assert_true(fk.q_has_min);
    assert_int_equal(fk.q_order, SERVER_ORDER_DATE);
    resp_fini(&r);

    static const struct {
        const char *path, *needle;
    } bad[] = {
        {"/api/v1/search", "q"},
        {"/api/v1/search?q=x&k=0", "k: must be in 1..1000"},
        {"/api/v1/search?q=x&k=1001", "k"},
        {"/api/v1/search?q=x&k=abc", "k: not an integer"},
        {"/api/v1/search?q=x&offset=10001", "offset"},
        {"/api/v1/search?q=x&offset=-1", "offset"},
        {"/api/v1/search?q=x&min_score=nan", "min_score"},
        {"/api/v1/search?q=x&min_score=2", "min_score"},
        {"/api/v1/search?q=x&order=size", "order"},
        {"/api/v1/search?image_id=0", "image_id"},
        {"/api/v1/search?q=", "q: empty"},
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad); i++) {
        get(&r, bad[i].path);
        assert_error(&r, 400, "invalid_argument", bad[i].needle);
        resp_fini(&r);
    }
    get(&r, "/api/v1/search?image_id=99");
    assert_error(&r, 404, "not_found", "99");
    resp_fini(&r);
    stop();
}

static void test_search_post_json(void **state)
{
    start_default();
    struct resp r;
    post_json(&r, "/api/v1/search",
              "{\"terms\": [{\"text\": \"beach\", \"weight\": 1},"
              " {\"image_id\": 2, \"weight\": 0.5},"
              " {\"image_url\": \"https://example.com/a.jpg\"},"
              " {\"vector\": [1,0,0,0,0,0,0,0], \"weight\": 1},"
              " {\"text\": \"people\", \"weight\": -0.5}],"
              " \"k\": 2, \"offset\": 0, \"min_score\": 0.2, \"order\": \"score\"}");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "results")), 2);
    assert_int_equal(fk.q_terms, 5);
    assert_int_equal(fk.q_kind[0], SERVER_TERM_TEXT);
    assert_int_equal(fk.q_kind[1], SERVER_TERM_IMAGE_ID);
    assert_int_equal(fk.q_kind[2], SERVER_TERM_IMAGE_URL);
    assert_int_equal(fk.q_kind[3], SERVER_TERM_VECTOR);
    assert_true(fk.q_weight[1] == 0.5f);
    assert_true(fk.q_weight[2] == 1.0f);
    assert_true(fk.q_weight[4] == -0.5f);
    assert_string_equal(fk.q_text[4], "people");
    assert_true(fk.q_has_min && fabsf(fk.q_min - 0.2f) < 1e-6f);
    resp_fini(&r);

    post_json(&r, "/api/v1/search", "{\"text\": \"dog\", \"k\": 1}");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "results")), 1);
    assert_int_equal(fk.q_terms, 1);
    assert_string_equal(fk.q_text[0], "dog");
    resp_fini(&r);

    /* the backend's own validation (vector size) comes back as 400 */
    post_json(&r, "/api/v1/search", "{\"vector\": [1, 2, 3]}");
    assert_error(&r, 400, "invalid_argument", "3 dimensions");
    resp_fini(&r);
    stop();
}

static void test_search_post_json_errors(void **state)
{
    start_default();
    static const struct {
        const char *body, *needle;
    } bad[] = {
        {"{\"text\": \"a\",", "line 1, column"},
        {"{\n\"terms\": [}", "line 2"},
        {"[1]", "JSON object"},
        {"{}", "exactly one of"},
        {"{\"text\": \"a\", \"image_id\": 3}", "exactly one of"},
        {"{\"terms\": []}", "1..16"},
        {"{\"terms\": [{\"text\": \"a\", \"wieght\": 1}]}", "terms[0].wieght: unknown member"},
        {"{\"terms\": [{\"text\": \"a\"}], \"kk\": 1}", "kk: unknown member"},
        {"{\"terms\": [{\"text\": \"a\", \"weight\": \"x\"}]}", "must be a number"},
        {"{\"terms\": [{\"text\": \"\"}]}", "empty text"},
        {"{\"terms\": [{\"image_id\": -4}]}", "image_id"},
        {"{\"terms\": [{\"image_id\": 1.5}]}", "integer"},
        {"{\"terms\": [{\"image_url\": \"file:///etc/passwd\"}]}", "http"},
        {"{\"terms\": [{\"vector\": []}]}", "vector"},
        {"{\"terms\": [{\"vector\": [1, \"a\"]}]}", "vector[1]"},
        {"{\"text\": \"a\", \"k\": 0}", "k"},
        {"{\"text\": \"a\", \"k\": 5000}", "k"},
        {"{\"text\": \"a\", \"offset\": 20000}", "offset"},
        {"{\"text\": \"a\", \"min_score\": 3}", "min_score"},
        {"{\"text\": \"a\", \"order\": \"size\"}", "order"},
        {"{\"text\": \"a\", \"text\": \"b\"}", "duplicate"},
        {"{\"text\": \"a\", \"weight\": 1e300}", "weight"},
    };
    struct resp r;
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad); i++) {
        post_json(&r, "/api/v1/search", bad[i].body);
        assert_error(&r, 400, "invalid_argument", bad[i].needle);
        resp_fini(&r);
    }
    /* 17 terms */
    struct ims_buf b;
    ims_buf_init(&b, 1 << 16);
    ims_buf_printf(&b, "{\"terms\": [");
    for (int i = 0; i < 17; i++)
        ims_buf_printf(&b, "%s{\"text\": \"t%d\"}", i ? "," : "", i);
    ims_buf_printf(&b, "]}");
    post_json(&r, "/api/v1/search", b.data);
    assert_error(&r, 400, "invalid_argument", "1..16");
    resp_fini(&r);
    ims_buf_fini(&b);
    stop();
}

/* ---- limits: 413, 415 ------------------------------------------------------------------------ */

static void test_body_limits(void **state)
{
    struct server_options o;
    server_options_init(&o);
    o.json_max_bytes = 1000;
    o.upload_max_bytes = 4000;
    start_with(&o);
    struct resp r;
    /* bigger than the limit, announced by Content-Length */
    size_t n = 5000;
    char *big = malloc(n + 1);
    memset(big, ' ', n);
    memcpy(big, "{\"text\": \"a\"}", 13);
    big[n] = '\0';
    http_req(&r, "POST", "/api/v1/search", "application/json", big, n, NULL);
    assert_error(&r, 413, "too_large", "1000");
    resp_fini(&r);
    /* exactly at the limit is fine */
    http_req(&r, "POST", "/api/v1/search", "application/json", big, 1000, NULL);
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    /* chunked: no Content-Length, caught while streaming */
    const char *chunked[] = {"Transfer-Encoding: chunked", NULL};
    http_req(&r, "POST", "/api/v1/search", "application/json", big, n, chunked);
    assert_error(&r, 413, "too_large", "1000");
    resp_fini(&r);
    /* multipart over the upload limit */
    struct ims_buf mp;
    ims_buf_init(&mp, 1 << 20);
    ims_buf_printf(&mp, "--XB\r\nContent-Disposition: form-data; name=\"file\"; "
                        "filename=\"a.jpg\"\r\n\r\nIMG");
    for (int i = 0; i < 500; i++)
        ims_buf_printf(&mp, "0123456789");
    ims_buf_printf(&mp, "\r\n--XB--\r\n");
    http_req(&r, "POST", "/api/v1/search", "multipart/form-data; boundary=XB", mp.data, mp.len,
             NULL);
    assert_error(&r, 413, "too_large", NULL);
    resp_fini(&r);
    http_req(&r, "POST", "/api/v1/search", "multipart/form-data; boundary=XB", mp.data, mp.len,
             chunked);
    assert_error(&r, 413, "too_large", "4000");
    resp_fini(&r);
    ims_buf_fini(&mp);

    http_req(&r, "POST", "/api/v1/search", "text/plain", "hello", 5, NULL);
    assert_error(&r, 415, "unsupported", "text/plain");
    resp_fini(&r);
    http_req(&r, "POST", "/api/v1/images", "application/xml", "<a/>", 4, NULL);
    assert_error(&r, 415, "unsupported", NULL);
    resp_fini(&r);
    http_req(&r, "POST", "/api/v1/search", "application/jsonx", "{}", 2, NULL);
    assert_error(&r, 415, "unsupported", NULL);
    resp_fini(&r);
    free(big);
    stop();
}

/* ---- images, jobs, rows ---------------------------------------------------------------------- */

static void test_images_urls_and_jobs(void **state)
{
    start_default();
    struct resp r;
    post_json(&r, "/api/v1/images", "{\"urls\": [\"http://a.example/1.jpg\", \"https://b/2.png\"]}");
    assert_int_equal(r.status, 202);
    const char *job = json_string_value(json_object_get(r.json, "job"));
    assert_non_null(job);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", job);
    resp_fini(&r);
    get(&r, path);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "state")), "done");
    assert_int_equal(jint(r.json, "total"), 2);
    assert_int_equal(jint(r.json, "done"), 1);
    assert_int_equal(jint(r.json, "failed"), 1);
    json_t *errs = json_object_get(r.json, "errors");
    assert_int_equal(json_array_size(errs), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(errs, 0), "url")),
                        "http://bad.example/x.jpg");
    resp_fini(&r);

    post_json(&r, "/api/v1/images?wait=1", "{\"urls\": [\"http://a.example/1.jpg\"]}");
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "state")), "done");
    assert_int_equal(jint(r.json, "total"), 1);
    assert_non_null(strstr(json_string_value(json_object_get(r.json, "id")), "job-"));
    resp_fini(&r);

    get(&r, "/api/v1/jobs/nope");
    assert_error(&r, 404, "not_found", "nope");
    resp_fini(&r);
    get(&r, "/api/v1/jobs/a.b");
    assert_error(&r, 400, "invalid_argument", "job id");
    resp_fini(&r);

    static const char *const bad[] = {
        "{\"urls\": []}", "{\"urls\": \"http://x\"}", "{\"urls\": [\"ftp://x\"]}",
        "{\"urls\": [1]}", "{\"url\": [\"http://x\"]}", "{\"urls\": [\"http://x\"], \"x\": 1}",
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad); i++) {
        post_json(&r, "/api/v1/images", bad[i]);
        assert_error(&r, 400, "invalid_argument", "urls");
        resp_fini(&r);
    }
    post_json(&r, "/api/v1/images", "{\"urls\": [\"http://x\"]");
    assert_error(&r, 400, "invalid_argument", "line 1, column");
    resp_fini(&r);
    stop();
}

static void test_image_row_thumb_delete(void **state)
{
    start_default();
    struct resp r;
    char h[128];
    get(&r, "/api/v1/images/3");
    assert_int_equal(r.status, 200);
    assert_int_equal(jint(r.json, "id"), 3);
    assert_int_equal(jint(r.json, "width"), 102);
    assert_int_equal(jint(r.json, "added"), 1700000002);
    assert_string_equal(json_string_value(json_object_get(r.json, "url")),
                        "http://example.com/img.jpg");
    resp_fini(&r);

    get(&r, "/api/v1/images/3/thumb");
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", h, sizeof(h)), "image/jpeg");
    assert_non_null(strstr(header(&r, "Cache-Control", h, sizeof(h)), "max-age"));
    assert_memory_equal(r.body.data, "\xff\xd8\xff-thumb-3", 11);
    char etag[64], inm[96];
    header(&r, "ETag", etag, sizeof(etag));
    assert_true(strlen(etag) > 2);
    resp_fini(&r);
    snprintf(inm, sizeof(inm), "If-None-Match: %s", etag);
    const char *hdrs[] = {inm, NULL};
    http_req(&r, "GET", "/api/v1/images/3/thumb", NULL, NULL, 0, hdrs);
    assert_int_equal(r.status, 304);
    resp_fini(&r);

    /* an internal failure is a 500 that does not leak the backend's message */
    get(&r, "/api/v1/images/4/thumb");
    assert_error(&r, 500, "internal", NULL);
    assert_null(strstr(r.body.data, "secret"));
    resp_fini(&r);

    get(&r, "/api/v1/images/abc");
    assert_error(&r, 400, "invalid_argument", "image id");
    resp_fini(&r);
    get(&r, "/api/v1/images/0");
    assert_error(&r, 400, "invalid_argument", "image id");
    resp_fini(&r);
    /* an encoded NUL must not cut the id short ("1%00x" is not image 1) */
    get(&r, "/api/v1/search?q=cat&limit=5");
    assert_error(&r, 400, "invalid_argument", "unknown query parameter 'limit'");
    resp_fini(&r);
    get(&r, "/api/v1/images/1%00x");
    assert_error(&r, 400, "invalid_argument", "image id");
    resp_fini(&r);
    get(&r, "/api/v1/images/99");
    assert_error(&r, 404, "not_found", "99");
    resp_fini(&r);

    http_req(&r, "DELETE", "/api/v1/images/3", NULL, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(jint(r.json, "deleted"), 3);
    resp_fini(&r);
    get(&r, "/api/v1/images/3");
    assert_error(&r, 404, "not_found", NULL);
    resp_fini(&r);
    http_req(&r, "DELETE", "/api/v1/images/3", NULL, NULL, 0, NULL);
    assert_error(&r, 404, "not_found", NULL);
    resp_fini(&r);
    get(&r, "/api/v1/stats");
    assert_int_equal(jint(r.json, "images"), 4);
    resp_fini(&r);
    stop();
}

/* ---- multipart ------------------------------------------------------------------------------- */

static void mp_part(struct ims_buf *b, const char *name, const char *filename, const void *data,
                    size_t len)
{
    ims_buf_printf(b, "--BoUnDaRy\r\nContent-Disposition: form-data; name=\"%s\"", name);
    if (filename)
        ims_buf_printf(b, "; filename=\"%s\"\r\nContent-Type: image/jpeg", filename);
    ims_buf_printf(b, "\r\n\r\n");
    ims_buf_append(b, data, len);
    ims_buf_printf(b, "\r\n");
}

#define MP_CT "multipart/form-data; boundary=BoUnDaRy"

static void test_upload_multipart(void **state)
{
    start_default();
    struct resp r;
    struct ims_buf b;
    ims_buf_init(&b, 1 << 20);
    /* binary content including CR LF and "--" sequences that are not the delimiter */
    static const char f1[] = "IMG\r\n--BoUnDaR\r\n\0\xff--";
    mp_part(&b, "file", "one.jpg", f1, sizeof(f1) - 1);
    mp_part(&b, "file", "two.jpg", "IMG2", 4);
    mp_part(&b, "file", "bad.txt", "hello", 5);
    ims_buf_printf(&b, "--BoUnDaRy--\r\n");
    http_req(&r, "POST", "/api/v1/images", MP_CT, b.data, b.len, NULL);
    assert_int_equal(r.status, 200);
    json_t *rows = json_object_get(r.json, "images");
    assert_int_equal(json_array_size(rows), 2);
    assert_int_equal(jint(json_array_get(rows, 0), "id"), 6);
    assert_int_equal(jint(json_array_get(rows, 0), "width"), (long long)sizeof(f1) - 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 0), "url")),
                        "one.jpg");
    assert_int_equal(jint(json_array_get(rows, 1), "width"), 4);
    json_t *errs = json_object_get(r.json, "errors");
    assert_int_equal(json_array_size(errs), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(errs, 0), "file")),
                        "bad.txt");
    assert_string_equal(json_string_value(json_object_get(json_array_get(errs, 0), "code")),
                        "unsupported");
    resp_fini(&r);

    /* every file bad: the error's own status */
    ims_buf_reset(&b);
    mp_part(&b, "file", "bad.txt", "hello", 5);
    ims_buf_printf(&b, "--BoUnDaRy--\r\n");
    http_req(&r, "POST", "/api/v1/images", MP_CT, b.data, b.len, NULL);
    assert_error(&r, 415, "unsupported", "bad.txt");
    resp_fini(&r);

    static const struct {
        const char *ct, *body, *needle;
    } bad[] = {
        {"multipart/form-data", "--x\r\n", "boundary"},
        {MP_CT, "--BoUnDaRy\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nIMG",
         "truncated"},
        {MP_CT, "--BoUnDaRy--\r\n", "without a \"file\""},
        {MP_CT, "no delimiter at all", "boundary never occurs"},
        {MP_CT, "--BoUnDaRy\r\nContent-Type: x\r\n\r\nIMG\r\n--BoUnDaRy--\r\n", "name"},
        {MP_CT, "--BoUnDaRy\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nv\r\n"
                "--BoUnDaRy--\r\n",
         "other"},
        {MP_CT, "--BoUnDaRy\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n\r\n"
                "--BoUnDaRy--\r\n",
         "empty"},
        {MP_CT, "--BoUnDaRyX\r\n", "after a boundary"},
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad); i++) {
        http_req(&r, "POST", "/api/v1/images", bad[i].ct, bad[i].body, strlen(bad[i].body),
                 NULL);
        assert_error(&r, 400, "invalid_argument", bad[i].needle);
        resp_fini(&r);
    }
    ims_buf_fini(&b);
    stop();
}

static void test_search_multipart(void **state)
{
    start_default();
    struct resp r;
    struct ims_buf b;
    ims_buf_init(&b, 1 << 20);
    mp_part(&b, "file", "q.jpg", "IMGquery", 8);
    mp_part(&b, "text", NULL, "sunset", 6);
    mp_part(&b, "text_weight", NULL, "0.25", 4);
    mp_part(&b, "file_weight", NULL, "0.75", 4);
    mp_part(&b, "negative", NULL, "people", 6);
    mp_part(&b, "negative_weight", NULL, "0.3", 3);
    mp_part(&b, "k", NULL, "2", 1);
    ims_buf_printf(&b, "--BoUnDaRy--\r\n");
    http_req(&r, "POST", "/api/v1/search", MP_CT, b.data, b.len, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "results")), 2);
    assert_int_equal(fk.q_terms, 3);
    assert_int_equal(fk.q_kind[0], SERVER_TERM_IMAGE);
    assert_int_equal(fk.q_bytes[0], 8);
    assert_true(fk.q_weight[0] == 0.75f);
    assert_int_equal(fk.q_kind[1], SERVER_TERM_TEXT);
    assert_string_equal(fk.q_text[1], "sunset");
    assert_true(fk.q_weight[1] == 0.25f);
    assert_string_equal(fk.q_text[2], "people");
    assert_true(fabsf(fk.q_weight[2] + 0.3f) < 1e-6f);
    assert_int_equal(fk.q_k, 2);
    resp_fini(&r);

    ims_buf_reset(&b);
    mp_part(&b, "file", "q.txt", "notimage", 8);
    ims_buf_printf(&b, "--BoUnDaRy--\r\n");
    http_req(&r, "POST", "/api/v1/search", MP_CT, b.data, b.len, NULL);
    assert_error(&r, 415, "unsupported", "not an image");
    resp_fini(&r);

    ims_buf_reset(&b);
    mp_part(&b, "text", NULL, "", 0);
    mp_part(&b, "k", NULL, "5", 1);
    ims_buf_printf(&b, "--BoUnDaRy--\r\n");
    http_req(&r, "POST", "/api/v1/search", MP_CT, b.data, b.len, NULL);
    assert_error(&r, 400, "invalid_argument", "no search term");
    resp_fini(&r);

    ims_buf_reset(&b);
    mp_part(&b, "text", NULL, "a", 1);
    mp_part(&b, "text_weight", NULL, "inf", 3);
    ims_buf_printf(&b, "--BoUnDaRy--\r\n");
    http_req(&r, "POST", "/api/v1/search", MP_CT, b.data, b.len, NULL);
    assert_error(&r, 400, "invalid_argument", "text_weight");
    resp_fini(&r);

    ims_buf_reset(&b);
    mp_part(&b, "txt", NULL, "a", 1);
    ims_buf_printf(&b, "--BoUnDaRy--\r\n");
    http_req(&r, "POST", "/api/v1/search", MP_CT, b.data, b.len, NULL);
    assert_error(&r, 400, "invalid_argument", "txt");
    resp_fini(&r);
    ims_buf_fini(&b);
    stop();
}

/* ---- auth, rate limit ------------------------------------------------------------------------- */

static void test_api_key(void **state)
{
    struct server_options o;
    server_options_init(&o);
    char dir[] = "/tmp/ims_srv_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/key", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("  s3cret-key\n", f);
    fclose(f);
    struct ims_error err;
    assert_int_equal(server_options_load_api_key(&o, path, &err), IMS_OK);
    assert_string_equal(o.api_key, "s3cret-key");
    unlink(path);
    rmdir(dir);
    FILE *log = NULL;
    char *log_text = NULL;
    size_t log_len = 0;
    log = open_memstream(&log_text, &log_len);
    o.access_log = log;
    start_with(&o);
    struct resp r;
    char h[128];
    const char *body = "{\"urls\": [\"http://a/1.jpg\"]}";
    http_req(&r, "POST", "/api/v1/images", "application/json", body, strlen(body), NULL);
    assert_error(&r, 401, "unauthorized", "API key");
    assert_non_null(strstr(header(&r, "WWW-Authenticate", h, sizeof(h)), "Bearer"));
    resp_fini(&r);
    const char *wrong[] = {"Authorization: Bearer s3cret-kez", NULL};
    http_req(&r, "POST", "/api/v1/images", "application/json", body, strlen(body), wrong);
    assert_error(&r, 401, "unauthorized", "wrong");
    resp_fini(&r);
    const char *prefix[] = {"Authorization: Bearer s3cret-ke", NULL};
    http_req(&r, "POST", "/api/v1/images", "application/json", body, strlen(body), prefix);
    assert_int_equal(r.status, 401);
    resp_fini(&r);
    const char *right[] = {"Authorization: Bearer s3cret-key", NULL};
    http_req(&r, "POST", "/api/v1/images", "application/json", body, strlen(body), right);
    assert_int_equal(r.status, 202);
    resp_fini(&r);
    http_req(&r, "DELETE", "/api/v1/images/1", NULL, NULL, 0, NULL);
    assert_int_equal(r.status, 401);
    resp_fini(&r);
    http_req(&r, "DELETE", "/api/v1/images/1", NULL, NULL, 0, right);
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    /* reads need no key */
    get(&r, "/api/v1/search?q=secret-query-text");
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    stop();
    server_options_fini(&o);
    fclose(log);
    /* the access log: one JSON line per request, no key, no query string */
    assert_null(strstr(log_text, "s3cret"));
    assert_null(strstr(log_text, "secret-query-text"));
    int lines = 0;
    for (char *line = strtok(log_text, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "client")), "127.0.0.1");
        assert_true(json_is_integer(json_object_get(j, "status")));
        assert_true(json_is_number(json_object_get(j, "duration_ms")));
        assert_true(json_is_integer(json_object_get(j, "bytes")));
        assert_non_null(json_string_value(json_object_get(j, "time")));
        assert_non_null(json_string_value(json_object_get(j, "method")));
        json_decref(j);
        lines++;
    }
    assert_int_equal(lines, 7);
    free(log_text);

    /* key from the environment; empty file is an error */
    setenv("IMGSEARCH_API_KEY", "env-key", 1);
    server_options_init(&o);
    assert_int_equal(server_options_load_api_key(&o, NULL, &err), IMS_OK);
    assert_string_equal(o.api_key, "env-key");
    server_options_fini(&o);
    unsetenv("IMGSEARCH_API_KEY");
    assert_int_equal(server_options_load_api_key(&o, NULL, &err), IMS_OK);
    assert_null(o.api_key);
    assert_int_equal(server_options_load_api_key(&o, "/nonexistent/ims/key", &err), IMS_ERR_NOT_FOUND);
}

static void test_rate_limit(void **state)
{
    struct server_options o;
    server_options_init(&o);
    o.rate_per_s = 0.001; /* no refill within the test */
    o.rate_burst = 3;
    start_with(&o);
    struct resp r;
    char h[64];
    for (int i = 0; i < 3; i++) {
        get(&r, "/api/v1/stats");
        assert_int_equal(r.status, 200);
        resp_fini(&r);
    }
    get(&r, "/api/v1/stats");
    assert_error(&r, 429, "rate_limited", "rate limit");
    int retry = atoi(header(&r, "Retry-After", h, sizeof(h)));
    assert_true(retry >= 1);
    resp_fini(&r);
    /* health checks are never rate limited */
    get(&r, "/healthz");
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    stop();
}

/* ---- capacity, shutdown ---------------------------------------------------------------------- */

struct bg {
    pthread_t t;
    const char *path;
    struct resp r;
};

static void *bg_run(void *arg)
{
    struct bg *b = arg;
    get(&b->r, b->path);
    return NULL;
}

static void wait_entered(int n)
{
    pthread_mutex_lock(&fk.mu);
    while (fk.entered < n)
        pthread_cond_wait(&fk.cv, &fk.mu);
    pthread_mutex_unlock(&fk.mu);
}

static void release_backend(void)
{
    pthread_mutex_lock(&fk.mu);
    fk.release = true;
    pthread_cond_broadcast(&fk.cv);
    pthread_mutex_unlock(&fk.mu);
}

/* Polls /metrics until `needle` shows up (bounded number of tries). */
static void wait_metric(const char *needle)
{
    for (int i = 0; i < 2000; i++) {
        struct resp r;
        get(&r, "/metrics");
        bool found = r.body.data && strstr(r.body.data, needle);
        resp_fini(&r);
        if (found)
            return;
        usleep(5000);
    }
    fail_msg("metrics never showed %s", needle);
}

static int raw_connect(const char *src);
static void raw_send(int fd, const char *s);

static void test_capacity_503(void **state)
{
    struct server_options o;
    server_options_init(&o);
    o.n_threads = 4;
    o.max_inflight = 1;
    o.max_queued = 1;
    o.queue_wait_ms = 60000;
    start_with(&o);
    fk.block = true;
    struct bg a = {.path = "/api/v1/search?q=a"}, b = {.path = "/api/v1/search?q=b"};
    assert_int_equal(pthread_create(&a.t, NULL, bg_run, &a), 0);
    wait_entered(1);
    assert_int_equal(pthread_create(&b.t, NULL, bg_run, &b), 0);
    wait_metric("imgsearch_http_queue_waiting 1\n");
    /* one running, one queued: the next is refused at once */
    struct resp r;
    char h[32];
    get(&r, "/api/v1/search?q=c");
    assert_error(&r, 503, "busy", "capacity");
    assert_string_equal(header(&r, "Retry-After", h, sizeof(h)), "1");
    resp_fini(&r);
    /* cheap endpoints bypass the gate */
    get(&r, "/healthz");
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    /* a multipart body is refused from its head, before it is sent */
    int fd = raw_connect("127.0.0.1");
    raw_send(fd, "POST /api/v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Type: multipart/form-data; boundary=X\r\n"
                 "Content-Length: 1000000\r\n\r\n");
    char head[64] = "";
    assert_true(recv(fd, head, sizeof(head) - 1, 0) > 12);
    assert_memory_equal(head, "HTTP/1.1 503", 12);
    close(fd);
    release_backend();
    pthread_join(a.t, NULL);
    pthread_join(b.t, NULL);
    assert_int_equal(a.r.status, 200);
    assert_int_equal(b.r.status, 200); /* the queued one got its turn */
    resp_fini(&a.r);
    resp_fini(&b.r);
    /* a request is counted when the daemon completes it, which for the raw
     * multipart refusal can follow the moment its 503 head reaches us */
    wait_metric("imgsearch_http_request_duration_seconds_count{route=\"/api/v1/search\"} 4\n");
    get(&r, "/metrics");
    assert_non_null(
        strstr(r.body.data, "imgsearch_http_requests_total{route=\"/api/v1/search\",status=\"503\"} 2\n"));
    assert_non_null(
        strstr(r.body.data, "imgsearch_http_requests_total{route=\"/api/v1/search\",status=\"200\"} 2\n"));
    assert_non_null(strstr(r.body.data,
                           "imgsearch_http_request_duration_seconds_count{route=\"/api/v1/search\"} 4\n"));
    assert_non_null(strstr(r.body.data, "fake_backend_rows 5\n"));
    char h2[64];
    assert_string_equal(header(&r, "Content-Type", h2, sizeof(h2)), "text/plain; version=0.0.4");
    resp_fini(&r);
    stop();
}

struct stopper {
    pthread_t t;
};

static void *stop_run(void *arg)
{
    server_stop(srv);
    return NULL;
}

static void test_shutdown_while_running(void **state)
{
    start_default();
    fk.block = true;
    struct bg a = {.path = "/api/v1/search?q=slow"};
    assert_int_equal(pthread_create(&a.t, NULL, bg_run, &a), 0);
    wait_entered(1);
    struct stopper s;
    assert_int_equal(pthread_create(&s.t, NULL, stop_run, NULL), 0);
    /* new connections are refused once the server stops accepting */
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)server_port(srv))};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    bool refused = false;
    for (int i = 0; i < 2000 && !refused; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        refused = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0;
        close(fd);
        if (!refused)
            usleep(5000);
    }
    assert_true(refused);
    /* the running request still completes */
    release_backend();
    pthread_join(a.t, NULL);
    assert_int_equal(a.r.status, 200);
    assert_int_equal(json_array_size(json_object_get(a.r.json, "results")), 5);
    resp_fini(&a.r);
    pthread_join(s.t, NULL);
    stop();
}

/* ---- OpenAPI: documented == served ---------------------------------------------------------- */

static void openapi_path_of(const char *pattern, char *out, size_t cap)
{
    /* patterns and OpenAPI paths use the same {name} syntax */
    snprintf(out, cap, "%s", pattern);
}

static void test_openapi_routes(void **state)
{
    start_default();
    struct resp r;
    get(&r, "/api/v1/openapi.json");
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    assert_true(!strncmp(json_string_value(json_object_get(r.json, "openapi")), "3.", 2));
    json_t *paths = json_object_get(r.json, "paths");
    assert_true(json_is_object(paths));
    /* every served route and method is documented */
    static const char *const mnames[SM_COUNT] = {"get", "post", "delete"};
    for (size_t i = 0; i < server__n_routes; i++) {
        char p[128];
        openapi_path_of(server__routes[i].pattern, p, sizeof(p));
        json_t *item = json_object_get(paths, p);
        if (!item)
            fail_msg("route %s is not in openapi.json", p);
        for (int m = 0; m < SM_COUNT; m++) {
            bool served = server__routes[i].methods[m] != NULL;
            bool documented = json_object_get(item, mnames[m]) != NULL;
            if (served != documented)
                fail_msg("%s %s: served=%d documented=%d", mnames[m], p, served, documented);
        }
    }
    /* every documented operation is served (neither 404 nor 405) */
    const char *path;
    json_t *item;
    json_object_foreach(paths, path, item)
    {
        const char *method;
        json_t *op;
        json_object_foreach(item, method, op)
        {
            if (strcmp(method, "get") && strcmp(method, "post") && strcmp(method, "delete"))
                continue;
            char url[256], *q = url;
            for (const char *s = path; *s && q < url + sizeof(url) - 8; s++) {
                if (*s == '{') {
                    q += sprintf(q, "%s", strstr(path, "jobs") ? "job-1-1" : "1");
                    s = strchr(s, '}');
                } else {
                    *q++ = *s;
                }
            }
            *q = '\0';
            char up[16];
            snprintf(up, sizeof(up), "%s", method);
            for (char *c = up; *c; c++)
                *c = (char)toupper((unsigned char)*c);
            struct resp x;
            if (!strcmp(method, "post"))
                http_req(&x, up, url, "application/json", "{}", 2, NULL);
            else
                http_req(&x, up, url, NULL, NULL, 0, NULL);
            /* a 404 from the backend (row 1 deleted by an earlier probe) is
             * fine; a 404 from the router is not */
            bool unrouted = x.status == 405 ||
                            (x.status == 404 && x.body.data && strstr(x.body.data, "no such route"));
            if (unrouted)
                fail_msg("%s %s documented but answered %ld", up, url, x.status);
            resp_fini(&x);
        }
    }
    resp_fini(&r);
    stop();
}

static void test_ipv6(void **state)
{
    struct server_options o;
    server_options_init(&o);
    o.host = "::1";
    struct ims_error err = {{0}};
    fake_reset();
    o.port = 0;
    enum ims_status st = server_start(&o, &fake_backend, &srv, &err);
    if (st != IMS_OK) {
        /* a machine without IPv6 loopback: the error must say so precisely */
        assert_int_equal(st, IMS_ERR_IO);
        assert_non_null(strstr(err.message, "::1"));
        return;
    }
    snprintf(base_url, sizeof(base_url), "http://[::1]:%u", server_port(srv));
    struct resp r;
    get(&r, "/healthz");
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    stop();

    o.host = "localhost-not-an-ip";
    assert_int_equal(server_start(&o, &fake_backend, &srv, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "not an IPv4 or IPv6"));
}

static void test_epoll_pool_mode(void **state)
{
    struct server_options o;
    server_options_init(&o);
    o.use_pool = true;
    o.n_threads = 2;
    start_with(&o);
    struct resp r;
    get(&r, "/api/v1/search?q=pool&k=2");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "results")), 2);
    resp_fini(&r);
    stop();
}

/* ---- hardening (issue 8) ------------------------------------------------------------------ */

/* A metric's value ("name value\n" or "name{labels} value\n"); -1 if absent. */
static long metric_value(const char *series)
{
    struct resp r;
    get(&r, "/metrics");
    long v = -1;
    char needle[256];
    snprintf(needle, sizeof(needle), "\n%s ", series); /* a sample line, not # HELP */
    const char *p = r.body.data ? strstr(r.body.data, needle) : NULL;
    if (p)
        v = strtol(p + strlen(needle), NULL, 10);
    resp_fini(&r);
    return v;
}

struct bg_post {
    pthread_t t;
    const char *path, *body;
    long timeout_ms;
    long status;
};

static void *bg_post_run(void *arg)
{
    struct bg_post *b = arg;
    CURL *c = curl_easy_init();
    char url[256];
    snprintf(url, sizeof(url), "%s%s", base_url, b->path);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    struct ims_buf sink;
    ims_buf_init(&sink, 1u << 20);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, b->body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ts_write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, b->timeout_ms ? b->timeout_ms : 60000L);
    b->status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &b->status);
    ims_buf_fini(&sink);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

/* Item 1: ?wait=1 waits outside the admission gate; waiters are capped on
 * their own; searches, stats and job reads answer meanwhile. */
static void test_wait_outside_gate(void **state)
{
    enum { N = 100 };
    struct server_options o;
    server_options_init(&o);
    o.max_waiters = N;
    o.max_conns_per_client = 0;
    o.rate_per_s = 0;
    o.queue_wait_ms = 200;
    start_with(&o);
    fk.wait_block = true;
    static struct bg_post w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct bg_post){.path = "/api/v1/images?wait=1",
                                .body = "{\"urls\": [\"http://example.com/a.jpg\"]}"};
        assert_int_equal(pthread_create(&w[i].t, NULL, bg_post_run, &w[i]), 0);
    }
    wait_metric("imgsearch_http_job_waiters 100\n");
    /* no slot held (a waiter is counted from just before its job is queued,
     * so the last ones may still be leaving the gate) */
    wait_metric("\nimgsearch_http_inflight 0\n");
    struct resp r;
    for (int i = 0; i < 40; i++) { /* more than the 32 slots */
        get(&r, "/api/v1/search?q=beach");
        assert_int_equal(r.status, 200);
        resp_fini(&r);
    }
    get(&r, "/api/v1/stats");
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    get(&r, "/api/v1/jobs/job-1-1");
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    /* the 101st waiter is refused before a job is queued */
    post_json(&r, "/api/v1/images?wait=1", "{\"urls\": [\"http://example.com/b.jpg\"]}");
    assert_error(&r, 503, "busy", "?wait=1");
    resp_fini(&r);
    assert_int_equal(metric_value("imgsearch_http_refused_total{reason=\"waiters\"}"), 1);
    release_backend();
    for (int i = 0; i < N; i++) {
        pthread_join(w[i].t, NULL);
        assert_int_equal(w[i].status, 200);
    }
    assert_int_equal(metric_value("imgsearch_http_job_waiters"), 0);
    stop();
}

/* Item 1 with item 4: waiting connections are capped by max_waiters, not by
 * the per-client connection cap, so a client waiting for its jobs can still
 * search. */
static void test_wait_not_per_client(void **state)
{
    enum { N = 6 };
    struct server_options o;
    server_options_init(&o);
    o.max_conns_per_client = 4;
    start_with(&o);
    fk.wait_block = true;
    static struct bg_post w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct bg_post){.path = "/api/v1/images?wait=1",
                                .body = "{\"urls\": [\"http://example.com/a.jpg\"]}"};
        assert_int_equal(pthread_create(&w[i].t, NULL, bg_post_run, &w[i]), 0);
        char needle[64];
        snprintf(needle, sizeof(needle), "\nimgsearch_http_job_waiters %d\n", i + 1);
        wait_metric(needle);
    }
    struct resp r;
    get(&r, "/api/v1/search?q=beach");
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    release_backend();
    for (int i = 0; i < N; i++) {
        pthread_join(w[i].t, NULL);
        assert_int_equal(w[i].status, 200);
    }
    stop();
}

/* Item 1: a waiter whose client hangs up stops waiting at once. */
static void test_wait_client_gone(void **state)
{
    struct server_options o;
    server_options_init(&o);
    o.wait_max_ms = 600000;
    start_with(&o);
    fk.wait_block = true;
    struct bg_post w = {.path = "/api/v1/images?wait=1",
                        .body = "{\"urls\": [\"http://example.com/a.jpg\"]}",
                        .timeout_ms = 300};
    assert_int_equal(pthread_create(&w.t, NULL, bg_post_run, &w), 0);
    pthread_join(w.t, NULL);
    assert_int_equal(w.status, 0); /* the client gave up */
    wait_metric("imgsearch_http_wait_abandoned_total 1\n");
    assert_int_equal(metric_value("imgsearch_http_job_waiters"), 0);
    release_backend();
    stop();
}

/* Item 2: Host and Origin. */
static void test_host_origin_cors(void **state)
{
    struct server_options o;
    server_options_init(&o);
    static const char *const hosts[] = {"photos.example.org"};
    static const char *const origins[] = {"https://app.example.net"};
    o.public_hosts = hosts;
    o.n_public_hosts = 1;
    o.cors_origins = origins;
    o.n_cors_origins = 1;
    start_with(&o);
    struct resp r;
    char h[128];
    static const char *const good_hosts[] = {"localhost", "LOCALHOST:8080", "127.0.0.1",
                                             "127.0.0.1:1", "[::1]", "[::1]:8080",
                                             "photos.example.org", "Photos.Example.Org:443"};
    for (size_t i = 0; i < IMS_ARRAY_LEN(good_hosts); i++) {
        char hh[128];
        snprintf(hh, sizeof(hh), "Host: %s", good_hosts[i]);
        const char *hdrs[] = {hh, NULL};
        http_req(&r, "GET", "/api/v1/stats", NULL, NULL, 0, hdrs);
        if (r.status != 200)
            fprintf(stderr, "Host %s: %ld\n", good_hosts[i], r.status);
        assert_int_equal(r.status, 200);
        resp_fini(&r);
    }
    static const char *const bad_hosts[] = {"evil.example", "evil.example:8080",
                                            "localhost.evil.example", "10.1.2.3", "[::2]",
                                            "127.0.0.1:x", "photos.example.org.evil"};
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad_hosts); i++) {
        char hh[128];
        snprintf(hh, sizeof(hh), "Host: %s", bad_hosts[i]);
        const char *hdrs[] = {hh, NULL};
        http_req(&r, "GET", "/", NULL, NULL, 0, hdrs);
        assert_error(&r, 421, "refused", "--public-host");
        resp_fini(&r);
    }
    assert_int_equal(metric_value("imgsearch_http_refused_total{reason=\"host\"}"),
                     (long)IMS_ARRAY_LEN(bad_hosts));
    /* cross-site writes are refused, before anything runs */
    const char *evil[] = {"Origin: http://evil.example", NULL};
    http_req(&r, "DELETE", "/api/v1/images/1", NULL, NULL, 0, evil);
    assert_error(&r, 403, "refused", "cross-site");
    resp_fini(&r);
    const char *null_origin[] = {"Origin: null", NULL};
    http_req(&r, "POST", "/api/v1/images", "application/json", "{\"urls\":[\"http://a.b/c\"]}",
             23, null_origin);
    assert_error(&r, 403, "refused", "cross-site");
    resp_fini(&r);
    const char *sfs[] = {"Sec-Fetch-Site: cross-site", NULL};
    http_req(&r, "POST", "/api/v1/search", "application/json", "{\"text\":\"a\"}", 12, sfs);
    assert_error(&r, 403, "refused", "cross-site");
    resp_fini(&r);
    get(&r, "/api/v1/images/1");
    assert_int_equal(r.status, 200); /* not deleted */
    resp_fini(&r);
    /* the page's own origin, and a same-origin fetch, pass */
    char own[128];
    snprintf(own, sizeof(own), "Origin: %s", base_url);
    const char *same[] = {own, "Sec-Fetch-Site: same-origin", NULL};
    http_req(&r, "DELETE", "/api/v1/images/1", NULL, NULL, 0, same);
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    /* an allowed CORS origin: preflight and the write, with CORS headers */
    const char *pre[] = {"Origin: https://app.example.net", "Access-Control-Request-Method: DELETE",
                         NULL};
    http_req(&r, "OPTIONS", "/api/v1/images/2", NULL, NULL, 0, pre);
    assert_int_equal(r.status, 204);
    assert_string_equal(header(&r, "Access-Control-Allow-Origin", h, sizeof(h)),
                        "https://app.example.net");
    assert_non_null(strstr(header(&r, "Access-Control-Allow-Methods", h, sizeof(h)), "DELETE"));
    resp_fini(&r);
    const char *cors[] = {"Origin: https://app.example.net", NULL};
    http_req(&r, "DELETE", "/api/v1/images/2", NULL, NULL, 0, cors);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Access-Control-Allow-Origin", h, sizeof(h)),
                        "https://app.example.net");
    resp_fini(&r);
    const char *pre_evil[] = {"Origin: http://evil.example", "Access-Control-Request-Method: POST",
                              NULL};
    http_req(&r, "OPTIONS", "/api/v1/images", NULL, NULL, 0, pre_evil);
    assert_error(&r, 403, "refused", "not allowed");
    assert_string_equal(header(&r, "Access-Control-Allow-Origin", h, sizeof(h)), "");
    resp_fini(&r);
    assert_int_equal(metric_value("imgsearch_http_refused_total{reason=\"origin\"}"), 4);
    stop();
    /* clip-back's routes: only the --cors-origin origin (clip-front's) */
    server_options_init(&o);
    o.compat = SERVER_COMPAT_CLIP_BACK;
    o.cors_origins = origins;
    o.n_cors_origins = 1;
    start_with(&o);
    http_req(&r, "POST", "/knn-service", "text/plain", "{\"text\": \"a\"}", 13, evil);
    assert_error(&r, 403, "refused", "cross-site");
    resp_fini(&r);
    http_req(&r, "POST", "/knn-service", "text/plain", "{\"text\": \"a\"}", 13, cors);
    assert_true(r.status != 403 && r.status != 421); /* (this fake cannot embed: 500) */
    assert_string_equal(header(&r, "Access-Control-Allow-Origin", h, sizeof(h)),
                        "https://app.example.net");
    resp_fini(&r);
    stop();
    /* malformed option values are refused at start */
    struct ims_error err = {{0}};
    static const char *const bad_origin[] = {"app.example.net"};
    server_options_init(&o);
    o.port = 0;
    o.cors_origins = bad_origin;
    o.n_cors_origins = 1;
    assert_int_equal(server_start(&o, &fake_backend, &srv, &err), IMS_ERR_INVALID);
    static const char *const bad_proxy[] = {"10.0.0.0/33"};
    server_options_init(&o);
    o.port = 0;
    o.trusted_proxies = bad_proxy;
    o.n_trusted_proxies = 1;
    assert_int_equal(server_start(&o, &fake_backend, &srv, &err), IMS_ERR_INVALID);
}

/* A raw TCP connection from `src` (a loopback address) to the server. */
static int raw_connect(const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, src, &a.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    a.sin_port = htons((uint16_t)server_port(srv));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct timeval tv = {20, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void raw_send(int fd, const char *s)
{
    assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* true when the server closed the connection (EOF or reset) without answering */
static bool raw_closed(int fd)
{
    char b[256];
    ssize_t n = recv(fd, b, sizeof(b), 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static bool raw_answers_200(int fd)
{
    raw_send(fd, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    char b[64] = "";
    ssize_t n = recv(fd, b, sizeof(b) - 1, 0);
    return n > 12 && strncmp(b, "HTTP/1.1 200", 12) == 0;
}

/* Item 4: header deadline, minimum body rate, connections per client. */
static void test_slowloris(void **state)
{
    struct server_options o;
    server_options_init(&o);
    o.header_timeout_ms = 1000;
    o.body_min_rate = 1000;
    o.max_conns_per_client = 4;
    start_with(&o);
    int held[4];
    for (int i = 0; i < 4; i++) {
        held[i] = raw_connect("127.0.0.3"); /* (the test's own requests come from .1) */
        raw_send(held[i], "GET / HTTP/1.1\r\nHo"); /* never finishes its head */
    }
    wait_metric("imgsearch_http_connections 5\n"); /* + the one asking */
    int fifth = raw_connect("127.0.0.3"); /* the kernel accepts; the server closes */
    assert_true(raw_closed(fifth));
    close(fifth);
    assert_int_equal(metric_value("imgsearch_http_refused_total{reason=\"client_connections\"}"),
                     1);
    /* another client address is served meanwhile */
    int other = raw_connect("127.0.0.2");
    assert_true(raw_answers_200(other));
    close(other);
    /* the heads never completed: closed at the deadline */
    for (int i = 0; i < 4; i++) {
        assert_true(raw_closed(held[i]));
        close(held[i]);
    }
    assert_int_equal(metric_value("imgsearch_http_refused_total{reason=\"header_timeout\"}"), 4);
    /* a body trickling below the minimum rate is cut */
    int slow = raw_connect("127.0.0.1");
    raw_send(slow, "POST /api/v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{");
    bool closed = false;
    for (int i = 0; i < 400 && !closed; i++) {
        closed = send(slow, " ", 1, MSG_NOSIGNAL) != 1;
        usleep(25000);
    }
    assert_true(closed || raw_closed(slow));
    close(slow);
    assert_int_equal(metric_value("imgsearch_http_refused_total{reason=\"body_rate\"}"), 1);
    /* an ordinary client is untouched */
    struct resp r;
    get(&r, "/api/v1/stats");
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    stop();
}

/* Item 3: the memory of request bodies in flight is bounded as a whole. */
static void test_body_budget(void **state)
{
    struct server_options o;
    server_options_init(&o);
    o.body_budget_bytes = 150000;
    start_with(&o);
    /* one client holds 90000 bytes of a 100000-byte body it does not finish */
    int holder = raw_connect("127.0.0.1");
    raw_send(holder, "POST /api/v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n");
    char *part = malloc(90001);
    memset(part, ' ', 90000);
    part[90000] = '\0';
    raw_send(holder, part);
    free(part);
    wait_metric("imgsearch_http_body_bytes 90000\n");
    /* a body announced too large for what is left: refused before it is read */
    size_t n = 70000;
    char *big = malloc(n + 1);
    memset(big, ' ', n);
    memcpy(big, "{\"text\":\"a\"}", 12);
    big[n] = '\0';
    struct resp r;
    char h[32];
    http_req(&r, "POST", "/api/v1/search", "application/json", big, n, NULL);
    assert_error(&r, 503, "busy", "bodies in memory");
    assert_string_equal(header(&r, "Retry-After", h, sizeof(h)), "1");
    resp_fini(&r);
    /* the same without Content-Length (chunked): refused as it grows */
    const char *chunked[] = {"Transfer-Encoding: chunked", NULL};
    http_req(&r, "POST", "/api/v1/search", "application/json", big, n, chunked);
    assert_error(&r, 503, "busy", "bodies in memory");
    resp_fini(&r);
    /* small bodies still fit */
    post_json(&r, "/api/v1/search", "{\"text\":\"a\"}");
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    assert_int_equal(metric_value("imgsearch_http_refused_total{reason=\"body_memory\"}"), 2);
    /* what was refused or answered holds nothing */
    assert_int_equal(metric_value("imgsearch_http_body_bytes"), 90000);
    close(holder);
    wait_metric("imgsearch_http_body_bytes 0\n");
    http_req(&r, "POST", "/api/v1/search", "application/json", big, n, NULL);
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    http_req(&r, "POST", "/api/v1/search", "application/json", big, n, chunked);
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    free(big);
    stop();
}

/* Item 8: the documented limits are the limits. */
static void test_strict_limits(void **state)
{
    start_default();
    struct resp r;
    static const char *const bad_ids[] = {"+1", "01", "%201", "1%20", "-1", "0x1", "1e0"};
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad_ids); i++) {
        char path[64];
        snprintf(path, sizeof(path), "/api/v1/images/%s", bad_ids[i]);
        get(&r, path);
        assert_error(&r, 400, "invalid_argument", "image id");
        resp_fini(&r);
    }
    get(&r, "/api/v1/search?q=a&k=01");
    assert_error(&r, 400, "invalid_argument", "k:");
    resp_fini(&r);
    get(&r, "/api/v1/search?q=a&k=2&k=3");
    assert_error(&r, 400, "invalid_argument", "'k' given more than once");
    resp_fini(&r);
    get(&r, "/api/v1/search?q=a&q=b");
    assert_error(&r, 400, "invalid_argument", "'q'");
    resp_fini(&r);
    /* form values: NUL, repeats */
    struct ims_buf b;
    ims_buf_init(&b, 1u << 20);
    mp_part(&b, "text", NULL, "cat", 3);
    mp_part(&b, "k", NULL, "5\0junk", 6);
    ims_buf_printf(&b, "--BoUnDaRy--\r\n");
    http_req(&r, "POST", "/api/v1/search", MP_CT, b.data, b.len, NULL);
    assert_error(&r, 400, "invalid_argument", "\"k\": contains a NUL byte");
    resp_fini(&r);
    ims_buf_reset(&b);
    mp_part(&b, "text", NULL, "cat", 3);
    mp_part(&b, "k", NULL, "5", 1);
    mp_part(&b, "k", NULL, "6", 1);
    ims_buf_printf(&b, "--BoUnDaRy--\r\n");
    http_req(&r, "POST", "/api/v1/search", MP_CT, b.data, b.len, NULL);
    assert_error(&r, 400, "invalid_argument", "\"k\" given more than once");
    resp_fini(&r);
    /* uploads: 64 files pass, 65 do not */
    for (int n = 64; n <= 65; n++) {
        ims_buf_reset(&b);
        for (int i = 0; i < n; i++)
            mp_part(&b, "file", "a.jpg", "IMGx", 4);
        ims_buf_printf(&b, "--BoUnDaRy--\r\n");
        http_req(&r, "POST", "/api/v1/images", MP_CT, b.data, b.len, NULL);
        if (n == 64)
            assert_int_equal(r.status, 200);
        else
            assert_error(&r, 413, "too_large", "the limit is 64");
        resp_fini(&r);
    }
    ims_buf_fini(&b);
    stop();
}

/* Item 11: clients behind trusted proxies get their own buckets. */
static void test_trusted_proxy(void **state)
{
    struct server_options o;
    server_options_init(&o);
    o.rate_per_s = 0.001;
    o.rate_burst = 2;
    static const char *const proxies[] = {"127.0.0.0/8"};
    o.trusted_proxies = proxies;
    o.n_trusted_proxies = 1;
    start_with(&o);
    struct resp r;
    const char *a[] = {"X-Forwarded-For: 203.0.113.5", NULL};
    for (int i = 0; i < 2; i++) {
        http_req(&r, "GET", "/api/v1/stats", NULL, NULL, 0, a);
        assert_int_equal(r.status, 200);
        resp_fini(&r);
    }
    http_req(&r, "GET", "/api/v1/stats", NULL, NULL, 0, a);
    assert_int_equal(r.status, 429);
    resp_fini(&r);
    /* a hop written by the client (left of the proxy's) changes nothing */
    const char *spoof[] = {"X-Forwarded-For: 198.51.100.1, 203.0.113.5", NULL};
    http_req(&r, "GET", "/api/v1/stats", NULL, NULL, 0, spoof);
    assert_int_equal(r.status, 429);
    resp_fini(&r);
    /* nor does a chain through trusted proxies */
    const char *chain[] = {"Forwarded: for=203.0.113.5;proto=https, for=127.0.0.9", NULL};
    http_req(&r, "GET", "/api/v1/stats", NULL, NULL, 0, chain);
    assert_int_equal(r.status, 429);
    resp_fini(&r);
    /* another client behind the same proxy has its own bucket */
    const char *b[] = {"X-Forwarded-For: 203.0.113.6", NULL};
    http_req(&r, "GET", "/api/v1/stats", NULL, NULL, 0, b);
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    /* IPv6 clients are one bucket per /64 */
    const char *v6a[] = {"Forwarded: for=\"[2001:db8:1:2::1]:4711\"", NULL};
    const char *v6b[] = {"X-Forwarded-For: 2001:db8:1:2:ffff::9", NULL};
    http_req(&r, "GET", "/api/v1/stats", NULL, NULL, 0, v6a);
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    http_req(&r, "GET", "/api/v1/stats", NULL, NULL, 0, v6b);
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    http_req(&r, "GET", "/api/v1/stats", NULL, NULL, 0, v6a);
    assert_int_equal(r.status, 429);
    resp_fini(&r);
    stop();
    /* without --trusted-proxy the headers are ignored: one bucket */
    server_options_init(&o);
    o.rate_per_s = 0.001;
    o.rate_burst = 2;
    start_with(&o);
    http_req(&r, "GET", "/api/v1/stats", NULL, NULL, 0, a);
    resp_fini(&r);
    http_req(&r, "GET", "/api/v1/stats", NULL, NULL, 0, b);
    resp_fini(&r);
    const char *c[] = {"X-Forwarded-For: 203.0.113.7", NULL};
    http_req(&r, "GET", "/api/v1/stats", NULL, NULL, 0, c);
    assert_int_equal(r.status, 429);
    resp_fini(&r);
    stop();
}

/* ---- main ------------------------------------------------------------------------------------- */

extern const struct CMUnitTest server_parser_tests[];
extern const size_t server_n_parser_tests;
extern const struct CMUnitTest server_guard_tests[];
extern const size_t server_n_guard_tests;

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz_stats),
        cmocka_unit_test(test_web_assets),
        cmocka_unit_test(test_not_found_and_method),
        cmocka_unit_test(test_search_get),
        cmocka_unit_test(test_search_post_json),
        cmocka_unit_test(test_search_post_json_errors),
        cmocka_unit_test(test_body_limits),
        cmocka_unit_test(test_images_urls_and_jobs),
        cmocka_unit_test(test_image_row_thumb_delete),
        cmocka_unit_test(test_upload_multipart),
        cmocka_unit_test(test_search_multipart),
        cmocka_unit_test(test_api_key),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_capacity_503),
        cmocka_unit_test(test_shutdown_while_running),
        cmocka_unit_test(test_openapi_routes),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_epoll_pool_mode),
        cmocka_unit_test(test_wait_outside_gate),
        cmocka_unit_test(test_wait_client_gone),
        cmocka_unit_test(test_wait_not_per_client),
        cmocka_unit_test(test_host_origin_cors),
        cmocka_unit_test(test_slowloris),
        cmocka_unit_test(test_body_budget),
        cmocka_unit_test(test_strict_limits),
        cmocka_unit_test(test_trusted_proxy),
    };
    int failed = cmocka_run_group_tests_name("server_http", tests, NULL, NULL);
    failed += _cmocka_run_group_tests("server_parsers", server_parser_tests,
                                      server_n_parser_tests, NULL, NULL);
    failed += _cmocka_run_group_tests("server_guard", server_guard_tests, server_n_guard_tests,
                                      NULL, NULL);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
