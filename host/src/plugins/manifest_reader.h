// Reads a plugin's manifest straight from its ELF file, without loading it: no plugin code (not
// even a static constructor) runs before the host has checked versions and fingerprint.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace st::host {

struct ManifestInfo {
    uint32_t struct_size = 0;
    uint32_t abi_major = 0;
    uint32_t abi_minor = 0;
    std::string fingerprint;
    std::string plugin_name;
    std::string plugin_version;
    std::vector<std::string> components;
};

struct ManifestRead {
    bool is_shared_library = false;  ///< ELF, 64-bit, ET_DYN
    bool has_manifest = false;       ///< section .st_manifest present and sane
    bool has_entry = false;          ///< dynamic symbol st_plugin_entry_v1 defined
    std::string problem;             ///< why not, when any of the above is false
    ManifestInfo manifest;
};

/// Never throws for bad files: problems are reported in `problem`.
ManifestRead read_manifest(const std::filesystem::path& path);

}  // namespace st::host
