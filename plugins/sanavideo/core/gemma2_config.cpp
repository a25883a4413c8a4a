// Gemma2Config parsing, writing and presets. Facts: reference/models.md §6.4; keys and defaults from
// huggingface/transformers src/transformers/models/gemma2/configuration_gemma2.py (v4.47.0).
#include "core/gemma2_config.h"

#include "st/error.h"
#include "st/json_file.h"
#include "st/kit/fields.h"
#include "st/log.h"

namespace st::plugins::sanavideo {
namespace {

constexpr const char* kComponent = "model.sanavideo.gemma2";

// Gemma2Config / PretrainedConfig keys that do not change Gemma2Model's forward: generation, caching,
// training, tokenizer and bookkeeping keys (eos_token_id may be a list, e.g. [1, 107] in
// gemma-2-2b-it; the encoder never reads it). Listed so that a genuinely unexpected key stands out.
const char* const kIgnoredKeys[] = {"architectures",
                                    "attention_dropout",
                                    "cache_implementation",
                                    "eos_token_id",
                                    "initializer_range",
                                    "use_cache",
                                    "tie_word_embeddings",
                                    "torch_dtype",
                                    "dtype",
                                    "transformers_version",
                                    "add_cross_attention",
                                    "bad_words_ids",
                                    "begin_suppress_tokens",
                                    "chunk_size_feed_forward",
                                    "cross_attention_hidden_size",
                                    "decoder_start_token_id",
                                    "diversity_penalty",
                                    "do_sample",
                                    "early_stopping",
                                    "encoder_no_repeat_ngram_size",
                                    "exponential_decay_length_penalty",
                                    "finetuning_task",
                                    "forced_bos_token_id",
                                    "forced_eos_token_id",
                                    "id2label",
                                    "label2id",
                                    "is_decoder",
                                    "is_encoder_decoder",
                                    "length_penalty",
                                    "max_length",
                                    "min_length",
                                    "no_repeat_ngram_size",
                                    "num_beam_groups",
                                    "num_beams",
                                    "num_return_sequences",
                                    "output_attentions",
                                    "output_hidden_states",
                                    "output_scores",
                                    "prefix",
                                    "problem_type",
                                    "pruned_heads",
                                    "remove_invalid_values",
                                    "repetition_penalty",
                                    "return_dict",
                                    "return_dict_in_generate",
                                    "sep_token_id",
                                    "suppress_tokens",
                                    "task_specific_params",
                                    "temperature",
                                    "tf_legacy_loss",
                                    "tie_encoder_decoder",
                                    "tokenizer_class",
                                    "top_k",
                                    "top_p",
                                    "torchscript",
                                    "typical_p",
                                    "use_bfloat16"};

const st::kit::FieldTable<Gemma2Config>& gemma2_fields() {
    using C = Gemma2Config;
    static const auto t = [] {
        st::kit::FieldTable<C> f(kComponent, "Gemma-2 config");
        f.constant("architectures", nlohmann::json::array({"Gemma2Model"}))
            .constant("attention_dropout", 0.0)
            .constant("cache_implementation", "hybrid")
            .constant("eos_token_id", 1)
            .constant("initializer_range", 0.02)
            .constant("tie_word_embeddings", true)
            .constant("torch_dtype", "float32")
            .constant("use_cache", true)
            .expect("model_type", {"gemma2"}, "the Sana text encoder is a Gemma-2 decoder")
            .expect("hidden_activation", {"gelu_pytorch_tanh", nullptr}, "Gemma-2's MLP uses the tanh GELU")
            .expect("hidden_act", {"gelu_pytorch_tanh"}, "Gemma-2's MLP uses the tanh GELU")
            .expect("attention_bias", {false}, "Gemma-2's attention projections have no bias")
            .field("vocab_size", &C::vocab_size)
            .field("hidden_size", &C::hidden_size)
            .field("intermediate_size", &C::intermediate_size)
            .field("num_hidden_layers", &C::num_hidden_layers)
            .field("num_attention_heads", &C::num_attention_heads)
            .field("num_key_value_heads", &C::num_key_value_heads)
            .field("head_dim", &C::head_dim)
            .field("rms_norm_eps", &C::rms_norm_eps)
            .field("rope_theta", &C::rope_theta)
            .field("query_pre_attn_scalar", &C::query_pre_attn_scalar)
            .field("attn_logit_softcapping", &C::attn_logit_softcapping)
            .field("final_logit_softcapping", &C::final_logit_softcapping)
            .field("sliding_window", &C::sliding_window)
            .field("layer_types", &C::layer_types)
            .field("max_position_embeddings", &C::max_position_embeddings)
            .field("pad_token_id", &C::pad_token_id)
            .field("bos_token_id", &C::bos_token_id)
            .accept_other_keys([](const std::vector<std::string>& keys, const std::string& source) {
                std::string list;
                for (const auto& k : keys) list += (list.empty() ? "" : ", ") + k;
                st::log::warn(kComponent, "{}: ignoring keys that do not affect the Gemma-2 encoder: {}",
                              source, list);
            });
        for (const char* k : kIgnoredKeys) f.ignore(k);
        return f;
    }();
    return t;
}

}  // namespace

Gemma2Config Gemma2Config::gemma2_2b() {
    return Gemma2Config{};
}

Gemma2Config Gemma2Config::tiny() {
    Gemma2Config c;
    c.vocab_size = 256;
    c.hidden_size = 64;
    c.intermediate_size = 128;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.query_pre_attn_scalar = 24.0;
    c.attn_logit_softcapping = 4.0;
    c.sliding_window = 6;
    c.max_position_embeddings = 64;
    return c;
}

bool Gemma2Config::is_sliding(int64_t index) const {
    if (layer_types) return (*layer_types)[static_cast<size_t>(index)] == "sliding_attention";
    return index % 2 == 0;
}

void Gemma2Config::validate(const std::string& origin) const {
    auto positive = [&](int64_t v, const char* name) {
        if (v <= 0) fail(kComponent, "config", "{}: {} must be positive, got {}", origin, name, v);
    };
    positive(vocab_size, "vocab_size");
    positive(hidden_size, "hidden_size");
    positive(intermediate_size, "intermediate_size");
    positive(num_hidden_layers, "num_hidden_layers");
    positive(num_attention_heads, "num_attention_heads");
    positive(num_key_value_heads, "num_key_value_heads");
    positive(head_dim, "head_dim");
    if (num_attention_heads % num_key_value_heads != 0)
        fail(kComponent, "config", "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}",
             origin, num_attention_heads, num_key_value_heads);
    if (head_dim % 2 != 0)
        fail(kComponent, "config", "{}: head_dim must be even (rotary halves), got {}", origin, head_dim);
    if (!(rms_norm_eps > 0.0))
        fail(kComponent, "config", "{}: rms_norm_eps must be positive, got {}", origin, rms_norm_eps);
    if (!(rope_theta > 0.0))
        fail(kComponent, "config", "{}: rope_theta must be positive, got {}", origin, rope_theta);
    if (!(query_pre_attn_scalar > 0.0))
        fail(kComponent, "config", "{}: query_pre_attn_scalar must be positive, got {}", origin,
             query_pre_attn_scalar);
    if (attn_logit_softcapping && !(*attn_logit_softcapping > 0.0))
        fail(kComponent, "config", "{}: attn_logit_softcapping must be positive or null, got {}", origin,
             *attn_logit_softcapping);
    if (sliding_window && *sliding_window <= 0)
        fail(kComponent, "config", "{}: sliding_window must be positive or null, got {}", origin,
             *sliding_window);
    if (layer_types) {
        if (static_cast<int64_t>(layer_types->size()) != num_hidden_layers)
            fail(kComponent, "config", "{}: layer_types has {} entries for {} layers", origin,
                 layer_types->size(), num_hidden_layers);
        for (const auto& t : *layer_types)
            if (t != "sliding_attention" && t != "full_attention")
                fail(kComponent, "config",
                     "{}: layer_types entry '{}' is not supported (expected 'sliding_attention' or "
                     "'full_attention')",
                     origin, t);
    }
    if (pad_token_id < 0 || pad_token_id >= vocab_size || bos_token_id < 0 || bos_token_id >= vocab_size)
        fail(kComponent, "config", "{}: pad_token_id {} / bos_token_id {} outside the vocabulary of {}",
             origin, pad_token_id, bos_token_id, vocab_size);
}

Gemma2Config Gemma2Config::from_json(const nlohmann::json& j, const std::string& origin) {
    return gemma2_fields().from_json(j, origin, [&](Gemma2Config& c) { c.validate(origin); });
}

Gemma2Config Gemma2Config::from_file(const std::filesystem::path& config_json) {
    return from_json(st::sdk::read_json_file(config_json, kComponent), config_json.string());
}

nlohmann::json Gemma2Config::to_json() const {
    nlohmann::json j = gemma2_fields().to_json(*this);
    // transformers writes no layer_types for Gemma-2 before v4.53; null would be read as "default".
    if (!layer_types) j.erase("layer_types");
    return j;
}

}  // namespace st::plugins::sanavideo
