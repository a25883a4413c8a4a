// WanVAEConfig: presets, diffusers config.json parsing/writing, validation.
// Follows diffusers `AutoencoderKLWan.__init__` (src/diffusers/models/autoencoders/autoencoder_kl_wan.py).
#include "st/kit/vae_config.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <set>

#include "st/error.h"
#include "st/json_file.h"
#include "st/kit/fields.h"

namespace st::kit {
namespace {

constexpr const char* kComponent = "model.wan.vae";

// The diffusers AutoencoderKLWan config.json, declared once.
const FieldTable<WanVAEConfig>& vae_fields() {
    using C = WanVAEConfig;
    static const auto t = FieldTable<C>(kComponent, "AutoencoderKLWan config")
                              .constant("_class_name", "AutoencoderKLWan")
                              .field("attn_scales", &C::attn_scales)
                              .field("base_dim", &C::base_dim)
                              .field("decoder_base_dim", &C::decoder_base_dim)
                              .field("dim_mult", &C::dim_mult)
                              .field("dropout", &C::dropout)
                              .field("in_channels", &C::in_channels)
                              .field("is_residual", &C::is_residual)
                              .field("latents_mean", &C::latents_mean)
                              .field("latents_std", &C::latents_std)
                              .field("num_res_blocks", &C::num_res_blocks)
                              .field("out_channels", &C::out_channels)
                              .field("patch_size", &C::patch_size)
                              .field("scale_factor_spatial", &C::scale_factor_spatial)
                              .field("scale_factor_temporal", &C::scale_factor_temporal)
                              .field("temperal_downsample", &C::temperal_downsample)
                              .field("z_dim", &C::z_dim);
    return t;
}

}  // namespace

WanVAEConfig WanVAEConfig::wan21() {
    return WanVAEConfig{};
}

WanVAEConfig WanVAEConfig::tiny() {
    WanVAEConfig c;
    c.base_dim = 2;
    c.z_dim = 4;
    c.latents_mean = {-0.7571, -0.7089, -0.9113, 0.1075};
    c.latents_std = {2.8184, 1.4541, 2.3275, 2.6558};
    return c;
}

WanVAEConfig WanVAEConfig::wan22() {
    // diffusers Wan-AI/Wan2.2-TI2V-5B-Diffusers vae/config.json; models.md 7.1 / 7.5.
    WanVAEConfig c;
    c.base_dim = 160;
    c.decoder_base_dim = 256;
    c.z_dim = 48;
    c.is_residual = true;
    c.in_channels = 12;
    c.out_channels = 12;
    c.patch_size = 2;
    c.scale_factor_spatial = 16;
    c.latents_mean = {-0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174,  0.1838,  0.1557,  -0.1382, 0.0542,
                      0.2813,  0.0891,  0.1570,  -0.0098, 0.0375,  -0.1825, -0.2246, -0.1207, -0.0698, 0.5109,
                      0.2665,  -0.2108, -0.2158, 0.2502,  -0.2055, -0.0322, 0.1109,  0.1567,  -0.0729, 0.0899,
                      -0.2799, -0.1230, -0.0313, -0.1649, 0.0117,  0.0723,  -0.2839, -0.2083, -0.0520, 0.3748,
                      0.0152,  0.1957,  0.1433,  -0.2944, 0.3573,  -0.0548, -0.1681, -0.0667};
    c.latents_std = {0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344,
                     0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804,
                     0.5833, 1.4146, 0.8986, 0.5659, 0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999,
                     0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
                     0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744};
    return c;
}

WanVAEConfig WanVAEConfig::tiny22() {
    WanVAEConfig c = wan22();
    c.base_dim = 2;
    c.decoder_base_dim = 4;
    c.z_dim = 4;
    c.latents_mean.resize(4);
    c.latents_std.resize(4);
    return c;
}

WanVAEConfig WanVAEConfig::from_json(const nlohmann::json& j, const std::string& source) {
    return vae_fields().from_json(j, source);
}

WanVAEConfig WanVAEConfig::from_file(const std::filesystem::path& path) {
    const nlohmann::json j = st::sdk::read_json_file(path, kComponent);
    return from_json(j, path.string());
}

nlohmann::json WanVAEConfig::to_json() const {
    return vae_fields().to_json(*this);
}

void WanVAEConfig::validate(const std::string& source) const {
    auto positive = [&](const char* key, int64_t v) {
        if (v <= 0) fail(kComponent, "config", "{}: {} must be > 0, got {}", source, key, v);
    };
    positive("base_dim", base_dim);
    positive("decoder_base_dim", decoder_dim());
    positive("z_dim", z_dim);
    positive("num_res_blocks", num_res_blocks);
    positive("in_channels", in_channels);
    positive("out_channels", out_channels);
    if (dim_mult.size() < 2)
        fail(kComponent, "config", "{}: dim_mult needs at least 2 entries, got {}", source, dim_mult.size());
    for (int64_t m : dim_mult) positive("every dim_mult entry", m);
    if (temperal_downsample.size() != dim_mult.size() - 1)
        fail(kComponent, "config", "{}: temperal_downsample has {} entries, expected len(dim_mult) - 1 = {}",
             source, temperal_downsample.size(), dim_mult.size() - 1);
    if (!attn_scales.empty())
        fail(kComponent, "config",
             "{}: attn_scales must be [] (every released Wan VAE has no encoder attention; got {} entries)",
             source, attn_scales.size());
    if (dropout < 0.0 || dropout >= 1.0)
        fail(kComponent, "config", "{}: dropout must be in [0, 1), got {}", source, dropout);
    if (latents_mean.size() != static_cast<size_t>(z_dim) || latents_std.size() != static_cast<size_t>(z_dim))
        fail(kComponent, "config", "{}: latents_mean/latents_std have {}/{} entries, expected z_dim = {}",
             source, latents_mean.size(), latents_std.size(), z_dim);
    for (double s : latents_std)
        if (!(s > 0.0))
            fail(kComponent, "config", "{}: every latents_std entry must be > 0, got {}", source, s);
    if (patch() < 1)
        fail(kComponent, "config", "{}: patch_size must be >= 1 or null, got {}", source, patch());
    if (in_channels % (patch() * patch()) != 0 || out_channels % (patch() * patch()) != 0)
        fail(kComponent, "config", "{}: in/out_channels {}/{} must be multiples of patch_size^2 = {}", source,
             in_channels, out_channels, patch() * patch());
    int64_t temporal = 1;
    for (bool t : temperal_downsample) temporal *= t ? 2 : 1;
    if (scale_factor_temporal != temporal)
        fail(kComponent, "config",
             "{}: scale_factor_temporal {} does not match temperal_downsample (factor {})", source,
             scale_factor_temporal, temporal);
    if (scale_factor_spatial != spatial_compression())
        fail(kComponent, "config",
             "{}: scale_factor_spatial {} does not match {} downsampling stages (factor {})", source,
             scale_factor_spatial, temperal_downsample.size(), spatial_compression());
}

std::vector<int64_t> WanVAEConfig::encoder_dims() const {
    std::vector<int64_t> dims{base_dim};
    for (int64_t m : dim_mult) dims.push_back(base_dim * m);
    return dims;
}

std::vector<int64_t> WanVAEConfig::decoder_dims() const {
    std::vector<int64_t> dims{decoder_dim() * dim_mult.back()};
    for (auto it = dim_mult.rbegin(); it != dim_mult.rend(); ++it) dims.push_back(decoder_dim() * *it);
    return dims;
}

std::vector<bool> WanVAEConfig::temperal_upsample() const {
    return std::vector<bool>(temperal_downsample.rbegin(), temperal_downsample.rend());
}

int64_t WanVAEConfig::spatial_compression() const {
    return (int64_t{1} << static_cast<int64_t>(temperal_downsample.size())) * patch();
}

}  // namespace st::kit
