/* SPDX-License-Identifier: MIT */
/*
 * index_graph.c: our own HNSW graph (Malkov & Yashunin, "Efficient and
 * robust approximate nearest neighbor search using Hierarchical Navigable
 * Small World graphs"): build in parallel on every core, incremental adds,
 * deletes as waypoints, serialisation with a complete validation on read.
 *
 * Why our own: FAISS's HNSW build (Debian's generic-SIMD distances) took
 * 806 s for 1M vectors of the hard set on 2 threads; the build is almost
 * all distance computations, which here are AVX-512 (or AVX2, or portable
 * C, picked at run time) over bf16 copies of the vectors: half the memory
 * traffic of fp32, and the walk's ranking only proposes candidates that
 * vindex re-scores exactly in fp32.
 *
 * Build (one insert): draw the node's level from a hash of its node id
 * (deterministic whatever the thread count), descend greedily from the
 * entry point through the levels above it, then on each of its levels run
 * the beam search of width efc, pick M neighbours with the paper's
 * heuristic (a candidate is kept unless an already kept neighbour is closer
 * to it than the new node is), link both ways, and shrink a neighbour's
 * full list with the same heuristic. Concurrency: the vectors, levels and
 * upper-level arrays of a whole add are written before any insert starts;
 * a node's link lists are written under one of 4096 striped mutexes, never
 * two at a time, and read without a lock (entries published before the
 * count that covers them: read_links); the entry point under its own
 * mutex. With one thread, the graph is a deterministic function of the
 * inserted vectors.
 *
 * Search: greedy descent, then the beam search of width ef on level 0 with
 * a per-search visited-tag array borrowed from a pool (no allocation per
 * search once warm). Deleted nodes are expanded like any other but never
 * enter the result set.
 */

#include "index_graph.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#define G_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#else
#define G_PREFETCH(p) ((void)(p))
#endif

int index__graph_threads = 0;

#define N_STRIPES 4096
#define POOL_MAX 64

struct gctx; /* per-thread scratch */

struct index__graph {
    int dim, dpad; /* dpad: dim rounded up to 32 (bf16 rows zero padded) */
    int m, m0, efc;
    double ml; /* level multiplier 1 / ln M */
    size_t n, cap, n_deleted;
    uint16_t *vec;   /* (cap, dpad) bf16, 64-byte aligned (grow_rows) */
    int32_t *links0; /* (cap, m0 + 1): count, then neighbours */
    int32_t **upper; /* (cap): NULL or (level, m + 1) for levels 1..level */
    uint8_t *level;  /* (cap) top level of the node */
    uint8_t *deleted;
    int64_t *labels;
    /* label -> newest live node, open addressing, -1 = empty */
    int64_t *hkeys;
    int32_t *hvals;
    size_t hcap;
    int32_t entry;
    int max_level;
    pthread_mutex_t entry_mu;
    pthread_mutex_t stripes[N_STRIPES];
    pthread_mutex_t pool_mu;
    struct gctx *pool[POOL_MAX];
    int n_pool;
};

/* ---- bf16 and the distance kernels ------------------------------------------------ */

/* ims_f32_to_bf16 / ims_bf16_to_f32 (base.h) convert. */

/* q: (dpad) fp32 zero padded; r: (dpad) bf16. dpad is a multiple of 32. */
typedef float (*dot_qb_fn)(const float *q, const uint16_t *r, int dpad);
typedef float (*dot_bb_fn)(const uint16_t *a, const uint16_t *b, int dpad);

/* a (fp32, or bf16 when a_bf16) . b (bf16), 8 lanes: the one body of
 * dot_qb_scalar and dot_bb_scalar (and the shape of the SIMD twins below). */
