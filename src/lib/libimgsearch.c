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
#include "imgsearch/index.h"
#include "imgsearch/ingest.h"
#include "imgsearch/replica.h"
#include "imgsearch/search.h"
#include "imgsearch/store.h"

#define IMGSEARCH_VERSION_STRING "0.1.0"

_Static_assert((int)IMGSEARCH_ERR_INVALID == (int)IMS_ERR_INVALID, "status table");
_Static_assert((int)IMGSEARCH_ERR_MODEL_MISMATCH == (int)IMS_ERR_MODEL_MISMATCH, "status table");
_Static_assert((int)IMGSEARCH_ERR_INTERNAL == (int)IMS_ERR_INTERNAL, "status table");
_Static_assert((int)IMGSEARCH_ERR_INTERNAL + 1 == (int)IMS_STATUS_COUNT, "status table");
_Static_assert(sizeof(struct imgsearch_error) == sizeof(struct ims_error), "error struct");
_Static_assert((int)IMGSEARCH_TERM_VECTOR == (int)SEARCH_TERM_VECTOR, "term kinds");

struct imgsearch {
    struct clip_model *model;       /* NULL when opened without one (internal open) */
    struct replica *replica;        /* the catalogue and its index */
    struct store *store;            /* borrowed from replica */
    struct search_engine *se;       /* NULL without a model or index, or until started */
    struct ingest_options iopt;
    pthread_mutex_t add_mu;         /* one imgsearch_add at a time */
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
    ims_free(is);
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
                               atomic_int *cancel, struct ingest_summary *sum,
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
    out->source = ims_strdup(r->source ? r->source : "");
    out->caption = r->caption ? ims_strdup(r->caption) : NULL;
    if (!out->source || (r->caption && !out->caption)) {
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

/* ---- search ------------------------------------------------------------------------------------ */

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
    memset(&sf, 0, sizeof(sf));
    if (q->filter) {
        const struct imgsearch_filter *f = q->filter;
        sf.has_added_from = f->added_from != 0;
        sf.added_from = f->added_from;
        sf.has_added_to = f->added_to != 0;
        sf.added_to = f->added_to;
        sf.min_width = f->min_width > 0 ? (uint32_t)f->min_width : 0;
        sf.min_height = f->min_height > 0 ? (uint32_t)f->min_height : 0;
        sf.source_prefix = f->source_prefix;
    }
    struct search_request rq = {terms,           q->n_terms,    q->k,
                                q->offset,       q->has_min_score, q->min_score,
                                SEARCH_ORDER_SCORE, q->filter ? &sf : NULL, 0.0f, {0}};
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
        st = row_copy(&resp.hits[i].row, &out->items[out->n].row);
        out->items[out->n].score = resp.hits[i].score;
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
    for (size_t i = 0; i < r->n; i++)
        imgsearch_row_free(&r->items[i].row);
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
