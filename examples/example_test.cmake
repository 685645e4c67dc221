# SPDX-License-Identifier: MIT
# Runs the example with the tiny model over the fixture images, twice (a
# new data folder, then the same one reopened: every source a duplicate),
# and checks what it prints. -DEXE= -DSRC= -DWORK= (a scratch folder).
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/model)
file(COPY ${SRC}/tests/golden/clip/tiny/config.json ${SRC}/tests/golden/clip/tiny/model.safetensors
          ${SRC}/data/vocab/vocab.json ${SRC}/data/vocab/merges.txt DESTINATION ${WORK}/model)
set(images ${SRC}/tests/golden/clip/images)
foreach(round 1 2)
  execute_process(COMMAND ${EXE} ${WORK}/model ${WORK}/data "a dog on a beach" ${images}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 100)
  message(STATUS "round ${round}:\n${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the example failed (${rc})")
  endif()
  foreach(want "libimgsearch 1.0.0, model vit-custom-32" "by text:\n  [0-9]+ -?0\\.[0-9]+ [0-9]+x[0-9]+ ${images}/"
          "thumbnail of [0-9]+: [1-9][0-9]* bytes of JPEG" "like it, at least 100 px wide:\n  [0-9]+ 1\\.0000 ")
    if(NOT out MATCHES "${want}")
      message(FATAL_ERROR "round ${round}: the output lacks '${want}'")
    endif()
  endforeach()
  if(round EQUAL 1 AND NOT out MATCHES "added 2[0-9], duplicates 0, failed [0-9]+; 2[0-9] rows")
    message(FATAL_ERROR "round 1 should add every fixture image")
  endif()
  if(round EQUAL 2 AND NOT out MATCHES "added 0, duplicates 2[0-9], failed [0-9]+; 2[0-9] rows")
    message(FATAL_ERROR "round 2 should find every image already there")
  endif()
endforeach()
# a folder of another model is refused with the status name
file(WRITE ${WORK}/model/config.json "{}")
execute_process(COMMAND ${EXE} ${WORK}/model ${WORK}/data "x" RESULT_VARIABLE rc
                ERROR_VARIABLE err OUTPUT_QUIET TIMEOUT 60)
if(rc EQUAL 0 OR NOT err MATCHES "search_folder: open: .*model")
  message(FATAL_ERROR "a broken model folder should fail to open: ${rc} ${err}")
endif()
file(REMOVE_RECURSE ${WORK})
