/* SPDX-License-Identifier: MIT */
/*
 * tokenizer.c: loading OpenAI's CLIP tokenizer (clip/simple_tokenizer.py and
 * clip.tokenize(context_length=77, truncate=True)), reproduced id for id.
 *
 * This file loads the vocabulary and the merges (Hugging Face's vocab.json +
 * merges.txt, or OpenAI's bpe_simple_vocab_16e6.txt.gz) into the immutable
 * struct clip_tokenizer (tokenizer.h); tokenize.c is the per-call pipeline
 * that reads it.
 *
 * Vocabulary: every vocabulary string is interned once; ids index it. A
 * string -> id open-addressing map serves the byte symbols and loading, and
 * a (left id, right id) -> rank map serves BPE, whose symbols are ids, never
 * strings: a merge of rank r always yields the id merge_out[r]. Both maps
 * keep Python's dict semantics for duplicates (the last entry wins).
 *
 */

#include "clip_int.h"
#include "tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>
#include <zlib.h>

/* ==== limits of the files ==================================================== */

#define TOK_MAX_FILE_BYTES (32u << 20)  /* vocab.json is 1.6 MB, merges.txt 0.5 MB */
#define TOK_MAX_VOCAB (1 << 20)         /* ids are in [0, TOK_MAX_VOCAB) */
#define TOK_MAX_TOKEN_BYTES 1024        /* longest vocabulary string accepted */
#define TOK_N_MERGES 48894              /* 49152 - 256 - 2, both formats' cut */


/* ==== byte <-> unicode (bytes_to_unicode) ================================= */

/* simple_tokenizer.bytes_to_unicode(): printable Latin-1 bytes map to
 * themselves, the other 68 bytes to U+0100.. in byte order. */
static uint32_t tok_byte_char(int b)
{
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
        return (uint32_t)b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF)))
            n++;
    return 256u + (uint32_t)n;
}

/* The order of bytes_to_unicode().values(): the printable ranges first, then
 * the others; OpenAI's vocabulary list starts with the symbols in that order. */
static void tok_byte_order(int order[256])
{
    int k = 0;
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
            order[k++] = b;
    for (int b = 0; b < 256; b++)
        if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)))
            order[k++] = b;
}


/* ==== vocabulary maps ======================================================= */

static uint32_t tok_hash(const char *s, size_t n)
{
    uint64_t h = ims_fnv1a64(s, n); /* folded to 32 bits */
    return (uint32_t)(h ^ (h >> 32));
}

static uint32_t tok_pow2_at_least(size_t n)
{
    uint32_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

/* Appends a string to the arena and records it as id's string. */
static enum ims_status tok_intern(struct clip_tokenizer *tok, int32_t id, const char *s, size_t n,
                                  struct ims_error *err)
{
    if (tok->strings_len + n > tok->strings_cap) {
        size_t cap = tok->strings_cap ? tok->strings_cap : 1 << 16;
        while (cap < tok->strings_len + n)
            cap *= 2;
        if (cap > UINT32_MAX)
            return ims_error_set(err, IMS_ERR_TOO_LARGE, "vocabulary strings exceed 4 GB");
        char *p = ims_realloc(tok->strings, cap);
        if (!p)
            return ims_error_set(err, IMS_ERR_NOMEM, "out of memory loading the vocabulary");
        tok->strings = p;
        tok->strings_cap = cap;
    }
    memcpy(tok->strings + tok->strings_len, s, n);
    tok->str_off[id] = (uint32_t)tok->strings_len;
    tok->str_len[id] = (uint32_t)n;
    tok->strings_len += n;
    return IMS_OK;
}

static int32_t tok_vocab_get(const struct clip_tokenizer *tok, const char *s, size_t n)
{
    uint32_t i = tok_hash(s, n) & tok->vmap_mask;
    for (;;) {
        int32_t id = tok->vmap[i];
        if (id < 0)
            return -1;
        if (tok->str_len[id] == n && !memcmp(tok->strings + tok->str_off[id], s, n))
            return id;
        i = (i + 1) & tok->vmap_mask;
    }
}

/* Builds the string -> id map over ids 0..n_ids-1 in order, so that for a
 * string listed twice the later id wins (Python's {v: i for i, v in ...}). */
static enum ims_status tok_vocab_index(struct clip_tokenizer *tok, struct ims_error *err)
{
    uint32_t cap = tok_pow2_at_least((size_t)tok->n_ids * 2);
    tok->vmap = ims_malloc(sizeof(int32_t) * cap);
    if (!tok->vmap)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory loading the vocabulary");
    memset(tok->vmap, 0xFF, sizeof(int32_t) * cap);
    tok->vmap_mask = cap - 1;
    for (int32_t id = 0; id < tok->n_ids; id++) {
        uint32_t n = tok->str_len[id];
        if (n == 0)
            continue;
        const char *s = tok->strings + tok->str_off[id];
        uint32_t i = tok_hash(s, n) & tok->vmap_mask;
        for (;;) {
            int32_t o = tok->vmap[i];
            if (o < 0 || (tok->str_len[o] == n && !memcmp(tok->strings + tok->str_off[o], s, n))) {
                tok->vmap[i] = id;
                break;
            }
            i = (i + 1) & tok->vmap_mask;
        }
    }
    return IMS_OK;
}


static void tok_pair_put(struct clip_tokenizer *tok, int32_t a, int32_t b, int32_t rank)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t i = clip__tok_pair_hash(key) & tok->pmap_mask;
    for (;;) {
        struct clip_tok_pair_slot *s = &tok->pmap[i];
        if (s->rank < 0 || s->key == key) { /* a repeated pair: the later rank wins */
            s->key = key;
            s->rank = rank;
            return;
        }
        i = (i + 1) & tok->pmap_mask;
    }
}

