# SPDX-License-Identifier: MIT
# Issue 10 item 7: `imgsearch reembed` from a tiny-model catalogue into a new
# folder for a second (make-model, dim 16) model; gone sources reported, the
# old catalogue untouched, a second run resumes; it_reembed_pg also --to a
# PostgreSQL database. See reembed_test.py.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_reembed COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/reembed_test.py
                                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
  set_tests_properties(it_reembed PROPERTIES LABELS integration TIMEOUT 300)
  if(COMMAND ims_pg_test)
    add_test(NAME it_reembed_pg COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/reembed_test.py
                                        $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} pg)
    set_tests_properties(it_reembed_pg PROPERTIES LABELS integration TIMEOUT 300)
    ims_pg_test(it_reembed_pg)
  endif()
endif()
