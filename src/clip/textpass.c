/* SPDX-License-Identifier: MIT */
/*
 * textpass.c: the few-rows text tower (see textpass.h for why it exists).
 *
 * DESIGN
 *
 * Weights. Every linear layer (n outputs, k inputs) is packed once into
 * panels of 32 output columns, each panel contiguous over k: f32 (k, 32),
 * bf16 (k/2, 32, 2) (the pairs vdpbf16ps multiplies). A pass reads each
 * panel front to back exactly once, whatever the row count: the kernel
 * holds 8 rows x 32 columns of f32 accumulators (16 zmm registers), and for
 * more than 8 rows the row blocks loop inside the panel while it sits in L2.
 *
 * Threads. One OpenMP region per pass (the libgomp team oneDNN also uses,
 * so the two never oversubscribe the cores); inside it each product splits
 * its panels over the threads, LayerNorm its rows, attention its (sequence,
 * head) pairs, and a spinning barrier (bounded spin, then sched_yield)
 * separates the steps: about 80 steps per pass, each a few microseconds
 * to a few hundred, where waking a sleeping team would cost more than the
 * work.
 *
 * Rows. The batch's sequences are concatenated; attention is causal within
 * each. In the last layer only each sequence's end row is needed: attention
 * computes only those query rows, and the residual rows are compacted to
 * one per sequence before the last o-proj and MLP.
 *
 * Precision. f32: f32 everywhere. bf16: weights and the products' inputs
 * in bf16 (LayerNorm outputs, attention output, MLP hidden), f32
 * accumulation, f32 residual stream, LayerNorm statistics, attention and
 * softmax; the final projection stays f32, as in forward.c.
 */
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/mman.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define TP_X86 1
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "clip_int.h"
#include "forward.h"
#include "textpass.h"

#define TP_NR 32     /* output columns per panel (two zmm) */
#define TP_MR 8      /* rows per kernel call */
#define TP_MAX_HD 256 /* head size bound for the attention row buffer */

struct tp_linear {
    int n, k;        /* outputs, inputs */
    enum clip_gemm_dt dt; /* weights, and the inputs' precision */
    void *w;         /* n / 32 panels: f32 (k, 32) or bf16 (k / 2, 32, 2) */
    float *bias;     /* (n); zeros when the layer has none */
};

struct tp_layer {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    struct tp_linear qkv, o, fc1, fc2;
};

struct tp_barrier {
    atomic_int arrived;
    atomic_int generation;
    int n;
};

struct clip_textpass {
    const struct clip_text_weights *tw; /* embeddings and final LN: the model's tensors */
    int w, inter, heads, hd, n_layers, d, ctx_len, act;
    float eps;
    enum clip_gemm_dt dt;
    int n_threads;
    struct tp_layer *layers;
    struct tp_linear proj; /* (D, W), f32 */
    char *arena;           /* every panel, in one block on huge pages */
    size_t arena_size, arena_used;
    /* activations for CLIP_TEXTPASS_MAX_ROWS rows */
    float *x;      /* (R, W) residual stream */
    float *qkv;    /* (R, 3W) */
    void *h;       /* (R, W) dt: LayerNorm output, then attention output */
    void *m;       /* (R, I) dt: MLP hidden */
    float *pooled; /* (R, W) final LayerNorm of the end rows */
    float *out;    /* (R, D) projections */
    float *probs;  /* n_threads x ctx_len attention row scratch */
    size_t bytes;
    /* the batch of the running pass */
    int n_seq, rows;
    int seq_start[CLIP_TEXTPASS_MAX_ROWS + 1];
    const int32_t *const *ids;
    struct tp_barrier bar;
};

/* ---- CPU support ---------------------------------------------------------------------- */

static int cpu_has_avx512_bf16(void)
{
#ifdef TP_X86
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d))
        return 0;
    return (a >> 5) & 1u; /* CPUID.(EAX=7,ECX=1):EAX bit 5 = AVX512_BF16 */
#else
    return 0;
#endif
}

