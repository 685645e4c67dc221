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
 * to the model's embedding size, finite values, sources non-empty): a
 * mismatch imports nothing. Rows are then committed in transactions of
 * IMPORT_CHUNK (a crash leaves whole chunks; running the same import again
 * skips what is there, duplicates being detected by source). Vectors are
 * L2-normalised on the way in. The .npy file is memory-mapped, so 200k x 512
 * vectors stream through a fixed amount of memory.
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
    "usage: imgsearch import [--data DIR] [--catalogue URL]"
    " [--model DIR]\n"
    "                        (--vectors FILE.npy --sources FILE | --faiss INDEX --meta META.json)\n"
    "Adds rows from precomputed embeddings (float32 .npy of shape (N, D) and one source per\n"
    "line; or the prototype's FAISS index + JSON metadata list). Nothing is fetched; the\n"
    "rows get thumbnails when `imgsearch add` later brings the same source.\n"
    CLI_CATALOGUE_HELP;

#define IMPORT_CHUNK 4096
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

/* ---- import ---------------------------------------------------------------- */

static int import_rows(struct cli_app *app, const float *vectors, size_t n, size_t d,
                       const struct sources *s)
{
    struct store_new_image *rows = calloc(IMPORT_CHUNK, sizeof(*rows));
    struct store_insert_result *res = calloc(IMPORT_CHUNK, sizeof(*res));
    float *norm = malloc((size_t)IMPORT_CHUNK * d * sizeof(float));
    int rc = 0;
    size_t added = 0, dups = 0;
    double t0 = ims_now();
    if (!rows || !res || !norm) {
        rc = cli_fail("import", "out of memory");
        goto out;
    }
    for (size_t base = 0; base < n; base += IMPORT_CHUNK) {
        size_t m = IMS_MIN((size_t)IMPORT_CHUNK, n - base);
        for (size_t i = 0; i < m; i++) {
            float *v = norm + i * d;
            memcpy(v, vectors + (base + i) * d, d * sizeof(float));
            clip_l2_normalize(v, (int)d);
            memset(&rows[i], 0, sizeof(rows[i]));
            rows[i].source = s->src[base + i];
            rows[i].metadata = s->meta ? s->meta[base + i] : NULL;
            rows[i].embedding = v;
            rows[i].dim = (uint32_t)d;
        }
        struct ims_error err = {0};
        enum ims_status st = store_insert_many(app->store, rows, m, res, &err);
        if (st != IMS_OK) {
            rc = cli_fail("import", "rows %zu..%zu: %s (%zu rows imported before)", base,
                          base + m - 1, ims_error_message(&err, st), added);
            goto out;
        }
        for (size_t i = 0; i < m; i++) {
            if (res[i].outcome == STORE_INSERTED)
                added++;
            else
                dups++;
        }
    }
    struct ims_error err = {0};
    enum ims_status st = cli_app_index_catch_up(app, &err);
    if (st != IMS_OK)
        ims_log(IMS_LOG_WARN, "index not updated (rebuilt at next start): %s",
                ims_error_message(&err, st));
    fprintf(stderr, "imgsearch import: %zu vectors: %zu added, %zu duplicates (by source) in "
                    "%.1f s\n",
            n, added, dups, ims_now() - t0);
out:
    free(rows);
    free(res);
    free(norm);
    return rc;
}

static int check_vectors(const float *v, size_t n, size_t d)
{
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (size_t j = 0; j < d; j++) {
            float x = v[i * d + j];
            if (!isfinite(x))
                return cli_fail("import", "vector %zu has a non-finite value: nothing imported",
                                i);
            s += (double)x * x;
        }
        if (s == 0)
            return cli_fail("import", "vector %zu is all zeros: nothing imported", i);
    }
    return 0;
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
    } else {
        struct ims_error err = {0};
        size_t rn = 0;
        int rd = 0;
        enum ims_status st = vindex_read_faiss_vectors(faiss, &recon, &rn, &rd, &err);
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
    }
    if (src.n != n) {
        cli_fail("import", "%zu vectors but %zu sources: nothing imported", n, src.n);
        goto out;
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
    rc = import_rows(&app, vecs, n, d, &src);
    if (cli_app_close("import", &app, 1) != 0)
        rc = 1;
out:
    npy_close(&arr);
    sources_free(&src);
    ims_free(recon);
    return rc;
}
