/* SPDX-License-Identifier: MIT */
/* store_test_util.c: see store_test_util.h. */
#include "store_test_util.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *tu_mkdtemp(void)
{
    char tmpl[] = "/tmp/ims-store-test-XXXXXX";
    char *p = mkdtemp(tmpl);
    if (!p)
        return NULL;
    return strdup(p);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tu_rmtree(const char *path)
{
    if (path && strncmp(path, "/tmp/ims-store-test-", 20) == 0)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void tu_vec(float *v, uint32_t dim, uint64_t seed)
{
    uint64_t x = seed * 2654435761u + 1;
    double norm = 0;
    for (uint32_t i = 0; i < dim; i++) {
        v[i] = (float)((double)(splitmix(&x) >> 11) / 9007199254740992.0 - 0.5);
        norm += (double)v[i] * v[i];
    }
    norm = sqrt(norm);
    for (uint32_t i = 0; i < dim; i++)
        v[i] = (float)(v[i] / norm);
}

void tu_hash(uint8_t out[32], uint64_t seed)
{
    uint64_t x = seed ^ 0x5555aaaa12345678ull;
    for (int i = 0; i < 4; i++) {
        uint64_t r = splitmix(&x);
        memcpy(out + 8 * i, &r, 8);
    }
}

unsigned char *tu_read(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(sz > 0 ? (size_t)sz : 1);
    if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return p;
}
