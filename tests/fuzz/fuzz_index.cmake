# SPDX-License-Identifier: MIT
# The index module's parser: the snapshot loader. index_snapshot.c is compiled
# into the harness (ahead of libims_index's copy) so that libFuzzer's coverage
# instrumentation sees the loader's branches.
if(TARGET ims_index)
  pkg_check_modules(IMS_FUZZ_ZLIB REQUIRED IMPORTED_TARGET zlib)
  ims_add_fuzzer(NAME fuzz_index_snapshot
                 SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_index_snapshot.c
                         ${CMAKE_SOURCE_DIR}/src/index/index_snapshot.c
                 LIBS ims_index PkgConfig::IMS_FUZZ_ZLIB
                 CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/index_snapshot
                 RUNS 5000)
  target_include_directories(fuzz_index_snapshot PRIVATE ${CMAKE_SOURCE_DIR}/src/index)
endif()

# Files from outside and snapshots with a FAISS payload (issue 8): the FAISS
# import reader (byte walk + object checks) and the HNSW/IVF snapshot loader
# with the CRC recomputed on every input. index_import.c, index_hnsw.c and
# index_snapshot.c are compiled into the harnesses for coverage.
if(TARGET ims_index)
  ims_add_fuzzer(NAME fuzz_faiss_import
                 SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_faiss_import.c
                         ${CMAKE_SOURCE_DIR}/src/index/index_import.c
                 LIBS ims_index
                 CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/faiss_import
                 RUNS 3000)
  target_include_directories(fuzz_faiss_import PRIVATE ${CMAKE_SOURCE_DIR}/src/index)
  ims_add_fuzzer(NAME fuzz_index_hnsw_snapshot
                 SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_index_hnsw_snapshot.c
                         ${CMAKE_SOURCE_DIR}/src/index/index_snapshot.c
                         ${CMAKE_SOURCE_DIR}/src/index/index_import.c
                         ${CMAKE_SOURCE_DIR}/src/index/index_hnsw.c
                 LIBS ims_index PkgConfig::IMS_FUZZ_ZLIB
                 CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/index_hnsw_snapshot
                 RUNS 3000)
  target_include_directories(fuzz_index_hnsw_snapshot PRIVATE ${CMAKE_SOURCE_DIR}/src/index)
endif()

# Snapshots of our own graph (issue 11): index_graph.c and index_snapshot.c
# compiled into the harness for coverage; the CRC is recomputed on every input.
if(TARGET ims_index)
  ims_add_fuzzer(NAME fuzz_index_graph_snapshot
                 SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_index_graph_snapshot.c
                         ${CMAKE_SOURCE_DIR}/src/index/index_snapshot.c
                         ${CMAKE_SOURCE_DIR}/src/index/index_graph.c
                 LIBS ims_index PkgConfig::IMS_FUZZ_ZLIB
                 CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/index_graph_snapshot
                 RUNS 3000)
  target_include_directories(fuzz_index_graph_snapshot PRIVATE ${CMAKE_SOURCE_DIR}/src/index)
endif()
