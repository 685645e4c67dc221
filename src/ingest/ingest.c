/* SPDX-License-Identifier: MIT */
/*
 * ingest.c: the staged ingest pipeline (ingest_run).
 *
 * DESIGN
 * ------
 * Threads and the queues between them (all bounded: struct ims_queue):
 *
 *   source (caller's thread)  reads sources one by one (ingest_next_fn),
 *        |                    walks folders, reads local files, drives the
 *        |                    libcurl multi fetcher (many downloads in flight)
 *        v  decode_q (raw bytes)
 *   decoders (n_decode_threads) sniff + decode, SHA-256, CLIP preprocessing,
 *        |                    thumbnail
 *        v  encode_q (pixels)
 *   encoder (1 thread)        gathers up to batch_size images and runs the
 *        |                    vision transformer once per batch (the model's
 *        |                    own threads do the maths: one place for
 *        |                    parallelism, see clip.h)
 *        v  write_q (embeddings)
 *   writer (1 thread)         one catalogue transaction per gathered group
 *                             (store_insert_many), then deps->after_commit
 *                             (the caller's index shows the rows), then the
 *                             reports and the hooks' `finished` (the service
 *                             records its job items there)
 *
 * Failed items (bad URL, HTTP 404, corrupt JPEG, ...) carry their reason
 * down the same queues so that every report happens on the writer thread in
 * one place; no failure stops the job. A failure of the catalogue itself
 * (disk full, I/O) is fatal: the source stops, what is in flight is failed
 * with that reason, and ingest_run returns the error.
 *
 * Back-pressure: a full queue blocks its producer; the fetcher holds at most
 * max_in_flight + max_queued transfers. So memory is bounded by the queue
 * capacities times the largest item (an image's bytes are freed as soon as it
 * is decoded), whatever the number of sources: a million-URL job streams.
 *
 * Ordering and durability: an item counts as added only after its
 * transaction committed (store.h: durable on return) and after_commit made
 * it searchable here. If the process dies in between, the rows are in the
 * catalogue and the index catches up from the change feed (it is derived).
 *
 * Sources come from a struct ingest__source: ingest_run's list, or the
 * service's claimed job items, each with a tag (the item id) that comes
 * back in its report. Every source read yields exactly one report, so every
 * claimed item is finished.
 *
 * Shutdown order: source done -> close decode_q -> join decoders -> close
 * encode_q -> join encoder -> close write_q -> join writer. Cancellation
 * (the `cancel` flag) only stops reading new sources; everything already
 * read flows through and is committed.
 */
#include "imgsearch/ingest.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ingest_int.h"

#define QUEUE_RAW 16
#define QUEUE_DECODED 64
#define QUEUE_ENCODED 128
#define WALK_MAX_DEPTH 64
#define LOCAL_FILE_MAX_BYTES ((size_t)256 << 20)

void ingest_options_default(struct ingest_options *o)
{
    memset(o, 0, sizeof(*o));
    fetch_options_default(&o->fetch);
    image_limits_default(&o->limits);
    o->batch_size = 16;
    o->thumb_side = 256;
    o->thumb_quality = 80;
    o->lease_ms = 30000;
    o->claim_batch = 16;
    o->poll_ms = 500;
    o->max_attempts = 5;
}

/* ---- service counters (struct ingest_hooks, ingest_int.h) -------------------- */

static void hooks_encoded(struct ingest_hooks *h, int n_images, double seconds)
{
    atomic_fetch_add(&h->images_encoded, n_images);
    atomic_fetch_add(&h->encode_ns, (long long)(seconds * 1e9));
}

void ingest__hooks_catalogue(struct ingest_hooks *h, double t0)
{
    if (h)
        atomic_fetch_add(&h->catalogue_ns, (long long)((ims_now() - t0) * 1e9));
}

static void hooks_item(struct ingest_hooks *h, enum ingest_outcome outcome)
{
    switch (outcome) {
    case INGEST_ADDED:
    case INGEST_COMPLETED: atomic_fetch_add(&h->items_added, 1); break;
    case INGEST_DUPLICATE: atomic_fetch_add(&h->items_duplicate, 1); break;
    case INGEST_FAILED: atomic_fetch_add(&h->items_failed, 1); break;
    }
}

/* ---- items ------------------------------------------------------------------ */

struct pipeline;

struct item {
    struct pipeline *p; /* set for URLs: the fetch callback needs it */
    char *source;
    int64_t tag;        /* the source's tag (job item id), 0 if none */
    /* raw */
    char *body;
    size_t body_len;
    /* failure or preset outcome (duplicates found before fetching) */
    int failed;
    enum ims_status status; /* why it failed: carried to the report and job */
    char *error;
    int preset; /* 1: outcome/id below are final, nothing to store */
    enum ingest_outcome outcome;
    int64_t id;
    /* decoded */
    uint8_t sha256[32];
    const char *format; /* static string */
    int width, height;
    int64_t bytes;
    float *pixels;      /* (3, S, S) */
    uint8_t *thumb;
    size_t thumb_len;
    float *embedding;   /* (D) */
    char *metadata;     /* JSON of the EXIF details, or NULL */
};

