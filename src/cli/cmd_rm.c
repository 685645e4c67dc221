/* SPDX-License-Identifier: MIT */
/*
 * cmd_rm.c: `imgsearch rm ID...`: deletes catalogue rows (one transaction,
 * libimgsearch's remove: the index follows the catalogue's feed) and writes
 * the index snapshot without them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_app.h"

const char cli_help_rm[] = "usage: imgsearch rm [--data DIR] [--catalogue URL] ID...\n"
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
        int64_t v;
        if (cli_parse_id(argv[i], &v)) {
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
    struct ims_error err = {0}, ierr = {0};
    enum ims_status ist = IMS_OK;
    enum ims_status st = existed ? imgsearch__remove_many(app.is, ids, n, existed, &ist, &ierr,
                                                          &err)
                                 : IMS_ERR_NOMEM;
    int save_index = st == IMS_OK;
    if (st != IMS_OK) {
        rc = cli_fail("rm", "%s", ims_error_message(&err, st));
    } else {
        if (ist != IMS_OK) {
            /* the catalogue (the source of truth) has the deletions; a
             * snapshot without them would be older than it claims, so keep
             * the old one: the next open replays the deletion log */
            ims_log(IMS_LOG_WARN,
                    "rm: the rows are deleted but the index could not drop them (%s); "
                    "its snapshot is left as it was and will catch up on the next start",
                    ims_error_message(&ierr, ist));
            save_index = 0;
        }
        for (size_t i = 0; i < n; i++) {
            if (existed[i]) {
                printf("deleted %lld\n", (long long)ids[i]);
            } else {
                fprintf(stderr, "imgsearch rm: no image with id %lld\n", (long long)ids[i]);
                rc = 1;
            }
        }
    }
    if (cli_app_close("rm", &app, save_index) != 0)
        rc = 1;
    free(existed);
    free(ids);
    return rc;
}
