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

#include <ctype.h>
#include <curl/curl.h>
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
    return IMS_OK;
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
    NULL,      f_stats,     f_search,      f_add_urls,     f_job_get, f_job_wait,
    f_upload,  f_image_get, f_image_thumb, f_image_delete, f_metrics,
    NULL, /* ready: always */
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

struct resp {
    long status;
    struct ims_buf body;
    struct ims_buf headers;
    json_t *json;
};

static size_t write_cb(char *p, size_t sz, size_t n, void *ud)
{
    return ims_buf_append(ud, p, sz * n) == IMS_OK ? sz * n : 0;
}

static void resp_fini(struct resp *r)
{
    ims_buf_fini(&r->body);
    ims_buf_fini(&r->headers);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

/* One request. `hdrs` is a NULL-terminated list of extra header lines. */
static void http_req(struct resp *out, const char *method, const char *path, const char *ctype,
                     const void *body, size_t len, const char *const *hdrs)
{
    memset(out, 0, sizeof(*out));
    ims_buf_init(&out->body, 128u << 20);
    ims_buf_init(&out->headers, 1u << 20);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    char url[4096];
    snprintf(url, sizeof(url), "%s%s", base_url, path);
    struct curl_slist *list = NULL;
    if (ctype) {
        char h[256];
        snprintf(h, sizeof(h), "Content-Type: %s", ctype);
        list = curl_slist_append(list, h);
    }
    for (size_t i = 0; hdrs && hdrs[i]; i++)
        list = curl_slist_append(list, hdrs[i]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &out->headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        fprintf(stderr, "curl: %s %s: %s\n", method, path, curl_easy_strerror(rc));
    assert_int_equal(rc, CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(list);
    curl_easy_cleanup(c);
    if (out->body.len) {
        json_error_t jerr;
        out->json = json_loadb(out->body.data, out->body.len, 0, &jerr);
    }
}

static void get(struct resp *r, const char *path) { http_req(r, "GET", path, NULL, NULL, 0, NULL); }

static void post_json(struct resp *r, const char *path, const char *json)
{
    http_req(r, "POST", path, "application/json", json, strlen(json), NULL);
}

/* The value of response header `name` (case-insensitive), or "" . */
static const char *header(const struct resp *r, const char *name, char *out, size_t cap)
{
    out[0] = '\0';
    const char *p = r->headers.data;
    size_t n = strlen(name);
    while (p && *p) {
        const char *eol = strstr(p, "\r\n");
        if (!eol)
            break;
        if ((size_t)(eol - p) > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(eol - v), v);
        }
        p = eol + 2;
    }
    return out;
}

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
    release_backend();
    pthread_join(a.t, NULL);
    pthread_join(b.t, NULL);
    assert_int_equal(a.r.status, 200);
    assert_int_equal(b.r.status, 200); /* the queued one got its turn */
    resp_fini(&a.r);
    resp_fini(&b.r);
    get(&r, "/metrics");
    assert_non_null(
        strstr(r.body.data, "imgsearch_http_requests_total{route=\"/api/v1/search\",status=\"503\"} 1\n"));
    assert_non_null(
        strstr(r.body.data, "imgsearch_http_requests_total{route=\"/api/v1/search\",status=\"200\"} 2\n"));
    assert_non_null(strstr(r.body.data,
                           "imgsearch_http_request_duration_seconds_count{route=\"/api/v1/search\"} 3\n"));
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

/* ---- main ------------------------------------------------------------------------------------- */

extern const struct CMUnitTest server_parser_tests[];
extern const size_t server_n_parser_tests;

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
    };
    int failed = cmocka_run_group_tests_name("server_http", tests, NULL, NULL);
    failed += _cmocka_run_group_tests("server_parsers", server_parser_tests,
                                      server_n_parser_tests, NULL, NULL);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