static void item_free(struct item *it)
{
    if (!it)
        return;
    ims_free(it->source);
    ims_free(it->body);
    ims_free(it->error);
    ims_free(it->pixels);
    ims_free(it->thumb);
    ims_free(it->embedding);
    ims_free(it->metadata);
    ims_free(it);
}

static struct item *item_new(const char *source, int64_t tag)
{
    struct item *it = ims_calloc(1, sizeof(*it));
    if (!it)
        return NULL;
    it->tag = tag;
    it->source = ims_strdup(source);
    if (!it->source) {
        ims_free(it);
        return NULL;
    }
    return it;
}

/* Marks an item failed with its status (the machine-readable reason that
 * reaches the API: never guessed from the words) and a message. */
static void item_fail(struct item *it, enum ims_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void item_fail(struct item *it, enum ims_status st, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ims_free(it->error);
    it->error = ims_strdup(msg);
    it->failed = 1;
    it->status = st != IMS_OK ? st : IMS_ERR_INTERNAL;
    ims_free(it->body);
    it->body = NULL;
    ims_free(it->pixels);
    it->pixels = NULL;
}

/* ---- the pipeline ------------------------------------------------------------ */

struct pipeline {
    const struct ingest_deps *deps;
    const struct ingest_options *o;
    const atomic_int *cancel;
    int64_t cur_tag;             /* the source being read (source thread only) */
    int image_size, dim;
    struct ims_queue *decode_q, *encode_q, *write_q;
    atomic_int fatal;            /* set by the writer on a catalogue failure */
    pthread_mutex_t mu;          /* guards fatal_err, progress */
    struct ims_error fatal_err;
    enum ims_status fatal_st;
    struct ingest_progress progress;
    atomic_llong total;          /* sources seen */
    double t0;
    struct ingest_hooks *hooks;  /* service counters, may be NULL */
};

static int pipeline_stopping(struct pipeline *p)
{
    return atomic_load(&p->fatal) || (p->cancel && atomic_load(p->cancel));
}

/* Hands an item to a queue; if the queue was closed (cannot happen while the
 * stage upstream is alive) the item is dropped rather than leaked. */
static void push(struct ims_queue *q, struct item *it)
{
    if (ims_queue_push(q, it) != IMS_OK)
        item_free(it);
}

static void progress_update(struct pipeline *p, const struct ingest_item_report *r);

/* No memory for an item: its report is made here, on the source thread,
 * without one, so that every source read still gets exactly one report
 * (a claimed job item is then finished, not renewed for ever). */
static void report_lost(struct pipeline *p, const char *source)
{
    struct ingest_item_report r = {source, p->cur_tag, INGEST_FAILED, 0, IMS_ERR_NOMEM,
                                   "out of memory"};
    ims_log(IMS_LOG_ERROR, "%s: out of memory", source);
    atomic_fetch_add(&p->total, 1);
    progress_update(p, &r);
    if (p->hooks && p->hooks->finished)
        p->hooks->finished(p->hooks->ctx, &r, NULL, 1);
}

/* A failure found before decoding goes straight to the writer. */
static void report_failure(struct pipeline *p, const char *source, enum ims_status st,
                           const char *reason)
{
    struct item *it = item_new(source, p->cur_tag);
    if (!it) {
        ims_log(IMS_LOG_ERROR, "%s: %s", source, reason);
        report_lost(p, source);
        return;
    }
    item_fail(it, st, "%s", reason);
    atomic_fetch_add(&p->total, 1);
    push(p->write_q, it);
}

/* ---- source stage ------------------------------------------------------------- */

static int is_url(const char *s)
{
    return strncasecmp(s, "http://", 7) == 0 || strncasecmp(s, "https://", 8) == 0;
}

static int has_scheme(const char *s)
{
    const char *c = strstr(s, "://");
    if (!c || c == s)
        return 0;
    for (const char *q = s; q < c; q++)
        if (!isalnum((unsigned char)*q) && *q != '+' && *q != '-' && *q != '.')
            return 0;
    return 1;
}

static void on_fetched(void *user, struct fetch_result *r)
{
    struct item *it = user;
    struct pipeline *p = it->p;
    if (r->status != IMS_OK) {
        item_fail(it, r->status, "%s",
                  r->reason && *r->reason ? r->reason : ims_strerror(r->status));
    } else {
        it->body = r->body;
        it->body_len = r->body_len;
        r->body = NULL;
    }
    push(it->failed ? p->write_q : p->decode_q, it);
}

/* Returns 1 if `source` is already complete in the catalogue (then reported
 * as a duplicate), 0 if it must be processed. */
static int already_stored(struct pipeline *p, const char *source)
{
    int64_t id;
    struct ims_error err = {0};
    enum ims_status st = store_find_by_source(p->deps->store, source, &id, &err);
    if (st != IMS_OK) {
        /* not there (the usual case); a catalogue failure is logged and the
         * item goes on: its insert meets the same failure and reports it */
        if (st != IMS_ERR_NOT_FOUND)
            ims_log(IMS_LOG_WARN, "%s: duplicate check: %s", source, ims_error_message(&err, st));
        return 0;
    }
    struct store_image_row row;
    store_row_init(&row);
    int complete = 0;
    st = store_get(p->deps->store, id, 0, &row, &err);
    if (st == IMS_OK)
        complete = row.has_sha256;
    else if (st != IMS_ERR_NOT_FOUND) /* deleted meanwhile is fine: fetched again */
        ims_log(IMS_LOG_WARN, "%s: duplicate check: %s", source, ims_error_message(&err, st));
    store_row_fini(&row);
    if (!complete)
        return 0; /* an imported row: fetch the image to complete it */
    struct item *it = item_new(source, p->cur_tag);
    if (!it)
        return 0; /* processed as new: its own path reports the lack of memory */
    it->preset = 1;
    it->outcome = INGEST_DUPLICATE;
    it->id = id;
    atomic_fetch_add(&p->total, 1);
    push(p->write_q, it);
    return 1;
}

struct source_stage {
    struct pipeline *p;
    struct fetcher *fetcher;
};

static void pump_fetcher(struct source_stage *s, int timeout_ms)
{
    if (s->fetcher && fetcher_pending(s->fetcher) > 0) {
        struct ims_error err = {0};
        enum ims_status st = fetcher_poll(s->fetcher, timeout_ms, on_fetched, NULL, &err);
        if (st != IMS_OK) /* transfers still end through on_fetched */
            ims_log(IMS_LOG_ERROR, "downloads: %s", ims_error_message(&err, st));
    }
}

static void add_url(struct source_stage *s, const char *url)
{
    struct pipeline *p = s->p;
    struct ims_error err = {0};
    if (already_stored(p, url))
        return;
    struct item *it = item_new(url, p->cur_tag);
    if (!it) {
        report_lost(p, url);
        return;
    }
    it->p = p;
    atomic_fetch_add(&p->total, 1);
    for (;;) {
        enum ims_status st = fetcher_add(s->fetcher, url, it, &err);
        if (st == IMS_OK)
            return;
        if (st != IMS_ERR_BUSY) {
            item_fail(it, st, "%s", ims_error_message(&err, st));
            push(p->write_q, it);
            return;
        }
        pump_fetcher(s, 100); /* back-pressure: let transfers finish first */
    }
}

static void add_file(struct source_stage *s, const char *path)
{
    struct pipeline *p = s->p;
    char *abs = realpath(path, NULL);
    const char *source = abs ? abs : path;
    if (already_stored(p, source)) {
        free(abs);
        return;
    }
    struct item *it = item_new(source, p->cur_tag);
    free(abs);
    if (!it) {
        report_lost(p, path);
        return;
    }
    atomic_fetch_add(&p->total, 1);
    struct ims_error err = {0};
    size_t max = p->o->limits.max_bytes ? p->o->limits.max_bytes : LOCAL_FILE_MAX_BYTES;
    enum ims_status st = ims_file_read(path, max, &it->body, &it->body_len, &err);
    if (st != IMS_OK) {
        item_fail(it, st, "%s", ims_error_message(&err, st));
        push(p->write_q, it);
        return;
    }
    push(p->decode_q, it);
    pump_fetcher(s, 0);
}

static enum ims_status errno_status(int e)
{
    return e == ENOENT || e == ENOTDIR ? IMS_ERR_NOT_FOUND : IMS_ERR_IO;
}

int ingest_name_is_image(const char *name)
{
    static const char *const exts[] = {".jpg", ".jpeg", ".jpe",  ".png",  ".webp", ".gif",
                                       ".bmp", ".heic", ".heif", ".avif", ".tif",  ".tiff"};
    size_t n = strlen(name);
    for (size_t i = 0; i < IMS_ARRAY_LEN(exts); i++) {
        size_t e = strlen(exts[i]);
        if (n > e && strcasecmp(name + n - e, exts[i]) == 0)
            return 1;
    }
    return 0;
}

int ingest_file_sniffs_as_image(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    unsigned char head[32];
    size_t n = fread(head, 1, sizeof(head), f);
    fclose(f);
    enum image_format fmt;
    return image_sniff(head, n, &fmt, NULL) == IMS_OK;
}

/* Walks a folder depth-first, in name order (stable across runs), taking
 * files by extension or magic bytes. Symbolic links to folders are not
 * followed (no cycles). */
static void walk_folder(struct source_stage *s, const char *dir, int depth)
{
    if (depth > WALK_MAX_DEPTH) {
        report_failure(s->p, dir, IMS_ERR_TOO_LARGE,
                       "folder nesting deeper than 64 levels: not walked");
        return;
    }
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0) {
        char msg[512];
        int e = errno;
        snprintf(msg, sizeof(msg), "cannot read folder: %s", strerror(e));
        report_failure(s->p, dir, errno_status(e), msg);
        return;
    }
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (!pipeline_stopping(s->p) && name[0] != '.') {
            size_t len = strlen(dir) + strlen(name) + 2;
            char *path = ims_malloc(len);
            if (path) {
                snprintf(path, len, "%s/%s", dir, name);
                struct stat sb;
                if (lstat(path, &sb) == 0) {
                    if (S_ISDIR(sb.st_mode))
                        walk_folder(s, path, depth + 1);
                    else if ((S_ISREG(sb.st_mode) || S_ISLNK(sb.st_mode)) &&
                             (ingest_name_is_image(name) || ingest_file_sniffs_as_image(path)))
                        add_file(s, path);
                }
                ims_free(path);
            }
        }
        free(names[i]);
    }
    free(names);
}

