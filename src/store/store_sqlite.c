/* SPDX-License-Identifier: MIT */
/*
 * store_sqlite.c: the SQLite backend's opening of the catalogue (catalogue.db
 * in the data folder), its connections, the schema and its migrations, the model record, and the
 * consistency check.
 *
 * Opening goes in an order that never writes to a file we do not own:
 *   1. a non-empty file must start with SQLite's 16-byte magic, else
 *      IMS_ERR_CORRUPT and the file is left as it is; a missing, empty or
 *      unreadable file next to other data (index.snap, a WAL) is refused
 *      too, never taken for a new catalogue (the next snapshot would then
 *      overwrite the last copy of the vectors): `imgsearch repair` rebuilds
 *      the rows from the snapshot;
 *   2. reading sqlite_master must work (SQLite validates the header) and a
 *      database with tables must have our `meta` table;
 *   3. only then WAL, synchronous, foreign keys, and the migrations.
 *
 * Migrations: meta.schema_version holds the version (0 = fresh file).
 * `migrations[]` lists one function per step; open runs every step above the
 * file's version inside one IMMEDIATE transaction and records the new
 * version, so a crash mid-migration leaves the old schema intact. Schema v2
 * is one more function and one more table entry. A file newer than
 * STORE_SCHEMA_VERSION is refused (IMS_ERR_UNSUPPORTED), never touched.
 *
 * Durability: WAL with synchronous=FULL: each commit fsyncs the WAL, so an
 * acknowledged write survives power loss. Writes come in big transactions
 * (a whole ingest batch), so the one fsync per commit is cheap next to the
 * data written (bench/bench_store.c measures it). STORE_OPEN_SYNC_NORMAL
 * drops to crash-safe-only for throwaway folders.
 *
 * page_size is 16 KiB on fresh files: an embedding row of 512 floats is
 * ~2 KiB, and with 4 KiB pages only one fits per page (45% waste); 16 KiB
 * pages hold seven, which is what makes the index-rebuild scan fast.
 */

#include "store_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers shared by the module ----------------------------------------- */

enum ims_status store__db_error(sqlite3 *db, int rc, struct ims_error *err, const char *what)
{
    enum ims_status st;
    switch (rc & 0xff) {
    case SQLITE_NOMEM:
        st = IMS_ERR_NOMEM;
        break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_FORMAT:
        st = IMS_ERR_CORRUPT;
        break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        st = IMS_ERR_BUSY;
        break;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_PROTOCOL:
        st = IMS_ERR_IO;
        break;
    case SQLITE_CONSTRAINT:
    case SQLITE_TOOBIG:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
        st = IMS_ERR_INVALID;
        break;
    default:
        st = IMS_ERR_INTERNAL;
        break;
    }
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    return ims_error_set(err, st, "catalogue: %s: %s", what, msg);
}

enum ims_status store__prepare(sqlite3 *db, const char *sql, sqlite3_stmt **stmt,
                               struct ims_error *err)
{
    *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, stmt, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(*stmt);
        *stmt = NULL;
        return store__db_error(db, rc, err, "prepare");
    }
    return IMS_OK;
}

enum ims_status store__sq_id_column(sqlite3 *db, sqlite3_stmt *q, int col, int64_t **ids_out,
                                    size_t *n_out, int64_t *last0, const char *what,
                                    const char *read_what, struct ims_error *err)
{
    int64_t *ids = NULL;
    size_t n = 0, cap = 0;
    enum ims_status s = IMS_OK;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            int64_t *p = ims_realloc(ids, nc * sizeof(*p));
            if (!p) {
                s = ims_error_set(err, IMS_ERR_NOMEM, "%s: out of memory", what);
                break;
            }
            ids = p;
            cap = nc;
        }
        ids[n++] = sqlite3_column_int64(q, col);
        if (last0)
            *last0 = sqlite3_column_int64(q, 0);
    }
    if (s == IMS_OK && rc != SQLITE_DONE)
        s = store__db_error(db, rc, err, read_what);
    if (s != IMS_OK) {
        ims_free(ids);
        return s;
    }
    *ids_out = ids;
    *n_out = n;
    return IMS_OK;
}

enum ims_status store__exec(sqlite3 *db, const char *sql, struct ims_error *err)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return store__db_error(db, rc, err, "exec");
    return IMS_OK;
}

enum ims_status store__write_begin(struct store *store, struct ims_error *err)
{
    pthread_mutex_lock(&store->wlock);
    enum ims_status s = store__exec(store->wdb, "BEGIN IMMEDIATE", err);
    if (s != IMS_OK)
        pthread_mutex_unlock(&store->wlock);
    return s;
}

