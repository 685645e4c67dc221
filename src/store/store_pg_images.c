/* SPDX-License-Identifier: MIT */
/*
 * store_pg_images.c: the PostgreSQL backend's image rows, embeddings
 * (bytea, dim float32 little-endian), thumbnails, deletion log and scans.
 * Same semantics as store_images.c (docs/internals/store.md): dedup by
 * source then content hash, under the advisory write lock so two nodes
 * racing on one image store it once; INSERT ... ON CONFLICT DO NOTHING
 * reports the existing row as the duplicate if a race slips through.
 */
#include "store_pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "the PostgreSQL backend stores little-endian floats; add a byte swap for this host"
#endif

static enum ims_status put_thumb(PGconn *c, int64_t id, const void *b, size_t n,
                                 struct ims_error *err)
{
    struct pgp p = {0};
    store__pgp_i64(&p, id);
    store__pgp_bytea(&p, b, n);
    return store__pg_x(
        c,
        "INSERT INTO thumbnails(image_id, jpeg) VALUES($1, $2) ON CONFLICT (image_id) "
        "DO UPDATE SET jpeg = excluded.jpeg",
        &p, err, "store thumbnail");
}

/* Row `i` of a batch: IMS_ERR_INVALID when its metadata (not NULL) is not
 * JSON the server accepts (checked before anything is written: a failed
 * cast in a write would abort the whole transaction). */
static enum ims_status check_metadata(PGconn *c, const char *metadata, size_t i,
                                      const char *source, struct ims_error *err)
{
    struct pgp p = {0};
    store__pgp_text(&p, metadata);
    int64_t ok = 0;
    enum ims_status s =
        store__pg_q1(c, "SELECT ims_json_valid($1)::int::int8", &p, NULL, &ok, err, "look up");
    if (s == IMS_OK && !ok)
        s = ims_error_set(err, IMS_ERR_INVALID, "row %zu (%s): metadata is not valid JSON", i,
                          source);
    return s;
}

/* Locks image `id`'s row for the rest of the transaction on c (FOR UPDATE
 * when `update`, else FOR SHARE); IMS_ERR_NOT_FOUND when there is none. */
static enum ims_status lock_image(PGconn *c, int64_t id, int update, struct ims_error *err)
{
    struct pgp p = {0};
    store__pgp_i64(&p, id);
    int found = 0;
    enum ims_status s = store__pg_q1(c,
                                     update ? "SELECT id FROM images WHERE id = $1 FOR UPDATE"
                                            : "SELECT id FROM images WHERE id = $1 FOR SHARE",
                                     &p, &found, NULL, err, "look up");
    if (s == IMS_OK && !found)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "image %lld does not exist", (long long)id);
    return s;
}

/* ---- batch insert ----------------------------------------------------------------------
 *
 * One batch = a handful of round trips whatever its size: the batch's keys
 * go as two array parameters, two joins find every existing row by source
 * and by hash (index probes), the outcomes are decided in row order in memory (a
 * hash set finds repeats inside the batch), ids come from the sequence in
 * one query, and the new rows, embeddings, thumbnails and changes go in by
 * COPY. All under the advisory write lock, so no other node's insert can
 * slip between the lookups and the writes. */

enum plan { P_NEW, P_DUP_SOURCE, P_DUP_SHA, P_COMPLETE };

struct bset { /* open addressing over row indexes; key = source or sha256 */
    int32_t *slot;
    size_t mask;
};

/* Sends the three COPY buffers an insert or a restore built (images, then
 * embeddings, then thumbnails when there are any); every buffer is
 * released whatever happens. */
static enum ims_status copy_rows(PGconn *c, struct pgcopy *bi, struct pgcopy *be,
                                 struct pgcopy *bt, size_t n_thumbs, struct ims_error *err)
{
    enum ims_status s =
        store__pgc_send(c,
                        "COPY images(id, source, sha256, format, width, height, bytes, "
                        "added, caption, metadata, model) FROM STDIN (FORMAT binary)",
                        bi, err);
    if (s == IMS_OK)
        s = store__pgc_send(c, "COPY embeddings(image_id, vec) FROM STDIN (FORMAT binary)", be,
                            err);
    else
        ims_free(be->p);
    if (s == IMS_OK && n_thumbs > 0)
        s = store__pgc_send(c, "COPY thumbnails(image_id, jpeg) FROM STDIN (FORMAT binary)", bt,
                            err);
    else
        ims_free(bt->p);
    return s;
}

static uint64_t fnv(const void *p, size_t n) { return ims_fnv1a64(p, n); }

static int bset_init(struct bset *s, size_t n)
{
    size_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    s->slot = ims_malloc(cap * sizeof(*s->slot));
    if (!s->slot)
        return -1;
    for (size_t i = 0; i < cap; i++)
        s->slot[i] = -1;
    s->mask = cap - 1;
    return 0;
}

/* Finds the row whose key equals key(row `i`) (by_sha: the hash); inserts
 * i when `add` and absent. Returns the found row or -1. */
static int32_t bset_find(struct bset *s, const struct store_new_image *rows, int32_t i,
                         int by_sha, int add)
{
    const void *k = by_sha ? (const void *)rows[i].sha256 : (const void *)rows[i].source;
    size_t kn = by_sha ? 32 : strlen(rows[i].source);
    for (size_t h = fnv(k, kn) & s->mask;; h = (h + 1) & s->mask) {
        int32_t j = s->slot[h];
        if (j < 0) {
            if (add)
                s->slot[h] = i;
            return -1;
        }
        if (by_sha ? !memcmp(rows[j].sha256, k, 32) : !strcmp(rows[j].source, k))
            return j;
    }
}

/* Inserts rows[0..n) inside the caller's write transaction on c (advisory
 * lock held); `first` numbers the rows in messages. results[n] is filled. */
