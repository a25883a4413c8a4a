// SanaVideoTransformerConfig: the one description of a Sana Video DiT (diffusers
// `SanaVideoTransformer3DModel` config.json). Defaults equal the released 2B 480p model
// (scripts/convert_sana_video_to_diffusers.py); presets name it and the test/bench sizes;
// `detect_from_weights` recovers it from tensor names and shapes. Facts: models.md §6.1-6.2.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace st::sdk {
class TensorSource;
}

namespace st::plugins::sanavideo {

inline constexpr const char* kSanaComponentId = "model.sanavideo@1";

struct SanaVideoTransformerConfig {
    int64_t in_channels = 16;
    int64_t out_channels = 16;
    int64_t num_attention_heads = 20;
    int64_t attention_head_dim = 112;
    int64_t num_layers = 20;
    int64_t num_cross_attention_heads = 20;
    int64_t cross_attention_head_dim = 112;
    /// Width of the caption tokens the cross-attention reads: the caption projection's output, so it
    /// must equal inner_dim().
    int64_t cross_attention_dim = 2240;
    int64_t caption_channels = 2304;
    /// GLUMBTempConv hidden width = int(mlp_ratio * inner_dim) (2.5 default in diffusers, 3.0 in the
    /// 2B release).
    double mlp_ratio = 3.0;
    /// Self-attention q/k/v biases (false in every release).
    bool attention_bias = false;
    std::array<int64_t, 3> patch_size{1, 2, 2};
    double norm_eps = 1e-6;
    int64_t sample_size = 30;  ///< informational (diffusers' base latent size)
    int64_t rope_max_seq_len = 1024;

    int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }
    int64_t cross_inner_dim() const { return num_cross_attention_heads * cross_attention_head_dim; }
    int64_t ffn_hidden() const { return static_cast<int64_t>(mlp_ratio * static_cast<double>(inner_dim())); }
    /// Tensors in the diffusers state dict (496 for the 2B model).
    int64_t tensor_count() const;

    static SanaVideoTransformerConfig sana_2b_480p();  ///< the release (= defaults)
    /// tests: the golden's config (2 heads x 12, 2 layers, caption 16, mlp_ratio 2.5, rope 32)
    static SanaVideoTransformerConfig tiny();
    /// benchmarks: dim 512 (4 x 128), 8 layers, caption 2304
    static SanaVideoTransformerConfig small();
    /// "2b-480p", "tiny", "small"; st::Error listing them otherwise.
    static SanaVideoTransformerConfig preset(const std::string& name);
    static std::vector<std::string> preset_names();

    /// Parses a diffusers config.json: '_' keys skipped, unknown keys are st::Errors naming the key
    /// and `source`; values st does not implement (guidance_embeds, a qk_norm other than
    /// rms_norm_across_heads, affine block norms, dropout) are refused naming the key.
    static SanaVideoTransformerConfig from_json(const nlohmann::json& j,
                                                const std::string& source = "config.json");
    static SanaVideoTransformerConfig from_file(const std::filesystem::path& config_json);
    /// The diffusers config.json (with `_class_name`), loadable by diffusers.
    nlohmann::json to_json() const;
    /// st::Error for out-of-range fields (head_dim not splittable for RoPE, cross_attention_dim != D...).
    void validate() const;

    /// From tensor names and shapes only (diffusers or original layout, see sana_checkpoint.h):
    /// heads assume head_dim 112 when D is a multiple of 112 (the release), else the kit's guess.
    static SanaVideoTransformerConfig detect_from_weights(const st::sdk::TensorSource& source);

    bool operator==(const SanaVideoTransformerConfig&) const = default;
};

/// "dim 2240 (20x112), 20 layers, ffn 6720, caption 2304, in 16, out 16".
std::string describe(const SanaVideoTransformerConfig& config);

}  // namespace st::plugins::sanavideo
