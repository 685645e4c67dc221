/* SPDX-License-Identifier: MIT */
/*
 * store_pg_jobs.c: the PostgreSQL backend's ingest jobs and job items.
 * Claims use SELECT ... FOR UPDATE SKIP LOCKED then UPDATE in one
 * transaction, so nodes claiming at once never take the same item and never
 * wait for each other; leases are timestamps of the server's clock, so the
 * nodes' clocks do not matter. A finish counts only if the item is still
 * claimed by the finishing node (the same row lock orders it against a
 * reclaim).
 */
#include "store_pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_sql =
    "CASE $2::int8 WHEN 0 THEN 'queued' WHEN 1 THEN 'running' WHEN 2 THEN 'done' "
    "ELSE 'failed' END";

enum ims_status store__pg_job_create(struct store *store, const char *id, int64_t total,
                                     struct ims_error *err)
{
    struct pgp p = {0};
    store__pgp_text(&p, id);
    store__pgp_i64(&p, total);
    store__pgp_i64(&p, store__unix_now());
    int made = 0;
    enum ims_status s = store__pg_wq1(
        store, 0,
        "INSERT INTO jobs(id, state, total, created, updated) VALUES($1, 'queued', $2, "
        "$3, $3) ON CONFLICT (id) DO NOTHING RETURNING id",
        &p, &made, err, "create job");
    if (s == IMS_OK && !made) /* nothing was written */
        s = ims_error_set(err, IMS_ERR_EXISTS, "job %s already exists", id);
    return s;
}

enum ims_status store__pg_job_update(struct store *store, const char *id,
                                     enum store_job_state state, int64_t done, int64_t failed,
                                     struct ims_error *err)
{
    enum ims_status s = store__check_job_id(id, err);
    if (s != IMS_OK)
        return s;
    IMS_RETURN_ERROR_IF((unsigned)state > STORE_JOB_FAILED, err, IMS_ERR_INVALID,
                        "job %s: unknown state %d", id, (int)state);
    IMS_RETURN_ERROR_IF(done < 0 || failed < 0, err, IMS_ERR_INVALID, "job %s: negative counters",
                        id);
    char sql[512];
    snprintf(sql, sizeof(sql),
             "UPDATE jobs SET state = %s, done = $3, failed = $4, updated = $5 WHERE id = $1 "
             "RETURNING id",
             state_sql);
    struct pgp p = {0};
    store__pgp_text(&p, id);
    store__pgp_i64(&p, (int64_t)state);
    store__pgp_i64(&p, done);
    store__pgp_i64(&p, failed);
    store__pgp_i64(&p, store__unix_now());
    int found = 0;
    s = store__pg_wq1(store, 0, sql, &p, &found, err, "update job");
    if (s == IMS_OK && !found) /* nothing was written */
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "job %s does not exist", id);
    return s;
}

/* Appends one error row if the job has room; counts it either way. The job
 * row is locked by the caller's UPDATE. */
static enum ims_status add_error(PGconn *c, const char *id, const char *url, const char *code,
                                 const char *msg, struct ims_error *err)
{
    struct pgp p = {0};
    store__pgp_text(&p, id);
    store__pgp_i64(&p, store__unix_now());
    int found = 0;
    int64_t n = 0;
    enum ims_status s =
        store__pg_q1(c,
                     "UPDATE jobs SET n_errors = n_errors + 1, updated = $2 WHERE id = "
                     "$1 RETURNING n_errors",
                     &p, &found, &n, err, "count job error");
    if (s != IMS_OK)
        return s;
    if (!found)
        return ims_error_set(err, IMS_ERR_NOT_FOUND, "job %s does not exist", id);
    if (n > STORE_JOB_MAX_ERRORS)
        return IMS_OK;
    struct pgp q = {0};
    store__pgp_text(&q, id);
    store__pgp_i64(&q, n - 1);
    store__pgp_text(&q, url ? url : "");
    store__pgp_text(&q, msg ? msg : "");
    store__pgp_text(&q, code ? code : "");
    store__pgp_i64(&q, STORE_JOB_ERROR_MAX_BYTES);
    return store__pg_x(c,
                       "INSERT INTO job_errors(job_id, seq, url, error, code) VALUES($1, $2, "
                       "left($3, $6::int), left($4, $6::int), $5)",
                       &q, err, "store job error");
}

