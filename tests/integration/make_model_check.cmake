# SPDX-License-Identifier: MIT
# make_model_check.cmake: runs `imgsearch make-model` on the tiny golden
# config and checks what it wrote, independently of the C loader: the
# safetensors header (read here with CMake's JSON support) lists every tensor
# as F32 with contiguous offsets covering the data section exactly, the data
# section starts 8-byte aligned, the file size adds up, config/vocabulary
# are byte copies, the same seed gives the same bytes and another seed
# different ones; a bad config and bad usage are errors that write nothing.
# Usage: cmake -DIMGSEARCH=path -DSRC=source-dir -P make_model_check.cmake
cmake_minimum_required(VERSION 3.19) # string(JSON)

# check("<if() condition>" "message"): the condition is evaluated as code, so
# it can be written as one string.
function(check cond msg)
  cmake_language(EVAL CODE "if(${cond})\nset(ok 1)\nelse()\nset(ok 0)\nendif()")
  if(NOT ok)
    message(FATAL_ERROR "it_make_model: ${msg}")
  endif()
endfunction()

execute_process(COMMAND mktemp -d /tmp/ims_it_make_model_XXXXXX OUTPUT_VARIABLE TMP
                OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
check("rc EQUAL 0" "mktemp failed")
set(TINY ${SRC}/tests/golden/clip/tiny/config.json)

function(make_model seed out rc_var err_var)
  execute_process(COMMAND ${IMGSEARCH} make-model --config ${TINY} --prng-seed ${seed} --out ${out}
                  RESULT_VARIABLE r ERROR_VARIABLE e)
  set(${rc_var} ${r} PARENT_SCOPE)
  set(${err_var} "${e}" PARENT_SCOPE)
endfunction()

make_model(3 ${TMP}/a rc err)
check("rc EQUAL 0" "make-model failed: ${err}")
foreach(f config.json vocab.json merges.txt model.safetensors)
  check("EXISTS ${TMP}/a/${f}" "${f} missing")
endforeach()
file(GLOB leftovers ${TMP}/a/*.tmp*)
check("\"${leftovers}\" STREQUAL \"\"" "temp files left: ${leftovers}")

# Copies are byte-identical.
foreach(pair "${TINY}|config.json" "${SRC}/data/vocab/vocab.json|vocab.json"
             "${SRC}/data/vocab/merges.txt|merges.txt")
  string(REPLACE "|" ";" pair "${pair}")
  list(GET pair 0 from)
  list(GET pair 1 name)
  file(SHA256 ${from} h1)
  file(SHA256 ${TMP}/a/${name} h2)
  check("h1 STREQUAL h2" "${name} is not a copy of ${from}")
endforeach()

# The safetensors header.
set(ST ${TMP}/a/model.safetensors)
file(SIZE ${ST} size)
file(READ ${ST} len_hex OFFSET 0 LIMIT 8 HEX)
set(hlen_hex "")
foreach(i RANGE 14 0 -2)
  string(SUBSTRING ${len_hex} ${i} 2 byte)
  string(APPEND hlen_hex ${byte})
endforeach()
math(EXPR hlen "0x${hlen_hex}")
check("hlen GREATER 100 AND hlen LESS size" "header length ${hlen} of ${size}")
math(EXPR aligned "(8 + ${hlen}) % 8")
check("aligned EQUAL 0" "data section not 8-byte aligned")
file(READ ${ST} header OFFSET 8 LIMIT ${hlen})
string(JSON n_keys LENGTH "${header}")
# 16 tensors per layer x 4 layers + 13 embeddings/norms/projections + logit_scale + __metadata__
check("n_keys EQUAL 79" "${n_keys} header entries")
math(EXPR last "${n_keys} - 1")
set(ranges "")
set(total 0)
foreach(i RANGE ${last})
  string(JSON name MEMBER "${header}" ${i})
  if(name STREQUAL "__metadata__")
    continue()
  endif()
  string(JSON dtype GET "${header}" ${name} dtype)
  check("dtype STREQUAL F32" "${name} has dtype ${dtype}")
  string(JSON nd LENGTH "${header}" ${name} shape)
  set(count 1)
  if(nd GREATER 0)
    math(EXPR lastd "${nd} - 1")
    foreach(d RANGE ${lastd})
      string(JSON dim GET "${header}" ${name} shape ${d})
      math(EXPR count "${count} * ${dim}")
    endforeach()
  endif()
  string(JSON begin GET "${header}" ${name} data_offsets 0)
  string(JSON end GET "${header}" ${name} data_offsets 1)
  math(EXPR span "${end} - ${begin}")
  math(EXPR want "${count} * 4")
  check("span EQUAL want" "${name}: ${span} bytes for ${count} floats")
  math(EXPR total "${total} + ${span}")
  list(APPEND ranges "${begin}:${end}")
endforeach()
math(EXPR data_bytes "${size} - 8 - ${hlen}")
check("total EQUAL data_bytes" "tensors cover ${total} of ${data_bytes} data bytes")
# Contiguous, non-overlapping: every begin is 0 or some tensor's end.
set(ends "0")
foreach(r IN LISTS ranges)
  string(REPLACE ":" ";" r "${r}")
  list(GET r 1 e)
  list(APPEND ends ${e})
endforeach()
foreach(r IN LISTS ranges)
  string(REPLACE ":" ";" r "${r}")
  list(GET r 0 b)
  list(FIND ends ${b} found)
  check("found GREATER -1" "a tensor begins at ${b}, not at the end of another")
endforeach()
string(JSON tok_shape GET "${header}" text_model.embeddings.token_embedding.weight shape)
string(REPLACE " " "" tok_shape "${tok_shape}")
check("tok_shape STREQUAL \"[49408,32]\"" "token_embedding shape ${tok_shape}")
string(JSON pe_shape GET "${header}" vision_model.embeddings.patch_embedding.weight shape)
string(REPLACE " " "" pe_shape "${pe_shape}")
check("pe_shape STREQUAL \"[128,3,32,32]\"" "patch_embedding shape ${pe_shape}")
string(JSON ls_nd LENGTH "${header}" logit_scale shape)
check("ls_nd EQUAL 0" "logit_scale is not a scalar")

# Determinism: same seed, same bytes; another seed, other bytes.
make_model(3 ${TMP}/b rc err)
check("rc EQUAL 0" "second make-model failed: ${err}")
file(SHA256 ${ST} ha)
file(SHA256 ${TMP}/b/model.safetensors hb)
check("ha STREQUAL hb" "same seed gave different weights")
make_model(4 ${TMP}/c rc err)
check("rc EQUAL 0" "third make-model failed: ${err}")
file(SHA256 ${TMP}/c/model.safetensors hc)
check("NOT ha STREQUAL hc" "seeds 3 and 4 gave the same weights")

# Errors: a bad config is exit 1 with the reason, and nothing is written.
file(WRITE ${TMP}/bad.json "{\"architectures\": [\"BertModel\"]}")
execute_process(COMMAND ${IMGSEARCH} make-model --config ${TMP}/bad.json --prng-seed 1
                        --out ${TMP}/bad RESULT_VARIABLE rc ERROR_VARIABLE err)
check("rc EQUAL 1" "bad config: exit ${rc}")
string(FIND "${err}" "BertModel" at)
check("at GREATER -1" "bad config message: ${err}")
check("NOT EXISTS ${TMP}/bad" "bad config wrote ${TMP}/bad")
file(WRITE ${TMP}/broken.json "{\"model_type\": ")
execute_process(COMMAND ${IMGSEARCH} make-model --config ${TMP}/broken.json --prng-seed 1
                        --out ${TMP}/bad RESULT_VARIABLE rc ERROR_VARIABLE err)
check("rc EQUAL 1" "broken config: exit ${rc}")
string(FIND "${err}" "invalid JSON" at)
check("at GREATER -1" "broken config message: ${err}")
execute_process(COMMAND ${IMGSEARCH} make-model --config ${TINY} --prng-seed 1 --out ${TMP}/bad
                        --vocab ${TMP}/novocab RESULT_VARIABLE rc ERROR_VARIABLE err)
check("rc EQUAL 1" "missing vocabulary: exit ${rc}")
string(FIND "${err}" "vocab.json" at)
check("at GREATER -1" "missing vocabulary message: ${err}")
check("NOT EXISTS ${TMP}/bad" "missing vocabulary wrote ${TMP}/bad")
# Usage errors: exit 2.
foreach(args "--config;${TINY};--out;${TMP}/bad" "--config;${TINY};--prng-seed;-1;--out;${TMP}/bad"
             "--config;${TINY};--prng-seed;x;--out;${TMP}/bad" "--bogus")
  execute_process(COMMAND ${IMGSEARCH} make-model ${args} RESULT_VARIABLE rc ERROR_QUIET)
  check("rc EQUAL 2" "usage error (${args}): exit ${rc}")
endforeach()

file(REMOVE_RECURSE ${TMP})
message(STATUS "it_make_model: ok")
