// UMT5Config parsing and presets. Facts: reference/models.md §8; HF layout from
// Wan-AI/Wan2.1-T2V-1.3B-Diffusers/text_encoder/config.json; Wan layout from wan/modules/t5.py
// (`umt5_xxl` -> `_t5(encoder_only=True, vocab=256384, dim=4096, dim_attn=4096, dim_ffn=10240,
// num_heads=64, num_layers=24, num_buckets=32, shared_pos=False)`).
#include "st/kit/umt5_config.h"

#include <fstream>
#include <regex>
#include <set>

#include "st/error.h"
#include "st/json_file.h"
#include "st/kit/fields.h"
#include "st/log.h"
#include "st/safetensors.h"
#include "st/text.h"

namespace st::kit {

using st::sdk::shape_str;
namespace {

constexpr const char* kComponent = "model.wan.umt5";

// HF UMT5Config keys that do not change the encoder forward (decoder-only, training, generation
// or bookkeeping). Listed so that a genuinely unexpected key stands out in the log.
const std::set<std::string> kIgnoredHfKeys = {"architectures",
                                              "classifier_dropout",
                                              "decoder_start_token_id",
                                              "dropout_rate",
                                              "initializer_factor",
                                              "is_encoder_decoder",
                                              "num_decoder_layers",
                                              "output_past",
                                              "scalable_attention",
                                              "tie_word_embeddings",
                                              "tokenizer_class",
                                              "torch_dtype",
                                              "use_cache",
                                              "transformers_version",
                                              "_name_or_path",
                                              "task_specific_params",
                                              "bos_token_id",
                                              "feed_forward_proj",
                                              "dense_act_fn",
                                              "is_gated_act",
                                              "model_type",
                                              "n_positions",
                                              "relative_attention_bias",
                                              "gradient_checkpointing",
                                              "return_dict",
                                              "output_hidden_states",
                                              "output_attentions",
                                              "_commit_hash"};

// The HF UMT5Config keys the encoder reads, the values it insists on, and the known keys that do not
// change it; other keys are logged once (transformers adds keys between versions).
const FieldTable<UMT5Config>& hf_fields() {
    using C = UMT5Config;
    static const auto t = [] {
        FieldTable<C> f(kComponent, "UMT5 config");
        f.field("vocab_size", &C::vocab_size)
            .field("d_model", &C::d_model)
            .field("d_kv", &C::d_kv)
            .field("d_ff", &C::d_ff)
            .field("num_layers", &C::num_layers)
            .field("num_heads", &C::num_heads)
            .field("relative_attention_num_buckets", &C::relative_attention_num_buckets)
            .field("relative_attention_max_distance", &C::relative_attention_max_distance)
            .field("layer_norm_epsilon", &C::layer_norm_epsilon)
            .field("pad_token_id", &C::pad_token_id)
            .field("eos_token_id", &C::eos_token_id)
            .expect("model_type", {"umt5"},
                    "Wan needs UMT5 (a relative-position table in every layer; T5 shares layer 0's)")
            .expect("feed_forward_proj", {"gated-gelu"}, "the UMT5 FFN is a gated GELU")
            .expect("dense_act_fn", {"gelu_new", "gelu_pytorch_tanh"}, "UMT5 uses the tanh GELU")
            .expect("is_gated_act", {true}, "the UMT5 FFN is gated (wi_0, wi_1)")
            .accept_other_keys([](const std::vector<std::string>& keys, const std::string& source) {
                std::string list;
                for (const auto& k : keys) list += (list.empty() ? "" : ", ") + k;
                st::log::warn(kComponent, "{}: ignoring keys that do not affect the UMT5 encoder: {}", source,
                              list);
            });
        for (const auto& k : kIgnoredHfKeys)
            if (k != "model_type" && k != "feed_forward_proj" && k != "dense_act_fn" && k != "is_gated_act")
                f.ignore(k);
        return f;
    }();
    return t;
}

std::vector<int64_t> shape_str(const st::sdk::TensorSource& source, const std::string& name) {
    for (const auto& info : source.infos())
        if (info.name == name) return info.shape;
    fail(kComponent, "detect", "{}: tensor '{}' not found", source.describe(), name);
}

}  // namespace

UMT5Config UMT5Config::umt5_xxl() {
    return UMT5Config{};
}

UMT5Config UMT5Config::tiny() {
    UMT5Config c;
    c.vocab_size = 64;
    c.d_model = 16;
    c.d_kv = 4;
    c.d_ff = 32;
    c.num_layers = 2;
    c.num_heads = 4;
    c.relative_attention_num_buckets = 32;
    c.relative_attention_max_distance = 16;
    return c;
}

void UMT5Config::validate(const std::string& origin) const {
    auto positive = [&](int64_t v, const char* name) {
        if (v <= 0) fail(kComponent, "config", "{}: {} must be positive, got {}", origin, name, v);
    };
    positive(vocab_size, "vocab_size");
    positive(d_model, "d_model");
    positive(d_kv, "d_kv");
    positive(d_ff, "d_ff");
    positive(num_layers, "num_layers");
    positive(num_heads, "num_heads");
    positive(relative_attention_num_buckets, "relative_attention_num_buckets");
    positive(relative_attention_max_distance, "relative_attention_max_distance");
    positive(text_len, "text_len");
    // Bidirectional buckets split in two halves, each with max_exact = half/2 exact buckets; the
    // log formula needs max_distance > max_exact.
    if (relative_attention_num_buckets % 4 != 0)
        fail(kComponent, "config", "{}: relative_attention_num_buckets must be a multiple of 4, got {}",
             origin, relative_attention_num_buckets);
    if (relative_attention_max_distance <= relative_attention_num_buckets / 4)
        fail(kComponent, "config",
             "{}: relative_attention_max_distance ({}) must exceed the exact-bucket count ({})", origin,
             relative_attention_max_distance, relative_attention_num_buckets / 4);
    if (!(layer_norm_epsilon > 0.0))
        fail(kComponent, "config", "{}: layer_norm_epsilon must be positive, got {}", origin,
             layer_norm_epsilon);
    if (pad_token_id < 0 || pad_token_id >= vocab_size || eos_token_id < 0 || eos_token_id >= vocab_size)
        fail(kComponent, "config", "{}: pad_token_id {} / eos_token_id {} outside the vocabulary of {}",
             origin, pad_token_id, eos_token_id, vocab_size);
}

UMT5Config UMT5Config::from_hf_json(const nlohmann::json& j, const std::string& origin) {
    return hf_fields().from_json(j, origin, [&](UMT5Config& c) { c.validate(origin); });
}

UMT5Config UMT5Config::from_hf_file(const std::filesystem::path& config_json) {
    return from_hf_json(st::sdk::read_json_file(config_json, kComponent), config_json.string());
}

UMT5Config UMT5Config::from_wan_json(const nlohmann::json& j, const std::string& origin) {
    if (!j.is_object())
        fail(kComponent, "config", "{}: expected a JSON object, got {}", origin, j.type_name());
    if (st::sdk::json_value_or<bool>(j, "shared_pos", false, origin, kComponent))
        fail(kComponent, "config",
             "{}: shared_pos is true (plain T5); Wan's UMT5 encoder has a relative-position table per layer",
             origin);
    UMT5Config c;
    c.vocab_size = st::sdk::json_value_or<int64_t>(j, "vocab", c.vocab_size, origin, kComponent);
    c.d_model = st::sdk::json_value_or<int64_t>(j, "dim", c.d_model, origin, kComponent);
    const int64_t dim_attn = st::sdk::json_value_or<int64_t>(j, "dim_attn", c.d_model, origin, kComponent);
    c.num_heads = st::sdk::json_value_or<int64_t>(j, "num_heads", c.num_heads, origin, kComponent);
    if (c.num_heads <= 0 || dim_attn % c.num_heads != 0)
        fail(kComponent, "config", "{}: dim_attn {} is not divisible by num_heads {}", origin, dim_attn,
             c.num_heads);
    c.d_kv = dim_attn / c.num_heads;
    c.d_ff = st::sdk::json_value_or<int64_t>(j, "dim_ffn", c.d_ff, origin, kComponent);
    c.num_layers = st::sdk::json_value_or<int64_t>(j, "num_layers", c.num_layers, origin, kComponent);
    c.relative_attention_num_buckets = st::sdk::json_value_or<int64_t>(
        j, "num_buckets", c.relative_attention_num_buckets, origin, kComponent);
    // wan_t5_config.json in the golden spells it out with its HF name in parentheses.
    for (const char* key :
         {"max_dist", "max_dist (relative_attention_max_distance)", "relative_attention_max_distance"})
        c.relative_attention_max_distance =
            st::sdk::json_value_or<int64_t>(j, key, c.relative_attention_max_distance, origin, kComponent);
    c.layer_norm_epsilon = st::sdk::json_value_or<double>(j, "eps", c.layer_norm_epsilon, origin, kComponent);
    c.validate(origin);
    return c;
}

UMT5Config UMT5Config::from_weights(const st::sdk::TensorSource& source) {
    const bool wan = source.contains("token_embedding.weight");
    const std::string embed = wan                                ? "token_embedding.weight"
                              : source.contains("shared.weight") ? "shared.weight"
                                                                 : "encoder.embed_tokens.weight";
    if (!source.contains(embed))
        fail(kComponent, "detect",
             "{}: not a UMT5 encoder checkpoint (none of token_embedding.weight, shared.weight, "
             "encoder.embed_tokens.weight)",
             source.describe());
    const std::regex block_re(wan ? R"(^blocks\.(\d+)\.)" : R"(^encoder\.block\.(\d+)\.)");
    int64_t layers = 0;
    for (const auto& info : source.infos()) {
        std::smatch m;
        if (std::regex_search(info.name, m, block_re))
            layers = std::max<int64_t>(layers, std::stoll(m[1]) + 1);
    }
    if (layers == 0) fail(kComponent, "detect", "{}: no encoder blocks found", source.describe());

    const std::string p = wan ? "blocks.0." : "encoder.block.0.layer.";
    const auto emb = shape_str(source, embed);
    const auto q = shape_str(source, p + (wan ? "attn.q.weight" : "0.SelfAttention.q.weight"));
    const auto bias = shape_str(source, p + (wan ? "pos_embedding.embedding.weight"
                                                 : "0.SelfAttention.relative_attention_bias.weight"));
    const auto wi = shape_str(source, p + (wan ? "ffn.fc1.weight" : "1.DenseReluDense.wi_1.weight"));
    if (emb.size() != 2 || q.size() != 2 || bias.size() != 2 || wi.size() != 2)
        fail(kComponent, "detect", "{}: embedding {}, q {}, bias table {}, ffn {} are not all 2-D",
             source.describe(), shape_str(emb), shape_str(q), shape_str(bias), shape_str(wi));
    UMT5Config c;
    c.vocab_size = emb[0];
    c.d_model = emb[1];
    c.num_layers = layers;
    c.relative_attention_num_buckets = bias[0];
    c.num_heads = bias[1];
    if (q[0] % c.num_heads != 0)
        fail(kComponent, "detect", "{}: q weight {} is not divisible into {} heads", source.describe(),
             shape_str(q), c.num_heads);
    c.d_kv = q[0] / c.num_heads;
    c.d_ff = wi[0];
    c.validate(source.describe());
    st::log::info(kComponent,
                  "detected UMT5 from {}: {} layout, vocab {}, d_model {}, {} layers, {} heads x {}, d_ff {}",
                  source.describe(), wan ? "Wan t5.py" : "HF", c.vocab_size, c.d_model, c.num_layers,
                  c.num_heads, c.d_kv, c.d_ff);
    return c;
}

nlohmann::json UMT5Config::to_hf_json() const {
    return nlohmann::json{{"architectures", {"UMT5EncoderModel"}},
                          {"classifier_dropout", 0.0},
                          {"d_ff", d_ff},
                          {"d_kv", d_kv},
                          {"d_model", d_model},
                          {"decoder_start_token_id", 0},
                          {"dense_act_fn", "gelu_new"},
                          {"dropout_rate", 0.1},
                          {"eos_token_id", eos_token_id},
                          {"feed_forward_proj", "gated-gelu"},
                          {"initializer_factor", 1.0},
                          {"is_encoder_decoder", true},
                          {"is_gated_act", true},
                          {"layer_norm_epsilon", layer_norm_epsilon},
                          {"model_type", "umt5"},
                          {"num_decoder_layers", num_layers},
                          {"num_heads", num_heads},
                          {"num_layers", num_layers},
                          {"output_past", true},
                          {"pad_token_id", pad_token_id},
                          {"relative_attention_max_distance", relative_attention_max_distance},
                          {"relative_attention_num_buckets", relative_attention_num_buckets},
                          {"scalable_attention", true},
                          {"tie_word_embeddings", false},
                          {"tokenizer_class", "T5Tokenizer"},
                          {"torch_dtype", "float32"},
                          {"use_cache", true},
                          {"vocab_size", vocab_size}};
}

}  // namespace st::kit
