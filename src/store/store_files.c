/* SPDX-License-Identifier: MIT */
/*
 * store_files.c: the catalogue side of folders kept in sync (add --sync,
 * serve --watch; schema v3): listing the rows under a folder with the file
 * state recorded when they were last synced, and updating a row's source
 * (a renamed file) and file state. Both backends live here, with the public
 * entry points, so the feature stays in one place.
 *
 * "Under a folder" is a byte-wise prefix: the source starts with the folder
 * followed by "/". Both backends select the byte range [prefix, prefix with
 * its final "/" raised to "0") (SQLite's BINARY collation, PostgreSQL's
 * COLLATE "C", both memcmp order) and the rows are checked again here with
 * memcmp, so /a/b never matches /a/bc whatever the database's collation.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "store_pg_int.h"

/* ---- shared ------------------------------------------------------------------ */

void store_file_rows_free(struct store_file_row *rows, size_t n)
{
    if (!rows)
        return;
    for (size_t i = 0; i < n; i++)
        ims_free(rows[i].source);
    ims_free(rows);
}

static int cmp_rows(const void *a, const void *b)
{
    return strcmp(((const struct store_file_row *)a)->source,
                  ((const struct store_file_row *)b)->source);
}

/* The rows grown one at a time while reading a result. */
struct rowbuf {
    struct store_file_row *v;
    size_t n, cap;
};

static struct store_file_row *rowbuf_push(struct rowbuf *b)
{
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        struct store_file_row *p = ims_realloc(b->v, nc * sizeof(*p));
        if (!p)
            return NULL;
        b->v = p;
        b->cap = nc;
    }
    struct store_file_row *r = &b->v[b->n++];
    memset(r, 0, sizeof(*r));
    return r;
}

enum ims_status store_list_under(struct store *store, const char *folder,
                                 struct store_file_row **rows, size_t *n, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !folder || !rows || !n, err, IMS_ERR_INVALID,
                        "store_list_under: invalid arguments");
    size_t len = strlen(folder);
    IMS_RETURN_ERROR_IF(len == 0 || folder[0] != '/' || len > STORE_SOURCE_MAX_BYTES, err,
                        IMS_ERR_INVALID, "store_list_under: not an absolute folder path: %s",
                        folder);
    char *prefix = ims_malloc(len + 2);
    if (!prefix)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_list_under: out of memory");
    memcpy(prefix, folder, len + 1);
    if (prefix[len - 1] != '/') {
        prefix[len++] = '/';
        prefix[len] = '\0';
    }
    struct store_file_row *out = NULL;
    size_t got = 0;
    enum ims_status s = store->ops->list_under(store, prefix, &out, &got, err);
    if (s == IMS_OK) {
        /* the database's range is the first filter; this one is exact */
        size_t k = 0;
        for (size_t i = 0; i < got; i++) {
            if (strncmp(out[i].source, prefix, len) == 0 && out[i].source[len] != '\0')
                out[k++] = out[i];
            else
                ims_free(out[i].source);
        }
        got = k;
        if (got > 1)
            qsort(out, got, sizeof(*out), cmp_rows);
        if (got == 0) {
            ims_free(out);
            out = NULL;
        }
        *rows = out;
        *n = got;
    }
    ims_free(prefix);
    return s;
}

enum ims_status store_update_files(struct store *store, const struct store_file_update *u, size_t n,
                                   uint8_t *found, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || (n > 0 && !u), err, IMS_ERR_INVALID,
                        "store_update_files: invalid arguments");
    for (size_t i = 0; i < n; i++) {
        IMS_RETURN_ERROR_IF(u[i].source && (!u[i].source[0] ||
                                            strlen(u[i].source) > STORE_SOURCE_MAX_BYTES),
                            err, IMS_ERR_INVALID, "store_update_files: update %zu: bad source", i);
        IMS_RETURN_ERROR_IF(u[i].file_size < 0, err, IMS_ERR_INVALID,
                            "store_update_files: update %zu: negative size", i);
    }
    if (found)
        memset(found, 0, n);
    if (n == 0)
        return IMS_OK;
    enum ims_status s = store->ops->update_files(store, u, n, found, err);
    for (size_t i = 0; i < n; i++)
        if (u[i].source)
            store__rowcache_evict(store->rc, &u[i].id, 1);
    return s;
}

