/* SPDX-License-Identifier: MIT */
/*
 * test_index_graph_isa.c: the own graph's distance kernels on every ISA the
 * CPU has (scalar, AVX2, AVX-512; AVX512_BF16 with its four-row batch
 * kernel where present). The graph picks its kernels once per process, so
 * each ISA runs in a forked child: index__scan_force_isa, a one-thread
 * Graph16 over 3000 random 32-d vectors, then for 30 queries the walk's
 * top 10 against a brute force in double: recall@10 >= 0.9 and every
 * returned score within 0.02 of the exact inner product (bf16 rows).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "unit_fx.h"

#include "index_graph.h"
#include "index_int.h"

#define N 3000
#define DIM 32
#define NQ 30

static float *make_data(void)
{
    float *x = malloc(sizeof(float) * N * DIM);
    if (!x)
        return NULL;
    ufx_unit_rows(0x853c49e6748fea9bull, x, N, DIM);
    return x;
}

/* The child's whole check; 0 when it holds. */
static int check_isa(const char *isa)
{
    if (index__scan_force_isa(isa) != 0)
        return 0; /* not on this CPU: nothing to check */
    float *x = make_data();
    int64_t *labels = malloc(sizeof(int64_t) * N);
    struct index__graph *g = NULL;
    if (!x || !labels || index__graph_new(DIM, 16, 80, &g) != IMS_OK ||
        index__graph_reserve(g, N) != IMS_OK)
        return 2;
    for (int i = 0; i < N; i++)
        labels[i] = 1000 + i;
    index__graph_threads = 1;
    if (index__graph_add(g, labels, x, N) != IMS_OK)
        return 3;
    int hits = 0;
    for (int qi = 0; qi < NQ; qi++) {
        const float *q = x + (size_t)(qi * 97 + 11) * DIM;
        double best[10];
        int64_t bl[10];
        for (int j = 0; j < 10; j++)
            best[j] = -1e9, bl[j] = -1;
        for (int i = 0; i < N; i++) {
            double s = 0;
            for (int d = 0; d < DIM; d++)
                s += (double)q[d] * x[i * DIM + d];
            if (s <= best[9])
                continue;
            int p = 9;
            while (p > 0 && best[p - 1] < s) {
                best[p] = best[p - 1];
                bl[p] = bl[p - 1];
                p--;
            }
            best[p] = s;
            bl[p] = 1000 + i;
        }
        float sc[10];
        int64_t got[10];
        int n = index__graph_search(g, q, 10, 64, sc, got);
        if (n != 10)
            return 4;
        for (int j = 0; j < n; j++) {
            int64_t row = got[j] - 1000;
            if (row < 0 || row >= N)
                return 5;
            double s = 0;
            for (int d = 0; d < DIM; d++)
                s += (double)q[d] * x[row * DIM + d];
            if (fabs(s - sc[j]) > 0.02) {
                fprintf(stderr, "%s: score %f, exact %f\n", isa, sc[j], s);
                return 6;
            }
            for (int b = 0; b < 10; b++)
                hits += got[j] == bl[b];
        }
    }
    fprintf(stderr, "%s: recall@10 %.3f\n", isa, hits / (10.0 * NQ));
    index__graph_free(g);
    free(x);
    free(labels);
    return hits >= 0.9 * 10 * NQ ? 0 : 7;
}

static void test_every_isa(void **state)
{
    (void)state;
    const char *isas[] = {"scalar", "avx2", "avx512"};
    for (size_t i = 0; i < sizeof isas / sizeof *isas; i++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            _exit(check_isa(isas[i]));
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) != 0)
            fprintf(stderr, "%s: child check %d failed\n", isas[i], WEXITSTATUS(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_isa),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
