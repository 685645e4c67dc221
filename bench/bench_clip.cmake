# SPDX-License-Identifier: MIT
# bench_clip: images/s and text latency of the CLIP forward passes (f32 and
# bf16) against OpenBLAS sgemm measured in the same run. See bench/README.md.
pkg_check_modules(IMS_OPENBLAS IMPORTED_TARGET openblas)
if(TARGET ims_clip AND IMS_OPENBLAS_FOUND)
  add_executable(bench_clip ${CMAKE_CURRENT_SOURCE_DIR}/bench_clip.c)
  target_link_libraries(bench_clip PRIVATE ims_bench_cpu)
  target_link_libraries(bench_clip PRIVATE ims_clip PkgConfig::IMS_OPENBLAS m)
  target_include_directories(bench_clip PRIVATE ${CMAKE_SOURCE_DIR}/src/clip)
  target_compile_definitions(bench_clip PRIVATE IMS_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
