# SPDX-License-Identifier: MIT
# bench_store: catalogue insert rows/s (200k x 512-d, batches of 1000) and
# embedding scan MB/s, against raw write+fsync and read(2) of the same bytes
# measured in the same run (see the top of bench_store.c).
if(TARGET ims_store)
  add_executable(bench_store ${CMAKE_CURRENT_SOURCE_DIR}/bench_store.c)
  target_link_libraries(bench_store PRIVATE ims_bench_cpu)
  target_link_libraries(bench_store PRIVATE ims_store)
endif()
