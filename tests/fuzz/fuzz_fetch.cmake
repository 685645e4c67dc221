# SPDX-License-Identifier: MIT
# The fetch module's input checks: URLs, the address policy, Location headers.
ims_add_fuzzer(NAME fuzz_url SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_url.c LIBS ims_fetch
               CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/url)
target_include_directories(fuzz_url PRIVATE ${CMAKE_SOURCE_DIR}/src/fetch)
pkg_check_modules(LIBCURL REQUIRED IMPORTED_TARGET libcurl)
target_link_libraries(fuzz_url PRIVATE PkgConfig::LIBCURL)
