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
#include "store_test_util.h"

static const struct store_model_info model_a = {"model-a", 8};

struct fx {
    char *dir;
    char url[1024];
    struct store *st;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->dir = tu_mkdtemp();
    if (!f->dir || tu_catalogue_new(f->url, sizeof(f->url)) != 0)
        return -1;
    struct ims_error err = {0};
    if (store_open_catalogue(f->url, f->dir, &model_a, STORE_OPEN_SYNC_NORMAL, &f->st, &err) !=
        IMS_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    store_close(f->st);
    tu_catalogue_drop(f->url);
    tu_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void test_release_node(void **state)
{
    struct fx *f = *state;
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

int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_release_node, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
