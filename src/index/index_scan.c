/* SPDX-License-Identifier: MIT */
/*
 * index_scan.c: the exact-scan kernels and the int8 pre-scan (quantisation,
 * kernels, error bounds). The top-k heap the callers keep is index_topk.c.
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
 * what makes the fp16 scan + fp32 re-score path exact (see vindex_exact.c).
 *
 * Multi-query kernels (index__dot_*_multi): several concurrent queries share
 * one read of the rows. Once a block of rows is scored against a whole batch
 * the work is no longer memory bound, so these are register-tiled like a
 * small GEMM: a tile of TR rows x TQ queries keeps 2 accumulators per
 * (row, query) pair in registers, so each loaded row vector feeds TQ FMAs and
 * each query vector TR. Each pair's accumulators see exactly the operations
 * of the one-query kernel of the family, in the same order (same block
 * split, same tail, same reduction, the tails shared as helpers), so a
 * batched score is bit-identical to the same query scored alone: batching
 * never changes an answer.
 *
 * int8 pre-scan (Flat): each row x keeps codes c = round(x / a) in
 * [-127, 127] with a = max|x_i| / 127, and rho >= ||x - a c|| + gamma_d ||x||
 * (gamma_d = d u / (1 - d u), u = 2^-24). A query q becomes qs = round(q S)
 * in int16, S = 2^e as large as int16 and an int32 sum over d products of
 * 127 * max|qs| allow; e_q = q - qs / S. With D = qs . c (exact, int32):
 *   q.x = a D / S + q.(x - a c) + a e_q.c, so
 *   |s - a D / S| <= ||q|| rho + ||e_q|| max||a c||
 * for the fp32 kernel's score s of any family (Higham's bound, any
 * summation order: |s - q.x| <= gamma_d ||q|| ||x||). A = fl(fl(fl(D) a)/S)
 * errs by <= 2.0001 u |A| (two roundings; 1/S is a power of two), so
 *   B = qc rho + kc |A| + ec,  qc >= ||q|| (1 + 2^-20),  kc = 2^-21 = 8u,
 *   ec >= (||e_q|| max||a c|| + 2^-100) (1 + 2^-20)
 * evaluated in float (at most 3 roundings, each <= u: covered by the 2^-20
 * slack) satisfies B (1 - u) >= |s - A| + u |A|, which makes the float
 * sums fl(A - B) <= s <= fl(A + B) (each addition errs by u |A + -B|).
 * 2^-100 covers underflow (d * 2^-149 at most in the fp32 sums). Norms are
 * computed in double and inflated by 1 + 2^-30 (> d 2^-53 for d <= 65536),
 * then rounded up to float. Queries or rows whose norms exceed 2^60 are
 * refused (fp32 scan): nothing above can then overflow. The proof that the
 * bounds give the exact top k is in vindex_i8.c and docs/internals/index.md.
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

void index__f32_to_f16(const float *x, uint16_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = f32_to_f16_one(x[i]);
}

/* ---- portable kernels --------------------------------------------------- */

/* One row's score; the one-query and the multi-query kernels both call these,
 * so a pair's operation order is the same in both. */
static inline float dot_row_f32_scalar(const float *q, const float *x, int dim)
{
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
    return (s0 + s1) + (s2 + s3);
}

static inline float dot_row_f16_scalar(const float *q, const uint16_t *x, int dim)
{
    float s0 = 0, s1 = 0;
    int i = 0;
    for (; i + 2 <= dim; i += 2) {
        s0 += q[i] * ims_f16_to_f32(x[i]);
        s1 += q[i + 1] * ims_f16_to_f32(x[i + 1]);
    }
    for (; i < dim; i++)
        s0 += q[i] * ims_f16_to_f32(x[i]);
    return s0 + s1;
}

static void dot_f32_scalar(const float *q, const float *rows, size_t n, int dim, float *out)
{
    for (size_t r = 0; r < n; r++)
        out[r] = dot_row_f32_scalar(q, rows + r * (size_t)dim, dim);
}

static void dot_f16_scalar(const float *q, const uint16_t *rows, size_t n, int dim, float *out)
{
    for (size_t r = 0; r < n; r++)
        out[r] = dot_row_f16_scalar(q, rows + r * (size_t)dim, dim);
}

/* The portable fallback keeps the one-read-per-row property (a row is
 * scored against every query while it is in L1) without register tiling. */
static void dot_f32_multi_scalar(const float *qs, int nq, const float *rows, size_t n, int dim,
                                 float *out, size_t out_stride)
{
    for (size_t r = 0; r < n; r++)
        for (int j = 0; j < nq; j++)
            out[(size_t)j * out_stride + r] =
                dot_row_f32_scalar(qs + (size_t)j * (size_t)dim, rows + r * (size_t)dim, dim);
}

static void dot_f16_multi_scalar(const float *qs, int nq, const uint16_t *rows, size_t n, int dim,
                                 float *out, size_t out_stride)
{
    for (size_t r = 0; r < n; r++)
        for (int j = 0; j < nq; j++)
            out[(size_t)j * out_stride + r] =
                dot_row_f16_scalar(qs + (size_t)j * (size_t)dim, rows + r * (size_t)dim, dim);
}

/* ---- int8 pre-scan: quantisation, bounds, portable kernels --------------- */

/* The smallest float >= v (v >= 0 finite, or +inf beyond the float range). */
static float round_up_f(double v)
{
    float f = (float)v;
    if ((double)f < v)
        f = nextafterf(f, INFINITY);
    return f;
}

/* Relative inflation of every double-precision norm: a sum of d <= 65536
 * squares rounds by at most d 2^-53 < 2^-36 relative, the square root by
 * 2^-53, so 2^-30 covers both with room to spare. */
#define I8_NORM_SLACK (1.0 + 0x1p-30)

/* The quantisation of one row, split so that each kernel family can do the
 * bulk: the largest |x_i|, then for a given scale a the codes
 * round(x_i / a) clamped to [-127, 127] and three sums of squares: the
 * residuals x_i - a t_i, the x_i and the a t_i. Whatever the family, the
 * codes are the same (one double multiplication by 1/a, rounding to nearest
 * even, clamping) and the sums are sums of exact squares in double. */
struct i8_sums {
    double rr, xx, cc;
};

