# In-tree only (not installed): st_add_family_plugin(<family> GLOB <pattern> LINK <core library>
#   PCH <header> [PCH_REUSE_FROM <target>])
# A model family's plugin whose implementation (every plugin/<pattern> file; plugin/plugin.cpp is the
# exporting entry) is compiled once, as the object library st_<family>_plugin_impl with the plugin's
# flags (PIC, hidden visibility): the plugin st_plugin_<family> and the family's tests/*/test_plugin*
# link the same objects. The precompiled header is reused from PCH_REUSE_FROM when that target exists.
function(st_add_family_plugin family)
  cmake_parse_arguments(ARG "" "GLOB;LINK;PCH;PCH_REUSE_FROM" "" ${ARGN})
  file(GLOB impl CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/plugin/${ARG_GLOB})
  if(NOT impl)
    return()
  endif()
  set(objects st_${family}_plugin_impl)
  add_library(${objects} OBJECT ${impl})
  target_include_directories(${objects} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/plugin)
  target_link_libraries(${objects} PUBLIC st::sdk ${ARG_LINK})
  set_target_properties(${objects} PROPERTIES
    POSITION_INDEPENDENT_CODE ON CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON DEFINE_SYMBOL ""
    CXX_STANDARD 20 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF)
  if(ARG_PCH_REUSE_FROM AND TARGET ${ARG_PCH_REUSE_FROM})
    target_precompile_headers(${objects} REUSE_FROM ${ARG_PCH_REUSE_FROM})
  else()
    target_precompile_headers(${objects} PRIVATE ${ARG_PCH})
  endif()
  st_add_plugin(${family} SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/plugin/plugin.cpp $<TARGET_OBJECTS:${objects}>
                LINK ${ARG_LINK} PCH_REUSE_FROM ${objects})
  target_include_directories(st_plugin_${family} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/plugin)
endfunction()
