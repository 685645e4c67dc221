/* SPDX-License-Identifier: MIT */
/*
 * service.c: ingest jobs for the server: a queue of submitted jobs and one
 * runner thread executing them in order with ingest_run's pipeline.
 *
 * DESIGN
 * ------
 * - Threads: the runner (one), plus the pipeline threads of the job it runs
 *   (see ingest.c). Submitters (HTTP threads) only copy the URLs, create the
 *   job row (state "queued") and push the job on a bounded queue: when it is
 *   full, submit answers IMS_ERR_BUSY (the server says 503), so jobs never
 *   pile up without bound.
 * - Job state lives in the catalogue's jobs table, updated by the pipeline
 *   after every commit, so GET /jobs/ID reads one row and a restart keeps
 *   finished jobs' results. Waiters sleep on `cond`, broadcast after every
 *   commit and at the end of each job.
 * - Shutdown (ingest_free): close the queue, raise `cancel` (the running job
 *   stops reading sources; what is in flight is committed), join the runner,
 *   mark jobs that never started as failed.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "ingest_int.h"

#define JOB_QUEUE_MAX 64
#define JOB_MAX_SOURCES 100000

struct job {
    char id[INGEST_JOB_ID_BYTES];
    char **sources;
    size_t n, next;
};

struct ingest {
    struct ingest_deps deps;
    struct ingest_options opts;
    struct ims_queue *jobs;
    pthread_t runner;
    int runner_started;
    atomic_int cancel;
    pthread_mutex_t mu;   /* guards nothing but the condition */
    pthread_cond_t cond;  /* broadcast after commits and job ends */
    struct ingest_hooks hooks;
    atomic_llong n_jobs;
    pthread_mutex_t upload_mu; /* guards upload_ctx */
    struct clip_ctx *upload_ctx; /* created on the first upload */
};

static void wake_waiters(void *ctx)
{
    struct ingest *ing = ctx;
    pthread_mutex_lock(&ing->mu);
    pthread_cond_broadcast(&ing->cond);
    pthread_mutex_unlock(&ing->mu);
}

/* Marks a job that never ran failed, with its reason; a write that fails
 * is logged (the job then stays "queued" in the catalogue). */
static void job_mark_failed(struct ingest *ing, const char *id, const char *why)
{
    struct ims_error err = {0};
    const char *empty = "";
    enum ims_status st = store_job_add_errors(ing->deps.store, id, &empty, &why, 1, &err);
    if (st == IMS_OK)
        st = store_job_update(ing->deps.store, id, STORE_JOB_FAILED, 0, 0, &err);
    if (st != IMS_OK)
        ims_log(IMS_LOG_ERROR, "job %s: cannot mark it failed (%s): %s", id, why,
                ims_error_message(&err, st));
}

static void job_free(struct job *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n; i++)
        ims_free(j->sources[i]);
    ims_free(j->sources);
    ims_free(j);
}

static int job_next(void *ctx, const char **source)
{
    struct job *j = ctx;
    if (j->next >= j->n)
        return 0;
    *source = j->sources[j->next++];
    return 1;
}

static void *runner_main(void *arg)
{
    struct ingest *ing = arg;
    void *v;
    while (ims_queue_pop(ing->jobs, &v) == IMS_OK) {
        struct job *j = v;
        if (atomic_load(&ing->cancel)) {
            job_mark_failed(ing, j->id, "not started: the server shut down");
        } else {
            struct ims_error err = {0};
            atomic_fetch_add(&ing->n_jobs, 1);
            enum ims_status st = ingest__run_hooked(&ing->deps, &ing->opts, job_next, j, j->id,
                                                    &ing->cancel, &ing->hooks, NULL, &err);
            if (st != IMS_OK)
                ims_log(IMS_LOG_ERROR, "job %s: %s", j->id, ims_error_message(&err, st));
        }
        job_free(j);
        wake_waiters(ing);
    }
    return NULL;
}

