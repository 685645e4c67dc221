/* SPDX-License-Identifier: MIT */
/*
 * tokenize.c: clip_tokenize, the per-call pipeline of OpenAI's CLIP
 * tokenizer over a loaded vocabulary (tokenizer.c).
 *
 * Pipeline of clip_tokenize (docs/internals/tokenizer.md has the details):
 *
 *   bytes --strict UTF-8 decode--> code points
 *     -> ftfy's default fixes that real queries hit: Latin ligatures,
 *        character width, quote uncurling, NFC (utf8proc)
 *     -> html.unescape() twice (numeric refs with Python's rules, a fixed
 *        named-entity set: tokenizer_tables.c)
 *     -> str.strip(); re.sub(r'\s+', ' '); str.strip()
 *     -> str.lower() (full mapping: U+0130 and the final-sigma rule)
 *     -> the pre-tokenizer regex, as a hand-written scanner over utf8proc
 *        categories (the `regex` module's IGNORECASE semantics included)
 *     -> per pre-token: bytes -> byte symbols (last one `</w>`) -> BPE -> ids
 *
 * Everything works on arrays of code points (uint32_t), one fresh buffer per
 * stage, so each stage is a small loop that mirrors one line of the Python.
 *
 * BPE: Python merges, at each step, every occurrence of the lowest-ranked
 * pair left to right. We do the same with a binary heap of (rank, position)
 * entries over a linked list of symbols: a step pops all entries of the
 * minimal rank (in position order), checks each one is still current and
 * merges it, and pushes the pairs it creates. A merge of rank r never
 * creates a pair of rank r (the merged symbol differs from both parts), so
 * a step sees exactly the occurrences Python's step sees; pairs of lower
 * rank that it creates are merged in the next step, as in Python. This is
 * O(n log n) in the word length, so a 1 MB single "word" is cheap.
 *
 * Truncation: clip.tokenize keeps [sot] + the first 75 tokens + [eot] of a
 * longer text, so tokenization stops once 75 tokens exist; that is exact.
 * The text stages before it are linear and run on the whole text, whose
 * size is capped (TOK_MAX_TEXT_BYTES).
 *
 */

#include "clip_int.h"
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ==== text stages ===================================================================== */

/* A code point array owned by clip_tokenize. */
struct tok_text {
    uint32_t *cp; /* (n) */
    size_t n;
};

static enum ims_status tok_text_alloc(struct tok_text *t, size_t n, struct ims_error *err)
{
    size_t bytes;
    if (ims_size_mul(IMS_MAX(n, (size_t)1), sizeof(uint32_t), &bytes) != 0)
        return ims_error_set(err, IMS_ERR_TOO_LARGE, "text too large");
    t->cp = ims_malloc(bytes);
    t->n = 0;
    if (!t->cp)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory tokenizing");
    return IMS_OK;
}

/* Replaces *t with *next (freeing the old array). */
static void tok_text_swap(struct tok_text *t, struct tok_text *next)
{
    ims_free(t->cp);
    *t = *next;
    next->cp = NULL;
    next->n = 0;
}

/* Strict UTF-8: no overlong forms, surrogates or values past U+10FFFF. */
static enum ims_status tok_decode_utf8(const char *s, size_t len, struct tok_text *out,
                                       struct ims_error *err)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, n = 0;
    while (i < len) {
        uint32_t c = p[i];
        size_t k;
        uint32_t min;
        if (c < 0x80) {
            out->cp[n++] = c;
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1, min = 0x80, c &= 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2, min = 0x800, c &= 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3, min = 0x10000, c &= 0x07;
        } else {
            return ims_error_set(err, IMS_ERR_INVALID, "invalid UTF-8: byte 0x%02X at offset %zu",
                                 p[i], i);
        }
        if (len - i <= k)
            return ims_error_set(err, IMS_ERR_INVALID,
                                 "invalid UTF-8: truncated sequence at offset %zu", i);
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80)
                return ims_error_set(err, IMS_ERR_INVALID,
                                     "invalid UTF-8: bad continuation byte at offset %zu", i + j);
            c = (c << 6) | (p[i + j] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return ims_error_set(err, IMS_ERR_INVALID,
                                 "invalid UTF-8: overlong, surrogate or out-of-range sequence at "
                                 "offset %zu",
                                 i);
        out->cp[n++] = c;
        i += k + 1;
    }
    out->n = n;
    return IMS_OK;
}

