/* SPDX-License-Identifier: MIT */
/*
 * cmd_make_model.c: `imgsearch make-model`: writes a complete model folder
 * whose weights follow PRNG_MODEL.md (clip_make_prng_model), so tests and
 * benchmarks can run full-size architectures without downloading weights.
 * A thin shell over the library: options in, one call, message out.
 */

#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "imgsearch/clip.h"

const char cli_help_make_model[] =
    "usage: imgsearch make-model --config CONFIG.json --prng-seed N --out DIR [--vocab DIR]\n"
    "\n"
    "Writes a model folder (config.json, F32 model.safetensors, vocab.json,\n"
    "merges.txt) for the Hugging Face CLIP config CONFIG.json, with weights\n"
    "generated from seed N as docs/internals/model-files.md describes. The\n"
    "vocabulary is copied from --vocab (default: the bundled copy).\n";

int cli_cmd_make_model(int argc, char **argv)
{
    const char *cmd = "make-model";
    const char *config = NULL, *seed_s = NULL, *out = NULL, *vocab = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(cli_help_make_model, stdout);
            return 0;
        }
        int r;
        if ((r = cli_opt_value(argc, argv, &i, "--config", &config)) != 0 ||
            (r = cli_opt_value(argc, argv, &i, "--prng-seed", &seed_s)) != 0 ||
            (r = cli_opt_value(argc, argv, &i, "--out", &out)) != 0 ||
            (r = cli_opt_value(argc, argv, &i, "--vocab", &vocab)) != 0) {
            if (r < 0)
                return cli_usage(cmd, cli_help_make_model, "%s needs a value", argv[i]);
            continue;
        }
        return cli_usage(cmd, cli_help_make_model, "unexpected argument '%s'", argv[i]);
    }
    if (!config || !seed_s || !out)
        return cli_usage(cmd, cli_help_make_model, "--config, --prng-seed and --out are required");
    long seed;
    if (cli_parse_long(seed_s, 0, 0x7fffffffffffffffL, &seed) != 0)
        return cli_usage(cmd, cli_help_make_model, "--prng-seed must be a non-negative integer");
    char vocab_buf[4096];
    if (!vocab) {
        snprintf(vocab_buf, sizeof(vocab_buf), "%s/vocab", cli_share_dir());
        vocab = vocab_buf;
    }
    struct ims_error err = {0};
    enum ims_status st = clip_make_prng_model(config, (uint64_t)seed, out, vocab, &err);
    if (st != IMS_OK)
        return cli_fail(cmd, "%s", ims_error_message(&err, st));
    return 0;
}
