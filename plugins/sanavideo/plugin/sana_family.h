// The `model.sanavideo@1` component: st::sdk::ModelFamily for Sana Video 2B 480p on the core library
// (plugins/sanavideo/core: the transformer, the Gemma-2 text encoder and prompt handling) and the
// family kit (the Wan 2.1 VAE). Who calls: the host's trainer (load / trainable / predict / taps /
// noise schedule), the data backend (the Encoders half) and `st-host probe|forward|make-model`.
//
// Files of this folder: plugin.cpp (the only exporting file), sana_family.cpp (load, predict, encoders,
// schedule), sana_paths.cpp (options, where each network lives), sana_tools.cpp (probe, `st-host
// forward` components), sana_make_model.cpp (presets), sana_bench.cpp (`st-host bench --plugin
// sanavideo`).
#pragma once

#include <torch/nn/module.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/sana_checkpoint.h"
#include "core/sana_transformer.h"
#include "st/bucket_alignment.h"
#include "st/kit/vae.h"
#include "st/model.h"
#include "st/options.h"

namespace st::plugins::sanavideo {

class SanaTextEncoder;

/// Where each network of a Sana Video model lives.
struct SanaModelPaths {
    std::filesystem::path root;
    std::filesystem::path transformer;   ///< handed to locate_sana_transformer with `transformer_subfolder`
    std::string transformer_subfolder;   ///< "transformer" or "" (the path is the transformer)
    std::filesystem::path vae;           ///< vae/ folder or file ({} when absent)
    std::filesystem::path text_encoder;  ///< text_encoder/ (Gemma2Model) ({} when absent)
    std::filesystem::path tokenizer;     ///< tokenizer/ (tokenizer.model) ({} when absent)
    std::filesystem::path scheduler_config;  ///< scheduler/scheduler_config.json ({} when absent)
};

/// The config keys model.sanavideo@1 owns (SimpleTuner names and defaults).
std::vector<st::sdk::OptionSpec> sana_option_specs();
std::string sana_component_summary();
/// sana_complex_human_instruction as SimpleTuner reads it: unset or text = on; null, "None", "", false = off.
bool sana_complex_human_instruction_on(const st::sdk::ConfigView& config);
/// pretrained_transformer_model_name_or_path / _subfolder and pretrained_vae_model_name_or_path
/// overrides; logs one line per override used.
SanaModelPaths resolve_sana_paths(const std::filesystem::path& model, const st::sdk::ConfigView& config);
/// Random model in the diffusers SanaVideoPipeline layout (presets "tiny", "small", "2b-480p").
void write_sana_model(const std::string& preset, const std::filesystem::path& out, uint64_t seed);
std::vector<std::string> sana_presets();
/// `st-host bench --plugin sanavideo` (sana_bench.cpp): args [--presets tiny,small,2b-480p]
/// [--latent FxHxW] [--text-len N] [--steps N] [--json]; --json adds one JSON object on the last line.
int run_sana_bench(const std::vector<std::string>& args);
/// `st-host forward` components (transformer, text_encoder, prompt_embeds, vae_encode, vae_decode).
std::vector<std::string> sana_forward_components();
st::sdk::TensorMap run_sana_forward(const std::filesystem::path& model, const std::string& component,
                                    const st::sdk::TensorMap& inputs, const st::sdk::ConfigView& config);
/// The training sigma table of a scheduler_config.json as SimpleTuner builds it: diffusers'
/// FlowMatchEulerDiscreteScheduler over that config (its `shift`, default 1; a DPM-Solver config's
/// `flow_shift` is not read): sigma_i = s(1 - i / N) for i = 0..N-1, N = num_train_timesteps.
std::vector<float> sana_training_sigma_table(const std::filesystem::path& scheduler_config);
/// The sampler a scheduler_config.json names (DPMSolverMultistepScheduler -> "dpmsolver++",
/// FlowMatchEulerDiscreteScheduler -> "euler", UniPCMultistepScheduler -> "unipc"); without a file:
/// Euler flow with shift 8 (the Sana Video pipeline's I2V scheduler).
st::sdk::SamplingDefaults sana_sampling_defaults(const std::filesystem::path& scheduler_config);

/// Capabilities: tools@1, taps@1 (CREPA), noise_schedule@1, negative_prompt@1. No token_routing@1: the
/// feed-forward convolves the full latent grid, so TREAD cannot drop tokens (SimpleTuner routes none either).
class SanaVideoFamily final : public st::sdk::ModelFamily,
                              public st::sdk::ModelTools,
                              public st::sdk::TapProvider,
                              public st::sdk::NoiseSchedule,
                              public st::sdk::NegativePromptEncoding,
                              public st::sdk::BucketAlignment {
  public:
    SanaVideoFamily();
    ~SanaVideoFamily() override;
    st::sdk::Capability* capability(std::string_view id) override;

    // ---- Encoders ------------------------------------------------------------------------------
    std::string cache_identity() const override;
    int spatial_multiple() const override { return 16; }
    /// SimpleTuner keeps its global aspect_bucket_alignment default (64) for Sana Video and lets the
    /// user choose another.
    int bucket_alignment() const override { return 64; }
    bool bucket_alignment_required() const override { return false; }
    int temporal_multiple() const override { return 4; }
    /// pixels [B, 3, F, H, W] -> {"latents": the Wan 2.1 VAE's normalised posterior mean}
    st::sdk::TensorMap encode_video(const at::Tensor& pixels) override;
    /// captions -> {"prompt_embeds" [B, 300, 2304], "prompt_attention_mask" [B, 300]}: the Sana Video
    /// pipeline's prompt handling (complex human instruction and motion score on every prompt, caption
    /// dropout's "" too, as SimpleTuner).
    st::sdk::TensorMap encode_text(const std::vector<std::string>& captions) override;
    /// The pipeline's negative prompt: no complex human instruction, no motion score.
    st::sdk::TensorMap encode_negative_text(const std::vector<std::string>& negatives) override;

    // ---- tools ---------------------------------------------------------------------------------
    st::sdk::ProbeResult probe(const std::filesystem::path& path) const override;
    std::vector<std::string> presets() const override { return sana_presets(); }
    void make_model(const std::string& preset, const std::filesystem::path& out, uint64_t seed) override {
        write_sana_model(preset, out, seed);
    }
    std::vector<std::string> forward_components() const override { return sana_forward_components(); }
    st::sdk::TensorMap forward_component(const std::filesystem::path& model, const std::string& component,
                                         const st::sdk::TensorMap& inputs,
                                         const st::sdk::ConfigView& config) override {
        return run_sana_forward(model, component, inputs, config);
    }

    // ---- training ------------------------------------------------------------------------------
    void load(const st::sdk::ModelLoadRequest& request) override;
    torch::nn::Module& trainable() override;
    std::vector<std::string> default_lora_targets() const override {
        return {"to_k", "to_q", "to_v", "to_out.0"};
    }
    void save_trainable(const std::filesystem::path& dir) override;
    st::sdk::PredictOutput predict(const st::sdk::PredictInputs& inputs) override;
    std::vector<std::string> taps() const override;
    st::sdk::TapGeometry tap_geometry(const std::string& tap,
                                      const std::vector<int64_t>& latent_shape) const override;
    at::Tensor sample_training_sigmas(int64_t batch, at::Generator generator) const override;
    std::string training_schedule_summary() const override;
    st::sdk::SamplingDefaults sampling_defaults() const override;

    // ---- outputs ---------------------------------------------------------------------------------
    std::vector<int64_t> latent_shape(int64_t frames, int64_t height, int64_t width) const override;
    at::Tensor decode_latents(const at::Tensor& latents) override;
    void release_encoders() override;

  private:
    void require_loaded(const char* what) const;
    st::kit::WanVAE& vae();
    SanaTextEncoder& text();

    bool loaded_ = false;
    SanaModelPaths paths_;
    at::ScalarType dtype_ = at::kFloat;
    at::Device device_ = at::kCPU;
    LoadedSanaTransformer transformer_;
    std::vector<float> sigma_table_;
    bool motion_score_set_ = false;
    int64_t motion_score_ = 0;
    bool complex_human_instruction_ = true;
    std::optional<st::kit::WanVAE> vae_;
    std::unique_ptr<SanaTextEncoder> text_;
};

}  // namespace st::plugins::sanavideo