static inline float dot_scalar(const void *a, int a_bf16, const uint16_t *b, int dpad)
{
    const float *af = a;
    const uint16_t *ab = a;
    float acc[8] = {0};
    for (int i = 0; i < dpad; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += (a_bf16 ? ims_bf16_to_f32(ab[i + j]) : af[i + j]) * ims_bf16_to_f32(b[i + j]);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static float dot_qb_scalar(const float *q, const uint16_t *r, int dpad)
{
    return dot_scalar(q, 0, r, dpad);
}

static float dot_bb_scalar(const uint16_t *a, const uint16_t *b, int dpad)
{
    return dot_scalar(a, 1, b, dpad);
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static inline __m256 bf16x8_avx2(const uint16_t *p)
{
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

__attribute__((target("avx2,fma"))) static float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* a (fp32, or bf16 when a_bf16) . b (bf16): the one body of dot_qb_avx2 and
 * dot_bb_avx2 (a_bf16 is a constant in each, so each compiles to its own
 * loop). */
__attribute__((target("avx2,fma"))) static inline float dot_avx2(const void *a, int a_bf16,
                                                                 const uint16_t *b, int dpad)
{
    const float *af = a;
    const uint16_t *ab = a;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int i = 0; i < dpad; i += 16) {
        __m256 x0 = a_bf16 ? bf16x8_avx2(ab + i) : _mm256_loadu_ps(af + i);
        __m256 x1 = a_bf16 ? bf16x8_avx2(ab + i + 8) : _mm256_loadu_ps(af + i + 8);
        a0 = _mm256_fmadd_ps(x0, bf16x8_avx2(b + i), a0);
        a1 = _mm256_fmadd_ps(x1, bf16x8_avx2(b + i + 8), a1);
    }
    return hsum8(_mm256_add_ps(a0, a1));
}

__attribute__((target("avx2,fma"))) static float dot_qb_avx2(const float *q, const uint16_t *r,
                                                             int dpad)
{
    return dot_avx2(q, 0, r, dpad);
}

__attribute__((target("avx2,fma"))) static float dot_bb_avx2(const uint16_t *a, const uint16_t *b,
                                                             int dpad)
{
    return dot_avx2(a, 1, b, dpad);
}

__attribute__((target("avx512f"))) static inline __m512 bf16x16_avx512(const uint16_t *p)
{
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

/* dot_avx2's AVX-512 twin: the one body of dot_qb_avx512 and dot_bb_avx512. */
__attribute__((target("avx512f"))) static inline float dot_avx512(const void *a, int a_bf16,
                                                                  const uint16_t *b, int dpad)
{
    const float *af = a;
    const uint16_t *ab = a;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (int i = 0; i < dpad; i += 32) {
        __m512 x0 = a_bf16 ? bf16x16_avx512(ab + i) : _mm512_loadu_ps(af + i);
        __m512 x1 = a_bf16 ? bf16x16_avx512(ab + i + 16) : _mm512_loadu_ps(af + i + 16);
        a0 = _mm512_fmadd_ps(x0, bf16x16_avx512(b + i), a0);
        a1 = _mm512_fmadd_ps(x1, bf16x16_avx512(b + i + 16), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

__attribute__((target("avx512f"))) static float dot_qb_avx512(const float *q, const uint16_t *r,
                                                              int dpad)
{
    return dot_avx512(q, 0, r, dpad);
}

__attribute__((target("avx512f"))) static float dot_bb_avx512(const uint16_t *a, const uint16_t *b,
                                                              int dpad)
{
    return dot_avx512(a, 1, b, dpad);
}

/* AVX512_BF16: vdpbf16ps multiplies 32 bf16 pairs into 16 fp32 sums per
 * instruction; the query is rounded to bf16 once per walk (the walk only
 * proposes candidates, which vindex re-scores in fp32). */
__attribute__((target("avx512f,avx512bf16"))) static float dot_bb_avx512bf16(const uint16_t *a,
                                                                           const uint16_t *b,
                                                                           int dpad)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 64 <= dpad; i += 64) {
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(a + i),
                              (__m512bh)_mm512_loadu_si512(b + i));
        a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(a + i + 32),
                              (__m512bh)_mm512_loadu_si512(b + i + 32));
    }
    if (i < dpad) /* dpad is a multiple of 32 */
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(a + i),
                              (__m512bh)_mm512_loadu_si512(b + i));
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

/* dot_bb_avx512bf16 of one row `a` (the walk's query) against four rows at
 * once: the same chunks into the same accumulators in the same order, so
 * each score is bit-identical to dot_bb_avx512bf16's, but the four rows'
 * chains run side by side (8 independent accumulators instead of 2) and
 * the query chunk is loaded once for all four. The build's beam spends most
 * of its time here (bench/README-index.md). */
__attribute__((target("avx512f,avx512bf16"))) static void
dot4_bb_avx512bf16(const uint16_t *a, const uint16_t *const r[4], int dpad, float out[4])
{
    __m512 e0 = _mm512_setzero_ps(), e1 = _mm512_setzero_ps(), e2 = _mm512_setzero_ps(),
           e3 = _mm512_setzero_ps();
    __m512 o0 = _mm512_setzero_ps(), o1 = _mm512_setzero_ps(), o2 = _mm512_setzero_ps(),
           o3 = _mm512_setzero_ps();
    const uint16_t *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3];
    int i = 0;
    for (; i + 64 <= dpad; i += 64) {
        __m512bh qe = (__m512bh)_mm512_loadu_si512(a + i);
        __m512bh qo = (__m512bh)_mm512_loadu_si512(a + i + 32);
        e0 = _mm512_dpbf16_ps(e0, qe, (__m512bh)_mm512_loadu_si512(r0 + i));
        e1 = _mm512_dpbf16_ps(e1, qe, (__m512bh)_mm512_loadu_si512(r1 + i));
        e2 = _mm512_dpbf16_ps(e2, qe, (__m512bh)_mm512_loadu_si512(r2 + i));
        e3 = _mm512_dpbf16_ps(e3, qe, (__m512bh)_mm512_loadu_si512(r3 + i));
        o0 = _mm512_dpbf16_ps(o0, qo, (__m512bh)_mm512_loadu_si512(r0 + i + 32));
        o1 = _mm512_dpbf16_ps(o1, qo, (__m512bh)_mm512_loadu_si512(r1 + i + 32));
        o2 = _mm512_dpbf16_ps(o2, qo, (__m512bh)_mm512_loadu_si512(r2 + i + 32));
        o3 = _mm512_dpbf16_ps(o3, qo, (__m512bh)_mm512_loadu_si512(r3 + i + 32));
    }
    if (i < dpad) { /* dpad is a multiple of 32 */
        __m512bh qe = (__m512bh)_mm512_loadu_si512(a + i);
        e0 = _mm512_dpbf16_ps(e0, qe, (__m512bh)_mm512_loadu_si512(r0 + i));
        e1 = _mm512_dpbf16_ps(e1, qe, (__m512bh)_mm512_loadu_si512(r1 + i));
        e2 = _mm512_dpbf16_ps(e2, qe, (__m512bh)_mm512_loadu_si512(r2 + i));
        e3 = _mm512_dpbf16_ps(e3, qe, (__m512bh)_mm512_loadu_si512(r3 + i));
    }
    out[0] = _mm512_reduce_add_ps(_mm512_add_ps(e0, o0));
    out[1] = _mm512_reduce_add_ps(_mm512_add_ps(e1, o1));
    out[2] = _mm512_reduce_add_ps(_mm512_add_ps(e2, o2));
    out[3] = _mm512_reduce_add_ps(_mm512_add_ps(e3, o3));
}
#endif

static dot_qb_fn dot_qb = dot_qb_scalar;
static int query_bf16; /* the walk rounds its query to bf16 (dot_bb for both) */
static dot_bb_fn dot_bb = dot_bb_scalar;
/* Four rows against the walk's query (bf16); NULL: four dot_bb calls. */
typedef void (*dot4_bb_fn)(const uint16_t *a, const uint16_t *const r[4], int dpad, float out[4]);
static dot4_bb_fn dot4_bb;
static pthread_once_t kernels_once = PTHREAD_ONCE_INIT;

/* Follows the scan kernels' family (index__scan_isa, which tests can force). */
static void pick_kernels(void)
{
#if defined(__x86_64__)
    const char *isa = index__scan_isa();
    if (!strcmp(isa, "avx512")) {
        dot_qb = dot_qb_avx512;
        dot_bb = dot_bb_avx512;
        if (__builtin_cpu_supports("avx512bf16")) {
            dot_bb = dot_bb_avx512bf16;
            dot4_bb = dot4_bb_avx512bf16;
            query_bf16 = 1;
        }
        return;
    }
    if (!strcmp(isa, "avx2")) {
        dot_qb = dot_qb_avx2;
        dot_bb = dot_bb_avx2;
        return;
    }
#endif
    dot_qb = dot_qb_scalar;
    dot_bb = dot_bb_scalar;
    dot4_bb = NULL;
    query_bf16 = 0;
}

/* ---- spec ---------------------------------------------------------------------------- */

static int parse_uint(const char **p, int lo, int hi, int *out)
{
    long v = 0;
    const char *s = *p;
    if (*s < '0' || *s > '9')
        return -1;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s - '0');
        if (v > hi)
            return -1;
        s++;
    }
    if (v < lo)
        return -1;
    *p = s;
    *out = (int)v;
    return 0;
}

int index__graph_parse_spec(const char *spec, int *m, int *efc)
{
    if (!spec || strncmp(spec, "Graph", 5) != 0)
        return 0;
    const char *p = spec + 5;
    *m = INDEX_GRAPH_DEFAULT_M;
    *efc = INDEX_GRAPH_DEFAULT_EFC;
    if (*p >= '0' && *p <= '9' && parse_uint(&p, INDEX_GRAPH_MIN_M, INDEX_GRAPH_MAX_M, m) != 0)
        return -1;
    if (strncmp(p, ",efc", 4) == 0) {
        p += 4;
        if (parse_uint(&p, 8, 2048, efc) != 0)
            return -1;
    }
    return *p == 0 ? 1 : -1;
}

/* ---- per-thread scratch ------------------------------------------------------------- */

struct heap {
    float *s;
    int32_t *v;
    int n, cap;
};