enum ims_status store__write_end(struct store *store, enum ims_status st_in, struct ims_error *err)
{
    enum ims_status s = st_in;
    if (s == IMS_OK) {
        int rc = sqlite3_exec(store->wdb, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            s = store__db_error(store->wdb, rc, err, "commit");
    }
    if (s != IMS_OK && !sqlite3_get_autocommit(store->wdb)) {
        int rc = sqlite3_exec(store->wdb, "ROLLBACK", NULL, NULL, NULL);
        /* the caller gets its own error; this one would otherwise be lost,
         * and the next write would fail to begin without saying why */
        if (rc != SQLITE_OK)
            ims_log(IMS_LOG_ERROR, "catalogue: rolling back a failed write: %s",
                    sqlite3_errmsg(store->wdb));
    }
    pthread_mutex_unlock(&store->wlock);
    return s;
}

static enum ims_status conn_setup(sqlite3 *db, struct ims_error *err)
{
    sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(db, 1);
    return IMS_OK;
}

enum ims_status store__reader_get(struct store *store, sqlite3 **out, struct ims_error *err)
{
    sqlite3 *db = NULL;
    pthread_mutex_lock(&store->plock);
    while (store->n_idle == 0 && store->n_open >= STORE_READERS_MAX)
        pthread_cond_wait(&store->pcond, &store->plock);
    if (store->n_idle > 0) {
        db = store->idle[--store->n_idle];
        pthread_mutex_unlock(&store->plock);
        *out = db;
        return IMS_OK;
    }
    store->n_open++; /* reserve the slot, open outside the lock */
    pthread_mutex_unlock(&store->plock);

    int rc = sqlite3_open_v2(store->db_path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    enum ims_status s = IMS_OK;
    if (rc != SQLITE_OK)
        s = store__db_error(db, rc, err, "open reader");
    else
        s = conn_setup(db, err);
    if (s != IMS_OK) {
        sqlite3_close(db);
        pthread_mutex_lock(&store->plock);
        store->n_open--;
        pthread_cond_signal(&store->pcond);
        pthread_mutex_unlock(&store->plock);
        return s;
    }
    *out = db;
    return IMS_OK;
}

void store__reader_end(struct store *store, sqlite3 *db)
{
    int rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) /* nothing was written: the read itself stands */
        ims_log(IMS_LOG_DEBUG, "catalogue: ending a read transaction: %s", sqlite3_errmsg(db));
    store__reader_put(store, db);
}

void store__reader_put(struct store *store, sqlite3 *db)
{
    if (!db)
        return;
    /* A reader handed back inside a transaction (a failed COMMIT, a bug
     * path) would pin an old snapshot forever; end it, and when even that
     * fails, close the reader rather than pool it. */
    int keep = 1;
    if (!sqlite3_get_autocommit(db)) {
        int rc = sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        if (rc != SQLITE_OK || !sqlite3_get_autocommit(db)) {
            ims_log(IMS_LOG_WARN, "catalogue: a reader could not end its transaction (%s): closed",
                    sqlite3_errmsg(db));
            keep = 0;
            sqlite3_close(db);
        }
    }
    pthread_mutex_lock(&store->plock);
    if (!keep) {
        store->n_open--;
        pthread_cond_signal(&store->pcond);
        pthread_mutex_unlock(&store->plock);
        return;
    }
    IMS_ASSERT(store->n_idle < STORE_READERS_MAX);
    store->idle[store->n_idle++] = db;
    pthread_cond_signal(&store->pcond);
    pthread_mutex_unlock(&store->plock);
}

/* ---- meta table ---------------------------------------------------------- */

/* Reads meta[key] into a fresh string (*value NULL if absent). */
enum ims_status store__sq_meta_get(sqlite3 *db, const char *key, char **value,
                                   struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    *value = NULL;
    enum ims_status s = store__prepare(db, "SELECT value FROM meta WHERE key = ?1", &q, err);
    if (s != IMS_OK)
        goto out;
    sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(q, 0);
        *value = ims_strdup(v ? v : "");
        if (!*value)
            s = ims_error_set(err, IMS_ERR_NOMEM, "catalogue: out of memory");
    } else if (rc != SQLITE_DONE) {
        s = store__db_error(db, rc, err, "read meta");
    }
out:
    sqlite3_finalize(q);
    return s;
}

enum ims_status store__sq_meta_set(sqlite3 *db, const char *key, const char *value,
                                   struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__prepare(
        db, "INSERT INTO meta(key, value) VALUES(?1, ?2) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        &q, err);
    if (s != IMS_OK)
        return s;
    sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, value, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_DONE)
        s = store__db_error(db, rc, err, "write meta");
    sqlite3_finalize(q);
    return s;
}

/* Parses a non-negative decimal meta value; -1 if it is not one. */
static long long parse_count(const char *v)
{
    if (!v || !*v)
        return -1;
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || x < 0)
        return -1;
    return x;
}

