/* SPDX-License-Identifier: MIT */
/*
 * cmd_reembed.c: `imgsearch reembed --model DIR --to DIR|URL` (issue 10
 * item 7): every image of a catalogue re-read from its source (file or URL)
 * and embedded with another model into a NEW catalogue (one catalogue holds
 * one model), through the ingest pipeline.
 *
 * The old catalogue is only read (rows in id order, a page at a time, each
 * page the rows after the last id of the one before: rows deleted or added
 * meanwhile never shift a page); its rows and embeddings are never changed,
 * so it stays usable until the switch-over (README "Re-embedding with
 * another model"). Each new row keeps what the old one had beyond its image:
 * its caption, added time and tags (store_set_details, store_tags_update),
 * also for a row found "present" by a resumed run. Rows whose source
 * is gone (a missing file, an HTTP 404) are reported ("gone SOURCE: why")
 * and the run goes on. Resumable: a source already complete in the target
 * is reported "present" without being fetched again, so running the same
 * command after an interruption finishes the rest.
 * Exit status: 0 when the run went through (even with gone or failed rows),
 * 1 when it could not run, 130 when interrupted.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cli_app.h"
#include "imgsearch/ingest.h"

const char cli_help_reembed[] =
    "usage: imgsearch reembed [--data DIR] [--catalogue URL] --model DIR --to DIR|URL\n"
    "                         [--precision f32|bf16] [--batch N] [--page-rows N] [--json]\n"
    "                         [--exif-orientation apply|ignore] [--keep-gps]\n"
    "                         [download options]\n"
    "Re-reads every image of the catalogue (--data / --catalogue) from its source\n"
    "(file or URL) and embeds it with the model in --model into a NEW catalogue:\n"
    "--to a data folder, or a postgresql:// URL. Each new row keeps the old row's\n"
    "tags, caption and added time. The old catalogue is only read: its\n"
    "rows and embeddings stay as they are. Rows whose source is gone are reported\n"
    "(\"gone SOURCE: reason\") and skipped. Run it again after an interruption: sources\n"
    "already in the target are not fetched again (\"present\"). Then point serve at the\n"
    "new folder (see README, \"Re-embedding with another model\").\n"
    "  --page-rows N   rows read from the old catalogue at a time (1..10000, 2000)\n"
    CLI_FETCH_HELP CLI_CATALOGUE_HELP;

/* The old catalogue's rows, a page at a time, as the pipeline's sources. */
#define PAGE_ROWS 2000
struct pager {
    struct store *store;
    struct store_image_row *rows;
    size_t n, next;
    int64_t last_id; /* keyset: the next page is the rows after it */
    int done;
    enum ims_status status; /* a failed read stops the sources */
    struct ims_error err;
    int64_t n_rows;
    long page_rows;
};

static void pager_release(struct pager *p)
{
    for (size_t i = 0; i < p->n; i++)
        store_row_fini(&p->rows[i]);
    ims_free(p->rows);
    p->rows = NULL;
    p->n = p->next = 0;
}

static int pager_next(void *ctx, const char **source)
{
    struct pager *p = ctx;
    while (p->next >= p->n) {
        if (p->done)
            return 0;
        pager_release(p);
        enum ims_status st =
            store_list(p->store, STORE_ORDER_ID_AFTER, p->last_id, p->page_rows, &p->rows, &p->n,
                       &p->err);
        if (st != IMS_OK) {
            p->status = st;
            p->done = 1;
            return 0;
        }
        if (p->n > 0)
            p->last_id = p->rows[p->n - 1].id;
        if ((long)p->n < p->page_rows)
            p->done = 1;
    }
    p->n_rows++;
    *source = p->rows[p->next++].source;
    return 1;
}

struct counts {
    int64_t reembedded, present, gone, failed;
    int quiet;
    struct store *from, *to;
    pthread_mutex_t mu; /* items are reported from several pipeline stages */
};

/* The new row of `source` (in c->to) takes the old row's caption, added
 * time and tags. A row added and a row found present both go through here,
 * so a run interrupted between its insert and this completes it next time.
 * Nothing to do (IMS_OK) when the old row went meanwhile, or when the
 * source's content is another target row's (a duplicate by content: no
 * row of this source to give them to). */
