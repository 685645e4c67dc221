/* SPDX-License-Identifier: MIT */
/*
 * model.c: clip_model_load / clip_model_free: a Hugging Face CLIPModel folder
 * (config.json, model.safetensors, vocab.json + merges.txt) -> struct
 * clip_model with every weight pointer bound and checked.
 *
 * How it works:
 * 1. config.json -> struct clip_config (config.c validates every number).
 * 2. model.safetensors is mapped (safetensors.c validates the header, so all
 *    tensor byte ranges lie inside the mapping).
 * 3. clip__tensor_specs lists every tensor the config implies, with its
 *    shape and the weight pointer it feeds. Pass one checks each is present,
 *    has a float dtype and exactly the expected shape (each failure names
 *    the tensor), and counts the floats that need an owned copy. Pass two
 *    binds: F32 tensors that are 4-byte aligned in the mapping are used in
 *    place (no copy: the page cache is the only copy of a 600 MB model);
 *    F16, BF16 and unaligned F32 tensors are converted into one owned,
 *    64-byte aligned buffer (`model->owned`), each tensor starting on a
 *    64-byte boundary.
 * 4. Tensors the model does not use (the I64 `position_ids` buffers of most
 *    checkpoints, anything else extra) are ignored; they were still
 *    range-checked by the parser.
 * 5. The tokenizer is loaded from the same folder.
 * 6. forward.c's engine packs the bound weights (clip__engine_new); it may
 *    lower params.precision to F32 when the CPU has no bf16 support.
 *
 * The mapping must stay valid while the model lives: a model.safetensors
 * truncated by another process after loading would fault on access (SIGBUS),
 * as with any mmap; replacing the file by rename (as make-model and model
 * downloads do) is safe, the old inode stays mapped.
 *
 * Any failure releases everything already acquired through the single exit
 * (clip_model_free accepts a partly built model).
 */

#include "clip_int.h"

#include <limits.h>
#include <sys/mman.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CLIP_CONFIG_MAX_BYTES (1u << 20)
#define OWNED_ALIGN_FLOATS 16 /* 64 bytes */

/* ---- tensor list --------------------------------------------------------------- */

struct spec_list {
    struct clip_tensor_spec *v;
    int n, cap;
};

