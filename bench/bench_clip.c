/* SPDX-License-Identifier: MIT */
/*
 * bench_clip.c: speed of the CLIP forward passes (src/clip/forward.c), with
 * the machine's own yardstick measured in the same run.
 *
 *     bench_clip [MODEL_DIR] [--threads N] [--quick]
 *
 * Without MODEL_DIR it writes the PRNG ViT-B/32 (tests/golden/clip/
 * prng-vitb32/config.json, seed 1; 600 MB) into a mkdtemp folder under /tmp
 * and deletes it at the end. Prints one JSON object:
 *   - yardstick: OpenBLAS sgemm on a 2048^3 product with N threads
 *     (GFLOP/s, median of repeats, measured before and after the passes:
 *     the better of the two medians is the yardstick, as the slower one
 *     usually means another process took a core);
 *   - per precision (f32, bf16): images/s at batch 1, 8, 32 and the
 *     achieved GFLOP/s of the image pass (FLOPs counted from the config:
 *     every product, 2 per multiply-add), text latency for a 6-word query
 *     (8 tokens) and a full 77-token text (median ms);
 *   - memory read bandwidth with N threads (GB/s, median; a 1 GB buffer on
 *     transparent huge pages, like the text weights): the yardstick of
 *     the text pass, whose few rows make it a stream over the text
 *     tower's weights; per precision the text path in use, the weight
 *     bytes one text pass reads and the GB/s that makes for a 6-word query;
 *   - text queries/s from 16 threads encoding different 6-word queries at
 *     once (the engine combines queued queries into shared passes), with
 *     the mean number of queries per pass;
 *   - ratios: f32 GFLOP/s over the sgemm yardstick at batch 32 and 1,
 *     bf16 over f32 image throughput, and the worst cosine between bf16
 *     and f32 embeddings of the same inputs.
 * Timings are medians over repeats; nothing here is a test.
 *
 * OMP_WAIT_POLICY (read by libgomp when the process starts) matters a lot on
 * a shared machine: libgomp's default spins between parallel regions, which
 * under load starves the thread that has the work; run both ways (see
 * bench/README.md). The JSON says which one was in effect.
 */
#include <math.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <dirent.h>

#include <cblas.h>
#include <pthread.h>
#include <sys/mman.h>

#include "clip_int.h"
#include "bench_cpu.h"
#include "bench_stats.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (float)((rng * 2685821657736338717ull) >> 40) / (float)(1u << 23) - 1.0f;
}

/* ---- yardstick ------------------------------------------------------------------ */

static double sgemm_gflops(int n, int threads, int reps, double *per_cpu_s)
{
    float *a = malloc((size_t)n * n * sizeof(float));
    float *b = malloc((size_t)n * n * sizeof(float));
    float *c = malloc((size_t)n * n * sizeof(float));
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return 0;
    }
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = frand();
        b[i] = frand();
    }
    openblas_set_num_threads(threads);
    double t[16], u[16];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    for (int r = 0; r < reps; r++) {
        double t0 = ims_now(), u0 = bench_process_cpu_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                    n);
        t[r] = ims_now() - t0;
        u[r] = bench_process_cpu_s() - u0;
    }
    free(a);
    free(b);
    free(c);
    double fl = 2.0 * n * (double)n * n;
    *per_cpu_s = fl / bench_median(u, reps) / 1e9;
    return fl / bench_median(t, reps) / 1e9;
}

/* Read bandwidth: `threads` threads each sum a slice of a 1 GB buffer
 * (integer adds the compiler vectorises; the sum is printed-away so the
 * reads stay). Median GB/s of `reps`. */
struct bw_slice {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
};

static void *bw_main(void *arg)
{
    struct bw_slice *s = arg;
    uint64_t acc[8] = {0};
    for (size_t i = 0; i + 8 <= s->n; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += s->p[i + l];
    s->sum = acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7];
    return NULL;
}

static double read_bandwidth_gbs(int threads, int reps)
{
    size_t bytes = (size_t)1 << 30, n = bytes / 8;
    void *mem = NULL;
    if (posix_memalign(&mem, (size_t)2 << 20, bytes) != 0)
        return 0;
    madvise(mem, bytes, MADV_HUGEPAGE); /* as the text pass's weights: no TLB misses */
    uint64_t *buf = mem;
    for (size_t i = 0; i < n; i++)
        buf[i] = i;
    double t[16];
    uint64_t sink = 0;
    struct bw_slice sl[64];
    pthread_t th[64];
    threads = threads > 64 ? 64 : threads;
    for (int r = 0; r < reps; r++) {
        double t0 = ims_now();
        for (int k = 0; k < threads; k++) {
            sl[k].p = buf + n / threads * k;
            sl[k].n = n / threads;
            pthread_create(&th[k], NULL, bw_main, &sl[k]);
        }
        for (int k = 0; k < threads; k++) {
            pthread_join(th[k], NULL);
            sink += sl[k].sum;
        }
        t[r] = ims_now() - t0;
    }
    free(buf);
    if (sink == 42)
        fprintf(stderr, " ");
    return bytes / bench_median(t, reps) / 1e9;
}

