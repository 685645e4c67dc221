# SPDX-License-Identifier: MIT
# `imgsearch tokenize`: the real binary against the golden tokenizer cases,
# in argument and stdin modes, with the bundled and an explicit vocabulary,
# and its error exits.
add_test(NAME it_tokenize
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/tokenize_cli.sh $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
set_tests_properties(it_tokenize PROPERTIES LABELS integration TIMEOUT 120)
