/* SPDX-License-Identifier: MIT */
/*
 * fuzz_tokenizer.c: arbitrary bytes -> clip_tokenize.
 *
 * The tokenizer is loaded once, twice in fact: from data/vocab (Hugging Face
 * vocab.json + merges.txt) and from a temp folder holding only OpenAI's
 * bpe_simple_vocab_16e6.txt.gz; both must agree on every input. On success
 * the ids must have clip.tokenize's shape (start token, in-range ids, end
 * token, zero padding); the only acceptable failures are invalid UTF-8 and
 * oversize input. Anything else aborts, which the fuzzer reports.
 * The vocabulary folder is $IMS_TOKENIZER_VOCAB, else IMS_SOURCE_DIR/data/vocab.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgsearch/clip.h"

static struct clip_tokenizer *tok_hf, *tok_openai;
static char tmp_dir[64], tmp_link[128];

static void cleanup(void)
{
    clip_tokenizer_free(tok_hf);
    clip_tokenizer_free(tok_openai);
    if (tmp_link[0])
        unlink(tmp_link);
    if (tmp_dir[0])
        rmdir(tmp_dir);
}

static void init(void)
{
    char dir[4096], gz[4200];
    struct ims_error err = {0};
    const char *env = getenv("IMS_TOKENIZER_VOCAB");
    if (env && *env)
        snprintf(dir, sizeof(dir), "%s", env);
    else
        snprintf(dir, sizeof(dir), "%s/data/vocab", IMS_SOURCE_DIR);
    if (clip_tokenizer_load(dir, &tok_hf, &err) != IMS_OK) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err.message);
        abort();
    }
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/ims-fuzz-tok-XXXXXX");
    if (!mkdtemp(tmp_dir))
        abort();
    atexit(cleanup);
    snprintf(gz, sizeof(gz), "%s/bpe_simple_vocab_16e6.txt.gz", dir);
    snprintf(tmp_link, sizeof(tmp_link), "%s/bpe_simple_vocab_16e6.txt.gz", tmp_dir);
    if (symlink(gz, tmp_link) != 0 || clip_tokenizer_load(tmp_dir, &tok_openai, &err) != IMS_OK) {
        fprintf(stderr, "fuzz_tokenizer: OpenAI format: %s\n", err.message);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tok_hf)
        init();
    int32_t a[CLIP_CONTEXT_MAX], b[CLIP_CONTEXT_MAX];
    int na = -1, nb = -1;
    enum ims_status sa = clip_tokenize(tok_hf, (const char *)data, size, a, &na, NULL);
    enum ims_status sb = clip_tokenize(tok_openai, (const char *)data, size, b, &nb, NULL);
    if (sa != sb)
        abort();
    if (sa != IMS_OK) {
        if (sa != IMS_ERR_INVALID && sa != IMS_ERR_TOO_LARGE)
            abort();
        if (na != -1 || nb != -1) /* out-parameters untouched on failure */
            abort();
        return 0;
    }
    if (na != nb || memcmp(a, b, sizeof(a)) != 0)
        abort();
    if (na < 2 || na > CLIP_CONTEXT_MAX || a[0] != 49406 || a[na - 1] != 49407)
        abort();
    for (int i = 1; i < na - 1; i++)
        if (a[i] < 0 || a[i] > 49407)
            abort();
    for (int i = na; i < CLIP_CONTEXT_MAX; i++)
        if (a[i] != 0)
            abort();
    return 0;
}
