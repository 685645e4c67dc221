/* SPDX-License-Identifier: MIT */
/*
 * test_clip_text_alone.c: the text pass's run-alone path (issue 11 item 4).
 * On a busy machine the pass runs on the calling thread alone instead of
 * meeting a descheduled helper at its barriers; IMS_TEXT_ADAPTIVE=alone
 * forces that path here. Its embeddings must be the two-thread team's
 * (IMS_TEXT_ADAPTIVE=0), bit for bit, in f32 and (where the CPU has it)
 * bf16, and the f32 ones must match the tiny model's goldens.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    enum gemm_dt dt = prec == CLIP_PRECISION_BF16 ? GEMM_BF16 : GEMM_F32;
    int pass_used = textpass_supported(&m->config, dt) && getenv("IMS_CLIP_TEXT_KERNEL") == NULL;
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
        assert_int_equal(mid - before, 0);        /* the fixed team of two ran every pass */
        assert_int_equal(after - mid, N_TEXTS);   /* and the forced path every one here */
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
    struct gemm_backend *be = NULL;
    struct ims_error err = {0};
    assert_int_equal(gemm_backend_new(1, &be, &err), IMS_OK);
    int bf16 = gemm_backend_has_bf16(be);
    gemm_backend_free(be);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
