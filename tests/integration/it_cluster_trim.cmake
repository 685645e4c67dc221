# SPDX-License-Identifier: MIT
# A running node left below the trimmed change feed rebuilds live, answers
# like a fresh node, and serves no row deleted meanwhile (issue 9). See
# cluster_trim_test.py. Loopback only.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_cluster_trim_sqlite
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/cluster_trim_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} sqlite)
  set_tests_properties(it_cluster_trim_sqlite PROPERTIES LABELS integration TIMEOUT 300)
endif()
if(TARGET imgsearch AND IMS_PYTHON3 AND COMMAND ims_pg_test)
  add_test(NAME it_cluster_trim_pg
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/cluster_trim_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} pg)
  set_tests_properties(it_cluster_trim_pg PROPERTIES LABELS integration TIMEOUT 300)
  ims_pg_test(it_cluster_trim_pg)
endif()
