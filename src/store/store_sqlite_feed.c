/* SPDX-License-Identifier: MIT */
/*
 * store_sqlite_feed.c: the SQLite backend's change feed and job items, the
 * two things that let several processes (a server and the CLI, or several
 * servers on one folder) follow and share one catalogue.
 *
 * Change feed: `changes(seq AUTOINCREMENT, image_id, kind)`, appended by
 * the image writes in their own transaction. SQLite has one writer at a time,
 * so commit order is seq order. The newest seq is read from sqlite_sequence
 * (one row, and it survives trimming); the floor is meta.change_floor.
 * store_wait_change polls that counter every STORE_WAIT_POLL_MS on a
 * reader: cheap, and it sees other processes' commits.
 *
 * Job items: `job_items` rows, state 0 queued, 1 claimed, 2 done, 3 failed,
 * lease_until in unix milliseconds of the local clock. A claim, renew or
 * finish is one IMMEDIATE transaction, so two claimers (threads or
 * processes) never take the same item.
 */

#include "store_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- change feed --------------------------------------------------------------- */

enum ims_status store__sq_log_change(sqlite3 *db, int64_t id, enum store_change_kind kind,
                                     struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    /* prepare_v2 caches nothing; the statement is small and the batch's
     * other statements dominate */
    enum ims_status s =
        store__prepare(db, "INSERT INTO changes(image_id, kind) VALUES(?1, ?2)", &q, err);
    if (s != IMS_OK)
        return s;
    sqlite3_bind_int64(q, 1, id);
    sqlite3_bind_int(q, 2, (int)kind);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_DONE)
        s = store__db_error(db, rc, err, "log change");
    sqlite3_finalize(q);
    q = NULL;
    /* schema v5: a replaced embedding's version is its change's seq, kept
     * when the feed is trimmed (store_embeddings_changed_after) */
    if (s == IMS_OK && kind == STORE_CHANGE_UPDATE) {
        s = store__prepare(db,
                           "INSERT INTO embedding_versions(image_id, seq) "
                           "VALUES(?1, last_insert_rowid()) "
                           "ON CONFLICT(image_id) DO UPDATE SET seq = excluded.seq",
                           &q, err);
        if (s == IMS_OK) {
            sqlite3_bind_int64(q, 1, id);
            rc = sqlite3_step(q);
            if (rc != SQLITE_DONE)
                s = store__db_error(db, rc, err, "log embedding version");
        }
        sqlite3_finalize(q);
    }
    return s;
}

static enum ims_status q_i64(sqlite3 *db, const char *sql, int64_t *v, struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__prepare(db, sql, &q, err);
    if (s != IMS_OK)
        return s;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int64(q, 0);
    else if (rc == SQLITE_DONE)
        *v = 0;
    else
        s = store__db_error(db, rc, err, "read");
    sqlite3_finalize(q);
    return s;
}

#define SEQ_SQL "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)"
#define FLOOR_SQL "SELECT coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'change_floor'), 0)"

/* SEQ_SQL and FLOOR_SQL always give one row (coalesce) */
enum ims_status store__sq_change_seq(struct store *store, int64_t *seq, struct ims_error *err)
{
    int found = 0;
    return store__sq_read_i64(store, SEQ_SQL, NULL, 0, seq, &found, err);
}

enum ims_status store__sq_change_floor(struct store *store, int64_t *floor, struct ims_error *err)
{
    int found = 0;
    return store__sq_read_i64(store, FLOOR_SQL, NULL, 0, floor, &found, err);
}

