// WanTransformerConfig presets, JSON parsing and validation (diffusers WanTransformer3DModel
// config; values from scripts/convert_wan_to_diffusers.py::get_transformer_config, models.md §2.1).
#include "core/config.h"

#include <fmt/format.h>

#include <fstream>
#include <set>

#include "st/error.h"
#include "st/json_file.h"

namespace st::plugins::wan {
namespace {

constexpr const char* kComponent = "model.wan@1";

}  // namespace

int64_t WanTransformerConfig::tensor_count() const {
    // Global: patch_embedding (2), time_embedder (4), time_proj (2), text_embedder (4),
    // scale_shift_table (1), proj_out (2). Per block: table (1), attn1 (10), attn2 (10), ffn (4),
    // norm2 (2 when affine). Image branch: +5 per block, image_embedder 8 (+1 pos_embed).
    int64_t per_block = 25 + (cross_attn_norm ? 2 : 0) + (has_image_branch() ? 5 : 0);
    int64_t global = 15;
    if (image_dim) global += 8 + (pos_embed_seq_len ? 1 : 0);
    return global + num_layers * per_block;
}

WanTransformerConfig WanTransformerConfig::t2v_1_3b() {
    return WanTransformerConfig{};
}

WanTransformerConfig WanTransformerConfig::t2v_14b() {
    WanTransformerConfig c;
    c.num_attention_heads = 40;
    c.ffn_dim = 13824;
    c.num_layers = 40;
    return c;
}

WanTransformerConfig WanTransformerConfig::i2v_14b_21() {
    WanTransformerConfig c = t2v_14b();
    c.in_channels = 36;
    c.image_dim = 1280;
    c.added_kv_proj_dim = 5120;
    return c;
}

WanTransformerConfig WanTransformerConfig::i2v_a14b_22() {
    WanTransformerConfig c = t2v_14b();
    c.in_channels = 36;
    return c;
}

WanTransformerConfig WanTransformerConfig::ti2v_5b() {
    WanTransformerConfig c;
    c.num_attention_heads = 24;
    c.ffn_dim = 14336;
    c.num_layers = 30;
    c.in_channels = 48;
    c.out_channels = 48;
    return c;
}

WanTransformerConfig WanTransformerConfig::tiny() {
    WanTransformerConfig c;
    c.num_attention_heads = 2;
    c.attention_head_dim = 12;
    c.in_channels = 4;
    c.out_channels = 4;
    c.text_dim = 16;
    c.ffn_dim = 32;
    c.num_layers = 2;
    c.rope_max_seq_len = 32;
    return c;
}

WanTransformerConfig WanTransformerConfig::small() {
    WanTransformerConfig c;
    c.num_attention_heads = 4;
    c.attention_head_dim = 128;
    c.ffn_dim = 2048;
    c.num_layers = 8;
    return c;
}

std::vector<std::string> WanTransformerConfig::preset_names() {
    return {"t2v-1.3b", "t2v-14b", "i2v-14b-2.1", "i2v-a14b-2.2", "ti2v-5b", "tiny", "small"};
}

WanTransformerConfig WanTransformerConfig::preset(const std::string& name) {
    if (name == "t2v-1.3b" || name == "1.3b") return t2v_1_3b();
    if (name == "t2v-14b" || name == "14b") return t2v_14b();
    if (name == "i2v-14b-2.1") return i2v_14b_21();
    if (name == "i2v-a14b-2.2") return i2v_a14b_22();
    if (name == "ti2v-5b") return ti2v_5b();
    if (name == "tiny") return tiny();
    if (name == "small") return small();
    fail(kComponent, "config", "unknown Wan transformer preset '{}' (known: {})", name,
         fmt::format("{}", fmt::join(preset_names(), ", ")));
}

namespace {

// The diffusers WanTransformer3DModel config.json, declared once (reader, writer, unknown keys).
const st::kit::FieldTable<WanTransformerConfig>& fields() {
    using C = WanTransformerConfig;
    static const auto table = [] {
        st::kit::FieldTable<C> t(kComponent, "Wan transformer config");
        t.constant("_class_name", "WanTransformer3DModel").constant("_diffusers_version", "0.35.0");
        add_wan_dit_fields(t)
            .field("image_dim", &C::image_dim)
            .field("pos_embed_seq_len", &C::pos_embed_seq_len);
        return t;
    }();
    return table;
}

}  // namespace

WanTransformerConfig WanTransformerConfig::from_json(const nlohmann::json& j, const std::string& source) {
    return fields().from_json(j, source, finish_wan_dit_fields<WanTransformerConfig>);
}

WanTransformerConfig WanTransformerConfig::from_file(const std::filesystem::path& config_json) {
    const nlohmann::json j = st::sdk::read_json_file(config_json, kComponent);
    return from_json(j, config_json.string());
}

nlohmann::json WanTransformerConfig::to_json() const {
    return fields().to_json(*this);
}

void WanTransformerConfig::validate() const {
    auto positive = [](const char* name, int64_t v) {
        if (v <= 0) fail(kComponent, "config", "{} must be > 0, got {}", name, v);
    };
    for (int i = 0; i < 3; ++i) positive("patch_size[i]", patch_size[i]);
    positive("num_attention_heads", num_attention_heads);
    positive("attention_head_dim", attention_head_dim);
    positive("in_channels", in_channels);
    positive("out_channels", out_channels);
    positive("text_dim", text_dim);
    positive("ffn_dim", ffn_dim);
    positive("num_layers", num_layers);
    positive("rope_max_seq_len", rope_max_seq_len);
    if (freq_dim <= 0 || freq_dim % 2 != 0)
        fail(kComponent, "config", "freq_dim must be even and > 0, got {}", freq_dim);
    // RoPE splits head_dim into t/h/w parts of 2*(d/6) real dims each for h, w and the rest for t;
    // every part must be a positive even number.
    const int64_t hw = 2 * (attention_head_dim / 6);
    const int64_t t = attention_head_dim - 2 * hw;
    if (attention_head_dim % 2 != 0 || hw <= 0 || t <= 0 || t % 2 != 0)
        fail(kComponent, "config", "attention_head_dim {} cannot be split for 3-D RoPE (t {}, h/w {})",
             attention_head_dim, t, hw);
    if (qk_norm != "rms_norm_across_heads")
        fail(kComponent, "config",
             "qk_norm '{}' is not used by any released Wan model; only 'rms_norm_across_heads' is supported",
             qk_norm);
    if (!(eps > 0.0)) fail(kComponent, "config", "eps must be > 0, got {}", eps);
    if (image_dim.has_value() != added_kv_proj_dim.has_value())
        fail(kComponent, "config",
             "image_dim ({}) and added_kv_proj_dim ({}) must be both set (Wan 2.1 I2V) or both null",
             image_dim ? std::to_string(*image_dim) : "null",
             added_kv_proj_dim ? std::to_string(*added_kv_proj_dim) : "null");
    if (image_dim) positive("image_dim", *image_dim);
    if (added_kv_proj_dim) positive("added_kv_proj_dim", *added_kv_proj_dim);
    if (pos_embed_seq_len && !image_dim)
        fail(kComponent, "config", "pos_embed_seq_len ({}) needs image_dim", *pos_embed_seq_len);
}

std::string describe(const WanTransformerConfig& c) {
    std::string s = fmt::format("dim {} ({}x{}), {} layers, ffn {}, in {}, out {}, text {}", c.inner_dim(),
                                c.num_attention_heads, c.attention_head_dim, c.num_layers, c.ffn_dim,
                                c.in_channels, c.out_channels, c.text_dim);
    if (c.image_dim) s += fmt::format(", image {} -> kv {}", *c.image_dim, *c.added_kv_proj_dim);
    if (c.pos_embed_seq_len) s += fmt::format(", image pos {}", *c.pos_embed_seq_len);
    return s;
}

}  // namespace st::plugins::wan
