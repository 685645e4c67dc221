/* SPDX-License-Identifier: MIT */
/* test_replica.c: the replica's contract on a SQLite data folder: opening
 * (fresh, from a snapshot, after a damaged or short snapshot), catching up
 * with rows another handle added and deleted, the recorded model, the index
 * configuration, the snapshot-keeping rule, bad input and allocation
 * failures; ROW changes leave the index alone; a live rebuild re-adds the
 * rows whose embedding was replaced while the feed was lost. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "imgsearch/replica.h"
#include "replica_int.h"
#include "store_test_util.h"

#define DIM 16
static const struct store_model_info model_a = {"model-a", DIM};

struct fx {
    char *dir;
    struct replica *r;
    struct store *other; /* a second handle on the catalogue: "another process" */
    uint64_t next_seed;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->dir = tu_mkdtemp();
    if (!f->dir)
        return -1;
    f->next_seed = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    replica_close(f->r);
    store_close(f->other);
    tu_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static enum ims_status open_r(struct fx *f, const char *model, struct ims_error *err)
{
    struct replica_options o;
    replica_options_default(&o);
    o.data_dir = f->dir;
    o.model_name = model;
    o.dim = DIM;
    o.n_search_threads = 1;
    return replica_open(&o, &f->r, err);
}

static void open_ok(struct fx *f)
{
    struct ims_error err = {0};
    enum ims_status st = open_r(f, "model-a", &err);
    if (st != IMS_OK)
        fail_msg("replica_open: %s", ims_error_message(&err, st));
}

static struct store *other(struct fx *f)
{
    if (!f->other) {
        struct ims_error err = {0};
        if (store_open(f->dir, &model_a, 0, &f->other, &err) != IMS_OK)
            fail_msg("store_open: %s", err.message);
    }
    return f->other;
}

/* Inserts n rows through the other handle; ids[] (optional) gets their ids. */
static void add_rows(struct fx *f, size_t n, int64_t *ids)
{
    for (size_t i = 0; i < n; i++) {
        float v[DIM];
        uint8_t sha[32];
        char src[64];
        uint64_t seed = f->next_seed++;
        tu_vec(v, DIM, seed);
        tu_hash(sha, seed);
        snprintf(src, sizeof(src), "https://example.org/%llu.jpg", (unsigned long long)seed);
        struct store_new_image in = {.source = src, .sha256 = sha, .embedding = v, .dim = DIM};
        struct store_insert_result res;
        struct ims_error err = {0};
        if (store_insert_many(other(f), &in, 1, &res, &err) != IMS_OK)
            fail_msg("insert: %s", err.message);
        assert_int_equal(res.outcome, STORE_INSERTED);
        if (ids)
            ids[i] = res.id;
    }
}