enum ims_status store__pg_job_add_errors(struct store *store, const char *id,
                                         const char *const *urls, const char *const *codes,
                                         const char *const *errors, size_t n, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(n > 0 && (!urls || !errors), err, IMS_ERR_INVALID,
                        "store_job_add_errors: invalid arguments");
    enum ims_status s = store__check_job_id(id, err);
    if (s != IMS_OK || n == 0)
        return s;
    PGconn *c = NULL;
    s = store__pg_wbegin(store, &c, 0, err);
    for (size_t i = 0; i < n && s == IMS_OK; i++)
        s = add_error(c, id, urls[i], codes && codes[i] ? codes[i] : "", errors[i], err);
    if (c)
        s = store__pg_wend(store, c, s, err);
    return s;
}

static int state_from_name(const char *t, enum store_job_state *out)
{
    static const char *const names[] = {"queued", "running", "done", "failed"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(t, names[i])) {
            *out = (enum store_job_state)i;
            return 1;
        }
    return 0;
}

enum ims_status store__pg_job_get(struct store *store, const char *id, struct store_job *job,
                                  struct ims_error *err)
{
    enum ims_status s = store__check_job_id(id, err);
    if (s != IMS_OK)
        return s;
    struct store_job j;
    memset(&j, 0, sizeof(j));
    PGconn *c = NULL;
    PGresult *r = NULL;
    s = store__pg_rbegin(store, &c, err);
    if (s != IMS_OK)
        return s;
    struct pgp p = {0};
    store__pgp_text(&p, id);
    s = store__pg_q(
        c,
        "SELECT state, total, done, failed, created, updated, n_errors, sealed::int::int8, "
        "n_items FROM jobs WHERE id = $1",
        &p, &r, err, "read job");
    if (s == IMS_OK && PQntuples(r) == 0)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "job %s does not exist", id);
    if (s == IMS_OK) {
        snprintf(j.id, sizeof(j.id), "%s", id);
        if (!state_from_name(PQgetvalue(r, 0, 0), &j.state))
            s = ims_error_set(err, IMS_ERR_CORRUPT, "job %s has an unknown state", id);
        j.total = store__pg_i64(r, 0, 1);
        j.done = store__pg_i64(r, 0, 2);
        j.failed = store__pg_i64(r, 0, 3);
        j.created = store__pg_i64(r, 0, 4);
        j.updated = store__pg_i64(r, 0, 5);
        j.n_errors_total = store__pg_i64(r, 0, 6);
        j.sealed = store__pg_i64(r, 0, 7) != 0;
        j.n_items = store__pg_i64(r, 0, 8);
    }
    PQclear(r);
    r = NULL;
    if (s == IMS_OK) {
        struct pgp q = {0};
        store__pgp_text(&q, id);
        store__pgp_i64(&q, STORE_JOB_MAX_ERRORS);
        s = store__pg_q(c,
                        "SELECT url, error, code FROM job_errors WHERE job_id = $1 ORDER BY seq "
                        "LIMIT $2",
                        &q, &r, err, "read job errors");
    }
    if (s == IMS_OK && PQntuples(r) > 0) {
        size_t n = (size_t)PQntuples(r);
        j.errors = ims_calloc(n, sizeof(*j.errors));
        if (!j.errors)
            s = ims_error_set(err, IMS_ERR_NOMEM, "store_job_get: out of memory");
        for (size_t i = 0; i < n && s == IMS_OK; i++) {
            struct store_job_error *e = &j.errors[i];
            e->url = ims_strdup(PQgetvalue(r, (int)i, 0));
            e->error = ims_strdup(PQgetvalue(r, (int)i, 1));
            e->code = ims_strdup(PQgetvalue(r, (int)i, 2));
            j.n_errors++;
            if (!e->url || !e->error || !e->code)
                s = ims_error_set(err, IMS_ERR_NOMEM, "store_job_get: out of memory");
        }
    }
    PQclear(r);
    store__pg_rend(store, c);
    if (s != IMS_OK) {
        store_job_fini(&j);
        return s;
    }
    *job = j;
    return IMS_OK;
}

