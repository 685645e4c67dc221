/* SPDX-License-Identifier: MIT */
/*
 * sync.c: one sync of a folder with the catalogue (sync.h): the walk
 * (stat only), the pure planner, and the execution: hashing only files whose
 * size or mtime changed (or that may be a renamed row), renames and file
 * state through store_update_files, deletions through store_delete_many,
 * new and changed files through the ingest pipeline (ingest_run).
 *
 * A changed file keeps its row (id, tags): its row's source is parked (the
 * path with PARK_SUFFIX) so the ingest reads the file as a new source; the
 * row the ingest adds then gives the kept row its content
 * (store_replace_content) and goes. A file the ingest did not add (failed,
 * cancelled, or its new content already another row's) gets its row's
 * source back, with an unknown file state so the next sync reads it again.
 * A sync killed in between leaves a parked row: the next sync finds no file
 * of that name and deletes it, and adds the file as new.
 *
 * One sync per catalogue at a time (store_sync_lock_try, held from listing
 * the rows to the last write): a second one, in this process or another,
 * returns IMS_ERR_BUSY at once; the watcher tries again later.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgsearch/image.h"
#include "sync_int.h"

#define WALK_MAX_DEPTH 64
#define SYNC_FILE_MAX_BYTES ((size_t)256 << 20)
#define UPDATE_CHUNK 1000
#define PARK_SUFFIX "\n(sync: new content being read)"

/* ---- planning ------------------------------------------------------------------- */

enum ims_status sync_plan(const struct store_file_row *rows, size_t n_rows,
                          const struct sync_file *files, size_t n_files,
                          struct sync_step **steps_out, size_t *n_out, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF((n_rows && !rows) || (n_files && !files) || !steps_out || !n_out, err,
                        IMS_ERR_INVALID, "sync_plan: invalid arguments");
    for (size_t i = 1; i < n_rows; i++)
        IMS_RETURN_ERROR_IF(strcmp(rows[i - 1].source, rows[i].source) >= 0, err,
                            IMS_ERR_INVALID, "sync_plan: rows not sorted at %zu", i);
    for (size_t i = 1; i < n_files; i++)
        IMS_RETURN_ERROR_IF(strcmp(files[i - 1].path, files[i].path) >= 0, err,
                            IMS_ERR_INVALID, "sync_plan: files not sorted at %zu", i);
    size_t cap = n_rows + n_files;
    struct sync_step *s = cap ? ims_calloc(cap, sizeof(*s)) : NULL;
    if (cap && !s)
        return ims_error_set(err, IMS_ERR_NOMEM, "sync_plan: out of memory");
    size_t n = 0, r = 0, f = 0;
    while (r < n_rows || f < n_files) {
        int c = r == n_rows ? 1 : f == n_files ? -1 : strcmp(rows[r].source, files[f].path);
        if (c < 0) {
            s[n++] = (struct sync_step){SYNC_GONE, SYNC_NONE, r++};
        } else if (c > 0) {
            s[n++] = (struct sync_step){SYNC_NEW, f++, SYNC_NONE};
        } else {
            int same = rows[r].has_file_state && rows[r].file_size == files[f].size &&
                       rows[r].file_mtime_ns == files[f].mtime_ns;
            s[n++] = (struct sync_step){same ? SYNC_KEEP : SYNC_CHECK, f++, r++};
        }
    }
    if (n == 0) {
        ims_free(s);
        s = NULL;
    }
    *steps_out = s;
    *n_out = n;
    return IMS_OK;
}

/* ---- the walk ------------------------------------------------------------------- */

struct listing {
    struct sync_file *v;
    size_t n, cap;
    const struct store_file_row *rows; /* sorted: an extensionless file with a row is
                                          taken without sniffing */
    size_t n_rows;
    sync__dir_fn *on_dir;
    void *dir_ctx;
    const atomic_int *cancel;
    int64_t sniffed;
    int oom;
    /* folders and files the walk could not read (or went too deep for):
     * the rows under them are kept, never taken for gone */
    char **unread;
    size_t n_unread, cap_unread;
};

