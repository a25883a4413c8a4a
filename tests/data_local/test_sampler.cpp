// BucketSampler: one bucket per batch, cycling, repeats, probability choice, exact resume.
#include "sampler.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "st/error.h"

namespace dl = st::plugins::data_local;

namespace {
dl::SamplerDataset make(const std::string& id, double p, std::vector<int> sizes, int64_t base,
                        int repeats = 0) {
    dl::SamplerDataset d;
    d.id = id;
    d.probability = p;
    d.repeats = repeats;
    for (size_t b = 0; b < sizes.size(); ++b) {
        d.bucket_keys.push_back("b" + std::to_string(b));
        std::vector<int64_t> m;
        for (int i = 0; i < sizes[b]; ++i) m.push_back(base + static_cast<int64_t>(b) * 100 + i);
        d.bucket_members.push_back(m);
    }
    return d;
}
}  // namespace

TEST(DataSamplerTest, BatchesComeFromOneBucketAndCoverEverySampleOncePerPass) {
    dl::BucketSampler s({make("a", 1.0, {5, 3}, 0, 1)}, 7);
    EXPECT_EQ(s.batches_per_epoch(2), 5 + 3);  // ceil(10/2) + ceil(6/2)
    s.start_epoch(0);
    std::map<int64_t, int> seen;
    int batches = 0;
    std::string last;
    while (auto p = s.next(2)) {
        ++batches;
        ASSERT_EQ(p->samples.size(), 2u);
        for (int64_t i : p->samples) EXPECT_EQ(i / 100, p->bucket == "b0" ? 0 : 1);
        for (int64_t i : p->samples) ++seen[i];
        if (batches <= 6) EXPECT_NE(p->bucket, last);  // buckets alternate while both have samples
        last = p->bucket;
    }
    EXPECT_EQ(batches, s.batches_per_epoch(2));
    for (const auto& [i, n] : seen) EXPECT_GE(n, 2) << i;  // repeats 1 -> two passes each
}

TEST(DataSamplerTest, ProbabilityWeightsDatasetChoiceAndZeroIsNeverSampled) {
    dl::BucketSampler s({make("a", 3.0, {400}, 0), make("b", 1.0, {400}, 1000), make("c", 0.0, {50}, 5000)},
                        1);
    s.start_epoch(0);
    int a = 0, b = 0;
    for (int k = 0; k < 200; ++k) {
        auto p = s.next(1);
        ASSERT_TRUE(p);
        ASSERT_NE(p->dataset, 2u);
        (p->dataset == 0 ? a : b)++;
    }
    EXPECT_NEAR(static_cast<double>(a) / (a + b), 0.75, 0.08);
}

TEST(DataSamplerTest, StateRestoreIsExactAndSeedDeterministic) {
    auto build = [] { return dl::BucketSampler({make("a", 1.0, {7, 4}, 0), make("b", 2.0, {6}, 1000)}, 99); };
    dl::BucketSampler x = build();
    x.start_epoch(2);
    for (int k = 0; k < 3; ++k) x.next(3);
    const auto state = x.state();
    std::vector<std::vector<int64_t>> rest;
    while (auto p = x.next(3)) rest.push_back(p->samples);
    dl::BucketSampler y = build();
    y.restore(state);
    std::vector<std::vector<int64_t>> again;
    while (auto p = y.next(3)) again.push_back(p->samples);
    EXPECT_EQ(again, rest);
    dl::BucketSampler other({make("a", 1.0, {8, 4}, 0), make("b", 2.0, {6}, 1000)}, 99);
    EXPECT_THROW(other.restore(state), st::Error);  // datasets changed since the checkpoint
}