static float maxabs_scalar(const float *x, int dim)
{
    /* four independent maxima: one running max is a chain of dependent
     * compares */
    float m[4] = {0, 0, 0, 0};
    int i = 0;
    for (; i + 4 <= dim; i += 4)
        for (int j = 0; j < 4; j++)
            m[j] = fabsf(x[i + j]) > m[j] ? fabsf(x[i + j]) : m[j];
    for (; i < dim; i++)
        m[0] = fabsf(x[i]) > m[0] ? fabsf(x[i]) : m[0];
    return IMS_MAX(IMS_MAX(m[0], m[1]), IMS_MAX(m[2], m[3]));
}

/* Codes and sums of x[from..dim) into codes[from..dim) and *s. */
static void quantize_tail(const float *x, int from, int dim, int8_t *codes, float a,
                          struct i8_sums *s)
{
    double inv = a > 0 ? 1.0 / (double)a : 0;
    for (int i = from; i < dim; i++) {
        /* 1.5 2^52: adding and subtracting it rounds |t| < 2^51 to the
         * nearest integer (ties to even) in plain double arithmetic */
        double t = ((double)x[i] * inv + 6755399441055744.0) - 6755399441055744.0;
        t = t > 127 ? 127 : (t < -127 ? -127 : t);
        codes[i] = (int8_t)t;
        double c = (double)a * t, e = (double)x[i] - c;
        s->rr += e * e;
        s->xx += (double)x[i] * x[i];
        s->cc += c * c;
    }
}

static void quantize_scalar(const float *x, int dim, int8_t *codes, float a, struct i8_sums *s)
{
    quantize_tail(x, 0, dim, codes, a, s);
}

int index__i8_query_init(const float *q, int dim, float max_norm, float max_code_norm, int16_t *qs,
                         struct index__i8_query *p)
{
    size_t stride = index__i8_stride(dim);
    double qq = 0, mq = 0;
    for (int i = 0; i < dim; i++) {
        qq += (double)q[i] * q[i];
        mq = fabs((double)q[i]) > mq ? fabs((double)q[i]) : mq;
    }
    double qn = sqrt(qq) * I8_NORM_SLACK;
    /* Far from every float limit: no bound, score or product below can
     * overflow. Real embeddings have norms near 1. */
    if (!(qn <= 0x1p60) || !((double)max_norm * qn <= 0x1p60) || !(max_code_norm <= 0x1p60f))
        return 0;
    /* The largest code allowed: 32767 (int16), and dim * max|qs| * 127 <
     * 2^31 so that no int32 partial sum can overflow. */
    int64_t m16 = ((int64_t)1 << 31) / (127 * (int64_t)dim);
    m16 = m16 > 32767 ? 32767 : m16;
    int e = 0;
    if (mq > 0) {
        frexp((double)m16 / mq, &e); /* m16 / mq in [2^(e-1), 2^e) */
        e -= 1;
        e = e > 100 ? 100 : e; /* tiny queries: a coarser S keeps 1/S normal */
        while (e > -100 && mq * ldexp(1.0, e) > (double)m16)
            e--; /* the division rounded up */
    }
    double sc = ldexp(1.0, e), ee = 0;
    for (int i = 0; i < dim; i++) {
        double t = nearbyint((double)q[i] * sc); /* q_i S is exact: S = 2^e */
        qs[i] = (int16_t)t;
        double err = (double)q[i] - t / sc; /* exact, see the row residual */
        ee += err * err;
    }
    for (size_t i = (size_t)dim; i < stride; i++)
        qs[i] = 0;
    double en = sqrt(ee) * I8_NORM_SLACK;
    p->qs = qs;
    p->inv_s = (float)ldexp(1.0, -e);
    /* 2^-20 of slack covers the (at most three) float roundings of B. */
    p->qc = round_up_f(qn * (1 + 0x1p-20));
    p->ec = round_up_f((en * (double)max_code_norm + 0x1p-100) * (1 + 0x1p-20));
    p->kc = 0x1p-21f;
    return 1;
}

static void dot_i8_scalar(const int16_t *q, const int8_t *rows, size_t n, size_t stride,
                          int32_t *out)
{
    for (size_t r = 0; r < n; r++) {
        const int8_t *x = rows + r * stride;
        int32_t s = 0; /* |partial sums| < 2^31 by the choice of S */
        for (size_t i = 0; i < stride; i++)
            s += (int32_t)q[i] * (int32_t)x[i];
        out[r] = s;
    }
}

/* The multi-query form for families without a tiled kernel: blocks of 32
 * rows (16 KB at d = 512) stay in L1 while each query is scored. */
static void dot_i8_multi_blocks(index__dot_i8_fn one, const int16_t *qs, int nq,
                                const int8_t *rows, size_t n, size_t stride, int32_t *out,
                                size_t out_stride)
{
    for (size_t b = 0; b < n; b += 32)
        for (int j = 0; j < nq; j++)
            one(qs + (size_t)j * stride, rows + b * stride, IMS_MIN((size_t)32, n - b), stride,
                out + (size_t)j * out_stride + b);
}

static size_t i8_select_scalar(const struct index__i8_query *p, const int32_t *dot,
                               const float *scale, const float *rho, size_t n, float thr,
                               uint32_t *sel, float *lower, float *upper)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        float a = (float)dot[i] * scale[i] * p->inv_s;
        float b = p->qc * rho[i] + (p->kc * fabsf(a) + p->ec);
        float up = a + b;
        if (up >= thr) {
            sel[m] = (uint32_t)i;
            lower[m] = a - b;
            upper[m] = up;
            m++;
        }
    }
    return m;
}

#if INDEX_X86

/* Rows per block of a multi-query kernel: a block (~16 KB) stays in L1 while
 * it is scored against every query tile; at least one row tile. */
static size_t block_rows(size_t row_bytes, size_t tile_rows)
{
    size_t r = (16384 / row_bytes) / tile_rows * tile_rows;
    return r < tile_rows ? tile_rows : r;
}

/* Software prefetch of the next block, spread over the tiles of the current
 * one: batched, the hardware prefetcher alone left the memory time on top
 * of the compute time (measured on 100k x 512 fp32: 2 queries 12.5 -> 8.2
 * ms, 4 queries 15.2 -> 9.0 ms per pass). */
