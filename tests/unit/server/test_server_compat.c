/* SPDX-License-Identifier: MIT */
/*
 * test_server_compat.c: the compatibility routes (immich's machine-learning
 * API, clip-retrieval's back end) over loopback with a fake backend, and
 * their pure helpers (float formatting, base64, clip-back's near-duplicate
 * rule).
 *
 * Requests are sent byte for byte as the other tools' clients send them:
 * immich's server posts an undici FormData (boundary "----formdata-undici-0…",
 * the image as a Blob named "blob" of type application/octet-stream), and
 * clip-front posts JSON.stringify(...) bodies with fetch's default
 * text/plain Content-Type. The fake backend returns fixed embeddings and
 * rows, so whole answers are compared exactly, and it records what reached
 * it (model names, query terms, k).
 */
#include "server_int.h"
#include "server_test_http.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

/* ---- fake backend ------------------------------------------------------------------- */

#define FAKE_DIM 4
static const float fake_vec[FAKE_DIM] = {0.5f, 1.0f / 3.0f, -2.5e-05f, 1.0f};

static struct {
    char model[128];
    bool model_null;
    enum server_term_kind kind;
    char text[256];
    size_t n_bytes;
    unsigned char bytes[64];
    size_t n_vector;
    int k;
    int n_searches;
} fk;

static enum ims_status f_embed(const char *model, struct server_arena *a,
                               struct server_embedding *out, struct ims_error *err)
{
    fk.model_null = model == NULL;
    snprintf(fk.model, sizeof(fk.model), "%s", model ? model : "");
    if (model && strcmp(model, "ViT-B-32__openai") != 0)
        return ims_error_set(err, IMS_ERR_NOT_FOUND, "unknown model \"%s\"", model);
    out->v = server_arena_memdup(a, fake_vec, sizeof(fake_vec));
    out->dim = FAKE_DIM;
    return IMS_OK;
}

static enum ims_status f_embed_text(void *self, const char *model, const char *text,
                                    struct server_arena *a, struct server_embedding *out,
                                    struct ims_error *err)
{
    (void)self;
    snprintf(fk.text, sizeof(fk.text), "%s", text);
    return f_embed(model, a, out, err);
}

static enum ims_status f_embed_image(void *self, const char *model, const unsigned char *bytes,
                                     size_t n, struct server_arena *a,
                                     struct server_embedding *out, struct ims_error *err)
{
    (void)self;
    fk.n_bytes = n;
    memcpy(fk.bytes, bytes, n < sizeof(fk.bytes) ? n : sizeof(fk.bytes));
    if (n < 3 || memcmp(bytes, "IMG", 3) != 0)
        return ims_error_set(err, IMS_ERR_UNSUPPORTED, "not a supported image");
    out->width = 640;
    out->height = 480;
    return f_embed(model, a, out, err);
}

#define FAKE_ROWS 5
static const char *const fake_url[FAKE_ROWS + 1] = {
    NULL, "https://example.org/a/cat.jpg?size=large", "/photos/2020/beach.png",
    "upload:0123456789abcdef/pasted.png", "/photos/dog.jpg", "/photos/tree.webp"};

static void fake_row(int64_t id, struct server_row *row)
{
    memset(row, 0, sizeof(*row));
    row->id = id;
    row->url = fake_url[id];
    row->width = 100;
    row->height = 50;
    row->caption = id == 3 ? "a cat on a mat" : NULL;
}

