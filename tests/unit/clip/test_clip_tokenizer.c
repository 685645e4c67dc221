/* SPDX-License-Identifier: MIT */
/*
 * test_clip_tokenizer.c: clip_tokenizer_load / clip_tokenize against
 * OpenAI's tokenizer.
 *
 * - golden: every line of tests/golden/clip/tokenizer/cases.jsonl (made with
 *   clip.tokenize) must give exactly its 77 ids, with both vocabulary formats
 *   (data/vocab as Hugging Face vocab.json + merges.txt, and a temp folder
 *   holding only OpenAI's bpe_simple_vocab_16e6.txt.gz). The first mismatch
 *   is printed in full.
 * - text fixes (ftfy subset, html.unescape, str.lower) are table-driven as
 *   pairs of texts that must tokenize identically, plus pairs that must not.
 * - error paths: invalid UTF-8, oversize input, missing/corrupt vocabulary
 *   files, allocation failures at every step.
 * - a 1 MB text and a 1 MB single word are tokenized (bounded work thanks to
 *   the early stop and the heap BPE; no timing is asserted).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "imgsearch/clip.h"

#define SOT 49406
#define EOT 49407

struct fixture {
    struct clip_tokenizer *hf;     /* data/vocab (vocab.json + merges.txt) */
    struct clip_tokenizer *openai; /* temp folder with only the .gz */
    char tmp[64];
    char vocab_dir[4096];
};

static const char *source_dir(void)
{
    const char *s = getenv("IMS_SOURCE_DIR");
    return s && *s ? s : IMS_SOURCE_DIR;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct ims_error err = {0};
    char src[4096 + 64], dst[128];
    if (!f)
        return -1;
    snprintf(f->vocab_dir, sizeof(f->vocab_dir), "%s/data/vocab", source_dir());
    snprintf(f->tmp, sizeof(f->tmp), "/tmp/ims-tok-XXXXXX");
    if (!mkdtemp(f->tmp))
        return -1;
    snprintf(src, sizeof(src), "%s/bpe_simple_vocab_16e6.txt.gz", f->vocab_dir);
    snprintf(dst, sizeof(dst), "%s/bpe_simple_vocab_16e6.txt.gz", f->tmp);
    if (symlink(src, dst) != 0)
        return -1;
    if (clip_tokenizer_load(f->vocab_dir, &f->hf, &err) != IMS_OK) {
        fprintf(stderr, "load %s: %s\n", f->vocab_dir, err.message);
        return -1;
    }
    if (clip_tokenizer_load(f->tmp, &f->openai, &err) != IMS_OK) {
        fprintf(stderr, "load %s: %s\n", f->tmp, err.message);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char p[128];
    clip_tokenizer_free(f->hf);
    clip_tokenizer_free(f->openai);
    snprintf(p, sizeof(p), "%s/bpe_simple_vocab_16e6.txt.gz", f->tmp);
    unlink(p);
    rmdir(f->tmp);
    free(f);
    return 0;
}

static void tokenize_ok(const struct clip_tokenizer *tok, const char *text, size_t len,
                        int32_t ids[CLIP_CONTEXT_MAX], int *n)
{
    struct ims_error err = {0};
    enum ims_status st = clip_tokenize(tok, text, len, ids, n, &err);
    if (st != IMS_OK)
        fprintf(stderr, "clip_tokenize(\"%.60s\"): %s\n", text ? text : "(null)", err.message);
    assert_int_equal(st, IMS_OK);
}

static void print_ids(const char *label, const int32_t *ids, int n)
{
    fprintf(stderr, "  %s:", label);
    for (int i = 0; i < n; i++)
        fprintf(stderr, " %d", (int)ids[i]);
    fprintf(stderr, "\n");
}

/* ---- golden cases ---------------------------------------------------------- */

static void check_golden(const struct clip_tokenizer *tok, const char *label)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/tests/golden/clip/tokenizer/cases.jsonl", source_dir());
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int n_cases = 0, n_bad = 0, n_truncated = 0;
    while ((got = getline(&line, &cap, fp)) > 0) {
        json_error_t jerr;
        json_t *o = json_loadb(line, (size_t)got, 0, &jerr);
        assert_non_null(o);
        json_t *jt = json_object_get(o, "text"), *ji = json_object_get(o, "ids");
        assert_true(json_is_string(jt));
        assert_true(json_is_array(ji));
        assert_int_equal(json_array_size(ji), CLIP_CONTEXT_MAX);
        int32_t want[CLIP_CONTEXT_MAX], ids[CLIP_CONTEXT_MAX];
        int want_n = 0, n = -1;
        for (int i = 0; i < CLIP_CONTEXT_MAX; i++) {
            want[i] = (int32_t)json_integer_value(json_array_get(ji, (size_t)i));
            if (want[i] == EOT)
                want_n = i + 1; /* the last end token closes the sequence */
        }
        tokenize_ok(tok, json_string_value(jt), json_string_length(jt), ids, &n);
        if (memcmp(ids, want, sizeof(ids)) != 0 || n != want_n) {
            if (n_bad == 0) {
                fprintf(stderr, "%s: first mismatch at case %d, text %s\n", label, n_cases,
                        line);
                print_ids("want", want, want_n);
                print_ids("got ", ids, n);
            }
            n_bad++;
        }
        n_truncated += json_is_false(json_object_get(o, "fits"));
        n_cases++;
        json_decref(o);
    }
    free(line);
    fclose(fp);
    assert_int_equal(n_cases, 1230);
    assert_true(n_truncated > 0); /* the truncation path is covered */
    assert_int_equal(n_bad, 0);
}

