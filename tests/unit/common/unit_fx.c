/* SPDX-License-Identifier: MIT */
/* unit_fx.c: see unit_fx.h. */
#include "unit_fx.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

const char *ufx_src_dir(void)
{
    const char *s = getenv("IMS_SOURCE_DIR");
    return s && *s ? s : IMS_SOURCE_DIR;
}

void ufx_copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    if (!in)
        fail_msg("%s: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out)
        fail_msg("%s: %s", to, strerror(errno));
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    assert_int_equal(ferror(in), 0);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

void ufx_copy_tiny_model(const char *model_dir)
{
    if (mkdir(model_dir, 0755) != 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", model_dir, strerror(errno));
    static const char *const files[][2] = {{"tests/golden/clip/tiny", "config.json"},
                                           {"tests/golden/clip/tiny", "model.safetensors"},
                                           {"data/vocab", "vocab.json"},
                                           {"data/vocab", "merges.txt"}};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char from[1024], to[1024];
        snprintf(from, sizeof(from), "%s/%s/%s", ufx_src_dir(), files[i][0], files[i][1]);
        snprintf(to, sizeof(to), "%s/%s", model_dir, files[i][1]);
        ufx_copy_file(from, to);
    }
}

void ufx_rmtree(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

float ufx_gauss(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    double u1 = ((*state >> 11) + 1.0) / 9007199254740993.0;
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    double u2 = (*state >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

void ufx_unit_rows(uint64_t seed, float *x, int n, int dim)
{
    uint64_t r = seed;
    for (int i = 0; i < n; i++) {
        float *row = x + (size_t)i * (size_t)dim;
        double norm = 0;
        for (int d = 0; d < dim; d++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            row[d] = (float)((double)(r % 20001) / 10000.0 - 1.0);
            norm += (double)row[d] * row[d];
        }
        for (int d = 0; d < dim; d++)
            row[d] = (float)(row[d] / sqrt(norm));
    }
}
