// Wav2Vec2Config parsing and presets. Facts: reference/models.md §9 (wav2vec2-large-xlsr-53 config)
// and transformers models/wav2vec2/configuration_wav2vec2.py (key names and defaults).
#include <fstream>
#include <set>

#include "core/wav2vec2.h"
#include "st/error.h"
#include "st/json_file.h"
#include "st/log.h"

namespace st::plugins::wan_s2v {
namespace {

constexpr const char* kComponent = "model.wan_s2v.wav2vec2";

std::string join(const std::vector<int64_t>& v) {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
    return "[" + out + "]";
}

}  // namespace

Wav2Vec2Config Wav2Vec2Config::large_xlsr() {
    return Wav2Vec2Config{};
}

Wav2Vec2Config Wav2Vec2Config::tiny() {
    Wav2Vec2Config c;
    c.hidden_size = 32;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.intermediate_size = 64;
    c.conv_dim = {16, 16, 16, 16};
    c.conv_kernel = {10, 4, 4, 4};
    c.conv_stride = {5, 4, 4, 4};
    c.num_conv_pos_embeddings = 8;
    c.num_conv_pos_embedding_groups = 4;
    c.vocab_size = 12;
    return c;
}

int64_t Wav2Vec2Config::hop_length() const {
    int64_t hop = 1;
    for (int64_t s : conv_stride) hop *= s;
    return hop;
}

int64_t Wav2Vec2Config::receptive_field() const {
    int64_t field = 1, jump = 1;
    for (size_t i = 0; i < conv_kernel.size(); ++i) {
        field += (conv_kernel[i] - 1) * jump;
        jump *= conv_stride[i];
    }
    return field;
}

int64_t Wav2Vec2Config::num_frames(int64_t num_samples) const {
    int64_t length = num_samples;
    for (size_t i = 0; i < conv_kernel.size(); ++i) {
        if (length < conv_kernel[i]) return 0;
        length = (length - conv_kernel[i]) / conv_stride[i] + 1;
    }
    return length;
}

void Wav2Vec2Config::validate(const std::string& origin) const {
    auto positive = [&](int64_t v, const char* name) {
        if (v <= 0) fail(kComponent, "config", "{}: {} must be positive, got {}", origin, name, v);
    };
    positive(hidden_size, "hidden_size");
    positive(num_hidden_layers, "num_hidden_layers");
    positive(num_attention_heads, "num_attention_heads");
    positive(intermediate_size, "intermediate_size");
    positive(num_conv_pos_embeddings, "num_conv_pos_embeddings");
    positive(num_conv_pos_embedding_groups, "num_conv_pos_embedding_groups");
    positive(vocab_size, "vocab_size");
    if (hidden_size % num_attention_heads != 0)
        fail(kComponent, "config", "{}: hidden_size {} is not divisible by num_attention_heads {}", origin,
             hidden_size, num_attention_heads);
    if (hidden_size % num_conv_pos_embedding_groups != 0)
        fail(kComponent, "config", "{}: hidden_size {} is not divisible by num_conv_pos_embedding_groups {}",
             origin, hidden_size, num_conv_pos_embedding_groups);
    if (conv_dim.empty() || conv_dim.size() != conv_kernel.size() || conv_dim.size() != conv_stride.size())
        fail(kComponent, "config",
             "{}: conv_dim {}, conv_kernel {} and conv_stride {} must be non-empty lists of one length",
             origin, join(conv_dim), join(conv_kernel), join(conv_stride));
    for (size_t i = 0; i < conv_dim.size(); ++i)
        if (conv_dim[i] <= 0 || conv_kernel[i] <= 0 || conv_stride[i] <= 0)
            fail(kComponent, "config",
                 "{}: conv layer {} has a non-positive size (dim {}, kernel {}, stride {})", origin, i,
                 conv_dim[i], conv_kernel[i], conv_stride[i]);
    if (!(layer_norm_eps > 0.0))
        fail(kComponent, "config", "{}: layer_norm_eps must be positive, got {}", origin, layer_norm_eps);
    if (feat_extract_norm != "layer")
        fail(kComponent, "config",
             "{}: feat_extract_norm '{}' is not supported: only 'layer' (the wav2vec2-large / xlsr-53 family "
             "S2V uses); the 'group' variant (wav2vec2-base) is not implemented",
             origin, feat_extract_norm);
    if (!do_stable_layer_norm)
        fail(kComponent, "config",
             "{}: do_stable_layer_norm is false (post-LN encoder); only the pre-LN "
             "Wav2Vec2EncoderStableLayerNorm of the large/xlsr-53 checkpoints is supported",
             origin);
    if (hidden_act != "gelu")
        fail(kComponent, "config", "{}: hidden_act '{}' is not supported (only 'gelu', the exact erf GELU)",
             origin, hidden_act);
    if (feat_extract_activation != "gelu")
        fail(kComponent, "config",
             "{}: feat_extract_activation '{}' is not supported (only 'gelu', the exact erf GELU)", origin,
             feat_extract_activation);
}

Wav2Vec2Config Wav2Vec2Config::from_json(const nlohmann::json& j, const std::string& origin) {
    if (!j.is_object())
        fail(kComponent, "config", "{}: expected a JSON object, got {}", origin, j.type_name());
    const auto model_type =
        st::sdk::json_value_or<std::string>(j, "model_type", "wav2vec2", origin, kComponent);
    if (model_type != "wav2vec2")
        fail(kComponent, "config", "{}: model_type '{}' is not 'wav2vec2'", origin, model_type);
    if (st::sdk::json_value_or<bool>(j, "add_adapter", false, origin, kComponent))
        fail(kComponent, "config", "{}: add_adapter is true; Wav2Vec2 adapters are not supported", origin);
    if (j.contains("adapter_attn_dim") && !j.at("adapter_attn_dim").is_null())
        fail(kComponent, "config", "{}: adapter_attn_dim is set ({}); attention adapters are not supported",
             origin, j.at("adapter_attn_dim").dump());

    Wav2Vec2Config c;
    c.hidden_size = st::sdk::json_value_or<int64_t>(j, "hidden_size", c.hidden_size, origin, kComponent);
    c.num_hidden_layers =
        st::sdk::json_value_or<int64_t>(j, "num_hidden_layers", c.num_hidden_layers, origin, kComponent);
    c.num_attention_heads =
        st::sdk::json_value_or<int64_t>(j, "num_attention_heads", c.num_attention_heads, origin, kComponent);
    c.intermediate_size =
        st::sdk::json_value_or<int64_t>(j, "intermediate_size", c.intermediate_size, origin, kComponent);
    c.hidden_act = st::sdk::json_value_or<std::string>(j, "hidden_act", c.hidden_act, origin, kComponent);
    c.layer_norm_eps =
        st::sdk::json_value_or<double>(j, "layer_norm_eps", c.layer_norm_eps, origin, kComponent);
    // transformers' own defaults are "group"/false (wav2vec2-base); a config that omits them is a
    // base model, which the validation below rejects with the reason.
    c.feat_extract_norm =
        st::sdk::json_value_or<std::string>(j, "feat_extract_norm", "group", origin, kComponent);
    c.do_stable_layer_norm =
        st::sdk::json_value_or<bool>(j, "do_stable_layer_norm", false, origin, kComponent);
    c.conv_dim = st::sdk::json_value_or<std::vector<int64_t>>(j, "conv_dim", c.conv_dim, origin, kComponent);
    c.conv_kernel =
        st::sdk::json_value_or<std::vector<int64_t>>(j, "conv_kernel", c.conv_kernel, origin, kComponent);
    c.conv_stride =
        st::sdk::json_value_or<std::vector<int64_t>>(j, "conv_stride", c.conv_stride, origin, kComponent);
    // transformers default conv_bias=False; every large/xlsr checkpoint sets it true.
    c.conv_bias = st::sdk::json_value_or<bool>(j, "conv_bias", false, origin, kComponent);
    c.feat_extract_activation =
        st::sdk::json_value_or<std::string>(j, "feat_extract_activation", "gelu", origin, kComponent);
    c.num_conv_pos_embeddings = st::sdk::json_value_or<int64_t>(
        j, "num_conv_pos_embeddings", c.num_conv_pos_embeddings, origin, kComponent);
    c.num_conv_pos_embedding_groups = st::sdk::json_value_or<int64_t>(
        j, "num_conv_pos_embedding_groups", c.num_conv_pos_embedding_groups, origin, kComponent);
    c.vocab_size = st::sdk::json_value_or<int64_t>(j, "vocab_size", 32, origin, kComponent);
    const auto layers = st::sdk::json_value_or<int64_t>(
        j, "num_feat_extract_layers", static_cast<int64_t>(c.conv_dim.size()), origin, kComponent);
    if (layers != static_cast<int64_t>(c.conv_dim.size()))
        fail(kComponent, "config", "{}: num_feat_extract_layers {} does not match conv_dim {} ({} entries)",
             origin, layers, join(c.conv_dim), c.conv_dim.size());
    c.validate(origin);
    return c;
}

Wav2Vec2Config Wav2Vec2Config::from_file(const std::filesystem::path& config_json) {
    return from_json(st::sdk::read_json_file(config_json, kComponent), config_json.string());
}

nlohmann::json Wav2Vec2Config::to_json() const {
    // Field layout of jonatasgrosman/wav2vec2-large-xlsr-53-english/config.json; the dropouts and
    // SpecAugment settings are the checkpoint's (they do not change the eval forward).
    return nlohmann::json{{"architectures", {"Wav2Vec2ForCTC"}},
                          {"model_type", "wav2vec2"},
                          {"hidden_size", hidden_size},
                          {"num_hidden_layers", num_hidden_layers},
                          {"num_attention_heads", num_attention_heads},
                          {"intermediate_size", intermediate_size},
                          {"hidden_act", hidden_act},
                          {"layer_norm_eps", layer_norm_eps},
                          {"feat_extract_norm", feat_extract_norm},
                          {"do_stable_layer_norm", do_stable_layer_norm},
                          {"num_feat_extract_layers", conv_dim.size()},
                          {"conv_dim", conv_dim},
                          {"conv_kernel", conv_kernel},
                          {"conv_stride", conv_stride},
                          {"conv_bias", conv_bias},
                          {"feat_extract_activation", feat_extract_activation},
                          {"num_conv_pos_embeddings", num_conv_pos_embeddings},
                          {"num_conv_pos_embedding_groups", num_conv_pos_embedding_groups},
                          {"vocab_size", vocab_size},
                          {"activation_dropout", 0.05},
                          {"attention_dropout", 0.1},
                          {"hidden_dropout", 0.05},
                          {"feat_proj_dropout", 0.05},
                          {"layerdrop", 0.05},
                          {"mask_time_prob", 0.05},
                          {"mask_time_length", 10},
                          {"ctc_loss_reduction", "mean"},
                          {"pad_token_id", 0},
                          {"bos_token_id", 1},
                          {"eos_token_id", 2}};
}

}  // namespace st::plugins::wan_s2v
