// Model family components (`model.<family>@N`, e.g. model.wan@1): everything st needs to know
// about one family of networks. The host never names a family: it only talks to this interface.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "st/data_backend.h"
#include "st/options.h"
#include "st/tensors.h"

namespace torch::nn {
class Module;
}

namespace st::sdk {

/// Answer of probe(): can this family load the path, and which variant is it.
struct ProbeResult {
    bool loadable = false;
    std::string variant;  ///< e.g. "t2v-1.3b-2.1 (diffusers layout, bf16)"
    std::string reason;   ///< why not, when !loadable
};

struct ModelLoadRequest {
    std::filesystem::path path;         ///< pretrained_model_name_or_path (resolved local path)
    ConfigView config;                  ///< resolved configuration (flavour, subfolders, dtype keys, ...)
    at::ScalarType dtype = at::kFloat;  ///< compute / weight dtype (mixed_precision)
    at::Device device = at::kCPU;
    bool training = true;  ///< false: inference only (no grads needed)
};

/// Inputs of one velocity prediction. Shapes: noisy [B,C,F,H,W], timesteps [B] (sigma*1000) or
/// per token [B,L]; `conditioning` carries the batch tensors (prompt_embeds, image/audio latents).
struct PredictInputs {
    at::Tensor noisy;
    at::Tensor timesteps;
    TensorMap conditioning;
    std::vector<std::string> taps;  ///< activations to return (see taps())
    // ---- ABI 1.1 (appended; a 1.0 plugin reads only the fields above) ----
    /// Transformer block indices to skip in this pass (skip-layer guidance on the unconditional
    /// branch). Empty: every block runs. A family that cannot skip blocks throws st::Error.
    std::vector<int64_t> skip_layers;
};

struct PredictOutput {
    at::Tensor velocity;  ///< [B,C_out,F,H,W], same layout as noisy
    TensorMap taps;       ///< requested activations by name
};

/// Our module path -> the family's native module path (same type as st/lora.h's LoraNameMap).
using LoraNameMap = std::function<std::string(const std::string&)>;

/// All calls come from the host's trainer/validation thread. Methods may throw st::Error.
class ModelFamily : public Encoders {
  public:
    ~ModelFamily() override;

    // ---- tools (no load() needed) -------------------------------------------------------------
    /// Whether `path` (a diffusers folder, a single file, ...) is a checkpoint of this family.
    /// Must not throw for foreign paths: return loadable=false with a reason.
    virtual ProbeResult probe(const std::filesystem::path& path) const = 0;
    /// Presets for `st-host make-model` ("tiny", "small", ...).
    virtual std::vector<std::string> presets() const = 0;
    /// Writes a randomly initialised model in the family's real on-disk layout.
    virtual void make_model(const std::string& preset, const std::filesystem::path& out, uint64_t seed) = 0;
    /// Component names for `st-host forward` ("transformer", "vae_encode", ...).
    virtual std::vector<std::string> forward_components() const = 0;
    /// Runs one component of the model at `model` on named inputs; returns named outputs.
    virtual TensorMap forward_component(const std::filesystem::path& model, const std::string& component,
                                        const TensorMap& inputs, const ConfigView& config) = 0;

    // ---- training -----------------------------------------------------------------------------
    /// Loads all networks needed for training/inference. Strict: a missing, unexpected or
    /// wrongly shaped tensor is an error naming it. Logs the detected variant in one line.
    virtual void load(const ModelLoadRequest& request) = 0;
    /// The network being trained (after load()). Parameter names are the checkpoint's names.
    virtual torch::nn::Module& trainable() = 0;
    /// Module-name suffixes LoRA targets by default (SimpleTuner's defaults for the family).
    virtual std::vector<std::string> default_lora_targets() const = 0;
    /// Tap names predict() can return ("blocks.8.out", ...).
    virtual std::vector<std::string> taps() const = 0;
    /// Velocity prediction for a noisy batch.
    virtual PredictOutput predict(const PredictInputs& inputs) = 0;

    // ---- ABI 1.1: the host checks the plugin's abi_minor >= 1 before calling these --------------
    /// LoRA module names in the family's native layout (what ComfyUI and the original checkpoints
    /// use, e.g. Wan "blocks.0.self_attn.q" for our "blocks.0.attn1.to_q"). Default: empty function
    /// (no native names; LoRAs are then saved with our names only).
    virtual LoraNameMap lora_name_map() const;
    /// Writes the trained network after a full fine-tune in the family's release layout under `dir`
    /// (created; e.g. a diffusers `transformer/` folder: config.json + safetensors). Default: every
    /// parameter and buffer of trainable() by name in `dir/diffusion_pytorch_model.safetensors`.
    virtual void save_trainable(const std::filesystem::path& dir);
    /// Shape of the latents predict() works on for a video of `frames` x `height` x `width` pixels
    /// ([C, F', H', W'], no batch dim). Default throws st::Error.
    virtual std::vector<int64_t> latent_shape(int64_t frames, int64_t height, int64_t width) const;
    /// latents [B, C, F', H', W'] (normalised like the training latents) -> pixels [B, 3, F, H, W] in
    /// [-1, 1], float32 on the CPU. Default throws st::Error (the family cannot decode).
    virtual at::Tensor decode_latents(const at::Tensor& latents);
    /// Conditioning tensors for image-to-video: image [B, 3, H, W] in [-1, 1] that starts a video of
    /// `frames` pixel frames -> named tensors predict() takes (e.g. "conditioning_latents").
    /// Default throws st::Error (the family has no image conditioning).
    virtual TensorMap encode_conditioning_image(const at::Tensor& image, int64_t frames);
    /// Frees networks only needed for caching (text encoder, VAE encoder) once the caches are
    /// complete; they are loaded again on demand. Default: nothing.
    virtual void release_encoders();

    // ---- ABI 1.2: the host checks the plugin's abi_minor >= 2 before calling ------------------------
    /// What sampling (validation, `st-host generate`) must supply besides the prompt:
    ///   "image": a conditioning / reference image, passed through encode_conditioning_image();
    ///   "audio": driving audio, passed through encode_audio() with the video's fps and frame count
    ///            (the unconditional CFG branch gets the features multiplied by 0, as upstream Wan S2V).
    /// A sample lacking a required input is refused with a message. Default: empty (text only).
    virtual std::vector<std::string> sampling_inputs() const;

    // ---- ABI 1.3: the host checks the plugin's abi_minor >= 3 before calling ------------------------
    /// Model-input timestep (sigma x 1000) at which sampling hands over from one network to another
    /// (Wan 2.2 A14B experts: the high-noise expert for t >= boundary, the low-noise one below, as
    /// diffusers' `boundary_ratio x num_train_timesteps`). Samplers apply `validation_guidance_2`
    /// (diffusers `guidance_scale_2`) to steps with t < boundary. nullopt (default): one network
    /// denoises every step, so one guidance scale applies. Only valid after load().
    virtual std::optional<double> expert_boundary() const;
};

using ModelFactory = std::function<std::unique_ptr<ModelFamily>()>;

}  // namespace st::sdk
