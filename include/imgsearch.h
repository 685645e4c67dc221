/* SPDX-License-Identifier: MIT */
/*
 * imgsearch.h: libimgsearch, CLIP image search in a C library: the same data
 * folder, model and queries as the `imgsearch` command and server, without a
 * server.
 *
 *     #include <imgsearch.h>
 *
 *     struct imgsearch_params p;
 *     imgsearch_params_default(&p);
 *     p.model_dir = "models/clip-vit-base-patch32";
 *     struct imgsearch *is = NULL;
 *     struct imgsearch_error err;
 *     if (imgsearch_open("my-data", &p, &is, &err) != IMGSEARCH_OK)
 *         die(err.message);
 *     const char *src[] = {"photos/", "https://example.org/cat.jpg"};
 *     struct imgsearch_add_summary sum;
 *     imgsearch_add(is, src, 2, &sum, &err);           // files, folders, URLs
 *     struct imgsearch_term t = {.kind = IMGSEARCH_TERM_TEXT, .weight = 1, .text = "a cat"};
 *     struct imgsearch_query q = {.terms = &t, .n_terms = 1, .k = 10};
 *     struct imgsearch_results res;
 *     if (imgsearch_search(is, &q, &res, &err) == IMGSEARCH_OK) {
 *         for (size_t i = 0; i < res.n; i++)
 *             printf("%.3f %s\n", res.items[i].score, res.items[i].row.source);
 *         imgsearch_results_free(&res);
 *     }
 *     imgsearch_close(is);
 *
 * One header, no other to include: every type here is plain C. It is the
 * whole public interface: the `imgsearch` command and its server are built
 * on this library too (they open, add, search, remove and save through it),
 * with a private header of the source tree for the options this one does
 * not carry; those imgsearch__* symbols are not exported and not ABI.
 *
 * Catalogues: a data folder (the catalogue.db, index.snap and index.spec that
 * `imgsearch` writes; created when absent), or the URL of a shared
 * PostgreSQL catalogue ("postgresql://user@host/db" or "postgres://...",
 * the same one `imgsearch --catalogue URL` and `serve` use; its schema is
 * created when the database has none). A catalogue belongs to one model:
 * opening it with another is IMGSEARCH_ERR_MODEL_MISMATCH. With a folder the
 * library reads the index snapshot and brings it up to date with the
 * catalogue (or builds it); it writes the snapshot only when asked
 * (imgsearch_save: the next open then starts from it instead of replaying
 * this handle's changes); with a URL there is no snapshot and the index (exact,
 * "Flat") is built from the catalogue at every open. Rows the library adds
 * are in the catalogue and reach every index from there. Other URL schemes
 * ("x://...") are IMGSEARCH_ERR_UNSUPPORTED, never taken for a folder.
 *
 * Threading (as whisper.h states its own): a `struct imgsearch` may be used
 * by any number of threads at once for imgsearch_search, imgsearch_get,
 * imgsearch_thumbnail, imgsearch_tags_update and imgsearch_embed_*;
 * imgsearch_add runs one at a time per handle (a second call waits) and may run beside searches, which see its
 * rows as they commit. imgsearch_open and imgsearch_close are not
 * thread-safe with other calls on the same handle. Several handles on one
 * folder (in one process or several) are safe: the catalogue is SQLite in
 * WAL mode with one writer at a time; a PostgreSQL catalogue takes any
 * number of handles and servers on any number of machines.
 *
 * Ownership: everything a call returns through an out-parameter is owned by
 * the caller and released with the matching function (imgsearch_results_free,
 * imgsearch_row_free, imgsearch_free); strings and arrays passed in are
 * borrowed for the call only. Out-parameters are set only on success.
 *
 * Errors: every function returns an enum imgsearch_status; a message for
 * people goes into the optional `struct imgsearch_error *` (may be NULL).
 *
 * ABI: docs/library.md says what changes the soname (any change to a struct
 * or enum value here, a removed or changed function); added functions and
 * enum values bump the minor version only. This header is soname 1
 * (libimgsearch.so.1, 1.0.0): the filter, query, row and result structs
 * grew from 0.1.0's (members marked "since 1.0"), so programs built against
 * the 0.x header must be rebuilt.
 */
#ifndef IMGSEARCH_LIB_H
#define IMGSEARCH_LIB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define IMGSEARCH_API __attribute__((visibility("default")))
#else
#define IMGSEARCH_API
#endif

