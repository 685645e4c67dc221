/* SPDX-License-Identifier: MIT */
/*
 * store_pg_images.c: the PostgreSQL backend's image rows, embeddings
 * (bytea, dim float32 little-endian), thumbnails, deletion log and scans.
 * Same semantics as store_images.c (docs/internals/store.md): dedup by
 * source then content hash, under the advisory write lock so two nodes
 * racing on one image store it once; INSERT ... ON CONFLICT DO NOTHING
 * reports the existing row as the duplicate if a race slips through.
 */
#include "store_pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "the PostgreSQL backend stores little-endian floats; add a byte swap for this host"
#endif

static enum ims_status find_id(PGconn *c, const char *sql, struct pgp *p, int64_t *id,
                               int *found, int64_t *extra, struct ims_error *err)
{
    PGresult *r = NULL;
    enum ims_status s = pg_q(c, sql, p, &r, err, "look up");
    *found = 0;
    if (s == IMS_OK && PQntuples(r) > 0) {
        *found = 1;
        *id = pg_i64(r, 0, 0);
        if (extra)
            *extra = pg_i64(r, 0, 1);
    }
    PQclear(r);
    return s;
}

static enum ims_status put_thumb(PGconn *c, int64_t id, const void *b, size_t n,
                                 struct ims_error *err)
{
    struct pgp p = {0};
    pgp_i64(&p, id);
    pgp_bytea(&p, b, n);
    return pg_x(c,
                "INSERT INTO thumbnails(image_id, jpeg) VALUES($1, $2) ON CONFLICT (image_id) "
                "DO UPDATE SET jpeg = excluded.jpeg",
                &p, err, "store thumbnail");
}

static enum ims_status insert_one(struct store *st, PGconn *c, const struct store_new_image *r,
                                  int64_t now, struct store_insert_result *res, int64_t *new_id,
                                  struct ims_error *err)
{
    enum ims_status s;
    int64_t id = 0, no_data = 0;
    int found = 0;
    *new_id = 0;
    struct pgp p = {0};
    pgp_text(&p, r->source);
    s = find_id(c, "SELECT id, (sha256 IS NULL)::int::int8 FROM images WHERE source = $1", &p, &id,
                &found, &no_data, err);
    if (s != IMS_OK)
        return s;
    if (found) {
        if (no_data && r->sha256) {
            int64_t other = 0;
            int taken = 0;
            struct pgp h = {0};
            pgp_bytea(&h, r->sha256, 32);
            s = find_id(c, "SELECT id FROM images WHERE sha256 = $1", &h, &other, &taken, NULL,
                        err);
            if (s != IMS_OK)
                return s;
            if (taken) { /* the content is stored under another source already */
                *res = (struct store_insert_result){id, STORE_DUP_SOURCE};
                return IMS_OK;
            }
            struct pgp u = {0};
            pgp_i64(&u, id);
            pgp_bytea(&u, r->sha256, 32);
            pgp_text(&u, r->format);
            pgp_i64(&u, r->width);
            pgp_i64(&u, r->height);
            pgp_i64(&u, r->bytes);
            s = pg_x(c,
                     "UPDATE images SET sha256 = $2, format = coalesce($3, format), width = $4, "
                     "height = $5, bytes = $6 WHERE id = $1",
                     &u, err, "complete row");
            if (s == IMS_OK && r->thumbnail_bytes > 0)
                s = put_thumb(c, id, r->thumbnail, r->thumbnail_bytes, err);
            if (s == IMS_OK)
                *res = (struct store_insert_result){id, STORE_COMPLETED};
            return s;
        }
        *res = (struct store_insert_result){id, STORE_DUP_SOURCE};
        return IMS_OK;
    }
    if (r->sha256) {
        struct pgp h = {0};
        pgp_bytea(&h, r->sha256, 32);
        s = find_id(c, "SELECT id FROM images WHERE sha256 = $1", &h, &id, &found, NULL, err);
        if (s != IMS_OK)
            return s;
        if (found) {
            *res = (struct store_insert_result){id, STORE_DUP_SHA256};
            return IMS_OK;
        }
    }
    struct pgp q = {0};
    pgp_text(&q, r->source);
    pgp_bytea(&q, r->sha256, r->sha256 ? 32 : 0);
    pgp_text(&q, r->format);
    pgp_i64(&q, r->width);
    pgp_i64(&q, r->height);
    pgp_i64(&q, r->bytes);
    pgp_i64(&q, r->added ? r->added : now);
    pgp_text(&q, r->caption);
    pgp_text(&q, r->metadata);
    pgp_text(&q, st->model_name);
    s = find_id(c,
                "INSERT INTO images(source, sha256, format, width, height, bytes, added, caption, "
                "metadata, model) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
                "ON CONFLICT DO NOTHING RETURNING id",
                &q, &id, &found, NULL, err);
    if (s != IMS_OK)
        return s;
    if (!found) { /* lost a race the lock did not cover: report the winner */
        struct pgp f = {0};
        pgp_text(&f, r->source);
        s = find_id(c, "SELECT id FROM images WHERE source = $1", &f, &id, &found, NULL, err);
        if (s == IMS_OK && found) {
            *res = (struct store_insert_result){id, STORE_DUP_SOURCE};
            return IMS_OK;
        }
        if (s == IMS_OK && r->sha256) {
            struct pgp h = {0};
            pgp_bytea(&h, r->sha256, 32);
            s = find_id(c, "SELECT id FROM images WHERE sha256 = $1", &h, &id, &found, NULL,
                        err);
            if (s == IMS_OK && found) {
                *res = (struct store_insert_result){id, STORE_DUP_SHA256};
                return IMS_OK;
            }
        }
        return s != IMS_OK ? s
                           : ims_error_set(err, IMS_ERR_BUSY, "insert conflicted; retry");
    }
    struct pgp e = {0};
    pgp_i64(&e, id);
    pgp_bytea(&e, r->embedding, (size_t)r->dim * 4);
    s = pg_x(c, "INSERT INTO embeddings(image_id, vec) VALUES($1, $2)", &e, err,
             "insert embedding");
    if (s == IMS_OK && r->thumbnail_bytes > 0)
        s = put_thumb(c, id, r->thumbnail, r->thumbnail_bytes, err);
    if (s == IMS_OK) {
        *res = (struct store_insert_result){id, STORE_INSERTED};
        *new_id = id;
    }
    return s;
}

