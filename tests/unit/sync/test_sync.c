/* SPDX-License-Identifier: MIT */
/*
 * test_sync.c: folders kept in sync (sync.h) with the tiny model over
 * generated BMP files, on SQLite and, with the argument "pg", PostgreSQL.
 *
 * test_sync_folder: a folder changed between syncs: new files, a file
 * touched (same content, new mtime: hashed, row kept), a file rewritten
 * (same size, other content: same row, id and tags, new content), a file
 * rewritten with another row's content (a duplicate: its row keeps its id
 * and former content, and is read again next time), a file renamed (row kept, source
 * updated), a subfolder removed (its rows removed), an extensionless image
 * (sniffed once, then known by its row); an unchanged folder is synced
 * without reading one file; a sibling folder whose name extends the synced
 * one (files vs files2) is never touched; a missing folder is an error that
 * removes nothing.
 *
 * test_watch: sync_watch_* with a short debounce: the initial sync, then
 * files created, rewritten, renamed and deleted while it runs, the folder
 * moved away (disarmed, rows kept) and recreated (re-armed and synced); each
 * checked by polling the catalogue with a deadline; the metrics text.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "imgsearch/sync.h"
#include "store_test_util.h"
#include "unit_fx.h"

#define DEADLINE_S 30.0

struct fx {
    char dir[256], model_dir[300], files[300];
    char catalogue[1024];
    struct clip_model *model;
    struct store *store;
};

/* A 16x16 24-bit BMP whose pixels depend on seed (all the same size). */
static void write_bmp(const char *path, unsigned seed)
{
    unsigned char b[54 + 16 * 16 * 3];
    memset(b, 0, sizeof(b));
    b[0] = 'B';
    b[1] = 'M';
    uint32_t size = sizeof(b), off = 54, hdr = 40, w = 16, h = 16, img = 16 * 16 * 3;
    memcpy(b + 2, &size, 4);
    memcpy(b + 10, &off, 4);
    memcpy(b + 14, &hdr, 4);
    memcpy(b + 18, &w, 4);
    memcpy(b + 22, &h, 4);
    b[26] = 1;
    b[28] = 24;
    memcpy(b + 34, &img, 4);
    for (unsigned i = 0; i < 16 * 16 * 3; i++)
        b[54 + i] = (unsigned char)((i * (seed * 7 + 3) + seed * 31) & 255);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, sizeof(b), f), sizeof(b));
    fclose(f);
}

static void pathf(char *out, size_t cap, const struct fx *f, const char *rel)
{
    snprintf(out, cap, "%s/%s", f->files, rel);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/ims_test_sync_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->model_dir, sizeof(f->model_dir), "%s/model", f->dir);
    snprintf(f->files, sizeof(f->files), "%s/files", f->dir);
    assert_int_equal(ims_mkdir_p(f->files, NULL), IMS_OK);
    ufx_copy_tiny_model(f->model_dir);
    struct ims_error err = {0};
    assert_int_equal(clip_model_load(f->model_dir, NULL, &f->model, &err), IMS_OK);
    char data[300];
    snprintf(data, sizeof(data), "%s/data", f->dir);
    struct store_model_info mi = {clip_model_name(f->model),
                                  (uint32_t)clip_model_embed_dim(f->model)};
    assert_int_equal(tu_catalogue_new(f->catalogue, sizeof(f->catalogue)), 0);
    if (store_open_catalogue(f->catalogue, data, &mi, STORE_OPEN_SYNC_NORMAL, &f->store, &err) !=
        IMS_OK)
        fail_msg("store_open_catalogue: %s", err.message);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    store_close(f->store);
    tu_catalogue_drop(f->catalogue);
    clip_model_free(f->model);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

static struct ingest_options quiet_options(void)
{
    struct ingest_options o;
    ingest_options_default(&o);
    o.n_decode_threads = 1;
    o.batch_size = 4;
    return o;
}

static struct sync_summary do_sync(struct fx *f, const char *folder)
{
    struct ingest_deps deps = {f->model, f->store, NULL, NULL};
    struct ingest_options o = quiet_options();
    struct sync_summary sum;
    struct ims_error err = {0};
    enum ims_status st = sync_folder(&deps, &o, folder, NULL, &sum, &err);
    if (st != IMS_OK)
        fail_msg("sync %s: %s", folder, ims_error_message(&err, st));
    return sum;
}

