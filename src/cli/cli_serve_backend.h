/* SPDX-License-Identifier: MIT */
/*
 * cli_serve_backend.h: the backend `imgsearch serve` gives the server module
 * (struct server_backend over search, ingest, store and the replica), kept
 * apart from the command's option table and node start-up (cmd_serve.c) so
 * each file holds one lifetime: this one a running node's request path.
 * Private to the command line.
 */
#ifndef IMS_CLI_SERVE_BACKEND_H
#define IMS_CLI_SERVE_BACKEND_H

#include <stdatomic.h>
#include <stddef.h>

#include "cli_app.h"
#include "imgsearch/fetch.h"
#include "imgsearch/ingest.h"
#include "imgsearch/search.h"
#include "imgsearch/server.h"
#include "imgsearch/sync.h"

/* An immich model name and what embeds for it: the served model's engine
 * (model NULL) or a model folder loaded for it alone (an engine without a
 * catalogue: it only embeds). */
#define IMMICH_MODELS_MAX 16
struct immich_model {
    const char *name;           /* borrowed from argv */
    const char *dir;            /* NULL: the served model */
    struct clip_model *model;   /* owned; NULL for the served model */
    struct search_engine *se;   /* owned when model is */
};

struct app_backend {
    struct cli_app *app;
    struct search_engine *se; /* the handle's (imgsearch__engine); NULL until ready */
    struct ingest *ing;       /* NULL until ready */
    struct fetch_options fetch;
    struct immich_model immich[IMMICH_MODELS_MAX];
    size_t n_immich;
    atomic_int ready;         /* se and ing exist: the node serves */
    /* serve --watch FOLDER... (issue 10): folders kept in sync (sync.h) */
    const char *watch_dirs[SYNC_WATCH_MAX_ROOTS];
    size_t n_watch;
    struct sync_watch *watch;
    struct ingest_deps watch_deps;
    struct ingest_options watch_io;
};

/* Fills *be with the operations over b (b->app open; b->se and b->ing set
 * before b->ready is raised). */
void cli_serve_backend_ops(struct app_backend *b, struct server_backend *be);
/* serve --immich-ml: loads the model folders named by --immich-model
 * (b->immich); 0 or -1 with the reason printed. */
int cli_serve_immich_open(struct app_backend *b, const char *served_dir, int precision);
void cli_serve_immich_close(struct app_backend *b);

#endif
