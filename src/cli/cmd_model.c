/* SPDX-License-Identifier: MIT */
/*
 * cmd_model.c: `imgsearch model fetch [NAME]`: downloads a Hugging Face CLIP
 * checkpoint (config.json, vocab.json, merges.txt, model.safetensors) from
 * <base>/<NAME>/resolve/main/<file> into a model folder.
 *
 * Each file goes through fetch_to_file: streamed into "<file>.part",
 * continued with a Range request when a part is already there (an earlier
 * run was interrupted) or when the connection drops (retries), size checked
 * against what the server announced, then a light content check here (JSON
 * files parse; the safetensors 8-byte header length fits in the file and the
 * header is a JSON object), and only then renamed into place. The model
 * loader does the full validation; this check only keeps an obviously
 * broken download (an HTML error page, a truncated file) from ever landing
 * under the final name. Files already in place are kept.
 *
 * The default address policy applies: a base URL on a loopback or private
 * address needs --allow-private-urls (tests, mirrors on an intranet).
 */

#include "cli.h"
#include "imgsearch/fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char cli_help_model[] =
    "usage: imgsearch model fetch [NAME] [--base-url URL] [--out DIR] [--allow-private-urls]\n"
    "\n"
    "Downloads a CLIP checkpoint (config.json, vocab.json, merges.txt, model.safetensors)\n"
    "from <URL>/<NAME>/resolve/main/<file>.\n"
    "\n"
    "  NAME                  Hugging Face model id (default openai/clip-vit-base-patch32)\n"
    "  --base-url URL        default $IMGSEARCH_HF_BASE_URL, else https://huggingface.co\n"
    "  --out DIR             model folder (default: the default model folder for the\n"
    "                        default NAME, else <models folder>/<NAME with / as ->)\n"
    "  --allow-private-urls  allow loopback/private addresses (local mirrors, tests)\n"
    "\n"
    "Interrupted downloads resume where they stopped when run again.\n";

#define MODEL_DEFAULT_NAME "openai/clip-vit-base-patch32"
#define MODEL_DEFAULT_BASE "https://huggingface.co"
#define MODEL_MAX_WEIGHTS_BYTES (16ull << 30) /* the largest CLIP checkpoints are ~2-4 GB */
#define MODEL_MAX_TEXT_BYTES (64ull << 20)
#define SAFETENSORS_MAX_HEADER (100u << 20)

/* ---- a small JSON well-formedness check ------------------------------------ */

struct jv {
    const char *p, *end;
    int depth;
};

static void jv_ws(struct jv *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int jv_value(struct jv *j);

static int jv_string(struct jv *j)
{
    if (j->p >= j->end || *j->p != '"')
        return 0;
    j->p++;
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p++;
        if (c == '"')
            return 1;
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (j->p >= j->end)
                return 0;
            char e = *j->p++;
            if (e == 'u') {
                for (int k = 0; k < 4; k++, j->p++) {
                    if (j->p >= j->end)
                        return 0;
                    char h = *j->p;
                    if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') ||
                          (h >= 'A' && h <= 'F')))
                        return 0;
                }
            } else if (!strchr("\"\\/bfnrt", e) || e == '\0') {
                return 0;
            }
        }
    }
    return 0;
}

static int jv_digits(struct jv *j)
{
    const char *s = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > s;
}

static int jv_number(struct jv *j)
{
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p < j->end && *j->p == '0')
        j->p++;
    else if (!jv_digits(j))
        return 0;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!jv_digits(j))
            return 0;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (!jv_digits(j))
            return 0;
    }
    return 1;
}

static int jv_literal(struct jv *j, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return 0;
    j->p += n;
    return 1;
}

