/* SPDX-License-Identifier: MIT */
/*
 * store.c: the public face of the catalogue. It picks the backend from the
 * catalogue location (a data folder's SQLite file, or a postgresql:// URL),
 * holds the checks both backends share (row validation, job and node ids,
 * URL password masking), and dispatches every operation through the
 * backend's vtable (struct store_ops, store_int.h). Neither SQLite nor libpq
 * types appear here or in store.h.
 */

#include "store_int.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- shared helpers ----------------------------------------------------------- */

int64_t store__unix_now(void) { return (int64_t)time(NULL); }

int64_t store__unix_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int store__vec_finite(const float *v, uint32_t dim, uint32_t *bad)
{
    for (uint32_t i = 0; i < dim; i++) {
        if (!isfinite(v[i])) {
            *bad = i;
            return 0;
        }
    }
    return 1;
}

static enum ims_status check_text(const char *t, size_t max, size_t row, const char *what,
                                  int required, struct ims_error *err)
{
    if (!t) {
        if (required)
            return ims_error_set(err, IMS_ERR_INVALID, "row %zu: %s is missing", row, what);
        return IMS_OK;
    }
    size_t n = strnlen(t, max + 1);
    if (required && n == 0)
        return ims_error_set(err, IMS_ERR_INVALID, "row %zu: %s is empty", row, what);
    if (n > max)
        return ims_error_set(err, IMS_ERR_INVALID, "row %zu: %s is longer than %zu bytes", row,
                             what, max);
    return IMS_OK;
}

enum ims_status store__validate_row(const struct store *store, const struct store_new_image *r,
                                    size_t i, struct ims_error *err)
{
    enum ims_status s;
    if ((s = check_text(r->source, STORE_SOURCE_MAX_BYTES, i, "source", 1, err)) != IMS_OK ||
        (s = check_text(r->format, STORE_FORMAT_MAX_BYTES, i, "format", 0, err)) != IMS_OK ||
        (s = check_text(r->caption, STORE_CAPTION_MAX_BYTES, i, "caption", 0, err)) != IMS_OK ||
        (s = check_text(r->metadata, STORE_METADATA_MAX_BYTES, i, "metadata", 0, err)) != IMS_OK)
        return s;
    IMS_RETURN_ERROR_IF(!r->embedding, err, IMS_ERR_INVALID, "row %zu (%s): no embedding", i,
                        r->source);
    IMS_RETURN_ERROR_IF(r->dim != store->dim, err, IMS_ERR_INVALID,
                        "row %zu (%s): embedding has %u floats, the catalogue's model '%s' "
                        "has %u",
                        i, r->source, r->dim, store->model_name, store->dim);
    uint32_t bad = 0;
    IMS_RETURN_ERROR_IF(!store__vec_finite(r->embedding, r->dim, &bad), err, IMS_ERR_INVALID,
                        "row %zu (%s): embedding[%u] is not a finite number", i, r->source, bad);
    IMS_RETURN_ERROR_IF(r->thumbnail_bytes > STORE_THUMBNAIL_MAX_BYTES, err, IMS_ERR_INVALID,
                        "row %zu (%s): thumbnail of %zu bytes exceeds %u", i, r->source,
                        r->thumbnail_bytes, (unsigned)STORE_THUMBNAIL_MAX_BYTES);
    IMS_RETURN_ERROR_IF(r->thumbnail_bytes > 0 && !r->thumbnail, err, IMS_ERR_INVALID,
                        "row %zu (%s): thumbnail size without bytes", i, r->source);
    IMS_RETURN_ERROR_IF(r->bytes < 0 || r->added < 0, err, IMS_ERR_INVALID,
                        "row %zu (%s): negative size or time", i, r->source);
    IMS_RETURN_ERROR_IF(r->id < 0, err, IMS_ERR_INVALID, "row %zu (%s): negative id %lld", i,
                        r->source, (long long)r->id);
    return IMS_OK;
}

