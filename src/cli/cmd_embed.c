/* SPDX-License-Identifier: MIT */
/*
 * cmd_embed.c: `imgsearch embed`: CLIP embeddings of images and texts as JSON
 * lines, one per input in the order given (DESIGN.md, command line).
 *
 * The model is loaded once; inputs are encoded one at a time on one context
 * (this is a tool for checking and scripting, not the ingest path, which
 * batches). An input that cannot be read, decoded or tokenized stops the
 * command with exit status 1 and a message naming it; the lines already
 * printed stay valid. Floats are printed with %.9g, which round-trips
 * float32 exactly.
 */

#include "cli.h"
#include "imgsearch/clip.h"
#include "imgsearch/image.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char cli_help_embed[] =
    "usage: imgsearch embed [--model DIR] (--image FILE | --text TEXT)... [--raw]\n"
    "                       [--precision f32|bf16] [--threads N] [--exif-orientation M]\n"
    "\n"
    "Prints one JSON line per input, in order: {\"input\": \"...\", \"embedding\": [...]}.\n"
    "\n"
    "  --model DIR         CLIP model folder (default $IMGSEARCH_MODEL, see README)\n"
    "  --image FILE        an image (JPEG, PNG, WebP, GIF, BMP, HEIC, AVIF, TIFF)\n"
    "  --text TEXT         a text\n"
    "  --raw               print the projection output instead of the L2-normalised vector\n"
    "  --precision P       f32 (default) or bf16 (falls back to f32 without CPU support)\n"
    "  --threads N         threads for the forward pass (default: all cores)\n" CLI_EXIF_HELP;

struct embed_input {
    int is_image;
    const char *value;
};

/* Writes `s` as a JSON string (quotes included). Bytes >= 0x80 pass through:
 * arguments are UTF-8 on any sane system, and invalid UTF-8 in a text is
 * refused by the tokenizer before we print anything for it. */
static void embed_print_json_string(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        default:
            if (*p < 0x20)
                printf("\\u%04x", *p);
            else
                putchar(*p);
        }
    }
    putchar('"');
}

static void embed_print(const char *input, const float *v, int d)
{
    fputs("{\"input\": ", stdout);
    embed_print_json_string(input);
    fputs(", \"embedding\": [", stdout);
    for (int i = 0; i < d; i++)
        printf(i ? ", %.9g" : "%.9g", (double)v[i]);
    fputs("]}\n", stdout);
}

/* pixels: (3, S, S) f32, filled on success. */
static int exif_ignore; /* --exif-orientation ignore */

static enum ims_status embed_load_image(const char *path, int size, uint8_t *rgb, float *pixels,
                                        struct ims_error *err)
{
    enum ims_status st;
    char *bytes = NULL;
    size_t n = 0;
    struct image *img = NULL;
    struct image_limits lim;
    image_limits_default(&lim);
    st = ims_file_read(path, lim.max_bytes, &bytes, &n, err);
    if (st != IMS_OK)
        goto out;
    st = image_decode(bytes, n, &lim, &img, err);
    if (st != IMS_OK)
        goto out;
    if (!exif_ignore && (st = image_exif_upright(bytes, n, &img, err)) != IMS_OK)
        goto out;
    st = image_clip_preprocess(img, size, rgb, err);
    if (st != IMS_OK)
        goto out;
    image_clip_normalize(rgb, size, pixels);
out:
    image_free(img);
    ims_free(bytes);
    return st;
}

