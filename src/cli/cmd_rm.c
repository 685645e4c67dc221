/* SPDX-License-Identifier: MIT */
/*
 * cmd_rm.c: `imgsearch rm ID...`: deletes catalogue rows (one transaction)
 * and removes them from the index snapshot.
 */
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_app.h"

const char cli_help_rm[] = "usage: imgsearch rm [--data DIR] [--catalogue URL]"
    " ID...\n"
                           "Deletes images (row, embedding, thumbnail) by catalogue id.\n"
    CLI_CATALOGUE_HELP;

int cli_cmd_rm(int argc, char **argv)
{
    struct cli_app_options o = {0};
    int64_t *ids = calloc((size_t)argc, sizeof(int64_t));
    size_t n = 0;
    int rc = 0;
    if (!ids)
        return cli_fail("rm", "out of memory");
    for (int i = 1; i < argc; i++) {
        int r = cli_app_parse_common(argc, argv, &i, &o);
        if (r < 0) {
            free(ids);
            return cli_usage("rm", cli_help_rm, "bad value for %s", argv[i]);
        }
        if (r > 0)
            continue;
        long v;
        if (cli_parse_long(argv[i], 1, INT64_MAX > LONG_MAX ? LONG_MAX : (long)INT64_MAX, &v)) {
            free(ids);
            return cli_usage("rm", cli_help_rm, "'%s' is not an image id", argv[i]);
        }
        ids[n++] = v;
    }
    if (n == 0) {
        free(ids);
        return cli_usage("rm", cli_help_rm, "no id given");
    }
    o.with_index = 1;
    struct cli_app app;
    if (cli_app_open("rm", &o, &app) != 0) {
        free(ids);
        return 1;
    }
    uint8_t *existed = calloc(n, 1);
    struct ims_error err = {0};
    enum ims_status st = existed ? store_delete_many(app.store, ids, n, existed, &err)
                                 : IMS_ERR_NOMEM;
    if (st != IMS_OK) {
        rc = cli_fail("rm", "%s", ims_error_message(&err, st));
    } else {
        vindex_remove(app.index, ids, n, NULL, NULL);
        for (size_t i = 0; i < n; i++) {
            if (existed[i]) {
                printf("deleted %lld\n", (long long)ids[i]);
            } else {
                fprintf(stderr, "imgsearch rm: no image with id %lld\n", (long long)ids[i]);
                rc = 1;
            }
        }
    }
    if (cli_app_close("rm", &app, st == IMS_OK) != 0)
        rc = 1;
    free(existed);
    free(ids);
    return rc;
}