/* ==== loading =================================================================== */

/* One merge line: the two symbol strings, borrowed from the file text. */
struct tok_merge_line {
    struct ims_str a, b;
};

static int tok_is_ascii_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Splits merges text into at most TOK_N_MERGES lines after the first (a
 * header), as both reference loaders do
 * (`lines[1:49152-256-2+1]`). Each line must hold exactly two symbols;
 * blank lines are accepted only at the end of the file. */
static enum ims_status tok_parse_merges(const char *text, size_t len, const char *what,
                                        struct tok_merge_line **out, int32_t *n_out,
                                        struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    struct tok_merge_line *lines = ims_malloc(sizeof(*lines) * TOK_N_MERGES);
    int32_t n = 0;
    if (!lines)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory reading %s", what);
    const char *p = text, *end = text + len;
    /* The first line is a header ("#version: 0.2"; OpenAI's file prefixes it
     * with its own name): skipped unread, as both loaders do. */
    const char *nl = memchr(p, '\n', len);
    p = nl ? nl + 1 : end;
    long line_no = 1;
    int blank_seen = 0;
    while (p < end && n < TOK_N_MERGES) {
        line_no++;
        const char *e = memchr(p, '\n', (size_t)(end - p));
        if (!e)
            e = end;
        struct ims_str f[3];
        int nf = 0;
        for (const char *q = p; q < e;) {
            while (q < e && tok_is_ascii_space(*q))
                q++;
            if (q == e)
                break;
            const char *s = q;
            while (q < e && !tok_is_ascii_space(*q))
                q++;
            if (nf < 3)
                f[nf] = (struct ims_str){s, (size_t)(q - s)};
            nf++;
        }
        p = e < end ? e + 1 : end;
        if (nf == 0) {
            blank_seen = 1;
            continue;
        }
        if (blank_seen || nf != 2) {
            st = ims_error_set(err, IMS_ERR_CORRUPT, "%s line %ld: %s", what,
                               blank_seen ? line_no - 1 : line_no,
                               blank_seen ? "blank line inside the merges"
                                          : "expected two space-separated symbols");
            goto out;
        }
        if (f[0].len > TOK_MAX_TOKEN_BYTES / 2 || f[1].len > TOK_MAX_TOKEN_BYTES / 2) {
            st = ims_error_set(err, IMS_ERR_CORRUPT, "%s line %ld: symbol longer than %d bytes",
                               what, line_no, TOK_MAX_TOKEN_BYTES / 2);
            goto out;
        }
        lines[n].a = f[0];
        lines[n].b = f[1];
        n++;
    }
    *out = lines;
    *n_out = n;
    lines = NULL;
out:
    ims_free(lines);
    return st;
}

/* Builds the pair map and merge tables from merge lines; the vocabulary
 * strings are in place. A merge whose parts are not vocabulary strings can
 * never apply (every BPE symbol is one) and is kept out of the map; a merge
 * whose result is not in the vocabulary would make Python fail on lookup
 * and is a load error. */