static void listing_unread(struct listing *l, const char *path)
{
    if (l->n_unread == l->cap_unread) {
        size_t nc = l->cap_unread ? l->cap_unread * 2 : 8;
        char **p = ims_realloc(l->unread, nc * sizeof(*p));
        if (!p) {
            l->oom = 1;
            return;
        }
        l->unread = p;
        l->cap_unread = nc;
    }
    if (!(l->unread[l->n_unread] = ims_strdup(path)))
        l->oom = 1;
    else
        l->n_unread++;
}

/* Whether `source` is an unread path or lies under an unread folder. */
static int under_unread(const struct listing *l, const char *source)
{
    for (size_t i = 0; i < l->n_unread; i++) {
        size_t n = strlen(l->unread[i]);
        if (!strncmp(source, l->unread[i], n) && (source[n] == '\0' || source[n] == '/'))
            return 1;
    }
    return 0;
}


static int cmp_row_source(const void *key, const void *elem)
{
    return strcmp(key, ((const struct store_file_row *)elem)->source);
}

static int has_row(const struct listing *l, const char *path)
{
    return l->n_rows && bsearch(path, l->rows, l->n_rows, sizeof(*l->rows), cmp_row_source);
}


static int64_t mtime_ns(const struct stat *sb)
{
    return (int64_t)sb->st_mtim.tv_sec * 1000000000 + (int64_t)sb->st_mtim.tv_nsec;
}

static void listing_add(struct listing *l, const char *path, const struct stat *sb)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 1024;
        struct sync_file *p = ims_realloc(l->v, nc * sizeof(*p));
        if (!p) {
            l->oom = 1;
            return;
        }
        l->v = p;
        l->cap = nc;
    }
    char *copy = ims_strdup(path);
    if (!copy) {
        l->oom = 1;
        return;
    }
    l->v[l->n++] = (struct sync_file){copy, (int64_t)sb->st_size, mtime_ns(sb)};
}

static void walk(struct listing *l, const char *dir, int depth)
{
    if (l->oom || (l->cancel && atomic_load(l->cancel)))
        return;
    if (depth > WALK_MAX_DEPTH) {
        ims_log(IMS_LOG_WARN, "sync: %s is nested deeper than %d folders: not read, its rows kept",
                dir, WALK_MAX_DEPTH);
        listing_unread(l, dir);
        return;
    }
    if (l->on_dir)
        l->on_dir(l->dir_ctx, dir);
    DIR *d = opendir(dir);
    if (!d) {
        if (errno != ENOENT) { /* gone: its rows are; unreadable: they are kept */
            ims_log(IMS_LOG_WARN, "sync: cannot read folder %s: %s (its rows are kept)", dir,
                    strerror(errno));
            listing_unread(l, dir);
        }
        return;
    }
    size_t dlen = strlen(dir);
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL && !l->oom) {
        const char *name = e->d_name;
        if (name[0] == '.')
            continue;
        size_t len = dlen + strlen(name) + 2;
        char *path = ims_malloc(len);
        if (!path) {
            l->oom = 1;
            break;
        }
        snprintf(path, len, "%s%s%s", dir, dir[dlen - 1] == '/' ? "" : "/", name);
        struct stat sb;
        int lst = lstat(path, &sb);
        if (lst != 0 && errno != ENOENT) {
            ims_log(IMS_LOG_WARN, "sync: cannot stat %s: %s (its rows are kept)", path,
                    strerror(errno));
            listing_unread(l, path);
        }
        if (lst == 0) {
            if (S_ISDIR(sb.st_mode)) {
                walk(l, path, depth + 1);
            } else if (S_ISREG(sb.st_mode)) {
                /* an extensionless file may be an image (downloads): its first
                 * bytes decide, once; other extensions are never opened */
                int take = ingest_name_is_image(name) || has_row(l, path);
                if (!take && !strchr(name, '.')) {
                    l->sniffed++;
                    take = ingest_file_sniffs_as_image(path);
                }
                if (take)
                    listing_add(l, path, &sb);
            }
        }
        ims_free(path);
        errno = 0;
    }
    if (errno != 0 && !l->oom) {
        ims_log(IMS_LOG_WARN, "sync: reading folder %s: %s (its rows are kept)", dir,
                strerror(errno));
        listing_unread(l, dir);
    }
    closedir(d);
}

static int cmp_files(const void *a, const void *b)
{
    return strcmp(((const struct sync_file *)a)->path, ((const struct sync_file *)b)->path);
}

