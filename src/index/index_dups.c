/* SPDX-License-Identifier: MIT */
/*
 * index_dups.c: library-wide near-duplicate groups (issue 10,
 * vindex_duplicates). A k-NN pass scored with the exact scan's multi-query
 * kernels (index__dot_f32_multi): every vector against every other up to
 * exact_max vectors, else against the vectors of its nprobe nearest cells
 * of a spherical k-means partition (about sqrt(n) cells, so the work grows
 * like n^1.5 instead of n^2). Each vector keeps its k best links above the
 * threshold; union-find over the links, strongest first, gives the groups
 * and each group's weakest joining link. Cells are shared among threads;
 * each thread collects its own links.
 *
 * The exact pass scores each unordered pair once (blocked upper triangle:
 * a block of rows against the vectors before its end) and offers the score
 * to both vectors' lists; each thread keeps lists for every vector and the
 * lists are merged afterwards. Lists order links by score, then by lower
 * position, so the kept links (hence the groups) do not depend on the order
 * pairs are scored in, nor on the number of threads.
 */
#include "index_int.h"

#include "imgsearch/index.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define QB 32    /* queries scored together */
#define RB 512   /* member rows per block (1 MiB at 512 floats: stays in cache) */

void vindex_dups_options_default(struct vindex_dups_options *o)
{
    memset(o, 0, sizeof(*o));
    o->threshold = 0.95f;
    o->k = 16;
    o->n_threads = 2;
    o->exact_max = 10000;
    o->nprobe = 8;
}

void vindex_dups_fini(struct vindex_dups *d)
{
    if (!d)
        return;
    ims_free(d->groups);
    ims_free(d->storage);
    memset(d, 0, sizeof(*d));
}

struct edge {
    uint32_t a, b; /* vector positions, a < b */
    float s;
};

struct edges {
    struct edge *v;
    size_t n, cap;
    int oom;
};

static void edge_push(struct edges *e, uint32_t a, uint32_t b, float s)
{
    if (e->n == e->cap) {
        size_t nc = e->cap ? e->cap * 2 : 4096;
        struct edge *p = ims_realloc(e->v, nc * sizeof(*p));
        if (!p) {
            e->oom = 1;
            return;
        }
        e->v = p;
        e->cap = nc;
    }
    e->v[e->n++] = (struct edge){a < b ? a : b, a < b ? b : a, s};
}

/* The work: cells of member rows, each scored against the vectors that
 * probe it; or, in exact mode (identity), the row blocks of the triangle. */
struct job {
    const float *x;
    size_t n;
    int dim;
    float threshold;
    int k;
    size_t n_cells;
    int identity;                    /* exact: every pair once, no cells */
    const uint32_t *mem, *mem_off;   /* members of cell c: mem[mem_off[c] .. mem_off[c+1]) */
    const uint32_t *prb, *prb_off;   /* vectors probing cell c */
    atomic_size_t next_cell;         /* identity: row blocks of RB, handed out last first */
};

struct worker {
    struct job *job;
    struct edges e;
    float *q, *r, *out, *top_s; /* top_s, top_i, n_top: per prober of the cell */
    uint32_t *top_i;            /* (identity: per vector, over the whole pass) */
    int *n_top;
};

/* (s, i) before (t, j) in a best-first list: higher score, then lower i. */
static inline int top_before(float s, uint32_t i, float t, uint32_t j)
{
    return s > t || (s == t && i < j);
}

/* Inserts (s, i) into a best-first list of at most k (len *n). */
static void top_insert(float *ts, uint32_t *ti, int *n, int k, float s, uint32_t i)
{
    if (*n == k && !top_before(s, i, ts[k - 1], ti[k - 1]))
        return;
    int at = *n < k ? (*n)++ : k - 1;
    while (at > 0 && top_before(s, i, ts[at - 1], ti[at - 1])) {
        ts[at] = ts[at - 1];
        ti[at] = ti[at - 1];
        at--;
    }
    ts[at] = s;
    ti[at] = i;
}

/* Scores the probers of cell c against its members, row block by row block
 * (a block of members stays in cache while every prober passes), each
 * prober keeping its k best links above the threshold. */
