/* SPDX-License-Identifier: MIT */
/*
 * store_images.c: image rows, embeddings, thumbnails, the deletion log and
 * the scans that rebuild the derived index.
 *
 * Layout (docs/internals/store.md): `images` holds the small per-image
 * columns; `embeddings` (image_id -> BLOB of dim float32, little-endian) and
 * `thumbnails` (image_id -> JPEG) are separate tables keyed by the same id,
 * so listing rows never reads vectors or JPEGs, and the index rebuild walks
 * one b-tree of vectors in id order.
 *
 * Writes: each public write is one IMMEDIATE transaction on the writer
 * connection. store_insert_many validates the whole batch first (sizes,
 * finiteness, JSON) and then handles the rows in order, so a duplicate
 * inside the batch is found by the same lookups as one already stored.
 *
 * Reads: a borrowed reader connection; multi-statement reads run inside
 * BEGIN ... COMMIT so they see one snapshot.
 *
 * Every new row, deleted row and replaced embedding also appends to the
 * change feed (store__sq_log_change, store_sqlite_feed.c) in the same transaction.
 * The functions here are the SQLite backend's (sq_*); store.c dispatches.
 */

#include "store_int.h"

#include <math.h>
#include <string.h>

/* ---- encoding of embeddings ---------------------------------------------- */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define STORE_BIG_ENDIAN 1
#else
#define STORE_BIG_ENDIAN 0
#endif

/* Copies n little-endian float32 from `src` bytes into `dst`. */
static void vec_from_le(float *dst, const void *src, size_t n)
{
    memcpy(dst, src, n * sizeof(float));
#if STORE_BIG_ENDIAN
    uint32_t *u = (uint32_t *)dst;
    for (size_t i = 0; i < n; i++)
        u[i] = __builtin_bswap32(u[i]);
#endif
}

/* Binds an embedding as a little-endian BLOB. On little-endian hosts the
 * caller's floats are bound as they are (the statement is stepped before
 * they can change); elsewhere a swapped copy is made. */
static enum ims_status bind_vec(sqlite3_stmt *q, int col, const float *v, uint32_t dim,
                                struct ims_error *err)
{
    int rc;
#if STORE_BIG_ENDIAN
    uint32_t *tmp = ims_malloc((size_t)dim * 4);
    if (!tmp)
        return ims_error_set(err, IMS_ERR_NOMEM, "catalogue: out of memory");
    memcpy(tmp, v, (size_t)dim * 4);
    for (uint32_t i = 0; i < dim; i++)
        tmp[i] = __builtin_bswap32(tmp[i]);
    rc = sqlite3_bind_blob(q, col, tmp, (int)dim * 4, SQLITE_TRANSIENT);
    ims_free(tmp);
#else
    rc = sqlite3_bind_blob(q, col, v, (int)dim * 4, SQLITE_STATIC);
#endif
    if (rc != SQLITE_OK)
        return store__db_error(sqlite3_db_handle(q), rc, err, "bind embedding");
    return IMS_OK;
}

/* ---- small statement helpers ---------------------------------------------- */

static enum ims_status step_done(sqlite3_stmt *q, struct ims_error *err, const char *what)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return store__db_error(sqlite3_db_handle(q), rc, err, what);
    return IMS_OK;
}

/* Steps a statement yielding at most one integer. *found says whether a row
 * came back. The statement is reset. */
static enum ims_status step_i64(sqlite3_stmt *q, int64_t *v, int *found, struct ims_error *err,
                                const char *what)
{
    int rc = sqlite3_step(q);
    enum ims_status s = IMS_OK;
    *found = 0;
    if (rc == SQLITE_ROW) {
        *v = sqlite3_column_int64(q, 0);
        *found = 1;
    } else if (rc != SQLITE_DONE) {
        s = store__db_error(sqlite3_db_handle(q), rc, err, what);
    }
    sqlite3_reset(q);
    return s;
}

enum ims_status store__sq_read_i64(struct store *store, const char *sql, const void *arg, int len,
                                   int64_t *v, int *found, struct ims_error *err)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        return s;
    s = store__prepare(db, sql, &q, err);
    if (s == IMS_OK) {
        if (arg && len < 0)
            sqlite3_bind_text(q, 1, arg, -1, SQLITE_STATIC);
        else if (arg)
            sqlite3_bind_blob(q, 1, arg, len, SQLITE_STATIC);
        s = step_i64(q, v, found, err, "read");
    }
    sqlite3_finalize(q);
    store__reader_put(store, db);
    return s;
}

/* ---- inserts --------------------------------------------------------------- */

/* The statements of one insert batch, prepared on the writer. */
struct ins_stmts {
    sqlite3_stmt *by_source, *by_sha, *ins, *emb, *thumb, *complete, *json;
};

static void ins_stmts_fini(struct ins_stmts *q)
{
    sqlite3_finalize(q->by_source);
    sqlite3_finalize(q->by_sha);
    sqlite3_finalize(q->ins);
    sqlite3_finalize(q->emb);
    sqlite3_finalize(q->thumb);
    sqlite3_finalize(q->complete);
    sqlite3_finalize(q->json);
}

