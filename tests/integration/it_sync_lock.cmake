# SPDX-License-Identifier: MIT
# Issue 10 leftover: one folder sync per catalogue at a time. `add --sync`
# refused (exit 75) while another process holds the catalogue's sync lock,
# two syncs started together never handle a file twice, serve --watch puts
# its sync off while the lock is held (SQLite run). See sync_lock_test.py.
find_program(IMS_PYTHON3 python3)
if(TARGET imgsearch AND IMS_PYTHON3)
  add_test(NAME it_sync_lock COMMAND ${IMS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/sync_lock_test.py
                                     $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} sqlite)
  set_tests_properties(it_sync_lock PROPERTIES LABELS integration TIMEOUT 300)
  if(COMMAND ims_pg_test)
    add_test(NAME it_sync_lock_pg COMMAND ${IMS_PYTHON3}
                                          ${CMAKE_CURRENT_SOURCE_DIR}/sync_lock_test.py
                                          $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR} pg)
    set_tests_properties(it_sync_lock_pg PROPERTIES LABELS integration TIMEOUT 300)
    ims_pg_test(it_sync_lock_pg)
  endif()
endif()
