/* SPDX-License-Identifier: MIT */
/*
 * libimgsearch.c: the public C library (include/imgsearch.h) over the
 * modules' public headers: clip (model), replica (the data folder or a
 * PostgreSQL catalogue URL: the catalogue checked against the model, the
 * index snapshot brought up to date or rebuilt), ingest and search. It owns
 * nothing of its own but the handle; every call maps onto one module call.
 * The `imgsearch` command and its server open, add, search, remove and save
 * through this file too (libimgsearch_int.h: the same calls with the
 * modules' full options, and accessors for what the library does not
 * cover), so there is one path from a catalogue to an answer.
 *
 * Statuses: enum imgsearch_status has the values of enum ims_status (checked
 * below), so they pass through unchanged. Allocation goes through
 * ims_malloc/ims_free; imgsearch_free releases what the library returned.
 */
#include "imgsearch.h"
#include "libimgsearch_int.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgsearch/base.h"
#include "imgsearch/clip.h"
#include "imgsearch/fetch.h"
#include "imgsearch/image.h"
#include "imgsearch/index.h"
#include "imgsearch/ingest.h"
#include "imgsearch/replica.h"
#include "imgsearch/search.h"
#include "imgsearch/store.h"

/* IMGSEARCH_VERSION_STRING: src/lib/CMakeLists.txt's IMS_LIB_VERSION (one
 * place: it names the .so file and imgsearch.pc's Version too) */
#ifndef IMGSEARCH_VERSION_STRING
#error "IMGSEARCH_VERSION_STRING is defined by src/lib/CMakeLists.txt"
#endif

_Static_assert((int)IMGSEARCH_ERR_INVALID == (int)IMS_ERR_INVALID, "status table");
_Static_assert((int)IMGSEARCH_ERR_MODEL_MISMATCH == (int)IMS_ERR_MODEL_MISMATCH, "status table");
_Static_assert((int)IMGSEARCH_ERR_INTERNAL == (int)IMS_ERR_INTERNAL, "status table");
_Static_assert((int)IMGSEARCH_ERR_INTERNAL + 1 == (int)IMS_STATUS_COUNT, "status table");
_Static_assert(sizeof(struct imgsearch_error) == sizeof(struct ims_error), "error struct");
_Static_assert((int)IMGSEARCH_TERM_VECTOR == (int)SEARCH_TERM_VECTOR, "term kinds");
_Static_assert((int)IMGSEARCH_ORIENT_SQUARE == (int)STORE_ORIENT_SQUARE &&
                   (int)IMGSEARCH_ORIENT_LANDSCAPE == (int)STORE_ORIENT_LANDSCAPE &&
                   (int)IMGSEARCH_ORIENT_PORTRAIT == (int)STORE_ORIENT_PORTRAIT,
               "orientations");

struct imgsearch {
    struct clip_model *model;       /* NULL when opened without one (internal open) */
    struct replica *replica;        /* the catalogue and its index */
    struct store *store;            /* borrowed from replica */
    struct search_engine *se;       /* NULL without a model or index, or until started */
    struct ingest_options iopt;
    pthread_mutex_t add_mu;         /* one imgsearch_add at a time */
    /* the last duplicates pass (imgsearch__duplicates), under dups_mu */
    pthread_mutex_t dups_mu;
    pthread_cond_t dups_cv;         /* a pass ended */
    int dups_computing, dups_valid;
    uint64_t dups_generation;       /* the index's when the pass began */
    float dups_threshold;
    struct vindex_dups dups;
    char model_name[256];
    int dim;
    int sync_ms;                    /* how long an add or remove waits for the index */
};

static enum imgsearch_status pass(enum ims_status st) { return (enum imgsearch_status)st; }
#define ERR(e) ((struct ims_error *)(void *)(e))

const char *imgsearch_status_name(enum imgsearch_status st)
{
    return ims_status_name((enum ims_status)st);
}
const char *imgsearch_strerror(enum imgsearch_status st)
{
    return ims_strerror((enum ims_status)st);
}
const char *imgsearch_version(void) { return IMGSEARCH_VERSION_STRING; }
void imgsearch_free(void *p) { ims_free(p); }

void imgsearch_params_default(struct imgsearch_params *p) { memset(p, 0, sizeof(*p)); }

/* ---- open / close ----------------------------------------------------------------- */

