/* SPDX-License-Identifier: MIT */
/*
 * ingest.h: turning sources (URLs, files, folders) into catalogue rows and
 * index entries, through one staged pipeline.
 *
 *     struct ingest_deps deps = {model, store, vx};
 *     struct ingest_options o;
 *     ingest_options_default(&o);
 *     o.allow_local_files = 1;                  // the CLI; never the server
 *     struct ingest_summary sum;
 *     ingest_run(&deps, &o, next_source, ctx, &sum, &err); // blocks until done
 *
 *     // or, in the server: a runner thread executing queued jobs in order
 *     struct ingest *ing;
 *     ingest_new(&deps, &o, &ing, &err);
 *     char id[INGEST_JOB_ID_BYTES];
 *     ingest_submit(ing, urls, n, id, &err);    // copies the URLs
 *     ingest_job_wait(ing, id, 30000, &job, &err);
 *     ingest_free(ing);                          // checkpoints the running job
 *
 * A source is an http(s) URL, a file or a folder (walked recursively; files
 * are taken by extension or by their magic bytes). Local paths are refused
 * unless allow_local_files (the HTTP API must not read the server's disk).
 * Every failure is recorded per item with a precise reason and never stops
 * the job. Duplicates (same source, or same content) are reported, not
 * stored twice. An item is "added" once its catalogue transaction commits;
 * it is searchable from then on (the index is derived from the catalogue
 * and rebuilt from it after a crash).
 *
 * Threading: see the DESIGN block in src/ingest/ingest.c. ingest_run runs a
 * whole pipeline and returns when it is done; an ingest service runs one job
 * at a time on its runner thread; every function of a service is
 * thread-safe. The model, store and index are shared and must outlive it.
 */
#ifndef IMGSEARCH_INGEST_H
#define IMGSEARCH_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "imgsearch/base.h"
#include "imgsearch/clip.h"
#include "imgsearch/fetch.h"
#include "imgsearch/image.h"
#include "imgsearch/index.h"
#include "imgsearch/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define INGEST_JOB_ID_BYTES 40

/* What the pipeline works with; borrowed, must outlive every ingest call. */
struct ingest_deps {
    const struct clip_model *model;
    struct store *store;
    struct vindex *index;
};

/* One finished item, for progress displays and "reported as added" lists. */
enum ingest_outcome {
    INGEST_ADDED = 0,    /* a new row (id) */
    INGEST_COMPLETED,    /* an imported row got its image data (id) */
    INGEST_DUPLICATE,    /* already in the catalogue (id of the existing row) */
    INGEST_FAILED,       /* error says why */
};
struct ingest_item_report {
    const char *source;   /* borrowed for the callback */
    enum ingest_outcome outcome;
    int64_t id;
    const char *error;    /* INGEST_FAILED only */
};

struct ingest_progress {
    int64_t total;        /* sources seen so far (grows while folders are walked) */
    int64_t done;         /* added + completed + duplicates */
    int64_t added, duplicates, failed;
    double elapsed_s;
    int sources_finished; /* every source has been read */
};

/* Called on the committing thread after each transaction, one call per item
 * of it; keep it short. */
typedef void ingest_item_fn(void *ctx, const struct ingest_item_report *r);
typedef void ingest_progress_fn(void *ctx, const struct ingest_progress *p);

struct ingest_options {
    struct fetch_options fetch;  /* downloads (fetch_options_default) */
    struct image_limits limits;  /* decoding (image_limits_default) */
    int allow_local_files;       /* 0: only URLs are accepted */
    int n_decode_threads;        /* 0: online CPUs */
    int batch_size;              /* images per encoder call (default 16) */
    int thumb_side;              /* longest side of thumbnails (256) */
    int thumb_quality;           /* JPEG quality (80) */
    /* EXIF (issue 10): thumbnails are always shown upright; the embedded
     * image is too unless exif_orientation_ignore is set (then the
     * reference pipeline runs on the stored pixels, bit-exact with the
     * golden embeddings). keep_gps: store the GPS position in the row's
     * metadata (off by default: privacy). */
    int exif_orientation_ignore;
    int keep_gps;
    ingest_item_fn *on_item;     /* optional */
    ingest_progress_fn *on_progress; /* optional */
    void *cb_ctx;
};
void ingest_options_default(struct ingest_options *o);

/* Produces sources one at a time: returns 1 and sets *source (owned by the
 * caller of next, valid until the next call), 0 at the end. Lets a job of a
 * million URLs stream from a file in bounded memory. */
typedef int ingest_next_fn(void *ctx, const char **source);

struct ingest_summary {
    int64_t total, added, duplicates, failed;
    double elapsed_s;
};

/* Runs one job to the end on the calling thread (plus the pipeline's
 * threads). `job_id` (may be NULL) records it in the catalogue's jobs table.
 * Returns IMS_OK when the job ran (items may have failed: see the summary);
 * an error when it could not run. `cancel` (may be NULL) is polled: when it
 * becomes non-zero, no new source is read and what is in flight is committed. */
enum ims_status ingest_run(const struct ingest_deps *deps, const struct ingest_options *opts,
                           ingest_next_fn *next, void *next_ctx, const char *job_id,
                           const volatile int *cancel, struct ingest_summary *summary,
                           struct ims_error *err);

/* ---- the service: queued jobs, one at a time, on a runner thread ---------- */

struct ingest;

/* Starts the runner. Jobs left queued/running by a previous process are
 * marked failed ("interrupted by restart"). On success *out owns the service;
 * release it with ingest_free(). */
enum ims_status ingest_new(const struct ingest_deps *deps, const struct ingest_options *opts,
                           struct ingest **out, struct ims_error *err);
/* Stops accepting jobs, stops the running job at its next commit (what was
 * in flight is committed), marks the unstarted ones failed, joins the
 * runner. Accepts NULL. */
void ingest_free(struct ingest *ing);

/* Queues a job of `n` URLs (copied; at most 100000) and writes its id. */
enum ims_status ingest_submit(struct ingest *ing, const char *const *sources, size_t n,
                              char id[INGEST_JOB_ID_BYTES], struct ims_error *err);

/* A job's state (from memory while it runs, else from the catalogue).
 * On success release with store_job_fini(). */
enum ims_status ingest_job_get(struct ingest *ing, const char *id, struct store_job *job,
                               struct ims_error *err);
/* Waits until the job is done or failed, or timeout_ms passes (then
 * IMS_ERR_TIMEOUT), and returns its state like ingest_job_get. */
enum ims_status ingest_job_wait(struct ingest *ing, const char *id, long timeout_ms,
                                struct store_job *job, struct ims_error *err);

/* Adds one image given as bytes (an upload) on the calling thread: decode,
 * encode, commit, index; uploads are serialised with each other. `source`
 * names it in the catalogue (unique; duplicates by source or content are
 * reported as INGEST_DUPLICATE with the existing id). Fills *rep (source and
 * error fields are not set) and, for INGEST_FAILED, `msg` with the reason.
 * Returns IMS_OK when the item was handled (even if it failed), an error when
 * the catalogue itself failed. */
enum ims_status ingest_add_bytes(struct ingest *ing, const char *source, const void *bytes,
                                 size_t n, struct ingest_item_report *rep, char *msg,
                                 size_t msg_cap, struct ims_error *err);

/* Counters for /metrics since the service started. */
struct ingest_counters {
    int64_t jobs, items_added, items_duplicate, items_failed;
    double encode_seconds; /* time spent in the image encoder */
    int64_t images_encoded;
};
void ingest_get_counters(struct ingest *ing, struct ingest_counters *out);

#ifdef __cplusplus
}
#endif
#endif
