/* SPDX-License-Identifier: MIT */
/*
 * query.c: turns the three spellings of a search request into one
 * struct server_query, validating every field against the HTTP contract.
 *
 *   POST /api/v1/search  application/json   {"terms": [...], "k", "offset",
 *                                             "min_score", "order", "filter"}, or the
 *                                             shorthand {"text"|"image_url"|
 *                                             "image_id"|"vector": ...}
 *   GET  /api/v1/search  ?q=&image_id=&k=&offset=&min_score=&order= + filters
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
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

static enum ims_status json_filter(json_t *jf, struct server_arena *a, struct server_query *q,
                                   struct ims_error *err);

/* A string member, checked by `check`, copied into the request's arena. */
static enum ims_status json_string_in(json_t *v, const char *what,
                                      enum ims_status (*check)(const char *s, size_t len,
                                                               const char *what,
                                                               struct ims_error *err),
                                      struct server_arena *a, const char **out,
                                      struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!json_is_string(v), err, IMS_ERR_INVALID, "%s: must be a string", what);
    enum ims_status st = check(json_string_value(v), json_string_length(v), what, err);
    if (st == IMS_OK && !(*out = server_arena_strdup(a, json_string_value(v))))
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    return st;
}

/* ---- the integer options: "k", "offset" and the index knobs (issue 11) ------------- */

/* One table for every spelling (JSON member, query parameter, form field):
 * name, bounds, and the int of struct server_query it fills. */
static const struct int_option {
    const char *name;
    long long lo, hi;
    size_t at; /* offsetof(struct server_query, <int member>) */
} int_options[] = {
    {"k", 1, SERVER_K_MAX, offsetof(struct server_query, k)},
    {"offset", 0, SERVER_OFFSET_MAX, offsetof(struct server_query, offset)},
    {"ef", 1, SERVER_EF_MAX, offsetof(struct server_query, ef)},
    {"nprobe", 1, SERVER_NPROBE_MAX, offsetof(struct server_query, nprobe)},
    {"rerank", 1, SERVER_RERANK_MAX, offsetof(struct server_query, rerank)},
};
#define N_INT_OPTIONS (sizeof(int_options) / sizeof(int_options[0]))

static int int_option_key(const char *key)
{
    for (size_t i = 0; i < N_INT_OPTIONS; i++)
        if (!strcmp(key, int_options[i].name))
            return 1;
    return 0;
}

/* The top-level members of a JSON search besides its terms. */
static int option_key(const char *key)
{
    return int_option_key(key) || !strcmp(key, "min_score") || !strcmp(key, "order") ||
           !strcmp(key, "filter") || !strcmp(key, "dedup");
}

static int *int_option_in(struct server_query *q, size_t i)
{
    return (int *)(void *)((char *)q + int_options[i].at);
}

static enum ims_status json_int_options(json_t *root, struct server_query *q,
                                        struct ims_error *err)
{
    for (size_t i = 0; i < N_INT_OPTIONS; i++) {
        const struct int_option *o = &int_options[i];
        json_t *v = json_object_get(root, o->name);
        long long x;
        enum ims_status st;
        if (v && (st = json_int_in(v, o->name, o->lo, o->hi, &x, err)) != IMS_OK)
            return st;
        if (v)
            *int_option_in(q, i) = (int)x;
    }
    return IMS_OK;
}

/* text[i]: the value given for int_options[i], NULL if absent */
static enum ims_status text_int_options(const char *const text[N_INT_OPTIONS],
                                        struct server_query *q, struct ims_error *err)
{
    for (size_t i = 0; i < N_INT_OPTIONS; i++) {
        const struct int_option *o = &int_options[i];
        long long x;
        enum ims_status st;
        if (text[i] && (st = server__parse_int(text[i], o->name, o->lo, o->hi, &x, err)) != IMS_OK)
            return st;
        if (text[i])
            *int_option_in(q, i) = (int)x;
    }
    return IMS_OK;
}

/* One term object (or the whole body, for the shorthand). `allow` lists the
 * extra member names tolerated (the top-level options for the shorthand). */
