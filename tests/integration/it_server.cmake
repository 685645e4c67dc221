# SPDX-License-Identifier: MIT
# The HTTP API end to end: the real `imgsearch serve` on 127.0.0.1 with the
# tiny model; every endpoint's JSON shape, the term algebra against scores
# computed from `imgsearch embed`, every error status, the API key, the rate
# limit, SIGTERM/kill -9 and restart. See server_e2e.py.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_server_e2e
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/server_e2e.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
  set_tests_properties(it_server_e2e PROPERTIES LABELS integration TIMEOUT 300)
endif()