static void test_golden_hf(void **state)
{
    struct fixture *f = *state;
    check_golden(f->hf, "vocab.json + merges.txt");
}

static void test_golden_openai(void **state)
{
    struct fixture *f = *state;
    check_golden(f->openai, "bpe_simple_vocab_16e6.txt.gz");
}

/* ---- text fixes: pairs that must tokenize the same (or not) ------------------ */

struct pair_case {
    const char *a, *b;
    int same;
};

static const struct pair_case pair_cases[] = {
    /* ftfy: ligatures */
    {"\xef\xac\x81sh", "fish", 1},          /* U+FB01 */
    {"\xef\xac\x82ower", "flower", 1},      /* U+FB02 */
    {"o\xef\xac\x83" "ce", "office", 1},    /* U+FB03 */
    {"wa\xef\xac\x84" "e", "waffle", 1},    /* U+FB04 */
    {"\xef\xac\x80", "ff", 1},              /* U+FB00 */
    {"\xef\xac\x86op", "stop", 1},          /* U+FB06 */
    {"\xc4\xb3s", "ijs", 1},                /* U+0133 */
    {"\xc7\x86", "d\xc5\xbe", 1},           /* U+01C6 -> d + U+017E */
    /* ftfy: quotes */
    {"\xe2\x80\x9chi\xe2\x80\x9d", "\"hi\"", 1},          /* U+201C U+201D */
    {"\xe2\x80\x9ehi\xe2\x80\x9f", "\"hi\"", 1},          /* U+201E U+201F */
    {"it\xe2\x80\x99s", "it's", 1},                       /* U+2019 */
    {"\xe2\x80\x98x\xe2\x80\x9b", "'x'", 1},              /* U+2018 U+201B */
    {"\xe2\x80\x9ax", "'x", 1},                           /* U+201A */
    {"don\xca\xbct", "don't", 1},                         /* U+02BC */
    {"\xc5\x89", "'n", 1},                                /* U+0149 -> U+02BC n -> 'n */
    /* ftfy: width */
    {"\xef\xbc\xa1\xef\xbc\xa2\xef\xbc\xa3", "abc", 1},   /* U+FF21.. */
    {"\xef\xbc\x91\xef\xbc\x92", "12", 1},                /* U+FF11.. */
    {"a\xe3\x80\x80" "b", "a b", 1},                      /* U+3000 */
    {"\xef\xbc\x81\xef\xbc\x9f", "!?", 1},                /* U+FF01 U+FF1F */
    {"\xef\xbd\xb6", "\xe3\x82\xab", 1},                  /* half-width katakana */
    {"\xef\xbf\xa1" "5", "\xc2\xa3" "5", 1},              /* U+FFE1 -> U+00A3 */
    /* ftfy: NFC */
    {"e\xcc\x81t\xc3\xa9", "\xc3\xa9t\xc3\xa9", 1},       /* e + U+0301 */
    {"cafe\xcc\x81", "caf\xc3\xa9", 1},
    {"\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab", "\xed\x95\x9c", 1}, /* Hangul jamo */
    /* not folded: a plain e is not é; primes are not quotes in ftfy */
    {"cafe", "caf\xc3\xa9", 0},
    {"\xe2\x80\xb2x", "'x", 0},
    /* html.unescape, applied twice */
    {"AT&amp;T", "AT&T", 1},
    {"&lt;b&gt;", "<b>", 1},
    {"&quot;hi&quot;", "\"hi\"", 1},
    {"&apos;x", "'x", 1},
    {"a&nbsp;b", "a\xc2\xa0" "b", 1},
    {"&#8364;", "\xe2\x82\xac", 1},
    {"&#x20AC;", "\xe2\x82\xac", 1},
    {"&#X20ac", "\xe2\x82\xac", 1},
    {"&#128;", "\xe2\x82\xac", 1},           /* Windows-1252 */
    {"&#150;", "\xe2\x80\x93", 1},
    {"&#x81;", "\xc2\x81", 1},               /* one of the five kept controls */
    {"&#0;", "\xef\xbf\xbd", 1},
    {"&#xD800;", "\xef\xbf\xbd", 1},
    {"&#99999999999999999999;", "\xef\xbf\xbd", 1},
    {"&#x110000;", "\xef\xbf\xbd", 1},
    {"a&#1;b", "ab", 1},                     /* invalid code point: dropped */
    {"a&#xFFFF;b", "ab", 1},
    {"&#65&#66", "ab", 1},
    {"&amp;amp;", "&", 1},                   /* twice */
    {"&amp;amp;amp;", "& amp;", 1},          /* but not three times */
    {"&amp;amp;", "& amp;", 0},
    {"&ampfoo", "&foo", 1},                  /* legacy name without ';' */
    {"&notit;", "\xc2\xacit;", 1},           /* longest-prefix rule */
    {"&AMP;", "&", 1},
    {"&hellip;", "\xe2\x80\xa6", 1},
    {"&eacute;t&eacute;", "\xc3\xa9t\xc3\xa9", 1},
    {"&Sigma;", "\xcf\x83", 1},
    {"&hellip", "&hellip", 1},               /* HTML4 names need ';' */
    {"&hellip", "\xe2\x80\xa6", 0},
    {"&#", "&#", 1},
    {"&#x;", "&#x;", 1},
    {"&amp;", "& amp;", 0},
    /* str.lower() */
    {"A PHOTO OF A CAT", "a photo of a cat", 1},
    {"\xce\x9f\xce\x94\xce\x9f\xce\xa3", "\xce\xbf\xce\xb4\xce\xbf\xcf\x82", 1}, /* final sigma */
    {"\xce\xa3\xce\x91", "\xcf\x83\xce\xb1", 1},                                 /* initial sigma */
    {"\xce\x9f\xce\x94\xce\x9f\xce\xa3", "\xce\xbf\xce\xb4\xce\xbf\xcf\x83", 0},
    {"\xc4\xb0", "i\xcc\x87", 1},                                               /* U+0130 */
    {"\xc3\x84PFEL", "\xc3\xa4pfel", 1},
    /* whitespace */
    {"  a \t\n photo \xe2\x80\x83 ", "a photo", 1},
    {"\x1c" "a\x1f", "a", 1},
    {"a\x1c" "b", "a b", 0},                 /* U+001C is stripped at the ends only */
    /* pre-tokenizer */
    {"it\xc5\xbf", "its", 0},
    {"'\xc5\xbf", "'s", 0},                  /* same split, different bytes */
};

