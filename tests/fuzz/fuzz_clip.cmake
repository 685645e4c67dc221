# SPDX-License-Identifier: MIT
# The clip module's parsers: the safetensors header and config.json.
# The parser's own .c file is compiled into the harness (instead of linking
# ims_clip) so that, in the clang build, libFuzzer's coverage instrumentation
# (-fsanitize=fuzzer, applied to the harness target's sources only) sees the
# parser's branches; otherwise the fuzzer runs blind.
pkg_check_modules(IMS_FUZZ_JANSSON REQUIRED IMPORTED_TARGET jansson)
foreach(h safetensors config)
  ims_add_fuzzer(NAME fuzz_${h}
                 SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_${h}.c ${CMAKE_SOURCE_DIR}/src/clip/${h}.c
                 LIBS ims_base PkgConfig::IMS_FUZZ_JANSSON
                 CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/${h})
  target_include_directories(fuzz_${h} PRIVATE ${CMAKE_SOURCE_DIR}/src/clip)
endforeach()
