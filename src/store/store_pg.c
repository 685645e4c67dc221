/* SPDX-License-Identifier: MIT */
/*
 * store_pg.c: the PostgreSQL backend (libpq): opening a postgresql:// URL,
 * the connection pool, the schema and its migrations, the model record, the
 * consistency check, and the change feed with LISTEN/NOTIFY.
 *
 * Migrations: `schema_version(version)` holds one row. `pg_migrations[]`
 * lists one SQL text per step; open takes a session advisory lock (so two
 * nodes starting at once do not both create tables), runs every step above
 * the database's version in one transaction, and records the new version.
 * A database newer than STORE_SCHEMA_VERSION is refused, untouched. The
 * PostgreSQL schema starts at the SQLite schema's current version (2).
 *
 * Passwords: the URL is kept only to connect; messages show the masked
 * form (store_catalogue_display). libpq also reads PGPASSWORD / PGPASSFILE.
 */
#include "store_pg_int.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameters and results -------------------------------------------------------- */

static void put_be64(char *b, uint64_t x)
{
    for (int i = 7; i >= 0; i--) {
        b[i] = (char)(x & 0xff);
        x >>= 8;
    }
}

/* Appends one parameter: value v of len bytes, format fmt (1 binary, 0
 * text), type oid (0: the query's cast decides). */
static void pgp_add(struct pgp *p, const void *v, int len, int fmt, Oid type)
{
    IMS_ASSERT(p->n < STORE_PG_MAX_PARAMS);
    p->v[p->n] = v;
    p->len[p->n] = len;
    p->fmt[p->n] = fmt;
    p->type[p->n] = type;
    p->n++;
}

void store__pgp_i64(struct pgp *p, int64_t x)
{
    IMS_ASSERT(p->n < STORE_PG_MAX_PARAMS);
    put_be64(p->buf[p->n], (uint64_t)x);
    pgp_add(p, p->buf[p->n], 8, 1, 20 /* int8 */);
}

void store__pgp_text(struct pgp *p, const char *s)
{
    pgp_add(p, s, s ? (int)strlen(s) : 0, 1, 25 /* text */);
}

void store__pgp_bytea(struct pgp *p, const void *b, size_t n)
{
    pgp_add(p, b, (int)n, 1, 17 /* bytea */);
}

void store__pgp_literal(struct pgp *p, const char *s)
{
    pgp_add(p, s, 0, 0, 0);
}

void store__pgp_raw(struct pgp *p, const void *v, size_t n, Oid type)
{
    pgp_add(p, v, (int)n, 1, type);
}

int64_t store__pg_i64(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    const unsigned char *b = (const unsigned char *)PQgetvalue(r, row, col);
    int n = PQgetlength(r, row, col);
    uint64_t x = 0;
    for (int i = 0; i < n; i++)
        x = (x << 8) | b[i];
    if (n == 4)
        return (int32_t)(uint32_t)x;
    if (n == 2)
        return (int16_t)(uint16_t)x;
    if (n == 1)
        return (int64_t)x; /* bool */
    return (int64_t)x;
}

enum ims_status store__pg_id_column(PGresult *r, int64_t **ids_out, size_t *n_out, const char *what,
                                    struct ims_error *err)
{
    size_t n = (size_t)PQntuples(r);
    int64_t *ids = n ? ims_malloc(n * sizeof(*ids)) : NULL;
    if (n && !ids) {
        PQclear(r);
        return ims_error_set(err, IMS_ERR_NOMEM, "%s: out of memory", what);
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = store__pg_i64(r, (int)i, 0);
    PQclear(r);
    *ids_out = ids;
    *n_out = n;
    return IMS_OK;
}

int store__pg_null(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col);
}

/* Set by store__pg_error when the failed statement's transaction is known to have
 * been rolled back by the server before it could commit: the session was
 * cut for idling in a transaction (25P03), or the connection was lost on a
 * statement other than COMMIT. The write wrappers (pg_retry) then run the
 * whole operation again on a fresh connection. Per thread: an operation
 * runs on the calling thread from start to end. */
static _Thread_local int pg_cut;
static _Thread_local int pg_write_op; /* inside a PG_RETRY wrapper */
static _Atomic uint64_t pg_n_retries;
void (*store__pg_test_after_lock)(void);

uint64_t store__pg_retries(void) { return atomic_load(&pg_n_retries); }

enum ims_status store__pg_error(PGconn *c, const PGresult *r, struct ims_error *err,
                                const char *what)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorMessage(r) : NULL;
    if (!msg || !*msg)
        msg = c ? PQerrorMessage(c) : "no connection";
    if (state && !strcmp(state, "25P03")) {
        pg_cut = 1;
        return ims_error_set(err, IMS_ERR_IO,
                             "catalogue: %s: the server cut this write transaction because it "
                             "stayed idle longer than " STORE_PG_IDLE_PARAM
                             " (was this process paused or frozen?); it was rolled back, "
                             "nothing of it was committed",
                             what);
    }
    if (pg_write_op && c && PQstatus(c) != CONNECTION_OK) {
        size_t m = strlen(msg);
        while (m > 0 && (msg[m - 1] == '\n' || msg[m - 1] == ' '))
            m--;
        if (!strcmp(what, "commit"))
            return ims_error_set(err, IMS_ERR_IO,
                                 "catalogue: the connection was lost while committing a write: "
                                 "it may or may not have been committed: %.*s",
                                 (int)m, msg);
        /* the server cut the session (a transaction idle longer than
         * write_idle_timeout_ms, mostly: libpq often sees only the closed
         * socket), or it went away: either way nothing was committed */
        pg_cut = 1;
        return ims_error_set(err, IMS_ERR_IO,
                             "catalogue: %s: the connection was lost inside a write "
                             "transaction, which the server rolled back (nothing of it was "
                             "committed; a transaction idle longer than " STORE_PG_IDLE_PARAM
                             " is cut: was this process paused or frozen?): %.*s",
                             what, (int)m, msg);
    }
    enum ims_status s = IMS_ERR_INTERNAL;
    if (c && PQstatus(c) != CONNECTION_OK)
        s = IMS_ERR_IO;
    else if (state) {
        if (!strncmp(state, "08", 2) || !strncmp(state, "53", 2) || !strncmp(state, "57", 2) ||
            !strncmp(state, "58", 2))
            s = IMS_ERR_IO;
        else if (!strncmp(state, "22", 2) || !strncmp(state, "23", 2))
            s = IMS_ERR_INVALID;
        else if (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "55P03"))
            s = IMS_ERR_BUSY;
    } else if (!r) {
        s = IMS_ERR_IO;
    }
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    return ims_error_set(err, s, "catalogue: %s: %.*s", what, (int)n, msg);
}

/* Prepared statements: a parameterised query is parsed and planned once per
 * connection (named by a hash of its text) and then only executed, which
 * matters most for the small hot queries (search result joins, claims).
 * The table of (connection, hash) pairs is process-wide; a connection's
 * entries go when it is closed or reset (store__pg_forget). */
struct prep {
    const PGconn *c;
    uint64_t h;
};
static pthread_mutex_t prep_lock = PTHREAD_MUTEX_INITIALIZER;
static struct prep *prep_tab;
static size_t prep_n, prep_cap;

static uint64_t sql_hash(const char *s) { return ims_fnv1a64(s, strlen(s)); }

