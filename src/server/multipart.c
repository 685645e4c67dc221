/* SPDX-License-Identifier: MIT */
/*
 * multipart.c: a streaming multipart/form-data parser (RFC 7578 over
 * RFC 2046), written for untrusted, binary, arbitrarily chunked bodies.
 *
 * How it works. The body is a sequence of parts separated by the delimiter
 * D = CRLF "--" boundary; the first delimiter may come without its CRLF (at
 * the very start of the body), and the last is followed by "--". The parser
 * is a byte-level state machine that looks for D with a single match
 * counter: D contains exactly one CR (boundaries cannot contain CR), so on
 * a mismatch after `match` bytes no suffix of the matched bytes can start
 * another match except a CR, and the bytes held back are exactly
 * D[0..match). Held-back bytes that turn out to be data are therefore
 * emitted from D itself: the parser never buffers body bytes, whatever the
 * chunking (a delimiter split across any number of feeds is found). Runs of
 * plain data are handed to the callback as slices of the input.
 *
 * Part headers are read line by line into a fixed buffer (a line longer
 * than SERVER_MP_LINE_MAX, or more than MP_HEADERS_MAX bytes of headers in
 * a part, is an error), so memory is bounded by the struct. Only
 * Content-Disposition (form-data; name; filename) and Content-Type are kept.
 * Transport padding (spaces, tabs) after a delimiter is allowed; the
 * preamble and epilogue are ignored.
 *
 * On top of the parser, the "form" collector keeps every part in bounded
 * buffers for the handlers (total body bytes and number of parts capped).
 */
#include "server_int.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#define MP_HEADERS_MAX 8192

/* ---- boundary ---------------------------------------------------------------- */

static bool mp_bchar(int c)
{
    return isalnum(c) || strchr("'()+_,-./:=? ", c) != NULL;
}

/* The one parser of the parameter grammar shared by the Content-Type of the
 * body and the Content-Disposition of a part (RFC 7231 3.1.1.1, RFC 6266):
 *     *( OWS ";" OWS name "=" ( token | quoted-string ) ) OWS
 * Strict: a parameter without "=", an empty or unterminated value, a value
 * longer than its buffer, or anything else between parameters is an error
 * (-1). Returns 1 with the next parameter, 0 at the end. */
static int mp_param_next(const char **pp, char *name, size_t name_cap, char *val, size_t val_cap)
{
    const char *p = *pp;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0') {
        *pp = p;
        return 0;
    }
    if (*p != ';')
        return -1;
    p++;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t n = 0;
    while (*p && *p != '=' && *p != ';' && *p != ' ' && *p != '\t' && *p != '"') {
        if (n + 1 >= name_cap)
            return -1;
        name[n++] = *p++;
    }
    name[n] = '\0';
    if (n == 0 || *p != '=')
        return -1;
    p++;
    n = 0;
    if (*p == '"') {
        p++;
        while (*p && *p != '"') {
            if (*p == '\\' && p[1])
                p++;
            if (n + 1 >= val_cap)
                return -1;
            val[n++] = *p++;
        }
        if (*p != '"')
            return -1;
        p++;
    } else {
        while (*p && *p != ';' && *p != ' ' && *p != '\t') {
            if (n + 1 >= val_cap || *p == '"')
                return -1;
            val[n++] = *p++;
        }
        if (n == 0)
            return -1;
    }
    val[n] = '\0';
    *pp = p;
    return 1;
}

