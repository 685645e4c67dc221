# SPDX-License-Identifier: MIT
# bench_ingest: `imgsearch add` of ~200 generated 1-2 MP JPEGs from a loopback
# server, end to end, against the pure encoder at the same batch size in the
# same run, with the peak RSS of the add process. See bench/README-ingest.md.
#   cmake --build B --target imgsearch bench_ingest_genjpeg bench_ingest_encode
#   python3 bench/bench_ingest.py --build B
pkg_check_modules(IMS_BENCH_JPEG IMPORTED_TARGET libjpeg)
if(IMS_BENCH_JPEG_FOUND)
  add_executable(bench_ingest_genjpeg ${CMAKE_CURRENT_SOURCE_DIR}/bench_ingest_genjpeg.c)
  target_link_libraries(bench_ingest_genjpeg PRIVATE PkgConfig::IMS_BENCH_JPEG m)
endif()
if(TARGET ims_clip)
  add_executable(bench_ingest_encode ${CMAKE_CURRENT_SOURCE_DIR}/bench_ingest_encode.c)
  target_link_libraries(bench_ingest_encode PRIVATE ims_bench_cpu)
  target_link_libraries(bench_ingest_encode PRIVATE ims_clip ims_base)
endif()