static enum ims_status f_search(void *self, const struct server_query *q, struct server_arena *a,
                                struct server_results *out, struct ims_error *err)
{
    (void)self;
    (void)err;
    const struct server_term *t = &q->terms[0];
    fk.n_searches++;
    fk.kind = t->kind;
    fk.k = q->k;
    if (t->kind == SERVER_TERM_TEXT)
        snprintf(fk.text, sizeof(fk.text), "%s", t->text);
    if (t->kind == SERVER_TERM_IMAGE_URL)
        snprintf(fk.text, sizeof(fk.text), "%s", t->url);
    if (t->kind == SERVER_TERM_IMAGE) {
        fk.n_bytes = t->n_bytes;
        memcpy(fk.bytes, t->bytes, t->n_bytes < sizeof(fk.bytes) ? t->n_bytes : sizeof(fk.bytes));
    }
    fk.n_vector = t->kind == SERVER_TERM_VECTOR ? t->n_vector : 0;
    out->n = (size_t)(q->k < FAKE_ROWS ? q->k : FAKE_ROWS);
    out->items = server_arena_alloc(a, out->n * sizeof(*out->items));
    for (size_t i = 0; i < out->n; i++) {
        fake_row((int64_t)i + 1, &out->items[i].row);
        out->items[i].score = 0.5f - 0.125f * (float)i;
    }
    return IMS_OK;
}

/* Stored vectors: 2 duplicates 1, 4 duplicates 3. */
static enum ims_status f_embeddings(void *self, const int64_t *ids, size_t n,
                                    struct server_arena *a, float **vectors, size_t *dim,
                                    uint8_t *found, struct ims_error *err)
{
    (void)self;
    (void)err;
    float *v = server_arena_alloc(a, n * 2 * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        int64_t id = ids[i];
        int base = id == 2 ? 1 : id == 4 ? 3 : (int)id;
        v[2 * i] = cosf((float)base);
        v[2 * i + 1] = sinf((float)base);
        found[i] = 1;
    }
    *vectors = v;
    *dim = 2;
    return IMS_OK;
}

static enum ims_status f_image_get(void *self, int64_t id, struct server_arena *a,
                                   struct server_row *out, struct ims_error *err)
{
    (void)self;
    (void)a;
    if (id < 1 || id > FAKE_ROWS)
        return ims_error_set(err, IMS_ERR_NOT_FOUND, "no image with id %lld", (long long)id);
    fake_row(id, out);
    return IMS_OK;
}

static enum ims_status f_image_thumb(void *self, int64_t id, struct server_arena *a,
                                     struct ims_str *jpeg, struct ims_error *err)
{
    (void)self;
    (void)id;
    (void)err;
    jpeg->ptr = server_arena_memdup(a, "\xff\xd8thumb", 7);
    jpeg->len = 7;
    return IMS_OK;
}

static const struct server_backend fake = {
    .search = f_search,
    .image_get = f_image_get,
    .image_thumb = f_image_thumb,
    .embed_text = f_embed_text,
    .embed_image = f_embed_image,
    .embeddings = f_embeddings,
};

/* ---- server and client ---------------------------------------------------------------- */

static struct server *srv;
static char base_url[64];

static void start(unsigned compat, bool only)
{
    struct server_options o;
    server_options_init(&o);
    o.port = 0;
    o.compat = compat;
    o.compat_only = only;
    struct ims_error err = {{0}};
    memset(&fk, 0, sizeof(fk));
    assert_int_equal(server_start(&o, &fake, &srv, &err), IMS_OK);
    snprintf(base_url, sizeof(base_url), "http://127.0.0.1:%u", server_port(srv));
}

static void stop(void)
{
    server_free(srv);
    srv = NULL;
}

/* "Expect:" off: the compat clients send whole bodies at once. */
static void req(struct resp *out, const char *method, const char *path, const char *ctype,
                const void *body, size_t len)
{
    static const char *const no_expect[] = {"Expect:", NULL};
    ts_http(out, base_url, method, path, ctype, body, len, no_expect);
}

/* ---- immich's requests, as its server's undici FormData writes them ------------------------ */

#define UNDICI_BOUNDARY "----formdata-undici-052107913416"
#define UNDICI_CTYPE "multipart/form-data; boundary=" UNDICI_BOUNDARY

/* One form: parts are (name, is_blob, data) triples ending with NULL. */
static size_t undici_form(char *out, size_t cap, ...)
{
    va_list ap;
    va_start(ap, cap);
    size_t n = 0;
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL) {
        int blob = va_arg(ap, int);
        const char *data = va_arg(ap, const char *);
        n += (size_t)snprintf(out + n, cap - n,
                              "--" UNDICI_BOUNDARY "\r\nContent-Disposition: form-data; "
                              "name=\"%s\"%s\r\n%s\r\n%s\r\n",
                              name, blob ? "; filename=\"blob\"" : "",
                              blob ? "Content-Type: application/octet-stream\r\n" : "", data);
    }
    va_end(ap);
    n += (size_t)snprintf(out + n, cap - n, "--" UNDICI_BOUNDARY "--\r\n");
    return n;
}

