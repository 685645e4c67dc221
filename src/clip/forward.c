/* SPDX-License-Identifier: MIT */
/*
 * forward.c: the vision and text transformers, the engine (packed weights,
 * cached oneDNN ops, the worker thread and its job queue) and clip_ctx.
 *
 * Text runs on textpass.c (own few-rows kernels, queued queries combined
 * into one pass) where the CPU has AVX-512; the oneDNN text pass below is
 * the fallback and stays tested (IMS_CLIP_TEXT_KERNEL=onednn).
 *
 * DESIGN
 *
 * The pass, for R rows (vision: n images x T = (S/P)^2 + 1 tokens; text:
 * the n_ids tokens up to and including the end token, which is exact under
 * the causal mask):
 *
 *   vision  im2col(pixels) -> patch GEMM -> [class; patches] + pos
 *           -> pre_layrnorm -> L layers -> post_layernorm(class rows)
 *           -> visual_projection (f32)
 *   text    token_embedding[ids] + pos -> L causal layers
 *           -> final_layer_norm(end row) -> text_projection (f32)
 *   layer   h = ln1(x); qkv = h Wqkv^T + b          (Q, K, V fused: one GEMM)
 *           s = Q K^T per (image, head)             (strided batched GEMM)
 *           p = softmax(s / sqrt(hd)) [causal]
 *           a = p V per (image, head)               (written head-interleaved)
 *           x += a Wo^T + bo                        (sum post-op)
 *           h = ln2(x); m = act(h W1^T + b1)        (eltwise post-op)
 *           x += m W2^T + b2                        (sum post-op)
 *
 * Buffers (struct clip_ctx, sized at clip_ctx_new for max_batch images and
 * for a full text context, whichever is larger): x (R, W) f32 residual
 * stream; h (R, W), qkv (R, 3W), a (R, W), m (R, I) in the activation
 * precision; s (n, H, T, T) f32 scores; p (n, H, T, T) probabilities;
 * patches (n * (S/P)^2, 3 P P) in the activation precision; pooled (n, W)
 * f32. encode allocates
 * nothing of its own.
 *
 * Precision: f32, or bf16 weights and activations with f32 accumulation,
 * f32 residual stream, f32 LayerNorm statistics and f32 softmax. The two
 * projections stay f32 (well under 1% of the work).
 *
 * Parallelism lives in one place: oneDNN's OpenMP runtime (libgomp), with
 * the model's n_threads; our kernels use the same team or none (forward.h).
 * OpenBLAS is not used in the pass at all.
 *
 * Engine and locking: a clip_model may be shared by threads; every encode
 * call queues a job for the engine's one worker thread, which runs the
 * passes one after another on the one set of OpenMP threads (text jobs
 * first, all queued ones in one pass on the text pass), under engine->lock
 * for the whole pass. The lock guards
 * the plan caches and the gemm backend (its scratchpad). A plan is the set
 * of oneDNN ops for one shape (a batch size, or a token count): created at
 * the first pass of that shape, then reused; primitive creation is the only
 * allocation an encode call can make, once per shape for the model's life.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clip_int.h"
#include "forward.h"
#include "gemm.h"
#include "textpass.h"

/* Upper bound on images per context (keeps every buffer size computation far
 * from overflow; a pass of 1024 images is minutes anyway). */
#define ENGINE_MAX_BATCH 1024

struct engine_layer {
    struct clip_gemm_weights *qkv; /* (3W, W) + (3W): q, k, v stacked */
    struct clip_gemm_weights *o;   /* (W, W) + (W) */
    struct clip_gemm_weights *fc1; /* (I, W) + (I) */
    struct clip_gemm_weights *fc2; /* (W, I) + (W) */
};

/* The oneDNN ops for one shape. */
struct engine_plan {
    struct clip_gemm_op *patch; /* vision only: (n Np, 3PP) -> (n Np, W) */
    struct clip_gemm_op *qkv, *scores, *pv, *o, *fc1, *fc2;
    struct clip_gemm_op *proj; /* (n, W) -> (n, D) */
};

struct engine_tower {
    const struct clip_tower_config *cfg;
    int tokens;                  /* vision: T; text: max positions */
    struct engine_layer *layers; /* cfg->num_hidden_layers */
    struct clip_gemm_weights *patch;  /* vision only */
    struct clip_gemm_weights *proj;   /* (D, W), f32 */
    struct engine_plan **plans;  /* [shape - 1], NULL until first used */
    int n_plans;
};

/* Text jobs one pass may combine (textpass.c; rows are the other bound). */
#define ENGINE_TEXT_BATCH 64

/* One encode handed to the engine's worker thread (see engine_run). */
struct engine_job {
    struct engine_job *next; /* the queue */
    int is_text;
    struct clip_ctx *ctx;
    const float *pixels;
    const int32_t *ids;
    int n;
    float *out;
    int normalize;
    struct ims_error *err;
    enum ims_status st;
    int done;
    int passed; /* an image job a text pass has already gone ahead of */
};