static enum ims_status insert_batch(struct store *store, PGconn *c,
                                    const struct store_new_image *rows, size_t n, size_t first,
                                    struct store_insert_result *results, struct ims_error *err)
{
    struct store_insert_result *res = results;
    int64_t *src_id = ims_malloc(n * sizeof(*src_id)), *sha_id = ims_malloc(n * sizeof(*sha_id));
    uint8_t *nodata = ims_calloc(n, 1), *plan = ims_calloc(n, 1);
    int32_t *ref = ims_malloc(n * sizeof(*ref));
    int64_t *new_ids = ims_malloc(n * sizeof(*new_ids));
    struct bset by_src = {0}, by_sha = {0};
    PGresult *r = NULL;
    enum ims_status s = IMS_OK;
    memset(res, 0, n * sizeof(*res));
    if (!src_id || !sha_id || !nodata || !plan || !ref || !new_ids ||
        bset_init(&by_src, n) || bset_init(&by_sha, n)) {
        s = ims_error_set(err, IMS_ERR_NOMEM, "store_insert_many: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        src_id[i] = sha_id[i] = -1;
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        s = store__validate_row(store, &rows[i], first + i, err);
        if (s == IMS_OK && rows[i].metadata)
            s = check_metadata(c, rows[i].metadata, first + i, rows[i].source, err);
    }
    if (s != IMS_OK)
        goto out;
    /* 1. lookups: the batch's sources and hashes as two array parameters,
     * joined on the unique indexes (one index probe per row), in one
     * statement (the first column says which) */
    struct pgcopy as, ah;
    store__pga_begin(&as, 25, n);
    store__pga_begin(&ah, 17, n);
    for (size_t i = 0; i < n; i++) {
        store__pgc_text(&as, rows[i].source);
        store__pgc_bytes(&ah, rows[i].sha256, 32);
    }
    if (as.oom || ah.oom)
        s = ims_error_set(err, IMS_ERR_NOMEM, "store_insert_many: out of memory");
    if (s == IMS_OK) {
        struct pgp p = {0};
        store__pgp_raw(&p, as.p, as.n, 1009); /* text[] */
        store__pgp_raw(&p, ah.p, ah.n, 1001); /* bytea[] */
        s = store__pg_q(
            c,
            "SELECT 0::int8, b.k - 1, i.id, (i.sha256 IS NULL)::int::int8 FROM "
            "unnest($1::text[]) WITH ORDINALITY AS b(source, k) JOIN images i ON i.source "
            "= b.source UNION ALL SELECT 1::int8, b.k - 1, i.id, 0::int8 FROM "
            "unnest($2::bytea[]) WITH ORDINALITY AS b(sha, k) JOIN images i ON i.sha256 = "
            "b.sha WHERE b.sha IS NOT NULL",
            &p, &r, err, "look up sources and hashes");
    }
    ims_free(as.p);
    ims_free(ah.p);
    for (int k = 0; s == IMS_OK && k < PQntuples(r); k++) {
        int64_t i = store__pg_i64(r, k, 1);
        if (i < 0 || (size_t)i >= n)
            continue;
        if (store__pg_i64(r, k, 0) == 0) {
            src_id[i] = store__pg_i64(r, k, 2);
            nodata[i] = (uint8_t)store__pg_i64(r, k, 3);
        } else {
            sha_id[i] = store__pg_i64(r, k, 2);
        }
    }
    PQclear(r);
    r = NULL;
    if (s != IMS_OK)
        goto out;

    /* 2. outcomes, in row order; ref[i] = the batch row whose id i reports */
    size_t n_new = 0;
    for (int32_t i = 0; i < (int32_t)n; i++) {
        const struct store_new_image *row = &rows[i];
        int32_t j = bset_find(&by_src, rows, i, 0, 0);
        ref[i] = -1;
        if (src_id[i] >= 0) {
            res[i].id = src_id[i];
            plan[i] = P_DUP_SOURCE;
            if (j < 0 && nodata[i] && row->sha256 && sha_id[i] < 0 &&
                bset_find(&by_sha, rows, i, 1, 0) < 0) {
                plan[i] = P_COMPLETE;
                bset_find(&by_src, rows, i, 0, 1);
                bset_find(&by_sha, rows, i, 1, 1);
            }
        } else if (j >= 0) {
            plan[i] = P_DUP_SOURCE;
            ref[i] = j;
        } else if (row->sha256 && sha_id[i] >= 0) {
            plan[i] = P_DUP_SHA;
            res[i].id = sha_id[i];
        } else if (row->sha256 && (j = bset_find(&by_sha, rows, i, 1, 0)) >= 0) {
            plan[i] = P_DUP_SHA;
            ref[i] = j;
        } else {
            plan[i] = P_NEW;
            n_new += row->id == 0; /* explicit ids (repair) take no sequence value */
            bset_find(&by_src, rows, i, 0, 1);
            if (row->sha256)
                bset_find(&by_sha, rows, i, 1, 1);
        }
    }

    /* 3. ids for the new rows, in row order */
    if (n_new > 0) {
        struct pgp p = {0};
        store__pgp_i64(&p, (int64_t)n_new);
        s = store__pg_q(c,
                        "SELECT nextval(pg_get_serial_sequence('images', 'id')) FROM "
                        "generate_series(1, $1) ORDER BY 1",
                        &p, &r, err, "allocate ids");
        if (s == IMS_OK && (size_t)PQntuples(r) != n_new)
            s = ims_error_set(err, IMS_ERR_INTERNAL, "catalogue: id allocation came up short");
        for (size_t k = 0; s == IMS_OK && k < n_new; k++)
            new_ids[k] = store__pg_i64(r, (int)k, 0);
        PQclear(r);
        r = NULL;
    }
    if (s != IMS_OK)
        goto out;
    size_t k = 0, n_explicit = 0;
    for (size_t i = 0; i < n; i++) {
        if (plan[i] == P_NEW && rows[i].id > 0) {
            res[i].id = rows[i].id;
            n_explicit++;
        } else if (plan[i] == P_NEW)
            res[i].id = new_ids[k++];
        else if (ref[i] >= 0)
            res[i].id = res[ref[i]].id;
        res[i].outcome = plan[i] == P_NEW          ? STORE_INSERTED
                         : plan[i] == P_DUP_SOURCE ? STORE_DUP_SOURCE
                         : plan[i] == P_DUP_SHA    ? STORE_DUP_SHA256
                                                   : STORE_COMPLETED;
    }

    /* 4. writes */
    n_new += n_explicit;
    if (n_new > 0) {
        int64_t now = store__unix_now();
        struct pgcopy bi, be, bt;
        store__pgc_init(&bi);
        store__pgc_init(&be);
        store__pgc_init(&bt);
        size_t n_thumbs = 0;
        for (size_t i = 0; i < n; i++) {
            if (plan[i] != P_NEW)
                continue;
            const struct store_new_image *row = &rows[i];
            store__pgc_row(&bi, 11);
            store__pgc_i64(&bi, res[i].id);
            store__pgc_text(&bi, row->source);
            store__pgc_bytes(&bi, row->sha256, 32);
            store__pgc_text(&bi, row->format);
            store__pgc_i64(&bi, row->width);
            store__pgc_i64(&bi, row->height);
            store__pgc_i64(&bi, row->bytes);
            store__pgc_i64(&bi, row->added ? row->added : now);
            store__pgc_text(&bi, row->caption);
            store__pgc_text(&bi, row->metadata);
            store__pgc_text(&bi, store->model_name);
            store__pgc_row(&be, 2);
            store__pgc_i64(&be, res[i].id);
            store__pgc_bytes(&be, row->embedding, (size_t)row->dim * 4);
            if (row->thumbnail_bytes > 0) {
                store__pgc_row(&bt, 2);
                store__pgc_i64(&bt, res[i].id);
                store__pgc_bytes(&bt, row->thumbnail, row->thumbnail_bytes);
                n_thumbs++;
            }
        }
        s = copy_rows(c, &bi, &be, &bt, n_thumbs, err);
    }
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        if (plan[i] != P_COMPLETE)
            continue;
        const struct store_new_image *row = &rows[i];
        struct pgp u = {0};
        store__pgp_i64(&u, res[i].id);
        store__pgp_bytea(&u, row->sha256, 32);
        store__pgp_text(&u, row->format);
        store__pgp_i64(&u, row->width);
        store__pgp_i64(&u, row->height);
        store__pgp_i64(&u, row->bytes);
        s = store__pg_x(c,
                        "UPDATE images SET sha256 = $2, format = coalesce($3, format), width = $4, "
                        "height = $5, bytes = $6 WHERE id = $1",
                        &u, err, "complete row");
        if (s == IMS_OK && row->thumbnail_bytes > 0)
            s = put_thumb(c, res[i].id, row->thumbnail, row->thumbnail_bytes, err);
        if (s == IMS_OK) /* the row changed, not its embedding: row caches evict it */
            s = store__pg_log_changes(c, &res[i].id, 1, STORE_CHANGE_ROW, err);
    }
    if (s == IMS_OK && n_explicit > 0) /* the sequence must never hand out those ids */
        s = store__pg_x(c,
                        "SELECT setval('images_id_seq', greatest((SELECT max(id) FROM images), "
                        "(SELECT last_value FROM images_id_seq)))",
                        NULL, err, "move id counter");
    if (s == IMS_OK) {
        k = 0;
        for (size_t i = 0; i < n; i++)
            if (plan[i] == P_NEW)
                new_ids[k++] = res[i].id;
        s = store__pg_log_changes(c, new_ids, n_new, STORE_CHANGE_INSERT, err);
    }
out:
    ims_free(src_id);
    ims_free(sha_id);
    ims_free(nodata);
    ims_free(plan);
    ims_free(ref);
    ims_free(new_ids);
    ims_free(by_src.slot);
    ims_free(by_sha.slot);
    return s;
}