static int64_t id_of(struct fx *f, const char *rel)
{
    char p[600];
    pathf(p, sizeof(p), f, rel);
    int64_t id = 0;
    struct ims_error err = {0};
    enum ims_status st = store_find_by_source(f->store, p, &id, &err);
    return st == IMS_OK ? id : st == IMS_ERR_NOT_FOUND ? 0 : -1;
}

/* The content hash of the row of `rel` (0: none), and its tags' count. */
static int row_of(struct fx *f, const char *rel, uint8_t sha[32], size_t *n_tags)
{
    int64_t id = id_of(f, rel);
    if (id <= 0)
        return 0;
    struct store_image_row row;
    store_row_init(&row);
    struct ims_error err = {0};
    if (store_get(f->store, id, 0, &row, &err) != IMS_OK)
        return 0;
    memcpy(sha, row.sha256, 32);
    if (n_tags)
        *n_tags = row.n_tags;
    store_row_fini(&row);
    return 1;
}

static size_t rows_under(struct fx *f, const char *folder)
{
    struct store_file_row *rows = NULL;
    size_t n = 0;
    struct ims_error err = {0};
    assert_int_equal(store_list_under(f->store, folder, &rows, &n, &err), IMS_OK);
    for (size_t i = 0; i < n; i++)
        assert_true(rows[i].has_file_state);
    store_file_rows_free(rows, n);
    return n;
}

