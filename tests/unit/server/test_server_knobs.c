/* SPDX-License-Identifier: MIT */
/*
 * test_server_knobs.c: per-query index knobs in the search API (issue 11
 * item 1): "ef", "nprobe", "rerank" as JSON members (full and shorthand
 * bodies) and GET parameters, within bounds, 0 when absent; out of bounds,
 * zero, negative or not a number is IMS_ERR_INVALID (a 400) naming the knob.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "server_int.h"

static struct server_arena g_arena;

/* each parse gets a fresh arena (the previous answer is dropped) */
static enum ims_status parse_json(const char *body, struct server_query *q, struct ims_error *err)
{
    server__arena_fini(&g_arena);
    server__arena_init(&g_arena, 1 << 20);
    return server__query_parse_json(body, strlen(body), &g_arena, q, err);
}

static void test_json(void **state)
{
    (void)state;
    struct server_query q;
    struct ims_error err = {{0}};
    server__arena_init(&g_arena, 1 << 20);
    assert_int_equal(parse_json("{\"terms\": [{\"text\": \"a dog\"}]}", &q, &err), IMS_OK);
    assert_int_equal(q.ef, 0);
    assert_int_equal(q.nprobe, 0);
    assert_int_equal(q.rerank, 0);
    assert_int_equal(parse_json("{\"terms\": [{\"text\": \"a dog\"}], \"ef\": 200, "
                                "\"nprobe\": 32, \"rerank\": 100}",
                                &q, &err),
                     IMS_OK);
    assert_int_equal(q.ef, 200);
    assert_int_equal(q.nprobe, 32);
    assert_int_equal(q.rerank, 100);
    assert_int_equal(parse_json("{\"text\": \"a dog\", \"ef\": 4096}", &q, &err), IMS_OK);
    assert_int_equal(q.ef, SERVER_EF_MAX);
    static const struct {
        const char *body, *name;
    } bad[] = {
        {"{\"text\": \"a\", \"ef\": 4097}", "ef"},
        {"{\"text\": \"a\", \"ef\": 0}", "ef"},
        {"{\"text\": \"a\", \"ef\": -3}", "ef"},
        {"{\"text\": \"a\", \"ef\": \"64\"}", "ef"},
        {"{\"terms\": [{\"text\": \"a\"}], \"nprobe\": 65537}", "nprobe"},
        {"{\"terms\": [{\"text\": \"a\"}], \"rerank\": 100001}", "rerank"},
        {"{\"terms\": [{\"text\": \"a\"}], \"rerank\": 1.5}", "rerank"},
    };
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad); i++) {
        memset(&err, 0, sizeof err);
        assert_int_equal(parse_json(bad[i].body, &q, &err), IMS_ERR_INVALID);
        assert_non_null(strstr(err.message, bad[i].name));
    }
    server__arena_fini(&g_arena);
}

static void test_get(void **state)
{
    (void)state;
    struct server_arena a;
    server__arena_init(&a, 1 << 20);
    struct server_query_args g;
    memset(&g, 0, sizeof g);
    g.q = "beach";
    g.ef = "128";
    g.nprobe = "8";
    g.rerank = "50";
    struct server_query q;
    struct ims_error err = {{0}};
    assert_int_equal(server__query_from_args(&g, &a, &q, &err), IMS_OK);
    assert_int_equal(q.ef, 128);
    assert_int_equal(q.nprobe, 8);
    assert_int_equal(q.rerank, 50);
    const char *bad_ef[] = {"0", "4097", "-1", "ten", ""};
    for (size_t i = 0; i < IMS_ARRAY_LEN(bad_ef); i++) {
        g.ef = bad_ef[i];
        memset(&err, 0, sizeof err);
        assert_int_equal(server__query_from_args(&g, &a, &q, &err), IMS_ERR_INVALID);
        assert_non_null(strstr(err.message, "ef"));
    }
    g.ef = NULL;
    g.nprobe = "65537";
    assert_int_equal(server__query_from_args(&g, &a, &q, &err), IMS_ERR_INVALID);
    g.nprobe = NULL;
    g.rerank = "100001";
    assert_int_equal(server__query_from_args(&g, &a, &q, &err), IMS_ERR_INVALID);
    server__arena_fini(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_get),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