/* The insert of rows[0..n) and, when node_id is set, the finish of the job
 * items they came from (item_ids, ir: scratch of n), in one transaction:
 * the finish costs no BEGIN/COMMIT round trips of its own. */
static enum ims_status insert_and_finish(struct store *store, const struct store_new_image *rows,
                                         size_t n, struct store_insert_result *results,
                                         const char *node_id, const int64_t *item_ids,
                                         struct store_item_result *ir, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(n > 0 && (!rows || !results), err, IMS_ERR_INVALID,
                        "store_insert_many: invalid arguments");
    if (n == 0)
        return IMS_OK;
    IMS_RETURN_ERROR_IF(n > (1u << 24), err, IMS_ERR_INVALID,
                        "store_insert_many: batch of %zu rows is too large", n);
    for (size_t i = 0; i < n; i++) {
        enum ims_status v = store__validate_row(store, &rows[i], i, err);
        if (v != IMS_OK)
            return v;
    }
    struct store_insert_result *tmp = ims_malloc(n * sizeof(*tmp));
    if (!tmp)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_insert_many: out of memory");
    PGconn *c = NULL;
    enum ims_status s = store__pg_wbegin(store, &c, 1, err);
    if (s == IMS_OK) {
        s = insert_batch(store, c, rows, n, 0, tmp, err);
        size_t k = s == IMS_OK && node_id ? store__item_results(tmp, item_ids, n, ir) : 0;
        if (k > 0)
            s = store__pg_job_finish_in(c, node_id, ir, k, NULL, err);
        s = store__pg_wend(store, c, s, err);
    }
    if (s == IMS_OK)
        memcpy(results, tmp, n * sizeof(*tmp));
    ims_free(tmp);
    return s;
}

enum ims_status store__pg_insert_many(struct store *store, const struct store_new_image *rows,
                                      size_t n, struct store_insert_result *results,
                                      struct ims_error *err)
{
    return insert_and_finish(store, rows, n, results, NULL, NULL, NULL, err);
}

