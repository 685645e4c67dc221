/* SPDX-License-Identifier: MIT */
/*
 * cli_app.c: the command line's side of a data folder: the options every
 * command shares and messages. The folder is opened, and its snapshot
 * written, by libimgsearch (imgsearch__open, imgsearch_save: the library's
 * one path to the model, the catalogue and its index, whose keeping in step
 * is the replica module's); this file only chooses the options and reports.
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
    struct imgsearch__open_options lo;
    imgsearch__open_options_default(&lo);
    struct replica_options *ro = &lo.replica;
    ro->catalogue = cli_app_catalogue(o);
    /* with a shared catalogue the data folder is only a snapshot cache, and
     * only the one given: a default folder may cache another catalogue */
    ro->data_dir = o->data_dir                           ? o->data_dir
                   : store_catalogue_is_url(ro->catalogue) ? NULL
                                                           : cli_default_data_dir();
    ro->with_index = o->with_index;
    ro->defer_sync = o->defer_sync;
    ro->snapshot_interval_s = o->snapshot_interval_s;
    ro->feed_keep = o->feed_keep;
    ro->trim_interval_ms = o->trim_interval_ms;
    if (o->existing_only)
        ro->store_flags |= STORE_OPEN_EXISTING;
    const char *mdir = o->model_dir ? o->model_dir : cli_default_model_dir();
    if (o->with_model) {
        lo.model_dir = mdir;
        lo.model.precision = (enum clip_precision)o->precision;
    }
    /* the engine is the command's to ask for (search, serve): the others
     * never search */
    lo.with_engine = 0;
    lo.sync_ms = CLI_APP_SYNC_MS;
    int model_failed = 0;
    enum ims_status st = imgsearch__open(&lo, &app->is, &model_failed, &err);
    if (st != IMS_OK && model_failed) {
        cli_fail(cmd, "cannot load the model from %s: %s", mdir, ims_error_message(&err, st));
        if (st == IMS_ERR_NOT_FOUND || st == IMS_ERR_IO)
            fprintf(stderr, "  (fetch one with `imgsearch model fetch`, or point --model / "
                            "IMGSEARCH_MODEL at a Hugging Face CLIP folder)\n");
        return 1;
    }
    if (st != IMS_OK) {
        cli_fail(cmd, "%s", ims_error_message(&err, st));
        if (st == IMS_ERR_NOT_FOUND && o->existing_only)
            fprintf(stderr, "  (%s only reads a catalogue: create one with `imgsearch add`, or "
                            "check --data / --catalogue)\n", cmd);
        return 1;
    }
    struct replica *r = imgsearch__replica(app->is);
    app->model = imgsearch__model(app->is);
    app->replica = r;
    app->store = imgsearch__store(app->is);
    app->index = replica_index(r);
    snprintf(app->data_dir, sizeof(app->data_dir), "%s", replica_data_dir(r));
    snprintf(app->snap_path, sizeof(app->snap_path), "%s", replica_snapshot_path(r));
    snprintf(app->spec, sizeof(app->spec), "%s", imgsearch__index_spec(app->is));
    replica_search_params(r, &app->params);
    snprintf(app->model_name, sizeof(app->model_name), "%s", imgsearch_model_name(app->is));
    app->dim = (uint32_t)imgsearch_dim(app->is);
    return 0;
}

int cli_app_close(const char *cmd, struct cli_app *app, int save_index)
{
    int rc = 0;
    if (save_index && app->is) {
        struct imgsearch_error err = {{0}};
        enum imgsearch_status st = imgsearch_save(app->is, &err);
        if (st != IMGSEARCH_OK) {
            cli_fail(cmd, "cannot write the index snapshot (it will be rebuilt next time): %s",
                     err.message[0] ? err.message : imgsearch_strerror(st));
            rc = 1;
        }
    }
    imgsearch_close(app->is);
    memset(app, 0, sizeof(*app));
    return rc;
}

enum ims_status cli_app_after_commit(void *user, int64_t seq, struct ims_error *err)
{
    struct cli_app *app = user;
    return imgsearch__after_commit(app->is, seq, err);
}