struct prefetch {
    const char *p, *end;
    size_t step; /* cache lines per tile call */
};

static inline void prefetch_block(struct prefetch *pf, const void *next, size_t next_bytes,
                                  size_t n_calls)
{
    pf->p = next;
    pf->end = pf->p + next_bytes;
    pf->step = (next_bytes / 64) / (n_calls ? n_calls : 1) + 1;
}

static inline void prefetch_some(struct prefetch *pf)
{
    for (size_t k = 0; k < pf->step && pf->p < pf->end; k++, pf->p += 64)
        __builtin_prefetch(pf->p, 0, 3);
}

/* One multi-query sweep over a block for a query tile of QN queries: row
 * tiles of R rows, then single rows. Expects qj, xb, nb, d, dim, oj,
 * out_stride and pf in scope. */
#define INDEX_TILE_SWEEP(tile, R, QN)                                                              \
    do {                                                                                           \
        size_t r_ = 0;                                                                             \
        for (; r_ + (R) <= nb; r_ += (R)) {                                                        \
            tile(qj, QN, xb + r_ * d, R, dim, oj + r_, out_stride);                                \
            prefetch_some(&pf);                                                                    \
        }                                                                                          \
        for (; r_ < nb; r_++)                                                                      \
            tile(qj, QN, xb + r_ * d, 1, dim, oj + r_, out_stride);                                \
    } while (0)

/* The driver of a multi-query kernel: blocks of rows, query tiles of TQ
 * (the last one narrower), row tiles of TR; `elem` is the row element type. */
#define INDEX_MULTI_DRIVER(tile, elem, TR, TQ)                                                     \
    do {                                                                                           \
        _Static_assert((TQ) >= 1 && (TQ) <= 6, "query tile of 1..6");                              \
        const size_t d = (size_t)dim, rb = block_rows(d * sizeof(elem), TR);                       \
        struct prefetch pf;                                                                        \
        for (size_t b = 0; b < n; b += rb) {                                                       \
            size_t nb = IMS_MIN(rb, n - b);                                                        \
            const elem *xb = rows + b * d;                                                         \
            size_t nb_next = IMS_MIN(rb, n - b - nb);                                              \
            prefetch_block(&pf, xb + nb * d, nb_next * d * sizeof(elem),                           \
                           (size_t)((nq + TQ - 1) / TQ) * (nb / TR));                              \
            for (int j = 0; j < nq; j += TQ) {                                                     \
                const float *qj = qs + (size_t)j * d;                                              \
                float *oj = out + (size_t)j * out_stride + b;                                      \
                switch (IMS_MIN(TQ, nq - j)) { /* case k runs only if k <= TQ */                   \
                case 6:                                                                            \
                    INDEX_TILE_SWEEP(tile, TR, IMS_MIN(6, TQ));                                    \
                    break;                                                                         \
                case 5:                                                                            \
                    INDEX_TILE_SWEEP(tile, TR, IMS_MIN(5, TQ));                                    \
                    break;                                                                         \
                case 4:                                                                            \
                    INDEX_TILE_SWEEP(tile, TR, IMS_MIN(4, TQ));                                    \
                    break;                                                                         \
                case 3:                                                                            \
                    INDEX_TILE_SWEEP(tile, TR, IMS_MIN(3, TQ));                                    \
                    break;                                                                         \
                case 2:                                                                            \
                    INDEX_TILE_SWEEP(tile, TR, 2);                                                 \
                    break;                                                                         \
                default:                                                                           \
                    INDEX_TILE_SWEEP(tile, TR, 1);                                                 \
                    break;                                                                         \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* ---- AVX2 + FMA (+F16C) ------------------------------------------------- */

__attribute__((target("avx2,fma"))) static float hsum256(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The scalar tails, shared by the one- and the multi-query kernels. */
__attribute__((target("avx2,fma"))) static inline float
tail_f32_avx2(const float *q, const float *x, int i, int dim, float s)
{
    for (; i < dim; i++)
        s += q[i] * x[i];
    return s;
}

__attribute__((target("avx2,fma,f16c"))) static inline float
tail_f16_avx2(const float *q, const uint16_t *x, int i, int dim, float s)
{
    for (; i < dim; i++)
        s += q[i] * ims_f16_to_f32(x[i]);
    return s;
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
        out[r] = tail_f32_avx2(q, x, i, dim, hsum256(_mm256_add_ps(a0, a1)));
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
        out[r] = tail_f16_avx2(q, x, i, dim, hsum256(_mm256_add_ps(a0, a1)));
    }
}

/* AVX2 tiles: 2 rows x 3 queries = 12 of the 16 ymm registers accumulate
 * (the query vectors come from L1 as FMA memory operands). */
#define T2_R 2
#define T2_Q 3

__attribute__((target("avx2,fma"), always_inline)) static inline void
tile_f32_avx2(const float *qs, int nq, const float *x, int nr, int dim, float *out,
              size_t out_stride)
{
    const size_t d = (size_t)dim;
    __m256 a0[T2_R][T2_Q], a1[T2_R][T2_Q];
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++) {
#pragma GCC unroll 8
        for (int j = 0; j < nq; j++)
            a0[r][j] = a1[r][j] = _mm256_setzero_ps();
    }
    int i = 0;
    for (; i + 16 <= dim; i += 16) {
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) {
            __m256 x0 = _mm256_loadu_ps(x + r * d + i), x1 = _mm256_loadu_ps(x + r * d + i + 8);
#pragma GCC unroll 8
            for (int j = 0; j < nq; j++) {
                a0[r][j] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(qs + j * d + i), a0[r][j]);
                a1[r][j] = _mm256_fmadd_ps(x1, _mm256_loadu_ps(qs + j * d + i + 8), a1[r][j]);
            }
        }
    }
    if (i + 8 <= dim) {
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) {
            __m256 x0 = _mm256_loadu_ps(x + r * d + i);
#pragma GCC unroll 8
            for (int j = 0; j < nq; j++)
                a0[r][j] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(qs + j * d + i), a0[r][j]);
        }
        i += 8;
    }
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++) {
#pragma GCC unroll 8
        for (int j = 0; j < nq; j++) {
            float s = hsum256(_mm256_add_ps(a0[r][j], a1[r][j]));
            out[j * out_stride + (size_t)r] = tail_f32_avx2(qs + j * d, x + r * d, i, dim, s);
        }
    }
}

