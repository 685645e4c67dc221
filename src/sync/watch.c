/* SPDX-License-Identifier: MIT */
/*
 * watch.c: folders kept in sync continuously (serve --watch; sync.h).
 *
 * DESIGN: one thread owns the inotify descriptor and every root's state.
 * Any event under a root marks it dirty; once no event came for
 * debounce_ms the root is synced (sync__folder, which walks it and adds a
 * watch to every folder it meets, so new subfolders are watched from their
 * first sync on). IN_Q_OVERFLOW marks every root dirty: the sync is a full
 * rescan, stat only. A root whose own folder is deleted or moved (its watch
 * reports IN_DELETE_SELF / IN_MOVE_SELF, or a periodic stat finds another
 * folder or none at its path) is disarmed: its watches are dropped and its
 * path is polled every rearm_ms; when a folder is there again it is re-armed
 * and synced. The rows of a vanished root are kept until it comes back.
 * Status counters are guarded by `mu`: sync_watch_status and the metrics
 * read them from other threads. Stopping sets `stop` (also the syncs'
 * cancel flag) and wakes the thread through a pipe.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sync_int.h"

#define WATCH_MASK                                                                                 \
    (IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO |         \
     IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

struct root {
    char *path;
    int armed;
    int root_wd;      /* the watch on the root folder itself, -1 if none */
    dev_t dev;        /* the folder armed at path */
    ino_t ino;
    int dirty;
    double last_event; /* ims_now() */
    double next_check; /* armed: stat the path; disarmed: look for it */
    /* status (guarded by mu) */
    int64_t syncs, events, overflows, rearms, deferred, last_sync;
    struct sync_summary last, total;
};

struct wd_map {
    int wd;
    size_t root;
};

struct sync_watch {
    const struct ingest_deps *deps;
    const struct ingest_options *io;
    struct sync_watch_options o;
    int ifd;
    int wake[2];
    atomic_int stop;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    struct root roots[SYNC_WATCH_MAX_ROOTS];
    size_t n_roots;
    struct wd_map *wds; /* watch thread only */
    size_t n_wds, cap_wds;
    size_t adding_root; /* the root being synced (on_dir) */
};

void sync_watch_options_default(struct sync_watch_options *o)
{
    o->debounce_ms = 500;
    o->rearm_ms = 1000;
}

/* ---- watch descriptors ------------------------------------------------------------ */

static struct wd_map *wd_find(struct sync_watch *w, int wd)
{
    for (size_t i = 0; i < w->n_wds; i++)
        if (w->wds[i].wd == wd)
            return &w->wds[i];
    return NULL;
}

static void wd_forget(struct sync_watch *w, int wd)
{
    struct wd_map *m = wd_find(w, wd);
    if (m)
        *m = w->wds[--w->n_wds];
}

static void on_dir(void *ctx, const char *dir)
{
    struct sync_watch *w = ctx;
    int wd = inotify_add_watch(w->ifd, dir, WATCH_MASK);
    if (wd < 0) {
        ims_log(IMS_LOG_WARN, "watch: cannot watch %s: %s", dir, strerror(errno));
        return;
    }
    struct root *r = &w->roots[w->adding_root];
    if (strcmp(dir, r->path) == 0)
        r->root_wd = wd;
    struct wd_map *m = wd_find(w, wd);
    if (m) {
        m->root = w->adding_root;
        return;
    }
    if (w->n_wds == w->cap_wds) {
        size_t nc = w->cap_wds ? w->cap_wds * 2 : 64;
        struct wd_map *p = ims_realloc(w->wds, nc * sizeof(*p));
        if (!p) {
            inotify_rm_watch(w->ifd, wd);
            return;
        }
        w->wds = p;
        w->cap_wds = nc;
    }
    w->wds[w->n_wds++] = (struct wd_map){wd, w->adding_root};
}

/* ---- arming ---------------------------------------------------------------------------- */

static void disarm(struct sync_watch *w, size_t ri, const char *why)
{
    struct root *r = &w->roots[ri];
    for (size_t i = 0; i < w->n_wds;) {
        if (w->wds[i].root == ri) {
            inotify_rm_watch(w->ifd, w->wds[i].wd);
            w->wds[i] = w->wds[--w->n_wds];
        } else {
            i++;
        }
    }
    pthread_mutex_lock(&w->mu);
    r->armed = 0;
    pthread_mutex_unlock(&w->mu);
    r->root_wd = -1;
    r->dirty = 0;
    r->next_check = ims_now();
    ims_log(IMS_LOG_INFO, "watch: %s %s; waiting for it to come back", r->path, why);
}