static void add_source(struct source_stage *s, const char *source)
{
    struct pipeline *p = s->p;
    while (*source == ' ' || *source == '\t')
        source++;
    if (!*source) { /* reported: a job item must always be finished */
        report_failure(p, "(empty)", IMS_ERR_INVALID, "empty source");
        return;
    }
    if (is_url(source)) {
        add_url(s, source);
        return;
    }
    if (has_scheme(source)) {
        report_failure(p, source, IMS_ERR_UNSUPPORTED,
                       "unsupported URL scheme: only http and https are fetched");
        return;
    }
    if (!p->o->allow_local_files) {
        report_failure(p, source, IMS_ERR_REFUSED,
                       "not an http(s) URL (local paths are not accepted here)");
        return;
    }
    struct stat sb;
    if (stat(source, &sb) != 0) {
        char msg[512];
        int e = errno;
        snprintf(msg, sizeof(msg), "cannot open: %s", strerror(e));
        report_failure(p, source, errno_status(e), msg);
        return;
    }
    if (S_ISDIR(sb.st_mode))
        walk_folder(s, source, 0);
    else
        add_file(s, source);
}

/* ---- decode stage ------------------------------------------------------------- */

static const char *format_word(enum image_format f)
{
    return image_format_word(f);
}

/* JSON string body of printable ASCII (image_exif's texts) */
static size_t json_text(char *d, size_t cap, const char *s)
{
    size_t k = 0;
    for (; *s && k + 3 < cap; s++) {
        if (*s == '"' || *s == '\\')
            d[k++] = '\\';
        d[k++] = *s;
    }
    d[k] = 0;
    return k;
}