enum ims_status server__mp_boundary(const char *ct, char *out, struct ims_error *err)
{
    const char *p = ct;
    IMS_RETURN_ERROR_IF(strncasecmp(p, "multipart/form-data", 19) != 0, err,
                        IMS_ERR_UNSUPPORTED, "expected multipart/form-data");
    p += 19;
    char name[32], val[SERVER_MP_BOUNDARY_MAX + 1];
    bool found = false;
    int r;
    while ((r = mp_param_next(&p, name, sizeof(name), val, sizeof(val))) == 1) {
        if (strcasecmp(name, "boundary") != 0)
            continue;
        IMS_RETURN_ERROR_IF(found, err, IMS_ERR_INVALID, "multipart boundary given twice");
        size_t n = strlen(val);
        IMS_RETURN_ERROR_IF(n == 0, err, IMS_ERR_INVALID, "multipart boundary is empty");
        for (size_t i = 0; i < n; i++)
            IMS_RETURN_ERROR_IF(!mp_bchar((unsigned char)val[i]), err, IMS_ERR_INVALID,
                                "multipart boundary contains an invalid character");
        memcpy(out, val, n + 1);
        found = true;
    }
    IMS_RETURN_ERROR_IF(r < 0, err, IMS_ERR_INVALID,
                        "malformed Content-Type parameters (or a boundary longer than %d "
                        "characters)",
                        SERVER_MP_BOUNDARY_MAX);
    IMS_RETURN_ERROR_IF(!found, err, IMS_ERR_INVALID,
                        "multipart/form-data without a boundary parameter");
    return IMS_OK;
}

/* ---- parser -------------------------------------------------------------------- */

void server__mp_init(struct server_mp *mp, const char *boundary,
                     const struct server_mp_callbacks *cb)
{
    memset(mp, 0, sizeof(*mp));
    mp->cb = *cb;
    size_t n = strlen(boundary);
    IMS_ASSERT(n > 0 && n <= SERVER_MP_BOUNDARY_MAX);
    memcpy(mp->delim, "\r\n--", 4);
    memcpy(mp->delim + 4, boundary, n);
    mp->delim_len = 4 + n;
    mp->state = MP_PREAMBLE;
    mp->match = 2; /* the body may open with "--boundary", no CRLF before it */
}

static enum ims_status mp_fail(struct server_mp *mp, enum ims_status st, const char *msg)
{
    mp->state = MP_ERROR;
    mp->st = st;
    ims_error_set(&mp->err, st, "malformed multipart body: %s", msg);
    return st;
}

static enum ims_status mp_fail_cb(struct server_mp *mp, enum ims_status st)
{
    mp->state = MP_ERROR;
    mp->st = st;
    return st;
}

static enum ims_status mp_header(struct server_mp *mp)
{
    mp->line[mp->line_len] = '\0';
    char *line = mp->line;
    char *colon = memchr(line, ':', mp->line_len);
    if (!colon)
        return mp_fail(mp, IMS_ERR_INVALID, "part header line without ':'");
    *colon = '\0';
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (strcasecmp(line, "content-type") == 0) {
        size_t n = strlen(v);
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        if (n >= sizeof(mp->info.content_type))
            return mp_fail(mp, IMS_ERR_INVALID, "part Content-Type too long");
        memcpy(mp->info.content_type, v, n);
        mp->info.content_type[n] = '\0';
        return IMS_OK;
    }
    if (strcasecmp(line, "content-disposition") != 0)
        return IMS_OK;
    if (strncasecmp(v, "form-data", 9) != 0)
        return mp_fail(mp, IMS_ERR_INVALID, "part Content-Disposition is not form-data");
    const char *p = v + 9;
    char pname[64], tmp[SERVER_MP_FILENAME_MAX];
    bool has_name = false;
    int r;
    while ((r = mp_param_next(&p, pname, sizeof(pname), tmp, sizeof(tmp))) == 1) {
        if (strcasecmp(pname, "name") == 0) {
            if (has_name)
                return mp_fail(mp, IMS_ERR_INVALID, "part name given twice");
            if (strlen(tmp) >= sizeof(mp->info.name) || tmp[0] == '\0')
                return mp_fail(mp, IMS_ERR_INVALID, "part name empty or too long");
            strcpy(mp->info.name, tmp);
            has_name = true;
        } else if (strcasecmp(pname, "filename") == 0) {
            strcpy(mp->info.filename, tmp);
            mp->info.has_filename = true;
        }
    }
    if (r < 0)
        return mp_fail(mp, IMS_ERR_INVALID, "bad Content-Disposition parameters (a parameter "
                                            "without value, unterminated or too long)");
    return IMS_OK;
}