/* ---- FLOPs of the passes ----------------------------------------------------------- */

static double layer_flops(const struct clip_tower_config *c, double t)
{
    double w = c->hidden_size, i = c->intermediate_size;
    /* qkv + out_proj + fc1 + fc2, then QK^T and PV over all heads */
    return 2.0 * (t * (3 * w * w + w * w + 2 * w * i) + 2 * t * t * w);
}

static double image_flops(const struct clip_model *m)
{
    const struct clip_tower_config *v = &m->config.vision;
    double g = v->image_size / v->patch_size, np = g * g, t = np + 1;
    double k = (double)v->num_channels * v->patch_size * v->patch_size;
    return 2.0 * np * k * v->hidden_size + v->num_hidden_layers * layer_flops(v, t) +
           2.0 * v->hidden_size * m->config.projection_dim;
}

/* ---- passes ----------------------------------------------------------------------- */

struct prec_result {
    const char *name;
    int actual_bf16;
    double img_per_s[3];
    double gflops[3];
    double gflops_per_cpu_s[3]; /* FLOPs over process CPU seconds */
    double text8_ms, text77_ms;
    const char *text_kernel;
    double text_weight_mb; /* weight bytes one text pass reads */
    double text16_qps, text16_per_pass;
};

/* 16 threads x `per` different 6-word queries each, all at once. */
struct text_client {
    struct clip_model *m;
    int id, per, ok;
};

static void *text_client_main(void *arg)
{
    struct text_client *c = arg;
    struct clip_ctx *ctx = NULL;
    struct ims_error err = {0};
    float out[1024];
    c->ok = clip_ctx_new(c->m, 1, &ctx, &err) == IMS_OK;
    for (int i = 0; c->ok && i < c->per; i++) {
        int32_t ids[8] = {49406, 320 + c->id, 1125 + i, 539, 320, 2368 + c->id * 3 + i, 525, 49407};
        c->ok = clip_ctx_encode_text(ctx, ids, 8, out, 1, &err) == IMS_OK;
    }
    clip_ctx_free(ctx);
    return NULL;
}

static double text_concurrent_qps(struct clip_model *m, int per, double *per_pass)
{
    struct text_client c[16];
    pthread_t th[16];
    uint64_t p0, e0, p1, e1;
    clip__text_pass_counts(m, &p0, &e0);
    double t0 = ims_now();
    for (int k = 0; k < 16; k++) {
        c[k] = (struct text_client){m, k, per, 0};
        pthread_create(&th[k], NULL, text_client_main, &c[k]);
    }
    int ok = 1;
    for (int k = 0; k < 16; k++) {
        pthread_join(th[k], NULL);
        ok &= c[k].ok;
    }
    double dt = ims_now() - t0;
    clip__text_pass_counts(m, &p1, &e1);
    *per_pass = p1 > p0 ? (double)(e1 - e0) / (double)(p1 - p0) : 0;
    return ok ? 16.0 * per / dt : 0;
}

static const int batches[3] = {1, 8, 32};

