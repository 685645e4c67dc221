/* SPDX-License-Identifier: MIT */
/*
 * test_clip_forward.c: the forward pass. First its parts on synthetic data
 * against plain references written here (oneDNN linear ops with every
 * epilogue, strided batched products, LayerNorm, softmax, im2col), then the
 * whole pass on the tiny golden model (tests/golden/clip/tiny): 21 images
 * and 40 texts against the reference implementation's embeddings and
 * logits, batch-size independence, bf16 against f32, the f32 fallback on a
 * CPU without native bf16 (a child process with oneDNN capped at
 * AVX512_CORE), concurrent contexts, allocation failures and the errors of
 * bad arguments.
 *
 * Inputs are the golden preprocessed bytes normalised here (PREPROCESSING.md
 * step 5) and the golden token ids (tokenizer/cases.jsonl), so this test
 * depends on neither the image module nor the tokenizer's correctness.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clip_goldens.h"
#include "clip_int.h"
#include "forward.h"
#include "gemm.h"
#include "textpass.h"

/* ---- helpers ---------------------------------------------------------------- */



static void copy_file(const char *from, const char *to)
{
    size_t len;
    char *d = golden_read_all(from, &len);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(d, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    ims_free(d);
}

/* Deterministic uniform values in [-1, 1) (xorshift64*). */
static float rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (float)((*s * 2685821657736338717ull) >> 40) / (float)(1u << 23) - 1.0f;
}

static float *rnd_buf(size_t n, uint64_t seed)
{
    float *p = ims_malloc(n * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = rnd(&seed);
    return p;
}


/* ---- gemm: linear ops ------------------------------------------------------------ */

struct gemm_fixture {
    struct clip_gemm_backend *be;
};

static int gemm_setup(void **state)
{
    static struct gemm_fixture f;
    struct ims_error err = {0};
    if (clip__gemm_backend_new(2, &f.be, &err) != IMS_OK) {
        fprintf(stderr, "clip__gemm_backend_new: %s\n", err.message);
        return -1;
    }
    *state = &f;
    return 0;
}

static int gemm_teardown(void **state)
{
    struct gemm_fixture *f = *state;
    clip__gemm_backend_free(f->be);
    return 0;
}

/* dst = act(src W^T + b) (+ dst0) over an (m, k) x (n, k) problem with row
 * strides, against a double reference. */
static void check_linear(struct clip_gemm_backend *be, int m, int n, int k, int ld_src, int ld_dst,
                         enum clip_gemm_dt dt, enum clip_gemm_act act, int clip_act, int accumulate,
                         double tol)
{
    struct ims_error err = {0};
    float *w = rnd_buf((size_t)n * k, 11 + n);
    float *b = rnd_buf((size_t)n, 12 + k);
    float *x = rnd_buf((size_t)m * ld_src, 13 + m);
    float *d0 = rnd_buf((size_t)m * ld_dst, 14);
    float *d = ims_malloc((size_t)m * ld_dst * sizeof(float));
    uint16_t *xb = ims_malloc((size_t)m * ld_src * sizeof(uint16_t));
    assert_non_null(d);
    assert_non_null(xb);
    memcpy(d, d0, (size_t)m * ld_dst * sizeof(float));
    if (dt == CLIP_GEMM_BF16) /* the reference sees the rounded inputs */
        for (size_t i = 0; i < (size_t)m * ld_src; i++) {
            xb[i] = clip__gemm_f32_to_bf16(x[i]);
            x[i] = ims_bf16_to_f32(xb[i]);
        }
    struct clip_gemm_weights *gw = NULL;
    struct clip_gemm_op *op = NULL;
    assert_int_equal(clip__gemm_weights_pack(be, w, b, n, k, dt, &gw, &err), IMS_OK);
    struct clip_gemm_linear_desc desc = {m, ld_src, ld_dst, dt, CLIP_GEMM_F32, act, accumulate};
    assert_int_equal(clip__gemm_op_linear(be, gw, &desc, &op, &err), IMS_OK);
    clip__gemm_linear_run(op, gw, dt == CLIP_GEMM_BF16 ? (const void *)xb : (const void *)x, d);
    double worst = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ld_dst; j++) {
            double want;
            if (j >= n) {
                want = d0[(size_t)i * ld_dst + j]; /* columns past n untouched */
            } else {
                double acc = b[j];
                for (int q = 0; q < k; q++) {
                    double wq = w[(size_t)j * k + q];
                    if (dt == CLIP_GEMM_BF16)
                        wq = ims_bf16_to_f32(clip__gemm_f32_to_bf16((float)wq));
                    acc += (double)x[(size_t)i * ld_src + q] * wq;
                }
                want = clip__forward_act_ref((float)acc, clip_act);
                if (accumulate)
                    want += d0[(size_t)i * ld_dst + j];
            }
            double diff = fabs(d[(size_t)i * ld_dst + j] - want);
            worst = diff > worst ? diff : worst;
        }
    if (worst > tol)
        fail_msg("linear m=%d n=%d k=%d dt=%d act=%d acc=%d: max error %g > %g", m, n, k, (int)dt,
                 (int)act, accumulate, worst, tol);
    clip__gemm_op_free(op);
    clip__gemm_weights_free(gw);
    ims_free(w);
    ims_free(b);
    ims_free(x);
    ims_free(d0);
    ims_free(d);
    ims_free(xb);
}

