/* SPDX-License-Identifier: MIT */
/*
 * tokenizer.h: the loaded CLIP tokenizer, shared by the file that builds it
 * (tokenizer.c: vocab/merges parsing) and the files that read it
 * (tokenize.c: the per-call pipeline; tokenizer_tables.c: the HTML
 * character references). Private to the clip module.
 */
#ifndef IMGSEARCH_CLIP_TOKENIZER_H
#define IMGSEARCH_CLIP_TOKENIZER_H

#include "clip_int.h"

#include <stddef.h>
#include <stdint.h>

#define TOK_MAX_TEXT_BYTES (4u << 20)   /* clip_tokenize input limit */
#define TOK_MAX_TOKENS (CLIP_CONTEXT_MAX - 2)
#define TOK_SOT "<|startoftext|>"
#define TOK_EOT "<|endoftext|>"

struct clip_tok_pair_slot {
    uint64_t key; /* (left id << 32) | right id */
    int32_t rank; /* -1: empty */
};

/* Immutable once loaded: any number of threads may tokenize with it. */
struct clip_tokenizer {
    char *strings;         /* (strings_len): every vocabulary string, back to back */
    size_t strings_len, strings_cap;
    uint32_t *str_off;     /* (n_ids): offset of id's string in `strings` */
    uint32_t *str_len;     /* (n_ids): its length in bytes; 0: id unused */
    int32_t n_ids;
    int32_t *vmap;         /* (vmap_mask + 1): id or -1, by string hash */
    uint32_t vmap_mask;
    struct clip_tok_pair_slot *pmap; /* (pmap_mask + 1) */
    uint32_t pmap_mask;
    int32_t *merge_a;      /* (n_merges): left part id of the merge of rank r */
    int32_t *merge_b;      /* (n_merges): right part id */
    int32_t *merge_out;    /* (n_merges): merged symbol id */
    int32_t n_merges;
    int32_t byte_sym[256];     /* id of byte b's symbol inside a word */
    int32_t byte_sym_end[256]; /* id of byte b's symbol + "</w>" ending a word */
    int32_t sot_id, eot_id;
};

/* Writes code point c as UTF-8 into out (room for 4); returns the bytes. */
static inline size_t clip__tok_utf8_put(uint32_t c, char *out)
{
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* The (left id, right id) -> rank map BPE looks merges up in. */
static inline uint32_t clip__tok_pair_hash(uint64_t key)
{
    key *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(key >> 32);
}

static inline int32_t clip__tok_pair_rank(const struct clip_tokenizer *tok, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t i = clip__tok_pair_hash(key) & tok->pmap_mask;
    for (;;) {
        const struct clip_tok_pair_slot *s = &tok->pmap[i];
        if (s->rank < 0)
            return -1;
        if (s->key == key)
            return s->rank;
        i = (i + 1) & tok->pmap_mask;
    }
}

/* ---- html.unescape's named references (tokenizer_tables.c) ---- */

struct clip_tok_entity {
    const char *name; /* without ';' */
    uint32_t cp;
    uint8_t bare;     /* also valid without ';' */
};
extern const struct clip_tok_entity clip__tok_entities[];
extern const size_t clip__tok_n_entities;

#endif
