/* SPDX-License-Identifier: MIT */
/*
 * gemm.c: oneDNN matmul primitives with prepacked weights (see gemm.h for
 * the contract).
 *
 * Why oneDNN and not OpenBLAS or our own kernels: measured on this machine
 * kind (the workplace's shared GEMM.md figures and bench/bench_clip.c), OpenBLAS sgemm
 * repacks B on every call and drops to ~115 GFLOP/s at the 50-row shapes of
 * one image (21 at 8 rows), while oneDNN's brgemm kernels on weights packed
 * once reach 170-210 GFLOP/s f32 and 360-420 bf16 at the same shapes.
 * Writing AVX-512 kernels of that quality here would take longer than the
 * whole module.
 *
 * Every op is created with: plain row-major activations (strided where the
 * caller says so), the packed weights descriptor of its gemm_weights, f32
 * bias of shape (1, N), post-ops for the activation and the residual add,
 * and a user scratchpad (the backend's buffer, grown at op creation only).
 * Ops keep dnnl_memory objects without storage and bind the caller's
 * pointers at run time, so running allocates nothing.
 */
#include "gemm.h"

#include <string.h>

#include <oneapi/dnnl/dnnl.h>

/* From libgomp (linked by src/clip/CMakeLists.txt; oneDNN uses the same
 * runtime). Declared here because clang installs no omp.h for libgomp. */
extern void omp_set_num_threads(int n);

struct clip_gemm_backend {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    int n_threads;
    int has_bf16;
    void *scratch; /* scratch_bytes, shared by every op of this backend */
    size_t scratch_bytes;
};

struct clip_gemm_weights {
    int n, k;
    enum clip_gemm_dt dt;
    dnnl_memory_desc_t md; /* packed layout */
    void *packed;          /* md's size */
    size_t packed_bytes;
    float *bias;           /* (n) */
};

enum gemm_kind { GEMM_KIND_LINEAR, GEMM_KIND_BMM };

struct clip_gemm_op {
    enum gemm_kind kind;
    struct clip_gemm_backend *be;
    dnnl_primitive_t prim;
    const char *impl;
    int n, k;             /* linear: the weights it expects */
    enum clip_gemm_dt wdt;
    dnnl_memory_desc_t wmd;
    dnnl_memory_t src, wei, bias, dst, scratch;
};

/* ---- errors ------------------------------------------------------------------------ */

static enum ims_status gemm_fail(struct ims_error *err, dnnl_status_t s, const char *what)
{
    enum ims_status st = s == dnnl_out_of_memory ? IMS_ERR_NOMEM : IMS_ERR_INTERNAL;
    return ims_error_set(err, st, "oneDNN: %s failed (status %d)", what, (int)s);
}

