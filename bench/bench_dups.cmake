# SPDX-License-Identifier: MIT
# bench_dups: library-wide near-duplicates (vindex_duplicates) over 100k
# vectors against an all-pairs scan of a 10k sample extrapolated, planted
# groups' recall; JSON on stdout. See bench/README-index.md.
if(TARGET ims_index)
  add_executable(bench_dups ${CMAKE_CURRENT_SOURCE_DIR}/bench_dups.c)
  target_link_libraries(bench_dups PRIVATE ims_index ims_bench_cpu m)
endif()