static int jv_container(struct jv *j, char open, char close)
{
    if (++j->depth > 64)
        return 0;
    j->p++; /* open */
    jv_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return 1;
    }
    for (;;) {
        if (open == '{') {
            if (!jv_string(j))
                return 0;
            jv_ws(j);
            if (j->p >= j->end || *j->p++ != ':')
                return 0;
            jv_ws(j);
        }
        if (!jv_value(j))
            return 0;
        jv_ws(j);
        if (j->p >= j->end)
            return 0;
        char c = *j->p++;
        if (c == close)
            break;
        if (c != ',')
            return 0;
        jv_ws(j);
    }
    j->depth--;
    return 1;
}

static int jv_value(struct jv *j)
{
    if (j->p >= j->end)
        return 0;
    switch (*j->p) {
    case '{': return jv_container(j, '{', '}');
    case '[': return jv_container(j, '[', ']');
    case '"': return jv_string(j);
    case 't': return jv_literal(j, "true");
    case 'f': return jv_literal(j, "false");
    case 'n': return jv_literal(j, "null");
    default: return jv_number(j);
    }
}

/* 1 if [p, p+n) is one JSON object with only whitespace around it. */
static int json_object_ok(const char *p, size_t n)
{
    struct jv j = {p, p + n, 0};
    jv_ws(&j);
    if (j.p >= j.end || *j.p != '{' || !jv_value(&j))
        return 0;
    jv_ws(&j);
    return j.p == j.end;
}

/* ---- content checks before the rename ----------------------------------------- */

static enum ims_status read_exact(int fd, void *buf, size_t n, off_t at)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, at + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return IMS_ERR_IO;
        got += (size_t)r;
    }
    return IMS_OK;
}

static enum ims_status verify_safetensors(void *ctx, const char *part, uint64_t size,
                                          struct ims_error *err)
{
    (void)ctx;
    enum ims_status st = IMS_OK;
    char *hdr = NULL;
    unsigned char len8[8];
    int fd = open(part, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ims_error_set(err, IMS_ERR_IO, "cannot open %s: %s", part, strerror(errno));
    if (size < 8 || read_exact(fd, len8, 8, 0) != IMS_OK) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "not a safetensors file: %llu bytes",
                           (unsigned long long)size);
        goto out;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | len8[i];
    if (n < 2 || n > SAFETENSORS_MAX_HEADER || n > size - 8) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "not a safetensors file: header length %llu does not fit in "
                           "%llu bytes",
                           (unsigned long long)n, (unsigned long long)size);
        goto out;
    }
    hdr = ims_malloc((size_t)n);
    if (!hdr) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (read_exact(fd, hdr, (size_t)n, 8) != IMS_OK) {
        st = ims_error_set(err, IMS_ERR_IO, "cannot read %s", part);
        goto out;
    }
    if (!json_object_ok(hdr, (size_t)n)) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "not a safetensors file: the header is not a JSON object");
        goto out;
    }
out:
    ims_free(hdr);
    close(fd);
    return st;
}

static enum ims_status verify_json(void *ctx, const char *part, uint64_t size,
                                   struct ims_error *err)
{
    (void)ctx;
    char *data = NULL;
    size_t len = 0;
    enum ims_status st = ims_file_read(part, (size_t)MODEL_MAX_TEXT_BYTES, &data, &len, err);
    if (st != IMS_OK)
        return st;
    if (!json_object_ok(data, len))
        st = ims_error_set(err, IMS_ERR_CORRUPT, "not a JSON object (%llu bytes)",
                           (unsigned long long)size);
    ims_free(data);
    return st;
}

/* ---- progress -------------------------------------------------------------------- */

struct progress {
    const char *file;
    int tty;
    double start;
    int last_quarter; /* plain mode: 25/50/75 % lines printed */
    int drew;
};

static void human_bytes(double b, char *buf, size_t n)
{
    if (b >= 1e9)
        snprintf(buf, n, "%.2f GB", b / 1e9);
    else if (b >= 1e6)
        snprintf(buf, n, "%.1f MB", b / 1e6);
    else if (b >= 1e3)
        snprintf(buf, n, "%.1f kB", b / 1e3);
    else
        snprintf(buf, n, "%.0f B", b);
}

