# SPDX-License-Identifier: MIT
# bench_server: text search over HTTP at concurrency 1/4/16 (cache hits and
# misses, p50/p99, requests/s) on a 100k-row catalogue beside the bare text
# encode time of the same run, image search by upload, API ingest vs CLI
# ingest. See bench/README-server.md.
#   cmake --build B --target imgsearch bench_server_load bench_server_prep bench_ingest_genjpeg
#   python3 bench/bench_server.py --build B
find_package(Threads REQUIRED)
add_executable(bench_server_load ${CMAKE_CURRENT_SOURCE_DIR}/bench_server_load.c)
  target_link_libraries(bench_server_load PRIVATE ims_bench_cpu)
target_link_libraries(bench_server_load PRIVATE Threads::Threads)
if(TARGET ims_clip AND TARGET ims_store)
  add_executable(bench_server_prep ${CMAKE_CURRENT_SOURCE_DIR}/bench_server_prep.c)
  target_link_libraries(bench_server_prep PRIVATE ims_bench_cpu)
  target_link_libraries(bench_server_prep PRIVATE ims_clip ims_store ims_base)
endif()