enum ims_status store__pg_job_fail_unfinished(struct store *store, int64_t *n,
                                              struct ims_error *err)
{
    PGconn *c = NULL;
    PGresult *r = NULL;
    enum ims_status s = store__pg_wbegin(store, &c, 0, err);
    if (s != IMS_OK)
        return s;
    struct pgp p = {0};
    store__pgp_i64(&p, store__unix_now());
    store__pgp_i64(&p, STORE_JOB_MAX_ERRORS);
    s = store__pg_x(c,
                    "INSERT INTO job_errors(job_id, seq, url, error) SELECT id, n_errors, '', "
                    "'interrupted by restart' FROM jobs WHERE state IN ('queued', 'running') AND "
                    "n_items = 0 AND n_errors < $2 AND $1 IS NOT NULL",
                    &p, err, "fail jobs");
    if (s == IMS_OK)
        s = store__pg_q(c,
                        "UPDATE jobs SET state = 'failed', n_errors = n_errors + 1, updated = $1 "
                        "WHERE state IN ('queued', 'running') AND n_items = 0 AND $2 IS NOT NULL "
                        "RETURNING id",
                        &p, &r, err, "fail jobs");
    int64_t k = s == IMS_OK ? PQntuples(r) : 0;
    PQclear(r);
    s = store__pg_wend(store, c, s, err);
    if (s == IMS_OK && n)
        *n = k;
    return s;
}

enum ims_status store__pg_job_add_items(struct store *store, const char *id,
                                        const char *const *sources, size_t n, struct ims_error *err)
{
    PGconn *c = NULL;
    PGresult *r = NULL;
    enum ims_status s = store__pg_wbegin(store, &c, 0, err);
    if (s != IMS_OK)
        return s;
    struct pgp p = {0};
    store__pgp_text(&p, id);
    store__pgp_i64(&p, (int64_t)n);
    store__pgp_i64(&p, store__unix_now());
    /* the row lock of this UPDATE orders concurrent appends to one job */
    s = store__pg_q(c,
                    "UPDATE jobs SET n_items = n_items + $2, total = total + $2, updated = $3 "
                    "WHERE id = $1 RETURNING n_items - $2, sealed::int::int8",
                    &p, &r, err, "add items");
    int64_t have = 0;
    if (s == IMS_OK && PQntuples(r) == 0)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "job %s does not exist", id);
    else if (s == IMS_OK && store__pg_i64(r, 0, 1))
        s = ims_error_set(err, IMS_ERR_INVALID, "job %s is sealed: no items can be added", id);
    else if (s == IMS_OK)
        have = store__pg_i64(r, 0, 0);
    PQclear(r);
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        struct pgp q = {0};
        store__pgp_text(&q, id);
        store__pgp_i64(&q, have + (int64_t)i);
        store__pgp_text(&q, sources[i]);
        s = store__pg_x(c, "INSERT INTO job_items(job_id, idx, source) VALUES($1, $2, $3)", &q, err,
                        "add job item");
    }
    return store__pg_wend(store, c, s, err);
}

static enum ims_status settle(PGconn *c, const char *id, struct ims_error *err)
{
    struct pgp p = {0};
    store__pgp_text(&p, id);
    store__pgp_i64(&p, store__unix_now());
    return store__pg_x(
        c,
        "UPDATE jobs SET state = 'done', updated = $2 WHERE id = $1 AND sealed AND "
        "state IN ('queued', 'running') AND NOT EXISTS (SELECT 1 FROM job_items WHERE "
        "job_id = $1 AND state < 2)",
        &p, err, "settle job");
}

enum ims_status store__pg_job_seal(struct store *store, const char *id, struct ims_error *err)
{
    PGconn *c = NULL;
    enum ims_status s = store__pg_wbegin(store, &c, 0, err);
    if (s != IMS_OK)
        return s;
    struct pgp p = {0};
    store__pgp_text(&p, id);
    store__pgp_i64(&p, store__unix_now());
    int found = 0;
    s = store__pg_q1(c, "UPDATE jobs SET sealed = true, updated = $2 WHERE id = $1 RETURNING id",
                     &p, &found, NULL, err, "seal job");
    if (s == IMS_OK && !found)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "job %s does not exist", id);
    if (s == IMS_OK)
        s = settle(c, id, err);
    return store__pg_wend(store, c, s, err);
}

