/* SPDX-License-Identifier: MIT */
/*
 * fuzz_config.c: clip__config_parse on arbitrary bytes. On success the
 * invariants the forward pass relies on must hold (divisibility, bounds);
 * a violation aborts, which the fuzzer reports.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clip_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct clip_config c;
    if (clip__config_parse((const char *)data, size, &c, NULL) != IMS_OK)
        return 0;
    const struct clip_tower_config *towers[2] = {&c.text, &c.vision};
    for (int i = 0; i < 2; i++) {
        const struct clip_tower_config *t = towers[i];
        IMS_ASSERT(t->hidden_size > 0 && t->num_attention_heads > 0);
        IMS_ASSERT(t->hidden_size % t->num_attention_heads == 0);
        IMS_ASSERT(t->num_hidden_layers >= 1 && t->num_hidden_layers <= 128);
        IMS_ASSERT(t->intermediate_size > 0);
        IMS_ASSERT(t->layer_norm_eps > 0);
    }
    IMS_ASSERT(c.vision.patch_size > 0 && c.vision.image_size % c.vision.patch_size == 0);
    IMS_ASSERT(c.text.max_position_embeddings <= CLIP_CONTEXT_MAX);
    IMS_ASSERT(c.text.vocab_size >= 49408);
    IMS_ASSERT(c.text.eos_token_id < c.text.vocab_size);
    IMS_ASSERT(c.projection_dim > 0);
    return 0;
}
