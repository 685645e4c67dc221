/* SPDX-License-Identifier: MIT */
/*
 * bench_rand.h: the xorshift generator, Gaussian draws and normalisation the
 * vector benches (bench_filter, bench_dups) make their data with. Header
 * only, one state per program: a bench sets bench_rng to its own seed so its
 * data stay what its recorded results were measured on.
 */
#ifndef IMS_BENCH_RAND_H
#define IMS_BENCH_RAND_H

#include <math.h>
#include <stdint.h>

static uint64_t bench_rng = 0x9E3779B97F4A7C15ull;

/* Uniform in [0, 1). */
static inline double urand(void)
{
    bench_rng ^= bench_rng << 13, bench_rng ^= bench_rng >> 7, bench_rng ^= bench_rng << 17;
    return (double)(bench_rng >> 11) / 9007199254740992.0;
}

/* Standard normal (Box-Muller). */
static inline float gauss(void)
{
    double u = urand() + 1e-12, v = urand();
    return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
}

static inline void normalise(float *v, int d)
{
    double s = 0;
    for (int i = 0; i < d; i++)
        s += (double)v[i] * v[i];
    for (int i = 0; i < d; i++)
        v[i] = (float)(v[i] / sqrt(s));
}

#endif
