/* SPDX-License-Identifier: MIT */
/*
 * test_lib_cli.c: the library and the `imgsearch` command are one path to a
 * folder. A folder the library fills and saves is searched by
 * `imgsearch search --json` with the same ids and scores as
 * imgsearch_search; a row the command removes (`imgsearch rm`, which
 * writes the snapshot) is gone for the library, and the library's open
 * starts from the command's snapshot. The binary's path comes from the
 * build (IMS_CLI_EXE); nothing here but the public header and the binary.
 */
#include <imgsearch.h>

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "lib_test_util.h"

/* Runs the command line (stdout into out, stderr to a file); its exit status. */
static int run(char *out, size_t cap, const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "'%s' %s --data '%s' 2>'%s/stderr.txt'", IMS_CLI_EXE, args, lt_data,
             lt_tmp);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

#define K 5

static void test_one_path(void **state)
{
    (void)state;
    struct imgsearch *is = lt_open(lt_data);
    struct imgsearch_error err;
    int64_t added = lt_add_images(is);
    struct imgsearch_term t = {.kind = IMGSEARCH_TERM_TEXT, .weight = 1, .text = "a red square"};
    struct imgsearch_query q = {.terms = &t, .n_terms = 1, .k = K};
    struct imgsearch_results res;
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_OK);
    assert_int_equal(res.n, K);
    int64_t ids[K];
    float scores[K];
    for (size_t i = 0; i < K; i++) {
        ids[i] = res.items[i].row.id;
        scores[i] = res.items[i].score;
    }
    imgsearch_results_free(&res);
    assert_int_equal(imgsearch_save(is, &err), IMGSEARCH_OK);
    imgsearch_close(is);

    /* the command's search of that folder: the same rows, the same scores */
    static char out[1 << 16];
    char args[1024];
    snprintf(args, sizeof(args), "search --model '%s' -k %d --json a red square", lt_model, K);
    assert_int_equal(run(out, sizeof(out), args), 0);
    const char *at = out;
    for (size_t i = 0; i < K; i++) {
        long long id = -1;
        double score = -2;
        at = strstr(at, "\"id\":");
        assert_non_null(at);
        assert_int_equal(sscanf(at, "\"id\":%lld", &id), 1);
        const char *s = strstr(at, "\"score\":");
        assert_non_null(s);
        assert_int_equal(sscanf(s, "\"score\":%lf", &score), 1);
        assert_int_equal(id, ids[i]);
        assert_true(fabs(score - (double)scores[i]) < 1e-5);
        at = s;
    }
    assert_null(strstr(at, "\"id\":")); /* k rows, no more */

    /* the command removes the best row and writes the snapshot ... */
    snprintf(args, sizeof(args), "rm %lld", (long long)ids[0]);
    assert_int_equal(run(out, sizeof(out), args), 0);
    char want[64];
    snprintf(want, sizeof(want), "deleted %lld\n", (long long)ids[0]);
    assert_string_equal(out, want);

    /* ... and the library, opening only what exists, no longer finds it:
     * the next best is first */
    struct imgsearch_params p;
    lt_params(&p);
    assert_int_equal(imgsearch_open_flags(lt_data, &p, IMGSEARCH_OPEN_EXISTING, &is, &err),
                     IMGSEARCH_OK);
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_OK);
    assert_int_equal(res.n, K);
    assert_int_equal(res.items[0].row.id, ids[1]);
    for (size_t i = 0; i < res.n; i++)
        assert_true(res.items[i].row.id != ids[0]);
    imgsearch_results_free(&res);
    struct imgsearch_row row;
    assert_int_equal(imgsearch_get(is, ids[0], &row, &err), IMGSEARCH_ERR_NOT_FOUND);
    int64_t n = 0;
    assert_int_equal(imgsearch_count(is, &n, &err), IMGSEARCH_OK);
    assert_int_equal(n, added - 1);
    imgsearch_close(is);

    /* the command's stats agree with the library */
    assert_int_equal(run(out, sizeof(out), "stats"), 0);
    char images[64];
    snprintf(images, sizeof(images), "{\"images\":%lld,", (long long)n);
    assert_non_null(strstr(out, images));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_path),
    };
    return cmocka_run_group_tests(tests, lt_group_setup, lt_group_teardown);
}
