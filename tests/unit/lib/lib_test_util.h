/* SPDX-License-Identifier: MIT */
/*
 * lib_test_util.h: the fixture the library's tests share (test_lib,
 * test_lib_pg): a temporary folder holding a copy of the tiny CLIP model
 * (tests/golden/clip/tiny + the bundled vocabulary), and the fixture images.
 */
#ifndef IMS_LIB_TEST_UTIL_H
#define IMS_LIB_TEST_UTIL_H

#include <stddef.h>

/* Filled by lt_setup: the temporary folder, the model copied into it, and
 * the fixture images' folder in the source tree. */
extern char lt_tmp[256], lt_model[300], lt_images[1024];

/* Creates lt_tmp and the model copy (cmocka assertions on failure). */
void lt_setup(void);
/* Removes lt_tmp and everything under it; 0 on success. */
int lt_teardown(void);

#endif
