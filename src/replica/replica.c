/* SPDX-License-Identifier: MIT */
/*
 * replica.c: one node's index, derived from the catalogue and kept in step
 * with it through the catalogue's change feed (store.h).
 *
 * This is the library half of what every command does with a data folder
 * (curl's lib/tool split: the CLI parses options and prints, this file owns
 * the data). It used to live in src/cli/cli_app.c.
 *
 * DESIGN
 * ------
 * Position. The index covers a change seq S: every change <= S is applied.
 * Applying is idempotent (an insert or update first removes the id, then
 * adds the row as the catalogue has it now, or nothing if the row is gone;
 * a delete removes the id if present), so replaying changes an index
 * already holds is harmless. Hence every recorded position may be LOWER
 * than the truth, never higher, and that is what makes crashes safe:
 *   - a build reads S0 = store_change_seq() before it scans the catalogue
 *     (the scan's snapshot is at least as new), then catches up from S0;
 *   - the snapshot's seq goes into index.seq AFTER index.snap is renamed
 *     into place, with the snapshot's count and last id, so a snapshot and
 *     an index.seq that do not belong together are noticed (rebuild), and a
 *     crash between the two leaves an older seq, which only replays.
 * A snapshot without index.seq (written before the change feed), whose
 * seq is above the catalogue's newest (another catalogue), or below the
 * feed's floor (trimmed past it) is not used: the index is built anew.
 *
 * Opening (replica_open): catalogue + model check, index.spec, the
 * snapshot or an empty index. Then, unless REPLICA deferred start: the
 * initial sync (build if needed, catch up, compare counts, rebuild once if
 * they differ) and the replica is ready. With defer_sync the follower
 * thread does the initial sync; replica_index() is NULL until it is ready,
 * so nothing else holds the index while it may still be replaced.
 *
 * Threads. One optional follower thread (replica_follow_start):
 *     loop: store_wait_change(covered, wait_ms) -> catch up -> maybe snapshot
 * It wakes on the store's notification (PostgreSQL LISTEN/NOTIFY, SQLite's
 * polled counter). Any thread may call replica_sync(seq), which catches up
 * itself when the follower has not got there yet (an upload must be
 * searchable when its answer returns). `apply_mu` serialises appliers, so
 * changes are applied once and in order; each chunk of REPLICA_CHUNK
 * changes is applied with vindex_remove + vindex_add, which take the
 * index's write lock for that chunk only, so searches wait at most one
 * chunk. `covered` is written under apply_mu and read lock-free; `cv`
 * (with `mu`) wakes replica_sync waiters. `save_mu` serialises snapshot
 * writes. Shutdown: replica_close sets `stop`, the follower returns from its
 * wait (<= wait_ms) and is joined, then the index and catalogue are closed.
 *
 * Saving never replaces a snapshot that covers more of the catalogue than
 * the index being written: a later seq, or a higher last id (ids are never
 * reused, so a fresh catalogue has lower ones) -- a folder whose catalogue
 * was lost or replaced keeps the last copy of its vectors (issue 8 item 5).
 */
#include "imgsearch/replica.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "replica_int.h"

#define SCAN_CHUNK 1024
#define TRAIN_MAX 100000

struct replica {
    struct store *store;
    struct vindex *index;            /* owned; NULL when opened without it */
    _Atomic(struct vindex *) shared; /* index once ready (replica_index) */
    int has_data;                    /* a data folder: snapshot + spec files */
    char data_dir[4096];
    char snap_path[4200];
    char seq_path[4200];
    char spec_path[4200];
    char spec[REPLICA_SPEC_MAX];
    struct vindex_search_params params; /* from index.spec; 0 = the type's default */
    char model_name[STORE_MODEL_NAME_MAX_BYTES];
    uint32_t dim;
    int n_search_threads;
    int wait_ms;
    int snapshot_interval_s;

    pthread_mutex_t apply_mu;   /* serialises appliers (catch-up, build) */
    int needs_build;            /* guarded by apply_mu: the index is empty and unbuilt */
    _Atomic int64_t covered;    /* change seq applied; written under apply_mu */
    atomic_int ready;
    pthread_mutex_t mu;         /* with cv: replica_sync waiters */
    pthread_cond_t cv;
    pthread_mutex_t save_mu;    /* serialises snapshot writes */

    pthread_t follower;
    int following;
    atomic_int stop;
    _Atomic int64_t catalogue_seq; /* newest seq the follower saw */
    atomic_uint_least64_t n_applied, n_rebuilds, n_errors;
    atomic_int behind_floor;       /* the feed was trimmed past a running index */
    int64_t feed_keep;             /* retention: changes kept by the trim (0: no trim) */
    int trim_interval_ms;
    atomic_uint_least64_t n_trims;
};

void replica_options_default(struct replica_options *o)
{
    memset(o, 0, sizeof(*o));
    o->with_index = 1;
    o->wait_ms = 500;
}

struct store *replica_store(struct replica *r) { return r->store; }
struct vindex *replica_index(struct replica *r) { return atomic_load(&r->shared); }
const char *replica_model_name(struct replica *r) { return r->model_name; }
uint32_t replica_dim(struct replica *r) { return r->dim; }
const char *replica_spec(struct replica *r) { return r->spec; }
void replica_search_params(struct replica *r, struct vindex_search_params *out)
{
    *out = r->params;
}
const char *replica_data_dir(struct replica *r) { return r->has_data ? r->data_dir : ""; }
const char *replica_snapshot_path(struct replica *r) { return r->has_data ? r->snap_path : ""; }
int replica_ready(struct replica *r) { return atomic_load(&r->ready); }