struct gctx {
    uint16_t *tags; /* visited: tags[i] == epoch */
    size_t n_tags;
    uint16_t epoch;
    struct heap cand; /* max-heap: frontier */
    struct heap res;  /* min-heap: the ef best */
    float *q;         /* (dpad) padded query */
    uint16_t *qb;     /* (dpad) the same in bf16 (query_bf16) */
    int32_t *nb;      /* (m0 + 1) a copied link list */
    float *ts;        /* heuristic scratch: (m0 + 2 + efc) */
    int32_t *tv;
    int32_t *sel;
    int t_cap;
};

static int heap_reserve(struct heap *h, int cap)
{
    if (h->cap >= cap)
        return 0;
    float *s = ims_realloc(h->s, sizeof(float) * (size_t)cap);
    if (!s)
        return -1;
    h->s = s;
    int32_t *v = ims_realloc(h->v, sizeof(int32_t) * (size_t)cap);
    if (!v)
        return -1;
    h->v = v;
    h->cap = cap;
    return 0;
}

/* max = 1: max-heap; 0: min-heap. Room reserved by the caller. */
static void heap_push(struct heap *h, float s, int32_t v, int max)
{
    int i = h->n++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (max ? h->s[p] >= s : h->s[p] <= s)
            break;
        h->s[i] = h->s[p];
        h->v[i] = h->v[p];
        i = p;
    }
    h->s[i] = s;
    h->v[i] = v;
}

static void heap_pop(struct heap *h, int max)
{
    float ls = h->s[--h->n];
    int32_t lv = h->v[h->n];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, b = i;
        float bs = ls;
        if (l < h->n && (max ? h->s[l] > bs : h->s[l] < bs)) {
            b = l;
            bs = h->s[l];
        }
        if (r < h->n && (max ? h->s[r] > bs : h->s[r] < bs))
            b = r;
        if (b == i)
            break;
        h->s[i] = h->s[b];
        h->v[i] = h->v[b];
        i = b;
    }
    h->s[i] = ls;
    h->v[i] = lv;
}

static void gctx_free(struct gctx *c)
{
    if (!c)
        return;
    ims_free(c->tags);
    ims_free(c->cand.s);
    ims_free(c->cand.v);
    ims_free(c->res.s);
    ims_free(c->res.v);
    ims_free(c->q);
    ims_free(c->qb);
    ims_free(c->nb);
    ims_free(c->ts);
    ims_free(c->tv);
    ims_free(c->sel);
    ims_free(c);
}

/* Asks for transparent huge pages under a large array (Linux with THP in
 * "madvise" mode, the usual default, gives them only where asked): walks
 * and inserts read rows, link lists and visited tags at random all over
 * them, and with 4 KB pages nearly every row read missed the TLB (100 MB of
 * bf16 rows at 100k vectors, 1 GB at 1M). Advice only: failure changes
 * nothing. Pages touched before the advice stay small. */
static void advise_huge(void *p, size_t bytes)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t page = 4096, huge = (uintptr_t)2 << 20;
    if (!p || bytes < 2 * huge)
        return;
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t e = ((uintptr_t)p + bytes) & ~(page - 1);
    if (e > a)
        (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

/* Ready for a walk over g->n nodes with beam ef. */
static int gctx_prepare(struct index__graph *g, struct gctx *c, int ef)
{
    if (c->n_tags < g->n) {
        size_t want = g->cap > g->n ? g->cap : g->n;
        uint16_t *t = ims_calloc(want, sizeof *t);
        if (!t)
            return -1;
        advise_huge(t, want * sizeof *t);
        ims_free(c->tags);
        c->tags = t;
        c->n_tags = want;
        c->epoch = 0;
    }
    if (++c->epoch == 0) { /* wrapped: clear once every 65535 walks */
        memset(c->tags, 0, c->n_tags * sizeof *c->tags);
        c->epoch = 1;
    }
    int hcap = ef + g->m0 + 2;
    if (heap_reserve(&c->cand, hcap) || heap_reserve(&c->res, hcap))
        return -1;
    if (c->t_cap < hcap) {
        ims_free(c->ts);
        ims_free(c->tv);
        ims_free(c->sel);
        c->ts = ims_malloc(sizeof(float) * (size_t)hcap);
        c->tv = ims_malloc(sizeof(int32_t) * (size_t)hcap);
        c->sel = ims_malloc(sizeof(int32_t) * (size_t)hcap);
        c->t_cap = (c->ts && c->tv && c->sel) ? hcap : 0;
        if (!c->t_cap)
            return -1;
    }
    return 0;
}

static struct gctx *gctx_new(const struct index__graph *g)
{
    struct gctx *c = ims_calloc(1, sizeof *c);
    if (!c)
        return NULL;
    /* 64-byte aligned like the rows (grow_rows): no load of the kernels
     * straddles two cache lines; zero padding past dim */
    c->q = ims_aligned_alloc(64, (size_t)g->dpad * sizeof(float));
    c->qb = ims_aligned_alloc(64, (size_t)g->dpad * sizeof(uint16_t));
    if (c->q)
        memset(c->q, 0, (size_t)g->dpad * sizeof(float));
    if (c->qb)
        memset(c->qb, 0, (size_t)g->dpad * sizeof(uint16_t));
    c->nb = ims_malloc(sizeof(int32_t) * (size_t)(g->m0 + 1));
    if (!c->q || !c->qb || !c->nb) {
        gctx_free(c);
        return NULL;
    }
    return c;
}

static struct gctx *pool_get(struct index__graph *g)
{
    struct gctx *c = NULL;
    pthread_mutex_lock(&g->pool_mu);
    if (g->n_pool > 0)
        c = g->pool[--g->n_pool];
    pthread_mutex_unlock(&g->pool_mu);
    return c ? c : gctx_new(g);
}

static void pool_put(struct index__graph *g, struct gctx *c)
{
    pthread_mutex_lock(&g->pool_mu);
    if (g->n_pool < POOL_MAX) {
        g->pool[g->n_pool++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&g->pool_mu);
    gctx_free(c);
}

/* ---- creation ------------------------------------------------------------------------- */

enum ims_status index__graph_new(int dim, int m, int efc, struct index__graph **out)
{
    pthread_once(&kernels_once, pick_kernels);
    struct index__graph *g = ims_calloc(1, sizeof *g);
    if (!g)
        return IMS_ERR_NOMEM;
    g->dim = dim;
    g->dpad = (dim + 31) & ~31;
    g->m = m;
    g->m0 = 2 * m;
    g->efc = efc;
    g->ml = 1.0 / log((double)m);
    g->entry = -1;
    g->max_level = -1;
    pthread_mutex_init(&g->entry_mu, NULL);
    pthread_mutex_init(&g->pool_mu, NULL);
    for (int i = 0; i < N_STRIPES; i++)
        pthread_mutex_init(&g->stripes[i], NULL);
    *out = g;
    return IMS_OK;
}

void index__graph_free(struct index__graph *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++)
        ims_free(g->upper[i]);
    ims_free(g->upper);
    ims_free(g->vec);
    ims_free(g->links0);
    ims_free(g->level);
    ims_free(g->deleted);
    ims_free(g->labels);
    ims_free(g->hkeys);
    ims_free(g->hvals);
    for (int i = 0; i < g->n_pool; i++)
        gctx_free(g->pool[i]);
    pthread_mutex_destroy(&g->entry_mu);
    pthread_mutex_destroy(&g->pool_mu);
    for (int i = 0; i < N_STRIPES; i++)
        pthread_mutex_destroy(&g->stripes[i]);
    ims_free(g);
}

size_t index__graph_nodes(const struct index__graph *g) { return g->n; }
size_t index__graph_live(const struct index__graph *g) { return g->n - g->n_deleted; }
int index__graph_m(const struct index__graph *g) { return g->m; }

int64_t index__graph_label(const struct index__graph *g, size_t i, int *deleted)
{
    *deleted = g->deleted[i];
    return g->labels[i];
}

size_t index__graph_memory(const struct index__graph *g)
{
    size_t b = sizeof *g + g->cap * ((size_t)g->dpad * 2 + (size_t)(g->m0 + 1) * 4 +
                                     sizeof(int32_t *) + 2 + 8);
    for (size_t i = 0; i < g->n; i++)
        b += (size_t)g->level[i] * (size_t)(g->m + 1) * 4;
    return b + g->hcap * 12;
}

/* ---- label map ------------------------------------------------------------------------- */

static size_t hslot(const struct index__graph *g, int64_t label)
{
    uint64_t h = (uint64_t)label * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 20) & (g->hcap - 1);
}

