// Configuration of the Wan VAE (diffusers `AutoencoderKLWan`, original Wan-Video `WanVAE_`).
//
// Defaults are the real Wan 2.1 VAE (used by every Wan 2.1 model, Wan 2.2 A14B, S2V and
// Sana-Video 480p). The struct mirrors the diffusers `vae/config.json` one key per field, so a
// config is read from and written to that file without loss.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace st::kit {

struct WanVAEConfig {
    int64_t base_dim = 96;
    /// Decoder width; absent (null in config.json) means base_dim. Only Wan 2.2 sets it.
    std::optional<int64_t> decoder_base_dim;
    int64_t z_dim = 16;
    std::vector<int64_t> dim_mult{1, 2, 4, 4};
    int64_t num_res_blocks = 2;
    /// Encoder attention scales; every released Wan VAE uses [] (non-empty is rejected).
    std::vector<double> attn_scales;
    /// Per encoder stage (len(dim_mult) - 1 entries); the decoder uses the reverse. The misspelling
    /// is upstream's and kept so the JSON key matches.
    std::vector<bool> temperal_downsample{false, true, true};
    double dropout = 0.0;
    std::vector<double> latents_mean{-0.7571, -0.7089, -0.9113, 0.1075,  -0.1745, 0.9653,  -0.1517, 1.5508,
                                     0.4134,  -0.0715, 0.5517,  -0.3632, -0.1922, -0.9497, 0.2503,  -0.2921};
    std::vector<double> latents_std{2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160};
    /// Wan 2.2 residual down/up blocks (AvgDown3D / DupUp3D shortcuts).
    bool is_residual = false;
    int64_t in_channels = 3;
    int64_t out_channels = 3;
    /// Pixel patchify size (Wan 2.2: 2); absent means none.
    std::optional<int64_t> patch_size;
    int64_t scale_factor_temporal = 4;
    int64_t scale_factor_spatial = 8;

    /// The real Wan 2.1 VAE (= the defaults).
    static WanVAEConfig wan21();
    /// The golden-test model: base_dim 2, z 4, everything else real, so the key set is exactly the
    /// real 194 names with tiny shapes (tests/golden/wan_vae/config.json).
    static WanVAEConfig tiny();

    /// Parses a diffusers `vae/config.json` object. Keys starting with '_' (`_class_name`,
    /// `_diffusers_version`, ...) are ignored; any other unknown key, a wrong type, or an invalid
    /// value throws st::Error naming `source` and the key.
    static WanVAEConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
    /// Reads and parses a config.json file.
    static WanVAEConfig from_file(const std::filesystem::path& path);
    /// The diffusers config.json object (with `_class_name` "AutoencoderKLWan").
    nlohmann::json to_json() const;

    /// The real Wan 2.2 VAE of TI2V-5B (is_residual, 2x2 patchify, z 48).
    static WanVAEConfig wan22();
    /// The wan_vae22 golden model: base_dim 2, decoder_base_dim 4, z 4, rest as wan22().
    static WanVAEConfig tiny22();

    /// Throws st::Error when the combination is invalid.
    void validate(const std::string& source = "WanVAEConfig") const;

    int64_t decoder_dim() const { return decoder_base_dim.value_or(base_dim); }
    /// Encoder widths: base_dim * [1] + dim_mult, e.g. [96, 96, 192, 384, 384].
    std::vector<int64_t> encoder_dims() const;
    /// Decoder widths: decoder_dim * ([dim_mult.back()] + reversed dim_mult).
    std::vector<int64_t> decoder_dims() const;
    /// Reverse of temperal_downsample (per decoder up block).
    std::vector<bool> temperal_upsample() const;
    /// 2 ^ number of downsampling stages x patch size (8 for Wan 2.1, 16 for Wan 2.2).
    int64_t spatial_compression() const;
    int64_t patch() const { return patch_size.value_or(1); }
    /// Channels of the pixel video (in/out_channels count the patchified channels: 12 = 3 x 2 x 2).
    int64_t pixel_in_channels() const { return in_channels / (patch() * patch()); }
    int64_t pixel_out_channels() const { return out_channels / (patch() * patch()); }
};

}  // namespace st::kit