/* ---- schema migrations ------------------------------------------------------ */

/* v1: the first schema. See docs/internals/store.md for every column. */
static enum ims_status migrate_to_v1(sqlite3 *db, struct ims_error *err)
{
    static const char sql[] =
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE images("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  source TEXT NOT NULL UNIQUE,"
        "  sha256 BLOB CHECK (sha256 IS NULL OR length(sha256) = 32),"
        "  format TEXT,"
        "  width INTEGER NOT NULL DEFAULT 0,"
        "  height INTEGER NOT NULL DEFAULT 0,"
        "  bytes INTEGER NOT NULL DEFAULT 0,"
        "  added INTEGER NOT NULL,"
        "  caption TEXT,"
        "  metadata TEXT,"
        "  model TEXT NOT NULL);"
        "CREATE INDEX images_sha256 ON images(sha256) WHERE sha256 IS NOT NULL;"
        "CREATE INDEX images_added ON images(added, id);"
        "CREATE TABLE embeddings("
        "  image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,"
        "  vec BLOB NOT NULL);"
        "CREATE TABLE thumbnails("
        "  image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,"
        "  jpeg BLOB NOT NULL);"
        "CREATE TABLE deleted("
        "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  image_id INTEGER NOT NULL,"
        "  time INTEGER NOT NULL);"
        "CREATE TABLE jobs("
        "  id TEXT PRIMARY KEY,"
        "  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),"
        "  total INTEGER NOT NULL,"
        "  done INTEGER NOT NULL DEFAULT 0,"
        "  failed INTEGER NOT NULL DEFAULT 0,"
        "  n_errors INTEGER NOT NULL DEFAULT 0,"
        "  created INTEGER NOT NULL,"
        "  updated INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE job_errors("
        "  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
        "  seq INTEGER NOT NULL,"
        "  url TEXT NOT NULL,"
        "  error TEXT NOT NULL,"
        "  PRIMARY KEY (job_id, seq)) WITHOUT ROWID;";
    return store__exec(db, sql, err);
}

/* v2: the change feed every index replica follows, and job items that any
 * node may claim (store.h "change feed", "shared ingest"). Existing rows
 * enter the feed as inserts in id order, so a replica at seq 0 catches up
 * from the feed alone; the floor stays 0. */
static enum ims_status migrate_to_v2(sqlite3 *db, struct ims_error *err)
{
    static const char sql[] =
        "CREATE TABLE changes("
        "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  image_id INTEGER NOT NULL,"
        "  kind INTEGER NOT NULL CHECK (kind IN (1, 2, 3)));"
        "INSERT INTO changes(image_id, kind) SELECT id, 1 FROM images ORDER BY id;"
        "INSERT INTO meta(key, value) VALUES('change_floor', '0');"
        "ALTER TABLE jobs ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE jobs ADD COLUMN n_items INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE job_errors ADD COLUMN code TEXT NOT NULL DEFAULT '';"
        "CREATE TABLE job_items("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
        "  idx INTEGER NOT NULL,"
        "  source TEXT NOT NULL,"
        "  state INTEGER NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 3),"
        "  claimed_by TEXT,"
        "  lease_until INTEGER NOT NULL DEFAULT 0,"
        "  attempts INTEGER NOT NULL DEFAULT 0,"
        "  image_id INTEGER,"
        "  outcome INTEGER,"
        "  code TEXT,"
        "  error TEXT,"
        "  UNIQUE (job_id, idx));"
        "CREATE INDEX job_items_open ON job_items(state, id) WHERE state < 2;";
    return store__exec(db, sql, err);
}

/* v3: each row may record the size and mtime (ns) of its file when it was
 * last synced (add --sync, serve --watch): a later sync compares them with
 * stat() and reads only the files that changed. NULL: never synced. */
static enum ims_status migrate_to_v3(sqlite3 *db, struct ims_error *err)
{
    static const char sql[] = "ALTER TABLE images ADD COLUMN file_size INTEGER;"
                              "ALTER TABLE images ADD COLUMN file_mtime_ns INTEGER;";
    return store__exec(db, sql, err);
}

/* v4 (issue 10): the EXIF date taken as a column, and image tags. `taken`
 * is generated from the metadata's "taken" (a JSON number, unix seconds), so
 * existing rows have it at once and it can never disagree with the
 * metadata; indexed for date filters. A tag keeps its spelling in `tag` and
 * is compared by `tag_key` (ASCII-lower-cased, store_tag_normalize). */
static enum ims_status migrate_to_v4(sqlite3 *db, struct ims_error *err)
{
    static const char sql[] =
        "ALTER TABLE images ADD COLUMN taken INTEGER GENERATED ALWAYS AS ("
        "  CASE WHEN json_valid(metadata) AND json_type(metadata, '$.taken') IN ('integer', 'real')"
        "  THEN CAST(json_extract(metadata, '$.taken') AS INTEGER) END) VIRTUAL;"
        "CREATE INDEX images_taken ON images(taken);"
        "CREATE TABLE image_tags("
        "  image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
        "  tag TEXT NOT NULL CHECK (length(CAST(tag AS BLOB)) BETWEEN 1 AND 64),"
        "  tag_key TEXT NOT NULL CHECK (length(CAST(tag_key AS BLOB)) BETWEEN 1 AND 64),"
        "  PRIMARY KEY (image_id, tag_key));"
        "CREATE INDEX image_tags_key ON image_tags(tag_key, image_id);";
    return store__exec(db, sql, err);
}

/* v5 (issue 9): a change kind for rows that changed without their
 * embedding (ROW: row caches evict, indexes skip), and each replaced
 * embedding's version (the seq of its UPDATE change), kept when the feed is
 * trimmed so a replica rebuilt from below the floor re-adds it. SQLite
 * cannot widen a CHECK: `changes` is rebuilt, its AUTOINCREMENT counter
 * (the feed's newest seq, which outlives trimmed rows) carried over.
 * Versions are back-filled from the UPDATE changes still in the feed; when
 * the feed was trimmed, what it lost is unknown, so every row gets the
 * floor as its version (a replica below it re-adds them all, once). */
static enum ims_status migrate_to_v5(sqlite3 *db, struct ims_error *err)
{
    static const char sql[] =
        "CREATE TEMP TABLE v5_seq AS SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE "
        "  name = 'changes'), 0) AS seq;"
        "CREATE TABLE changes_v5("
        "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  image_id INTEGER NOT NULL,"
        "  kind INTEGER NOT NULL CHECK (kind IN (1, 2, 3, 4)));"
        "INSERT INTO changes_v5(seq, image_id, kind) SELECT seq, image_id, kind FROM changes;"
        "DROP TABLE changes;"
        "ALTER TABLE changes_v5 RENAME TO changes;"
        "DELETE FROM sqlite_sequence WHERE name = 'changes';"
        "INSERT INTO sqlite_sequence(name, seq) SELECT 'changes', seq FROM temp.v5_seq;"
        "DROP TABLE temp.v5_seq;"
        "CREATE TABLE embedding_versions("
        "  image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,"
        "  seq INTEGER NOT NULL);"
        "INSERT INTO embedding_versions(image_id, seq) SELECT id, f.floor FROM images, "
        "  (SELECT CAST(value AS INTEGER) AS floor FROM meta WHERE key = 'change_floor') f "
        "  WHERE f.floor > 0;"
        "INSERT INTO embedding_versions(image_id, seq) SELECT c.image_id, max(c.seq) FROM changes c"
        "  JOIN images i ON i.id = c.image_id WHERE c.kind = 3 GROUP BY c.image_id"
        "  ON CONFLICT(image_id) DO UPDATE SET seq = excluded.seq;";
    return store__exec(db, sql, err);
}

struct migration {
    int to_version;
    enum ims_status (*fn)(sqlite3 *db, struct ims_error *err);
};

static const struct migration migrations[] = {
    {1, migrate_to_v1},
    {2, migrate_to_v2},
    {3, migrate_to_v3},
    {4, migrate_to_v4},
    {5, migrate_to_v5},
    /* {6, migrate_to_v6}: add one step here and bump STORE_SCHEMA_VERSION */
};

_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == STORE_SCHEMA_VERSION,
               "one migration step per schema version");

