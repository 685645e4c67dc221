/* SPDX-License-Identifier: MIT */
/*
 * test_store_jobfinish.c: recording job items' finishes, on SQLite and,
 * with the argument "pg", on PostgreSQL:
 *   - store_insert_finish: rows and their items' finishes together
 *     (ADDED, DUPLICATE with the row's id; an item the node no longer holds
 *     is ignored; the job settles; a refused batch records nothing);
 *   - store_job_finish over more jobs than a batch of the old fixed table
 *     (70): every job counted and settled; two nodes finishing items of
 *     the same 70 jobs at once, in opposite orders and with failures (each
 *     one writes the job rows), both succeed: jobs are locked in one order
 *     (a deadlock would fail one of them with `busy`).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imgsearch/store.h"
#include "store_test_fx.h"
#include "store_test_util.h"

#define DIM TU_DIM
static const int64_t HOUR_MS = 3600 * 1000;

static void row_for(struct store_new_image *r, float *vec, uint8_t *h, const char *src,
                    uint64_t seed)
{
    tu_vec(vec, DIM, seed);
    tu_hash(h, seed);
    *r = (struct store_new_image){.source = src, .sha256 = h, .format = "jpeg", .width = 4,
                                  .height = 4, .embedding = vec, .dim = DIM};
}

static void job_state(struct store *st, const char *id, enum store_job_state want_state,
                      int64_t want_done, int64_t want_failed)
{
    struct store_job job;
    struct ims_error err = {0};
    if (store_job_get(st, id, &job, &err) != IMS_OK)
        fail_msg("job_get %s: %s", id, err.message);
    assert_int_equal(job.state, want_state);
    assert_int_equal(job.done, want_done);
    assert_int_equal(job.failed, want_failed);
    store_job_fini(&job);
}

static void test_insert_finish(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    const char *src[4] = {"https://e.org/1", "https://e.org/2", "https://e.org/3",
                          "https://e.org/4"};
    assert_int_equal(store_job_create(f->st, "j", 0, &err), IMS_OK);
    assert_int_equal(store_job_add_items(f->st, "j", src, 4, &err), IMS_OK);
    assert_int_equal(store_job_seal(f->st, "j", &err), IMS_OK);
    struct store_job_item *it = NULL;
    size_t n = 0;
    assert_int_equal(store_job_claim(f->st, "node-a", 4, HOUR_MS, &it, &n, &err), IMS_OK);
    assert_int_equal(n, 4);
    /* item 3 goes to node-b (node-a lost it) */
    int64_t released = 0;
    assert_int_equal(store_job_release_node(f->st, "node-a", &released, &err), IMS_OK);
    struct store_job_item *again = NULL;
    size_t n2 = 0;
    assert_int_equal(store_job_claim(f->st, "node-a", 3, HOUR_MS, &again, &n2, &err), IMS_OK);
    assert_int_equal(n2, 3);
    struct store_job_item *b = NULL;
    size_t nb = 0;
    assert_int_equal(store_job_claim(f->st, "node-b", 1, HOUR_MS, &b, &nb, &err), IMS_OK);
    assert_int_equal(nb, 1);
    /* a bad batch (no embedding) records nothing */
    struct store_new_image rows[4];
    float vec[4][DIM];
    uint8_t h[4][32];
    int64_t items[4];
    for (size_t i = 0; i < 3; i++) {
        row_for(&rows[i], vec[i], h[i], again[i].source, i + 1);
        items[i] = again[i].item_id;
    }
    row_for(&rows[3], vec[3], h[3], b[0].source, 1); /* same content as rows[0] */
    items[3] = b[0].item_id;                         /* held by node-b, not node-a */
    struct store_insert_result res[4];
    rows[1].embedding = NULL;
    assert_int_equal(store_insert_finish(f->st, rows, 4, res, "node-a", items, &err),
                     IMS_ERR_INVALID);
    job_state(f->st, "j", STORE_JOB_RUNNING, 0, 0);
    enum store_item_state ist;
    char node[64];
    int attempts = 0;
    int64_t image = 0;
    assert_int_equal(store_job_item_get(f->st, items[0], &ist, node, sizeof(node), &attempts,
                                        &image, &err),
                     IMS_OK);
    assert_int_equal(ist, STORE_ITEM_CLAIMED);
    rows[1].embedding = vec[1];
    assert_int_equal(store_insert_finish(f->st, rows, 4, res, "node-a", items, &err), IMS_OK);
    assert_int_equal(res[0].outcome, STORE_INSERTED);
    assert_int_equal(res[3].outcome, STORE_DUP_SHA256);
    assert_int_equal(res[3].id, res[0].id);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(store_job_item_get(f->st, items[i], &ist, node, sizeof(node),
                                            &attempts, &image, &err),
                         IMS_OK);
        assert_int_equal(ist, STORE_ITEM_DONE);
        assert_int_equal(image, res[i].id);
        enum store_item_outcome oc;
        assert_int_equal(store_job_item_outcome(f->st, items[i], &oc, &err), IMS_OK);
        assert_int_equal(oc, STORE_ITEM_ADDED);
    }
    /* node-b's item was not node-a's to finish */
    assert_int_equal(store_job_item_get(f->st, items[3], &ist, node, sizeof(node), &attempts,
                                        &image, &err),
                     IMS_OK);
    assert_int_equal(ist, STORE_ITEM_CLAIMED);
    assert_string_equal(node, "node-b");
    job_state(f->st, "j", STORE_JOB_RUNNING, 3, 0);
    /* node-b stores the same content: a duplicate, and the job is done */
    assert_int_equal(store_insert_finish(f->other, &rows[3], 1, res, "node-b", &items[3], &err),
                     IMS_OK);
    assert_int_equal(res[0].outcome, STORE_DUP_SHA256);
    enum store_item_outcome oc;
    assert_int_equal(store_job_item_outcome(f->st, items[3], &oc, &err), IMS_OK);
    assert_int_equal(oc, STORE_ITEM_DUPLICATE);
    job_state(f->st, "j", STORE_JOB_DONE, 4, 0);
    /* rows without items: a plain insert */
    float v[DIM];
    uint8_t hh[32];
    struct store_new_image lone;
    row_for(&lone, v, hh, "https://e.org/lone", 9);
    int64_t none = 0;
    assert_int_equal(store_insert_finish(f->st, &lone, 1, res, "node-a", &none, &err), IMS_OK);
    assert_int_equal(res[0].outcome, STORE_INSERTED);
    assert_int_equal(store_insert_finish(f->st, &lone, 1, res, "bad node\n", &none, &err),
                     IMS_ERR_INVALID);
    store_job_items_free(it, n);
    store_job_items_free(again, n2);
    store_job_items_free(b, nb);
}