void replica_get_stats(struct replica *r, struct replica_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->ready = atomic_load(&r->ready);
    out->seq = atomic_load(&r->covered);
    out->catalogue_seq = atomic_load(&r->catalogue_seq);
    if (out->catalogue_seq < out->seq)
        out->catalogue_seq = out->seq;
    out->changes_applied = atomic_load(&r->n_applied);
    out->rebuilds = atomic_load(&r->n_rebuilds);
    out->follow_errors = atomic_load(&r->n_errors);
    out->behind_floor = atomic_load(&r->behind_floor);
    out->trims = atomic_load(&r->n_trims);
}

/* ---- index.spec ------------------------------------------------------------- */

static void read_spec(struct replica *r)
{
    char *data = NULL;
    size_t len = 0;
    snprintf(r->spec, sizeof(r->spec), "Flat");
    memset(&r->params, 0, sizeof(r->params));
    if (!r->has_data || ims_file_read(r->spec_path, 4096, &data, &len, NULL) != IMS_OK)
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
    IMS_RETURN_ERROR_IF(!r->has_data, err, IMS_ERR_INVALID,
                        "no data folder: the index configuration lives in one");
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

/* ---- building ------------------------------------------------------------------ */

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

/* Fills the empty index vx from the whole catalogue (training it first when
 * the type needs it). */
static enum ims_status fill(struct replica *r, struct vindex *vx, const char *spec,
                            struct ims_error *err)
{
    enum ims_status st;
    if (vindex_needs_training(vx)) {
        int64_t count = 0;
        st = store_count(r->store, &count, err);
        if (st != IMS_OK)
            return st;
        struct train_ctx tc = {NULL, 0, (size_t)IMS_MIN(count, TRAIN_MAX), r->dim};
        if (tc.cap == 0)
            return ims_error_set(err, IMS_ERR_INVALID,
                                 "index type %s needs training, and the catalogue is empty: add "
                                 "images first, or use Flat",
                                 spec);
        tc.x = ims_malloc(tc.cap * r->dim * sizeof(float));
        if (!tc.x)
            return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for training vectors");
        st = store_scan_embeddings(r->store, 0, SCAN_CHUNK, collect_training, &tc, err);
        if (st == IMS_ERR_CANCELLED)
            st = IMS_OK; /* stopped once the sample was full */
        if (st == IMS_OK)
            st = vindex_train(vx, tc.x, tc.n, err);
        ims_free(tc.x);
        if (st != IMS_OK) {
            ims_error_prefix(err, "training %s on %zu catalogue vectors", spec, tc.n);
            return st;
        }
    }
    struct add_ctx ac = {vx, err, IMS_OK};
    st = store_scan_embeddings(r->store, 0, SCAN_CHUNK, add_chunk, &ac, err);
    if (st == IMS_ERR_CANCELLED)
        st = ac.st;
    return st;
}

enum ims_status replica_build(struct replica *r, const char *spec, struct vindex **out,
                              int64_t *seq, struct ims_error *err)
{
    struct vindex *vx = NULL;
    int64_t s0 = 0;
    enum ims_status st = store_change_seq(r->store, &s0, err);
    if (st != IMS_OK)
        return st;
    st = vindex_new(spec, (int)r->dim, &vx, err);
    if (st != IMS_OK)
        return st;
    st = fill(r, vx, spec, err);
    if (st != IMS_OK) {
        vindex_free(vx);
        return st;
    }
    *out = vx;
    if (seq)
        *seq = s0;
    return IMS_OK;
}

/* ---- applying the change feed --------------------------------------------------- */

static void set_covered(struct replica *r, int64_t seq)
{
    atomic_store(&r->covered, seq);
    pthread_mutex_lock(&r->mu);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Adds rows one by one, skipping ids already present (a writer outside the
 * replica added them meanwhile: the same row, the same vector). */
static enum ims_status add_each(struct vindex *vx, const int64_t *ids, const float *x, size_t n,
                                uint32_t dim, struct ims_error *err)
{
    for (size_t i = 0; i < n; i++) {
        enum ims_status st = vindex_add(vx, &ids[i], x + i * dim, 1, err);
        if (st != IMS_OK && st != IMS_ERR_EXISTS)
            return st;
    }
    return IMS_OK;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Applies changes[0..n) (oldest first) to vx: every id is removed, then the
 * inserted/updated rows the catalogue still has are added as they are now.
 * ids are never reused, so doing all removals first is the same as applying
 * the changes one by one. A ROW change (the row changed, its embedding did
 * not) only evicts the row cache: the index keeps the vector. */
static enum ims_status apply_changes(struct replica *r, struct vindex *vx,
                                     const struct store_change *ch, size_t n,
                                     struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    int64_t *all = ims_malloc(n * sizeof(int64_t));
    int64_t *want = ims_malloc(n * sizeof(int64_t));
    struct store_image_row *rows = NULL;
    uint8_t *found = NULL;
    int64_t *add_ids = ims_malloc(n * sizeof(int64_t)); /* first the evicted ids */
    float *add_x = NULL;
    size_t n_want = 0, n_add = 0;
    if (!all || !want || !add_ids) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory applying changes");
        goto out;
    }
    size_t n_gone = 0; /* deleted or changed rows: evicted from the row cache */
    size_t n_all = 0;  /* ids the index re-reads: all but ROW changes */
    for (size_t i = 0; i < n; i++) {
        if (ch[i].kind != STORE_CHANGE_INSERT)
            add_ids[n_gone++] = ch[i].id;
        if (ch[i].kind == STORE_CHANGE_ROW)
            continue; /* the embedding is unchanged: nothing for the index */
        all[n_all++] = ch[i].id;
        if (ch[i].kind != STORE_CHANGE_DELETE)
            want[n_want++] = ch[i].id;
    }
    /* before the index drops the id: a cached row is never served for an id
     * this node's index no longer returns (store.h "row cache") */
    store_row_cache_evict(r->store, add_ids, n_gone);
    if (n_all)
        st = vindex_remove(vx, all, n_all, NULL, err);
    if (st != IMS_OK || n_want == 0)
        goto out;
    qsort(want, n_want, sizeof(int64_t), cmp_i64);
    size_t u = 0;
    for (size_t i = 0; i < n_want; i++)
        if (u == 0 || want[u - 1] != want[i])
            want[u++] = want[i];
    n_want = u;
    rows = ims_calloc(n_want, sizeof(*rows));
    found = ims_calloc(n_want, 1);
    add_x = ims_malloc(n_want * (size_t)r->dim * sizeof(float));
    if (!rows || !found || !add_ids || !add_x) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory applying changes");
        goto out;
    }
    st = store_get_many(r->store, want, n_want, STORE_FIELD_EMBEDDING, rows, found, err);
    if (st != IMS_OK) {
        ims_free(rows);
        rows = NULL;
        goto out;
    }
    for (size_t i = 0; i < n_want; i++) {
        if (!found[i])
            continue; /* deleted since: its DELETE change follows */
        if (!rows[i].embedding || rows[i].dim != r->dim) {
            st = ims_error_set(err, IMS_ERR_MODEL_MISMATCH,
                               "image %" PRId64 ": embedding of %u floats, the index has %u",
                               want[i], rows[i].dim, r->dim);
            break;
        }
        add_ids[n_add] = want[i];
        memcpy(add_x + n_add * r->dim, rows[i].embedding, r->dim * sizeof(float));
        n_add++;
    }
    for (size_t i = 0; i < n_want; i++)
        store_row_fini(&rows[i]);
    if (st == IMS_OK && n_add) {
        st = vindex_add(vx, add_ids, add_x, n_add, err);
        if (st == IMS_ERR_EXISTS)
            st = add_each(vx, add_ids, add_x, n_add, r->dim, err);
    }
out:
    ims_free(all);
    ims_free(want);
    ims_free(rows);
    ims_free(found);
    ims_free(add_ids);
    ims_free(add_x);
    return st;
}

/* Applies every change after `covered` to vx, chunk by chunk. Caller holds
 * apply_mu. IMS_ERR_NOT_FOUND: below the feed's floor (rebuild). */
static enum ims_status catch_up_locked(struct replica *r, struct vindex *vx, struct ims_error *err)
{
    struct store_change ch[REPLICA_CHUNK];
    for (;;) {
        int64_t from = atomic_load(&r->covered);
        size_t n = 0;
        enum ims_status st = store_changes_after(r->store, from, REPLICA_CHUNK, ch, &n, err);
        if (st != IMS_OK)
            return st;
        if (n == 0)
            return IMS_OK;
        st = apply_changes(r, vx, ch, n, err);
        if (st != IMS_OK)
            return st;
        atomic_fetch_add(&r->n_applied, n);
        set_covered(r, ch[n - 1].seq);
        if (atomic_load(&r->catalogue_seq) < ch[n - 1].seq)
            atomic_store(&r->catalogue_seq, ch[n - 1].seq);
    }
}

/* Fills the empty private index from the catalogue; covered = the seq read
 * before the scan. Caller holds apply_mu. */
static enum ims_status build_locked(struct replica *r, struct ims_error *err)
{
    int64_t s0 = 0;
    /* changes before s0 may be lost to a trimmed feed: cached rows go too */
    store_row_cache_evict(r->store, NULL, 0);
    enum ims_status st = store_change_seq(r->store, &s0, err);
    if (st != IMS_OK)
        return st;
    st = fill(r, r->index, r->spec, err);
    if (st != IMS_OK) {
        ims_error_prefix(err, "cannot build the %s index", r->spec);
        return st;
    }
    r->needs_build = 0;
    atomic_fetch_add(&r->n_rebuilds, 1);
    set_covered(r, s0);
    return IMS_OK;
}

/* Replaces the private index by an empty one of the folder's type. */
static enum ims_status reset_index(struct replica *r, struct ims_error *err)
{
    struct vindex *vx = NULL;
    enum ims_status st = vindex_new(r->spec, (int)r->dim, &vx, err);
    if (st != IMS_OK)
        return st;
    vindex_free(r->index);
    r->index = vx;
    r->needs_build = 1;
    atomic_store(&r->covered, 0);
    return IMS_OK;
}

/* Build (if needed), catch up, compare with the catalogue's count (when the
 * catalogue holds still long enough to compare), rebuild once if they
 * differ. The index is private (not yet shared). Caller holds apply_mu. */
static enum ims_status initial_sync_locked(struct replica *r, struct ims_error *err)
{
    enum ims_status st;
    for (int attempt = 0;; attempt++) {
        if (r->needs_build && (st = build_locked(r, err)) != IMS_OK)
            return st;
        st = catch_up_locked(r, r->index, err);
        if (st == IMS_ERR_NOT_FOUND && attempt == 0) {
            ims_log(IMS_LOG_WARN, "the index is behind the change feed's floor: rebuilding");
            if ((st = reset_index(r, err)) != IMS_OK)
                return st;
            continue;
        }
        if (st != IMS_OK) {
            ims_error_prefix(err, "cannot update the index from the catalogue");
            return st;
        }
        int compared = 0, differ = 0;
        int64_t count = 0;
        for (int tries = 0; tries < 3 && !compared; tries++) {
            int64_t before = 0, after = 0;
            if ((st = store_change_seq(r->store, &before, err)) != IMS_OK ||
                (st = store_count(r->store, &count, err)) != IMS_OK ||
                (st = store_change_seq(r->store, &after, err)) != IMS_OK)
                return st;
            if (before == after && after == atomic_load(&r->covered)) {
                compared = 1;
                differ = (int64_t)vindex_count(r->index) != count;
            } else if ((st = catch_up_locked(r, r->index, err)) != IMS_OK) {
                return st;
            }
        }
        if (!differ || attempt > 0)
            return IMS_OK;
        ims_log(IMS_LOG_WARN, "index holds %zu vectors, catalogue %lld rows: rebuilding",
                vindex_count(r->index), (long long)count);
        if ((st = reset_index(r, err)) != IMS_OK)
            return st;
    }
}

/* Publishes the index: from now on others may hold it. */
static void become_ready(struct replica *r)
{
    struct ims_error perr = {0};
    /* one query may use every core for the exact scan: latency is what a
     * user waits for, and the scan is memory-bound (docs/internals/index.md) */
    struct vindex_search_params sp = r->params;
    sp.n_threads = r->n_search_threads;
    if (sp.n_threads <= 0)
        sp.n_threads = (int)IMS_MIN(IMS_MAX(sysconf(_SC_NPROCESSORS_ONLN), 1), 4);
    enum ims_status pst = vindex_set_search_params(r->index, &sp, &perr);
    if (pst != IMS_OK)
        ims_log(IMS_LOG_WARN, "%s: %s", r->has_data ? r->spec_path : "index",
                ims_error_message(&perr, pst));
    atomic_store(&r->shared, r->index);
    atomic_store(&r->ready, 1);
    pthread_mutex_lock(&r->mu);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

enum ims_status replica_catch_up(struct replica *r, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!r->index, err, IMS_ERR_INVALID, "replica opened without its index");
    IMS_RETURN_ERROR_IF(!atomic_load(&r->ready), err, IMS_ERR_BUSY,
                        "the index is still being built");
    pthread_mutex_lock(&r->apply_mu);
    enum ims_status st = catch_up_locked(r, r->index, err);
    pthread_mutex_unlock(&r->apply_mu);
    if (st == IMS_ERR_NOT_FOUND) {
        atomic_store(&r->behind_floor, 1);
        ims_error_prefix(err, "the catalogue's change feed was trimmed past this index "
                              "(the follower rebuilds it: replica_rebuild_live)");
    } else if (st != IMS_OK) {
        ims_error_prefix(err, "updating the index from the catalogue");
    }
    return st;
}

static void deadline_after(struct timespec *ts, int ms)
{
    ims_deadline_after_ms(CLOCK_REALTIME, ms, ts); /* the condition's default clock */
}

enum ims_status replica_sync(struct replica *r, int64_t seq, int timeout_ms,
                             struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!r->index, err, IMS_ERR_INVALID, "replica opened without its index");
    if (atomic_load(&r->ready) && atomic_load(&r->covered) >= seq)
        return IMS_OK;
    struct timespec dl;
    deadline_after(&dl, timeout_ms < 0 ? 0 : timeout_ms);
    if (!atomic_load(&r->ready)) {
        /* the initial sync runs on the follower: wait for it */
        pthread_mutex_lock(&r->mu);
        int rc = 0;
        while (!atomic_load(&r->ready) && rc == 0)
            rc = pthread_cond_timedwait(&r->cv, &r->mu, &dl);
        pthread_mutex_unlock(&r->mu);
        if (!atomic_load(&r->ready))
            return ims_error_set(err, IMS_ERR_TIMEOUT,
                                 "the index is still being built from the catalogue");
        if (atomic_load(&r->covered) >= seq)
            return IMS_OK;
    }
    if (pthread_mutex_timedlock(&r->apply_mu, &dl) != 0)
        return ims_error_set(err, IMS_ERR_TIMEOUT,
                             "the index did not reach change %" PRId64 " in %d ms", seq,
                             timeout_ms);
    enum ims_status st = IMS_OK;
    if (atomic_load(&r->covered) < seq)
        st = catch_up_locked(r, r->index, err);
    pthread_mutex_unlock(&r->apply_mu);
    if (st == IMS_ERR_NOT_FOUND)
        atomic_store(&r->behind_floor, 1);
    if (st == IMS_OK && atomic_load(&r->covered) < seq)
        st = ims_error_set(err, IMS_ERR_INVALID, "change %" PRId64 " is not in the catalogue",
                           seq);
    return st;
}

