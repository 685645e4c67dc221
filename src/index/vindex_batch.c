/* SPDX-License-Identifier: MIT */
/*
 * vindex_batch.c: coalescing of concurrent exact searches (Flat, FlatF16):
 * a search arriving while a scan runs queues, and the next batch reads the
 * rows once for all its members (vindex.c's DESIGN block,
 * docs/internals/index.md). Owns the batch queue (struct vindex's batch_*
 * fields, under batch_mu) and takes the index's read lock for each batch.
 */

#include "index_int.h"

#include <string.h>

/* ---- coalesced exact searches ------------------------------------------------------ */

/* A search taking part in coalescing. Borrowed from the caller's stack: it
 * lives until its own vindex_search returns, which is after its batch. */
struct index__batch_member {
    const float *q;
    int k;
    float *scores;  /* the caller's arrays, filled by the batch's leader */
    int64_t *ids;
    int n_found;
    enum ims_status st;
    enum { MEMBER_WAITING, MEMBER_LEADS, MEMBER_DONE } state; /* under batch_mu */
    struct index__batch_member *next; /* queue link, then the batch list */
    pthread_cond_t wake;              /* signalled under batch_mu */
};

int index__batch_enabled = 2;
void (*index__batch_hook)(struct vindex *vx, int n_members) = NULL;

/* Runs the searches of one batch (all exact kinds) under one read lock and
 * fills every member's results and status. A batch of 1 takes the one-query
 * path, so a lone search costs what it cost before coalescing existed. */
static void run_batch(struct vindex *vx, struct index__batch_member **m, int n)
{
    enum ims_status st = IMS_OK;
    struct index__topk tops[INDEX_BATCH_MAX] = {{0}};
    int kk[INDEX_BATCH_MAX], n_tops = 0;
    float *qs = NULL;
    const size_t dim = (size_t)vx->dim;
    IMS_ASSERT(n >= 1 && n <= INDEX_BATCH_MAX);
    pthread_rwlock_rdlock(&vx->lock);
    size_t count = vx->store.n;
    int n_threads = vx->params.n_threads;
    for (int i = 0; i < n; i++) {
        kk[i] = (int)IMS_MIN((size_t)m[i]->k, count);
        m[i]->n_found = 0;
    }
    if (count == 0)
        goto out;
    for (; n_tops < n; n_tops++) {
        st = index__topk_init(&tops[n_tops], kk[n_tops]);
        if (st != IMS_OK)
            goto out;
    }
    if (n == 1) {
        if (vx->kind == INDEX_KIND_FLAT)
            st = index__search_flat_multi(vx, m[0]->q, 1, kk, n_threads, tops);
        else
            st = index__search_f16(vx, m[0]->q, kk[0], n_threads, &tops[0]);
    } else {
        qs = ims_malloc(sizeof(float) * (size_t)n * dim);
        if (!qs) {
            st = IMS_ERR_NOMEM;
            goto out;
        }
        for (int i = 0; i < n; i++)
            memcpy(qs + (size_t)i * dim, m[i]->q, sizeof(float) * dim);
        if (vx->kind == INDEX_KIND_FLAT)
            st = index__search_flat_multi(vx, qs, n, kk, n_threads, tops);
        else
            st = index__search_f16_multi(vx, qs, n, kk, n_threads, tops);
    }
    if (st != IMS_OK)
        goto out;
    for (int i = 0; i < n; i++) {
        index__topk_sort(&tops[i]);
        memcpy(m[i]->scores, tops[i].scores, (size_t)tops[i].n * sizeof(float));
        memcpy(m[i]->ids, tops[i].ids, (size_t)tops[i].n * sizeof(int64_t));
        m[i]->n_found = tops[i].n;
    }
out:
    pthread_rwlock_unlock(&vx->lock);
    for (int i = 0; i < n; i++)
        m[i]->st = st;
    for (int i = 0; i < n_tops; i++)
        index__topk_fini(&tops[i]);
    ims_free(qs);
}

