/* SPDX-License-Identifier: MIT */
/*
 * test_clip_config.c: config.json parsing: the published CLIP architectures
 * (OpenAI ViT-B/32, ViT-B/16, ViT-L/14, LAION ViT-B-32 and an old-style
 * export with *_config_dict and the legacy eos_token_id 2), HF defaults for
 * missing keys, and a table of invalid configs, each a clear error.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip_int.h"

static enum ims_status parse(const char *json, struct clip_config *c, struct ims_error *err)
{
    /* An exactly sized copy, so ASan sees any read past the end. */
    size_t n = strlen(json);
    char *b = malloc(n ? n : 1);
    memcpy(b, json, n);
    enum ims_status st = clip__config_parse(b, n, c, err);
    free(b);
    return st;
}

/* From the values of the published checkpoints' config.json files. */
static const char vit_b16[] =
    "{\"architectures\":[\"CLIPModel\"],\"model_type\":\"clip\",\"projection_dim\":512,"
    "\"logit_scale_init_value\":2.6592,\"initializer_factor\":1.0,"
    "\"text_config\":{\"hidden_size\":512,\"intermediate_size\":2048,\"num_attention_heads\":8,"
    "\"num_hidden_layers\":12,\"max_position_embeddings\":77,\"vocab_size\":49408,"
    "\"hidden_act\":\"quick_gelu\",\"layer_norm_eps\":1e-05,\"bos_token_id\":0,"
    "\"eos_token_id\":2,\"pad_token_id\":1,\"dropout\":0.0,\"projection_dim\":512},"
    "\"vision_config\":{\"hidden_size\":768,\"intermediate_size\":3072,\"num_attention_heads\":12,"
    "\"num_hidden_layers\":12,\"image_size\":224,\"patch_size\":16,\"hidden_act\":\"quick_gelu\","
    "\"layer_norm_eps\":1e-05,\"projection_dim\":512},\"torch_dtype\":\"float32\","
    "\"transformers_version\":null}";

static const char vit_l14[] =
    "{\"architectures\":[\"CLIPModel\"],\"model_type\":\"clip\",\"projection_dim\":768,"
    "\"text_config\":{\"hidden_size\":768,\"intermediate_size\":3072,\"num_attention_heads\":12,"
    "\"num_hidden_layers\":12,\"projection_dim\":768,\"eos_token_id\":2},"
    "\"vision_config\":{\"hidden_size\":1024,\"intermediate_size\":4096,"
    "\"num_attention_heads\":16,\"num_hidden_layers\":24,\"image_size\":224,\"patch_size\":14,"
    "\"projection_dim\":768},"
    /* old exports: the *_dict copies win */
    "\"text_config_dict\":{\"hidden_size\":768,\"intermediate_size\":3072,"
    "\"num_attention_heads\":12,\"num_hidden_layers\":12,\"projection_dim\":768},"
    "\"vision_config_dict\":{\"hidden_size\":1024,\"intermediate_size\":4096,"
    "\"num_attention_heads\":16,\"num_hidden_layers\":24,\"patch_size\":14}}";

static const char laion_b32[] =
    "{\"architectures\":[\"CLIPModel\"],\"model_type\":\"clip\",\"projection_dim\":512,"
    "\"logit_scale_init_value\":2.6592,"
    "\"text_config\":{\"hidden_act\":\"gelu\",\"hidden_size\":512,\"intermediate_size\":2048,"
    "\"num_attention_heads\":8,\"num_hidden_layers\":12,\"layer_norm_eps\":1e-05,"
    "\"eos_token_id\":2,\"model_type\":\"clip_text_model\"},"
    "\"vision_config\":{\"hidden_act\":\"gelu\",\"hidden_size\":768,\"intermediate_size\":3072,"
    "\"num_attention_heads\":12,\"num_hidden_layers\":12,\"patch_size\":32,"
    "\"layer_norm_eps\":1e-05,\"model_type\":\"clip_vision_model\"}}";

