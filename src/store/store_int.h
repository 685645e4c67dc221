/* SPDX-License-Identifier: MIT */
/*
 * store_int.h: what the store's .c files share and nobody else sees: the
 * struct store, the backend vtable, the SQLite backend's connections and the
 * helpers that run a write transaction or borrow a read connection.
 *
 *   store.c              the public entry points: argument checks shared by
 *                        both backends, then dispatch through store->ops
 *   store_sqlite.c       SQLite: open/close, pragmas, migrations, meta, model, check
 *   store_sqlite_feed.c  SQLite: change feed, job items (claims, leases)
 *   store_images.c       SQLite: images, embeddings, thumbnails, deletion log, scans
 *   store_jobs.c         SQLite: ingest jobs and their per-item errors
 *   store_pg*.c          PostgreSQL (libpq), the same operations
 *
 * SQLite connection rules (store.h "Threading"):
 *   - `wdb` is the only connection that writes. It is used only with
 *     `wlock` held, and only inside store__write_begin()/store__write_end(),
 *     which wrap the work in BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error).
 *   - Readers borrow a read-only connection with store__reader_get() and give
 *     it back with store__reader_put(). Idle connections sit in `idle`; at
 *     most STORE_READERS_MAX are ever open, a caller past that waits on
 *     `pcond`. Under WAL a reader's snapshot is never blocked by the writer.
 */
#ifndef IMGSEARCH_STORE_INT_H
#define IMGSEARCH_STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>

#include "imgsearch/store.h"

#define STORE_READERS_MAX 8
#define STORE_BUSY_TIMEOUT_MS 10000

/* One backend: every operation of store.h that touches the database. The
 * public functions in store.c check arguments that do not depend on the
 * backend and call these; each backend checks the rest. */
#define STORE__FILTER_PARAMS 11
/* Joins a row's tags in query results (no tag holds a control character). */
#define STORE__TAG_SEP '\x1f'

/* store_tags.c: fills row->tags/n_tags from the joined text (NULL/0: none),
 * sorted case-insensitively; -1 when out of memory. */
int store__tags_parse(const char *joined, size_t len, struct store_image_row *row);
/* The filter's tags as a JSON array of distinct keys (*json NULL when none;
 * release with ims_free) and their number. */
enum ims_status store__tags_filter_json(const struct store_filter *f, char **json, size_t *n_keys,
                                        struct ims_error *err);

