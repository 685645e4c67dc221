/* SPDX-License-Identifier: MIT */
/*
 * test_store_pgfreeze.c: a node frozen inside a write transaction (issue 9).
 * With the argument "pg", on a throwaway PostgreSQL database: a child
 * process takes the catalogue's write lock and stops itself (SIGSTOP)
 * right there, as a node frozen by a long pause would;
 *   - with a short write_idle_timeout_ms on the child's catalogue URL, the
 *     server cuts the child's transaction, so this process's write
 *     completes; the child, continued, gets the cut as an error, runs its
 *     write again and stores its row once (nothing lost, nothing doubled);
 *   - with the idle bound off and a short write_lock_timeout_ms here, this
 *     process's write gives up with IMS_ERR_BUSY naming the write lock and
 *     stores nothing; the child, continued, completes without a retry.
 * Without "pg" (and with it): the URL parameters are checked before any
 * connection (a bad value is IMS_ERR_INVALID naming the parameter).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "imgsearch/store.h"
#include "store_test_util.h"

/* store_pg_int.h (internal): the test hook and the retry counter */
extern void (*store__pg_test_after_lock)(void);
uint64_t store__pg_retries(void);

#define DIM 8
static const struct store_model_info model_a = {"model-a", DIM};

static int g_freezes; /* the hook stops the process this many more times */

static void freeze_once(void)
{
    if (g_freezes > 0) {
        g_freezes--;
        raise(SIGSTOP);
    }
}

static enum ims_status insert_one(struct store *st, const char *source, uint64_t seed,
                                  struct ims_error *err)
{
    float vec[DIM];
    uint8_t h[32];
    tu_vec(vec, DIM, seed);
    tu_hash(h, seed);
    struct store_new_image r = {.source = source, .sha256 = h, .format = "jpeg", .width = 4,
                                .height = 4, .embedding = vec, .dim = DIM};
    struct store_insert_result res;
    return store_insert_many(st, &r, 1, &res, err);
}

/* The child: opens `url`, freezes once right after taking the write lock,
 * inserts /child.jpg. Exit 0 when the insert succeeded after exactly
 * `want_retries` retries and the row is there once. */
static void child_main(const char *url, uint64_t want_retries)
{
    struct ims_error err = {0};
    struct store *st = NULL;
    if (store_open_catalogue(url, NULL, &model_a, 0, &st, &err) != IMS_OK) {
        fprintf(stderr, "child open: %s\n", err.message);
        _exit(10);
    }
    g_freezes = 1;
    store__pg_test_after_lock = freeze_once;
    enum ims_status s = insert_one(st, "/child.jpg", 2, &err);
    if (s != IMS_OK) {
        fprintf(stderr, "child insert: %s\n", err.message);
        _exit(11);
    }
    if (store__pg_retries() != want_retries) {
        fprintf(stderr, "child: %llu retries, wanted %llu\n",
                (unsigned long long)store__pg_retries(), (unsigned long long)want_retries);
        _exit(12);
    }
    int64_t id = 0;
    if (store_find_by_source(st, "/child.jpg", &id, &err) != IMS_OK) {
        fprintf(stderr, "child find: %s\n", err.message);
        _exit(13);
    }
    store_close(st);
    _exit(0);
}

/* Forks the child and waits until it is stopped inside its transaction. */
static pid_t start_frozen_child(const char *url, uint64_t want_retries)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        child_main(url, want_retries);
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, WUNTRACED), pid);
    if (!WIFSTOPPED(ws))
        fail_msg("the child did not stop inside its write (status %d)", ws);
    return pid;
}

static void thaw_and_reap(pid_t pid)
{
    assert_int_equal(kill(pid, SIGCONT), 0);
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 0);
}

static void with_params(char *out, size_t cap, const char *url, const char *params)
{
    snprintf(out, cap, "%s%s%s", url, strchr(url, '?') ? "&" : "?", params);
}

/* Every source once, each with its one insert change, and the feed in order. */
static void check_rows(struct store *st, int64_t want)
{
    struct ims_error err = {0};
    int64_t n = 0;
    assert_int_equal(store_count(st, &n, &err), IMS_OK);
    assert_int_equal(n, want);
    struct store_change ch[8];
    size_t nc = 0;
    assert_int_equal(store_changes_after(st, 0, 8, ch, &nc, &err), IMS_OK);
    assert_int_equal((int64_t)nc, want);
    for (size_t i = 0; i < nc; i++) {
        assert_int_equal(ch[i].kind, STORE_CHANGE_INSERT);
        if (i)
            assert_true(ch[i].seq > ch[i - 1].seq && ch[i].id != ch[i - 1].id);
    }
    if (store_check(st, &err) != IMS_OK)
        fail_msg("check: %s", err.message);
}

