// The host's one adapter to a model family plugin: creates the family, forwards every call through
// call_plugin (so errors name plugin, component and phase), and is the only place that asks for
// capabilities (st/model.h) or would test a plugin's ABI minor. Nothing else in host/ names a
// capability's id or a family.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "plugins/registry.h"
#include "st/model.h"

namespace torch::nn {
class Module;
}

namespace st::host {

class ModelHandle {
  public:
    /// Creates the family through the component's factory (errors name the plugin).
    explicit ModelHandle(const ComponentEntry& entry);
    ~ModelHandle();
    ModelHandle(const ModelHandle&) = delete;
    ModelHandle& operator=(const ModelHandle&) = delete;

    const ComponentEntry& entry() const { return entry_; }
    /// The family itself, for handing to data backends as their Encoders.
    sdk::ModelFamily& family() { return *family_; }

    // ---- core ------------------------------------------------------------------------------------
    void load(const sdk::ModelLoadRequest& request);
    /// The device the model was loaded on (the request's; CPU before load()).
    c10::Device device() const { return device_; }
    torch::nn::Module& trainable();
    std::string trainable_folder() const;
    std::vector<std::string> default_lora_targets() const;
    sdk::LoraNameMap lora_name_map() const;
    void save_trainable(const std::filesystem::path& dir);
    sdk::PredictOutput predict(const sdk::PredictInputs& inputs);
    sdk::TensorMap encode_text(const std::vector<std::string>& captions);
    /// negative_prompt@1's encode_negative_text, else encode_text.
    sdk::TensorMap encode_negative_text(const std::vector<std::string>& negatives);
    std::vector<int64_t> latent_shape(int64_t frames, int64_t height, int64_t width) const;
    /// decode_latents(), checked: [B, 3, F, H, W].
    at::Tensor decode_latents(const at::Tensor& latents);
    std::vector<sdk::SamplingInput> sampling_inputs() const;
    /// Whether sampling needs an input of `kind`.
    bool samples_from(sdk::MediaKind kind) const;
    std::vector<sdk::MediaKind> sample_media() const;
    void release_encoders();

    // ---- capabilities ------------------------------------------------------------------------------
    /// tools@1 (st::Error when the family has none, naming `command`).
    sdk::ProbeResult probe(const std::filesystem::path& path, const std::string& command);
    std::vector<std::string> presets(const std::string& command);
    void make_model(const std::string& preset, const std::filesystem::path& out, uint64_t seed);
    std::vector<std::string> forward_components(const std::string& command);
    sdk::TensorMap forward_component(const std::filesystem::path& model, const std::string& component,
                                     const sdk::TensorMap& inputs, const sdk::ConfigView& config);
    /// image_conditioning@1: image [B, 3, H, W] in [-1, 1] -> conditioning tensors; st::Error when the
    /// family has no image conditioning.
    sdk::TensorMap encode_conditioning_image(const at::Tensor& image, int64_t frames);
    /// audio_conditioning@1: st::Error when the family takes no audio.
    int audio_sample_rate();
    sdk::TensorMap encode_audio(const at::Tensor& waveform, double fps, int64_t frames);
    /// experts@1: the boundary timestep, nullopt without the capability or with one network loaded.
    std::optional<double> expert_boundary();
    /// taps@1: tap names; empty without the capability.
    std::vector<std::string> taps();
    /// taps@1: where `tap`'s tokens sit for latents [C, F', H', W'] (st::Error without the capability).
    sdk::TapGeometry tap_geometry(const std::string& tap, const std::vector<int64_t>& latent_shape);
    /// token_routing@1: the number of blocks TREAD routes index; nullopt without the capability.
    std::optional<int64_t> routable_blocks();
    /// guidance@1, else sdk::default_unconditional.
    sdk::TensorMap unconditional(const sdk::TensorMap& conditional, const sdk::TensorMap& negative_text);
    /// noise_schedule@1: the family's own training sigmas [batch] (float32 CPU); nullopt without it.
    std::optional<at::Tensor> family_training_sigmas(int64_t batch, at::Generator generator);
    /// noise_schedule@1: how those sigmas are drawn (one log line); nullopt without it.
    std::optional<std::string> training_schedule_summary();
    /// noise_schedule@1: the model's shipped sampler and pipeline defaults; nullopt without it.
    std::optional<sdk::SamplingDefaults> sampling_defaults();
    /// base_weights@1, before load(): a plan other than the default on a family without it is an
    /// st::Error naming the family and the keys (a LoRA run's no_change is the default there).
    void set_base_weights(const sdk::BaseWeightPlan& plan);
    /// The capability ids this family offers now, for logs ("tools@1, image_conditioning@1").
    std::string capability_list();

  private:
    template <typename T>
    T* find();
    template <typename T>
    T& require(const std::string& what);

    const ComponentEntry& entry_;
    std::unique_ptr<sdk::ModelFamily> family_;
    c10::Device device_{c10::kCPU};
};

}  // namespace st::host