static enum ims_status check_ascii_id(const char *id, size_t max, const char *what,
                                      struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!id || !id[0], err, IMS_ERR_INVALID, "%s is empty", what);
    size_t n = strnlen(id, max + 1);
    IMS_RETURN_ERROR_IF(n > max, err, IMS_ERR_INVALID, "%s is longer than %zu bytes", what, max);
    for (size_t i = 0; i < n; i++)
        IMS_RETURN_ERROR_IF(id[i] < 0x21 || id[i] > 0x7e, err, IMS_ERR_INVALID,
                            "%s has a byte that is not printable ASCII at %zu", what, i);
    return IMS_OK;
}

enum ims_status store__check_job_id(const char *id, struct ims_error *err)
{
    return check_ascii_id(id, STORE_JOB_ID_MAX_BYTES, "job id", err);
}

enum ims_status store__check_node_id(const char *id, struct ims_error *err)
{
    return check_ascii_id(id, STORE_NODE_ID_MAX_BYTES, "node id", err);
}

/* ---- catalogue location -------------------------------------------------------- */

int store_catalogue_is_url(const char *c)
{
    return c && (strncmp(c, "postgresql://", 13) == 0 || strncmp(c, "postgres://", 11) == 0);
}

/* Masks the password of a URL "scheme://user:password@host..." and any
 * "password=..." query parameter. */
void store_catalogue_display(const char *c, char *out, size_t cap)
{
    if (!out || cap == 0)
        return;
    out[0] = '\0';
    if (!c)
        return;
    size_t o = 0;
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o + 1 < cap)                                                                           \
            out[o++] = (ch);                                                                       \
    } while (0)
    const char *p = c;
    const char *auth = strstr(c, "://");
    const char *auth_end = NULL, *colon = NULL;
    if (auth) {
        auth += 3;
        /* the userinfo ends at the last '@' before the first '/', '?' or '#' */
        const char *stop = auth + strcspn(auth, "/?#");
        for (const char *q = auth; q < stop; q++)
            if (*q == '@')
                auth_end = q;
        if (auth_end) {
            colon = memchr(auth, ':', (size_t)(auth_end - auth));
        }
    }
    while (*p) {
        if (colon && p == colon) {
            PUT(':');
            PUT('*');
            PUT('*');
            PUT('*');
            p = auth_end;
            continue;
        }
        /* password=... in the query string */
        if (p > c && (p[-1] == '?' || p[-1] == '&') && strncasecmp(p, "password=", 9) == 0) {
            for (int k = 0; k < 9; k++)
                PUT(p[k]);
            PUT('*');
            PUT('*');
            PUT('*');
            p += 9;
            while (*p && *p != '&' && *p != '#')
                p++;
            continue;
        }
        PUT(*p);
        p++;
    }
    out[o] = '\0';
#undef PUT
}

enum ims_status store_open(const char *data_dir, const struct store_model_info *model,
                           unsigned flags, struct store **out, struct ims_error *err)
{
    return store__sq_open(data_dir, model, flags, out, err);
}

enum ims_status store_open_catalogue(const char *catalogue, const char *data_dir,
                                     const struct store_model_info *model, unsigned flags,
                                     struct store **out, struct ims_error *err)
{
    if (!catalogue || !catalogue[0])
        return store__sq_open(data_dir, model, flags, out, err);
    if (store_catalogue_is_url(catalogue))
        return store__pg_open(catalogue, model, flags, out, err);
    char shown[256];
    store_catalogue_display(catalogue, shown, sizeof(shown));
    return ims_error_set(err, IMS_ERR_INVALID,
                         "catalogue '%s' is not a postgresql:// or postgres:// URL (leave it "
                         "empty to use the data folder's catalogue.db)",
                         shown);
}

const char *store_backend_name(const struct store *store)
{
    return store ? store->ops->name : "none";
}

