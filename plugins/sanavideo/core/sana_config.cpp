// SanaVideoTransformerConfig presets, JSON parsing and validation (diffusers
// SanaVideoTransformer3DModel config; 2B values from scripts/convert_sana_video_to_diffusers.py,
// models.md §6.1).
#include "core/sana_config.h"

#include <fmt/format.h>

#include "st/error.h"
#include "st/json_file.h"
#include "st/kit/fields.h"

namespace st::plugins::sanavideo {

int64_t SanaVideoTransformerConfig::tensor_count() const {
    // Global: patch_embedding 2, time_embed (timestep_embedder 4 + linear 2), caption_projection 4,
    // caption_norm 1, scale_shift_table 1, proj_out 2. Per block: table 1, attn1 7 (+3 biases),
    // attn2 10, ff 6.
    return 16 + num_layers * (24 + (attention_bias ? 3 : 0));
}

SanaVideoTransformerConfig SanaVideoTransformerConfig::sana_2b_480p() {
    return SanaVideoTransformerConfig{};
}

SanaVideoTransformerConfig SanaVideoTransformerConfig::tiny() {
    SanaVideoTransformerConfig c;
    c.num_attention_heads = 2;
    c.attention_head_dim = 12;
    c.num_layers = 2;
    c.num_cross_attention_heads = 2;
    c.cross_attention_head_dim = 12;
    c.cross_attention_dim = 24;
    c.caption_channels = 16;
    c.mlp_ratio = 2.5;
    c.sample_size = 8;
    c.rope_max_seq_len = 32;
    return c;
}

SanaVideoTransformerConfig SanaVideoTransformerConfig::small() {
    SanaVideoTransformerConfig c;
    c.num_attention_heads = 4;
    c.attention_head_dim = 128;
    c.num_layers = 8;
    c.num_cross_attention_heads = 4;
    c.cross_attention_head_dim = 128;
    c.cross_attention_dim = 512;
    return c;
}

std::vector<std::string> SanaVideoTransformerConfig::preset_names() {
    return {"2b-480p", "tiny", "small"};
}

SanaVideoTransformerConfig SanaVideoTransformerConfig::preset(const std::string& name) {
    if (name == "2b-480p" || name == "2b") return sana_2b_480p();
    if (name == "tiny") return tiny();
    if (name == "small") return small();
    fail(kSanaComponentId, "config", "unknown Sana Video transformer preset '{}' (known: {})", name,
         fmt::join(preset_names(), ", "));
}

namespace {

const st::kit::FieldTable<SanaVideoTransformerConfig>& fields() {
    using C = SanaVideoTransformerConfig;
    static const auto table = [] {
        st::kit::FieldTable<C> t(kSanaComponentId, "Sana Video transformer config");
        t.constant("_class_name", "SanaVideoTransformer3DModel").constant("_diffusers_version", "0.36.0");
        t.field("attention_bias", &C::attention_bias)
            .field("attention_head_dim", &C::attention_head_dim)
            .field("caption_channels", &C::caption_channels)
            .field("cross_attention_dim", &C::cross_attention_dim)
            .field("cross_attention_head_dim", &C::cross_attention_head_dim)
            .expect("dropout", {0.0}, "st trains Sana Video without attention dropout")
            .expect("guidance_embeds", {false}, "no released Sana Video model embeds guidance")
            .ignore("guidance_embeds_scale")
            .field("in_channels", &C::in_channels)
            .ignore("interpolation_scale")
            .field("mlp_ratio", &C::mlp_ratio)
            .expect("norm_elementwise_affine", {false}, "the released blocks use LayerNorms without affine")
            .field("norm_eps", &C::norm_eps)
            .field("num_attention_heads", &C::num_attention_heads)
            .field("num_cross_attention_heads", &C::num_cross_attention_heads)
            .field("num_layers", &C::num_layers)
            .field("out_channels", &C::out_channels, int64_t{-1})
            .field("patch_size", &C::patch_size)
            .expect("qk_norm", {"rms_norm_across_heads"}, "every released Sana Video model uses it")
            .field("rope_max_seq_len", &C::rope_max_seq_len)
            .field("sample_size", &C::sample_size);
        return t;
    }();
    return table;
}

}  // namespace

SanaVideoTransformerConfig SanaVideoTransformerConfig::from_json(const nlohmann::json& j,
                                                                 const std::string& source) {
    return fields().from_json(j, source, [](SanaVideoTransformerConfig& c) {
        if (c.out_channels < 0) c.out_channels = c.in_channels;
        c.validate();
    });
}

SanaVideoTransformerConfig SanaVideoTransformerConfig::from_file(const std::filesystem::path& config_json) {
    return from_json(st::sdk::read_json_file(config_json, kSanaComponentId), config_json.string());
}

nlohmann::json SanaVideoTransformerConfig::to_json() const {
    // The expect()ed keys are written with their one allowed value; the ignored ones as diffusers does.
    nlohmann::json j = fields().to_json(*this);
    j["guidance_embeds_scale"] = 0.1;
    j["interpolation_scale"] = nullptr;
    return j;
}

void SanaVideoTransformerConfig::validate() const {
    auto positive = [](const char* name, int64_t v) {
        if (v <= 0) fail(kSanaComponentId, "config", "{} must be > 0, got {}", name, v);
    };
    for (int i = 0; i < 3; ++i) positive("patch_size[i]", patch_size[i]);
    positive("in_channels", in_channels);
    positive("out_channels", out_channels);
    positive("num_attention_heads", num_attention_heads);
    positive("attention_head_dim", attention_head_dim);
    positive("num_layers", num_layers);
    positive("num_cross_attention_heads", num_cross_attention_heads);
    positive("cross_attention_head_dim", cross_attention_head_dim);
    positive("caption_channels", caption_channels);
    positive("rope_max_seq_len", rope_max_seq_len);
    if (patch_size[0] != 1)
        fail(kSanaComponentId, "config",
             "patch_size[0] must be 1 (the feed-forward's temporal conv works on latent frames), got {}",
             patch_size[0]);
    if (!(mlp_ratio > 0.0) || ffn_hidden() <= 0)
        fail(kSanaComponentId, "config", "mlp_ratio must be > 0, got {}", mlp_ratio);
    if (!(norm_eps > 0.0)) fail(kSanaComponentId, "config", "norm_eps must be > 0, got {}", norm_eps);
    if (cross_attention_dim != inner_dim())
        fail(kSanaComponentId, "config",
             "cross_attention_dim {} must equal num_attention_heads x attention_head_dim = {} (the caption "
             "projection's width)",
             cross_attention_dim, inner_dim());
    if (cross_inner_dim() != inner_dim())
        fail(kSanaComponentId, "config",
             "num_cross_attention_heads x cross_attention_head_dim = {} must equal the block width {}",
             cross_inner_dim(), inner_dim());
    const int64_t hw = 2 * (attention_head_dim / 6);
    const int64_t t = attention_head_dim - 2 * hw;
    if (attention_head_dim % 2 != 0 || hw <= 0 || t <= 0 || t % 2 != 0)
        fail(kSanaComponentId, "config", "attention_head_dim {} cannot be split for 3-D RoPE (t {}, h/w {})",
             attention_head_dim, t, hw);
}

std::string describe(const SanaVideoTransformerConfig& c) {
    return fmt::format("dim {} ({}x{}), {} layers, ffn {}, caption {}, in {}, out {}", c.inner_dim(),
                       c.num_attention_heads, c.attention_head_dim, c.num_layers, c.ffn_hidden(),
                       c.caption_channels, c.in_channels, c.out_channels);
}

}  // namespace st::plugins::sanavideo
