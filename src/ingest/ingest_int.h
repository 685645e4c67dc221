/* SPDX-License-Identifier: MIT */
/*
 * ingest_int.h: what ingest.c (the pipeline) offers service.c (jobs).
 *
 * The dependency runs one way: service.c calls the pipeline; the pipeline
 * never calls service.c by name, only through the function pointers a
 * caller puts in struct ingest__source and struct ingest_hooks.
 */
#ifndef IMGSEARCH_INGEST_INT_H
#define IMGSEARCH_INGEST_INT_H

#include <stdatomic.h>

#include "imgsearch/ingest.h"

/* Where the pipeline's source stage reads from. next() returns 1 with
 * *source (valid until the next call) and *tag (0 or a job item id, handed
 * back in the item's report), 0 at the end, or -1 when nothing is there yet
 * (it may block up to wait_ms first; the stage then serves its downloads
 * and asks again). */
struct ingest__source {
    int (*next)(void *ctx, int wait_ms, const char **source, int64_t *tag);
    void *ctx;
};

/* Counters a service keeps across jobs, updated by the pipeline's threads
 * (owned by ingest.c), and the caller's callbacks. */
struct ingest_hooks {
    atomic_llong items_added, items_duplicate, items_failed, images_encoded;
    atomic_llong encode_ns;
    atomic_llong catalogue_ns; /* inside store calls: inserts, claims, finishes, renewals */
    /* after each transaction (its rows searchable here: after_commit ran),
     * with the reports of the group, on the writer thread; also on the
     * source thread for a source that could not get memory for its item.
     * recorded (NULL: none) marks the job items whose finish the insert's
     * own transaction already recorded (finish_node) */
    void (*finished)(void *ctx, const struct ingest_item_report *r, const uint8_t *recorded,
                     size_t n);
    void *ctx;
    /* set: the writer records the finish of job items (report tag > 0)
     * that became rows in the insert's transaction, under this node id
     * (store_insert_finish): no separate finish transaction for them */
    const char *finish_node;
};

/* Adds the seconds since t0 (ims_now()) to hooks->catalogue_ns (hooks may be NULL). */
void ingest__hooks_catalogue(struct ingest_hooks *h, double t0);

/* The pipeline over any source, with service counters (hooks may be NULL).
 * Returns like ingest_run. */
enum ims_status ingest__run_source(const struct ingest_deps *deps,
                                   const struct ingest_options *opts,
                                   const struct ingest__source *source, const atomic_int *cancel,
                                   struct ingest_hooks *hooks, struct ingest_summary *summary,
                                   struct ims_error *err);

/* Adds one image given as bytes (an upload) with a caller-provided context
 * (batch >= 1): decode, encode, commit, after_commit. Fills *rep (outcome,
 * id, status) and, for a failed item, `msg`. Returns IMS_OK unless the
 * catalogue itself failed. */
enum ims_status ingest__add_bytes(const struct ingest_deps *deps, const struct ingest_options *o,
                                  struct clip_ctx *ctx, struct ingest_hooks *hooks,
                                  const char *source, const void *bytes, size_t n,
                                  struct ingest_item_report *rep, char *msg, size_t msg_cap);

#endif
