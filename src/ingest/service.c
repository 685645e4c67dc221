/* SPDX-License-Identifier: MIT */
/*
 * service.c: ingest jobs shared by every node of a catalogue. A job is a
 * catalogue row with one row per item (store.h "shared ingest"); whichever
 * nodes run a service claim the items in batches with a lease and run them
 * through one long-lived pipeline (ingest.c).
 *
 * DESIGN
 * ------
 * - Submitting (HTTP threads): store_job_create, then the URLs as item rows
 *   in chunks of SUBMIT_CHUNK (nothing is copied: a big job costs the
 *   catalogue, not this node's memory), then store_job_seal; the runner is
 *   woken. A query-only node (no_ingest) submits the same way and runs
 *   nothing: another node claims the items.
 * - The runner thread runs ingest__run_source with a source that claims
 *   items (store_job_claim, at most claim_batch at once and never more than
 *   MAX_CLAIMED held), so memory stays flat whatever the size of the jobs.
 *   When nothing is queued it looks again every poll_ms, or at once when a
 *   local submit wakes it.
 * - Every claimed item is in `held` until its report comes back from the
 *   pipeline's writer (hooks.finished), which records the outcomes with
 *   store_job_finish in one transaction and wakes the waiters; items that
 *   became rows (added, completed, duplicate) are recorded by the insert's
 *   own transaction (store_insert_finish, hooks.finish_node), so only
 *   failures cost a finish of their own. The renewer
 *   thread extends the leases of `held` every lease_ms / 3; a node that dies
 *   stops renewing, its leases run out and another node claims the items
 *   again. A finish by a node that lost its lease is ignored by the store,
 *   so an item is never counted twice; the image itself is stored once by
 *   the catalogue's dedup (the node redoing it finds it by source).
 * - An item claimed more than max_attempts times (it killed or stalled the
 *   nodes that tried it) is finished as failed without being tried again.
 * - Job state is read from the catalogue, so every node answers the same.
 *   ingest_job_wait polls it (woken early by local finishes) and, once the
 *   job ended, makes this node's index cover the catalogue's current seq.
 * - Shutdown (ingest_free): raise `cancel`; the source stops claiming, the
 *   pipeline finishes what it holds (committed and recorded); claimed items
 *   not yet started get a lease of 1 ms (claimable again at once); then the
 *   renewer stops.
 * - Dependency: this file calls ingest.c's pipeline; the pipeline calls
 *   back only through the source and hooks function pointers.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "ingest_int.h"

#define SUBMIT_CHUNK 1000
#define MAX_CLAIMED 256 /* cap of what a node holds at once: 2 claim batches */

struct ingest {
    struct ingest_deps deps;
    struct ingest_options opts;
    char node_id[STORE_NODE_ID_MAX_BYTES + 1];
    pthread_t runner, renewer;
    int runner_started, renewer_started;
    atomic_int cancel;
    pthread_mutex_t mu;  /* guards held, n_held, wake, and the condition */
    pthread_cond_t cond; /* broadcast after finishes, submits and at shutdown */
    int64_t held[MAX_CLAIMED];
    size_t n_held;
    int wake;            /* a local submit happened: claim at once */
    struct ingest_hooks hooks;
    atomic_llong n_jobs;
    pthread_mutex_t upload_mu;   /* guards upload_ctx */
    struct clip_ctx *upload_ctx; /* created on the first upload */
};

/* ---- time ------------------------------------------------------------------------- */

static void deadline_in(struct timespec *ts, long ms)
{
    ims_deadline_after_ms(CLOCK_REALTIME, ms, ts); /* the condition's default clock */
}

/* Waits on the service's condition for at most ms; ing->mu held. */
static void wait_locked(struct ingest *ing, long ms)
{
    struct timespec ts;
    deadline_in(&ts, ms);
    pthread_cond_timedwait(&ing->cond, &ing->mu, &ts);
}

/* ---- the claimed items ------------------------------------------------------------- */

static void held_remove_locked(struct ingest *ing, int64_t item_id)
{
    for (size_t i = 0; i < ing->n_held; i++)
        if (ing->held[i] == item_id) {
            ing->held[i] = ing->held[--ing->n_held];
            return;
        }
}

