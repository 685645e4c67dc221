/* SPDX-License-Identifier: MIT */
/*
 * bench_cpu: the machine a benchmark ran on, as one JSON member shared by
 * every bench program (issue 11 item 5). A figure is reproducible only when
 * the reader knows the CPU (name, family/model/stepping: one machine kind
 * comes with several), the core count, the ISA features our kernels pick
 * from, and how loaded the machine was while it ran.
 */
#ifndef IMS_BENCH_CPU_H
#define IMS_BENCH_CPU_H

#include <stdio.h>

struct bench_cpu {
    char model_name[128];
    int family, model, stepping; /* -1 when /proc/cpuinfo does not say */
    int cores;                   /* online logical CPUs */
    int avx2, avx512f, avx512_bf16, avx512_vnni, avx512_fp16;
    double load[3]; /* 1, 5, 15 minute load averages */
};

/* Fill *c from /proc/cpuinfo and getloadavg(); never fails (unknown fields
 * become "unknown" / -1). */
void bench_cpu_read(struct bench_cpu *c);

/* Print `"cpu": {...}, ` (a JSON object member followed by ", ") so a bench
 * can put it right after its opening brace. Reads the load average now. */
void bench_cpu_print_json(FILE *out);

/* Print `"yardsticks": {"name": value, ...}` from n name/value pairs, no
 * trailing comma. Every bench names the yardsticks its ratios divide by. */
void bench_cpu_print_yardsticks(FILE *out, int n, const char *const *names, const double *values);

#endif