static void predict(struct resp *r, ...)
{
    char body[8192];
    va_list ap;
    va_start(ap, r);
    size_t n = 0;
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL) {
        int blob = va_arg(ap, int);
        const char *data = va_arg(ap, const char *);
        n += undici_form(body + n, sizeof(body) - n, name, blob, data, NULL) -
             strlen("--" UNDICI_BOUNDARY "--\r\n");
    }
    va_end(ap);
    n += (size_t)snprintf(body + n, sizeof(body) - n, "--" UNDICI_BOUNDARY "--\r\n");
    req(r, "POST", "/predict", UNDICI_CTYPE, body, n);
}

static void assert_detail(const struct resp *r, long status, const char *needle)
{
    if (r->status != status || !r->json)
        fprintf(stderr, "got %ld: %s\n", r->status, r->body.data ? r->body.data : "");
    assert_int_equal(r->status, status);
    const char *d = json_string_value(json_object_get(r->json, "detail"));
    assert_non_null(d);
    if (!strstr(d, needle))
        fail_msg("detail \"%s\" lacks \"%s\"", d, needle);
}

/* ---- pure helpers --------------------------------------------------------------------------- */

static void test_floats_json(void **state)
{
    (void)state;
    struct ims_buf b;
    ims_buf_init(&b, 1u << 20);
    assert_int_equal(server__floats_json(fake_vec, FAKE_DIM, &b), IMS_OK);
    assert_int_equal(ims_buf_append(&b, "", 1), IMS_OK);
    assert_string_equal(b.data, "[0.5,0.333333343,-2.49999994e-05,1]");
    /* the layout of printf's %.9g, trailing zeros trimmed */
    static const struct {
        float f;
        const char *s;
    } layout[] = {{0.0f, "0"}, {-0.0f, "-0"}, {1.0f, "1"}, {-2.0f, "-2"}, {100.0f, "100"},
                  {123456792.0f, "123456792"}, {1e9f, "1e+09"}, {1e-4f, "9.99999975e-05"}, {2.5e-4f, "0.000250000012"},
                  {1.5e-5f, "1.49999996e-05"}, {0.25f, "0.25"}, {3.0e38f, "3.00000001e+38"},
                  {1e-45f, "1.40129846e-45"}, {12.5f, "12.5"}};
    for (size_t i = 0; i < sizeof(layout) / sizeof(layout[0]); i++) {
        ims_buf_reset(&b);
        assert_int_equal(server__floats_json(&layout[i].f, 1, &b), IMS_OK);
        char want[64];
        snprintf(want, sizeof(want), "[%s]", layout[i].s);
        if (b.len != strlen(want) || memcmp(b.data, want, b.len))
            fail_msg("%.9g printed as %.*s, want %s", (double)layout[i].f, (int)b.len, b.data,
                     want);
    }
    /* every float32 reads back exactly, whatever its magnitude */
    ims_buf_reset(&b);
    float v[2000];
    uint32_t x = 12345;
    for (size_t i = 0; i < 2000; i++) {
        x = x * 1664525u + 1013904223u;
        /* every exponent, denormals included */
        uint32_t bits = (x & 0x807fffffu) | (((x >> 8) % 255u) << 23);
        memcpy(&v[i], &bits, 4);
    }
    assert_int_equal(server__floats_json(v, 2000, &b), IMS_OK);
    assert_int_equal(ims_buf_append(&b, "", 1), IMS_OK);
    json_error_t jerr;
    json_t *arr = json_loads(b.data, 0, &jerr);
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), 2000);
    const char *p = b.data + 1;
    for (size_t i = 0; i < 2000; i++) {
        char *end;
        float f = strtof(p, &end);
        if (!(f == v[i]))
            fail_msg("%.9g read back as %.9g", (double)v[i], (double)f);
        p = end + 1;
    }
    json_decref(arr);
    ims_buf_fini(&b);
}

