/* SPDX-License-Identifier: MIT */
/*
 * replica.c: one data folder = catalogue (source of truth) + derived index.
 *
 * This is the library half of what every command does with a data folder
 * (curl's lib/tool split: the CLI parses options and prints, this file owns
 * the data). It used to live in src/cli/cli_app.c.
 *
 * Opening: load the snapshot; if it is missing, corrupt, or of another type
 * or dimension, build a new index from the catalogue. Then catch up: remove
 * ids deleted since (the catalogue's deletion log; ids are never reused, so
 * removing an absent id is harmless), add rows with larger ids. A last check
 * compares the index's count with the catalogue's: if they differ (another
 * process wrote a snapshot that skipped rows), the index is rebuilt. So a
 * crash at any moment, or a damaged snapshot, costs a rebuild, never a row.
 *
 * Saving never replaces a snapshot that covers more of the catalogue than
 * the index being written (its recorded position is later): a folder whose
 * catalogue was lost or replaced keeps the last copy of its vectors (issue 8
 * item 5).
 *
 * Locking: `mu` serialises catch-ups (two threads adding the same rows
 * would collide on ids); the index and the store lock themselves.
 */
#include "imgsearch/replica.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "replica_int.h"

#define SCAN_CHUNK 1024
#define TRAIN_MAX 100000
#define DELETED_CHUNK 4096

struct replica {
    struct store *store;
    struct vindex *index;   /* NULL when opened without it */
    char data_dir[4096];
    char snap_path[4200];
    char spec_path[4200];
    char spec[REPLICA_SPEC_MAX];
    struct vindex_search_params params; /* from index.spec; 0 = the type's default */
    char model_name[STORE_MODEL_NAME_MAX_BYTES];
    uint32_t dim;

    pthread_mutex_t mu;     /* serialises catch-ups; guards del_seq */
    int64_t del_seq;        /* deletion log position applied to the index */
};

void replica_options_default(struct replica_options *o)
{
    memset(o, 0, sizeof(*o));
    o->with_index = 1;
}

struct store *replica_store(struct replica *r) { return r->store; }
struct vindex *replica_index(struct replica *r) { return r->index; }
const char *replica_model_name(struct replica *r) { return r->model_name; }
uint32_t replica_dim(struct replica *r) { return r->dim; }
const char *replica_spec(struct replica *r) { return r->spec; }
void replica_search_params(struct replica *r, struct vindex_search_params *out)
{
    *out = r->params;
}
const char *replica_data_dir(struct replica *r) { return r->data_dir; }
const char *replica_snapshot_path(struct replica *r) { return r->snap_path; }

/* ---- index.spec ------------------------------------------------------------- */

