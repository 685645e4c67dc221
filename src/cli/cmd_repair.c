/* SPDX-License-Identifier: MIT */
/*
 * cmd_repair.c: `imgsearch repair`: a new catalogue from the index snapshot
 * when catalogue.db is lost (missing, empty, unreadable, not a database).
 *
 * What comes back: one row per vector of index.snap, under the same id, with
 * its embedding, so search works as before. What does not: sources,
 * thumbnails, sizes, captions and metadata lived only in the catalogue; the
 * rows get the source "repair:ID" and metadata {"repaired": true, ...} so a
 * user (and `GET /api/v1/images/ID`) can tell them apart; `add` of the real
 * files later adds them as new rows (the repaired ones can then be removed).
 *
 * Never destroys the last copy: the snapshot is only read (vindex_load
 * verifies it whole, CRC included). The new catalogue is built in a temp
 * folder inside the data folder, closed (SQLite checkpoints its WAL into the
 * file), fsynced; only then the damaged files are renamed aside
 * (catalogue.db.damaged-TIME, never deleted) and the new file renamed into
 * place, and the folder fsynced. An interruption at any point leaves either
 * the old state or the new one, plus at worst a temp folder to remove.
 * The server must not be running on the folder meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_app.h"

const char cli_help_repair[] =
    "usage: imgsearch repair [--data DIR] [--model DIR]\n"
    "Rebuilds a lost or damaged catalogue (catalogue.db) from the index snapshot\n"
    "(index.snap): one row per stored vector, same id and embedding, so search works\n"
    "again. Sources and thumbnails are not in the snapshot and are lost: the rows get\n"
    "the source repair:ID and metadata {\"repaired\": true}. The snapshot is never\n"
    "modified; the damaged catalogue is kept as catalogue.db.damaged-TIME. Stop the\n"
    "server on the folder first. Does nothing when the catalogue opens.\n";

#define REPAIR_META "{\"repaired\":true,\"lost\":\"source, thumbnail, size, metadata\"}"

struct repair_ctx {
    struct store *store;
    struct ims_error *err;
    enum ims_status status;
    size_t done;
};

static int repair_chunk(void *user, const int64_t *ids, const float *vectors, size_t n, int dim)
{
    struct repair_ctx *c = user;
    struct store_new_image *rows = calloc(n, sizeof(*rows));
    struct store_insert_result *res = calloc(n, sizeof(*res));
    char (*src)[32] = calloc(n, sizeof(*src));
    if (!rows || !res || !src) {
        c->status = ims_error_set(c->err, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(src[i], sizeof(src[i]), "repair:%lld", (long long)ids[i]);
        rows[i].source = src[i];
        rows[i].metadata = REPAIR_META;
        rows[i].embedding = vectors + i * (size_t)dim;
        rows[i].dim = (uint32_t)dim;
        rows[i].id = ids[i];
    }
    c->status = store_insert_many(c->store, rows, n, res, c->err);
    if (c->status == IMS_OK)
        c->done += n;
out:
    free(rows);
    free(res);
    free(src);
    return c->status != IMS_OK;
}

static int fsync_path(const char *path, int dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Renames `data/name` to `data/name.damaged-STAMP` if it exists. */
static int move_aside(const char *data, const char *name, long long stamp, char *out, size_t cap)
{
    char from[4200];
    snprintf(from, sizeof(from), "%s/%s", data, name);
    snprintf(out, cap, "%s/%s.damaged-%lld", data, name, stamp);
    if (rename(from, out) == 0)
        return 1;
    return errno == ENOENT ? 0 : -1;
}

