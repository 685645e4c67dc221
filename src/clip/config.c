/* SPDX-License-Identifier: MIT */
/*
 * config.c: Hugging Face CLIPConfig (config.json) -> struct clip_config.
 *
 * The file is a CLIPConfig: top-level "architectures" / "model_type" /
 * "projection_dim", and the two towers in "text_config" and "vision_config"
 * (older exports also carry "text_config_dict" / "vision_config_dict", whose
 * keys win, as in transformers' CLIPConfig.__init__). Missing or null keys
 * take the defaults of transformers' CLIPTextConfig / CLIPVisionConfig
 * (ViT-B/32 sizes), so a config written by any transformers version works.
 *
 * Everything is validated, because every number here later sizes a buffer
 * or a loop in the forward pass: integer keys must be JSON integers in a
 * sane range, hidden_size must be divisible by num_attention_heads,
 * image_size by patch_size, and the token vocabulary must cover OpenAI's
 * tokenizer (ids up to 49407). An architecture other than CLIPModel, or a
 * model_type other than "clip", is refused with its name in the message.
 *
 * text eos_token_id: transformers treats eos_token_id == 2 as "legacy config:
 * pool at the argmax token id" (CLIPTextTransformer.forward); we store -1 for
 * that case and the real id otherwise.
 */

#include "clip_int.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <string.h>

/* Bounds: generous for every published CLIP (ViT-bigG is 1664 wide, 48
 * layers, MLP 8192) yet small enough that products of them cannot overflow. */
#define CFG_MAX_WIDTH 16384
#define CFG_MAX_MLP 65536
#define CFG_MAX_HEADS 1024
#define CFG_MAX_LAYERS 128
#define CFG_MAX_VOCAB (1 << 20)
#define CFG_MIN_VOCAB 49408 /* OpenAI's BPE vocabulary: ids 0..49407 */
#define CFG_MAX_IMAGE 4096
#define CFG_MAX_PATCHES 16384

struct cfg_int_key {
    const char *key;
    size_t offset; /* into struct clip_tower_config */
    int min, max;
};

#define TOWER_FIELD(f) offsetof(struct clip_tower_config, f)

static const struct cfg_int_key common_keys[] = {
    {"hidden_size", TOWER_FIELD(hidden_size), 1, CFG_MAX_WIDTH},
    {"intermediate_size", TOWER_FIELD(intermediate_size), 1, CFG_MAX_MLP},
    {"num_attention_heads", TOWER_FIELD(num_attention_heads), 1, CFG_MAX_HEADS},
    {"num_hidden_layers", TOWER_FIELD(num_hidden_layers), 1, CFG_MAX_LAYERS},
};
static const struct cfg_int_key text_keys[] = {
    {"vocab_size", TOWER_FIELD(vocab_size), CFG_MIN_VOCAB, CFG_MAX_VOCAB},
    {"max_position_embeddings", TOWER_FIELD(max_position_embeddings), 2, CLIP_CONTEXT_MAX},
};
static const struct cfg_int_key vision_keys[] = {
    {"image_size", TOWER_FIELD(image_size), 1, CFG_MAX_IMAGE},
    {"patch_size", TOWER_FIELD(patch_size), 1, CFG_MAX_IMAGE},
    {"num_channels", TOWER_FIELD(num_channels), 3, 3}, /* RGB preprocessing only */
};

/* Hugging Face's defaults (CLIPTextConfig, CLIPVisionConfig: ViT-B/32's
 * towers): what both towers share, then each tower's own. */
static void tower_defaults(struct clip_tower_config *t, int hidden_size, int intermediate_size,
                           int num_attention_heads)
{
    memset(t, 0, sizeof(*t));
    t->hidden_size = hidden_size;
    t->intermediate_size = intermediate_size;
    t->num_hidden_layers = 12;
    t->num_attention_heads = num_attention_heads;
    t->hidden_act = CLIP_ACT_QUICK_GELU;
    t->layer_norm_eps = 1e-5f;
}

static void text_defaults(struct clip_tower_config *t)
{
    tower_defaults(t, 512, 2048, 8);
    t->vocab_size = 49408;
    t->max_position_embeddings = 77;
    t->eos_token_id = 49407;
}

static void vision_defaults(struct clip_tower_config *t)
{
    tower_defaults(t, 768, 3072, 12);
    t->num_channels = 3;
    t->image_size = 224;
    t->patch_size = 32;
    t->eos_token_id = -1;
}

