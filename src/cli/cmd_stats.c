/* SPDX-License-Identifier: MIT */
/* cmd_stats.c: `imgsearch stats`: the JSON object of GET /api/v1/stats, from
 * libimgsearch (count, dimensions, model, index type, change feed). */
#include <jansson.h>
#include <stdio.h>

#include "cli.h"
#include "cli_app.h"

const char cli_help_stats[] =
    "usage: imgsearch stats [--data DIR] [--catalogue URL]"
    "\n"
    "Prints {\"images\": N, \"dim\": D, \"model\": \"...\", \"index\": \"...\",\n"
    "\"feed\": {\"seq\": S, \"floor\": F}}: the catalogue's newest change and the\n"
    "change its feed is trimmed up to (a node whose index covers less than F rebuilds).\n"
    "Only reads: a data folder or catalogue that does not exist is an error.\n"
    CLI_CATALOGUE_HELP;

int cli_cmd_stats(int argc, char **argv)
{
    struct cli_app_options o = {0};
    for (int i = 1; i < argc; i++) {
        int r = cli_app_parse_common(argc, argv, &i, &o);
        if (r < 0)
            return cli_usage("stats", cli_help_stats, "bad value for %s", argv[i]);
        if (r == 0)
            return cli_usage("stats", cli_help_stats, "unexpected argument '%s'", argv[i]);
    }
    o.existing_only = 1; /* reading a folder must not create a catalogue in it */
    struct cli_app app;
    if (cli_app_open("stats", &o, &app) != 0)
        return 1;
    struct ims_error err = {0};
    int64_t n = 0;
    int64_t seq = 0, floor = 0;
    struct imgsearch_error lerr = {{0}};
    enum imgsearch_status ls = imgsearch_count(app.is, &n, &lerr);
    if (ls != IMGSEARCH_OK) {
        cli_app_close("stats", &app, 0);
        return cli_fail("stats", "%s", lerr.message[0] ? lerr.message : imgsearch_strerror(ls));
    }
    enum ims_status st = imgsearch__feed(app.is, &seq, &floor, &err);
    if (st != IMS_OK) {
        cli_app_close("stats", &app, 0);
        return cli_fail("stats", "%s", ims_error_message(&err, st));
    }
    json_t *j = json_pack("{s:I, s:i, s:s, s:s, s:{s:I, s:I}}", "images", (json_int_t)n, "dim",
                          imgsearch_dim(app.is), "model", imgsearch_model_name(app.is), "index",
                          imgsearch__index_spec(app.is), "feed", "seq", (json_int_t)seq, "floor",
                          (json_int_t)floor);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(j);
    cli_app_close("stats", &app, 0);
    return s ? 0 : 1;
}
