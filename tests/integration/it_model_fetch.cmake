# SPDX-License-Identifier: MIT
# `imgsearch model fetch` against a fake model folder served on 127.0.0.1 by
# the C test server (tests/unit/fetch/http_test_serve_main.c).
if(TARGET imgsearch AND TARGET http_test_serve)
  find_program(IMS_PYTHON3 python3)
  if(IMS_PYTHON3)
    add_test(NAME it_model_fetch
             COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/model_fetch_test.py
                     $<TARGET_FILE:imgsearch> $<TARGET_FILE:http_test_serve>)
    set_tests_properties(it_model_fetch PROPERTIES LABELS integration TIMEOUT 120)
  endif()
endif()