/* Inside the open transaction: brings the file to STORE_SCHEMA_VERSION and,
 * on a fresh file, records the model. */
static enum ims_status migrate(struct store *store, int has_meta, struct ims_error *err)
{
    sqlite3 *db = store->wdb;
    char *v = NULL;
    long long version = 0;
    enum ims_status s = IMS_OK;
    if (has_meta) {
        s = store__sq_meta_get(db, "schema_version", &v, err);
        if (s != IMS_OK)
            goto out;
        version = parse_count(v);
        if (version < 1) {
            s = ims_error_set(err, IMS_ERR_CORRUPT,
                              "catalogue %s: meta.schema_version is missing or not a number",
                              store->db_path);
            goto out;
        }
    }
    if (version > STORE_SCHEMA_VERSION) {
        s = ims_error_set(err, IMS_ERR_UNSUPPORTED,
                          "catalogue %s has schema version %lld, newer than the %d this "
                          "imgsearch supports; upgrade imgsearch to open it",
                          store->db_path, version, STORE_SCHEMA_VERSION);
        goto out;
    }
    int fresh = version == 0;
    for (size_t i = 0; i < IMS_ARRAY_LEN(migrations); i++) {
        if (migrations[i].to_version <= version)
            continue;
        s = migrations[i].fn(db, err);
        if (s != IMS_OK) {
            ims_error_prefix(err, "migrating the catalogue to schema v%d",
                             migrations[i].to_version);
            goto out;
        }
        char buf[32];
        snprintf(buf, sizeof(buf), "%d", migrations[i].to_version);
        s = store__sq_meta_set(db, "schema_version", buf, err);
        if (s != IMS_OK)
            goto out;
        if (version > 0)
            ims_log(IMS_LOG_INFO, "catalogue migrated to schema v%d", migrations[i].to_version);
    }
    if (fresh) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%u", store->dim);
        s = store__sq_meta_set(db, "model_name", store->model_name, err);
        if (s == IMS_OK)
            s = store__sq_meta_set(db, "embedding_dim", buf, err);
        snprintf(buf, sizeof(buf), "%lld", (long long)store__unix_now());
        if (s == IMS_OK)
            s = store__sq_meta_set(db, "created", buf, err);
    }
