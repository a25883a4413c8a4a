// Example third-party plugin: one extra LR scheduler, `lr.step_decay@1`.
//   lr(step) = base_lr * gamma ^ floor(step / every), after an optional linear warmup.
// Options: step_decay_every (default 100), step_decay_gamma (default 0.5). Warmup comes from
// lr_warmup_steps like the built-in schedulers.
#include <cmath>
#include <memory>

#include "st/error.h"
#include "st/plugin.h"
#include "st/registrar.h"

namespace {

class StepDecay final : public st::sdk::LrScheduler {
  public:
    StepDecay(int64_t warmup, int64_t every, double gamma) : warmup_(warmup), every_(every), gamma_(gamma) {}
    double lr(int64_t step, double base_lr) const override {
        if (step < warmup_) return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_ + 1);
        return base_lr * std::pow(gamma_, static_cast<double>((step - warmup_) / every_));
    }

  private:
    int64_t warmup_, every_;
    double gamma_;
};

}  // namespace

ST_PLUGIN("step_decay", "1.0.0", "lr.step_decay@1")

ST_PLUGIN_ENTRY(registrar) {
    st::sdk::ComponentInfo info;
    info.id = "lr.step_decay@1";
    info.summary = "multiplies the learning rate by gamma every N steps";
    info.options = {
        st::sdk::opt_int("step_decay_every", 100, "Steps between two decays."),
        st::sdk::opt_float("step_decay_gamma", 0.5, "Factor applied at each decay."),
    };
    registrar.add_lr_scheduler(std::move(info), [](const st::sdk::LrSchedulerInit& init) {
        int64_t every = init.config.get_int("step_decay_every");
        double gamma = init.config.get_float("step_decay_gamma");
        if (every <= 0)
            throw st::Error("lr.step_decay@1", "create",
                            "step_decay_every must be positive, got " + std::to_string(every));
        return std::make_unique<StepDecay>(init.warmup_steps, every, gamma);
    });
}
