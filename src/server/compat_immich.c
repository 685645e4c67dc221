/* SPDX-License-Identifier: MIT */
/*
 * compat_immich.c: immich's machine-learning API for CLIP, so that an immich
 * server (or anything else speaking that API) can use imgsearch as its
 * MACHINE_LEARNING_URL. Only the shapes live here; the embeddings come from
 * the backend (embed_text / embed_image), the HTTP plumbing from server.c.
 *
 * The wire format, learned from immich's machine-learning service
 * (machine-learning/immich_ml: main.py, schemas.py, models/clip/) and its
 * server's client (server/src/repositories/machine-learning.repository.ts):
 *
 *   GET  /ping     -> 200 text/plain "pong"   (served by server.c)
 *   POST /predict  multipart/form-data:
 *        entries   JSON {TASK: {TYPE: {"modelName": NAME, "options": {...}}}}
 *                  TASK "clip" with TYPE "visual" (an image) or "textual" (a text);
 *                  "facial-recognition" and "ocr" exist, imgsearch does not do them
 *        image     the image file (immich's server sends a Blob: filename "blob")
 *        text      the query text (a plain form field)
 *   -> 200 {"clip": "[f0,f1,...]", "imageHeight": H, "imageWidth": W}   (visual)
 *      200 {"clip": "[f0,f1,...]"}                                       (textual)
 *   The embedding is a JSON *string* holding the array: the service
 *   serialises it with orjson (each float the shortest decimal that reads
 *   back; here nine digits, which read back the same) and the server stores
 *   the string as it is (its ClipVisualResponse / ClipTextualResponse type
 *   the member as a string).
 *   Errors are FastAPI's {"detail": "..."}: 422 for malformed entries, 400
 *   when neither image nor text is given (both as immich answers them); here
 *   also 400 for an unknown model name or an input that does not fit the
 *   task, 501 for the tasks imgsearch does not do, and the mapped status of
 *   backend failures (415 unsupported image, 413 too large, 503 busy).
 *
 * Options imgsearch does not use (textual "language": only immich's
 * multilingual NLLB models read it) are accepted and named in the
 * X-Imgsearch-Ignored header; immich reads no header, people debugging do.
 */
#include "server_int.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- replies ------------------------------------------------------------------ */

void server__compat_text(struct server__compat_reply *out, struct server_arena *a, int status,
                       const char *ctype, const char *text, size_t len)
{
    out->status = status;
    out->content_type = ctype;
    out->body = server_arena_alloc(a, len + 1);
    out->len = out->body ? len : 0;
    if (out->body) {
        memcpy(out->body, text, len);
        out->body[len] = '\0';
    } else {
        out->status = 503;
        out->content_type = "application/json";
        out->body = "{\"detail\":\"out of memory\"}";
        out->len = strlen(out->body);
    }
}

void server__compat_json(struct server__compat_reply *out, struct server_arena *a, int status,
                         json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) {
        static const char oom[] = "{\"detail\":\"out of memory\"}";
        server__compat_text(out, a, 503, "application/json", oom, sizeof(oom) - 1);
        return;
    }
    server__compat_text(out, a, status, "application/json", text, strlen(text));
    free(text);
}

/* {key: msg}; bytes of msg that are not UTF-8 become '?' (msg is modified). */
static json_t *json_message(const char *key, char *msg)
{
    json_t *o = json_pack("{s:s}", key, msg);
    if (!o) {
        /* not UTF-8 (a name echoed back, or a cut at the buffer's end):
         * the message stays readable, its odd bytes become '?' */
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        o = json_pack("{s:s}", key, msg);
    }
    return o;
}

void server__compat_message(struct server__compat_reply *out, struct server_arena *a, int status,
                            const char *key, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    server__compat_json(out, a, status, json_message(key, msg));
}

