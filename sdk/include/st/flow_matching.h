// Flow-matching training math with SimpleTuner's conventions (facts: bghira/SimpleTuner @ bc8e6ab773,
// simpletuner/helpers/models/common.py ModelFoundation.sample_flow_sigmas / prepare_batch and
// simpletuner/helpers/training/custom_schedule.py apply_flow_schedule_shift; checked against
// tests/golden/flow_matching_training).
//
//   sigma      ~ logit-normal: sigmoid(sigmoid_scale * (z + offset)), z ~ N(0, 1)   (default)
//              | uniform U(0, 1)
//   sigma'     = s * sigma / (1 + (s - 1) * sigma)                  (SD3 shift, applied after the draw)
//   noisy      = (1 - sigma') * x0 + sigma' * noise                 (sigma' broadcast per sample)
//   target     = noise - x0                                         (velocity)
//   timesteps  = sigma' * 1000                                      (float, what the model receives)
//   loss       = mean over non-batch dims of (pred - target)^2, then mean over the batch
//
// Randomness comes only from the caller's at::Generator (the run owns and seeds it). All functions
// are pure and thread-safe; they throw st::Error on bad shapes or options.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace st::sdk {

enum class SigmaSampling {
    logit_normal,  ///< SimpleTuner default
    uniform,       ///< flow_use_uniform_schedule
};

/// Parses "logit_normal" / "uniform"; throws st::Error listing them otherwise.
SigmaSampling parse_sigma_sampling(const std::string& name);

/// Resolution-dependent shift (diffusers Flux `calculate_shift`, used by SimpleTuner's
/// flow_schedule_auto_shift): mu = base_shift + (seq_len - base_seq_len) * slope with
/// slope = (max_shift - base_shift) / (max_seq_len - base_seq_len); shift = exp(mu).
/// SimpleTuner leaves this unclamped: a 21 x 30 x 52-token video gives mu ~ 6, shift ~ 400, which
/// pushes nearly every training sigma to ~1. st clamps the shift to `max_shift_value`
/// (default 12.0, the largest static shift any reference pipeline here uses: Wan 2.2 T2V-A14B) and
/// logs one warning line when the clamp applies.
struct AutoShiftOptions {
    double base_seq_len = 256;
    double max_seq_len = 4096;
    double base_shift = 0.5;
    double max_shift = 1.15;
    /// Upper bound of the resulting shift = exp(mu). st-specific; SimpleTuner has none.
    double max_shift_value = 12.0;
};

struct FlowSigmaOptions {
    SigmaSampling sampling = SigmaSampling::logit_normal;
    double sigmoid_scale = 1.0;  ///< flow_sigmoid_scale
    double offset = 0.0;         ///< dataset timestep_sampling_offset, added to z
    /// flow_schedule_shift; SimpleTuner's default is 3.0. <= 0 means "no static shift": then
    /// `auto_shift` decides (true: resolution-dependent shift; false: no shift at all).
    double shift = 3.0;
    bool auto_shift = false;  ///< flow_schedule_auto_shift (only when shift <= 0)
    AutoShiftOptions auto_shift_options;
};

/// sigmoid(scale * (z + offset)) for given normal draws z (any shape, float).
at::Tensor logit_normal_from_normal(const at::Tensor& z, double sigmoid_scale, double offset);

/// s * sigma / (1 + (s - 1) * sigma). s must be > 0 (s = 1 is the identity).
at::Tensor shift_sigmas(const at::Tensor& sigmas, double shift);

/// exp(mu) for `seq_len` tokens (see AutoShiftOptions), clamped to max_shift_value.
double auto_shift_value(double seq_len, const AutoShiftOptions& options = {});

/// Token count SimpleTuner's auto-shift uses for latents [B, C, F, H, W] (or [B, C, H, W]):
/// F * (H / patch) * (W / patch) with integer division.
int64_t auto_shift_seq_len(at::IntArrayRef latent_shape, int64_t patch_size = 2);

/// The shift that applies for these options and latents: `shift` when > 0, the auto shift when
/// enabled, otherwise 1 (no shift).
double effective_shift(const FlowSigmaOptions& options, at::IntArrayRef latent_shape);

/// Draws `batch` training sigmas [batch] (float32, CPU) with `generator`, then applies
/// effective_shift(options, latent_shape). Values are strictly inside (0, 1) up to float rounding.
at::Tensor sample_flow_sigmas(int64_t batch, const FlowSigmaOptions& options, at::IntArrayRef latent_shape,
                              at::Generator generator);

struct FlowMatchingBatch {
    at::Tensor noisy;      ///< (1 - sigma) * x0 + sigma * noise, dtype of latents
    at::Tensor target;     ///< noise - x0
    at::Tensor timesteps;  ///< [B] sigma * 1000, float32
};

/// latents/noise [B, ...] of equal shape, sigmas [B] (already shifted). Math in float32 at least.
FlowMatchingBatch make_flow_matching_batch(const at::Tensor& latents, const at::Tensor& noise,
                                           const at::Tensor& sigmas);

/// Per-sample MSE [B] (float32): mean over all non-batch dims of (pred - target)^2, both upcast to
/// float32 first.
at::Tensor flow_matching_loss_per_sample(const at::Tensor& model_pred, const at::Tensor& target);

/// Scalar batch mean of flow_matching_loss_per_sample.
at::Tensor flow_matching_loss(const at::Tensor& model_pred, const at::Tensor& target);

/// x0 estimate from a velocity: noisy - sigma * v (sigma [B] broadcast).
at::Tensor x0_from_velocity(const at::Tensor& noisy, const at::Tensor& velocity, const at::Tensor& sigmas);

}  // namespace st::sdk
