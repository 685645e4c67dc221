/* SPDX-License-Identifier: MIT */
/*
 * forward_kernels.c: LayerNorm, attention softmax, im2col and the reference
 * activations (see forward.h). Plain C written so that GCC vectorises the
 * inner loops; statistics accumulate in double where a row is reduced (one
 * LayerNorm row is 768 values, so this costs nothing and removes the
 * summation-order noise from the golden comparisons).
 *
 * Parallelism: with GCC the row loops are OpenMP loops on the same libgomp
 * team oneDNN uses (src/clip/CMakeLists.txt adds -fopenmp for this file
 * only, under GCC), with the thread count gemm_backend_enter set; small
 * inputs stay on the calling thread (`if` clause). Clang builds (the
 * sanitizer runs) would pull in LLVM's libomp next to oneDNN's libgomp, two
 * thread teams on the same cores, so there the loops run serially.
 */
#include <math.h>
#include <string.h>

#include "clip_int.h"
#include "forward.h"

/* Rows of work below which a loop is not worth waking the team for. */
#define FWD_PAR_MIN_ELEMS 32768

#ifdef _OPENMP
#define FWD_PARALLEL_FOR(n_elems) _Pragma("omp parallel for schedule(static) if((n_elems) >= FWD_PAR_MIN_ELEMS)")
#else
#define FWD_PARALLEL_FOR(n_elems)
#endif

void forward_layernorm(const float *x, int ld_x, int rows, int w, const float *g, const float *b,
                       float eps, void *y, int ld_y, enum gemm_dt dt)
{
    size_t n_elems = (size_t)rows * w;
    (void)n_elems;
    FWD_PARALLEL_FOR(n_elems)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * ld_x;
        double sum = 0.0;
        for (int i = 0; i < w; i++)
            sum += xr[i];
        float mean = (float)(sum / w);
        double var = 0.0;
        for (int i = 0; i < w; i++) {
            double d = xr[i] - mean;
            var += d * d;
        }
        float inv = (float)(1.0 / sqrt(var / w + eps));
        if (dt == GEMM_BF16) {
            uint16_t *yr = (uint16_t *)y + (size_t)r * ld_y;
            for (int i = 0; i < w; i++)
                yr[i] = gemm_f32_to_bf16((xr[i] - mean) * inv * g[i] + b[i]);
        } else {
            float *yr = (float *)y + (size_t)r * ld_y;
            for (int i = 0; i < w; i++)
                yr[i] = (xr[i] - mean) * inv * g[i] + b[i];
        }
    }
}

void forward_softmax(float *scores, int n_mat, int t, float scale, int causal, void *probs,
                     enum gemm_dt dt)
{
    size_t n_rows = (size_t)n_mat * t, n_elems = n_rows * t;
    (void)n_elems;
    FWD_PARALLEL_FOR(n_elems)
    for (size_t r = 0; r < n_rows; r++) {
        float *s = scores + r * t;
        int n_valid = causal ? (int)(r % t) + 1 : t;
        float mx = s[0];
        for (int j = 1; j < n_valid; j++)
            mx = s[j] > mx ? s[j] : mx;
        /* The exps overwrite the scores (no scratch row, any width). */
        float sum = 0.0f;
        for (int j = 0; j < n_valid; j++) {
            s[j] = expf((s[j] - mx) * scale);
            sum += s[j];
        }
        float inv = 1.0f / sum;
        if (dt == GEMM_BF16) {
            uint16_t *p = (uint16_t *)probs + r * t;
            for (int j = 0; j < n_valid; j++)
                p[j] = gemm_f32_to_bf16(s[j] * inv);
            for (int j = n_valid; j < t; j++)
                p[j] = 0;
        } else {
            float *p = (float *)probs + r * t;
            for (int j = 0; j < n_valid; j++)
                p[j] = s[j] * inv;
            for (int j = n_valid; j < t; j++)
                p[j] = 0.0f;
        }
    }
}

void forward_im2col(const float *pixels, int n, int c, int s, int p, float *patches)
{
    int g = s / p;
    size_t row_len = (size_t)c * p * p;
    for (int i = 0; i < n; i++) {
        const float *img = pixels + (size_t)i * c * s * s;
        for (int gy = 0; gy < g; gy++)
            for (int gx = 0; gx < g; gx++) {
                float *row = patches + ((size_t)i * g * g + (size_t)gy * g + gx) * row_len;
                for (int ch = 0; ch < c; ch++)
                    for (int dy = 0; dy < p; dy++)
                        memcpy(row + ((size_t)ch * p + dy) * p,
                               img + ((size_t)ch * s + (size_t)gy * p + dy) * s + (size_t)gx * p,
                               (size_t)p * sizeof(float));
            }
    }
}

float forward_act_ref(float x, int act)
{
    switch (act) {
    case CLIP_ACT_QUICK_GELU:
        return x / (1.0f + expf(-1.702f * x));
    case CLIP_ACT_GELU:
        return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case CLIP_ACT_GELU_TANH:
        return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    default:
        return x;
    }
}
