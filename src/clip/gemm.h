/* SPDX-License-Identifier: MIT */
/*
 * gemm.h: the clip module's matrix products, private to src/clip.
 *
 * A thin layer over oneDNN's matmul primitive (Debian's libdnnl 2.6, C API)
 * with the three things the forward pass needs and no more:
 *
 *   - gemm_weights: a PyTorch Linear weight W (N, K) [out][in] plus bias,
 *     reordered ONCE into the blocked layout oneDNN's brgemm kernel prefers
 *     (format_tag::any), in f32 or bf16. The layout does not depend on the
 *     number of rows M (checked on this machine for M = 1..1600), so one
 *     packed copy serves every batch size.
 *   - gemm_op (linear): dst (M, N) = act(src (M, K) W^T + b) [+ dst], the
 *     activation and the residual add fused into the kernel's epilogue as
 *     oneDNN post-ops (eltwise swish/gelu, sum). One primitive per M (runtime
 *     dimensions would make oneDNN fall back to its unpacked gemm:jit path).
 *   - gemm_op (bmm): batched strided products for attention, (B, H) batches
 *     of (M, K) x (K, N) reading Q, K, V straight out of the fused QKV
 *     activations through strides, so heads are never copied out.
 *
 * Threading: oneDNN in Debian is built with OpenMP (libgomp). All of the
 * forward pass's parallelism lives there; clip__gemm_backend_enter() sets the
 * calling thread's OpenMP thread count to the model's n_threads before each
 * pass. A backend, its ops and its scratchpad are used by one thread at a
 * time: the caller serialises (forward.c holds the engine mutex).
 *
 * Memory: ops are created with a user scratchpad; the backend owns one
 * scratchpad buffer sized for the largest op created so far, so running an
 * op allocates nothing.
 */
#ifndef IMGSEARCH_CLIP_GEMM_H
#define IMGSEARCH_CLIP_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "imgsearch/base.h"

enum clip_gemm_dt { CLIP_GEMM_F32 = 0, CLIP_GEMM_BF16 };
enum clip_gemm_act {
    CLIP_GEMM_ACT_NONE = 0,
    CLIP_GEMM_ACT_QUICK_GELU,
    CLIP_GEMM_ACT_GELU,
    CLIP_GEMM_ACT_GELU_TANH
};

struct clip_gemm_backend;
struct clip_gemm_weights;
struct clip_gemm_op;

/* Creates the oneDNN CPU engine and stream. n_threads >= 1. On success *out
 * owns the backend; release it with clip__gemm_backend_free (after every op and
 * weights created from it). */
enum ims_status clip__gemm_backend_new(int n_threads, struct clip_gemm_backend **out,
                                       struct ims_error *err);
void clip__gemm_backend_free(struct clip_gemm_backend *be);
/* Non-zero when oneDNN has a native (non-reference) bf16 matmul on this CPU. */
int clip__gemm_backend_has_bf16(struct clip_gemm_backend *be);
/* Sets the calling thread's OpenMP thread count to the backend's n_threads;
 * call before creating or running ops on a thread. */
void clip__gemm_backend_enter(struct clip_gemm_backend *be);
int clip__gemm_backend_n_threads(const struct clip_gemm_backend *be);

/* Packs w (n, k) row-major [out][in] and bias (n, may be NULL = zeros) into
 * oneDNN's preferred layout in precision `dt` (the bias stays f32). The
 * inputs are copied; *out owns the packed copy (clip__gemm_weights_free). */
enum ims_status clip__gemm_weights_pack(struct clip_gemm_backend *be, const float *w,
                                        const float *bias, int n, int k, enum clip_gemm_dt dt,
                                        struct clip_gemm_weights **out, struct ims_error *err);
void clip__gemm_weights_free(struct clip_gemm_weights *w);
size_t clip__gemm_weights_bytes(const struct clip_gemm_weights *w);

struct clip_gemm_linear_desc {
    int m;                 /* rows */
    int ld_src, ld_dst;    /* row strides in elements (>= k, >= n) */
    enum clip_gemm_dt src_dt, dst_dt;
    enum clip_gemm_act act;     /* applied to (src W^T + b) */
    int accumulate;        /* dst += ... (residual add) instead of dst = ... */
};

/* An op computing dst = act(src W^T + b) (+ dst) for weights shaped like
 * `like` (any gemm_weights of the same n, k and precision may be run with
 * it). *out owns the op (clip__gemm_op_free). */
enum ims_status clip__gemm_op_linear(struct clip_gemm_backend *be,
                                     const struct clip_gemm_weights *like,
                                     const struct clip_gemm_linear_desc *d,
                                     struct clip_gemm_op **out, struct ims_error *err);
void clip__gemm_linear_run(struct clip_gemm_op *op, const struct clip_gemm_weights *w,
                           const void *src, void *dst);

struct clip_gemm_bmm_desc {
    int64_t b, h, m, k, n;                 /* dst[b][h] (m, n) = src[b][h] (m, k) x wei[b][h] (k, n) */
    int64_t src_strides[4];                /* element strides of (b, h, m, k) */
    int64_t wei_strides[4];                /* element strides of (b, h, k, n) */
    int64_t dst_strides[4];                /* element strides of (b, h, m, n) */
    enum clip_gemm_dt src_dt, wei_dt, dst_dt;
};

/* A batched strided product (attention). *out owns the op. */
enum ims_status clip__gemm_op_bmm(struct clip_gemm_backend *be, const struct clip_gemm_bmm_desc *d,
                            struct clip_gemm_op **out, struct ims_error *err);
void clip__gemm_bmm_run(struct clip_gemm_op *op, const void *src, const void *wei, void *dst);

/* oneDNN's implementation name for the op ("brg:avx512_core", ...). */
const char *clip__gemm_op_impl(const struct clip_gemm_op *op);
void clip__gemm_op_free(struct clip_gemm_op *op);

/* ---- bf16 helpers ---------------------------------------------------------------- */

/* Round to nearest even, as oneDNN's reorder does; NaN stays NaN. */
static inline uint16_t clip__gemm_f32_to_bf16(float f) { return ims_f32_to_bf16(f); }

#endif