int clip__textpass_supported(const struct clip_config *c, enum clip_gemm_dt dt)
{
#ifdef TP_X86
    const struct clip_tower_config *t = &c->text;
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512dq") || !__builtin_cpu_supports("avx512vl"))
        return 0;
    if (dt == CLIP_GEMM_BF16 && !cpu_has_avx512_bf16())
        return 0;
    if (t->num_attention_heads < 1 || t->hidden_size % t->num_attention_heads)
        return 0;
    int hd = t->hidden_size / t->num_attention_heads;
    return t->hidden_size % TP_NR == 0 && t->intermediate_size % TP_NR == 0 &&
           c->projection_dim % TP_NR == 0 && hd % 16 == 0 && hd <= TP_MAX_HD &&
           t->max_position_embeddings <= CLIP_TEXTPASS_MAX_ROWS;
#else
    (void)c;
    (void)dt;
    return 0;
#endif
}

#ifdef TP_X86

#define TP_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define TP_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx512bf16")))

/* ---- packing ------------------------------------------------------------------------- */

static void linear_free(struct tp_linear *l)
{
    ims_free(l->bias);
    memset(l, 0, sizeof(*l));
}

/* One block for all panels, 2 MB aligned and advised onto transparent huge
 * pages: a pass streams 75-151 MB, and on 4 kB pages that is ~37,000 TLB
 * misses per query (measured: 4.2-6.4 ms per f32 query without, varying
 * with what the kernel happened to give). */
static int arena_new(struct clip_textpass *tp, size_t bytes)
{
    size_t huge = (size_t)2 << 20;
    bytes = (bytes + huge - 1) / huge * huge;
    void *p = NULL;
    if (posix_memalign(&p, huge, bytes) != 0)
        return -1;
    madvise(p, bytes, MADV_HUGEPAGE); /* advice only: fine if refused */
    tp->arena = p;
    tp->arena_size = bytes;
    tp->bytes += bytes;
    return 0;
}

static void *arena_take(struct clip_textpass *tp, size_t bytes)
{
    size_t at = (tp->arena_used + 63) & ~(size_t)63;
    IMS_ASSERT(at + bytes <= tp->arena_size);
    tp->arena_used = at + bytes;
    return tp->arena + at;
}

/* Packs w (n, k) [out][in] and bias (n, or NULL). */
static enum ims_status linear_pack(struct clip_textpass *tp, const float *w, const float *bias, int n,
                                   int k, enum clip_gemm_dt dt, struct tp_linear *out,
                                   struct ims_error *err)
{
    out->n = n;
    out->k = k;
    out->dt = dt;
    size_t es = dt == CLIP_GEMM_BF16 ? 2 : 4, elems = (size_t)n * k;
    out->w = arena_take(tp, elems * es);
    out->bias = ims_aligned_alloc(64, (size_t)n * sizeof(float));
    if (!out->bias)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory (text weights)");
    tp->bytes += (size_t)n * sizeof(float);
    for (int j = 0; j < n; j++)
        out->bias[j] = bias ? bias[j] : 0.0f;
    int n_panels = n / TP_NR;
    for (int p = 0; p < n_panels; p++)
        for (int c = 0; c < TP_NR; c++) {
            const float *src = w + (size_t)(p * TP_NR + c) * k;
            if (dt == CLIP_GEMM_F32) {
                float *dst = (float *)out->w + (size_t)p * k * TP_NR + c;
                for (int i = 0; i < k; i++)
                    dst[(size_t)i * TP_NR] = src[i];
            } else {
                uint16_t *dst = (uint16_t *)out->w + (size_t)p * k * TP_NR + 2 * c;
                for (int i = 0; i < k; i++)
                    dst[(size_t)(i / 2) * 2 * TP_NR + (i & 1)] = clip__gemm_f32_to_bf16(src[i]);
            }
        }
    return IMS_OK;
}

/* ---- kernels ------------------------------------------------------------------------- */