struct clip_engine {
    /* The worker: every forward pass runs on this one thread, whichever
     * thread asked for it. libgomp (behind oneDNN) gives every thread that
     * opens a parallel region its own team of n_threads - 1 workers, so
     * encodes called from 16 server threads would grow 16 teams; funnelled
     * through one thread there is one team, created once. Callers queue
     * their jobs (FIFO); with the few-rows text pass the worker takes every
     * queued text job into one pass (they share one read of the weights),
     * ahead of queued image batches. */
    pthread_t worker;
    int worker_started;
    pthread_mutex_t job_mu;   /* guards queue, the jobs' done flags, stop */
    pthread_cond_t job_cv;    /* a job was queued, or stop */
    pthread_cond_t done_cv;   /* some job finished */
    struct engine_job *queue; /* waiting jobs, oldest first */
    int stop;
    uint64_t text_passes, text_encodes; /* counters, under job_mu */
    uint64_t midpass_text_passes;       /* of them, run between vision layers */
    pthread_mutex_t lock; /* guards everything below while a pass runs */
    struct clip_gemm_backend *be;
    enum clip_gemm_dt dt; /* precision of the transformer layers */
    int projection_dim;
    struct engine_tower vision, text;
    struct clip_textpass *tp; /* the text tower's few-rows pass; NULL: text runs on oneDNN */
    const struct clip_model *model;
    struct clip_ctx *text_ctx; /* oneDNN text path: the worker's own buffers, made at first use */
};

struct clip_ctx {
    const struct clip_model *model;
    int max_batch;
    float *x;       /* (R, W) f32 residual stream */
    void *h;        /* (R, W) dt, LayerNorm output */
    void *qkv;      /* (R, 3W) dt */
    void *a;        /* (R, W) dt, attention output (heads interleaved); vision: patch GEMM out */
    void *m;        /* (R, I) dt, MLP hidden */
    float *s;       /* (n, H, T, T) f32 scores */
    void *p;        /* (n, H, T, T) dt probabilities */
    void *patches;  /* (n Np, 3PP) dt */
    float *pooled;  /* (n, W) f32 */
};

/* ---- engine -------------------------------------------------------------------------- */

static enum ims_status engine_start_worker(struct clip_engine *e, struct ims_error *err);
static void engine_stop_worker(struct clip_engine *e);

static void engine_plan_free(struct engine_plan *p)
{
    if (!p)
        return;
    clip__gemm_op_free(p->patch);
    clip__gemm_op_free(p->qkv);
    clip__gemm_op_free(p->scores);
    clip__gemm_op_free(p->pv);
    clip__gemm_op_free(p->o);
    clip__gemm_op_free(p->fc1);
    clip__gemm_op_free(p->fc2);
    clip__gemm_op_free(p->proj);
    ims_free(p);
}

static void engine_tower_fini(struct engine_tower *t)
{
    if (t->layers)
        for (int l = 0; l < t->cfg->num_hidden_layers; l++) {
            clip__gemm_weights_free(t->layers[l].qkv);
            clip__gemm_weights_free(t->layers[l].o);
            clip__gemm_weights_free(t->layers[l].fc1);
            clip__gemm_weights_free(t->layers[l].fc2);
        }
    ims_free(t->layers);
    clip__gemm_weights_free(t->patch);
    clip__gemm_weights_free(t->proj);
    for (int i = 0; i < t->n_plans; i++)
        engine_plan_free(t->plans[i]);
    ims_free(t->plans);
    memset(t, 0, sizeof(*t));
}

static enum ims_status engine_pack_layer(struct clip_engine *e, const struct clip_layer_weights *lw,
                                         int w, int inter, struct engine_layer *out,
                                         struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    /* q, k, v stacked into one (3W, W) weight and (3W) bias. */
    float *wqkv = ims_malloc((size_t)3 * w * w * sizeof(float));
    float *bqkv = ims_malloc((size_t)3 * w * sizeof(float));
    if (!wqkv || !bqkv) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory (packing QKV)");
        goto out;
    }
    clip__forward_stack_qkv(lw, w, wqkv, bqkv);
    if ((st = clip__gemm_weights_pack(e->be, wqkv, bqkv, 3 * w, w, e->dt, &out->qkv, err)) !=
            IMS_OK ||
        (st = clip__gemm_weights_pack(e->be, lw->o_w, lw->o_b, w, w, e->dt, &out->o, err)) !=
            IMS_OK ||
        (st = clip__gemm_weights_pack(e->be, lw->fc1_w, lw->fc1_b, inter, w, e->dt, &out->fc1,
                                      err)) != IMS_OK ||
        (st = clip__gemm_weights_pack(e->be, lw->fc2_w, lw->fc2_b, w, inter, e->dt, &out->fc2,
                                      err)) != IMS_OK)
        goto out;
out:
    ims_free(wqkv);
    ims_free(bqkv);
    return st;
}

static enum ims_status engine_tower_init(struct clip_engine *e, const struct clip_tower_config *cfg,
                                         const struct clip_layer_weights *layers,
                                         const float *proj, int projection_dim, int tokens,
                                         struct engine_tower *t, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    t->cfg = cfg;
    t->tokens = tokens;
    t->layers = ims_calloc((size_t)cfg->num_hidden_layers, sizeof(*t->layers));
    if (!t->layers)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory (engine layers)");
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        st = engine_pack_layer(e, &layers[l], cfg->hidden_size, cfg->intermediate_size,
                               &t->layers[l], err);
        if (st != IMS_OK)
            return st;
    }
    return clip__gemm_weights_pack(e->be, proj, NULL, projection_dim, cfg->hidden_size,
                                   CLIP_GEMM_F32, &t->proj, err);
}