static void score_cell(struct worker *w, size_t c)
{
    struct job *j = w->job;
    size_t d = (size_t)j->dim, k = (size_t)j->k;
    const uint32_t *mem = j->mem + j->mem_off[c], *prb = j->prb + j->prb_off[c];
    size_t n_mem = j->mem_off[c + 1] - j->mem_off[c], n_prb = j->prb_off[c + 1] - j->prb_off[c];
    memset(w->n_top, 0, n_prb * sizeof(int));
    for (size_t r0 = 0; r0 < n_mem; r0 += RB) {
        size_t nr = IMS_MIN((size_t)RB, n_mem - r0);
        for (size_t b = 0; b < nr; b++)
            memcpy(w->r + b * d, j->x + (size_t)mem[r0 + b] * d, d * sizeof(float));
        for (size_t q0 = 0; q0 < n_prb; q0 += QB) {
            int nq = (int)IMS_MIN((size_t)QB, n_prb - q0);
            for (int a = 0; a < nq; a++)
                memcpy(w->q + (size_t)a * d, j->x + (size_t)prb[q0 + (size_t)a] * d,
                       d * sizeof(float));
            index__dot_f32_multi(w->q, nq, w->r, nr, j->dim, w->out, RB);
            for (int a = 0; a < nq; a++) {
                const float *o = w->out + (size_t)a * RB;
                size_t qi = q0 + (size_t)a;
                uint32_t self = prb[qi];
                for (size_t b = 0; b < nr; b++) {
                    if (o[b] < j->threshold)
                        continue;
                    uint32_t other = mem[r0 + b];
                    if (other != self)
                        top_insert(w->top_s + qi * k, w->top_i + qi * k, &w->n_top[qi],
                                   (int)k, o[b], other);
                }
            }
        }
    }
    for (size_t qi = 0; qi < n_prb; qi++)
        for (int t = 0; t < w->n_top[qi]; t++)
            edge_push(&w->e, prb[qi], w->top_i[qi * k + (size_t)t], w->top_s[qi * k + (size_t)t]);
}

/* The exact pass, row block rb: rows [r0, r1) against the vectors q < r1,
 * each pair (q < row) scored once and offered to both lists. */
static void score_triangle(struct worker *w, size_t rb)
{
    struct job *j = w->job;
    size_t d = (size_t)j->dim, k = (size_t)j->k;
    size_t r0 = rb * RB, r1 = IMS_MIN(r0 + RB, j->n), nr = r1 - r0;
    const float *rows = j->x + r0 * d;
    for (size_t q0 = 0; q0 < r1; q0 += QB) {
        int nq = (int)IMS_MIN((size_t)QB, r1 - q0);
        index__dot_f32_multi(j->x + q0 * d, nq, rows, nr, j->dim, w->out, RB);
        for (int a = 0; a < nq; a++) {
            const float *o = w->out + (size_t)a * RB;
            size_t qi = q0 + (size_t)a;
            for (size_t b = qi >= r0 ? qi - r0 + 1 : 0; b < nr; b++) {
                if (o[b] < j->threshold)
                    continue;
                size_t ri = r0 + b;
                top_insert(w->top_s + qi * k, w->top_i + qi * k, &w->n_top[qi], (int)k, o[b],
                           (uint32_t)ri);
                top_insert(w->top_s + ri * k, w->top_i + ri * k, &w->n_top[ri], (int)k, o[b],
                           (uint32_t)qi);
            }
        }
    }
}

/* One thread's share (index__fan_out): cells, or row blocks, from the
 * shared counter until none are left, so a job whose thread could not be
 * created (run afterwards on the caller) finds nothing left to do. Row
 * blocks go last first: the later ones carry the most pairs. */
static void work(void *arg)
{
    struct worker *w = arg;
    struct job *j = w->job;
    size_t c;
    while (!w->e.oom && (c = atomic_fetch_add(&j->next_cell, 1)) < j->n_cells) {
        if (j->identity)
            score_triangle(w, j->n_cells - 1 - c);
        else
            score_cell(w, c);
    }
}

