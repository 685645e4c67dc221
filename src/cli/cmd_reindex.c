/* SPDX-License-Identifier: MIT */
/*
 * cmd_reindex.c: `imgsearch reindex [--index SPEC]`: rebuilds the derived
 * index from the catalogue, optionally switching its type (any spec of
 * index.h: "Flat", "FlatF16", or a FAISS factory string such as
 * "IVF1024,PQ32" or "HNSW32", trained on the catalogue when needed). The new
 * snapshot is written before the type is recorded, so an interruption leaves
 * the old index in force.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_app.h"

const char cli_help_reindex[] =
    "usage: imgsearch reindex [--data DIR] [--catalogue URL]"
    " [--index SPEC] [--nprobe N] [--ef-search N]\n"
    "                         [--rerank N] [--rebuild]\n"
    "Rebuilds the index from the catalogue. SPEC: Flat (exact, default), FlatF16, or a\n"
    "FAISS factory string such as IVF1024,Flat  IVF4096,PQ64  HNSW32. --nprobe (IVF),\n"
    "--ef-search (HNSW, Graph), --nprobe (IVF) and --rerank (candidates re-scored\n"
    "exactly) are kept with it. Graph<M>[,efc<N>] is our own HNSW, built on every core.\n"
    "When only --nprobe/--ef-search/--rerank change (same SPEC), nothing is rebuilt:\n"
    "the new defaults are stored (see `imgsearch index set`); --rebuild forces a\n"
    "rebuild (which also drops removed vectors from a graph).\n"
    CLI_CATALOGUE_HELP;

int cli_cmd_reindex(int argc, char **argv)
{
    struct cli_app_options o = {0};
    const char *spec = NULL;
    struct vindex_search_params params = {0};
    int params_given = 0, rebuild = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        long num = 0;
        int r = cli_app_parse_common(argc, argv, &i, &o);
        if (r == 0 && !strcmp(argv[i], "--rebuild")) {
            rebuild = 1;
            r = 1;
        } else if (r == 0 && (r = cli_opt_value(argc, argv, &i, "--index", &v)) > 0) {
            spec = v;
        } else if (r == 0 && (r = cli_opt_value(argc, argv, &i, "--nprobe", &v)) > 0) {
            r = cli_parse_long(v, 1, 1 << 20, &num) ? -1 : 1;
            params.nprobe = (int)num;
            params_given = 1;
        } else if (r == 0 && (r = cli_opt_value(argc, argv, &i, "--ef-search", &v)) > 0) {
            r = cli_parse_long(v, 1, 1 << 20, &num) ? -1 : 1;
            params.ef_search = (int)num;
            params_given = 1;
        } else if (r == 0 && (r = cli_opt_value(argc, argv, &i, "--rerank", &v)) > 0) {
            r = cli_parse_long(v, 1, VINDEX_MAX_K, &num) ? -1 : 1;
            params.rerank = (int)num;
            params_given = 1;
        }
        if (r < 0)
            return cli_usage("reindex", cli_help_reindex, "bad or missing value for %s", argv[i]);
        if (r == 0)
            return cli_usage("reindex", cli_help_reindex, "unexpected argument '%s'", argv[i]);
    }
    struct cli_app app;
    if (cli_app_open("reindex", &o, &app) != 0)
        return 1;
    if (!spec)
        spec = app.spec;
    if (!params_given && !strcmp(spec, app.spec))
        params = app.params; /* same type: keep its parameters */
    if (params_given && !rebuild && !strcmp(spec, app.spec)) {
        /* only search-time knobs changed: store them, keep the index */
        struct vindex_search_params merged = vindex_search_params_merge(&app.params, &params);
        struct ims_error perr = {0};
        enum ims_status pst = cli_app_write_spec(&app, app.spec, &merged, &perr);
        int prc = pst == IMS_OK ? 0 : cli_fail("reindex", "%s", ims_error_message(&perr, pst));
        if (pst == IMS_OK)
            fprintf(stderr, "imgsearch reindex: only search parameters changed; stored "
                            "without a rebuild (--rebuild to rebuild)\n");
        cli_app_close("reindex", &app, 0);
        return prc;
    }
    char chosen[256];
    snprintf(chosen, sizeof(chosen), "%s", spec);
    struct ims_error err = {0};
    struct vindex *vx = NULL;
    double t0 = ims_now();
    int64_t seq = 0;
    enum ims_status st = cli_app_index_build(&app, chosen, &vx, &seq, &err);
    int rc = 0;
    if (st == IMS_OK)
        st = vindex_set_search_params(vx, &params, &err);
    if (st == IMS_OK)
        st = replica_save_index(app.replica, vx, seq, &err);
    if (st == IMS_OK)
        st = cli_app_write_spec(&app, vindex_spec(vx), &params, &err);
    if (st != IMS_OK) {
        rc = cli_fail("reindex", "%s (the previous index stays in use)",
                      ims_error_message(&err, st));
    } else {
        fprintf(stderr, "imgsearch reindex: %zu vectors into %s in %.1f s\n", vindex_count(vx),
                vindex_spec(vx), ims_now() - t0);
    }
    vindex_free(vx);
    cli_app_close("reindex", &app, 0);
    return rc;
}
