# ctest `install`: the installed package is usable by another CMake project.
#
# Installs the build BUILD_DIR into WORK_DIR/prefix, configures and builds
# SOURCE_DIR/examples/custom_worker on its own against it (find_package),
# runs the program, and checks that it needs neither the HTTP library nor
# OpenSSL (a program that only dispatches and runs tasks links
# taskmill::client, not taskmill::server).
cmake_minimum_required(VERSION 3.25)
foreach(v BUILD_DIR SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "test_install.cmake: -D${v}= is missing")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}")
  endif()
  set(output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(f include/taskmill/client.h lib/cmake/taskmill/taskmillConfig.cmake
          lib/cmake/taskmill/taskmillConfigVersion.cmake)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "not installed: ${f}")
  endif()
endforeach()
# Only include/taskmill is public, and its headers include nothing else of
# taskmill's (nothing from src/).
file(GLOB_RECURSE installed RELATIVE ${prefix}/include ${prefix}/include/*)
foreach(h ${installed})
  if(NOT h MATCHES "^taskmill/[^/]+\\.h$")
    message(FATAL_ERROR "installed beside the public headers: include/${h}")
  endif()
  file(STRINGS ${prefix}/include/${h} quoted REGEX "^#include \"")
  foreach(line ${quoted})
    if(NOT line MATCHES "^#include \"taskmill/[^/\"]+\\.h\"")
      message(FATAL_ERROR "include/${h} includes a private header: ${line}")
    endif()
  endforeach()
endforeach()

# Debug: no optimizer, the quickest build of the example.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/custom_worker -B ${WORK_DIR}/build
    -DCMAKE_BUILD_TYPE=Debug -DCMAKE_PREFIX_PATH=${prefix})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
set(program ${WORK_DIR}/build/my-taskmill)
run(${program} --help)
if(NOT output MATCHES "worker" OR NOT output MATCHES "dispatch")
  message(FATAL_ERROR "my-taskmill --help lacks the worker subcommands:\n${output}")
endif()
run(readelf -d ${program})
if(output MATCHES "httplib|libssl|libcrypto|prometheus")
  message(FATAL_ERROR "my-taskmill links the HTTP server's libraries:\n${output}")
endif()
file(REMOVE_RECURSE ${WORK_DIR})
message(STATUS "installed package OK: examples/custom_worker built against ${prefix}")