static void test_published(void **state)
{
    (void)state;
    struct clip_config c;
    struct ims_error err = {0};

    assert_int_equal(parse(vit_b16, &c, &err), IMS_OK);
    assert_int_equal(c.vision.patch_size, 16);
    assert_int_equal(c.vision.hidden_size, 768);
    assert_int_equal(c.text.eos_token_id, -1); /* legacy 2: pool at argmax */
    assert_int_equal(c.text.hidden_act, CLIP_ACT_QUICK_GELU);
    assert_int_equal(c.projection_dim, 512);
    assert_float_equal(c.text.layer_norm_eps, 1e-5, 1e-12);

    assert_int_equal(parse(vit_l14, &c, &err), IMS_OK);
    assert_int_equal(c.vision.hidden_size, 1024);
    assert_int_equal(c.vision.num_hidden_layers, 24);
    assert_int_equal(c.vision.num_attention_heads, 16);
    assert_int_equal(c.vision.patch_size, 14);
    assert_int_equal(c.vision.intermediate_size, 4096);
    assert_int_equal(c.text.hidden_size, 768);
    assert_int_equal(c.projection_dim, 768);
    assert_int_equal(c.text.max_position_embeddings, 77);

    assert_int_equal(parse(laion_b32, &c, &err), IMS_OK);
    assert_int_equal(c.text.hidden_act, CLIP_ACT_GELU);
    assert_int_equal(c.vision.hidden_act, CLIP_ACT_GELU);
    assert_int_equal(c.vision.image_size, 224); /* default */
    assert_int_equal(c.vision.patch_size, 32);

    /* The goldens' configs. */
    char p[4096];
    const char *src = getenv("IMS_SOURCE_DIR");
    const char *names[] = {"tiny", "prng-vitb32"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s/tests/golden/clip/%s/config.json",
                 src && *src ? src : IMS_SOURCE_DIR, names[i]);
        char *json;
        size_t len;
        assert_int_equal(ims_file_read(p, 1 << 20, &json, &len, &err), IMS_OK);
        assert_int_equal(clip__config_parse(json, len, &c, &err), IMS_OK);
        assert_int_equal(c.text.eos_token_id, 49407);
        assert_int_equal(c.vision.hidden_size, i ? 768 : 128);
        assert_int_equal(c.vision.num_hidden_layers, i ? 12 : 2);
        assert_int_equal(c.text.num_attention_heads, i ? 8 : 2);
        assert_int_equal(c.projection_dim, i ? 512 : 32);
        ims_free(json);
    }
}

static void test_defaults(void **state)
{
    (void)state;
    struct clip_config c;
    struct ims_error err = {0};
    /* Only the model type: transformers' CLIPConfig() defaults (ViT-B/32). */
    assert_int_equal(parse("{\"model_type\":\"clip\",\"text_config\":null}", &c, &err), IMS_OK);
    assert_int_equal(c.text.vocab_size, 49408);
    assert_int_equal(c.text.hidden_size, 512);
    assert_int_equal(c.text.intermediate_size, 2048);
    assert_int_equal(c.text.num_attention_heads, 8);
    assert_int_equal(c.text.num_hidden_layers, 12);
    assert_int_equal(c.text.max_position_embeddings, 77);
    assert_int_equal(c.text.eos_token_id, 49407);
    assert_int_equal(c.vision.hidden_size, 768);
    assert_int_equal(c.vision.intermediate_size, 3072);
    assert_int_equal(c.vision.num_attention_heads, 12);
    assert_int_equal(c.vision.num_hidden_layers, 12);
    assert_int_equal(c.vision.image_size, 224);
    assert_int_equal(c.vision.patch_size, 32);
    assert_int_equal(c.vision.num_channels, 3);
    assert_int_equal(c.projection_dim, 512);
    assert_int_equal(c.vision.hidden_act, CLIP_ACT_QUICK_GELU);
    /* Only architectures, with other names around CLIPModel. */
    assert_int_equal(parse("{\"architectures\":[\"Foo\",\"CLIPModel\"],"
                           "\"vision_config\":{\"hidden_act\":\"gelu_pytorch_tanh\"},"
                           "\"text_config\":{\"hidden_act\":\"gelu_new\",\"max_position_embeddings\":"
                           "64,\"layer_norm_eps\":1e-6}}",
                           &c, &err),
                     IMS_OK);
    assert_int_equal(c.vision.hidden_act, CLIP_ACT_GELU_TANH);
    assert_int_equal(c.text.hidden_act, CLIP_ACT_GELU_TANH);
    assert_int_equal(c.text.max_position_embeddings, 64);
    assert_float_equal(c.text.layer_norm_eps, 1e-6, 1e-12);
}

