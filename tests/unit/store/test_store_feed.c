/* SPDX-License-Identifier: MIT */
/* test_store_feed.c: the change feed (seq per insert/delete/update, paging,
 * trim and floor, waiting), the job items shared by nodes (claim, lease,
 * renew, finish, counters, errors with codes, sealing), and the migration
 * of a schema-v1 catalogue. Each case runs on the backend tu_open picks
 * (SQLite, or PostgreSQL when the test is started with "pg"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "imgsearch/store.h"
#include "store_test_fx.h"
#include "store_test_util.h"

#define DIM TU_DIM

static int64_t add(struct store *st, uint64_t k)
{
    char src[64];
    float vec[DIM];
    uint8_t h[32];
    snprintf(src, sizeof(src), "https://example.org/%llu.jpg", (unsigned long long)k);
    tu_vec(vec, DIM, k);
    tu_hash(h, k);
    struct store_new_image r = {.source = src, .sha256 = h, .embedding = vec, .dim = DIM};
    struct store_insert_result res;
    struct ims_error err = {0};
    if (store_insert_many(st, &r, 1, &res, &err) != IMS_OK)
        fail_msg("insert: %s", err.message);
    return res.id;
}

static int64_t seq_of(struct store *st)
{
    int64_t s = -1;
    struct ims_error err = {0};
    if (store_change_seq(st, &s, &err) != IMS_OK)
        fail_msg("change_seq: %s", err.message);
    return s;
}

/* ---- change feed ------------------------------------------------------------ */

static void test_feed_basics(void **state)
{
    struct tu_fx *f = *state;
    struct store *st = f->st = tu_fx_open(f);
    struct ims_error err = {0};
    assert_int_equal(seq_of(st), 0);
    int64_t floor = -1;
    assert_int_equal(store_change_floor(st, &floor, &err), IMS_OK);
    assert_int_equal(floor, 0);

    int64_t a = add(st, 1), b = add(st, 2);
    add(st, 1); /* a duplicate adds no change */
    assert_int_equal(seq_of(st), 2);
    assert_int_equal(store_delete(st, a, &err), IMS_OK);
    float v[DIM];
    tu_vec(v, DIM, 77);
    uint8_t ex = 0;
    assert_int_equal(store_set_embeddings(st, &b, v, 1, &ex, &err), IMS_OK);
    assert_int_equal(ex, 1);
    int64_t ghost = 999;
    assert_int_equal(store_set_embeddings(st, &ghost, v, 1, &ex, &err), IMS_OK);
    assert_int_equal(ex, 0); /* no change for an id that is not there */
    assert_int_equal(seq_of(st), 4);

    struct store_change ch[8];
    size_t n = 0;
    assert_int_equal(store_changes_after(st, 0, 8, ch, &n, &err), IMS_OK);
    assert_int_equal(n, 4);
    int64_t want_id[] = {a, b, a, b};
    enum store_change_kind want_kind[] = {STORE_CHANGE_INSERT, STORE_CHANGE_INSERT,
                                          STORE_CHANGE_DELETE, STORE_CHANGE_UPDATE};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ch[i].id, want_id[i]);
        assert_int_equal(ch[i].kind, want_kind[i]);
        if (i > 0)
            assert_true(ch[i].seq > ch[i - 1].seq);
    }
    assert_string_equal(store_change_kind_name(ch[2].kind), "delete");
    /* paging */
    assert_int_equal(store_changes_after(st, ch[1].seq, 1, ch, &n, &err), IMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ch[0].id, a);
    assert_int_equal(ch[0].kind, STORE_CHANGE_DELETE);
    assert_int_equal(store_changes_after(st, 4, 8, ch, &n, &err), IMS_OK);
    assert_int_equal(n, 0);

    /* a batch: one change per new row, in row order */
    char s1[32] = "batch-1", s2[32] = "batch-2";
    float v1[DIM], v2[DIM];
    tu_vec(v1, DIM, 11);
    tu_vec(v2, DIM, 12);
    struct store_new_image rows[] = {{.source = s1, .embedding = v1, .dim = DIM},
                                     {.source = s2, .embedding = v2, .dim = DIM}};
    struct store_insert_result res[2];
    assert_int_equal(store_insert_many(st, rows, 2, res, &err), IMS_OK);
    assert_int_equal(store_changes_after(st, 4, 8, ch, &n, &err), IMS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ch[0].id, res[0].id);
    assert_int_equal(ch[1].id, res[1].id);

    /* trim: the floor rises, older seqs must rebuild */
    assert_int_equal(store_change_trim(st, 3, &err), IMS_OK);
    assert_int_equal(store_change_floor(st, &floor, &err), IMS_OK);
    assert_int_equal(floor, 3);
    assert_int_equal(store_changes_after(st, 2, 8, ch, &n, &err), IMS_ERR_NOT_FOUND);
    assert_int_equal(store_changes_after(st, 3, 8, ch, &n, &err), IMS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(ch[0].seq, 4);
    /* trimming past the newest clamps; the seq keeps counting after a full trim */
    assert_int_equal(store_change_trim(st, 1000, &err), IMS_OK);
    assert_int_equal(store_change_floor(st, &floor, &err), IMS_OK);
    assert_int_equal(floor, 6);
    assert_int_equal(seq_of(st), 6);
    add(st, 50);
    assert_int_equal(seq_of(st), 7);
    /* bad arguments */
    assert_int_equal(store_changes_after(st, 0, 0, ch, &n, &err), IMS_ERR_INVALID);
    assert_int_equal(store_changes_after(st, -1, 8, ch, &n, &err), IMS_ERR_INVALID);
    assert_int_equal(store_change_trim(st, -1, &err), IMS_ERR_INVALID);
}

