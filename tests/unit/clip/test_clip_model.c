/* SPDX-License-Identifier: MIT */
/*
 * test_clip_model.c: model files: clip_model_load on the tiny F16 golden
 * model, models written in the test (F32 aligned / unaligned, BF16, and
 * every kind of damage), the PRNG generator, and allocation failures.
 *
 * Model folders are built under a mkdtemp folder in /tmp: the tiny golden
 * (tests/golden/clip/tiny) plus the bundled vocabulary (data/vocab). Values
 * are checked against decoders written here independently of model.c
 * (ldexp-based F16, shift-based BF16), and PRNG weights against
 * clip__prng_value and prng_selfcheck.json.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clip_int.h"

/* ---- helpers ---------------------------------------------------------------- */

static const char *src_dir(void)
{
    const char *s = getenv("IMS_SOURCE_DIR");
    return s && *s ? s : IMS_SOURCE_DIR;
}

/* noinline: inlined, GCC 12's -Wdangling-pointer (-O3) takes the result
 * for the address of the local `data` */
__attribute__((noinline)) static char *read_all(const char *path, size_t *len)
{
    char *data = NULL;
    struct ims_error err = {0};
    enum ims_status st = ims_file_read(path, 1u << 30, &data, len, &err);
    if (st != IMS_OK)
        fail_msg("cannot read %s: %s", path, err.message);
    return data;
}

