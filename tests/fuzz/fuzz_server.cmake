# SPDX-License-Identifier: MIT
# The server's parsers: the JSON search body, the streaming multipart parser, and the
# hardening's header values (Host, Origin, Forwarded, X-Forwarded-For, CIDRs).
if(TARGET ims_server_parse)
  ims_add_fuzzer(NAME fuzz_server_query SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz_server_query.c
    LIBS ims_server_parse CORPUS ${CMAKE_CURRENT_LIST_DIR}/corpus/server_query)
  ims_add_fuzzer(NAME fuzz_server_multipart SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz_server_multipart.c
    LIBS ims_server_parse CORPUS ${CMAKE_CURRENT_LIST_DIR}/corpus/server_multipart)
endif()
if(TARGET ims_server_parse)
  ims_add_fuzzer(NAME fuzz_server_guard SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz_server_guard.c
    LIBS ims_server_parse CORPUS ${CMAKE_CURRENT_LIST_DIR}/corpus/server_guard)
endif()
# The compatibility handlers (immich, clip-retrieval) over a fake backend.
if(TARGET ims_server)
  pkg_check_modules(IMS_FZ_JANSSON REQUIRED IMPORTED_TARGET jansson)
  ims_add_fuzzer(NAME fuzz_server_compat SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz_server_compat.c
    LIBS ims_server ims_server_parse PkgConfig::IMS_FZ_JANSSON
    CORPUS ${CMAKE_CURRENT_LIST_DIR}/corpus/server_compat)
  target_include_directories(fuzz_server_compat PRIVATE ${CMAKE_SOURCE_DIR}/src/server)
endif()