struct waiter {
    struct store *st;
    int64_t known, got;
    enum ims_status s;
};

static void *wait_thread(void *p)
{
    struct waiter *w = p;
    w->s = store_wait_change(w->st, w->known, 20000, &w->got, NULL);
    return NULL;
}

static void test_feed_wait(void **state)
{
    struct tu_fx *f = *state;
    struct store *st = f->st = tu_fx_open(f);
    struct ims_error err = {0};
    int64_t now = -1;
    /* nothing new: returns at the timeout with the current seq */
    assert_int_equal(store_wait_change(st, 0, 30, &now, &err), IMS_OK);
    assert_int_equal(now, 0);
    /* already newer: returns at once */
    add(st, 1);
    assert_int_equal(store_wait_change(st, 0, 20000, &now, &err), IMS_OK);
    assert_int_equal(now, 1);

    /* a waiter woken by a commit through ANOTHER store (another node) */
    struct store *other = tu_fx_open(f);
    struct waiter w = {.st = st, .known = 1, .got = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_thread, &w), 0);
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
    add(other, 2);
    pthread_join(t, NULL);
    assert_int_equal(w.s, IMS_OK);
    assert_int_equal(w.got, 2);
    store_close(other);
}

/* ---- job items ------------------------------------------------------------------ */

static void finish1(struct store *st, const char *node, int64_t item, enum store_item_outcome o,
                    int64_t image, const char *code, const char *msg, int want_accepted)
{
    struct store_item_result r = {item, o, image, code, msg};
    uint8_t acc = 9;
    struct ims_error err = {0};
    if (store_job_finish(st, node, &r, 1, &acc, &err) != IMS_OK)
        fail_msg("finish: %s", err.message);
    assert_int_equal(acc, want_accepted);
}

