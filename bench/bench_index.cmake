# SPDX-License-Identifier: MIT
# bench_index: exact-scan latency against FAISS IndexFlatIP measured in the
# same run, and recall/latency of approximate types with exact re-rank (JSON
# on stdout). See bench/README-index.md.
if(TARGET ims_index)
  add_executable(bench_index ${CMAKE_CURRENT_SOURCE_DIR}/bench_index.c)
  target_link_libraries(bench_index PRIVATE ims_bench_cpu)
  target_link_libraries(bench_index PRIVATE ims_index m)
  target_include_directories(bench_index PRIVATE ${CMAKE_SOURCE_DIR}/src/index)
endif()