/* The exact pass's links: each vector's k best over every thread's list. */
static void merge_lists(const struct job *j, const struct worker *w, int n_threads,
                        struct edges *all)
{
    size_t k = (size_t)j->k;
    for (size_t i = 0; i < j->n && !all->oom; i++) {
        const float *bs = w[0].top_s + i * k;
        const uint32_t *bi = w[0].top_i + i * k;
        int nb = w[0].n_top[i];
        float ms[1024];
        uint32_t mi[1024];
        if (n_threads > 1) {
            nb = 0;
            for (int t = 0; t < n_threads; t++)
                for (int a = 0; a < w[t].n_top[i]; a++)
                    top_insert(ms, mi, &nb, (int)k, w[t].top_s[i * k + (size_t)a],
                               w[t].top_i[i * k + (size_t)a]);
            bs = ms;
            bi = mi;
        }
        for (int a = 0; a < nb; a++)
            edge_push(all, (uint32_t)i, bi[a], bs[a]);
    }
}

static enum ims_status run_job(struct job *j, int n_threads, struct edges *all,
                               struct ims_error *err)
{
    size_t d = (size_t)j->dim;
    if (n_threads < 1)
        n_threads = 1;
    if (n_threads > VINDEX_MAX_THREADS)
        n_threads = VINDEX_MAX_THREADS;
    struct worker *w = ims_calloc((size_t)n_threads, sizeof(*w));
    enum ims_status st = IMS_OK;
    size_t max_prb = 1;
    if (j->identity)
        max_prb = j->n; /* a list for every vector */
    else
        for (size_t c = 0; c < j->n_cells; c++)
            max_prb = IMS_MAX(max_prb, (size_t)(j->prb_off[c + 1] - j->prb_off[c]));
    if (!w) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "duplicates: out of memory");
        goto out;
    }
    for (int t = 0; t < n_threads; t++) {
        w[t].job = j;
        w[t].q = ims_malloc(QB * d * sizeof(float));
        w[t].r = ims_malloc(RB * d * sizeof(float));
        w[t].out = ims_malloc((size_t)QB * RB * sizeof(float));
        w[t].top_s = ims_malloc(max_prb * (size_t)j->k * sizeof(float));
        w[t].top_i = ims_malloc(max_prb * (size_t)j->k * sizeof(uint32_t));
        w[t].n_top = ims_calloc(max_prb, sizeof(int));
        if (!w[t].q || !w[t].r || !w[t].out || !w[t].top_s || !w[t].top_i || !w[t].n_top) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "duplicates: out of memory");
            goto out;
        }
    }
    index__fan_out(w, sizeof *w, n_threads, work);
    if (j->identity) {
        merge_lists(j, w, n_threads, all);
        if (all->oom)
            st = ims_error_set(err, IMS_ERR_NOMEM, "duplicates: out of memory for links");
        goto out;
    }
    for (int t = 0; t < n_threads; t++) {
        if (w[t].e.oom) {
            st = ims_error_set(err, IMS_ERR_NOMEM, "duplicates: out of memory for links");
            goto out;
        }
    }
    for (int t = 0; t < n_threads; t++) {
        for (size_t i = 0; i < w[t].e.n && !all->oom; i++)
            edge_push(all, w[t].e.v[i].a, w[t].e.v[i].b, w[t].e.v[i].s);
    }
    if (all->oom)
        st = ims_error_set(err, IMS_ERR_NOMEM, "duplicates: out of memory for links");
out:
    for (int t = 0; w && t < n_threads; t++) {
        ims_free(w[t].q);
        ims_free(w[t].r);
        ims_free(w[t].out);
        ims_free(w[t].top_s);
        ims_free(w[t].top_i);
        ims_free(w[t].n_top);
        ims_free(w[t].e.v);
    }
    ims_free(w);
    return st;
}

/* ---- the partition ------------------------------------------------------- */

/* best[i * p .. +p): the p nearest of the c centroids to vector i (best
 * first), for the n vectors listed in idx (NULL: 0..n-1). */
static void nearest_cells(const float *x, const uint32_t *idx, size_t n, int dim,
                          const float *cent, size_t c, int p, uint32_t *best, float *buf,
                          float *qbuf)
{
    size_t d = (size_t)dim;
    float ts[64];
    uint32_t ti[64];
    for (size_t q0 = 0; q0 < n; q0 += QB) {
        int nq = (int)IMS_MIN((size_t)QB, n - q0);
        for (int a = 0; a < nq; a++)
            memcpy(qbuf + (size_t)a * d, x + (size_t)(idx ? idx[q0 + a] : q0 + a) * d,
                   d * sizeof(float));
        index__dot_f32_multi(qbuf, nq, cent, c, dim, buf, c);
        for (int a = 0; a < nq; a++) {
            int nt = 0;
            for (size_t b = 0; b < c; b++)
                top_insert(ts, ti, &nt, p, buf[(size_t)a * c + b], (uint32_t)b);
            for (int t = 0; t < p; t++)
                best[(q0 + (size_t)a) * (size_t)p + (size_t)t] = t < nt ? ti[t] : ti[0];
        }
    }
}

