# SPDX-License-Identifier: MIT
# Helpers shared by every module's CMakeLists.txt.

# ims_add_unit_test(NAME <name> SOURCES <files...> LIBS <targets...> [LABELS <labels...>]
#                   [TIMEOUT s] [TSAN])
# One cmocka executable per module; IMS_SOURCE_DIR lets tests find tests/golden
# and data/ in the source tree, IMS_BINARY_DIR the built binary. TSAN adds the
# `tsan` label: the test exercises threads or locks, and scripts/test.sh runs
# every test so labelled under ThreadSanitizer (ctest -L tsan).
function(ims_add_unit_test)
  cmake_parse_arguments(T "TSAN" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} PkgConfig::CMOCKA Threads::Threads m)
  target_compile_definitions(${T_NAME} PRIVATE
    IMS_SOURCE_DIR="${CMAKE_SOURCE_DIR}" IMS_BINARY_DIR="${CMAKE_BINARY_DIR}")
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  if(T_TSAN)
    list(APPEND T_LABELS tsan)
    set_property(GLOBAL APPEND PROPERTY IMS_TSAN_TARGETS ${T_NAME})
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  # A timeout catches a hang, not slowness: sanitizer builds run the same
  # work 3-10x slower (and slower again on a loaded 2-core runner), so their
  # bound is three times the test's own (test_index: 8 s in the gcc pass,
  # past 120 s under ASan at load 10).
  if(IMS_SANITIZE_ADDRESS OR IMS_SANITIZE_THREAD)
    math(EXPR T_TIMEOUT "${T_TIMEOUT} * 3")
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "IMS_SOURCE_DIR=${CMAKE_SOURCE_DIR};IMS_BINARY_DIR=${CMAKE_BINARY_DIR}")
endfunction()

# ims_add_fuzzer(NAME <name> SOURCES <files...> LIBS <targets...> CORPUS <dir> [RUNS n])
# With clang: a libFuzzer binary, smoke-run in CTest for a bounded time with a
# fixed seed (a smoke run that finds a different input each time would make
# CI flaky; longer fuzzing is run by hand without -seed), and LeakSanitizer's
# suppressions for leaks inside third-party libraries (tests/fuzz/lsan_thirdparty.supp).
# Otherwise: the same harness linked to tests/fuzz/replay_main.c, which feeds it
# the seed corpus plus deterministic mutations of it.
function(ims_add_fuzzer)
  cmake_parse_arguments(F "" "NAME;CORPUS;RUNS" "SOURCES;LIBS" ${ARGN})
  if(NOT F_RUNS)
    set(F_RUNS 20000)
  endif()
  if(CMAKE_C_COMPILER_ID STREQUAL "Clang")
    add_executable(${F_NAME} ${F_SOURCES})
    target_compile_options(${F_NAME} PRIVATE -fsanitize=fuzzer)
    target_link_options(${F_NAME} PRIVATE -fsanitize=fuzzer)
    # libFuzzer writes new inputs into its first corpus folder: a scratch
    # folder in the build tree, so the committed seeds stay untouched
    file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/${F_NAME}_corpus)
    set(cmd ${F_NAME} -seed=1 -runs=${F_RUNS} -max_total_time=30 -rss_limit_mb=2048
        ${CMAKE_CURRENT_BINARY_DIR}/${F_NAME}_corpus ${F_CORPUS})
  else()
    add_executable(${F_NAME} ${F_SOURCES} ${CMAKE_SOURCE_DIR}/tests/fuzz/replay_main.c)
    set(cmd ${F_NAME} ${F_RUNS} ${F_CORPUS})
  endif()
  target_link_libraries(${F_NAME} PRIVATE ${F_LIBS} Threads::Threads m)
  if(IMS_BUILD_TESTS)
    add_test(NAME ${F_NAME} COMMAND ${cmd})
    set_tests_properties(${F_NAME} PROPERTIES LABELS fuzz-smoke TIMEOUT 120
      ENVIRONMENT "LSAN_OPTIONS=suppressions=${CMAKE_SOURCE_DIR}/tests/fuzz/lsan_thirdparty.supp")
  endif()
endfunction()