static void test_base64(void **state)
{
    (void)state;
    struct server_arena a;
    server__arena_init(&a, 1u << 20);
    static const struct {
        const char *plain, *b64;
    } cases[] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
                 {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}, {"\xff\xd8\xff", "/9j/"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *enc = server__base64_encode(&a, cases[i].plain, strlen(cases[i].plain));
        assert_string_equal(enc, cases[i].b64);
        unsigned char out[16];
        size_t n = 99;
        assert_int_equal(server__base64_decode(enc, strlen(enc), out, &n), IMS_OK);
        assert_int_equal(n, strlen(cases[i].plain));
        assert_memory_equal(out, cases[i].plain, n);
    }
    unsigned char out[16];
    size_t n;
    /* without padding, with line breaks, URL-safe letters */
    assert_int_equal(server__base64_decode("Zm9v\r\nYg", 8, out, &n), IMS_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(out, "foob", 4);
    assert_int_equal(server__base64_decode("_9j_", 4, out, &n), IMS_OK);
    assert_memory_equal(out, "\xff\xd8\xff", 3);
    assert_int_equal(server__base64_decode("Zm9v!", 5, out, &n), IMS_ERR_INVALID);
    assert_int_equal(server__base64_decode("Zg==Zg", 6, out, &n), IMS_ERR_INVALID);
    server__arena_fini(&a);
}

static void test_dedup(void **state)
{
    (void)state;
    /* rank order 0..5 on the unit circle: 1 = 0 (a copy); 3 is linked to 2
     * (cos 0.95), 4 to 3 but not to 2 (a chain); 5 stands alone */
    double ang[6] = {0, 0, 2.0, 2.0 + acos(0.95), 2.0 + 2 * acos(0.95), 4.0};
    float v[12];
    for (int i = 0; i < 6; i++) {
        v[2 * i] = (float)cos(ang[i]);
        v[2 * i + 1] = (float)sin(ang[i]);
    }
    assert_true(v[4] * v[8] + v[5] * v[9] < 0.94f);
    uint8_t drop[6];
    assert_int_equal(server__clipback_dedup(v, 6, 2, 0.94f, drop), 3);
    static const uint8_t want[6] = {0, 1, 0, 1, 1, 0};
    assert_memory_equal(drop, want, 6);
    /* the best-ranked of a group stays even when it is linked last */
    float w[6] = {1, 0, 0, 1, 0.999f, 0.0447f};
    assert_int_equal(server__clipback_dedup(w, 3, 2, 0.94f, drop), 1);
    assert_int_equal(drop[0], 0);
    assert_int_equal(drop[1], 0);
    assert_int_equal(drop[2], 1);
}

/* ---- immich --------------------------------------------------------------------------------- */

static void test_compat_off(void **state)
{
    (void)state;
    start(0, false);
    struct resp r;
    req(&r, "GET", "/ping", NULL, NULL, 0);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body.data, "--immich-ml"));
    resp_fini(&r);
    req(&r, "POST", "/knn-service", "text/plain;charset=UTF-8", "{}", 2);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body.data, "--clip-back"));
    resp_fini(&r);
    stop();
}