#define GEMM_TRY(call)                                                                             \
    do {                                                                                           \
        dnnl_status_t s_ = (call);                                                                 \
        if (s_ != dnnl_success) {                                                                  \
            st = gemm_fail(err, s_, #call);                                                        \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

static dnnl_data_type_t gemm_dnnl_dt(enum clip_gemm_dt dt)
{
    return dt == CLIP_GEMM_BF16 ? dnnl_bf16 : dnnl_f32;
}

/* ---- backend ----------------------------------------------------------------------- */

static int gemm_probe_bf16(struct clip_gemm_backend *be)
{
    dnnl_memory_desc_t s, w, d;
    dnnl_dims_t sd = {64, 256}, wd = {256, 256}, dd = {64, 256};
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd = NULL;
    const char *impl = NULL;
    int ok = 0;
    if (dnnl_memory_desc_init_by_tag(&s, 2, sd, dnnl_bf16, dnnl_ab) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&w, 2, wd, dnnl_bf16, dnnl_format_tag_any) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&d, 2, dd, dnnl_f32, dnnl_ab) != dnnl_success ||
        dnnl_matmul_desc_init(&md, &s, &w, NULL, &d) != dnnl_success)
        return 0;
    if (dnnl_primitive_desc_create(&pd, &md, NULL, be->engine, NULL) != dnnl_success)
        return 0;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        ok = strncmp(impl, "ref", 3) != 0 && strstr(impl, "bf16") != NULL;
    dnnl_primitive_desc_destroy(pd);
    return ok;
}

enum ims_status clip__gemm_backend_new(int n_threads, struct clip_gemm_backend **out,
                                       struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct clip_gemm_backend *be = ims_calloc(1, sizeof(*be));
    if (!be)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory (gemm backend)");
    be->n_threads = n_threads < 1 ? 1 : n_threads;
    clip__gemm_backend_enter(be);
    GEMM_TRY(dnnl_engine_create(&be->engine, dnnl_cpu, 0));
    GEMM_TRY(dnnl_stream_create(&be->stream, be->engine, dnnl_stream_default_flags));
    be->has_bf16 = gemm_probe_bf16(be);
    *out = be;
    be = NULL;
out:
    clip__gemm_backend_free(be);
    return st;
}

void clip__gemm_backend_free(struct clip_gemm_backend *be)
{
    if (!be)
        return;
    if (be->stream)
        dnnl_stream_destroy(be->stream);
    if (be->engine)
        dnnl_engine_destroy(be->engine);
    ims_free(be->scratch);
    ims_free(be);
}

int clip__gemm_backend_has_bf16(struct clip_gemm_backend *be)
{
    return be->has_bf16;
}

void clip__gemm_backend_enter(struct clip_gemm_backend *be)
{
    omp_set_num_threads(be->n_threads);
}

int clip__gemm_backend_n_threads(const struct clip_gemm_backend *be)
{
    return be->n_threads;
}

/* Grows the shared scratchpad to hold `pd`'s; called at op creation only. */
static enum ims_status gemm_scratch_reserve(struct clip_gemm_backend *be, dnnl_primitive_desc_t pd,
                                           struct ims_error *err)
{
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t need = md ? dnnl_memory_desc_get_size(md) : 0;
    if (need <= be->scratch_bytes)
        return IMS_OK;
    void *p = ims_aligned_alloc(64, need);
    if (!p)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory (%zu bytes of scratchpad)", need);
    ims_free(be->scratch);
    be->scratch = p;
    be->scratch_bytes = need;
    return IMS_OK;
}

/* ---- weights ----------------------------------------------------------------------- */

/* Primitive descriptor of a linear op; wmd NULL asks oneDNN for its layout. */
static dnnl_status_t gemm_linear_pd(struct clip_gemm_backend *be, int m, int n, int k, int ld_src,
                                    int ld_dst, enum clip_gemm_dt src_dt, enum clip_gemm_dt wdt,
                                    enum clip_gemm_dt dst_dt, const dnnl_memory_desc_t *wmd,
                                    enum clip_gemm_act act, int accumulate,
                                    dnnl_primitive_desc_t *pd)
{
    dnnl_memory_desc_t s, w, b, d;
    dnnl_dims_t sd = {m, k}, wd = {k, n}, bd = {1, n}, dd = {m, n};
    dnnl_dims_t ss = {ld_src, 1}, ds = {ld_dst, 1};
    dnnl_matmul_desc_t mm;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_status_t s_;

    if ((s_ = dnnl_memory_desc_init_by_strides(&s, 2, sd, gemm_dnnl_dt(src_dt), ss)) ||
        (s_ = dnnl_memory_desc_init_by_strides(&d, 2, dd, gemm_dnnl_dt(dst_dt), ds)) ||
        (s_ = dnnl_memory_desc_init_by_tag(&b, 2, bd, dnnl_f32, dnnl_ab)))
        return s_;
    if (wmd)
        w = *wmd;
    else if ((s_ = dnnl_memory_desc_init_by_tag(&w, 2, wd, gemm_dnnl_dt(wdt), dnnl_format_tag_any)))
        return s_;
    if ((s_ = dnnl_matmul_desc_init(&mm, &s, &w, &b, &d)))
        return s_;
    if ((s_ = dnnl_primitive_attr_create(&attr)) || (s_ = dnnl_post_ops_create(&po)))
        goto out;
    /* The sum post-op comes first: dst = dst_old + (src W^T + b), and the
     * activation, when both are asked for, applies to the product only in
     * our uses (no op both accumulates and activates). */
    if (accumulate && (s_ = dnnl_post_ops_append_sum(po, 1.0f)))
        goto out;
    if (act == CLIP_GEMM_ACT_QUICK_GELU)
        s_ = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_swish, 1.702f, 0.0f);
    else if (act == CLIP_GEMM_ACT_GELU)
        s_ = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_erf, 0.0f, 0.0f);
    else if (act == CLIP_GEMM_ACT_GELU_TANH)
        s_ = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_tanh, 0.0f, 0.0f);
    if (s_)
        goto out;
    if ((s_ = dnnl_primitive_attr_set_post_ops(attr, po)) ||
        (s_ = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)))
        goto out;
    s_ = dnnl_primitive_desc_create(pd, &mm, attr, be->engine, NULL);