static void test_text_fixes(void **state)
{
    struct fixture *f = *state;
    int n_bad = 0;
    for (size_t i = 0; i < sizeof(pair_cases) / sizeof(pair_cases[0]); i++) {
        const struct pair_case *c = &pair_cases[i];
        int32_t a[CLIP_CONTEXT_MAX], b[CLIP_CONTEXT_MAX];
        int na = 0, nb = 0;
        tokenize_ok(f->hf, c->a, strlen(c->a), a, &na);
        tokenize_ok(f->hf, c->b, strlen(c->b), b, &nb);
        int same = na == nb && !memcmp(a, b, sizeof(a));
        if (same != c->same) {
            fprintf(stderr, "case %zu: \"%s\" vs \"%s\": expected %s\n", i, c->a, c->b,
                    c->same ? "the same ids" : "different ids");
            print_ids("a", a, na);
            print_ids("b", b, nb);
            n_bad++;
        }
    }
    assert_int_equal(n_bad, 0);
}

/* U+0345 is skipped by the pre-tokenizer regex; "<|endoftext|>" inside a
 * text is the end token (OpenAI's bpe cache); 's splits off. */
static void test_pretokenizer(void **state)
{
    struct fixture *f = *state;
    int32_t a[CLIP_CONTEXT_MAX], b[CLIP_CONTEXT_MAX];
    int na, nb;
    tokenize_ok(f->hf, "x\xcd\x85y", 4, a, &na);
    tokenize_ok(f->hf, "x y", 3, b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, sizeof(a));

    tokenize_ok(f->hf, "a <|endoftext|> b", 17, a, &na);
    assert_int_equal(na, 5);
    assert_int_equal(a[2], EOT);
    assert_int_equal(a[4], EOT);
    tokenize_ok(f->hf, "<|startoftext|>", 15, a, &na);
    assert_int_equal(na, 3);
    assert_int_equal(a[1], SOT);

    /* IGNORECASE lets U+017F match the s of 's: "'\u017f" is one pre-token,
     * so its first symbol is not the word-final "'" of a lone quote. */
    tokenize_ok(f->hf, "'\xc5\xbf", 3, a, &na);
    tokenize_ok(f->hf, "'", 1, b, &nb);
    assert_int_equal(nb, 3);
    assert_int_not_equal(a[1], b[1]);
    tokenize_ok(f->hf, "'\xc5\xbe", 3, a, &na); /* U+017E: no rule, "'" ends a word */
    assert_int_equal(a[1], b[1]);

    /* "it's" = "it" + "'s" = the tokens of "it" and of "'s" */
    int32_t c[CLIP_CONTEXT_MAX];
    int nc;
    tokenize_ok(f->hf, "it's", 4, a, &na);
    tokenize_ok(f->hf, "it", 2, b, &nb);
    tokenize_ok(f->hf, "'s", 2, c, &nc);
    assert_int_equal(na, nb + nc - 2);
    assert_int_equal(a[1], b[1]);
    assert_int_equal(a[na - 2], c[1]);
}

