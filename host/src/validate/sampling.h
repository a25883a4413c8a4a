// The one sampling path of st: validation during training and `st-host generate` both render a
// video through sample_video(). Text plus the model's sampling inputs, classifier-free guidance (the
// unconditional branch as the model's guidance policy builds it from the negative prompt),
// skip-layer guidance on that branch, per-expert guidance, and the SDK's flow-matching samplers
// (st/samplers.h).
//
// Follows diffusers WanPipeline.__call__ / WanImageToVideoPipeline.__call__ (the denoising loop)
// with SimpleTuner's choices (inventory §6): initial noise from a CPU generator seeded per render,
// uncond + g * (cond - uncond), the sampler's timesteps as model input.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "plugins/model_handle.h"
#include "st/model.h"
#include "st/samplers.h"

namespace st::host::validate {

/// Width x height of one rendered video.
struct Resolution {
    int64_t width = 0;
    int64_t height = 0;
    std::string str() const;  ///< "WxH"
};

/// SimpleTuner's `validation_resolution`: "WxH", a single edge "480" (= 480x480), or a comma list of
/// either ("832x480,480x832"). Throws st::Error naming `key` and the bad entry.
std::vector<Resolution> parse_resolutions(const std::string& text, const std::string& key);

struct SampleRequest {
    /// encode_text() of the prompt (whatever the family names them, e.g. Wan: "prompt_embeds" [1, L, D]).
    sdk::TensorMap positive;
    /// encode_text() of the negative prompt; required when guidance > 1 (the unconditional branch).
    sdk::TensorMap negative;
    /// The encodings of the model's sampling inputs (ModelFamily::sampling_inputs: a conditioning or
    /// reference image, driving audio, ...). The conditional branch gets them with `positive`; the
    /// unconditional branch is what the model's guidance policy builds from both and `negative`.
    sdk::TensorMap inputs;
    int64_t frames = 17;
    Resolution size{64, 64};
    int64_t steps = 30;
    /// CFG scale; <= 1: one conditional pass per step, no negative prompt.
    double guidance = 1.0;
    /// CFG scale of the steps whose timestep is below the model's expert boundary (experts@1, diffusers
    /// guidance_scale_2). Unset, or a model without a boundary: `guidance`.
    std::optional<double> guidance_2;
    /// "euler" / "flow_match_euler" / "unipc" / "dpmsolver++" (st::sdk::make_sampler names).
    std::string scheduler = "euler";
    sdk::SamplerConfig sampler;
    /// Seeds the CPU generator of the initial noise [1, C, F', H', W'] (float32 standard normal).
    uint64_t seed = 0;
    /// Skip-layer guidance: the unconditional pass of step i skips these blocks when i / steps is in
    /// [skip_start, skip_stop). Needs guidance > 1.
    std::vector<int64_t> skip_layers;
    double skip_start = 0.01;
    double skip_stop = 0.2;
    /// Called after each sampling step with (step index, latents after the step, x0 estimate of
    /// that step [1, C, F', H', W'] float32). May be empty.
    std::function<void(int64_t, const at::Tensor&, const at::Tensor&)> on_step;
    /// Shown as a progress line over the sampling steps ("validation 'fox' 480x832"); empty = none.
    std::string progress_label;
    /// Asked before every sampling step; true ends the sampling with SamplingStopped (a Ctrl-C during
    /// a validation stops it at the next step instead of after minutes of rendering).
    std::function<bool()> should_stop;
};

/// Whether skip-layer guidance applies at step `step` of `steps` (step / steps in [start, stop)).
bool skip_layers_active(int64_t step, int64_t steps, double start, double stop);

/// Thrown by sample_latents() when SampleRequest::should_stop says so; what() names the step.
struct SamplingStopped : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Denoises from noise to the final latents [1, C, F', H', W'] (float32, CPU). Runs without
/// gradients. Throws st::Error for a request the model cannot take (sizes, missing negative, ...).
at::Tensor sample_latents(ModelHandle& model, const SampleRequest& request);

/// sample_latents() then decode_latents(): one video [3, F, H, W] in [-1, 1], float32 on the CPU.
at::Tensor sample_video(ModelHandle& model, const SampleRequest& request);

/// Reads the first video frame of an image or video file (PNG, JPEG, MP4, ...) with the FFmpeg
/// libraries: uint8 [H, W, 3] RGB. Throws st::Error naming the file when it cannot be decoded.
at::Tensor read_first_frame(const std::filesystem::path& path);

/// uint8 [H, W, 3] -> float [1, 3, size.height, size.width] in [-1, 1]: scaled to cover the target,
/// then centre-cropped (SimpleTuner's validation image handling: resize to the render size).
at::Tensor conditioning_image(const at::Tensor& frame_u8, const Resolution& size);

}  // namespace st::host::validate