static void test_immich_ping_and_predict(void **state)
{
    (void)state;
    start(SERVER_COMPAT_IMMICH, false);
    struct resp r;
    char h[256];
    req(&r, "GET", "/ping", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "pong");
    assert_non_null(strstr(header(&r, "Content-Type", h, sizeof(h)), "text/plain"));
    resp_fini(&r);

    /* encodeImage: {clip: {visual: {modelName}}} + the preview file as a Blob */
    predict(&r, "entries", 0, "{\"clip\":{\"visual\":{\"modelName\":\"ViT-B-32__openai\"}}}",
            "image", 1, "IMG fake jpeg bytes", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data,
                        "{\"clip\":\"[0.5,0.333333343,-2.49999994e-05,1]\",\"imageHeight\":480,"
                        "\"imageWidth\":640}");
    assert_string_equal(header(&r, "Content-Type", h, sizeof(h)), "application/json");
    assert_string_equal(header(&r, "X-Imgsearch-Ignored", h, sizeof(h)), "");
    assert_string_equal(fk.model, "ViT-B-32__openai");
    assert_int_equal(fk.n_bytes, 19);
    assert_memory_equal(fk.bytes, "IMG fake jpeg bytes", 19);
    resp_fini(&r);

    /* encodeText: {clip: {textual: {modelName, options: {language}}}} + text */
    predict(&r, "entries", 0,
            "{\"clip\":{\"textual\":{\"modelName\":\"ViT-B-32__openai\",\"options\":"
            "{\"language\":\"de-CH\"}}}}",
            "text", 0, "ein Hund am Strand", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "{\"clip\":\"[0.5,0.333333343,-2.49999994e-05,1]\"}");
    assert_string_equal(header(&r, "X-Imgsearch-Ignored", h, sizeof(h)), "language");
    assert_string_equal(fk.text, "ein Hund am Strand");
    resp_fini(&r);

    /* the language is left out when immich has none: "options": {} */
    predict(&r, "entries", 0,
            "{\"clip\":{\"textual\":{\"modelName\":\"ViT-B-32__openai\",\"options\":{}}}}",
            "text", 0, "", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(fk.text, "");
    resp_fini(&r);
    stop();
}

static void test_immich_errors(void **state)
{
    (void)state;
    start(SERVER_COMPAT_IMMICH, false);
    struct resp r;
    const char *vis = "{\"clip\":{\"visual\":{\"modelName\":\"ViT-B-32__openai\"}}}";
    predict(&r, "image", 1, "IMG", NULL);
    assert_detail(&r, 422, "\"entries\" is missing");
    resp_fini(&r);
    predict(&r, "entries", 0, "{\"clip\":", "image", 1, "IMG", NULL);
    assert_detail(&r, 422, "Invalid request format");
    resp_fini(&r);
    predict(&r, "entries", 0, "[1]", "image", 1, "IMG", NULL);
    assert_detail(&r, 422, "Invalid request format");
    resp_fini(&r);
    predict(&r, "entries", 0, "{\"clip\":{\"visual\":{\"options\":{}}}}", "image", 1, "IMG",
            NULL);
    assert_detail(&r, 422, "modelName");
    resp_fini(&r);
    predict(&r, "entries", 0, "{\"clip\":{\"audio\":{\"modelName\":\"x\"}}}", "image", 1, "IMG",
            NULL);
    assert_detail(&r, 422, "unknown clip model type");
    resp_fini(&r);
    predict(&r, "entries", 0, "{\"search\":{\"visual\":{\"modelName\":\"x\"}}}", "image", 1,
            "IMG", NULL);
    assert_detail(&r, 422, "unknown task");
    resp_fini(&r);
    predict(&r, "entries", 0,
            "{\"clip\":{\"visual\":{\"modelName\":\"ViT-B-32__openai\"},"
            "\"textual\":{\"modelName\":\"ViT-B-32__openai\"}}}",
            "image", 1, "IMG", NULL);
    assert_detail(&r, 422, "one clip entry");
    resp_fini(&r);
    /* immich's detectFaces and ocr requests, as its server builds them */
    predict(&r, "entries", 0,
            "{\"facial-recognition\":{\"detection\":{\"modelName\":\"buffalo_l\",\"options\":"
            "{\"minScore\":0.7}},\"recognition\":{\"modelName\":\"buffalo_l\"}}}",
            "image", 1, "IMG", NULL);
    assert_detail(&r, 501, "does not do facial recognition");
    resp_fini(&r);
    predict(&r, "entries", 0,
            "{\"ocr\":{\"detection\":{\"modelName\":\"PP-OCRv5_mobile\",\"options\":{\"minScore\":"
            "0.5,\"maxResolution\":736}},\"recognition\":{\"modelName\":\"PP-OCRv5_mobile\","
            "\"options\":{\"minScore\":0.8}}}}",
            "image", 1, "IMG", NULL);
    assert_detail(&r, 501, "does not do OCR");
    resp_fini(&r);
    predict(&r, "entries", 0, "{\"clip\":{\"visual\":{\"modelName\":\"ViT-L-14__openai\"}}}",
            "image", 1, "IMG", NULL);
    assert_detail(&r, 400, "unknown model \"ViT-L-14__openai\"");
    resp_fini(&r);
    /* a name whose message is cut inside a UTF-8 sequence (the backend's
     * 512-byte message) still gets a JSON answer */
    char ent[4096];
    int n = snprintf(ent, sizeof(ent), "{\"clip\":{\"visual\":{\"modelName\":\"x");
    for (int i = 0; i < 300; i++)
        n += snprintf(ent + n, sizeof(ent) - (size_t)n, "\\u00e9");
    snprintf(ent + n, sizeof(ent) - (size_t)n, "\"}}}");
    predict(&r, "entries", 0, ent, "image", 1, "IMG", NULL);
    assert_detail(&r, 400, "unknown model");
    resp_fini(&r);
    predict(&r, "entries", 0, vis, NULL);
    assert_detail(&r, 400, "Either image or text must be provided");
    resp_fini(&r);
    predict(&r, "entries", 0, vis, "text", 0, "a dog", NULL);
    assert_detail(&r, 400, "encodes an image");
    resp_fini(&r);
    predict(&r, "entries", 0, "{\"clip\":{\"textual\":{\"modelName\":\"ViT-B-32__openai\"}}}",
            "image", 1, "IMG", NULL);
    assert_detail(&r, 400, "encodes a text");
    resp_fini(&r);
    predict(&r, "entries", 0, vis, "image", 1, "GIF89a but not really", NULL);
    assert_detail(&r, 415, "not a supported image");
    resp_fini(&r);
    req(&r, "POST", "/predict", "application/json", "{}", 2);
    assert_detail(&r, 415, "multipart/form-data");
    resp_fini(&r);
    /* nothing above reached the encoder except the unknown model and the bad image */
    stop();
}

static void test_immich_only_listener(void **state)
{
    (void)state;
    start(SERVER_COMPAT_IMMICH, true);
    struct resp r;
    req(&r, "GET", "/healthz", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    req(&r, "GET", "/api/v1/search?q=x", NULL, NULL, 0);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body.data, "this listener"));
    resp_fini(&r);
    req(&r, "GET", "/", NULL, NULL, 0);
    assert_int_equal(r.status, 404);
    resp_fini(&r);
    predict(&r, "entries", 0, "{\"clip\":{\"textual\":{\"modelName\":\"ViT-B-32__openai\"}}}",
            "text", 0, "x", NULL);
    assert_int_equal(r.status, 200);
    resp_fini(&r);
    stop();
}

