/* SPDX-License-Identifier: MIT */
/* test_store_leases.c: a node restarted under the same node id takes its
 * old claims back at once (store_job_release_node) instead of waiting for
 * their leases to lapse; other nodes' claims are untouched. Runs on SQLite,
 * and on PostgreSQL when started with "pg". */
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


static void test_release_node(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    const char *src[6] = {"https://e.org/1", "https://e.org/2", "https://e.org/3",
                          "https://e.org/4", "https://e.org/5", "https://e.org/6"};
    assert_int_equal(store_job_create(f->st, "j", 0, &err), IMS_OK);
    assert_int_equal(store_job_add_items(f->st, "j", src, 6, &err), IMS_OK);
    struct store_job_item *a = NULL, *b = NULL, *again = NULL;
    size_t na = 0, nb = 0, n2 = 0;
    const int64_t hour = 3600 * 1000;
    assert_int_equal(store_job_claim(f->st, "node-a", 4, hour, &a, &na, &err), IMS_OK);
    assert_int_equal(na, 4);
    assert_int_equal(store_job_claim(f->st, "node-b", 4, hour, &b, &nb, &err), IMS_OK);
    assert_int_equal(nb, 2);
    /* node-a "crashes" and starts again: its hour-long leases go at once */
    int64_t released = -1;
    assert_int_equal(store_job_release_node(f->st, "node-a", &released, &err), IMS_OK);
    assert_int_equal(released, 4);
    assert_int_equal(store_job_claim(f->st, "node-a", 10, hour, &again, &n2, &err), IMS_OK);
    assert_int_equal(n2, 4); /* its own four, not node-b's */
    for (size_t i = 0; i < n2; i++) {
        assert_int_equal(again[i].attempts, 2);
        enum store_item_state is;
        char node[64];
        int attempts = 0;
        int64_t image_id = 0;
        assert_int_equal(store_job_item_get(f->st, again[i].item_id, &is, node, sizeof(node),
                                            &attempts, &image_id, &err),
                         IMS_OK);
        assert_int_equal(is, STORE_ITEM_CLAIMED);
        assert_string_equal(node, "node-a");
    }
    for (size_t i = 0; i < nb; i++) {
        enum store_item_state is;
        char node[64];
        int attempts = 0;
        int64_t image_id = 0;
        assert_int_equal(store_job_item_get(f->st, b[i].item_id, &is, node, sizeof(node),
                                            &attempts, &image_id, &err),
                         IMS_OK);
        assert_string_equal(node, "node-b");
        assert_int_equal(attempts, 1);
    }
    /* nothing left to release for a node without claims; a bad id is refused */
    assert_int_equal(store_job_release_node(f->st, "node-c", &released, &err), IMS_OK);
    assert_int_equal(released, 0);
    assert_int_equal(store_job_release_node(f->st, "", &released, &err), IMS_ERR_INVALID);
    store_job_items_free(a, na);
    store_job_items_free(b, nb);
    store_job_items_free(again, n2);
}

static int64_t insert(struct store *st, const char *src, uint64_t k, int64_t added,
                      enum store_insert_outcome *outcome)
{
    float vec[8];
    uint8_t h[32];
    tu_vec(vec, 8, k);
    tu_hash(h, k);
    struct store_new_image r = {.source = src, .sha256 = h, .embedding = vec, .dim = 8,
                                .added = added};
    struct store_insert_result res;
    struct ims_error err = {0};
    if (store_insert_many(st, &r, 1, &res, &err) != IMS_OK)
        fail_msg("insert: %s", err.message);
    if (outcome)
        *outcome = res.outcome;
    return res.id;
}

static enum store_item_outcome outcome_of(struct store *st, int64_t item)
{
    enum store_item_outcome o;
    struct ims_error err = {0};
    assert_int_equal(store_job_item_outcome(st, item, &o, &err), IMS_OK);
    return o;
}

/* A node commits its items' rows and dies before recording the finish;
 * restarted, it redoes them: each finds its own row (a duplicate by
 * source) and is recorded as ADDED, while a real duplicate (the same URL
 * twice in the job, a row older than the job) stays DUPLICATE. */