/* The row's metadata: {"taken": T, "exif": {"make", "model", "orientation",
 * "gps": [lat, lon] only with keep_gps}}; NULL when there is nothing. */
static char *exif_metadata(const struct image_exif *x, int keep_gps)
{
    if (!x->found)
        return NULL;
    char make[2 * sizeof(x->make)], model[2 * sizeof(x->model)], taken[32] = "", gps[80] = "";
    json_text(make, sizeof(make), x->make);
    json_text(model, sizeof(model), x->model);
    if (x->has_taken)
        snprintf(taken, sizeof(taken), "\"taken\":%lld,", (long long)x->taken);
    if (keep_gps && x->has_gps)
        snprintf(gps, sizeof(gps), ",\"gps\":[%.7f,%.7f]", x->lat, x->lon);
    size_t cap = strlen(make) + strlen(model) + strlen(taken) + strlen(gps) + 96;
    char *j = ims_malloc(cap);
    if (j)
        snprintf(j, cap, "{%s\"exif\":{\"make\":\"%s\",\"model\":\"%s\",\"orientation\":%d%s}}",
                 taken, make, model, x->orientation, gps);
    return j;
}

/* One decode feeds the CLIP input and the thumbnail (image_prepare_for_
 * ingest: large JPEGs at a DCT scale within the PSNR bound, unless
 * --decode exact); photos that EXIF says are rotated are turned upright
 * after that decode (the reduced image when it was scaled). */
static void decode_item(struct pipeline *p, struct item *it, uint8_t *rgb)
{
    struct ims_error err = {0};
    struct image_exif exif;
    if (image_exif_read(it->body, it->body_len, &exif, NULL) != IMS_OK)
        exif.found = 0, exif.orientation = 1;
    it->metadata = exif_metadata(&exif, p->o->keep_gps);
    size_t s = (size_t)p->image_size;
    it->pixels = ims_malloc(3 * s * s * sizeof(float));
    if (!it->pixels) {
        item_fail(it, IMS_ERR_NOMEM, "out of memory");
        return;
    }
    struct image_prepared prep;
    const struct image_prepare_options po = {&p->o->limits,         p->image_size,
                                             p->o->thumb_side,      p->o->thumb_quality,
                                             p->o->decode,          exif.orientation,
                                             p->o->exif_orientation_ignore};
    enum ims_status st = image_prepare_for_ingest(it->body, it->body_len, &po, rgb, &prep, &err);
    if (st == IMS_OK) {
        it->format = format_word(prep.format);
        it->width = prep.width;
        it->height = prep.height;
        it->thumb = prep.thumb;
        it->thumb_len = prep.thumb_len;
        if (!prep.thumb && p->o->thumb_side > 0) /* still searchable without one */
            ims_log(IMS_LOG_WARN, "%s: no thumbnail: %s", it->source, prep.thumb_error);
    }
    if (st != IMS_OK) {
        item_fail(it, st, "%s", ims_error_message(&err, st));
        return;
    }
    ims_sha256(it->body, it->body_len, it->sha256);
    it->bytes = (int64_t)it->body_len;
    ims_free(it->body);
    it->body = NULL;
    image_clip_normalize(rgb, p->image_size, it->pixels);
}

