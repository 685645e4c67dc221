/* SPDX-License-Identifier: MIT */
/*
 * test_index_batch.c: the multi-query kernels (index_scan.c) that let
 * concurrent exact searches share one scan. Their promise: every (row,
 * query) score is bit-identical to the one-query kernel's, so a batched
 * answer can equal the same search run alone.
 *
 * - the multi-query kernels against the one-query kernels (bit for bit) and
 *   a double-precision reference, for odd sizes and every kernel family.
 */

#include "imgsearch/index.h"
#include "index_int.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- data ------------------------------------------------------------------ */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static float unif(uint64_t *s) { return (float)((double)(splitmix(s) >> 11) * 0x1p-52 - 1.0); }

static const char *const g_isas[] = {"scalar", "avx2", "avx512"};

/* ---- kernels ------------------------------------------------------------------ */

/* The multi-query kernels give each (row, query) exactly the one-query
 * kernel's score, write nothing outside their n columns, and agree with a
 * double-precision dot product. */
static void test_multi_kernel_matches_single(void **state)
{
    (void)state;
    const int dims[] = {1, 7, 15, 16, 17, 31, 32, 33, 48, 100, 513};
    const size_t ns[] = {1, 2, 3, 5, 8, 37, 100};
    const int max_nq = 13; /* every remainder of the 4- and 3-query tiles, and more */
    const float sentinel = 12345.0f;
    uint64_t seed = 7;
    for (size_t ii = 0; ii < IMS_ARRAY_LEN(g_isas); ii++) {
        if (index__scan_force_isa(g_isas[ii]) != 0)
            continue; /* this CPU lacks it: the others still run */
        for (size_t di = 0; di < IMS_ARRAY_LEN(dims); di++) {
            int dim = dims[di];
            for (size_t ni = 0; ni < IMS_ARRAY_LEN(ns); ni++) {
                size_t n = ns[ni], stride = n + 3;
                /* one float / half of offset: no alignment is assumed */
                float *rows_mem = malloc(sizeof(float) * (n * (size_t)dim + 1));
                uint16_t *rows16_mem = malloc(sizeof(uint16_t) * (n * (size_t)dim + 1));
                float *qs = malloc(sizeof(float) * (size_t)max_nq * (size_t)dim);
                float *out = malloc(sizeof(float) * (size_t)max_nq * stride);
                float *one = malloc(sizeof(float) * n);
                assert_true(rows_mem && rows16_mem && qs && out && one);
                float *rows = rows_mem + 1;
                uint16_t *rows16 = rows16_mem + 1;
                for (size_t i = 0; i < n * (size_t)dim; i++)
                    rows[i] = unif(&seed);
                index__f32_to_f16(rows, rows16, n * (size_t)dim);
                for (int i = 0; i < max_nq * dim; i++)
                    qs[i] = unif(&seed);
                for (int nq = 1; nq <= max_nq; nq++) {
                    for (int f16 = 0; f16 < 2; f16++) {
                        for (size_t i = 0; i < (size_t)max_nq * stride; i++)
                            out[i] = sentinel;
                        if (f16)
                            index__dot_f16_multi(qs, nq, rows16, n, dim, out, stride);
                        else
                            index__dot_f32_multi(qs, nq, rows, n, dim, out, stride);
                        for (int j = 0; j < nq; j++) {
                            const float *q = qs + (size_t)j * (size_t)dim;
                            if (f16)
                                index__dot_f16(q, rows16, n, dim, one);
                            else
                                index__dot_f32(q, rows, n, dim, one);
                            for (size_t r = 0; r < n; r++) {
                                float got = out[(size_t)j * stride + r];
                                if (memcmp(&got, &one[r], sizeof got) != 0)
                                    fail_msg("%s %s dim %d n %zu nq %d: query %d row %zu: "
                                             "multi %a, one-query %a",
                                             g_isas[ii], f16 ? "f16" : "f32", dim, n, nq, j, r,
                                             (double)got, (double)one[r]);
                                double ref = 0, mag = 0;
                                for (int c = 0; c < dim; c++) {
                                    size_t at = r * (size_t)dim + (size_t)c;
                                    double xv = f16 ? index__f16_to_f32(rows16[at]) : rows[at];
                                    ref += (double)q[c] * xv;
                                    mag += fabs((double)q[c] * xv);
                                }
                                assert_true(fabs(got - ref) <= 1e-6 * (mag + 1));
                            }
                            for (size_t r = n; r < stride; r++)
                                assert_true(out[(size_t)j * stride + r] == sentinel);
                        }
                        for (size_t i = (size_t)nq * stride; i < (size_t)max_nq * stride; i++)
                            assert_true(out[i] == sentinel);
                    }
                }
                free(rows_mem);
                free(rows16_mem);
                free(qs);
                free(out);
                free(one);
            }
        }
    }
    index__scan_force_isa(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multi_kernel_matches_single),
    };
    const char *filter = getenv("IMS_TEST_FILTER");
    if (filter && filter[0])
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
