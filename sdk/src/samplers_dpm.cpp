// Port of diffusers' DPMSolverMultistepScheduler in flow mode (algorithm_type "dpmsolver++",
// prediction_type "flow_prediction", use_flow_sigmas, final_sigmas_type "zero"), facts from
// huggingface/diffusers @ 58eb52c080, src/diffusers/schedulers/scheduling_dpmsolver_multistep.py:
// set_timesteps (the use_flow_sigmas branch), _sigma_to_alpha_sigma_t, convert_model_output,
// dpm_solver_first_order_update, multistep_dpm_solver_second_order_update,
// multistep_dpm_solver_third_order_update, step. Checked against tests/golden/schedulers_dpm
// (scripts/golden/dpm_solver_reference.py runs that file).
//
// Scalar coefficients are computed in double from the float32-rounded sigma table (diffusers keeps
// them as float32 0-dim tensors); tensor math runs in float32 (float64 for float64 samples), with the
// tensor expressions in diffusers' order so that the float32 roundings match.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "sampler_math.h"
#include "st/error.h"
#include "st/log.h"
#include "st/samplers.h"

namespace st::sdk {

using namespace sampler_math;

DPMSolverMultistepSampler::DPMSolverMultistepSampler(SamplerConfig config) : Sampler(std::move(config)) {
    if (config_.algorithm_type != "dpmsolver++")
        fail(kComponent, "config", "dpmsolver++: algorithm_type must be 'dpmsolver++', got '{}'",
             config_.algorithm_type);
    if (config_.solver_order < 1 || config_.solver_order > 3)
        fail(kComponent, "config", "dpmsolver++: solver_order must be in [1, 3], got {}",
             config_.solver_order);
    // diffusers' __init__ re-registers UniPC's / DEIS's solver names as midpoint; this also makes the
    // SamplerConfig default ("bh2", UniPC's) a midpoint DPM-Solver.
    if (config_.solver_type == "bh1" || config_.solver_type == "bh2" || config_.solver_type == "logrho") {
        log::debug(kComponent, "dpmsolver++: solver_type '{}' maps to 'midpoint' (as in diffusers)",
                   config_.solver_type);
        config_.solver_type = "midpoint";
    }
    if (config_.solver_type != "midpoint" && config_.solver_type != "heun")
        fail(kComponent, "config", "dpmsolver++: solver_type must be 'midpoint' or 'heun', got '{}'",
             config_.solver_type);
    if (config_.final_sigmas_type != "zero")
        fail(kComponent, "config",
             "dpmsolver++: final_sigmas_type must be 'zero', got '{}' (diffusers' flow-mode sigma_min "
             "comes from the VP beta table, which st does not port)",
             config_.final_sigmas_type);
}

void DPMSolverMultistepSampler::set_timesteps(int64_t num_steps) {
    if (num_steps < 1)
        fail(kComponent, "set_timesteps", "dpmsolver++: num_steps must be >= 1, got {}", num_steps);
    const double nt = static_cast<double>(config_.num_train_timesteps);
    // use_flow_sigmas: alphas = linspace(1, 1/N, n+1); sigmas = flip(shift(1 - alphas))[:-1], all in
    // float64. Unlike UniPC's table this starts at shift(1 - 1/N) < 1 (no 1 - 1e-6 pull) and the
    // dropped entry is shift(0) = 0.
    const std::vector<double> alphas = np_linspace(1.0, 1.0 / nt, num_steps + 1);
    sigmas_.clear();
    timesteps_.clear();
    for (int64_t k = 0; k < num_steps; ++k) {
        const double s = shift_sigma(config_.shift, 1.0 - alphas[static_cast<size_t>(num_steps - k)]);
        // Timesteps from the float64 sigmas, cast to int64 (all positive: floor).
        timesteps_.push_back(static_cast<double>(static_cast<int64_t>(s * nt)));
        sigmas_.push_back(round_f32(s));
    }
    sigmas_.push_back(0.0);  // final_sigmas_type "zero"
    reset();
    log::debug(kComponent, "dpmsolver++: {} steps, flow_shift {}, order {} {}, timesteps {} .. {}", num_steps,
               config_.shift, config_.solver_order, config_.solver_type, timesteps_.front(),
               timesteps_.back());
}

void DPMSolverMultistepSampler::reset() {
    x0_history_.clear();
    lower_order_nums_ = 0;
    next_step_ = 0;
}

// sample [*], velocity [*] -> sample at sigmas[i + 1].
at::Tensor DPMSolverMultistepSampler::step(const at::Tensor& velocity, int64_t step_index,
                                           const at::Tensor& sample_in) {
    check_step(velocity, step_index, sample_in);
    if (step_index != next_step_)
        fail(kComponent, "step",
             "dpmsolver++: steps must be taken in order; expected step {}, got {} (call reset())", next_step_,
             step_index);
    if (!x0_history_.empty() && x0_history_.back().sizes() != sample_in.sizes())
        fail(kComponent, "step", "dpmsolver++: sample shape {} differs from the previous step's {}",
             sample_in.sizes(), x0_history_.back().sizes());
    const auto mt = math_type(sample_in);
    const int64_t i = step_index;
    const int64_t n = num_steps();
    const at::Tensor sample = sample_in.to(mt);
    // convert_model_output (dpmsolver++, flow_prediction): x0 = x - sigma * v.
    x0_history_.push_back(sample - velocity.to(mt) * sigmas_[i]);
    if (static_cast<int64_t>(x0_history_.size()) > config_.solver_order)
        x0_history_.erase(x0_history_.begin());

    // step(): the last step is first order with euler_at_final, with lower_order_final below 15
    // steps, and always with a zero final sigma; the one before is at most second order with
    // lower_order_final below 15 steps (diffusers' "only valid for < 15 inference steps").
    const bool lower_order_final =
        i == n - 1 && (config_.euler_at_final || (config_.lower_order_final && n < 15) ||
                       config_.final_sigmas_type == "zero");
    const bool lower_order_second = i == n - 2 && config_.lower_order_final && n < 15;
    int64_t order = 3;
    if (config_.solver_order == 1 || lower_order_nums_ < 1 || lower_order_final)
        order = 1;
    else if (config_.solver_order == 2 || lower_order_nums_ < 2 || lower_order_second)
        order = 2;

    const double sigma_t = sigmas_[i + 1], sigma_s0 = sigmas_[i];
    const at::Tensor& m0 = x0_history_.back();
    at::Tensor out;
    if (sigma_t == 0.0) {
        // lambda_t = +inf: sigma_t / sigma_s0 = 0, alpha_t = 1, exp(-h) - 1 = -1, so x = x0 exactly
        // (what diffusers' first-order update evaluates to through its infinities).
        out = m0.clone();
    } else {
        const double alpha_t = 1.0 - sigma_t;
        const double lambda_s0 = lambda_of(sigma_s0);
        const double h = lambda_of(sigma_t) - lambda_s0;
        const double em1 = std::expm1(-h);  // exp(-h) - 1
        // All orders: (sigma_t / sigma_s0) * x - alpha_t (exp(-h) - 1) * D0, D0 = m0.
        out = sample * (sigma_t / sigma_s0) - m0 * (alpha_t * em1);
        if (order == 2) {
            const at::Tensor& m1 = x0_history_[x0_history_.size() - 2];
            const double r0 = (lambda_s0 - lambda_of(sigmas_[i - 1])) / h;
            const at::Tensor d1 = (m0 - m1) * (1.0 / r0);
            if (config_.solver_type == "midpoint")
                out = out - d1 * (0.5 * (alpha_t * em1));
            else  // heun
                out = out + d1 * (alpha_t * (em1 / h + 1.0));
        } else if (order == 3) {
            const at::Tensor& m1 = x0_history_[x0_history_.size() - 2];
            const at::Tensor& m2 = x0_history_[x0_history_.size() - 3];
            const double lambda_s1 = lambda_of(sigmas_[i - 1]);
            const double r0 = (lambda_s0 - lambda_s1) / h;
            const double r1 = (lambda_s1 - lambda_of(sigmas_[i - 2])) / h;
            const at::Tensor d1_0 = (m0 - m1) * (1.0 / r0);
            const at::Tensor d1_1 = (m1 - m2) * (1.0 / r1);
            const at::Tensor d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1));
            const at::Tensor d2 = (d1_0 - d1_1) * (1.0 / (r0 + r1));
            out = out + d1 * (alpha_t * (em1 / h + 1.0)) - d2 * (alpha_t * ((em1 + h) / (h * h) - 0.5));
        }
    }
    if (lower_order_nums_ < config_.solver_order) ++lower_order_nums_;
    ++next_step_;
    return out.to(sample_in.scalar_type());
}

}  // namespace st::sdk