static void finish_items(struct ingest *ing, const struct store_item_result *res, size_t n)
{
    if (n == 0)
        return;
    struct ims_error err = {0};
    double t0 = ims_now();
    enum ims_status st = store_job_finish(ing->deps.store, ing->node_id, res, n, NULL, &err);
    ingest__hooks_catalogue(&ing->hooks, t0);
    if (st != IMS_OK)
        /* the leases run out and the items are redone (found as duplicates) */
        ims_log(IMS_LOG_ERROR, "cannot record %zu finished job item(s): %s", n,
                ims_error_message(&err, st));
}

/* hooks.finished: the writer's reports of one transaction. Reports without
 * a tag are uploads; items recorded by the insert's transaction (an added,
 * completed or duplicate row: hooks.finish_node) are not recorded again. */
static void on_finished(void *ctx, const struct ingest_item_report *r, const uint8_t *recorded,
                        size_t n)
{
    struct ingest *ing = ctx;
    struct store_item_result res[n > 0 ? n : 1];
    char codes[n > 0 ? n : 1][32];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (r[i].tag <= 0 || (recorded && recorded[i]))
            continue; /* an upload, or recorded with its row (finish_node) */
        struct store_item_result *o = &res[k++];
        memset(o, 0, sizeof(*o));
        o->item_id = r[i].tag;
        if (r[i].outcome == INGEST_FAILED) {
            o->outcome = STORE_ITEM_ERROR;
            snprintf(codes[i], sizeof(codes[i]), "%s", ims_status_name(r[i].status));
            o->code = codes[i];
            o->error = r[i].error ? r[i].error : ims_strerror(r[i].status);
        } else {
            o->outcome = r[i].outcome == INGEST_DUPLICATE ? STORE_ITEM_DUPLICATE
                                                          : STORE_ITEM_ADDED;
            o->image_id = r[i].id;
        }
    }
    finish_items(ing, res, k);
    pthread_mutex_lock(&ing->mu);
    for (size_t i = 0; i < n; i++)
        if (r[i].tag > 0)
            held_remove_locked(ing, r[i].tag);
    pthread_cond_broadcast(&ing->cond);
    pthread_mutex_unlock(&ing->mu);
}

/* ---- the claiming source ------------------------------------------------------------ */

struct claimer {
    struct ingest *ing;
    struct store_job_item *items; /* the last claim */
    size_t n, next;
    double next_poll;             /* ims_now() before which the catalogue is not asked */
};

/* Hands items not given to the pipeline back (lease ends in 1 ms). */
static void claimer_release(struct claimer *c)
{
    struct ingest *ing = c->ing;
    size_t left = c->n - c->next;
    if (left > 0) {
        int64_t ids[left];
        for (size_t i = 0; i < left; i++)
            ids[i] = c->items[c->next + i].item_id;
        struct ims_error err = {0};
        enum ims_status st = store_job_renew(ing->deps.store, ing->node_id, ids, left, 1, NULL,
                                             &err);
        if (st != IMS_OK)
            ims_log(IMS_LOG_WARN, "cannot hand back %zu claimed item(s) (their lease runs out): %s",
                    left, ims_error_message(&err, st));
        pthread_mutex_lock(&ing->mu);
        for (size_t i = 0; i < left; i++)
            held_remove_locked(ing, ids[i]);
        pthread_mutex_unlock(&ing->mu);
    }
    store_job_items_free(c->items, c->n);
    c->items = NULL;
    c->n = c->next = 0;
}

/* Claims a batch; items claimed too often are failed here. Returns the
 * number of items now available. */
