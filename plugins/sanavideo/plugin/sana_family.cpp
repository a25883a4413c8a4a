// model.sanavideo@1: SanaVideoFamily — load / predict / taps / noise schedule for the trainer, the
// Encoders for the data backend. Pipeline semantics: diffusers SanaVideoPipeline
// (src/diffusers/pipelines/sana_video/pipeline_sana_video.py @ 58eb52c080) with SimpleTuner's
// models/sanavideo/model.py (prompt handling options, training noise schedule).
#include "sana_family.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>

#include "sana_text.h"
#include "st/error.h"
#include "st/kit/diffusers_model.h"
#include "st/log.h"

namespace st::plugins::sanavideo {

namespace fs = std::filesystem;
using st::sdk::TensorMap;

namespace {
constexpr const char* kLog = "model.sanavideo";
}

SanaVideoFamily::SanaVideoFamily() = default;
SanaVideoFamily::~SanaVideoFamily() = default;

void SanaVideoFamily::require_loaded(const char* what) const {
    if (!loaded_) fail(kSanaComponentId, what, "{} called before load()", what);
}

st::sdk::Capability* SanaVideoFamily::capability(std::string_view id) {
    if (id == st::sdk::ModelTools::kId) return static_cast<st::sdk::ModelTools*>(this);
    if (id == st::sdk::TapProvider::kId) return static_cast<st::sdk::TapProvider*>(this);
    if (id == st::sdk::NoiseSchedule::kId) return static_cast<st::sdk::NoiseSchedule*>(this);
    if (id == st::sdk::NegativePromptEncoding::kId)
        return static_cast<st::sdk::NegativePromptEncoding*>(this);
    if (id == st::sdk::BucketAlignment::kId) return static_cast<st::sdk::BucketAlignment*>(this);
    return nullptr;
}

// ---- training ------------------------------------------------------------------------------------

void SanaVideoFamily::load(const st::sdk::ModelLoadRequest& request) {
    const auto& config = request.config;
    paths_ = resolve_sana_paths(request.path, config);
    dtype_ = request.dtype;
    device_ = request.device;
    SanaLoadOptions lo;
    lo.subfolder = paths_.transformer_subfolder;
    lo.dtype = dtype_;
    lo.device = device_;
    transformer_ = load_sana_transformer(paths_.transformer, lo);
    auto& model = transformer_.model;
    const bool checkpointing = request.gradient_checkpointing && request.training;
    model->set_gradient_checkpointing(checkpointing, request.gradient_checkpointing_interval);
    model->train(request.training);
    motion_score_set_ = config.has("sana_motion_score");
    if (motion_score_set_) motion_score_ = config.get_int("sana_motion_score");
    complex_human_instruction_ = sana_complex_human_instruction_on(config);
    sigma_table_ = sana_training_sigma_table(paths_.scheduler_config);
    vae_.reset();
    text_.reset();
    loaded_ = true;
    st::log::info(
        kLog, "loaded {} ({}, {}, gradient_checkpointing {}); prompts: {}{}", transformer_.info.facts.variant,
        c10::toString(dtype_), device_.str(),
        checkpointing ? fmt::format("every {} block(s)", request.gradient_checkpointing_interval) : "off",
        complex_human_instruction_ ? "complex human instruction" : "no complex human instruction",
        motion_score_set_ ? fmt::format(", motion score {}", motion_score_) : "");
}

torch::nn::Module& SanaVideoFamily::trainable() {
    require_loaded("trainable");
    return *transformer_.model;
}

void SanaVideoFamily::save_trainable(const fs::path& dir) {
    require_loaded("save_trainable");
    save_sana_transformer(*transformer_.model, dir, transformer_.model->compute_dtype());
}

std::vector<std::string> SanaVideoFamily::taps() const {
    const int64_t layers =
        loaded_ ? transformer_.info.config.num_layers : SanaVideoTransformerConfig().num_layers;
    std::vector<std::string> t{"patch_embed_out"};
    for (int64_t i = 0; i < layers; ++i) t.push_back(fmt::format("blocks.{}.out", i));
    return t;
}

st::sdk::TapGeometry SanaVideoFamily::tap_geometry(const std::string& tap,
                                                   const std::vector<int64_t>& latent_shape) const {
    // latents [C, F', H', W'] -> tokens (F' / p_t, H' / p_h, W' / p_w), every token a video token
    require_loaded("tap_geometry");
    const auto known = taps();
    if (std::find(known.begin(), known.end(), tap) == known.end())
        fail(kSanaComponentId, "tap_geometry",
             "unknown tap '{}' (known: patch_embed_out, blocks.0.out .. blocks.{}.out)", tap,
             transformer_.info.config.num_layers - 1);
    if (latent_shape.size() != 4)
        fail(kSanaComponentId, "tap_geometry", "latent shape must be [C, F', H', W'], got {} dims",
             latent_shape.size());
    const auto& cfg = transformer_.info.config;
    st::sdk::TapGeometry g;
    g.hidden_size = cfg.inner_dim();
    for (size_t i = 0; i < 3; ++i) g.grid[i] = latent_shape[i + 1] / cfg.patch_size[i];
    return g;
}

st::sdk::PredictOutput SanaVideoFamily::predict(const st::sdk::PredictInputs& in) {
    // noisy [B, 16, F, H, W], timesteps [B] | [B, L] (sigma*1000), prompt_embeds [B, 300, 2304],
    // prompt_attention_mask [B, 300] -> velocity [B, 16, F, H, W]
    require_loaded("predict");
    const auto& cfg = transformer_.info.config;
    auto cond = [&](const char* name) -> at::Tensor {
        auto it = in.conditioning.find(name);
        return it == in.conditioning.end() ? at::Tensor() : it->second;
    };
    const at::Tensor text = cond("prompt_embeds");
    if (!text.defined())
        fail(kSanaComponentId, "predict", "conditioning 'prompt_embeds' [B, 300, {}] is missing",
             cfg.caption_channels);
    if (!in.routes.empty())
        fail(kSanaComponentId, "predict",
             "TREAD routes were given, but Sana Video has no token routing (its feed-forward convolves the "
             "full latent grid)");
    const auto opts = at::TensorOptions().dtype(dtype_).device(device_);
    SanaTransformerInputs si;
    si.hidden_states = in.noisy.to(opts);
    si.timestep = in.timesteps.to(at::TensorOptions().dtype(at::kFloat).device(device_));
    si.encoder_hidden_states = text.to(opts);
    if (const at::Tensor mask = cond("prompt_attention_mask"); mask.defined())
        si.encoder_attention_mask = mask.to(at::TensorOptions().dtype(at::kFloat).device(device_));
    si.skip_blocks = in.skip_layers;
    si.generator = in.generator;
    const auto known = taps();
    for (const auto& t : in.taps)
        if (std::find(known.begin(), known.end(), t) == known.end())
            fail(kSanaComponentId, "predict",
                 "unknown tap '{}' (known: patch_embed_out, blocks.0.out .. blocks.{}.out)", t,
                 cfg.num_layers - 1);
    TensorMap intermediates;
    st::sdk::PredictOutput out;
    out.velocity = transformer_.model->forward(si, in.taps.empty() ? nullptr : &intermediates);
    for (const auto& t : in.taps) out.taps[t] = intermediates.at(t);
    return out;
}

// ---- noise schedule ------------------------------------------------------------------------------

at::Tensor SanaVideoFamily::sample_training_sigmas(int64_t batch, at::Generator generator) const {
    // SimpleTuner SanaVideo.sample_flow_sigmas: u ~ U(0, 1), index = min(floor(u N), N - 1) into the table.
    require_loaded("sample_training_sigmas");
    const int64_t n = static_cast<int64_t>(sigma_table_.size());
    at::Tensor u = at::rand({batch}, generator, at::TensorOptions().dtype(at::kFloat));
    at::Tensor idx = (u * static_cast<float>(n)).to(at::kLong).clamp_max(n - 1);
    at::Tensor table = at::tensor(sigma_table_, at::TensorOptions().dtype(at::kFloat));
    return table.index_select(0, idx);
}

std::string SanaVideoFamily::training_schedule_summary() const {
    require_loaded("training_schedule_summary");
    return fmt::format("uniform over the {} sigmas of {} ({} .. {})", sigma_table_.size(),
                       paths_.scheduler_config.empty() ? std::string("the default flow table")
                                                       : paths_.scheduler_config.string(),
                       sigma_table_.back(), sigma_table_.front());
}

st::sdk::SamplingDefaults SanaVideoFamily::sampling_defaults() const {
    require_loaded("sampling_defaults");
    return sana_sampling_defaults(paths_.scheduler_config);
}

// ---- encoders ------------------------------------------------------------------------------------

std::string SanaVideoFamily::cache_identity() const {
    require_loaded("cache_identity");
    return fmt::format("sanavideo|{}|vae:{}|text:{}|{}|chi:{}|motion:{}", transformer_.info.facts.variant,
                       st::kit::component_fingerprint(paths_.vae),
                       st::kit::component_fingerprint(paths_.text_encoder), c10::toString(dtype_),
                       complex_human_instruction_ ? 1 : 0,
                       motion_score_set_ ? std::to_string(motion_score_) : std::string("none"));
}

st::kit::WanVAE& SanaVideoFamily::vae() {
    if (!vae_) {
        if (paths_.vae.empty())
            fail(
                kSanaComponentId, "load",
                "no VAE found for '{}': expected a SanaVideoPipeline folder with vae/ (AutoencoderKLWan), or "
                "pretrained_vae_model_name_or_path",
                paths_.root.string());
        vae_.emplace(st::kit::load_wan_vae(paths_.vae, kSanaComponentId));
        vae_->to(device_, at::kFloat);  // the Wan VAE stays fp32, as in the reference pipeline
        vae_->module()->eval();
    }
    return *vae_;
}

SanaTextEncoder& SanaVideoFamily::text() {
    if (!text_) {
        SanaPromptOptions po;
        po.complex_human_instruction = complex_human_instruction_;
        if (motion_score_set_) po.motion_score = motion_score_;
        text_ = std::make_unique<SanaTextEncoder>(paths_, dtype_, device_,
                                                  transformer_.info.config.caption_channels, po);
    }
    return *text_;
}

TensorMap SanaVideoFamily::encode_video(const at::Tensor& pixels) {
    // pixels [B, 3, F, H, W] in [-1, 1] -> latents [B, 16, 1 + (F-1)/4, H/8, W/8], normalised
    require_loaded("encode_video");
    if (pixels.dim() != 5 || pixels.size(1) != 3)
        fail(kSanaComponentId, "encode_video", "pixels must be [B, 3, F, H, W], got {}",
             c10::str(pixels.sizes()));
    auto& v = vae();
    torch::NoGradGuard no_grad;
    return {
        {"latents",
         v.encode_normalized(pixels.to(at::TensorOptions().dtype(at::kFloat).device(device_))).to(at::kCPU)}};
}

TensorMap SanaVideoFamily::encode_text(const std::vector<std::string>& captions) {
    require_loaded("encode_text");
    return text().encode(captions, /*negative=*/false);
}

TensorMap SanaVideoFamily::encode_negative_text(const std::vector<std::string>& negatives) {
    require_loaded("encode_negative_text");
    return text().encode(negatives, /*negative=*/true);
}

std::vector<int64_t> SanaVideoFamily::latent_shape(int64_t frames, int64_t height, int64_t width) const {
    const int64_t z = loaded_ ? transformer_.info.config.in_channels : 16;
    return {z, 1 + (frames - 1) / 4, height / 8, width / 8};
}

at::Tensor SanaVideoFamily::decode_latents(const at::Tensor& latents) {
    // latents [B, 16, F', H', W'] (normalised) -> pixels [B, 3, 1 + 4 (F' - 1), 8 H', 8 W'] in [-1, 1]
    require_loaded("decode_latents");
    if (latents.dim() != 5)
        fail(kSanaComponentId, "decode_latents", "latents must be [B, C, F, H, W], got {}",
             c10::str(latents.sizes()));
    auto& v = vae();
    torch::NoGradGuard no_grad;
    return v.decode_normalized(latents.to(at::TensorOptions().dtype(at::kFloat).device(device_)))
        .to(at::kCPU);
}

void SanaVideoFamily::release_encoders() {
    if (text_) {
        text_.reset();
        st::log::info(kLog, "released the Gemma-2 text encoder (reloaded on demand)");
    }
}

}  // namespace st::plugins::sanavideo
