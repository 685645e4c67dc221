# SPDX-License-Identifier: MIT
# bench_graph: our own parallel HNSW build and walk ("Graph" types) beside
# FAISS's HNSW32 in the same run, on the hard set (issue 11 item 2). JSON on
# stdout; see bench/README-index.md.
if(TARGET ims_index)
  add_executable(bench_graph ${CMAKE_CURRENT_SOURCE_DIR}/bench_graph.c)
  target_link_libraries(bench_graph PRIVATE ims_bench_cpu ims_index m)
  target_include_directories(bench_graph PRIVATE ${CMAKE_SOURCE_DIR}/src/index)
endif()
