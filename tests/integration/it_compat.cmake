# SPDX-License-Identifier: MIT
# serve --immich-ml / --clip-back end to end: the recorded requests of immich's
# server and of clip-front (tests/integration/compat/) against the real binary
# on 127.0.0.1 with the tiny model. See compat_e2e.py.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_compat_e2e
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/compat_e2e.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
  set_tests_properties(it_compat_e2e PROPERTIES LABELS integration TIMEOUT 300)
endif()