__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
tile_f16_avx2(const float *qs, int nq, const uint16_t *x, int nr, int dim, float *out,
              size_t out_stride)
{
    const size_t d = (size_t)dim;
    __m256 a0[T2_R][T2_Q], a1[T2_R][T2_Q];
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++) {
#pragma GCC unroll 8
        for (int j = 0; j < nq; j++)
            a0[r][j] = a1[r][j] = _mm256_setzero_ps();
    }
    int i = 0;
    for (; i + 16 <= dim; i += 16) {
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) {
            __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + r * d + i)));
            __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + r * d + i + 8)));
#pragma GCC unroll 8
            for (int j = 0; j < nq; j++) {
                a0[r][j] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(qs + j * d + i), a0[r][j]);
                a1[r][j] = _mm256_fmadd_ps(x1, _mm256_loadu_ps(qs + j * d + i + 8), a1[r][j]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++) {
#pragma GCC unroll 8
        for (int j = 0; j < nq; j++) {
            float s = hsum256(_mm256_add_ps(a0[r][j], a1[r][j]));
            out[j * out_stride + (size_t)r] = tail_f16_avx2(qs + j * d, x + r * d, i, dim, s);
        }
    }
}

__attribute__((target("avx2,fma"))) static void dot_f32_multi_avx2(const float *qs, int nq,
                                                                   const float *rows, size_t n,
                                                                   int dim, float *out,
                                                                   size_t out_stride)
{
    INDEX_MULTI_DRIVER(tile_f32_avx2, float, T2_R, T2_Q);
}

__attribute__((target("avx2,fma,f16c"))) static void
dot_f16_multi_avx2(const float *qs, int nq, const uint16_t *rows, size_t n, int dim, float *out,
                   size_t out_stride)
{
    INDEX_MULTI_DRIVER(tile_f16_avx2, uint16_t, T2_R, T2_Q);
}

/* ---- AVX-512F ------------------------------------------------------------ */

__attribute__((target("avx512f"))) static inline float
tail_f16_avx512(const float *q, const uint16_t *x, int i, int dim, float s)
{
    for (; i < dim; i++)
        s += q[i] * ims_f16_to_f32(x[i]);
    return s;
}

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
        out[r] = tail_f16_avx512(q, x, i, dim, _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)));
    }
}

/* AVX-512 tiles: 2 rows x 4 queries. 16 accumulators, the tile's 8 query
 * vectors of the step and 2 row vectors: 26 of the 32 zmm registers. The
 * empty asm pins the query vectors in registers: compilers otherwise fold
 * each query load into every FMA that uses it (a memory operand per FMA),
 * and the tile becomes load bound (measured: 44 -> 65 GFMA/s from L2). */
#define T5_R 2
#define T5_Q 4

__attribute__((target("avx512f"), always_inline)) static inline void
tile_f32_avx512(const float *qs, int nq, const float *x, int nr, int dim, float *out,
                size_t out_stride)
{
    const size_t d = (size_t)dim;
    __m512 a0[T5_R][T5_Q], a1[T5_R][T5_Q];
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++) {
#pragma GCC unroll 8
        for (int j = 0; j < nq; j++)
            a0[r][j] = a1[r][j] = _mm512_setzero_ps();
    }
    int i = 0;
    for (; i + 32 <= dim; i += 32) {
        __m512 q0[T5_Q], q1[T5_Q];
#pragma GCC unroll 8
        for (int j = 0; j < nq; j++) {
            q0[j] = _mm512_loadu_ps(qs + j * d + i);
            q1[j] = _mm512_loadu_ps(qs + j * d + i + 16);
            __asm__("" : "+v"(q0[j]), "+v"(q1[j]));
        }
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) {
            __m512 x0 = _mm512_loadu_ps(x + r * d + i), x1 = _mm512_loadu_ps(x + r * d + i + 16);
#pragma GCC unroll 8
            for (int j = 0; j < nq; j++) {
                a0[r][j] = _mm512_fmadd_ps(x0, q0[j], a0[r][j]);
                a1[r][j] = _mm512_fmadd_ps(x1, q1[j], a1[r][j]);
            }
        }
    }
    if (i + 16 <= dim) {
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) {
            __m512 x0 = _mm512_loadu_ps(x + r * d + i);
#pragma GCC unroll 8
            for (int j = 0; j < nq; j++)
                a0[r][j] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(qs + j * d + i), a0[r][j]);
        }
        i += 16;
    }
    if (i < dim) {
        __mmask16 m = (__mmask16)((1u << (dim - i)) - 1);
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) {
            __m512 x0 = _mm512_maskz_loadu_ps(m, x + r * d + i);
#pragma GCC unroll 8
            for (int j = 0; j < nq; j++)
                a1[r][j] = _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(m, qs + j * d + i), a1[r][j]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++) {
#pragma GCC unroll 8
        for (int j = 0; j < nq; j++)
            out[j * out_stride + (size_t)r] =
                _mm512_reduce_add_ps(_mm512_add_ps(a0[r][j], a1[r][j]));
    }
}

__attribute__((target("avx512f"), always_inline)) static inline void
tile_f16_avx512(const float *qs, int nq, const uint16_t *x, int nr, int dim, float *out,
                size_t out_stride)
{
    const size_t d = (size_t)dim;
    __m512 a0[T5_R][T5_Q], a1[T5_R][T5_Q];
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++) {
#pragma GCC unroll 8
        for (int j = 0; j < nq; j++)
            a0[r][j] = a1[r][j] = _mm512_setzero_ps();
    }
    int i = 0;
    for (; i + 32 <= dim; i += 32) {
        __m512 q0[T5_Q], q1[T5_Q];
#pragma GCC unroll 8
        for (int j = 0; j < nq; j++) {
            q0[j] = _mm512_loadu_ps(qs + j * d + i);
            q1[j] = _mm512_loadu_ps(qs + j * d + i + 16);
            __asm__("" : "+v"(q0[j]), "+v"(q1[j]));
        }
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) {
            __m512 x0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + r * d + i)));
            __m512 x1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + r * d + i + 16)));