static int run_precision(const char *dir, enum clip_precision prec, int threads, int quick,
                         const float *pixels, float *emb32, struct prec_result *r)
{
    struct clip_model_params mp;
    clip_model_params_default(&mp);
    mp.precision = prec;
    mp.n_threads = threads;
    struct clip_model *m = NULL;
    struct clip_ctx *ctx = NULL;
    struct ims_error err = {0};
    int rc = 1;
    if (clip_model_load(dir, &mp, &m, &err) != IMS_OK) {
        fprintf(stderr, "bench_clip: %s\n", err.message);
        goto out;
    }
    r->actual_bf16 = clip_model_precision(m) == CLIP_PRECISION_BF16;
    if (clip_ctx_new(m, 32, &ctx, &err) != IMS_OK) {
        fprintf(stderr, "bench_clip: %s\n", err.message);
        goto out;
    }
    double fl = image_flops(m);
    for (int bi = 0; bi < 3; bi++) {
        int n = batches[bi];
        int reps = quick ? 2 : (n == 1 ? 21 : n == 8 ? 7 : 5);
        double t[32], u[32];
        /* first call creates the plan for this batch size */
        if (clip_ctx_encode_images(ctx, pixels, n, emb32, 0, &err) != IMS_OK) {
            fprintf(stderr, "bench_clip: %s\n", err.message);
            goto out;
        }
        for (int i = 0; i < reps; i++) {
            double t0 = ims_now(), u0 = bench_process_cpu_s();
            clip_ctx_encode_images(ctx, pixels, n, emb32, 0, &err);
            t[i] = ims_now() - t0;
            u[i] = bench_process_cpu_s() - u0;
        }
        double med = bench_median(t, reps);
        r->img_per_s[bi] = n / med;
        r->gflops[bi] = fl * n / med / 1e9;
        r->gflops_per_cpu_s[bi] = fl * n / bench_median(u, reps) / 1e9;
    }
    /* embeddings of the 32 images, for the bf16-vs-f32 cosine */
    clip_ctx_encode_images(ctx, pixels, 32, emb32, 1, &err);

    int32_t ids8[8] = {49406, 320, 1125, 539, 320, 2368, 525, 49407};
    int32_t ids77[CLIP_CONTEXT_MAX];
    ids77[0] = 49406;
    for (int i = 1; i < CLIP_CONTEXT_MAX - 1; i++)
        ids77[i] = 320 + 7 * i;
    ids77[CLIP_CONTEXT_MAX - 1] = 49407;
    float out[1024];
    const int32_t *which[2] = {ids8, ids77};
    int lens[2] = {8, CLIP_CONTEXT_MAX};
    double *res[2] = {&r->text8_ms, &r->text77_ms};
    for (int k = 0; k < 2; k++) {
        int reps = quick ? 3 : 31;
        double t[31];
        clip_ctx_encode_text(ctx, which[k], lens[k], out, 1, &err);
        for (int i = 0; i < reps; i++) {
            double t0 = ims_now();
            clip_ctx_encode_text(ctx, which[k], lens[k], out, 1, &err);
            t[i] = ims_now() - t0;
        }
        *res[k] = bench_median(t, reps) * 1e3;
    }
    r->text_kernel = clip__text_kernel(m);
    const struct clip_tower_config *tc = &m->config.text;
    double wb = (double)tc->num_hidden_layers *
                (4.0 * tc->hidden_size * tc->hidden_size +
                 2.0 * tc->hidden_size * tc->intermediate_size);
    r->text_weight_mb = wb * (r->actual_bf16 ? 2 : 4) / 1e6;
    r->text16_qps = text_concurrent_qps(m, quick ? 4 : 16, &r->text16_per_pass);
    rc = 0;
out:
    clip_ctx_free(ctx);
    clip_model_free(m);
    return rc;
}