static size_t claimer_claim(struct claimer *c, size_t room)
{
    struct ingest *ing = c->ing;
    store_job_items_free(c->items, c->n);
    c->items = NULL;
    c->n = c->next = 0;
    size_t want = IMS_MIN(room, (size_t)ing->opts.claim_batch);
    struct ims_error err = {0};
    struct store_job_item *items = NULL;
    size_t n = 0;
    double t0 = ims_now();
    enum ims_status st = store_job_claim(ing->deps.store, ing->node_id, want,
                                         (int64_t)ing->opts.lease_ms, &items, &n, &err);
    ingest__hooks_catalogue(&ing->hooks, t0);
    if (st != IMS_OK) {
        ims_log(IMS_LOG_ERROR, "cannot claim job items: %s", ims_error_message(&err, st));
        return 0;
    }
    /* poison items: finished as failed, never handed to the pipeline */
    struct store_item_result dead[n > 0 ? n : 1];
    char msg[n > 0 ? n : 1][96];
    size_t n_dead = 0, kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].attempts > ing->opts.max_attempts) {
            struct store_item_result *o = &dead[n_dead];
            memset(o, 0, sizeof(*o));
            o->item_id = items[i].item_id;
            o->outcome = STORE_ITEM_ERROR;
            o->code = ims_status_name(IMS_ERR_CANCELLED);
            snprintf(msg[n_dead], sizeof(msg[n_dead]),
                     "given up after %d attempts (the nodes that tried it stopped)",
                     items[i].attempts - 1);
            o->error = msg[n_dead];
            n_dead++;
            ims_free(items[i].source);
            continue;
        }
        items[kept++] = items[i];
    }
    finish_items(ing, dead, n_dead);
    pthread_mutex_lock(&ing->mu);
    for (size_t i = 0; i < kept; i++)
        ing->held[ing->n_held++] = items[i].item_id;
    pthread_mutex_unlock(&ing->mu);
    if (kept == 0) {
        ims_free(items);
        items = NULL;
    }
    c->items = items;
    c->n = kept;
    return kept;
}

static int claimer_next(void *ctx, int wait_ms, const char **source, int64_t *tag)
{
    struct claimer *c = ctx;
    struct ingest *ing = c->ing;
    if (atomic_load(&ing->cancel))
        return 0;
    if (c->next < c->n) {
        *source = c->items[c->next].source;
        *tag = c->items[c->next].item_id;
        c->next++;
        return 1;
    }
    pthread_mutex_lock(&ing->mu);
    /* two batches in hand keep the pipeline busy; more would starve the
     * other nodes of a small job */
    size_t cap = 2 * (size_t)ing->opts.claim_batch;
    size_t room = ing->n_held < cap ? cap - ing->n_held : 0;
    int woken = ing->wake;
    ing->wake = 0;
    double now = ims_now();
    if (room == 0 || (!woken && now < c->next_poll)) {
        /* full, or nothing was there a moment ago: wait for a finish or a
         * submit, or (not full) until the next look at the catalogue */
        long ms = wait_ms;
        if (room > 0)
            ms = IMS_MIN(ms, (long)((c->next_poll - now) * 1000.0) + 1);
        if (ms > 0 && !atomic_load(&ing->cancel))
            wait_locked(ing, ms);
        pthread_mutex_unlock(&ing->mu);
        return -1;
    }
    pthread_mutex_unlock(&ing->mu);
    if (claimer_claim(c, room) == 0) {
        c->next_poll = ims_now() + (double)ing->opts.poll_ms / 1000.0;
        return -1;
    }
    return claimer_next(ctx, 0, source, tag);
}

static void *runner_main(void *arg)
{
    struct ingest *ing = arg;
    while (!atomic_load(&ing->cancel)) {
        struct claimer c = {ing, NULL, 0, 0, 0};
        struct ingest__source src = {claimer_next, &c};
        struct ims_error err = {0};
        enum ims_status st =
            ingest__run_source(&ing->deps, &ing->opts, &src, &ing->cancel, &ing->hooks, NULL,
                               &err);
        claimer_release(&c);
        if (st != IMS_OK && !atomic_load(&ing->cancel)) {
            /* the catalogue failed: what this node held is redone when the
             * leases run out; try again in a moment */
            ims_log(IMS_LOG_ERROR, "ingest: %s; retrying in 1 s", ims_error_message(&err, st));
            pthread_mutex_lock(&ing->mu);
            wait_locked(ing, 1000);
            pthread_mutex_unlock(&ing->mu);
        }
    }
    return NULL;
}

/* ---- leases -------------------------------------------------------------------------- */