enum ims_status store__pg_insert_finish(struct store *store, const struct store_new_image *rows,
                                        size_t n, struct store_insert_result *results,
                                        const char *node_id, const int64_t *item_ids,
                                        struct store_item_result *ir, struct ims_error *err)
{
    return insert_and_finish(store, rows, n, results, node_id, item_ids, ir, err);
}

/* One attempt: store_pg.c runs it again when the server cut it, and fill
 * and done then start again from row 0 (store.h). */
enum ims_status store__pg_insert_stream(struct store *store, size_t n_total, size_t chunk_rows,
                                        store_fill_fn fill, store_result_fn done, void *user,
                                        struct ims_error *err)
{
    struct store_new_image *rows = ims_calloc(chunk_rows, sizeof(*rows));
    struct store_insert_result *res = ims_malloc(chunk_rows * sizeof(*res));
    PGconn *c = NULL;
    enum ims_status s = IMS_OK;
    if (!rows || !res) {
        s = ims_error_set(err, IMS_ERR_NOMEM, "store_insert_stream: out of memory");
        goto free;
    }
    s = store__pg_wbegin(store, &c, 1, err);
    if (s != IMS_OK)
        goto free;
    for (size_t first = 0; first < n_total && s == IMS_OK; first += chunk_rows) {
        size_t m = IMS_MIN(chunk_rows, n_total - first);
        memset(rows, 0, m * sizeof(*rows));
        if (fill(user, first, rows, m) != 0) {
            s = ims_error_set(err, IMS_ERR_CANCELLED,
                              "store_insert_stream: stopped at row %zu: nothing stored", first);
            break;
        }
        s = insert_batch(store, c, rows, m, first, res, err);
        if (s == IMS_OK && done)
            done(user, first, res, m);
    }
    s = store__pg_wend(store, c, s, err);
free:
    ims_free(rows);
    ims_free(res);
    return s;
}

enum ims_status store__pg_set_thumbnail(struct store *store, int64_t id, const void *jpeg, size_t n,
                                        struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!jpeg || n == 0, err, IMS_ERR_INVALID,
                        "store_set_thumbnail: no thumbnail bytes");
    IMS_RETURN_ERROR_IF(n > STORE_THUMBNAIL_MAX_BYTES, err, IMS_ERR_INVALID,
                        "store_set_thumbnail: %zu bytes exceeds %u", n,
                        (unsigned)STORE_THUMBNAIL_MAX_BYTES);
    PGconn *c = NULL;
    enum ims_status s = store__pg_wbegin(store, &c, 1, err);
    if (s != IMS_OK)
        return s;
    s = lock_image(c, id, 0, err);
    if (s == IMS_OK)
        s = put_thumb(c, id, jpeg, n, err);
    if (s == IMS_OK) /* has_thumbnail may change: row caches follow the feed */
        s = store__pg_log_changes(c, &id, 1, STORE_CHANGE_ROW, err);
    return store__pg_wend(store, c, s, err);
}

enum ims_status store__pg_set_details(struct store *store, int64_t id, const char *caption,
                                      int64_t added, struct ims_error *err)
{
    PGconn *c = NULL;
    /* the write lock: the change below takes a feed sequence number */
    enum ims_status s = store__pg_wbegin(store, &c, 1, err);
    if (s != IMS_OK)
        return s;
    struct pgp p = {0};
    store__pgp_i64(&p, id);
    store__pgp_text(&p, caption);
    store__pgp_i64(&p, added);
    int found = 0;
    s = store__pg_q1(c,
                     "UPDATE images SET caption = $2::text, added = $3 WHERE id = $1 RETURNING id",
                     &p, &found, NULL, err, "set caption and added");
    if (s == IMS_OK && !found)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "image %lld does not exist", (long long)id);
    if (s == IMS_OK) /* a row-only change, as in the SQLite twin */
        s = store__pg_log_changes(c, &id, 1, STORE_CHANGE_ROW, err);
    return store__pg_wend(store, c, s, err);
}

enum ims_status store__pg_set_embeddings(struct store *store, const int64_t *ids,
                                         const float *vectors, size_t n, uint8_t *exists,
                                         struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(n > 0 && (!ids || !vectors), err, IMS_ERR_INVALID,
                        "store_set_embeddings: invalid arguments");
    for (size_t i = 0; i < n; i++) {
        uint32_t bad = 0;
        IMS_RETURN_ERROR_IF(!store__vec_finite(vectors + i * store->dim, store->dim, &bad), err,
                            IMS_ERR_INVALID,
                            "store_set_embeddings: vector %zu: element %u is not finite", i, bad);
    }
    if (n == 0)
        return IMS_OK;
    int64_t *changed = ims_malloc(n * sizeof(*changed));
    if (!changed)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_set_embeddings: out of memory");
    size_t nc = 0;
    PGconn *c = NULL;
    enum ims_status s = store__pg_wbegin(store, &c, 1, err);
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        struct pgp p = {0};
        store__pgp_i64(&p, ids[i]);
        store__pgp_bytea(&p, vectors + i * store->dim, (size_t)store->dim * 4);
        store__pgp_text(&p, store->model_name);
        int found = 0;
        s = store__pg_q1(
            c,
            "WITH e AS (UPDATE embeddings SET vec = $2 WHERE image_id = $1 RETURNING "
            "image_id) UPDATE images SET model = $3 WHERE id IN (SELECT image_id FROM e) "
            "RETURNING id",
            &p, &found, NULL, err, "look up");
        if (exists)
            exists[i] = (uint8_t)found;
        if (found)
            changed[nc++] = ids[i];
    }
    if (c) {
        if (s == IMS_OK)
            s = store__pg_log_changes(c, changed, nc, STORE_CHANGE_UPDATE, err);
        s = store__pg_wend(store, c, s, err);
    }
    ims_free(changed);
    return s;
}