int cli_cmd_embed(int argc, char **argv)
{
    const char *model_dir = cli_default_model_dir();
    const char *precision = "f32";
    long threads = 0;
    int raw = 0, n_inputs = 0, rc = 1;
    struct embed_input *inputs = ims_calloc((size_t)argc, sizeof(*inputs));
    struct clip_model *model = NULL;
    struct clip_ctx *ctx = NULL;
    uint8_t *rgb = NULL;
    float *pixels = NULL, *emb = NULL;
    struct ims_error err = {0};
    enum ims_status st;
    if (!inputs)
        return cli_fail("embed", "out of memory");

    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        if ((r = cli_opt_value(argc, argv, &i, "--model", &v)) != 0) {
            if (r < 0)
                goto missing;
            model_dir = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--image", &v)) != 0) {
            if (r < 0)
                goto missing;
            inputs[n_inputs++] = (struct embed_input){1, v};
        } else if ((r = cli_opt_value(argc, argv, &i, "--text", &v)) != 0) {
            if (r < 0)
                goto missing;
            inputs[n_inputs++] = (struct embed_input){0, v};
        } else if ((r = cli_opt_value(argc, argv, &i, "--precision", &v)) != 0) {
            if (r < 0)
                goto missing;
            precision = v;
        } else if ((r = cli_opt_value(argc, argv, &i, "--threads", &v)) != 0) {
            if (r < 0)
                goto missing;
            if (cli_parse_long(v, 1, 1024, &threads) != 0) {
                rc = cli_usage("embed", cli_help_embed, "--threads wants 1 to 1024, not '%s'", v);
                goto out;
            }
        } else if ((r = cli_opt_value(argc, argv, &i, "--exif-orientation", &v)) != 0) {
            if (r < 0)
                goto missing;
            if (cli_parse_exif_orientation(v, &exif_ignore) != 0) {
                rc = cli_usage("embed", cli_help_embed, "--exif-orientation wants apply or ignore, not '%s'", v);
                goto out;
            }
        } else if (!strcmp(argv[i], "--raw")) {
            raw = 1;
        } else {
            rc = cli_usage("embed", cli_help_embed, "unexpected argument '%s'", argv[i]);
            goto out;
        }
        continue;
    missing:
        rc = cli_usage("embed", cli_help_embed, "%s needs a value", argv[i]);
        goto out;
    }
    if (n_inputs == 0) {
        rc = cli_usage("embed", cli_help_embed, "give at least one --image or --text");
        goto out;
    }
    struct clip_model_params mp;
    clip_model_params_default(&mp);
    if (!strcmp(precision, "f32")) {
        mp.precision = CLIP_PRECISION_F32;
    } else if (!strcmp(precision, "bf16")) {
        mp.precision = CLIP_PRECISION_BF16;
    } else {
        rc = cli_usage("embed", cli_help_embed, "--precision is f32 or bf16, not '%s'", precision);
        goto out;
    }
    if (threads > 0)
        mp.n_threads = (int)threads;

    st = clip_model_load(model_dir, &mp, &model, &err);
    if (st != IMS_OK) {
        rc = cli_fail("embed", "%s: %s", model_dir, ims_error_message(&err, st));
        goto out;
    }
    st = clip_ctx_new(model, 1, &ctx, &err);
    if (st != IMS_OK) {
        rc = cli_fail("embed", "%s", ims_error_message(&err, st));
        goto out;
    }
    int d = clip_model_embed_dim(model), s = clip_model_image_size(model);
    rgb = ims_malloc((size_t)s * s * 3);
    pixels = ims_malloc((size_t)3 * s * s * sizeof(float));
    emb = ims_malloc((size_t)d * sizeof(float));
    if (!rgb || !pixels || !emb) {
        rc = cli_fail("embed", "out of memory");
        goto out;
    }
    for (int k = 0; k < n_inputs; k++) {
        const char *v = inputs[k].value;
        if (inputs[k].is_image) {
            st = embed_load_image(v, s, rgb, pixels, &err);
            if (st == IMS_OK)
                st = clip_ctx_encode_images(ctx, pixels, 1, emb, !raw, &err);
        } else {
            int32_t ids[CLIP_CONTEXT_MAX];
            int n_ids = 0;
            st = clip_tokenize(clip_model_tokenizer(model), v, strlen(v), ids, &n_ids, &err);
            if (st == IMS_OK)
                st = clip_ctx_encode_text(ctx, ids, n_ids, emb, !raw, &err);
        }
        if (st != IMS_OK) {
            fflush(stdout);
            rc = cli_fail("embed", "%s '%s': %s", inputs[k].is_image ? "image" : "text", v,
                          ims_error_message(&err, st));
            goto out;
        }
        embed_print(v, emb, d);
    }
    rc = fflush(stdout) == 0 ? 0 : cli_fail("embed", "cannot write the output");
out:
    ims_free(emb);
    ims_free(pixels);
    ims_free(rgb);
    clip_ctx_free(ctx);
    clip_model_free(model);
    ims_free(inputs);
    return rc;
}
