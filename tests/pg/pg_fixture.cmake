# SPDX-License-Identifier: MIT
# The PostgreSQL test fixture: one throwaway server per build tree, started
# before the first test that needs it and stopped after the last
# (CTest FIXTURES_SETUP / FIXTURES_CLEANUP). tests/pg/pg_server.sh does the
# work (initdb + pg_ctl in a temp folder, as the postgres user when root).
#
#   ims_pg_test(<test name>)  makes a test require the server and gives it
#                             IMS_TEST_PG_DIR (the file url in it holds
#                             postgresql://postgres@127.0.0.1:PORT/postgres);
#                             tests create a database of their own each.
set(IMS_PG_STATE_DIR ${CMAKE_BINARY_DIR}/pgtest)
set(IMS_PG_SERVER_SH ${CMAKE_SOURCE_DIR}/tests/pg/pg_server.sh)
add_test(NAME pg_server_start COMMAND ${IMS_PG_SERVER_SH} start ${IMS_PG_STATE_DIR})
add_test(NAME pg_server_stop COMMAND ${IMS_PG_SERVER_SH} stop ${IMS_PG_STATE_DIR})
set_tests_properties(pg_server_start PROPERTIES FIXTURES_SETUP ims_pg LABELS "unit;pg" TIMEOUT 120)
set_tests_properties(pg_server_stop PROPERTIES FIXTURES_CLEANUP ims_pg LABELS "unit;pg" TIMEOUT 60)

function(ims_pg_test name)
  set_property(TEST ${name} APPEND PROPERTY FIXTURES_REQUIRED ims_pg)
  set_property(TEST ${name} APPEND PROPERTY ENVIRONMENT "IMS_TEST_PG_DIR=${IMS_PG_STATE_DIR}")
  set_property(TEST ${name} APPEND PROPERTY LABELS pg)
endfunction()