static void normalise(float *v, size_t d)
{
    double s = 0;
    for (size_t i = 0; i < d; i++)
        s += (double)v[i] * v[i];
    if (s > 0) {
        float inv = (float)(1.0 / sqrt(s));
        for (size_t i = 0; i < d; i++)
            v[i] *= inv;
    }
}

/* Builds the cells: members by nearest centroid, probers by their nprobe
 * nearest. */
static enum ims_status partition(const float *x, size_t n, int dim, int nprobe, struct job *j,
                                 uint32_t **bufs, struct ims_error *err)
{
    size_t d = (size_t)dim;
    size_t c = (size_t)sqrt((double)n);
    if (c < 2)
        c = 2;
    int p = nprobe < 1 ? 1 : nprobe > 64 ? 64 : nprobe;
    if ((size_t)p > c)
        p = (int)c;
    size_t n_sample = IMS_MIN(n, c * 32);
    float *cent = ims_malloc(c * d * sizeof(float));
    float *sum = ims_malloc(c * d * sizeof(float));
    size_t *cnt = ims_malloc(c * sizeof(size_t));
    uint32_t *sample = ims_malloc(n_sample * sizeof(uint32_t));
    uint32_t *best = ims_malloc(n * (size_t)p * sizeof(uint32_t));
    float *buf = ims_malloc((size_t)QB * c * sizeof(float));
    float *qbuf = ims_malloc((size_t)QB * d * sizeof(float));
    uint32_t *mem = ims_malloc(n * sizeof(uint32_t));
    uint32_t *mem_off = ims_calloc(c + 1, sizeof(uint32_t));
    uint32_t *prb = ims_malloc(n * (size_t)p * sizeof(uint32_t));
    uint32_t *prb_off = ims_calloc(c + 1, sizeof(uint32_t));
    enum ims_status st = IMS_OK;
    if (!cent || !sum || !cnt || !sample || !best || !buf || !qbuf || !mem || !mem_off || !prb ||
        !prb_off) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "duplicates: out of memory for the partition");
        goto out;
    }
    /* a sample spread over the whole range; centroids from it, refined */
    for (size_t i = 0; i < n_sample; i++)
        sample[i] = (uint32_t)((i * n) / n_sample);
    for (size_t i = 0; i < c; i++)
        memcpy(cent + i * d, x + (size_t)sample[(i * n_sample) / c] * d, d * sizeof(float));
    for (int it = 0; it < 6; it++) {
        nearest_cells(x, sample, n_sample, dim, cent, c, 1, best, buf, qbuf);
        memset(sum, 0, c * d * sizeof(float));
        memset(cnt, 0, c * sizeof(size_t));
        for (size_t i = 0; i < n_sample; i++) {
            float *s = sum + (size_t)best[i] * d;
            const float *v = x + (size_t)sample[i] * d;
            for (size_t k = 0; k < d; k++)
                s[k] += v[k];
            cnt[best[i]]++;
        }
        for (size_t i = 0; i < c; i++)
            if (cnt[i]) {
                memcpy(cent + i * d, sum + i * d, d * sizeof(float));
                normalise(cent + i * d, d);
            }
    }
    nearest_cells(x, NULL, n, dim, cent, c, p, best, buf, qbuf);
    for (size_t i = 0; i < n; i++) {
        mem_off[best[i * (size_t)p] + 1]++;
        for (int t = 0; t < p; t++)
            prb_off[best[i * (size_t)p + (size_t)t] + 1]++;
    }
    for (size_t i = 0; i < c; i++) {
        mem_off[i + 1] += mem_off[i];
        prb_off[i + 1] += prb_off[i];
    }
    memset(cnt, 0, c * sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        uint32_t h = best[i * (size_t)p];
        mem[mem_off[h] + cnt[h]++] = (uint32_t)i;
    }
    memset(cnt, 0, c * sizeof(size_t));
    for (size_t i = 0; i < n; i++)
        for (int t = 0; t < p; t++) {
            uint32_t h = best[i * (size_t)p + (size_t)t];
            prb[prb_off[h] + cnt[h]++] = (uint32_t)i;
        }
    j->n_cells = c;
    j->mem = mem;
    j->mem_off = mem_off;
    j->prb = prb;
    j->prb_off = prb_off;
    bufs[0] = mem, bufs[1] = mem_off, bufs[2] = prb, bufs[3] = prb_off;
    mem = mem_off = prb = prb_off = NULL;
