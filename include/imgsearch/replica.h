/* SPDX-License-Identifier: MIT */
/*
 * replica.h: a node's vector index kept in step with the catalogue.
 *
 * The catalogue (store.h: SQLite in the data folder, or PostgreSQL shared by
 * many nodes) is the source of truth; the index (index.h) is derived from
 * it. A replica owns both for one process: it opens the catalogue and checks
 * the model, reads the data folder's index configuration (index.spec), loads
 * the index snapshot or builds the index from the catalogue, catches up by
 * the catalogue's change feed, follows it while running (a thread woken by
 * store_wait_change), and writes snapshots -- never over one that covers
 * more of the catalogue (issue 8 item 5: no automatic action replaces data
 * with less).
 *
 *     struct replica_options o;
 *     replica_options_default(&o);
 *     o.data_dir = "data";                         // NULL with a URL: no snapshot
 *     o.catalogue = NULL;                          // or "postgresql://u@host/db"
 *     o.model_name = "openai/clip-vit-base-patch32";  // NULL: the catalogue's own
 *     o.dim = 512;
 *     struct replica *r = NULL;
 *     struct ims_error err = {0};
 *     if (replica_open(&o, &r, &err) != IMS_OK)
 *         die(err.message);                 // e.g. IMS_ERR_MODEL_MISMATCH
 *     replica_follow_start(r, &err);        // other writers' rows appear by themselves
 *     search_engine_new(model, replica_store(r), replica_index(r), ...);
 *     ...
 *     store_insert_many(replica_store(r), ...);   // then, to see it at once:
 *     store_change_seq(replica_store(r), &seq, &err);
 *     replica_sync(r, seq, 5000, &err);
 *     ...
 *     replica_save(r, NULL, &err);          // snapshot (or keeps a fuller one)
 *     replica_close(r);
 *
 * Files in the data folder (docs/cluster.md, "what each node holds"):
 *   catalogue.db   the SQLite catalogue when no catalogue URL is given
 *   index.snap     the index snapshot (index module's format)
 *   index.seq      the change seq that snapshot covers (text)
 *   index.spec     the index type ("Flat" when absent) on its first line,
 *                  then optional "nprobe N", "ef_search N", "rerank N"
 *
 * Threading: the store and the index are thread-safe objects (see their
 * headers) and may be used by any number of threads while the replica is
 * open. replica_catch_up, replica_sync, replica_save, replica_ready and
 * replica_get_stats may be called from any thread; changes are applied by
 * one thread at a time, in seq order, each chunk of changes under the
 * index's write lock only for that chunk. Open and close are not
 * thread-safe: nothing else may use the replica during them.
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
    /* The data folder: index.snap, index.seq, index.spec, and catalogue.db
     * when `catalogue` is not a URL. May be NULL only with a catalogue URL:
     * then there is no snapshot (the index is built at every start) and the
     * index type is Flat. */
    const char *data_dir;
    /* NULL or "": the data folder's SQLite catalogue; "postgresql://...":
     * a shared catalogue (store_open_catalogue). */
    const char *catalogue;
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
    /* 0: replica_open builds and catches up before it returns. 1: it returns
     * at once and the follower thread (replica_follow_start) does it;
     * replica_index() is NULL and replica_ready() 0 until it is done. */
    int defer_sync;
    /* The follower's longest sleep between two looks at the catalogue
     * (it wakes earlier on a change); default 500 ms. Also bounds how long
     * replica_close waits for it. */
    int wait_ms;
    /* > 0: the follower writes a snapshot every this many seconds when the
     * index changed (needs a data folder). 0: only replica_save. */
    int snapshot_interval_s;
    /* Retention of the catalogue's change feed: > 0 keeps the newest
     * feed_keep changes; the follower trims the older ones every
     * trim_interval_ms (0: 60000). A node below the trimmed floor rebuilds
     * (replica_rebuild_live). 0: this node never trims. */
    int64_t feed_keep;
    int trim_interval_ms;
};

/* Defaults: everything 0/NULL except with_index = 1, wait_ms = 500. */
void replica_options_default(struct replica_options *o);

/* Opens the catalogue and (with_index) the index, brought up to date with
 * the catalogue (unless defer_sync): the snapshot if it is sound, of this
 * type and size, and records a change seq the feed still has; else a build
 * from the catalogue; then the changes after it. If the index then holds
 * another number of vectors than the catalogue has rows, it is rebuilt
 * once. A snapshot that is missing, damaged, of another type or of another
 * catalogue costs a rebuild (logged), never an error. Errors: those of
 * store_open_catalogue (with the data folder or "the catalogue" named),
 * IMS_ERR_INVALID (no data folder and no URL; an index type that needs
 * training on an empty catalogue), IMS_ERR_NOMEM, IMS_ERR_IO. On success
 * *out owns the replica; release it with replica_close(). */
