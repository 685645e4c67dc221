/* SPDX-License-Identifier: MIT */
/*
 * lib_test_util.h: the fixture the library's tests share (test_lib,
 * test_lib_pg, test_lib_save, test_lib_cli, test_lib_filter): a temporary
 * folder holding a copy of the tiny CLIP model (tests/golden/clip/tiny + the
 * bundled vocabulary), a data folder's path in it, the fixture images, and
 * the open-and-fill steps every case starts with.
 */
#ifndef IMS_LIB_TEST_UTIL_H
#define IMS_LIB_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <imgsearch.h>

/* Filled by lt_setup: the temporary folder, the model copied into it, the
 * fixture images' folder in the source tree, and lt_tmp/data (a data folder
 * not made yet). */
extern char lt_tmp[256], lt_model[300], lt_images[1024], lt_data[300];

/* Creates lt_tmp and the model copy (cmocka assertions on failure). */
void lt_setup(void);
/* Removes lt_tmp and everything under it; 0 on success. */
int lt_teardown(void);
/* lt_setup / lt_teardown as a cmocka group setup and teardown. */
int lt_group_setup(void **state);
int lt_group_teardown(void **state);

/* Default parameters with the model copy as model_dir. */
void lt_params(struct imgsearch_params *p);
/* imgsearch_open of `where` (a folder or a catalogue URL) with lt_params;
 * fails the case unless it opens. */
struct imgsearch *lt_open(const char *where);
/* Adds the fixture images (at least 20 of them, else the case fails);
 * returns how many were added. */
int64_t lt_add_images(struct imgsearch *is);

#endif
