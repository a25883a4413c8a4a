// Helpers shared by the Wan-family unit tests (tests/wan, tests/wan_s2v): a per-process scratch
// folder removed after the last test, the message of an expected st::Error, and every tensor of a
// safetensors file.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include "st/error.h"
#include "st/safetensors.h"

namespace st::plugins::wan::test {

/// `<tmp>/st_test_<suite>_<pid>`: everything a test program writes goes below it.
inline std::filesystem::path scratch_root(const std::string& suite) {
    return std::filesystem::temp_directory_path() / ("st_test_" + suite + "_" + std::to_string(::getpid()));
}

/// `scratch_root(suite)/name`, created empty.
inline std::filesystem::path scratch_dir(const std::string& suite, const std::string& name) {
    const std::filesystem::path dir = scratch_root(suite) / name;
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir;
}

/// Removes scratch_root(suite) after the last test: register it once per test program with
/// ::testing::AddGlobalTestEnvironment(new ScratchCleanup("suite")).
class ScratchCleanup : public ::testing::Environment {
  public:
    explicit ScratchCleanup(std::string suite) : suite_(std::move(suite)) {}
    void TearDown() override {
        std::error_code ec;
        std::filesystem::remove_all(scratch_root(suite_), ec);
    }

  private:
    std::string suite_;
};

/// The message of the st::Error `fn` throws, or a marker text when it throws none.
inline std::string error_text(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const st::Error& e) {
        return e.what();
    }
    return "<no st::Error thrown>";
}

/// Every tensor of one safetensors file, in its stored dtype.
inline st::sdk::TensorMap load_all(const std::filesystem::path& file) {
    auto src = st::sdk::SafetensorsFile::open(file);
    st::sdk::TensorMap out;
    for (const auto& info : src->infos()) out.emplace(info.name, src->load(info.name));
    return out;
}

}  // namespace st::plugins::wan::test
