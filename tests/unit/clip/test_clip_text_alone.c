/* SPDX-License-Identifier: MIT */
/*
 * test_clip_text_alone.c: the text pass's run-alone path (issue 11 item 4).
 * On a busy machine the pass runs on the calling thread alone instead of
 * meeting a descheduled helper at its barriers; IMS_TEXT_ADAPTIVE=alone
 * forces that path here. Its embeddings must be the two-thread team's
 * (IMS_TEXT_ADAPTIVE=0), bit for bit, in f32 and (where the CPU has it)
 * bf16, and the f32 ones must match the tiny model's goldens.
 *
 * Also the worker's text passes between two layers of a vision pass (queries
 * during an ingest): texts encoded while image batches run on another
 * thread must equal the same texts encoded alone, and the images must equal
 * theirs (the text pass must leave the vision pass's activations alone).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "clip_goldens.h"
#include "clip_int.h"
#include "gemm.h"
#include "textpass.h"

static void copy_file(const char *from, const char *to)
{
    size_t n = 0;
    char *data = golden_read_all(from, &n);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
    ims_free(data);
}

static const char *files[][2] = {{"tests/golden/clip/tiny", "config.json"},
                                 {"tests/golden/clip/tiny", "model.safetensors"},
                                 {"data/vocab", "vocab.json"},
                                 {"data/vocab", "merges.txt"}};

static void encode_all(struct tiny *t, struct clip_model *m, const char *mode, float *out)
{
    struct ims_error err = {0};
    struct clip_ctx *ctx = NULL;
    assert_int_equal(clip_ctx_new(m, 1, &ctx, &err), IMS_OK);
    setenv("IMS_TEXT_ADAPTIVE", mode, 1);
    int d = clip_model_embed_dim(m);
    for (int i = 0; i < N_TEXTS; i++)
        if (clip_ctx_encode_text(ctx, t->ids[i], t->n_ids[i], out + (size_t)i * d, 0, &err) !=
            IMS_OK)
            fail_msg("text %d: %s", i, err.message);
    unsetenv("IMS_TEXT_ADAPTIVE");
    clip_ctx_free(ctx);
}

static void check_precision(struct tiny *t, enum clip_precision prec)
{
    struct clip_model *m = golden_load_model(t->dir, prec, 2);
    int d = clip_model_embed_dim(m);
    enum clip_gemm_dt dt = prec == CLIP_PRECISION_BF16 ? CLIP_GEMM_BF16 : CLIP_GEMM_F32;
    int pass_used = clip__textpass_supported(&m->config, dt) && getenv("IMS_CLIP_TEXT_KERNEL") == NULL;
    float *team = ims_malloc((size_t)N_TEXTS * d * sizeof(float));
    float *alone = ims_malloc((size_t)N_TEXTS * d * sizeof(float));
    assert_non_null(team);
    assert_non_null(alone);
    long before = atomic_load(&clip__textpass_alone_passes);
    encode_all(t, m, "0", team);
    long mid = atomic_load(&clip__textpass_alone_passes);
    encode_all(t, m, "alone", alone);
    long after = atomic_load(&clip__textpass_alone_passes);
    if (pass_used) {
        /* the fixed team of two ran every pass (a build without OpenMP has
         * no team: every pass is alone) */
        assert_int_equal(mid - before, clip__textpass_has_team() ? 0 : N_TEXTS);
        assert_int_equal(after - mid, N_TEXTS); /* and the forced path every one here */
    }
    assert_memory_equal(team, alone, (size_t)N_TEXTS * d * sizeof(float));
    if (prec == CLIP_PRECISION_F32)
        for (int i = 0; i < N_TEXTS; i++)
            golden_check_against(alone + (size_t)i * d, t->gold_txt + (size_t)i * d, d, "text",
                                 i, 0.99999, 1e-4);
    printf("%s: %s, %ld passes alone\n", prec == CLIP_PRECISION_BF16 ? "bf16" : "f32",
           pass_used ? "text pass" : "general path (no text pass on this CPU)", after - mid);
    ims_free(team);
    ims_free(alone);
    clip_model_free(m);
}

struct image_loop {
    struct tiny *t;
    int rounds;
    atomic_int stop; /* ends the rounds early */
    float *out; /* (N_IMAGES, D), the last round's */
    int failed;
};

static void *image_loop_main(void *arg)
{
    struct image_loop *l = arg;
    struct ims_error err = {0};
    struct clip_ctx *ctx = NULL;
    if (clip_ctx_new(l->t->model, N_IMAGES, &ctx, &err) != IMS_OK) {
        l->failed = 1;
        return NULL;
    }
    for (int r = 0; r < l->rounds && !atomic_load(&l->stop); r++)
        if (clip_ctx_encode_images(ctx, l->t->pixels, N_IMAGES, l->out, 0, &err) != IMS_OK)
            l->failed = 1;
    clip_ctx_free(ctx);
    return NULL;
}