enum ims_status store__sq_changes_after(struct store *store, int64_t after_seq, size_t max_n,
                                        struct store_change *out, size_t *n_out,
                                        struct ims_error *err)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    size_t n = 0;
    int64_t floor = 0;
    enum ims_status s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        return s;
    s = store__exec(db, "BEGIN", err);
    if (s == IMS_OK)
        s = q_i64(db, FLOOR_SQL, &floor, err);
    if (s == IMS_OK && after_seq < floor)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND,
                          "the change feed was trimmed up to seq %lld; a replica at seq %lld "
                          "must rebuild",
                          (long long)floor, (long long)after_seq);
    if (s == IMS_OK)
        s = store__prepare(db,
                           "SELECT seq, image_id, kind FROM changes WHERE seq > ?1 "
                           "ORDER BY seq LIMIT ?2",
                           &q, err);
    if (s == IMS_OK) {
        sqlite3_bind_int64(q, 1, after_seq);
        sqlite3_bind_int64(q, 2, (sqlite3_int64)max_n);
        int rc;
        while ((rc = sqlite3_step(q)) == SQLITE_ROW && n < max_n) {
            out[n].seq = sqlite3_column_int64(q, 0);
            out[n].id = sqlite3_column_int64(q, 1);
            out[n].kind = (enum store_change_kind)sqlite3_column_int(q, 2);
            n++;
        }
        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
            s = store__db_error(db, rc, err, "read changes");
    }
    sqlite3_finalize(q);
    store__reader_end(store, db);
    if (s == IMS_OK)
        *n_out = n;
    return s;
}

enum ims_status store__sq_change_trim(struct store *store, int64_t upto, struct ims_error *err)
{
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    int64_t newest = 0, floor = 0;
    s = q_i64(store->wdb, SEQ_SQL, &newest, err);
    if (s == IMS_OK)
        s = q_i64(store->wdb, FLOOR_SQL, &floor, err);
    if (upto > newest)
        upto = newest;
    if (s == IMS_OK && upto > floor) {
        sqlite3_stmt *q = NULL;
        s = store__prepare(store->wdb, "DELETE FROM changes WHERE seq <= ?1", &q, err);
        if (s == IMS_OK) {
            sqlite3_bind_int64(q, 1, upto);
            int rc = sqlite3_step(q);
            if (rc != SQLITE_DONE)
                s = store__db_error(store->wdb, rc, err, "trim changes");
        }
        sqlite3_finalize(q);
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", (long long)upto);
        if (s == IMS_OK)
            s = store__sq_meta_set(store->wdb, "change_floor", buf, err);
    }
    return store__write_end(store, s, err);
}

enum ims_status store__sq_embeddings_changed_after(struct store *store, int64_t after_seq,
                                                   int64_t **ids_out, size_t *n_out,
                                                   struct ims_error *err)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        return s;
    s = store__prepare(db,
                       "SELECT v.image_id FROM embedding_versions v JOIN images i ON i.id = "
                       "v.image_id WHERE v.seq > ?1 ORDER BY v.image_id",
                       &q, err);
    if (s == IMS_OK) {
        sqlite3_bind_int64(q, 1, after_seq);
        s = store__sq_id_column(db, q, 0, ids_out, n_out, NULL, "embedding versions",
                                "read embedding versions", err);
    }
    sqlite3_finalize(q);
    store__reader_put(store, db);
    return s;
}