static int prep_has(const PGconn *c, uint64_t h)
{
    int found = 0;
    pthread_mutex_lock(&prep_lock);
    for (size_t i = 0; i < prep_n && !found; i++)
        found = prep_tab[i].c == c && prep_tab[i].h == h;
    pthread_mutex_unlock(&prep_lock);
    return found;
}

static void prep_add(const PGconn *c, uint64_t h)
{
    pthread_mutex_lock(&prep_lock);
    if (prep_n == prep_cap) {
        size_t cap = prep_cap ? prep_cap * 2 : 256;
        struct prep *p = ims_realloc(prep_tab, cap * sizeof(*p));
        if (p) {
            prep_tab = p;
            prep_cap = cap;
        }
    }
    if (prep_n < prep_cap)
        prep_tab[prep_n++] = (struct prep){c, h};
    pthread_mutex_unlock(&prep_lock);
}

void store__pg_forget(const PGconn *c)
{
    pthread_mutex_lock(&prep_lock);
    for (size_t i = 0; i < prep_n;) {
        if (prep_tab[i].c == c)
            prep_tab[i] = prep_tab[--prep_n];
        else
            i++;
    }
    if (prep_n == 0) {
        ims_free(prep_tab);
        prep_tab = NULL;
        prep_cap = 0;
    }
    pthread_mutex_unlock(&prep_lock);
}

enum ims_status store__pg_q(PGconn *c, const char *sql, const struct pgp *p, PGresult **res,
                            struct ims_error *err, const char *what)
{
    PGresult *r = NULL;
    if (p && p->n > 0) {
        uint64_t h = sql_hash(sql);
        char name[32];
        snprintf(name, sizeof(name), "ims_%016llx", (unsigned long long)h);
        if (!prep_has(c, h)) {
            r = PQprepare(c, name, sql, p->n, p->type);
            if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
                enum ims_status s = store__pg_error(c, r, err, what);
                PQclear(r);
                return s;
            }
            PQclear(r);
            prep_add(c, h);
        }
        r = PQexecPrepared(c, name, p->n, p->v, p->len, p->fmt, 1);
    } else {
        r = PQexecParams(c, sql, 0, NULL, NULL, NULL, NULL, 1);
    }
    ExecStatusType t = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (t != PGRES_TUPLES_OK && t != PGRES_COMMAND_OK) {
        enum ims_status s = store__pg_error(c, r, err, what);
        PQclear(r);
        return s;
    }
    if (res)
        *res = r;
    else
        PQclear(r);
    return IMS_OK;
}

enum ims_status store__pg_x(PGconn *c, const char *sql, const struct pgp *p, struct ims_error *err,
                            const char *what)
{
    return store__pg_q(c, sql, p, NULL, err, what);
}

enum ims_status store__pg_q1(PGconn *c, const char *sql, const struct pgp *p, int *found,
                             int64_t *v, struct ims_error *err, const char *what)
{
    PGresult *r = NULL;
    enum ims_status s = store__pg_q(c, sql, p, &r, err, what);
    int any = s == IMS_OK && PQntuples(r) > 0;
    if (found)
        *found = any;
    if (any && v)
        *v = store__pg_i64(r, 0, 0);
    PQclear(r);
    return s;
}

enum ims_status store__pg_once(struct store *store, const char *sql, const struct pgp *p,
                               PGresult **res, struct ims_error *err, const char *what)
{
    PGconn *c = NULL;
    enum ims_status s = store__pg_get(store, &c, err);
    if (s != IMS_OK)
        return s;
    s = store__pg_q(c, sql, p, res, err, what);
    store__pg_put(store, c);
    return s;
}

enum ims_status store__pg_once1(struct store *store, const char *sql, const struct pgp *p,
                                int *found, int64_t *v, struct ims_error *err, const char *what)
{
    PGconn *c = NULL;
    enum ims_status s = store__pg_get(store, &c, err);
    if (s != IMS_OK)
        return s;
    s = store__pg_q1(c, sql, p, found, v, err, what);
    store__pg_put(store, c);
    return s;
}

enum ims_status store__pg_wq1(struct store *store, int lock, const char *sql, const struct pgp *p,
                              int *found, struct ims_error *err, const char *what)
{
    PGconn *c = NULL;
    enum ims_status s = store__pg_wbegin(store, &c, lock, err);
    if (s != IMS_OK)
        return s;
    s = store__pg_q1(c, sql, p, found, NULL, err, what);
    return store__pg_wend(store, c, s, err);
}

char *store__pg_int_array(size_t n, int64_t (*get)(const void *a, size_t i), const void *a)
{
    size_t cap = n * 21 + 3, o = 0;
    char *lit = ims_malloc(cap);
    if (!lit)
        return NULL;
    lit[o++] = '{';
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(lit + o, cap - o, "%s%lld", i ? "," : "", (long long)get(a, i));
    lit[o++] = '}';
    lit[o] = '\0';
    return lit;
}

int64_t store__pg_int_at(const void *a, size_t i)
{
    return ((const int64_t *)a)[i];
}

/* ---- COPY binary ---------------------------------------------------------------------- */

static void pgc_put(struct pgcopy *b, const void *v, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->n + n)
            cap *= 2;
        char *p = ims_realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, v, n);
    b->n += n;
}

static void pgc_be(struct pgcopy *b, uint64_t x, int bytes)
{
    char t[8];
    for (int i = bytes - 1; i >= 0; i--) {
        t[i] = (char)(x & 0xff);
        x >>= 8;
    }
    pgc_put(b, t, (size_t)bytes);
}

void store__pgc_init(struct pgcopy *b)
{
    memset(b, 0, sizeof(*b));
    static const char sig[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};
    pgc_put(b, sig, sizeof(sig));
    pgc_be(b, 0, 4); /* flags */
    pgc_be(b, 0, 4); /* header extension */
}

void store__pga_begin(struct pgcopy *b, uint32_t elem_oid, size_t n)
{
    memset(b, 0, sizeof(*b));
    pgc_be(b, 1, 4);        /* dimensions */
    pgc_be(b, 1, 4);        /* may hold NULLs */
    pgc_be(b, elem_oid, 4); /* element type */
    pgc_be(b, (uint64_t)n, 4);
    pgc_be(b, 1, 4); /* lower bound */
}

void store__pgc_row(struct pgcopy *b, int n_fields)
{
    pgc_be(b, (uint64_t)n_fields, 2);
}

void store__pgc_i64(struct pgcopy *b, int64_t x)
{
    pgc_be(b, 8, 4);
    pgc_be(b, (uint64_t)x, 8);
}

void store__pgc_bytes(struct pgcopy *b, const void *v, size_t n)
{
    if (!v) {
        pgc_be(b, 0xffffffffu, 4);
        return;
    }
    pgc_be(b, (uint64_t)n, 4);
    pgc_put(b, v, n);
}

void store__pgc_text(struct pgcopy *b, const char *s)
{
    store__pgc_bytes(b, s, s ? strlen(s) : 0);
}

