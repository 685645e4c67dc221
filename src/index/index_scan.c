/* SPDX-License-Identifier: MIT */
/*
 * index_scan.c: the exact-scan kernels and the top-k heap.
 *
 * Why our own scan: Debian's FAISS 1.7.3 is built for generic SIMD, so its
 * IndexFlatIP spends ~80 ms on one query over 200k x 512 vectors, while the
 * work is memory bound (400 MB of fp32 read once): one core with AVX-512
 * reads it in ~20 ms. The kernels here are written for that bound: each row's
 * dot product uses two vector accumulators (enough independent FMAs to keep
 * loads in flight), rows are visited in storage order so the hardware
 * prefetcher streams them, and the caller keeps the top k in a small heap
 * with a cheap "would it enter?" test, so almost every score is dropped after
 * one compare.
 *
 * Dispatch: the best family the CPU supports (AVX-512F, else AVX2+FMA+F16C,
 * else portable C) is picked once with __builtin_cpu_supports; each family's
 * functions are compiled with __attribute__((target(...))) so the rest of the
 * build stays baseline x86-64.
 *
 * Determinism: within one family, a row's fp32 score depends only on q and
 * the row (same operation order whatever n or the row's position), so an
 * fp32 re-score of a candidate equals its score in a full fp32 scan. That is
 * what makes the fp16 scan + fp32 re-score path exact (see vindex.c).
 */

#include "index_int.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define INDEX_X86 1
#else
#define INDEX_X86 0
#endif

/* ---- fp16 conversion ---------------------------------------------------- */

static uint16_t f32_to_f16_one(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf / nan */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) /* >= 65520 rounds to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: fp16 subnormal or zero */
        if (ax <= 0x33000000u) /* <= 2^-25: rounds to (even) zero */
            return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* value = m * 2^(e-150); unit 2^-24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t v = ax - 0x38000000u; /* exponent bias 127 -> 15 */
    uint32_t r = v >> 13, rem = v & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1)))
        r++; /* a carry into the exponent is the correct rounding */
    return (uint16_t)(sign | r);
}

float index__f16_to_f32(uint16_t h)
{
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t e = ((uint32_t)h >> 10) & 0x1fu, m = (uint32_t)h & 0x3ffu, bits;
    if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31)
        bits = sign | 0x7f800000u | (m << 13);
    else
        bits = sign | ((e + 112) << 23) | (m << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void index__f32_to_f16(const float *x, uint16_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = f32_to_f16_one(x[i]);
}

/* ---- portable kernels --------------------------------------------------- */

static void dot_f32_scalar(const float *q, const float *rows, size_t n, int dim, float *out)
{
    for (size_t r = 0; r < n; r++) {
        const float *x = rows + r * (size_t)dim;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int i = 0;
        for (; i + 4 <= dim; i += 4) {
            s0 += q[i] * x[i];
            s1 += q[i + 1] * x[i + 1];
            s2 += q[i + 2] * x[i + 2];
            s3 += q[i + 3] * x[i + 3];
        }
        for (; i < dim; i++)
            s0 += q[i] * x[i];
        out[r] = (s0 + s1) + (s2 + s3);
    }
}

static void dot_f16_scalar(const float *q, const uint16_t *rows, size_t n, int dim, float *out)
{
    for (size_t r = 0; r < n; r++) {
        const uint16_t *x = rows + r * (size_t)dim;
        float s0 = 0, s1 = 0;
        int i = 0;
        for (; i + 2 <= dim; i += 2) {
            s0 += q[i] * index__f16_to_f32(x[i]);
            s1 += q[i + 1] * index__f16_to_f32(x[i + 1]);
        }
        for (; i < dim; i++)
            s0 += q[i] * index__f16_to_f32(x[i]);
        out[r] = s0 + s1;
    }
}

#if INDEX_X86

/* ---- AVX2 + FMA (+F16C) ------------------------------------------------- */

__attribute__((target("avx2,fma"))) static float hsum256(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static void dot_f32_avx2(const float *q, const float *rows,
                                                              size_t n, int dim, float *out)
{
    for (size_t r = 0; r < n; r++) {
        const float *x = rows + r * (size_t)dim;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int i = 0;
        for (; i + 16 <= dim; i += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(q + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(q + i + 8), a1);
        }
        if (i + 8 <= dim) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(q + i), a0);
            i += 8;
        }
        float s = hsum256(_mm256_add_ps(a0, a1));
        for (; i < dim; i++)
            s += q[i] * x[i];
        out[r] = s;
    }
}