static void *renewer_main(void *arg)
{
    struct ingest *ing = arg;
    long every = IMS_MAX(ing->opts.lease_ms / 3, 1);
    int64_t ids[MAX_CLAIMED];
    pthread_mutex_lock(&ing->mu);
    for (;;) {
        double until = ims_now() + (double)every / 1000.0;
        while (!atomic_load(&ing->cancel) && ims_now() < until)
            wait_locked(ing, (long)((until - ims_now()) * 1000.0) + 1);
        if (atomic_load(&ing->cancel))
            break;
        size_t n = ing->n_held;
        memcpy(ids, ing->held, n * sizeof(*ids));
        pthread_mutex_unlock(&ing->mu);
        if (n > 0) {
            struct ims_error err = {0};
            double t0 = ims_now();
            enum ims_status st = store_job_renew(ing->deps.store, ing->node_id, ids, n,
                                                 (int64_t)ing->opts.lease_ms, NULL, &err);
            ingest__hooks_catalogue(&ing->hooks, t0);
            if (st != IMS_OK)
                ims_log(IMS_LOG_WARN, "cannot renew the lease of %zu job item(s): %s", n,
                        ims_error_message(&err, st));
        }
        pthread_mutex_lock(&ing->mu);
    }
    pthread_mutex_unlock(&ing->mu);
    return NULL;
}

/* ---- the service -------------------------------------------------------------------- */

static void default_node_id(char *out, size_t cap)
{
    char host[64] = "node";
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "node");
    host[sizeof(host) - 1] = '\0';
    snprintf(out, cap, "%s-%ld", host, (long)getpid());
}

enum ims_status ingest_new(const struct ingest_deps *deps, const struct ingest_options *opts,
                           struct ingest **out, struct ims_error *err)
{
    if (!deps || !deps->model || !deps->store)
        return ims_error_set(err, IMS_ERR_INVALID, "ingest: missing model or store");
    struct ingest *ing = ims_calloc(1, sizeof(*ing));
    if (!ing)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    enum ims_status st = IMS_OK;
    ing->deps = *deps;
    if (opts)
        ing->opts = *opts;
    else
        ingest_options_default(&ing->opts);
    struct ingest_options *o = &ing->opts;
    if (o->decode_nice == 0) /* queries before the ingest's decoding (ingest.c) */
        o->decode_nice = INGEST_SERVICE_DECODE_NICE;
    if (o->node_id && *o->node_id)
        snprintf(ing->node_id, sizeof(ing->node_id), "%s", o->node_id);
    else
        default_node_id(ing->node_id, sizeof(ing->node_id));
    o->node_id = ing->node_id;
    if (o->lease_ms < 1 || o->claim_batch < 1 || o->claim_batch > MAX_CLAIMED / 2 ||
        o->poll_ms < 1 || o->max_attempts < 1) {
        ims_free(ing);
        return ims_error_set(err, IMS_ERR_INVALID,
                             "ingest: lease, poll, attempts must be >= 1 and the claim batch "
                             "1..%d",
                             MAX_CLAIMED / 2);
    }
    ing->hooks.finished = on_finished;
    ing->hooks.ctx = ing;
    ing->hooks.finish_node = ing->node_id; /* rows' items finish with their insert */
    pthread_mutex_init(&ing->mu, NULL);
    pthread_cond_init(&ing->cond, NULL);
    pthread_mutex_init(&ing->upload_mu, NULL);
    /* counter-only jobs of older versions cannot resume: they fail, with a
     * reason; item jobs resume (their items are claimed again) */
    int64_t n_stale = 0;
    struct ims_error serr = {0};
    st = store_job_fail_unfinished(deps->store, &n_stale, &serr);
    if (st != IMS_OK)
        ims_log(IMS_LOG_ERROR, "cannot close the old jobs of the last run: %s",
                ims_error_message(&serr, st));
    else if (n_stale)
        ims_log(IMS_LOG_WARN, "%lld old-style ingest job(s) interrupted by the last shutdown "
                              "marked failed", (long long)n_stale);
    /* this node id's claims of an earlier run (crashed) are released now
     * rather than left to lapse: before any claim of this run */
    int64_t n_released = 0;
    memset(&serr, 0, sizeof(serr));
    if (!o->no_ingest &&
        (st = store_job_release_node(deps->store, ing->node_id, &n_released, &serr)) != IMS_OK)
        ims_log(IMS_LOG_ERROR, "cannot release the last run's leases: %s",
                ims_error_message(&serr, st));
    else if (n_released)
        ims_log(IMS_LOG_WARN, "%lld job item(s) still claimed by an earlier run of node %s: "
                              "released", (long long)n_released, ing->node_id);
    st = IMS_OK;
    if (!o->no_ingest) {
        if (pthread_create(&ing->renewer, NULL, renewer_main, ing) != 0) {
            st = ims_error_set(err, IMS_ERR_INTERNAL, "cannot start the ingest lease thread");
            goto fail;
        }
        ing->renewer_started = 1;
        if (pthread_create(&ing->runner, NULL, runner_main, ing) != 0) {
            st = ims_error_set(err, IMS_ERR_INTERNAL, "cannot start the ingest thread");
            goto fail;
        }
        ing->runner_started = 1;
    }
    *out = ing;
    return IMS_OK;
fail:
    ingest_free(ing);
    return st;
}