static void test_empty(void **state)
{
    struct fixture *f = *state;
    int32_t ids[CLIP_CONTEXT_MAX];
    int n = -1;
    const char *texts[] = {"", " ", "\t \n", "&#1;"};
    for (size_t t = 0; t < 4; t++) {
        memset(ids, 0x55, sizeof(ids));
        tokenize_ok(f->hf, texts[t], strlen(texts[t]), ids, &n);
        assert_int_equal(n, 2);
        assert_int_equal(ids[0], SOT);
        assert_int_equal(ids[1], EOT);
        for (int i = 2; i < CLIP_CONTEXT_MAX; i++)
            assert_int_equal(ids[i], 0);
    }
    tokenize_ok(f->hf, NULL, 0, ids, &n);
    assert_int_equal(n, 2);
}

static void test_invalid_utf8(void **state)
{
    struct fixture *f = *state;
    static const char *bad[] = {
        "\xff",             "a\x80",            "\xc0\xaf",         "\xc1\xbf",
        "\xe0\x80\xaf",     "\xed\xa0\x80",     "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80",
        "abc\xe2\x82",      "\xe2\x82\x61",     "\xc3",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int32_t ids[CLIP_CONTEXT_MAX];
        int n = -7;
        struct ims_error err = {0};
        enum ims_status st = clip_tokenize(f->hf, bad[i], strlen(bad[i]), ids, &n, &err);
        assert_int_equal(st, IMS_ERR_INVALID);
        assert_non_null(strstr(err.message, "UTF-8"));
        assert_int_equal(n, -7); /* out-parameters untouched on failure */
    }
    /* An embedded NUL is a character like any other, not the end. */
    int32_t a[CLIP_CONTEXT_MAX], b[CLIP_CONTEXT_MAX];
    int na, nb;
    tokenize_ok(f->hf, "a\0b", 3, a, &na);
    tokenize_ok(f->hf, "a", 1, b, &nb);
    assert_true(na > nb);
}

/* A 1 MB text keeps [sot] + its first 75 tokens + [eot]; the first 75
 * tokens of "a photo of a cat a photo of ..." repeat the 5 of one phrase. */
