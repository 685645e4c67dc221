/* SPDX-License-Identifier: MIT */
/*
 * cli_app.h: opening a data folder the way every command needs it: the
 * model, the catalogue, and the index derived from it (snapshot + catch-up,
 * or a rebuild), and closing it with a fresh snapshot.
 */
#ifndef IMGSEARCH_CLI_APP_H
#define IMGSEARCH_CLI_APP_H

#include "imgsearch/clip.h"
#include "imgsearch/fetch.h"
#include "imgsearch/index.h"
#include "imgsearch/store.h"

struct cli_app {
    struct clip_model *model; /* NULL when opened without a model */
    struct store *store;
    struct vindex *index;     /* NULL when opened without the index */
    char data_dir[4096];
    char snap_path[4200];
    char spec_path[4200];
    char spec[256];
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
    int precision;          /* enum clip_precision */
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
/* Saves the index snapshot (if `save_index` and the index is open) and
 * closes everything. Returns non-zero if the snapshot could not be written. */
int cli_app_close(const char *cmd, struct cli_app *app, int save_index);

/* Brings the index up to date with the catalogue: removes deleted ids, adds
 * rows after the index's last id. */
enum ims_status cli_app_index_catch_up(struct cli_app *app, struct ims_error *err);
/* Builds a new index of `spec` from the whole catalogue (training it on the
 * catalogue's embeddings when the type needs it). On success *out owns it. */
enum ims_status cli_app_index_build(struct cli_app *app, const char *spec, struct vindex **out,
                                    struct ims_error *err);
/* Records `spec` and the search parameters as the folder's index
 * configuration (atomically): index.spec holds the spec on its first line,
 * then optional "nprobe N", "ef_search N", "rerank N" lines. */
enum ims_status cli_app_write_spec(struct cli_app *app, const char *spec,
                                   const struct vindex_search_params *params,
                                   struct ims_error *err);

#endif