static void rm_model_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    const char *model_dir = NULL;
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else
            model_dir = argv[i];
    }
    if (threads < 1)
        threads = 1;
    if (getenv("BENCH_CLIP_DEBUG")) /* logs the oneDNN kernel picked for each op */
        ims_log_set_level(IMS_LOG_DEBUG);
    char tmp[64] = "";
    if (!model_dir) {
        char cfg[4096], vocab[4096];
        struct ims_error err = {0};
        snprintf(tmp, sizeof(tmp), "/tmp/ims-bench-clip-XXXXXX");
        if (!mkdtemp(tmp)) {
            perror("mkdtemp");
            return 1;
        }
        snprintf(cfg, sizeof(cfg), "%s/tests/golden/clip/prng-vitb32/config.json", bench_src_dir());
        snprintf(vocab, sizeof(vocab), "%s/data/vocab", bench_src_dir());
        if (clip_make_prng_model(cfg, 1, tmp, vocab, &err) != IMS_OK) {
            fprintf(stderr, "bench_clip: make model: %s\n", err.message);
            rm_model_dir(tmp);
            return 1;
        }
        model_dir = tmp;
    }

    int gemm_reps = quick ? 3 : 9;
    double cpu_before = 0, cpu_after = 0;
    double sgemm_before = sgemm_gflops(2048, threads, gemm_reps, &cpu_before);
    double bw_before = read_bandwidth_gbs(threads, quick ? 3 : 7);

    float *pixels = malloc((size_t)32 * 3 * 224 * 224 * sizeof(float));
    float *e32 = malloc((size_t)32 * 1024 * sizeof(float));
    float *e16 = malloc((size_t)32 * 1024 * sizeof(float));
    if (!pixels || !e32 || !e16)
        return 1;
    for (size_t i = 0; i < (size_t)32 * 3 * 224 * 224; i++)
        pixels[i] = 1.8f * frand();

    struct prec_result r[2] = {{.name = "f32"}, {.name = "bf16"}};
    int rc = run_precision(model_dir, CLIP_PRECISION_F32, threads, quick, pixels, e32, &r[0]);
    if (!rc)
        rc = run_precision(model_dir, CLIP_PRECISION_BF16, threads, quick, pixels, e16, &r[1]);
    double sgemm_after = sgemm_gflops(2048, threads, gemm_reps, &cpu_after);
    double bw_after = read_bandwidth_gbs(threads, quick ? 3 : 7);
    double bw = bw_before > bw_after ? bw_before : bw_after;
    if (tmp[0])
        rm_model_dir(tmp);
    if (rc)
        return 1;

    /* embed dim from the bench's own model is 512 for ViT-B/32; compute the
     * cosine over the first 32 rows at that size. */
    int d = 512;
    double worst = 1.0;
    for (int i = 0; i < 32; i++) {
        double ab = 0, aa = 0, bb = 0;
        for (int j = 0; j < d; j++) {
            ab += (double)e32[i * d + j] * e16[i * d + j];
            aa += (double)e32[i * d + j] * e32[i * d + j];
            bb += (double)e16[i * d + j] * e16[i * d + j];
        }
        double c = ab / sqrt(aa * bb);
        worst = c < worst ? c : worst;
    }
    double yard = sgemm_before > sgemm_after ? sgemm_before : sgemm_after;

    const char *policy = getenv("OMP_WAIT_POLICY");
    printf("{\n  ");
    bench_cpu_print_json(stdout);
    {
        const char *yn[] = {"sgemm_2048_gflops", "sgemm_2048_gflops_per_cpu_s", "read_bandwidth_gbs"};
        double yv[] = {sgemm_before > sgemm_after ? sgemm_before : sgemm_after,
                       cpu_before > cpu_after ? cpu_before : cpu_after, bw};
        bench_cpu_print_yardsticks(stdout, 3, yn, yv);
    }
    printf(",\n  \"threads\": %d,\n  \"omp_wait_policy\": \"%s\",\n", threads,
           policy ? policy : "default");
    double yard_cpu = cpu_before > cpu_after ? cpu_before : cpu_after;
    printf("  \"sgemm_2048_gflops\": {\"before\": %.1f, \"after\": %.1f, \"yardstick\": %.1f, "
           "\"per_cpu_s\": %.1f},\n",
           sgemm_before, sgemm_after, yard, yard_cpu);
    printf("  \"read_bandwidth_gbs\": {\"before\": %.1f, \"after\": %.1f, \"yardstick\": %.1f},\n",
           bw_before, bw_after, bw);
    for (int p = 0; p < 2; p++) {
        printf("  \"%s\": {\"native\": %s, ", r[p].name,
               p == 0 || r[p].actual_bf16 ? "true" : "false");
        printf("\"images_per_s\": {\"1\": %.2f, \"8\": %.2f, \"32\": %.2f}, ", r[p].img_per_s[0],
               r[p].img_per_s[1], r[p].img_per_s[2]);
        printf("\"gflops\": {\"1\": %.1f, \"8\": %.1f, \"32\": %.1f}, ", r[p].gflops[0],
               r[p].gflops[1], r[p].gflops[2]);
        printf("\"gflops_per_cpu_s\": {\"1\": %.1f, \"8\": %.1f, \"32\": %.1f}, ",
               r[p].gflops_per_cpu_s[0], r[p].gflops_per_cpu_s[1], r[p].gflops_per_cpu_s[2]);
        printf("\"text_ms\": {\"8_tokens\": %.2f, \"77_tokens\": %.2f}, ", r[p].text8_ms,
               r[p].text77_ms);
        printf("\"text_kernel\": \"%s\", \"text_weight_mb\": %.1f, "
               "\"text_8_tokens_gbs\": %.1f, \"text_8_tokens_over_bandwidth\": %.3f, "
               "\"text_16_clients_qps\": %.1f, \"text_queries_per_pass\": %.2f},\n",
               r[p].text_kernel, r[p].text_weight_mb, r[p].text_weight_mb / r[p].text8_ms,
               r[p].text_weight_mb / r[p].text8_ms / bw, r[p].text16_qps, r[p].text16_per_pass);
    }
    printf("  \"ratios_cpu_time\": {\"f32_b32_over_sgemm\": %.3f, \"f32_b1_over_sgemm\": %.3f, "
           "\"bf16_over_f32_b32\": %.3f},\n",
           r[0].gflops_per_cpu_s[2] / yard_cpu, r[0].gflops_per_cpu_s[0] / yard_cpu,
           r[1].gflops_per_cpu_s[2] / r[0].gflops_per_cpu_s[2]);
    printf("  \"ratios\": {\"f32_b32_over_sgemm\": %.3f, \"f32_b1_over_sgemm\": %.3f, "
           "\"bf16_over_f32_images\": {\"1\": %.3f, \"8\": %.3f, \"32\": %.3f}, "
           "\"bf16_vs_f32_min_cosine\": %.6f}\n}\n",
           r[0].gflops[2] / yard, r[0].gflops[0] / yard, r[1].img_per_s[0] / r[0].img_per_s[0],
           r[1].img_per_s[1] / r[0].img_per_s[1], r[1].img_per_s[2] / r[0].img_per_s[2], worst);
    free(pixels);
    free(e32);
    free(e16);
    return 0;
}
