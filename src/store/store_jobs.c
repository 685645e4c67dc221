/* SPDX-License-Identifier: MIT */
/*
 * store_jobs.c: ingest jobs, so that GET /api/v1/jobs/ID survives restarts.
 *
 * A job is one row of `jobs` (state and counters) plus its per-item errors in
 * `job_errors`, numbered 0, 1, ... in the order reported. Only the first
 * STORE_JOB_MAX_ERRORS are stored; jobs.n_errors counts all of them, so a
 * job with a million broken URLs costs a bounded amount of space and the
 * reader still learns how many there were. Each call is one transaction.
 * Job items (claims and leases) are in store_sqlite_feed.c.
 */

#include "store_int.h"

#include <stdio.h>
#include <string.h>

#define STR_(x) #x
#define STR(x) STR_(x)

static const char *const state_names[] = {
    [STORE_JOB_QUEUED] = "queued",
    [STORE_JOB_RUNNING] = "running",
    [STORE_JOB_DONE] = "done",
    [STORE_JOB_FAILED] = "failed",
};

const char *store_job_state_name(enum store_job_state s)
{
    if ((unsigned)s >= IMS_ARRAY_LEN(state_names))
        return "unknown";
    return state_names[s];
}

static int state_from_name(const char *t, enum store_job_state *out)
{
    for (size_t i = 0; t && i < IMS_ARRAY_LEN(state_names); i++) {
        if (strcmp(t, state_names[i]) == 0) {
            *out = (enum store_job_state)i;
            return 1;
        }
    }
    return 0;
}

void store_job_fini(struct store_job *job)
{
    if (!job)
        return;
    for (size_t i = 0; i < job->n_errors; i++) {
        ims_free(job->errors[i].url);
        ims_free(job->errors[i].error);
        ims_free(job->errors[i].code);
    }
    ims_free(job->errors);
    memset(job, 0, sizeof(*job));
}

/* Runs one write statement binding (?1 text id, ?2.. ints); *changes gets the
 * number of rows changed. */
static enum ims_status job_write(struct store *store, const char *sql, const char *id,
                                 const int64_t *args, int n_args, int *changes,
                                 struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__prepare(store->wdb, sql, &q, err);
    if (s != IMS_OK)
        return s;
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    for (int i = 0; i < n_args; i++)
        sqlite3_bind_int64(q, 2 + i, args[i]);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_DONE)
        s = store__db_error(store->wdb, rc, err, "write job");
    else if (changes)
        *changes = sqlite3_changes(store->wdb);
    sqlite3_finalize(q);
    return s;
}

enum ims_status store__sq_job_create(struct store *store, const char *id, int64_t total,
                                     struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store, err, IMS_ERR_INVALID, "store_job_create: no store");
    enum ims_status s = store__check_job_id(id, err);
    if (s != IMS_OK)
        return s;
    IMS_RETURN_ERROR_IF(total < 0, err, IMS_ERR_INVALID, "job %s: negative total", id);
    s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    int64_t now = store__unix_now();
    int64_t args[] = {total, now};
    int changes = 0;
    s = job_write(store,
                  "INSERT INTO jobs(id, state, total, created, updated) "
                  "VALUES(?1, 'queued', ?2, ?3, ?3) ON CONFLICT(id) DO NOTHING",
                  id, args, 2, &changes, err);
    if (s == IMS_OK && changes == 0)
        s = ims_error_set(err, IMS_ERR_EXISTS, "job %s already exists", id);
    return store__write_end(store, s, err);
}