static enum ims_status tok_build_merges(struct clip_tokenizer *tok,
                                        const struct tok_merge_line *lines, int32_t n,
                                        const char *what, struct ims_error *err)
{
    char joined[TOK_MAX_TOKEN_BYTES];
    uint32_t cap = tok_pow2_at_least((size_t)n * 2);
    tok->pmap = ims_malloc(sizeof(*tok->pmap) * cap);
    tok->merge_a = ims_malloc(sizeof(int32_t) * (size_t)IMS_MAX(n, 1));
    tok->merge_b = ims_malloc(sizeof(int32_t) * (size_t)IMS_MAX(n, 1));
    tok->merge_out = ims_malloc(sizeof(int32_t) * (size_t)IMS_MAX(n, 1));
    if (!tok->pmap || !tok->merge_a || !tok->merge_b || !tok->merge_out)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory loading the merges");
    for (uint32_t i = 0; i < cap; i++)
        tok->pmap[i].rank = -1;
    tok->pmap_mask = cap - 1;
    tok->n_merges = n;
    for (int32_t r = 0; r < n; r++) {
        const struct tok_merge_line *m = &lines[r];
        int32_t a = tok_vocab_get(tok, m->a.ptr, m->a.len);
        int32_t b = tok_vocab_get(tok, m->b.ptr, m->b.len);
        memcpy(joined, m->a.ptr, m->a.len);
        memcpy(joined + m->a.len, m->b.ptr, m->b.len);
        int32_t o = tok_vocab_get(tok, joined, m->a.len + m->b.len);
        tok->merge_a[r] = a;
        tok->merge_b[r] = b;
        tok->merge_out[r] = o;
        if (a < 0 || b < 0)
            continue;
        if (o < 0)
            return ims_error_set(err, IMS_ERR_CORRUPT,
                                 "%s line %ld: merged symbol '%.*s' is not in the vocabulary",
                                 what, (long)r + 2, (int)(m->a.len + m->b.len), joined);
        tok_pair_put(tok, a, b, r);
    }
    return IMS_OK;
}

/* Byte symbols and special ids, looked up by string in both formats. */
static enum ims_status tok_bind_symbols(struct clip_tokenizer *tok, const char *what,
                                        struct ims_error *err)
{
    char s[8];
    for (int b = 0; b < 256; b++) {
        size_t n = clip__tok_utf8_put(tok_byte_char(b), s);
        tok->byte_sym[b] = tok_vocab_get(tok, s, n);
        memcpy(s + n, "</w>", 4);
        tok->byte_sym_end[b] = tok_vocab_get(tok, s, n + 4);
        if (tok->byte_sym[b] < 0 || tok->byte_sym_end[b] < 0)
            return ims_error_set(err, IMS_ERR_CORRUPT, "%s: the symbol of byte 0x%02X is missing",
                                 what, b);
    }
    tok->sot_id = tok_vocab_get(tok, TOK_SOT, strlen(TOK_SOT));
    tok->eot_id = tok_vocab_get(tok, TOK_EOT, strlen(TOK_EOT));
    if (tok->sot_id < 0 || tok->eot_id < 0)
        return ims_error_set(err, IMS_ERR_CORRUPT, "%s: %s or %s is missing", what, TOK_SOT,
                             TOK_EOT);
    return IMS_OK;
}

static enum ims_status tok_alloc_ids(struct clip_tokenizer *tok, int32_t n_ids,
                                     struct ims_error *err)
{
    tok->n_ids = n_ids;
    tok->str_off = ims_calloc((size_t)n_ids, sizeof(uint32_t));
    tok->str_len = ims_calloc((size_t)n_ids, sizeof(uint32_t));
    if (!tok->str_off || !tok->str_len)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory loading the vocabulary");
    return IMS_OK;
}