/* ---- ftfy fixes ---- */

/* ftfy's fix_latin_ligatures table (chardata.LIGATURES). */
static const struct {
    uint32_t cp;
    uint32_t to[3];
} tok_ligatures[] = {
    {0x0132, {'I', 'J'}},       {0x0133, {'i', 'j'}},       {0x0149, {0x02BC, 'n'}},
    {0x01C4, {'D', 0x017D}},    {0x01C5, {'D', 0x017E}},    {0x01C6, {'d', 0x017E}},
    {0x01C7, {'L', 'J'}},       {0x01C8, {'L', 'j'}},       {0x01C9, {'l', 'j'}},
    {0x01CA, {'N', 'J'}},       {0x01CB, {'N', 'j'}},       {0x01CC, {'n', 'j'}},
    {0x01F1, {'D', 'Z'}},       {0x01F2, {'D', 'z'}},       {0x01F3, {'d', 'z'}},
    {0xFB00, {'f', 'f'}},       {0xFB01, {'f', 'i'}},       {0xFB02, {'f', 'l'}},
    {0xFB03, {'f', 'f', 'i'}},  {0xFB04, {'f', 'f', 'l'}},  {0xFB05, {0x017F, 't'}},
    {0xFB06, {'s', 't'}},
};

/* ftfy's uncurl_quotes: [\u02bc\u2018-\u201b] -> ', [\u201c-\u201f] -> ". */
static uint32_t tok_uncurl(uint32_t c)
{
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B))
        return '\'';
    if (c >= 0x201C && c <= 0x201F)
        return '"';
    return c;
}

/* ftfy's fix_character_width: U+3000 -> ' ', U+FF01..U+FFEF -> NFKC. */
static size_t tok_width(uint32_t c, uint32_t out[4])
{
    if (c == 0x3000) {
        out[0] = ' ';
        return 1;
    }
    if (c >= 0xFF01 && c <= 0xFFEF) {
        utf8proc_int32_t buf[8];
        int boundclass = 0;
        utf8proc_ssize_t n = utf8proc_decompose_char((utf8proc_int32_t)c, buf, 8,
                                                     UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT,
                                                     &boundclass);
        if (n > 0 && n <= 8)
            n = utf8proc_normalize_utf32(buf, n, UTF8PROC_COMPOSE | UTF8PROC_STABLE);
        if (n > 0 && n <= 4) {
            for (utf8proc_ssize_t i = 0; i < n; i++)
                out[i] = (uint32_t)buf[i];
            return (size_t)n;
        }
    }
    out[0] = c;
    return 1;
}

/* ligatures, then width, then quotes, per code point (ftfy's order). At most
 * 3 x 2 code points come out of one. */
static size_t tok_fix_char(uint32_t c, uint32_t out[8])
{
    uint32_t lig[3] = {c, 0, 0};
    size_t n_lig = 1, n = 0;
    if ((c >= 0x0132 && c <= 0x01F3) || (c >= 0xFB00 && c <= 0xFB06)) {
        for (size_t i = 0; i < IMS_ARRAY_LEN(tok_ligatures); i++) {
            if (tok_ligatures[i].cp == c) {
                n_lig = tok_ligatures[i].to[2] ? 3 : 2;
                memcpy(lig, tok_ligatures[i].to, sizeof(lig));
                break;
            }
        }
    }
    for (size_t i = 0; i < n_lig; i++) {
        uint32_t w[4];
        size_t nw = tok_width(lig[i], w);
        for (size_t j = 0; j < nw && n < 8; j++)
            out[n++] = tok_uncurl(w[j]);
    }
    return n;
}