static void listing_free(struct listing *l)
{
    for (size_t i = 0; i < l->n; i++)
        ims_free((char *)l->v[i].path);
    ims_free(l->v);
    for (size_t i = 0; i < l->n_unread; i++)
        ims_free(l->unread[i]);
    ims_free(l->unread);
}

/* ---- execution ------------------------------------------------------------------ */

/* Reads and hashes a file, counting the read. */
static enum ims_status hash_file(const char *path, uint8_t out[32], struct sync_summary *sum,
                                 struct ims_error *err)
{
    char *data = NULL;
    size_t n = 0;
    enum ims_status st = ims_file_read(path, SYNC_FILE_MAX_BYTES, &data, &n, err);
    if (st != IMS_OK)
        return st;
    sum->files_read++;
    sum->bytes_read += (int64_t)n;
    ims_sha256(data, n, out);
    ims_free(data);
    return IMS_OK;
}

/* The state of the ingest of new and changed files. */
struct run {
    const struct ingest_options *user; /* the caller's callbacks */
    struct sync_file *files;           /* the listing, sorted */
    size_t n_files;
    const char **paths; /* to ingest */
    uint8_t *is_changed; /* per listing entry: a replaced row (else new) */
    int64_t *keep_id;    /* per listing entry: the parked row that keeps its id (0: none) */
    int64_t *new_id;     /* per listing entry: the row the ingest added for it */
    size_t n_paths, next;
    pthread_mutex_t mu;
    struct store_file_update *added; /* rows to record the file state of */
    size_t n_added;
    struct sync_summary *sum;
};

static int run_next(void *ctx, const char **source)
{
    struct run *r = ctx;
    if (r->next >= r->n_paths)
        return 0;
    *source = r->paths[r->next++];
    return 1;
}

static int cmp_file_path(const void *key, const void *elem)
{
    return strcmp(key, ((const struct sync_file *)elem)->path);
}

static void run_item(void *ctx, const struct ingest_item_report *rep)
{
    struct run *r = ctx;
    const struct sync_file *f =
        rep->source ? bsearch(rep->source, r->files, r->n_files, sizeof(*r->files), cmp_file_path)
                    : NULL;
    pthread_mutex_lock(&r->mu);
    switch (rep->outcome) {
    case INGEST_ADDED:
    case INGEST_COMPLETED:
        if (f && r->is_changed[f - r->files])
            r->sum->changed++;
        else
            r->sum->added++;
        if (f && r->keep_id[f - r->files])
            r->new_id[f - r->files] = rep->id; /* its content goes to the kept row */
        else if (f)
            r->added[r->n_added++] =
                (struct store_file_update){rep->id, NULL, f->size, f->mtime_ns};
        break;
    case INGEST_DUPLICATE:
        r->sum->duplicates++;
        if (f && r->keep_id[f - r->files])
            ims_log(IMS_LOG_WARN,
                    "sync: %s: its new content is already image %lld; image %lld keeps its"
                    " former content (and its tags) until the file changes again",
                    f->path, (long long)rep->id, (long long)r->keep_id[f - r->files]);
        break;
    case INGEST_FAILED: r->sum->failed++; break;
    }
    pthread_mutex_unlock(&r->mu);
    if (r->user && r->user->on_item)
        r->user->on_item(r->user->cb_ctx, rep);
}

static void run_progress(void *ctx, const struct ingest_progress *p)
{
    struct run *r = ctx;
    if (r->user && r->user->on_progress)
        r->user->on_progress(r->user->cb_ctx, p);
}

static enum ims_status show(const struct ingest_deps *deps, struct ims_error *err)
{
    if (!deps->after_commit)
        return IMS_OK;
    int64_t seq = 0;
    enum ims_status st = store_change_seq(deps->store, &seq, err);
    if (st == IMS_OK)
        st = deps->after_commit(deps->after_commit_user, seq, err);
    return st;
}

static enum ims_status update_chunked(struct store *store, const struct store_file_update *u,
                                      size_t n, struct ims_error *err)
{
    for (size_t i = 0; i < n; i += UPDATE_CHUNK) {
        enum ims_status st = store_update_files(store, u + i, IMS_MIN(UPDATE_CHUNK, n - i), NULL,
                                                err);
        if (st != IMS_OK)
            return st;
    }
    return IMS_OK;
}