enum ims_status store__sq_wait_change(struct store *store, int64_t known_seq, int timeout_ms,
                                      int64_t *seq_now, struct ims_error *err)
{
    int64_t deadline = store__unix_now_ms() + timeout_ms;
    for (;;) {
        int64_t seq = 0;
        enum ims_status s = store__sq_change_seq(store, &seq, err);
        if (s != IMS_OK)
            return s;
        int64_t left = deadline - store__unix_now_ms();
        if (seq > known_seq || left <= 0) {
            *seq_now = seq;
            return IMS_OK;
        }
        int64_t nap = left < STORE_WAIT_POLL_MS ? left : STORE_WAIT_POLL_MS;
        struct timespec ts = {(time_t)(nap / 1000), (long)(nap % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* ---- job items ------------------------------------------------------------------- */

/* Runs `sql` binding ?1 text and ?2.. int64; *changes = rows changed. */
static enum ims_status w_exec(sqlite3 *db, const char *sql, const char *t1, const int64_t *args,
                              int n_args, int *changes, struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__prepare(db, sql, &q, err);
    if (s != IMS_OK)
        return s;
    if (t1)
        sqlite3_bind_text(q, 1, t1, -1, SQLITE_STATIC);
    for (int i = 0; i < n_args; i++)
        sqlite3_bind_int64(q, 2 + i, args[i]);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        s = store__db_error(db, rc, err, "write job");
    else if (changes)
        *changes = sqlite3_changes(db);
    sqlite3_finalize(q);
    return s;
}

/* A sealed job whose items all finished becomes done. */
static enum ims_status settle_job(sqlite3 *db, const char *id, struct ims_error *err)
{
    int64_t args[] = {store__unix_now()};
    return w_exec(db,
                  "UPDATE jobs SET state = 'done', updated = ?2 WHERE id = ?1 AND sealed = 1 "
                  "AND state IN ('queued', 'running') AND NOT EXISTS (SELECT 1 FROM job_items "
                  "WHERE job_id = ?1 AND state < 2)",
                  id, args, 1, NULL, err);
}

/* Reads (exists, sealed, n_items) of a job inside the write transaction. */
static enum ims_status job_head(sqlite3 *db, const char *id, int *sealed, int64_t *n_items,
                                struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    enum ims_status s =
        store__prepare(db, "SELECT sealed, n_items FROM jobs WHERE id = ?1", &q, err);
    if (s != IMS_OK)
        return s;
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *sealed = sqlite3_column_int(q, 0);
        *n_items = sqlite3_column_int64(q, 1);
    } else if (rc == SQLITE_DONE) {
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "job %s does not exist", id);
    } else {
        s = store__db_error(db, rc, err, "read job");
    }
    sqlite3_finalize(q);
    return s;
}

enum ims_status store__sq_job_add_items(struct store *store, const char *id,
                                        const char *const *sources, size_t n, struct ims_error *err)
{
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    int sealed = 0;
    int64_t have = 0;
    sqlite3_stmt *q = NULL;
    s = job_head(store->wdb, id, &sealed, &have, err);
    if (s == IMS_OK && sealed)
        s = ims_error_set(err, IMS_ERR_INVALID, "job %s is sealed: no items can be added", id);
    if (s == IMS_OK)
        s = store__prepare(
            store->wdb, "INSERT INTO job_items(job_id, idx, source) VALUES(?1, ?2, ?3)", &q, err);
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, have + (int64_t)i);
        sqlite3_bind_text(q, 3, sources[i], -1, SQLITE_STATIC);
        int rc = sqlite3_step(q);
        sqlite3_reset(q);
        if (rc != SQLITE_DONE)
            s = store__db_error(store->wdb, rc, err, "add job item");
    }
    sqlite3_finalize(q);
    if (s == IMS_OK) {
        int64_t args[] = {(int64_t)n, store__unix_now()};
        s = w_exec(store->wdb,
                   "UPDATE jobs SET n_items = n_items + ?2, total = total + ?2, updated = ?3 "
                   "WHERE id = ?1",
                   id, args, 2, NULL, err);
    }
    return store__write_end(store, s, err);
}

enum ims_status store__sq_job_seal(struct store *store, const char *id, struct ims_error *err)
{
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    int sealed = 0;
    int64_t have = 0;
    s = job_head(store->wdb, id, &sealed, &have, err);
    if (s == IMS_OK && !sealed) {
        int64_t args[] = {store__unix_now()};
        s = w_exec(store->wdb, "UPDATE jobs SET sealed = 1, updated = ?2 WHERE id = ?1", id, args,
                   1, NULL, err);
        if (s == IMS_OK)
            s = settle_job(store->wdb, id, err);
    }
    return store__write_end(store, s, err);
}

