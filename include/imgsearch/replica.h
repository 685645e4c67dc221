/* SPDX-License-Identifier: MIT */
/*
 * replica.h: a node's vector index kept in step with the catalogue.
 *
 * The catalogue (store.h) is the source of truth; the index (index.h) is
 * derived from it. A replica owns both for one process: it opens the
 * catalogue and checks the model, reads the data folder's index
 * configuration (index.spec), loads the index snapshot (index.snap) or
 * builds the index from the catalogue, brings it up to date, and on close
 * writes a new snapshot -- but never over one that covers more of the
 * catalogue than the index being written (issue 8 item 5: no automatic
 * action replaces data with less).
 *
 *     struct replica_options o;
 *     replica_options_default(&o);
 *     o.data_dir = "data";
 *     o.model_name = "openai/clip-vit-base-patch32";  // NULL: the catalogue's own
 *     o.dim = 512;
 *     struct replica *r = NULL;
 *     struct ims_error err = {0};
 *     if (replica_open(&o, &r, &err) != IMS_OK)
 *         die(err.message);                 // e.g. IMS_ERR_MODEL_MISMATCH
 *     search_engine_new(model, replica_store(r), replica_index(r), ...);
 *     ...                                   // another process adds rows
 *     replica_catch_up(r, &err);            // the index sees them
 *     replica_save(r, &err);                // snapshot (or keeps a fuller one)
 *     replica_close(r);
 *
 * Files in the data folder (docs/internals/replica.md):
 *   catalogue.db   the SQLite catalogue (store module)
 *   index.snap     the index snapshot (index module's format)
 *   index.spec     the index type ("Flat" when absent) on its first line,
 *                  then optional "nprobe N", "ef_search N", "rerank N"
 *
 * Threading: replica_store() and replica_index() are thread-safe objects
 * (see their headers) and may be used by any number of threads while the
 * replica is open. replica_catch_up() and replica_save() may be called from
 * any thread; catch-ups are serialised by the replica. Open and close are
 * not thread-safe: nothing else may use the replica during them.
 *
 * Results: functions return a status; out-parameters are set only on
 * success; a precise message goes into the optional `err`.
 */
#ifndef IMGSEARCH_REPLICA_H
#define IMGSEARCH_REPLICA_H

#include <stddef.h>
#include <stdint.h>

#include "imgsearch/base.h"
#include "imgsearch/index.h"
#include "imgsearch/store.h"

#ifdef __cplusplus
extern "C" {
#endif

struct replica;

#define REPLICA_SPEC_MAX 256

struct replica_options {
    /* The data folder: catalogue.db, index.snap and index.spec. Required. */
    const char *data_dir;
    /* The model the caller computes embeddings with (name borrowed). NULL:
     * open with whatever model the catalogue records (commands that never
     * embed: stats, rm, reindex, import). */
    const char *model_name;
    uint32_t dim;
    /* store_open flags (STORE_OPEN_SYNC_NORMAL for benchmarks). */
    unsigned store_flags;
    /* 0: open the catalogue only (replica_index() is NULL). */
    int with_index;
    /* Threads one exact search may use; 0: min(cores, 4). */
    int n_search_threads;
};

/* Defaults: everything 0/NULL except with_index = 1. */
void replica_options_default(struct replica_options *o);

/* Opens the catalogue and (with_index) the index, brought up to date with
 * the catalogue: the snapshot if it is sound and of this type and size,
 * else a build from the catalogue; then the rows added and deleted since.
 * A snapshot that is missing, damaged or of another type costs a rebuild
 * (logged), never an error. Errors: those of store_open (with the data
 * folder named), IMS_ERR_INVALID (an index type that needs training on an
 * empty catalogue), IMS_ERR_NOMEM, IMS_ERR_IO. On success *out owns the
 * replica; release it with replica_close(). */
enum ims_status replica_open(const struct replica_options *o, struct replica **out,
                             struct ims_error *err);
/* Closes the index and the catalogue without writing a snapshot (call
 * replica_save() first for that). Accepts NULL. */
void replica_close(struct replica *r);

/* Borrowed, valid until replica_close(). replica_index() is NULL when
 * opened without the index. */
struct store *replica_store(struct replica *r);
struct vindex *replica_index(struct replica *r);
/* The catalogue's model (the one opened with, or the recorded one). */
const char *replica_model_name(struct replica *r);
uint32_t replica_dim(struct replica *r);
/* The folder's index configuration (index.spec). */
const char *replica_spec(struct replica *r);
void replica_search_params(struct replica *r, struct vindex_search_params *out);
const char *replica_data_dir(struct replica *r);
const char *replica_snapshot_path(struct replica *r);

/* Brings the index up to date with the catalogue: removes the ids deleted
 * since it was last brought up to date and adds the rows added since. If
 * the index then holds another number of vectors than the catalogue has
 * rows (another process wrote a snapshot that skipped some), it is rebuilt
 * in place. IMS_ERR_INVALID without an index. */
enum ims_status replica_catch_up(struct replica *r, struct ims_error *err);

/* Builds a new index of `spec` from the whole catalogue (training it on up
 * to 100000 catalogue vectors when the type needs it), with the folder's
 * search parameters left at the type's defaults. The replica's own index is
 * not touched. On success *out owns the new index (release with
 * vindex_free). */
enum ims_status replica_build(struct replica *r, const char *spec, struct vindex **out,
                              struct ims_error *err);

/* Records `spec` and `params` (NULL: none) as the folder's index
 * configuration, atomically. The running index keeps its type; the next
 * open uses the new one. */
enum ims_status replica_write_spec(struct replica *r, const char *spec,
                                   const struct vindex_search_params *params,
                                   struct ims_error *err);

/* Writes the index snapshot atomically, recording the catalogue position
 * the index covers -- unless the snapshot already on disk covers a later
 * position: then it is kept, a warning is logged and *written (optional)
 * is 0. IMS_ERR_INVALID without an
 * index. */
enum ims_status replica_save(struct replica *r, int *written, struct ims_error *err);

#ifdef __cplusplus
}
#endif
#endif
