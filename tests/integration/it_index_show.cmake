# `imgsearch index show` prints the knobs in force (issue 11): the type's
# default ef_search / nprobe marked "(default)", "-" for a knob the type has not.
add_test(NAME it_index_show
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/index_show_test.py $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
set_tests_properties(it_index_show PROPERTIES LABELS integration TIMEOUT 300)
