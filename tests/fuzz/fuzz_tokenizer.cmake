# SPDX-License-Identifier: MIT
# The clip tokenizer: arbitrary bytes -> clip_tokenize, with both vocabulary
# formats compared. IMS_SOURCE_DIR locates data/vocab (IMS_TOKENIZER_VOCAB
# overrides it at run time).
ims_add_fuzzer(NAME fuzz_tokenizer SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz_tokenizer.c LIBS ims_clip
               CORPUS ${CMAKE_CURRENT_LIST_DIR}/corpus/tokenizer)
target_compile_definitions(fuzz_tokenizer PRIVATE IMS_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