static void spec_add(struct spec_list *l, const float **dst, int n_dims, int64_t d0, int64_t d1,
                     int64_t d2, int64_t d3, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

static void spec_add(struct spec_list *l, const float **dst, int n_dims, int64_t d0, int64_t d1,
                     int64_t d2, int64_t d3, const char *fmt, ...)
{
    IMS_ASSERT(l->n < l->cap);
    struct clip_tensor_spec *s = &l->v[l->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof(s->name), fmt, ap);
    va_end(ap);
    s->n_dims = n_dims;
    s->shape[0] = d0;
    s->shape[1] = d1;
    s->shape[2] = d2;
    s->shape[3] = d3;
    s->dst = dst;
}

#define DST(p) (m ? &(p) : NULL)

/* The eight weight + bias pairs of an encoder layer, in the checkpoint's
 * order: the name after "<tower>.encoder.layers.<i>.", where they go, and
 * the weight's shape in the tower's widths (a LayerNorm's is one-dimensional;
 * a Linear's is PyTorch's (out, in); the bias is (out)). */
enum layer_dim { LAYER_DIM_NONE, LAYER_DIM_W /* hidden_size */, LAYER_DIM_I /* intermediate */ };
#define LW(f) offsetof(struct clip_layer_weights, f)
static const struct layer_param {
    const char *name;
    size_t weight, bias;
    enum layer_dim out, in;
} layer_params[] = {
    {"self_attn.q_proj", LW(q_w), LW(q_b), LAYER_DIM_W, LAYER_DIM_W},
    {"self_attn.k_proj", LW(k_w), LW(k_b), LAYER_DIM_W, LAYER_DIM_W},
    {"self_attn.v_proj", LW(v_w), LW(v_b), LAYER_DIM_W, LAYER_DIM_W},
    {"self_attn.out_proj", LW(o_w), LW(o_b), LAYER_DIM_W, LAYER_DIM_W},
    {"layer_norm1", LW(ln1_w), LW(ln1_b), LAYER_DIM_W, LAYER_DIM_NONE},
    {"mlp.fc1", LW(fc1_w), LW(fc1_b), LAYER_DIM_I, LAYER_DIM_W},
    {"mlp.fc2", LW(fc2_w), LW(fc2_b), LAYER_DIM_W, LAYER_DIM_I},
    {"layer_norm2", LW(ln2_w), LW(ln2_b), LAYER_DIM_W, LAYER_DIM_NONE},
};
#undef LW

static const float **layer_field(struct clip_layer_weights *lw, size_t at)
{
    return lw ? (const float **)(void *)((char *)lw + at) : NULL;
}

static void add_layers(struct spec_list *l, const char *tower, const struct clip_tower_config *t,
                       struct clip_layer_weights *layers, struct clip_model *m)
{
    const int64_t width[] = {[LAYER_DIM_NONE] = 0,
                             [LAYER_DIM_W] = t->hidden_size,
                             [LAYER_DIM_I] = t->intermediate_size};
    for (int i = 0; i < t->num_hidden_layers; i++) {
        struct clip_layer_weights *lw = m ? &layers[i] : NULL;
        for (size_t k = 0; k < IMS_ARRAY_LEN(layer_params); k++) {
            const struct layer_param *p = &layer_params[k];
            int64_t out = width[p->out], in = width[p->in];
            spec_add(l, layer_field(lw, p->weight), in ? 2 : 1, out, in, 0, 0,
                     "%s.encoder.layers.%d.%s.weight", tower, i, p->name);
            spec_add(l, layer_field(lw, p->bias), 1, out, 0, 0, 0, "%s.encoder.layers.%d.%s.bias",
                     tower, i, p->name);
        }
    }
}

enum ims_status clip__tensor_specs(const struct clip_config *c, struct clip_model *m,
                                   struct clip_tensor_spec **out, int *n_out,
                                   struct ims_error *err)
{
    const struct clip_tower_config *t = &c->text, *v = &c->vision;
    struct spec_list l = {0};
    l.cap = 16 * (t->num_hidden_layers + v->num_hidden_layers) + 16;
    l.v = ims_calloc((size_t)l.cap, sizeof(*l.v));
    if (!l.v)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory listing model tensors");
    const int64_t Wt = t->hidden_size, Wv = v->hidden_size, D = c->projection_dim;
    const int64_t P = v->patch_size, G = v->image_size / v->patch_size;

    /* token_embedding: (V, Wt); position_embedding: (C, Wt) */
    spec_add(&l, DST(m->text.token_embedding), 2, t->vocab_size, Wt, 0, 0,
             "text_model.embeddings.token_embedding.weight");
    spec_add(&l, DST(m->text.position_embedding), 2, t->max_position_embeddings, Wt, 0, 0,
             "text_model.embeddings.position_embedding.weight");
    add_layers(&l, "text_model", t, m ? m->text.layers : NULL, m);
    spec_add(&l, DST(m->text.final_ln_w), 1, Wt, 0, 0, 0, "text_model.final_layer_norm.weight");
    spec_add(&l, DST(m->text.final_ln_b), 1, Wt, 0, 0, 0, "text_model.final_layer_norm.bias");

    /* class_embedding: (Wv); patch_embedding: (Wv, 3, P, P), no bias;
     * position_embedding: (G*G + 1, Wv) */
    spec_add(&l, DST(m->vision.class_embedding), 1, Wv, 0, 0, 0,
             "vision_model.embeddings.class_embedding");
    spec_add(&l, DST(m->vision.patch_embedding), 4, Wv, v->num_channels, P, P,
             "vision_model.embeddings.patch_embedding.weight");
    spec_add(&l, DST(m->vision.position_embedding), 2, G * G + 1, Wv, 0, 0,
             "vision_model.embeddings.position_embedding.weight");
    spec_add(&l, DST(m->vision.pre_ln_w), 1, Wv, 0, 0, 0, "vision_model.pre_layrnorm.weight");
    spec_add(&l, DST(m->vision.pre_ln_b), 1, Wv, 0, 0, 0, "vision_model.pre_layrnorm.bias");
    add_layers(&l, "vision_model", v, m ? m->vision.layers : NULL, m);
    spec_add(&l, DST(m->vision.post_ln_w), 1, Wv, 0, 0, 0, "vision_model.post_layernorm.weight");
    spec_add(&l, DST(m->vision.post_ln_b), 1, Wv, 0, 0, 0, "vision_model.post_layernorm.bias");

    /* projections: (D, W), no bias */
    spec_add(&l, DST(m->vision.projection), 2, D, Wv, 0, 0, "visual_projection.weight");
    spec_add(&l, DST(m->text.projection), 2, D, Wt, 0, 0, "text_projection.weight");
    spec_add(&l, NULL, 0, 0, 0, 0, 0, "logit_scale");
    *out = l.v;
    *n_out = l.n;
    return IMS_OK;
}

/* ---- conversion -------------------------------------------------------------- */

/* Converts `n` elements of `t` (validated dtype F32/F16/BF16, little-endian)
 * to float32. The source may be unaligned, so it is read bytewise. */
static void convert(const struct clip_safetensors_tensor *t, size_t n, float *dst)
{
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case CLIP_DTYPE_F32:
        memcpy(dst, p, n * sizeof(float));
        break;
    case CLIP_DTYPE_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = ims_f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        break;
    case CLIP_DTYPE_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = ims_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        break;
    case CLIP_DTYPE_OTHER:
        IMS_ASSERT(!"unreachable: dtype checked before conversion");
    }
}