static void test_redo_after_crash_is_added(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    insert(f->st, "https://e.org/old", 100, 1000, NULL); /* long before the job */
    const char *src[5] = {"https://e.org/a", "https://e.org/b", "https://e.org/c",
                          "https://e.org/a", "https://e.org/old"};
    assert_int_equal(store_job_create(f->st, "j", 0, &err), IMS_OK);
    assert_int_equal(store_job_add_items(f->st, "j", src, 5, &err), IMS_OK);
    assert_int_equal(store_job_seal(f->st, "j", &err), IMS_OK);
    struct store_job_item *it = NULL;
    size_t n = 0;
    assert_int_equal(store_job_claim(f->st, "node-a", 5, 3600000, &it, &n, &err), IMS_OK);
    assert_int_equal(n, 5);
    enum store_item_outcome unused;
    assert_int_equal(store_job_item_outcome(f->st, it[0].item_id, &unused, &err), IMS_ERR_BUSY);
    /* the first run commits a and b, then dies (no finish) */
    int64_t xa = insert(f->st, "https://e.org/a", 1, 0, NULL);
    int64_t xb = insert(f->st, "https://e.org/b", 2, 0, NULL);
    int64_t ids[5];
    for (size_t i = 0; i < n; i++)
        ids[i] = it[i].item_id;
    store_job_items_free(it, n);
    /* restarted: its claims come back at once, the redo finds the rows */
    assert_int_equal(store_job_release_node(f->st, "node-a", NULL, &err), IMS_OK);
    assert_int_equal(store_job_claim(f->st, "node-a", 5, 3600000, &it, &n, &err), IMS_OK);
    assert_int_equal(n, 5);
    struct store_item_result res[5];
    int64_t rows[5];
    enum store_insert_outcome o[5];
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(it[i].item_id, ids[i]);
        assert_int_equal(it[i].attempts, 2);
        uint64_t k = i == 3 ? 1 : i == 4 ? 100 : i + 1;
        rows[i] = insert(f->st, it[i].source, k, 0, &o[i]);
        res[i] = (struct store_item_result){
            .item_id = it[i].item_id,
            .outcome = o[i] == STORE_INSERTED ? STORE_ITEM_ADDED : STORE_ITEM_DUPLICATE,
            .image_id = rows[i]};
    }
    assert_int_equal(rows[0], xa);
    assert_int_equal(rows[1], xb);
    assert_int_equal(o[0], STORE_DUP_SOURCE);
    assert_int_equal(o[2], STORE_INSERTED);
    uint8_t acc[5];
    assert_int_equal(store_job_finish(f->st, "node-a", res, 5, acc, &err), IMS_OK);
    for (int i = 0; i < 5; i++)
        assert_int_equal(acc[i], 1);
    assert_int_equal(outcome_of(f->st, ids[1]), STORE_ITEM_ADDED);
    assert_int_equal(outcome_of(f->st, ids[2]), STORE_ITEM_ADDED);
    assert_int_equal(outcome_of(f->st, ids[4]), STORE_ITEM_DUPLICATE); /* older than the job */
    /* "a" twice in the job: exactly one of the two added it */
    int added_a = (outcome_of(f->st, ids[0]) == STORE_ITEM_ADDED) +
                  (outcome_of(f->st, ids[3]) == STORE_ITEM_ADDED);
    assert_int_equal(added_a, 1);
    struct store_job job;
    assert_int_equal(store_job_get(f->st, "j", &job, &err), IMS_OK);
    assert_int_equal(job.done, 5);
    assert_int_equal(job.failed, 0);
    assert_int_equal(job.state, STORE_JOB_DONE);
    store_job_fini(&job);
    store_job_items_free(it, n);
}

/* A batch finish over two jobs with a failure: counters, errors, states. */
static void test_finish_batch(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    const char *s1[2] = {"https://e.org/1", "https://e.org/2"};
    const char *s2[1] = {"https://e.org/3"};
    assert_int_equal(store_job_create(f->st, "j1", 0, &err), IMS_OK);
    assert_int_equal(store_job_create(f->st, "j2", 0, &err), IMS_OK);
    assert_int_equal(store_job_add_items(f->st, "j1", s1, 2, &err), IMS_OK);
    assert_int_equal(store_job_add_items(f->st, "j2", s2, 1, &err), IMS_OK);
    assert_int_equal(store_job_seal(f->st, "j1", &err), IMS_OK);
    struct store_job_item *it = NULL;
    size_t n = 0;
    assert_int_equal(store_job_claim(f->st, "node-a", 10, 60000, &it, &n, &err), IMS_OK);
    assert_int_equal(n, 3);
    int64_t x = insert(f->st, "https://e.org/1", 7, 0, NULL);
    struct store_item_result res[4] = {
        {.item_id = it[0].item_id, .outcome = STORE_ITEM_ADDED, .image_id = x},
        {.item_id = it[1].item_id, .outcome = STORE_ITEM_ERROR, .code = "unsupported",
         .error = "not an image"},
        {.item_id = it[2].item_id, .outcome = STORE_ITEM_DUPLICATE, .image_id = x},
        {.item_id = 999999, .outcome = STORE_ITEM_ADDED, .image_id = x}, /* not held */
    };
    uint8_t acc[4];
    assert_int_equal(store_job_finish(f->st, "node-a", res, 4, acc, &err), IMS_OK);
    assert_int_equal(acc[0], 1);
    assert_int_equal(acc[1], 1);
    assert_int_equal(acc[2], 1);
    assert_int_equal(acc[3], 0);
    /* again: nothing is held any more, nothing counted twice */
    assert_int_equal(store_job_finish(f->st, "node-a", res, 3, acc, &err), IMS_OK);
    assert_int_equal(acc[0] + acc[1] + acc[2], 0);
    struct store_job j1, j2;
    assert_int_equal(store_job_get(f->st, "j1", &j1, &err), IMS_OK);
    assert_int_equal(j1.done, 1);
    assert_int_equal(j1.failed, 1);
    assert_int_equal(j1.state, STORE_JOB_DONE);
    assert_int_equal(j1.n_errors, 1);
    assert_string_equal(j1.errors[0].url, "https://e.org/2");
    assert_string_equal(j1.errors[0].code, "unsupported");
    assert_string_equal(j1.errors[0].error, "not an image");
    assert_int_equal(store_job_get(f->st, "j2", &j2, &err), IMS_OK);
    assert_int_equal(j2.done, 1);
    assert_int_not_equal(j2.state, STORE_JOB_DONE); /* not sealed */
    assert_int_equal(outcome_of(f->st, it[2].item_id), STORE_ITEM_DUPLICATE); /* attempt 1 */
    store_job_fini(&j1);
    store_job_fini(&j2);
    store_job_items_free(it, n);
}

int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_release_node, tu_fx_setup_open, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_redo_after_crash_is_added, tu_fx_setup_open, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_finish_batch, tu_fx_setup_open, tu_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
