/* SPDX-License-Identifier: MIT */
/*
 * test_lib_pg.c: libimgsearch on a PostgreSQL catalogue URL (issue 13 item
 * 3): imgsearch_open("postgresql://...") creates the schema in an empty
 * database, adds, searches, and a second handle (no data folder, so no
 * snapshot: its index is built from the catalogue) sees the same rows and
 * answers the same, and a removal is kept across handles. Runs on the
 * throwaway server of tests/pg (IMS_TEST_PG_DIR, on 127.0.0.1), in a
 * database of its own that it drops at the end.
 */
#include <imgsearch.h>

#include <libpq-fe.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib_test_util.h"

static char admin[512], url[600], dbname[64];

static void pg_exec(const char *sql)
{
    PGconn *c = PQconnectdb(admin);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

static int setup(void **state)
{
    (void)state;
    const char *d = getenv("IMS_TEST_PG_DIR");
    if (!d || !*d)
        fail_msg("IMS_TEST_PG_DIR is not set (ctest sets it: tests/pg/pg_fixture.cmake)");
    char path[1024];
    snprintf(path, sizeof(path), "%s/url", d);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(admin, sizeof(admin), f));
    fclose(f);
    admin[strcspn(admin, "\r\n")] = '\0';
    /* the admin URL names database "postgres"; ours replaces it */
    char *slash = strrchr(admin, '/');
    assert_non_null(slash);
    snprintf(dbname, sizeof(dbname), "ims_test_lib_%d", (int)getpid());
    snprintf(url, sizeof(url), "%.*s/%s", (int)(slash - admin), admin, dbname);
    char sql[128];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", dbname);
    pg_exec(sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbname);
    pg_exec(sql);
    lt_setup();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char sql[128];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
    pg_exec(sql);
    return lt_teardown();
}

/* The best row for "a red square", its score and the number of results. */
static void best_of(struct imgsearch *is, int64_t *id, float *score, size_t *n)
{
    struct imgsearch_error err;
    struct imgsearch_term t = {.kind = IMGSEARCH_TERM_TEXT, .weight = 1, .text = "a red square"};
    struct imgsearch_query q = {.terms = &t, .n_terms = 1, .k = 5};
    struct imgsearch_results res;
    assert_int_equal(imgsearch_search(is, &q, &res, &err), IMGSEARCH_OK);
    assert_true(res.n > 0);
    for (size_t i = 1; i < res.n; i++)
        assert_true(res.items[i - 1].score >= res.items[i].score);
    *id = res.items[0].row.id;
    *score = res.items[0].score;
    *n = res.n;
    imgsearch_results_free(&res);
}

static void test_catalogue_url(void **state)
{
    (void)state;
    struct imgsearch_params p;
    lt_params(&p);
    struct imgsearch *is = lt_open(url);
    struct imgsearch_error err;
    int64_t n = -1;
    assert_int_equal(imgsearch_count(is, &n, &err), IMGSEARCH_OK);
    assert_int_equal(n, 0); /* a fresh database: the schema, no rows */
    const char *src[] = {lt_images};
    struct imgsearch_add_summary sum;
    assert_int_equal(imgsearch_add(is, src, 1, &sum, &err), IMGSEARCH_OK);
    assert_true(sum.added >= 20);
    assert_int_equal(sum.failed + sum.added + sum.duplicates, sum.total);
    assert_int_equal(imgsearch_count(is, &n, &err), IMGSEARCH_OK);
    assert_int_equal(n, sum.added);
    int64_t id1;
    float s1;
    size_t n1;
    best_of(is, &id1, &s1, &n1);
    assert_int_equal(n1, 5);
    struct imgsearch_row row;
    assert_int_equal(imgsearch_get(is, id1, &row, &err), IMGSEARCH_OK);
    assert_non_null(strstr(row.source, lt_images));
    imgsearch_row_free(&row);

    /* a second handle on the same URL (the first still open): built from the
     * catalogue, the same rows and the same answer */
    struct imgsearch *is2 = NULL;
    assert_int_equal(imgsearch_open(url, &p, &is2, &err), IMGSEARCH_OK);
    int64_t n2 = -1;
    assert_int_equal(imgsearch_count(is2, &n2, &err), IMGSEARCH_OK);
    assert_int_equal(n2, n);
    int64_t id2;
    float s2;
    size_t nr2;
    best_of(is2, &id2, &s2, &nr2);
    assert_int_equal(id2, id1);
    assert_true(s2 == s1);
    imgsearch_close(is2);

    /* what one handle adds the catalogue keeps: adding again finds duplicates */
    assert_int_equal(imgsearch_add(is, src, 1, &sum, &err), IMGSEARCH_OK);
    assert_int_equal(sum.added, 0);
    assert_int_equal(imgsearch_remove(is, id1, &err), IMGSEARCH_OK);
    imgsearch_close(is);
    assert_int_equal(imgsearch_open(url, &p, &is, &err), IMGSEARCH_OK);
    assert_int_equal(imgsearch_count(is, &n2, &err), IMGSEARCH_OK);
    assert_int_equal(n2, n - 1);
    assert_int_equal(imgsearch_get(is, id1, &row, &err), IMGSEARCH_ERR_NOT_FOUND);
    imgsearch_close(is);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_catalogue_url),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
