# mgmt_add_plugin(<name> SOURCES <src>... [VERSION <x.y.z>] [LIBRARIES <lib>...] [NO_INSTALL])
#
# Builds the mgmtd plugin <name>.so (CMake target mgmt_plugin_<name>):
#   - a MODULE library named <name>.so, linked to mgmt::framework (and LIBRARIES);
#   - hidden visibility, so the object exports only the mgmt_* entry points that the
#     MGMT_*_PLUGIN macros of mgmt/plugin.hpp mark;
#   - compile definitions for those macros: MGMT_PLUGIN_NAME ("<name>"),
#     MGMT_PLUGIN_VERSION ("<x.y.z>", default: the project's version) and the ABI marker
#     MGMT_PLUGIN_BUILD_ABI (the SDK's plugin ABI number, which plugin.hpp checks against
#     its own kAbiVersion);
#   - an install rule to ${MGMT_PLUGIN_INSTALL_DIR} (default lib/mgmtd/plugins under the
#     install prefix) unless NO_INSTALL.
# The same file serves mgmtd's own tree (included by the top-level CMakeLists.txt) and the
# installed SDK (included by mgmtConfig.cmake after find_package(mgmt)).

if(NOT DEFINED MGMT_ABI_VERSION)
  # mgmtd's own tree: the number comes from the header, its single source.
  set(_mgmt_plugin_hpp "${CMAKE_CURRENT_LIST_DIR}/../framework/include/mgmt/plugin.hpp")
  file(STRINGS "${_mgmt_plugin_hpp}" _mgmt_abi_line REGEX "kAbiVersion = [0-9]+")
  string(REGEX REPLACE ".*kAbiVersion = ([0-9]+).*" "\\1" MGMT_ABI_VERSION "${_mgmt_abi_line}")
  if(NOT MGMT_ABI_VERSION MATCHES "^[0-9]+$")
    message(FATAL_ERROR "cannot read kAbiVersion from ${_mgmt_plugin_hpp}")
  endif()
  # A new number in the header reconfigures the build.
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${_mgmt_plugin_hpp}")
endif()
if(NOT DEFINED MGMT_PLUGIN_INSTALL_DIR)
  set(MGMT_PLUGIN_INSTALL_DIR lib/mgmtd/plugins)
endif()
# Kept globally so that the function sees them from any directory.
set_property(GLOBAL PROPERTY MGMT_ABI_VERSION "${MGMT_ABI_VERSION}")

function(mgmt_add_plugin name)
  cmake_parse_arguments(P "NO_INSTALL" "VERSION" "SOURCES;LIBRARIES" ${ARGN})
  if(P_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "mgmt_add_plugin(${name}): unexpected arguments: ${P_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT P_SOURCES)
    message(FATAL_ERROR "mgmt_add_plugin(${name}): SOURCES is required")
  endif()
  if(NOT name MATCHES "^[A-Za-z0-9_.-]+$")
    message(FATAL_ERROR "mgmt_add_plugin(${name}): a plugin name is letters, digits, '.', '_' and '-'")
  endif()
  if(NOT DEFINED P_VERSION)
    set(P_VERSION "${PROJECT_VERSION}")
  endif()
  if(P_VERSION AND NOT P_VERSION MATCHES "^[0-9]+\\.[0-9]+\\.[0-9]+([-+][0-9A-Za-z.+-]*)?$")
    message(FATAL_ERROR "mgmt_add_plugin(${name}): VERSION \"${P_VERSION}\" is not a semantic version (x.y.z)")
  endif()
  get_property(abi GLOBAL PROPERTY MGMT_ABI_VERSION)

  set(target mgmt_plugin_${name})
  add_library(${target} MODULE ${P_SOURCES})
  target_link_libraries(${target} PRIVATE mgmt::framework ${P_LIBRARIES})
  if(TARGET mgmt_warnings)  # mgmtd's own tree
    target_link_libraries(${target} PRIVATE mgmt_warnings)
  endif()
  target_compile_definitions(${target} PRIVATE
    MGMT_PLUGIN_NAME="${name}"
    MGMT_PLUGIN_BUILD_ABI=${abi})
  if(P_VERSION)
    target_compile_definitions(${target} PRIVATE MGMT_PLUGIN_VERSION="${P_VERSION}")
  endif()
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    OUTPUT_NAME ${name}
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(DEFINED MGMT_PLUGIN_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${MGMT_PLUGIN_OUTPUT_DIR})
  endif()
  if(NOT P_NO_INSTALL)
    install(TARGETS ${target} LIBRARY DESTINATION ${MGMT_PLUGIN_INSTALL_DIR})
  endif()
  set_property(GLOBAL APPEND PROPERTY MGMT_PLUGIN_TARGETS ${target})
endfunction()
