# SPDX-License-Identifier: MIT
# `imgsearch embed`: golden texts and images through the real binary on the
# tiny model, JSON lines checked against tests/golden/clip/tiny, and errors.
add_test(NAME it_embed
  COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/embed_check.py $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR})
set_tests_properties(it_embed PROPERTIES LABELS integration TIMEOUT 300)
