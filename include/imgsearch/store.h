/* SPDX-License-Identifier: MIT */
/*
 * store.h: the catalogue. Every image row, its embedding, its thumbnail, the
 * deletion log and the ingest jobs live here; it is the source of truth from
 * which the vector index is derived (DESIGN.md "Invariants").
 *
 *     struct store_model_info model = {"openai/clip-vit-base-patch32", 512};
 *     struct store *store = NULL;
 *     struct ims_error err = {0};
 *     if (store_open("data", &model, 0, &store, &err) != IMS_OK)
 *         die(err.message);                    // e.g. IMS_ERR_MODEL_MISMATCH
 *
 *     struct store_new_image in = {
 *         .source = "https://example.org/cat.jpg", .sha256 = digest,
 *         .format = "jpeg", .width = 640, .height = 480, .bytes = 51234,
 *         .embedding = vec, .dim = 512, .thumbnail = jpeg, .thumbnail_bytes = n,
 *     };
 *     struct store_insert_result res;
 *     store_insert_many(store, &in, 1, &res, &err);   // one transaction
 *     // res.outcome: STORE_INSERTED / STORE_DUP_SOURCE / STORE_DUP_SHA256 / STORE_COMPLETED
 *
 *     struct store_image_row row;
 *     if (store_get(store, res.id, STORE_FIELD_EMBEDDING, &row, &err) == IMS_OK) {
 *         puts(row.source);
 *         store_row_fini(&row);
 *     }
 *     store_scan_embeddings(store, snapshot_max_id, 4096, add_to_index, idx, &err);
 *     store_close(store);
 *
 * Backends: SQLite (catalogue.db in the data folder, WAL mode; store_open)
 * and PostgreSQL (store_open_catalogue with a postgresql:// URL), shared by
 * many nodes. Neither's types appear here; every function works on both
 * (docs/internals/store.md).
 *
 * Threading: a `struct store` may be shared by any number of threads; every
 * function is thread-safe. On SQLite, writes go through ONE writer connection
 * guarded by a mutex; on PostgreSQL through a small connection pool, image
 * writes serialised by an advisory lock. Each public write is one explicit
 * transaction (all or nothing). Reads use their own connections from a small pool (WAL), so they
 * see a consistent committed snapshot and never wait for a write batch in
 * progress. Other processes (the CLI next to a running server) may use the
 * same folder: SQLite's file locks and a busy timeout serialise their writes.
 *
 * Durability: when a write function returns IMS_OK its transaction is on
 * stable storage (synchronous=FULL), so a crash or power loss at any later
 * moment keeps it; a crash during the call keeps none of it.
 *
 * Results: functions return a status; out-parameters are set only on
 * success; a precise message goes into the optional `err`. Bad input gets
 * IMS_ERR_INVALID, never an assertion.
 */
#ifndef IMGSEARCH_STORE_H
#define IMGSEARCH_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "imgsearch/base.h"