static void set_mtime(const char *path, time_t sec)
{
    struct timespec ts[2] = {{sec, 0}, {sec, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void test_sync_folder(void **state)
{
    struct fx *f = *state;
    char p[600], q[600];
    pathf(p, sizeof(p), f, "sub");
    assert_int_equal(mkdir(p, 0755), 0);
    const char *names[] = {"a.bmp", "b.bmp", "sub/c.bmp", "sub/d.bmp", "noext"};
    for (unsigned i = 0; i < 5; i++) {
        pathf(p, sizeof(p), f, names[i]);
        write_bmp(p, i + 1);
        set_mtime(p, 1000000 + i);
    }
    pathf(p, sizeof(p), f, "readme.txt");
    FILE *t = fopen(p, "w");
    fputs("not an image\n", t);
    fclose(t);
    /* the sibling whose name extends "files" */
    char sib[600];
    snprintf(sib, sizeof(sib), "%s2", f->files);
    assert_int_equal(mkdir(sib, 0755), 0);
    snprintf(p, sizeof(p), "%s/s.bmp", sib);
    write_bmp(p, 40);
    struct sync_summary s = do_sync(f, sib);
    assert_int_equal(s.added, 1);

    s = do_sync(f, f->files);
    assert_int_equal(s.files, 5);
    assert_int_equal(s.added, 5);
    assert_int_equal(s.removed, 0);
    assert_int_equal(s.files_read, 0);
    assert_int_equal(s.sniffed, 1); /* noext; readme.txt is never opened */
    assert_int_equal(s.failed, 0);
    assert_int_equal(rows_under(f, f->files), 5);

    /* nothing changed: nothing read */
    s = do_sync(f, f->files);
    assert_int_equal(s.unchanged, 5);
    assert_int_equal(s.added + s.changed + s.renamed + s.removed + s.failed, 0);
    assert_int_equal(s.files_read, 0);
    assert_int_equal(s.sniffed, 0); /* noext is known by its row */

    int64_t id_a = id_of(f, "a.bmp"), id_b = id_of(f, "b.bmp"), id_c = id_of(f, "sub/c.bmp");
    assert_true(id_a > 0 && id_b > 0 && id_c > 0);
    struct ims_error terr = {0};
    const char *tag[] = {"kept"};
    assert_int_equal(store_tags_update(f->store, id_b, tag, 1, NULL, 0, &terr), IMS_OK);
    uint8_t sha_b0[32], sha_b1[32], sha_a[32];
    size_t n_tags = 0;
    assert_true(row_of(f, "b.bmp", sha_b0, NULL));
    /* touched: same content, new mtime */
    pathf(p, sizeof(p), f, "a.bmp");
    set_mtime(p, 2000000);
    /* rewritten: same size, other content, other mtime */
    pathf(p, sizeof(p), f, "b.bmp");
    write_bmp(p, 20);
    set_mtime(p, 2000001);
    /* renamed out of the subfolder, then the subfolder removed */
    pathf(p, sizeof(p), f, "sub/c.bmp");
    pathf(q, sizeof(q), f, "e.bmp");
    assert_int_equal(rename(p, q), 0);
    pathf(p, sizeof(p), f, "sub/d.bmp");
    assert_int_equal(unlink(p), 0);
    pathf(p, sizeof(p), f, "sub");
    assert_int_equal(rmdir(p), 0);
    pathf(p, sizeof(p), f, "f.bmp");
    write_bmp(p, 30);

    s = do_sync(f, f->files);
    assert_int_equal(s.files, 5);
    assert_int_equal(s.added, 1);
    assert_int_equal(s.changed, 1);
    assert_int_equal(s.renamed, 1);
    assert_int_equal(s.removed, 1);
    assert_int_equal(s.unchanged, 2);
    assert_int_equal(s.failed, 0);
    /* a (touched), b (rewritten), e (same size as the gone rows), f (same) */
    assert_int_equal(s.files_read, 4);
    assert_int_equal(id_of(f, "a.bmp"), id_a);
    /* the rewritten file keeps its row, its id and tags, with the new content */
    assert_int_equal(id_of(f, "b.bmp"), id_b);
    assert_true(row_of(f, "b.bmp", sha_b1, &n_tags));
    assert_memory_not_equal(sha_b0, sha_b1, 32);
    assert_int_equal(n_tags, 1);
    assert_int_equal(id_of(f, "e.bmp"), id_c);
    assert_int_equal(id_of(f, "sub/c.bmp"), 0);
    assert_int_equal(id_of(f, "sub/d.bmp"), 0);
    assert_true(id_of(f, "f.bmp") > 0);
    assert_int_equal(rows_under(f, f->files), 5);

    s = do_sync(f, f->files);
    assert_int_equal(s.unchanged, 5);
    assert_int_equal(s.files_read, 0);

    /* rewritten with the content of another row (f.bmp): a duplicate; a.bmp
     * keeps its id and former content, and is read again next time */
    assert_true(row_of(f, "a.bmp", sha_a, NULL));
    pathf(p, sizeof(p), f, "a.bmp");
    write_bmp(p, 30);
    set_mtime(p, 3000000);
    s = do_sync(f, f->files);
    assert_int_equal(s.duplicates, 1);
    assert_int_equal(s.changed, 0);
    assert_int_equal(id_of(f, "a.bmp"), id_a);
    assert_true(row_of(f, "a.bmp", sha_b1, NULL));
    assert_memory_equal(sha_a, sha_b1, 32);
    assert_int_equal(rows_under(f, f->files), 5);
    s = do_sync(f, f->files);
    assert_int_equal(s.duplicates, 1);
    assert_int_equal(s.files_read, 1);
    /* written again with new content: the row takes it */
    write_bmp(p, 50);
    set_mtime(p, 3000001);
    s = do_sync(f, f->files);
    assert_int_equal(s.changed, 1);
    assert_int_equal(id_of(f, "a.bmp"), id_a);
    assert_true(row_of(f, "a.bmp", sha_b1, NULL));
    assert_memory_not_equal(sha_a, sha_b1, 32);
    /* the sibling folder was never touched */
    assert_int_equal(rows_under(f, sib), 1);

    /* a missing folder: an error, nothing removed */
    struct ingest_deps deps = {f->model, f->store, NULL, NULL};
    struct ims_error err = {0};
    snprintf(p, sizeof(p), "%s/nope", f->dir);
    assert_int_equal(sync_folder(&deps, NULL, p, NULL, &s, &err), IMS_ERR_NOT_FOUND);
    assert_non_null(strstr(err.message, "nothing removed"));
    int64_t n = 0;
    assert_int_equal(store_count(f->store, &n, &err), IMS_OK);
    assert_int_equal(n, 6);
}

/* ---- watching ------------------------------------------------------------------- */

static int one_source(void *ctx, const char **source)
{
    const char **p = ctx;
    *source = *p;
    *p = NULL;
    return *source != NULL;
}

/* A row parked by a sync that died before its replace (its source is the
 * path plus sync.c's PARK_SUFFIX) gets its source back, id and tags kept,
 * instead of being taken for a gone file; a row under a folder the walk
 * cannot read (nested past the walk's depth limit) is kept too. */
static void test_sync_interrupted_and_unseen(void **state)
{
    struct fx *f = *state;
    char p[600];
    pathf(p, sizeof(p), f, "a.bmp");
    write_bmp(p, 1);
    struct sync_summary s = do_sync(f, f->files);
    assert_int_equal(s.added, 1);
    int64_t id = id_of(f, "a.bmp");
    assert_true(id > 0);
    struct ims_error err = {0};
    const char *tag[] = {"keep"};
    assert_int_equal(store_tags_update(f->store, id, tag, 1, NULL, 0, &err), IMS_OK);
    char parked[700];
    snprintf(parked, sizeof(parked), "%s\n(sync: new content being read)", p);
    struct store_file_update u = {id, parked, 0, 0};
    assert_int_equal(store_update_files(f->store, &u, 1, NULL, &err), IMS_OK);
    assert_int_equal(id_of(f, "a.bmp"), 0);

    s = do_sync(f, f->files);
    assert_int_equal(s.removed, 0);
    assert_int_equal(id_of(f, "a.bmp"), id);
    uint8_t sha[32];
    size_t n_tags = 0;
    assert_true(row_of(f, "a.bmp", sha, &n_tags));
    assert_int_equal(n_tags, 1);

    /* a row whose file lies 70 folders deep: the walk stops at its depth
     * limit, so the file is not seen, and the row must not be removed */
    char deep[4096];
    size_t len = (size_t)snprintf(deep, sizeof(deep), "%s", f->files);
    for (int d = 0; d < 70; d++)
        len += (size_t)snprintf(deep + len, sizeof(deep) - len, "/d");
    assert_int_equal(ims_mkdir_p(deep, NULL), IMS_OK);
    snprintf(deep + len, sizeof(deep) - len, "/b.bmp");
    write_bmp(deep, 2);
    struct ingest_deps deps = {f->model, f->store, NULL, NULL};
    struct ingest_options o = quiet_options();
    o.allow_local_files = 1;
    const char *next = deep;
    struct ingest_summary isum;
    assert_int_equal(ingest_run(&deps, &o, one_source, &next, NULL, &isum, &err), IMS_OK);
    assert_int_equal(isum.added, 1);
    int64_t deep_id = 0;
    assert_int_equal(store_find_by_source(f->store, deep, &deep_id, &err), IMS_OK);
    s = do_sync(f, f->files);
    assert_int_equal(s.removed, 0);
    assert_int_equal(store_find_by_source(f->store, deep, &deep_id, &err), IMS_OK);
}

static int wait_until(int (*pred)(struct fx *, const void *), struct fx *f, const void *arg)
{
    double end = ims_now() + DEADLINE_S;
    while (ims_now() < end) {
        if (pred(f, arg))
            return 1;
        usleep(20000);
    }
    return pred(f, arg);
}

static int has(struct fx *f, const void *rel) { return id_of(f, rel) > 0; }
static int hasnt(struct fx *f, const void *rel) { return id_of(f, rel) == 0; }

struct id_change {
    const char *rel;
    int64_t old;
    uint8_t sha[32];
};
/* the row of c->rel has the id c->old and content other than c->sha */
static int content_changed(struct fx *f, const void *a)
{
    const struct id_change *c = a;
    uint8_t sha[32];
    return id_of(f, c->rel) == c->old && row_of(f, c->rel, sha, NULL) &&
           memcmp(sha, c->sha, 32) != 0;
}

struct status_want {
    struct sync_watch *w;
    int armed;
    int64_t min_rearms;
};
static int status_is(struct fx *f, const void *a)
{
    (void)f;
    const struct status_want *sw = a;
    struct sync_watch_status s;
    if (sync_watch_status(sw->w, &s, 1) != 1)
        return 0;
    return s.armed == sw->armed && s.rearms >= sw->min_rearms;
}

static void test_watch(void **state)
{
    struct fx *f = *state;
    char p[600], q[600];
    pathf(p, sizeof(p), f, "one.bmp");
    write_bmp(p, 1);
    struct ingest_deps deps = {f->model, f->store, NULL, NULL};
    struct ingest_options io = quiet_options();
    struct sync_watch_options wo = {100, 100};
    struct sync_watch *w = NULL;
    struct ims_error err = {0};
    const char *folders[] = {f->files};
    assert_int_equal(sync_watch_start(&deps, &io, folders, 1, &wo, &w, &err), IMS_OK);
    assert_true(wait_until(has, f, "one.bmp")); /* the initial sync */

    /* created, in a new subfolder too */
    pathf(p, sizeof(p), f, "two.bmp");
    write_bmp(p, 2);
    pathf(p, sizeof(p), f, "deep");
    assert_int_equal(mkdir(p, 0755), 0);
    pathf(p, sizeof(p), f, "deep/three.bmp");
    write_bmp(p, 3);
    assert_true(wait_until(has, f, "two.bmp"));
    assert_true(wait_until(has, f, "deep/three.bmp"));
    /* a file in the subfolder made after its first sync: its own watch */
    pathf(p, sizeof(p), f, "deep/four.bmp");
    write_bmp(p, 4);
    assert_true(wait_until(has, f, "deep/four.bmp"));

    /* rewritten */
    struct id_change c = {"two.bmp", id_of(f, "two.bmp"), {0}};
    assert_true(row_of(f, "two.bmp", c.sha, NULL));
    pathf(p, sizeof(p), f, "two.bmp");
    write_bmp(p, 22);
    assert_true(wait_until(content_changed, f, &c)); /* same row, new content */
    /* renamed: the row keeps its id */
    int64_t id_one = id_of(f, "one.bmp");
    pathf(p, sizeof(p), f, "one.bmp");
    pathf(q, sizeof(q), f, "uno.bmp");
    assert_int_equal(rename(p, q), 0);
    assert_true(wait_until(has, f, "uno.bmp"));
    assert_int_equal(id_of(f, "uno.bmp"), id_one);
    assert_int_equal(id_of(f, "one.bmp"), 0);
    /* deleted */
    pathf(p, sizeof(p), f, "deep/three.bmp");
    assert_int_equal(unlink(p), 0);
    assert_true(wait_until(hasnt, f, "deep/three.bmp"));

    /* the folder moved away: disarmed, its rows kept */
    char moved[600];
    snprintf(moved, sizeof(moved), "%s.moved", f->files);
    assert_int_equal(rename(f->files, moved), 0);
    struct status_want off = {w, 0, 0};
    assert_true(wait_until(status_is, f, &off));
    assert_true(id_of(f, "uno.bmp") > 0);
    /* a file written in the moved folder changes nothing */
    snprintf(p, sizeof(p), "%s/moved.bmp", moved);
    write_bmp(p, 9);
    /* recreated with one new file: re-armed, synced */
    assert_int_equal(mkdir(f->files, 0755), 0);
    pathf(p, sizeof(p), f, "back.bmp");
    write_bmp(p, 5);
    struct status_want on = {w, 1, 1};
    assert_true(wait_until(status_is, f, &on));
    assert_true(wait_until(has, f, "back.bmp"));
    assert_true(wait_until(hasnt, f, "uno.bmp"));
    assert_int_equal(id_of(f, "deep/four.bmp"), 0);
    assert_int_equal(id_of(f, "moved.bmp"), 0);
    /* and watched again */
    pathf(p, sizeof(p), f, "again.bmp");
    write_bmp(p, 6);
    assert_true(wait_until(has, f, "again.bmp"));

    char text[8192];
    size_t need = sync_watch_metrics(w, text, sizeof(text));
    assert_true(need < sizeof(text));
    assert_non_null(strstr(text, "imgsearch_watch_folders 1\n"));
    char line[1024];
    snprintf(line, sizeof(line), "imgsearch_watch_armed{folder=\"%s\"} 1\n", f->files);
    assert_non_null(strstr(text, line));
    snprintf(line, sizeof(line), "imgsearch_watch_rearms_total{folder=\"%s\"} 1\n", f->files);
    assert_non_null(strstr(text, line));
    snprintf(line, sizeof(line), "imgsearch_watch_changes_total{folder=\"%s\",kind=\"renamed\"} 1\n",
             f->files);
    assert_non_null(strstr(text, line));
    struct sync_watch_status s;
    assert_int_equal(sync_watch_status(w, &s, 1), 1);
    assert_true(s.syncs >= 5);
    assert_true(s.events > 0);
    assert_true(s.last_sync > 0);
    sync_watch_stop(w);

    /* bad arguments */
    const char *missing[] = {moved, "/nonexistent/ims/folder"};
    assert_int_equal(sync_watch_start(&deps, &io, missing + 1, 1, &wo, &w, &err),
                     IMS_ERR_NOT_FOUND);
    const char *twice[] = {moved, moved};
    assert_int_equal(sync_watch_start(&deps, &io, twice, 2, &wo, &w, &err), IMS_ERR_INVALID);
    assert_int_equal(sync_watch_start(&deps, &io, twice, 0, &wo, &w, &err), IMS_ERR_INVALID);
}

int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sync_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_interrupted_and_unseen, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
