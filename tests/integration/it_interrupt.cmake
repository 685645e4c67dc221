# SPDX-License-Identifier: MIT
# `imgsearch add` stops cleanly on SIGINT and on SIGTERM (cli_cancel_on_signals):
# exit status 130, the summary says it was interrupted, and the catalogue
# still opens. See interrupt_test.py.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_interrupt
           COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/interrupt_test.py
                   $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
  set_tests_properties(it_interrupt PROPERTIES LABELS integration TIMEOUT 120)
endif()