void clip__engine_free(struct clip_engine *engine)
{
    if (!engine)
        return;
    engine_stop_worker(engine);
    clip_ctx_free(engine->text_ctx);
    engine_tower_fini(&engine->vision);
    engine_tower_fini(&engine->text);
    clip__textpass_free(engine->tp);
    clip__gemm_backend_free(engine->be);
    pthread_mutex_destroy(&engine->lock);
    ims_free(engine);
}

enum ims_status clip__engine_new(struct clip_model *model, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    const struct clip_config *c = &model->config;
    struct clip_engine *e = ims_calloc(1, sizeof(*e));
    if (!e)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory (engine)");
    pthread_mutex_init(&e->lock, NULL);
    if ((st = engine_start_worker(e, err)) != IMS_OK)
        goto out;
    int n_threads = model->params.n_threads;
    if (n_threads < 1)
        n_threads = 1;
    if ((st = clip__gemm_backend_new(n_threads, &e->be, err)) != IMS_OK)
        goto out;
    e->dt = CLIP_GEMM_F32;
    if (model->params.precision == CLIP_PRECISION_BF16) {
        if (clip__gemm_backend_has_bf16(e->be)) {
            e->dt = CLIP_GEMM_BF16;
        } else {
            ims_log(IMS_LOG_WARN, "clip: no native bf16 matrix product on this CPU, using f32");
            model->params.precision = CLIP_PRECISION_F32;
        }
    }
    e->projection_dim = c->projection_dim;

    const struct clip_tower_config *vc = &c->vision;
    int grid = vc->image_size / vc->patch_size;
    st = engine_tower_init(e, vc, model->vision.layers, model->vision.projection,
                           c->projection_dim, grid * grid + 1, &e->vision, err);
    if (st != IMS_OK)
        goto out;
    st = clip__gemm_weights_pack(e->be, model->vision.patch_embedding, NULL, vc->hidden_size,
                           vc->num_channels * vc->patch_size * vc->patch_size, e->dt,
                           &e->vision.patch, err);
    if (st != IMS_OK)
        goto out;
    /* Text: the few-rows pass where the CPU has it (IMS_CLIP_TEXT_KERNEL=onednn
     * forces the general path, for comparison and tests), else oneDNN. */
    const char *kernel = getenv("IMS_CLIP_TEXT_KERNEL");
    if (!(kernel && strcmp(kernel, "onednn") == 0) && clip__textpass_supported(c, e->dt)) {
        if ((st = clip__textpass_new(c, &model->text, e->dt, n_threads, &e->tp, err)) != IMS_OK)
            goto out;
        ims_log(IMS_LOG_DEBUG, "clip: text tower on the few-rows pass (%zu MB)",
                clip__textpass_bytes(e->tp) >> 20);
    } else {
        st = engine_tower_init(e, &c->text, model->text.layers, model->text.projection,
                               c->projection_dim, c->text.max_position_embeddings, &e->text, err);
        if (st != IMS_OK)
            goto out;
    }
    e->text.cfg = &c->text;
    e->text.tokens = c->text.max_position_embeddings;
    e->text.plans = ims_calloc((size_t)e->text.tokens, sizeof(*e->text.plans));
    if (!e->text.plans) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory (engine plans)");
        goto out;
    }
    e->text.n_plans = e->text.tokens;
    e->model = model;
    model->engine = e;
    e = NULL;
out:
    clip__engine_free(e);
    return st;
}

