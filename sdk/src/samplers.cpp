// Ports of diffusers' flow-matching schedulers (facts from huggingface/diffusers @ 58eb52c080;
// DPMSolverMultistepScheduler lives in samplers_dpm.cpp, its config parsing here):
//   FlowMatchEulerDiscreteScheduler: src/diffusers/schedulers/scheduling_flow_match_euler_discrete.py
//     (__init__, set_timesteps, step)
//   UniPCMultistepScheduler: src/diffusers/schedulers/scheduling_unipc_multistep.py
//     (set_timesteps with use_flow_sigmas, convert_model_output, multistep_uni_p_bh_update,
//      multistep_uni_c_bh_update, step)
// Scalar coefficients are computed in double from the float32-rounded sigma tables (diffusers
// keeps them as float32 tensors); tensor math runs in float32 (float64 for float64 samples).
#include "st/samplers.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "sampler_math.h"
#include "st/error.h"
#include "st/log.h"

namespace st::sdk {

using namespace sampler_math;

namespace {

// Solves the small dense system A x = b (row-major n x n) by Gaussian elimination with partial
// pivoting (stand-in for torch.linalg.solve on UniPC's <= solver_order sized Vandermonde system).
std::vector<double> solve_small(std::vector<double> a, std::vector<double> b) {
    const size_t n = b.size();
    for (size_t c = 0; c < n; ++c) {
        size_t piv = c;
        for (size_t r = c + 1; r < n; ++r)
            if (std::abs(a[r * n + c]) > std::abs(a[piv * n + c])) piv = r;
        if (a[piv * n + c] == 0.0)
            fail(kComponent, "step", "UniPC coefficient system is singular (repeated sigmas?)");
        if (piv != c) {
            for (size_t k = 0; k < n; ++k) std::swap(a[c * n + k], a[piv * n + k]);
            std::swap(b[c], b[piv]);
        }
        for (size_t r = c + 1; r < n; ++r) {
            const double f = a[r * n + c] / a[c * n + c];
            for (size_t k = c; k < n; ++k) a[r * n + k] -= f * a[c * n + k];
            b[r] -= f * b[c];
        }
    }
    std::vector<double> x(n);
    for (size_t i = n; i-- > 0;) {
        double acc = b[i];
        for (size_t k = i + 1; k < n; ++k) acc -= a[i * n + k] * x[k];
        x[i] = acc / a[i * n + i];
    }
    return x;
}

// Shared part of UniP and UniC (bh variants, predict_x0): h, phi_1, B_h and the right-hand sides
// b_k of the order conditions, for the step from sigma_s0 to sigma_t with `order` terms.
struct UniCoefficients {
    double h_phi_1;  ///< expm1(-h)
    double b_h;      ///< bh2: expm1(-h); bh1: -h
    std::vector<double> rks;
    std::vector<double> b;
};

UniCoefficients uni_coefficients(double sigma_s0, double sigma_t, const std::vector<double>& prev_sigmas,
                                 int64_t order, bool bh2) {
    const double lambda_s0 = lambda_of(sigma_s0);
    const double h = lambda_of(sigma_t) - lambda_s0;
    const double hh = -h;
    UniCoefficients c;
    c.h_phi_1 = std::expm1(hh);
    c.b_h = bh2 ? std::expm1(hh) : hh;
    for (double s : prev_sigmas) c.rks.push_back((lambda_of(s) - lambda_s0) / h);
    c.rks.push_back(1.0);
    double h_phi_k = c.h_phi_1 / hh - 1.0;
    double factorial = 1.0;
    for (int64_t i = 1; i <= order; ++i) {
        c.b.push_back(h_phi_k * factorial / c.b_h);
        factorial *= static_cast<double>(i + 1);
        h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    return c;
}

}  // namespace

Sampler::~Sampler() = default;

Sampler::Sampler(SamplerConfig config) : config_(std::move(config)) {
    if (!(config_.shift > 0.0) || !std::isfinite(config_.shift))
        fail(kComponent, "config", "shift must be a finite number > 0, got {}", config_.shift);
    if (config_.num_train_timesteps < 2)
        fail(kComponent, "config", "num_train_timesteps must be >= 2, got {}", config_.num_train_timesteps);
}

void Sampler::check_step(const at::Tensor& velocity, int64_t step_index, const at::Tensor& sample) const {
    if (timesteps_.empty())
        fail(kComponent, "step", "{}: set_timesteps() was not called before step()", name());
    if (step_index < 0 || step_index >= num_steps())
        fail(kComponent, "step", "{}: step_index {} out of range [0, {})", name(), step_index, num_steps());
    if (!velocity.defined() || !sample.defined())
        fail(kComponent, "step", "{}: velocity and sample must be defined tensors", name());
    if (velocity.sizes() != sample.sizes())
        fail(kComponent, "step", "{}: velocity shape {} differs from sample shape {}", name(),
             velocity.sizes(), sample.sizes());
    if (!at::isFloatingType(sample.scalar_type()) || !at::isFloatingType(velocity.scalar_type()))
        fail(kComponent, "step", "{}: velocity/sample must be floating point", name());
}

SamplerConfig SamplerConfig::from_diffusers_json(const nlohmann::json& j) {
    if (!j.is_object()) fail(kComponent, "config", "scheduler config must be a JSON object");
    SamplerConfig c;
    const std::string cls = j.value("_class_name", std::string());
    auto reject_true = [&](const char* key) {
        if (j.contains(key) && j[key].is_boolean() && j[key].get<bool>())
            fail(kComponent, "config", "{}: '{}' = true is not supported", cls, key);
    };
    auto reject_set = [&](const char* key) {
        if (j.contains(key) && !j[key].is_null())
            fail(kComponent, "config", "{}: '{}' = {} is not supported (expected null)", cls, key,
                 j[key].dump());
    };
    for (const char* key :
         {"use_dynamic_shifting", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
          "use_lu_lambdas", "invert_sigmas", "stochastic_sampling", "thresholding"})
        reject_true(key);
    reject_set("shift_terminal");
    reject_set("solver_p");
    c.num_train_timesteps = j.value("num_train_timesteps", c.num_train_timesteps);
    if (cls == "FlowMatchEulerDiscreteScheduler") {
        c.shift = j.value("shift", 1.0);
    } else if (cls == "UniPCMultistepScheduler") {
        if (j.value("prediction_type", std::string("epsilon")) != "flow_prediction")
            fail(kComponent, "config", "{}: prediction_type must be 'flow_prediction', got {}", cls,
                 j.value("prediction_type", std::string("epsilon")));
        if (!j.value("use_flow_sigmas", false))
            fail(kComponent, "config", "{}: use_flow_sigmas must be true for flow models", cls);
        if (!j.value("predict_x0", true))
            fail(kComponent, "config", "{}: predict_x0 = false is not supported", cls);
        c.shift = j.value("flow_shift", 1.0);
        c.solver_order = j.value("solver_order", c.solver_order);
        c.solver_type = j.value("solver_type", c.solver_type);
        // diffusers' __init__ re-registers these DPM-Solver names as bh2.
        if (c.solver_type == "midpoint" || c.solver_type == "heun" || c.solver_type == "logrho") {
            log::info(kComponent, "{}: solver_type '{}' maps to 'bh2' (as in diffusers)", cls, c.solver_type);
            c.solver_type = "bh2";
        }
        c.lower_order_final = j.value("lower_order_final", c.lower_order_final);
        c.final_sigmas_type = j.value("final_sigmas_type", c.final_sigmas_type);
        if (j.contains("disable_corrector") && j["disable_corrector"].is_array())
            c.disable_corrector = j["disable_corrector"].get<std::vector<int64_t>>();
    } else if (cls == "DPMSolverMultistepScheduler") {
        // diffusers' defaults (epsilon, use_flow_sigmas false) are the VP model; only flow mode is
        // ported. beta_*, trained_betas, lambda_min_clipped, timestep_spacing, steps_offset,
        // rescale_betas_zero_snr and variance_type only shape the VP tables, which flow sigmas with a
        // zero final sigma never read, so they are ignored.
        if (j.value("prediction_type", std::string("epsilon")) != "flow_prediction")
            fail(kComponent, "config", "{}: prediction_type must be 'flow_prediction', got {}", cls,
                 j.value("prediction_type", std::string("epsilon")));
        if (!j.value("use_flow_sigmas", false))
            fail(kComponent, "config", "{}: use_flow_sigmas must be true for flow models", cls);
        c.algorithm_type = j.value("algorithm_type", c.algorithm_type);
        if (c.algorithm_type == "deis") {
            log::info(kComponent, "{}: algorithm_type 'deis' maps to 'dpmsolver++' (as in diffusers)", cls);
            c.algorithm_type = "dpmsolver++";
        }
        if (c.algorithm_type != "dpmsolver++")
            fail(kComponent, "config",
                 "{}: 'algorithm_type' = '{}' is not supported (only 'dpmsolver++'; the sde variants "
                 "are stochastic and 'dpmsolver' has no flow_prediction in diffusers)",
                 cls, c.algorithm_type);
        c.shift = j.value("flow_shift", 1.0);
        c.solver_order = j.value("solver_order", c.solver_order);
        c.solver_type = j.value("solver_type", std::string("midpoint"));
        // diffusers' __init__ re-registers these UniPC/DEIS names as midpoint.
        if (c.solver_type == "bh1" || c.solver_type == "bh2" || c.solver_type == "logrho") {
            log::info(kComponent, "{}: solver_type '{}' maps to 'midpoint' (as in diffusers)", cls,
                      c.solver_type);
            c.solver_type = "midpoint";
        }
        if (c.solver_type != "midpoint" && c.solver_type != "heun")
            fail(kComponent, "config", "{}: 'solver_type' = '{}' is not supported (midpoint, heun)", cls,
                 c.solver_type);
        c.lower_order_final = j.value("lower_order_final", c.lower_order_final);
        c.euler_at_final = j.value("euler_at_final", c.euler_at_final);
        c.final_sigmas_type = j.value("final_sigmas_type", c.final_sigmas_type);
        if (c.final_sigmas_type != "zero")
            fail(kComponent, "config",
                 "{}: 'final_sigmas_type' = '{}' is not supported (only 'zero'; diffusers' flow-mode "
                 "sigma_min comes from the VP beta table)",
                 cls, c.final_sigmas_type);
        if (j.contains("time_shift_type") && j["time_shift_type"].is_string() &&
            j["time_shift_type"].get<std::string>() != "exponential")
            fail(kComponent, "config", "{}: 'time_shift_type' = {} is not supported", cls,
                 j["time_shift_type"].dump());
    } else {
        fail(kComponent, "config",
             "unsupported scheduler _class_name '{}' (known: FlowMatchEulerDiscreteScheduler, "
             "UniPCMultistepScheduler, DPMSolverMultistepScheduler)",
             cls);
    }
    return c;
}

std::string SamplerConfig::sampler_name_for(const nlohmann::json& j) {
    if (!j.is_object()) fail(kComponent, "config", "scheduler config must be a JSON object");
    const std::string cls = j.value("_class_name", std::string());
    if (cls == "FlowMatchEulerDiscreteScheduler") return "flow_match_euler";
    if (cls == "UniPCMultistepScheduler") return "unipc";
    if (cls == "DPMSolverMultistepScheduler") return "dpmsolver++";
    fail(kComponent, "config",
         "unsupported scheduler _class_name '{}' (known: FlowMatchEulerDiscreteScheduler, "
         "UniPCMultistepScheduler, DPMSolverMultistepScheduler)",
         cls);
}

// ---------------------------------------------------------------------------------------------
// FlowMatchEulerDiscreteScheduler

FlowMatchEulerSampler::FlowMatchEulerSampler(SamplerConfig config) : Sampler(std::move(config)) {}

void FlowMatchEulerSampler::set_timesteps(int64_t num_steps) {
    if (num_steps < 1)
        fail(kComponent, "set_timesteps", "flow_match_euler: num_steps must be >= 1, got {}", num_steps);
    const auto n_train = static_cast<float>(config_.num_train_timesteps);
    const auto s = static_cast<float>(config_.shift);
    // __init__: the training table is float32: t = 1..N, sigma = t / N, shifted in float32.
    // sigma_max = shift(1) = 1; sigma_min = shift(1 / N) (the first shift of the low end).
    const float t_min = 1.0f / n_train;
    const float sigma_min_f = (s * t_min) / (1.0f + (s - 1.0f) * t_min);
    const double sigma_max = 1.0;
    const double sigma_min = static_cast<double>(sigma_min_f);
    // set_timesteps: linspace over t in float64, back to sigma, shifted again (the second shift).
    const double nt = config_.num_train_timesteps;
    const std::vector<double> ts = np_linspace(sigma_max * nt, sigma_min * nt, num_steps);
    sigmas_.clear();
    timesteps_.clear();
    for (double t : ts) {
        const float sigma = static_cast<float>(shift_sigma(config_.shift, t / nt));
        sigmas_.push_back(sigma);
        timesteps_.push_back(static_cast<double>(sigma * n_train));  // float32 product
    }
    sigmas_.push_back(0.0);
    log::debug(kComponent, "flow_match_euler: {} steps, shift {}, sigmas {:.4f} .. {:.4f}", num_steps,
               config_.shift, sigmas_.front(), sigmas_[sigmas_.size() - 2]);
}

// sample [*], velocity [*] -> sample at sigmas[i + 1]: x + (sigma_next - sigma) * v
at::Tensor FlowMatchEulerSampler::step(const at::Tensor& velocity, int64_t step_index,
                                       const at::Tensor& sample) {
    check_step(velocity, step_index, sample);
    const auto mt = math_type(sample);
    // sigma_next - sigma is a float32 difference in diffusers.
    const double dt = static_cast<double>(static_cast<float>(sigmas_[step_index + 1]) -
                                          static_cast<float>(sigmas_[step_index]));
    return (sample.to(mt) + velocity.to(mt) * dt).to(sample.scalar_type());
}

// ---------------------------------------------------------------------------------------------
// UniPCMultistepScheduler (flow_prediction, use_flow_sigmas, predict_x0)

UniPCSampler::UniPCSampler(SamplerConfig config) : Sampler(std::move(config)) {
    if (config_.solver_order < 1 || config_.solver_order > 4)
        fail(kComponent, "config", "unipc: solver_order must be in [1, 4], got {}", config_.solver_order);
    if (config_.solver_type != "bh2" && config_.solver_type != "bh1")
        fail(kComponent, "config", "unipc: solver_type must be 'bh1' or 'bh2', got '{}'",
             config_.solver_type);
    if (config_.final_sigmas_type != "zero" && config_.final_sigmas_type != "sigma_min")
        fail(kComponent, "config", "unipc: final_sigmas_type must be 'zero' or 'sigma_min', got '{}'",
             config_.final_sigmas_type);
}

void UniPCSampler::set_timesteps(int64_t num_steps) {
    if (num_steps < 1) fail(kComponent, "set_timesteps", "unipc: num_steps must be >= 1, got {}", num_steps);
    const double nt = static_cast<double>(config_.num_train_timesteps);
    // sigmas = shift(linspace(1, 1/N, n+1)[:-1]) in float64; sigma_0 = shift(1) = 1 is pulled to
    // 1 - 1e-6 so that lambda_0 = log(alpha) - log(sigma) stays finite.
    std::vector<double> shifted = np_linspace(1.0, 1.0 / nt, num_steps + 1);
    shifted.pop_back();
    for (double& s : shifted) s = shift_sigma(config_.shift, s);
    if (std::fabs(shifted[0] - 1.0) < 1e-6) shifted[0] -= 1e-6;
    sigmas_.clear();
    timesteps_.clear();
    for (double s : shifted) {
        // Timesteps come from the float64 sigmas, truncated to int64 (all positive: floor).
        timesteps_.push_back(static_cast<double>(static_cast<int64_t>(s * nt)));
        sigmas_.push_back(round_f32(s));
    }
    sigmas_.push_back(config_.final_sigmas_type == "zero" ? 0.0 : sigmas_.back());
    reset();
    log::debug(kComponent, "unipc: {} steps, flow_shift {}, order {} {}, timesteps {} .. {}", num_steps,
               config_.shift, config_.solver_order, config_.solver_type, timesteps_.front(),
               timesteps_.back());
}

void UniPCSampler::reset() {
    x0_history_.clear();
    last_sample_ = at::Tensor();
    lower_order_nums_ = 0;
    this_order_ = 0;
    next_step_ = 0;
}

// sample [*], velocity [*] -> sample at sigmas[i + 1] (UniC corrector on `sample`, then UniP).
at::Tensor UniPCSampler::step(const at::Tensor& velocity, int64_t step_index, const at::Tensor& sample_in) {
    check_step(velocity, step_index, sample_in);
    if (step_index != next_step_)
        fail(kComponent, "step",
             "unipc: steps must be taken in order; expected step {}, got {} (call reset())", next_step_,
             step_index);
    if (last_sample_.defined() && last_sample_.sizes() != sample_in.sizes())
        fail(kComponent, "step", "unipc: sample shape {} differs from the previous step's {}",
             sample_in.sizes(), last_sample_.sizes());
    const auto mt = math_type(sample_in);
    const bool bh2 = config_.solver_type == "bh2";
    const auto& sig = sigmas_;
    const int64_t i = step_index;
    at::Tensor sample = sample_in.to(mt);
    // convert_model_output: x0 = x - sigma * v (from the sample before correction).
    const at::Tensor x0 = sample - velocity.to(mt) * sig[i];

    const bool corrector_disabled =
        std::find(config_.disable_corrector.begin(), config_.disable_corrector.end(), i - 1) !=
        config_.disable_corrector.end();
    if (i > 0 && !corrector_disabled && last_sample_.defined()) {
        // UniC (multistep_uni_c_bh_update): from sigma[i-1] (last_sample) to sigma[i], using the
        // history and the new x0 as the extra point.
        const int64_t order = this_order_;
        const double sigma_t = sig[i], sigma_s0 = sig[i - 1];
        std::vector<double> prev;
        for (int64_t k = 1; k < order; ++k) prev.push_back(sig[i - (k + 1)]);
        const UniCoefficients c = uni_coefficients(sigma_s0, sigma_t, prev, order, bh2);
        std::vector<double> rhos;
        if (order == 1) {
            rhos = {0.5};
        } else {
            std::vector<double> r(static_cast<size_t>(order * order));
            for (int64_t row = 0; row < order; ++row)
                for (int64_t col = 0; col < order; ++col)
                    r[static_cast<size_t>(row * order + col)] =
                        std::pow(c.rks[static_cast<size_t>(col)], row);
            rhos = solve_small(r, c.b);
        }
        const at::Tensor& m0 = x0_history_.back();
        const double alpha_t = 1.0 - sigma_t;
        at::Tensor res = (x0 - m0) * rhos.back();
        for (int64_t k = 1; k < order; ++k) {
            const at::Tensor& mk = x0_history_[x0_history_.size() - 1 - static_cast<size_t>(k)];
            res = res + (mk - m0) * (rhos[static_cast<size_t>(k - 1)] / c.rks[static_cast<size_t>(k - 1)]);
        }
        sample = last_sample_ * (sigma_t / sigma_s0) - m0 * (alpha_t * c.h_phi_1) - res * (alpha_t * c.b_h);
    }

    x0_history_.push_back(x0);
    if (static_cast<int64_t>(x0_history_.size()) > config_.solver_order)
        x0_history_.erase(x0_history_.begin());

    int64_t order = config_.solver_order;
    if (config_.lower_order_final) order = std::min(order, num_steps() - i);
    order = std::min(order, lower_order_nums_ + 1);  // warm-up
    const double sigma_t = sig[i + 1], sigma_s0 = sig[i];
    // The step to sigma = 0 (lambda = +inf) is first order by necessity: higher-order terms divide
    // by r_k = (lambda_k - lambda_s0) / h = 0. Its closed form is x = x0.
    if (sigma_t == 0.0) order = 1;
    this_order_ = order;
    last_sample_ = sample;

    // UniP (multistep_uni_p_bh_update) from sigma[i] to sigma[i+1].
    at::Tensor out;
    const at::Tensor& m0 = x0_history_.back();
    if (sigma_t == 0.0) {
        out = m0.clone();  // sigma_t/sigma_s0 = 0, alpha_t = 1, h_phi_1 = -1
    } else {
        std::vector<double> prev;
        for (int64_t k = 1; k < order; ++k) prev.push_back(sig[i - k]);
        const UniCoefficients c = uni_coefficients(sigma_s0, sigma_t, prev, order, bh2);
        const double alpha_t = 1.0 - sigma_t;
        out = sample * (sigma_t / sigma_s0) - m0 * (alpha_t * c.h_phi_1);
        if (order >= 2) {
            std::vector<double> rhos;
            if (order == 2) {
                rhos = {0.5};
            } else {
                const int64_t n = order - 1;
                std::vector<double> r(static_cast<size_t>(n * n));
                for (int64_t row = 0; row < n; ++row)
                    for (int64_t col = 0; col < n; ++col)
                        r[static_cast<size_t>(row * n + col)] =
                            std::pow(c.rks[static_cast<size_t>(col)], row);
                rhos = solve_small(r, std::vector<double>(c.b.begin(), c.b.begin() + n));
            }
            at::Tensor res;
            for (int64_t k = 1; k < order; ++k) {
                const at::Tensor& mk = x0_history_[x0_history_.size() - 1 - static_cast<size_t>(k)];
                const at::Tensor term =
                    (mk - m0) * (rhos[static_cast<size_t>(k - 1)] / c.rks[static_cast<size_t>(k - 1)]);
                res = res.defined() ? res + term : term;
            }
            out = out - res * (alpha_t * c.b_h);
        }
    }
    if (lower_order_nums_ < config_.solver_order) ++lower_order_nums_;
    ++next_step_;
    return out.to(sample_in.scalar_type());
}

// ---------------------------------------------------------------------------------------------

std::vector<std::string> sampler_names() {
    return {"euler", "flow_match_euler", "unipc", "dpmsolver++", "dpm++", "dpmsolver_multistep"};
}

std::unique_ptr<Sampler> make_sampler(const std::string& name, const SamplerConfig& config) {
    if (name == "euler" || name == "flow_match_euler") return std::make_unique<FlowMatchEulerSampler>(config);
    if (name == "unipc") return std::make_unique<UniPCSampler>(config);
    if (name == "dpmsolver++" || name == "dpm++" || name == "dpmsolver_multistep")
        return std::make_unique<DPMSolverMultistepSampler>(config);
    fail(kComponent, "create", "unknown sampler '{}' (known: {})", name, fmt::join(sampler_names(), ", "));
}

at::Tensor cfg_combine(const at::Tensor& uncond, const at::Tensor& cond, double scale) {
    if (!uncond.defined() || !cond.defined() || uncond.sizes() != cond.sizes())
        fail(kComponent, "cfg", "uncond and cond must be defined with equal shapes (got {} and {})",
             uncond.defined() ? fmt::format("{}", uncond.sizes()) : "undefined",
             cond.defined() ? fmt::format("{}", cond.sizes()) : "undefined");
    if (scale == 1.0) return cond;
    return uncond + (cond - uncond) * scale;
}

}  // namespace st::sdk
