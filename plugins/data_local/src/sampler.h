// The bucket sampler: every batch comes from one bucket of one dataset. Per dataset, buckets are
// cycled in order (SimpleTuner multiaspect/sampler.py): each batch takes the next unseen samples of
// the current bucket (shuffled per epoch, `repeats` extra passes), tops a short bucket up with
// already-seen samples of the same bucket, then moves to the next bucket; a dataset is exhausted
// when all its buckets are. Each step picks a dataset by `probability` with the run's seeded
// generator (dataloader_iterator.py's multinomial draw). state()/restore() are exact.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace st::plugins::data_local {

struct SamplerDataset {
    std::string id;
    double probability = 1.0;
    int repeats = 0;
    std::vector<std::string> bucket_keys;              ///< sorted
    std::vector<std::vector<int64_t>> bucket_members;  ///< sample indices per bucket
};

struct SamplerPick {
    size_t dataset = 0;
    std::string bucket;
    std::vector<int64_t> samples;
};

class BucketSampler {
  public:
    BucketSampler() = default;
    BucketSampler(std::vector<SamplerDataset> datasets, uint64_t seed);

    /// Batches one epoch yields: per sampled dataset and bucket ceil(members * (1 + repeats) / b).
    int64_t batches_per_epoch(int64_t batch_size) const;
    void start_epoch(int64_t epoch);
    std::optional<SamplerPick> next(int64_t batch_size);
    /// Uniform random index in [0, n) from the sampler's generator (caption variant choice).
    size_t draw(size_t n);

    nlohmann::json state() const;
    void restore(const nlohmann::json& state);
    int64_t epoch() const { return epoch_; }

  private:
    struct Cursor {
        size_t bucket = 0;
        std::vector<std::vector<int64_t>> order;  ///< per bucket, this epoch's shuffled passes
        std::vector<size_t> pos;
        bool exhausted = false;
    };
    void build_orders();
    std::string compute_layout_hash() const;

    std::vector<SamplerDataset> datasets_;
    /// Hash of the datasets' buckets and members, fixed at construction. state() is taken after
    /// every training step: hashing every member each time would cost O(samples) per step.
    std::string layout_hash_;
    std::vector<Cursor> cursors_;
    uint64_t seed_ = 0;
    int64_t epoch_ = -1;
    std::mt19937_64 rng_;
};

}  // namespace st::plugins::data_local