__attribute__((target("avx2,fma,f16c"))) static void
dot_f16_avx2(const float *q, const uint16_t *rows, size_t n, int dim, float *out)
{
    for (size_t r = 0; r < n; r++) {
        const uint16_t *x = rows + r * (size_t)dim;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int i = 0;
        for (; i + 16 <= dim; i += 16) {
            __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
            __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + 8)));
            a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(q + i), a0);
            a1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(q + i + 8), a1);
        }
        float s = hsum256(_mm256_add_ps(a0, a1));
        for (; i < dim; i++)
            s += q[i] * index__f16_to_f32(x[i]);
        out[r] = s;
    }
}

/* ---- AVX-512F ------------------------------------------------------------ */

__attribute__((target("avx512f"))) static void dot_f32_avx512(const float *q, const float *rows,
                                                               size_t n, int dim, float *out)
{
    for (size_t r = 0; r < n; r++) {
        const float *x = rows + r * (size_t)dim;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        int i = 0;
        for (; i + 32 <= dim; i += 32) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(q + i), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(q + i + 16), a1);
        }
        if (i + 16 <= dim) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(q + i), a0);
            i += 16;
        }
        if (i < dim) {
            __mmask16 m = (__mmask16)((1u << (dim - i)) - 1);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, q + i),
                                 a1);
        }
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    }
}

__attribute__((target("avx512f"))) static void dot_f16_avx512(const float *q, const uint16_t *rows,
                                                               size_t n, int dim, float *out)
{
    for (size_t r = 0; r < n; r++) {
        const uint16_t *x = rows + r * (size_t)dim;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        int i = 0;
        for (; i + 32 <= dim; i += 32) {
            __m512 x0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i)));
            __m512 x1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i + 16)));
            a0 = _mm512_fmadd_ps(x0, _mm512_loadu_ps(q + i), a0);
            a1 = _mm512_fmadd_ps(x1, _mm512_loadu_ps(q + i + 16), a1);
        }
        float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        for (; i < dim; i++)
            s += q[i] * index__f16_to_f32(x[i]);
        out[r] = s;
    }
}

#endif /* INDEX_X86 */

/* ---- dispatch ------------------------------------------------------------ */

typedef void (*dot_f32_fn)(const float *, const float *, size_t, int, float *);
typedef void (*dot_f16_fn)(const float *, const uint16_t *, size_t, int, float *);

static struct {
    const char *isa;
    dot_f32_fn f32;
    dot_f16_fn f16;
} g_kern = {"scalar", dot_f32_scalar, dot_f16_scalar};
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static int isa_supported(const char *isa)
{
    if (strcmp(isa, "scalar") == 0)
        return 1;
#if INDEX_X86
    __builtin_cpu_init();
    if (strcmp(isa, "avx2") == 0) {
        /* clang's __builtin_cpu_supports knows no "f16c": CPUID.1:ECX bit 29 */
        unsigned a, b, c, d;
        int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    }
    if (strcmp(isa, "avx512") == 0)
        return __builtin_cpu_supports("avx512f");
#endif
    return 0;
}

static void set_isa(const char *isa)
{
#if INDEX_X86
    if (strcmp(isa, "avx512") == 0) {
        g_kern.isa = "avx512";
        g_kern.f32 = dot_f32_avx512;
        g_kern.f16 = dot_f16_avx512;
        return;
    }
    if (strcmp(isa, "avx2") == 0) {
        g_kern.isa = "avx2";
        g_kern.f32 = dot_f32_avx2;
        g_kern.f16 = dot_f16_avx2;
        return;
    }
#endif
    g_kern.isa = "scalar";
    g_kern.f32 = dot_f32_scalar;
    g_kern.f16 = dot_f16_scalar;
}