out:
    ims_free(cent);
    ims_free(sum);
    ims_free(cnt);
    ims_free(sample);
    ims_free(best);
    ims_free(buf);
    ims_free(qbuf);
    ims_free(mem);
    ims_free(mem_off);
    ims_free(prb);
    ims_free(prb_off);
    return st;
}

/* ---- groups --------------------------------------------------------------- */

static int edge_by_score(const void *a, const void *b)
{
    const struct edge *x = a, *y = b;
    if (x->s != y->s)
        return x->s < y->s ? 1 : -1;
    if (x->a != y->a)
        return x->a < y->a ? -1 : 1;
    return x->b < y->b ? -1 : (x->b > y->b);
}

static uint32_t uf_find(uint32_t *parent, uint32_t i)
{
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

static int group_cmp(const void *a, const void *b)
{
    const struct vindex_dup_group *x = a, *y = b;
    if (x->n != y->n)
        return x->n < y->n ? 1 : -1;
    return x->ids[0] < y->ids[0] ? -1 : (x->ids[0] > y->ids[0]);
}

static int id_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : (x > y);
}

static enum ims_status make_groups(const int64_t *ids, size_t n, struct edges *e,
                                   struct vindex_dups *out, struct ims_error *err)
{
    uint32_t *parent = ims_malloc(n * sizeof(uint32_t));
    uint32_t *size = ims_malloc(n * sizeof(uint32_t));
    float *mins = ims_malloc(n * sizeof(float));
    uint32_t *slot = ims_malloc(n * sizeof(uint32_t));
    enum ims_status st = IMS_OK;
    if (!parent || !size || !mins || !slot) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "duplicates: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        parent[i] = (uint32_t)i;
        size[i] = 1;
        mins[i] = 1.0f;
    }
    if (e->n)
        qsort(e->v, e->n, sizeof(*e->v), edge_by_score);
    for (size_t i = 0; i < e->n; i++) {
        uint32_t a = uf_find(parent, e->v[i].a), b = uf_find(parent, e->v[i].b);
        if (a == b)
            continue;
        if (size[a] < size[b]) {
            uint32_t t = a;
            a = b;
            b = t;
        }
        parent[b] = a;
        size[a] += size[b];
        mins[a] = e->v[i].s; /* links come strongest first: this one is the weakest yet */
    }
    size_t n_groups = 0, n_ids = 0;
    for (size_t i = 0; i < n; i++)
        if (parent[i] == i && size[i] > 1) {
            slot[i] = (uint32_t)n_groups++;
            n_ids += size[i];
        }
    out->groups = n_groups ? ims_calloc(n_groups, sizeof(*out->groups)) : NULL;
    out->storage = n_ids ? ims_malloc(n_ids * sizeof(int64_t)) : NULL;
    if ((n_groups && !out->groups) || (n_ids && !out->storage)) {
        vindex_dups_fini(out);
        st = ims_error_set(err, IMS_ERR_NOMEM, "duplicates: out of memory");
        goto out;
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++)
        if (parent[i] == i && size[i] > 1) {
            struct vindex_dup_group *g = &out->groups[slot[i]];
            g->ids = out->storage + at;
            g->min_score = mins[i];
            at += size[i];
        }
    for (size_t i = 0; i < n; i++) {
        uint32_t r = uf_find(parent, (uint32_t)i);
        if (size[r] > 1) {
            struct vindex_dup_group *g = &out->groups[slot[r]];
            g->ids[g->n++] = ids[i];
        }
    }
    for (size_t g = 0; g < n_groups; g++)
        qsort(out->groups[g].ids, out->groups[g].n, sizeof(int64_t), id_cmp);
    if (n_groups)
        qsort(out->groups, n_groups, sizeof(*out->groups), group_cmp);
    out->n = n_groups;
out:
    ims_free(parent);
    ims_free(size);
    ims_free(mins);
    ims_free(slot);
    return st;
}

