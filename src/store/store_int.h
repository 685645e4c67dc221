/* SPDX-License-Identifier: MIT */
/*
 * store_int.h: what the store's .c files share and nobody else sees: the
 * struct store, its connections and the helpers that run a write transaction
 * or borrow a read connection.
 *
 *   store.c         open/close, pragmas, schema migrations, meta, model, check
 *   store_images.c  images, embeddings, thumbnails, deletion log, scans
 *   store_jobs.c    ingest jobs and their per-item errors
 *
 * Connection rules (store.h "Threading"):
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

struct store {
    char *data_dir;       /* immutable after open */
    char *db_path;        /* <data_dir>/catalogue.db, immutable */
    char *model_name;     /* the model the store was opened with, immutable */
    uint32_t dim;         /* its embedding size, immutable */
    unsigned flags;       /* store_open flags, immutable */

    pthread_mutex_t wlock; /* guards wdb */
    sqlite3 *wdb;

    pthread_mutex_t plock; /* guards idle, n_idle, n_open */
    pthread_cond_t pcond;  /* signalled when a reader is put back */
    sqlite3 *idle[STORE_READERS_MAX];
    int n_idle;
    int n_open;
};

/* Maps a SQLite result code to a status and writes "what: sqlite message"
 * into err. `db` may be NULL. */
enum ims_status store__db_error(sqlite3 *db, int rc, struct ims_error *err, const char *what);

/* Prepares `sql` on `db`; on failure the statement is NULL and err is set. */
enum ims_status store__prepare(sqlite3 *db, const char *sql, sqlite3_stmt **stmt,
                               struct ims_error *err);
/* Runs SQL without results. */
enum ims_status store__exec(sqlite3 *db, const char *sql, struct ims_error *err);

/* Locks the writer and begins an IMMEDIATE transaction. On success the
 * caller must call store__write_end() exactly once. */
enum ims_status store__write_begin(struct store *st, struct ims_error *err);
/* Commits if st_in is IMS_OK, else rolls back; unlocks the writer. Returns
 * st_in, or the commit's failure (after rolling back). */
enum ims_status store__write_end(struct store *st, enum ims_status st_in, struct ims_error *err);

/* Borrows a read connection; give it back with store__reader_put(). */
enum ims_status store__reader_get(struct store *st, sqlite3 **db, struct ims_error *err);
void store__reader_put(struct store *st, sqlite3 *db);

/* Current unix time in seconds. */
int64_t store__unix_now(void);

#endif
