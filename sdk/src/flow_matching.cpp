// Flow-matching training math; follows SimpleTuner @ bc8e6ab773
// (simpletuner/helpers/models/common.py: ModelFoundation.sample_flow_sigmas, prepare_batch;
//  simpletuner/helpers/training/custom_schedule.py: apply_flow_schedule_shift).
#include "st/flow_matching.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <cmath>

#include "st/error.h"
#include "st/log.h"

namespace st::sdk {
namespace {

constexpr const char* kComponent = "sdk.flow_matching";

at::ScalarType at_least_f32(const at::Tensor& t) {
    return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// sigmas [B] -> [B, 1, ..., 1] matching `like`'s rank.
at::Tensor per_sample(const at::Tensor& sigmas, const at::Tensor& like, const char* what) {
    if (sigmas.dim() != 1 || like.dim() < 1 || sigmas.size(0) != like.size(0))
        fail(kComponent, what, "sigmas must be [B] with B = {} (from tensor {}), got {}", like.size(0),
             like.sizes(), sigmas.sizes());
    std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
    shape[0] = like.size(0);
    return sigmas.view(shape);
}

}  // namespace

SigmaSampling parse_sigma_sampling(const std::string& name) {
    if (name == "logit_normal") return SigmaSampling::logit_normal;
    if (name == "uniform") return SigmaSampling::uniform;
    fail(kComponent, "config", "unknown sigma sampling '{}' (known: logit_normal, uniform)", name);
}

at::Tensor logit_normal_from_normal(const at::Tensor& z, double sigmoid_scale, double offset) {
    return at::sigmoid((z + offset) * sigmoid_scale);
}

at::Tensor shift_sigmas(const at::Tensor& sigmas, double shift) {
    if (!(shift > 0.0) || !std::isfinite(shift))
        fail(kComponent, "shift", "flow shift must be a finite number > 0, got {}", shift);
    return (sigmas * shift) / ((sigmas * (shift - 1.0)) + 1.0);
}

double auto_shift_value(double seq_len, const AutoShiftOptions& o) {
    if (o.max_seq_len == o.base_seq_len)
        fail(kComponent, "auto_shift", "max_seq_len must differ from base_seq_len (both {})", o.max_seq_len);
    if (!(o.max_shift_value > 0.0))
        fail(kComponent, "auto_shift", "max_shift_value must be > 0, got {}", o.max_shift_value);
    const double slope = (o.max_shift - o.base_shift) / (o.max_seq_len - o.base_seq_len);
    const double mu = o.base_shift + (seq_len - o.base_seq_len) * slope;
    const double shift = std::exp(mu);
    if (shift > o.max_shift_value) {
        log::warn(kComponent,
                  "auto shift for {} tokens is exp({:.3f}) = {:.1f}; clamped to max_shift_value {} "
                  "(SimpleTuner would use it unclamped)",
                  seq_len, mu, shift, o.max_shift_value);
        return o.max_shift_value;
    }
    return shift;
}

int64_t auto_shift_seq_len(at::IntArrayRef shape, int64_t patch_size) {
    if (patch_size < 1) fail(kComponent, "auto_shift", "patch_size must be >= 1, got {}", patch_size);
    if (shape.size() == 5) return shape[2] * (shape[3] / patch_size) * (shape[4] / patch_size);
    if (shape.size() == 4) return (shape[2] / patch_size) * (shape[3] / patch_size);
    fail(kComponent, "auto_shift", "latents must be [B, C, F, H, W] or [B, C, H, W], got {}", shape);
}

double effective_shift(const FlowSigmaOptions& o, at::IntArrayRef latent_shape) {
    if (o.shift > 0.0) return o.shift;
    if (o.auto_shift)
        return auto_shift_value(static_cast<double>(auto_shift_seq_len(latent_shape)), o.auto_shift_options);
    return 1.0;
}

at::Tensor sample_flow_sigmas(int64_t batch, const FlowSigmaOptions& o, at::IntArrayRef latent_shape,
                              at::Generator generator) {
    if (batch < 1) fail(kComponent, "sample", "batch must be >= 1, got {}", batch);
    if (!generator.defined()) fail(kComponent, "sample", "a generator is required (the run owns the RNG)");
    const auto opts = at::TensorOptions().dtype(at::kFloat);
    at::Tensor sigmas;
    switch (o.sampling) {
        case SigmaSampling::logit_normal: {
            at::Tensor z = at::empty({batch}, opts);
            z.normal_(0.0, 1.0, generator);
            sigmas = logit_normal_from_normal(z, o.sigmoid_scale, o.offset);
            break;
        }
        case SigmaSampling::uniform: {
            sigmas = at::empty({batch}, opts);
            sigmas.uniform_(0.0, 1.0, generator);
            break;
        }
    }
    const double shift = effective_shift(o, latent_shape);
    return shift == 1.0 ? sigmas : shift_sigmas(sigmas, shift);
}

// latents [B, ...], noise [B, ...], sigmas [B]
FlowMatchingBatch make_flow_matching_batch(const at::Tensor& latents, const at::Tensor& noise,
                                           const at::Tensor& sigmas) {
    if (!latents.defined() || !noise.defined() || latents.sizes() != noise.sizes())
        fail(kComponent, "batch", "latents and noise must have equal shapes, got {} and {}",
             latents.defined() ? latents.sizes() : at::IntArrayRef{},
             noise.defined() ? noise.sizes() : at::IntArrayRef{});
    const auto mt = at_least_f32(latents);
    const at::Tensor s = per_sample(sigmas.to(mt), latents, "batch");
    const at::Tensor x0 = latents.to(mt), eps = noise.to(mt);
    FlowMatchingBatch b;
    b.noisy = ((1.0 - s) * x0 + s * eps).to(latents.scalar_type());
    b.target = (eps - x0).to(latents.scalar_type());
    b.timesteps = sigmas.to(at::kFloat) * 1000.0;
    return b;
}

// model_pred [B, ...], target [B, ...] -> [B]
at::Tensor flow_matching_loss_per_sample(const at::Tensor& model_pred, const at::Tensor& target) {
    if (!model_pred.defined() || !target.defined() || model_pred.sizes() != target.sizes() ||
        model_pred.dim() < 1)
        fail(kComponent, "loss", "model_pred and target must have equal shapes [B, ...], got {} and {}",
             model_pred.defined() ? model_pred.sizes() : at::IntArrayRef{},
             target.defined() ? target.sizes() : at::IntArrayRef{});
    const at::Tensor diff = model_pred.to(at_least_f32(model_pred)) - target.to(at_least_f32(model_pred));
    return diff.square().reshape({diff.size(0), -1}).mean(1);
}

at::Tensor flow_matching_loss(const at::Tensor& model_pred, const at::Tensor& target) {
    return flow_matching_loss_per_sample(model_pred, target).mean();
}

at::Tensor x0_from_velocity(const at::Tensor& noisy, const at::Tensor& velocity, const at::Tensor& sigmas) {
    if (!noisy.defined() || !velocity.defined() || noisy.sizes() != velocity.sizes())
        fail(kComponent, "x0", "noisy and velocity must have equal shapes");
    const auto mt = at_least_f32(noisy);
    const at::Tensor s = per_sample(sigmas.to(mt), noisy, "x0");
    return (noisy.to(mt) - s * velocity.to(mt)).to(noisy.scalar_type());
}

}  // namespace st::sdk
