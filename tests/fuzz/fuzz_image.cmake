# SPDX-License-Identifier: MIT
# Image decoders: sniffing, JPEG/PNG/WebP/GIF/BMP/HEIC/AVIF/TIFF, preprocessing and thumbnails.
# Seeds: tiny files covering every decoder path (see corpus/image/README.md).
ims_add_fuzzer(NAME fuzz_image SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_image.c
  LIBS ims_image CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/image RUNS 20000)
# COST: run first under ctest -j (see tests/unit/clip/CMakeLists.txt); the
# smoke run is bounded by -max_total_time=30.
if(TEST fuzz_image)
  set_tests_properties(fuzz_image PROPERTIES COST 32)
endif()
