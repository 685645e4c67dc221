# SPDX-License-Identifier: MIT
# Issue 10 leftovers around tags: `imgsearch tag ID...` goes on past an
# image that fails and exits 1; GET search refuses a tag= holding a NUL or
# a control character with a precise 400. See tag_edges_test.py.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_tag_edges
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/tag_edges_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
  set_tests_properties(it_tag_edges PROPERTIES LABELS integration TIMEOUT 300)
endif()
