// The plugin handshake: the manifest every plugin exports and the one entry point.
//
// A plugin is a shared library that contains exactly one `ST_PLUGIN(...)` line (in its plugin.cpp)
// and defines `ST_PLUGIN_ENTRY(registrar) { ... }`.
//
// How the host uses it:
//   1. It reads the manifest *from the file* (ELF section `.st_manifest`), without loading the
//      library, so no plugin code (not even static constructors) runs before the checks.
//   2. It checks magic, struct size, ABI major/minor, fingerprint, that the entry symbol exists, and
//      that no component id is already provided by another plugin file.
//   3. Only then it loads the library and calls the entry point once with a `Registrar`; the plugin
//      registers one factory per component listed in its manifest (and no others).
//
// The manifest is plain constant data (no pointers, so no relocations): what is in the file is
// exactly what the host reads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "st/version.h"

#define ST_PLUGIN_EXPORT __attribute__((visibility("default")))

#define ST_MANIFEST_MAGIC 0x4D505453u  // "STPM" little-endian
#define ST_MANIFEST_FINGERPRINT_LEN 256
#define ST_MANIFEST_NAME_LEN 64
#define ST_MANIFEST_VERSION_LEN 32
#define ST_MANIFEST_MAX_COMPONENTS 64
#define ST_MANIFEST_COMPONENT_LEN 64
#define ST_MANIFEST_SECTION ".st_manifest"
#define ST_MANIFEST_SYMBOL "st_plugin_manifest_v1"
#define ST_ENTRY_SYMBOL "st_plugin_entry_v1"

extern "C" {
/// Version 1 of the manifest layout. Later minors may append fields; `struct_size` tells the host
/// how much the plugin wrote. Strings are NUL-terminated within their arrays.
struct st_plugin_manifest {
    uint32_t magic;        ///< ST_MANIFEST_MAGIC
    uint32_t struct_size;  ///< sizeof(st_plugin_manifest) as the plugin saw it
    uint32_t abi_major;    ///< ST_SDK_ABI_MAJOR the plugin was built with
    uint32_t abi_minor;    ///< ST_SDK_ABI_MINOR the plugin was built with
    char fingerprint[ST_MANIFEST_FINGERPRINT_LEN];
    char plugin_name[ST_MANIFEST_NAME_LEN];
    char plugin_version[ST_MANIFEST_VERSION_LEN];
    uint32_t component_count;
    char components[ST_MANIFEST_MAX_COMPONENTS][ST_MANIFEST_COMPONENT_LEN];  ///< "kind.name@N"
};
}

namespace st::sdk {
class Registrar;
namespace detail {
template <typename... T>
constexpr uint32_t count_args(T&&...) {
    return static_cast<uint32_t>(sizeof...(T));
}
}  // namespace detail
}  // namespace st::sdk

/// Declares the plugin: name, version string and every component id it registers.
///   ST_PLUGIN("optim", "1.0.0", "optim.adamw@1", "lr.cosine@1")
#define ST_PLUGIN(name, version, ...)                                                             \
    extern "C" ST_PLUGIN_EXPORT __attribute__((section(ST_MANIFEST_SECTION), used))               \
    const st_plugin_manifest st_plugin_manifest_v1 = {ST_MANIFEST_MAGIC,                          \
                                                      sizeof(st_plugin_manifest),                 \
                                                      ST_SDK_ABI_MAJOR,                           \
                                                      ST_SDK_ABI_MINOR,                           \
                                                      ST_BUILD_FINGERPRINT,                       \
                                                      name,                                       \
                                                      version,                                    \
                                                      ::st::sdk::detail::count_args(__VA_ARGS__), \
                                                      {__VA_ARGS__}};

/// Defines the entry point. Called once by the host after the manifest checks passed, on the main
/// thread, before any component is created. May throw (the host reports it with the plugin name
/// and refuses the plugin).
#define ST_PLUGIN_ENTRY(registrar_var) \
    extern "C" ST_PLUGIN_EXPORT void st_plugin_entry_v1(::st::sdk::Registrar& registrar_var)

extern "C" {
using st_plugin_entry_fn = void(st::sdk::Registrar&);
}