out:
    if (po)
        dnnl_post_ops_destroy(po);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return s_;
}

enum ims_status clip__gemm_weights_pack(struct clip_gemm_backend *be, const float *w,
                                        const float *bias, int n, int k, enum clip_gemm_dt dt,
                                        struct clip_gemm_weights **out, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    dnnl_primitive_desc_t pd = NULL, rpd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_memory_t src_mem = NULL, dst_mem = NULL;
    dnnl_memory_desc_t src_md;
    /* W (n, k) [out][in] is the matmul's B (k, n) with strides (1, k): "ba". */
    dnnl_dims_t wd = {k, n};
    struct clip_gemm_weights *gw = ims_calloc(1, sizeof(*gw));
    if (!gw)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory (packed weights)");
    gw->n = n;
    gw->k = k;
    gw->dt = dt;
    clip__gemm_backend_enter(be);
    /* The layout oneDNN picks does not depend on M (gemm.h); 64 rows is a
     * shape where it picks its brgemm kernel. */
    GEMM_TRY(gemm_linear_pd(be, 64, n, k, k, n, dt, dt, CLIP_GEMM_F32, NULL, CLIP_GEMM_ACT_NONE, 0,
                            &pd));
    gw->md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    gw->packed_bytes = dnnl_memory_desc_get_size(&gw->md);
    gw->packed = ims_aligned_alloc(64, gw->packed_bytes);
    gw->bias = ims_aligned_alloc(64, (size_t)n * sizeof(float));
    if (!gw->packed || !gw->bias) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory (%zu bytes of packed weights)",
                           gw->packed_bytes);
        goto out;
    }
    if (bias)
        memcpy(gw->bias, bias, (size_t)n * sizeof(float));
    else
        memset(gw->bias, 0, (size_t)n * sizeof(float));
    GEMM_TRY(dnnl_memory_desc_init_by_tag(&src_md, 2, wd, dnnl_f32, dnnl_ba));
    GEMM_TRY(dnnl_memory_create(&src_mem, &src_md, be->engine, (void *)w));
    GEMM_TRY(dnnl_memory_create(&dst_mem, &gw->md, be->engine, gw->packed));
    GEMM_TRY(dnnl_reorder_primitive_desc_create(&rpd, &src_md, be->engine, &gw->md, be->engine,
                                                NULL));
    GEMM_TRY(dnnl_primitive_create(&reorder, rpd));
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, src_mem}, {DNNL_ARG_TO, dst_mem}};
    GEMM_TRY(dnnl_primitive_execute(reorder, be->stream, 2, args));
    GEMM_TRY(dnnl_stream_wait(be->stream));
    *out = gw;
    gw = NULL;