/* ---- live rebuild: the feed was trimmed past a running index ------------------ */

struct id_list {
    int64_t *ids;
    size_t n, cap;
    int nomem;
};

static int collect_ids(void *user, const int64_t *ids, const float *vectors, size_t n, int dim)
{
    (void)vectors;
    (void)dim;
    struct id_list *l = user;
    if (l->n + n > l->cap) {
        size_t cap = IMS_MAX(l->cap * 2, l->n + n + 1024);
        int64_t *p = ims_realloc(l->ids, cap * sizeof(int64_t));
        if (!p) {
            l->nomem = 1;
            return 1;
        }
        l->ids = p;
        l->cap = cap;
    }
    memcpy(l->ids + l->n, ids, n * sizeof(int64_t));
    l->n += n;
    return 0;
}

/* The catalogue against the running index: the catalogue's rows the index
 * lacks (ids and vectors), and which of the index's ids it still has. */
struct diff_ctx {
    const int64_t *live; /* sorted */
    size_t n_live;
    uint8_t *seen;       /* n_live: 1 kept as is, 2 re-added (new embedding) */
    const int64_t *changed; /* sorted: embeddings replaced after the index's seq */
    size_t n_changed, n_readd;
    int64_t *add_ids;
    float *add_x;
    size_t n_add, cap;
    uint32_t dim;
    int nomem;
};