/* ---- clip-retrieval ------------------------------------------------------------------------- */

/* clip-front's callClipService body for a text search with its defaults. */
static const char front_text[] =
    "{\"text\":\"a dog\",\"image\":null,\"image_url\":null,\"embedding_input\":null,"
    "\"modality\":\"image\",\"num_images\":2,\"indice_name\":\"imgsearch\","
    "\"num_result_ids\":3000,\"use_mclip\":false,\"deduplicate\":true,"
    "\"use_safety_model\":true,\"use_violence_detector\":true,\"aesthetic_score\":\"\","
    "\"aesthetic_weight\":\"0.5\"}";
#define FRONT_CTYPE "text/plain;charset=UTF-8"

static void test_clipback_knn(void **state)
{
    (void)state;
    start(SERVER_COMPAT_CLIP_BACK, false);
    struct resp r;
    char h[256];
    req(&r, "GET", "/indices-list", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "[\"imgsearch\"]");
    /* no CORS "*": only origins allowed with --cors-origin get CORS answers
     * (it_compat_e2e checks clip-front's origin end to end) */
    assert_string_equal(header(&r, "Access-Control-Allow-Origin", h, sizeof(h)), "");
    resp_fini(&r);

    req(&r, "POST", "/knn-service", FRONT_CTYPE, front_text, strlen(front_text));
    assert_int_equal(r.status, 200);
    assert_int_equal(fk.kind, SERVER_TERM_TEXT);
    assert_string_equal(fk.text, "a dog");
    assert_int_equal(fk.k, SERVER_K_MAX);
    assert_string_equal(header(&r, "X-Imgsearch-Capped", h, sizeof(h)), "num_result_ids=1000");
    assert_string_equal(header(&r, "X-Imgsearch-Ignored", h, sizeof(h)),
                        "use_safety_model, use_violence_detector");
    /* no CORS "*": only origins allowed with --cors-origin get CORS answers
     * (it_compat_e2e checks clip-front's origin end to end) */
    assert_string_equal(header(&r, "Access-Control-Allow-Origin", h, sizeof(h)), "");
    /* 2 and 4 are near-duplicates of 1 and 3; the first two keep metadata */
    assert_string_equal(
        r.body.data,
        "[{\"url\":\"https://example.org/a/cat.jpg?size=large\",\"caption\":\"cat.jpg\","
        "\"id\":1,\"similarity\":0.5},"
        "{\"image\":\"/9h0aHVtYg==\",\"caption\":\"a cat on a mat\",\"id\":3,"
        "\"similarity\":0.25},"
        "{\"id\":5,\"similarity\":0.0}]");
    resp_fini(&r);

    /* without deduplication, every result; a file source gets image_path */
    const char *nodup = "{\"text\":\"a dog\",\"modality\":\"image\",\"num_images\":2,"
                        "\"num_result_ids\":4,\"deduplicate\":false,\"indice_name\":null}";
    req(&r, "POST", "/knn-service", FRONT_CTYPE, nodup, strlen(nodup));
    assert_int_equal(r.status, 200);
    assert_int_equal(fk.k, 4);
    assert_string_equal(header(&r, "X-Imgsearch-Ignored", h, sizeof(h)), "");
    assert_string_equal(header(&r, "X-Imgsearch-Capped", h, sizeof(h)), "");
    assert_int_equal(json_array_size(r.json), 4);
    json_t *second = json_array_get(r.json, 1);
    assert_string_equal(json_string_value(json_object_get(second, "image_path")),
                        "/photos/2020/beach.png");
    assert_string_equal(json_string_value(json_object_get(second, "caption")), "beach.png");
    assert_null(json_object_get(json_array_get(r.json, 2), "caption"));
    resp_fini(&r);

    /* an image search: clip-front sends the file's base64 (a data URL's tail) */
    const char *img = "{\"text\":\"\",\"image\":\"SU1HIGJ5dGVz\",\"image_url\":null,"
                      "\"embedding_input\":null,\"modality\":\"text\",\"num_images\":40,"
                      "\"indice_name\":\"imgsearch\",\"num_result_ids\":3000,\"use_mclip\":true,"
                      "\"deduplicate\":true,\"use_safety_model\":false,"
                      "\"use_violence_detector\":false,\"aesthetic_score\":\"9\","
                      "\"aesthetic_weight\":\"0.5\"}";
    req(&r, "POST", "/knn-service", FRONT_CTYPE, img, strlen(img));
    assert_int_equal(r.status, 200);
    assert_int_equal(fk.kind, SERVER_TERM_IMAGE);
    assert_int_equal(fk.n_bytes, 9);
    assert_memory_equal(fk.bytes, "IMG bytes", 9);
    assert_string_equal(header(&r, "X-Imgsearch-Ignored", h, sizeof(h)),
                        "modality, use_mclip, aesthetic_score, aesthetic_weight");
    resp_fini(&r);

    const char *url = "{\"image_url\":\"http://example.org/q.jpg\",\"num_images\":5}";
    req(&r, "POST", "/knn-service", "application/json", url, strlen(url));
    assert_int_equal(r.status, 200);
    assert_int_equal(fk.kind, SERVER_TERM_IMAGE_URL);
    assert_string_equal(fk.text, "http://example.org/q.jpg");
    assert_int_equal(fk.k, 5);
    resp_fini(&r);

    const char *emb = "{\"embedding_input\":[0.1,0.2,-0.3],\"modality\":\"image\","
                      "\"num_images\":3}";
    req(&r, "POST", "/knn-service", FRONT_CTYPE, emb, strlen(emb));
    assert_int_equal(r.status, 200);
    assert_int_equal(fk.kind, SERVER_TERM_VECTOR);
    assert_int_equal(fk.n_vector, 3);
    resp_fini(&r);
    stop();
}