enum ims_status store__pgc_send(PGconn *c, const char *copy_sql, struct pgcopy *b,
                                struct ims_error *err)
{
    pgc_be(b, 0xffff, 2); /* trailer */
    enum ims_status s = IMS_OK;
    if (b->oom) {
        ims_free(b->p);
        return ims_error_set(err, IMS_ERR_NOMEM, "catalogue: out of memory building a batch");
    }
    PGresult *r = PQexec(c, copy_sql);
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        s = store__pg_error(c, r, err, "copy");
        PQclear(r);
        ims_free(b->p);
        return s;
    }
    PQclear(r);
    for (size_t off = 0; off < b->n && s == IMS_OK;) {
        size_t k = b->n - off < (1u << 20) ? b->n - off : (1u << 20);
        if (PQputCopyData(c, b->p + off, (int)k) != 1)
            s = store__pg_error(c, NULL, err, "copy data");
        off += k;
    }
    if (PQputCopyEnd(c, s == IMS_OK ? NULL : "aborted") != 1 && s == IMS_OK)
        s = store__pg_error(c, NULL, err, "copy end");
    while ((r = PQgetResult(c)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && s == IMS_OK)
            s = store__pg_error(c, r, err, "copy");
        PQclear(r);
    }
    ims_free(b->p);
    b->p = NULL;
    return s;
}

/* ---- connections ------------------------------------------------------------------- */

static enum ims_status pg_connect(struct store *store, PGconn **out, struct ims_error *err)
{
    PGconn *c = PQconnectdb(store->pg->conninfo);
    if (!c)
        return ims_error_set(err, IMS_ERR_NOMEM, "catalogue: out of memory connecting");
    if (PQstatus(c) != CONNECTION_OK) {
        const char *host = PQhost(c), *port = PQport(c);
        const char *m = PQerrorMessage(c);
        size_t n = strlen(m);
        while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == ' '))
            n--;
        enum ims_status s = ims_error_set(
            err, IMS_ERR_IO, "catalogue %s: cannot connect to %s:%s: %.*s", store->db_path,
            host && *host ? host : "(default host)", port && *port ? port : "5432", (int)n, m);
        PQfinish(c);
        return s;
    }
    /* quiet NOTICEs (e.g. "relation already exists, skipping"); without
     * it the session only talks more */
    PGresult *r = PQexec(c, "SET client_min_messages = warning");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        ims_log(IMS_LOG_DEBUG, "catalogue: SET client_min_messages: %s", PQerrorMessage(c));
    PQclear(r);
    *out = c;
    return IMS_OK;
}

enum ims_status store__pg_get(struct store *store, PGconn **out, struct ims_error *err)
{
    struct store_pg *pg = store->pg;
    PGconn *c = NULL;
    pthread_mutex_lock(&pg->plock);
    while (pg->n_idle == 0 && pg->n_open >= STORE_PG_POOL_MAX)
        pthread_cond_wait(&pg->pcond, &pg->plock);
    if (pg->n_idle > 0) {
        c = pg->idle[--pg->n_idle];
        pthread_mutex_unlock(&pg->plock);
        if (PQstatus(c) != CONNECTION_OK) {
            store__pg_forget(c); /* a new session has none of the prepared statements */
            PQreset(c);   /* the server restarted: try once to reconnect */
        }
        *out = c;
        return IMS_OK;
    }
    pg->n_open++;
    pthread_mutex_unlock(&pg->plock);
    enum ims_status s = pg_connect(store, &c, err);
    if (s != IMS_OK) {
        pthread_mutex_lock(&pg->plock);
        pg->n_open--;
        pthread_cond_signal(&pg->pcond);
        pthread_mutex_unlock(&pg->plock);
        return s;
    }
    *out = c;
    return IMS_OK;
}

void store__pg_put(struct store *store, PGconn *c)
{
    if (!c)
        return;
    struct store_pg *pg = store->pg;
    if (PQtransactionStatus(c) != PQTRANS_IDLE) {
        PGresult *r = PQexec(c, "ROLLBACK");
        PQclear(r);
        /* a session that could not end its transaction must not serve the
         * next caller inside it: a new session starts clean (a broken
         * connection is reset by store__pg_get anyway) */
        if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE) {
            ims_log(IMS_LOG_WARN, "catalogue: a connection could not roll back (%s): reset",
                    PQerrorMessage(c));
            store__pg_forget(c);
            PQreset(c);
        }
    }
    pthread_mutex_lock(&pg->plock);
    pg->idle[pg->n_idle++] = c;
    pthread_cond_signal(&pg->pcond);
    pthread_mutex_unlock(&pg->plock);
}

enum ims_status store__pg_wbegin(struct store *store, PGconn **out, int lock, struct ims_error *err)
{
    PGconn *c = NULL;
    enum ims_status s = store__pg_get(store, &c, err);
    if (s != IMS_OK)
        return s;
    /* BEGIN, the idle bound, and the write lock (waited for at most lock_ms)
     * in one round trip (simple query protocol: one message, several
     * statements; the last one's result comes back). SET LOCAL: the bounds
     * end with the transaction, so read transactions (a long index build
     * between two fetches) are never cut. */
    struct store_pg *pg = store->pg;
    char sql[256];
    int o = snprintf(sql, sizeof(sql), "BEGIN; SET LOCAL idle_in_transaction_session_timeout = %d",
                     pg->idle_ms);
    if (lock)
        snprintf(sql + o, sizeof(sql) - (size_t)o,
                 "; SET LOCAL lock_timeout = %d; SELECT pg_advisory_xact_lock(%lld)", pg->lock_ms,
                 (long long)STORE_PG_WRITE_LOCK);
    PGresult *r = PQexec(c, sql);
    ExecStatusType t = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (t != PGRES_TUPLES_OK && t != PGRES_COMMAND_OK) {
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        if (lock && state && !strcmp(state, "55P03")) {
            s = ims_error_set(err, IMS_ERR_BUSY,
                              "catalogue: the write lock was not granted within %d ms "
                              "(" STORE_PG_LOCK_PARAM "): another node holds a write "
                              "transaction open; nothing was written",
                              pg->lock_ms);
            pg_cut = 0; /* a bound we asked for, not a cut: the caller decides */
        } else {
            s = store__pg_error(c, r, err, lock ? "write lock" : "begin");
        }
    }
    PQclear(r);
    if (s != IMS_OK) {
        store__pg_put(store, c);
        return s;
    }
    if (lock && store__pg_test_after_lock)
        store__pg_test_after_lock();
    *out = c;
    return IMS_OK;
}

enum ims_status store__pg_wend(struct store *store, PGconn *c, enum ims_status s,
                               struct ims_error *err)
{
    if (s == IMS_OK)
        s = store__pg_x(c, "COMMIT", NULL, err, "commit");
    store__pg_put(store, c); /* rolls back if still in a transaction */
    return s;
}