#pragma GCC unroll 8
            for (int j = 0; j < nq; j++) {
                a0[r][j] = _mm512_fmadd_ps(x0, q0[j], a0[r][j]);
                a1[r][j] = _mm512_fmadd_ps(x1, q1[j], a1[r][j]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++) {
#pragma GCC unroll 8
        for (int j = 0; j < nq; j++) {
            float s = _mm512_reduce_add_ps(_mm512_add_ps(a0[r][j], a1[r][j]));
            out[j * out_stride + (size_t)r] = tail_f16_avx512(qs + j * d, x + r * d, i, dim, s);
        }
    }
}

__attribute__((target("avx512f"))) static void dot_f32_multi_avx512(const float *qs, int nq,
                                                                    const float *rows, size_t n,
                                                                    int dim, float *out,
                                                                    size_t out_stride)
{
    INDEX_MULTI_DRIVER(tile_f32_avx512, float, T5_R, T5_Q);
}

__attribute__((target("avx512f"))) static void dot_f16_multi_avx512(const float *qs, int nq,
                                                                    const uint16_t *rows, size_t n,
                                                                    int dim, float *out,
                                                                    size_t out_stride)
{
    INDEX_MULTI_DRIVER(tile_f16_avx512, uint16_t, T5_R, T5_Q);
}

/* ---- int8 pre-scan kernels ------------------------------------------------ */

/* One row at a time, in storage order, with two accumulators: 64 codes per
 * step are sign-extended to int16 and multiplied by the query's int16
 * vectors with pairwise int32 sums (madd, or VNNI's dpwssd). Integer sums
 * are exact, so every family gives the same dots. Measured on 100k x 512
 * codes after a 256 MB sweep (cold caches, as after a text encode), one
 * core: 1.6 ms this way; 2.1 ms two rows at a time with a software prefetch
 * 8 KB ahead (which wins, 0.94 ms, only when the codes are still in L3:
 * the hardware prefetcher follows one stream best). */

/* acc += pairwise(codes[i..i+16) * q[i..i+16)) */
#define I8_MADD256(acc, x, i)                                                                      \
    acc = _mm256_add_epi32(                                                                        \
        acc, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)((x) + (i)))), \
                               _mm256_loadu_si256((const __m256i *)(q + (i)))))

__attribute__((target("avx2"))) static void dot_i8_avx2(const int16_t *q, const int8_t *rows,
                                                        size_t n, size_t stride, int32_t *out)
{
    for (size_t r = 0; r < n; r++) {
        const int8_t *x = rows + r * stride;
        __m256i a0 = _mm256_setzero_si256(), a1 = a0;
        for (size_t i = 0; i < stride; i += 32) {
            I8_MADD256(a0, x, i);
            I8_MADD256(a1, x, i + 16);
        }
        __m256i t = _mm256_add_epi32(a0, a1);
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(1, 0, 3, 2)));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(2, 3, 0, 1)));
        out[r] = _mm_cvtsi128_si32(h);
    }
}

/* The AVX-512 body, with ACC(acc, x16, q16) the multiply-accumulate. */
#define I8_CVT512(p) _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p)))
#define I8_AVX512_BODY(ACC)                                                                        \
    do {                                                                                           \
        for (size_t r = 0; r < n; r++) {                                                           \
            const int8_t *x = rows + r * stride;                                                   \
            __m512i a0 = _mm512_setzero_si512(), a1 = a0;                                          \
            for (size_t i = 0; i < stride; i += 64) {                                              \
                a0 = ACC(a0, I8_CVT512(x + i), _mm512_loadu_si512(q + i));                         \
                a1 = ACC(a1, I8_CVT512(x + i + 32), _mm512_loadu_si512(q + i + 32));               \
            }                                                                                      \
            out[r] = _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1));                            \
        }                                                                                          \
    } while (0)
#define I8_ACC_BW(acc, x16, q16) _mm512_add_epi32(acc, _mm512_madd_epi16(x16, q16))
#define I8_ACC_VNNI(acc, x16, q16) _mm512_dpwssd_epi32(acc, x16, q16)

__attribute__((target("avx512f,avx512bw"))) static void
dot_i8_avx512bw(const int16_t *q, const int8_t *rows, size_t n, size_t stride, int32_t *out)
{
    I8_AVX512_BODY(I8_ACC_BW);
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void
dot_i8_avx512vnni(const int16_t *q, const int8_t *rows, size_t n, size_t stride, int32_t *out)
{
    I8_AVX512_BODY(I8_ACC_VNNI);
}

/* Several queries against the same rows (coalesced searches): a row is
 * sign-extended once per step and multiplied by up to 8 queries' vectors
 * (16 accumulators), the queries' sums reduced four at a time. Once a batch
 * shares the read, the pass is bound by arithmetic, and this halves it
 * against one query at a time over rows in cache. */
#define I8_TQ 8

#define I8_TILE_BODY(ACC)                                                                          \
    do {                                                                                           \
        __m512i a0[I8_TQ], a1[I8_TQ];                                                              \
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) a0[t] = a1[t] = _mm512_setzero_si512(); \
        for (size_t i = 0; i < stride; i += 64) {                                                  \
            __m512i x0 = I8_CVT512(x + i), x1 = I8_CVT512(x + i + 32);                             \
            _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {                                 \
                a0[t] = ACC(a0[t], x0, _mm512_loadu_si512(qs + (size_t)t * stride + i));           \
                a1[t] = ACC(a1[t], x1, _mm512_loadu_si512(qs + (size_t)t * stride + i + 32));      \
            }                                                                                      \
        }                                                                                          \
        __m512i z = _mm512_setzero_si512(), sum[I8_TQ + 3];                                        \
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) sum[t] = _mm512_add_epi32(a0[t], a1[t]); \
        _Pragma("GCC unroll 8") for (int t = nt; t < I8_TQ + 3; t++) sum[t] = z;                   \
        for (int g = 0; g < nt; g += 4) {                                                          \
            int32_t v[4];                                                                          \
            _mm_storeu_si128((__m128i *)v, reduce4_512(sum[g], sum[g + 1], sum[g + 2], sum[g + 3])); \
            for (int k = 0; k < 4 && g + k < nt; k++)                                              \
                out[(size_t)(g + k) * out_stride] = v[k];                                          \
        }                                                                                          \
    } while (0)