enum ims_status ingest_new(const struct ingest_deps *deps, const struct ingest_options *opts,
                           struct ingest **out, struct ims_error *err)
{
    struct ingest *ing = ims_calloc(1, sizeof(*ing));
    if (!ing)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    ing->deps = *deps;
    if (opts)
        ing->opts = *opts;
    else
        ingest_options_default(&ing->opts);
    ing->hooks.committed = wake_waiters;
    ing->hooks.ctx = ing;
    pthread_mutex_init(&ing->mu, NULL);
    pthread_cond_init(&ing->cond, NULL);
    pthread_mutex_init(&ing->upload_mu, NULL);
    enum ims_status st = ims_queue_new(JOB_QUEUE_MAX, &ing->jobs);
    if (st != IMS_OK) {
        ims_error_set(err, st, "out of memory");
        goto fail;
    }
    int64_t n_stale = 0;
    struct ims_error serr = {0};
    st = store_job_fail_unfinished(deps->store, &n_stale, &serr);
    if (st != IMS_OK)
        ims_log(IMS_LOG_ERROR, "cannot close the jobs of the last run: %s",
                ims_error_message(&serr, st));
    if (n_stale)
        ims_log(IMS_LOG_WARN, "%lld ingest job(s) interrupted by the last shutdown marked failed",
                (long long)n_stale);
    if (pthread_create(&ing->runner, NULL, runner_main, ing) != 0) {
        st = ims_error_set(err, IMS_ERR_INTERNAL, "cannot start the ingest thread");
        goto fail;
    }
    ing->runner_started = 1;
    *out = ing;
    return IMS_OK;
fail:
    ims_queue_free(ing->jobs);
    pthread_mutex_destroy(&ing->mu);
    pthread_cond_destroy(&ing->cond);
    pthread_mutex_destroy(&ing->upload_mu);
    ims_free(ing);
    return st;
}

void ingest_free(struct ingest *ing)
{
    if (!ing)
        return;
    atomic_store(&ing->cancel, 1);
    ims_queue_close(ing->jobs);
    if (ing->runner_started)
        pthread_join(ing->runner, NULL);
    ims_queue_free(ing->jobs);
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
    if (n > JOB_MAX_SOURCES)
        return ims_error_set(err, IMS_ERR_TOO_LARGE, "%zu URLs in one job: the limit is %d", n,
                             JOB_MAX_SOURCES);
    enum ims_status st;
    struct job *j = ims_calloc(1, sizeof(*j));
    if (!j)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    j->sources = ims_calloc(n, sizeof(char *));
    if (!j->sources) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (; j->n < n; j->n++) {
        if (!sources[j->n]) {
            st = ims_error_set(err, IMS_ERR_INVALID, "URL %zu is null", j->n);
            goto fail;
        }
        j->sources[j->n] = ims_strdup(sources[j->n]);
        if (!j->sources[j->n]) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    new_job_id(j->id);
    st = store_job_create(ing->deps.store, j->id, (int64_t)n, err);
    if (st != IMS_OK)
        goto fail;
    st = ims_queue_try_push(ing->jobs, j);
    if (st != IMS_OK) {
        job_mark_failed(ing, j->id, "not started: too many jobs queued");
        st = ims_error_set(err, st == IMS_ERR_BUSY ? IMS_ERR_BUSY : IMS_ERR_CANCELLED,
                           st == IMS_ERR_BUSY ? "too many ingest jobs queued; try again later"
                                              : "the ingest service is shutting down");
        goto fail;
    }
    snprintf(id, INGEST_JOB_ID_BYTES, "%s", j->id);
    return IMS_OK;
fail:
    job_free(j);
    return st;
}

enum ims_status ingest_job_get(struct ingest *ing, const char *id, struct store_job *job,
                               struct ims_error *err)
{
    return store_job_get(ing->deps.store, id, job, err);
}

enum ims_status ingest_job_wait(struct ingest *ing, const char *id, long timeout_ms,
                                struct store_job *job, struct ims_error *err)
{
    double deadline = ims_now() + (double)timeout_ms / 1000.0;
    for (;;) {
        enum ims_status st = store_job_get(ing->deps.store, id, job, err);
        if (st != IMS_OK)
            return st;
        if (job->state == STORE_JOB_DONE || job->state == STORE_JOB_FAILED)
            return IMS_OK;
        double left = deadline - ims_now();
        if (left <= 0) {
            /* *job holds the latest state; the caller may report it */
            return ims_error_set(err, IMS_ERR_TIMEOUT, "job %s still %s after %ld ms", id,
                                 store_job_state_name(job->state), timeout_ms);
        }
        store_job_fini(job);
        /* commits broadcast; the bounded sleep also covers a missed wake-up */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long wait_ns = (long)(IMS_MIN(left, 0.25) * 1e9);
        ts.tv_nsec += wait_ns;
        while (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&ing->mu);
        pthread_cond_timedwait(&ing->cond, &ing->mu, &ts);
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
}