static void test_jobs_items(void **state)
{
    struct tu_fx *f = *state;
    struct store *st = f->st = tu_fx_open(f);
    struct ims_error err = {0};
    assert_int_equal(store_job_create(st, "j1", 0, &err), IMS_OK);
    const char *urls[] = {"http://a/1", "http://a/2", "http://a/3"};
    assert_int_equal(store_job_add_items(st, "j1", urls, 3, &err), IMS_OK);
    const char *more[] = {"http://a/4"};
    assert_int_equal(store_job_add_items(st, "j1", more, 1, &err), IMS_OK);
    const char *bad[] = {""};
    assert_int_equal(store_job_add_items(st, "j1", bad, 1, &err), IMS_ERR_INVALID);
    assert_int_equal(store_job_add_items(st, "nope", urls, 1, &err), IMS_ERR_NOT_FOUND);

    struct store_job j;
    assert_int_equal(store_job_get(st, "j1", &j, &err), IMS_OK);
    assert_int_equal(j.state, STORE_JOB_QUEUED);
    assert_int_equal(j.total, 4);
    assert_int_equal(j.n_items, 4);
    assert_int_equal(j.sealed, 0);
    store_job_fini(&j);

    /* two nodes claim: disjoint, in order */
    struct store_job_item *ia = NULL, *ib = NULL, *ic = NULL;
    size_t na = 0, nb = 0, nc = 0;
    assert_int_equal(store_job_claim(st, "node-a", 2, 60000, &ia, &na, &err), IMS_OK);
    assert_int_equal(store_job_claim(st, "node-b", 10, 60000, &ib, &nb, &err), IMS_OK);
    assert_int_equal(na, 2);
    assert_int_equal(nb, 2);
    assert_string_equal(ia[0].source, "http://a/1");
    assert_string_equal(ia[1].source, "http://a/2");
    assert_string_equal(ib[0].source, "http://a/3");
    assert_string_equal(ib[1].source, "http://a/4");
    assert_int_equal(ib[1].index, 3);
    assert_string_equal(ia[0].job_id, "j1");
    assert_int_equal(ia[0].attempts, 1);
    /* nothing left */
    assert_int_equal(store_job_claim(st, "node-c", 10, 60000, &ic, &nc, &err), IMS_OK);
    assert_int_equal(nc, 0);
    assert_null(ic);
    assert_int_equal(store_job_get(st, "j1", &j, &err), IMS_OK);
    assert_int_equal(j.state, STORE_JOB_RUNNING);
    store_job_fini(&j);

    /* finishing someone else's item is ignored */
    finish1(st, "node-b", ia[0].item_id, STORE_ITEM_ADDED, 5, NULL, NULL, 0);
    finish1(st, "node-a", ia[0].item_id, STORE_ITEM_ADDED, 5, NULL, NULL, 1);
    /* twice: ignored the second time */
    finish1(st, "node-a", ia[0].item_id, STORE_ITEM_ADDED, 5, NULL, NULL, 0);
    finish1(st, "node-a", ia[1].item_id, STORE_ITEM_ERROR, 0, "unsupported", "not an image", 1);
    enum store_item_state is;
    char node[64];
    int attempts = 0;
    int64_t image = -1;
    assert_int_equal(store_job_item_get(st, ia[0].item_id, &is, node, sizeof(node), &attempts,
                                        &image, &err),
                     IMS_OK);
    assert_int_equal(is, STORE_ITEM_DONE);
    assert_int_equal(image, 5);
    assert_string_equal(node, "node-a");

    /* node-b's lease expires; node-c takes its items over */
    uint8_t renewed[2] = {9, 9};
    int64_t bids[2] = {ib[0].item_id, ib[1].item_id};
    assert_int_equal(store_job_renew(st, "node-b", bids, 2, 1, renewed, &err), IMS_OK);
    assert_int_equal(renewed[0], 1);
    assert_int_equal(renewed[1], 1);
    struct timespec ts = {0, 30 * 1000000L};
    nanosleep(&ts, NULL);
    assert_int_equal(store_job_claim(st, "node-c", 10, 60000, &ic, &nc, &err), IMS_OK);
    assert_int_equal(nc, 2);
    assert_int_equal(ic[0].item_id, ib[0].item_id);
    assert_int_equal(ic[0].attempts, 2);
    /* node-b comes back: its renew and finish are ignored */
    assert_int_equal(store_job_renew(st, "node-b", bids, 2, 60000, renewed, &err), IMS_OK);
    assert_int_equal(renewed[0], 0);
    finish1(st, "node-b", ib[0].item_id, STORE_ITEM_ADDED, 7, NULL, NULL, 0);
    finish1(st, "node-c", ic[0].item_id, STORE_ITEM_DUPLICATE, 5, NULL, NULL, 1);

    /* not sealed: still running although every item but one finished */
    finish1(st, "node-c", ic[1].item_id, STORE_ITEM_ADDED, 8, NULL, NULL, 1);
    assert_int_equal(store_job_get(st, "j1", &j, &err), IMS_OK);
    assert_int_equal(j.state, STORE_JOB_RUNNING);
    assert_int_equal(j.done, 3);
    assert_int_equal(j.failed, 1);
    assert_int_equal(j.n_errors, 1);
    assert_string_equal(j.errors[0].url, "http://a/2");
    assert_string_equal(j.errors[0].code, "unsupported");
    assert_string_equal(j.errors[0].error, "not an image");
    store_job_fini(&j);
    /* sealing a job whose items are all finished ends it */
    assert_int_equal(store_job_seal(st, "j1", &err), IMS_OK);
    assert_int_equal(store_job_seal(st, "j1", &err), IMS_OK);
    assert_int_equal(store_job_get(st, "j1", &j, &err), IMS_OK);
    assert_int_equal(j.state, STORE_JOB_DONE);
    assert_int_equal(j.sealed, 1);
    store_job_fini(&j);
    assert_int_equal(store_job_add_items(st, "j1", more, 1, &err), IMS_ERR_INVALID);

    /* a sealed job ends with its last finish; restarts leave item jobs alone */
    assert_int_equal(store_job_create(st, "j2", 0, &err), IMS_OK);
    assert_int_equal(store_job_add_items(st, "j2", urls, 1, &err), IMS_OK);
    assert_int_equal(store_job_seal(st, "j2", &err), IMS_OK);
    assert_int_equal(store_job_create(st, "legacy", 5, &err), IMS_OK);
    int64_t n_failed = -1;
    assert_int_equal(store_job_fail_unfinished(st, &n_failed, &err), IMS_OK);
    assert_int_equal(n_failed, 1);
    store_job_items_free(ia, na);
    store_job_items_free(ib, nb);
    store_job_items_free(ic, nc);
    assert_int_equal(store_job_claim(st, "node-a", 10, 60000, &ia, &na, &err), IMS_OK);
    assert_int_equal(na, 1);
    assert_string_equal(ia[0].job_id, "j2");
    finish1(st, "node-a", ia[0].item_id, STORE_ITEM_ADDED, 9, NULL, NULL, 1);
    assert_int_equal(store_job_get(st, "j2", &j, &err), IMS_OK);
    assert_int_equal(j.state, STORE_JOB_DONE);
    assert_int_equal(j.done, 1);
    store_job_fini(&j);
    store_job_items_free(ia, na);

    /* bad arguments */
    assert_int_equal(store_job_claim(st, "", 1, 1000, &ia, &na, &err), IMS_ERR_INVALID);
    assert_int_equal(store_job_claim(st, "n", 0, 1000, &ia, &na, &err), IMS_ERR_INVALID);
    assert_int_equal(store_job_claim(st, "n", 1, 0, &ia, &na, &err), IMS_ERR_INVALID);
    assert_int_equal(store_job_claim(st, "bad node", 1, 10, &ia, &na, &err), IMS_ERR_INVALID);
}