static enum ims_status tok_ftfy(struct tok_text *t, struct ims_error *err)
{
    enum ims_status st;
    struct tok_text next = {0};
    uint32_t tmp[8];
    size_t total = 0, max_cp = 0;
    for (size_t i = 0; i < t->n; i++)
        total += tok_fix_char(t->cp[i], tmp);
    st = tok_text_alloc(&next, total, err);
    if (st != IMS_OK)
        return st;
    for (size_t i = 0; i < t->n; i++) {
        size_t k = tok_fix_char(t->cp[i], next.cp + next.n);
        for (size_t j = 0; j < k; j++)
            max_cp = IMS_MAX(max_cp, next.cp[next.n + j]);
        next.n += k;
    }
    tok_text_swap(t, &next);
    if (max_cp < 0x300) /* no combining marks, nothing composes: already NFC */
        return IMS_OK;

    /* NFC via utf8proc: canonical decomposition, then composition. */
    char *u8 = NULL;
    size_t u8_bytes;
    if (ims_size_mul(t->n, 4, &u8_bytes) != 0)
        return ims_error_set(err, IMS_ERR_TOO_LARGE, "text too large");
    u8 = ims_malloc(u8_bytes + 1);
    if (!u8)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory tokenizing");
    size_t u8_len = 0;
    for (size_t i = 0; i < t->n; i++)
        u8_len += clip__tok_utf8_put(t->cp[i], u8 + u8_len);
    const utf8proc_option_t opts = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    utf8proc_ssize_t need = utf8proc_decompose((const utf8proc_uint8_t *)u8,
                                               (utf8proc_ssize_t)u8_len, NULL, 0, opts);
    if (need < 0) {
        st = ims_error_set(err, IMS_ERR_INVALID, "Unicode normalisation failed: %s",
                           utf8proc_errmsg(need));
        goto out;
    }
    st = tok_text_alloc(&next, (size_t)need, err);
    if (st != IMS_OK)
        goto out;
    utf8proc_ssize_t got = utf8proc_decompose((const utf8proc_uint8_t *)u8,
                                              (utf8proc_ssize_t)u8_len,
                                              (utf8proc_int32_t *)next.cp, need, opts);
    if (got >= 0 && got <= need)
        got = utf8proc_normalize_utf32((utf8proc_int32_t *)next.cp, got, opts);
    if (got < 0 || got > need) {
        st = ims_error_set(err, IMS_ERR_INVALID, "Unicode normalisation failed");
        goto out;
    }
    next.n = (size_t)got;
    tok_text_swap(t, &next);
out:
    ims_free(next.cp);
    ims_free(u8);
    return st;
}

/* ---- html.unescape ---- */


static int tok_entity_cmp(const void *key, const void *elem)
{
    return strcmp((const char *)key, ((const struct clip_tok_entity *)elem)->name);
}

static const struct clip_tok_entity *tok_entity_find(const char *name)
{
    return bsearch(name, clip__tok_entities, clip__tok_n_entities, sizeof(clip__tok_entities[0]),
                   tok_entity_cmp);
}

/* html._invalid_charrefs for 0x80..0x9F: Windows-1252 (five stay as-is). */
static const uint16_t tok_cp1252[32] = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
};

/* Python's html._replace_charref for a numeric reference; `big` means the
 * number exceeded 0x10FFFF. Returns how many code points it wrote (0 or 1). */