/* tmp (mr, 32) = x (mr rows of k, stride ldx) . panel (k, 32). */
TP_AVX512 static inline __attribute__((always_inline)) void
kern_f32(int mr, const float *restrict wp, int k, const float *restrict x, int ldx,
         float *restrict tmp)
{
    __m512 a0[TP_MR], a1[TP_MR];
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
        a0[r] = a1[r] = _mm512_setzero_ps();
    for (int i = 0; i < k; i++) {
        __m512 w0 = _mm512_load_ps(wp + (size_t)i * TP_NR);
        __m512 w1 = _mm512_load_ps(wp + (size_t)i * TP_NR + 16);
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++) {
            __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + i]);
            a0[r] = _mm512_fmadd_ps(xb, w0, a0[r]);
            a1[r] = _mm512_fmadd_ps(xb, w1, a1[r]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++) {
        _mm512_store_ps(tmp + r * TP_NR, a0[r]);
        _mm512_store_ps(tmp + r * TP_NR + 16, a1[r]);
    }
}

/* The same over bf16 pairs: x (mr rows of k bf16, stride ldx, k even). */
TP_AVX512_BF16 static inline __attribute__((always_inline)) void
kern_bf16(int mr, const uint16_t *restrict wp, int k, const uint16_t *restrict x, int ldx,
          float *restrict tmp)
{
    __m512 a0[TP_MR], a1[TP_MR];
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
        a0[r] = a1[r] = _mm512_setzero_ps();
    for (int i = 0; i < k / 2; i++) {
        __m512bh w0 = (__m512bh)_mm512_load_si512((const void *)(wp + (size_t)i * 2 * TP_NR));
        __m512bh w1 = (__m512bh)_mm512_load_si512((const void *)(wp + (size_t)i * 2 * TP_NR + TP_NR));
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++) {
            int32_t pair;
            memcpy(&pair, x + (size_t)r * ldx + 2 * i, sizeof(pair));
            __m512bh xb = (__m512bh)_mm512_set1_epi32(pair);
            a0[r] = _mm512_dpbf16_ps(a0[r], xb, w0);
            a1[r] = _mm512_dpbf16_ps(a1[r], xb, w1);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++) {
        _mm512_store_ps(tmp + r * TP_NR, a0[r]);
        _mm512_store_ps(tmp + r * TP_NR + 16, a1[r]);
    }
}

typedef void (*kern_f32_fn)(const float *, int, const float *, int, float *);
typedef void (*kern_bf16_fn)(const uint16_t *, int, const uint16_t *, int, float *);

#define TP_KERNELS(MR)                                                                          \
    TP_AVX512 static void kern_f32_##MR(const float *wp, int k, const float *x, int ldx,        \
                                        float *tmp)                                             \
    {                                                                                           \
        kern_f32(MR, wp, k, x, ldx, tmp);                                                       \
    }                                                                                           \
    TP_AVX512_BF16 static void kern_bf16_##MR(const uint16_t *wp, int k, const uint16_t *x,     \
                                              int ldx, float *tmp)                              \
    {                                                                                           \
        kern_bf16(MR, wp, k, x, ldx, tmp);                                                      \
    }
TP_KERNELS(1)
TP_KERNELS(2)
TP_KERNELS(3)
TP_KERNELS(4)
TP_KERNELS(5)
TP_KERNELS(6)
TP_KERNELS(7)
TP_KERNELS(8)

static const kern_f32_fn kerns_f32[TP_MR + 1] = {NULL, kern_f32_1, kern_f32_2, kern_f32_3,
                                                 kern_f32_4, kern_f32_5, kern_f32_6,
                                                 kern_f32_7, kern_f32_8};
static const kern_bf16_fn kerns_bf16[TP_MR + 1] = {NULL, kern_bf16_1, kern_bf16_2, kern_bf16_3,
                                                   kern_bf16_4, kern_bf16_5, kern_bf16_6,
                                                   kern_bf16_7, kern_bf16_8};

/* e^x, relative error below 2e-7 over the clamped range: x = n ln2 + r with
 * |r| <= ln2/2 (ln2 split in two for an exact n ln2), e^r by its degree-7
 * Taylor polynomial, 2^n by vscalefps. */
TP_AVX512 static inline __m512 exp512(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* 16 floats to bf16, round to nearest even, NaN kept quiet (clip__gemm_f32_to_bf16). */
TP_AVX512 static inline __m256i to_bf16(__m512 v)
{
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x400000));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

