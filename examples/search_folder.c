/* SPDX-License-Identifier: MIT */
/*
 * search_folder.c: libimgsearch in one page. Opens (or creates) a data
 * folder, adds images, searches them by text, then by the best hit's own
 * image, and prints the results.
 *
 *     cc search_folder.c $(pkg-config --cflags --libs imgsearch) -o search_folder
 *     ./search_folder MODEL_DIR DATA_DIR "a dog on a beach" [FILE|FOLDER|URL...]
 */
#include <imgsearch.h>
#include <stdio.h>
#include <stdlib.h>

static int fail(const char *what, enum imgsearch_status st, const struct imgsearch_error *err)
{
    fprintf(stderr, "search_folder: %s: %s (%s)\n", what, err->message, imgsearch_status_name(st));
    return 1;
}

static void print_results(const char *title, const struct imgsearch_results *res)
{
    printf("%s\n", title);
    for (size_t i = 0; i < res->n; i++)
        printf("  %lld %.4f %dx%d %s\n", (long long)res->items[i].row.id, res->items[i].score,
               res->items[i].row.width, res->items[i].row.height, res->items[i].row.source);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: search_folder MODEL_DIR DATA_DIR TEXT [SOURCE...]\n");
        return 2;
    }
    struct imgsearch_params p;
    imgsearch_params_default(&p);
    p.model_dir = argv[1];
    struct imgsearch *is = NULL;
    struct imgsearch_error err;
    enum imgsearch_status st = imgsearch_open(argv[2], &p, &is, &err);
    if (st != IMGSEARCH_OK)
        return fail("open", st, &err);
    printf("libimgsearch %s, model %s, %d dimensions\n", imgsearch_version(),
           imgsearch_model_name(is), imgsearch_dim(is));

    struct imgsearch_add_summary sum;
    st = imgsearch_add(is, (const char *const *)argv + 4, (size_t)(argc - 4), &sum, &err);
    if (st != IMGSEARCH_OK)
        return fail("add", st, &err);
    int64_t rows = 0;
    imgsearch_count(is, &rows, NULL);
    printf("added %lld, duplicates %lld, failed %lld; %lld rows\n", (long long)sum.added,
           (long long)sum.duplicates, (long long)sum.failed, (long long)rows);

    struct imgsearch_term text = {.kind = IMGSEARCH_TERM_TEXT, .weight = 1, .text = argv[3]};
    struct imgsearch_query q = {.terms = &text, .n_terms = 1, .k = 3};
    struct imgsearch_results res;
    if ((st = imgsearch_search(is, &q, &res, &err)) != IMGSEARCH_OK)
        return fail("search", st, &err);
    print_results("by text:", &res);
    if (res.n == 0) {
        imgsearch_close(is);
        return 0;
    }

    /* "more like this": the best hit's thumbnail and its catalogue row */
    int64_t best = res.items[0].row.id;
    imgsearch_results_free(&res);
    void *jpeg = NULL;
    size_t n = 0;
    if ((st = imgsearch_thumbnail(is, best, &jpeg, &n, &err)) != IMGSEARCH_OK)
        return fail("thumbnail", st, &err);
    struct imgsearch_term like = {.kind = IMGSEARCH_TERM_IMAGE_ID, .weight = 1, .image_id = best};
    struct imgsearch_filter wide = {.min_width = 100};
    struct imgsearch_query q2 = {.terms = &like, .n_terms = 1, .k = 3, .filter = &wide};
    if ((st = imgsearch_search(is, &q2, &res, &err)) != IMGSEARCH_OK)
        return fail("search", st, &err);
    printf("thumbnail of %lld: %zu bytes of JPEG\n", (long long)best, n);
    print_results("like it, at least 100 px wide:", &res);
    imgsearch_results_free(&res);
    imgsearch_free(jpeg);
    imgsearch_close(is);
    return 0;
}