/* Room for `want` labels at <= 50% load. */
static int hmap_reserve(struct index__graph *g, size_t want)
{
    if (want * 2 <= g->hcap)
        return 0;
    size_t cap = 1024;
    while (cap < want * 2)
        cap *= 2;
    int64_t *k = ims_malloc(cap * sizeof *k);
    int32_t *v = ims_malloc(cap * sizeof *v);
    if (!k || !v) {
        ims_free(k);
        ims_free(v);
        return -1;
    }
    for (size_t i = 0; i < cap; i++)
        k[i] = -1;
    int64_t *ok = g->hkeys;
    int32_t *ov = g->hvals;
    size_t ocap = g->hcap;
    g->hkeys = k;
    g->hvals = v;
    g->hcap = cap;
    for (size_t i = 0; i < ocap; i++) {
        if (ok[i] < 0)
            continue;
        size_t s = hslot(g, ok[i]);
        while (g->hkeys[s] >= 0)
            s = (s + 1) & (cap - 1);
        g->hkeys[s] = ok[i];
        g->hvals[s] = ov[i];
    }
    ims_free(ok);
    ims_free(ov);
    return 0;
}

/* Sets label -> node; returns the node it replaced, or -1. */
static int32_t hmap_put(struct index__graph *g, int64_t label, int32_t node)
{
    size_t s = hslot(g, label);
    while (g->hkeys[s] >= 0 && g->hkeys[s] != label)
        s = (s + 1) & (g->hcap - 1);
    int32_t old = g->hkeys[s] == label ? g->hvals[s] : -1;
    g->hkeys[s] = label;
    g->hvals[s] = node;
    return old;
}

static int32_t hmap_get(const struct index__graph *g, int64_t label)
{
    if (!g->hcap)
        return -1;
    size_t s = hslot(g, label);
    while (g->hkeys[s] >= 0) {
        if (g->hkeys[s] == label)
            return g->hvals[s];
        s = (s + 1) & (g->hcap - 1);
    }
    return -1;
}

/* Removes label (backward-shift deletion keeps probe chains whole). */
static void hmap_del(struct index__graph *g, int64_t label)
{
    size_t s = hslot(g, label);
    while (g->hkeys[s] >= 0 && g->hkeys[s] != label)
        s = (s + 1) & (g->hcap - 1);
    if (g->hkeys[s] < 0)
        return;
    size_t hole = s;
    for (;;) {
        s = (s + 1) & (g->hcap - 1);
        if (g->hkeys[s] < 0)
            break;
        size_t home = hslot(g, g->hkeys[s]);
        /* move s into the hole if its home is not in (hole, s] cyclically */
        int in_range = hole <= s ? (home > hole && home <= s) : (home > hole || home <= s);
        if (!in_range) {
            g->hkeys[hole] = g->hkeys[s];
            g->hvals[hole] = g->hvals[s];
            hole = s;
        }
    }
    g->hkeys[hole] = -1;
}

/* ---- storage ------------------------------------------------------------------------------ */

/* Moves the bf16 rows to a block of `cap` rows aligned to 64 bytes (2 MB
 * when large: whole huge pages), advised huge before the rows are copied in.
 * malloc's 16-byte offset made every 64-byte load of the kernels straddle
 * two cache lines (17 lines per 1 KB row). */
static int grow_rows(struct index__graph *g, size_t cap)
{
    size_t bytes = cap * (size_t)g->dpad * 2;
    size_t align = bytes >= ((size_t)4 << 20) ? ((size_t)2 << 20) : 64;
    uint16_t *nv = ims_aligned_alloc(align, bytes);
    if (!nv)
        return -1;
    advise_huge(nv, bytes);
    if (g->n)
        memcpy(nv, g->vec, g->n * (size_t)g->dpad * 2);
    ims_free(g->vec);
    g->vec = nv;
    return 0;
}

static int grow(void **p, size_t elem, size_t cap)
{
    void *np = ims_realloc(*p, elem * cap);
    if (!np)
        return -1;
    *p = np;
    return 0;
}

enum ims_status index__graph_reserve(struct index__graph *g, size_t n_more)
{
    size_t want = g->n + n_more;
    if (want > INT32_MAX)
        return IMS_ERR_NOMEM;
    if (want > g->cap) {
        size_t cap = g->cap ? g->cap : 1024;
        while (cap < want)
            cap = cap + cap / 2;
        if (cap > INT32_MAX)
            cap = INT32_MAX;
        if (grow_rows(g, cap) ||
            grow((void **)&g->links0, (size_t)(g->m0 + 1) * 4, cap) ||
            grow((void **)&g->upper, sizeof(int32_t *), cap) || grow((void **)&g->level, 1, cap) ||
            grow((void **)&g->deleted, 1, cap) || grow((void **)&g->labels, 8, cap))
            return IMS_ERR_NOMEM;
        g->cap = cap;
        advise_huge(g->links0, cap * (size_t)(g->m0 + 1) * 4);
    }
    if (hmap_reserve(g, want) != 0)
        return IMS_ERR_NOMEM;
    /* the upper levels of the new nodes are allocated in index__graph_add;
     * reserve their worst case now is too much, so draw them here */
    return IMS_OK;
}

static const uint16_t *vec_of(const struct index__graph *g, int32_t i)
{
    return g->vec + (size_t)i * (size_t)g->dpad;
}

/* The walk's score of node i against the query in c. */
static inline float qdot(const struct index__graph *g, const struct gctx *c, int32_t i)
{
    return query_bf16 ? dot_bb(c->qb, vec_of(g, i), g->dpad) : dot_qb(c->q, vec_of(g, i), g->dpad);
}

