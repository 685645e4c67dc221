/* SPDX-License-Identifier: MIT */
/*
 * search.c: query execution: embed each term, fuse, top-k, join rows.
 *
 * - Texts are tokenized first and the token ids key the LRU cache
 *   (search_cache.c); a miss runs the text transformer on a context taken
 *   from a small pool (contexts hold activation buffers and are used by one
 *   thread at a time, clip.h).
 * - Fusion: normalise(sum w_i * normalise(e_i)). Terms whose weights cancel
 *   exactly give a zero vector, reported as invalid rather than searched.
 * - Results: the top offset + k of a fused query are cached with the
 *   index's version stamp (search_cache.c), so repeated queries and next
 *   pages skip the scan while the index is unchanged.
 * - Paging: the index is asked for offset + k candidates; hits whose rows
 *   were deleted meanwhile (the row is gone, the index not yet told) are
 *   skipped; min_score cuts the tail; ORDER_DATE re-sorts the cut set.
 */
#include "imgsearch/search.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "search_int.h"

struct search_engine {
    const struct clip_model *model;
    struct store *store;
    struct vindex *index;
    struct search_options opts;
    int dim, image_size;
    struct search_cache *cache;
    struct search_hits_cache *hits; /* top-k results of recent fused queries */
    pthread_mutex_t ctx_mu;          /* guards free_ctx, n_free */
    pthread_cond_t ctx_cond;
    struct clip_ctx **ctxs, **free_ctx;
    int n_ctx, n_free;
    atomic_ullong queries, text_encodes, image_encodes, text_ns, image_ns;
};

void search_options_default(struct search_options *o)
{
    memset(o, 0, sizeof(*o));
    o->text_cache_entries = 4096;
    o->n_contexts = 2;
    image_limits_default(&o->limits);
}

void search_engine_free(struct search_engine *se)
{
    if (!se)
        return;
    for (int i = 0; i < se->n_ctx; i++)
        clip_ctx_free(se->ctxs[i]);
    ims_free(se->ctxs);
    ims_free(se->free_ctx);
    search__cache_free(se->cache);
    search__hits_free(se->hits);
    pthread_mutex_destroy(&se->ctx_mu);
    pthread_cond_destroy(&se->ctx_cond);
    ims_free(se);
}

enum ims_status search_engine_new(const struct clip_model *model, struct store *store,
                                  struct vindex *index, const struct search_options *opts,
                                  struct search_engine **out, struct ims_error *err)
{
    struct search_engine *se = ims_calloc(1, sizeof(*se));
    if (!se)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&se->ctx_mu, NULL);
    pthread_cond_init(&se->ctx_cond, NULL);
    se->model = model;
    se->store = store;
    se->index = index;
    search_options_default(&se->opts);
    if (opts) {
        if (opts->text_cache_entries)
            se->opts.text_cache_entries = opts->text_cache_entries;
        if (opts->n_contexts > 0)
            se->opts.n_contexts = IMS_MIN(opts->n_contexts, 64);
        if (opts->limits.max_pixels)
            se->opts.limits = opts->limits;
    }
    se->dim = clip_model_embed_dim(model);
    se->image_size = clip_model_image_size(model);
    enum ims_status st = search__cache_new(se->opts.text_cache_entries, se->dim, &se->cache);
    if (st != IMS_OK) {
        ims_error_set(err, st, "cannot allocate the text cache");
        goto fail;
    }
    st = search__hits_new(256, se->dim, &se->hits);
    if (st != IMS_OK) {
        ims_error_set(err, st, "cannot allocate the result cache");
        goto fail;
    }
    se->ctxs = ims_calloc((size_t)se->opts.n_contexts, sizeof(*se->ctxs));
    se->free_ctx = ims_calloc((size_t)se->opts.n_contexts, sizeof(*se->free_ctx));
    if (!se->ctxs || !se->free_ctx) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (; se->n_ctx < se->opts.n_contexts; se->n_ctx++) {
        st = clip_ctx_new(model, 1, &se->ctxs[se->n_ctx], err);
        if (st != IMS_OK)
            goto fail;
        se->free_ctx[se->n_free++] = se->ctxs[se->n_ctx];
    }
    *out = se;
    return IMS_OK;
fail:
    search_engine_free(se);
    return st;
}

static struct clip_ctx *ctx_take(struct search_engine *se)
{
    pthread_mutex_lock(&se->ctx_mu);
    while (se->n_free == 0)
        pthread_cond_wait(&se->ctx_cond, &se->ctx_mu);
    struct clip_ctx *c = se->free_ctx[--se->n_free];
    pthread_mutex_unlock(&se->ctx_mu);
    return c;
}

