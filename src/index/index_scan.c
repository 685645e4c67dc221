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
        s0 += q[i] * index__f16_to_f32(x[i]);
        s1 += q[i + 1] * index__f16_to_f32(x[i + 1]);
    }
    for (; i < dim; i++)
        s0 += q[i] * index__f16_to_f32(x[i]);
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
        s += q[i] * index__f16_to_f32(x[i]);
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
        s += q[i] * index__f16_to_f32(x[i]);
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

#endif /* INDEX_X86 */

/* ---- dispatch ------------------------------------------------------------ */

typedef void (*dot_f32_fn)(const float *, const float *, size_t, int, float *);
typedef void (*dot_f16_fn)(const float *, const uint16_t *, size_t, int, float *);
typedef void (*dot_f32_multi_fn)(const float *, int, const float *, size_t, int, float *, size_t);
typedef void (*dot_f16_multi_fn)(const float *, int, const uint16_t *, size_t, int, float *,
                                 size_t);

static struct {
    const char *isa;
    dot_f32_fn f32;
    dot_f16_fn f16;
    dot_f32_multi_fn f32m;
    dot_f16_multi_fn f16m;
} g_kern = {"scalar", dot_f32_scalar, dot_f16_scalar, dot_f32_multi_scalar, dot_f16_multi_scalar};
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
        g_kern.f32m = dot_f32_multi_avx512;
        g_kern.f16m = dot_f16_multi_avx512;
        return;
    }
    if (strcmp(isa, "avx2") == 0) {
        g_kern.isa = "avx2";
        g_kern.f32 = dot_f32_avx2;
        g_kern.f16 = dot_f16_avx2;
        g_kern.f32m = dot_f32_multi_avx2;
        g_kern.f16m = dot_f16_multi_avx2;
        return;
    }
#endif
    g_kern.isa = "scalar";
    g_kern.f32 = dot_f32_scalar;
    g_kern.f16 = dot_f16_scalar;
    g_kern.f32m = dot_f32_multi_scalar;
    g_kern.f16m = dot_f16_multi_scalar;
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
