// Bucket sizes as SimpleTuner computes them (#23): a table of (source size, resolution, type,
// aspect_bucket_alignment) -> bucket made by SimpleTuner's own functions (tests/golden/buckets/,
// see its PROVENANCE.md) is reproduced by plan_resize, e.g. 480 pixel_area on a 16:9 clip is 640x352
// and on a 4:3 clip 544x416 at Wan's alignment 32; SimpleTuner's per-aspect memo of sizes included.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>

#include "aspect_map.h"
#include "geometry.h"

namespace dl = st::plugins::data_local;

TEST(SimpleTunerBucketsTest, TargetSizesMatchSimpleTunersTable) {
    std::ifstream in(std::string(ST_TEST_SOURCE_DIR) + "/tests/golden/buckets/simpletuner_buckets.json");
    ASSERT_TRUE(in.good());
    const auto table = nlohmann::json::parse(in);
    int checked = 0, wrong = 0, memoised = 0;
    // One dataset per (resolution, type, alignment) group, files in the table's order, as generated.
    std::unique_ptr<dl::AspectResolutionMaps> memo;
    nlohmann::json group;
    for (const auto& row : table["rows"]) {
        const nlohmann::json g = {row["resolution"], row["resolution_type"], row["alignment"]};
        if (g != group) memo = std::make_unique<dl::AspectResolutionMaps>();
        group = g;
        dl::DatasetConfig ds;
        ds.resolution = row["resolution"].get<double>();
        ds.resolution_type = row["resolution_type"].get<std::string>();
        const dl::Size source{row["source"][0].get<int>(), row["source"][1].get<int>()};
        const int alignment = row["alignment"].get<int>();
        const auto plan = dl::plan_resize(source, ds, 2, alignment, 0.5, 0.5, memo.get());
        const int w = row["target"][0].get<int>(), h = row["target"][1].get<int>();
        ++checked;
        memoised += plan.target == plan.computed ? 0 : 1;
        if (plan.target.w != w || plan.target.h != h) {
            ++wrong;
            ADD_FAILURE() << row.dump() << ": st gives " << plan.target.w << "x" << plan.target.h;
        }
    }
    EXPECT_EQ(checked, 312);
    EXPECT_EQ(memoised, 15) << "rows where the memo decides";
    EXPECT_EQ(wrong, 0);
}

// The memo lives in output_dir/aspect_resolution_map-<megapixels>.json as SimpleTuner keeps it: read
// back by the next run (a size SimpleTuner memoised wins over the computed one), extended with new
// aspects, and a file st cannot read is left as it is.
TEST(SimpleTunerBucketsTest, TheMemoIsSimpleTunersFileInTheOutputDir) {
    const auto dir = std::filesystem::temp_directory_path() / ("st_aspect_map_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const auto file = dir / "aspect_resolution_map-0.2304.json";
    std::ofstream(file) << R"({"1.82": [672, 352]})";
    dl::DatasetConfig ds;
    ds.resolution = 480;
    ds.resolution_type = "pixel_area";
    {
        dl::AspectResolutionMaps memo(dir);
        EXPECT_EQ(memo.file_for(0.2304), file);
        // 16:9 computes 640x352 (aspect 1.82); SimpleTuner's earlier run memoised 672x352 for it.
        EXPECT_EQ(dl::plan_resize({1920, 1080}, ds, 2, 32, 0.5, 0.5, &memo).target, (dl::Size{672, 352}));
        EXPECT_EQ(dl::plan_resize({640, 480}, ds, 2, 32, 0.5, 0.5, &memo).target, (dl::Size{544, 416}));
        // A square source at aspect 1.0 never consults the memo (SimpleTuner returns before it).
        EXPECT_EQ(dl::plan_resize({512, 512}, ds, 2, 32, 0.5, 0.5, &memo).target, (dl::Size{480, 480}));
        ASSERT_EQ(memo.save(), std::vector<std::filesystem::path>{file});
    }
    const auto saved = nlohmann::json::parse(std::ifstream(file));
    EXPECT_EQ(saved, nlohmann::json::parse(R"({"1.82": [672, 352], "1.31": [544, 416]})"));
    EXPECT_EQ(dl::python_float_str(1.0), "1.0");
    EXPECT_EQ(dl::python_float_str(0.2304), "0.2304");
    EXPECT_EQ(dl::python_float_str(1.048576), "1.048576");
    // A damaged file: ignored, and never overwritten.
    std::ofstream(file) << R"({"1.82": "wide"})";
    {
        dl::AspectResolutionMaps memo(dir);
        EXPECT_EQ(dl::plan_resize({1920, 1080}, ds, 2, 32, 0.5, 0.5, &memo).target, (dl::Size{640, 352}));
        EXPECT_TRUE(memo.save().empty());
    }
    std::ifstream in(file);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), R"({"1.82": "wide"})");
    std::filesystem::remove_all(dir);
}
