# SPDX-License-Identifier: MIT
# bench_catalogue: the catalogue's time per inserted image and per search
# result join, SQLite against PostgreSQL (bench/bench_catalogue.sh runs it
# on a throwaway server; see the top of bench_catalogue.c).
if(TARGET ims_store)
  add_executable(bench_catalogue ${CMAKE_CURRENT_SOURCE_DIR}/bench_catalogue.c)
  target_link_libraries(bench_catalogue PRIVATE ims_store)
endif()