/* Looks `key` up in the *_dict override first, then in the tower object;
 * JSON null counts as missing. */
static const json_t *tower_get(const json_t *obj, const json_t *dict, const char *key)
{
    const json_t *v = dict ? json_object_get(dict, key) : NULL;
    if (!v || json_is_null(v))
        v = obj ? json_object_get(obj, key) : NULL;
    if (v && json_is_null(v))
        return NULL;
    return v;
}

static enum ims_status read_int(const char *tower, const json_t *v, const struct cfg_int_key *k,
                                struct clip_tower_config *t, struct ims_error *err)
{
    if (!v)
        return IMS_OK;
    if (!json_is_integer(v))
        return ims_error_set(err, IMS_ERR_INVALID, "config: %s.%s must be an integer", tower,
                             k->key);
    json_int_t x = json_integer_value(v);
    if (x < k->min || x > k->max)
        return ims_error_set(err, IMS_ERR_INVALID, "config: %s.%s = %lld is out of range [%d, %d]",
                             tower, k->key, (long long)x, k->min, k->max);
    *(int *)((char *)t + k->offset) = (int)x;
    return IMS_OK;
}

static enum ims_status parse_act(const char *tower, const char *s, enum clip_act *out,
                                 struct ims_error *err)
{
    if (!strcmp(s, "quick_gelu"))
        *out = CLIP_ACT_QUICK_GELU;
    else if (!strcmp(s, "gelu"))
        *out = CLIP_ACT_GELU;
    else if (!strcmp(s, "gelu_new") || !strcmp(s, "gelu_pytorch_tanh"))
        *out = CLIP_ACT_GELU_TANH;
    else
        return ims_error_set(err, IMS_ERR_UNSUPPORTED,
                             "config: %s.hidden_act '%.64s' is not supported (quick_gelu, gelu, "
                             "gelu_new, gelu_pytorch_tanh)",
                             tower, s);
    return IMS_OK;
}

static enum ims_status parse_tower(const json_t *root, int is_text, struct clip_tower_config *t,
                                   struct ims_error *err)
{
    enum ims_status st;
    const char *tower = is_text ? "text_config" : "vision_config";
    const json_t *obj = json_object_get(root, tower);
    const json_t *dict = json_object_get(root, is_text ? "text_config_dict" : "vision_config_dict");
    if (obj && json_is_null(obj))
        obj = NULL;
    if (dict && json_is_null(dict))
        dict = NULL;
    if (obj && !json_is_object(obj))
        return ims_error_set(err, IMS_ERR_INVALID, "config: %s is not an object", tower);
    if (dict && !json_is_object(dict))
        return ims_error_set(err, IMS_ERR_INVALID, "config: %s_dict is not an object", tower);

    if (is_text)
        text_defaults(t);
    else
        vision_defaults(t);

    for (size_t i = 0; i < IMS_ARRAY_LEN(common_keys); i++) {
        st = read_int(tower, tower_get(obj, dict, common_keys[i].key), &common_keys[i], t, err);
        if (st != IMS_OK)
            return st;
    }
    const struct cfg_int_key *keys = is_text ? text_keys : vision_keys;
    size_t n_keys = is_text ? IMS_ARRAY_LEN(text_keys) : IMS_ARRAY_LEN(vision_keys);
    for (size_t i = 0; i < n_keys; i++) {
        st = read_int(tower, tower_get(obj, dict, keys[i].key), &keys[i], t, err);
        if (st != IMS_OK)
            return st;
    }