enum ims_status store__sq_job_claim(struct store *store, const char *node_id, size_t max_n,
                                    int64_t lease_ms, struct store_job_item **items_out,
                                    size_t *n_out, struct ims_error *err)
{
    struct store_job_item *items = ims_calloc(max_n, sizeof(*items));
    if (!items)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_job_claim: out of memory");
    size_t n = 0;
    sqlite3_stmt *sel = NULL, *up = NULL;
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK) {
        ims_free(items);
        return s;
    }
    int64_t now = store__unix_now_ms();
    s = store__prepare(store->wdb,
                       "SELECT id, job_id, idx, source, attempts FROM job_items "
                       "WHERE state = 0 OR (state = 1 AND lease_until < ?1) ORDER BY id LIMIT ?2",
                       &sel, err);
    if (s == IMS_OK)
        s = store__prepare(store->wdb,
                           "UPDATE job_items SET state = 1, claimed_by = ?2, lease_until = ?3, "
                           "attempts = attempts + 1 WHERE id = ?1",
                           &up, err);
    if (s == IMS_OK) {
        sqlite3_bind_int64(sel, 1, now);
        sqlite3_bind_int64(sel, 2, (sqlite3_int64)max_n);
        int rc;
        while (s == IMS_OK && (rc = sqlite3_step(sel)) == SQLITE_ROW) {
            struct store_job_item *it = &items[n];
            it->item_id = sqlite3_column_int64(sel, 0);
            snprintf(it->job_id, sizeof(it->job_id), "%s",
                     (const char *)sqlite3_column_text(sel, 1));
            it->index = sqlite3_column_int64(sel, 2);
            const char *src = (const char *)sqlite3_column_text(sel, 3);
            it->source = ims_strdup(src ? src : "");
            it->attempts = sqlite3_column_int(sel, 4) + 1;
            n++;
            if (!it->source)
                s = ims_error_set(err, IMS_ERR_NOMEM, "store_job_claim: out of memory");
        }
        if (s == IMS_OK && rc != SQLITE_DONE)
            s = store__db_error(store->wdb, rc, err, "claim job items");
    }
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        sqlite3_bind_int64(up, 1, items[i].item_id);
        sqlite3_bind_text(up, 2, node_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(up, 3, now + lease_ms);
        int rc = sqlite3_step(up);
        sqlite3_reset(up);
        if (rc != SQLITE_DONE)
            s = store__db_error(store->wdb, rc, err, "claim job item");
        if (s == IMS_OK && (i == 0 || strcmp(items[i].job_id, items[i - 1].job_id) != 0)) {
            int64_t args[] = {store__unix_now()};
            s = w_exec(store->wdb,
                       "UPDATE jobs SET state = 'running', updated = ?2 WHERE id = ?1 AND "
                       "state = 'queued'",
                       items[i].job_id, args, 1, NULL, err);
        }
    }
    sqlite3_finalize(sel);
    sqlite3_finalize(up);
    s = store__write_end(store, s, err);
    if (s != IMS_OK) {
        store_job_items_free(items, n);
        return s;
    }
    if (n == 0) {
        ims_free(items);
        items = NULL;
    }
    *items_out = items;
    *n_out = n;
    return IMS_OK;
}

enum ims_status store__sq_job_renew(struct store *store, const char *node_id,
                                    const int64_t *item_ids, size_t n, int64_t lease_ms,
                                    uint8_t *renewed, struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    int64_t until = store__unix_now_ms() + lease_ms;
    s = store__prepare(store->wdb,
                       "UPDATE job_items SET lease_until = ?3 WHERE id = ?1 AND state = 1 AND "
                       "claimed_by = ?2",
                       &q, err);
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        sqlite3_bind_int64(q, 1, item_ids[i]);
        sqlite3_bind_text(q, 2, node_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 3, until);
        int rc = sqlite3_step(q);
        sqlite3_reset(q);
        if (rc != SQLITE_DONE)
            s = store__db_error(store->wdb, rc, err, "renew lease");
        else if (renewed)
            renewed[i] = sqlite3_changes(store->wdb) > 0;
    }
    sqlite3_finalize(q);
    return store__write_end(store, s, err);
}