enum imgsearch_status imgsearch_open(const char *catalogue, const struct imgsearch_params *p,
                                     struct imgsearch **out, struct imgsearch_error *e)
{
    return imgsearch_open_flags(catalogue, p, 0, out, e);
}

void imgsearch__open_options_default(struct imgsearch__open_options *o)
{
    memset(o, 0, sizeof(*o));
    replica_options_default(&o->replica);
    clip_model_params_default(&o->model);
    o->with_engine = 1;
}

enum imgsearch_status imgsearch_open_flags(const char *catalogue,
                                           const struct imgsearch_params *p, unsigned flags,
                                           struct imgsearch **out, struct imgsearch_error *e)
{
    struct ims_error *err = ERR(e);
    struct imgsearch_params def;
    if (!p) {
        imgsearch_params_default(&def);
        p = &def;
    }
    if (!catalogue || !*catalogue || !out)
        return pass(ims_error_set(err, IMS_ERR_INVALID, "no catalogue given"));
    if (flags & ~(unsigned)IMGSEARCH_OPEN_EXISTING)
        return pass(ims_error_set(err, IMS_ERR_INVALID, "unknown open flags 0x%x", flags));
    /* a PostgreSQL URL opens the shared catalogue the CLI's --catalogue
     * opens (store_open_catalogue through the replica); any other scheme is
     * refused rather than taken for a folder named "x://..." */
    int url = store_catalogue_is_url(catalogue);
    if (!url && strstr(catalogue, "://"))
        return pass(ims_error_set(err, IMS_ERR_UNSUPPORTED,
                                  "catalogue URLs are postgresql:// or postgres://; anything "
                                  "else is a data folder path"));
    const char *mdir = p->model_dir ? p->model_dir : getenv("IMGSEARCH_MODEL");
    if (!mdir || !*mdir)
        return pass(ims_error_set(err, IMS_ERR_INVALID,
                                  "no model folder (params.model_dir or IMGSEARCH_MODEL)"));
    struct imgsearch__open_options o;
    imgsearch__open_options_default(&o);
    o.model_dir = mdir;
    o.model.precision = p->bf16 ? CLIP_PRECISION_BF16 : CLIP_PRECISION_F32;
    if (p->n_threads > 0)
        o.model.n_threads = p->n_threads;
    /* a URL has no data folder: no snapshot, the index (Flat) is built from
     * the catalogue at every open, as `imgsearch --catalogue URL` does
     * without --data */
    o.replica.data_dir = url ? NULL : catalogue;
    o.replica.catalogue = url ? catalogue : NULL;
    if (flags & IMGSEARCH_OPEN_EXISTING)
        o.replica.store_flags |= STORE_OPEN_EXISTING;
    int model_failed = 0;
    struct imgsearch *is = NULL;
    enum ims_status st = imgsearch__open(&o, &is, &model_failed, err);
    if (st != IMS_OK) {
        if (model_failed)
            ims_error_prefix(err, "model %s", mdir);
        return pass(st);
    }
    is->iopt.fetch.allow_private = p->allow_private_urls != 0;
    *out = is;
    return IMGSEARCH_OK;
}

enum ims_status imgsearch__open(const struct imgsearch__open_options *o, struct imgsearch **out,
                                int *model_failed, struct ims_error *err)
{
    if (model_failed)
        *model_failed = 0;
    struct imgsearch *is = ims_calloc(1, sizeof(*is));
    if (!is)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&is->add_mu, NULL);
    pthread_mutex_init(&is->dups_mu, NULL);
    pthread_cond_init(&is->dups_cv, NULL);
    is->sync_ms = o->sync_ms > 0 ? o->sync_ms : 60000;
    struct replica_options ro = o->replica;
    enum ims_status st;
    if (o->model_dir) {
        st = clip_model_load(o->model_dir, &o->model, &is->model, err);
        if (st != IMS_OK) {
            if (model_failed)
                *model_failed = 1;
            goto fail;
        }
        /* the catalogue must belong to this model (replica_open checks) */
        ro.model_name = clip_model_name(is->model);
        ro.dim = (uint32_t)clip_model_embed_dim(is->model);
    }
    st = replica_open(&ro, &is->replica, err);
    if (st != IMS_OK)
        goto fail;
    is->store = replica_store(is->replica);
    /* the replica's: the model's when one is loaded (checked equal above),
     * else what the catalogue records */
    snprintf(is->model_name, sizeof(is->model_name), "%s", replica_model_name(is->replica));
    is->dim = (int)replica_dim(is->replica);
    if (o->with_engine && is->model && replica_index(is->replica) &&
        (st = imgsearch__engine_start(is, o->search, err)) != IMS_OK)
        goto fail;
    /* no ingest service (ingest_new): it would mark the jobs of a server
     * running on the same folder as interrupted; imgsearch_add runs its
     * own pipeline */
    ingest_options_default(&is->iopt);
    is->iopt.allow_local_files = 1;
    *out = is;
    return IMS_OK;