const char *store_location(const struct store *store)
{
    return store ? store->db_path : "";
}

void store_close(struct store *store)
{
    if (store) {
        store__rowcache_free(store->rc);
        store->rc = NULL;
        store->ops->close(store);
    }
}

/* ---- dispatch --------------------------------------------------------------------- */

#define NEED_STORE(fn) IMS_RETURN_ERROR_IF(!store, err, IMS_ERR_INVALID, #fn ": no store")

enum ims_status store_row_cache_set(struct store *store, size_t max_bytes, struct ims_error *err)
{
    NEED_STORE(store_row_cache_set);
    struct store__rowcache *rc = NULL;
    if (max_bytes > 0 && !(rc = store__rowcache_new(max_bytes)))
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory for the row cache");
    store__rowcache_free(store->rc);
    store->rc = rc;
    return IMS_OK;
}

void store_row_cache_evict(struct store *store, const int64_t *ids, size_t n)
{
    if (store)
        store__rowcache_evict(store->rc, ids, n);
}

void store_row_cache_get_stats(struct store *store, struct store_row_cache_stats *out)
{
    store__rowcache_stats(store ? store->rc : NULL, out);
}

enum ims_status store_model_get(struct store *store, char *name, size_t name_cap, uint32_t *dim,
                                struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !name || name_cap == 0 || !dim, err, IMS_ERR_INVALID,
                        "store_model_get: invalid arguments");
    return store->ops->model_get(store, name, name_cap, dim, err);
}

enum ims_status store_model_record(struct store *store, struct ims_error *err)
{
    NEED_STORE(store_model_record);
    return store->ops->model_record(store, err);
}

enum ims_status store_schema_version(struct store *store, int *version, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !version, err, IMS_ERR_INVALID,
                        "store_schema_version: invalid arguments");
    return store->ops->schema_version(store, version, err);
}

enum ims_status store_check(struct store *store, struct ims_error *err)
{
    NEED_STORE(store_check);
    return store->ops->check(store, err);
}

/* Once a write committed, the rows it changed leave the row cache. */
enum ims_status store_insert_many(struct store *store, const struct store_new_image *rows, size_t n,
                                  struct store_insert_result *results, struct ims_error *err)
{
    NEED_STORE(store_insert_many);
    enum ims_status s = store->ops->insert_many(store, rows, n, results, err);
    for (size_t i = 0; s == IMS_OK && store->rc && results && i < n; i++)
        if (results[i].outcome == STORE_COMPLETED)
            store__rowcache_evict(store->rc, &results[i].id, 1);
    return s;
}

enum ims_status store_insert_stream(struct store *store, size_t n_total, size_t chunk_rows,
                                    store_fill_fn fill, store_result_fn done, void *user,
                                    struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !fill, err, IMS_ERR_INVALID,
                        "store_insert_stream: invalid arguments");
    if (n_total == 0)
        return IMS_OK;
    if (chunk_rows == 0)
        chunk_rows = 1024;
    chunk_rows = IMS_MIN(chunk_rows, n_total); /* the backends see 1..n_total */
    enum ims_status s =
        store->ops->insert_stream(store, n_total, chunk_rows, fill, done, user, err);
    store__rowcache_evict(store->rc, NULL, 0); /* an import may complete any row */
    return s;
}

enum ims_status store_set_thumbnail(struct store *store, int64_t id, const void *jpeg,
                                    size_t n_bytes, struct ims_error *err)
{
    NEED_STORE(store_set_thumbnail);
    enum ims_status s = store->ops->set_thumbnail(store, id, jpeg, n_bytes, err);
    store__rowcache_evict(store->rc, &id, 1);
    return s;
}

