# SPDX-License-Identifier: MIT
# Issue 10's tags, near-duplicate folding and library-wide duplicates end to
# end (CLI and HTTP) with the tiny model. See library_test.py.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_library
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/library_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
  set_tests_properties(it_library PROPERTIES LABELS integration TIMEOUT 300)
endif()
