# Own graph index from the CLI (issue 11): reindex --index Graph8, search
# knobs stored without a rebuild (reindex, index set), bounded --ef/--nprobe/
# --rerank, deletes never returned and compacted by reindex --rebuild.
add_test(NAME it_graph_cli
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/graph_cli_test.py $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
set_tests_properties(it_graph_cli PROPERTIES LABELS integration TIMEOUT 300)