enum ims_status store_set_details(struct store *store, int64_t id, const char *caption,
                                  int64_t added, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || id <= 0 || added < 0, err, IMS_ERR_INVALID,
                        "store_set_details: invalid arguments");
    IMS_RETURN_ERROR_IF(
        caption && strnlen(caption, STORE_CAPTION_MAX_BYTES + 1) > STORE_CAPTION_MAX_BYTES, err,
        IMS_ERR_INVALID, "caption is longer than %d bytes", STORE_CAPTION_MAX_BYTES);
    enum ims_status s = store->ops->set_details(store, id, caption, added, err);
    store__rowcache_evict(store->rc, &id, 1);
    return s;
}

enum ims_status store_set_embeddings(struct store *store, const int64_t *ids, const float *vectors,
                                     size_t n, uint8_t *exists, struct ims_error *err)
{
    NEED_STORE(store_set_embeddings);
    enum ims_status s = store->ops->set_embeddings(store, ids, vectors, n, exists, err);
    if (ids)
        store__rowcache_evict(store->rc, ids, n);
    return s;
}

enum ims_status store_delete_many(struct store *store, const int64_t *ids, size_t n,
                                  uint8_t *existed, struct ims_error *err)
{
    NEED_STORE(store_delete_many);
    enum ims_status s = store->ops->delete_many(store, ids, n, existed, err);
    if (ids)
        store__rowcache_evict(store->rc, ids, n);
    return s;
}

enum ims_status store_get_many(struct store *store, const int64_t *ids, size_t n, unsigned fields,
                               struct store_image_row *rows, uint8_t *found, struct ims_error *err)
{
    NEED_STORE(store_get_many);
    if (store->rc && !(fields & STORE_FIELD_EMBEDDING) && n > 0 && ids && rows && found)
        return store__rowcache_get_many(store, store->rc, ids, n, rows, found, err);
    return store->ops->get_many(store, ids, n, fields, rows, found, err);
}

enum ims_status store_find_by_source(struct store *store, const char *source, int64_t *id,
                                     struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !source || !source[0] || !id, err, IMS_ERR_INVALID,
                        "store_find_by_source: empty source");
    return store->ops->find_by_source(store, source, id, err);
}

enum ims_status store_find_by_sha256(struct store *store, const uint8_t sha256[32], int64_t *id,
                                     struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !sha256 || !id, err, IMS_ERR_INVALID,
                        "store_find_by_sha256: invalid arguments");
    return store->ops->find_by_sha256(store, sha256, id, err);
}

enum ims_status store_get_thumbnail(struct store *store, int64_t id, void **jpeg, size_t *n_bytes,
                                    struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !jpeg || !n_bytes, err, IMS_ERR_INVALID,
                        "store_get_thumbnail: invalid arguments");
    return store->ops->get_thumbnail(store, id, jpeg, n_bytes, err);
}

enum ims_status store_filter_ids(struct store *store, const struct store_filter *f, int64_t **ids,
                                 size_t *n, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !f || !ids || !n, err, IMS_ERR_INVALID,
                        "store_filter_ids: invalid arguments");
    IMS_RETURN_ERROR_IF((f->formats && strlen(f->formats) > 512) ||
                            (f->source_prefix && strlen(f->source_prefix) > 4096),
                        err, IMS_ERR_INVALID, "filter: format list or source prefix too long");
    /* both backends bind the same text parameters (NULL = no restriction) */
    char v[7][24];
    const char *p[STORE__FILTER_PARAMS] = {0};
    const int64_t *nums[4] = {f->has_added_from ? &f->added_from : NULL,
                              f->has_added_to ? &f->added_to : NULL,
                              f->has_taken_from ? &f->taken_from : NULL,
                              f->has_taken_to ? &f->taken_to : NULL};
    for (int i = 0; i < 4; i++)
        if (nums[i]) {
            snprintf(v[i], sizeof(v[i]), "%lld", (long long)*nums[i]);
            p[i] = v[i];
        }
    snprintf(v[4], sizeof(v[4]), "%u", f->min_width);
    snprintf(v[5], sizeof(v[5]), "%u", f->min_height);
    p[4] = v[4];
    p[5] = v[5];
    char fmts[520];
    if (f->formats && *f->formats) {
        snprintf(fmts, sizeof(fmts), ",%s,", f->formats);
        p[6] = fmts;
    }
    static const char *const orient[] = {"0", "1", "2", "3"};
    p[7] = orient[(unsigned)f->orientation <= 3 ? f->orientation : 0];
    p[8] = f->source_prefix && *f->source_prefix ? f->source_prefix : NULL;
    char *tags = NULL;
    size_t n_keys = 0;
    enum ims_status s = store__tags_filter_json(f, &tags, &n_keys, err);
    if (s != IMS_OK)
        return s;
    snprintf(v[6], sizeof(v[6]), "%zu", n_keys);
    p[9] = tags;
    p[10] = tags ? v[6] : NULL;
    *ids = NULL;
    *n = 0;
    s = store->ops->filter_ids(store, p, ids, n, err);
    ims_free(tags);
    return s;
}

