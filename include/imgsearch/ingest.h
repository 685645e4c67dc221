/* SPDX-License-Identifier: MIT */
/*
 * ingest.h: turning sources (URLs, files, folders) into catalogue rows,
 * through one staged pipeline; and jobs shared by every node of a catalogue.
 *
 *     struct ingest_deps deps = {model, store, sync_index, replica};
 *     struct ingest_options o;
 *     ingest_options_default(&o);
 *     o.allow_local_files = 1;                  // the CLI; never the server
 *     struct ingest_summary sum;
 *     ingest_run(&deps, &o, next_source, ctx, NULL, &sum, &err); // blocks until done
 *
 *     // or, in the server: jobs are catalogue rows (one row per item); any
 *     // node's runner claims items in batches with a lease
 *     struct ingest *ing;
 *     ingest_new(&deps, &o, &ing, &err);        // o.node_id, o.lease_ms, o.no_ingest
 *     char id[INGEST_JOB_ID_BYTES];
 *     ingest_submit(ing, urls, n, id, &err);    // item rows, streamed in chunks
 *     ingest_job_wait(ing, id, 30000, &job, &err);
 *     ingest_free(ing);                          // finishes what is in flight
 *
 * The index is not ingest's: after each committed transaction that added
 * rows, ingest calls deps->after_commit(user, seq) with a change seq that
 * covers them (store.h's change feed); the caller makes its index show them
 * (a replica catching up to seq) before returning. So when an item is
 * reported "added" (and when a job is seen done by ingest_job_wait, or an
 * upload answers) its row is searchable on this node.
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
 * Threading: see the DESIGN blocks in src/ingest/ingest.c and service.c.
 * ingest_run runs a whole pipeline and returns when it is done; an ingest
 * service runs one long-lived pipeline fed by claimed items; every function
 * of a service is thread-safe. The model and store are shared and must
 * outlive it.
 */
#ifndef IMGSEARCH_INGEST_H
#define IMGSEARCH_INGEST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "imgsearch/base.h"
#include "imgsearch/clip.h"
#include "imgsearch/fetch.h"
#include "imgsearch/image.h"
#include "imgsearch/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define INGEST_JOB_ID_BYTES 40

/* Called after a transaction that added rows, with a change seq that covers
 * them (store_change_seq read after the commit); returns once this node's
 * index shows every change up to seq. An error is logged (the rows are
 * stored; the index catches up later). Called from ingest's writer thread,
 * upload threads and job waiters, possibly at once. */
typedef enum ims_status ingest_after_commit_fn(void *user, int64_t seq, struct ims_error *err);

/* What the pipeline works with; borrowed, must outlive every ingest call. */
struct ingest_deps {
    const struct clip_model *model;
    struct store *store;
    ingest_after_commit_fn *after_commit; /* may be NULL: nothing to show rows in */
    void *after_commit_user;
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
    int64_t tag;          /* the job item id the source came with (0: none) */
    enum ingest_outcome outcome;
    int64_t id;
    enum ims_status status; /* IMS_OK, or (INGEST_FAILED) the fetcher's,
                               decoder's, encoder's or catalogue's status:
                               the machine-readable reason (ims_status_name) */
    const char *error;    /* INGEST_FAILED only: the same reason in words */
};

struct ingest_progress {
    int64_t total;        /* sources seen so far (grows while folders are walked) */
    int64_t done;         /* added + completed + duplicates */
    int64_t added, duplicates, failed;
    double elapsed_s;
    int sources_finished; /* every source has been read */
};

/* Called on the committing thread after each transaction, one call per item
 * of it (a source that could not even get memory for its item is reported
 * at once, from the thread reading sources); keep it short. */
typedef void ingest_item_fn(void *ctx, const struct ingest_item_report *r);
typedef void ingest_progress_fn(void *ctx, const struct ingest_progress *p);

#define INGEST_SERVICE_DECODE_NICE 10

