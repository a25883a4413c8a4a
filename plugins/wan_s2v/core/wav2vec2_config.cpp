// Wav2Vec2Config parsing and presets. Facts: reference/models.md §9 (wav2vec2-large-xlsr-53 config)
// and transformers models/wav2vec2/configuration_wav2vec2.py (key names and defaults).
#include <fstream>
#include <set>

#include "core/wav2vec2.h"
#include "st/error.h"
#include "st/json_file.h"
#include "st/kit/fields.h"
#include "st/log.h"

namespace st::plugins::wan_s2v {
namespace {

constexpr const char* kComponent = "model.wan_s2v.wav2vec2";

std::string join(const std::vector<int64_t>& v) {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
    return "[" + out + "]";
}

// The Wav2Vec2Config keys the encoder reads and the values it insists on; the rest of a transformers
// config (dropouts, SpecAugment, CTC settings, ...) does not change the eval forward. Written in the
// field layout of jonatasgrosman/wav2vec2-large-xlsr-53-english/config.json (its dropout and
// SpecAugment values).
const st::kit::FieldTable<Wav2Vec2Config>& wav2vec2_fields() {
    using C = Wav2Vec2Config;
    static const auto t =
        st::kit::FieldTable<C>(kComponent, "Wav2Vec2 config")
            .constant("architectures", nlohmann::json::array({"Wav2Vec2ForCTC"}))
            .constant("activation_dropout", 0.05)
            .constant("attention_dropout", 0.1)
            .constant("hidden_dropout", 0.05)
            .constant("feat_proj_dropout", 0.05)
            .constant("layerdrop", 0.05)
            .constant("mask_time_prob", 0.05)
            .constant("mask_time_length", 10)
            .constant("ctc_loss_reduction", "mean")
            .constant("pad_token_id", 0)
            .constant("bos_token_id", 1)
            .constant("eos_token_id", 2)
            .expect("model_type", {"wav2vec2"}, "the S2V audio encoder is a Wav2Vec2 model")
            .expect("add_adapter", {false}, "Wav2Vec2 adapters are not supported")
            .expect("adapter_attn_dim", {nlohmann::json(nullptr)}, "attention adapters are not supported")
            .ignore("num_feat_extract_layers")  // checked against conv_dim by from_json
            .field("hidden_size", &C::hidden_size)
            .field("num_hidden_layers", &C::num_hidden_layers)
            .field("num_attention_heads", &C::num_attention_heads)
            .field("intermediate_size", &C::intermediate_size)
            .field("hidden_act", &C::hidden_act)
            .field("layer_norm_eps", &C::layer_norm_eps)
            .field("feat_extract_norm", &C::feat_extract_norm)
            .field("do_stable_layer_norm", &C::do_stable_layer_norm)
            .field("conv_dim", &C::conv_dim)
            .field("conv_kernel", &C::conv_kernel)
            .field("conv_stride", &C::conv_stride)
            .field("conv_bias", &C::conv_bias)
            .field("feat_extract_activation", &C::feat_extract_activation)
            .field("num_conv_pos_embeddings", &C::num_conv_pos_embeddings)
            .field("num_conv_pos_embedding_groups", &C::num_conv_pos_embedding_groups)
            .field("vocab_size", &C::vocab_size)
            .accept_other_keys();
    return t;
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
    // transformers' own defaults where they differ from the large checkpoint's: "group"/false/no conv bias
    // (wav2vec2-base; validate() rejects it with the reason), vocabulary 32.
    Wav2Vec2Config c;
    c.feat_extract_norm = "group";
    c.do_stable_layer_norm = false;
    c.conv_bias = false;
    c.vocab_size = 32;
    wav2vec2_fields().read(c, j, origin);
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
    nlohmann::json j = wav2vec2_fields().to_json(*this);
    j["num_feat_extract_layers"] = conv_dim.size();
    return j;
}

}  // namespace st::plugins::wan_s2v
