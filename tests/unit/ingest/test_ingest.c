/* SPDX-License-Identifier: MIT */
/*
 * test_ingest.c: the ingest pipeline and service with the tiny model, a
 * real catalogue and index in a temporary folder, local files and the
 * loopback HTTP test server (127.0.0.1 only).
 *
 * What is checked: every failure reaches the item report with its exact
 * status (the API's error code), never guessed from words; duplicates by
 * source and by content; the index holds exactly the added rows;
 * cancellation stops reading sources and commits what was read; jobs are
 * catalogue rows whose items any node claims with a lease: two nodes share
 * a job and store each image once, a dead node's items are redone, a
 * stopped node's job resumes, an item that keeps killing nodes is given
 * up; uploads answer with exact statuses.
 * The whole file also runs under ThreadSanitizer (ctest label `tsan`), and
 * on PostgreSQL as test_ingest_pg (claims with FOR UPDATE SKIP LOCKED).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http_test_server.h"
#include "store_test_util.h"
#include "imgsearch/index.h"
#include "imgsearch/ingest.h"
#include "unit_fx.h"

#define MAX_REPORTS 256

struct report {
    char source[512];
    enum ingest_outcome outcome;
    int64_t id;
    enum ims_status status;
};

struct fixture {
    char catalogue[512]; /* "" (SQLite in the data folder) or a fresh PostgreSQL database */
    pthread_mutex_t follow_mu;
    int64_t follow_seq; /* the index shows the catalogue's changes up to here */
    int64_t after_commit_calls;
    char dir[256];
    char model_dir[300];
    char files[300]; /* copies of golden images and a few bad files */
    struct clip_model *model;
    struct store *store;
    struct vindex *vx;
    int dim;
    struct report reports[MAX_REPORTS];
    int n_reports;
    atomic_int cancel;
    int cancel_after; /* on_item raises cancel after this many reports (0: never) */
};

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static char *read_file(const char *path, size_t *n)
{
    char *data = NULL;
    struct ims_error err = {0};
    if (ims_file_read(path, 64u << 20, &data, n, &err) != IMS_OK)
        fail_msg("%s", err.message);
    return data;
}