struct ingest_options {
    struct fetch_options fetch;  /* downloads (fetch_options_default) */
    struct image_limits limits;  /* decoding (image_limits_default) */
    int allow_local_files;       /* 0: only URLs are accepted */
    int n_decode_threads;        /* 0: online CPUs */
    int batch_size;              /* images per encoder call (default 16) */
    int thumb_side;              /* longest side of thumbnails (256) */
    int thumb_quality;           /* JPEG quality (80) */
    enum image_decode_policy decode; /* IMAGE_DECODE_BOUNDED (default) or _EXACT */
    /* EXIF (issue 10): thumbnails are always shown upright; the embedded
     * image is too unless exif_orientation_ignore is set (then the
     * reference pipeline runs on the stored pixels, bit-exact with the
     * golden embeddings). keep_gps: store the GPS position in the row's
     * metadata (off by default: privacy). */
    int exif_orientation_ignore;
    int keep_gps;
    /* nice value of the decoder threads (0: the process's); the service
     * (ingest_new) uses INGEST_SERVICE_DECODE_NICE when 0, so that queries
     * in the same server get the CPU first. */
    int decode_nice;
    ingest_item_fn *on_item;     /* optional */
    ingest_progress_fn *on_progress; /* optional */
    void *cb_ctx;
    /* the service (ingest_new) only */
    const char *node_id;         /* this node in the catalogue's claims (NULL:
                                    "<hostname>-<pid>"; unique among running nodes) */
    long lease_ms;               /* a claim lasts this long unless renewed (30000) */
    int claim_batch;             /* items claimed at once (16) */
    long poll_ms;                /* idle: look for queued items this often (500) */
    int max_attempts;            /* an item claimed this often fails (5): a source
                                    that kills nodes does not kill them all */
    int no_ingest;               /* 1: never claim items (a query-only node);
                                    submissions still create the job rows */
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

/* How a folder walk (ingest's, the folder sync's) takes files: by name
 * (.jpg .jpeg .jpe .png .webp .gif .bmp .heic .heif .avif .tif .tiff, any
 * case), or, for a name without one, by the first bytes of the file
 * (image_sniff). */
int ingest_name_is_image(const char *name);
int ingest_file_sniffs_as_image(const char *path);

/* Runs sources to the end on the calling thread (plus the pipeline's
 * threads), without a job row (the CLI's `add`). Returns IMS_OK when it ran
 * (items may have failed: see the summary); an error when it could not run
 * or the catalogue failed. `cancel` (may be NULL) is polled: when it
 * becomes non-zero, no new source is read and what is in flight is committed. */
enum ims_status ingest_run(const struct ingest_deps *deps, const struct ingest_options *opts,
                           ingest_next_fn *next, void *next_ctx, const atomic_int *cancel,
                           struct ingest_summary *summary, struct ims_error *err);

/* ---- the service: job items claimed from the catalogue by every node ------ */

struct ingest;

/* Starts the runner (unless opts->no_ingest): it claims queued items of any
 * job, from any node, in batches with a lease, renews the leases while the
 * items are in flight and finishes them in the catalogue. Items of a node
 * that died (lease expired) are claimed again; a job interrupted by a
 * restart resumes. On success *out owns the service; release it with
 * ingest_free(). */
enum ims_status ingest_new(const struct ingest_deps *deps, const struct ingest_options *opts,
                           struct ingest **out, struct ims_error *err);
/* Stops claiming, lets what is in flight finish (committed and recorded),
 * hands back claimed items not started (their lease ends at once), joins
 * the threads. Accepts NULL. */
void ingest_free(struct ingest *ing);

/* Creates a job of `n` URLs (at most INGEST_JOB_MAX_SOURCES) as catalogue
 * rows, written in chunks, and writes its id. Any node with ingest (this
 * one too, unless no_ingest) runs it. */
#define INGEST_JOB_MAX_SOURCES 100000
enum ims_status ingest_submit(struct ingest *ing, const char *const *sources, size_t n,
                              char id[INGEST_JOB_ID_BYTES], struct ims_error *err);

/* A job's state, read from the catalogue (the same on every node).
 * On success release with store_job_fini(). */
enum ims_status ingest_job_get(struct ingest *ing, const char *id, struct store_job *job,
                               struct ims_error *err);
/* Waits until the job is done or failed, or timeout_ms passes (then
 * IMS_ERR_TIMEOUT), and returns its state like ingest_job_get. A finished
 * job's rows are searchable on this node when it returns (after_commit with
 * the catalogue's seq), whichever node encoded them. */
enum ims_status ingest_job_wait(struct ingest *ing, const char *id, long timeout_ms,
                                struct store_job *job, struct ims_error *err);

/* Adds one image given as bytes (an upload) on the calling thread: decode,
 * encode, commit, index; uploads are serialised with each other. `source`
 * names it in the catalogue (unique; duplicates by source or content are
 * reported as INGEST_DUPLICATE with the existing id). Fills *rep (source and
 * error fields are not set; rep->status says why an INGEST_FAILED item
 * failed) and, for INGEST_FAILED, `msg` with the reason in words.
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
    double catalogue_seconds; /* time inside catalogue calls of jobs and uploads
                                 (inserts, claims, renewals, finishes) */
};
void ingest_get_counters(struct ingest *ing, struct ingest_counters *out);
/* The node id this service claims items as (recorded as the item rows'
 * claimed_by). */
const char *ingest_node_id(const struct ingest *ing);

#ifdef __cplusplus
}
#endif
#endif