enum ims_status store__pg_delete_many(struct store *store, const int64_t *ids, size_t n,
                                      uint8_t *existed, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(n > 0 && !ids, err, IMS_ERR_INVALID,
                        "store_delete_many: invalid arguments");
    if (n == 0)
        return IMS_OK;
    int64_t *gone = ims_malloc(n * sizeof(*gone));
    if (!gone)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_delete_many: out of memory");
    size_t ng = 0;
    PGconn *c = NULL;
    enum ims_status s = store__pg_wbegin(store, &c, 1, err);
    int64_t now = store__unix_now();
    for (size_t i = 0; i < n && s == IMS_OK; i++) {
        struct pgp p = {0};
        store__pgp_i64(&p, ids[i]);
        int found = 0;
        s = store__pg_q1(c, "DELETE FROM images WHERE id = $1 RETURNING id", &p, &found, NULL, err,
                         "look up");
        if (existed)
            existed[i] = (uint8_t)found;
        if (s == IMS_OK && found) {
            gone[ng++] = ids[i];
            struct pgp l = {0};
            store__pgp_i64(&l, ids[i]);
            store__pgp_i64(&l, now);
            s = store__pg_x(c, "INSERT INTO deleted(image_id, time) VALUES($1, $2)", &l, err,
                            "log deletion");
        }
    }
    if (c) {
        if (s == IMS_OK)
            s = store__pg_log_changes(c, gone, ng, STORE_CHANGE_DELETE, err);
        s = store__pg_wend(store, c, s, err);
    }
    ims_free(gone);
    return s;
}

/* ---- rows -------------------------------------------------------------------------------- */

#define ROW_COLS                                                                                   \
    "i.id, i.source, i.sha256, i.format, i.width, i.height, i.bytes, i.added, i.caption, "        \
    "i.metadata, i.model, (t.image_id IS NOT NULL)::int::int8, i.taken, "                      \
    "(SELECT string_agg(g.tag, chr(31)) FROM image_tags g WHERE g.image_id = i.id)"
/* has_thumbnail by a join on the thumbnails key: an index probe per row
 * (an EXISTS subquery may be planned as a hash of the whole table) */
#define ROW_FROM " FROM images i LEFT JOIN thumbnails t ON t.image_id = i.id"

static char *dup_col(const PGresult *r, int row, int col, int *oom)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    char *p = ims_strndup(PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col));
    if (!p)
        *oom = 1;
    return p;
}

static enum ims_status row_from(const PGresult *r, int i, int emb_col,
                                struct store_image_row *row, struct ims_error *err)
{
    int oom = 0;
    store_row_init(row);
    row->id = store__pg_i64(r, i, 0);
    row->source = dup_col(r, i, 1, &oom);
    if (!PQgetisnull(r, i, 2) && PQgetlength(r, i, 2) == 32) {
        memcpy(row->sha256, PQgetvalue(r, i, 2), 32);
        row->has_sha256 = 1;
    }
    row->format = dup_col(r, i, 3, &oom);
    row->width = (uint32_t)store__pg_i64(r, i, 4);
    row->height = (uint32_t)store__pg_i64(r, i, 5);
    row->bytes = store__pg_i64(r, i, 6);
    row->added = store__pg_i64(r, i, 7);
    row->caption = dup_col(r, i, 8, &oom);
    row->metadata = dup_col(r, i, 9, &oom);
    row->model = dup_col(r, i, 10, &oom);
    row->has_thumbnail = (int)store__pg_i64(r, i, 11);
    row->has_taken = !PQgetisnull(r, i, 12);
    row->taken = row->has_taken ? store__pg_i64(r, i, 12) : 0;
    if (!PQgetisnull(r, i, 13) &&
        store__tags_parse(PQgetvalue(r, i, 13), (size_t)PQgetlength(r, i, 13), row) != 0)
        oom = 1;
    if (emb_col >= 0 && !PQgetisnull(r, i, emb_col)) {
        int nb = PQgetlength(r, i, emb_col);
        if (nb <= 0 || nb % 4 != 0) {
            store_row_fini(row);
            return ims_error_set(err, IMS_ERR_CORRUPT,
                                 "catalogue: embedding of image %lld has %d bytes",
                                 (long long)store__pg_i64(r, i, 0), nb);
        }
        row->dim = (uint32_t)(nb / 4);
        row->embedding = ims_malloc((size_t)nb);
        if (!row->embedding)
            oom = 1;
        else
            memcpy(row->embedding, PQgetvalue(r, i, emb_col), (size_t)nb);
    }
    if (oom || !row->source || !row->model) {
        store_row_fini(row);
        return ims_error_set(err, oom ? IMS_ERR_NOMEM : IMS_ERR_CORRUPT,
                             oom ? "catalogue: out of memory reading a row"
                                 : "catalogue: row without source or model");
    }
    return IMS_OK;
}

enum ims_status store__pg_get_many(struct store *store, const int64_t *ids, size_t n,
                                   unsigned fields, struct store_image_row *rows, uint8_t *found,
                                   struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(n > 0 && (!ids || !rows || !found), err, IMS_ERR_INVALID,
                        "store_get_many: invalid arguments");
    for (size_t i = 0; i < n; i++) {
        store_row_init(&rows[i]);
        found[i] = 0;
    }
    if (n == 0)
        return IMS_OK;
    /* one query for all ids: "{1,2,3}" as a bigint[] literal */
    char *lit = store__pg_int_array(n, store__pg_int_at, ids);
    if (!lit)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_get_many: out of memory");
    int emb = (fields & STORE_FIELD_EMBEDDING) != 0;
    PGresult *r = NULL;
    struct pgp p = {0};
    store__pgp_literal(&p, lit);
    enum ims_status s =
        store__pg_once(store,
                       emb ? "SELECT " ROW_COLS ", e.vec" ROW_FROM " LEFT JOIN embeddings e ON "
                             "e.image_id = i.id WHERE i.id = ANY($1::bigint[])"
                           : "SELECT " ROW_COLS ROW_FROM " WHERE i.id = ANY($1::bigint[])",
                       &p, &r, err, "read images");
    ims_free(lit);
    for (int k = 0; s == IMS_OK && k < PQntuples(r); k++) {
        int64_t id = store__pg_i64(r, k, 0);
        for (size_t i = 0; i < n && s == IMS_OK; i++) {
            if (ids[i] != id || found[i])
                continue;
            s = row_from(r, k, emb ? 14 : -1, &rows[i], err);
            found[i] = s == IMS_OK;
        }
    }
    PQclear(r);
    if (s != IMS_OK) {
        for (size_t i = 0; i < n; i++) {
            store_row_fini(&rows[i]);
            found[i] = 0;
        }
    }
    return s;
}