#define IMGSEARCH_VERSION_MAJOR 1
#define IMGSEARCH_VERSION_MINOR 0

/* The same codes and order as the project's internal status table; the
 * values never change (new codes are appended). */
enum imgsearch_status {
    IMGSEARCH_OK = 0,
    IMGSEARCH_ERR_INVALID,        /* bad argument or input */
    IMGSEARCH_ERR_TOO_LARGE,      /* over a limit */
    IMGSEARCH_ERR_UNSUPPORTED,    /* unsupported format or feature */
    IMGSEARCH_ERR_NOMEM,
    IMGSEARCH_ERR_CORRUPT,        /* damaged data */
    IMGSEARCH_ERR_NOT_FOUND,
    IMGSEARCH_ERR_EXISTS,
    IMGSEARCH_ERR_IO,
    IMGSEARCH_ERR_MODEL_MISMATCH, /* the folder belongs to another model */
    IMGSEARCH_ERR_REFUSED,        /* refused by policy (private URL, ...) */
    IMGSEARCH_ERR_NETWORK,
    IMGSEARCH_ERR_TIMEOUT,
    IMGSEARCH_ERR_BUSY,
    IMGSEARCH_ERR_RATE_LIMITED,
    IMGSEARCH_ERR_UNAUTHORIZED,
    IMGSEARCH_ERR_CANCELLED,
    IMGSEARCH_ERR_METHOD_NOT_ALLOWED,
    IMGSEARCH_ERR_INTERNAL,
};

struct imgsearch_error {
    char message[512];
};

/* A stable name ("model_mismatch") and a generic message; never NULL. */
IMGSEARCH_API const char *imgsearch_status_name(enum imgsearch_status st);
IMGSEARCH_API const char *imgsearch_strerror(enum imgsearch_status st);
/* "1.0.0": the library's version (may differ from the header's). */
IMGSEARCH_API const char *imgsearch_version(void);

/* ---- open / close --------------------------------------------------------------- */

struct imgsearch_params {
    const char *model_dir;      /* Hugging Face CLIP folder; NULL: $IMGSEARCH_MODEL */
    int bf16;                   /* 1: bf16 where the CPU has AVX512_BF16 (else f32) */
    int n_threads;              /* encoder threads; 0: all CPUs */
    int allow_private_urls;     /* 1: let imgsearch_add download from private addresses */
};
IMGSEARCH_API void imgsearch_params_default(struct imgsearch_params *p);

struct imgsearch;

/* Opens (creating if needed) the data folder `catalogue`, or the PostgreSQL
 * catalogue when `catalogue` is a postgresql:// or postgres:// URL, with the
 * model of `p` (NULL: defaults). On success *out owns the handle: release it
 * with imgsearch_close(). */
IMGSEARCH_API enum imgsearch_status imgsearch_open(const char *catalogue,
                                                   const struct imgsearch_params *p,
                                                   struct imgsearch **out,
                                                   struct imgsearch_error *err);
/* Flags of imgsearch_open_flags (or-ed). */
enum imgsearch_open_flag {
    /* open only what exists: a missing data folder or catalogue (or a
     * PostgreSQL database without imgsearch's schema) is
     * IMGSEARCH_ERR_NOT_FOUND and nothing is created, as `imgsearch search`
     * and `stats` open */
    IMGSEARCH_OPEN_EXISTING = 1u << 0,
};
/* imgsearch_open with flags (0: the same as imgsearch_open); an unknown
 * flag is IMGSEARCH_ERR_INVALID. Added after 0.1.0, with imgsearch_save
 * (minor additions under the ABI policy). */
IMGSEARCH_API enum imgsearch_status imgsearch_open_flags(const char *catalogue,
                                                         const struct imgsearch_params *p,
                                                         unsigned flags, struct imgsearch **out,
                                                         struct imgsearch_error *err);
/* Writes the index snapshot of a data folder (index.snap, index.seq) now,
 * after bringing the index up to date with the catalogue (a snapshot that
 * already covers more is kept), the way `imgsearch add` and `rm` leave a
 * folder: the next open reads it instead of replaying the changes since the
 * last snapshot. IMGSEARCH_OK and nothing written for a catalogue URL.
 * imgsearch_close never writes it: call this first (it may run beside
 * searches; not beside imgsearch_close). */