out:
    ims_free(v);
    return s;
}

/* Compares the recorded model with the one asked for. */
static enum ims_status check_model(struct store *store, struct ims_error *err)
{
    char *name = NULL, *dim_s = NULL;
    enum ims_status s = store__sq_meta_get(store->wdb, "model_name", &name, err);
    if (s == IMS_OK)
        s = store__sq_meta_get(store->wdb, "embedding_dim", &dim_s, err);
    if (s != IMS_OK)
        goto out;
    long long dim = parse_count(dim_s);
    if (!name || dim < 1) {
        s = ims_error_set(err, IMS_ERR_CORRUPT,
                          "catalogue %s: the model record (meta.model_name, "
                          "meta.embedding_dim) is missing or damaged",
                          store->db_path);
        goto out;
    }
    if ((strcmp(name, store->model_name) != 0 || dim != store->dim) &&
        !(store->flags & STORE_OPEN_ALLOW_MODEL_MISMATCH)) {
        s = ims_error_set(err, IMS_ERR_MODEL_MISMATCH,
                          "data folder %s belongs to model '%s' (dim %lld), not to model '%s' "
                          "(dim %u); use that model, another data folder, or re-embed the "
                          "folder to migrate it",
                          store->data_dir, name, dim, store->model_name, store->dim);
    }
out:
    ims_free(name);
    ims_free(dim_s);
    return s;
}

/* ---- open / close -------------------------------------------------------- */

#define STORE_RECOVER_HINT                                                                 \
    "restore it from a backup, or run `imgsearch repair` to rebuild the catalogue rows "   \
    "from the index snapshot"

/* The data the folder holds besides the catalogue: a non-empty write-ahead
 * log or index snapshot (index.snap and its temp files). Returns the first
 * such file's name in `what`, or 0 when the folder holds nothing a fresh
 * catalogue could make unreachable. Unreadable entries count as data. */
static int other_data_present(const char *data_dir, char *what, size_t what_cap)
{
    DIR *d = opendir(data_dir);
    if (!d)
        return 0; /* the folder is about to be created */
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, "catalogue.db-wal") != 0 &&
            strncmp(e->d_name, "index.snap", strlen("index.snap")) != 0)
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, 0) != 0 || (S_ISREG(sb.st_mode) && sb.st_size > 0)) {
            snprintf(what, what_cap, "%s", e->d_name);
            found = 1;
        }
    }
    closedir(d);
    return found;
}

/* Refuses, before SQLite touches anything: a non-empty file that is not a
 * SQLite database; an unreadable file; and a missing or empty catalogue in
 * a folder that holds other data (an index snapshot, a write-ahead log):
 * SQLite would make a new, empty catalogue of it and the next snapshot
 * would replace the last copy of the vectors (issue 8). Only a folder with
 * no data at all gets a new catalogue. */
static enum ims_status check_magic(const char *data_dir, const char *path, struct ims_error *err)
{
    static const char magic[16] = "SQLite format 3";
    char other[256];
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno != ENOENT)
            return ims_error_set(err, IMS_ERR_IO,
                                 "catalogue %s cannot be read: %s; it was left untouched: fix its "
                                 "permissions, " STORE_RECOVER_HINT,
                                 path, strerror(errno));
        if (other_data_present(data_dir, other, sizeof(other)))
            return ims_error_set(err, IMS_ERR_CORRUPT,
                                 "catalogue %s is missing but the folder holds data (%s); "
                                 "refusing to start an empty catalogue over it: " STORE_RECOVER_HINT,
                                 path, other);
        return IMS_OK;
    }
    char head[16];
    size_t n = fread(head, 1, sizeof(head), f);
    int read_failed = ferror(f);
    fclose(f);
    if (read_failed)
        return ims_error_set(err, IMS_ERR_IO,
                             "catalogue %s cannot be read; it was left untouched: " STORE_RECOVER_HINT,
                             path);
    if (n == 0) {
        if (other_data_present(data_dir, other, sizeof(other)))
            return ims_error_set(err, IMS_ERR_CORRUPT,
                                 "catalogue %s is empty (0 bytes) but the folder holds data (%s); "
                                 "it was left untouched: " STORE_RECOVER_HINT,
                                 path, other);
        return IMS_OK; /* empty, nothing else: SQLite treats it as a new database */
    }
    if (n < sizeof(head) || memcmp(head, magic, sizeof(magic)) != 0)
        return ims_error_set(err, IMS_ERR_CORRUPT,
                             "catalogue %s is not a SQLite database (bad header); it was left "
                             "untouched, move it away or " STORE_RECOVER_HINT,
                             path);
    return IMS_OK;
}

