/* SPDX-License-Identifier: MIT */
/*
 * cmd_add.c: `imgsearch add URL|FILE|FOLDER... | --from FILE`.
 *
 * Sources stream from the arguments, then from --from (one per line, "-" for
 * stdin), so a list of a million URLs is never held in memory. On a
 * terminal a progress line (counts, rate, ETA) is redrawn on stderr and
 * failures are printed above it; otherwise every item gets one line on
 * stdout as soon as its transaction has committed:
 *     added 42 https://example.org/a.jpg
 *     duplicate 17 /photos/b.png
 *     failed https://example.org/c.jpg: HTTP 404 (not_found)
 * so a script (or a test after kill -9) knows exactly what was stored; a
 * failure ends with its status name in parentheses (the API's error code).
 * Exit status: 0 when the job ran (even with failed items), 1 when it could
 * not run, 130 when interrupted (what was in flight is committed first).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_app.h"
#include "imgsearch/ingest.h"
#include "imgsearch/sync.h"

const char cli_help_add[] =
    "usage: imgsearch add [--data DIR] [--catalogue URL]"
    " [--model DIR] [--precision f32|bf16] [--batch N]\n"
    "                     [--decode bounded|exact]\n"
    "                     [--exif-orientation apply|ignore] [--keep-gps]\n"
    "                     [download options] URL|FILE|FOLDER... | --from FILE\n"
    "       imgsearch add --sync [--json] [options] FOLDER...\n"
    "Adds images: http(s) URLs, files, folders (recursive). --from reads one source\n"
    "per line (\"-\": stdin). URLs resolving to loopback/private/link-local/metadata\n"
    "addresses are refused unless --allow-private-urls.\n"
    "--decode bounded (default) decodes JPEGs much larger than needed at a DCT scale\n"
    "(CLIP input within 40 dB PSNR of the exact path); exact reproduces Pillow's bytes.\n"
    "Formats: JPEG, PNG, WebP, GIF, BMP, HEIC, AVIF, TIFF. EXIF date, camera make and\n"
    "model go in the row's metadata; GPS only with --keep-gps. Thumbnails are upright.\n"
    "--sync keeps the catalogue in step with each FOLDER: new files are added, files\n"
    "whose size or mtime changed are hashed (new content: re-embedded; same: kept),\n"
    "renamed/moved files keep their row (same content), rows whose files under FOLDER\n"
    "are gone are removed. Unchanged files are not read. A missing FOLDER removes\n"
    "nothing. --json prints the summary as JSON on stdout. One sync runs at a time per\n"
    "catalogue: while another (add --sync, serve --watch) is running, --sync refuses\n"
    "at once with exit status 75 and changes nothing; run it again later.\n"
    CLI_EXIF_HELP CLI_FETCH_HELP
    CLI_CATALOGUE_HELP;

struct sources {
    char **argv;
    int argc, next_arg;
    FILE *from;
    char *line;
    size_t line_cap;
};

static int next_source(void *ctx, const char **source)
{
    struct sources *s = ctx;
    if (s->next_arg < s->argc) {
        *source = s->argv[s->next_arg++];
        return 1;
    }
    while (s->from) {
        ssize_t n = getline(&s->line, &s->line_cap, s->from);
        if (n < 0)
            return 0;
        while (n > 0 && (s->line[n - 1] == '\n' || s->line[n - 1] == '\r'))
            s->line[--n] = '\0';
        char *p = s->line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p && *p != '#') {
            *source = p;
            return 1;
        }
    }
    return 0;
}

struct display {
    int tty;
    double last_draw;
    int quiet; /* --json: stdout holds the summary only; failures go to stderr */
};