static size_t tok_numeric_ref(uint32_t v, int big, uint32_t *out)
{
    if (big || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || v == 0) {
        *out = 0xFFFD;
        return 1;
    }
    if (v == 0x0D) {
        *out = '\r';
        return 1;
    }
    if (v >= 0x80 && v <= 0x9F) {
        *out = tok_cp1252[v - 0x80];
        return 1;
    }
    if ((v >= 0x01 && v <= 0x08) || v == 0x0B || (v >= 0x0E && v <= 0x1F) || v == 0x7F ||
        (v >= 0xFDD0 && v <= 0xFDEF) || (v & 0xFFFE) == 0xFFFE)
        return 0; /* _invalid_codepoints: dropped */
    *out = v;
    return 1;
}

static int tok_hexval(uint32_t c)
{
    if (c >= '0' && c <= '9')
        return (int)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F')
        return (int)(c - 'A' + 10);
    return -1;
}

/* html.unescape: re.sub(r'&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)')
 * with _replace_charref. The output is never longer than the input. */
static void tok_html_unescape(const struct tok_text *in, struct tok_text *out)
{
    const uint32_t *s = in->cp;
    size_t n = in->n, o = 0, i = 0;
    while (i < n) {
        if (s[i] != '&') {
            out->cp[o++] = s[i++];
            continue;
        }
        size_t j = i + 1;
        if (j < n && s[j] == '#') {
            size_t k = j + 1;
            int hex = 0;
            if (k < n && (s[k] == 'x' || s[k] == 'X') && k + 1 < n && tok_hexval(s[k + 1]) >= 0)
                hex = 1, k++;
            size_t d0 = k;
            uint32_t v = 0;
            int big = 0;
            for (; k < n; k++) {
                int d = hex ? tok_hexval(s[k]) : (s[k] >= '0' && s[k] <= '9' ? (int)(s[k] - '0')
                                                                          : -1);
                if (d < 0)
                    break;
                if (!big) {
                    v = v * (hex ? 16u : 10u) + (uint32_t)d;
                    if (v > 0x10FFFF)
                        big = 1;
                }
            }
            if (k == d0) { /* "&#" without digits matches nothing */
                out->cp[o++] = '&';
                i++;
                continue;
            }
            if (k < n && s[k] == ';')
                k++;
            o += tok_numeric_ref(v, big, out->cp + o);
            i = k;
            continue;
        }
        /* Named: up to 32 characters outside [\t\n\f <&#;], then an optional ';'. */
        char name[34];
        size_t m = 0, k = j;
        while (k < n && m < 32) {
            uint32_t c = s[k];
            if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' ||
                c == '#' || c == ';')
                break;
            name[m++] = (c > 0 && c < 0x80) ? (char)c : '\x01'; /* \x01: never in a name */
            k++;
        }
        if (m == 0) {
            out->cp[o++] = '&';
            i++;
            continue;
        }
        int semi = k < n && s[k] == ';';
        size_t len_s = m + (size_t)semi; /* len(s) in Python */
        name[m] = '\0';
        const struct clip_tok_entity *e = tok_entity_find(name);
        if (e && (semi || e->bare)) {
            out->cp[o++] = e->cp;
            i = j + len_s;
            continue;
        }
        /* The longest prefix s[:x], 2 <= x < len(s), that is a name valid
         * without ';' (no prefix contains the ';'). */
        size_t x;
        for (x = len_s - 1; x >= 2; x--) {
            if (x > m)
                continue;
            char c = name[x];
            name[x] = '\0';
            e = tok_entity_find(name);
            name[x] = c;
            if (e && e->bare)
                break;
        }
        if (x >= 2) {
            out->cp[o++] = e->cp;
            for (size_t q = j + x; q < j + len_s; q++)
                out->cp[o++] = s[q];
        } else {
            out->cp[o++] = '&';
            for (size_t q = j; q < j + len_s; q++)
                out->cp[o++] = s[q];
        }
        i = j + len_s;
    }
    out->n = o;
}