static void test_long_text(void **state)
{
    struct fixture *f = *state;
    const char *phrase = "a photo of a cat ";
    size_t plen = strlen(phrase), len = 1u << 20;
    char *text = malloc(len);
    assert_non_null(text);
    for (size_t i = 0; i < len; i++)
        text[i] = phrase[i % plen];
    int32_t one[CLIP_CONTEXT_MAX], ids[CLIP_CONTEXT_MAX];
    int n_one, n;
    tokenize_ok(f->hf, phrase, plen, one, &n_one);
    int per = n_one - 2;
    assert_true(per > 0);
    tokenize_ok(f->hf, text, len, ids, &n);
    assert_int_equal(n, CLIP_CONTEXT_MAX);
    assert_int_equal(ids[0], SOT);
    assert_int_equal(ids[CLIP_CONTEXT_MAX - 1], EOT);
    for (int i = 1; i < CLIP_CONTEXT_MAX - 1; i++)
        assert_int_equal(ids[i], one[1 + (i - 1) % per]);

    /* One 1 MB word: BPE runs over all of it (O(n log n)), keeps 75 tokens. */
    memset(text, 'a', len);
    tokenize_ok(f->hf, text, len, ids, &n);
    assert_int_equal(n, CLIP_CONTEXT_MAX);
    assert_int_equal(ids[CLIP_CONTEXT_MAX - 1], EOT);
    int32_t ids2[CLIP_CONTEXT_MAX];
    int n2;
    tokenize_ok(f->openai, text, len, ids2, &n2);
    assert_memory_equal(ids, ids2, sizeof(ids));
    /* A long run of one letter is cut into equal pieces from the left; the
     * 75th token of 1 MB of 'a' equals the 75th of a 10000-letter run. */
    tokenize_ok(f->hf, text, 10000, ids2, &n2);
    assert_memory_equal(ids, ids2, sizeof(ids));
    free(text);

    /* Past the documented limit: a precise error, not a crash. */
    size_t huge = 5u << 20;
    char *big = malloc(huge);
    assert_non_null(big);
    memset(big, 'a', huge);
    struct ims_error err = {0};
    assert_int_equal(clip_tokenize(f->hf, big, huge, ids, &n, &err), IMS_ERR_TOO_LARGE);
    assert_true(strlen(err.message) > 0);
    free(big);
}

/* ---- loading errors ------------------------------------------------------- */

static void write_file(const char *dir, const char *name, const char *data, size_t len)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    fclose(fp);
}

static void remove_file(const char *dir, const char *name)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    unlink(p);
}

static void expect_load_error(const char *dir, enum ims_status want, const char *needle)
{
    struct clip_tokenizer *tok = (struct clip_tokenizer *)0x1;
    struct ims_error err = {0};
    enum ims_status st = clip_tokenizer_load(dir, &tok, &err);
    if (st != want || !strstr(err.message, needle))
        fprintf(stderr, "load: status %d, message '%s' (wanted %d, '%s')\n", st, err.message,
                want, needle);
    assert_int_equal(st, want);
    assert_non_null(strstr(err.message, needle));
    assert_ptr_equal(tok, (struct clip_tokenizer *)0x1);
}

