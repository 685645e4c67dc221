/* SPDX-License-Identifier: MIT */
/*
 * cli_app.c: the command line's side of a data folder: the options every
 * command shares, the CLIP model, and messages. What a data folder holds and
 * how its index is kept in step with its catalogue is the replica module's
 * (include/imgsearch/replica.h); this file only loads the model, calls it
 * and reports.
 */
#include "cli_app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

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

enum ims_status cli_app_write_spec(struct cli_app *app, const char *spec,
                                   const struct vindex_search_params *params,
                                   struct ims_error *err)
{
    enum ims_status st = replica_write_spec(app->replica, spec, params, err);
    if (st == IMS_OK) {
        snprintf(app->spec, sizeof(app->spec), "%s", replica_spec(app->replica));
        replica_search_params(app->replica, &app->params);
    }
    return st;
}

enum ims_status cli_app_index_build(struct cli_app *app, const char *spec, struct vindex **out,
                                    int64_t *seq, struct ims_error *err)
{
    return replica_build(app->replica, spec, out, seq, err);
}

enum ims_status cli_app_index_catch_up(struct cli_app *app, struct ims_error *err)
{
    return replica_catch_up(app->replica, err);
}

int cli_app_open(const char *cmd, const struct cli_app_options *o, struct cli_app *app)
{
    memset(app, 0, sizeof(*app));
    struct ims_error err = {0};
    enum ims_status st;
    struct replica_options ro;
    replica_options_default(&ro);
    ro.catalogue = cli_app_catalogue(o);
    /* with a shared catalogue the data folder is only a snapshot cache, and
     * only the one given: a default folder may cache another catalogue */
    ro.data_dir = o->data_dir                          ? o->data_dir
                  : store_catalogue_is_url(ro.catalogue) ? NULL
                                                         : cli_default_data_dir();
    ro.with_index = o->with_index;
    ro.defer_sync = o->defer_sync;
    ro.snapshot_interval_s = o->snapshot_interval_s;
    ro.feed_keep = o->feed_keep;
    ro.trim_interval_ms = o->trim_interval_ms;
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
        ro.model_name = clip_model_name(app->model);
        ro.dim = (uint32_t)clip_model_embed_dim(app->model);
    }
    st = replica_open(&ro, &app->replica, &err);
    if (st != IMS_OK) {
        cli_fail(cmd, "%s", ims_error_message(&err, st));
        cli_app_close(cmd, app, 0);
        return 1;
    }
    struct replica *r = app->replica;
    app->store = replica_store(r);
    app->index = replica_index(r);
    snprintf(app->data_dir, sizeof(app->data_dir), "%s", replica_data_dir(r));
    snprintf(app->snap_path, sizeof(app->snap_path), "%s", replica_snapshot_path(r));
    snprintf(app->spec, sizeof(app->spec), "%s", replica_spec(r));
    replica_search_params(r, &app->params);
    snprintf(app->model_name, sizeof(app->model_name), "%s", replica_model_name(r));
    app->dim = replica_dim(r);
    return 0;
}

int cli_app_close(const char *cmd, struct cli_app *app, int save_index)
{
    int rc = 0;
    if (save_index && app->replica && replica_index(app->replica) &&
        replica_data_dir(app->replica)[0]) {
        struct ims_error err = {0};
        /* the command's own writes are in the feed: cover them, so the
         * snapshot records the newest position */
        enum ims_status st = replica_catch_up(app->replica, &err);
        if (st != IMS_OK)
            ims_log(IMS_LOG_WARN, "%s", ims_error_message(&err, st));
        memset(&err, 0, sizeof(err));
        st = replica_save(app->replica, NULL, &err);
        if (st != IMS_OK) {
            cli_fail(cmd, "cannot write the index snapshot (it will be rebuilt next time): %s",
                     ims_error_message(&err, st));
            rc = 1;
        }
    }
    replica_close(app->replica);
    clip_model_free(app->model);
    memset(app, 0, sizeof(*app));
    return rc;
}

enum ims_status cli_app_after_commit(void *user, int64_t seq, struct ims_error *err)
{
    struct cli_app *app = user;
    return replica_sync(app->replica, seq, CLI_APP_SYNC_MS, err);
}