    const json_t *v = tower_get(obj, dict, "hidden_act");
    if (v) {
        if (!json_is_string(v))
            return ims_error_set(err, IMS_ERR_INVALID, "config: %s.hidden_act must be a string",
                                 tower);
        st = parse_act(tower, json_string_value(v), &t->hidden_act, err);
        if (st != IMS_OK)
            return st;
    }
    v = tower_get(obj, dict, "layer_norm_eps");
    if (v) {
        if (!json_is_number(v))
            return ims_error_set(err, IMS_ERR_INVALID,
                                 "config: %s.layer_norm_eps must be a number", tower);
        double eps = json_number_value(v);
        /* the layers compute in float: a value that rounds to 0 or to a
         * denormal there is refused as well (1e-85 passes "> 0" as a double) */
        if (!(eps >= FLT_MIN && eps < 1))
            return ims_error_set(err, IMS_ERR_INVALID,
                                 "config: %s.layer_norm_eps = %g is out of range (0, 1) for a "
                                 "float (at least %g)",
                                 tower, eps, (double)FLT_MIN);
        t->layer_norm_eps = (float)eps;
    }
    if (is_text) {
        v = tower_get(obj, dict, "eos_token_id");
        if (v) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) >= t->vocab_size)
                return ims_error_set(err, IMS_ERR_INVALID,
                                     "config: text_config.eos_token_id must be an integer in "
                                     "[0, vocab_size)");
            t->eos_token_id = (int)json_integer_value(v);
        }
        if (t->eos_token_id == 2) /* transformers' legacy-config rule */
            t->eos_token_id = -1;
    }

    if (t->hidden_size % t->num_attention_heads != 0)
        return ims_error_set(err, IMS_ERR_INVALID,
                             "config: %s.hidden_size %d is not divisible by num_attention_heads %d",
                             tower, t->hidden_size, t->num_attention_heads);
    if (!is_text) {
        if (t->patch_size > t->image_size || t->image_size % t->patch_size != 0)
            return ims_error_set(err, IMS_ERR_INVALID,
                                 "config: vision_config.image_size %d is not a multiple of "
                                 "patch_size %d",
                                 t->image_size, t->patch_size);
        long grid = t->image_size / t->patch_size;
        if (grid * grid > CFG_MAX_PATCHES)
            return ims_error_set(err, IMS_ERR_INVALID,
                                 "config: vision_config has %ld patches, over the limit of %d",
                                 grid * grid, CFG_MAX_PATCHES);
    }
    return IMS_OK;
}

/* architectures must name CLIPModel when present; model_type must be "clip"
 * when present; at least one of them must be there. */
static enum ims_status check_architecture(const json_t *root, struct ims_error *err)
{
    const json_t *arch = json_object_get(root, "architectures");
    const json_t *type = json_object_get(root, "model_type");
    int known = 0;
    if (arch && !json_is_null(arch)) {
        if (!json_is_array(arch))
            return ims_error_set(err, IMS_ERR_INVALID, "config: architectures is not an array");
        const char *first = NULL;
        size_t i;
        const json_t *a;
        json_array_foreach(arch, i, a)
        {
            if (!json_is_string(a))
                return ims_error_set(err, IMS_ERR_INVALID,
                                     "config: architectures holds a non-string");
            if (!first)
                first = json_string_value(a);
            if (!strcmp(json_string_value(a), "CLIPModel"))
                known = 1;
        }
        if (first && !known)
            return ims_error_set(err, IMS_ERR_UNSUPPORTED,
                                 "config: unknown architecture '%.64s' (expected CLIPModel)",
                                 first);
    }
    if (type && !json_is_null(type)) {
        if (!json_is_string(type))
            return ims_error_set(err, IMS_ERR_INVALID, "config: model_type is not a string");
        if (strcmp(json_string_value(type), "clip") != 0)
            return ims_error_set(err, IMS_ERR_UNSUPPORTED,
                                 "config: model_type '%.64s' is not a CLIP model (expected clip)",
                                 json_string_value(type));
        known = 1;
    }
    if (!known)
        return ims_error_set(err, IMS_ERR_UNSUPPORTED,
                             "config: neither architectures nor model_type says this is a CLIP "
                             "model (expected CLIPModel / clip)");
    return IMS_OK;
}

enum ims_status clip__config_parse(const char *json, size_t len, struct clip_config *out,
                                   struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct clip_config c;
    memset(&c, 0, sizeof(c));
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        st = ims_error_set(err, IMS_ERR_INVALID, "config: invalid JSON at line %d column %d: %s",
                           jerr.line, jerr.column, jerr.text);
        goto out;
    }
    if (!json_is_object(root)) {
        st = ims_error_set(err, IMS_ERR_INVALID, "config: not a JSON object");
        goto out;
    }
    st = check_architecture(root, err);
    if (st != IMS_OK)
        goto out;
    st = parse_tower(root, 1, &c.text, err);
    if (st != IMS_OK)
        goto out;
    st = parse_tower(root, 0, &c.vision, err);
    if (st != IMS_OK)
        goto out;
    c.projection_dim = 512;
    const json_t *v = json_object_get(root, "projection_dim");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > CFG_MAX_WIDTH) {
            st = ims_error_set(err, IMS_ERR_INVALID,
                               "config: projection_dim must be an integer in [1, %d]",
                               CFG_MAX_WIDTH);
            goto out;
        }
        c.projection_dim = (int)json_integer_value(v);
    }
    *out = c;
out:
    json_decref(root);
    return st;
}