/* Counts tables and tells whether `meta` is among them; the first read of
 * the file, which makes SQLite validate its header. */
static enum ims_status inspect(sqlite3 *db, const char *path, int *n_tables, int *has_meta,
                               struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__prepare(
        db, "SELECT count(*), coalesce(sum(name = 'meta'), 0) FROM sqlite_master "
            "WHERE type = 'table'",
        &q, err);
    if (s == IMS_OK) {
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            *n_tables = sqlite3_column_int(q, 0);
            *has_meta = sqlite3_column_int(q, 1) > 0;
        } else {
            s = store__db_error(db, rc, err, "read schema");
        }
    }
    sqlite3_finalize(q);
    if (s != IMS_OK)
        ims_error_prefix(err, "catalogue %s (left untouched; " STORE_RECOVER_HINT ")", path);
    return s;
}

static enum ims_status pragma_expect(sqlite3 *db, const char *sql, const char *want,
                                     struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__prepare(db, sql, &q, err);
    if (s != IMS_OK)
        return s;
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        s = store__db_error(db, rc, err, sql);
    } else {
        const char *got = (const char *)sqlite3_column_text(q, 0);
        if (!got || strcmp(got, want) != 0)
            s = ims_error_set(err, IMS_ERR_IO, "catalogue: %s gave '%s', expected '%s'", sql,
                              got ? got : "", want);
    }
    sqlite3_finalize(q);
    return s;
}

static int valid_model(const struct store_model_info *m)
{
    return m && m->name && m->name[0] && strlen(m->name) <= STORE_MODEL_NAME_MAX_BYTES &&
           m->dim >= 1 && m->dim <= STORE_DIM_MAX;
}

enum ims_status store__sq_open(const char *data_dir, const struct store_model_info *model,
                               unsigned flags, struct store **out, struct ims_error *err)
{
    struct store *store = NULL;
    enum ims_status s = IMS_OK;
    int locked_init = 0;

    IMS_RETURN_ERROR_IF(!data_dir || !data_dir[0], err, IMS_ERR_INVALID,
                        "store_open: empty data folder path");
    IMS_RETURN_ERROR_IF(!out, err, IMS_ERR_INVALID, "store_open: no output pointer");
    IMS_RETURN_ERROR_IF(!valid_model(model), err, IMS_ERR_INVALID,
                        "store_open: the model needs a name (1..%d bytes) and an embedding "
                        "size of 1..%d",
                        STORE_MODEL_NAME_MAX_BYTES, STORE_DIM_MAX);

    store = ims_calloc(1, sizeof(*store));
    if (!store)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_open: out of memory");
    size_t dl = strlen(data_dir);
    store->data_dir = ims_strdup(data_dir);
    store->db_path = ims_malloc(dl + sizeof("/catalogue.db"));
    store->model_name = ims_strdup(model->name);
    if (!store->data_dir || !store->db_path || !store->model_name) {
        s = ims_error_set(err, IMS_ERR_NOMEM, "store_open: out of memory");
        goto out;
    }
    memcpy(store->db_path, data_dir, dl);
    memcpy(store->db_path + dl, "/catalogue.db", sizeof("/catalogue.db"));
    store->ops = &store__sqlite_ops;
    store->dim = model->dim;
    store->flags = flags;
    pthread_mutex_init(&store->wlock, NULL);
    pthread_mutex_init(&store->plock, NULL);
    pthread_cond_init(&store->pcond, NULL);
    locked_init = 1;

    /* read-only first: a lost or damaged catalogue beside other data says
     * so (and names `imgsearch repair`) before "no catalogue" would */
    s = check_magic(data_dir, store->db_path, err);
    if (s != IMS_OK)
        goto out;
    if (flags & STORE_OPEN_EXISTING) {
        struct stat sb;
        if (stat(store->db_path, &sb) != 0 || sb.st_size == 0) {
            s = ims_error_set(err, IMS_ERR_NOT_FOUND, "%s holds no catalogue (no %s)", data_dir,
                              store->db_path);
            goto out;
        }
    }
    s = ims_mkdir_p(data_dir, err);
    if (s != IMS_OK)
        goto out;

    int rc =
        sqlite3_open_v2(store->db_path, &store->wdb,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        s = store__db_error(store->wdb, rc, err, "open");
        goto out;
    }
    conn_setup(store->wdb, err);

    int n_tables = 0, has_meta = 0;
    s = inspect(store->wdb, store->db_path, &n_tables, &has_meta, err);
    if (s != IMS_OK)
        goto out;
    if (n_tables > 0 && !has_meta) {
        s = ims_error_set(err, IMS_ERR_CORRUPT,
                          "%s is a SQLite database but not an imgsearch catalogue (no meta "
                          "table); it was left untouched",
                          store->db_path);
        goto out;
    }
    if (n_tables == 0 && (flags & STORE_OPEN_EXISTING)) {
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "%s is an empty database, not a catalogue",
                          store->db_path);
        goto out;
    }
    if (n_tables == 0) {
        s = store__exec(store->wdb, "PRAGMA page_size = 16384", err);
        if (s != IMS_OK)
            goto out;
    }
    s = pragma_expect(store->wdb, "PRAGMA journal_mode = WAL", "wal", err);
    if (s != IMS_OK)
        goto out;
    s = store__exec(store->wdb,
                    (flags & STORE_OPEN_SYNC_NORMAL) ? "PRAGMA synchronous = NORMAL"
                                                     : "PRAGMA synchronous = FULL",
                    err);
    if (s == IMS_OK)
        s = store__exec(store->wdb, "PRAGMA foreign_keys = ON", err);
    if (s != IMS_OK)
        goto out;

    s = store__write_begin(store, err);
    if (s != IMS_OK)
        goto out;
    s = migrate(store, has_meta, err);
    s = store__write_end(store, s, err);
    if (s != IMS_OK)
        goto out;
    s = check_model(store, err);
    if (s != IMS_OK)
        goto out;

    *out = store;
    store = NULL;
