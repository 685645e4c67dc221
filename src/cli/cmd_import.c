/* SPDX-License-Identifier: MIT */
/*
 * cmd_import.c: `imgsearch import`: catalogue rows from precomputed
 * embeddings, nothing fetched.
 *
 *   --vectors FILE.npy --sources FILE   float32 (N, D) NumPy array + N lines
 *   --faiss INDEX --meta META.json      the prototype's saved state: a FAISS
 *                                       index whose vectors can be
 *                                       reconstructed + a JSON array of N
 *                                       entries (a source string, or an object
 *                                       whose "url" or "path" is the source,
 *                                       other fields kept as metadata)
 *
 * Everything is validated before the first row is written (counts, D equal
 * to the model's embedding size, every row finite with a norm in
 * [IMPORT_NORM_MIN, IMPORT_NORM_MAX] computed in double with scaling so that
 * neither denormals nor huge values under- or overflow, sources non-empty,
 * FAISS ids in range and unique): a mismatch imports nothing. The rows are
 * then committed in ONE transaction (store_insert_stream), filled
 * IMPORT_CHUNK at a time, so memory stays bounded for any N and a failure at
 * any row, or a crash, leaves nothing. Vectors are L2-normalised on the way
 * in, in double (the same arithmetic the validation used). The .npy file is
 * memory-mapped, so 200k x 512 vectors stream through a fixed amount of
 * memory.
 *
 * FAISS files are validated whole by the index module before a vector is
 * read (vindex_read_faiss_vectors). Metadata entries pair with vectors BY ID:
 * the vector of id k gets entry k of the JSON list (an IndexIDMap's ids, an
 * IVF's list ids; plain Flat/HNSW files number their vectors 0..n-1). Every
 * id must index the list and be unique; entries without a vector (removed
 * from the index) are reported and skipped.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cli_app.h"

const char cli_help_import[] =
    "usage: imgsearch import [--data DIR] [--catalogue URL] [--model DIR]\n"
    "                        (--vectors FILE.npy --sources FILE | --faiss INDEX --meta META.json)\n"
    "Adds rows from precomputed embeddings (float32 .npy of shape (N, D) and one source per\n"
    "line; or the prototype's FAISS index + JSON metadata list). Nothing is fetched; the\n"
    "rows get thumbnails when `imgsearch add` later brings the same source.\n"
    "The whole input is validated first (finite vectors, norms in [1e-30, 1e30], FAISS\n"
    "files checked whole) and the rows are committed in one transaction, or none.\n"
    "FAISS: Flat, IDMap, HNSW-Flat, IVF-Flat, IVF-PQ; metadata entry K describes the\n"
    "vector of id K (the position for files without ids).\n"
    CLI_CATALOGUE_HELP;

#define IMPORT_CHUNK 4096
/* A vector whose norm is outside this range is refused: nothing real is that
 * small or that large, and normalising it would lose every digit. */
#define IMPORT_NORM_MIN 1e-30
#define IMPORT_NORM_MAX 1e30
#define META_MAX_BYTES ((size_t)1 << 30)

/* ---- .npy ------------------------------------------------------------------- */

struct npy {
    void *map;
    size_t map_bytes;
    const float *data; /* (n, d) row-major, little-endian float32 */
    size_t n, d;
};

static void npy_close(struct npy *a)
{
    if (a->map && a->map != MAP_FAILED)
        munmap(a->map, a->map_bytes);
    memset(a, 0, sizeof(*a));
}

/* Parses the NumPy format (versions 1-3): magic "\x93NUMPY", version, header
 * length (2 or 4 bytes LE), then a Python dict literal with 'descr',
 * 'fortran_order', 'shape'. Only '<f4', C order, 2-D is accepted. */