static int diff_chunk(void *user, const int64_t *ids, const float *vectors, size_t n, uint32_t dim)
{
    struct diff_ctx *d = user;
    for (size_t i = 0; i < n; i++) {
        const int64_t *hit = bsearch(&ids[i], d->live, d->n_live, sizeof(int64_t), cmp_i64);
        if (hit) {
            /* the index holds the id: keep its vector unless the catalogue
             * replaced the embedding after the seq the index covers */
            int stale = d->n_changed &&
                        bsearch(&ids[i], d->changed, d->n_changed, sizeof(int64_t), cmp_i64);
            d->seen[hit - d->live] = stale ? 2 : 1;
            if (!stale)
                continue;
            d->n_readd++;
        }
        if (d->n_add == d->cap) {
            size_t cap = IMS_MAX(d->cap * 2, 1024);
            int64_t *pi = ims_realloc(d->add_ids, cap * sizeof(int64_t));
            if (pi)
                d->add_ids = pi;
            float *px = pi ? ims_realloc(d->add_x, cap * (size_t)dim * sizeof(float)) : NULL;
            if (!pi || !px) {
                d->nomem = 1;
                return 1;
            }
            d->add_x = px;
            d->cap = cap;
        }
        d->add_ids[d->n_add] = ids[i];
        memcpy(d->add_x + d->n_add * dim, vectors + i * dim, dim * sizeof(float));
        d->n_add++;
    }
    return 0;
}