/* Two claimers in parallel threads with their own stores never share an item. */
struct claimer {
    struct tu_fx *f;
    const char *node;
    int64_t got[400];
    size_t n;
};

static void *claim_thread(void *p)
{
    struct claimer *c = p;
    struct store *st = tu_fx_open(c->f);
    for (;;) {
        struct store_job_item *it = NULL;
        size_t n = 0;
        if (store_job_claim(st, c->node, 3, 60000, &it, &n, NULL) != IMS_OK || n == 0)
            break;
        for (size_t i = 0; i < n && c->n < 400; i++) {
            c->got[c->n++] = it[i].item_id;
            struct store_item_result r = {it[i].item_id, STORE_ITEM_ADDED, 1, NULL, NULL};
            store_job_finish(st, c->node, &r, 1, NULL, NULL);
        }
        store_job_items_free(it, n);
    }
    store_close(st);
    return NULL;
}

static void test_jobs_parallel_claims(void **state)
{
    struct tu_fx *f = *state;
    struct store *st = f->st = tu_fx_open(f);
    struct ims_error err = {0};
    assert_int_equal(store_job_create(st, "big", 0, &err), IMS_OK);
    char buf[200][32];
    const char *srcs[200];
    for (int i = 0; i < 200; i++) {
        snprintf(buf[i], sizeof(buf[i]), "http://x/%d", i);
        srcs[i] = buf[i];
    }
    assert_int_equal(store_job_add_items(st, "big", srcs, 200, &err), IMS_OK);
    assert_int_equal(store_job_seal(st, "big", &err), IMS_OK);
    struct claimer a = {.f = f, .node = "node-a"}, b = {.f = f, .node = "node-b"};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, claim_thread, &a);
    pthread_create(&tb, NULL, claim_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.n + b.n, 200);
    for (size_t i = 0; i < a.n; i++)
        for (size_t k = 0; k < b.n; k++)
            assert_true(a.got[i] != b.got[k]);
    struct store_job j;
    assert_int_equal(store_job_get(st, "big", &j, &err), IMS_OK);
    assert_int_equal(j.done, 200);
    assert_int_equal(j.state, STORE_JOB_DONE);
    store_job_fini(&j);
}

