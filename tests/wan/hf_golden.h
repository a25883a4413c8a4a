// Parity of an `st-host forward` component with a golden made by the transformers source itself
// (tests/golden/hf_*: config.json + model.safetensors of the upstream class, inputs, outputs, case.json).
// Runs the real st-host binary with the plugin under test, then compares every requested output with
// the MANIFEST rule |st - ref| <= atol + rtol * |ref| (integer tensors exactly).
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "golden_compare.h"
#include "st/safetensors.h"

namespace st::plugins::wan::test {

/// `st-host forward --plugin PLUGIN --model GOLDEN_DIR --component COMPONENT` on `inputs` (written to
/// a scratch file) -> the output tensors. Fails the test (and returns {}) when st-host fails.
inline st::sdk::TensorMap host_forward(const std::string& plugin, const std::filesystem::path& model,
                                       const std::string& component, const st::sdk::TensorMap& inputs,
                                       const std::string& tag) {
    namespace fs = std::filesystem;
    const fs::path dir =
        fs::path(ST_TEST_BINARY_DIR) / "tmp-hf-golden" / (tag + "-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    st::sdk::save_safetensors(dir / "in.safetensors", inputs);
    const std::string cmd = std::string("ST_PLUGIN_PATH= ") + ST_HOST_EXE + " --plugin-dir " +
                            ST_TEST_PLUGIN_DIR + " forward --plugin " + plugin + " --model '" +
                            model.string() + "' --component " + component + " --inputs '" +
                            (dir / "in.safetensors").string() + "' --output '" +
                            (dir / "out.safetensors").string() + "' 2>&1";
    std::string log;
    FILE* p = popen(cmd.c_str(), "r");
    char buf[4096];
    while (p && fgets(buf, sizeof buf, p) != nullptr) log += buf;
    const int status = p ? pclose(p) : -1;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd << "\n" << log;
    st::sdk::TensorMap out;
    if (fs::exists(dir / "out.safetensors")) {
        auto src = st::sdk::SafetensorsFile::open(dir / "out.safetensors");
        for (const auto& i : src->infos()) out[i.name] = src->load(i.name);
    }
    fs::remove_all(dir);
    return out;
}

/// Every (ours, golden) name pair compared with the hf_* tolerance (1e-4 + 1e-4 |ref|).
inline void expect_hf_parity(const st::sdk::TensorMap& ours, const st::sdk::TensorMap& golden,
                             const std::map<std::string, std::string>& names) {
    for (const auto& [mine, ref] : names) {
        ASSERT_TRUE(ours.count(mine)) << "st-host forward gave no '" << mine << "'";
        ASSERT_TRUE(golden.count(ref)) << "golden has no '" << ref << "'";
        if (!at::isFloatingType(golden.at(ref).scalar_type())) {
            EXPECT_TRUE(at::equal(ours.at(mine).to(at::kLong), golden.at(ref).to(at::kLong))) << mine;
            continue;
        }
        EXPECT_TRUE(close_to(ours.at(mine), golden.at(ref), mine + " vs " + ref, 1e-4, 1e-4));
    }
}

}  // namespace st::plugins::wan::test