static enum ims_status tok_unescape_twice(struct tok_text *t, struct ims_error *err)
{
    for (int pass = 0; pass < 2; pass++) {
        int has_amp = 0;
        for (size_t i = 0; i < t->n && !has_amp; i++)
            has_amp = t->cp[i] == '&';
        if (!has_amp)
            return IMS_OK;
        struct tok_text next = {0};
        enum ims_status st = tok_text_alloc(&next, t->n, err);
        if (st != IMS_OK)
            return st;
        tok_html_unescape(t, &next);
        tok_text_swap(t, &next);
    }
    return IMS_OK;
}

/* ---- whitespace ---- */

/* The `regex` module's \s: the Unicode White_Space property. */
static int tok_is_regex_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Python's str.isspace() (what str.strip() removes): \s plus U+001C..U+001F. */
static int tok_is_py_space(uint32_t c)
{
    return tok_is_regex_space(c) || (c >= 0x1C && c <= 0x1F);
}

/* strip(); re.sub(r'\s+', ' '); strip() -- in place. */
static void tok_whitespace(struct tok_text *t)
{
    size_t b = 0, e = t->n, o = 0;
    while (b < e && tok_is_py_space(t->cp[b]))
        b++;
    while (e > b && tok_is_py_space(t->cp[e - 1]))
        e--;
    for (size_t i = b; i < e;) {
        if (tok_is_regex_space(t->cp[i])) {
            while (i < e && tok_is_regex_space(t->cp[i]))
                i++;
            t->cp[o++] = ' ';
        } else {
            t->cp[o++] = t->cp[i++];
        }
    }
    b = 0;
    while (b < o && tok_is_py_space(t->cp[b]))
        b++;
    while (o > b && tok_is_py_space(t->cp[o - 1]))
        o--;
    if (b > 0)
        memmove(t->cp, t->cp + b, (o - b) * sizeof(uint32_t));
    t->n = o - b;
}

/* ---- str.lower() ---- */

/* Unicode Case_Ignorable: Mn Me Cf Lm Sk and Word_Break MidLetter,
 * MidNumLet, Single_Quote. */
static int tok_is_case_ignorable(uint32_t c)
{
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK:
        return 1;
    default:
        break;
    }
    static const uint32_t mid[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,
                                   0x5F4,  0x2018, 0x2019, 0x2024, 0x2027, 0xFE13,
                                   0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
    for (size_t i = 0; i < IMS_ARRAY_LEN(mid); i++)
        if (mid[i] == c)
            return 1;
    return 0;
}

/* Unicode Cased: Lu Ll Lt, Other_Lowercase/Other_Uppercase (those with a
 * case mapping, the two ordinal indicators and the enclosed capitals below;
 * the remaining ones are Lm/Mn, which are case-ignorable and so never
 * consulted). Checked against CPython over U+0080..U+2FFFF. */
static int tok_is_cased(uint32_t c)
{
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT)
        return 1;
    if (c == 0xAA || c == 0xBA)
        return 1;
    /* Other_Uppercase symbols without case mappings: squared and negative
     * circled/squared Latin capitals. */
    if ((c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
        (c >= 0x1F170 && c <= 0x1F189))
        return 1;
    return utf8proc_tolower((utf8proc_int32_t)c) != (utf8proc_int32_t)c ||
           utf8proc_toupper((utf8proc_int32_t)c) != (utf8proc_int32_t)c;
}

/* CPython's handle_capital_sigma: Σ is final when a cased letter precedes it
 * (skipping case-ignorables) and none follows it. */
static uint32_t tok_sigma(const uint32_t *s, size_t n, size_t i)
{
    size_t j = i;
    while (j > 0 && tok_is_case_ignorable(s[j - 1]))
        j--;
    if (j == 0 || !tok_is_cased(s[j - 1]))
        return 0x3C3;
    j = i + 1;
    while (j < n && tok_is_case_ignorable(s[j]))
        j++;
    return (j == n || !tok_is_cased(s[j])) ? 0x3C2 : 0x3C3;
}

