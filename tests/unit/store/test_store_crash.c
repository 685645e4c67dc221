/* SPDX-License-Identifier: MIT */
/* test_store_crash.c: durability and concurrency of the catalogue.
 *
 * - kill -9: a child process inserts batches in a loop and reports each
 *   batch through a pipe after store_insert_many returned; the parent kills
 *   it with SIGKILL at a random point, reopens the folder and checks
 *   integrity, that every reported batch is there with its embeddings, and
 *   that no batch is partly visible. Repeated over several rounds on the
 *   same folder. The seed is printed so a failure can be replayed.
 * - readers next to a writer: reader threads never see a partial batch and
 *   their counts never go backwards; a write transaction held open by
 *   another connection does not block reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>

#include "imgsearch/store.h"
#include "store_test_util.h"

#define DIM 32
#define BATCH 25
#define ROUNDS 4
static const struct store_model_info model = {"crash-model", DIM};

static uint64_t row_seed(int round, int batch, int i)
{
    return (uint64_t)round * 1000000u + (uint64_t)batch * BATCH + (uint64_t)i;
}

/* ---- kill -9 ---------------------------------------------------------------- */

static _Noreturn void child_loop(const char *dir, int round, int wfd)
{
    struct store *st = NULL;
    if (store_open(dir, &model, 0, &st, NULL) != IMS_OK)
        _exit(2);
    static struct store_new_image rows[BATCH];
    static char src[BATCH][64];
    static float vec[BATCH][DIM];
    static uint8_t hash[BATCH][32];
    static unsigned char thumb[2048];
    struct store_insert_result res[BATCH];
    memset(thumb, round, sizeof(thumb));
    for (int b = 0; b < 100000; b++) {
        for (int i = 0; i < BATCH; i++) {
            uint64_t k = row_seed(round, b, i);
            snprintf(src[i], sizeof(src[i]), "crash/%d/%d/%d", round, b, i);
            tu_vec(vec[i], DIM, k);
            tu_hash(hash[i], k);
            rows[i] = (struct store_new_image){.source = src[i], .sha256 = hash[i],
                                               .embedding = vec[i], .dim = DIM,
                                               .thumbnail = thumb,
                                               .thumbnail_bytes = (size_t)(i % 3) * 700};
        }
        if (store_insert_many(st, rows, BATCH, res, NULL) != IMS_OK)
            _exit(3);
        int32_t msg[2] = {b, (int32_t)res[0].id};
        if (write(wfd, msg, sizeof(msg)) != (ssize_t)sizeof(msg))
            _exit(4);
    }
    _exit(0);
}

