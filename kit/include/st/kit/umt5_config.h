// UMT5 text-encoder configuration (the encoder half of google/umt5-xxl, as Wan 2.1/2.2 and S2V use it).
//
// One struct, three sources:
//  - the HF `text_encoder/config.json` (transformers UMT5Config, diffusers layout),
//  - the original Wan `T5Encoder` constructor arguments (wan/modules/t5.py `umt5_xxl`; the original
//    checkpoint ships no config, so we also accept a small JSON of those arguments),
//  - the tensor names and shapes of a checkpoint (`from_weights`), which is all an original
//    `models_t5_umt5-xxl-enc-bf16` file gives.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace st::sdk {
class TensorSource;
}

namespace st::kit {

struct UMT5Config {
    int64_t vocab_size = 256384;
    int64_t d_model = 4096;
    int64_t d_kv = 64;  ///< per-head width; inner attention width is num_heads * d_kv
    int64_t d_ff = 10240;
    int64_t num_layers = 24;
    int64_t num_heads = 64;
    int64_t relative_attention_num_buckets = 32;
    int64_t relative_attention_max_distance = 128;
    double layer_norm_epsilon = 1e-6;
    int64_t pad_token_id = 0;
    int64_t eos_token_id = 1;
    /// Tokens the DiT sees per prompt (Wan `text_len`): ids are padded/cut to this and the encoder
    /// output is zero-padded to it.
    int64_t text_len = 512;

    int64_t inner_dim() const { return num_heads * d_kv; }

    /// The encoder Wan uses (google/umt5-xxl): 4096 wide, 24 layers, 64 heads x 64, d_ff 10240.
    static UMT5Config umt5_xxl();
    /// Test size (reference notes §14): vocab 64, d_model 16, 4 heads x 4, d_ff 32, 2 layers,
    /// 32 buckets, max_distance 16 (so short inputs already reach the log buckets and the clamp).
    static UMT5Config tiny();

    /// Parses an HF UMT5Config JSON. Read keys: d_model, d_kv, d_ff, num_layers, num_heads,
    /// relative_attention_num_buckets, relative_attention_max_distance, vocab_size,
    /// layer_norm_epsilon, pad_token_id, eos_token_id; validated: model_type ("umt5"),
    /// feed_forward_proj ("gated-gelu"), dense_act_fn ("gelu_new"), is_gated_act (true).
    /// Keys that only concern the decoder, training or generation are ignored (see kIgnoredHfKeys
    /// in umt5_config.cpp); other unknown keys are logged once and ignored, since transformers
    /// adds keys between versions. Throws st::Error naming the file/key on a bad value.
    static UMT5Config from_hf_json(const nlohmann::json& j, const std::string& origin = "config.json");
    static UMT5Config from_hf_file(const std::filesystem::path& config_json);

    /// Parses the original Wan T5Encoder arguments {vocab, dim, dim_attn, dim_ffn, num_heads,
    /// num_layers, num_buckets, shared_pos (must be false: UMT5), dropout, eps, max_dist}.
    static UMT5Config from_wan_json(const nlohmann::json& j,
                                    const std::string& origin = "wan_t5_config.json");

    /// Recovers every size from tensor names and shapes (HF or original layout). The two values
    /// no tensor carries keep their defaults: relative_attention_max_distance 128, eps 1e-6.
    static UMT5Config from_weights(const st::sdk::TensorSource& source);

    /// HF config.json in the field layout of Wan-AI/Wan2.1-*-Diffusers/text_encoder/config.json.
    nlohmann::json to_hf_json() const;

    /// Throws st::Error naming the first inconsistent field (non-positive sizes, odd bucket count...).
    void validate(const std::string& origin) const;

    bool operator==(const UMT5Config&) const = default;
};

}  // namespace st::kit