enum ims_status store__pg_rbegin(struct store *store, PGconn **out, struct ims_error *err)
{
    PGconn *c = NULL;
    enum ims_status s = store__pg_get(store, &c, err);
    if (s != IMS_OK)
        return s;
    s = store__pg_x(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", NULL, err, "begin");
    if (s != IMS_OK) {
        store__pg_put(store, c);
        return s;
    }
    *out = c;
    return IMS_OK;
}

void store__pg_rend(struct store *store, PGconn *c)
{
    /* nothing was written: a failed COMMIT costs nothing (store__pg_put rolls
     * back), the read itself stands */
    PGresult *r = PQexec(c, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        ims_log(IMS_LOG_DEBUG, "catalogue: ending a read transaction: %s", PQerrorMessage(c));
    PQclear(r);
    store__pg_put(store, c);
}

/* ---- schema ------------------------------------------------------------------------- */

/* One SQL text per schema version. v1 and v2 of the SQLite schema arrive
 * together: the PostgreSQL catalogue starts at v2. To add v3: append its SQL
 * here and bump STORE_SCHEMA_VERSION (and add the SQLite step). */
static const char *const pg_migrations[] = {
    /* v1: unused (the SQLite schema before the change feed) */
    "",
    /* v2 */
    "CREATE TABLE meta(key text PRIMARY KEY, value text NOT NULL);"
    "CREATE TABLE model("
    "  one boolean PRIMARY KEY DEFAULT true CHECK (one),"
    "  name text NOT NULL, dim integer NOT NULL CHECK (dim > 0), created bigint NOT NULL);"
    "CREATE TABLE images("
    "  id bigserial PRIMARY KEY,"
    "  source text NOT NULL UNIQUE,"
    "  sha256 bytea CHECK (sha256 IS NULL OR length(sha256) = 32),"
    "  format text,"
    "  width bigint NOT NULL DEFAULT 0,"
    "  height bigint NOT NULL DEFAULT 0,"
    "  bytes bigint NOT NULL DEFAULT 0,"
    "  added bigint NOT NULL,"
    "  caption text,"
    "  metadata text CHECK (metadata IS NULL OR metadata::jsonb IS NOT NULL),"
    "  model text NOT NULL);"
    "CREATE UNIQUE INDEX images_sha256 ON images(sha256) WHERE sha256 IS NOT NULL;"
    "CREATE INDEX images_added ON images(added, id);"
    "CREATE TABLE embeddings("
    "  image_id bigint PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,"
    "  vec bytea NOT NULL);"
    "CREATE TABLE thumbnails("
    "  image_id bigint PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,"
    "  jpeg bytea NOT NULL);"
    "CREATE TABLE deleted(seq bigserial PRIMARY KEY, image_id bigint NOT NULL,"
    "  time bigint NOT NULL);"
    "CREATE TABLE feed(one boolean PRIMARY KEY DEFAULT true CHECK (one),"
    "  seq bigint NOT NULL, floor bigint NOT NULL);"
    "INSERT INTO feed VALUES(true, 0, 0);"
    "CREATE TABLE changes(seq bigint PRIMARY KEY, image_id bigint NOT NULL,"
    "  kind smallint NOT NULL CHECK (kind IN (1, 2, 3)));"
    "CREATE TABLE jobs("
    "  id text PRIMARY KEY,"
    "  state text NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),"
    "  total bigint NOT NULL, done bigint NOT NULL DEFAULT 0,"
    "  failed bigint NOT NULL DEFAULT 0, n_errors bigint NOT NULL DEFAULT 0,"
    "  created bigint NOT NULL, updated bigint NOT NULL,"
    "  sealed boolean NOT NULL DEFAULT false, n_items bigint NOT NULL DEFAULT 0);"
    "CREATE TABLE job_errors("
    "  job_id text NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  seq bigint NOT NULL, url text NOT NULL, error text NOT NULL,"
    "  code text NOT NULL DEFAULT '', PRIMARY KEY (job_id, seq));"
    "CREATE TABLE job_items("
    "  id bigserial PRIMARY KEY,"
    "  job_id text NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  idx bigint NOT NULL, source text NOT NULL,"
    "  state smallint NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 3),"
    "  claimed_by text, lease_until timestamptz,"
    "  attempts integer NOT NULL DEFAULT 0, image_id bigint, outcome smallint,"
    "  code text, error text, UNIQUE (job_id, idx));"
    "CREATE INDEX job_items_open ON job_items(id) WHERE state < 2;"
    /* metadata is checked before a batch is written (the row index goes in
     * the message); a failed cast would abort the whole transaction */
    "CREATE FUNCTION ims_json_valid(t text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $f$"
    " BEGIN PERFORM t::jsonb; RETURN true; EXCEPTION WHEN others THEN RETURN false; END $f$;",
    /* v3: the file's size and mtime (ns) when the row was last synced
     * (add --sync, serve --watch); NULL: never synced */
    "ALTER TABLE images ADD COLUMN file_size bigint, ADD COLUMN file_mtime_ns bigint;",
    /* v4 (issue 10): the EXIF date taken as a column generated from the
     * metadata's "taken" (existing rows get it at once, and it can never
     * disagree with the metadata), and image tags (store_sqlite.c v4). The
     * nested CASEs fix the order of evaluation: no cast of a non-number. */
    "ALTER TABLE images ADD COLUMN taken bigint GENERATED ALWAYS AS ("
    "  CASE WHEN jsonb_typeof(metadata::jsonb -> 'taken') = 'number' THEN"
    "    CASE WHEN abs((metadata::jsonb ->> 'taken')::numeric) < 1e15"
    "    THEN trunc((metadata::jsonb ->> 'taken')::numeric)::bigint END END) STORED;"
    "CREATE INDEX images_taken ON images(taken);"
    "CREATE TABLE image_tags("
    "  image_id bigint NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
    "  tag text NOT NULL CHECK (octet_length(tag) BETWEEN 1 AND 64),"
    "  tag_key text NOT NULL CHECK (octet_length(tag_key) BETWEEN 1 AND 64),"
    "  PRIMARY KEY (image_id, tag_key));"
    "CREATE INDEX image_tags_key ON image_tags(tag_key, image_id);",
    /* v5 (issue 9; store_sqlite.c v5): the ROW change kind (the row changed,
     * its embedding did not), and each replaced embedding's version (the seq
     * of its UPDATE change), kept when the feed is trimmed; back-filled from
     * the feed's UPDATE changes, and every row at the floor when the feed
     * was trimmed (what it lost is unknown). */
    "ALTER TABLE changes DROP CONSTRAINT changes_kind_check,"
    "  ADD CONSTRAINT changes_kind_check CHECK (kind IN (1, 2, 3, 4));"
    "CREATE TABLE embedding_versions("
    "  image_id bigint PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,"
    "  seq bigint NOT NULL);"
    "INSERT INTO embedding_versions(image_id, seq) SELECT i.id, f.floor FROM images i, feed f"
    "  WHERE f.floor > 0;"
    "INSERT INTO embedding_versions(image_id, seq) SELECT c.image_id, max(c.seq) FROM changes c"
    "  JOIN images i ON i.id = c.image_id WHERE c.kind = 3 GROUP BY c.image_id"
    "  ON CONFLICT (image_id) DO UPDATE SET seq = excluded.seq;",
};

_Static_assert(sizeof(pg_migrations) / sizeof(pg_migrations[0]) == STORE_SCHEMA_VERSION,
               "one PostgreSQL migration step per schema version");

static enum ims_status pg_migrate(struct store *store, PGconn *c, struct ims_error *err)
{
    enum ims_status s = store__pg_x(c, "BEGIN", NULL, err, "begin");
    if (s == IMS_OK)
        s = store__pg_x(c, "SELECT pg_advisory_xact_lock(1768777074)", NULL, err, "migration lock");
    if (s == IMS_OK)
        s = store__pg_x(c, "CREATE TABLE IF NOT EXISTS schema_version(version integer NOT NULL)",
                        NULL, err, "schema_version");
    int64_t version = 0;
    int have = 0;
    if (s == IMS_OK)
        s = store__pg_q1(c, "SELECT version FROM schema_version", NULL, &have, &version, err,
                         "schema_version");
    if (s != IMS_OK)
        goto out;
    int fresh = !have;
    if (version > STORE_SCHEMA_VERSION) {
        s = ims_error_set(err, IMS_ERR_UNSUPPORTED,
                          "catalogue %s has schema version %lld, newer than the %d this "
                          "imgsearch supports; upgrade imgsearch to open it",
                          store->db_path, (long long)version, STORE_SCHEMA_VERSION);
        goto out;
    }
    if (fresh && (store->flags & STORE_OPEN_EXISTING)) {
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "%s holds no catalogue (nothing was created)",
                          store->db_path);
        goto out;
    }
    if (fresh) {
        /* a database with tables of its own is not ours to fill */
        int64_t n = 0;
        s = store__pg_q1(c,
                         "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND "
                         "tablename <> 'schema_version'",
                         NULL, NULL, &n, err, "inspect");
        if (s != IMS_OK)
            goto out;
        if (n > 0) {
            s = ims_error_set(err, IMS_ERR_CORRUPT,
                              "%s has tables but is not an imgsearch catalogue (no "
                              "schema_version row); it was left untouched",
                              store->db_path);
            goto out;
        }
        s = store__pg_x(c, "INSERT INTO schema_version VALUES(0)", NULL, err, "schema_version");
    }
    for (int v = (int)version + 1; v <= STORE_SCHEMA_VERSION && s == IMS_OK; v++) {
        if (pg_migrations[v - 1][0]) {
            PGresult *m = PQexec(c, pg_migrations[v - 1]);
            if (PQresultStatus(m) != PGRES_COMMAND_OK && PQresultStatus(m) != PGRES_TUPLES_OK) {
                s = store__pg_error(c, m, err, "migration");
                ims_error_prefix(err, "migrating the catalogue to schema v%d", v);
            }
            PQclear(m);
        }
        if (s == IMS_OK) {
            struct pgp p = {0};
            store__pgp_i64(&p, v);
            s = store__pg_x(c, "UPDATE schema_version SET version = $1", &p, err, "schema_version");
        }
        if (s == IMS_OK && !fresh)
            ims_log(IMS_LOG_INFO, "catalogue migrated to schema v%d", v);
    }
    if (s == IMS_OK) {
        struct pgp p = {0};
        store__pgp_text(&p, store->model_name);
        store__pgp_i64(&p, store->dim);
        store__pgp_i64(&p, store__unix_now());
        s = store__pg_x(c,
                        "INSERT INTO model(name, dim, created) VALUES($1, $2::bigint::integer, $3) "
                        "ON CONFLICT (one) DO NOTHING",
                        &p, err, "record model");
    }
out:
    if (s == IMS_OK)
        s = store__pg_x(c, "COMMIT", NULL, err, "commit");
    else {
        PGresult *rb = PQexec(c, "ROLLBACK");
        PQclear(rb);
    }
    return s;
}

static enum ims_status pg_check_model(struct store *store, PGconn *c, struct ims_error *err)
{
    PGresult *r = NULL;
    enum ims_status s = store__pg_q(c, "SELECT name, dim FROM model", NULL, &r, err, "read model");
    if (s != IMS_OK)
        return s;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return ims_error_set(err, IMS_ERR_CORRUPT, "catalogue %s: the model record is missing",
                             store->db_path);
    }
    const char *name = PQgetvalue(r, 0, 0);
    int64_t dim = store__pg_i64(r, 0, 1);
    if ((strcmp(name, store->model_name) != 0 || dim != store->dim) &&
        !(store->flags & STORE_OPEN_ALLOW_MODEL_MISMATCH))
        s = ims_error_set(err, IMS_ERR_MODEL_MISMATCH,
                          "catalogue %s belongs to model '%s' (dim %lld), not to model '%s' "
                          "(dim %u); use that model, another catalogue, or re-embed it",
                          store->db_path, name, (long long)dim, store->model_name, store->dim);
    PQclear(r);
    return s;
}

