// The `model.wan_s2v@1` component: st::sdk::ModelFamily for Wan 2.2 S2V (speech-to-video) on the
// S2V core library (plugins/wan_s2v/core: transformer, Wav2Vec2) and the Wan core library
// (plugins/wan/core: VAE, UMT5, tokenizer, pipeline paths). Who calls: the host's trainer (load /
// trainable / predict), the data backend (the Encoders half: latents + reference latent, prompt
// embeddings, audio features for its caches), validation / `st-host generate` (sampling_inputs,
// encode_conditioning_image = the reference image, encode_audio = the driving audio) and the tools
// `st-host probe|forward|make-model|bench`.
//
// Files of this folder: plugin.cpp (the only exporting file), s2v_family.cpp (load, predict,
// encoders, probe), s2v_family_io.cpp (ABI 1.1/1.2 methods, forward components), s2v_options.cpp
// (option table, paths), s2v_make_model.cpp (presets), s2v_bench.cpp (`st-host bench --plugin wan_s2v`).
#pragma once

#include <torch/nn/module.h>
#include <algorithm>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/encoder_set.h"
#include "core/kit_names.h"
#include "core/model_paths.h"
#include "core/s2v_checkpoint.h"
#include "core/s2v_key_map.h"
#include "core/wav2vec2.h"
#include "st/bucket_alignment.h"
#include "st/kit/umt5_config.h"
#include "st/kit/vae_config.h"
#include "st/model.h"
#include "st/options.h"