/* Decoders yield the CPU to queries (issue 11 item 4): in a server
 * (ingest_new sets decode_nice) a decoder thread runs at that nice value
 * (Linux sets nice per thread), so the clip worker (text queries, and the
 * image batches it interleaves them with) and the HTTP threads are
 * scheduled first and the decoders take what they leave; with nothing else
 * to run they still get whole cores. `add` leaves it at 0: there, on a
 * machine shared with other jobs, niced decoders lost to those. */
static void decoder_lower_priority(int nice_v)
{
#ifdef SYS_gettid
    if (nice_v > 0)
        (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), IMS_MIN(nice_v, 19));
#else
    (void)nice_v;
#endif
}

static void *decoder_main(void *arg)
{
    struct pipeline *p = arg;
    decoder_lower_priority(p->o->decode_nice);
    size_t s = (size_t)p->image_size;
    uint8_t *rgb = ims_malloc(s * s * 3);
    void *v;
    while (ims_queue_pop(p->decode_q, &v) == IMS_OK) {
        struct item *it = v;
        if (!rgb)
            item_fail(it, IMS_ERR_NOMEM, "out of memory");
        else if (!it->failed)
            decode_item(p, it, rgb);
        push(p->encode_q, it);
    }
    ims_free(rgb);
    return NULL;
}

/* ---- encode stage -------------------------------------------------------------- */

struct encoder {
    struct pipeline *p;
    struct clip_ctx *ctx;
    float *pixels;     /* (batch_size, 3, S, S) */
    float *embeddings; /* (batch_size, D) */
    struct item **batch;
    int n;
};

static void encode_batch(struct encoder *e)
{
    struct pipeline *p = e->p;
    if (e->n == 0)
        return;
    size_t per = 3 * (size_t)p->image_size * (size_t)p->image_size;
    for (int i = 0; i < e->n; i++)
        memcpy(e->pixels + (size_t)i * per, e->batch[i]->pixels, per * sizeof(float));
    struct ims_error err = {0};
    double t = ims_now();
    enum ims_status st = clip_ctx_encode_images(e->ctx, e->pixels, e->n, e->embeddings, 1, &err);
    if (p->hooks)
        hooks_encoded(p->hooks, e->n, ims_now() - t);
    for (int i = 0; i < e->n; i++) {
        struct item *it = e->batch[i];
        ims_free(it->pixels);
        it->pixels = NULL;
        if (st != IMS_OK) {
            item_fail(it, st, "encoder: %s", ims_error_message(&err, st));
        } else {
            it->embedding = ims_malloc((size_t)p->dim * sizeof(float));
            if (!it->embedding)
                item_fail(it, IMS_ERR_NOMEM, "out of memory");
            else
                memcpy(it->embedding, e->embeddings + (size_t)i * (size_t)p->dim,
                       (size_t)p->dim * sizeof(float));
        }
        push(p->write_q, it);
    }
    e->n = 0;
}

static void *encoder_main(void *arg)
{
    struct encoder *e = arg;
    struct pipeline *p = e->p;
    for (;;) {
        void *v;
        /* block for the first image of a batch; then gather briefly so that
         * a slow trickle still gets encoded promptly */
        enum ims_status st = e->n == 0 ? ims_queue_pop(p->encode_q, &v)
                                       : ims_queue_pop_timed(p->encode_q, &v, 20);
        if (st == IMS_ERR_TIMEOUT) {
            encode_batch(e);
            continue;
        }
        if (st != IMS_OK)
            break;
        struct item *it = v;
        if (it->failed || it->preset) {
            push(p->write_q, it);
            continue;
        }
        e->batch[e->n++] = it;
        if (e->n == p->o->batch_size)
            encode_batch(e);
    }
    encode_batch(e);
    return NULL;
}

/* ---- write stage ---------------------------------------------------------------- */

static void progress_update(struct pipeline *p, const struct ingest_item_report *r)
{
    pthread_mutex_lock(&p->mu);
    switch (r->outcome) {
    case INGEST_ADDED:
    case INGEST_COMPLETED: p->progress.added++; break;
    case INGEST_DUPLICATE: p->progress.duplicates++; break;
    case INGEST_FAILED: p->progress.failed++; break;
    }
    p->progress.done = p->progress.added + p->progress.duplicates;
    pthread_mutex_unlock(&p->mu);
    if (p->hooks)
        hooks_item(p->hooks, r->outcome);
    if (p->o->on_item)
        p->o->on_item(p->o->cb_ctx, r);
}

/* After a commit that added rows: the caller's index shows them before any
 * report says "added". A failure is logged; the rows are stored and the
 * index catches up from the change feed later. */