#define N_JOBS 70

struct finisher {
    struct store *st;
    const char *node;
    struct store_item_result res[N_JOBS];
    enum ims_status status;
    struct ims_error err;
};

static void *finish_main(void *arg)
{
    struct finisher *fi = arg;
    fi->status = store_job_finish(fi->st, fi->node, fi->res, N_JOBS, NULL, &fi->err);
    return NULL;
}

/* 70 jobs of two items each; node-a holds the first item of every job,
 * node-b the second. Each node's results go in opposite job orders, every
 * other one a failure (a job error: a write to the job row). */
static void test_many_jobs_two_nodes(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    for (int j = 0; j < N_JOBS; j++) {
        char id[16], s1[48], s2[48];
        snprintf(id, sizeof(id), "job%02d", j);
        snprintf(s1, sizeof(s1), "https://e.org/%d/a", j);
        snprintf(s2, sizeof(s2), "https://e.org/%d/b", j);
        const char *src[2] = {s1, s2};
        assert_int_equal(store_job_create(f->st, id, 0, &err), IMS_OK);
        assert_int_equal(store_job_add_items(f->st, id, src, 2, &err), IMS_OK);
        assert_int_equal(store_job_seal(f->st, id, &err), IMS_OK);
    }
    struct store_job_item *a = NULL;
    size_t na = 0, nb = 0;
    assert_int_equal(store_job_claim(f->st, "node-a", 2 * N_JOBS, HOUR_MS, &a, &na, &err),
                     IMS_OK);
    assert_int_equal(na, 2 * N_JOBS);
    struct finisher fa = {.st = f->st, .node = "node-a"}, fb = {.st = f->other, .node = "node-b"};
    size_t ka = 0, kb = 0;
    int64_t b_items[N_JOBS];
    for (size_t i = 0; i < na; i++) {
        int j = atoi(a[i].job_id + 3);
        struct store_item_result r = {.item_id = a[i].item_id,
                                      .outcome = j % 2 ? STORE_ITEM_ERROR : STORE_ITEM_ADDED,
                                      .code = "io", .error = "unreachable"};
        if (a[i].index == 0)
            fa.res[N_JOBS - 1 - ka++] = r; /* node-a: jobs in reverse order */
        else
            b_items[kb++] = a[i].item_id;
    }
    assert_int_equal(ka, N_JOBS);
    assert_int_equal(kb, N_JOBS);
    /* node-b's share: node-a lets their leases lapse (as a node that
     * stopped would), node-b claims them */
    assert_int_equal(store_job_renew(f->st, "node-a", b_items, N_JOBS, 1, NULL, &err), IMS_OK);
    for (int tries = 0; nb < N_JOBS && tries < 1000; tries++) {
        struct store_job_item *more = NULL;
        size_t nm = 0;
        assert_int_equal(store_job_claim(f->other, "node-b", N_JOBS, HOUR_MS, &more, &nm, &err),
                         IMS_OK);
        for (size_t i = 0; i < nm; i++) {
            int j = atoi(more[i].job_id + 3);
            assert_int_equal(more[i].index, 1);
            fb.res[nb++] = (struct store_item_result){
                .item_id = more[i].item_id,
                .outcome = j % 2 ? STORE_ITEM_ADDED : STORE_ITEM_ERROR,
                .code = "io", .error = "unreachable"}; /* node-b: jobs in order */
        }
        store_job_items_free(more, nm);
    }
    assert_int_equal(nb, N_JOBS);
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, finish_main, &fa), 0);
    assert_int_equal(pthread_create(&tb, NULL, finish_main, &fb), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    if (fa.status != IMS_OK)
        fail_msg("node-a: %s", fa.err.message);
    if (fb.status != IMS_OK)
        fail_msg("node-b: %s", fb.err.message);
    for (int j = 0; j < N_JOBS; j++) {
        char id[16];
        snprintf(id, sizeof(id), "job%02d", j);
        job_state(f->st, id, STORE_JOB_DONE, 1, 1);
    }
    store_job_items_free(a, na);
}

int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_insert_finish, tu_fx_setup_open2, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_many_jobs_two_nodes, tu_fx_setup_open2, tu_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