static void test_frozen_writer_is_cut(void **state)
{
    (void)state;
    char url[1024], child_url[1200];
    assert_int_equal(tu_catalogue_new(url, sizeof(url)), 0);
    struct ims_error err = {0};
    struct store *st = NULL;
    if (store_open_catalogue(url, NULL, &model_a, 0, &st, &err) != IMS_OK)
        fail_msg("open: %s", err.message);
    store_close(st); /* the schema exists before the child starts */
    st = NULL;
    with_params(child_url, sizeof(child_url), url, "write_idle_timeout_ms=300");
    pid_t pid = start_frozen_child(child_url, 1);
    /* the child holds the write lock, frozen: this write waits until the
     * server cuts the child's idle transaction, then completes */
    if (store_open_catalogue(url, NULL, &model_a, 0, &st, &err) != IMS_OK)
        fail_msg("open: %s", err.message);
    if (insert_one(st, "/parent.jpg", 1, &err) != IMS_OK)
        fail_msg("the write behind a frozen node failed: %s", err.message);
    int64_t id = 0;
    assert_int_equal(store_find_by_source(st, "/child.jpg", &id, &err), IMS_ERR_NOT_FOUND);
    thaw_and_reap(pid); /* the child retried once and stored its row */
    assert_int_equal(store_find_by_source(st, "/child.jpg", &id, &err), IMS_OK);
    check_rows(st, 2);
    store_close(st);
    tu_catalogue_drop(url);
}

static void test_lock_wait_is_bounded(void **state)
{
    (void)state;
    char url[1024], child_url[1200], my_url[1200];
    assert_int_equal(tu_catalogue_new(url, sizeof(url)), 0);
    struct ims_error err = {0};
    struct store *st = NULL;
    if (store_open_catalogue(url, NULL, &model_a, 0, &st, &err) != IMS_OK)
        fail_msg("open: %s", err.message);
    store_close(st);
    st = NULL;
    with_params(child_url, sizeof(child_url), url, "write_idle_timeout_ms=0");
    with_params(my_url, sizeof(my_url), url, "write_lock_timeout_ms=200&write_idle_timeout_ms=5000");
    pid_t pid = start_frozen_child(child_url, 0);
    if (store_open_catalogue(my_url, NULL, &model_a, 0, &st, &err) != IMS_OK)
        fail_msg("open: %s", err.message);
    assert_int_equal(insert_one(st, "/parent.jpg", 1, &err), IMS_ERR_BUSY);
    assert_non_null(strstr(err.message, "write lock"));
    assert_non_null(strstr(err.message, "write_lock_timeout_ms"));
    /* other writes of this process are not harmed: reads go on */
    int64_t n = -1;
    assert_int_equal(store_count(st, &n, &err), IMS_OK);
    assert_int_equal(n, 0);
    thaw_and_reap(pid); /* never cut: no retry */
    if (insert_one(st, "/parent.jpg", 1, &err) != IMS_OK)
        fail_msg("insert after the thaw: %s", err.message);
    check_rows(st, 2);
    store_close(st);
    tu_catalogue_drop(url);
}

/* Checked before connecting: runs on both backends' runs, no server needed. */
static void test_url_params(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "postgresql://u@127.0.0.1:1/db?write_idle_timeout_ms=abc",
        "postgresql://u@127.0.0.1:1/db?write_idle_timeout_ms=",
        "postgresql://u@127.0.0.1:1/db?connect_timeout=1&write_lock_timeout_ms=-5",
        "postgresql://u@127.0.0.1:1/db?write_lock_timeout_ms=86400001",
        "postgresql://u@127.0.0.1:1/db?write_lock_timeout_ms=1e3",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ims_error err = {0};
        struct store *st = NULL;
        assert_int_equal(store_open_catalogue(bad[i], NULL, &model_a, 0, &st, &err),
                         IMS_ERR_INVALID);
        assert_null(st);
        assert_non_null(strstr(err.message, "_timeout_ms must be a whole number"));
    }
    /* accepted and taken out of what libpq sees: a refused connection (port
     * 1), not "invalid URI query parameter" */
    struct ims_error err = {0};
    struct store *st = NULL;
    assert_int_equal(store_open_catalogue("postgresql://u@127.0.0.1:1/db?"
                                          "write_idle_timeout_ms=0&connect_timeout=2&"
                                          "write_lock_timeout_ms=100",
                                          NULL, &model_a, 0, &st, &err),
                     IMS_ERR_IO);
    assert_null(strstr(err.message, "invalid"));
}

int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 2;
    const struct CMUnitTest common[] = {
        cmocka_unit_test(test_url_params),
    };
    const struct CMUnitTest pg[] = {
        cmocka_unit_test(test_url_params),
        cmocka_unit_test(test_frozen_writer_is_cut),
        cmocka_unit_test(test_lock_wait_is_bounded),
    };
    if (tu_is_pg())
        return cmocka_run_group_tests(pg, NULL, NULL);
    return cmocka_run_group_tests(common, NULL, NULL);
}