enum ims_status store__sq_job_update(struct store *store, const char *id,
                                     enum store_job_state state, int64_t done, int64_t failed,
                                     struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store, err, IMS_ERR_INVALID, "store_job_update: no store");
    enum ims_status s = store__check_job_id(id, err);
    if (s != IMS_OK)
        return s;
    IMS_RETURN_ERROR_IF((unsigned)state >= IMS_ARRAY_LEN(state_names), err, IMS_ERR_INVALID,
                        "job %s: unknown state %d", id, (int)state);
    IMS_RETURN_ERROR_IF(done < 0 || failed < 0, err, IMS_ERR_INVALID,
                        "job %s: negative counters", id);
    s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    int64_t args[] = {(int64_t)state, done, failed, store__unix_now()};
    int changes = 0;
    s = job_write(store,
                  "UPDATE jobs SET state = CASE ?2 WHEN 0 THEN 'queued' WHEN 1 THEN 'running' "
                  "WHEN 2 THEN 'done' ELSE 'failed' END, done = ?3, failed = ?4, updated = ?5 "
                  "WHERE id = ?1",
                  id, args, 4, &changes, err);
    if (s == IMS_OK && changes == 0)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "job %s does not exist", id);
    return store__write_end(store, s, err);
}

enum ims_status store__sq_job_add_errors(struct store *store, const char *id,
                                         const char *const *urls, const char *const *codes,
                                         const char *const *errors, size_t n, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || (n > 0 && (!urls || !errors)), err, IMS_ERR_INVALID,
                        "store_job_add_errors: invalid arguments");
    enum ims_status s = store__check_job_id(id, err);
    if (s != IMS_OK || n == 0)
        return s;
    sqlite3_stmt *cnt = NULL, *ins = NULL;
    s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    s = store__prepare(store->wdb, "SELECT n_errors FROM jobs WHERE id = ?1", &cnt, err);
    if (s != IMS_OK)
        goto out;
    sqlite3_bind_text(cnt, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(cnt);
    if (rc == SQLITE_DONE) {
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "job %s does not exist", id);
        goto out;
    }
    if (rc != SQLITE_ROW) {
        s = store__db_error(store->wdb, rc, err, "read job");
        goto out;
    }
    int64_t have = sqlite3_column_int64(cnt, 0);
    s = store__prepare(store->wdb,
                       "INSERT INTO job_errors(job_id, seq, url, error, code) "
                       "VALUES(?1, ?2, substr(?3, 1, ?5), substr(?4, 1, ?5), ?6)",
                       &ins, err);
    for (size_t i = 0; i < n && s == IMS_OK && have + (int64_t)i < STORE_JOB_MAX_ERRORS; i++) {
        sqlite3_bind_text(ins, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 2, have + (int64_t)i);
        sqlite3_bind_text(ins, 3, urls[i] ? urls[i] : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 4, errors[i] ? errors[i] : "", -1, SQLITE_STATIC);
        sqlite3_bind_int(ins, 5, STORE_JOB_ERROR_MAX_BYTES);
        sqlite3_bind_text(ins, 6, codes && codes[i] ? codes[i] : "", -1, SQLITE_STATIC);
        rc = sqlite3_step(ins);
        sqlite3_reset(ins);
        if (rc != SQLITE_DONE)
            s = store__db_error(store->wdb, rc, err, "store job error");
    }
    if (s == IMS_OK) {
        int64_t args[] = {(int64_t)n, store__unix_now()};
        s = job_write(store, "UPDATE jobs SET n_errors = n_errors + ?2, updated = ?3 WHERE id = ?1",
                      id, args, 2, NULL, err);
    }
out:
    sqlite3_finalize(cnt);
    sqlite3_finalize(ins);
    return store__write_end(store, s, err);
}

