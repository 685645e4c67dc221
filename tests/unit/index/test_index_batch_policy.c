/* SPDX-License-Identifier: MIT */
/*
 * test_index_batch_policy.c: the coalescing policy of exact searches
 * (index_batch_policy.c, issue 11 item 3), by states, never by durations:
 * - adaptive (default) with 2 runners: two concurrent searches both scan
 *   at once (both inside the batch hook, none queued); a third queues and
 *   is served by the next scan to end; every answer equals the one-at-a-time
 *   answer;
 * - always: the second of two concurrent searches queues behind the first;
 * - never: no queue at all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imgsearch/index.h"
#include "index_int.h"

#define N 4000
#define DIM 64
#define K 10

static float *vecs;
static struct vindex *vx;
static atomic_int in_hook, released;

static void hook(struct vindex *v, int n)
{
    (void)v;
    (void)n;
    atomic_fetch_add(&in_hook, 1);
    while (!atomic_load(&released))
        sched_yield();
}

struct job {
    const float *q;
    float s[K];
    int64_t id[K];
    int n;
    enum ims_status st;
    pthread_t th;
};

static void *run(void *arg)
{
    struct job *j = arg;
    j->st = vindex_search(vx, j->q, K, j->s, j->id, &j->n, NULL);
    return NULL;
}

static int setup(void **state)
{
    (void)state;
    uint64_t r = 0x9e3779b97f4a7c15ull;
    vecs = malloc(sizeof(float) * N * DIM);
    int64_t *ids = malloc(sizeof(int64_t) * N);
    for (int i = 0; i < N * DIM; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        vecs[i] = (float)((double)(r % 20001) / 10000.0 - 1.0);
    }
    for (int i = 0; i < N; i++)
        ids[i] = i;
    assert_int_equal(vindex_new("Flat", DIM, &vx, NULL), IMS_OK);
    assert_int_equal(vindex_add(vx, ids, vecs, N, NULL), IMS_OK);
    free(ids);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vindex_free(vx);
    free(vecs);
    return 0;
}

/* waits (by yielding, no clock) until cond() or a generous number of
 * yields; the caller asserts the state it expects */
static void wait_for(int (*cond)(void))
{
    for (long i = 0; i < 20000000 && !cond(); i++)
        sched_yield();
}
static int two_in_hook(void) { return atomic_load(&in_hook) >= 2; }
static int one_in_hook_one_queued(void)
{
    return atomic_load(&in_hook) >= 1 && index__batch_queued(vx) >= 1;
}
static int one_queued(void) { return index__batch_queued(vx) >= 1; }

static void check_answers(struct job *j, int n)
{
    int saved = index__batch_enabled;
    index__batch_enabled = 0;
    index__batch_hook = NULL;
    for (int i = 0; i < n; i++) {
        float s[K];
        int64_t id[K];
        int nf = 0;
        assert_int_equal(j[i].st, IMS_OK);
        assert_int_equal(vindex_search(vx, j[i].q, K, s, id, &nf, NULL), IMS_OK);
        assert_int_equal(j[i].n, nf);
        assert_memory_equal(j[i].id, id, sizeof id);
        assert_memory_equal(j[i].s, s, sizeof s);
    }
    index__batch_enabled = saved;
}

static void test_adaptive(void **state)
{
    (void)state;
    index__batch_enabled = 2;
    index__batch_max_runners = 2;
    atomic_store(&in_hook, 0);
    atomic_store(&released, 0);
    index__batch_hook = hook;
    uint64_t b0, s0, b1, s1;
    index__batch_stats(vx, &b0, &s0);
    struct job j[3] = {{.q = vecs}, {.q = vecs + DIM}, {.q = vecs + 2 * DIM}};
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&j[i].th, NULL, run, &j[i]), 0);
    wait_for(two_in_hook);
    assert_int_equal(atomic_load(&in_hook), 2); /* both scan at once */
    assert_int_equal(index__batch_queued(vx), 0);
    assert_int_equal(pthread_create(&j[2].th, NULL, run, &j[2]), 0);
    wait_for(one_queued);
    assert_int_equal(index__batch_queued(vx), 1); /* every core busy: it queues */
    assert_int_equal(atomic_load(&in_hook), 2);
    atomic_store(&released, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(j[i].th, NULL);
    index__batch_stats(vx, &b1, &s1);
    assert_int_equal(s1 - s0, 3);
    assert_int_equal(b1 - b0, 3);
    assert_int_equal(index__batch_queued(vx), 0);
    check_answers(j, 3);
    index__batch_hook = NULL;
    index__batch_max_runners = 0;
}

static void test_always_and_never(void **state)
{
    (void)state;
    /* always: the second waits behind the first */
    index__batch_enabled = 1;
    atomic_store(&in_hook, 0);
    atomic_store(&released, 0);
    index__batch_hook = hook;
    struct job j[2] = {{.q = vecs + 3 * DIM}, {.q = vecs + 4 * DIM}};
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&j[i].th, NULL, run, &j[i]), 0);
    wait_for(one_in_hook_one_queued);
    assert_int_equal(atomic_load(&in_hook), 1);
    assert_int_equal(index__batch_queued(vx), 1);
    atomic_store(&released, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(j[i].th, NULL);
    check_answers(j, 2);
    /* never: no queue, no hook (no batch at all) */
    index__batch_enabled = 0;
    atomic_store(&in_hook, 0);
    struct job k[4] = {{.q = vecs}, {.q = vecs + DIM}, {.q = vecs + 2 * DIM}, {.q = vecs + 5 * DIM}};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&k[i].th, NULL, run, &k[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(k[i].th, NULL);
    assert_int_equal(atomic_load(&in_hook), 0);
    check_answers(k, 4);
    index__batch_hook = NULL;
    index__batch_enabled = 2;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adaptive),
        cmocka_unit_test(test_always_and_never),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