/* Looks at the root's path: arms a folder found there (a sync follows). */
static void check_root(struct sync_watch *w, size_t ri, double now)
{
    struct root *r = &w->roots[ri];
    r->next_check = now + (double)w->o.rearm_ms / 1000.0;
    struct stat sb;
    int there = stat(r->path, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (r->armed) {
        if (there && sb.st_dev == r->dev && sb.st_ino == r->ino)
            return;
        disarm(w, ri, there ? "was replaced" : "is gone");
        if (!there)
            return;
    }
    if (!there)
        return;
    r->dev = sb.st_dev;
    r->ino = sb.st_ino;
    pthread_mutex_lock(&w->mu);
    if (!r->armed)
        r->rearms++;
    r->armed = 1;
    pthread_mutex_unlock(&w->mu);
    r->dirty = 1;
    r->last_event = 0; /* sync at once */
}

/* ---- events ----------------------------------------------------------------------------- */

static void mark_dirty(struct sync_watch *w, size_t ri, double now)
{
    struct root *r = &w->roots[ri];
    r->dirty = 1;
    r->last_event = now;
    pthread_mutex_lock(&w->mu);
    r->events++;
    pthread_mutex_unlock(&w->mu);
}

static void read_events(struct sync_watch *w)
{
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(w->ifd, buf, sizeof(buf));
        if (n <= 0)
            return;
        double now = ims_now();
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                for (size_t i = 0; i < w->n_roots; i++) {
                    if (!w->roots[i].armed)
                        continue;
                    mark_dirty(w, i, now);
                    pthread_mutex_lock(&w->mu);
                    w->roots[i].overflows++;
                    pthread_mutex_unlock(&w->mu);
                }
                continue;
            }
            struct wd_map *m = wd_find(w, ev->wd);
            if (!m)
                continue;
            size_t ri = m->root;
            struct root *r = &w->roots[ri];
            if (ev->mask & IN_IGNORED) {
                wd_forget(w, ev->wd);
                if (ev->wd == r->root_wd && r->armed)
                    disarm(w, ri, "is no longer watched");
                continue;
            }
            if (ev->wd == r->root_wd && (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF))) {
                disarm(w, ri, ev->mask & IN_MOVE_SELF ? "was moved" : "was deleted");
                continue;
            }
            mark_dirty(w, ri, now);
        }
    }
}

/* ---- the thread ------------------------------------------------------------------------- */

static void sync_root(struct sync_watch *w, size_t ri)
{
    struct root *r = &w->roots[ri];
    r->dirty = 0;
    w->adding_root = ri;
    struct sync_summary sum;
    struct ims_error err = {0};
    enum ims_status st =
        sync__folder(w->deps, w->io, r->path, &w->stop, on_dir, w, &sum, &err);
    if (st == IMS_ERR_BUSY) { /* another sync holds the catalogue: again in rearm_ms */
        ims_log(IMS_LOG_INFO, "watch: sync of %s put off: %s", r->path,
                ims_error_message(&err, st));
        r->dirty = 1;
        r->last_event = ims_now() + (double)(w->o.rearm_ms - w->o.debounce_ms) / 1000.0;
        pthread_mutex_lock(&w->mu);
        r->deferred++;
        pthread_mutex_unlock(&w->mu);
        return;
    }
    if (st != IMS_OK) {
        if (st != IMS_ERR_CANCELLED)
            ims_log(IMS_LOG_WARN, "watch: sync of %s: %s", r->path,
                    ims_error_message(&err, st));
        if (st == IMS_ERR_NOT_FOUND || st == IMS_ERR_INVALID)
            check_root(w, ri, ims_now()); /* gone meanwhile */
        return;
    }
    ims_log(IMS_LOG_INFO,
            "watch: synced %s: %lld added, %lld changed, %lld renamed, %lld removed, %lld "
            "unchanged, %lld failed",
            r->path, (long long)sum.added, (long long)sum.changed, (long long)sum.renamed,
            (long long)sum.removed, (long long)sum.unchanged, (long long)sum.failed);
    pthread_mutex_lock(&w->mu);
    r->syncs++;
    r->last_sync = (int64_t)time(NULL);
    r->last = sum;
    r->total.files = sum.files;
    r->total.added += sum.added;
    r->total.changed += sum.changed;
    r->total.renamed += sum.renamed;
    r->total.removed += sum.removed;
    r->total.unchanged += sum.unchanged;
    r->total.duplicates += sum.duplicates;
    r->total.failed += sum.failed;
    r->total.files_read += sum.files_read;
    r->total.bytes_read += sum.bytes_read;
    r->total.sniffed += sum.sniffed;
    r->total.elapsed_s += sum.elapsed_s;
    pthread_mutex_unlock(&w->mu);
}

