// Learning-rate scheduler components (`lr.<name>@N`). Pure functions of the optimizer step: no
// hidden state, so resuming needs nothing but the step number.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "st/options.h"

namespace st::sdk {

struct LrSchedulerInit {
    int64_t warmup_steps = 0;  ///< lr_warmup_steps (SimpleTuner semantics per scheduler, see docs)
    int64_t total_steps = 0;   ///< max_train_steps resolved (also from epochs)
    double num_cycles = 1.0;   ///< lr_num_cycles
    double power = 1.0;        ///< lr_power
    double lr_end = 0.0;       ///< lr_end
    ConfigView config;         ///< resolved configuration for component-specific options
};

class LrScheduler {
  public:
    virtual ~LrScheduler();
    /// Learning rate at optimizer step `step` (0 = the first update) for a group whose configured
    /// learning rate is `base_lr`. Must be deterministic and side-effect free. May be called from
    /// any thread.
    virtual double lr(int64_t step, double base_lr) const = 0;
};

using LrSchedulerFactory = std::function<std::unique_ptr<LrScheduler>(const LrSchedulerInit&)>;

}  // namespace st::sdk
