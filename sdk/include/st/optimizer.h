// Optimizer components (`optim.<name>@N`). Provided by plugins (plugins/optim ships the standard
// ones), created and driven by the host's trainer.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "st/options.h"
#include "st/tensors.h"

namespace st::sdk {

/// One trainable parameter. The name is the stable key of all per-parameter state (never the
/// tensor's address), so state survives a restart and a re-ordering of parameters.
struct OptimizerParam {
    std::string name;  ///< e.g. "blocks.0.attn1.to_q.lora_A.weight"
    at::Tensor param;  ///< leaf tensor with requires_grad; its .grad() is read by step()
    int group = 0;     ///< index into OptimizerInit::groups
};

/// Per-group hyper-parameters; the optimizer's own defaults fill what is not given here.
struct ParamGroupSpec {
    double lr = 0.0;
    std::optional<double> weight_decay;  ///< unset: the optimizer's own default (weight_decay keys)
};

struct OptimizerInit {
    std::vector<OptimizerParam> params;
    std::vector<ParamGroupSpec> groups;
    /// The resolved run configuration (learning_rate, adam_beta1, ...). Options the component
    /// declared are present with defaults filled.
    ConfigView config;
    /// `optimizer_config` parsed from SimpleTuner's "k=v,k2=v2" form (or a JSON object): overrides
    /// of the optimizer's own hyper-parameters (betas, eps, weight_decay, ...). Unknown keys are an
    /// error raised by the factory naming the key and the known ones.
    nlohmann::json overrides = nlohmann::json::object();
};

/// All calls come from the trainer thread, between forward/backward passes. Methods may throw
/// st::Error (the host adds plugin, component and phase).
class Optimizer {
  public:
    virtual ~Optimizer();

    /// Applies one update to every parameter whose grad is defined, using the current group lrs.
    /// Called once per optimizer step, after gradient clipping.
    virtual void step() = 0;

    /// Drops gradients (sets them undefined). Called after step().
    virtual void zero_grad();

    /// Parameters as given at construction (order preserved).
    virtual const std::vector<OptimizerParam>& params() const = 0;

    virtual int group_count() const = 0;
    virtual double lr(int group) const = 0;
    /// Called by the trainer before step() with the scheduler's value for this step.
    virtual void set_lr(int group, double lr) = 0;

    /// Full state keyed by parameter name ("<param>::exp_avg"), step counters in meta. Restoring
    /// it into a fresh optimizer over the same named parameters continues bit-identically.
    virtual StateDict state_dict() const = 0;
    /// Throws st::Error naming the first missing/unexpected/mis-shaped entry.
    virtual void load_state_dict(const StateDict& state) = 0;

    /// Bytes of optimizer state currently held (for benchmarks and logs).
    virtual int64_t state_bytes() const = 0;
};

using OptimizerFactory = std::function<std::unique_ptr<Optimizer>(const OptimizerInit&)>;

}  // namespace st::sdk