static void *watch_main(void *arg)
{
    struct sync_watch *w = arg;
    double debounce = (double)w->o.debounce_ms / 1000.0;
    while (!atomic_load(&w->stop)) {
        double now = ims_now();
        for (size_t i = 0; i < w->n_roots && !atomic_load(&w->stop); i++) {
            struct root *r = &w->roots[i];
            if (now >= r->next_check)
                check_root(w, i, now);
            if (r->armed && r->dirty && now - r->last_event >= debounce) {
                sync_root(w, i);
                now = ims_now();
            }
        }
        /* sleep until the next due sync or check, or an event */
        double wake = now + (double)w->o.rearm_ms / 1000.0;
        for (size_t i = 0; i < w->n_roots; i++) {
            const struct root *r = &w->roots[i];
            if (r->next_check < wake)
                wake = r->next_check;
            if (r->armed && r->dirty && r->last_event + debounce < wake)
                wake = r->last_event + debounce;
        }
        int timeout = wake <= now ? 0 : (int)((wake - now) * 1000.0) + 1;
        struct pollfd pf[2] = {{w->ifd, POLLIN, 0}, {w->wake[0], POLLIN, 0}};
        int n = poll(pf, 2, timeout);
        if (n > 0 && (pf[0].revents & POLLIN))
            read_events(w);
    }
    return NULL;
}

enum ims_status sync_watch_start(const struct ingest_deps *deps,
                                 const struct ingest_options *io, const char *const *folders,
                                 size_t n, const struct sync_watch_options *o,
                                 struct sync_watch **out, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!deps || !deps->store || !deps->model || !out || (n && !folders), err,
                        IMS_ERR_INVALID, "watch: missing model, catalogue or folders");
    IMS_RETURN_ERROR_IF(n == 0 || n > SYNC_WATCH_MAX_ROOTS, err, IMS_ERR_INVALID,
                        "watch: 1 to %d folders", SYNC_WATCH_MAX_ROOTS);
    struct sync_watch *w = ims_calloc(1, sizeof(*w));
    if (!w)
        return ims_error_set(err, IMS_ERR_NOMEM, "watch: out of memory");
    w->deps = deps;
    w->io = io;
    if (o)
        w->o = *o;
    else
        sync_watch_options_default(&w->o);
    if (w->o.debounce_ms < 0 || w->o.rearm_ms < 10) {
        ims_free(w);
        return ims_error_set(err, IMS_ERR_INVALID, "watch: bad debounce or re-arm interval");
    }
    w->ifd = -1;
    w->wake[0] = w->wake[1] = -1;
    pthread_mutex_init(&w->mu, NULL);
    enum ims_status st = IMS_OK;
    for (size_t i = 0; i < n; i++) {
        char *p = realpath(folders[i], NULL);
        struct stat sb;
        if (!p || stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            st = ims_error_set(err, IMS_ERR_NOT_FOUND, "watch: %s is not a folder",
                               folders[i]);
            free(p);
            goto fail;
        }
        for (size_t j = 0; j < w->n_roots; j++)
            if (strcmp(w->roots[j].path, p) == 0) {
                st = ims_error_set(err, IMS_ERR_INVALID, "watch: %s given twice", p);
                free(p);
                goto fail;
            }
        struct root *r = &w->roots[w->n_roots++];
        r->path = p;
        r->root_wd = -1;
        r->dev = sb.st_dev;
        r->ino = sb.st_ino;
        r->armed = 1;
        r->dirty = 1; /* the initial sync */
        r->next_check = ims_now() + (double)w->o.rearm_ms / 1000.0;
    }
    w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->ifd < 0 || pipe2(w->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        st = ims_error_set(err, IMS_ERR_IO, "watch: inotify: %s", strerror(errno));
        goto fail;
    }
    if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
        st = ims_error_set(err, IMS_ERR_INTERNAL, "watch: cannot start the thread");
        goto fail;
    }
    w->started = 1;
    *out = w;
    return IMS_OK;
fail:
    sync_watch_stop(w);
    return st;
}

void sync_watch_stop(struct sync_watch *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, 1);
    if (w->wake[1] >= 0) {
        ssize_t r = write(w->wake[1], "x", 1);
        (void)r;
    }
    if (w->started)
        pthread_join(w->thread, NULL);
    if (w->ifd >= 0)
        close(w->ifd);
    for (int i = 0; i < 2; i++)
        if (w->wake[i] >= 0)
            close(w->wake[i]);
    for (size_t i = 0; i < w->n_roots; i++)
        free(w->roots[i].path);
    ims_free(w->wds);
    pthread_mutex_destroy(&w->mu);
    ims_free(w);
}

