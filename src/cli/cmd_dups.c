/* SPDX-License-Identifier: MIT */
/*
 * cmd_dups.c: `imgsearch dups [--threshold T] [--limit N] [--json]`: the
 * library's near-duplicate groups (issue 10) from vindex_duplicates over the
 * folder's index; --json prints exactly the JSON of GET /api/v1/duplicates.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_app.h"

const char cli_help_dups[] =
    "usage: imgsearch dups [--data DIR] [--catalogue URL] [--threshold T] [--limit N] [--json]\n"
    "Groups of near-duplicate images: every image is linked to its nearest\n"
    "neighbours whose cosine similarity is >= T; linked images form a group.\n"
    "Prints one group a line, largest first: the weakest link's score, then the\n"
    "ids; --json prints {\"groups\": [{\"ids\": [...], \"min_score\": S}], \"threshold\": T}.\n"
    "  --threshold T   0 < T <= 1 (default 0.95)\n"
    "  --limit N       at most N groups (default: all)\n"
    CLI_CATALOGUE_HELP;

int cli_cmd_dups(int argc, char **argv)
{
    struct cli_app_options o = {0};
    struct vindex_dups_options dopt;
    vindex_dups_options_default(&dopt);
    int json = 0;
    long limit = -1;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r = cli_app_parse_common(argc, argv, &i, &o);
        if (r < 0)
            return cli_usage("dups", cli_help_dups, "bad value for %s", argv[i]);
        if (r > 0)
            continue;
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--threshold", &v)) != 0) {
            char *end = NULL;
            double t = r > 0 ? strtod(v, &end) : 0.0;
            if (r < 0 || !end || *end || !(t > 0.0 && t <= 1.0))
                return cli_usage("dups", cli_help_dups, "--threshold must be in (0, 1]");
            dopt.threshold = (float)t;
        } else if ((r = cli_opt_value(argc, argv, &i, "--limit", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 1, 100000000, &limit))
                return cli_usage("dups", cli_help_dups, "--limit must be a positive number");
        } else {
            return cli_usage("dups", cli_help_dups, "unexpected argument '%s'", argv[i]);
        }
    }
    o.with_index = 1;
    struct cli_app app;
    if (cli_app_open("dups", &o, &app) != 0)
        return 1;
    struct ims_error err = {0};
    struct vindex_dups d;
    enum ims_status st = vindex_duplicates(app.index, &dopt, &d, &err);
    int rc = 0;
    if (st != IMS_OK) {
        rc = cli_fail("dups", "%s", ims_error_message(&err, st));
    } else {
        size_t n = limit > 0 ? IMS_MIN(d.n, (size_t)limit) : d.n;
        if (json) {
            json_t *arr = json_array();
            for (size_t g = 0; arr && g < n; g++) {
                json_t *ids = json_array();
                for (size_t i = 0; ids && i < d.groups[g].n; i++)
                    json_array_append_new(ids, json_integer(d.groups[g].ids[i]));
                double ms = (double)(long long)(d.groups[g].min_score * 1e4 + 0.5) / 1e4;
                json_array_append_new(arr, json_pack("{s:o?, s:f}", "ids", ids, "min_score", ms));
            }
            json_t *j = json_pack("{s:o?, s:f}", "groups", arr, "threshold", (double)dopt.threshold);
            char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
            if (s)
                printf("%s\n", s);
            else
                rc = cli_fail("dups", "out of memory");
            free(s);
            json_decref(j);
        } else {
            for (size_t g = 0; g < n; g++) {
                printf("%.4f ", (double)d.groups[g].min_score);
                for (size_t i = 0; i < d.groups[g].n; i++)
                    printf(" %lld", (long long)d.groups[g].ids[i]);
                printf("\n");
            }
            fprintf(stderr, "imgsearch dups: %zu group(s) among %zu images (threshold %.4g)\n",
                    d.n, d.n_vectors, (double)dopt.threshold);
        }
        vindex_dups_fini(&d);
    }
    cli_app_close("dups", &app, 0);
    return rc;
}