static enum ims_status ins_stmts_init(sqlite3 *db, struct ins_stmts *q, struct ims_error *err)
{
    enum ims_status s;
    memset(q, 0, sizeof(*q));
    if ((s = store__prepare(db, "SELECT id, sha256 IS NULL FROM images WHERE source = ?1",
                            &q->by_source, err)) != IMS_OK ||
        (s = store__prepare(db, "SELECT id FROM images WHERE sha256 = ?1 ORDER BY id LIMIT 1",
                            &q->by_sha, err)) != IMS_OK ||
        (s = store__prepare(db,
                            "INSERT INTO images(source, sha256, format, width, height, bytes, "
                            "added, caption, metadata, model, id) "
                            "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                            &q->ins, err)) != IMS_OK ||
        (s = store__prepare(db, "INSERT INTO embeddings(image_id, vec) VALUES(?1, ?2)", &q->emb,
                            err)) != IMS_OK ||
        (s = store__prepare(db,
                            "INSERT OR REPLACE INTO thumbnails(image_id, jpeg) VALUES(?1, ?2)",
                            &q->thumb, err)) != IMS_OK ||
        (s = store__prepare(db,
                            "UPDATE images SET sha256 = ?2, format = coalesce(?3, format), "
                            "width = ?4, height = ?5, bytes = ?6 WHERE id = ?1",
                            &q->complete, err)) != IMS_OK ||
        (s = store__prepare(db, "SELECT json_valid(?1)", &q->json, err)) != IMS_OK)
        ins_stmts_fini(q);
    return s;
}

static enum ims_status put_thumb(sqlite3_stmt *q, int64_t id, const void *jpeg, size_t n,
                                 struct ims_error *err)
{
    sqlite3_bind_int64(q, 1, id);
    sqlite3_bind_blob(q, 2, jpeg, (int)n, SQLITE_STATIC);
    return step_done(q, err, "store thumbnail");
}

static enum ims_status insert_one(struct store *store, struct ins_stmts *q,
                                  const struct store_new_image *r, int64_t now,
                                  struct store_insert_result *res, struct ims_error *err)
{
    enum ims_status s;
    int64_t id = 0;
    int found = 0;

    /* 1. same source: a duplicate, or an imported row to complete */
    sqlite3_bind_text(q->by_source, 1, r->source, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q->by_source);
    int no_image_data = 0;
    if (rc == SQLITE_ROW) {
        found = 1;
        id = sqlite3_column_int64(q->by_source, 0);
        no_image_data = sqlite3_column_int(q->by_source, 1);
    }
    sqlite3_reset(q->by_source);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store__db_error(store->wdb, rc, err, "look up source");
    if (found) {
        if (no_image_data && r->sha256) {
            sqlite3_bind_int64(q->complete, 1, id);
            sqlite3_bind_blob(q->complete, 2, r->sha256, 32, SQLITE_STATIC);
            sqlite3_bind_text(q->complete, 3, r->format, -1, SQLITE_STATIC);
            sqlite3_bind_int64(q->complete, 4, r->width);
            sqlite3_bind_int64(q->complete, 5, r->height);
            sqlite3_bind_int64(q->complete, 6, r->bytes);
            if ((s = step_done(q->complete, err, "complete row")) != IMS_OK)
                return s;
            if (r->thumbnail_bytes > 0 &&
                (s = put_thumb(q->thumb, id, r->thumbnail, r->thumbnail_bytes, err)) != IMS_OK)
                return s;
            /* the row changed, its embedding did not: nodes' row caches
             * learn it from the feed, their indexes skip it */
            if ((s = store__sq_log_change(store->wdb, id, STORE_CHANGE_ROW, err)) != IMS_OK)
                return s;
            *res = (struct store_insert_result){id, STORE_COMPLETED};
        } else {
            *res = (struct store_insert_result){id, STORE_DUP_SOURCE};
        }
        return IMS_OK;
    }

    /* 2. same content under another source */
    if (r->sha256) {
        sqlite3_bind_blob(q->by_sha, 1, r->sha256, 32, SQLITE_STATIC);
        if ((s = step_i64(q->by_sha, &id, &found, err, "look up sha256")) != IMS_OK)
            return s;
        if (found) {
            *res = (struct store_insert_result){id, STORE_DUP_SHA256};
            return IMS_OK;
        }
    }

    /* 3. a new row */
    sqlite3_bind_text(q->ins, 1, r->source, -1, SQLITE_STATIC);
    if (r->sha256)
        sqlite3_bind_blob(q->ins, 2, r->sha256, 32, SQLITE_STATIC);
    else
        sqlite3_bind_null(q->ins, 2);
    sqlite3_bind_text(q->ins, 3, r->format, -1, SQLITE_STATIC); /* NULL binds NULL */
    sqlite3_bind_int64(q->ins, 4, r->width);
    sqlite3_bind_int64(q->ins, 5, r->height);
    sqlite3_bind_int64(q->ins, 6, r->bytes);
    sqlite3_bind_int64(q->ins, 7, r->added ? r->added : now);
    sqlite3_bind_text(q->ins, 8, r->caption, -1, SQLITE_STATIC);
    sqlite3_bind_text(q->ins, 9, r->metadata, -1, SQLITE_STATIC);
    sqlite3_bind_text(q->ins, 10, store->model_name, -1, SQLITE_STATIC);
    if (r->id > 0)
        sqlite3_bind_int64(q->ins, 11, r->id); /* repair: the row keeps its id */
    else
        sqlite3_bind_null(q->ins, 11);
    if ((s = step_done(q->ins, err, "insert image")) != IMS_OK)
        return s;
    id = sqlite3_last_insert_rowid(store->wdb);

    sqlite3_bind_int64(q->emb, 1, id);
    if ((s = bind_vec(q->emb, 2, r->embedding, r->dim, err)) != IMS_OK)
        return s;
    if ((s = step_done(q->emb, err, "insert embedding")) != IMS_OK)
        return s;
    if (r->thumbnail_bytes > 0 &&
        (s = put_thumb(q->thumb, id, r->thumbnail, r->thumbnail_bytes, err)) != IMS_OK)
        return s;
    if ((s = store__sq_log_change(store->wdb, id, STORE_CHANGE_INSERT, err)) != IMS_OK)
        return s;
    *res = (struct store_insert_result){id, STORE_INSERTED};
    return IMS_OK;
}

/* Validates and inserts rows[0..n) inside the caller's write transaction;
 * `first` numbers the rows in messages. */
static enum ims_status insert_rows(struct store *store, struct ins_stmts *q,
                                   const struct store_new_image *rows, size_t n, size_t first,
                                   int64_t now, struct store_insert_result *results,
                                   struct ims_error *err)
{
    enum ims_status s = IMS_OK;
    for (size_t i = 0; i < n && s == IMS_OK; i++)
        s = store__validate_row(store, &rows[i], first + i, err);
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        if (!rows[i].metadata)
            continue;
        int64_t ok = 0;
        int found = 0;
        sqlite3_bind_text(q->json, 1, rows[i].metadata, -1, SQLITE_STATIC);
        s = step_i64(q->json, &ok, &found, err, "check metadata");
        if (s == IMS_OK && !ok)
            s = ims_error_set(err, IMS_ERR_INVALID, "row %zu (%s): metadata is not valid JSON",
                              first + i, rows[i].source);
    }
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        s = insert_one(store, q, &rows[i], now, &results[i], err);
        if (s != IMS_OK)
            ims_error_prefix(err, "row %zu (%s)", first + i, rows[i].source);
    }
    return s;
}

