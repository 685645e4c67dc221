/* SPDX-License-Identifier: MIT */
/*
 * cmd_tokenize.c: `imgsearch tokenize [--model DIR] [TEXT...]`: prints
 * clip_tokenize's 77 ids for each text as one JSON line
 * {"text": "...", "ids": [...]} (DESIGN.md). Without TEXT it reads JSON lines
 * {"text": "..."} from stdin, so any string (newlines, NULs) can be fed.
 *
 * The vocabulary comes from the model folder when it holds one, else from
 * the bundled copy (cli_share_dir()/vocab): tokenizing needs no downloaded
 * model. Output is flushed per line so the command can serve as a pipe.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "imgsearch/clip.h"

const char cli_help_tokenize[] =
    "usage: imgsearch tokenize [--model DIR] [TEXT...]\n"
    "\n"
    "Prints CLIP's token ids (OpenAI's clip.tokenize: 77 ids, start and end\n"
    "tokens, zero padding, long texts cut) as one JSON line per TEXT:\n"
    "  {\"text\": \"...\", \"ids\": [49406, ..., 49407, 0, ...]}\n"
    "Without TEXT, reads JSON lines {\"text\": \"...\"} from stdin.\n"
    "The vocabulary is read from the model folder (default: $IMGSEARCH_MODEL\n"
    "or the standard location) if it has one, else the bundled copy is used.\n"
    "  --model DIR   model folder (vocab.json + merges.txt, or\n"
    "                bpe_simple_vocab_16e6.txt.gz)\n"
    "  --            end of options: every later argument is a TEXT\n";

#define TOKENIZE_MAX_LINE (8u << 20)

static int has_vocab(const char *dir)
{
    char p[4200];
    snprintf(p, sizeof(p), "%s/vocab.json", dir);
    if (access(p, F_OK) == 0)
        return 1;
    snprintf(p, sizeof(p), "%s/merges.txt", dir);
    if (access(p, F_OK) == 0)
        return 1;
    snprintf(p, sizeof(p), "%s/bpe_simple_vocab_16e6.txt.gz", dir);
    return access(p, F_OK) == 0;
}

/* Prints one result line; returns 0, or 1 after reporting the error. */
static int tokenize_one(const struct clip_tokenizer *tok, const char *text, size_t len,
                        const char *where)
{
    int32_t ids[CLIP_CONTEXT_MAX];
    int n_ids = 0;
    struct ims_error err = {0};
    enum ims_status st = clip_tokenize(tok, text, len, ids, &n_ids, &err);
    if (st != IMS_OK)
        return cli_fail("tokenize", "%s: %s", where, ims_error_message(&err, st));
    json_t *js = json_stringn(text, len); /* valid UTF-8 now: clip_tokenize checked */
    char *quoted = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
    json_decref(js);
    if (!quoted)
        return cli_fail("tokenize", "%s: cannot encode the text as JSON", where);
    printf("{\"text\": %s, \"ids\": [", quoted);
    free(quoted);
    for (int i = 0; i < CLIP_CONTEXT_MAX; i++)
        printf(i ? ", %d" : "%d", (int)ids[i]);
    printf("]}\n");
    fflush(stdout);
    return 0;
}

static int tokenize_stdin(const struct clip_tokenizer *tok)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long line_no = 0;
    int rc = 0;
    while (rc == 0 && (got = getline(&line, &cap, stdin)) >= 0) {
        char where[64];
        line_no++;
        snprintf(where, sizeof(where), "stdin line %ld", line_no);
        size_t n = (size_t)got;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n == 0)
            continue;
        if (n > TOKENIZE_MAX_LINE) {
            rc = cli_fail("tokenize", "%s: longer than %u bytes", where, TOKENIZE_MAX_LINE);
            break;
        }
        json_error_t jerr;
        json_t *o = json_loadb(line, n, JSON_ALLOW_NUL, &jerr);
        json_t *t = json_is_object(o) ? json_object_get(o, "text") : NULL;
        if (!json_is_string(t))
            rc = cli_fail("tokenize", "%s: expected a JSON object {\"text\": \"...\"}%s%s", where,
                          o ? "" : ": ", o ? "" : jerr.text);
        else
            rc = tokenize_one(tok, json_string_value(t), json_string_length(t), where);
        json_decref(o);
    }
    if (rc == 0 && ferror(stdin))
        rc = cli_fail("tokenize", "cannot read stdin");
    free(line);
    return rc;
}

int cli_cmd_tokenize(int argc, char **argv)
{
    const char *cmd = "tokenize";
    const char *model = NULL;
    int rc = 0, n_texts = 0, opts_done = 0;
    char **texts = calloc((size_t)argc + 1, sizeof(char *));
    struct clip_tokenizer *tok = NULL;
    if (!texts)
        return cli_fail(cmd, "out of memory");
    for (int i = 1; i < argc; i++) {
        if (!opts_done && !strcmp(argv[i], "--")) {
            opts_done = 1;
            continue;
        }
        if (!opts_done && !strncmp(argv[i], "--", 2)) {
            int r = cli_opt_value(argc, argv, &i, "--model", &model);
            if (r < 0) {
                rc = cli_usage(cmd, cli_help_tokenize, "%s needs a value", argv[i]);
                goto out;
            }
            if (r == 0) {
                rc = cli_usage(cmd, cli_help_tokenize, "unknown option '%s'", argv[i]);
                goto out;
            }
            continue;
        }
        texts[n_texts++] = argv[i];
    }
    char share[4200];
    const char *dir = model ? model : cli_default_model_dir();
    if (!has_vocab(dir)) {
        snprintf(share, sizeof(share), "%s/vocab", cli_share_dir());
        dir = share;
    }
    struct ims_error err = {0};
    enum ims_status st = clip_tokenizer_load(dir, &tok, &err);
    if (st != IMS_OK) {
        rc = cli_fail(cmd, "%s", ims_error_message(&err, st));
        goto out;
    }
    if (n_texts == 0) {
        rc = tokenize_stdin(tok);
    } else {
        for (int k = 0; k < n_texts && rc == 0; k++) {
            char where[32];
            snprintf(where, sizeof(where), "text %d", k + 1);
            rc = tokenize_one(tok, texts[k], strlen(texts[k]), where);
        }
    }
out:
    clip_tokenizer_free(tok);
    free(texts);
    return rc;
}
