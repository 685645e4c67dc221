/* SPDX-License-Identifier: MIT */
/*
 * query.c: turns the three spellings of a search request into one
 * struct server_query, validating every field against the HTTP contract.
 *
 *   POST /api/v1/search  application/json   {"terms": [...], "k", "offset",
 *                                             "min_score", "order"}, or the
 *                                             shorthand {"text"|"image_url"|
 *                                             "image_id"|"vector": ...}
 *   GET  /api/v1/search  ?q=&image_id=&k=&offset=&min_score=&order=
 *   POST /api/v1/search  multipart/form-data (fields: see server_int.h)
 *
 * Validation is strict on purpose (unknown members are rejected rather than
 * ignored) so that a typo like "wieght" is a 400 naming the member instead of
 * a silently different search. Every message names the offending field.
 * Everything the query points to is allocated from the request arena, so a
 * failed parse leaves nothing to free.
 */
#include "server_int.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- scalars ------------------------------------------------------------------- */

/* Decimal integers are written one way only: digits, no sign (a minus sign
 * only where negatives are allowed), no leading zero, no spaces, so that
 * "+1", "01" and " 1" are refused rather than read as 1 (two spellings of
 * one id would dodge caches and confuse logs). */
enum ims_status server__parse_int(const char *s, const char *what, long long lo, long long hi,
                                  long long *out, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!s || !*s, err, IMS_ERR_INVALID, "%s: empty value", what);
    const char *d = s[0] == '-' && lo < 0 ? s + 1 : s;
    size_t nd = strspn(d, "0123456789");
    IMS_RETURN_ERROR_IF(nd == 0 || d[nd] != '\0' || (d[0] == '0' && nd > 1), err,
                        IMS_ERR_INVALID,
                        "%s: not an integer (decimal digits only, no sign, spaces or leading "
                        "zeros)",
                        what);
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    IMS_RETURN_ERROR_IF(errno != 0 || *end != '\0' || end == s, err, IMS_ERR_INVALID,
                        "%s: not an integer in %lld..%lld", what, lo, hi);
    IMS_RETURN_ERROR_IF(v < lo || v > hi, err, IMS_ERR_INVALID, "%s: must be in %lld..%lld",
                        what, lo, hi);
    *out = v;
    return IMS_OK;
}

enum ims_status server__parse_float(const char *s, const char *what, double lo, double hi,
                                    double *out, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!s || !*s, err, IMS_ERR_INVALID, "%s: empty value", what);
    /* decimal notation only: no leading space, no hex, no inf/nan spellings */
    IMS_RETURN_ERROR_IF(strspn(s, "0123456789+-.eE") != strlen(s), err, IMS_ERR_INVALID,
                        "%s: not a decimal number", what);
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    IMS_RETURN_ERROR_IF(errno != 0 || *end != '\0' || end == s || !isfinite(v), err,
                        IMS_ERR_INVALID, "%s: not a finite number", what);
    IMS_RETURN_ERROR_IF(v < lo || v > hi, err, IMS_ERR_INVALID, "%s: must be in %g..%g", what,
                        lo, hi);
    *out = v;
    return IMS_OK;
}

static void query_defaults(struct server_query *q)
{
    memset(q, 0, sizeof(*q));
    q->k = 10;
    q->offset = 0;
    q->order = SERVER_ORDER_SCORE;
}

static enum ims_status check_text(const char *s, size_t len, const char *what,
                                  struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(len == 0, err, IMS_ERR_INVALID, "%s: empty text", what);
    IMS_RETURN_ERROR_IF(len > SERVER_TEXT_MAX, err, IMS_ERR_INVALID,
                        "%s: longer than %d bytes", what, SERVER_TEXT_MAX);
    IMS_RETURN_ERROR_IF(memchr(s, '\0', len) != NULL, err, IMS_ERR_INVALID,
                        "%s: contains a NUL byte", what);
    return IMS_OK;
}

static enum ims_status check_url(const char *s, size_t len, const char *what,
                                 struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(len == 0 || len > SERVER_URL_MAX, err, IMS_ERR_INVALID,
                        "%s: must be 1..%d bytes", what, SERVER_URL_MAX);
    IMS_RETURN_ERROR_IF(memchr(s, '\0', len) != NULL, err, IMS_ERR_INVALID,
                        "%s: contains a NUL byte", what);
    IMS_RETURN_ERROR_IF(strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0, err,
                        IMS_ERR_INVALID, "%s: only http:// and https:// URLs are accepted",
                        what);
    return IMS_OK;
}

