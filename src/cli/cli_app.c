/* SPDX-License-Identifier: MIT */
/*
 * cli_app.c: one data folder = catalogue (source of truth) + derived index.
 *
 * Files in the data folder:
 *   catalogue.db    the SQLite catalogue (store module)
 *   index.snap      the index snapshot (index module's format), covering
 *                   catalogue ids <= the last id recorded in it
 *   index.spec      the index type ("Flat" when absent), changed by reindex
 *
 * Opening: load the snapshot; if it is missing, corrupt, or of another type
 * or dimension, build a new index from the catalogue. Then catch up: remove
 * ids deleted since (the catalogue's deletion log; ids are never reused, so
 * removing an absent id is harmless), add rows with larger ids. A last check
 * compares the index's count with the catalogue's: if they differ (another
 * process wrote a snapshot that skipped rows), the index is rebuilt. So a
 * crash at any moment, or a damaged snapshot, costs a rebuild, never a row.
 */
#include "cli_app.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define SCAN_CHUNK 1024
#define TRAIN_MAX 100000

int cli_app_parse_common(int argc, char **argv, int *i, struct cli_app_options *o)
{
    const char *v;
    int r;
    if ((r = cli_opt_value(argc, argv, i, "--data", &v)) != 0) {
        if (r > 0)
            o->data_dir = v;
        return r;
    }
    if ((r = cli_opt_value(argc, argv, i, "--catalogue", &v)) != 0) {
        if (r > 0)
            o->catalogue = v;
        return r;
    }
    if ((r = cli_opt_value(argc, argv, i, "--model", &v)) != 0) {
        if (r > 0)
            o->model_dir = v;
        return r;
    }
    if ((r = cli_opt_value(argc, argv, i, "--precision", &v)) != 0) {
        if (r < 0)
            return r;
        if (!strcmp(v, "f32") || !strcmp(v, "fp32"))
            o->precision = CLIP_PRECISION_F32;
        else if (!strcmp(v, "bf16"))
            o->precision = CLIP_PRECISION_BF16;
        else
            return -1;
        return 1;
    }
    return 0;
}

const char *cli_app_catalogue(const struct cli_app_options *o)
{
    if (o->catalogue && o->catalogue[0])
        return o->catalogue;
    const char *e = getenv("IMGSEARCH_CATALOGUE");
    return e && e[0] ? e : NULL;
}

int cli_app_parse_fetch(int argc, char **argv, int *i, struct fetch_options *f)
{
    const char *v;
    long num;
    int r;
    if (!strcmp(argv[*i], "--allow-private-urls")) {
        f->allow_private = 1;
        return 1;
    }
    if ((r = cli_opt_value(argc, argv, i, "--in-flight", &v)) != 0) {
        if (r < 0 || cli_parse_long(v, 1, 1024, &num))
            return -1;
        f->max_in_flight = (int)num;
        return 1;
    }
    if ((r = cli_opt_value(argc, argv, i, "--max-bytes", &v)) != 0) {
        if (r < 0 || cli_parse_long(v, 1024, 1L << 32, &num))
            return -1;
        f->max_bytes = (size_t)num;
        return 1;
    }
    if ((r = cli_opt_value(argc, argv, i, "--fetch-timeout", &v)) != 0) {
        if (r < 0 || cli_parse_long(v, 1, 3600, &num))
            return -1;
        f->total_timeout_ms = num * 1000;
        return 1;
    }
    if ((r = cli_opt_value(argc, argv, i, "--stall-seconds", &v)) != 0) {
        if (r < 0 || cli_parse_long(v, 1, 3600, &num))
            return -1;
        f->low_speed_time_s = num;
        return 1;
    }
    if ((r = cli_opt_value(argc, argv, i, "--retries", &v)) != 0) {
        if (r < 0 || cli_parse_long(v, 0, 10, &num))
            return -1;
        f->max_retries = (int)num;
        return 1;
    }
    return 0;
}