/* dot_bb of bf16 row a against the rows of nodes v[0..m) (1 <= m <= 4),
 * bit-identical to m dot_bb calls. */
static inline void dot_rows(const struct index__graph *g, const uint16_t *a, const int32_t *v,
                            int m, float *out)
{
    if (dot4_bb) {
        const uint16_t *r[4];
        for (int u = 0; u < 4; u++)
            r[u] = vec_of(g, v[u < m ? u : m - 1]); /* short group: repeat the last row */
        float s[4];
        dot4_bb(a, r, g->dpad, s);
        for (int u = 0; u < m; u++)
            out[u] = s[u];
        return;
    }
    for (int u = 0; u < m; u++)
        out[u] = dot_bb(a, vec_of(g, v[u]), g->dpad);
}

/* The walk's scores of nodes v[0..m) (1 <= m <= 4) against the query in c. */
static inline void qdot4(const struct index__graph *g, const struct gctx *c, const int32_t *v,
                         int m, float *out)
{
    if (query_bf16) {
        dot_rows(g, c->qb, v, m, out);
        return;
    }
    for (int u = 0; u < m; u++)
        out[u] = qdot(g, c, v[u]);
}

static void set_query(const struct index__graph *g, struct gctx *c, const float *q)
{
    memcpy(c->q, q, sizeof(float) * (size_t)g->dim);
    if (query_bf16)
        for (int d = 0; d < g->dim; d++)
            c->qb[d] = ims_f32_to_bf16(q[d]);
}

static int32_t *links_of(const struct index__graph *g, int32_t i, int l)
{
    return l == 0 ? g->links0 + (size_t)i * (size_t)(g->m0 + 1)
                  : g->upper[i] + (size_t)(l - 1) * (size_t)(g->m + 1);
}

static int draw_level(const struct index__graph *g, size_t node)
{
    uint64_t z = (uint64_t)node + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    double u = ((double)(z >> 11) + 0.5) * 0x1p-53;
    int l = (int)(-log(u) * g->ml);
    return l < INDEX_GRAPH_MAX_LEVEL - 1 ? l : INDEX_GRAPH_MAX_LEVEL - 1;
}

/* ---- walks --------------------------------------------------------------------------------- */

/* Copies node i's list at level l into c->nb; returns the count.
 * `concurrent` (inserts running): without a lock, as add_link publishes a
 * list: entries are stored (atomically) before the count that covers them
 * (release), so a count read with acquire only covers written entries; a
 * list being shrunk meanwhile shows a mix of its old and new entries, every
 * one a valid neighbour id (positions past the new count keep old ids), which
 * is all a walk needs (duplicates are caught by the visited tags). A stripe
 * mutex per read cost ~5% of the build. */
static int read_links(struct index__graph *g, struct gctx *c, int32_t i, int l, int concurrent)
{
    int32_t *ln = links_of(g, i, l);
    if (!concurrent) {
        int n = ln[0];
        memcpy(c->nb, ln + 1, sizeof(int32_t) * (size_t)n);
        return n;
    }
    int cap = l == 0 ? g->m0 : g->m;
    int n = __atomic_load_n(&ln[0], __ATOMIC_ACQUIRE);
    n = IMS_MIN(IMS_MAX(n, 0), cap);
    for (int j = 0; j < n; j++)
        c->nb[j] = __atomic_load_n(&ln[1 + j], __ATOMIC_RELAXED);
    return n;
}

static int32_t greedy(struct index__graph *g, struct gctx *c, int32_t ep, float *s_ep, int from,
                      int to, int concurrent)
{
    for (int l = from; l >= to; l--) {
        int improved = 1;
        while (improved) {
            improved = 0;
            int n = read_links(g, c, ep, l, concurrent);
            for (int j0 = 0; j0 < n; j0 += 4) {
                int m = IMS_MIN(4, n - j0);
                float s[4];
                qdot4(g, c, c->nb + j0, m, s);
                for (int u = 0; u < m; u++) {
                    if (s[u] > *s_ep) {
                        *s_ep = s[u];
                        ep = c->nb[j0 + u];
                        improved = 1;
                    }
                }
            }
        }
    }
    return ep;
}

/* Beam search of width ef on level l from ep; leaves the results in c->res
 * (a min-heap). skip_deleted: deleted nodes are expanded, not kept. -1 when
 * the frontier cannot grow (out of memory). */
/* A node the search walks through but never returns: deleted (with
 * skip_deleted) or refused by the filter (NULL: none). */
static inline int not_result(const struct index__graph *g, int32_t v, int skip_deleted,
                             const struct vindex_filter *filter)
{
    return (skip_deleted && g->deleted[v]) ||
           (filter && !vindex_filter_allows(filter, g->labels[v]));
}

/* With a filter, refused nodes still enter the candidate heap (waypoints)
 * but not the results, so the walk goes on until ef matching nodes are
 * found or the frontier is worse than all of them: it widens by itself. */
static int beam(struct index__graph *g, struct gctx *c, int32_t ep, float s_ep, int l, int ef,
                int concurrent, int skip_deleted, const struct vindex_filter *filter)
{
    uint16_t epoch = c->epoch;
    c->cand.n = 0;
    c->res.n = 0;
    c->tags[ep] = epoch;
    heap_push(&c->cand, s_ep, ep, 1);
    if (!not_result(g, ep, skip_deleted, filter))
        heap_push(&c->res, s_ep, ep, 0);
    int32_t todo[INDEX_GRAPH_MAX_M * 2];
    while (c->cand.n > 0) {
        float s_c = c->cand.s[0];
        int32_t cn = c->cand.v[0];
        if (c->res.n >= ef && s_c < c->res.s[0])
            break;
        heap_pop(&c->cand, 1);
        if (c->cand.n > 0) /* likely the next one expanded: its list on the way */
            G_PREFETCH(links_of(g, c->cand.v[0], l));
        int n = read_links(g, c, cn, l, concurrent);
        int n_todo = 0;
        for (int j = 0; j < n; j++) {
            int32_t nb = c->nb[j];
            if (c->tags[nb] == epoch)
                continue;
            c->tags[nb] = epoch;
            todo[n_todo++] = nb;
            const uint16_t *row = vec_of(g, nb);
            G_PREFETCH(row);
            G_PREFETCH(row + 32);
        }
        /* four rows at a time; the rest of the next four rows is fetched
         * while these are scored (their first 128 bytes were asked for above) */
        for (int u = 0; u < IMS_MIN(4, n_todo); u++)
            for (int o = 64; o < g->dpad; o += 32)
                G_PREFETCH(vec_of(g, todo[u]) + o);
        for (int t0 = 0; t0 < n_todo; t0 += 4) {
            int m = IMS_MIN(4, n_todo - t0);
            for (int u = t0 + 4; u < IMS_MIN(t0 + 8, n_todo); u++)
                for (int o = 64; o < g->dpad; o += 32)
                    G_PREFETCH(vec_of(g, todo[u]) + o);
            float s4[4];
            qdot4(g, c, todo + t0, m, s4);
            for (int u = 0; u < m; u++) {
                int32_t nb = todo[t0 + u];
                float s = s4[u];
                if (c->res.n < ef || s > c->res.s[0]) {
                    if (c->cand.n == c->cand.cap && heap_reserve(&c->cand, 2 * c->cand.cap) != 0)
                        return -1;
                    heap_push(&c->cand, s, nb, 1);
                    if (!not_result(g, nb, skip_deleted, filter)) {
                        heap_push(&c->res, s, nb, 0);
                        if (c->res.n > ef)
                            heap_pop(&c->res, 0);
                    }
                }
            }
        }
    }
    return 0;
}

