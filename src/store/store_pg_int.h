/* SPDX-License-Identifier: MIT */
/*
 * store_pg_int.h: what the PostgreSQL backend's files share: the connection
 * pool, binary parameters and results, transactions, error mapping.
 *
 *   store_pg.c         open (URL, pool, listener), schema migrations, meta,
 *                      model, check, change feed, waiting (LISTEN/NOTIFY)
 *   store_pg_images.c  images, embeddings, thumbnails, deletion log, scans
 *   store_pg_jobs.c    jobs, job items (SKIP LOCKED claims, leases)
 *
 * Every query uses binary parameters and binary results (no text parsing of
 * numbers or bytea). Every write that creates changes first takes the
 * transaction-level advisory lock STORE_PG_WRITE_LOCK, so image writes from
 * all nodes are serialised: seqs are assigned in commit order, and dedup by
 * source/sha256 sees every row committed before it (the UNIQUE constraints
 * stay as the last line of defence).
 */
#ifndef IMGSEARCH_STORE_PG_INT_H
#define IMGSEARCH_STORE_PG_INT_H

#include <libpq-fe.h>
#include <pthread.h>

#include "store_int.h"

#define STORE_PG_POOL_MAX 6
#define STORE_PG_WRITE_LOCK 0x696d6773 /* "imgs" */
#define STORE_PG_CHANNEL "imgsearch_changes"
#define STORE_PG_MAX_PARAMS 16

struct store_pg {
    char *conninfo; /* the URL as given (with any password): never printed */
    pthread_mutex_t plock;
    pthread_cond_t pcond;
    PGconn *idle[STORE_PG_POOL_MAX];
    int n_idle, n_open;

    pthread_mutex_t llock; /* guards listen */
    PGconn *listen;        /* LISTEN imgsearch_changes */

    /* write transactions (catalogue URL parameters, store_pg.c): a write
     * transaction idle longer than idle_ms is cut by the server (a frozen
     * node must not hold the write lock forever); a writer waits at most
     * lock_ms for the write lock. 0 = no limit. */
    int idle_ms, lock_ms;
};

/* The catalogue URL parameters imgsearch reads itself (removed from the URL
 * before libpq sees it) and their defaults. */
#define STORE_PG_IDLE_PARAM "write_idle_timeout_ms"
#define STORE_PG_LOCK_PARAM "write_lock_timeout_ms"
#define STORE_PG_IDLE_DEFAULT_MS 10000
#define STORE_PG_LOCK_DEFAULT_MS 600000
#define STORE_PG_TIMEOUT_MAX_MS 86400000

/* Tests only: called (when set) right after a write transaction took the
 * write lock, e.g. to freeze the process there. NULL in production. */
extern void (*store__pg_test_after_lock)(void);
/* Write operations retried because the server cut their transaction
 * before it committed (idle timeout, lost connection): a counter for tests
 * and logs. */
uint64_t store__pg_retries(void);

/* Binary parameters of one query. Values are borrowed (ints are copied). */
struct pgp {
    int n;
    const char *v[STORE_PG_MAX_PARAMS];
    int len[STORE_PG_MAX_PARAMS];
    int fmt[STORE_PG_MAX_PARAMS];
    Oid type[STORE_PG_MAX_PARAMS];
    char buf[STORE_PG_MAX_PARAMS][8];
};
void store__pgp_i64(struct pgp *p, int64_t x);
void store__pgp_text(struct pgp *p, const char *s);            /* NULL = SQL NULL */
void store__pgp_bytea(struct pgp *p, const void *b, size_t n); /* b NULL = SQL NULL */
/* A parameter in text format, typed by the query's cast (e.g. "{1,2}"). */
void store__pgp_literal(struct pgp *p, const char *s);

/* Result getters (binary format). */
int64_t store__pg_i64(const PGresult *r, int row, int col);
int store__pg_null(const PGresult *r, int row, int col);
/* The first column of every row of r as a new int64 array (*ids_out: NULL
 * when there are none; release with ims_free). Clears r in every case. */
enum ims_status store__pg_id_column(PGresult *r, int64_t **ids_out, size_t *n_out, const char *what,
                                    struct ims_error *err);

/* Runs `sql` with params p (NULL = none), binary results. On success *res
 * (clear with PQclear; may be NULL to discard) is set. */
enum ims_status store__pg_q(PGconn *c, const char *sql, const struct pgp *p, PGresult **res,
                            struct ims_error *err, const char *what);
/* Runs a statement without results. */
enum ims_status store__pg_x(PGconn *c, const char *sql, const struct pgp *p, struct ims_error *err,
                            const char *what);