static enum ims_status parse_order(const char *s, enum server_order *out, struct ims_error *err)
{
    if (strcmp(s, "score") == 0)
        *out = SERVER_ORDER_SCORE;
    else if (strcmp(s, "date") == 0)
        *out = SERVER_ORDER_DATE;
    else
        return ims_error_set(err, IMS_ERR_INVALID, "order: must be \"score\" or \"date\"");
    return IMS_OK;
}

/* ---- JSON ------------------------------------------------------------------------ */

static enum ims_status json_number(json_t *v, const char *what, double *out,
                                   struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!json_is_number(v), err, IMS_ERR_INVALID, "%s: must be a number", what);
    double d = json_number_value(v);
    IMS_RETURN_ERROR_IF(!isfinite(d), err, IMS_ERR_INVALID, "%s: must be finite", what);
    *out = d;
    return IMS_OK;
}

static enum ims_status json_int_in(json_t *v, const char *what, long long lo, long long hi,
                                   long long *out, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!json_is_integer(v), err, IMS_ERR_INVALID, "%s: must be an integer",
                        what);
    long long x = json_integer_value(v);
    IMS_RETURN_ERROR_IF(x < lo || x > hi, err, IMS_ERR_INVALID, "%s: must be in %lld..%lld",
                        what, lo, hi);
    *out = x;
    return IMS_OK;
}

/* One term object (or the whole body, for the shorthand). `allow` lists the
 * extra member names tolerated (the top-level options for the shorthand). */
static enum ims_status json_term(json_t *obj, const char *where, bool top, struct server_arena *a,
                                 struct server_term *t, struct ims_error *err)
{
    static const char *const top_keys[] = {"k", "offset", "min_score", "order"};
    memset(t, 0, sizeof(*t));
    t->weight = 1.0f;
    int n_kinds = 0;
    const char *key;
    json_t *v;
    char what[96];
    json_object_foreach(obj, key, v)
    {
        snprintf(what, sizeof(what), "%s.%s", where, key);
        enum ims_status st = IMS_OK;
        if (strcmp(key, "weight") == 0) {
            double w;
            st = json_number(v, what, &w, err);
            if (st == IMS_OK && fabs(w) > 1e6)
                st = ims_error_set(err, IMS_ERR_INVALID, "%s: must be in -1e6..1e6", what);
            t->weight = (float)w;
        } else if (strcmp(key, "text") == 0) {
            n_kinds++;
            t->kind = SERVER_TERM_TEXT;
            if (!json_is_string(v))
                return ims_error_set(err, IMS_ERR_INVALID, "%s: must be a string", what);
            st = check_text(json_string_value(v), json_string_length(v), what, err);
            if (st == IMS_OK && !(t->text = server_arena_strdup(a, json_string_value(v))))
                st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        } else if (strcmp(key, "image_url") == 0) {
            n_kinds++;
            t->kind = SERVER_TERM_IMAGE_URL;
            if (!json_is_string(v))
                return ims_error_set(err, IMS_ERR_INVALID, "%s: must be a string", what);
            st = check_url(json_string_value(v), json_string_length(v), what, err);
            if (st == IMS_OK && !(t->url = server_arena_strdup(a, json_string_value(v))))
                st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        } else if (strcmp(key, "image_id") == 0) {
            n_kinds++;
            t->kind = SERVER_TERM_IMAGE_ID;
            long long id;
            st = json_int_in(v, what, 1, INT64_MAX, &id, err);
            t->image_id = id;
        } else if (strcmp(key, "vector") == 0) {
            n_kinds++;
            t->kind = SERVER_TERM_VECTOR;
            IMS_RETURN_ERROR_IF(!json_is_array(v), err, IMS_ERR_INVALID,
                                "%s: must be an array of numbers", what);
            size_t n = json_array_size(v);
            IMS_RETURN_ERROR_IF(n == 0 || n > SERVER_VECTOR_MAX, err, IMS_ERR_INVALID,
                                "%s: must have 1..%d numbers", what, SERVER_VECTOR_MAX);
            float *vec = server_arena_alloc(a, n * sizeof(float));
            IMS_RETURN_ERROR_IF(!vec, err, IMS_ERR_NOMEM, "out of memory");
            for (size_t i = 0; i < n && st == IMS_OK; i++) {
                double d;
                char w2[128];
                snprintf(w2, sizeof(w2), "%s[%zu]", what, i);
                st = json_number(json_array_get(v, i), w2, &d, err);
                if (st == IMS_OK && fabs(d) > 3.0e38)
                    st = ims_error_set(err, IMS_ERR_INVALID, "%s: out of float range", w2);
                vec[i] = (float)d;
            }
            t->vector = vec;
            t->n_vector = n;
        } else {
            bool ok = false;
            for (size_t i = 0; top && i < IMS_ARRAY_LEN(top_keys); i++)
                ok = ok || strcmp(key, top_keys[i]) == 0;
            if (!ok)
                return ims_error_set(err, IMS_ERR_INVALID, "%s: unknown member", what);
        }
        if (st != IMS_OK)
            return st;
    }
    IMS_RETURN_ERROR_IF(n_kinds != 1, err, IMS_ERR_INVALID,
                        "%s: needs exactly one of \"text\", \"image_url\", \"image_id\", "
                        "\"vector\"",
                        where);
    return IMS_OK;
}

