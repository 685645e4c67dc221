/* SPDX-License-Identifier: MIT */
/* store_test_fx.c: see store_test_fx.h. */
#include "store_test_fx.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "store_test_util.h"

const struct store_model_info tu_model_a = {"model-a", TU_DIM};

static enum ims_status open_on(struct tu_fx *f, struct store **out, struct ims_error *err)
{
    return store_open_catalogue(f->url, f->dir, &tu_model_a, STORE_OPEN_SYNC_NORMAL, out, err);
}

struct store *tu_fx_open(struct tu_fx *f)
{
    struct ims_error err = {0};
    struct store *st = NULL;
    if (open_on(f, &st, &err) != IMS_OK)
        fail_msg("store_open_catalogue: %s", err.message);
    return st;
}

/* Folder, catalogue and `handles` (0..2) opened; -1 if any step fails. */
static int setup_with(void **state, int handles)
{
    struct tu_fx *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    *state = f;
    f->dir = tu_mkdtemp();
    struct ims_error err = {0};
    if (!f->dir || tu_catalogue_new(f->url, sizeof(f->url)) != 0 ||
        (handles >= 1 && open_on(f, &f->st, &err) != IMS_OK) ||
        (handles >= 2 && open_on(f, &f->other, &err) != IMS_OK)) {
        fprintf(stderr, "fixture: %s\n", err.message[0] ? err.message : "no folder or catalogue");
        tu_fx_teardown(state); /* cmocka runs no teardown after a failed setup */
        *state = NULL;
        return -1;
    }
    return 0;
}

int tu_fx_setup(void **state)
{
    return setup_with(state, 0);
}

int tu_fx_setup_open(void **state)
{
    return setup_with(state, 1);
}

int tu_fx_setup_open2(void **state)
{
    return setup_with(state, 2);
}

int tu_fx_teardown(void **state)
{
    struct tu_fx *f = *state;
    if (!f)
        return 0;
    store_close(f->st);
    store_close(f->other);
    tu_catalogue_drop(f->url);
    tu_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}