void ingest_free(struct ingest *ing)
{
    if (!ing)
        return;
    pthread_mutex_lock(&ing->mu);
    atomic_store(&ing->cancel, 1);
    pthread_cond_broadcast(&ing->cond);
    pthread_mutex_unlock(&ing->mu);
    if (ing->runner_started)
        pthread_join(ing->runner, NULL);
    if (ing->renewer_started)
        pthread_join(ing->renewer, NULL);
    clip_ctx_free(ing->upload_ctx);
    pthread_mutex_destroy(&ing->mu);
    pthread_cond_destroy(&ing->cond);
    pthread_mutex_destroy(&ing->upload_mu);
    ims_free(ing);
}

enum ims_status ingest_add_bytes(struct ingest *ing, const char *source, const void *bytes,
                                 size_t n, struct ingest_item_report *rep, char *msg,
                                 size_t msg_cap, struct ims_error *err)
{
    if (!source || !*source || !bytes || n == 0)
        return ims_error_set(err, IMS_ERR_INVALID, "empty upload");
    pthread_mutex_lock(&ing->upload_mu);
    enum ims_status st = IMS_OK;
    if (!ing->upload_ctx)
        st = clip_ctx_new(ing->deps.model, 1, &ing->upload_ctx, err);
    if (st == IMS_OK) {
        msg[0] = '\0';
        st = ingest__add_bytes(&ing->deps, &ing->opts, ing->upload_ctx, &ing->hooks, source,
                               bytes, n, rep, msg, msg_cap);
        if (st != IMS_OK)
            ims_error_set(err, st, "%s", msg);
    }
    pthread_mutex_unlock(&ing->upload_mu);
    return st;
}

static void new_job_id(char id[INGEST_JOB_ID_BYTES])
{
    uint8_t rnd[12];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)(uintptr_t)id;
        memcpy(rnd, &x, 8);
        memset(rnd + 8, 0, 4);
    }
    char hex[25];
    ims_hex(rnd, sizeof(rnd), hex);
    snprintf(id, INGEST_JOB_ID_BYTES, "j%s", hex);
}

enum ims_status ingest_submit(struct ingest *ing, const char *const *sources, size_t n,
                              char id[INGEST_JOB_ID_BYTES], struct ims_error *err)
{
    if (n == 0)
        return ims_error_set(err, IMS_ERR_INVALID, "no URLs given");
    if (n > INGEST_JOB_MAX_SOURCES)
        return ims_error_set(err, IMS_ERR_TOO_LARGE, "%zu URLs in one job: the limit is %d", n,
                             INGEST_JOB_MAX_SOURCES);
    for (size_t i = 0; i < n; i++)
        if (!sources[i] || !*sources[i])
            return ims_error_set(err, IMS_ERR_INVALID, "URL %zu is empty", i);
    if (atomic_load(&ing->cancel))
        return ims_error_set(err, IMS_ERR_CANCELLED, "the ingest service is shutting down");
    char jid[INGEST_JOB_ID_BYTES];
    new_job_id(jid);
    enum ims_status st = store_job_create(ing->deps.store, jid, 0, err);
    for (size_t at = 0; st == IMS_OK && at < n; at += SUBMIT_CHUNK)
        st = store_job_add_items(ing->deps.store, jid, sources + at, IMS_MIN(SUBMIT_CHUNK, n - at),
                                 err);
    if (st == IMS_OK)
        st = store_job_seal(ing->deps.store, jid, err);
    if (st != IMS_OK) {
        /* a job that could not be written whole must not run half: mark it
         * failed (its items, if any, still run; the caller gets the error) */
        struct ims_error e2 = {0};
        const char *why = "could not be created", *empty = "(job)";
        const char *code = ims_status_name(st);
        if (store_job_add_errors(ing->deps.store, jid, &empty, &code, &why, 1, &e2) != IMS_OK ||
            store_job_update(ing->deps.store, jid, STORE_JOB_FAILED, 0, 0, &e2) != IMS_OK)
            ims_log(IMS_LOG_ERROR, "job %s: cannot mark it failed: %s", jid, e2.message);
        return st;
    }
    atomic_fetch_add(&ing->n_jobs, 1);
    pthread_mutex_lock(&ing->mu);
    ing->wake = 1;
    pthread_cond_broadcast(&ing->cond);
    pthread_mutex_unlock(&ing->mu);
    snprintf(id, INGEST_JOB_ID_BYTES, "%s", jid);
    return IMS_OK;
}

