/* SPDX-License-Identifier: MIT */
/*
 * cli_app.h: opening a data folder the way every command needs it, through
 * libimgsearch (src/lib/libimgsearch_int.h: the model, then the replica,
 * imgsearch/replica.h: the catalogue and the index derived from it), and
 * closing it with a fresh snapshot (imgsearch_save). The fields below are
 * the handle and copies and borrowed pointers of its objects, for the
 * commands.
 */
#ifndef IMGSEARCH_CLI_APP_H
#define IMGSEARCH_CLI_APP_H

#include "imgsearch/clip.h"
#include "imgsearch/fetch.h"
#include "imgsearch/index.h"
#include "imgsearch/replica.h"
#include "imgsearch/store.h"
#include "libimgsearch_int.h"

struct cli_app {
    struct imgsearch *is;     /* libimgsearch's handle: owns all below */
    struct clip_model *model; /* NULL when opened without a model */
    struct replica *replica;  /* owns store and index */
    struct store *store;      /* borrowed from the replica */
    struct vindex *index;     /* borrowed; NULL when opened without the index */
    char data_dir[4096];
    char snap_path[4200];
    char spec[REPLICA_SPEC_MAX];
    struct vindex_search_params params; /* from index.spec; 0 = the index's default */
    char model_name[256];
    uint32_t dim;
};

struct cli_app_options {
    const char *data_dir;   /* NULL: cli_default_data_dir() */
    const char *catalogue;  /* --catalogue URL; NULL: $IMGSEARCH_CATALOGUE, else the
                               data folder's catalogue.db */
    const char *model_dir;  /* NULL: cli_default_model_dir() */
    int with_model;         /* load the CLIP model (else the folder's recorded model is used) */
    int with_index;         /* load/rebuild the index */
    int defer_sync;         /* replica_options.defer_sync: app->index stays NULL; the
                               follower builds it (serve) */
    int snapshot_interval_s; /* replica_options.snapshot_interval_s */
    int64_t feed_keep;       /* replica_options.feed_keep */
    int trim_interval_ms;    /* replica_options.trim_interval_ms */
    int precision;          /* enum clip_precision */
    int existing_only;      /* read-only commands: a missing data folder or catalogue is an
                               error, never created (STORE_OPEN_EXISTING) */
};

/* The catalogue URL in effect: --catalogue, else $IMGSEARCH_CATALOGUE, else
 * NULL (the data folder's SQLite catalogue). */
const char *cli_app_catalogue(const struct cli_app_options *o);

/* Parses the options every command shares (--data, --catalogue, --model,
 * --precision).
 * Returns 1 if argv[*i] was one of them (advancing *i), 0 if not, -1 on a
 * missing or bad value. */
int cli_app_parse_common(int argc, char **argv, int *i, struct cli_app_options *o);

/* Parses the download options `add` and `serve` share:
 *   --allow-private-urls, --in-flight N, --max-bytes N, --fetch-timeout SEC,
 *   --stall-seconds SEC, --retries N
 * Same return convention as cli_app_parse_common. */
int cli_app_parse_fetch(int argc, char **argv, int *i, struct fetch_options *f);
#define CLI_CATALOGUE_HELP                                                                         \
    "  --catalogue URL  the catalogue on PostgreSQL (postgresql://USER@HOST:PORT/DB; also\n"       \
    "                   IMGSEARCH_CATALOGUE) instead of the data folder's catalogue.db\n"
#define CLI_FETCH_HELP                                                                             \
    "download options: --allow-private-urls  --in-flight N (32)  --max-bytes N (20 MB)\n"       \
    "  --fetch-timeout SEC (30, per attempt)  --stall-seconds SEC (15)  --retries N (2)\n"

/* Opens everything; prints a precise error ("imgsearch <cmd>: ...") and
 * returns non-zero on failure. */
int cli_app_open(const char *cmd, const struct cli_app_options *o, struct cli_app *app);
/* Saves the index snapshot (if `save_index` and the index is open; a
 * snapshot covering more is kept, see replica_save) and closes everything.
 * Returns non-zero if the snapshot could not be written. */
int cli_app_close(const char *cmd, struct cli_app *app, int save_index);

/* replica_catch_up, replica_build and replica_write_spec (which see) on the
 * app's replica; write_spec also updates app->spec and app->params. */
enum ims_status cli_app_index_catch_up(struct cli_app *app, struct ims_error *err);
enum ims_status cli_app_index_build(struct cli_app *app, const char *spec, struct vindex **out,
                                    int64_t *seq, struct ims_error *err);
enum ims_status cli_app_write_spec(struct cli_app *app, const char *spec,
                                   const struct vindex_search_params *params,
                                   struct ims_error *err);

/* ingest's after_commit hook (ingest.h) with `user` = the cli_app: waits
 * (at most CLI_APP_SYNC_MS) until the replica shows every change up to
 * seq, applying them itself if its follower has not yet. */
#define CLI_APP_SYNC_MS 30000
enum ims_status cli_app_after_commit(void *user, int64_t seq, struct ims_error *err);

#endif