enum ims_status store_count(struct store *store, int64_t *n, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !n, err, IMS_ERR_INVALID, "store_count: invalid arguments");
    return store->ops->count(store, n, err);
}

enum ims_status store_max_id(struct store *store, int64_t *id, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !id, err, IMS_ERR_INVALID, "store_max_id: invalid arguments");
    return store->ops->max_id(store, id, err);
}

enum ims_status store_list(struct store *store, enum store_order order, int64_t offset,
                           int64_t limit, struct store_image_row **rows, size_t *n,
                           struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !rows || !n || offset < 0 || limit < 0, err, IMS_ERR_INVALID,
                        "store_list: invalid arguments");
    IMS_RETURN_ERROR_IF((unsigned)order > STORE_ORDER_ID_AFTER, err, IMS_ERR_INVALID,
                        "store_list: unknown order %d", (int)order);
    return store->ops->list(store, order, offset, limit, rows, n, err);
}

enum ims_status store_scan_embeddings(struct store *store, int64_t after_id, size_t chunk_rows,
                                      store_scan_fn fn, void *user, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !fn, err, IMS_ERR_INVALID, "store_scan_embeddings: no callback");
    return store->ops->scan_embeddings(store, after_id, chunk_rows, fn, user, err);
}

enum ims_status store_restore_many(struct store *store, const struct store_restore_row *rows,
                                   size_t n, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || (n > 0 && !rows), err, IMS_ERR_INVALID,
                        "store_restore_many: invalid arguments");
    for (size_t i = 0; i < n; i++) {
        const struct store_image_row *r = rows[i].row;
        IMS_RETURN_ERROR_IF(!r || r->id < 1 || !r->source || !r->source[0] || !r->model ||
                                !r->model[0],
                            err, IMS_ERR_INVALID, "row %zu: id, source and model are required",
                            i);
        IMS_RETURN_ERROR_IF(i > 0 && r->id <= rows[i - 1].row->id, err, IMS_ERR_INVALID,
                            "row %zu (id %lld): ids must ascend", i, (long long)r->id);
        struct store_new_image v = {
            .source = r->source, .format = r->format, .caption = r->caption,
            .metadata = r->metadata, .embedding = r->embedding, .dim = r->dim,
            .thumbnail = rows[i].thumbnail, .thumbnail_bytes = rows[i].thumbnail_bytes,
            .bytes = r->bytes, .added = r->added,
        };
        enum ims_status s = store__validate_row(store, &v, i, err);
        if (s != IMS_OK)
            return s;
    }
    if (n == 0)
        return IMS_OK;
    return store->ops->restore_many(store, rows, n, err);
}

enum ims_status store_deleted_seq(struct store *store, int64_t *seq, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !seq, err, IMS_ERR_INVALID,
                        "store_deleted_seq: invalid arguments");
    return store->ops->deleted_seq(store, seq, err);
}