namespace st::plugins::wan_s2v {

inline constexpr const char* kS2VComponentId = "model.wan_s2v@1";
inline constexpr const char* kS2VFlavour = "s2v-14b-2.2";

/// The config keys model.wan_s2v@1 reads (the Wan pipeline keys are shared with model.wan@1).
std::vector<st::sdk::OptionSpec> s2v_option_specs();
std::string s2v_component_summary();

/// The pipeline paths plus the audio encoder: pretrained_audio_encoder_model_name_or_path, else
/// <model>/audio_encoder (diffusers port) or <model>/wav2vec2-large-xlsr-53-english (Wan-AI repo).
struct S2VModelPaths {
    st::plugins::wan::WanModelPaths pipeline;
    std::filesystem::path audio_encoder;  ///< empty when none was found
};
S2VModelPaths resolve_s2v_paths(const std::filesystem::path& model, const st::sdk::ConfigView& config);

/// The sizes of one make-model / bench preset ("tiny", "small"; s2v_make_model.cpp).
struct S2VPreset {
    WanS2VConfig transformer;
    Wav2Vec2Config audio;
    st::plugins::wan::WanVAEConfig vae;
    st::plugins::wan::UMT5Config text_encoder;
    int tokenizer_vocab = 200;
};
S2VPreset s2v_preset(const std::string& preset);

/// Writes a random S2V model in the diffusers pipeline layout (presets "tiny", "small").
void write_s2v_model(const std::string& preset, const std::filesystem::path& out, uint64_t seed);

/// Number of audio frames (video rate) S2V needs for `frames` video frames: 4 per latent frame.
int64_t audio_frames_for(int64_t frames);

/// `st-host bench --plugin wan_s2v`: step time, peak RSS, audio encoding speed (s2v_bench.cpp).
int run_s2v_bench(const std::vector<std::string>& args);

/// Capabilities: tools@1, image_conditioning@1 (the reference image), audio_conditioning@1 (the
/// driving audio; training samples carry audio), taps@1 and guidance@1 (the unconditional branch gets
/// the audio features times 0, as upstream Wan S2V), token_routing@1 (TREAD on the noisy tokens).
class WanS2VFamily final : public st::sdk::ModelFamily,
                           public st::sdk::ModelTools,
                           public st::sdk::ImageConditioning,
                           public st::sdk::AudioConditioning,
                           public st::sdk::TapProvider,
                           public st::sdk::GuidancePolicy,
                           public st::sdk::TokenRouting,
                           public st::sdk::BucketAlignment,
                           public st::sdk::BaseWeights {
  public:
    WanS2VFamily();
    ~WanS2VFamily() override;
    st::sdk::Capability* capability(std::string_view id) override;
    /// base_weights@1: the next load() stores the Linear weights as planned (Wan's quanto rules).
    void set_base_weights(const st::sdk::BaseWeightPlan& plan) override { base_ = plan; }
    std::vector<st::sdk::MediaKind> sample_media() const override { return {st::sdk::MediaKind::audio}; }

    // ---- Encoders ------------------------------------------------------------------------------
    std::string cache_identity() const override;
    int spatial_multiple() const override;
    /// SimpleTuner's S2V rule: 32 whatever aspect_bucket_alignment says.
    int bucket_alignment() const override { return std::max(32, spatial_multiple()); }
    bool bucket_alignment_required() const override { return true; }
    int temporal_multiple() const override { return 4; }
    /// pixels [B, 3, F, H, W] in [-1, 1] -> {"latents": normalised [B, 16, F', H/8, W/8],
    /// "image_latents": latents[:, :, :1] (the reference = first clean latent frame, as the
    /// reference trainer feeds it)}
    st::sdk::TensorMap encode_video(const at::Tensor& pixels) override;
    /// captions -> {"prompt_embeds": [B, 512, text_dim]}
    st::sdk::TensorMap encode_text(const std::vector<std::string>& captions) override;
    /// waveform [B, N] mono 16 kHz covering `frames` video frames at `fps` ->
    /// {"audio_embeds": [B, hidden_states, audio_dim, 4 * (1 + (frames - 1) / 4)]}
    st::sdk::TensorMap encode_audio(const at::Tensor& waveform, double fps, int64_t frames) override;
    int audio_sample_rate() const override { return 16000; }
    /// TREAD routes index the transformer's blocks; they route the noisy video tokens only (reference
    /// and motion tokens always take part; the audio injectors follow each kept token's frame).
    int64_t routable_blocks() const override;

    // ---- tools ---------------------------------------------------------------------------------
    st::sdk::ProbeResult probe(const std::filesystem::path& path) const override;
    std::vector<std::string> presets() const override { return {"tiny", "small"}; }
    void make_model(const std::string& preset, const std::filesystem::path& out, uint64_t seed) override;
    std::vector<std::string> forward_components() const override { return {"transformer", "audio_encoder"}; }
    st::sdk::TensorMap forward_component(const std::filesystem::path& model, const std::string& component,
                                         const st::sdk::TensorMap& inputs,
                                         const st::sdk::ConfigView& config) override;

    // ---- training ------------------------------------------------------------------------------
    void load(const st::sdk::ModelLoadRequest& request) override;
    torch::nn::Module& trainable() override;
    /// SimpleTuner's defaults; they also hit the audio injector attentions (to_q/k/v/out.0).
    std::vector<std::string> default_lora_targets() const override {
        return {"to_q", "to_k", "to_v", "to_out.0"};
    }
    /// patch_embed_out, text_embedder_out, blocks.N.out (video tokens only: reference and motion
    /// tokens are cut off).
    std::vector<std::string> taps() const override;
    st::sdk::TapGeometry tap_geometry(const std::string& tap,
                                      const std::vector<int64_t>& latent_shape) const override;
    /// default_unconditional with every audio feature tensor (encode_audio's names) times 0.
    st::sdk::TensorMap unconditional(const st::sdk::TensorMap& conditional,
                                     const st::sdk::TensorMap& negative_text) const override;
    /// conditioning: prompt_embeds, audio_embeds, image_latents (reference), optional pose_latents
    /// and motion_latents (with motion the reference pipeline's [73, 19] framing is used).
    st::sdk::PredictOutput predict(const st::sdk::PredictInputs& inputs) override;

    // ---- outputs, sampling (s2v_family_io.cpp) ----------------------------------------------------
    st::sdk::LoraNameMap lora_name_map() const override;
    void save_trainable(const std::filesystem::path& dir) override;
    std::vector<int64_t> latent_shape(int64_t frames, int64_t height, int64_t width) const override;
    at::Tensor decode_latents(const at::Tensor& latents) override;
    /// The reference image [B, 3, H, W] -> {"image_latents": VAE(image as a 1-frame video) [B, 16, 1, h, w]}
    st::sdk::TensorMap encode_conditioning_image(const at::Tensor& image, int64_t frames) override;
    void release_encoders() override;
    /// A reference image and the driving audio.
    std::vector<st::sdk::SamplingInput> sampling_inputs() const override {
        return {{"reference image", st::sdk::MediaKind::image}, {"driving audio", st::sdk::MediaKind::audio}};
    }

    /// After load(): the detected transformer.
    const S2VCheckpointInfo& checkpoint_info() const;

  private:
    void require_loaded(const char* what) const;
    Wav2Vec2AudioEncoder& audio_encoder();

    bool loaded_ = false;
    S2VModelPaths paths_;
    at::ScalarType dtype_ = at::kFloat;
    at::Device device_ = at::kCPU;
    LoadedS2VTransformer transformer_;
    st::sdk::BaseWeightPlan base_;
    st::plugins::wan::WanEncoderSet encoders_;
    std::optional<Wav2Vec2AudioEncoder> audio_encoder_;
};

}  // namespace st::plugins::wan_s2v
