# SPDX-License-Identifier: MIT
# The clip module's parsers: the safetensors header and config.json.
foreach(h safetensors config)
  ims_add_fuzzer(NAME fuzz_${h} SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_${h}.c LIBS ims_clip
                 CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/${h})
  target_include_directories(fuzz_${h} PRIVATE ${CMAKE_SOURCE_DIR}/src/clip)
endforeach()
