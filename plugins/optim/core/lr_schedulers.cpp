// LR schedulers with SimpleTuner's semantics (simpletuner/helpers/training/custom_schedule.py
// `get_lr_scheduler`, `Cosine`, `Sine`, `CosineAnnealingHardRestarts`,
// `get_polynomial_decay_schedule_with_warmup`; the rest from diffusers/optimization.py via
// `get_scheduler`). `lr(step, base_lr)` is the rate of optimizer update number `step` (0 = first):
// upstream's scheduler sets the rate for update 0 at construction and advances once per update.
// Formulas and the lr_warmup_steps quirk: docs/lr-schedulers.md.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "optim.h"
#include "st/error.h"
#include "st/log.h"

namespace st::plugins::optim {
namespace {

constexpr double kPi = 3.141592653589793;  // Python's math.pi

std::string join(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
    return out;
}

class Constant final : public sdk::LrScheduler {
  public:
    double lr(int64_t, double base_lr) const override { return base_lr * 1.0; }
};

// diffusers get_constant_schedule_with_warmup.
class ConstantWithWarmup final : public sdk::LrScheduler {
  public:
    explicit ConstantWithWarmup(int64_t warmup) : warmup_(warmup) {}
    double lr(int64_t step, double base_lr) const override {
        if (step < warmup_) {
            return base_lr * (static_cast<double>(step) / std::max(1.0, static_cast<double>(warmup_)));
        }
        return base_lr * 1.0;
    }

  private:
    int64_t warmup_;
};

// diffusers get_linear_schedule_with_warmup.
class Linear final : public sdk::LrScheduler {
  public:
    Linear(int64_t warmup, int64_t total) : warmup_(warmup), total_(total) {}
    double lr(int64_t step, double base_lr) const override {
        if (step < warmup_) {
            return base_lr * (static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_)));
        }
        const double f =
            static_cast<double>(total_ - step) / static_cast<double>(std::max<int64_t>(1, total_ - warmup_));
        return base_lr * std::max(0.0, f);
    }

  private:
    int64_t warmup_, total_;
};

// SimpleTuner `Cosine`: no warmup; lr_warmup_steps is the half-period T0. Upstream's T_cur is
// (step // -1) + (step % -1) / -1 = -step (steps_per_epoch = -1), so it never restarts.
class Cosine final : public sdk::LrScheduler {
  public:
    Cosine(int64_t t0, double eta_min) : t0_(t0), eta_min_(eta_min) {}
    double lr(int64_t step, double base_lr) const override {
        const double t_cur = -static_cast<double>(step);
        const double v =
            eta_min_ + (base_lr - eta_min_) * (1.0 + std::cos(kPi * t_cur / static_cast<double>(t0_))) / 2.0;
        return floor_lr_1e9(v);
    }

  private:
    int64_t t0_;
    double eta_min_;
};

// SimpleTuner `Sine`: lr_end + (lr - lr_end) * 0.5 * (1 + sin(pi * step / T0)), T0 = lr_warmup_steps.
class Sine final : public sdk::LrScheduler {
  public:
    Sine(int64_t t0, double eta_min) : t0_(t0), eta_min_(eta_min) {}
    double lr(int64_t step, double base_lr) const override {
        const double v =
            eta_min_ +
            (base_lr - eta_min_) *
                (0.5 * (1.0 + std::sin(kPi * static_cast<double>(step) / static_cast<double>(t0_))));
        return floor_lr_1e9(v);
    }

  private:
    int64_t t0_;
    double eta_min_;
};

// Cosine annealing with hard restarts every T0 = lr_warmup_steps steps (SGDR with T_mult = 1), the
// schedule SimpleTuner's `CosineAnnealingHardRestarts` describes. Upstream computes
// T_cur = step % steps_per_epoch with steps_per_epoch = -1, which is always 0, so upstream's rate
// is stuck at lr (it warns "currently misbehaving"); we implement the documented schedule.
class CosineWithRestarts final : public sdk::LrScheduler {
  public:
    CosineWithRestarts(int64_t t0, double eta_min) : t0_(t0), eta_min_(eta_min) {}
    double lr(int64_t step, double base_lr) const override {
        const double t_cur = static_cast<double>(step % t0_);
        const double v =
            eta_min_ + (base_lr - eta_min_) * (1.0 + std::cos(kPi * t_cur / static_cast<double>(t0_))) / 2.0;
        return floor_lr_1e9(v);
    }

  private:
    int64_t t0_;
    double eta_min_;
};

// SimpleTuner get_polynomial_decay_schedule_with_warmup (a LambdaLR: base_lr * factor).
class Polynomial final : public sdk::LrScheduler {
  public:
    Polynomial(int64_t warmup, int64_t total, double lr_end, double power)
        : warmup_(warmup), total_(total), lr_end_(lr_end), power_(power) {}
    double lr(int64_t step, double base_lr) const override {
        if (!(base_lr > lr_end_)) {
            fail("lr.polynomial@1", "lr", "lr_end ({}) must be smaller than the initial learning rate ({})",
                 lr_end_, base_lr);
        }
        double factor;
        if (step < warmup_) {
            factor = static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_));
        } else if (step > total_) {
            factor = lr_end_ / base_lr;
        } else {
            const double range = base_lr - lr_end_;
            const double decay_steps = static_cast<double>(total_ - warmup_);
            const double pct_remaining = 1.0 - static_cast<double>(step - warmup_) / decay_steps;
            factor = (range * std::pow(pct_remaining, power_) + lr_end_) / base_lr;
        }
        return base_lr * factor;
    }

  private:
    int64_t warmup_, total_;
    double lr_end_, power_;
};

