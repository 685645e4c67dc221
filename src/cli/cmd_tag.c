/* SPDX-License-Identifier: MIT */
/*
 * cmd_tag.c: `imgsearch tag ID... [--add T]... [--remove T]...`: changes the
 * tags of catalogue rows (issue 10), each id in its own transaction, and
 * prints every row's tags as they now are. The rules of a tag (length,
 * number, case) are the catalogue's (store_tag_normalize): the given tags
 * are checked once before any row is touched; after that an image that
 * fails (unknown id, too many tags, a catalogue error) is reported and the
 * other ids are still done; the exit status is 1 if any failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_app.h"

const char cli_help_tag[] =
    "usage: imgsearch tag [--data DIR] [--catalogue URL] ID... [--add T]... [--remove T]...\n"
    "Adds and removes tags of images (removals first); without --add/--remove it\n"
    "shows their tags. A tag keeps its case and is compared case-insensitively;\n"
    "1..64 bytes, no control characters, at most 64 per image. Prints\n"
    "\"ID<TAB>tag, tag, ...\" for every image; an image that fails (unknown id, more\n"
    "than 64 tags) is reported on stderr and the others are still done (exit 1).\n"
    "  --add T       add tag T (repeatable)\n"
    "  --remove T    remove tag T (repeatable; a tag the image lacks is ignored)\n"
    CLI_CATALOGUE_HELP;

int cli_cmd_tag(int argc, char **argv)
{
    struct cli_app_options o = {0};
    int64_t *ids = calloc((size_t)argc, sizeof(int64_t));
    const char **add = calloc((size_t)argc, sizeof(char *));
    const char **rm = calloc((size_t)argc, sizeof(char *));
    size_t n = 0, n_add = 0, n_rm = 0;
    int rc = 0;
    if (!ids || !add || !rm) {
        rc = cli_fail("tag", "out of memory");
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r = cli_app_parse_common(argc, argv, &i, &o);
        if (r < 0) {
            rc = cli_usage("tag", cli_help_tag, "bad value for %s", argv[i]);
            goto out;
        }
        if (r > 0)
            continue;
        int is_add = 0;
        if ((r = cli_opt_value(argc, argv, &i, "--add", &v)) != 0)
            is_add = 1;
        else
            r = cli_opt_value(argc, argv, &i, "--remove", &v);
        if (r < 0) {
            rc = cli_usage("tag", cli_help_tag, "missing value for %s", argv[i]);
            goto out;
        }
        if (r > 0) {
            if (is_add)
                add[n_add++] = v;
            else
                rm[n_rm++] = v;
            continue;
        }
        int64_t id;
        if (cli_parse_id(argv[i], &id)) {
            rc = cli_usage("tag", cli_help_tag, "'%s' is not an image id", argv[i]);
            goto out;
        }
        ids[n++] = id;
    }
    if (n == 0) {
        rc = cli_usage("tag", cli_help_tag, "no id given");
        goto out;
    }
    /* a bad tag would fail for every id: refused before any row changes */
    for (size_t i = 0; i < n_add + n_rm; i++) {
        char t[STORE_TAG_MAX_BYTES + 1], k[STORE_TAG_MAX_BYTES + 1];
        struct ims_error terr = {0};
        const char *v = i < n_add ? add[i] : rm[i - n_add];
        enum ims_status ts = store_tag_normalize(v, t, k, &terr);
        if (ts != IMS_OK) {
            rc = cli_usage("tag", cli_help_tag, "%s %s", i < n_add ? "--add" : "--remove",
                           ims_error_message(&terr, ts));
            goto out;
        }
    }
    struct cli_app app;
    if (cli_app_open("tag", &o, &app) != 0) {
        rc = 1;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct ims_error err = {0};
        enum ims_status st = IMS_OK;
        if (n_add || n_rm)
            st = (enum ims_status)imgsearch_tags_update(app.is, ids[i], add, n_add, rm, n_rm,
                                                        imgsearch__err(&err));
        struct store_image_row row;
        store_row_init(&row);
        if (st == IMS_OK)
            st = store_get(app.store, ids[i], 0, &row, &err);
        if (st == IMS_ERR_NOT_FOUND) {
            fprintf(stderr, "imgsearch tag: no image with id %lld\n", (long long)ids[i]);
            rc = 1;
            continue;
        }
        if (st != IMS_OK) { /* reported; the other ids are still done */
            rc = cli_fail("tag", "image %lld: %s", (long long)ids[i], ims_error_message(&err, st));
            store_row_fini(&row);
            continue;
        }
        printf("%lld\t", (long long)row.id);
        for (size_t t = 0; t < row.n_tags; t++)
            printf("%s%s", t ? ", " : "", row.tags[t]);
        printf("\n");
        store_row_fini(&row);
    }
    if (cli_app_close("tag", &app, 0) != 0)
        rc = 1;
out:
    free(ids);
    free(add);
    free(rm);
    return rc;
}