static void ctx_give(struct search_engine *se, struct clip_ctx *c)
{
    pthread_mutex_lock(&se->ctx_mu);
    se->free_ctx[se->n_free++] = c;
    pthread_cond_signal(&se->ctx_cond);
    pthread_mutex_unlock(&se->ctx_mu);
}

/* ---- embedding terms ------------------------------------------------------ */

enum ims_status search_embed_text(struct search_engine *se, const char *text, float *out,
                                  int *cache_hit, struct ims_error *err)
{
    int32_t ids[CLIP_CONTEXT_MAX];
    int n_ids = 0;
    enum ims_status st =
        clip_tokenize(clip_model_tokenizer(se->model), text, strlen(text), ids, &n_ids, err);
    if (st != IMS_OK)
        return st;
    if (search__cache_get(se->cache, ids, n_ids, out)) {
        if (cache_hit)
            *cache_hit = 1;
        return IMS_OK;
    }
    /* no context: concurrent text queries share the engine's passes */
    double t = ims_now();
    st = clip_encode_text(se->model, ids, n_ids, out, 1, err);
    atomic_fetch_add(&se->text_ns, (unsigned long long)((ims_now() - t) * 1e9));
    atomic_fetch_add(&se->text_encodes, 1);
    if (st != IMS_OK)
        return st;
    search__cache_put(se->cache, ids, n_ids, out);
    if (cache_hit)
        *cache_hit = 0;
    return IMS_OK;
}

enum ims_status search_embed_image(struct search_engine *se, const void *bytes, size_t n,
                                   float *out, struct ims_error *err)
{
    struct image *img = NULL;
    size_t s = (size_t)se->image_size;
    uint8_t *rgb = ims_malloc(s * s * 3);
    float *chw = ims_malloc(3 * s * s * sizeof(float));
    enum ims_status st;
    if (!rgb || !chw) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    st = image_decode(bytes, n, &se->opts.limits, &img, err);
    if (st != IMS_OK)
        goto out;
    st = image_clip_preprocess(img, se->image_size, rgb, err);
    if (st != IMS_OK)
        goto out;
    image_clip_normalize(rgb, se->image_size, chw);
    struct clip_ctx *c = ctx_take(se);
    double t = ims_now();
    st = clip_ctx_encode_images(c, chw, 1, out, 1, err);
    atomic_fetch_add(&se->image_ns, (unsigned long long)((ims_now() - t) * 1e9));
    ctx_give(se, c);
    atomic_fetch_add(&se->image_encodes, 1);
out:
    image_free(img);
    ims_free(rgb);
    ims_free(chw);
    return st;
}

static int all_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

static enum ims_status embed_term(struct search_engine *se, const struct search_term *t,
                                  size_t idx, float *out, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    switch (t->kind) {
    case SEARCH_TERM_TEXT:
        if (!t->text || !*t->text)
            return ims_error_set(err, IMS_ERR_INVALID, "term %zu: empty text", idx);
        st = search_embed_text(se, t->text, out, NULL, err);
        break;
    case SEARCH_TERM_IMAGE:
        if (!t->bytes || t->n_bytes == 0)
            return ims_error_set(err, IMS_ERR_INVALID, "term %zu: empty image", idx);
        st = search_embed_image(se, t->bytes, t->n_bytes, out, err);
        break;
    case SEARCH_TERM_IMAGE_ID: {
        struct store_image_row row;
        store_row_init(&row);
        st = store_get(se->store, t->image_id, STORE_FIELD_EMBEDDING, &row, err);
        if (st == IMS_ERR_NOT_FOUND)
            st = ims_error_set(err, st, "term %zu: no image with id %lld", idx,
                               (long long)t->image_id);
        else if (st == IMS_OK && (!row.embedding || (int)row.dim != se->dim))
            st = ims_error_set(err, IMS_ERR_MODEL_MISMATCH,
                               "term %zu: image %lld has no embedding of this model", idx,
                               (long long)t->image_id);
        else if (st == IMS_OK)
            memcpy(out, row.embedding, (size_t)se->dim * sizeof(float));
        store_row_fini(&row);
        break;
    }
    case SEARCH_TERM_VECTOR:
        if (!t->vector || t->n_vector != (size_t)se->dim)
            return ims_error_set(err, IMS_ERR_INVALID,
                                 "term %zu: the vector has %zu values; this model's embeddings "
                                 "have %d",
                                 idx, t->n_vector, se->dim);
        if (!all_finite(t->vector, t->n_vector))
            return ims_error_set(err, IMS_ERR_INVALID, "term %zu: the vector is not finite", idx);
        memcpy(out, t->vector, (size_t)se->dim * sizeof(float));
        break;
    default:
        return ims_error_set(err, IMS_ERR_INVALID, "term %zu: unknown kind", idx);
    }
    if (st == IMS_OK) {
        clip_l2_normalize(out, se->dim);
        if (!all_finite(out, (size_t)se->dim))
            st = ims_error_set(err, IMS_ERR_INVALID, "term %zu: embedding is not finite", idx);
    } else if (err && t->kind != SEARCH_TERM_IMAGE_ID && t->kind != SEARCH_TERM_VECTOR) {
        ims_error_prefix(err, "term %zu", idx);
    }
    return st;
}