__attribute__((target("avx512f,avx512bw"))) static inline __m128i
reduce4_512(__m512i a0, __m512i a1, __m512i a2, __m512i a3)
{
    __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(a0, a1), _mm512_unpackhi_epi32(a0, a1));
    __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(a2, a3), _mm512_unpackhi_epi32(a2, a3));
    __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
    __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(t), _mm512_extracti64x4_epi64(t, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* One row x nt (1..8) queries: out[t * out_stride] = qs_t . x. */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline void
tile_i8_bw(const int16_t *qs, int nt, const int8_t *x, size_t stride, int32_t *out,
           size_t out_stride)
{
    I8_TILE_BODY(I8_ACC_BW);
}

__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline void
tile_i8_vnni(const int16_t *qs, int nt, const int8_t *x, size_t stride, int32_t *out,
             size_t out_stride)
{
    I8_TILE_BODY(I8_ACC_VNNI);
}

#define I8_MULTI_DRIVER(tile)                                                                      \
    do {                                                                                           \
        for (size_t r = 0; r < n; r++) {                                                           \
            const int8_t *x = rows + r * stride;                                                   \
            for (int j = 0; j < nq; j += I8_TQ) {                                                  \
                const int16_t *qj = qs + (size_t)j * stride;                                       \
                int32_t *o = out + (size_t)j * out_stride + r;                                     \
                switch (IMS_MIN(I8_TQ, nq - j)) {                                                  \
                case 8: tile(qj, 8, x, stride, o, out_stride); break;                              \
                case 7: tile(qj, 7, x, stride, o, out_stride); break;                              \
                case 6: tile(qj, 6, x, stride, o, out_stride); break;                              \
                case 5: tile(qj, 5, x, stride, o, out_stride); break;                              \
                case 4: tile(qj, 4, x, stride, o, out_stride); break;                              \
                case 3: tile(qj, 3, x, stride, o, out_stride); break;                              \
                case 2: tile(qj, 2, x, stride, o, out_stride); break;                              \
                default: tile(qj, 1, x, stride, o, out_stride); break;                             \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    } while (0)

__attribute__((target("avx512f,avx512bw"))) static void
dot_i8_multi_bw(const int16_t *qs, int nq, const int8_t *rows, size_t n, size_t stride,
                int32_t *out, size_t out_stride)
{
    I8_MULTI_DRIVER(tile_i8_bw);
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void
dot_i8_multi_vnni(const int16_t *qs, int nq, const int8_t *rows, size_t n, size_t stride,
                  int32_t *out, size_t out_stride)
{
    I8_MULTI_DRIVER(tile_i8_vnni);
}

/* Quantisation, 8 (AVX2) or 16 (AVX-512) components at a time: the same
 * double operations as quantize_tail, so the same codes. */
__attribute__((target("avx2"))) static float maxabs_avx2(const float *x, int dim)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m0 = _mm256_setzero_ps(), m1 = m0;
    int i = 0;
    for (; i + 16 <= dim; i += 16) {
        m0 = _mm256_max_ps(m0, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
        m1 = _mm256_max_ps(m1, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i + 8)));
    }
    float v[8], m = maxabs_scalar(x + i, dim - i);
    _mm256_storeu_ps(v, _mm256_max_ps(m0, m1));
    for (int j = 0; j < 8; j++)
        m = v[j] > m ? v[j] : m;
    return m;
}

__attribute__((target("avx2,fma"))) static void quantize_avx2(const float *x, int dim,
                                                              int8_t *codes, float a,
                                                              struct i8_sums *s)
{
    const __m256d inv = _mm256_set1_pd(a > 0 ? 1.0 / (double)a : 0), va = _mm256_set1_pd(a),
                  lo = _mm256_set1_pd(-127), hi = _mm256_set1_pd(127);
    __m256d rr = _mm256_setzero_pd(), xx = rr, cc = rr;
    int i = 0;
    for (; i + 4 <= dim; i += 4) {
        __m256d xd = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        __m256d t = _mm256_round_pd(_mm256_mul_pd(xd, inv),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        t = _mm256_min_pd(_mm256_max_pd(t, lo), hi);
        __m256d c = _mm256_mul_pd(va, t), e = _mm256_sub_pd(xd, c);
        rr = _mm256_fmadd_pd(e, e, rr);
        xx = _mm256_fmadd_pd(xd, xd, xx);
        cc = _mm256_fmadd_pd(c, c, cc);
        __m128i t32 = _mm256_cvtpd_epi32(t); /* integers in [-127, 127]: exact */
        int32_t packed = _mm_cvtsi128_si32(_mm_packs_epi16(_mm_packs_epi32(t32, t32), t32));
        memcpy(codes + i, &packed, 4);
    }
    double v[3][4];
    _mm256_storeu_pd(v[0], rr);
    _mm256_storeu_pd(v[1], xx);
    _mm256_storeu_pd(v[2], cc);
    s->rr += (v[0][0] + v[0][1]) + (v[0][2] + v[0][3]);
    s->xx += (v[1][0] + v[1][1]) + (v[1][2] + v[1][3]);
    s->cc += (v[2][0] + v[2][1]) + (v[2][2] + v[2][3]);
    quantize_tail(x, i, dim, codes, a, s);
}

__attribute__((target("avx512f"))) static float maxabs_avx512(const float *x, int dim)
{
    __m512 m0 = _mm512_setzero_ps(), m1 = m0;
    int i = 0;
    for (; i + 32 <= dim; i += 32) {
        m0 = _mm512_max_ps(m0, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
        m1 = _mm512_max_ps(m1, _mm512_abs_ps(_mm512_loadu_ps(x + i + 16)));
    }
    float m = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1)), t = maxabs_scalar(x + i, dim - i);
    return t > m ? t : m;
}

__attribute__((target("avx512f"))) static void quantize_avx512(const float *x, int dim,
                                                               int8_t *codes, float a,
                                                               struct i8_sums *s)
{
    const __m512d inv = _mm512_set1_pd(a > 0 ? 1.0 / (double)a : 0), va = _mm512_set1_pd(a),
                  lo = _mm512_set1_pd(-127), hi = _mm512_set1_pd(127);
    __m512d rr = _mm512_setzero_pd(), xx = rr, cc = rr;
    int i = 0;
    for (; i + 16 <= dim; i += 16) {
        __m256i t32[2];
        for (int h = 0; h < 2; h++) {
            __m512d xd = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8 * h));
            __m512d t = _mm512_roundscale_pd(_mm512_mul_pd(xd, inv),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            t = _mm512_min_pd(_mm512_max_pd(t, lo), hi);
            __m512d c = _mm512_mul_pd(va, t), e = _mm512_sub_pd(xd, c);
            rr = _mm512_fmadd_pd(e, e, rr);
            xx = _mm512_fmadd_pd(xd, xd, xx);
            cc = _mm512_fmadd_pd(c, c, cc);
            t32[h] = _mm512_cvtpd_epi32(t); /* integers in [-127, 127]: exact */
        }
        __m512i t16 = _mm512_inserti64x4(_mm512_castsi256_si512(t32[0]), t32[1], 1);
        _mm_storeu_si128((__m128i *)(codes + i), _mm512_cvtepi32_epi8(t16));
    }
    s->rr += _mm512_reduce_add_pd(rr);
    s->xx += _mm512_reduce_add_pd(xx);
    s->cc += _mm512_reduce_add_pd(cc);
    quantize_tail(x, i, dim, codes, a, s);
}

/* Selection, 8 or 16 rows at a time. Most rows fail the threshold: one
 * compare per vector and nothing written. */
__attribute__((target("avx2,fma"))) static size_t
i8_select_avx2(const struct index__i8_query *p, const int32_t *dot, const float *scale,
               const float *rho, size_t n, float thr, uint32_t *sel, float *lower, float *upper)
{
    const __m256 vinv = _mm256_set1_ps(p->inv_s), vqc = _mm256_set1_ps(p->qc),
                 vkc = _mm256_set1_ps(p->kc), vec = _mm256_set1_ps(p->ec),
                 vthr = _mm256_set1_ps(thr), sign = _mm256_set1_ps(-0.0f);
    size_t m = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(dot + i)));
        a = _mm256_mul_ps(_mm256_mul_ps(a, _mm256_loadu_ps(scale + i)), vinv);
        __m256 b = _mm256_fmadd_ps(vqc, _mm256_loadu_ps(rho + i),
                                   _mm256_fmadd_ps(vkc, _mm256_andnot_ps(sign, a), vec));
        __m256 up = _mm256_add_ps(a, b);
        int mask = _mm256_movemask_ps(_mm256_cmp_ps(up, vthr, _CMP_GE_OQ));
        if (mask) {
            float lo_v[8], up_v[8];
            _mm256_storeu_ps(lo_v, _mm256_sub_ps(a, b));
            _mm256_storeu_ps(up_v, up);
            for (; mask; mask &= mask - 1) {
                int j = __builtin_ctz((unsigned)mask);
                sel[m] = (uint32_t)(i + (size_t)j);
                lower[m] = lo_v[j];
                upper[m] = up_v[j];
                m++;
            }
        }
    }
    if (i < n) {
        size_t t = i8_select_scalar(p, dot + i, scale + i, rho + i, n - i, thr, sel + m,
                                    lower + m, upper + m);
        for (size_t j = 0; j < t; j++)
            sel[m + j] += (uint32_t)i;
        m += t;
    }
    return m;
}