/* One pass: covered = S0 read first; the index is compared with a scan of
 * the catalogue (a snapshot at least as new as S0) while it keeps serving
 * untouched: ids it lacks are added, ids the catalogue lost removed, and
 * ids whose embedding was replaced after the seq the index covered
 * (store_embeddings_changed_after: per-row embedding versions, which
 * outlive the trimmed feed) removed and added anew. The difference goes in
 * at once (one removal, one addition, each one write-lock hold) and the
 * feed after S0 is replayed (idempotent, see DESIGN). Caller holds
 * apply_mu. */
static enum ims_status rebuild_live_locked(struct replica *r, struct ims_error *err)
{
    struct id_list live = {0};
    struct diff_ctx d = {0};
    int64_t *gone = NULL, *changed = NULL;
    size_t n_gone = 0, n_changed = 0;
    int64_t s0 = 0;
    enum ims_status st = store_change_seq(r->store, &s0, err);
    if (st != IMS_OK)
        return st;
    /* read after S0: a replacement it misses has a seq > S0 and is replayed */
    st = store_embeddings_changed_after(r->store, atomic_load(&r->covered), &changed, &n_changed,
                                        err);
    if (st != IMS_OK)
        return st;
    d.changed = changed;
    d.n_changed = n_changed;
    st = vindex_scan(r->index, collect_ids, &live, err);
    if (st == IMS_ERR_CANCELLED || live.nomem) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory listing the index's ids");
        goto out;
    }
    if (st != IMS_OK)
        goto out;
    qsort(live.ids, live.n, sizeof(int64_t), cmp_i64);
    d.live = live.ids;
    d.n_live = live.n;
    d.dim = r->dim;
    d.seen = ims_calloc(live.n + 1, 1);
    if (!d.seen) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory comparing the index");
        goto out;
    }
    st = store_scan_embeddings(r->store, 0, SCAN_CHUNK, diff_chunk, &d, err);
    if (st == IMS_ERR_CANCELLED || d.nomem) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory comparing the index");
        goto out;
    }
    if (st != IMS_OK)
        goto out;
    gone = ims_malloc((live.n + 1) * sizeof(int64_t));
    if (!gone) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory comparing the index");
        goto out;
    }
    for (size_t i = 0; i < live.n; i++)
        if (d.seen[i] != 1) /* gone from the catalogue, or re-added below */
            gone[n_gone++] = live.ids[i];
    /* the swap: rows changed while the feed was lost may be cached */
    store_row_cache_evict(r->store, NULL, 0);
    if (n_gone)
        st = vindex_remove(r->index, gone, n_gone, NULL, err);
    if (st == IMS_OK && d.n_add) {
        st = vindex_add(r->index, d.add_ids, d.add_x, d.n_add, err);
        if (st == IMS_ERR_EXISTS)
            st = add_each(r->index, d.add_ids, d.add_x, d.n_add, r->dim, err);
    }
    if (st != IMS_OK)
        goto out;
    ims_log(IMS_LOG_INFO,
            "index rebuilt from the catalogue while serving: %zu vectors removed, %zu added, "
            "%zu replaced (new embedding), now at change %lld",
            n_gone - d.n_readd, d.n_add - d.n_readd, d.n_readd, (long long)s0);
    atomic_fetch_add(&r->n_rebuilds, 1);
    set_covered(r, s0);
    st = catch_up_locked(r, r->index, err);
out:
    ims_free(changed);
    ims_free(live.ids);
    ims_free(d.seen);
    ims_free(d.add_ids);
    ims_free(d.add_x);
    ims_free(gone);
    return st;
}

