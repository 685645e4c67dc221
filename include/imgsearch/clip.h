/* SPDX-License-Identifier: MIT */
/*
 * clip.h: the CLIP engine: Hugging Face CLIP checkpoints, OpenAI's tokenizer,
 * and the vision and text transformers, natively in C.
 *
 *     struct clip_model_params mp;
 *     clip_model_params_default(&mp);              // fp32, all cores
 *     struct clip_model *model = NULL;
 *     struct ims_error err = {0};
 *     if (clip_model_load("models/clip-vit-base-patch32", &mp, &model, &err) != IMS_OK)
 *         die(err.message);
 *     struct clip_ctx *ctx = NULL;
 *     clip_ctx_new(model, 32, &ctx, &err);         // activations for up to 32 images
 *     int32_t ids[CLIP_CONTEXT_MAX]; int n_ids;
 *     clip_tokenize(clip_model_tokenizer(model), "a photo of a cat", 16, ids, &n_ids, NULL);
 *     float text[512], image[512];
 *     clip_ctx_encode_text(ctx, ids, n_ids, text, 1, &err);
 *     clip_ctx_encode_images(ctx, pixels, 1, image, 1, &err); // pixels: 1 x 3 x 224 x 224
 *     clip_ctx_free(ctx);
 *     clip_model_free(model);
 *
 * Threading: a clip_model (weights, tokenizer) is immutable after load and
 * may be shared by any number of threads. A clip_ctx (activation buffers) is
 * used by one thread at a time. The model owns the engine's thread pool
 * (n_threads in its params); encode calls from different contexts are
 * serialised on it, so the machine's cores are never oversubscribed.
 *
 * Results: functions return a status; out-parameters are set only on
 * success; a precise message goes into the optional `err`.
 */
#ifndef IMGSEARCH_CLIP_H
#define IMGSEARCH_CLIP_H

#include <stddef.h>
#include <stdint.h>

#include "imgsearch/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* OpenAI's context length; the text model's max_position_embeddings may be
 * smaller, never larger. */
#define CLIP_CONTEXT_MAX 77

struct clip_model;
struct clip_ctx;
struct clip_tokenizer;

/* ---- tokenizer ----------------------------------------------------------- */

/* Loads OpenAI's byte-level BPE tokenizer from a folder holding either
 * vocab.json + merges.txt (Hugging Face format) or bpe_simple_vocab_16e6.txt.gz
 * (OpenAI's format). On success *out owns the tokenizer; release it with
 * clip_tokenizer_free(). */
enum ims_status clip_tokenizer_load(const char *dir, struct clip_tokenizer **out,
                                    struct ims_error *err);
void clip_tokenizer_free(struct clip_tokenizer *tok);

/* Tokenizes `text` (UTF-8, `len` bytes, need not be NUL-terminated) exactly
 * like OpenAI's clip.tokenize(text, context_length=77, truncate=True), after
 * the text fixes documented in docs/internals/tokenizer.md (ftfy's NFC, quote
 * uncurling, ligatures, full-width forms). Writes CLIP_CONTEXT_MAX ids to
 * `ids` (start token, tokens, end token, zeros) and the number of non-padding
 * ids (start and end tokens included) to *n_ids. Invalid UTF-8 is an error. */
enum ims_status clip_tokenize(const struct clip_tokenizer *tok, const char *text, size_t len,
                              int32_t ids[CLIP_CONTEXT_MAX], int *n_ids, struct ims_error *err);

/* ---- model ----------------------------------------------------------------- */

enum clip_precision {
    CLIP_PRECISION_F32 = 0,
    CLIP_PRECISION_BF16, /* bf16 weights and activations, fp32 accumulation;
                            falls back to fp32 without AVX512_BF16 */
};

struct clip_model_params {
    enum clip_precision precision; /* default CLIP_PRECISION_F32 */
    int n_threads;                 /* default: online CPUs */
};
void clip_model_params_default(struct clip_model_params *p);