fail:
    imgsearch_close(is);
    return st;
}

enum ims_status imgsearch__engine_start(struct imgsearch *is, const struct search_options *o,
                                        struct ims_error *err)
{
    struct vindex *vx = replica_index(is->replica);
    if (is->se)
        return IMS_OK;
    if (!is->model || !vx)
        return ims_error_set(err, IMS_ERR_INVALID,
                             !is->model ? "opened without a model: nothing to search with"
                                        : "the index is not built yet");
    return search_engine_new(is->model, is->store, vx, o, &is->se, err);
}

struct clip_model *imgsearch__model(struct imgsearch *is) { return is->model; }
struct replica *imgsearch__replica(struct imgsearch *is) { return is->replica; }
struct store *imgsearch__store(struct imgsearch *is) { return is->store; }
struct search_engine *imgsearch__engine(struct imgsearch *is) { return is->se; }
const char *imgsearch__index_spec(struct imgsearch *is) { return replica_spec(is->replica); }

enum ims_status imgsearch__feed(struct imgsearch *is, int64_t *seq, int64_t *floor,
                                struct ims_error *err)
{
    int64_t s = 0, f = 0;
    enum ims_status st = store_change_seq(is->store, &s, err);
    if (st == IMS_OK)
        st = store_change_floor(is->store, &f, err);
    if (st == IMS_OK) {
        *seq = s;
        *floor = f;
    }
    return st;
}

enum imgsearch_status imgsearch_save(struct imgsearch *is, struct imgsearch_error *e)
{
    struct ims_error *err = ERR(e);
    if (!replica_index(is->replica) || !replica_data_dir(is->replica)[0])
        return IMGSEARCH_OK; /* no index, or a URL without a data folder: no snapshot */
    /* this handle's own writes are in the feed: cover them, so the snapshot
     * records the newest position (a failure here still saves what the
     * index covers) */
    struct ims_error cerr = {0};
    enum ims_status st = replica_catch_up(is->replica, &cerr);
    if (st != IMS_OK)
        ims_log(IMS_LOG_WARN, "%s", ims_error_message(&cerr, st));
    return pass(replica_save(is->replica, NULL, err));
}

void imgsearch_close(struct imgsearch *is)
{
    if (!is)
        return;
    search_engine_free(is->se);
    replica_close(is->replica); /* no snapshot: imgsearch_save writes it */
    clip_model_free(is->model);
    pthread_mutex_destroy(&is->add_mu);
    vindex_dups_fini(&is->dups);
    pthread_cond_destroy(&is->dups_cv);
    pthread_mutex_destroy(&is->dups_mu);
    ims_free(is);
}

enum ims_status imgsearch__duplicates(struct imgsearch *is, float threshold,
                                      enum ims_status (*fn)(void *ctx, const struct vindex_dups *d,
                                                            struct ims_error *err),
                                      void *ctx, struct ims_error *err)
{
    struct vindex *vx = replica_index(is->replica);
    IMS_RETURN_ERROR_IF(!vx, err, IMS_ERR_INVALID, "duplicates: opened without an index");
    uint64_t gen = vindex_generation(vx); /* read before the pass: a race leaves it stale */
    enum ims_status st = IMS_OK;
    pthread_mutex_lock(&is->dups_mu);
    while (!is->dups_valid || is->dups_generation != gen || is->dups_threshold != threshold) {
        if (is->dups_computing) {
            pthread_cond_wait(&is->dups_cv, &is->dups_mu);
            continue;
        }
        is->dups_computing = 1;
        pthread_mutex_unlock(&is->dups_mu);
        struct vindex_dups_options o;
        vindex_dups_options_default(&o);
        o.threshold = threshold;
        struct vindex_dups fresh;
        st = vindex_duplicates(vx, &o, &fresh, err);
        pthread_mutex_lock(&is->dups_mu);
        is->dups_computing = 0;
        pthread_cond_broadcast(&is->dups_cv);
        if (st != IMS_OK) {
            pthread_mutex_unlock(&is->dups_mu);
            return st;
        }
        vindex_dups_fini(&is->dups);
        is->dups = fresh;
        is->dups_valid = 1;
        is->dups_generation = gen;
        is->dups_threshold = threshold;
    }
    st = fn(ctx, &is->dups, err);
    pthread_mutex_unlock(&is->dups_mu);
    return st;
}

