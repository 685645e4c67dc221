add_test(NAME it_import
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/import_test.py $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
set_tests_properties(it_import PROPERTIES LABELS integration TIMEOUT 300)