/* ---- running a query -------------------------------------------------------- */

static int by_date_desc(const void *a, const void *b)
{
    const struct search_hit *x = a, *y = b;
    if (x->row.added != y->row.added)
        return x->row.added < y->row.added ? 1 : -1;
    return x->row.id < y->row.id ? 1 : (x->row.id > y->row.id ? -1 : 0);
}

void search__hit_fini(struct search_hit *h)
{
    store_row_fini(&h->row);
    ims_free(h->duplicates);
    h->duplicates = NULL;
    h->n_duplicates = 0;
}

void search_response_fini(struct search_response *resp)
{
    if (!resp)
        return;
    for (size_t i = 0; i < resp->n; i++)
        search__hit_fini(&resp->hits[i]);
    ims_free(resp->hits);
    resp->hits = NULL;
    resp->n = 0;
}

/* The catalogue's matching ids as a bitmap for the index (issue 10). The
 * ids come from one store query; the bitmap spans ids 0..max matching. */
enum ims_status search__filtered(struct search_engine *se, const float *q, int want,
                                 const struct store_filter *f,
                                 const struct vindex_search_params *knobs, float *scores,
                                 int64_t *ids, int *n_found, struct ims_error *err)
{
    int64_t *match = NULL;
    size_t n = 0;
    enum ims_status st = store_filter_ids(se->store, f, &match, &n, err);
    if (st != IMS_OK)
        return st;
    if (n == 0) {
        *n_found = 0;
        return IMS_OK;
    }
    int64_t n_bits = match[n - 1] + 1; /* ascending */
    uint64_t *bits = ims_calloc((size_t)(n_bits + 63) / 64, sizeof(uint64_t));
    if (!bits) {
        ims_free(match);
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for a filter");
    }
    for (size_t i = 0; i < n; i++)
        if (match[i] >= 0)
            bits[match[i] >> 6] |= 1ull << (match[i] & 63);
    ims_free(match);
    struct vindex_filter vf = {bits, n_bits};
    st = vindex_search_with(se->index, q, want, &vf, knobs, scores, ids, n_found, err);
    ims_free(bits);
    return st;
}

enum ims_status search_run(struct search_engine *se, const struct search_request *req,
                           struct search_response *resp, struct ims_error *err)
{
    double t0 = ims_now();
    if (!req || req->n_terms == 0 || req->n_terms > SEARCH_TERMS_MAX)
        return ims_error_set(err, IMS_ERR_INVALID, "a query needs 1 to %d terms",
                             SEARCH_TERMS_MAX);
    if (req->k < 1 || req->k > SEARCH_K_MAX)
        return ims_error_set(err, IMS_ERR_INVALID, "k must be 1..%d", SEARCH_K_MAX);
    if (req->offset < 0 || req->offset > SEARCH_OFFSET_MAX)
        return ims_error_set(err, IMS_ERR_INVALID, "offset must be 0..%d", SEARCH_OFFSET_MAX);
    if (!se->store || !se->index)
        return ims_error_set(err, IMS_ERR_INVALID, "this engine only embeds (no catalogue)");
    atomic_fetch_add(&se->queries, 1);

