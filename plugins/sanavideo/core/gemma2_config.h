// Gemma-2 decoder configuration: the transformers `Gemma2Config` (config.json of a Sana / Sana Video
// `text_encoder/` folder, Efficient-Large-Model/gemma-2-2b-it), as far as Gemma2Model's forward reads it.
// Facts: reference/models.md §6.4; key names and defaults from huggingface/transformers
// src/transformers/models/gemma2/configuration_gemma2.py.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace st::plugins::sanavideo {

struct Gemma2Config {
    int64_t vocab_size = 256000;
    int64_t hidden_size = 2304;
    int64_t intermediate_size = 9216;
    int64_t num_hidden_layers = 26;
    int64_t num_attention_heads = 8;
    int64_t num_key_value_heads = 4;
    int64_t head_dim = 256;
    double rms_norm_eps = 1e-6;
    double rope_theta = 10000.0;
    /// Scores are scaled by query_pre_attn_scalar^-0.5 (not head_dim^-0.5).
    double query_pre_attn_scalar = 256.0;
    /// Attention logits <- cap * tanh(logits / cap) before masking; null = off.
    std::optional<double> attn_logit_softcapping = 50.0;
    /// Soft-cap of the LM head logits: Gemma2ForCausalLM only, unused by the encoder (kept for writing).
    std::optional<double> final_logit_softcapping = 30.0;
    /// Window of the sliding-attention layers; null = those layers attend like the global ones.
    std::optional<int64_t> sliding_window = 4096;
    /// Per layer "sliding_attention" or "full_attention" (newer transformers write it); null = the
    /// Gemma-2 pattern, sliding on even layer indices (0, 2, ...).
    std::optional<std::vector<std::string>> layer_types;
    int64_t max_position_embeddings = 8192;
    int64_t pad_token_id = 0;
    int64_t bos_token_id = 2;

    /// Gemma-2-2B-it, the Sana / Sana Video text encoder (models.md §6.4).
    static Gemma2Config gemma2_2b();
    /// The size of tests/golden/hf_gemma2: vocab 256, hidden 64, intermediate 128, 4 layers, 4 query /
    /// 2 KV heads x 16, query_pre_attn_scalar 24, window 6, soft-cap 4, 64 positions.
    static Gemma2Config tiny();

    /// Parses a transformers Gemma2Config JSON. Rejected with an st::Error naming the key:
    /// model_type other than "gemma2", hidden_activation / hidden_act other than gelu_pytorch_tanh,
    /// attention_bias true, inconsistent sizes (validate()). Keys that do not change the encoder
    /// forward (generation, caching, training, bookkeeping, eos_token_id) are ignored; other unknown
    /// keys are logged once and ignored (transformers adds keys between versions).
    static Gemma2Config from_json(const nlohmann::json& j, const std::string& origin = "config.json");
    static Gemma2Config from_file(const std::filesystem::path& config_json);
    /// transformers config.json (architectures Gemma2Model) that Gemma2Model.from_pretrained reads.
    nlohmann::json to_json() const;
    /// Throws st::Error naming the first inconsistent field.
    void validate(const std::string& origin) const;

    /// Whether layer `index` uses the sliding window (layer_types, else even indices).
    bool is_sliding(int64_t index) const;
    /// Query heads per KV head.
    int64_t num_key_value_groups() const { return num_attention_heads / num_key_value_heads; }

    bool operator==(const Gemma2Config&) const = default;
};

}  // namespace st::plugins::sanavideo