enum ims_status store__sq_job_release_node(struct store *store, const char *node_id, int64_t *n,
                                           struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    /* an expired lease: claimable at once, by this node or any other */
    s = store__prepare(store->wdb,
                       "UPDATE job_items SET lease_until = 0 WHERE state = 1 AND claimed_by = ?1",
                       &q, err);
    if (s == IMS_OK) {
        sqlite3_bind_text(q, 1, node_id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(q);
        if (rc != SQLITE_DONE)
            s = store__db_error(store->wdb, rc, err, "release leases");
        else if (n)
            *n = sqlite3_changes(store->wdb);
    }
    sqlite3_finalize(q);
    return store__write_end(store, s, err);
}

enum ims_status store__sq_job_finish(struct store *store, const char *node_id,
                                     const struct store_item_result *results, size_t n,
                                     uint8_t *accepted, struct ims_error *err)
{
    sqlite3_stmt *up = NULL, *get = NULL, *cnt = NULL, *errins = NULL, *own = NULL;
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    int64_t now = store__unix_now();
    s = store__prepare(store->wdb,
                       "UPDATE job_items SET state = ?3, outcome = ?4, image_id = ?5, code = ?6, "
                       "error = substr(?7, 1, ?8), lease_until = 0 "
                       "WHERE id = ?1 AND state = 1 AND claimed_by = ?2",
                       &up, err);
    if (s == IMS_OK)
        s = store__prepare(store->wdb, "SELECT job_id, source FROM job_items WHERE id = ?1", &get,
                           err);
    if (s == IMS_OK)
        s = store__prepare(store->wdb,
                           "UPDATE jobs SET done = done + ?2, failed = failed + ?3, "
                           "n_errors = n_errors + ?3, updated = ?4 WHERE id = ?1 "
                           "RETURNING n_errors",
                           &cnt, err);
    if (s == IMS_OK)
        s = store__prepare(store->wdb,
                           "INSERT INTO job_errors(job_id, seq, url, error, code) "
                           "VALUES(?1, ?2, substr(?3, 1, ?6), substr(?4, 1, ?6), ?5)",
                           &errins, err);
    /* a redone item reported as a duplicate of its own row (an earlier
     * attempt committed it and died before this finish): the same source,
     * added since its job was created, and no item records adding it */
    if (s == IMS_OK)
        s = store__prepare(store->wdb,
                           "UPDATE job_items SET outcome = 0 WHERE id = ?1 AND attempts > 1 AND "
                           "EXISTS (SELECT 1 FROM images i, jobs b WHERE i.id = ?2 AND i.source "
                           "= job_items.source AND b.id = job_items.job_id AND i.added >= "
                           "b.created) AND NOT EXISTS (SELECT 1 FROM job_items o WHERE "
                           "o.image_id = ?2 AND o.outcome = 0 AND o.id <> ?1)",
                           &own, err);
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        const struct store_item_result *r = &results[i];
        int failed = r->outcome == STORE_ITEM_ERROR;
        sqlite3_bind_int64(up, 1, r->item_id);
        sqlite3_bind_text(up, 2, node_id, -1, SQLITE_STATIC);
        sqlite3_bind_int(up, 3, failed ? STORE_ITEM_FAILED : STORE_ITEM_DONE);
        sqlite3_bind_int(up, 4, (int)r->outcome);
        if (failed)
            sqlite3_bind_null(up, 5);
        else
            sqlite3_bind_int64(up, 5, r->image_id);
        sqlite3_bind_text(up, 6, failed ? (r->code ? r->code : "") : NULL, -1, SQLITE_STATIC);
        sqlite3_bind_text(up, 7, failed ? (r->error ? r->error : "") : NULL, -1, SQLITE_STATIC);
        sqlite3_bind_int(up, 8, STORE_JOB_ERROR_MAX_BYTES);
        int rc = sqlite3_step(up);
        sqlite3_reset(up);
        if (rc != SQLITE_DONE) {
            s = store__db_error(store->wdb, rc, err, "finish job item");
            break;
        }
        int ok = sqlite3_changes(store->wdb) > 0;
        if (accepted)
            accepted[i] = (uint8_t)ok;
        if (!ok)
            continue;
        sqlite3_bind_int64(get, 1, r->item_id);
        rc = sqlite3_step(get);
        if (rc != SQLITE_ROW) {
            s = store__db_error(store->wdb, rc, err, "read job item");
            sqlite3_reset(get);
            break;
        }
        char job_id[STORE_JOB_ID_MAX_BYTES + 1];
        snprintf(job_id, sizeof(job_id), "%s", (const char *)sqlite3_column_text(get, 0));
        char *source = ims_strdup((const char *)sqlite3_column_text(get, 1));
        sqlite3_reset(get);
        if (!source) {
            s = ims_error_set(err, IMS_ERR_NOMEM, "store_job_finish: out of memory");
            break;
        }
        sqlite3_bind_text(cnt, 1, job_id, -1, SQLITE_STATIC);
        sqlite3_bind_int(cnt, 2, !failed);
        sqlite3_bind_int(cnt, 3, failed);
        sqlite3_bind_int64(cnt, 4, now);
        rc = sqlite3_step(cnt);
        int64_t n_errors = rc == SQLITE_ROW ? sqlite3_column_int64(cnt, 0) : 0;
        if (rc == SQLITE_ROW)
            rc = sqlite3_step(cnt);
        sqlite3_reset(cnt);
        if (rc != SQLITE_DONE) {
            s = store__db_error(store->wdb, rc, err, "count job item");
            ims_free(source);
            break;
        }
        if (failed && n_errors <= STORE_JOB_MAX_ERRORS) {
            sqlite3_bind_text(errins, 1, job_id, -1, SQLITE_STATIC);
            sqlite3_bind_int64(errins, 2, n_errors - 1);
            sqlite3_bind_text(errins, 3, source, -1, SQLITE_STATIC);
            sqlite3_bind_text(errins, 4, r->error ? r->error : "", -1, SQLITE_STATIC);
            sqlite3_bind_text(errins, 5, r->code ? r->code : "", -1, SQLITE_STATIC);
            sqlite3_bind_int(errins, 6, STORE_JOB_ERROR_MAX_BYTES);
            rc = sqlite3_step(errins);
            sqlite3_reset(errins);
            if (rc != SQLITE_DONE)
                s = store__db_error(store->wdb, rc, err, "store job error");
        }
        ims_free(source);
        if (s == IMS_OK && r->outcome == STORE_ITEM_DUPLICATE) {
            sqlite3_bind_int64(own, 1, r->item_id);
            sqlite3_bind_int64(own, 2, r->image_id);
            rc = sqlite3_step(own);
            sqlite3_reset(own);
            if (rc != SQLITE_DONE)
                s = store__db_error(store->wdb, rc, err, "recognise the item's own row");
        }
        if (s == IMS_OK)
            s = settle_job(store->wdb, job_id, err);
    }
    sqlite3_finalize(own);
    sqlite3_finalize(up);
    sqlite3_finalize(get);
    sqlite3_finalize(cnt);
    sqlite3_finalize(errins);
    s = store__write_end(store, s, err);
    if (s != IMS_OK && accepted)
        memset(accepted, 0, n);
    return s;
}

