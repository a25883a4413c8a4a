// The `model.wan@1` component: st::sdk::ModelFamily for Wan 2.1/2.2 (T2V, I2V 2.1, I2V/T2V A14B
// experts, TI2V 5B) on top of the core library (plugins/wan/core). Who calls: the host's trainer
// (load / trainable / predict / taps), the data backend (the Encoders half: latents and prompt
// embeddings for its cache) and the tools `st-host probe|forward|make-model`.
//
// Files of this folder: plugin.cpp (the only exporting file), wan_family.cpp (load, predict,
// encoders, probe), wan_paths.cpp (where each sub-network of a model lives, the option table),
// wan_forward.cpp (`st-host forward` components), wan_make_model.cpp (presets).
#pragma once

#include <torch/nn/module.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "core/encoder_set.h"
#include "core/kit_names.h"
#include "core/model_paths.h"
#include "core/transformer.h"
#include "st/bucket_alignment.h"
#include "st/kit/umt5.h"
#include "st/kit/vae.h"
#include "st/model.h"
#include "st/options.h"

namespace st::kit {
class UMT5Tokenizer;
}  // namespace st::kit

namespace st::plugins::wan {

inline constexpr const char* kWanComponentId = "model.wan@1";

/// The config keys model.wan@1 owns (SimpleTuner names and defaults, inventory §1.2-1.3).
std::vector<st::sdk::OptionSpec> wan_option_specs();
/// One-line summary for `st-host plugins` / --help (includes the make-model disk sizes).
std::string wan_component_summary();

/// Where each sub-network of a model lives (core/model_paths.h), with the Wan flavour rules: the
/// default transformer subfolder is replaced by the flavour's (Wan 2.2 experts) in a pipeline, and
/// the other expert becomes the peer. `config` may lack every wan key (then defaults apply: flavour
/// t2v-480p-1.3b-2.1, subfolder "transformer"). Logs one line per override used.
WanModelPaths resolve_model_paths(const std::filesystem::path& model, const st::sdk::ConfigView& config);

/// Runs one `st-host forward` component (tensor names as in shared/golden/MANIFEST.md).
st::sdk::TensorMap run_forward_component(const std::filesystem::path& model, const std::string& component,
                                         const st::sdk::TensorMap& inputs, const st::sdk::ConfigView& config);

/// Writes a random model in the diffusers pipeline layout (presets "tiny", "tiny-i2v", "tiny-i2v21",
/// "tiny-flf2v21", "tiny-a14b", "small", "1.3b", "14b"; t2v-1.3b / t2v-14b name the same).
void write_wan_model(const std::string& preset, const std::filesystem::path& out, uint64_t seed);

/// Capabilities: tools@1, image_conditioning@1 (I2V / FLF2V transformers; a T2V one refuses with a
/// message), experts@1 (Wan 2.2 A14B pairs), taps@1, token_routing@1 (TREAD over every block),
/// base_weights@1 (stored / int8 base weights, block offload to disk).
class WanFamily final : public st::sdk::ModelFamily,
                        public st::sdk::ModelTools,
                        public st::sdk::ImageConditioning,
                        public st::sdk::ExpertSchedule,
                        public st::sdk::TapProvider,
                        public st::sdk::TokenRouting,
                        public st::sdk::BucketAlignment,
                        public st::sdk::BaseWeights {
  public:
    WanFamily();
    ~WanFamily() override;
    st::sdk::Capability* capability(std::string_view id) override;

    // ---- Encoders ------------------------------------------------------------------------------
    std::string cache_identity() const override;
    int spatial_multiple() const override;
    /// SimpleTuner's Wan rule: 32, or 64 for the TI2V 5B flavour, whatever aspect_bucket_alignment says.
    int bucket_alignment() const override;
    bool bucket_alignment_required() const override { return true; }
    int temporal_multiple() const override { return 4; }
    /// pixels [B, 3, F, H, W] in [-1, 1] -> {"latents": normalised posterior mean [B, z, F', H/8, W/8]};
    /// Wan 2.2 I2V transformers also {"conditioning_latents": the encoding of the first frame followed
    /// by black frames} (what predict concatenates), so I2V trains from the data backend's cache.
    st::sdk::TensorMap encode_video(const at::Tensor& pixels) override;
    /// captions -> {"prompt_embeds": [B, 512, text_dim]} (zero rows after each prompt, as Wan does)
    st::sdk::TensorMap encode_text(const std::vector<std::string>& captions) override;

    // ---- tools ---------------------------------------------------------------------------------
    st::sdk::ProbeResult probe(const std::filesystem::path& path) const override;
    std::vector<std::string> presets() const override {
        return {"tiny", "tiny-i2v", "tiny-i2v21", "tiny-flf2v21", "tiny-a14b", "small", "1.3b", "14b"};
    }
    void make_model(const std::string& preset, const std::filesystem::path& out, uint64_t seed) override;
    std::vector<std::string> forward_components() const override {
        return {"transformer", "vae_encode", "vae_decode", "text_encoder", "image_encoder"};
    }
    st::sdk::TensorMap forward_component(const std::filesystem::path& model, const std::string& component,
                                         const st::sdk::TensorMap& inputs,
                                         const st::sdk::ConfigView& config) override;

    // ---- training ------------------------------------------------------------------------------
    /// base_weights@1: the next load() stores the Linear weights as planned (Wan's quanto rules).
    void set_base_weights(const st::sdk::BaseWeightPlan& plan) override;
    void load(const st::sdk::ModelLoadRequest& request) override;
    torch::nn::Module& trainable() override;
    std::vector<std::string> default_lora_targets() const override {
        return {"to_q", "to_k", "to_v", "to_out.0"};
    }
    /// patch_embed_out, text_embedder_out, blocks.N.out (the hidden state after block N).
    std::vector<std::string> taps() const override;
    /// Video taps are [B, F' H' W', dim] over the patch grid (F', H / 2, W / 2) of the latents.
    st::sdk::TapGeometry tap_geometry(const std::string& tap,
                                      const std::vector<int64_t>& latent_shape) const override;
    st::sdk::PredictOutput predict(const st::sdk::PredictInputs& inputs) override;
    /// TREAD routes index the transformer's blocks (num_layers).
    int64_t routable_blocks() const override;

    // ---- outputs, sampling (wan_family_io.cpp) -----------------------------------------------------
    /// Our module names -> the original Wan names ComfyUI loads ("blocks.0.self_attn.q").
    st::sdk::LoraNameMap lora_name_map() const override;
    /// diffusers `transformer/` layout: config.json + diffusion_pytorch_model.safetensors, in the
    /// training dtype.
    void save_trainable(const std::filesystem::path& dir) override;
    /// [z, 1 + (F - 1) / 4, H / 8, W / 8] (stride 16 for the 2.2 VAE).
    std::vector<int64_t> latent_shape(int64_t frames, int64_t height, int64_t width) const override;
    /// latents [B, z, F', H', W'] normalised -> pixels [B, 3, 1 + 4 (F' - 1), H, W] in [-1, 1].
    at::Tensor decode_latents(const at::Tensor& latents) override;
    /// I2V (36-channel transformers): image [B, 3, H, W] -> {"conditioning_latents"}: the VAE
    /// encoding of the image followed by frames - 1 black frames (diffusers WanImageToVideoPipeline),
    /// + "image_embeds" for the CLIP branch. FLF2V takes the image as both first and last frame (what
    /// SimpleTuner's validation does with one image).
    st::sdk::TensorMap encode_conditioning_image(const at::Tensor& image, int64_t frames) override;
    void release_encoders() override;
    /// A first-frame image for image-to-video transformers (36 input channels), else none.
    std::vector<st::sdk::SamplingInput> sampling_inputs() const override;
    /// boundary_ratio x 1000 when both Wan 2.2 experts are loaded (wan_validation_load_other_stage),
    /// else nullopt: sampling then applies one guidance scale, as SimpleTuner's boundary_ratio=None.
    std::optional<double> expert_boundary() const override;

    /// After load(): the detected transformer (variant, layout, config).
    const WanCheckpointInfo& checkpoint_info() const;

  private:
    void require_loaded(const char* what) const;
    /// conditioning_latents (+ image_embeds) from the first frame, and for FLF2V the last frame too.
    st::sdk::TensorMap encode_first_last(const at::Tensor& first, const at::Tensor& last, int64_t frames,
                                         const char* what);
    WanTransformer3DModel& expert_for(const at::Tensor& timesteps);

    bool loaded_ = false;
    WanModelPaths paths_;
    std::string flavour_;
    at::ScalarType dtype_ = at::kFloat;
    at::Device device_ = at::kCPU;
    LoadedTransformer transformer_;
    /// The other Wan 2.2 expert (wan_validation_load_other_stage), frozen, used without grad only.
    std::optional<LoadedTransformer> peer_;
    std::optional<double> boundary_ratio_;
    st::sdk::BaseWeightPlan base_;
    // Encoders are loaded on first use (a training run with a warm cache never needs them).
    WanEncoderSet encoders_;
};

}  // namespace st::plugins::wan
