/* SPDX-License-Identifier: MIT */
/*
 * cmd_catalogue.c: `imgsearch catalogue copy --from DIR|URL --to DIR|URL`,
 * moving a catalogue between backends (a data folder's SQLite file and a
 * PostgreSQL database) with its ids, rows, embeddings, thumbnails and model
 * record.
 *
 * It streams: the source's embeddings are scanned in id order (one
 * snapshot), each chunk's rows and thumbnails are read and appended to the
 * destination with store_restore_many (one transaction per chunk). It only
 * fills an EMPTY destination (no rows, nothing ever written to its change
 * feed): it never overwrites or merges. Afterwards it reads the destination
 * back and compares counts and a chained SHA-256 over (id, source, content
 * hash, embedding bytes) in id order with the same digest of what was read
 * from the source. Jobs are not copied (they belong to the servers that ran
 * them). Copy from a catalogue no one is writing to.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_app.h"
#include "imgsearch/store.h"

const char cli_help_catalogue[] =
    "usage: imgsearch catalogue copy --from DIR|URL --to DIR|URL [--chunk N]\n"
    "Copies a catalogue between a data folder (its catalogue.db) and PostgreSQL\n"
    "(postgresql://USER@HOST:PORT/DB), either way: ids, rows, embeddings,\n"
    "thumbnails and the model record. The destination must be empty (it is\n"
    "created if needed; nothing is ever overwritten). Rows go over in chunks of\n"
    "N (default 512), then the destination is read back and verified by counts\n"
    "and a SHA-256 over (id, source, hash, embedding) in id order. Prints a JSON\n"
    "summary; exit status 1 if anything differs. Stop writers to the source first.\n"
    "Ingest jobs and their items are NOT copied, on purpose: they are work in\n"
    "flight (progress counters, claims and leases held by the source's nodes,\n"
    "per-item errors) tied to the nodes of the source; the images they added\n"
    "are rows and are copied. Let jobs finish before copying, or post their\n"
    "URLs again to the destination (already stored images come back as\n"
    "duplicates). The summary's \"jobs\" says so.\n";

/* A chained digest: d = SHA-256(d || id || source || 0 || hash || embedding). */
struct digest {
    uint8_t d[32];
    int64_t rows;
    int64_t thumbs;
    uint8_t *buf;
    size_t cap;
};

static int digest_add(struct digest *g, const struct store_image_row *r, const float *vec,
                      uint32_t dim)
{
    size_t sl = strlen(r->source);
    size_t need = 32 + 8 + sl + 1 + 33 + (size_t)dim * 4;
    if (need > g->cap) {
        uint8_t *p = realloc(g->buf, need);
        if (!p)
            return -1;
        g->buf = p;
        g->cap = need;
    }
    uint8_t *b = g->buf;
    size_t o = 0;
    memcpy(b + o, g->d, 32);
    o += 32;
    for (int i = 0; i < 8; i++)
        b[o++] = (uint8_t)((uint64_t)r->id >> (8 * i));
    memcpy(b + o, r->source, sl + 1);
    o += sl + 1;
    b[o++] = (uint8_t)(r->has_sha256 != 0);
    if (r->has_sha256) {
        memcpy(b + o, r->sha256, 32);
        o += 32;
    }
    memcpy(b + o, vec, (size_t)dim * 4);
    o += (size_t)dim * 4;
    ims_sha256(b, o, g->d);
    g->rows++;
    g->thumbs += r->has_thumbnail != 0;
    return 0;
}

struct copy_ctx {
    struct store *src, *dst; /* dst NULL: verify pass (digest only) */
    struct digest g;
    struct ims_error err;
    enum ims_status st;
};