static void test_load_errors(void **state)
{
    (void)state;
    char dir[] = "/tmp/ims-tok-bad-XXXXXX";
    assert_non_null(mkdtemp(dir));

    expect_load_error("/nonexistent/ims-tok", IMS_ERR_NOT_FOUND, "no tokenizer files");
    expect_load_error(dir, IMS_ERR_NOT_FOUND, "no tokenizer files");

    write_file(dir, "vocab.json", "{", 1);
    expect_load_error(dir, IMS_ERR_NOT_FOUND, "merges.txt is missing");
    write_file(dir, "merges.txt", "#version: 0.2\n", 14);
    expect_load_error(dir, IMS_ERR_CORRUPT, "vocab.json");

    const char *v = "{\"a\": 1, \"b\": \"x\"}";
    write_file(dir, "vocab.json", v, strlen(v));
    expect_load_error(dir, IMS_ERR_CORRUPT, "integer id");
    v = "{\"a\": 1, \"b\": 1}";
    write_file(dir, "vocab.json", v, strlen(v));
    expect_load_error(dir, IMS_ERR_CORRUPT, "used twice");
    v = "{\"a\": 1, \"b\": 99999999}";
    write_file(dir, "vocab.json", v, strlen(v));
    expect_load_error(dir, IMS_ERR_CORRUPT, "integer id");
    v = "[1, 2]";
    write_file(dir, "vocab.json", v, strlen(v));
    expect_load_error(dir, IMS_ERR_CORRUPT, "expected an object");
    v = "{\"a\": 0, \"b\": 1}"; /* valid JSON, but no byte symbols */
    write_file(dir, "vocab.json", v, strlen(v));
    expect_load_error(dir, IMS_ERR_CORRUPT, "symbol of byte");

    /* A real vocab.json with a broken merges.txt. */
    char src[4200];
    snprintf(src, sizeof(src), "%s/data/vocab/vocab.json", source_dir());
    char p[256];
    snprintf(p, sizeof(p), "%s/vocab.json", dir);
    unlink(p);
    assert_int_equal(symlink(src, p), 0);
    const char *m = "#version: 0.2\ni n\nt h e\n";
    write_file(dir, "merges.txt", m, strlen(m));
    expect_load_error(dir, IMS_ERR_CORRUPT, "line 3");
    m = "#version: 0.2\ni n\n\nt h\n";
    write_file(dir, "merges.txt", m, strlen(m));
    expect_load_error(dir, IMS_ERR_CORRUPT, "blank line");
    /* An empty or header-only merges.txt is a load error, not a tokenizer
     * without merges. */
    write_file(dir, "merges.txt", "", 0);
    expect_load_error(dir, IMS_ERR_CORRUPT, "no merges (the file is empty)");
    m = "#version: 0.2\n";
    write_file(dir, "merges.txt", m, strlen(m));
    expect_load_error(dir, IMS_ERR_CORRUPT, "no merges (the file is only a header line)");
    m = "#version: 0.2\n\n\n";
    write_file(dir, "merges.txt", m, strlen(m));
    expect_load_error(dir, IMS_ERR_CORRUPT, "no merges");
    m = "#version: 0.2\nq x\n"; /* both parts exist, "qx" does not */
    write_file(dir, "merges.txt", m, strlen(m));
    expect_load_error(dir, IMS_ERR_CORRUPT, "not in the vocabulary");
    remove_file(dir, "vocab.json");
    remove_file(dir, "merges.txt");

    /* OpenAI format: not gzip, truncated gzip, too few merges. */
    write_file(dir, "bpe_simple_vocab_16e6.txt.gz", "\x1f\x8b\x08\x00garbage", 12);
    expect_load_error(dir, IMS_ERR_CORRUPT, "bpe_simple_vocab_16e6.txt.gz");
    /* gzip of "h\ni n\n" (made with zlib at test time is overkill: gzread
     * passes plain text through, so plain text is "a gzip file" too) */
    m = "header\ni n\nt h\n";
    write_file(dir, "bpe_simple_vocab_16e6.txt.gz", m, strlen(m));
    expect_load_error(dir, IMS_ERR_CORRUPT, "2 merges, expected 48894");
    remove_file(dir, "bpe_simple_vocab_16e6.txt.gz");
    assert_int_equal(rmdir(dir), 0);
}

/* ---- allocation failures ---------------------------------------------------- */

static void test_alloc_failures(void **state)
{
    struct fixture *f = *state;
    /* Tokenize: every allocation may fail, the result is OK or NOMEM. */
    const char *text = "Cafe\xcc\x81 &amp; \xef\xac\x81sh \xce\x9f\xce\xa3 a photo of a cat";
    int32_t ref[CLIP_CONTEXT_MAX];
    int n_ref;
    tokenize_ok(f->hf, text, strlen(text), ref, &n_ref);
    int n_nomem = 0, done = 0;
    for (long k = 0; k < 64 && !done; k++) {
        int32_t ids[CLIP_CONTEXT_MAX];
        int n;
        struct ims_error err = {0};
        ims_alloc_set_fail_after(k);
        enum ims_status st = clip_tokenize(f->hf, text, strlen(text), ids, &n, &err);
        ims_alloc_set_fail_after(-1);
        if (st == IMS_OK) {
            assert_memory_equal(ids, ref, sizeof(ids));
            done = 1;
        } else {
            assert_int_equal(st, IMS_ERR_NOMEM);
            n_nomem++;
        }
    }
    assert_true(done);
    assert_true(n_nomem > 0);

    /* Load: same. */
    done = 0;
    n_nomem = 0;
    for (long k = 0; k < 64 && !done; k++) {
        struct clip_tokenizer *tok = NULL;
        struct ims_error err = {0};
        ims_alloc_set_fail_after(k);
        enum ims_status st = clip_tokenizer_load(f->vocab_dir, &tok, &err);
        ims_alloc_set_fail_after(-1);
        if (st == IMS_OK) {
            done = 1;
            clip_tokenizer_free(tok);
        } else {
            assert_int_equal(st, IMS_ERR_NOMEM);
            assert_null(tok);
            n_nomem++;
        }
    }
    assert_true(done);
    assert_true(n_nomem > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_hf),    cmocka_unit_test(test_golden_openai),
        cmocka_unit_test(test_text_fixes),   cmocka_unit_test(test_pretokenizer),
        cmocka_unit_test(test_empty),        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_long_text),    cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
