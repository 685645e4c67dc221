# SPDX-License-Identifier: MIT
# `imgsearch preprocess`: output files equal the CLIP goldens; bad input fails clearly.
add_test(NAME it_preprocess
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/preprocess_check.sh $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
set_tests_properties(it_preprocess PROPERTIES LABELS integration TIMEOUT 120)