static int on_chunk(void *user, const int64_t *ids, const float *vecs, size_t n, uint32_t dim)
{
    struct copy_ctx *c = user;
    struct store_image_row *rows = calloc(n, sizeof(*rows));
    uint8_t *found = calloc(n, 1);
    struct store_restore_row *rr = calloc(n, sizeof(*rr));
    void **thumbs = calloc(n, sizeof(*thumbs));
    size_t nr = 0;
    if (!rows || !found || !rr || !thumbs) {
        c->st = ims_error_set(&c->err, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    c->st = store_get_many(c->src, ids, n, 0, rows, found, &c->err);
    if (c->st != IMS_OK)
        goto out;
    for (size_t i = 0; i < n && c->st == IMS_OK; i++) {
        if (!found[i])
            continue; /* deleted since the scan's snapshot */
        rows[i].embedding = (float *)(vecs + i * dim);
        rows[i].dim = dim;
        if (digest_add(&c->g, &rows[i], vecs + i * dim, dim) != 0)
            c->st = ims_error_set(&c->err, IMS_ERR_NOMEM, "out of memory");
        rr[nr].row = &rows[i];
        if (c->dst && rows[i].has_thumbnail && c->st == IMS_OK) {
            size_t nb = 0;
            c->st = store_get_thumbnail(c->src, ids[i], &thumbs[i], &nb, &c->err);
            rr[nr].thumbnail = thumbs[i];
            rr[nr].thumbnail_bytes = nb;
        }
        nr++;
    }
    if (c->st == IMS_OK && c->dst && nr > 0)
        c->st = store_restore_many(c->dst, rr, nr, &c->err);
out:
    for (size_t i = 0; rows && i < n; i++) {
        rows[i].embedding = NULL; /* borrowed from the scan */
        store_row_fini(&rows[i]);
        if (thumbs)
            ims_free(thumbs[i]);
    }
    free(rows);
    free(found);
    free(rr);
    free(thumbs);
    return c->st != IMS_OK;
}

/* Opens `loc` (URL or data folder) with the model it records. */
static enum ims_status open_recorded(const char *loc, struct store **out, char *name, size_t cap,
                                     uint32_t *dim, struct ims_error *err)
{
    const char *url = store_catalogue_is_url(loc) ? loc : NULL;
    struct store_model_info any = {"(any)", 1};
    struct store *cat = NULL;
    enum ims_status s = store_open_catalogue(
        url, loc, &any, STORE_OPEN_ALLOW_MODEL_MISMATCH | STORE_OPEN_EXISTING, &cat, err);
    if (s == IMS_OK)
        s = store_model_get(cat, name, cap, dim, err);
    store_close(cat);
    if (s != IMS_OK)
        return s;
    struct store_model_info m = {name, *dim};
    return store_open_catalogue(url, loc, &m, STORE_OPEN_EXISTING, out, err);
}

static int copy(const char *from, const char *to, size_t chunk)
{
    struct ims_error err = {0};
    char name[STORE_MODEL_NAME_MAX_BYTES + 1];
    uint32_t dim = 0;
    struct store *src = NULL, *dst = NULL;
    char shown_from[512], shown_to[512];
    store_catalogue_display(from, shown_from, sizeof(shown_from));
    store_catalogue_display(to, shown_to, sizeof(shown_to));
    if (!strcmp(from, to))
        return cli_fail("catalogue", "--from and --to name the same catalogue");
    enum ims_status s = open_recorded(from, &src, name, sizeof(name), &dim, &err);
    if (s != IMS_OK)
        return cli_fail("catalogue", "cannot open the source %s: %s", shown_from,
                        ims_error_message(&err, s));
    struct store_model_info m = {name, dim};
    s = store_open_catalogue(store_catalogue_is_url(to) ? to : NULL, to, &m, 0, &dst, &err);
    if (s != IMS_OK) {
        store_close(src);
        return cli_fail("catalogue", "cannot open the destination %s: %s", shown_to,
                        ims_error_message(&err, s));
    }
    int64_t n_dst = 0, seq_dst = 0;
    s = store_count(dst, &n_dst, &err);
    if (s == IMS_OK)
        s = store_change_seq(dst, &seq_dst, &err);
    if (s == IMS_OK && (n_dst > 0 || seq_dst > 0)) {
        store_close(src);
        store_close(dst);
        return cli_fail("catalogue",
                        "the destination %s is not empty (%lld images, %lld changes recorded); "
                        "catalogue copy only fills an empty catalogue and never overwrites",
                        shown_to, (long long)n_dst, (long long)seq_dst);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct copy_ctx c = {.src = src, .dst = dst};
    if (s == IMS_OK) {
        s = store_scan_embeddings(src, 0, chunk, on_chunk, &c, &err);
        if (s == IMS_ERR_CANCELLED && c.st != IMS_OK) {
            s = c.st;
            err = c.err;
        }
    }
    /* read the destination back */
    struct copy_ctx v = {.src = dst};
    if (s == IMS_OK) {
        s = store_scan_embeddings(dst, 0, chunk, on_chunk, &v, &err);
        if (s == IMS_ERR_CANCELLED && v.st != IMS_OK) {
            s = v.st;
            err = v.err;
        }
    }
    int64_t n_src_now = 0, n_dst_now = 0;
    if (s == IMS_OK)
        s = store_count(src, &n_src_now, &err);
    if (s == IMS_OK)
        s = store_count(dst, &n_dst_now, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    free(c.g.buf);
    free(v.g.buf);
    int rc = 0;
    if (s != IMS_OK) {
        rc = cli_fail("catalogue", "copy from %s to %s failed: %s", shown_from, shown_to,
                      ims_error_message(&err, s));
    } else {
        char hf[65], ht[65];
        ims_hex(c.g.d, 32, hf);
        ims_hex(v.g.d, 32, ht);
        int same = !memcmp(c.g.d, v.g.d, 32) && c.g.rows == v.g.rows &&
                   c.g.thumbs == v.g.thumbs && n_dst_now == c.g.rows;
        json_t *j = json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:s, s:s, s:b, s:s, s:f}", "from",
            shown_from, "to", shown_to, "backend_from", store_backend_name(src), "backend_to",
            store_backend_name(dst), "model", name, "dim", (int)dim, "images",
            (json_int_t)c.g.rows, "thumbnails", (json_int_t)c.g.thumbs, "images_at_destination",
            (json_int_t)n_dst_now, "sha256_from", hf, "sha256_to", ht, "verified", same, "jobs",
            "not copied: jobs are ingest work in flight (progress, leases of the source's "
            "nodes); the images they added are copied; post unfinished jobs' URLs again",
            "seconds",
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
        char *out = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (out)
            printf("%s\n", out);
        free(out);
        json_decref(j);
        if (!same)
            rc = cli_fail("catalogue", "verification failed: the destination differs from the "
                                       "source (counts or checksums above)");
        else if (n_src_now != c.g.rows)
            fprintf(stderr, "imgsearch catalogue: note: the source changed during the copy "
                            "(%lld images now, %lld copied)\n",
                    (long long)n_src_now, (long long)c.g.rows);
    }
    store_close(src);
    store_close(dst);
    return rc;
}

int cli_cmd_catalogue(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "copy") != 0)
        return cli_usage("catalogue", cli_help_catalogue, "expected the subcommand 'copy'");
    const char *from = NULL, *to = NULL, *v = NULL;
    long chunk = 512;
    for (int i = 2; i < argc; i++) {
        int r;
        if ((r = cli_opt_value(argc, argv, &i, "--from", &v)) != 0) {
            if (r < 0)
                return cli_usage("catalogue", cli_help_catalogue, "--from needs a value");
            from = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--to", &v)) != 0) {
            if (r < 0)
                return cli_usage("catalogue", cli_help_catalogue, "--to needs a value");
            to = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--chunk", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 100000, &chunk))
                return cli_usage("catalogue", cli_help_catalogue, "bad value for --chunk");
        } else {
            return cli_usage("catalogue", cli_help_catalogue, "unexpected argument '%s'",
                             argv[i]);
        }
    }
    if (!from || !*from || !to || !*to)
        return cli_usage("catalogue", cli_help_catalogue, "both --from and --to are needed");
    return copy(from, to, (size_t)chunk);
}