    enum ims_status st = IMS_OK;
    size_t d = (size_t)se->dim;
    int want = req->k + req->offset;
    float *q = ims_calloc(d, sizeof(float));
    float *e = ims_malloc(d * sizeof(float));
    float *scores = ims_malloc((size_t)want * sizeof(float));
    int64_t *ids = ims_malloc((size_t)want * sizeof(int64_t));
    struct store_image_row *rows = ims_calloc((size_t)want, sizeof(*rows));
    uint8_t *found = ims_calloc((size_t)want, 1);
    struct search_hit *hits = ims_calloc((size_t)want, sizeof(*hits));
    size_t n_hits = 0;
    int n_found = 0, rows_loaded = 0;
    if (!q || !e || !scores || !ids || !rows || !found || !hits) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < req->n_terms; i++) {
        const struct search_term *t = &req->terms[i];
        if (!isfinite(t->weight) || t->weight == 0.0f) {
            st = ims_error_set(err, IMS_ERR_INVALID, "term %zu: weight must be finite and "
                               "non-zero", i);
            goto out;
        }
        st = embed_term(se, t, i, e, err);
        if (st != IMS_OK)
            goto out;
        for (size_t j = 0; j < d; j++)
            q[j] += t->weight * e[j];
    }
    double norm = 0;
    for (size_t j = 0; j < d; j++)
        norm += (double)q[j] * q[j];
    if (norm < 1e-12) {
        st = ims_error_set(err, IMS_ERR_INVALID, "the query terms cancel each other out");
        goto out;
    }
    clip_l2_normalize(q, se->dim);

    /* the index version is read before searching: a change racing with the
     * search gives a stamp older than the data, so the entry is never reused */
    uint64_t v_gen = vindex_generation(se->index);
    size_t v_count = vindex_count(se->index);
    if (req->dedup != 0.0f) {
        if (!(req->dedup > 0.0f && req->dedup <= 1.0f) || want > SEARCH_DEDUP_WANT_MAX) {
            st = ims_error_set(err, IMS_ERR_INVALID,
                               "dedup must be in (0, 1] with offset + k at most %d",
                               SEARCH_DEDUP_WANT_MAX);
            goto out;
        }
        st = v_count > 0 ? search__dedup(se, q, req, hits, &n_hits, err) : IMS_OK;
        if (st != IMS_OK)
            goto out;
    } else if (req->filter && v_count > 0) {
        st = search__filtered(se, q, want, req->filter, &req->knobs, scores, ids, &n_found, err);
        if (st != IMS_OK)
            goto out;
    } else if (v_count > 0 && (req->knobs.ef_search || req->knobs.nprobe || req->knobs.rerank)) {
        /* per-query knobs: not the default answer, so not the result cache's */
        st = vindex_search_with(se->index, q, want, NULL, &req->knobs, scores, ids, &n_found, err);
        if (st != IMS_OK)
            goto out;
    } else if (v_count > 0 &&
        !search__hits_get(se->hits, q, want, v_gen, scores, ids, &n_found)) {
        st = vindex_search(se->index, q, want, scores, ids, &n_found, err);
        if (st != IMS_OK)
            goto out;
        search__hits_put(se->hits, q, want, v_gen, scores, ids, n_found);
    }
    if (n_found > 0) {
        st = store_get_many(se->store, ids, (size_t)n_found, 0, rows, found, err);
        if (st != IMS_OK)
            goto out;
        rows_loaded = 1;
    }
    /* the cut set: live rows above min_score, best first */
    for (int i = 0; i < n_found; i++) {
        if (!found[i])
            continue; /* deleted after the index saw it */
        if (req->has_min_score && scores[i] < req->min_score)
            continue;
        hits[n_hits].row = rows[i];
        hits[n_hits].score = scores[i];
        memset(&rows[i], 0, sizeof(rows[i]));
        n_hits++;
    }
    if (req->order == SEARCH_ORDER_DATE)
        qsort(hits, n_hits, sizeof(*hits), by_date_desc);
    /* the page */
    size_t first = IMS_MIN((size_t)req->offset, n_hits);
    size_t n_page = IMS_MIN((size_t)req->k, n_hits - first);
    for (size_t i = 0; i < first; i++)
        search__hit_fini(&hits[i]);
    for (size_t i = first + n_page; i < n_hits; i++)
        search__hit_fini(&hits[i]);
    memmove(hits, hits + first, n_page * sizeof(*hits));
    resp->hits = hits;
    resp->n = n_page;
    resp->took_ms = (ims_now() - t0) * 1000.0;
    hits = NULL;
    n_hits = 0;
out:
    if (rows_loaded)
        for (int i = 0; i < n_found; i++)
            store_row_fini(&rows[i]);
    if (hits)
        for (size_t i = 0; i < n_hits; i++)
            search__hit_fini(&hits[i]);
    ims_free(hits);
    ims_free(q);
    ims_free(e);
    ims_free(scores);
    ims_free(ids);
    ims_free(rows);
    ims_free(found);
    return st;
}

void search_get_counters(struct search_engine *se, struct search_counters *out)
{
    uint64_t hits, misses;
    size_t used;
    search__cache_stats(se->cache, &hits, &misses, &used);
    out->queries = atomic_load(&se->queries);
    out->cache_hits = hits;
    out->cache_misses = misses;
    out->text_encodes = atomic_load(&se->text_encodes);
    out->image_encodes = atomic_load(&se->image_encodes);
    out->text_encode_seconds = (double)atomic_load(&se->text_ns) * 1e-9;
    out->image_encode_seconds = (double)atomic_load(&se->image_ns) * 1e-9;
}

struct vindex *search__index(struct search_engine *se) { return se->index; }
struct store *search__store(struct search_engine *se) { return se->store; }
