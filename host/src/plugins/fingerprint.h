// Comparing build fingerprints (st/version.h ST_BUILD_FINGERPRINT): what must match between the host
// and a plugin for C++ objects to cross the boundary safely, and what may differ.
#pragma once

#include <string>

namespace st::host {

/// "" when a plugin built with fingerprint `plugin` can run in a host built with `host`; otherwise
/// one sentence naming the first field that differs and both values. Compared fields: compiler
/// family and major version (the minor and patch level may differ: GCC and Clang keep their C++ ABI
/// within a major version), and every other field exactly (C++ standard, libstdc++ ABI, LibTorch
/// version, CUDA on/off, nlohmann-json, toml++ and fmt versions).
std::string fingerprint_difference(const std::string& plugin, const std::string& host);

}  // namespace st::host