static int needs_copy(const struct clip_safetensors_tensor *t)
{
    return t->dtype != CLIP_DTYPE_F32 || ((uintptr_t)t->data % sizeof(float)) != 0;
}

static void format_shape(char *buf, size_t n, int n_dims, const int64_t *shape)
{
    size_t at = 0;
    at += (size_t)snprintf(buf + at, n - at, "(");
    for (int i = 0; i < n_dims && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (at < n)
        snprintf(buf + at, n - at, n_dims == 1 ? ",)" : ")");
}

/* Checks presence, dtype and shape of `s` in `f`; sets *t and *count. */
static enum ims_status check_tensor(const struct clip_safetensors_file *f,
                                    const struct clip_tensor_spec *s,
                                    const struct clip_safetensors_tensor **t_out, size_t *count,
                                    struct ims_error *err)
{
    const struct clip_safetensors_tensor *t = clip__safetensors_find(f, s->name);
    if (!t)
        return ims_error_set(err, IMS_ERR_CORRUPT, "model.safetensors: missing tensor '%s'",
                             s->name);
    if (t->dtype == CLIP_DTYPE_OTHER)
        return ims_error_set(err, IMS_ERR_UNSUPPORTED,
                             "model.safetensors: tensor '%s' has dtype %s, expected F32, F16 or "
                             "BF16",
                             s->name, t->dtype_name);
    int ok = t->n_dims == s->n_dims;
    for (int i = 0; ok && i < s->n_dims; i++)
        ok = t->shape[i] == s->shape[i];
    /* logit_scale: a 0-d scalar in transformers, (1,) in some exports */
    if (s->n_dims == 0 && t->n_dims == 1 && t->shape[0] == 1)
        ok = 1;
    if (!ok) {
        char got[128], want[128];
        format_shape(got, sizeof(got), t->n_dims, t->shape);
        format_shape(want, sizeof(want), s->n_dims, s->shape);
        return ims_error_set(err, IMS_ERR_CORRUPT,
                             "model.safetensors: tensor '%s' has shape %s, expected %s", s->name,
                             got, want);
    }
    size_t c = 1;
    for (int i = 0; i < s->n_dims; i++)
        c *= (size_t)s->shape[i]; /* fits: equals the validated byte range / dtype size */
    *t_out = t;
    *count = c;
    return IMS_OK;
}

/* ---- load / free ---------------------------------------------------------------- */

void clip_model_params_default(struct clip_model_params *p)
{
    p->precision = CLIP_PRECISION_F32;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    p->n_threads = n > 0 ? (int)IMS_MIN(n, 1024) : 1;
}

static const char *width_letter(int w)
{
    switch (w) {
    case 384: return "s";
    case 768: return "b";
    case 1024: return "l";
    case 1280: return "h";
    case 1408: return "g";
    case 1664: return "bigg";
    default: return "custom";
    }
}

/* The model's name for catalogues: the architecture plus a fingerprint of
 * the weights, so that a data folder recognises the same model wherever its
 * folder is, and refuses other weights of the same shape (another seed,
 * another fine-tune, F16 vs F32). The fingerprint is FNV-1a 64 over the
 * safetensors header and the first and last 64 bytes of every tensor: cheap
 * (no pass over 600 MB), yet any retrained or converted checkpoint differs
 * there. The values must never change (test_clip_fingerprint). */
static void make_name(struct clip_model *m, const char *dir)
{
    (void)dir;
    uint64_t h = IMS_FNV1A64_BASIS;
    const unsigned char *base = m->weights_file.map;
    if (base && m->weights_file.map_bytes >= 8) {
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--)
            hlen = hlen << 8 | base[i];
        if (hlen <= m->weights_file.map_bytes - 8)
            h = ims_fnv1a64_update(h, base + 8, (size_t)hlen);
    }
    for (int i = 0; i < m->weights_file.n_tensors; i++) {
        const struct clip_safetensors_tensor *t = &m->weights_file.tensors[i];
        size_t n = (size_t)(t->end - t->begin), k = IMS_MIN(n, (size_t)64);
        h = ims_fnv1a64_update(h, t->data, k);
        h = ims_fnv1a64_update(h, (const unsigned char *)t->data + (n - k), k);
    }
    const struct clip_tower_config *v = &m->config.vision;
    snprintf(m->name, sizeof(m->name), "vit-%s-%d-%dx%d-%d:%016llx", width_letter(v->hidden_size),
             v->patch_size, v->hidden_size, v->num_hidden_layers, m->config.projection_dim,
             (unsigned long long)h);
}

