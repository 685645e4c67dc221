# SPDX-License-Identifier: MIT
# bench_vector_http: exact search of 200k easy-set vectors end to end through
# POST /api/v1/search {"vector": ...} against FAISS IndexFlatIP (one query,
# one thread) and our in-process scan, measured in the same run, with the
# top-10 compared. See bench/README-vector-http.md.
#   cmake --build B --target imgsearch bench_vector_http
#   python3 bench/bench_vector_http.py --build B
if(TARGET ims_index AND TARGET ims_clip)
  add_executable(bench_vector_http ${CMAKE_CURRENT_SOURCE_DIR}/bench_vector_http.c)
  target_link_libraries(bench_vector_http PRIVATE ims_bench_cpu)
  target_link_libraries(bench_vector_http PRIVATE ims_index ims_clip ims_base m)
  target_include_directories(bench_vector_http PRIVATE ${CMAKE_SOURCE_DIR}/src/index)
endif()
