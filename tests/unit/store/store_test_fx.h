/* SPDX-License-Identifier: MIT */
/* store_test_fx.h: the cmocka fixture most store tests share, so each test
 * file holds only its cases: a fresh folder, an empty catalogue of its own
 * (SQLite in that folder, or a new PostgreSQL database when the test runs
 * with "pg": tu_catalogue_new) and up to two handles on it. Kept apart from
 * store_test_util.c, which tests of other modules link without cmocka's
 * fixture conventions. */
#ifndef STORE_TEST_FX_H
#define STORE_TEST_FX_H

#include "imgsearch/store.h"

/* The embedding width and model of the fixture's catalogues. */
#define TU_DIM 8
extern const struct store_model_info tu_model_a; /* {"model-a", TU_DIM} */

struct tu_fx {
    char *dir;           /* the test's own folder (tu_mkdtemp) */
    char url[1024];      /* the catalogue: "" = SQLite in dir */
    struct store *st;    /* the first handle (NULL until opened) */
    struct store *other; /* a second handle: another process or node */
};

/* cmocka group setups; *state becomes a struct tu_fx. Folder and empty
 * catalogue only (the case opens what it needs) ... */
int tu_fx_setup(void **state);
/* ... and st opened ... */
int tu_fx_setup_open(void **state);
/* ... and st and other opened. */
int tu_fx_setup_open2(void **state);
/* Closes both handles, drops the catalogue, removes the folder. */
int tu_fx_teardown(void **state);

/* Opens a new handle on the fixture's catalogue (tu_model_a, creating it if
 * need be); fails the running case if it cannot. */
struct store *tu_fx_open(struct tu_fx *f);

#endif