/* y[r][col0 .. col0 + 32) (=|+=) act(tmp[r] + bias[col0 ..]) for r < mr. */
TP_AVX512 static void epilogue(const float *tmp, int mr, const float *bias, int act,
                               int accumulate, void *y, int ldy, enum clip_gemm_dt ydt, int col0)
{
    for (int r = 0; r < mr; r++)
        for (int half = 0; half < 2; half++) {
            __m512 v = _mm512_add_ps(_mm512_load_ps(tmp + r * TP_NR + 16 * half),
                                     _mm512_loadu_ps(bias + col0 + 16 * half));
            if (act == CLIP_ACT_QUICK_GELU) {
                __m512 e = exp512(_mm512_mul_ps(v, _mm512_set1_ps(-1.702f)));
                v = _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
            } else if (act == CLIP_ACT_GELU_TANH) {
                __m512 u = _mm512_mul_ps(
                    _mm512_set1_ps(0.79788456080286536f),
                    _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715f), v),
                                    _mm512_mul_ps(v, v), v));
                /* tanh u = 1 - 2 / (e^(2u) + 1) */
                __m512 e = exp512(_mm512_add_ps(u, u));
                __m512 th = _mm512_sub_ps(
                    _mm512_set1_ps(1.0f),
                    _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
                v = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v),
                                  _mm512_add_ps(_mm512_set1_ps(1.0f), th));
            } else if (act == CLIP_ACT_GELU) {
                float t[16] __attribute__((aligned(64)));
                _mm512_store_ps(t, v);
                for (int i = 0; i < 16; i++)
                    t[i] = clip__forward_act_ref(t[i], CLIP_ACT_GELU);
                v = _mm512_load_ps(t);
            }
            size_t at = (size_t)r * ldy + col0 + 16 * half;
            if (ydt == CLIP_GEMM_F32) {
                float *yp = (float *)y + at;
                if (accumulate)
                    v = _mm512_add_ps(v, _mm512_loadu_ps(yp));
                _mm512_storeu_ps(yp, v);
            } else {
                _mm256_storeu_si256((__m256i *)((uint16_t *)y + at), to_bf16(v));
            }
        }
}

/* y (rows, n) = act(x (rows, k) W^T + b) (+ y): this thread's share of the
 * panels. act < 0: none. */
static void linear_run(const struct tp_linear *l, const void *x, int ldx, int rows, void *y,
                       int ldy, enum clip_gemm_dt ydt, int act, int accumulate, int tid, int nt)
{
    float tmp[TP_MR * TP_NR] __attribute__((aligned(64)));
    int n_panels = l->n / TP_NR;
    int p0 = n_panels * tid / nt, p1 = n_panels * (tid + 1) / nt;
    for (int p = p0; p < p1; p++)
        for (int r0 = 0; r0 < rows; r0 += TP_MR) {
            int mr = IMS_MIN(TP_MR, rows - r0);
            if (l->dt == CLIP_GEMM_F32)
                kerns_f32[mr]((const float *)l->w + (size_t)p * l->k * TP_NR, l->k,
                              (const float *)x + (size_t)r0 * ldx, ldx, tmp);
            else
                kerns_bf16[mr]((const uint16_t *)l->w + (size_t)p * l->k * TP_NR, l->k,
                               (const uint16_t *)x + (size_t)r0 * ldx, ldx, tmp);
            size_t es = ydt == CLIP_GEMM_F32 ? 4 : 2;
            epilogue(tmp, mr, l->bias, act, accumulate, (char *)y + (size_t)r0 * ldy * es, ldy,
                     ydt, p * TP_NR);
        }
}

/* ---- attention ----------------------------------------------------------------------- */

TP_AVX512 static float dot512(const float *a, const float *b, int n)
{
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    return _mm512_reduce_add_ps(acc);
}

/* Causal attention of sequence s, head hh: query rows from `first` (0, or
 * the end row only) to the end, written to h at out_row0 + (i - first). */
