// The training objective of one micro-batch: SimpleTuner's flow matching (noise and sigmas drawn from
// the run's generator, noisy = (1 - sigma) x0 + sigma noise, target = noise - x0, mean squared error of
// the model's velocity), returned as named loss terms so regularizers add theirs next to it. The
// evaluation loss is the same objective at a fixed sigma and fixed noise.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <map>
#include <string>
#include <vector>

#include "plugins/model_handle.h"
#include "st/data_backend.h"
#include "st/flow_matching.h"
#include "train/regularizers.h"

namespace st::host::train {

/// The loss of one micro-batch: `loss` is the sum of `terms` (each a scalar tensor in the autograd
/// graph), "flow_matching" always among them.
struct ObjectiveResult {
    at::Tensor loss;
    std::map<std::string, at::Tensor> terms;
    std::map<std::string, double> metrics;  ///< the regularizers' logged values (not optimised)
    at::Tensor timesteps;                   ///< [B] sigma * 1000 of the samples
};

class Objective {
  public:
    Objective(ModelHandle& model, sdk::FlowSigmaOptions sigmas, at::Device device);

    /// batch.tensors: "latents" [B, C, F, H, W] plus the conditioning predict() takes (every other
    /// tensor). Draws the noise, then the sigmas, from `generator` (that order is part of exact resume).
    /// st::Error naming the bucket when the batch has no latents.
    /// With TREAD routes (set_routes) the model also draws its token selections from `generator`.
    /// Every regularizer (set_regularizers) adds its terms; `step` / `total_steps` are passed to them.
    /// Data parallel: `batch` is the slice [shard_offset, shard_offset + B) of a global batch of
    /// `global_batch` samples (0: B, a single process); the noise and the sigmas are drawn for the whole
    /// global batch and sliced, so every rank's generator stays in step with the others and N ranks draw
    /// exactly what one process with the global batch draws. `timesteps` are then the global batch's.
    ObjectiveResult training_loss(const sdk::Batch& batch, at::Generator& generator, int64_t step = 0,
                                  int64_t total_steps = 0, int64_t shard_offset = 0,
                                  int64_t global_batch = 0);
    /// TREAD routes of the training passes (never used by eval_loss).
    void set_routes(std::vector<sdk::TokenRoute> routes) { routes_ = std::move(routes); }
    /// The regularizers of the training passes (never used by eval_loss). Batch tensors named after
    /// their cached features ("<feature name>.<tensor>") go to them, never to predict().
    void set_regularizers(std::vector<ActiveRegularizer> regs) { regs_ = std::move(regs); }
    std::vector<ActiveRegularizer>& regularizers() { return regs_; }

    /// The flow-matching loss at `sigma` for every sample with the given noise: the mean over the
    /// batch (no gradient needed: call under NoGradGuard).
    double eval_loss(const sdk::Batch& batch, const at::Tensor& noise, double sigma);

  private:
    sdk::PredictInputs inputs(const sdk::Batch& batch, const sdk::FlowMatchingBatch& fm) const;
    static const at::Tensor& latents_of(const sdk::Batch& batch);

    ModelHandle& model_;
    sdk::FlowSigmaOptions sigmas_;
    at::Device device_;
    std::vector<sdk::TokenRoute> routes_;
    std::vector<ActiveRegularizer> regs_;
};

}  // namespace st::host::train