enum ims_status store_replace_content(struct store *store, int64_t id, int64_t from,
                                      int64_t file_size, int64_t file_mtime_ns,
                                      struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || id <= 0 || from <= 0 || id == from || file_size < 0, err,
                        IMS_ERR_INVALID, "store_replace_content: invalid arguments");
    enum ims_status s = store->ops->replace_content(store, id, from, file_size, file_mtime_ns, err);
    int64_t both[2] = {id, from};
    store__rowcache_evict(store->rc, both, 2);
    return s;
}

/* The exclusive end of the byte range of sources under `prefix` (which ends
 * with "/"): the same text with the "/" raised to "0". */
static char *range_end(const char *prefix)
{
    char *e = ims_strdup(prefix);
    if (e)
        e[strlen(e) - 1] = '0';
    return e;
}

/* ---- SQLite ---------------------------------------------------------------------- */

enum ims_status store__sq_list_under(struct store *store, const char *prefix,
                                     struct store_file_row **rows, size_t *n, struct ims_error *err)
{
    static const char sql[] =
        "SELECT id, source, sha256, bytes, file_size, file_mtime_ns FROM images"
        " WHERE source >= ?1 AND source < ?2";
    char *end = range_end(prefix);
    if (!end)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_list_under: out of memory");
    struct rowbuf b = {0};
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__reader_get(store, &db, err);
    if (s != IMS_OK) {
        ims_free(end);
        return s;
    }
    s = store__prepare(db, sql, &q, err);
    if (s == IMS_OK) {
        sqlite3_bind_text(q, 1, prefix, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, end, -1, SQLITE_STATIC);
        int rc;
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            struct store_file_row *r = rowbuf_push(&b);
            const unsigned char *src = sqlite3_column_text(q, 1);
            if (!r || !(r->source = ims_strdup(src ? (const char *)src : ""))) {
                if (r)
                    b.n--;
                s = ims_error_set(err, IMS_ERR_NOMEM, "store_list_under: out of memory");
                break;
            }
            r->id = sqlite3_column_int64(q, 0);
            if (sqlite3_column_bytes(q, 2) == 32) {
                r->has_sha256 = 1;
                memcpy(r->sha256, sqlite3_column_blob(q, 2), 32);
            }
            r->bytes = sqlite3_column_int64(q, 3);
            if (sqlite3_column_type(q, 4) != SQLITE_NULL &&
                sqlite3_column_type(q, 5) != SQLITE_NULL) {
                r->has_file_state = 1;
                r->file_size = sqlite3_column_int64(q, 4);
                r->file_mtime_ns = sqlite3_column_int64(q, 5);
            }
        }
        if (s == IMS_OK && rc != SQLITE_DONE)
            s = store__db_error(db, rc, err, "list rows under a folder");
    }
    sqlite3_finalize(q);
    store__reader_put(store, db);
    ims_free(end);
    if (s != IMS_OK) {
        store_file_rows_free(b.v, b.n);
        return s;
    }
    *rows = b.v;
    *n = b.n;
    return IMS_OK;
}