static void test_gemm_linear_f32(void **state)
{
    struct gemm_fixture *f = *state;
    check_linear(f->be, 1, 64, 96, 96, 64, CLIP_GEMM_F32, CLIP_GEMM_ACT_NONE, -1, 0, 1e-4);
    check_linear(f->be, 50, 72, 40, 40, 72, CLIP_GEMM_F32, CLIP_GEMM_ACT_NONE, -1, 0, 1e-4);
    check_linear(f->be, 7, 33, 20, 25, 40, CLIP_GEMM_F32, CLIP_GEMM_ACT_NONE, -1, 1, 1e-4);
    check_linear(f->be, 13, 48, 64, 64, 48, CLIP_GEMM_F32, CLIP_GEMM_ACT_QUICK_GELU,
                 CLIP_ACT_QUICK_GELU, 0, 1e-4);
    check_linear(f->be, 13, 48, 64, 64, 48, CLIP_GEMM_F32, CLIP_GEMM_ACT_GELU, CLIP_ACT_GELU, 0,
                 1e-4);
    check_linear(f->be, 13, 48, 64, 64, 48, CLIP_GEMM_F32, CLIP_GEMM_ACT_GELU_TANH,
                 CLIP_ACT_GELU_TANH, 0, 1e-4);
    check_linear(f->be, 160, 256, 128, 128, 256, CLIP_GEMM_F32, CLIP_GEMM_ACT_NONE, -1, 1, 1e-4);
}

static void test_gemm_linear_bf16(void **state)
{
    struct gemm_fixture *f = *state;
    if (!clip__gemm_backend_has_bf16(f->be)) {
        /* No native bf16 here: the engine falls back to f32, which the
         * tests above cover; the probe itself must agree with oneDNN. */
        assert_false(clip__gemm_backend_has_bf16(f->be));
        return;
    }
    /* Inputs and weights are rounded to bf16 in the reference as well, so
     * only the f32 accumulation order differs. */
    check_linear(f->be, 50, 96, 64, 64, 96, CLIP_GEMM_BF16, CLIP_GEMM_ACT_NONE, -1, 0, 1e-3);
    check_linear(f->be, 9, 64, 128, 128, 64, CLIP_GEMM_BF16, CLIP_GEMM_ACT_QUICK_GELU,
                 CLIP_ACT_QUICK_GELU, 0, 1e-3);
    check_linear(f->be, 9, 64, 128, 128, 64, CLIP_GEMM_BF16, CLIP_GEMM_ACT_NONE, -1, 1, 1e-3);
}

/* Attention-shaped batched products reading Q/K/V through strides, as
 * forward.c lays them out: qkv (b*t, 3w), scores (b, h, t, t). */
static void test_gemm_bmm_attention_layout(void **state)
{
    struct gemm_fixture *f = *state;
    struct ims_error err = {0};
    const int nb = 3, heads = 2, t = 5, hd = 8, w = heads * hd;
    float *qkv = rnd_buf((size_t)nb * t * 3 * w, 77);
    float *s = ims_calloc((size_t)nb * heads * t * t, sizeof(float));
    float *a = ims_calloc((size_t)nb * t * w, sizeof(float));
    assert_non_null(s);
    assert_non_null(a);
    int64_t ld = 3 * w;
    struct clip_gemm_bmm_desc d = {
        .b = nb, .h = heads, .m = t, .k = hd, .n = t,
        .src_strides = {t * ld, hd, ld, 1},
        .wei_strides = {t * ld, hd, 1, ld},
        .dst_strides = {heads * t * t, t * t, t, 1},
    };
    struct clip_gemm_op *op = NULL, *pv = NULL;
    assert_int_equal(clip__gemm_op_bmm(f->be, &d, &op, &err), IMS_OK);
    clip__gemm_bmm_run(op, qkv, qkv + w, s);
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < t; i++)
                for (int j = 0; j < t; j++) {
                    double acc = 0;
                    for (int q = 0; q < hd; q++)
                        acc += (double)qkv[(size_t)(b * t + i) * ld + h * hd + q] *
                               qkv[(size_t)(b * t + j) * ld + w + h * hd + q];
                    assert_float_equal(s[((size_t)(b * heads + h) * t + i) * t + j], acc, 1e-5);
                }
    /* a[b, i, h*hd + q] = sum_j s[b,h,i,j] v[b, j, h*hd + q] */
    d = (struct clip_gemm_bmm_desc){
        .b = nb, .h = heads, .m = t, .k = t, .n = hd,
        .src_strides = {heads * t * t, t * t, t, 1},
        .wei_strides = {t * ld, hd, ld, 1},
        .dst_strides = {t * w, hd, w, 1},
    };
    assert_int_equal(clip__gemm_op_bmm(f->be, &d, &pv, &err), IMS_OK);
    clip__gemm_bmm_run(pv, s, qkv + 2 * w, a);
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < t; i++)
                for (int q = 0; q < hd; q++) {
                    double acc = 0;
                    for (int j = 0; j < t; j++)
                        acc += (double)s[((size_t)(b * heads + h) * t + i) * t + j] *
                               qkv[(size_t)(b * t + j) * ld + 2 * w + h * hd + q];
                    assert_float_equal(a[(size_t)(b * t + i) * w + h * hd + q], acc, 1e-5);
                }
    clip__gemm_op_free(op);
    clip__gemm_op_free(pv);
    ims_free(qkv);
    ims_free(s);
    ims_free(a);
}