enum ims_status store__pg_job_claim(struct store *store, const char *node_id, size_t max_n,
                                    int64_t lease_ms, struct store_job_item **items_out,
                                    size_t *n_out, struct ims_error *err)
{
    PGconn *c = NULL;
    PGresult *r = NULL;
    enum ims_status s = store__pg_wbegin(store, &c, 0, err);
    if (s != IMS_OK)
        return s;
    struct pgp p = {0};
    store__pgp_i64(&p, (int64_t)max_n);
    store__pgp_text(&p, node_id);
    store__pgp_i64(&p, lease_ms);
    s = store__pg_q(
        c,
        "WITH picked AS (SELECT id FROM job_items WHERE state = 0 OR (state = 1 AND "
        "lease_until < clock_timestamp()) ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) "
        "UPDATE job_items j SET state = 1, claimed_by = $2, attempts = attempts + 1, "
        "lease_until = clock_timestamp() + $3 * interval '1 millisecond' FROM picked "
        "WHERE j.id = picked.id RETURNING j.id, j.job_id, j.idx, j.source, j.attempts::int8",
        &p, &r, err, "claim job items");
    struct store_job_item *items = NULL;
    size_t n = s == IMS_OK ? (size_t)PQntuples(r) : 0;
    if (n) {
        items = ims_calloc(n, sizeof(*items));
        if (!items)
            s = ims_error_set(err, IMS_ERR_NOMEM, "store_job_claim: out of memory");
    }
    size_t k = 0;
    for (; k < n && s == IMS_OK; k++) {
        items[k].item_id = store__pg_i64(r, (int)k, 0);
        snprintf(items[k].job_id, sizeof(items[k].job_id), "%s", PQgetvalue(r, (int)k, 1));
        items[k].index = store__pg_i64(r, (int)k, 2);
        items[k].source = ims_strdup(PQgetvalue(r, (int)k, 3));
        items[k].attempts = (int)store__pg_i64(r, (int)k, 4);
        if (!items[k].source)
            s = ims_error_set(err, IMS_ERR_NOMEM, "store_job_claim: out of memory");
    }
    PQclear(r);
    if (s == IMS_OK && n) {
        for (size_t i = 0; i < n && s == IMS_OK; i++) {
            if (i > 0 && !strcmp(items[i].job_id, items[i - 1].job_id))
                continue;
            struct pgp u = {0};
            store__pgp_text(&u, items[i].job_id);
            store__pgp_i64(&u, store__unix_now());
            s = store__pg_x(
                c,
                "UPDATE jobs SET state = 'running', updated = $2 WHERE id = $1 AND state = "
                "'queued'",
                &u, err, "start job");
        }
    }
    s = store__pg_wend(store, c, s, err);
    if (s != IMS_OK) {
        store_job_items_free(items, k);
        return s;
    }
    /* RETURNING order is not guaranteed: hand them out oldest first */
    for (size_t i = 1; i < n; i++) {
        struct store_job_item t = items[i];
        size_t m = i;
        while (m > 0 && items[m - 1].item_id > t.item_id) {
            items[m] = items[m - 1];
            m--;
        }
        items[m] = t;
    }
    *items_out = items;
    *n_out = n;
    return IMS_OK;
}

enum ims_status store__pg_job_release_node(struct store *store, const char *node_id, int64_t *n,
                                           struct ims_error *err)
{
    PGresult *r = NULL;
    struct pgp p = {0};
    store__pgp_text(&p, node_id);
    /* an expired lease: claimable at once, by this node or any other */
    enum ims_status s =
        store__pg_once(store,
                       "UPDATE job_items SET lease_until = clock_timestamp() - interval '1 second' "
                       "WHERE state = 1 AND claimed_by = $1",
                       &p, &r, err, "release leases");
    if (s == IMS_OK && n)
        *n = atoll(PQcmdTuples(r));
    PQclear(r);
    return s;
}

