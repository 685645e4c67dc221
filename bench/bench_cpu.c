/* SPDX-License-Identifier: MIT */
/* bench_cpu: see bench_cpu.h. Reads /proc/cpuinfo (Linux) once per call. */
#define _DEFAULT_SOURCE
#include "bench_cpu.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int has_flag(const char *flags, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = flags; (p = strstr(p, name)) != NULL; p += n) {
        int start = p == flags || p[-1] == ' ' || p[-1] == '\t' || p[-1] == ':';
        int end = p[n] == '\0' || p[n] == ' ' || p[n] == '\n';
        if (start && end)
            return 1;
    }
    return 0;
}

static const char *value_of(const char *line)
{
    const char *v = strchr(line, ':');
    if (!v)
        return "";
    v++;
    while (*v == ' ' || *v == '\t')
        v++;
    return v;
}

void bench_cpu_read(struct bench_cpu *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->model_name, sizeof(c->model_name), "unknown");
    c->family = c->model = c->stepping = -1;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c->cores = n > 0 ? (int)n : 1;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[8192];
        int got_flags = 0, got_name = 0;
        while (fgets(line, sizeof(line), f)) {
            const char *v = value_of(line);
            if (!got_name && strncmp(line, "model name", 10) == 0) {
                snprintf(c->model_name, sizeof(c->model_name), "%s", v);
                c->model_name[strcspn(c->model_name, "\n")] = '\0';
                got_name = 1;
            } else if (c->family < 0 && strncmp(line, "cpu family", 10) == 0) {
                c->family = atoi(v);
            } else if (c->model < 0 && strncmp(line, "model\t", 6) == 0) {
                c->model = atoi(v);
            } else if (c->stepping < 0 && strncmp(line, "stepping", 8) == 0) {
                c->stepping = atoi(v);
            } else if (!got_flags && strncmp(line, "flags", 5) == 0) {
                c->avx2 = has_flag(v, "avx2");
                c->avx512f = has_flag(v, "avx512f");
                c->avx512_bf16 = has_flag(v, "avx512_bf16");
                c->avx512_vnni = has_flag(v, "avx512_vnni");
                c->avx512_fp16 = has_flag(v, "avx512_fp16");
                got_flags = 1;
            }
        }
        fclose(f);
    }
    if (getloadavg(c->load, 3) != 3)
        c->load[0] = c->load[1] = c->load[2] = -1.0;
}

static void print_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(out, "\\u%04x", ch);
        else
            fputc(ch, out);
    }
    fputc('"', out);
}

void bench_cpu_print_json(FILE *out)
{
    struct bench_cpu c;
    bench_cpu_read(&c);
    fprintf(out, "\"cpu\": {\"model_name\": ");
    print_string(out, c.model_name);
    fprintf(out,
            ", \"family\": %d, \"model\": %d, \"stepping\": %d, \"cores\": %d, "
            "\"flags\": {\"avx2\": %s, \"avx512f\": %s, \"avx512_bf16\": %s, "
            "\"avx512_vnni\": %s, \"avx512_fp16\": %s}, "
            "\"load_avg\": [%.2f, %.2f, %.2f]}, ",
            c.family, c.model, c.stepping, c.cores, c.avx2 ? "true" : "false",
            c.avx512f ? "true" : "false", c.avx512_bf16 ? "true" : "false",
            c.avx512_vnni ? "true" : "false", c.avx512_fp16 ? "true" : "false", c.load[0],
            c.load[1], c.load[2]);
}

void bench_cpu_print_yardsticks(FILE *out, int n, const char *const *names, const double *values)
{
    fprintf(out, "\"yardsticks\": {");
    for (int i = 0; i < n; i++) {
        fprintf(out, "%s", i ? ", " : "");
        print_string(out, names[i]);
        fprintf(out, ": %.4g", values[i]);
    }
    fprintf(out, "}");
}