static void test_bf16_rounding(void **state)
{
    (void)state;
    /* 1 + 2^-8 is exactly halfway between two bf16 values: ties to even. */
    assert_int_equal(clip__gemm_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);
    assert_int_equal(clip__gemm_f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
    assert_int_equal(clip__gemm_f32_to_bf16(-2.0f), 0xc000);
    assert_float_equal(ims_bf16_to_f32(clip__gemm_f32_to_bf16(3.140625f)), 3.140625f, 0);
    assert_true(isnan(ims_bf16_to_f32(clip__gemm_f32_to_bf16(NAN))));
}

/* ---- kernels ------------------------------------------------------------------------ */

static void test_layernorm(void **state)
{
    (void)state;
    const int rows = 4, w = 37, ld = 40;
    float *x = rnd_buf((size_t)rows * ld, 5);
    float *g = rnd_buf(w, 6), *b = rnd_buf(w, 7);
    float y[4 * 40];
    uint16_t yb[4 * 40];
    for (int i = 0; i < rows * ld; i++)
        x[i] = x[i] * 3.0f + 10.0f; /* large mean: catches one-pass variance */
    clip__forward_layernorm(x, ld, rows, w, g, b, 1e-5f, y, ld, CLIP_GEMM_F32);
    clip__forward_layernorm(x, ld, rows, w, g, b, 1e-5f, yb, ld, CLIP_GEMM_BF16);
    for (int r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int i = 0; i < w; i++)
            mean += x[r * ld + i];
        mean /= w;
        for (int i = 0; i < w; i++)
            var += (x[r * ld + i] - mean) * (x[r * ld + i] - mean);
        var /= w;
        for (int i = 0; i < w; i++) {
            double want = (x[r * ld + i] - mean) / sqrt(var + 1e-5) * g[i] + b[i];
            assert_float_equal(y[r * ld + i], want, 1e-5);
            assert_float_equal(ims_bf16_to_f32(yb[r * ld + i]), want, 1e-2 * (1 + fabs(want)));
        }
    }
    /* in place */
    clip__forward_layernorm(x, ld, rows, w, g, b, 1e-5f, x, ld, CLIP_GEMM_F32);
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < w; i++)
            assert_float_equal(x[r * ld + i], y[r * ld + i], 0);
    ims_free(x);
    ims_free(g);
    ims_free(b);
}

static void test_softmax(void **state)
{
    (void)state;
    const int n_mat = 3, t = 6;
    for (int causal = 0; causal <= 1; causal++) {
        float *s = rnd_buf((size_t)n_mat * t * t, 9 + causal);
        float *s0 = ims_malloc((size_t)n_mat * t * t * sizeof(float));
        float p[3 * 6 * 6];
        assert_non_null(s0);
        for (int i = 0; i < n_mat * t * t; i++)
            s[i] *= 20.0f; /* large logits: needs the max subtraction */
        memcpy(s0, s, (size_t)n_mat * t * t * sizeof(float));
        clip__forward_softmax(s, n_mat, t, 0.5f, causal, p, CLIP_GEMM_F32);
        for (int m = 0; m < n_mat; m++)
            for (int i = 0; i < t; i++) {
                int valid = causal ? i + 1 : t;
                double z = 0;
                for (int j = 0; j < valid; j++)
                    z += exp(0.5 * s0[(m * t + i) * t + j]);
                for (int j = 0; j < t; j++) {
                    double want = j < valid ? exp(0.5 * s0[(m * t + i) * t + j]) / z : 0.0;
                    assert_float_equal(p[(m * t + i) * t + j], want, 1e-6);
                }
            }
        ims_free(s);
        ims_free(s0);
    }
}

static void test_im2col(void **state)
{
    (void)state;
    const int n = 2, c = 3, s = 8, p = 4, g = s / p;
    float *pix = rnd_buf((size_t)n * c * s * s, 3);
    float *out = ims_malloc((size_t)n * g * g * c * p * p * sizeof(float));
    uint16_t *outb = ims_malloc((size_t)n * g * g * c * p * p * sizeof(uint16_t));
    assert_non_null(out);
    assert_non_null(outb);
    clip__forward_im2col(pix, n, c, s, p, out, CLIP_GEMM_F32);
    clip__forward_im2col(pix, n, c, s, p, outb, CLIP_GEMM_BF16);
    for (int i = 0; i < n; i++)
        for (int gy = 0; gy < g; gy++)
            for (int gx = 0; gx < g; gx++)
                for (int ch = 0; ch < c; ch++)
                    for (int dy = 0; dy < p; dy++)
                        for (int dx = 0; dx < p; dx++) {
                            size_t row = (size_t)i * g * g + gy * g + gx;
                            float got = out[row * c * p * p + (ch * p + dy) * p + dx];
                            float want = pix[(((size_t)i * c + ch) * s + gy * p + dy) * s +
                                             gx * p + dx];
                            assert_float_equal(got, want, 0);
                            uint16_t gotb = outb[row * c * p * p + (ch * p + dy) * p + dx];
                            assert_int_equal(gotb, clip__gemm_f32_to_bf16(want));
                        }
    ims_free(pix);
    ims_free(out);
    ims_free(outb);
}

