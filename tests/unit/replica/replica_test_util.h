/* SPDX-License-Identifier: MIT */
/* replica_test_util.h: temp folders and deterministic vectors for the
 * replica tests. */
#ifndef REPLICA_TEST_UTIL_H
#define REPLICA_TEST_UTIL_H

#include <stdint.h>

/* A fresh folder under /tmp (malloc'd path; remove with rt_rmtree). */
char *rt_mkdtemp(void);
void rt_rmtree(const char *path);
/* v[dim]: an L2-normalised pseudo-random vector derived from seed. */
void rt_vec(float *v, uint32_t dim, uint64_t seed);
/* A 32-byte pseudo content hash derived from seed. */
void rt_hash(uint8_t out[32], uint64_t seed);

#endif
