# cmake --install: headers, libst_sdk, st-host, the plugins, and the CMake package `st_sdk` that
# gives third parties st::sdk and st_add_plugin().
include(CMakePackageConfigHelpers)
install(DIRECTORY sdk/include/st DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS st_sdk EXPORT st_sdkTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS st-host RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(EXPORT st_sdkTargets NAMESPACE st:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/st_sdk)
configure_package_config_file(cmake/st_sdkConfig.cmake.in
  ${CMAKE_BINARY_DIR}/st_sdkConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/st_sdk)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/st_sdkConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_BINARY_DIR}/st_sdkConfig.cmake ${CMAKE_BINARY_DIR}/st_sdkConfigVersion.cmake
  cmake/StDependencies.cmake cmake/StPlugin.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/st_sdk)