void server__compat_error(struct server__compat_reply *out, struct server_arena *a,
                          const char *key, int status, enum ims_status st,
                          const struct ims_error *err)
{
    const char *msg = ims_error_message(err, st);
    if (status == 500) {
        snprintf(out->log, sizeof(out->log), "%s: %s", ims_status_name(st), msg);
        msg = "internal error (see the server's error log)";
    }
    server__compat_message(out, a, status, key, "%s", msg);
}

/* immich's errors are {"detail": "..."} (FastAPI's shape) */
#define detail(out, a, status, ...) server__compat_message(out, a, status, "detail", __VA_ARGS__)

/* A backend failure: its mapped status (an unknown id is the request's
 * fault: 400, as immich answers); internal messages go to the log. */
static void backend_error(struct server__compat_reply *out, struct server_arena *a,
                          enum ims_status st, const struct ims_error *err)
{
    server__compat_error(out, a, "detail", st == IMS_ERR_NOT_FOUND ? 400 : server__http_status(st),
                         st, err);
}

/* ---- the embedding as immich's service prints it ------------------------------- */

/* Nine significant digits identify every float32 (2^24 < 10^8), so the
 * nearest 9-digit decimal reads back as the same float; computing it in
 * double (53 bits) cannot land farther than 1e-8 relative from it, well
 * inside half a float ulp (3e-8 relative). Trailing zeros are trimmed; the
 * layout is printf's %.9g (fixed for exponents -4..8, else d.ddde-05).
 * snprintf + a strtof check for the shortest form took ~160 us per 512-d
 * vector (3.5% of a text request); this takes ~10 us. */