enum ims_status store__pg_find_by_source(struct store *store, const char *source, int64_t *id,
                                         struct ims_error *err)
{
    struct pgp p = {0};
    store__pgp_text(&p, source);
    int found = 0;
    enum ims_status s = store__pg_once1(store, "SELECT id FROM images WHERE source = $1", &p,
                                        &found, id, err, "look up");
    if (s == IMS_OK && !found)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "no image with source %s", source);
    return s;
}

enum ims_status store__pg_find_by_sha256(struct store *store, const uint8_t *sha, int64_t *id,
                                         struct ims_error *err)
{
    struct pgp p = {0};
    store__pgp_bytea(&p, sha, 32);
    int found = 0;
    enum ims_status s =
        store__pg_once1(store, "SELECT id FROM images WHERE sha256 = $1 ORDER BY id LIMIT 1", &p,
                        &found, id, err, "look up");
    if (s == IMS_OK && !found)
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "no image with that content hash");
    return s;
}

enum ims_status store__pg_get_thumbnail(struct store *store, int64_t id, void **jpeg,
                                        size_t *n_bytes, struct ims_error *err)
{
    PGresult *r = NULL;
    struct pgp p = {0};
    store__pgp_i64(&p, id);
    enum ims_status s = store__pg_once(store, "SELECT jpeg FROM thumbnails WHERE image_id = $1", &p,
                                       &r, err, "read thumbnail");
    if (s != IMS_OK)
        return s;
    if (PQntuples(r) == 0) {
        s = ims_error_set(err, IMS_ERR_NOT_FOUND, "image %lld has no thumbnail", (long long)id);
    } else {
        size_t nb = (size_t)PQgetlength(r, 0, 0);
        void *b = ims_malloc(nb ? nb : 1);
        if (!b) {
            s = ims_error_set(err, IMS_ERR_NOMEM, "catalogue: out of memory");
        } else {
            memcpy(b, PQgetvalue(r, 0, 0), nb);
            *jpeg = b;
            *n_bytes = nb;
        }
    }
    PQclear(r);
    return s;
}

enum ims_status store__pg_count(struct store *store, int64_t *n, struct ims_error *err)
{
    return store__pg_once1(store, "SELECT count(*) FROM images", NULL, NULL, n, err, "look up");
}

enum ims_status store__pg_max_id(struct store *store, int64_t *id, struct ims_error *err)
{
    return store__pg_once1(store, "SELECT coalesce(max(id), 0) FROM images", NULL, NULL, id, err,
                           "look up");
}

enum ims_status store__pg_list(struct store *store, enum store_order order, int64_t offset,
                               int64_t limit, struct store_image_row **rows_out, size_t *n_out,
                               struct ims_error *err)
{
    static const char *const sql[] = {
        [STORE_ORDER_ID_DESC] = "SELECT " ROW_COLS ROW_FROM
                                " ORDER BY i.id DESC LIMIT $1 OFFSET $2",
        [STORE_ORDER_ID_ASC] = "SELECT " ROW_COLS ROW_FROM " ORDER BY i.id LIMIT $1 OFFSET $2",
        [STORE_ORDER_ADDED_DESC] = "SELECT " ROW_COLS ROW_FROM " ORDER BY i.added DESC, "
                                   "i.id DESC LIMIT $1 OFFSET $2",
        [STORE_ORDER_ID_AFTER] = "SELECT " ROW_COLS ROW_FROM
                                 " WHERE i.id > $2 ORDER BY i.id LIMIT $1",
    };
    if (limit > 10000)
        limit = 10000;
    PGresult *r = NULL;
    struct pgp p = {0};
    store__pgp_i64(&p, limit);
    store__pgp_i64(&p, offset);
    enum ims_status s = store__pg_once(store, sql[order], &p, &r, err, "list images");
    if (s != IMS_OK)
        return s;
    size_t n = (size_t)PQntuples(r);
    struct store_image_row *rows = n ? ims_calloc(n, sizeof(*rows)) : NULL;
    if (n && !rows) {
        PQclear(r);
        return ims_error_set(err, IMS_ERR_NOMEM, "store_list: out of memory");
    }
    size_t k = 0;
    for (; k < n && s == IMS_OK; k++)
        s = row_from(r, (int)k, -1, &rows[k], err);
    PQclear(r);
    if (s != IMS_OK) {
        for (size_t i = 0; i + 1 < k; i++)
            store_row_fini(&rows[i]);
        ims_free(rows);
        return s;
    }
    *rows_out = rows;
    *n_out = n;
    return IMS_OK;
}

