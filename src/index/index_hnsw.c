/* SPDX-License-Identifier: MIT */
/*
 * index_hnsw.c: the HNSW graph walk with our own distance kernels.
 *
 * FAISS builds and stores the graph (IndexHNSWFlat: training-free, inserts in
 * parallel, serialises); this file only searches it, because FAISS's walk
 * spends its time in Debian's generic-SIMD inner products, the same code
 * that makes its flat scan 4-7x slower than ours. The walk is the standard
 * one (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor
 * search using Hierarchical Navigable Small World graphs", 2016/2018):
 * greedy descent from the entry point through the upper levels, then a beam
 * search of width ef on level 0. Differences from FAISS's walk: scores are
 * inner products computed by index__dot_f32 (max, not min), the unvisited
 * neighbours of a node are prefetched before their scores are computed, and
 * the visited set is a bitmap allocated per search (ntotal / 8 bytes).
 *
 * The view is borrowed from FAISS under the vindex read lock; nothing here
 * writes to it. The walk checks no bounds: index__hnsw_check, run once when
 * a graph is read (snapshot or file), proves every index it follows is in
 * range, so damage is found at load time (a rebuild for a snapshot, an error
 * for an imported file), never as a crash in the first search.
 */

#include "index_int.h"

#include <stdio.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HNSW_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#else
#define HNSW_PREFETCH(p) ((void)(p))
#endif

int index__hnsw_own_walk = 1;

/* ---- validation ------------------------------------------------------------ */

#define HNSW_FAIL(...)                                                                   \
    do {                                                                                 \
        snprintf(why, why_cap, __VA_ARGS__);                                             \
        return -1;                                                                       \
    } while (0)

int index__hnsw_check(const struct index__hnsw_view *v, char *why, size_t why_cap)
{
    int64_t n = v->ntotal;
    if (n < 0 || n > INT32_MAX)
        HNSW_FAIL("%lld nodes", (long long)n);
    if (v->n_levels != (size_t)n || v->n_offsets != (size_t)n + 1)
        HNSW_FAIL("%lld nodes but %zu levels and %zu offsets", (long long)n, v->n_levels,
                  v->n_offsets);
    const int *cum = v->cum_nneighbor_per_level;
    int nl = v->n_levels_table;
    if (nl < 2 || cum[0] != 0)
        HNSW_FAIL("neighbour table of %d levels", nl);
    for (int l = 0; l + 1 < nl; l++)
        if (cum[l + 1] < cum[l])
            HNSW_FAIL("neighbour table decreases at level %d", l);
    if (v->offsets[0] != 0)
        HNSW_FAIL("first offset %zu", v->offsets[0]);
    for (int64_t i = 0; i < n; i++) {
        int lv = v->levels[i];
        if (lv < 1 || lv >= nl)
            HNSW_FAIL("node %lld on %d levels (table has %d)", (long long)i, lv, nl - 1);
        size_t b = v->offsets[i], e = v->offsets[i + 1];
        if (e < b || e - b != (size_t)cum[lv] || e > v->n_neighbors)
            HNSW_FAIL("node %lld: neighbour range [%zu, %zu) for %d levels (%zu stored)",
                      (long long)i, b, e, lv, v->n_neighbors);
    }
    if (v->offsets[n] != v->n_neighbors)
        HNSW_FAIL("%zu neighbours stored, offsets cover %zu", v->n_neighbors, v->offsets[n]);
    /* Every neighbour listed at level l of node i must exist and live on
     * level l too: the greedy descent then only reads ranges that exist. */
    for (int64_t i = 0; i < n; i++) {
        for (int l = 0; l < v->levels[i]; l++) {
            size_t b = v->offsets[i] + (size_t)cum[l], e = v->offsets[i] + (size_t)cum[l + 1];
            for (size_t j = b; j < e; j++) {
                int32_t nb = v->neighbors[j];
                if (nb == -1)
                    break;
                if (nb < 0 || nb >= n)
                    HNSW_FAIL("node %lld, level %d: neighbour %d out of [0, %lld)", (long long)i,
                              l, nb, (long long)n);
                if (v->levels[nb] <= l)
                    HNSW_FAIL("node %lld, level %d: neighbour %d lives on %d levels",
                              (long long)i, l, nb, v->levels[nb]);
            }
        }
    }
    if (n == 0) {
        if (v->entry_point != -1)
            HNSW_FAIL("empty graph with entry point %d", v->entry_point);
        return 0;
    }
    if (v->entry_point < 0 || v->entry_point >= n)
        HNSW_FAIL("entry point %d out of [0, %lld)", v->entry_point, (long long)n);
    if (v->max_level != v->levels[v->entry_point] - 1)
        HNSW_FAIL("max level %d, the entry point lives on %d levels", v->max_level,
                  v->levels[v->entry_point]);
    return 0;
}

/* ---- search ------------------------------------------------------------------ */

/* A max-heap of (score, node): the frontier of the beam search. */
struct frontier {
    float *s;
    int32_t *v;
    int n, cap;
};