static size_t format_float(float f, char *out)
{
    static const double p10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,
                                 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
                                 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28, 1e29,
                                 1e30, 1e31, 1e32, 1e33, 1e34, 1e35, 1e36, 1e37, 1e38, 1e39,
                                 1e40, 1e41, 1e42, 1e43, 1e44, 1e45, 1e46, 1e47, 1e48, 1e49,
                                 1e50, 1e51, 1e52, 1e53, 1e54, 1e55};
    char *w = out;
    double a = (double)f;
    if (signbit(f)) {
        *w++ = '-';
        a = -a;
    }
    if (a == 0) {
        *w++ = '0';
        return (size_t)(w - out);
    }
    int e = (int)floor(log10(a));
    long long m = 0;
    for (int tries = 0; tries < 3; tries++) {
        int k = 8 - e; /* m = a * 10^k has nine digits; k in -30..54 for a float */
        double x = k >= 0 ? a * p10[k] : a / p10[-k];
        m = llround(x);
        if (m >= 1000000000LL)
            e++;
        else if (m < 100000000LL)
            e--;
        else
            break;
    }
    char d[9];
    for (int i = 8; i >= 0; i--) {
        d[i] = (char)('0' + m % 10);
        m /= 10;
    }
    int nd = 9;
    while (nd > 1 && d[nd - 1] == '0')
        nd--;
    if (e >= -4 && e < 9) {
        if (e < 0) {
            *w++ = '0';
            *w++ = '.';
            for (int i = -1; i > e; i--)
                *w++ = '0';
            memcpy(w, d, (size_t)nd);
            w += nd;
        } else {
            for (int i = 0; i <= e; i++)
                *w++ = i < nd ? d[i] : '0';
            if (nd > e + 1) {
                *w++ = '.';
                memcpy(w, d + e + 1, (size_t)(nd - e - 1));
                w += nd - e - 1;
            }
        }
    } else {
        *w++ = d[0];
        if (nd > 1) {
            *w++ = '.';
            memcpy(w, d + 1, (size_t)(nd - 1));
            w += nd - 1;
        }
        w += sprintf(w, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
    return (size_t)(w - out);
}

enum ims_status server__floats_json(const float *v, size_t n, struct ims_buf *out)
{
    enum ims_status st = ims_buf_append(out, "[", 1);
    char chunk[64 * 20];
    size_t used = 0;
    for (size_t i = 0; i < n && st == IMS_OK; i++) {
        if (i)
            chunk[used++] = ',';
        used += format_float(v[i], chunk + used);
        if (used > sizeof(chunk) - 20 || i + 1 == n) {
            st = ims_buf_append(out, chunk, used);
            used = 0;
        }
    }
    if (st == IMS_OK)
        st = ims_buf_append(out, "]", 1);
    return st;
}

/* ---- entries ------------------------------------------------------------------------ */

struct clip_entry {
    const char *type;    /* "visual" | "textual" */
    const char *model;   /* modelName */
    json_t *options;     /* borrowed from the parsed entries; may be NULL */
};

/* Validates `entries` and finds its one CLIP entry. Returns false after
 * writing the error reply. */
static bool parse_entries(json_t *root, struct clip_entry *ce, struct server__compat_reply *out,
                          struct server_arena *a)
{
    if (!json_is_object(root) || json_object_size(root) == 0) {
        detail(out, a, 422, "Invalid request format: entries must be a JSON object such as "
                            "{\"clip\": {\"textual\": {\"modelName\": \"ViT-B-32__openai\"}}}");
        return false;
    }
    const char *task;
    json_t *types;
    size_t n_clip = 0;
    /* every task is checked before one is refused, so that malformed
     * requests get 422 whatever else they ask */
    const char *unsupported = NULL;
    json_object_foreach(root, task, types)
    {
        bool known = !strcmp(task, "clip") || !strcmp(task, "facial-recognition") ||
                     !strcmp(task, "ocr");
        if (!known) {
            detail(out, a, 422, "Invalid request format: unknown task \"%s\" (immich's tasks "
                                "are \"clip\", \"facial-recognition\" and \"ocr\")", task);
            return false;
        }
        if (!json_is_object(types) || json_object_size(types) == 0) {
            detail(out, a, 422, "Invalid request format: task \"%s\" must map model types to "
                                "{\"modelName\": ...}", task);
            return false;
        }
        const char *type;
        json_t *e;
        json_object_foreach(types, type, e)
        {
            json_t *name = json_object_get(e, "modelName");
            json_t *opts = json_object_get(e, "options");
            if (!json_is_object(e) || !json_is_string(name) || !json_string_length(name)) {
                detail(out, a, 422, "Invalid request format: %s.%s needs a \"modelName\" string",
                       task, type);
                return false;
            }
            if (opts && !json_is_object(opts) && !json_is_null(opts)) {
                detail(out, a, 422, "Invalid request format: %s.%s.options must be an object",
                       task, type);
                return false;
            }
            if (strcmp(task, "clip") != 0) {
                unsupported = unsupported ? unsupported : task;
                continue;
            }
            if (strcmp(type, "visual") != 0 && strcmp(type, "textual") != 0) {
                detail(out, a, 422, "Invalid request format: unknown clip model type \"%s\" "
                                    "(\"visual\" or \"textual\")", type);
                return false;
            }
            n_clip++;
            ce->type = type;
            ce->model = json_string_value(name);
            ce->options = json_is_object(opts) ? opts : NULL;
        }
    }
    if (unsupported) {
        detail(out, a, 501,
               "imgsearch does not do %s (it serves CLIP only): turn the task off in immich's "
               "administration settings (Machine Learning), or list immich's own machine-learning "
               "service after imgsearch in its URLs",
               !strcmp(unsupported, "ocr") ? "OCR" : "facial recognition");
        return false;
    }
    if (n_clip != 1) {
        detail(out, a, 422, "Invalid request format: one clip entry per request "
                            "(\"visual\" or \"textual\"), not both");
        return false;
    }
    return true;
}

static const struct server_mp_field *form_field(const struct server_mp_form *f, const char *name,
                                                size_t *count)
{
    const struct server_mp_field *found = NULL;
    *count = 0;
    for (size_t i = 0; i < f->n_fields; i++) {
        if (strcmp(f->fields[i].info.name, name) == 0) {
            if (!found)
                found = &f->fields[i];
            (*count)++;
        }
    }
    return found;
}

/* ---- POST /predict ------------------------------------------------------------------------ */

void server__immich_predict(const struct server_backend *be, const struct server_mp_form *f,
                            struct server_arena *a, struct server__compat_reply *out)
{
    memset(out, 0, sizeof(*out));
    size_t n_entries, n_image, n_text;
    const struct server_mp_field *fe = form_field(f, "entries", &n_entries);
    const struct server_mp_field *fi = form_field(f, "image", &n_image);
    const struct server_mp_field *ft = form_field(f, "text", &n_text);
    if (!fe) {
        detail(out, a, 422, "Invalid request format: the form field \"entries\" is missing");
        return;
    }
    if (n_entries > 1 || n_image > 1 || n_text > 1) {
        detail(out, a, 422, "Invalid request format: \"entries\", \"image\" and \"text\" may "
                            "each appear once");
        return;
    }
    json_error_t jerr;
    json_t *root = json_loadb(fe->data.data ? fe->data.data : "", fe->data.len,
                              JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        detail(out, a, 422, "Invalid request format: entries: %s (line %d, column %d)",
               jerr.text, jerr.line, jerr.column);
        return;
    }
    struct clip_entry ce = {0};
    if (!parse_entries(root, &ce, out, a))
        goto out;
    if (!fi && !ft) {
        detail(out, a, 400, "Either image or text must be provided");
        goto out;
    }
    bool visual = strcmp(ce.type, "visual") == 0;
    if (visual && !fi) {
        detail(out, a, 400, "clip.visual encodes an image: send it as the \"image\" file");
        goto out;
    }
    if (!visual && !ft) {
        detail(out, a, 400, "clip.textual encodes a text: send it as the \"text\" field");
        goto out;
    }
    if (ce.options) {
        const char *key;
        json_t *v;
        json_object_foreach(ce.options, key, v)
        {
            size_t used = strlen(out->ignored);
            snprintf(out->ignored + used, sizeof(out->ignored) - used, "%s%s", used ? ", " : "",
                     key);
        }
    }
    struct server_embedding emb = {0};
    struct ims_error err = {{0}};
    enum ims_status st;
    if (visual) {
        if (fi->data.len == 0) {
            detail(out, a, 400, "the \"image\" file is empty");
            goto out;
        }
        st = be->embed_image(be->self, ce.model, (const unsigned char *)fi->data.data,
                             fi->data.len, a, &emb, &err);
    } else {
        const char *text = ft->data.data ? ft->data.data : "";
        if (ft->data.len > SERVER_TEXT_MAX || memchr(text, '\0', ft->data.len)) {
            detail(out, a, 400, "the text must be at most %d bytes of UTF-8 without NUL",
                   SERVER_TEXT_MAX);
            goto out;
        }
        char *t = server_arena_memdup(a, text, ft->data.len + 1);
        if (!t) {
            detail(out, a, 503, "out of memory");
            goto out;
        }
        t[ft->data.len] = '\0';
        st = be->embed_text(be->self, ce.model, t, a, &emb, &err);
    }
    if (st != IMS_OK) {
        backend_error(out, a, st, &err);
        goto out;
    }
    /* {"clip": "<array>", "imageHeight": H, "imageWidth": W}, written by hand:
     * the array string must not be re-escaped or reformatted */
    struct ims_buf b;
    ims_buf_init(&b, 64u << 10);
    st = ims_buf_append(&b, "{\"clip\":\"", 9);
    if (st == IMS_OK)
        st = server__floats_json(emb.v, emb.dim, &b);
    if (st == IMS_OK && visual)
        st = ims_buf_printf(&b, "\",\"imageHeight\":%d,\"imageWidth\":%d}", emb.height,
                            emb.width);
    else if (st == IMS_OK)
        st = ims_buf_append(&b, "\"}", 2);
    if (st != IMS_OK)
        detail(out, a, 503, "out of memory");
    else
        server__compat_text(out, a, 200, "application/json", b.data, b.len);
    ims_buf_fini(&b);
out:
    json_decref(root);
}