static void assert_message(const struct resp *r, long status, const char *needle)
{
    if (r->status != status || !r->json)
        fprintf(stderr, "got %ld: %s\n", r->status, r->body.data ? r->body.data : "");
    assert_int_equal(r->status, status);
    const char *m = json_string_value(json_object_get(r->json, "message"));
    assert_non_null(m);
    if (!strstr(m, needle))
        fail_msg("message \"%s\" lacks \"%s\"", m, needle);
}

static void test_clipback_metadata_and_errors(void **state)
{
    (void)state;
    start(SERVER_COMPAT_CLIP_BACK, false);
    struct resp r;
    /* clip-front's getMetadata while scrolling */
    const char *meta = "{\"ids\":[3,99,1],\"indice_name\":\"imgsearch\"}";
    req(&r, "POST", "/metadata", FRONT_CTYPE, meta, strlen(meta));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data,
                        "[{\"id\":3,\"metadata\":{\"image\":\"/9h0aHVtYg==\",\"caption\":"
                        "\"a cat on a mat\"}},{\"id\":99,\"metadata\":{}},{\"id\":1,\"metadata\":"
                        "{\"url\":\"https://example.org/a/cat.jpg?size=large\",\"caption\":"
                        "\"cat.jpg\"}}]");
    resp_fini(&r);
    req(&r, "POST", "/metadata", FRONT_CTYPE, "{\"ids\":[]}", 10);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "[]");
    resp_fini(&r);

    static const struct {
        const char *path, *body, *needle;
        long status;
    } bad[] = {
        {"/knn-service", "not json", "not JSON", 400},
        {"/knn-service", "[1]", "JSON object", 400},
        {"/knn-service", "{\"num_images\":10}", "must fill one of", 400},
        {"/knn-service", "{\"text\":\"\",\"image\":null}", "must fill one of", 400},
        {"/knn-service", "{\"text\":\"x\",\"indice_name\":\"laion5B-L-14\"}", "unknown indice_name",
         400},
        {"/knn-service", "{\"text\":\"x\",\"num_images\":\"lots\"}", "num_images", 400},
        {"/knn-service", "{\"text\":\"x\",\"num_images\":0}", "num_images", 400},
        {"/knn-service", "{\"text\":5}", "\"text\" must be a string", 400},
        {"/knn-service", "{\"image\":\"not base64!\"}", "base64", 400},
        {"/knn-service", "{\"embedding_input\":[1,\"x\"]}", "embedding_input", 400},
        {"/knn-service", "{\"embedding_input\":3}", "embedding_input", 400},
        {"/knn-service", "{\"text\":\"x\",\"modality\":\"audio\"}", "modality", 400},
        {"/metadata", "{\"ids\":\"1\"}", "ids", 400},
        {"/metadata", "{\"ids\":[1.5]}", "not an integer", 400},
        {"/metadata", "{\"ids\":[1],\"indice_name\":\"other\"}", "unknown indice_name", 400},
    };
    int searches = fk.n_searches;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        req(&r, "POST", bad[i].path, FRONT_CTYPE, bad[i].body, strlen(bad[i].body));
        assert_message(&r, bad[i].status, bad[i].needle);
        resp_fini(&r);
    }
    assert_int_equal(fk.n_searches, searches); /* none reached the backend's search */
    stop();
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_floats_json),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_dedup),
        cmocka_unit_test(test_compat_off),
        cmocka_unit_test(test_immich_ping_and_predict),
        cmocka_unit_test(test_immich_errors),
        cmocka_unit_test(test_immich_only_listener),
        cmocka_unit_test(test_clipback_knn),
        cmocka_unit_test(test_clipback_metadata_and_errors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