static enum ims_status json_term(json_t *obj, const char *where, bool top, struct server_arena *a,
                                 struct server_term *t, struct ims_error *err)
{
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
            st = json_string_in(v, what, check_text, a, &t->text, err);
        } else if (strcmp(key, "image_url") == 0) {
            n_kinds++;
            t->kind = SERVER_TERM_IMAGE_URL;
            st = json_string_in(v, what, check_url, a, &t->url, err);
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
            if (!top || !option_key(key))
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
            if (strcmp(key, "terms") && !option_key(key)) {
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

    json_t *v;
    if ((st = json_int_options(root, q, err)) != IMS_OK)
        goto out;
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
    if ((v = json_object_get(root, "filter")) && !json_is_null(v) &&
        (st = json_filter(v, a, q, err)) != IMS_OK)
        goto out;
    if ((v = json_object_get(root, "dedup")) && !json_is_null(v)) {
        double d;
        if ((st = json_number(v, "dedup", &d, err)) != IMS_OK)
            goto out;
        if (!(d > 0.0 && d <= 1.0)) {
            st = ims_error_set(err, IMS_ERR_INVALID, "dedup: must be in (0, 1]");
            goto out;
        }
        q->has_dedup = true;
        q->dedup = (float)d;
    }
out:
    json_decref(root);
    return st;
}

/* ---- filters (issue 10) -------------------------------------------------------------- */

/* "YYYY-MM-DD HH:MM:SS" (or 'T' between date and time) as UTC unix seconds;
 * -1 for anything else (bad digits, month 13, February 30, 24:00:00). Days
 * from the civil date by the proleptic Gregorian count (era of 400 years). */
static int civil_time(const char *s, int64_t *out)
{
    static const char shape[] = "dddd-dd-dd dd:dd:dd";
    for (size_t i = 0; i < sizeof(shape) - 1; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9')
                            : !(s[i] == shape[i] || (i == 10 && s[i] == 'T')))
            return -1;
    }
    if (s[sizeof(shape) - 1])
        return -1;
#define NUM2(i) ((s[i] - '0') * 10 + (s[(i) + 1] - '0'))
    int64_t y = NUM2(0) * 100 + NUM2(2);
    int mo = NUM2(5), d = NUM2(8), h = NUM2(11), mi = NUM2(14), se = NUM2(17);
#undef NUM2
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
        h > 23 || mi > 59 || se > 59)
        return -1;
    int64_t yy = y - (mo <= 2);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    *out = days * 86400 + h * 3600 + mi * 60 + se;
    return 0;
}

/* Unix seconds, YYYY-MM-DD (UTC; a "to" bound takes the day's last second) or
 * YYYY-MM-DDTHH:MM:SS[Z]. */
static enum ims_status parse_time(const char *v, const char *what, int end_of_day, int64_t *out,
                                  struct ims_error *err)
{
    char *end;
    errno = 0;
    long long x = v && *v ? strtoll(v, &end, 10) : 0;
    if (v && *v && !*end && !errno) {
        *out = x;
        return IMS_OK;
    }
    char buf[32];
    size_t n = v ? strlen(v) : 0;
    if (n == 10)
        snprintf(buf, sizeof(buf), "%s %s", v, end_of_day ? "23:59:59" : "00:00:00");
    else if (n == 19 || (n == 20 && v[19] == 'Z'))
        memcpy(buf, v, 19), buf[19] = 0;
    else
        buf[0] = 0;
    IMS_RETURN_ERROR_IF(!buf[0] || civil_time(buf, out) != 0, err,
                        IMS_ERR_INVALID,
                        "%s: not a time (unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)", what);
    return IMS_OK;
}

static struct server_filter *filter_new(struct server_arena *a, struct server_query *q)
{
    if (q->filter)
        return (struct server_filter *)q->filter;
    struct server_filter *f = server_arena_alloc(a, sizeof(*f));
    if (f) {
        memset(f, 0, sizeof(*f));
        q->filter = f;
    }
    return f;
}

/* Appends one format word (checked) to the filter's comma list. */
static enum ims_status add_format(struct server_arena *a, struct server_filter *f, const char *w,
                                  size_t len, struct ims_error *err)
{
    char word[16];
    const char *canon;
    IMS_RETURN_ERROR_IF(len == 0 || len >= sizeof(word), err, IMS_ERR_INVALID,
                        "format: unknown format '%.*s' (known: " IMS_FORMAT_WORDS ")",
                        (int)(len > 32 ? 32 : len), w);
    memcpy(word, w, len);
    word[len] = 0;
    IMS_RETURN_ERROR_IF(!(canon = ims_format_word(word)), err, IMS_ERR_INVALID,
                        "format: unknown format '%s' (known: " IMS_FORMAT_WORDS ")", word);
    size_t old = f->formats ? strlen(f->formats) : 0;
    IMS_RETURN_ERROR_IF(old > 400, err, IMS_ERR_INVALID, "format: too many formats");
    char *s = server_arena_alloc(a, old + 16);
    IMS_RETURN_ERROR_IF(!s, err, IMS_ERR_NOMEM, "out of memory");
    snprintf(s, old + 16, "%s%s%s", old ? f->formats : "", old ? "," : "", canon);
    f->formats = s;
    return IMS_OK;
}

