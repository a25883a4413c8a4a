// Every seed (tests/fuzz/corpus/<target>) and every input a fuzzer once crashed on
// (tests/fuzz/regressions/<target>), run through its fuzz target in the ordinary build: each must be
// accepted or refused with st::Error. scripts/fuzz.sh replays the same files under ASan and UBSan.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"

namespace fs = std::filesystem;

namespace {

struct Case {
    const char* name;
    st::fuzz::Target target;
};

std::vector<fs::path> inputs(const std::string& kind, const std::string& target) {
    std::vector<fs::path> out;
    const fs::path dir = fs::path(ST_FUZZ_INPUT_DIR) / kind / target;
    if (!fs::is_directory(dir)) return out;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.is_regular_file()) out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
}

std::string read_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

class FuzzRegressionTest : public ::testing::TestWithParam<Case> {};

TEST_P(FuzzRegressionTest, EverySeedAndRegressionIsAcceptedOrRefusedWithStError) {
    const Case& c = GetParam();
    const auto seeds = inputs("corpus", c.name);
    EXPECT_FALSE(seeds.empty()) << "no seed inputs in tests/fuzz/corpus/" << c.name;
    auto all = seeds;
    for (const auto& p : inputs("regressions", c.name)) all.push_back(p);
    for (const auto& path : all) {
        const std::string problem = st::fuzz::run_checked(c.target, read_bytes(path));
        EXPECT_EQ(problem, "") << path.string();
    }
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzRegressionTest,
                         ::testing::Values(Case{"safetensors", &st::fuzz::safetensors_header},
                                           Case{"config", &st::fuzz::config_file},
                                           Case{"dataset", &st::fuzz::dataset_config},
                                           Case{"checkpoint", &st::fuzz::checkpoint_manifest},
                                           Case{"lora", &st::fuzz::lora_keys}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
