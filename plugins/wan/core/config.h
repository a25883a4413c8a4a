// WanTransformerConfig: the one description of a Wan 2.1/2.2 DiT (diffusers `WanTransformer3DModel`
// config.json). Defaults equal the reference Wan 2.1 T2V 1.3B model; presets name the released
// variants; `detect_from_weights` recovers it from tensor names and shapes alone (both key layouts).
// Facts: shared/reference/models.md §2.1 (config table) and §2.2 (shapes).
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "st/kit/fields.h"

namespace st::sdk {
class TensorSource;
}

namespace st::plugins::wan {

struct WanTransformerConfig {
    std::array<int64_t, 3> patch_size{1, 2, 2};
    int64_t num_attention_heads = 12;
    int64_t attention_head_dim = 128;
    int64_t in_channels = 16;
    int64_t out_channels = 16;
    int64_t text_dim = 4096;
    int64_t freq_dim = 256;
    int64_t ffn_dim = 8960;
    int64_t num_layers = 30;
    bool cross_attn_norm = true;
    /// Only "rms_norm_across_heads" exists in released Wan models (RMSNorm over the whole D).
    std::string qk_norm = "rms_norm_across_heads";
    double eps = 1e-6;
    /// Wan 2.1 I2V / FLF2V CLIP image branch (null for T2V, Wan 2.2 I2V-A14B and TI2V).
    std::optional<int64_t> image_dim;
    std::optional<int64_t> added_kv_proj_dim;
    /// FLF2V learned positional embedding of the image tokens ([1, pos_embed_seq_len, image_dim]).
    std::optional<int64_t> pos_embed_seq_len;
    int64_t rope_max_seq_len = 1024;

    int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }
    bool has_image_branch() const { return added_kv_proj_dim.has_value(); }
    /// Number of tensors in the diffusers state dict (825 for the 1.3B model).
    int64_t tensor_count() const;

    // ---- presets (models.md §2.1) --------------------------------------------------------------
    static WanTransformerConfig t2v_1_3b();     ///< Wan 2.1 T2V 1.3B (= defaults)
    static WanTransformerConfig t2v_14b();      ///< Wan 2.1 T2V 14B, also each Wan 2.2 T2V-A14B expert
    static WanTransformerConfig i2v_14b_21();   ///< Wan 2.1 I2V 14B (CLIP image branch, 36 channels)
    static WanTransformerConfig i2v_a14b_22();  ///< Wan 2.2 I2V-A14B expert (36 channels, no image branch)
    static WanTransformerConfig ti2v_5b();      ///< Wan 2.2 TI2V 5B (48-channel latents)
    static WanTransformerConfig tiny();         ///< tests: 2 heads x 12, 2 layers (the golden config)
    static WanTransformerConfig small();        ///< benchmarks: dim 512 (4 x 128), 8 layers
    /// "t2v-1.3b", "t2v-14b", "i2v-14b-2.1", "i2v-a14b-2.2", "ti2v-5b", "tiny", "small"; throws otherwise.
    static WanTransformerConfig preset(const std::string& name);
    static std::vector<std::string> preset_names();

    // ---- diffusers config.json ----------------------------------------------------------------
    /// Parses a diffusers transformer config. Keys starting with '_' (`_class_name`,
    /// `_diffusers_version`, ...) are ignored; any other unknown key is an st::Error naming it and
    /// `source`. Validates the result.
    static WanTransformerConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
    static WanTransformerConfig from_file(const std::filesystem::path& config_json);
    /// The diffusers config.json (with `_class_name`), loadable by diffusers.
    nlohmann::json to_json() const;

    /// Throws st::Error when a field is out of range (head_dim not splittable for RoPE, ...).
    void validate() const;

    /// Recovers the config from tensor names and shapes only; accepts the diffusers layout and
    /// the original/ComfyUI layout (optionally prefixed `model.diffusion_model.`). Fields that the
    /// weights cannot show (eps, rope_max_seq_len, freq_dim beyond the time embedder input) keep
    /// their reference values. head_dim is assumed to be 128 (all released models) unless D is not
    /// a multiple of 128, in which case the largest of {128, 64, 32, 16, 12, 8} dividing D is used.
    /// Implemented in detect.cpp.
    static WanTransformerConfig detect_from_weights(const st::sdk::TensorSource& source);

    bool operator==(const WanTransformerConfig&) const = default;
};

/// One-line description, e.g. "dim 1536 (12x128), 30 layers, ffn 8960, in 16, out 16".
std::string describe(const WanTransformerConfig& config);

/// The config.json keys every Wan DiT shares (the Wan transformer's and the ones built on its blocks,
/// e.g. S2V), added to `table` for a config struct with members of the same names. out_channels null
/// reads as -1 (diffusers: = in_channels; finish_wan_dit_fields resolves it).
template <typename C>
st::kit::FieldTable<C>& add_wan_dit_fields(st::kit::FieldTable<C>& table) {
    return table.field("attention_head_dim", &C::attention_head_dim)
        .field("cross_attn_norm", &C::cross_attn_norm)
        .field("eps", &C::eps)
        .field("ffn_dim", &C::ffn_dim)
        .field("freq_dim", &C::freq_dim)
        .field("in_channels", &C::in_channels)
        .field("num_attention_heads", &C::num_attention_heads)
        .field("num_layers", &C::num_layers)
        .field("out_channels", &C::out_channels, int64_t{-1})
        .field("patch_size", &C::patch_size)
        .field("qk_norm", &C::qk_norm, std::string())
        .field("rope_max_seq_len", &C::rope_max_seq_len)
        .field("text_dim", &C::text_dim)
        .field("added_kv_proj_dim", &C::added_kv_proj_dim);
}

/// After reading: out_channels null = in_channels, then validate().
template <typename C>
void finish_wan_dit_fields(C& c) {
    if (c.out_channels < 0) c.out_channels = c.in_channels;
    c.validate();
}

}  // namespace st::plugins::wan
