/* SPDX-License-Identifier: MIT */
/* image_test_jpeg.h: one libjpeg encoder for the image tests that make
 * their own JPEGs (test_image: progressive and CMYK files; test_image_prepare:
 * large baseline and progressive photos), instead of a copy of the
 * compress boilerplate per file. */
#ifndef IMAGE_TEST_JPEG_H
#define IMAGE_TEST_JPEG_H

#include <stddef.h>
#include <stdint.h>

/* Encodes w x h pixels of `comps` interleaved channels (3: RGB, 4: CMYK),
 * rows of w * comps bytes, at `quality` (0: libjpeg's default), progressive
 * or baseline. Returns the file's bytes (malloc'd by libjpeg: free()), its
 * length in *n. */
uint8_t *itj_encode(const uint8_t *px, int w, int h, int comps, int quality, int progressive,
                    size_t *n);

#endif
