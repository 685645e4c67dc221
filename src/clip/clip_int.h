/* SPDX-License-Identifier: MIT */
/*
 * clip_int.h: what the files of the clip module share, private to it.
 *
 * Files and who owns what:
 *   safetensors.c       mmap + header parsing and validation   (clip__safetensors_*)
 *   config.c            config.json -> struct clip_config       (clip__config_*)
 *   model.c             clip_model_load/free: binds named tensors to
 *                       struct clip_weights, converts F16/BF16 to F32
 *   prng.c              PRNG_MODEL.md weights, clip_make_prng_model
 *   tokenizer.c         loading the BPE tokenizer: vocab.json + merges.txt or
 *                       OpenAI's bpe_simple_vocab_16e6.txt.gz (tokenizer.h)
 *   tokenize.c          clip_tokenize: text fixes, pre-tokenizer, BPE, per call
 *   tokenizer_tables.c  the HTML character references html.unescape knows
 *   forward.c           vision and text transformers, clip_ctx, and the
 *                       engine: its one worker thread and job queue
 *   forward_kernels.c   LayerNorm, softmax, im2col, QKV stacking, activations
 *   textpass.c          the few-rows text tower on its own AVX-512 kernels
 *   gemm.c              oneDNN matmuls on prepacked weights
 *
 * Names: what crosses files inside the module is clip__name (functions),
 * struct/enum clip_name (types) and CLIP_NAME (constants), declared here or
 * in the module's private headers (forward.h, gemm.h, textpass.h,
 * tokenizer.h); everything else is static. `st` is always a status.
 *
 * Weights layout: every tensor is float32, row-major, shapes as in the
 * Hugging Face checkpoint (PyTorch Linear: weight (out, in)). F32 tensors
 * that are 4-byte aligned in the mapping point straight into it (no copy);
 * the others are converted once into `model->owned`.
 */
#ifndef IMGSEARCH_CLIP_INT_H
#define IMGSEARCH_CLIP_INT_H

#include "imgsearch/clip.h"

/* ---- config ---------------------------------------------------------------- */

enum clip_act {
    CLIP_ACT_QUICK_GELU = 0, /* x * sigmoid(1.702 x) */
    CLIP_ACT_GELU,           /* exact erf GELU ("gelu") */
    CLIP_ACT_GELU_TANH,      /* "gelu_new" / "gelu_pytorch_tanh" */
};

/* Named after the HF config keys. */
struct clip_tower_config {
    int hidden_size;
    int intermediate_size;
    int num_attention_heads;
    int num_hidden_layers;
    float layer_norm_eps;
    enum clip_act hidden_act;
    /* text only */
    int vocab_size;
    int max_position_embeddings;
    int eos_token_id; /* -1: use the argmax token id, as OpenAI/HF legacy configs */
    /* vision only */
    int image_size;
    int patch_size;
    int num_channels;
};

struct clip_config {
    struct clip_tower_config text;
    struct clip_tower_config vision;
    int projection_dim;
};

/* Parses config.json (bytes `json`, `len`). Missing keys take the HF
 * CLIPConfig defaults; unknown architectures, non-CLIP model types,
 * out-of-range or inconsistent sizes are errors. */
enum ims_status clip__config_parse(const char *json, size_t len, struct clip_config *out,
                                   struct ims_error *err);

/* ---- safetensors ------------------------------------------------------------ */

enum clip_dtype { CLIP_DTYPE_F32 = 0, CLIP_DTYPE_F16, CLIP_DTYPE_BF16, CLIP_DTYPE_OTHER };

#define CLIP_SAFETENSORS_MAX_DIMS 8

struct clip_safetensors_tensor {
    char *name;
    enum clip_dtype dtype;
    char dtype_name[16];
    int n_dims;
    int64_t shape[CLIP_SAFETENSORS_MAX_DIMS];
    uint64_t begin, end; /* offsets into the data section, validated */
    const void *data;    /* = file data section + begin */
};

struct clip_safetensors_file {
    void *map;
    size_t map_bytes;
    int n_tensors;
    struct clip_safetensors_tensor *tensors; /* sorted by name */
};

/* Validates and indexes a safetensors image in memory (`bytes`, `n`); used by
 * clip__safetensors_open and by the fuzzer. The tensors borrow `bytes`. */
enum ims_status clip__safetensors_parse(const void *bytes, size_t n,
                                        struct clip_safetensors_file *out, struct ims_error *err);