enum ims_status pg_insert_many(struct store *st, const struct store_new_image *rows, size_t n,
                               struct store_insert_result *results, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(n > 0 && (!rows || !results), err, IMS_ERR_INVALID,
                        "store_insert_many: invalid arguments");
    if (n == 0)
        return IMS_OK;
    for (size_t i = 0; i < n; i++) {
        enum ims_status v = store__validate_row(st, &rows[i], i, err);
        if (v != IMS_OK)
            return v;
    }
    struct store_insert_result *tmp = ims_malloc(n * sizeof(*tmp));
    int64_t *ids = ims_malloc(n * sizeof(*ids));
    if (!tmp || !ids) {
        ims_free(tmp);
        ims_free(ids);
        return ims_error_set(err, IMS_ERR_NOMEM, "store_insert_many: out of memory");
    }
    PGconn *c = NULL;
    size_t n_new = 0;
    enum ims_status s = pg_wbegin(st, &c, 1, err);
    if (s == IMS_OK) {
        int64_t now = store__unix_now();
        for (size_t i = 0; i < n && s == IMS_OK; i++) {
            int64_t nid = 0;
            s = insert_one(st, c, &rows[i], now, &tmp[i], &nid, err);
            if (s != IMS_OK)
                ims_error_prefix(err, "row %zu (%s)", i, rows[i].source);
            else if (nid)
                ids[n_new++] = nid;
        }
        if (s == IMS_OK)
            s = pg_log_changes(c, ids, n_new, STORE_CHANGE_INSERT, err);
        s = pg_wend(st, c, s, err);
    }
    if (s == IMS_OK)
        memcpy(results, tmp, n * sizeof(*tmp));
    ims_free(tmp);
    ims_free(ids);
    return s;
}

enum ims_status pg_set_thumbnail(struct store *st, int64_t id, const void *jpeg, size_t n,
                                 struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!jpeg || n == 0, err, IMS_ERR_INVALID,
                        "store_set_thumbnail: no thumbnail bytes");
    IMS_RETURN_ERROR_IF(n > STORE_THUMBNAIL_MAX_BYTES, err, IMS_ERR_INVALID,
                        "store_set_thumbnail: %zu bytes exceeds %u", n,
                        (unsigned)STORE_THUMBNAIL_MAX_BYTES);
    PGconn *c = NULL;
    enum ims_status s = pg_wbegin(st, &c, 0, err);
    if (s != IMS_OK)
        return s;
    int64_t x = 0;
    int found = 0;
    struct pgp p = {0};
    pgp_i64(&p, id);
    s = find_id(c, "SELECT id FROM images WHERE id = $1 FOR SHARE", &p, &x, &found, NULL, err);
    if (s == IMS_OK && !found)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "image %lld does not exist", (long long)id);
    if (s == IMS_OK)
        s = put_thumb(c, id, jpeg, n, err);
    return pg_wend(st, c, s, err);
}