/* ---- two nodes racing on the same images store each once ---------------------------- */

struct racer {
    struct tu_fx *f;
    int64_t ids[40];
    int ok;
};

static void *race_thread(void *p)
{
    struct racer *rc = p;
    struct store *st = tu_fx_open(rc->f);
    rc->ok = 1;
    for (int k = 0; k < 40; k++) {
        char src[64];
        float vec[DIM];
        uint8_t h[32];
        snprintf(src, sizeof(src), "https://example.org/race/%d.jpg", k);
        tu_vec(vec, DIM, (uint64_t)k);
        tu_hash(h, (uint64_t)k + 1000);
        struct store_new_image r = {.source = src, .sha256 = h, .embedding = vec, .dim = DIM};
        struct store_insert_result res;
        if (store_insert_many(st, &r, 1, &res, NULL) != IMS_OK)
            rc->ok = 0;
        else
            rc->ids[k] = res.id;
    }
    store_close(st);
    return NULL;
}

static void test_race_same_images(void **state)
{
    struct tu_fx *f = *state;
    struct store *st = f->st = tu_fx_open(f);
    struct racer a = {.f = f}, b = {.f = f};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, race_thread, &a);
    pthread_create(&tb, NULL, race_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_true(a.ok && b.ok);
    for (int k = 0; k < 40; k++)
        assert_int_equal(a.ids[k], b.ids[k]); /* the loser was told the winner's id */
    int64_t n = 0;
    assert_int_equal(store_count(st, &n, NULL), IMS_OK);
    assert_int_equal(n, 40);
    assert_int_equal(seq_of(st), 40); /* one change per stored row */
    assert_int_equal(store_check(st, NULL), IMS_OK);
}

/* Commit order equals seq order: a follower that only ever asks for the
 * changes after the last seq it saw, while two writers (two "nodes") insert
 * and delete, ends up with every change, none skipped. */
struct writer {
    struct tu_fx *f;
    int base;
};

static void *writer_thread(void *p)
{
    struct writer *w = p;
    struct store *st = tu_fx_open(w->f);
    for (int k = 0; k < 30; k++) {
        int64_t id = add(st, (uint64_t)(w->base + k));
        if (k % 5 == 4)
            store_delete(st, id, NULL);
    }
    store_close(st);
    return NULL;
}

struct follower {
    struct tu_fx *f;
    atomic_int stop;
    struct store_change got[200];
    size_t n;
    int ok;
};