enum ims_status store__sq_insert_many(struct store *store, const struct store_new_image *rows,
                                      size_t n, struct store_insert_result *results,
                                      struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || (n > 0 && (!rows || !results)), err, IMS_ERR_INVALID,
                        "store_insert_many: invalid arguments");
    if (n == 0)
        return IMS_OK;
    for (size_t i = 0; i < n; i++) {
        enum ims_status v = store__validate_row(store, &rows[i], i, err);
        if (v != IMS_OK)
            return v;
    }
    struct ins_stmts q;
    struct store_insert_result *tmp = ims_malloc(n * sizeof(*tmp));
    if (!tmp)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_insert_many: out of memory");
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK) {
        ims_free(tmp);
        return s;
    }
    s = ins_stmts_init(store->wdb, &q, err);
    if (s != IMS_OK)
        goto end;
    s = insert_rows(store, &q, rows, n, 0, store__unix_now(), tmp, err);
    ins_stmts_fini(&q);
end:
    s = store__write_end(store, s, err);
    if (s == IMS_OK)
        memcpy(results, tmp, n * sizeof(*tmp));
    ims_free(tmp);
    return s;
}

enum ims_status store__sq_insert_stream(struct store *store, size_t n_total, size_t chunk_rows,
                                        store_fill_fn fill, store_result_fn done, void *user,
                                        struct ims_error *err)
{
    struct ins_stmts q;
    struct store_new_image *rows = ims_calloc(chunk_rows, sizeof(*rows));
    struct store_insert_result *res = ims_malloc(chunk_rows * sizeof(*res));
    if (!rows || !res) {
        ims_free(rows);
        ims_free(res);
        return ims_error_set(err, IMS_ERR_NOMEM, "store_insert_stream: out of memory");
    }
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        goto free;
    s = ins_stmts_init(store->wdb, &q, err);
    if (s != IMS_OK)
        goto end;
    int64_t now = store__unix_now();
    for (size_t first = 0; first < n_total && s == IMS_OK; first += chunk_rows) {
        size_t m = IMS_MIN(chunk_rows, n_total - first);
        memset(rows, 0, m * sizeof(*rows));
        if (fill(user, first, rows, m) != 0) {
            s = ims_error_set(err, IMS_ERR_CANCELLED,
                              "store_insert_stream: stopped at row %zu: nothing stored", first);
            break;
        }
        s = insert_rows(store, &q, rows, m, first, now, res, err);
        if (s == IMS_OK && done)
            done(user, first, res, m);
    }
    ins_stmts_fini(&q);
end:
    s = store__write_end(store, s, err);
free:
    ims_free(rows);
    ims_free(res);
    return s;
}

/* ---- updates --------------------------------------------------------------- */

static enum ims_status image_exists(sqlite3 *db, int64_t id, int *exists, struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    int64_t v = 0;
    enum ims_status s = store__prepare(db, "SELECT 1 FROM images WHERE id = ?1", &q, err);
    if (s == IMS_OK) {
        sqlite3_bind_int64(q, 1, id);
        s = step_i64(q, &v, exists, err, "look up image");
    }
    sqlite3_finalize(q);
    return s;
}

enum ims_status store__sq_set_thumbnail(struct store *store, int64_t id, const void *jpeg,
                                        size_t n_bytes, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !jpeg || n_bytes == 0, err, IMS_ERR_INVALID,
                        "store_set_thumbnail: no thumbnail bytes");
    IMS_RETURN_ERROR_IF(n_bytes > STORE_THUMBNAIL_MAX_BYTES, err, IMS_ERR_INVALID,
                        "store_set_thumbnail: %zu bytes exceeds %u", n_bytes,
                        (unsigned)STORE_THUMBNAIL_MAX_BYTES);
    sqlite3_stmt *q = NULL;
    int exists = 0;
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    s = image_exists(store->wdb, id, &exists, err);
    if (s == IMS_OK && !exists)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "image %lld does not exist", (long long)id);
    if (s == IMS_OK)
        s = store__prepare(store->wdb,
                           "INSERT OR REPLACE INTO thumbnails(image_id, jpeg) VALUES(?1, ?2)", &q,
                           err);
    if (s == IMS_OK)
        s = put_thumb(q, id, jpeg, n_bytes, err);
    if (s == IMS_OK) /* has_thumbnail may change: row caches follow the feed */
        s = store__sq_log_change(store->wdb, id, STORE_CHANGE_ROW, err);
    sqlite3_finalize(q);
    return store__write_end(store, s, err);
}