/* mmaps `path` read-only and parses it. Release with clip__safetensors_close. */
enum ims_status clip__safetensors_open(const char *path, struct clip_safetensors_file *out,
                                       struct ims_error *err);
void clip__safetensors_close(struct clip_safetensors_file *f);
const struct clip_safetensors_tensor *clip__safetensors_find(const struct clip_safetensors_file *f,
                                                             const char *name);

/* ---- tensor list (model.c) -------------------------------------------------- */

/* One Hugging Face tensor a config implies (names and shapes as in
 * PRNG_MODEL.md). */
struct clip_tensor_spec {
    char name[96];
    int n_dims;          /* 0 for the logit_scale scalar */
    int64_t shape[4];
    const float **dst;   /* where clip_model_load binds it; NULL for logit_scale
                            and when listed without a model */
};

/* Lists every tensor of a CLIPModel with config `c`, in a fixed order (text
 * tower, vision tower, projections, logit_scale). With `m` non-NULL (its
 * text.layers / vision.layers arrays allocated) each spec's dst points into
 * `m`'s weights. On success *out (release with ims_free) holds *n_out specs. */
enum ims_status clip__tensor_specs(const struct clip_config *c, struct clip_model *m,
                                   struct clip_tensor_spec **out, int *n_out,
                                   struct ims_error *err);

/* ---- weights ------------------------------------------------------------------- */

struct clip_layer_weights {
    const float *ln1_w, *ln1_b;   /* (W) */
    const float *q_w, *q_b;       /* (W, W), (W) */
    const float *k_w, *k_b;       /* (W, W), (W) */
    const float *v_w, *v_b;       /* (W, W), (W) */
    const float *o_w, *o_b;       /* (W, W), (W) */
    const float *ln2_w, *ln2_b;   /* (W) */
    const float *fc1_w, *fc1_b;   /* (I, W), (I) */
    const float *fc2_w, *fc2_b;   /* (W, I), (W) */
};

struct clip_text_weights {
    const float *token_embedding;    /* (V, W) */
    const float *position_embedding; /* (C, W) */
    struct clip_layer_weights *layers; /* num_hidden_layers */
    const float *final_ln_w, *final_ln_b; /* (W) */
    const float *projection;         /* (D, W) */
};

struct clip_vision_weights {
    const float *class_embedding;    /* (W) */
    const float *patch_embedding;    /* (W, 3, P, P) */
    const float *position_embedding; /* ((S/P)^2 + 1, W) */
    const float *pre_ln_w, *pre_ln_b;   /* (W) */
    struct clip_layer_weights *layers;  /* num_hidden_layers */
    const float *post_ln_w, *post_ln_b; /* (W) */
    const float *projection;         /* (D, W) */
};

struct clip_engine; /* forward.c: packed weights, thread pool; opaque here */

struct clip_model {
    struct clip_config config;
    struct clip_text_weights text;
    struct clip_vision_weights vision;
    float logit_scale; /* the raw parameter; exp() of it is the scale */
    struct clip_safetensors_file weights_file;
    float *owned;      /* converted tensors (F16/BF16/unaligned F32) */
    struct clip_tokenizer *tokenizer;
    struct clip_model_params params;
    char name[256];
    struct clip_engine *engine; /* owned by forward.c: clip__engine_new/free */
};

/* forward.c: prepares packed weights and the thread pool for a loaded model
 * (called at the end of clip_model_load) and releases them. */
enum ims_status clip__engine_new(struct clip_model *model, struct ims_error *err);
void clip__engine_free(struct clip_engine *engine);
/* Which text path the engine runs: "textpass-f32", "textpass-bf16" or
 * "onednn" (for tests, logs and benchmarks). */
const char *clip__text_kernel(const struct clip_model *model);
/* Text passes run so far and the text encodes they served (more encodes
 * than passes: concurrent queries shared passes). */
void clip__text_pass_counts(const struct clip_model *model, uint64_t *passes, uint64_t *encodes);
/* Text passes the worker ran between two layers of a vision pass. */
uint64_t clip__text_midpass_count(const struct clip_model *model);

/* ---- PRNG (prng.c) ---------------------------------------------------------- */

/* Value of element `i` of tensor `name` for `seed` (PRNG_MODEL.md); `p` is
 * the patch size (used by patch_embedding's scale) and `last_dim` the
 * tensor's last dimension. */
float clip__prng_value(const char *name, uint64_t seed, uint64_t i, int patch, int64_t last_dim);

#endif