enum ims_status server__query_parse_json(const char *body, size_t len, struct server_arena *a,
                                         struct server_query *q, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    struct server_term *terms = NULL;
    query_defaults(q);
    if (!root) {
        st = ims_error_set(err, IMS_ERR_INVALID, "invalid JSON at line %d, column %d: %s",
                           jerr.line, jerr.column, jerr.text);
        goto out;
    }
    if (!json_is_object(root)) {
        st = ims_error_set(err, IMS_ERR_INVALID, "the body must be a JSON object");
        goto out;
    }
    json_t *jterms = json_object_get(root, "terms");
    if (jterms) {
        if (!json_is_array(jterms)) {
            st = ims_error_set(err, IMS_ERR_INVALID, "terms: must be an array");
            goto out;
        }
        size_t n = json_array_size(jterms);
        if (n == 0 || n > SERVER_TERMS_MAX) {
            st = ims_error_set(err, IMS_ERR_INVALID, "terms: must have 1..%d entries",
                               SERVER_TERMS_MAX);
            goto out;
        }
        terms = server_arena_alloc(a, n * sizeof(*terms));
        if (!terms) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *jt = json_array_get(jterms, i);
            char where[32];
            snprintf(where, sizeof(where), "terms[%zu]", i);
            if (!json_is_object(jt)) {
                st = ims_error_set(err, IMS_ERR_INVALID, "%s: must be an object", where);
                goto out;
            }
            st = json_term(jt, where, false, a, &terms[i], err);
            if (st != IMS_OK)
                goto out;
        }
        q->n_terms = n;
        const char *key;
        json_t *v;
        json_object_foreach(root, key, v)
        {
            if (strcmp(key, "terms") && strcmp(key, "k") && strcmp(key, "offset") &&
                strcmp(key, "min_score") && strcmp(key, "order")) {
                st = ims_error_set(err, IMS_ERR_INVALID, "%s: unknown member", key);
                goto out;
            }
        }
    } else {
        terms = server_arena_alloc(a, sizeof(*terms));
        if (!terms) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
            goto out;
        }
        st = json_term(root, "body", true, a, &terms[0], err);
        if (st != IMS_OK)
            goto out;
        q->n_terms = 1;
    }
    q->terms = terms;

    long long x;
    json_t *v;
    if ((v = json_object_get(root, "k"))) {
        if ((st = json_int_in(v, "k", 1, SERVER_K_MAX, &x, err)) != IMS_OK)
            goto out;
        q->k = (int)x;
    }
    if ((v = json_object_get(root, "offset"))) {
        if ((st = json_int_in(v, "offset", 0, SERVER_OFFSET_MAX, &x, err)) != IMS_OK)
            goto out;
        q->offset = (int)x;
    }
    if ((v = json_object_get(root, "min_score"))) {
        double d;
        if ((st = json_number(v, "min_score", &d, err)) != IMS_OK)
            goto out;
        if (d < -1.0 || d > 1.0) {
            st = ims_error_set(err, IMS_ERR_INVALID, "min_score: must be in -1..1");
            goto out;
        }
        q->has_min_score = true;
        q->min_score = (float)d;
    }
    if ((v = json_object_get(root, "order"))) {
        if (!json_is_string(v)) {
            st = ims_error_set(err, IMS_ERR_INVALID, "order: must be \"score\" or \"date\"");
            goto out;
        }
        if ((st = parse_order(json_string_value(v), &q->order, err)) != IMS_OK)
            goto out;
    }
