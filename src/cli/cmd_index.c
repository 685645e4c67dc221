/* SPDX-License-Identifier: MIT */
/*
 * cmd_index.c: `imgsearch index show | set [--ef-search N] [--nprobe N]
 * [--rerank N]`: the index's stored search-time defaults (issue 11 item 1).
 * They live in index.spec beside the snapshot, not in the graph or the
 * lists, so changing them never rebuilds anything: the next process that
 * opens the index (serve, search) uses them. A query can still override
 * them one at a time (ef / nprobe / rerank in the API, --ef ... in search).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_app.h"

const char cli_help_index[] =
    "usage: imgsearch index show [--data DIR] [--catalogue URL]\n"
    "       imgsearch index set [--ef-search N] [--nprobe N] [--rerank N] [--data DIR]\n"
    "                           [--catalogue URL]\n"
    "Shows or changes the index's stored search defaults without a rebuild:\n"
    "--ef-search (HNSW/Graph beam, 1..4096), --nprobe (IVF lists, 1..65536),\n"
    "--rerank (candidates re-scored exactly). Options not given keep their value.\n"
    "show prints each knob's value in force: the stored one, else the type's\n"
    "default marked (default), or - when the type has no such knob.\n"
    CLI_CATALOGUE_HELP;

/* One knob's line: the stored value, else the value searches use when none
 * is stored (marked as the default), or that the type has no such knob. */
static void print_knob(const char *name, int stored, int def, const char *spec)
{
    if (stored > 0)
        printf("%s %d\n", name, stored);
    else if (def > 0)
        printf("%s %d (default)\n", name, def);
    else
        printf("%s - (not used by %s)\n", name, spec);
}

int cli_cmd_index(int argc, char **argv)
{
    struct cli_app_options o = {0};
    struct vindex_search_params p = {0};
    int set = 0, show = 0, given = 0;
    if (argc >= 2 && !strcmp(argv[1], "set"))
        set = 1;
    else if (argc >= 2 && !strcmp(argv[1], "show"))
        show = 1;
    else
        return cli_usage("index", cli_help_index, "give show or set");
    for (int i = 2; i < argc; i++) {
        const char *v;
        long num = 0;
        int r = cli_app_parse_common(argc, argv, &i, &o);
        if (r == 0 && set && (r = cli_opt_value(argc, argv, &i, "--ef-search", &v)) > 0) {
            r = cli_parse_long(v, 1, VINDEX_MAX_EF, &num) ? -1 : 1;
            p.ef_search = (int)num;
            given = 1;
        } else if (r == 0 && set && (r = cli_opt_value(argc, argv, &i, "--nprobe", &v)) > 0) {
            r = cli_parse_long(v, 1, VINDEX_MAX_NPROBE, &num) ? -1 : 1;
            p.nprobe = (int)num;
            given = 1;
        } else if (r == 0 && set && (r = cli_opt_value(argc, argv, &i, "--rerank", &v)) > 0) {
            r = cli_parse_long(v, 1, VINDEX_MAX_K, &num) ? -1 : 1;
            p.rerank = (int)num;
            given = 1;
        }
        if (r < 0)
            return cli_usage("index", cli_help_index, "bad or missing value for %s", argv[i]);
        if (r == 0)
            return cli_usage("index", cli_help_index, "unexpected argument '%s'", argv[i]);
    }
    if (set && !given)
        return cli_usage("index", cli_help_index, "give --ef-search, --nprobe or --rerank");
    struct cli_app app;
    if (cli_app_open("index", &o, &app) != 0)
        return 1;
    int rc = 0;
    if (set) {
        struct vindex_search_params merged = vindex_search_params_merge(&app.params, &p);
        struct ims_error err = {0};
        enum ims_status st = cli_app_write_spec(&app, app.spec, &merged, &err);
        if (st != IMS_OK)
            rc = cli_fail("index", "%s", ims_error_message(&err, st));
        else
            fprintf(stderr, "imgsearch index: search defaults of %s changed, no rebuild\n",
                    app.spec);
    }
    (void)show;
    if (rc == 0) {
        struct vindex_search_params def;
        vindex_default_search_params(app.spec, &def);
        printf("type %s\n", app.spec);
        print_knob("ef_search", app.params.ef_search, def.ef_search, app.spec);
        print_knob("nprobe", app.params.nprobe, def.nprobe, app.spec);
        if (app.params.rerank > 0)
            printf("rerank %d\n", app.params.rerank);
        else
            printf("rerank k (default: each query's k)\n");
    }
    cli_app_close("index", &app, 0);
    return rc;
}
