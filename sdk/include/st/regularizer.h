// Loss regularizer components (`reg.<name>@N`, e.g. reg.crepa@1): extra loss terms computed from the
// model's intermediate activations (taps, see TapProvider in st/model.h) and, optionally, from
// per-sample features the data backend caches once (SampleFeatureEncoder).
//
// The host's objective builds every configured regularizer after the model is loaded (so a wrong tap
// or setting fails before any caching), asks each for its taps, passes them every training step,
// adds each term to the flow-matching loss, logs terms and metrics (metrics.jsonl, progress line, Lua
// events), trains modules() in their own optimizer parameter group and saves their tensors and
// state() in checkpoints (resume stays exact).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "st/model.h"
#include "st/options.h"
#include "st/tensors.h"

namespace torch::nn {
class Module;
}

namespace st::sdk {

/// Host -> plugin (may gain fields at the end in a minor version).
struct RegularizerInit {
    ConfigView config;
    /// The hidden size of every tap the model offers (TapProvider::taps), keyed by tap name.
    std::map<std::string, int64_t> tap_dims;
    at::Device device = at::kCPU;
    /// The run's seed: initialise modules() from a generator seeded with it (runs repeat exactly).
    uint64_t seed = 0;
};

/// Host -> plugin, once per micro-batch (may gain fields at the end in a minor version).
struct RegularizerInputs {
    int64_t step = 0;  ///< the optimizer step being computed (0 for the first)
    /// Optimizer steps of the run (the end of schedules that default to "the whole run").
    int64_t total_steps = 0;
    TensorMap taps;  ///< the activations requested by taps(): [B, L, D] each, keyed by tap name
    /// Where each tap's video tokens sit (TapProvider::tap_geometry for this batch's latents).
    std::map<std::string, TapGeometry> geometry;
    /// The batch's tensors: clean "latents" [B, C, F', H', W'], the conditioning, and the features
    /// this regularizer's SampleFeatureEncoder cached (named "<name>.<tensor>", leading batch dim).
    TensorMap batch;
    at::Tensor sigmas;  ///< [B]
};

/// Plugin -> host.
struct RegularizerOutput {
    /// Named loss terms (scalar tensors in the autograd graph) the host adds to the loss. A term may be
    /// absent (e.g. the weight is 0 after a cutoff): then nothing is added for it this step.
    TensorMap terms;
    /// Values that are logged but not optimised (e.g. "crepa_alignment_score").
    std::map<std::string, double> metrics;
};

/// Per-sample features computed once, when the data backend caches a training clip (e.g. a frozen
/// image encoder's features of the clean frames), and handed back with every batch that holds the
/// clip. Called on the caching thread, never concurrently.
class SampleFeatureEncoder {
  public:
    virtual ~SampleFeatureEncoder();
    /// Short name ([a-z0-9_]+): the cache folder suffix and the prefix of the batch tensors.
    virtual std::string name() const = 0;
    /// Everything that changes the values (encoder weights, image size, frame selection). Part of the
    /// cache key: a new value rebuilds the features (never the latents).
    virtual std::string identity() const = 0;
    /// pixels [B, 3, F, H, W] float in [-1, 1] (the frames the VAE encoded) and the model's
    /// encode_video() outputs for them ("latents" [B, C, F', H', W'], ...) -> tensors with a leading
    /// batch dim, each named "<name>.<tensor>".
    virtual TensorMap encode(const at::Tensor& pixels, const TensorMap& encoded) = 0;
};

class Regularizer {
  public:
    virtual ~Regularizer();
    /// Tap names this regularizer needs (e.g. {"blocks.8.out"}). Called once after construction; the
    /// host refuses names the model does not offer before any caching.
    virtual std::vector<std::string> taps() const = 0;
    /// Trainable modules the regularizer owns (projectors): the host trains their parameters in a
    /// parameter group of their own, named "<component>.<module>.<parameter>", and saves them in
    /// checkpoints. Default: none.
    virtual std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> modules();
    /// Features to cache per training sample; nullptr (the default) when none.
    virtual std::shared_ptr<SampleFeatureEncoder> sample_features();
    /// The loss terms and metrics of one micro-batch. Called on the trainer thread inside autograd.
    virtual RegularizerOutput compute(const RegularizerInputs& inputs) = 0;
    /// State besides the modules' tensors that resume needs (EMAs, cutoff flags). Default: null.
    virtual nlohmann::json state() const;
    /// Restores state() of a checkpoint. Default: nothing.
    virtual void restore(const nlohmann::json& state);
};

using RegularizerFactory = std::function<std::unique_ptr<Regularizer>(const RegularizerInit&)>;

}  // namespace st::sdk