IMGSEARCH_API enum imgsearch_status imgsearch_save(struct imgsearch *is,
                                                   struct imgsearch_error *err);
/* Releases everything. Accepts NULL. No other call may be running. */
IMGSEARCH_API void imgsearch_close(struct imgsearch *is);

/* Rows, embedding size, model name ("<architecture>:<fingerprint>", borrowed
 * for the handle's life). */
IMGSEARCH_API enum imgsearch_status imgsearch_count(struct imgsearch *is, int64_t *n,
                                                    struct imgsearch_error *err);
IMGSEARCH_API int imgsearch_dim(const struct imgsearch *is);
IMGSEARCH_API const char *imgsearch_model_name(const struct imgsearch *is);

/* ---- adding sources ------------------------------------------------------------------ */

struct imgsearch_add_summary {
    int64_t total, added, duplicates, failed;
};

/* Adds files, folders (recursively) and http(s) URLs, like `imgsearch add`.
 * Returns IMGSEARCH_OK when the job ran, even if items failed (see *summary,
 * may be NULL); an error when it could not run. */
IMGSEARCH_API enum imgsearch_status imgsearch_add(struct imgsearch *is,
                                                  const char *const *sources, size_t n,
                                                  struct imgsearch_add_summary *summary,
                                                  struct imgsearch_error *err);
IMGSEARCH_API enum imgsearch_status imgsearch_remove(struct imgsearch *is, int64_t id,
                                                     struct imgsearch_error *err);

/* ---- searching ---------------------------------------------------------------------- */

enum imgsearch_term_kind {
    IMGSEARCH_TERM_TEXT,
    IMGSEARCH_TERM_IMAGE,     /* encoded image bytes (JPEG, PNG, WebP, GIF, BMP, HEIC,
                                 AVIF, TIFF) */
    IMGSEARCH_TERM_IMAGE_ID,  /* a catalogue row's embedding ("more like this") */
    IMGSEARCH_TERM_VECTOR,    /* imgsearch_dim() floats */
};

/* One weighted term; the fields of `kind` are set, the others ignored.
 * (The library's own struct search_term has the same fields: this header
 * stands alone and is the ABI, so it keeps its own copy, and the library
 * copies field by field.) */
struct imgsearch_term {
    enum imgsearch_term_kind kind;
    float weight;             /* finite, non-zero; negative pushes away */
    const char *text;
    const void *bytes;
    size_t n_bytes;
    int64_t image_id;
    const float *vector;
    size_t n_vector;
};

/* Orientation of a row, from its width and height. */
enum imgsearch_orientation {
    IMGSEARCH_ORIENT_ANY = 0,     /* no filter */
    IMGSEARCH_ORIENT_LANDSCAPE,   /* wider than high */
    IMGSEARCH_ORIENT_PORTRAIT,    /* higher than wide */
    IMGSEARCH_ORIENT_SQUARE,
};

/* Filters on the rows (0 / NULL = no filter); a row must match every member
 * set, as the server's and `imgsearch search`'s filters. */
struct imgsearch_filter {
    int64_t added_from, added_to;   /* unix seconds, inclusive */
    int min_width, min_height;
    const char *source_prefix;      /* e.g. "https://example.org/" or "/photos/2024/" */
    /* since 1.0 (soname 1): */
    int64_t taken_from, taken_to;   /* unix seconds, inclusive, of the row's `taken`
                                       (EXIF DateTimeOriginal): a taken range
                                       excludes rows without one */
    const char *const *formats;     /* 0..16 format words: jpeg (jpg), png, webp, gif, bmp,
                                       heic (heif), avif, tiff (tif), any case; the row's
                                       format is one of them. Another word is
                                       IMGSEARCH_ERR_INVALID. */
    size_t n_formats;
    enum imgsearch_orientation orientation;
    const char *const *tags;        /* 0..64 tags: the row carries every one (compared
                                       case-insensitively; a bad tag, e.g. longer than
                                       64 bytes, is IMGSEARCH_ERR_INVALID) */
    size_t n_tags;
};