/* Loads a Hugging Face CLIPModel folder (config.json, model.safetensors,
 * vocab.json, merges.txt). model.safetensors is memory-mapped; F32, F16 and
 * BF16 tensors are accepted. Every malformed input is a clear error.
 * On success *out owns the model; release it with clip_model_free(). */
enum ims_status clip_model_load(const char *dir, const struct clip_model_params *params,
                                struct clip_model **out, struct ims_error *err);
void clip_model_free(struct clip_model *model);

/* Size of the (projected) embeddings. */
int clip_model_embed_dim(const struct clip_model *model);
/* Input image side in pixels (config image_size, 224 for ViT-B/32). */
int clip_model_image_size(const struct clip_model *model);
/* A stable name of the model for catalogues: "<architecture>:<fingerprint>",
 * e.g. "vit-b-32-768x12-512:8c1f0e2d4b6a7391". The fingerprint covers the
 * safetensors header and samples of every tensor, so the same checkpoint has
 * the same name wherever its folder is, and other weights of the same shape
 * do not. Borrowed. */
const char *clip_model_name(const struct clip_model *model);
/* exp(logit_scale) as stored in the checkpoint. */
float clip_model_logit_scale(const struct clip_model *model);
/* The precision the engine actually runs (bf16 requested without CPU support
 * gives CLIP_PRECISION_F32). */
enum clip_precision clip_model_precision(const struct clip_model *model);
/* The tokenizer loaded with the model; borrowed, lives as long as the model. */
const struct clip_tokenizer *clip_model_tokenizer(const struct clip_model *model);

/* ---- encoding ----------------------------------------------------------- */

/* Creates per-thread working state for up to `max_batch` images per call.
 * All activation memory is allocated here; encode calls allocate nothing.
 * On success *out owns the context; release it with clip_ctx_free(). */
enum ims_status clip_ctx_new(const struct clip_model *model, int max_batch, struct clip_ctx **out,
                             struct ims_error *err);
void clip_ctx_free(struct clip_ctx *ctx);

/* Encodes `n` (1..max_batch) preprocessed images, `pixels` being n x 3 x S x S
 * float32 CHW normalised tensors (S = clip_model_image_size). Writes n x D
 * floats to `out`, L2-normalised when `normalize` is non-zero, else the raw
 * projection output. */
enum ims_status clip_ctx_encode_images(struct clip_ctx *ctx, const float *pixels, int n,
                                       float *out, int normalize, struct ims_error *err);

/* Encodes one tokenized text (ids as clip_tokenize writes them; n_ids the
 * non-padding count). Only the first n_ids positions are computed, which is
 * exact under the causal mask. Writes D floats to `out`. */
enum ims_status clip_ctx_encode_text(struct clip_ctx *ctx, const int32_t *ids, int n_ids,
                                     float *out, int normalize, struct ims_error *err);
/* The same without a context (text needs none of its own: the engine's
 * worker holds the buffers); any number of threads may call it at once,
 * and concurrent calls share passes where the engine can combine them. */
enum ims_status clip_encode_text(const struct clip_model *model, const int32_t *ids, int n_ids,
                                 float *out, int normalize, struct ims_error *err);

/* In-place L2 normalisation of a D-vector; a zero vector stays zero. */
void clip_l2_normalize(float *v, int d);

/* ---- PRNG models (tests, benchmarks) ------------------------------------ */

/* Writes a complete model folder to `out_dir` (config.json copied from
 * `config_path`, model.safetensors in F32 with the weights PRNG_MODEL.md
 * defines for `seed`, vocab.json and merges.txt copied from `vocab_dir`).
 * See docs/internals/model-files.md. */
enum ims_status clip_make_prng_model(const char *config_path, uint64_t seed, const char *out_dir,
                                     const char *vocab_dir, struct ims_error *err);

#ifdef __cplusplus
}
#endif
#endif