static void golden_path(const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/tests/golden/clip/images/%s", ufx_src_dir(), name);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/ims_test_ingest_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->model_dir, sizeof(f->model_dir), "%s/model", f->dir);
    snprintf(f->files, sizeof(f->files), "%s/files", f->dir);
    assert_int_equal(ims_mkdir_p(f->files, NULL), IMS_OK);
    ufx_copy_tiny_model(f->model_dir);
    const char *images[] = {"rgb.png", "baseline.jpg", "grey.jpg", "palette.png"};
    for (size_t i = 0; i < IMS_ARRAY_LEN(images); i++) {
        char from[1024], to[1024];
        golden_path(images[i], from, sizeof(from));
        snprintf(to, sizeof(to), "%s/%s", f->files, images[i]);
        ufx_copy_file(from, to);
    }
    struct ims_error err = {0};
    assert_int_equal(clip_model_load(f->model_dir, NULL, &f->model, &err), IMS_OK);
    f->dim = clip_model_embed_dim(f->model);
    char data[300];
    snprintf(data, sizeof(data), "%s/data", f->dir);
    struct store_model_info mi = {clip_model_name(f->model), (uint32_t)f->dim};
    assert_int_equal(tu_catalogue_new(f->catalogue, sizeof(f->catalogue)), 0);
    if (store_open_catalogue(f->catalogue, data, &mi, STORE_OPEN_SYNC_NORMAL, &f->store, &err) !=
        IMS_OK)
        fail_msg("store_open_catalogue: %s", err.message);
    assert_int_equal(vindex_new("Flat", f->dim, &f->vx, &err), IMS_OK);
    pthread_mutex_init(&f->follow_mu, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    vindex_free(f->vx);
    pthread_mutex_destroy(&f->follow_mu);
    store_close(f->store);
    tu_catalogue_drop(f->catalogue);
    clip_model_free(f->model);
    ufx_rmtree(f->dir);
    free(f);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

/* after_commit: the test's index follows the change feed up to seq (what a
 * node's replica does); checks that ingest asks for a seq that is committed */
static enum ims_status follow(void *user, int64_t seq, struct ims_error *err)
{
    struct fixture *f = user;
    pthread_mutex_lock(&f->follow_mu);
    f->after_commit_calls++;
    int64_t newest = 0;
    enum ims_status st = store_change_seq(f->store, &newest, err);
    assert_int_equal(st, IMS_OK);
    assert_true(seq <= newest);
    while (st == IMS_OK && f->follow_seq < seq) {
        struct store_change ch[64];
        size_t n = 0;
        st = store_changes_after(f->store, f->follow_seq, 64, ch, &n, err);
        if (st != IMS_OK || n == 0)
            break;
        for (size_t i = 0; i < n && st == IMS_OK; i++) {
            if (ch[i].kind == STORE_CHANGE_DELETE) {
                st = vindex_remove(f->vx, &ch[i].id, 1, NULL, err);
                continue;
            }
            struct store_image_row row;
            store_row_init(&row);
            uint8_t found = 0;
            st = store_get_many(f->store, &ch[i].id, 1, STORE_FIELD_EMBEDDING, &row, &found, err);
            if (st == IMS_OK && found)
                st = vindex_add(f->vx, &ch[i].id, row.embedding, 1, err);
            store_row_fini(&row);
        }
        f->follow_seq = ch[n - 1].seq;
    }
    pthread_mutex_unlock(&f->follow_mu);
    return st;
}

static size_t index_count(struct fixture *f)
{
    pthread_mutex_lock(&f->follow_mu);
    size_t n = vindex_count(f->vx);
    pthread_mutex_unlock(&f->follow_mu);
    return n;
}

static struct ingest_deps deps_of(struct fixture *f)
{
    return (struct ingest_deps){f->model, f->store, follow, f};
}

static void on_item(void *ctx, const struct ingest_item_report *r)
{
    struct fixture *f = ctx;
    assert_true(f->n_reports < MAX_REPORTS);
    struct report *o = &f->reports[f->n_reports++];
    snprintf(o->source, sizeof(o->source), "%s", r->source);
    o->outcome = r->outcome;
    o->id = r->id;
    o->status = r->status;
    if (getenv("IMS_TEST_VERBOSE"))
        print_message("%s: %d %s\n", r->source, (int)r->outcome, r->error ? r->error : "");
    /* a failed item always says why, in words and as a status */
    if (r->outcome == INGEST_FAILED) {
        assert_int_not_equal(r->status, IMS_OK);
        assert_non_null(r->error);
        assert_true(r->error[0] != '\0');
    } else {
        assert_int_equal(r->status, IMS_OK);
    }
    if (f->cancel_after && f->n_reports >= f->cancel_after)
        atomic_store(&f->cancel, 1);
}

static const struct report *find(struct fixture *f, const char *source_suffix)
{
    const struct report *hit = NULL;
    size_t n = strlen(source_suffix);
    for (int i = 0; i < f->n_reports; i++) {
        size_t m = strlen(f->reports[i].source);
        if (m >= n && strcmp(f->reports[i].source + m - n, source_suffix) == 0) {
            if (hit)
                fail_msg("two reports for %s", source_suffix);
            hit = &f->reports[i];
        }
    }
    if (!hit)
        fail_msg("no report for %s", source_suffix);
    return hit;
}

struct list {
    const char *const *items;
    size_t n, next;
};

static int list_next(void *ctx, const char **source)
{
    struct list *l = ctx;
    if (l->next >= l->n)
        return 0;
    *source = l->items[l->next++];
    return 1;
}

static void options(struct fixture *f, struct ingest_options *o, int local)
{
    ingest_options_default(o);
    o->allow_local_files = local;
    o->n_decode_threads = 2;
    o->batch_size = 4;
    o->on_item = on_item;
    o->cb_ctx = f;
    o->fetch.allow_private = 1; /* the loopback test server */
    o->fetch.retry_base_ms = 10;
    o->fetch.max_retries = 0;
}

static enum ims_status run(struct fixture *f, const struct ingest_options *o,
                           const char *const *sources, size_t n, struct ingest_summary *sum)
{
    struct ingest_deps deps = deps_of(f);
    struct list l = {sources, n, 0};
    struct ims_error err = {0};
    f->n_reports = 0;
    enum ims_status st = ingest_run(&deps, o, list_next, &l, &f->cancel, sum, &err);
    if (st != IMS_OK)
        print_error("ingest_run: %s\n", err.message);
    return st;
}

static int64_t store_rows(struct fixture *f)
{
    int64_t n = -1;
    assert_int_equal(store_count(f->store, &n, NULL), IMS_OK);
    return n;
}

/* ---- local files --------------------------------------------------------------- */

static void test_files_exact_statuses(void **state)
{
    struct fixture *f = *state;
    char rgb[400], base[400], text[400], trunc[400], missing[400], sub[400], twin[400];
    snprintf(rgb, sizeof(rgb), "%s/rgb.png", f->files);
    snprintf(base, sizeof(base), "%s/baseline.jpg", f->files);
    snprintf(text, sizeof(text), "%s/notes.jpg", f->files);
    snprintf(trunc, sizeof(trunc), "%s/cut.jpg", f->files);
    snprintf(missing, sizeof(missing), "%s/missing.png", f->files);
    snprintf(sub, sizeof(sub), "%s/sub", f->dir);
    snprintf(twin, sizeof(twin), "%s/sub/twin.png", f->dir);
    const char *not_image = "just some words, not an image at all\n";
    write_file(text, not_image, strlen(not_image));
    size_t n = 0;
    char *jpg = read_file(base, &n);
    write_file(trunc, jpg, n / 3); /* a JPEG cut short: its decoder's status */
    ims_free(jpg);
    assert_int_equal(ims_mkdir_p(sub, NULL), IMS_OK);
    ufx_copy_file(rgb, twin); /* the same bytes under another name, inside a folder */

    struct ingest_options o;
    options(f, &o, 1);
    const char *sources[] = {rgb, base, text, trunc, missing, "ftp://127.0.0.1/x.jpg", sub};
    struct ingest_summary sum = {0};
    assert_int_equal(run(f, &o, sources, IMS_ARRAY_LEN(sources), &sum), IMS_OK);
    assert_int_equal(f->n_reports, 7);
    const struct report *r_rgb = find(f, "/rgb.png"), *r_twin = find(f, "/twin.png");
    assert_int_equal(find(f, "/baseline.jpg")->outcome, INGEST_ADDED);
    /* rgb.png and its twin are in flight together: one is added, the
     * other is the duplicate of the same row */
    assert_true((r_rgb->outcome == INGEST_ADDED && r_twin->outcome == INGEST_DUPLICATE) ||
                (r_rgb->outcome == INGEST_DUPLICATE && r_twin->outcome == INGEST_ADDED));
    assert_int_equal(r_rgb->id, r_twin->id);
    assert_int_equal(find(f, "/notes.jpg")->status, IMS_ERR_UNSUPPORTED);
    assert_int_equal(find(f, "/cut.jpg")->status, IMS_ERR_CORRUPT);
    assert_int_equal(find(f, "/missing.png")->status, IMS_ERR_NOT_FOUND);
    assert_int_equal(find(f, "ftp://127.0.0.1/x.jpg")->status, IMS_ERR_UNSUPPORTED);
    assert_int_equal(sum.total, 7);
    assert_int_equal(sum.added, 2);
    assert_int_equal(sum.duplicates, 1);
    assert_int_equal(sum.failed, 4);
    assert_int_equal(store_rows(f), 2);
    assert_int_equal(index_count(f), 2);

    /* again: everything stored is a duplicate by source, found before reading */
    const char *again[] = {rgb, base};
    assert_int_equal(run(f, &o, again, 2, &sum), IMS_OK);
    assert_int_equal(f->n_reports, 2);
    assert_int_equal(find(f, "/rgb.png")->outcome, INGEST_DUPLICATE);
    assert_int_equal(find(f, "/baseline.jpg")->outcome, INGEST_DUPLICATE);
    assert_int_equal(store_rows(f), 2);
    assert_int_equal(index_count(f), 2);
}

/* The folder walker takes HEIC/HEIF/AVIF/TIFF files by their extension (any
 * case), without sniffing: bytes no sniffer knows under those names are
 * still handed to the decoders (and fail there, reported), while the same
 * bytes under an unknown extension are not taken at all. */
static void test_walker_takes_phone_extensions(void **state)
{
    struct fixture *f = *state;
    static const char *const names[] = {"a.heic", "b.HEIF", "c.avif", "d.tif", "e.TIFF", "f.xyz"};
    char sub[400], path[460];
    snprintf(sub, sizeof(sub), "%s/phone", f->dir);
    assert_int_equal(ims_mkdir_p(sub, NULL), IMS_OK);
    const char *junk = "not an image under an image's name\n";
    for (size_t i = 0; i < IMS_ARRAY_LEN(names); i++) {
        snprintf(path, sizeof(path), "%s/%s", sub, names[i]);
        write_file(path, junk, strlen(junk));
    }
    struct ingest_options o;
    options(f, &o, 1);
    const char *sources[] = {sub};
    struct ingest_summary sum = {0};
    assert_int_equal(run(f, &o, sources, 1, &sum), IMS_OK);
    assert_int_equal(f->n_reports, 5);
    for (size_t i = 0; i + 1 < IMS_ARRAY_LEN(names); i++) {
        char key[16];
        snprintf(key, sizeof(key), "/%s", names[i]);
        assert_non_null(find(f, key));
        assert_int_equal(find(f, key)->outcome, INGEST_FAILED);
    }
    assert_int_equal(sum.failed, 5);
    assert_int_equal(store_rows(f), 0);
}

static void test_local_paths_refused(void **state)
{
    struct fixture *f = *state;
    char rgb[400];
    snprintf(rgb, sizeof(rgb), "%s/rgb.png", f->files);
    struct ingest_options o;
    options(f, &o, 0); /* as the server runs it */
    const char *sources[] = {rgb, "file:///etc/passwd"};
    struct ingest_summary sum = {0};
    assert_int_equal(run(f, &o, sources, 2, &sum), IMS_OK);
    assert_int_equal(f->n_reports, 2);
    assert_int_equal(find(f, "/rgb.png")->status, IMS_ERR_REFUSED);
    assert_int_equal(find(f, "file:///etc/passwd")->status, IMS_ERR_UNSUPPORTED);
    assert_int_equal(store_rows(f), 0);
    assert_int_equal(index_count(f), 0);
}

/* ---- URLs on loopback -------------------------------------------------------------- */

static void test_urls_exact_statuses(void **state)
{
    struct fixture *f = *state;
    struct hts *s = hts_start();
    hts_serve_dir(s, "/files/", f->files, 0, 0);
    const char *html = "<html><body>not a picture</body></html>";
    hts_route(s, &(struct hts_route){.path = "/page.jpg", .content_type = "image/jpeg",
                                     .body = html, .body_len = strlen(html)});
    /* a body one byte over the limit, which the good picture is under */
    char path[400];
    snprintf(path, sizeof(path), "%s/palette.png", f->files);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    size_t limit = (size_t)sb.st_size + 100;
    char *big = malloc(limit + 1);
    memset(big, 0xAB, limit + 1);
    hts_route(s, &(struct hts_route){.path = "/big.jpg", .body = big, .body_len = limit + 1});
    free(big); /* hts_route copies */
    char u_ok[128], u_404[128], u_html[128], u_big[128], u_grey[128];
    hts_url(s, "/files/palette.png", u_ok, sizeof(u_ok));
    hts_url(s, "/nothing-here.jpg", u_404, sizeof(u_404));
    hts_url(s, "/page.jpg", u_html, sizeof(u_html));
    hts_url(s, "/big.jpg", u_big, sizeof(u_big));
    hts_url(s, "/files/grey.jpg", u_grey, sizeof(u_grey));

    struct ingest_options o;
    options(f, &o, 0);
    o.fetch.max_bytes = limit;
    const char *sources[] = {u_ok, u_404, u_html, u_big};
    struct ingest_summary sum = {0};
    assert_int_equal(run(f, &o, sources, 4, &sum), IMS_OK);
    assert_int_equal(f->n_reports, 4);
    assert_int_equal(find(f, "/files/palette.png")->outcome, INGEST_ADDED);
    assert_int_equal(find(f, "/nothing-here.jpg")->status, IMS_ERR_NOT_FOUND);
    assert_int_equal(find(f, "/page.jpg")->status, IMS_ERR_UNSUPPORTED);
    assert_int_equal(find(f, "/big.jpg")->status, IMS_ERR_TOO_LARGE);
    assert_int_equal(index_count(f), 1);

    /* without allow_private the address policy refuses before connecting */
    o.fetch.allow_private = 0;
    const char *refused[] = {u_grey};
    assert_int_equal(run(f, &o, refused, 1, &sum), IMS_OK);
    assert_int_equal(f->n_reports, 1);
    assert_int_equal(f->reports[0].status, IMS_ERR_REFUSED);
    assert_int_equal(hts_hits(s, "/files/grey.jpg"), 0);
    assert_int_equal(store_rows(f), 1);
    hts_stop(s);
}

/* ---- cancellation ---------------------------------------------------------------------- */

static void test_cancel_commits_what_was_read(void **state)
{
    struct fixture *f = *state;
    /* 40 distinct files (the same picture re-encoded would dedupe: use
     * distinct bytes by appending a trailer JPEG decoders ignore) */
    enum { N = 40 };
    char paths[N][400];
    const char *sources[N];
    size_t n = 0;
    char base[400];
    snprintf(base, sizeof(base), "%s/baseline.jpg", f->files);
    char *jpg = read_file(base, &n);
    char *buf = malloc(n + 16);
    memcpy(buf, jpg, n);
    for (int i = 0; i < N; i++) {
        snprintf(paths[i], sizeof(paths[i]), "%s/c%02d.jpg", f->files, i);
        int k = snprintf(buf + n, 16, "%02d", i);
        write_file(paths[i], buf, n + (size_t)k);
        sources[i] = paths[i];
    }
    free(buf);
    ims_free(jpg);

    struct ingest_options o;
    options(f, &o, 1);
    o.batch_size = 1;
    f->cancel_after = 3; /* raised from the writer thread, read by the source thread */
    struct ingest_summary sum = {0};
    assert_int_equal(run(f, &o, sources, N, &sum), IMS_OK);
    assert_true(atomic_load(&f->cancel));
    /* it stopped early, and everything it read was reported and stored */
    assert_true(sum.total < N);
    assert_int_equal(f->n_reports, sum.total);
    assert_int_equal(sum.added, sum.total);
    assert_int_equal(store_rows(f), sum.total);
    assert_int_equal(index_count(f), (size_t)sum.total);
    for (int i = 0; i < f->n_reports; i++) {
        int64_t id = -1;
        assert_int_equal(store_find_by_source(f->store, f->reports[i].source, &id, NULL), IMS_OK);
        assert_int_equal(id, f->reports[i].id);
    }
    /* cancelled before the start: nothing is read */
    f->cancel_after = 0;
    assert_int_equal(run(f, &o, sources, N, &sum), IMS_OK);
    assert_int_equal(sum.total, 0);
    assert_int_equal(f->n_reports, 0);
}

/* ---- the service: jobs as catalogue rows, claimed by nodes ------------------------------ */

static void service_options(struct fixture *f, struct ingest_options *o, const char *node)
{
    options(f, o, 0);
    o->on_item = NULL;
    o->node_id = node;
    o->lease_ms = 1000;
    o->claim_batch = 2;
    o->poll_ms = 20;
}

static struct ingest *service(struct fixture *f, const struct ingest_options *o)
{
    struct ingest_deps deps = deps_of(f);
    struct ingest *ing = NULL;
    struct ims_error err = {0};
    if (ingest_new(&deps, o, &ing, &err) != IMS_OK)
        fail_msg("ingest_new: %s", err.message);
    return ing;
}

static void wait_done(struct ingest *ing, const char *id, struct store_job *job)
{
    struct ims_error err = {0};
    memset(job, 0, sizeof(*job));
    if (ingest_job_wait(ing, id, 60000, job, &err) != IMS_OK)
        fail_msg("job %s: %s", id, err.message);
}

/* n distinct JPEGs served as /files/dN.jpg (a trailer makes the bytes differ) */
static void distinct_files(struct fixture *f, int n)
{
    size_t len = 0;
    char base[400];
    snprintf(base, sizeof(base), "%s/baseline.jpg", f->files);
    char *jpg = read_file(base, &len);
    char *buf = malloc(len + 16);
    memcpy(buf, jpg, len);
    for (int i = 0; i < n; i++) {
        char path[400];
        snprintf(path, sizeof(path), "%s/d%d.jpg", f->files, i);
        int k = snprintf(buf + len, 16, "%d", i);
        write_file(path, buf, len + (size_t)k);
    }
    free(buf);
    ims_free(jpg);
}

static char **distinct_urls(struct hts *s, int n)
{
    char **urls = calloc((size_t)n, sizeof(char *));
    for (int i = 0; i < n; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/files/d%d.jpg", i);
        urls[i] = malloc(128);
        hts_url(s, path, urls[i], 128);
    }
    return urls;
}

/* n distinct files (distinct_files) served under /files/ by a new loopback
 * server (*s, hts_stop it); their URLs (free_urls them). */
static char **served_files(struct fixture *f, int n, struct hts **s)
{
    distinct_files(f, n);
    *s = hts_start();
    hts_serve_dir(*s, "/files/", f->files, 0, 0);
    return distinct_urls(*s, n);
}

/* A service that takes jobs and answers for them but ingests nothing. */
static struct ingest *query_node(struct fixture *f)
{
    struct ingest_options o;
    service_options(f, &o, "query-only");
    o.no_ingest = 1;
    return service(f, &o);
}

static void free_urls(char **urls, int n)
{
    for (int i = 0; i < n; i++)
        free(urls[i]);
    free(urls);
}

/* every URL is stored exactly once, and its item row says who encoded it */
static void check_each_once(struct fixture *f, char **urls, int n)
{
    for (int i = 0; i < n; i++) {
        int64_t id = -1;
        assert_int_equal(store_find_by_source(f->store, urls[i], &id, NULL), IMS_OK);
    }
    assert_int_equal(store_rows(f), n);
    assert_int_equal(index_count(f), (size_t)n);
}

static void test_service_job_and_uploads(void **state)
{
    struct fixture *f = *state;
    struct hts *s = hts_start();
    hts_serve_dir(s, "/files/", f->files, 0, 0);
    char u1[128], u2[128], u404[128];
    hts_url(s, "/files/grey.jpg", u1, sizeof(u1));
    hts_url(s, "/files/palette.png", u2, sizeof(u2));
    hts_url(s, "/gone.png", u404, sizeof(u404));

    struct ingest_options o;
    service_options(f, &o, "node-a");
    struct ingest *ing = service(f, &o);
    assert_string_equal(ingest_node_id(ing), "node-a");
    struct ims_error err = {0};

    const char *urls[] = {u1, u2, u404};
    char id[INGEST_JOB_ID_BYTES];
    assert_int_equal(ingest_submit(ing, urls, 3, id, &err), IMS_OK);
    struct store_job job;
    wait_done(ing, id, &job);
    assert_int_equal(job.state, STORE_JOB_DONE);
    assert_int_equal(job.total, 3);
    assert_int_equal(job.done, 2);
    assert_int_equal(job.failed, 1);
    assert_int_equal(job.n_errors, 1);
    assert_string_equal(job.errors[0].url, u404);
    assert_string_equal(job.errors[0].code, "not_found");
    store_job_fini(&job);
    /* searchable here once the wait returned */
    assert_int_equal(index_count(f), 2);
    /* the item rows record the node that did them */
    for (int64_t item = 1; item <= 3; item++) {
        enum store_item_state ist;
        char node[64];
        int attempts = 0;
        int64_t image = 0;
        assert_int_equal(store_job_item_get(f->store, item, &ist, node, sizeof(node), &attempts,
                                            &image, &err),
                         IMS_OK);
        assert_string_equal(node, "node-a");
        assert_int_equal(attempts, 1);
        assert_true(ist == STORE_ITEM_DONE || ist == STORE_ITEM_FAILED);
    }

    /* bad submissions */
    const char *empty[] = {""};
    assert_int_equal(ingest_submit(ing, empty, 1, id, &err), IMS_ERR_INVALID);
    assert_int_equal(ingest_submit(ing, urls, 0, id, &err), IMS_ERR_INVALID);

    /* uploads: exact statuses, duplicates by content */
    size_t n = 0;
    char path[400];
    snprintf(path, sizeof(path), "%s/rgb.png", f->files);
    char *png = read_file(path, &n);
    struct ingest_item_report rep;
    char msg[256];
    assert_int_equal(ingest_add_bytes(ing, "upload:a/rgb.png", png, n, &rep, msg, sizeof(msg),
                                      &err),
                     IMS_OK);
    assert_int_equal(rep.outcome, INGEST_ADDED);
    assert_int_equal(rep.status, IMS_OK);
    assert_int_equal(index_count(f), 3); /* searchable when the upload answers */
    int64_t first = rep.id;
    assert_int_equal(ingest_add_bytes(ing, "upload:b/copy.png", png, n, &rep, msg, sizeof(msg),
                                      &err),
                     IMS_OK);
    assert_int_equal(rep.outcome, INGEST_DUPLICATE);
    assert_int_equal(rep.id, first);
    assert_int_equal(ingest_add_bytes(ing, "upload:c/x.png", "not an image", 12, &rep, msg,
                                      sizeof(msg), &err),
                     IMS_OK);
    assert_int_equal(rep.outcome, INGEST_FAILED);
    assert_int_equal(rep.status, IMS_ERR_UNSUPPORTED);
    assert_true(msg[0] != '\0');
    assert_int_equal(ingest_add_bytes(ing, "upload:d/cut.png", png, n / 2, &rep, msg,
                                      sizeof(msg), &err),
                     IMS_OK);
    assert_int_equal(rep.outcome, INGEST_FAILED);
    assert_int_equal(rep.status, IMS_ERR_CORRUPT);
    ims_free(png);
    assert_int_equal(index_count(f), 3);

    struct ingest_counters c;
    ingest_get_counters(ing, &c);
    assert_int_equal(c.jobs, 1);
    assert_int_equal(c.items_added, 3);
    assert_int_equal(c.items_duplicate, 1);
    assert_int_equal(c.items_failed, 3);
    assert_true(c.catalogue_seconds > 0); /* claims, inserts, finishes were timed */
    ingest_free(ing);
    hts_stop(s);
}

/* two nodes on one catalogue: a job posted to one completes with every
 * image once; a query-only node posts but never claims */
static void test_service_two_nodes_exactly_once(void **state)
{
    struct fixture *f = *state;
    enum { N = 12 };
    struct hts *s = NULL;
    char **urls = served_files(f, N, &s);

    struct ingest_options oq, oa, ob;
    service_options(f, &oq, "query-only");
    oq.no_ingest = 1;
    service_options(f, &oa, "node-a");
    service_options(f, &ob, "node-b");
    oa.claim_batch = ob.claim_batch = 1;
    struct ingest *q = service(f, &oq);
    char id[INGEST_JOB_ID_BYTES];
    struct ims_error err = {0};
    assert_int_equal(ingest_submit(q, (const char *const *)urls, N, id, &err), IMS_OK);
    /* nobody claims: the job waits, queued */
    struct store_job job;
    memset(&job, 0, sizeof(job));
    assert_int_equal(ingest_job_wait(q, id, 300, &job, &err), IMS_ERR_TIMEOUT);
    assert_int_equal(job.state, STORE_JOB_QUEUED);
    store_job_fini(&job);

    struct ingest *a = service(f, &oa), *b = service(f, &ob);
    /* the same URLs posted again at once on another node: stored once */
    char id2[INGEST_JOB_ID_BYTES];
    assert_int_equal(ingest_submit(b, (const char *const *)urls, N, id2, &err), IMS_OK);
    wait_done(q, id, &job);
    assert_int_equal(job.state, STORE_JOB_DONE);
    assert_int_equal(job.done, N);
    assert_int_equal(job.failed, 0);
    store_job_fini(&job);
    wait_done(a, id2, &job);
    assert_int_equal(job.state, STORE_JOB_DONE);
    assert_int_equal(job.done, N);
    store_job_fini(&job);
    check_each_once(f, urls, N);
    /* every item was done by one of the two ingest nodes, never the query node */
    for (int64_t item = 1; item <= 2 * N; item++) {
        enum store_item_state ist;
        char node[64];
        int attempts = 0;
        int64_t image = 0;
        assert_int_equal(store_job_item_get(f->store, item, &ist, node, sizeof(node), &attempts,
                                            &image, &err),
                         IMS_OK);
        assert_int_equal(ist, STORE_ITEM_DONE);
        assert_true(strcmp(node, "node-a") == 0 || strcmp(node, "node-b") == 0);
        assert_true(image > 0);
    }
    ingest_free(a);
    ingest_free(b);
    ingest_free(q);
    free_urls(urls, N);
    hts_stop(s);
}

/* a node that claimed items and died (never renews, never finishes): its
 * leases run out, another node does the items, the dead node's late finish
 * is ignored */
static void test_service_dead_node_items_redone(void **state)
{
    struct fixture *f = *state;
    enum { N = 4 };
    struct hts *s = NULL;
    char **urls = served_files(f, N, &s);
    struct ingest *q = query_node(f);
    char id[INGEST_JOB_ID_BYTES];
    struct ims_error err = {0};
    assert_int_equal(ingest_submit(q, (const char *const *)urls, N, id, &err), IMS_OK);
    struct store_job_item *items = NULL;
    size_t n = 0;
    assert_int_equal(store_job_claim(f->store, "dead-node", N, 200, &items, &n, &err), IMS_OK);
    assert_int_equal(n, N);

    struct ingest_options ob;
    service_options(f, &ob, "node-b");
    struct ingest *b = service(f, &ob);
    struct store_job job;
    wait_done(q, id, &job);
    assert_int_equal(job.state, STORE_JOB_DONE);
    assert_int_equal(job.done, N);
    assert_int_equal(job.n_errors, 0);
    store_job_fini(&job);
    check_each_once(f, urls, N);
    /* the dead node wakes up and reports: ignored, nothing counted twice */
    struct store_item_result late = {items[0].item_id, STORE_ITEM_ADDED, 1, NULL, NULL};
    uint8_t accepted = 1;
    assert_int_equal(store_job_finish(f->store, "dead-node", &late, 1, &accepted, &err), IMS_OK);
    assert_int_equal(accepted, 0);
    memset(&job, 0, sizeof(job));
    assert_int_equal(ingest_job_get(q, id, &job, &err), IMS_OK);
    assert_int_equal(job.done, N);
    store_job_fini(&job);
    store_job_items_free(items, n);
    ingest_free(b);
    ingest_free(q);
    free_urls(urls, N);
    hts_stop(s);
}

/* a node stopped in the middle of a job: the job is not failed, its items
 * are handed back, and the next node (a restart) finishes it */
static void test_service_resumes_after_restart(void **state)
{
    struct fixture *f = *state;
    enum { N = 10 };
    struct hts *s = NULL;
    char **urls = served_files(f, N, &s);
    /* every download takes a while, so the stop comes mid-job */
    for (int i = 0; i < N; i++) {
        char path[64], file[400];
        snprintf(path, sizeof(path), "/slow/d%d.jpg", i);
        snprintf(file, sizeof(file), "%s/d%d.jpg", f->files, i);
        size_t len = 0;
        char *body = read_file(file, &len);
        hts_route(s, &(struct hts_route){.path = path, .body = body, .body_len = len,
                                         .delay_ms = 150});
        ims_free(body);
        hts_url(s, path, urls[i], 128);
    }
    struct ingest_options oa;
    service_options(f, &oa, "node-a");
    oa.claim_batch = 1;
    struct ingest *a = service(f, &oa);
    char id[INGEST_JOB_ID_BYTES];
    struct ims_error err = {0};
    assert_int_equal(ingest_submit(a, (const char *const *)urls, N, id, &err), IMS_OK);
    struct store_job job;
    memset(&job, 0, sizeof(job));
    /* wait for the first finished item, then stop the node */
    for (;;) {
        assert_int_equal(ingest_job_get(a, id, &job, &err), IMS_OK);
        int64_t done = job.done;
        store_job_fini(&job);
        if (done > 0)
            break;
        usleep(10000);
    }
    ingest_free(a);
    memset(&job, 0, sizeof(job));
    struct ingest *a2 = service(f, &oa); /* the same node, restarted */
    assert_int_equal(ingest_job_get(a2, id, &job, &err), IMS_OK);
    assert_true(job.state == STORE_JOB_RUNNING || job.state == STORE_JOB_QUEUED ||
                job.state == STORE_JOB_DONE);
    assert_int_equal(job.n_errors, 0);
    store_job_fini(&job);
    wait_done(a2, id, &job);
    assert_int_equal(job.state, STORE_JOB_DONE);
    assert_int_equal(job.done, N);
    assert_int_equal(job.failed, 0);
    assert_int_equal(job.n_errors, 0); /* no "interrupted" error, no entry without a url */
    store_job_fini(&job);
    check_each_once(f, urls, N);
    ingest_free(a2);
    free_urls(urls, N);
    hts_stop(s);
}

/* an item whose nodes keep dying is given up after max_attempts, with its
 * source and a code */
static void test_service_gives_up_poison_items(void **state)
{
    struct fixture *f = *state;
    struct hts *s = hts_start();
    hts_serve_dir(s, "/files/", f->files, 0, 0);
    char u[128];
    hts_url(s, "/files/grey.jpg", u, sizeof(u));
    struct ingest *q = query_node(f);
    const char *urls[] = {u};
    char id[INGEST_JOB_ID_BYTES];
    struct ims_error err = {0};
    assert_int_equal(ingest_submit(q, urls, 1, id, &err), IMS_OK);
    /* two nodes claimed it and died (1 ms leases) */
    for (int i = 0; i < 2; i++) {
        struct store_job_item *items = NULL;
        size_t n = 0;
        usleep(5000);
        assert_int_equal(store_job_claim(f->store, "dying", 1, 1, &items, &n, &err), IMS_OK);
        assert_int_equal(n, 1);
        store_job_items_free(items, n);
    }
    usleep(5000);
    struct ingest_options ob;
    service_options(f, &ob, "node-b");
    ob.max_attempts = 2;
    struct ingest *b = service(f, &ob);
    struct store_job job;
    wait_done(q, id, &job);
    /* ended (whether a job of only failed items reads "done" or "failed"
     * is the store's rule); the item is failed with its source and code */
    assert_true(job.state == STORE_JOB_DONE || job.state == STORE_JOB_FAILED);
    assert_int_equal(job.done, 0);
    assert_int_equal(job.failed, 1);
    assert_int_equal(job.n_errors, 1);
    assert_string_equal(job.errors[0].url, u);
    assert_string_equal(job.errors[0].code, "cancelled");
    store_job_fini(&job);
    assert_int_equal(store_rows(f), 0);
    ingest_free(b);
    ingest_free(q);
    hts_stop(s);
}

/* Runs on SQLite, or with the argument "pg" on a PostgreSQL database of
 * its own per test (store_test_util.h). */
int main(int argc, char **argv)
{
    if (tu_backend_from_args(argc, argv) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_files_exact_statuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_walker_takes_phone_extensions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_paths_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_urls_exact_statuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_commits_what_was_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_job_and_uploads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_two_nodes_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_dead_node_items_redone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_resumes_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_gives_up_poison_items, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
