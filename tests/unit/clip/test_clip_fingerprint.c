/* SPDX-License-Identifier: MIT */
/*
 * test_clip_fingerprint.c: a model's name, fingerprint included, never
 * changes. Catalogues store the name and refuse another model's, so a
 * different fingerprint for the same weights would lock every user out of
 * their catalogue. The value below was computed from the tiny golden model
 * (tests/golden/clip/tiny) by model.c's own FNV-1a before the hash moved
 * into base (ims_fnv1a64_update), and again by an independent script: FNV-1a
 * 64 over the safetensors header, then the first and last 64 bytes of each
 * tensor in name order.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clip_goldens.h"
#include "clip_int.h"

static void copy_file(const char *from, const char *to)
{
    size_t len = 0;
    char *data = golden_read_all(from, &len);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    ims_free(data);
}

static void test_tiny_name_is_stable(void **state)
{
    (void)state;
    char root[] = "/tmp/ims_test_fingerprint_XXXXXX";
    assert_non_null(mkdtemp(root));
    const char *files[][2] = {{"tests/golden/clip/tiny", "config.json"},
                              {"tests/golden/clip/tiny", "model.safetensors"},
                              {"data/vocab", "vocab.json"},
                              {"data/vocab", "merges.txt"}};
    char from[4096], to[4096];
    for (size_t i = 0; i < 4; i++) {
        snprintf(from, sizeof(from), "%s/%s/%s", golden_src_dir(), files[i][0], files[i][1]);
        snprintf(to, sizeof(to), "%s/%s", root, files[i][1]);
        copy_file(from, to);
    }
    struct clip_model *m = golden_load_model(root, CLIP_PRECISION_F32, 1);
    assert_string_equal(clip_model_name(m), "vit-custom-32-128x2-32:13e712d9d58e4811");
    clip_model_free(m);
    for (size_t i = 0; i < 4; i++) {
        snprintf(to, sizeof(to), "%s/%s", root, files[i][1]);
        assert_int_equal(unlink(to), 0);
    }
    assert_int_equal(rmdir(root), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_name_is_stable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
