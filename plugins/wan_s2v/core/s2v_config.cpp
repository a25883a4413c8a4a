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

WanS2VConfig WanS2VConfig::from_json(const nlohmann::json& j, const std::string& source) {
    if (!j.is_object())
        fail(kComponent, "config", "{}: expected a JSON object, got {}", source, j.type_name());
    WanS2VConfig c;
    for (const auto& [key, value] : j.items()) {
        if (!key.empty() && key[0] == '_') continue;  // _class_name, _diffusers_version, _name_or_path
        auto as_int = [&]() { return st::sdk::json_as<int64_t>(value, key, source, kComponent); };
        auto as_bool = [&]() { return st::sdk::json_as<bool>(value, key, source, kComponent); };
        auto as_string = [&]() { return st::sdk::json_as<std::string>(value, key, source, kComponent); };
        if (key == "patch_size") {
            auto v = st::sdk::json_as<std::vector<int64_t>>(value, key, source, kComponent);
            if (v.size() != 3)
                fail(kComponent, "config", "{}: patch_size must have 3 entries, got {}", source,
                     value.dump());
            c.patch_size = {v[0], v[1], v[2]};
        } else if (key == "num_attention_heads") {
            c.num_attention_heads = as_int();
        } else if (key == "attention_head_dim") {
            c.attention_head_dim = as_int();
        } else if (key == "in_channels") {
            c.in_channels = as_int();
        } else if (key == "out_channels") {
            c.out_channels = value.is_null() ? -1 : as_int();  // diffusers: null = in_channels
        } else if (key == "text_dim") {
            c.text_dim = as_int();
        } else if (key == "freq_dim") {
            c.freq_dim = as_int();
        } else if (key == "audio_dim") {
            c.audio_dim = as_int();
        } else if (key == "audio_inject_layers") {
            c.audio_inject_layers = st::sdk::json_as<std::vector<int64_t>>(value, key, source, kComponent);
        } else if (key == "enable_adain") {
            c.enable_adain = as_bool();
        } else if (key == "adain_mode") {
            c.adain_mode = as_string();
        } else if (key == "pose_dim") {
            c.pose_dim = as_int();
        } else if (key == "ffn_dim") {
            c.ffn_dim = as_int();
        } else if (key == "num_layers") {
            c.num_layers = as_int();
        } else if (key == "num_weighted_avg_layers") {
            c.num_weighted_avg_layers = as_int();
        } else if (key == "cross_attn_norm") {
            c.cross_attn_norm = as_bool();
        } else if (key == "qk_norm") {
            c.qk_norm = value.is_null() ? std::string() : as_string();
        } else if (key == "eps") {
            c.eps = st::sdk::json_as<double>(value, key, source, kComponent);
        } else if (key == "added_kv_proj_dim") {
            c.added_kv_proj_dim = value.is_null() ? std::nullopt : std::optional<int64_t>(as_int());
        } else if (key == "rope_max_seq_len") {
            c.rope_max_seq_len = as_int();
        } else if (key == "enable_framepack") {
            c.enable_framepack = as_bool();
        } else if (key == "framepack_drop_mode") {
            c.framepack_drop_mode = as_string();
        } else if (key == "add_last_motion") {
            c.add_last_motion = as_bool();
        } else if (key == "zero_timestep") {
            c.zero_timestep = as_bool();
        } else {
            fail(kComponent, "config", "{}: unknown key '{}' in a Wan S2V transformer config (value {})",
                 source, key, value.dump());
        }
    }
    if (c.out_channels < 0) c.out_channels = c.in_channels;
    try {
        c.validate();
    } catch (const Error& e) {
        throw e.with_context(fmt::format("while reading {}", source));
    }
    return c;
}

WanS2VConfig WanS2VConfig::from_file(const std::filesystem::path& config_json) {
    const nlohmann::json j = st::sdk::read_json_file(config_json, kComponent);
    if (j.is_object() && j.contains("_class_name") && j["_class_name"] != "WanS2VTransformer3DModel")
        fail(kComponent, "config", "'{}' is not a Wan S2V transformer config: _class_name {}",
             config_json.string(), j["_class_name"].dump());
    return from_json(j, config_json.string());
}

nlohmann::json WanS2VConfig::to_json() const {
    nlohmann::json j;
    j["_class_name"] = "WanS2VTransformer3DModel";
    j["_diffusers_version"] = "0.37.0.dev0";
    j["adain_mode"] = adain_mode;
    j["add_last_motion"] = add_last_motion;
    j["added_kv_proj_dim"] = added_kv_proj_dim ? nlohmann::json(*added_kv_proj_dim) : nlohmann::json(nullptr);
    j["attention_head_dim"] = attention_head_dim;
    j["audio_dim"] = audio_dim;
    j["audio_inject_layers"] = audio_inject_layers;
    j["cross_attn_norm"] = cross_attn_norm;
    j["enable_adain"] = enable_adain;
    j["enable_framepack"] = enable_framepack;
    j["eps"] = eps;
    j["ffn_dim"] = ffn_dim;
    j["framepack_drop_mode"] = framepack_drop_mode;
    j["freq_dim"] = freq_dim;
    j["in_channels"] = in_channels;
    j["num_attention_heads"] = num_attention_heads;
    j["num_layers"] = num_layers;
    j["num_weighted_avg_layers"] = num_weighted_avg_layers;
    j["out_channels"] = out_channels;
    j["patch_size"] = {patch_size[0], patch_size[1], patch_size[2]};
    j["pose_dim"] = pose_dim;
    j["qk_norm"] = qk_norm;
    j["rope_max_seq_len"] = rope_max_seq_len;
    j["text_dim"] = text_dim;
    j["zero_timestep"] = zero_timestep;
    return j;
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