enum ims_status pg_set_embeddings(struct store *st, const int64_t *ids, const float *vectors,
                                  size_t n, uint8_t *exists, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(n > 0 && (!ids || !vectors), err, IMS_ERR_INVALID,
                        "store_set_embeddings: invalid arguments");
    for (size_t i = 0; i < n; i++) {
        uint32_t bad = 0;
        IMS_RETURN_ERROR_IF(!store__vec_finite(vectors + i * st->dim, st->dim, &bad), err,
                            IMS_ERR_INVALID,
                            "store_set_embeddings: vector %zu: element %u is not finite", i, bad);
    }
    if (n == 0)
        return IMS_OK;
    int64_t *changed = ims_malloc(n * sizeof(*changed));
    if (!changed)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_set_embeddings: out of memory");
    size_t nc = 0;
    PGconn *c = NULL;
    enum ims_status s = pg_wbegin(st, &c, 1, err);
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        struct pgp p = {0};
        pgp_i64(&p, ids[i]);
        pgp_bytea(&p, vectors + i * st->dim, (size_t)st->dim * 4);
        pgp_text(&p, st->model_name);
        int64_t x = 0;
        int found = 0;
        s = find_id(c,
                    "WITH e AS (UPDATE embeddings SET vec = $2 WHERE image_id = $1 RETURNING "
                    "image_id) UPDATE images SET model = $3 WHERE id IN (SELECT image_id FROM e) "
                    "RETURNING id",
                    &p, &x, &found, NULL, err);
        if (exists)
            exists[i] = (uint8_t)found;
        if (found)
            changed[nc++] = ids[i];
    }
    if (c) {
        if (s == IMS_OK)
            s = pg_log_changes(c, changed, nc, STORE_CHANGE_UPDATE, err);
        s = pg_wend(st, c, s, err);
    }
    ims_free(changed);
    return s;
}

enum ims_status pg_delete_many(struct store *st, const int64_t *ids, size_t n, uint8_t *existed,
                               struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(n > 0 && !ids, err, IMS_ERR_INVALID,
                        "store_delete_many: invalid arguments");
    if (n == 0)
        return IMS_OK;
    int64_t *gone = ims_malloc(n * sizeof(*gone));
    if (!gone)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_delete_many: out of memory");
    size_t ng = 0;
    PGconn *c = NULL;
    enum ims_status s = pg_wbegin(st, &c, 1, err);
    int64_t now = store__unix_now();
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        struct pgp p = {0};
        pgp_i64(&p, ids[i]);
        int64_t x = 0;
        int found = 0;
        s = find_id(c, "DELETE FROM images WHERE id = $1 RETURNING id", &p, &x, &found, NULL,
                    err);
        if (existed)
            existed[i] = (uint8_t)found;
        if (s == IMS_OK && found) {
            gone[ng++] = ids[i];
            struct pgp l = {0};
            pgp_i64(&l, ids[i]);
            pgp_i64(&l, now);
            s = pg_x(c, "INSERT INTO deleted(image_id, time) VALUES($1, $2)", &l, err,
                     "log deletion");
        }
    }
    if (c) {
        if (s == IMS_OK)
            s = pg_log_changes(c, gone, ng, STORE_CHANGE_DELETE, err);
        s = pg_wend(st, c, s, err);
    }
    ims_free(gone);
    return s;
}

/* ---- rows -------------------------------------------------------------------------------- */

#define ROW_COLS                                                                                   \
    "i.id, i.source, i.sha256, i.format, i.width, i.height, i.bytes, i.added, i.caption, "        \
    "i.metadata, i.model, EXISTS (SELECT 1 FROM thumbnails t WHERE t.image_id = i.id)::int::int8"

static char *dup_col(const PGresult *r, int row, int col, int *oom)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    char *p = ims_strndup(PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col));
    if (!p)
        *oom = 1;
    return p;
}