enum ims_status store__sq_set_details(struct store *store, int64_t id, const char *caption,
                                      int64_t added, struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    s = store__prepare(store->wdb, "UPDATE images SET caption = ?2, added = ?3 WHERE id = ?1", &q,
                       err);
    if (s == IMS_OK) {
        sqlite3_bind_int64(q, 1, id);
        if (caption)
            sqlite3_bind_text(q, 2, caption, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(q, 2);
        sqlite3_bind_int64(q, 3, added);
        int rc = sqlite3_step(q);
        if (rc != SQLITE_DONE)
            s = store__db_error(store->wdb, rc, err, "set caption and added");
        else if (sqlite3_changes(store->wdb) != 1)
            s = ims_error_set(err, IMS_ERR_NOT_FOUND, "image %lld does not exist", (long long)id);
    }
    sqlite3_finalize(q);
    /* the row changed, its embedding did not: every node's row cache
     * learns it from the feed, no index re-reads the vector */
    if (s == IMS_OK)
        s = store__sq_log_change(store->wdb, id, STORE_CHANGE_ROW, err);
    return store__write_end(store, s, err);
}

enum ims_status store__sq_set_embeddings(struct store *store, const int64_t *ids,
                                         const float *vectors, size_t n, uint8_t *exists,
                                         struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || (n > 0 && (!ids || !vectors)), err, IMS_ERR_INVALID,
                        "store_set_embeddings: invalid arguments");
    for (size_t i = 0; i < n; i++) {
        uint32_t bad = 0;
        IMS_RETURN_ERROR_IF(!store__vec_finite(vectors + i * store->dim, store->dim, &bad), err,
                            IMS_ERR_INVALID,
                            "store_set_embeddings: vector %zu: element %u is not finite", i, bad);
    }
    if (n == 0)
        return IMS_OK;
    sqlite3_stmt *up = NULL, *model = NULL;
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    s = store__prepare(store->wdb, "UPDATE embeddings SET vec = ?2 WHERE image_id = ?1", &up, err);
    if (s == IMS_OK)
        s = store__prepare(store->wdb, "UPDATE images SET model = ?2 WHERE id = ?1", &model, err);
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        sqlite3_bind_int64(up, 1, ids[i]);
        s = bind_vec(up, 2, vectors + i * store->dim, store->dim, err);
        if (s == IMS_OK)
            s = step_done(up, err, "update embedding");
        int changed = sqlite3_changes(store->wdb) > 0;
        if (exists)
            exists[i] = (uint8_t)changed;
        if (s == IMS_OK && changed) {
            sqlite3_bind_int64(model, 1, ids[i]);
            sqlite3_bind_text(model, 2, store->model_name, -1, SQLITE_STATIC);
            s = step_done(model, err, "update model");
            if (s == IMS_OK)
                s = store__sq_log_change(store->wdb, ids[i], STORE_CHANGE_UPDATE, err);
        }
    }
    sqlite3_finalize(up);
    sqlite3_finalize(model);
    return store__write_end(store, s, err);
}

/* ---- deletes --------------------------------------------------------------- */

enum ims_status store__sq_delete_many(struct store *store, const int64_t *ids, size_t n,
                                      uint8_t *existed, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || (n > 0 && !ids), err, IMS_ERR_INVALID,
                        "store_delete_many: invalid arguments");
    if (n == 0)
        return IMS_OK;
    sqlite3_stmt *del = NULL, *emb = NULL, *th = NULL, *log = NULL;
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    if ((s = store__prepare(store->wdb, "DELETE FROM images WHERE id = ?1", &del, err)) != IMS_OK ||
        (s = store__prepare(store->wdb, "DELETE FROM embeddings WHERE image_id = ?1", &emb, err)) !=
            IMS_OK ||
        (s = store__prepare(store->wdb, "DELETE FROM thumbnails WHERE image_id = ?1", &th, err)) !=
            IMS_OK ||
        (s = store__prepare(store->wdb, "INSERT INTO deleted(image_id, time) VALUES(?1, ?2)", &log,
                            err)) != IMS_OK)
        goto out;
    int64_t now = store__unix_now();
    for (size_t i = 0; i < n; i++) {
        /* children first, so the parent delete finds nothing to cascade */
        sqlite3_bind_int64(emb, 1, ids[i]);
        sqlite3_bind_int64(th, 1, ids[i]);
        sqlite3_bind_int64(del, 1, ids[i]);
        if ((s = step_done(emb, err, "delete embedding")) != IMS_OK ||
            (s = step_done(th, err, "delete thumbnail")) != IMS_OK ||
            (s = step_done(del, err, "delete image")) != IMS_OK)
            goto out;
        int gone = sqlite3_changes(store->wdb) > 0;
        if (existed)
            existed[i] = (uint8_t)gone;
        if (gone) {
            sqlite3_bind_int64(log, 1, ids[i]);
            sqlite3_bind_int64(log, 2, now);
            if ((s = step_done(log, err, "log deletion")) != IMS_OK ||
                (s = store__sq_log_change(store->wdb, ids[i], STORE_CHANGE_DELETE, err)) != IMS_OK)
                goto out;
        }
    }
out:
    sqlite3_finalize(del);
    sqlite3_finalize(emb);
    sqlite3_finalize(th);
    sqlite3_finalize(log);
    return store__write_end(store, s, err);
}

enum ims_status store_delete(struct store *store, int64_t id, struct ims_error *err)
{
    uint8_t existed = 0;
    enum ims_status s = store_delete_many(store, &id, 1, &existed, err);
    if (s == IMS_OK && !existed)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "image %lld does not exist", (long long)id);
    return s;
}

/* ---- rows ------------------------------------------------------------------ */

void store_row_init(struct store_image_row *row) { memset(row, 0, sizeof(*row)); }

void store_row_fini(struct store_image_row *row)
{
    if (!row)
        return;
    ims_free(row->source);
    ims_free(row->format);
    ims_free(row->caption);
    ims_free(row->metadata);
    ims_free(row->model);
    ims_free(row->embedding);
    ims_free(row->tags);
    memset(row, 0, sizeof(*row));
}

/* Columns of every row query, in this order; the embedding column is NULL
 * unless asked for. */
#define ROW_COLS                                                                                   \
    "i.id, i.source, i.sha256, i.format, i.width, i.height, i.bytes, i.added, i.caption, "        \
    "i.metadata, i.model, EXISTS (SELECT 1 FROM thumbnails t WHERE t.image_id = i.id), "         \
    "i.taken, (SELECT group_concat(g.tag, char(31)) FROM image_tags g WHERE g.image_id = i.id)"
#define ROW_EMB_NO ", NULL FROM images i "
#define ROW_EMB_YES ", e.vec FROM images i LEFT JOIN embeddings e ON e.image_id = i.id "