enum ims_status store_deleted_after(struct store *store, int64_t after_seq, size_t max_n,
                                    int64_t **ids, size_t *n, int64_t *last_seq,
                                    struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !ids || !n || !last_seq || max_n == 0 || max_n > (1u << 26), err,
                        IMS_ERR_INVALID, "store_deleted_after: invalid arguments");
    return store->ops->deleted_after(store, after_seq, max_n, ids, n, last_seq, err);
}

/* ---- change feed ------------------------------------------------------------------- */

const char *store_change_kind_name(enum store_change_kind k)
{
    switch (k) {
    case STORE_CHANGE_INSERT:
        return "insert";
    case STORE_CHANGE_DELETE:
        return "delete";
    case STORE_CHANGE_UPDATE:
        return "update";
    case STORE_CHANGE_ROW:
        return "row";
    }
    return "unknown";
}

enum ims_status store_change_seq(struct store *store, int64_t *seq, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !seq, err, IMS_ERR_INVALID,
                        "store_change_seq: invalid arguments");
    return store->ops->change_seq(store, seq, err);
}

enum ims_status store_changes_after(struct store *store, int64_t after_seq, size_t max_n,
                                    struct store_change *out, size_t *n, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !out || !n || max_n == 0 || max_n > (1u << 24) || after_seq < 0,
                        err, IMS_ERR_INVALID, "store_changes_after: invalid arguments");
    return store->ops->changes_after(store, after_seq, max_n, out, n, err);
}

enum ims_status store_change_floor(struct store *store, int64_t *floor, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !floor, err, IMS_ERR_INVALID,
                        "store_change_floor: invalid arguments");
    return store->ops->change_floor(store, floor, err);
}

enum ims_status store_change_trim(struct store *store, int64_t upto, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || upto < 0, err, IMS_ERR_INVALID,
                        "store_change_trim: invalid arguments");
    return store->ops->change_trim(store, upto, err);
}

enum ims_status store_embeddings_changed_after(struct store *store, int64_t after_seq,
                                               int64_t **ids, size_t *n, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !ids || !n || after_seq < 0, err, IMS_ERR_INVALID,
                        "store_embeddings_changed_after: invalid arguments");
    return store->ops->embeddings_changed_after(store, after_seq, ids, n, err);
}

enum ims_status store_wait_change(struct store *store, int64_t known_seq, int timeout_ms,
                                  int64_t *seq_now, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !seq_now || timeout_ms < 0, err, IMS_ERR_INVALID,
                        "store_wait_change: invalid arguments");
    return store->ops->wait_change(store, known_seq, timeout_ms, seq_now, err);
}

/* ---- jobs ---------------------------------------------------------------------------- */

enum ims_status store_job_create(struct store *store, const char *id, int64_t total,
                                 struct ims_error *err)
{
    NEED_STORE(store_job_create);
    enum ims_status s = store__check_job_id(id, err);
    if (s != IMS_OK)
        return s;
    IMS_RETURN_ERROR_IF(total < 0, err, IMS_ERR_INVALID, "job %s: negative total", id);
    return store->ops->job_create(store, id, total, err);
}

enum ims_status store_job_update(struct store *store, const char *id, enum store_job_state state,
                                 int64_t done, int64_t failed, struct ims_error *err)
{
    NEED_STORE(store_job_update);
    return store->ops->job_update(store, id, state, done, failed, err);
}

enum ims_status store_job_add_errors(struct store *store, const char *id, const char *const *urls,
                                     const char *const *codes, const char *const *errors, size_t n,
                                     struct ims_error *err)
{
    NEED_STORE(store_job_add_errors);
    return store->ops->job_add_errors(store, id, urls, codes, errors, n, err);
}

enum ims_status store_job_get(struct store *store, const char *id, struct store_job *job,
                              struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !job, err, IMS_ERR_INVALID, "store_job_get: invalid arguments");
    return store->ops->job_get(store, id, job, err);
}