static int npy_open(const char *path, struct npy *a, char *why, size_t why_n)
{
    memset(a, 0, sizeof(*a));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, why_n, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size < 16) {
        close(fd);
        snprintf(why, why_n, "%s: not a .npy file (too short)", path);
        return -1;
    }
    a->map_bytes = (size_t)sb.st_size;
    a->map = mmap(NULL, a->map_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (a->map == MAP_FAILED) {
        a->map = NULL;
        snprintf(why, why_n, "cannot map %s: %s", path, strerror(errno));
        return -1;
    }
    const unsigned char *p = a->map;
    if (memcmp(p, "\x93NUMPY", 6) != 0) {
        snprintf(why, why_n, "%s: not a .npy file (bad magic)", path);
        goto fail;
    }
    size_t hlen, hstart;
    if (p[6] == 1) {
        hlen = (size_t)p[8] | (size_t)p[9] << 8;
        hstart = 10;
    } else if (p[6] == 2 || p[6] == 3) {
        hlen = (size_t)p[8] | (size_t)p[9] << 8 | (size_t)p[10] << 16 | (size_t)p[11] << 24;
        hstart = 12;
    } else {
        snprintf(why, why_n, "%s: unsupported .npy version %d", path, p[6]);
        goto fail;
    }
    if (hlen > 65536 || hstart + hlen > a->map_bytes) {
        snprintf(why, why_n, "%s: .npy header length %zu is beyond the file", path, hlen);
        goto fail;
    }
    char header[65537];
    memcpy(header, p + hstart, hlen);
    header[hlen] = '\0';
    if (!strstr(header, "'descr': '<f4'") && !strstr(header, "'descr':'<f4'")) {
        snprintf(why, why_n, "%s: the array must be float32 little-endian ('<f4'); header: %s",
                 path, header);
        goto fail;
    }
    if (strstr(header, "'fortran_order': True")) {
        snprintf(why, why_n, "%s: Fortran-ordered arrays are not supported (save a C-ordered "
                             "copy with numpy.ascontiguousarray)",
                 path);
        goto fail;
    }
    char *shape = strstr(header, "'shape':");
    unsigned long long n = 0, d = 0;
    char tail = 0;
    if (!shape || sscanf(shape, "'shape': (%llu, %llu%c", &n, &d, &tail) != 3 || tail != ')') {
        snprintf(why, why_n, "%s: the array must be 2-D (N, D); header: %s", path, header);
        goto fail;
    }
    size_t data_bytes;
    if (n == 0 || d == 0 || ims_size_mul((size_t)n, (size_t)d * 4, &data_bytes) != 0 ||
        hstart + hlen + data_bytes != a->map_bytes) {
        snprintf(why, why_n, "%s: shape (%llu, %llu) does not match the file size %zu", path, n,
                 d, a->map_bytes);
        goto fail;
    }
    if ((hstart + hlen) % 4 != 0) {
        snprintf(why, why_n, "%s: misaligned data offset", path);
        goto fail;
    }
    a->data = (const float *)(p + hstart + hlen);
    a->n = (size_t)n;
    a->d = (size_t)d;
    return 0;
fail:
    npy_close(a);
    return -1;
}

/* ---- sources ---------------------------------------------------------------- */

struct sources {
    char **src;   /* n sources */
    char **meta;  /* n JSON texts or NULL */
    size_t n;
};

static void sources_free(struct sources *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->src[i]);
        if (s->meta)
            free(s->meta[i]);
    }
    free(s->src);
    free(s->meta);
    memset(s, 0, sizeof(*s));
}

static int read_source_lines(const char *path, struct sources *s, char *why, size_t why_n)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(why, why_n, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    size_t lineno = 0;
    int rc = 0;
    while ((len = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0) {
            snprintf(why, why_n, "%s:%zu: empty line (every vector needs a source)", path, lineno);
            rc = -1;
            break;
        }
        if ((size_t)len > STORE_SOURCE_MAX_BYTES) {
            snprintf(why, why_n, "%s:%zu: source longer than %d bytes", path, lineno,
                     STORE_SOURCE_MAX_BYTES);
            rc = -1;
            break;
        }
        if (s->n == cap) {
            cap = cap ? cap * 2 : 1024;
            char **p = realloc(s->src, cap * sizeof(char *));
            if (!p) {
                snprintf(why, why_n, "out of memory");
                rc = -1;
                break;
            }
            s->src = p;
        }
        s->src[s->n] = strdup(line);
        if (!s->src[s->n]) {
            snprintf(why, why_n, "out of memory");
            rc = -1;
            break;
        }
        s->n++;
    }
    free(line);
    fclose(f);
    return rc;
}