static enum ims_status tok_lower(struct tok_text *t, struct ims_error *err)
{
    size_t extra = 0;
    for (size_t i = 0; i < t->n; i++)
        extra += t->cp[i] == 0x130;
    struct tok_text next = {0};
    enum ims_status st = tok_text_alloc(&next, t->n + extra, err);
    if (st != IMS_OK)
        return st;
    for (size_t i = 0; i < t->n; i++) {
        uint32_t c = t->cp[i];
        if (c < 0x80) {
            next.cp[next.n++] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
        } else if (c == 0x130) { /* SpecialCasing: İ -> i + COMBINING DOT ABOVE */
            next.cp[next.n++] = 'i';
            next.cp[next.n++] = 0x307;
        } else if (c == 0x3A3) {
            next.cp[next.n++] = tok_sigma(t->cp, t->n, i);
        } else {
            next.cp[next.n++] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
        }
    }
    tok_text_swap(t, &next);
    return IMS_OK;
}

/* ==== pre-tokenizer ========================================================================= */

enum tok_class { TOK_CLASS_SPACE, TOK_CLASS_LETTER, TOK_CLASS_NUMBER, TOK_CLASS_OTHER };

static enum tok_class tok_classify(uint32_t c)
{
    if (c < 0x80) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            return TOK_CLASS_LETTER;
        if (c >= '0' && c <= '9')
            return TOK_CLASS_NUMBER;
        return tok_is_regex_space(c) ? TOK_CLASS_SPACE : TOK_CLASS_OTHER;
    }
    if (tok_is_regex_space(c))
        return TOK_CLASS_SPACE;
    /* U+0345 (Mn) case-folds to a letter, so under IGNORECASE it is outside
     * [^\s\p{L}\p{N}] and yet not in [\p{L}]: the regex skips it. */
    if (c == 0x345)
        return TOK_CLASS_SPACE;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return TOK_CLASS_LETTER;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return TOK_CLASS_NUMBER;
    default:
        return TOK_CLASS_OTHER;
    }
}

/* Case-insensitive match of an ASCII literal at s[i..]: IGNORECASE also lets
 * U+017F (long s) match 's', its simple case folding. */
static int tok_match_lit(const uint32_t *s, size_t n, size_t i, const char *lit)
{
    for (; *lit; lit++, i++) {
        if (i >= n)
            return 0;
        uint32_t c = s[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c == 0x17F)
            c = 's';
        if (c != (uint32_t)(unsigned char)*lit)
            return 0;
    }
    return 1;
}

/* Length of the pre-token starting at s[i], or 0 if none starts there (the
 * regex's findall then moves on by one character). Alternatives in the
 * pattern's order: special tokens, contractions, [\p{L}]+, [\p{N}],
 * [^\s\p{L}\p{N}]+. */
static size_t tok_match(const uint32_t *s, size_t n, size_t i)
{
    static const char *const lits[] = {TOK_SOT, TOK_EOT, "'s", "'t", "'re",
                                        "'ve",   "'m",   "'ll", "'d"};
    if (s[i] == '<' || s[i] == '\'') {
        for (size_t k = 0; k < IMS_ARRAY_LEN(lits); k++)
            if (tok_match_lit(s, n, i, lits[k]))
                return strlen(lits[k]);
    }
    enum tok_class c = tok_classify(s[i]);
    size_t j = i + 1;
    switch (c) {
    case TOK_CLASS_SPACE:
        return 0;
    case TOK_CLASS_NUMBER:
        return 1;
    case TOK_CLASS_LETTER:
    case TOK_CLASS_OTHER:
        while (j < n && tok_classify(s[j]) == c)
            j++;
        return j - i;
    }
    return 0;
}

/* ==== BPE ================================================================================= */