out:
    if (store) {
        sqlite3_close(store->wdb);
        if (locked_init) {
            pthread_mutex_destroy(&store->wlock);
            pthread_mutex_destroy(&store->plock);
            pthread_cond_destroy(&store->pcond);
        }
        ims_free(store->data_dir);
        ims_free(store->db_path);
        ims_free(store->model_name);
        ims_free(store);
    }
    return s;
}

void store__sq_close(struct store *store)
{
    if (!store)
        return;
    IMS_ASSERT(store->n_idle == store->n_open); /* no reader still borrowed */
    for (int i = 0; i < store->n_idle; i++)
        sqlite3_close(store->idle[i]);
    sqlite3_close(store->wdb);
    pthread_mutex_destroy(&store->wlock);
    pthread_mutex_destroy(&store->plock);
    pthread_cond_destroy(&store->pcond);
    ims_free(store->data_dir);
    ims_free(store->db_path);
    ims_free(store->model_name);
    ims_free(store);
}

/* ---- model record, version, check ------------------------------------------- */

enum ims_status store__sq_model_get(struct store *store, char *name, size_t name_cap, uint32_t *dim,
                                    struct ims_error *err)
{
    sqlite3 *db = NULL;
    char *n = NULL, *d = NULL;
    enum ims_status s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        return s;
    s = store__sq_meta_get(db, "model_name", &n, err);
    if (s == IMS_OK)
        s = store__sq_meta_get(db, "embedding_dim", &d, err);
    if (s == IMS_OK) {
        long long x = parse_count(d);
        if (!n || x < 1 || x > STORE_DIM_MAX) {
            s = ims_error_set(err, IMS_ERR_CORRUPT, "catalogue: the model record is damaged");
        } else {
            snprintf(name, name_cap, "%s", n);
            *dim = (uint32_t)x;
        }
    }
    ims_free(n);
    ims_free(d);
    store__reader_put(store, db);
    return s;
}

enum ims_status store__sq_model_record(struct store *store, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store, err, IMS_ERR_INVALID, "store_model_record: no store");
    enum ims_status s = store__write_begin(store, err);
    if (s != IMS_OK)
        return s;
    char buf[32];
    snprintf(buf, sizeof(buf), "%u", store->dim);
    s = store__sq_meta_set(store->wdb, "model_name", store->model_name, err);
    if (s == IMS_OK)
        s = store__sq_meta_set(store->wdb, "embedding_dim", buf, err);
    return store__write_end(store, s, err);
}

