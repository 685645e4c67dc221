/* SPDX-License-Identifier: MIT */
/*
 * test_clip_vitb32_slow.c: the full-size forward pass (ViT-B/32 shapes:
 * vision 768x12, text 512x12) against the reference implementation's
 * goldens for the PRNG model of seed 1 (tests/golden/clip/prng-vitb32).
 * The 600 MB model is regenerated here with clip_make_prng_model into a
 * mkdtemp folder under /tmp and deleted afterwards. Label `slow`.
 *
 * Checks: the 21 images (in batches of 8, so the uneven last batch is
 * covered) and the 40 texts at the golden tolerance (cosine >= 0.99999, max
 * abs diff < 1e-4 on L2-normalised embeddings), logits_per_image, and bf16
 * within cosine 0.999 of the f32 goldens.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clip_goldens.h"
#include "clip_int.h"

/* ---- helpers ---------------------------------------------------------------- */







static float *load_f32(const char *name, size_t count)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/tests/golden/clip/prng-vitb32/%s", golden_src_dir(), name);
    size_t len;
    float *p = (float *)golden_read_all(path, &len);
    assert_int_equal(len, count * sizeof(float));
    return p;
}



static void remove_model(const char *dir)
{
    char p[4096];
    const char *files[] = {"config.json", "model.safetensors", "vocab.json", "merges.txt"};
    for (size_t i = 0; i < IMS_ARRAY_LEN(files); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static int vitb32_setup(void **state)
{
    static struct tiny t;
    char cfg[4096], vocab[4096];
    struct ims_error err = {0};
    snprintf(t.dir, sizeof(t.dir), "/tmp/ims-fwd-slow-XXXXXX");
    if (!mkdtemp(t.dir))
        return -1;
    snprintf(cfg, sizeof(cfg), "%s/tests/golden/clip/prng-vitb32/config.json", golden_src_dir());
    snprintf(vocab, sizeof(vocab), "%s/data/vocab", golden_src_dir());
    if (clip_make_prng_model(cfg, 1, t.dir, vocab, &err) != IMS_OK) {
        fprintf(stderr, "clip_make_prng_model: %s\n", err.message);
        remove_model(t.dir);
        return -1;
    }
    golden_load_pixels(&t);
    golden_load_ids(&t);
    *state = &t;
    return 0;
}

static int vitb32_teardown(void **state)
{
    struct tiny *t = *state;
    remove_model(t->dir);
    ims_free(t->pixels);
    return 0;
}

static void run_model(struct tiny *t, enum clip_precision prec, double min_cos, double max_abs)
{
    struct ims_error err = {0};
    struct clip_model *m = golden_load_model(t->dir, prec, 0);
    int d = clip_model_embed_dim(m);
    assert_int_equal(d, 512);
    float *gold_img = load_f32("image_embeds.f32", (size_t)N_IMAGES * d);
    float *gold_txt = load_f32("text_embeds.f32", (size_t)N_TEXTS * d);
    float *gold_logits = load_f32("logits_per_image.f32", (size_t)N_IMAGES * N_TEXTS);
    struct clip_ctx *ctx = NULL;
    assert_int_equal(clip_ctx_new(m, 8, &ctx, &err), IMS_OK);
    float *img = ims_malloc((size_t)N_IMAGES * d * sizeof(float));
    float *txt = ims_malloc((size_t)N_TEXTS * d * sizeof(float));
    assert_non_null(img);
    assert_non_null(txt);
    for (int i = 0; i < N_IMAGES; i += 8) {
        int n = IMS_MIN(8, N_IMAGES - i);
        if (clip_ctx_encode_images(ctx, t->pixels + (size_t)i * 3 * 224 * 224, n,
                                   img + (size_t)i * d, 0, &err) != IMS_OK)
            fail_msg("images %d..: %s", i, err.message);
    }
    for (int i = 0; i < N_TEXTS; i++)
        if (clip_ctx_encode_text(ctx, t->ids[i], t->n_ids[i], txt + (size_t)i * d, 0, &err) !=
            IMS_OK)
            fail_msg("text %d: %s", i, err.message);
    for (int i = 0; i < N_IMAGES; i++)
        golden_check_against(img + (size_t)i * d, gold_img + (size_t)i * d, d, "image", i, min_cos,
                      max_abs);
    for (int i = 0; i < N_TEXTS; i++)
        golden_check_against(txt + (size_t)i * d, gold_txt + (size_t)i * d, d, "text", i, min_cos,
                      max_abs);
    golden_report_worst(prec == CLIP_PRECISION_F32 ? "f32 vs goldens" : "bf16 vs f32 goldens");
    if (prec == CLIP_PRECISION_F32) {
        float scale = clip_model_logit_scale(m);
        for (int i = 0; i < N_IMAGES; i++)
            clip_l2_normalize(img + (size_t)i * d, d);
        for (int j = 0; j < N_TEXTS; j++)
            clip_l2_normalize(txt + (size_t)j * d, d);
        for (int i = 0; i < N_IMAGES; i++)
            for (int j = 0; j < N_TEXTS; j++) {
                double dot = 0;
                for (int q = 0; q < d; q++)
                    dot += (double)img[(size_t)i * d + q] * txt[(size_t)j * d + q];
                assert_float_equal(scale * dot, gold_logits[i * N_TEXTS + j], 1e-4 * scale);
            }
    }
    ims_free(img);
    ims_free(txt);
    ims_free(gold_img);
    ims_free(gold_txt);
    ims_free(gold_logits);
    clip_ctx_free(ctx);
    clip_model_free(m);
}

static void test_vitb32_f32_golden(void **state)
{
    run_model(*state, CLIP_PRECISION_F32, 0.99999, 1e-4);
}

static void test_vitb32_bf16_close(void **state)
{
    /* bf16 (or its f32 fallback on CPUs without it) within cosine 0.999. */
    run_model(*state, CLIP_PRECISION_BF16, 0.999, 5e-2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vitb32_f32_golden),
        cmocka_unit_test(test_vitb32_bf16_close),
    };
    return cmocka_run_group_tests_name("vitb32", tests, vitb32_setup, vitb32_teardown);
}