enum ims_status vindex_duplicates_of(const int64_t *ids, const float *x, size_t n, int dim,
                                     const struct vindex_dups_options *o,
                                     struct vindex_dups *out, struct ims_error *err)
{
    struct vindex_dups_options def;
    if (!o) {
        vindex_dups_options_default(&def);
        o = &def;
    }
    IMS_RETURN_ERROR_IF(!out || (n && (!ids || !x)) || dim <= 0 || dim > VINDEX_MAX_DIM, err,
                        IMS_ERR_INVALID, "duplicates: invalid arguments");
    IMS_RETURN_ERROR_IF(!(o->threshold > 0.0f && o->threshold <= 1.0f), err, IMS_ERR_INVALID,
                        "duplicates: threshold must be in (0, 1]");
    IMS_RETURN_ERROR_IF(o->k < 1 || o->k > 1024 || o->nprobe < 0, err, IMS_ERR_INVALID,
                        "duplicates: k must be 1..1024");
    IMS_RETURN_ERROR_IF(n > UINT32_MAX / 64, err, IMS_ERR_INVALID,
                        "duplicates: too many vectors");
    memset(out, 0, sizeof(*out));
    out->n_vectors = n;
    if (n < 2)
        return IMS_OK;
    struct job j;
    memset(&j, 0, sizeof(j));
    j.x = x;
    j.n = n;
    j.dim = dim;
    j.threshold = o->threshold;
    j.k = o->k;
    atomic_init(&j.next_cell, 0);
    uint32_t *bufs[4] = {0};
    enum ims_status st = IMS_OK;
    struct edges all = {0};
    if (n <= o->exact_max) {
        /* every pair, once: the upper triangle in row blocks */
        j.n_cells = (n + RB - 1) / RB;
        j.identity = 1;
        out->exact = 1;
    } else {
        st = partition(x, n, dim, o->nprobe ? o->nprobe : 8, &j, bufs, err);
        if (st != IMS_OK)
            goto out;
    }
    st = run_job(&j, o->n_threads, &all, err);
    if (st == IMS_OK)
        st = make_groups(ids, n, &all, out, err);
out:
    ims_free(all.v);
    for (int i = 0; i < 4; i++)
        ims_free(bufs[i]);
    if (st == IMS_OK)
        out->n_vectors = n;
    return st;
}

struct gather {
    int64_t *ids;
    float *x;
    size_t n, cap;
    int dim;
};

static int gather_fn(void *user, const int64_t *ids, const float *v, size_t n, int dim)
{
    struct gather *g = user;
    if (g->n + n > g->cap) {
        size_t nc = IMS_MAX(g->cap * 2, g->n + n);
        int64_t *pi = ims_realloc(g->ids, nc * sizeof(int64_t));
        if (!pi)
            return 1;
        g->ids = pi;
        float *px = ims_realloc(g->x, nc * (size_t)dim * sizeof(float));
        if (!px)
            return 1;
        g->x = px;
        g->cap = nc;
    }
    memcpy(g->ids + g->n, ids, n * sizeof(int64_t));
    memcpy(g->x + g->n * (size_t)dim, v, n * (size_t)dim * sizeof(float));
    g->n += n;
    return 0;
}

enum ims_status vindex_duplicates(struct vindex *vx, const struct vindex_dups_options *o,
                                  struct vindex_dups *out, struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!vx || !out, err, IMS_ERR_INVALID, "duplicates: invalid arguments");
    struct gather g = {0};
    g.dim = vindex_dim(vx);
    g.cap = vindex_count(vx) + 1;
    g.ids = ims_malloc(g.cap * sizeof(int64_t));
    g.x = ims_malloc(g.cap * (size_t)g.dim * sizeof(float));
    enum ims_status st = IMS_OK;
    if (!g.ids || !g.x)
        st = ims_error_set(err, IMS_ERR_NOMEM, "duplicates: out of memory for the vectors");
    if (st == IMS_OK) {
        st = vindex_scan(vx, gather_fn, &g, err);
        if (st == IMS_ERR_CANCELLED)
            st = ims_error_set(err, IMS_ERR_NOMEM, "duplicates: out of memory for the vectors");
    }
    if (st == IMS_OK)
        st = vindex_duplicates_of(g.ids, g.x, g.n, g.dim, o, out, err);
    ims_free(g.ids);
    ims_free(g.x);
    return st;
}