static char *col_strdup(sqlite3_stmt *q, int col, int *oom)
{
    const unsigned char *t = sqlite3_column_text(q, col);
    if (!t)
        return NULL;
    char *p = ims_strndup((const char *)t, (size_t)sqlite3_column_bytes(q, col));
    if (!p)
        *oom = 1;
    return p;
}

/* Fills `row` from the current result row; on failure row is left empty. */
static enum ims_status row_from_stmt(sqlite3_stmt *q, struct store_image_row *row,
                                     struct ims_error *err)
{
    int oom = 0;
    store_row_init(row);
    row->id = sqlite3_column_int64(q, 0);
    row->source = col_strdup(q, 1, &oom);
    if (sqlite3_column_type(q, 2) == SQLITE_BLOB && sqlite3_column_bytes(q, 2) == 32) {
        memcpy(row->sha256, sqlite3_column_blob(q, 2), 32);
        row->has_sha256 = 1;
    }
    row->format = col_strdup(q, 3, &oom);
    row->width = (uint32_t)sqlite3_column_int64(q, 4);
    row->height = (uint32_t)sqlite3_column_int64(q, 5);
    row->bytes = sqlite3_column_int64(q, 6);
    row->added = sqlite3_column_int64(q, 7);
    row->caption = col_strdup(q, 8, &oom);
    row->metadata = col_strdup(q, 9, &oom);
    row->model = col_strdup(q, 10, &oom);
    row->has_thumbnail = sqlite3_column_int(q, 11);
    row->has_taken = sqlite3_column_type(q, 12) != SQLITE_NULL;
    row->taken = row->has_taken ? sqlite3_column_int64(q, 12) : 0;
    if (store__tags_parse((const char *)sqlite3_column_text(q, 13),
                          (size_t)sqlite3_column_bytes(q, 13), row) != 0)
        oom = 1;
    if (sqlite3_column_type(q, 14) == SQLITE_BLOB) {
        int nb = sqlite3_column_bytes(q, 14);
        const void *b = sqlite3_column_blob(q, 14);
        if (nb <= 0 || nb % 4 != 0 || !b) {
            store_row_fini(row);
            return ims_error_set(err, IMS_ERR_CORRUPT,
                                 "catalogue: embedding of image %lld has %d bytes, not a "
                                 "whole number of floats",
                                 (long long)sqlite3_column_int64(q, 0), nb);
        }
        row->dim = (uint32_t)(nb / 4);
        row->embedding = ims_malloc((size_t)nb);
        if (!row->embedding)
            oom = 1;
        else
            vec_from_le(row->embedding, b, row->dim);
    }
    if (oom || !row->source || !row->model) {
        store_row_fini(row);
        return ims_error_set(err, oom ? IMS_ERR_NOMEM : IMS_ERR_CORRUPT,
                             oom ? "catalogue: out of memory reading a row"
                                 : "catalogue: row without source or model");
    }
    return IMS_OK;
}

static const char *get_sql(unsigned fields)
{
    return (fields & STORE_FIELD_EMBEDDING) ? "SELECT " ROW_COLS ROW_EMB_YES "WHERE i.id = ?1"
                                            : "SELECT " ROW_COLS ROW_EMB_NO "WHERE i.id = ?1";
}

enum ims_status store_get(struct store *store, int64_t id, unsigned fields,
                          struct store_image_row *row, struct ims_error *err)
{
    uint8_t found = 0;
    IMS_RETURN_ERROR_IF(!store || !row, err, IMS_ERR_INVALID, "store_get: invalid arguments");
    enum ims_status s = store_get_many(store, &id, 1, fields, row, &found, err);
    if (s == IMS_OK && !found)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "image %lld does not exist", (long long)id);
    return s;
}

enum ims_status store__sq_get_many(struct store *store, const int64_t *ids, size_t n,
                                   unsigned fields, struct store_image_row *rows, uint8_t *found,
                                   struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || (n > 0 && (!ids || !rows || !found)), err, IMS_ERR_INVALID,
                        "store_get_many: invalid arguments");
    for (size_t i = 0; i < n; i++) {
        store_row_init(&rows[i]);
        found[i] = 0;
    }
    if (n == 0)
        return IMS_OK;
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    size_t done = 0;
    enum ims_status s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        return s;
    s = store__exec(db, "BEGIN", err);
    if (s == IMS_OK)
        s = store__prepare(db, get_sql(fields), &q, err);
    for (; done < n && s == IMS_OK; done++) {
        sqlite3_bind_int64(q, 1, ids[done]);
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            s = row_from_stmt(q, &rows[done], err);
            found[done] = s == IMS_OK;
        } else if (rc != SQLITE_DONE) {
            s = store__db_error(db, rc, err, "read image");
        }
        sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    store__reader_end(store, db);
    if (s != IMS_OK) {
        for (size_t i = 0; i < n; i++) {
            store_row_fini(&rows[i]);
            found[i] = 0;
        }
    }
    return s;
}

enum ims_status store__sq_find_by_source(struct store *store, const char *source, int64_t *id,
                                         struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !source || !source[0] || !id, err, IMS_ERR_INVALID,
                        "store_find_by_source: empty source");
    int64_t v = 0;
    int found = 0;
    enum ims_status s = store__sq_read_i64(store, "SELECT id FROM images WHERE source = ?1", source,
                                           -1, &v, &found, err);
    if (s == IMS_OK && !found)
        return ims_error_set(err, IMS_ERR_NOT_FOUND, "no image with source %s", source);
    if (s == IMS_OK)
        *id = v;
    return s;
}