TP_AVX512 static void attend(struct clip_textpass *tp, int s, int hh, int last, float *prob)
{
    int w = tp->w, hd = tp->hd, ld = 3 * w;
    int r0 = tp->seq_start[s], t = tp->seq_start[s + 1] - r0;
    float scale = 1.0f / sqrtf((float)hd);
    int first = last ? t - 1 : 0;
    for (int i = first; i < t; i++) {
        const float *q = tp->qkv + (size_t)(r0 + i) * ld + (size_t)hh * hd;
        float mx = -INFINITY;
        for (int j = 0; j <= i; j++) {
            const float *kj = tp->qkv + (size_t)(r0 + j) * ld + w + (size_t)hh * hd;
            prob[j] = dot512(q, kj, hd) * scale;
            mx = prob[j] > mx ? prob[j] : mx;
        }
        __m512 sum = _mm512_setzero_ps();
        for (int j = 0; j <= i; j += 16) {
            __mmask16 mk = (__mmask16)(i + 1 - j >= 16 ? 0xffff : (1u << (i + 1 - j)) - 1);
            __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, prob + j), _mm512_set1_ps(mx)));
            e = _mm512_maskz_mov_ps(mk, e);
            _mm512_mask_storeu_ps(prob + j, mk, e);
            sum = _mm512_add_ps(sum, e);
        }
        float inv = 1.0f / _mm512_reduce_add_ps(sum);
        float acc[TP_MAX_HD] __attribute__((aligned(64)));
        for (int c = 0; c < hd; c += 16)
            _mm512_store_ps(acc + c, _mm512_setzero_ps());
        for (int j = 0; j <= i; j++) {
            const float *vj = tp->qkv + (size_t)(r0 + j) * ld + 2 * (size_t)w + (size_t)hh * hd;
            __m512 pj = _mm512_set1_ps(prob[j] * inv);
            for (int c = 0; c < hd; c += 16)
                _mm512_store_ps(acc + c, _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + c),
                                                         _mm512_load_ps(acc + c)));
        }
        int row = last ? s : r0 + i;
        size_t at = (size_t)row * w + (size_t)hh * hd;
        for (int c = 0; c < hd; c += 16) {
            if (tp->dt == CLIP_GEMM_F32)
                _mm512_storeu_ps((float *)tp->h + at + c, _mm512_load_ps(acc + c));
            else
                _mm256_storeu_si256((__m256i *)((uint16_t *)tp->h + at + c),
                                    to_bf16(_mm512_load_ps(acc + c)));
        }
    }
}

/* ---- the pass ------------------------------------------------------------------------ */

static void barrier_wait(struct tp_barrier *b)
{
    if (b->n <= 1)
        return;
    int gen = atomic_load_explicit(&b->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) == b->n - 1) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&b->generation, gen + 1, memory_order_release);
        return;
    }
    for (unsigned spins = 0; atomic_load_explicit(&b->generation, memory_order_acquire) == gen;
         spins++) {
        if (spins < 4096)
            _mm_pause();
        else
            sched_yield(); /* the other thread lost its core: give ours away */
    }
}

/* Rows [*r0, *r1) of `rows` for thread tid of nt. */
static void row_share(int rows, int tid, int nt, int *r0, int *r1)
{
    *r0 = rows * tid / nt;
    *r1 = rows * (tid + 1) / nt;
}

static void layernorm_rows(const float *x, int rows, int w, const float *g, const float *b,
                           float eps, void *y, enum clip_gemm_dt dt, int tid, int nt)
{
    int r0, r1;
    row_share(rows, tid, nt, &r0, &r1);
    if (r1 > r0)
        clip__forward_layernorm(x + (size_t)r0 * w, w, r1 - r0, w, g, b, eps,
                          (char *)y + (size_t)r0 * w * (dt == CLIP_GEMM_F32 ? 4 : 2), w, dt);
}