enum ims_status store__sq_update_files(struct store *store, const struct store_file_update *u,
                                       size_t n, uint8_t *found, struct ims_error *err)
{
    sqlite3_stmt *taken = NULL, *up = NULL;
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    s = store__prepare(store->wdb, "SELECT id FROM images WHERE source = ?1 AND id <> ?2", &taken,
                       err);
    if (s == IMS_OK)
        s = store__prepare(store->wdb,
                           "UPDATE images SET source = coalesce(?2, source), file_size = ?3,"
                           " file_mtime_ns = ?4 WHERE id = ?1",
                           &up, err);
    for (size_t i = 0; s == IMS_OK && i < n; i++) {
        if (u[i].source) {
            sqlite3_reset(taken);
            sqlite3_bind_text(taken, 1, u[i].source, -1, SQLITE_STATIC);
            sqlite3_bind_int64(taken, 2, u[i].id);
            int rc = sqlite3_step(taken);
            if (rc == SQLITE_ROW) {
                s = ims_error_set(err, IMS_ERR_EXISTS,
                                  "store_update_files: source %s is held by image %lld",
                                  u[i].source, (long long)sqlite3_column_int64(taken, 0));
                break;
            }
            if (rc != SQLITE_DONE) {
                s = store__db_error(store->wdb, rc, err, "check source");
                break;
            }
        }
        sqlite3_reset(up);
        sqlite3_bind_int64(up, 1, u[i].id);
        if (u[i].source)
            sqlite3_bind_text(up, 2, u[i].source, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(up, 2);
        sqlite3_bind_int64(up, 3, u[i].file_size);
        sqlite3_bind_int64(up, 4, u[i].file_mtime_ns);
        int rc = sqlite3_step(up);
        if (rc != SQLITE_DONE) {
            s = store__db_error(store->wdb, rc, err, "update file state");
            break;
        }
        int changed = sqlite3_changes(store->wdb) > 0;
        if (found)
            found[i] = (uint8_t)changed;
        /* a moved source is a row change every node's row cache must see */
        if (changed && u[i].source &&
            (s = store__sq_log_change(store->wdb, u[i].id, STORE_CHANGE_ROW, err)) != IMS_OK)
            break;
    }
    sqlite3_finalize(taken);
    sqlite3_finalize(up);
    s = store__write_end(store, s, err);
    if (s != IMS_OK && found)
        memset(found, 0, n);
    return s;
}

/* One statement with ?1 = a and ?2 = b (and ?3, ?4 = c, d when the text uses
 * them); *changes (optional) gets the rows it changed. */
static enum ims_status sq_exec4(sqlite3 *db, const char *sql, int64_t a, int64_t b, int64_t c,
                                int64_t d, int *changes, struct ims_error *err, const char *what)
{
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__prepare(db, sql, &q, err);
    if (s != IMS_OK)
        return s;
    int np = sqlite3_bind_parameter_count(q);
    sqlite3_bind_int64(q, 1, a);
    if (np >= 2)
        sqlite3_bind_int64(q, 2, b);
    if (np >= 3)
        sqlite3_bind_int64(q, 3, c);
    if (np >= 4)
        sqlite3_bind_int64(q, 4, d);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_DONE)
        s = store__db_error(db, rc, err, what);
    else if (changes)
        *changes = sqlite3_changes(db);
    sqlite3_finalize(q);
    return s;
}

enum ims_status store__sq_replace_content(struct store *store, int64_t id, int64_t from,
                                          int64_t file_size, int64_t file_mtime_ns,
                                          struct ims_error *err)
{
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    sqlite3 *db = store->wdb;
    sqlite3_stmt *q = NULL;
    char *source = NULL;
    int changed = 0;
    /* both rows, and the source of the new one (it moves to `id` once `from`
     * no longer holds it: sources are unique) */
    s = store__prepare(db, "SELECT n.source FROM images n, images o WHERE n.id = ?2 AND o.id = ?1",
                       &q, err);
    if (s == IMS_OK) {
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_int64(q, 2, from);
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            const unsigned char *t = sqlite3_column_text(q, 0);
            if (!(source = ims_strdup(t ? (const char *)t : "")))
                s = ims_error_set(err, IMS_ERR_NOMEM, "store_replace_content: out of memory");
        } else if (rc == SQLITE_DONE) {
            s = ims_error_set(err, IMS_ERR_NOT_FOUND,
                              "store_replace_content: image %lld or %lld does not exist",
                              (long long)id, (long long)from);
        } else {
            s = store__db_error(db, rc, err, "look up rows");
        }
        sqlite3_finalize(q);
        q = NULL;
    }
    if (s == IMS_OK)
        s = sq_exec4(db,
                     "UPDATE images SET (sha256, format, width, height, bytes, metadata, model) ="
                     " (SELECT sha256, format, width, height, bytes, metadata, model"
                     " FROM images WHERE id = ?2), file_size = ?3, file_mtime_ns = ?4"
                     " WHERE id = ?1",
                     id, from, file_size, file_mtime_ns, NULL, err, "replace image data");
    if (s == IMS_OK)
        s = sq_exec4(
            db,
            "UPDATE embeddings SET vec = (SELECT vec FROM embeddings WHERE image_id = ?2)"
            " WHERE image_id = ?1 AND EXISTS(SELECT 1 FROM embeddings WHERE image_id = ?2)",
            id, from, 0, 0, &changed, err, "replace embedding");
    if (s == IMS_OK && changed != 1)
        s = ims_error_set(err, IMS_ERR_CORRUPT,
                          "store_replace_content: image %lld or %lld has no embedding",
                          (long long)id, (long long)from);
    if (s == IMS_OK)
        s = sq_exec4(db, "DELETE FROM thumbnails WHERE image_id = ?1", id, 0, 0, 0, NULL, err,
                     "replace thumbnail");
    if (s == IMS_OK)
        s = sq_exec4(db, "UPDATE thumbnails SET image_id = ?1 WHERE image_id = ?2", id, from, 0, 0,
                     NULL, err, "replace thumbnail");
    /* the row of the new content goes, as store_delete_many deletes */
    if (s == IMS_OK)
        s = sq_exec4(db, "DELETE FROM embeddings WHERE image_id = ?1", from, 0, 0, 0, NULL, err,
                     "delete embedding");
    if (s == IMS_OK)
        s = sq_exec4(db, "DELETE FROM image_tags WHERE image_id = ?1", from, 0, 0, 0, NULL, err,
                     "delete tags");
    if (s == IMS_OK)
        s = sq_exec4(db, "DELETE FROM images WHERE id = ?1", from, 0, 0, 0, NULL, err,
                     "delete image");
    if (s == IMS_OK)
        s = sq_exec4(db, "INSERT INTO deleted(image_id, time) VALUES(?1, ?2)", from,
                     store__unix_now(), 0, 0, NULL, err, "log deletion");
    if (s == IMS_OK)
        s = store__sq_log_change(db, from, STORE_CHANGE_DELETE, err);
    if (s == IMS_OK) {
        s = store__prepare(db, "UPDATE images SET source = ?2 WHERE id = ?1", &q, err);
        if (s == IMS_OK) {
            sqlite3_bind_int64(q, 1, id);
            sqlite3_bind_text(q, 2, source, -1, SQLITE_STATIC);
            int rc = sqlite3_step(q);
            if (rc != SQLITE_DONE)
                s = store__db_error(db, rc, err, "move source");
            sqlite3_finalize(q);
        }
    }
    if (s == IMS_OK)
        s = store__sq_log_change(db, id, STORE_CHANGE_UPDATE, err);
    ims_free(source);
    return store__write_end(store, s, err);
}