out:
    json_decref(root);
    return st;
}

/* ---- shared options (query string and multipart) ------------------------------------ */

static enum ims_status apply_options(const char *k, const char *offset, const char *min_score,
                                     const char *order, struct server_query *q,
                                     struct ims_error *err)
{
    enum ims_status st;
    long long x;
    double d;
    if (k) {
        if ((st = server__parse_int(k, "k", 1, SERVER_K_MAX, &x, err)) != IMS_OK)
            return st;
        q->k = (int)x;
    }
    if (offset) {
        if ((st = server__parse_int(offset, "offset", 0, SERVER_OFFSET_MAX, &x, err)) != IMS_OK)
            return st;
        q->offset = (int)x;
    }
    if (min_score) {
        if ((st = server__parse_float(min_score, "min_score", -1.0, 1.0, &d, err)) != IMS_OK)
            return st;
        q->has_min_score = true;
        q->min_score = (float)d;
    }
    if (order && (st = parse_order(order, &q->order, err)) != IMS_OK)
        return st;
    return IMS_OK;
}

enum ims_status server__query_from_args(const struct server_query_args *args,
                                        struct server_arena *a, struct server_query *q,
                                        struct ims_error *err)
{
    enum ims_status st;
    query_defaults(q);
    struct server_term *terms = server_arena_alloc(a, 2 * sizeof(*terms));
    IMS_RETURN_ERROR_IF(!terms, err, IMS_ERR_NOMEM, "out of memory");
    memset(terms, 0, 2 * sizeof(*terms));
    size_t n = 0;
    if (args->q) {
        if ((st = check_text(args->q, strlen(args->q), "q", err)) != IMS_OK)
            return st;
        terms[n].kind = SERVER_TERM_TEXT;
        terms[n].weight = 1.0f;
        terms[n].text = args->q;
        n++;
    }
    if (args->image_id) {
        long long id;
        if ((st = server__parse_int(args->image_id, "image_id", 1, INT64_MAX, &id, err)) != IMS_OK)
            return st;
        terms[n].kind = SERVER_TERM_IMAGE_ID;
        terms[n].weight = 1.0f;
        terms[n].image_id = id;
        n++;
    }
    IMS_RETURN_ERROR_IF(n == 0, err, IMS_ERR_INVALID, "give q (text) and/or image_id");
    q->terms = terms;
    q->n_terms = n;
    return apply_options(args->k, args->offset, args->min_score, args->order, q, err);
}

/* ---- multipart ------------------------------------------------------------------------ */

/* The NUL-terminated value of the last non-file field `name`, or NULL. */
static const char *form_value(const struct server_mp_form *f, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < f->n_fields; i++) {
        const struct server_mp_field *fld = &f->fields[i];
        if (strcmp(fld->info.name, name) == 0)
            v = fld->data.data ? fld->data.data : "";
    }
    return v;
}

static enum ims_status form_weight(const struct server_mp_form *f, const char *name, double def,
                                   double *out, struct ims_error *err)
{
    const char *v = form_value(f, name);
    *out = def;
    if (!v)
        return IMS_OK;
    return server__parse_float(v, name, -1e6, 1e6, out, err);
}