static void pass(struct clip_textpass *tp, int tid, int nt)
{
    int w = tp->w, rows = tp->rows, n_seq = tp->n_seq;
    enum clip_gemm_dt dt = tp->dt;
    struct tp_barrier *bar = &tp->bar;
    float *prob = tp->probs + (size_t)tid * tp->ctx_len;
    const struct clip_text_weights *txt = tp->tw;

    for (int s = 0; s < n_seq; s++) {
        int r0 = tp->seq_start[s], t = tp->seq_start[s + 1] - r0;
        for (int i = tid; i < t; i += nt) {
            const float *tok = txt->token_embedding + (size_t)tp->ids[s][i] * w;
            const float *pos = txt->position_embedding + (size_t)i * w;
            float *xi = tp->x + (size_t)(r0 + i) * w;
            for (int c = 0; c < w; c++)
                xi[c] = tok[c] + pos[c];
        }
    }
    barrier_wait(bar);
    for (int l = 0; l < tp->n_layers; l++) {
        const struct tp_layer *L = &tp->layers[l];
        int last = l == tp->n_layers - 1;
        layernorm_rows(tp->x, rows, w, L->ln1_w, L->ln1_b, tp->eps, tp->h, dt, tid, nt);
        barrier_wait(bar);
        linear_run(&L->qkv, tp->h, w, rows, tp->qkv, 3 * w, CLIP_GEMM_F32, -1, 0, tid, nt);
        barrier_wait(bar);
        if (last && tid == 0) /* one residual row per sequence from here on */
            for (int s = 0; s < n_seq; s++)
                memmove(tp->x + (size_t)s * w, tp->x + (size_t)(tp->seq_start[s + 1] - 1) * w,
                        (size_t)w * sizeof(float));
        for (int item = tid; item < n_seq * tp->heads; item += nt)
            attend(tp, item / tp->heads, item % tp->heads, last, prob);
        barrier_wait(bar);
        int r = last ? n_seq : rows;
        linear_run(&L->o, tp->h, w, r, tp->x, w, CLIP_GEMM_F32, -1, 1, tid, nt);
        barrier_wait(bar);
        layernorm_rows(tp->x, r, w, L->ln2_w, L->ln2_b, tp->eps, tp->h, dt, tid, nt);
        barrier_wait(bar);
        linear_run(&L->fc1, tp->h, w, r, tp->m, tp->inter, dt, tp->act, 0, tid, nt);
        barrier_wait(bar);
        linear_run(&L->fc2, tp->m, tp->inter, r, tp->x, w, CLIP_GEMM_F32, -1, 1, tid, nt);
        barrier_wait(bar);
    }
    layernorm_rows(tp->x, n_seq, w, txt->final_ln_w, txt->final_ln_b, tp->eps, tp->pooled,
                   CLIP_GEMM_F32, tid, nt);
    barrier_wait(bar);
    linear_run(&tp->proj, tp->pooled, w, n_seq, tp->out, tp->d, CLIP_GEMM_F32, -1, 0, tid, nt);
}

/* Busy machines (issue 11 item 4). The pass meets ~85 times at barriers; if
 * a helper thread has no core of its own, every meeting waits for the
 * scheduler to give it one back and a 4 ms text takes 15. So before a pass
 * look at the kernel's count of runnable tasks (/proc/loadavg, field 4,
 * which counts this thread too): when fewer than nt - 1 CPUs are left for
 * the helpers, run the pass on the calling thread alone (about 1.6x the
 * two-thread time on an idle machine, far less than a stalled team).
 * IMS_TEXT_ADAPTIVE=0 in the environment turns this off (benchmarks);
 * IMS_TEXT_ADAPTIVE=alone makes the check always see a busy machine (tests of
 * the alone path). clip__textpass_alone_passes counts the passes run alone. */
atomic_long clip__textpass_alone_passes;

int clip__textpass_has_team(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

#ifdef _OPENMP
static int cpus_contended(int nt)
{
    const char *e = getenv("IMS_TEXT_ADAPTIVE"); /* read per pass: bench_text_busy flips it */
    if (e && e[0] == '0')
        return 0;
    if (e && strcmp(e, "alone") == 0)
        return 1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f)
        return 0;
    double l1, l5, l15;
    int running = 0, total = 0;
    int got = fscanf(f, "%lf %lf %lf %d/%d", &l1, &l5, &l15, &running, &total);
    fclose(f);
    if (got != 5)
        return 0;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1)
        online = 1;
    return (long)(running - 1) > online - nt; /* others running + our helpers > CPUs */
}
#endif