/* Working memory of one word's BPE, grown as needed within a call. */
struct tok_bpe_work {
    int32_t *sym;   /* (cap): symbol id at each original position, -1 once merged away */
    int32_t *next;  /* (cap): next live position or -1 */
    int32_t *prev;  /* (cap): previous live position or -1 */
    uint64_t *heap; /* (3 cap): (rank << 32) | position, a min-heap */
    uint64_t *step; /* (3 cap): entries of the current rank */
    size_t cap;
};

static void tok_bpe_work_fini(struct tok_bpe_work *w)
{
    ims_free(w->sym);
    ims_free(w->next);
    ims_free(w->prev);
    ims_free(w->heap);
    ims_free(w->step);
    memset(w, 0, sizeof(*w));
}

static enum ims_status tok_bpe_work_reserve(struct tok_bpe_work *w, size_t n,
                                            struct ims_error *err)
{
    if (n <= w->cap)
        return IMS_OK;
    size_t cap = IMS_MAX(n, (size_t)64);
    if (cap > (size_t)INT32_MAX / 4)
        return ims_error_set(err, IMS_ERR_TOO_LARGE, "word too long");
    tok_bpe_work_fini(w);
    w->sym = ims_malloc(cap * sizeof(int32_t));
    w->next = ims_malloc(cap * sizeof(int32_t));
    w->prev = ims_malloc(cap * sizeof(int32_t));
    w->heap = ims_malloc(cap * 3 * sizeof(uint64_t));
    w->step = ims_malloc(cap * 3 * sizeof(uint64_t));
    if (!w->sym || !w->next || !w->prev || !w->heap || !w->step) {
        tok_bpe_work_fini(w);
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory tokenizing");
    }
    w->cap = cap;
    return IMS_OK;
}

static void tok_heap_push(uint64_t *h, size_t *n, uint64_t v)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v)
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static uint64_t tok_heap_pop(uint64_t *h, size_t *n)
{
    uint64_t top = h[0], v = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m)
            break;
        if (c + 1 < m && h[c + 1] < h[c])
            c++;
        if (v <= h[c])
            break;
        h[i] = h[c];
        i = c;
    }
    if (m > 0)
        h[i] = v;
    return top;
}

static void tok_bpe_push_pair(const struct clip_tokenizer *tok, struct tok_bpe_work *w,
                              size_t *n_heap, int32_t p)
{
    if (p < 0 || w->next[p] < 0)
        return;
    int32_t r = clip__tok_pair_rank(tok, w->sym[p], w->sym[w->next[p]]);
    if (r >= 0)
        tok_heap_push(w->heap, n_heap, ((uint64_t)(uint32_t)r << 32) | (uint32_t)p);
}

/* BPE of one pre-token's bytes; appends up to `room` ids to `ids`. */
static enum ims_status tok_bpe(const struct clip_tokenizer *tok, const unsigned char *b, size_t n,
                               struct tok_bpe_work *w, int32_t *ids, int room, int *n_added,
                               struct ims_error *err)
{
    enum ims_status st = tok_bpe_work_reserve(w, n, err);
    if (st != IMS_OK)
        return st;
    for (size_t i = 0; i < n; i++) {
        w->sym[i] = i + 1 < n ? tok->byte_sym[b[i]] : tok->byte_sym_end[b[i]];
        w->next[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        w->prev[i] = (int32_t)i - 1;
    }
    size_t n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++)
        tok_bpe_push_pair(tok, w, &n_heap, (int32_t)i);
    while (n_heap > 0) {
        uint32_t rank = (uint32_t)(w->heap[0] >> 32);
        size_t n_step = 0;
        while (n_heap > 0 && (uint32_t)(w->heap[0] >> 32) == rank)
            w->step[n_step++] = tok_heap_pop(w->heap, &n_heap);
        int32_t a = tok->merge_a[rank], bb = tok->merge_b[rank], out = tok->merge_out[rank];
        for (size_t k = 0; k < n_step; k++) {
            int32_t p = (int32_t)(uint32_t)w->step[k];
            int32_t q = w->next[p];
            if (w->sym[p] != a || q < 0 || w->sym[q] != bb)
                continue; /* stale: merged away or changed since it was pushed */
            w->sym[p] = out;
            w->sym[q] = -1;
            w->next[p] = w->next[q];
            if (w->next[q] >= 0)
                w->prev[w->next[q]] = p;
            tok_bpe_push_pair(tok, w, &n_heap, w->prev[p]);
            tok_bpe_push_pair(tok, w, &n_heap, p);
        }
    }
    int k = 0;
    for (int32_t p = 0; p >= 0 && k < room; p = w->next[p])
        ids[k++] = w->sym[p];
    *n_added = k;
    return IMS_OK;
}