/* Sorts c->res into ts/tv, best first; returns the count. */
static int res_sorted(struct gctx *c)
{
    int n = c->res.n;
    for (int i = n - 1; i >= 0; i--) {
        c->ts[i] = c->res.s[0];
        c->tv[i] = c->res.v[0];
        heap_pop(&c->res, 0);
    }
    return n;
}

/* The heuristic: from candidates (ts, tv)[0..n) sorted best first by
 * similarity to the base, keeps at most `want` into sel; returns how many. */
static int select_neighbours(struct index__graph *g, const float *ts, const int32_t *tv, int n,
                             int want, int32_t *sel)
{
    int k = 0;
    for (int i = 0; i < n && k < want; i++) {
        int good = 1;
        const uint16_t *vi = vec_of(g, tv[i]);
        /* four kept neighbours at a time (a few dot products past the first
         * closer one are wasted; the decision is the same) */
        for (int j = 0; j < k && good; j += 4) {
            int m = IMS_MIN(4, k - j);
            float s[4];
            dot_rows(g, vi, sel + j, m, s);
            for (int u = 0; u < m; u++)
                good &= !(s[u] > ts[i]);
        }
        if (good)
            sel[k++] = tv[i];
    }
    return k;
}

/* Adds `node` to e's list at level l, shrinking a full list. */
static void add_link(struct index__graph *g, struct gctx *c, int32_t e, int32_t node, int l)
{
    int cap = l == 0 ? g->m0 : g->m;
    pthread_mutex_t *mu = &g->stripes[e & (N_STRIPES - 1)];
    pthread_mutex_lock(mu);
    int32_t *ln = links_of(g, e, l);
    int n = ln[0];
    for (int j = 0; j < n; j++)
        if (ln[1 + j] == node)
            goto out;
    if (n < cap) { /* published for read_links' lock-free readers */
        __atomic_store_n(&ln[1 + n], node, __ATOMIC_RELAXED);
        __atomic_store_n(&ln[0], n + 1, __ATOMIC_RELEASE);
        goto out;
    }
    {
        /* full: re-select among the old list and the new node */
        const uint16_t *ve = vec_of(g, e);
        int m = 0;
        float *ts = c->ts;
        int32_t *tv = c->tv;
        int32_t *all = c->nb; /* the old list and the new node, scored 4 at a time */
        memcpy(all, ln + 1, sizeof(int32_t) * (size_t)n);
        all[n] = node;
        float sc[2 * INDEX_GRAPH_MAX_M + 4];
        for (int j = 0; j <= n; j += 4)
            dot_rows(g, ve, all + j, IMS_MIN(4, n + 1 - j), sc + j);
        for (int j = 0; j <= n; j++) {
            int32_t x = all[j];
            float s = sc[j];
            int p = m++;
            while (p > 0 && ts[p - 1] < s) { /* insertion sort, best first */
                ts[p] = ts[p - 1];
                tv[p] = tv[p - 1];
                p--;
            }
            ts[p] = s;
            tv[p] = x;
        }
        int k = select_neighbours(g, ts, tv, m, cap, c->sel);
        for (int j = 0; j < k; j++)
            __atomic_store_n(&ln[1 + j], c->sel[j], __ATOMIC_RELAXED);
        __atomic_store_n(&ln[0], k, __ATOMIC_RELEASE);
    }
out:
    pthread_mutex_unlock(mu);
}

static void insert(struct index__graph *g, struct gctx *c, int32_t node, const float *x)
{
    set_query(g, c, x);
    int lv = g->level[node];
    pthread_mutex_lock(&g->entry_mu);
    int32_t ep = g->entry;
    int max_level = g->max_level;
    if (ep < 0) { /* the first node */
        g->entry = node;
        g->max_level = lv;
        pthread_mutex_unlock(&g->entry_mu);
        return;
    }
    pthread_mutex_unlock(&g->entry_mu);
    if (gctx_prepare(g, c, g->efc) != 0)
        return; /* not reached: room was made before the inserts (index__graph_add) */
    float s_ep = qdot(g, c, ep);
    if (max_level > lv)
        ep = greedy(g, c, ep, &s_ep, max_level, lv + 1, 1);
    for (int l = IMS_MIN(lv, max_level); l >= 0; l--) {
        if (l < IMS_MIN(lv, max_level) && ++c->epoch == 0) {
            memset(c->tags, 0, c->n_tags * sizeof *c->tags);
            c->epoch = 1;
        }
        /* out of memory for a longer frontier: link to the best found so far
         * (the beam's results always hold at least the entry point) */
        (void)beam(g, c, ep, s_ep, l, g->efc, 1, 0, NULL);
        int n = res_sorted(c);
        ep = c->tv[0];
        s_ep = c->ts[0];
        int k = select_neighbours(g, c->ts, c->tv, n, g->m, c->sel);
        int32_t sel[INDEX_GRAPH_MAX_M];
        memcpy(sel, c->sel, sizeof(int32_t) * (size_t)k);
        /* merged into the node's list, not written over it: another insert
         * may already have linked itself here (found this node in its own
         * beam), and that link may be its only way in. One thread: the list
         * is empty and this is a plain copy. */
        for (int j = 0; j < k; j++)
            add_link(g, c, node, sel[j], l);
        for (int j = 0; j < k; j++)
            add_link(g, c, sel[j], node, l);
    }
    if (lv > max_level) {
        pthread_mutex_lock(&g->entry_mu);
        if (lv > g->max_level) {
            g->entry = node;
            g->max_level = lv;
        }
        pthread_mutex_unlock(&g->entry_mu);
    }
}

/* ---- parallel add --------------------------------------------------------------------------- */

struct build_job {
    struct index__graph *g;
    struct gctx *c;
    const float *x;
    size_t first, n; /* nodes first .. first + n - 1, x row = node - first */
    atomic_size_t *next;
};

/* One thread's share of index__graph_add, run by index__fan_out: takes nodes
 * 16 at a time from the shared counter until none are left, so a job whose
 * thread could not be created (run later on the caller) finds nothing to do
 * and every node is inserted exactly once. */
static void build_run(void *arg)
{
    struct build_job *j = arg;
    for (;;) {
        size_t i = atomic_fetch_add_explicit(j->next, 16, memory_order_relaxed);
        if (i >= j->n)
            break;
        size_t e = IMS_MIN(i + 16, j->n);
        for (; i < e; i++)
            insert(j->g, j->c, (int32_t)(j->first + i), j->x + i * (size_t)j->g->dim);
    }
}