static void *follow_thread(void *p)
{
    struct follower *fo = p;
    struct store *st = tu_fx_open(fo->f);
    int64_t last = 0;
    fo->ok = 1;
    for (;;) {
        int stopping = atomic_load(&fo->stop);
        struct store_change ch[16];
        size_t n = 0;
        if (store_changes_after(st, last, 16, ch, &n, NULL) != IMS_OK) {
            fo->ok = 0;
            break;
        }
        for (size_t i = 0; i < n && fo->n < 200; i++)
            fo->got[fo->n++] = ch[i];
        if (n > 0)
            last = ch[n - 1].seq;
        if (n == 0 && stopping)
            break;
    }
    store_close(st);
    return NULL;
}

static void test_feed_commit_order(void **state)
{
    struct tu_fx *f = *state;
    struct store *st = f->st = tu_fx_open(f);
    struct writer a = {f, 1000}, b = {f, 2000};
    struct follower fo = {.f = f};
    pthread_t ta, tb, tf;
    pthread_create(&tf, NULL, follow_thread, &fo);
    pthread_create(&ta, NULL, writer_thread, &a);
    pthread_create(&tb, NULL, writer_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    atomic_store(&fo.stop, 1);
    pthread_join(tf, NULL);
    assert_true(fo.ok);
    assert_int_equal(fo.n, 72); /* 60 inserts + 12 deletes */
    struct store_change all[80];
    size_t n = 0;
    assert_int_equal(store_changes_after(st, 0, 80, all, &n, NULL), IMS_OK);
    assert_int_equal(n, 72);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(all[i].seq, (int64_t)i + 1); /* no gaps */
        assert_int_equal(fo.got[i].seq, all[i].seq);
        assert_int_equal(fo.got[i].id, all[i].id);
        assert_int_equal(fo.got[i].kind, all[i].kind);
    }
}

/* STORE_OPEN_EXISTING never creates a catalogue */
static void test_open_existing(void **state)
{
    struct tu_fx *f = *state;
    struct ims_error err = {0};
    struct store *st = NULL;
    assert_int_equal(store_open_catalogue(f->url, f->dir, &tu_model_a, STORE_OPEN_EXISTING, &st,
                                          &err),
                     IMS_ERR_NOT_FOUND);
    assert_null(st);
    if (f->url[0])
        assert_int_equal(tu_pg_exec(f->url, "SELECT 1/(count(*) = 0)::int FROM pg_tables WHERE "
                                            "schemaname = 'public'"),
                         0);
    f->st = tu_fx_open(f); /* creates it */
    add(f->st, 1);
    store_close(f->st);
    f->st = NULL;
    assert_int_equal(store_open_catalogue(f->url, f->dir, &tu_model_a, STORE_OPEN_EXISTING,
                                          &f->st, &err),
                     IMS_OK);
    assert_int_equal(seq_of(f->st), 1);
}

