/* SPDX-License-Identifier: MIT */
/*
 * sync_int.h: what sync.c (one sync) offers watch.c (the watcher): the sync
 * with a callback for every folder it walks, so the watcher adds an inotify
 * watch to each (new subfolders included) during the same walk.
 */
#ifndef IMGSEARCH_SYNC_INT_H
#define IMGSEARCH_SYNC_INT_H

#include "imgsearch/sync.h"

typedef void sync__dir_fn(void *ctx, const char *dir);

/* sync_folder, calling on_dir (may be NULL) with each folder walked, the
 * root first. */
enum ims_status sync__folder(const struct ingest_deps *deps, const struct ingest_options *io,
                             const char *folder, const atomic_int *cancel, sync__dir_fn *on_dir,
                             void *dir_ctx, struct sync_summary *sum, struct ims_error *err);

#endif
