/* SPDX-License-Identifier: MIT */
/*
 * index_topk.c: the bounded top-k every search keeps (index__topk, declared
 * in index_int.h): a min-heap on (score, -id) whose root is the worst kept
 * result, so the scans' "would it enter?" test (index__topk_would_take) is
 * one compare against the root. The order is strict (score, then id), which
 * is why merged per-thread heaps and batched searches end exactly as one
 * scan alone would. Kept apart from the kernels (index_scan.c): it is plain
 * C with no ISA dispatch, and every engine uses it.
 */

#include "index_int.h"

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
