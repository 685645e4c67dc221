/* SPDX-License-Identifier: MIT */
/* unit_fx.h: fixture steps many unit tests of different modules start or
 * end with, in one place: the source tree's path, a byte-for-byte file
 * copy, a folder holding a copy of the tiny CLIP model of the goldens
 * (tests/golden/clip/tiny's config and weights, data/vocab's vocabulary,
 * laid out as a data folder's model), removing a test's folder, and the
 * seeded Gaussian generator of the synthetic embeddings. libc and cmocka
 * only, so tests linked against the shared library alone (tests/unit/lib)
 * can use it too. */
#ifndef UNIT_FX_H
#define UNIT_FX_H

#include <stdint.h>

/* The source tree: $IMS_SOURCE_DIR, else the path compiled in. */
const char *ufx_src_dir(void);
/* Copies one file byte for byte; fails the running case if it cannot. */
void ufx_copy_file(const char *from, const char *to);
/* Makes `model_dir` (its parent must exist; an existing folder is fine) and
 * copies the tiny model's four files into it; fails the case if it cannot. */
void ufx_copy_tiny_model(const char *model_dir);
/* Removes a test's folder and everything under it (rm -rf); fails the case
 * if that fails. */
void ufx_rmtree(const char *dir);
/* A standard normal draw (Box-Muller over a 64-bit LCG): the same seed in
 * *state gives the same sequence on every machine run. */
float ufx_gauss(uint64_t *state);
/* n unit vectors of `dim` floats from one xorshift64 stream started at
 * `seed` (components uniform in [-1, 1] before normalising): the index
 * tests' rows and queries, the same seed giving the same rows. */
void ufx_unit_rows(uint64_t seed, float *x, int n, int dim);

#endif
