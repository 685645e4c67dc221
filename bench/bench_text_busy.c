/* SPDX-License-Identifier: MIT */
/*
 * bench_text_busy.c: a 6-word text query's latency on a busy machine (issue
 * 11 item 4), the text pass's adaptive team (one thread when the helpers
 * would have no CPU) against the fixed two-thread team, in the same run.
 *
 *     bench_text_busy MODEL_DIR [--precision f32|bf16] [--queries N] [--hogs N]
 *
 * Phases, each --queries encodes of "a photo of a dog on the beach":
 *   idle/adaptive, idle/fixed, busy/adaptive, busy/fixed, where busy means
 *   --hogs child processes (default: one per CPU minus one, like a compiler
 *   on the other core) spinning for the phase. The fixed team is the
 *   adaptive one with IMS_TEXT_ADAPTIVE=0. Prints p50/p99 per phase and the
 *   ratios busy/idle; the yardstick is the idle adaptive p50.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_cpu.h"
#include "imgsearch/clip.h"
#include "bench_stats.h"

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static void phase(struct clip_ctx *c, const int32_t *ids, int n_ids, float *out, int n,
                  double *p50, double *p99)
{
    double *t = malloc(sizeof(double) * (size_t)n);
    struct ims_error err = {0};
    if (!t)
        exit(1);
    for (int i = 0; i < n; i++) {
        double t0 = now_ms();
        enum ims_status st = clip_ctx_encode_text(c, ids, n_ids, out, 1, &err);
        if (st != IMS_OK) {
            fprintf(stderr, "bench_text_busy: %s\n", ims_error_message(&err, st));
            exit(1);
        }
        t[i] = now_ms() - t0;
    }
    qsort(t, (size_t)n, sizeof(*t), bench_cmp_double);
    *p50 = t[n / 2];
    *p99 = t[(int)(0.99 * (n - 1))];
    free(t);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_text_busy MODEL_DIR [--precision f32|bf16] [--queries N] "
                        "[--hogs N]\n");
        return 2;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int n = 200, hogs = online > 1 ? (int)online - 1 : 1;
    const char *prec = "bf16";
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--precision"))
            prec = argv[i + 1];
        else if (!strcmp(argv[i], "--queries"))
            n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--hogs"))
            hogs = atoi(argv[i + 1]);
    }
    if (n < 10 || hogs < 1 || hogs > 64)
        return 2;
    struct clip_model_params mp;
    clip_model_params_default(&mp);
    mp.precision = strcmp(prec, "bf16") == 0 ? CLIP_PRECISION_BF16 : CLIP_PRECISION_F32;
    struct ims_error err = {0};
    struct clip_model *m = NULL;
    struct clip_ctx *c = NULL;
    enum ims_status st = clip_model_load(argv[1], &mp, &m, &err);
    if (st == IMS_OK)
        st = clip_ctx_new(m, 1, &c, &err);
    if (st != IMS_OK) {
        fprintf(stderr, "bench_text_busy: %s\n", ims_error_message(&err, st));
        return 1;
    }
    int32_t ids[CLIP_CONTEXT_MAX];
    int n_ids = 0;
    const char *text = "a photo of a dog on the beach";
    st = clip_tokenize(clip_model_tokenizer(m), text, strlen(text), ids, &n_ids, &err);
    float *out = malloc(sizeof(float) * (size_t)clip_model_embed_dim(m));
    if (st != IMS_OK || !out)
        return 1;
    double r[4][2];
    const char *names[4] = {"idle_adaptive", "idle_fixed", "busy_adaptive", "busy_fixed"};
    phase(c, ids, n_ids, out, 10, &r[0][0], &r[0][1]); /* warm-up */
    for (int ph = 0; ph < 4; ph++) {
        pid_t kids[64];
        int busy = ph >= 2;
        if (busy)
            for (int k = 0; k < hogs; k++) {
                kids[k] = fork();
                if (kids[k] == 0) {
                    volatile unsigned long x = 0;
                    for (;;)
                        x++;
                }
            }
        if (ph & 1)
            setenv("IMS_TEXT_ADAPTIVE", "0", 1);
        else
            unsetenv("IMS_TEXT_ADAPTIVE");
        phase(c, ids, n_ids, out, n, &r[ph][0], &r[ph][1]);
        fprintf(stderr, "bench_text_busy: %s p50 %.2f ms p99 %.2f ms\n", names[ph], r[ph][0],
                r[ph][1]);
        if (busy)
            for (int k = 0; k < hogs; k++) {
                kill(kids[k], SIGKILL);
                waitpid(kids[k], NULL, 0);
            }
    }
    unsetenv("IMS_TEXT_ADAPTIVE");
    printf("{");
    bench_cpu_print_json(stdout);
    const char *yn[] = {"idle_adaptive_p50_ms"};
    double yv[] = {r[0][0]};
    bench_cpu_print_yardsticks(stdout, 1, yn, yv);
    printf(", \"bench\": \"text_busy\", \"precision\": \"%s\", \"tokens\": %d, \"queries\": %d, "
           "\"hogs\": %d,\n \"phases\": {",
           prec, n_ids, n, hogs);
    for (int ph = 0; ph < 4; ph++)
        printf("%s\"%s\": {\"p50_ms\": %.3f, \"p99_ms\": %.3f}", ph ? ", " : "", names[ph],
               r[ph][0], r[ph][1]);
    printf("},\n \"ratios\": {\"busy_over_idle_adaptive_p50\": %.3f, "
           "\"busy_over_idle_fixed_p50\": %.3f, \"busy_fixed_over_adaptive_p50\": %.3f, "
           "\"busy_fixed_over_adaptive_p99\": %.3f}}\n",
           r[2][0] / r[0][0], r[3][0] / r[1][0], r[3][0] / r[2][0], r[3][1] / r[2][1]);
    free(out);
    clip_ctx_free(c);
    clip_model_free(m);
    return 0;
}