static void read_spec(struct cli_app *app)
{
    char *data = NULL;
    size_t len = 0;
    snprintf(app->spec, sizeof(app->spec), "Flat");
    memset(&app->params, 0, sizeof(app->params));
    if (ims_file_read(app->spec_path, 4096, &data, &len, NULL) != IMS_OK)
        return;
    char *save = NULL;
    int first = 1;
    for (char *line = strtok_r(data, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
        while (*line == ' ')
            line++;
        if (first) {
            if (*line)
                snprintf(app->spec, sizeof(app->spec), "%s", line);
            first = 0;
            continue;
        }
        int v;
        if (sscanf(line, "nprobe %d", &v) == 1 && v > 0)
            app->params.nprobe = v;
        else if (sscanf(line, "ef_search %d", &v) == 1 && v > 0)
            app->params.ef_search = v;
        else if (sscanf(line, "rerank %d", &v) == 1 && v > 0)
            app->params.rerank = v;
        else if (*line)
            ims_log(IMS_LOG_WARN, "%s: ignoring unknown line '%s'", app->spec_path, line);
    }
    ims_free(data);
}

enum ims_status cli_app_write_spec(struct cli_app *app, const char *spec,
                                   const struct vindex_search_params *params,
                                   struct ims_error *err)
{
    struct vindex_search_params none = {0};
    if (!params)
        params = &none;
    char text[512];
    int n = snprintf(text, sizeof(text), "%s\n", spec);
    if (params->nprobe > 0)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "nprobe %d\n", params->nprobe);
    if (params->ef_search > 0)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "ef_search %d\n", params->ef_search);
    if (params->rerank > 0)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "rerank %d\n", params->rerank);
    enum ims_status st = ims_file_write_atomic(app->spec_path, text, (size_t)n, err);
    if (st == IMS_OK) {
        snprintf(app->spec, sizeof(app->spec), "%s", spec);
        app->params = *params;
    }
    return st;
}

/* ---- building and catching up ------------------------------------------------ */

struct add_ctx {
    struct vindex *vx;
    struct ims_error *err;
    enum ims_status st;
};

static int add_chunk(void *user, const int64_t *ids, const float *vectors, size_t n, uint32_t dim)
{
    (void)dim;
    struct add_ctx *c = user;
    c->st = vindex_add(c->vx, ids, vectors, n, c->err);
    return c->st != IMS_OK;
}

struct train_ctx {
    float *x;
    size_t n, cap;
    uint32_t dim;
};

static int collect_training(void *user, const int64_t *ids, const float *vectors, size_t n,
                            uint32_t dim)
{
    (void)ids;
    struct train_ctx *c = user;
    size_t take = IMS_MIN(n, c->cap - c->n);
    memcpy(c->x + c->n * dim, vectors, take * dim * sizeof(float));
    c->n += take;
    return c->n >= c->cap;
}

enum ims_status cli_app_index_build(struct cli_app *app, const char *spec, struct vindex **out,
                                    struct ims_error *err)
{
    struct vindex *vx = NULL;
    enum ims_status st = vindex_new(spec, (int)app->dim, &vx, err);
    if (st != IMS_OK)
        return st;
    if (vindex_needs_training(vx)) {
        int64_t count = 0;
        st = store_count(app->store, &count, err);
        if (st != IMS_OK)
            goto fail;
        struct train_ctx tc = {NULL, 0, (size_t)IMS_MIN(count, TRAIN_MAX), app->dim};
        if (tc.cap == 0) {
            st = ims_error_set(err, IMS_ERR_INVALID,
                               "index type %s needs training, and the catalogue is empty: add "
                               "images first, or use Flat",
                               spec);
            goto fail;
        }
        tc.x = ims_malloc(tc.cap * app->dim * sizeof(float));
        if (!tc.x) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for training vectors");
            goto fail;
        }
        st = store_scan_embeddings(app->store, 0, SCAN_CHUNK, collect_training, &tc, err);
        if (st == IMS_ERR_CANCELLED)
            st = IMS_OK; /* stopped once the sample was full */
        if (st == IMS_OK)
            st = vindex_train(vx, tc.x, tc.n, err);
        ims_free(tc.x);
        if (st != IMS_OK) {
            ims_error_prefix(err, "training %s on %zu catalogue vectors", spec, tc.n);
            goto fail;
        }
    }
    struct add_ctx ac = {vx, err, IMS_OK};
    st = store_scan_embeddings(app->store, 0, SCAN_CHUNK, add_chunk, &ac, err);
    if (st == IMS_ERR_CANCELLED)
        st = ac.st;
    if (st != IMS_OK)
        goto fail;
    *out = vx;
    return IMS_OK;