enum ims_status store__pg_scan_embeddings(struct store *store, int64_t after_id, size_t chunk_rows,
                                          store_scan_fn fn, void *user, struct ims_error *err)
{
    if (chunk_rows == 0)
        chunk_rows = 1024;
    IMS_RETURN_ERROR_IF(chunk_rows > (1u << 20), err, IMS_ERR_INVALID,
                        "store_scan_embeddings: chunk of %zu rows is too large", chunk_rows);
    size_t vec_bytes = (size_t)store->dim * 4, buf_bytes = 0;
    if (ims_size_mul(vec_bytes, chunk_rows, &buf_bytes) != 0)
        return ims_error_set(err, IMS_ERR_INVALID, "store_scan_embeddings: chunk too large");
    int64_t *ids = ims_malloc(chunk_rows * sizeof(*ids));
    float *vecs = ims_malloc(buf_bytes);
    PGconn *c = NULL;
    enum ims_status s = IMS_OK;
    if (!ids || !vecs) {
        s = ims_error_set(err, IMS_ERR_NOMEM, "store_scan_embeddings: out of memory");
        goto out;
    }
    s = store__pg_rbegin(store, &c, err);
    int64_t last = after_id;
    while (s == IMS_OK) {
        PGresult *r = NULL;
        struct pgp p = {0};
        store__pgp_i64(&p, last);
        store__pgp_i64(&p, (int64_t)chunk_rows);
        s = store__pg_q(
            c,
            "SELECT image_id, vec FROM embeddings WHERE image_id > $1 ORDER BY image_id "
            "LIMIT $2",
            &p, &r, err, "scan embeddings");
        if (s != IMS_OK)
            break;
        size_t n = (size_t)PQntuples(r);
        for (size_t i = 0; i < n && s == IMS_OK; i++) {
            ids[i] = store__pg_i64(r, (int)i, 0);
            if ((size_t)PQgetlength(r, (int)i, 1) != vec_bytes)
                s = ims_error_set(err, IMS_ERR_MODEL_MISMATCH,
                                  "catalogue: embedding of image %lld has %d floats, the model "
                                  "'%s' has %u (re-embed unfinished?)",
                                  (long long)ids[i], PQgetlength(r, (int)i, 1) / 4,
                                  store->model_name, store->dim);
            else
                memcpy(vecs + i * store->dim, PQgetvalue(r, (int)i, 1), vec_bytes);
        }
        PQclear(r);
        if (s != IMS_OK || n == 0)
            break;
        last = ids[n - 1];
        if (fn(user, ids, vecs, n, store->dim) != 0) {
            s = ims_error_set(err, IMS_ERR_CANCELLED, "embedding scan stopped by caller");
            break;
        }
        if (n < chunk_rows)
            break;
    }
    if (c)
        store__pg_rend(store, c);
out:
    ims_free(ids);
    ims_free(vecs);
    return s;
}

enum ims_status store__pg_deleted_seq(struct store *store, int64_t *seq, struct ims_error *err)
{
    return store__pg_once1(store, "SELECT coalesce(max(seq), 0) FROM deleted", NULL, NULL, seq, err,
                           "look up");
}

enum ims_status store__pg_deleted_after(struct store *store, int64_t after_seq, size_t max_n,
                                        int64_t **ids_out, size_t *n_out, int64_t *last_seq,
                                        struct ims_error *err)
{
    PGresult *r = NULL;
    struct pgp p = {0};
    store__pgp_i64(&p, after_seq);
    store__pgp_i64(&p, (int64_t)max_n);
    enum ims_status s = store__pg_once(
        store, "SELECT seq, image_id FROM deleted WHERE seq > $1 ORDER BY seq LIMIT $2", &p, &r,
        err, "read deletion log");
    if (s != IMS_OK)
        return s;
    size_t n = (size_t)PQntuples(r);
    int64_t *ids = n ? ims_malloc(n * sizeof(*ids)) : NULL;
    if (n && !ids) {
        PQclear(r);
        return ims_error_set(err, IMS_ERR_NOMEM, "store_deleted_after: out of memory");
    }
    int64_t last = after_seq;
    for (size_t i = 0; i < n; i++) {
        last = store__pg_i64(r, (int)i, 0);
        ids[i] = store__pg_i64(r, (int)i, 1);
    }
    PQclear(r);
    *ids_out = ids;
    *n_out = n;
    *last_seq = last;
    return IMS_OK;
}

/* ---- restore (catalogue copy) --------------------------------------------------- */

enum ims_status store__pg_restore_many(struct store *store, const struct store_restore_row *rows,
                                       size_t n, struct ims_error *err)
{
    PGconn *c = NULL;
    int64_t *ids = ims_malloc(n * sizeof(*ids));
    if (!ids)
        return ims_error_set(err, IMS_ERR_NOMEM, "store_restore_many: out of memory");
    enum ims_status s = store__pg_wbegin(store, &c, 1, err);
    if (s != IMS_OK) {
        ims_free(ids);
        return s;
    }
    int64_t given = 0;
    s = store__pg_q1(c,
                     "SELECT greatest((SELECT coalesce(max(id), 0) FROM images), (SELECT CASE WHEN "
                     "is_called THEN last_value ELSE 0 END FROM images_id_seq))",
                     NULL, NULL, &given, err, "read id counter");
    if (s == IMS_OK && rows[0].row->id <= given)
        s = ims_error_set(err, IMS_ERR_EXISTS,
                          "row 0 (id %lld): the catalogue has given out ids up to %lld; restored "
                          "rows must come after them",
                          (long long)rows[0].row->id, (long long)given);
    for (size_t i = 0; i < n && s == IMS_OK; i++)
        if (rows[i].row->metadata)
            s = check_metadata(c, rows[i].row->metadata, i, rows[i].row->source, err);
    if (s == IMS_OK) {
        struct pgcopy bi, be, bt;
        store__pgc_init(&bi);
        store__pgc_init(&be);
        store__pgc_init(&bt);
        size_t n_thumbs = 0;
        for (size_t i = 0; i < n; i++) {
            const struct store_image_row *row = rows[i].row;
            ids[i] = row->id;
            store__pgc_row(&bi, 11);
            store__pgc_i64(&bi, row->id);
            store__pgc_text(&bi, row->source);
            store__pgc_bytes(&bi, row->has_sha256 ? row->sha256 : NULL, 32);
            store__pgc_text(&bi, row->format);
            store__pgc_i64(&bi, row->width);
            store__pgc_i64(&bi, row->height);
            store__pgc_i64(&bi, row->bytes);
            store__pgc_i64(&bi, row->added);
            store__pgc_text(&bi, row->caption);
            store__pgc_text(&bi, row->metadata);
            store__pgc_text(&bi, row->model);
            store__pgc_row(&be, 2);
            store__pgc_i64(&be, row->id);
            store__pgc_bytes(&be, row->embedding, (size_t)row->dim * 4);
            if (rows[i].thumbnail_bytes > 0) {
                store__pgc_row(&bt, 2);
                store__pgc_i64(&bt, row->id);
                store__pgc_bytes(&bt, rows[i].thumbnail, rows[i].thumbnail_bytes);
                n_thumbs++;
            }
        }
        s = copy_rows(c, &bi, &be, &bt, n_thumbs, err);
    }
    if (s == IMS_OK) {
        struct pgp p = {0};
        store__pgp_i64(&p, rows[n - 1].row->id);
        s = store__pg_x(c, "SELECT setval('images_id_seq', $1)", &p, err, "move id counter");
    }
    /* the rows' tags (schema v4), keys as store_tag_normalize makes them */
    for (size_t i = 0; i < n && s == IMS_OK; i++)
        for (size_t t = 0; t < rows[i].row->n_tags && s == IMS_OK; t++) {
            char tag[STORE_TAG_MAX_BYTES + 1], key[STORE_TAG_MAX_BYTES + 1];
            s = store_tag_normalize(rows[i].row->tags[t], tag, key, err);
            struct pgp p = {0};
            store__pgp_i64(&p, rows[i].row->id);
            store__pgp_text(&p, tag);
            store__pgp_text(&p, key);
            if (s == IMS_OK)
                s = store__pg_x(
                    c,
                    "INSERT INTO image_tags(image_id, tag, tag_key) VALUES($1, $2::text, "
                    "$3::text) ON CONFLICT (image_id, tag_key) DO NOTHING",
                    &p, err, "restore tag");
        }
    if (s == IMS_OK)
        s = store__pg_log_changes(c, ids, n, STORE_CHANGE_INSERT, err);
    ims_free(ids);
    return store__pg_wend(store, c, s, err);
}