/* ---- PostgreSQL -------------------------------------------------------------------- */

enum ims_status store__pg_list_under(struct store *store, const char *prefix,
                                     struct store_file_row **rows, size_t *n, struct ims_error *err)
{
    static const char sql[] =
        "SELECT id, source, sha256, bytes, file_size, file_mtime_ns FROM images"
        " WHERE source COLLATE \"C\" >= $1 AND source COLLATE \"C\" < $2";
    char *end = range_end(prefix);
    if (!end)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_list_under: out of memory");
    PGresult *r = NULL;
    struct pgp p = {0};
    store__pgp_text(&p, prefix);
    store__pgp_text(&p, end);
    enum ims_status s = store__pg_once(store, sql, &p, &r, err, "list rows under a folder");
    ims_free(end);
    if (s != IMS_OK)
        return s;
    struct rowbuf b = {0};
    int nt = PQntuples(r);
    for (int i = 0; i < nt; i++) {
        struct store_file_row *x = rowbuf_push(&b);
        if (!x || !(x->source = ims_strndup(PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1)))) {
            if (x)
                b.n--;
            s = ims_error_set(err, IMS_ERR_NOMEM, "store_list_under: out of memory");
            break;
        }
        x->id = store__pg_i64(r, i, 0);
        if (!store__pg_null(r, i, 2) && PQgetlength(r, i, 2) == 32) {
            x->has_sha256 = 1;
            memcpy(x->sha256, PQgetvalue(r, i, 2), 32);
        }
        x->bytes = store__pg_i64(r, i, 3);
        if (!store__pg_null(r, i, 4) && !store__pg_null(r, i, 5)) {
            x->has_file_state = 1;
            x->file_size = store__pg_i64(r, i, 4);
            x->file_mtime_ns = store__pg_i64(r, i, 5);
        }
    }
    PQclear(r);
    if (s != IMS_OK) {
        store_file_rows_free(b.v, b.n);
        return s;
    }
    *rows = b.v;
    *n = b.n;
    return IMS_OK;
}