fail:
    vindex_free(vx);
    return st;
}

enum ims_status cli_app_index_catch_up(struct cli_app *app, struct ims_error *err)
{
    /* deletions: the whole log (ids are never reused, absent ids are ignored) */
    int64_t seq = 0;
    for (;;) {
        int64_t *ids = NULL, last = seq;
        size_t n = 0;
        enum ims_status st = store_deleted_after(app->store, seq, 4096, &ids, &n, &last, err);
        if (st != IMS_OK)
            return st;
        if (n)
            st = vindex_remove(app->index, ids, n, NULL, err);
        ims_free(ids);
        if (st != IMS_OK)
            return st;
        if (n < 4096)
            break;
        seq = last;
    }
    int64_t after = vindex_last_id(app->index);
    struct add_ctx ac = {app->index, err, IMS_OK};
    enum ims_status st = store_scan_embeddings(app->store, after < 0 ? 0 : after, SCAN_CHUNK,
                                               add_chunk, &ac, err);
    if (st == IMS_ERR_CANCELLED)
        st = ac.st;
    return st;
}

/* ---- open / close ---------------------------------------------------------------- */

static int open_index(const char *cmd, struct cli_app *app)
{
    struct ims_error err = {0};
    int64_t last_id = 0;
    enum ims_status st = vindex_load(app->snap_path, (int)app->dim, app->spec, &app->index,
                                     &last_id, &err);
    int rebuilt = 0;
    if (st != IMS_OK) {
        if (st != IMS_ERR_NOT_FOUND)
            ims_log(IMS_LOG_WARN, "index snapshot unusable (%s): rebuilding it from the catalogue",
                    ims_error_message(&err, st));
        st = cli_app_index_build(app, app->spec, &app->index, &err);
        if (st != IMS_OK)
            return cli_fail(cmd, "cannot build the %s index: %s", app->spec,
                            ims_error_message(&err, st));
        rebuilt = 1;
    } else {
        st = cli_app_index_catch_up(app, &err);
        if (st != IMS_OK)
            return cli_fail(cmd, "cannot update the index from the catalogue: %s",
                            ims_error_message(&err, st));
    }
    int64_t count = 0;
    st = store_count(app->store, &count, &err);
    if (st != IMS_OK)
        return cli_fail(cmd, "%s", ims_error_message(&err, st));
    if (!rebuilt && (int64_t)vindex_count(app->index) != count) {
        ims_log(IMS_LOG_WARN, "index holds %zu vectors, catalogue %lld rows: rebuilding",
                vindex_count(app->index), (long long)count);
        vindex_free(app->index);
        app->index = NULL;
        st = cli_app_index_build(app, app->spec, &app->index, &err);
        if (st != IMS_OK)
            return cli_fail(cmd, "cannot rebuild the index: %s", ims_error_message(&err, st));
    }
    return 0;
}

