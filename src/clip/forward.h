/* SPDX-License-Identifier: MIT */
/*
 * forward.h: the transformer's small kernels (everything that is not a
 * matrix product), private to src/clip; forward.c strings them together with
 * the products of gemm.h. Exposed here so that tests check each one against
 * a plain reference on synthetic data.
 *
 * Together they are a few percent of a pass (the matrix products are the
 * rest). Under GCC, LayerNorm and softmax split their rows over the same
 * libgomp team oneDNN uses (forward_kernels.c); otherwise they run on the
 * calling thread.
 *
 * Activation buffers of precision `dt` hold float (CLIP_GEMM_F32) or bf16 stored
 * as uint16_t (CLIP_GEMM_BF16).
 */
#ifndef IMGSEARCH_CLIP_FORWARD_H
#define IMGSEARCH_CLIP_FORWARD_H

#include "gemm.h"

/* y (rows, w) [ld_y] = LayerNorm(x (rows, w) [ld_x]) * g + b, statistics in
 * float over each row (biased variance, eps inside the square root, as
 * torch.nn.LayerNorm; float statistics, two-pass). y may alias x when dt is CLIP_GEMM_F32 and ld_y
 * == ld_x. */
void clip__forward_layernorm(const float *x, int ld_x, int rows, int w, const float *g,
                             const float *b, float eps, void *y, int ld_y, enum clip_gemm_dt dt);

/* Attention softmax over `n_mat` (t, t) score matrices (scores (n_mat, t, t)
 * f32, dense): p[i][j] = softmax_j(scale * s[i][j]) with j <= i only when
 * `causal` (the masked entries become 0). Writes probs (n_mat, t, t) in dt;
 * the scores are overwritten (scratch); probs may alias scores when dt is
 * CLIP_GEMM_F32. */
void clip__forward_softmax(float *scores, int n_mat, int t, float scale, int causal, void *probs,
                     enum clip_gemm_dt dt);

/* im2col for a stride-P, no-padding, no-bias patch convolution:
 * pixels (n, c, s, s) CHW -> patches (n * (s/p)^2, c*p*p) in dt, patch rows
 * in raster order (row-major over the (s/p, s/p) grid), each row ordered
 * (channel, dy, dx) like the conv weight (W, c, p, p). */
void clip__forward_im2col(const float *pixels, int n, int c, int s, int p, void *patches,
                    enum clip_gemm_dt dt);

/* q, k, v of one layer stacked into one (3W, W) weight and (3W) bias: the
 * fused QKV product's operand, which both text paths (and the vision one)
 * pack from. */
struct clip_layer_weights;
void clip__forward_stack_qkv(const struct clip_layer_weights *lw, int w, float *wqkv, float *bqkv);

/* Reference activations (the GEMM epilogue does them inside oneDNN; tests
 * compare against these). */
float clip__forward_act_ref(float x, int act /* enum clip_act */);

#endif