enum imgsearch_status imgsearch_count(struct imgsearch *is, int64_t *n, struct imgsearch_error *e)
{
    return pass(store_count(is->store, n, ERR(e)));
}
int imgsearch_dim(const struct imgsearch *is) { return is->dim; }
const char *imgsearch_model_name(const struct imgsearch *is) { return is->model_name; }

/* ---- adding ------------------------------------------------------------------------------ */

/* ingest commits rows to the catalogue; the handle's index follows them
 * through the replica before the add returns */
enum ims_status imgsearch__after_commit(void *user, int64_t seq, struct ims_error *err)
{
    struct imgsearch *is = user;
    return replica_sync(is->replica, seq, is->sync_ms, err);
}

struct next_ctx {
    const char *const *sources;
    size_t n, i;
};

static int next_source(void *ctx, const char **source)
{
    struct next_ctx *c = ctx;
    if (c->i >= c->n)
        return 0;
    *source = c->sources[c->i++];
    return 1;
}

enum ims_status imgsearch__add(struct imgsearch *is, const struct ingest_options *io,
                               int (*next)(void *ctx, const char **source), void *ctx,
                               const atomic_int *cancel, struct ingest_summary *sum,
                               struct ims_error *err)
{
    if (!is->model)
        return ims_error_set(err, IMS_ERR_INVALID, "opened without a model: cannot add");
    struct ingest_deps deps = {is->model, is->store, imgsearch__after_commit, is};
    pthread_mutex_lock(&is->add_mu);
    enum ims_status st = ingest_run(&deps, io, next, ctx, cancel, sum, err);
    pthread_mutex_unlock(&is->add_mu);
    return st;
}

enum imgsearch_status imgsearch_add(struct imgsearch *is, const char *const *sources, size_t n,
                                    struct imgsearch_add_summary *summary,
                                    struct imgsearch_error *e)
{
    if (!sources && n)
        return pass(ims_error_set(ERR(e), IMS_ERR_INVALID, "no sources"));
    struct next_ctx nc = {sources, n, 0};
    struct ingest_summary sum;
    memset(&sum, 0, sizeof(sum));
    enum ims_status st = imgsearch__add(is, &is->iopt, next_source, &nc, NULL, &sum, ERR(e));
    if (st == IMS_OK && summary) {
        summary->total = sum.total;
        summary->added = sum.added;
        summary->duplicates = sum.duplicates;
        summary->failed = sum.failed;
    }
    return pass(st);
}

enum ims_status imgsearch__remove(struct imgsearch *is, int64_t id, int sync_ms,
                                  struct ims_error *err)
{
    enum ims_status st = store_delete(is->store, id, err);
    int64_t seq = 0;
    if (st == IMS_OK)
        st = store_change_seq(is->store, &seq, err);
    if (st == IMS_OK) /* the catalogue first; the index follows its feed */
        st = replica_sync(is->replica, seq, sync_ms, err);
    return st;
}

enum imgsearch_status imgsearch_remove(struct imgsearch *is, int64_t id,
                                       struct imgsearch_error *e)
{
    return pass(imgsearch__remove(is, id, is->sync_ms, ERR(e)));
}

enum ims_status imgsearch__remove_many(struct imgsearch *is, const int64_t *ids, size_t n,
                                       uint8_t *existed, enum ims_status *index_st,
                                       struct ims_error *index_err, struct ims_error *err)
{
    enum ims_status st = store_delete_many(is->store, ids, n, existed, err);
    if (st != IMS_OK)
        return st;
    /* the catalogue (the source of truth) has the deletions; the index
     * follows its feed */
    int64_t seq = 0;
    enum ims_status ist = store_change_seq(is->store, &seq, index_err);
    if (ist == IMS_OK && replica_index(is->replica))
        ist = replica_sync(is->replica, seq, is->sync_ms, index_err);
    *index_st = ist;
    return IMS_OK;
}