#ifdef __cplusplus
extern "C" {
#endif

struct store;

/* ---- limits on what a row may hold (checked, IMS_ERR_INVALID) ----------- */

#define STORE_SOURCE_MAX_BYTES 8192
#define STORE_FORMAT_MAX_BYTES 32
#define STORE_CAPTION_MAX_BYTES 65536
#define STORE_METADATA_MAX_BYTES (1u << 20)
#define STORE_THUMBNAIL_MAX_BYTES (4u << 20)
#define STORE_MODEL_NAME_MAX_BYTES 256
#define STORE_DIM_MAX 65536
/* Stored per-item errors of one job; further errors are only counted. */
#define STORE_JOB_MAX_ERRORS 1000
#define STORE_JOB_ID_MAX_BYTES 64
#define STORE_JOB_ERROR_MAX_BYTES 4096
/* The schema version this binary writes and the newest it can open. */
#define STORE_SCHEMA_VERSION 5

/* ---- open / close --------------------------------------------------------- */

/* The model a data folder belongs to. `name` is borrowed. */
struct store_model_info {
    const char *name;
    uint32_t dim; /* embedding size, 1..STORE_DIM_MAX */
};

enum store_open_flags {
    /* Open a folder recorded for another model (name or dim) anyway: for the
     * re-embed migration, which then calls store_set_embeddings() and
     * store_model_record(). Without it a mismatch is IMS_ERR_MODEL_MISMATCH. */
    STORE_OPEN_ALLOW_MODEL_MISMATCH = 1u << 0,
    /* synchronous=NORMAL instead of FULL: commits survive a process crash but
     * not a power loss. For benchmarks and throwaway folders only. */
    STORE_OPEN_SYNC_NORMAL = 1u << 1,
    /* Only open a catalogue that exists: IMS_ERR_NOT_FOUND instead of
     * creating one (catalogue copy's source, tools that only read). */
    STORE_OPEN_EXISTING = 1u << 2,
};

/* Opens (creating `data_dir` and catalogue.db if needed) the catalogue of
 * `data_dir` for `model`. A fresh catalogue records `model`; an existing one
 * must have been recorded for the same name and dim (see flags). Errors:
 * IMS_ERR_MODEL_MISMATCH (message names both models), IMS_ERR_CORRUPT (not a
 * catalogue, damaged; the file is left untouched), IMS_ERR_UNSUPPORTED
 * (schema newer than this binary), IMS_ERR_IO, IMS_ERR_INVALID.
 * On success *out owns the store; release it with store_close(). */
enum ims_status store_open(const char *data_dir, const struct store_model_info *model,
                           unsigned flags, struct store **out, struct ims_error *err);
/* Opens the catalogue named by `catalogue`: NULL or "" = the SQLite file of
 * `data_dir` (exactly store_open); "postgresql://..." or "postgres://..." =
 * a PostgreSQL database (libpq URL; the password comes from the URL,
 * PGPASSWORD or PGPASSFILE and is never logged nor put in messages).
 * `data_dir` may be NULL when a URL is given. Anything else is
 * IMS_ERR_INVALID. A server that cannot be reached is IMS_ERR_IO naming
 * host:port. Same model checks, errors and ownership as store_open. */
enum ims_status store_open_catalogue(const char *catalogue, const char *data_dir,
                                     const struct store_model_info *model, unsigned flags,
                                     struct store **out, struct ims_error *err);
/* 1 if `catalogue` names a PostgreSQL URL (postgresql:// or postgres://). */
int store_catalogue_is_url(const char *catalogue);
/* Copies `catalogue` into out (NUL-terminated, truncated to cap) with any
 * password replaced by "***": what messages and logs may show. */
void store_catalogue_display(const char *catalogue, char *out, size_t cap);
/* "sqlite" or "postgresql". */
const char *store_backend_name(const struct store *store);
/* Where the catalogue lives, for messages: the SQLite file's path or the
 * URL with its password masked. Owned by the store. */
const char *store_location(const struct store *store);

/* Closes every connection. Accepts NULL. No other call may be running. */
void store_close(struct store *store);

/* The model recorded in the catalogue; the name is copied into `name`
 * (NUL-terminated, truncated to name_cap). */
enum ims_status store_model_get(struct store *store, char *name, size_t name_cap, uint32_t *dim,
                                struct ims_error *err);
/* Re-records the model the store was opened with as the folder's model
 * (after a re-embed migration). */
enum ims_status store_model_record(struct store *store, struct ims_error *err);
/* The schema version recorded in the catalogue. */
enum ims_status store_schema_version(struct store *store, int *version, struct ims_error *err);
/* Full consistency check: SQLite's integrity_check and foreign_key_check,
 * one embedding of the right size per image. IMS_ERR_CORRUPT with the first
 * problem found. */
enum ims_status store_check(struct store *store, struct ims_error *err);

/* ---- images --------------------------------------------------------------- */

/* One image to insert. Every pointer is borrowed for the duration of the
 * call. */
struct store_new_image {
    const char *source;        /* URL or path, required, unique */
    const uint8_t *sha256;     /* 32 bytes of content hash, or NULL (imported row) */
    const char *format;        /* "jpeg", "png", ...; NULL if unknown */
    uint32_t width, height;    /* 0 if unknown */
    int64_t bytes;             /* size of the original image, 0 if unknown */
    int64_t added;             /* unix seconds; 0 = now */
    const char *caption;       /* NULL or text */
    const char *metadata;      /* NULL or a JSON text (extra fields of imports) */
    const float *embedding;    /* dim floats, finite, required */
    uint32_t dim;              /* must equal the store's dim */
    const void *thumbnail;     /* JPEG bytes or NULL */
    size_t thumbnail_bytes;
    int64_t id;                /* 0: a new id; > 0: this id (`imgsearch repair` rebuilds
                                  rows under the ids the index knows them by); a row
                                  that already holds it fails the whole call */
};

enum store_insert_outcome {
    STORE_INSERTED = 0, /* a new row, id is new */
    STORE_DUP_SOURCE,   /* a row with this source exists: id is that row, nothing stored */
    STORE_DUP_SHA256,   /* a row with this content exists: id is that row, nothing stored */
    STORE_COMPLETED,    /* the source existed without image data (imported): its sha256,
                           format, size and thumbnail were filled in, its embedding kept */
};

struct store_insert_result {
    int64_t id;
    enum store_insert_outcome outcome;
};

/* Inserts `n` images in ONE transaction. Duplicates (by source, then by
 * content hash, also within the batch) are reported with the id of the
 * existing row and not stored twice. Either every row is handled or none:
 * invalid input (message names the row index) rejects the whole batch before
 * anything is written. `results` (n entries, caller-owned) is filled on
 * success. */
enum ims_status store_insert_many(struct store *store, const struct store_new_image *rows, size_t n,
                                  struct store_insert_result *results, struct ims_error *err);

/* Streaming form of store_insert_many for imports too large to hold at once:
 * ONE transaction for all n_total rows, filled chunk_rows (0 = 1024) at a
 * time. fill(user, first, rows, n) fills rows[0..n) (zeroed) with rows
 * first..first+n-1; what they point to must stay valid until the next fill
 * call; non-zero stops (IMS_ERR_CANCELLED). done (optional) gets each chunk's
 * results once it is written (not yet committed). Any failure, of a fill, a
 * row's validation or a write, rolls every row back. The writer is held for
 * the whole call. PostgreSQL runs the whole stream again when the server
 * cut its transaction (write_idle_timeout_ms): fill is then asked again
 * from row 0 and must give the same rows, and done starts again from row 0
 * (what it got before was rolled back: a caller that sums results starts
 * over when first is 0). */
typedef int (*store_fill_fn)(void *user, size_t first, struct store_new_image *rows, size_t n);
typedef void (*store_result_fn)(void *user, size_t first,
                                const struct store_insert_result *results, size_t n);
enum ims_status store_insert_stream(struct store *store, size_t n_total, size_t chunk_rows,
                                    store_fill_fn fill, store_result_fn done, void *user,
                                    struct ims_error *err);

/* Sets (or replaces) the thumbnail of image `id`. IMS_ERR_NOT_FOUND if the
 * image does not exist. */
enum ims_status store_set_thumbnail(struct store *store, int64_t id, const void *jpeg,
                                    size_t n_bytes, struct ims_error *err);

/* Replaces the embeddings of `n` images (ids[i] gets vectors[i*dim ...]) and
 * tags them with the store's model, in one transaction: the re-embed step.
 * `exists` (optional, n entries) says which ids were present. */
enum ims_status store_set_embeddings(struct store *store, const int64_t *ids, const float *vectors,
                                     size_t n, uint8_t *exists, struct ims_error *err);

/* Deletes images (row, embedding, thumbnail) in one transaction and logs
 * each deletion (see store_deleted_after). `existed` (optional, n entries)
 * says which ids were present. Ids are never reused. */
enum ims_status store_delete_many(struct store *store, const int64_t *ids, size_t n,
                                  uint8_t *existed, struct ims_error *err);
/* One id; IMS_ERR_NOT_FOUND if it did not exist. */
enum ims_status store_delete(struct store *store, int64_t id, struct ims_error *err);

/* A row read back. Every pointer is owned by the row: release with
 * store_row_fini(). */
struct store_image_row {
    int64_t id;
    char *source;
    int has_sha256;
    uint8_t sha256[32];
    char *format;   /* NULL if unknown */
    uint32_t width, height;
    int64_t bytes;
    int64_t added;  /* unix seconds */
    char *caption;  /* NULL if none */
    char *metadata; /* JSON text or NULL */
    char *model;    /* model that computed the embedding */
    int has_thumbnail;
    float *embedding; /* dim floats; NULL unless STORE_FIELD_EMBEDDING was asked */
    uint32_t dim;
    int has_taken;  /* schema v4: the `taken` column (metadata's "taken", EXIF date) */
    int64_t taken;  /* unix seconds, if has_taken */
    char **tags;    /* n_tags tags as written, ordered case-insensitively; one block
                       (pointers and text) freed by store_row_fini; NULL if none */
    size_t n_tags;
};

enum store_fields {
    STORE_FIELD_EMBEDDING = 1u << 0,
};

/* Zeroes a row for use. */
void store_row_init(struct store_image_row *row);
/* Frees what the row owns and zeroes it. Accepts NULL. */
void store_row_fini(struct store_image_row *row);

/* Reads image `id`; `fields` adds optional parts (STORE_FIELD_EMBEDDING).
 * IMS_ERR_NOT_FOUND if absent. On success *row owns its strings. */
enum ims_status store_get(struct store *store, int64_t id, unsigned fields,
                          struct store_image_row *row, struct ims_error *err);
/* Reads `n` ids in one read transaction (one consistent snapshot), for
 * joining search results. rows[i] gets ids[i]; found[i] says whether it
 * exists (rows of missing ids are zeroed). On success release every row with
 * store_row_fini(); on failure nothing is left allocated. */
enum ims_status store_get_many(struct store *store, const int64_t *ids, size_t n, unsigned fields,
                               struct store_image_row *rows, uint8_t *found, struct ims_error *err);
/* Looks up by source / content hash; *id is set, IMS_ERR_NOT_FOUND if none. */
enum ims_status store_find_by_source(struct store *store, const char *source, int64_t *id,
                                     struct ims_error *err);
enum ims_status store_find_by_sha256(struct store *store, const uint8_t sha256[32], int64_t *id,
                                     struct ims_error *err);
/* The thumbnail of `id`. On success *jpeg (release with ims_free) and
 * *n_bytes are set. IMS_ERR_NOT_FOUND if the image or its thumbnail is absent. */
enum ims_status store_get_thumbnail(struct store *store, int64_t id, void **jpeg, size_t *n_bytes,
                                    struct ims_error *err);

/* A filter over image rows (issue 10). Every member is optional: a 0 / NULL
 * member does not restrict. Times are unix seconds, ranges inclusive;
 * `taken` is the row's taken column (the metadata's "taken", EXIF
 * DateTimeOriginal), so a taken range excludes rows without one. formats: a
 * comma list of format words ("jpeg,heic"); orientation from width and
 * height; source_prefix a byte prefix of the source; tags: the row must
 * carry every one of them (compared case-insensitively; each checked as by
 * store_tag_normalize, at most STORE_TAGS_MAX). */
enum store_orientation {
    STORE_ORIENT_ANY = 0, STORE_ORIENT_LANDSCAPE, STORE_ORIENT_PORTRAIT, STORE_ORIENT_SQUARE,
};
struct store_filter {
    int has_added_from, has_added_to, has_taken_from, has_taken_to;
    int64_t added_from, added_to, taken_from, taken_to;
    uint32_t min_width, min_height;
    const char *formats;
    enum store_orientation orientation;
    const char *source_prefix;
    const char *const *tags;
    size_t n_tags;
};
/* The ids of the rows matching `f`, ascending, in *ids (release with
 * ims_free; NULL when none) and *n. */
enum ims_status store_filter_ids(struct store *store, const struct store_filter *f, int64_t **ids,
                                 size_t *n, struct ims_error *err);

/* ---- tags (issue 10, schema v4) ---------------------------------------------
 *
 * Each image carries up to STORE_TAGS_MAX tags. A tag keeps the case it was
 * written in for display and is compared case-insensitively (ASCII letters
 * folded; other characters compared as bytes): "Trip" and "trip" are one
 * tag. Tags are deleted with their image. */
#define STORE_TAG_MAX_BYTES 64
#define STORE_TAGS_MAX 64
/* Checks one tag and writes its stored form into out (spaces around it
 * trimmed) and its comparison key into key (out lower-cased). Refused
 * (IMS_ERR_INVALID, the message quotes the tag): empty, longer than
 * STORE_TAG_MAX_BYTES, not UTF-8, a control character (U+0000..U+001F,
 * U+007F..U+009F). */
enum ims_status store_tag_normalize(const char *tag, char out[STORE_TAG_MAX_BYTES + 1],
                                    char key[STORE_TAG_MAX_BYTES + 1], struct ims_error *err);
/* In one transaction: removes the tags `remove` (absent ones are ignored),
 * then adds `add` (one already there under another case takes the new
 * spelling). IMS_ERR_NOT_FOUND if the image does not exist; IMS_ERR_INVALID
 * for a bad tag (nothing changed) or when the image would hold more than
 * STORE_TAGS_MAX tags. Read the result back with store_get. */
enum ims_status store_tags_update(struct store *store, int64_t id, const char *const *add,
                                  size_t n_add, const char *const *remove, size_t n_remove,
                                  struct ims_error *err);

/* Number of images; largest live id (0 if empty). */
enum ims_status store_count(struct store *store, int64_t *n, struct ims_error *err);
enum ims_status store_max_id(struct store *store, int64_t *id, struct ims_error *err);

enum store_order {
    STORE_ORDER_ID_DESC = 0,    /* newest id first */
    STORE_ORDER_ID_ASC,
    STORE_ORDER_ADDED_DESC,     /* newest added time first, ties by id */
    STORE_ORDER_ID_AFTER,       /* keyset paging: the rows with id > offset, ascending
                                   (offset is the last id of the previous page) */
};
/* Lists up to `limit` rows (without embeddings) from `offset` in `order`.
 * On success *rows (release each with store_row_fini, the array with
 * ims_free) and *n are set. limit is capped at 10000. */
enum ims_status store_list(struct store *store, enum store_order order, int64_t offset,
                           int64_t limit, struct store_image_row **rows, size_t *n,
                           struct ims_error *err);

/* Called with consecutive chunks of embeddings in increasing id order:
 * ids[n], vectors[n * dim] (row-major, L2-normalised as stored). The arrays
 * are borrowed for the call. Return 0 to continue, non-zero to stop (the
 * scan then returns IMS_ERR_CANCELLED). */
typedef int (*store_scan_fn)(void *user, const int64_t *ids, const float *vectors, size_t n,
                             uint32_t dim);
/* Streams every embedding with id > after_id, in id order, chunk_rows at a
 * time (0 = 1024), from one consistent snapshot: the rebuild path of the
 * index. An embedding whose size does not match the store's dim is
 * IMS_ERR_MODEL_MISMATCH (a half-done re-embed). */
enum ims_status store_scan_embeddings(struct store *store, int64_t after_id, size_t chunk_rows,
                                      store_scan_fn fn, void *user, struct ims_error *err);

/* ---- folders kept in sync (add --sync, serve --watch; schema v3) ----------
 *
 * A row added from a local file may record the file's size and mtime when it
 * was last synced: a later sync compares them with stat() alone and reads
 * the file again only when they differ (then the content hash decides). */

/* A row as the folder sync sees it. Owned by the array store_list_under
 * returns; release with store_file_rows_free. */
struct store_file_row {
    int64_t id;
    char *source;
    int has_sha256;
    uint8_t sha256[32];
    int64_t bytes;          /* size of the original image (0 if unknown) */
    int has_file_state;     /* 0: never synced (plain add, import) */
    int64_t file_size, file_mtime_ns;
};
void store_file_rows_free(struct store_file_row *rows, size_t n);
/* Every row whose source lies under `folder` (an absolute path; the source
 * starts with folder + "/", compared byte-wise: /a/b never matches /a/bc),
 * sorted by source with strcmp. *rows is NULL when *n is 0. */
enum ims_status store_list_under(struct store *store, const char *folder,
                                 struct store_file_row **rows, size_t *n, struct ims_error *err);

/* One row's new file state and, when `source` is not NULL, its new source
 * (a renamed or moved file: the embedding is kept). */
struct store_file_update {
    int64_t id;
    const char *source;
    int64_t file_size, file_mtime_ns;
};
/* Applies n updates in one transaction. An id that does not exist is
 * skipped (found[i] = 0; found is optional). A new source held by another
 * row is IMS_ERR_EXISTS and nothing is written. */
enum ims_status store_update_files(struct store *store, const struct store_file_update *u, size_t n,
                                   uint8_t *found, struct ims_error *err);
/* A synced file whose content changed keeps its row: row `id` takes the
 * image data of row `from` (the row just added from the file's new content):
 * its source, embedding, sha256, format, width, height, bytes, metadata
 * (EXIF, taken), model and thumbnail (none if `from` has none), and the file
 * state given; row `id` keeps its id, tags, caption and added time, and row
 * `from` is deleted. One transaction, which logs the deletion of `from` and
 * an UPDATE change of `id` (every node's index re-reads its embedding, every
 * row cache evicts it; store_embeddings_changed_after lists it). IMS_ERR_NOT_FOUND if either row is missing, and
 * nothing is written. */
enum ims_status store_replace_content(struct store *store, int64_t id, int64_t from,
                                      int64_t file_size, int64_t file_mtime_ns,
                                      struct ims_error *err);
/* One folder sync at a time per catalogue (add --sync, serve --watch; two
 * at once would both add a new file or both park a changed one). One lock
 * per catalogue, not per folder: /photos and /photos/2024 overlap. Held
 * across processes and nodes (SQLite: flock on <data folder>/sync.lock;
 * PostgreSQL: a session advisory lock) and gone with its holder. Never
 * waits: IMS_ERR_BUSY ("another sync of this catalogue is running ...")
 * when held elsewhere. Release with store_sync_unlock (accepts NULL). */
struct store_sync_lock;
enum ims_status store_sync_lock_try(struct store *store, struct store_sync_lock **out,
                                    struct ims_error *err);
void store_sync_unlock(struct store_sync_lock *lock);
/* Sets row id's caption (NULL: none) and added time (unix seconds), a ROW
 * change in the feed: `reembed` keeps them from the old catalogue.
 * IMS_ERR_NOT_FOUND if the row does not exist. */
enum ims_status store_set_details(struct store *store, int64_t id, const char *caption,
                                  int64_t added, struct ims_error *err);
/* ---- the node's row cache (serve --row-cache-mb) ---------------------------
 *
 * store_get_many without STORE_FIELD_EMBEDDING (the join of search hits)
 * can be served from a cache of rows bounded by bytes, so a repeated result
 * set costs no catalogue round trip. This store's own writes evict what they
 * touch when they commit; other writers' changes are evicted by whoever
 * follows the change feed (the replica: store_row_cache_evict for every
 * DELETE, UPDATE and ROW change, before its index drops the id), so a row deleted
 * anywhere is served from the cache no longer than the node's index still
 * holds its id. */
struct store_row_cache_stats {
    size_t max_bytes, bytes, rows;
    uint64_t hits, misses;
    uint64_t invalidated; /* rows evicted because they changed */
    uint64_t dropped;     /* least recently used rows dropped to stay in bounds */
};
/* Enables (max_bytes > 0, replacing any earlier cache) or disables (0) the
 * cache. Call before the store is shared between threads. */
enum ims_status store_row_cache_set(struct store *store, size_t max_bytes, struct ims_error *err);
/* Evicts ids[0..n) from the cache; ids NULL evicts everything. No-op
 * without a cache. Thread-safe. */
void store_row_cache_evict(struct store *store, const int64_t *ids, size_t n);
/* Zeroes *out without a cache. Thread-safe. */
void store_row_cache_get_stats(struct store *store, struct store_row_cache_stats *out);

/* ---- copying a catalogue (imgsearch catalogue copy) ------------------------ */

/* One row read from another catalogue, with its thumbnail (NULL/0: none).
 * Borrowed for the call. */
struct store_restore_row {
    const struct store_image_row *row; /* with embedding (row->dim == the store's dim) */
    const void *thumbnail;
    size_t thumbnail_bytes;
};
/* Appends rows exactly as they were elsewhere (id, source, hash, sizes,
 * added, caption, metadata, model, embedding, thumbnail) in one transaction,
 * logging an insert change each. Ids must ascend and be larger than every id
 * this catalogue ever gave out: nothing is overwritten, no id reused
 * (IMS_ERR_EXISTS otherwise). A duplicate source or hash is IMS_ERR_INVALID;
 * either way nothing of the batch is stored. */
enum ims_status store_restore_many(struct store *store, const struct store_restore_row *rows,
                                   size_t n, struct ims_error *err);

/* ---- deletion log: how the derived index learns about deletions ----------
 *
 * Each deleted id is appended to a log with an increasing sequence number.
 * The index snapshot records (max_id covered, last deletion seq applied).
 * On load it removes every id of store_deleted_after(seq) and adds every
 * embedding of store_scan_embeddings(max_id). Deleting the row and removing
 * it from the live index happen in that order under the index's write lock,
 * so deletions reach the index in log order (docs/internals/store.md).
 */

/* The last deletion sequence number (0 if nothing was ever deleted). */
enum ims_status store_deleted_seq(struct store *store, int64_t *seq, struct ims_error *err);
/* Ids deleted with seq > after_seq (at most max_n, oldest first). On success
 * *ids (release with ims_free; NULL when *n is 0), *n and *last_seq (the seq
 * of the last id returned, or after_seq) are set. */
enum ims_status store_deleted_after(struct store *store, int64_t after_seq, size_t max_n,
                                    int64_t **ids, size_t *n, int64_t *last_seq,
                                    struct ims_error *err);

/* ---- change feed: how every index replica follows the catalogue -----------
 *
 * Every insert of an image row, every delete, every embedding replaced
 * (store_set_embeddings, store_replace_content: UPDATE) and every change of
 * a row that keeps its embedding (an imported row completed with its image
 * data, a thumbnail, tags, a synced rename: ROW, which nodes' row caches
 * evict and their indexes skip) appends one change (seq, id, kind) in the
 * same transaction. seq strictly increases, and commit order equals seq
 * order: once a reader has seen seq S, no change with seq < S can appear
 * later. A replica records the seq it covers and catches up by reading the
 * changes after it; the embeddings of inserted/updated ids come from
 * store_get_many(..., STORE_FIELD_EMBEDDING) (a row deleted meanwhile is
 * simply not found, and its DELETE change follows). The feed may be trimmed
 * (store_change_trim): a replica whose seq is below store_change_floor()
 * must rebuild from store_scan_embeddings(0) instead, re-adding the rows of
 * store_embeddings_changed_after(its seq) it already holds (schema v5).
 */

enum store_change_kind {
    STORE_CHANGE_INSERT = 1, /* a new row: add its embedding */
    STORE_CHANGE_DELETE = 2, /* the row is gone: remove the id */
    STORE_CHANGE_UPDATE = 3, /* the embedding was replaced: re-read the row, re-index it */
    STORE_CHANGE_ROW = 4,    /* the row changed, its embedding did not: evict cached copies */
};
/* "insert", "delete", "update", "row". */
const char *store_change_kind_name(enum store_change_kind k);

struct store_change {
    int64_t seq;
    int64_t id; /* image id */
    enum store_change_kind kind;
};

/* The newest committed change seq (0 if none ever). Cheap (one counter). */
enum ims_status store_change_seq(struct store *store, int64_t *seq, struct ims_error *err);
/* Up to max_n changes with seq > after_seq, oldest first, into out (caller's
 * array of max_n). *n gets how many (0: the replica is current). Fails with
 * IMS_ERR_NOT_FOUND ("rebuild") if after_seq < store_change_floor(). */
enum ims_status store_changes_after(struct store *store, int64_t after_seq, size_t max_n,
                                    struct store_change *out, size_t *n, struct ims_error *err);
/* Every change with seq > *floor is still in the feed; a replica covering a
 * seq >= floor can catch up, one below it must rebuild. 0 on an untrimmed
 * catalogue. */
enum ims_status store_change_floor(struct store *store, int64_t *floor, struct ims_error *err);
/* Drops the changes with seq <= upto (clamped to the newest seq) and raises
 * the floor to it: for replicas that all cover at least `upto`. */
enum ims_status store_change_trim(struct store *store, int64_t upto, struct ims_error *err);
/* The ids of live rows whose embedding was replaced (an UPDATE change) at a
 * seq > after_seq, ascending, in *ids (release with ims_free; NULL when
 * none) and *n, even when those changes were trimmed: what a replica that
 * fell below the floor at after_seq must re-add besides the ids it lacks.
 * May list more ids than needed (an id whose re-embedding the replica
 * already holds, every row of a catalogue migrated from v4 with a trimmed
 * feed), never fewer. */
enum ims_status store_embeddings_changed_after(struct store *store, int64_t after_seq,
                                               int64_t **ids, size_t *n, struct ims_error *err);
/* Waits until the newest committed seq is > known_seq or timeout_ms passes;
 * *seq_now gets the newest seq either way (IMS_OK in both cases). Sees
 * commits of other processes and nodes: PostgreSQL wakes on LISTEN/NOTIFY;
 * SQLite polls a cheap counter every STORE_WAIT_POLL_MS. Any number of
 * threads may wait at once. */
#define STORE_WAIT_POLL_MS 50
enum ims_status store_wait_change(struct store *store, int64_t known_seq, int timeout_ms,
                                  int64_t *seq_now, struct ims_error *err);

/* ---- ingest jobs ---------------------------------------------------------- */

enum store_job_state {
    STORE_JOB_QUEUED = 0,
    STORE_JOB_RUNNING,
    STORE_JOB_DONE,
    STORE_JOB_FAILED,
};
/* "queued", "running", "done", "failed" (the HTTP API's words). */
const char *store_job_state_name(enum store_job_state s);

struct store_job_error {
    char *url; /* owned by the job; never empty for item errors */
    char *code;  /* an ims_status name ("unsupported", "io", ...); "" if none */
    char *error;
};

struct store_job {
    char id[STORE_JOB_ID_MAX_BYTES + 1];
    enum store_job_state state;
    int64_t total, done, failed;
    int64_t created, updated;     /* unix seconds */
    int64_t n_errors_total;       /* every error reported, stored or not */
    int sealed;                   /* no more items will be added (item jobs) */
    int64_t n_items;              /* items added (item jobs; 0 for counter-only jobs) */
    size_t n_errors;              /* stored errors, <= STORE_JOB_MAX_ERRORS */
    struct store_job_error *errors; /* n_errors, in the order reported */
};
/* Frees the errors a job owns. Accepts NULL. */
void store_job_fini(struct store_job *job);

/* Creates job `id` (1..STORE_JOB_ID_MAX_BYTES printable ASCII), queued with
 * `total` items. IMS_ERR_EXISTS if the id is taken. */
enum ims_status store_job_create(struct store *store, const char *id, int64_t total,
                                 struct ims_error *err);
/* Sets state and counters. IMS_ERR_NOT_FOUND if the job does not exist. */
enum ims_status store_job_update(struct store *store, const char *id, enum store_job_state state,
                                 int64_t done, int64_t failed, struct ims_error *err);
/* Appends `n` job errors (urls[i], codes[i], errors[i]; borrowed, NULL
 * reads as ""; codes may be NULL: no codes). codes[i] is an ims_status name
 * ("internal", "io", ...), as item errors carry. Past STORE_JOB_MAX_ERRORS
 * stored they are only counted. Strings are truncated to
 * STORE_JOB_ERROR_MAX_BYTES. */
enum ims_status store_job_add_errors(struct store *store, const char *id, const char *const *urls,
                                     const char *const *codes, const char *const *errors, size_t n,
                                     struct ims_error *err);
/* Reads a job with its stored errors. On success release with store_job_fini(). */
enum ims_status store_job_get(struct store *store, const char *id, struct store_job *job,
                              struct ims_error *err);
/* After a restart: every queued or running job WITHOUT items (a
 * counter-only job, driven by store_job_update) becomes failed, with the error
 * "interrupted by restart". Item jobs are left alone: their items stay
 * queued or leased and are claimed again. *n (optional) gets how many. */
enum ims_status store_job_fail_unfinished(struct store *store, int64_t *n, struct ims_error *err);

/* ---- shared ingest: job items claimed by any node --------------------------
 *
 *     store_job_create(store, "j1", 0, &err);            // total grows with items
 *     store_job_add_items(store, "j1", urls, 1000, &err); // as often as needed
 *     store_job_seal(store, "j1", &err);                  // no more items
 *     // on every node with ingest capacity:
 *     store_job_claim(store, "node-a", 16, 30000, &items, &n, &err);
 *     ... download, encode, store_insert_many ...
 *     store_job_finish(store, "node-a", results, n, accepted, &err);
 *     store_job_items_free(items, n);
 *
 * An item is queued, claimed (by a node, until lease_until), done or failed.
 * store_job_claim takes queued items and claimed items whose lease expired,
 * oldest first over every job. A job is "running" from its first claim and
 * becomes done once it is sealed and every
 * item finished; its done/failed counters and errors are updated in the same
 * transaction as the items, so any node reading it sees the same progress.
 * A finish or renew by a node that no longer holds the item's claim is
 * ignored: the item is being redone elsewhere and is never counted twice.
 * Lease times come from the catalogue's clock (the PostgreSQL server's
 * clock; the local clock for SQLite). */

#define STORE_NODE_ID_MAX_BYTES 128
#define STORE_JOB_CLAIM_MAX 10000

enum store_item_state {
    STORE_ITEM_QUEUED = 0,
    STORE_ITEM_CLAIMED,
    STORE_ITEM_DONE,
    STORE_ITEM_FAILED,
};

/* Appends items (sources[i], 1..STORE_SOURCE_MAX_BYTES bytes) to job `id`
 * in one transaction; total grows by n. IMS_ERR_NOT_FOUND (no job),
 * IMS_ERR_INVALID (sealed, or a bad source: nothing added). */
enum ims_status store_job_add_items(struct store *store, const char *id, const char *const *sources,
                                    size_t n, struct ims_error *err);
/* Marks job `id` complete: no more items. A job whose items are all
 * finished becomes done at once. Idempotent. (A job is "done" when it ran,
 * whatever its items' outcomes, which its done/failed counters and errors
 * tell, as before jobs were rows; "failed" is for a job that could not run,
 * e.g. its items could not be written.) */
enum ims_status store_job_seal(struct store *store, const char *id, struct ims_error *err);

/* A claimed item, owned by the array store_job_claim returns. */
struct store_job_item {
    int64_t item_id;                        /* catalogue-wide */
    char job_id[STORE_JOB_ID_MAX_BYTES + 1];
    int64_t index;                          /* 0-based position in its job */
    char *source;
    int attempts;                           /* claims so far, this one included */
};
/* Claims up to max_n (1..STORE_JOB_CLAIM_MAX) items for node_id (1..
 * STORE_NODE_ID_MAX_BYTES printable ASCII) for lease_ms (>= 1) from now, in
 * one transaction. *items (release with store_job_items_free; NULL when *n
 * is 0) and *n are set. */
enum ims_status store_job_claim(struct store *store, const char *node_id, size_t max_n,
                                int64_t lease_ms, struct store_job_item **items, size_t *n,
                                struct ims_error *err);
void store_job_items_free(struct store_job_item *items, size_t n);
/* Extends the lease of the items node_id still holds to now + lease_ms.
 * renewed (optional, n entries) says which were. */
enum ims_status store_job_renew(struct store *store, const char *node_id, const int64_t *item_ids,
                                size_t n, int64_t lease_ms, uint8_t *renewed,
                                struct ims_error *err);

/* At a node's start: the items an earlier run under the same node_id still
 * holds (it crashed or was killed) are released at once -- their leases
 * expire now, so they are claimed again without waiting for them to lapse.
 * Only for a node id no other running process uses. *n (optional) gets how
 * many. */
enum ims_status store_job_release_node(struct store *store, const char *node_id, int64_t *n,
                                       struct ims_error *err);

enum store_item_outcome {
    STORE_ITEM_ADDED = 0,  /* image_id is the new (or completed) row */
    STORE_ITEM_DUPLICATE,  /* image_id is the existing row */
    STORE_ITEM_ERROR,      /* code + error say why */
};
/* What became of one claimed item. Strings are borrowed. */
struct store_item_result {
    int64_t item_id;
    enum store_item_outcome outcome;
    int64_t image_id;  /* ADDED / DUPLICATE */
    const char *code;  /* ERROR: an ims_status name, e.g. "unsupported" */
    const char *error; /* ERROR: the message (cut to STORE_JOB_ERROR_MAX_BYTES) */
};
/* Records results in one transaction: items node_id still holds become
 * done/failed, their jobs' counters, errors (url = the item's source) and
 * states follow. Items node_id does not hold are ignored; accepted
 * (optional, n entries) says which counted. */
enum ims_status store_job_finish(struct store *store, const char *node_id,
                                 const struct store_item_result *results, size_t n,
                                 uint8_t *accepted, struct ims_error *err);
/* store_insert_many and the store_job_finish of the job items those rows
 * came from, in ONE transaction on PostgreSQL (on SQLite: one after the
 * other): item_ids[i] > 0 is the item row i came from (0: none). Such an
 * item is recorded as ADDED (row inserted or completed) or DUPLICATE, with
 * the row's id, if node_id still holds it (ignored otherwise, as in
 * store_job_finish). Results and errors as store_insert_many. */
enum ims_status store_insert_finish(struct store *store, const struct store_new_image *rows,
                                    size_t n, struct store_insert_result *results,
                                    const char *node_id, const int64_t *item_ids,
                                    struct ims_error *err);
/* What a finished item reported (ADDED, DUPLICATE or ERROR). A redone item
 * (claimed again after its node died) that finds the row an earlier attempt
 * of its own committed -- same source, added since its job was created, no
 * other item reporting it added -- is recorded as ADDED, not as a duplicate
 * of itself. IMS_ERR_NOT_FOUND (no such item), IMS_ERR_BUSY (not finished). */
enum ims_status store_job_item_outcome(struct store *store, int64_t item_id,
                                       enum store_item_outcome *outcome, struct ims_error *err);
/* Reads item `item_id` (for tests and diagnostics): its state, the node
 * holding it ("" if none), attempts and image id (0 if none). */
enum ims_status store_job_item_get(struct store *store, int64_t item_id,
                                   enum store_item_state *state, char *node, size_t node_cap,
                                   int *attempts, int64_t *image_id, struct ims_error *err);

#ifdef __cplusplus
}
#endif
#endif
