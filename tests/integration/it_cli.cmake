# SPDX-License-Identifier: MIT
# The CLI end to end on a data folder with the tiny model: add (folders, bad
# files, duplicates by source and content), stats, search --json, rm, a wrong
# model, a damaged or missing index snapshot. See cli_test.py.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_cli
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/cli_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
  set_tests_properties(it_cli PROPERTIES LABELS integration TIMEOUT 300)
endif()