static void test_kill9(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    assert_non_null(dir);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    print_message("kill -9 test seed %u\n", seed);
    srand(seed);

    static uint8_t reported[ROUNDS][100000];
    memset(reported, 0, sizeof(reported));
    for (int round = 0; round < ROUNDS; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            child_loop(dir, round, fds[1]);
        }
        close(fds[1]);
        int want = 1 + rand() % 12, got = 0;
        int32_t msg[2];
        while (got < want && read(fds[0], msg, sizeof(msg)) == (ssize_t)sizeof(msg)) {
            reported[round][msg[0]] = 1;
            got++;
        }
        /* land somewhere inside a later transaction */
        struct timespec ts = {0, (long)(rand() % 4000) * 1000};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int wst = 0;
        assert_int_equal(waitpid(pid, &wst, 0), pid);
        assert_true(WIFSIGNALED(wst) && WTERMSIG(wst) == SIGKILL);
        ssize_t r;
        while ((r = read(fds[0], msg, sizeof(msg))) == (ssize_t)sizeof(msg))
            reported[round][msg[0]] = 1;
        close(fds[0]);

        /* reopen and verify */
        struct store *st = NULL;
        struct ims_error err = {0};
        if (store_open(dir, &model, 0, &st, &err) != IMS_OK)
            fail_msg("reopen after kill: %s", err.message);
        if (store_check(st, &err) != IMS_OK)
            fail_msg("check after kill: %s", err.message);

        /* every reported batch is there, intact */
        float want_vec[DIM];
        for (int rd = 0; rd <= round; rd++) {
            for (int b = 0; b < 100000; b++) {
                if (!reported[rd][b])
                    continue;
                for (int i = 0; i < BATCH; i++) {
                    char src[64];
                    snprintf(src, sizeof(src), "crash/%d/%d/%d", rd, b, i);
                    int64_t id = 0;
                    assert_int_equal(store_find_by_source(st, src, &id, &err), IMS_OK);
                    struct store_image_row row;
                    assert_int_equal(store_get(st, id, STORE_FIELD_EMBEDDING, &row, &err), IMS_OK);
                    tu_vec(want_vec, DIM, row_seed(rd, b, i));
                    assert_memory_equal(row.embedding, want_vec, sizeof(want_vec));
                    assert_int_equal(row.has_thumbnail, i % 3 != 0);
                    store_row_fini(&row);
                }
            }
        }
        /* no batch is partly visible, no row is damaged */
        int64_t n = 0;
        assert_int_equal(store_count(st, &n, &err), IMS_OK);
        assert_int_equal(n % BATCH, 0);
        static int per_batch[ROUNDS][100000];
        memset(per_batch, 0, sizeof(per_batch));
        for (int64_t off = 0; off < n; off += 1000) {
            struct store_image_row *rows = NULL;
            size_t m = 0;
            assert_int_equal(store_list(st, STORE_ORDER_ID_ASC, off, 1000, &rows, &m, &err),
                             IMS_OK);
            for (size_t j = 0; j < m; j++) {
                int rd = -1, b = -1, i = -1;
                assert_int_equal(sscanf(rows[j].source, "crash/%d/%d/%d", &rd, &b, &i), 3);
                assert_true(rd >= 0 && rd <= round && b >= 0 && b < 100000);
                per_batch[rd][b]++;
                store_row_fini(&rows[j]);
            }
            ims_free(rows);
        }
        int64_t seen = 0;
        for (int rd = 0; rd <= round; rd++) {
            for (int b = 0; b < 100000; b++) {
                if (per_batch[rd][b] != 0 && per_batch[rd][b] != BATCH)
                    fail_msg("round %d batch %d: %d of %d rows visible", rd, b,
                             per_batch[rd][b], BATCH);
                if (reported[rd][b])
                    assert_int_equal(per_batch[rd][b], BATCH);
                seen += per_batch[rd][b];
            }
        }
        assert_int_equal(seen, n);
        store_close(st);
    }
    tu_rmtree(dir);
    free(dir);
}

/* ---- readers next to a writer ----------------------------------------------------- */

struct conc {
    struct store *st;
    atomic_int done;
    atomic_int failures;
    atomic_long reads;
    char msg[256];
};

enum { W_BATCHES = 60 };

static void *writer_main(void *arg)
{
    struct conc *c = arg;
    struct store_new_image rows[BATCH];
    char src[BATCH][64];
    float vec[BATCH][DIM];
    struct store_insert_result res[BATCH];
    for (int b = 0; b < W_BATCHES; b++) {
        for (int i = 0; i < BATCH; i++) {
            snprintf(src[i], sizeof(src[i]), "conc/%d/%d", b, i);
            tu_vec(vec[i], DIM, row_seed(0, b, i));
            rows[i] = (struct store_new_image){.source = src[i], .embedding = vec[i], .dim = DIM};
        }
        if (store_insert_many(c->st, rows, BATCH, res, NULL) != IMS_OK)
            atomic_fetch_add(&c->failures, 1);
        if (b % 10 == 9) { /* and some deletions: whole batches, so counts stay multiples */
            int64_t ids[BATCH];
            for (int i = 0; i < BATCH; i++)
                ids[i] = res[i].id;
            if (store_delete_many(c->st, ids, BATCH, NULL, NULL) != IMS_OK)
                atomic_fetch_add(&c->failures, 1);
        }
    }
    atomic_store(&c->done, 1);
    return NULL;
}

struct count_acc {
    int64_t n, last_id;
    int out_of_order;
};

/* Counts rows and checks ids strictly increase across chunks. */
static int count_cb(void *user, const int64_t *ids, const float *v, size_t n, uint32_t dim)
{
    struct count_acc *a = user;
    (void)v;
    (void)dim;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] <= a->last_id)
            a->out_of_order = 1;
        a->last_id = ids[i];
    }
    a->n += (int64_t)n;
    return 0;
}