struct imgsearch_query {
    const struct imgsearch_term *terms;  /* 1..16 */
    size_t n_terms;
    int k;                               /* 1..1000 */
    int offset;                          /* 0..10000 */
    int has_min_score;
    float min_score;
    const struct imgsearch_filter *filter; /* may be NULL */
    /* since 1.0: 0 < dedup <= 1 folds near-duplicates (0: off). Walking the
     * results best first, a row whose cosine with an already kept result is
     * >= dedup goes into the best-ranked such result's `duplicates` instead
     * of the list; more rows are fetched until offset + k results are kept
     * or the rows run out. With dedup, offset + k is at most 2000. */
    float dedup;
};

struct imgsearch_row {
    int64_t id;
    char *source;             /* URL, path, or "upload:..." */
    char *caption;            /* NULL if none */
    int width, height;
    int64_t added;            /* unix seconds */
    /* since 1.0: */
    int has_taken;
    int64_t taken;            /* unix seconds (EXIF DateTimeOriginal), if has_taken */
    char *format;             /* "jpeg", "png", ... (the filter's words); NULL if unknown */
    char **tags;              /* n_tags tags as written, ordered case-insensitively;
                                 NULL if none */
    size_t n_tags;
};

struct imgsearch_result {
    struct imgsearch_row row;
    float score;              /* cosine similarity of the fused query */
    /* since 1.0: with dedup, the ids folded into this result, best first
     * (NULL and 0 without) */
    int64_t *duplicates;
    size_t n_duplicates;
};

struct imgsearch_results {
    struct imgsearch_result *items;
    size_t n;
};

/* The fused query is normalise(sum w_i * normalise(e_i)); results are the
 * best-scoring rows that pass the filter, best first. On success release
 * *out with imgsearch_results_free(). */
IMGSEARCH_API enum imgsearch_status imgsearch_search(struct imgsearch *is,
                                                     const struct imgsearch_query *q,
                                                     struct imgsearch_results *out,
                                                     struct imgsearch_error *err);
IMGSEARCH_API void imgsearch_results_free(struct imgsearch_results *r);

/* ---- rows and thumbnails --------------------------------------------------------------- */

/* IMGSEARCH_ERR_NOT_FOUND for an unknown id. Release with imgsearch_row_free(). */
IMGSEARCH_API enum imgsearch_status imgsearch_get(struct imgsearch *is, int64_t id,
                                                  struct imgsearch_row *row,
                                                  struct imgsearch_error *err);
IMGSEARCH_API void imgsearch_row_free(struct imgsearch_row *row);
/* The row's JPEG thumbnail (longest side 256 px). Release *jpeg with imgsearch_free(). */
IMGSEARCH_API enum imgsearch_status imgsearch_thumbnail(struct imgsearch *is, int64_t id,
                                                        void **jpeg, size_t *n_bytes,
                                                        struct imgsearch_error *err);

/* Edits row `id`'s tags in one transaction: removes `remove` (absent ones
 * are ignored), then adds `add` (a tag already there under another case
 * takes the new spelling); as `imgsearch tag` and the server's
 * POST /api/v1/images/ID/tags. A tag is 1..64 bytes of UTF-8 without
 * control characters (spaces around it trimmed), compared
 * case-insensitively; a row holds at most 64. IMGSEARCH_ERR_INVALID for a bad
 * tag or too many (the message names it; nothing changed),
 * IMGSEARCH_ERR_NOT_FOUND for an unknown id. Read them back with
 * imgsearch_get; searches see them at once. Since 1.0. */
IMGSEARCH_API enum imgsearch_status imgsearch_tags_update(struct imgsearch *is, int64_t id,
                                                          const char *const *add, size_t n_add,
                                                          const char *const *remove,
                                                          size_t n_remove,
                                                          struct imgsearch_error *err);

/* ---- embeddings --------------------------------------------------------------------------- */

/* L2-normalised embeddings; `out` holds imgsearch_dim() floats (caller-owned). */
IMGSEARCH_API enum imgsearch_status imgsearch_embed_text(struct imgsearch *is, const char *text,
                                                         float *out,
                                                         struct imgsearch_error *err);
IMGSEARCH_API enum imgsearch_status imgsearch_embed_image(struct imgsearch *is, const void *bytes,
                                                          size_t n, float *out,
                                                          struct imgsearch_error *err);

/* Releases memory the library returned (thumbnails). Accepts NULL. */
IMGSEARCH_API void imgsearch_free(void *p);

#ifdef __cplusplus
}
#endif
#endif