/* store_restore_many: rows keep their ids; never below the ids given out */
static void test_restore(void **state)
{
    struct tu_fx *f = *state;
    struct store *st = f->st = tu_fx_open(f);
    struct ims_error err = {0};
    float v1[DIM], v2[DIM];
    tu_vec(v1, DIM, 1);
    tu_vec(v2, DIM, 2);
    struct store_image_row r1 = {.id = 5, .source = "s5", .model = "old-model", .added = 77,
                                 .metadata = "{\"k\": 1}", .embedding = v1, .dim = DIM},
                           r2 = {.id = 9, .source = "s9", .model = "model-a", .has_sha256 = 1,
                                 .embedding = v2, .dim = DIM};
    memset(r2.sha256, 0xab, 32);
    struct store_restore_row rr[2] = {{&r1, "JPEGBYTES", 9}, {&r2, NULL, 0}};
    assert_int_equal(store_restore_many(st, rr, 2, &err), IMS_OK);
    struct store_image_row got;
    assert_int_equal(store_get(st, 5, STORE_FIELD_EMBEDDING, &got, &err), IMS_OK);
    assert_string_equal(got.source, "s5");
    assert_string_equal(got.model, "old-model");
    assert_int_equal(got.added, 77);
    assert_int_equal(got.has_thumbnail, 1);
    assert_memory_equal(got.embedding, v1, sizeof(v1));
    store_row_fini(&got);
    int64_t id = 0;
    assert_int_equal(store_find_by_sha256(st, r2.sha256, &id, &err), IMS_OK);
    assert_int_equal(id, 9);
    assert_int_equal(seq_of(st), 2);
    /* ids at or below what was given out are refused, nothing stored */
    struct store_image_row r3 = {.id = 9, .source = "s9b", .model = "m", .embedding = v1,
                                 .dim = DIM};
    struct store_restore_row bad[1] = {{&r3, NULL, 0}};
    assert_int_equal(store_restore_many(st, bad, 1, &err), IMS_ERR_EXISTS);
    /* unordered ids are refused */
    struct store_image_row r4 = {.id = 20, .source = "s20", .model = "m", .embedding = v1,
                                 .dim = DIM};
    r3.id = 19;
    struct store_restore_row unordered[2] = {{&r4, NULL, 0}, {&r3, NULL, 0}};
    assert_int_equal(store_restore_many(st, unordered, 2, &err), IMS_ERR_INVALID);
    /* a duplicate source fails the whole batch */
    r3.id = 30;
    r3.source = "s5";
    struct store_restore_row dup[2] = {{&r4, NULL, 0}, {&r3, NULL, 0}};
    assert_true(store_restore_many(st, dup, 2, &err) != IMS_OK);
    int64_t n = 0;
    assert_int_equal(store_count(st, &n, &err), IMS_OK);
    assert_int_equal(n, 2);
    /* new rows continue after the restored ids */
    assert_true(add(st, 100) > 9);
}

static void test_catalogue_urls(void **state)
{
    (void)state;
    char out[256];
    store_catalogue_display("postgresql://bob:s3cret@db.example:5432/cat", out, sizeof(out));
    assert_string_equal(out, "postgresql://bob:***@db.example:5432/cat");
    store_catalogue_display("postgres://bob@h/c?sslmode=require&password=xyz&x=1", out,
                            sizeof(out));
    assert_string_equal(out, "postgres://bob@h/c?sslmode=require&password=***&x=1");
    assert_true(store_catalogue_is_url("postgresql://h/db"));
    assert_false(store_catalogue_is_url("/var/lib/x"));
    /* a server that is not there: IMS_ERR_IO naming host:port, no password */
    struct store *st = NULL;
    struct ims_error err = {0};
    assert_int_equal(store_open_catalogue("postgresql://bob:s3cret@127.0.0.1:1/db", NULL,
                                          &tu_model_a, 0, &st, &err),
                     IMS_ERR_IO);
    assert_non_null(strstr(err.message, "127.0.0.1:1"));
    assert_null(strstr(err.message, "s3cret"));
    assert_int_equal(store_open_catalogue("mysql://x", NULL, &tu_model_a, 0, &st, &err),
                     IMS_ERR_INVALID);
}

/* ---- migration of a v1 catalogue (SQLite only) ------------------------------------ */

static void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("sql: %s", msg);
    sqlite3_close(db);
}