enum ims_status store__sq_find_by_sha256(struct store *store, const uint8_t *sha256, int64_t *id,
                                         struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !sha256 || !id, err, IMS_ERR_INVALID,
                        "store_find_by_sha256: invalid arguments");
    int64_t v = 0;
    int found = 0;
    enum ims_status s =
        store__sq_read_i64(store, "SELECT id FROM images WHERE sha256 = ?1 ORDER BY id LIMIT 1",
                           sha256, 32, &v, &found, err);
    if (s == IMS_OK && !found)
        return ims_error_set(err, IMS_ERR_NOT_FOUND, "no image with that content hash");
    if (s == IMS_OK)
        *id = v;
    return s;
}

enum ims_status store__sq_get_thumbnail(struct store *store, int64_t id, void **jpeg,
                                        size_t *n_bytes, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !jpeg || !n_bytes, err, IMS_ERR_INVALID,
                        "store_get_thumbnail: invalid arguments");
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        return s;
    s = store__prepare(db, "SELECT jpeg FROM thumbnails WHERE image_id = ?1", &q, err);
    if (s == IMS_OK) {
        sqlite3_bind_int64(q, 1, id);
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            size_t nb = (size_t)sqlite3_column_bytes(q, 0);
            const void *b = sqlite3_column_blob(q, 0);
            void *p = ims_malloc(nb);
            if (!p) {
                s = ims_error_set(err, IMS_ERR_NOMEM, "catalogue: out of memory");
            } else {
                if (nb)
                    memcpy(p, b, nb);
                *jpeg = p;
                *n_bytes = nb;
            }
        } else if (rc == SQLITE_DONE) {
            s = ims_error_set(err, IMS_ERR_NOT_FOUND, "image %lld has no thumbnail",
                              (long long)id);
        } else {
            s = store__db_error(db, rc, err, "read thumbnail");
        }
    }
    sqlite3_finalize(q);
    store__reader_put(store, db);
    return s;
}

enum ims_status store__sq_count(struct store *store, int64_t *n, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !n, err, IMS_ERR_INVALID, "store_count: invalid arguments");
    int found = 0;
    return store__sq_read_i64(store, "SELECT count(*) FROM images", NULL, 0, n, &found, err);
}

enum ims_status store__sq_max_id(struct store *store, int64_t *id, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !id, err, IMS_ERR_INVALID, "store_max_id: invalid arguments");
    int found = 0;
    return store__sq_read_i64(store, "SELECT coalesce(max(id), 0) FROM images", NULL, 0, id, &found,
                              err);
}

enum ims_status store__sq_list(struct store *store, enum store_order order, int64_t offset,
                               int64_t limit, struct store_image_row **rows_out, size_t *n_out,
                               struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !rows_out || !n_out || offset < 0 || limit < 0, err,
                        IMS_ERR_INVALID, "store_list: invalid arguments");
    static const char *const sql[] = {
        [STORE_ORDER_ID_DESC] = "SELECT " ROW_COLS ROW_EMB_NO
                                "ORDER BY i.id DESC LIMIT ?1 OFFSET ?2",
        [STORE_ORDER_ID_ASC] = "SELECT " ROW_COLS ROW_EMB_NO "ORDER BY i.id LIMIT ?1 OFFSET ?2",
        [STORE_ORDER_ADDED_DESC] = "SELECT " ROW_COLS ROW_EMB_NO
                                   "ORDER BY i.added DESC, i.id DESC LIMIT ?1 OFFSET ?2",
        [STORE_ORDER_ID_AFTER] = "SELECT " ROW_COLS ROW_EMB_NO
                                 "WHERE i.id > ?2 ORDER BY i.id LIMIT ?1",
    };
    IMS_RETURN_ERROR_IF((unsigned)order >= IMS_ARRAY_LEN(sql), err, IMS_ERR_INVALID,
                        "store_list: unknown order %d", (int)order);
    if (limit > 10000)
        limit = 10000;
    struct store_image_row *rows = NULL;
    size_t n = 0;
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    enum ims_status s = IMS_OK;
    if (limit > 0) {
        rows = ims_calloc((size_t)limit, sizeof(*rows));
        if (!rows)
            return ims_error_set(err, IMS_ERR_NOMEM, "store_list: out of memory");
    }
    s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        goto out;
    s = store__prepare(db, sql[order], &q, err);
    if (s == IMS_OK) {
        sqlite3_bind_int64(q, 1, limit);
        sqlite3_bind_int64(q, 2, offset);
        int rc = SQLITE_DONE;
        while (s == IMS_OK && n < (size_t)limit && (rc = sqlite3_step(q)) == SQLITE_ROW) {
            s = row_from_stmt(q, &rows[n], err);
            if (s == IMS_OK)
                n++;
        }
        if (s == IMS_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
            s = store__db_error(db, rc, err, "list images");
    }
    sqlite3_finalize(q);
    store__reader_put(store, db);
out:
    if (s != IMS_OK) {
        for (size_t i = 0; i < n; i++)
            store_row_fini(&rows[i]);
        ims_free(rows);
        return s;
    }
    *rows_out = rows;
    *n_out = n;
    return IMS_OK;
}

/* ---- scans ------------------------------------------------------------------ */

