/* SPDX-License-Identifier: MIT */
/*
 * prng.c: PRNG models: full-size CLIP weights regenerated bit for bit from a
 * seed (tests/golden/clip/PRNG_MODEL.md, docs/internals/model-files.md), so
 * tests and benchmarks can run a ViT-B/32 without shipping 600 MB.
 *
 * Values: FNV-1a 64 of the tensor name, mixed with the seed, then
 * splitmix64's finaliser of base + (i + 1) * GOLDEN for element i; the top
 * 24 bits give u in [0, 1), value = offset + scale * (2u - 1) in double,
 * stored as float32. offset/scale depend on the name only (table below), so
 * any element of any tensor is computable on its own: the tests check
 * loaded weights against clip__prng_value element by element.
 *
 * clip_make_prng_model writes the folder: config.json (copied), vocab.json
 * and merges.txt (copied), and model.safetensors in F32 with the tensors of
 * clip__tensor_specs. The safetensors header is padded with spaces to a
 * multiple of 8 so the data section (and every F32 tensor) is aligned and
 * the loader can use it in place. Data are generated and written streaming
 * through a 4 MB buffer, the tensor's elements split between two threads
 * (generation is ~3 ns/value, a ViT-B/32 has 150 M), and land in a temp
 * file that is fsync'ed and renamed: a crash never leaves a half-written
 * model.safetensors behind.
 */

#include "clip_int.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PRNG_GOLDEN 0x9E3779B97F4A7C15ull
#define PRNG_CHUNK_FLOATS (1u << 20) /* 4 MB write buffer */
#define PRNG_FILE_MAX (64u << 20)    /* config / vocab copies */

/* ---- values ------------------------------------------------------------------ */

struct prng_tensor {
    uint64_t base;
    double offset, scale;
};

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !memcmp(s + n - m, suffix, m);
}

static void prng_tensor_init(struct prng_tensor *pt, const char *name, uint64_t seed, int patch,
                             int64_t last_dim)
{
    pt->base = ims_fnv1a64(name, strlen(name)) ^ (seed * PRNG_GOLDEN);
    int is_norm = strstr(name, "layer_norm") || strstr(name, "layrnorm") ||
                  strstr(name, "layernorm");
    pt->offset = 0;
    if (!strcmp(name, "logit_scale")) {
        pt->offset = 4.6052;
        pt->scale = 0;
    } else if (is_norm && ends_with(name, "weight")) {
        pt->offset = 1.0;
        pt->scale = 0.2;
    } else if (is_norm && ends_with(name, "bias")) {
        pt->scale = 0.1;
    } else if (ends_with(name, "bias")) {
        pt->scale = 0.05;
    } else if (ends_with(name, "patch_embedding.weight")) {
        pt->scale = sqrt(3.0 / (3.0 * patch * patch));
    } else if (strstr(name, "embedding")) {
        pt->scale = 0.05;
    } else {
        pt->scale = sqrt(3.0 / (double)(last_dim > 0 ? last_dim : 1));
    }
}

static inline float prng_at(const struct prng_tensor *pt, uint64_t i)
{
    uint64_t z = pt->base + (i + 1) * PRNG_GOLDEN;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    double u = (double)(z >> 40) / 16777216.0;
    return (float)(pt->offset + pt->scale * (2.0 * u - 1.0));
}

float clip__prng_value(const char *name, uint64_t seed, uint64_t i, int patch, int64_t last_dim)
{
    struct prng_tensor pt;
    prng_tensor_init(&pt, name, seed, patch, last_dim);
    return prng_at(&pt, i);
}

/* ---- writing ------------------------------------------------------------------ */

struct fill_job {
    const struct prng_tensor *pt;
    uint64_t first;
    size_t n;
    unsigned char *dst; /* n x float32 little-endian */
};