static void fmt_eta(double s, char *buf, size_t n)
{
    if (s < 0 || s > 360000) {
        snprintf(buf, n, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static void on_progress(void *ctx, const struct ingest_progress *p)
{
    struct display *d = ctx;
    if (!d->tty)
        return;
    double now = ims_now();
    if (now - d->last_draw < 0.1)
        return;
    d->last_draw = now;
    int64_t finished = p->done + p->failed;
    double rate = p->elapsed_s > 0 ? (double)finished / p->elapsed_s : 0;
    char eta[32] = "--:--";
    if (p->sources_finished && rate > 0)
        fmt_eta((double)(p->total - finished) / rate, eta, sizeof(eta));
    int width = 24, filled = p->total > 0 ? (int)(width * finished / p->total) : 0;
    char bar[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r\033[K[%s] %lld/%lld%s  added %lld  dup %lld  failed %lld  %.1f img/s  ETA %s",
            bar, (long long)finished, (long long)p->total, p->sources_finished ? "" : "+",
            (long long)p->added, (long long)p->duplicates, (long long)p->failed, rate, eta);
    fflush(stderr);
}

static void on_item(void *ctx, const struct ingest_item_report *r)
{
    struct display *d = ctx;
    if (d->tty || d->quiet) {
        if (r->outcome == INGEST_FAILED)
            fprintf(stderr, "\r\033[Kfailed %s: %s (%s)\n", r->source, r->error,
                    ims_status_name(r->status));
        return;
    }
    switch (r->outcome) {
    case INGEST_ADDED: printf("added %lld %s\n", (long long)r->id, r->source); break;
    case INGEST_COMPLETED: printf("completed %lld %s\n", (long long)r->id, r->source); break;
    case INGEST_DUPLICATE: printf("duplicate %lld %s\n", (long long)r->id, r->source); break;
    case INGEST_FAILED:
        printf("failed %s: %s (%s)\n", r->source, r->error, ims_status_name(r->status));
        break;
    }
    fflush(stdout);
}

/* A JSON string (bytes >= 0x80 are passed through: paths are shown as they are). */
static void cli_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* add --sync: each folder synced in turn; a summary per folder on stderr
 * (and as JSON on stdout with --json). 0 when every sync ran;
 * CLI_EXIT_SYNC_BUSY (EX_TEMPFAIL) when another sync held the catalogue
 * (the folders after it are not synced either). */
#define CLI_EXIT_SYNC_BUSY 75
static int cli_add_sync(const struct ingest_deps *deps, const struct ingest_options *io,
                        char **folders, int n, int json, int tty, const atomic_int *cancel)
{
    int rc = 0;
    if (json)
        printf("{\"syncs\": [");
    for (int i = 0; i < n && !atomic_load(cancel); i++) {
        struct sync_summary s;
        struct ims_error err = {0};
        enum ims_status st = sync_folder(deps, io, folders[i], cancel, &s, &err);
        if (tty)
            fprintf(stderr, "\r\033[K");
        if (st == IMS_ERR_BUSY) { /* another sync holds the catalogue: nothing changed */
            cli_fail("add", "%s: %s", folders[i], ims_error_message(&err, st));
            rc = CLI_EXIT_SYNC_BUSY;
            break;
        }
        if (st != IMS_OK && st != IMS_ERR_CANCELLED) {
            rc = cli_fail("add", "%s", ims_error_message(&err, st));
            continue;
        }
        fprintf(stderr,
                "imgsearch add --sync %s: %lld files: %lld added, %lld changed, %lld renamed, "
                "%lld removed, %lld unchanged, %lld duplicates, %lld failed; %lld files read, "
                "in %.2f s%s\n",
                folders[i], (long long)s.files, (long long)s.added, (long long)s.changed,
                (long long)s.renamed, (long long)s.removed, (long long)s.unchanged,
                (long long)s.duplicates, (long long)s.failed, (long long)s.files_read,
                s.elapsed_s, st == IMS_ERR_CANCELLED ? "; interrupted" : "");
        if (json) {
            char *abs = realpath(folders[i], NULL);
            printf("%s{\"folder\": ", i ? ", " : "");
            cli_json_string(stdout, abs ? abs : folders[i]);
            free(abs);
            printf(", \"files\": %lld, \"added\": %lld, \"changed\": %lld, \"renamed\": %lld, "
                   "\"removed\": %lld, \"unchanged\": %lld, \"duplicates\": %lld, "
                   "\"failed\": %lld, \"files_read\": %lld, \"bytes_read\": %lld, "
                   "\"sniffed\": %lld, \"elapsed_s\": %.6f, \"interrupted\": %s}",
                   (long long)s.files, (long long)s.added, (long long)s.changed,
                   (long long)s.renamed, (long long)s.removed, (long long)s.unchanged,
                   (long long)s.duplicates, (long long)s.failed, (long long)s.files_read,
                   (long long)s.bytes_read, (long long)s.sniffed, s.elapsed_s,
                   st == IMS_ERR_CANCELLED ? "true" : "false");
        }
    }
    if (json)
        printf("]}\n");
    fflush(stdout);
    return rc;
}

int cli_cmd_add(int argc, char **argv)
{
    struct cli_app_options o = {0};
    struct ingest_options io;
    ingest_options_default(&io);
    io.allow_local_files = 1;
    struct sources src = {0};
    const char *from = NULL;
    int sync = 0, json = 0;
    char **positional = calloc((size_t)argc, sizeof(char *));
    int n_pos = 0, rc = 0;
    if (!positional)
        return cli_fail("add", "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r = cli_app_parse_common(argc, argv, &i, &o);
        if (r < 0) {
            free(positional);
            return cli_usage("add", cli_help_add, "bad value for %s", argv[i]);
        }
        if (r > 0)
            continue;
        long num;
        if ((r = cli_app_parse_fetch(argc, argv, &i, &io.fetch)) != 0) {
            if (r < 0)
                goto usage_value;
        } else if ((r = cli_opt_value(argc, argv, &i, "--from", &v)) != 0) {
            if (r < 0)
                goto usage_value;
            from = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--exif-orientation", &v)) != 0) {
            if (r < 0 || cli_parse_exif_orientation(v, &io.exif_orientation_ignore))
                goto usage_value;
        } else if (!strcmp(argv[i], "--keep-gps")) {
            io.keep_gps = 1;
        } else if (!strcmp(argv[i], "--sync")) {
            sync = 1;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--batch", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 256, &num))
                goto usage_value;
            io.batch_size = (int)num;
        } else if ((r = cli_opt_value(argc, argv, &i, "--decode", &v)) != 0) {
            if (r < 0 || (strcmp(v, "exact") != 0 && strcmp(v, "bounded") != 0))
                goto usage_value;
            io.decode = strcmp(v, "exact") == 0 ? IMAGE_DECODE_EXACT : IMAGE_DECODE_BOUNDED;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            free(positional);
            return cli_usage("add", cli_help_add, "unknown option %s", argv[i]);
        } else {
            positional[n_pos++] = argv[i];
        }
        continue;
    usage_value:
        free(positional);
        return cli_usage("add", cli_help_add, "bad or missing value for %s", argv[i]);
    }
    if (n_pos == 0 && !from) {
        free(positional);
        return cli_usage("add", cli_help_add, "nothing to add");
    }
    if ((sync && from) || (json && !sync)) {
        free(positional);
        return cli_usage("add", cli_help_add,
                         sync ? "--sync takes folders, not --from" : "--json goes with --sync");
    }
    src.argv = positional;
    src.argc = n_pos;
    if (from) {
        src.from = strcmp(from, "-") == 0 ? stdin : fopen(from, "r");
        if (!src.from) {
            free(positional);
            return cli_fail("add", "cannot open %s: %s", from, strerror(errno));
        }
    }
    o.with_model = 1;
    o.with_index = 1;
    struct cli_app app;
    if (cli_app_open("add", &o, &app) != 0) {
        rc = 1;
        goto out;
    }
    struct display disp = {isatty(STDERR_FILENO) && isatty(STDOUT_FILENO), 0, json};
    io.on_item = on_item;
    io.on_progress = on_progress;
    io.cb_ctx = &disp;
    atomic_int *cancel = cli_cancel_on_signals();

    /* ingest commits rows; the replica follows the change feed after each
     * commit */
    struct ims_error err = {0};
    struct ingest_deps deps = {app.model, app.store, cli_app_after_commit, &app};
    struct ingest_summary sum = {0};
    if (sync) {
        rc = cli_add_sync(&deps, &io, positional, n_pos, json, disp.tty, cancel);
        if (cli_app_close("add", &app, 1) != 0 && rc == 0)
            rc = 1;
        if (cli_interrupted() && rc == 0)
            rc = 130;
        goto out;
    }
    /* libimgsearch's add (imgsearch_add with this command's pipeline
     * options, callbacks and cancel flag) */
    enum ims_status st = imgsearch__add(app.is, &io, next_source, &src, cancel, &sum, &err);
    if (disp.tty)
        fprintf(stderr, "\r\033[K");
    if (st != IMS_OK) {
        rc = cli_fail("add", "%s", ims_error_message(&err, st));
    } else {
        double rate = sum.elapsed_s > 0 ? (double)(sum.added + sum.duplicates) / sum.elapsed_s : 0;
        fprintf(stderr, "imgsearch add: %lld sources: %lld added, %lld duplicates, %lld failed in "
                        "%.1f s (%.1f images/s)%s\n",
                (long long)sum.total, (long long)sum.added, (long long)sum.duplicates,
                (long long)sum.failed, sum.elapsed_s, rate,
                cli_interrupted() ? "; interrupted: run it again to complete the rest" : "");
    }
    if (cli_app_close("add", &app, 1) != 0 && rc == 0)
        rc = 1;
    if (cli_interrupted() && rc == 0)
        rc = 130;
out:
    if (src.from && src.from != stdin)
        fclose(src.from);
    free(src.line);
    free(positional);
    return rc;
}