struct store_ops {
    const char *name; /* "sqlite" | "postgresql" */
    void (*close)(struct store *store);
    enum ims_status (*model_get)(struct store *, char *, size_t, uint32_t *, struct ims_error *);
    enum ims_status (*model_record)(struct store *, struct ims_error *);
    enum ims_status (*schema_version)(struct store *, int *, struct ims_error *);
    enum ims_status (*check)(struct store *, struct ims_error *);
    enum ims_status (*insert_many)(struct store *, const struct store_new_image *, size_t,
                                   struct store_insert_result *, struct ims_error *);
    enum ims_status (*insert_stream)(struct store *, size_t, size_t, store_fill_fn,
                                     store_result_fn, void *, struct ims_error *);
    enum ims_status (*set_thumbnail)(struct store *, int64_t, const void *, size_t,
                                     struct ims_error *);
    enum ims_status (*set_embeddings)(struct store *, const int64_t *, const float *, size_t,
                                      uint8_t *, struct ims_error *);
    enum ims_status (*delete_many)(struct store *, const int64_t *, size_t, uint8_t *,
                                   struct ims_error *);
    enum ims_status (*get_many)(struct store *, const int64_t *, size_t, unsigned,
                                struct store_image_row *, uint8_t *, struct ims_error *);
    enum ims_status (*find_by_source)(struct store *, const char *, int64_t *,
                                      struct ims_error *);
    enum ims_status (*find_by_sha256)(struct store *, const uint8_t *, int64_t *,
                                      struct ims_error *);
    enum ims_status (*get_thumbnail)(struct store *, int64_t, void **, size_t *,
                                     struct ims_error *);
    enum ims_status (*count)(struct store *, int64_t *, struct ims_error *);
    /* params: added from/to, taken from/to, min width/height, ",fmt,fmt,",
     * orientation "0".."3", source prefix, tag keys as a JSON array and their
     * number; as text, NULL = unrestricted */
    enum ims_status (*filter_ids)(struct store *, const char *const params[STORE__FILTER_PARAMS],
                                  int64_t **, size_t *, struct ims_error *);
    /* tags normalised by store_tags_update (tags[i] and keys[i] of one tag,
     * no two alike): removes rkeys, then adds, in one transaction */
    enum ims_status (*tags_update)(struct store *, int64_t, const char *const *tags,
                                   const char *const *keys, size_t n_add,
                                   const char *const *rkeys, size_t n_remove,
                                   struct ims_error *);
    enum ims_status (*max_id)(struct store *, int64_t *, struct ims_error *);
    enum ims_status (*list)(struct store *, enum store_order, int64_t, int64_t,
                            struct store_image_row **, size_t *, struct ims_error *);
    enum ims_status (*scan_embeddings)(struct store *, int64_t, size_t, store_scan_fn, void *,
                                       struct ims_error *);
    enum ims_status (*restore_many)(struct store *, const struct store_restore_row *, size_t,
                                    struct ims_error *);
    enum ims_status (*deleted_seq)(struct store *, int64_t *, struct ims_error *);
    enum ims_status (*deleted_after)(struct store *, int64_t, size_t, int64_t **, size_t *,
                                     int64_t *, struct ims_error *);
    enum ims_status (*change_seq)(struct store *, int64_t *, struct ims_error *);
    enum ims_status (*changes_after)(struct store *, int64_t, size_t, struct store_change *,
                                     size_t *, struct ims_error *);
    enum ims_status (*change_floor)(struct store *, int64_t *, struct ims_error *);
    enum ims_status (*change_trim)(struct store *, int64_t, struct ims_error *);
    /* optional: insert_many + job_finish in one transaction; the last
     * array (n entries) is scratch for the item results */
    enum ims_status (*insert_finish)(struct store *, const struct store_new_image *, size_t,
                                     struct store_insert_result *, const char *, const int64_t *,
                                     struct store_item_result *, struct ims_error *);
    /* schema v5: ids whose embedding_versions.seq > the seq, ascending */
    enum ims_status (*embeddings_changed_after)(struct store *, int64_t, int64_t **, size_t *,
                                                struct ims_error *);
    enum ims_status (*wait_change)(struct store *, int64_t, int, int64_t *, struct ims_error *);
    enum ims_status (*job_create)(struct store *, const char *, int64_t, struct ims_error *);
    enum ims_status (*job_update)(struct store *, const char *, enum store_job_state, int64_t,
                                  int64_t, struct ims_error *);
    enum ims_status (*job_add_errors)(struct store *, const char *, const char *const *,
                                      const char *const *, const char *const *, size_t,
                                      struct ims_error *);
    enum ims_status (*job_get)(struct store *, const char *, struct store_job *,
                               struct ims_error *);
    enum ims_status (*job_fail_unfinished)(struct store *, int64_t *, struct ims_error *);
    enum ims_status (*job_add_items)(struct store *, const char *, const char *const *, size_t,
                                     struct ims_error *);
    enum ims_status (*job_seal)(struct store *, const char *, struct ims_error *);
    enum ims_status (*job_claim)(struct store *, const char *, size_t, int64_t,
                                 struct store_job_item **, size_t *, struct ims_error *);
    enum ims_status (*job_renew)(struct store *, const char *, const int64_t *, size_t, int64_t,
                                 uint8_t *, struct ims_error *);
    enum ims_status (*job_release_node)(struct store *, const char *, int64_t *,
                                        struct ims_error *);
    enum ims_status (*job_item_outcome)(struct store *, int64_t, int *, struct ims_error *);
    enum ims_status (*job_finish)(struct store *, const char *, const struct store_item_result *,
                                  size_t, uint8_t *, struct ims_error *);
    enum ims_status (*job_item_get)(struct store *, int64_t, enum store_item_state *, char *,
                                    size_t, int *, int64_t *, struct ims_error *);
    /* folder sync (store_files.c); `prefix` is the folder with its "/" */
    enum ims_status (*list_under)(struct store *, const char *, struct store_file_row **,
                                  size_t *, struct ims_error *);
    enum ims_status (*update_files)(struct store *, const struct store_file_update *, size_t,
                                    uint8_t *, struct ims_error *);
    enum ims_status (*replace_content)(struct store *, int64_t, int64_t, int64_t, int64_t,
                                       struct ims_error *);
    /* store_set_details (arguments checked): caption, added */
    enum ims_status (*set_details)(struct store *, int64_t, const char *, int64_t,
                                   struct ims_error *);
};