out:
    if (reorder)
        dnnl_primitive_destroy(reorder);
    if (rpd)
        dnnl_primitive_desc_destroy(rpd);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (src_mem)
        dnnl_memory_destroy(src_mem);
    if (dst_mem)
        dnnl_memory_destroy(dst_mem);
    clip__gemm_weights_free(gw);
    return st;
}

void clip__gemm_weights_free(struct clip_gemm_weights *w)
{
    if (!w)
        return;
    ims_free(w->packed);
    ims_free(w->bias);
    ims_free(w);
}

size_t clip__gemm_weights_bytes(const struct clip_gemm_weights *w)
{
    return w->packed_bytes + (size_t)w->n * sizeof(float);
}

/* ---- ops ------------------------------------------------------------------------- */

/* Creates the primitive and its storage-less memory objects from `pd`
 * (consumed). */
static enum ims_status gemm_op_finish(struct clip_gemm_op *op, dnnl_primitive_desc_t pd,
                                      struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    const char *impl = NULL;
    struct clip_gemm_backend *be = op->be;
    st = gemm_scratch_reserve(be, pd, err);
    if (st != IMS_OK)
        goto out;
    GEMM_TRY(dnnl_primitive_create(&op->prim, pd));
    GEMM_TRY(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    /* The name is static in oneDNN's implementation list. */
    op->impl = impl ? impl : "?";
    GEMM_TRY(dnnl_memory_create(&op->src, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0),
                                be->engine, DNNL_MEMORY_NONE));
    GEMM_TRY(dnnl_memory_create(&op->wei,
                                dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
                                be->engine, DNNL_MEMORY_NONE));
    GEMM_TRY(dnnl_memory_create(&op->dst, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0),
                                be->engine, DNNL_MEMORY_NONE));
    if (op->kind == GEMM_KIND_LINEAR)
        GEMM_TRY(dnnl_memory_create(&op->bias,
                                    dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1),
                                    be->engine, DNNL_MEMORY_NONE));
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (smd && dnnl_memory_desc_get_size(smd) > 0)
        GEMM_TRY(dnnl_memory_create(&op->scratch, smd, be->engine, DNNL_MEMORY_NONE));
out:
    dnnl_primitive_desc_destroy(pd);
    return st;
}

enum ims_status clip__gemm_op_linear(struct clip_gemm_backend *be,
                                     const struct clip_gemm_weights *like,
                                     const struct clip_gemm_linear_desc *d,
                                     struct clip_gemm_op **out, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    dnnl_primitive_desc_t pd = NULL;
    struct clip_gemm_op *op = ims_calloc(1, sizeof(*op));
    if (!op)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory (gemm op)");
    IMS_ASSERT(d->m > 0 && d->ld_src >= like->k && d->ld_dst >= like->n);
    op->kind = GEMM_KIND_LINEAR;
    op->be = be;
    op->n = like->n;
    op->k = like->k;
    op->wdt = like->dt;
    op->wmd = like->md;
    clip__gemm_backend_enter(be);
    GEMM_TRY(gemm_linear_pd(be, d->m, like->n, like->k, d->ld_src, d->ld_dst, d->src_dt, like->dt,
                            d->dst_dt, &like->md, d->act, d->accumulate, &pd));
    st = gemm_op_finish(op, pd, err);
    pd = NULL;
    if (st != IMS_OK)
        goto out;
    *out = op;
    op = NULL;
out:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    clip__gemm_op_free(op);
    return st;
}