/* Builds the ops for `n` sequences of `t` tokens of tower `tw`. */
static enum ims_status engine_plan_new(struct clip_engine *e, struct engine_tower *tw, int n, int t,
                                       struct engine_plan **out, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    const struct clip_tower_config *cfg = tw->cfg;
    int w = cfg->hidden_size, inter = cfg->intermediate_size, heads = cfg->num_attention_heads;
    int hd = w / heads, rows = n * t;
    enum clip_gemm_dt dt = e->dt;
    struct engine_plan *p = ims_calloc(1, sizeof(*p));
    if (!p)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory (plan)");
    struct engine_layer *l0 = &tw->layers[0];
    struct clip_gemm_linear_desc d;

    d = (struct clip_gemm_linear_desc){rows, w, 3 * w, dt, dt, CLIP_GEMM_ACT_NONE, 0};
    if ((st = clip__gemm_op_linear(e->be, l0->qkv, &d, &p->qkv, err)) != IMS_OK)
        goto out;
    d = (struct clip_gemm_linear_desc){rows, w, w, dt, CLIP_GEMM_F32, CLIP_GEMM_ACT_NONE, 1};
    if ((st = clip__gemm_op_linear(e->be, l0->o, &d, &p->o, err)) != IMS_OK)
        goto out;
    enum clip_gemm_act act = cfg->hidden_act == CLIP_ACT_GELU        ? CLIP_GEMM_ACT_GELU
                        : cfg->hidden_act == CLIP_ACT_GELU_TANH ? CLIP_GEMM_ACT_GELU_TANH
                                                                : CLIP_GEMM_ACT_QUICK_GELU;
    d = (struct clip_gemm_linear_desc){rows, w, inter, dt, dt, act, 0};
    if ((st = clip__gemm_op_linear(e->be, l0->fc1, &d, &p->fc1, err)) != IMS_OK)
        goto out;
    d = (struct clip_gemm_linear_desc){rows, inter, w, dt, CLIP_GEMM_F32, CLIP_GEMM_ACT_NONE, 1};
    if ((st = clip__gemm_op_linear(e->be, l0->fc2, &d, &p->fc2, err)) != IMS_OK)
        goto out;
    d = (struct clip_gemm_linear_desc){
        n, w, e->projection_dim, CLIP_GEMM_F32, CLIP_GEMM_F32, CLIP_GEMM_ACT_NONE, 0};
    if ((st = clip__gemm_op_linear(e->be, tw->proj, &d, &p->proj, err)) != IMS_OK)
        goto out;
    if (tw->patch) {
        int np = t - 1, k = cfg->num_channels * cfg->patch_size * cfg->patch_size;
        d = (struct clip_gemm_linear_desc){n * np, k, w, dt, CLIP_GEMM_F32, CLIP_GEMM_ACT_NONE, 0};
        if ((st = clip__gemm_op_linear(e->be, tw->patch, &d, &p->patch, err)) != IMS_OK)
            goto out;
    }

    /* scores (n, H, t, t) = Q K^T: Q[b][h] (t, hd) and K^T[b][h] (hd, t) are
     * read in place from qkv (rows of 3W: q | k | v, head h at columns h*hd). */
    int64_t ld = 3 * (int64_t)w, tt = (int64_t)t;
    struct clip_gemm_bmm_desc b = {
        .b = n, .h = heads, .m = t, .k = hd, .n = t,
        .src_strides = {tt * ld, hd, ld, 1},
        .wei_strides = {tt * ld, hd, 1, ld},
        .dst_strides = {(int64_t)heads * tt * tt, tt * tt, tt, 1},
        .src_dt = dt, .wei_dt = dt, .dst_dt = CLIP_GEMM_F32,
    };
    if ((st = clip__gemm_op_bmm(e->be, &b, &p->scores, err)) != IMS_OK)
        goto out;
    /* a[b][h] (t, hd) = P[b][h] (t, t) V[b][h] (t, hd), written into the
     * (rows, W) buffer at head h's columns, ready for out_proj. */
    b = (struct clip_gemm_bmm_desc){
        .b = n, .h = heads, .m = t, .k = t, .n = hd,
        .src_strides = {(int64_t)heads * tt * tt, tt * tt, tt, 1},
        .wei_strides = {tt * ld, hd, ld, 1},
        .dst_strides = {tt * w, hd, w, 1},
        .src_dt = dt, .wei_dt = dt, .dst_dt = dt,
    };
    if ((st = clip__gemm_op_bmm(e->be, &b, &p->pv, err)) != IMS_OK)
        goto out;
    ims_log(IMS_LOG_DEBUG,
            "clip: plan %dx%d: qkv %s, scores %s, pv %s, o %s, fc1 %s, fc2 %s, proj %s%s%s", n, t,
            clip__gemm_op_impl(p->qkv), clip__gemm_op_impl(p->scores), clip__gemm_op_impl(p->pv),
            clip__gemm_op_impl(p->o), clip__gemm_op_impl(p->fc1), clip__gemm_op_impl(p->fc2),
            clip__gemm_op_impl(p->proj), p->patch ? ", patch " : "",
            p->patch ? clip__gemm_op_impl(p->patch) : "");
    *out = p;
    p = NULL;
out:
    engine_plan_free(p);
    return st;
}

/* The plan for shape index `idx` (1-based: batch size or token count). */
static enum ims_status engine_plan_get(struct clip_engine *e, struct engine_tower *tw, int idx,
                                       int n, int t, struct engine_plan **out,
                                       struct ims_error *err)
{
    IMS_ASSERT(idx >= 1 && idx <= tw->n_plans);
    if (!tw->plans[idx - 1]) {
        enum ims_status st = engine_plan_new(e, tw, n, t, &tw->plans[idx - 1], err);
        if (st != IMS_OK)
            return st;
    }
    *out = tw->plans[idx - 1];
    return IMS_OK;
}

/* Grows the vision plan table to `max_batch` entries (under the lock). */
static enum ims_status engine_reserve_batch(struct clip_engine *e, int max_batch,
                                            struct ims_error *err)
{
    struct engine_tower *tw = &e->vision;
    if (max_batch <= tw->n_plans)
        return IMS_OK;
    struct engine_plan **p = ims_realloc(tw->plans, (size_t)max_batch * sizeof(*p));
    if (!p)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory (plans)");
    for (int i = tw->n_plans; i < max_batch; i++)
        p[i] = NULL;
    tw->plans = p;
    tw->n_plans = max_batch;
    return IMS_OK;
}

/* ---- the pass ------------------------------------------------------------------------ */

static size_t dt_size(enum clip_gemm_dt dt)
{
    return dt == CLIP_GEMM_BF16 ? 2 : 4;
}

/* L layers over ctx->x: n sequences of t tokens. */
static void engine_serve_texts_midpass(struct clip_engine *e);