/* ---- model, version, check ------------------------------------------------------------- */

static enum ims_status pg_model_get(struct store *store, char *name, size_t cap, uint32_t *dim,
                                    struct ims_error *err)
{
    PGresult *r = NULL;
    enum ims_status s =
        store__pg_once(store, "SELECT name, dim FROM model", NULL, &r, err, "read model");
    if (s != IMS_OK)
        return s;
    if (PQntuples(r) != 1)
        s = ims_error_set(err, IMS_ERR_CORRUPT, "catalogue: the model record is missing");
    else {
        snprintf(name, cap, "%s", PQgetvalue(r, 0, 0));
        *dim = (uint32_t)store__pg_i64(r, 0, 1);
    }
    PQclear(r);
    return s;
}

static enum ims_status pg_model_record(struct store *store, struct ims_error *err)
{
    struct pgp p = {0};
    store__pgp_text(&p, store->model_name);
    store__pgp_i64(&p, store->dim);
    return store__pg_wq1(store, 0, "UPDATE model SET name = $1, dim = $2::bigint::integer", &p,
                         NULL, err, "record model");
}

static enum ims_status pg_schema_version(struct store *store, int *version, struct ims_error *err)
{
    PGresult *r = NULL;
    enum ims_status s = store__pg_once(store, "SELECT version FROM schema_version", NULL, &r, err,
                                       "schema_version");
    if (s != IMS_OK)
        return s;
    if (PQntuples(r) != 1)
        s = ims_error_set(err, IMS_ERR_CORRUPT, "catalogue: bad schema_version");
    else
        *version = (int)store__pg_i64(r, 0, 0);
    PQclear(r);
    return s;
}

static enum ims_status pg_check(struct store *store, struct ims_error *err)
{
    PGconn *c = NULL;
    enum ims_status s = store__pg_rbegin(store, &c, err);
    if (s != IMS_OK)
        return s;
    struct pgp p = {0};
    store__pgp_i64(&p, (int64_t)store->dim * 4);
    int bad = 0;
    int64_t bad_id = 0, newer = 0;
    s = store__pg_q1(c,
                     "SELECT i.id FROM images i LEFT JOIN embeddings e ON e.image_id = i.id "
                     "WHERE e.vec IS NULL OR length(e.vec) <> $1 LIMIT 1",
                     &p, &bad, &bad_id, err, "check embeddings");
    if (s == IMS_OK && bad)
        s = ims_error_set(err, IMS_ERR_CORRUPT,
                          "catalogue check failed (embeddings): image %lld has no embedding of "
                          "%u floats",
                          (long long)bad_id, store->dim);
    if (s == IMS_OK)
        s = store__pg_q1(c,
                         "SELECT (SELECT count(*) FROM changes) > 0 AND "
                         "(SELECT max(seq) FROM changes) > (SELECT seq FROM feed)",
                         NULL, NULL, &newer, err, "check feed");
    if (s == IMS_OK && newer)
        s = ims_error_set(err, IMS_ERR_CORRUPT,
                          "catalogue check failed (feed): a change is newer than the counter");
    store__pg_rend(store, c);
    return s;
}

/* ---- change feed ------------------------------------------------------------------------ */