enum ims_status store__pg_job_renew(struct store *store, const char *node_id,
                                    const int64_t *item_ids, size_t n, int64_t lease_ms,
                                    uint8_t *renewed, struct ims_error *err)
{
    PGconn *c = NULL;
    enum ims_status s = store__pg_wbegin(store, &c, 0, err);
    if (s != IMS_OK)
        return s;
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        struct pgp p = {0};
        store__pgp_i64(&p, item_ids[i]);
        store__pgp_text(&p, node_id);
        store__pgp_i64(&p, lease_ms);
        int held = 0;
        s = store__pg_q1(
            c,
            "UPDATE job_items SET lease_until = clock_timestamp() + $3 * interval '1 "
            "millisecond' WHERE id = $1 AND state = 1 AND claimed_by = $2 RETURNING id",
            &p, &held, NULL, err, "renew lease");
        if (s == IMS_OK && renewed)
            renewed[i] = (uint8_t)held;
    }
    return store__pg_wend(store, c, s, err);
}

/* The columns of item results, for store__pg_int_array. */
static int64_t get_id(const void *a, size_t i)
{
    return ((const struct store_item_result *)a)[i].item_id;
}
static int64_t get_state(const void *a, size_t i)
{
    const struct store_item_result *r = a;
    return r[i].outcome == STORE_ITEM_ERROR ? STORE_ITEM_FAILED : STORE_ITEM_DONE;
}
static int64_t get_outcome(const void *a, size_t i)
{
    return ((const struct store_item_result *)a)[i].outcome;
}
static int64_t get_image(const void *a, size_t i)
{
    const struct store_item_result *r = a;
    return r[i].outcome == STORE_ITEM_ERROR ? 0 : r[i].image_id;
}

/* A redone item (attempts > 1) reported as a duplicate of row `image`: if
 * that row is its own -- the same source, added since its job was created,
 * and no item records having added it -- an earlier attempt committed the
 * row and died before its finish: the item added it (outcome ADDED). */
static enum ims_status own_row(PGconn *c, int64_t item, int64_t image, struct ims_error *err)
{
    struct pgp p = {0};
    store__pgp_i64(&p, item);
    store__pgp_i64(&p, image);
    return store__pg_x(
        c,
        "UPDATE job_items j SET outcome = 0 FROM images i, jobs b WHERE j.id = $1 AND "
        "i.id = $2 AND i.source = j.source AND b.id = j.job_id AND i.added >= b.created "
        "AND NOT EXISTS (SELECT 1 FROM job_items o WHERE o.image_id = $2 AND o.outcome = "
        "0 AND o.id <> $1)",
        &p, err, "recognise the item's own row");
}

/* Counts finished items of job $1 and settles it, in one statement (it sees
 * the items' new states written before it in the transaction). */
#define COUNT_SETTLE_SQL                                                                           \
    "UPDATE jobs SET done = done + $2, failed = failed + $3, updated = $4, state = CASE WHEN "    \
    "sealed AND state IN ('queued', 'running') AND NOT EXISTS (SELECT 1 FROM job_items WHERE "    \
    "job_id = $1 AND state < 2) THEN 'done' ELSE state END WHERE id = $1"

/* The job row is locked by a statement of its own first: two nodes finishing
 * a job's last items at once would otherwise each count with a snapshot
 * taken before the other committed (an UPDATE that waits for a row lock
 * re-checks the row, not its subqueries), and neither would settle the job.
 * After the lock, the count's fresh snapshot sees every earlier finish. */
static enum ims_status count_settle(PGconn *c, const char *job, int64_t done, int64_t failed,
                                    struct ims_error *err)
{
    struct pgp l = {0};
    store__pgp_text(&l, job);
    enum ims_status s =
        store__pg_x(c, "SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", &l, err, "lock job");
    struct pgp q = {0};
    store__pgp_text(&q, job);
    store__pgp_i64(&q, done);
    store__pgp_i64(&q, failed);
    store__pgp_i64(&q, store__unix_now());
    if (s == IMS_OK)
        s = store__pg_x(c, COUNT_SETTLE_SQL, &q, err, "count job items");
    return s;
}

/* One job's tally in a finish. */
struct job_tally {
    char *job;
    int64_t done, failed;
};

static int cmp_tally(const void *a, const void *b)
{
    return strcmp(((const struct job_tally *)a)->job, ((const struct job_tally *)b)->job);
}

/* Locks the rows of jobs[0..n) in one statement, in the database's order
 * of their ids: every node locks the jobs of a finish in the same order, so
 * two finishes that touch the same jobs (any number of them) cannot
 * deadlock. Taken before anything else writes a job row in the finish
 * (error counts, counters). */