enum ims_status store__sq_job_get(struct store *store, const char *id, struct store_job *job,
                                  struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !job, err, IMS_ERR_INVALID, "store_job_get: invalid arguments");
    enum ims_status s = store__check_job_id(id, err);
    if (s != IMS_OK)
        return s;
    struct store_job j;
    memset(&j, 0, sizeof(j));
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL, *e = NULL;
    s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        return s;
    s = store__exec(db, "BEGIN", err);
    if (s == IMS_OK)
        s = store__prepare(db,
                           "SELECT state, total, done, failed, created, updated, n_errors, "
                           "sealed, n_items FROM jobs WHERE id = ?1",
                           &q, err);
    if (s != IMS_OK)
        goto out;
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_DONE) {
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "job %s does not exist", id);
        goto out;
    }
    if (rc != SQLITE_ROW) {
        s = store__db_error(db, rc, err, "read job");
        goto out;
    }
    snprintf(j.id, sizeof(j.id), "%s", id);
    if (!state_from_name((const char *)sqlite3_column_text(q, 0), &j.state)) {
        s = ims_error_set(err, IMS_ERR_CORRUPT, "job %s has an unknown state", id);
        goto out;
    }
    j.total = sqlite3_column_int64(q, 1);
    j.done = sqlite3_column_int64(q, 2);
    j.failed = sqlite3_column_int64(q, 3);
    j.created = sqlite3_column_int64(q, 4);
    j.updated = sqlite3_column_int64(q, 5);
    j.n_errors_total = sqlite3_column_int64(q, 6);
    j.sealed = sqlite3_column_int(q, 7) != 0;
    j.n_items = sqlite3_column_int64(q, 8);

    s = store__prepare(db,
                       "SELECT url, error, code FROM job_errors WHERE job_id = ?1 ORDER BY seq "
                       "LIMIT ?2",
                       &e, err);
    if (s != IMS_OK)
        goto out;
    sqlite3_bind_text(e, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int(e, 2, STORE_JOB_MAX_ERRORS);
    size_t cap = 0;
    while ((rc = sqlite3_step(e)) == SQLITE_ROW) {
        if (j.n_errors == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct store_job_error *p = ims_realloc(j.errors, ncap * sizeof(*p));
            if (!p) {
                s = ims_error_set(err, IMS_ERR_NOMEM, "store_job_get: out of memory");
                goto out;
            }
            j.errors = p;
            cap = ncap;
        }
        const char *u = (const char *)sqlite3_column_text(e, 0);
        const char *m = (const char *)sqlite3_column_text(e, 1);
        const char *c = (const char *)sqlite3_column_text(e, 2);
        struct store_job_error *je = &j.errors[j.n_errors];
        je->url = ims_strdup(u ? u : "");
        je->error = ims_strdup(m ? m : "");
        je->code = ims_strdup(c ? c : "");
        j.n_errors++; /* counted even if half-allocated, so fini frees it */
        if (!je->url || !je->error || !je->code) {
            s = ims_error_set(err, IMS_ERR_NOMEM, "store_job_get: out of memory");
            goto out;
        }
    }
    if (rc != SQLITE_DONE)
        s = store__db_error(db, rc, err, "read job errors");
out:
    sqlite3_finalize(q);
    sqlite3_finalize(e);
    store__reader_end(store, db);
    if (s != IMS_OK) {
        store_job_fini(&j);
        return s;
    }
    *job = j;
    return IMS_OK;
}

enum ims_status store__sq_job_fail_unfinished(struct store *store, int64_t *n,
                                              struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store, err, IMS_ERR_INVALID, "store_job_fail_unfinished: no store");
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    int64_t now = store__unix_now();
    int changes = 0;
    /* one error row per job, if it still has room */
    s = store__exec(store->wdb,
                    "INSERT INTO job_errors(job_id, seq, url, error) "
                    "SELECT id, n_errors, '', 'interrupted by restart' FROM jobs "
                    "WHERE state IN ('queued', 'running') AND n_items = 0 AND n_errors < " STR(
                        STORE_JOB_MAX_ERRORS),
                    err);
    if (s == IMS_OK) {
        int64_t args[] = {now};
        s = job_write(store,
                      "UPDATE jobs SET state = 'failed', n_errors = n_errors + 1, updated = ?2 "
                      "WHERE state IN ('queued', 'running') AND n_items = 0 AND ?1 IS NOT NULL",
                      "", args, 1, &changes, err);
    }
    s = store__write_end(store, s, err);
    if (s == IMS_OK && n)
        *n = changes;
    return s;
}
