# SPDX-License-Identifier: MIT
# `cmake --install` into a scratch prefix, then the example built there the
# way a user would (cc + pkg-config, shared, then static), and run.
# -DBUILD= -DSRC= -DCC= -DWORK=
file(REMOVE_RECURSE ${WORK})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD} --prefix ${WORK}/prefix
                RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed: ${err}")
endif()
foreach(f include/imgsearch.h)
  if(NOT EXISTS ${WORK}/prefix/${f})
    message(FATAL_ERROR "${f} is not installed")
  endif()
endforeach()
file(GLOB_RECURSE pcs ${WORK}/prefix/*/imgsearch.pc)
file(GLOB_RECURSE sos ${WORK}/prefix/*/libimgsearch.so.1)
file(GLOB_RECURSE as ${WORK}/prefix/*/libimgsearch.a)
if(NOT pcs OR NOT sos OR NOT as)
  message(FATAL_ERROR "imgsearch.pc, libimgsearch.so.1 and libimgsearch.a must be installed")
endif()
get_filename_component(pcdir ${pcs} DIRECTORY)
get_filename_component(libdir ${sos} DIRECTORY)
set(ENV{PKG_CONFIG_PATH} ${pcdir})
foreach(kind shared static)
  # static: libimgsearch.a, its dependencies shared (`pkg-config --static`
  # would ask for static copies of libcurl's own dependencies too)
  execute_process(COMMAND pkg-config --cflags --libs imgsearch OUTPUT_VARIABLE pc
                  RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
  set(extra "")
  if(rc EQUAL 0 AND kind STREQUAL static)
    execute_process(COMMAND pkg-config --variable=private_requires imgsearch
                    OUTPUT_VARIABLE req OUTPUT_STRIP_TRAILING_WHITESPACE)
    execute_process(COMMAND pkg-config --variable=private_libs imgsearch
                    OUTPUT_VARIABLE priv OUTPUT_STRIP_TRAILING_WHITESPACE)
    separate_arguments(req UNIX_COMMAND "${req}")
    execute_process(COMMAND pkg-config --libs ${req} OUTPUT_VARIABLE deps
                    RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
    string(REPLACE "-limgsearch" "-Wl,-Bstatic -limgsearch -Wl,-Bdynamic" pc "${pc}")
    set(pc "${pc} ${deps} ${priv}")
  endif()
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config imgsearch failed")
  endif()
  separate_arguments(pc UNIX_COMMAND "${pc}")
  execute_process(COMMAND ${CC} -std=c11 -Wall -Wextra -Werror ${SRC}/examples/search_folder.c
                          -o ${WORK}/search_folder_${kind} ${extra} ${pc}
                  RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "building the example against the installed ${kind} library: ${err}")
  endif()
  set(ENV{LD_LIBRARY_PATH} ${libdir})
  execute_process(COMMAND ${CMAKE_COMMAND} -DEXE=${WORK}/search_folder_${kind} -DSRC=${SRC}
                          -DWORK=${WORK}/run_${kind} -P ${SRC}/examples/example_test.cmake
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the installed ${kind} example: ${out}${err}")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK})