/* Hugging Face format: vocab.json {"string": id, ...} + merges.txt. */
static enum ims_status tok_load_hf(struct clip_tokenizer *tok, const char *vocab_path,
                                   const char *merges_path, struct ims_error *err)
{
    enum ims_status st;
    char *vtext = NULL, *mtext = NULL;
    size_t vlen = 0, mlen = 0;
    json_t *root = NULL;
    struct tok_merge_line *lines = NULL;
    int32_t n_lines = 0;
    json_error_t jerr;

    st = ims_file_read(vocab_path, TOK_MAX_FILE_BYTES, &vtext, &vlen, err);
    if (st != IMS_OK)
        goto out;
    root = json_loadb(vtext, vlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "%s: line %d: %s", vocab_path, jerr.line,
                           jerr.text);
        goto out;
    }
    if (!json_is_object(root) || json_object_size(root) == 0 ||
        json_object_size(root) > TOK_MAX_VOCAB) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "%s: expected an object of 1..%d {\"token\": id} entries", vocab_path,
                           TOK_MAX_VOCAB);
        goto out;
    }
    json_int_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        size_t klen = strlen(key);
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= TOK_MAX_VOCAB || klen == 0 ||
            klen > TOK_MAX_TOKEN_BYTES) {
            st = ims_error_set(err, IMS_ERR_CORRUPT,
                               "%s: entry '%.64s': expected a non-empty token (at most %d bytes) "
                               "and an integer id in [0, %d)",
                               vocab_path, key, TOK_MAX_TOKEN_BYTES, TOK_MAX_VOCAB);
            goto out;
        }
        if (json_integer_value(val) > max_id)
            max_id = json_integer_value(val);
    }
    st = tok_alloc_ids(tok, (int32_t)max_id + 1, err);
    if (st != IMS_OK)
        goto out;
    json_object_foreach(root, key, val)
    {
        int32_t id = (int32_t)json_integer_value(val);
        if (tok->str_len[id] != 0) {
            st = ims_error_set(err, IMS_ERR_CORRUPT, "%s: id %d is used twice", vocab_path,
                               (int)id);
            goto out;
        }
        st = tok_intern(tok, id, key, strlen(key), err);
        if (st != IMS_OK)
            goto out;
    }
    st = tok_vocab_index(tok, err);
    if (st != IMS_OK)
        goto out;
    st = tok_bind_symbols(tok, vocab_path, err);
    if (st != IMS_OK)
        goto out;

    st = ims_file_read(merges_path, TOK_MAX_FILE_BYTES, &mtext, &mlen, err);
    if (st != IMS_OK)
        goto out;
    st = tok_parse_merges(mtext, mlen, merges_path, &lines, &n_lines, err);
    if (st != IMS_OK)
        goto out;
    /* No merges would load a tokenizer that spells every word out byte by
     * byte: every text embedding silently changes. A damaged or truncated
     * file, never a real model's. */
    if (n_lines == 0) {
        st = ims_error_set(err, IMS_ERR_CORRUPT,
                           "%s: no merges (the file is %s); restore the model's merges.txt",
                           merges_path, mlen == 0 ? "empty" : "only a header line");
        goto out;
    }
    st = tok_build_merges(tok, lines, n_lines, merges_path, err);
out:
    ims_free(lines);
    json_decref(root);
    ims_free(vtext);
    ims_free(mtext);
    return st;
}

static enum ims_status tok_read_gz(const char *path, char **out, size_t *len_out,
                                   struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    size_t cap = 1 << 20, n = 0;
    char *buf = NULL;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return ims_error_set(err, IMS_ERR_IO, "cannot open %s", path);
    buf = ims_malloc(cap + 1);
    if (!buf) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory reading %s", path);
        goto out;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= TOK_MAX_FILE_BYTES) {
                st = ims_error_set(err, IMS_ERR_TOO_LARGE, "%s: decompresses to more than %u bytes",
                                   path, TOK_MAX_FILE_BYTES);
                goto out;
            }
            char *p = ims_realloc(buf, cap * 2 + 1);
            if (!p) {
                st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory reading %s", path);
                goto out;
            }
            buf = p;
            cap *= 2;
        }
        int r = gzread(gz, buf + n, (unsigned)IMS_MIN(cap - n, (size_t)1 << 30));
        if (r < 0) {
            int zerr = 0;
            const char *msg = gzerror(gz, &zerr);
            st = ims_error_set(err, IMS_ERR_CORRUPT, "%s: %s", path, msg ? msg : "gzip error");
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    /* gzread stops silently at a truncated stream; gzclose reports it. */
    int zr = gzclose(gz);
    gz = NULL;
    if (zr != Z_OK) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "%s: truncated or corrupt gzip stream", path);
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    *len_out = n;
    buf = NULL;
out:
    if (gz)
        gzclose(gz);
    ims_free(buf);
    return st;
}

/* OpenAI format: bpe_simple_vocab_16e6.txt.gz holds only the merges; the
 * vocabulary is the 256 byte symbols, the same with "</w>", the merged
 * strings in rank order, then the two special tokens. */
static enum ims_status tok_load_openai(struct clip_tokenizer *tok, const char *path,
                                       struct ims_error *err)
{
    enum ims_status st;
    char *text = NULL;
    size_t len = 0;
    struct tok_merge_line *lines = NULL;
    int32_t n_lines = 0;
    char s[TOK_MAX_TOKEN_BYTES];

