/* SPDX-License-Identifier: MIT */
/*
 * test_store_pgretry.c: the writes PostgreSQL runs again when the server
 * cut their transaction (issue 12): store_insert_stream (an import) and
 * store_set_details (reembed). Both backends: a stream reports each
 * chunk's results in order, and stores every row once. With the argument
 * "pg", on a throwaway database whose URL sets a short
 * write_idle_timeout_ms: a fill (the stream) or the after-lock test hook
 * (set_details) pauses longer than that once, the server cuts the
 * transaction, and the write runs again from its start: it succeeds, the
 * stream's fill and done start again from row 0 (store.h), so a done that
 * starts over there reports each row once, as committed; the rows are
 * there once and the change feed holds each change once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "imgsearch/store.h"
#include "store_test_fx.h"
#include "store_test_util.h"

/* store_pg_int.h (internal): the test hook and the retry counter */
extern void (*store__pg_test_after_lock)(void);
uint64_t store__pg_retries(void);

#define DIM TU_DIM
#define N_ROWS 10
#define CHUNK 4
/* the server cuts a write transaction idle this long; the pause is longer */
#define IDLE_MS 1000
#define PAUSE_MS 3000
static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* The shared fixture, its catalogue opened with a short idle bound
 * (PostgreSQL; the SQLite run has no URL). */
