/* SPDX-License-Identifier: MIT */
/* clip_goldens.c: the golden inputs and helpers of clip_goldens.h. */
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

#include "clip_goldens.h"

const char *golden_src_dir(void)
{
    const char *s = getenv("IMS_SOURCE_DIR");
    return s && *s ? s : IMS_SOURCE_DIR;
}

char *golden_read_all(const char *path, size_t *len)
{
    char *data = NULL;
    struct ims_error err = {0};
    enum ims_status st = ims_file_read(path, 1u << 30, &data, len, &err);
    if (st != IMS_OK)
        fail_msg("cannot read %s: %s", path, err.message);
    return data;
}

double golden_cosine(const float *a, const float *b, int d)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < d; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / sqrt(aa * bb);
}

void golden_load_pixels(struct tiny *t)
{
    static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    static const float stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    char path[4096];
    snprintf(path, sizeof(path), "%s/tests/golden/clip/images/manifest.json", golden_src_dir());
    json_error_t je;
    json_t *man = json_load_file(path, 0, &je);
    assert_non_null(man);
    assert_int_equal(json_array_size(man), N_IMAGES);
    const int s = 224;
    t->pixels = ims_malloc((size_t)N_IMAGES * 3 * s * s * sizeof(float));
    assert_non_null(t->pixels);
    for (int i = 0; i < N_IMAGES; i++) {
        const char *rgb = json_string_value(json_object_get(json_array_get(man, i), "rgb"));
        assert_non_null(rgb);
        snprintf(path, sizeof(path), "%s/tests/golden/clip/images/%s", golden_src_dir(), rgb);
        size_t len;
        unsigned char *b = (unsigned char *)golden_read_all(path, &len);
        assert_int_equal(len, (size_t)s * s * 3);
        float *img = t->pixels + (size_t)i * 3 * s * s;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < s; y++)
                for (int x = 0; x < s; x++)
                    img[((size_t)c * s + y) * s + x] =
                        (b[((size_t)y * s + x) * 3 + c] / 255.0f - mean[c]) / stdv[c];
        ims_free(b);
    }
    json_decref(man);
}

void golden_load_ids(struct tiny *t)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/tests/golden/clip/tokenizer/cases.jsonl", golden_src_dir());
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    for (int i = 0; i < N_TEXTS; i++) {
        assert_true(getline(&line, &cap, f) > 0);
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        assert_non_null(o);
        json_t *ids = json_object_get(o, "ids");
        assert_int_equal(json_array_size(ids), CLIP_CONTEXT_MAX);
        t->n_ids[i] = 0;
        for (int j = 0; j < CLIP_CONTEXT_MAX; j++) {
            t->ids[i][j] = (int32_t)json_integer_value(json_array_get(ids, j));
            if (t->ids[i][j] != 0)
                t->n_ids[i] = j + 1;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
}

struct clip_model *golden_load_model(const char *dir, enum clip_precision prec, int n_threads)
{
    struct clip_model_params mp;
    clip_model_params_default(&mp);
    mp.precision = prec;
    mp.n_threads = n_threads;
    struct clip_model *m = NULL;
    struct ims_error err = {0};
    if (clip_model_load(dir, &mp, &m, &err) != IMS_OK)
        fail_msg("clip_model_load %s: %s", dir, err.message);
    return m;
}

/* Worst agreement seen since the last report (printed, not asserted). */
static double worst_cos = 1.0, worst_abs = 0.0;

void golden_report_worst(const char *what)
{
    print_message("%s: worst cosine %.9f, worst max abs diff %.3g\n", what, worst_cos, worst_abs);
    worst_cos = 1.0;
    worst_abs = 0.0;
}

/* Golden tolerance on L2-normalised embeddings (fixtures README). */
void golden_check_against(const float *got_raw, const float *gold_raw, int d, const char *what,
                          int i, double min_cos, double max_abs)
{
    float a[1024], b[1024];
    assert_true(d <= 1024);
    memcpy(a, got_raw, (size_t)d * sizeof(float));
    memcpy(b, gold_raw, (size_t)d * sizeof(float));
    clip_l2_normalize(a, d);
    clip_l2_normalize(b, d);
    double c = golden_cosine(a, b, d), worst = 0;
    for (int j = 0; j < d; j++)
        worst = fmax(worst, fabs((double)a[j] - b[j]));
    worst_cos = fmin(worst_cos, c);
    worst_abs = fmax(worst_abs, worst);
    if (c < min_cos || worst >= max_abs)
        fail_msg("%s %d: cosine %.8f (min %.8f), max abs diff %g (max %g)", what, i, c, min_cos,
                 worst, max_abs);
}
