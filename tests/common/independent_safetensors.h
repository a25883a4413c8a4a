// The independent safetensors reader (tests/sdk/read_safetensors.py: Python standard library only,
// sharing no code with sdk/src/safetensors.cpp) run on a file we wrote: its JSON summary (metadata,
// and per tensor dtype, shape and every value). Throws when the reader refuses the file.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace st_test {

/// `mode`: read_safetensors.py's mode ("read": every tensor summarised).
inline nlohmann::json read_safetensors_independently(const std::filesystem::path& file,
                                                     const std::string& mode = "read") {
    const std::string cmd = "/usr/bin/python3 '" + std::string(ST_TEST_SOURCE_DIR) +
                            "/tests/sdk/read_safetensors.py' " + mode + " '" + file.string() + "'";
    FILE* pipe = ::popen(cmd.c_str(), "r");
    if (pipe == nullptr) throw std::runtime_error("popen failed: " + cmd);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
    const int status = ::pclose(pipe);
    if (status != 0) throw std::runtime_error("'" + cmd + "' failed with status " + std::to_string(status));
    return nlohmann::json::parse(out);
}

}  // namespace st_test
