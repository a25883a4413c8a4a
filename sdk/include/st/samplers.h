// Flow-matching samplers for validation (and any plugin that denoises): diffusers'
// FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler and DPMSolverMultistepScheduler
// (dpmsolver++) in flow-prediction mode, with the same sigma/timestep tables and the same update
// rules, checked against tests/golden/schedulers and tests/golden/schedulers_dpm.
//
// Convention (all models of st): x_sigma = (1 - sigma) * x0 + sigma * noise, the model predicts the
// velocity v = noise - x0 and is called with timestep = the value `timesteps()[i]` (sigma * 1000,
// float for Euler, truncated to an integer for UniPC and DPM-Solver exactly as diffusers does).
//
// Typical loop (who calls: the host's validation and plugins' preview code):
//   auto sampler = st::sdk::make_sampler("unipc", cfg);
//   sampler->set_timesteps(40);
//   for (int64_t i = 0; i < sampler->num_steps(); ++i) {
//       at::Tensor v = model(x, sampler->timesteps()[i]);
//       x = sampler->step(v, i, x);
//   }
// From a model's scheduler/scheduler_config.json:
//   auto sampler = st::sdk::make_sampler(SamplerConfig::sampler_name_for(j),
//                                        SamplerConfig::from_diffusers_json(j));
// A Sampler is not thread-safe and, for multistep methods, carries state between steps: steps must
// be taken in order 0, 1, ..., n-1 (set_timesteps() or reset() starts over).
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace st::sdk {

struct SamplerConfig {
    /// Flow shift s: sigma' = s * sigma / (1 + (s - 1) * sigma). diffusers' "shift" (Euler) /
    /// "flow_shift" (UniPC, DPM-Solver). Wan 2.1 480p: 3.0, 720p / Wan 2.2 5B: 5.0, Sana Video: 8.0.
    /// Must be > 0.
    double shift = 3.0;
    int64_t num_train_timesteps = 1000;
    /// UniPC and DPM-Solver. Multistep order: UniPC 1..4 (diffusers allows any >= 1; Wan uses 2),
    /// DPM-Solver 1..3 (Sana Video uses 2).
    int64_t solver_order = 2;
    /// UniPC: "bh2" (Wan default) or "bh1". DPM-Solver: "midpoint" (Sana Video) or "heun"; "bh1",
    /// "bh2" and "logrho" mean "midpoint" there (diffusers' __init__ re-registers them), so the
    /// default "bh2" gives a midpoint DPM-Solver. UniPC likewise maps midpoint/heun/logrho to bh2 when
    /// read from a diffusers config.
    std::string solver_type = "bh2";
    /// UniPC and DPM-Solver: lower the order on the last steps. UniPC: order <= remaining steps, for
    /// any number of steps. DPM-Solver (diffusers quirk): only when num_steps < 15 (last step first
    /// order, the one before at most second order).
    bool lower_order_final = true;
    /// UniPC only. Step indices whose corrector is skipped (diffusers' disable_corrector).
    std::vector<int64_t> disable_corrector;
    /// Final sigma. UniPC: "zero" (Wan) or "sigma_min" (repeat the last sigma). DPM-Solver: "zero"
    /// only (diffusers' flow-mode "sigma_min" takes the VP beta table's sigma, which st does not port).
    std::string final_sigmas_type = "zero";
    /// DPM-Solver only. "dpmsolver++" (data prediction, the only deterministic algorithm diffusers
    /// allows with flow_prediction).
    std::string algorithm_type = "dpmsolver++";
    /// DPM-Solver only. The last step is first order. (With final_sigmas_type "zero" it always is:
    /// the step to sigma = 0 is x = x0.)
    bool euler_at_final = false;

    /// Reads a diffusers scheduler_config.json of FlowMatchEulerDiscreteScheduler,
    /// UniPCMultistepScheduler or DPMSolverMultistepScheduler. Throws st::Error naming the key for
    /// options this port does not implement (dynamic shifting, karras/exponential/beta/lu sigmas, a
    /// non-flow prediction type, thresholding, shift_terminal, invert_sigmas, stochastic sampling,
    /// solver_p, sde/non-++ DPM algorithms, DPM final_sigmas_type "sigma_min") and for unknown
    /// _class_name values. Keys that have no effect in flow mode (beta_*, lambda_min_clipped,
    /// timestep_spacing, steps_offset, variance_type) are ignored.
    static SamplerConfig from_diffusers_json(const nlohmann::json& scheduler_config);
    /// The make_sampler() name for a diffusers scheduler_config.json's _class_name:
    /// FlowMatchEulerDiscreteScheduler -> "flow_match_euler", UniPCMultistepScheduler -> "unipc",
    /// DPMSolverMultistepScheduler -> "dpmsolver++". Throws st::Error for any other class (or none).
    static std::string sampler_name_for(const nlohmann::json& scheduler_config);
};

class Sampler {
  public:
    virtual ~Sampler();

    /// "flow_match_euler", "unipc" or "dpmsolver++".
    virtual std::string name() const = 0;
    /// Builds the tables for `num_steps` (>= 1) and resets the state. Throws st::Error otherwise.
    virtual void set_timesteps(int64_t num_steps) = 0;
    /// Forgets the multistep history (keeps the tables).
    virtual void reset() = 0;
    /// One update: `velocity` is the model output at `sample` for timesteps()[step_index].
    /// Returns the sample at sigmas()[step_index + 1], in the dtype of `sample` (math in fp32, or
    /// fp64 for fp64 samples). Throws st::Error before set_timesteps(), for a step out of range, a
    /// step taken out of order (multistep samplers) or mismatched shapes.
    virtual at::Tensor step(const at::Tensor& velocity, int64_t step_index, const at::Tensor& sample) = 0;

    /// Model-input timesteps [num_steps] (sigma * num_train_timesteps; floored for UniPC and
    /// DPM-Solver).
    const std::vector<double>& timesteps() const { return timesteps_; }
    /// Sigmas [num_steps + 1], decreasing, last = 0 (or sigma_min). Values are float32-rounded like
    /// diffusers' float32 tables.
    const std::vector<double>& sigmas() const { return sigmas_; }
    int64_t num_steps() const { return static_cast<int64_t>(timesteps_.size()); }
    const SamplerConfig& config() const { return config_; }

  protected:
    explicit Sampler(SamplerConfig config);
    void check_step(const at::Tensor& velocity, int64_t step_index, const at::Tensor& sample) const;
    SamplerConfig config_;
    std::vector<double> timesteps_;
    std::vector<double> sigmas_;
};

/// diffusers FlowMatchEulerDiscreteScheduler (use_dynamic_shifting false). Quirk kept on purpose:
/// the 1000-entry training table is already shifted, and set_timesteps() shifts
/// linspace(sigma_max, sigma_min) again, so the low end is shifted twice.
class FlowMatchEulerSampler final : public Sampler {
  public:
    explicit FlowMatchEulerSampler(SamplerConfig config = {});
    std::string name() const override { return "flow_match_euler"; }
    void set_timesteps(int64_t num_steps) override;
    void reset() override {}
    at::Tensor step(const at::Tensor& velocity, int64_t step_index, const at::Tensor& sample) override;
};

/// diffusers UniPCMultistepScheduler with prediction_type "flow_prediction", use_flow_sigmas,
/// predict_x0 (UniPC predictor + UniC corrector on x0 = x - sigma * v). The step to sigma = 0 has
/// lambda = +inf; it is evaluated in closed form (phi_1 = B_h = -1, first order: x = x0), where
/// diffusers would produce NaN for order >= 2 or bh1.
class UniPCSampler final : public Sampler {
  public:
    explicit UniPCSampler(SamplerConfig config = {});
    std::string name() const override { return "unipc"; }
    void set_timesteps(int64_t num_steps) override;
    void reset() override;
    at::Tensor step(const at::Tensor& velocity, int64_t step_index, const at::Tensor& sample) override;

  private:
    std::vector<at::Tensor> x0_history_;  ///< newest last, at most solver_order
    at::Tensor last_sample_;              ///< sample before the previous predictor
    int64_t lower_order_nums_ = 0;
    int64_t this_order_ = 0;
    int64_t next_step_ = 0;
};

/// diffusers DPMSolverMultistepScheduler with algorithm_type "dpmsolver++", prediction_type
/// "flow_prediction", use_flow_sigmas (Sana Video's shipped sampler: order 2, midpoint, shift 8).
/// Multistep DPM-Solver++ of order 1-3 on x0 = x - sigma * v with alpha = 1 - sigma, lambda =
/// log(alpha / sigma). Sigmas are flip(shift(1 - linspace(1, 1/N, n + 1)))[:-1] (sigma_0 =
/// shift(1 - 1/N) < 1, unlike UniPC's). The step to sigma = 0 (lambda = +inf) is always first order
/// and evaluated in closed form: x = x0.
class DPMSolverMultistepSampler final : public Sampler {
  public:
    explicit DPMSolverMultistepSampler(SamplerConfig config = {});
    std::string name() const override { return "dpmsolver++"; }
    void set_timesteps(int64_t num_steps) override;
    void reset() override;
    at::Tensor step(const at::Tensor& velocity, int64_t step_index, const at::Tensor& sample) override;

  private:
    std::vector<at::Tensor> x0_history_;  ///< newest last, at most solver_order
    int64_t lower_order_nums_ = 0;
    int64_t next_step_ = 0;
};

/// Known names: "euler" and "flow_match_euler" (same sampler), "unipc", "dpmsolver++" (also
/// "dpm++" and "dpmsolver_multistep"). Throws st::Error listing them for anything else, and for a
/// config the sampler refuses (see each class).
std::unique_ptr<Sampler> make_sampler(const std::string& name, const SamplerConfig& config = {});
std::vector<std::string> sampler_names();

/// Classifier-free guidance: uncond + scale * (cond - uncond). scale 1 returns `cond` exactly.
at::Tensor cfg_combine(const at::Tensor& uncond, const at::Tensor& cond, double scale);

}  // namespace st::sdk
