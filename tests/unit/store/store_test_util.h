/* SPDX-License-Identifier: MIT */
/* store_test_util.h: temp folders and deterministic embeddings shared by the
 * store tests. */
#ifndef STORE_TEST_UTIL_H
#define STORE_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Creates a fresh folder under /tmp; the returned path is static storage
 * owned by the helper, removed with tu_rmtree. */
char *tu_mkdtemp(void);
/* Removes a folder tree (like rm -rf); used on tu_mkdtemp folders only. */
void tu_rmtree(const char *path);
/* Fills v[dim] with an L2-normalised pseudo-random vector derived from seed. */
void tu_vec(float *v, uint32_t dim, uint64_t seed);
/* A 32-byte pseudo hash derived from seed. */
void tu_hash(uint8_t out[32], uint64_t seed);
/* Reads a whole file (malloc'd, caller frees); NULL if it cannot. */
unsigned char *tu_read(const char *path, size_t *n);

#endif
