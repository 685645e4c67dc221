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