static enum ims_status set_orientation(struct server_filter *f, const char *v,
                                       struct ims_error *err)
{
    if (!strcmp(v, "landscape"))
        f->orientation = SERVER_ORIENT_LANDSCAPE;
    else if (!strcmp(v, "portrait"))
        f->orientation = SERVER_ORIENT_PORTRAIT;
    else if (!strcmp(v, "square"))
        f->orientation = SERVER_ORIENT_SQUARE;
    else
        return ims_error_set(err, IMS_ERR_INVALID,
                             "orientation: must be \"landscape\", \"portrait\" or \"square\"");
    return IMS_OK;
}

/* A time member of {"from": T, "to": T}: a number or a date string. */
static enum ims_status json_time(json_t *v, const char *what, int end_of_day, int64_t *out,
                                 struct ims_error *err)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return IMS_OK;
    }
    if (json_is_string(v))
        return parse_time(json_string_value(v), what, end_of_day, out, err);
    return ims_error_set(err, IMS_ERR_INVALID, "%s: must be unix seconds or a date string", what);
}

enum ims_status server__json_tags(json_t *v, const char *what, struct server_arena *a,
                                  const char *const **out, size_t *n_out, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!json_is_array(v) || json_array_size(v) > SERVER_TAGS_MAX, err,
                        IMS_ERR_INVALID, "%s: must be a list of up to %d tags", what,
                        SERVER_TAGS_MAX);
    size_t n = json_array_size(v);
    const char **t = server_arena_alloc(a, (n ? n : 1) * sizeof(*t));
    IMS_RETURN_ERROR_IF(!t, err, IMS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *w = json_array_get(v, i);
        IMS_RETURN_ERROR_IF(!json_is_string(w) || json_string_length(w) > 256 ||
                                strlen(json_string_value(w)) != json_string_length(w),
                            err, IMS_ERR_INVALID, "%s[%zu]: must be a tag (a string)", what, i);
        t[i] = server_arena_strdup(a, json_string_value(w));
        IMS_RETURN_ERROR_IF(!t[i], err, IMS_ERR_NOMEM, "out of memory");
    }
    *out = t;
    *n_out = n;
    return IMS_OK;
}

static enum ims_status json_filter(json_t *jf, struct server_arena *a, struct server_query *q,
                                   struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!json_is_object(jf), err, IMS_ERR_INVALID, "filter: must be an object");
    struct server_filter *f = filter_new(a, q);
    IMS_RETURN_ERROR_IF(!f, err, IMS_ERR_NOMEM, "out of memory");
    enum ims_status st;
    const char *key;
    json_t *v;
    json_object_foreach(jf, key, v)
    {
        char what[64];
        snprintf(what, sizeof(what), "filter.%s", key);
        if (!strcmp(key, "added") || !strcmp(key, "taken")) {
            int added = key[0] == 'a';
            IMS_RETURN_ERROR_IF(!json_is_object(v), err, IMS_ERR_INVALID,
                                "%s: must be {\"from\": T, \"to\": T}", what);
            const char *k2;
            json_t *t;
            json_object_foreach(v, k2, t)
            {
                char w2[80];
                snprintf(w2, sizeof(w2), "%s.%s", what, k2);
                int from = !strcmp(k2, "from");
                IMS_RETURN_ERROR_IF(!from && strcmp(k2, "to"), err, IMS_ERR_INVALID,
                                    "%s: unknown member (from, to)", w2);
                int64_t *dst = added ? (from ? &f->added_from : &f->added_to)
                                     : (from ? &f->taken_from : &f->taken_to);
                if (json_is_null(t))
                    continue;
                if ((st = json_time(t, w2, !from, dst, err)) != IMS_OK)
                    return st;
                if (added)
                    *(from ? &f->has_added_from : &f->has_added_to) = true;
                else
                    *(from ? &f->has_taken_from : &f->has_taken_to) = true;
            }
        } else if (!strcmp(key, "min_width") || !strcmp(key, "min_height")) {
            long long x;
            if ((st = json_int_in(v, what, 0, 1 << 30, &x, err)) != IMS_OK)
                return st;
            *(key[4] == 'w' ? &f->min_width : &f->min_height) = (uint32_t)x;
        } else if (!strcmp(key, "format")) {
            IMS_RETURN_ERROR_IF(!json_is_array(v) || json_array_size(v) > 16, err,
                                IMS_ERR_INVALID, "%s: must be a list of up to 16 format words",
                                what);
            for (size_t i = 0; i < json_array_size(v); i++) {
                json_t *w = json_array_get(v, i);
                IMS_RETURN_ERROR_IF(!json_is_string(w), err, IMS_ERR_INVALID,
                                    "%s[%zu]: must be a string", what, i);
                if ((st = add_format(a, f, json_string_value(w), json_string_length(w), err)) !=
                    IMS_OK)
                    return st;
            }
        } else if (!strcmp(key, "orientation")) {
            IMS_RETURN_ERROR_IF(!json_is_string(v), err, IMS_ERR_INVALID, "%s: must be a string",
                                what);
            if ((st = set_orientation(f, json_string_value(v), err)) != IMS_OK)
                return st;
        } else if (!strcmp(key, "source_prefix")) {
            IMS_RETURN_ERROR_IF(!json_is_string(v) || json_string_length(v) == 0 ||
                                    json_string_length(v) > 4096 ||
                                    strlen(json_string_value(v)) != json_string_length(v),
                                err, IMS_ERR_INVALID, "%s: must be a non-empty string", what);
            f->source_prefix = server_arena_strdup(a, json_string_value(v));
            IMS_RETURN_ERROR_IF(!f->source_prefix, err, IMS_ERR_NOMEM, "out of memory");
        } else if (!strcmp(key, "tags")) {
            if ((st = server__json_tags(v, what, a, &f->tags, &f->n_tags, err)) != IMS_OK)
                return st;
        } else {
            return ims_error_set(err, IMS_ERR_INVALID,
                                 "%s: unknown member (added, taken, min_width, min_height, "
                                 "format, orientation, source_prefix, tags)", what);
        }
    }
    return IMS_OK;
}

