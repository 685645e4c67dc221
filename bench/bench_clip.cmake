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
# bench_text_busy: a 6-word text's p50/p99 with spinning competitors, the
# adaptive text-pass team against the fixed one (issue 11 item 4).
if(TARGET ims_clip)
  add_executable(bench_text_busy ${CMAKE_CURRENT_SOURCE_DIR}/bench_text_busy.c)
  target_link_libraries(bench_text_busy PRIVATE ims_clip ims_base ims_bench_cpu)
endif()