enum ims_status store__sq_scan_embeddings(struct store *store, int64_t after_id, size_t chunk_rows,
                                          store_scan_fn fn, void *user, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !fn, err, IMS_ERR_INVALID, "store_scan_embeddings: no callback");
    if (chunk_rows == 0)
        chunk_rows = 1024;
    IMS_RETURN_ERROR_IF(chunk_rows > (1u << 20), err, IMS_ERR_INVALID,
                        "store_scan_embeddings: chunk of %zu rows is too large", chunk_rows);
    size_t vec_bytes = (size_t)store->dim * sizeof(float), buf_bytes = 0;
    if (ims_size_mul(vec_bytes, chunk_rows, &buf_bytes) != 0)
        return ims_error_set(err, IMS_ERR_INVALID, "store_scan_embeddings: chunk too large");
    int64_t *ids = ims_malloc(chunk_rows * sizeof(*ids));
    float *vecs = ims_malloc(buf_bytes);
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    enum ims_status s = IMS_OK;
    if (!ids || !vecs) {
        s = ims_error_set(err, IMS_ERR_NOMEM, "store_scan_embeddings: out of memory");
        goto out;
    }
    s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        goto out;
    s = store__prepare(db,
                       "SELECT image_id, vec FROM embeddings WHERE image_id > ?1 "
                       "ORDER BY image_id",
                       &q, err);
    if (s != IMS_OK)
        goto out;
    sqlite3_bind_int64(q, 1, after_id);
    size_t n = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(q, 0);
        const void *b = sqlite3_column_blob(q, 1);
        size_t nb = (size_t)sqlite3_column_bytes(q, 1);
        if (nb != vec_bytes || !b) {
            s = ims_error_set(err, IMS_ERR_MODEL_MISMATCH,
                              "catalogue: embedding of image %lld has %zu floats, the model "
                              "'%s' has %u (re-embed unfinished?)",
                              (long long)id, nb / 4, store->model_name, store->dim);
            goto out;
        }
        ids[n] = id;
        vec_from_le(vecs + n * store->dim, b, store->dim);
        if (++n == chunk_rows) {
            if (fn(user, ids, vecs, n, store->dim) != 0) {
                s = ims_error_set(err, IMS_ERR_CANCELLED, "embedding scan stopped by caller");
                goto out;
            }
            n = 0;
        }
    }
    if (rc != SQLITE_DONE) {
        s = store__db_error(db, rc, err, "scan embeddings");
        goto out;
    }
    if (n > 0 && fn(user, ids, vecs, n, store->dim) != 0)
        s = ims_error_set(err, IMS_ERR_CANCELLED, "embedding scan stopped by caller");
out:
    sqlite3_finalize(q);
    store__reader_put(store, db);
    ims_free(ids);
    ims_free(vecs);
    return s;
}

/* ---- deletion log ----------------------------------------------------------- */

enum ims_status store__sq_deleted_seq(struct store *store, int64_t *seq, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !seq, err, IMS_ERR_INVALID,
                        "store_deleted_seq: invalid arguments");
    int found = 0;
    return store__sq_read_i64(store, "SELECT coalesce(max(seq), 0) FROM deleted", NULL, 0, seq,
                              &found, err);
}

enum ims_status store__sq_deleted_after(struct store *store, int64_t after_seq, size_t max_n,
                                        int64_t **ids_out, size_t *n_out, int64_t *last_seq,
                                        struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !ids_out || !n_out || !last_seq || max_n == 0 ||
                            max_n > (1u << 26),
                        err, IMS_ERR_INVALID, "store_deleted_after: invalid arguments");
    int64_t last = after_seq;
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        return s;
    s = store__prepare(db, "SELECT seq, image_id FROM deleted WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                       &q, err);
    if (s == IMS_OK) {
        sqlite3_bind_int64(q, 1, after_seq);
        sqlite3_bind_int64(q, 2, (sqlite3_int64)max_n);
        s = store__sq_id_column(db, q, 1, ids_out, n_out, &last, "store_deleted_after",
                                "read deletion log", err);
    }
    sqlite3_finalize(q);
    store__reader_put(store, db);
    if (s == IMS_OK)
        *last_seq = last;
    return s;
}

/* ---- restore (catalogue copy) --------------------------------------------------- */