enum ims_status server__mp_feed(struct server_mp *mp, const char *p, size_t n,
                                struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    size_t i = 0;
    while (i < n && mp->state != MP_ERROR) {
        unsigned char c = (unsigned char)p[i];
        switch (mp->state) {
        case MP_PREAMBLE:
            if (c == (unsigned char)mp->delim[mp->match]) {
                if (++mp->match == mp->delim_len) {
                    mp->state = MP_AFTER_DELIM;
                    mp->match = 0;
                }
            } else {
                mp->match = c == '\r' ? 1 : 0;
            }
            i++;
            break;
        case MP_AFTER_DELIM:
            if (c == '-')
                mp->state = MP_AFTER_DELIM_DASH;
            else if (c == '\r')
                mp->state = MP_AFTER_DELIM_CR;
            else if (c != ' ' && c != '\t')
                mp_fail(mp, IMS_ERR_INVALID, "unexpected bytes after a boundary");
            i++;
            break;
        case MP_AFTER_DELIM_DASH:
            if (c == '-')
                mp->state = MP_EPILOGUE;
            else
                mp_fail(mp, IMS_ERR_INVALID, "unexpected bytes after a boundary");
            i++;
            break;
        case MP_AFTER_DELIM_CR:
            if (c == '\n') {
                mp->state = MP_HEADER_LINE;
                memset(&mp->info, 0, sizeof(mp->info));
                mp->line_len = 0;
                mp->header_bytes = 0;
            } else {
                mp_fail(mp, IMS_ERR_INVALID, "boundary line not ended by CRLF");
            }
            i++;
            break;
        case MP_HEADER_LINE:
            if (++mp->header_bytes > MP_HEADERS_MAX) {
                mp_fail(mp, IMS_ERR_INVALID, "part headers too long");
            } else if (c == '\r') {
                mp->state = MP_HEADER_LF;
            } else if (mp->line_len + 1 >= sizeof(mp->line)) {
                mp_fail(mp, IMS_ERR_INVALID, "part header line too long");
            } else {
                mp->line[mp->line_len++] = (char)c;
            }
            i++;
            break;
        case MP_HEADER_LF:
            i++;
            if (c != '\n') {
                mp_fail(mp, IMS_ERR_INVALID, "bare CR in part headers");
                break;
            }
            if (mp->line_len > 0) {
                if (mp_header(mp) == IMS_OK)
                    mp->state = MP_HEADER_LINE;
                mp->line_len = 0;
                break;
            }
            if (mp->info.name[0] == '\0') {
                mp_fail(mp, IMS_ERR_INVALID, "part without a Content-Disposition name");
                break;
            }
            mp->n_parts++;
            mp->state = MP_BODY;
            mp->match = 0;
            if (mp->cb.part_begin) {
                st = mp->cb.part_begin(mp->cb.ctx, &mp->info, &mp->err);
                if (st != IMS_OK)
                    mp_fail_cb(mp, st);
            }
            break;
        case MP_BODY: {
            /* p[run..i) is plain data not yet emitted; when match > 0 the
             * held bytes are mp->delim[0..match), already outside the run. */
            size_t run = i;
            for (; i < n; i++) {
                char b = p[i];
                if (b == mp->delim[mp->match]) {
                    if (mp->match == 0 && i > run && mp->cb.part_data) {
                        st = mp->cb.part_data(mp->cb.ctx, p + run, i - run, &mp->err);
                        if (st != IMS_OK)
                            goto cb_fail;
                    }
                    if (++mp->match == mp->delim_len) {
                        mp->match = 0;
                        mp->state = MP_AFTER_DELIM;
                        if (mp->cb.part_end) {
                            st = mp->cb.part_end(mp->cb.ctx, &mp->err);
                            if (st != IMS_OK)
                                goto cb_fail;
                        }
                        i++;
                        break;
                    }
                    run = i + 1;
                    continue;
                }
                if (mp->match > 0) {
                    if (mp->cb.part_data) {
                        st = mp->cb.part_data(mp->cb.ctx, mp->delim, mp->match, &mp->err);
                        if (st != IMS_OK)
                            goto cb_fail;
                    }
                    if (b == '\r') {
                        mp->match = 1;
                        run = i + 1;
                    } else {
                        mp->match = 0;
                        run = i;
                    }
                }
            }
            if (mp->state == MP_BODY && mp->match == 0 && i > run && mp->cb.part_data) {
                st = mp->cb.part_data(mp->cb.ctx, p + run, i - run, &mp->err);
                if (st != IMS_OK)
                    goto cb_fail;
            }
            break;
        cb_fail:
            mp_fail_cb(mp, st);
            break;
        }
        case MP_EPILOGUE:
            i = n;
            break;
        case MP_ERROR:
            break;
        }
    }
    if (mp->state == MP_ERROR) {
        if (err)
            *err = mp->err;
        return mp->st;
    }
    return IMS_OK;
}