static void read_spec(struct replica *r)
{
    char *data = NULL;
    size_t len = 0;
    snprintf(r->spec, sizeof(r->spec), "Flat");
    memset(&r->params, 0, sizeof(r->params));
    if (ims_file_read(r->spec_path, 4096, &data, &len, NULL) != IMS_OK)
        return;
    char *save = NULL;
    int first = 1;
    for (char *line = strtok_r(data, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
        while (*line == ' ')
            line++;
        if (first) {
            if (*line)
                snprintf(r->spec, sizeof(r->spec), "%s", line);
            first = 0;
            continue;
        }
        int v;
        if (sscanf(line, "nprobe %d", &v) == 1 && v > 0)
            r->params.nprobe = v;
        else if (sscanf(line, "ef_search %d", &v) == 1 && v > 0)
            r->params.ef_search = v;
        else if (sscanf(line, "rerank %d", &v) == 1 && v > 0)
            r->params.rerank = v;
        else if (*line)
            ims_log(IMS_LOG_WARN, "%s: ignoring unknown line '%s'", r->spec_path, line);
    }
    ims_free(data);
}

enum ims_status replica_write_spec(struct replica *r, const char *spec,
                                   const struct vindex_search_params *params,
                                   struct ims_error *err)
{
    struct vindex_search_params none = {0};
    if (!params)
        params = &none;
    IMS_RETURN_ERROR_IF(!spec || !*spec || strlen(spec) >= REPLICA_SPEC_MAX ||
                            strpbrk(spec, "\r\n"),
                        err, IMS_ERR_INVALID, "index type must be one line of 1..%d bytes",
                        REPLICA_SPEC_MAX - 1);
    char text[512];
    int n = snprintf(text, sizeof(text), "%s\n", spec);
    if (params->nprobe > 0)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "nprobe %d\n", params->nprobe);
    if (params->ef_search > 0)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "ef_search %d\n", params->ef_search);
    if (params->rerank > 0)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "rerank %d\n", params->rerank);
    enum ims_status st = ims_file_write_atomic(r->spec_path, text, (size_t)n, err);
    if (st == IMS_OK) {
        snprintf(r->spec, sizeof(r->spec), "%s", spec);
        r->params = *params;
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

enum ims_status replica_build(struct replica *r, const char *spec, struct vindex **out,
                              struct ims_error *err)
{
    struct vindex *vx = NULL;
    enum ims_status st = vindex_new(spec, (int)r->dim, &vx, err);
    if (st != IMS_OK)
        return st;
    if (vindex_needs_training(vx)) {
        int64_t count = 0;
        st = store_count(r->store, &count, err);
        if (st != IMS_OK)
            goto fail;
        struct train_ctx tc = {NULL, 0, (size_t)IMS_MIN(count, TRAIN_MAX), r->dim};
        if (tc.cap == 0) {
            st = ims_error_set(err, IMS_ERR_INVALID,
                               "index type %s needs training, and the catalogue is empty: add "
                               "images first, or use Flat",
                               spec);
            goto fail;
        }
        tc.x = ims_malloc(tc.cap * r->dim * sizeof(float));
        if (!tc.x) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory for training vectors");
            goto fail;
        }
        st = store_scan_embeddings(r->store, 0, SCAN_CHUNK, collect_training, &tc, err);
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
    st = store_scan_embeddings(r->store, 0, SCAN_CHUNK, add_chunk, &ac, err);
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

/* Deletions after r->del_seq (ids are never reused, absent ids are
 * ignored), then rows after the index's last id. Caller holds r->mu. */
static enum ims_status catch_up_locked(struct replica *r, struct ims_error *err)
{
    int64_t seq = r->del_seq;
    for (;;) {
        int64_t *ids = NULL, last = seq;
        size_t n = 0;
        enum ims_status st =
            store_deleted_after(r->store, seq, DELETED_CHUNK, &ids, &n, &last, err);
        if (st != IMS_OK)
            return st;
        if (n)
            st = vindex_remove(r->index, ids, n, NULL, err);
        ims_free(ids);
        if (st != IMS_OK)
            return st;
        seq = last;
        r->del_seq = seq;
        if (n < DELETED_CHUNK)
            break;
    }
    int64_t after = vindex_last_id(r->index);
    struct add_ctx ac = {r->index, err, IMS_OK};
    enum ims_status st = store_scan_embeddings(r->store, after < 0 ? 0 : after, SCAN_CHUNK,
                                               add_chunk, &ac, err);
    if (st == IMS_ERR_CANCELLED)
        st = ac.st;
    return st;
}

enum ims_status replica_catch_up(struct replica *r, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!r->index, err, IMS_ERR_INVALID, "replica opened without its index");
    pthread_mutex_lock(&r->mu);
    enum ims_status st = catch_up_locked(r, err);
    pthread_mutex_unlock(&r->mu);
    if (st != IMS_OK)
        ims_error_prefix(err, "updating the index from the catalogue");
    return st;
}

/* ---- open / close ---------------------------------------------------------------- */

static enum ims_status open_index(struct replica *r, struct ims_error *err)
{
    struct ims_error lerr = {0};
    int64_t last_id = 0;
    enum ims_status st =
        vindex_load(r->snap_path, (int)r->dim, r->spec, &r->index, &last_id, &lerr);
    int rebuilt = 0;
    if (st != IMS_OK) {
        if (st != IMS_ERR_NOT_FOUND)
            ims_log(IMS_LOG_WARN, "index snapshot unusable (%s): rebuilding it from the catalogue",
                    ims_error_message(&lerr, st));
        st = replica_build(r, r->spec, &r->index, err);
        if (st != IMS_OK) {
            ims_error_prefix(err, "cannot build the %s index", r->spec);
            return st;
        }
        rebuilt = 1;
    }
    /* a fresh build read every row: deletions before now are already in it */
    if (rebuilt)
        st = store_deleted_seq(r->store, &r->del_seq, err);
    else
        st = catch_up_locked(r, err);
    if (st != IMS_OK) {
        ims_error_prefix(err, "cannot update the index from the catalogue");
        return st;
    }
    int64_t count = 0;
    st = store_count(r->store, &count, err);
    if (st != IMS_OK)
        return st;
    if (!rebuilt && (int64_t)vindex_count(r->index) != count) {
        ims_log(IMS_LOG_WARN, "index holds %zu vectors, catalogue %lld rows: rebuilding",
                vindex_count(r->index), (long long)count);
        vindex_free(r->index);
        r->index = NULL;
        st = replica_build(r, r->spec, &r->index, err);
        if (st != IMS_OK) {
            ims_error_prefix(err, "cannot rebuild the index");
            return st;
        }
    }
    return IMS_OK;
}

/* Opens the catalogue for o->model_name, or for the model it records. */
static enum ims_status open_store(struct replica *r, const struct replica_options *o,
                                  struct ims_error *err)
{
    enum ims_status st;
    if (o->model_name) {
        snprintf(r->model_name, sizeof(r->model_name), "%s", o->model_name);
        r->dim = o->dim;
        struct store_model_info mi = {r->model_name, r->dim};
        return store_open(r->data_dir, &mi, o->store_flags, &r->store, err);
    }
    /* read the record, then reopen as that model so embedding sizes are
     * checked against it */
    struct store_model_info any = {"(any)", 1};
    st = store_open(r->data_dir, &any, o->store_flags | STORE_OPEN_ALLOW_MODEL_MISMATCH,
                    &r->store, err);
    if (st == IMS_OK)
        st = store_model_get(r->store, r->model_name, sizeof(r->model_name), &r->dim, err);
    store_close(r->store);
    r->store = NULL;
    if (st != IMS_OK)
        return st;
    struct store_model_info rec = {r->model_name, r->dim};
    return store_open(r->data_dir, &rec, o->store_flags, &r->store, err);
}

enum ims_status replica_open(const struct replica_options *o, struct replica **out,
                             struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!o || !out, err, IMS_ERR_INVALID, "replica: no options or output");
    IMS_RETURN_ERROR_IF(!o->data_dir || !*o->data_dir, err, IMS_ERR_INVALID,
                        "replica: no data folder");
    IMS_RETURN_ERROR_IF(strlen(o->data_dir) >= sizeof(((struct replica *)0)->data_dir), err,
                        IMS_ERR_INVALID, "data folder path too long");
    IMS_RETURN_ERROR_IF(o->model_name && strlen(o->model_name) >= STORE_MODEL_NAME_MAX_BYTES,
                        err, IMS_ERR_INVALID, "model name too long");
    struct replica *r = ims_calloc(1, sizeof(*r));
    if (!r)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        ims_free(r);
        return ims_error_set(err, IMS_ERR_INTERNAL, "replica: cannot create a mutex");
    }
    snprintf(r->data_dir, sizeof(r->data_dir), "%s", o->data_dir);
    snprintf(r->snap_path, sizeof(r->snap_path), "%s/index.snap", r->data_dir);
    snprintf(r->spec_path, sizeof(r->spec_path), "%s/index.spec", r->data_dir);

    enum ims_status st = open_store(r, o, err);
    if (st != IMS_OK) {
        ims_error_prefix(err, "cannot open the data folder %s", r->data_dir);
        goto fail;
    }
    read_spec(r);
    if (o->with_index) {
        st = open_index(r, err);
        if (st != IMS_OK)
            goto fail;
        /* one query may use every core for the exact scan: latency is what a
         * user waits for, and the scan is memory-bound (docs/internals/index.md) */
        struct vindex_search_params sp = r->params;
        sp.n_threads = o->n_search_threads;
        if (sp.n_threads <= 0)
            sp.n_threads = (int)IMS_MIN(IMS_MAX(sysconf(_SC_NPROCESSORS_ONLN), 1), 4);
        struct ims_error perr = {0};
        enum ims_status pst = vindex_set_search_params(r->index, &sp, &perr);
        if (pst != IMS_OK)
            ims_log(IMS_LOG_WARN, "%s: %s", r->spec_path, ims_error_message(&perr, pst));
    }
    *out = r;
    return IMS_OK;
