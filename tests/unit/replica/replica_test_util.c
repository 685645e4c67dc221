/* SPDX-License-Identifier: MIT */
/* replica_test_util.c: temp folders and deterministic unit vectors for the
 * replica tests (the store's own helpers pull in libpq). */
#include "replica_test_util.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *rt_mkdtemp(void)
{
    char tmpl[] = "/tmp/ims-replica-test-XXXXXX";
    char *p = mkdtemp(tmpl);
    return p ? strdup(p) : NULL;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void rt_rmtree(const char *path)
{
    if (path)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void rt_vec(float *v, uint32_t dim, uint64_t seed)
{
    uint64_t s = seed * 7919u + 1;
    double n = 0;
    for (uint32_t i = 0; i < dim; i++) {
        v[i] = (float)((double)(splitmix(&s) >> 11) / 9007199254740992.0 - 0.5);
        n += (double)v[i] * v[i];
    }
    n = sqrt(n);
    for (uint32_t i = 0; i < dim; i++)
        v[i] = (float)(v[i] / n);
}

void rt_hash(uint8_t out[32], uint64_t seed)
{
    uint64_t s = seed ^ 0xA5A5A5A5u;
    for (int i = 0; i < 32; i += 8) {
        uint64_t x = splitmix(&s);
        memcpy(out + i, &x, 8);
    }
}