static void fill(const struct fill_job *j)
{
    for (size_t k = 0; k < j->n; k++) {
        float f = prng_at(j->pt, j->first + k);
        uint32_t bits;
        memcpy(&bits, &f, 4);
        unsigned char *d = j->dst + 4 * k;
        d[0] = (unsigned char)bits;
        d[1] = (unsigned char)(bits >> 8);
        d[2] = (unsigned char)(bits >> 16);
        d[3] = (unsigned char)(bits >> 24);
    }
}

static void *fill_thread(void *arg)
{
    fill(arg);
    return NULL;
}

static enum ims_status write_all(int fd, const void *p, size_t n, const char *path,
                                 struct ims_error *err)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return ims_error_set(err, IMS_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        }
        c += w;
        n -= (size_t)w;
    }
    return IMS_OK;
}

static uint64_t spec_count(const struct clip_tensor_spec *s)
{
    uint64_t c = 1;
    for (int i = 0; i < s->n_dims; i++)
        c *= (uint64_t)s->shape[i];
    return c;
}

/* The safetensors header for `specs` laid out back to back, padded with
 * spaces so that 8 + header length is a multiple of 8. */
static enum ims_status build_header(const struct clip_tensor_spec *specs, int n,
                                    struct ims_buf *hdr, struct ims_error *err)
{
    enum ims_status st = ims_buf_printf(hdr, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t at = 0;
    for (int i = 0; i < n && st == IMS_OK; i++) {
        const struct clip_tensor_spec *s = &specs[i];
        uint64_t bytes = spec_count(s) * 4;
        st = ims_buf_printf(hdr, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[", s->name);
        for (int d = 0; d < s->n_dims && st == IMS_OK; d++)
            st = ims_buf_printf(hdr, d ? ",%lld" : "%lld", (long long)s->shape[d]);
        if (st == IMS_OK)
            st = ims_buf_printf(hdr, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at,
                                (unsigned long long)(at + bytes));
        at += bytes;
    }
    if (st == IMS_OK)
        st = ims_buf_append(hdr, "}", 1);
    while (st == IMS_OK && hdr->len % 8 != 0)
        st = ims_buf_append(hdr, " ", 1);
    if (st != IMS_OK)
        return ims_error_set(err, st, "cannot build the safetensors header");
    return IMS_OK;
}

static enum ims_status write_tensors(int fd, const char *path, const struct clip_tensor_spec *specs,
                                     int n, uint64_t seed, int patch, unsigned char *buf,
                                     struct ims_error *err)
{
    for (int i = 0; i < n; i++) {
        const struct clip_tensor_spec *s = &specs[i];
        struct prng_tensor pt;
        prng_tensor_init(&pt, s->name, seed, patch, s->n_dims ? s->shape[s->n_dims - 1] : 1);
        uint64_t total = spec_count(s);
        for (uint64_t first = 0; first < total; first += PRNG_CHUNK_FLOATS) {
            size_t len = (size_t)IMS_MIN(total - first, (uint64_t)PRNG_CHUNK_FLOATS);
            struct fill_job jobs[2] = {
                {&pt, first, len / 2, buf},
                {&pt, first + len / 2, len - len / 2, buf + 4 * (len / 2)},
            };
            pthread_t th;
            int threaded = len >= 65536 && pthread_create(&th, NULL, fill_thread, &jobs[1]) == 0;
            fill(&jobs[0]);
            if (threaded)
                pthread_join(th, NULL);
            else
                fill(&jobs[1]);
            enum ims_status st = write_all(fd, buf, 4 * len, path, err);
            if (st != IMS_OK)
                return st;
        }
    }
    return IMS_OK;
}

static enum ims_status copy_file(const char *from, const char *to, struct ims_error *err)
{
    char *data = NULL;
    size_t len = 0;
    enum ims_status st = ims_file_read(from, PRNG_FILE_MAX, &data, &len, err);
    if (st == IMS_OK)
        st = ims_file_write_atomic(to, data, len, err);
    ims_free(data);
    return st;
}

enum ims_status clip_make_prng_model(const char *config_path, uint64_t seed, const char *out_dir,
                                     const char *vocab_dir, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    char *json = NULL;
    size_t json_len = 0;
    struct clip_tensor_spec *specs = NULL;
    int n_specs = 0;
    struct ims_buf hdr;
    unsigned char *buf = NULL;
    char *path = NULL, *tmp = NULL, *src = NULL;
    int fd = -1;
    size_t cap = IMS_MAX(strlen(out_dir), strlen(vocab_dir)) + 64;

    ims_buf_init(&hdr, 64u << 20);
    path = ims_malloc(cap);
    tmp = ims_malloc(cap);
    src = ims_malloc(cap);
    if (!path || !tmp || !src) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    tmp[0] = '\0';
    st = ims_file_read(config_path, 1u << 20, &json, &json_len, err);
    if (st != IMS_OK)
        goto out;
    struct clip_config cfg;
    st = clip__config_parse(json, json_len, &cfg, err);
    if (st != IMS_OK) {
        ims_error_prefix(err, "%s", config_path);
        goto out;
    }
    /* Check the vocabulary exists before writing 600 MB. */
    static const char *const vocab_files[] = {"vocab.json", "merges.txt"};
    for (size_t i = 0; i < IMS_ARRAY_LEN(vocab_files); i++) {
        snprintf(src, cap, "%s/%s", vocab_dir, vocab_files[i]);
        if (access(src, R_OK) != 0) {
            st = ims_error_set(err, IMS_ERR_NOT_FOUND, "vocabulary file %s: %s", src,
                               strerror(errno));
            goto out;
        }
    }
    st = clip__tensor_specs(&cfg, NULL, &specs, &n_specs, err);
    if (st != IMS_OK)
        goto out;
    st = build_header(specs, n_specs, &hdr, err);
    if (st != IMS_OK)
        goto out;
    buf = ims_malloc(4u * PRNG_CHUNK_FLOATS);
    if (!buf) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    st = ims_mkdir_p(out_dir, err);
    if (st != IMS_OK)
        goto out;

    snprintf(path, cap, "%s/config.json", out_dir);
    st = ims_file_write_atomic(path, json, json_len, err);
    if (st != IMS_OK)
        goto out;
    for (size_t i = 0; i < IMS_ARRAY_LEN(vocab_files); i++) {
        snprintf(src, cap, "%s/%s", vocab_dir, vocab_files[i]);
        snprintf(path, cap, "%s/%s", out_dir, vocab_files[i]);
        st = copy_file(src, path, err);
        if (st != IMS_OK)
            goto out;
    }

    snprintf(path, cap, "%s/model.safetensors", out_dir);
    snprintf(tmp, cap, "%s/model.safetensors.tmp.%ld", out_dir, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = ims_error_set(err, IMS_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hdr.len >> (8 * i));
    st = write_all(fd, len8, 8, tmp, err);
    if (st == IMS_OK)
        st = write_all(fd, hdr.data, hdr.len, tmp, err);
    if (st == IMS_OK)
        st = write_tensors(fd, tmp, specs, n_specs, seed, cfg.vision.patch_size, buf, err);
    if (st != IMS_OK)
        goto out;
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        st = ims_error_set(err, IMS_ERR_IO, "cannot flush %s: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        st = ims_error_set(err, IMS_ERR_IO, "cannot rename %s to %s: %s", tmp, path,
                           strerror(errno));
        goto out;
    }
    tmp[0] = '\0'; /* nothing left to remove */
out:
    if (fd >= 0)
        close(fd);
    if (st != IMS_OK && tmp && tmp[0])
        unlink(tmp);
    ims_buf_fini(&hdr);
    ims_free(buf);
    ims_free(specs);
    ims_free(json);
    ims_free(path);
    ims_free(tmp);
    ims_free(src);
    return st;
}