static int setup(void **state)
{
    if (tu_fx_setup(state) != 0)
        return -1;
    struct tu_fx *f = *state;
    char open_url[1200];
    snprintf(open_url, sizeof(open_url), "%s", f->url);
    if (tu_is_pg())
        snprintf(open_url, sizeof(open_url), "%s%swrite_idle_timeout_ms=%d", f->url,
                 strchr(f->url, '?') ? "&" : "?", IDLE_MS);
    struct ims_error err = {0};
    if (store_open_catalogue(open_url, f->dir, &tu_model_a, STORE_OPEN_SYNC_NORMAL, &f->st,
                             &err) != IMS_OK) {
        fprintf(stderr, "open: %s\n", err.message);
        tu_fx_teardown(state); /* cmocka runs no teardown after a failed setup */
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    store__pg_test_after_lock = NULL;
    return tu_fx_teardown(state);
}

/* ---- the stream ------------------------------------------------------------------------ */

struct stream {
    char src[N_ROWS][32];
    float vec[N_ROWS][DIM];
    int pause_at;         /* the fill of this first row pauses once (-1: never) */
    int fills_from_0;     /* fills asked for row 0 */
    int dones_from_0;     /* done calls for row 0: a pass starts (store.h) */
    int done_calls;       /* done calls in the last pass */
    size_t done_next;     /* the first row the next done call must report */
    int64_t ids[N_ROWS];  /* reported ids */
    int outcome[N_ROWS];  /* reported outcomes */
    int reported[N_ROWS]; /* times each row was reported */
};

static int fill(void *user, size_t first, struct store_new_image *rows, size_t n)
{
    struct stream *s = user;
    if (first == 0)
        s->fills_from_0++;
    if (s->pause_at >= 0 && first == (size_t)s->pause_at) {
        s->pause_at = -1;
        pause_ms(PAUSE_MS); /* inside the transaction: the server cuts it */
    }
    for (size_t i = 0; i < n; i++) {
        rows[i].source = s->src[first + i];
        rows[i].embedding = s->vec[first + i];
        rows[i].dim = DIM;
    }
    return 0;
}

static void done(void *user, size_t first, const struct store_insert_result *res, size_t n)
{
    struct stream *s = user;
    if (first == 0) { /* (again): what came before was rolled back */
        s->dones_from_0++;
        s->done_calls = 0;
        s->done_next = 0;
        memset(s->reported, 0, sizeof(s->reported));
    }
    s->done_calls++;
    assert_int_equal(first, s->done_next); /* in order, no chunk twice */
    s->done_next = first + n;
    for (size_t i = 0; i < n; i++) {
        s->ids[first + i] = res[i].id;
        s->outcome[first + i] = (int)res[i].outcome;
        s->reported[first + i]++;
    }
}

static void stream_init(struct stream *s, int pause_at)
{
    memset(s, 0, sizeof(*s));
    s->pause_at = pause_at;
    for (int i = 0; i < N_ROWS; i++) {
        /* row 7 repeats row 2's source: a duplicate inside the stream */
        snprintf(s->src[i], sizeof(s->src[i]), "/imp/%d.jpg", i == 7 ? 2 : i);
        tu_vec(s->vec[i], DIM, (uint64_t)i + 1);
    }
}

/* Every row reported once with the right outcome, stored once, one insert
 * change per stored row. */
static void check_stream(struct store *st, const struct stream *s)
{
    assert_int_equal(s->done_calls, (N_ROWS + CHUNK - 1) / CHUNK);
    assert_int_equal(s->done_next, N_ROWS);
    for (int i = 0; i < N_ROWS; i++) {
        assert_int_equal(s->reported[i], 1);
        assert_int_equal(s->outcome[i], i == 7 ? STORE_DUP_SOURCE : STORE_INSERTED);
        int64_t id = 0;
        struct ims_error err = {0};
        assert_int_equal(store_find_by_source(st, s->src[i], &id, &err), IMS_OK);
        assert_int_equal(id, s->ids[i]);
    }
    assert_int_equal(s->ids[7], s->ids[2]);
    struct ims_error err = {0};
    int64_t n = 0;
    assert_int_equal(store_count(st, &n, &err), IMS_OK);
    assert_int_equal(n, N_ROWS - 1);
    struct store_change ch[2 * N_ROWS];
    size_t nc = 0;
    assert_int_equal(store_changes_after(st, 0, 2 * N_ROWS, ch, &nc, &err), IMS_OK);
    assert_int_equal(nc, N_ROWS - 1);
    for (size_t i = 0; i < nc; i++)
        assert_int_equal(ch[i].kind, STORE_CHANGE_INSERT);
    if (store_check(st, &err) != IMS_OK)
        fail_msg("check: %s", err.message);
}

static void test_stream_reports_once(void **state)
{
    struct tu_fx *f = *state;
    struct stream s;
    stream_init(&s, -1);
    struct ims_error err = {0};
    uint64_t before = store__pg_retries();
    if (store_insert_stream(f->st, N_ROWS, CHUNK, fill, done, &s, &err) != IMS_OK)
        fail_msg("stream: %s", err.message);
    assert_int_equal(s.fills_from_0, 1);
    assert_int_equal(s.dones_from_0, 1);
    assert_int_equal(store__pg_retries(), before); /* nothing was cut */
    check_stream(f->st, &s);
}

static void test_stream_retried_after_cut(void **state)
{
    struct tu_fx *f = *state;
    struct stream s;
    stream_init(&s, CHUNK); /* the second chunk's fill pauses, once */
    struct ims_error err = {0};
    uint64_t before = store__pg_retries();
    if (store_insert_stream(f->st, N_ROWS, CHUNK, fill, done, &s, &err) != IMS_OK)
        fail_msg("stream after a cut: %s", err.message);
    assert_true(store__pg_retries() > before); /* the cut attempt was run again */
    assert_true(s.fills_from_0 >= 2); /* from row 0 */
    assert_int_equal(s.dones_from_0, s.fills_from_0); /* chunk 0 was reported before the cut */
    check_stream(f->st, &s); /* nothing lost, nothing doubled */
}

/* ---- set_details ----------------------------------------------------------------------- */

static int g_pauses;

static void pause_once(void)
{
    if (g_pauses > 0) {
        g_pauses--;
        pause_ms(PAUSE_MS);
    }
}

static void test_set_details_retried_after_cut(void **state)
{
    struct tu_fx *f = *state;
    struct stream s;
    stream_init(&s, -1);
    struct ims_error err = {0};
    if (store_insert_stream(f->st, N_ROWS, CHUNK, fill, NULL, &s, &err) != IMS_OK)
        fail_msg("stream: %s", err.message);
    int64_t id = 0;
    assert_int_equal(store_find_by_source(f->st, "/imp/3.jpg", &id, &err), IMS_OK);
    int64_t seq = 0;
    assert_int_equal(store_change_seq(f->st, &seq, &err), IMS_OK);

    uint64_t before = store__pg_retries();
    g_pauses = 1;
    store__pg_test_after_lock = pause_once; /* holds the write lock, idle */
    if (store_set_details(f->st, id, "a red kite", 12345, &err) != IMS_OK)
        fail_msg("set_details after a cut: %s", err.message);
    store__pg_test_after_lock = NULL;
    assert_int_equal(g_pauses, 0);
    assert_true(store__pg_retries() > before);

    struct store_image_row row;
    uint8_t found = 0;
    assert_int_equal(store_get_many(f->st, &id, 1, 0, &row, &found, &err), IMS_OK);
    assert_int_equal(found, 1);
    assert_string_equal(row.caption, "a red kite");
    assert_int_equal(row.added, 12345);
    store_row_fini(&row);
    /* the cut attempt logged nothing: one row change */
    struct store_change ch[4];
    size_t nc = 0;
    assert_int_equal(store_changes_after(f->st, seq, 4, ch, &nc, &err), IMS_OK);
    assert_int_equal(nc, 1);
    assert_int_equal(ch[0].id, id);
    assert_int_equal(ch[0].kind, STORE_CHANGE_ROW);
}

int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 2;
    const struct CMUnitTest common[] = {
        cmocka_unit_test_setup_teardown(test_stream_reports_once, setup, teardown),
    };
    const struct CMUnitTest pg[] = {
        cmocka_unit_test_setup_teardown(test_stream_reports_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_retried_after_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_details_retried_after_cut, setup, teardown),
    };
    if (tu_is_pg())
        return cmocka_run_group_tests(pg, NULL, NULL);
    return cmocka_run_group_tests(common, NULL, NULL);
}