/* ---- status ------------------------------------------------------------------------------ */

size_t sync_watch_status(struct sync_watch *w, struct sync_watch_status *out, size_t cap)
{
    if (!w)
        return 0;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n_roots && i < cap; i++) {
        const struct root *r = &w->roots[i];
        struct sync_watch_status *s = &out[i];
        memset(s, 0, sizeof(*s));
        snprintf(s->folder, sizeof(s->folder), "%s", r->path);
        s->armed = r->armed;
        s->syncs = r->syncs;
        s->events = r->events;
        s->overflows = r->overflows;
        s->rearms = r->rearms;
        s->deferred = r->deferred;
        s->last_sync = r->last_sync;
        s->last = r->last;
        s->total = r->total;
    }
    size_t n = w->n_roots;
    pthread_mutex_unlock(&w->mu);
    return n;
}

struct text {
    char *buf;
    size_t cap, len;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = t->len < t->cap ? t->cap - t->len : 0;
    int n = vsnprintf(room ? t->buf + t->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->len += (size_t)n;
}

/* A label value: backslash, double quote and newline escaped. */
static void label(char *out, size_t cap, const char *s)
{
    size_t k = 0;
    for (; *s && k + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            out[k++] = '\\';
            out[k++] = *s;
        } else if (*s == '\n') {
            out[k++] = '\\';
            out[k++] = 'n';
        } else {
            out[k++] = *s;
        }
    }
    out[k] = '\0';
}

size_t sync_watch_metrics(struct sync_watch *w, char *buf, size_t cap)
{
    struct text t = {buf, cap, 0};
    if (buf && cap)
        buf[0] = '\0';
    if (!w)
        return 0;
    struct sync_watch_status *s = ims_calloc(SYNC_WATCH_MAX_ROOTS, sizeof(*s));
    if (!s)
        return 0;
    size_t n = sync_watch_status(w, s, SYNC_WATCH_MAX_ROOTS);
    put(&t, "# TYPE imgsearch_watch_folders gauge\nimgsearch_watch_folders %zu\n", n);
    static const char *const names[] = {"armed",  "syncs_total",     "events_total",
                                        "overflows_total", "rearms_total", "last_sync_seconds",
                                        "files", "changes_total", "deferred_total"};
    static const char *const types[] = {"gauge", "counter", "counter", "counter",
                                        "counter", "gauge",  "gauge",   "counter", "counter"};
    for (size_t k = 0; k < IMS_ARRAY_LEN(names); k++) {
        put(&t, "# TYPE imgsearch_watch_%s %s\n", names[k], types[k]);
        for (size_t i = 0; i < n; i++) {
            char f[8400];
            label(f, sizeof(f), s[i].folder);
            const struct sync_summary *x = &s[i].total;
            switch (k) {
            case 0: put(&t, "imgsearch_watch_armed{folder=\"%s\"} %d\n", f, s[i].armed); break;
            case 1: put(&t, "imgsearch_watch_syncs_total{folder=\"%s\"} %lld\n", f,
                        (long long)s[i].syncs); break;
            case 2: put(&t, "imgsearch_watch_events_total{folder=\"%s\"} %lld\n", f,
                        (long long)s[i].events); break;
            case 3: put(&t, "imgsearch_watch_overflows_total{folder=\"%s\"} %lld\n", f,
                        (long long)s[i].overflows); break;
            case 4: put(&t, "imgsearch_watch_rearms_total{folder=\"%s\"} %lld\n", f,
                        (long long)s[i].rearms); break;
            case 5: put(&t, "imgsearch_watch_last_sync_seconds{folder=\"%s\"} %lld\n", f,
                        (long long)s[i].last_sync); break;
            case 6: put(&t, "imgsearch_watch_files{folder=\"%s\"} %lld\n", f,
                        (long long)s[i].last.files); break;
            case 8: /* syncs put off while another sync held the catalogue */
                put(&t, "imgsearch_watch_deferred_total{folder=\"%s\"} %lld\n", f,
                    (long long)s[i].deferred); break;
            default: {
                const char *kinds[] = {"added", "changed", "renamed", "removed", "duplicate",
                                       "failed"};
                int64_t v[] = {x->added, x->changed, x->renamed, x->removed, x->duplicates,
                               x->failed};
                for (size_t j = 0; j < IMS_ARRAY_LEN(kinds); j++)
                    put(&t, "imgsearch_watch_changes_total{folder=\"%s\",kind=\"%s\"} %lld\n",
                        f, kinds[j], (long long)v[j]);
            }
            }
        }
    }
    ims_free(s);
    if (buf && cap && t.len >= cap)
        buf[cap - 1] = '\0';
    return t.len;
}