enum ims_status store__pg_log_changes(PGconn *c, const int64_t *ids, size_t n,
                                      enum store_change_kind kind, struct ims_error *err)
{
    if (n == 0)
        return IMS_OK;
    char *lit = store__pg_int_array(n, store__pg_int_at, ids);
    if (!lit)
        return ims_error_set(err, IMS_ERR_NOMEM, "change feed: out of memory");
    /* one round trip: advance the counter, append the changes with the seqs
     * it gave (in ids order), and queue the notification (sent at commit,
     * payload the newest seq) */
    struct pgp p = {0};
    store__pgp_i64(&p, (int64_t)n);
    store__pgp_literal(&p, lit);
    store__pgp_i64(&p, (int64_t)kind);
    /* an UPDATE (a replaced embedding) also records each id's embedding
     * version, its change's seq (schema v5), in the same statement */
    enum ims_status s = store__pg_x(
        c,
        kind == STORE_CHANGE_UPDATE
            ? "WITH f AS (UPDATE feed SET seq = seq + $1 RETURNING seq, "
              "pg_notify('" STORE_PG_CHANNEL
              "', seq::text)::text AS sent), c AS (INSERT INTO changes(seq, image_id, kind) SELECT "
              "f.seq - $1 + u.o, u.id, $3::int8::smallint FROM f, unnest($2::bigint[]) WITH "
              "ORDINALITY AS u(id, o) RETURNING seq, image_id) INSERT INTO "
              "embedding_versions(image_id, seq) SELECT image_id, max(seq) FROM c GROUP BY "
              "image_id ON CONFLICT (image_id) DO UPDATE SET seq = excluded.seq"
            : "WITH f AS (UPDATE feed SET seq = seq + $1 RETURNING seq, "
              "pg_notify('" STORE_PG_CHANNEL "', seq::text)::text AS sent) INSERT INTO "
                                             "changes(seq, image_id, kind) SELECT f.seq - "
              "$1 + u.o, u.id, $3::int8::smallint FROM f, unnest($2::bigint[]) WITH ORDINALITY AS "
              "u(id, o)",
        &p, err, "log changes");
    ims_free(lit);
    return s;
}

static enum ims_status read1(struct store *store, const char *sql, int64_t *v,
                             struct ims_error *err)
{
    int found = 0;
    enum ims_status s = store__pg_once1(store, sql, NULL, &found, v, err, "read");
    if (s == IMS_OK && !found)
        *v = 0;
    return s;
}

static enum ims_status pg_change_seq(struct store *store, int64_t *seq, struct ims_error *err)
{
    return read1(store, "SELECT seq FROM feed", seq, err);
}

static enum ims_status pg_change_floor(struct store *store, int64_t *floor, struct ims_error *err)
{
    return read1(store, "SELECT floor FROM feed", floor, err);
}

static enum ims_status pg_changes_after(struct store *store, int64_t after, size_t max_n,
                                        struct store_change *out, size_t *n_out,
                                        struct ims_error *err)
{
    PGconn *c = NULL;
    PGresult *r = NULL;
    enum ims_status s = store__pg_rbegin(store, &c, err);
    if (s != IMS_OK)
        return s;
    int64_t floor = 0;
    s = store__pg_q1(c, "SELECT floor FROM feed", NULL, NULL, &floor, err, "read floor");
    if (s == IMS_OK && after < floor)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND,
                          "the change feed was trimmed up to seq %lld; a replica at seq %lld "
                          "must rebuild",
                          (long long)floor, (long long)after);
    if (s == IMS_OK) {
        struct pgp p = {0};
        store__pgp_i64(&p, after);
        store__pgp_i64(&p, (int64_t)max_n);
        s = store__pg_q(
            c, "SELECT seq, image_id, kind FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2", &p,
            &r, err, "read changes");
    }
    if (s == IMS_OK) {
        size_t n = (size_t)PQntuples(r);
        for (size_t i = 0; i < n; i++) {
            out[i].seq = store__pg_i64(r, (int)i, 0);
            out[i].id = store__pg_i64(r, (int)i, 1);
            out[i].kind = (enum store_change_kind)store__pg_i64(r, (int)i, 2);
        }
        *n_out = n;
    }
    PQclear(r);
    store__pg_rend(store, c);
    return s;
}

/* Several nodes may apply the same retention policy: one at a time trims
 * (a transaction advisory lock taken without waiting); the others find it
 * taken and leave the work to it. */
#define STORE_PG_TRIM_LOCK 1768777075
static enum ims_status pg_change_trim(struct store *store, int64_t upto, struct ims_error *err)
{
    PGconn *c = NULL;
    enum ims_status s = store__pg_wbegin(store, &c, 0, err);
    if (s != IMS_OK)
        return s;
    struct pgp t = {0};
    store__pgp_i64(&t, STORE_PG_TRIM_LOCK);
    int64_t mine = 0; /* a binary bool: 1 byte */
    s = store__pg_q1(c, "SELECT pg_try_advisory_xact_lock($1)", &t, NULL, &mine, err, "trim lock");
    if (s != IMS_OK || mine != 1)
        return store__pg_wend(store, c, s, err);
    struct pgp w = {0};
    store__pgp_i64(&w, STORE_PG_WRITE_LOCK);
    s = store__pg_x(c, "SELECT pg_advisory_xact_lock($1)", &w, err, "write lock");
    struct pgp p = {0};
    store__pgp_i64(&p, upto);
    if (s == IMS_OK)
        s = store__pg_x(c, "UPDATE feed SET floor = greatest(floor, least($1, seq))", &p, err,
                        "trim");
    if (s == IMS_OK)
        s = store__pg_x(c, "DELETE FROM changes WHERE seq <= (SELECT floor FROM feed)", NULL, err,
                        "trim");
    return store__pg_wend(store, c, s, err);
}

static enum ims_status pg_embeddings_changed_after(struct store *store, int64_t after,
                                                   int64_t **ids_out, size_t *n_out,
                                                   struct ims_error *err)
{
    PGresult *r = NULL;
    struct pgp p = {0};
    store__pgp_i64(&p, after);
    enum ims_status s = store__pg_once(
        store,
        "SELECT v.image_id FROM embedding_versions v JOIN images i ON i.id = v.image_id "
        "WHERE v.seq > $1 ORDER BY v.image_id",
        &p, &r, err, "read embedding versions");
    if (s != IMS_OK)
        return s;
    return store__pg_id_column(r, ids_out, n_out, "embedding versions", err);
}

/* Waits on the LISTEN connection: whoever holds llock polls its socket in
 * short slices; every slice re-reads the counter, so a notification that
 * arrived for another waiter is never missed. */
static enum ims_status pg_wait_change(struct store *store, int64_t known, int timeout_ms,
                                      int64_t *seq_now, struct ims_error *err)
{
    struct store_pg *pg = store->pg;
    int64_t deadline = store__unix_now_ms() + timeout_ms;
    for (;;) {
        int64_t seq = 0;
        enum ims_status s = pg_change_seq(store, &seq, err);
        if (s != IMS_OK)
            return s;
        int64_t left = deadline - store__unix_now_ms();
        if (seq > known || left <= 0) {
            *seq_now = seq;
            return IMS_OK;
        }
        int slice = left < 200 ? (int)left : 200;
        pthread_mutex_lock(&pg->llock);
        if (!pg->listen || PQstatus(pg->listen) != CONNECTION_OK) {
            if (pg->listen)
                PQfinish(pg->listen);
            pg->listen = NULL;
            /* without a listener the wait still works, by reading the
             * counter every slice: say why (debug: it may repeat) */
            PGconn *c = NULL;
            struct ims_error e = {0};
            if (pg_connect(store, &c, &e) == IMS_OK) {
                PGresult *r = PQexec(c, "LISTEN " STORE_PG_CHANNEL);
                int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
                PQclear(r);
                if (ok) {
                    pg->listen = c;
                } else {
                    ims_log(IMS_LOG_DEBUG, "catalogue: LISTEN: %s (polling instead)",
                            PQerrorMessage(c));
                    PQfinish(c);
                }
            } else {
                ims_log(IMS_LOG_DEBUG, "%s (waiting for changes by polling)", e.message);
            }
        }
        if (pg->listen) {
            struct pollfd pfd = {.fd = PQsocket(pg->listen), .events = POLLIN};
            if (poll(&pfd, 1, slice) > 0)
                PQconsumeInput(pg->listen);
            PGnotify *nt;
            while ((nt = PQnotifies(pg->listen)) != NULL)
                PQfreemem(nt);
        } else {
            poll(NULL, 0, slice); /* server away: retry in a moment */
        }
        pthread_mutex_unlock(&pg->llock);
    }
}

