/* SPDX-License-Identifier: MIT */
/*
 * fuzz_safetensors.c: clip__safetensors_parse on arbitrary bytes. On success every
 * tensor's first and last byte is read, so a range the parser wrongly
 * accepted shows up as an out-of-bounds read under ASan; every listed tensor
 * must also be found by name.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clip_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct clip_safetensors_file f;
    if (clip__safetensors_parse(data, size, &f, NULL) != IMS_OK)
        return 0;
    volatile unsigned sink = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const struct clip_safetensors_tensor *t = &f.tensors[i];
        IMS_ASSERT(t->begin <= t->end);
        IMS_ASSERT((const uint8_t *)t->data >= data && (const uint8_t *)t->data <= data + size);
        if (t->end > t->begin) {
            const uint8_t *p = t->data;
            sink += p[0] + p[t->end - t->begin - 1];
        }
        IMS_ASSERT(clip__safetensors_find(&f, t->name) == t);
    }
    (void)sink;
    clip__safetensors_close(&f);
    return 0;
}