enum ims_status server__query_from_form(const struct server_mp_form *f, struct server_arena *a,
                                        struct server_query *q, struct ims_error *err)
{
    static const char *const known[] = {"file",           "text",        "negative",
                                        "image_id",       "image_url",   "file_weight",
                                        "text_weight",    "negative_weight",
                                        "image_id_weight", "image_url_weight",
                                        "k",              "offset",      "min_score",
                                        "order"};
    enum ims_status st;
    query_defaults(q);
    /* Every field: known, no NUL in a value (a C string would end there:
     * "k=5\0junk" must not read as 5), and only the terms repeat. */
    for (size_t i = 0; i < f->n_fields; i++) {
        const struct server_mp_field *fld = &f->fields[i];
        const char *name = fld->info.name;
        bool is_known = false;
        for (size_t j = 0; j < IMS_ARRAY_LEN(known); j++)
            is_known = is_known || strcmp(name, known[j]) == 0;
        IMS_RETURN_ERROR_IF(!is_known, err, IMS_ERR_INVALID, "unknown form field \"%s\"", name);
        if (!strcmp(name, "file"))
            continue;
        IMS_RETURN_ERROR_IF(fld->data.len && memchr(fld->data.data, '\0', fld->data.len), err,
                            IMS_ERR_INVALID, "form field \"%s\": contains a NUL byte", name);
        bool repeats = !strcmp(name, "text") || !strcmp(name, "negative") ||
                       !strcmp(name, "image_id") || !strcmp(name, "image_url");
        for (size_t j = 0; !repeats && j < i; j++)
            IMS_RETURN_ERROR_IF(!strcmp(f->fields[j].info.name, name), err, IMS_ERR_INVALID,
                                "form field \"%s\" given more than once", name);
    }
    double w_file, w_text, w_neg, w_id, w_url;
    if ((st = form_weight(f, "file_weight", 1.0, &w_file, err)) != IMS_OK ||
        (st = form_weight(f, "text_weight", 1.0, &w_text, err)) != IMS_OK ||
        (st = form_weight(f, "negative_weight", 0.5, &w_neg, err)) != IMS_OK ||
        (st = form_weight(f, "image_id_weight", 1.0, &w_id, err)) != IMS_OK ||
        (st = form_weight(f, "image_url_weight", 1.0, &w_url, err)) != IMS_OK)
        return st;
    struct server_term *terms = server_arena_alloc(a, SERVER_TERMS_MAX * sizeof(*terms));
    IMS_RETURN_ERROR_IF(!terms, err, IMS_ERR_NOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < f->n_fields; i++) {
        const struct server_mp_field *fld = &f->fields[i];
        const char *name = fld->info.name;
        bool is_known = false;
        for (size_t j = 0; j < IMS_ARRAY_LEN(known); j++)
            is_known = is_known || strcmp(name, known[j]) == 0;
        IMS_RETURN_ERROR_IF(!is_known, err, IMS_ERR_INVALID, "unknown form field \"%s\"", name);
        bool is_term = !strcmp(name, "file") || !strcmp(name, "text") ||
                       !strcmp(name, "negative") || !strcmp(name, "image_id") ||
                       !strcmp(name, "image_url");
        if (!is_term)
            continue;
        const char *val = fld->data.data ? fld->data.data : "";
        size_t len = fld->data.len;
        /* An empty text field (a blank box in a browser form) is no term. */
        if ((!strcmp(name, "text") || !strcmp(name, "negative") || !strcmp(name, "image_url") ||
             !strcmp(name, "image_id")) &&
            len == 0)
            continue;
        IMS_RETURN_ERROR_IF(n >= SERVER_TERMS_MAX, err, IMS_ERR_INVALID,
                            "more than %d search terms", SERVER_TERMS_MAX);
        struct server_term *t = &terms[n];
        memset(t, 0, sizeof(*t));
        if (!strcmp(name, "file")) {
            IMS_RETURN_ERROR_IF(len == 0, err, IMS_ERR_INVALID, "file \"%s\": empty file",
                                fld->info.filename);
            t->kind = SERVER_TERM_IMAGE;
            t->weight = (float)w_file;
            t->bytes = (const unsigned char *)val;
            t->n_bytes = len;
            t->filename = fld->info.has_filename ? fld->info.filename : NULL;
        } else if (!strcmp(name, "text") || !strcmp(name, "negative")) {
            if ((st = check_text(val, len, name, err)) != IMS_OK)
                return st;
            t->kind = SERVER_TERM_TEXT;
            t->text = val;
            t->weight = !strcmp(name, "text") ? (float)w_text : -(float)fabs(w_neg);
        } else if (!strcmp(name, "image_url")) {
            if ((st = check_url(val, len, name, err)) != IMS_OK)
                return st;
            t->kind = SERVER_TERM_IMAGE_URL;
            t->url = val;
            t->weight = (float)w_url;
        } else {
            long long id;
            if ((st = server__parse_int(val, "image_id", 1, INT64_MAX, &id, err)) != IMS_OK)
                return st;
            t->kind = SERVER_TERM_IMAGE_ID;
            t->image_id = id;
            t->weight = (float)w_id;
        }
        n++;
    }
    IMS_RETURN_ERROR_IF(n == 0, err, IMS_ERR_INVALID,
                        "the form has no search term (file, text, image_id or image_url)");
    q->terms = terms;
    q->n_terms = n;
    return apply_options(form_value(f, "k"), form_value(f, "offset"),
                         form_value(f, "min_score"), form_value(f, "order"), q, err);
}