int cli_app_open(const char *cmd, const struct cli_app_options *o, struct cli_app *app)
{
    memset(app, 0, sizeof(*app));
    struct ims_error err = {0};
    enum ims_status st;
    const char *data = o->data_dir ? o->data_dir : cli_default_data_dir();
    snprintf(app->data_dir, sizeof(app->data_dir), "%s", data);
    snprintf(app->snap_path, sizeof(app->snap_path), "%s/index.snap", app->data_dir);
    snprintf(app->spec_path, sizeof(app->spec_path), "%s/index.spec", app->data_dir);

    if (o->with_model) {
        const char *mdir = o->model_dir ? o->model_dir : cli_default_model_dir();
        struct clip_model_params mp;
        clip_model_params_default(&mp);
        mp.precision = (enum clip_precision)o->precision;
        st = clip_model_load(mdir, &mp, &app->model, &err);
        if (st != IMS_OK) {
            cli_fail(cmd, "cannot load the model from %s: %s", mdir, ims_error_message(&err, st));
            if (st == IMS_ERR_NOT_FOUND || st == IMS_ERR_IO)
                fprintf(stderr, "  (fetch one with `imgsearch model fetch`, or point --model / "
                                "IMGSEARCH_MODEL at a Hugging Face CLIP folder)\n");
            return 1;
        }
        snprintf(app->model_name, sizeof(app->model_name), "%s", clip_model_name(app->model));
        app->dim = (uint32_t)clip_model_embed_dim(app->model);
        struct store_model_info mi = {app->model_name, app->dim};
        st = store_open_catalogue(cli_app_catalogue(o), app->data_dir, &mi, 0, &app->store, &err);
    } else {
        /* open with whatever model the folder records */
        /* open with whatever model the folder records: read the record,
         * then reopen as that model so embedding sizes are checked against it */
        struct store_model_info mi = {"(any)", 1};
        st = store_open_catalogue(cli_app_catalogue(o), app->data_dir, &mi,
                                  STORE_OPEN_ALLOW_MODEL_MISMATCH, &app->store, &err);
        if (st == IMS_OK)
            st = store_model_get(app->store, app->model_name, sizeof(app->model_name), &app->dim,
                                 &err);
        store_close(app->store);
        app->store = NULL;
        if (st == IMS_OK) {
            struct store_model_info rec = {app->model_name, app->dim};
            st = store_open_catalogue(cli_app_catalogue(o), app->data_dir, &rec, 0, &app->store,
                                      &err);
        }
    }
    if (st != IMS_OK) {
        if (store_catalogue_is_url(cli_app_catalogue(o)))
            cli_fail(cmd, "cannot open the catalogue: %s", ims_error_message(&err, st));
        else
            cli_fail(cmd, "cannot open the data folder %s: %s", app->data_dir,
                     ims_error_message(&err, st));
        cli_app_close(cmd, app, 0);
        return 1;
    }
    read_spec(app);
    if (o->with_index && open_index(cmd, app) != 0) {
        cli_app_close(cmd, app, 0);
        return 1;
    }
    if (app->index) {
        /* one query may use every core for the exact scan: latency is what a
         * user waits for, and the scan is memory-bound (docs/internals/index.md) */
        struct vindex_search_params sp = app->params;
        if (sp.n_threads <= 0)
            sp.n_threads = (int)IMS_MIN(IMS_MAX(sysconf(_SC_NPROCESSORS_ONLN), 1), 4);
        st = vindex_set_search_params(app->index, &sp, &err);
        if (st != IMS_OK)
            ims_log(IMS_LOG_WARN, "%s: %s", app->spec_path, ims_error_message(&err, st));
    }
    return 0;
}

int cli_app_close(const char *cmd, struct cli_app *app, int save_index)
{
    int rc = 0;
    if (save_index && app->index && app->store) {
        struct ims_error err = {0};
        int64_t last = vindex_last_id(app->index);
        enum ims_status st = vindex_save(app->index, app->snap_path, last < 0 ? 0 : last, &err);
        if (st != IMS_OK) {
            cli_fail(cmd, "cannot write the index snapshot (it will be rebuilt next time): %s",
                     ims_error_message(&err, st));
            rc = 1;
        }
    }
    vindex_free(app->index);
    store_close(app->store);
    clip_model_free(app->model);
    memset(app, 0, sizeof(*app));
    return rc;
}