static enum ims_status row_from(const PGresult *r, int i, int emb_col,
                                struct store_image_row *row, struct ims_error *err)
{
    int oom = 0;
    store_row_init(row);
    row->id = pg_i64(r, i, 0);
    row->source = dup_col(r, i, 1, &oom);
    if (!PQgetisnull(r, i, 2) && PQgetlength(r, i, 2) == 32) {
        memcpy(row->sha256, PQgetvalue(r, i, 2), 32);
        row->has_sha256 = 1;
    }
    row->format = dup_col(r, i, 3, &oom);
    row->width = (uint32_t)pg_i64(r, i, 4);
    row->height = (uint32_t)pg_i64(r, i, 5);
    row->bytes = pg_i64(r, i, 6);
    row->added = pg_i64(r, i, 7);
    row->caption = dup_col(r, i, 8, &oom);
    row->metadata = dup_col(r, i, 9, &oom);
    row->model = dup_col(r, i, 10, &oom);
    row->has_thumbnail = (int)pg_i64(r, i, 11);
    if (emb_col >= 0 && !PQgetisnull(r, i, emb_col)) {
        int nb = PQgetlength(r, i, emb_col);
        if (nb <= 0 || nb % 4 != 0) {
            store_row_fini(row);
            return ims_error_set(err, IMS_ERR_CORRUPT,
                                 "catalogue: embedding of image %lld has %d bytes",
                                 (long long)pg_i64(r, i, 0), nb);
        }
        row->dim = (uint32_t)(nb / 4);
        row->embedding = ims_malloc((size_t)nb);
        if (!row->embedding)
            oom = 1;
        else
            memcpy(row->embedding, PQgetvalue(r, i, emb_col), (size_t)nb);
    }
    if (oom || !row->source || !row->model) {
        store_row_fini(row);
        return ims_error_set(err, oom ? IMS_ERR_NOMEM : IMS_ERR_CORRUPT,
                             oom ? "catalogue: out of memory reading a row"
                                 : "catalogue: row without source or model");
    }
    return IMS_OK;
}

enum ims_status pg_get_many(struct store *st, const int64_t *ids, size_t n, unsigned fields,
                            struct store_image_row *rows, uint8_t *found, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(n > 0 && (!ids || !rows || !found), err, IMS_ERR_INVALID,
                        "store_get_many: invalid arguments");
    for (size_t i = 0; i < n; i++) {
        store_row_init(&rows[i]);
        found[i] = 0;
    }
    if (n == 0)
        return IMS_OK;
    /* one query for all ids: "{1,2,3}" as a bigint[] literal */
    size_t cap = n * 21 + 3;
    char *lit = ims_malloc(cap);
    if (!lit)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_get_many: out of memory");
    size_t o = 0;
    lit[o++] = '{';
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(lit + o, cap - o, "%s%lld", i ? "," : "", (long long)ids[i]);
    lit[o++] = '}';
    lit[o] = '\0';
    int emb = (fields & STORE_FIELD_EMBEDDING) != 0;
    PGconn *c = NULL;
    PGresult *r = NULL;
    enum ims_status s = pg_get(st, &c, err);
    if (s == IMS_OK) {
        struct pgp p = {0};
        pgp_literal(&p, lit);
        s = pg_q(c,
                 emb ? "SELECT " ROW_COLS ", e.vec FROM images i LEFT JOIN embeddings e ON "
                       "e.image_id = i.id WHERE i.id = ANY($1::bigint[])"
                     : "SELECT " ROW_COLS " FROM images i WHERE i.id = ANY($1::bigint[])",
                 &p, &r, err, "read images");
        pg_put(st, c);
    }
    ims_free(lit);
    for (int k = 0; s == IMS_OK && k < PQntuples(r); k++) {
        int64_t id = pg_i64(r, k, 0);
        for (size_t i = 0; i < n && s == IMS_OK; i++) {
            if (ids[i] != id || found[i])
                continue;
            s = row_from(r, k, emb ? 12 : -1, &rows[i], err);
            found[i] = s == IMS_OK;
        }
    }
    PQclear(r);
    if (s != IMS_OK) {
        for (size_t i = 0; i < n; i++) {
            store_row_fini(&rows[i]);
            found[i] = 0;
        }
    }
    return s;
}

static enum ims_status read_id(struct store *st, const char *sql, struct pgp *p, int64_t *v,
                               int *found, struct ims_error *err)
{
    PGconn *c = NULL;
    enum ims_status s = pg_get(st, &c, err);
    if (s != IMS_OK)
        return s;
    s = find_id(c, sql, p, v, found, NULL, err);
    pg_put(st, c);
    return s;
}