static enum ims_status lock_jobs(PGconn *c, const struct job_tally *jobs, size_t n,
                                 struct ims_error *err)
{
    struct pgcopy a;
    store__pga_begin(&a, 25 /* text */, n);
    for (size_t j = 0; j < n; j++)
        store__pgc_text(&a, jobs[j].job);
    if (a.oom) {
        ims_free(a.p);
        return ims_error_set(err, IMS_ERR_NOMEM, "store_job_finish: out of memory");
    }
    struct pgp p = {0};
    store__pgp_raw(&p, a.p, a.n, 1009 /* text[] */);
    enum ims_status s = store__pg_x(
        c, "SELECT 1 FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE", &p, err, "lock jobs");
    ims_free(a.p);
    return s;
}

/* The finish inside the caller's write transaction on c: one statement
 * marks every item this node still holds (arrays of ids, states, outcomes,
 * image ids); the jobs touched are locked in one order (lock_jobs); then
 * failures (rare) add their code, message and job error one by one, and
 * one statement per job counts its items and settles it. */
enum ims_status store__pg_job_finish_in(PGconn *c, const char *node_id,
                                        const struct store_item_result *results, size_t n,
                                        uint8_t *accepted, struct ims_error *err)
{
    if (n == 0)
        return IMS_OK;
    char *ids = store__pg_int_array(n, get_id, results),
         *states = store__pg_int_array(n, get_state, results);
    char *outcomes = store__pg_int_array(n, get_outcome, results);
    char *images = store__pg_int_array(n, get_image, results);
    PGresult *r = NULL;
    struct job_tally *jobs = NULL;
    size_t n_jobs = 0;
    enum ims_status s = IMS_OK;
    if (!ids || !states || !outcomes || !images) {
        s = ims_error_set(err, IMS_ERR_NOMEM, "store_job_finish: out of memory");
        goto out;
    }
    struct pgp p = {0};
    store__pgp_text(&p, node_id);
    store__pgp_literal(&p, ids);
    store__pgp_literal(&p, states);
    store__pgp_literal(&p, outcomes);
    store__pgp_literal(&p, images);
    s = store__pg_q(
        c,
        "UPDATE job_items j SET state = r.store, outcome = r.oc, image_id = nullif(r.img, 0), "
        "code = NULL, error = NULL, lease_until = NULL FROM unnest($2::bigint[], "
        "$3::smallint[], $4::smallint[], $5::bigint[]) AS r(id, store, oc, img) WHERE j.id = "
        "r.id AND j.state = 1 AND j.claimed_by = $1 RETURNING j.id, j.job_id, "
        "j.attempts::int8",
        &p, &r, err, "finish job items");
    if (s != IMS_OK)
        goto out;
    int n_rows = PQntuples(r);
    /* the tallies: one per job, however many (a batch is nearly always one) */
    jobs = ims_calloc((size_t)n_rows + 1, sizeof(*jobs));
    if (!jobs) {
        s = ims_error_set(err, IMS_ERR_NOMEM, "store_job_finish: out of memory");
        goto out;
    }
    for (int k = 0; k < n_rows && s == IMS_OK; k++) {
        const char *job = PQgetvalue(r, k, 1);
        size_t j = 0;
        while (j < n_jobs && strcmp(jobs[j].job, job) != 0)
            j++;
        if (j == n_jobs) {
            jobs[j].job = ims_strdup(job);
            if (!jobs[j].job)
                s = ims_error_set(err, IMS_ERR_NOMEM, "store_job_finish: out of memory");
            else
                n_jobs++;
        }
    }
    if (s == IMS_OK && n_jobs > 0) {
        qsort(jobs, n_jobs, sizeof(*jobs), cmp_tally);
        s = lock_jobs(c, jobs, n_jobs, err);
    }
    for (int k = 0; s == IMS_OK && k < n_rows; k++) {
        int64_t id = store__pg_i64(r, k, 0);
        const char *job = PQgetvalue(r, k, 1);
        size_t i = 0;
        while (i < n && (results[i].item_id != id || (accepted && accepted[i])))
            i++;
        if (i == n)
            continue;
        if (accepted)
            accepted[i] = 1;
        const struct store_item_result *res = &results[i];
        int fail = res->outcome == STORE_ITEM_ERROR;
        struct job_tally key = {(char *)job, 0, 0};
        struct job_tally *t = bsearch(&key, jobs, n_jobs, sizeof(*jobs), cmp_tally);
        IMS_ASSERT(t != NULL);
        t->done += !fail;
        t->failed += fail;
        if (fail) {
            struct pgp e = {0};
            store__pgp_i64(&e, id);
            store__pgp_text(&e, res->code ? res->code : "");
            store__pgp_text(&e, res->error ? res->error : "");
            store__pgp_i64(&e, STORE_JOB_ERROR_MAX_BYTES);
            s = store__pg_x(
                c, "UPDATE job_items SET code = $2, error = left($3, $4::int) WHERE id = $1", &e,
                err, "record item error");
            PGresult *sr = NULL;
            struct pgp q = {0};
            store__pgp_i64(&q, id);
            if (s == IMS_OK)
                s = store__pg_q(c, "SELECT source FROM job_items WHERE id = $1", &q, &sr, err,
                                "read item");
            if (s == IMS_OK && PQntuples(sr) == 1)
                s = add_error(c, job, PQgetvalue(sr, 0, 0), res->code, res->error, err);
            PQclear(sr);
        } else if (res->outcome == STORE_ITEM_DUPLICATE && store__pg_i64(r, k, 2) > 1) {
            s = own_row(c, id, res->image_id, err);
        }
    }
    for (size_t j = 0; j < n_jobs && s == IMS_OK; j++)
        if (jobs[j].done || jobs[j].failed)
            s = count_settle(c, jobs[j].job, jobs[j].done, jobs[j].failed, err);
out:
    for (size_t j = 0; j < n_jobs; j++)
        ims_free(jobs[j].job);
    ims_free(jobs);
    PQclear(r);
    ims_free(ids);
    ims_free(states);
    ims_free(outcomes);
    ims_free(images);
    return s;
}

