// Data backend components (`data.<type>@N`, e.g. data.local@1): open the entries of a
// multidatabackend.json, discover and decode media, bucket them, cache latents/embeddings through
// the model's encoders, and hand the trainer batches from one bucket at a time.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "st/model.h"
#include "st/options.h"
#include "st/regularizer.h"
#include "st/tensors.h"

namespace st::sdk {

/// One training sample as the trainer sees it.
struct SampleRef {
    std::string dataset_id;
    std::string id;       ///< stable id within the dataset (relative path)
    std::string path;     ///< media file
    std::string caption;  ///< after caption strategy and dropout
    std::string bucket;   ///< bucket key, e.g. "640x352@33"
    /// Backend-specific details. Keys the host reads: "audio" = {"source": file, "start": seconds on
    /// its timeline, "zero": true when the sample has silence instead} for samples carrying audio
    /// (Encoders::sample_media); the host takes a validation reference's audio from it.
    nlohmann::json meta = nlohmann::json::object();
};

/// A batch: every sample from one bucket, so tensors stack.
struct Batch {
    std::vector<SampleRef> samples;
    /// "latents" [B,C,F,H,W] (normalized), "prompt_embeds" [B,L,D], optional conditioning tensors
    /// ("audio_features", "image_latents", ...). Names are the contract with the model family.
    TensorMap tensors;
};

struct DataOpenRequest {
    nlohmann::json entries;            ///< the multidatabackend.json entries of this backend type
    std::filesystem::path config_dir;  ///< directory of the dataset config (relative paths)
    std::filesystem::path output_dir;  ///< run output dir (for {output_dir} placeholders)
    std::string model_family;          ///< for {model_family} placeholders (a name, never a rule)
    /// Encoders::sample_media() of the run's model: media every training sample must carry besides
    /// video and caption (e.g. audio for speech-to-video).
    std::vector<MediaKind> model_media;
    ConfigView config;  ///< resolved run configuration
    uint64_t seed = 0;
    /// Per-sample features the run's regularizers want cached with every training clip (prepare()
    /// computes them from the same pixels the VAE encodes, batches carry them as "<name>.<tensor>").
    std::vector<std::shared_ptr<SampleFeatureEncoder>> sample_features;
};

/// Outcome of discovery + caching, printed by `st-host prepare` and at training start.
struct PrepareSummary {
    int64_t samples = 0;
    int64_t skipped = 0;
    nlohmann::json details = nlohmann::json::object();  ///< per bucket / per dataset / skip reasons
};

/// Calls come from the trainer thread. open() and prepare() may throw st::Error for configuration
/// problems; bad media never throws: it is skipped, logged once and counted.
class DataBackend {
  public:
    virtual ~DataBackend();
    virtual void open(const DataOpenRequest& request) = 0;
    /// Discovery, bucketing and caching through the model's encoders (and its capabilities, e.g.
    /// AudioConditioning for sample_media audio). `encoders` is null for runs without a model.
    virtual PrepareSummary prepare(Encoders* encoders) = 0;
    /// Number of batches one epoch yields with the given batch size.
    virtual int64_t batches_per_epoch(int64_t batch_size) const = 0;
    virtual void start_epoch(int64_t epoch) = 0;
    /// Next batch of `batch_size` samples from one bucket; nullopt at the end of the epoch.
    virtual std::optional<Batch> next_batch(int64_t batch_size) = 0;
    /// Position in the epoch (bucket order, seen samples, RNG) for exact resume.
    virtual nlohmann::json state() const = 0;
    virtual void restore(const nlohmann::json& state) = 0;

    /// The held-out evaluation set (SimpleTuner's `dataset_type: eval` entries), discovered and
    /// cached by prepare() like training data but never served by next_batch(). At most
    /// `max_samples` samples from each evaluation dataset (<= 0: all), one bucket per batch, `batch_size`
    /// samples per batch at most, in the same order on every call and every run. Called after prepare().
    /// Default: empty (no evaluation datasets; the trainer then evaluates on training samples).
    virtual std::vector<Batch> eval_batches(int64_t max_samples, int64_t batch_size);
};

using DataBackendFactory = std::function<std::unique_ptr<DataBackend>()>;

}  // namespace st::sdk