enum ims_status pg_find_by_source(struct store *st, const char *source, int64_t *id,
                                  struct ims_error *err)
{
    struct pgp p = {0};
    pgp_text(&p, source);
    int found = 0;
    enum ims_status s =
        read_id(st, "SELECT id FROM images WHERE source = $1", &p, id, &found, err);
    if (s == IMS_OK && !found)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "no image with source %s", source);
    return s;
}

enum ims_status pg_find_by_sha256(struct store *st, const uint8_t *sha, int64_t *id,
                                  struct ims_error *err)
{
    struct pgp p = {0};
    pgp_bytea(&p, sha, 32);
    int found = 0;
    enum ims_status s = read_id(st, "SELECT id FROM images WHERE sha256 = $1 ORDER BY id LIMIT 1",
                                &p, id, &found, err);
    if (s == IMS_OK && !found)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "no image with that content hash");
    return s;
}

enum ims_status pg_get_thumbnail(struct store *st, int64_t id, void **jpeg, size_t *n_bytes,
                                 struct ims_error *err)
{
    PGconn *c = NULL;
    PGresult *r = NULL;
    enum ims_status s = pg_get(st, &c, err);
    if (s != IMS_OK)
        return s;
    struct pgp p = {0};
    pgp_i64(&p, id);
    s = pg_q(c, "SELECT jpeg FROM thumbnails WHERE image_id = $1", &p, &r, err,
             "read thumbnail");
    pg_put(st, c);
    if (s == IMS_OK) {
        if (PQntuples(r) == 0) {
            s = ims_error_set(err, IMS_ERR_NOT_FOUND, "image %lld has no thumbnail",
                              (long long)id);
        } else {
            size_t nb = (size_t)PQgetlength(r, 0, 0);
            void *b = ims_malloc(nb ? nb : 1);
            if (!b) {
                s = ims_error_set(err, IMS_ERR_NOMEM, "catalogue: out of memory");
            } else {
                memcpy(b, PQgetvalue(r, 0, 0), nb);
                *jpeg = b;
                *n_bytes = nb;
            }
        }
    }
    PQclear(r);
    return s;
}

enum ims_status pg_count(struct store *st, int64_t *n, struct ims_error *err)
{
    int found = 0;
    return read_id(st, "SELECT count(*) FROM images", NULL, n, &found, err);
}

enum ims_status pg_max_id(struct store *st, int64_t *id, struct ims_error *err)
{
    int found = 0;
    return read_id(st, "SELECT coalesce(max(id), 0) FROM images", NULL, id, &found, err);
}

enum ims_status pg_list(struct store *st, enum store_order order, int64_t offset, int64_t limit,
                        struct store_image_row **rows_out, size_t *n_out, struct ims_error *err)
{
    static const char *const sql[] = {
        [STORE_ORDER_ID_DESC] = "SELECT " ROW_COLS
                                " FROM images i ORDER BY i.id DESC LIMIT $1 OFFSET $2",
        [STORE_ORDER_ID_ASC] = "SELECT " ROW_COLS " FROM images i ORDER BY i.id LIMIT $1 OFFSET $2",
        [STORE_ORDER_ADDED_DESC] = "SELECT " ROW_COLS " FROM images i ORDER BY i.added DESC, "
                                   "i.id DESC LIMIT $1 OFFSET $2",
    };
    if (limit > 10000)
        limit = 10000;
    PGconn *c = NULL;
    PGresult *r = NULL;
    enum ims_status s = pg_get(st, &c, err);
    if (s != IMS_OK)
        return s;
    struct pgp p = {0};
    pgp_i64(&p, limit);
    pgp_i64(&p, offset);
    s = pg_q(c, sql[order], &p, &r, err, "list images");
    pg_put(st, c);
    if (s != IMS_OK)
        return s;
    size_t n = (size_t)PQntuples(r);
    struct store_image_row *rows = n ? ims_calloc(n, sizeof(*rows)) : NULL;
    if (n && !rows) {
        PQclear(r);
        return ims_error_set(err, IMS_ERR_NOMEM, "store_list: out of memory");
    }
    size_t k = 0;
    for (; k < n && s == IMS_OK; k++)
        s = row_from(r, (int)k, -1, &rows[k], err);
    PQclear(r);
    if (s != IMS_OK) {
        for (size_t i = 0; i + 1 < k; i++)
            store_row_fini(&rows[i]);
        ims_free(rows);
        return s;
    }
    *rows_out = rows;
    *n_out = n;
    return IMS_OK;
}