/* ==== clip_tokenize ====================================================================== */

enum ims_status clip_tokenize(const struct clip_tokenizer *tok, const char *text, size_t len,
                              int32_t ids[CLIP_CONTEXT_MAX], int *n_ids, struct ims_error *err)
{
    enum ims_status st;
    struct tok_text t = {0};
    struct tok_bpe_work w = {0};
    unsigned char *bytes = NULL;
    int32_t out[CLIP_CONTEXT_MAX];
    int n_tok = 0;

    if (!tok || !ids || !n_ids || (!text && len))
        return ims_error_set(err, IMS_ERR_INVALID, "clip_tokenize: missing argument");
    if (len > TOK_MAX_TEXT_BYTES)
        return ims_error_set(err, IMS_ERR_TOO_LARGE, "text is %zu bytes, over the limit of %u",
                             len, TOK_MAX_TEXT_BYTES);
    st = tok_text_alloc(&t, len, err);
    if (st != IMS_OK)
        goto out;
    st = tok_decode_utf8(text, len, &t, err);
    if (st == IMS_OK)
        st = tok_ftfy(&t, err);
    if (st == IMS_OK)
        st = tok_unescape_twice(&t, err);
    if (st == IMS_OK) {
        tok_whitespace(&t);
        st = tok_lower(&t, err);
    }
    if (st != IMS_OK)
        goto out;

    size_t bytes_cap = 0;
    for (size_t i = 0; i < t.n && n_tok < TOK_MAX_TOKENS;) {
        size_t m = tok_match(t.cp, t.n, i);
        if (m == 0) {
            i++;
            continue;
        }
        if (m * 4 > bytes_cap) {
            ims_free(bytes);
            bytes_cap = IMS_MAX(m * 4, (size_t)256);
            bytes = ims_malloc(bytes_cap);
            if (!bytes) {
                st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory tokenizing");
                goto out;
            }
        }
        size_t nb = 0;
        for (size_t k = i; k < i + m; k++)
            nb += clip__tok_utf8_put(t.cp[k], (char *)bytes + nb);
        i += m;
        /* The bpe cache is pre-seeded with the two special tokens. */
        if (nb == strlen(TOK_SOT) && !memcmp(bytes, TOK_SOT, nb)) {
            out[1 + n_tok++] = tok->sot_id;
            continue;
        }
        if (nb == strlen(TOK_EOT) && !memcmp(bytes, TOK_EOT, nb)) {
            out[1 + n_tok++] = tok->eot_id;
            continue;
        }
        int added = 0;
        st = tok_bpe(tok, bytes, nb, &w, out + 1 + n_tok, TOK_MAX_TOKENS - n_tok, &added, err);
        if (st != IMS_OK)
            goto out;
        n_tok += added;
    }
    out[0] = tok->sot_id;
    out[1 + n_tok] = tok->eot_id;
    for (int k = 0; k < CLIP_CONTEXT_MAX; k++)
        ids[k] = k < n_tok + 2 ? out[k] : 0;
    *n_ids = n_tok + 2;
out:
    ims_free(t.cp);
    ims_free(bytes);
    tok_bpe_work_fini(&w);
    return st;
}