static void forward_layers(struct clip_ctx *ctx, struct engine_tower *tw, struct engine_plan *p,
                           int n, int t, int causal)
{
    const struct clip_tower_config *cfg = tw->cfg;
    struct clip_engine *e = ctx->model->engine;
    const struct clip_layer_weights *lws =
        tw == &e->vision ? ctx->model->vision.layers : ctx->model->text.layers;
    int w = cfg->hidden_size, heads = cfg->num_attention_heads, rows = n * t;
    int hd = w / heads;
    float scale = 1.0f / sqrtf((float)hd);
    size_t es = dt_size(e->dt);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        const struct clip_layer_weights *lw = &lws[l];
        struct engine_layer *el = &tw->layers[l];
        clip__forward_layernorm(ctx->x, w, rows, w, lw->ln1_w, lw->ln1_b, cfg->layer_norm_eps,
                                ctx->h, w, e->dt);
        clip__gemm_linear_run(p->qkv, el->qkv, ctx->h, ctx->qkv);
        const char *qkv = ctx->qkv;
        clip__gemm_bmm_run(p->scores, qkv, qkv + (size_t)w * es, ctx->s);
        clip__forward_softmax(ctx->s, n * heads, t, scale, causal, ctx->p, e->dt);
        clip__gemm_bmm_run(p->pv, ctx->p, qkv + (size_t)2 * w * es, ctx->a);
        clip__gemm_linear_run(p->o, el->o, ctx->a, ctx->x);
        clip__forward_layernorm(ctx->x, w, rows, w, lw->ln2_w, lw->ln2_b, cfg->layer_norm_eps,
                                ctx->h, w, e->dt);
        clip__gemm_linear_run(p->fc1, el->fc1, ctx->h, ctx->m);
        clip__gemm_linear_run(p->fc2, el->fc2, ctx->m, ctx->x);
        if (tw == &e->vision && l + 1 < cfg->num_hidden_layers)
            engine_serve_texts_midpass(e);
    }
}

static void normalize_rows(float *out, int n, int d, int normalize)
{
    if (normalize)
        for (int i = 0; i < n; i++)
            clip_l2_normalize(out + (size_t)i * d, d);
}

static enum ims_status encode_images_now(struct clip_ctx *ctx, const float *pixels, int n,
                                         float *out, int normalize, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    IMS_RETURN_ERROR_IF(!ctx || !pixels || !out, err, IMS_ERR_INVALID,
                        "encode_images: NULL argument");
    IMS_RETURN_ERROR_IF(n < 1 || n > ctx->max_batch, err, IMS_ERR_INVALID,
                        "encode_images: batch of %d images, the context holds 1 to %d", n,
                        ctx->max_batch);
    const struct clip_model *model = ctx->model;
    struct clip_engine *e = model->engine;
    struct engine_tower *tw = &e->vision;
    const struct clip_tower_config *cfg = tw->cfg;
    const struct clip_vision_weights *vw = &model->vision;
    int w = cfg->hidden_size, t = tw->tokens, np = t - 1, d = e->projection_dim;
    struct engine_plan *p = NULL;

    pthread_mutex_lock(&e->lock);
    clip__gemm_backend_enter(e->be);
    if ((st = engine_plan_get(e, tw, n, n, t, &p, err)) != IMS_OK)
        goto out;

    /* Embeddings: x[i*t] = class + pos[0]; x[i*t + 1 + j] = patch j + pos[1 + j]. */
    clip__forward_im2col(pixels, n, cfg->num_channels, cfg->image_size, cfg->patch_size,
                         ctx->patches, e->dt);
    float *pe = ctx->a; /* (n np, W) f32: the attention buffer is free here */
    clip__gemm_linear_run(p->patch, tw->patch, ctx->patches, pe);
    for (int i = 0; i < n; i++) {
        float *xi = ctx->x + (size_t)i * t * w;
        for (int c = 0; c < w; c++)
            xi[c] = vw->class_embedding[c] + vw->position_embedding[c];
        for (int j = 0; j < np; j++) {
            const float *src = pe + ((size_t)i * np + j) * w;
            const float *pos = vw->position_embedding + (size_t)(j + 1) * w;
            float *dst = xi + (size_t)(j + 1) * w;
            for (int c = 0; c < w; c++)
                dst[c] = src[c] + pos[c];
        }
    }
    clip__forward_layernorm(ctx->x, w, n * t, w, vw->pre_ln_w, vw->pre_ln_b, cfg->layer_norm_eps,
                            ctx->x, w, CLIP_GEMM_F32);
    forward_layers(ctx, tw, p, n, t, 0);
    /* post_layernorm on the class rows only (stride t rows). */
    clip__forward_layernorm(ctx->x, t * w, n, w, vw->post_ln_w, vw->post_ln_b, cfg->layer_norm_eps,
                      ctx->pooled, w, CLIP_GEMM_F32);
    clip__gemm_linear_run(p->proj, tw->proj, ctx->pooled, out);
    normalize_rows(out, n, d, normalize);
out:
    pthread_mutex_unlock(&e->lock);
    return st;
}

/* Checks a token sequence and returns in *rows the tokens up to and
 * including the pooled (end) row: the rows a pass computes. */
static enum ims_status text_rows(const struct clip_model *model, const int32_t *ids, int n_ids,
                                 int *rows, struct ims_error *err)
{
    const struct engine_tower *tw = &model->engine->text;
    const struct clip_tower_config *cfg = tw->cfg;
    IMS_RETURN_ERROR_IF(n_ids < 1 || n_ids > tw->tokens, err, IMS_ERR_INVALID,
                        "encode_text: %d tokens, the model takes 1 to %d", n_ids, tw->tokens);
    for (int i = 0; i < n_ids; i++)
        IMS_RETURN_ERROR_IF(ids[i] < 0 || ids[i] >= cfg->vocab_size, err, IMS_ERR_INVALID,
                            "encode_text: token id %d at position %d is outside the vocabulary "
                            "(0 to %d)",
                            (int)ids[i], i, cfg->vocab_size - 1);
    /* The pooled row: HF takes the first eos_token_id; legacy configs
     * (eos_token_id 2 or absent: -1) take the argmax id, which for OpenAI's
     * vocabulary is the end token 49407 too. No end token: row 0, as HF's
     * argmax over an all-false mask gives. */
    int end = 0;
    if (cfg->eos_token_id < 0 || cfg->eos_token_id == 2) {
        for (int i = 1; i < n_ids; i++)
            if (ids[i] > ids[end])
                end = i;
    } else {
        for (int i = 0; i < n_ids; i++)
            if (ids[i] == cfg->eos_token_id) {
                end = i;
                break;
            }
    }
    /* Rows after the end token cannot change it (causal mask). */
    *rows = end + 1;
    return IMS_OK;
}

