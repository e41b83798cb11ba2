# Debian packages, built with `cpack -G DEB` in a release build tree (packaging/package-test.sh):
#
#   mgmtd      the server and the CLI, libmgmt.so.0, the stock plugins (/usr/lib/mgmtd/plugins),
#              /etc/mgmtd/mgmt.yaml (a conffile), the systemd unit, man pages, bash completion
#   mgmtd-dev  the plugin SDK: headers, the libmgmt.so link, the CMake package, the examples
#
# Included at the end of the top-level CMakeLists.txt. Every packaged file is declared here,
# in the components `server` and `dev`, with EXCLUDE_FROM_ALL: a plain `cmake --install`
# (the SDK install the tests do) is unchanged and never writes to /etc.
# Keep this list in step with the install() rules of the tree when something is added.

set(MGMT_PKG_DIR ${PROJECT_SOURCE_DIR}/packaging)

# --- server ------------------------------------------------------------------------------
install(TARGETS mgmtd mgmtctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  COMPONENT server EXCLUDE_FROM_ALL)
install(TARGETS mgmt LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  COMPONENT server NAMELINK_COMPONENT dev EXCLUDE_FROM_ALL)
get_property(_mgmt_pkg_plugins GLOBAL PROPERTY MGMT_PLUGIN_TARGETS)
install(TARGETS ${_mgmt_pkg_plugins} LIBRARY DESTINATION ${MGMT_PLUGIN_INSTALL_DIR}
  COMPONENT server EXCLUDE_FROM_ALL)
# The process backend's spawn helper, beside the plugins' folder (where the backend looks).
get_filename_component(_mgmt_pkg_spawn_dir ${MGMT_PLUGIN_INSTALL_DIR} DIRECTORY)
install(TARGETS mgmtd-spawn RUNTIME DESTINATION ${_mgmt_pkg_spawn_dir}
  COMPONENT server EXCLUDE_FROM_ALL)
install(FILES ${MGMT_PKG_DIR}/debian/mgmt.yaml DESTINATION /etc/mgmtd
  COMPONENT server EXCLUDE_FROM_ALL)
install(FILES ${MGMT_PKG_DIR}/systemd/mgmtd.service ${MGMT_PKG_DIR}/systemd/mgmtd.socket
  DESTINATION lib/systemd/system
  COMPONENT server EXCLUDE_FROM_ALL)
install(FILES ${MGMT_PKG_DIR}/completion/mgmtctl
  DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/bash-completion/completions
  COMPONENT server EXCLUDE_FROM_ALL)
install(FILES ${MGMT_PKG_DIR}/debian/copyright DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/mgmtd
  COMPONENT server EXCLUDE_FROM_ALL)

# Man pages, compressed as Debian ships them (gzip -n: reproducible).
set(_mgmt_man_out ${CMAKE_BINARY_DIR}/man)
set(_mgmt_man_files)
foreach(page mgmtd.8 mgmtctl.1)
  string(REGEX REPLACE ".*\\.([0-9])$" "\\1" section ${page})
  add_custom_command(OUTPUT ${_mgmt_man_out}/${page}.gz
    COMMAND ${CMAKE_COMMAND} -E make_directory ${_mgmt_man_out}
    COMMAND gzip -9n -c ${MGMT_PKG_DIR}/man/${page} > ${_mgmt_man_out}/${page}.gz
    DEPENDS ${MGMT_PKG_DIR}/man/${page}
    COMMENT "Compressing man page ${page}" VERBATIM)
  install(FILES ${_mgmt_man_out}/${page}.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section}
    COMPONENT server EXCLUDE_FROM_ALL)
  list(APPEND _mgmt_man_files ${_mgmt_man_out}/${page}.gz)
endforeach()
add_custom_target(mgmt_man_pages ALL DEPENDS ${_mgmt_man_files})

# --- dev -----------------------------------------------------------------------------------
install(DIRECTORY ${PROJECT_SOURCE_DIR}/framework/include/mgmt DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  COMPONENT dev EXCLUDE_FROM_ALL FILES_MATCHING PATTERN "*.hpp")
install(FILES
  ${CMAKE_BINARY_DIR}/cmake/mgmtConfig.cmake
  ${CMAKE_BINARY_DIR}/cmake/mgmtConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/MgmtPlugin.cmake
  DESTINATION ${MGMT_CMAKE_INSTALL_DIR} COMPONENT dev EXCLUDE_FROM_ALL)
install(EXPORT mgmtTargets NAMESPACE mgmt:: FILE mgmtTargets.cmake
  DESTINATION ${MGMT_CMAKE_INSTALL_DIR} COMPONENT dev EXCLUDE_FROM_ALL)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/examples/hello-command ${PROJECT_SOURCE_DIR}/examples/pidfile-backend
  DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/mgmtd-dev/examples COMPONENT dev EXCLUDE_FROM_ALL)
install(FILES ${MGMT_PKG_DIR}/debian/copyright DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/mgmtd-dev
  COMPONENT dev EXCLUDE_FROM_ALL)

# --- CPack ---------------------------------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME mgmtd)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "mgmtd")
set(CPACK_PACKAGE_CONTACT "mgmtd maintainers <mgmtd@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/packages)
set(CPACK_COMPONENTS_ALL server dev)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://example.org/mgmtd")
# Run-time dependencies from the ELF files (dpkg-shlibdeps, in dpkg-dev); libmgmt.so.0 is
# the package's own.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${CMAKE_BINARY_DIR}/lib)

set(CPACK_DEBIAN_SERVER_PACKAGE_NAME mgmtd)
set(CPACK_DEBIAN_SERVER_PACKAGE_SECTION admin)
set(CPACK_COMPONENT_SERVER_DESCRIPTION
  "plugin-based management server for supervised processes\n"
  "mgmtd supervises processes (restart policies, dependencies, memory limits, log\n"
  "capture) and serves the cliwrap management protocol on a Unix socket. Every request\n"
  "is answered by a plugin; the stock plugins, the mgmtctl client, a systemd unit and\n"
  "Prometheus metrics are included.")
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_EXTRA
  ${MGMT_PKG_DIR}/debian/conffiles
  ${MGMT_PKG_DIR}/debian/postinst
  ${MGMT_PKG_DIR}/debian/prerm
  ${MGMT_PKG_DIR}/debian/postrm)
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_DEV_PACKAGE_NAME mgmtd-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_COMPONENT_DEV_DESCRIPTION
  "plugin SDK for mgmtd\n"
  "Headers, the CMake package (find_package(mgmt), mgmt_add_plugin) and examples for\n"
  "building mgmtd handler, command and backend plugins out of tree.")
set(CPACK_COMPONENT_DEV_DEPENDS server)  # mgmtd-dev depends on mgmtd of the same version
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libyaml-cpp-dev, libspdlog-dev, cmake (>= 3.22), g++")
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)

include(CPack)