enum ims_status replica_rebuild_live(struct replica *r, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!r->index, err, IMS_ERR_INVALID, "replica opened without its index");
    IMS_RETURN_ERROR_IF(!atomic_load(&r->ready), err, IMS_ERR_BUSY,
                        "the index is still being built");
    pthread_mutex_lock(&r->apply_mu);
    enum ims_status st = rebuild_live_locked(r, err);
    if (st == IMS_ERR_NOT_FOUND) /* trimmed again while it ran: once more */
        st = rebuild_live_locked(r, err);
    pthread_mutex_unlock(&r->apply_mu);
    if (st == IMS_OK)
        atomic_store(&r->behind_floor, 0);
    else
        ims_error_prefix(err, "rebuilding the index from the catalogue");
    return st;
}

/* The retention policy: keep the newest feed_keep changes. Every node
 * with a policy applies it; the catalogue lets one at a time do the work
 * (PostgreSQL: an advisory lock, SQLite: the writer). */
static void apply_retention(struct replica *r, int64_t newest)
{
    int64_t upto = newest - r->feed_keep;
    int64_t floor = 0;
    struct ims_error err = {0};
    if (upto <= 0 || store_change_floor(r->store, &floor, &err) != IMS_OK || upto <= floor)
        return;
    enum ims_status st = store_change_trim(r->store, upto, &err);
    if (st == IMS_OK)
        atomic_fetch_add(&r->n_trims, 1);
    else
        ims_log(IMS_LOG_WARN, "trimming the change feed: %s", ims_error_message(&err, st));
}

/* ---- snapshots ------------------------------------------------------------------ */

enum ims_status replica__snapshot_header(const char *path, struct replica__snap_header *out)
{
    /* The first 32 bytes of the snapshot format (index_snapshot.c): magic,
     * version, dim, the last id covered, count. Only the header: a damaged
     * payload still counts as what it claims to hold, which errs on the side
     * of keeping it. (vindex_snapshot_info replaces this once it lands.) */
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
    out->last_id = last;
    out->count = count;
    out->seq = -1;
    return IMS_OK;
}

enum ims_status replica__seq_read(const char *path, struct replica__seq_file *out)
{
    char *data = NULL;
    size_t len = 0;
    enum ims_status st = ims_file_read(path, 4096, &data, &len, NULL);
    if (st != IMS_OK)
        return st;
    long long seq, count, last;
    int n = sscanf(data, "imgsearch index.seq 1\nseq %lld\ncount %lld\nlast_id %lld\n", &seq,
                   &count, &last);
    ims_free(data);
    if (n != 3 || seq < 0 || count < 0 || last < -1)
        return IMS_ERR_CORRUPT;
    out->seq = seq;
    out->count = (uint64_t)count;
    out->last_id = last;
    return IMS_OK;
}

enum ims_status replica__seq_write(const char *path, const struct replica__seq_file *s,
                                   struct ims_error *err)
{
    char text[256];
    int n = snprintf(text, sizeof(text), "imgsearch index.seq 1\nseq %lld\ncount %llu\nlast_id %lld\n",
                     (long long)s->seq, (unsigned long long)s->count, (long long)s->last_id);
    return ims_file_write_atomic(path, text, (size_t)n, err);
}

int replica__snapshot_keeps(const struct replica__snap_header *old, int64_t seq, int64_t last_id)
{
    if (old->seq >= 0 && old->seq > seq)
        return 1;
    return old->last_id > last_id;
}

/* What the snapshot on disk covers: header + index.seq when they belong
 * together (seq -1 otherwise). IMS_ERR_NOT_FOUND without a snapshot. */
static enum ims_status snapshot_on_disk(struct replica *r, struct replica__snap_header *h)
{
    enum ims_status st = replica__snapshot_header(r->snap_path, h);
    if (st != IMS_OK)
        return st;
    struct replica__seq_file s;
    if (replica__seq_read(r->seq_path, &s) == IMS_OK && s.count == h->count &&
        s.last_id == h->last_id)
        h->seq = s.seq;
    return IMS_OK;
}

/* index.snap, then index.seq naming it (see DESIGN). Caller holds save_mu. */
static enum ims_status write_snapshot(struct replica *r, struct vindex *vx, int64_t seq,
                                      struct ims_error *err)
{
    int64_t last_id = vindex_last_id(vx);
    enum ims_status st = vindex_save(vx, r->snap_path, last_id < 0 ? 0 : last_id, err);
    if (st != IMS_OK)
        return st;
    struct replica__snap_header now;
    st = replica__snapshot_header(r->snap_path, &now);
    if (st != IMS_OK)
        return ims_error_set(err, st, "%s: cannot read back the snapshot just written",
                             r->snap_path);
    struct replica__seq_file s = {seq, now.count, now.last_id};
    return replica__seq_write(r->seq_path, &s, err);
}

enum ims_status replica_save_index(struct replica *r, struct vindex *vx, int64_t seq,
                                   struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!vx || seq < 0, err, IMS_ERR_INVALID, "no index to save");
    IMS_RETURN_ERROR_IF(!r->has_data, err, IMS_ERR_INVALID,
                        "no data folder to write the snapshot to");
    pthread_mutex_lock(&r->save_mu);
    enum ims_status st = write_snapshot(r, vx, seq, err);
    pthread_mutex_unlock(&r->save_mu);
    return st;
}