/* ---- open / close ---------------------------------------------------------------------- */

static void pg_close(struct store *store)
{
    if (!store)
        return;
    if (store->pg) {
        for (int i = 0; i < store->pg->n_idle; i++) {
            store__pg_forget(store->pg->idle[i]);
            PQfinish(store->pg->idle[i]);
        }
        if (store->pg->listen)
            PQfinish(store->pg->listen);
        pthread_mutex_destroy(&store->pg->plock);
        pthread_cond_destroy(&store->pg->pcond);
        pthread_mutex_destroy(&store->pg->llock);
        if (store->pg->conninfo) {
            memset(store->pg->conninfo, 0, strlen(store->pg->conninfo));
            ims_free(store->pg->conninfo);
        }
        ims_free(store->pg);
    }
    ims_free(store->db_path);
    ims_free(store->model_name);
    ims_free(store);
}

/* Takes imgsearch's own parameters (STORE_PG_IDLE_PARAM, STORE_PG_LOCK_PARAM)
 * out of the URL's query: `out` gets the URL without them (what libpq
 * sees, which refuses parameters it does not know), *idle_ms and *lock_ms
 * their values or the defaults. A value that is not a whole number of
 * milliseconds in 0..STORE_PG_TIMEOUT_MAX_MS is IMS_ERR_INVALID. */
static enum ims_status pg_take_params(const char *url, char *out, int *idle_ms, int *lock_ms,
                                      struct ims_error *err)
{
    *idle_ms = STORE_PG_IDLE_DEFAULT_MS;
    *lock_ms = STORE_PG_LOCK_DEFAULT_MS;
    const char *q = strchr(url, '?');
    size_t o = q ? (size_t)(q - url) : strlen(url);
    memcpy(out, url, o);
    out[o] = '\0';
    if (!q)
        return IMS_OK;
    int kept = 0;
    for (const char *p = q + 1; *p;) {
        size_t n = strcspn(p, "&");
        size_t kn = strcspn(p, "=&");
        int *dst = NULL;
        if (kn == strlen(STORE_PG_IDLE_PARAM) && !strncmp(p, STORE_PG_IDLE_PARAM, kn))
            dst = idle_ms;
        else if (kn == strlen(STORE_PG_LOCK_PARAM) && !strncmp(p, STORE_PG_LOCK_PARAM, kn))
            dst = lock_ms;
        if (dst) {
            const char *v = p + kn + (p[kn] == '=');
            size_t vn = n - (size_t)(v - p);
            long long x = 0;
            int ok = vn > 0 && vn <= 9;
            for (size_t i = 0; ok && i < vn; i++) {
                ok = v[i] >= '0' && v[i] <= '9';
                x = x * 10 + (v[i] - '0');
            }
            if (!ok || x > STORE_PG_TIMEOUT_MAX_MS)
                return ims_error_set(err, IMS_ERR_INVALID,
                                     "catalogue URL: %.*s must be a whole number of "
                                     "milliseconds, 0 (no limit) to %d",
                                     (int)kn, p, STORE_PG_TIMEOUT_MAX_MS);
            *dst = (int)x;
        } else if (n > 0) {
            out[o++] = kept++ ? '&' : '?';
            memcpy(out + o, p, n);
            o += n;
            out[o] = '\0';
        }
        p += n + (p[n] == '&');
    }
    return IMS_OK;
}

static const struct store_ops pg_ops;

enum ims_status store__pg_open(const char *url, const struct store_model_info *model,
                               unsigned flags, struct store **out, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!out, err, IMS_ERR_INVALID, "store_open: no output pointer");
    IMS_RETURN_ERROR_IF(!model || !model->name || !model->name[0] ||
                            strlen(model->name) > STORE_MODEL_NAME_MAX_BYTES || model->dim < 1 ||
                            model->dim > STORE_DIM_MAX,
                        err, IMS_ERR_INVALID,
                        "store_open: the model needs a name (1..%d bytes) and an embedding "
                        "size of 1..%d",
                        STORE_MODEL_NAME_MAX_BYTES, STORE_DIM_MAX);
    struct store *store = ims_calloc(1, sizeof(*store));
    if (!store)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_open: out of memory");
    store->ops = &pg_ops;
    store->pg = ims_calloc(1, sizeof(*store->pg));
    size_t shown_cap = strlen(url) + 8;
    store->db_path = ims_malloc(shown_cap);
    store->model_name = ims_strdup(model->name);
    if (store->pg)
        store->pg->conninfo = ims_malloc(strlen(url) + 1);
    if (!store->pg || !store->db_path || !store->model_name || !store->pg->conninfo) {
        pg_close(store);
        return ims_error_set(err, IMS_ERR_NOMEM, "store_open: out of memory");
    }
    store_catalogue_display(url, store->db_path, shown_cap);
    store->dim = model->dim;
    store->flags = flags;
    pthread_mutex_init(&store->pg->plock, NULL);
    pthread_cond_init(&store->pg->pcond, NULL);
    pthread_mutex_init(&store->pg->llock, NULL);
    enum ims_status ps =
        pg_take_params(url, store->pg->conninfo, &store->pg->idle_ms, &store->pg->lock_ms, err);
    if (ps != IMS_OK) {
        pg_close(store);
        return ps;
    }

    /* a bad URL is reported by libpq before any connection attempt */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(store->pg->conninfo, &perr);
    if (!opts) {
        enum ims_status s = ims_error_set(err, IMS_ERR_INVALID, "catalogue %s: %s", store->db_path,
                                          perr ? perr : "not a valid URL");
        PQfreemem(perr);
        pg_close(store);
        return s;
    }
    PQconninfoFree(opts);

    PGconn *c = NULL;
    enum ims_status s = store__pg_get(store, &c, err);
    if (s == IMS_OK) {
        s = pg_migrate(store, c, err);
        if (s == IMS_OK)
            s = pg_check_model(store, c, err);
        store__pg_put(store, c);
    }
    if (s != IMS_OK) {
        pg_close(store);
        return s;
    }
    *out = store;
    return IMS_OK;
}

/* ---- write operations, run again when the server cut them --------------------------
 *
 * A node frozen inside a write transaction (SIGSTOP, a long pause) has its
 * transaction cut by the server after STORE_PG_IDLE_PARAM, so the other
 * nodes' writers proceed. When it wakes, its next statement fails; the
 * server rolled everything back, so the whole operation runs again from
 * its start on a fresh connection (store__pg_get resets a broken one), at most
 * PG_RETRY_MAX times, after a warning that says why. Nothing is lost (the
 * retry writes it) and nothing is doubled (nothing of the first attempt
 * was committed). Not retried: a COMMIT whose connection was lost (it may
 * have committed). insert_stream is retried too: its fill and done start
 * again from row 0, as store.h tells their authors. */
#define PG_RETRY_MAX 3

static int pg_retry_again(enum ims_status s, int attempt, const struct ims_error *err)
{
    if (s == IMS_OK || !pg_cut || attempt + 1 >= PG_RETRY_MAX)
        return 0;
    atomic_fetch_add(&pg_n_retries, 1);
    ims_log(IMS_LOG_WARN, "%s; trying the write again (attempt %d of %d)",
            err && err->message[0] ? err->message : "catalogue: write transaction cut",
            attempt + 2, PG_RETRY_MAX);
    return 1;
}