static int online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > VINDEX_MAX_THREADS ? VINDEX_MAX_THREADS : (int)n;
}

enum ims_status index__graph_add(struct index__graph *g, const int64_t *labels, const float *x,
                                 size_t n)
{
    if (n == 0)
        return IMS_OK;
    int nt = index__graph_threads > 0 ? index__graph_threads : online_cores();
    if ((size_t)nt > n / 64)
        nt = (int)IMS_MAX((size_t)1, n / 64);
    if (nt > VINDEX_MAX_THREADS)
        nt = VINDEX_MAX_THREADS;
    /* scratch for every thread first: after this nothing can fail */
    struct gctx *ctxs[VINDEX_MAX_THREADS] = {0};
    int started = 0;
    size_t n_after = g->n + n;
    for (int t = 0; t < nt; t++) {
        ctxs[t] = pool_get(g);
        if (!ctxs[t])
            break;
        size_t keep = g->n;
        g->n = n_after; /* size the visited tags for the nodes to come */
        int bad = gctx_prepare(g, ctxs[t], g->efc);
        g->n = keep;
        if (bad) {
            pool_put(g, ctxs[t]);
            ctxs[t] = NULL;
            break;
        }
        started = t + 1;
    }
    if (started == 0)
        return IMS_ERR_NOMEM;
    size_t first = g->n;
    /* Everything a concurrent insert may read about a node exists before
     * any insert starts: vector, level, empty lists, label. */
    for (size_t i = 0; i < n; i++) {
        size_t node = first + i;
        uint16_t *r = g->vec + node * (size_t)g->dpad;
        for (int d = 0; d < g->dim; d++)
            r[d] = ims_f32_to_bf16(x[i * (size_t)g->dim + (size_t)d]);
        for (int d = g->dim; d < g->dpad; d++)
            r[d] = 0;
        int lv = draw_level(g, node);
        g->level[node] = (uint8_t)lv;
        g->links0[node * (size_t)(g->m0 + 1)] = 0;
        g->upper[node] = NULL;
        if (lv > 0) {
            g->upper[node] = ims_calloc((size_t)lv * (size_t)(g->m + 1), sizeof(int32_t));
            if (!g->upper[node]) /* a few bytes on 1 node in M: treat as level 0 */
                g->level[node] = 0;
        }
        g->deleted[node] = 0;
        g->labels[node] = labels[i];
        int32_t old = hmap_put(g, labels[i], (int32_t)node);
        if (old >= 0 && !g->deleted[old]) { /* vindex never adds a live label twice */
            g->deleted[old] = 1;
            g->n_deleted++;
        }
    }
    g->n = first + n;
    struct build_job jobs[VINDEX_MAX_THREADS];
    atomic_size_t next;
    atomic_init(&next, 0);
    size_t done = 0;
    /* The first node alone: the others need an entry point. */
    if (g->entry < 0) {
        insert(g, ctxs[0], (int32_t)first, x);
        done = 1;
    }
    for (int t = 0; t < started; t++)
        jobs[t] = (struct build_job){g, ctxs[t], x + done * (size_t)g->dim, first + done,
                                     n - done, &next};
    index__fan_out(jobs, sizeof *jobs, started, build_run);
    for (int t = 0; t < started; t++)
        pool_put(g, ctxs[t]);
    return IMS_OK;
}

int index__graph_delete(struct index__graph *g, int64_t label)
{
    int32_t node = hmap_get(g, label);
    if (node < 0)
        return 0;
    hmap_del(g, label);
    if (g->deleted[node])
        return 0;
    g->deleted[node] = 1;
    g->n_deleted++;
    return 1;
}

/* ---- search ------------------------------------------------------------------------------------ */

int index__graph_search_filtered(struct index__graph *g, const float *q, int k, int ef,
                                 const struct vindex_filter *filter, float *scores,
                                 int64_t *labels)
{
    if (g->n == g->n_deleted || g->entry < 0)
        return 0;
    if (ef < k)
        ef = k;
    struct gctx *c = pool_get(g);
    if (!c || gctx_prepare(g, c, ef) != 0) {
        if (c)
            pool_put(g, c);
        return -1;
    }
    set_query(g, c, q);
    int32_t ep = g->entry;
    float s_ep = qdot(g, c, ep);
    if (g->max_level > 0)
        ep = greedy(g, c, ep, &s_ep, g->max_level, 1, 0);
    if (beam(g, c, ep, s_ep, 0, ef, 0, 1, filter) != 0) {
        pool_put(g, c);
        return -1;
    }
    /* the beam keeps the ef best; hand back the k best, best first */
    while (c->res.n > k)
        heap_pop(&c->res, 0);
    int n = c->res.n;
    for (int i = n - 1; i >= 0; i--) {
        scores[i] = c->res.s[0];
        labels[i] = g->labels[c->res.v[0]];
        heap_pop(&c->res, 0);
    }
    pool_put(g, c);
    return n;
}

int index__graph_search(struct index__graph *g, const float *q, int k, int ef, float *scores,
                        int64_t *labels)
{
    return index__graph_search_filtered(g, q, k, ef, NULL, scores, labels);
}

/* ---- serialisation ------------------------------------------------------------------------------
 *
 *   "IMSGRPH1"  8
 *   u32 dim, u32 m, u32 efc, u32 reserved (0)
 *   u64 n, u64 n_upper (int32 values in the upper lists), i32 entry, i32 max level
 *   u8 level[n], u8 deleted[n], i64 label[n]
 *   i32 links0[n][2m + 1]          count, then neighbours (unused slots 0)
 *   i32 upper[n_upper]             per node with level > 0: level x (m + 1)
 *   u16 bf16 vectors[n][dim]
 */

#define G_MAGIC "IMSGRPH1"
#define G_HEAD 48u

enum ims_status index__graph_write(const struct index__graph *g, index__write_fn write, void *ctx,
                                   struct ims_error *err)
{
    unsigned char h[G_HEAD] = {0};
    uint64_t n_upper = 0;
    for (size_t i = 0; i < g->n; i++)
        n_upper += (uint64_t)g->level[i] * (uint64_t)(g->m + 1);
    memcpy(h, G_MAGIC, 8);
    uint32_t u32[4] = {(uint32_t)g->dim, (uint32_t)g->m, (uint32_t)g->efc, 0};
    memcpy(h + 8, u32, 16);
    uint64_t u64[2] = {g->n, n_upper};
    memcpy(h + 24, u64, 16);
    int32_t i32[2] = {g->entry, g->max_level};
    memcpy(h + 40, i32, 8);
    int bad = write(ctx, h, G_HEAD) || write(ctx, g->level, g->n) || write(ctx, g->deleted, g->n) ||
              write(ctx, g->labels, g->n * 8);
    for (size_t i = 0; !bad && i < g->n; i++) {
        const int32_t *ln = g->links0 + i * (size_t)(g->m0 + 1);
        int32_t row[2 * INDEX_GRAPH_MAX_M + 1] = {0};
        memcpy(row, ln, sizeof(int32_t) * (size_t)(ln[0] + 1));
        bad = write(ctx, row, sizeof(int32_t) * (size_t)(g->m0 + 1));
    }
    for (size_t i = 0; !bad && i < g->n; i++) {
        for (int l = 1; !bad && l <= g->level[i]; l++) {
            const int32_t *ln = links_of(g, (int32_t)i, l);
            int32_t row[INDEX_GRAPH_MAX_M + 1] = {0};
            memcpy(row, ln, sizeof(int32_t) * (size_t)(ln[0] + 1));
            bad = write(ctx, row, sizeof(int32_t) * (size_t)(g->m + 1));
        }
    }
    for (size_t i = 0; !bad && i < g->n; i++)
        bad = write(ctx, vec_of(g, (int32_t)i), (size_t)g->dim * 2);
    if (bad)
        return ims_error_set(err, IMS_ERR_IO, "index: cannot write the graph");
    return IMS_OK;
}

