# SPDX-License-Identifier: MIT
# Issue 10 item 6 end to end with the tiny model: `add --sync` over a folder
# changed between syncs (SQLite and PostgreSQL), `serve --watch` with files
# and the folder itself coming and going. See sync_test.py.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_sync COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/sync_test.py
                                $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} sqlite)
  set_tests_properties(it_sync PROPERTIES LABELS integration TIMEOUT 300)
  if(COMMAND ims_pg_test)
    add_test(NAME it_sync_pg COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/sync_test.py
                                     $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} pg)
    set_tests_properties(it_sync_pg PROPERTIES LABELS integration TIMEOUT 300)
    ims_pg_test(it_sync_pg)
  endif()
endif()