enum ims_status sync__folder(const struct ingest_deps *deps, const struct ingest_options *io,
                             const char *folder, const atomic_int *cancel, sync__dir_fn *on_dir,
                             void *dir_ctx, struct sync_summary *sum_out, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!deps || !deps->store || !deps->model || !folder || !*folder, err,
                        IMS_ERR_INVALID, "sync: missing model, catalogue or folder");
    double t0 = ims_now();
    struct sync_summary sum = {0};
    char *root = realpath(folder, NULL);
    if (!root)
        return ims_error_set(err, errno == ENOENT || errno == ENOTDIR ? IMS_ERR_NOT_FOUND
                                                                      : IMS_ERR_IO,
                             "sync: %s: %s (nothing removed)", folder, strerror(errno));
    struct stat sb;
    if (stat(root, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        free(root);
        return ims_error_set(err, IMS_ERR_INVALID, "sync: %s is not a folder", folder);
    }
    struct store_file_row *rows = NULL;
    size_t n_rows = 0;
    struct listing l = {0};
    struct sync_step *steps = NULL;
    size_t n_steps = 0;
    struct store_file_update *upd = NULL;
    size_t n_upd = 0;
    int64_t *del = NULL;
    size_t n_del = 0;
    char **parked = NULL; /* per listing entry: the parked source */
    char **restored = NULL; /* sources given back to parked rows */
    size_t n_restored = 0;
    uint8_t *gone_matched = NULL;
    size_t *gone = NULL, n_gone = 0;
    struct run r = {0};
    pthread_mutex_init(&r.mu, NULL);
    /* one sync per catalogue at a time, from listing the rows to the last
     * write: another one refuses (IMS_ERR_BUSY) instead of interleaving */
    struct store_sync_lock *lock = NULL;
    enum ims_status st = store_sync_lock_try(deps->store, &lock, err);
    if (st != IMS_OK)
        goto out;
    st = store_list_under(deps->store, root, &rows, &n_rows, err);
    if (st != IMS_OK)
        goto out;
    l.rows = rows;
    l.n_rows = n_rows;
    l.on_dir = on_dir;
    l.dir_ctx = dir_ctx;
    l.cancel = cancel;
    walk(&l, root, 0);
    if (l.oom) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "sync: out of memory listing %s", root);
        goto out;
    }
    if (cancel && atomic_load(cancel)) {
        st = ims_error_set(err, IMS_ERR_CANCELLED, "sync: cancelled");
        goto out;
    }
    sum.sniffed = l.sniffed;
    sum.files = (int64_t)l.n;
    if (l.n > 1)
        qsort(l.v, l.n, sizeof(*l.v), cmp_files);
    st = sync_plan(rows, n_rows, l.v, l.n, &steps, &n_steps, err);
    if (st != IMS_OK)
        goto out;

    size_t cap = n_steps ? n_steps : 1;
    upd = ims_calloc(cap, sizeof(*upd));
    del = ims_calloc(cap, sizeof(*del));
    gone_matched = ims_calloc(n_rows ? n_rows : 1, 1);
    gone = ims_calloc(n_rows ? n_rows : 1, sizeof(*gone));
    r.paths = ims_calloc(cap, sizeof(*r.paths));
    r.is_changed = ims_calloc(l.n ? l.n : 1, 1);
    r.added = ims_calloc(cap + (l.n ? l.n : 1), sizeof(*r.added));
    r.keep_id = ims_calloc(l.n ? l.n : 1, sizeof(*r.keep_id));
    r.new_id = ims_calloc(l.n ? l.n : 1, sizeof(*r.new_id));
    parked = ims_calloc(l.n ? l.n : 1, sizeof(*parked));
    restored = ims_calloc(n_rows ? n_rows : 1, sizeof(*restored));
    if (!upd || !del || !gone_matched || !gone || !r.paths || !r.is_changed || !r.added ||
        !r.keep_id || !r.new_id || !parked || !restored) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "sync: out of memory");
        goto out;
    }
    /* rows the walk could not see are kept; a row parked by a sync that was
     * interrupted gets its source back (state unknown: read next time),
     * unless another row holds that source now, then it stays parked */
    for (size_t i = 0; i < n_steps; i++) {
        if (steps[i].action != SYNC_GONE)
            continue;
        const struct store_file_row *row = &rows[steps[i].row];
        size_t sl = strlen(row->source), pl = strlen(PARK_SUFFIX);
        if (sl > pl && !strcmp(row->source + sl - pl, PARK_SUFFIX)) {
            char *orig = ims_strdup(row->source);
            if (!orig) {
                st = ims_error_set(err, IMS_ERR_NOMEM, "sync: out of memory");
                goto out;
            }
            orig[sl - pl] = '\0';
            if (!has_row(&l, orig) && !under_unread(&l, orig)) {
                restored[n_restored++] = orig;
                upd[n_upd++] = (struct store_file_update){row->id, orig, 0, 0};
            } else {
                ims_log(IMS_LOG_WARN, "sync: image %lld stays parked: %s", (long long)row->id,
                        orig);
                ims_free(orig);
            }
            steps[i].action = SYNC_KEEP;
        } else if (under_unread(&l, row->source)) {
            steps[i].action = SYNC_KEEP;
        }
    }
    /* the rows whose file is gone: a new file of the size of one of them may
     * be it renamed, and only then is it hashed here */
    for (size_t i = 0; i < n_steps; i++)
        if (steps[i].action == SYNC_GONE && rows[steps[i].row].has_sha256)
            gone[n_gone++] = steps[i].row;
    for (size_t i = 0; i < n_steps && !(cancel && atomic_load(cancel)); i++) {
        const struct sync_step *s = &steps[i];
        const struct sync_file *f = s->file != SYNC_NONE ? &l.v[s->file] : NULL;
        const struct store_file_row *row = s->row != SYNC_NONE ? &rows[s->row] : NULL;
        uint8_t h[32];
        struct ims_error ferr = {0};
        switch (s->action) {
        case SYNC_KEEP: sum.unchanged++; break;
        case SYNC_CHECK:
            if (hash_file(f->path, h, &sum, &ferr) != IMS_OK) {
                ims_log(IMS_LOG_WARN, "sync: %s", ferr.message);
                sum.failed++; /* unreadable now: the row stays until the file is gone */
            } else if (row->has_sha256 && memcmp(h, row->sha256, 32) == 0) {
                upd[n_upd++] = (struct store_file_update){row->id, NULL, f->size, f->mtime_ns};
                sum.unchanged++;
            } else {
                r.is_changed[s->file] = 1;
                r.paths[r.n_paths++] = f->path;
                /* the row stays (id, tags) with its source parked; a path too
                 * long to park keeps its row and old content (warned) */
                size_t pl = strlen(f->path) + sizeof(PARK_SUFFIX);
                char *ps = pl <= STORE_SOURCE_MAX_BYTES + 1 ? ims_malloc(pl) : NULL;
                if (ps) {
                    snprintf(ps, pl, "%s%s", f->path, PARK_SUFFIX);
                    parked[s->file] = ps;
                    r.keep_id[s->file] = row->id;
                    upd[n_upd++] = (struct store_file_update){
                        row->id, ps, row->has_file_state ? row->file_size : 0,
                        row->has_file_state ? row->file_mtime_ns : 0};
                } else {
                    r.is_changed[s->file] = 0;
                    r.n_paths--;
                    ims_log(IMS_LOG_WARN,
                            "sync: %s changed but its path is too long to re-read it in "
                            "place: image %lld keeps its old content",
                            f->path, (long long)row->id);
                    sum.failed++;
                }
            }
            break;
        case SYNC_NEW: {
            size_t match = SYNC_NONE;
            int candidate = 0;
            for (size_t j = 0; j < n_gone && !candidate; j++) {
                const struct store_file_row *g = &rows[gone[j]];
                candidate = !gone_matched[gone[j]] &&
                            (g->bytes == f->size || (g->has_file_state && g->file_size == f->size));
            }
            if (candidate && hash_file(f->path, h, &sum, &ferr) == IMS_OK)
                for (size_t j = 0; j < n_gone && match == SYNC_NONE; j++)
                    if (!gone_matched[gone[j]] && memcmp(rows[gone[j]].sha256, h, 32) == 0)
                        match = gone[j];
            if (match != SYNC_NONE) {
                gone_matched[match] = 1;
                upd[n_upd++] = (struct store_file_update){rows[match].id, f->path, f->size,
                                                          f->mtime_ns};
                sum.renamed++;
            } else {
                r.paths[r.n_paths++] = f->path;
            }
            break;
        }
        case SYNC_GONE: break;
        }
    }
    if (cancel && atomic_load(cancel)) {
        st = ims_error_set(err, IMS_ERR_CANCELLED, "sync: cancelled");
        goto out;
    }
    for (size_t i = 0; i < n_steps; i++)
        if (steps[i].action == SYNC_GONE && !gone_matched[steps[i].row]) {
            del[n_del++] = rows[steps[i].row].id;
            sum.removed++;
        }
    /* deletions first: a renamed row may take the path of a deleted one */
    if (n_del > 0) {
        st = store_delete_many(deps->store, del, n_del, NULL, err);
        if (st == IMS_OK)
            st = show(deps, err);
        if (st != IMS_OK)
            goto out;
    }
    if (n_upd > 0) {
        st = update_chunked(deps->store, upd, n_upd, err);
        if (st != IMS_OK)
            goto out;
    }
    if (r.n_paths > 0) {
        struct ingest_options o;
        if (io)
            o = *io;
        else
            ingest_options_default(&o);
        o.allow_local_files = 1;
        r.user = io;
        r.files = l.v;
        r.n_files = l.n;
        r.sum = &sum;
        o.on_item = run_item;
        o.on_progress = run_progress;
        o.cb_ctx = &r;
        struct ingest_summary isum;
        st = ingest_run(deps, &o, run_next, &r, cancel, &isum, err);
        /* changed files: the kept rows take the new content, or get their
         * source back (not added: the file is read again next time) */
        int replaced = 0;
        struct ims_error uerr = {0};
        for (size_t i = 0; i < l.n; i++) {
            if (!r.keep_id[i])
                continue;
            const struct sync_file *f = &l.v[i];
            if (r.new_id[i]) {
                struct ims_error rerr = {0};
                enum ims_status rs = store_replace_content(deps->store, r.keep_id[i], r.new_id[i],
                                                           f->size, f->mtime_ns, &rerr);
                if (rs == IMS_OK) {
                    replaced = 1;
                    continue;
                }
                /* the new row stays as the file's row; the parked one goes */
                ims_log(IMS_LOG_WARN,
                        "sync: %s: keeping image %lld failed (%s); the file is"
                        " image %lld now",
                        f->path, (long long)r.keep_id[i], rerr.message, (long long)r.new_id[i]);
                if (store_delete_many(deps->store, &r.keep_id[i], 1, NULL, &rerr) != IMS_OK)
                    ims_log(IMS_LOG_WARN, "sync: %s", rerr.message);
                r.added[r.n_added++] =
                    (struct store_file_update){r.new_id[i], NULL, f->size, f->mtime_ns};
            } else {
                r.added[r.n_added++] = (struct store_file_update){r.keep_id[i], f->path, 0, 0};
            }
        }
        /* what was added is recorded even when the run stopped early */
        enum ims_status ust = update_chunked(deps->store, r.added, r.n_added, &uerr);
        if (ust == IMS_OK && replaced)
            ust = show(deps, &uerr);
        if (st == IMS_OK && ust != IMS_OK) {
            st = ust;
            *err = uerr;
        }
    }
out:
    store_sync_unlock(lock);
    sum.elapsed_s = ims_now() - t0;
    if (sum_out)
        *sum_out = sum;
    pthread_mutex_destroy(&r.mu);
    ims_free(r.paths);
    ims_free(r.is_changed);
    ims_free(r.added);
    ims_free(r.keep_id);
    ims_free(r.new_id);
    if (parked)
        for (size_t i = 0; i < l.n; i++)
            ims_free(parked[i]);
    ims_free(parked);
    for (size_t i = 0; i < n_restored; i++)
        ims_free(restored[i]);
    ims_free(restored);
    ims_free(upd);
    ims_free(del);
    ims_free(gone_matched);
    ims_free(gone);
    ims_free(steps);
    listing_free(&l);
    store_file_rows_free(rows, n_rows);
    free(root);
    return st;
}

enum ims_status sync_folder(const struct ingest_deps *deps, const struct ingest_options *io,
                            const char *folder, const atomic_int *cancel,
                            struct sync_summary *sum, struct ims_error *err)
{
    return sync__folder(deps, io, folder, cancel, NULL, NULL, sum, err);
}
