// Exponential moving average of the trained weights (SimpleTuner's EMAModel, inventory §3.7):
// shadow <- shadow - (1 - d) (shadow - param) every ema_update_interval optimizer steps, with
//   d = 0 for step <= 0, else min((1 + step) / (10 + step), ema_decay)   (no ema_warmup_steps)
//   d = 0 before ema_warmup_steps, then ema_decay                        (ema_warmup_steps > 0)
// where step = global_step - 1 (update_after_step 0). Shadows are fp32, keyed by name, on the CPU
// (SimpleTuner's ema_device "cpu", its default) or on each parameter's device ("accelerator").
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "st/tensors.h"

namespace st::host::train {

class Ema {
  public:
    /// on_parameter_device: shadows live where their parameter lives (no copies per update);
    /// otherwise on the CPU.
    Ema(const std::vector<std::pair<std::string, at::Tensor>>& params, double decay, int64_t warmup_steps,
        bool on_parameter_device = false);

    /// Decay used for an update after optimizer step `global_step` (1 = the first step).
    double decay_at(int64_t global_step) const;
    /// Updates every shadow from the current parameters.
    void update(int64_t global_step);

    /// Swaps shadow and live weights in place (call twice to undo): validation with EMA weights.
    void swap_into_model();

    const sdk::TensorMap& shadows() const { return shadows_; }
    sdk::StateDict state_dict() const;
    /// Shadows as CPU tensors (the checkpoint writer's input). Throws nothing.
    /// load_state_dict throws st::Error naming a missing, unexpected or mis-shaped shadow.
    void load_state_dict(const sdk::StateDict& state);

  private:
    std::vector<std::pair<std::string, at::Tensor>> params_;
    sdk::TensorMap shadows_;
    double decay_;
    int64_t warmup_steps_;
};

}  // namespace st::host::train