static void *reader_main(void *arg)
{
    struct conc *c = arg;
    int64_t last_seq = 0;
    int finishing = 0;
    while (!finishing) {
        finishing = atomic_load(&c->done); /* one more pass after the writer ends */
        int64_t n = 0, scanned = 0, max = 0, seq = 0;

        if (store_count(c->st, &n, NULL) != IMS_OK || n % BATCH != 0) {
            atomic_fetch_add(&c->failures, 1);
            snprintf(c->msg, sizeof(c->msg), "count %lld", (long long)n);
        }
        struct count_acc acc = {0};
        if (store_scan_embeddings(c->st, 0, 7, count_cb, &acc, NULL) != IMS_OK ||
            acc.out_of_order || (scanned = acc.n) % BATCH != 0) {
            atomic_fetch_add(&c->failures, 1);
            snprintf(c->msg, sizeof(c->msg), "scanned %lld", (long long)scanned);
        }
        /* the deletion log only grows */
        if (store_deleted_seq(c->st, &seq, NULL) != IMS_OK || seq < last_seq) {
            atomic_fetch_add(&c->failures, 1);
            snprintf(c->msg, sizeof(c->msg), "deletion seq went back");
        }
        last_seq = seq;
        if (store_max_id(c->st, &max, NULL) != IMS_OK)
            atomic_fetch_add(&c->failures, 1);
        if (max > 0) {
            struct store_image_row row;
            enum ims_status s = store_get(c->st, max, STORE_FIELD_EMBEDDING, &row, NULL);
            /* the newest row may be deleted in between: NOT_FOUND is fine */
            if (s == IMS_OK) {
                float want[DIM];
                int b = -1, i = -1;
                if (sscanf(row.source, "conc/%d/%d", &b, &i) != 2 ||
                    (tu_vec(want, DIM, row_seed(0, b, i)),
                     memcmp(want, row.embedding, sizeof(want)) != 0)) {
                    atomic_fetch_add(&c->failures, 1);
                    snprintf(c->msg, sizeof(c->msg), "row %lld damaged", (long long)max);
                }
                store_row_fini(&row);
            } else if (s != IMS_ERR_NOT_FOUND) {
                atomic_fetch_add(&c->failures, 1);
            }
        }
        atomic_fetch_add(&c->reads, 1);
    }
    return NULL;
}

static void test_readers_with_writer(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    struct conc c = {0};
    struct ims_error err = {0};
    assert_int_equal(store_open(dir, &model, 0, &c.st, &err), IMS_OK);
    pthread_t w, r[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&r[i], NULL, reader_main, &c), 0);
    assert_int_equal(pthread_create(&w, NULL, writer_main, &c), 0);
    pthread_join(w, NULL);
    for (int i = 0; i < 3; i++)
        pthread_join(r[i], NULL);
    if (atomic_load(&c.failures) != 0)
        fail_msg("%d failures, last: %s", atomic_load(&c.failures), c.msg);
    assert_true(atomic_load(&c.reads) >= 3);
    int64_t n = 0;
    assert_int_equal(store_count(c.st, &n, &err), IMS_OK);
    assert_int_equal(n, (W_BATCHES - W_BATCHES / 10) * BATCH);
    assert_int_equal(store_check(c.st, &err), IMS_OK);
    store_close(c.st);
    tu_rmtree(dir);
    free(dir);
}

/* A write transaction held open by another connection (another process,
 * say) does not block readers, and its rows stay invisible until commit. */
static void test_reads_do_not_wait_for_writes(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    struct store *st = NULL;
    struct ims_error err = {0};
    assert_int_equal(store_open(dir, &model, 0, &st, &err), IMS_OK);
    float v[DIM];
    tu_vec(v, DIM, 1);
    struct store_new_image row = {.source = "a", .embedding = v, .dim = DIM};
    struct store_insert_result res;
    assert_int_equal(store_insert_many(st, &row, 1, &res, &err), IMS_OK);

    char path[512];
    snprintf(path, sizeof(path), "%s/catalogue.db", dir);
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other,
                                  "BEGIN IMMEDIATE; INSERT INTO images(source, added, model) "
                                  "VALUES('uncommitted', 0, 'crash-model');",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    int64_t n = 0, id = 0;
    assert_int_equal(store_count(st, &n, &err), IMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_find_by_source(st, "uncommitted", &id, &err), IMS_ERR_NOT_FOUND);
    struct store_image_row got;
    assert_int_equal(store_get(st, res.id, STORE_FIELD_EMBEDDING, &got, &err), IMS_OK);
    store_row_fini(&got);
    assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    assert_int_equal(store_check(st, &err), IMS_OK);
    store_close(st);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill9),
        cmocka_unit_test(test_readers_with_writer),
        cmocka_unit_test(test_reads_do_not_wait_for_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