/* The oneDNN text pass over ids[0 .. t), t from text_rows. */
static enum ims_status encode_text_now(struct clip_ctx *ctx, const int32_t *ids, int t,
                                       float *out, int normalize, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    const struct clip_model *model = ctx->model;
    struct clip_engine *e = model->engine;
    struct engine_tower *tw = &e->text;
    const struct clip_tower_config *cfg = tw->cfg;
    const struct clip_text_weights *txt = &model->text;
    int w = cfg->hidden_size, d = e->projection_dim, end = t - 1;
    struct engine_plan *p = NULL;

    pthread_mutex_lock(&e->lock);
    clip__gemm_backend_enter(e->be);
    if ((st = engine_plan_get(e, tw, t, 1, t, &p, err)) != IMS_OK)
        goto out;
    for (int i = 0; i < t; i++) {
        const float *tok = txt->token_embedding + (size_t)ids[i] * w;
        const float *pos = txt->position_embedding + (size_t)i * w;
        float *xi = ctx->x + (size_t)i * w;
        for (int c = 0; c < w; c++)
            xi[c] = tok[c] + pos[c];
    }
    forward_layers(ctx, tw, p, 1, t, 1);
    clip__forward_layernorm(ctx->x + (size_t)end * w, w, 1, w, txt->final_ln_w, txt->final_ln_b,
                      cfg->layer_norm_eps, ctx->pooled, w, CLIP_GEMM_F32);
    clip__gemm_linear_run(p->proj, tw->proj, ctx->pooled, out);
    normalize_rows(out, 1, d, normalize);
out:
    pthread_mutex_unlock(&e->lock);
    return st;
}

/* ---- the worker thread ------------------------------------------------------------- */

/* Runs n text jobs (rows checked by text_rows) in one few-rows pass. */
static void run_text_batch(struct clip_engine *e, struct engine_job **jobs, int n)
{
    const int32_t *ids[ENGINE_TEXT_BATCH];
    int lens[ENGINE_TEXT_BATCH];
    float *outs[ENGINE_TEXT_BATCH];
    for (int i = 0; i < n; i++) {
        ids[i] = jobs[i]->ids;
        lens[i] = jobs[i]->n;
        outs[i] = jobs[i]->out;
    }
    pthread_mutex_lock(&e->lock);
    clip__gemm_backend_enter(e->be);
    clip__textpass_encode(e->tp, n, ids, lens, outs);
    pthread_mutex_unlock(&e->lock);
    for (int i = 0; i < n; i++) {
        normalize_rows(jobs[i]->out, 1, e->projection_dim, jobs[i]->normalize);
        jobs[i]->st = IMS_OK;
    }
}

/* Queries during an ingest (issue 11 item 4): an image batch holds the
 * worker for 0.5-1 s on 2 cores, and a text queued behind it waited for all
 * of it (p99 930 ms in bench_query_ingest). So between two layers of a
 * vision pass the worker runs the text jobs queued meanwhile on the text
 * pass, which has buffers of its own (the vision pass's activations stay as
 * they are; engine->lock is already held by this thread). A query waits at
 * most one vision layer; the batch is delayed by the texts' own time. */
static void engine_serve_texts_midpass(struct clip_engine *e)
{
    if (!e->tp)
        return;
    struct engine_job *jobs[ENGINE_TEXT_BATCH];
    const int32_t *ids[ENGINE_TEXT_BATCH];
    int lens[ENGINE_TEXT_BATCH];
    float *outs[ENGINE_TEXT_BATCH];
    int n = 0, rows = 0;
    pthread_mutex_lock(&e->job_mu);
    for (struct engine_job **at = &e->queue; *at && n < ENGINE_TEXT_BATCH;) {
        struct engine_job *j = *at;
        if (j->is_text && rows + j->n <= CLIP_TEXTPASS_MAX_ROWS) {
            rows += j->n;
            jobs[n++] = j;
            *at = j->next;
        } else {
            at = &j->next;
        }
    }
    pthread_mutex_unlock(&e->job_mu);
    if (n == 0)
        return;
    for (int i = 0; i < n; i++) {
        ids[i] = jobs[i]->ids;
        lens[i] = jobs[i]->n;
        outs[i] = jobs[i]->out;
    }
    clip__gemm_backend_enter(e->be);
    clip__textpass_encode(e->tp, n, ids, lens, outs);
    for (int i = 0; i < n; i++) {
        normalize_rows(jobs[i]->out, 1, e->projection_dim, jobs[i]->normalize);
        jobs[i]->st = IMS_OK;
    }
    pthread_mutex_lock(&e->job_mu);
    e->text_passes++;
    e->text_encodes += (uint64_t)n;
    e->midpass_text_passes++;
    for (int i = 0; i < n; i++)
        jobs[i]->done = 1;
    pthread_cond_broadcast(&e->done_cv);
    pthread_mutex_unlock(&e->job_mu);
}