/* ---- the tiny golden model ------------------------------------------------------------ */




static float *load_f32(const char *name, size_t count)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/tests/golden/clip/tiny/%s", golden_src_dir(), name);
    size_t len;
    float *p = (float *)golden_read_all(path, &len);
    assert_int_equal(len, count * sizeof(float));
    return p;
}


static int tiny_setup(void **state)
{
    static struct tiny t;
    char from[4096], to[4096];
    snprintf(t.dir, sizeof(t.dir), "/tmp/ims-fwd-XXXXXX");
    if (!mkdtemp(t.dir))
        return -1;
    const char *files[][2] = {{"tests/golden/clip/tiny", "config.json"},
                              {"tests/golden/clip/tiny", "model.safetensors"},
                              {"data/vocab", "vocab.json"},
                              {"data/vocab", "merges.txt"}};
    for (size_t i = 0; i < IMS_ARRAY_LEN(files); i++) {
        snprintf(from, sizeof(from), "%s/%s/%s", golden_src_dir(), files[i][0], files[i][1]);
        snprintf(to, sizeof(to), "%s/%s", t.dir, files[i][1]);
        copy_file(from, to);
    }
    t.model = golden_load_model(t.dir, CLIP_PRECISION_F32, 2);
    golden_load_pixels(&t);
    golden_load_ids(&t);
    int d = clip_model_embed_dim(t.model);
    t.gold_img = load_f32("image_embeds.f32", (size_t)N_IMAGES * d);
    t.gold_txt = load_f32("text_embeds.f32", (size_t)N_TEXTS * d);
    t.gold_logits = load_f32("logits_per_image.f32", (size_t)N_IMAGES * N_TEXTS);
    *state = &t;
    return 0;
}

static int tiny_teardown(void **state)
{
    struct tiny *t = *state;
    char p[4096];
    const char *files[] = {"config.json", "model.safetensors", "vocab.json", "merges.txt"};
    for (size_t i = 0; i < IMS_ARRAY_LEN(files); i++) {
        snprintf(p, sizeof(p), "%s/%s", t->dir, files[i]);
        unlink(p);
    }
    rmdir(t->dir);
    clip_model_free(t->model);
    ims_free(t->pixels);
    ims_free(t->gold_img);
    ims_free(t->gold_txt);
    ims_free(t->gold_logits);
    return 0;
}


static void test_tiny_images_golden(void **state)
{
    struct tiny *t = *state;
    struct ims_error err = {0};
    int d = clip_model_embed_dim(t->model), s = clip_model_image_size(t->model);
    assert_int_equal(s, 224);
    struct clip_ctx *ctx = NULL;
    assert_int_equal(clip_ctx_new(t->model, N_IMAGES, &ctx, &err), IMS_OK);
    float *out = ims_malloc((size_t)N_IMAGES * d * sizeof(float));
    assert_non_null(out);
    assert_int_equal(clip_ctx_encode_images(ctx, t->pixels, N_IMAGES, out, 0, &err), IMS_OK);
    for (int i = 0; i < N_IMAGES; i++)
        golden_check_against(out + (size_t)i * d, t->gold_img + (size_t)i * d, d, "image", i, 0.99999,
                      1e-4);
    golden_report_worst("tiny images vs goldens");
    /* Batch-size independence: one at a time, and in uneven groups. */
    float one[1024];
    for (int i = 0; i < N_IMAGES; i += 5) {
        assert_int_equal(clip_ctx_encode_images(ctx, t->pixels + (size_t)i * 3 * s * s, 1, one, 0,
                                                &err),
                         IMS_OK);
        for (int j = 0; j < d; j++)
            assert_float_equal(one[j], out[(size_t)i * d + j], 1e-4);
    }
    float *part = ims_malloc((size_t)7 * d * sizeof(float));
    assert_int_equal(clip_ctx_encode_images(ctx, t->pixels + (size_t)3 * 3 * s * s, 7, part, 1,
                                            &err),
                     IMS_OK);
    for (int i = 0; i < 7; i++) {
        double norm = 0;
        for (int j = 0; j < d; j++)
            norm += (double)part[(size_t)i * d + j] * part[(size_t)i * d + j];
        assert_float_equal(norm, 1.0, 1e-5);
        assert_true(golden_cosine(part + (size_t)i * d, out + (size_t)(3 + i) * d, d) > 0.99999);
    }
    ims_free(part);
    ims_free(out);
    clip_ctx_free(ctx);
}