static void pick_best(void)
{
    if (isa_supported("avx512"))
        set_isa("avx512");
    else if (isa_supported("avx2"))
        set_isa("avx2");
    else
        set_isa("scalar");
}

const char *index__scan_isa(void)
{
    pthread_once(&g_once, pick_best);
    return g_kern.isa;
}

int index__scan_force_isa(const char *isa)
{
    pthread_once(&g_once, pick_best);
    if (!isa) {
        pick_best();
        return 0;
    }
    if (!isa_supported(isa))
        return -1;
    set_isa(isa);
    return 0;
}

void index__dot_f32(const float *q, const float *rows, size_t n, int dim, float *out)
{
    pthread_once(&g_once, pick_best);
    g_kern.f32(q, rows, n, dim, out);
}

void index__dot_f16(const float *q, const uint16_t *rows, size_t n, int dim, float *out)
{
    pthread_once(&g_once, pick_best);
    g_kern.f16(q, rows, n, dim, out);
}

/* ---- top-k heap ------------------------------------------------------------ */

/* a is worse than b: lower score, or equal score and higher id. */
static int worse(float sa, int64_t ia, float sb, int64_t ib)
{
    return sa < sb || (sa == sb && ia > ib);
}

enum ims_status index__topk_init(struct index__topk *t, int k)
{
    t->k = k;
    t->n = 0;
    t->scores = ims_malloc(sizeof(float) * (size_t)k);
    t->ids = ims_malloc(sizeof(int64_t) * (size_t)k);
    if (!t->scores || !t->ids) {
        index__topk_fini(t);
        return IMS_ERR_NOMEM;
    }
    return IMS_OK;
}

void index__topk_fini(struct index__topk *t)
{
    ims_free(t->scores);
    ims_free(t->ids);
    t->scores = NULL;
    t->ids = NULL;
    t->n = 0;
}

static void sift_down(float *s, int64_t *id, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(s[l], id[l], s[m], id[m]))
            m = l;
        if (r < n && worse(s[r], id[r], s[m], id[m]))
            m = r;
        if (m == i)
            return;
        float ts = s[i];
        s[i] = s[m];
        s[m] = ts;
        int64_t ti = id[i];
        id[i] = id[m];
        id[m] = ti;
        i = m;
    }
}

void index__topk_push(struct index__topk *t, float score, int64_t id)
{
    if (t->n < t->k) {
        int i = t->n++;
        t->scores[i] = score;
        t->ids[i] = id;
        while (i > 0) { /* sift up: the worst stays at the root */
            int p = (i - 1) / 2;
            if (!worse(t->scores[i], t->ids[i], t->scores[p], t->ids[p]))
                break;
            float ts = t->scores[i];
            t->scores[i] = t->scores[p];
            t->scores[p] = ts;
            int64_t ti = t->ids[i];
            t->ids[i] = t->ids[p];
            t->ids[p] = ti;
            i = p;
        }
        return;
    }
    if (!worse(t->scores[0], t->ids[0], score, id))
        return;
    t->scores[0] = score;
    t->ids[0] = id;
    sift_down(t->scores, t->ids, t->n, 0);
}

void index__topk_sort(struct index__topk *t)
{
    /* Heap sort: repeatedly move the worst to the end; the array ends up best
     * first. */
    for (int n = t->n; n > 1; n--) {
        float ts = t->scores[0];
        t->scores[0] = t->scores[n - 1];
        t->scores[n - 1] = ts;
        int64_t ti = t->ids[0];
        t->ids[0] = t->ids[n - 1];
        t->ids[n - 1] = ti;
        sift_down(t->scores, t->ids, n - 1, 0);
    }
}
