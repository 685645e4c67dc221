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
# bench_prepare: ingestion's bounded decode (image_prepare_for_ingest) against
# the exact path on generated 12-48 MP photos: speed, PSNR, embedding cosine.
if(TARGET ims_image AND TARGET ims_clip)
  add_executable(bench_prepare ${CMAKE_CURRENT_SOURCE_DIR}/bench_prepare.c)
  pkg_check_modules(IMS_BENCH_PNG REQUIRED IMPORTED_TARGET libpng)
  target_link_libraries(bench_prepare PRIVATE ims_image ims_clip ims_bench_cpu PkgConfig::IMS_BENCH_JPEG
    PkgConfig::IMS_BENCH_PNG m)
endif()
