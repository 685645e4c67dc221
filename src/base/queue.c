/* SPDX-License-Identifier: MIT */
/*
 * queue.c: the bounded blocking queue between pipeline stages (base.h).
 *
 * A ring buffer of pointers under one mutex with two condition variables.
 * Bounded on purpose: a full queue blocks the producer, which is how the
 * ingest pipeline keeps memory bounded whatever the input size (a job of a
 * million URLs never holds more than the queues' capacities in flight).
 * Closing wakes everyone: producers fail, consumers drain then fail.
 */
#include "imgsearch/base.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

struct ims_queue {
    pthread_mutex_t mu;
    pthread_cond_t not_empty; /* signalled on push and close */
    pthread_cond_t not_full;  /* signalled on pop and close */
    void **items;             /* ring of `cap` slots, guarded by mu */
    size_t cap, head, len;    /* guarded by mu */
    int closed;               /* guarded by mu */
};

enum ims_status ims_queue_new(size_t capacity, struct ims_queue **out)
{
    if (capacity == 0)
        return IMS_ERR_INVALID;
    struct ims_queue *q = ims_calloc(1, sizeof(*q));
    if (!q)
        return IMS_ERR_NOMEM;
    q->items = ims_calloc(capacity, sizeof(void *));
    if (!q->items) {
        ims_free(q);
        return IMS_ERR_NOMEM;
    }
    q->cap = capacity;
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->not_empty, &ca);
    pthread_cond_init(&q->not_full, &ca);
    pthread_condattr_destroy(&ca);
    *out = q;
    return IMS_OK;
}

void ims_queue_free(struct ims_queue *q)
{
    if (!q)
        return;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    ims_free(q->items);
    ims_free(q);
}

static void push_locked(struct ims_queue *q, void *item)
{
    q->items[(q->head + q->len) % q->cap] = item;
    q->len++;
    pthread_cond_signal(&q->not_empty);
}

enum ims_status ims_queue_push(struct ims_queue *q, void *item)
{
    pthread_mutex_lock(&q->mu);
    while (!q->closed && q->len == q->cap)
        pthread_cond_wait(&q->not_full, &q->mu);
    enum ims_status st = IMS_ERR_CANCELLED;
    if (!q->closed) {
        push_locked(q, item);
        st = IMS_OK;
    }
    pthread_mutex_unlock(&q->mu);
    return st;
}

enum ims_status ims_queue_try_push(struct ims_queue *q, void *item)
{
    pthread_mutex_lock(&q->mu);
    enum ims_status st = IMS_OK;
    if (q->closed)
        st = IMS_ERR_CANCELLED;
    else if (q->len == q->cap)
        st = IMS_ERR_BUSY;
    else
        push_locked(q, item);
    pthread_mutex_unlock(&q->mu);
    return st;
}

enum ims_status ims_queue_pop_timed(struct ims_queue *q, void **item, long timeout_ms)
{
    struct timespec deadline;
    if (timeout_ms >= 0)
        ims_deadline_after_ms(CLOCK_MONOTONIC, timeout_ms, &deadline);
    enum ims_status st = IMS_OK;
    pthread_mutex_lock(&q->mu);
    while (q->len == 0 && !q->closed) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&q->not_empty, &q->mu);
        } else if (pthread_cond_timedwait(&q->not_empty, &q->mu, &deadline) == ETIMEDOUT) {
            if (q->len == 0 && !q->closed) {
                st = IMS_ERR_TIMEOUT;
                goto out;
            }
        }
    }
    if (q->len == 0) {
        st = IMS_ERR_CANCELLED;
        goto out;
    }
    *item = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    pthread_cond_signal(&q->not_full);
out:
    pthread_mutex_unlock(&q->mu);
    return st;
}

enum ims_status ims_queue_pop(struct ims_queue *q, void **item)
{
    return ims_queue_pop_timed(q, item, -1);
}

void ims_queue_close(struct ims_queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->mu);
}

size_t ims_queue_len(struct ims_queue *q)
{
    pthread_mutex_lock(&q->mu);
    size_t n = q->len;
    pthread_mutex_unlock(&q->mu);
    return n;
}
