/* SPDX-License-Identifier: MIT */
/*
 * lib_test_util.c: the library tests' shared fixture (lib_test_util.h).
 */
#include "lib_test_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "unit_fx.h"

char lt_tmp[256], lt_model[300], lt_images[1024], lt_data[300];

void lt_setup(void)
{
    snprintf(lt_tmp, sizeof(lt_tmp), "/tmp/ims-test-lib-XXXXXX");
    assert_non_null(mkdtemp(lt_tmp));
    snprintf(lt_model, sizeof(lt_model), "%s/model", lt_tmp);
    snprintf(lt_data, sizeof(lt_data), "%s/data", lt_tmp);
    snprintf(lt_images, sizeof(lt_images), "%s/tests/golden/clip/images", ufx_src_dir());
    ufx_copy_tiny_model(lt_model);
}

int lt_teardown(void)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", lt_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

int lt_group_setup(void **state)
{
    (void)state;
    lt_setup();
    return 0;
}

int lt_group_teardown(void **state)
{
    (void)state;
    return lt_teardown();
}

void lt_params(struct imgsearch_params *p)
{
    imgsearch_params_default(p);
    p->model_dir = lt_model;
}

struct imgsearch *lt_open(const char *where)
{
    struct imgsearch_params p;
    lt_params(&p);
    struct imgsearch *is = NULL;
    struct imgsearch_error err;
    if (imgsearch_open(where, &p, &is, &err) != IMGSEARCH_OK)
        fail_msg("imgsearch_open %s: %s", where, err.message);
    assert_non_null(is);
    return is;
}

int64_t lt_add_images(struct imgsearch *is)
{
    const char *src[] = {lt_images};
    struct imgsearch_add_summary sum;
    struct imgsearch_error err;
    if (imgsearch_add(is, src, 1, &sum, &err) != IMGSEARCH_OK)
        fail_msg("imgsearch_add: %s", err.message);
    assert_true(sum.added >= 20);
    return sum.added;
}
