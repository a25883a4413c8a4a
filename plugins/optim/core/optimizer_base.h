// Shared machinery of every optimizer in st_optim_core: parameter groups, per-parameter state keyed
// by parameter name, state_dict/load_state_dict and state_bytes. Each concrete optimizer only says
// which state tensors a parameter has (init_state) and how one parameter is updated (update).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "optim.h"
#include "st/optimizer.h"
#include "st/text.h"

namespace st::plugins::optim {

/// State of one parameter. Tensors are named without the "<param>::" prefix ("exp_avg").
struct ParamState {
    int64_t step = 0;  ///< updates applied to this parameter so far
    std::map<std::string, at::Tensor> tensors;
    /// Small per-parameter scalars that are part of the state (adamw_bf16's accumulated decay).
    std::map<std::string, double> scalars;
};

struct GroupState {
    double lr = 0.0;
    double weight_decay = 0.0;
    double initial_lr = 0.0;  ///< lr at construction (optimi's max_lr default)
};

class OptimizerBase : public sdk::Optimizer {
  public:
    OptimizerBase(std::string canonical_name, const sdk::OptimizerInit& init, OptimizerHParams hparams);

    void step() override;
    const std::vector<sdk::OptimizerParam>& params() const override { return params_; }
    int group_count() const override { return static_cast<int>(groups_.size()); }
    double lr(int group) const override;
    void set_lr(int group, double lr) override;
    sdk::StateDict state_dict() const override;
    void load_state_dict(const sdk::StateDict& state) override;
    int64_t state_bytes() const override;

    const OptimizerHParams& hparams() const { return hparams_; }
    const std::string& component() const { return component_; }
    double weight_decay(int group) const { return groups_.at(group).weight_decay; }

  protected:
    /// Fresh (zero) state for one parameter; called on its first update and to validate loads.
    virtual ParamState init_state(const sdk::OptimizerParam& p) const = 0;
    /// One update of one parameter whose grad is defined; `state.step` is already incremented.
    virtual void update(const sdk::OptimizerParam& p, const GroupState& group, ParamState& state) = 0;

    std::string name_;
    std::string component_;
    OptimizerHParams hparams_;

  private:
    std::vector<sdk::OptimizerParam> params_;
    std::vector<GroupState> groups_;
    std::map<std::string, ParamState> state_;  ///< by parameter name; absent until the first update
};

// Factories of the concrete optimizers (one .cpp each).
std::unique_ptr<sdk::Optimizer> make_adamw(const sdk::OptimizerInit& init, OptimizerHParams hp);
std::unique_ptr<sdk::Optimizer> make_adamw_bf16(const sdk::OptimizerInit& init, OptimizerHParams hp);
std::unique_ptr<sdk::Optimizer> make_optimi_adamw(const sdk::OptimizerInit& init, OptimizerHParams hp);
std::unique_ptr<sdk::Optimizer> make_optimi_lion(const sdk::OptimizerInit& init, OptimizerHParams hp);
std::unique_ptr<sdk::Optimizer> make_lion(const sdk::OptimizerInit& init, OptimizerHParams hp);
std::unique_ptr<sdk::Optimizer> make_bnb_adamw8bit(const sdk::OptimizerInit& init, OptimizerHParams hp);
std::unique_ptr<sdk::Optimizer> make_bnb_lion8bit(const sdk::OptimizerInit& init, OptimizerHParams hp);

/// Deterministic per-parameter fraction in [0, 1) from the parameter name (FNV-1a 64 of the UTF-8
/// bytes, top 53 bits / 2^53). Replaces upstream's torch.rand() start of adamw_bf16's decay
/// accumulator so runs are reproducible; the golden generator computes the same value.
double name_fraction(const std::string& name);

using st::sdk::shape_str;

}  // namespace st::plugins::optim