enum ims_status store_job_fail_unfinished(struct store *store, int64_t *n, struct ims_error *err)
{
    NEED_STORE(store_job_fail_unfinished);
    return store->ops->job_fail_unfinished(store, n, err);
}

enum ims_status store_job_add_items(struct store *store, const char *id, const char *const *sources,
                                    size_t n, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || (n > 0 && !sources), err, IMS_ERR_INVALID,
                        "store_job_add_items: invalid arguments");
    enum ims_status s = store__check_job_id(id, err);
    if (s != IMS_OK)
        return s;
    for (size_t i = 0; i < n; i++) {
        size_t len = sources[i] ? strnlen(sources[i], STORE_SOURCE_MAX_BYTES + 1) : 0;
        IMS_RETURN_ERROR_IF(len == 0 || len > STORE_SOURCE_MAX_BYTES, err, IMS_ERR_INVALID,
                            "job %s: item %zu: the source must have 1..%d bytes", id, i,
                            STORE_SOURCE_MAX_BYTES);
    }
    return store->ops->job_add_items(store, id, sources, n, err);
}

enum ims_status store_job_seal(struct store *store, const char *id, struct ims_error *err)
{
    NEED_STORE(store_job_seal);
    enum ims_status s = store__check_job_id(id, err);
    if (s != IMS_OK)
        return s;
    return store->ops->job_seal(store, id, err);
}

enum ims_status store_job_claim(struct store *store, const char *node_id, size_t max_n,
                                int64_t lease_ms, struct store_job_item **items, size_t *n,
                                struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !items || !n, err, IMS_ERR_INVALID,
                        "store_job_claim: invalid arguments");
    enum ims_status s = store__check_node_id(node_id, err);
    if (s != IMS_OK)
        return s;
    IMS_RETURN_ERROR_IF(max_n == 0 || max_n > STORE_JOB_CLAIM_MAX, err, IMS_ERR_INVALID,
                        "store_job_claim: max_n must be 1..%d", STORE_JOB_CLAIM_MAX);
    IMS_RETURN_ERROR_IF(lease_ms < 1 || lease_ms > (int64_t)86400000 * 7, err, IMS_ERR_INVALID,
                        "store_job_claim: lease of %lld ms is out of range",
                        (long long)lease_ms);
    return store->ops->job_claim(store, node_id, max_n, lease_ms, items, n, err);
}

void store_job_items_free(struct store_job_item *items, size_t n)
{
    if (!items)
        return;
    for (size_t i = 0; i < n; i++)
        ims_free(items[i].source);
    ims_free(items);
}

enum ims_status store_job_renew(struct store *store, const char *node_id, const int64_t *item_ids,
                                size_t n, int64_t lease_ms, uint8_t *renewed, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || (n > 0 && !item_ids), err, IMS_ERR_INVALID,
                        "store_job_renew: invalid arguments");
    enum ims_status s = store__check_node_id(node_id, err);
    if (s != IMS_OK)
        return s;
    IMS_RETURN_ERROR_IF(lease_ms < 1 || lease_ms > (int64_t)86400000 * 7, err, IMS_ERR_INVALID,
                        "store_job_renew: lease of %lld ms is out of range",
                        (long long)lease_ms);
    if (n == 0)
        return IMS_OK;
    return store->ops->job_renew(store, node_id, item_ids, n, lease_ms, renewed, err);
}

enum ims_status store_job_item_outcome(struct store *store, int64_t item_id,
                                       enum store_item_outcome *outcome, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !outcome, err, IMS_ERR_INVALID,
                        "store_job_item_outcome: invalid arguments");
    int o = -1;
    enum ims_status s = store->ops->job_item_outcome(store, item_id, &o, err);
    if (s == IMS_OK && o < 0)
        s = ims_error_set(err, IMS_ERR_BUSY, "job item %lld is not finished",
                          (long long)item_id);
    if (s == IMS_OK)
        *outcome = (enum store_item_outcome)o;
    return s;
}