static enum ims_status args_filter(const struct server_query_args *g, struct server_arena *a,
                                   struct server_query *q, struct ims_error *err)
{
    if (!g->added_from && !g->added_to && !g->taken_from && !g->taken_to && !g->min_width &&
        !g->min_height && !g->format && !g->orientation && !g->source_prefix && !g->n_tags)
        return IMS_OK;
    struct server_filter *f = filter_new(a, q);
    IMS_RETURN_ERROR_IF(!f, err, IMS_ERR_NOMEM, "out of memory");
    enum ims_status st;
    const struct {
        const char *v, *name;
        int end;
        int64_t *dst;
        bool *has;
    } times[] = {{g->added_from, "added_from", 0, &f->added_from, &f->has_added_from},
                 {g->added_to, "added_to", 1, &f->added_to, &f->has_added_to},
                 {g->taken_from, "taken_from", 0, &f->taken_from, &f->has_taken_from},
                 {g->taken_to, "taken_to", 1, &f->taken_to, &f->has_taken_to}};
    for (size_t i = 0; i < IMS_ARRAY_LEN(times); i++)
        if (times[i].v) {
            if ((st = parse_time(times[i].v, times[i].name, times[i].end, times[i].dst, err)) !=
                IMS_OK)
                return st;
            *times[i].has = true;
        }
    long long x;
    if (g->min_width) {
        if ((st = server__parse_int(g->min_width, "min_width", 0, 1 << 30, &x, err)) != IMS_OK)
            return st;
        f->min_width = (uint32_t)x;
    }
    if (g->min_height) {
        if ((st = server__parse_int(g->min_height, "min_height", 0, 1 << 30, &x, err)) != IMS_OK)
            return st;
        f->min_height = (uint32_t)x;
    }
    if (g->format)
        for (const char *p = g->format;;) {
            const char *c = strchr(p, ',');
            size_t len = c ? (size_t)(c - p) : strlen(p);
            if ((st = add_format(a, f, p, len, err)) != IMS_OK)
                return st;
            if (!c)
                break;
            p = c + 1;
        }
    if (g->orientation && (st = set_orientation(f, g->orientation, err)) != IMS_OK)
        return st;
    if (g->source_prefix) {
        IMS_RETURN_ERROR_IF(!*g->source_prefix || strlen(g->source_prefix) > 4096, err,
                            IMS_ERR_INVALID, "source_prefix: must be 1..4096 bytes");
        f->source_prefix = g->source_prefix;
    }
    IMS_RETURN_ERROR_IF(g->n_tags > SERVER_TAGS_MAX, err, IMS_ERR_INVALID,
                        "tag: at most %d tags", SERVER_TAGS_MAX);
    /* A NUL (the query's "%00", which the server's unescaping leaves as the
     * three characters so that it never cuts a value short) and control
     * characters are refused here, naming the value and the byte: no tag
     * holds one (the catalogue's rule, which also checks length and UTF-8).
     * A tag spelled with the text "%00" can still be asked for in a POST
     * filter. */
    for (size_t i = 0; i < g->n_tags; i++) {
        const unsigned char *t = (const unsigned char *)g->tags[i];
        size_t len = strlen(g->tags[i]);
        const char *nul = strstr(g->tags[i], "%00");
        IMS_RETURN_ERROR_IF(nul, err, IMS_ERR_INVALID, "tag %zu: NUL byte (%%00) at byte %zu",
                            i + 1, nul ? (size_t)(nul - g->tags[i]) : 0);
        for (size_t b = 0; b < len; b++) {
            unsigned cp = t[b] < 0x20 || t[b] == 0x7f ? t[b]
                          : t[b] == 0xc2 && t[b + 1] >= 0x80 && t[b + 1] <= 0x9f ? t[b + 1]
                                                                                 : 0x100;
            IMS_RETURN_ERROR_IF(cp != 0x100, err, IMS_ERR_INVALID,
                                "tag %zu: control character U+%04X at byte %zu", i + 1, cp, b);
        }
    }
    f->tags = g->tags;
    f->n_tags = g->n_tags;
    return IMS_OK;
}