static enum ims_status keep_details(struct counts *c, const char *source, struct ims_error *err)
{
    int64_t old_id = 0, new_id = 0;
    enum ims_status st = store_find_by_source(c->from, source, &old_id, err);
    if (st == IMS_OK)
        st = store_find_by_source(c->to, source, &new_id, err);
    if (st == IMS_ERR_NOT_FOUND)
        return IMS_OK;
    if (st != IMS_OK)
        return st;
    struct store_image_row row;
    store_row_init(&row);
    st = store_get(c->from, old_id, 0, &row, err);
    if (st == IMS_OK)
        st = store_set_details(c->to, new_id, row.caption, row.added, err);
    if (st == IMS_OK && row.n_tags > 0)
        st = store_tags_update(c->to, new_id, (const char *const *)row.tags, row.n_tags, NULL, 0,
                               err);
    store_row_fini(&row);
    return st;
}

static void on_item(void *ctx, const struct ingest_item_report *r)
{
    struct counts *c = ctx;
    FILE *out = c->quiet ? stderr : stdout;
    struct ims_error kerr = {0};
    enum ims_status kst = IMS_OK;
    if (r->outcome != INGEST_FAILED && r->source &&
        (kst = keep_details(c, r->source, &kerr)) != IMS_OK) {
        pthread_mutex_lock(&c->mu);
        c->failed++; /* the new row stays: a run again finds it present and completes it */
        fprintf(out, "failed %s: its tags, caption and added time were not kept: %s (%s)\n",
                r->source, ims_error_message(&kerr, kst), ims_status_name(kst));
        fflush(out);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    pthread_mutex_lock(&c->mu);
    switch (r->outcome) {
    case INGEST_ADDED:
    case INGEST_COMPLETED:
        c->reembedded++;
        if (!c->quiet)
            fprintf(out, "reembedded %lld %s\n", (long long)r->id, r->source);
        break;
    case INGEST_DUPLICATE:
        c->present++;
        if (!c->quiet)
            fprintf(out, "present %lld %s\n", (long long)r->id, r->source);
        break;
    case INGEST_FAILED:
        if (r->status == IMS_ERR_NOT_FOUND) {
            c->gone++;
            fprintf(out, "gone %s: %s\n", r->source, r->error);
        } else {
            c->failed++;
            fprintf(out, "failed %s: %s (%s)\n", r->source, r->error,
                    ims_status_name(r->status));
        }
        break;
    }
    fflush(out);
    pthread_mutex_unlock(&c->mu);
}

/* 1 if the SQLite catalogue of folder `a` and folder `b` are the same. */
static int same_folder(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

int cli_cmd_reembed(int argc, char **argv)
{
    struct cli_app_options o = {0};
    struct ingest_options io;
    ingest_options_default(&io);
    io.allow_local_files = 1;
    const char *to = NULL;
    int json = 0;
    long page_rows = PAGE_ROWS;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r = cli_app_parse_common(argc, argv, &i, &o);
        if (r < 0)
            return cli_usage("reembed", cli_help_reembed, "bad value for %s", argv[i]);
        if (r > 0)
            continue;
        long num;
        if ((r = cli_app_parse_fetch(argc, argv, &i, &io.fetch)) != 0) {
            if (r < 0)
                goto usage_value;
        } else if ((r = cli_opt_value(argc, argv, &i, "--to", &v)) != 0) {
            if (r < 0 || !*v)
                goto usage_value;
            to = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--exif-orientation", &v)) != 0) {
            if (r < 0 || cli_parse_exif_orientation(v, &io.exif_orientation_ignore))
                goto usage_value;
        } else if (!strcmp(argv[i], "--keep-gps")) {
            io.keep_gps = 1;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--page-rows", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 10000, &page_rows))
                goto usage_value;
        } else if ((r = cli_opt_value(argc, argv, &i, "--batch", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 256, &num))
                goto usage_value;
            io.batch_size = (int)num;
        } else {
            return cli_usage("reembed", cli_help_reembed, "unknown argument %s", argv[i]);
        }
        continue;
    usage_value:
        return cli_usage("reembed", cli_help_reembed, "bad or missing value for %s", argv[i]);
    }
    if (!to)
        return cli_usage("reembed", cli_help_reembed, "--to DIR|URL is required");
    if (!o.model_dir)
        return cli_usage("reembed", cli_help_reembed, "--model DIR (the new model) is required");

    /* the old catalogue: read only, opened for the model it records */
    const char *old_cat = cli_app_catalogue(&o);
    const char *old_dir = o.data_dir ? o.data_dir
                          : store_catalogue_is_url(old_cat) ? NULL
                                                            : cli_default_data_dir();
    int to_url = store_catalogue_is_url(to);
    if (to_url ? (old_cat && strcmp(old_cat, to) == 0)
               : (!store_catalogue_is_url(old_cat) && same_folder(old_dir, to)))
        return cli_fail("reembed", "--to names the catalogue being read: give a new one");
    if (!store_catalogue_is_url(old_cat)) {
        char db[PATH_MAX];
        snprintf(db, sizeof(db), "%s/catalogue.db", old_dir);
        if (access(db, F_OK) != 0)
            return cli_fail("reembed", "no catalogue in %s: %s", old_dir, strerror(errno));
    }
    struct ims_error err = {0};
    struct store *old = NULL;
    struct store_model_info any = {"(any)", 1};
    enum ims_status st = store_open_catalogue(
        old_cat, old_dir, &any, STORE_OPEN_ALLOW_MODEL_MISMATCH | STORE_OPEN_EXISTING, &old, &err);
    char old_model[STORE_MODEL_NAME_MAX_BYTES];
    uint32_t old_dim = 0;
    if (st == IMS_OK)
        st = store_model_get(old, old_model, sizeof(old_model), &old_dim, &err);
    if (st != IMS_OK) {
        store_close(old);
        return cli_fail("reembed", "%s", ims_error_message(&err, st));
    }

    /* the target, for the new model (created if needed) */
    struct cli_app_options to_o = o;
    to_o.data_dir = to_url ? NULL : to;
    to_o.catalogue = to_url ? to : NULL;
    if (!to_url)
        unsetenv("IMGSEARCH_CATALOGUE"); /* the target is the folder's own catalogue.db */
    to_o.with_model = 1;
    to_o.with_index = 1;
    struct cli_app app;
    if (cli_app_open("reembed", &to_o, &app) != 0) {
        store_close(old);
        return 1;
    }
    if (strcmp(store_location(old), store_location(app.store)) == 0) {
        cli_app_close("reembed", &app, 0);
        store_close(old);
        return cli_fail("reembed", "--to names the catalogue being read: give a new one");
    }
    fprintf(stderr, "imgsearch reembed: %s (%s, dim %u) -> %s (%s, dim %u)\n",
            store_location(old), old_model, (unsigned)old_dim, store_location(app.store),
            app.model_name, (unsigned)app.dim);

    atomic_int *cancel = cli_cancel_on_signals();

    struct counts c = {0, 0, 0, 0, json, old, app.store, PTHREAD_MUTEX_INITIALIZER};
    io.on_item = on_item;
    io.cb_ctx = &c;
    struct pager pg;
    memset(&pg, 0, sizeof(pg));
    pg.store = old;
    pg.page_rows = page_rows;
    struct ingest_deps deps = {app.model, app.store, cli_app_after_commit, &app};
    struct ingest_summary sum = {0};
    int rc = 0;
    st = ingest_run(&deps, &io, pager_next, &pg, cancel, &sum, &err);
    if (st == IMS_OK && pg.status != IMS_OK) {
        st = pg.status;
        err = pg.err;
    }
    if (st != IMS_OK) {
        rc = cli_fail("reembed", "%s", ims_error_message(&err, st));
    } else {
        fprintf(stderr,
                "imgsearch reembed: %lld rows: %lld re-embedded, %lld already there, %lld gone, "
                "%lld failed in %.1f s%s\n",
                (long long)pg.n_rows, (long long)c.reembedded, (long long)c.present,
                (long long)c.gone, (long long)c.failed, sum.elapsed_s,
                cli_interrupted() ? "; interrupted: run it again to complete the rest" : "");
        if (json)
            printf("{\"rows\": %lld, \"reembedded\": %lld, \"present\": %lld, \"gone\": %lld, "
                   "\"failed\": %lld, \"interrupted\": %s, \"elapsed_s\": %.3f}\n",
                   (long long)pg.n_rows, (long long)c.reembedded, (long long)c.present,
                   (long long)c.gone, (long long)c.failed, cli_interrupted() ? "true" : "false",
                   sum.elapsed_s);
    }
    pager_release(&pg);
    if (cli_app_close("reembed", &app, 1) != 0 && rc == 0)
        rc = 1;
    store_close(old);
    if (cli_interrupted() && rc == 0)
        rc = 130;
    return rc;
}