enum ims_status clip_model_load(const char *dir, const struct clip_model_params *params,
                                struct clip_model **out, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct clip_model *m = NULL;
    char *json = NULL;
    char *path = NULL;
    struct clip_tensor_spec *specs = NULL;
    const struct clip_safetensors_tensor **found = NULL;
    int n_specs = 0;
    size_t json_len = 0, path_cap = strlen(dir) + 32;

    m = ims_calloc(1, sizeof(*m));
    path = ims_malloc(path_cap);
    if (!m || !path) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory loading the model");
        goto out;
    }
    clip_model_params_default(&m->params);
    if (params) {
        if (params->precision != CLIP_PRECISION_F32 && params->precision != CLIP_PRECISION_BF16) {
            st = ims_error_set(err, IMS_ERR_INVALID, "unknown precision %d",
                               (int)params->precision);
            goto out;
        }
        if (params->n_threads > 1024) {
            st = ims_error_set(err, IMS_ERR_INVALID, "n_threads %d is over the limit of 1024",
                               params->n_threads);
            goto out;
        }
        m->params.precision = params->precision;
        if (params->n_threads > 0)
            m->params.n_threads = params->n_threads;
    }

    snprintf(path, path_cap, "%s/config.json", dir);
    st = ims_file_read(path, CLIP_CONFIG_MAX_BYTES, &json, &json_len, err);
    if (st != IMS_OK)
        goto out;
    st = clip__config_parse(json, json_len, &m->config, err);
    if (st != IMS_OK) {
        ims_error_prefix(err, "%s", path);
        goto out;
    }
    m->text.layers = ims_calloc((size_t)m->config.text.num_hidden_layers,
                                sizeof(*m->text.layers));
    m->vision.layers = ims_calloc((size_t)m->config.vision.num_hidden_layers,
                                  sizeof(*m->vision.layers));
    if (!m->text.layers || !m->vision.layers) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory loading the model");
        goto out;
    }

    snprintf(path, path_cap, "%s/model.safetensors", dir);
    st = clip__safetensors_open(path, &m->weights_file, err);
    if (st != IMS_OK)
        goto out;
    st = clip__tensor_specs(&m->config, m, &specs, &n_specs, err);
    if (st != IMS_OK)
        goto out;
    found = ims_calloc((size_t)n_specs, sizeof(*found));
    if (!found) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory loading the model");
        goto out;
    }

    /* Pass one: presence, dtype, shape; size of the owned buffer. */
    size_t owned_floats = 0;
    for (int i = 0; i < n_specs; i++) {
        size_t count = 0;
        st = check_tensor(&m->weights_file, &specs[i], &found[i], &count, err);
        if (st != IMS_OK) {
            ims_error_prefix(err, "%s", dir);
            goto out;
        }
        if (specs[i].dst && needs_copy(found[i])) {
            size_t padded = (count + OWNED_ALIGN_FLOATS - 1) / OWNED_ALIGN_FLOATS *
                            OWNED_ALIGN_FLOATS;
            if (ims_size_add(owned_floats, padded, &owned_floats) != 0) {
                st = ims_error_set(err, IMS_ERR_TOO_LARGE, "model too large");
                goto out;
            }
        }
    }
    if (owned_floats) {
        size_t bytes;
        if (ims_size_mul(owned_floats, sizeof(float), &bytes) != 0 ||
            !(m->owned = ims_aligned_alloc(64, bytes))) {
            st = ims_error_set(err, IMS_ERR_NOMEM,
                               "out of memory converting %zu weights to float32", owned_floats);
            goto out;
        }
    }

    /* Pass two: bind, converting into `owned` where needed. */
    size_t at = 0;
    for (int i = 0; i < n_specs; i++) {
        const struct clip_safetensors_tensor *t = found[i];
        if (!specs[i].dst) { /* logit_scale */
            float v;
            convert(t, 1, &v);
            if (!isfinite(v) || fabsf(v) > 80.0f) {
                st = ims_error_set(err, IMS_ERR_CORRUPT,
                                   "%s: logit_scale %g is not a usable log-scale", dir, v);
                goto out;
            }
            m->logit_scale = v;
            continue;
        }
        size_t count = (size_t)((t->end - t->begin) / (t->dtype == CLIP_DTYPE_F32 ? 4 : 2));
        if (needs_copy(t)) {
            float *dst = m->owned + at;
            convert(t, count, dst);
            *specs[i].dst = dst;
            at += (count + OWNED_ALIGN_FLOATS - 1) / OWNED_ALIGN_FLOATS * OWNED_ALIGN_FLOATS;
        } else {
            *specs[i].dst = (const float *)t->data;
        }
    }
    IMS_ASSERT(at == owned_floats);

    st = clip_tokenizer_load(dir, &m->tokenizer, err);
    if (st != IMS_OK)
        goto out;
    make_name(m, dir);

    /* Packed weights and the thread pool (forward.c). */
    st = clip__engine_new(m, err);
    if (st != IMS_OK)
        goto out;
    /* The layer weights now live packed in the engine; packing touched every
     * page of the mapping once. Drop those pages from this process (clean
     * file pages of a read-only mapping: what is read again, embeddings and
     * LayerNorm parameters, faults back in from the page cache), so a loaded
     * model costs its packed size in RSS, not twice that. */
    if (m->weights_file.map)
        madvise(m->weights_file.map, m->weights_file.map_bytes, MADV_DONTNEED);

    *out = m;
    m = NULL;
out:
    clip_model_free(m);
    ims_free(found);
    ims_free(specs);
    ims_free(json);
    ims_free(path);
    return st;
}

void clip_model_free(struct clip_model *model)
{
    if (!model)
        return;
    clip__engine_free(model->engine);
    clip_tokenizer_free(model->tokenizer);
    ims_free(model->owned);
    clip__safetensors_close(&model->weights_file);
    ims_free(model->text.layers);
    ims_free(model->vision.layers);
    ims_free(model);
}

/* ---- accessors -------------------------------------------------------------- */

int clip_model_embed_dim(const struct clip_model *model) { return model->config.projection_dim; }

int clip_model_image_size(const struct clip_model *model)
{
    return model->config.vision.image_size;
}

const char *clip_model_name(const struct clip_model *model) { return model->name; }

float clip_model_logit_scale(const struct clip_model *model) { return expf(model->logit_scale); }

/* The engine (forward.c) lowers params.precision to F32 when the CPU lacks
 * bf16 support, so this reports what actually runs. */
enum clip_precision clip_model_precision(const struct clip_model *model)
{
    return model->params.precision;
}

const struct clip_tokenizer *clip_model_tokenizer(const struct clip_model *model)
{
    return model->tokenizer;
}
