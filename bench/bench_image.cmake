# SPDX-License-Identifier: MIT
# bench_image: decode + CLIP preprocessing of a 1600x1200 JPEG against plain
# libjpeg-turbo decoding measured in the same run (JSON on stdout).
if(TARGET ims_image)
  pkg_check_modules(IMS_BENCH_JPEG REQUIRED IMPORTED_TARGET libjpeg)
  add_executable(bench_image ${CMAKE_CURRENT_SOURCE_DIR}/bench_image.c)
  target_link_libraries(bench_image PRIVATE ims_bench_cpu)
  target_link_libraries(bench_image PRIVATE ims_image PkgConfig::IMS_BENCH_JPEG m)
  target_compile_definitions(bench_image PRIVATE IMS_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
