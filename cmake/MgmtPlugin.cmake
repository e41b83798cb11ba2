# mgmt_add_plugin(<name> SOURCES <src>...)
# Builds a plugin shared object named <name>.so in the plugin directory, with hidden
# visibility (only the mgmt_* entry points are exported) and linked to the framework.
function(mgmt_add_plugin name)
  cmake_parse_arguments(P "" "" "SOURCES;LIBRARIES" ${ARGN})
  set(target mgmt_plugin_${name})
  add_library(${target} MODULE ${P_SOURCES})
  target_link_libraries(${target} PRIVATE mgmt::framework mgmt_warnings ${P_LIBRARIES})
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    OUTPUT_NAME ${name}
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY ${MGMT_PLUGIN_OUTPUT_DIR})
  install(TARGETS ${target} LIBRARY DESTINATION ${MGMT_PLUGIN_INSTALL_DIR})
  set_property(GLOBAL APPEND PROPERTY MGMT_PLUGIN_TARGETS ${target})
endfunction()