static void test_texts_between_vision_layers(void **state)
{
    static struct tiny t;
    (void)state;
    char from[4096], to[4096];
    snprintf(t.dir, sizeof(t.dir), "/tmp/ims-midpass-XXXXXX");
    assert_non_null(mkdtemp(t.dir));
    for (size_t i = 0; i < IMS_ARRAY_LEN(files); i++) {
        snprintf(from, sizeof(from), "%s/%s/%s", golden_src_dir(), files[i][0], files[i][1]);
        snprintf(to, sizeof(to), "%s/%s", t.dir, files[i][1]);
        copy_file(from, to);
    }
    golden_load_ids(&t);
    golden_load_pixels(&t);
    t.model = golden_load_model(t.dir, CLIP_PRECISION_F32, 2);
    int d = clip_model_embed_dim(t.model);
    size_t img_bytes = (size_t)N_IMAGES * d * sizeof(float);
    size_t txt_bytes = (size_t)N_TEXTS * d * sizeof(float);
    float *img_alone = ims_malloc(img_bytes), *txt_alone = ims_malloc(txt_bytes);
    float *txt_busy = ims_malloc(txt_bytes);
    struct image_loop l = {&t, 1, 0, ims_malloc(img_bytes), 0};
    assert_true(img_alone && txt_alone && txt_busy && l.out);
    image_loop_main(&l);
    assert_false(l.failed);
    memcpy(img_alone, l.out, img_bytes);
    encode_all(&t, t.model, "0", txt_alone);

    uint64_t before = clip__text_midpass_count(t.model);
    /* texts keep coming while images are encoded, until one of them was
     * served between two vision layers (the path under test) */
    l.rounds = 100000;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, image_loop_main, &l), 0);
    int r = 0;
    for (; r < 2000 && (r < 10 || clip__text_midpass_count(t.model) == before); r++) {
        encode_all(&t, t.model, "0", txt_busy);
        assert_memory_equal(txt_alone, txt_busy, txt_bytes);
    }
    atomic_store(&l.stop, 1);
    pthread_join(th, NULL);
    assert_false(l.failed);
    assert_memory_equal(img_alone, l.out, img_bytes);
    uint64_t midpass = clip__text_midpass_count(t.model) - before;
    printf("text passes between vision layers: %llu (%d rounds of texts)\n",
           (unsigned long long)midpass, r);
    assert_true(midpass > 0);
    ims_free(img_alone);
    ims_free(txt_alone);
    ims_free(txt_busy);
    ims_free(l.out);
    ims_free(t.pixels);
    clip_model_free(t.model);
    for (size_t i = 0; i < IMS_ARRAY_LEN(files); i++) {
        snprintf(to, sizeof(to), "%s/%s", t.dir, files[i][1]);
        unlink(to);
    }
    rmdir(t.dir);
}

static void test_alone_equals_team(void **state)
{
    static struct tiny t;
    (void)state;
    char from[4096], to[4096];
    snprintf(t.dir, sizeof(t.dir), "/tmp/ims-alone-XXXXXX");
    assert_non_null(mkdtemp(t.dir));
    for (size_t i = 0; i < IMS_ARRAY_LEN(files); i++) {
        snprintf(from, sizeof(from), "%s/%s/%s", golden_src_dir(), files[i][0], files[i][1]);
        snprintf(to, sizeof(to), "%s/%s", t.dir, files[i][1]);
        copy_file(from, to);
    }
    golden_load_ids(&t);
    size_t n = 0;
    snprintf(from, sizeof(from), "%s/tests/golden/clip/tiny/text_embeds.f32", golden_src_dir());
    t.gold_txt = (float *)golden_read_all(from, &n);
    assert_true(n >= (size_t)N_TEXTS * 32 * sizeof(float));
    check_precision(&t, CLIP_PRECISION_F32);
    struct clip_gemm_backend *be = NULL;
    struct ims_error err = {0};
    assert_int_equal(clip__gemm_backend_new(1, &be, &err), IMS_OK);
    int bf16 = clip__gemm_backend_has_bf16(be);
    clip__gemm_backend_free(be);
    if (bf16)
        check_precision(&t, CLIP_PRECISION_BF16);
    for (size_t i = 0; i < IMS_ARRAY_LEN(files); i++) {
        snprintf(to, sizeof(to), "%s/%s", t.dir, files[i][1]);
        unlink(to);
    }
    rmdir(t.dir);
    ims_free(t.gold_txt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alone_equals_team),
        cmocka_unit_test(test_texts_between_vision_layers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