/* The index's top hit for row `seed`'s own vector is `id` with score 1. */
static void assert_finds(struct fx *f, uint64_t seed, int64_t id)
{
    float q[DIM], score = 0;
    int64_t got = -1;
    int n = 0;
    tu_vec(q, DIM, seed);
    assert_int_equal(vindex_search(replica_index(f->r), q, 1, &score, &got, &n, NULL), IMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(got, id);
    assert_true(score > 0.999f);
}

static void assert_absent(struct fx *f, uint64_t seed, int64_t id)
{
    float q[DIM], scores[64];
    int64_t got[64];
    int n = 0;
    tu_vec(q, DIM, seed);
    assert_int_equal(vindex_search(replica_index(f->r), q, 64, scores, got, &n, NULL), IMS_OK);
    for (int i = 0; i < n; i++)
        assert_true(got[i] != id);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_fresh_folder(void **state)
{
    struct fx *f = *state;
    open_ok(f);
    assert_non_null(replica_store(f->r));
    assert_non_null(replica_index(f->r));
    assert_int_equal(vindex_count(replica_index(f->r)), 0);
    assert_string_equal(replica_spec(f->r), "Flat");
    assert_string_equal(replica_model_name(f->r), "model-a");
    assert_int_equal(replica_dim(f->r), DIM);
    assert_string_equal(replica_data_dir(f->r), f->dir);
    char snap[4200];
    snprintf(snap, sizeof(snap), "%s/index.snap", f->dir);
    assert_string_equal(replica_snapshot_path(f->r), snap);
    struct vindex_search_params sp;
    vindex_get_search_params(replica_index(f->r), &sp);
    assert_int_equal(sp.n_threads, 1);
}

static void test_catch_up_adds_and_removes(void **state)
{
    struct fx *f = *state;
    open_ok(f);
    int64_t ids[6];
    add_rows(f, 6, ids); /* seeds 1..6 */
    assert_int_equal(vindex_count(replica_index(f->r)), 0);
    struct ims_error err = {0};
    assert_int_equal(replica_catch_up(f->r, &err), IMS_OK);
    assert_int_equal(vindex_count(replica_index(f->r)), 6);
    for (int i = 0; i < 6; i++)
        assert_finds(f, (uint64_t)i + 1, ids[i]);
    /* deletions by the other handle, then more rows */
    int64_t gone[2] = {ids[1], ids[4]};
    assert_int_equal(store_delete_many(other(f), gone, 2, NULL, &err), IMS_OK);
    int64_t more[2];
    add_rows(f, 2, more); /* seeds 7, 8 */
    assert_int_equal(replica_catch_up(f->r, &err), IMS_OK);
    assert_int_equal(vindex_count(replica_index(f->r)), 6);
    assert_absent(f, 2, ids[1]);
    assert_absent(f, 5, ids[4]);
    assert_finds(f, 7, more[0]);
    assert_finds(f, 8, more[1]);
    /* nothing new: a no-op */
    assert_int_equal(replica_catch_up(f->r, &err), IMS_OK);
    assert_int_equal(vindex_count(replica_index(f->r)), 6);
}

static void test_snapshot_reopen(void **state)
{
    struct fx *f = *state;
    int64_t ids[5];
    open_ok(f);
    add_rows(f, 5, ids);
    struct ims_error err = {0};
    assert_int_equal(replica_catch_up(f->r, &err), IMS_OK);
    int written = -1;
    assert_int_equal(replica_save(f->r, &written, &err), IMS_OK);
    assert_int_equal(written, 1);
    replica_close(f->r);
    f->r = NULL;
    char path[4200];
    snprintf(path, sizeof(path), "%s/index.snap", f->dir);
    struct replica__snap_header h;
    assert_int_equal(replica__snapshot_header(path, &h), IMS_OK);
    assert_int_equal(h.count, 5);
    assert_int_equal(h.dim, DIM);
    assert_int_equal(h.last_id, ids[4]);
    struct replica__seq_file sf;
    snprintf(path, sizeof(path), "%s/index.seq", f->dir);
    assert_int_equal(replica__seq_read(path, &sf), IMS_OK);
    assert_int_equal(sf.seq, 5); /* five inserts */
    assert_int_equal(sf.count, 5);
    assert_int_equal(sf.last_id, ids[4]);
    /* while closed: one deleted, two added */
    assert_int_equal(store_delete(other(f), ids[0], &err), IMS_OK);
    int64_t more[2];
    add_rows(f, 2, more);
    open_ok(f);
    assert_int_equal(vindex_count(replica_index(f->r)), 6);
    assert_absent(f, 1, ids[0]);
    assert_finds(f, 6, more[0]);
    assert_finds(f, 7, more[1]);
    assert_finds(f, 3, ids[2]);
}

static void test_damaged_snapshot_rebuilds(void **state)
{
    struct fx *f = *state;
    int64_t ids[4];
    open_ok(f);
    add_rows(f, 4, ids);
    struct ims_error err = {0};
    assert_int_equal(replica_catch_up(f->r, &err), IMS_OK);
    assert_int_equal(replica_save(f->r, NULL, &err), IMS_OK);
    replica_close(f->r);
    f->r = NULL;
    /* flip bytes in the payload: the CRC fails, the header still reads */
    char path[4200];
    snprintf(path, sizeof(path), "%s/index.snap", f->dir);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, -20, SEEK_END);
    fputs("garbage!", fp);
    fclose(fp);
    open_ok(f);
    assert_int_equal(vindex_count(replica_index(f->r)), 4);
    for (int i = 0; i < 4; i++)
        assert_finds(f, (uint64_t)i + 1, ids[i]);
    /* a header that is not a snapshot at all */
    replica_close(f->r);
    f->r = NULL;
    fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs("not a snapshot", fp);
    fclose(fp);
    open_ok(f);
    assert_int_equal(vindex_count(replica_index(f->r)), 4);
    /* and the damaged file is replaced by a sound one */
    int written = 0;
    assert_int_equal(replica_save(f->r, &written, &err), IMS_OK);
    assert_int_equal(written, 1);
    struct replica__snap_header h;
    assert_int_equal(replica__snapshot_header(path, &h), IMS_OK);
    assert_int_equal(h.count, 4);
}

/* Writes a 1-vector snapshot (row ids[0]) claiming last id `last` and,
 * if seq >= 0, an index.seq saying it covers change `seq`. */
static void fake_snapshot(struct fx *f, const int64_t *ids, int64_t last, int64_t seq)
{
    struct vindex *vx = NULL;
    assert_int_equal(vindex_new("Flat", DIM, &vx, NULL), IMS_OK);
    float v[DIM];
    tu_vec(v, DIM, 1);
    assert_int_equal(vindex_add(vx, &ids[0], v, 1, NULL), IMS_OK);
    char path[4200];
    snprintf(path, sizeof(path), "%s/index.snap", f->dir);
    assert_int_equal(vindex_save(vx, path, last, NULL), IMS_OK);
    vindex_free(vx);
    snprintf(path, sizeof(path), "%s/index.seq", f->dir);
    unlink(path);
    if (seq >= 0) {
        struct replica__seq_file sf = {seq, 1, last};
        assert_int_equal(replica__seq_write(path, &sf, NULL), IMS_OK);
    }
}

/* A snapshot that claims to cover every change but holds fewer rows: the
 * count check rebuilds. */
static void test_short_snapshot_rebuilds(void **state)
{
    struct fx *f = *state;
    int64_t ids[5];
    add_rows(f, 5, ids);
    fake_snapshot(f, ids, ids[4], 5);
    open_ok(f);
    assert_int_equal(vindex_count(replica_index(f->r)), 5);
    for (int i = 0; i < 5; i++)
        assert_finds(f, (uint64_t)i + 1, ids[i]);
}

/* Snapshots whose position cannot be trusted are not used: no index.seq
 * (written before the change feed), an index.seq of another snapshot, a
 * seq beyond the catalogue's (another catalogue), a seq below the feed's
 * floor. Each is rebuilt, with every row. */
static void test_untrusted_positions_rebuild(void **state)
{
    struct fx *f = *state;
    int64_t ids[5];
    add_rows(f, 5, ids);
    struct ims_error err = {0};
    const int64_t cases[][2] = {
        {-1, 0},     /* no index.seq: catching up from 0 would also work, but
                        the snapshot is not trusted */
        {99, 0},     /* beyond the catalogue's 5 changes */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fake_snapshot(f, ids, ids[4], cases[i][0]);
        open_ok(f);
        assert_int_equal(vindex_count(replica_index(f->r)), 5);
        assert_finds(f, 3, ids[2]);
        replica_close(f->r);
        f->r = NULL;
    }
    /* index.seq of another snapshot (count differs) */
    fake_snapshot(f, ids, ids[4], 5);
    char path[4200];
    snprintf(path, sizeof(path), "%s/index.seq", f->dir);
    struct replica__seq_file sf = {5, 2, ids[4]};
    assert_int_equal(replica__seq_write(path, &sf, NULL), IMS_OK);
    open_ok(f);
    assert_int_equal(vindex_count(replica_index(f->r)), 5);
    replica_close(f->r);
    f->r = NULL;
    /* below the floor: the snapshot covers change 1, the feed was trimmed to 4 */
    assert_int_equal(store_change_trim(other(f), 4, &err), IMS_OK);
    fake_snapshot(f, ids, ids[0], 1);
    open_ok(f);
    assert_int_equal(vindex_count(replica_index(f->r)), 5);
    for (int i = 0; i < 5; i++)
        assert_finds(f, (uint64_t)i + 1, ids[i]);
}

static void test_recorded_model(void **state)
{
    struct fx *f = *state;
    add_rows(f, 2, NULL); /* records model-a */
    struct ims_error err = {0};
    assert_int_equal(open_r(f, NULL, &err), IMS_OK);
    assert_string_equal(replica_model_name(f->r), "model-a");
    assert_int_equal(replica_dim(f->r), DIM);
    assert_int_equal(vindex_count(replica_index(f->r)), 2);
    replica_close(f->r);
    f->r = NULL;
    /* another model: refused, naming the folder */
    memset(&err, 0, sizeof(err));
    assert_int_equal(open_r(f, "model-b", &err), IMS_ERR_MODEL_MISMATCH);
    assert_null(f->r);
    assert_non_null(strstr(err.message, f->dir));
    assert_non_null(strstr(err.message, "model-b"));
}

static void test_catalogue_only(void **state)
{
    struct fx *f = *state;
    add_rows(f, 1, NULL);
    struct replica_options o;
    replica_options_default(&o);
    o.data_dir = f->dir;
    o.with_index = 0;
    struct ims_error err = {0};
    assert_int_equal(replica_open(&o, &f->r, &err), IMS_OK);
    assert_null(replica_index(f->r));
    int64_t n = 0;
    assert_int_equal(store_count(replica_store(f->r), &n, NULL), IMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(replica_catch_up(f->r, &err), IMS_ERR_INVALID);
    assert_int_equal(replica_save(f->r, NULL, &err), IMS_ERR_INVALID);
}

static void test_spec_file(void **state)
{
    struct fx *f = *state;
    add_rows(f, 3, NULL);
    open_ok(f);
    struct vindex_search_params p = {.nprobe = 0, .ef_search = 0, .rerank = 7};
    struct ims_error err = {0};
    assert_int_equal(replica_write_spec(f->r, "FlatF16", &p, &err), IMS_OK);
    assert_string_equal(replica_spec(f->r), "FlatF16");
    /* the running index keeps its type until the next open */
    assert_string_equal(vindex_spec(replica_index(f->r)), "Flat");
    assert_int_equal(replica_write_spec(f->r, "bad\nspec", NULL, &err), IMS_ERR_INVALID);
    assert_int_equal(replica_write_spec(f->r, "", NULL, &err), IMS_ERR_INVALID);
    replica_close(f->r);
    f->r = NULL;
    /* an unknown line is ignored with a warning */
    char path[4200];
    snprintf(path, sizeof(path), "%s/index.spec", f->dir);
    FILE *fp = fopen(path, "a");
    assert_non_null(fp);
    fputs("colour blue\n", fp);
    fclose(fp);
    open_ok(f);
    assert_string_equal(replica_spec(f->r), "FlatF16");
    assert_string_equal(vindex_spec(replica_index(f->r)), "FlatF16");
    struct vindex_search_params got;
    replica_search_params(f->r, &got);
    assert_int_equal(got.rerank, 7);
    assert_int_equal(got.nprobe, 0);
    assert_int_equal(vindex_count(replica_index(f->r)), 3);
}

static void test_build_other_type(void **state)
{
    struct fx *f = *state;
    open_ok(f);
    struct vindex *vx = NULL;
    struct ims_error err = {0};
    /* a type that trains cannot be built from an empty catalogue */
    assert_int_equal(replica_build(f->r, "IVF4,Flat", &vx, NULL, &err), IMS_ERR_INVALID);
    assert_null(vx);
    assert_non_null(strstr(err.message, "empty"));
    add_rows(f, 40, NULL);
    int64_t seq = -1;
    assert_int_equal(replica_build(f->r, "IVF4,Flat", &vx, &seq, &err), IMS_OK);
    assert_int_equal(seq, 40);
    assert_int_equal(vindex_count(vx), 40);
    assert_string_equal(vindex_spec(vx), "IVF4,Flat");
    /* the replica's own index is untouched */
    assert_int_equal(vindex_count(replica_index(f->r)), 0);
    vindex_free(vx);
    assert_int_equal(replica_build(f->r, "NoSuchType", &vx, NULL, &err), IMS_ERR_INVALID);
}

/* issue 8 item 5: the catalogue is replaced by an empty one; the 5-vector
 * snapshot must survive the save of the empty index. */
static void test_snapshot_kept_when_fuller(void **state)
{
    struct fx *f = *state;
    open_ok(f);
    add_rows(f, 5, NULL);
    struct ims_error err = {0};
    assert_int_equal(replica_catch_up(f->r, &err), IMS_OK);
    assert_int_equal(replica_save(f->r, NULL, &err), IMS_OK);
    replica_close(f->r);
    f->r = NULL;
    store_close(f->other);
    f->other = NULL;
    char path[4200];
    snprintf(path, sizeof(path), "%s/catalogue.db", f->dir);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof(path), "%s/catalogue.db-wal", f->dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/catalogue.db-shm", f->dir);
    unlink(path);
    /* A lost catalogue next to the snapshot is refused outright (store_open,
     * issue 8 item 5: `imgsearch repair` is the way back) ... */
    memset(&err, 0, sizeof(err));
    assert_int_equal(open_r(f, "model-a", &err), IMS_ERR_CORRUPT);
    assert_non_null(strstr(err.message, "imgsearch repair"));
    /* ... so a fresh catalogue is made with the snapshot away, and the
     * snapshot put back: a save must still not replace it. */
    char snap[4200], aside[4300];
    snprintf(snap, sizeof(snap), "%s/index.snap", f->dir);
    snprintf(aside, sizeof(aside), "%s/kept-aside", f->dir);
    assert_int_equal(rename(snap, aside), 0);
    open_ok(f);
    assert_int_equal(rename(aside, snap), 0);
    assert_int_equal(vindex_count(replica_index(f->r)), 0);
    int written = -1;
    assert_int_equal(replica_save(f->r, &written, &err), IMS_OK);
    assert_int_equal(written, 0);
    snprintf(path, sizeof(path), "%s/index.snap", f->dir);
    struct replica__snap_header h;
    assert_int_equal(replica__snapshot_header(path, &h), IMS_OK);
    assert_int_equal(h.count, 5);
}

static void test_keep_rule_table(void **state)
{
    (void)state;
    static const struct {
        int64_t old_seq, old_last, seq, last;
        int keep;
    } cases[] = {
        {10, 5, 10, 5, 0},  /* the same: rewrite */
        {10, 5, 12, 6, 0},  /* later */
        {10, 5, 12, 5, 0},  /* later, rows deleted since */
        {10, 5, 9, 5, 1},   /* an older position never replaces a newer one */
        {10, 5, 0, -1, 1},  /* a fresh catalogue */
        {-1, 5, 3, 4, 1},   /* unknown seq (old snapshot): its ids go further */
        {-1, 5, 3, 5, 0},   /* unknown seq, same ids */
        {12, 50, 20, 3, 1}, /* a replaced catalogue that got more changes: ids tell */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct replica__snap_header h = {DIM, cases[i].old_last, 7, cases[i].old_seq};
        assert_int_equal(replica__snapshot_keeps(&h, cases[i].seq, cases[i].last),
                         cases[i].keep);
    }
}

/* replica_sync applies a write of another handle at once, without a
 * follower; an update replaces the vector; a row added behind the
 * replica's back (as ingest did before it went through replica_sync) is not
 * an error. */
static void test_sync_update_and_idempotence(void **state)
{
    struct fx *f = *state;
    open_ok(f);
    int64_t ids[3];
    add_rows(f, 3, ids); /* seeds 1..3 */
    struct ims_error err = {0};
    int64_t seq = 0;
    assert_int_equal(store_change_seq(other(f), &seq, &err), IMS_OK);
    assert_int_equal(replica_sync(f->r, seq, 5000, &err), IMS_OK);
    assert_int_equal(vindex_count(replica_index(f->r)), 3);
    assert_finds(f, 2, ids[1]);
    /* beyond the catalogue */
    assert_int_equal(replica_sync(f->r, seq + 10, 1000, &err), IMS_ERR_INVALID);
    /* an update: row ids[1] gets seed 77's vector */
    float v[DIM];
    tu_vec(v, DIM, 77);
    assert_int_equal(store_set_embeddings(other(f), &ids[1], v, 1, NULL, &err), IMS_OK);
    assert_int_equal(store_change_seq(other(f), &seq, &err), IMS_OK);
    assert_int_equal(replica_sync(f->r, seq, 5000, &err), IMS_OK);
    assert_finds(f, 77, ids[1]);
    assert_int_equal(vindex_count(replica_index(f->r)), 3);
    /* added to the index directly, then the feed brings the same row */
    int64_t more[1];
    add_rows(f, 1, more); /* seed 4 */
    tu_vec(v, DIM, 4);
    assert_int_equal(vindex_add(replica_index(f->r), more, v, 1, NULL), IMS_OK);
    assert_int_equal(replica_catch_up(f->r, &err), IMS_OK);
    assert_int_equal(vindex_count(replica_index(f->r)), 4);
    assert_finds(f, 4, more[0]);
    struct replica_stats rs;
    replica_get_stats(f->r, &rs);
    assert_int_equal(rs.ready, 1);
    assert_int_equal(rs.seq, 5);
    assert_true(rs.changes_applied >= 5);
}

/* Waits (bounded, for liveness only) until cond(f) holds. */
static int eventually(struct fx *f, int (*cond)(struct fx *))
{
    for (int i = 0; i < 2000; i++) {
        if (cond(f))
            return 1;
        usleep(5000);
    }
    return cond(f);
}
static int is_ready(struct fx *f) { return replica_ready(f->r); }
static int has_seven(struct fx *f) { return vindex_count(replica_index(f->r)) == 7; }
static int has_six(struct fx *f) { return vindex_count(replica_index(f->r)) == 6; }

/* A deferred open returns before the index exists; the follower builds it,
 * then applies other writers' inserts and deletes by itself. */
static void test_deferred_start_and_follow(void **state)
{
    struct fx *f = *state;
    int64_t ids[5];
    add_rows(f, 5, ids);
    struct replica_options o;
    replica_options_default(&o);
    o.data_dir = f->dir;
    o.model_name = "model-a";
    o.dim = DIM;
    o.defer_sync = 1;
    o.wait_ms = 100;
    struct ims_error err = {0};
    assert_int_equal(replica_open(&o, &f->r, &err), IMS_OK);
    assert_int_equal(replica_ready(f->r), 0);
    assert_null(replica_index(f->r));
    assert_int_equal(replica_catch_up(f->r, &err), IMS_ERR_BUSY);
    assert_int_equal(replica_save(f->r, NULL, &err), IMS_ERR_BUSY);
    assert_int_equal(replica_follow_start(f->r, &err), IMS_OK);
    assert_true(eventually(f, is_ready));
    assert_non_null(replica_index(f->r));
    assert_int_equal(vindex_count(replica_index(f->r)), 5);
    int64_t more[2];
    add_rows(f, 2, more); /* seeds 6, 7 */
    assert_true(eventually(f, has_seven));
    assert_finds(f, 7, more[1]);
    assert_int_equal(store_delete(other(f), ids[0], &err), IMS_OK);
    assert_true(eventually(f, has_six));
    assert_absent(f, 1, ids[0]);
}

static void test_bad_options(void **state)
{
    struct fx *f = *state;
    struct replica_options o;
    replica_options_default(&o);
    struct ims_error err = {0};
    assert_int_equal(replica_open(&o, &f->r, &err), IMS_ERR_INVALID); /* no folder */
    assert_null(f->r);
    assert_int_equal(replica_open(NULL, &f->r, &err), IMS_ERR_INVALID);
    char longname[STORE_MODEL_NAME_MAX_BYTES + 10];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;
    o.data_dir = f->dir;
    o.model_name = longname;
    o.dim = DIM;
    assert_int_equal(replica_open(&o, &f->r, &err), IMS_ERR_INVALID);
    assert_null(f->r);
    /* a data folder path that is a file */
    char path[4200];
    snprintf(path, sizeof(path), "%s/file", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    o.data_dir = path;
    o.model_name = "model-a";
    assert_int_not_equal(replica_open(&o, &f->r, &err), IMS_OK);
    assert_null(f->r);
    replica_close(NULL);
}

/* Every allocation the replica makes may fail: an error, never a crash or a
 * leak (ASan checks the latter). */
static void test_alloc_failures(void **state)
{
    struct fx *f = *state;
    add_rows(f, 3, NULL);
    open_ok(f);
    struct ims_error err = {0};
    assert_int_equal(replica_save(f->r, NULL, &err), IMS_OK);
    replica_close(f->r);
    f->r = NULL;
    int ok = 0;
    for (long n = 0; n < 400 && !ok; n++) {
        ims_alloc_set_fail_after(n);
        enum ims_status st = open_r(f, "model-a", &err);
        ims_alloc_set_fail_after(-1);
        if (st == IMS_OK) {
            ok = 1;
            assert_int_equal(vindex_count(replica_index(f->r)), 3);
        } else {
            assert_null(f->r);
        }
    }
    assert_true(ok);
}

/* The feed trimmed past a running replica: catching up is refused (the
 * index keeps its last state), the stats say so; a reopen rebuilds. */
static void test_trimmed_past_running(void **state)
{
    struct fx *f = *state;
    open_ok(f);
    int64_t ids[4];
    add_rows(f, 4, ids); /* changes 1..4, not applied yet */
    struct ims_error err = {0};
    assert_int_equal(store_change_trim(other(f), 3, &err), IMS_OK);
    assert_int_equal(replica_catch_up(f->r, &err), IMS_ERR_NOT_FOUND);
    assert_non_null(strstr(err.message, "trimmed"));
    struct replica_stats rs;
    replica_get_stats(f->r, &rs);
    assert_int_equal(rs.behind_floor, 1);
    assert_int_equal(vindex_count(replica_index(f->r)), 0);
    replica_close(f->r);
    f->r = NULL;
    open_ok(f);
    assert_int_equal(vindex_count(replica_index(f->r)), 4);
    replica_get_stats(f->r, &rs);
    assert_int_equal(rs.behind_floor, 0);
    assert_int_equal(rs.rebuilds, 1);
}

static int collect(void *user, const int64_t *ids, const float *v, size_t n, int dim)
{
    (void)v;
    (void)dim;
    int64_t *out = user;
    for (size_t i = 0; i < n; i++) {
        assert_true(out[0] < 63);
        out[1 + out[0]++] = ids[i];
    }
    return 0;
}

/* The sorted ids of an index: out[0] = count, out[1..] the ids. */
static void index_ids(struct vindex *vx, int64_t out[64])
{
    out[0] = 0;
    assert_int_equal(vindex_scan(vx, collect, out, NULL), IMS_OK);
    for (int64_t i = 1; i <= out[0]; i++)
        for (int64_t j = i + 1; j <= out[0]; j++)
            if (out[j] < out[i]) {
                int64_t t = out[i];
                out[i] = out[j];
                out[j] = t;
            }
}

/* A fresh replica of the folder has exactly the ids of f->r. */
static void assert_same_as_fresh(struct fx *f)
{
    struct replica_options o;
    replica_options_default(&o);
    o.data_dir = f->dir;
    o.model_name = "model-a";
    o.dim = DIM;
    struct replica *fresh = NULL;
    struct ims_error err = {0};
    assert_int_equal(replica_open(&o, &fresh, &err), IMS_OK);
    int64_t a[64], b[64];
    index_ids(replica_index(f->r), a);
    index_ids(replica_index(fresh), b);
    assert_int_equal(a[0], b[0]);
    assert_memory_equal(a, b, (size_t)(a[0] + 1) * sizeof(int64_t));
    replica_close(fresh);
}

/* The feed trimmed past a RUNNING replica: it keeps serving its old index
 * until replica_rebuild_live swaps in the difference; then it equals a
 * fresh replica, follows the feed again, and its row cache holds no row
 * deleted while the feed was lost. */
static void test_live_rebuild(void **state)
{
    struct fx *f = *state;
    open_ok(f);
    struct ims_error err = {0};
    assert_int_equal(store_row_cache_set(replica_store(f->r), 1 << 20, &err), IMS_OK);
    int64_t ids[6];
    add_rows(f, 6, ids); /* seeds 1..6 */
    assert_int_equal(replica_catch_up(f->r, &err), IMS_OK);
    struct store_image_row rows[6];
    uint8_t found[6];
    assert_int_equal(store_get_many(replica_store(f->r), ids, 6, 0, rows, found, &err), IMS_OK);
    for (int i = 0; i < 6; i++)
        store_row_fini(&rows[i]);
    /* while this node looks away: two deletes, three inserts, then a trim */
    assert_int_equal(store_delete(other(f), ids[0], &err), IMS_OK);
    assert_int_equal(store_delete(other(f), ids[3], &err), IMS_OK);
    int64_t more[3];
    add_rows(f, 3, more); /* seeds 7..9 */
    int64_t newest = 0;
    assert_int_equal(store_change_seq(other(f), &newest, &err), IMS_OK);
    assert_int_equal(store_change_trim(other(f), newest, &err), IMS_OK);
    assert_int_equal(replica_catch_up(f->r, &err), IMS_ERR_NOT_FOUND);
    struct replica_stats rs;
    replica_get_stats(f->r, &rs);
    assert_int_equal(rs.behind_floor, 1);
    uint64_t rebuilds = rs.rebuilds;
    /* the old index still serves */
    assert_int_equal(vindex_count(replica_index(f->r)), 6);
    assert_finds(f, 1, ids[0]);
    struct vindex *before = replica_index(f->r);
    assert_int_equal(replica_rebuild_live(f->r, &err), IMS_OK);
    assert_ptr_equal(replica_index(f->r), before); /* the same object: nothing to re-take */
    replica_get_stats(f->r, &rs);
    assert_int_equal(rs.behind_floor, 0);
    assert_int_equal(rs.rebuilds, rebuilds + 1);
    assert_int_equal(rs.seq, newest);
    assert_int_equal(vindex_count(replica_index(f->r)), 7);
    assert_absent(f, 1, ids[0]);
    assert_absent(f, 4, ids[3]);
    assert_finds(f, 9, more[2]);
    assert_finds(f, 2, ids[1]);
    assert_same_as_fresh(f);
    /* the deleted rows are not served from the cache */
    assert_int_equal(store_get_many(replica_store(f->r), ids, 6, 0, rows, found, &err), IMS_OK);
    assert_int_equal(found[0], 0);
    assert_int_equal(found[3], 0);
    assert_int_equal(found[1], 1);
    for (int i = 0; i < 6; i++)
        store_row_fini(&rows[i]);
    /* and it follows the feed again */
    add_rows(f, 1, NULL);
    assert_int_equal(replica_catch_up(f->r, &err), IMS_OK);
    assert_int_equal(vindex_count(replica_index(f->r)), 8);
}

/* Writes row id's embedding behind the store's back (no change logged):
 * how a test sees whether the replica re-read a row. */
static void poke_embedding(struct fx *f, int64_t id, uint64_t seed)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/catalogue.db", f->dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    float v[DIM];
    tu_vec(v, DIM, seed);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_prepare_v2(db, "UPDATE embeddings SET vec = ?1 WHERE image_id = ?2",
                                        -1, &q, NULL),
                     SQLITE_OK);
    sqlite3_bind_blob(q, 1, v, sizeof(v), SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 2, id);
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    assert_int_equal(sqlite3_changes(db), 1);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

/* A ROW change (tags, thumbnail, rename, completed import) evicts the row
 * cache and leaves the index's vector alone; an UPDATE re-reads it. */
static void test_row_change_keeps_vector(void **state)
{
    struct fx *f = *state;
    open_ok(f);
    struct ims_error err = {0};
    assert_int_equal(store_row_cache_set(replica_store(f->r), 1 << 20, &err), IMS_OK);
    int64_t ids[3];
    add_rows(f, 3, ids); /* seeds 1..3 */
    assert_int_equal(replica_catch_up(f->r, &err), IMS_OK);
    struct store_image_row row;
    uint8_t found = 0;
    assert_int_equal(store_get_many(replica_store(f->r), &ids[0], 1, 0, &row, &found, &err),
                     IMS_OK);
    assert_int_equal(row.n_tags, 0);
    store_row_fini(&row);
    poke_embedding(f, ids[0], 200);
    const char *tags[] = {"Seen"};
    assert_int_equal(store_tags_update(other(f), ids[0], tags, 1, NULL, 0, &err), IMS_OK);
    assert_int_equal(replica_catch_up(f->r, &err), IMS_OK);
    assert_finds(f, 1, ids[0]); /* not re-read: the old vector */
    assert_int_equal(store_get_many(replica_store(f->r), &ids[0], 1, 0, &row, &found, &err),
                     IMS_OK);
    assert_int_equal(row.n_tags, 1); /* the cached row was evicted */
    store_row_fini(&row);
    float v[DIM];
    tu_vec(v, DIM, 300);
    assert_int_equal(store_set_embeddings(other(f), &ids[0], v, 1, NULL, &err), IMS_OK);
    assert_int_equal(replica_catch_up(f->r, &err), IMS_OK);
    assert_finds(f, 300, ids[0]);
    assert_int_equal(vindex_count(replica_index(f->r)), 3);
}

/* An embedding replaced while the node looked away and the feed was
 * trimmed: the live rebuild compares embedding versions, not only ids. */
static void test_live_rebuild_replaced_embedding(void **state)
{
    struct fx *f = *state;
    open_ok(f);
    struct ims_error err = {0};
    int64_t ids[4];
    add_rows(f, 4, ids); /* seeds 1..4 */
    assert_int_equal(replica_catch_up(f->r, &err), IMS_OK);
    float v[DIM];
    tu_vec(v, DIM, 400);
    assert_int_equal(store_set_embeddings(other(f), &ids[1], v, 1, NULL, &err), IMS_OK);
    const char *tags[] = {"t"};
    assert_int_equal(store_tags_update(other(f), ids[2], tags, 1, NULL, 0, &err), IMS_OK);
    int64_t more[1];
    add_rows(f, 1, more); /* seed 5 */
    int64_t newest = 0;
    assert_int_equal(store_change_seq(other(f), &newest, &err), IMS_OK);
    assert_int_equal(store_change_trim(other(f), newest, &err), IMS_OK);
    assert_int_equal(replica_catch_up(f->r, &err), IMS_ERR_NOT_FOUND);
    assert_finds(f, 2, ids[1]); /* the old vector still serves */
    assert_int_equal(replica_rebuild_live(f->r, &err), IMS_OK);
    assert_int_equal(vindex_count(replica_index(f->r)), 5);
    assert_finds(f, 400, ids[1]); /* the new embedding */
    float q[DIM], score = 0;
    int64_t got = -1;
    int n = 0;
    tu_vec(q, DIM, 2);
    assert_int_equal(vindex_search(replica_index(f->r), q, 1, &score, &got, &n, NULL), IMS_OK);
    assert_false(got == ids[1] && score > 0.999f); /* the old one is gone */
    assert_finds(f, 3, ids[2]);
    assert_finds(f, 5, more[0]);
    assert_same_as_fresh(f);
}

static struct replica *lagging;
static int lagging_caught_up(struct fx *f)
{
    (void)f;
    struct replica_stats rs;
    replica_get_stats(lagging, &rs);
    return rs.behind_floor == 0 && rs.rebuilds == 2 && vindex_count(replica_index(lagging)) == 9;
}
static int trimmed(struct fx *f)
{
    int64_t floor = 0;
    store_change_floor(other(f), &floor, NULL);
    return floor >= 8;
}

/* A follower with a retention policy trims the feed by itself; another
 * running node left below the floor rebuilds by itself once it follows. */
static void test_retention_and_follower_rebuild(void **state)
{
    struct fx *f = *state;
    int64_t ids[4];
    add_rows(f, 4, ids);
    struct ims_error err = {0};
    struct replica_options o;
    replica_options_default(&o);
    o.data_dir = f->dir;
    o.model_name = "model-a";
    o.dim = DIM;
    o.wait_ms = 20;
    assert_int_equal(replica_open(&o, &lagging, &err), IMS_OK); /* not following yet */
    o.feed_keep = 2;
    o.trim_interval_ms = 10;
    assert_int_equal(replica_open(&o, &f->r, &err), IMS_OK);
    assert_int_equal(replica_follow_start(f->r, &err), IMS_OK);
    assert_int_equal(store_delete(other(f), ids[1], &err), IMS_OK);
    add_rows(f, 6, NULL); /* changes 5..11: the policy keeps the newest 2 */
    assert_true(eventually(f, trimmed));
    struct replica_stats rs;
    replica_get_stats(f->r, &rs);
    assert_true(rs.trims >= 1);
    assert_int_equal(rs.behind_floor, 0);
    /* the lagging node (at change 4) is below the floor: it rebuilds live */
    assert_int_equal(vindex_count(replica_index(lagging)), 4);
    assert_int_equal(replica_follow_start(lagging, &err), IMS_OK);
    assert_true(eventually(f, lagging_caught_up));
    replica_close(lagging);
    lagging = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fresh_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_catch_up_adds_and_removes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_snapshot_rebuilds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_snapshot_rebuilds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_untrusted_positions_rebuild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_update_and_idempotence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_start_and_follow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trimmed_past_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_rebuild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_change_keeps_vector, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_rebuild_replaced_embedding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_and_follower_rebuild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recorded_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_catalogue_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spec_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_build_other_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_kept_when_fuller, setup, teardown),
        cmocka_unit_test(test_keep_rule_table),
        cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
