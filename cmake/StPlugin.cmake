# st_add_plugin(<name> SOURCES <src>... [LINK <targets>...] [PCH <header>... | PCH_REUSE_FROM <plugin target>])
#
# Builds a plugin: a shared library named st-<name>.so with hidden visibility (only the manifest
# and the entry point are exported), linked against st::sdk, placed in the plugin directory of the
# build tree and installed into <prefix>/lib/st/plugins. In-tree plugins and third-party plugins
# (through find_package(st_sdk)) use this same function.
function(st_add_plugin name)
  cmake_parse_arguments(ARG "" "PCH_REUSE_FROM" "SOURCES;LINK;PCH" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "st_add_plugin(${name}): SOURCES is required")
  endif()
  set(target st_plugin_${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE st::sdk ${ARG_LINK})
  set_target_properties(${target} PROPERTIES
    PREFIX "" OUTPUT_NAME "st-${name}" SUFFIX ".so"
    CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON
    # No -D<target>_EXPORTS (unused): plugins can then share one precompiled header (PCH_REUSE_FROM).
    DEFINE_SYMBOL ""
    CXX_STANDARD 20 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF
    # Installed plugins live in <prefix>/lib/st/plugins; libraries they link in <prefix>/lib.
    INSTALL_RPATH "$ORIGIN/../..")
  if(DEFINED ST_PLUGIN_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ST_PLUGIN_OUTPUT_DIR})
  endif()
  if(ARG_PCH_REUSE_FROM)
    # Another plugin's precompiled header (same flags: MODULE, hidden visibility) instead of a copy.
    target_precompile_headers(${target} REUSE_FROM ${ARG_PCH_REUSE_FROM})
  elseif(ARG_PCH)
    target_precompile_headers(${target} PRIVATE ${ARG_PCH})
  endif()
  if(DEFINED ST_PLUGIN_INSTALL_DIR)
    install(TARGETS ${target} LIBRARY DESTINATION ${ST_PLUGIN_INSTALL_DIR})
  endif()
endfunction()