static void encode_all_texts(struct tiny *t, struct clip_ctx *ctx, float *out, int normalize)
{
    struct ims_error err = {0};
    int d = clip_model_embed_dim(t->model);
    for (int i = 0; i < N_TEXTS; i++)
        if (clip_ctx_encode_text(ctx, t->ids[i], t->n_ids[i], out + (size_t)i * d, normalize,
                                 &err) != IMS_OK)
            fail_msg("text %d: %s", i, err.message);
}

static void test_tiny_texts_golden(void **state)
{
    struct tiny *t = *state;
    struct ims_error err = {0};
    int d = clip_model_embed_dim(t->model);
    struct clip_ctx *ctx = NULL;
    assert_int_equal(clip_ctx_new(t->model, 1, &ctx, &err), IMS_OK);
    float *out = ims_malloc((size_t)N_TEXTS * d * sizeof(float));
    assert_non_null(out);
    encode_all_texts(t, ctx, out, 0);
    for (int i = 0; i < N_TEXTS; i++)
        golden_check_against(out + (size_t)i * d, t->gold_txt + (size_t)i * d, d, "text", i, 0.99999,
                      1e-4);
    golden_report_worst("tiny texts vs goldens");
    /* Padding after the end token changes nothing (causal mask): all 77. */
    float full[1024];
    assert_int_equal(clip_ctx_encode_text(ctx, t->ids[0], CLIP_CONTEXT_MAX, full, 0, &err),
                     IMS_OK);
    for (int j = 0; j < d; j++)
        assert_float_equal(full[j], out[j], 1e-5);
    ims_free(out);
    clip_ctx_free(ctx);
}

static void test_tiny_logits(void **state)
{
    struct tiny *t = *state;
    struct ims_error err = {0};
    int d = clip_model_embed_dim(t->model);
    struct clip_ctx *ctx = NULL;
    assert_int_equal(clip_ctx_new(t->model, 8, &ctx, &err), IMS_OK);
    float *img = ims_malloc((size_t)N_IMAGES * d * sizeof(float));
    float *txt = ims_malloc((size_t)N_TEXTS * d * sizeof(float));
    assert_non_null(img);
    assert_non_null(txt);
    for (int i = 0; i < N_IMAGES; i += 8) {
        int n = IMS_MIN(8, N_IMAGES - i);
        assert_int_equal(clip_ctx_encode_images(ctx, t->pixels + (size_t)i * 3 * 224 * 224, n,
                                                img + (size_t)i * d, 1, &err),
                         IMS_OK);
    }
    encode_all_texts(t, ctx, txt, 1);
    float scale = clip_model_logit_scale(t->model);
    for (int i = 0; i < N_IMAGES; i++)
        for (int j = 0; j < N_TEXTS; j++) {
            double dot = 0;
            for (int q = 0; q < d; q++)
                dot += (double)img[(size_t)i * d + q] * txt[(size_t)j * d + q];
            /* 1e-4 of cosine, in logit units. */
            assert_float_equal(scale * dot, t->gold_logits[i * N_TEXTS + j], 1e-4 * scale);
        }
    ims_free(img);
    ims_free(txt);
    clip_ctx_free(ctx);
}

static void test_tiny_bf16(void **state)
{
    struct tiny *t = *state;
    struct ims_error err = {0};
    struct clip_model *m = golden_load_model(t->dir, CLIP_PRECISION_BF16, 2);
    int d = clip_model_embed_dim(m);
    struct clip_ctx *ctx = NULL;
    assert_int_equal(clip_ctx_new(m, N_IMAGES, &ctx, &err), IMS_OK);
    float *img = ims_malloc((size_t)N_IMAGES * d * sizeof(float));
    float *txt = ims_malloc((size_t)N_TEXTS * d * sizeof(float));
    assert_non_null(img);
    assert_non_null(txt);
    assert_int_equal(clip_ctx_encode_images(ctx, t->pixels, N_IMAGES, img, 0, &err), IMS_OK);
    for (int i = 0; i < N_TEXTS; i++)
        assert_int_equal(clip_ctx_encode_text(ctx, t->ids[i], t->n_ids[i], txt + (size_t)i * d, 0,
                                              &err),
                         IMS_OK);
    /* bf16 (or its f32 fallback) stays within cosine 0.999 of the goldens. */
    for (int i = 0; i < N_IMAGES; i++)
        golden_check_against(img + (size_t)i * d, t->gold_img + (size_t)i * d, d, "bf16 image", i, 0.999,
                      5e-2);
    for (int i = 0; i < N_TEXTS; i++)
        golden_check_against(txt + (size_t)i * d, t->gold_txt + (size_t)i * d, d, "bf16 text", i, 0.999,
                      5e-2);
    golden_report_worst("tiny bf16 vs f32 goldens");
    struct clip_gemm_backend *be = NULL;
    assert_int_equal(clip__gemm_backend_new(1, &be, &err), IMS_OK);
    assert_int_equal(clip_model_precision(m),
                     clip__gemm_backend_has_bf16(be) ? CLIP_PRECISION_BF16 : CLIP_PRECISION_F32);
    clip__gemm_backend_free(be);
    ims_free(img);
    ims_free(txt);
    clip_ctx_free(ctx);
    clip_model_free(m);
}