/* ---- rows ------------------------------------------------------------------------------------ */

static enum ims_status row_copy(const struct store_image_row *r, struct imgsearch_row *out)
{
    memset(out, 0, sizeof(*out));
    out->id = r->id;
    out->width = (int)r->width;
    out->height = (int)r->height;
    out->added = r->added;
    out->has_taken = r->has_taken != 0;
    out->taken = r->has_taken ? r->taken : 0;
    out->source = ims_strdup(r->source ? r->source : "");
    out->caption = r->caption ? ims_strdup(r->caption) : NULL;
    out->format = r->format ? ims_strdup(r->format) : NULL;
    bool ok = out->source && (!r->caption || out->caption) && (!r->format || out->format);
    if (ok && r->n_tags) {
        out->tags = ims_calloc(r->n_tags, sizeof(*out->tags));
        ok = out->tags != NULL;
        for (size_t i = 0; ok && i < r->n_tags; i++) {
            out->tags[i] = ims_strdup(r->tags[i] ? r->tags[i] : "");
            ok = out->tags[i] != NULL;
            out->n_tags = i + 1; /* row_free releases what was copied */
        }
    }
    if (!ok) {
        imgsearch_row_free(out);
        return IMS_ERR_NOMEM;
    }
    return IMS_OK;
}

void imgsearch_row_free(struct imgsearch_row *row)
{
    if (!row)
        return;
    ims_free(row->source);
    ims_free(row->caption);
    ims_free(row->format);
    for (size_t i = 0; row->tags && i < row->n_tags; i++)
        ims_free(row->tags[i]);
    ims_free(row->tags);
    memset(row, 0, sizeof(*row));
}

enum imgsearch_status imgsearch_get(struct imgsearch *is, int64_t id, struct imgsearch_row *row,
                                    struct imgsearch_error *e)
{
    struct store_image_row r;
    store_row_init(&r);
    enum ims_status st = store_get(is->store, id, 0, &r, ERR(e));
    if (st == IMS_OK && (st = row_copy(&r, row)) != IMS_OK)
        ims_error_set(ERR(e), st, "out of memory");
    store_row_fini(&r);
    return pass(st);
}

enum imgsearch_status imgsearch_thumbnail(struct imgsearch *is, int64_t id, void **jpeg,
                                          size_t *n_bytes, struct imgsearch_error *e)
{
    return pass(store_get_thumbnail(is->store, id, jpeg, n_bytes, ERR(e)));
}

/* The server's tag edit (POST /api/v1/images/ID/tags, be_image_tags) and
 * `imgsearch tag`: the lists as the server bounds them, every tag checked
 * by the catalogue (store_tags_update: nothing changes on a bad one) */
enum imgsearch_status imgsearch_tags_update(struct imgsearch *is, int64_t id,
                                            const char *const *add, size_t n_add,
                                            const char *const *remove, size_t n_remove,
                                            struct imgsearch_error *e)
{
    struct ims_error *err = ERR(e);
    const char *const *lists[2] = {add, remove};
    const size_t ns[2] = {n_add, n_remove};
    static const char *const names[2] = {"add", "remove"};
    for (int l = 0; l < 2; l++) {
        if (ns[l] > STORE_TAGS_MAX || (ns[l] && !lists[l]))
            return pass(ims_error_set(err, IMS_ERR_INVALID, "%s: must be a list of up to %d tags",
                                      names[l], STORE_TAGS_MAX));
        for (size_t i = 0; i < ns[l]; i++)
            if (!lists[l][i])
                return pass(ims_error_set(err, IMS_ERR_INVALID,
                                          "%s[%zu]: must be a tag (a string)", names[l], i));
    }
    enum ims_status st = store_tags_update(is->store, id, add, n_add, remove, n_remove, err);
    if (st == IMS_ERR_NOT_FOUND)
        ims_error_set(err, st, "no image with id %lld", (long long)id);
    return pass(st);
}

/* ---- search ------------------------------------------------------------------------------------ */

#define FILTER_FORMATS_MAX 16 /* as the server's filter.format */
#define FILTER_PREFIX_MAX 4096

