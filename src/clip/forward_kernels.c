/* SPDX-License-Identifier: MIT */
/*
 * forward_kernels.c: LayerNorm, attention softmax, im2col, QKV stacking and the reference
 * activations (see forward.h). Plain C written so that GCC vectorises the
 * inner loops without -ffast-math:
 *   - row reductions keep FWD_LANES independent partial sums (a reduction
 *     into one scalar is a dependency chain GCC may not reorder), then add
 *     the lanes; LayerNorm is two-pass (mean, then squared deviations), so
 *     a large mean costs no precision;
 *   - softmax uses fwd_exp, a branch-free exp (Cody-Waite reduction, degree
 *     6 polynomial, exponent by integer add; relative error < 2e-7 on the
 *     range softmax feeds it) instead of libm's expf calls;
 *   - bf16 rounding is a select, not a branch.
 *
 * Parallelism: with GCC the row loops are OpenMP loops on the same libgomp
 * team oneDNN uses (src/clip/CMakeLists.txt adds -fopenmp for this file
 * only, under GCC), with the thread count clip__gemm_backend_enter set; small
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

#define FWD_LANES 16

/* sum of v[0..n) with FWD_LANES partial sums; `shift` is subtracted first
 * and the result is of (v - shift)^2 when `square`. */
static inline float fwd_row_sum(const float *v, int n, float shift, int square)
{
    float acc[FWD_LANES] = {0};
    int i = 0;
    for (; i + FWD_LANES <= n; i += FWD_LANES)
        for (int l = 0; l < FWD_LANES; l++) {
            float d = v[i + l] - shift;
            acc[l] += square ? d * d : d;
        }
    for (; i < n; i++) {
        float d = v[i] - shift;
        acc[0] += square ? d * d : d;
    }
    float s = 0.0f;
    for (int l = 0; l < FWD_LANES; l++)
        s += acc[l];
    return s;
}

/* clip__gemm_f32_to_bf16 as a select, so loops over it vectorise. */
static inline uint16_t fwd_bf16(float f)
{
    union { float f; uint32_t u; } v = {f};
    uint32_t rounded = (v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16;
    uint32_t quiet = (v.u >> 16) | 0x40u;
    return (uint16_t)((v.u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

/* exp(x) for x <= 0 (softmax arguments), 0 below -87. */
static inline float fwd_exp(float x)
{
    x = x < -87.0f ? -87.0f : x;
    float n = nearbyintf(x * 1.44269504088896341f);
    /* Cody-Waite: ln2 split so that n * hi is exact. */
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    /* e^r on [-ln2/2, ln2/2], Taylor to degree 6 (error < 1.2e-7 there) */
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { float f; int32_t i; } scale = {.i = ((int32_t)n + 127) << 23};
    return p * scale.f;
}

void clip__forward_layernorm(const float *x, int ld_x, int rows, int w, const float *g,
                             const float *b, float eps, void *y, int ld_y, enum clip_gemm_dt dt)
{
    size_t n_elems = (size_t)rows * w;
    (void)n_elems;
    FWD_PARALLEL_FOR(n_elems)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * ld_x;
        float mean = fwd_row_sum(xr, w, 0.0f, 0) / (float)w;
        float var = fwd_row_sum(xr, w, mean, 1) / (float)w;
        float inv = 1.0f / sqrtf(var + eps);
        if (dt == CLIP_GEMM_BF16) {
            uint16_t *yr = (uint16_t *)y + (size_t)r * ld_y;
            for (int i = 0; i < w; i++)
                yr[i] = fwd_bf16((xr[i] - mean) * inv * g[i] + b[i]);
        } else {
            float *yr = (float *)y + (size_t)r * ld_y;
            for (int i = 0; i < w; i++)
                yr[i] = (xr[i] - mean) * inv * g[i] + b[i];
        }
    }
}

void clip__forward_softmax(float *scores, int n_mat, int t, float scale, int causal, void *probs,
                     enum clip_gemm_dt dt)
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
        for (int j = 0; j < n_valid; j++)
            s[j] = fwd_exp((s[j] - mx) * scale);
        float inv = 1.0f / fwd_row_sum(s, n_valid, 0.0f, 0);
        if (dt == CLIP_GEMM_BF16) {
            uint16_t *p = (uint16_t *)probs + r * t;
            for (int j = 0; j < n_valid; j++)
                p[j] = fwd_bf16(s[j] * inv);
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

void clip__forward_im2col(const float *pixels, int n, int c, int s, int p, void *patches,
                    enum clip_gemm_dt dt)
{
    int g = s / p;
    size_t row_len = (size_t)c * p * p;
    for (int i = 0; i < n; i++) {
        const float *img = pixels + (size_t)i * c * s * s;
        for (int gy = 0; gy < g; gy++)
            for (int gx = 0; gx < g; gx++) {
                size_t row = ((size_t)i * g * g + (size_t)gy * g + gx) * row_len;
                for (int ch = 0; ch < c; ch++)
                    for (int dy = 0; dy < p; dy++) {
                        const float *src =
                            img + ((size_t)ch * s + (size_t)gy * p + dy) * s + (size_t)gx * p;
                        size_t at = row + ((size_t)ch * p + dy) * p;
                        if (dt == CLIP_GEMM_BF16) {
                            uint16_t *dst = (uint16_t *)patches + at;
                            for (int dx = 0; dx < p; dx++)
                                dst[dx] = fwd_bf16(src[dx]);
                        } else {
                            memcpy((float *)patches + at, src, (size_t)p * sizeof(float));
                        }
                    }
            }
    }
}

float clip__forward_act_ref(float x, int act)
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

void clip__forward_stack_qkv(const struct clip_layer_weights *lw, int w, float *wqkv, float *bqkv)
{
    size_t ww = (size_t)w * w;
    memcpy(wqkv, lw->q_w, ww * sizeof(float));
    memcpy(wqkv + ww, lw->k_w, ww * sizeof(float));
    memcpy(wqkv + 2 * ww, lw->v_w, ww * sizeof(float));
    memcpy(bqkv, lw->q_b, (size_t)w * sizeof(float));
    memcpy(bqkv + w, lw->k_b, (size_t)w * sizeof(float));
    memcpy(bqkv + 2 * w, lw->v_b, (size_t)w * sizeof(float));
}