static int on_progress(void *ctx, uint64_t have, uint64_t total)
{
    struct progress *p = ctx;
    double dt = ims_now() - p->start;
    char hb[32], tb[32], rb[32];
    human_bytes((double)have, hb, sizeof(hb));
    human_bytes((double)total, tb, sizeof(tb));
    double rate = dt > 0.05 ? (double)have / dt : 0;
    human_bytes(rate, rb, sizeof(rb));
    if (p->tty) {
        char eta[32] = "--:--";
        if (total > 0 && rate > 0 && have <= total) {
            long s = (long)(((double)(total - have)) / rate);
            snprintf(eta, sizeof(eta), "%ld:%02ld", s / 60, s % 60);
        }
        fprintf(stderr, "\r  %-18s %10s / %-10s %10s/s  ETA %s   ", p->file, hb,
                total ? tb : "?", rb, eta);
        p->drew = 1;
    } else if (total > 0) {
        int quarter = (int)((have * 4) / total);
        if (quarter > p->last_quarter && quarter < 4) {
            p->last_quarter = quarter;
            fprintf(stderr, "  %s: %d%% (%s of %s)\n", p->file, quarter * 25, hb, tb);
        }
    }
    return 0;
}

/* ---- the command ------------------------------------------------------------------ */

static int name_ok(const char *name)
{
    size_t n = strlen(name);
    int slashes = 0;
    if (n == 0 || n > 200 || name[0] == '/' || name[n - 1] == '/')
        return 0;
    for (const char *p = name; *p; p++) {
        char c = *p;
        if (c == '/') {
            if (++slashes > 1 || p[1] == '/')
                return 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    /* no "." or ".." segment */
    for (const char *seg = name; seg; seg = strchr(seg, '/') ? strchr(seg, '/') + 1 : NULL) {
        size_t len = strcspn(seg, "/");
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return 0;
    }
    return 1;
}

struct model_file {
    const char *name;
    uint64_t max_bytes;
    fetch_verify_fn *verify;
};

static const struct model_file model_files[] = {
    {"config.json", MODEL_MAX_TEXT_BYTES, verify_json},
    {"vocab.json", MODEL_MAX_TEXT_BYTES, verify_json},
    {"merges.txt", MODEL_MAX_TEXT_BYTES, NULL},
    {"model.safetensors", MODEL_MAX_WEIGHTS_BYTES, verify_safetensors},
};

static int model_fetch(int argc, char **argv)
{
    const char *name = NULL, *base = NULL, *out = NULL;
    int allow_private = 0;
    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        int r;
        if ((r = cli_opt_value(argc, argv, &i, "--base-url", &v)) != 0) {
            if (r < 0)
                return cli_usage("model", cli_help_model, "--base-url needs a value");
            base = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--out", &v)) != 0) {
            if (r < 0)
                return cli_usage("model", cli_help_model, "--out needs a value");
            out = v;
        } else if (!strcmp(argv[i], "--allow-private-urls")) {
            allow_private = 1;
        } else if (argv[i][0] == '-') {
            return cli_usage("model", cli_help_model, "unknown option '%s'", argv[i]);
        } else if (name) {
            return cli_usage("model", cli_help_model, "more than one NAME ('%s', '%s')", name,
                             argv[i]);
        } else {
            name = argv[i];
        }
    }
    if (!name)
        name = MODEL_DEFAULT_NAME;
    if (!name_ok(name))
        return cli_usage("model", cli_help_model,
                         "bad model name '%s' (expected OWNER/MODEL of letters, digits, . _ -)",
                         name);
    if (!base) {
        const char *env = getenv("IMGSEARCH_HF_BASE_URL");
        base = env && *env ? env : MODEL_DEFAULT_BASE;
    }
    size_t base_len = strlen(base);
    while (base_len > 0 && base[base_len - 1] == '/')
        base_len--;

    char dir[PATH_MAX];
    if (out) {
        snprintf(dir, sizeof(dir), "%s", out);
    } else if (!strcmp(name, MODEL_DEFAULT_NAME)) {
        snprintf(dir, sizeof(dir), "%s", cli_default_model_dir());
    } else {
        char parent[PATH_MAX];
        snprintf(parent, sizeof(parent), "%s", cli_default_model_dir());
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent)
            *slash = '\0';
        else
            snprintf(parent, sizeof(parent), ".");
        char flat[256];
        snprintf(flat, sizeof(flat), "%s", name);
        for (char *p = flat; *p; p++)
            if (*p == '/')
                *p = '-';
        if (snprintf(dir, sizeof(dir), "%s/%s", parent, flat) >= (int)sizeof(dir))
            return cli_fail("model", "model folder path too long");
    }

    struct ims_error err = {{0}};
    if (ims_mkdir_p(dir, &err) != IMS_OK)
        return cli_fail("model", "%s", err.message);

    struct fetch_options o;
    fetch_options_default(&o);
    o.allow_private = allow_private;
    o.total_timeout_ms = 0;     /* a 1.7 GB file may take long; stalls are caught below */
    o.low_speed_bytes = 1000;
    o.low_speed_time_s = 30;
    o.max_retries = 3;
    o.retry_base_ms = 1000;

    int tty = isatty(STDERR_FILENO);
    fprintf(stderr, "fetching %s from %.*s into %s\n", name, (int)base_len, base, dir);
    for (size_t i = 0; i < sizeof(model_files) / sizeof(model_files[0]); i++) {
        const struct model_file *mf = &model_files[i];
        char url[FETCH_URL_MAX_BYTES + 1], path[PATH_MAX];
        if (snprintf(url, sizeof(url), "%.*s/%s/resolve/main/%s", (int)base_len, base, name,
                     mf->name) >= (int)sizeof(url))
            return cli_fail("model", "base URL too long");
        if (snprintf(path, sizeof(path), "%s/%s", dir, mf->name) >= (int)sizeof(path))
            return cli_fail("model", "model folder path too long");
        enum ims_status st = fetch_url_check(url, &err);
        if (st != IMS_OK)
            return cli_usage("model", cli_help_model, "bad base URL '%.*s': %s", (int)base_len,
                             base, err.message);
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
            fprintf(stderr, "  %s: already present (%lld bytes), kept\n", mf->name,
                    (long long)sb.st_size);
            continue;
        }
        struct progress pg = {.file = mf->name, .tty = tty, .start = ims_now()};
        struct fetch_file_request req = {
            .url = url,
            .path = path,
            .max_bytes = mf->max_bytes,
            .resume = 1,
            .progress = on_progress,
            .progress_ctx = &pg,
            .verify = mf->verify,
        };
        struct fetch_file_info info = {0};
        if (!tty)
            fprintf(stderr, "  %s: GET %s\n", mf->name, url);
        st = fetch_to_file(&req, &o, &info, &err);
        if (pg.drew)
            fputc('\n', stderr);
        if (st != IMS_OK) {
            const char *hint = st == IMS_ERR_REFUSED && !allow_private
                                   ? " (use --allow-private-urls for a local or intranet server)"
                                   : "";
            return cli_fail("model", "%s: %s%s", mf->name, err.message, hint);
        }
        double dt = ims_now() - pg.start;
        char hb[32];
        human_bytes((double)info.size, hb, sizeof(hb));
        if (info.resumed_from > 0)
            fprintf(stderr, "  %s: %s in %.1f s (resumed at byte %llu)\n", mf->name, hb, dt,
                    (unsigned long long)info.resumed_from);
        else
            fprintf(stderr, "  %s: %s in %.1f s\n", mf->name, hb, dt);
    }
    printf("%s\n", dir);
    return 0;
}

int cli_cmd_model(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage("model", cli_help_model, "missing subcommand (fetch)");
    if (!strcmp(argv[1], "fetch"))
        return model_fetch(argc, argv);
    return cli_usage("model", cli_help_model, "unknown subcommand '%s'", argv[1]);
}