void clip__textpass_encode(struct clip_textpass *tp, int n_seq, const int32_t *const *ids, const int *lens,
                     float *const *outs)
{
    IMS_ASSERT(n_seq >= 1 && n_seq <= CLIP_TEXTPASS_MAX_ROWS);
    tp->n_seq = n_seq;
    tp->ids = ids;
    tp->seq_start[0] = 0;
    for (int s = 0; s < n_seq; s++)
        tp->seq_start[s + 1] = tp->seq_start[s] + lens[s];
    tp->rows = tp->seq_start[n_seq];
    IMS_ASSERT(tp->rows <= CLIP_TEXTPASS_MAX_ROWS);
#ifdef _OPENMP
    int nt = tp->n_threads;
    if (nt > 1 && !cpus_contended(nt)) {
#pragma omp parallel num_threads(nt)
        {
            int got = omp_get_num_threads(), tid = omp_get_thread_num();
            if (got == nt) {
                pass(tp, tid, nt);
            } else if (tid == 0) { /* a smaller team than asked: run alone */
                atomic_fetch_add(&clip__textpass_alone_passes, 1);
                tp->bar.n = 1;
                pass(tp, 0, 1);
                tp->bar.n = nt;
            }
        }
    } else { /* one thread, or the helper would have no CPU: run alone */
        atomic_fetch_add(&clip__textpass_alone_passes, 1);
        tp->bar.n = 1;
        pass(tp, 0, 1);
        tp->bar.n = nt;
    }
#else
    atomic_fetch_add(&clip__textpass_alone_passes, 1);
    pass(tp, 0, 1);
#endif
    for (int s = 0; s < n_seq; s++)
        memcpy(outs[s], tp->out + (size_t)s * tp->d, (size_t)tp->d * sizeof(float));
}

/* ---- life ---------------------------------------------------------------------------- */

void clip__textpass_free(struct clip_textpass *tp)
{
    if (!tp)
        return;
    if (tp->layers)
        for (int l = 0; l < tp->n_layers; l++) {
            linear_free(&tp->layers[l].qkv);
            linear_free(&tp->layers[l].o);
            linear_free(&tp->layers[l].fc1);
            linear_free(&tp->layers[l].fc2);
        }
    ims_free(tp->layers);
    linear_free(&tp->proj);
    free(tp->arena);
    ims_free(tp->x);
    ims_free(tp->qkv);
    ims_free(tp->h);
    ims_free(tp->m);
    ims_free(tp->pooled);
    ims_free(tp->out);
    ims_free(tp->probs);
    ims_free(tp);
}

static void *buf(struct clip_textpass *tp, size_t bytes, int *failed)
{
    void *p = ims_aligned_alloc(64, bytes ? bytes : 64);
    if (!p)
        *failed = 1;
    tp->bytes += bytes;
    return p;
}

enum ims_status clip__textpass_new(const struct clip_config *c, const struct clip_text_weights *tw,
                             enum clip_gemm_dt dt, int n_threads, struct clip_textpass **out,
                             struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!clip__textpass_supported(c, dt), err, IMS_ERR_INVALID,
                        "text pass: not supported on this CPU or for this model");
    const struct clip_tower_config *t = &c->text;
    enum ims_status st = IMS_OK;
    struct clip_textpass *tp = ims_calloc(1, sizeof(*tp));
    if (!tp)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory (text pass)");
    tp->tw = tw;
    tp->w = t->hidden_size;
    tp->inter = t->intermediate_size;
    tp->heads = t->num_attention_heads;
    tp->hd = tp->w / tp->heads;
    tp->n_layers = t->num_hidden_layers;
    tp->d = c->projection_dim;
    tp->ctx_len = t->max_position_embeddings;
    tp->act = t->hidden_act;
    tp->eps = t->layer_norm_eps;
    tp->dt = dt;
    tp->n_threads = n_threads < 1 ? 1 : n_threads;
#ifndef _OPENMP
    tp->n_threads = 1;