struct store_pg; /* store_pg_int.h */

/* The job item results of an insert (store_insert_finish): for every
 * item_ids[i] > 0, ADDED (inserted, completed) or DUPLICATE with the row's
 * id, into out; returns how many. */
size_t store__item_results(const struct store_insert_result *res, const int64_t *item_ids,
                           size_t n, struct store_item_result *out);

struct store {
    const struct store_ops *ops; /* immutable after open */
    char *data_dir;       /* SQLite: the folder; NULL for PostgreSQL. Immutable */
    char *db_path;        /* <data_dir>/catalogue.db, or the masked URL. Immutable */
    char *model_name;     /* the model the store was opened with, immutable */
    uint32_t dim;         /* its embedding size, immutable */
    unsigned flags;       /* store_open flags, immutable */

    /* SQLite */
    pthread_mutex_t wlock; /* guards wdb */
    sqlite3 *wdb;

    pthread_mutex_t plock; /* guards idle, n_idle, n_open */
    pthread_cond_t pcond;  /* signalled when a reader is put back */
    sqlite3 *idle[STORE_READERS_MAX];
    int n_idle;
    int n_open;

    /* PostgreSQL */
    struct store_pg *pg;

    /* store_row_cache_set (store_rowcache.c); NULL: no cache */
    struct store__rowcache *rc;
};

/* ---- the row cache (store_rowcache.c) ------------------------------------- */
struct store__rowcache;
struct store__rowcache *store__rowcache_new(size_t max_bytes);
void store__rowcache_free(struct store__rowcache *rc);
/* Evicts ids[0..n) (ids NULL: everything); accepts a NULL cache. */
void store__rowcache_evict(struct store__rowcache *rc, const int64_t *ids, size_t n);
/* store_get_many without embeddings, through the cache. */
enum ims_status store__rowcache_get_many(struct store *store, struct store__rowcache *rc,
                                         const int64_t *ids, size_t n, struct store_image_row *rows,
                                         uint8_t *found, struct ims_error *err);
void store__rowcache_stats(struct store__rowcache *rc, struct store_row_cache_stats *out);

extern const struct store_ops store__sqlite_ops;

/* ---- shared by both backends (store.c) ------------------------------------ */

/* Checks one row of an insert batch against the store's dim and the limits;
 * the message names row index i. */
enum ims_status store__validate_row(const struct store *store, const struct store_new_image *r,
                                    size_t i, struct ims_error *err);
/* 1 if the dim floats are finite; else 0 and *bad = the first bad index. */
int store__vec_finite(const float *v, uint32_t dim, uint32_t *bad);
/* Job id / node id checks (printable ASCII, length). */
enum ims_status store__check_job_id(const char *id, struct ims_error *err);
enum ims_status store__check_node_id(const char *id, struct ims_error *err);
/* Current unix time in seconds, and in milliseconds. */
int64_t store__unix_now(void);
int64_t store__unix_now_ms(void);
/* Opens a PostgreSQL catalogue (store_pg.c). */
enum ims_status store__pg_open(const char *url, const struct store_model_info *model,
                               unsigned flags, struct store **out, struct ims_error *err);

/* ---- SQLite helpers ----------------------------------------------------------- */

/* Opens the SQLite catalogue of data_dir (store_sqlite.c). */
enum ims_status store__sq_open(const char *data_dir, const struct store_model_info *model,
                               unsigned flags, struct store **out, struct ims_error *err);

/* Maps a SQLite result code to a status and writes "what: sqlite message"
 * into err. `db` may be NULL. */
enum ims_status store__db_error(sqlite3 *db, int rc, struct ims_error *err, const char *what);

/* Prepares `sql` on `db`; on failure the statement is NULL and err is set. */
enum ims_status store__prepare(sqlite3 *db, const char *sql, sqlite3_stmt **stmt,
                               struct ims_error *err);