    st = tok_read_gz(path, &text, &len, err);
    if (st != IMS_OK)
        goto out;
    st = tok_parse_merges(text, len, path, &lines, &n_lines, err);
    if (st != IMS_OK)
        goto out;
    if (n_lines != TOK_N_MERGES) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "%s: %d merges, expected %d", path, (int)n_lines,
                           TOK_N_MERGES);
        goto out;
    }
    st = tok_alloc_ids(tok, 512 + n_lines + 2, err);
    if (st != IMS_OK)
        goto out;
    int order[256];
    tok_byte_order(order);
    for (int i = 0; i < 256 && st == IMS_OK; i++) {
        size_t n = clip__tok_utf8_put(tok_byte_char(order[i]), s);
        st = tok_intern(tok, i, s, n, err);
        memcpy(s + n, "</w>", 4);
        if (st == IMS_OK)
            st = tok_intern(tok, 256 + i, s, n + 4, err);
    }
    for (int32_t r = 0; r < n_lines && st == IMS_OK; r++) {
        memcpy(s, lines[r].a.ptr, lines[r].a.len);
        memcpy(s + lines[r].a.len, lines[r].b.ptr, lines[r].b.len);
        st = tok_intern(tok, 512 + r, s, lines[r].a.len + lines[r].b.len, err);
    }
    if (st == IMS_OK)
        st = tok_intern(tok, 512 + n_lines, TOK_SOT, strlen(TOK_SOT), err);
    if (st == IMS_OK)
        st = tok_intern(tok, 512 + n_lines + 1, TOK_EOT, strlen(TOK_EOT), err);
    if (st != IMS_OK)
        goto out;
    st = tok_vocab_index(tok, err);
    if (st != IMS_OK)
        goto out;
    st = tok_bind_symbols(tok, path, err);
    if (st != IMS_OK)
        goto out;
    st = tok_build_merges(tok, lines, n_lines, path, err);
out:
    ims_free(lines);
    ims_free(text);
    return st;
}

void clip_tokenizer_free(struct clip_tokenizer *tok)
{
    if (!tok)
        return;
    ims_free(tok->strings);
    ims_free(tok->str_off);
    ims_free(tok->str_len);
    ims_free(tok->vmap);
    ims_free(tok->pmap);
    ims_free(tok->merge_a);
    ims_free(tok->merge_b);
    ims_free(tok->merge_out);
    ims_free(tok);
}

enum ims_status clip_tokenizer_load(const char *dir, struct clip_tokenizer **out,
                                    struct ims_error *err)
{
    enum ims_status st;
    struct clip_tokenizer *tok = NULL;
    char vocab[4096], merges[4096], gz[4096];

    if (!dir || !*dir || !out)
        return ims_error_set(err, IMS_ERR_INVALID, "clip_tokenizer_load: no folder given");
    int nv = snprintf(vocab, sizeof(vocab), "%s/vocab.json", dir);
    int nm = snprintf(merges, sizeof(merges), "%s/merges.txt", dir);
    int ng = snprintf(gz, sizeof(gz), "%s/bpe_simple_vocab_16e6.txt.gz", dir);
    if (nv < 0 || nm < 0 || ng < 0 || (size_t)ng >= sizeof(gz) || (size_t)nv >= sizeof(vocab))
        return ims_error_set(err, IMS_ERR_INVALID, "tokenizer folder path is too long");
    tok = ims_calloc(1, sizeof(*tok));
    if (!tok)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory loading the tokenizer");
    int has_vocab = access(vocab, F_OK) == 0, has_merges = access(merges, F_OK) == 0;
    if (has_vocab && has_merges) {
        st = tok_load_hf(tok, vocab, merges, err);
    } else if (access(gz, F_OK) == 0) {
        st = tok_load_openai(tok, gz, err);
    } else if (has_vocab || has_merges) {
        st = ims_error_set(err, IMS_ERR_NOT_FOUND, "%s: %s is missing", dir,
                           has_vocab ? "merges.txt" : "vocab.json");
    } else {
        st = ims_error_set(err, IMS_ERR_NOT_FOUND,
                           "%s: no tokenizer files (vocab.json + merges.txt, or "
                           "bpe_simple_vocab_16e6.txt.gz)",
                           dir);
    }
    if (st != IMS_OK)
        goto out;
    *out = tok;
    tok = NULL;
out:
    clip_tokenizer_free(tok);
    return st;
}

