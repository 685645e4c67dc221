/* SPDX-License-Identifier: MIT */
/*
 * sync.h: folders kept in sync with the catalogue (issue 10 item 6).
 *
 *     struct sync_summary sum;
 *     sync_folder(&deps, &ingest_opts, "/photos", NULL, &sum, &err);  // add --sync
 *
 *     struct sync_watch *w;                                            // serve --watch
 *     sync_watch_start(&deps, &ingest_opts, folders, n, NULL, &w, &err);
 *     ...  sync_watch_metrics(w, buf, cap);  ...
 *     sync_watch_stop(w);
 *
 * One sync of FOLDER (made absolute with realpath) compares the files under
 * it (recursive; dot-files, symbolic links and other non-regular files are
 * skipped; images by extension; a file without any extension by its first
 * bytes, until it has a row) with the
 * catalogue rows whose source lies under it (store_list_under):
 *   - a file without a row is added through the ingest pipeline, unless its
 *     content is that of a row whose file is gone: then that row is renamed
 *     (its source and file state updated, its embedding kept);
 *   - a file whose size and mtime equal the row's recorded file state is
 *     left alone WITHOUT being read;
 *   - otherwise the file is read and hashed: the same content only updates
 *     the recorded state; new content goes into the same row (same id,
 *     tags, caption; store_replace_content: embedding, hash, size, format,
 *     EXIF metadata and thumbnail replaced, an UPDATE in the change feed).
 *     If the new content is already another row's (the catalogue holds each
 *     content once), the file is counted a duplicate and its row keeps its
 *     id, tags and former content, its file state unknown so the next sync
 *     reads it again (a warning names both ids);
 *   - a row whose file is gone is deleted.
 * A FOLDER that does not exist (an unmounted disk) is an error and removes
 * nothing. One sync per catalogue runs at a time (store_sync_lock_try, across
 * processes and nodes): while another holds it, sync_folder returns
 * IMS_ERR_BUSY at once, having read and changed nothing; the watcher tries
 * again after rearm_ms. Every change goes through the catalogue and the caller's
 * after_commit hook (ingest.h), so the index shows it when the call returns.
 *
 * The planning step is a pure function (sync_plan) of the sorted rows and
 * the sorted listing, unit-tested on its own.
 *
 * Watching (sync_watch_*): one thread; inotify watches on every folder under
 * each root; any event marks the root dirty and it is synced again once no
 * event came for debounce_ms (an IN_Q_OVERFLOW rescans every root). A root
 * that is moved or deleted is disarmed (its rows are kept) and polled every
 * rearm_ms until a folder is at its path again, then re-armed and synced.
 * Linux only.
 */
#ifndef IMGSEARCH_SYNC_H
#define IMGSEARCH_SYNC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "imgsearch/base.h"
#include "imgsearch/ingest.h"
#include "imgsearch/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- planning (pure) ---------------------------------------------------------- */

/* One file of a folder listing. */
struct sync_file {
    const char *path; /* absolute */
    int64_t size, mtime_ns;
};

enum sync_action {
    SYNC_KEEP = 0, /* file and row, same size and mtime: nothing to read */
    SYNC_CHECK,    /* file and row, state differs or was never recorded: hash decides */
    SYNC_NEW,      /* a file without a row (added, or a renamed row's new path) */
    SYNC_GONE,     /* a row without a file (deleted, or renamed away) */
};
#define SYNC_NONE ((size_t)-1)
struct sync_step {
    enum sync_action action;
    size_t file; /* index into files, SYNC_NONE for SYNC_GONE */
    size_t row;  /* index into rows, SYNC_NONE for SYNC_NEW */
};

/* Joins rows (sorted by source, strcmp) with files (sorted by path, strcmp)
 * into one step per file and per row without a file, in path order. On
 * success *steps (release with ims_free; NULL when *n is 0) and *n are set.
 * IMS_ERR_INVALID if either input is not strictly sorted. */
enum ims_status sync_plan(const struct store_file_row *rows, size_t n_rows,
                          const struct sync_file *files, size_t n_files,
                          struct sync_step **steps, size_t *n, struct ims_error *err);

/* ---- one sync ------------------------------------------------------------------- */

struct sync_summary {
    int64_t files;      /* image files found under the folder */
    int64_t added;      /* new rows */
    int64_t changed;    /* rows given new content because their file's changed */
    int64_t renamed;    /* rows whose file moved (same content): source updated */
    int64_t removed;    /* rows whose file is gone */
    int64_t unchanged;  /* rows left as they were (content not read, or read and equal) */
    int64_t duplicates; /* files whose content another row already holds: not stored */
    int64_t failed;     /* files that could not be read, decoded or stored */
    int64_t files_read; /* files whose content this sync read and hashed (not counting
                           the ingest pipeline's own read of what it adds) */
    int64_t bytes_read;
    int64_t sniffed;    /* extensionless files without a row whose first bytes were read */
    double elapsed_s;
};

/* Syncs `folder` once (see above). `io` (NULL: defaults) drives the ingest
 * of new and changed files: its on_item/on_progress callbacks see them;
 * allow_local_files is implied. `cancel` (may be NULL) stops early: what was
 * committed stays. Returns IMS_OK when the sync ran (files may have failed:
 * see the summary). */
enum ims_status sync_folder(const struct ingest_deps *deps, const struct ingest_options *io,
                            const char *folder, const atomic_int *cancel,
                            struct sync_summary *sum, struct ims_error *err);

/* ---- watching ------------------------------------------------------------------- */

struct sync_watch_options {
    long debounce_ms; /* quiet time after the last event before a sync (500) */
    long rearm_ms;    /* how often a vanished root is looked for (1000) */
};
void sync_watch_options_default(struct sync_watch_options *o);

struct sync_watch;

/* Starts watching n folders (each must exist; made absolute) and syncs each
 * once on the watch thread at start. deps and io are borrowed and must
 * outlive the watch. On success *out owns it; stop with sync_watch_stop. */
#define SYNC_WATCH_MAX_ROOTS 64
enum ims_status sync_watch_start(const struct ingest_deps *deps,
                                 const struct ingest_options *io, const char *const *folders,
                                 size_t n, const struct sync_watch_options *o,
                                 struct sync_watch **out, struct ims_error *err);
/* Stops the thread (a sync in progress is cancelled: what it committed
 * stays) and frees everything. Accepts NULL. */
void sync_watch_stop(struct sync_watch *w);

/* Status of one watched root (copied). */
struct sync_watch_status {
    char folder[4096];
    int armed;             /* 1: watched; 0: the folder is gone, polled for */
    int64_t syncs;         /* syncs completed */
    int64_t events;        /* inotify events seen */
    int64_t overflows;     /* IN_Q_OVERFLOW seen (each forces a rescan) */
    int64_t rearms;        /* times the folder came back and was re-armed */
    int64_t deferred;      /* syncs put off because another sync held the catalogue */
    int64_t last_sync;     /* unix seconds of the last completed sync, 0: none */
    struct sync_summary last; /* what the last sync did */
    struct sync_summary total; /* summed over every sync */
};
/* Fills up to cap statuses; returns the number of roots. */
size_t sync_watch_status(struct sync_watch *w, struct sync_watch_status *out, size_t cap);
/* Appends the status as Prometheus text (imgsearch_watch_* series, one label
 * folder="..." per root) to buf (NUL-terminated, truncated to cap); returns
 * the length it needed. */
size_t sync_watch_metrics(struct sync_watch *w, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
