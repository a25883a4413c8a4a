// WanVAE: top-level Wan 2.1 VAE. Port of diffusers AutoencoderKLWan (_encode, _decode, encode,
// decode; src/diffusers/models/autoencoders/autoencoder_kl_wan.py) and DiagonalGaussianDistribution
// (src/diffusers/models/autoencoders/vae.py); normalisation as the Wan pipelines do it
// (pipelines/wan/pipeline_wan.py).
#include "st/kit/vae.h"
#include "st/json_file.h"

#include <nlohmann/json.hpp>

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <sstream>

#include "st/error.h"
#include "st/files.h"
#include "st/log.h"
#include "st/text.h"
#include "st/weights.h"

namespace st::kit {

using st::sdk::shape_str;
namespace {

constexpr const char* kComponent = "model.wan.vae";

}  // namespace

AutoencoderKLWanImpl::AutoencoderKLWanImpl(const WanVAEConfig& config) {
    const std::array<int64_t, 3> one{1, 1, 1};
    encoder = register_module("encoder", vae::WanEncoder3d(config));
    quant_conv = register_module("quant_conv", vae::WanCausalConv3d(config.z_dim * 2, config.z_dim * 2, one));
    post_quant_conv =
        register_module("post_quant_conv", vae::WanCausalConv3d(config.z_dim, config.z_dim, one));
    decoder = register_module("decoder", vae::WanDecoder3d(config));
}

at::Tensor EncodeResult::sample(const at::Generator& generator) const {
    const c10::optional<at::Generator> gen =
        generator.defined() ? c10::optional<at::Generator>(generator) : c10::nullopt;
    const at::Tensor eps = at::randn(mean.sizes(), gen, mean.options());
    return mean + at::exp(0.5 * logvar) * eps;
}

WanVAE::WanVAE(WanVAEConfig config) : config_(std::move(config)) {
    config_.validate();
    module_ = AutoencoderKLWan(config_);
    module_->eval();
    encoder_slots_ = vae::count_causal_convs(*module_->encoder);
    decoder_slots_ = vae::count_causal_convs(*module_->decoder);
}

WanVAE WanVAE::from_directory(const std::filesystem::path& dir) {
    const auto config_path = dir / "config.json";
    if (!std::filesystem::is_regular_file(config_path))
        fail(kComponent, "load", "'{}' is not a Wan VAE folder: '{}' is missing", dir.string(),
             config_path.string());
    WanVAE vae(WanVAEConfig::from_file(config_path));
    const auto single = dir / "diffusion_pytorch_model.safetensors";
    const auto index = dir / "diffusion_pytorch_model.safetensors.index.json";
    std::shared_ptr<st::sdk::TensorSource> source;
    if (std::filesystem::is_regular_file(single)) {
        source = st::sdk::SafetensorsFile::open(single);
    } else if (std::filesystem::is_regular_file(index)) {
        source = st::sdk::ShardedSafetensors::open(index);
    } else {
        fail(kComponent, "load", "'{}' has config.json but neither '{}' nor '{}'", dir.string(),
             single.filename().string(), index.filename().string());
    }
    vae.load(*source, WanVAELayout::diffusers);
    return vae;
}

WanVAE WanVAE::from_file(const std::filesystem::path& file, const WanVAEConfig& config) {
    WanVAE vae(config);
    const auto source = st::sdk::open_tensor_source(file);
    vae.load(*source, detect_wan_vae_layout(*source));
    return vae;
}

void WanVAE::load(const st::sdk::TensorSource& source, WanVAELayout layout) {
    st::sdk::LoadOptions options;
    options.component = kComponent;
    if (layout == WanVAELayout::original) {
        auto map =
            std::make_shared<std::map<std::string, std::string>>(wan_vae_original_key_map(*module_, config_));
        // Unknown original names pass through unchanged so load_strict reports them as unexpected.
        options.key_map = [map](const std::string& name) -> std::optional<std::string> {
            const auto it = map->find(name);
            return it == map->end() ? name : it->second;
        };
    }
    st::sdk::LoadReport report;
    try {
        report = st::sdk::load_strict(*module_, source, options);
    } catch (const st::Error& e) {
        st::Error error = e.with_context(
            fmt::format("while loading the Wan VAE ({} layout, base_dim {}, z_dim {}) from {}",
                        to_string(layout), config_.base_dim, config_.z_dim, source.describe()));
        const bool looks_other = layout == WanVAELayout::diffusers
                                     ? source.contains("encoder.conv1.weight")
                                     : source.contains("encoder.conv_in.weight");
        if (looks_other)
            error = error.with_context(
                fmt::format("hint: the file uses the {} key names; load it with that layout",
                            to_string(layout == WanVAELayout::diffusers ? WanVAELayout::original
                                                                        : WanVAELayout::diffusers)));
        throw error;
    }
    std::string dtypes;
    for (const auto& [dtype, n] : report.source_dtypes)
        dtypes += fmt::format("{}{} {}", dtypes.empty() ? "" : ", ", n, dtype);
    st::log::debug(kComponent, "loaded {} tensors ({} layout; {} -> {}) from {}", report.loaded,
                   to_string(layout), dtypes, c10::toString(dtype()), source.describe());
}

EncodeResult WanVAE::encode(const at::Tensor& video) {
    // [B, C_pixel, T, H, W] in [-1, 1] -> mean, logvar [B, z, 1 + (T-1)/4, H/s, W/s] (s = 8, or 16 for 2.2)
    const int64_t ts = config_.scale_factor_temporal, ss = config_.spatial_compression();
    if (video.dim() != 5 || video.size(1) != config_.pixel_in_channels())
        fail(kComponent, "encode", "video must be [B, {}, T, H, W], got {}", config_.pixel_in_channels(),
             shape_str(video));
    const int64_t frames = video.size(2), h = video.size(3), w = video.size(4);
    if (frames < 1 || (frames - 1) % ts != 0)
        fail(kComponent, "encode", "video has {} frames; the Wan VAE needs T = 1 + {}k frames (1, 5, 9, ...)",
             frames, ts);
    if (h % ss != 0 || w % ss != 0)
        fail(kComponent, "encode", "video height/width {}x{} must be multiples of {}", h, w, ss);
    if (!at::isFloatingType(video.scalar_type()))
        fail(kComponent, "encode", "video must be a floating-point tensor, got {}",
             c10::toString(video.scalar_type()));

    const at::Tensor x = vae::patchify(video.to(device(), dtype()), config_.patch());
    vae::FeatCache cache(encoder_slots_);
    std::vector<at::Tensor> chunks;
    const int64_t iterations = 1 + (frames - 1) / ts;
    chunks.reserve(iterations);
    for (int64_t i = 0; i < iterations; ++i) {
        cache.start_chunk();
        // Frame 0 alone, then frames [1 + 4(i-1), 1 + 4i).
        const at::Tensor chunk = i == 0 ? x.narrow(2, 0, 1) : x.narrow(2, 1 + ts * (i - 1), ts);
        chunks.push_back(module_->encoder->forward(chunk, &cache));
    }
    const at::Tensor h_out = module_->quant_conv->forward(at::cat(chunks, 2));  // [B, 2z, F, h, w]
    const auto parts = h_out.chunk(2, 1);
    return EncodeResult{parts[0], at::clamp(parts[1], -30.0, 20.0)};
}

at::Tensor WanVAE::encode_normalized(const at::Tensor& video) {
    return normalize_latents(encode(video).mean);
}

at::Tensor WanVAE::decode(const at::Tensor& latents) {
    // [B, z, F, h, w] -> [B, C_pixel, 1 + 4(F-1), s*h, s*w] in [-1, 1] (s = 8, or 16 for 2.2)
    if (latents.dim() != 5 || latents.size(1) != config_.z_dim || latents.size(2) < 1)
        fail(kComponent, "decode", "latents must be [B, {}, F >= 1, h, w], got {}", config_.z_dim,
             shape_str(latents));
    if (!at::isFloatingType(latents.scalar_type()))
        fail(kComponent, "decode", "latents must be a floating-point tensor, got {}",
             c10::toString(latents.scalar_type()));
    const at::Tensor x = module_->post_quant_conv->forward(latents.to(device(), dtype()));
    vae::FeatCache cache(decoder_slots_);
    std::vector<at::Tensor> chunks;
    chunks.reserve(x.size(2));
    // One latent frame at a time: the cache carries the causal history, so peak activation memory
    // is that of a single frame (the first yields 1 pixel frame, each later one 4).
    for (int64_t i = 0; i < x.size(2); ++i) {
        cache.start_chunk();
        chunks.push_back(module_->decoder->forward(x.narrow(2, i, 1), &cache, /*first_chunk=*/i == 0));
    }
    return at::clamp(vae::unpatchify(at::cat(chunks, 2), config_.patch()), -1.0, 1.0);
}

at::Tensor WanVAE::decode_normalized(const at::Tensor& latents) {
    return decode(denormalize_latents(latents));
}

at::Tensor WanVAE::stats_like(const std::vector<double>& values, const at::Tensor& like) const {
    return at::tensor(values, at::TensorOptions().dtype(at::kDouble))
        .to(like.options())
        .view({1, static_cast<int64_t>(values.size()), 1, 1, 1});
}

at::Tensor WanVAE::normalize_latents(const at::Tensor& latents) const {
    // [B, z, F, h, w] -> [B, z, F, h, w]
    if (latents.dim() != 5 || latents.size(1) != config_.z_dim)
        fail(kComponent, "normalize", "latents must be [B, {}, F, h, w], got {}", config_.z_dim,
             shape_str(latents));
    return (latents - stats_like(config_.latents_mean, latents)) / stats_like(config_.latents_std, latents);
}

at::Tensor WanVAE::denormalize_latents(const at::Tensor& latents) const {
    if (latents.dim() != 5 || latents.size(1) != config_.z_dim)
        fail(kComponent, "normalize", "latents must be [B, {}, F, h, w], got {}", config_.z_dim,
             shape_str(latents));
    return latents * stats_like(config_.latents_std, latents) + stats_like(config_.latents_mean, latents);
}

void WanVAE::to(c10::Device device, c10::ScalarType dtype) {
    module_->to(device, dtype);
}

c10::Device WanVAE::device() const {
    return module_->quant_conv->weight.device();
}

c10::ScalarType WanVAE::dtype() const {
    return module_->quant_conv->weight.scalar_type();
}

WanVAE load_wan_vae(const std::filesystem::path& path, const std::string& component) {
    namespace fs = std::filesystem;
    if (fs::is_regular_file(path)) {
        st::log::info(component, "VAE single file {}: Wan 2.1 VAE config assumed (files carry no config)",
                      path.string());
        return WanVAE::from_file(path, WanVAEConfig::wan21());
    }
    if (!fs::exists(path / "config.json"))
        fail(component, "load", "VAE folder '{}' has no config.json (expected the diffusers vae/ layout)",
             path.string());
    const auto cfg = st::sdk::read_json_file(path / "config.json", component, "load");
    const std::string cls = cfg.is_object() ? cfg.value("_class_name", "AutoencoderKLWan") : "";
    if (cls != "AutoencoderKLWan")
        fail(component, "load",
             "'{}' is not a Wan VAE folder: config.json _class_name is '{}' (expected AutoencoderKLWan)",
             path.string(), cls);
    return WanVAE::from_directory(path);
}

}  // namespace st::kit