enum ims_status store__sq_job_item_outcome(struct store *store, int64_t item_id, int *outcome,
                                           struct ims_error *err)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        return s;
    s = store__prepare(db, "SELECT coalesce(outcome, -1) FROM job_items WHERE id = ?1", &q, err);
    if (s == IMS_OK) {
        sqlite3_bind_int64(q, 1, item_id);
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW)
            *outcome = sqlite3_column_int(q, 0);
        else if (rc == SQLITE_DONE)
            s = ims_error_set(err, IMS_ERR_NOT_FOUND, "job item %lld does not exist",
                              (long long)item_id);
        else
            s = store__db_error(db, rc, err, "read job item");
    }
    sqlite3_finalize(q);
    store__reader_put(store, db);
    return s;
}

enum ims_status store__sq_job_item_get(struct store *store, int64_t item_id,
                                       enum store_item_state *state, char *node, size_t node_cap,
                                       int *attempts, int64_t *image_id, struct ims_error *err)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        return s;
    s = store__prepare(db,
                       "SELECT state, coalesce(claimed_by, ''), attempts, coalesce(image_id, 0) "
                       "FROM job_items WHERE id = ?1",
                       &q, err);
    if (s == IMS_OK) {
        sqlite3_bind_int64(q, 1, item_id);
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            *state = (enum store_item_state)sqlite3_column_int(q, 0);
            snprintf(node, node_cap, "%s", (const char *)sqlite3_column_text(q, 1));
            *attempts = sqlite3_column_int(q, 2);
            *image_id = sqlite3_column_int64(q, 3);
        } else if (rc == SQLITE_DONE) {
            s = ims_error_set(err, IMS_ERR_NOT_FOUND, "job item %lld does not exist",
                              (long long)item_id);
        } else {
            s = store__db_error(db, rc, err, "read job item");
        }
    }
    sqlite3_finalize(q);
    store__reader_put(store, db);
    return s;
}