__attribute__((target("avx512f"))) static size_t
i8_select_avx512(const struct index__i8_query *p, const int32_t *dot, const float *scale,
                 const float *rho, size_t n, float thr, uint32_t *sel, float *lower, float *upper)
{
    const __m512 vinv = _mm512_set1_ps(p->inv_s), vqc = _mm512_set1_ps(p->qc),
                 vkc = _mm512_set1_ps(p->kc), vec = _mm512_set1_ps(p->ec),
                 vthr = _mm512_set1_ps(thr);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    size_t m = 0;
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 live = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 a = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(live, dot + i));
        a = _mm512_mul_ps(_mm512_mul_ps(a, _mm512_maskz_loadu_ps(live, scale + i)), vinv);
        __m512 b = _mm512_fmadd_ps(vqc, _mm512_maskz_loadu_ps(live, rho + i),
                                   _mm512_fmadd_ps(vkc, _mm512_abs_ps(a), vec));
        __m512 up = _mm512_add_ps(a, b);
        __mmask16 k = _mm512_mask_cmp_ps_mask(live, up, vthr, _CMP_GE_OQ);
        if (k) {
            /* compress in registers, then plain stores of the first
             * popcount lanes: compress-to-memory is microcoded on some
             * cores */
            int c = __builtin_popcount((unsigned)k);
            __mmask16 out = (__mmask16)((1u << c) - 1);
            __m512i idx = _mm512_add_epi32(lane, _mm512_set1_epi32((int)i));
            _mm512_mask_storeu_epi32(sel + m, out, _mm512_maskz_compress_epi32(k, idx));
            _mm512_mask_storeu_ps(lower + m, out,
                                  _mm512_maskz_compress_ps(k, _mm512_sub_ps(a, b)));
            _mm512_mask_storeu_ps(upper + m, out, _mm512_maskz_compress_ps(k, up));
            m += (size_t)c;
        }
    }
    return m;
}

#endif /* INDEX_X86 */

/* ---- dispatch ------------------------------------------------------------ */

typedef void (*dot_f32_fn)(const float *, const float *, size_t, int, float *);
typedef void (*dot_f16_fn)(const float *, const uint16_t *, size_t, int, float *);
typedef void (*dot_f32_multi_fn)(const float *, int, const float *, size_t, int, float *, size_t);
typedef void (*dot_f16_multi_fn)(const float *, int, const uint16_t *, size_t, int, float *,
                                 size_t);
typedef size_t (*i8_select_fn)(const struct index__i8_query *, const int32_t *, const float *,
                               const float *, size_t, float, uint32_t *, float *, float *);

