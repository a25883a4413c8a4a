// MetricsWriter in process: a resumed run drops the lines of steps it trains again, and a file whose
// last line lost its newline gets one before the next line, so no two lines are glued together.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "st/files.h"
#include "train/metrics.h"

namespace {

namespace fs = std::filesystem;
using st::host::train::MetricsWriter;

fs::path scratch(const std::string& name) {
    const fs::path d =
        fs::temp_directory_path() / ("st_test_metrics_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

std::vector<nlohmann::json> lines_of(const fs::path& p) {
    std::vector<nlohmann::json> out;
    std::istringstream in(st::sdk::read_file(p));
    std::string line;
    while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));  // throws on glued lines
    return out;
}

TEST(MetricsTest, ALastLineWithoutItsNewlineIsNotGluedToTheNext) {
    const fs::path dir = scratch("newline");
    const fs::path p = dir / "metrics.jsonl";
    std::ofstream(p) << "{\"step\":1}\n{\"step\":2}";  // the newline of step 2 never reached the disk
    {
        MetricsWriter w(p, 2);
        w.write({{"step", 3}});
    }
    const auto lines = lines_of(p);
    ASSERT_EQ(lines.size(), 3u) << st::sdk::read_file(p);
    EXPECT_EQ(lines[1]["step"], 2);
    EXPECT_EQ(lines[2]["step"], 3);
    // A file that ends properly gets no empty line.
    {
        MetricsWriter w(p, 3);
        w.write({{"step", 4}});
    }
    EXPECT_EQ(lines_of(p).size(), 4u) << st::sdk::read_file(p);
    fs::remove_all(dir);
}

TEST(MetricsTest, ResumingDropsTheLinesOfStepsTrainedAgain) {
    const fs::path dir = scratch("resume");
    const fs::path p = dir / "metrics.jsonl";
    std::ofstream(p) << "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n{\"step\":4,\"lo";  // cut by a crash
    {
        MetricsWriter w(p, 2);
        w.write({{"step", 3}, {"again", true}});
    }
    const auto lines = lines_of(p);
    ASSERT_EQ(lines.size(), 3u) << st::sdk::read_file(p);
    EXPECT_TRUE(lines[2].value("again", false));
    fs::remove_all(dir);
}

}  // namespace