static void show_committed(struct pipeline *p)
{
    if (!p->deps->after_commit)
        return;
    struct ims_error err = {0};
    int64_t seq = 0;
    enum ims_status st = store_change_seq(p->deps->store, &seq, &err);
    if (st == IMS_OK)
        st = p->deps->after_commit(p->deps->after_commit_user, seq, &err);
    if (st != IMS_OK)
        ims_log(IMS_LOG_ERROR, "index: %s (the rows are stored; the index catches up later)",
                ims_error_message(&err, st));
}

static void write_group(struct pipeline *p, struct item **items, int n,
                        struct store_new_image *rows, struct store_insert_result *res,
                        struct ingest_item_report *reports)
{
    int n_rows = 0, n_items = 0;
    int row_of[n > 0 ? n : 1];
    int64_t item_of[n > 0 ? n : 1]; /* per row: its job item (0: none) */
    uint8_t recorded[n > 0 ? n : 1];
    const char *finish_node = p->hooks ? p->hooks->finish_node : NULL;
    for (int i = 0; i < n; i++) {
        struct item *it = items[i];
        row_of[i] = -1;
        recorded[i] = 0;
        if (it->failed || it->preset)
            continue;
        if (atomic_load(&p->fatal)) {
            item_fail(it, p->fatal_st, "not stored: %s", p->fatal_err.message);
            continue;
        }
        struct store_new_image *r = &rows[n_rows];
        memset(r, 0, sizeof(*r));
        r->source = it->source;
        r->sha256 = it->sha256;
        r->format = it->format;
        r->width = (uint32_t)it->width;
        r->height = (uint32_t)it->height;
        r->bytes = it->bytes;
        r->embedding = it->embedding;
        r->dim = (uint32_t)p->dim;
        r->thumbnail = it->thumb;
        r->thumbnail_bytes = it->thumb_len;
        r->metadata = it->metadata;
        item_of[n_rows] = it->tag > 0 ? it->tag : 0;
        n_items += it->tag > 0;
        row_of[i] = n_rows++;
    }
    if (n_rows > 0) {
        struct ims_error err = {0};
        double t0 = ims_now();
        enum ims_status st =
            finish_node && n_items > 0
                ? store_insert_finish(p->deps->store, rows, (size_t)n_rows, res, finish_node,
                                      item_of, &err)
                : store_insert_many(p->deps->store, rows, (size_t)n_rows, res, &err);
        ingest__hooks_catalogue(p->hooks, t0);
        if (st != IMS_OK) {
            /* the transaction did not happen: nothing of this group is stored */
            if (st != IMS_ERR_INVALID) {
                pthread_mutex_lock(&p->mu);
                p->fatal_st = st;
                snprintf(p->fatal_err.message, sizeof(p->fatal_err.message), "catalogue: %s",
                         ims_error_message(&err, st));
                pthread_mutex_unlock(&p->mu);
                atomic_store(&p->fatal, 1);
            }
            for (int i = 0; i < n; i++)
                if (row_of[i] >= 0) {
                    item_fail(items[i], st, "not stored: %s", ims_error_message(&err, st));
                    row_of[i] = -1;
                }
        } else {
            int n_new = 0;
            for (int i = 0; i < n; i++) {
                if (row_of[i] < 0)
                    continue;
                struct store_insert_result *r = &res[row_of[i]];
                items[i]->id = r->id;
                recorded[i] = finish_node && n_items > 0 && item_of[row_of[i]] > 0;
                if (r->outcome == STORE_INSERTED) {
                    items[i]->outcome = INGEST_ADDED;
                    n_new++;
                } else if (r->outcome == STORE_COMPLETED) {
                    items[i]->outcome = INGEST_COMPLETED; /* its embedding was kept */
                } else {
                    items[i]->outcome = INGEST_DUPLICATE;
                }
            }
            if (n_new > 0)
                show_committed(p);
        }
    }
    /* report */
    for (int i = 0; i < n; i++) {
        struct item *it = items[i];
        struct ingest_item_report *r = &reports[i];
        *r = (struct ingest_item_report){it->source, it->tag, it->outcome, it->id, IMS_OK, NULL};
        if (it->failed) {
            r->outcome = INGEST_FAILED;
            r->status = it->status;
            r->error = it->error ? it->error : "failed";
        }
        progress_update(p, r);
    }
    if (p->o->on_progress) {
        struct ingest_progress pr;
        pthread_mutex_lock(&p->mu);
        pr = p->progress;
        pthread_mutex_unlock(&p->mu);
        pr.total = atomic_load(&p->total);
        pr.elapsed_s = ims_now() - p->t0;
        p->o->on_progress(p->o->cb_ctx, &pr);
    }
    if (p->hooks && p->hooks->finished)
        p->hooks->finished(p->hooks->ctx, reports, recorded, (size_t)n);
}