static struct {
    const char *isa;
    dot_f32_fn f32;
    dot_f16_fn f16;
    dot_f32_multi_fn f32m;
    dot_f16_multi_fn f16m;
    const char *i8_isa;
    index__dot_i8_fn i8;
    index__dot_i8_multi_fn i8m; /* NULL: dot_i8_multi_blocks over i8 */
    i8_select_fn i8sel;
    float (*maxabs)(const float *, int);
    void (*quant)(const float *, int, int8_t *, float, struct i8_sums *);
} g_kern = {"scalar",         dot_f32_scalar,   dot_f16_scalar, dot_f32_multi_scalar,
            dot_f16_multi_scalar, "scalar",    dot_i8_scalar,  NULL, i8_select_scalar,
            maxabs_scalar,  quantize_scalar};
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

index__dot_i8_fn index__dot_i8_kernel(const char *name)
{
    if (strcmp(name, "scalar") == 0)
        return dot_i8_scalar;
#if INDEX_X86
    __builtin_cpu_init();
    if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2"))
        return dot_i8_avx2;
    if (strcmp(name, "avx512bw") == 0 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw"))
        return dot_i8_avx512bw;
    if (strcmp(name, "avx512vnni") == 0 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni"))
        return dot_i8_avx512vnni;
#endif
    return NULL;
}

index__dot_i8_multi_fn index__dot_i8_multi_kernel(const char *name)
{
#if INDEX_X86
    index__dot_i8_fn one = index__dot_i8_kernel(name);
    if (one && one == dot_i8_avx512vnni)
        return dot_i8_multi_vnni;
    if (one && one == dot_i8_avx512bw)
        return dot_i8_multi_bw;
#endif
    (void)name;
    return NULL;
}

/* The int8 kernel for a family: the best one at most as wide as it. */
static void set_i8(const char *isa)
{
    static const char *const order[] = {"avx512vnni", "avx512bw", "avx2", "scalar"};
    size_t first = strcmp(isa, "avx512") == 0 ? 0 : (strcmp(isa, "avx2") == 0 ? 2 : 3);
    for (size_t i = first; i < IMS_ARRAY_LEN(order); i++) {
        index__dot_i8_fn f = index__dot_i8_kernel(order[i]);
        if (f) {
            g_kern.i8_isa = order[i];
            g_kern.i8 = f;
            g_kern.i8m = index__dot_i8_multi_kernel(order[i]);
            return;
        }
    }
}

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
        g_kern.f32m = dot_f32_multi_avx512;
        g_kern.f16m = dot_f16_multi_avx512;
        g_kern.i8sel = i8_select_avx512;
        g_kern.maxabs = maxabs_avx512;
        g_kern.quant = quantize_avx512;
        set_i8(isa);
        return;
    }
    if (strcmp(isa, "avx2") == 0) {
        g_kern.isa = "avx2";
        g_kern.f32 = dot_f32_avx2;
        g_kern.f16 = dot_f16_avx2;
        g_kern.f32m = dot_f32_multi_avx2;
        g_kern.f16m = dot_f16_multi_avx2;
        g_kern.i8sel = i8_select_avx2;
        g_kern.maxabs = maxabs_avx2;
        g_kern.quant = quantize_avx2;
        set_i8(isa);
        return;
    }
#endif
    g_kern.isa = "scalar";
    g_kern.f32 = dot_f32_scalar;
    g_kern.f16 = dot_f16_scalar;
    g_kern.f32m = dot_f32_multi_scalar;
    g_kern.f16m = dot_f16_multi_scalar;
    g_kern.i8sel = i8_select_scalar;
    g_kern.maxabs = maxabs_scalar;
    g_kern.quant = quantize_scalar;
    set_i8("scalar");
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

void index__i8_quantize_row(const float *x, int dim, int8_t *codes, float *scale, float *rho,
                            float *code_norm)
{
    pthread_once(&g_once, pick_best);
    size_t stride = index__i8_stride(dim);
    float m = g_kern.maxabs(x, dim);
    float a = (float)((double)m / 127.0);
    if (m > 0 && a == 0)
        a = 0x1p-149f; /* m / 127 underflowed: any positive scale will do */
    struct i8_sums s = {0, 0, 0};
    g_kern.quant(x, dim, codes, a, &s);
    memset(codes + dim, 0, stride - (size_t)dim);
    /* gamma_d: the worst relative error of an fp32 dot product of d terms,
     * whatever the summation order and with or without FMA (Higham, Accuracy
     * and Stability of Numerical Algorithms, 2nd ed., section 3.1). */
    double d_u = dim * 0x1p-24, gamma = d_u / (1 - d_u);
    double r = sqrt(s.rr) * I8_NORM_SLACK, xn = sqrt(s.xx) * I8_NORM_SLACK;
    *scale = a;
    *rho = round_up_f((r + gamma * xn) * I8_NORM_SLACK);
    *code_norm = round_up_f(sqrt(s.cc) * I8_NORM_SLACK);
}

const char *index__scan_i8_isa(void)
{
    pthread_once(&g_once, pick_best);
    return g_kern.i8_isa;
}

void index__dot_i8(const int16_t *qs, const int8_t *rows, size_t n, size_t stride, int32_t *out)
{
    pthread_once(&g_once, pick_best);
    g_kern.i8(qs, rows, n, stride, out);
}

void index__dot_i8_multi(const int16_t *qs, int nq, const int8_t *rows, size_t n, size_t stride,
                         int32_t *out, size_t out_stride)
{
    pthread_once(&g_once, pick_best);
    if (g_kern.i8m)
        g_kern.i8m(qs, nq, rows, n, stride, out, out_stride);
    else
        dot_i8_multi_blocks(g_kern.i8, qs, nq, rows, n, stride, out, out_stride);
}

size_t index__i8_select(const struct index__i8_query *p, const int32_t *dot, const float *scale,
                        const float *rho, size_t n, float thr, uint32_t *sel, float *lower,
                        float *upper)
{
    pthread_once(&g_once, pick_best);
    return g_kern.i8sel(p, dot, scale, rho, n, thr, sel, lower, upper);
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

void index__dot_f32_multi(const float *qs, int nq, const float *rows, size_t n, int dim, float *out,
                          size_t out_stride)
{
    pthread_once(&g_once, pick_best);
    g_kern.f32m(qs, nq, rows, n, dim, out, out_stride);
}

void index__dot_f16_multi(const float *qs, int nq, const uint16_t *rows, size_t n, int dim,
                          float *out, size_t out_stride)
{
    pthread_once(&g_once, pick_best);
    g_kern.f16m(qs, nq, rows, n, dim, out, out_stride);
}
