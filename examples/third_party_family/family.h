// model.minidit@1: the example's model family on st's SDK and family kit. The core (load, trainable,
// predict, encoders, latent geometry) plus one capability, tools@1 (probe, presets, make-model,
// forward). The pipeline folder it reads and writes:
//   model_index.json                 {"_class_name": "MiniDiTPipeline", ...}
//   transformer/config.json + diffusion_pytorch_model.safetensors   (MiniDiT)
//   vae/        the Wan 2.1 VAE (st::kit::load_wan_vae)
//   text_encoder/ + tokenizer/       UMT5 + its sentencepiece tokenizer (st::kit)
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "minidit.h"
#include "st/kit/tokenizer.h"
#include "st/kit/umt5.h"
#include "st/kit/vae.h"
#include "st/model.h"

namespace example::minidit {

inline constexpr const char* kComponentId = "model.minidit@1";

class MiniDiTFamily final : public st::sdk::ModelFamily, public st::sdk::ModelTools {
  public:
    st::sdk::Capability* capability(std::string_view id) override;

    // ---- Encoders (the data backend caches with these) ----
    std::string cache_identity() const override;
    int spatial_multiple() const override;  ///< VAE stride x patch
    int temporal_multiple() const override { return 4; }
    st::sdk::TensorMap encode_video(const at::Tensor& pixels) override;  ///< {"latents"} normalised
    st::sdk::TensorMap encode_text(const std::vector<std::string>& captions) override;  ///< {"prompt_embeds"}

    // ---- core ----
    void load(const st::sdk::ModelLoadRequest& request) override;
    torch::nn::Module& trainable() override;
    std::vector<std::string> default_lora_targets() const override {
        return {"to_q", "to_k", "to_v", "to_out"};
    }
    void save_trainable(const std::filesystem::path& dir) override;
    /// conditioning "prompt_embeds" [B, L, text_dim] -> velocity [B, C, F, H, W]
    st::sdk::PredictOutput predict(const st::sdk::PredictInputs& inputs) override;
    std::vector<int64_t> latent_shape(int64_t frames, int64_t height, int64_t width) const override;
    at::Tensor decode_latents(const at::Tensor& latents) override;
    void release_encoders() override;

    // ---- tools@1 ----
    st::sdk::ProbeResult probe(const std::filesystem::path& path) const override;
    std::vector<std::string> presets() const override { return {"tiny"}; }
    void make_model(const std::string& preset, const std::filesystem::path& out, uint64_t seed) override;
    std::vector<std::string> forward_components() const override { return {"transformer"}; }
    st::sdk::TensorMap forward_component(const std::filesystem::path& model, const std::string& component,
                                         const st::sdk::TensorMap& inputs,
                                         const st::sdk::ConfigView& config) override;

  private:
    void require_loaded(const char* what) const;
    st::kit::WanVAE& vae();
    st::kit::UMT5Encoder& text_encoder();
    st::kit::UMT5Tokenizer& tokenizer();

    bool loaded_ = false;
    std::filesystem::path root_;
    at::ScalarType dtype_ = at::kFloat;
    at::Device device_ = at::kCPU;
    MiniDiT model_{nullptr};
    // Encoders load on first use: a run with warm caches never needs them.
    std::optional<st::kit::WanVAE> vae_;
    st::kit::UMT5Encoder text_encoder_{nullptr};
    std::unique_ptr<st::kit::UMT5Tokenizer> tokenizer_;
};

/// The transformer of a pipeline folder (or a transformer folder): its config and strictly loaded weights.
MiniDiT load_minidit(const std::filesystem::path& path);

}  // namespace example::minidit
