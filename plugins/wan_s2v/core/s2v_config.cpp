// WanS2VConfig presets, JSON parsing and validation (diffusers PR #12258 WanS2VTransformer3DModel
// config; S2V-14B values from models.md §5.1 / Wan-Video wan/configs/wan_s2v_14B.py).
#include "core/s2v_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>

#include "st/error.h"
#include "st/json_file.h"

namespace st::plugins::wan_s2v {
namespace {

constexpr const char* kComponent = "model.wan_s2v@1";

}  // namespace

int64_t WanS2VConfig::tensor_count() const {
    // Global: patch_embedding 2, time_embedder 4, time_proj 2, text_embedder 4, scale_shift_table 1,
    // proj_out 2, trainable_condition_mask 1, pose_embedder 2; audio encoder: weights, padding
    // tokens, conv1_local/conv2/conv3 (2 each) + conv1_global/final_linear with adain; FramePack 6.
    // Per block: table 1, attn1 10, attn2 10, ffn 4, norm2 2 (affine). Per injector: attention 10,
    // AdaLN linear 2.
    int64_t global = 15 + 1 + 2 + 8 + (enable_adain ? 4 : 0) + (enable_framepack ? 6 : 0);
    const int64_t per_block = 25 + (cross_attn_norm ? 2 : 0);
    const int64_t per_injector = 10 + (enable_adain ? 2 : 0);
    return global + num_layers * per_block + static_cast<int64_t>(audio_inject_layers.size()) * per_injector;
}

st::plugins::wan::WanTransformerConfig WanS2VConfig::to_wan_config() const {
    st::plugins::wan::WanTransformerConfig c;
    c.patch_size = patch_size;
    c.num_attention_heads = num_attention_heads;
    c.attention_head_dim = attention_head_dim;
    c.in_channels = in_channels;
    c.out_channels = out_channels;
    c.text_dim = text_dim;
    c.freq_dim = freq_dim;
    c.ffn_dim = ffn_dim;
    c.num_layers = num_layers;
    c.cross_attn_norm = cross_attn_norm;
    c.qk_norm = qk_norm;
    c.eps = eps;
    c.rope_max_seq_len = rope_max_seq_len;
    return c;
}

WanS2VConfig WanS2VConfig::s2v_14b() {
    return WanS2VConfig{};
}

WanS2VConfig WanS2VConfig::tiny() {
    WanS2VConfig c;
    c.num_attention_heads = 2;
    c.attention_head_dim = 12;
    c.text_dim = 32;
    c.audio_dim = 16;
    c.audio_inject_layers = {0, 2};
    c.ffn_dim = 32;
    c.num_layers = 3;
    c.num_weighted_avg_layers = 25;
    return c;
}

WanS2VConfig WanS2VConfig::small() {
    WanS2VConfig c;
    c.num_attention_heads = 4;
    c.attention_head_dim = 128;
    c.text_dim = 64;
    c.audio_dim = 64;
    c.audio_inject_layers = {0, 3, 7};
    c.ffn_dim = 1536;
    c.num_layers = 8;
    c.num_weighted_avg_layers = 5;
    return c;
}

std::vector<std::string> WanS2VConfig::preset_names() {
    return {"s2v-14b", "tiny", "small"};
}

WanS2VConfig WanS2VConfig::preset(const std::string& name) {
    if (name == "s2v-14b" || name == "14b") return s2v_14b();
    if (name == "tiny") return tiny();
    if (name == "small") return small();
    fail(kComponent, "config", "unknown Wan S2V transformer preset '{}' (known: {})", name,
         fmt::format("{}", fmt::join(preset_names(), ", ")));
}

namespace {

// The diffusers WanS2VTransformer3DModel config.json, declared once (reader, writer, unknown keys).
const st::kit::FieldTable<WanS2VConfig>& fields() {
    using C = WanS2VConfig;
    static const auto table = [] {
        st::kit::FieldTable<C> t(kComponent, "Wan S2V transformer config");
        t.constant("_class_name", "WanS2VTransformer3DModel").constant("_diffusers_version", "0.37.0.dev0");
        st::plugins::wan::add_wan_dit_fields(t)
            .field("adain_mode", &C::adain_mode)
            .field("add_last_motion", &C::add_last_motion)
            .field("audio_dim", &C::audio_dim)
            .field("audio_inject_layers", &C::audio_inject_layers)
            .field("enable_adain", &C::enable_adain)
            .field("enable_framepack", &C::enable_framepack)
            .field("framepack_drop_mode", &C::framepack_drop_mode)
            .field("num_weighted_avg_layers", &C::num_weighted_avg_layers)
            .field("pose_dim", &C::pose_dim)
            .field("zero_timestep", &C::zero_timestep);
        return t;
    }();
    return table;
}

}  // namespace

WanS2VConfig WanS2VConfig::from_json(const nlohmann::json& j, const std::string& source) {
    return fields().from_json(j, source, st::plugins::wan::finish_wan_dit_fields<WanS2VConfig>);
}

WanS2VConfig WanS2VConfig::from_file(const std::filesystem::path& config_json) {
    const nlohmann::json j = st::sdk::read_json_file(config_json, kComponent);
    if (j.is_object() && j.contains("_class_name") && j["_class_name"] != "WanS2VTransformer3DModel")
        fail(kComponent, "config", "'{}' is not a Wan S2V transformer config: _class_name {}",
             config_json.string(), j["_class_name"].dump());
    return from_json(j, config_json.string());
}

nlohmann::json WanS2VConfig::to_json() const {
    return fields().to_json(*this);
}

void WanS2VConfig::validate() const {
    // The shared block settings (heads, RoPE split, qk_norm, eps, ...) are checked by the Wan core.
    try {
        to_wan_config().validate();
    } catch (const Error& e) {
        fail(kComponent, "config", "{}", e.message());
    }
    auto positive = [](const char* name, int64_t v) {
        if (v <= 0) fail(kComponent, "config", "{} must be > 0, got {}", name, v);
    };
    positive("audio_dim", audio_dim);
    positive("pose_dim", pose_dim);
    positive("num_weighted_avg_layers", num_weighted_avg_layers);
    const int64_t d = inner_dim();
    // The causal audio encoder splits D into 4 audio tokens of D/4 channels and halves/doubles
    // widths (D/4 -> D/2 -> D).
    if (d % 4 != 0)
        fail(kComponent, "config",
             "inner dim {} (heads x head_dim) must be a multiple of 4 for the audio encoder", d);
    if (audio_inject_layers.empty())
        fail(kComponent, "config", "audio_inject_layers must name at least one block");
    for (size_t i = 0; i < audio_inject_layers.size(); ++i) {
        const int64_t b = audio_inject_layers[i];
        if (b < 0 || b >= num_layers)
            fail(kComponent, "config", "audio_inject_layers entry {} is outside the blocks 0 .. {}", b,
                 num_layers - 1);
        if (i > 0 && b <= audio_inject_layers[i - 1])
            fail(kComponent, "config", "audio_inject_layers must be strictly increasing, got {}",
                 nlohmann::json(audio_inject_layers).dump());
    }
    if (!enable_adain || adain_mode != "attn_norm")
        fail(kComponent, "config",
             "enable_adain {} with adain_mode '{}': only enable_adain true with adain_mode 'attn_norm' (the "
             "released S2V) can run; the reference model needs the global audio vector in every injector",
             enable_adain, adain_mode);
    if (framepack_drop_mode != "padd" && framepack_drop_mode != "drop")
        fail(kComponent, "config", "framepack_drop_mode must be 'padd' or 'drop', got '{}'",
             framepack_drop_mode);
    if (added_kv_proj_dim)
        fail(kComponent, "config", "added_kv_proj_dim must be null for S2V (no image K/V branch), got {}",
             *added_kv_proj_dim);
}

std::string describe(const WanS2VConfig& c) {
    return fmt::format("dim {} ({}x{}), {} layers, ffn {}, text {}, audio {}x{} -> {} injectors, pose {}{}",
                       c.inner_dim(), c.num_attention_heads, c.attention_head_dim, c.num_layers, c.ffn_dim,
                       c.text_dim, c.audio_dim, c.num_weighted_avg_layers, c.audio_inject_layers.size(),
                       c.pose_dim, c.enable_framepack ? ", framepack" : "");
}

}  // namespace st::plugins::wan_s2v