/* A text job on the oneDNN path, in the worker's own context (passes run
 * one at a time on the worker, so one context serves every caller). */
static enum ims_status encode_text_job(struct clip_engine *e, struct engine_job *j)
{
    if (!e->text_ctx) {
        enum ims_status st = clip_ctx_new(e->model, 1, &e->text_ctx, j->err);
        if (st != IMS_OK)
            return st;
    }
    return encode_text_now(e->text_ctx, j->ids, j->n, j->out, j->normalize, j->err);
}

/* Takes the next work off the queue (under job_mu): with the few-rows
 * text pass, every queued text job that fits one pass (oldest first),
 * ahead of an older image job at most once (queries stay fast during an
 * ingest, and a stream of queries cannot starve it); else the oldest job.
 * Returns the count taken into jobs[]. */
static int engine_take(struct clip_engine *e, struct engine_job **jobs)
{
    int n = 0, rows = 0;
    if (e->tp && (e->queue->is_text || !e->queue->passed))
        for (struct engine_job **at = &e->queue; *at && n < ENGINE_TEXT_BATCH;) {
            struct engine_job *j = *at;
            if (j->is_text && rows + j->n <= CLIP_TEXTPASS_MAX_ROWS) {
                rows += j->n;
                jobs[n++] = j;
                *at = j->next;
            } else {
                at = &j->next;
            }
        }
    if (n == 0) {
        jobs[n++] = e->queue;
        e->queue = e->queue->next;
    } else if (e->queue && !e->queue->is_text) {
        e->queue->passed = 1;
    }
    return n;
}

static void *engine_worker_main(void *arg)
{
    struct clip_engine *e = arg;
    struct engine_job *jobs[ENGINE_TEXT_BATCH];
    pthread_mutex_lock(&e->job_mu);
    for (;;) {
        while (!e->stop && !e->queue)
            pthread_cond_wait(&e->job_cv, &e->job_mu);
        if (e->stop)
            break;
        int n = engine_take(e, jobs);
        pthread_mutex_unlock(&e->job_mu);
        struct engine_job *j = jobs[0];
        if (j->is_text && e->tp)
            run_text_batch(e, jobs, n);
        else if (j->is_text)
            j->st = encode_text_job(e, j);
        else
            j->st = encode_images_now(j->ctx, j->pixels, j->n, j->out, j->normalize, j->err);
        pthread_mutex_lock(&e->job_mu);
        if (j->is_text) {
            e->text_passes++;
            e->text_encodes += (uint64_t)n;
        }
        for (int i = 0; i < n; i++)
            jobs[i]->done = 1;
        pthread_cond_broadcast(&e->done_cv);
    }
    pthread_mutex_unlock(&e->job_mu);
    return NULL;
}

static enum ims_status engine_start_worker(struct clip_engine *e, struct ims_error *err)
{
    pthread_mutex_init(&e->job_mu, NULL);
    pthread_cond_init(&e->job_cv, NULL);
    pthread_cond_init(&e->done_cv, NULL);
    if (pthread_create(&e->worker, NULL, engine_worker_main, e) != 0)
        return ims_error_set(err, IMS_ERR_INTERNAL, "cannot start the encoder thread");
    e->worker_started = 1;
    return IMS_OK;
}

static void engine_stop_worker(struct clip_engine *e)
{
    if (!e->worker_started)
        return;
    pthread_mutex_lock(&e->job_mu);
    e->stop = 1;
    pthread_cond_broadcast(&e->job_cv);
    pthread_mutex_unlock(&e->job_mu);
    pthread_join(e->worker, NULL);
    pthread_mutex_destroy(&e->job_mu);
    pthread_cond_destroy(&e->job_cv);
    pthread_cond_destroy(&e->done_cv);
    e->worker_started = 0;
}

/* Queues a job for the worker and waits until it is done. */
static enum ims_status engine_run(struct clip_engine *e, struct engine_job *j)
{
    pthread_mutex_lock(&e->job_mu);
    struct engine_job **at = &e->queue;
    while (*at)
        at = &(*at)->next;
    *at = j;
    pthread_cond_signal(&e->job_cv);
    while (!j->done)
        pthread_cond_wait(&e->done_cv, &e->job_mu);
    pthread_mutex_unlock(&e->job_mu);
    return j->st;
}

enum ims_status clip_ctx_encode_images(struct clip_ctx *ctx, const float *pixels, int n,
                                       float *out, int normalize, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!ctx, err, IMS_ERR_INVALID, "encode_images: NULL argument");
    struct engine_job j = {NULL, 0, ctx, pixels, NULL, n, out, normalize, err, IMS_OK, 0, 0};
    return engine_run(ctx->model->engine, &j);
}

enum ims_status clip_encode_text(const struct clip_model *model, const int32_t *ids, int n_ids,
                                 float *out, int normalize, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!model || !ids || !out, err, IMS_ERR_INVALID,
                        "encode_text: NULL argument");
    int rows = 0;
    enum ims_status st = text_rows(model, ids, n_ids, &rows, err);
    if (st != IMS_OK)
        return st;
    struct engine_job j = {NULL, 1, NULL, NULL, ids, rows, out, normalize, err, IMS_OK, 0, 0};
    return engine_run(model->engine, &j);
}