/* ---- filters (issue 10) ---------------------------------------------------------- */

enum ims_status store__pg_filter_ids(struct store *store,
                                     const char *const prm[STORE__FILTER_PARAMS], int64_t **ids_out,
                                     size_t *n_out, struct ims_error *err)
{
    /* "taken" is read only where it is a JSON number (imported metadata may
     * hold anything under that key) */
    static const char sql[] =
        "SELECT id FROM images WHERE"
        " ($1::int8 IS NULL OR added >= $1::int8) AND ($2::int8 IS NULL OR added <= $2::int8)"
        " AND ($3::int8 IS NULL OR taken >= $3::int8) AND ($4::int8 IS NULL OR taken <= $4::int8)"
        " AND width >= $5::int8 AND height >= $6::int8"
        " AND ($7::text IS NULL OR strpos($7::text, ',' || lower(format) || ',') > 0)"
        " AND ($8::text = '0' OR ($8::text = '1' AND width > height)"
        "      OR ($8::text = '2' AND height > width) OR ($8::text = '3' AND width = height AND width > 0))"
        " AND ($9::text IS NULL OR left(source, length($9::text)) = $9::text)"
        " AND ($10::text IS NULL OR id IN (SELECT image_id FROM image_tags"
        "      WHERE tag_key IN (SELECT jsonb_array_elements_text($10::jsonb))"
        "      GROUP BY image_id HAVING count(*) = $11::int8))"
        " ORDER BY id";
    PGresult *r = NULL;
    struct pgp p = {0};
    for (int i = 0; i < STORE__FILTER_PARAMS; i++)
        store__pgp_text(&p, prm[i]);
    enum ims_status s = store__pg_once(store, sql, &p, &r, err, "filter images");
    if (s != IMS_OK)
        return s;
    return store__pg_id_column(r, ids_out, n_out, "store_filter_ids", err);
}

/* ---- tags (issue 10) ------------------------------------------------------------- */

enum ims_status store__pg_tags_update(struct store *store, int64_t id, const char *const *tags,
                                      const char *const *keys, size_t n_add,
                                      const char *const *rkeys, size_t n_remove,
                                      struct ims_error *err)
{
    PGconn *c = NULL;
    /* the write lock: the change below takes a feed sequence number */
    enum ims_status s = store__pg_wbegin(store, &c, 1, err);
    if (s != IMS_OK)
        return s;
    /* the row lock orders two nodes changing one image's tags */
    s = lock_image(c, id, 1, err);
    for (size_t i = 0; s == IMS_OK && i < n_remove; i++) {
        struct pgp q = {0};
        store__pgp_i64(&q, id);
        store__pgp_text(&q, rkeys[i]);
        s = store__pg_x(c, "DELETE FROM image_tags WHERE image_id = $1 AND tag_key = $2::text", &q,
                        err, "remove tag");
    }
    for (size_t i = 0; s == IMS_OK && i < n_add; i++) {
        struct pgp q = {0};
        store__pgp_i64(&q, id);
        store__pgp_text(&q, tags[i]);
        store__pgp_text(&q, keys[i]);
        s = store__pg_x(
            c,
            "INSERT INTO image_tags(image_id, tag, tag_key) VALUES($1, $2::text, $3::text) "
            "ON CONFLICT (image_id, tag_key) DO UPDATE SET tag = excluded.tag",
            &q, err, "add tag");
    }
    if (s == IMS_OK) {
        struct pgp p = {0};
        store__pgp_i64(&p, id);
        int64_t n = 0;
        s = store__pg_q1(c, "SELECT count(*) FROM image_tags WHERE image_id = $1", &p, NULL, &n,
                         err, "look up");
        if (s == IMS_OK && n > STORE_TAGS_MAX)
            s = ims_error_set(err, IMS_ERR_INVALID,
                              "image %lld would have %lld tags (at most %d)", (long long)id,
                              (long long)n, STORE_TAGS_MAX);
    }
    /* the row changed: every node's row cache learns it from the feed */
    if (s == IMS_OK)
        s = store__pg_log_changes(c, &id, 1, STORE_CHANGE_ROW, err);
    return store__pg_wend(store, c, s, err);
}