/* dedup=T: 0 < T <= 1 */
static enum ims_status parse_dedup(const char *v, struct server_query *q, struct ims_error *err)
{
    double d;
    enum ims_status st = server__parse_float(v, "dedup", 0.0, 1.0, &d, err);
    if (st != IMS_OK)
        return st;
    IMS_RETURN_ERROR_IF(d <= 0.0, err, IMS_ERR_INVALID, "dedup: must be in (0, 1]");
    q->has_dedup = true;
    q->dedup = (float)d;
    return IMS_OK;
}

/* ---- shared options (query string and multipart) ------------------------------------ */

static enum ims_status apply_options(const char *min_score, const char *order,
                                     struct server_query *q, struct ims_error *err)
{
    enum ims_status st;
    double d;
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
    if ((st = args_filter(args, a, q, err)) != IMS_OK)
        return st;
    if (args->dedup && (st = parse_dedup(args->dedup, q, err)) != IMS_OK)
        return st;
    const char *ints[N_INT_OPTIONS] = {args->k, args->offset, args->ef, args->nprobe,
                                       args->rerank}; /* int_options' order */
    if ((st = text_int_options(ints, q, err)) != IMS_OK)
        return st;
    return apply_options(args->min_score, args->order, q, err);
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
    /* the terms and their weights; the options are the JSON body's */
    static const char *const known[] = {"file",        "text",           "negative",
                                        "image_id",    "image_url",      "file_weight",
                                        "text_weight", "negative_weight", "image_id_weight",
                                        "image_url_weight"};
    enum ims_status st;
    query_defaults(q);
    /* Every field: known, no NUL in a value (a C string would end there:
     * "k=5\0junk" must not read as 5), and only the terms repeat. */
    for (size_t i = 0; i < f->n_fields; i++) {
        const struct server_mp_field *fld = &f->fields[i];
        const char *name = fld->info.name;
        bool is_known = option_key(name);
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
        const char *name = fld->info.name; /* known: checked above */
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
    if (form_value(f, "dedup") && (st = parse_dedup(form_value(f, "dedup"), q, err)) != IMS_OK)
        return st;
    /* "filter": the JSON body's filter object as text (an image search from the web page) */
    const char *fv = form_value(f, "filter");
    if (fv) {
        json_error_t jerr;
        json_t *jf = json_loads(fv, JSON_REJECT_DUPLICATES, &jerr);
        IMS_RETURN_ERROR_IF(!jf, err, IMS_ERR_INVALID, "filter: invalid JSON: %s", jerr.text);
        st = json_filter(jf, a, q, err);
        json_decref(jf);
        if (st != IMS_OK)
            return st;
    }
    const char *ints[N_INT_OPTIONS];
    for (size_t i = 0; i < N_INT_OPTIONS; i++)
        ints[i] = form_value(f, int_options[i].name);
    if ((st = text_int_options(ints, q, err)) != IMS_OK)
        return st;
    return apply_options(form_value(f, "min_score"), form_value(f, "order"), q, err);
}