fail:
    replica_close(r);
    return st;
}

void replica_close(struct replica *r)
{
    if (!r)
        return;
    vindex_free(r->index);
    store_close(r->store);
    pthread_mutex_destroy(&r->mu);
    ims_free(r);
}

/* ---- snapshots ------------------------------------------------------------------ */

enum ims_status replica__snapshot_header(const char *path, struct replica__snap_header *out)
{
    /* The first 32 bytes of the snapshot format (index_snapshot.c): magic,
     * version, dim, the position covered, count. Only the header: a damaged
     * payload still counts as what it claims to hold, which errs on the side
     * of keeping it. */
    unsigned char h[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? IMS_ERR_NOT_FOUND : IMS_ERR_IO;
    ssize_t got = pread(fd, h, sizeof(h), 0);
    close(fd);
    if (got != (ssize_t)sizeof(h) || memcmp(h, "IMSVIDX\x1a", 8) != 0)
        return IMS_ERR_CORRUPT;
    uint32_t version, dim;
    int64_t last;
    uint64_t count;
    memcpy(&version, h + 8, 4);
    memcpy(&dim, h + 12, 4);
    memcpy(&last, h + 16, 8);
    memcpy(&count, h + 24, 8);
    if (version != 1)
        return IMS_ERR_CORRUPT;
    out->dim = dim;
    out->position = last;
    out->count = count;
    return IMS_OK;
}

int replica__snapshot_keeps(const struct replica__snap_header *old, int64_t position,
                            uint64_t count)
{
    /* The position (highest id covered) does not move on deletions, so at
     * the same position fewer vectors is the normal result of a delete. */
    (void)count;
    return old->position > position;
}

enum ims_status replica_save(struct replica *r, int *written, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!r->index, err, IMS_ERR_INVALID, "replica opened without its index");
    pthread_mutex_lock(&r->mu); /* no catch-up between reading the position and writing */
    int64_t position = vindex_last_id(r->index);
    if (position < 0)
        position = 0;
    uint64_t count = vindex_count(r->index);
    struct replica__snap_header old;
    enum ims_status st = IMS_OK;
    int write = 1;
    if (replica__snapshot_header(r->snap_path, &old) == IMS_OK &&
        replica__snapshot_keeps(&old, position, count)) {
        ims_log(IMS_LOG_WARN,
                "%s covers more than this index (position %lld, %llu vectors; this index: %lld, "
                "%llu): keeping it. If its catalogue is gone for good, remove the file.",
                r->snap_path, (long long)old.position, (unsigned long long)old.count,
                (long long)position, (unsigned long long)count);
        write = 0;
    }
    if (write)
        st = vindex_save(r->index, r->snap_path, position, err);
    pthread_mutex_unlock(&r->mu);
    if (st == IMS_OK && written)
        *written = write;
    return st;
}
