# SPDX-License-Identifier: MIT
# A node killed mid-job and restarted under the same --node-id takes its
# claims back at once and records its items as added (issue 9). See
# ingest_restart_test.py. Loopback only.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_ingest_restart_sqlite
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/ingest_restart_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} sqlite)
  set_tests_properties(it_ingest_restart_sqlite PROPERTIES LABELS integration TIMEOUT 300)
endif()
if(TARGET imgsearch AND IMS_PYTHON3 AND COMMAND ims_pg_test)
  add_test(NAME it_ingest_restart_pg
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/ingest_restart_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} pg)
  set_tests_properties(it_ingest_restart_pg PROPERTIES LABELS integration TIMEOUT 300)
  ims_pg_test(it_ingest_restart_pg)
endif()