enum ims_status store__sq_restore_many(struct store *store, const struct store_restore_row *rows,
                                       size_t n, struct ims_error *err)
{
    sqlite3_stmt *ins = NULL, *emb = NULL, *th = NULL, *seq = NULL, *tg = NULL;
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    /* the largest id ever given: AUTOINCREMENT's counter */
    int64_t top = 0;
    int found = 0;
    s = store__prepare(store->wdb,
                       "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = "
                       "'images'), 0), coalesce((SELECT max(id) FROM images), 0))",
                       &seq, err);
    if (s == IMS_OK)
        s = step_i64(seq, &top, &found, err, "read id counter");
    if (s == IMS_OK && rows[0].row->id <= top)
        s = ims_error_set(err, IMS_ERR_EXISTS,
                          "row 0 (id %lld): the catalogue has given out ids up to %lld; restored "
                          "rows must come after them",
                          (long long)rows[0].row->id, (long long)top);
    if (s == IMS_OK)
        s = store__prepare(store->wdb,
                           "INSERT INTO images(id, source, sha256, format, width, height, bytes, "
                           "added, caption, metadata, model) "
                           "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                           &ins, err);
    if (s == IMS_OK)
        s = store__prepare(store->wdb, "INSERT INTO embeddings(image_id, vec) VALUES(?1, ?2)", &emb,
                           err);
    if (s == IMS_OK)
        s = store__prepare(store->wdb, "INSERT INTO thumbnails(image_id, jpeg) VALUES(?1, ?2)", &th,
                           err);
    if (s == IMS_OK)
        s = store__prepare(store->wdb,
                           "INSERT OR IGNORE INTO image_tags(image_id, tag, tag_key) "
                           "VALUES(?1, ?2, ?3)",
                           &tg, err);
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        const struct store_image_row *r = rows[i].row;
        sqlite3_bind_int64(ins, 1, r->id);
        sqlite3_bind_text(ins, 2, r->source, -1, SQLITE_STATIC);
        if (r->has_sha256)
            sqlite3_bind_blob(ins, 3, r->sha256, 32, SQLITE_STATIC);
        else
            sqlite3_bind_null(ins, 3);
        sqlite3_bind_text(ins, 4, r->format, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 5, r->width);
        sqlite3_bind_int64(ins, 6, r->height);
        sqlite3_bind_int64(ins, 7, r->bytes);
        sqlite3_bind_int64(ins, 8, r->added);
        sqlite3_bind_text(ins, 9, r->caption, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 10, r->metadata, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 11, r->model, -1, SQLITE_STATIC);
        s = step_done(ins, err, "restore image");
        if (s == IMS_OK) {
            sqlite3_bind_int64(emb, 1, r->id);
            s = bind_vec(emb, 2, r->embedding, r->dim, err);
        }
        if (s == IMS_OK)
            s = step_done(emb, err, "restore embedding");
        if (s == IMS_OK && rows[i].thumbnail_bytes > 0)
            s = put_thumb(th, r->id, rows[i].thumbnail, rows[i].thumbnail_bytes, err);
        /* the row's tags (schema v4), keys as store_tag_normalize makes them */
        for (size_t t = 0; s == IMS_OK && t < r->n_tags; t++) {
            char tag[STORE_TAG_MAX_BYTES + 1], key[STORE_TAG_MAX_BYTES + 1];
            s = store_tag_normalize(r->tags[t], tag, key, err);
            sqlite3_bind_int64(tg, 1, r->id);
            sqlite3_bind_text(tg, 2, tag, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(tg, 3, key, -1, SQLITE_TRANSIENT);
            if (s == IMS_OK)
                s = step_done(tg, err, "restore tag");
            sqlite3_reset(tg);
        }
        if (s == IMS_OK)
            s = store__sq_log_change(store->wdb, r->id, STORE_CHANGE_INSERT, err);
        if (s != IMS_OK)
            ims_error_prefix(err, "row %zu (id %lld, %s)", i, (long long)r->id, r->source);
    }
    sqlite3_finalize(tg);
    sqlite3_finalize(seq);
    sqlite3_finalize(ins);
    sqlite3_finalize(emb);
    sqlite3_finalize(th);
    return store__write_end(store, s, err);
}

/* ---- filters (issue 10) ---------------------------------------------------------- */

enum ims_status store__sq_filter_ids(struct store *store,
                                     const char *const prm[STORE__FILTER_PARAMS], int64_t **ids_out,
                                     size_t *n_out, struct ims_error *err)
{
    static const char sql[] =
        "SELECT id FROM images WHERE"
        " (?1 IS NULL OR added >= CAST(?1 AS INTEGER)) AND (?2 IS NULL OR added <= CAST(?2 AS INTEGER))"
        " AND (?3 IS NULL OR taken >= CAST(?3 AS INTEGER))"
        " AND (?4 IS NULL OR taken <= CAST(?4 AS INTEGER))"
        " AND width >= CAST(?5 AS INTEGER) AND height >= CAST(?6 AS INTEGER)"
        " AND (?7 IS NULL OR instr(?7, ',' || lower(format) || ',') > 0)"
        " AND (?8 = '0' OR (?8 = '1' AND width > height) OR (?8 = '2' AND height > width)"
        "      OR (?8 = '3' AND width = height AND width > 0))"
        " AND (?9 IS NULL OR substr(source, 1, length(?9)) = ?9)"
        " AND (?10 IS NULL OR id IN (SELECT image_id FROM image_tags"
        "      WHERE tag_key IN (SELECT value FROM json_each(?10))"
        "      GROUP BY image_id HAVING count(*) = CAST(?11 AS INTEGER)))"
        " ORDER BY id";
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        return s;
    s = store__prepare(db, sql, &q, err);
    if (s == IMS_OK) {
        for (int i = 0; i < STORE__FILTER_PARAMS; i++)
            sqlite3_bind_text(q, i + 1, prm[i], -1, SQLITE_STATIC);
        s = store__sq_id_column(db, q, 0, ids_out, n_out, NULL, "store_filter_ids", "filter images",
                                err);
    }
    sqlite3_finalize(q);
    store__reader_put(store, db);
    return s;
}

/* ---- tags (issue 10) ------------------------------------------------------------- */

enum ims_status store__sq_tags_update(struct store *store, int64_t id, const char *const *tags,
                                      const char *const *keys, size_t n_add,
                                      const char *const *rkeys, size_t n_remove,
                                      struct ims_error *err)
{
    sqlite3_stmt *del = NULL, *ins = NULL, *cnt = NULL;
    int exists = 0;
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    s = image_exists(store->wdb, id, &exists, err);
    if (s == IMS_OK && !exists)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "image %lld does not exist", (long long)id);
    if (s == IMS_OK)
        s = store__prepare(
            store->wdb, "DELETE FROM image_tags WHERE image_id = ?1 AND tag_key = ?2", &del, err);
    if (s == IMS_OK)
        s = store__prepare(store->wdb,
                           "INSERT INTO image_tags(image_id, tag, tag_key) VALUES(?1, ?2, ?3) "
                           "ON CONFLICT(image_id, tag_key) DO UPDATE SET tag = excluded.tag",
                           &ins, err);
    if (s == IMS_OK)
        s = store__prepare(store->wdb, "SELECT count(*) FROM image_tags WHERE image_id = ?1", &cnt,
                           err);
    for (size_t i = 0; s == IMS_OK && i < n_remove; i++) {
        sqlite3_bind_int64(del, 1, id);
        sqlite3_bind_text(del, 2, rkeys[i], -1, SQLITE_STATIC);
        s = step_done(del, err, "remove tag");
        sqlite3_reset(del);
    }
    for (size_t i = 0; s == IMS_OK && i < n_add; i++) {
        sqlite3_bind_int64(ins, 1, id);
        sqlite3_bind_text(ins, 2, tags[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 3, keys[i], -1, SQLITE_STATIC);
        s = step_done(ins, err, "add tag");
        sqlite3_reset(ins);
    }
    if (s == IMS_OK) {
        int64_t n = 0;
        int found = 0;
        sqlite3_bind_int64(cnt, 1, id);
        s = step_i64(cnt, &n, &found, err, "count tags");
        if (s == IMS_OK && n > STORE_TAGS_MAX)
            s = ims_error_set(err, IMS_ERR_INVALID,
                              "image %lld would have %lld tags (at most %d)", (long long)id,
                              (long long)n, STORE_TAGS_MAX);
    }
    /* the row changed: every node's row cache learns it from the feed */
    if (s == IMS_OK)
        s = store__sq_log_change(store->wdb, id, STORE_CHANGE_ROW, err);
    sqlite3_finalize(del);
    sqlite3_finalize(ins);
    sqlite3_finalize(cnt);
    return store__write_end(store, s, err);
}
