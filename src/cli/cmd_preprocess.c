/* SPDX-License-Identifier: MIT */
/*
 * cmd_preprocess.c: `imgsearch preprocess FILE [--rgb OUT] [--pixels OUT] [--size N]`.
 *
 * Runs exactly the preprocessing the encoder sees, so that it can be checked
 * against the reference from the command line:
 *   --rgb OUT     N x N x 3 uint8, HWC, right after convert("RGB")
 *   --pixels OUT  3 x N x N float32 CHW, normalised, little-endian
 * N is 224 unless --size says otherwise. It always prints one JSON line
 * describing the decoded image ({"file","format","mode","width","height"}).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "imgsearch/image.h"

const char cli_help_preprocess[] =
    "usage: imgsearch preprocess FILE [--rgb OUT] [--pixels OUT] [--size N]\n"
    "                           [--exif-orientation apply|ignore]\n"
    "\n"
    "Decodes FILE and applies CLIP's preprocessing (Pillow-exact bicubic resize of\n"
    "the shorter side to N, centre crop N x N, RGB).\n"
    "  --rgb OUT     write N x N x 3 uint8 (HWC) after the RGB conversion\n"
    "  --pixels OUT  write 3 x N x N float32 (CHW, little-endian), normalised\n"
    "  --size N      input size of the model (default 224)\n" CLI_EXIF_HELP
    "Prints {\"file\",\"format\",\"mode\",\"width\",\"height\"} as one JSON line.\n";

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

int cli_cmd_preprocess(int argc, char **argv)
{
    const char *cmd = "preprocess";
    const char *file = NULL, *rgb_path = NULL, *pixels_path = NULL, *size_s = NULL,
               *exif_s = NULL;
    int exif_ignore = 0;
    for (int i = 1; i < argc; i++) {
        int r;
        if ((r = cli_opt_value(argc, argv, &i, "--rgb", &rgb_path)) ||
            (r = cli_opt_value(argc, argv, &i, "--pixels", &pixels_path)) ||
            (r = cli_opt_value(argc, argv, &i, "--size", &size_s)) ||
            (r = cli_opt_value(argc, argv, &i, "--exif-orientation", &exif_s))) {
            if (r < 0)
                return cli_usage(cmd, cli_help_preprocess, "%s needs a value", argv[i]);
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1])
            return cli_usage(cmd, cli_help_preprocess, "unknown option %s", argv[i]);
        if (file)
            return cli_usage(cmd, cli_help_preprocess, "only one FILE, got %s too", argv[i]);
        file = argv[i];
    }
    if (!file)
        return cli_usage(cmd, cli_help_preprocess, "missing FILE");
    if (exif_s && cli_parse_exif_orientation(exif_s, &exif_ignore) != 0)
        return cli_usage(cmd, cli_help_preprocess, "--exif-orientation wants apply or ignore, not %s",
                         exif_s);
    long size = 224;
    if (size_s && cli_parse_long(size_s, 1, 4096, &size) != 0)
        return cli_usage(cmd, cli_help_preprocess, "--size must be 1..4096, got %s", size_s);

    int rc = 1;
    char *data = NULL;
    size_t n = 0;
    struct image *img = NULL;
    uint8_t *rgb = NULL;   /* (size, size, 3) */
    float *chw = NULL;     /* (3, size, size) */
    uint8_t *le = NULL;    /* chw as little-endian bytes */
    struct ims_error err = {0};
    enum ims_status st = ims_file_read(file, IMAGE_DEFAULT_MAX_BYTES, &data, &n, &err);
    if (st != IMS_OK) {
        cli_fail(cmd, "%s: %s", file, ims_error_message(&err, st));
        goto out;
    }
    if ((st = image_decode(data, n, NULL, &img, &err)) != IMS_OK ||
        (!exif_ignore && (st = image_exif_upright(data, n, &img, &err)) != IMS_OK)) {
        cli_fail(cmd, "%s: %s", file, ims_error_message(&err, st));
        goto out;
    }
    size_t plane = (size_t)size * (size_t)size;
    rgb = ims_malloc(plane * 3);
    if (!rgb) {
        cli_fail(cmd, "out of memory");
        goto out;
    }
    if ((st = image_clip_preprocess(img, (int)size, rgb, &err)) != IMS_OK) {
        cli_fail(cmd, "%s: %s", file, ims_error_message(&err, st));
        goto out;
    }
    if (rgb_path && (st = ims_file_write_atomic(rgb_path, rgb, plane * 3, &err)) != IMS_OK) {
        cli_fail(cmd, "%s: %s", rgb_path, ims_error_message(&err, st));
        goto out;
    }
    if (pixels_path) {
        chw = ims_malloc(plane * 3 * sizeof(float));
        le = ims_malloc(plane * 3 * 4);
        if (!chw || !le) {
            cli_fail(cmd, "out of memory");
            goto out;
        }
        image_clip_normalize(rgb, (int)size, chw);
        for (size_t i = 0; i < plane * 3; i++) {
            uint32_t u;
            memcpy(&u, &chw[i], 4);
            le[4 * i] = (uint8_t)u;
            le[4 * i + 1] = (uint8_t)(u >> 8);
            le[4 * i + 2] = (uint8_t)(u >> 16);
            le[4 * i + 3] = (uint8_t)(u >> 24);
        }
        if ((st = ims_file_write_atomic(pixels_path, le, plane * 3 * 4, &err)) != IMS_OK) {
            cli_fail(cmd, "%s: %s", pixels_path, ims_error_message(&err, st));
            goto out;
        }
    }
    fputs("{\"file\": ", stdout);
    json_string(stdout, file);
    printf(", \"format\": \"%s\", \"mode\": \"%s\", \"width\": %d, \"height\": %d}\n",
           image_format_name(img->format), image_mode_name(img->mode), img->width, img->height);
    rc = 0;
out:
    ims_free(data);
    image_free(img);
    ims_free(rgb);
    ims_free(chw);
    ims_free(le);
    return rc;
}
