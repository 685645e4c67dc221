/* SPDX-License-Identifier: MIT */
/*
 * ingest_int.h: what ingest.c (the pipeline) offers service.c (jobs).
 *
 * The dependency runs one way: service.c calls the pipeline; the pipeline
 * never calls service.c by name, only through the function pointers a
 * caller puts in struct ingest_hooks.
 */
#ifndef IMGSEARCH_INGEST_INT_H
#define IMGSEARCH_INGEST_INT_H

#include <stdatomic.h>

#include "imgsearch/ingest.h"

/* Counters a service keeps across jobs, updated by the pipeline's threads
 * (owned by ingest.c), and the caller's callback after each transaction. */
struct ingest_hooks {
    atomic_llong items_added, items_duplicate, items_failed, images_encoded;
    atomic_llong encode_ns;
    void (*committed)(void *ctx); /* after each transaction (wakes job waiters) */
    void *ctx;
};

/* ingest_run with service counters. */
enum ims_status ingest__run_hooked(const struct ingest_deps *deps,
                                   const struct ingest_options *opts, ingest_next_fn *next,
                                   void *next_ctx, const char *job_id, const atomic_int *cancel,
                                   struct ingest_hooks *hooks, struct ingest_summary *summary,
                                   struct ims_error *err);

/* Adds one image given as bytes (an upload) with a caller-provided context
 * (batch >= 1): decode, encode, commit, index. Fills *rep (outcome, id,
 * status) and, for a failed item, `msg`. Returns IMS_OK unless the
 * catalogue itself failed. */
enum ims_status ingest__add_bytes(const struct ingest_deps *deps, const struct ingest_options *o,
                                  struct clip_ctx *ctx, struct ingest_hooks *hooks,
                                  const char *source, const void *bytes, size_t n,
                                  struct ingest_item_report *rep, char *msg, size_t msg_cap);

#endif
