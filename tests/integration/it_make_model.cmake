# SPDX-License-Identifier: MIT
# `imgsearch make-model`: the folder it writes, determinism, and its errors.
add_test(NAME it_make_model
  COMMAND ${CMAKE_COMMAND} -DIMGSEARCH=$<TARGET_FILE:imgsearch> -DSRC=${CMAKE_SOURCE_DIR}
          -P ${CMAKE_CURRENT_SOURCE_DIR}/make_model_check.cmake)
set_tests_properties(it_make_model PROPERTIES LABELS integration TIMEOUT 300)