struct thread_job {
    struct tiny *t;
    int which; /* 0: images, 1: texts */
    float out[N_TEXTS * 64];
    int ok;
};

static void *thread_main(void *arg)
{
    struct thread_job *j = arg;
    struct ims_error err = {0};
    struct clip_ctx *ctx = NULL;
    int d = clip_model_embed_dim(j->t->model);
    j->ok = clip_ctx_new(j->t->model, 4, &ctx, &err) == IMS_OK;
    for (int rep = 0; j->ok && rep < 3; rep++) {
        if (j->which == 0) {
            for (int i = 0; i < N_IMAGES && j->ok; i += 4)
                j->ok = clip_ctx_encode_images(ctx, j->t->pixels + (size_t)i * 3 * 224 * 224,
                                               IMS_MIN(4, N_IMAGES - i), j->out + (size_t)i * d, 0,
                                               &err) == IMS_OK;
        } else {
            for (int i = 0; i < N_TEXTS && j->ok; i++)
                j->ok = clip_ctx_encode_text(ctx, j->t->ids[i], j->t->n_ids[i],
                                             j->out + (size_t)i * d, 0, &err) == IMS_OK;
        }
    }
    clip_ctx_free(ctx);
    return NULL;
}

/* The model is shared; each thread has its own context. */
static void test_tiny_threads(void **state)
{
    struct tiny *t = *state;
    int d = clip_model_embed_dim(t->model);
    assert_true(d * N_TEXTS <= N_TEXTS * 64);
    static struct thread_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i].t = t;
        jobs[i].which = i % 2;
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 4; i++) {
        assert_true(jobs[i].ok);
        const float *gold = jobs[i].which == 0 ? t->gold_img : t->gold_txt;
        int n = jobs[i].which == 0 ? N_IMAGES : N_TEXTS;
        for (int k = 0; k < n; k++)
            golden_check_against(jobs[i].out + (size_t)k * d, gold + (size_t)k * d, d, "thread", k,
                          0.99999, 1e-4);
    }
}

/* Concurrent text encodes share passes on the few-rows text path (the
 * engine combines queued queries): each result must equal the same text
 * encoded alone, bit for bit, and with 8 threads queueing, passes must
 * really have been shared. */
struct text_storm {
    struct tiny *t;
    int first;
    float out[N_TEXTS * 64];
    int ok;
};

static void *text_storm_main(void *arg)
{
    struct text_storm *j = arg;
    struct ims_error err = {0};
    struct clip_ctx *ctx = NULL;
    int d = clip_model_embed_dim(j->t->model);
    j->ok = clip_ctx_new(j->t->model, 1, &ctx, &err) == IMS_OK;
    for (int rep = 0; j->ok && rep < 3; rep++)
        for (int i = 0; i < N_TEXTS && j->ok; i++) {
            int k = (j->first + i) % N_TEXTS;
            /* half the threads through their context, half without one */
            j->ok = (j->first % 2 ? clip_encode_text(j->t->model, j->t->ids[k], j->t->n_ids[k],
                                                     j->out + (size_t)k * d, 0, &err)
                                  : clip_ctx_encode_text(ctx, j->t->ids[k], j->t->n_ids[k],
                                                         j->out + (size_t)k * d, 0, &err)) ==
                    IMS_OK;
        }
    clip_ctx_free(ctx);
    return NULL;
}