static void show_job_rows(struct ingest *ing);

/* A job read as ended has its rows searchable on this node when the answer
 * returns: its items' finishes commit with their rows (store_insert_finish),
 * before this node's index has caught up with them. */
enum ims_status ingest_job_get(struct ingest *ing, const char *id, struct store_job *job,
                               struct ims_error *err)
{
    enum ims_status st = store_job_get(ing->deps.store, id, job, err);
    if (st == IMS_OK && (job->state == STORE_JOB_DONE || job->state == STORE_JOB_FAILED))
        show_job_rows(ing);
    return st;
}

/* A job ended (maybe on another node): this node's index covers the
 * catalogue as it is now, so its rows are searchable here. */
static void show_job_rows(struct ingest *ing)
{
    if (!ing->deps.after_commit)
        return;
    struct ims_error err = {0};
    int64_t seq = 0;
    enum ims_status st = store_change_seq(ing->deps.store, &seq, &err);
    if (st == IMS_OK)
        st = ing->deps.after_commit(ing->deps.after_commit_user, seq, &err);
    if (st != IMS_OK)
        ims_log(IMS_LOG_ERROR, "index: %s (a finished job's rows show up later)",
                ims_error_message(&err, st));
}

enum ims_status ingest_job_wait(struct ingest *ing, const char *id, long timeout_ms,
                                struct store_job *job, struct ims_error *err)
{
    double deadline = ims_now() + (double)timeout_ms / 1000.0;
    for (;;) {
        enum ims_status st = store_job_get(ing->deps.store, id, job, err);
        if (st != IMS_OK)
            return st;
        if (job->state == STORE_JOB_DONE || job->state == STORE_JOB_FAILED) {
            show_job_rows(ing);
            return IMS_OK;
        }
        double left = deadline - ims_now();
        if (left <= 0) {
            /* *job holds the latest state; the caller may report it */
            return ims_error_set(err, IMS_ERR_TIMEOUT, "job %s still %s after %ld ms", id,
                                 store_job_state_name(job->state), timeout_ms);
        }
        store_job_fini(job);
        /* local finishes broadcast; other nodes' progress is seen by polling */
        pthread_mutex_lock(&ing->mu);
        wait_locked(ing, (long)(IMS_MIN(left, 0.25) * 1000.0) + 1);
        pthread_mutex_unlock(&ing->mu);
    }
}

void ingest_get_counters(struct ingest *ing, struct ingest_counters *out)
{
    out->jobs = atomic_load(&ing->n_jobs);
    out->items_added = atomic_load(&ing->hooks.items_added);
    out->items_duplicate = atomic_load(&ing->hooks.items_duplicate);
    out->items_failed = atomic_load(&ing->hooks.items_failed);
    out->images_encoded = atomic_load(&ing->hooks.images_encoded);
    out->encode_seconds = (double)atomic_load(&ing->hooks.encode_ns) * 1e-9;
    out->catalogue_seconds = (double)atomic_load(&ing->hooks.catalogue_ns) * 1e-9;
}

const char *ingest_node_id(const struct ingest *ing)
{
    return ing->node_id;
}