static void *writer_main(void *arg)
{
    struct pipeline *p = arg;
    int cap = IMS_MAX(p->o->batch_size * 2, 32);
    struct item **items = ims_calloc((size_t)cap, sizeof(*items));
    struct store_new_image *rows = ims_calloc((size_t)cap, sizeof(*rows));
    struct store_insert_result *res = ims_calloc((size_t)cap, sizeof(*res));
    struct ingest_item_report *reports = ims_calloc((size_t)cap, sizeof(*reports));
    int ok = items && rows && res && reports;
    struct item *spare[1];
    struct store_new_image spare_row[1];
    struct store_insert_result spare_res[1];
    struct ingest_item_report spare_rep[1];
    for (;;) {
        void *v;
        if (ims_queue_pop(p->write_q, &v) != IMS_OK)
            break;
        if (!ok) {
            /* out of memory for the group arrays: one item at a time, failed,
             * so that every source still gets its report */
            spare[0] = v;
            item_fail(spare[0], IMS_ERR_NOMEM, "out of memory");
            write_group(p, spare, 1, spare_row, spare_res, spare_rep);
            item_free(spare[0]);
            continue;
        }
        int n = 0;
        items[n++] = v;
        /* gather what is already there, then commit: one transaction per
         * encoder batch or so, never waiting long for stragglers */
        while (n < cap && ims_queue_pop_timed(p->write_q, &v, 5) == IMS_OK)
            items[n++] = v;
        write_group(p, items, n, rows, res, reports);
        for (int i = 0; i < n; i++)
            item_free(items[i]);
    }
    ims_free(items);
    ims_free(rows);
    ims_free(res);
    ims_free(reports);
    return NULL;
}

/* ---- the pipeline over a source ----------------------------------------------------- */

enum ims_status ingest__run_source(const struct ingest_deps *deps,
                                   const struct ingest_options *opts,
                                   const struct ingest__source *source, const atomic_int *cancel,
                                   struct ingest_hooks *hooks, struct ingest_summary *summary,
                                   struct ims_error *err)
{
    struct ingest_options defaults;
    if (!opts) {
        ingest_options_default(&defaults);
        opts = &defaults;
    }
    if (!deps || !deps->model || !deps->store || !source || !source->next)
        return ims_error_set(err, IMS_ERR_INVALID, "ingest: missing model, store or sources");
    if (opts->batch_size < 1 || opts->batch_size > 256)
        return ims_error_set(err, IMS_ERR_INVALID, "ingest: batch size must be 1..256");

    enum ims_status st = IMS_OK;
    struct pipeline p;
    memset(&p, 0, sizeof(p));
    p.deps = deps;
    p.o = opts;
    p.cancel = cancel;
    p.hooks = hooks;
    p.image_size = clip_model_image_size(deps->model);
    p.dim = clip_model_embed_dim(deps->model);
    p.t0 = ims_now();
    pthread_mutex_init(&p.mu, NULL);

    int n_dec = opts->n_decode_threads > 0 ? opts->n_decode_threads
                                           : (int)sysconf(_SC_NPROCESSORS_ONLN);
    n_dec = IMS_MAX(1, IMS_MIN(n_dec, 64));
    pthread_t decoders[64], encoder_t, writer_t;
    int n_started = 0, encoder_started = 0, writer_started = 0;
    struct encoder enc = {&p, NULL, NULL, NULL, NULL, 0};
    struct source_stage src = {&p, NULL};
    size_t per_image = 3 * (size_t)p.image_size * (size_t)p.image_size;

    if (ims_queue_new(QUEUE_RAW, &p.decode_q) != IMS_OK ||
        ims_queue_new(QUEUE_DECODED, &p.encode_q) != IMS_OK ||
        ims_queue_new(QUEUE_ENCODED, &p.write_q) != IMS_OK) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "ingest: out of memory");
        goto out;
    }
    enc.pixels = ims_malloc((size_t)opts->batch_size * per_image * sizeof(float));
    enc.embeddings = ims_malloc((size_t)opts->batch_size * (size_t)p.dim * sizeof(float));
    enc.batch = ims_calloc((size_t)opts->batch_size, sizeof(*enc.batch));
    if (!enc.pixels || !enc.embeddings || !enc.batch) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "ingest: out of memory");
        goto out;
    }
    st = clip_ctx_new(deps->model, opts->batch_size, &enc.ctx, err);
    if (st != IMS_OK)
        goto out;
    st = fetcher_new(&opts->fetch, &src.fetcher, err);
    if (st != IMS_OK)
        goto out;

    for (; n_started < n_dec; n_started++)
        if (pthread_create(&decoders[n_started], NULL, decoder_main, &p) != 0)
            break;
    encoder_started = pthread_create(&encoder_t, NULL, encoder_main, &enc) == 0;
    writer_started = pthread_create(&writer_t, NULL, writer_main, &p) == 0;
    if (n_started == 0 || !encoder_started || !writer_started) {
        st = ims_error_set(err, IMS_ERR_INTERNAL, "ingest: cannot start pipeline threads");
        ims_queue_close(p.decode_q);
        ims_queue_close(p.encode_q);
        ims_queue_close(p.write_q);
        goto join;
    }

    /* the source stage runs here */
    while (!pipeline_stopping(&p)) {
        const char *s = NULL;
        int64_t tag = 0;
        int busy = src.fetcher && fetcher_pending(src.fetcher) > 0;
        int r = source->next(source->ctx, busy ? 0 : 200, &s, &tag);
        if (r == 0)
            break;
        if (r < 0) { /* nothing yet: serve the downloads in flight meanwhile */
            pump_fetcher(&src, 50);
            continue;
        }
        p.cur_tag = tag;
        add_source(&src, s);
        p.cur_tag = 0;
        pump_fetcher(&src, 0);
    }
    while (src.fetcher && fetcher_pending(src.fetcher) > 0)
        pump_fetcher(&src, 200);
    pthread_mutex_lock(&p.mu);
    p.progress.sources_finished = 1;
    pthread_mutex_unlock(&p.mu);

