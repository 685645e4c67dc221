# SPDX-License-Identifier: MIT
# Ingestion end to end over HTTP on 127.0.0.1 (hostile_server.py): every
# failure mode of a download with its reason, the address policy without
# --allow-private-urls, and kill -9 in the middle of `add` (nothing
# acknowledged lost, the rest completed without duplicates).
# IMS_IT_SLOW=1 in the environment adds the 45 s stall case to it_ingest_http.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_ingest_http
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/ingest_http_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
  set_tests_properties(it_ingest_http PROPERTIES LABELS integration TIMEOUT 240)
  add_test(NAME it_ingest_crash
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/ingest_crash_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
  set_tests_properties(it_ingest_crash PROPERTIES LABELS integration TIMEOUT 300)
endif()
# Several `serve` nodes on one catalogue share URL jobs (claims with leases):
# items encoded by several nodes, kill -9 of a node mid-job, the same URLs
# posted to two nodes at once. On the shared SQLite folder here; on
# PostgreSQL in it_ingest_cluster_pg.
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_ingest_cluster
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/ingest_cluster_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} sqlite)
  set_tests_properties(it_ingest_cluster PROPERTIES LABELS integration TIMEOUT 300)
endif()
if(TARGET imgsearch AND IMS_PYTHON3 AND COMMAND ims_pg_test)
  add_test(NAME it_ingest_cluster_pg
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/ingest_cluster_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} pg)
  set_tests_properties(it_ingest_cluster_pg PROPERTIES LABELS integration TIMEOUT 300)
  ims_pg_test(it_ingest_cluster_pg)
endif()