/* The public filter as the store's, checked the way the server checks its
 * own (server/query.c: format words, orientation, source prefix, up to 64
 * tags each as the catalogue takes them), with the member named in the
 * message. fmts receives the canonical comma list of formats. */
static enum ims_status filter_from_public(const struct imgsearch_filter *f, struct store_filter *sf,
                                          char *fmts, size_t fmts_size, struct ims_error *err)
{
    memset(sf, 0, sizeof(*sf));
    sf->has_added_from = f->added_from != 0;
    sf->added_from = f->added_from;
    sf->has_added_to = f->added_to != 0;
    sf->added_to = f->added_to;
    sf->has_taken_from = f->taken_from != 0;
    sf->taken_from = f->taken_from;
    sf->has_taken_to = f->taken_to != 0;
    sf->taken_to = f->taken_to;
    sf->min_width = f->min_width > 0 ? (uint32_t)f->min_width : 0;
    sf->min_height = f->min_height > 0 ? (uint32_t)f->min_height : 0;
    if (f->source_prefix && *f->source_prefix) {
        IMS_RETURN_ERROR_IF(strlen(f->source_prefix) > FILTER_PREFIX_MAX, err, IMS_ERR_INVALID,
                            "filter.source_prefix: must be 1..%d bytes", FILTER_PREFIX_MAX);
        sf->source_prefix = f->source_prefix;
    }
    IMS_RETURN_ERROR_IF(f->n_formats > FILTER_FORMATS_MAX || (f->n_formats && !f->formats), err,
                        IMS_ERR_INVALID, "filter.formats: must be a list of up to %d format words",
                        FILTER_FORMATS_MAX);
    fmts[0] = 0;
    for (size_t i = 0; i < f->n_formats; i++) {
        enum image_format fm;
        const char *w = f->formats[i];
        IMS_RETURN_ERROR_IF(!w || image_format_parse(w, &fm) != 0, err, IMS_ERR_INVALID,
                            "filter.formats[%zu]: unknown format '%.32s' (known: " IMS_FORMAT_WORDS
                            ")", i, w ? w : "(null)");
        size_t at = strlen(fmts);
        snprintf(fmts + at, fmts_size - at, "%s%s", at ? "," : "", image_format_word(fm));
    }
    sf->formats = f->n_formats ? fmts : NULL;
    IMS_RETURN_ERROR_IF((unsigned)f->orientation > (unsigned)IMGSEARCH_ORIENT_SQUARE, err,
                        IMS_ERR_INVALID,
                        "filter.orientation: must be IMGSEARCH_ORIENT_ANY, _LANDSCAPE, _PORTRAIT "
                        "or _SQUARE (not %d)", (int)f->orientation);
    sf->orientation = (enum store_orientation)f->orientation;
    IMS_RETURN_ERROR_IF(f->n_tags > STORE_TAGS_MAX || (f->n_tags && !f->tags), err,
                        IMS_ERR_INVALID, "filter.tags: must be a list of up to %d tags",
                        STORE_TAGS_MAX);
    for (size_t i = 0; i < f->n_tags; i++) {
        char out[STORE_TAG_MAX_BYTES + 1], key[STORE_TAG_MAX_BYTES + 1];
        IMS_RETURN_ERROR_IF(!f->tags[i], err, IMS_ERR_INVALID,
                            "filter.tags[%zu]: must be a tag (a string)", i);
        enum ims_status st = store_tag_normalize(f->tags[i], out, key, err);
        if (st != IMS_OK) {
            ims_error_prefix(err, "filter.tags[%zu]", i);
            return st;
        }
    }
    sf->tags = f->n_tags ? f->tags : NULL;
    sf->n_tags = f->n_tags;
    return IMS_OK;
}

