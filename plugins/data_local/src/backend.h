// LocalDataBackend: data.local@1. Opens the `local` entries of a multidatabackend.json, discovers
// and buckets media, caches VAE latents / text embeddings / S2V audio features through the model's
// Encoders, and serves batches from one bucket at a time.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config.h"
#include "discovery.h"
#include "sampler.h"
#include "st/data_backend.h"
#include "st/sharded_caching.h"

namespace st::plugins::data_local {

/// Where each cached item of a sample lives and the key it must carry.
struct SampleCache {
    std::filesystem::path latent_file;
    std::string latent_key;
    std::filesystem::path audio_file;
    std::string audio_key;
    /// Wan 2.1 I2V `image_embeds` of a dataset linked to a conditioning_image_embeds dataset (keyed
    /// like the latents); empty: they stay in the latent file.
    std::filesystem::path image_embeds_file;
    /// The regularizers' per-sample features (one file per DataOpenRequest::sample_features entry,
    /// in `<cache_dir_vae>-<name>/`; keyed like the latents plus the encoder's identity).
    std::vector<std::pair<std::filesystem::path, std::string>> feature_files;
};

class LocalDataBackend final : public st::sdk::DataBackend, public st::sdk::ShardedCaching {
  public:
    /// Data parallel: encode only items k with k % count == index (samples by discovery order,
    /// unique captions in sorted order).
    void set_cache_shard(int64_t index, int64_t count) override {
        shard_index_ = index;
        shard_count_ = count;
    }
    void open(const st::sdk::DataOpenRequest& request) override;
    st::sdk::PrepareSummary prepare(st::sdk::Encoders* encoders) override;
    int64_t batches_per_epoch(int64_t batch_size) const override;
    void start_epoch(int64_t epoch) override;
    std::optional<st::sdk::Batch> next_batch(int64_t batch_size) override;
    nlohmann::json state() const override;
    void restore(const nlohmann::json& state) override;
    std::vector<st::sdk::Batch> eval_batches(int64_t max_samples, int64_t batch_size) override;

    // For tests and `st-host prepare`.
    const std::vector<DatasetConfig>& datasets() const { return datasets_; }
    const std::vector<Sample>& samples() const { return samples_; }
    const std::vector<SkipRecord>& skipped() const { return skipped_; }
    const RunDataSettings& settings() const { return run_; }
    std::filesystem::path text_cache_dir() const { return text_cache_dir_; }
    /// Cache file + key of a caption's text embedding.
    std::pair<std::filesystem::path, std::string> text_cache_entry(const std::string& caption) const;
    const SampleCache& sample_cache(size_t i) const { return caches_.at(i); }

  private:
    void plan_caches();
    void cache_latents(st::sdk::Encoders& enc);
    void cache_text(st::sdk::Encoders& enc);
    void cache_audio(st::sdk::Encoders& enc);
    /// The regularizers' features of every clip whose feature file is missing or stale.
    void cache_features();
    /// One clip decoded for an encoder: float [3, F, H, W] in [-1, 1], or why it could not be.
    struct DecodedClip {
        at::Tensor pixels;
        std::string error;
    };
    DecodedClip decode_clip(size_t index) const;
    /// decode_clip() of `n` samples on the thread pool.
    std::vector<DecodedClip> decode_clips(const size_t* indices, size_t n) const;
    void prune_buckets();
    void build_sampler();
    void drop_samples(const std::vector<bool>& drop);
    void maybe_delete(const SkipRecord& r);
    st::sdk::PrepareSummary summarize() const;
    /// Reads the caches of `indices` (one bucket) into a batch; `first_caption` takes caption
    /// variant 0 instead of a random one (evaluation).
    st::sdk::Batch load_batch(const std::vector<int64_t>& indices, const std::string& bucket,
                              bool first_caption);

    RunDataSettings run_;
    std::vector<DatasetConfig> datasets_;
    std::filesystem::path text_cache_dir_;
    std::vector<Sample> samples_;
    std::vector<SampleCache> caches_;
    std::vector<SkipRecord> skipped_;
    std::string identity_;
    std::vector<std::shared_ptr<st::sdk::SampleFeatureEncoder>> features_;
    int alignment_ = 16;
    int temporal_ = 4;
    int threads_ = 1;
    bool opened_ = false;
    bool cached_ = false;
    int64_t shard_index_ = 0;
    int64_t shard_count_ = 1;
    bool owns(size_t item) const {
        return shard_count_ <= 1 ||
               static_cast<int64_t>(item % static_cast<size_t>(shard_count_)) == shard_index_;
    }
    /// " (this rank's share: 1 of 2)" while caching is split, else "".
    std::string share_note() const;
    BucketSampler sampler_;
    std::vector<std::string> sampler_datasets_;
};

/// The run-config keys data.local@1 declares (SimpleTuner names and defaults).
std::vector<st::sdk::OptionSpec> data_local_options();

}  // namespace st::plugins::data_local