enum ims_status store__pg_job_finish(struct store *store, const char *node_id,
                                     const struct store_item_result *results, size_t n,
                                     uint8_t *accepted, struct ims_error *err)
{
    if (accepted)
        memset(accepted, 0, n);
    if (n == 0)
        return IMS_OK;
    PGconn *c = NULL;
    enum ims_status s = store__pg_wbegin(store, &c, 0, err);
    if (s != IMS_OK)
        return s;
    s = store__pg_job_finish_in(c, node_id, results, n, accepted, err);
    s = store__pg_wend(store, c, s, err);
    if (s != IMS_OK && accepted)
        memset(accepted, 0, n);
    return s;
}

enum ims_status store__pg_job_item_outcome(struct store *store, int64_t item_id, int *outcome,
                                           struct ims_error *err)
{
    struct pgp p = {0};
    store__pgp_i64(&p, item_id);
    int found = 0;
    int64_t v = 0;
    enum ims_status s =
        store__pg_once1(store, "SELECT coalesce(outcome, -1)::int8 FROM job_items WHERE id = $1",
                        &p, &found, &v, err, "read job item");
    if (s == IMS_OK && !found)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "job item %lld does not exist",
                          (long long)item_id);
    if (s == IMS_OK)
        *outcome = (int)v;
    return s;
}

enum ims_status store__pg_job_item_get(struct store *store, int64_t item_id,
                                       enum store_item_state *state, char *node, size_t node_cap,
                                       int *attempts, int64_t *image_id, struct ims_error *err)
{
    PGresult *r = NULL;
    struct pgp p = {0};
    store__pgp_i64(&p, item_id);
    enum ims_status s =
        store__pg_once(store,
                       "SELECT state::int8, coalesce(claimed_by, ''), attempts::int8, "
                       "coalesce(image_id, 0) FROM job_items WHERE id = $1",
                       &p, &r, err, "read job item");
    if (s == IMS_OK && PQntuples(r) == 0)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "job item %lld does not exist",
                          (long long)item_id);
    if (s == IMS_OK) {
        *state = (enum store_item_state)store__pg_i64(r, 0, 0);
        snprintf(node, node_cap, "%s", PQgetvalue(r, 0, 1));
        *attempts = (int)store__pg_i64(r, 0, 2);
        *image_id = store__pg_i64(r, 0, 3);
    }
    PQclear(r);
    return s;
}
