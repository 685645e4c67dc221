/* SPDX-License-Identifier: MIT */
/*
 * cli_follow.h: keeps a command's in-memory index in step with the
 * catalogue's change feed, up to a given seq: what `serve` and `add` wire
 * as ingest's after_commit hook (ingest.h) until the replica module takes
 * over that job. Thread-safe (one mutex).
 */
#ifndef IMGSEARCH_CLI_FOLLOW_H
#define IMGSEARCH_CLI_FOLLOW_H

#include <pthread.h>

#include "imgsearch/index.h"
#include "imgsearch/store.h"

struct cli_follow {
    struct store *store;
    struct vindex *index;
    pthread_mutex_t mu;
    int64_t seq; /* the index shows every change up to here */
};

/* Starts following from the catalogue's current seq (the index must already
 * cover the catalogue, as cli_app_open leaves it). */
enum ims_status cli_follow_init(struct cli_follow *f, struct store *store, struct vindex *index,
                                struct ims_error *err);
void cli_follow_fini(struct cli_follow *f);
/* ingest_after_commit_fn: applies the changes up to `seq` to the index. */
enum ims_status cli_follow_sync(void *user, int64_t seq, struct ims_error *err);

#endif