/* Runs `sql` and reads its first row's first column (an integer): *found
 * says whether there was a row, *v gets the value only when there was one.
 * Either pointer may be NULL (v NULL: only whether a row came back, e.g.
 * from UPDATE ... RETURNING). */
enum ims_status store__pg_q1(PGconn *c, const char *sql, const struct pgp *p, int *found,
                             int64_t *v, struct ims_error *err, const char *what);
/* store__pg_q and store__pg_q1 as one statement on its own: a connection is taken from
 * the pool for it (outside any transaction: autocommit) and put back
 * before this returns, whatever happened. The write-retry semantics are
 * store__pg_q's (a PG_RETRY wrapper around the caller still sees a cut). */
enum ims_status store__pg_once(struct store *store, const char *sql, const struct pgp *p,
                               PGresult **res, struct ims_error *err, const char *what);
enum ims_status store__pg_once1(struct store *store, const char *sql, const struct pgp *p,
                                int *found, int64_t *v, struct ims_error *err, const char *what);
/* One statement as a write transaction of its own (store__pg_wbegin, store__pg_q1,
 * store__pg_wend: committed when it succeeded): *found (may be NULL) says whether
 * it returned a row (RETURNING). */
enum ims_status store__pg_wq1(struct store *store, int lock, const char *sql, const struct pgp *p,
                              int *found, struct ims_error *err, const char *what);
/* "{a,b,c}": n integers get(a, i) as a text-format array literal (pass it
 * with store__pgp_literal and a ::bigint[] cast); NULL when out of memory. Free
 * with ims_free. store__pg_int_at reads a plain int64_t array. */
char *store__pg_int_array(size_t n, int64_t (*get)(const void *a, size_t i), const void *a);
int64_t store__pg_int_at(const void *a, size_t i);
/* Drops what is known about prepared statements on c (before closing or
 * resetting it). */
void store__pg_forget(const PGconn *c);
/* Maps a failed result / connection to a status with "catalogue: what: msg". */
enum ims_status store__pg_error(PGconn *c, const PGresult *r, struct ims_error *err,
                                const char *what);

/* A COPY ... FROM STDIN (FORMAT binary) stream built in memory: the bulk
 * path for batches (one round trip instead of one per row). */
struct pgcopy {
    char *p;
    size_t n, cap;
    int oom;
};
void store__pgc_init(struct pgcopy *b); /* writes the header */
void store__pgc_row(struct pgcopy *b, int n_fields);
void store__pgc_i64(struct pgcopy *b, int64_t x);
void store__pgc_bytes(struct pgcopy *b, const void *v, size_t n); /* v NULL = SQL NULL */
void store__pgc_text(struct pgcopy *b, const char *s);            /* NULL = SQL NULL */
/* The same buffer as a binary array parameter: store__pga_begin, then n elements
 * with store__pgc_bytes/store__pgc_text; pass b.p, b.n with store__pgp_raw (array type oid). */
void store__pga_begin(struct pgcopy *b, uint32_t elem_oid, size_t n);
void store__pgp_raw(struct pgp *p, const void *v, size_t n, Oid type);
/* Sends the stream (trailer added) with `copy_sql`; frees the buffer. */
enum ims_status store__pgc_send(PGconn *c, const char *copy_sql, struct pgcopy *b,
                                struct ims_error *err);

/* Pool. */
enum ims_status store__pg_get(struct store *store, PGconn **c, struct ims_error *err);
void store__pg_put(struct store *store, PGconn *c);
/* Write transaction: a pooled connection, BEGIN, and (lock) the advisory
 * write lock. End with store__pg_wend (COMMIT on IMS_OK, else ROLLBACK). */
enum ims_status store__pg_wbegin(struct store *store, PGconn **c, int lock, struct ims_error *err);
enum ims_status store__pg_wend(struct store *store, PGconn *c, enum ims_status s,
                               struct ims_error *err);
/* Read transaction: one snapshot (REPEATABLE READ, READ ONLY). */
enum ims_status store__pg_rbegin(struct store *store, PGconn **c, struct ims_error *err);
void store__pg_rend(struct store *store, PGconn *c);

/* Appends n changes (ids[i], kind) in the caller's write transaction, moves
 * the feed counter and queues a NOTIFY. */
enum ims_status store__pg_log_changes(PGconn *c, const int64_t *ids, size_t n,
                                      enum store_change_kind kind, struct ims_error *err);

/* The operations (store_pg_images.c, store_pg_jobs.c). */
enum ims_status store__pg_insert_many(struct store *, const struct store_new_image *, size_t,
                                      struct store_insert_result *, struct ims_error *);
