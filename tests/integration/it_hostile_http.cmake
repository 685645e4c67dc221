# SPDX-License-Identifier: MIT
# Hostile HTTP clients against the real `imgsearch serve` (issue 8): ?wait=1
# waiters outside the gate, Host/Origin, the body memory budget, slowloris,
# strict limits. See hostile_http_test.py.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_hostile_http
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/hostile_http_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
  set_tests_properties(it_hostile_http PROPERTIES LABELS integration TIMEOUT 180)
endif()
