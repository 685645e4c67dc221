# SPDX-License-Identifier: MIT
# Issue 10's formats and EXIF end to end with the tiny model: orientation in
# `embed` (applied / ignored), `add` of HEIC, AVIF (made by heif-enc), TIFF and
# a rotated PNG with EXIF: upright sizes, format words, thumbnails, taken date,
# make/model, GPS only with --keep-gps. See photo_test.py.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_photo
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/photo_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
  set_tests_properties(it_photo PROPERTIES LABELS integration TIMEOUT 300)
endif()