join:
    ims_queue_close(p.decode_q);
    for (int i = 0; i < n_started; i++)
        pthread_join(decoders[i], NULL);
    ims_queue_close(p.encode_q);
    if (encoder_started)
        pthread_join(encoder_t, NULL);
    ims_queue_close(p.write_q);
    if (writer_started)
        pthread_join(writer_t, NULL);

    if (st == IMS_OK && atomic_load(&p.fatal))
        st = ims_error_set(err, p.fatal_st, "%s", p.fatal_err.message);
    if (summary) {
        summary->total = atomic_load(&p.total);
        summary->added = p.progress.added;
        summary->duplicates = p.progress.duplicates;
        summary->failed = p.progress.failed;
        summary->elapsed_s = ims_now() - p.t0;
    }
out:
    fetcher_free(src.fetcher);
    clip_ctx_free(enc.ctx);
    ims_free(enc.pixels);
    ims_free(enc.embeddings);
    ims_free(enc.batch);
    ims_queue_free(p.decode_q);
    ims_queue_free(p.encode_q);
    ims_queue_free(p.write_q);
    pthread_mutex_destroy(&p.mu);
    return st;
}

/* ---- ingest_run: a caller's list of sources --------------------------------------------- */

struct list_source {
    ingest_next_fn *next;
    void *ctx;
};

static int list_source_next(void *ctx, int wait_ms, const char **source, int64_t *tag)
{
    (void)wait_ms;
    struct list_source *l = ctx;
    *tag = 0;
    return l->next(l->ctx, source) ? 1 : 0;
}

enum ims_status ingest_run(const struct ingest_deps *deps, const struct ingest_options *opts,
                           ingest_next_fn *next, void *next_ctx, const atomic_int *cancel,
                           struct ingest_summary *summary, struct ims_error *err)
{
    if (!next)
        return ims_error_set(err, IMS_ERR_INVALID, "ingest: no sources");
    struct list_source l = {next, next_ctx};
    struct ingest__source src = {list_source_next, &l};
    return ingest__run_source(deps, opts, &src, cancel, NULL, summary, err);
}

/* ---- one image from bytes (uploads) ------------------------------------------- */

enum ims_status ingest__add_bytes(const struct ingest_deps *deps, const struct ingest_options *o,
                                  struct clip_ctx *ctx, struct ingest_hooks *hooks,
                                  const char *source, const void *bytes, size_t n,
                                  struct ingest_item_report *rep, char *msg, size_t msg_cap)
{
    struct pipeline p;
    memset(&p, 0, sizeof(p));
    p.deps = deps;
    p.o = o;
    p.hooks = hooks;
    p.image_size = clip_model_image_size(deps->model);
    p.dim = clip_model_embed_dim(deps->model);
    p.t0 = ims_now();
    pthread_mutex_init(&p.mu, NULL);
    enum ims_status st = IMS_OK;
    size_t s = (size_t)p.image_size;
    uint8_t *rgb = ims_malloc(s * s * 3);
    float *emb = ims_malloc((size_t)p.dim * sizeof(float));
    struct item *it = item_new(source, 0);
    if (it)
        it->body = ims_malloc(n ? n : 1);
    if (!rgb || !emb || !it || !it->body) {
        st = IMS_ERR_NOMEM;
        snprintf(msg, msg_cap, "out of memory");
        goto out;
    }
    memcpy(it->body, bytes, n);
    it->body_len = n;
    decode_item(&p, it, rgb);
    if (!it->failed) {
        struct ims_error err = {0};
        double t = ims_now();
        enum ims_status est = clip_ctx_encode_images(ctx, it->pixels, 1, emb, 1, &err);
        if (hooks)
            hooks_encoded(hooks, 1, ims_now() - t);
        if (est != IMS_OK) {
            item_fail(it, est, "encoder: %s", ims_error_message(&err, est));
        } else {
            it->embedding = emb;
            emb = NULL;
        }
    }
    struct store_new_image row;
    struct store_insert_result res;
    struct ingest_item_report r;
    write_group(&p, &it, 1, &row, &res, &r);
    rep->outcome = it->failed ? INGEST_FAILED : it->outcome;
    rep->status = it->failed ? it->status : IMS_OK;
    rep->id = it->id;
    rep->source = NULL;
    rep->tag = 0;
    rep->error = NULL;
    if (it->failed) {
        snprintf(msg, msg_cap, "%s", it->error ? it->error : "failed");
        st = atomic_load(&p.fatal) ? p.fatal_st : IMS_OK;
    }
out:
    item_free(it);
    ims_free(rgb);
    ims_free(emb);
    pthread_mutex_destroy(&p.mu);
    return st;
}