/* Coalescing (docs/internals/index.md): the first search to arrive while no
 * batch runs leads at once, alone. Searches arriving while a batch scans
 * queue; when the scan ends its leader hands each member its results, then
 * makes the oldest queued search the leader of the next batch (it and up to
 * INDEX_BATCH_MAX - 1 more, in arrival order) and wakes it. No timer: a
 * batch is whatever queued during the previous scan. */
static void search_coalesced(struct vindex *vx, struct index__batch_member *me)
{
    struct index__batch_member *batch[INDEX_BATCH_MAX];
    int n = 0;
    pthread_mutex_lock(&vx->batch_mu);
    if (vx->batch_running < index__batch_runners()) { /* index_batch_policy.c */
        vx->batch_running++;
        batch[n++] = me;
    } else {
        pthread_cond_init(&me->wake, NULL);
        me->state = MEMBER_WAITING;
        me->next = NULL;
        if (vx->queue_tail)
            vx->queue_tail->next = me;
        else
            vx->queue_head = me;
        vx->queue_tail = me;
        vx->n_queued++;
        while (me->state == MEMBER_WAITING)
            pthread_cond_wait(&me->wake, &vx->batch_mu);
        /* whoever changed the state did so and signalled under batch_mu and
         * touches `me` no more once it has released it */
        pthread_cond_destroy(&me->wake);
        if (me->state == MEMBER_DONE) {
            pthread_mutex_unlock(&vx->batch_mu);
            return;
        }
        for (struct index__batch_member *m = me; m; m = m->next) /* MEMBER_LEADS */
            batch[n++] = m;
    }
    pthread_mutex_unlock(&vx->batch_mu);

    if (index__batch_hook)
        index__batch_hook(vx, n);
    run_batch(vx, batch, n);

    pthread_mutex_lock(&vx->batch_mu);
    vx->n_batches++;
    vx->n_batched += (uint64_t)n;
    for (int i = 1; i < n; i++) { /* batch[0] is this thread's own search */
        batch[i]->state = MEMBER_DONE;
        pthread_cond_signal(&batch[i]->wake);
    }
    struct index__batch_member *lead = vx->queue_head;
    if (lead) {
        struct index__batch_member *last = lead;
        int taken = 1;
        while (taken < INDEX_BATCH_MAX && last->next) {
            last = last->next;
            taken++;
        }
        vx->queue_head = last->next;
        if (!vx->queue_head)
            vx->queue_tail = NULL;
        vx->n_queued -= taken;
        last->next = NULL;
        lead->state = MEMBER_LEADS;
        pthread_cond_signal(&lead->wake);
    } else {
        vx->batch_running--;
    }
    pthread_mutex_unlock(&vx->batch_mu);
}

int index__batch_queued(struct vindex *vx)
{
    pthread_mutex_lock(&vx->batch_mu);
    int n = vx->n_queued;
    pthread_mutex_unlock(&vx->batch_mu);
    return n;
}

void index__batch_stats(struct vindex *vx, uint64_t *n_batches, uint64_t *n_searches)
{
    pthread_mutex_lock(&vx->batch_mu);
    if (n_batches)
        *n_batches = vx->n_batches;
    if (n_searches)
        *n_searches = vx->n_batched;
    pthread_mutex_unlock(&vx->batch_mu);
}

enum ims_status index__batch_search(struct vindex *vx, const float *q, int k, float *scores,
                                    int64_t *ids, int *n_found)
{
    struct index__batch_member me = {.q = q, .k = k, .scores = scores, .ids = ids};
    struct index__batch_member *one = &me;
    if (index__batch_enabled)
        search_coalesced(vx, &me);
    else
        run_batch(vx, &one, 1);
    if (me.st == IMS_OK)
        *n_found = me.n_found;
    return me.st;
}
