/* SPDX-License-Identifier: MIT */
/*
 * bench_stats.h: the small helpers the C benches each carried a copy of:
 * sorting doubles, the median of repeated runs, the process's CPU seconds
 * (all threads: on a shared machine the wall clock measures the neighbours
 * too) and the source tree's path. Header only, like bench_rand.h.
 */
#ifndef IMS_BENCH_STATS_H
#define IMS_BENCH_STATS_H

#include <stddef.h>
#include <stdlib.h>
#include <time.h>

/* qsort comparator of doubles, ascending. */
static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (sorts v; the mean of the middle two when n is even). */
static inline double bench_median(double *v, size_t n)
{
    qsort(v, n, sizeof(double), bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* CPU seconds of the whole process (all threads): our work plus any
 * spinning, so it is reported next to the wall figures, not instead. */
static inline double bench_process_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#ifdef IMS_SOURCE_DIR
/* The source tree: $IMS_SOURCE_DIR, else the path compiled in. */
static inline const char *bench_src_dir(void)
{
    const char *s = getenv("IMS_SOURCE_DIR");
    return s && *s ? s : IMS_SOURCE_DIR;
}
#endif

#endif