static void test_migrate_v1(void **state)
{
    struct tu_fx *f = *state;
    if (f->url[0])
        return; /* the SQLite file format only; PostgreSQL has its own case */
    char path[600];
    snprintf(path, sizeof(path), "%s/catalogue.db", f->dir);
    /* the v1 schema as imgsearch 1 wrote it, with three rows (one deleted) */
    sql_exec(path,
             "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL;"
             "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
             "CREATE TABLE images(id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL "
             "UNIQUE, sha256 BLOB CHECK (sha256 IS NULL OR length(sha256) = 32), format TEXT, "
             "width INTEGER NOT NULL DEFAULT 0, height INTEGER NOT NULL DEFAULT 0, bytes "
             "INTEGER NOT NULL DEFAULT 0, added INTEGER NOT NULL, caption TEXT, metadata TEXT, "
             "model TEXT NOT NULL);"
             "CREATE INDEX images_sha256 ON images(sha256) WHERE sha256 IS NOT NULL;"
             "CREATE INDEX images_added ON images(added, id);"
             "CREATE TABLE embeddings(image_id INTEGER PRIMARY KEY REFERENCES images(id) ON "
             "DELETE CASCADE, vec BLOB NOT NULL);"
             "CREATE TABLE thumbnails(image_id INTEGER PRIMARY KEY REFERENCES images(id) ON "
             "DELETE CASCADE, jpeg BLOB NOT NULL);"
             "CREATE TABLE deleted(seq INTEGER PRIMARY KEY AUTOINCREMENT, image_id INTEGER NOT "
             "NULL, time INTEGER NOT NULL);"
             "CREATE TABLE jobs(id TEXT PRIMARY KEY, state TEXT NOT NULL CHECK (state IN "
             "('queued', 'running', 'done', 'failed')), total INTEGER NOT NULL, done INTEGER "
             "NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, n_errors INTEGER NOT NULL "
             "DEFAULT 0, created INTEGER NOT NULL, updated INTEGER NOT NULL) WITHOUT ROWID;"
             "CREATE TABLE job_errors(job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE "
             "CASCADE, seq INTEGER NOT NULL, url TEXT NOT NULL, error TEXT NOT NULL, PRIMARY "
             "KEY (job_id, seq)) WITHOUT ROWID;"
             "INSERT INTO meta VALUES('schema_version', '1'), ('model_name', 'model-a'), "
             "('embedding_dim', '8'), ('created', '1');"
             "INSERT INTO images(id, source, added, model) VALUES(1, 's1', 1, 'model-a'), "
             "(2, 's2', 1, 'model-a'), (5, 's5', 1, 'model-a');"
             "INSERT INTO embeddings VALUES(1, zeroblob(32)), (2, zeroblob(32)), "
             "(5, zeroblob(32));"
             "INSERT INTO deleted(image_id, time) VALUES(3, 1);"
             "INSERT INTO jobs VALUES('old', 'done', 2, 1, 1, 1, 1, 1);"
             "INSERT INTO job_errors VALUES('old', 0, 'http://u', 'boom');");
    struct store *st = f->st = tu_fx_open(f);
    struct ims_error err = {0};
    int v = 0;
    assert_int_equal(store_schema_version(st, &v, &err), IMS_OK);
    assert_int_equal(v, STORE_SCHEMA_VERSION);
    assert_true(STORE_SCHEMA_VERSION >= 2);
    /* existing rows enter the feed in id order */
    struct store_change ch[8];
    size_t n = 0;
    assert_int_equal(store_changes_after(st, 0, 8, ch, &n, &err), IMS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(ch[0].id, 1);
    assert_int_equal(ch[1].id, 2);
    assert_int_equal(ch[2].id, 5);
    assert_int_equal(ch[2].kind, STORE_CHANGE_INSERT);
    assert_int_equal(seq_of(st), 3);
    /* the deletion log and old jobs are kept */
    int64_t dseq = 0;
    assert_int_equal(store_deleted_seq(st, &dseq, &err), IMS_OK);
    assert_int_equal(dseq, 1);
    struct store_job j;
    assert_int_equal(store_job_get(st, "old", &j, &err), IMS_OK);
    assert_int_equal(j.n_errors, 1);
    assert_string_equal(j.errors[0].url, "http://u");
    assert_string_equal(j.errors[0].code, "");
    assert_int_equal(j.n_items, 0);
    store_job_fini(&j);
    assert_int_equal(store_check(st, &err), IMS_OK);
    int64_t id = add(st, 9);
    assert_int_equal(id, 6);
    assert_int_equal(seq_of(st), 4);
}

int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_feed_basics, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_feed_wait, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_items, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_parallel_claims, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_race_same_images, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_feed_commit_order, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_restore, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_open_existing, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_catalogue_urls, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_migrate_v1, tu_fx_setup, tu_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