static void test_tiny_text_shared_passes_exact(void **state)
{
    struct tiny *t = *state;
    struct ims_error err = {0};
    struct clip_ctx *ctx = NULL;
    int d = clip_model_embed_dim(t->model);
    const char *kernel = clip__text_kernel(t->model);
    const char *forced = getenv("IMS_CLIP_TEXT_KERNEL");
    if (forced && strcmp(forced, "onednn") == 0)
        assert_string_equal(kernel, "onednn");
    else
        assert_int_equal(strcmp(kernel, "onednn") != 0,
                         clip__textpass_supported(&t->model->config, CLIP_GEMM_F32));
    static float solo[N_TEXTS * 64];
    assert_int_equal(clip_ctx_new(t->model, 1, &ctx, &err), IMS_OK);
    for (int i = 0; i < N_TEXTS; i++)
        assert_int_equal(clip_ctx_encode_text(ctx, t->ids[i], t->n_ids[i], solo + (size_t)i * d,
                                              0, &err),
                         IMS_OK);
    clip_ctx_free(ctx);
    uint64_t passes0, encodes0, passes1, encodes1;
    clip__text_pass_counts(t->model, &passes0, &encodes0);
    static struct text_storm jobs[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        jobs[i].t = t;
        jobs[i].first = i * 5;
        assert_int_equal(pthread_create(&th[i], NULL, text_storm_main, &jobs[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 8; i++) {
        assert_true(jobs[i].ok);
        for (int k = 0; k < N_TEXTS; k++)
            if (memcmp(jobs[i].out + (size_t)k * d, solo + (size_t)k * d, sizeof(float) * d))
                fail_msg("thread %d text %d: differs from the text encoded alone", i, k);
    }
    clip__text_pass_counts(t->model, &passes1, &encodes1);
    assert_int_equal(encodes1 - encodes0, 8 * 3 * N_TEXTS);
    if (strcmp(kernel, "onednn") == 0)
        assert_int_equal(passes1 - passes0, encodes1 - encodes0); /* one pass per encode */
    else
        assert_true(passes1 - passes0 < encodes1 - encodes0); /* some passes were shared */
    print_message("text passes: %llu encodes in %llu passes (%s)\n",
                  (unsigned long long)(encodes1 - encodes0),
                  (unsigned long long)(passes1 - passes0), kernel);
}

/* The text pass's own activation epilogues (erf gelu, tanh gelu; the tiny
 * model itself is quick_gelu) against the oneDNN path's fused ones: the
 * tiny model with its text tower's activation switched, loaded once per
 * path, 40 texts. */
static void encode_texts_with(struct tiny *t, const char *kernel, float *out)
{
    if (kernel)
        setenv("IMS_CLIP_TEXT_KERNEL", kernel, 1);
    else
        unsetenv("IMS_CLIP_TEXT_KERNEL");
    struct clip_model *m = golden_load_model(t->dir, CLIP_PRECISION_F32, 2);
    int d = clip_model_embed_dim(m);
    struct ims_error err = {0};
    for (int i = 0; i < N_TEXTS; i++)
        assert_int_equal(clip_encode_text(m, t->ids[i], t->n_ids[i], out + (size_t)i * d, 0, &err),
                         IMS_OK);
    if (kernel)
        assert_string_equal(clip__text_kernel(m), kernel);
    else
        assert_int_equal(strcmp(clip__text_kernel(m), "onednn") != 0,
                         clip__textpass_supported(&m->config, CLIP_GEMM_F32));
    clip_model_free(m);
}

static void test_tiny_text_activations_both_paths(void **state)
{
    struct tiny *t = *state;
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", t->dir);
    size_t len;
    char *orig = golden_read_all(path, &len);
    const char *env = getenv("IMS_CLIP_TEXT_KERNEL");
    char *saved_env = env ? strdup(env) : NULL;
    const char *acts[] = {"gelu", "gelu_new"};
    int d = clip_model_embed_dim(t->model);
    static float a[N_TEXTS * 64], b[N_TEXTS * 64];
    for (size_t k = 0; k < IMS_ARRAY_LEN(acts); k++) {
        /* the text_config comes first in the file: its hidden_act is the first one */
        const char *at = strstr(orig, "\"hidden_act\": \"quick_gelu\"");
        assert_non_null(at);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fprintf(f, "%.*s\"hidden_act\": \"%s\"%s", (int)(at - orig), orig, acts[k],
                at + strlen("\"hidden_act\": \"quick_gelu\""));
        assert_int_equal(fclose(f), 0);
        encode_texts_with(t, "onednn", a);
        encode_texts_with(t, NULL, b);
        for (int i = 0; i < N_TEXTS; i++) {
            golden_check_against(b + (size_t)i * d, a + (size_t)i * d, d, acts[k], i, 0.99999,
                                 1e-5);
            /* and the activation really changed the result */
            assert_true(memcmp(a + (size_t)i * d, t->gold_txt + (size_t)i * d, 4 * (size_t)d));
        }
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(orig, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    if (saved_env)
        setenv("IMS_CLIP_TEXT_KERNEL", saved_env, 1);
    else
        unsetenv("IMS_CLIP_TEXT_KERNEL");
    free(saved_env);
    ims_free(orig);
}

static void test_tiny_bad_arguments(void **state)
{
    struct tiny *t = *state;
    struct ims_error err = {0};
    struct clip_ctx *ctx = NULL;
    float out[64 * 4];
    assert_int_equal(clip_ctx_new(t->model, 0, &ctx, &err), IMS_ERR_INVALID);
    assert_null(ctx);
    assert_int_equal(clip_ctx_new(t->model, 1 << 20, &ctx, &err), IMS_ERR_INVALID);
    assert_int_equal(clip_ctx_new(t->model, 2, &ctx, &err), IMS_OK);
    assert_int_equal(clip_ctx_encode_images(ctx, t->pixels, 3, out, 1, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "1 to 2"));
    assert_int_equal(clip_ctx_encode_images(ctx, t->pixels, 0, out, 1, &err), IMS_ERR_INVALID);
    assert_int_equal(clip_ctx_encode_images(ctx, NULL, 1, out, 1, &err), IMS_ERR_INVALID);
    int32_t ids[CLIP_CONTEXT_MAX + 1] = {49406, 320, 49407};
    assert_int_equal(clip_ctx_encode_text(ctx, ids, 0, out, 1, &err), IMS_ERR_INVALID);
    assert_int_equal(clip_ctx_encode_text(ctx, ids, CLIP_CONTEXT_MAX + 1, out, 1, &err),
                     IMS_ERR_INVALID);
    ids[1] = 49408;
    assert_int_equal(clip_ctx_encode_text(ctx, ids, 3, out, 1, &err), IMS_ERR_INVALID);
    assert_non_null(strstr(err.message, "49408"));
    ids[1] = -1;
    assert_int_equal(clip_ctx_encode_text(ctx, ids, 3, out, 1, &err), IMS_ERR_INVALID);
    clip_ctx_free(ctx);
    clip_ctx_free(NULL);
    float z[4] = {0, 0, 0, 0};
    clip_l2_normalize(z, 4);
    for (int i = 0; i < 4; i++)
        assert_float_equal(z[i], 0.0f, 0);
}

static void test_tiny_ctx_alloc_failure(void **state)
{
    struct tiny *t = *state;
    struct ims_error err = {0};
    int failed = 0;
    for (long n = 0; n < 12; n++) {
        struct clip_ctx *ctx = NULL;
        ims_alloc_set_fail_after(n);
        enum ims_status st = clip_ctx_new(t->model, 4, &ctx, &err);
        ims_alloc_set_fail_after(-1);
        if (st == IMS_OK) {
            clip_ctx_free(ctx);
        } else {
            assert_int_equal(st, IMS_ERR_NOMEM);
            assert_null(ctx);
            failed++;
        }
    }
    assert_true(failed > 0);
}

/* Runs in a child process started with DNNL_MAX_CPU_ISA=AVX512_CORE (oneDNN
 * reads it once, at first use): a CPU without native bf16. The engine must
 * say so and run f32, at the f32 golden tolerance. */
static void test_no_bf16_fallback_child(void **state)
{
    struct tiny *t = *state;
    struct ims_error err = {0};
    struct clip_gemm_backend *be = NULL;
    assert_int_equal(clip__gemm_backend_new(1, &be, &err), IMS_OK);
    assert_false(clip__gemm_backend_has_bf16(be));
    clip__gemm_backend_free(be);
    struct clip_model *m = golden_load_model(t->dir, CLIP_PRECISION_BF16, 1);
    assert_int_equal(clip_model_precision(m), CLIP_PRECISION_F32);
    int d = clip_model_embed_dim(m);
    struct clip_ctx *ctx = NULL;
    float out[64 * 4];
    assert_true(d <= 64);
    assert_int_equal(clip_ctx_new(m, 4, &ctx, &err), IMS_OK);
    assert_int_equal(clip_ctx_encode_images(ctx, t->pixels, 4, out, 0, &err), IMS_OK);
    for (int i = 0; i < 4; i++)
        golden_check_against(out + (size_t)i * d, t->gold_img + (size_t)i * d, d, "fallback image", i,
                      0.99999, 1e-4);
    assert_int_equal(clip_ctx_encode_text(ctx, t->ids[0], t->n_ids[0], out, 0, &err), IMS_OK);
    golden_check_against(out, t->gold_txt, d, "fallback text", 0, 0.99999, 1e-4);
    clip_ctx_free(ctx);
    clip_model_free(m);
}

static char *self_path;

static void test_no_bf16_fallback(void **state)
{
    (void)state;
    char *child_argv[] = {self_path, "--no-bf16-child", NULL};
    extern char **environ;
    size_t n_env = 0;
    while (environ[n_env])
        n_env++;
    char **env = calloc(n_env + 2, sizeof(*env));
    assert_non_null(env);
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (strncmp(environ[i], "DNNL_MAX_CPU_ISA=", 17) != 0)
            env[k++] = environ[i];
    env[k++] = "DNNL_MAX_CPU_ISA=AVX512_CORE";
    env[k] = NULL;
    pid_t pid;
    /* /proc/self/exe: argv[0] may be a bare name found on PATH. */
    assert_int_equal(posix_spawn(&pid, "/proc/self/exe", NULL, NULL, child_argv, env), 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    free(env);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(int argc, char **argv)
{
    self_path = argv[0];
    if (argc > 1 && !strcmp(argv[1], "--no-bf16-child")) {
        const struct CMUnitTest child[] = {cmocka_unit_test(test_no_bf16_fallback_child)};
        return cmocka_run_group_tests_name("no-bf16 child", child, tiny_setup, tiny_teardown);
    }
    const struct CMUnitTest gemm_tests[] = {
        cmocka_unit_test(test_gemm_linear_f32),
        cmocka_unit_test(test_gemm_linear_bf16),
        cmocka_unit_test(test_gemm_bmm_attention_layout),
    };
    const struct CMUnitTest kernel_tests[] = {
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_im2col),
    };
    const struct CMUnitTest tiny_tests[] = {
        cmocka_unit_test(test_tiny_images_golden), cmocka_unit_test(test_tiny_texts_golden),
        cmocka_unit_test(test_tiny_logits),        cmocka_unit_test(test_tiny_bf16),
        cmocka_unit_test(test_tiny_threads), cmocka_unit_test(test_tiny_text_shared_passes_exact), cmocka_unit_test(test_tiny_text_activations_both_paths),       cmocka_unit_test(test_tiny_bad_arguments),
        cmocka_unit_test(test_tiny_ctx_alloc_failure), cmocka_unit_test(test_no_bf16_fallback),
    };
    int rc = 0;
    rc |= cmocka_run_group_tests_name("gemm", gemm_tests, gemm_setup, gemm_teardown);
    rc |= cmocka_run_group_tests_name("kernels", kernel_tests, NULL, NULL);
    rc |= cmocka_run_group_tests_name("tiny", tiny_tests, tiny_setup, tiny_teardown);
    return rc;
}