enum imgsearch_status imgsearch_search(struct imgsearch *is, const struct imgsearch_query *q,
                                       struct imgsearch_results *out, struct imgsearch_error *e)
{
    struct ims_error *err = ERR(e);
    if (!q || !q->terms || q->n_terms < 1 || q->n_terms > SEARCH_TERMS_MAX)
        return pass(ims_error_set(err, IMS_ERR_INVALID, "a query needs 1 to %d terms",
                                  SEARCH_TERMS_MAX));
    struct search_term terms[SEARCH_TERMS_MAX];
    memset(terms, 0, sizeof(terms));
    for (size_t i = 0; i < q->n_terms; i++) {
        const struct imgsearch_term *t = &q->terms[i];
        terms[i] = (struct search_term){(enum search_term_kind)t->kind, t->weight, t->text,
                                        t->bytes, t->n_bytes, t->image_id, t->vector,
                                        t->n_vector};
    }
    /* the search module answers the exact top k among the matching rows */
    struct store_filter sf;
    char fmts[FILTER_FORMATS_MAX * 8];
    memset(&sf, 0, sizeof(sf));
    if (q->filter) {
        enum ims_status fst = filter_from_public(q->filter, &sf, fmts, sizeof(fmts), err);
        if (fst != IMS_OK)
            return pass(fst);
    }
    /* NaN fails both comparisons */
    if (!(q->dedup >= 0.0f && q->dedup <= 1.0f))
        return pass(ims_error_set(err, IMS_ERR_INVALID, "dedup: must be in (0, 1] (0: off)"));
    struct search_request rq = {.terms = terms,
                                .n_terms = q->n_terms,
                                .k = q->k,
                                .offset = q->offset,
                                .has_min_score = q->has_min_score,
                                .min_score = q->min_score,
                                .order = SEARCH_ORDER_SCORE,
                                .filter = q->filter ? &sf : NULL,
                                .dedup = q->dedup};
    struct search_response resp;
    memset(&resp, 0, sizeof(resp));
    enum ims_status st = imgsearch__search(is, &rq, &resp, err);
    if (st != IMS_OK)
        return pass(st);
    out->items = ims_calloc(resp.n ? resp.n : 1, sizeof(*out->items));
    out->n = 0;
    if (!out->items) {
        search_response_fini(&resp);
        return pass(ims_error_set(err, IMS_ERR_NOMEM, "out of memory"));
    }
    for (size_t i = 0; i < resp.n && st == IMS_OK; i++) {
        struct imgsearch_result *it = &out->items[out->n];
        st = row_copy(&resp.hits[i].row, &it->row);
        it->score = resp.hits[i].score;
        size_t nd = resp.hits[i].n_duplicates;
        if (st == IMS_OK && nd) {
            it->duplicates = ims_malloc(nd * sizeof(*it->duplicates));
            if (it->duplicates) {
                memcpy(it->duplicates, resp.hits[i].duplicates, nd * sizeof(*it->duplicates));
                it->n_duplicates = nd;
            } else {
                imgsearch_row_free(&it->row);
                st = IMS_ERR_NOMEM;
            }
        }
        if (st == IMS_OK)
            out->n++;
    }
    search_response_fini(&resp);
    if (st != IMS_OK) {
        imgsearch_results_free(out);
        return pass(ims_error_set(err, st, "out of memory"));
    }
    return IMGSEARCH_OK;
}

enum ims_status imgsearch__search(struct imgsearch *is, const struct search_request *rq,
                                  struct search_response *resp, struct ims_error *err)
{
    if (!is->se)
        return ims_error_set(err, IMS_ERR_INVALID, is->model ? "the index is not ready"
                                                             : "opened without a model");
    return search_run(is->se, rq, resp, err);
}

void imgsearch_results_free(struct imgsearch_results *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        imgsearch_row_free(&r->items[i].row);
        ims_free(r->items[i].duplicates);
    }
    ims_free(r->items);
    r->items = NULL;
    r->n = 0;
}

/* ---- embeddings ---------------------------------------------------------------------------------- */

enum imgsearch_status imgsearch_embed_text(struct imgsearch *is, const char *text, float *out,
                                           struct imgsearch_error *e)
{
    if (!text || !out)
        return pass(ims_error_set(ERR(e), IMS_ERR_INVALID, "no text"));
    if (!is->se)
        return pass(ims_error_set(ERR(e), IMS_ERR_INVALID, "no model or index to embed with"));
    return pass(search_embed_text(is->se, text, out, NULL, ERR(e)));
}

enum imgsearch_status imgsearch_embed_image(struct imgsearch *is, const void *bytes, size_t n,
                                            float *out, struct imgsearch_error *e)
{
    if (!bytes || !n || !out)
        return pass(ims_error_set(ERR(e), IMS_ERR_INVALID, "no image"));
    if (!is->se)
        return pass(ims_error_set(ERR(e), IMS_ERR_INVALID, "no model or index to embed with"));
    return pass(search_embed_image(is->se, bytes, n, out, ERR(e)));
}
