/* SPDX-License-Identifier: MIT */
/*
 * clip_goldens.h: what the forward-pass tests share: the golden inputs
 * (the 21 preprocessed images normalised as PREPROCESSING.md step 5 says,
 * the 40 texts' token ids from the tokenizer goldens), file reading and the
 * comparison helpers. Compiled into every tests/unit/clip executable.
 */
#ifndef IMS_TEST_CLIP_GOLDENS_H
#define IMS_TEST_CLIP_GOLDENS_H

#include <stddef.h>
#include <stdint.h>

#include "clip_int.h"

#define N_IMAGES 21
#define N_TEXTS 40

struct tiny {
    char dir[64];
    struct clip_model *model;
    float *pixels; /* (21, 3, 224, 224) */
    int32_t ids[N_TEXTS][CLIP_CONTEXT_MAX];
    int n_ids[N_TEXTS];
    float *gold_img;    /* (21, D) */
    float *gold_txt;    /* (40, D) */
    float *gold_logits; /* (21, 40) */
};

/* The source tree (IMS_SOURCE_DIR from the environment or the build). */
const char *golden_src_dir(void);
/* A whole file (fails the test if unreadable); release with ims_free. */
char *golden_read_all(const char *path, size_t *len);
double golden_cosine(const float *a, const float *b, int d);
/* t->pixels: (21, 3, 224, 224) normalised golden images, manifest order. */
void golden_load_pixels(struct tiny *t);
/* t->ids / t->n_ids: the first 40 tokenizer golden cases. */
void golden_load_ids(struct tiny *t);
/* Loads a model folder or fails the test. */
struct clip_model *golden_load_model(const char *dir, enum clip_precision prec, int n_threads);
/* Fails unless the L2-normalised `got` and `gold` (d floats) agree within
 * min_cos / max_abs; tracks the worst agreement for golden_report_worst. */
void golden_check_against(const float *got_raw, const float *gold_raw, int d, const char *what,
                          int i, double min_cos, double max_abs);
/* Prints and resets the worst agreement seen since the last report. */
void golden_report_worst(const char *what);

#endif
