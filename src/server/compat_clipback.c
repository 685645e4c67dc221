/* SPDX-License-Identifier: MIT */
/*
 * compat_clipback.c: clip-retrieval's back end ("clip back"), so that its
 * web front end (clip-front) and scripts written for it can search an
 * imgsearch catalogue. Only the shapes live here; searching, rows, stored
 * embeddings and thumbnails come from the backend, HTTP from server.c.
 *
 * The wire format, learned from clip_retrieval/clip_back.py and the front
 * end's front/src/clip-service.js + clip-front.js (rom1504/clip-retrieval):
 *
 *   GET  /indices-list -> ["NAME", ...]
 *   POST /knn-service  {"text", "image" (base64), "image_url", "embedding_input",
 *                       "modality", "num_images", "num_result_ids", "indice_name",
 *                       "use_mclip", "deduplicate", "use_safety_model",
 *                       "use_violence_detector", "aesthetic_score", "aesthetic_weight"}
 *        -> [{METADATA..., "id": ID, "similarity": S}, ...]: num_result_ids results
 *           best first, the first num_images with their metadata, the others
 *           with id and similarity only (clip-front asks 40 and 3000 and fetches
 *           the rest's metadata while the page scrolls)
 *   POST /metadata     {"ids": [...], "indice_name"} -> [{"id": ID, "metadata": {...}}, ...]
 *
 * Bodies are JSON whatever the Content-Type (clip-back reads them with
 * get_json(force=True); clip-front's fetch sends text/plain). The query is
 * the first of text (non-empty), image / image_url, embedding_input, as in
 * clip-back. Metadata of a row: "url" for an http(s) source (clip-front
 * shows it), else "image" (the thumbnail, base64 JPEG; clip-front shows it
 * as a data URL) and, for a file, "image_path"; "caption" is the stored
 * caption or the source's file name.
 *
 * Honoured: text, image, image_url, embedding_input, num_images,
 * num_result_ids (at most SERVER_K_MAX, else capped and said in
 * X-Imgsearch-Capped), deduplicate (clip-back's rule, server__clipback_dedup),
 * indice_name (the one index, or absent/null/""). Accepted and
 * ignored, named in X-Imgsearch-Ignored when they asked for something:
 * modality "text" (imgsearch has no caption index; the image index answers),
 * use_mclip, use_safety_model, use_violence_detector, aesthetic_score with
 * aesthetic_weight. Errors are {"message": "..."} (Flask-RESTful's shape).
 */
#include "server_int.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLIPBACK_DEDUP_THRESHOLD 0.94f   /* clip_back.py get_non_uniques */
#define METADATA_IDS_MAX 1000

/* clip-retrieval's errors are {"message": "..."} (Flask-RESTful's shape) */
#define message(out, a, status, ...) server__compat_message(out, a, status, "message", __VA_ARGS__)

/* A backend failure: its mapped status; internal messages go to the log. */
static void backend_error(struct server__compat_reply *out, struct server_arena *a,
                          enum ims_status st, const struct ims_error *err)
{
    server__compat_error(out, a, "message", server__http_status(st), st, err);
}

static void add_ignored(struct server__compat_reply *out, const char *name)
{
    size_t used = strlen(out->ignored);
    snprintf(out->ignored + used, sizeof(out->ignored) - used, "%s%s", used ? ", " : "", name);
}

