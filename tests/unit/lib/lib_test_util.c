/* SPDX-License-Identifier: MIT */
/*
 * lib_test_util.c: the library tests' shared fixture (lib_test_util.h).
 */
#include "lib_test_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cmocka.h>

char lt_tmp[256], lt_model[300], lt_images[1024];

static const char *src_dir(void)
{
    const char *s = getenv("IMS_SOURCE_DIR");
    return s && *s ? s : IMS_SOURCE_DIR;
}

static void copy(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
}

void lt_setup(void)
{
    snprintf(lt_tmp, sizeof(lt_tmp), "/tmp/ims-test-lib-XXXXXX");
    assert_non_null(mkdtemp(lt_tmp));
    snprintf(lt_model, sizeof(lt_model), "%s/model", lt_tmp);
    snprintf(lt_images, sizeof(lt_images), "%s/tests/golden/clip/images", src_dir());
    assert_int_equal(mkdir(lt_model, 0755), 0);
    static const char *const files[][2] = {{"tests/golden/clip/tiny", "config.json"},
                                           {"tests/golden/clip/tiny", "model.safetensors"},
                                           {"data/vocab", "vocab.json"},
                                           {"data/vocab", "merges.txt"}};
    for (size_t i = 0; i < 4; i++) {
        char a[1024], b[1024];
        snprintf(a, sizeof(a), "%s/%s/%s", src_dir(), files[i][0], files[i][1]);
        snprintf(b, sizeof(b), "%s/%s", lt_model, files[i][1]);
        copy(a, b);
    }
}

int lt_teardown(void)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", lt_tmp);
    return system(cmd) == 0 ? 0 : -1;
}