enum ims_status store__sq_schema_version(struct store *store, int *version, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !version, err, IMS_ERR_INVALID,
                        "store_schema_version: invalid arguments");
    sqlite3 *db = NULL;
    char *v = NULL;
    enum ims_status s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        return s;
    s = store__sq_meta_get(db, "schema_version", &v, err);
    if (s == IMS_OK) {
        long long x = parse_count(v);
        if (x < 1 || x > 1000000)
            s = ims_error_set(err, IMS_ERR_CORRUPT, "catalogue: bad schema_version");
        else
            *version = (int)x;
    }
    ims_free(v);
    store__reader_put(store, db);
    return s;
}

/* Runs a query whose rows are problems; the first one becomes the error. */
static enum ims_status check_query(sqlite3 *db, const char *sql, const char *what,
                                   const char *ok_text, struct ims_error *err)
{
    sqlite3_stmt *q = NULL;
    enum ims_status s = store__prepare(db, sql, &q, err);
    if (s != IMS_OK)
        return s;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(q, 0);
        if (!ok_text || !t || strcmp(t, ok_text) != 0)
            s = ims_error_set(err, IMS_ERR_CORRUPT, "catalogue check failed (%s): %s", what,
                              t ? t : "(null)");
    } else if (rc != SQLITE_DONE) {
        s = store__db_error(db, rc, err, what);
    }
    sqlite3_finalize(q);
    return s;
}

enum ims_status store__sq_check(struct store *store, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store, err, IMS_ERR_INVALID, "store_check: no store");
    sqlite3 *db = NULL;
    enum ims_status s = store__reader_get(store, &db, err);
    if (s != IMS_OK)
        return s;
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT 'image ' || i.id || ' has no embedding of %u floats' FROM images i "
             "LEFT JOIN embeddings e ON e.image_id = i.id "
             "WHERE e.vec IS NULL OR length(e.vec) != %u LIMIT 1",
             store->dim, store->dim * 4u);
    s = store__exec(db, "BEGIN", err);
    if (s == IMS_OK)
        s = check_query(db, "PRAGMA integrity_check", "integrity_check", "ok", err);
    if (s == IMS_OK)
        s = check_query(db, "SELECT 'table ' || \"table\" || ' row ' || rowid || "
                            "' references a missing ' || parent FROM pragma_foreign_key_check",
                        "foreign_key_check", NULL, err);
    if (s == IMS_OK)
        s = check_query(db, sql, "embeddings", NULL, err);
    if (s == IMS_OK)
        s = check_query(db,
                        "SELECT 'embedding ' || image_id || ' has no image' FROM embeddings e "
                        "WHERE NOT EXISTS (SELECT 1 FROM images i WHERE i.id = e.image_id) "
                        "LIMIT 1",
                        "orphans", NULL, err);
    store__reader_end(store, db);
    return s;
}

const struct store_ops store__sqlite_ops = {
    .name = "sqlite",
    .close = store__sq_close,
    .model_get = store__sq_model_get,
    .model_record = store__sq_model_record,
    .schema_version = store__sq_schema_version,
    .check = store__sq_check,
    .insert_many = store__sq_insert_many,
    .insert_stream = store__sq_insert_stream,
    .set_thumbnail = store__sq_set_thumbnail,
    .set_embeddings = store__sq_set_embeddings,
    .delete_many = store__sq_delete_many,
    .get_many = store__sq_get_many,
    .find_by_source = store__sq_find_by_source,
    .find_by_sha256 = store__sq_find_by_sha256,
    .get_thumbnail = store__sq_get_thumbnail,
    .count = store__sq_count,
    .filter_ids = store__sq_filter_ids,
    .tags_update = store__sq_tags_update,
    .max_id = store__sq_max_id,
    .list = store__sq_list,
    .scan_embeddings = store__sq_scan_embeddings,
    .restore_many = store__sq_restore_many,
    .deleted_seq = store__sq_deleted_seq,
    .deleted_after = store__sq_deleted_after,
    .change_seq = store__sq_change_seq,
    .changes_after = store__sq_changes_after,
    .change_floor = store__sq_change_floor,
    .change_trim = store__sq_change_trim,
    .embeddings_changed_after = store__sq_embeddings_changed_after,
    .wait_change = store__sq_wait_change,
    .job_create = store__sq_job_create,
    .job_update = store__sq_job_update,
    .job_add_errors = store__sq_job_add_errors,
    .job_get = store__sq_job_get,
    .job_fail_unfinished = store__sq_job_fail_unfinished,
    .job_add_items = store__sq_job_add_items,
    .job_seal = store__sq_job_seal,
    .job_claim = store__sq_job_claim,
    .job_renew = store__sq_job_renew,
    .job_release_node = store__sq_job_release_node,
    .job_item_outcome = store__sq_job_item_outcome,
    .job_finish = store__sq_job_finish,
    .job_item_get = store__sq_job_item_get,
    .list_under = store__sq_list_under,
    .update_files = store__sq_update_files,
    .replace_content = store__sq_replace_content,
    .set_details = store__sq_set_details,
};