enum ims_status clip_ctx_encode_text(struct clip_ctx *ctx, const int32_t *ids, int n_ids,
                                     float *out, int normalize, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!ctx, err, IMS_ERR_INVALID, "encode_text: NULL argument");
    return clip_encode_text(ctx->model, ids, n_ids, out, normalize, err);
}

const char *clip__text_kernel(const struct clip_model *model)
{
    const struct clip_engine *e = model->engine;
    if (!e->tp)
        return "onednn";
    return e->dt == CLIP_GEMM_BF16 ? "textpass-bf16" : "textpass-f32";
}

void clip__text_pass_counts(const struct clip_model *model, uint64_t *passes, uint64_t *encodes)
{
    struct clip_engine *e = model->engine;
    pthread_mutex_lock(&e->job_mu);
    *passes = e->text_passes;
    *encodes = e->text_encodes;
    pthread_mutex_unlock(&e->job_mu);
}

uint64_t clip__text_midpass_count(const struct clip_model *model)
{
    struct clip_engine *e = model->engine;
    pthread_mutex_lock(&e->job_mu);
    uint64_t n = e->midpass_text_passes;
    pthread_mutex_unlock(&e->job_mu);
    return n;
}

void clip_l2_normalize(float *v, int d)
{
    double ss = 0.0;
    for (int i = 0; i < d; i++)
        ss += (double)v[i] * v[i];
    if (ss <= 0.0)
        return;
    float inv = (float)(1.0 / sqrt(ss));
    for (int i = 0; i < d; i++)
        v[i] *= inv;
}

/* ---- context ------------------------------------------------------------------------- */

void clip_ctx_free(struct clip_ctx *ctx)
{
    if (!ctx)
        return;
    ims_free(ctx->x);
    ims_free(ctx->h);
    ims_free(ctx->qkv);
    ims_free(ctx->a);
    ims_free(ctx->m);
    ims_free(ctx->s);
    ims_free(ctx->p);
    ims_free(ctx->patches);
    ims_free(ctx->pooled);
    ims_free(ctx);
}

static void *ctx_alloc(size_t n_elems, size_t elem_bytes, int *failed)
{
    void *p = ims_aligned_alloc(64, (n_elems ? n_elems : 1) * elem_bytes);
    if (!p)
        *failed = 1;
    return p;
}

enum ims_status clip_ctx_new(const struct clip_model *model, int max_batch, struct clip_ctx **out,
                             struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    IMS_RETURN_ERROR_IF(!model || !out, err, IMS_ERR_INVALID, "clip_ctx_new: NULL argument");
    IMS_RETURN_ERROR_IF(!model->engine, err, IMS_ERR_INVALID, "clip_ctx_new: model has no engine");
    IMS_RETURN_ERROR_IF(max_batch < 1 || max_batch > ENGINE_MAX_BATCH, err, IMS_ERR_INVALID,
                        "clip_ctx_new: max_batch %d is outside 1 to %d", max_batch,
                        ENGINE_MAX_BATCH);
    struct clip_engine *e = model->engine;
    const struct clip_tower_config *vc = &model->config.vision, *tc = &model->config.text;
    struct clip_ctx *ctx = ims_calloc(1, sizeof(*ctx));
    if (!ctx)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory (context)");
    ctx->model = model;
    ctx->max_batch = max_batch;

    size_t tv = (size_t)e->vision.tokens, tt = (size_t)e->text.tokens;
    size_t rv = (size_t)max_batch * tv;
    size_t wv = (size_t)vc->hidden_size, wt = (size_t)tc->hidden_size;
    size_t rw = IMS_MAX(rv * wv, tt * wt);
    size_t ri = IMS_MAX(rv * (size_t)vc->intermediate_size, tt * (size_t)tc->intermediate_size);
    size_t sc = IMS_MAX((size_t)max_batch * vc->num_attention_heads * tv * tv,
                        (size_t)tc->num_attention_heads * tt * tt);
    size_t np = tv - 1, k = (size_t)vc->num_channels * vc->patch_size * vc->patch_size;
    size_t es = dt_size(e->dt);
    int failed = 0;
    ctx->x = ctx_alloc(rw, sizeof(float), &failed);
    ctx->h = ctx_alloc(rw, es, &failed);
    ctx->qkv = ctx_alloc(3 * rw, es, &failed);
    ctx->a = ctx_alloc(rw, sizeof(float), &failed); /* also the f32 patch GEMM output */
    ctx->m = ctx_alloc(ri, es, &failed);
    ctx->s = ctx_alloc(sc, sizeof(float), &failed);
    ctx->p = ctx_alloc(sc, es, &failed);
    ctx->patches = ctx_alloc((size_t)max_batch * np * k, sizeof(float), &failed);
    ctx->pooled = ctx_alloc((size_t)max_batch * IMS_MAX(wv, wt), sizeof(float), &failed);
    if (failed) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory (activations for %d images)",
                           max_batch);
        goto out;
    }
    pthread_mutex_lock(&e->lock);
    st = engine_reserve_batch(e, max_batch, err);
    pthread_mutex_unlock(&e->lock);
    if (st != IMS_OK)
        goto out;
    *out = ctx;
    ctx = NULL;
out:
    clip_ctx_free(ctx);
    return st;
}