enum ims_status store__pg_update_files(struct store *store, const struct store_file_update *u,
                                       size_t n, uint8_t *found, struct ims_error *err)
{
    PGconn *c = NULL;
    /* the write lock: a source moves while other nodes may insert it */
    enum ims_status s = store__pg_wbegin(store, &c, 1, err);
    if (s != IMS_OK)
        return s;
    for (size_t i = 0; s == IMS_OK && i < n; i++) {
        if (u[i].source) {
            struct pgp p = {0};
            store__pgp_text(&p, u[i].source);
            store__pgp_i64(&p, u[i].id);
            int held = 0;
            int64_t by = 0;
            s = store__pg_q1(c, "SELECT id FROM images WHERE source = $1 AND id <> $2", &p, &held,
                             &by, err, "check source");
            if (s == IMS_OK && held)
                s = ims_error_set(err, IMS_ERR_EXISTS,
                                  "store_update_files: source %s is held by image %lld",
                                  u[i].source, (long long)by);
            if (s != IMS_OK)
                break;
        }
        struct pgp p = {0};
        store__pgp_i64(&p, u[i].id);
        store__pgp_text(&p, u[i].source);
        store__pgp_i64(&p, u[i].file_size);
        store__pgp_i64(&p, u[i].file_mtime_ns);
        int changed = 0;
        s = store__pg_q1(c,
                         "UPDATE images SET source = coalesce($2, source), file_size = $3,"
                         " file_mtime_ns = $4 WHERE id = $1 RETURNING id",
                         &p, &changed, NULL, err, "update file state");
        if (found)
            found[i] = (uint8_t)changed;
        /* a moved source is a row change every node's row cache must see */
        if (changed && u[i].source)
            s = store__pg_log_changes(c, &u[i].id, 1, STORE_CHANGE_ROW, err);
    }
    s = store__pg_wend(store, c, s, err);
    if (s != IMS_OK && found)
        memset(found, 0, n);
    return s;
}

enum ims_status store__pg_replace_content(struct store *store, int64_t id, int64_t from,
                                          int64_t file_size, int64_t file_mtime_ns,
                                          struct ims_error *err)
{
    PGconn *c = NULL;
    enum ims_status s = store__pg_wbegin(store, &c, 1, err);
    if (s != IMS_OK)
        return s;
    struct pgp p = {0};
    store__pgp_i64(&p, id);
    store__pgp_i64(&p, from);
    int64_t both = 0;
    s = store__pg_q1(c,
                     "SELECT count(*) FROM images i JOIN embeddings e ON e.image_id = i.id"
                     " WHERE i.id IN ($1, $2)",
                     &p, NULL, &both, err, "look up rows");
    if (s == IMS_OK && both != 2)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND,
                          "store_replace_content: image %lld or %lld does not exist", (long long)id,
                          (long long)from);
    if (s == IMS_OK)
        s = store__pg_x(c,
                        "UPDATE embeddings e SET vec = n.vec FROM embeddings n"
                        " WHERE e.image_id = $1 AND n.image_id = $2",
                        &p, err, "replace embedding");
    if (s == IMS_OK) {
        struct pgp one = {0};
        store__pgp_i64(&one, id);
        s = store__pg_x(c, "DELETE FROM thumbnails WHERE image_id = $1", &one, err,
                        "replace thumbnail");
    }
    if (s == IMS_OK)
        s = store__pg_x(c, "UPDATE thumbnails SET image_id = $1 WHERE image_id = $2", &p, err,
                        "replace thumbnail");
    if (s == IMS_OK) {
        /* the new row goes first (its source and sha256 are unique), then
         * the kept row takes them, in one statement */
        struct pgp q = {0};
        store__pgp_i64(&q, id);
        store__pgp_i64(&q, from);
        store__pgp_i64(&q, file_size);
        store__pgp_i64(&q, file_mtime_ns);
        int done = 0;
        s = store__pg_q1(
            c,
            "WITH n AS (DELETE FROM images WHERE id = $2 RETURNING source, sha256, format,"
            " width, height, bytes, metadata, model)"
            " UPDATE images i SET source = n.source, sha256 = n.sha256, format = n.format,"
            " width = n.width, height = n.height, bytes = n.bytes, metadata = n.metadata,"
            " model = n.model, file_size = $3, file_mtime_ns = $4 FROM n WHERE i.id = $1"
            " RETURNING i.id",
            &q, &done, NULL, err, "replace image data");
        if (s == IMS_OK && !done)
            s = ims_error_set(err, IMS_ERR_NOT_FOUND,
                              "store_replace_content: image %lld or %lld does not exist",
                              (long long)id, (long long)from);
    }
    if (s == IMS_OK) {
        struct pgp l = {0};
        store__pgp_i64(&l, from);
        store__pgp_i64(&l, store__unix_now());
        s = store__pg_x(c, "INSERT INTO deleted(image_id, time) VALUES($1, $2)", &l, err,
                        "log deletion");
    }
    if (s == IMS_OK)
        s = store__pg_log_changes(c, &from, 1, STORE_CHANGE_DELETE, err);
    if (s == IMS_OK)
        s = store__pg_log_changes(c, &id, 1, STORE_CHANGE_UPDATE, err);
    return store__pg_wend(store, c, s, err);
}