enum ims_status store__pg_insert_stream(struct store *, size_t, size_t, store_fill_fn,
                                        store_result_fn, void *, struct ims_error *);
enum ims_status store__pg_set_thumbnail(struct store *, int64_t, const void *, size_t,
                                        struct ims_error *);
enum ims_status store__pg_set_embeddings(struct store *, const int64_t *, const float *, size_t,
                                         uint8_t *, struct ims_error *);
enum ims_status store__pg_set_details(struct store *, int64_t, const char *, int64_t,
                                      struct ims_error *);
enum ims_status store__pg_delete_many(struct store *, const int64_t *, size_t, uint8_t *,
                                      struct ims_error *);
enum ims_status store__pg_get_many(struct store *, const int64_t *, size_t, unsigned,
                                   struct store_image_row *, uint8_t *, struct ims_error *);
enum ims_status store__pg_find_by_source(struct store *, const char *, int64_t *,
                                         struct ims_error *);
enum ims_status store__pg_find_by_sha256(struct store *, const uint8_t *, int64_t *,
                                         struct ims_error *);
enum ims_status store__pg_get_thumbnail(struct store *, int64_t, void **, size_t *,
                                        struct ims_error *);
enum ims_status store__pg_count(struct store *, int64_t *, struct ims_error *);
enum ims_status store__pg_filter_ids(struct store *, const char *const params[STORE__FILTER_PARAMS],
                                     int64_t **, size_t *, struct ims_error *);
enum ims_status store__pg_tags_update(struct store *, int64_t, const char *const *,
                                      const char *const *, size_t, const char *const *, size_t,
                                      struct ims_error *);
enum ims_status store__pg_max_id(struct store *, int64_t *, struct ims_error *);
enum ims_status store__pg_list(struct store *, enum store_order, int64_t, int64_t,
                               struct store_image_row **, size_t *, struct ims_error *);
enum ims_status store__pg_scan_embeddings(struct store *, int64_t, size_t, store_scan_fn, void *,
                                          struct ims_error *);
enum ims_status store__pg_restore_many(struct store *, const struct store_restore_row *, size_t,
                                       struct ims_error *);
enum ims_status store__pg_deleted_seq(struct store *, int64_t *, struct ims_error *);
enum ims_status store__pg_deleted_after(struct store *, int64_t, size_t, int64_t **, size_t *,
                                        int64_t *, struct ims_error *);
enum ims_status store__pg_job_create(struct store *, const char *, int64_t, struct ims_error *);
enum ims_status store__pg_job_update(struct store *, const char *, enum store_job_state, int64_t,
                                     int64_t, struct ims_error *);
enum ims_status store__pg_job_add_errors(struct store *, const char *, const char *const *,
                                         const char *const *, const char *const *, size_t,
                                         struct ims_error *);
enum ims_status store__pg_job_get(struct store *, const char *, struct store_job *,
                                  struct ims_error *);
enum ims_status store__pg_job_fail_unfinished(struct store *, int64_t *, struct ims_error *);
enum ims_status store__pg_job_add_items(struct store *, const char *, const char *const *, size_t,
                                        struct ims_error *);
enum ims_status store__pg_job_seal(struct store *, const char *, struct ims_error *);
enum ims_status store__pg_job_claim(struct store *, const char *, size_t, int64_t,
                                    struct store_job_item **, size_t *, struct ims_error *);
enum ims_status store__pg_job_item_outcome(struct store *, int64_t, int *, struct ims_error *);
enum ims_status store__pg_job_release_node(struct store *, const char *, int64_t *,
                                           struct ims_error *);
enum ims_status store__pg_job_renew(struct store *, const char *, const int64_t *, size_t, int64_t,
                                    uint8_t *, struct ims_error *);
enum ims_status store__pg_insert_finish(struct store *, const struct store_new_image *, size_t,
                                        struct store_insert_result *, const char *, const int64_t *,
                                        struct store_item_result *, struct ims_error *);
/* store_job_finish inside the caller's write transaction on c. */
enum ims_status store__pg_job_finish_in(PGconn *c, const char *node_id,
                                        const struct store_item_result *results, size_t n,
                                        uint8_t *accepted, struct ims_error *err);
enum ims_status store__pg_job_finish(struct store *, const char *, const struct store_item_result *,
                                     size_t, uint8_t *, struct ims_error *);
enum ims_status store__pg_job_item_get(struct store *, int64_t, enum store_item_state *, char *,
                                       size_t, int *, int64_t *, struct ims_error *);

#endif