/* Steps q to its end and collects column `col` of every row into a new
 * array (*ids: NULL when there are none; release with ims_free), and when
 * last0 is not NULL, column 0 of the last row into *last0 (untouched when
 * there are none). Fails with "<what>: out of memory" or the database's
 * error as "<read_what>: ...", returning nothing. q stays the caller's. */
enum ims_status store__sq_id_column(sqlite3 *db, sqlite3_stmt *q, int col, int64_t **ids, size_t *n,
                                    int64_t *last0, const char *what, const char *read_what,
                                    struct ims_error *err);
/* One-integer read query on a reader borrowed for it: `sql` with ?1 bound
 * to text (len < 0) or a blob (len >= 0), or nothing (arg NULL); *found
 * says whether a row came back (*v is set only then). */
enum ims_status store__sq_read_i64(struct store *store, const char *sql, const void *arg, int len,
                                   int64_t *v, int *found, struct ims_error *err);
/* Runs SQL without results. */
enum ims_status store__exec(sqlite3 *db, const char *sql, struct ims_error *err);

/* Locks the writer and begins an IMMEDIATE transaction. On success the
 * caller must call store__write_end() exactly once. */
enum ims_status store__write_begin(struct store *store, struct ims_error *err);
/* Commits if st_in is IMS_OK, else rolls back; unlocks the writer. Returns
 * st_in, or the commit's failure (after rolling back). */
enum ims_status store__write_end(struct store *store, enum ims_status st_in, struct ims_error *err);

/* Borrows a read connection; give it back with store__reader_put(). */
enum ims_status store__reader_get(struct store *store, sqlite3 **db, struct ims_error *err);
void store__reader_put(struct store *store, sqlite3 *db);
/* Ends the read transaction the caller began on db (COMMIT; a failure is
 * logged, and store__reader_put then rolls back) and gives the reader back. */
void store__reader_end(struct store *store, sqlite3 *db);

/* Appends one change to the feed, inside the caller's write transaction. */
enum ims_status store__sq_log_change(sqlite3 *db, int64_t id, enum store_change_kind kind,
                                     struct ims_error *err);
/* meta table access (store_sqlite.c). */
enum ims_status store__sq_meta_get(sqlite3 *db, const char *key, char **value,
                                   struct ims_error *err);
enum ims_status store__sq_meta_set(sqlite3 *db, const char *key, const char *value,
                                   struct ims_error *err);

/* The SQLite backend's operations (named like the public functions). */
void store__sq_close(struct store *store);
enum ims_status store__sq_model_get(struct store *, char *, size_t, uint32_t *, struct ims_error *);
enum ims_status store__sq_model_record(struct store *, struct ims_error *);
enum ims_status store__sq_schema_version(struct store *, int *, struct ims_error *);
enum ims_status store__sq_check(struct store *, struct ims_error *);
enum ims_status store__sq_insert_many(struct store *, const struct store_new_image *, size_t,
                                      struct store_insert_result *, struct ims_error *);
enum ims_status store__sq_insert_stream(struct store *, size_t, size_t, store_fill_fn,
                                        store_result_fn, void *, struct ims_error *);
enum ims_status store__sq_set_thumbnail(struct store *, int64_t, const void *, size_t,
                                        struct ims_error *);
enum ims_status store__sq_set_embeddings(struct store *, const int64_t *, const float *, size_t,
                                         uint8_t *, struct ims_error *);
enum ims_status store__sq_delete_many(struct store *, const int64_t *, size_t, uint8_t *,
                                      struct ims_error *);
enum ims_status store__sq_get_many(struct store *, const int64_t *, size_t, unsigned,
                                   struct store_image_row *, uint8_t *, struct ims_error *);
enum ims_status store__sq_find_by_source(struct store *, const char *, int64_t *,
                                         struct ims_error *);
enum ims_status store__sq_find_by_sha256(struct store *, const uint8_t *, int64_t *,
                                         struct ims_error *);
enum ims_status store__sq_get_thumbnail(struct store *, int64_t, void **, size_t *,
                                        struct ims_error *);
enum ims_status store__sq_count(struct store *, int64_t *, struct ims_error *);
enum ims_status store__sq_filter_ids(struct store *, const char *const params[STORE__FILTER_PARAMS],
                                     int64_t **, size_t *, struct ims_error *);