enum ims_status pg_scan_embeddings(struct store *st, int64_t after_id, size_t chunk_rows,
                                   store_scan_fn fn, void *user, struct ims_error *err)
{
    if (chunk_rows == 0)
        chunk_rows = 1024;
    IMS_RETURN_ERROR_IF(chunk_rows > (1u << 20), err, IMS_ERR_INVALID,
                        "store_scan_embeddings: chunk of %zu rows is too large", chunk_rows);
    size_t vec_bytes = (size_t)st->dim * 4, buf_bytes = 0;
    if (ims_size_mul(vec_bytes, chunk_rows, &buf_bytes) != 0)
        return ims_error_set(err, IMS_ERR_INVALID, "store_scan_embeddings: chunk too large");
    int64_t *ids = ims_malloc(chunk_rows * sizeof(*ids));
    float *vecs = ims_malloc(buf_bytes);
    PGconn *c = NULL;
    enum ims_status s = IMS_OK;
    if (!ids || !vecs) {
        s = ims_error_set(err, IMS_ERR_NOMEM, "store_scan_embeddings: out of memory");
        goto out;
    }
    s = pg_rbegin(st, &c, err);
    int64_t last = after_id;
    while (s == IMS_OK) {
        PGresult *r = NULL;
        struct pgp p = {0};
        pgp_i64(&p, last);
        pgp_i64(&p, (int64_t)chunk_rows);
        s = pg_q(c,
                 "SELECT image_id, vec FROM embeddings WHERE image_id > $1 ORDER BY image_id "
                 "LIMIT $2",
                 &p, &r, err, "scan embeddings");
        if (s != IMS_OK)
            break;
        size_t n = (size_t)PQntuples(r);
        for (size_t i = 0; i < n && s == IMS_OK; i++) {
            ids[i] = pg_i64(r, (int)i, 0);
            if ((size_t)PQgetlength(r, (int)i, 1) != vec_bytes)
                s = ims_error_set(err, IMS_ERR_MODEL_MISMATCH,
                                  "catalogue: embedding of image %lld has %d floats, the model "
                                  "'%s' has %u (re-embed unfinished?)",
                                  (long long)ids[i], PQgetlength(r, (int)i, 1) / 4,
                                  st->model_name, st->dim);
            else
                memcpy(vecs + i * st->dim, PQgetvalue(r, (int)i, 1), vec_bytes);
        }
        PQclear(r);
        if (s != IMS_OK || n == 0)
            break;
        last = ids[n - 1];
        if (fn(user, ids, vecs, n, st->dim) != 0) {
            s = ims_error_set(err, IMS_ERR_CANCELLED, "embedding scan stopped by caller");
            break;
        }
        if (n < chunk_rows)
            break;
    }
    if (c)
        pg_rend(st, c);
out:
    ims_free(ids);
    ims_free(vecs);
    return s;
}

enum ims_status pg_deleted_seq(struct store *st, int64_t *seq, struct ims_error *err)
{
    int found = 0;
    return read_id(st, "SELECT coalesce(max(seq), 0) FROM deleted", NULL, seq, &found, err);
}

enum ims_status pg_deleted_after(struct store *st, int64_t after_seq, size_t max_n,
                                 int64_t **ids_out, size_t *n_out, int64_t *last_seq,
                                 struct ims_error *err)
{
    PGconn *c = NULL;
    PGresult *r = NULL;
    enum ims_status s = pg_get(st, &c, err);
    if (s != IMS_OK)
        return s;
    struct pgp p = {0};
    pgp_i64(&p, after_seq);
    pgp_i64(&p, (int64_t)max_n);
    s = pg_q(c, "SELECT seq, image_id FROM deleted WHERE seq > $1 ORDER BY seq LIMIT $2", &p, &r,
             err, "read deletion log");
    pg_put(st, c);
    if (s != IMS_OK)
        return s;
    size_t n = (size_t)PQntuples(r);
    int64_t *ids = n ? ims_malloc(n * sizeof(*ids)) : NULL;
    if (n && !ids) {
        PQclear(r);
        return ims_error_set(err, IMS_ERR_NOMEM, "store_deleted_after: out of memory");
    }
    int64_t last = after_seq;
    for (size_t i = 0; i < n; i++) {
        last = pg_i64(r, (int)i, 0);
        ids[i] = pg_i64(r, (int)i, 1);
    }
    PQclear(r);
    *ids_out = ids;
    *n_out = n;
    *last_seq = last;
    return IMS_OK;
}
