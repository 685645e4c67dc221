/* SPDX-License-Identifier: MIT */
/*
 * replay_main.c: a stand-in for libFuzzer when the compiler is not clang.
 *
 * usage: fuzz_x RUNS CORPUS_DIR
 * Feeds every file of the seed corpus to LLVMFuzzerTestOneInput, then RUNS
 * deterministic mutations of them (bit flips, byte sets, truncations,
 * insertions, splices), so the harness is exercised in every build. Crashes
 * and sanitizer reports fail the test like under libFuzzer. The real coverage-
 * guided run happens in the clang build (see cmake/ims.cmake).
 */

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

struct seed {
    uint8_t *data;
    size_t len;
};

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s RUNS CORPUS_DIR\n", argv[0]);
        return 2;
    }
    long runs = atol(argv[1]);
    struct seed seeds[256];
    int n_seeds = 0;
    DIR *d = opendir(argv[2]);
    if (!d) {
        fprintf(stderr, "cannot open corpus %s\n", argv[2]);
        return 2;
    }
    struct dirent *e;
    while ((e = readdir(d)) && n_seeds < 256) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", argv[2], e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        if (n < 0 || n > (1 << 24)) {
            fclose(f);
            continue;
        }
        uint8_t *buf = malloc((size_t)n + 1);
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            fclose(f);
            continue;
        }
        fclose(f);
        seeds[n_seeds].data = buf;
        seeds[n_seeds].len = (size_t)n;
        n_seeds++;
    }
    closedir(d);
    if (n_seeds == 0) {
        fprintf(stderr, "empty corpus %s\n", argv[2]);
        return 2;
    }
    for (int i = 0; i < n_seeds; i++)
        LLVMFuzzerTestOneInput(seeds[i].data, seeds[i].len);
    for (long r = 0; r < runs; r++) {
        struct seed *s = &seeds[rng() % (uint64_t)n_seeds];
        size_t cap = s->len + 64;
        uint8_t *m = malloc(cap);
        size_t len = s->len;
        memcpy(m, s->data, len);
        int n_mut = 1 + (int)(rng() % 4);
        for (int k = 0; k < n_mut; k++) {
            switch (rng() % 5) {
            case 0: if (len) m[rng() % len] ^= (uint8_t)(1u << (rng() % 8)); break;
            case 1: if (len) m[rng() % len] = (uint8_t)rng(); break;
            case 2: if (len) len = rng() % len; break;
            case 3: if (len < cap) { size_t at = len ? rng() % len : 0;
                        memmove(m + at + 1, m + at, len - at); m[at] = (uint8_t)rng(); len++; } break;
            case 4: { struct seed *o = &seeds[rng() % (uint64_t)n_seeds];
                      if (o->len && len) { size_t at = rng() % len, from = rng() % o->len;
                          size_t n = ((cap - at) < (o->len - from) ? (cap - at) : (o->len - from)); memcpy(m + at, o->data + from, n);
                          if (at + n > len) len = at + n; } } break;
            }
        }
        LLVMFuzzerTestOneInput(m, len);
        free(m);
    }
    for (int i = 0; i < n_seeds; i++)
        free(seeds[i].data);
    printf("replayed %d seeds and %ld mutations\n", n_seeds, runs);
    return 0;
}