int64_t positive_period(const std::string& name, int64_t warmup) {
    if (warmup <= 0) {
        fail(lr_scheduler_component_id(name), "create",
             "lr_scheduler '{}' uses lr_warmup_steps as its period and needs it > 0, got {}", name, warmup);
    }
    return warmup;
}

}  // namespace

double floor_lr_1e9(double lr) {
    return std::floor(lr * 1e9) / 1e9;
}

const std::vector<std::string>& lr_scheduler_names() {
    static const std::vector<std::string> names = {
        "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial", "sine"};
    return names;
}

std::vector<std::string> supported_lr_scheduler_names() {
    std::vector<std::string> out = lr_scheduler_names();
    out.push_back("cosine_with_warmup");
    std::sort(out.begin(), out.end());
    return out;
}

std::string resolve_lr_scheduler_name(const std::string& name) {
    const auto& names = lr_scheduler_names();
    if (std::find(names.begin(), names.end(), name) != names.end()) return name;
    if (name == "cosine_with_warmup") return "cosine";
    fail("lr", "config", "unsupported lr_scheduler '{}'; supported: {}", name,
         join(supported_lr_scheduler_names()));
}

std::string lr_scheduler_component_id(const std::string& canonical_name) {
    return "lr." + canonical_name + "@1";
}

std::unique_ptr<sdk::LrScheduler> make_lr_scheduler(const std::string& name,
                                                    const sdk::LrSchedulerInit& init) {
    const std::string n = resolve_lr_scheduler_name(name);
    const std::string comp = lr_scheduler_component_id(n);
    if (n != name) st::log::info(comp, "lr_scheduler '{}' is an alias of '{}'", name, n);
    const int64_t w = init.warmup_steps, t = init.total_steps;
    if (w < 0) fail(comp, "create", "lr_warmup_steps must be >= 0, got {}", w);
    if (n == "constant") {
        st::log::info(
            comp, "constant learning rate{}",
            w > 0 ? fmt::format(" (lr_warmup_steps {} is not used by constant)", w) : std::string());
        return std::make_unique<Constant>();
    }
    if (n == "constant_with_warmup") {
        st::log::info(comp, "linear warmup over {} steps, then constant", w);
        return std::make_unique<ConstantWithWarmup>(w);
    }
    if (n == "linear") {
        st::log::info(comp, "linear warmup over {} steps, then linear decay to 0 at step {}", w, t);
        return std::make_unique<Linear>(w, t);
    }
    if (n == "cosine") {
        int64_t t0 = w;
        if (t0 <= 0) {
            st::log::warn(comp,
                          "cosine uses lr_warmup_steps as its half-period but it is {}; using 1000 (as "
                          "SimpleTuner does)",
                          w);
            t0 = 1000;
        }
        st::log::info(comp, "cosine decay from lr to lr_end={} over {} steps, no warmup", init.lr_end, t0);
        return std::make_unique<Cosine>(t0, init.lr_end);
    }
    if (n == "sine") {
        const int64_t p = positive_period(n, w);
        st::log::info(comp, "sine between lr and lr_end={} with period {} (lr_warmup_steps), no warmup",
                      init.lr_end, p);
        return std::make_unique<Sine>(p, init.lr_end);
    }
    if (n == "cosine_with_restarts") {
        const int64_t p = positive_period(n, w);
        st::log::info(comp,
                      "cosine from lr to lr_end={} restarting every {} steps (lr_warmup_steps), no warmup",
                      init.lr_end, p);
        return std::make_unique<CosineWithRestarts>(p, init.lr_end);
    }
    // polynomial
    if (t == w) {
        fail(comp, "create",
             "polynomial decays over max_train_steps - lr_warmup_steps steps, which is 0 ({} - {})", t, w);
    }
    if (auto lr = init.config.opt_float("learning_rate"); lr && !(*lr > init.lr_end)) {
        fail(comp, "create", "lr_end ({}) must be smaller than learning_rate ({})", init.lr_end, *lr);
    }
    st::log::info(
        comp,
        "linear warmup over {} steps, then (lr - lr_end) * (1 - progress)^{} + lr_end (lr_end={}) until "
        "step {}",
        w, init.power, init.lr_end, t);
    return std::make_unique<Polynomial>(w, t, init.lr_end, init.power);
}

std::vector<sdk::OptionSpec> lr_shared_options() {
    std::vector<sdk::OptionSpec> o;
    o.push_back(
        sdk::opt_int("lr_warmup_steps", 0,
                     "warmup steps of constant_with_warmup/linear/polynomial; the half-period of cosine "
                     "and the period of sine/cosine_with_restarts (see docs/lr-schedulers.md).")
            .range(0, 1e9));
    o.push_back(sdk::opt_float(
        "lr_num_cycles", 1.0, "accepted for SimpleTuner configs; none of the supported schedulers uses it."));
    o.push_back(sdk::opt_float("lr_power", 0.8, "exponent of the polynomial scheduler."));
    o.push_back(sdk::opt_float("lr_end", 4e-7,
                               "final learning rate of cosine, sine, cosine_with_restarts and "
                               "polynomial."));
    for (auto& s : o) s.group = "lr_scheduler";
    return o;
}

}  // namespace st::plugins::optim