enum ims_status replica_save(struct replica *r, int *written, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!r->index, err, IMS_ERR_INVALID, "replica opened without its index");
    IMS_RETURN_ERROR_IF(!r->has_data, err, IMS_ERR_INVALID,
                        "no data folder to write the snapshot to");
    IMS_RETURN_ERROR_IF(!atomic_load(&r->ready), err, IMS_ERR_BUSY,
                        "the index is still being built");
    pthread_mutex_lock(&r->save_mu);
    /* read before the save: the saved index covers at least this much */
    int64_t seq = atomic_load(&r->covered);
    int64_t last_id = vindex_last_id(r->index);
    struct replica__snap_header old;
    enum ims_status st = IMS_OK;
    int write = 1;
    if (snapshot_on_disk(r, &old) == IMS_OK && replica__snapshot_keeps(&old, seq, last_id)) {
        ims_log(IMS_LOG_WARN,
                "%s covers more of the catalogue than this index (change %lld, last id %lld, "
                "%llu vectors; this index: change %lld, last id %lld, %zu vectors): keeping it. "
                "If its catalogue is gone for good, remove the file.",
                r->snap_path, (long long)old.seq, (long long)old.last_id,
                (unsigned long long)old.count, (long long)seq, (long long)last_id,
                vindex_count(r->index));
        write = 0;
    }
    if (write)
        st = write_snapshot(r, r->index, seq, err);
    pthread_mutex_unlock(&r->save_mu);
    if (st == IMS_OK && written)
        *written = write;
    return st;
}

/* Loads the snapshot if it is sound and its position is usable; else
 * leaves an empty index to build. */
static enum ims_status load_snapshot(struct replica *r, struct ims_error *err)
{
    int64_t newest = 0, floor = 0;
    enum ims_status st = store_change_seq(r->store, &newest, err);
    if (st == IMS_OK)
        st = store_change_floor(r->store, &floor, err);
    if (st != IMS_OK)
        return st;
    if (r->has_data) {
        struct ims_error lerr = {0};
        int64_t last_id = 0;
        struct vindex *vx = NULL;
        st = vindex_load(r->snap_path, (int)r->dim, r->spec, &vx, &last_id, &lerr);
        const char *why = NULL;
        char whybuf[600];
        struct replica__seq_file s = {0, 0, 0};
        if (st != IMS_OK) {
            if (st != IMS_ERR_NOT_FOUND) {
                snprintf(whybuf, sizeof(whybuf), "%s", ims_error_message(&lerr, st));
                why = whybuf;
            }
        } else if (replica__seq_read(r->seq_path, &s) != IMS_OK ||
                   s.count != vindex_count(vx) || s.last_id != last_id) {
            why = "it records no change position (written before the change feed, or "
                  "index.seq belongs to another snapshot)";
        } else if (s.seq > newest) {
            snprintf(whybuf, sizeof(whybuf),
                     "it covers change %lld, the catalogue has only %lld (another catalogue?)",
                     (long long)s.seq, (long long)newest);
            why = whybuf;
        } else if (s.seq < floor) {
            snprintf(whybuf, sizeof(whybuf),
                     "it covers change %lld, the change feed starts after %lld",
                     (long long)s.seq, (long long)floor);
            why = whybuf;
        }
        if (st == IMS_OK && !why) {
            r->index = vx;
            r->needs_build = 0;
            atomic_store(&r->covered, s.seq);
            return IMS_OK;
        }
        vindex_free(vx);
        if (why)
            ims_log(IMS_LOG_WARN, "index snapshot not used (%s): rebuilding it from the catalogue",
                    why);
    }
    return reset_index(r, err);
}

/* ---- the follower ---------------------------------------------------------------- */

static void *follow_main(void *arg)
{
    struct replica *r = arg;
    struct ims_error err = {0};
    double last_save = ims_now(), last_error_log = 0;
    int64_t saved_seq = atomic_load(&r->covered);
    if (!atomic_load(&r->ready)) {
        pthread_mutex_lock(&r->apply_mu);
        enum ims_status st = initial_sync_locked(r, &err);
        pthread_mutex_unlock(&r->apply_mu);
        if (st != IMS_OK) {
            ims_log(IMS_LOG_ERROR, "the index cannot be built: %s", ims_error_message(&err, st));
            atomic_fetch_add(&r->n_errors, 1);
            return NULL; /* stays "starting": /healthz says so */
        }
        become_ready(r);
    }
    double last_trim = ims_now();
    while (!atomic_load(&r->stop)) {
        int64_t now = 0;
        memset(&err, 0, sizeof(err));
        enum ims_status st =
            store_wait_change(r->store, atomic_load(&r->covered), r->wait_ms, &now, &err);
        if (st == IMS_OK) {
            atomic_store(&r->catalogue_seq, now);
            if (atomic_load(&r->behind_floor)) {
                ims_log(IMS_LOG_WARN, "the change feed was trimmed past this index: rebuilding "
                                      "it from the catalogue (the old one serves meanwhile)");
                st = replica_rebuild_live(r, &err);
            } else if (now > atomic_load(&r->covered)) {
                st = replica_catch_up(r, &err);
                if (st == IMS_ERR_NOT_FOUND) /* behind_floor is set: rebuild at once */
                    st = replica_rebuild_live(r, &err);
            }
        }
        if (st == IMS_OK && r->feed_keep > 0 &&
            (ims_now() - last_trim) * 1000.0 >= r->trim_interval_ms) {
            apply_retention(r, now);
            last_trim = ims_now();
        }
        if (st != IMS_OK) {
            atomic_fetch_add(&r->n_errors, 1);
            if (ims_now() - last_error_log > 10) {
                ims_log(IMS_LOG_ERROR, "following the catalogue: %s",
                        ims_error_message(&err, st));
                last_error_log = ims_now();
            }
            struct timespec ts = {0, 200 * 1000000L}; /* the catalogue may be restarting */
            nanosleep(&ts, NULL);
        }
        if (r->snapshot_interval_s > 0 && r->has_data &&
            ims_now() - last_save >= r->snapshot_interval_s &&
            atomic_load(&r->covered) != saved_seq) {
            memset(&err, 0, sizeof(err));
            saved_seq = atomic_load(&r->covered);
            st = replica_save(r, NULL, &err);
            if (st != IMS_OK)
                ims_log(IMS_LOG_WARN, "periodic snapshot: %s", ims_error_message(&err, st));
            last_save = ims_now();
        }
    }
    return NULL;
}