/* ---- base64 -------------------------------------------------------------------------- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

enum ims_status server__base64_decode(const char *s, size_t len, unsigned char *out, size_t *n)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t w = 0;
    bool pad = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            continue;
        if (c == '=') {
            pad = true;
            continue;
        }
        int v = b64_value(c);
        if (v < 0 || pad)
            return IMS_ERR_INVALID;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[w++] = (unsigned char)(acc >> bits);
        }
    }
    *n = w;
    return IMS_OK;
}

char *server__base64_encode(struct server_arena *a, const void *p, size_t n)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *in = p;
    char *out = server_arena_alloc(a, (n + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    char *w = out;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *w++ = alpha[v >> 18];
        *w++ = alpha[(v >> 12) & 63];
        *w++ = alpha[(v >> 6) & 63];
        *w++ = alpha[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        *w++ = alpha[v >> 18];
        *w++ = alpha[(v >> 12) & 63];
        *w++ = i + 1 < n ? alpha[(v >> 6) & 63] : '=';
        *w++ = '=';
    }
    *w = '\0';
    return out;
}

/* ---- near-duplicates ------------------------------------------------------------------ */

size_t server__clipback_dedup(const float *v, size_t n, size_t dim, float threshold,
                              uint8_t *drop)
{
    /* Connected components of the "inner product >= threshold" graph, each
     * reduced to its best-ranked member (clip-back: FAISS range_search, then
     * connected components visited in rank order, all but the first of each
     * dropped). A row is dropped iff it is linked, through any chain, to a
     * better-ranked row: label rows with the best rank of their component by
     * a union-find over all linked pairs. O(n^2 dim) for n <= SERVER_K_MAX. */
    size_t *parent = ims_malloc(n * sizeof(*parent));
    if (!parent) {
        memset(drop, 0, n);
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        parent[i] = i;
    for (size_t i = 0; i < n; i++) {
        const float *a = v + i * dim;
        for (size_t j = i + 1; j < n; j++) {
            const float *b = v + j * dim;
            float dot = 0;
            for (size_t d = 0; d < dim; d++)
                dot += a[d] * b[d];
            if (!(dot >= threshold))
                continue;
            size_t ri = i, rj = j;
            while (parent[ri] != ri)
                ri = parent[ri] = parent[parent[ri]];
            while (parent[rj] != rj)
                rj = parent[rj] = parent[parent[rj]];
            if (ri != rj) {
                /* the root is the component's best rank (smallest index) */
                if (ri < rj)
                    parent[rj] = ri;
                else
                    parent[ri] = rj;
            }
        }
    }
    size_t dropped = 0;
    for (size_t i = 0; i < n; i++) {
        size_t r = i;
        while (parent[r] != r)
            r = parent[r];
        drop[i] = r != i;
        dropped += drop[i];
    }
    ims_free(parent);
    return dropped;
}

/* ---- metadata of one row ----------------------------------------------------------------- */

static bool is_http(const char *s)
{
    return s && (!strncmp(s, "http://", 7) || !strncmp(s, "https://", 8));
}

/* The last path segment of a source, without a query or fragment. */
static char *file_name(struct server_arena *a, const char *src)
{
    size_t end = strcspn(src, "?#");
    if (!is_http(src))
        end = strlen(src);
    size_t start = end;
    while (start > 0 && src[start - 1] != '/')
        start--;
    if (start == end)
        return server_arena_strdup(a, src);
    char *s = server_arena_memdup(a, src + start, end - start + 1);
    if (s)
        s[end - start] = '\0';
    return s;
}

/* Adds the metadata members of `row` to `o`. A missing thumbnail leaves
 * "image" out; an arena running out is an error. */
static enum ims_status metadata_into(const struct server_backend *be, const struct server_row *row,
                                     struct server_arena *a, json_t *o, struct ims_error *err)
{
    const char *src = row->url ? row->url : "";
    if (is_http(src)) {
        json_object_set_new(o, "url", json_string(src));
    } else {
        struct ims_str jpeg = {0};
        struct ims_error terr = {{0}};
        if (be->image_thumb && be->image_thumb(be->self, row->id, a, &jpeg, &terr) == IMS_OK) {
            char *b64 = server__base64_encode(a, jpeg.ptr, jpeg.len);
            if (!b64)
                return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
            json_object_set_new(o, "image", json_string(b64));
        }
        if (*src && strncmp(src, "upload:", 7) != 0)
            json_object_set_new(o, "image_path", json_string(src));
    }
    const char *caption = row->caption && *row->caption ? row->caption : file_name(a, src);
    if (caption && json_object_set_new(o, "caption", json_string(caption)) != 0)
        json_object_set_new(o, "caption", json_string("")); /* not UTF-8: stays a string */
    return IMS_OK;
}

/* ---- request fields ------------------------------------------------------------------------- */

/* A truthy option: true, a non-zero number, a non-empty string other than
 * "false"/"0" (clip-back reads them with Python truthiness). */
static bool truthy(json_t *v)
{
    if (!v || json_is_null(v) || json_is_false(v))
        return false;
    if (json_is_true(v))
        return true;
    if (json_is_number(v))
        return json_number_value(v) != 0;
    if (json_is_string(v))
        return json_string_length(v) && strcmp(json_string_value(v), "false") &&
               strcmp(json_string_value(v), "0");
    return true;
}

/* An optional string member: NULL when absent or null; false (reply
 * written) when of another type. */
static bool opt_string(json_t *root, const char *key, const char **out,
                       struct server__compat_reply *r, struct server_arena *a)
{
    json_t *v = json_object_get(root, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v)) {
        message(r, a, 400, "\"%s\" must be a string", key);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

static bool opt_count(json_t *root, const char *key, long long dflt, long long *out,
                      struct server__compat_reply *r, struct server_arena *a)
{
    json_t *v = json_object_get(root, key);
    *out = dflt;
    if (!v || json_is_null(v))
        return true;
    double d = json_is_number(v) ? json_number_value(v) : NAN;
    if (json_is_string(v)) {
        char *end = NULL;
        d = strtod(json_string_value(v), &end);
        if (end == json_string_value(v) || *end)
            d = NAN;
    }
    if (!(d >= 1 && d <= 1e9) || d != floor(d)) {
        message(r, a, 400, "\"%s\" must be a whole number >= 1", key);
        return false;
    }
    *out = (long long)d;
    return true;
}

static bool index_ok(json_t *root, const char *index_name, struct server__compat_reply *r,
                     struct server_arena *a)
{
    const char *name;
    if (!opt_string(root, "indice_name", &name, r, a))
        return false;
    if (name && *name && strcmp(name, index_name) != 0) {
        message(r, a, 400, "unknown indice_name \"%s\" (this server has one index: \"%s\")",
                name, index_name);
        return false;
    }
    return true;
}

static json_t *parse_body(const char *body, size_t len, struct server__compat_reply *r,
                          struct server_arena *a)
{
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        message(r, a, 400, "the body is not JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                jerr.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        message(r, a, 400, "the body must be a JSON object");
        return NULL;
    }
    return root;
}

/* ---- POST /knn-service ------------------------------------------------------------------------ */

void server__clipback_knn(const struct server_backend *be, const char *index_name,
                          const char *body, size_t len, struct server_arena *a,
                          struct server__compat_reply *out)
{
    memset(out, 0, sizeof(*out));
    json_t *root = parse_body(body, len, out, a);
    if (!root)
        return;
    const char *text, *image, *image_url, *modality;
    long long num_images, num_ids;
    json_t *emb = json_object_get(root, "embedding_input");
    json_t *arr = NULL;
    if (!index_ok(root, index_name, out, a) || !opt_string(root, "text", &text, out, a) ||
        !opt_string(root, "image", &image, out, a) ||
        !opt_string(root, "image_url", &image_url, out, a) ||
        !opt_string(root, "modality", &modality, out, a) ||
        !opt_count(root, "num_images", 40, &num_images, out, a) ||
        !opt_count(root, "num_result_ids", num_images, &num_ids, out, a))
        goto out;
    if (emb && !json_is_null(emb) && !json_is_array(emb)) {
        message(out, a, 400, "\"embedding_input\" must be an array of numbers");
        goto out;
    }
    /* what was asked and is not honoured */
    if (modality && strcmp(modality, "image") != 0) {
        if (strcmp(modality, "text") != 0) {
            message(out, a, 400, "\"modality\" must be \"image\" or \"text\"");
            goto out;
        }
        add_ignored(out, "modality");
    }
    if (truthy(json_object_get(root, "use_mclip")))
        add_ignored(out, "use_mclip");
    if (truthy(json_object_get(root, "use_safety_model")))
        add_ignored(out, "use_safety_model");
    if (truthy(json_object_get(root, "use_violence_detector")))
        add_ignored(out, "use_violence_detector");
    json_t *aes = json_object_get(root, "aesthetic_score");
    if (aes && !json_is_null(aes) && !(json_is_string(aes) && json_string_length(aes) == 0))
        add_ignored(out, "aesthetic_score, aesthetic_weight");
    bool dedup = truthy(json_object_get(root, "deduplicate"));

    long long k = num_ids < num_images ? num_images : num_ids;
    if (k > SERVER_K_MAX) {
        snprintf(out->capped, sizeof(out->capped), "num_result_ids=%d", SERVER_K_MAX);
        k = SERVER_K_MAX;
    }
    if (num_images > k)
        num_images = k;

    struct server_term term = {.weight = 1};
    float *vec = NULL;
    if (text && *text) {
        if (strlen(text) > SERVER_TEXT_MAX) {
            message(out, a, 400, "\"text\" is longer than %d bytes", SERVER_TEXT_MAX);
            goto out;
        }
        term.kind = SERVER_TERM_TEXT;
        term.text = text;
    } else if (image && *image) {
        size_t n = strlen(image);
        unsigned char *bytes = server_arena_alloc(a, n / 4 * 3 + 4);
        size_t nb = 0;
        if (!bytes) {
            message(out, a, 413, "the image is too large");
            goto out;
        }
        if (server__base64_decode(image, n, bytes, &nb) != IMS_OK || nb == 0) {
            message(out, a, 400, "\"image\" must be the image file in base64");
            goto out;
        }
        term.kind = SERVER_TERM_IMAGE;
        term.bytes = bytes;
        term.n_bytes = nb;
    } else if (image_url && *image_url) {
        if (strlen(image_url) > SERVER_URL_MAX) {
            message(out, a, 400, "\"image_url\" is longer than %d bytes", SERVER_URL_MAX);
            goto out;
        }
        term.kind = SERVER_TERM_IMAGE_URL;
        term.url = image_url;
    } else if (emb && json_is_array(emb) && json_array_size(emb) > 0) {
        size_t n = json_array_size(emb);
        if (n > SERVER_VECTOR_MAX) {
            message(out, a, 400, "\"embedding_input\" has more than %d values", SERVER_VECTOR_MAX);
            goto out;
        }
        vec = server_arena_alloc(a, n * sizeof(float));
        if (!vec) {
            message(out, a, 503, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *x = json_array_get(emb, i);
            double d = json_is_number(x) ? json_number_value(x) : NAN;
            if (!isfinite(d) || fabs(d) > 3.4e38) {
                message(out, a, 400, "\"embedding_input\"[%zu] is not a finite number", i);
                goto out;
            }
            vec[i] = (float)d;
        }
        term.kind = SERVER_TERM_VECTOR;
        term.vector = vec;
        term.n_vector = n;
    } else {
        message(out, a, 400, "must fill one of text, image and image url input");
        goto out;
    }

    struct server_query q = {.terms = &term, .n_terms = 1, .k = (int)k};
    struct server_results res = {0};
    struct ims_error err = {{0}};
    enum ims_status st = be->search(be->self, &q, a, &res, &err);
    if (st != IMS_OK) {
        backend_error(out, a, st, &err);
        goto out;
    }
    uint8_t *drop = NULL;
    if (dedup && res.n > 1) {
        int64_t *ids = server_arena_alloc(a, res.n * sizeof(*ids));
        uint8_t *found = server_arena_alloc(a, res.n);
        drop = server_arena_alloc(a, res.n);
        float *vectors = NULL;
        size_t dim = 0;
        if (!ids || !found || !drop) {
            message(out, a, 503, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < res.n; i++)
            ids[i] = res.items[i].row.id;
        memset(found, 0, res.n);
        st = be->embeddings(be->self, ids, res.n, a, &vectors, &dim, found, &err);
        if (st != IMS_OK) {
            backend_error(out, a, st, &err);
            goto out;
        }
        server__clipback_dedup(vectors, res.n, dim, CLIPBACK_DEDUP_THRESHOLD, drop);
        for (size_t i = 0; i < res.n; i++)
            drop[i] = drop[i] || !found[i]; /* deleted while we looked */
    }
    arr = json_array();
    long long shown = 0;
    for (size_t i = 0; arr && i < res.n; i++) {
        if (drop && drop[i])
            continue;
        json_t *o = json_object();
        if (!o)
            break;
        if (shown < num_images) {
            st = metadata_into(be, &res.items[i].row, a, o, &err);
            if (st != IMS_OK) {
                json_decref(o);
                backend_error(out, a, st, &err);
                goto out;
            }
        }
        shown++;
        json_object_set_new(o, "id", json_integer(res.items[i].row.id));
        json_object_set_new(o, "similarity", json_real(res.items[i].score));
        json_array_append_new(arr, o);
    }
    server__compat_json(out, a, 200, arr);
    arr = NULL;
out:
    json_decref(arr);
    json_decref(root);
}

/* ---- POST /metadata ---------------------------------------------------------------------------- */

void server__clipback_metadata(const struct server_backend *be, const char *index_name,
                               const char *body, size_t len, struct server_arena *a,
                               struct server__compat_reply *out)
{
    memset(out, 0, sizeof(*out));
    json_t *root = parse_body(body, len, out, a), *arr = NULL;
    if (!root)
        return;
    if (!index_ok(root, index_name, out, a))
        goto out;
    json_t *ids = json_object_get(root, "ids");
    if (!json_is_array(ids)) {
        message(out, a, 400, "\"ids\" must be an array of ids");
        goto out;
    }
    if (json_array_size(ids) > METADATA_IDS_MAX) {
        message(out, a, 413, "at most %d ids per request", METADATA_IDS_MAX);
        goto out;
    }
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v)
    {
        if (!json_is_integer(v)) {
            message(out, a, 400, "\"ids\"[%zu] is not an integer", i);
            goto out;
        }
    }
    arr = json_array();
    json_array_foreach(ids, i, v)
    {
        if (!arr)
            break;
        struct server_row row = {0};
        struct ims_error err = {{0}};
        json_t *meta = json_object();
        enum ims_status st = json_integer_value(v) > 0
                                 ? be->image_get(be->self, json_integer_value(v), a, &row, &err)
                                 : IMS_ERR_NOT_FOUND;
        if (st == IMS_OK)
            st = metadata_into(be, &row, a, meta, &err);
        if (st != IMS_OK && st != IMS_ERR_NOT_FOUND) {
            json_decref(meta);
            backend_error(out, a, st, &err);
            goto out;
        }
        /* an id that is gone gets empty metadata: clip-front merges it */
        json_array_append_new(arr, json_pack("{s:O, s:o?}", "id", v, "metadata", meta));
    }
    server__compat_json(out, a, 200, arr);
    arr = NULL;
out:
    json_decref(arr);
    json_decref(root);
}

/* ---- GET /indices-list ---------------------------------------------------------------------------- */

void server__clipback_indices(const char *index_name, struct server_arena *a,
                              struct server__compat_reply *out)
{
    memset(out, 0, sizeof(*out));
    server__compat_json(out, a, 200, json_pack("[s]", index_name));
}
