# SPDX-License-Identifier: MIT
# Several serve nodes on one catalogue (issue 9), loopback only: the same
# top-10 everywhere, the CLI adding to a catalogue the nodes serve, uploads
# and deletes reaching every node, a fresh node building its replica.
# it_cluster_sqlite: nodes on one data folder. See cluster_test.py.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_cluster_sqlite
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/cluster_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} sqlite)
  set_tests_properties(it_cluster_sqlite PROPERTIES LABELS integration TIMEOUT 300)
endif()
# it_cluster_pg: the same on a PostgreSQL catalogue the test fixture starts
# (tests/pg): node A caches its snapshot in a --data folder, B and C have none.
if(TARGET imgsearch AND IMS_PYTHON3 AND COMMAND ims_pg_test)
  add_test(NAME it_cluster_pg
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/cluster_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} pg)
  set_tests_properties(it_cluster_pg PROPERTIES LABELS integration TIMEOUT 300)
  ims_pg_test(it_cluster_pg)
endif()