enum ims_status clip__gemm_op_bmm(struct clip_gemm_backend *be, const struct clip_gemm_bmm_desc *d,
                            struct clip_gemm_op **out, struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_memory_desc_t s, w, o;
    dnnl_dims_t sd = {d->b, d->h, d->m, d->k}, wd = {d->b, d->h, d->k, d->n},
                dd = {d->b, d->h, d->m, d->n};
    dnnl_matmul_desc_t mm;
    struct clip_gemm_op *op = ims_calloc(1, sizeof(*op));
    if (!op)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory (gemm op)");
    op->kind = GEMM_KIND_BMM;
    op->be = be;
    clip__gemm_backend_enter(be);
    /* oneDNN reads strides as a full dnnl_dims_t (12 entries). */
    dnnl_dims_t ss = {0}, ws = {0}, ds = {0};
    memcpy(ss, d->src_strides, sizeof(d->src_strides));
    memcpy(ws, d->wei_strides, sizeof(d->wei_strides));
    memcpy(ds, d->dst_strides, sizeof(d->dst_strides));
    GEMM_TRY(dnnl_memory_desc_init_by_strides(&s, 4, sd, gemm_dnnl_dt(d->src_dt), ss));
    GEMM_TRY(dnnl_memory_desc_init_by_strides(&w, 4, wd, gemm_dnnl_dt(d->wei_dt), ws));
    GEMM_TRY(dnnl_memory_desc_init_by_strides(&o, 4, dd, gemm_dnnl_dt(d->dst_dt), ds));
    GEMM_TRY(dnnl_matmul_desc_init(&mm, &s, &w, NULL, &o));
    GEMM_TRY(dnnl_primitive_attr_create(&attr));
    GEMM_TRY(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    GEMM_TRY(dnnl_primitive_desc_create(&pd, &mm, attr, be->engine, NULL));
    st = gemm_op_finish(op, pd, err);
    pd = NULL;
    if (st != IMS_OK)
        goto out;
    *out = op;
    op = NULL;
out:
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    clip__gemm_op_free(op);
    return st;
}

static void gemm_exec(struct clip_gemm_op *op)
{
    dnnl_exec_arg_t args[5];
    int n = 0;
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, op->src};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, op->wei};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DST, op->dst};
    if (op->bias)
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, op->bias};
    if (op->scratch) {
        dnnl_memory_set_data_handle(op->scratch, op->be->scratch);
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, op->scratch};
    }
    /* Shapes and buffers were validated at creation; a failure here is a
     * broken invariant of ours, not bad input. */
    IMS_ASSERT(dnnl_primitive_execute(op->prim, op->be->stream, n, args) == dnnl_success);
    IMS_ASSERT(dnnl_stream_wait(op->be->stream) == dnnl_success);
}

void clip__gemm_linear_run(struct clip_gemm_op *op, const struct clip_gemm_weights *w,
                           const void *src, void *dst)
{
    IMS_ASSERT(op->kind == GEMM_KIND_LINEAR && w->n == op->n && w->k == op->k && w->dt == op->wdt);
    dnnl_memory_set_data_handle(op->src, (void *)src);
    dnnl_memory_set_data_handle(op->wei, w->packed);
    dnnl_memory_set_data_handle(op->bias, w->bias);
    dnnl_memory_set_data_handle(op->dst, dst);
    gemm_exec(op);
}

void clip__gemm_bmm_run(struct clip_gemm_op *op, const void *src, const void *wei, void *dst)
{
    IMS_ASSERT(op->kind == GEMM_KIND_BMM);
    dnnl_memory_set_data_handle(op->src, (void *)src);
    dnnl_memory_set_data_handle(op->wei, (void *)wei);
    dnnl_memory_set_data_handle(op->dst, dst);
    gemm_exec(op);
}

const char *clip__gemm_op_impl(const struct clip_gemm_op *op)
{
    return op->impl;
}

void clip__gemm_op_free(struct clip_gemm_op *op)
{
    if (!op)
        return;
    if (op->prim)
        dnnl_primitive_destroy(op->prim);
    dnnl_memory_t *mems[] = {&op->src, &op->wei, &op->bias, &op->dst, &op->scratch};
    for (size_t i = 0; i < IMS_ARRAY_LEN(mems); i++)
        if (*mems[i])
            dnnl_memory_destroy(*mems[i]);
    ims_free(op);
}