#define GR_FAIL(...)                                                                         \
    do {                                                                                     \
        snprintf(why, why_cap, __VA_ARGS__);                                                 \
        goto fail;                                                                           \
    } while (0)

int index__graph_read(const void *data, size_t size, int dim, struct index__graph **out, char *why,
                      size_t why_cap)
{
    const unsigned char *p = data;
    struct index__graph *g = NULL;
    if (size < G_HEAD || memcmp(p, G_MAGIC, 8) != 0) {
        snprintf(why, why_cap, "graph: no header");
        return -1;
    }
    uint32_t u32[4];
    uint64_t u64[2];
    int32_t i32[2];
    memcpy(u32, p + 8, 16);
    memcpy(u64, p + 24, 16);
    memcpy(i32, p + 40, 8);
    if (u32[0] != (uint32_t)dim || u32[1] < INDEX_GRAPH_MIN_M || u32[1] > INDEX_GRAPH_MAX_M ||
        u32[2] < 8 || u32[2] > 2048 || u32[3] != 0) {
        snprintf(why, why_cap, "graph: dim %u, M %u, efc %u", u32[0], u32[1], u32[2]);
        return -1;
    }
    int m = (int)u32[1];
    uint64_t n = u64[0], n_upper = u64[1];
    /* sizes before any allocation: every term bounded by the bytes present */
    uint64_t per_node = 1 + 1 + 8 + 4 * (uint64_t)(2 * m + 1) + 2 * (uint64_t)dim;
    if (n > INT32_MAX || n > size / per_node || n_upper > size / 4 ||
        (uint64_t)G_HEAD + n * per_node + 4 * n_upper != size) {
        snprintf(why, why_cap, "graph: %llu nodes and %llu upper links in %zu bytes",
                 (unsigned long long)n, (unsigned long long)n_upper, size);
        return -1;
    }
    if (index__graph_new(dim, m, (int)u32[2], &g) != IMS_OK ||
        index__graph_reserve(g, (size_t)n) != IMS_OK) {
        snprintf(why, why_cap, "graph: out of memory");
        index__graph_free(g);
        return -1;
    }
    const unsigned char *lv = p + G_HEAD, *del = lv + n, *lab = del + n;
    const unsigned char *l0 = lab + 8 * n, *up = l0 + n * 4 * (uint64_t)(2 * m + 1);
    const unsigned char *vec = up + 4 * n_upper;
    uint64_t need_upper = 0;
    int top = -1;
    for (uint64_t i = 0; i < n; i++) {
        if (lv[i] >= INDEX_GRAPH_MAX_LEVEL)
            GR_FAIL("graph: node %llu on level %u", (unsigned long long)i, lv[i]);
        if (del[i] > 1)
            GR_FAIL("graph: node %llu deleted flag %u", (unsigned long long)i, del[i]);
        need_upper += (uint64_t)lv[i] * (uint64_t)(m + 1);
        top = IMS_MAX(top, (int)lv[i]);
    }
    if (need_upper != n_upper)
        GR_FAIL("graph: levels need %llu upper links, %llu stored",
                (unsigned long long)need_upper, (unsigned long long)n_upper);
    g->n = (size_t)n;
    memcpy(g->level, lv, (size_t)n);
    memcpy(g->deleted, del, (size_t)n);
    memcpy(g->labels, lab, (size_t)n * 8);
    for (size_t i = 0; i < n; i++)
        g->upper[i] = NULL;
    for (size_t i = 0; i < n; i++) {
        if (g->labels[i] < 0)
            GR_FAIL("graph: node %zu label %lld", i, (long long)g->labels[i]);
        if (g->deleted[i]) {
            g->n_deleted++;
        } else if (hmap_get(g, g->labels[i]) >= 0) {
            GR_FAIL("graph: label %lld on two live nodes", (long long)g->labels[i]);
        } else {
            hmap_put(g, g->labels[i], (int32_t)i);
        }
    }
    memcpy(g->links0, l0, (size_t)n * 4 * (size_t)(2 * m + 1));
    const unsigned char *u = up;
    for (size_t i = 0; i < n; i++) {
        if (!g->level[i])
            continue;
        size_t len = (size_t)g->level[i] * (size_t)(m + 1);
        g->upper[i] = ims_malloc(len * 4);
        if (!g->upper[i])
            GR_FAIL("graph: out of memory");
        memcpy(g->upper[i], u, len * 4);
        u += len * 4;
    }
    for (size_t i = 0; i < n; i++) {
        for (int l = 0; l <= g->level[i]; l++) {
            const int32_t *ln = links_of(g, (int32_t)i, l);
            int cap = l ? m : 2 * m;
            if (ln[0] < 0 || ln[0] > cap)
                GR_FAIL("graph: node %zu level %d has %d links", i, l, ln[0]);
            for (int j = 0; j < ln[0]; j++) {
                int32_t nb = ln[1 + j];
                if (nb < 0 || (uint64_t)nb >= n || (size_t)nb == i)
                    GR_FAIL("graph: node %zu level %d neighbour %d", i, l, nb);
                if (g->level[nb] < l)
                    GR_FAIL("graph: node %zu level %d neighbour %d lives up to level %d", i, l,
                            nb, g->level[nb]);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t *r = g->vec + i * (size_t)g->dpad;
        memcpy(r, vec + i * (size_t)dim * 2, (size_t)dim * 2);
        for (int d = 0; d < dim; d++)
            if ((r[d] & 0x7f80) == 0x7f80)
                GR_FAIL("graph: node %zu component %d is not finite", i, d);
        for (int d = dim; d < g->dpad; d++)
            r[d] = 0;
    }
    if (n == 0) {
        if (i32[0] != -1 || i32[1] != -1)
            GR_FAIL("graph: empty with entry point %d", i32[0]);
    } else if (i32[0] < 0 || (uint64_t)i32[0] >= n || i32[1] != top || g->level[i32[0]] != top) {
        GR_FAIL("graph: entry point %d, max level %d (top level %d)", i32[0], i32[1], top);
    }
    g->entry = i32[0];
    g->max_level = i32[1];
    *out = g;
    return 0;
fail:
    index__graph_free(g);
    return -1;
}
