# SPDX-License-Identifier: MIT
# The catalogue on PostgreSQL: catalogue copy both ways, --catalogue on the CLI.
add_test(NAME it_catalogue_copy
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/catalogue_copy_test.py $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
set_tests_properties(it_catalogue_copy PROPERTIES LABELS integration TIMEOUT 300)
ims_pg_test(it_catalogue_copy)