enum ims_status store__sq_tags_update(struct store *, int64_t, const char *const *,
                                      const char *const *, size_t, const char *const *, size_t,
                                      struct ims_error *);
enum ims_status store__sq_max_id(struct store *, int64_t *, struct ims_error *);
enum ims_status store__sq_list(struct store *, enum store_order, int64_t, int64_t,
                               struct store_image_row **, size_t *, struct ims_error *);
enum ims_status store__sq_scan_embeddings(struct store *, int64_t, size_t, store_scan_fn, void *,
                                          struct ims_error *);
enum ims_status store__sq_restore_many(struct store *, const struct store_restore_row *, size_t,
                                       struct ims_error *);
enum ims_status store__sq_deleted_seq(struct store *, int64_t *, struct ims_error *);
enum ims_status store__sq_deleted_after(struct store *, int64_t, size_t, int64_t **, size_t *,
                                        int64_t *, struct ims_error *);
enum ims_status store__sq_change_seq(struct store *, int64_t *, struct ims_error *);
enum ims_status store__sq_changes_after(struct store *, int64_t, size_t, struct store_change *,
                                        size_t *, struct ims_error *);
enum ims_status store__sq_change_floor(struct store *, int64_t *, struct ims_error *);
enum ims_status store__sq_change_trim(struct store *, int64_t, struct ims_error *);
enum ims_status store__sq_embeddings_changed_after(struct store *, int64_t, int64_t **, size_t *,
                                                   struct ims_error *);
enum ims_status store__sq_wait_change(struct store *, int64_t, int, int64_t *, struct ims_error *);
enum ims_status store__sq_job_create(struct store *, const char *, int64_t, struct ims_error *);
enum ims_status store__sq_job_update(struct store *, const char *, enum store_job_state, int64_t,
                                     int64_t, struct ims_error *);
enum ims_status store__sq_job_add_errors(struct store *, const char *, const char *const *,
                                         const char *const *, const char *const *, size_t,
                                         struct ims_error *);
enum ims_status store__sq_job_get(struct store *, const char *, struct store_job *,
                                  struct ims_error *);
enum ims_status store__sq_job_fail_unfinished(struct store *, int64_t *, struct ims_error *);
enum ims_status store__sq_job_add_items(struct store *, const char *, const char *const *, size_t,
                                        struct ims_error *);
enum ims_status store__sq_job_seal(struct store *, const char *, struct ims_error *);
enum ims_status store__sq_job_claim(struct store *, const char *, size_t, int64_t,
                                    struct store_job_item **, size_t *, struct ims_error *);
enum ims_status store__sq_job_renew(struct store *, const char *, const int64_t *, size_t, int64_t,
                                    uint8_t *, struct ims_error *);
enum ims_status store__sq_job_release_node(struct store *, const char *, int64_t *,
                                           struct ims_error *);
enum ims_status store__sq_job_item_outcome(struct store *, int64_t, int *, struct ims_error *);
enum ims_status store__sq_job_finish(struct store *, const char *, const struct store_item_result *,
                                     size_t, uint8_t *, struct ims_error *);
enum ims_status store__sq_job_item_get(struct store *, int64_t, enum store_item_state *, char *,
                                       size_t, int *, int64_t *, struct ims_error *);

/* folder sync, both backends (store_files.c) */
enum ims_status store__sq_list_under(struct store *, const char *, struct store_file_row **,
                                     size_t *, struct ims_error *);
enum ims_status store__sq_update_files(struct store *, const struct store_file_update *, size_t,
                                       uint8_t *, struct ims_error *);
enum ims_status store__pg_list_under(struct store *, const char *, struct store_file_row **,
                                     size_t *, struct ims_error *);
enum ims_status store__pg_update_files(struct store *, const struct store_file_update *, size_t,
                                       uint8_t *, struct ims_error *);
enum ims_status store__sq_set_details(struct store *, int64_t, const char *, int64_t,
                                      struct ims_error *);
enum ims_status store__sq_replace_content(struct store *, int64_t, int64_t, int64_t, int64_t,
                                          struct ims_error *);
enum ims_status store__pg_replace_content(struct store *, int64_t, int64_t, int64_t, int64_t,
                                          struct ims_error *);

#endif
