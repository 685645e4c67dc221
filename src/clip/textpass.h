/* SPDX-License-Identifier: MIT */
/*
 * textpass.h: the text tower for few rows (private to src/clip).
 *
 * A text query is a handful of tokens: 8 rows for a 6-word query. At that
 * size a transformer layer is four matrix-vector-like products whose cost is
 * streaming the weights from memory, and the general GEMM path (oneDNN: one
 * call, one OpenMP region per product) spends as long on call and wake-up
 * overhead as on the weights. This pass owns its own packed weights and one
 * kernel shape (rows x 32 output columns, AVX-512, f32 FMA or bf16 dot
 * products), runs a whole batch of sequences in one parallel region with
 * spinning barriers between steps, and concatenates the sequences of several
 * queries into one set of rows (attention stays per sequence), so concurrent
 * queries share one pass over the weights.
 *
 * Available when the CPU has AVX-512F (bf16 also needs AVX512_BF16) and the
 * tower's sizes are multiples of 32 (every CLIP checkpoint); forward.c falls
 * back to the oneDNN path otherwise, or when IMS_CLIP_TEXT_KERNEL=onednn.
 */
#ifndef IMGSEARCH_CLIP_TEXTPASS_H
#define IMGSEARCH_CLIP_TEXTPASS_H

#include <stdatomic.h>

#include "clip_int.h"
#include "gemm.h"

/* Rows one pass can hold (a full 77-token context fits, with room to batch). */
#define CLIP_TEXTPASS_MAX_ROWS 320

struct clip_textpass;

/* Non-zero when this CPU and the config allow the pass in precision dt. */
int clip__textpass_supported(const struct clip_config *c, enum clip_gemm_dt dt);

/* Packs the text tower's weights (copies: the mapped file is not read
 * during a pass). n_threads >= 1 is the size of the pass's OpenMP team. */
enum ims_status clip__textpass_new(const struct clip_config *c, const struct clip_text_weights *tw,
                             enum clip_gemm_dt dt, int n_threads, struct clip_textpass **out,
                             struct ims_error *err);
void clip__textpass_free(struct clip_textpass *tp);
/* Bytes of packed weights and activation buffers. */
size_t clip__textpass_bytes(const struct clip_textpass *tp);

/* Encodes n_seq sequences in one pass: sequence i is ids[i][0 .. lens[i]),
 * already cut after the pooled (end) token, which is its last row; ids are
 * in the vocabulary and the lengths in 1 .. max_position_embeddings with a
 * total of at most CLIP_TEXTPASS_MAX_ROWS (the caller checks). Writes the
 * projected, unnormalised embedding of sequence i to outs[i] (D floats). */
void clip__textpass_encode(struct clip_textpass *tp, int n_seq, const int32_t *const *ids, const int *lens,
                     float *const *outs);
/* Passes run on the calling thread alone (busy machine, a team of one, or
 * IMS_TEXT_ADAPTIVE=alone), process-wide; for tests. */
extern atomic_long clip__textpass_alone_passes;
/* Non-zero when the pass was built with OpenMP (else every pass is alone). */
int clip__textpass_has_team(void);

#endif
