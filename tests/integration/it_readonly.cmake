# SPDX-License-Identifier: MIT
# Read-only commands (stats, search) refuse a missing data folder or
# catalogue instead of creating one. See readonly_test.py.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_readonly
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/readonly_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
  set_tests_properties(it_readonly PROPERTIES LABELS integration TIMEOUT 120)
endif()