#endif
    tp->bar.n = tp->n_threads;
    atomic_init(&tp->bar.arrived, 0);
    atomic_init(&tp->bar.generation, 0);
    tp->layers = ims_calloc((size_t)tp->n_layers, sizeof(*tp->layers));
    if (!tp->layers) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory (text pass)");
        goto out;
    }
    int w = tp->w, inter = tp->inter;
    size_t es_w = dt == CLIP_GEMM_BF16 ? 2 : 4;
    size_t per_layer = ((size_t)4 * w * w + (size_t)2 * w * inter) * es_w + 4 * 64;
    if (arena_new(tp, per_layer * (size_t)tp->n_layers + (size_t)tp->d * w * 4 + 64) != 0) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory (text weights)");
        goto out;
    }
    float *wqkv = ims_malloc((size_t)3 * w * w * sizeof(float));
    float *bqkv = ims_malloc((size_t)3 * w * sizeof(float));
    if (!wqkv || !bqkv) {
        ims_free(wqkv);
        ims_free(bqkv);
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory (text pass)");
        goto out;
    }
    for (int l = 0; l < tp->n_layers && st == IMS_OK; l++) {
        const struct clip_layer_weights *lw = &tw->layers[l];
        struct tp_layer *L = &tp->layers[l];
        L->ln1_w = lw->ln1_w;
        L->ln1_b = lw->ln1_b;
        L->ln2_w = lw->ln2_w;
        L->ln2_b = lw->ln2_b;
        clip__forward_stack_qkv(lw, w, wqkv, bqkv);
        if ((st = linear_pack(tp, wqkv, bqkv, 3 * w, w, dt, &L->qkv, err)) != IMS_OK ||
            (st = linear_pack(tp, lw->o_w, lw->o_b, w, w, dt, &L->o, err)) != IMS_OK ||
            (st = linear_pack(tp, lw->fc1_w, lw->fc1_b, inter, w, dt, &L->fc1, err)) != IMS_OK)
            break;
        st = linear_pack(tp, lw->fc2_w, lw->fc2_b, w, inter, dt, &L->fc2, err);
    }
    ims_free(wqkv);
    ims_free(bqkv);
    if (st != IMS_OK)
        goto out;
    if ((st = linear_pack(tp, tw->projection, NULL, tp->d, w, CLIP_GEMM_F32, &tp->proj, err)) != IMS_OK)
        goto out;
    size_t R = CLIP_TEXTPASS_MAX_ROWS, es = dt == CLIP_GEMM_F32 ? 4 : 2;
    int failed = 0;
    tp->x = buf(tp, R * w * sizeof(float), &failed);
    tp->qkv = buf(tp, R * 3 * w * sizeof(float), &failed);
    tp->h = buf(tp, R * w * es, &failed);
    tp->m = buf(tp, R * inter * es, &failed);
    tp->pooled = buf(tp, R * w * sizeof(float), &failed);
    tp->out = buf(tp, R * tp->d * sizeof(float), &failed);
    tp->probs = buf(tp, (size_t)tp->n_threads * tp->ctx_len * sizeof(float), &failed);
    if (failed) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory (text pass activations)");
        goto out;
    }
    *out = tp;
    tp = NULL;
out:
    clip__textpass_free(tp);
    return st;
}

size_t clip__textpass_bytes(const struct clip_textpass *tp)
{
    return tp ? tp->bytes : 0;
}

#else /* not x86: never supported, so never created */

enum ims_status clip__textpass_new(const struct clip_config *c, const struct clip_text_weights *tw,
                             enum clip_gemm_dt dt, int n_threads, struct clip_textpass **out,
                             struct ims_error *err)
{
    (void)c, (void)tw, (void)dt, (void)n_threads, (void)out;
    return ims_error_set(err, IMS_ERR_INVALID, "text pass: not supported on this CPU");
}
void clip__textpass_free(struct clip_textpass *tp) { (void)tp; }
size_t clip__textpass_bytes(const struct clip_textpass *tp) { (void)tp; return 0; }
void clip__textpass_encode(struct clip_textpass *tp, int n_seq, const int32_t *const *ids, const int *lens,
                     float *const *outs)
{
    (void)tp, (void)n_seq, (void)ids, (void)lens, (void)outs;
}

#endif