enum ims_status replica_follow_start(struct replica *r, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!r->index, err, IMS_ERR_INVALID, "replica opened without its index");
    IMS_RETURN_ERROR_IF(r->following, err, IMS_ERR_INVALID, "already following");
    atomic_store(&r->stop, 0);
    if (pthread_create(&r->follower, NULL, follow_main, r) != 0)
        return ims_error_set(err, IMS_ERR_INTERNAL, "cannot start the follower thread");
    r->following = 1;
    return IMS_OK;
}

static void follow_stop(struct replica *r)
{
    if (!r->following)
        return;
    atomic_store(&r->stop, 1);
    pthread_join(r->follower, NULL);
    r->following = 0;
}

/* ---- open / close ---------------------------------------------------------------- */

/* Opens the catalogue for o->model_name, or for the model it records. */
static enum ims_status open_store(struct replica *r, const struct replica_options *o,
                                  struct ims_error *err)
{
    enum ims_status st;
    const char *dir = r->has_data ? r->data_dir : NULL;
    if (o->model_name) {
        snprintf(r->model_name, sizeof(r->model_name), "%s", o->model_name);
        r->dim = o->dim;
        struct store_model_info mi = {r->model_name, r->dim};
        return store_open_catalogue(o->catalogue, dir, &mi, o->store_flags, &r->store, err);
    }
    /* read the record, then reopen as that model so embedding sizes are
     * checked against it */
    struct store_model_info any = {"(any)", 1};
    st = store_open_catalogue(o->catalogue, dir, &any,
                              o->store_flags | STORE_OPEN_ALLOW_MODEL_MISMATCH, &r->store, err);
    if (st == IMS_OK)
        st = store_model_get(r->store, r->model_name, sizeof(r->model_name), &r->dim, err);
    store_close(r->store);
    r->store = NULL;
    if (st != IMS_OK)
        return st;
    struct store_model_info rec = {r->model_name, r->dim};
    return store_open_catalogue(o->catalogue, dir, &rec, o->store_flags, &r->store, err);
}

enum ims_status replica_open(const struct replica_options *o, struct replica **out,
                             struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!o || !out, err, IMS_ERR_INVALID, "replica: no options or output");
    int url = store_catalogue_is_url(o->catalogue);
    IMS_RETURN_ERROR_IF((!o->data_dir || !*o->data_dir) && !url, err, IMS_ERR_INVALID,
                        "a data folder is needed unless the catalogue is a PostgreSQL URL");
    IMS_RETURN_ERROR_IF(o->data_dir && strlen(o->data_dir) >= sizeof(((struct replica *)0)->data_dir),
                        err, IMS_ERR_INVALID, "data folder path too long");
    IMS_RETURN_ERROR_IF(o->model_name && strlen(o->model_name) >= STORE_MODEL_NAME_MAX_BYTES,
                        err, IMS_ERR_INVALID, "model name too long");
    struct replica *r = ims_calloc(1, sizeof(*r));
    if (!r)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&r->apply_mu, NULL);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->save_mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->has_data = o->data_dir && *o->data_dir;
    r->n_search_threads = o->n_search_threads;
    r->wait_ms = o->wait_ms > 0 ? o->wait_ms : 500;
    r->snapshot_interval_s = o->snapshot_interval_s;
    r->feed_keep = o->feed_keep > 0 ? o->feed_keep : 0;
    r->trim_interval_ms = o->trim_interval_ms > 0 ? o->trim_interval_ms : 60000;
    if (r->has_data) {
        snprintf(r->data_dir, sizeof(r->data_dir), "%s", o->data_dir);
        snprintf(r->snap_path, sizeof(r->snap_path), "%s/index.snap", r->data_dir);
        snprintf(r->seq_path, sizeof(r->seq_path), "%s/index.seq", r->data_dir);
        snprintf(r->spec_path, sizeof(r->spec_path), "%s/index.spec", r->data_dir);
    }
    enum ims_status st = IMS_OK;
    if (r->has_data && url) /* a snapshot cache folder (SQLite's store creates its own) */
        st = ims_mkdir_p(r->data_dir, err);
    if (st == IMS_OK)
        st = open_store(r, o, err);
    if (st != IMS_OK) {
        if (url)
            ims_error_prefix(err, "cannot open the catalogue");
        else
            ims_error_prefix(err, "cannot open the data folder %s", r->data_dir);
        goto fail;
    }
    read_spec(r);
    if (o->with_index) {
        st = load_snapshot(r, err);
        if (st != IMS_OK)
            goto fail;
        if (!o->defer_sync) {
            st = initial_sync_locked(r, err); /* nothing else runs yet */
            if (st != IMS_OK)
                goto fail;
            become_ready(r);
        }
    } else {
        atomic_store(&r->ready, 1);
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
    follow_stop(r);
    vindex_free(r->index);
    store_close(r->store);
    pthread_mutex_destroy(&r->apply_mu);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->save_mu);
    pthread_cond_destroy(&r->cv);
    ims_free(r);
}
