# Configures and builds one out-of-tree project against an installed mgmtd SDK, the way a
# plugin author would; used by the `sdk:build:*` tests.
#
#   cmake -DSOURCE_DIR=examples/hello-command -DBINARY_DIR=... -DPREFIX=<sdk prefix>
#         [-DGENERATOR=Ninja] [-DMAKE_PROGRAM=...] [-DCXX_COMPILER=...] [-DBUILD_TYPE=Debug]
#         [-DCXX_FLAGS=...] [-DMODULE_LINKER_FLAGS=...] -P BuildSdkExample.cmake
foreach(var SOURCE_DIR BINARY_DIR PREFIX)
  if(NOT ${var})
    message(FATAL_ERROR "BuildSdkExample.cmake: -D${var}=... is required")
  endif()
endforeach()

set(args -S ${SOURCE_DIR} -B ${BINARY_DIR}
  -DCMAKE_PREFIX_PATH=${PREFIX}
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
  "-DCMAKE_MODULE_LINKER_FLAGS=${MODULE_LINKER_FLAGS}")
if(GENERATOR)
  list(APPEND args -G ${GENERATOR})
endif()
if(MAKE_PROGRAM)
  list(APPEND args -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
endif()
if(CXX_COMPILER)
  list(APPEND args -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
if(BUILD_TYPE)
  list(APPEND args -DCMAKE_BUILD_TYPE=${BUILD_TYPE})
endif()

execute_process(COMMAND ${CMAKE_COMMAND} ${args} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring ${SOURCE_DIR} against the SDK in ${PREFIX} failed")
endif()

# The package must come from the installed prefix, not from mgmtd's build tree.
file(STRINGS ${BINARY_DIR}/CMakeCache.txt mgmt_dir REGEX "^mgmt_DIR:")
string(REGEX REPLACE "^mgmt_DIR:[A-Z]+=" "" mgmt_dir "${mgmt_dir}")
file(REAL_PATH "${PREFIX}" real_prefix)
file(REAL_PATH "${mgmt_dir}" real_mgmt_dir)
string(FIND "${real_mgmt_dir}" "${real_prefix}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "find_package(mgmt) used ${mgmt_dir}, not the SDK installed in ${PREFIX}")
endif()

execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY_DIR} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building ${SOURCE_DIR} against the SDK in ${PREFIX} failed")
endif()
