# SPDX-License-Identifier: MIT
# bench_filter: filtered search at 50%, 5%, 0.1% selectivity against the
# unfiltered search (Flat and HNSW32 with recall@10 against the exact
# filtered answer); JSON on stdout. See bench/README-index.md.
if(TARGET ims_index)
  add_executable(bench_filter ${CMAKE_CURRENT_SOURCE_DIR}/bench_filter.c)
  target_link_libraries(bench_filter PRIVATE ims_index ims_bench_cpu m)
endif()