int cli_cmd_repair(int argc, char **argv)
{
    struct cli_app_options o = {0};
    for (int i = 1; i < argc; i++) {
        int r = cli_app_parse_common(argc, argv, &i, &o);
        if (r < 0)
            return cli_usage("repair", cli_help_repair, "bad or missing value for %s", argv[i]);
        if (r == 0)
            return cli_usage("repair", cli_help_repair, "unexpected argument '%s'", argv[i]);
    }
    const char *data = o.data_dir ? o.data_dir : cli_default_data_dir();
    const char *mdir = o.model_dir ? o.model_dir : cli_default_model_dir();
    char snap[4200], tmp[4200], built[4300], target[4200], aside[4400];
    snprintf(snap, sizeof(snap), "%s/index.snap", data);
    snprintf(target, sizeof(target), "%s/catalogue.db", data);
    struct ims_error err = {0};
    struct clip_model *model = NULL;
    struct vindex *vx = NULL;
    struct store *store = NULL;
    int rc = 1, made_tmp = 0;

    struct vindex_snapshot_info info;
    enum ims_status s = vindex_snapshot_info(snap, &info, &err);
    if (s != IMS_OK)
        return cli_fail("repair", "nothing to repair from: %s", ims_error_message(&err, s));
    struct clip_model_params mp;
    clip_model_params_default(&mp);
    s = clip_model_load(mdir, &mp, &model, &err);
    if (s != IMS_OK)
        return cli_fail("repair", "cannot load the model from %s: %s", mdir,
                        ims_error_message(&err, s));
    struct store_model_info mi = {clip_model_name(model), (uint32_t)clip_model_embed_dim(model)};
    if ((int)mi.dim != info.dim) {
        cli_fail("repair", "%s holds %d-dimensional vectors, the model %s makes %u: give the "
                           "folder's model with --model",
                 snap, info.dim, mi.name, mi.dim);
        goto out;
    }
    s = store_open(data, &mi, 0, &store, &err);
    if (s == IMS_OK) {
        fprintf(stderr, "imgsearch repair: the catalogue %s opens: nothing to repair\n", target);
        rc = 0;
        goto out;
    }
    if (s == IMS_ERR_MODEL_MISMATCH) {
        cli_fail("repair", "%s", ims_error_message(&err, s));
        goto out;
    }
    fprintf(stderr, "imgsearch repair: catalogue unusable (%s)\n", ims_error_message(&err, s));
    memset(&err, 0, sizeof(err));
    s = vindex_load(snap, info.dim, info.spec, &vx, NULL, &err);
    if (s != IMS_OK) {
        cli_fail("repair", "the snapshot cannot be used either: %s; nothing changed",
                 ims_error_message(&err, s));
        goto out;
    }

    snprintf(tmp, sizeof(tmp), "%s/.repair-XXXXXX", data);
    if (!mkdtemp(tmp)) {
        cli_fail("repair", "cannot create a temp folder in %s: %s", data, strerror(errno));
        goto out;
    }
    made_tmp = 1;
    snprintf(built, sizeof(built), "%s/catalogue.db", tmp);
    s = store_open(tmp, &mi, 0, &store, &err);
    if (s != IMS_OK) {
        cli_fail("repair", "cannot create the new catalogue: %s", ims_error_message(&err, s));
        goto out;
    }
    struct repair_ctx c = {store, &err, IMS_OK, 0};
    s = vindex_scan(vx, repair_chunk, &c, &err);
    if (s == IMS_ERR_CANCELLED)
        s = c.status;
    int64_t n_rows = 0;
    if (s == IMS_OK)
        s = store_count(store, &n_rows, &err);
    if (s == IMS_OK)
        s = store_check(store, &err);
    store_close(store); /* checkpoints the WAL into the file */
    store = NULL;
    if (s != IMS_OK) {
        cli_fail("repair", "rebuilding the rows failed: %s; nothing changed",
                 ims_error_message(&err, s));
        goto out;
    }
    char wal[4400];
    struct stat sb;
    snprintf(wal, sizeof(wal), "%s-wal", built);
    if ((stat(wal, &sb) == 0 && sb.st_size > 0) || fsync_path(built, 0) != 0) {
        cli_fail("repair", "the new catalogue %s could not be made durable; nothing changed",
                 built);
        goto out;
    }

    long long stamp = (long long)time(NULL);
    static const char *const parts[] = {"catalogue.db", "catalogue.db-wal", "catalogue.db-shm"};
    for (size_t i = 0; i < IMS_ARRAY_LEN(parts); i++) {
        int m = move_aside(data, parts[i], stamp, aside, sizeof(aside));
        if (m < 0) {
            cli_fail("repair", "cannot move %s/%s aside: %s; the new catalogue is at %s", data,
                     parts[i], strerror(errno), built);
            made_tmp = 0; /* keep it: the user may finish by hand */
            goto out;
        }
        if (m > 0)
            fprintf(stderr, "imgsearch repair: kept the damaged %s as %s\n", parts[i], aside);
    }
    if (rename(built, target) != 0) {
        cli_fail("repair", "cannot rename %s to %s: %s", built, target, strerror(errno));
        made_tmp = 0;
        goto out;
    }
    fsync_path(data, 1);
    printf("repaired %lld rows from %s (ids and embeddings kept)\n", (long long)n_rows, snap);
    fprintf(stderr,
            "imgsearch repair: recovered: every vector of the snapshot, under its id, so search "
            "works.\n"
            "  lost: sources, thumbnails, sizes and metadata (they lived only in the "
            "catalogue);\n"
            "  the rows read source \"repair:ID\" with metadata {\"repaired\": true}. Add the "
            "images again to restore them.\n");
    rc = 0;
out:
    if (made_tmp) {
        char p[4400];
        static const char *const left[] = {"catalogue.db", "catalogue.db-wal",
                                           "catalogue.db-shm"};
        for (size_t i = 0; i < IMS_ARRAY_LEN(left); i++) {
            snprintf(p, sizeof(p), "%s/%s", tmp, left[i]);
            unlink(p);
        }
        rmdir(tmp);
    }
    store_close(store);
    vindex_free(vx);
    clip_model_free(model);
    return rc;
}