static void write_all(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void copy(const char *from, const char *to)
{
    size_t len;
    char *d = read_all(from, &len);
    write_all(to, d, len);
    ims_free(d);
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            rm_rf(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

struct fixture {
    char root[64];   /* mkdtemp folder */
    char model[128]; /* root/tiny: complete tiny model folder */
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    snprintf(fx->root, sizeof(fx->root), "/tmp/ims_test_model_XXXXXX");
    if (!mkdtemp(fx->root))
        return -1;
    snprintf(fx->model, sizeof(fx->model), "%s/tiny", fx->root);
    mkdir(fx->model, 0755);
    char from[4096], to[4096];
    const char *files[][2] = {{"tests/golden/clip/tiny", "config.json"},
                              {"tests/golden/clip/tiny", "model.safetensors"},
                              {"data/vocab", "vocab.json"},
                              {"data/vocab", "merges.txt"}};
    for (size_t i = 0; i < 4; i++) {
        snprintf(from, sizeof(from), "%s/%s/%s", src_dir(), files[i][0], files[i][1]);
        snprintf(to, sizeof(to), "%s/%s", fx->model, files[i][1]);
        copy(from, to);
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    ims_alloc_set_fail_after(-1);
    rm_rf(fx->root);
    free(fx);
    return 0;
}

/* Independent decoders, for checking model.c's conversions. */
static float f16_ref(const unsigned char *p)
{
    unsigned h = p[0] | (p[1] << 8);
    int e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0)
        v = ldexp(m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(1024 + m, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

static float bf16_ref(const unsigned char *p)
{
    uint32_t b = (uint32_t)(p[0] | (p[1] << 8)) << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* Element count of a tensor from its shape (validated by the loader). */
static size_t count_of(const struct clip_safetensors_tensor *t)
{
    size_t c = 1;
    for (int i = 0; i < t->n_dims; i++)
        c *= (size_t)t->shape[i];
    return c;
}

static struct clip_model *load_ok(const char *dir)
{
    struct clip_model *m = NULL;
    struct ims_error err = {0};
    enum ims_status st = clip_model_load(dir, NULL, &m, &err);
    if (st != IMS_OK)
        fail_msg("load %s: %s", dir, ims_error_message(&err, st));
    return m;
}

static void load_fails(const char *dir, enum ims_status want, const char *needle)
{
    struct clip_model *m = (struct clip_model *)0x1; /* must stay untouched */
    struct ims_error err = {0};
    enum ims_status st = clip_model_load(dir, NULL, &m, &err);
    if (st != want || !strstr(err.message, needle))
        fail_msg("load %s: want %s with \"%s\", got %s \"%s\"", dir, ims_status_name(want), needle,
                 ims_status_name(st), err.message);
    assert_ptr_equal(m, (struct clip_model *)0x1);
}

/* Every bound tensor of `m` (an all-F16 file) equals the independent F16
 * decode of the file's bytes (NaN matching NaN); returns how many distinct
 * 16-bit patterns were seen. */
static int check_f16_weights(struct clip_model *m)
{
    static unsigned char seen[65536];
    memset(seen, 0, sizeof(seen));
    struct clip_tensor_spec *specs = NULL;
    int n = 0;
    assert_int_equal(clip__tensor_specs(&m->config, m, &specs, &n, NULL), IMS_OK);
    assert_int_equal(n, 16 * (m->config.text.num_hidden_layers +
                              m->config.vision.num_hidden_layers) + 13 + 1);
    for (int i = 0; i < n; i++) {
        const struct clip_safetensors_tensor *t =
            clip__safetensors_find(&m->weights_file, specs[i].name);
        assert_non_null(t);
        assert_int_equal(t->dtype, CLIP_DTYPE_F16);
        const unsigned char *raw = t->data;
        if (!specs[i].dst) {
            assert_string_equal(specs[i].name, "logit_scale");
            assert_float_equal(clip_model_logit_scale(m), expf(f16_ref(raw)), 1e-5);
            continue;
        }
        const float *w = *specs[i].dst;
        assert_non_null(w);
        assert_int_equal((uintptr_t)w % 64, 0); /* converted: 64-byte aligned in owned */
        size_t c = count_of(t);
        for (size_t k = 0; k < c; k++) {
            float want = f16_ref(raw + 2 * k);
            seen[raw[2 * k] | (raw[2 * k + 1] << 8)] = 1;
            if (isnan(want) ? !isnan(w[k]) : w[k] != want)
                fail_msg("%s[%zu]: %g != %g", specs[i].name, k, w[k], want);
            /* the sign of zero survives too */
            if (want == 0 && signbit(want) != signbit(w[k]))
                fail_msg("%s[%zu]: sign of zero lost", specs[i].name, k);
        }
    }
    ims_free(specs);
    int distinct = 0;
    for (int i = 0; i < 65536; i++)
        distinct += seen[i];
    return distinct;
}

/* ---- the tiny golden model ------------------------------------------------------ */

static void test_tiny_loads(void **state)
{
    struct fixture *fx = *state;
    struct clip_model *m = load_ok(fx->model);
    assert_int_equal(clip_model_embed_dim(m), 32);
    assert_int_equal(clip_model_image_size(m), 224);
    assert_int_equal(clip_model_precision(m), CLIP_PRECISION_F32);
    assert_non_null(clip_model_tokenizer(m));
    /* "<architecture>:<16 hex digits of fingerprint>", independent of the folder */
    const char *name = clip_model_name(m);
    assert_int_equal(strncmp(name, "vit-custom-32-128x2-32:", 23), 0);
    assert_int_equal(strlen(name), 23 + 16);
    assert_int_equal(strspn(name + 23, "0123456789abcdef"), 16);
    {
        char copy[300], cmd[700];
        snprintf(copy, sizeof(copy), "%s-moved-elsewhere", fx->model);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -r '%s' '%s'", copy, fx->model, copy);
        assert_int_equal(system(cmd), 0);
        struct clip_model *moved = load_ok(copy);
        assert_string_equal(clip_model_name(moved), name);
        clip_model_free(moved);
        /* other weights of the same shape: one byte of the first tensor changed */
        char st_path[400];
        snprintf(st_path, sizeof(st_path), "%s/model.safetensors", copy);
        const struct clip_safetensors_tensor *t0 = &m->weights_file.tensors[0];
        long off = (long)((const char *)t0->data - (const char *)m->weights_file.map);
        FILE *f = fopen(st_path, "r+b");
        assert_non_null(f);
        assert_int_equal(fseek(f, off, SEEK_SET), 0);
        int c = fgetc(f);
        assert_int_equal(fseek(f, off, SEEK_SET), 0);
        fputc(c ^ 0x01, f);
        assert_int_equal(fclose(f), 0);
        struct clip_model *other = load_ok(copy);
        assert_string_not_equal(clip_model_name(other), name);
        clip_model_free(other);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", copy);
        assert_int_equal(system(cmd), 0);
    }
    assert_int_equal(m->config.text.hidden_size, 32);
    assert_int_equal(m->config.vision.hidden_size, 128);
    assert_int_equal(m->config.vision.num_hidden_layers, 2);
    assert_int_equal(m->config.text.eos_token_id, 49407);

    check_f16_weights(m);
    /* The I64 position_ids buffer is in the file but not bound. */
    const struct clip_safetensors_tensor *pid =
        clip__safetensors_find(&m->weights_file, "text_model.embeddings.position_ids");
    assert_non_null(pid);
    assert_int_equal(pid->dtype, CLIP_DTYPE_OTHER);
    assert_string_equal(pid->dtype_name, "I64");
    clip_model_free(m);
}

static void test_params(void **state)
{
    struct fixture *fx = *state;
    struct clip_model_params p;
    clip_model_params_default(&p);
    assert_int_equal(p.precision, CLIP_PRECISION_F32);
    assert_true(p.n_threads >= 1);
    p.n_threads = 3;
    struct clip_model *m = NULL;
    struct ims_error err = {0};
    assert_int_equal(clip_model_load(fx->model, &p, &m, &err), IMS_OK);
    assert_int_equal(m->params.n_threads, 3);
    clip_model_free(m);
    p.precision = (enum clip_precision)7;
    m = NULL;
    assert_int_equal(clip_model_load(fx->model, &p, &m, &err), IMS_ERR_INVALID);
    assert_null(m);
    clip_model_free(NULL);
}

static void test_alloc_failures(void **state)
{
    struct fixture *fx = *state;
    int ok = 0;
    long k;
    for (k = 0; k < 1000 && !ok; k++) {
        struct clip_model *m = NULL;
        struct ims_error err = {0};
        ims_alloc_set_fail_after(k);
        enum ims_status st = clip_model_load(fx->model, NULL, &m, &err);
        ims_alloc_set_fail_after(-1);
        if (st == IMS_OK) {
            ok = 1;
            assert_int_equal(clip_model_embed_dim(m), 32);
            clip_model_free(m);
        } else {
            if (st != IMS_ERR_NOMEM)
                fail_msg("fail_after(%ld): %s: %s", k, ims_status_name(st), err.message);
            assert_null(m);
        }
    }
    assert_true(ok);
    assert_true(k > 5); /* the loader does allocate: failures were really injected */
    print_message("model loaded after %ld injected allocation failures\n", k - 1);
}

/* ---- models written by the test ------------------------------------------------- */

/* How to damage a written model. */
struct damage {
    const char *dtype;     /* "F32" (default), "BF16" (PRNG values truncated) or "F16"
                              (every 16-bit pattern: element k of tensor i is
                              (k * 40503 + i) mod 2^16) for every tensor */
    int pad;               /* extra header bytes: 1..3 make the F32 data unaligned */
    const char *skip;      /* leave this tensor out */
    const char *bad_shape; /* give this tensor a wrong first dimension */
    const char *bad_dtype; /* write this tensor as I32 */
};

/* Writes a model for config.json `cfg_path` into `dir` (vocabulary copied),
 * values clip__prng_value(seed 7), damaged as `dm` says. */
static void write_model(const char *dir, const char *cfg_path, const struct damage *dm)
{
    char p[4096];
    mkdir(dir, 0755);
    snprintf(p, sizeof(p), "%s/config.json", dir);
    copy(cfg_path, p);
    const char *vocab[] = {"vocab.json", "merges.txt"};
    for (int i = 0; i < 2; i++) {
        char from[4096];
        snprintf(from, sizeof(from), "%s/data/vocab/%s", src_dir(), vocab[i]);
        snprintf(p, sizeof(p), "%s/%s", dir, vocab[i]);
        copy(from, p);
    }
    size_t clen;
    char *cjson = read_all(cfg_path, &clen);
    struct clip_config cfg;
    assert_int_equal(clip__config_parse(cjson, clen, &cfg, NULL), IMS_OK);
    ims_free(cjson);
    struct clip_tensor_spec *specs;
    int n;
    assert_int_equal(clip__tensor_specs(&cfg, NULL, &specs, &n, NULL), IMS_OK);

    int bf16 = dm->dtype && !strcmp(dm->dtype, "BF16");
    int f16 = dm->dtype && !strcmp(dm->dtype, "F16");
    struct ims_buf hdr, data;
    ims_buf_init(&hdr, 1 << 24);
    ims_buf_init(&data, 1 << 30);
    assert_int_equal(ims_buf_printf(&hdr, "{\"__metadata__\":{\"format\":\"pt\"}"), IMS_OK);
    for (int i = 0; i < n; i++) {
        const struct clip_tensor_spec *s = &specs[i];
        if (dm->skip && !strcmp(dm->skip, s->name))
            continue;
        int64_t shape[4];
        memcpy(shape, s->shape, sizeof(shape));
        size_t c = 1;
        for (int d = 0; d < s->n_dims; d++)
            c *= (size_t)shape[d];
        int other = dm->bad_dtype && !strcmp(dm->bad_dtype, s->name);
        if (dm->bad_shape && !strcmp(dm->bad_shape, s->name) && s->n_dims > 0) {
            shape[0] += 1;
            c = c / (size_t)s->shape[0] * (size_t)shape[0];
        }
        size_t esz = other ? 4 : bf16 || f16 ? 2 : 4;
        size_t begin = data.len;
        for (size_t k = 0; k < c; k++) {
            float v = clip__prng_value(s->name, 7, k, cfg.vision.patch_size,
                                       s->n_dims ? s->shape[s->n_dims - 1] : 1);
            uint32_t b;
            memcpy(&b, &v, 4);
            unsigned char le[4] = {(unsigned char)b, (unsigned char)(b >> 8),
                                   (unsigned char)(b >> 16), (unsigned char)(b >> 24)};
            if (f16 && !other) {
                uint16_t h = (uint16_t)(k * 40503u + (unsigned)i);
                le[0] = (unsigned char)h;
                le[1] = (unsigned char)(h >> 8);
            }
            assert_int_equal(ims_buf_append(&data, bf16 && !other ? le + 2 : le, esz), IMS_OK);
        }
        assert_int_equal(
            ims_buf_printf(&hdr, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", s->name,
                           other ? "I32" : bf16 ? "BF16" : f16 ? "F16" : "F32"),
            IMS_OK);
        for (int d = 0; d < s->n_dims; d++)
            assert_int_equal(ims_buf_printf(&hdr, d ? ",%lld" : "%lld", (long long)shape[d]),
                             IMS_OK);
        assert_int_equal(ims_buf_printf(&hdr, "],\"data_offsets\":[%zu,%zu]}", begin, data.len),
                         IMS_OK);
    }
    assert_int_equal(ims_buf_append(&hdr, "}", 1), IMS_OK);
    while (hdr.len % 8 != (size_t)(dm->pad % 8))
        assert_int_equal(ims_buf_append(&hdr, " ", 1), IMS_OK);
    snprintf(p, sizeof(p), "%s/model.safetensors", dir);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hdr.len >> (8 * i));
    assert_int_equal(fwrite(len8, 1, 8, f), 8);
    assert_int_equal(fwrite(hdr.data, 1, hdr.len, f), hdr.len);
    assert_int_equal(fwrite(data.data, 1, data.len, f), data.len);
    assert_int_equal(fclose(f), 0);
    ims_buf_fini(&hdr);
    ims_buf_fini(&data);
    ims_free(specs);
}

static const char *tiny_config(void)
{
    static char p[4096];
    snprintf(p, sizeof(p), "%s/tests/golden/clip/tiny/config.json", src_dir());
    return p;
}

/* Compares every bound tensor of `m` with clip__prng_value(seed), through
 * `round` (identity for F32, BF16 truncation for BF16 files). */
static void check_prng_weights(struct clip_model *m, uint64_t seed, int bf16, int expect_in_map)
{
    struct clip_tensor_spec *specs;
    int n;
    assert_int_equal(clip__tensor_specs(&m->config, m, &specs, &n, NULL), IMS_OK);
    const char *map = m->weights_file.map;
    for (int i = 0; i < n; i++) {
        const struct clip_tensor_spec *s = &specs[i];
        size_t c = 1;
        for (int d = 0; d < s->n_dims; d++)
            c *= (size_t)s->shape[d];
        int64_t last = s->n_dims ? s->shape[s->n_dims - 1] : 1;
        if (!s->dst) {
            float want = clip__prng_value(s->name, seed, 0, m->config.vision.patch_size, last);
            if (bf16) {
                unsigned char le[4];
                memcpy(le, &want, 4);
                want = bf16_ref(le + 2);
            }
            assert_float_equal(clip_model_logit_scale(m), expf(want), 1e-4);
            continue;
        }
        const float *w = *s->dst;
        int in_map = (const char *)w >= map && (const char *)w < map + m->weights_file.map_bytes;
        assert_int_equal(in_map, expect_in_map);
        for (size_t k = 0; k < c; k++) {
            float want = clip__prng_value(s->name, seed, k, m->config.vision.patch_size, last);
            if (bf16) {
                unsigned char le[4];
                memcpy(le, &want, 4); /* little-endian host: high half at +2 */
                want = bf16_ref(le + 2);
            }
            if (w[k] != want)
                fail_msg("%s[%zu]: %.9g != %.9g", s->name, k, w[k], want);
        }
    }
    ims_free(specs);
}

static void test_f32_bf16_unaligned(void **state)
{
    struct fixture *fx = *state;
    char dir[256];
    struct damage dm = {0};
    snprintf(dir, sizeof(dir), "%s/f32", fx->root);
    write_model(dir, tiny_config(), &dm);
    struct clip_model *m = load_ok(dir);
    assert_null(m->owned); /* aligned F32: all in place */
    check_prng_weights(m, 7, 0, 1);
    clip_model_free(m);

    dm.pad = 2;
    snprintf(dir, sizeof(dir), "%s/f32u", fx->root);
    write_model(dir, tiny_config(), &dm);
    m = load_ok(dir);
    assert_non_null(m->owned);
    check_prng_weights(m, 7, 0, 0);
    clip_model_free(m);

    dm.pad = 0;
    dm.dtype = "BF16";
    snprintf(dir, sizeof(dir), "%s/bf16", fx->root);
    write_model(dir, tiny_config(), &dm);
    m = load_ok(dir);
    check_prng_weights(m, 7, 1, 0);
    clip_model_free(m);

    /* F16 with every bit pattern: subnormals, infinities, NaNs, -0. */
    dm.dtype = "F16";
    dm.pad = 1;
    snprintf(dir, sizeof(dir), "%s/f16", fx->root);
    write_model(dir, tiny_config(), &dm);
    m = load_ok(dir);
    assert_int_equal(check_f16_weights(m), 65536);
    clip_model_free(m);
}

static void test_damaged_models(void **state)
{
    struct fixture *fx = *state;
    char dir[256];
    struct {
        struct damage dm;
        enum ims_status st;
        const char *needle;
    } cases[] = {
        {{.skip = "vision_model.encoder.layers.1.mlp.fc2.bias"},
         IMS_ERR_CORRUPT,
         "missing tensor 'vision_model.encoder.layers.1.mlp.fc2.bias'"},
        {{.skip = "logit_scale"}, IMS_ERR_CORRUPT, "missing tensor 'logit_scale'"},
        {{.bad_shape = "text_model.encoder.layers.0.self_attn.q_proj.weight"},
         IMS_ERR_CORRUPT,
         "'text_model.encoder.layers.0.self_attn.q_proj.weight' has shape (33, 32), expected "
         "(32, 32)"},
        {{.bad_shape = "vision_model.embeddings.patch_embedding.weight"},
         IMS_ERR_CORRUPT,
         "expected (128, 3, 32, 32)"},
        {{.bad_dtype = "text_projection.weight"},
         IMS_ERR_UNSUPPORTED,
         "'text_projection.weight' has dtype I32"},
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(cases); i++) {
        snprintf(dir, sizeof(dir), "%s/bad%zu", fx->root, i);
        write_model(dir, tiny_config(), &cases[i].dm);
        load_fails(dir, cases[i].st, cases[i].needle);
    }

    /* Folder-level damage on a copy of the tiny model. */
    char p[4096], q[4096];
    snprintf(p, sizeof(p), "%s/nonexistent", fx->root);
    load_fails(p, IMS_ERR_NOT_FOUND, "config.json");

    snprintf(p, sizeof(p), "%s/model.safetensors", fx->model);
    snprintf(q, sizeof(q), "%s/model.safetensors.bak", fx->root);
    rename(p, q);
    load_fails(fx->model, IMS_ERR_NOT_FOUND, "model.safetensors");
    /* truncated: every tensor past the cut is out of range */
    size_t len;
    char *full = read_all(q, &len);
    write_all(p, full, len - 1000);
    load_fails(fx->model, IMS_ERR_CORRUPT, "beyond the data section");
    write_all(p, full, 5);
    load_fails(fx->model, IMS_ERR_CORRUPT, "too short");
    write_all(p, full, 4000); /* header cut */
    load_fails(fx->model, IMS_ERR_CORRUPT, "beyond the end of the file");
    write_all(p, full, len);
    ims_free(full);

    snprintf(p, sizeof(p), "%s/config.json", fx->model);
    snprintf(q, sizeof(q), "%s/config.json.bak", fx->root);
    rename(p, q);
    write_all(p, "{\"architectures\": [\"CLIPModel\"", 30);
    load_fails(fx->model, IMS_ERR_INVALID, "invalid JSON");
    const char *other = "{\"architectures\": [\"SiglipModel\"], \"model_type\": \"siglip\"}";
    write_all(p, other, strlen(other));
    load_fails(fx->model, IMS_ERR_UNSUPPORTED, "SiglipModel");
    /* A valid config that does not match the weights: shape errors. */
    size_t clen;
    char *cfg = read_all(q, &clen);
    char *at = strstr(cfg, "\"projection_dim\": 32");
    assert_non_null(at);
    memcpy(at, "\"projection_dim\": 64", 20);
    write_all(p, cfg, clen);
    load_fails(fx->model, IMS_ERR_CORRUPT, "expected (64, ");
    ims_free(cfg);
    rename(q, p);
    clip_model_free(load_ok(fx->model)); /* restored */
}

/* ---- PRNG ----------------------------------------------------------------------- */

static void test_prng_selfcheck(void **state)
{
    (void)state;
    char p[4096];
    snprintf(p, sizeof(p), "%s/tests/golden/clip/prng-vitb32/prng_selfcheck.json", src_dir());
    json_error_t jerr;
    json_t *root = json_load_file(p, 0, &jerr);
    assert_non_null(root);
    const char *name;
    json_t *vals;
    int n_checked = 0;
    json_object_foreach(root, name, vals)
    {
        size_t i;
        json_t *v;
        json_array_foreach(vals, i, v)
        {
            /* last_dim only matters for plain linear weights, absent here */
            float got = clip__prng_value(name, 1, i, 32, 768);
            float want = (float)json_number_value(v);
            if (got != want)
                fail_msg("%s[%zu]: %.9g != %.9g", name, i, got, want);
            n_checked++;
        }
    }
    json_decref(root);
    assert_true(n_checked >= 4 * 1 + 3);
    /* The scale rule for plain weights: sqrt(3 / last_dim) bounds every value. */
    for (uint64_t i = 0; i < 1000; i++) {
        float v = clip__prng_value("text_projection.weight", 1, i, 32, 512);
        assert_true(fabsf(v) <= sqrtf(3.0f / 512) + 1e-6f);
    }
    /* Different seeds, different values. */
    assert_true(clip__prng_value("text_projection.weight", 1, 0, 32, 512) !=
                clip__prng_value("text_projection.weight", 2, 0, 32, 512));
}

static void test_prng_model_roundtrip(void **state)
{
    struct fixture *fx = *state;
    char out[256], vocab[4096];
    snprintf(out, sizeof(out), "%s/prng/nested", fx->root);
    snprintf(vocab, sizeof(vocab), "%s/data/vocab", src_dir());
    struct ims_error err = {0};
    enum ims_status st = clip_make_prng_model(tiny_config(), 42, out, vocab, &err);
    if (st != IMS_OK)
        fail_msg("make: %s", err.message);
    struct clip_model *m = load_ok(out);
    assert_null(m->owned); /* F32, 8-byte aligned data section: used in place */
    check_prng_weights(m, 42, 0, 1);
    /* header padded so that the data section starts on 8 bytes */
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | ((const unsigned char *)m->weights_file.map)[i];
    assert_int_equal((8 + hlen) % 8, 0);
    clip_model_free(m);

    /* config and vocabulary are byte copies */
    size_t a_len, b_len;
    char p[4096];
    snprintf(p, sizeof(p), "%s/merges.txt", out);
    char *a = read_all(p, &a_len);
    snprintf(p, sizeof(p), "%s/merges.txt", vocab);
    char *b = read_all(p, &b_len);
    assert_int_equal(a_len, b_len);
    assert_memory_equal(a, b, a_len);
    ims_free(a);
    ims_free(b);

    /* errors: bad config, missing vocabulary; nothing half-written */
    snprintf(out, sizeof(out), "%s/prng-bad", fx->root);
    snprintf(p, sizeof(p), "%s/bad.json", fx->root);
    write_all(p, "{\"model_type\": \"bert\"}", 22);
    assert_int_equal(clip_make_prng_model(p, 1, out, vocab, &err), IMS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.message, "bert"));
    assert_int_equal(access(out, F_OK), -1);
    assert_int_equal(clip_make_prng_model(tiny_config(), 1, out, fx->root, &err),
                     IMS_ERR_NOT_FOUND);
    assert_non_null(strstr(err.message, "vocab.json"));
    assert_int_equal(access(out, F_OK), -1);
}

/* Allocation failures while writing a PRNG model: a clean NOMEM, no temp
 * file left behind, and success once allocations are allowed. */
static void test_prng_alloc_failures(void **state)
{
    struct fixture *fx = *state;
    char out[256], vocab[4096];
    snprintf(out, sizeof(out), "%s/prng-oom", fx->root);
    snprintf(vocab, sizeof(vocab), "%s/data/vocab", src_dir());
    int ok = 0;
    long k;
    for (k = 0; k < 200 && !ok; k++) {
        struct ims_error err = {0};
        ims_alloc_set_fail_after(k);
        enum ims_status st = clip_make_prng_model(tiny_config(), 5, out, vocab, &err);
        ims_alloc_set_fail_after(-1);
        if (st == IMS_OK) {
            ok = 1;
        } else if (st != IMS_ERR_NOMEM) {
            fail_msg("fail_after(%ld): %s: %s", k, ims_status_name(st), err.message);
        }
        DIR *d = opendir(out);
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (strstr(e->d_name, ".tmp"))
                fail_msg("fail_after(%ld): temp file %s left behind", k, e->d_name);
        if (d)
            closedir(d);
    }
    assert_true(ok);
    assert_true(k > 3);
    struct clip_model *m = load_ok(out);
    check_prng_weights(m, 5, 0, 1);
    clip_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tiny_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_f32_bf16_unaligned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_models, setup, teardown),
        cmocka_unit_test(test_prng_selfcheck),
        cmocka_unit_test_setup_teardown(test_prng_model_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prng_alloc_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