static void test_invalid(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        enum ims_status st;
        const char *needle;
    } cases[] = {
        {"", IMS_ERR_INVALID, "invalid JSON"},
        {"{\"model_type\":\"clip\"", IMS_ERR_INVALID, "invalid JSON"},
        {"[1]", IMS_ERR_INVALID, "not a JSON object"},
        {"{}", IMS_ERR_UNSUPPORTED, "neither architectures nor model_type"},
        {"{\"architectures\":[\"BertModel\"]}", IMS_ERR_UNSUPPORTED,
         "unknown architecture 'BertModel'"},
        {"{\"architectures\":[\"CLIPModel\"],\"model_type\":\"siglip\"}", IMS_ERR_UNSUPPORTED,
         "model_type 'siglip'"},
        {"{\"architectures\":\"CLIPModel\"}", IMS_ERR_INVALID, "architectures is not an array"},
        {"{\"architectures\":[1]}", IMS_ERR_INVALID, "non-string"},
        {"{\"model_type\":\"clip\",\"model_type\":\"clip\"}", IMS_ERR_INVALID, "invalid JSON"},
        {"{\"model_type\":\"clip\",\"text_config\":[]}", IMS_ERR_INVALID,
         "text_config is not an object"},
        {"{\"model_type\":\"clip\",\"text_config\":{\"hidden_size\":500,\"num_attention_heads\":8}}",
         IMS_ERR_INVALID, "text_config.hidden_size 500 is not divisible by num_attention_heads 8"},
        {"{\"model_type\":\"clip\",\"vision_config\":{\"image_size\":230}}", IMS_ERR_INVALID,
         "image_size 230 is not a multiple of patch_size 32"},
        {"{\"model_type\":\"clip\",\"vision_config\":{\"image_size\":16}}", IMS_ERR_INVALID,
         "image_size 16 is not a multiple of patch_size 32"},
        {"{\"model_type\":\"clip\",\"vision_config\":{\"image_size\":4096,\"patch_size\":1}}",
         IMS_ERR_INVALID, "patches, over the limit"},
        {"{\"model_type\":\"clip\",\"vision_config\":{\"num_hidden_layers\":129}}", IMS_ERR_INVALID,
         "vision_config.num_hidden_layers = 129 is out of range"},
        {"{\"model_type\":\"clip\",\"vision_config\":{\"num_hidden_layers\":0}}", IMS_ERR_INVALID,
         "num_hidden_layers = 0"},
        {"{\"model_type\":\"clip\",\"text_config\":{\"hidden_size\":-512}}", IMS_ERR_INVALID,
         "text_config.hidden_size = -512"},
        {"{\"model_type\":\"clip\",\"text_config\":{\"hidden_size\":16385}}", IMS_ERR_INVALID,
         "hidden_size = 16385"},
        {"{\"model_type\":\"clip\",\"text_config\":{\"hidden_size\":99999999999999}}",
         IMS_ERR_INVALID, "out of range"},
        {"{\"model_type\":\"clip\",\"text_config\":{\"hidden_size\":512.0}}", IMS_ERR_INVALID,
         "text_config.hidden_size must be an integer"},
        {"{\"model_type\":\"clip\",\"text_config\":{\"hidden_size\":\"512\"}}", IMS_ERR_INVALID,
         "must be an integer"},
        {"{\"model_type\":\"clip\",\"text_config\":{\"vocab_size\":1000}}", IMS_ERR_INVALID,
         "vocab_size = 1000"},
        {"{\"model_type\":\"clip\",\"text_config\":{\"max_position_embeddings\":78}}",
         IMS_ERR_INVALID, "max_position_embeddings = 78"},
        {"{\"model_type\":\"clip\",\"text_config\":{\"eos_token_id\":49408}}", IMS_ERR_INVALID,
         "eos_token_id"},
        {"{\"model_type\":\"clip\",\"text_config\":{\"hidden_act\":\"relu\"}}",
         IMS_ERR_UNSUPPORTED, "text_config.hidden_act 'relu' is not supported"},
        {"{\"model_type\":\"clip\",\"vision_config\":{\"hidden_act\":7}}", IMS_ERR_INVALID,
         "hidden_act must be a string"},
        {"{\"model_type\":\"clip\",\"vision_config\":{\"layer_norm_eps\":0}}", IMS_ERR_INVALID,
         "layer_norm_eps = 0"},
        /* positive as a double, 0 as the float the layers use (found by fuzz_config) */
        {"{\"model_type\":\"clip\",\"text_config\":{\"layer_norm_eps\":1e-85}}", IMS_ERR_INVALID,
         "layer_norm_eps = 1e-85"},
        {"{\"model_type\":\"clip\",\"vision_config\":{\"layer_norm_eps\":\"x\"}}", IMS_ERR_INVALID,
         "layer_norm_eps must be a number"},
        {"{\"model_type\":\"clip\",\"vision_config\":{\"num_channels\":1}}", IMS_ERR_INVALID,
         "num_channels = 1"},
        {"{\"model_type\":\"clip\",\"projection_dim\":0}", IMS_ERR_INVALID, "projection_dim"},
        {"{\"model_type\":\"clip\",\"vision_config_dict\":{\"patch_size\":33}}", IMS_ERR_INVALID,
         "not a multiple of patch_size 33"},
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(cases); i++) {
        struct clip_config c;
        memset(&c, 0x5a, sizeof(c));
        struct ims_error err = {0};
        enum ims_status st = parse(cases[i].json, &c, &err);
        if (st != cases[i].st || !strstr(err.message, cases[i].needle))
            fail_msg("case %zu: want %s \"%s\", got %s \"%s\"", i, ims_status_name(cases[i].st),
                     cases[i].needle, ims_status_name(st), err.message);
        assert_int_equal(c.projection_dim, 0x5a5a5a5a); /* out untouched */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
