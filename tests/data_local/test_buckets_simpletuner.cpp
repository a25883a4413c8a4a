// Bucket sizes as SimpleTuner computes them (#23): a table of (source size, resolution, type,
// aspect_bucket_alignment) -> bucket made by SimpleTuner's own functions (tests/golden/buckets/,
// see its PROVENANCE.md) is reproduced by plan_resize, e.g. 480 pixel_area on a 16:9 clip is 640x352
// and on a 4:3 clip 544x416 at Wan's alignment 32.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "geometry.h"

namespace dl = st::plugins::data_local;

TEST(SimpleTunerBucketsTest, TargetSizesMatchSimpleTunersTable) {
    std::ifstream in(std::string(ST_TEST_SOURCE_DIR) + "/tests/golden/buckets/simpletuner_buckets.json");
    ASSERT_TRUE(in.good());
    const auto table = nlohmann::json::parse(in);
    int checked = 0, wrong = 0;
    for (const auto& row : table["rows"]) {
        dl::DatasetConfig ds;
        ds.resolution = row["resolution"].get<double>();
        ds.resolution_type = row["resolution_type"].get<std::string>();
        const dl::Size source{row["source"][0].get<int>(), row["source"][1].get<int>()};
        const auto plan = dl::plan_resize(source, ds, 2, row["alignment"].get<int>(), 0.5, 0.5);
        const int w = row["target"][0].get<int>(), h = row["target"][1].get<int>();
        ++checked;
        if (plan.target.w != w || plan.target.h != h) {
            ++wrong;
            ADD_FAILURE() << row.dump() << ": st gives " << plan.target.w << "x" << plan.target.h;
        }
    }
    EXPECT_EQ(checked, 240);
    EXPECT_EQ(wrong, 0);
}