#define PG_RETRY(fn, params, args)                                                           \
    static enum ims_status fn##_retry params                                                  \
    {                                                                                         \
        enum ims_status s;                                                                    \
        for (int attempt = 0;; attempt++) {                                                   \
            pg_cut = 0;                                                                       \
            pg_write_op = 1;                                                                  \
            s = fn args;                                                                      \
            pg_write_op = 0;                                                                  \
            if (!pg_retry_again(s, attempt, err))                                             \
                return s;                                                                     \
        }                                                                                     \
    }

PG_RETRY(pg_model_record, (struct store * store, struct ims_error *err), (store, err))
PG_RETRY(store__pg_insert_many,
         (struct store * store, const struct store_new_image *rows, size_t n,
          struct store_insert_result *res, struct ims_error *err),
         (store, rows, n, res, err))
PG_RETRY(store__pg_insert_stream,
         (struct store * store, size_t n_total, size_t chunk_rows, store_fill_fn fill,
          store_result_fn done, void *user, struct ims_error *err),
         (store, n_total, chunk_rows, fill, done, user, err))
PG_RETRY(store__pg_insert_finish,
         (struct store * store, const struct store_new_image *rows, size_t n,
          struct store_insert_result *res, const char *node, const int64_t *items,
          struct store_item_result *ir, struct ims_error *err),
         (store, rows, n, res, node, items, ir, err))
PG_RETRY(store__pg_set_thumbnail,
         (struct store * store, int64_t id, const void *jpeg, size_t n, struct ims_error *err),
         (store, id, jpeg, n, err))
PG_RETRY(store__pg_set_embeddings,
         (struct store * store, const int64_t *ids, const float *v, size_t n, uint8_t *exists,
          struct ims_error *err),
         (store, ids, v, n, exists, err))
PG_RETRY(store__pg_delete_many,
         (struct store * store, const int64_t *ids, size_t n, uint8_t *existed,
          struct ims_error *err),
         (store, ids, n, existed, err))
PG_RETRY(store__pg_tags_update,
         (struct store * store, int64_t id, const char *const *tags, const char *const *keys,
          size_t n_add, const char *const *rkeys, size_t n_remove, struct ims_error *err),
         (store, id, tags, keys, n_add, rkeys, n_remove, err))
PG_RETRY(store__pg_restore_many,
         (struct store * store, const struct store_restore_row *rows, size_t n,
          struct ims_error *err),
         (store, rows, n, err))
PG_RETRY(pg_change_trim, (struct store * store, int64_t upto, struct ims_error *err),
         (store, upto, err))
PG_RETRY(store__pg_job_create,
         (struct store * store, const char *id, int64_t total, struct ims_error *err),
         (store, id, total, err))
PG_RETRY(store__pg_job_update,
         (struct store * store, const char *id, enum store_job_state state, int64_t done,
          int64_t failed, struct ims_error *err),
         (store, id, state, done, failed, err))
PG_RETRY(store__pg_job_add_errors,
         (struct store * store, const char *id, const char *const *urls, const char *const *codes,
          const char *const *msgs, size_t n, struct ims_error *err),
         (store, id, urls, codes, msgs, n, err))
PG_RETRY(store__pg_job_fail_unfinished, (struct store * store, int64_t *n, struct ims_error *err),
         (store, n, err))
PG_RETRY(store__pg_job_add_items,
         (struct store * store, const char *id, const char *const *sources, size_t n,
          struct ims_error *err),
         (store, id, sources, n, err))
PG_RETRY(store__pg_job_seal, (struct store * store, const char *id, struct ims_error *err),
         (store, id, err))
PG_RETRY(store__pg_job_claim,
         (struct store * store, const char *node, size_t max_n, int64_t lease_ms,
          struct store_job_item **items, size_t *n, struct ims_error *err),
         (store, node, max_n, lease_ms, items, n, err))
PG_RETRY(store__pg_job_renew,
         (struct store * store, const char *node, const int64_t *ids, size_t n, int64_t lease_ms,
          uint8_t *held, struct ims_error *err),
         (store, node, ids, n, lease_ms, held, err))
PG_RETRY(store__pg_job_release_node,
         (struct store * store, const char *node, int64_t *n, struct ims_error *err),
         (store, node, n, err))
PG_RETRY(store__pg_job_finish,
         (struct store * store, const char *node, const struct store_item_result *results, size_t n,
          uint8_t *accepted, struct ims_error *err),
         (store, node, results, n, accepted, err))
PG_RETRY(store__pg_update_files,
         (struct store * store, const struct store_file_update *u, size_t n, uint8_t *found,
          struct ims_error *err),
         (store, u, n, found, err))
PG_RETRY(store__pg_replace_content,
         (struct store * store, int64_t id, int64_t from, int64_t size, int64_t mtime,
          struct ims_error *err),
         (store, id, from, size, mtime, err))
PG_RETRY(store__pg_set_details,
         (struct store * store, int64_t id, const char *caption, int64_t added,
          struct ims_error *err),
         (store, id, caption, added, err))

static const struct store_ops pg_ops = {
    .name = "postgresql",
    .close = pg_close,
    .model_get = pg_model_get,
    .model_record = pg_model_record_retry,
    .schema_version = pg_schema_version,
    .check = pg_check,
    .insert_many = store__pg_insert_many_retry,
    .insert_finish = store__pg_insert_finish_retry,
    .insert_stream = store__pg_insert_stream_retry,
    .set_thumbnail = store__pg_set_thumbnail_retry,
    .set_embeddings = store__pg_set_embeddings_retry,
    .delete_many = store__pg_delete_many_retry,
    .get_many = store__pg_get_many,
    .find_by_source = store__pg_find_by_source,
    .find_by_sha256 = store__pg_find_by_sha256,
    .get_thumbnail = store__pg_get_thumbnail,
    .count = store__pg_count,
    .filter_ids = store__pg_filter_ids,
    .tags_update = store__pg_tags_update_retry,
    .max_id = store__pg_max_id,
    .list = store__pg_list,
    .scan_embeddings = store__pg_scan_embeddings,
    .restore_many = store__pg_restore_many_retry,
    .deleted_seq = store__pg_deleted_seq,
    .deleted_after = store__pg_deleted_after,
    .change_seq = pg_change_seq,
    .changes_after = pg_changes_after,
    .change_floor = pg_change_floor,
    .change_trim = pg_change_trim_retry,
    .embeddings_changed_after = pg_embeddings_changed_after,
    .wait_change = pg_wait_change,
    .job_create = store__pg_job_create_retry,
    .job_update = store__pg_job_update_retry,
    .job_add_errors = store__pg_job_add_errors_retry,
    .job_get = store__pg_job_get,
    .job_fail_unfinished = store__pg_job_fail_unfinished_retry,
    .job_add_items = store__pg_job_add_items_retry,
    .job_seal = store__pg_job_seal_retry,
    .job_claim = store__pg_job_claim_retry,
    .job_renew = store__pg_job_renew_retry,
    .job_release_node = store__pg_job_release_node_retry,
    .job_item_outcome = store__pg_job_item_outcome,
    .job_finish = store__pg_job_finish_retry,
    .job_item_get = store__pg_job_item_get,
    .list_under = store__pg_list_under,
    .update_files = store__pg_update_files_retry,
    .replace_content = store__pg_replace_content_retry,
    .set_details = store__pg_set_details_retry,
};
