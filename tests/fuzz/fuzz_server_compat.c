/* SPDX-License-Identifier: MIT */
/*
 * fuzz_server_compat.c: the compatibility handlers (immich's /predict,
 * clip-retrieval's /knn-service and /metadata) over a fixed fake backend.
 * The first byte picks the handler, the rest is the body (for /predict a
 * multipart body with a fixed boundary, fed through the form collector).
 * Any input must give a reply with an HTTP status and a JSON body; never a
 * crash, a leak or an out-of-bounds read.
 */
#include "server_int.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static enum ims_status f_embed(const char *model, struct server_arena *a,
                               struct server_embedding *out, struct ims_error *err)
{
    static const float v[4] = {0.5f, -0.5f, 0.5f, -0.5f};
    if (model && strcmp(model, "m") != 0)
        return ims_error_set(err, IMS_ERR_NOT_FOUND, "unknown model");
    out->v = server_arena_memdup(a, v, sizeof(v));
    out->dim = 4;
    out->width = 3;
    out->height = 2;
    return out->v ? IMS_OK : ims_error_set(err, IMS_ERR_NOMEM, "full");
}

static enum ims_status f_text(void *self, const char *model, const char *text,
                              struct server_arena *a, struct server_embedding *out,
                              struct ims_error *err)
{
    (void)self;
    if (strlen(text) > SERVER_TEXT_MAX)
        abort();
    return f_embed(model, a, out, err);
}

static enum ims_status f_image(void *self, const char *model, const unsigned char *bytes,
                               size_t n, struct server_arena *a, struct server_embedding *out,
                               struct ims_error *err)
{
    (void)self;
    if (n == 0 || !bytes)
        abort();
    if (bytes[0] == 'X')
        return ims_error_set(err, IMS_ERR_INTERNAL, "internal detail");
    return f_embed(model, a, out, err);
}

static enum ims_status f_search(void *self, const struct server_query *q, struct server_arena *a,
                                struct server_results *out, struct ims_error *err)
{
    (void)self;
    (void)err;
    if (q->n_terms != 1 || q->k < 1 || q->k > SERVER_K_MAX)
        abort();
    out->n = (size_t)(q->k < 3 ? q->k : 3);
    out->items = server_arena_alloc(a, out->n * sizeof(*out->items));
    if (!out->items)
        return IMS_ERR_NOMEM;
    static const char *const urls[3] = {"http://x/a.jpg", "/p/b.png", NULL};
    for (size_t i = 0; i < out->n; i++) {
        memset(&out->items[i], 0, sizeof(out->items[i]));
        out->items[i].row.id = (int64_t)i + 1;
        out->items[i].row.url = urls[i];
        out->items[i].score = 1.0f - (float)i;
    }
    return IMS_OK;
}

static enum ims_status f_embeddings(void *self, const int64_t *ids, size_t n,
                                    struct server_arena *a, float **vectors, size_t *dim,
                                    uint8_t *found, struct ims_error *err)
{
    (void)self;
    (void)ids;
    (void)err;
    float *v = server_arena_alloc(a, (n ? n : 1) * 2 * sizeof(float));
    if (!v)
        return IMS_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        v[2 * i] = 1;
        v[2 * i + 1] = 0;
        found[i] = i != 1;
    }
    *vectors = v;
    *dim = 2;
    return IMS_OK;
}

static enum ims_status f_get(void *self, int64_t id, struct server_arena *a,
                             struct server_row *out, struct ims_error *err)
{
    (void)self;
    (void)a;
    if (id > 2)
        return ims_error_set(err, IMS_ERR_NOT_FOUND, "no");
    memset(out, 0, sizeof(*out));
    out->id = id;
    out->url = id == 1 ? "upload:ab/c.png" : "";
    out->caption = id == 2 ? "\xff not utf-8" : NULL;
    return IMS_OK;
}

static enum ims_status f_thumb(void *self, int64_t id, struct server_arena *a,
                               struct ims_str *jpeg, struct ims_error *err)
{
    (void)self;
    (void)err;
    jpeg->ptr = server_arena_memdup(a, "\xff\xd8", 2);
    jpeg->len = 2;
    return id == 2 ? IMS_ERR_NOT_FOUND : IMS_OK;
}

static const struct server_backend be = {.search = f_search, .image_get = f_get,
                                         .image_thumb = f_thumb, .embed_text = f_text,
                                         .embed_image = f_image, .embeddings = f_embeddings};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct server_arena a;
    server__arena_init(&a, 64u << 20);
    struct server__compat_reply r;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 3) {
    case 0:
        server__clipback_knn(&be, "idx", body, len, &a, &r);
        break;
    case 1:
        server__clipback_metadata(&be, "idx", body, len, &a, &r);
        break;
    default: {
        struct server_mp_form f;
        struct ims_error err = {{0}};
        if (server__form_init(&f, "multipart/form-data; boundary=B", 1u << 20, 16, &err) !=
            IMS_OK)
            abort();
        enum ims_status st = server__form_feed(&f, body, len, &err);
        if (st == IMS_OK)
            st = server__form_finish(&f, &err);
        if (st == IMS_OK)
            server__immich_predict(&be, &f, &a, &r);
        server__form_fini(&f);
        if (st != IMS_OK) {
            server__arena_fini(&a);
            return 0;
        }
    }
    }
    if (r.status < 200 || r.status > 599 || !r.body || !r.content_type)
        abort();
    json_error_t jerr;
    json_t *j = json_loadb(r.body, r.len, 0, &jerr);
    if (!j)
        abort(); /* every answer is JSON */
    if (r.status == 500 && strstr(r.body, "internal detail"))
        abort(); /* internal messages are logged, never shown */
    json_decref(j);
    server__arena_fini(&a);
    return 0;
}