enum ims_status server__mp_finish(struct server_mp *mp, struct ims_error *err)
{
    if (mp->state == MP_ERROR) {
        if (err)
            *err = mp->err;
        return mp->st;
    }
    if (mp->state == MP_EPILOGUE)
        return IMS_OK;
    if (mp->state == MP_PREAMBLE)
        return ims_error_set(err, IMS_ERR_INVALID,
                             "malformed multipart body: the boundary never occurs");
    return ims_error_set(err, IMS_ERR_INVALID,
                         "malformed multipart body: truncated (closing boundary missing)");
}

/* ---- form collector ------------------------------------------------------------------ */

static enum ims_status form_begin(void *ctx, const struct server_mp_part_info *info,
                                  struct ims_error *err)
{
    struct server_mp_form *f = ctx;
    IMS_RETURN_ERROR_IF(f->n_fields >= f->max_parts, err, IMS_ERR_TOO_LARGE,
                        "more than %zu parts in the multipart body", f->max_parts);
    if (f->n_fields == f->cap_fields) {
        size_t cap = f->cap_fields ? f->cap_fields * 2 : 4;
        struct server_mp_field *nf = ims_realloc(f->fields, cap * sizeof(*nf));
        IMS_RETURN_ERROR_IF(!nf, err, IMS_ERR_NOMEM, "out of memory");
        f->fields = nf;
        f->cap_fields = cap;
    }
    struct server_mp_field *fld = &f->fields[f->n_fields++];
    fld->info = *info;
    ims_buf_init(&fld->data, f->max_bytes);
    return IMS_OK;
}

static enum ims_status form_data(void *ctx, const char *p, size_t n, struct ims_error *err)
{
    struct server_mp_form *f = ctx;
    IMS_RETURN_ERROR_IF(n > f->max_bytes - f->total_bytes, err, IMS_ERR_TOO_LARGE,
                        "multipart body exceeds the limit of %zu bytes", f->max_bytes);
    f->total_bytes += n;
    enum ims_status st = ims_buf_append(&f->fields[f->n_fields - 1].data, p, n);
    IMS_RETURN_ERROR_IF(st != IMS_OK, err, st, "cannot store the part: %s", ims_strerror(st));
    return IMS_OK;
}

enum ims_status server__form_init(struct server_mp_form *f, const char *content_type,
                                  size_t max_bytes, size_t max_parts, struct ims_error *err)
{
    memset(f, 0, sizeof(*f));
    char boundary[SERVER_MP_BOUNDARY_MAX + 1];
    enum ims_status st = server__mp_boundary(content_type, boundary, err);
    if (st != IMS_OK)
        return st;
    f->max_bytes = max_bytes;
    f->max_parts = max_parts;
    struct server_mp_callbacks cb = {form_begin, form_data, NULL, f};
    server__mp_init(&f->mp, boundary, &cb);
    return IMS_OK;
}

enum ims_status server__form_feed(struct server_mp_form *f, const char *p, size_t n,
                                  struct ims_error *err)
{
    return server__mp_feed(&f->mp, p, n, err);
}

enum ims_status server__form_finish(struct server_mp_form *f, struct ims_error *err)
{
    return server__mp_finish(&f->mp, err);
}

void server__form_fini(struct server_mp_form *f)
{
    for (size_t i = 0; i < f->n_fields; i++)
        ims_buf_fini(&f->fields[i].data);
    ims_free(f->fields);
    f->fields = NULL;
    f->n_fields = f->cap_fields = 0;
}