enum ims_status replica_open(const struct replica_options *o, struct replica **out,
                             struct ims_error *err);
/* Stops the follower, closes the index and the catalogue without writing a
 * snapshot (call replica_save() first for that). Accepts NULL. */
void replica_close(struct replica *r);

/* Starts the follower thread: it finishes a deferred start (then the
 * replica is ready), and from then on applies every change other writers
 * commit, woken by store_wait_change, and writes periodic snapshots if
 * asked. */
enum ims_status replica_follow_start(struct replica *r, struct ims_error *err);

/* 1 once the index has caught up with the catalogue (at once without
 * defer_sync); 0 while it is being built. Never blocks. */
int replica_ready(struct replica *r);

/* Waits until the index covers change `seq` (store_change_seq after a
 * write), applying the changes itself if the follower has not yet: an
 * upload's answer returns once it is searchable. IMS_ERR_TIMEOUT when that
 * takes longer than timeout_ms (a start still building, a long catch-up),
 * IMS_ERR_INVALID if `seq` is beyond the catalogue's newest change. */
enum ims_status replica_sync(struct replica *r, int64_t seq, int timeout_ms,
                             struct ims_error *err);

struct replica_stats {
    int ready;
    int64_t seq;             /* change seq the index covers */
    int64_t catalogue_seq;   /* newest change seq seen in the catalogue */
    uint64_t changes_applied;
    uint64_t rebuilds;       /* builds from the whole catalogue */
    uint64_t follow_errors;  /* failed looks at the catalogue (it was unreachable, ...) */
    int behind_floor;        /* the feed was trimmed past the running index: the
                                follower is rebuilding it (the old one serves) */
    uint64_t trims;          /* retention trims this node applied */
};
void replica_get_stats(struct replica *r, struct replica_stats *out);

/* Borrowed, valid until replica_close(). replica_index() is NULL when
 * opened without the index, and until the replica is ready. */
struct store *replica_store(struct replica *r);
struct vindex *replica_index(struct replica *r);
/* The catalogue's model (the one opened with, or the recorded one). */
const char *replica_model_name(struct replica *r);
uint32_t replica_dim(struct replica *r);
/* The folder's index configuration (index.spec). */
const char *replica_spec(struct replica *r);
void replica_search_params(struct replica *r, struct vindex_search_params *out);
/* "" without a data folder. */
const char *replica_data_dir(struct replica *r);
const char *replica_snapshot_path(struct replica *r);

/* Applies every change the catalogue has after the index's position.
 * IMS_ERR_INVALID without an index, IMS_ERR_BUSY before the replica is
 * ready, IMS_ERR_NOT_FOUND if the feed was trimmed past the index's
 * position (then behind_floor is set: replica_rebuild_live). */
enum ims_status replica_catch_up(struct replica *r, struct ims_error *err);

/* Brings a running index whose position fell below the feed's floor (the
 * changes it missed were trimmed) back in step with the catalogue while it
 * keeps serving: the catalogue is scanned and compared with the index
 * untouched, then the difference (rows deleted meanwhile out, rows added
 * meanwhile in) is applied at once, the row cache emptied, and the feed
 * followed again from the seq read before the scan. Counts as a rebuild in
 * replica_stats; behind_floor drops to 0. The follower calls it by itself. */
enum ims_status replica_rebuild_live(struct replica *r, struct ims_error *err);

/* Builds a new index of `spec` from the whole catalogue (training it on up
 * to 100000 catalogue vectors when the type needs it), with the folder's
 * search parameters left at the type's defaults. The replica's own index is
 * not touched. On success *out owns the new index (release with
 * vindex_free) and *seq (optional) gets the change seq it covers. */
enum ims_status replica_build(struct replica *r, const char *spec, struct vindex **out,
                              int64_t *seq, struct ims_error *err);
/* Writes `vx` (covering change `seq`, from replica_build) as the data
 * folder's snapshot, with its index.seq: `imgsearch reindex`, an explicit
 * action, so no keep rule applies. */
enum ims_status replica_save_index(struct replica *r, struct vindex *vx, int64_t seq,
                                   struct ims_error *err);

/* Records `spec` and `params` (NULL: none) as the folder's index
 * configuration, atomically. The running index keeps its type; the next
 * open uses the new one. IMS_ERR_INVALID without a data folder. */
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