static int frontier_push(struct frontier *f, float s, int32_t v)
{
    if (f->n == f->cap) {
        int cap = f->cap ? 2 * f->cap : 256;
        float *ns = ims_realloc(f->s, sizeof(float) * (size_t)cap);
        if (!ns)
            return -1;
        f->s = ns;
        int32_t *nv = ims_realloc(f->v, sizeof(int32_t) * (size_t)cap);
        if (!nv)
            return -1;
        f->v = nv;
        f->cap = cap;
    }
    int i = f->n++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (f->s[p] >= s)
            break;
        f->s[i] = f->s[p];
        f->v[i] = f->v[p];
        i = p;
    }
    f->s[i] = s;
    f->v[i] = v;
    return 0;
}

static void frontier_pop(struct frontier *f, float *s, int32_t *v)
{
    *s = f->s[0];
    *v = f->v[0];
    float ls = f->s[--f->n];
    int32_t lv = f->v[f->n];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        float ms = ls;
        if (l < f->n && f->s[l] > ms) {
            m = l;
            ms = f->s[l];
        }
        if (r < f->n && f->s[r] > ms)
            m = r;
        if (m == i)
            break;
        f->s[i] = f->s[m];
        f->v[i] = f->v[m];
        i = m;
    }
    f->s[i] = ls;
    f->v[i] = lv;
}

static float score_node(const struct index__hnsw_view *v, int dim, const float *q, int32_t node)
{
    float s;
    index__dot_f32(q, v->vectors + (size_t)node * (size_t)dim, 1, dim, &s);
    return s;
}

int index__hnsw_search(const struct index__hnsw_view *v, int dim, const float *q, int k, int ef,
                       float *scores, int64_t *labels)
{
    int found = -1;
    uint8_t *seen = NULL;
    struct frontier fr = {0};
    struct index__topk best = {0};
    if (ef < k)
        ef = k;
    int32_t ep = v->entry_point;
    float s_ep = score_node(v, dim, q, ep);

    /* Upper levels: greedy hill climbing. */
    for (int level = v->max_level; level >= 1; level--) {
        if (level + 1 >= v->n_levels_table)
            continue;
        int improved = 1;
        while (improved) {
            improved = 0;
            size_t b = v->offsets[ep] + (size_t)v->cum_nneighbor_per_level[level];
            size_t e = v->offsets[ep] + (size_t)v->cum_nneighbor_per_level[level + 1];
            for (size_t j = b; j < e; j++) {
                int32_t nb = v->neighbors[j];
                if (nb < 0)
                    break;
                float s = score_node(v, dim, q, nb);
                if (s > s_ep) {
                    s_ep = s;
                    ep = nb;
                    improved = 1;
                }
            }
        }
    }

    /* Level 0: beam search of width ef. `best` keeps the ef best seen (its
     * ids are graph nodes), `fr` the nodes still to expand. */
    seen = ims_calloc((size_t)(v->ntotal + 7) / 8, 1);
    if (!seen || index__topk_init(&best, ef) != IMS_OK || frontier_push(&fr, s_ep, ep) != 0)
        goto out;
    seen[ep >> 3] |= (uint8_t)(1u << (ep & 7));
    index__topk_push(&best, s_ep, ep);
    int32_t todo[512];
    while (fr.n > 0) {
        float s_c;
        int32_t c;
        frontier_pop(&fr, &s_c, &c);
        if (best.n == best.k && s_c < best.scores[0])
            break; /* nothing left can improve the beam */
        size_t b = v->offsets[c] + (size_t)v->cum_nneighbor_per_level[0];
        size_t e = v->offsets[c] + (size_t)v->cum_nneighbor_per_level[1];
        int n_todo = 0;
        for (size_t j = b; j < e && n_todo < (int)IMS_ARRAY_LEN(todo); j++) {
            int32_t nb = v->neighbors[j];
            if (nb < 0)
                break;
            if (seen[nb >> 3] & (1u << (nb & 7)))
                continue;
            seen[nb >> 3] |= (uint8_t)(1u << (nb & 7));
            todo[n_todo++] = nb;
            const float *row = v->vectors + (size_t)nb * (size_t)dim;
            HNSW_PREFETCH(row);
            HNSW_PREFETCH(row + 16);
        }
        for (int t = 0; t < n_todo; t++) {
            float s = score_node(v, dim, q, todo[t]);
            if (best.n < best.k || s > best.scores[0]) {
                if (frontier_push(&fr, s, todo[t]) != 0)
                    goto out;
                index__topk_push(&best, s, todo[t]);
            }
        }
    }
    index__topk_sort(&best);
    found = IMS_MIN(k, best.n);
    for (int i = 0; i < found; i++) {
        scores[i] = best.scores[i];
        labels[i] = v->labels[best.ids[i]];
    }
out:
    ims_free(seen);
    ims_free(fr.s);
    ims_free(fr.v);
    index__topk_fini(&best);
    return found;
}
