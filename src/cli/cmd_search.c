/* SPDX-License-Identifier: MIT */
/*
 * cmd_search.c: `imgsearch search TEXT | --image FILE [-k N] [--json]`.
 * --json prints exactly the JSON of GET /api/v1/search; otherwise one line
 * per hit: rank, score, id, source. The search is libimgsearch's.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_app.h"
#include "imgsearch/search.h"

const char cli_help_search[] =
    "usage: imgsearch search [--data DIR] [--catalogue URL]"
    " [--model DIR] [-k N] [--offset N] [--min-score S]\n"
    "                        [--ef N] [--nprobe N] [--rerank N]\n"
    "                        [--json] [filters] (TEXT... | --image FILE)\n"
    "TEXT and --image may be combined; --not TEXT adds a negative term.\n"
    "Only reads: a data folder or catalogue that does not exist is an error.\n"
    "--ef (HNSW/Graph beam, 1..4096), --nprobe (IVF lists, 1..65536) and --rerank\n"
    "(candidates re-scored exactly) override the index's defaults for this search.\n"
    "Filters (the answer is the top k among the matching images):\n"
    "  --added-from T --added-to T   when the image was added\n"
    "  --taken-from T --taken-to T   EXIF date taken (images without one never match)\n"
    "                  T: YYYY-MM-DD (UTC, a --*-to date includes its whole day),\n"
    "                  YYYY-MM-DDTHH:MM:SS[Z] or unix seconds\n"
    "  --min-width N --min-height N\n"
    "  --format LIST   comma list of jpeg, png, webp, gif, bmp, heic, avif, tiff\n"
    "  --orientation landscape|portrait|square\n"
    "  --source-prefix P             sources starting with P (a folder, a site)\n"
    "  --tag T         images tagged T (repeatable: every one; case-insensitive)\n"
    "Near-duplicates:\n"
    "  --dedup T       fold each result whose cosine with a better-ranked result is\n"
    "                  >= T (0 < T <= 1, e.g. 0.95) into it; still k results\n"
    CLI_CATALOGUE_HELP;

#define MAX_TERMS SEARCH_TERMS_MAX

int cli_cmd_search(int argc, char **argv)
{
    struct cli_app_options o = {0};
    struct search_term terms[MAX_TERMS];
    char *image_bytes[MAX_TERMS] = {0};
    size_t n_terms = 0;
    int k = 10, offset = 0, json = 0, has_min = 0, rc = 0;
    float min_score = 0;
    char text[4096] = "";
    size_t text_len = 0;
    struct ims_error err = {0};
    struct store_filter flt;
    int has_filter = 0;
    struct vindex_search_params knobs = {0};
    char formats[128] = "";
    const char *tags[STORE_TAGS_MAX];
    float dedup = 0.0f;
    memset(&flt, 0, sizeof(flt));
    memset(terms, 0, sizeof(terms));
    /* the whole-number options: name, bounds, where they go */
    const struct {
        const char *name;
        long lo, hi;
        int *dst;
    } ints[] = {
        {"-k", 1, SEARCH_K_MAX, &k},
        {"--offset", 0, SEARCH_OFFSET_MAX, &offset},
        {"--ef", 1, VINDEX_MAX_EF, &knobs.ef_search},
        {"--nprobe", 1, VINDEX_MAX_NPROBE, &knobs.nprobe},
        {"--rerank", 1, VINDEX_MAX_K, &knobs.rerank},
    };
    for (int i = 1; i < argc; i++) {
        const char *v;
        long num;
        int r = cli_app_parse_common(argc, argv, &i, &o);
        if (r < 0)
            goto bad_value;
        if (r > 0)
            continue;
        size_t opt = 0;
        while (opt < IMS_ARRAY_LEN(ints) &&
               (r = cli_opt_value(argc, argv, &i, ints[opt].name, &v)) == 0)
            opt++;
        if (opt < IMS_ARRAY_LEN(ints)) {
            if (r < 0 || cli_parse_long(v, ints[opt].lo, ints[opt].hi, &num))
                goto bad_value;
            *ints[opt].dst = (int)num;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--min-score", &v)) != 0) {
            char *end;
            if (r < 0)
                goto bad_value;
            min_score = strtof(v, &end);
            if (*end || end == v)
                goto bad_value;
            has_min = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--added-from", &v)) != 0) {
            if (r < 0 || cli_parse_time(v, 0, &flt.added_from))
                goto bad_value;
            flt.has_added_from = has_filter = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--added-to", &v)) != 0) {
            if (r < 0 || cli_parse_time(v, 1, &flt.added_to))
                goto bad_value;
            flt.has_added_to = has_filter = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--taken-from", &v)) != 0) {
            if (r < 0 || cli_parse_time(v, 0, &flt.taken_from))
                goto bad_value;
            flt.has_taken_from = has_filter = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--taken-to", &v)) != 0) {
            if (r < 0 || cli_parse_time(v, 1, &flt.taken_to))
                goto bad_value;
            flt.has_taken_to = has_filter = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--min-width", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 1L << 30, &num))
                goto bad_value;
            flt.min_width = (uint32_t)num;
            has_filter = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--min-height", &v)) != 0) {
            if (r < 0 || cli_parse_long(v, 0, 1L << 30, &num))
                goto bad_value;
            flt.min_height = (uint32_t)num;
            has_filter = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--format", &v)) != 0) {
            /* checked word by word, stored as the catalogue's words */
            if (r < 0 || strlen(v) >= 96)
                goto bad_value;
            char tmp[96], *save = NULL;
            snprintf(tmp, sizeof(tmp), "%s", v);
            for (char *w = strtok_r(tmp, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
                enum image_format fm;
                if (image_format_parse(w, &fm) != 0) {
                    rc = cli_usage("search", cli_help_search, "unknown format '%s'", w);
                    goto out;
                }
                size_t at = strlen(formats);
                snprintf(formats + at, sizeof(formats) - at, "%s%s", at ? "," : "",
                         image_format_word(fm));
            }
            flt.formats = formats;
            has_filter = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--orientation", &v)) != 0) {
            if (r < 0)
                goto bad_value;
            if (!strcmp(v, "landscape"))
                flt.orientation = STORE_ORIENT_LANDSCAPE;
            else if (!strcmp(v, "portrait"))
                flt.orientation = STORE_ORIENT_PORTRAIT;
            else if (!strcmp(v, "square"))
                flt.orientation = STORE_ORIENT_SQUARE;
            else
                goto bad_value;
            has_filter = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--tag", &v)) != 0) {
            if (r < 0 || flt.n_tags >= STORE_TAGS_MAX)
                goto bad_value;
            tags[flt.n_tags++] = v;
            flt.tags = tags;
            has_filter = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--dedup", &v)) != 0) {
            char *end = NULL;
            double d = r > 0 ? strtod(v, &end) : 0.0;
            if (r < 0 || !end || *end || !(d > 0.0 && d <= 1.0))
                goto bad_value;
            dedup = (float)d;
        } else if ((r = cli_opt_value(argc, argv, &i, "--source-prefix", &v)) != 0) {
            if (r < 0 || !*v)
                goto bad_value;
            flt.source_prefix = v;
            has_filter = 1;
        } else if ((r = cli_opt_value(argc, argv, &i, "--image", &v)) != 0 ||
                   (r = cli_opt_value(argc, argv, &i, "--not", &v)) != 0) {
            if (r < 0 || n_terms >= MAX_TERMS - 1)
                goto bad_value;
            struct search_term *t = &terms[n_terms];
            if (!strncmp(argv[i - 1], "--not", 5) || !strncmp(argv[i], "--not=", 6)) {
                t->kind = SEARCH_TERM_TEXT;
                t->text = v;
                t->weight = -0.5f;
            } else {
                size_t len;
                enum ims_status st =
                    ims_file_read(v, (size_t)64 << 20, &image_bytes[n_terms], &len, &err);
                if (st != IMS_OK) {
                    rc = cli_fail("search", "%s", ims_error_message(&err, st));
                    goto out;
                }
                t->kind = SEARCH_TERM_IMAGE;
                t->bytes = image_bytes[n_terms];
                t->n_bytes = len;
                t->weight = 1;
            }
            n_terms++;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            rc = cli_usage("search", cli_help_search, "unknown option %s", argv[i]);
            goto out;
        } else {
            /* words of the text query, joined by spaces */
            size_t l = strlen(argv[i]);
            if (text_len + l + 2 > sizeof(text)) {
                rc = cli_usage("search", cli_help_search, "query text too long");
                goto out;
            }
            if (text_len)
                text[text_len++] = ' ';
            memcpy(text + text_len, argv[i], l + 1);
            text_len += l;
        }
        continue;
    bad_value:
        rc = cli_usage("search", cli_help_search, "bad or missing value for %s", argv[i]);
        goto out;
    }
    if (text_len) {
        terms[n_terms].kind = SEARCH_TERM_TEXT;
        terms[n_terms].text = text;
        terms[n_terms].weight = 1;
        n_terms++;
    }
    int positive = 0;
    for (size_t i = 0; i < n_terms; i++)
        positive |= terms[i].weight > 0;
    if (!positive) {
        rc = cli_usage("search", cli_help_search, "give a text or --image to search for");
        goto out;
    }
    o.with_model = 1;
    o.with_index = 1;
    o.existing_only = 1;
    struct cli_app app;
    if (cli_app_open("search", &o, &app) != 0) {
        rc = 1;
        goto out;
    }
    /* libimgsearch's search (imgsearch__search: imgsearch_search with every
     * filter and knob) on an engine sized for one query */
    struct search_options so;
    search_options_default(&so);
    so.n_contexts = 1;
    so.text_cache_entries = 16;
    enum ims_status st = imgsearch__engine_start(app.is, &so, &err);
    struct search_response resp = {0};
    if (st == IMS_OK) {
        struct search_request rq = {terms, n_terms, k, offset, has_min, min_score,
                                    SEARCH_ORDER_SCORE, has_filter ? &flt : NULL, dedup, knobs};
        st = imgsearch__search(app.is, &rq, &resp, &err);
    }
    if (st != IMS_OK) {
        rc = cli_fail("search", "%s", ims_error_message(&err, st));
    } else if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < resp.n; i++) {
            const struct store_image_row *r = &resp.hits[i].row;
            char thumb[64];
            snprintf(thumb, sizeof(thumb), "/api/v1/images/%lld/thumb", (long long)r->id);
            /* "taken" (EXIF date) and "tags" (issue 10), as the API writes them */
            json_t *taken = r->has_taken ? json_integer(r->taken) : json_null();
            json_t *jt = json_array();
            for (size_t t = 0; jt && t < r->n_tags; t++)
                json_array_append_new(jt, json_string(r->tags[t]));
            json_t *jo = json_pack("{s:I, s:s, s:f, s:i, s:i, s:s, s:s?, s:o, s:o?}", "id",
                                  (json_int_t)r->id, "url", r->source, "score",
                                  (double)resp.hits[i].score, "width", (int)r->width, "height",
                                  (int)r->height, "thumb", thumb, "format", r->format, "taken",
                                  taken, "tags", jt);
            if (jo && dedup > 0.0f) {
                json_t *d = json_array();
                for (size_t t = 0; d && t < resp.hits[i].n_duplicates; t++)
                    json_array_append_new(d, json_integer(resp.hits[i].duplicates[t]));
                json_object_set_new(jo, "duplicates", d ? d : json_null());
            }
            json_array_append_new(arr, jo);
        }
        json_t *j = json_pack("{s:o, s:f}", "results", arr, "took_ms", resp.took_ms);
        char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(j);
    } else {
        if (resp.n == 0)
            fprintf(stderr, "imgsearch search: no results\n");
        for (size_t i = 0; i < resp.n; i++)
        {
            printf("%3zu  %.4f  %6lld  %s", (size_t)offset + i + 1, (double)resp.hits[i].score,
                   (long long)resp.hits[i].row.id, resp.hits[i].row.source);
            if (resp.hits[i].n_duplicates)
                printf("  (+%zu near-duplicates)", resp.hits[i].n_duplicates);
            printf("\n");
        }
    }
    search_response_fini(&resp);
    cli_app_close("search", &app, 0);
out:
    for (size_t i = 0; i < MAX_TERMS; i++)
        ims_free(image_bytes[i]);
    return rc;
}