enum ims_status store_job_release_node(struct store *store, const char *node_id, int64_t *n,
                                       struct ims_error *err)
{
    NEED_STORE(store_job_release_node);
    enum ims_status s = store__check_node_id(node_id, err);
    if (s != IMS_OK)
        return s;
    return store->ops->job_release_node(store, node_id, n, err);
}

enum ims_status store_job_finish(struct store *store, const char *node_id,
                                 const struct store_item_result *results, size_t n,
                                 uint8_t *accepted, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || (n > 0 && !results), err, IMS_ERR_INVALID,
                        "store_job_finish: invalid arguments");
    enum ims_status s = store__check_node_id(node_id, err);
    if (s != IMS_OK)
        return s;
    for (size_t i = 0; i < n; i++)
        IMS_RETURN_ERROR_IF((unsigned)results[i].outcome > STORE_ITEM_ERROR, err,
                            IMS_ERR_INVALID, "store_job_finish: result %zu: unknown outcome %d",
                            i, (int)results[i].outcome);
    if (n == 0)
        return IMS_OK;
    return store->ops->job_finish(store, node_id, results, n, accepted, err);
}

/* The item results of an insert: ADDED or DUPLICATE with the row's id. */
static size_t item_results(const struct store_insert_result *res, const int64_t *item_ids,
                           size_t n, struct store_item_result *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (item_ids[i] <= 0)
            continue;
        out[k] = (struct store_item_result){0};
        out[k].item_id = item_ids[i];
        out[k].outcome = res[i].outcome == STORE_INSERTED || res[i].outcome == STORE_COMPLETED
                             ? STORE_ITEM_ADDED
                             : STORE_ITEM_DUPLICATE;
        out[k].image_id = res[i].id;
        k++;
    }
    return k;
}

enum ims_status store_insert_finish(struct store *store, const struct store_new_image *rows,
                                    size_t n, struct store_insert_result *results,
                                    const char *node_id, const int64_t *item_ids,
                                    struct ims_error *err)
{
    NEED_STORE(store_insert_finish);
    IMS_RETURN_ERROR_IF(!item_ids || !results, err, IMS_ERR_INVALID,
                        "store_insert_finish: invalid arguments");
    enum ims_status s = store__check_node_id(node_id, err);
    if (s != IMS_OK)
        return s;
    struct store_item_result *ir = ims_malloc((n ? n : 1) * sizeof(*ir));
    if (!ir)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_insert_finish: out of memory");
    if (store->ops->insert_finish) {
        s = store->ops->insert_finish(store, rows, n, results, node_id, item_ids, ir, err);
    } else {
        s = store->ops->insert_many(store, rows, n, results, err);
        size_t k = s == IMS_OK ? item_results(results, item_ids, n, ir) : 0;
        if (k > 0)
            s = store->ops->job_finish(store, node_id, ir, k, NULL, err);
    }
    ims_free(ir);
    for (size_t i = 0; s == IMS_OK && store->rc && i < n; i++)
        if (results[i].outcome == STORE_COMPLETED)
            store__rowcache_evict(store->rc, &results[i].id, 1);
    return s;
}

size_t store__item_results(const struct store_insert_result *res, const int64_t *item_ids,
                           size_t n, struct store_item_result *out)
{
    return item_results(res, item_ids, n, out);
}

enum ims_status store_job_item_get(struct store *store, int64_t item_id,
                                   enum store_item_state *state, char *node, size_t node_cap,
                                   int *attempts, int64_t *image_id, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !state || !node || node_cap == 0 || !attempts || !image_id, err,
                        IMS_ERR_INVALID, "store_job_item_get: invalid arguments");
    return store->ops->job_item_get(store, item_id, state, node, node_cap, attempts, image_id, err);
}