static int read_meta_json(const char *path, struct sources *s, char *why, size_t why_n)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        snprintf(why, why_n, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        return -1;
    }
    int rc = -1;
    if (!json_is_array(root)) {
        snprintf(why, why_n, "%s: expected a JSON array with one entry per vector", path);
        goto out;
    }
    size_t n = json_array_size(root);
    s->src = calloc(n ? n : 1, sizeof(char *));
    s->meta = calloc(n ? n : 1, sizeof(char *));
    if (!s->src || !s->meta) {
        snprintf(why, why_n, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(root, i);
        const char *src = NULL;
        if (json_is_string(e)) {
            src = json_string_value(e);
        } else if (json_is_object(e)) {
            json_t *u = json_object_get(e, "url");
            if (!json_is_string(u))
                u = json_object_get(e, "path");
            if (json_is_string(u))
                src = json_string_value(u);
            json_t *extra = json_deep_copy(e);
            json_object_del(extra, "url");
            json_object_del(extra, "path");
            if (json_object_size(extra) > 0)
                s->meta[i] = json_dumps(extra, JSON_COMPACT);
            json_decref(extra);
        }
        if (!src || !*src || strlen(src) > STORE_SOURCE_MAX_BYTES) {
            snprintf(why, why_n, "%s: entry %zu has no usable source (a non-empty string, or "
                                 "an object with \"url\" or \"path\")",
                     path, i);
            s->n = i;
            free(s->meta[i]);
            s->meta[i] = NULL;
            goto out;
        }
        s->src[i] = strdup(src);
        s->n = i + 1;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* ---- validation ------------------------------------------------------------- */

/* The L2 norm of v (d floats) in double, scaled by max|x| first so that
 * neither denormals nor values near FLT_MAX under- or overflow. Returns -1
 * for a non-finite value (its index in *bad), else the norm (0 for zeros). */
static double row_norm(const float *v, size_t d, size_t *bad)
{
    double mx = 0;
    for (size_t j = 0; j < d; j++) {
        if (!isfinite(v[j])) {
            *bad = j;
            return -1;
        }
        mx = fmax(mx, fabs((double)v[j]));
    }
    if (mx == 0)
        return 0;
    double s = 0;
    for (size_t j = 0; j < d; j++) {
        double x = (double)v[j] / mx;
        s += x * x;
    }
    return mx * sqrt(s);
}

static int check_vectors(const float *v, size_t n, size_t d)
{
    for (size_t i = 0; i < n; i++) {
        size_t bad = 0;
        double norm = row_norm(v + i * d, d, &bad);
        if (norm < 0)
            return cli_fail("import", "vector %zu has a non-finite value at [%zu]: nothing "
                                      "imported",
                            i, bad);
        if (norm == 0)
            return cli_fail("import", "vector %zu is all zeros: nothing imported", i);
        if (norm < IMPORT_NORM_MIN || norm > IMPORT_NORM_MAX)
            return cli_fail("import", "vector %zu has norm %g, outside [%g, %g] (denormal or "
                                      "overflowing values?): nothing imported",
                            i, norm, IMPORT_NORM_MIN, IMPORT_NORM_MAX);
    }
    return 0;
}

/* ---- import ---------------------------------------------------------------- */

struct import_ctx {
    const float *vectors; /* (n, d) */
    size_t d;
    const struct sources *s;
    const size_t *meta_of; /* row -> source index, or NULL for the identity */
    float *norm;           /* (IMPORT_CHUNK, d) */
    size_t added, dups;
};

static int import_fill(void *user, size_t first, struct store_new_image *rows, size_t n)
{
    struct import_ctx *c = user;
    for (size_t i = 0; i < n; i++) {
        const float *x = c->vectors + (first + i) * c->d;
        float *v = c->norm + i * c->d;
        size_t bad;
        double norm = row_norm(x, c->d, &bad); /* validated: in range */
        for (size_t j = 0; j < c->d; j++)
            v[j] = (float)((double)x[j] / norm);
        size_t m = c->meta_of ? c->meta_of[first + i] : first + i;
        rows[i].source = c->s->src[m];
        rows[i].metadata = c->s->meta ? c->s->meta[m] : NULL;
        rows[i].embedding = v;
        rows[i].dim = (uint32_t)c->d;
    }
    return 0;
}

static void import_done(void *user, size_t first, const struct store_insert_result *res, size_t n)
{
    struct import_ctx *c = user;
    if (first == 0) /* (again, after a retry: what came before was rolled back) */
        c->added = c->dups = 0;
    for (size_t i = 0; i < n; i++) {
        if (res[i].outcome == STORE_INSERTED)
            c->added++;
        else
            c->dups++;
    }
}

static int import_rows(struct cli_app *app, const float *vectors, size_t n, size_t d,
                       const struct sources *s, const size_t *meta_of)
{
    struct import_ctx c = {.vectors = vectors, .d = d, .s = s, .meta_of = meta_of};
    double t0 = ims_now();
    c.norm = malloc((size_t)IMPORT_CHUNK * d * sizeof(float));
    if (!c.norm)
        return cli_fail("import", "out of memory");
    struct ims_error err = {0};
    enum ims_status st =
        store_insert_stream(app->store, n, IMPORT_CHUNK, import_fill, import_done, &c, &err);
    free(c.norm);
    if (st != IMS_OK)
        return cli_fail("import", "%s: nothing imported", ims_error_message(&err, st));
    st = cli_app_index_catch_up(app, &err);
    if (st != IMS_OK)
        ims_log(IMS_LOG_WARN, "index not updated (rebuilt at next start): %s",
                ims_error_message(&err, st));
    fprintf(stderr, "imgsearch import: %zu vectors: %zu added, %zu duplicates (by source) in "
                    "%.1f s\n",
            n, c.added, c.dups, ims_now() - t0);
    return 0;
}

/* FAISS ids -> metadata entries: meta_of[i] = ids[i], every id an index of
 * the list and used once. Returns the map (free()), or NULL after a message. */
static size_t *pair_by_id(const int64_t *ids, size_t n, size_t n_meta, const char *faiss)
{
    size_t *meta_of = malloc((n ? n : 1) * sizeof(size_t));
    uint8_t *used = calloc(n_meta ? n_meta : 1, 1);
    if (!meta_of || !used) {
        cli_fail("import", "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint64_t)ids[i] >= n_meta) {
            cli_fail("import", "%s: vector %zu has id %lld, but the metadata list has %zu "
                               "entries (ids pair vectors with entries): nothing imported",
                     faiss, i, (long long)ids[i], n_meta);
            goto fail;
        }
        if (used[ids[i]]) {
            cli_fail("import", "%s: id %lld is used by two vectors: nothing imported", faiss,
                     (long long)ids[i]);
            goto fail;
        }
        used[ids[i]] = 1;
        meta_of[i] = (size_t)ids[i];
    }
    free(used);
    return meta_of;
fail:
    free(meta_of);
    free(used);
    return NULL;
}

int cli_cmd_import(int argc, char **argv)
{
    struct cli_app_options o = {0};
    const char *vectors = NULL, *sources = NULL, *faiss = NULL, *meta = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r = cli_app_parse_common(argc, argv, &i, &o);
        if (r == 0 && (r = cli_opt_value(argc, argv, &i, "--vectors", &v)) > 0)
            vectors = v;
        else if (r == 0 && (r = cli_opt_value(argc, argv, &i, "--sources", &v)) > 0)
            sources = v;
        else if (r == 0 && (r = cli_opt_value(argc, argv, &i, "--faiss", &v)) > 0)
            faiss = v;
        else if (r == 0 && (r = cli_opt_value(argc, argv, &i, "--meta", &v)) > 0)
            meta = v;
        if (r < 0)
            return cli_usage("import", cli_help_import, "bad or missing value for %s", argv[i]);
        if (r == 0)
            return cli_usage("import", cli_help_import, "unexpected argument '%s'", argv[i]);
    }
    int by_npy = vectors && sources && !faiss && !meta;
    int by_faiss = faiss && meta && !vectors && !sources;
    if (!by_npy && !by_faiss)
        return cli_usage("import", cli_help_import,
                         "give --vectors with --sources, or --faiss with --meta");

    char why[1024];
    struct npy arr = {0};
    struct sources src = {0};
    float *recon = NULL;
    int64_t *ids = NULL;
    size_t *meta_of = NULL;
    const float *vecs = NULL;
    size_t n = 0, d = 0;
    int rc = 1;
    if (by_npy) {
        if (npy_open(vectors, &arr, why, sizeof(why)) != 0 ||
            read_source_lines(sources, &src, why, sizeof(why)) != 0) {
            cli_fail("import", "%s: nothing imported", why);
            goto out;
        }
        vecs = arr.data;
        n = arr.n;
        d = arr.d;
        if (src.n != n) {
            cli_fail("import", "%zu vectors but %zu sources: nothing imported", n, src.n);
            goto out;
        }
    } else {
        struct ims_error err = {0};
        size_t rn = 0;
        int rd = 0;
        enum ims_status st = vindex_read_faiss_vectors(faiss, &recon, &ids, &rn, &rd, &err);
        if (st != IMS_OK) {
            cli_fail("import", "%s: %s: nothing imported", faiss, ims_error_message(&err, st));
            goto out;
        }
        if (read_meta_json(meta, &src, why, sizeof(why)) != 0) {
            cli_fail("import", "%s: nothing imported", why);
            goto out;
        }
        vecs = recon;
        n = rn;
        d = (size_t)rd;
        if (src.n < n) {
            cli_fail("import", "%zu vectors but %zu sources: nothing imported", n, src.n);
            goto out;
        }
        meta_of = pair_by_id(ids, n, src.n, faiss);
        if (!meta_of)
            goto out;
        if (src.n > n)
            fprintf(stderr, "imgsearch import: %zu metadata entries have no vector in %s "
                            "(removed from the index?): not imported\n",
                    src.n - n, faiss);
    }
    if (check_vectors(vecs, n, d) != 0)
        goto out;
    o.with_model = 1;
    o.with_index = 1;
    struct cli_app app;
    if (cli_app_open("import", &o, &app) != 0)
        goto out;
    if (d != app.dim) {
        cli_fail("import", "the vectors have %zu dimensions, the model %s has %u: nothing "
                           "imported",
                 d, app.model_name, app.dim);
        cli_app_close("import", &app, 0);
        goto out;
    }
    rc = import_rows(&app, vecs, n, d, &src, meta_of) != 0;
    if (cli_app_close("import", &app, 1) != 0)
        rc = 1;
out:
    npy_close(&arr);
    sources_free(&src);
    ims_free(recon);
    ims_free(ids);
    free(meta_of);
    return rc;
}
